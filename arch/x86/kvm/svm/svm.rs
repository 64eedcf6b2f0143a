// SPDX-License-Identifier: GPL-2.0

//! The AMD SVM backend (`arch/x86/kvm/svm/svm.c`).

use kernel::{prelude::*, x86};

/// `MSR_VM_CR` (AMD APM vol. 2, 15.30.1).
const MSR_VM_CR: u32 = 0xc001_0114;
/// `VM_CR.SVMDIS`: SVME cannot be set in EFER (firmware disabled SVM).
const VM_CR_SVMDIS: u64 = 1 << 4;

/// Checks that SVM can be used, as `kvm_is_svm_supported()` does, and that it
/// has what kvm-rs needs (nested paging).
pub(super) fn probe() -> Result {
    let vm_cr = x86::rdmsr_safe(MSR_VM_CR).map_err(|e| {
        pr_err!("svm: cannot read MSR_VM_CR\n");
        e
    })?;
    if vm_cr & VM_CR_SVMDIS != 0 {
        pr_err!("svm: SVM is disabled by the firmware (MSR_VM_CR.SVMDIS)\n");
        return Err(EOPNOTSUPP);
    }
    if !x86::boot_cpu_has(x86::Feature::Npt) {
        pr_err!("svm: the CPU has no nested paging; kvm-rs requires it\n");
        return Err(EOPNOTSUPP);
    }
    Ok(())
}
