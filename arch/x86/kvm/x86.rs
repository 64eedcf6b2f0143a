// SPDX-License-Identifier: GPL-2.0

//! x86 common code (`arch/x86/kvm/x86.c`): the [`Arch`] of the core, and the
//! choice of the vendor backend at module load.

use crate::kvm_main::Arch;
use crate::uapi::{self, errno, Errno};
use kernel::{prelude::*, x86};

#[path = "svm/svm.rs"]
mod svm;
#[path = "vmx/vmx.rs"]
mod vmx;

/// The hardware virtualization extension in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Vendor {
    /// AMD SVM.
    Svm,
    /// Intel VMX.
    Vmx,
}

/// x86 state of the module.
pub(crate) struct X86 {
    vendor: Vendor,
}

impl X86 {
    /// Finds the CPU's virtualization extension and checks the backend can use it.
    /// Fails with `EOPNOTSUPP` and a message saying why, as `kvm-amd` and
    /// `kvm-intel` do.
    pub(crate) fn probe() -> Result<Self> {
        let vendor = if x86::boot_cpu_has(x86::Feature::Svm) {
            svm::probe()?;
            Vendor::Svm
        } else if x86::boot_cpu_has(x86::Feature::Vmx) {
            vmx::probe()?;
            Vendor::Vmx
        } else {
            pr_err!("no hardware virtualization: the CPU has neither SVM nor VMX\n");
            return Err(EOPNOTSUPP);
        };
        Ok(X86 { vendor })
    }

    /// The backend chosen by [`X86::probe`].
    pub(crate) fn vendor(&self) -> Vendor {
        self.vendor
    }
}

impl Arch for X86 {
    fn check_extension(&self, _cap: i64) -> i64 {
        // No x86 capability is implemented yet.
        0
    }

    fn vm_type_supported(&self, vm_type: usize) -> bool {
        vm_type == uapi::KVM_X86_DEFAULT_VM
    }

    fn dev_ioctl(&self, _cmd: u32, _arg: usize) -> Result<isize, Errno> {
        // `kvm_arch_dev_ioctl()` answers -EINVAL to what it does not handle;
        // none of its ioctls (MSR lists, supported CPUID, ...) is implemented yet.
        Err(errno::EINVAL)
    }
}
