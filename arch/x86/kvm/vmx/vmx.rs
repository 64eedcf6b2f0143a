// SPDX-License-Identifier: GPL-2.0

//! The Intel VMX backend (`arch/x86/kvm/vmx/vmx.c`).

use kernel::prelude::*;

/// The VMX backend does not exist yet: refuse to load rather than pretend.
pub(super) fn probe() -> Result {
    pr_err!("vmx: the VMX backend is not implemented yet; kvm-rs runs on AMD SVM only\n");
    Err(EOPNOTSUPP)
}
