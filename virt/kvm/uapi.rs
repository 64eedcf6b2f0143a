// SPDX-License-Identifier: GPL-2.0

//! The KVM user-space ABI of `include/uapi/linux/kvm.h` that the core needs:
//! ioctl numbers, capability numbers and errno values.
//!
//! Core-only: this file depends on nothing but `core`, so the host test crate
//! compiles it too. The module checks the numbers that bindgen can see against
//! the kernel's own uapi bindings at build time (`kvm_main.rs`).

/// `KVM_API_VERSION`: the only version there has ever been since 2.6.22.
pub(crate) const KVM_API_VERSION: i32 = 12;

/// The ioctl type byte of KVM.
pub(crate) const KVMIO: u32 = 0xAE;

const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = 8;
const IOC_SIZESHIFT: u32 = 16;
const IOC_DIRSHIFT: u32 = 30;
const IOC_NONE: u32 = 0;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// `_IOC(dir, KVMIO, nr, size)` of `include/uapi/asm-generic/ioctl.h`.
pub(crate) const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << IOC_DIRSHIFT) | (KVMIO << IOC_TYPESHIFT) | (nr << IOC_NRSHIFT) | ((size as u32) << IOC_SIZESHIFT)
}
/// `_IO(KVMIO, nr)`.
pub(crate) const fn io(nr: u32) -> u32 {
    ioc(IOC_NONE, nr, 0)
}
/// `_IOR(KVMIO, nr, size)`.
pub(crate) const fn ior(nr: u32, size: usize) -> u32 {
    ioc(IOC_READ, nr, size)
}
/// `_IOW(KVMIO, nr, size)`.
pub(crate) const fn iow(nr: u32, size: usize) -> u32 {
    ioc(IOC_WRITE, nr, size)
}
/// `_IOWR(KVMIO, nr, size)`.
pub(crate) const fn iowr(nr: u32, size: usize) -> u32 {
    ioc(IOC_READ | IOC_WRITE, nr, size)
}

// System ioctls (on `/dev/kvm`).
/// `KVM_GET_API_VERSION`.
pub(crate) const KVM_GET_API_VERSION: u32 = io(0x00);
/// `KVM_CREATE_VM`.
pub(crate) const KVM_CREATE_VM: u32 = io(0x01);
/// `KVM_CHECK_EXTENSION` (system and VM ioctl).
pub(crate) const KVM_CHECK_EXTENSION: u32 = io(0x03);
/// `KVM_GET_VCPU_MMAP_SIZE`.
pub(crate) const KVM_GET_VCPU_MMAP_SIZE: u32 = io(0x04);
/// x86 `KVM_GET_SUPPORTED_CPUID`: `struct kvm_cpuid2` (8-byte header, then entries).
pub(crate) const KVM_GET_SUPPORTED_CPUID: u32 = iowr(0x05, 8);

// VM ioctls.
/// `KVM_CREATE_VCPU`: the argument is the vCPU id.
pub(crate) const KVM_CREATE_VCPU: u32 = io(0x41);
/// `KVM_ENABLE_CAP` (VM ioctl here; also a vCPU ioctl).
pub(crate) const KVM_ENABLE_CAP: u32 = iow(0xa3, KvmEnableCap::SIZE);

/// `KVM_CAP_NR_VCPUS`: the recommended vCPU count.
pub(crate) const KVM_CAP_NR_VCPUS: i64 = 9;
/// `KVM_CAP_MAX_VCPUS`: the most vCPUs a VM can have.
pub(crate) const KVM_CAP_MAX_VCPUS: i64 = 66;
/// `KVM_CAP_ENABLE_CAP_VM`: `KVM_ENABLE_CAP` works on VM fds.
pub(crate) const KVM_CAP_ENABLE_CAP_VM: i64 = 98;
/// `KVM_CAP_MAX_VCPU_ID`: the bound on vCPU ids; settable per VM.
pub(crate) const KVM_CAP_MAX_VCPU_ID: i64 = 128;

/// `struct kvm_enable_cap` as read from user space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KvmEnableCap {
    /// The capability.
    pub(crate) cap: u32,
    /// Must be 0 for every capability kvm-rs knows.
    pub(crate) flags: u32,
    /// Capability-specific arguments.
    pub(crate) args: [u64; 4],
}

impl KvmEnableCap {
    /// `sizeof(struct kvm_enable_cap)`: cap, flags, args[4], pad[64].
    pub(crate) const SIZE: usize = 104;

    /// Decodes the user-space bytes (native endianness, as the C struct).
    pub(crate) fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let u32_at = |o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[o..o + 8]);
            u64::from_ne_bytes(w)
        };
        Self { cap: u32_at(0), flags: u32_at(4), args: [u64_at(8), u64_at(16), u64_at(24), u64_at(32)] }
    }
}

/// `KVM_CAP_CHECK_EXTENSION_VM`: `KVM_CHECK_EXTENSION` works on VM fds.
pub(crate) const KVM_CAP_CHECK_EXTENSION_VM: i64 = 105;

/// `KVM_X86_DEFAULT_VM`: the ordinary x86 VM type.
pub(crate) const KVM_X86_DEFAULT_VM: usize = 0;

/// x86: page offset of the PIO data page in the vCPU mmap area.
pub(crate) const KVM_PIO_PAGE_OFFSET: usize = 1;
/// Page offset of the coalesced MMIO ring in the vCPU mmap area.
pub(crate) const KVM_COALESCED_MMIO_PAGE_OFFSET: usize = 2;

/// An errno value, positive (`EINVAL` is 22); the module turns it into its
/// kernel error type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Errno(pub i32);

/// Errno values of `include/uapi/asm-generic/errno-base.h` and `errno.h` used by the core.
pub(crate) mod errno {
    use super::Errno;
    /// Argument list too long (`E2BIG`).
    pub(crate) const E2BIG: Errno = Errno(7);
    /// I/O error.
    pub(crate) const EIO: Errno = Errno(5);
    /// Out of memory.
    pub(crate) const ENOMEM: Errno = Errno(12);
    /// Bad address.
    pub(crate) const EFAULT: Errno = Errno(14);
    /// Invalid argument.
    pub(crate) const EINVAL: Errno = Errno(22);
    /// Inappropriate ioctl for device.
    pub(crate) const ENOTTY: Errno = Errno(25);
    /// Operation not supported.
    pub(crate) const EOPNOTSUPP: Errno = Errno(95);
}

#[cfg(test)]
mod tests {
    use super::*;

    // Values as the C headers compute them (checked with the kernel's own _IO macros).
    #[test]
    fn system_ioctl_numbers() {
        assert_eq!(KVM_GET_API_VERSION, 0xae00);
        assert_eq!(KVM_CREATE_VM, 0xae01);
        assert_eq!(KVM_CHECK_EXTENSION, 0xae03);
        assert_eq!(KVM_GET_VCPU_MMAP_SIZE, 0xae04);
        assert_eq!(KVM_GET_SUPPORTED_CPUID, 0xc008_ae05);
    }

    #[test]
    fn vm_ioctl_numbers() {
        assert_eq!(KVM_CREATE_VCPU, 0xae41);
        assert_eq!(KVM_ENABLE_CAP, 0x4068_aea3);
    }

    #[test]
    fn enable_cap_decoding() {
        let mut b = [0u8; KvmEnableCap::SIZE];
        b[0..4].copy_from_slice(&128u32.to_ne_bytes());
        b[4..8].copy_from_slice(&1u32.to_ne_bytes());
        b[8..16].copy_from_slice(&4095u64.to_ne_bytes());
        b[32..40].copy_from_slice(&u64::MAX.to_ne_bytes());
        b[103] = 0xff; // padding is ignored, as by the C KVM
        let c = KvmEnableCap::from_bytes(&b);
        assert_eq!(c, KvmEnableCap { cap: 128, flags: 1, args: [4095, 0, 0, u64::MAX] });
    }

    #[test]
    fn ioctl_encoding_with_size_and_direction() {
        // KVM_SET_USER_MEMORY_REGION = _IOW(KVMIO, 0x46, struct kvm_userspace_memory_region /* 32 bytes */)
        assert_eq!(iow(0x46, 32), 0x4020_ae46);
        // KVM_GET_REGS = _IOR(KVMIO, 0x81, struct kvm_regs /* 144 bytes */)
        assert_eq!(ior(0x81, 144), 0x8090_ae81);
        // KVM_GET_SUPPORTED_CPUID = _IOWR(KVMIO, 0x05, struct kvm_cpuid2 /* 8 bytes */)
        assert_eq!(iowr(0x05, 8), 0xc008_ae05);
    }
}
