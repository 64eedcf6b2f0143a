// SPDX-License-Identifier: GPL-2.0

//! The in-kernel 8259A pair (`arch/x86/kvm/i8259.c`): master at ports
//! 0x20/0x21, slave at 0xa0/0xa1 cascaded on the master's IRQ2, and the PIIX
//! edge/level control registers (ELCR) at 0x4d0/0x4d1.
//!
//! Core-only (host-tested). The state of each chip is `struct kvm_pic_state`
//! byte for byte, so `KVM_GET/SET_IRQCHIP` copy it as the C KVM does: raw and
//! unchecked (flags are any non-zero byte, `init_state` may be out of range).
//! The module owns the lock, kicks the vCPU that takes the PIC's interrupt
//! when [`PicEvents::wakeup`] says so, runs ack and mask notifiers from
//! [`PicEvents`], and calls [`Pic::ack`] when it injects the interrupt.
//!
//! Where the C KVM departs from the 8259A datasheet this file follows it:
//! ICW1 keeps ISR and the poll flag (and clears ISR bits of pending edges
//! only when some vCPU takes the PIC's interrupt); single mode and
//! level-triggered mode of ICW1 are ignored (the ELCR decides the trigger);
//! special mask mode is kept but does not change priorities; the cascade
//! sets the master's IRR2 as an edge each time the slave has a request, so
//! a slave request that went away turns into a spurious IRQ15.

use super::irq::{IrqSource, LineStates};

/// `PIC_NUM_PINS`: IRQ 0-7 on the master, 8-15 on the slave.
pub(crate) const PIC_NUM_PINS: usize = 16;
/// `sizeof(struct kvm_pic_state)`.
pub(crate) const KVM_PIC_STATE_SIZE: usize = 16;

/// The I/O ports of the pair.
// The complete port map; the dispatch matches on some by range.
#[allow(dead_code)]
pub(crate) mod port {
    /// Master command (ICW1, OCW2, OCW3; reads IRR or ISR, or polls).
    pub(crate) const MASTER_CMD: u16 = 0x20;
    /// Master data (ICW2-4, OCW1 = IMR).
    pub(crate) const MASTER_DATA: u16 = 0x21;
    /// Slave command.
    pub(crate) const SLAVE_CMD: u16 = 0xa0;
    /// Slave data.
    pub(crate) const SLAVE_DATA: u16 = 0xa1;
    /// ELCR of IRQ 0-7 (PIIX).
    pub(crate) const ELCR_MASTER: u16 = 0x4d0;
    /// ELCR of IRQ 8-15.
    pub(crate) const ELCR_SLAVE: u16 = 0x4d1;
}

/// `elcr_mask` of `kvm_pic_init()`: IRQ 0, 1, 2, 8 and 13 are always edge.
const ELCR_MASK: [u8; 2] = [0xf8, 0xde];
/// The master's input the slave is wired to.
const CASCADE_IRQ: u8 = 2;
/// What a spurious interrupt reads as: IRQ7 of the chip (8259A datasheet,
/// "Interrupt sequence").
const SPURIOUS_IRQ: u8 = 7;

/// One chip of the pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PicChip {
    /// IRQ 0-7, ports 0x20/0x21 (`KVM_IRQCHIP_PIC_MASTER`).
    Master = 0,
    /// IRQ 8-15, ports 0xa0/0xa1 (`KVM_IRQCHIP_PIC_SLAVE`).
    Slave = 1,
}

/// The state of one 8259A (`struct kvm_pic_state`, the first 16 bytes of
/// `struct kvm_kpic_state`), in its field order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PicChipState {
    /// Line levels seen by edge detection.
    pub(crate) last_irr: u8,
    /// Interrupt request register.
    pub(crate) irr: u8,
    /// Interrupt mask register (OCW1).
    pub(crate) imr: u8,
    /// In-service register.
    pub(crate) isr: u8,
    /// The IRQ of lowest priority plus one (rotation).
    pub(crate) priority_add: u8,
    /// Vector of IRQ0 of the chip (ICW2, bits 7:3).
    pub(crate) irq_base: u8,
    /// OCW3 RIS: the command port reads ISR (else IRR).
    pub(crate) read_reg_select: u8,
    /// OCW3 P: the next read polls.
    pub(crate) poll: u8,
    /// OCW3 SMM (kept, without effect as in the C KVM).
    pub(crate) special_mask: u8,
    /// 0: operating; 1, 2, 3: ICW2, ICW3, ICW4 expected next.
    pub(crate) init_state: u8,
    /// ICW4 AEOI: automatic EOI on INTA.
    pub(crate) auto_eoi: u8,
    /// OCW2 rotate in automatic EOI mode.
    pub(crate) rotate_on_auto_eoi: u8,
    /// ICW4 SFNM.
    pub(crate) special_fully_nested_mode: u8,
    /// ICW1 IC4: an ICW4 follows.
    pub(crate) init4: u8,
    /// Level-triggered IRQs (1) of this chip (PIIX ELCR).
    pub(crate) elcr: u8,
    /// The ELCR bits that can be set.
    pub(crate) elcr_mask: u8,
}

impl PicChipState {
    /// The `struct kvm_pic_state` bytes.
    pub(crate) fn to_bytes(self) -> [u8; KVM_PIC_STATE_SIZE] {
        [
            self.last_irr,
            self.irr,
            self.imr,
            self.isr,
            self.priority_add,
            self.irq_base,
            self.read_reg_select,
            self.poll,
            self.special_mask,
            self.init_state,
            self.auto_eoi,
            self.rotate_on_auto_eoi,
            self.special_fully_nested_mode,
            self.init4,
            self.elcr,
            self.elcr_mask,
        ]
    }

    /// From `struct kvm_pic_state` bytes, unchecked as in the C KVM.
    pub(crate) fn from_bytes(b: &[u8; KVM_PIC_STATE_SIZE]) -> Self {
        let [last_irr, irr, imr, isr, priority_add, irq_base, read_reg_select, poll, special_mask, init_state, auto_eoi, rotate_on_auto_eoi, special_fully_nested_mode, init4, elcr, elcr_mask] =
            *b;
        Self {
            last_irr,
            irr,
            imr,
            isr,
            priority_add,
            irq_base,
            read_reg_select,
            poll,
            special_mask,
            init_state,
            auto_eoi,
            rotate_on_auto_eoi,
            special_fully_nested_mode,
            init4,
            elcr,
            elcr_mask,
        }
    }

    /// `get_priority()`: the priority (0 highest) of the best IRQ in `mask`
    /// under the current rotation, 8 if none.
    fn priority(&self, mask: u8) -> u32 {
        let add = u32::from(self.priority_add);
        (0..8)
            .find(|p| mask & (1 << ((p + add) & 7)) != 0)
            .unwrap_or(8)
    }

    /// `pic_get_irq()`: the IRQ to raise, if one has a higher priority than
    /// any in service. In special fully nested mode the master does not let
    /// the slave's in-service IRQ block the slave's own higher requests
    /// (8259A datasheet, "Special fully nested mode").
    fn get_irq(&self, chip: PicChip) -> Option<u8> {
        let priority = self.priority(self.irr & !self.imr);
        if priority == 8 {
            return None;
        }
        let mut in_service = self.isr;
        if self.special_fully_nested_mode != 0 && chip == PicChip::Master {
            in_service &= !(1 << CASCADE_IRQ);
        }
        (priority < self.priority(in_service))
            .then(|| ((priority + u32::from(self.priority_add)) & 7) as u8)
    }

    /// `pic_set_irq1()`: input `irq` (0-7) goes to `level`. An edge input
    /// requests on a rising edge, a level input while high. Returns -1 if
    /// the IRQ is masked, 0 if a request was already pending (coalesced),
    /// else 1.
    fn set_irq1(&mut self, irq: u8, level: bool) -> i32 {
        let mask = 1u8 << (irq & 7);
        let mut ret = 1;
        if self.elcr & mask != 0 {
            if level {
                ret = i32::from(self.irr & mask == 0);
                self.irr |= mask;
                self.last_irr |= mask;
            } else {
                self.irr &= !mask;
                self.last_irr &= !mask;
            }
        } else if level {
            if self.last_irr & mask == 0 {
                ret = i32::from(self.irr & mask == 0);
                self.irr |= mask;
            }
            self.last_irr |= mask;
        } else {
            self.last_irr &= !mask;
        }
        if self.imr & mask != 0 {
            -1
        } else {
            ret
        }
    }
}

/// What the PIC asks of the module, gathered until [`Pic::take_events`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PicEvents {
    /// IRQs (bit `n` for IRQ `n`) whose in-service bit an EOI cleared: run
    /// their ack notifiers (`kvm_notify_acked_irq()`).
    pub(crate) acked: u16,
    /// IRQs whose IMR bit changed: run their mask notifiers with the new
    /// bit (`kvm_fire_mask_notifiers()`).
    pub(crate) mask_changed: u16,
    /// The output was re-evaluated while low: kick the first vCPU that takes
    /// the PIC's interrupt (`wakeup_needed`).
    pub(crate) wakeup: bool,
}

/// The port access is not the PIC's (`-EOPNOTSUPP` in C).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NotClaimed;

/// The register set a port selects.
#[derive(Clone, Copy)]
enum PortReg {
    /// Command (`false`) or data (`true`) port of a chip.
    Chip(PicChip, bool),
    /// The ELCR of a chip.
    Elcr(PicChip),
}

/// The 8259A pair of a VM (`struct kvm_pic`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pic {
    chips: [PicChipState; 2],
    /// INTR to the CPU (`output`).
    output: bool,
    events: PicEvents,
    lines: LineStates<PIC_NUM_PINS>,
}

impl Default for Pic {
    fn default() -> Self {
        Self::new()
    }
}

impl Pic {
    /// The pair `KVM_CREATE_IRQCHIP` creates (`kvm_pic_init()`): all zero
    /// but the ELCR masks. Not [`Pic::reset`]: both chips are in operating
    /// mode, unmasked, with vector base 0, until the guest sends ICW1.
    pub(crate) const fn new() -> Self {
        let mut chips = [PicChipState {
            last_irr: 0,
            irr: 0,
            imr: 0,
            isr: 0,
            priority_add: 0,
            irq_base: 0,
            read_reg_select: 0,
            poll: 0,
            special_mask: 0,
            init_state: 0,
            auto_eoi: 0,
            rotate_on_auto_eoi: 0,
            special_fully_nested_mode: 0,
            init4: 0,
            elcr: 0,
            elcr_mask: 0,
        }; 2];
        chips[0].elcr_mask = ELCR_MASK[0];
        chips[1].elcr_mask = ELCR_MASK[1];
        Self {
            chips,
            output: false,
            events: PicEvents {
                acked: 0,
                mask_changed: 0,
                wakeup: false,
            },
            lines: LineStates::new(),
        }
    }

    fn chip(&mut self, c: PicChip) -> &mut PicChipState {
        &mut self.chips[c as usize]
    }

    /// The state of chip `c`.
    #[cfg(test)]
    pub(crate) fn chip_state(&self, c: PicChip) -> &PicChipState {
        &self.chips[c as usize]
    }

    /// The events gathered since the last call.
    #[cfg(test)]
    pub(crate) fn take_events(&mut self) -> PicEvents {
        core::mem::take(&mut self.events)
    }

    /// INTR: the master has an interrupt for the CPU (`s->output`, what
    /// `kvm_cpu_has_extint()` reads).
    pub(crate) fn output(&self) -> bool {
        self.output
    }

    /// `pic_irq_request()`.
    fn irq_request(&mut self, level: bool) {
        if !self.output {
            self.events.wakeup = true;
        }
        self.output = level;
    }

    /// `pic_update_irq()` (`kvm_pic_update_irq()`): re-evaluates the
    /// cascade and INTR. Needed after any change of state from outside.
    pub(crate) fn update(&mut self) {
        if self.chips[1].get_irq(PicChip::Slave).is_some() {
            // The slave's INT is an edge on the master's IRQ2.
            self.chips[0].set_irq1(CASCADE_IRQ, true);
            self.chips[0].set_irq1(CASCADE_IRQ, false);
        }
        let level = self.chips[0].get_irq(PicChip::Master).is_some();
        self.irq_request(level);
    }

    /// `pic_clear_isr()`: ends IRQ `irq` of chip `c`.
    fn clear_isr(&mut self, c: PicChip, irq: u8) {
        let irq = irq & 7;
        self.chip(c).isr &= !(1 << irq);
        self.events.acked |= 1 << (irq + 8 * c as u8);
    }

    /// `kvm_pic_set_irq()`: `source` drives IRQ `irq` (0-15) to `level`.
    /// Returns the `KVM_IRQ_LINE_STATUS` status of [`PicChipState`]'s
    /// `set_irq1` (-1 masked, 0 coalesced, 1 requested); -1 for an IRQ out
    /// of range.
    pub(crate) fn set_irq(&mut self, irq: usize, source: IrqSource, level: bool) -> i32 {
        if irq >= PIC_NUM_PINS {
            return -1;
        }
        let level = self.lines.set(irq, source, level);
        let c = if irq < 8 {
            PicChip::Master
        } else {
            PicChip::Slave
        };
        let ret = self.chip(c).set_irq1(irq as u8 & 7, level);
        self.update();
        ret
    }

    /// `kvm_pic_clear_all()`: `source` is freed.
    #[cfg(test)]
    pub(crate) fn clear_all(&mut self, source: IrqSource) {
        self.lines.clear_source(source);
    }

    /// `pic_intack()`: IRQ `irq` of chip `c` goes in service.
    fn intack(&mut self, c: PicChip, irq: u8) {
        let s = self.chip(c);
        s.isr |= 1 << irq;
        // A level request stays until the line drops.
        if s.elcr & (1 << irq) == 0 {
            s.irr &= !(1 << irq);
        }
        if s.auto_eoi != 0 {
            if s.rotate_on_auto_eoi != 0 {
                s.priority_add = (irq + 1) & 7;
            }
            self.clear_isr(c, irq);
        }
    }

    /// INTA (`kvm_pic_read_irq()`): the vector the CPU gets. With nothing
    /// to deliver, the chip answers IRQ7 without setting ISR (a spurious
    /// interrupt; IRQ15 if the cascade fired but the slave has nothing).
    /// `irq_base + irq` wraps in 8 bits, as the injected vector does in C.
    pub(crate) fn ack(&mut self) -> u8 {
        self.output = false;
        let vector = match self.chips[0].get_irq(PicChip::Master) {
            Some(CASCADE_IRQ) => {
                self.intack(PicChip::Master, CASCADE_IRQ);
                let irq = match self.chips[1].get_irq(PicChip::Slave) {
                    Some(irq) => {
                        self.intack(PicChip::Slave, irq);
                        irq
                    }
                    None => SPURIOUS_IRQ,
                };
                self.chips[1].irq_base.wrapping_add(irq)
            }
            Some(irq) => {
                self.intack(PicChip::Master, irq);
                self.chips[0].irq_base.wrapping_add(irq)
            }
            None => self.chips[0].irq_base.wrapping_add(SPURIOUS_IRQ),
        };
        self.update();
        vector
    }

    /// `kvm_pic_reset()`: what ICW1 does to chip `c`. `intr_accepted`: some
    /// vCPU takes the PIC's interrupt ([`super::lapic::Lapic::accepts_pic_intr`]).
    fn reset(&mut self, c: PicChip, intr_accepted: bool) {
        let s = self.chip(c);
        let edge_irr = s.irr & !s.elcr;
        s.last_irr = 0;
        s.irr &= s.elcr;
        s.imr = 0;
        s.priority_add = 0;
        s.special_mask = 0;
        s.read_reg_select = 0;
        if s.init4 == 0 {
            s.special_fully_nested_mode = 0;
            s.auto_eoi = 0;
        }
        s.init_state = 1;
        if intr_accepted {
            // Dropped edges count as acknowledged, so that ack notifiers
            // (the PIT's reinjection) do not wait for them forever.
            for irq in 0..8 {
                if edge_irr & (1 << irq) != 0 {
                    self.clear_isr(c, irq);
                }
            }
        }
    }

    /// `pic_ioport_write()`: a byte to the command (`data == false`) or data
    /// port of chip `c`.
    fn ioport_write(&mut self, c: PicChip, data: bool, val: u8, intr_accepted: bool) {
        if !data {
            if val & 0x10 != 0 {
                // ICW1 (8259A datasheet, "Initialization command words"):
                // D4 = 1 identifies it, IC4 in bit 0.
                self.chip(c).init4 = val & 1;
                self.reset(c, intr_accepted);
            } else if val & 0x08 != 0 {
                // OCW3: P (bit 2), RR/RIS (bits 1:0), ESMM/SMM (bits 6:5).
                let s = self.chip(c);
                if val & 0x04 != 0 {
                    s.poll = 1;
                }
                if val & 0x02 != 0 {
                    s.read_reg_select = val & 1;
                }
                if val & 0x40 != 0 {
                    s.special_mask = (val >> 5) & 1;
                }
            } else {
                self.ocw2(c, val);
            }
            return;
        }
        let s = self.chip(c);
        match s.init_state {
            0 => {
                // OCW1.
                let diff = s.imr ^ val;
                s.imr = val;
                self.events.mask_changed |= u16::from(diff) << (8 * c as u8);
                self.update();
            }
            1 => {
                // ICW2: T7-T3 of the vector.
                s.irq_base = val & 0xf8;
                s.init_state = 2;
            }
            2 => {
                // ICW3 (the cascade wiring is fixed) is always expected.
                s.init_state = if s.init4 != 0 { 3 } else { 0 };
            }
            3 => {
                // ICW4: SFNM (bit 4), AEOI (bit 1).
                s.special_fully_nested_mode = (val >> 4) & 1;
                s.auto_eoi = (val >> 1) & 1;
                s.init_state = 0;
            }
            // Only KVM_SET_IRQCHIP can put another value here.
            _ => {}
        }
    }

    /// OCW2 (8259A datasheet, "Operation command words"): R, SL, EOI in
    /// bits 7:5, the IRQ in bits 2:0.
    fn ocw2(&mut self, c: PicChip, val: u8) {
        let cmd = val >> 5;
        let irq = val & 7;
        match cmd {
            // Clear / set rotate in automatic EOI mode.
            0 | 4 => self.chip(c).rotate_on_auto_eoi = cmd >> 2,
            // Non-specific EOI, and rotate on non-specific EOI.
            1 | 5 => {
                let s = self.chip(c);
                let priority = s.priority(s.isr);
                if priority != 8 {
                    let irq = ((priority + u32::from(s.priority_add)) & 7) as u8;
                    if cmd == 5 {
                        s.priority_add = (irq + 1) & 7;
                    }
                    self.clear_isr(c, irq);
                    self.update();
                }
            }
            // Specific EOI.
            3 => {
                self.clear_isr(c, irq);
                self.update();
            }
            // Set priority: `irq` becomes the lowest.
            6 => {
                self.chip(c).priority_add = (irq + 1) & 7;
                self.update();
            }
            // Rotate on specific EOI.
            7 => {
                self.chip(c).priority_add = (irq + 1) & 7;
                self.clear_isr(c, irq);
                self.update();
            }
            // 2: no operation.
            _ => {}
        }
    }

    /// `pic_poll_read()`: the poll command's answer, bit 7 set with the IRQ
    /// in bits 2:0, which is taken as if acknowledged and ended at once
    /// (8259A datasheet, "Poll command"); 0x07 if none.
    fn poll_read(&mut self, c: PicChip) -> u8 {
        let Some(irq) = self.chips[c as usize].get_irq(c) else {
            self.update();
            return 0x07;
        };
        if c == PicChip::Slave {
            self.chips[0].isr &= !(1 << CASCADE_IRQ);
            self.chips[0].irr &= !(1 << CASCADE_IRQ);
        }
        self.chip(c).irr &= !(1 << irq);
        self.clear_isr(c, irq);
        if c == PicChip::Slave || irq != CASCADE_IRQ {
            self.update();
        }
        irq | 0x80
    }

    /// `pic_ioport_read()`.
    fn ioport_read(&mut self, c: PicChip, data: bool) -> u8 {
        if self.chips[c as usize].poll != 0 {
            let v = self.poll_read(c);
            self.chip(c).poll = 0;
            return v;
        }
        let s = &self.chips[c as usize];
        match (data, s.read_reg_select != 0) {
            (true, _) => s.imr,
            (false, true) => s.isr,
            (false, false) => s.irr,
        }
    }

    /// The register a `len`-byte access at `port` reaches: one of the three
    /// 2-port devices the C KVM registers, if the access lies within it (as
    /// `kvm_io_bus_cmp()` matches).
    fn decode(port: u16, len: usize) -> Option<PortReg> {
        let (base, chip) = match port {
            0x20 | 0x21 => (port::MASTER_CMD, PicChip::Master),
            0xa0 | 0xa1 => (port::SLAVE_CMD, PicChip::Slave),
            0x4d0 | 0x4d1 => (port::ELCR_MASTER, PicChip::Master),
            _ => return None,
        };
        if usize::from(port - base) + len > 2 {
            return None;
        }
        let odd = port & 1 != 0;
        Some(match (base, odd) {
            (port::ELCR_MASTER, false) => PortReg::Elcr(PicChip::Master),
            (port::ELCR_MASTER, true) => PortReg::Elcr(PicChip::Slave),
            _ => PortReg::Chip(chip, odd),
        })
    }

    /// A guest `IN` of `data.len()` bytes from `port` (`picdev_read()`).
    /// Anything but a byte reads as zeros.
    pub(crate) fn pio_read(&mut self, port: u16, data: &mut [u8]) -> Result<(), NotClaimed> {
        let r = Self::decode(port, data.len()).ok_or(NotClaimed)?;
        let [byte] = data else {
            data.fill(0);
            return Ok(());
        };
        *byte = match r {
            PortReg::Chip(c, is_data) => self.ioport_read(c, is_data),
            PortReg::Elcr(c) => self.chips[c as usize].elcr,
        };
        Ok(())
    }

    /// A guest `OUT` of `data` to `port` (`picdev_write()`); anything but a
    /// byte is dropped. `intr_accepted`: some vCPU takes the PIC's interrupt
    /// (only ICW1 looks at it).
    pub(crate) fn pio_write(
        &mut self,
        port: u16,
        data: &[u8],
        intr_accepted: bool,
    ) -> Result<(), NotClaimed> {
        let r = Self::decode(port, data.len()).ok_or(NotClaimed)?;
        let [val] = *data else {
            return Ok(());
        };
        match r {
            PortReg::Chip(c, is_data) => self.ioport_write(c, is_data, val, intr_accepted),
            PortReg::Elcr(c) => {
                // No re-evaluation, as in C: the new trigger mode applies
                // from the next change of the line.
                let s = self.chip(c);
                s.elcr = val & s.elcr_mask;
            }
        }
        Ok(())
    }

    /// `KVM_GET_IRQCHIP` of chip `c`.
    pub(crate) fn get_state(&self, c: PicChip) -> [u8; KVM_PIC_STATE_SIZE] {
        self.chips[c as usize].to_bytes()
    }

    /// `KVM_SET_IRQCHIP` of chip `c`: the bytes as given. The caller then
    /// calls [`Pic::update`], as the C KVM does after any `KVM_SET_IRQCHIP`.
    pub(crate) fn set_state(&mut self, c: PicChip, b: &[u8; KVM_PIC_STATE_SIZE]) {
        *self.chip(c) = PicChipState::from_bytes(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: IrqSource = IrqSource::USERSPACE;

    fn out(p: &mut Pic, port: u16, v: u8) {
        p.pio_write(port, &[v], true).unwrap();
    }

    fn inb(p: &mut Pic, port: u16) -> u8 {
        let mut b = [0u8];
        p.pio_read(port, &mut b).unwrap();
        b[0]
    }

    fn master(p: &Pic) -> PicChipState {
        *p.chip_state(PicChip::Master)
    }

    fn slave(p: &Pic) -> PicChipState {
        *p.chip_state(PicChip::Slave)
    }

    /// SeaBIOS `pic_reset(0x08, 0x70)`: ICW1-4 to both chips, then all
    /// masked but the cascade.
    fn seabios(p: &mut Pic) {
        out(p, 0x20, 0x11);
        out(p, 0xa0, 0x11);
        out(p, 0x21, 0x08);
        out(p, 0xa1, 0x70);
        out(p, 0x21, 0x04);
        out(p, 0xa1, 0x02);
        out(p, 0x21, 0x01);
        out(p, 0xa1, 0x01);
        out(p, 0x21, 0xfb);
        out(p, 0xa1, 0xff);
    }

    /// Linux `init_8259A(auto_eoi)`: vectors 0x30/0x38.
    fn linux(p: &mut Pic, auto_eoi: bool) {
        out(p, 0x21, 0xff);
        out(p, 0x20, 0x11);
        out(p, 0x21, 0x30);
        out(p, 0x21, 0x04);
        out(p, 0x21, if auto_eoi { 0x03 } else { 0x01 });
        out(p, 0xa0, 0x11);
        out(p, 0xa1, 0x38);
        out(p, 0xa1, 0x02);
        out(p, 0xa1, 0x01);
        out(p, 0x21, 0xfb);
        out(p, 0xa1, 0xff);
    }

    fn pulse(p: &mut Pic, irq: usize) -> i32 {
        p.set_irq(irq, SRC, false);
        p.set_irq(irq, SRC, true)
    }

    #[test]
    fn creation_state() {
        let p = Pic::new();
        let mut want = [0u8; KVM_PIC_STATE_SIZE];
        want[15] = 0xf8;
        assert_eq!(p.get_state(PicChip::Master), want);
        want[15] = 0xde;
        assert_eq!(p.get_state(PicChip::Slave), want);
        assert!(!p.output());
        assert_eq!(Pic::default(), p);
    }

    #[test]
    fn seabios_init_timer_and_eoi() {
        let mut p = Pic::new();
        seabios(&mut p);
        assert_eq!(p.take_events().mask_changed, 0xfffb);
        let m = master(&p);
        assert_eq!(
            (m.irq_base, m.imr, m.init_state, m.init4, m.auto_eoi),
            (0x08, 0xfb, 0, 1, 0)
        );
        let s = slave(&p);
        assert_eq!((s.irq_base, s.imr, s.init_state), (0x70, 0xff, 0));
        assert_eq!(inb(&mut p, 0x21), 0xfb);
        assert_eq!(inb(&mut p, 0xa1), 0xff);
        // Masked IRQ0: requested but not raised.
        assert_eq!(p.set_irq(0, SRC, true), -1);
        assert!(!p.output());
        assert_eq!(master(&p).irr, 1);
        // The edge stays latched in IRR: unmasking raises INTR, and the
        // next edge is coalesced with it. INTA gives vector 8 and sets ISR.
        p.set_irq(0, SRC, false);
        out(&mut p, 0x21, 0xfa);
        assert_eq!(p.take_events().mask_changed, 1);
        assert!(p.output());
        assert_eq!(pulse(&mut p, 0), 0);
        assert_eq!(p.ack(), 0x08);
        assert!(!p.output());
        assert_eq!((master(&p).isr, master(&p).irr), (1, 0));
        // The next tick waits for the EOI.
        pulse(&mut p, 0);
        assert!(!p.output());
        out(&mut p, 0x20, 0x20);
        assert_eq!(p.take_events().acked, 1);
        assert!(p.output());
        assert_eq!(p.ack(), 0x08);
    }

    #[test]
    fn slave_interrupt_through_the_cascade() {
        let mut p = Pic::new();
        seabios(&mut p);
        out(&mut p, 0xa1, 0xfe);
        assert_eq!(pulse(&mut p, 8), 1);
        assert!(p.output());
        assert_eq!(master(&p).irr, 1 << 2);
        assert_eq!(p.ack(), 0x70);
        assert_eq!((master(&p).isr, slave(&p).isr), (1 << 2, 1));
        // SeaBIOS pic_eoi2(): slave, then master.
        out(&mut p, 0xa0, 0x20);
        out(&mut p, 0x20, 0x20);
        assert_eq!((master(&p).isr, slave(&p).isr), (0, 0));
        assert_eq!(p.take_events().acked, (1 << 8) | (1 << 2));
        assert!(!p.output());
    }

    #[test]
    fn linux_specific_eoi_and_register_reads() {
        let mut p = Pic::new();
        linux(&mut p, false);
        out(&mut p, 0x21, 0xf8);
        pulse(&mut p, 1);
        pulse(&mut p, 0);
        // OCW3: read IRR, then ISR; the data port reads IMR.
        out(&mut p, 0x20, 0x0a);
        assert_eq!(inb(&mut p, 0x20), 0x03);
        assert_eq!(p.ack(), 0x30);
        out(&mut p, 0x20, 0x0b);
        assert_eq!(inb(&mut p, 0x20), 0x01);
        assert_eq!(inb(&mut p, 0x21), 0xf8);
        // IRQ1 is below IRQ0 in service.
        assert!(!p.output());
        // Linux's mask_and_ack: mask, specific EOI (0x60 + irq).
        out(&mut p, 0x21, 0xf9);
        out(&mut p, 0x20, 0x60);
        assert_eq!(inb(&mut p, 0x20), 0);
        assert!(p.output());
        assert_eq!(p.ack(), 0x31);
        out(&mut p, 0x20, 0x61);
        out(&mut p, 0x20, 0x0a);
        assert_eq!(inb(&mut p, 0x20), 0);
    }

    #[test]
    fn linux_auto_eoi() {
        let mut p = Pic::new();
        linux(&mut p, true);
        assert_eq!(master(&p).auto_eoi, 1);
        out(&mut p, 0x21, 0xfa);
        pulse(&mut p, 0);
        p.take_events();
        assert_eq!(p.ack(), 0x30);
        assert_eq!(master(&p).isr, 0);
        assert_eq!(p.take_events().acked, 1);
        pulse(&mut p, 0);
        assert!(p.output());
        // Rotate in automatic EOI mode (OCW2 0x80): IRQ0 becomes the lowest.
        out(&mut p, 0x20, 0x80);
        p.ack();
        assert_eq!(master(&p).priority_add, 1);
        out(&mut p, 0x20, 0x00);
        assert_eq!(master(&p).rotate_on_auto_eoi, 0);
    }

    #[test]
    fn edge_and_level_triggering() {
        let mut p = Pic::new();
        seabios(&mut p);
        out(&mut p, 0xa1, 0x00);
        // ELCR: the mask keeps IRQ 8 and 13 edge.
        out(&mut p, 0x4d1, 0xff);
        assert_eq!(inb(&mut p, 0x4d1), 0xde);
        out(&mut p, 0x4d0, 0xff);
        assert_eq!(inb(&mut p, 0x4d0), 0xf8);
        // Level IRQ 10: a second assert is coalesced; IRR follows the line.
        assert_eq!(p.set_irq(10, SRC, true), 1);
        assert_eq!(p.set_irq(10, SRC, true), 0);
        assert_eq!(p.ack(), 0x72);
        // A level request is not cleared by INTA.
        assert_eq!(slave(&p).irr, 1 << 2);
        out(&mut p, 0xa0, 0x20);
        out(&mut p, 0x20, 0x20);
        p.set_irq(10, SRC, false);
        assert_eq!(slave(&p).irr, 0);
        // Edge IRQ 8: only the rising edge requests.
        assert_eq!(p.set_irq(8, SRC, true), 1);
        assert_eq!(p.set_irq(8, SRC, true), 1);
        assert_eq!(slave(&p).irr, 1);
        assert_eq!(p.ack(), 0x70);
        assert_eq!(slave(&p).irr, 0);
        assert_eq!(p.set_irq(8, SRC, true), 1);
        assert_eq!(slave(&p).irr, 0);
        // An edge pending and not yet acknowledged is coalesced.
        out(&mut p, 0xa0, 0x20);
        out(&mut p, 0x20, 0x20);
        out(&mut p, 0xa1, 0x01);
        assert_eq!(pulse(&mut p, 8), -1);
        p.set_irq(8, SRC, false);
        out(&mut p, 0xa1, 0x00);
        assert_eq!(pulse(&mut p, 8), 0);
        // IRQs out of range.
        assert_eq!(p.set_irq(16, SRC, true), -1);
    }

    #[test]
    fn spurious_irq7_and_irq15() {
        let mut p = Pic::new();
        seabios(&mut p);
        // The request goes away (masked) after INTR rose: IRQ7, no ISR.
        out(&mut p, 0x21, 0xf9);
        pulse(&mut p, 1);
        assert!(p.output());
        out(&mut p, 0x21, 0xfb);
        assert!(!p.output());
        assert_eq!(p.ack(), 0x0f);
        assert_eq!(master(&p).isr, 0);
        // A level request on the slave goes away: the master's IRR2 stays,
        // the slave answers IRQ15.
        out(&mut p, 0x4d1, 0x04);
        out(&mut p, 0xa1, 0x00);
        p.set_irq(10, SRC, true);
        p.set_irq(10, SRC, false);
        assert!(p.output());
        assert_eq!(p.ack(), 0x77);
        assert_eq!((master(&p).isr, slave(&p).isr), (1 << 2, 0));
        // Vector arithmetic wraps in 8 bits.
        let mut s = master(&p).to_bytes();
        s[5] = 0xfe;
        p.set_state(PicChip::Master, &s);
        p.update();
        assert_eq!(p.ack(), 0x05);
    }

    #[test]
    fn priorities_and_rotation() {
        let mut p = Pic::new();
        seabios(&mut p);
        out(&mut p, 0x21, 0x00);
        pulse(&mut p, 1);
        pulse(&mut p, 5);
        // Set priority (OCW2 0xc0 | 3): IRQ3 lowest, IRQ4 highest.
        out(&mut p, 0x20, 0xc3);
        assert_eq!(p.ack(), 0x0d);
        // Rotate on non-specific EOI: IRQ5 becomes the lowest.
        out(&mut p, 0x20, 0xa0);
        assert_eq!(master(&p).priority_add, 6);
        assert_eq!(p.ack(), 0x09);
        // Rotate on specific EOI (0xe0 | 1).
        out(&mut p, 0x20, 0xe1);
        assert_eq!((master(&p).priority_add, master(&p).isr), (2, 0));
        // The non-specific EOI ends the highest-priority IRQ in service.
        pulse(&mut p, 6);
        pulse(&mut p, 3);
        assert_eq!(p.ack(), 0x0b);
        out(&mut p, 0x20, 0x20);
        assert_eq!(p.ack(), 0x0e);
        assert_eq!(master(&p).isr, 1 << 6);
        // No operation (OCW2 0x40) and EOI with nothing in service.
        let before = p.clone();
        out(&mut p, 0x20, 0x40);
        assert_eq!(p, before);
        out(&mut p, 0x20, 0x20);
        out(&mut p, 0x20, 0x20);
        assert_eq!(master(&p).isr, 0);
    }

    #[test]
    fn special_fully_nested_mode() {
        for sfnm in [false, true] {
            let mut p = Pic::new();
            out(&mut p, 0x20, 0x11);
            out(&mut p, 0x21, 0x08);
            out(&mut p, 0x21, 0x04);
            out(&mut p, 0x21, if sfnm { 0x11 } else { 0x01 });
            seabios_slave(&mut p);
            out(&mut p, 0x21, 0x00);
            out(&mut p, 0xa1, 0x00);
            pulse(&mut p, 10);
            assert_eq!(p.ack(), 0x72);
            // A higher-priority slave IRQ while IRQ10 is in service gets
            // through the master only in special fully nested mode.
            pulse(&mut p, 9);
            assert_eq!(p.output(), sfnm);
            if sfnm {
                assert_eq!(p.ack(), 0x71);
            }
        }
    }

    fn seabios_slave(p: &mut Pic) {
        out(p, 0xa0, 0x11);
        out(p, 0xa1, 0x70);
        out(p, 0xa1, 0x02);
        out(p, 0xa1, 0x01);
    }

    #[test]
    fn poll_mode() {
        let mut p = Pic::new();
        seabios(&mut p);
        out(&mut p, 0x21, 0x00);
        out(&mut p, 0xa1, 0x00);
        // Nothing pending: 0x07, and poll mode ends.
        out(&mut p, 0x20, 0x0c);
        assert_eq!(inb(&mut p, 0x20), 0x07);
        assert_eq!(master(&p).poll, 0);
        // The poll takes the request without putting it in service.
        pulse(&mut p, 3);
        out(&mut p, 0x20, 0x0c);
        assert_eq!(inb(&mut p, 0x21), 0x83);
        assert_eq!((master(&p).irr, master(&p).isr), (0, 0));
        assert!(!p.output());
        // Polling the slave clears the master's cascade input too.
        pulse(&mut p, 12);
        assert_eq!(master(&p).irr, 1 << 2);
        out(&mut p, 0xa0, 0x0c);
        assert_eq!(inb(&mut p, 0xa0), 0x84);
        assert_eq!((master(&p).irr, slave(&p).irr), (0, 0));
        assert_eq!(p.take_events().acked & (1 << 12), 1 << 12);
    }

    #[test]
    fn special_mask_is_kept_without_effect() {
        let mut p = Pic::new();
        seabios(&mut p);
        out(&mut p, 0x21, 0x00);
        out(&mut p, 0x20, 0x68);
        assert_eq!(master(&p).special_mask, 1);
        pulse(&mut p, 4);
        p.ack();
        // 8259A SMM would let IRQ5 in while IRQ4 is masked and in service;
        // the C KVM does not.
        out(&mut p, 0x21, 0x10);
        pulse(&mut p, 5);
        assert!(!p.output());
        out(&mut p, 0x20, 0x48);
        assert_eq!(master(&p).special_mask, 0);
    }

    #[test]
    fn icw1_reset_quirks() {
        let mut p = Pic::new();
        seabios(&mut p);
        out(&mut p, 0x4d0, 0x20);
        out(&mut p, 0x21, 0x00);
        pulse(&mut p, 4);
        assert_eq!(p.ack(), 0x0c);
        pulse(&mut p, 3);
        p.set_irq(5, SRC, true);
        out(&mut p, 0x20, 0x0e);
        p.take_events();
        // ICW1 without IC4: ISR and poll are kept, the edge request is
        // dropped (and IRQ3 acknowledged), the level one kept.
        p.pio_write(0x20, &[0x10], true).unwrap();
        let m = master(&p);
        assert_eq!((m.isr, m.irr, m.imr, m.init_state), (1 << 4, 1 << 5, 0, 1));
        assert_eq!((m.poll, m.init4, m.auto_eoi, m.last_irr), (1, 0, 0, 0));
        assert_eq!(p.take_events().acked, 1 << 3);
        // ICW2, ICW3, and no ICW4: operating again.
        out(&mut p, 0x21, 0x27);
        assert_eq!(master(&p).irq_base, 0x20);
        out(&mut p, 0x21, 0x04);
        assert_eq!(master(&p).init_state, 0);
        out(&mut p, 0x21, 0x55);
        assert_eq!(master(&p).imr, 0x55);
        // Without a vCPU taking the PIC's interrupt there is no ack.
        pulse(&mut p, 3);
        p.pio_write(0x20, &[0x11], false).unwrap();
        assert_eq!(p.take_events().acked, 0);
        // ICW1 does not re-evaluate INTR.
        let mut q = Pic::new();
        pulse(&mut q, 1);
        assert!(q.output());
        out(&mut q, 0x20, 0x11);
        assert!(q.output());
    }

    #[test]
    fn port_decoding() {
        let mut p = Pic::new();
        let mut b2 = [0xaau8; 2];
        // Words within a device read zeros and write nothing.
        p.pio_read(0x20, &mut b2).unwrap();
        assert_eq!(b2, [0, 0]);
        p.pio_write(0x4d0, &[0xff, 0xff], true).unwrap();
        assert_eq!(master(&p).elcr, 0);
        // Accesses that leave the device, and other ports, are not ours.
        assert_eq!(p.pio_read(0x21, &mut b2), Err(NotClaimed));
        assert_eq!(p.pio_write(0xa1, &[0, 0], true), Err(NotClaimed));
        let mut b4 = [0u8; 4];
        assert_eq!(p.pio_read(0x20, &mut b4), Err(NotClaimed));
        for port in [0x1f, 0x22, 0x9f, 0xa2, 0x4cf, 0x4d2] {
            assert_eq!(p.pio_write(port, &[0], true), Err(NotClaimed));
        }
        assert_eq!(p.pio_read(0x20, &mut []), Ok(()));
    }

    #[test]
    fn state_round_trip_is_raw() {
        let mut p = Pic::new();
        seabios(&mut p);
        out(&mut p, 0x21, 0x00);
        pulse(&mut p, 6);
        p.ack();
        let m = p.get_state(PicChip::Master);
        let s = p.get_state(PicChip::Slave);
        let mut q = Pic::new();
        q.set_state(PicChip::Master, &m);
        q.set_state(PicChip::Slave, &s);
        q.update();
        assert_eq!(q.get_state(PicChip::Master), m);
        assert_eq!(q.get_state(PicChip::Slave), s);
        // Field order of struct kvm_pic_state.
        assert_eq!(m[..6], [0x40, 0, 0, 0x40, 0, 0x08]);
        assert_eq!(m[13..], [1, 0, 0xf8]);
        // Any bytes are taken; an unknown init_state ignores data writes.
        let raw: [u8; 16] = core::array::from_fn(|i| (i as u8).wrapping_mul(37) | 0x80);
        q.set_state(PicChip::Slave, &raw);
        assert_eq!(q.get_state(PicChip::Slave), raw);
        q.set_state(PicChip::Slave, &{
            let mut r = raw;
            r[7] = 0;
            r
        });
        let before = q.clone();
        out(&mut q, 0xa1, 0x12);
        assert_eq!(q, before);
        // Restoring a pending request and updating raises INTR.
        let mut r = Pic::new();
        r.set_state(
            PicChip::Master,
            &[0, 1, 0, 0, 0, 0x08, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0xf8],
        );
        assert!(!r.output());
        r.update();
        assert!(r.output() && r.take_events().wakeup);
    }

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn fuzz_never_panics() {
        const PORTS: [u16; 8] = [0x20, 0x21, 0xa0, 0xa1, 0x4d0, 0x4d1, 0x22, 0x4d2];
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut p = Pic::new();
        for i in 0..300_000u32 {
            let r = rng.next();
            let port = PORTS[(r & 7) as usize];
            let v = (r >> 8) as u8;
            let len = [1, 1, 1, 2, 0, 4][((r >> 16) % 6) as usize];
            let mut buf = [v; 4];
            match (r >> 24) % 8 {
                0..=2 => {
                    let _ = p.pio_write(port, &buf[..len], r & (1 << 40) != 0);
                }
                3 | 4 => {
                    let _ = p.pio_read(port, &mut buf[..len]);
                }
                5 => {
                    let src = IrqSource::new((r >> 32) as u32 & 63).unwrap();
                    p.set_irq((r >> 40) as usize % 18, src, r & (1 << 50) != 0);
                }
                6 => {
                    let _ = p.ack();
                    let _ = p.take_events();
                }
                _ if i % 32 == 0 => {
                    let c = if r & (1 << 33) != 0 {
                        PicChip::Master
                    } else {
                        PicChip::Slave
                    };
                    let b = rng.next().to_le_bytes();
                    let b2 = rng.next().to_le_bytes();
                    let mut s = [0u8; 16];
                    s[..8].copy_from_slice(&b);
                    s[8..].copy_from_slice(&b2);
                    p.set_state(c, &s);
                    assert_eq!(p.get_state(c), s);
                    p.update();
                }
                _ => p.clear_all(IrqSource::new((r >> 32) as u32 & 63).unwrap()),
            }
        }
    }
}
