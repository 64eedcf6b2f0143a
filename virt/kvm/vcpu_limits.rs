// SPDX-License-Identifier: GPL-2.0

//! How many vCPUs a VM may have and which ids they may take
//! (`kvm_vm_ioctl_create_vcpu()`, x86's `kvm_arch_vcpu_precreate()` and
//! `KVM_CAP_MAX_VCPU_ID` in `kvm_vm_ioctl_enable_cap()`).
//!
//! Core-only (host-tested). The caller holds the VM's lock around every call.

use crate::uapi::{errno, Errno};

/// `KVM_MAX_VCPUS` of x86 in 6.12 (`CONFIG_KVM_MAX_NR_VCPUS` = 1024).
pub(crate) const KVM_MAX_VCPUS: u32 = 1024;
/// `KVM_MAX_VCPU_IDS`: x86 allows ids up to four times the vCPU count
/// (`KVM_VCPU_ID_RATIO`), since APIC ids can be sparse.
pub(crate) const KVM_MAX_VCPU_IDS: u32 = KVM_MAX_VCPUS * 4;

/// The vCPU bookkeeping of one VM.
#[derive(Debug, Default)]
pub(crate) struct VcpuLimits {
    /// The id bound set by `KVM_CAP_MAX_VCPU_ID` or fixed at the first vCPU
    /// creation; 0 until then.
    max_vcpu_ids: u32,
    /// vCPUs created or being created.
    created: u32,
}

impl VcpuLimits {
    /// `KVM_ENABLE_CAP(KVM_CAP_MAX_VCPU_ID, max)`: allowed once, before any
    /// vCPU exists, up to `KVM_MAX_VCPU_IDS`; setting the same value again is fine.
    pub(crate) fn set_max_vcpu_id(&mut self, max: u64) -> Result<(), Errno> {
        if max > u64::from(KVM_MAX_VCPU_IDS) {
            return Err(errno::EINVAL);
        }
        let max = max as u32;
        if self.max_vcpu_ids == max {
            Ok(())
        } else if self.max_vcpu_ids == 0 {
            self.max_vcpu_ids = max;
            Ok(())
        } else {
            Err(errno::EINVAL)
        }
    }

    /// Reserves a vCPU with id `id` (the raw `KVM_CREATE_VCPU` argument).
    /// Whether the id is already taken is the caller's check (`-EEXIST`);
    /// if creation fails later, the caller gives the reservation back with
    /// [`VcpuLimits::cancel`].
    pub(crate) fn reserve(&mut self, id: u64) -> Result<u32, Errno> {
        if id >= u64::from(KVM_MAX_VCPU_IDS) {
            return Err(errno::EINVAL);
        }
        if self.created >= KVM_MAX_VCPUS {
            return Err(errno::EINVAL);
        }
        if self.max_vcpu_ids == 0 {
            self.max_vcpu_ids = KVM_MAX_VCPU_IDS;
        }
        if id >= u64::from(self.max_vcpu_ids) {
            return Err(errno::EINVAL);
        }
        self.created += 1;
        Ok(id as u32)
    }

    /// vCPUs created or being created (C: `kvm->created_vcpus`).
    pub(crate) fn created(&self) -> u32 {
        self.created
    }

    /// Gives back a reservation whose vCPU could not be created.
    pub(crate) fn cancel(&mut self) {
        self.created -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_vcpu_id_once_and_bounded() {
        let mut l = VcpuLimits::default();
        assert_eq!(l.set_max_vcpu_id(u64::from(KVM_MAX_VCPU_IDS) + 1), Err(errno::EINVAL));
        assert_eq!(l.set_max_vcpu_id(3), Ok(()));
        assert_eq!(l.set_max_vcpu_id(3), Ok(()));
        assert_eq!(l.set_max_vcpu_id(4), Err(errno::EINVAL));
        assert_eq!(l.reserve(3), Err(errno::EINVAL));
        assert_eq!(l.reserve(2), Ok(2));
    }

    #[test]
    fn first_vcpu_fixes_the_id_bound() {
        let mut l = VcpuLimits::default();
        assert_eq!(l.reserve(0), Ok(0));
        assert_eq!(l.set_max_vcpu_id(8), Err(errno::EINVAL));
        assert_eq!(l.set_max_vcpu_id(u64::from(KVM_MAX_VCPU_IDS)), Ok(()));
    }

    #[test]
    fn ids_above_32_bits_are_rejected() {
        let mut l = VcpuLimits::default();
        assert_eq!(l.reserve(1 << 32), Err(errno::EINVAL));
        assert_eq!(l.reserve(u64::MAX), Err(errno::EINVAL));
        assert_eq!(l.reserve(u64::from(KVM_MAX_VCPU_IDS) - 1), Ok(KVM_MAX_VCPU_IDS - 1));
    }

    #[test]
    fn at_most_max_vcpus_and_cancel_gives_back() {
        let mut l = VcpuLimits::default();
        for id in 0..KVM_MAX_VCPUS {
            assert_eq!(l.reserve(u64::from(id)), Ok(id));
        }
        assert_eq!(l.reserve(u64::from(KVM_MAX_VCPUS)), Err(errno::EINVAL));
        l.cancel();
        assert!(l.reserve(u64::from(KVM_MAX_VCPUS)).is_ok());
    }
}
