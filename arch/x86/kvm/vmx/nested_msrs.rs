// SPDX-License-Identifier: GPL-2.0

//! The VMX capability MSRs nested VMX will offer L1 (`IA32_VMX_BASIC` ..
//! `IA32_VMX_VMFUNC`, 0x480-0x491), their values and the rules by which
//! user space may restore them (C: `struct nested_vmx_msrs`,
//! `nested_vmx_setup_ctls_msrs()`, `vmx_get_vmx_msr()`, `vmx_set_vmx_msr()`
//! of `arch/x86/kvm/vmx/nested.c`, `nested_vmx_cr_fixed1_bits_update()` of
//! `vmx.c`; SDM vol. 3D, appendix A).
//!
//! **Not wired into the module.** This file is compiled only by the host-test
//! crate (`tools/testing/kvm-rs-host`), not by `kvm.ko`: kvm-rs does not
//! emulate VMXON, VMPTRLD, VMREAD/VMWRITE, VMLAUNCH/VMRESUME nor run L2
//! guests, so offering VMX in `KVM_GET_SUPPORTED_CPUID` or these MSRs through
//! `KVM_GET_MSRS` would advertise a feature that does not exist. It becomes
//! part of the module together with nested VMX (plan:
//! `Documentation/virt/kvm-rs/vmx.rst`, "Nested VMX: plan").
//!
//! The feature set is the one nested VMX can emulate with L2 in L1's
//! guest-physical address space, mapped by L0's own EPT: no nested EPT, no
//! VPID, no APIC virtualization (not even the TPR shadow), no posted
//! interrupts, no preemption timer, no VMCS shadowing, no VM functions, no
//! activity states other than active. What remains are controls whose
//! effect is an exit to reflect to L1 or state to load and save, each
//! offered only if L0's hardware allows it too (the hardware MSR values are
//! the input of [`NestedVmxMsrs::setup`]).

use super::vmcs::{entry_ctl, exit_ctl, msr, pin, proc, proc2};

/// `IA32_VMX_VMCS_ENUM`.
pub(crate) const IA32_VMX_VMCS_ENUM: u32 = 0x48a;
/// `IA32_VMX_VMFUNC`.
pub(crate) const IA32_VMX_VMFUNC: u32 = 0x491;
/// The first and last capability MSR (C: `KVM_FIRST_EMULATED_VMX_MSR`,
/// `KVM_LAST_EMULATED_VMX_MSR`).
pub(crate) const FIRST: u32 = msr::IA32_VMX_BASIC;
/// See [`FIRST`].
pub(crate) const LAST: u32 = IA32_VMX_VMFUNC;

/// kvm-rs's VMCS12 revision identifier: what L1 writes at the start of its
/// VMXON region and of each VMCS it gives to VMPTRLD. Its own number, not
/// the C KVM's (`0x11e57ed0`), since the layout behind it will be kvm-rs's;
/// bit 31 is clear (it would mean a shadow VMCS). "KRS1". Open: the nested
/// state ABI carries VMCS12 in the C KVM's layout (vmx.rst, "Nested VMX:
/// plan", step 1), which may argue for the C KVM's layout and number.
pub(crate) const VMCS12_REVISION: u32 = 0x4b52_5331;
/// Bytes L1 allocates for its VMXON region and a VMCS: a page, as in C.
pub(crate) const VMCS12_SIZE: u32 = 4096;

/// `IA32_VMX_BASIC` bits and fields (SDM A.1).
pub(crate) mod basic {
    /// Revision identifier, bits 30:0.
    pub(crate) const REVISION_MASK: u64 = 0x7fff_ffff;
    /// Region size, bits 44:32.
    pub(crate) const SIZE_SHIFT: u32 = 32;
    /// Width of the region-size field.
    pub(crate) const SIZE_MASK: u64 = 0x1fff;
    /// Physical addresses of VMX structures limited to 32 bits (bit 48).
    pub(crate) const ADDR_32BIT: u64 = 1 << 48;
    /// Dual-monitor treatment of SMIs and SMM (bit 49).
    pub(crate) const DUAL_MONITOR: u64 = 1 << 49;
    /// Memory type of VMX structures, bits 53:50.
    pub(crate) const MEM_TYPE_SHIFT: u32 = 50;
    /// INS/OUTS exits report the instruction information (bit 54).
    pub(crate) const INS_OUTS: u64 = 1 << 54;
    /// The `IA32_VMX_TRUE_*_CTLS` MSRs exist (bit 55).
    pub(crate) const TRUE_CTLS: u64 = 1 << 55;
    /// Bits a restore may clear but not set (C: `feature_bits`).
    pub(crate) const FEATURES: u64 = DUAL_MONITOR | INS_OUTS | TRUE_CTLS;
    /// Reserved bits: 31, 47:45, 63:56 (C: `reserved_bits`).
    pub(crate) const RESERVED: u64 = (0xff << 56) | (0x7 << 45) | (1 << 31);
}

/// `IA32_VMX_MISC` bits and fields (SDM A.6).
pub(crate) mod misc {
    /// VM exits store EFER.LMA into the "IA-32e mode guest" entry control (bit 5).
    pub(crate) const SAVE_EFER_LMA: u64 = 1 << 5;
    /// Activity state HLT (bit 6).
    pub(crate) const ACTIVITY_HLT: u64 = 1 << 6;
    /// Activity state shutdown (bit 7).
    pub(crate) const ACTIVITY_SHUTDOWN: u64 = 1 << 7;
    /// Activity state wait-for-SIPI (bit 8).
    pub(crate) const ACTIVITY_WAIT_SIPI: u64 = 1 << 8;
    /// Intel PT in VMX operation (bit 14).
    pub(crate) const INTEL_PT: u64 = 1 << 14;
    /// RDMSR of `IA32_SMBASE` in SMM (bit 15).
    pub(crate) const RDMSR_IN_SMM: u64 = 1 << 15;
    /// VMXOFF unblocks SMIs (bit 28).
    pub(crate) const VMXOFF_BLOCK_SMI: u64 = 1 << 28;
    /// VMWRITE may write the VM-exit information fields (bit 29).
    pub(crate) const VMWRITE_ANY_FIELD: u64 = 1 << 29;
    /// Event injection with instruction length 0 (bit 30).
    pub(crate) const ZERO_LEN_INS: u64 = 1 << 30;
    /// Bits a restore may clear but not set (C: `feature_bits`).
    pub(crate) const FEATURES: u64 = SAVE_EFER_LMA
        | ACTIVITY_HLT
        | ACTIVITY_SHUTDOWN
        | ACTIVITY_WAIT_SIPI
        | INTEL_PT
        | RDMSR_IN_SMM
        | VMXOFF_BLOCK_SMI
        | VMWRITE_ANY_FIELD
        | ZERO_LEN_INS;
    /// Reserved bits: 31 and 13:9 (C: `reserved_bits`).
    pub(crate) const RESERVED: u64 = (1 << 31) | (0x1f << 9);

    /// VMX-preemption timer rate (bits 4:0).
    pub(crate) const fn timer_rate(v: u64) -> u64 {
        v & 0x1f
    }
    /// Number of CR3-target values (bits 24:16).
    pub(crate) const fn cr3_targets(v: u64) -> u64 {
        (v >> 16) & 0x1ff
    }
    /// MSR-list size, 512 * (N + 1) entries (bits 27:25).
    pub(crate) const fn max_msr_list(v: u64) -> u64 {
        (v >> 25) & 0x7
    }
    /// MSEG revision identifier (bits 63:32).
    pub(crate) const fn mseg_revision(v: u64) -> u64 {
        v >> 32
    }
}

/// The "default1" controls (SDM A.2): bits the non-TRUE capability MSRs
/// report as must-be-1, whatever the TRUE ones say (C:
/// `*_ALWAYSON_WITHOUT_TRUE_MSR`).
pub(crate) mod default1 {
    /// Pin-based: bits 1, 2 and 4.
    pub(crate) const PIN: u32 = (1 << 1) | (1 << 2) | (1 << 4);
    /// Primary processor-based: bits 1, 4-6, 8, 13-16 and 26.
    pub(crate) const PROC: u32 = (1 << 1) | (0x7 << 4) | (1 << 8) | (0xf << 13) | (1 << 26);
    /// VM-exit: bits 0-8, 10, 11, 13, 14, 16 and 17.
    pub(crate) const EXIT: u32 = 0x1ff | (0x3 << 10) | (0x3 << 13) | (0x3 << 16);
    /// VM-entry: bits 0-8 and 12.
    pub(crate) const ENTRY: u32 = 0x1ff | (1 << 12);
}

/// The controls offered to L1, before the intersection with L0's hardware.
pub(crate) mod offered {
    use super::{entry_ctl, exit_ctl, pin, proc, proc2};

    /// Pin-based: external interrupts and NMIs cause exits (to reflect to
    /// L1, or to take in L0 and inject into L1), virtual NMIs.
    pub(crate) const PIN: u32 = pin::EXT_INTR_EXITING | pin::NMI_EXITING | pin::VIRTUAL_NMIS;
    /// Primary processor-based: exits to reflect, TSC offsetting (L2's
    /// offset is L1's plus L1's offset for L2), I/O and MSR bitmaps (L1's
    /// bitmaps read by L0 on an exit), and the secondary controls. kvm-rs's
    /// own backend needs MWAIT, MONITOR and RDPMC exiting, so they are
    /// offered for kvm-rs as L1. Not offered: TPR shadow, monitor trap flag,
    /// PAUSE exiting.
    pub(crate) const PROC: u32 = proc::INTR_WINDOW_EXITING
        | proc::NMI_WINDOW_EXITING
        | proc::USE_TSC_OFFSETTING
        | proc::HLT_EXITING
        | proc::INVLPG_EXITING
        | proc::MWAIT_EXITING
        | proc::RDPMC_EXITING
        | proc::RDTSC_EXITING
        | proc::CR3_LOAD_EXITING
        | proc::CR3_STORE_EXITING
        | proc::CR8_LOAD_EXITING
        | proc::CR8_STORE_EXITING
        | proc::MOV_DR_EXITING
        | proc::UNCOND_IO_EXITING
        | proc::USE_IO_BITMAPS
        | proc::USE_MSR_BITMAPS
        | proc::MONITOR_EXITING
        | proc::SECONDARY_CONTROLS;
    /// Secondary: descriptor-table and WBINVD exiting, both exits to
    /// reflect. Not EPT, VPID, unrestricted guest (which needs EPT), APIC
    /// virtualization, RDTSCP, INVPCID, XSAVES (kvm-rs's guests have none of
    /// them), VMCS shadowing, VM functions.
    pub(crate) const PROC2: u32 = proc2::DESC_TABLE_EXITING | proc2::WBINVD_EXITING;
    /// VM-exit: 64-bit host, save and load PAT and EFER. Not
    /// acknowledge-interrupt-on-exit (which the C kvm-intel needs as L1),
    /// preemption timer, PERF_GLOBAL_CTRL, BNDCFGS.
    pub(crate) const EXIT: u32 = exit_ctl::HOST_ADDR_SPACE_SIZE
        | exit_ctl::SAVE_IA32_PAT
        | exit_ctl::LOAD_IA32_PAT
        | exit_ctl::SAVE_IA32_EFER
        | exit_ctl::LOAD_IA32_EFER;
    /// VM-entry: IA-32e mode guest, load PAT and EFER.
    pub(crate) const ENTRY: u32 = entry_ctl::IA32E_MODE | entry_ctl::LOAD_IA32_PAT | entry_ctl::LOAD_IA32_EFER;

    /// Default1 controls L1 may clear in the TRUE MSRs: CR3 load/store
    /// exiting (L0 uses EPT and never needs them), saving and loading the
    /// debug controls (C makes the same choices).
    pub(crate) const PROC_FREE: u32 = proc::CR3_LOAD_EXITING | proc::CR3_STORE_EXITING;
    /// See [`PROC_FREE`].
    pub(crate) const EXIT_FREE: u32 = exit_ctl::SAVE_DEBUG_CONTROLS;
    /// See [`PROC_FREE`].
    pub(crate) const ENTRY_FREE: u32 = entry_ctl::LOAD_DEBUG_CONTROLS;
}

/// CR0 bits that must be 1 in VMX operation: PE, NE, PG (C:
/// `VMXON_CR0_ALWAYSON`; no unrestricted guest is offered).
pub(crate) const CR0_FIXED0: u64 = (1 << 0) | (1 << 5) | (1 << 31);
/// CR4 bits that must be 1 in VMX operation: VMXE.
pub(crate) const CR4_FIXED0: u64 = 1 << 13;

/// One VM-execution control capability: bits that must be 1 (the MSR's low
/// half) and bits that may be 1 (its high half).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Ctl {
    /// Allowed 0-settings clear: these controls must be 1.
    pub(crate) must1: u32,
    /// Allowed 1-settings: these controls may be 1.
    pub(crate) may1: u32,
}

impl Ctl {
    /// The MSR value.
    pub(crate) const fn msr(self) -> u64 {
        self.must1 as u64 | (self.may1 as u64) << 32
    }
    /// From an MSR value.
    pub(crate) const fn from_msr(v: u64) -> Self {
        Self { must1: v as u32, may1: (v >> 32) as u32 }
    }
}

/// L0's hardware capability MSRs, as read at module load: the input of
/// [`NestedVmxMsrs::setup`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct HwVmxMsrs {
    /// `IA32_VMX_BASIC`.
    pub(crate) basic: u64,
    /// `IA32_VMX_TRUE_PINBASED_CTLS`, or `IA32_VMX_PINBASED_CTLS` without TRUE controls.
    pub(crate) pin: u64,
    /// `IA32_VMX_TRUE_PROCBASED_CTLS`, or the non-TRUE one.
    pub(crate) proc: u64,
    /// `IA32_VMX_PROCBASED_CTLS2` (0 if the primary controls cannot
    /// activate secondary controls).
    pub(crate) proc2: u64,
    /// `IA32_VMX_TRUE_EXIT_CTLS`, or the non-TRUE one.
    pub(crate) exit: u64,
    /// `IA32_VMX_TRUE_ENTRY_CTLS`, or the non-TRUE one.
    pub(crate) entry: u64,
    /// `IA32_VMX_MISC`.
    pub(crate) misc: u64,
    /// `IA32_VMX_CR0_FIXED1`.
    pub(crate) cr0_fixed1: u64,
    /// `IA32_VMX_CR4_FIXED1`.
    pub(crate) cr4_fixed1: u64,
}

/// Why a capability-MSR write was refused: the entry of `KVM_SET_MSRS`
/// fails either way (C: `vmx_set_vmx_msr()`'s -EBUSY and -EINVAL, or 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SetErr {
    /// The vCPU is in VMX operation (after VMXON): nothing may change.
    Busy,
    /// Not a value kvm-rs can emulate, a read-only MSR, a guest WRMSR (the
    /// guest gets #GP), or a guest without VMX.
    Invalid,
}

/// The VMCS field index (encoding bits 9:1) `IA32_VMX_VMCS_ENUM` reports:
/// the highest of `encodings`, in bits 9:1 (SDM A.9; C:
/// `nested_vmx_calc_vmcs_enum_msr()`).
pub(crate) fn vmcs_enum(encodings: &[u32]) -> u64 {
    let max = encodings.iter().map(|e| (e >> 1) & 0x1ff).max().unwrap_or(0);
    u64::from(max) << 1
}

/// `is_bitwise_subset()` of C: within `mask`, `sub` sets no bit `sup` lacks.
const fn subset(sup: u64, sub: u64, mask: u64) -> bool {
    sub & mask & !(sup & mask) == 0
}

/// The capability MSRs of one vCPU (and, as [`NestedVmxMsrs::setup`] makes
/// them, the module-wide defaults and limits a restore is checked against).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NestedVmxMsrs {
    /// `IA32_VMX_BASIC`.
    pub(crate) basic: u64,
    /// Pin-based controls (the TRUE MSR).
    pub(crate) pin: Ctl,
    /// Primary processor-based controls (the TRUE MSR).
    pub(crate) proc: Ctl,
    /// Secondary processor-based controls.
    pub(crate) proc2: Ctl,
    /// VM-exit controls (the TRUE MSR).
    pub(crate) exit: Ctl,
    /// VM-entry controls (the TRUE MSR).
    pub(crate) entry: Ctl,
    /// `IA32_VMX_MISC`.
    pub(crate) misc: u64,
    /// `IA32_VMX_CR0_FIXED0`.
    pub(crate) cr0_fixed0: u64,
    /// `IA32_VMX_CR0_FIXED1`.
    pub(crate) cr0_fixed1: u64,
    /// `IA32_VMX_CR4_FIXED0`.
    pub(crate) cr4_fixed0: u64,
    /// `IA32_VMX_CR4_FIXED1`.
    pub(crate) cr4_fixed1: u64,
    /// `IA32_VMX_VMCS_ENUM`.
    pub(crate) vmcs_enum: u64,
    /// `IA32_VMX_EPT_VPID_CAP`: 0, neither nested EPT nor VPID.
    pub(crate) ept_vpid_cap: u64,
    /// `IA32_VMX_VMFUNC`: 0, no VM functions.
    pub(crate) vmfunc: u64,
}

/// A control capability offered to L1: `offered` intersected with what the
/// hardware MSR `hw` allows, the default1 bits except `free` required (and
/// therefore allowed).
fn offer(hw: u64, offered: u32, default1: u32, free: u32) -> Ctl {
    let must1 = default1 & !free;
    Ctl { must1, may1: (offered & Ctl::from_msr(hw).may1) | default1 }
}

impl NestedVmxMsrs {
    /// The module-wide values (C: `nested_vmx_setup_ctls_msrs()`), from L0's
    /// hardware MSRs and the encodings of the fields VMCS12 holds (for
    /// `IA32_VMX_VMCS_ENUM`).
    pub(crate) fn setup(hw: &HwVmxMsrs, vmcs12_fields: &[u32]) -> Self {
        let proc = offer(hw.proc, offered::PROC, default1::PROC, offered::PROC_FREE);
        // Secondary controls exist for L1 only if L0 can activate them.
        let proc2 = if proc.may1 & proc::SECONDARY_CONTROLS != 0 {
            Ctl { must1: 0, may1: offered::PROC2 & Ctl::from_msr(hw.proc2).may1 }
        } else {
            Ctl::default()
        };
        let mut b = u64::from(VMCS12_REVISION)
            | u64::from(VMCS12_SIZE) << basic::SIZE_SHIFT
            | u64::from(super::vmcs::MEM_TYPE_WB) << basic::MEM_TYPE_SHIFT
            | basic::TRUE_CTLS;
        // The instruction information of INS/OUTS exits comes from the
        // hardware's exit of L2, reflected as it is.
        b |= hw.basic & basic::INS_OUTS;
        Self {
            basic: b,
            pin: offer(hw.pin, offered::PIN, default1::PIN, 0),
            proc,
            proc2,
            exit: offer(hw.exit, offered::EXIT, default1::EXIT, offered::EXIT_FREE),
            entry: offer(hw.entry, offered::ENTRY, default1::ENTRY, offered::ENTRY_FREE),
            // EFER.LMA saved on exit as the hardware does it; no activity
            // states, no CR3 targets, no preemption timer; MSR lists of the
            // architectural minimum (512 entries); MSEG revision 0.
            misc: hw.misc & misc::SAVE_EFER_LMA,
            cr0_fixed0: CR0_FIXED0,
            cr0_fixed1: hw.cr0_fixed1,
            cr4_fixed0: CR4_FIXED0,
            cr4_fixed1: hw.cr4_fixed1,
            vmcs_enum: vmcs_enum(vmcs12_fields),
            ept_vpid_cap: 0,
            vmfunc: 0,
        }
    }

    /// Reads capability MSR `index` (C: `vmx_get_vmx_msr()`): the non-TRUE
    /// control MSRs are the TRUE ones with the default1 bits required.
    /// `None` outside 0x480-0x491. The caller refuses a vCPU's read when
    /// the guest does not have VMX (#GP, a failed entry: C `vmx_get_msr()`);
    /// `/dev/kvm`'s feature-MSR read gets the module-wide values (C
    /// `vmx_get_feature_msr()`).
    pub(crate) fn get(&self, index: u32) -> Option<u64> {
        let with_default1 = |c: Ctl, d: u32| Ctl { must1: c.must1 | d, may1: c.may1 }.msr();
        Some(match index {
            msr::IA32_VMX_BASIC => self.basic,
            msr::IA32_VMX_TRUE_PINBASED_CTLS => self.pin.msr(),
            msr::IA32_VMX_PINBASED_CTLS => with_default1(self.pin, default1::PIN),
            msr::IA32_VMX_TRUE_PROCBASED_CTLS => self.proc.msr(),
            msr::IA32_VMX_PROCBASED_CTLS => with_default1(self.proc, default1::PROC),
            msr::IA32_VMX_TRUE_EXIT_CTLS => self.exit.msr(),
            msr::IA32_VMX_EXIT_CTLS => with_default1(self.exit, default1::EXIT),
            msr::IA32_VMX_TRUE_ENTRY_CTLS => self.entry.msr(),
            msr::IA32_VMX_ENTRY_CTLS => with_default1(self.entry, default1::ENTRY),
            msr::IA32_VMX_PROCBASED_CTLS2 => self.proc2.msr(),
            msr::IA32_VMX_MISC => self.misc,
            msr::IA32_VMX_CR0_FIXED0 => self.cr0_fixed0,
            msr::IA32_VMX_CR0_FIXED1 => self.cr0_fixed1,
            msr::IA32_VMX_CR4_FIXED0 => self.cr4_fixed0,
            msr::IA32_VMX_CR4_FIXED1 => self.cr4_fixed1,
            IA32_VMX_VMCS_ENUM => self.vmcs_enum,
            msr::IA32_VMX_EPT_VPID_CAP => self.ept_vpid_cap,
            IA32_VMX_VMFUNC => self.vmfunc,
            _ => return None,
        })
    }

    /// A write of capability MSR `index` by user space (C:
    /// `vmx_set_vmx_msr()`): it may restrict what this vCPU's L1 sees,
    /// never offer more than `limits` (the module-wide values of
    /// [`NestedVmxMsrs::setup`]), and nothing changes in VMX operation
    /// (`vmxon`). On `Err` nothing changed.
    pub(crate) fn restore(&mut self, limits: &Self, index: u32, data: u64, vmxon: bool) -> Result<(), SetErr> {
        if vmxon {
            return Err(SetErr::Busy);
        }
        let ctl = |limit: Ctl| -> Result<Ctl, SetErr> {
            let lim = limit.msr();
            // Must-be-1 bits stay 1; bits that may not be 1 stay 0.
            if subset(data, lim, 0xffff_ffff) && subset(lim, data, !0xffff_ffff) {
                Ok(Ctl::from_msr(data))
            } else {
                Err(SetErr::Invalid)
            }
        };
        match index {
            msr::IA32_VMX_BASIC => {
                let lim = limits.basic;
                let ok = subset(lim, data, basic::FEATURES | basic::RESERVED)
                    && data & basic::ADDR_32BIT == 0
                    && data & basic::REVISION_MASK == lim & basic::REVISION_MASK
                    && (data >> basic::SIZE_SHIFT) & basic::SIZE_MASK >= (lim >> basic::SIZE_SHIFT) & basic::SIZE_MASK;
                if !ok {
                    return Err(SetErr::Invalid);
                }
                self.basic = data;
            }
            msr::IA32_VMX_TRUE_PINBASED_CTLS => self.pin = ctl(limits.pin)?,
            msr::IA32_VMX_TRUE_PROCBASED_CTLS => self.proc = ctl(limits.proc)?,
            msr::IA32_VMX_TRUE_EXIT_CTLS => self.exit = ctl(limits.exit)?,
            msr::IA32_VMX_TRUE_ENTRY_CTLS => self.entry = ctl(limits.entry)?,
            msr::IA32_VMX_PROCBASED_CTLS2 => self.proc2 = ctl(limits.proc2)?,
            msr::IA32_VMX_MISC => {
                let lim = limits.misc;
                let ok = subset(lim, data, misc::FEATURES | misc::RESERVED)
                    && (self.pin.may1 & pin::PREEMPTION_TIMER == 0 || misc::timer_rate(data) == misc::timer_rate(lim))
                    && misc::cr3_targets(data) <= misc::cr3_targets(lim)
                    && misc::max_msr_list(data) <= misc::max_msr_list(lim)
                    && misc::mseg_revision(data) == misc::mseg_revision(lim);
                if !ok {
                    return Err(SetErr::Invalid);
                }
                self.misc = data;
            }
            // Bits that must be 1 in VMX operation stay so.
            msr::IA32_VMX_CR0_FIXED0 if subset(data, limits.cr0_fixed0, !0) => self.cr0_fixed0 = data,
            msr::IA32_VMX_CR4_FIXED0 if subset(data, limits.cr4_fixed0, !0) => self.cr4_fixed0 = data,
            msr::IA32_VMX_EPT_VPID_CAP if subset(limits.ept_vpid_cap, data, !0) => self.ept_vpid_cap = data,
            // Any value: it only bounds what L1 may expect to find.
            IA32_VMX_VMCS_ENUM => self.vmcs_enum = data,
            IA32_VMX_VMFUNC if data & !limits.vmfunc == 0 => self.vmfunc = data,
            // The non-TRUE control MSRs follow from the TRUE ones, CR0/CR4
            // FIXED1 from the guest's CPUID: not restorable, nor is a bad
            // value of the arms above, nor anything else.
            _ => return Err(SetErr::Invalid),
        }
        Ok(())
    }

    /// A WRMSR of a capability MSR, by the guest (`host` false: read-only,
    /// #GP) or user space; the guest must have VMX (`vmx_allowed`, C's
    /// governed feature). C: `vmx_set_msr()`.
    pub(crate) fn set(
        &mut self,
        limits: &Self,
        index: u32,
        data: u64,
        host: bool,
        vmx_allowed: bool,
        vmxon: bool,
    ) -> Result<(), SetErr> {
        if !host || !vmx_allowed {
            return Err(SetErr::Invalid);
        }
        self.restore(limits, index, data, vmxon)
    }

    /// The guest's CPUID changed (C: `nested_vmx_cr_fixed1_bits_update()`,
    /// when the guest has VMX): CR0 bits 31:0 may all be 1, CR4 bits only
    /// as the guest's CPUID offers their feature (PCE always). `leaf1`,
    /// `leaf7_0`, `leaf7_1` are the guest's CPUID registers EAX, EBX, ECX,
    /// EDX of leaves 1, 7.0 and 7.1 (zeros where it has none).
    pub(crate) fn update_cr_fixed1(&mut self, leaf1: [u32; 4], leaf7_0: [u32; 4], leaf7_1: [u32; 4]) {
        self.cr0_fixed1 = 0xffff_ffff;
        self.cr4_fixed1 = cr4_fixed1(leaf1, leaf7_0, leaf7_1);
    }
}

/// CR4 bits the guest may set in VMX operation, from its CPUID.
pub(crate) fn cr4_fixed1(leaf1: [u32; 4], leaf7_0: [u32; 4], leaf7_1: [u32; 4]) -> u64 {
    const EAX: usize = 0;
    const EBX: usize = 1;
    const ECX: usize = 2;
    const EDX: usize = 3;
    // (CR4 bit, leaf registers, register, CPUID bit). SDM vol. 3A, 2.5 for
    // the CR4 bits; vol. 2A, CPUID, for the feature bits.
    let table: [(u32, &[u32; 4], usize, u32); 21] = [
        (0, &leaf1, EDX, 1),     // VME: VME
        (1, &leaf1, EDX, 1),     // PVI: VME
        (2, &leaf1, EDX, 4),     // TSD: TSC
        (3, &leaf1, EDX, 2),     // DE: DE
        (4, &leaf1, EDX, 3),     // PSE: PSE
        (5, &leaf1, EDX, 6),     // PAE: PAE
        (6, &leaf1, EDX, 7),     // MCE: MCE
        (7, &leaf1, EDX, 13),    // PGE: PGE
        (9, &leaf1, EDX, 24),    // OSFXSR: FXSR
        (10, &leaf1, EDX, 25),   // OSXMMEXCPT: SSE
        (13, &leaf1, ECX, 5),    // VMXE: VMX
        (14, &leaf1, ECX, 6),    // SMXE: SMX
        (17, &leaf1, ECX, 17),   // PCIDE: PCID
        (18, &leaf1, ECX, 26),   // OSXSAVE: XSAVE
        (16, &leaf7_0, EBX, 0),  // FSGSBASE: FSGSBASE
        (20, &leaf7_0, EBX, 7),  // SMEP: SMEP
        (21, &leaf7_0, EBX, 20), // SMAP: SMAP
        (22, &leaf7_0, ECX, 3),  // PKE: PKU
        (11, &leaf7_0, ECX, 2),  // UMIP: UMIP
        (12, &leaf7_0, ECX, 16), // LA57: LA57
        (28, &leaf7_1, EAX, 26), // LAM_SUP: LAM
    ];
    let mut v = 1 << 8; // PCE: no CPUID bit
    for (cr4_bit, regs, r, bit) in table {
        if regs[r] & (1 << bit) != 0 {
            v |= 1u64 << cr4_bit;
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::super::vmcs::{self, ept_cap};
    use super::*;
    use std::vec::Vec;

    /// An example VMX CPU with TRUE controls, made up for the tests (not
    /// read from a machine): default1 bits required except those the TRUE
    /// MSRs may free, most controls allowed, 1 KiB write-back VMCS regions,
    /// INS/OUTS information, dual-monitor treatment.
    fn example_hw() -> HwVmxMsrs {
        HwVmxMsrs {
            basic: 0x00da_0400_0000_0001,
            pin: 0x0000_00ff_0000_0016,
            proc: 0xfff9_fffe_0400_6172,
            proc2: 0x0053_7dff_0000_0000,
            exit: 0x01ff_ffff_0003_6dfb,
            entry: 0x0003_ffff_0000_11fb,
            misc: 0x0000_0000_0000_01e5,
            cr0_fixed1: 0xffff_ffff,
            cr4_fixed1: 0x0037_67ff,
        }
    }

    /// Bochs 2.7 `corei7_skylake_x`, the CPU the VMX backend is tested on:
    /// its capability MSRs as read through `/dev/cpu/0/msr` in the Bochs
    /// test VM (2026-11-26), and what the C `kvm-intel` of the same kernel
    /// (nested=1, its defaults) answered for the same MSRs through
    /// `/dev/kvm`'s `KVM_GET_MSRS`: its own nested model on that hardware.
    fn bochs_hw() -> HwVmxMsrs {
        HwVmxMsrs {
            basic: 0x00d8_1000_0000_002b,
            pin: 0x0000_007f_0000_0016,
            proc: 0xf7f9_fffe_0400_6172,
            proc2: 0x0217_7fff_0000_0000,
            exit: 0x007f_ffff_0003_6dfb,
            entry: 0x0000_ffff_0000_11fb,
            misc: 0x0000_0000_6004_01e0,
            cr0_fixed1: 0xffff_ffff,
            cr4_fixed1: 0x0037_27ff,
        }
    }

    /// See [`bochs_hw`]: (MSR, the C kvm-intel's value).
    const BOCHS_C_NESTED: [(u32, u64); 18] = [
        (0x480, 0x00d8_1000_11e5_7ed0),
        (0x481, 0x0000_007f_0000_0016),
        (0x482, 0xf7f9_fffe_0401_e172),
        (0x483, 0x007f_ffff_0003_6dff),
        (0x484, 0x0000_f3ff_0000_11ff),
        (0x485, 0x0000_0000_2000_0165),
        (0x486, 0x0000_0000_8000_0021),
        (0x487, 0x0000_0000_ffff_ffff),
        (0x488, 0x0000_0000_0000_2000),
        (0x489, 0x0000_0000_0037_2fff),
        (0x48a, 0x0000_0000_0000_0032),
        (0x48b, 0x0213_7bff_0000_0000),
        (0x48c, 0x0000_0f01_0633_4041),
        (0x48d, 0x0000_007f_0000_0016),
        (0x48e, 0xf7f9_fffe_0400_6172),
        (0x48f, 0x007f_ffff_0003_6dfb),
        (0x490, 0x0000_f3ff_0000_11fb),
        (0x491, 0x0000_0000_0000_0001),
    ];

    #[test]
    fn against_the_c_kvm_on_bochs() {
        let c = |i: u32| BOCHS_C_NESTED.iter().find(|e| e.0 == i).unwrap().1;
        let m = NestedVmxMsrs::setup(&bochs_hw(), &fields());
        // BASIC: the C KVM's but for the revision identifier.
        assert_eq!(m.basic & !basic::REVISION_MASK, c(0x480) & !basic::REVISION_MASK);
        // Controls: nothing the C KVM would not offer on the same hardware,
        // the same must-be-1 bits, and of its allowed-1 bits exactly those
        // in kvm-rs's set.
        let ctls = [
            (msr::IA32_VMX_TRUE_PINBASED_CTLS, offered::PIN | default1::PIN),
            (msr::IA32_VMX_TRUE_PROCBASED_CTLS, offered::PROC | default1::PROC),
            (msr::IA32_VMX_TRUE_EXIT_CTLS, offered::EXIT | default1::EXIT),
            (msr::IA32_VMX_TRUE_ENTRY_CTLS, offered::ENTRY | default1::ENTRY),
            (msr::IA32_VMX_PROCBASED_CTLS2, offered::PROC2),
            (msr::IA32_VMX_PINBASED_CTLS, offered::PIN | default1::PIN),
            (msr::IA32_VMX_PROCBASED_CTLS, offered::PROC | default1::PROC),
            (msr::IA32_VMX_EXIT_CTLS, offered::EXIT | default1::EXIT),
            (msr::IA32_VMX_ENTRY_CTLS, offered::ENTRY | default1::ENTRY),
        ];
        for (index, set) in ctls {
            let (ours, theirs) = (Ctl::from_msr(m.get(index).unwrap()), Ctl::from_msr(c(index)));
            assert_eq!(ours.must1, theirs.must1, "{index:#x}");
            assert_eq!(ours.may1, theirs.may1 & set, "{index:#x}");
        }
        // What the C KVM offers there and kvm-rs does not (yet).
        let missing = |i: u32| Ctl::from_msr(c(i)).may1 & !Ctl::from_msr(m.get(i).unwrap()).may1;
        assert_eq!(missing(msr::IA32_VMX_TRUE_PINBASED_CTLS), pin::PREEMPTION_TIMER);
        // (This Bochs has no monitor trap flag.)
        assert_eq!(missing(msr::IA32_VMX_TRUE_PROCBASED_CTLS), proc::TPR_SHADOW | proc::PAUSE_EXITING);
        assert_ne!(missing(msr::IA32_VMX_PROCBASED_CTLS2) & proc2::ENABLE_EPT, 0);
        assert_ne!(missing(msr::IA32_VMX_TRUE_EXIT_CTLS) & exit_ctl::ACK_INTR_ON_EXIT, 0);
        // MISC: of the C KVM's, "save EFER.LMA" only (it adds a preemption
        // timer rate, HLT and wait-for-SIPI activity states, VMWRITE to any
        // field).
        assert_eq!(m.misc, c(0x485) & misc::SAVE_EFER_LMA);
        assert_ne!(m.misc, 0);
        for i in [msr::IA32_VMX_CR0_FIXED0, msr::IA32_VMX_CR0_FIXED1, msr::IA32_VMX_CR4_FIXED0] {
            assert_eq!(m.get(i), Some(c(i)), "{i:#x}");
        }
        // CR4_FIXED1 before the guest's CPUID is known: the hardware's; the
        // C KVM adds UMIP, which it emulates. Both follow the CPUID after.
        assert_eq!(m.cr4_fixed1 | (1 << 11), c(0x489));
        // No EPT/VPID, no VM functions; VMCS_ENUM from kvm-rs's fields.
        assert_eq!((m.ept_vpid_cap, m.vmfunc), (0, 0));
        assert_ne!(c(0x48c), 0);
        // VMCS_ENUM: the highest field index of the fields vmcs.rs names
        // (standing in for VMCS12's until it exists), 0x17; the C KVM's
        // VMCS12 reaches 0x19.
        assert_eq!(c(0x48a), 0x19 << 1);
        assert_eq!(m.vmcs_enum, 0x17 << 1);
        // The vmx_msrs_test sequences over the model built from Bochs.
        vmx_msrs_test_sequences(&m);
    }

    fn fields() -> Vec<u32> {
        vmcs::ALL_FIELDS.iter().map(|&(_, e)| e).collect()
    }

    fn model() -> NestedVmxMsrs {
        NestedVmxMsrs::setup(&example_hw(), &fields())
    }

    /// The four TRUE control MSRs, the secondary one, and their non-TRUE twins.
    const TRUE_CTLS: [u32; 5] = [
        msr::IA32_VMX_TRUE_PINBASED_CTLS,
        msr::IA32_VMX_TRUE_PROCBASED_CTLS,
        msr::IA32_VMX_TRUE_EXIT_CTLS,
        msr::IA32_VMX_TRUE_ENTRY_CTLS,
        msr::IA32_VMX_PROCBASED_CTLS2,
    ];

    #[test]
    fn basic_value() {
        let m = model();
        let b = vmcs::VmxBasic::from_msr(m.get(msr::IA32_VMX_BASIC).unwrap());
        assert_eq!(b.revision, VMCS12_REVISION);
        assert_ne!(VMCS12_REVISION, 0x11e5_7ed0, "kvm-rs's own revision");
        assert_eq!(VMCS12_REVISION & (1 << 31), 0);
        assert_eq!(b.region_size, 4096);
        assert_eq!(b.mem_type, vmcs::MEM_TYPE_WB);
        assert!(b.true_ctls && b.ins_outs_info && !b.addr_32bit);
        assert_eq!(m.basic & basic::DUAL_MONITOR, 0);
        assert_eq!(m.basic & basic::RESERVED, 0);
        // No INS/OUTS information from the hardware: none for L1.
        let hw = HwVmxMsrs { basic: example_hw().basic & !basic::INS_OUTS, ..example_hw() };
        assert_eq!(NestedVmxMsrs::setup(&hw, &fields()).basic & basic::INS_OUTS, 0);
    }

    #[test]
    fn controls_offered() {
        let m = model();
        // Exactly the offered set, plus the default1 bits; the example
        // hardware has all of it.
        assert_eq!(m.pin, Ctl { must1: default1::PIN, may1: default1::PIN | offered::PIN });
        assert_eq!(m.proc.may1, default1::PROC | offered::PROC);
        assert_eq!(m.proc.must1, default1::PROC & !(proc::CR3_LOAD_EXITING | proc::CR3_STORE_EXITING));
        assert_eq!(m.proc2, Ctl { must1: 0, may1: proc2::DESC_TABLE_EXITING | proc2::WBINVD_EXITING });
        assert_eq!(m.exit.must1, default1::EXIT & !exit_ctl::SAVE_DEBUG_CONTROLS);
        assert_eq!(m.exit.may1, default1::EXIT | offered::EXIT);
        assert_eq!(m.entry.must1, default1::ENTRY & !entry_ctl::LOAD_DEBUG_CONTROLS);
        assert_eq!(m.entry.may1, default1::ENTRY | offered::ENTRY);
        // What is not offered.
        assert_eq!(m.pin.may1 & (pin::PREEMPTION_TIMER | pin::POSTED_INTR), 0);
        assert_eq!(m.proc.may1 & (proc::TPR_SHADOW | proc::MONITOR_TRAP_FLAG | proc::PAUSE_EXITING), 0);
        let not2 = proc2::ENABLE_EPT
            | proc2::ENABLE_VPID
            | proc2::UNRESTRICTED_GUEST
            | proc2::VIRT_APIC_ACCESSES
            | proc2::VIRT_X2APIC_MODE
            | proc2::ENABLE_RDTSCP
            | proc2::ENABLE_INVPCID
            | proc2::ENABLE_XSAVES;
        assert_eq!(m.proc2.may1 & not2, 0);
        assert_eq!(m.exit.may1 & exit_ctl::ACK_INTR_ON_EXIT, 0);
        assert_eq!(m.ept_vpid_cap, 0);
        assert_eq!(m.vmfunc, 0);
        // Every capability is consistent: must-be-1 bits may be 1.
        for c in [m.pin, m.proc, m.proc2, m.exit, m.entry] {
            assert_eq!(c.must1 & !c.may1, 0);
        }
    }

    #[test]
    fn controls_intersect_with_hardware() {
        // Hardware that cannot do HLT exiting, save EFER or secondary controls.
        let hw = example_hw();
        let hw = HwVmxMsrs {
            proc: hw.proc & !((u64::from(proc::HLT_EXITING) | u64::from(proc::SECONDARY_CONTROLS)) << 32),
            exit: hw.exit & !(u64::from(exit_ctl::SAVE_IA32_EFER) << 32),
            pin: hw.pin & !(u64::from(pin::VIRTUAL_NMIS) << 32),
            ..hw
        };
        let m = NestedVmxMsrs::setup(&hw, &fields());
        assert_eq!(m.proc.may1 & (proc::HLT_EXITING | proc::SECONDARY_CONTROLS), 0);
        assert_eq!(m.proc2, Ctl::default(), "no secondary controls without activation");
        assert_eq!(m.exit.may1 & exit_ctl::SAVE_IA32_EFER, 0);
        assert_eq!(m.pin.may1 & pin::VIRTUAL_NMIS, 0);
        assert_ne!(m.proc.may1 & proc::RDTSC_EXITING, 0);
        // Default1 bits are reported whatever the hardware says.
        assert_eq!(m.proc.may1 & default1::PROC, default1::PROC);
    }

    #[test]
    fn non_true_msrs_require_default1() {
        let m = model();
        let pairs = [
            (msr::IA32_VMX_PINBASED_CTLS, msr::IA32_VMX_TRUE_PINBASED_CTLS, default1::PIN),
            (msr::IA32_VMX_PROCBASED_CTLS, msr::IA32_VMX_TRUE_PROCBASED_CTLS, default1::PROC),
            (msr::IA32_VMX_EXIT_CTLS, msr::IA32_VMX_TRUE_EXIT_CTLS, default1::EXIT),
            (msr::IA32_VMX_ENTRY_CTLS, msr::IA32_VMX_TRUE_ENTRY_CTLS, default1::ENTRY),
        ];
        for (plain, tru, d) in pairs {
            let p = m.get(plain).unwrap();
            let t = m.get(tru).unwrap();
            assert_eq!(p, t | u64::from(d), "{plain:#x}");
            assert_eq!(p >> 32, t >> 32, "{plain:#x}: same allowed-1 bits");
        }
        // The debug-control and CR3 exits are free only in the TRUE MSRs.
        assert_ne!(m.get(msr::IA32_VMX_EXIT_CTLS).unwrap() as u32 & exit_ctl::SAVE_DEBUG_CONTROLS, 0);
        assert_eq!(m.get(msr::IA32_VMX_TRUE_EXIT_CTLS).unwrap() as u32 & exit_ctl::SAVE_DEBUG_CONTROLS, 0);
        // Default1 values of SDM A.2, as numbers.
        assert_eq!(default1::PIN, 0x16);
        assert_eq!(default1::PROC, 0x0401_e172);
        assert_eq!(default1::EXIT, 0x0003_6dff);
        assert_eq!(default1::ENTRY, 0x0000_11ff);
    }

    #[test]
    fn misc_fixed_enum_values() {
        let m = model();
        assert_eq!(m.misc, misc::SAVE_EFER_LMA, "EFER.LMA saving from the hardware; nothing else is offered");
        let hw = HwVmxMsrs { misc: 0x1c5, ..example_hw() };
        assert_eq!(NestedVmxMsrs::setup(&hw, &fields()).misc, 0);
        assert_eq!(m.get(msr::IA32_VMX_CR0_FIXED0), Some(0x8000_0021));
        assert_eq!(m.get(msr::IA32_VMX_CR4_FIXED0), Some(0x2000));
        assert_eq!(m.get(msr::IA32_VMX_CR0_FIXED1), Some(example_hw().cr0_fixed1));
        assert_eq!(m.get(msr::IA32_VMX_CR4_FIXED1), Some(example_hw().cr4_fixed1));
        assert_eq!(m.get(msr::IA32_VMX_EPT_VPID_CAP), Some(0));
        assert_eq!(m.get(IA32_VMX_VMFUNC), Some(0));
        // VMCS_ENUM: the highest field index, in bits 9:1.
        assert_eq!(vmcs_enum(&[0x0000, 0x4002, 0x2032, 0x681e]), 0x19 << 1);
        assert_eq!(vmcs_enum(&[]), 0);
        let e = m.get(IA32_VMX_VMCS_ENUM).unwrap();
        assert_eq!(e & !0x3fe, 0);
        assert!(fields().iter().all(|f| u64::from((f >> 1) & 0x1ff) <= e >> 1));
        // Every MSR of the range reads; nothing outside it.
        for i in FIRST..=LAST {
            assert!(m.get(i).is_some(), "{i:#x}");
        }
        assert_eq!(m.get(FIRST - 1), None);
        assert_eq!(m.get(LAST + 1), None);
        assert_eq!(m.get(msr::IA32_FEATURE_CONTROL), None);
    }

    #[test]
    fn cr4_fixed1_follows_cpuid() {
        let none = [0u32; 4];
        assert_eq!(cr4_fixed1(none, none, none), 1 << 8, "PCE only");
        // Leaf 1 EDX: VME, DE, PSE, TSC, PAE, MCE, PGE, FXSR, SSE.
        let edx = (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 6) | (1 << 7) | (1 << 13) | (1 << 24) | (1 << 25);
        assert_eq!(cr4_fixed1([0, 0, 0, edx], none, none), 0x7ff);
        assert_eq!(cr4_fixed1([0, 0, 1 << 5, 0], none, none), (1 << 8) | (1 << 13), "VMX: VMXE");
        assert_eq!(cr4_fixed1([0, 0, 1 << 17, 0], none, none), (1 << 8) | (1 << 17), "PCID: PCIDE");
        assert_eq!(cr4_fixed1([0, 0, 1 << 26, 0], none, none), (1 << 8) | (1 << 18), "XSAVE: OSXSAVE");
        assert_eq!(cr4_fixed1(none, [0, 1 << 0, 0, 0], none), (1 << 8) | (1 << 16), "FSGSBASE");
        assert_eq!(cr4_fixed1(none, [0, 1 << 7, 0, 0], none), (1 << 8) | (1 << 20), "SMEP");
        assert_eq!(cr4_fixed1(none, [0, 1 << 20, 0, 0], none), (1 << 8) | (1 << 21), "SMAP");
        assert_eq!(cr4_fixed1(none, [0, 0, 1 << 3, 0], none), (1 << 8) | (1 << 22), "PKU: PKE");
        assert_eq!(cr4_fixed1(none, [0, 0, 1 << 2, 0], none), (1 << 8) | (1 << 11), "UMIP");
        assert_eq!(cr4_fixed1(none, [0, 0, 1 << 16, 0], none), (1 << 8) | (1 << 12), "LA57");
        assert_eq!(cr4_fixed1(none, none, [1 << 26, 0, 0, 0],), (1 << 8) | (1 << 28), "LAM: LAM_SUP");
        let mut m = model();
        m.update_cr_fixed1([0, 0, 1 << 5, edx], none, none);
        assert_eq!(m.cr0_fixed1, 0xffff_ffff);
        assert_eq!(m.cr4_fixed1, 0x27ff);
        // FIXED1 is not restorable: it follows the CPUID.
        let mut v = m;
        assert_eq!(v.restore(&model(), msr::IA32_VMX_CR4_FIXED1, m.cr4_fixed1, false), Err(SetErr::Invalid));
        assert_eq!(v.restore(&model(), msr::IA32_VMX_CR0_FIXED1, m.cr0_fixed1, false), Err(SetErr::Invalid));
    }

    /// `vmx_fixed1_msr_test()` of the upstream `vmx_msrs_test`: each bit of
    /// `mask` set in the value is cleared, then the value is restored; every
    /// write must succeed.
    fn fixed1_sequence(v: &mut NestedVmxMsrs, limits: &NestedVmxMsrs, index: u32, mask: u64) {
        let val = v.get(index).unwrap();
        for bit in 0..64 {
            if mask & val & (1 << bit) != 0 {
                assert_eq!(
                    v.set(limits, index, val & !(1 << bit), true, true, false),
                    Ok(()),
                    "{index:#x} bit {bit} cleared"
                );
                assert_eq!(v.get(index), Some(val & !(1 << bit)));
                assert_eq!(v.set(limits, index, val, true, true, false), Ok(()), "{index:#x} restored");
            }
        }
    }

    /// `vmx_fixed0_msr_test()`: each bit clear in the value and in `mask`
    /// is set, then the value is restored.
    fn fixed0_sequence(v: &mut NestedVmxMsrs, limits: &NestedVmxMsrs, index: u32, mask: u64) {
        let val = v.get(index).unwrap();
        let m = !mask | val;
        for bit in 0..64 {
            if m & (1 << bit) == 0 {
                assert_eq!(
                    v.set(limits, index, val | (1 << bit), true, true, false),
                    Ok(()),
                    "{index:#x} bit {bit} set"
                );
                assert_eq!(v.set(limits, index, val, true, true, false), Ok(()), "{index:#x} restored");
            }
        }
    }

    #[test]
    fn vmx_msrs_test_sequence_is_accepted() {
        vmx_msrs_test_sequences(&model());
    }

    fn vmx_msrs_test_sequences(model: &NestedVmxMsrs) {
        let limits = *model;
        let mut v = limits;
        // vmx_save_restore_msrs_test(), in its order.
        assert_eq!(v.set(&limits, IA32_VMX_VMCS_ENUM, 0, true, true, false), Ok(()));
        assert_eq!(v.set(&limits, IA32_VMX_VMCS_ENUM, !0, true, true, false), Ok(()));
        assert_eq!(v.get(IA32_VMX_VMCS_ENUM), Some(!0));
        fixed1_sequence(&mut v, &limits, msr::IA32_VMX_BASIC, (1 << 49) | (1 << 54) | (1 << 55));
        let misc_mask = (1 << 5) | (0x7 << 6) | (1 << 14) | (1 << 15) | (1 << 28) | (1 << 29) | (1 << 30);
        fixed1_sequence(&mut v, &limits, msr::IA32_VMX_MISC, misc_mask);
        for index in [
            msr::IA32_VMX_PROCBASED_CTLS2,
            msr::IA32_VMX_TRUE_PINBASED_CTLS,
            msr::IA32_VMX_TRUE_PROCBASED_CTLS,
            msr::IA32_VMX_TRUE_EXIT_CTLS,
            msr::IA32_VMX_TRUE_ENTRY_CTLS,
        ] {
            // vmx_fixed0and1_msr_test()
            fixed0_sequence(&mut v, &limits, index, 0xffff_ffff);
            fixed1_sequence(&mut v, &limits, index, 0xffff_ffff_0000_0000);
            if index == msr::IA32_VMX_PROCBASED_CTLS2 {
                fixed1_sequence(&mut v, &limits, msr::IA32_VMX_EPT_VPID_CAP, !0);
            }
        }
        fixed1_sequence(&mut v, &limits, IA32_VMX_VMFUNC, !0);
        // Everything is back where it was, VMCS_ENUM aside.
        assert_eq!(NestedVmxMsrs { vmcs_enum: limits.vmcs_enum, ..v }, limits);
    }

    #[test]
    fn the_same_sequence_over_richer_values() {
        // The sequences with every restorable capability bit the rules let
        // a value hold: a hypothetical configuration (EPT capabilities,
        // VMFUNC, all MISC features), to exercise each branch of the rules.
        let mut limits = model();
        limits.misc |= misc::FEATURES | (3 << 16) | (2 << 25);
        limits.ept_vpid_cap = ept_cap::WALK_4 | ept_cap::INVEPT | ept_cap::INVVPID;
        limits.vmfunc = 1;
        limits.basic |= basic::DUAL_MONITOR;
        let mut v = limits;
        fixed1_sequence(&mut v, &limits, msr::IA32_VMX_BASIC, (1 << 49) | (1 << 54) | (1 << 55));
        fixed1_sequence(&mut v, &limits, msr::IA32_VMX_MISC, !0);
        fixed1_sequence(&mut v, &limits, msr::IA32_VMX_EPT_VPID_CAP, !0);
        fixed1_sequence(&mut v, &limits, IA32_VMX_VMFUNC, !0);
        assert_eq!(v, limits);
    }

    #[test]
    fn offering_more_is_refused() {
        let limits = model();
        let mut v = limits;
        // An allowed-1 bit the model does not offer, in each control MSR.
        let extra = [
            (msr::IA32_VMX_TRUE_PINBASED_CTLS, pin::PREEMPTION_TIMER),
            (msr::IA32_VMX_TRUE_PROCBASED_CTLS, proc::TPR_SHADOW),
            (msr::IA32_VMX_TRUE_EXIT_CTLS, exit_ctl::ACK_INTR_ON_EXIT),
            (msr::IA32_VMX_TRUE_ENTRY_CTLS, 1 << 13), // load PERF_GLOBAL_CTRL
            (msr::IA32_VMX_PROCBASED_CTLS2, proc2::ENABLE_EPT),
        ];
        for (index, bit) in extra {
            let val = v.get(index).unwrap();
            assert_eq!(
                v.set(&limits, index, val | u64::from(bit) << 32, true, true, false),
                Err(SetErr::Invalid),
                "{index:#x}"
            );
        }
        // A must-be-1 bit cleared.
        for (index, bit) in [
            (msr::IA32_VMX_TRUE_PINBASED_CTLS, 1u32 << 1),
            (msr::IA32_VMX_TRUE_PROCBASED_CTLS, 1 << 26),
            (msr::IA32_VMX_TRUE_EXIT_CTLS, 1 << 0),
            (msr::IA32_VMX_TRUE_ENTRY_CTLS, 1 << 12),
        ] {
            let val = v.get(index).unwrap();
            assert_ne!(val & u64::from(bit), 0);
            assert_eq!(
                v.set(&limits, index, val & !u64::from(bit), true, true, false),
                Err(SetErr::Invalid),
                "{index:#x}"
            );
        }
        // CR3 load exiting is free in the TRUE MSR: clearing its
        // must-be-1 (it is not one) and its allowed-1 bit both work.
        let p = v.get(msr::IA32_VMX_TRUE_PROCBASED_CTLS).unwrap();
        assert_eq!(
            v.set(&limits, msr::IA32_VMX_TRUE_PROCBASED_CTLS, p | u64::from(proc::CR3_LOAD_EXITING), true, true, false),
            Ok(())
        );
        assert_eq!(v.set(&limits, msr::IA32_VMX_TRUE_PROCBASED_CTLS, p, true, true, false), Ok(()));
        // BASIC: another revision, a smaller region, 32-bit addresses,
        // dual-monitor treatment, a reserved bit.
        let b = limits.basic;
        for bad in [
            b ^ 1,
            (b & !basic::REVISION_MASK) | 0x11e5_7ed0,
            (b & !(basic::SIZE_MASK << 32)) | (2048 << 32),
            b | basic::ADDR_32BIT,
            b | basic::DUAL_MONITOR,
            b | 1 << 31,
            b | 1 << 45,
            b | 1 << 63,
        ] {
            assert_eq!(v.set(&limits, msr::IA32_VMX_BASIC, bad, true, true, false), Err(SetErr::Invalid), "{bad:#x}");
        }
        // A larger region, and another memory type field, are accepted (C
        // checks neither).
        assert_eq!(
            v.set(&limits, msr::IA32_VMX_BASIC, (b & !(basic::SIZE_MASK << 32)) | (0x1800 << 32), true, true, false),
            Ok(())
        );
        assert_eq!(v.set(&limits, msr::IA32_VMX_BASIC, b & !(0xf << basic::MEM_TYPE_SHIFT), true, true, false), Ok(()));
        assert_eq!(v.set(&limits, msr::IA32_VMX_BASIC, b, true, true, false), Ok(()));
        // MISC: a feature not offered, more CR3 targets, another MSEG
        // revision, a reserved bit.
        let m = limits.misc;
        for bad in [m | misc::ACTIVITY_HLT, m | 1 << 16, m | 1 << 25, m | 1 << 32, m | 1 << 31, m | 1 << 9] {
            assert_eq!(v.set(&limits, msr::IA32_VMX_MISC, bad, true, true, false), Err(SetErr::Invalid), "{bad:#x}");
        }
        // The timer rate is free without a preemption timer.
        assert_eq!(v.set(&limits, msr::IA32_VMX_MISC, m | 3, true, true, false), Ok(()));
        let mut timer = limits;
        timer.pin.may1 |= pin::PREEMPTION_TIMER;
        timer.misc |= 5;
        let mut t = timer;
        assert_eq!(t.set(&timer, msr::IA32_VMX_MISC, timer.misc, true, true, false), Ok(()));
        assert_eq!(
            t.set(&timer, msr::IA32_VMX_MISC, (timer.misc & !0x1f) | 4, true, true, false),
            Err(SetErr::Invalid)
        );
        // FIXED0: a must-be-1 bit cleared; setting more is a restriction.
        assert_eq!(v.set(&limits, msr::IA32_VMX_CR0_FIXED0, CR0_FIXED0 & !1, true, true, false), Err(SetErr::Invalid));
        assert_eq!(v.set(&limits, msr::IA32_VMX_CR4_FIXED0, 0, true, true, false), Err(SetErr::Invalid));
        assert_eq!(v.set(&limits, msr::IA32_VMX_CR0_FIXED0, CR0_FIXED0 | 2, true, true, false), Ok(()));
        assert_eq!(v.set(&limits, msr::IA32_VMX_CR4_FIXED0, CR4_FIXED0 | 1, true, true, false), Ok(()));
        // EPT/VPID and VMFUNC: nothing is offered, so only 0.
        assert_eq!(
            v.set(&limits, msr::IA32_VMX_EPT_VPID_CAP, ept_cap::WALK_4, true, true, false),
            Err(SetErr::Invalid)
        );
        assert_eq!(v.set(&limits, IA32_VMX_VMFUNC, 1, true, true, false), Err(SetErr::Invalid));
        assert_eq!(v.set(&limits, msr::IA32_VMX_EPT_VPID_CAP, 0, true, true, false), Ok(()));
        assert_eq!(v.set(&limits, IA32_VMX_VMFUNC, 0, true, true, false), Ok(()));
    }

    #[test]
    fn read_only_guest_and_vmxon() {
        let limits = model();
        let mut v = limits;
        // The non-TRUE control MSRs and the FIXED1 ones are read-only, even
        // with their own value.
        for index in [
            msr::IA32_VMX_PINBASED_CTLS,
            msr::IA32_VMX_PROCBASED_CTLS,
            msr::IA32_VMX_EXIT_CTLS,
            msr::IA32_VMX_ENTRY_CTLS,
            msr::IA32_VMX_CR0_FIXED1,
            msr::IA32_VMX_CR4_FIXED1,
        ] {
            let val = v.get(index).unwrap();
            assert_eq!(v.set(&limits, index, val, true, true, false), Err(SetErr::Invalid), "{index:#x}");
        }
        assert_eq!(v.set(&limits, msr::IA32_FEATURE_CONTROL, 0, true, true, false), Err(SetErr::Invalid));
        for index in FIRST..=LAST {
            let val = v.get(index).unwrap();
            // The guest may not write any of them (#GP).
            assert_eq!(v.set(&limits, index, val, false, true, false), Err(SetErr::Invalid), "{index:#x}");
            // Nor user space for a guest without VMX.
            assert_eq!(v.set(&limits, index, val, true, false, false), Err(SetErr::Invalid), "{index:#x}");
            // In VMX operation nothing changes, whatever the value.
            assert_eq!(v.set(&limits, index, val, true, true, true), Err(SetErr::Busy), "{index:#x}");
        }
        assert_eq!(v, limits);
        // A restriction made earlier is widened again only up to the limits.
        let p = limits.pin.msr();
        assert_eq!(
            v.set(
                &limits,
                msr::IA32_VMX_TRUE_PINBASED_CTLS,
                p & !(u64::from(pin::NMI_EXITING) << 32),
                true,
                true,
                false
            ),
            Ok(())
        );
        assert_eq!(v.set(&limits, msr::IA32_VMX_TRUE_PINBASED_CTLS, p, true, true, false), Ok(()));
        assert_eq!(v, limits);
        for index in TRUE_CTLS {
            assert!(v.get(index).is_some());
        }
    }
}
