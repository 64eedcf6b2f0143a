// SPDX-License-Identifier: GPL-2.0

//! The in-kernel irqchip as a whole (`arch/x86/kvm/irq_comm.c`, the
//! `kvm_set_irq()` of `virt/kvm/irqchip.c` and the irqchip ioctls of
//! `x86.c`): GSI routing to the PIC and IOAPIC pins, `KVM_IRQ_LINE(_STATUS)`
//! and `KVM_GET/SET_IRQCHIP`.
//!
//! Core-only (host-tested). [`Irqchip`] joins the two chips for a module
//! that keeps them under one lock; the pieces ([`default_routes`],
//! [`Route`], [`ChipId`], the uapi decoders) serve one that locks each chip
//! apart. Either way the module first checks that `KVM_CREATE_IRQCHIP` was
//! done: without it these ioctls fail with `ENXIO`.

use super::i8259::{Pic, PicChip, KVM_PIC_STATE_SIZE, PIC_NUM_PINS};
use super::ioapic::{ApicBus, Ioapic, IOAPIC_NUM_PINS, KVM_IOAPIC_STATE_SIZE};
use super::irq::IrqSource;
use crate::uapi::{errno, ior, iow, iowr, Errno};

/// `sizeof(struct kvm_irq_level)`.
pub(crate) const KVM_IRQ_LEVEL_SIZE: usize = 8;
/// `sizeof(struct kvm_irqchip)`: chip_id, pad, a 512-byte union.
pub(crate) const KVM_IRQCHIP_SIZE: usize = 520;
/// Offset of the union in `struct kvm_irqchip`.
const IRQCHIP_DATA: usize = 8;

/// `KVM_IRQ_LINE`.
pub(crate) const KVM_IRQ_LINE: u32 = iow(0x61, KVM_IRQ_LEVEL_SIZE);
/// `KVM_GET_IRQCHIP`.
pub(crate) const KVM_GET_IRQCHIP: u32 = iowr(0x62, KVM_IRQCHIP_SIZE);
/// `KVM_SET_IRQCHIP` (declared `_IOR` in the uapi header).
pub(crate) const KVM_SET_IRQCHIP: u32 = ior(0x63, KVM_IRQCHIP_SIZE);
/// `KVM_IRQ_LINE_STATUS`.
pub(crate) const KVM_IRQ_LINE_STATUS: u32 = iowr(0x67, KVM_IRQ_LEVEL_SIZE);
/// `KVM_CAP_IRQ_INJECT_STATUS`: `KVM_IRQ_LINE_STATUS` exists.
pub(crate) const KVM_CAP_IRQ_INJECT_STATUS: i64 = 26;

/// `KVM_IRQCHIP_*`: a chip of the in-kernel irqchip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChipId {
    /// `KVM_IRQCHIP_PIC_MASTER`.
    PicMaster = 0,
    /// `KVM_IRQCHIP_PIC_SLAVE`.
    PicSlave = 1,
    /// `KVM_IRQCHIP_IOAPIC`.
    Ioapic = 2,
}

impl ChipId {
    /// The chip `id` names; `EINVAL` for any other value, as
    /// `kvm_vm_ioctl_get_irqchip()` and `kvm_set_routing_entry()` return.
    pub(crate) const fn from_u32(id: u32) -> Result<Self, Errno> {
        match id {
            0 => Ok(Self::PicMaster),
            1 => Ok(Self::PicSlave),
            2 => Ok(Self::Ioapic),
            _ => Err(errno::EINVAL),
        }
    }

    const fn pins(self) -> u32 {
        match self {
            Self::PicMaster | Self::PicSlave => PIC_NUM_PINS as u32 / 2,
            Self::Ioapic => IOAPIC_NUM_PINS as u32,
        }
    }
}

/// A GSI route to a chip pin (`struct kvm_irq_routing_irqchip`).
///
/// # Invariants
///
/// `pin` is below the chip's pin count (8 per PIC, 24 for the IOAPIC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Route {
    chip: ChipId,
    pin: u8,
}

impl Route {
    /// The irqchip part of `kvm_set_routing_entry()`: `EINVAL` for an
    /// unknown chip or a pin beyond it.
    pub(crate) const fn new(irqchip: u32, pin: u32) -> Result<Self, Errno> {
        let chip = match ChipId::from_u32(irqchip) {
            Ok(c) => c,
            Err(e) => return Err(e),
        };
        if pin >= chip.pins() {
            return Err(errno::EINVAL);
        }
        // INVARIANT: `pin` was just checked against the chip.
        Ok(Self {
            chip,
            pin: pin as u8,
        })
    }

    /// The chip.
    #[cfg(test)]
    pub(crate) const fn chip(self) -> ChipId {
        self.chip
    }

    /// The pin within the chip.
    #[cfg(test)]
    pub(crate) const fn pin(self) -> u8 {
        self.pin
    }

    /// The PIC IRQ (0-15) or IOAPIC pin the route drives.
    const fn target(self) -> usize {
        match self.chip {
            ChipId::PicSlave => self.pin as usize + 8,
            ChipId::PicMaster | ChipId::Ioapic => self.pin as usize,
        }
    }
}

/// The routes of one GSI, in the order `kvm_set_irq()` drives them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Routes {
    routes: [Option<Route>; 2],
    next: usize,
}

impl Iterator for Routes {
    type Item = Route;

    fn next(&mut self) -> Option<Route> {
        let r = self.routes.get(self.next).copied().flatten();
        self.next += 1;
        r
    }
}

/// The routing `KVM_CREATE_IRQCHIP` sets up (`default_routing[]`,
/// `kvm_setup_default_irq_routing()`): GSI 0-15 to IOAPIC pin `gsi` and to
/// PIC IRQ `gsi`, GSI 16-23 to IOAPIC pin `gsi` only, none above. The
/// IOAPIC comes first, as `kvm_set_irq()` walks the GSI's list backwards.
///
/// There is no ISA override here: GSI 0 is IOAPIC pin 0. The "IRQ0 on pin
/// 2" of PC firmware (the MADT's interrupt source override) is a routing
/// user space installs with `KVM_SET_GSI_ROUTING`, as QEMU does.
pub(crate) fn default_routes(gsi: u32) -> Routes {
    let ioapic = Route::new(ChipId::Ioapic as u32, gsi).ok();
    let pic = match gsi {
        0..=7 => Route::new(ChipId::PicMaster as u32, gsi).ok(),
        8..=15 => Route::new(ChipId::PicSlave as u32, gsi - 8).ok(),
        _ => None,
    };
    Routes {
        routes: [ioapic, pic],
        next: 0,
    }
}

/// `kvm_set_irq()`'s sum of per-chip results: -1 if every chip returned
/// -1 (or there was no route), else the sum of the others.
pub(crate) const fn merge_status(acc: i32, r: i32) -> i32 {
    if r < 0 {
        acc
    } else if acc < 0 {
        r
    } else {
        acc.saturating_add(r)
    }
}

/// `struct kvm_irq_level` as read from user space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IrqLevel {
    /// The GSI (`irq`, in a union with `status`).
    pub(crate) irq: u32,
    /// Non-zero asserts the line.
    pub(crate) level: u32,
}

impl IrqLevel {
    /// Decodes the user-space bytes.
    pub(crate) fn from_bytes(b: &[u8; KVM_IRQ_LEVEL_SIZE]) -> Self {
        let [a, b0, c, d, e, f, g, h] = *b;
        Self {
            irq: u32::from_le_bytes([a, b0, c, d]),
            level: u32::from_le_bytes([e, f, g, h]),
        }
    }

    /// What `KVM_IRQ_LINE_STATUS` copies back: `status` over `irq`, `level`
    /// as given.
    pub(crate) fn status_bytes(&self, status: i32) -> [u8; KVM_IRQ_LEVEL_SIZE] {
        let mut b = [0u8; KVM_IRQ_LEVEL_SIZE];
        b[..4].copy_from_slice(&status.to_le_bytes());
        b[4..].copy_from_slice(&self.level.to_le_bytes());
        b
    }
}

/// The chip a `struct kvm_irqchip` names (`EINVAL` if none).
pub(crate) fn irqchip_chip_id(b: &[u8; KVM_IRQCHIP_SIZE]) -> Result<ChipId, Errno> {
    ChipId::from_u32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The PIC state in a `struct kvm_irqchip`.
fn pic_bytes(b: &[u8; KVM_IRQCHIP_SIZE]) -> [u8; KVM_PIC_STATE_SIZE] {
    let mut s = [0u8; KVM_PIC_STATE_SIZE];
    s.copy_from_slice(&b[IRQCHIP_DATA..IRQCHIP_DATA + KVM_PIC_STATE_SIZE]);
    s
}

/// The IOAPIC state in a `struct kvm_irqchip`.
fn ioapic_bytes(b: &[u8; KVM_IRQCHIP_SIZE]) -> [u8; KVM_IOAPIC_STATE_SIZE] {
    let mut s = [0u8; KVM_IOAPIC_STATE_SIZE];
    s.copy_from_slice(&b[IRQCHIP_DATA..IRQCHIP_DATA + KVM_IOAPIC_STATE_SIZE]);
    s
}

/// The PIC pair and the IOAPIC of a VM with the default routing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Irqchip {
    /// The 8259A pair.
    pub(crate) pic: Pic,
    /// The IOAPIC.
    pub(crate) ioapic: Ioapic,
}

impl Irqchip {
    /// What `KVM_CREATE_IRQCHIP` creates.
    pub(crate) const fn new() -> Self {
        Self {
            pic: Pic::new(),
            ioapic: Ioapic::new(),
        }
    }

    /// Drives one route (`kvm_set_pic_irq()`/`kvm_set_ioapic_irq()`).
    pub(crate) fn set_route(
        &mut self,
        route: Route,
        source: IrqSource,
        level: bool,
        line_status: bool,
        bus: &mut impl ApicBus,
    ) -> i32 {
        match route.chip {
            ChipId::PicMaster | ChipId::PicSlave => self.pic.set_irq(route.target(), source, level),
            ChipId::Ioapic => self
                .ioapic
                .set_irq(route.target(), source, level, line_status, bus),
        }
    }

    /// `kvm_set_irq()` over the default routing: `source` drives `gsi` to
    /// `level` on every chip it reaches. The status of `KVM_IRQ_LINE_STATUS`
    /// (see [`merge_status`]); -1 for a GSI without routes.
    pub(crate) fn set_irq(
        &mut self,
        gsi: u32,
        source: IrqSource,
        level: bool,
        line_status: bool,
        bus: &mut impl ApicBus,
    ) -> i32 {
        default_routes(gsi).fold(-1, |acc, r| {
            merge_status(acc, self.set_route(r, source, level, line_status, bus))
        })
    }

    /// `KVM_IRQ_LINE` and `KVM_IRQ_LINE_STATUS` (`line_status`)
    /// (`kvm_vm_ioctl_irq_line()`): never fails once the irqchip exists.
    /// Returns what `KVM_IRQ_LINE_STATUS` copies back.
    pub(crate) fn irq_line(
        &mut self,
        b: &[u8; KVM_IRQ_LEVEL_SIZE],
        line_status: bool,
        bus: &mut impl ApicBus,
    ) -> [u8; KVM_IRQ_LEVEL_SIZE] {
        let e = IrqLevel::from_bytes(b);
        let status = self.set_irq(e.irq, IrqSource::USERSPACE, e.level != 0, line_status, bus);
        e.status_bytes(status)
    }

    /// `KVM_GET_IRQCHIP` (`kvm_vm_ioctl_get_irqchip()`): fills the state of
    /// the chip `b` names into `b`, the rest of it kept as user space gave
    /// it. `EINVAL` for a bad chip id.
    pub(crate) fn get_irqchip(&self, b: &mut [u8; KVM_IRQCHIP_SIZE]) -> Result<(), Errno> {
        let (state, len): ([u8; KVM_IOAPIC_STATE_SIZE], usize) = match irqchip_chip_id(b)? {
            ChipId::PicMaster => (pad(self.pic.get_state(PicChip::Master)), KVM_PIC_STATE_SIZE),
            ChipId::PicSlave => (pad(self.pic.get_state(PicChip::Slave)), KVM_PIC_STATE_SIZE),
            ChipId::Ioapic => (self.ioapic.get_state(), KVM_IOAPIC_STATE_SIZE),
        };
        b[IRQCHIP_DATA..IRQCHIP_DATA + len].copy_from_slice(&state[..len]);
        Ok(())
    }

    /// `KVM_SET_IRQCHIP` (`kvm_vm_ioctl_set_irqchip()`): restores the chip
    /// `b` names, then re-evaluates the PIC's output, which the C KVM does
    /// even for a bad chip id before failing with `EINVAL`. After an IOAPIC
    /// state the module does what [`Ioapic::set_state`] asks (rescan, RTC
    /// restore per vCPU).
    pub(crate) fn set_irqchip(
        &mut self,
        b: &[u8; KVM_IRQCHIP_SIZE],
        bus: &mut impl ApicBus,
    ) -> Result<(), Errno> {
        let r = irqchip_chip_id(b).map(|chip| match chip {
            ChipId::PicMaster => self.pic.set_state(PicChip::Master, &pic_bytes(b)),
            ChipId::PicSlave => self.pic.set_state(PicChip::Slave, &pic_bytes(b)),
            ChipId::Ioapic => self.ioapic.set_state(&ioapic_bytes(b), bus),
        });
        self.pic.update();
        r
    }
}

/// A PIC state in a buffer of IOAPIC state size.
fn pad(s: [u8; KVM_PIC_STATE_SIZE]) -> [u8; KVM_IOAPIC_STATE_SIZE] {
    let mut b = [0u8; KVM_IOAPIC_STATE_SIZE];
    b[..KVM_PIC_STATE_SIZE].copy_from_slice(&s);
    b
}

#[cfg(test)]
mod tests {
    use super::super::ioapic::{Delivery, DestMap};
    use super::*;
    use std::vec::Vec;

    fn routes(gsi: u32) -> Vec<(ChipId, u8)> {
        default_routes(gsi).map(|r| (r.chip(), r.pin())).collect()
    }

    /// A bus where every message is accepted by one APIC.
    struct Bus(Vec<Delivery>);

    impl ApicBus for Bus {
        fn deliver(&mut self, d: &Delivery, _: Option<&mut DestMap>) -> i32 {
            self.0.push(*d);
            1
        }
    }

    fn level(irq: u32, level: u32) -> [u8; KVM_IRQ_LEVEL_SIZE] {
        let mut b = [0u8; KVM_IRQ_LEVEL_SIZE];
        b[..4].copy_from_slice(&irq.to_le_bytes());
        b[4..].copy_from_slice(&level.to_le_bytes());
        b
    }

    fn status(b: [u8; KVM_IRQ_LEVEL_SIZE]) -> i32 {
        i32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    fn irqchip(id: u32) -> [u8; KVM_IRQCHIP_SIZE] {
        let mut b = [0xa5u8; KVM_IRQCHIP_SIZE];
        b[..4].copy_from_slice(&id.to_le_bytes());
        b
    }

    #[test]
    fn ioctl_numbers() {
        assert_eq!(KVM_IRQ_LINE, 0x4008_ae61);
        assert_eq!(KVM_GET_IRQCHIP, 0xc208_ae62);
        assert_eq!(KVM_SET_IRQCHIP, 0x8208_ae63);
        assert_eq!(KVM_IRQ_LINE_STATUS, 0xc008_ae67);
    }

    #[test]
    fn default_routing_table() {
        use ChipId::*;
        // GSI 0 is IOAPIC pin 0: the C KVM's table has no ISA override.
        assert_eq!(routes(0), [(Ioapic, 0), (PicMaster, 0)]);
        assert_eq!(routes(2), [(Ioapic, 2), (PicMaster, 2)]);
        assert_eq!(routes(7), [(Ioapic, 7), (PicMaster, 7)]);
        assert_eq!(routes(8), [(Ioapic, 8), (PicSlave, 0)]);
        assert_eq!(routes(15), [(Ioapic, 15), (PicSlave, 7)]);
        for gsi in 16..24 {
            assert_eq!(routes(gsi), [(Ioapic, gsi as u8)]);
        }
        for gsi in [24, 25, 1000, u32::MAX] {
            assert!(routes(gsi).is_empty());
        }
    }

    #[test]
    fn routing_entry_checks() {
        assert_eq!(
            Route::new(0, 7).map(|r| (r.chip(), r.pin())),
            Ok((ChipId::PicMaster, 7))
        );
        assert_eq!(Route::new(1, 0).map(|r| r.target()), Ok(8));
        assert_eq!(Route::new(2, 23).map(|r| r.target()), Ok(23));
        for (chip, pin) in [
            (0, 8),
            (1, 8),
            (2, 24),
            (3, 0),
            (u32::MAX, 0),
            (0, u32::MAX),
        ] {
            assert_eq!(Route::new(chip, pin), Err(errno::EINVAL), "{chip} {pin}");
        }
        assert_eq!(ChipId::from_u32(3), Err(errno::EINVAL));
    }

    #[test]
    fn status_merging() {
        assert_eq!(merge_status(-1, -1), -1);
        assert_eq!(merge_status(-1, 0), 0);
        assert_eq!(merge_status(0, -1), 0);
        assert_eq!(merge_status(1, 1), 2);
        assert_eq!(merge_status(i32::MAX, 1), i32::MAX);
    }

    #[test]
    fn irq_line_reaches_both_chips() {
        let mut c = Irqchip::new();
        let mut bus = Bus(Vec::new());
        // A new PIC is unmasked, a new IOAPIC masked: the PIC's 1 counts.
        assert_eq!(status(c.irq_line(&level(4, 1), true, &mut bus)), 1);
        assert!(c.pic.output());
        assert!(bus.0.is_empty());
        // Both chips take it: the statuses add up.
        c.ioapic
            .mmio_write(0xfec0_0000, &[0x10 + 2 * 5], &mut bus)
            .unwrap();
        c.ioapic
            .mmio_write(0xfec0_0010, &0x35u32.to_le_bytes(), &mut bus)
            .unwrap();
        assert_eq!(status(c.irq_line(&level(5, 7), true, &mut bus)), 2);
        assert_eq!(bus.0.len(), 1);
        // Still high: the IOAPIC coalesces (0); the PIC's edge logic
        // answers 1 for a line held high (pic_set_irq1()). De-assert: 1 each.
        assert_eq!(status(c.irq_line(&level(5, 1), true, &mut bus)), 1);
        assert_eq!(bus.0.len(), 1);
        let back = c.irq_line(&level(5, 0), true, &mut bus);
        assert_eq!(back, {
            let mut b = level(2, 0);
            b[..4].copy_from_slice(&2i32.to_le_bytes());
            b
        });
        // GSI 16+ is the IOAPIC's alone (masked here); none above 23.
        assert_eq!(status(c.irq_line(&level(16, 1), true, &mut bus)), -1);
        assert_eq!(status(c.irq_line(&level(24, 1), true, &mut bus)), -1);
        assert_eq!(c.ioapic.irr() & (1 << 16), 1 << 16);
        // A PIC IRQ masked and an IOAPIC pin masked: -1.
        c.pic.pio_write(0x21, &[0xff], true).unwrap();
        assert_eq!(status(c.irq_line(&level(3, 1), false, &mut bus)), -1);
        // Another source on GSI 5: masked in the PIC now (-1), an edge
        // for the IOAPIC (1).
        let pit = IrqSource::new(2).unwrap();
        assert_eq!(c.set_irq(5, pit, true, false, &mut bus), 1);
        assert_eq!(bus.0.len(), 2);
    }

    #[test]
    fn irqchip_get_set() {
        let mut c = Irqchip::new();
        let mut bus = Bus(Vec::new());
        // Bad chip ids: EINVAL, buffer untouched.
        let mut b = irqchip(3);
        assert_eq!(c.get_irqchip(&mut b), Err(errno::EINVAL));
        assert_eq!(b, irqchip(3));
        // The PIC state lands at offset 8; the rest of the union is kept.
        let mut b = irqchip(1);
        c.get_irqchip(&mut b).unwrap();
        assert_eq!(&b[8..24], &c.pic.get_state(PicChip::Slave));
        assert!(b[4..8].iter().chain(&b[24..]).all(|x| *x == 0xa5));
        // The IOAPIC state: 216 bytes at offset 8.
        let mut b = irqchip(2);
        c.get_irqchip(&mut b).unwrap();
        assert_eq!(&b[8..16], &0xfec0_0000u64.to_le_bytes());
        assert_eq!(&b[32..40], &0x1_0000u64.to_le_bytes());
        assert_eq!(b[8 + KVM_IOAPIC_STATE_SIZE], 0xa5);
        // Round trips through a second irqchip (the sources' line states
        // are not part of the ABI state).
        c.irq_line(&level(1, 1), false, &mut bus);
        let mut d = Irqchip::new();
        for id in 0..3 {
            let mut b = irqchip(id);
            c.get_irqchip(&mut b).unwrap();
            d.set_irqchip(&b, &mut bus).unwrap();
            let mut b2 = irqchip(id);
            d.get_irqchip(&mut b2).unwrap();
            assert_eq!(b2, b);
        }
        assert_eq!((d.pic.output(), d.ioapic.irr()), (true, 1 << 1));
        // A bad id still re-evaluates the PIC (as C), then fails.
        let mut s = irqchip(0);
        s[8..24].copy_from_slice(&[0, 1, 0, 0, 0, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xf8]);
        let mut e = Irqchip::new();
        e.pic.set_state(PicChip::Master, &{
            let mut x = [0u8; 16];
            x.copy_from_slice(&s[8..24]);
            x
        });
        assert!(!e.pic.output());
        assert_eq!(e.set_irqchip(&irqchip(7), &mut bus), Err(errno::EINVAL));
        assert!(e.pic.output());
        // Setting the master raises INTR through the update.
        let mut f = Irqchip::new();
        f.set_irqchip(&s, &mut bus).unwrap();
        assert!(f.pic.output());
    }

    #[test]
    fn fuzz_never_panics() {
        let mut x: u64 = 0x0123_4567_89ab_cdef;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut c = Irqchip::new();
        let mut bus = Bus(Vec::new());
        for _ in 0..2000 {
            let mut b = [0u8; KVM_IRQCHIP_SIZE];
            for chunk in b.chunks_mut(8) {
                chunk.copy_from_slice(&next().to_le_bytes());
            }
            b[..4].copy_from_slice(&((next() % 4) as u32).to_le_bytes());
            let _ = c.set_irqchip(&b, &mut bus);
            let _ = c.get_irqchip(&mut b);
            let l = next().to_le_bytes();
            let mut lb = [0u8; 8];
            lb.copy_from_slice(&l);
            lb[..4].copy_from_slice(&((next() % 30) as u32).to_le_bytes());
            c.irq_line(&lb, next() & 1 != 0, &mut bus);
            bus.0.clear();
        }
    }
}
