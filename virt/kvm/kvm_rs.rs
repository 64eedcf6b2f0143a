// SPDX-License-Identifier: GPL-2.0

//! kvm-rs: the Kernel-based Virtual Machine in Rust.
//!
//! The crate root holds only the module declaration and the wiring of the
//! layers: `rust/` abstractions, then the core (`virt/kvm`), then x86
//! (`arch/x86/kvm`), then the vendor backends.

// `pin_init!` of the VM's x86 state (many fields) nests deeper than the default.
#![recursion_limit = "256"]

use kernel::prelude::*;

mod binary_stats;
mod coalesced_mmio;
mod dev_ioctl;
mod halt_poll;
mod kvm_main;
mod memslots;
mod metrics;
// The whole stats ABI (every type, unit and base): not all of it is used yet.
#[allow(dead_code)]
mod stats;
// The ABI tables: entries are used as the features behind them land.
#[allow(dead_code)]
mod uapi;
mod vcpu_limits;
#[path = "../../arch/x86/kvm/x86.rs"]
mod x86;

module! {
    type: KvmModule,
    name: "kvm",
    author: "kvm-rs developers",
    description: "Kernel-based Virtual Machine, in Rust",
    license: "GPL",
}

// The C KVM's `int force_emulation_prefix` (x86.c). The selftests read it to
// learn whether forced emulation is on; kvm-rs does not implement it, so it is
// read-only and 0 (loading with a non-zero value is refused).
kernel::module_param!(
    FORCE_EMULATION_PREFIX: i32 = 0,
    "force_emulation_prefix",
    "Emulate instructions behind the forced-emulation prefix (not supported by kvm-rs)"
);

struct KvmModule {
    _dev: kernel::miscdevice::Registration<kvm_main::KvmDev>,
    /// Dropped after `/dev/kvm` is gone; no VM exists by then.
    _metrics: Option<metrics::Metrics>,
}

impl kernel::Module for KvmModule {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        if FORCE_EMULATION_PREFIX.get() != 0 {
            pr_err!("force_emulation_prefix=1 is not supported\n");
            return Err(EINVAL);
        }
        if kvm_main::halt_poll_ns().is_none() {
            pr_err!("halt_poll_ns must not be negative\n");
            return Err(EINVAL);
        }
        let (arch, vendor) = x86::probe()?;
        let kvm = kvm_main::Kvm::new(arch)?;
        // As with the C KVM's debugfs files, the module works without them.
        let metrics = metrics::register(kvm.registry())
            .inspect_err(|e| pr_warn!("no metrics in debugfs: {:?}\n", e))
            .ok();
        let dev = kvm_main::register(kvm)?;
        pr_info!("kvm-rs loaded ({:?} backend)\n", vendor);
        Ok(KvmModule { _dev: dev, _metrics: metrics })
    }
}
