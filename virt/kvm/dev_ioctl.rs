// SPDX-License-Identifier: GPL-2.0

//! Decoding of the system ioctls of `/dev/kvm` (`kvm_dev_ioctl()` in the C KVM).
//!
//! Core-only (host-tested). The argument checks and errno values are the C
//! KVM's: a non-zero argument to `KVM_GET_API_VERSION` or
//! `KVM_GET_VCPU_MMAP_SIZE` is `-EINVAL`, and any ioctl the core does not know
//! goes to the architecture (x86 answers `-EINVAL` to ones it does not know).

use crate::uapi::{self, errno, Errno};

/// A decoded system ioctl.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DevIoctl {
    /// `KVM_GET_API_VERSION`.
    ApiVersion,
    /// `KVM_CREATE_VM` with a VM type, checked by the architecture.
    CreateVm {
        /// The requested VM type.
        vm_type: usize,
    },
    /// `KVM_CHECK_EXTENSION` of a capability number (any value: unknown ones answer 0).
    CheckExtension {
        /// The capability, as the C KVM reads it (a `long`).
        cap: i64,
    },
    /// `KVM_GET_VCPU_MMAP_SIZE`.
    VcpuMmapSize,
    /// Anything else: for the architecture.
    Arch {
        /// The ioctl number.
        cmd: u32,
        /// Its raw argument.
        arg: usize,
    },
}

/// Decodes `ioctl(fd, cmd, arg)` on `/dev/kvm`.
pub(crate) fn decode(cmd: u32, arg: usize) -> Result<DevIoctl, Errno> {
    match cmd {
        uapi::KVM_GET_API_VERSION if arg != 0 => Err(errno::EINVAL),
        uapi::KVM_GET_API_VERSION => Ok(DevIoctl::ApiVersion),
        uapi::KVM_CREATE_VM => Ok(DevIoctl::CreateVm { vm_type: arg }),
        uapi::KVM_CHECK_EXTENSION => Ok(DevIoctl::CheckExtension { cap: arg as i64 }),
        uapi::KVM_GET_VCPU_MMAP_SIZE if arg != 0 => Err(errno::EINVAL),
        uapi::KVM_GET_VCPU_MMAP_SIZE => Ok(DevIoctl::VcpuMmapSize),
        _ => Ok(DevIoctl::Arch { cmd, arg }),
    }
}

/// The size of a vCPU's mmap area: the `kvm_run` page, the PIO data page and
/// the coalesced MMIO ring page (x86 layout, `KVM_PIO_PAGE_OFFSET` = 1,
/// `KVM_COALESCED_MMIO_PAGE_OFFSET` = 2).
pub(crate) const fn vcpu_mmap_size(page_size: usize) -> usize {
    page_size * (uapi::KVM_COALESCED_MMIO_PAGE_OFFSET + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_version_takes_no_argument() {
        assert_eq!(decode(uapi::KVM_GET_API_VERSION, 0), Ok(DevIoctl::ApiVersion));
        assert_eq!(decode(uapi::KVM_GET_API_VERSION, 1), Err(errno::EINVAL));
    }

    #[test]
    fn mmap_size_takes_no_argument_and_is_three_pages() {
        assert_eq!(decode(uapi::KVM_GET_VCPU_MMAP_SIZE, 0), Ok(DevIoctl::VcpuMmapSize));
        assert_eq!(decode(uapi::KVM_GET_VCPU_MMAP_SIZE, 7), Err(errno::EINVAL));
        assert_eq!(vcpu_mmap_size(4096), 3 * 4096);
    }

    #[test]
    fn check_extension_passes_any_value() {
        assert_eq!(
            decode(uapi::KVM_CHECK_EXTENSION, usize::MAX),
            Ok(DevIoctl::CheckExtension { cap: -1 })
        );
    }

    #[test]
    fn unknown_goes_to_arch() {
        assert_eq!(decode(0x1234, 5), Ok(DevIoctl::Arch { cmd: 0x1234, arg: 5 }));
    }
}
