// SPDX-License-Identifier: GPL-2.0

//! KVM statistics: the descriptor tables, the counters and the binary stats
//! file (`virt/kvm/binary_stats.c`, the `STATS_DESC_*` tables of
//! `include/linux/kvm_host.h` and `arch/x86/kvm/x86.c`).
//!
//! One table per scope, [`VmStat`] and [`VcpuStat`], says everything about each
//! statistic: its name, type, unit, base, exponent, size (number of `u64`) and a
//! one-line description. The binary stats file of `KVM_GET_STATS_FD` and the
//! metricfs export under debugfs are both generated from it, so the two never
//! disagree. Names are the C KVM's where the C KVM has the statistic.
//!
//! The counters of a VM or vCPU are an array of `AtomicU64`, one slot per `u64`
//! of data, addressed only through the typed enums: code that counts says
//! `stats.inc(VcpuStat::IoExits)`, never an index.
//!
//! Core-only (host-tested): the module wraps [`read`] in a file's `read`.

use crate::uapi::io;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicU64, Ordering};

/// `KVM_GET_STATS_FD` (VM and vCPU ioctl): a new read-only file of binary stats.
pub(crate) const KVM_GET_STATS_FD: u32 = io(0xce);
/// `KVM_CAP_BINARY_STATS_FD`: `KVM_GET_STATS_FD` exists.
pub(crate) const KVM_CAP_BINARY_STATS_FD: i64 = 203;

/// `KVM_STATS_NAME_SIZE`: the size of a name and of the id string, NUL included.
pub(crate) const KVM_STATS_NAME_SIZE: usize = 48;
/// `HALT_POLL_HIST_COUNT`: buckets of the halt histograms.
pub(crate) const HALT_POLL_HIST_COUNT: u16 = 32;
/// `sizeof(struct kvm_stats_header)`: flags, name_size, num_desc, id_offset,
/// desc_offset, data_offset (six `u32`).
pub(crate) const HEADER_SIZE: usize = 24;
/// `sizeof(struct kvm_stats_desc)` without the name: flags (`u32`), exponent
/// (`s16`), size (`u16`), offset (`u32`), bucket_size (`u32`).
pub(crate) const DESC_FIXED_SIZE: usize = 16;
/// One descriptor in the file: the fixed part, then the name.
pub(crate) const DESC_SIZE: usize = DESC_FIXED_SIZE + KVM_STATS_NAME_SIZE;

/// `KVM_STATS_TYPE_*`: how a value behaves over time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Only grows (`KVM_STATS_TYPE_CUMULATIVE`).
    Cumulative,
    /// A current value (`KVM_STATS_TYPE_INSTANT`).
    Instant,
    /// The highest value seen (`KVM_STATS_TYPE_PEAK`).
    Peak,
    /// Buckets of `bucket_size` each (`KVM_STATS_TYPE_LINEAR_HIST`).
    LinearHist {
        /// The width of a bucket; never 0.
        bucket_size: u32,
    },
    /// Bucket `i` counts values of `i` significant bits (`KVM_STATS_TYPE_LOG_HIST`).
    LogHist,
}

impl Kind {
    const fn flag(self) -> u32 {
        match self {
            Kind::Cumulative => 0,
            Kind::Instant => 1,
            Kind::Peak => 2,
            Kind::LinearHist { .. } => 3,
            Kind::LogHist => 4,
        }
    }

    const fn bucket_size(self) -> u32 {
        match self {
            Kind::LinearHist { bucket_size } => bucket_size,
            _ => 0,
        }
    }

    /// Whether every element only ever grows (counters, and histogram buckets,
    /// which count events).
    pub(crate) const fn is_cumulative(self) -> bool {
        matches!(self, Kind::Cumulative | Kind::LinearHist { .. } | Kind::LogHist)
    }
}

/// `KVM_STATS_UNIT_*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unit {
    /// A plain number.
    None,
    /// Bytes.
    Bytes,
    /// Seconds (with a negative exponent: `-9` for nanoseconds).
    Seconds,
    /// Clock cycles.
    Cycles,
    /// 0 or 1.
    Boolean,
}

impl Unit {
    const fn flag(self) -> u32 {
        (match self {
            Unit::None => 0,
            Unit::Bytes => 1,
            Unit::Seconds => 2,
            Unit::Cycles => 3,
            Unit::Boolean => 4,
        }) << 4
    }
}

/// `KVM_STATS_BASE_*`: the base of the exponent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Base {
    /// Powers of 10.
    Pow10,
    /// Powers of 2.
    Pow2,
}

impl Base {
    const fn flag(self) -> u32 {
        (match self {
            Base::Pow10 => 0,
            Base::Pow2 => 1,
        }) << 8
    }
}

/// One statistic: what `struct kvm_stats_desc` says of it, and a description
/// for metricfs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Desc {
    /// The name, shorter than [`KVM_STATS_NAME_SIZE`].
    pub(crate) name: &'static str,
    /// The type.
    pub(crate) kind: Kind,
    /// The unit.
    pub(crate) unit: Unit,
    /// The base of `exponent`.
    pub(crate) base: Base,
    /// The value is `data * base^exponent` units.
    pub(crate) exponent: i16,
    /// How many `u64` the statistic has (1, or the bucket count of a histogram).
    pub(crate) size: u16,
    /// One line for humans (metricfs `annotations`).
    pub(crate) help: &'static str,
}

impl Desc {
    /// `STATS_DESC_COUNTER`: a cumulative count of events.
    pub(crate) const fn counter(name: &'static str, help: &'static str) -> Self {
        Self { name, kind: Kind::Cumulative, unit: Unit::None, base: Base::Pow10, exponent: 0, size: 1, help }
    }
    /// `STATS_DESC_ICOUNTER`: a current count.
    pub(crate) const fn icounter(name: &'static str, help: &'static str) -> Self {
        Self { kind: Kind::Instant, ..Self::counter(name, help) }
    }
    /// `STATS_DESC_PCOUNTER`: the highest count seen.
    pub(crate) const fn pcounter(name: &'static str, help: &'static str) -> Self {
        Self { kind: Kind::Peak, ..Self::counter(name, help) }
    }
    /// `STATS_DESC_IBOOLEAN`: a current yes/no.
    pub(crate) const fn iboolean(name: &'static str, help: &'static str) -> Self {
        Self { kind: Kind::Instant, unit: Unit::Boolean, ..Self::counter(name, help) }
    }
    /// `STATS_DESC_TIME_NSEC`: cumulative nanoseconds.
    pub(crate) const fn time_nsec(name: &'static str, help: &'static str) -> Self {
        Self { unit: Unit::Seconds, exponent: -9, ..Self::counter(name, help) }
    }
    /// `STATS_DESC_LOGHIST_TIME_NSEC`: a logarithmic histogram of nanoseconds.
    pub(crate) const fn loghist_time_nsec(name: &'static str, size: u16, help: &'static str) -> Self {
        Self { kind: Kind::LogHist, size, ..Self::time_nsec(name, help) }
    }

    /// The `flags` of `struct kvm_stats_desc`.
    pub(crate) const fn flags(&self) -> u32 {
        self.kind.flag() | self.unit.flag() | self.base.flag()
    }

    /// The descriptor as it is in the file, with `offset` the byte offset of
    /// its data from the start of the data block.
    pub(crate) fn encode(&self, offset: u32) -> [u8; DESC_SIZE] {
        let mut b = [0u8; DESC_SIZE];
        b[0..4].copy_from_slice(&self.flags().to_ne_bytes());
        b[4..6].copy_from_slice(&self.exponent.to_ne_bytes());
        b[6..8].copy_from_slice(&self.size.to_ne_bytes());
        b[8..12].copy_from_slice(&offset.to_ne_bytes());
        b[12..16].copy_from_slice(&self.kind.bucket_size().to_ne_bytes());
        // Names are checked at build time to leave room for the NUL.
        let name = self.name.as_bytes();
        let n = name.len().min(KVM_STATS_NAME_SIZE - 1);
        b[DESC_FIXED_SIZE..DESC_FIXED_SIZE + n].copy_from_slice(&name[..n]);
        b
    }

    /// Whether the descriptor obeys the rules `kvm_binary_stats_test` checks.
    pub(crate) const fn is_valid(&self) -> bool {
        let exponent_ok = match self.unit {
            Unit::None | Unit::Bytes | Unit::Cycles => self.exponent >= 0,
            Unit::Seconds => self.exponent <= 0,
            Unit::Boolean => self.exponent == 0,
        };
        let bucket_ok = match self.kind {
            Kind::LinearHist { bucket_size } => bucket_size != 0,
            _ => true,
        };
        let single_ok = match self.kind {
            Kind::LinearHist { .. } | Kind::LogHist => true,
            _ => self.size == 1,
        };
        !self.name.is_empty()
            && self.name.len() < KVM_STATS_NAME_SIZE
            && self.size != 0
            && exponent_ok
            && bucket_ok
            && single_ok
    }
}

/// A set of statistics (VM or vCPU): an enum whose values name the entries of
/// one descriptor table.
pub(crate) trait StatId: Copy + 'static {
    /// The descriptors, in file order.
    const TABLE: &'static [Desc];
    /// Every value of the enum, in table order.
    const ALL: &'static [Self];
    /// `u64` slots of data the whole set takes.
    const SLOTS: usize;
    /// The first data slot of this statistic.
    fn slot(self) -> usize;
    /// Its descriptor.
    fn desc(self) -> &'static Desc;
}

/// Declares a statistics enum with its descriptor table, in one list, so that
/// an enum value and its descriptor cannot get out of step.
macro_rules! stat_set {
    (
        $(#[$m:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vm:meta])* $var:ident = $desc:expr, )*
        }
    ) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(usize)]
        $vis enum $name { $( $(#[$vm])* $var, )* }

        impl $name {
            const DESCS: [Desc; Self::COUNT] = [$($desc,)*];
            /// How many statistics the set has.
            pub(crate) const COUNT: usize = [$(stringify!($var),)*].len();
            /// The first data slot of each statistic.
            const OFFSETS: [usize; Self::COUNT] = {
                let mut o = [0; Self::COUNT];
                let (mut i, mut acc) = (0, 0);
                while i < Self::COUNT {
                    o[i] = acc;
                    acc += Self::DESCS[i].size as usize;
                    i += 1;
                }
                o
            };
            /// `u64` slots of data.
            pub(crate) const SLOTS: usize = {
                let (mut i, mut acc) = (0, 0);
                while i < Self::COUNT {
                    acc += Self::DESCS[i].size as usize;
                    i += 1;
                }
                acc
            };
        }

        impl StatId for $name {
            const TABLE: &'static [Desc] = &Self::DESCS;
            const ALL: &'static [Self] = &[$(Self::$var,)*];
            const SLOTS: usize = Self::SLOTS;
            fn slot(self) -> usize {
                // The discriminant is below COUNT by construction.
                Self::OFFSETS[self as usize]
            }
            fn desc(self) -> &'static Desc {
                &Self::DESCS[self as usize]
            }
        }

        // Every descriptor is one `kvm_binary_stats_test` accepts, and no two share a name.
        const _: () = {
            let mut i = 0;
            while i < $name::COUNT {
                assert!($name::DESCS[i].is_valid());
                i += 1;
            }
            assert!(!has_duplicate_names(&$name::DESCS));
        };
    };
}

/// Whether two descriptors have the same name (for the build-time checks).
pub(crate) const fn has_duplicate_names(t: &[Desc]) -> bool {
    let mut i = 0;
    while i < t.len() {
        let mut j = i + 1;
        while j < t.len() {
            if str_eq(t[i].name, t[j].name) {
                return true;
            }
            j += 1;
        }
        i += 1;
    }
    false
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

stat_set! {
    /// Per-VM statistics. The C KVM's generic ones first, in its order, then kvm-rs's own.
    pub(crate) enum VmStat {
        /// Remote TLB flushes that had to interrupt a vCPU in guest mode.
        RemoteTlbFlush = Desc::counter("remote_tlb_flush",
            "remote TLB flushes that interrupted a vCPU in guest mode"),
        /// Every remote TLB flush asked for.
        RemoteTlbFlushRequests = Desc::counter("remote_tlb_flush_requests",
            "remote TLB flushes requested"),
        /// Memory-slot changes that took effect (create, delete, move, flags).
        MemslotChanges = Desc::counter("memslot_changes",
            "memory slots created, deleted, moved or changed"),
        /// Guest writes appended to the coalesced MMIO/PIO ring instead of exiting.
        CoalescedWrites = Desc::counter("coalesced_writes",
            "guest MMIO/PIO writes coalesced into the ring"),
    }
}

stat_set! {
    /// Per-vCPU statistics. The C KVM's generic ones first, then its x86 ones
    /// (those kvm-rs maintains), in its order, then kvm-rs's own.
    pub(crate) enum VcpuStat {
        /// Halts ended by halt-polling without sleeping.
        HaltSuccessfulPoll = Desc::counter("halt_successful_poll",
            "halts ended while polling, without sleeping"),
        /// Halts that polled.
        HaltAttemptedPoll = Desc::counter("halt_attempted_poll", "halts that polled"),
        /// Polls ended by an event that did not make the vCPU runnable.
        HaltPollInvalid = Desc::counter("halt_poll_invalid",
            "polls ended by an event that did not wake the vCPU"),
        /// Times a halted, sleeping vCPU was woken.
        HaltWakeup = Desc::counter("halt_wakeup", "times a sleeping halted vCPU was woken"),
        /// Time spent in successful polls.
        HaltPollSuccessNs = Desc::time_nsec("halt_poll_success_ns", "time spent in successful polls"),
        /// Time spent in failed polls.
        HaltPollFailNs = Desc::time_nsec("halt_poll_fail_ns", "time spent in failed polls"),
        /// Time spent sleeping while halted.
        HaltWaitNs = Desc::time_nsec("halt_wait_ns", "time spent sleeping while halted"),
        /// Successful poll durations.
        HaltPollSuccessHist = Desc::loghist_time_nsec("halt_poll_success_hist", HALT_POLL_HIST_COUNT,
            "successful poll durations, log2 buckets"),
        /// Failed poll durations.
        HaltPollFailHist = Desc::loghist_time_nsec("halt_poll_fail_hist", HALT_POLL_HIST_COUNT,
            "failed poll durations, log2 buckets"),
        /// Halt sleep durations.
        HaltWaitHist = Desc::loghist_time_nsec("halt_wait_hist", HALT_POLL_HIST_COUNT,
            "halt sleep durations, log2 buckets"),
        /// 1 while the vCPU sleeps in a halt.
        Blocking = Desc::iboolean("blocking", "1 while the vCPU sleeps halted"),
        /// Nested page faults that mapped guest memory.
        PfFixed = Desc::counter("pf_fixed", "nested page faults that mapped guest memory"),
        /// Every VM exit.
        Exits = Desc::counter("exits", "VM exits, all reasons"),
        /// I/O instruction exits.
        IoExits = Desc::counter("io_exits", "port I/O exits"),
        /// Exits to user space for MMIO.
        MmioExits = Desc::counter("mmio_exits", "MMIO accesses completed by user space"),
        /// `KVM_RUN` returns with `KVM_EXIT_INTR` because of a signal.
        SignalExits = Desc::counter("signal_exits", "returns to user space for a signal"),
        /// Interrupt-window exits.
        IrqWindowExits = Desc::counter("irq_window_exits", "interrupt-window exits"),
        /// HLT exits.
        HaltExits = Desc::counter("halt_exits", "HLT exits"),
        /// Returns to user space with `KVM_EXIT_IRQ_WINDOW_OPEN`.
        RequestIrqExits = Desc::counter("request_irq_exits",
            "returns to user space with an open interrupt window"),
        /// Exits for a host interrupt.
        IrqExits = Desc::counter("irq_exits", "exits for a host interrupt"),
        /// Instructions emulated (MMIO).
        InsnEmulation = Desc::counter("insn_emulation", "instructions emulated"),
        /// Instructions that could not be emulated.
        InsnEmulationFail = Desc::counter("insn_emulation_fail",
            "instructions that could not be emulated"),
        /// Hypercalls.
        Hypercalls = Desc::counter("hypercalls", "hypercalls"),
        /// Interrupts injected.
        IrqInjections = Desc::counter("irq_injections", "interrupts injected"),
        /// NMIs injected.
        NmiInjections = Desc::counter("nmi_injections", "NMIs injected"),
        /// Nested page fault exits (kvm-rs).
        NptFaults = Desc::counter("npt_faults", "nested page fault exits"),
        /// CPUID exits (kvm-rs).
        CpuidExits = Desc::counter("cpuid_exits", "CPUID exits"),
        /// RDMSR and WRMSR exits (kvm-rs).
        MsrExits = Desc::counter("msr_exits", "RDMSR and WRMSR exits"),
    }
}

// The two sets share one debugfs directory: no name may be in both.
const _: () = {
    let mut i = 0;
    while i < VmStat::COUNT {
        let mut j = 0;
        while j < VcpuStat::COUNT {
            assert!(!str_eq(VmStat::DESCS[i].name, VcpuStat::DESCS[j].name));
            j += 1;
        }
        i += 1;
    }
};

/// The counters of one VM or vCPU: `N` = `E::SLOTS` atomic `u64`.
///
/// Writers are mostly the vCPU thread; readers (stats files, metricfs) may run
/// at any time, so every slot is an atomic and a reader sees each value whole.
pub(crate) struct Counters<E: StatId, const N: usize> {
    v: [AtomicU64; N],
    _e: PhantomData<E>,
}

/// The counters of a VM.
pub(crate) type VmCounters = Counters<VmStat, { VmStat::SLOTS }>;
/// The counters of a vCPU.
pub(crate) type VcpuCounters = Counters<VcpuStat, { VcpuStat::SLOTS }>;

impl<E: StatId, const N: usize> Default for Counters<E, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E: StatId, const N: usize> Counters<E, N> {
    /// All zero.
    pub(crate) const fn new() -> Self {
        const { assert!(N == E::SLOTS) };
        Self { v: [const { AtomicU64::new(0) }; N], _e: PhantomData }
    }

    fn at(&self, e: E, i: usize) -> Option<&AtomicU64> {
        if i >= usize::from(e.desc().size) {
            return None;
        }
        self.v.get(e.slot() + i)
    }

    /// Adds one to a counter.
    pub(crate) fn inc(&self, e: E) {
        self.add(e, 1);
    }

    /// Adds `n` to a counter.
    pub(crate) fn add(&self, e: E, n: u64) {
        if let Some(a) = self.at(e, 0) {
            a.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Sets an instant value.
    pub(crate) fn set(&self, e: E, n: u64) {
        if let Some(a) = self.at(e, 0) {
            a.store(n, Ordering::Relaxed);
        }
    }

    /// Raises a peak value to `n` if `n` is higher.
    pub(crate) fn max(&self, e: E, n: u64) {
        if let Some(a) = self.at(e, 0) {
            a.fetch_max(n, Ordering::Relaxed);
        }
    }

    /// Counts `value` in a histogram: bucket `fls64(value)` of a logarithmic
    /// one, `value / bucket_size` of a linear one, the last bucket for
    /// anything beyond (C: `KVM_STATS_LOG_HIST_UPDATE`, `KVM_STATS_LINEAR_HIST_UPDATE`).
    pub(crate) fn hist_add(&self, e: E, value: u64) {
        let d = e.desc();
        let last = usize::from(d.size).saturating_sub(1);
        let bucket = match d.kind {
            Kind::LogHist => (u64::BITS - value.leading_zeros()) as usize,
            Kind::LinearHist { bucket_size } => (value / u64::from(bucket_size.max(1))) as usize,
            _ => 0,
        };
        if let Some(a) = self.at(e, bucket.min(last)) {
            a.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Element `i` of a statistic (0 for a plain value); 0 past its end.
    pub(crate) fn get(&self, e: E, i: usize) -> u64 {
        self.at(e, i).map_or(0, |a| a.load(Ordering::Relaxed))
    }

    /// All slots, in file order.
    pub(crate) fn slots(&self) -> &[AtomicU64] {
        &self.v
    }
}

/// The id string of a stats file: NUL-padded, at most 47 characters.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct StatsId([u8; KVM_STATS_NAME_SIZE]);

impl StatsId {
    /// The id of a VM created by thread `pid`: `kvm-<pid>`.
    pub(crate) fn vm(pid: i32) -> Self {
        let mut w = IdWriter::default();
        let _ = core::fmt::write(&mut w, format_args!("kvm-{}", pid));
        Self(w.buf)
    }

    /// The id of vCPU `id` created by thread `pid`: `kvm-<pid>/vcpu-<id>`.
    pub(crate) fn vcpu(pid: i32, id: u32) -> Self {
        let mut w = IdWriter::default();
        let _ = core::fmt::write(&mut w, format_args!("kvm-{}/vcpu-{}", pid, id));
        Self(w.buf)
    }

    /// The bytes in the file.
    pub(crate) fn bytes(&self) -> &[u8; KVM_STATS_NAME_SIZE] {
        &self.0
    }

    /// The string, without the padding.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        let n = self.0.iter().position(|&b| b == 0).unwrap_or(KVM_STATS_NAME_SIZE);
        &self.0[..n]
    }
}

/// Formats into a [`StatsId`], truncating (a NUL always stays at the end).
struct IdWriter {
    buf: [u8; KVM_STATS_NAME_SIZE],
    len: usize,
}

impl Default for IdWriter {
    fn default() -> Self {
        Self { buf: [0; KVM_STATS_NAME_SIZE], len: 0 }
    }
}

impl Default for StatsId {
    fn default() -> Self {
        Self([0; KVM_STATS_NAME_SIZE])
    }
}

impl core::fmt::Write for IdWriter {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for &b in s.as_bytes() {
            if self.len + 1 >= KVM_STATS_NAME_SIZE {
                return Err(core::fmt::Error);
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

/// Where the parts of a stats file of set `E` are (C: `kvm_vm_stats_header`,
/// `kvm_vcpu_stats_header`): header, id string, descriptors, data, in that
/// order with no gaps.
pub(crate) struct Layout<E: StatId>(PhantomData<E>);

impl<E: StatId> Layout<E> {
    /// `id_offset`.
    pub(crate) const ID_OFFSET: usize = HEADER_SIZE;
    /// `desc_offset`.
    pub(crate) const DESC_OFFSET: usize = Self::ID_OFFSET + KVM_STATS_NAME_SIZE;
    /// `data_offset`.
    pub(crate) const DATA_OFFSET: usize = Self::DESC_OFFSET + E::TABLE.len() * DESC_SIZE;
    /// The size of the file.
    pub(crate) const SIZE: usize = Self::DATA_OFFSET + E::SLOTS * 8;

    /// `struct kvm_stats_header`.
    pub(crate) fn header() -> [u8; HEADER_SIZE] {
        let fields = [
            0, // flags
            KVM_STATS_NAME_SIZE as u32,
            E::TABLE.len() as u32,
            Self::ID_OFFSET as u32,
            Self::DESC_OFFSET as u32,
            Self::DATA_OFFSET as u32,
        ];
        let mut b = [0u8; HEADER_SIZE];
        for (i, f) in fields.iter().enumerate() {
            if let Some(d) = b.get_mut(4 * i..4 * i + 4) {
                d.copy_from_slice(&f.to_ne_bytes());
            }
        }
        b
    }
}

/// Copies the part of `src`, which lies at file offset `start`, that falls in
/// the window `out` (at file offset `pos`).
fn copy_part(out: &mut [u8], pos: usize, start: usize, src: &[u8]) {
    let end = start + src.len();
    let (lo, hi) = (pos.max(start), (pos + out.len()).min(end));
    if lo < hi {
        out[lo - pos..hi - pos].copy_from_slice(&src[lo - start..hi - start]);
    }
}

/// The bytes at `pos` of the stats file of set `E` with id `id` and counters
/// `values`, as many as fit in `out`: what `read`/`pread` of `out.len()` bytes
/// at `pos` returns (C: `kvm_stats_read()`). Returns how many bytes were
/// produced; 0 at or past the end.
pub(crate) fn read<E: StatId>(id: &StatsId, values: &[AtomicU64], pos: u64, out: &mut [u8]) -> usize {
    let size = Layout::<E>::SIZE;
    let Ok(pos) = usize::try_from(pos) else { return 0 };
    if pos >= size {
        return 0;
    }
    let n = out.len().min(size - pos);
    let out = &mut out[..n];
    let end = pos + n;
    if pos < Layout::<E>::ID_OFFSET {
        copy_part(out, pos, 0, &Layout::<E>::header());
    }
    copy_part(out, pos, Layout::<E>::ID_OFFSET, id.bytes());
    let desc_off = Layout::<E>::DESC_OFFSET;
    let data_off = Layout::<E>::DATA_OFFSET;
    if pos < data_off && end > desc_off {
        // Only the descriptors that overlap the window are built.
        let first = pos.saturating_sub(desc_off) / DESC_SIZE;
        for (i, e) in E::ALL.iter().enumerate().skip(first) {
            let at = desc_off + i * DESC_SIZE;
            if at >= end {
                break;
            }
            copy_part(out, pos, at, &e.desc().encode((e.slot() * 8) as u32));
        }
    }
    if end > data_off {
        let first = pos.saturating_sub(data_off) / 8;
        for (i, v) in values.iter().enumerate().take(E::SLOTS).skip(first) {
            let at = data_off + i * 8;
            if at >= end {
                break;
            }
            copy_part(out, pos, at, &v.load(Ordering::Relaxed).to_ne_bytes());
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    fn u32_at(b: &[u8], o: usize) -> u32 {
        u32::from_ne_bytes(b[o..o + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], o: usize) -> u64 {
        u64::from_ne_bytes(b[o..o + 8].try_into().unwrap())
    }

    fn whole<E: StatId, const N: usize>(id: &StatsId, c: &Counters<E, N>) -> Vec<u8> {
        let mut b = vec![0u8; Layout::<E>::SIZE + 100];
        let n = read::<E>(id, c.slots(), 0, &mut b);
        b.truncate(n);
        b
    }

    /// The checks of `kvm_binary_stats_test.c`'s `stats_test()`, on the bytes.
    fn check_file<E: StatId, const N: usize>(id: &StatsId, c: &Counters<E, N>) {
        let b = whole(id, c);
        assert_eq!(b.len(), Layout::<E>::SIZE);
        let (flags, name_size, num_desc) = (u32_at(&b, 0), u32_at(&b, 4) as usize, u32_at(&b, 8) as usize);
        let (id_off, desc_off, data_off) = (u32_at(&b, 12) as usize, u32_at(&b, 16) as usize, u32_at(&b, 20) as usize);
        assert_eq!(flags, 0);
        assert_eq!(name_size, KVM_STATS_NAME_SIZE);
        assert_eq!(num_desc, E::TABLE.len());
        assert_eq!(id_off, HEADER_SIZE);
        let idb = &b[id_off..id_off + name_size];
        assert!(idb.starts_with(b"kvm"));
        assert!(idb.iter().position(|&x| x == 0).unwrap() < name_size);
        assert!(desc_off >= HEADER_SIZE && data_off >= HEADER_SIZE);
        let desc_size = DESC_FIXED_SIZE + name_size;
        assert!(desc_off > data_off || desc_off + desc_size * num_desc <= data_off);
        let mut size_data = 0;
        for i in 0..num_desc {
            let d = &b[desc_off + i * desc_size..desc_off + (i + 1) * desc_size];
            let flags = u32_at(d, 0);
            let exponent = i16::from_ne_bytes([d[4], d[5]]);
            let size = u16::from_ne_bytes([d[6], d[7]]) as usize;
            let offset = u32_at(d, 8) as usize;
            let bucket = u32_at(d, 12);
            let name = &d[16..];
            assert!(name.iter().position(|&x| x == 0).unwrap() < name_size);
            let (ty, unit, base) = (flags & 0xf, flags & 0xf0, flags & 0xf00);
            assert!(ty <= 4 && unit <= 0x40 && base <= 0x100 && flags & !0xfff == 0);
            match unit {
                0x00 | 0x10 | 0x30 => assert!(exponent >= 0),
                0x20 => assert!(exponent <= 0),
                _ => assert_eq!(exponent, 0),
            }
            assert_ne!(size, 0);
            if ty == 3 {
                assert_ne!(bucket, 0);
            } else {
                assert_eq!(bucket, 0);
            }
            size_data = size_data.max(offset + size * 8);
            // The descriptor names the entry of the table.
            let e = E::ALL[i];
            assert_eq!(&name[..e.desc().name.len()], e.desc().name.as_bytes());
            assert_eq!(offset, e.slot() * 8);
        }
        assert!(data_off >= desc_off || data_off + size_data <= desc_off);
        assert!(size_data >= num_desc * 8);
        assert_eq!(data_off + size_data, b.len());
    }

    #[test]
    fn vm_and_vcpu_files_pass_the_upstream_checks() {
        check_file(&StatsId::vm(1234), &VmCounters::new());
        check_file(&StatsId::vcpu(1234, 3), &VcpuCounters::new());
    }

    #[test]
    fn layout_matches_the_c_headers() {
        // C: data_offset = sizeof(header) + KVM_STATS_NAME_SIZE + sizeof(desc table).
        assert_eq!(Layout::<VcpuStat>::DESC_OFFSET, 72);
        assert_eq!(Layout::<VcpuStat>::DATA_OFFSET, 72 + VcpuStat::COUNT * 64);
        // Three histograms of 32 buckets and the rest single values.
        assert_eq!(VcpuStat::SLOTS, VcpuStat::COUNT - 3 + 3 * 32);
        assert_eq!(VmStat::SLOTS, VmStat::COUNT);
        // The C KVM's generic stats come first, in its order.
        let names: Vec<&str> = VcpuStat::TABLE.iter().take(11).map(|d| d.name).collect();
        assert_eq!(
            names,
            [
                "halt_successful_poll",
                "halt_attempted_poll",
                "halt_poll_invalid",
                "halt_wakeup",
                "halt_poll_success_ns",
                "halt_poll_fail_ns",
                "halt_wait_ns",
                "halt_poll_success_hist",
                "halt_poll_fail_hist",
                "halt_wait_hist",
                "blocking"
            ]
        );
        assert_eq!(VmStat::TABLE[0].name, "remote_tlb_flush");
        assert_eq!(VmStat::TABLE[1].name, "remote_tlb_flush_requests");
        assert_eq!(VcpuStat::HaltWaitNs.desc().flags(), 0x20);
        assert_eq!(VcpuStat::HaltWaitNs.desc().exponent, -9);
        assert_eq!(VcpuStat::HaltWaitHist.desc().flags(), 0x24);
        assert_eq!(VcpuStat::Blocking.desc().flags(), 0x41);
    }

    #[test]
    fn reads_at_any_offset_agree_with_the_whole() {
        let c = VcpuCounters::new();
        for (i, e) in VcpuStat::ALL.iter().enumerate() {
            c.add(*e, 1000 + i as u64);
        }
        let id = StatsId::vcpu(77, 5);
        let all = whole(&id, &c);
        // Every (offset, length) pair over the boundaries of each part.
        let size = all.len();
        let mut points: Vec<usize> = vec![0, 1, 23, 24, 25, 71, 72, 73, 135, 136, size - 9, size - 8, size - 1, size];
        points.push(Layout::<VcpuStat>::DATA_OFFSET - 1);
        points.push(Layout::<VcpuStat>::DATA_OFFSET);
        points.push(Layout::<VcpuStat>::DATA_OFFSET + 3);
        for &pos in &points {
            for len in [0, 1, 3, 7, 8, 63, 64, 65, 200, size] {
                let mut b = vec![0xaau8; len];
                let n = read::<VcpuStat>(&id, c.slots(), pos as u64, &mut b);
                let want = len.min(size.saturating_sub(pos));
                assert_eq!(n, want, "pos {pos} len {len}");
                assert_eq!(&b[..n], &all[pos..pos + n], "pos {pos} len {len}");
            }
        }
        // Byte by byte.
        for (pos, want) in all.iter().enumerate() {
            let mut b = [0u8; 1];
            assert_eq!(read::<VcpuStat>(&id, c.slots(), pos as u64, &mut b), 1);
            assert_eq!(b[0], *want);
        }
        let mut b = [0u8; 8];
        assert_eq!(read::<VcpuStat>(&id, c.slots(), size as u64, &mut b), 0);
        assert_eq!(read::<VcpuStat>(&id, c.slots(), u64::MAX, &mut b), 0);
    }

    #[test]
    fn counters_land_in_their_descriptor_slots() {
        let c = VcpuCounters::new();
        c.inc(VcpuStat::IoExits);
        c.inc(VcpuStat::IoExits);
        c.add(VcpuStat::Exits, 5);
        c.set(VcpuStat::Blocking, 1);
        c.hist_add(VcpuStat::HaltWaitHist, 0); // bucket 0
        c.hist_add(VcpuStat::HaltWaitHist, 1); // bucket 1
        c.hist_add(VcpuStat::HaltWaitHist, 1000); // 10 bits: bucket 10
        c.hist_add(VcpuStat::HaltWaitHist, u64::MAX); // last bucket
        let id = StatsId::vcpu(1, 0);
        let b = whole(&id, &c);
        let data = Layout::<VcpuStat>::DATA_OFFSET;
        let val = |e: VcpuStat, i: usize| u64_at(&b, data + (e.slot() + i) * 8);
        assert_eq!(val(VcpuStat::IoExits, 0), 2);
        assert_eq!(val(VcpuStat::Exits, 0), 5);
        assert_eq!(val(VcpuStat::Blocking, 0), 1);
        assert_eq!(val(VcpuStat::HaltWaitHist, 0), 1);
        assert_eq!(val(VcpuStat::HaltWaitHist, 1), 1);
        assert_eq!(val(VcpuStat::HaltWaitHist, 10), 1);
        assert_eq!(val(VcpuStat::HaltWaitHist, 31), 1);
        assert_eq!(c.get(VcpuStat::HaltWaitHist, 10), 1);
        assert_eq!(c.get(VcpuStat::HaltWaitHist, 32), 0);
        assert_eq!(val(VcpuStat::HaltPollFailHist, 0), 0);
        c.set(VcpuStat::Blocking, 0);
        assert_eq!(c.get(VcpuStat::Blocking, 0), 0);
        let v = VmCounters::new();
        v.max(VmStat::RemoteTlbFlush, 3);
        v.max(VmStat::RemoteTlbFlush, 2);
        assert_eq!(v.get(VmStat::RemoteTlbFlush, 0), 3);
    }

    #[test]
    fn id_strings_are_the_c_ones() {
        assert_eq!(StatsId::vm(4321).as_bytes(), b"kvm-4321");
        assert_eq!(StatsId::vcpu(4321, 7).as_bytes(), b"kvm-4321/vcpu-7");
        assert_eq!(StatsId::vcpu(i32::MAX, u32::MAX).as_bytes(), b"kvm-2147483647/vcpu-4294967295");
        assert_eq!(StatsId::vm(1).bytes()[8..], [0u8; 40]);
    }

    #[test]
    fn descriptor_rules() {
        assert!(!Desc { size: 0, ..Desc::counter("x", "") }.is_valid());
        assert!(!Desc { exponent: -1, ..Desc::counter("x", "") }.is_valid());
        assert!(!Desc { exponent: 1, ..Desc::time_nsec("x", "") }.is_valid());
        assert!(!Desc { kind: Kind::LinearHist { bucket_size: 0 }, ..Desc::counter("x", "") }.is_valid());
        assert!(!Desc { size: 2, ..Desc::counter("x", "") }.is_valid());
        assert!(!Desc::counter("a_name_that_is_far_too_long_for_the_48_byte_field", "").is_valid());
        assert!(Desc::loghist_time_nsec("h", 32, "").is_valid());
        assert!(has_duplicate_names(&[Desc::counter("a", ""), Desc::counter("a", "")]));
        assert!(!has_duplicate_names(&[Desc::counter("a", ""), Desc::counter("b", "")]));
        assert!(Kind::LogHist.is_cumulative() && !Kind::Instant.is_cumulative());
    }
}
