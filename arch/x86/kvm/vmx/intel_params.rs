// SPDX-License-Identifier: GPL-2.0

//! `kvm_intel.ko` of kvm-rs: the read-only parameters of the C `kvm-intel`
//! module, describing the VMX backend that `kvm.ko` contains.
//!
//! kvm-rs is one module, `kvm`, with both backends inside. Tools learn how
//! the C KVM's Intel backend is configured from
//! `/sys/module/kvm_intel/parameters/` (the KVM selftests read `ept` and
//! `unrestricted_guest`; libvirt reads `nested`). This module publishes those
//! names with the values that hold for kvm-rs's VMX backend: EPT, unrestricted
//! guest and virtual NMIs are always used (the backend refuses to load
//! without them); VPID is used when the CPU has it, decided by the same
//! function as the backend's probe ([`vmcs::vpid_usable`]); APIC
//! virtualization, EPT accessed/dirty bits, PML, the preemption timer,
//! FlexPriority, smaller MAXPHYADDR and nested VMX are not implemented. It
//! does nothing else, and loads only where the VMX backend runs.

use kernel::prelude::*;
use kernel::x86;

#[allow(dead_code)]
#[path = "vmcs.rs"]
mod vmcs;

module! {
    type: KvmIntelParams,
    name: "kvm_intel",
    author: "kvm-rs developers",
    description: "kvm-rs: parameters of the VMX backend (the backend is in kvm.ko)",
    license: "GPL",
}

kernel::module_param!(EPT: bool = true, "ept", "EPT (always on in kvm-rs)");
kernel::module_param!(
    UNRESTRICTED_GUEST: bool = true,
    "unrestricted_guest",
    "Unrestricted guest (always on in kvm-rs)"
);
kernel::module_param!(VPID: bool = true, "vpid", "VPID (used when the CPU has it)");
kernel::module_param!(VNMI: bool = true, "vnmi", "Virtual NMIs (always on in kvm-rs)");
kernel::module_param!(FLEXPRIORITY: bool = false, "flexpriority", "APIC-access page (not implemented by kvm-rs)");
kernel::module_param!(EPTAD: bool = false, "eptad", "EPT accessed/dirty bits (not implemented by kvm-rs)");
kernel::module_param!(ENABLE_APICV: bool = false, "enable_apicv", "APIC virtualization (not implemented by kvm-rs)");
kernel::module_param!(PML: bool = false, "pml", "Page-modification logging (not implemented by kvm-rs)");
kernel::module_param!(
    PREEMPTION_TIMER: bool = false,
    "preemption_timer",
    "VMX preemption timer (not used by kvm-rs)"
);
kernel::module_param!(
    ALLOW_SMALLER_MAXPHYADDR: bool = false,
    "allow_smaller_maxphyaddr",
    "Guest MAXPHYADDR below the host's (not implemented by kvm-rs)"
);
kernel::module_param!(NESTED: bool = false, "nested", "Nested VMX (not implemented by kvm-rs)");

/// CR4.VMXE.
const CR4_VMXE: u64 = 1 << 13;

struct KvmIntelParams;

impl kernel::Module for KvmIntelParams {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        if !x86::boot_cpu_has(x86::Feature::Vmx) {
            pr_err!("kvm_intel: the VMX backend needs a CPU with VMX\n");
            return Err(EOPNOTSUPP);
        }
        // kvm.ko's VMX backend put every CPU in VMX operation: without it
        // the values below would describe nothing.
        if x86::read_cr4() & CR4_VMXE == 0 {
            pr_err!("kvm_intel: VMX is off: load kvm.ko (kvm-rs) first\n");
            return Err(ENODEV);
        }
        let proc2 = x86::rdmsr_safe(vmcs::msr::IA32_VMX_PROCBASED_CTLS2)?;
        let ept_vpid = x86::rdmsr_safe(vmcs::msr::IA32_VMX_EPT_VPID_CAP)?;
        let vpid = vmcs::vpid_usable(proc2, ept_vpid);
        // The values describe kvm-rs; loading with others would be a lie.
        // `vpid=1` on a CPU without VPID is reported as 0, as kvm-intel does.
        if !EPT.get()
            || !UNRESTRICTED_GUEST.get()
            || !VNMI.get()
            || (vpid && !VPID.get())
            || FLEXPRIORITY.get()
            || EPTAD.get()
            || ENABLE_APICV.get()
            || PML.get()
            || PREEMPTION_TIMER.get()
            || ALLOW_SMALLER_MAXPHYADDR.get()
            || NESTED.get()
        {
            pr_err!(
                "kvm_intel: kvm-rs supports only ept=1 unrestricted_guest=1 vnmi=1 vpid={} and the rest 0\n",
                u8::from(vpid)
            );
            return Err(EINVAL);
        }
        VPID.set(vpid);
        Ok(KvmIntelParams)
    }
}
