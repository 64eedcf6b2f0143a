// SPDX-License-Identifier: GPL-2.0

//! The KVM files: `/dev/kvm`, the VM file and the vCPU file (`virt/kvm/kvm_main.c`).
//!
//! The core owns the file types, the generic ioctls and the memory slots;
//! whatever is architecture-specific goes through the [`Arch`], [`ArchVm`]
//! and [`ArchVcpu`] traits, implemented by `arch/x86/kvm` (the core never
//! names it).

use crate::coalesced_mmio::{self, RingMem, Zone, Zones};
use crate::binary_stats::{self, VcpuStats, VmStats};
use crate::dev_ioctl::{self, DevIoctl};
use crate::metrics::{self, Registry};
use crate::memslots::{self, Change, MemSlot, Region, SlotStore};
use crate::stats::{self, VcpuCounters, VmStat};
use crate::uapi::{self, errno, Errno, KvmEnableCap};
use crate::vcpu_limits::{VcpuLimits, KVM_MAX_VCPUS, KVM_MAX_VCPU_IDS};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use kernel::{
    c_str,
    cpu::num_online_cpus,
    file_ops::{create_anon_fd, flags, FileOps},
    fmt,
    miscdevice::{MiscDevice, Registration},
    mm::{MmGrab, VmArea},
    new_mutex,
    page::PAGE_SIZE,
    prelude::*,
    sigmask::SigSet,
    str::CString,
    sync::{Arc, ArcBorrow, Mutex},
    uaccess::UserSlice,
    user_mem::{access_ok, SharedPage},
};

/// The fixed minor of `/dev/kvm` (`KVM_MINOR` in `include/linux/miscdevice.h`).
const KVM_MINOR: u32 = 232;

// The C KVM's `halt_poll_ns` (kvm_main.c): how long at most a halted vCPU
// polls for its wake-up before it sleeps (`halt_poll.rs`). Read-only here
// (C: 0644, changeable at run time); a negative value is refused at load.
kernel::module_param!(
    HALT_POLL_NS: i32 = crate::halt_poll::HALT_POLL_NS_DEFAULT as i32,
    "halt_poll_ns",
    "Maximum halt polling time in ns (0: no polling)"
);

/// The `halt_poll_ns` parameter: the limit of a halted vCPU's polling window
/// in ns, or `None` if it is negative.
pub(crate) fn halt_poll_ns() -> Option<u32> {
    u32::try_from(HALT_POLL_NS.get()).ok()
}

// The core's copies of the uapi numbers agree with the kernel's own headers.
const _: () = {
    use core::mem::{offset_of, size_of};
    use kernel::uapi as u;
    assert!(uapi::KVM_API_VERSION as u32 == u::KVM_API_VERSION);
    assert!(uapi::KVM_CAP_CHECK_EXTENSION_VM as u32 == u::KVM_CAP_CHECK_EXTENSION_VM);
    assert!(uapi::KVM_PIO_PAGE_OFFSET as u32 == u::KVM_PIO_PAGE_OFFSET);
    assert!(uapi::KVM_COALESCED_MMIO_PAGE_OFFSET as u32 == u::KVM_COALESCED_MMIO_PAGE_OFFSET);
    assert!(uapi::KVM_X86_DEFAULT_VM as u32 == u::KVM_X86_DEFAULT_VM);
    assert!(uapi::KVMIO == u::KVMIO);
    assert!(uapi::KVM_CAP_NR_VCPUS as u32 == u::KVM_CAP_NR_VCPUS);
    assert!(uapi::KVM_CAP_MAX_VCPUS as u32 == u::KVM_CAP_MAX_VCPUS);
    assert!(uapi::KVM_CAP_MAX_VCPU_ID as u32 == u::KVM_CAP_MAX_VCPU_ID);
    assert!(uapi::KVM_CAP_ENABLE_CAP_VM as u32 == u::KVM_CAP_ENABLE_CAP_VM);
    assert!(uapi::KVM_CAP_IMMEDIATE_EXIT as u32 == u::KVM_CAP_IMMEDIATE_EXIT);
    assert!(KvmEnableCap::SIZE == size_of::<u::kvm_enable_cap>());
    assert!(memslots::REGION_V1_SIZE == size_of::<u::kvm_userspace_memory_region>());
    assert!(memslots::REGION_V2_SIZE == size_of::<u::kvm_userspace_memory_region2>());
    assert!(uapi::run::EXIT_REASON == offset_of!(u::kvm_run, exit_reason));
    assert!(uapi::run::IMMEDIATE_EXIT == offset_of!(u::kvm_run, immediate_exit__unsafe));
    assert!(uapi::run::IF_FLAG == offset_of!(u::kvm_run, if_flag));
    assert!(uapi::run::CR8 == offset_of!(u::kvm_run, cr8));
    assert!(uapi::run::APIC_BASE == offset_of!(u::kvm_run, apic_base));
    assert!(uapi::run::EXIT == offset_of!(u::kvm_run, __bindgen_anon_1));
    assert!(uapi::run::KVM_VALID_REGS == offset_of!(u::kvm_run, kvm_valid_regs));
    assert!(uapi::run::KVM_DIRTY_REGS == offset_of!(u::kvm_run, kvm_dirty_regs));
    assert!(uapi::run::SYNC_REGS == offset_of!(u::kvm_run, s));
    assert!(uapi::run::IO_DATA_OFFSET - uapi::run::EXIT == 8);
    assert!(uapi::exit::INTERNAL_ERROR == u::KVM_EXIT_INTERNAL_ERROR);
    assert!(uapi::exit::X86_WRMSR == u::KVM_EXIT_X86_WRMSR);
    assert!(uapi::KVM_RUN == u::KVMIO << 8 | 0x80);
};

/// Converts a core errno into the kernel's error type.
pub(crate) fn err(e: Errno) -> Error {
    Error::from_errno(e.0.wrapping_neg())
}

/// What the core asks of the architecture (the `kvm_arch_*` hooks of the C KVM).
pub(crate) trait Arch: Send + Sync {
    /// `KVM_CHECK_EXTENSION` for the capabilities the core does not own;
    /// 0 for anything not implemented. `vm` is the VM asked, if any.
    fn check_extension(&self, vm: Option<&Vm>, cap: i64) -> i64;
    /// Whether `KVM_CREATE_VM` accepts `vm_type`.
    fn vm_type_supported(&self, vm_type: usize) -> bool;
    /// A system ioctl the core does not know; `arg` is the raw argument
    /// (often a user address).
    fn dev_ioctl(&self, cmd: u32, arg: usize) -> Result<isize>;
    /// Creates the architecture's part of a new VM, which counts into `stats`.
    fn create_vm(&self, vm_type: usize, stats: Arc<VmStats>) -> Result<KBox<dyn ArchVm>>;
    /// The largest guest frame number a memory slot may map (host MAXPHYADDR).
    fn max_gfn(&self) -> u64;
}

/// The architecture's part of a VM.
pub(crate) trait ArchVm: Send + Sync {
    /// A VM ioctl the core does not know.
    fn ioctl(&self, vm: &Vm, cmd: u32, arg: usize) -> Result<isize>;
    /// `KVM_ENABLE_CAP` on the VM for a capability the core does not own.
    fn enable_cap(&self, vm: &Vm, cap: &KvmEnableCap) -> Result<isize>;
    /// Creates the architecture's part of vCPU `id`.
    fn create_vcpu(&self, vm: &Vm, id: u32) -> Result<KBox<dyn ArchVcpu>>;
    /// Called with the slots locked after `change` took effect: mappings of
    /// the old slot must go before this returns, and a slot that starts
    /// logging dirty pages must have its pages write-protected (C:
    /// `kvm_arch_flush_shadow_memslot()` and `kvm_arch_commit_memory_region()`).
    fn memslot_changed(&self, vm: &Vm, change: &Change);
    /// Write-protects the frames `base_gfn + i` for each bit `i` set in
    /// `bitmap` and flushes every vCPU's TLB before returning.
    fn write_protect(&self, vm: &Vm, base_gfn: u64, bitmap: &[u64]);
}

/// What a vCPU ioctl gets besides the architecture's vCPU state.
pub(crate) struct VcpuCtx<'a> {
    /// The VM.
    pub(crate) vm: &'a Vm,
    /// `struct kvm_run`.
    pub(crate) run: &'a SharedPage,
    /// The PIO data page.
    pub(crate) pio: &'a SharedPage,
    /// The vCPU's statistics.
    pub(crate) stats: &'a VcpuCounters,
}

/// The architecture's part of a vCPU; serialized by the vCPU mutex.
pub(crate) trait ArchVcpu: Send {
    /// `KVM_RUN`.
    fn run(&mut self, ctx: &VcpuCtx<'_>) -> Result<isize>;
    /// A vCPU ioctl the core does not know.
    fn ioctl(&mut self, ctx: &VcpuCtx<'_>, cmd: u32, arg: usize) -> Result<isize>;
}

/// The module-wide KVM state, shared by every open file.
pub(crate) struct Kvm {
    arch: Arc<dyn Arch>,
    /// The statistics of live VMs, for the metricfs export.
    registry: Arc<Registry>,
}

impl Kvm {
    /// The state for an architecture chosen at module load.
    pub(crate) fn new(arch: Arc<dyn Arch>) -> Result<Arc<Self>> {
        Ok(Arc::new(Kvm { arch, registry: Registry::new()? }, GFP_KERNEL)?)
    }

    /// The statistics of live VMs.
    pub(crate) fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// `kvm_vm_ioctl_check_extension_generic()`: the same answer on `/dev/kvm`
    /// and on a VM fd, except where the VM changes it.
    fn check_extension(&self, vm: Option<&Vm>, cap: i64) -> i64 {
        if let Some(v) = memslots::check_extension(cap) {
            return v;
        }
        match cap {
            // The ring's page offset in the vCPU mmap area.
            coalesced_mmio::KVM_CAP_COALESCED_MMIO => uapi::KVM_COALESCED_MMIO_PAGE_OFFSET as i64,
            coalesced_mmio::KVM_CAP_COALESCED_PIO => 1,
            uapi::KVM_CAP_CHECK_EXTENSION_VM | uapi::KVM_CAP_ENABLE_CAP_VM => 1,
            uapi::KVM_CAP_IMMEDIATE_EXIT => 1,
            stats::KVM_CAP_BINARY_STATS_FD => 1,
            uapi::KVM_CAP_NR_VCPUS => i64::from(num_online_cpus().min(KVM_MAX_VCPUS)),
            uapi::KVM_CAP_MAX_VCPUS => i64::from(KVM_MAX_VCPUS),
            uapi::KVM_CAP_MAX_VCPU_ID => i64::from(KVM_MAX_VCPU_IDS),
            _ => self.arch.check_extension(vm, cap),
        }
    }

    fn create_vm(self: ArcBorrow<'_, Self>, vm_type: usize) -> Result<isize> {
        if !self.arch.vm_type_supported(vm_type) {
            return Err(EINVAL);
        }
        // The VM belongs to the caller's address space: other processes get
        // -EIO from its ioctls, as in the C KVM.
        let mm = MmGrab::current().ok_or(EINVAL)?;
        let stats = VmStats::new()?;
        let arch = self.arch.create_vm(vm_type, stats.clone())?;
        // One coalesced MMIO ring per VM, shared by every vCPU's mapping.
        let ring = SharedPage::new(GFP_KERNEL_ACCOUNT)?;
        let zones = Zones::new(KVec::from_elem(Zone::default(), MAX_COALESCED_ZONES, GFP_KERNEL_ACCOUNT)?);
        let vm = Arc::pin_init(
            pin_init!(Vm {
                stats: metrics::Entry::new(self.registry.clone(), stats),
                kvm: self.into(),
                mm,
                _vm_type: vm_type,
                inner <- new_mutex!(VmInner { limits: VcpuLimits::default(), vcpus: KVec::new() }),
                mem <- new_mutex!(VmMem { slots: KVec::new(), dirty: KVec::new() }),
                mem_gen: AtomicU64::new(0),
                pci_hole: AtomicBool::new(false),
                ring,
                coalesced <- new_mutex!(zones),
                arch,
            }),
            GFP_KERNEL_ACCOUNT,
        )?;
        // Our reference keeps the VM from being freed (and unlisted) before it is listed.
        let fd = create_anon_fd(&KVM_VM_FOPS, c_str!("kvm-vm"), vm.clone(), flags::O_RDWR | flags::O_CLOEXEC)?;
        vm.stats.publish(fd);
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
            DevIoctl::CheckExtension { cap } => Ok(kvm.check_extension(None, cap) as isize),
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

/// A guest-physical address range's backing, as found in the memory slots.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hva {
    /// The user address of the guest frame.
    pub(crate) addr: u64,
    /// Whether the slot is read-only for the guest.
    pub(crate) readonly: bool,
    /// Whether the slot logs dirty pages: the frame must be mapped
    /// read-only until a write, which [`Vm::mark_dirty`] records.
    pub(crate) log_dirty: bool,
}

/// A user-memory slot's frames and user address (see `Vm::user_slot_of`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SlotRange {
    pub(crate) base_gfn: u64,
    pub(crate) npages: u64,
    pub(crate) hva: u64,
}

impl SlotRange {
    /// The user address of byte `gpa`, if its frame is in the slot.
    pub(crate) fn hva_of(&self, gpa: u64) -> Option<u64> {
        let off = (gpa >> 12).checked_sub(self.base_gfn).filter(|&f| f < self.npages)?;
        Some(self.hva.wrapping_add(off << 12).wrapping_add(gpa & 0xfff))
    }
}

/// What a memory slot puts behind a guest frame.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Backing {
    /// User memory.
    User(Hva),
    /// A `KVM_MEM_PCI_HOLE` slot: reads all ones, writes exit as MMIO.
    PciHole,
}

/// A virtual machine, freed when its VM file and every vCPU file are closed.
#[pin_data]
pub(crate) struct Vm {
    kvm: Arc<Kvm>,
    mm: MmGrab,
    _vm_type: usize,
    #[pin]
    inner: Mutex<VmInner>,
    /// The memory slots (C: `kvm->slots_lock` and the memslot arrays).
    #[pin]
    mem: Mutex<VmMem>,
    /// Bumped (under `mem`) on every slot change that removes or moves a
    /// mapping, so that a fault handler that looked a slot up without the lock
    /// can tell that its answer went stale.
    mem_gen: AtomicU64,
    /// `KVM_ENABLE_CAP(KVM_CAP_KVMRS_PCI_HOLE)` was done: slots may be PCI holes.
    pci_hole: AtomicBool,
    /// The coalesced MMIO/PIO ring (page `KVM_COALESCED_MMIO_PAGE_OFFSET` of
    /// every vCPU's mapping).
    ring: SharedPage,
    /// The coalesced zones; the lock also serializes appends to the ring
    /// (C: `kvm->slots_lock` and `kvm->ring_lock`).
    #[pin]
    coalesced: Mutex<Zones<KVec<Zone>>>,
    /// The architecture's part.
    arch: KBox<dyn ArchVm>,
    /// The statistics, and the VM's place in the registry (left when the VM is freed).
    stats: metrics::Entry,
}

/// Coalesced zones per VM: the C KVM's limit of devices on one I/O bus
/// (`NR_IOBUS_DEVS`). kvm-rs counts MMIO and PIO zones together.
const MAX_COALESCED_ZONES: usize = 1000;

/// The coalesced ring as the ring logic sees it: the shared page, accessed
/// with single loads and stores.
struct SharedRing<'a>(&'a SharedPage);

impl RingMem for SharedRing<'_> {
    fn read_u32(&self, off: usize) -> u32 {
        self.0.read_u32(off)
    }
    fn write(&mut self, off: usize, bytes: &[u8]) {
        self.0.write_bytes(off, bytes);
    }
    fn wmb(&mut self) {
        // smp_wmb(): the entry is visible before the index that publishes it.
        core::sync::atomic::fence(Ordering::Release);
    }
}

struct VmInner {
    limits: VcpuLimits,
    /// The VM's vCPUs, alive as long as the VM (as in the C KVM).
    vcpus: KVec<Arc<Vcpu>>,
}

/// The memory slots, sorted by guest frame number.
struct VmMem {
    slots: KVec<MemSlot>,
    /// The dirty bitmaps of the slots with `KVM_MEM_LOG_DIRTY_PAGES`.
    dirty: KVec<DirtyBitmap>,
}

/// A slot's dirty bitmap: one bit per page, in `u64` words as the C KVM's
/// `unsigned long` bitmap user space receives.
struct DirtyBitmap {
    id: u16,
    words: KVec<u64>,
}

impl VmMem {
    fn bitmap_mut(&mut self, id: u16) -> Option<&mut DirtyBitmap> {
        self.dirty.iter_mut().find(|d| d.id == id)
    }

    /// Keeps the dirty bitmaps in step with a slot change (C:
    /// `kvm_alloc_dirty_bitmap()`/`kvm_destroy_dirty_bitmap()`): a slot that
    /// starts logging gets an empty bitmap; one that stops, or is deleted or
    /// moved, loses it (a moved slot starts over).
    fn update_bitmaps(&mut self, change: &Change) -> Result {
        let (old, new) = match *change {
            Change::Create { new } => (None, Some(new)),
            Change::Delete { old } => (Some(old), None),
            Change::Move { old, new } | Change::FlagsOnly { old, new } => (Some(old), Some(new)),
            Change::Nothing => return Ok(()),
        };
        let keep = matches!(*change, Change::FlagsOnly { .. })
            && old.is_some_and(|o| o.logs_dirty_pages())
            && new.is_some_and(|n| n.logs_dirty_pages());
        if keep {
            return Ok(());
        }
        if let Some(o) = old {
            if let Some(i) = self.dirty.iter().position(|d| d.id == o.id) {
                self.dirty.swap_remove(i);
            }
        }
        if let Some(n) = new.filter(|n| n.logs_dirty_pages()) {
            let words = KVec::from_elem(0u64, n.npages.div_ceil(64) as usize, GFP_KERNEL_ACCOUNT)?;
            self.dirty.push(DirtyBitmap { id: n.id, words }, GFP_KERNEL_ACCOUNT)?;
        }
        Ok(())
    }
}

impl SlotStore for VmMem {
    fn slots(&self) -> &[MemSlot] {
        &self.slots
    }
    fn slots_mut(&mut self) -> &mut [MemSlot] {
        &mut self.slots
    }
    fn try_push(&mut self, slot: MemSlot) -> core::result::Result<(), Errno> {
        self.slots.push(slot, GFP_KERNEL_ACCOUNT).map_err(|_| errno::ENOMEM)
    }
    fn pop(&mut self) -> Option<MemSlot> {
        self.slots.pop()
    }
}

impl Vm {
    /// vCPUs created or being created (C: `kvm->created_vcpus`).
    pub(crate) fn created_vcpus(&self) -> u32 {
        self.inner.lock().limits.created()
    }

    /// Only the process that created the VM may use it (`kvm->mm != current->mm`).
    fn check_caller(&self) -> Result {
        if self.mm.is_current() {
            Ok(())
        } else {
            Err(EIO)
        }
    }

    /// The memory-slot generation (see `mem_gen`).
    pub(crate) fn mem_generation(&self) -> u64 {
        self.mem_gen.load(Ordering::Acquire)
    }

    /// `gfn_to_hva_memslot()`: what backs guest frame `gfn`, with the
    /// generation the answer belongs to.
    pub(crate) fn gfn_to_backing(&self, gfn: u64) -> Option<(Backing, u64)> {
        let mem = self.mem.lock();
        let slot = memslots::find_by_gfn(&mem.slots, gfn)?;
        let b = if slot.is_pci_hole() {
            Backing::PciHole
        } else {
            Backing::User(Hva {
                addr: slot.hva_of(gfn),
                readonly: slot.is_readonly(),
                log_dirty: slot.logs_dirty_pages(),
            })
        };
        Some((b, self.mem_generation()))
    }

    /// The user-memory slot holding guest frame `gfn`, as its frame range
    /// and user address (`None` for no slot or a PCI hole), for callers that
    /// read several frames of one slot in a row (guest page walks).
    pub(crate) fn user_slot_of(&self, gfn: u64) -> Option<SlotRange> {
        let mem = self.mem.lock();
        let slot = memslots::find_by_gfn(&mem.slots, gfn)?;
        (!slot.is_pci_hole()).then(|| SlotRange {
            base_gfn: slot.base_gfn,
            npages: slot.npages,
            hva: slot.hva_of(slot.base_gfn),
        })
    }

    /// Copies guest memory at `gpa` into `buf` (C: `kvm_read_guest()`),
    /// through the user mapping of the slots. `EFAULT` if a byte is not in a
    /// slot or its user memory is not readable.
    pub(crate) fn read_guest(&self, gpa: u64, buf: &mut [u8]) -> Result {
        let mut done = 0;
        while done < buf.len() {
            let addr = gpa.wrapping_add(done as u64);
            let in_page = (PAGE_SIZE - (addr as usize & (PAGE_SIZE - 1))).min(buf.len() - done);
            match self.gfn_to_backing(addr >> 12).ok_or(EFAULT)?.0 {
                Backing::User(hva) => {
                    let ua = hva.addr + (addr & 0xfff);
                    UserSlice::new(ua as usize, in_page).reader().read_slice(&mut buf[done..done + in_page])?;
                }
                Backing::PciHole => buf[done..done + in_page].fill(0xff),
            }
            done += in_page;
        }
        Ok(())
    }

    /// Copies `buf` into guest memory at `gpa` (C: `kvm_write_guest()`).
    /// `EFAULT` if a byte is not in a writable slot.
    pub(crate) fn write_guest(&self, gpa: u64, buf: &[u8]) -> Result {
        let mut done = 0;
        while done < buf.len() {
            let addr = gpa.wrapping_add(done as u64);
            let in_page = (PAGE_SIZE - (addr as usize & (PAGE_SIZE - 1))).min(buf.len() - done);
            let hva = match self.gfn_to_backing(addr >> 12).ok_or(EFAULT)?.0 {
                Backing::User(hva) if !hva.readonly => hva,
                _ => return Err(EFAULT),
            };
            let ua = hva.addr + (addr & 0xfff);
            UserSlice::new(ua as usize, in_page).writer().write_slice(&buf[done..done + in_page])?;
            if hva.log_dirty {
                self.mark_dirty(addr >> 12);
            }
            done += in_page;
        }
        Ok(())
    }

    /// Records that guest frame `gfn` was written (`mark_page_dirty()`), if
    /// its slot logs dirty pages.
    pub(crate) fn mark_dirty(&self, gfn: u64) {
        let mut mem = self.mem.lock();
        let Some(slot) = memslots::find_by_gfn(&mem.slots, gfn).copied() else { return };
        if let Some(d) = mem.bitmap_mut(slot.id) {
            let bit = gfn - slot.base_gfn;
            if let Some(w) = d.words.get_mut((bit / 64) as usize) {
                *w |= 1 << (bit % 64);
            }
        }
    }

    /// `KVM_GET_DIRTY_LOG` (`kvm_get_dirty_log_protect()` without manual
    /// protection): hands the slot's bitmap to user space and clears it; the
    /// pages it names are write-protected again before the copy, so that no
    /// write after it goes unrecorded.
    fn get_dirty_log(&self, arg: usize) -> Result<isize> {
        let mut b = [0u8; 16];
        UserSlice::new(arg, b.len()).reader().read_slice(&mut b)?;
        let slot_arg = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
        let ubitmap = u64::from_ne_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
        let (as_id, id) = (slot_arg >> 16, slot_arg as u16);
        if as_id >= memslots::NR_ADDRESS_SPACES || u32::from(id) >= memslots::KVM_USER_MEM_SLOTS {
            return Err(EINVAL);
        }
        let mut mem = self.mem.lock();
        let slot = memslots::find_by_id(&mem.slots, id).copied().ok_or(ENOENT)?;
        let d = mem.bitmap_mut(id).ok_or(ENOENT)?;
        let mut snap = KVec::from_elem(0u64, d.words.len(), GFP_KERNEL)?;
        for (s, w) in snap.iter_mut().zip(d.words.iter_mut()) {
            *s = core::mem::take(w);
        }
        if snap.iter().any(|w| *w != 0) {
            self.arch.write_protect(self, slot.base_gfn, &snap);
        }
        drop(mem);
        let mut w = UserSlice::new(ubitmap as usize, snap.len() * 8).writer();
        for word in snap.iter() {
            w.write_slice(&word.to_ne_bytes())?;
        }
        Ok(0)
    }

    /// Appends a guest write to the coalesced ring if it lies in a zone
    /// (`coalesced_mmio_write()`): `true` if it was taken, `false` if it must
    /// exit to user space (not in a zone, or the ring is full).
    pub(crate) fn coalesced_write(&self, addr: u64, data: &[u8], pio: bool) -> bool {
        let zones = self.coalesced.lock();
        let taken = zones.write(&mut SharedRing(&self.ring), addr, data, pio).is_ok();
        if taken {
            self.stats.stats().inc(VmStat::CoalescedWrites);
        }
        taken
    }

    /// `KVM_REGISTER_COALESCED_MMIO` / `KVM_UNREGISTER_COALESCED_MMIO`.
    fn coalesced_ioctl(&self, register: bool, arg: usize) -> Result<isize> {
        let mut b = [0u8; coalesced_mmio::ZONE_SIZE];
        UserSlice::new(arg, b.len()).reader().read_slice(&mut b)?;
        let zone = Zone::from_bytes(&b).map_err(err)?;
        let mut zones = self.coalesced.lock();
        if register {
            zones.register(zone).map_err(err)?;
        } else {
            zones.unregister(zone);
        }
        Ok(0)
    }

    /// `KVM_CREATE_VCPU`.
    fn create_vcpu(self: ArcBorrow<'_, Self>, arg: usize) -> Result<isize> {
        let id = self.inner.lock().limits.reserve(arg as u64).map_err(err)?;
        // Allocate outside the lock; give the reservation back on any failure.
        let added = Vcpu::new(&self, id).and_then(|vcpu| {
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
        let vcpu_stats = vcpu.stats.clone();
        let fd = CString::try_from_fmt(fmt!("kvm-vcpu:{}", id)).and_then(|name| {
            let file = Arc::new(VcpuFile { vm: self.into(), vcpu: vcpu.clone() }, GFP_KERNEL_ACCOUNT)?;
            create_anon_fd(&KVM_VCPU_FOPS, &name, file, flags::O_RDWR | flags::O_CLOEXEC)
        });
        match fd {
            Ok(fd) => {
                // Without memory for the list the vCPU only misses its metricfs rows.
                let _ = self.stats.stats().add_vcpu(vcpu_stats);
                Ok(fd as isize)
            }
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
        match i64::from(cap.cap) {
            uapi::KVM_CAP_MAX_VCPU_ID => {
                // x86's kvm_vm_ioctl_enable_cap(): no capability takes flags.
                if cap.flags != 0 {
                    return Err(EINVAL);
                }
                self.inner.lock().limits.set_max_vcpu_id(cap.args[0]).map_err(err)?;
                Ok(0)
            }
            memslots::KVM_CAP_KVMRS_PCI_HOLE => {
                // No flags, no arguments; once on, it stays on.
                if cap.flags != 0 || cap.args.iter().any(|a| *a != 0) {
                    return Err(EINVAL);
                }
                self.pci_hole.store(true, Ordering::Relaxed);
                Ok(0)
            }
            _ => self.arch.enable_cap(self, &cap),
        }
    }

    /// `KVM_SET_USER_MEMORY_REGION` and `KVM_SET_USER_MEMORY_REGION2`.
    fn set_memory_region(&self, ioctl: memslots::Ioctl, arg: usize) -> Result<isize> {
        let region = match ioctl {
            memslots::Ioctl::V1 => {
                let mut b = [0u8; memslots::REGION_V1_SIZE];
                UserSlice::new(arg, b.len()).reader().read_slice(&mut b)?;
                Region::from_bytes_v1(&b)
            }
            memslots::Ioctl::V2 => {
                let mut b = [0u8; memslots::REGION_V2_SIZE];
                UserSlice::new(arg, b.len()).reader().read_slice(&mut b)?;
                Region::from_bytes_v2(&b)
            }
        };
        let max_gfn = self.kvm.arch.max_gfn();
        let mut mem = self.mem.lock();
        let hole = self.pci_hole.load(Ordering::Relaxed);
        let change =
            memslots::validate_with(&mem.slots, ioctl, &region, max_gfn, hole, access_ok).map_err(err)?;
        // Bitmaps first: the one allocation that can fail happens before the
        // slots change.
        mem.update_bitmaps(&change)?;
        memslots::commit(&mut *mem, &change).map_err(err)?;
        if matches!(change, Change::Delete { .. } | Change::Move { .. } | Change::FlagsOnly { .. }) {
            self.mem_gen.fetch_add(1, Ordering::AcqRel);
        }
        if change != Change::Nothing {
            self.stats.stats().inc(VmStat::MemslotChanges);
            self.arch.memslot_changed(self, &change);
        }
        drop(mem);
        Ok(0)
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
            uapi::KVM_CHECK_EXTENSION => Ok(vm.kvm.check_extension(Some(&vm), arg as i64) as isize),
            stats::KVM_GET_STATS_FD => binary_stats::vm_stats_fd(vm.stats.stats()),
            memslots::KVM_SET_USER_MEMORY_REGION => vm.set_memory_region(memslots::Ioctl::V1, arg),
            memslots::KVM_SET_USER_MEMORY_REGION2 => vm.set_memory_region(memslots::Ioctl::V2, arg),
            uapi::KVM_GET_DIRTY_LOG => vm.get_dirty_log(arg),
            coalesced_mmio::KVM_REGISTER_COALESCED_MMIO => vm.coalesced_ioctl(true, arg),
            coalesced_mmio::KVM_UNREGISTER_COALESCED_MMIO => vm.coalesced_ioctl(false, arg),
            _ => vm.arch.ioctl(&vm, cmd, arg),
        }
    }
}

/// A virtual CPU: its id, the pages user space maps from the vCPU file, and
/// the architecture's state behind the vCPU mutex.
#[pin_data]
pub(crate) struct Vcpu {
    id: u32,
    /// `struct kvm_run` (page offset 0).
    run: SharedPage,
    /// PIO data (page offset `KVM_PIO_PAGE_OFFSET`).
    pio: SharedPage,
    /// C: `vcpu->mutex` around the architecture's state.
    #[pin]
    arch: Mutex<VcpuLocked>,
    /// The statistics.
    stats: Arc<VcpuStats>,
}

/// What the vCPU mutex protects.
struct VcpuLocked {
    arch: KBox<dyn ArchVcpu>,
    /// `KVM_SET_SIGNAL_MASK`: the blocked set during `KVM_RUN`, if any.
    sigmask: Option<SigSet>,
}

impl Vcpu {
    fn new(vm: &Vm, id: u32) -> Result<Arc<Self>> {
        // Charged to the caller's memory cgroup, as the C KVM's vCPU pages are.
        let page = || SharedPage::new(GFP_KERNEL_ACCOUNT);
        let (run, pio) = (page()?, page()?);
        let stats = VcpuStats::new(id)?;
        let arch = vm.arch.create_vcpu(vm, id)?;
        Arc::pin_init(
            pin_init!(Vcpu { id, run, pio, arch <- new_mutex!(VcpuLocked { arch, sigmask: None }), stats }),
            GFP_KERNEL_ACCOUNT,
        )
    }

    /// The page at page offset `pgoff` of the vCPU mmap area.
    fn page<'a>(&'a self, vm: &'a Vm, pgoff: usize) -> Option<&'a SharedPage> {
        match pgoff {
            0 => Some(&self.run),
            uapi::KVM_PIO_PAGE_OFFSET => Some(&self.pio),
            uapi::KVM_COALESCED_MMIO_PAGE_OFFSET => Some(&vm.ring),
            _ => None,
        }
    }
}

/// `KVM_SET_SIGNAL_MASK`'s argument: NULL clears the mask; otherwise `len`
/// must be the size of the kernel's `sigset_t` (8), then the set follows.
fn read_sigmask(arg: usize) -> Result<Option<SigSet>> {
    if arg == 0 {
        return Ok(None);
    }
    let mut b = [0u8; 12];
    UserSlice::new(arg, 4).reader().read_slice(&mut b[..4])?;
    if u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) != 8 {
        return Err(EINVAL);
    }
    UserSlice::new(arg + 4, 8).reader().read_slice(&mut b[4..])?;
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[4..]);
    Ok(Some(SigSet::from_user_bits(u64::from_ne_bytes(w))))
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

    fn ioctl(this: ArcBorrow<'_, VcpuFile>, cmd: u32, arg: usize) -> Result<isize> {
        this.vm.check_caller()?;
        if (cmd >> 8) & 0xff != uapi::KVMIO {
            return Err(EINVAL);
        }
        let v = &this.vcpu;
        if cmd == stats::KVM_GET_STATS_FD {
            return binary_stats::vcpu_stats_fd(&v.stats);
        }
        let ctx = VcpuCtx { vm: &this.vm, run: &v.run, pio: &v.pio, stats: &v.stats.counters };
        let mut locked = v.arch.lock();
        match cmd {
            uapi::KVM_RUN if arg != 0 => Err(EINVAL),
            uapi::KVM_RUN => {
                let _mask = locked.sigmask.map(|m| m.activate());
                locked.arch.run(&ctx)
            }
            uapi::KVM_SET_SIGNAL_MASK => {
                locked.sigmask = read_sigmask(arg)?;
                Ok(0)
            }
            _ => locked.arch.ioctl(&ctx, cmd, arg),
        }
    }

    /// Maps the vCPU pages; as with the C KVM's fault handler, a part of the
    /// mapping beyond the three pages stays empty and faults with SIGBUS.
    fn mmap(this: ArcBorrow<'_, VcpuFile>, vma: &VmArea) -> Result {
        let npages = (vma.end() - vma.start()) / PAGE_SIZE;
        for i in 0..npages {
            if let Some(page) = vma.pgoff().checked_add(i).and_then(|off| this.vcpu.page(&this.vm, off)) {
                vma.insert_page(vma.start() + i * PAGE_SIZE, page.page())?;
            }
        }
        Ok(())
    }
}
