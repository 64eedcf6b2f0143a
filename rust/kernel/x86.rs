// SPDX-License-Identifier: GPL-2.0

//! x86 CPU features and model-specific registers.
//!
//! C headers: [`arch/x86/include/asm/cpufeature.h`](srctree/arch/x86/include/asm/cpufeature.h),
//! [`arch/x86/include/asm/msr.h`](srctree/arch/x86/include/asm/msr.h)

use crate::{bindings, error::{code::EIO, Result}};

/// A CPU feature bit of `boot_cpu_data` (`X86_FEATURE_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Feature {
    /// Intel VMX.
    Vmx = bindings::X86_FEATURE_VMX as u16,
    /// AMD SVM.
    Svm = bindings::X86_FEATURE_SVM as u16,
    /// Hypervisor present (we run as a guest).
    Hypervisor = bindings::X86_FEATURE_HYPERVISOR as u16,
    /// SVM nested paging.
    Npt = bindings::X86_FEATURE_NPT as u16,
    /// SVM next-RIP save.
    Nrips = bindings::X86_FEATURE_NRIPS as u16,
}

/// Whether the boot CPU (and so, on x86, every CPU) has `f`.
pub fn boot_cpu_has(f: Feature) -> bool {
    // SAFETY: Reads `boot_cpu_data`, which is set up before any module loads.
    unsafe { bindings::boot_cpu_has(f as u16) }
}

/// Reads MSR `msr` on the current CPU; an MSR the CPU faults on gives `EIO`
/// instead of an oops (the `#GP` is caught by an exception-table fixup).
pub fn rdmsr_safe(msr: u32) -> Result<u64> {
    let mut val = 0u64;
    // SAFETY: `rdmsrl_safe` only writes `val`; a faulting RDMSR is fixed up.
    let r = unsafe { bindings::rdmsrl_safe(msr, &mut val) };
    if r != 0 {
        return Err(EIO);
    }
    Ok(val)
}

/// `[eax, ebx, ecx, edx]` of `CPUID(leaf, subleaf)` on the current CPU.
pub fn cpuid_count(leaf: u32, subleaf: u32) -> [u32; 4] {
    let mut r = [0u32; 4];
    let [a, b, c, d] = &mut r;
    // SAFETY: CPUID has no side effects the kernel cares about; the pointers
    // are to four distinct local `u32`s.
    unsafe { bindings::cpuid_count(leaf, subleaf, a, b, c, d) };
    r
}

/// The host's XCR0 (the XSAVE features the kernel enabled), 0 without XSAVE.
pub fn host_xcr0() -> u64 {
    // SAFETY: Reads XCR0 only when CR4.OSXSAVE is set (checked by the helper).
    unsafe { bindings::host_xcr0() }
}
