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
/// `MSR_IA32_APICBASE`.
pub(crate) const MSR_IA32_APICBASE: u32 = 0x1b;
/// `MSR_IA32_TSC_DEADLINE` (SDM 11.5.4.1).
pub(crate) const MSR_IA32_TSC_DEADLINE: u32 = 0x6e0;
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
    /// bytes; SDM 11.8.4, Figure 11-20).
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
        (0..8u32).rev().find_map(|i| {
            let w = self.get(base + i * 0x10);
            (w != 0).then(|| (i * 32 + 31 - w.leading_zeros()) as u8)
        })
    }

    // ---- configuration ----

    /// The vCPU id, which is also the x2APIC ID.
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
    /// disabled -> x2APIC (SDM 11.12.5, Figure 11-27); user space may.
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
        if align + len > 4 || offset > 0x3f0 || self.readable_reg_mask() & (1 << (offset >> 4)) == 0
        {
            return None;
        }
        let v = self.read_value(offset & !0xf, now_ns) >> (8 * align);
        match len {
            1 => Some(v & 0xff),
            2 => Some(v & 0xffff),
            4 => Some(v),
            _ => None,
        }
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
        if offset & 0xf != 0 {
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
    pub(crate) fn tpr(&self) -> u8 {
        self.get(reg::TASKPRI) as u8
    }

    /// The processor priority register.
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

    /// The highest IRR vector regardless of priority (`kvm_lapic_find_highest_irr()`).
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
    pub(crate) fn arb_prio(&self) -> u32 {
        self.arb_prio
    }

    /// Takes a latched INIT (`KVM_APIC_INIT`).
    pub(crate) fn take_init(&mut self) -> bool {
        core::mem::take(&mut self.pending_init)
    }

    /// Takes a latched SIPI vector (`KVM_APIC_SIPI`).
    pub(crate) fn take_sipi(&mut self) -> Option<u8> {
        self.pending_sipi.take()
    }

    /// `kvm_apic_has_pending_init_or_sipi()`.
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
    /// Intel-compatible guests (SDM 19.6.3, "LVT PC mask on PMI").
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
        let left = u128::from(self.target_ns.saturating_sub(now_ns));
        let left = left * u128::from(self.divide_count) / u128::from(old);
        self.target_ns = now_ns.saturating_add(u64::try_from(left).unwrap_or(u64::MAX));
        Some(self.restart_timer())
    }

    /// TMCCT at `now_ns` (`apic_get_tmcct()`): counts left in the current
    /// period, 0 once a one-shot expired or with TMICT 0 (SDM 11.5.4).
    pub(crate) fn tmcct(&self, now_ns: u64) -> u32 {
        if self.get(reg::TMICT) == 0 || self.period_ns == 0 {
            return 0;
        }
        let ns = self.target_ns.saturating_sub(now_ns) % self.period_ns;
        // The C KVM truncates to 32 bits as well.
        (ns / self
            .cfg
            .bus_cycle_ns
            .saturating_mul(u64::from(self.divide_count))) as u32
    }

    /// The host timer this APIC currently needs.
    pub(crate) fn host_timer(&self) -> HostTimer {
        self.host_timer
    }

    /// The timer period in ns (0 when stopped; never below the minimum when
    /// periodic).
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
        for (chunk, r) in page.chunks_exact_mut(4).zip(regs) {
            chunk.copy_from_slice(&r.to_le_bytes());
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
        for (r, chunk) in regs.iter_mut().zip(page.chunks_exact(4)) {
            *r = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
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
