// SPDX-License-Identifier: GPL-2.0

//! The in-kernel IOAPIC (`arch/x86/kvm/ioapic.c`): a 24-pin 82093AA.
//!
//! Core-only (host-tested). The model holds what `struct kvm_ioapic` holds
//! (the `KVM_GET/SET_IRQCHIP` state, the per-source line states, the
//! delivered-edge and EOI-storm bookkeeping, the RTC EOI tracking) and leaves
//! the kernel parts to the module: the lock, routing an interrupt message to
//! the local APICs ([`ApicBus`]), the 10 ms timer of the EOI-storm delay, the
//! ack and mask notifiers, and the "scan the IOAPIC" requests to vCPUs.
//!
//! As the C KVM, the model is an 82093AA (version 0x11): it has no EOI
//! register (the 0x20 version's register at 0x40 reads 0 and ignores writes)
//! and learns of EOIs from the local APICs' EOI broadcast ([`Ioapic::eoi`]).
//! The destination ID is 8 bits; delivery modes are passed on to the local
//! APICs as written, the reserved ones included, as the C KVM does.
//!
//! Not modelled: the irqfd resampler (with none registered, the C KVM
//! re-delivers an unmasked pending level interrupt, as here), and the lazy
//! EOI update under APICv/AVIC, which kvm-rs does not use.

use super::irq::{IrqSource, LineStates};
use super::lapic::{DeliveryMode, Destination, Irq, Shorthand};

/// `IOAPIC_NUM_PINS` (`KVM_IOAPIC_NUM_PINS`).
pub(crate) const IOAPIC_NUM_PINS: usize = 24;
/// `IOAPIC_DEFAULT_BASE_ADDRESS`: where `KVM_CREATE_IRQCHIP` maps the window.
pub(crate) const IOAPIC_DEFAULT_BASE_ADDRESS: u64 = 0xfec0_0000;
/// `IOAPIC_MEM_LENGTH`: the MMIO window the C KVM registers.
pub(crate) const IOAPIC_MEM_LENGTH: u64 = 0x100;
/// `RTC_GSI`: the pin whose EOIs are tracked for `KVM_IRQ_LINE_STATUS`.
pub(crate) const RTC_GSI: usize = 8;
/// `sizeof(struct kvm_ioapic_state)`.
pub(crate) const KVM_IOAPIC_STATE_SIZE: usize = 216;
/// The delay of the EOI-storm re-injection (`HZ / 100`), in ns.
pub(crate) const EOI_INJECT_DELAY_NS: u64 = 10_000_000;
/// vCPU ids the RTC EOI tracking can follow (`KVM_MAX_VCPU_IDS`).
pub(crate) const DEST_MAP_VCPU_IDS: usize = 4096;

/// `IOAPIC_VERSION_ID`: the 82093AA (82093AA datasheet, 3.2.2).
const IOAPIC_VERSION_ID: u32 = 0x11;
/// `IOAPIC_SUCCESSIVE_IRQ_MAX_COUNT`: re-deliveries on EOI in a row before
/// the next one is delayed.
const IOAPIC_SUCCESSIVE_IRQ_MAX_COUNT: u32 = 10_000;
const ALL_PINS: u32 = (1 << IOAPIC_NUM_PINS) - 1;

/// Offsets of the direct registers in the MMIO window (82093AA datasheet,
/// 3.1). The window repeats every 256 bytes (`addr &= 0xff` in C).
pub(crate) mod reg {
    /// I/O register select (IOREGSEL), 8 bits.
    pub(crate) const IOREGSEL: u64 = 0x00;
    /// I/O window (IOWIN): the register IOREGSEL selects.
    pub(crate) const IOWIN: u64 = 0x10;
    /// EOI register of the version 0x20 IOAPIC; absent here.
    #[cfg(test)]
    pub(crate) const EOI: u64 = 0x40;
}

/// Indirect registers, as IOREGSEL selects them (82093AA datasheet, 3.2).
pub(crate) mod index {
    /// IOAPICID: the ID in bits 27:24.
    pub(crate) const ID: u32 = 0x00;
    /// IOAPICVER: version and maximum redirection entry (read-only).
    pub(crate) const VERSION: u32 = 0x01;
    /// IOAPICARB: arbitration ID (read-only; reads as the ID here).
    pub(crate) const ARB: u32 = 0x02;
    /// IOREDTBL0 low half; entry `n` is at `REDTBL + 2n` (low) and
    /// `REDTBL + 2n + 1` (high).
    pub(crate) const REDTBL: u32 = 0x10;
}

/// The version register: maximum redirection entry 23 in bits 23:16,
/// version 0x11 in bits 7:0.
pub(crate) const IOAPIC_VERSION: u32 = ((IOAPIC_NUM_PINS as u32 - 1) << 16) | IOAPIC_VERSION_ID;

/// A redirection table entry (`union kvm_ioapic_redirect_entry`; 82093AA
/// datasheet, 3.2.4). Every bit is stored as written, the reserved ones
/// included, except delivery status and remote IRR, which the guest
/// cannot write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RedirEntry(pub(crate) u64);

impl RedirEntry {
    const VECTOR: u64 = 0xff;
    const DEST_LOGICAL: u64 = 1 << 11;
    const DELIVERY_STATUS: u64 = 1 << 12;
    const REMOTE_IRR: u64 = 1 << 14;
    const LEVEL_TRIGGERED: u64 = 1 << 15;
    const MASKED: u64 = 1 << 16;
    const DEST_SHIFT: u32 = 56;

    /// The vector (bits 7:0).
    pub(crate) const fn vector(self) -> u8 {
        (self.0 & Self::VECTOR) as u8
    }

    /// The delivery mode (bits 10:8), which the C KVM shifts into an APIC
    /// ICR mode as is.
    pub(crate) const fn delivery_mode(self) -> DeliveryMode {
        DeliveryMode::from_reg(self.0 as u32)
    }

    /// Logical destination mode (bit 11).
    pub(crate) const fn dest_logical(self) -> bool {
        self.0 & Self::DEST_LOGICAL != 0
    }

    /// Delivery status (bit 12): never set by KVM, kept as restored.
    #[cfg(test)]
    pub(crate) const fn delivery_status(self) -> bool {
        self.0 & Self::DELIVERY_STATUS != 0
    }

    /// Remote IRR (bit 14): a level-triggered interrupt was accepted and
    /// awaits its EOI.
    pub(crate) const fn remote_irr(self) -> bool {
        self.0 & Self::REMOTE_IRR != 0
    }

    /// Level-triggered (bit 15).
    pub(crate) const fn level_triggered(self) -> bool {
        self.0 & Self::LEVEL_TRIGGERED != 0
    }

    /// Masked (bit 16).
    pub(crate) const fn masked(self) -> bool {
        self.0 & Self::MASKED != 0
    }

    /// The destination field (bits 63:56).
    pub(crate) const fn dest_id(self) -> u8 {
        (self.0 >> Self::DEST_SHIFT) as u8
    }

    /// Where the entry sends its message.
    pub(crate) const fn destination(self) -> Destination {
        Destination {
            id: self.dest_id() as u32,
            logical: self.dest_logical(),
            shorthand: Shorthand::None,
        }
    }

    /// The message the entry sends when the pin fires (`ioapic_service()`).
    pub(crate) const fn irq(self) -> Irq {
        Irq {
            vector: self.vector(),
            mode: self.delivery_mode(),
            level: true,
            level_triggered: self.level_triggered(),
        }
    }

    const fn with(self, bit: u64, on: bool) -> Self {
        Self(if on { self.0 | bit } else { self.0 & !bit })
    }
}

/// An interrupt message from a pin, for the local APICs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Delivery {
    /// The pin that fired.
    pub(crate) pin: u8,
    /// Where it goes (never a shorthand).
    pub(crate) dest: Destination,
    /// What it delivers.
    pub(crate) irq: Irq,
}

/// Which vCPUs accepted the RTC interrupt, and with which vector
/// (`struct dest_map`).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct DestMap {
    map: [u64; DEST_MAP_VCPU_IDS / 64],
    vectors: [u8; DEST_MAP_VCPU_IDS],
}

impl core::fmt::Debug for DestMap {
    /// Only the vCPUs recorded, not 4 KiB of vectors.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let ids = (0..DEST_MAP_VCPU_IDS as u32).filter_map(|id| Some((id, self.get(id)?)));
        f.debug_map().entries(ids).finish()
    }
}

impl DestMap {
    const fn new() -> Self {
        Self {
            map: [0; DEST_MAP_VCPU_IDS / 64],
            vectors: [0; DEST_MAP_VCPU_IDS],
        }
    }

    /// The vCPU `vcpu_id` accepted `vector` (what `__apic_accept_irq()` does
    /// with a `dest_map`). Ids beyond [`DEST_MAP_VCPU_IDS`] are not tracked.
    pub(crate) fn record(&mut self, vcpu_id: u32, vector: u8) {
        let i = vcpu_id as usize;
        if let (Some(w), Some(v)) = (self.map.get_mut(i / 64), self.vectors.get_mut(i)) {
            *w |= 1 << (i % 64);
            *v = vector;
        }
    }

    /// The vector `vcpu_id` accepted, if it is tracked.
    pub(crate) fn get(&self, vcpu_id: u32) -> Option<u8> {
        let i = vcpu_id as usize;
        let w = self.map.get(i / 64)?;
        if w & (1 << (i % 64)) != 0 {
            self.vectors.get(i).copied()
        } else {
            None
        }
    }

    fn clear(&mut self, vcpu_id: u32) {
        let i = vcpu_id as usize;
        if let Some(w) = self.map.get_mut(i / 64) {
            *w &= !(1 << (i % 64));
        }
    }

    fn clear_all(&mut self) {
        self.map = [0; DEST_MAP_VCPU_IDS / 64];
    }
}

/// Routes interrupt messages to the local APICs: the module's side of
/// `kvm_irq_delivery_to_apic()`.
pub(crate) trait ApicBus {
    /// Delivers `d` to the APICs it addresses (from no source APIC:
    /// [`super::lapic::Source::Device`]), lowest-priority arbitration
    /// included. Returns -1 if no APIC was a destination, else how many
    /// accepted it. With `dest_map`, records with [`DestMap::record`] each
    /// vCPU that accepted a fixed or lowest-priority interrupt.
    fn deliver(&mut self, d: &Delivery, dest_map: Option<&mut DestMap>) -> i32;
}

impl<F: FnMut(&Delivery, Option<&mut DestMap>) -> i32> ApicBus for F {
    fn deliver(&mut self, d: &Delivery, dest_map: Option<&mut DestMap>) -> i32 {
        self(d, dest_map)
    }
}

/// The access is outside the window (`-EOPNOTSUPP` in C): not claimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NotClaimed;

/// A redirection entry the guest wrote. The module fires the mask
/// notifiers if the mask bit changed, and asks the vCPUs addressed by the
/// old or new destination to rescan the IOAPIC ([`Ioapic::handled_vectors`]);
/// all vCPUs unless the delivery mode is fixed, as the C KVM does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EntryWrite {
    /// The pin.
    pub(crate) pin: u8,
    /// The entry before the write.
    pub(crate) old: RedirEntry,
    /// The entry after it.
    pub(crate) new: RedirEntry,
}

/// What an EOI did (`kvm_ioapic_update_eoi()`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct EoiOutcome {
    /// Pins whose vector matched: the module runs their ack notifiers
    /// (`kvm_notify_acked_irq()`), bit `n` for pin `n`.
    pub(crate) acked_pins: u32,
    /// A level interrupt was re-asserted on EOI too often in a row: call
    /// [`Ioapic::eoi_inject_work`] in [`EOI_INJECT_DELAY_NS`] (unless that
    /// is already pending), as real hardware lets a storming guest progress.
    pub(crate) schedule_inject: bool,
}

/// The RTC's EOI tracking (`struct rtc_status`).
///
/// # Invariants
///
/// `pending_eoi` counts the vCPUs recorded in `dest_map` when the RTC entry
/// delivers fixed or lowest-priority interrupts and the bus records
/// faithfully; as in the C KVM it is the bus's count otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RtcStatus {
    pending_eoi: u32,
    dest_map: DestMap,
}

impl RtcStatus {
    fn reset(&mut self) {
        self.pending_eoi = 0;
        self.dest_map.clear_all();
    }
}

/// The IOAPIC of a VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Ioapic {
    base_address: u64,
    /// 8 bits when the guest writes it; any value `KVM_SET_IRQCHIP` gives.
    ioregsel: u32,
    /// 4 bits when the guest writes it; any value `KVM_SET_IRQCHIP` gives.
    id: u32,
    /// Pins asserted (level) or with an edge not yet delivered.
    irr: u32,
    /// `pad` of `struct kvm_ioapic_state`, kept as restored.
    pad: u32,
    redirtbl: [RedirEntry; IOAPIC_NUM_PINS],
    lines: LineStates<IOAPIC_NUM_PINS>,
    /// Edge pins whose last edge was delivered: left out of the saved IRR.
    irr_delivered: u32,
    /// Re-deliveries on EOI in a row, per pin.
    irq_eoi: [u32; IOAPIC_NUM_PINS],
    rtc: RtcStatus,
}

impl Default for Ioapic {
    fn default() -> Self {
        Self::new()
    }
}

impl Ioapic {
    /// The IOAPIC `KVM_CREATE_IRQCHIP` creates (`kvm_ioapic_init()` and
    /// `kvm_ioapic_reset()`): every pin masked and otherwise zero, ID 0,
    /// window at 0xfec00000.
    pub(crate) const fn new() -> Self {
        Self {
            base_address: IOAPIC_DEFAULT_BASE_ADDRESS,
            ioregsel: 0,
            id: 0,
            irr: 0,
            pad: 0,
            redirtbl: [RedirEntry(RedirEntry::MASKED); IOAPIC_NUM_PINS],
            lines: LineStates::new(),
            irr_delivered: 0,
            irq_eoi: [0; IOAPIC_NUM_PINS],
            rtc: RtcStatus {
                pending_eoi: 0,
                dest_map: DestMap::new(),
            },
        }
    }

    // ---- registers ----

    /// `ioapic_in_range()` (whose end wraps as C's does). The module maps
    /// the window once, at [`IOAPIC_DEFAULT_BASE_ADDRESS`]; as in the C KVM,
    /// a base moved by `KVM_SET_IRQCHIP` only makes that window unclaimed.
    pub(crate) fn in_range(&self, gpa: u64) -> bool {
        gpa >= self.base_address && gpa < self.base_address.wrapping_add(IOAPIC_MEM_LENGTH)
    }

    /// Redirection entry `pin`.
    pub(crate) fn entry(&self, pin: usize) -> Option<RedirEntry> {
        self.redirtbl.get(pin).copied()
    }

    /// The vectors of the redirection entries (bit `v % 64` of word
    /// `v / 64`): only an EOI of one of these can concern the IOAPIC (C
    /// keeps the narrower `ioapic_handled_vectors` per vCPU).
    pub(crate) fn entry_vectors(&self) -> [u64; 4] {
        let mut v = [0u64; 4];
        for e in &self.redirtbl {
            let n = e.vector();
            v[usize::from(n >> 6)] |= 1 << (n & 63);
        }
        v
    }

    /// The interrupt request register, one bit per pin.
    #[cfg(test)]
    pub(crate) fn irr(&self) -> u32 {
        self.irr
    }

    /// The register IOREGSEL selects (`ioapic_read_indirect()`). Outside
    /// the table (including the reserved indices 0x03-0x0f) it reads all
    /// ones.
    fn read_indirect(&self) -> u32 {
        match self.ioregsel {
            index::VERSION => IOAPIC_VERSION,
            index::ID | index::ARB => (self.id & 0xf) << 24,
            sel => {
                let i = (sel.wrapping_sub(index::REDTBL) >> 1) as usize;
                let bits = self.redirtbl.get(i).map_or(!0, |e| e.0);
                if sel & 1 != 0 {
                    (bits >> 32) as u32
                } else {
                    bits as u32
                }
            }
        }
    }

    /// A guest read of `data.len()` bytes at `gpa` (`ioapic_mmio_read()`).
    /// IOREGSEL and IOWIN decode on `gpa & 0xff`; everything else in the
    /// window reads 0. An 8-byte read zero-extends the 32-bit register;
    /// sizes other than 1, 2, 4, 8 leave `data` untouched.
    pub(crate) fn mmio_read(&self, gpa: u64, data: &mut [u8]) -> Result<(), NotClaimed> {
        if !self.in_range(gpa) {
            return Err(NotClaimed);
        }
        let v = match gpa & 0xff {
            reg::IOREGSEL => self.ioregsel,
            reg::IOWIN => self.read_indirect(),
            _ => 0,
        };
        let bytes = u64::from(v).to_le_bytes();
        if let 1 | 2 | 4 | 8 = data.len() {
            data.copy_from_slice(&bytes[..data.len()]);
        }
        Ok(())
    }

    /// A guest write of `data` at `gpa` (`ioapic_mmio_write()`). 4- and
    /// 8-byte writes use the low 32 bits; other sizes than 1, 2, 4, 8 are
    /// dropped. Returns the redirection entry written, if any.
    pub(crate) fn mmio_write(
        &mut self,
        gpa: u64,
        data: &[u8],
        bus: &mut impl ApicBus,
    ) -> Result<Option<EntryWrite>, NotClaimed> {
        if !self.in_range(gpa) {
            return Err(NotClaimed);
        }
        let v = match *data {
            [a] => u32::from(a),
            [a, b] => u32::from(u16::from_le_bytes([a, b])),
            [a, b, c, d] | [a, b, c, d, _, _, _, _] => u32::from_le_bytes([a, b, c, d]),
            _ => return Ok(None),
        };
        match gpa & 0xff {
            reg::IOREGSEL => {
                self.ioregsel = v & 0xff;
                Ok(None)
            }
            reg::IOWIN => Ok(self.write_indirect(v, bus)),
            _ => Ok(None),
        }
    }

    /// A write of the register IOREGSEL selects (`ioapic_write_indirect()`).
    fn write_indirect(&mut self, v: u32, bus: &mut impl ApicBus) -> Option<EntryWrite> {
        match self.ioregsel {
            index::ID => {
                self.id = (v >> 24) & 0xf;
                None
            }
            index::VERSION | index::ARB => None,
            sel => {
                let pin = (sel.wrapping_sub(index::REDTBL) >> 1) as usize;
                let old = self.entry(pin)?;
                let bits = if sel & 1 != 0 {
                    (old.0 & 0xffff_ffff) | (u64::from(v) << 32)
                } else {
                    (old.0 & !0xffff_ffff) | u64::from(v)
                };
                // Delivery status and remote IRR are read-only.
                let ro = RedirEntry::DELIVERY_STATUS | RedirEntry::REMOTE_IRR;
                let mut new = RedirEntry((bits & !ro) | (old.0 & ro));
                // Linux and Xen expect an entry switched to edge to drop
                // remote IRR, as a substitute for the EOI register of
                // version 0x20 (ioapic.c).
                if !new.level_triggered() {
                    new = new.with(RedirEntry::REMOTE_IRR, false);
                }
                self.redirtbl[pin] = new;
                // An unmasked level pin still pending is delivered now; C
                // first asks an irqfd resampler, of which there is none here.
                if new.level_triggered()
                    && self.irr & (1 << pin) != 0
                    && !new.masked()
                    && !new.remote_irr()
                {
                    self.service(pin, false, bus);
                }
                Some(EntryWrite {
                    pin: pin as u8,
                    old,
                    new: self.redirtbl[pin],
                })
            }
        }
    }

    // ---- interrupts ----

    /// `ioapic_service()`: sends pin `pin`'s message unless masked or a
    /// level interrupt awaits its EOI. Returns the bus's result, -1 when
    /// nothing was sent.
    fn service(&mut self, pin: usize, line_status: bool, bus: &mut impl ApicBus) -> i32 {
        let Some(e) = self.entry(pin) else {
            return -1;
        };
        if e.masked() || (e.level_triggered() && e.remote_irr()) {
            return -1;
        }
        let d = Delivery {
            pin: pin as u8,
            dest: e.destination(),
            irq: e.irq(),
        };
        if !e.level_triggered() {
            self.irr_delivered |= 1 << pin;
        }
        let ret = if pin == RTC_GSI && line_status {
            // The caller found no EOI pending: the map is empty.
            let ret = bus.deliver(&d, Some(&mut self.rtc.dest_map));
            self.rtc.pending_eoi = ret.max(0) as u32;
            ret
        } else {
            bus.deliver(&d, None)
        };
        // -1 (no destination) sets remote IRR too; only "matched but not
        // accepted" leaves it clear (C's `if (ret && ...)`).
        if ret != 0 && e.level_triggered() {
            self.redirtbl[pin] = e.with(RedirEntry::REMOTE_IRR, true);
        }
        ret
    }

    /// `ioapic_set_irq()`: the pin's line went to `level`.
    fn set_pin(
        &mut self,
        pin: usize,
        level: bool,
        line_status: bool,
        bus: &mut impl ApicBus,
    ) -> i32 {
        let Some(e) = self.entry(pin) else {
            return -1;
        };
        let mask = 1u32 << pin;
        if !level {
            self.irr &= !mask;
            return 1;
        }
        // KVM_IRQ_LINE_STATUS reports an RTC interrupt as coalesced while
        // the last one is not EOIed: Windows keeps time by counting them.
        if pin == RTC_GSI && line_status && self.rtc.pending_eoi > 0 {
            return 0;
        }
        let old_irr = self.irr;
        self.irr |= mask;
        if !e.level_triggered() {
            self.irr_delivered &= !mask;
            // The line was already high: no edge.
            if old_irr == self.irr {
                return 0;
            }
        }
        self.service(pin, line_status, bus)
    }

    /// `kvm_ioapic_set_irq()`: `source` drives pin `pin` to `level`. The
    /// result is the `KVM_IRQ_LINE_STATUS` status: 1 for a de-assert, 0 if
    /// coalesced (an edge already pending, or with `line_status` an RTC
    /// interrupt not yet EOIed), -1 if masked, awaiting EOI or undelivered,
    /// else the bus's count. A pin out of range does nothing and returns -1.
    pub(crate) fn set_irq(
        &mut self,
        pin: usize,
        source: IrqSource,
        level: bool,
        line_status: bool,
        bus: &mut impl ApicBus,
    ) -> i32 {
        if pin >= IOAPIC_NUM_PINS {
            return -1;
        }
        let level = self.lines.set(pin, source, level);
        self.set_pin(pin, level, line_status, bus)
    }

    /// `kvm_ioapic_clear_all()`: `source` is freed.
    #[cfg(test)]
    pub(crate) fn clear_all(&mut self, source: IrqSource) {
        self.lines.clear_source(source);
    }

    /// The level of pin `pin` as its sources drive it.
    #[cfg(test)]
    pub(crate) fn line_level(&self, pin: usize) -> bool {
        self.lines.level(pin)
    }

    /// `rtc_irq_eoi()`: `vcpu_id` EOIed `vector`.
    fn rtc_eoi(&mut self, vcpu_id: u32, vector: u8) {
        if self.rtc.dest_map.get(vcpu_id) == Some(vector) {
            self.rtc.dest_map.clear(vcpu_id);
            // C resynchronises from the APICs if the count would go
            // negative; with the invariant it cannot.
            self.rtc.pending_eoi = self.rtc.pending_eoi.saturating_sub(1);
        }
    }

    /// `kvm_ioapic_update_eoi()`: the local APIC of `vcpu_id` EOIed
    /// `vector`, with its TMR bit `level_triggered` and SPIV's directed-EOI
    /// bit `directed_eoi` ([`super::lapic::Lapic::suppress_eoi_broadcast`]).
    /// A level EOI without directed EOI clears remote IRR of every pin with
    /// that vector and re-delivers those still asserted and unmasked.
    pub(crate) fn eoi(
        &mut self,
        vcpu_id: u32,
        vector: u8,
        level_triggered: bool,
        directed_eoi: bool,
        bus: &mut impl ApicBus,
    ) -> EoiOutcome {
        let mut out = EoiOutcome::default();
        self.rtc_eoi(vcpu_id, vector);
        for pin in 0..IOAPIC_NUM_PINS {
            let e = self.redirtbl[pin];
            if e.vector() != vector {
                continue;
            }
            out.acked_pins |= 1 << pin;
            if !level_triggered || directed_eoi {
                continue;
            }
            self.redirtbl[pin] = e.with(RedirEntry::REMOTE_IRR, false);
            if !e.masked() && self.irr & (1 << pin) != 0 {
                self.irq_eoi[pin] += 1;
                if self.irq_eoi[pin] == IOAPIC_SUCCESSIVE_IRQ_MAX_COUNT {
                    out.schedule_inject = true;
                    self.irq_eoi[pin] = 0;
                } else {
                    self.service(pin, false, bus);
                }
            } else {
                self.irq_eoi[pin] = 0;
            }
        }
        out
    }

    /// `kvm_ioapic_eoi_inject_work()`: the delayed re-delivery of every
    /// pending level pin not awaiting an EOI.
    pub(crate) fn eoi_inject_work(&mut self, bus: &mut impl ApicBus) {
        for pin in 0..IOAPIC_NUM_PINS {
            let e = self.redirtbl[pin];
            if e.level_triggered() && self.irr & (1 << pin) != 0 && !e.remote_irr() {
                self.service(pin, false, bus);
            }
        }
    }

    /// `kvm_ioapic_scan_entry()`: the vectors whose EOI a vCPU must report
    /// to [`Ioapic::eoi`] (bit `v % 64` of word `v / 64`): those of level
    /// pins, of pins with an ack notifier and of the RTC pin that address
    /// the vCPU (`is_dest`, as [`super::lapic::Lapic::matches_dest`] from a
    /// device) or are pending in its APIC (`pending_eoi`), and the RTC
    /// vector it has not EOIed yet.
    #[cfg(test)]
    pub(crate) fn handled_vectors(
        &self,
        vcpu_id: u32,
        is_dest: impl Fn(&Destination) -> bool,
        pending_eoi: impl Fn(u8) -> bool,
        has_ack_notifier: impl Fn(usize) -> bool,
    ) -> [u64; 4] {
        let mut v = [0u64; 4];
        let mut set = |vec: u8| v[usize::from(vec >> 6)] |= 1 << (vec & 63);
        if let Some(vec) = self.rtc.dest_map.get(vcpu_id) {
            set(vec);
        }
        for (pin, e) in self.redirtbl.iter().enumerate() {
            if (e.level_triggered() || has_ack_notifier(pin) || pin == RTC_GSI)
                && (is_dest(&e.destination()) || pending_eoi(e.vector()))
            {
                set(e.vector());
            }
        }
        v
    }

    // ---- RTC EOI tracking ----

    /// The RTC pin's destination and vector, for [`Ioapic::rtc_restore_one`].
    pub(crate) fn rtc_target(&self) -> (Destination, u8) {
        let e = self.redirtbl[RTC_GSI];
        (e.destination(), e.vector())
    }

    /// RTC interrupts accepted and not yet EOIed.
    #[cfg(test)]
    pub(crate) fn rtc_pending_eoi(&self) -> u32 {
        self.rtc.pending_eoi
    }

    /// `kvm_rtc_eoi_tracking_restore_one()`: after `KVM_SET_LAPIC` of
    /// `vcpu_id`, and for every vCPU after [`Ioapic::set_state`]: `is_dest`
    /// says whether its APIC is a destination of [`Ioapic::rtc_target`],
    /// `pending_eoi` whether the RTC vector is in its IRR or ISR
    /// ([`super::lapic::Lapic::pending_eoi`]).
    pub(crate) fn rtc_restore_one(&mut self, vcpu_id: u32, is_dest: bool, pending_eoi: bool) {
        if !is_dest || vcpu_id as usize >= DEST_MAP_VCPU_IDS {
            return;
        }
        let vector = self.redirtbl[RTC_GSI].vector();
        let was = self.rtc.dest_map.get(vcpu_id).is_some();
        if pending_eoi && !was {
            self.rtc.dest_map.record(vcpu_id, vector);
            self.rtc.pending_eoi = self.rtc.pending_eoi.saturating_add(1);
        } else if !pending_eoi && was {
            self.rtc.dest_map.clear(vcpu_id);
            self.rtc.pending_eoi = self.rtc.pending_eoi.saturating_sub(1);
        }
    }

    // ---- KVM_GET_IRQCHIP / KVM_SET_IRQCHIP ----

    /// `kvm_get_ioapic()`: `struct kvm_ioapic_state` (base_address,
    /// ioregsel, id, irr, pad, `redirtbl[24]`; x86 little-endian). Edges
    /// already delivered are left out of IRR.
    pub(crate) fn get_state(&self) -> [u8; KVM_IOAPIC_STATE_SIZE] {
        let mut b = [0u8; KVM_IOAPIC_STATE_SIZE];
        b[0..8].copy_from_slice(&self.base_address.to_le_bytes());
        b[8..12].copy_from_slice(&self.ioregsel.to_le_bytes());
        b[12..16].copy_from_slice(&self.id.to_le_bytes());
        b[16..20].copy_from_slice(&(self.irr & !self.irr_delivered).to_le_bytes());
        b[20..24].copy_from_slice(&self.pad.to_le_bytes());
        for (i, e) in self.redirtbl.iter().enumerate() {
            if let Some(d) = b.get_mut(24 + 8 * i..32 + 8 * i) {
                d.copy_from_slice(&e.0.to_le_bytes());
            }
        }
        b
    }

    /// `kvm_set_ioapic()`: takes every field as given, unchecked, then
    /// raises each pin set in the given IRR again (line status on, so the
    /// RTC is tracked). The line states of the sources are kept. The module
    /// then asks every vCPU to rescan ([`Ioapic::handled_vectors`]) and
    /// calls [`Ioapic::rtc_restore_one`] for each (C:
    /// `kvm_rtc_eoi_tracking_restore_all()`).
    pub(crate) fn set_state(&mut self, b: &[u8; KVM_IOAPIC_STATE_SIZE], bus: &mut impl ApicBus) {
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| u64::from(u32_at(o)) | (u64::from(u32_at(o + 4)) << 32);
        self.base_address = u64_at(0);
        self.ioregsel = u32_at(8);
        self.id = u32_at(12);
        self.pad = u32_at(20);
        for (pin, e) in self.redirtbl.iter_mut().enumerate() {
            *e = RedirEntry(u64_at(24 + 8 * pin));
        }
        self.irr = 0;
        self.irr_delivered = 0;
        // kvm_ioapic_inject_all().
        self.rtc.reset();
        let irr = u32_at(16) & ALL_PINS;
        for pin in 0..IOAPIC_NUM_PINS {
            if irr & (1 << pin) != 0 {
                self.set_pin(pin, true, true, bus);
            }
        }
        // kvm_rtc_eoi_tracking_restore_all() starts over from the APICs.
        self.rtc.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::super::lapic::{self, Delivered, Lapic, LapicConfig, Source, VmFlags};
    use super::*;
    use std::vec::Vec;

    const BASE: u64 = IOAPIC_DEFAULT_BASE_ADDRESS;
    const SRC: IrqSource = IrqSource::USERSPACE;

    /// A bus that logs deliveries, answers `ret`, and records the vCPUs in
    /// `accept` into a dest map.
    struct Bus {
        log: Vec<Delivery>,
        ret: i32,
        accept: Vec<u32>,
    }

    fn bus() -> Bus {
        Bus {
            log: Vec::new(),
            ret: 1,
            accept: std::vec![0],
        }
    }

    impl ApicBus for Bus {
        fn deliver(&mut self, d: &Delivery, dest_map: Option<&mut DestMap>) -> i32 {
            self.log.push(*d);
            if let Some(m) = dest_map {
                for id in &self.accept {
                    m.record(*id, d.irq.vector);
                }
            }
            self.ret
        }
    }

    fn sel(io: &mut Ioapic, index: u32) {
        io.mmio_write(BASE, &index.to_le_bytes(), &mut bus())
            .unwrap();
    }

    fn read(io: &mut Ioapic, index: u32) -> u32 {
        sel(io, index);
        let mut b = [0u8; 4];
        io.mmio_read(BASE + reg::IOWIN, &mut b).unwrap();
        u32::from_le_bytes(b)
    }

    fn write(io: &mut Ioapic, index: u32, v: u32, b: &mut Bus) -> Option<EntryWrite> {
        sel(io, index);
        io.mmio_write(BASE + reg::IOWIN, &v.to_le_bytes(), b)
            .unwrap()
    }

    /// Linux's `__ioapic_write_entry()`: high half first, then low.
    fn program(io: &mut Ioapic, pin: u32, e: u64, b: &mut Bus) {
        write(io, index::REDTBL + 2 * pin + 1, (e >> 32) as u32, b);
        write(io, index::REDTBL + 2 * pin, e as u32, b);
    }

    fn entry(io: &Ioapic, pin: usize) -> RedirEntry {
        io.entry(pin).unwrap()
    }

    const EDGE_0X31_TO_0: u64 = 0x31;
    const LEVEL_0X41_TO_0: u64 = 0x8041;

    #[test]
    fn entry_vectors_cover_every_programmed_vector() {
        let mut io = Ioapic::new();
        let v = io.entry_vectors();
        assert_eq!(v, [1, 0, 0, 0], "reset entries: vector 0, masked");
        let mut b = bus();
        program(&mut io, 3, 0x41, &mut b);
        program(&mut io, 7, 0x80c2, &mut b);
        let v = io.entry_vectors();
        assert_eq!(v[1], 1 << 1);
        assert_eq!(v[3], 1 << 2);
    }

    #[test]
    fn reset_state_and_version() {
        let mut io = Ioapic::new();
        let s = io.get_state();
        assert_eq!(&s[0..8], &0xfec0_0000u64.to_le_bytes());
        assert!(s[8..24].iter().all(|b| *b == 0));
        for pin in 0..IOAPIC_NUM_PINS {
            assert_eq!(&s[24 + 8 * pin..32 + 8 * pin], &0x1_0000u64.to_le_bytes());
        }
        assert_eq!(read(&mut io, index::VERSION), 0x0017_0011);
        assert_eq!(read(&mut io, index::ID), 0);
        assert_eq!(read(&mut io, index::ARB), 0);
        assert_eq!(read(&mut io, index::REDTBL), 0x1_0000);
        assert_eq!(read(&mut io, index::REDTBL + 1), 0);
        assert_eq!(read(&mut io, index::REDTBL + 47), 0);
        // Reserved indices and entries beyond 23 read all ones.
        for i in [0x03, 0x0f, 0x40, 0x41, 0xff] {
            assert_eq!(read(&mut io, i), 0xffff_ffff, "index {i:#x}");
        }
        assert_eq!(io.rtc_pending_eoi(), 0);
        assert_eq!(Ioapic::default(), Ioapic::new());
    }

    #[test]
    fn mmio_window() {
        let mut io = Ioapic::new();
        let mut b = bus();
        // IOREGSEL keeps 8 bits and reads back.
        io.mmio_write(BASE, &0x1234_5601u32.to_le_bytes(), &mut b)
            .unwrap();
        let mut r = [0u8; 4];
        io.mmio_read(BASE, &mut r).unwrap();
        assert_eq!(u32::from_le_bytes(r), 0x01);
        // An 8-byte read zero-extends; 1 and 2 bytes take the low bytes.
        let mut r8 = [0xaau8; 8];
        io.mmio_read(BASE + reg::IOWIN, &mut r8).unwrap();
        assert_eq!(u64::from_le_bytes(r8), 0x0017_0011);
        let mut r2 = [0u8; 2];
        io.mmio_read(BASE + reg::IOWIN, &mut r2).unwrap();
        assert_eq!(r2, [0x11, 0x00]);
        // Other sizes leave the buffer alone; other offsets read 0.
        let mut r3 = [0xaau8; 3];
        io.mmio_read(BASE + reg::IOWIN, &mut r3).unwrap();
        assert_eq!(r3, [0xaa; 3]);
        io.mmio_read(BASE + 0x20, &mut r).unwrap();
        assert_eq!(r, [0; 4]);
        // The version 0x20 EOI register does not exist.
        io.mmio_read(BASE + reg::EOI, &mut r).unwrap();
        assert_eq!(r, [0; 4]);
        let before = io.clone();
        io.mmio_write(BASE + reg::EOI, &0x41u32.to_le_bytes(), &mut b)
            .unwrap();
        assert_eq!(io, before);
        // A 1-byte IOREGSEL write; an odd-sized write is dropped.
        io.mmio_write(BASE, &[0x10], &mut b).unwrap();
        io.mmio_write(BASE + reg::IOWIN, &[1, 2, 3], &mut b)
            .unwrap();
        assert_eq!(entry(&io, 0), RedirEntry(0x1_0000));
        // An 8-byte write uses the low 32 bits.
        io.mmio_write(
            BASE + reg::IOWIN,
            &0xffff_ffff_0001_0033u64.to_le_bytes(),
            &mut b,
        )
        .unwrap();
        assert_eq!(entry(&io, 0), RedirEntry(0x1_0033));
        // A 2-byte write zero-extends: entry 0 low half is now unmasked.
        io.mmio_write(BASE + reg::IOWIN, &[0x34, 0x00], &mut b)
            .unwrap();
        assert_eq!(entry(&io, 0), RedirEntry(0x34));
        // Outside the window.
        assert_eq!(io.mmio_read(BASE - 1, &mut r), Err(NotClaimed));
        assert_eq!(io.mmio_read(BASE + 0x100, &mut r), Err(NotClaimed));
        assert_eq!(io.mmio_write(BASE + 0x100, &[0], &mut b), Err(NotClaimed));
        assert!(io.in_range(BASE + 0xff));
        assert!(b.log.is_empty());
    }

    #[test]
    fn id_register() {
        let mut io = Ioapic::new();
        let mut b = bus();
        assert_eq!(write(&mut io, index::ID, 0xffff_ffff, &mut b), None);
        assert_eq!(read(&mut io, index::ID), 0x0f00_0000);
        assert_eq!(read(&mut io, index::ARB), 0x0f00_0000);
        write(&mut io, index::ARB, 0, &mut b);
        write(&mut io, index::VERSION, 0, &mut b);
        assert_eq!(read(&mut io, index::ARB), 0x0f00_0000);
        assert_eq!(read(&mut io, index::VERSION), 0x0017_0011);
        assert_eq!(&io.get_state()[12..16], &0xfu32.to_le_bytes());
    }

    #[test]
    fn redirection_entry_fields_and_read_only_bits() {
        let mut io = Ioapic::new();
        let mut b = bus();
        // Lowest priority, logical, level, active low, dest 0x0f, with
        // delivery status and remote IRR set by the write: both dropped.
        let e = 0x0f00_0000_0000_0000 | 0x0001_f931 | 0x1000 | 0x4000;
        program(&mut io, 3, e, &mut b);
        let got = entry(&io, 3);
        assert_eq!(got.0, e & !0x5000);
        assert!(got.masked() && got.level_triggered() && got.dest_logical());
        assert!(!got.remote_irr() && !got.delivery_status());
        assert_eq!(got.delivery_mode(), DeliveryMode::LowestPriority);
        assert_eq!(
            got.destination(),
            Destination {
                id: 0x0f,
                logical: true,
                shorthand: Shorthand::None
            }
        );
        // Reserved bits 55:17 are kept as written, as the C KVM keeps them.
        program(&mut io, 4, 0x00ff_ffff_fffe_0000 | 0x1_0000, &mut b);
        assert_eq!(entry(&io, 4).0, 0x00ff_ffff_ffff_0000);
        assert_eq!(read(&mut io, index::REDTBL + 9), 0x00ff_ffff);
        // Each half writes alone.
        write(&mut io, index::REDTBL + 9, 0xab00_0000, &mut b);
        assert_eq!(entry(&io, 4).0, 0xab00_0000_ffff_0000);
        // The write reports old and new entries.
        let w = write(&mut io, index::REDTBL + 8, 0x22, &mut b).unwrap();
        assert_eq!(
            (w.pin, w.old.0, w.new.0),
            (4, 0xab00_0000_ffff_0000, 0xab00_0000_0000_0022)
        );
        // Delivery modes pass through as APIC modes, reserved ones included.
        for (m, dm) in [
            (0, DeliveryMode::Fixed),
            (2, DeliveryMode::Smi),
            (3, DeliveryMode::RemoteRead),
            (4, DeliveryMode::Nmi),
            (5, DeliveryMode::Init),
            (6, DeliveryMode::StartUp),
            (7, DeliveryMode::ExtInt),
        ] {
            assert_eq!(RedirEntry(m << 8).delivery_mode(), dm);
        }
    }

    #[test]
    fn edge_pin() {
        let mut io = Ioapic::new();
        let mut b = bus();
        // Masked: IRR is set, nothing is sent.
        assert_eq!(io.set_irq(4, SRC, true, false, &mut b), -1);
        assert_eq!(io.irr(), 1 << 4);
        assert_eq!(io.set_irq(4, SRC, false, false, &mut b), 1);
        // Unmasking an edge pin sends nothing, even with the line high.
        io.set_irq(4, SRC, true, false, &mut b);
        program(&mut io, 4, EDGE_0X31_TO_0, &mut b);
        assert!(b.log.is_empty());
        // Still high: no edge, coalesced.
        assert_eq!(io.set_irq(4, SRC, true, false, &mut b), 0);
        assert_eq!(io.set_irq(4, SRC, false, false, &mut b), 1);
        assert_eq!(io.set_irq(4, SRC, true, false, &mut b), 1);
        assert_eq!(
            b.log[..],
            [Delivery {
                pin: 4,
                dest: Destination {
                    id: 0,
                    logical: false,
                    shorthand: Shorthand::None
                },
                irq: Irq {
                    vector: 0x31,
                    mode: DeliveryMode::Fixed,
                    level: true,
                    level_triggered: false
                }
            }]
        );
        // An edge pin never takes remote IRR; the saved IRR leaves out the
        // delivered edge.
        assert!(!entry(&io, 4).remote_irr());
        assert_eq!(io.irr(), 1 << 4);
        assert_eq!(&io.get_state()[16..20], &[0; 4]);
        // An edge EOI changes nothing but is acknowledged.
        let before = io.clone();
        let out = io.eoi(0, 0x31, false, false, &mut b);
        assert_eq!(out.acked_pins, 1 << 4);
        assert_eq!(io, before);
        // Pulses (PIT style) each deliver.
        for _ in 0..3 {
            io.set_irq(4, SRC, false, false, &mut b);
            io.set_irq(4, SRC, true, false, &mut b);
        }
        assert_eq!(b.log.len(), 4);
    }

    #[test]
    fn level_pin_remote_irr_and_eoi() {
        let mut io = Ioapic::new();
        let mut b = bus();
        program(&mut io, 10, LEVEL_0X41_TO_0, &mut b);
        assert_eq!(io.set_irq(10, SRC, true, false, &mut b), 1);
        assert!(entry(&io, 10).remote_irr());
        assert!(b.log[0].irq.level_triggered);
        // Awaiting EOI: not sent again.
        assert_eq!(io.set_irq(10, SRC, true, false, &mut b), -1);
        assert_eq!(b.log.len(), 1);
        // EOI while the line is still high: sent again.
        let out = io.eoi(0, 0x41, true, false, &mut b);
        assert_eq!(
            out,
            EoiOutcome {
                acked_pins: 1 << 10,
                schedule_inject: false
            }
        );
        assert_eq!(b.log.len(), 2);
        assert!(entry(&io, 10).remote_irr());
        // The device drops the line; the EOI just clears remote IRR.
        assert_eq!(io.set_irq(10, SRC, false, false, &mut b), 1);
        io.eoi(0, 0x41, true, false, &mut b);
        assert_eq!(b.log.len(), 2);
        assert!(!entry(&io, 10).remote_irr());
        // The saved IRR of a level pin is the line.
        io.set_irq(10, SRC, true, false, &mut b);
        assert_eq!(&io.get_state()[16..20], &(1u32 << 10).to_le_bytes());
        // A directed EOI (SPIV bit 12) is not the IOAPIC's: remote IRR stays.
        io.eoi(0, 0x41, true, true, &mut b);
        assert!(entry(&io, 10).remote_irr());
        // An EOI of another vector, or an edge EOI, leaves it too.
        io.eoi(0, 0x42, true, false, &mut b);
        io.eoi(0, 0x41, false, false, &mut b);
        assert!(entry(&io, 10).remote_irr());
        // Switching the entry to edge clears remote IRR (Linux's EOI
        // emulation for IOAPICs without the EOI register).
        write(&mut io, index::REDTBL + 20, 0x1_0041, &mut b);
        assert!(!entry(&io, 10).remote_irr());
    }

    #[test]
    fn remote_irr_follows_the_delivery_result() {
        for (ret, remote_irr) in [(-1, true), (0, false), (1, true), (2, true)] {
            let mut io = Ioapic::new();
            let mut b = bus();
            b.ret = ret;
            program(&mut io, 1, LEVEL_0X41_TO_0, &mut b);
            assert_eq!(io.set_irq(1, SRC, true, false, &mut b), ret);
            assert_eq!(entry(&io, 1).remote_irr(), remote_irr, "ret {ret}");
        }
    }

    #[test]
    fn masked_level_pin_fires_on_unmask() {
        let mut io = Ioapic::new();
        let mut b = bus();
        program(&mut io, 5, LEVEL_0X41_TO_0 | 0x1_0000, &mut b);
        assert_eq!(io.set_irq(5, SRC, true, false, &mut b), -1);
        assert!(b.log.is_empty());
        // Linux unmasks by rewriting the low half.
        let w = write(&mut io, index::REDTBL + 10, 0x8041, &mut b).unwrap();
        assert!(w.old.masked() && !w.new.masked() && w.new.remote_irr());
        assert_eq!(b.log.len(), 1);
        // With remote IRR set, a rewrite does not send again.
        write(&mut io, index::REDTBL + 10, 0x8041, &mut b);
        assert_eq!(b.log.len(), 1);
        // Masked pins are not re-sent on EOI, and the storm count resets.
        write(&mut io, index::REDTBL + 10, 0x1_8041, &mut b);
        io.eoi(0, 0x41, true, false, &mut b);
        assert_eq!(b.log.len(), 1);
        assert!(!entry(&io, 5).remote_irr());
    }

    #[test]
    fn shared_level_line() {
        let mut io = Ioapic::new();
        let mut b = bus();
        let dev = IrqSource::new(5).unwrap();
        program(&mut io, 16, LEVEL_0X41_TO_0, &mut b);
        io.set_irq(16, SRC, true, false, &mut b);
        io.set_irq(16, dev, true, false, &mut b);
        // One source lets go: the line stays high and is re-sent on EOI.
        assert_eq!(io.set_irq(16, SRC, false, false, &mut b), -1);
        assert!(io.line_level(16) && io.irr() & (1 << 16) != 0);
        io.eoi(0, 0x41, true, false, &mut b);
        assert_eq!(b.log.len(), 2);
        // Freeing a source forgets it without lowering the pin's IRR.
        io.clear_all(dev);
        assert!(!io.line_level(16));
        assert_ne!(io.irr() & (1 << 16), 0);
        assert_eq!(io.set_irq(16, dev, false, false, &mut b), 1);
        assert_eq!(io.irr() & (1 << 16), 0);
        // Pins out of range.
        assert_eq!(io.set_irq(24, SRC, true, false, &mut b), -1);
        assert_eq!(io.set_irq(usize::MAX, SRC, true, false, &mut b), -1);
    }

    #[test]
    fn eoi_storm_is_delayed() {
        let mut io = Ioapic::new();
        let mut b = bus();
        program(&mut io, 7, LEVEL_0X41_TO_0, &mut b);
        io.set_irq(7, SRC, true, false, &mut b);
        for _ in 0..IOAPIC_SUCCESSIVE_IRQ_MAX_COUNT - 1 {
            assert!(!io.eoi(0, 0x41, true, false, &mut b).schedule_inject);
        }
        assert_eq!(b.log.len(), IOAPIC_SUCCESSIVE_IRQ_MAX_COUNT as usize);
        let out = io.eoi(0, 0x41, true, false, &mut b);
        assert!(out.schedule_inject);
        assert_eq!(b.log.len(), IOAPIC_SUCCESSIVE_IRQ_MAX_COUNT as usize);
        assert!(!entry(&io, 7).remote_irr());
        io.eoi_inject_work(&mut b);
        assert_eq!(b.log.len(), IOAPIC_SUCCESSIVE_IRQ_MAX_COUNT as usize + 1);
        assert!(entry(&io, 7).remote_irr());
        // The work skips pins awaiting EOI.
        io.eoi_inject_work(&mut b);
        assert_eq!(b.log.len(), IOAPIC_SUCCESSIVE_IRQ_MAX_COUNT as usize + 1);
    }

    #[test]
    fn one_eoi_serves_every_pin_with_the_vector() {
        let mut io = Ioapic::new();
        let mut b = bus();
        program(&mut io, 2, LEVEL_0X41_TO_0, &mut b);
        program(&mut io, 9, LEVEL_0X41_TO_0, &mut b);
        io.set_irq(2, SRC, true, false, &mut b);
        io.set_irq(9, SRC, true, false, &mut b);
        io.set_irq(2, SRC, false, false, &mut b);
        let out = io.eoi(0, 0x41, true, false, &mut b);
        assert_eq!(out.acked_pins, (1 << 2) | (1 << 9));
        assert!(!entry(&io, 2).remote_irr() && entry(&io, 9).remote_irr());
        assert_eq!(b.log.iter().map(|d| d.pin).collect::<Vec<_>>(), [2, 9, 9]);
    }

    #[test]
    fn rtc_coalescing_with_line_status() {
        let mut io = Ioapic::new();
        let mut b = bus();
        b.accept = std::vec![0, 3];
        b.ret = 2;
        program(
            &mut io,
            RTC_GSI as u32,
            0xff00_0000_0000_0000 | 0x28,
            &mut b,
        );
        let pulse = |io: &mut Ioapic, b: &mut Bus, status: bool| {
            io.set_irq(RTC_GSI, SRC, false, status, b);
            io.set_irq(RTC_GSI, SRC, true, status, b)
        };
        assert_eq!(pulse(&mut io, &mut b, true), 2);
        assert_eq!(io.rtc_pending_eoi(), 2);
        assert_eq!(std::format!("{:?}", io.rtc.dest_map), "{0: 40, 3: 40}");
        // Not EOIed by everyone: coalesced, not sent.
        assert_eq!(pulse(&mut io, &mut b, true), 0);
        io.eoi(0, 0x28, false, false, &mut b);
        assert_eq!(pulse(&mut io, &mut b, true), 0);
        // An EOI of another vector does not count.
        io.eoi(3, 0x29, false, false, &mut b);
        assert_eq!(io.rtc_pending_eoi(), 1);
        io.eoi(3, 0x28, false, false, &mut b);
        assert_eq!(io.rtc_pending_eoi(), 0);
        assert_eq!(pulse(&mut io, &mut b, true), 2);
        assert_eq!(b.log.len(), 2);
        // KVM_IRQ_LINE (no status) is never coalesced this way.
        assert_eq!(pulse(&mut io, &mut b, false), 2);
        assert_eq!(io.rtc_pending_eoi(), 2);
        // Other pins are not tracked.
        program(&mut io, 9, 0x28, &mut b);
        io.set_irq(9, SRC, true, true, &mut b);
        assert_eq!(io.rtc_pending_eoi(), 2);
        // The RTC vector is handled for the vCPUs that owe an EOI.
        let hv = io.handled_vectors(3, |_| false, |_| false, |_| false);
        assert_eq!(hv[0], 1 << 0x28);
    }

    #[test]
    fn rtc_restore_from_lapics() {
        let mut io = Ioapic::new();
        let mut b = bus();
        program(&mut io, RTC_GSI as u32, 0x28, &mut b);
        let (dest, vector) = io.rtc_target();
        assert_eq!((dest.id, dest.logical, vector), (0, false, 0x28));
        io.rtc_restore_one(0, true, true);
        io.rtc_restore_one(1, false, true);
        io.rtc_restore_one(2, true, false);
        io.rtc_restore_one(u32::MAX, true, true);
        assert_eq!(io.rtc_pending_eoi(), 1);
        io.rtc_restore_one(0, true, true);
        assert_eq!(io.rtc_pending_eoi(), 1);
        assert_eq!(io.set_irq(RTC_GSI, SRC, true, true, &mut b), 0);
        io.rtc_restore_one(0, true, false);
        assert_eq!(io.rtc_pending_eoi(), 0);
        assert_eq!(io.set_irq(RTC_GSI, SRC, false, true, &mut b), 1);
        assert_eq!(io.set_irq(RTC_GSI, SRC, true, true, &mut b), 1);
    }

    #[test]
    fn handled_vectors_scan() {
        let mut io = Ioapic::new();
        let mut b = bus();
        program(&mut io, 1, EDGE_0X31_TO_0, &mut b);
        program(&mut io, 2, LEVEL_0X41_TO_0, &mut b);
        program(&mut io, 3, 0x0100_0000_0000_8051, &mut b);
        program(&mut io, 4, 0x61, &mut b);
        let is0 = |d: &Destination| d.id == 0;
        let hv = io.handled_vectors(0, is0, |_| false, |_| false);
        // Level pins to this vCPU; the (masked) RTC pin's vector 0 too.
        assert_eq!(hv, [1, 1 << (0x41 - 0x40), 0, 0]);
        // Pending in the APIC although not a destination.
        let hv = io.handled_vectors(0, is0, |v| v == 0x51, |_| false);
        assert_eq!(hv[1], (1 << 1) | (1 << 0x11));
        // Edge pins only with an ack notifier.
        let hv = io.handled_vectors(0, is0, |_| false, |pin| pin == 4);
        assert_eq!(hv[1], (1 << 1) | (1 << 0x21));
    }

    #[test]
    fn state_round_trip() {
        let mut io = Ioapic::new();
        let mut b = bus();
        program(&mut io, 0, 0x0300_0000_0001_0030, &mut b);
        program(&mut io, 10, LEVEL_0X41_TO_0, &mut b);
        program(&mut io, 11, EDGE_0X31_TO_0, &mut b);
        io.set_irq(0, SRC, true, false, &mut b);
        io.set_irq(10, SRC, true, false, &mut b);
        io.set_irq(11, SRC, true, false, &mut b);
        write(&mut io, index::ID, 0x0500_0000, &mut b);
        sel(&mut io, 0x25);
        let s = io.get_state();
        // The masked edge pin 0 and the level pin 10 are pending; the
        // delivered edge on 11 is not.
        assert_eq!(&s[16..20], &((1u32 << 0) | (1 << 10)).to_le_bytes());
        assert_eq!(&s[8..16], &[0x25, 0, 0, 0, 5, 0, 0, 0]);
        assert_eq!(
            &s[24 + 80..24 + 88],
            &(LEVEL_0X41_TO_0 | 0x4000).to_le_bytes()
        );

        // Restoring re-raises the pending pins: pin 10 has remote IRR in the
        // state, so it is not sent; pin 0 is masked.
        let mut io2 = Ioapic::new();
        let mut b2 = bus();
        io2.set_state(&s, &mut b2);
        assert!(b2.log.is_empty());
        assert_eq!(io2.get_state(), s);
        // Without remote IRR the level pin is sent at once.
        let mut s3 = s;
        s3[24 + 81] &= !0x40;
        io2.set_state(&s3, &mut b2);
        assert_eq!(b2.log.len(), 1);
        assert_eq!(io2.get_state(), s);
        // An edge pin pending and unmasked in the state is sent too.
        let mut s4 = s;
        s4[24 + 2] &= !0x01;
        io2.set_state(&s4, &mut b2);
        assert_eq!(b2.log.last().map(|d| d.pin), Some(0));
        assert_eq!(&io2.get_state()[16..20], &(1u32 << 10).to_le_bytes());
    }

    #[test]
    fn state_is_taken_raw() {
        let mut io = Ioapic::new();
        let mut b = bus();
        let mut s = [0u8; KVM_IOAPIC_STATE_SIZE];
        s[0..8].copy_from_slice(&0xfee0_0000u64.to_le_bytes());
        s[8..12].copy_from_slice(&0xdead_beefu32.to_le_bytes());
        s[12..16].copy_from_slice(&0x1234_5678u32.to_le_bytes());
        // IRR bits above the pins are dropped.
        s[16..20].copy_from_slice(&0xff00_0000u32.to_le_bytes());
        s[20..24].copy_from_slice(&0xcafe_f00du32.to_le_bytes());
        for pin in 0..IOAPIC_NUM_PINS {
            s[24 + 8 * pin..32 + 8 * pin].copy_from_slice(&u64::MAX.to_le_bytes());
        }
        io.set_state(&s, &mut b);
        assert!(b.log.is_empty());
        let mut want = s;
        want[16..20].copy_from_slice(&[0; 4]);
        assert_eq!(io.get_state(), want);
        // The window moved with the state: the old base is not claimed.
        let mut r = [0u8; 4];
        assert_eq!(io.mmio_read(BASE, &mut r), Err(NotClaimed));
        io.mmio_read(0xfee0_0000, &mut r).unwrap();
        assert_eq!(u32::from_le_bytes(r), 0xdead_beef);
        // IOREGSEL beyond 8 bits selects nothing: all ones; the ID reads 4 bits.
        io.mmio_read(0xfee0_0010, &mut r).unwrap();
        assert_eq!(u32::from_le_bytes(r), 0xffff_ffff);
        io.mmio_write(0xfee0_0000, &[0], &mut b).unwrap();
        io.mmio_read(0xfee0_0010, &mut r).unwrap();
        assert_eq!(u32::from_le_bytes(r), 0x0800_0000);
        // A base near the top of memory wraps like C's range check.
        s[0..8].copy_from_slice(&(u64::MAX - 0x10).to_le_bytes());
        io.set_state(&s, &mut b);
        assert!(!io.in_range(u64::MAX));
    }

    fn xapic(id: u32) -> Lapic {
        let mut a = Lapic::new(id, LapicConfig::DEFAULT);
        a.reset(id == 0, &VmFlags::DEFAULT);
        a.mmio_write(lapic::reg::SPIV, &0x1ffu32.to_le_bytes(), 0)
            .unwrap();
        a
    }

    /// Routes to real local APIC models (`kvm_irq_delivery_to_apic()`
    /// without lowest-priority arbitration).
    struct Apics(Vec<Lapic>);

    impl ApicBus for Apics {
        fn deliver(&mut self, d: &Delivery, mut dest_map: Option<&mut DestMap>) -> i32 {
            let flags = VmFlags::DEFAULT;
            let mut r = -1;
            for a in self.0.iter_mut() {
                if !a.hw_enabled() || !a.matches_dest(&d.dest, Source::Device, &flags) {
                    continue;
                }
                let got = a.accept(&d.irq);
                if got == Delivered::Irr {
                    if let Some(m) = dest_map.as_deref_mut() {
                        m.record(a.vcpu_id(), d.irq.vector);
                    }
                }
                r = r.max(0) + i32::from(got.accepted());
            }
            r
        }
    }

    /// A level interrupt end to end: IOAPIC -> LAPIC IRR -> ISR -> EOI
    /// broadcast -> re-delivery while the line is high.
    #[test]
    fn level_interrupt_through_lapic_models() {
        let mut io = Ioapic::new();
        let mut apics = Apics(std::vec![xapic(0), xapic(1)]);
        // Physical destination 1.
        program(&mut io, 11, 0x0100_0000_0000_8061, &mut bus());
        assert_eq!(io.set_irq(11, SRC, true, false, &mut apics), 1);
        let a1 = &mut apics.0[1];
        assert_eq!(a1.highest_pending(), Some(0x61));
        a1.ack(0x61);
        let Some(lapic::Action::Eoi {
            vector,
            level_triggered,
        }) = a1.eoi()
        else {
            panic!("no EOI action");
        };
        assert!(level_triggered);
        io.eoi(
            1,
            vector,
            level_triggered,
            a1.suppress_eoi_broadcast(),
            &mut apics,
        );
        // Still asserted: delivered again.
        assert_eq!(apics.0[1].highest_pending(), Some(0x61));
        assert_eq!(apics.0[0].highest_pending(), None);
        // A software-disabled target accepts nothing: no remote IRR.
        let mut io = Ioapic::new();
        let mut off = Apics(std::vec![Lapic::new(0, LapicConfig::DEFAULT)]);
        off.0[0].reset(true, &VmFlags::DEFAULT);
        program(&mut io, 11, 0x8061, &mut bus());
        assert_eq!(io.set_irq(11, SRC, true, false, &mut off), 0);
        assert!(!entry(&io, 11).remote_irr());
        // No APIC at the destination: -1, and remote IRR is set (C).
        program(&mut io, 12, 0x0700_0000_0000_8062, &mut bus());
        assert_eq!(io.set_irq(12, SRC, true, false, &mut off), -1);
        assert!(entry(&io, 12).remote_irr());
    }

    /// A small deterministic generator for the fuzz tests.
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
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut io = Ioapic::new();
        let mut b = bus();
        for i in 0..200_000u32 {
            let r = rng.next();
            b.ret = (r >> 60) as i32 % 3 - 1;
            let gpa = BASE.wrapping_add((r >> 8) & 0x1ff).wrapping_sub(0x40);
            let len = [0, 1, 2, 3, 4, 5, 8, 9][(r & 7) as usize];
            let data = rng.next().to_le_bytes();
            let mut buf = [0u8; 9];
            match (r >> 3) & 7 {
                0 | 1 => {
                    let _ = io.mmio_write(gpa, &data[..len.min(8)], &mut b);
                }
                2 => {
                    let _ = io.mmio_read(gpa, &mut buf[..len]);
                }
                3 => {
                    let src = IrqSource::new((r >> 20) as u32 & 63).unwrap();
                    io.set_irq(
                        (r >> 26) as usize % 30,
                        src,
                        r & (1 << 40) != 0,
                        r & (1 << 41) != 0,
                        &mut b,
                    );
                }
                4 => {
                    io.eoi(
                        (r >> 20) as u32 % 8,
                        (r >> 32) as u8,
                        r & (1 << 40) != 0,
                        r & (1 << 41) != 0,
                        &mut b,
                    );
                }
                5 if i % 64 == 0 => {
                    let mut s = [0u8; KVM_IOAPIC_STATE_SIZE];
                    for c in s.chunks_mut(8) {
                        c.copy_from_slice(&rng.next().to_le_bytes());
                    }
                    io.set_state(&s, &mut b);
                }
                6 => {
                    io.rtc_restore_one((r >> 20) as u32 % 5000, r & 1 != 0, r & 2 != 0);
                    io.eoi_inject_work(&mut b);
                }
                _ => {
                    let s = io.get_state();
                    let _ = io.handled_vectors(
                        (r >> 20) as u32,
                        |_| r & 1 != 0,
                        |_| r & 2 != 0,
                        |_| r & 4 != 0,
                    );
                    assert_eq!(s.len(), KVM_IOAPIC_STATE_SIZE);
                }
            }
            if b.log.len() > 1000 {
                b.log.clear();
            }
        }
    }
}
