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

/// `KVM_GET_DIRTY_LOG` (VM ioctl).
pub(crate) const KVM_GET_DIRTY_LOG: u32 = iow(0x42, 16);
/// `KVM_SET_SIGNAL_MASK` (vCPU ioctl): `struct kvm_signal_mask` is a `__u32
/// len` followed by the set.
pub(crate) const KVM_SET_SIGNAL_MASK: u32 = iow(0x8b, 4);
/// `KVM_RUN`.
pub(crate) const KVM_RUN: u32 = io(0x80);
/// `KVM_CAP_IMMEDIATE_EXIT`: `kvm_run.immediate_exit` is honoured.
pub(crate) const KVM_CAP_IMMEDIATE_EXIT: i64 = 136;

/// Offsets in `struct kvm_run` (checked against the kernel's uapi bindings
/// at build time).
pub(crate) mod run {
    /// `__u8 request_interrupt_window`.
    pub(crate) const REQUEST_INTERRUPT_WINDOW: usize = 0;
    /// `__u8 immediate_exit`.
    pub(crate) const IMMEDIATE_EXIT: usize = 1;
    /// `__u32 exit_reason`.
    pub(crate) const EXIT_REASON: usize = 8;
    /// `__u8 ready_for_interrupt_injection`.
    pub(crate) const READY_FOR_INTERRUPT_INJECTION: usize = 12;
    /// `__u8 if_flag`.
    pub(crate) const IF_FLAG: usize = 13;
    /// `__u16 flags`.
    pub(crate) const FLAGS: usize = 14;
    /// `__u64 cr8`.
    pub(crate) const CR8: usize = 16;
    /// `__u64 apic_base`.
    pub(crate) const APIC_BASE: usize = 24;
    /// The exit union (256 bytes).
    pub(crate) const EXIT: usize = 32;
    /// Size of the exit union.
    pub(crate) const EXIT_SIZE: usize = 256;
    /// `__u64 kvm_valid_regs`.
    pub(crate) const KVM_VALID_REGS: usize = 288;
    /// `__u64 kvm_dirty_regs`.
    pub(crate) const KVM_DIRTY_REGS: usize = 296;
    /// The sync-regs union (2048 bytes).
    pub(crate) const SYNC_REGS: usize = 304;

    /// `io.direction` (0 in, 1 out).
    pub(crate) const IO_DIRECTION: usize = EXIT;
    /// `io.size`.
    pub(crate) const IO_SIZE: usize = EXIT + 1;
    /// `io.port`.
    pub(crate) const IO_PORT: usize = EXIT + 2;
    /// `io.count`.
    pub(crate) const IO_COUNT: usize = EXIT + 4;
    /// `io.data_offset` (from the start of the `kvm_run` mapping).
    pub(crate) const IO_DATA_OFFSET: usize = EXIT + 8;

    /// `mmio.phys_addr`.
    pub(crate) const MMIO_PHYS_ADDR: usize = EXIT;
    /// `mmio.data[8]`.
    pub(crate) const MMIO_DATA: usize = EXIT + 8;
    /// `mmio.len`.
    pub(crate) const MMIO_LEN: usize = EXIT + 16;
    /// `mmio.is_write`.
    pub(crate) const MMIO_IS_WRITE: usize = EXIT + 20;

    /// `internal.suberror`.
    pub(crate) const INTERNAL_SUBERROR: usize = EXIT;
    /// `internal.ndata`.
    pub(crate) const INTERNAL_NDATA: usize = EXIT + 4;
    /// `internal.data[16]`.
    pub(crate) const INTERNAL_DATA: usize = EXIT + 8;

    /// `fail_entry.hardware_entry_failure_reason`.
    pub(crate) const FAIL_ENTRY_REASON: usize = EXIT;
    /// `fail_entry.cpu`.
    pub(crate) const FAIL_ENTRY_CPU: usize = EXIT + 8;

    /// `hypercall.nr`.
    pub(crate) const HYPERCALL_NR: usize = EXIT;

    /// `msr.error` (`KVM_EXIT_X86_RDMSR`/`WRMSR`).
    pub(crate) const MSR_ERROR: usize = EXIT;
    /// `msr.reason`.
    pub(crate) const MSR_REASON: usize = EXIT + 8;
    /// `msr.index`.
    pub(crate) const MSR_INDEX: usize = EXIT + 12;
    /// `msr.data`.
    pub(crate) const MSR_DATA: usize = EXIT + 16;

    /// `system_event.type`.
    pub(crate) const SYSTEM_EVENT_TYPE: usize = EXIT;
    /// `system_event.ndata`.
    pub(crate) const SYSTEM_EVENT_NDATA: usize = EXIT + 4;

    /// `debug.arch.exception` (x86).
    pub(crate) const DEBUG_EXCEPTION: usize = EXIT;
    /// `debug.arch.pc`.
    pub(crate) const DEBUG_PC: usize = EXIT + 8;
    /// `debug.arch.dr6`.
    pub(crate) const DEBUG_DR6: usize = EXIT + 16;
    /// `debug.arch.dr7`.
    pub(crate) const DEBUG_DR7: usize = EXIT + 24;
}

/// `kvm_run.exit_reason` values (`KVM_EXIT_*`).
pub(crate) mod exit {
    /// `KVM_EXIT_UNKNOWN`.
    pub(crate) const UNKNOWN: u32 = 0;
    /// `KVM_EXIT_EXCEPTION`.
    pub(crate) const EXCEPTION: u32 = 1;
    /// `KVM_EXIT_IO`.
    pub(crate) const IO: u32 = 2;
    /// `KVM_EXIT_HYPERCALL`.
    pub(crate) const HYPERCALL: u32 = 3;
    /// `KVM_EXIT_DEBUG`.
    pub(crate) const DEBUG: u32 = 4;
    /// `KVM_EXIT_HLT`.
    pub(crate) const HLT: u32 = 5;
    /// `KVM_EXIT_MMIO`.
    pub(crate) const MMIO: u32 = 6;
    /// `KVM_EXIT_IRQ_WINDOW_OPEN`.
    pub(crate) const IRQ_WINDOW_OPEN: u32 = 7;
    /// `KVM_EXIT_SHUTDOWN`.
    pub(crate) const SHUTDOWN: u32 = 8;
    /// `KVM_EXIT_FAIL_ENTRY`.
    pub(crate) const FAIL_ENTRY: u32 = 9;
    /// `KVM_EXIT_INTR`.
    pub(crate) const INTR: u32 = 10;
    /// `KVM_EXIT_INTERNAL_ERROR`.
    pub(crate) const INTERNAL_ERROR: u32 = 17;
    /// `KVM_EXIT_SYSTEM_EVENT`.
    pub(crate) const SYSTEM_EVENT: u32 = 24;
    /// `KVM_EXIT_X86_RDMSR`.
    pub(crate) const X86_RDMSR: u32 = 29;
    /// `KVM_EXIT_X86_WRMSR`.
    pub(crate) const X86_WRMSR: u32 = 30;
}

/// `KVM_EXIT_IO_IN`.
pub(crate) const KVM_EXIT_IO_IN: u8 = 0;
/// `KVM_EXIT_IO_OUT`.
pub(crate) const KVM_EXIT_IO_OUT: u8 = 1;

/// `internal.suberror` values.
pub(crate) mod internal {
    /// `KVM_INTERNAL_ERROR_EMULATION`: an instruction could not be emulated.
    pub(crate) const EMULATION: u32 = 1;
    /// `KVM_INTERNAL_ERROR_SIMUL_EX`: an exception while delivering one.
    pub(crate) const SIMUL_EX: u32 = 2;
    /// `KVM_INTERNAL_ERROR_DELIVERY_EV`: an exit while delivering an event.
    pub(crate) const DELIVERY_EV: u32 = 3;
    /// `KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON`: an exit KVM does not handle.
    pub(crate) const UNEXPECTED_EXIT_REASON: u32 = 4;
}

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
    /// No such device or address.
    pub(crate) const ENXIO: Errno = Errno(6);
    /// Try again.
    pub(crate) const EAGAIN: Errno = Errno(11);
    /// Device or resource busy.
    pub(crate) const EBUSY: Errno = Errno(16);
    /// File exists.
    pub(crate) const EEXIST: Errno = Errno(17);
    /// Interrupted system call.
    pub(crate) const EINTR: Errno = Errno(4);
    /// Function not implemented.
    pub(crate) const ENOSYS: Errno = Errno(38);
    /// Value too large for defined data type.
    pub(crate) const EOVERFLOW: Errno = Errno(75);
    /// No such process.
    pub(crate) const ESRCH: Errno = Errno(3);
    /// Operation not permitted.
    pub(crate) const EPERM: Errno = Errno(1);
    /// No such entry.
    pub(crate) const ENOENT: Errno = Errno(2);
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
