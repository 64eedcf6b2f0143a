// SPDX-License-Identifier: GPL-2.0

//! `kvm_amd.ko` of kvm-rs: the read-only parameters of the C `kvm-amd` module,
//! describing the SVM backend that `kvm.ko` contains.
//!
//! kvm-rs is one module, `kvm`, with both backends inside. Tools learn how the
//! C KVM's AMD backend is configured from `/sys/module/kvm_amd/parameters/`
//! (the KVM selftests read `npt` and `avic`; libvirt reads `nested`). This
//! module publishes the same names with the values that hold for kvm-rs's SVM
//! backend, which are fixed: nested paging is always used (kvm-rs refuses to
//! load without it), AVIC and nested SVM are not implemented. It does nothing
//! else, and loads only where the SVM backend can run.

use kernel::prelude::*;
use kernel::x86;

module! {
    type: KvmAmdParams,
    name: "kvm_amd",
    author: "kvm-rs developers",
    description: "kvm-rs: parameters of the SVM backend (the backend is in kvm.ko)",
    license: "GPL",
}

kernel::module_param!(NPT: bool = true, "npt", "Nested paging (always on in kvm-rs)");
kernel::module_param!(AVIC: bool = false, "avic", "AVIC (not implemented by kvm-rs)");
kernel::module_param!(NESTED: i32 = 0, "nested", "Nested SVM (not implemented by kvm-rs)");

struct KvmAmdParams;

impl kernel::Module for KvmAmdParams {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        if !x86::boot_cpu_has(x86::Feature::Svm) || !x86::boot_cpu_has(x86::Feature::Npt) {
            pr_err!("kvm_amd: the SVM backend needs SVM with nested paging\n");
            return Err(EOPNOTSUPP);
        }
        // The values describe kvm-rs; loading with others would be a lie.
        if !NPT.get() || AVIC.get() || NESTED.get() != 0 {
            pr_err!("kvm_amd: kvm-rs supports only npt=1 avic=0 nested=0\n");
            return Err(EINVAL);
        }
        Ok(KvmAmdParams)
    }
}
