// SPDX-License-Identifier: GPL-2.0

//! The KVM files: `/dev/kvm`, the VM file and the vCPU file (`virt/kvm/kvm_main.c`).
//!
//! The core owns the file types and the generic ioctls; whatever is
//! architecture-specific goes through the [`Arch`] trait, implemented by
//! `arch/x86/kvm` (the core never names it).

use crate::dev_ioctl::{self, DevIoctl};
use crate::uapi::{self, errno, Errno, KvmEnableCap};
use crate::vcpu_limits::{VcpuLimits, KVM_MAX_VCPUS, KVM_MAX_VCPU_IDS};
use kernel::{
    alloc::flags::__GFP_ZERO,
    c_str,
    cpu::num_online_cpus,
    file_ops::{create_anon_fd, flags, FileOps},
    fmt,
    miscdevice::{MiscDevice, Registration},
    mm::{MmGrab, VmArea},
    new_mutex,
    page::{Page, PAGE_SIZE},
    prelude::*,
    str::CString,
    sync::{Arc, ArcBorrow, Mutex},
    uaccess::UserSlice,
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
    assert!(uapi::KVM_CAP_NR_VCPUS as u32 == kernel::uapi::KVM_CAP_NR_VCPUS);
    assert!(uapi::KVM_CAP_MAX_VCPUS as u32 == kernel::uapi::KVM_CAP_MAX_VCPUS);
    assert!(uapi::KVM_CAP_MAX_VCPU_ID as u32 == kernel::uapi::KVM_CAP_MAX_VCPU_ID);
    assert!(uapi::KVM_CAP_ENABLE_CAP_VM as u32 == kernel::uapi::KVM_CAP_ENABLE_CAP_VM);
    assert!(KvmEnableCap::SIZE == core::mem::size_of::<kernel::uapi::kvm_enable_cap>());
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
    /// A system ioctl the core does not know; `arg` is the raw argument
    /// (often a user address).
    fn dev_ioctl(&self, cmd: u32, arg: usize) -> Result<isize>;
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
            uapi::KVM_CAP_CHECK_EXTENSION_VM | uapi::KVM_CAP_ENABLE_CAP_VM => 1,
            uapi::KVM_CAP_NR_VCPUS => i64::from(num_online_cpus().min(KVM_MAX_VCPUS)),
            uapi::KVM_CAP_MAX_VCPUS => i64::from(KVM_MAX_VCPUS),
            uapi::KVM_CAP_MAX_VCPU_ID => i64::from(KVM_MAX_VCPU_IDS),
            _ => self.arch.check_extension(cap),
        }
    }

    fn create_vm(self: ArcBorrow<'_, Self>, vm_type: usize) -> Result<isize> {
        if !self.arch.vm_type_supported(vm_type) {
            return Err(EINVAL);
        }
        // The VM belongs to the caller's address space: other processes get
        // -EIO from its ioctls, as in the C KVM.
        let mm = MmGrab::current().ok_or(EINVAL)?;
        let vm = Arc::pin_init(
            pin_init!(Vm {
                kvm: self.into(),
                mm,
                _vm_type: vm_type,
                inner <- new_mutex!(VmInner { limits: VcpuLimits::default(), vcpus: KVec::new() }),
            }),
            GFP_KERNEL_ACCOUNT,
        )?;
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
            DevIoctl::Arch { cmd, arg } => kvm.arch.dev_ioctl(cmd, arg),
        }
    }
}

impl MiscDevice for KvmDev {
    type Context = Arc<Kvm>;

    fn open(kvm: &Arc<Kvm>) -> Result<Arc<Kvm>> {
        Ok(kvm.clone())
    }
}

/// A virtual machine, freed when its VM file and every vCPU file are closed.
#[pin_data]
pub(crate) struct Vm {
    kvm: Arc<Kvm>,
    mm: MmGrab,
    _vm_type: usize,
    #[pin]
    inner: Mutex<VmInner>,
}

struct VmInner {
    limits: VcpuLimits,
    /// The VM's vCPUs, alive as long as the VM (as in the C KVM).
    vcpus: KVec<Arc<Vcpu>>,
}

impl Vm {
    /// Only the process that created the VM may use it (`kvm->mm != current->mm`).
    fn check_caller(&self) -> Result {
        if self.mm.is_current() {
            Ok(())
        } else {
            Err(EIO)
        }
    }

    /// `KVM_CREATE_VCPU`.
    fn create_vcpu(self: ArcBorrow<'_, Self>, arg: usize) -> Result<isize> {
        let id = self.inner.lock().limits.reserve(arg as u64).map_err(err)?;
        // Allocate outside the lock; give the reservation back on any failure.
        let added = Vcpu::new(id).and_then(|vcpu| {
            let mut inner = self.inner.lock();
            if inner.vcpus.iter().any(|v| v.id == id) {
                return Err(EEXIST);
            }
            inner.vcpus.push(vcpu.clone(), GFP_KERNEL_ACCOUNT)?;
            Ok(vcpu)
        });
        let vcpu = match added {
            Ok(vcpu) => vcpu,
            Err(e) => {
                self.inner.lock().limits.cancel();
                return Err(e);
            }
        };
        let fd = CString::try_from_fmt(fmt!("kvm-vcpu:{}", id)).and_then(|name| {
            let file = Arc::new(VcpuFile { vm: self.into(), vcpu: vcpu.clone() }, GFP_KERNEL_ACCOUNT)?;
            create_anon_fd(&KVM_VCPU_FOPS, &name, file, flags::O_RDWR | flags::O_CLOEXEC)
        });
        match fd {
            Ok(fd) => Ok(fd as isize),
            Err(e) => {
                let mut inner = self.inner.lock();
                if let Some(i) = inner.vcpus.iter().position(|v| Arc::ptr_eq(v, &vcpu)) {
                    inner.vcpus.swap_remove(i);
                }
                inner.limits.cancel();
                Err(e)
            }
        }
    }

    /// `KVM_ENABLE_CAP` on the VM.
    fn enable_cap(&self, arg: usize) -> Result<isize> {
        let mut bytes = [0u8; KvmEnableCap::SIZE];
        UserSlice::new(arg, KvmEnableCap::SIZE).reader().read_slice(&mut bytes)?;
        let cap = KvmEnableCap::from_bytes(&bytes);
        // x86's kvm_vm_ioctl_enable_cap(): no capability takes flags.
        if cap.flags != 0 {
            return Err(EINVAL);
        }
        match i64::from(cap.cap) {
            uapi::KVM_CAP_MAX_VCPU_ID => {
                self.inner.lock().limits.set_max_vcpu_id(cap.args[0]).map_err(err)?;
                Ok(0)
            }
            _ => Err(EINVAL),
        }
    }
}

/// The VM file.
struct VmFile;

kernel::file_ops_table!(KVM_VM_FOPS, VmFile);

#[vtable]
impl FileOps for VmFile {
    type Ptr = Arc<Vm>;

    fn ioctl(vm: ArcBorrow<'_, Vm>, cmd: u32, arg: usize) -> Result<isize> {
        vm.check_caller()?;
        match cmd {
            uapi::KVM_CREATE_VCPU => vm.create_vcpu(arg),
            uapi::KVM_ENABLE_CAP => vm.enable_cap(arg),
            uapi::KVM_CHECK_EXTENSION => Ok(vm.kvm.check_extension(arg as i64) as isize),
            // Not implemented yet: the C KVM's answer to a VM ioctl it does not know.
            _ => Err(err(errno::ENOTTY)),
        }
    }
}

/// A virtual CPU: its id and the pages user space maps from the vCPU file.
pub(crate) struct Vcpu {
    id: u32,
    /// `struct kvm_run` (page offset 0).
    run: Page,
    /// PIO data (page offset `KVM_PIO_PAGE_OFFSET`).
    pio: Page,
    /// The coalesced MMIO ring (page offset `KVM_COALESCED_MMIO_PAGE_OFFSET`).
    ring: Page,
}

impl Vcpu {
    fn new(id: u32) -> Result<Arc<Self>> {
        // Charged to the caller's memory cgroup, as the C KVM's vCPU pages are.
        let page = || Page::alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO);
        Ok(Arc::new(Vcpu { id, run: page()?, pio: page()?, ring: page()? }, GFP_KERNEL_ACCOUNT)?)
    }

    /// The page at page offset `pgoff` of the vCPU mmap area.
    fn page(&self, pgoff: usize) -> Option<&Page> {
        match pgoff {
            0 => Some(&self.run),
            uapi::KVM_PIO_PAGE_OFFSET => Some(&self.pio),
            uapi::KVM_COALESCED_MMIO_PAGE_OFFSET => Some(&self.ring),
            _ => None,
        }
    }
}

/// What a vCPU file holds: its vCPU and a reference on the VM.
struct VcpuFile {
    vm: Arc<Vm>,
    vcpu: Arc<Vcpu>,
}

kernel::file_ops_table!(KVM_VCPU_FOPS, VcpuFile);

#[vtable]
impl FileOps for VcpuFile {
    type Ptr = Arc<VcpuFile>;

    fn ioctl(this: ArcBorrow<'_, VcpuFile>, cmd: u32, _arg: usize) -> Result<isize> {
        this.vm.check_caller()?;
        if (cmd >> 8) & 0xff != uapi::KVMIO {
            return Err(EINVAL);
        }
        // No vCPU ioctl is implemented yet: kvm_arch_vcpu_ioctl()'s answer
        // to one it does not know.
        Err(EINVAL)
    }

    /// Maps the vCPU pages; as with the C KVM's fault handler, a part of the
    /// mapping beyond the three pages stays empty and faults with SIGBUS.
    fn mmap(this: ArcBorrow<'_, VcpuFile>, vma: &VmArea) -> Result {
        let npages = (vma.end() - vma.start()) / PAGE_SIZE;
        for i in 0..npages {
            if let Some(page) = vma.pgoff().checked_add(i).and_then(|off| this.vcpu.page(off)) {
                vma.insert_page(vma.start() + i * PAGE_SIZE, page)?;
            }
        }
        Ok(())
    }
}
