// SPDX-License-Identifier: GPL-2.0

//! The SVM instructions (`arch/x86/kvm/svm/svm_ops.h` and `vmenter.S` in the
//! C KVM): the one place of the SVM backend with `unsafe`.
//!
//! Each function here is a safe wrapper whose argument types carry what the
//! instruction needs to be sound: a VMCB in page-aligned memory with its
//! physical address, a host save area that outlives the CPU's use of it, and
//! interrupts disabled across the world switch.

use super::vmcb::Vmcb;
use kernel::{
    hwmem::{HwBox, HwZeroable},
    prelude::*,
    smp::IrqDisabled,
    x86,
};

// SAFETY: `Vmcb` is `repr(C)` and made only of integers and integer arrays
// (its `ZERO` constant is all zero bytes).
unsafe impl HwZeroable for Vmcb {}

/// `MSR_EFER`.
const MSR_EFER: u32 = 0xc000_0080;
/// `EFER.SVME`: SVM instructions enabled (AMD APM vol. 2, 15.4).
const EFER_SVME: u64 = 1 << 12;
/// `MSR_VM_HSAVE_PA`: where VMRUN saves the host state (APM 15.30.4).
const MSR_VM_HSAVE_PA: u32 = 0xc001_0117;

/// A 4 KiB page for the processor: the host save area of MSR_VM_HSAVE_PA,
/// or the target of the host's VMSAVE.
pub(crate) type HostPage = HwBox<[u64; 512]>;

/// Enables SVM on this CPU: sets EFER.SVME and points MSR_VM_HSAVE_PA at
/// `hsave`. `hsave` must stay allocated until [`disable_on_this_cpu`] ran on
/// this CPU: the caller keeps it in the module's per-CPU state, which is freed
/// only after every CPU's teardown (or offlining) has run.
pub(crate) fn enable_on_this_cpu(_irq: &IrqDisabled, hsave: &HostPage) -> Result {
    let efer = x86::rdmsr_safe(MSR_EFER)?;
    // SAFETY: Setting EFER.SVME only enables the SVM instructions; the host
    // save area address is a page we own for as long as SVM stays enabled
    // on this CPU (see above). Interrupts are off, so nothing else on this
    // CPU touches EFER in between.
    unsafe {
        x86::wrmsr_safe(MSR_EFER, efer | EFER_SVME)?;
        x86::wrmsr_safe(MSR_VM_HSAVE_PA, hsave.phys_addr())?;
    }
    Ok(())
}

/// Disables SVM on this CPU (clears MSR_VM_HSAVE_PA and EFER.SVME), after
/// setting GIF so that interrupts and NMIs are not left blocked. Safe to call
/// when SVM is not enabled, and from NMI context (the crash path).
pub(crate) fn disable_on_this_cpu() {
    let Ok(efer) = x86::rdmsr_safe(MSR_EFER) else { return };
    if efer & EFER_SVME == 0 {
        return;
    }
    // SAFETY: STGI is valid with EFER.SVME set and only unblocks interrupts,
    // which a host CPU outside VMRUN must have anyway. Clearing the host save
    // address and EFER.SVME disables the SVM instructions; no VMRUN can be in
    // progress on this CPU while this runs.
    unsafe {
        core::arch::asm!("stgi", options(nostack, preserves_flags));
        let _ = x86::wrmsr_safe(MSR_VM_HSAVE_PA, 0);
        let _ = x86::wrmsr_safe(MSR_EFER, efer & !EFER_SVME);
    }
}

extern "C" {
    /// `vmenter.S`.
    fn kvm_rs_svm_vcpu_run(vmcb_pa: u64, host_save_pa: u64, regs: *mut u64) -> u64;
}

/// What the world switch needs besides the VMCB.
pub(crate) struct SwitchCtx<'a> {
    /// This CPU's page for the host's VMSAVE state.
    pub(crate) host_save: &'a HostPage,
    /// The guest's XCR0 if it differs from the host's (validated when the
    /// guest or user space set it: a subset of the host's XCR0, with x87 state).
    pub(crate) guest_xcr0: Option<u64>,
    /// The host's XCR0, restored after the guest ran (0: the kernel did not
    /// set CR4.OSXSAVE).
    pub(crate) host_xcr0: u64,
    /// The guest's PKRU, if it is to be loaded.
    pub(crate) guest_pkru: Option<u32>,
    /// The host's PKRU, restored after the guest ran.
    pub(crate) host_pkru: u32,
}

/// What the world switch found on the way out.
pub(crate) struct SwitchOut {
    /// No SVM instruction faulted.
    pub(crate) ok: bool,
    /// The guest's XCR0 at #VMEXIT.
    pub(crate) xcr0: u64,
    /// The guest's PKRU at #VMEXIT, if it was loaded.
    pub(crate) pkru: Option<u32>,
}

/// Reads XCR0 (the CPU has XSAVE and the kernel set CR4.OSXSAVE: the callers
/// check `X86_FEATURE_OSXSAVE` first).
fn xgetbv0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: XGETBV(0) only reads XCR0; valid with CR4.OSXSAVE, see above.
    unsafe { core::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    u64::from(lo) | u64::from(hi) << 32
}

/// Reads PKRU (the host has CR4.PKE set: callers only switch PKRU then).
fn rdpkru() -> u32 {
    let v: u32;
    // SAFETY: RDPKRU only reads PKRU; valid with CR4.PKE, see above.
    unsafe { core::arch::asm!("rdpkru", in("ecx") 0u32, out("eax") v, out("edx") _, options(nomem, nostack, preserves_flags)) };
    v
}

/// Writes PKRU.
///
/// # Safety
///
/// CR4.PKE is set, and the value is the guest's (about to run, with
/// interrupts off) or the host's own.
unsafe fn wrpkru(v: u32) {
    // SAFETY: Per the caller.
    unsafe { core::arch::asm!("wrpkru", in("eax") v, in("ecx") 0u32, in("edx") 0u32, options(nostack, preserves_flags)) };
}

/// Runs the guest of `vmcb` until the next #VMEXIT.
///
/// `regs` are the guest's general-purpose registers in x86 numbering; the
/// entries for RAX and RSP are not used (VMRUN switches those through the
/// VMCB). Returns `false` if an SVM instruction faulted (EFER.SVME was cleared
/// by the emergency path): the guest state is then not meaningful.
///
/// Must run on a CPU where [`enable_on_this_cpu`] ran, with interrupts off
/// (`irq`). The nested page table named by the VMCB, its I/O and MSR
/// permission maps and every guest page mapped in the nested page table stay
/// allocated while any vCPU may be in guest mode: the MMU frees tables and
/// unpins pages only after kicking every vCPU out of guest mode, and the
/// permission maps belong to the vCPU that owns the VMCB.
pub(crate) fn run(_irq: &IrqDisabled, vmcb: &mut HwBox<Vmcb>, ctx: &SwitchCtx<'_>, regs: &mut [u64; 16]) -> SwitchOut {
    let vmcb_pa = vmcb.phys_addr();
    // XCR0 always has x87 state: 0 means the kernel did not set CR4.OSXSAVE.
    let has_xsave = ctx.host_xcr0 != 0;
    if let Some(pkru) = ctx.guest_pkru {
        // SAFETY: Only requested when the host has CR4.PKE; interrupts are
        // off, so no host code touches user memory until it is restored.
        unsafe { wrpkru(pkru) };
    }
    if let Some(xcr0) = ctx.guest_xcr0 {
        // SAFETY: The value was validated as an XCR0 the CPU accepts, a
        // subset of the host's; with interrupts off, the FPU core cannot
        // save or restore state until it is restored below (NMI handlers do
        // not use the FPU).
        unsafe { x86::xsetbv(0, xcr0) };
    }
    x86::amd_clear_divider();
    // SAFETY: Interrupts are off (`_irq`); the world switch clears GIF before
    // it sets RFLAGS.IF and clears IF again before it sets GIF. The VMCB is
    // page-aligned memory we hold exclusively (`&mut`), the host save page is
    // this CPU's, `regs` is 16 writable `u64`s; the structures the VMCB points
    // to stay valid while the guest runs (see above). A faulting SVM
    // instruction is fixed up and reported.
    let fault = unsafe { kvm_rs_svm_vcpu_run(vmcb_pa, ctx.host_save.phys_addr(), regs.as_mut_ptr()) };
    // The guest's XCR0 is read back whether or not it was loaded: a CPU that
    // does not intercept XSETBV (QEMU's emulated SVM) lets the guest change
    // it, and the host must never run with a guest value.
    let xcr0 = if has_xsave { xgetbv0() } else { 0 };
    if has_xsave && xcr0 != ctx.host_xcr0 {
        // SAFETY: The host's own XCR0, read before entry.
        unsafe { x86::xsetbv(0, ctx.host_xcr0) };
    }
    let pkru = ctx.guest_pkru.map(|_| rdpkru());
    if let Some(p) = pkru {
        if p != ctx.host_pkru {
            // SAFETY: The host's own PKRU, read before entry; CR4.PKE is set.
            unsafe { wrpkru(ctx.host_pkru) };
        }
    }
    SwitchOut { ok: fault == 0, xcr0, pkru }
}
