// SPDX-License-Identifier: GPL-2.0

//! The Intel VMX backend (`arch/x86/kvm/vmx/vmx.c`): capabilities checked
//! and controls adjusted at probe, VMX operation on every CPU, one VMCS per
//! vCPU with EPT and a VPID, and the decoding of VM exits.
//!
//! Design, and how it differs from the C KVM:
//!
//! - The VMCS is touched only with interrupts disabled, inside
//!   [`VmxVcpu::run`] (and the IPI that clears it). kvm-rs has no preempt
//!   notifiers, so nothing tells the backend when the vCPU's task migrates;
//!   instead the vCPU keeps its guest state in software, writes what changed
//!   before each entry and reads back after each exit what the guest can
//!   change without one, all while the VMCS is current on this CPU. The
//!   segments and descriptor tables are read only after the exits that may
//!   need them ([`ColdAt`]); otherwise a change or the end of `KVM_RUN`
//!   makes the VMCS current again to read them.
//! - "Loading" the vCPU on a CPU: the first entry on a CPU puts the VMCS on
//!   that CPU's loaded-VMCS list and VMPTRLDs it. If the VMCS is still
//!   active on another CPU, the entry is abandoned and
//!   [`VendorVcpu::prepare_entry`], which runs before the next attempt with
//!   interrupts on, VMCLEARs it there with an IPI (as the C KVM's
//!   `loaded_vmcs_clear()`), then the entry is tried again.
//! - The host state the VMX host-state area cannot hold (selectors with RPL
//!   or TI set, the LDT, the user GS base) is read before every entry and
//!   restored after every exit (C: once per vcpu_load/vcpu_put).
//! - `MSR_MISC_FEATURES_ENABLES` is read once per *load* of the vCPU, where
//!   load means the start of `KVM_RUN` or an entry on another CPU than the
//!   last one (without preempt notifiers these are the only points where
//!   the host value can have changed for this task: it is per task, CPUID
//!   faulting, or per CPU, ring-3 MWAIT).

use super::backend::{vector, Backend, CrOp, EntryCtx, Event, Exit, VendorVcpu};
use super::msrs;
use super::regs::{KvmDtable, KvmSegment, Seg};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use kernel::{
    c_str,
    prelude::*,
    smp::{self, nr_cpu_ids, EmergencyVirtHandler, EmergencyVirtWith, Hotplug, HotplugCallbacks, IrqDisabled},
    sync::Arc,
    x86,
};
use capabilities::{probe, VmxConfig};
use loaded_vmcs::{Lists, NoNmi, Slot, NIL};
use vmcs::{
    cr0, entry_ctl, interruptibility, intr_info, proc, proc2, ColdState, CrExit, CrPolicy, EptViolation, ExitReason, ExitState, IoExit,
    MsrEntry, VpidBitmap,
};
use vmx_ops::{CurrentVmcs, MsrList, VmxPage, VmxRegs, VmxonTest};

#[path = "capabilities.rs"]
mod capabilities;
#[path = "loaded_vmcs.rs"]
mod loaded_vmcs;
#[path = "vmcs.rs"]
pub(crate) mod vmcs;
#[path = "vmx_ops.rs"]
mod vmx_ops;

kernel::module_param!(
    VMXON_FAULT_TEST: i32 = 0,
    "vmxon_fault_test",
    "Test the VMXON error path: 1 bad VMXON region, 2 VMXON faults, 3 VMXON faults on the last CPU only"
);

/// The number of VMCSs that can exist at once (one per vCPU): the slots of
/// the loaded-VMCS lists, allocated at module load so that the crash path
/// never follows a pointer into freed memory.
const MAX_VMCS: usize = 4096;

/// The MSRs of the guest's MSR-load/store lists: switched by the CPU at
/// each entry and exit (SDM 25.7.2, 25.8.2), so the guest may access them
/// without exits. FS/GS base, SYSENTER and PAT are VMCS fields.
const LIST_MSRS: [u32; 5] = [
    0xc000_0102, // KERNEL_GS_BASE
    0xc000_0081, // STAR
    0xc000_0082, // LSTAR
    0xc000_0083, // CSTAR
    0xc000_0084, // SYSCALL_MASK
];

/// MSRs the guest accesses directly (their state is in the VMCS or the lists).
const PASSTHROUGH_MSRS: [u32; 11] = [
    0xc000_0100, // FS_BASE
    0xc000_0101, // GS_BASE
    0xc000_0102, // KERNEL_GS_BASE
    0xc000_0081, // STAR
    0xc000_0082, // LSTAR
    0xc000_0083, // CSTAR
    0xc000_0084, // SYSCALL_MASK
    0x174,       // SYSENTER_CS
    0x175,       // SYSENTER_ESP
    0x176,       // SYSENTER_EIP
    0x277,       // PAT: loaded and saved through the VMCS
];

/// The PAT at reset (SDM vol. 3, 11.12.4).
const PAT_RESET: u64 = 0x0007_0406_0007_0406;
/// RFLAGS.IF.
const RFLAGS_IF: u64 = 1 << 9;
/// EFER bits.
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// The 32-bit word of the virtual-APIC page holding VTPR (offset 0x80).
const VTPR_WORD: usize = 0x80 / 4;
/// Exception bitmap: #MC, which the host must see (as SVM intercepts it).
const EXCEPTION_BITMAP: u32 = 1 << vector::MC;

/// One CPU's VMX state.
struct VmxCpu {
    /// The VMXON region.
    vmxon: VmxPage,
    /// VMXON succeeded and VMXOFF has not run.
    enabled: AtomicBool,
    /// Physical address of the current VMCS (0: none), to skip VMPTRLD.
    current: AtomicU64,
}

/// What the CPUs, the crash path and the vCPUs share.
struct VmxShared {
    cfg: VmxConfig,
    cpus: KVec<VmxCpu>,
    /// The loaded-VMCS lists: slots and per-CPU heads.
    slots: KVec<Slot>,
    heads: KVec<AtomicU32>,
    vpids: VpidBitmap<KVec<AtomicU64>>,
    /// `vmxon_fault_test`, and the CPU it applies to (`None`: all).
    fault_test: VmxonTest,
    fault_test_cpu: Option<u32>,
}

impl VmxShared {
    fn lists(&self) -> Lists<'_> {
        Lists::new(&self.slots, &self.heads)
    }

    /// VMCLEARs every VMCS active on this CPU, then leaves VMX operation.
    fn disable_this_cpu(&self, irq: &IrqDisabled) {
        let cpu = irq.cpu();
        self.lists().drain(cpu, |pa| {
            let _ = vmx_ops::vmclear(pa);
        }, &mut NoNmi);
        if let Some(c) = self.cpus.get(cpu as usize) {
            c.current.store(0, Ordering::Relaxed);
            c.enabled.store(false, Ordering::Release);
        }
        vmx_ops::disable_on_this_cpu();
    }
}

/// The crash/kexec callback (C: `vmx_emergency_disable_virtualization_cpu()`):
/// in NMI context, VMCLEAR every VMCS on this CPU's list, without changing
/// the list (the NMI may have interrupted an update of it), then VMXOFF.
impl EmergencyVirtHandler for VmxShared {
    fn disable_virtualization(&self) {
        let irq = IrqDisabled::new();
        if x86::read_cr4() & vmcs::cr4::VMXE == 0 {
            return;
        }
        self.lists().walk(irq.cpu(), |pa| {
            let _ = vmx_ops::vmclear(pa);
        });
        vmx_ops::disable_on_this_cpu();
    }
}

/// The hotplug callbacks: VMX operation on every online CPU.
struct VmxHp(Arc<VmxShared>);

impl HotplugCallbacks for VmxHp {
    fn startup(&self, cpu: u32) -> Result {
        let sh = &self.0;
        let c = sh.cpus.get(cpu as usize).ok_or(EINVAL)?;
        let irq = IrqDisabled::new();
        let test = match sh.fault_test_cpu {
            Some(only) if only != cpu => VmxonTest::None,
            _ => sh.fault_test,
        };
        match vmx_ops::enable_on_this_cpu(&irq, &c.vmxon, &sh.cfg.fixed, test) {
            Ok(()) => {
                c.current.store(0, Ordering::Relaxed);
                c.enabled.store(true, Ordering::Release);
                Ok(())
            }
            Err((e, why)) => {
                pr_err!("vmx: cannot enable VMX on CPU {}: {}; CR4.VMXE left clear\n", cpu, why);
                Err(e)
            }
        }
    }

    fn teardown(&self, cpu: u32) -> Result {
        let irq = IrqDisabled::new();
        if irq.cpu() != cpu {
            pr_err!("vmx: teardown of CPU {} ran on CPU {}\n", cpu, irq.cpu());
            return Err(EINVAL);
        }
        self.0.disable_this_cpu(&irq);
        Ok(())
    }
}

/// The VMX backend.
pub(crate) struct Vmx {
    shared: Arc<VmxShared>,
    /// Dropped first: every CPU leaves VMX operation.
    _hp: Hotplug<VmxHp>,
    /// Dropped after: the crash path no longer needs the lists.
    _emergency: EmergencyVirtWith<VmxShared>,
    /// The MSR bitmap shared by all vCPUs.
    msr_bitmap: Arc<VmxPage>,
    /// The bitmap that makes every MSR access exit, used while an MSR
    /// filter is set (user space then decides about every MSR).
    msr_bitmap_all: Arc<VmxPage>,
}

impl Vmx {
    /// Checks the CPU, enables VMX on every CPU and prepares the shared structures.
    pub(crate) fn new() -> Result<Self> {
        let cfg = probe()?;
        let ncpus = nr_cpu_ids() as usize;
        let mut cpus = KVec::with_capacity(ncpus, GFP_KERNEL)?;
        for _ in 0..ncpus {
            let mut vmxon = VmxPage::new_zeroed(GFP_KERNEL)?;
            vmxon[0] = cfg.basic.revision;
            cpus.push(
                VmxCpu { vmxon, enabled: AtomicBool::new(false), current: AtomicU64::new(0) },
                GFP_KERNEL,
            )?;
        }
        let mut slots = KVec::with_capacity(MAX_VMCS, GFP_KERNEL)?;
        for _ in 0..MAX_VMCS {
            slots.push(Slot::new(), GFP_KERNEL)?;
        }
        let mut heads = KVec::with_capacity(ncpus, GFP_KERNEL)?;
        for _ in 0..ncpus {
            heads.push(AtomicU32::new(NIL), GFP_KERNEL)?;
        }
        let mut words = KVec::with_capacity(VpidBitmap::<KVec<AtomicU64>>::WORDS, GFP_KERNEL)?;
        for _ in 0..VpidBitmap::<KVec<AtomicU64>>::WORDS {
            words.push(AtomicU64::new(0), GFP_KERNEL)?;
        }
        let (fault_test, fault_test_cpu) = match VMXON_FAULT_TEST.get() {
            0 => (VmxonTest::None, None),
            1 => (VmxonTest::BadRegion, None),
            2 => (VmxonTest::Fault, None),
            3 => (VmxonTest::Fault, Some(kernel::cpu::num_online_cpus().saturating_sub(1))),
            v => {
                pr_err!("vmx: vmxon_fault_test={} is not 0..3\n", v);
                return Err(EINVAL);
            }
        };
        if fault_test != VmxonTest::None {
            pr_info!("vmx: vmxon_fault_test={}: VMXON will fail on purpose\n", VMXON_FAULT_TEST.get());
        }
        let shared = Arc::new(
            VmxShared { cfg, cpus, slots, heads, vpids: VpidBitmap::new(words), fault_test, fault_test_cpu },
            GFP_KERNEL,
        )?;
        let mut bitmap_all = VmxPage::new_zeroed(GFP_KERNEL)?;
        bitmap_all.fill(u32::MAX);
        let mut bitmap = VmxPage::new_zeroed(GFP_KERNEL)?;
        {
            // Every MSR exits, except the ones the VMCS switches.
            let bytes: &mut [u32; 1024] = &mut bitmap;
            bytes.fill(u32::MAX);
            for msr in PASSTHROUGH_MSRS {
                if let Some((rd, wr, bit)) = vmcs::msr_bitmap_pos(msr) {
                    for byte in [rd, wr] {
                        let (w, b) = (byte / 4, (byte % 4) * 8 + usize::from(bit));
                        if let Some(word) = bytes.get_mut(w) {
                            *word &= !(1u32 << b);
                        }
                    }
                }
            }
        }
        // The crash path must know the lists before any CPU can have a VMCS.
        let emergency = EmergencyVirtWith::register(shared.clone())?;
        let hp = Hotplug::register(c_str!("kvm-rs/vmx:online"), VmxHp(shared.clone()))?;
        pr_info!(
            "vmx: VMX enabled: EPT, unrestricted guest{}{}, VMCS revision {:#x}\n",
            if cfg.proc2 & proc2::ENABLE_VPID != 0 { ", VPID" } else { "" },
            if cfg.tpr_shadow { ", TPR shadow" } else { "" },
            cfg.basic.revision
        );
        pr_info!(
            "vmx: controls: pin {:#x} proc {:#x} proc2 {:#x} exit {:#x} entry {:#x}; INVEPT {:?}, INVVPID {:?}\n",
            cfg.pin,
            cfg.proc,
            cfg.proc2,
            cfg.exit,
            cfg.entry,
            cfg.flush.invept,
            cfg.flush.invvpid
        );
        Ok(Self {
            shared,
            _hp: hp,
            _emergency: emergency,
            msr_bitmap: Arc::new(bitmap, GFP_KERNEL)?,
            msr_bitmap_all: Arc::new(bitmap_all, GFP_KERNEL)?,
        })
    }
}

/// Groups of guest state that differ between the software copy and the VMCS
/// (RIP, RSP and RFLAGS are written before every entry).
mod dirty {
    pub(super) const SEGS: u32 = 1 << 0;
    pub(super) const DTABLES: u32 = 1 << 1;
    pub(super) const CRS: u32 = 1 << 2;
    pub(super) const EFER: u32 = 1 << 3;
    pub(super) const MSRS: u32 = 1 << 5;
    pub(super) const INTR_STATE: u32 = 1 << 6;
    pub(super) const TSC: u32 = 1 << 7;
    pub(super) const CONTROLS: u32 = 1 << 8;
    pub(super) const EVENT: u32 = 1 << 9;
    pub(super) const TPR_THRESHOLD: u32 = 1 << 10;
    pub(super) const ALL: u32 = (1 << 11) - 1;
}

/// A vCPU's VMX state: the VMCS and the software copy of the guest state.
pub(crate) struct VmxVcpu {
    shared: Arc<VmxShared>,
    msr_bitmap: Arc<VmxPage>,
    msr_bitmap_all: Arc<VmxPage>,
    /// The VMCS names `msr_bitmap_all` (an MSR filter is set).
    msr_all: bool,
    vmcs: VmxPage,
    /// Its physical address.
    vmcs_pa: u64,
    /// The virtual-APIC page (with TPR shadow): VTPR at offset 0x80.
    vapic: Option<VmxPage>,
    /// CR8 as last set, without TPR shadow (every CR8 access exits).
    cr8: u8,
    /// The TPR threshold field (0: no exit).
    tpr_threshold: u32,
    /// Its loaded-VMCS slot.
    slot: u32,
    vpid: u16,
    /// Guest values of [`LIST_MSRS`]: VM-entry load list and VM-exit store list.
    guest_msrs: MsrList,
    /// Host values of [`LIST_MSRS`]: VM-exit load list.
    host_msrs: MsrList,
    /// VMLAUNCH done since the last VMCLEAR.
    launched: bool,
    /// The VMCS was never written: everything must be.
    fresh: bool,
    host_cache: vmx_ops::HostStateCache,
    /// CPU of the last entry, and whether the host values read at load
    /// (`vcpu_load`) are current.
    last_cpu: Option<u32>,
    host_loaded: bool,
    host_misc_features: u64,
    dirty: u32,
    flush_pending: bool,
    /// The last entry was abandoned because the VMCS is active on another
    /// CPU: `prepare_entry` clears it there.
    clear_needed: bool,

    // Guest state.
    /// The segments (`GUEST_SEGS` order), when `cold_at` is `Fields`.
    segs: [KvmSegment; 8],
    /// Where the segments, GDTR, IDTR, SYSENTER MSRs and PAT are current.
    cold_at: ColdAt,
    /// What the last exit read (`run`).
    exit: ExitState,
    /// The segments, GDTR, IDTR, SYSENTER MSRs and PAT as the last exit
    /// that read them left them ([`ColdAt::Read`]).
    cold: ColdState,
    /// The VMCS's RIP, RSP and RFLAGS are still those `exit` read: no VMCS
    /// write since the last exit.
    regs_as_read: bool,
    gdt: KvmDtable,
    idt: KvmDtable,
    /// CR0 and CR4 as the guest sees them (also the read shadows).
    cr0: u64,
    cr3: u64,
    cr4: u64,
    cr2: u64,
    efer: u64,
    rflags: u64,
    dr6: u64,
    dr7: u64,
    intr_state: u32,
    pending_dbg: u64,
    sysenter_cs: u64,
    sysenter_esp: u64,
    sysenter_eip: u64,
    pat: u64,
    debugctl: u64,
    tsc_offset: u64,
    // Controls.
    proc: u32,
    /// VM-entry interruption information, error code, instruction length.
    entry_intr: u32,
    entry_err: u32,
    entry_len: u32,
    /// The last exit's IDT-vectoring information and error code.
    idt_vectoring: u32,
    idt_vectoring_err: u32,
}

/// Where a VMX vCPU's segments, descriptor tables, SYSENTER MSRs and PAT
/// (the [`ColdState`] fields) are current. Most exits never look at them:
/// they are read from the VMCS only after the exits whose handling may, and
/// converted only when something asks for one or changes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ColdAt {
    /// In the vCPU's fields (`segs`, `gdt`...): set by user space or at
    /// reset, or converted from `cold` before a change.
    Fields,
    /// In `cold`, as the last exit read them.
    Read,
    /// Only in the VMCS: the last exit did not read them (a reason whose
    /// handling never looks, [`reads_cold`]). A change brings them back
    /// first (`materialize_cold`), and so does the end of `KVM_RUN`
    /// (`vcpu_put`), before any ioctl can ask.
    Vmcs,
}

/// Whether the handling of an exit may look at the [`ColdState`] fields,
/// which are then read before `run` returns. The handlers of the others
/// (CPUID, VMCALL, HLT, interrupts and windows, PAUSE, WBINVD, XSETBV,
/// RDPMC, and RDMSR/WRMSR of an MSR that is not a segment base, SYSENTER or
/// PAT) use only RIP, RSP, RFLAGS, the interruptibility state, the control
/// registers and the CPL, all read on every exit.
fn reads_cold(basic: ExitReason, ecx: u32) -> bool {
    match basic {
        ExitReason::Cpuid
        | ExitReason::Vmcall
        | ExitReason::Hlt
        | ExitReason::ExternalInterrupt
        | ExitReason::InterruptWindow
        | ExitReason::NmiWindow
        | ExitReason::TprBelowThreshold
        | ExitReason::Pause
        | ExitReason::Invd
        | ExitReason::Wbinvd
        | ExitReason::Xsetbv
        | ExitReason::Rdpmc => false,
        ExitReason::Rdmsr | ExitReason::Wrmsr => matches!(ecx, 0xc000_0100 | 0xc000_0101 | 0x174..=0x176 | 0x277),
        _ => true,
    }
}

/// The index of `s` in the guest segment table ([`vmcs::GUEST_SEGS`], `kvm_sregs` order).
/// A segment as the VMCS holds it, in `kvm_segment` form.
fn raw_to_seg((selector, base, limit, ar): vmcs::RawSeg) -> KvmSegment {
    let (attrib, _) = vmcs::ar::to_attrib(ar);
    KvmSegment::from_attrib(selector, base, limit, attrib)
}

fn seg_index(s: Seg) -> usize {
    match s {
        Seg::Cs => 0,
        Seg::Ds => 1,
        Seg::Es => 2,
        Seg::Fs => 3,
        Seg::Gs => 4,
        Seg::Ss => 5,
        Seg::Tr => 6,
        Seg::Ldtr => 7,
    }
}

/// `smp::call_on_cpu` argument of [`clear_on_this_cpu`].
struct ClearArg<'a> {
    shared: &'a VmxShared,
    slot: u32,
    pa: u64,
}

/// VMCLEARs a vCPU's VMCS on the CPU where it is active and takes it off
/// that CPU's list (C: `__loaded_vmcs_clear()`); runs in the IPI handler
/// (interrupts off). Nothing to do if the VMCS moved meanwhile or the CPU's
/// teardown already cleared it.
fn clear_on_this_cpu(a: &ClearArg<'_>) {
    let irq = IrqDisabled::new();
    let cpu = irq.cpu();
    let lists = a.shared.lists();
    if lists.cpu_of(a.slot) != cpu {
        return;
    }
    if let Some(c) = a.shared.cpus.get(cpu as usize) {
        let _ = c.current.compare_exchange(a.pa, 0, Ordering::Relaxed, Ordering::Relaxed);
    }
    let _ = vmx_ops::vmclear(a.pa);
    lists.remove(cpu, a.slot, &mut NoNmi);
}

impl VmxVcpu {
    /// Makes sure the VMCS is not active on another CPU than `here`:
    /// VMCLEARs it where it is (IPI and wait). Interrupts on.
    fn clear_elsewhere(&mut self, here: Option<u32>) {
        let lists = self.shared.lists();
        for _ in 0..8 {
            let c = lists.cpu_of(self.slot);
            if c == NIL || Some(c) == here {
                return;
            }
            let arg = ClearArg { shared: &self.shared, slot: self.slot, pa: self.vmcs.phys_addr() };
            if smp::call_on_cpu(c, &arg, clear_on_this_cpu).is_err() {
                // Offline: its teardown cleared every VMCS it had.
                return;
            }
        }
    }

    /// Makes the VMCS current on this CPU (C: `vmx_vcpu_load_vmcs()`): puts
    /// it on this CPU's list and VMPTRLDs it if it is active nowhere.
    /// `Err(None)`: not now, try again (active on another CPU, which
    /// `prepare_entry` then clears, or this CPU is going offline);
    /// `Err(Some(exit))`: the failure to report. `Ok` gives this CPU.
    #[inline(always)]
    fn make_current(&mut self, irq: &IrqDisabled) -> core::result::Result<u32, Option<(Exit, Option<u64>)>> {
        let cpu = irq.cpu();
        // Borrowed, not cloned (a reference count up and down per entry):
        // nothing here takes `self` mutably.
        let shared = &*self.shared;
        let Some(pc) = shared.cpus.get(cpu as usize) else {
            return Err(Some((Exit::FailedEntry { reason: u64::MAX }, None)));
        };
        if !pc.enabled.load(Ordering::Acquire) {
            // This CPU is going offline (or the crash path ran): the task
            // is about to be moved elsewhere.
            return Err(None);
        }
        let lists = shared.lists();
        let pa = self.vmcs_pa;
        match lists.cpu_of(self.slot) {
            c if c == cpu => {}
            NIL => {
                // Load: on the list first, then VMPTRLD (the crash path
                // must find every VMCS that can be active).
                lists.add(cpu, self.slot, &mut NoNmi);
                self.launched = false;
                if vmx_ops::vmptrld(irq, &self.vmcs).is_err() {
                    let _ = vmx_ops::vmclear(pa);
                    lists.remove(cpu, self.slot, &mut NoNmi);
                    self.report_failure("VMPTRLD failed", pa);
                    return Err(Some((Exit::FailedEntry { reason: u64::MAX - 1 }, None)));
                }
                pc.current.store(pa, Ordering::Relaxed);
                // Whatever ran here before, it was not this VMCS: keep its
                // branch predictions away, as below (C: the IBPB of
                // `vmx_vcpu_load_vmcs()` whenever the current VMCS changes).
                x86::indirect_branch_prediction_barrier();
                // Flush every context of this VM on the new CPU: it may
                // hold stale translations from an earlier stay (C:
                // KVM_REQ_TLB_FLUSH in `vmx_vcpu_load_vmcs()`).
                self.flush_pending = true;
            }
            // Active on another CPU: `prepare_entry` clears it there.
            _ => {
                self.clear_needed = true;
                return Err(None);
            }
        }
        if pc.current.load(Ordering::Relaxed) != pa {
            if vmx_ops::vmptrld(irq, &self.vmcs).is_err() {
                self.report_failure("VMPTRLD failed", pa);
                return Err(Some((Exit::FailedEntry { reason: u64::MAX - 1 }, None)));
            }
            pc.current.store(pa, Ordering::Relaxed);
            // Another vCPU ran here: keep its branch predictions away (C:
            // `vmx_vcpu_load_vmcs()`).
            x86::indirect_branch_prediction_barrier();
        }
        Ok(cpu)
    }

    fn pol_cr0(&self) -> CrPolicy {
        self.shared.cfg.cr0
    }

    fn pol_cr4(&self) -> CrPolicy {
        self.shared.cfg.cr4
    }

    fn entry_controls(&self) -> u32 {
        let mut e = self.shared.cfg.entry;
        if self.efer & EFER_LMA != 0 {
            e |= entry_ctl::IA32E_MODE;
        }
        e
    }

    fn secondary_controls(&self) -> u32 {
        let mut p = self.shared.cfg.proc2;
        if self.vpid == 0 {
            p &= !proc2::ENABLE_VPID;
        }
        p
    }

    fn list_index(msr: u32) -> Option<usize> {
        LIST_MSRS.iter().position(|m| *m == msr)
    }

    /// Writes what changed in the software copy into the VMCS.
    fn write_guest_state(&mut self, v: &CurrentVmcs<'_>, rip: u64, rsp: u64) {
        let d = if self.fresh { dirty::ALL } else { self.dirty };
        if d & (dirty::SEGS | dirty::DTABLES | dirty::MSRS) != 0 {
            // Only after a failed entry (`dirty::ALL`) can they be only in
            // the VMCS here (a change brings them into the fields first):
            // it is current, read them from it.
            if self.cold_at == ColdAt::Vmcs {
                v.read_set(&mut self.cold);
                self.cold_at = ColdAt::Read;
            }
            self.materialize_cold();
        }
        if d & dirty::CONTROLS != 0 {
            v.write32(vmcs::PIN_BASED_VM_EXEC_CONTROL, self.shared.cfg.pin);
            v.write32(vmcs::CPU_BASED_VM_EXEC_CONTROL, self.proc);
            v.write32(vmcs::SECONDARY_VM_EXEC_CONTROL, self.secondary_controls());
            v.write32(vmcs::VM_EXIT_CONTROLS, self.shared.cfg.exit);
            v.write32(vmcs::EXCEPTION_BITMAP, EXCEPTION_BITMAP);
            v.write32(vmcs::PAGE_FAULT_ERROR_CODE_MASK, 0);
            v.write32(vmcs::PAGE_FAULT_ERROR_CODE_MATCH, 0);
            v.write32(vmcs::CR3_TARGET_COUNT, 0);
            if self.vpid != 0 {
                v.write16(vmcs::VIRTUAL_PROCESSOR_ID, self.vpid);
            }
            v.write_nat(vmcs::CR0_GUEST_HOST_MASK, self.pol_cr0().mask);
            v.write_nat(vmcs::CR4_GUEST_HOST_MASK, self.pol_cr4().mask);
            v.write32(vmcs::GUEST_ACTIVITY_STATE, 0);
            v.write_nat(vmcs::GUEST_DR7, 0x400);
            v.write64(vmcs::GUEST_IA32_DEBUGCTL, 0);
        }
        if d & dirty::SEGS != 0 {
            for (i, f) in vmcs::GUEST_SEGS.iter().enumerate() {
                let s = &self.segs[i];
                let unusable = s.unusable != 0 || s.present == 0;
                let mut attrib = s.attrib();
                // Unrestricted guest requires the accessed bit of usable
                // code and data segments (C: `__vmx_set_segment()`).
                if i != seg_index(Seg::Ldtr) && i != seg_index(Seg::Tr) && !unusable {
                    attrib |= vmcs::ar::ACCESSED as u16;
                }
                v.write16(f.selector, s.selector);
                v.write_nat(f.base, s.base);
                v.write32(f.limit, s.limit);
                v.write32(f.ar, vmcs::ar::from_attrib(attrib, unusable));
            }
        }
        if d & dirty::DTABLES != 0 {
            v.write_nat(vmcs::GUEST_GDTR_BASE, self.gdt.base);
            v.write32(vmcs::GUEST_GDTR_LIMIT, u32::from(self.gdt.limit));
            v.write_nat(vmcs::GUEST_IDTR_BASE, self.idt.base);
            v.write32(vmcs::GUEST_IDTR_LIMIT, u32::from(self.idt.limit));
        }
        if d & dirty::CRS != 0 {
            v.write_nat(vmcs::GUEST_CR0, self.pol_cr0().hw_value(self.cr0));
            v.write_nat(vmcs::CR0_READ_SHADOW, self.cr0);
            v.write_nat(vmcs::GUEST_CR3, self.cr3);
            v.write_nat(vmcs::GUEST_CR4, self.pol_cr4().hw_value(self.cr4));
            v.write_nat(vmcs::CR4_READ_SHADOW, self.cr4);
        }
        if d & dirty::EFER != 0 {
            v.write64(vmcs::GUEST_IA32_EFER, self.efer);
            v.write32(vmcs::VM_ENTRY_CONTROLS, self.entry_controls());
        }
        if d & dirty::MSRS != 0 {
            v.write32(vmcs::GUEST_SYSENTER_CS, self.sysenter_cs as u32);
            v.write_nat(vmcs::GUEST_SYSENTER_ESP, self.sysenter_esp);
            v.write_nat(vmcs::GUEST_SYSENTER_EIP, self.sysenter_eip);
            v.write64(vmcs::GUEST_IA32_PAT, self.pat);
        }
        if d & dirty::INTR_STATE != 0 {
            v.write32(vmcs::GUEST_INTERRUPTIBILITY_INFO, self.intr_state);
            v.write_nat(vmcs::GUEST_PENDING_DBG_EXCEPTIONS, self.pending_dbg);
        }
        if d & dirty::TSC != 0 {
            v.write64(vmcs::TSC_OFFSET, self.tsc_offset);
        }
        if d & dirty::TPR_THRESHOLD != 0 && self.vapic.is_some() {
            v.write32(vmcs::TPR_THRESHOLD, self.tpr_threshold);
        }
        if d & dirty::EVENT != 0 {
            v.write32(vmcs::VM_ENTRY_INTR_INFO_FIELD, self.entry_intr);
            if self.entry_intr & intr_info::VALID != 0 {
                v.write32(vmcs::VM_ENTRY_EXCEPTION_ERROR_CODE, self.entry_err);
                v.write32(vmcs::VM_ENTRY_INSTRUCTION_LEN, self.entry_len);
            }
        }
        // RIP, RSP and RFLAGS: right after an exit the VMCS holds what
        // `exit` read, so only what changed since is written (RIP, on most
        // exits); otherwise all three, with one call.
        let rflags = self.rflags | 2;
        if core::mem::take(&mut self.regs_as_read) {
            let x = &self.exit;
            if rip != x.rip() {
                v.write_nat(vmcs::GUEST_RIP, rip);
            }
            if rsp != x.rsp() {
                v.write_nat(vmcs::GUEST_RSP, rsp);
            }
            if rflags != x.rflags() {
                v.write_nat(vmcs::GUEST_RFLAGS, rflags);
            }
        } else {
            v.write_set(&vmcs::EntryRegs::new(rip, rsp, rflags));
        }
        self.dirty = 0;
        self.fresh = false;
    }

    /// Takes over what the guest can change without an exit from the
    /// fields read after the exit.
    fn read_guest_state(&mut self) {
        let x = &self.exit;
        self.rflags = x.rflags();
        self.intr_state = x.intr_state();
        self.pending_dbg = x.pending_dbg();
        self.cr0 = self.pol_cr0().guest_value(x.cr0(), self.cr0);
        self.cr3 = x.cr3();
        self.cr4 = self.pol_cr4().guest_value(x.cr4(), self.cr4);
    }

    /// Brings the [`ColdState`] fields from the VMCS into `cold` if only
    /// the VMCS has them, with interrupts on: makes the VMCS current on
    /// this CPU first (clearing it where it is active, as an entry would).
    fn sync_cold(&mut self) {
        for _ in 0..8 {
            if self.cold_at != ColdAt::Vmcs {
                return;
            }
            if core::mem::take(&mut self.clear_needed) {
                let here = IrqDisabled::new().cpu();
                self.clear_elsewhere(Some(here));
            }
            let irq = IrqDisabled::new();
            match self.make_current(&irq) {
                Ok(_) => {
                    let v = CurrentVmcs::new(&irq);
                    v.read_set(&mut self.cold);
                    match v.failed() {
                        None => self.cold_at = ColdAt::Read,
                        Some((n, enc)) => {
                            self.report_failure("VMCS reads failed", u64::from(enc) | (u64::from(n) << 32));
                            return;
                        }
                    }
                }
                Err(Some(_)) => return,
                // Abandoned as an entry would be: try again.
                Err(None) => {}
            }
        }
        if self.cold_at == ColdAt::Vmcs {
            pr_err!("vmx: vCPU VPID {}: guest segments could not be read back\n", self.vpid);
        }
    }

    /// Takes the segments, GDTR, IDTR, SYSENTER MSRs and PAT over into the
    /// vCPU's fields, before one of them is changed or written. Interrupts
    /// on (outside `run`; inside, `write_guest_state` reads the VMCS itself).
    fn materialize_cold(&mut self) {
        self.sync_cold();
        if self.cold_at == ColdAt::Fields {
            return;
        }
        self.cold_at = ColdAt::Fields;
        let x = &self.cold;
        for (i, s) in self.segs.iter_mut().enumerate() {
            *s = raw_to_seg(x.seg(i));
        }
        self.gdt = KvmDtable { base: x.gdtr_base(), limit: x.gdtr_limit() as u16 };
        self.idt = KvmDtable { base: x.idtr_base(), limit: x.idtr_limit() as u16 };
        self.sysenter_cs = u64::from(x.sysenter_cs());
        self.sysenter_esp = x.sysenter_esp();
        self.sysenter_eip = x.sysenter_eip();
        self.pat = x.pat();
    }

    /// The SYSENTER MSRs and PAT (`sysenter_cs`, `_esp`, `_eip`, `pat`) as
    /// the guest last had them.
    fn cold_msrs(&self) -> [u64; 4] {
        if self.cold_at != ColdAt::Fields {
            let x = &self.cold;
            [u64::from(x.sysenter_cs()), x.sysenter_esp(), x.sysenter_eip(), x.pat()]
        } else {
            [self.sysenter_cs, self.sysenter_esp, self.sysenter_eip, self.pat]
        }
    }

    /// Reads `MSR_MISC_FEATURES_ENABLES` and the constant host MSRs of the
    /// VM-exit load list: once per load (see the module documentation).
    fn load_host_values(&mut self) {
        self.host_misc_features = x86::rdmsr_safe(vmcs::MSR_MISC_FEATURES_ENABLES).unwrap_or(0);
        self.host_cache.reload_task_msrs();
        for (i, msr) in LIST_MSRS.iter().enumerate() {
            if *msr == 0xc000_0102 {
                continue; // per entry: the task's user GS base
            }
            if let Some(e) = self.host_msrs.get_mut(i) {
                e.value = x86::rdmsr_safe(*msr).unwrap_or(0);
            }
        }
        self.host_loaded = true;
    }

    fn decode_exit(&mut self, irq: &IrqDisabled) -> (Exit, Option<u64>) {
        let x = &self.exit;
        let reason = x.reason();
        let basic = ExitReason::from_basic(reason as u16);
        let qual = x.qualification();
        let next = if basic.has_instruction_length() {
            Some(x.rip().wrapping_add(u64::from(x.insn_len())))
        } else {
            None
        };
        let exit = match basic {
            ExitReason::ExceptionNmi => {
                let info = x.intr_info();
                match intr_info::kind(info) {
                    intr_info::TYPE_NMI => {
                        vmx_ops::handle_nmi_exit(irq);
                        Exit::Nmi
                    }
                    // The host's machine check, handled before interrupts
                    // come back on and not passed on (C:
                    // `handle_exception_irqoff()`).
                    intr_info::TYPE_HW_EXCEPTION if intr_info::vector(info) == vector::MC => {
                        x86::machine_check(irq);
                        Exit::MachineCheck
                    }
                    _ => {
                        let vector = intr_info::vector(info);
                        let error_code =
                            (info & intr_info::DELIVER_CODE != 0).then_some(x.intr_error());
                        Exit::Exception { vector, error_code, info: qual }
                    }
                }
            }
            ExitReason::ExternalInterrupt | ExitReason::Init | ExitReason::Sipi | ExitReason::Smi => {
                Exit::ExternalInterrupt
            }
            ExitReason::TripleFault => Exit::Shutdown,
            ExitReason::InterruptWindow => {
                self.proc &= !proc::INTR_WINDOW_EXITING;
                self.dirty |= dirty::CONTROLS;
                Exit::InterruptWindow
            }
            ExitReason::NmiWindow => {
                self.proc &= !proc::NMI_WINDOW_EXITING;
                self.dirty |= dirty::CONTROLS;
                Exit::InterruptWindow
            }
            ExitReason::TaskSwitch => Exit::TaskSwitch,
            ExitReason::Cpuid => Exit::Cpuid,
            ExitReason::Hlt => Exit::Hlt,
            ExitReason::Invd | ExitReason::Wbinvd => Exit::Wbinvd,
            ExitReason::Rdpmc => Exit::Rdpmc,
            ExitReason::Vmcall => Exit::Hypercall,
            ExitReason::Getsec
            | ExitReason::Rsm
            | ExitReason::VmxInstruction
            | ExitReason::InvEptVpid
            | ExitReason::Vmfunc
            | ExitReason::Mwait
            | ExitReason::Monitor
            | ExitReason::Rdtscp
            | ExitReason::Invpcid
            | ExitReason::XsavesXrstors
            | ExitReason::RdRandSeed => Exit::UdInstruction,
            ExitReason::CrAccess => {
                let (cr, op) = match CrExit::decode(qual) {
                    CrExit::MovTo { cr, gpr } => (cr, CrOp::MovTo(gpr)),
                    CrExit::MovFrom { cr, gpr } => (cr, CrOp::MovFrom(gpr)),
                    CrExit::Clts => (0, CrOp::Clts),
                    CrExit::Lmsw(src) => (0, CrOp::Lmsw(src)),
                };
                Exit::CrAccess { cr, op }
            }
            ExitReason::DrAccess => {
                let (dr, write, gpr) = vmcs::decode_dr_exit(qual);
                Exit::DrAccess { dr, write, gpr: Some(gpr) }
            }
            ExitReason::Io => {
                let info = self.shared.cfg.basic.ins_outs_info.then_some(x.insn_info());
                let io = IoExit::decode(qual, info);
                let seg = io.seg.and_then(|s| match s {
                    0 => Some(Seg::Es),
                    1 => Some(Seg::Cs),
                    2 => Some(Seg::Ss),
                    3 => Some(Seg::Ds),
                    4 => Some(Seg::Fs),
                    5 => Some(Seg::Gs),
                    _ => None,
                });
                let addr_size = io.addr_size.unwrap_or_else(|| self.default_addr_size());
                Exit::Io {
                    port: io.port,
                    size: io.size,
                    input: io.input,
                    string: io.string,
                    rep: io.rep,
                    addr_size,
                    seg: if io.string && !io.input { seg } else { None },
                }
            }
            ExitReason::TprBelowThreshold => Exit::TprBelowThreshold,
            ExitReason::Rdmsr => Exit::Rdmsr,
            ExitReason::Wrmsr => Exit::Wrmsr,
            ExitReason::Xsetbv => Exit::Xsetbv,
            ExitReason::Pause => Exit::Pause,
            ExitReason::EptViolation => {
                let e = EptViolation::decode(qual);
                Exit::TdpFault {
                    gpa: x.gpa(),
                    write: e.write,
                    fetch: e.fetch,
                    present: e.present,
                    on_table_walk: e.on_table_walk,
                }
            }
            // kvm-rs never writes a misconfigured entry; treat the access
            // as an MMIO or missing-page fault all the same, as the C KVM
            // does for its MMIO entries.
            ExitReason::EptMisconfig => Exit::TdpFault {
                gpa: x.gpa(),
                write: false,
                fetch: false,
                present: true,
                on_table_walk: false,
            },
            ExitReason::InvalidGuestState | ExitReason::MsrLoadFail | ExitReason::MachineCheckOnEntry => {
                Exit::FailedEntry { reason: u64::from(reason) }
            }
            ExitReason::Rdtsc
            | ExitReason::Invlpg
            | ExitReason::MonitorTrapFlag
            | ExitReason::ApicAccess
            | ExitReason::DescriptorTable
            | ExitReason::PreemptionTimer
            | ExitReason::Other(_) => Exit::Unknown {
                code: u64::from(reason),
                info1: qual,
                info2: x.intr_info().into(),
            },
        };
        (exit, next)
    }

    /// The address size of INS/OUTS when the CPU does not report it: the
    /// default of the current mode (an address-size prefix is then missed,
    /// as the C KVM misses it without the INS/OUTS information).
    /// Segment `s` as the guest last had it.
    fn seg_at(&self, s: Seg) -> KvmSegment {
        let i = seg_index(s);
        if self.cold_at != ColdAt::Fields {
            raw_to_seg(self.cold.seg(i))
        } else {
            self.segs[i]
        }
    }

    /// The segments, to change: converted from the last exit's values first.
    fn segs_mut(&mut self) -> &mut [KvmSegment; 8] {
        self.materialize_cold();
        &mut self.segs
    }

    fn default_addr_size(&self) -> u8 {
        let cs = &self.seg_at(Seg::Cs);
        if self.efer & EFER_LMA != 0 && cs.l != 0 {
            8
        } else if self.cr0 & cr0::PE != 0 && cs.db != 0 {
            4
        } else {
            2
        }
    }

    /// Reports a VMCS that could not be written or an entry that failed,
    /// once per vCPU, with the values that usually explain it.
    fn report_failure(&self, what: &str, detail: u64) {
        pr_err!(
            "vmx: vCPU VPID {}: {} ({:#x}); CR0 {:#x} CR4 {:#x} EFER {:#x} RFLAGS {:#x} CS {:#x}/{:#x}\n",
            self.vpid,
            what,
            detail,
            self.cr0,
            self.cr4,
            self.efer,
            self.rflags,
            self.seg_at(Seg::Cs).selector,
            self.seg_at(Seg::Cs).attrib()
        );
    }
}

impl Drop for VmxVcpu {
    fn drop(&mut self) {
        // The VMCS must be inactive everywhere before its page is freed.
        self.clear_elsewhere(None);
        let lists = self.shared.lists();
        self.shared.vpids.free(self.vpid);
        if lists.cpu_of(self.slot) != NIL || !lists.free(self.slot) {
            // Still active somewhere (cannot happen: a CPU clears its VMCSs
            // before going offline): never free memory a CPU may write.
            pr_err!("vmx: a VMCS could not be cleared; leaking it\n");
            let page = core::mem::replace(&mut self.vmcs, match VmxPage::new_zeroed(GFP_KERNEL) {
                Ok(p) => p,
                Err(_) => return,
            });
            core::mem::forget(page);
        }
    }
}

impl Backend for Vmx {
    type Vcpu = VmxVcpu;

    fn create_vcpu(&self) -> Result<KBox<VmxVcpu>> {
        let mut vmcs = VmxPage::new_zeroed(GFP_KERNEL_ACCOUNT)?;
        vmcs[0] = self.shared.cfg.basic.revision;
        let mut guest_msrs = MsrList::new_zeroed(GFP_KERNEL_ACCOUNT)?;
        let mut host_msrs = MsrList::new_zeroed(GFP_KERNEL_ACCOUNT)?;
        for (i, msr) in LIST_MSRS.iter().enumerate() {
            guest_msrs[i] = MsrEntry { index: *msr, reserved: 0, value: 0 };
            host_msrs[i] = MsrEntry { index: *msr, reserved: 0, value: 0 };
        }
        let vapic = if self.shared.cfg.tpr_shadow { Some(VmxPage::new_zeroed(GFP_KERNEL_ACCOUNT)?) } else { None };
        // Last: nothing after this may fail (the slot would leak).
        let slot = self.shared.lists().alloc(vmcs.phys_addr()).ok_or_else(|| {
            pr_err!("vmx: more than {} vCPUs\n", MAX_VMCS);
            ENOMEM
        })?;
        let vpid = if self.shared.cfg.proc2 & proc2::ENABLE_VPID != 0 { self.shared.vpids.alloc().unwrap_or(0) } else { 0 };
        let vmcs_pa = vmcs.phys_addr();
        let mut v = VmxVcpu {
            shared: self.shared.clone(),
            msr_bitmap: self.msr_bitmap.clone(),
            msr_bitmap_all: self.msr_bitmap_all.clone(),
            msr_all: false,
            vmcs,
            vmcs_pa,
            vapic,
            cr8: 0,
            tpr_threshold: 0,
            slot,
            vpid,
            guest_msrs,
            host_msrs,
            launched: false,
            fresh: true,
            host_cache: Default::default(),
            last_cpu: None,
            host_loaded: false,
            host_misc_features: 0,
            dirty: dirty::ALL,
            flush_pending: true,
            clear_needed: false,
            segs: [KvmSegment::default(); 8],
            cold_at: ColdAt::Fields,
            cold: <ColdState as vmcs::FieldSet>::zeroed(),
            exit: <ExitState as vmcs::FieldSet>::zeroed(),
            regs_as_read: false,
            gdt: KvmDtable::default(),
            idt: KvmDtable::default(),
            cr0: 0,
            cr3: 0,
            cr4: 0,
            cr2: 0,
            efer: 0,
            rflags: 2,
            dr6: 0xffff_0ff0,
            dr7: 0x400,
            intr_state: 0,
            pending_dbg: 0,
            sysenter_cs: 0,
            sysenter_esp: 0,
            sysenter_eip: 0,
            pat: PAT_RESET,
            debugctl: 0,
            tsc_offset: 0,
            proc: self.shared.cfg.proc,
            entry_intr: 0,
            entry_err: 0,
            entry_len: 0,
            idt_vectoring: 0,
            idt_vectoring_err: 0,
        };
        v.reset();
        // On failure `v` is dropped, which gives the slot and VPID back.
        Ok(KBox::new(v, GFP_KERNEL_ACCOUNT)?)
    }

    fn tdp_leaf(&self, pa: u64, writable: bool) -> u64 {
        vmcs::ept::leaf(pa, writable)
    }

    fn tdp_table(&self, pa: u64) -> u64 {
        vmcs::ept::table(pa)
    }

    fn tdp_levels(&self) -> u32 {
        // Guest-physical addresses are limited to 48 bits (`max_gfn()`), so
        // 4-level EPT covers them whatever the host's paging depth; 5-level
        // EPT would only be needed beyond.
        4
    }

    /// Intel adds CMCI (C: `vmx_hardware_setup()`; not LMCE, which needs
    /// `IA32_MCG_EXT_CTL` and local machine-check delivery, which kvm-rs
    /// does not emulate; so the guest never gets `IA32_FEATURE_CONTROL.LMCE`).
    fn mce_cap(&self) -> u64 {
        super::mce::MCG_CTL_P | super::mce::MCG_SER_P | super::mce::MCG_CMCI_P
    }

    /// Emulated for every guest, nested VMX or not (C: `vmx_get_msr()`,
    /// `vmx_set_msr()`).
    fn feature_control(&self) -> bool {
        true
    }
}

impl VendorVcpu for VmxVcpu {
    fn reset(&mut self) {
        // The power-on state (SDM vol. 3A, 10.1.1, table 10-1; C:
        // `vmx_vcpu_reset()`), CS:IP = f000:fff0 at base ffff0000.
        let data = KvmSegment::from_attrib(0, 0, 0xffff, 0x93);
        // Everything cold is set below.
        self.cold_at = ColdAt::Fields;
        self.segs = [data; 8];
        self.segs[seg_index(Seg::Cs)] = KvmSegment::from_attrib(0xf000, 0xffff_0000, 0xffff, 0x9b);
        self.segs[seg_index(Seg::Ldtr)] = KvmSegment::from_attrib(0, 0, 0xffff, 0x82);
        self.segs[seg_index(Seg::Tr)] = KvmSegment::from_attrib(0, 0, 0xffff, 0x8b);
        self.gdt = KvmDtable { base: 0, limit: 0xffff };
        self.idt = KvmDtable { base: 0, limit: 0xffff };
        self.cr0 = 0x6000_0010;
        self.cr2 = 0;
        self.cr3 = 0;
        self.cr4 = 0;
        self.efer = 0;
        self.rflags = 2;
        self.dr6 = 0xffff_0ff0;
        self.dr7 = 0x400;
        self.intr_state = 0;
        self.pending_dbg = 0;
        self.sysenter_cs = 0;
        self.sysenter_esp = 0;
        self.sysenter_eip = 0;
        self.pat = PAT_RESET;
        self.debugctl = 0;
        for e in self.guest_msrs.iter_mut().take(LIST_MSRS.len()) {
            e.value = 0;
        }
        self.proc = self.shared.cfg.proc;
        self.entry_intr = 0;
        self.idt_vectoring = 0;
        self.dirty = dirty::ALL;
        self.flush_pending = true;
    }

    fn seg(&self, s: Seg) -> KvmSegment {
        self.seg_at(s)
    }

    fn set_seg(&mut self, s: Seg, v: &KvmSegment) {
        let mut v = *v;
        if v.present == 0 {
            v.unusable = 1;
        }
        self.segs_mut()[seg_index(s)] = v;
        self.dirty |= dirty::SEGS;
    }

    fn gdt(&self) -> KvmDtable {
        if self.cold_at != ColdAt::Fields {
            KvmDtable { base: self.cold.gdtr_base(), limit: self.cold.gdtr_limit() as u16 }
        } else {
            self.gdt
        }
    }

    fn set_gdt(&mut self, v: &KvmDtable) {
        self.materialize_cold();
        self.gdt = *v;
        self.dirty |= dirty::DTABLES;
    }

    fn idt(&self) -> KvmDtable {
        if self.cold_at != ColdAt::Fields {
            KvmDtable { base: self.cold.idtr_base(), limit: self.cold.idtr_limit() as u16 }
        } else {
            self.idt
        }
    }

    fn set_idt(&mut self, v: &KvmDtable) {
        self.materialize_cold();
        self.idt = *v;
        self.dirty |= dirty::DTABLES;
    }

    fn cr0(&self) -> u64 {
        self.cr0
    }

    fn set_cr0(&mut self, v: u64) {
        let old = self.cr0;
        self.cr0 = v;
        // Paging on or off with EFER.LME set enters or leaves IA-32e mode:
        // the CPU would set EFER.LMA, but the write was intercepted (C:
        // `vmx_set_cr0()`, `enter_lmode()`/`exit_lmode()`).
        if self.efer & EFER_LME != 0 && (old ^ v) & cr0::PG != 0 {
            if v & cr0::PG != 0 {
                self.efer |= EFER_LMA;
            } else {
                self.efer &= !EFER_LMA;
            }
            self.dirty |= dirty::EFER;
        }
        if (old ^ v) & (cr0::PG | cr0::PE | cr0::WP) != 0 {
            self.flush_pending = true;
        }
        self.dirty |= dirty::CRS;
    }

    fn cr2(&self) -> u64 {
        self.cr2
    }

    fn set_cr2(&mut self, v: u64) {
        self.cr2 = v;
    }

    fn cr3(&self) -> u64 {
        self.cr3
    }

    fn set_cr3(&mut self, v: u64) {
        if v != self.cr3 {
            self.flush_pending = true;
        }
        self.cr3 = v;
        self.dirty |= dirty::CRS;
    }

    fn cr4(&self) -> u64 {
        self.cr4
    }

    fn set_cr4(&mut self, v: u64) {
        if (v ^ self.cr4) & !(1 << 18) != 0 {
            // Paging-mode bits (PAE, PGE, PSE, PCIDE, SMEP, LA57...): flush
            // as the CPU would (SDM 4.10.4.1).
            self.flush_pending = true;
        }
        self.cr4 = v;
        self.dirty |= dirty::CRS;
    }

    fn efer(&self) -> u64 {
        self.efer
    }

    fn set_efer(&mut self, v: u64) {
        self.efer = v;
        self.dirty |= dirty::EFER;
    }

    fn rflags(&self) -> u64 {
        self.rflags
    }

    fn set_rflags(&mut self, v: u64) {
        self.rflags = v | 2;
    }

    fn dr6(&self) -> u64 {
        self.dr6
    }

    fn set_dr6(&mut self, v: u64) {
        self.dr6 = v;
    }

    fn dr7(&self) -> u64 {
        self.dr7
    }

    fn set_dr7(&mut self, v: u64) {
        self.dr7 = v;
    }

    fn cpl(&self) -> u8 {
        // The CPL is SS.DPL under VMX (SDM 27.3.1.2, checks on SS); every
        // exit reads SS's access rights.
        if self.cold_at == ColdAt::Fields {
            self.segs[seg_index(Seg::Ss)].dpl & 3
        } else {
            ((self.exit.ss_ar() >> 5) & 3) as u8
        }
    }

    fn interrupt_shadow(&self) -> bool {
        self.intr_state & (interruptibility::STI | interruptibility::MOV_SS) != 0
    }

    fn set_interrupt_shadow(&mut self, on: bool) {
        let old = self.intr_state;
        self.intr_state &= !(interruptibility::STI | interruptibility::MOV_SS);
        if on {
            // STI blocking requires RFLAGS.IF (SDM 27.3.1.5); MOV SS does not.
            self.intr_state |=
                if self.rflags & RFLAGS_IF != 0 { interruptibility::STI } else { interruptibility::MOV_SS };
        }
        if old != self.intr_state {
            self.dirty |= dirty::INTR_STATE;
        }
    }

    fn get_msr(&self, index: u32) -> Option<u64> {
        if let Some(i) = Self::list_index(index) {
            return self.guest_msrs.get(i).map(|e| e.value);
        }
        Some(match index {
            0xc000_0100 => self.seg_at(Seg::Fs).base,
            0xc000_0101 => self.seg_at(Seg::Gs).base,
            0x174 => self.cold_msrs()[0],
            0x175 => self.cold_msrs()[1],
            0x176 => self.cold_msrs()[2],
            0x277 => self.cold_msrs()[3],
            0x1d9 => self.debugctl,
            _ => return None,
        })
    }

    fn set_msr(&mut self, index: u32, value: u64) -> Option<core::result::Result<(), ()>> {
        // Canonical checks were made by common code (`msrs::canonicalize`).
        let known = Self::list_index(index).is_some() || matches!(index, 0xc000_0100 | 0xc000_0101 | 0x174..=0x176 | 0x277 | 0x1d9);
        if !known {
            return None;
        }
        if let Some(i) = Self::list_index(index) {
            let value = if index == 0xc000_0084 { value & 0xffff_ffff } else { value };
            if let Some(e) = self.guest_msrs.get_mut(i) {
                e.value = value;
            }
            return Some(Ok(()));
        }
        // The fields below are changed: take over the last exit's first.
        self.materialize_cold();
        let ok = match index {
            0xc000_0100 => {
                self.segs_mut()[seg_index(Seg::Fs)].base = value;
                self.dirty |= dirty::SEGS;
                true
            }
            0xc000_0101 => {
                self.segs_mut()[seg_index(Seg::Gs)].base = value;
                self.dirty |= dirty::SEGS;
                true
            }
            0x174 => {
                self.sysenter_cs = value & 0xffff_ffff;
                self.dirty |= dirty::MSRS;
                true
            }
            0x175 => {
                self.sysenter_esp = value;
                self.dirty |= dirty::MSRS;
                true
            }
            0x176 => {
                self.sysenter_eip = value;
                self.dirty |= dirty::MSRS;
                true
            }
            0x277 => {
                let valid = msrs::pat_valid(value);
                if valid {
                    self.pat = value;
                    self.dirty |= dirty::MSRS;
                }
                valid
            }
            _ => {
                // DEBUGCTL: BTF and LBR are accepted and dropped (no LBR
                // virtualization; C: `vmx_set_msr()`), other bits #GP.
                let ok = value & !0x3 == 0;
                if ok {
                    self.debugctl = 0;
                }
                ok
            }
        };
        Some(if ok { Ok(()) } else { Err(()) })
    }

    fn set_tsc_offset(&mut self, offset: u64) {
        self.tsc_offset = offset;
        self.dirty |= dirty::TSC;
    }

    fn inject(&mut self, ev: Event) {
        let (vector, kind, err, len) = match ev {
            Event::Exception { vector, error_code } => {
                // No error code in real mode (unrestricted guest: SDM 27.2.1.3).
                let code = if self.cr0 & cr0::PE != 0 { error_code } else { None };
                (vector, intr_info::TYPE_HW_EXCEPTION, code, 0)
            }
            Event::Nmi => {
                // Exit once the guest unblocks NMIs again (its IRET), so
                // that a pending one is looked at (as SVM's IRET intercept).
                self.proc |= proc::NMI_WINDOW_EXITING;
                self.dirty |= dirty::CONTROLS;
                (2, intr_info::TYPE_NMI, None, 0)
            }
            Event::Interrupt { vector, soft: false } => (vector, intr_info::TYPE_EXT_INTR, None, 0),
            // An INTn re-injected from user space: its length is not known
            // here; INT imm8 is two bytes.
            Event::Interrupt { vector, soft: true } => (vector, intr_info::TYPE_SOFT_INTR, None, 2),
        };
        self.entry_intr = intr_info::encode(vector, kind, err.is_some());
        self.entry_err = err.unwrap_or(0);
        self.entry_len = len;
        self.dirty |= dirty::EVENT;
    }

    fn interrupted_event(&self) -> Option<Event> {
        let info = self.idt_vectoring;
        if info & intr_info::VALID == 0 {
            return None;
        }
        let vector = intr_info::vector(info);
        match intr_info::kind(info) {
            intr_info::TYPE_EXT_INTR => Some(Event::Interrupt { vector, soft: false }),
            intr_info::TYPE_NMI => Some(Event::Nmi),
            intr_info::TYPE_HW_EXCEPTION => Some(Event::Exception {
                vector,
                error_code: (info & intr_info::DELIVER_CODE != 0).then_some(self.idt_vectoring_err),
            }),
            // INTn, INT3, INTO, INT1: executed again (RIP still points at it).
            _ => None,
        }
    }

    fn take_injected(&mut self) -> Option<Event> {
        let info = core::mem::take(&mut self.entry_intr);
        if info & intr_info::VALID == 0 {
            return None;
        }
        self.dirty |= dirty::EVENT;
        let vector = intr_info::vector(info);
        // The four kinds `inject` programs.
        match intr_info::kind(info) {
            intr_info::TYPE_NMI => {
                // `inject` sets it again with the NMI.
                self.proc &= !proc::NMI_WINDOW_EXITING;
                self.dirty |= dirty::CONTROLS;
                Some(Event::Nmi)
            }
            intr_info::TYPE_HW_EXCEPTION => Some(Event::Exception {
                vector,
                error_code: (info & intr_info::DELIVER_CODE != 0).then_some(self.entry_err),
            }),
            intr_info::TYPE_SOFT_INTR => Some(Event::Interrupt { vector, soft: true }),
            _ => Some(Event::Interrupt { vector, soft: false }),
        }
    }

    fn interrupt_allowed(&self) -> bool {
        self.rflags & RFLAGS_IF != 0
            && self.intr_state & (interruptibility::STI | interruptibility::MOV_SS) == 0
            && self.entry_intr & intr_info::VALID == 0
    }

    fn nmi_allowed(&self) -> bool {
        self.intr_state & (interruptibility::STI | interruptibility::MOV_SS | interruptibility::NMI) == 0
            && self.entry_intr & intr_info::VALID == 0
    }

    fn set_interrupt_window(&mut self, on: bool) {
        let p = if on { self.proc | proc::INTR_WINDOW_EXITING } else { self.proc & !proc::INTR_WINDOW_EXITING };
        if p != self.proc {
            self.proc = p;
            self.dirty |= dirty::CONTROLS;
        }
    }

    fn tpr(&self) -> u8 {
        match &self.vapic {
            // VTPR bits 7:4 are CR8 (SDM 30.1.1, "Virtualized APIC Registers").
            Some(p) => ((p[VTPR_WORD] >> 4) & 0xf) as u8,
            None => self.cr8,
        }
    }

    fn set_tpr(&mut self, cr8: u8) {
        self.cr8 = cr8 & 0xf;
        if let Some(p) = &mut self.vapic {
            p[VTPR_WORD] = u32::from(self.cr8) << 4;
        }
    }

    fn set_tpr_threshold(&mut self, class: Option<u8>) {
        // C: `vmx_update_cr8_intercept()`. With TPR shadow a MOV to CR8 that
        // lowers VTPR[7:4] below the threshold exits after it completes (SDM
        // 30.1.2); VM entry requires the threshold not to exceed VTPR[7:4]
        // (SDM 27.2.1.1), which holds for a class the TPR blocks. Without
        // TPR shadow every CR8 write exits anyway (`Exit::CrAccess`).
        let t = class.map_or(0, |c| u32::from(c.min(self.tpr())));
        if t != self.tpr_threshold {
            self.tpr_threshold = t;
            self.dirty |= dirty::TPR_THRESHOLD;
        }
    }

    fn vcpu_load(&mut self) {
        self.host_loaded = false;
    }

    fn vcpu_put(&mut self) {
        // What the last exits left only in the VMCS, before any ioctl asks.
        self.sync_cold();
    }

    fn prepare_entry(&mut self) {
        // Only when `run` found the VMCS active elsewhere (after a
        // migration): it abandoned the entry for this.
        if core::mem::take(&mut self.clear_needed) {
            let here = IrqDisabled::new().cpu();
            self.clear_elsewhere(Some(here));
        }
    }

    fn run(&mut self, irq: &IrqDisabled, ctx: &mut EntryCtx, gprs: &mut [u64; 16], rip: &mut u64) -> (Exit, Option<u64>) {
        self.idt_vectoring = 0;
        let cpu = match self.make_current(irq) {
            Ok(cpu) => cpu,
            Err(Some(e)) => return e,
            // No entry this time: the common code tries again.
            Err(None) => return (Exit::NotEntered, None),
        };
        if self.last_cpu != Some(cpu) {
            self.host_loaded = false;
            self.last_cpu = Some(cpu);
        }
        if !self.host_loaded {
            self.load_host_values();
        }


        let v = CurrentVmcs::new(irq);
        let host = vmx_ops::write_host_state(irq, &v, &mut self.host_cache);
        if let Some(e) = self.host_msrs.get_mut(0) {
            e.value = host.kernel_gs_base;
        }
        if self.fresh {
            self.msr_all = !ctx.msr_passthrough;
            v.set_pointers(&vmx_ops::VmcsPointers {
                msr_bitmap: if self.msr_all { &self.msr_bitmap_all } else { &self.msr_bitmap },
                virtual_apic: self.vapic.as_ref(),
                entry_load: &self.guest_msrs,
                entry_load_count: LIST_MSRS.len(),
                exit_store: &self.guest_msrs,
                exit_store_count: LIST_MSRS.len(),
                exit_load: &self.host_msrs,
                exit_load_count: LIST_MSRS.len(),
                eptp: vmcs::ept::eptp(ctx.tdp_root, 4),
            });
        } else if self.msr_all == ctx.msr_passthrough {
            self.msr_all = !ctx.msr_passthrough;
            v.set_msr_bitmap(if self.msr_all { &self.msr_bitmap_all } else { &self.msr_bitmap });
        }
        self.write_guest_state(&v, *rip, gprs[4]);
        if ctx.flush_tlb || self.flush_pending {
            let eptp = vmcs::ept::eptp(ctx.tdp_root, 4);
            let flush = self.shared.cfg.flush;
            let _ = vmx_ops::invept(irq, flush.invept, eptp);
            if let (Some(t), true) = (flush.invvpid, self.vpid != 0) {
                let _ = vmx_ops::invvpid(irq, t, self.vpid);
            }
            self.flush_pending = false;
        }
        if let Some((n, enc)) = v.failed() {
            self.dirty = dirty::ALL;
            self.report_failure("VMCS writes failed", u64::from(enc) | (u64::from(n) << 32));
            return (Exit::FailedEntry { reason: u64::MAX - 2 }, None);
        }

        let sw = vmx_ops::SwitchCtx {
            launched: self.launched,
            guest_xcr0: ctx.guest_xcr0,
            host_xcr0: ctx.host_xcr0,
            guest_pkru: ctx.guest_pkru,
            host_pkru: ctx.host_pkru,
            misc_features: vmcs::misc_features_switch(self.host_misc_features, 0),
        };
        let mut regs = VmxRegs { gprs: *gprs, cr2: self.cr2 };
        let out = vmx_ops::run(irq, &mut regs, &sw);
        ctx.exit_xcr0 = out.xcr0;
        ctx.exit_pkru = out.pkru;
        vmx_ops::restore_host_segments(irq, &host);

        if let Err(e) = out.result {
            let err = match e {
                vmx_ops::VmxError::FailValid => u64::from(v.read_ro32(vmcs::VM_INSTRUCTION_ERROR)),
                vmx_ops::VmxError::FailInvalid => u64::MAX - 3,
                vmx_ops::VmxError::Fault => u64::MAX - 4,
            };
            if e == vmx_ops::VmxError::FailValid {
                pr_err!("vmx: VM entry failed: {}\n", vmcs::instruction_error_name(err as u32));
            }
            self.report_failure("VMLAUNCH/VMRESUME failed", err);
            self.dirty = dirty::ALL;
            return (Exit::FailedEntry { reason: err }, None);
        }
        *gprs = regs.gprs;
        self.cr2 = regs.cr2;
        // Every field the exit path uses, with one call (vmcs::ExitState).
        v.read_set(&mut self.exit);
        let reason = self.exit.reason();
        if reason & vmcs::EXIT_REASON_FAILED_VMENTRY != 0 {
            // A machine check during VM entry is the host's (C:
            // `vmx_vcpu_enter_exit()`); the entry is then reported failed.
            if ExitReason::from_basic(reason as u16) == ExitReason::MachineCheckOnEntry {
                x86::machine_check(irq);
            }
            // The guest state failed the entry checks: nothing ran. The
            // software copy stays as it was, to be written again.
            self.report_failure("VM entry failed the guest-state checks", u64::from(reason));
            self.dirty = dirty::ALL;
            return (Exit::FailedEntry { reason: u64::from(reason) }, None);
        }
        self.launched = true;
        self.regs_as_read = true;
        if reads_cold(ExitReason::from_basic(reason as u16), gprs[1] as u32) {
            v.read_set(&mut self.cold);
            self.cold_at = ColdAt::Read;
        } else {
            self.cold_at = ColdAt::Vmcs;
        }
        // The event, if any, was delivered or is in the IDT-vectoring info now.
        self.entry_intr = 0;
        self.idt_vectoring = self.exit.idt_vectoring();
        if self.idt_vectoring & intr_info::VALID != 0 {
            self.idt_vectoring_err = self.exit.idt_vectoring_error();
        }
        self.read_guest_state();
        gprs[4] = self.exit.rsp();
        *rip = self.exit.rip();
        self.decode_exit(irq)
    }
}
