// SPDX-License-Identifier: GPL-2.0

//! The statistics of VMs and vCPUs and their `KVM_GET_STATS_FD` files
//! (`virt/kvm/binary_stats.c` and the stats-file half of `kvm_main.c`).
//!
//! A [`VmStats`] or [`VcpuStats`] is shared by the VM or vCPU that counts into
//! it, by its stats files and by the registry the metricfs export reads: a
//! stats file keeps the counters readable after the VM and vCPU files are
//! closed (the C KVM keeps the whole VM for that; kvm-rs keeps the counters
//! only), and the export never touches a VM.

use crate::stats::{self, StatId, StatsId, VcpuCounters, VcpuStat, VmCounters, VmStat};
use core::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use kernel::{
    c_str,
    file_ops::{create_anon_fd, flags, FileOps},
    fmt, new_mutex,
    prelude::*,
    str::CString,
    sync::{Arc, ArcBorrow, Mutex},
    uaccess::UserSliceWriter,
};

/// The statistics of a VM.
#[pin_data]
pub(crate) struct VmStats {
    /// The id string of its stats file.
    pub(crate) id: StatsId,
    /// The thread that created the VM.
    pid: i32,
    /// The VM's file descriptor number in that process, once installed (-1 before).
    fd: AtomicI32,
    /// The counters.
    pub(crate) counters: VmCounters,
    /// Its vCPUs' statistics, in creation order.
    #[pin]
    vcpus: Mutex<KVec<Arc<VcpuStats>>>,
}

impl VmStats {
    /// The statistics of a VM being created by the current thread.
    pub(crate) fn new() -> Result<Arc<Self>> {
        let pid = kernel::current!().pid();
        Arc::pin_init(
            pin_init!(Self {
                id: StatsId::vm(pid),
                pid,
                fd: AtomicI32::new(-1),
                counters: VmCounters::new(),
                vcpus <- new_mutex!(KVec::new()),
            }),
            GFP_KERNEL_ACCOUNT,
        )
    }

    /// Records the VM's descriptor number, for [`Self::label`].
    pub(crate) fn set_fd(&self, fd: i32) {
        self.fd.store(fd, Ordering::Relaxed);
    }

    /// `<pid>-<fd>`, the name the C KVM gives the VM's debugfs directory;
    /// `None` before the descriptor is known.
    pub(crate) fn label(&self) -> Option<Label> {
        let fd = self.fd.load(Ordering::Relaxed);
        (fd >= 0).then(|| Label::new(self.pid, fd))
    }

    /// Adds a vCPU's statistics (for the metricfs rows).
    pub(crate) fn add_vcpu(&self, v: Arc<VcpuStats>) -> Result {
        Ok(self.vcpus.lock().push(v, GFP_KERNEL_ACCOUNT)?)
    }

    /// Calls `f` on each vCPU's statistics, under the list's lock.
    pub(crate) fn for_each_vcpu(&self, mut f: impl FnMut(&VcpuStats)) {
        for v in self.vcpus.lock().iter() {
            f(v);
        }
    }

    /// Counts one VM event.
    pub(crate) fn inc(&self, e: VmStat) {
        self.counters.inc(e);
    }
}

/// The statistics of a vCPU.
pub(crate) struct VcpuStats {
    /// The id string of its stats file.
    pub(crate) id: StatsId,
    /// The vCPU id.
    pub(crate) vcpu_id: u32,
    /// The counters.
    pub(crate) counters: VcpuCounters,
}

impl VcpuStats {
    /// The statistics of vCPU `vcpu_id`, being created by the current thread.
    pub(crate) fn new(vcpu_id: u32) -> Result<Arc<Self>> {
        let pid = kernel::current!().pid();
        Ok(Arc::new(
            Self { id: StatsId::vcpu(pid, vcpu_id), vcpu_id, counters: VcpuCounters::new() },
            GFP_KERNEL_ACCOUNT,
        )?)
    }
}

/// A short label, formatted without allocating.
pub(crate) struct Label {
    buf: [u8; 24],
    len: usize,
}

impl Label {
    fn new(pid: i32, fd: i32) -> Self {
        let mut l = Self { buf: [0; 24], len: 0 };
        // Two i32 and a dash always fit in 24 bytes.
        let _ = core::fmt::write(&mut l, format_args!("{}-{}", pid, fd));
        l
    }

    /// The text.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl core::fmt::Write for Label {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let dst = self.buf.get_mut(self.len..self.len + s.len()).ok_or(core::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len += s.len();
        Ok(())
    }
}

/// Copies the stats file of set `E` from `offset` into `out` (C:
/// `kvm_stats_read()`): as much as `out` takes, through a small buffer.
/// `EFAULT` if user memory cannot be written, as in C.
fn read_to_user<E: StatId>(id: &StatsId, values: &[AtomicU64], out: &mut UserSliceWriter, offset: u64) -> Result<usize> {
    let mut chunk = [0u8; 256];
    let mut done = 0usize;
    while !out.is_empty() {
        let want = out.len().min(chunk.len());
        let n = stats::read::<E>(id, values, offset.saturating_add(done as u64), &mut chunk[..want]);
        if n == 0 {
            break;
        }
        out.write_slice(&chunk[..n])?;
        done += n;
    }
    Ok(done)
}

/// The VM stats file.
struct VmStatsFile;

kernel::file_ops_table!(KVM_VM_STATS_FOPS, VmStatsFile);

#[vtable]
impl FileOps for VmStatsFile {
    type Ptr = Arc<VmStats>;

    fn read(this: ArcBorrow<'_, VmStats>, out: &mut UserSliceWriter, offset: u64) -> Result<usize> {
        read_to_user::<VmStat>(&this.id, this.counters.slots(), out, offset)
    }
}

/// The vCPU stats file.
struct VcpuStatsFile;

kernel::file_ops_table!(KVM_VCPU_STATS_FOPS, VcpuStatsFile);

#[vtable]
impl FileOps for VcpuStatsFile {
    type Ptr = Arc<VcpuStats>;

    fn read(this: ArcBorrow<'_, VcpuStats>, out: &mut UserSliceWriter, offset: u64) -> Result<usize> {
        read_to_user::<VcpuStat>(&this.id, this.counters.slots(), out, offset)
    }
}

/// `KVM_GET_STATS_FD` on a VM: a read-only, `pread`-able file (C:
/// `kvm_vm_ioctl_get_stats_fd()`).
pub(crate) fn vm_stats_fd(stats: &Arc<VmStats>) -> Result<isize> {
    let fd = create_anon_fd(
        &KVM_VM_STATS_FOPS,
        c_str!("kvm-vm-stats"),
        stats.clone(),
        flags::O_RDONLY | flags::O_CLOEXEC,
    )?;
    Ok(fd as isize)
}

/// `KVM_GET_STATS_FD` on a vCPU (C: `kvm_vcpu_ioctl_get_stats_fd()`).
pub(crate) fn vcpu_stats_fd(stats: &Arc<VcpuStats>) -> Result<isize> {
    let name = CString::try_from_fmt(fmt!("kvm-vcpu-stats:{}", stats.vcpu_id))?;
    let fd = create_anon_fd(&KVM_VCPU_STATS_FOPS, &name, stats.clone(), flags::O_RDONLY | flags::O_CLOEXEC)?;
    Ok(fd as isize)
}
