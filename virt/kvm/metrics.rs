// SPDX-License-Identifier: GPL-2.0

//! kvm-rs's metrics under debugfs, `/sys/kernel/debug/kvm-rs/<stat>/`: one
//! metricfs metric per statistic of [`VmStat`] and [`VcpuStat`], generated
//! from the same descriptor table as the binary stats files.
//!
//! Rows: `vm value` for a VM statistic, `vm vcpu value` for a vCPU one, with a
//! `bucket` field before `value` for a histogram (one row per bucket). `vm` is
//! `<pid>-<fd>`, the name the C KVM gives a VM's debugfs directory. Rows come
//! largest value first (ties in creation order), so a snapshot cut at the
//! metricfs size cap keeps the busiest VMs and vCPUs.
//!
//! The registry holds the statistics of live VMs, not the VMs: a VM removes
//! its entry when it is freed, and a snapshot being generated meanwhile holds
//! its own references, so it never reads freed memory.

use crate::binary_stats::{VcpuStats, VmStats};
use crate::stats::{Desc, StatId, VcpuStat, VmStat};
use kernel::{
    c_str,
    metricfs::{Emitter, Field, FieldType, Metric, MetricDir, Value},
    new_mutex,
    prelude::*,
    sync::{Arc, Mutex},
};

const VM: Field = Field { name: "vm", ty: FieldType::Str };
const VCPU: Field = Field { name: "vcpu", ty: FieldType::Int };
const BUCKET: Field = Field { name: "bucket", ty: FieldType::Int };
const VALUE: Field = Field { name: "value", ty: FieldType::Int };

static VM_FIELDS: [Field; 2] = [VM, VALUE];
static VM_HIST_FIELDS: [Field; 3] = [VM, BUCKET, VALUE];
static VCPU_FIELDS: [Field; 3] = [VM, VCPU, VALUE];
static VCPU_HIST_FIELDS: [Field; 4] = [VM, VCPU, BUCKET, VALUE];

/// The statistics of every live VM, in creation order.
#[pin_data]
pub(crate) struct Registry {
    #[pin]
    vms: Mutex<KVec<Arc<VmStats>>>,
}

impl Registry {
    /// An empty registry.
    pub(crate) fn new() -> Result<Arc<Self>> {
        Arc::pin_init(pin_init!(Self { vms <- new_mutex!(KVec::new()) }), GFP_KERNEL)
    }

    /// Adds a VM.
    pub(crate) fn add(&self, vm: Arc<VmStats>) -> Result {
        Ok(self.vms.lock().push(vm, GFP_KERNEL)?)
    }

    /// Removes a VM (nothing if it is not there).
    pub(crate) fn remove(&self, vm: &VmStats) {
        let mut vms = self.vms.lock();
        if let Some(i) = vms.iter().position(|v| core::ptr::eq(&**v, vm)) {
            // Keep the creation order: shift the rest down.
            vms[i..].rotate_left(1);
            drop(vms.pop());
        }
    }

    fn emit_vm(&self, e: VmStat, em: &mut Emitter) {
        let vms = self.vms.lock();
        let mut rows = Rows::new();
        for (i, vm) in vms.iter().enumerate() {
            for b in 0..usize::from(e.desc().size) {
                rows.push(Row { value: vm.counters.get(e, b), vm: i, vcpu: 0, bucket: b });
            }
        }
        rows.emit(&vms, e.desc(), false, em);
    }

    fn emit_vcpu(&self, e: VcpuStat, em: &mut Emitter) {
        let vms = self.vms.lock();
        let mut rows = Rows::new();
        for (i, vm) in vms.iter().enumerate() {
            vm.for_each_vcpu(|v: &VcpuStats| {
                for b in 0..usize::from(e.desc().size) {
                    rows.push(Row { value: v.counters.get(e, b), vm: i, vcpu: v.vcpu_id, bucket: b });
                }
            });
        }
        rows.emit(&vms, e.desc(), true, em);
    }
}

/// One row before it is written.
#[derive(Clone, Copy)]
struct Row {
    value: u64,
    vm: usize,
    vcpu: u32,
    bucket: usize,
}

/// The rows of one snapshot. If memory runs out while collecting, the rows
/// collected so far are written.
struct Rows {
    rows: KVec<Row>,
}

impl Rows {
    fn new() -> Self {
        Self { rows: KVec::new() }
    }

    fn push(&mut self, r: Row) {
        let _ = self.rows.push(r, GFP_KERNEL);
    }

    fn emit(mut self, vms: &[Arc<VmStats>], d: &Desc, vcpu: bool, em: &mut Emitter) {
        // Largest first; ties in creation order, then vCPU id, then bucket.
        self.rows.sort_unstable_by(|a, b| {
            b.value.cmp(&a.value).then(a.vm.cmp(&b.vm)).then(a.vcpu.cmp(&b.vcpu)).then(a.bucket.cmp(&b.bucket))
        });
        let hist = d.size > 1;
        for r in self.rows.iter() {
            let Some(label) = vms.get(r.vm).and_then(|v| v.label()) else { continue };
            let (vm, vc, bucket, value) =
                (Value::Str(label.as_bytes()), Value::UInt(u64::from(r.vcpu)), Value::UInt(r.bucket as u64), Value::UInt(r.value));
            let more = match (vcpu, hist) {
                (false, false) => em.emit(&[vm, value]),
                (false, true) => em.emit(&[vm, bucket, value]),
                (true, false) => em.emit(&[vm, vc, value]),
                (true, true) => em.emit(&[vm, vc, bucket, value]),
            };
            if !more {
                break;
            }
        }
    }
}

/// The metrics, registered while this lives.
pub(crate) struct Metrics {
    _metrics: KVec<Metric>,
}

/// Registers one metric per statistic under `/sys/kernel/debug/kvm-rs/`.
pub(crate) fn register(registry: &Arc<Registry>) -> Result<Metrics> {
    let dir = MetricDir::new(c_str!("kvm-rs"))?;
    let mut metrics = KVec::with_capacity(VmStat::COUNT + VcpuStat::COUNT, GFP_KERNEL)?;
    for &e in VmStat::ALL {
        let d = e.desc();
        let fields: &'static [Field] = if d.size > 1 { &VM_HIST_FIELDS } else { &VM_FIELDS };
        let r = registry.clone();
        let emit = KBox::new(move |em: &mut Emitter| r.emit_vm(e, em), GFP_KERNEL)?;
        metrics.push(Metric::register(&dir, d.name, d.help, fields, d.kind.is_cumulative(), emit)?, GFP_KERNEL)?;
    }
    for &e in VcpuStat::ALL {
        let d = e.desc();
        let fields: &'static [Field] = if d.size > 1 { &VCPU_HIST_FIELDS } else { &VCPU_FIELDS };
        let r = registry.clone();
        let emit = KBox::new(move |em: &mut Emitter| r.emit_vcpu(e, em), GFP_KERNEL)?;
        metrics.push(Metric::register(&dir, d.name, d.help, fields, d.kind.is_cumulative(), emit)?, GFP_KERNEL)?;
    }
    // The directory stays until the last metric in it is gone.
    Ok(Metrics { _metrics: metrics })
}

/// A VM's place in the registry: listed by [`Entry::publish`], removed when
/// the entry (a field of the VM) is dropped.
pub(crate) struct Entry {
    registry: Arc<Registry>,
    stats: Arc<VmStats>,
}

impl Entry {
    /// The entry of a VM with statistics `stats`, not listed yet.
    pub(crate) fn new(registry: Arc<Registry>, stats: Arc<VmStats>) -> Self {
        Self { registry, stats }
    }

    /// The VM's statistics.
    pub(crate) fn stats(&self) -> &Arc<VmStats> {
        &self.stats
    }

    /// Lists the VM, known to user space as descriptor `fd`. Without memory
    /// for the list the VM just has no metricfs rows, as the C KVM goes
    /// without a debugfs directory.
    pub(crate) fn publish(&self, fd: i32) {
        self.stats.set_fd(fd);
        if self.registry.add(self.stats.clone()).is_err() {
            pr_warn!("kvm-rs: no memory to list VM {} in debugfs\n", fd);
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.registry.remove(&self.stats);
    }
}
