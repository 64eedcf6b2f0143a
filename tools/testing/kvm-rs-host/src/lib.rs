// SPDX-License-Identifier: GPL-2.0

//! The hardware-independent files of kvm-rs, compiled for the host.
//!
//! Each file listed here depends only on `core` and is compiled, unchanged, both
//! into the kernel module and into this crate, so `cargo test` checks its logic in
//! seconds. The module paths mirror the module's crate root (`virt/kvm/kvm_rs.rs`),
//! so `crate::uapi` resolves the same way in both builds.

#![no_std]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate std;

#[allow(dead_code)]
#[path = "../../../../virt/kvm/uapi.rs"]
mod uapi;

#[allow(dead_code)]
#[path = "../../../../virt/kvm/dev_ioctl.rs"]
mod dev_ioctl;

#[allow(dead_code)]
#[path = "../../../../virt/kvm/vcpu_limits.rs"]
mod vcpu_limits;

#[allow(dead_code)]
#[path = "../../../../virt/kvm/halt_poll.rs"]
mod halt_poll;

#[allow(dead_code)]
#[path = "../../../../arch/x86/kvm/cpuid.rs"]
mod cpuid;

#[allow(dead_code)]
#[path = "../../../../arch/x86/kvm/svm/vmcb.rs"]
mod vmcb;

#[allow(dead_code)]
#[path = "../../../../arch/x86/kvm/msr_filter.rs"]
mod msr_filter;

#[allow(dead_code)]
#[path = "../../../../arch/x86/kvm/mce.rs"]
mod mce;

#[allow(dead_code)]
#[path = "../../../../virt/kvm/coalesced_mmio.rs"]
mod coalesced_mmio;

#[allow(dead_code)]
#[path = "../../../../virt/kvm/memslots.rs"]
mod memslots;

#[allow(dead_code)]
#[path = "../../../../arch/x86/kvm/mmu/paging_tmpl.rs"]
mod paging_tmpl;

#[allow(dead_code)]
#[path = "../../../../arch/x86/kvm/emulate.rs"]
mod emulate;

#[allow(dead_code)]
#[path = "../../../../arch/x86/kvm/lapic.rs"]
mod lapic;

#[allow(dead_code)]
#[path = "../../../../arch/x86/kvm/regs.rs"]
mod regs;

#[allow(dead_code)]
#[path = "../../../../arch/x86/kvm/msrs.rs"]
mod msrs;

#[allow(dead_code)]
#[path = "../../../../arch/x86/kvm/pio.rs"]
mod pio;

#[allow(dead_code)]
#[path = "../../../../arch/x86/kvm/irq.rs"]
mod irq;

#[allow(dead_code)]
#[path = "../../../../arch/x86/kvm/ioapic.rs"]
mod ioapic;

#[allow(dead_code)]
#[path = "../../../../arch/x86/kvm/i8259.rs"]
mod i8259;

#[allow(dead_code)]
#[path = "../../../../arch/x86/kvm/irq_comm.rs"]
mod irq_comm;

#[allow(dead_code)]
#[path = "../../../../virt/kvm/stats.rs"]
mod stats;

#[allow(dead_code)]
#[path = "../../../../arch/x86/kvm/vmx/vmcs.rs"]
mod vmcs;

#[allow(dead_code)]
#[path = "../../../../arch/x86/kvm/vmx/loaded_vmcs.rs"]
mod loaded_vmcs;

// Compiled here only, not into the module: nested VMX does not exist yet, so
// nothing may offer these MSRs (see the file's documentation).
#[allow(dead_code)]
#[path = "../../../../arch/x86/kvm/vmx/nested_msrs.rs"]
mod nested_msrs;
