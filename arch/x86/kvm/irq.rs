// SPDX-License-Identifier: GPL-2.0

//! Interrupt lines shared by several sources (`__kvm_irq_line_state()` of
//! `arch/x86/include/asm/kvm_host.h`, `irq_source_id` of `irq_comm.c`).
//!
//! Core-only (host-tested). A pin of the PIC or the IOAPIC can be driven by
//! several sources at once (user space through `KVM_IRQ_LINE`, the in-kernel
//! PIT, irqfd resamplers...). Each source owns one bit of the pin's state and
//! the pin's level is the OR of them, as for a wired-OR shared ISA/PCI line.

/// An interrupt source id: one bit of a pin's line state. The C KVM hands
/// out ids below `BITS_PER_LONG` (`kvm_request_irq_source_id()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IrqSource(u8);

impl IrqSource {
    /// `KVM_USERSPACE_IRQ_SOURCE_ID`: `KVM_IRQ_LINE` and `KVM_IRQ_LINE_STATUS`.
    pub(crate) const USERSPACE: Self = Self(0);
    /// How many ids there are.
    #[cfg(test)]
    pub(crate) const COUNT: u32 = 64;

    /// The source with id `id`, if below [`IrqSource::COUNT`].
    #[cfg(test)]
    pub(crate) const fn new(id: u32) -> Option<Self> {
        if id < Self::COUNT {
            Some(Self(id as u8))
        } else {
            None
        }
    }

    /// The id.
    #[cfg(test)]
    pub(crate) const fn id(self) -> u32 {
        self.0 as u32
    }

    const fn bit(self) -> u64 {
        1 << (self.0 & 63)
    }
}

/// The line state of `N` pins, one bit per source and pin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LineStates<const N: usize>([u64; N]);

impl<const N: usize> LineStates<N> {
    /// Every line low.
    pub(crate) const fn new() -> Self {
        Self([0; N])
    }

    /// `__kvm_irq_line_state()`: `source` drives `pin` to `level`; returns
    /// the pin's resulting level (the OR of all sources). A pin out of range
    /// stays low.
    pub(crate) fn set(&mut self, pin: usize, source: IrqSource, level: bool) -> bool {
        let Some(state) = self.0.get_mut(pin) else {
            return false;
        };
        if level {
            *state |= source.bit();
        } else {
            *state &= !source.bit();
        }
        *state != 0
    }

    /// The level of `pin` (low if out of range).
    #[cfg(test)]
    pub(crate) fn level(&self, pin: usize) -> bool {
        self.0.get(pin).is_some_and(|s| *s != 0)
    }

    /// `kvm_ioapic_clear_all()`/`kvm_pic_clear_all()`: `source` lets go of
    /// every pin. As in the C KVM this only forgets the source; the chip
    /// sees no new level until the next change on the pin.
    #[cfg(test)]
    pub(crate) fn clear_source(&mut self, source: IrqSource) {
        for s in self.0.iter_mut() {
            *s &= !source.bit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_line_is_the_or_of_its_sources() {
        let mut l = LineStates::<4>::new();
        let pit = IrqSource::new(2).unwrap();
        assert!(l.set(1, IrqSource::USERSPACE, true));
        assert!(l.set(1, pit, true));
        assert!(l.set(1, IrqSource::USERSPACE, false));
        assert!(l.level(1) && !l.level(0));
        assert!(!l.set(1, pit, false));
        // Out of range: no panic, always low.
        assert!(!l.set(4, pit, true) && !l.level(99));
        l.set(2, pit, true);
        l.set(3, IrqSource::USERSPACE, true);
        l.clear_source(pit);
        assert!(!l.level(2) && l.level(3));
        assert_eq!(IrqSource::new(63).map(IrqSource::id), Some(63));
        assert_eq!(IrqSource::new(64), None);
    }
}
