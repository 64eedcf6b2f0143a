// SPDX-License-Identifier: GPL-2.0

//! The in-kernel local APIC of a vCPU (`arch/x86/kvm/lapic.c`): the register
//! model and the interrupt-priority logic.
//!
//! Core-only (host-tested). The state is the 1 KiB register page that
//! `KVM_GET_LAPIC`/`KVM_SET_LAPIC` exchange (`struct kvm_lapic_state`), which is
//! the single source of truth for register values, plus the IA32_APIC_BASE MSR
//! and the few values the C KVM also keeps beside the page (timer expiry,
//! cached timer mode and LINT0 NMI mode, latched INIT/SIPI).
//!
//! The module around this file owns what touches the kernel: it routes the
//! MMIO page and the x2APIC MSRs here, carries out the [`Action`]s returned
//! (an IPI to other vCPUs, an EOI for the IOAPIC, the host timer), kicks vCPUs,
//! and passes the host time (`now_ns`, the clock of its hrtimer) to the calls
//! whose result depends on it (the timer registers).
//!
//! Where the C KVM departs from the SDM this file follows the C KVM, whose
//! behaviour is the ABI the selftests check: vectors 0-15 are accepted like any
//! other and never set ESR (see [`Lapic::accept`]), EOI and reserved bits of
//! most registers are not checked in x2APIC mode, and `KVM_SET_LAPIC` stores
//! the page without masking.

use crate::uapi::{errno, Errno};

/// Register offsets in the xAPIC page (`apicdef.h`; SDM 11.4.1, Table 11-1).
/// In x2APIC mode register `r` is MSR `0x800 + r / 16` (SDM 11.12.1.2).
pub(crate) mod reg {
    /// Local APIC ID.
    pub(crate) const ID: u32 = 0x20;
    /// Local APIC version (read-only).
    pub(crate) const LVR: u32 = 0x30;
    /// Task priority (TPR).
    pub(crate) const TASKPRI: u32 = 0x80;
    /// Arbitration priority (reads as 0 in KVM; not in x2APIC mode).
    pub(crate) const ARBPRI: u32 = 0x90;
    /// Processor priority (PPR, read-only).
    pub(crate) const PROCPRI: u32 = 0xa0;
    /// End of interrupt (write-only).
    pub(crate) const EOI: u32 = 0xb0;
    /// Remote read (not implemented by KVM: neither readable nor writable).
    #[cfg(test)]
    pub(crate) const RRR: u32 = 0xc0;
    /// Logical destination (LDR).
    pub(crate) const LDR: u32 = 0xd0;
    /// Destination format (DFR; not in x2APIC mode).
    pub(crate) const DFR: u32 = 0xe0;
    /// Spurious interrupt vector (SPIV).
    pub(crate) const SPIV: u32 = 0xf0;
    /// In-service register, eight 32-bit words 16 bytes apart.
    pub(crate) const ISR: u32 = 0x100;
    /// Trigger mode register, eight words.
    pub(crate) const TMR: u32 = 0x180;
    /// Interrupt request register, eight words.
    pub(crate) const IRR: u32 = 0x200;
    /// Error status.
    pub(crate) const ESR: u32 = 0x280;
    /// LVT corrected machine-check interrupt (only with 7 LVT entries).
    pub(crate) const LVTCMCI: u32 = 0x2f0;
    /// Interrupt command, bits 31:0.
    pub(crate) const ICR: u32 = 0x300;
    /// Interrupt command, bits 63:32 (the destination).
    pub(crate) const ICR2: u32 = 0x310;
    /// LVT timer.
    pub(crate) const LVTT: u32 = 0x320;
    /// LVT thermal sensor.
    pub(crate) const LVTTHMR: u32 = 0x330;
    /// LVT performance counter.
    pub(crate) const LVTPC: u32 = 0x340;
    /// LVT LINT0.
    pub(crate) const LVT0: u32 = 0x350;
    /// LVT LINT1.
    pub(crate) const LVT1: u32 = 0x360;
    /// LVT error.
    pub(crate) const LVTERR: u32 = 0x370;
    /// Timer initial count.
    pub(crate) const TMICT: u32 = 0x380;
    /// Timer current count (read-only).
    pub(crate) const TMCCT: u32 = 0x390;
    /// Timer divide configuration.
    pub(crate) const TDCR: u32 = 0x3e0;
    /// SELF IPI (x2APIC only, write-only).
    pub(crate) const SELF_IPI: u32 = 0x3f0;
}

/// `sizeof(struct kvm_lapic_state)`: the register page `KVM_GET_LAPIC` and
/// `KVM_SET_LAPIC` exchange.
pub(crate) const KVM_APIC_REG_SIZE: usize = 0x400;
/// IA32_APIC_BASE bit 8: this is the bootstrap processor.
pub(crate) const APICBASE_BSP: u64 = 1 << 8;
/// IA32_APIC_BASE bit 10 (EXTD): x2APIC mode.
pub(crate) const APICBASE_X2APIC: u64 = 1 << 10;
/// IA32_APIC_BASE bit 11: the APIC is globally (hardware) enabled.
pub(crate) const APICBASE_ENABLE: u64 = 1 << 11;
/// `APIC_DEFAULT_PHYS_BASE`: the MMIO page after reset (SDM 11.4.4).
pub(crate) const APIC_DEFAULT_PHYS_BASE: u64 = 0xfee0_0000;
/// The x2APIC MSR range (SDM 11.12.1.2).
pub(crate) const X2APIC_MSRS: core::ops::RangeInclusive<u32> = 0x800..=0x8ff;
/// The size of the xAPIC MMIO window.
pub(crate) const LAPIC_MMIO_LENGTH: u64 = 0x1000;
/// `APIC_BUS_CYCLE_NS_DEFAULT`: the C KVM's 1 GHz APIC bus.
pub(crate) const APIC_BUS_CYCLE_NS_DEFAULT: u64 = 1;
/// The C KVM's `min_timer_period_us` default (200 us), in ns.
pub(crate) const MIN_TIMER_PERIOD_NS_DEFAULT: u64 = 200_000;

/// "Version 0x14": the integrated xAPIC of Xeon and Pentium 4 (SDM 11.4.8).
const APIC_VERSION: u32 = 0x14;
const LVR_DIRECTED_EOI: u32 = 1 << 24;
const SPIV_APIC_ENABLED: u32 = 1 << 8;
const SPIV_DIRECTED_EOI: u32 = 1 << 12;
const DFR_FLAT: u32 = 0xffff_ffff;
const DFR_CLUSTER: u32 = 0x0fff_ffff;
const LDR_MASK: u32 = 0xff00_0000;
const VECTOR_MASK: u32 = 0xff;
const MODE_MASK: u32 = 0x700;
const MODE_NMI: u32 = 4 << 8;
const MODE_EXTINT: u32 = 7 << 8;
const LVT_SEND_PENDING: u32 = 1 << 12;
const LVT_POLARITY: u32 = 1 << 13;
const LVT_REMOTE_IRR: u32 = 1 << 14;
const LVT_LEVEL_TRIGGER: u32 = 1 << 15;
const LVT_MASKED: u32 = 1 << 16;
const TIMER_ONESHOT: u32 = 0;
const TIMER_PERIODIC: u32 = 1 << 17;
const TIMER_TSCDEADLINE: u32 = 2 << 17;
const ICR_DEST_LOGICAL: u32 = 1 << 11;
const ICR_BUSY: u32 = 1 << 12;
const ICR_ASSERT: u32 = 1 << 14;
const ICR_LEVEL_TRIGGER: u32 = 1 << 15;
const ICR_DEST_SELF: u32 = 1 << 18;
/// x2APIC ICR bits 31:20, 17:16 and 13 are reserved and #GP (SDM 11.12.9).
const X2APIC_ICR_RESERVED: u64 = 0xfff0_0000 | 0x3_0000 | 0x2000;
const APIC_BROADCAST: u32 = 0xff;
const X2APIC_BROADCAST: u32 = 0xffff_ffff;
/// IA32_APIC_BASE bits 7:0 and 9 are reserved (SDM 11.4.4, Figure 11-5).
const APICBASE_RESERVED_LOW: u64 = 0x2ff;

/// The writable bits of an LVT entry: mask, delivery status, vector. The
/// C KVM keeps the (architecturally read-only) delivery-status bit.
const LVT_MASK: u32 = LVT_MASKED | LVT_SEND_PENDING | VECTOR_MASK;
/// LINT0/LINT1 add delivery mode, polarity, remote IRR and trigger mode.
const LINT_MASK: u32 = LVT_MASK | MODE_MASK | LVT_POLARITY | LVT_REMOTE_IRR | LVT_LEVEL_TRIGGER;

/// Delivery mode of an interrupt message or LVT entry (bits 10:8; SDM 11.6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DeliveryMode {
    /// To the vector in IRR.
    Fixed,
    /// To the lowest-priority processor among the destinations.
    LowestPriority,
    /// System management interrupt.
    Smi,
    /// "Remote read" (reserved); KVM uses it for the PV unhalt hypercall.
    RemoteRead,
    /// Non-maskable interrupt.
    Nmi,
    /// INIT.
    Init,
    /// Start-up IPI (SIPI).
    StartUp,
    /// External interrupt (8259A-compatible, LINT0 only).
    ExtInt,
}

impl DeliveryMode {
    /// Decodes bits 10:8 of an ICR or LVT value.
    pub(crate) const fn from_reg(value: u32) -> Self {
        match (value >> 8) & 7 {
            0 => Self::Fixed,
            1 => Self::LowestPriority,
            2 => Self::Smi,
            3 => Self::RemoteRead,
            4 => Self::Nmi,
            5 => Self::Init,
            6 => Self::StartUp,
            // `& 7` leaves only 7.
            _ => Self::ExtInt,
        }
    }
}

/// Destination shorthand of an IPI (ICR bits 19:18; SDM 11.6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shorthand {
    /// The destination field decides.
    None,
    /// The sending APIC only.
    ToSelf,
    /// Every APIC, the sender included.
    AllIncludingSelf,
    /// Every APIC but the sender.
    AllExcludingSelf,
}

impl Shorthand {
    /// Decodes bits 19:18 of an ICR value.
    pub(crate) const fn from_icr(icr: u32) -> Self {
        match (icr >> 18) & 3 {
            0 => Self::None,
            1 => Self::ToSelf,
            2 => Self::AllIncludingSelf,
            // `& 3` leaves only 3.
            _ => Self::AllExcludingSelf,
        }
    }
}

/// What an interrupt message delivers (`struct kvm_lapic_irq` without the
/// addressing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Irq {
    /// The vector (for SIPI: the start page).
    pub(crate) vector: u8,
    /// How it is delivered.
    pub(crate) mode: DeliveryMode,
    /// Level: assert (true) or de-assert.
    pub(crate) level: bool,
    /// Trigger mode: level (true) or edge.
    pub(crate) level_triggered: bool,
}

/// Where an interrupt message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Destination {
    /// The destination field: an 8-bit xAPIC ID or MDA, or a 32-bit x2APIC one.
    pub(crate) id: u32,
    /// Logical (true) or physical destination mode.
    pub(crate) logical: bool,
    /// The shorthand, which overrides `id` unless [`Shorthand::None`].
    pub(crate) shorthand: Shorthand,
}

/// An IPI decoded from an ICR write (`kvm_apic_send_ipi()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ipi {
    /// What to deliver.
    pub(crate) irq: Irq,
    /// To whom.
    pub(crate) dest: Destination,
}

/// Who sent the interrupt whose destination [`Lapic::matches_dest`] checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// An IPI from this very APIC.
    ThisApic,
    /// An IPI from another vCPU's APIC.
    OtherApic,
    /// Not an IPI: the IOAPIC, an MSI, or user space (`source == NULL` in C).
    Device,
}

/// The host timer the module must run for this APIC, as of the last change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HostTimer {
    /// No timer (cancel any armed one).
    Off,
    /// Fire at this absolute host time (the `now_ns` clock), then call
    /// [`Lapic::timer_fired`].
    At {
        /// Absolute expiry in ns.
        expires_ns: u64,
    },
    /// TSC-deadline mode: fire when the guest TSC reaches `tsc` (at once if it
    /// already has), then call [`Lapic::timer_fired`]. The module converts
    /// guest TSC to host time.
    TscDeadline {
        /// The guest TSC value of IA32_TSC_DEADLINE.
        tsc: u64,
    },
}

/// Side effect of a register write that the module must carry out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Send this IPI (ICR or SELF IPI write). For [`Shorthand::ToSelf`] the
    /// destination is this APIC; otherwise find the targets with
    /// [`Lapic::matches_dest`] and call [`Lapic::accept`] on each.
    Ipi(Ipi),
    /// `vector` was removed from ISR by an EOI: tell the IOAPIC if it handles
    /// the vector (`kvm_ioapic_send_eoi()`), and re-check for pending
    /// interrupts.
    Eoi {
        /// The vector whose ISR bit was cleared.
        vector: u8,
        /// Its TMR bit: level-triggered (true) or edge.
        level_triggered: bool,
    },
    /// The host timer changed: stop the old one and arm this one.
    Timer(HostTimer),
}

/// What [`Lapic::accept`] did with an interrupt (`__apic_accept_irq()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Delivered {
    /// Not accepted (C returns 0).
    Dropped,
    /// Set in IRR: re-evaluate [`Lapic::highest_pending`] and kick the vCPU.
    Irr,
    /// The module injects an NMI and kicks the vCPU.
    Nmi,
    /// The module injects an SMI if it supports SMM (else C returns 0).
    Smi,
    /// INIT latched here ([`Lapic::take_init`]); the module kicks the vCPU.
    Init,
    /// SIPI latched here ([`Lapic::take_sipi`]); the module kicks the vCPU.
    Sipi,
    /// PV unhalt (`APIC_DM_REMRD`): the module marks the vCPU unhalted and kicks it.
    PvUnhalt,
}

impl Delivered {
    /// Whether the C KVM counts the interrupt as delivered (result 1).
    pub(crate) fn accepted(self) -> bool {
        self != Self::Dropped
    }
}

/// Result of [`Lapic::timer_fired`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimerExpiry {
    /// What the LVT timer entry delivered (nothing when masked).
    pub(crate) delivered: Delivered,
    /// The host timer to run next: [`HostTimer::At`] for a periodic timer.
    pub(crate) next: HostTimer,
}

/// The local vector table entries, in the C KVM's `enum lapic_lvt_entry`
/// order (SDM 11.5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lvt {
    /// Timer.
    Timer,
    /// Thermal monitor.
    Thermal,
    /// Performance counter.
    PerfCounter,
    /// LINT0.
    Lint0,
    /// LINT1.
    Lint1,
    /// Error.
    Error,
    /// Corrected machine-check interrupt (only with CMCI in MCG_CAP).
    Cmci,
}

impl Lvt {
    /// All entries; the first [`Lapic::nr_lvt_entries`] exist.
    const ALL: [Lvt; 7] = [
        Lvt::Timer,
        Lvt::Thermal,
        Lvt::PerfCounter,
        Lvt::Lint0,
        Lvt::Lint1,
        Lvt::Error,
        Lvt::Cmci,
    ];

    /// The register offset (`APIC_LVTx()`): CMCI sits apart at 0x2f0.
    pub(crate) const fn offset(self) -> u32 {
        match self {
            Lvt::Cmci => reg::LVTCMCI,
            other => reg::LVTT + 0x10 * other as u32,
        }
    }

    /// The entry at register offset `r`, if any.
    const fn from_offset(r: u32) -> Option<Lvt> {
        match r {
            reg::LVTCMCI => Some(Lvt::Cmci),
            reg::LVTT..=reg::LVTERR if r & 0xf == 0 => {
                Some(Lvt::ALL[((r - reg::LVTT) / 0x10) as usize])
            }
            _ => None,
        }
    }

    /// `apic_lvt_mask[]`: the bits a write keeps (the timer adds its mode
    /// bits at run time).
    const fn write_mask(self) -> u32 {
        match self {
            Lvt::Timer | Lvt::Error => LVT_MASK,
            Lvt::Thermal | Lvt::PerfCounter | Lvt::Cmci => LVT_MASK | MODE_MASK,
            Lvt::Lint0 | Lvt::Lint1 => LINT_MASK,
        }
    }
}

/// The mode IA32_APIC_BASE selects (`enum lapic_mode`; SDM 11.12.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ApicMode {
    /// EN = 0, EXTD = 0.
    Disabled,
    /// EN = 0, EXTD = 1: never allowed.
    Invalid,
    /// EN = 1, EXTD = 0.
    Xapic,
    /// EN = 1, EXTD = 1.
    X2apic,
}

impl ApicMode {
    /// The mode encoded in an IA32_APIC_BASE value (`kvm_apic_mode()`).
    pub(crate) const fn from_base(base: u64) -> Self {
        match (base & APICBASE_ENABLE != 0, base & APICBASE_X2APIC != 0) {
            (false, false) => Self::Disabled,
            (false, true) => Self::Invalid,
            (true, false) => Self::Xapic,
            (true, true) => Self::X2apic,
        }
    }
}

/// Per-VM settings fixed when the vCPU (and its APIC) is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LapicConfig {
    /// ns per APIC bus cycle (`KVM_CAP_X86_APIC_BUS_CYCLES_NS`); see
    /// [`LapicConfig::bus_cycle_ns_valid`]. 0 is treated as 1.
    pub(crate) bus_cycle_ns: u64,
    /// Shortest period of a periodic timer (`min_timer_period_us`), in ns.
    pub(crate) min_timer_period_ns: u64,
    /// The IOAPIC is in the kernel (`KVM_CREATE_IRQCHIP`, not the split
    /// irqchip): then the version register never offers directed EOI.
    pub(crate) ioapic_in_kernel: bool,
}

impl LapicConfig {
    /// The C KVM's defaults with `KVM_CREATE_IRQCHIP`.
    pub(crate) const DEFAULT: Self = Self {
        bus_cycle_ns: APIC_BUS_CYCLE_NS_DEFAULT,
        min_timer_period_ns: MIN_TIMER_PERIOD_NS_DEFAULT,
        ioapic_in_kernel: true,
    };

    /// The check of `KVM_CAP_X86_APIC_BUS_CYCLES_NS`: non-zero, and the longest
    /// timer period (`U32_MAX` counts divided by 128) must fit in 64 bits.
    pub(crate) const fn bus_cycle_ns_valid(ns: u64) -> bool {
        ns != 0 && (u32::MAX as u64 * 128).checked_mul(ns).is_some()
    }
}

/// What the guest CPUID (`KVM_SET_CPUID2`) tells the APIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GuestCaps {
    /// CPUID.1:ECX.x2APIC: EXTD may be set, directed EOI may be offered.
    pub(crate) x2apic: bool,
    /// CPUID.1:ECX.TSC_DEADLINE: the LVT timer accepts TSC-deadline mode.
    pub(crate) tsc_deadline: bool,
    /// MAXPHYADDR: higher IA32_APIC_BASE bits are reserved.
    pub(crate) maxphyaddr: u8,
    /// An Intel-compatible vendor: the PMI masks LVTPC when delivered.
    pub(crate) intel_compatible: bool,
}

impl GuestCaps {
    /// A vCPU without CPUID (MAXPHYADDR defaults to 36).
    pub(crate) const NONE: Self = Self {
        x2apic: false,
        tsc_deadline: false,
        maxphyaddr: 36,
        intel_compatible: false,
    };

    /// `kvm_vcpu_reserved_gpa_bits_raw()`: bits MAXPHYADDR..63.
    const fn reserved_gpa_bits(&self) -> u64 {
        if self.maxphyaddr >= 64 {
            0
        } else {
            !0u64 << self.maxphyaddr
        }
    }
}

/// Per-VM flags that can change at any time, passed to the calls they affect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct VmFlags {
    /// `KVM_X2APIC_API_USE_32BIT_IDS`: the page carries the x2APIC ID as is.
    pub(crate) x2apic_format: bool,
    /// `KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK`.
    pub(crate) broadcast_quirk_disabled: bool,
    /// `KVM_X86_QUIRK_LINT0_REENABLED` not disabled: reset enables ExtINT on
    /// the BSP's LINT0.
    pub(crate) lint0_reenabled_quirk: bool,
}

impl VmFlags {
    /// A new VM's flags.
    pub(crate) const DEFAULT: Self = Self {
        x2apic_format: false,
        broadcast_quirk_disabled: false,
        lint0_reenabled_quirk: true,
    };
}

/// The guest must get #GP(0) (the C KVM's non-zero return to the MSR code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Gp;

/// The APIC does not decode its MMIO page: it is hardware-disabled or in
/// x2APIC mode. With `KVM_X86_QUIRK_LAPIC_MMIO_HOLE` the C KVM then reads
/// all ones and drops writes; without it the access is not claimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MmioInactive;

/// The local APIC of one vCPU.
///
/// # Invariants
///
/// PPR is always the value SDM 11.8.3.1 derives from TPR and ISR: every
/// change of either recomputes it, so reads need no update.
#[derive(Clone, Debug)]
pub(crate) struct Lapic {
    /// The register page, one `u32` per 4 bytes (little-endian on x86).
    regs: [u32; KVM_APIC_REG_SIZE / 4],
    apic_base: u64,
    vcpu_id: u32,
    cfg: LapicConfig,
    caps: GuestCaps,
    /// `timer_mode_mask`: 0 until CPUID is set, then periodic (and deadline).
    timer_mode_mask: u32,
    /// 6, or 7 with CMCI.
    nr_lvt: usize,
    /// `lvt0_in_nmi_mode`, from the last value written to LVT0.
    lvt0_nmi: bool,
    /// The timer mode last taken from LVTT (`lapic_timer.timer_mode`).
    timer_mode: u32,
    divide_count: u32,
    period_ns: u64,
    target_ns: u64,
    tsc_deadline: u64,
    host_timer: HostTimer,
    arb_prio: u32,
    pending_init: bool,
    pending_sipi: Option<u8>,
}

/// The x2APIC LDR, derived from the x2APIC ID: cluster in bits 31:16, one bit
/// of 16 in bits 15:0 (SDM 11.12.10.2).
pub(crate) const fn x2apic_ldr(id: u32) -> u32 {
    ((id >> 4) << 16) | (1 << (id & 0xf))
}

/// Lowest-priority delivery with vector hashing (`kvm_vector_to_index()`):
/// which of `candidates` matching vCPUs, in vCPU order, gets the interrupt.
pub(crate) const fn lowest_prio_index(vector: u8, candidates: usize) -> Option<usize> {
    if candidates == 0 {
        None
    } else {
        Some(vector as usize % candidates)
    }
}

/// The register offset of x2APIC MSR `msr`.
fn x2apic_msr_reg(msr: u32) -> Result<u32, Gp> {
    if X2APIC_MSRS.contains(&msr) {
        Ok((msr - 0x800) << 4)
    } else {
        Err(Gp)
    }
}

impl Lapic {
    /// A new APIC as `kvm_create_lapic()` leaves it: a zeroed page, globally
    /// enabled, software-disabled. The module calls [`Lapic::reset`] next, as
    /// vCPU creation does.
    pub(crate) fn new(vcpu_id: u32, cfg: LapicConfig) -> Self {
        let mut cfg = cfg;
        cfg.bus_cycle_ns = cfg.bus_cycle_ns.max(1);
        Self {
            regs: [0; KVM_APIC_REG_SIZE / 4],
            apic_base: APICBASE_ENABLE,
            vcpu_id,
            cfg,
            caps: GuestCaps::NONE,
            timer_mode_mask: 0,
            nr_lvt: 6,
            lvt0_nmi: false,
            timer_mode: TIMER_ONESHOT,
            divide_count: 2,
            period_ns: 0,
            target_ns: 0,
            tsc_deadline: 0,
            host_timer: HostTimer::Off,
            arb_prio: 0,
            pending_init: false,
            pending_sipi: None,
        }
    }

    // ---- the page ----

    /// The raw value of the register at `offset` (0 beyond the page).
    #[cfg(test)]
    pub(crate) fn reg(&self, offset: u32) -> u32 {
        self.regs.get((offset >> 2) as usize).copied().unwrap_or(0)
    }

    fn get(&self, r: u32) -> u32 {
        // Callers pass register constants or offsets checked to be < 0x400.
        self.regs[((r >> 2) & 0xff) as usize]
    }

    fn set(&mut self, r: u32, v: u32) {
        self.regs[((r >> 2) & 0xff) as usize] = v;
    }

    /// Bit `v` of the 256-bit map at `base` (ISR/TMR/IRR: a word every 16
    /// bytes; SDM 11.8.4).
    fn test_vec(&self, base: u32, v: u8) -> bool {
        self.get(base + u32::from(v >> 5) * 0x10) & (1 << (v & 31)) != 0
    }

    fn set_vec(&mut self, base: u32, v: u8, on: bool) {
        let r = base + u32::from(v >> 5) * 0x10;
        let w = self.get(r);
        let bit = 1 << (v & 31);
        self.set(r, if on { w | bit } else { w & !bit });
    }

    fn highest_vec(&self, base: u32) -> Option<u8> {
        // Runs on every VM entry: a plain loop over the eight words (the
        // iterator form took some 25 instructions a word), after one OR of
        // them for the common case of an empty register (the loop alone
        // took some 70 instructions to find nothing).
        let first = ((base >> 2) & 0xff) as usize;
        let words: &[u32; 29] = self.regs.get(first..first + 29)?.try_into().ok()?;
        let any = words[0] | words[4] | words[8] | words[12] | words[16] | words[20] | words[24] | words[28];
        if any == 0 {
            return None;
        }
        let mut i = 8;
        while i > 0 {
            i -= 1;
            let w = words[i * 4];
            if w != 0 {
                return Some((i as u32 * 32 + 31 - w.leading_zeros()) as u8);
            }
        }
        None
    }

    // ---- configuration ----

    /// The vCPU id, which is also the x2APIC ID.
    #[cfg(test)]
    pub(crate) fn vcpu_id(&self) -> u32 {
        self.vcpu_id
    }

    /// After `KVM_SET_CPUID2` (`kvm_vcpu_after_set_cpuid()`, when leaf 1 exists):
    /// the timer modes LVTT accepts, and the version register.
    pub(crate) fn set_guest_caps(&mut self, caps: GuestCaps) {
        self.caps = caps;
        self.timer_mode_mask = if caps.tsc_deadline {
            TIMER_PERIODIC | TIMER_TSCDEADLINE
        } else {
            TIMER_PERIODIC
        };
        self.set_version();
    }

    /// After MCG_CAP changes (`kvm_apic_after_set_mcg_cap()`): CMCI adds a
    /// seventh LVT entry, which starts masked.
    pub(crate) fn set_cmci(&mut self, cmci: bool) {
        let nr = if cmci { 7 } else { 6 };
        if nr == self.nr_lvt {
            return;
        }
        for lvt in Lvt::ALL.iter().take(nr).skip(self.nr_lvt) {
            self.set(lvt.offset(), LVT_MASKED);
        }
        self.nr_lvt = nr;
        self.set_version();
    }

    /// The number of LVT entries (`nr_lvt_entries`).
    #[cfg(test)]
    pub(crate) fn nr_lvt_entries(&self) -> usize {
        self.nr_lvt
    }

    /// `kvm_apic_set_version()`: max LVT index in bits 23:16 (SDM 11.4.8); the
    /// directed-EOI bit only for an x2APIC guest without the in-kernel IOAPIC,
    /// whose 82093AA model has no EOI register.
    fn set_version(&mut self) {
        let mut v = APIC_VERSION | ((self.nr_lvt as u32 - 1) << 16);
        if self.caps.x2apic && !self.cfg.ioapic_in_kernel {
            v |= LVR_DIRECTED_EOI;
        }
        self.set(reg::LVR, v);
    }

    // ---- modes and IDs ----

    /// The IA32_APIC_BASE MSR.
    pub(crate) fn apic_base(&self) -> u64 {
        self.apic_base
    }

    /// The guest-physical address of the MMIO page (meaningful in xAPIC mode).
    pub(crate) fn base_address(&self) -> u64 {
        self.apic_base & !0xfff
    }

    /// Whether `gpa` falls in the MMIO page (`apic_mmio_in_range()`).
    pub(crate) fn mmio_in_range(&self, gpa: u64) -> bool {
        gpa.wrapping_sub(self.base_address()) < LAPIC_MMIO_LENGTH
    }

    /// The mode IA32_APIC_BASE selects.
    pub(crate) fn mode(&self) -> ApicMode {
        ApicMode::from_base(self.apic_base)
    }

    /// Globally enabled (`kvm_apic_hw_enabled()`, `kvm_apic_present()`).
    pub(crate) fn hw_enabled(&self) -> bool {
        self.apic_base & APICBASE_ENABLE != 0
    }

    /// Software-enabled: SPIV bit 8 (SDM 11.4.3).
    pub(crate) fn sw_enabled(&self) -> bool {
        self.get(reg::SPIV) & SPIV_APIC_ENABLED != 0
    }

    /// Both enabled: fixed interrupts are accepted (`apic_enabled()`).
    pub(crate) fn enabled(&self) -> bool {
        self.hw_enabled() && self.sw_enabled()
    }

    /// In x2APIC mode (EXTD set).
    pub(crate) fn x2apic_mode(&self) -> bool {
        self.apic_base & APICBASE_X2APIC != 0
    }

    /// The MMIO page is decoded: enabled and not in x2APIC mode, where the
    /// xAPIC page is not accessible (SDM 11.12.2).
    pub(crate) fn xapic_mmio_active(&self) -> bool {
        self.hw_enabled() && !self.x2apic_mode()
    }

    /// The 8-bit xAPIC ID in ID bits 31:24 (SDM 11.4.6).
    pub(crate) fn xapic_id(&self) -> u8 {
        (self.get(reg::ID) >> 24) as u8
    }

    fn set_xapic_id(&mut self) {
        // `kvm_apic_set_xapic_id()` takes a u8: larger vCPU ids wrap.
        self.set(reg::ID, (self.vcpu_id & 0xff) << 24);
    }

    /// `__kvm_apic_set_base()`: the ID follows the mode on enable and on each
    /// EXTD change, as SDM 11.12.5.1 has the ID and LDR reinitialized on
    /// entering x2APIC mode; x2APIC -> xAPIC (host only) is KVM ABI.
    fn write_apic_base(&mut self, value: u64) {
        let changed = self.apic_base ^ value;
        self.apic_base = value;
        if changed & APICBASE_ENABLE != 0 && value & APICBASE_ENABLE != 0 {
            self.set_xapic_id();
        }
        if changed & APICBASE_X2APIC != 0 {
            if value & APICBASE_X2APIC != 0 {
                self.set(reg::ID, self.vcpu_id);
                self.set(reg::LDR, x2apic_ldr(self.vcpu_id));
            } else if value & APICBASE_ENABLE != 0 {
                self.set_xapic_id();
            }
        }
    }

    /// A write of IA32_APIC_BASE (`kvm_apic_set_base()`). #GP for reserved
    /// bits (above MAXPHYADDR, 7:0, 9, and EXTD without x2APIC in CPUID) and
    /// for EXTD without EN. The guest may not go x2APIC -> xAPIC nor
    /// disabled -> x2APIC (SDM 11.12.5.1); user space may.
    pub(crate) fn set_apic_base(&mut self, value: u64, host_initiated: bool) -> Result<(), Gp> {
        let reserved = self.caps.reserved_gpa_bits()
            | APICBASE_RESERVED_LOW
            | if self.caps.x2apic { 0 } else { APICBASE_X2APIC };
        let (old, new) = (self.mode(), ApicMode::from_base(value));
        if value & reserved != 0 || new == ApicMode::Invalid {
            return Err(Gp);
        }
        if !host_initiated
            && matches!(
                (old, new),
                (ApicMode::X2apic, ApicMode::Xapic) | (ApicMode::Disabled, ApicMode::X2apic)
            )
        {
            return Err(Gp);
        }
        self.write_apic_base(value);
        Ok(())
    }

    // ---- reset ----

    /// Power-on reset (`kvm_lapic_reset(vcpu, false)`; SDM 11.4.7.1): base
    /// 0xfee00000, enabled, BSP flag, xAPIC ID = vCPU id, then as INIT.
    pub(crate) fn reset(&mut self, is_bsp: bool, flags: &VmFlags) {
        self.do_reset(false, is_bsp, flags);
    }

    /// INIT (`kvm_lapic_reset(vcpu, true)`; SDM 11.4.7.3): like reset but
    /// IA32_APIC_BASE and the ID are kept (and the LDR in x2APIC mode).
    pub(crate) fn init(&mut self, is_bsp: bool, flags: &VmFlags) {
        self.do_reset(true, is_bsp, flags);
    }

    fn do_reset(&mut self, init_event: bool, is_bsp: bool, flags: &VmFlags) {
        if !init_event {
            let bsp = if is_bsp { APICBASE_BSP } else { 0 };
            self.write_apic_base(APIC_DEFAULT_PHYS_BASE | APICBASE_ENABLE | bsp);
            self.set_xapic_id();
        }
        self.host_timer = HostTimer::Off;
        self.set_version();
        for lvt in Lvt::ALL.iter().take(self.nr_lvt) {
            self.set(lvt.offset(), LVT_MASKED);
        }
        self.update_lvtt();
        if is_bsp && flags.lint0_reenabled_quirk {
            // KVM ABI: the BSP's LINT0 comes out of reset as unmasked ExtINT.
            self.set(reg::LVT0, MODE_EXTINT);
        }
        self.lvt0_nmi = lvt_nmi_mode(self.get(reg::LVT0));
        self.set(reg::DFR, DFR_FLAT);
        self.set(reg::SPIV, 0xff);
        self.set(reg::TASKPRI, 0);
        if !self.x2apic_mode() {
            self.set(reg::LDR, 0);
        }
        for r in [reg::ESR, reg::ICR, reg::ICR2, reg::TDCR, reg::TMICT] {
            self.set(r, 0);
        }
        for i in 0..8 {
            for base in [reg::IRR, reg::ISR, reg::TMR] {
                self.set(base + 0x10 * i, 0);
            }
        }
        self.update_divide_count();
        self.update_ppr();
        self.arb_prio = 0;
    }

    // ---- register reads ----

    /// `kvm_lapic_readable_reg_mask()`: bit `r >> 4` is set for each readable
    /// register `r`; reserved and write-only registers are absent.
    pub(crate) fn readable_reg_mask(&self) -> u64 {
        let bit = |r: u32| 1u64 << (r >> 4);
        let eight = |r: u32| bit(r) * 0xff;
        let mut m = bit(reg::ID)
            | bit(reg::LVR)
            | bit(reg::TASKPRI)
            | bit(reg::PROCPRI)
            | bit(reg::LDR)
            | bit(reg::SPIV)
            | eight(reg::ISR)
            | eight(reg::TMR)
            | eight(reg::IRR)
            | bit(reg::ESR)
            | bit(reg::ICR)
            | bit(reg::LVTT)
            | bit(reg::LVTTHMR)
            | bit(reg::LVTPC)
            | bit(reg::LVT0)
            | bit(reg::LVT1)
            | bit(reg::LVTERR)
            | bit(reg::TMICT)
            | bit(reg::TMCCT)
            | bit(reg::TDCR);
        if self.nr_lvt > 6 {
            m |= bit(reg::LVTCMCI);
        }
        // SDM 11.12.1.2: ARBPRI, DFR and ICR2 do not exist in x2APIC mode.
        if !self.x2apic_mode() {
            m |= bit(reg::ARBPRI) | bit(reg::DFR) | bit(reg::ICR2);
        }
        m
    }

    /// `__apic_read()` of an aligned, readable register.
    fn read_value(&self, r: u32, now_ns: u64) -> u32 {
        match r {
            reg::ARBPRI => 0,
            reg::TMCCT if self.timer_mode == TIMER_TSCDEADLINE => 0,
            reg::TMCCT => self.tmcct(now_ns),
            _ => self.get(r),
        }
    }

    /// `kvm_lapic_reg_read()`: `len` bytes at `offset` (within one 16-byte
    /// register, from its first 4 bytes), zero-extended; `None` where C fails.
    fn reg_read(&self, offset: u32, len: usize, now_ns: u64) -> Option<u32> {
        let align = (offset & 0xf) as usize;
        if !matches!(len, 1 | 2 | 4)
            || align + len > 4
            || offset > 0x3f0
            || self.readable_reg_mask() & (1 << (offset >> 4)) == 0
        {
            return None;
        }
        let v = self.read_value(offset & !0xf, now_ns) >> (8 * align);
        Some(if len == 4 {
            v
        } else {
            v & ((1 << (8 * len)) - 1)
        })
    }

    /// A guest read of the MMIO page at `offset` (< 0x1000) into `data`. As in
    /// the C KVM, an access crossing a 4-byte boundary, of a size other than
    /// 1, 2 or 4, or of a reserved or write-only register leaves `data`
    /// untouched.
    pub(crate) fn mmio_read(
        &self,
        offset: u32,
        data: &mut [u8],
        now_ns: u64,
    ) -> Result<(), MmioInactive> {
        if !self.xapic_mmio_active() {
            return Err(MmioInactive);
        }
        if let Some(v) = self.reg_read(offset, data.len(), now_ns) {
            data.copy_from_slice(&v.to_le_bytes()[..data.len()]);
        }
        Ok(())
    }

    /// RDMSR of an x2APIC MSR (`kvm_x2apic_msr_read()`): #GP outside x2APIC
    /// mode and for registers that are not readable; ICR reads as 64 bits.
    pub(crate) fn rdmsr(&self, msr: u32, now_ns: u64) -> Result<u64, Gp> {
        let r = x2apic_msr_reg(msr)?;
        if !self.x2apic_mode() {
            return Err(Gp);
        }
        if r == reg::ICR {
            return Ok(u64::from(self.get(reg::ICR)) | u64::from(self.get(reg::ICR2)) << 32);
        }
        self.reg_read(r, 4, now_ns).map(u64::from).ok_or(Gp)
    }

    // ---- register writes ----

    /// A guest write to the MMIO page at `offset` (< 0x1000). Only aligned
    /// 4-byte writes count (SDM 11.4.1); others, and writes the C KVM
    /// rejects (read-only or reserved registers), are dropped.
    pub(crate) fn mmio_write(
        &mut self,
        offset: u32,
        data: &[u8],
        now_ns: u64,
    ) -> Result<Option<Action>, MmioInactive> {
        if !self.xapic_mmio_active() {
            return Err(MmioInactive);
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return Ok(None);
        };
        if offset & 0xf != 0 || u64::from(offset) >= LAPIC_MMIO_LENGTH {
            return Ok(None);
        }
        Ok(self
            .reg_write(offset & 0xff0, u32::from_le_bytes(bytes), now_ns)
            .unwrap_or_default())
    }

    /// WRMSR of an x2APIC MSR (`kvm_x2apic_msr_write()`): #GP outside x2APIC
    /// mode, for bits 63:32 set (except in ICR), for read-only registers
    /// (ID and LDR included) and for reserved ICR/SELF IPI/ESR bits.
    pub(crate) fn wrmsr(
        &mut self,
        msr: u32,
        value: u64,
        now_ns: u64,
    ) -> Result<Option<Action>, Gp> {
        let r = x2apic_msr_reg(msr)?;
        if !self.x2apic_mode() {
            return Err(Gp);
        }
        if r == reg::ICR {
            return self.x2apic_icr_write(value).map(Some);
        }
        let value = u32::try_from(value).map_err(|_| Gp)?;
        self.reg_write(r, value, now_ns)
    }

    /// `kvm_x2apic_icr_write()`: one 64-bit register (SDM 11.12.9), kept as
    /// ICR + ICR2 in the page as `KVM_GET_LAPIC` shows it. BUSY is reserved in
    /// x2APIC mode but, as in the C KVM, cleared rather than faulted.
    fn x2apic_icr_write(&mut self, value: u64) -> Result<Action, Gp> {
        if value & X2APIC_ICR_RESERVED != 0 {
            return Err(Gp);
        }
        let (low, high) = (value as u32 & !ICR_BUSY, (value >> 32) as u32);
        self.set(reg::ICR, low);
        self.set(reg::ICR2, high);
        Ok(Action::Ipi(self.decode_ipi(low, high)))
    }

    /// `kvm_apic_send_ipi()`: the fields of an ICR value (SDM 11.6.1); the
    /// destination is ICR2 bits 31:24 in xAPIC mode, all 32 in x2APIC mode.
    fn decode_ipi(&self, low: u32, high: u32) -> Ipi {
        Ipi {
            irq: Irq {
                vector: (low & VECTOR_MASK) as u8,
                mode: DeliveryMode::from_reg(low),
                level: low & ICR_ASSERT != 0,
                level_triggered: low & ICR_LEVEL_TRIGGER != 0,
            },
            dest: Destination {
                id: if self.x2apic_mode() { high } else { high >> 24 },
                logical: low & ICR_DEST_LOGICAL != 0,
                shorthand: Shorthand::from_icr(low),
            },
        }
    }

    /// `kvm_lapic_reg_write()`: `Err` where C returns 1 (#GP for an MSR
    /// write, silently dropped for MMIO).
    fn reg_write(&mut self, r: u32, val: u32, now_ns: u64) -> Result<Option<Action>, Gp> {
        let x2apic = self.x2apic_mode();
        match r {
            // The xAPIC ID is writable (SDM 11.4.6); the x2APIC ID is not.
            reg::ID if !x2apic => self.set(reg::ID, val & 0xff00_0000),
            reg::TASKPRI => {
                self.set(reg::TASKPRI, val & 0xff);
                self.update_ppr();
            }
            reg::EOI => return Ok(self.eoi()),
            reg::LDR if !x2apic => self.set(reg::LDR, val & LDR_MASK),
            // DFR bits 27:0 are reserved as ones (SDM 11.6.2.2).
            reg::DFR if !x2apic => self.set(reg::DFR, val | DFR_CLUSTER),
            reg::SPIV => return Ok(self.write_spiv(val).map(Action::Timer)),
            reg::ICR if !x2apic => {
                // KVM sends at once, so the delivery status is never busy.
                let icr = val & !ICR_BUSY;
                self.set(reg::ICR, icr);
                return Ok(Some(Action::Ipi(self.decode_ipi(icr, self.get(reg::ICR2)))));
            }
            reg::ICR2 if !x2apic => self.set(reg::ICR2, val & 0xff00_0000),
            reg::LVTT => {
                let mut v = val;
                if !self.sw_enabled() {
                    v |= LVT_MASKED;
                }
                self.set(reg::LVTT, v & (LVT_MASK | self.timer_mode_mask));
                return Ok(self.update_lvtt().map(Action::Timer));
            }
            reg::LVTTHMR | reg::LVTPC | reg::LVT0 | reg::LVT1 | reg::LVTERR | reg::LVTCMCI => {
                if r == reg::LVT0 {
                    // `apic_manage_nmi_watchdog()` looks at the value written,
                    // before the software-disable mask below.
                    self.lvt0_nmi = lvt_nmi_mode(val);
                }
                let lvt = Lvt::from_offset(r).ok_or(Gp)?;
                if lvt == Lvt::Cmci && self.nr_lvt < 7 {
                    return Err(Gp);
                }
                let mut v = val;
                // SDM 11.4.3: while software-disabled the mask bits stay set.
                if !self.sw_enabled() {
                    v |= LVT_MASKED;
                }
                self.set(r, v & lvt.write_mask());
            }
            reg::TMICT => {
                // In TSC-deadline mode writes to TMICT are ignored (SDM 11.5.4.1).
                if self.timer_mode != TIMER_TSCDEADLINE {
                    self.set(reg::TMICT, val);
                    return Ok(Some(Action::Timer(self.start_timer(reg::TMICT, now_ns))));
                }
            }
            reg::TDCR => return Ok(self.write_tdcr(val, now_ns).map(Action::Timer)),
            // A write re-latches errors on hardware (SDM 11.5.3); KVM never
            // records any, so ESR keeps its value. x2APIC requires 0.
            reg::ESR => {
                if x2apic && val != 0 {
                    return Err(Gp);
                }
            }
            // SDM 11.12.11: x2APIC only; bits 31:8 reserved.
            reg::SELF_IPI if x2apic && val & !VECTOR_MASK == 0 => {
                return Ok(Some(Action::Ipi(self.decode_ipi(ICR_DEST_SELF | val, 0))));
            }
            _ => return Err(Gp),
        }
        Ok(None)
    }

    /// SPIV: bits 9:0, plus 12 if directed EOI is offered (SDM 11.9). Clearing
    /// the enable bit masks every LVT entry (SDM 11.4.3).
    fn write_spiv(&mut self, val: u32) -> Option<HostTimer> {
        let mut mask = 0x3ff;
        if self.get(reg::LVR) & LVR_DIRECTED_EOI != 0 {
            mask |= SPIV_DIRECTED_EOI;
        }
        self.set(reg::SPIV, val & mask);
        if val & SPIV_APIC_ENABLED != 0 {
            return None;
        }
        for lvt in Lvt::ALL.iter().take(self.nr_lvt) {
            let r = lvt.offset();
            self.set(r, self.get(r) | LVT_MASKED);
        }
        self.update_lvtt()
    }

    /// SPIV bit 12: EOIs are not broadcast to the IOAPIC (the in-kernel IOAPIC
    /// honours it for level-triggered vectors).
    pub(crate) fn suppress_eoi_broadcast(&self) -> bool {
        self.get(reg::SPIV) & SPIV_DIRECTED_EOI != 0
    }

    // ---- priorities, acceptance, EOI ----

    /// PPR from TPR and the highest in-service vector (SDM 11.8.3.1):
    /// TPR if its class is at least the ISR class, else the ISR class.
    fn update_ppr(&mut self) {
        let tpr = self.get(reg::TASKPRI);
        let isrv = self.highest_vec(reg::ISR).map_or(0, u32::from);
        let ppr = if tpr & 0xf0 >= isrv & 0xf0 {
            tpr & 0xff
        } else {
            isrv & 0xf0
        };
        self.set(reg::PROCPRI, ppr);
    }

    /// The task priority register.
    #[cfg(test)]
    pub(crate) fn tpr(&self) -> u8 {
        self.get(reg::TASKPRI) as u8
    }

    /// The processor priority register.
    #[cfg(test)]
    pub(crate) fn ppr(&self) -> u8 {
        self.get(reg::PROCPRI) as u8
    }

    /// A write of CR8 (`kvm_lapic_set_tpr()`): TPR[7:4] = CR8[3:0] (SDM 11.8.6).
    pub(crate) fn set_cr8(&mut self, cr8: u64) {
        self.set(reg::TASKPRI, ((cr8 & 0xf) << 4) as u32);
        self.update_ppr();
    }

    /// CR8 as the guest reads it (`kvm_lapic_get_cr8()`).
    pub(crate) fn cr8(&self) -> u64 {
        u64::from((self.get(reg::TASKPRI) & 0xf0) >> 4)
    }

    /// Offers an interrupt to this APIC (`__apic_accept_irq()`, SDM 11.6.3).
    /// Fixed and lowest-priority interrupts set IRR and TMR if the APIC is
    /// enabled and the message is not a level de-assert. As in the C KVM,
    /// vectors 0-15 are accepted too and ESR is not set (the SDM has them
    /// rejected with "receive illegal vector"); they are never delivered,
    /// since their priority class 0 never exceeds PPR.
    pub(crate) fn accept(&mut self, irq: &Irq) -> Delivered {
        match irq.mode {
            DeliveryMode::Fixed | DeliveryMode::LowestPriority => {
                if irq.mode == DeliveryMode::LowestPriority {
                    self.arb_prio = self.arb_prio.wrapping_add(1);
                }
                if (irq.level_triggered && !irq.level) || !self.enabled() {
                    return Delivered::Dropped;
                }
                self.set_vec(reg::TMR, irq.vector, irq.level_triggered);
                self.set_vec(reg::IRR, irq.vector, true);
                Delivered::Irr
            }
            DeliveryMode::RemoteRead => Delivered::PvUnhalt,
            DeliveryMode::Smi => Delivered::Smi,
            DeliveryMode::Nmi => Delivered::Nmi,
            // An INIT level de-assert is the obsolete "INIT level de-assert"
            // IPI, which does nothing (SDM 11.6.1).
            DeliveryMode::Init if irq.level_triggered && !irq.level => Delivered::Dropped,
            DeliveryMode::Init => {
                // A new INIT discards a SIPI not yet taken.
                self.pending_init = true;
                self.pending_sipi = None;
                Delivered::Init
            }
            DeliveryMode::StartUp => {
                self.pending_sipi = Some(irq.vector);
                Delivered::Sipi
            }
            // Only LINT0 carries ExtINT, and the PIC path handles it.
            DeliveryMode::ExtInt => Delivered::Dropped,
        }
    }

    /// A fixed interrupt (edge or level asserted): whether it was accepted.
    pub(crate) fn accept_fixed(&mut self, vector: u8, level_triggered: bool) -> bool {
        let irq = Irq {
            vector,
            mode: DeliveryMode::Fixed,
            level: true,
            level_triggered,
        };
        self.accept(&irq).accepted()
    }

    /// The vector to deliver next, if any (`kvm_apic_has_interrupt()`): the
    /// highest IRR vector whose class exceeds PPR's (SDM 11.8.3.1). None while
    /// the APIC is hardware-disabled.
    pub(crate) fn highest_pending(&self) -> Option<u8> {
        if !self.hw_enabled() {
            return None;
        }
        let v = self.highest_vec(reg::IRR)?;
        (u32::from(v & 0xf0) > self.get(reg::PROCPRI)).then_some(v)
    }

    /// [`Lapic::highest_pending`] and [`Lapic::highest_irr`] with one scan of
    /// IRR (the entry path wants both).
    pub(crate) fn pending_and_highest_irr(&self) -> (Option<u8>, Option<u8>) {
        let irr = self.highest_vec(reg::IRR);
        let pending = irr.filter(|v| self.hw_enabled() && u32::from(v & 0xf0) > self.get(reg::PROCPRI));
        (pending, irr)
    }

    /// The highest IRR vector regardless of priority (`kvm_lapic_find_highest_irr()`).
    #[cfg(test)]
    pub(crate) fn highest_irr(&self) -> Option<u8> {
        self.highest_vec(reg::IRR)
    }

    /// Delivery of `vector` to the guest (`kvm_apic_ack_interrupt()`): it
    /// moves from IRR to ISR and PPR rises (SDM 11.8.4).
    pub(crate) fn ack(&mut self, vector: u8) {
        self.set_vec(reg::IRR, vector, false);
        self.set_vec(reg::ISR, vector, true);
        self.update_ppr();
    }

    /// EOI (`apic_set_eoi()`, SDM 11.8.5): clears the highest ISR bit. None if
    /// ISR was empty (Linux writes EOI with nothing in service).
    pub(crate) fn eoi(&mut self) -> Option<Action> {
        let vector = self.highest_vec(reg::ISR)?;
        self.set_vec(reg::ISR, vector, false);
        self.update_ppr();
        Some(Action::Eoi {
            vector,
            level_triggered: self.test_vec(reg::TMR, vector),
        })
    }

    /// `kvm_apic_pending_eoi()`: `vector` is requested or in service.
    pub(crate) fn pending_eoi(&self, vector: u8) -> bool {
        self.test_vec(reg::ISR, vector) || self.test_vec(reg::IRR, vector)
    }

    /// The lowest-priority arbitration counter (`apic_arb_prio`, without
    /// vector hashing: the matching vCPU with the smallest one wins).
    #[cfg(test)]
    pub(crate) fn arb_prio(&self) -> u32 {
        self.arb_prio
    }

    /// Takes a latched INIT (`KVM_APIC_INIT`).
    pub(crate) fn take_init(&mut self) -> bool {
        core::mem::take(&mut self.pending_init)
    }

    /// Latches a SIPI whatever the APIC's state (`KVM_SET_MP_STATE` of
    /// SIPI_RECEIVED sets `KVM_APIC_SIPI` directly).
    pub(crate) fn latch_sipi(&mut self, vector: u8) {
        self.pending_sipi = Some(vector);
    }

    /// Takes a latched SIPI vector (`KVM_APIC_SIPI`).
    pub(crate) fn take_sipi(&mut self) -> Option<u8> {
        self.pending_sipi.take()
    }

    /// `kvm_apic_has_pending_init_or_sipi()`.
    #[cfg(test)]
    pub(crate) fn has_pending_init_or_sipi(&self) -> bool {
        self.pending_init || self.pending_sipi.is_some()
    }

    // ---- destinations ----

    fn is_broadcast(&self, mda: u32) -> bool {
        mda == if self.x2apic_mode() {
            X2APIC_BROADCAST
        } else {
            APIC_BROADCAST
        }
    }

    /// Physical destination (SDM 11.6.2.1, 11.12.10). KVM's hotplug hack: an
    /// ID that does not fit 8 bits matches the x2APIC ID even in xAPIC mode.
    fn match_physical(&self, mda: u32) -> bool {
        if self.is_broadcast(mda) {
            true
        } else if self.x2apic_mode() || mda > 0xff {
            mda == self.vcpu_id
        } else {
            mda == u32::from(self.xapic_id())
        }
    }

    /// Logical destination: x2APIC cluster (SDM 11.12.10.1), or the xAPIC
    /// flat/cluster model DFR selects (SDM 11.6.2.2). A DFR that is neither
    /// never matches.
    fn match_logical(&self, mda: u32) -> bool {
        if self.is_broadcast(mda) {
            return true;
        }
        let ldr = self.get(reg::LDR);
        if self.x2apic_mode() {
            return ldr >> 16 == mda >> 16 && ldr & mda & 0xffff != 0;
        }
        let id = ldr >> 24;
        match self.get(reg::DFR) {
            DFR_FLAT => id & mda != 0,
            DFR_CLUSTER => id >> 4 == mda >> 4 && id & mda & 0xf != 0,
            _ => false,
        }
    }

    /// Whether this APIC is a destination (`kvm_apic_match_dest()`). The
    /// caller skips hardware-disabled APICs ([`Lapic::hw_enabled`]) as the C
    /// KVM does. Unless `broadcast_quirk_disabled`, a device message to 0xff
    /// is a broadcast for x2APIC targets too.
    pub(crate) fn matches_dest(&self, dest: &Destination, source: Source, flags: &VmFlags) -> bool {
        let mda = if !flags.broadcast_quirk_disabled
            && source == Source::Device
            && dest.id == APIC_BROADCAST
            && self.x2apic_mode()
        {
            X2APIC_BROADCAST
        } else {
            dest.id
        };
        match dest.shorthand {
            Shorthand::None if dest.logical => self.match_logical(mda),
            Shorthand::None => self.match_physical(mda),
            Shorthand::ToSelf => source == Source::ThisApic,
            Shorthand::AllIncludingSelf => true,
            Shorthand::AllExcludingSelf => source != Source::ThisApic,
        }
    }

    // ---- local interrupts ----

    /// Delivers the interrupt of an LVT entry (`kvm_apic_local_deliver()`):
    /// nothing if hardware-disabled or masked. A delivered PMI masks LVTPC on
    /// Intel-compatible guests, as Intel CPUs set its mask bit on a PMI.
    pub(crate) fn local_deliver(&mut self, lvt: Lvt) -> Delivered {
        let r = lvt.offset();
        let v = self.get(r);
        if !self.hw_enabled() || v & LVT_MASKED != 0 {
            return Delivered::Dropped;
        }
        let irq = Irq {
            vector: (v & VECTOR_MASK) as u8,
            mode: DeliveryMode::from_reg(v),
            level: true,
            level_triggered: v & LVT_LEVEL_TRIGGER != 0,
        };
        let d = self.accept(&irq);
        if d.accepted() && lvt == Lvt::PerfCounter && self.caps.intel_compatible {
            self.set(r, v | LVT_MASKED);
        }
        d
    }

    /// The PIC's interrupt reaches this vCPU (`kvm_apic_accept_pic_intr()`):
    /// the APIC is hardware-disabled, or LINT0 is unmasked ExtINT.
    pub(crate) fn accepts_pic_intr(&self) -> bool {
        let lvt0 = self.get(reg::LVT0);
        !self.hw_enabled() || (lvt0 & LVT_MASKED == 0 && lvt0 & MODE_MASK == MODE_EXTINT)
    }

    /// LINT0 was last programmed as unmasked NMI (`lvt0_in_nmi_mode`): the
    /// PIT's NMI watchdog targets this vCPU.
    #[cfg(test)]
    pub(crate) fn lvt0_in_nmi_mode(&self) -> bool {
        self.lvt0_nmi
    }

    // ---- timer ----

    /// `update_divide_count()`: TDCR bits 3,1:0 select 2^(n+1), 0b111 = 1
    /// (SDM 11.5.4, Figure 11-10).
    fn update_divide_count(&mut self) {
        let tdcr = self.get(reg::TDCR) & 0xf;
        let n = ((tdcr & 3) | ((tdcr & 8) >> 1)) + 1;
        self.divide_count = 1 << (n & 7);
    }

    /// The current timer divisor.
    #[cfg(test)]
    pub(crate) fn divide_count(&self) -> u32 {
        self.divide_count
    }

    fn tmict_to_ns(&self, count: u32) -> u64 {
        u64::from(count)
            .saturating_mul(self.cfg.bus_cycle_ns)
            .saturating_mul(u64::from(self.divide_count))
    }

    /// `limit_periodic_timer_frequency()`: a periodic timer may not fire more
    /// often than the host allows.
    fn limit_period(&mut self) {
        if self.timer_mode == TIMER_PERIODIC && self.period_ns != 0 {
            self.period_ns = self.period_ns.max(self.cfg.min_timer_period_ns);
        }
    }

    /// `apic_update_lvtt()`: takes the timer mode from LVTT. Entering or
    /// leaving TSC-deadline mode stops the timer and clears TMICT and the
    /// deadline (SDM 11.5.4.1); `Some` if the host timer changed.
    fn update_lvtt(&mut self) -> Option<HostTimer> {
        let mode = self.get(reg::LVTT) & self.timer_mode_mask;
        if mode == self.timer_mode {
            return None;
        }
        let mut changed = None;
        if (self.timer_mode == TIMER_TSCDEADLINE) != (mode == TIMER_TSCDEADLINE) {
            self.host_timer = HostTimer::Off;
            self.set(reg::TMICT, 0);
            self.period_ns = 0;
            self.tsc_deadline = 0;
            changed = Some(HostTimer::Off);
        }
        self.timer_mode = mode;
        self.limit_period();
        changed
    }

    /// `restart_apic_timer()`: arms what the mode and state call for.
    fn restart_timer(&mut self) -> HostTimer {
        self.host_timer = match self.timer_mode {
            TIMER_ONESHOT | TIMER_PERIODIC if self.period_ns != 0 => HostTimer::At {
                expires_ns: self.target_ns,
            },
            TIMER_TSCDEADLINE if self.tsc_deadline != 0 => HostTimer::TscDeadline {
                tsc: self.tsc_deadline,
            },
            _ => HostTimer::Off,
        };
        self.host_timer
    }

    /// `__start_apic_timer()`: counts from TMICT (a guest write) or, restoring
    /// state, from the saved TMCCT, bounded by TMICT; a one-shot restored at
    /// count 0 fires at once.
    fn start_timer(&mut self, count_reg: u32, now_ns: u64) -> HostTimer {
        self.host_timer = HostTimer::Off;
        if self.timer_mode == TIMER_ONESHOT || self.timer_mode == TIMER_PERIODIC {
            self.period_ns = self.tmict_to_ns(self.get(reg::TMICT));
            if self.period_ns == 0 {
                return HostTimer::Off;
            }
            self.limit_period();
            let mut first = self.period_ns;
            if count_reg != reg::TMICT {
                let left = self.tmict_to_ns(self.get(count_reg));
                if left == 0 {
                    first = if self.timer_mode == TIMER_PERIODIC {
                        self.period_ns
                    } else {
                        0
                    };
                } else if left > self.period_ns {
                    self.set(count_reg, 0);
                } else {
                    first = left;
                }
            }
            self.target_ns = now_ns.saturating_add(first);
        }
        self.restart_timer()
    }

    /// TDCR: bits 3 and 1:0 (SDM 11.5.4). A running timer keeps its progress:
    /// the time left is rescaled to the new divisor (`update_target_expiration()`).
    fn write_tdcr(&mut self, val: u32, now_ns: u64) -> Option<HostTimer> {
        let old = self.divide_count;
        self.set(reg::TDCR, val & 0xb);
        self.update_divide_count();
        if self.divide_count == old || self.period_ns == 0 {
            return None;
        }
        self.period_ns = self.tmict_to_ns(self.get(reg::TMICT));
        self.limit_period();
        // left * new / old without 128-bit arithmetic (the kernel has no
        // u128 division): both divisors are powers of two, so this is exact.
        let left = self.target_ns.saturating_sub(now_ns);
        let new = self.divide_count;
        // Both are 1..=128 (`update_divide_count`); checked_div keeps a
        // division-by-zero panic path out of the module all the same.
        let left = if new > old {
            left.saturating_mul(u64::from(new.checked_div(old).unwrap_or(1)))
        } else {
            left.checked_div(u64::from(old.checked_div(new).unwrap_or(1))).unwrap_or(left)
        };
        self.target_ns = now_ns.saturating_add(left);
        Some(self.restart_timer())
    }

    /// TMCCT at `now_ns` (`apic_get_tmcct()`): counts left in the current
    /// period, 0 once a one-shot expired or with TMICT 0 (SDM 11.5.4).
    pub(crate) fn tmcct(&self, now_ns: u64) -> u32 {
        if self.get(reg::TMICT) == 0 || self.period_ns == 0 {
            return 0;
        }
        let ns = self.target_ns.saturating_sub(now_ns).checked_rem(self.period_ns).unwrap_or(0);
        let ns_per_count = self.cfg.bus_cycle_ns.saturating_mul(u64::from(self.divide_count));
        // The C KVM truncates to 32 bits as well.
        ns.checked_div(ns_per_count).unwrap_or(0) as u32
    }

    /// The host timer this APIC currently needs.
    pub(crate) fn host_timer(&self) -> HostTimer {
        self.host_timer
    }

    /// The timer period in ns (0 when stopped; never below the minimum when
    /// periodic).
    #[cfg(test)]
    pub(crate) fn timer_period_ns(&self) -> u64 {
        self.period_ns
    }

    /// The host timer expired (`apic_timer_fn()` and the injection that
    /// follows): delivers the LVT timer interrupt unless masked, then a
    /// periodic timer moves on by one period, never into the past (missed
    /// periods are not made up). Ignored if no timer is armed.
    pub(crate) fn timer_fired(&mut self, now_ns: u64) -> TimerExpiry {
        if self.host_timer == HostTimer::Off {
            return TimerExpiry {
                delivered: Delivered::Dropped,
                next: HostTimer::Off,
            };
        }
        let delivered = self.local_deliver(Lvt::Timer);
        self.host_timer = match self.timer_mode {
            TIMER_PERIODIC if self.period_ns != 0 => {
                self.target_ns = self.target_ns.saturating_add(self.period_ns).max(now_ns);
                HostTimer::At {
                    expires_ns: self.target_ns,
                }
            }
            TIMER_TSCDEADLINE => {
                self.tsc_deadline = 0;
                HostTimer::Off
            }
            TIMER_ONESHOT => {
                self.target_ns = 0;
                HostTimer::Off
            }
            _ => HostTimer::Off,
        };
        TimerExpiry {
            delivered,
            next: self.host_timer,
        }
    }

    /// RDMSR IA32_TSC_DEADLINE (`kvm_get_lapic_tscdeadline_msr()`): 0 unless
    /// enabled and in TSC-deadline mode; 0 again once the deadline passed.
    pub(crate) fn tsc_deadline(&self) -> u64 {
        if self.hw_enabled() && self.timer_mode == TIMER_TSCDEADLINE {
            self.tsc_deadline
        } else {
            0
        }
    }

    /// WRMSR IA32_TSC_DEADLINE (`kvm_set_lapic_tscdeadline_msr()`): ignored
    /// (None) unless enabled and in TSC-deadline mode; 0 disarms (SDM 11.5.4.1).
    pub(crate) fn set_tsc_deadline(&mut self, tsc: u64) -> Option<HostTimer> {
        if !self.hw_enabled() || self.timer_mode != TIMER_TSCDEADLINE {
            return None;
        }
        self.tsc_deadline = tsc;
        Some(self.restart_timer())
    }

    // ---- KVM_GET_LAPIC / KVM_SET_LAPIC ----

    /// `KVM_GET_LAPIC` (`kvm_apic_get_state()`): the page with TMCCT computed
    /// for `now_ns`. In x2APIC mode without 32-bit IDs the x2APIC ID is shown
    /// in the xAPIC position (bits 31:24), as `kvm_apic_state_fixup()` does.
    pub(crate) fn get_state(
        &self,
        now_ns: u64,
        flags: &VmFlags,
    ) -> Result<[u8; KVM_APIC_REG_SIZE], Errno> {
        let mut regs = self.regs;
        regs[(reg::TMCCT / 4) as usize] = self.read_value(reg::TMCCT, now_ns);
        if self.x2apic_mode() {
            let id = &mut regs[(reg::ID / 4) as usize];
            if !flags.x2apic_format {
                *id = self.vcpu_id << 24;
            } else if *id != self.vcpu_id {
                return Err(errno::EINVAL);
            }
        }
        let mut page = [0u8; KVM_APIC_REG_SIZE];
        for (i, r) in regs.iter().enumerate() {
            if let Some(d) = page.get_mut(4 * i..4 * i + 4) {
                d.copy_from_slice(&r.to_le_bytes());
            }
        }
        Ok(page)
    }

    /// `KVM_SET_LAPIC` (`kvm_apic_set_state()`): takes the page as is (no
    /// write masks), except that the version is recomputed, PPR derived, and
    /// in x2APIC mode the ID and LDR forced to the vCPU's (with 32-bit IDs a
    /// different ID is `EINVAL`, after SPIV was already taken, as in C). The
    /// timer restarts from the saved TMCCT; the result is the host timer.
    pub(crate) fn set_state(
        &mut self,
        page: &[u8; KVM_APIC_REG_SIZE],
        now_ns: u64,
        flags: &VmFlags,
    ) -> Result<HostTimer, Errno> {
        let mut regs = [0u32; KVM_APIC_REG_SIZE / 4];
        for (i, r) in regs.iter_mut().enumerate() {
            if let Some(&[a, b, c, d]) = page.get(4 * i..4 * i + 4) {
                *r = u32::from_le_bytes([a, b, c, d]);
            }
        }
        self.set(reg::SPIV, regs[(reg::SPIV / 4) as usize]);
        if self.x2apic_mode() {
            let id = &mut regs[(reg::ID / 4) as usize];
            if !flags.x2apic_format {
                // KVM's x2APIC ID is read-only; old user space may send another.
                *id = self.vcpu_id;
            } else if *id != self.vcpu_id {
                return Err(errno::EINVAL);
            }
            regs[(reg::LDR / 4) as usize] = x2apic_ldr(self.vcpu_id);
        }
        self.regs = regs;
        self.set_version();
        self.update_ppr();
        self.host_timer = HostTimer::Off;
        self.update_lvtt();
        self.lvt0_nmi = lvt_nmi_mode(self.get(reg::LVT0));
        self.update_divide_count();
        let timer = self.start_timer(reg::TMCCT, now_ns);
        self.set(reg::TMCCT, 0);
        self.arb_prio = 0;
        Ok(timer)
    }
}

/// LINT0 in NMI mode: delivery mode NMI and not masked (`apic_lvt_nmi_mode()`).
fn lvt_nmi_mode(v: u32) -> bool {
    v & (MODE_MASK | LVT_MASKED) == MODE_NMI
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAGS: VmFlags = VmFlags::DEFAULT;
    /// A guest with x2APIC and TSC-deadline in CPUID.
    const CAPS: GuestCaps = GuestCaps {
        x2apic: true,
        tsc_deadline: true,
        maxphyaddr: 48,
        intel_compatible: true,
    };

    /// A vCPU as the selftest library creates it: reset, then CPUID set.
    fn lapic(id: u32) -> Lapic {
        let mut a = Lapic::new(id, LapicConfig::DEFAULT);
        a.reset(id == 0, &FLAGS);
        a.set_guest_caps(CAPS);
        a
    }

    /// A vCPU with its APIC software-enabled (`xapic_enable()`).
    fn enabled(id: u32) -> Lapic {
        let mut a = lapic(id);
        wr(&mut a, reg::SPIV, 0x1ff);
        a
    }

    fn rd_at(a: &Lapic, off: u32, now: u64) -> u32 {
        let mut b = [0u8; 4];
        a.mmio_read(off, &mut b, now).unwrap();
        u32::from_le_bytes(b)
    }

    fn rd(a: &Lapic, off: u32) -> u32 {
        rd_at(a, off, 0)
    }

    fn wr_at(a: &mut Lapic, off: u32, v: u32, now: u64) -> Option<Action> {
        a.mmio_write(off, &v.to_le_bytes(), now).unwrap()
    }

    fn wr(a: &mut Lapic, off: u32, v: u32) -> Option<Action> {
        wr_at(a, off, v, 0)
    }

    /// Guest `x2apic_enable()`.
    fn to_x2apic(a: &mut Lapic) {
        let base = a.apic_base() | APICBASE_X2APIC;
        a.set_apic_base(base, false).unwrap();
        a.wrmsr(0x80f, 0x1ff, 0).unwrap();
    }

    fn msr(r: u32) -> u32 {
        0x800 + (r >> 4)
    }

    fn page_reg(p: &[u8; KVM_APIC_REG_SIZE], off: u32) -> u32 {
        let o = off as usize;
        u32::from_le_bytes([p[o], p[o + 1], p[o + 2], p[o + 3]])
    }

    fn set_page_reg(p: &mut [u8; KVM_APIC_REG_SIZE], off: u32, v: u32) {
        let o = off as usize;
        p[o..o + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn fixed(vector: u8) -> Irq {
        Irq {
            vector,
            mode: DeliveryMode::Fixed,
            level: true,
            level_triggered: false,
        }
    }

    fn ipi(a: Option<Action>) -> Ipi {
        match a {
            Some(Action::Ipi(i)) => i,
            other => panic!("expected an IPI, got {other:?}"),
        }
    }

    const LVTS6: [u32; 6] = [
        reg::LVTT,
        reg::LVTTHMR,
        reg::LVTPC,
        reg::LVT0,
        reg::LVT1,
        reg::LVTERR,
    ];

    #[test]
    fn reset_state_as_kvm_lapic_reset() {
        let bsp = lapic(0);
        assert_eq!(bsp.apic_base(), 0xfee0_0900);
        assert_eq!(bsp.mode(), ApicMode::Xapic);
        assert_eq!(rd(&bsp, reg::ID), 0);
        // Version 0x14, 6 LVT entries (max index 5), no directed EOI with the
        // in-kernel IOAPIC.
        assert_eq!(rd(&bsp, reg::LVR), 0x0005_0014);
        for r in LVTS6 {
            let want = if r == reg::LVT0 { 0x700 } else { 0x1_0000 };
            assert_eq!(rd(&bsp, r), want, "LVT {r:#x}");
        }
        assert!(bsp.accepts_pic_intr());
        assert_eq!(rd(&bsp, reg::SPIV), 0xff);
        assert!(!bsp.sw_enabled());
        assert_eq!(rd(&bsp, reg::DFR), 0xffff_ffff);
        for r in [
            reg::TASKPRI,
            reg::PROCPRI,
            reg::LDR,
            reg::ESR,
            reg::ICR,
            reg::ICR2,
            reg::TMICT,
            reg::TDCR,
        ] {
            assert_eq!(rd(&bsp, r), 0, "reg {r:#x}");
        }
        assert_eq!(bsp.divide_count(), 2);
        assert_eq!(bsp.host_timer(), HostTimer::Off);

        let ap = lapic(3);
        assert_eq!(ap.apic_base(), 0xfee0_0800);
        assert_eq!(rd(&ap, reg::ID), 3 << 24);
        assert_eq!(rd(&ap, reg::LVT0), 0x1_0000);
        assert!(!ap.accepts_pic_intr());

        // The quirk off: the BSP's LINT0 is masked too.
        let mut a = Lapic::new(0, LapicConfig::DEFAULT);
        let flags = VmFlags {
            lint0_reenabled_quirk: false,
            ..FLAGS
        };
        a.reset(true, &flags);
        assert_eq!(rd(&a, reg::LVT0), 0x1_0000);

        // The xAPIC ID is the vCPU id truncated to 8 bits.
        assert_eq!(lapic(0x1234).xapic_id(), 0x34);

        // Directed EOI only for an x2APIC guest with the split irqchip.
        let cfg = LapicConfig {
            ioapic_in_kernel: false,
            ..LapicConfig::DEFAULT
        };
        let mut a = Lapic::new(1, cfg);
        a.reset(false, &FLAGS);
        assert_eq!(rd(&a, reg::LVR), 0x0005_0014);
        a.set_guest_caps(CAPS);
        assert_eq!(rd(&a, reg::LVR), 0x0105_0014);
    }

    #[test]
    fn reset_leaves_x2apic_and_init_keeps_base_and_id() {
        let mut a = enabled(2);
        wr(&mut a, reg::ID, 0x0700_0000);
        wr(&mut a, reg::TASKPRI, 0x20);
        a.accept_fixed(0x40, true);
        a.init(false, &FLAGS);
        assert_eq!(a.apic_base(), 0xfee0_0800);
        assert_eq!(a.xapic_id(), 7);
        assert_eq!(rd(&a, reg::SPIV), 0xff);
        assert_eq!(rd(&a, reg::TASKPRI), 0);
        assert_eq!(rd(&a, reg::IRR + 0x20), 0);
        assert_eq!(rd(&a, reg::TMR + 0x20), 0);

        // INIT in x2APIC mode keeps the mode, the ID and the derived LDR.
        to_x2apic(&mut a);
        a.init(false, &FLAGS);
        assert!(a.x2apic_mode());
        assert_eq!(a.rdmsr(0x802, 0), Ok(2));
        assert_eq!(a.rdmsr(0x80d, 0), Ok(u64::from(x2apic_ldr(2))));

        // RESET returns to xAPIC with the default ID.
        a.reset(false, &FLAGS);
        assert_eq!(a.mode(), ApicMode::Xapic);
        assert_eq!(rd(&a, reg::ID), 2 << 24);
        assert_eq!(rd(&a, reg::LDR), 0);
    }

    #[test]
    fn mmio_sizes_alignment_and_readable_registers() {
        let a = lapic(3);
        let read = |off: u32, len: usize| {
            let mut b = [0xaau8; 8];
            a.mmio_read(off, &mut b[..len], 0).unwrap();
            b
        };
        // Sub-register reads within the first 4 bytes are fine.
        assert_eq!(read(0x23, 1)[0], 3);
        assert_eq!(read(0x22, 2)[..2], [0, 3]);
        // Crossing 4 bytes, 8 bytes, 3 bytes: the buffer is left alone.
        assert_eq!(read(0x22, 4)[..4], [0xaa; 4]);
        assert_eq!(read(0x20, 8), [0xaa; 8]);
        assert_eq!(read(0x20, 3)[..3], [0xaa; 3]);
        assert_eq!(read(0x24, 4)[..4], [0xaa; 4]);
        assert_eq!(a.mmio_read(0x24, &mut [], 0), Ok(()));
        assert_eq!(a.mmio_read(0x20, &mut [], 0), Ok(()));
        // Reserved and write-only registers.
        for off in [
            0x0,
            0x10,
            0x40,
            0x70,
            reg::EOI,
            reg::RRR,
            0x2a0,
            reg::LVTCMCI,
            0x3a0,
            0x3d0,
            reg::SELF_IPI,
            0x400,
            0xff0,
        ] {
            assert_eq!(read(off, 4)[..4], [0xaa; 4], "offset {off:#x}");
        }
        // ARBPRI reads 0; DFR and ICR2 exist in xAPIC mode.
        assert_eq!(read(reg::ARBPRI, 4)[..4], [0; 4]);
        assert_eq!(read(reg::DFR, 4)[..4], [0xff; 4]);
        assert_eq!(read(reg::ICR2, 4)[..4], [0; 4]);

        // Writes must be aligned 4-byte writes.
        let mut a = enabled(3);
        assert_eq!(a.mmio_write(reg::TASKPRI, &[0x20, 0], 0), Ok(None));
        assert_eq!(
            a.mmio_write(reg::TASKPRI + 4, &[0x20, 0, 0, 0], 0),
            Ok(None)
        );
        assert_eq!(
            a.mmio_write(reg::TASKPRI, &[0x20, 0, 0, 0, 0, 0, 0, 0], 0),
            Ok(None)
        );
        assert_eq!(rd(&a, reg::TASKPRI), 0);
        wr(&mut a, reg::TASKPRI, 0x20);
        assert_eq!(rd(&a, reg::TASKPRI), 0x20);
        // Outside the window (the module checks the range first).
        assert_eq!(wr(&mut a, 0x1080, 0x30), None);
        assert_eq!(rd(&a, reg::TASKPRI), 0x20);

        // The page is not decoded when disabled or in x2APIC mode.
        let mut b = [0u8; 4];
        let base = a.apic_base();
        a.set_apic_base(base & !APICBASE_ENABLE, false).unwrap();
        assert_eq!(a.mmio_read(reg::ID, &mut b, 0), Err(MmioInactive));
        assert_eq!(a.mmio_write(reg::TASKPRI, &b, 0), Err(MmioInactive));
        a.set_apic_base(base, false).unwrap();
        to_x2apic(&mut a);
        assert_eq!(a.mmio_read(reg::ID, &mut b, 0), Err(MmioInactive));

        // The window follows the base.
        let a = lapic(0);
        assert!(a.mmio_in_range(0xfee0_0000) && a.mmio_in_range(0xfee0_0fff));
        assert!(!a.mmio_in_range(0xfee0_1000) && !a.mmio_in_range(0xfedf_ffff));
    }

    #[test]
    fn write_masks_per_register() {
        let mut a = enabled(1);
        let cases = [
            (reg::ID, 0xff00_0000),
            (reg::TASKPRI, 0xff),
            (reg::LDR, 0xff00_0000),
            (reg::DFR, 0xffff_ffff),
            (reg::SPIV, 0x3ff),
            (reg::ICR2, 0xff00_0000),
            (reg::TDCR, 0xb),
            // Mode bits 18:17 with TSC-deadline in CPUID (3 is reserved
            // but kept, as in C).
            (reg::LVTT, 0x7_10ff),
            (reg::LVTTHMR, 0x1_17ff),
            (reg::LVTPC, 0x1_17ff),
            (reg::LVT0, 0x1_f7ff),
            (reg::LVT1, 0x1_f7ff),
            (reg::LVTERR, 0x1_10ff),
        ];
        for (r, want) in cases {
            wr(&mut a, r, 0xffff_ffff);
            assert_eq!(rd(&a, r), want, "reg {r:#x}");
            wr(&mut a, reg::SPIV, 0x1ff);
        }
        wr(&mut a, reg::DFR, 0);
        assert_eq!(rd(&a, reg::DFR), 0x0fff_ffff);
        // ESR and the read-only registers ignore writes.
        let ro = [
            reg::ESR,
            reg::LVR,
            reg::PROCPRI,
            reg::ARBPRI,
            reg::ISR,
            reg::TMR + 0x70,
            reg::IRR + 0x10,
            reg::TMCCT,
            reg::LVTCMCI,
        ];
        for r in ro {
            let before = a.reg(r);
            assert_eq!(wr(&mut a, r, 0x1234_5678), None);
            assert_eq!(a.reg(r), before, "reg {r:#x}");
        }
    }

    #[test]
    fn software_disabled_apic_masks_lvts() {
        let mut a = lapic(1);
        // SDM 11.4.3: writes while software-disabled keep the mask bit...
        wr(&mut a, reg::LVT1, 0x400);
        assert_eq!(rd(&a, reg::LVT1), 0x1_0400);
        // ...but the NMI-watchdog state follows the value written, as in C.
        wr(&mut a, reg::LVT0, 0x400);
        assert_eq!(rd(&a, reg::LVT0), 0x1_0400);
        assert!(a.lvt0_in_nmi_mode());

        // Clearing the enable bit masks every entry.
        wr(&mut a, reg::SPIV, 0x1ff);
        wr(&mut a, reg::LVT0, 0x700);
        wr(&mut a, reg::LVTT, 0x2_0030);
        wr(&mut a, reg::LVTERR, 0xfe);
        assert!(!a.lvt0_in_nmi_mode());
        wr(&mut a, reg::SPIV, 0xff);
        assert_eq!(rd(&a, reg::LVT0), 0x1_0700);
        assert_eq!(rd(&a, reg::LVTT), 0x3_0030);
        assert_eq!(rd(&a, reg::LVTERR), 0x1_00fe);
    }

    #[test]
    fn timer_mode_bits_follow_cpuid() {
        let mut a = Lapic::new(0, LapicConfig::DEFAULT);
        a.reset(true, &FLAGS);
        wr(&mut a, reg::SPIV, 0x1ff);
        // No CPUID yet: only one-shot.
        wr(&mut a, reg::LVTT, 0x2_0030);
        assert_eq!(rd(&a, reg::LVTT), 0x30);
        a.set_guest_caps(GuestCaps {
            tsc_deadline: false,
            ..CAPS
        });
        wr(&mut a, reg::LVTT, 0x4_0030);
        assert_eq!(rd(&a, reg::LVTT), 0x30);
        wr(&mut a, reg::LVTT, 0x2_0030);
        assert_eq!(rd(&a, reg::LVTT), 0x2_0030);
        a.set_guest_caps(CAPS);
        wr(&mut a, reg::LVTT, 0x4_0030);
        assert_eq!(rd(&a, reg::LVTT), 0x4_0030);
    }

    #[test]
    fn cmci_adds_a_seventh_lvt() {
        let mut a = enabled(0);
        assert_eq!(wr(&mut a, reg::LVTCMCI, 0x12), None);
        assert_eq!(a.reg(reg::LVTCMCI), 0);
        a.set_cmci(true);
        assert_eq!(a.nr_lvt_entries(), 7);
        assert_eq!(rd(&a, reg::LVR), 0x0006_0014);
        assert_eq!(rd(&a, reg::LVTCMCI), 0x1_0000);
        wr(&mut a, reg::LVTCMCI, 0xffff_ffff);
        assert_eq!(rd(&a, reg::LVTCMCI), 0x1_17ff);
        wr(&mut a, reg::LVTCMCI, 0x2f2);
        wr(&mut a, reg::SPIV, 0xff);
        assert_eq!(rd(&a, reg::LVTCMCI), 0x1_02f2);
    }

    #[test]
    fn directed_eoi_bit_in_spiv_only_when_offered() {
        let cfg = LapicConfig {
            ioapic_in_kernel: false,
            ..LapicConfig::DEFAULT
        };
        let mut a = Lapic::new(0, cfg);
        a.reset(true, &FLAGS);
        a.set_guest_caps(CAPS);
        wr(&mut a, reg::SPIV, 0x11ff);
        assert_eq!(rd(&a, reg::SPIV), 0x11ff);
        assert!(a.suppress_eoi_broadcast());
        let mut b = enabled(0);
        wr(&mut b, reg::SPIV, 0x11ff);
        assert_eq!(rd(&b, reg::SPIV), 0x1ff);
    }

    #[test]
    fn one_scan_agrees_with_highest_pending_and_irr() {
        let mut a = enabled(0);
        assert_eq!(a.pending_and_highest_irr(), (None, None));
        assert!(a.accept_fixed(0x41, false));
        assert!(a.accept_fixed(0x72, false));
        for tpr in [0x00, 0x40, 0x71, 0x72, 0x80, 0xff] {
            wr(&mut a, reg::TASKPRI, tpr);
            assert_eq!(a.pending_and_highest_irr(), (a.highest_pending(), a.highest_irr()), "TPR {tpr:#x}");
        }
        wr(&mut a, reg::TASKPRI, 0);
        a.ack(0x72);
        assert_eq!(a.pending_and_highest_irr(), (a.highest_pending(), a.highest_irr()));
        assert_eq!(a.pending_and_highest_irr().1, Some(0x41));
    }

    #[test]
    fn ppr_from_tpr_and_isr() {
        let mut a = enabled(0);
        assert!(a.accept_fixed(0x41, false));
        assert_eq!(a.highest_pending(), Some(0x41));
        // SDM 11.8.3.1: deliverable only if its class exceeds PPR's class.
        for (tpr, pending) in [
            (0x40, None),
            (0x3f, Some(0x41)),
            (0x4f, None),
            (0x30, Some(0x41)),
        ] {
            wr(&mut a, reg::TASKPRI, tpr);
            assert_eq!(rd(&a, reg::PROCPRI), tpr);
            assert_eq!(a.highest_pending(), pending, "TPR {tpr:#x}");
        }
        wr(&mut a, reg::TASKPRI, 0);
        a.ack(0x41);
        assert_eq!(rd(&a, reg::IRR + 0x20), 0);
        assert_eq!(rd(&a, reg::ISR + 0x20), 1 << 1);
        assert_eq!(a.ppr(), 0x40);
        // Same class as in service: waits; higher class: preempts.
        a.accept_fixed(0x45, false);
        assert_eq!(a.highest_pending(), None);
        a.accept_fixed(0x50, false);
        assert_eq!(a.highest_pending(), Some(0x50));
        // TPR with a lower class than ISR: PPR is the ISR class.
        wr(&mut a, reg::TASKPRI, 0x35);
        assert_eq!(a.ppr(), 0x40);
        // TPR with a higher class: PPR is TPR, low bits included.
        wr(&mut a, reg::TASKPRI, 0x5a);
        assert_eq!(a.ppr(), 0x5a);
        assert_eq!(a.highest_pending(), None);
        // CR8 is TPR[7:4].
        a.set_cr8(0x1f);
        assert_eq!((a.tpr(), a.cr8(), a.ppr()), (0xf0, 0xf, 0xf0));
        a.set_cr8(0);
        assert_eq!(a.ppr(), 0x40);
        assert_eq!(
            a.eoi(),
            Some(Action::Eoi {
                vector: 0x41,
                level_triggered: false
            })
        );
        assert_eq!(a.ppr(), 0);
        assert_eq!(a.highest_pending(), Some(0x50));
    }

    #[test]
    fn eoi_clears_the_highest_isr_and_reports_the_trigger_mode() {
        let mut a = enabled(0);
        a.accept_fixed(0x30, false);
        a.ack(0x30);
        a.accept_fixed(0x80, true);
        assert_eq!(rd(&a, reg::TMR + 0x40), 1);
        a.ack(0x80);
        assert_eq!(
            wr(&mut a, reg::EOI, 0),
            Some(Action::Eoi {
                vector: 0x80,
                level_triggered: true
            })
        );
        assert!(a.pending_eoi(0x30) && !a.pending_eoi(0x80));
        assert_eq!(
            wr(&mut a, reg::EOI, 0),
            Some(Action::Eoi {
                vector: 0x30,
                level_triggered: false
            })
        );
        assert_eq!(wr(&mut a, reg::EOI, 0), None);
        // An edge interrupt on the same vector clears TMR again.
        a.accept_fixed(0x80, false);
        assert_eq!(rd(&a, reg::TMR + 0x40), 0);
        // x2APIC EOI is MSR 0x80b (write-only); C does not check the value.
        to_x2apic(&mut a);
        a.ack(0x80);
        assert_eq!(
            a.wrmsr(0x80b, 5, 0),
            Ok(Some(Action::Eoi {
                vector: 0x80,
                level_triggered: false
            }))
        );
        assert_eq!(a.rdmsr(0x80b, 0), Err(Gp));
    }

    #[test]
    fn acceptance_by_delivery_mode() {
        let mut a = lapic(0);
        // Software-disabled: fixed interrupts are dropped, NMI/INIT/SIPI are not.
        assert_eq!(a.accept(&fixed(0x40)), Delivered::Dropped);
        assert_eq!(a.highest_irr(), None);
        let mk = |mode, vector, level, level_triggered| Irq {
            vector,
            mode,
            level,
            level_triggered,
        };
        assert_eq!(
            a.accept(&mk(DeliveryMode::Nmi, 0, true, false)),
            Delivered::Nmi
        );
        assert_eq!(
            a.accept(&mk(DeliveryMode::Smi, 0, true, false)),
            Delivered::Smi
        );
        assert_eq!(
            a.accept(&mk(DeliveryMode::RemoteRead, 0, true, false)),
            Delivered::PvUnhalt
        );
        assert_eq!(
            a.accept(&mk(DeliveryMode::ExtInt, 0x20, true, false)),
            Delivered::Dropped
        );
        assert_eq!(
            a.accept(&mk(DeliveryMode::StartUp, 0x9a, true, false)),
            Delivered::Sipi
        );
        assert!(a.has_pending_init_or_sipi());
        // INIT drops a SIPI not yet taken; INIT de-assert does nothing.
        assert_eq!(
            a.accept(&mk(DeliveryMode::Init, 0, true, true)),
            Delivered::Init
        );
        assert_eq!(
            a.accept(&mk(DeliveryMode::Init, 0, false, true)),
            Delivered::Dropped
        );
        assert_eq!(a.take_sipi(), None);
        assert!(a.take_init() && !a.take_init());
        a.accept(&mk(DeliveryMode::StartUp, 0x9a, true, false));
        assert_eq!(a.take_sipi(), Some(0x9a));
        assert!(!a.has_pending_init_or_sipi());

        let mut a = enabled(0);
        // Level-triggered de-assert is dropped.
        assert_eq!(
            a.accept(&mk(DeliveryMode::Fixed, 0x40, false, true)),
            Delivered::Dropped
        );
        // Lowest priority counts arbitration attempts, even dropped ones.
        assert_eq!(
            a.accept(&mk(DeliveryMode::LowestPriority, 0x41, true, false)),
            Delivered::Irr
        );
        a.accept(&mk(DeliveryMode::LowestPriority, 0x42, false, true));
        assert_eq!(a.arb_prio(), 2);
        assert_eq!(a.highest_pending(), Some(0x41));
        // Hardware-disabled: nothing is pending.
        a.set_apic_base(0, false).unwrap();
        assert_eq!(a.highest_pending(), None);
        assert_eq!(lowest_prio_index(0x31, 4), Some(1));
        assert_eq!(lowest_prio_index(0x31, 0), None);
    }

    #[test]
    fn illegal_vectors_are_accepted_but_never_delivered() {
        let mut a = enabled(0);
        for v in 0..16 {
            assert!(a.accept_fixed(v, false));
        }
        assert_eq!(rd(&a, reg::IRR), 0xffff);
        assert_eq!(a.highest_irr(), Some(15));
        // Class 0 never exceeds PPR, so nothing is deliverable.
        assert_eq!(a.highest_pending(), None);
        // An ICR with an illegal vector is sent like any other, ESR stays 0.
        let i = ipi(wr(&mut a, reg::ICR, 0x4_4003));
        assert_eq!((i.irq.vector, i.dest.shorthand), (3, Shorthand::ToSelf));
        assert_eq!(rd(&a, reg::ESR), 0);
    }

    #[test]
    fn icr_decoding() {
        let mut a = enabled(0);
        wr(&mut a, reg::ICR2, 0x0a12_3456);
        assert_eq!(rd(&a, reg::ICR2), 0x0a00_0000);
        // Vector 0xfe, NMI, logical, BUSY, assert, level, all-including.
        let i = ipi(wr(&mut a, reg::ICR, 0x8_dcfe));
        assert_eq!(rd(&a, reg::ICR), 0x8_ccfe);
        let want = Ipi {
            irq: Irq {
                vector: 0xfe,
                mode: DeliveryMode::Nmi,
                level: true,
                level_triggered: true,
            },
            dest: Destination {
                id: 0x0a,
                logical: true,
                shorthand: Shorthand::AllIncludingSelf,
            },
        };
        assert_eq!(i, want);
        let modes = [
            DeliveryMode::Fixed,
            DeliveryMode::LowestPriority,
            DeliveryMode::Smi,
            DeliveryMode::RemoteRead,
            DeliveryMode::Nmi,
            DeliveryMode::Init,
            DeliveryMode::StartUp,
            DeliveryMode::ExtInt,
        ];
        for (m, mode) in modes.into_iter().enumerate() {
            assert_eq!(ipi(wr(&mut a, reg::ICR, (m as u32) << 8)).irq.mode, mode);
        }
        let shorthands = [
            Shorthand::None,
            Shorthand::ToSelf,
            Shorthand::AllIncludingSelf,
            Shorthand::AllExcludingSelf,
        ];
        for (s, sh) in shorthands.into_iter().enumerate() {
            let i = ipi(wr(&mut a, reg::ICR, (s as u32) << 18));
            assert_eq!(
                (i.dest.shorthand, i.dest.logical, i.irq.level),
                (sh, false, false)
            );
        }
    }

    /// The ICR values `test_icr()` of xapic_state_test writes.
    fn xapic_state_test_icrs(vcpu_id: u64) -> impl Iterator<Item = u64> {
        const ASSERT: u64 = 0x4000;
        let selfs = (0..=0xffu64).map(|i| 0x4_0000 | ASSERT | i);
        let fixed = (0..=0xffu64).map(|i| ASSERT | i);
        let others = (0..0xffu64)
            .filter(move |&i| i != vcpu_id)
            .flat_map(|i| (0..8u64).map(move |j| i << 56 | ASSERT | 0xff | j << 8));
        let allbut = (0..8u64).map(|i| 0xc_0000 | ASSERT | i << 8);
        let garbage = [0xa5a5_a5a5_a5a5_a5a5u64, 0x5a5a_5a5a_5a5a_5a5a, !0u64].map(|v| v & !0x700);
        selfs
            .chain(fixed)
            .chain(others)
            .chain(allbut)
            .chain(garbage)
    }

    /// xapic_state_test, xAPIC half: the guest reads the value to write from
    /// IRR (stuffed with KVM_SET_LAPIC), writes ICR2 then ICR, and KVM_GET_LAPIC
    /// shows ICR without BUSY and ICR2 bits 31:24 only.
    #[test]
    fn xapic_state_test_icr_xapic() {
        let mut a = enabled(0);
        let mut n = 0;
        for val in xapic_state_test_icrs(0) {
            for val in [val | u64::from(ICR_BUSY), val & !u64::from(ICR_BUSY)] {
                let mut page = a.get_state(0, &FLAGS).unwrap();
                set_page_reg(&mut page, reg::IRR, val as u32);
                set_page_reg(&mut page, reg::IRR + 0x10, (val >> 32) as u32);
                a.set_state(&page, 0, &FLAGS).unwrap();
                let got = u64::from(rd(&a, reg::IRR)) | u64::from(rd(&a, reg::IRR + 0x10)) << 32;
                assert_eq!(got, val);
                wr(&mut a, reg::ICR2, (val >> 32) as u32);
                let i = ipi(wr(&mut a, reg::ICR, val as u32));
                assert_eq!(i.dest.id, (val >> 56) as u32);
                assert_eq!(u64::from(i.irq.vector), val & 0xff);
                let page = a.get_state(0, &FLAGS).unwrap();
                let icr = u64::from(page_reg(&page, reg::ICR))
                    | u64::from(page_reg(&page, reg::ICR2)) << 32;
                let want = val & (0xffff_ffff | 0xff << 56) & !u64::from(ICR_BUSY);
                assert_eq!(icr, want, "ICR {val:#x}");
                n += 1;
            }
        }
        assert_eq!(n, 2 * (256 + 256 + 254 * 8 + 8 + 3));
    }

    /// xapic_state_test, x2APIC half: ICR is one 64-bit MSR; reserved bits
    /// #GP, otherwise it reads back as written and KVM_GET_LAPIC splits it.
    #[test]
    fn xapic_state_test_icr_x2apic() {
        let mut a = enabled(0);
        to_x2apic(&mut a);
        let mut faults = 0;
        for val in xapic_state_test_icrs(0) {
            let val = val & !u64::from(ICR_BUSY);
            let mut page = a.get_state(0, &FLAGS).unwrap();
            set_page_reg(&mut page, reg::IRR, val as u32);
            set_page_reg(&mut page, reg::IRR + 0x10, (val >> 32) as u32);
            a.set_state(&page, 0, &FLAGS).unwrap();
            let got = a.rdmsr(msr(reg::IRR), 0).unwrap()
                | a.rdmsr(msr(reg::IRR + 0x10), 0).unwrap() << 32;
            assert_eq!(got, val);
            if val & X2APIC_ICR_RESERVED != 0 {
                assert_eq!(a.wrmsr(0x830, val, 0), Err(Gp), "ICR {val:#x}");
                faults += 1;
                continue;
            }
            let i = ipi(a.wrmsr(0x830, val, 0).unwrap());
            assert_eq!(u64::from(i.dest.id), val >> 32);
            assert_eq!(a.rdmsr(0x830, 0), Ok(val));
            let page = a.get_state(0, &FLAGS).unwrap();
            let icr =
                u64::from(page_reg(&page, reg::ICR)) | u64::from(page_reg(&page, reg::ICR2)) << 32;
            assert_eq!(icr, val);
        }
        // The three garbage values have reserved bits.
        assert_eq!(faults, 3);
        // BUSY is reserved but cleared rather than faulted, as in C.
        a.wrmsr(0x830, 0x1030, 0).unwrap();
        assert_eq!(a.rdmsr(0x830, 0), Ok(0x30));
    }

    /// xapic_state_test `test_apic_id()`: with 32-bit IDs, user space
    /// toggling EXTD switches the ID between x2APIC and xAPIC format.
    #[test]
    fn xapic_state_test_apic_id() {
        let flags = VmFlags {
            x2apic_format: true,
            ..FLAGS
        };
        for id in 0..3 {
            let mut a = lapic(id);
            let base = a.apic_base();
            assert!(base & APICBASE_ENABLE != 0 && base & APICBASE_X2APIC == 0);
            for (b, want) in [
                (base, id << 24),
                (base | APICBASE_X2APIC, id),
                (base, id << 24),
            ] {
                a.set_apic_base(b, true).unwrap();
                let page = a.get_state(0, &flags).unwrap();
                assert_eq!(page_reg(&page, reg::ID), want);
            }
        }
    }

    /// xapic_state_test `test_x2apic_id()`: without 32-bit IDs the x2APIC ID
    /// in KVM_SET_LAPIC is ignored and KVM_GET_LAPIC shows it in bits 31:24.
    #[test]
    fn xapic_state_test_x2apic_id() {
        for id in [0, 5] {
            let mut a = lapic(id);
            a.set_apic_base(APICBASE_ENABLE | APICBASE_X2APIC, true)
                .unwrap();
            for i in 0..=0xffu32 {
                let mut page = [0u8; KVM_APIC_REG_SIZE];
                set_page_reg(&mut page, reg::ID, i << 24);
                set_page_reg(&mut page, reg::SPIV, SPIV_APIC_ENABLED);
                a.set_state(&page, 0, &FLAGS).unwrap();
                let page = a.get_state(0, &FLAGS).unwrap();
                assert_eq!(page_reg(&page, reg::ID), id << 24);
                assert_eq!(a.rdmsr(0x802, 0), Ok(u64::from(id)));
                assert_eq!(page_reg(&page, reg::LDR), x2apic_ldr(id));
            }
            // With 32-bit IDs a different ID is refused, after SPIV was taken.
            let flags = VmFlags {
                x2apic_format: true,
                ..FLAGS
            };
            let mut page = [0u8; KVM_APIC_REG_SIZE];
            set_page_reg(&mut page, reg::ID, id + 1);
            assert_eq!(a.set_state(&page, 0, &flags), Err(errno::EINVAL));
            assert!(!a.sw_enabled());
            set_page_reg(&mut page, reg::ID, id);
            assert!(a.set_state(&page, 0, &flags).is_ok());
        }
    }

    #[test]
    fn x2apic_msr_rules() {
        let mut a = enabled(0x1_0023);
        assert_eq!(a.rdmsr(0x802, 0), Err(Gp));
        assert_eq!(a.wrmsr(0x808, 0, 0), Err(Gp));
        to_x2apic(&mut a);
        // 32-bit ID and the LDR derived from it (SDM 11.12.10.2).
        assert_eq!(a.rdmsr(0x802, 0), Ok(0x1_0023));
        assert_eq!(a.rdmsr(0x80d, 0), Ok(0x1002_0008));
        assert_eq!(a.rdmsr(0x803, 0), Ok(0x5_0014));
        // Read-only: ID, LVR, PPR, LDR, ISR, TMR, IRR, TMCCT; absent: ARBPRI,
        // RRR, DFR, ICR2, reserved; write-only: EOI, SELF IPI.
        for r in [
            reg::ID,
            reg::LVR,
            reg::PROCPRI,
            reg::LDR,
            reg::ISR,
            reg::TMR,
            reg::IRR + 0x70,
            reg::TMCCT,
        ] {
            assert_eq!(a.wrmsr(msr(r), 0, 0), Err(Gp), "write {r:#x}");
            assert!(a.rdmsr(msr(r), 0).is_ok(), "read {r:#x}");
        }
        for r in [
            reg::ARBPRI,
            reg::RRR,
            reg::DFR,
            reg::ICR2,
            0x10,
            0x2a0,
            reg::LVTCMCI,
            0x3a0,
        ] {
            assert_eq!(a.rdmsr(msr(r), 0), Err(Gp), "read {r:#x}");
            assert_eq!(a.wrmsr(msr(r), 0, 0), Err(Gp), "write {r:#x}");
        }
        for m in [0x80b, 0x83f, 0x840, 0x8ff, 0x7ff, 0x900] {
            assert_eq!(a.rdmsr(m, 0), Err(Gp), "read {m:#x}");
        }
        assert_eq!(a.wrmsr(0x840, 0, 0), Err(Gp));
        // Bits 63:32 are reserved outside ICR; other reserved bits are masked.
        assert_eq!(a.wrmsr(0x808, 1 << 32, 0), Err(Gp));
        assert_eq!(a.wrmsr(0x808, 0x1ff, 0), Ok(None));
        assert_eq!(a.rdmsr(0x808, 0), Ok(0xff));
        // ESR must be written with 0.
        assert_eq!(a.wrmsr(0x828, 0, 0), Ok(None));
        assert_eq!(a.wrmsr(0x828, 1, 0), Err(Gp));
        // SELF IPI: vector only (SDM 11.12.11).
        let want = Ipi {
            irq: Irq {
                vector: 0x31,
                mode: DeliveryMode::Fixed,
                level: false,
                level_triggered: false,
            },
            dest: Destination {
                id: 0,
                logical: false,
                shorthand: Shorthand::ToSelf,
            },
        };
        assert_eq!(a.wrmsr(0x83f, 0x31, 0), Ok(Some(Action::Ipi(want))));
        assert_eq!(a.wrmsr(0x83f, 0x131, 0), Err(Gp));
        // ICR: 64 bits, the destination is the full high half.
        let i = ipi(a.wrmsr(0x830, 0x1_0023_0000_4031, 0).unwrap());
        assert_eq!((i.dest.id, i.irq.vector), (0x1_0023, 0x31));
        assert_eq!(a.rdmsr(0x830, 0), Ok(0x1_0023_0000_4031));
        // SELF IPI does not exist in xAPIC mode.
        let mut b = enabled(0);
        assert_eq!(wr(&mut b, reg::SELF_IPI, 0x31), None);
    }

    #[test]
    fn apic_base_state_machine() {
        use ApicMode::*;
        let base = |m: ApicMode| {
            APIC_DEFAULT_PHYS_BASE
                | match m {
                    Disabled => 0,
                    Invalid => APICBASE_X2APIC,
                    Xapic => APICBASE_ENABLE,
                    X2apic => APICBASE_ENABLE | APICBASE_X2APIC,
                }
        };
        // SDM 11.12.5.1, and what the C KVM lets user space do.
        for from in [Disabled, Xapic, X2apic] {
            for to in [Disabled, Invalid, Xapic, X2apic] {
                for host in [false, true] {
                    let mut a = lapic(1);
                    a.set_apic_base(base(from), true).unwrap();
                    let ok = match (from, to) {
                        (_, Invalid) => false,
                        (X2apic, Xapic) | (Disabled, X2apic) => host,
                        _ => true,
                    };
                    let r = a.set_apic_base(base(to), host);
                    assert_eq!(r.is_ok(), ok, "{from:?} -> {to:?} host {host}");
                    assert_eq!(a.mode(), if ok { to } else { from });
                }
            }
        }
        let mut a = lapic(1);
        for bit in (0..8).chain([9, 48, 63]) {
            assert_eq!(
                a.set_apic_base(0xfee0_0800 | 1 << bit, true),
                Err(Gp),
                "bit {bit}"
            );
        }
        // BSP is writable; the base may move below MAXPHYADDR.
        a.set_apic_base(0xfee0_0900, false).unwrap();
        a.set_apic_base(0x8000_fed0_0800, false).unwrap();
        assert_eq!(a.base_address(), 0x8000_fed0_0000);
        assert!(a.mmio_in_range(0x8000_fed0_0020));
        // EXTD is reserved without x2APIC in CPUID, for user space too.
        let mut b = lapic(1);
        b.set_guest_caps(GuestCaps {
            x2apic: false,
            ..CAPS
        });
        assert_eq!(b.set_apic_base(0xfee0_0c00, true), Err(Gp));

        // The ID follows: re-enabling resets a guest-written xAPIC ID, and
        // x2APIC -> disabled keeps the x2APIC one until re-enabled.
        let mut a = enabled(1);
        wr(&mut a, reg::ID, 0x0900_0000);
        a.set_apic_base(0xfee0_0000, false).unwrap();
        assert_eq!(a.reg(reg::ID), 0x0900_0000);
        a.set_apic_base(0xfee0_0800, false).unwrap();
        assert_eq!(a.reg(reg::ID), 0x0100_0000);
        to_x2apic(&mut a);
        a.set_apic_base(0xfee0_0000, false).unwrap();
        assert_eq!(a.reg(reg::ID), 1);
        a.set_apic_base(0xfee0_0800, false).unwrap();
        assert_eq!(a.reg(reg::ID), 0x0100_0000);
    }

    #[test]
    fn destination_matching() {
        let flags = FLAGS;
        let d = |id, logical, shorthand| Destination {
            id,
            logical,
            shorthand,
        };
        let phys = |id| d(id, false, Shorthand::None);
        let logi = |id| d(id, true, Shorthand::None);
        let m = |a: &Lapic, dest: Destination| a.matches_dest(&dest, Source::OtherApic, &flags);

        // Physical xAPIC, broadcast, and KVM's hotplug hack for IDs > 0xff.
        let a = lapic(3);
        assert!(m(&a, phys(3)) && !m(&a, phys(4)) && m(&a, phys(0xff)));
        assert!(!m(&a, phys(0x103)));
        let hot = lapic(0x103);
        assert!(m(&hot, phys(0x103)) && m(&hot, phys(3)) && !m(&hot, phys(0x104)));

        // Physical x2APIC; 0xff from a device is a broadcast unless the quirk
        // is disabled.
        let mut x = enabled(0x123);
        to_x2apic(&mut x);
        assert!(m(&x, phys(0x123)) && m(&x, phys(0xffff_ffff)) && !m(&x, phys(0x23)));
        assert!(!m(&x, phys(0xff)));
        assert!(x.matches_dest(&phys(0xff), Source::Device, &flags));
        let no_quirk = VmFlags {
            broadcast_quirk_disabled: true,
            ..flags
        };
        assert!(!x.matches_dest(&phys(0xff), Source::Device, &no_quirk));

        // Logical flat: any common bit of the 8-bit logical ID.
        let mut a = enabled(1);
        wr(&mut a, reg::LDR, 0x2400_0000);
        assert!(m(&a, logi(0x04)) && m(&a, logi(0x20)) && !m(&a, logi(0x01)) && m(&a, logi(0xff)));
        // Logical cluster: cluster in bits 7:4, members in 3:0.
        wr(&mut a, reg::DFR, 0x0fff_ffff);
        wr(&mut a, reg::LDR, 0x3200_0000);
        assert!(m(&a, logi(0x32)) && m(&a, logi(0x3f)) && !m(&a, logi(0x22)) && !m(&a, logi(0x31)));
        // A DFR model that is neither matches nothing but broadcast.
        a.set(reg::DFR, 0x5fff_ffff);
        assert!(!m(&a, logi(0x32)) && m(&a, logi(0xff)));

        // x2APIC logical: cluster in 31:16, one bit of 16 below.
        let mut x = enabled(0x23);
        to_x2apic(&mut x);
        assert!(
            m(&x, logi(0x2_0008))
                && m(&x, logi(0x2_000f))
                && !m(&x, logi(0x3_0008))
                && !m(&x, logi(0x2_0004))
        );

        // Shorthands.
        for (sh, this, other, dev) in [
            (Shorthand::ToSelf, true, false, false),
            (Shorthand::AllIncludingSelf, true, true, true),
            (Shorthand::AllExcludingSelf, false, true, true),
        ] {
            let dest = d(0x55, false, sh);
            assert_eq!(x.matches_dest(&dest, Source::ThisApic, &flags), this);
            assert_eq!(x.matches_dest(&dest, Source::OtherApic, &flags), other);
            assert_eq!(x.matches_dest(&dest, Source::Device, &flags), dev);
        }
    }

    #[test]
    fn local_delivery_lint_and_pmi() {
        let mut a = enabled(1);
        assert!(!a.accepts_pic_intr());
        wr(&mut a, reg::LVT0, 0x700);
        assert!(a.accepts_pic_intr());
        assert_eq!(a.local_deliver(Lvt::Lint0), Delivered::Dropped);
        wr(&mut a, reg::LVT0, 0x400);
        assert!(a.lvt0_in_nmi_mode() && !a.accepts_pic_intr());
        assert_eq!(a.local_deliver(Lvt::Lint0), Delivered::Nmi);
        wr(&mut a, reg::LVT0, 0x1_0400);
        assert!(!a.lvt0_in_nmi_mode());
        assert_eq!(a.local_deliver(Lvt::Lint0), Delivered::Dropped);
        // Level-triggered LINT1 sets TMR.
        wr(&mut a, reg::LVT1, 0x8061);
        assert_eq!(a.local_deliver(Lvt::Lint1), Delivered::Irr);
        assert_eq!(rd(&a, reg::TMR + 0x30), 1 << 1);
        // A delivered PMI masks LVTPC on Intel-compatible guests.
        wr(&mut a, reg::LVTPC, 0xfe);
        assert_eq!(a.local_deliver(Lvt::PerfCounter), Delivered::Irr);
        assert_eq!(rd(&a, reg::LVTPC), 0x1_00fe);
        assert_eq!(a.local_deliver(Lvt::PerfCounter), Delivered::Dropped);
        // Hardware-disabled: PIC interrupts go straight to the CPU.
        a.set_apic_base(0, false).unwrap();
        assert!(a.accepts_pic_intr());
        assert_eq!(a.local_deliver(Lvt::Lint1), Delivered::Dropped);
    }

    #[test]
    fn one_shot_timer() {
        let mut a = enabled(0);
        wr(&mut a, reg::LVTT, 0x30);
        wr(&mut a, reg::TDCR, 0xb);
        assert_eq!(a.divide_count(), 1);
        let t0 = 5000;
        assert_eq!(
            wr_at(&mut a, reg::TMICT, 1000, t0),
            Some(Action::Timer(HostTimer::At { expires_ns: 6000 }))
        );
        // remaining % period, as C computes it: 0 at the very start.
        assert_eq!(a.tmcct(t0), 0);
        assert_eq!(a.tmcct(t0 + 1), 999);
        assert_eq!(rd_at(&a, reg::TMCCT, t0 + 500), 500);
        assert_eq!(a.tmcct(t0 + 2000), 0);
        let e = a.timer_fired(6000);
        assert_eq!(
            e,
            TimerExpiry {
                delivered: Delivered::Irr,
                next: HostTimer::Off
            }
        );
        assert_eq!(a.highest_pending(), Some(0x30));
        assert_eq!(a.tmcct(5500), 0);
        // A stale expiry is ignored.
        assert_eq!(a.timer_fired(7000).delivered, Delivered::Dropped);
        // TMICT 0 stops the timer.
        wr_at(&mut a, reg::TMICT, 1000, 10_000);
        assert_eq!(
            wr_at(&mut a, reg::TMICT, 0, 10_100),
            Some(Action::Timer(HostTimer::Off))
        );
        assert_eq!(a.tmcct(10_200), 0);
    }

    #[test]
    fn periodic_timer() {
        let mut a = enabled(0);
        wr(&mut a, reg::LVTT, 0x2_0040);
        // Divide by 2, 1 ns bus cycle: 500000 counts are 1 ms.
        assert_eq!(
            wr_at(&mut a, reg::TMICT, 500_000, 0),
            Some(Action::Timer(HostTimer::At {
                expires_ns: 1_000_000
            }))
        );
        let e = a.timer_fired(1_000_000);
        assert_eq!(
            e.next,
            HostTimer::At {
                expires_ns: 2_000_000
            }
        );
        assert_eq!(a.tmcct(1_500_000), 250_000);
        // Late by several periods: no catching up.
        assert_eq!(
            a.timer_fired(5_300_000).next,
            HostTimer::At {
                expires_ns: 5_300_000
            }
        );
        // Masked: no interrupt, still periodic.
        wr(&mut a, reg::LVTT, 0x3_0040);
        let e = a.timer_fired(5_300_000);
        assert_eq!(
            (e.delivered, e.next),
            (
                Delivered::Dropped,
                HostTimer::At {
                    expires_ns: 6_300_000
                }
            )
        );
        // Periods below min_timer_period are raised to it.
        wr(&mut a, reg::LVTT, 0x2_0040);
        assert_eq!(
            wr_at(&mut a, reg::TMICT, 10, 0),
            Some(Action::Timer(HostTimer::At {
                expires_ns: 200_000
            }))
        );
        assert_eq!(a.timer_period_ns(), 200_000);
        // A one-shot switched to periodic is limited too.
        wr(&mut a, reg::LVTT, 0x40);
        wr_at(&mut a, reg::TMICT, 10, 0);
        assert_eq!(a.timer_period_ns(), 20);
        wr(&mut a, reg::LVTT, 0x2_0040);
        assert_eq!(a.timer_period_ns(), 200_000);
    }

    #[test]
    fn divide_configuration() {
        let mut a = enabled(0);
        // apic_bus_clock_test's table; bit 2 is reserved.
        for (tdcr, div) in [
            (0x0, 2),
            (0x1, 4),
            (0x2, 8),
            (0x3, 16),
            (0x8, 32),
            (0x9, 64),
            (0xa, 128),
            (0xb, 1),
            (0x4, 2),
            (0xf, 1),
        ] {
            wr(&mut a, reg::TDCR, tdcr);
            assert_eq!(a.divide_count(), div, "TDCR {tdcr:#x}");
        }
        // A running timer keeps its count when the divisor changes.
        wr(&mut a, reg::LVTT, 0x30);
        wr_at(&mut a, reg::TMICT, 1000, 0);
        assert_eq!(a.tmcct(400), 600);
        assert_eq!(
            wr_at(&mut a, reg::TDCR, 0, 400),
            Some(Action::Timer(HostTimer::At { expires_ns: 1600 }))
        );
        assert_eq!(a.tmcct(400), 600);
        assert_eq!(wr_at(&mut a, reg::TDCR, 0, 500), None);
        // And the other way: divide by 2 -> 1 halves the time left.
        wr_at(&mut a, reg::TMICT, 1000, 0);
        assert_eq!(a.tmcct(400), 800);
        assert_eq!(
            wr_at(&mut a, reg::TDCR, 0xb, 400),
            Some(Action::Timer(HostTimer::At { expires_ns: 1200 }))
        );
        assert_eq!(a.tmcct(400), 800);
    }

    /// apic_bus_clock_test: TMICT ~0, wait, TMCCT counts at the configured
    /// bus frequency times the divisor, in xAPIC and x2APIC mode.
    #[test]
    fn apic_bus_clock_test() {
        let apic_hz: u64 = 25_000_000;
        let cfg = LapicConfig {
            bus_cycle_ns: 1_000_000_000 / apic_hz,
            ..LapicConfig::DEFAULT
        };
        assert!(LapicConfig::bus_cycle_ns_valid(cfg.bus_cycle_ns));
        for x2apic in [false, true] {
            let mut a = Lapic::new(0, cfg);
            a.reset(true, &FLAGS);
            a.set_guest_caps(CAPS);
            if x2apic {
                to_x2apic(&mut a);
            } else {
                wr(&mut a, reg::SPIV, 0x1ff);
            }
            let write = |a: &mut Lapic, r: u32, v: u32, now: u64| {
                if x2apic {
                    a.wrmsr(msr(r), u64::from(v), now).unwrap();
                } else {
                    wr_at(a, r, v, now);
                }
            };
            write(&mut a, reg::LVTT, 0x1_0000, 0);
            for (tdcr, div) in [
                (0x0, 2u64),
                (0x1, 4),
                (0x2, 8),
                (0x3, 16),
                (0x8, 32),
                (0x9, 64),
                (0xa, 128),
                (0xb, 1),
            ] {
                let t0 = 1_000_000_000;
                let t1 = t0 + 100_000_000;
                write(&mut a, reg::TDCR, tdcr, t0);
                write(&mut a, reg::TMICT, !0, t0);
                let tmcct = if x2apic {
                    a.rdmsr(msr(reg::TMCCT), t1).unwrap() as u32
                } else {
                    rd_at(&a, reg::TMCCT, t1)
                };
                write(&mut a, reg::TMICT, 0, t1);
                let freq = u64::from(!0u32 - tmcct) * div * 1_000_000_000 / (t1 - t0);
                assert!(
                    freq.abs_diff(apic_hz) <= apic_hz / 100,
                    "{freq} Hz, div {div}"
                );
            }
        }
        assert!(!LapicConfig::bus_cycle_ns_valid(0));
        let max = u64::MAX / (u64::from(u32::MAX) * 128);
        assert!(LapicConfig::bus_cycle_ns_valid(max) && !LapicConfig::bus_cycle_ns_valid(max + 1));
    }

    #[test]
    fn tsc_deadline_timer() {
        let mut a = enabled(0);
        assert_eq!(a.set_tsc_deadline(1000), None);
        assert_eq!(a.tsc_deadline(), 0);
        wr(&mut a, reg::LVTT, 0x30);
        wr_at(&mut a, reg::TMICT, 100, 0);
        // Entering deadline mode stops the timer and clears TMICT.
        assert_eq!(
            wr(&mut a, reg::LVTT, 0x4_0030),
            Some(Action::Timer(HostTimer::Off))
        );
        assert_eq!(rd(&a, reg::TMICT), 0);
        // TMICT is ignored and TMCCT reads 0 (SDM 11.5.4.1).
        assert_eq!(wr(&mut a, reg::TMICT, 100), None);
        assert_eq!(rd(&a, reg::TMICT), 0);
        assert_eq!(
            a.set_tsc_deadline(1000),
            Some(HostTimer::TscDeadline { tsc: 1000 })
        );
        assert_eq!(a.tsc_deadline(), 1000);
        assert_eq!(rd_at(&a, reg::TMCCT, 5), 0);
        let e = a.timer_fired(0);
        assert_eq!(
            e,
            TimerExpiry {
                delivered: Delivered::Irr,
                next: HostTimer::Off
            }
        );
        assert_eq!(a.tsc_deadline(), 0);
        a.set_tsc_deadline(2000);
        assert_eq!(a.set_tsc_deadline(0), Some(HostTimer::Off));
        // Leaving deadline mode clears the deadline.
        a.set_tsc_deadline(3000);
        assert_eq!(
            wr(&mut a, reg::LVTT, 0x30),
            Some(Action::Timer(HostTimer::Off))
        );
        wr(&mut a, reg::LVTT, 0x4_0030);
        assert_eq!(a.tsc_deadline(), 0);
    }

    #[test]
    fn get_set_lapic_round_trip_and_fixups() {
        let mut a = enabled(2);
        wr(&mut a, reg::TASKPRI, 0x20);
        wr(&mut a, reg::DFR, 0x0fff_ffff);
        wr(&mut a, reg::LDR, 0x1200_0000);
        wr(&mut a, reg::LVT1, 0x400);
        wr(&mut a, reg::LVTT, 0x2_0031);
        a.accept_fixed(0x61, true);
        a.ack(0x61);
        a.accept_fixed(0x71, false);
        // Divide by 2: 1000000 counts are 2 ms.
        wr_at(&mut a, reg::TMICT, 1_000_000, 0);
        let page = a.get_state(500_000, &FLAGS).unwrap();
        assert_eq!(page_reg(&page, reg::TMCCT), 750_000);
        assert_eq!(page_reg(&page, reg::PROCPRI), 0x60);

        let mut b = lapic(2);
        let t = b.set_state(&page, 10_000_000, &FLAGS).unwrap();
        assert_eq!(
            t,
            HostTimer::At {
                expires_ns: 11_500_000
            }
        );
        assert_eq!(b.get_state(10_000_000, &FLAGS).unwrap(), page);
        assert_eq!(b.reg(reg::TMCCT), 0);
        assert_eq!(b.highest_pending(), Some(0x71));
        assert_eq!(
            b.eoi(),
            Some(Action::Eoi {
                vector: 0x61,
                level_triggered: true
            })
        );

        // No masking on restore, but LVR and PPR are recomputed.
        let mut p = page;
        set_page_reg(&mut p, reg::LVR, 0xdead_beef);
        set_page_reg(&mut p, reg::PROCPRI, 0xee);
        set_page_reg(&mut p, reg::SPIV, 0xffff_ffff);
        set_page_reg(&mut p, reg::ARBPRI, 0x77);
        set_page_reg(&mut p, reg::LVT0, 0x400);
        b.set_state(&p, 0, &FLAGS).unwrap();
        assert_eq!(rd(&b, reg::LVR), 0x5_0014);
        assert_eq!(rd(&b, reg::PROCPRI), 0x60);
        assert_eq!(rd(&b, reg::SPIV), 0xffff_ffff);
        assert_eq!(rd(&b, reg::ARBPRI), 0);
        assert_eq!(b.reg(reg::ARBPRI), 0x77);
        assert!(b.lvt0_in_nmi_mode());

        // TMCCT above TMICT restarts a full period; a one-shot at 0 fires at once.
        set_page_reg(&mut p, reg::TMCCT, 2_000_000);
        assert_eq!(
            b.set_state(&p, 0, &FLAGS),
            Ok(HostTimer::At {
                expires_ns: 2_000_000
            })
        );
        set_page_reg(&mut p, reg::LVTT, 0x31);
        set_page_reg(&mut p, reg::TMCCT, 0);
        assert_eq!(
            b.set_state(&p, 100, &FLAGS),
            Ok(HostTimer::At { expires_ns: 100 })
        );
        set_page_reg(&mut p, reg::TMICT, 0);
        assert_eq!(b.set_state(&p, 100, &FLAGS), Ok(HostTimer::Off));
    }

    /// The APIC parts of state_test's save/restore (vcpu_save_state() then
    /// vcpu_load_state() into a new vCPU): apic_base and CR8 through
    /// KVM_GET/SET_SREGS, IA32_APIC_BASE and IA32_TSC_DEADLINE through
    /// KVM_GET/SET_MSRS, all host-initiated.
    #[test]
    fn state_test_save_restore() {
        for x2apic in [false, true] {
            let mut a = enabled(0);
            if x2apic {
                to_x2apic(&mut a);
            }
            a.set_cr8(5);
            let (base, cr8, deadline) = (a.apic_base(), a.cr8(), a.tsc_deadline());
            let page = a.get_state(0, &FLAGS).unwrap();

            let mut b = lapic(0);
            b.set_apic_base(base, true).unwrap();
            b.set_cr8(cr8);
            assert_eq!(b.set_tsc_deadline(deadline), None);
            b.set_state(&page, 0, &FLAGS).unwrap();
            assert_eq!(
                (b.apic_base(), b.cr8(), b.tpr(), b.tsc_deadline()),
                (base, 5, 0x50, 0)
            );
            assert_eq!(b.get_state(0, &FLAGS).unwrap(), page);
        }
    }
}
