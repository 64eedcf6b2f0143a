// SPDX-License-Identifier: GPL-2.0

//! The KVM files: `/dev/kvm` and the VM file (`virt/kvm/kvm_main.c`).
//!
//! The core owns the file types and the generic ioctls; whatever is
//! architecture-specific goes through the [`Arch`] trait, implemented by
//! `arch/x86/kvm` (the core never names it).

use crate::dev_ioctl::{self, DevIoctl};
use crate::uapi::{self, errno, Errno};
use kernel::{
    c_str,
    file_ops::{create_anon_fd, flags, FileOps},
    miscdevice::{MiscDevice, Registration},
    page::PAGE_SIZE,
    prelude::*,
    sync::{Arc, ArcBorrow},
};

/// The fixed minor of `/dev/kvm` (`KVM_MINOR` in `include/linux/miscdevice.h`).
const KVM_MINOR: u32 = 232;

// The core's copies of the uapi numbers agree with the kernel's own headers.
const _: () = {
    assert!(uapi::KVM_API_VERSION as u32 == kernel::uapi::KVM_API_VERSION);
    assert!(uapi::KVM_CAP_CHECK_EXTENSION_VM as u32 == kernel::uapi::KVM_CAP_CHECK_EXTENSION_VM);
    assert!(uapi::KVM_PIO_PAGE_OFFSET as u32 == kernel::uapi::KVM_PIO_PAGE_OFFSET);
    assert!(
        uapi::KVM_COALESCED_MMIO_PAGE_OFFSET as u32 == kernel::uapi::KVM_COALESCED_MMIO_PAGE_OFFSET
    );
    assert!(uapi::KVM_X86_DEFAULT_VM as u32 == kernel::uapi::KVM_X86_DEFAULT_VM);
    assert!(uapi::KVMIO == kernel::uapi::KVMIO);
};

/// Converts a core errno into the kernel's error type.
pub(crate) fn err(e: Errno) -> Error {
    Error::from_errno(e.0.wrapping_neg())
}

/// What the core asks of the architecture (the `kvm_arch_*` hooks of the C KVM).
pub(crate) trait Arch: Send + Sync {
    /// `KVM_CHECK_EXTENSION` for the capabilities the core does not own;
    /// 0 for anything not implemented.
    fn check_extension(&self, cap: i64) -> i64;
    /// Whether `KVM_CREATE_VM` accepts `vm_type`.
    fn vm_type_supported(&self, vm_type: usize) -> bool;
    /// A system ioctl the core does not know.
    fn dev_ioctl(&self, cmd: u32, arg: usize) -> Result<isize, Errno>;
}

/// The module-wide KVM state, shared by every open file.
pub(crate) struct Kvm {
    arch: Arc<dyn Arch>,
}

impl Kvm {
    /// The state for an architecture chosen at module load.
    pub(crate) fn new(arch: Arc<dyn Arch>) -> Result<Arc<Self>> {
        Ok(Arc::new(Kvm { arch }, GFP_KERNEL)?)
    }

    /// `kvm_vm_ioctl_check_extension_generic()`: the same answer on `/dev/kvm`
    /// and on a VM fd.
    fn check_extension(&self, cap: i64) -> i64 {
        match cap {
            uapi::KVM_CAP_CHECK_EXTENSION_VM => 1,
            _ => self.arch.check_extension(cap),
        }
    }

    fn create_vm(self: ArcBorrow<'_, Self>, vm_type: usize) -> Result<isize> {
        if !self.arch.vm_type_supported(vm_type) {
            return Err(EINVAL);
        }
        let vm = Arc::new(Vm { kvm: self.into(), _vm_type: vm_type }, GFP_KERNEL_ACCOUNT)?;
        let fd = create_anon_fd(&KVM_VM_FOPS, c_str!("kvm-vm"), vm, flags::O_RDWR | flags::O_CLOEXEC)?;
        Ok(fd as isize)
    }
}

/// Registers `/dev/kvm`; it goes away when the registration is dropped.
pub(crate) fn register(kvm: Arc<Kvm>) -> Result<Registration<KvmDev>> {
    Registration::register(c_str!("kvm"), Some(KVM_MINOR), &KVM_CHARDEV_FOPS, kvm)
}

/// `/dev/kvm`.
pub(crate) struct KvmDev;

kernel::file_ops_table!(KVM_CHARDEV_FOPS, KvmDev, misc);

#[vtable]
impl FileOps for KvmDev {
    type Ptr = Arc<Kvm>;

    fn ioctl(kvm: ArcBorrow<'_, Kvm>, cmd: u32, arg: usize) -> Result<isize> {
        match dev_ioctl::decode(cmd, arg).map_err(err)? {
            DevIoctl::ApiVersion => Ok(uapi::KVM_API_VERSION as isize),
            DevIoctl::CreateVm { vm_type } => kvm.create_vm(vm_type),
            DevIoctl::CheckExtension { cap } => Ok(kvm.check_extension(cap) as isize),
            DevIoctl::VcpuMmapSize => Ok(dev_ioctl::vcpu_mmap_size(PAGE_SIZE) as isize),
            DevIoctl::Arch { cmd, arg } => kvm.arch.dev_ioctl(cmd, arg).map_err(err),
        }
    }
}

impl MiscDevice for KvmDev {
    type Context = Arc<Kvm>;

    fn open(kvm: &Arc<Kvm>) -> Result<Arc<Kvm>> {
        Ok(kvm.clone())
    }
}

/// A virtual machine: owned by its VM file (and, later, by its vCPUs), freed
/// when the last reference goes.
pub(crate) struct Vm {
    kvm: Arc<Kvm>,
    _vm_type: usize,
}

/// The VM file.
struct VmFile;

kernel::file_ops_table!(KVM_VM_FOPS, VmFile);

#[vtable]
impl FileOps for VmFile {
    type Ptr = Arc<Vm>;

    fn ioctl(vm: ArcBorrow<'_, Vm>, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            uapi::KVM_CHECK_EXTENSION => Ok(vm.kvm.check_extension(arg as i64) as isize),
            // Not implemented yet: the C KVM's answer to a VM ioctl it does not know.
            _ => Err(err(errno::ENOTTY)),
        }
    }
}
