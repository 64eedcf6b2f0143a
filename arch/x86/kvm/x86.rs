// SPDX-License-Identifier: GPL-2.0

//! x86 common code (`arch/x86/kvm/x86.c`): the [`Arch`] of the core, and the
//! choice of the vendor backend at module load.

use crate::kvm_main::{err, Arch};
use crate::uapi::{self, errno};
use cpuid::{CpuidEntry, HostCpuid};
use kernel::{prelude::*, uaccess::UserSlice, x86};

#[path = "cpuid.rs"]
mod cpuid;
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

    fn dev_ioctl(&self, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            uapi::KVM_GET_SUPPORTED_CPUID => get_supported_cpuid(arg),
            // `kvm_arch_dev_ioctl()` answers -EINVAL to what it does not
            // handle; KVM_GET_MSR_INDEX_LIST and the rest are not implemented yet.
            _ => Err(err(errno::EINVAL)),
        }
    }
}

/// The host CPU, for the CPUID table.
struct Host;

impl HostCpuid for Host {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        x86::cpuid_count(leaf, subleaf)
    }
    fn host_xcr0(&self) -> u64 {
        x86::host_xcr0()
    }
}

/// `KVM_GET_SUPPORTED_CPUID`: reads `nent` once, writes the entries, then
/// the new `nent`, as `kvm_arch_dev_ioctl()` does (nothing is written on error).
fn get_supported_cpuid(arg: usize) -> Result<isize> {
    let mut hdr = [0u8; 8];
    UserSlice::new(arg, hdr.len()).reader().read_slice(&mut hdr)?;
    let nent = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
    let cap = cpuid::supported_cpuid_capacity(nent).map_err(err)?;
    let mut entries = KVec::from_elem(CpuidEntry::default(), cap, GFP_KERNEL)?;
    let n = cpuid::supported_cpuid(&Host, &mut entries).map_err(err)?;
    let mut w = UserSlice::new(arg + hdr.len(), n * CpuidEntry::SIZE).writer();
    for e in &entries[..n] {
        w.write_slice(&e.to_bytes())?;
    }
    hdr[0..4].copy_from_slice(&(n as u32).to_ne_bytes());
    UserSlice::new(arg, hdr.len()).writer().write_slice(&hdr)?;
    Ok(0)
}
