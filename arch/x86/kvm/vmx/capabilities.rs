// SPDX-License-Identifier: GPL-2.0

//! What the CPU's VMX offers and the controls kvm-rs uses (C:
//! `vmx/capabilities.h` and `setup_vmcs_config()` of `vmx/vmx.c`): the
//! capability MSRs read and checked once at module load, the controls
//! adjusted to what they allow, and a message naming whatever required
//! feature is missing.

use super::vmcs::{self, entry_ctl, exit_ctl, pin, proc, proc2, CrPolicy, FlushCaps, VmxBasic};
use super::vmx_ops::CrFixed;
use kernel::{prelude::*, x86};

/// The controls kvm-rs runs guests with, adjusted to the CPU (C:
/// `setup_vmcs_config()`).
#[derive(Clone, Copy, Debug)]
pub(super) struct VmxConfig {
    pub(super) basic: VmxBasic,
    pub(super) pin: u32,
    pub(super) proc: u32,
    pub(super) proc2: u32,
    pub(super) exit: u32,
    pub(super) entry: u32,
    pub(super) fixed: CrFixed,
    pub(super) cr0: CrPolicy,
    pub(super) cr4: CrPolicy,
    pub(super) flush: FlushCaps,
    /// TPR shadow: CR8 accesses go to the virtual-APIC page without exits,
    /// and lowering it below the TPR threshold exits. Without it every CR8
    /// access exits.
    pub(super) tpr_shadow: bool,
}

fn read_cap(msr: u32) -> Result<u64> {
    x86::rdmsr_safe(msr).map_err(|e| {
        pr_err!("vmx: cannot read capability MSR {:#x}\n", msr);
        e
    })
}

/// Adjusts one control word, with a message naming the missing controls.
fn adjust(name: &str, min: u32, opt: u32, cap: u64) -> Result<u32> {
    vmcs::adjust_controls(min, opt, cap).map_err(|missing| {
        pr_err!("vmx: the CPU lacks required {} controls {:#x}\n", name, missing);
        EOPNOTSUPP
    })
}

/// Reads and checks the capability MSRs (C: `vmx_check_processor_compat()`
/// and `setup_vmcs_config()`): what kvm-rs requires is EPT with unrestricted
/// guest, virtual NMIs, MSR bitmaps, and the controls that load and save
/// EFER and PAT; VPID is used when present.
pub(super) fn probe() -> Result<VmxConfig> {
    let fc = x86::rdmsr_safe(vmcs::msr::IA32_FEATURE_CONTROL).unwrap_or(0);
    if let Err(why) = vmcs::feature_control_allows_vmxon(fc) {
        pr_err!("vmx: {} (IA32_FEATURE_CONTROL = {:#x})\n", why, fc);
        return Err(EOPNOTSUPP);
    }
    let basic = VmxBasic::from_msr(read_cap(vmcs::msr::IA32_VMX_BASIC)?);
    if let Err(why) = basic.check() {
        pr_err!("vmx: {}\n", why);
        return Err(EOPNOTSUPP);
    }
    // With the TRUE MSRs, "default1" controls that may be 0 are reported
    // as such (SDM A.2).
    let (pin_msr, proc_msr, exit_msr, entry_msr) = if basic.true_ctls {
        (
            vmcs::msr::IA32_VMX_TRUE_PINBASED_CTLS,
            vmcs::msr::IA32_VMX_TRUE_PROCBASED_CTLS,
            vmcs::msr::IA32_VMX_TRUE_EXIT_CTLS,
            vmcs::msr::IA32_VMX_TRUE_ENTRY_CTLS,
        )
    } else {
        (
            vmcs::msr::IA32_VMX_PINBASED_CTLS,
            vmcs::msr::IA32_VMX_PROCBASED_CTLS,
            vmcs::msr::IA32_VMX_EXIT_CTLS,
            vmcs::msr::IA32_VMX_ENTRY_CTLS,
        )
    };
    let proc_cap = read_cap(proc_msr)?;
    // CR8 in the virtual-APIC page when the CPU can (C KVM: required as
    // "TPR shadow" since 5.x; kvm-rs falls back to CR8 exiting).
    let tpr_shadow = (proc_cap >> 32) as u32 & proc::TPR_SHADOW != 0;
    let cr8_ctls = if tpr_shadow { proc::TPR_SHADOW } else { proc::CR8_LOAD_EXITING | proc::CR8_STORE_EXITING };
    let pin = adjust(
        "pin-based",
        pin::EXT_INTR_EXITING | pin::NMI_EXITING | pin::VIRTUAL_NMIS,
        0,
        read_cap(pin_msr)?,
    )?;
    let proc = adjust(
        "processor-based",
        proc::HLT_EXITING
            | proc::USE_TSC_OFFSETTING
            | cr8_ctls
            | proc::MOV_DR_EXITING
            | proc::UNCOND_IO_EXITING
            | proc::USE_MSR_BITMAPS
            | proc::MWAIT_EXITING
            | proc::MONITOR_EXITING
            | proc::RDPMC_EXITING
            | proc::SECONDARY_CONTROLS,
        0,
        proc_cap,
    )?;
    // The controls the guest toggles must be settable too.
    if (proc_cap >> 32) as u32 & (proc::INTR_WINDOW_EXITING | proc::NMI_WINDOW_EXITING)
        != proc::INTR_WINDOW_EXITING | proc::NMI_WINDOW_EXITING
    {
        pr_err!("vmx: the CPU lacks interrupt- or NMI-window exiting\n");
        return Err(EOPNOTSUPP);
    }
    let ept_cap = read_cap(vmcs::msr::IA32_VMX_EPT_VPID_CAP)?;
    let proc2_cap = read_cap(vmcs::msr::IA32_VMX_PROCBASED_CTLS2)?;
    let vpid = vmcs::vpid_usable(proc2_cap, ept_cap);
    let proc2 = adjust(
        "secondary",
        proc2::ENABLE_EPT | proc2::UNRESTRICTED_GUEST,
        if vpid { proc2::ENABLE_VPID } else { 0 } | proc2::WBINVD_EXITING,
        proc2_cap,
    )?;
    let exit = adjust(
        "VM-exit",
        exit_ctl::HOST_ADDR_SPACE_SIZE
            | exit_ctl::SAVE_IA32_PAT
            | exit_ctl::LOAD_IA32_PAT
            | exit_ctl::SAVE_IA32_EFER
            | exit_ctl::LOAD_IA32_EFER,
        exit_ctl::SAVE_DEBUG_CONTROLS,
        read_cap(exit_msr)?,
    )?;
    let entry = adjust(
        "VM-entry",
        entry_ctl::LOAD_IA32_PAT | entry_ctl::LOAD_IA32_EFER,
        entry_ctl::LOAD_DEBUG_CONTROLS,
        read_cap(entry_msr)?,
    )?;
    let mut flush = vmcs::flush_caps(ept_cap).map_err(|why| {
        pr_err!("vmx: {}\n", why);
        EOPNOTSUPP
    })?;
    if !vpid {
        flush.invvpid = None;
    }
    let fixed = CrFixed {
        cr0_fixed0: read_cap(vmcs::msr::IA32_VMX_CR0_FIXED0)?,
        cr0_fixed1: read_cap(vmcs::msr::IA32_VMX_CR0_FIXED1)?,
        cr4_fixed0: read_cap(vmcs::msr::IA32_VMX_CR4_FIXED0)?,
        cr4_fixed1: read_cap(vmcs::msr::IA32_VMX_CR4_FIXED1)?,
    };
    Ok(VmxConfig {
        basic,
        pin,
        proc,
        proc2,
        exit,
        entry,
        fixed,
        cr0: CrPolicy::cr0(fixed.cr0_fixed0, fixed.cr0_fixed1, true),
        cr4: CrPolicy::cr4(fixed.cr4_fixed0, fixed.cr4_fixed1),
        flush,
        tpr_shadow: proc & proc::TPR_SHADOW != 0,
    })
}
