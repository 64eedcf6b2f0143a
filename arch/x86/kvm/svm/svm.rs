// SPDX-License-Identifier: GPL-2.0

//! The AMD SVM backend (`arch/x86/kvm/svm/svm.c`): SVM enabled on every CPU,
//! per-CPU ASIDs, one VMCB per vCPU, and the decoding of #VMEXITs.

use super::backend::{Backend, CrOp, EntryCtx, Event, Exit, VendorVcpu};
use super::regs::{KvmDtable, KvmSegment, Seg};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use kernel::{
    c_str,
    hwmem::HwBox,
    prelude::*,
    smp::{nr_cpu_ids, Hotplug, HotplugCallbacks, IrqDisabled},
    sync::Arc,
    x86,
};
use vmcb::{ExceptionVector, Intercept, SvmExit, Vmcb, VmcbSeg};

#[path = "svm_ops.rs"]
mod svm_ops;
#[path = "vmcb.rs"]
pub(crate) mod vmcb;

/// `MSR_VM_CR` (AMD APM vol. 2, 15.30.1).
const MSR_VM_CR: u32 = 0xc001_0114;
/// `VM_CR.SVMDIS`: SVME cannot be set in EFER (firmware disabled SVM).
const VM_CR_SVMDIS: u64 = 1 << 4;

/// EFER.SVME, which VMRUN requires in the guest's EFER too (APM 15.5.1).
const EFER_SVME: u64 = 1 << 12;

/// `int_ctl` bits (APM vol. 2, table B-1, offset 0x60).
const V_TPR_MASK: u32 = 0xf;
const V_IRQ: u32 = 1 << 8;
const V_INTR_PRIO_SHIFT: u32 = 16;
const V_IGN_TPR: u32 = 1 << 20;
const V_INTR_MASKING: u32 = 1 << 24;
/// `int_state` bit 0: interrupt shadow.
const INT_SHADOW: u32 = 1;
/// `nested_ctl` bit 0: nested paging.
const NP_ENABLE: u64 = 1;
/// TLB_CONTROL values (APM 15.16.2).
const TLB_FLUSH_ALL: u8 = 1;
const TLB_FLUSH_ASID: u8 = 3;
/// EVENTINJ/EXITINTINFO fields (APM 15.20).
const EV_VALID: u32 = 1 << 31;
const EV_ERR_VALID: u32 = 1 << 11;
const EV_TYPE_SHIFT: u32 = 8;
const EV_TYPE_INTR: u32 = 0;
const EV_TYPE_NMI: u32 = 2;
const EV_TYPE_EXCEPTION: u32 = 3;
const EV_TYPE_SOFT: u32 = 4;
/// The PAT at reset (SDM vol. 3, 11.12.4), also the guest PAT the VMCB starts with.
const PAT_RESET: u64 = 0x0007_0406_0007_0406;
/// RFLAGS.IF.
const RFLAGS_IF: u64 = 1 << 9;

/// The MSRs VMSAVE/VMLOAD switch, which the guest may access directly.
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
    0x277,       // PAT: VMRUN switches it through the VMCB's g_pat
];

/// Checks that SVM can be used, as `kvm_is_svm_supported()` does, and that it
/// has what kvm-rs needs (nested paging).
pub(crate) fn probe() -> Result {
    let vm_cr = x86::rdmsr_safe(MSR_VM_CR).map_err(|e| {
        pr_err!("svm: cannot read MSR_VM_CR\n");
        e
    })?;
    if vm_cr & VM_CR_SVMDIS != 0 {
        pr_err!("svm: SVM is disabled by the firmware (MSR_VM_CR.SVMDIS)\n");
        return Err(EOPNOTSUPP);
    }
    if !x86::boot_cpu_has(x86::Feature::Npt) {
        pr_err!("svm: the CPU has no nested paging; kvm-rs requires it\n");
        return Err(EOPNOTSUPP);
    }
    Ok(())
}

/// One CPU's SVM state.
struct SvmCpu {
    /// MSR_VM_HSAVE_PA's page.
    hsave: svm_ops::HostPage,
    /// The host's VMSAVE state around each VMRUN.
    host_save: svm_ops::HostPage,
    /// ASID generation; bumped when the ASIDs run out and the TLB is flushed.
    asid_gen: AtomicU64,
    /// The next free ASID of this generation.
    next_asid: AtomicU32,
    /// The vCPU (its unique number) that last ran here, for the IBPB.
    last_vcpu: AtomicU64,
}

/// Every CPU's SVM state, indexed by CPU number; SVM is enabled on a CPU by
/// the hotplug callbacks.
struct SvmCpus {
    cpus: KVec<SvmCpu>,
}

impl HotplugCallbacks for SvmCpus {
    fn startup(&self, cpu: u32) -> Result {
        let c = self.cpus.get(cpu as usize).ok_or(EINVAL)?;
        let irq = IrqDisabled::new();
        svm_ops::enable_on_this_cpu(&irq, &c.hsave).map_err(|e| {
            pr_err!("svm: cannot enable SVM on CPU {}\n", cpu);
            e
        })
    }

    fn teardown(&self, _cpu: u32) -> Result {
        svm_ops::disable_on_this_cpu();
        Ok(())
    }
}

/// The crash/kexec callback: leave SVM on this CPU.
pub(crate) struct SvmEmergency;

impl kernel::smp::EmergencyVirtCallback for SvmEmergency {
    fn disable_virtualization() {
        svm_ops::disable_on_this_cpu();
    }
}

/// The SVM backend.
pub(crate) struct Svm {
    cpus: Arc<Hotplug<SvmCpus>>,
    _emergency: kernel::smp::EmergencyVirt<SvmEmergency>,
    /// The I/O permission map: every port intercepted.
    iopm: Arc<HwBox<[u8; 3 * 4096]>>,
    /// The MSR permission map shared by all vCPUs.
    msrpm: Arc<HwBox<[u8; 2 * 4096]>>,
    /// The map that intercepts every MSR, used while an MSR filter is set.
    msrpm_all: Arc<HwBox<[u8; 2 * 4096]>>,
    /// ASIDs are 1..=max_asid (CPUID 0x8000000A EBX).
    max_asid: u32,
    flush_by_asid: bool,
    nrips: bool,
    next_vcpu_uid: AtomicU64,
}

/// The bit pair of `msr` in the MSR permission map (APM 15.11): byte offset
/// and bit of the read intercept (the write intercept is the next bit).
fn msrpm_bit(msr: u32) -> Option<(usize, u32)> {
    let (base, off) = match msr {
        0..=0x1fff => (0, msr),
        0xc000_0000..=0xc000_1fff => (0x800, msr - 0xc000_0000),
        0xc001_0000..=0xc001_1fff => (0x1000, msr - 0xc001_0000),
        _ => return None,
    };
    Some((base + (off as usize * 2) / 8, (off * 2) % 8))
}

impl Svm {
    /// Enables SVM on every CPU and prepares the shared structures.
    pub(crate) fn new() -> Result<Self> {
        let ncpus = nr_cpu_ids() as usize;
        let mut cpus = KVec::with_capacity(ncpus, GFP_KERNEL)?;
        for _ in 0..ncpus {
            cpus.push(
                SvmCpu {
                    hsave: HwBox::new_zeroed(GFP_KERNEL)?,
                    host_save: HwBox::new_zeroed(GFP_KERNEL)?,
                    asid_gen: AtomicU64::new(1),
                    next_asid: AtomicU32::new(1),
                    last_vcpu: AtomicU64::new(0),
                },
                GFP_KERNEL,
            )?;
        }
        let mut iopm = HwBox::<[u8; 3 * 4096]>::new_zeroed(GFP_KERNEL)?;
        iopm.fill(0xff);
        let mut msrpm = HwBox::<[u8; 2 * 4096]>::new_zeroed(GFP_KERNEL)?;
        msrpm.fill(0xff);
        for msr in PASSTHROUGH_MSRS {
            if let Some((byte, bit)) = msrpm_bit(msr) {
                msrpm[byte] &= !(3 << bit);
            }
        }
        let mut msrpm_all = HwBox::<[u8; 2 * 4096]>::new_zeroed(GFP_KERNEL)?;
        msrpm_all.fill(0xff);
        let [_, ebx, _, edx] = x86::cpuid_count(0x8000_000a, 0);
        let max_asid = ebx.saturating_sub(1).max(1);
        let emergency = kernel::smp::EmergencyVirt::<SvmEmergency>::register();
        let cpus = Arc::new(Hotplug::register(c_str!("kvm-rs/svm:online"), SvmCpus { cpus })?, GFP_KERNEL)?;
        Ok(Self {
            cpus,
            _emergency: emergency,
            iopm: Arc::new(iopm, GFP_KERNEL)?,
            msrpm: Arc::new(msrpm, GFP_KERNEL)?,
            msrpm_all: Arc::new(msrpm_all, GFP_KERNEL)?,
            max_asid,
            flush_by_asid: edx & (1 << 6) != 0,
            nrips: edx & (1 << 3) != 0,
            next_vcpu_uid: AtomicU64::new(1),
        })
    }
}

/// The intercepts every guest has (C: `init_vmcb()`, minus what nested paging
/// makes unnecessary): the events the host must see, the instructions KVM
/// emulates or refuses, and debug-register accesses (guest debug registers
/// are emulated, so the host's DR0-DR3 never hold guest values).
const INTERCEPTS: [Intercept; 38] = [
    Intercept::Intr,
    Intercept::Nmi,
    Intercept::Smi,
    Intercept::Cpuid,
    Intercept::Invd,
    Intercept::Hlt,
    Intercept::Invlpga,
    Intercept::IoioProt,
    Intercept::MsrProt,
    Intercept::TaskSwitch,
    Intercept::Shutdown,
    Intercept::Rdpmc,
    Intercept::Rsm,
    Intercept::Vmrun,
    Intercept::Vmmcall,
    Intercept::Vmload,
    Intercept::Vmsave,
    Intercept::Stgi,
    Intercept::Clgi,
    Intercept::Skinit,
    Intercept::Rdtscp,
    Intercept::Wbinvd,
    Intercept::Monitor,
    Intercept::Mwait,
    Intercept::Xsetbv,
    Intercept::Rdpru,
    Intercept::Invpcid,
    Intercept::Invlpgb,
    Intercept::Dr0Read,
    Intercept::Dr1Read,
    Intercept::Dr2Read,
    Intercept::Dr3Read,
    Intercept::Dr0Write,
    Intercept::Dr1Write,
    Intercept::Dr2Write,
    Intercept::Dr3Write,
    Intercept::Dr7Read,
    Intercept::Dr7Write,
];

/// A vCPU's SVM state.
pub(crate) struct SvmVcpu {
    vmcb: HwBox<Vmcb>,
    cpus: Arc<Hotplug<SvmCpus>>,
    _iopm: Arc<HwBox<[u8; 3 * 4096]>>,
    msrpm: Arc<HwBox<[u8; 2 * 4096]>>,
    msrpm_all: Arc<HwBox<[u8; 2 * 4096]>>,
    max_asid: u32,
    flush_by_asid: bool,
    nrips: bool,
    uid: u64,
    /// The CPU and ASID generation the current ASID belongs to.
    cpu: Option<u32>,
    asid_gen: u64,
    /// The guest's DR7 (the VMCB keeps 0x400: no hardware breakpoints).
    dr7: u64,
    /// An NMI was injected and the guest has not executed IRET yet.
    nmi_masked: bool,
    /// An interrupt window was asked for.
    window: bool,
    /// Exit once V_TPR drops below this priority class.
    tpr_threshold: Option<u8>,
}

/// Converts between KVM's segment form and the VMCB's.
fn seg_from_vmcb(s: &VmcbSeg) -> KvmSegment {
    KvmSegment::from_attrib(s.selector, s.base, s.limit, s.attrib)
}

fn seg_to_vmcb(v: &KvmSegment) -> VmcbSeg {
    VmcbSeg { selector: v.selector, attrib: v.attrib(), limit: v.limit, base: v.base }
}

impl SvmVcpu {
    fn seg_ref(&self, s: Seg) -> &VmcbSeg {
        let save = &self.vmcb.save;
        match s {
            Seg::Cs => &save.cs,
            Seg::Ds => &save.ds,
            Seg::Es => &save.es,
            Seg::Fs => &save.fs,
            Seg::Gs => &save.gs,
            Seg::Ss => &save.ss,
            Seg::Tr => &save.tr,
            Seg::Ldtr => &save.ldtr,
        }
    }

    fn seg_mut(&mut self, s: Seg) -> &mut VmcbSeg {
        let save = &mut self.vmcb.save;
        match s {
            Seg::Cs => &mut save.cs,
            Seg::Ds => &mut save.ds,
            Seg::Es => &mut save.es,
            Seg::Fs => &mut save.fs,
            Seg::Gs => &mut save.gs,
            Seg::Ss => &mut save.ss,
            Seg::Tr => &mut save.tr,
            Seg::Ldtr => &mut save.ldtr,
        }
    }

    /// Picks an ASID for this CPU (C: `new_asid()`): a fresh one of the CPU's
    /// generation; when they run out, a new generation starts and the whole
    /// TLB is flushed.
    fn new_asid(&mut self, c: &SvmCpu) {
        let mut next = c.next_asid.load(Ordering::Relaxed);
        if next > self.max_asid {
            c.asid_gen.fetch_add(1, Ordering::Relaxed);
            next = 1;
            self.vmcb.control.tlb_ctl = TLB_FLUSH_ALL;
        }
        c.next_asid.store(next + 1, Ordering::Relaxed);
        self.vmcb.control.asid = next;
        self.asid_gen = c.asid_gen.load(Ordering::Relaxed);
    }

    fn decode_exit(&self) -> (Exit, Option<u64>) {
        let c = &self.vmcb.control;
        let (info1, info2) = (c.exit_info_1, c.exit_info_2);
        let next = if self.nrips && c.next_rip != 0 { Some(c.next_rip) } else { None };
        let exit = match SvmExit::from_raw(c.exit_code) {
            SvmExit::Ioio => {
                // EXITINFO1 (APM 15.10.2): TYPE, STR, REP, SZ, A, SEG, PORT.
                let size = if info1 & (1 << 4) != 0 {
                    1
                } else if info1 & (1 << 5) != 0 {
                    2
                } else {
                    4
                };
                let addr_size = if info1 & (1 << 7) != 0 {
                    2
                } else if info1 & (1 << 8) != 0 {
                    4
                } else {
                    8
                };
                let seg = if x86::boot_cpu_has(x86::Feature::DecodeAssists) {
                    match (info1 >> 10) & 7 {
                        0 => Some(Seg::Es),
                        1 => Some(Seg::Cs),
                        2 => Some(Seg::Ss),
                        3 => Some(Seg::Ds),
                        4 => Some(Seg::Fs),
                        5 => Some(Seg::Gs),
                        _ => None,
                    }
                } else {
                    None
                };
                // EXITINFO2 is the next RIP for IOIO, with or without NRIPS.
                return (
                    Exit::Io {
                        port: (info1 >> 16) as u16,
                        size,
                        input: info1 & 1 != 0,
                        string: info1 & (1 << 2) != 0,
                        rep: info1 & (1 << 3) != 0,
                        addr_size,
                        seg,
                    },
                    Some(info2),
                );
            }
            SvmExit::Cpuid => Exit::Cpuid,
            SvmExit::Msr if info1 == 0 => Exit::Rdmsr,
            SvmExit::Msr => Exit::Wrmsr,
            SvmExit::Hlt => Exit::Hlt,
            SvmExit::Vmmcall => Exit::Hypercall,
            SvmExit::Xsetbv => Exit::Xsetbv,
            SvmExit::Npf => Exit::TdpFault {
                gpa: info2,
                present: info1 & 1 != 0,
                write: info1 & 2 != 0,
                fetch: info1 & (1 << 4) != 0,
                on_table_walk: info1 & (1 << 33) != 0,
            },
            SvmExit::Intr => Exit::ExternalInterrupt,
            SvmExit::Nmi => Exit::Nmi,
            SvmExit::Smi | SvmExit::Init => Exit::ExternalInterrupt,
            SvmExit::Vintr => Exit::InterruptWindow,
            SvmExit::Shutdown => Exit::Shutdown,
            // Handled by `run` (the host's), never passed on to the guest.
            SvmExit::Exception(ExceptionVector::MC) => Exit::MachineCheck,
            SvmExit::Exception(v) => {
                let vector = v.get();
                let error_code = match vector {
                    8 | 10..=14 | 17 | 21 | 29 | 30 => Some(info1 as u32),
                    _ => None,
                };
                Exit::Exception { vector, error_code, info: info2 }
            }
            SvmExit::ReadDr(r) | SvmExit::WriteDr(r) => Exit::DrAccess {
                dr: r.get(),
                write: matches!(SvmExit::from_raw(c.exit_code), SvmExit::WriteDr(_)),
                // Decode assists put the GPR in EXITINFO1 bits 3:0, bit 63 valid.
                gpr: (info1 & (1 << 63) != 0).then_some((info1 & 0xf) as u8),
            },
            // Only CR8 writes are intercepted (while the TPR blocks a pending
            // interrupt). Decode assists report the source GPR in EXITINFO1
            // bits 3:0 with bit 63 set; a MOV (not LMSW/CLTS) only for CR8.
            SvmExit::WriteCr(r) => Exit::CrAccess {
                cr: r.get(),
                op: if info1 & (1 << 63) != 0 {
                    CrOp::MovTo((info1 & 0xf) as u8)
                } else {
                    CrOp::MovToUndecoded
                },
            },
            SvmExit::TaskSwitch => Exit::TaskSwitch,
            SvmExit::Vmrun
            | SvmExit::Vmload
            | SvmExit::Vmsave
            | SvmExit::Stgi
            | SvmExit::Clgi
            | SvmExit::Skinit
            | SvmExit::Invlpga
            | SvmExit::Rdtscp
            | SvmExit::Monitor
            | SvmExit::Mwait
            | SvmExit::MwaitCond
            | SvmExit::Rdpru
            | SvmExit::Rsm
            | SvmExit::Invpcid => Exit::UdInstruction,
            SvmExit::Invd | SvmExit::Wbinvd => Exit::Wbinvd,
            SvmExit::Rdpmc => Exit::Rdpmc,
            SvmExit::Pause => Exit::Pause,
            SvmExit::Err => Exit::FailedEntry { reason: c.exit_code },
            SvmExit::Iret => Exit::InterruptWindow,
            other => Exit::Unknown { code: other.raw(), info1, info2 },
        };
        (exit, next)
    }
}

impl Backend for Svm {
    type Vcpu = SvmVcpu;

    fn create_vcpu(&self) -> Result<KBox<SvmVcpu>> {
        let mut v = SvmVcpu {
            vmcb: HwBox::new_zeroed(GFP_KERNEL_ACCOUNT)?,
            cpus: self.cpus.clone(),
            _iopm: self.iopm.clone(),
            msrpm: self.msrpm.clone(),
            msrpm_all: self.msrpm_all.clone(),
            max_asid: self.max_asid,
            flush_by_asid: self.flush_by_asid,
            nrips: self.nrips,
            uid: self.next_vcpu_uid.fetch_add(1, Ordering::Relaxed),
            cpu: None,
            asid_gen: 0,
            dr7: 0x400,
            nmi_masked: false,
            window: false,
            tpr_threshold: None,
        };
        let c = &mut v.vmcb.control;
        for i in INTERCEPTS {
            c.intercepts.set(i);
        }
        c.intercepts.set_exception(ExceptionVector::MC);
        c.iopm_base_pa = self.iopm.phys_addr();
        c.msrpm_base_pa = self.msrpm.phys_addr();
        c.int_ctl = V_INTR_MASKING;
        c.nested_ctl = NP_ENABLE;
        v.reset();
        Ok(KBox::new(v, GFP_KERNEL_ACCOUNT)?)
    }

    fn tdp_leaf(&self, pa: u64, writable: bool) -> u64 {
        // Present, user (NPT walks are user accesses, APM 15.25.5), accessed,
        // dirty, writable if allowed; write-back memory type via the guest PAT.
        let mut pte = pa | 1 | 4 | (1 << 5) | (1 << 6);
        if writable {
            pte |= 2;
        }
        pte
    }

    fn tdp_table(&self, pa: u64) -> u64 {
        pa | 1 | 2 | 4 | (1 << 5)
    }

    fn tdp_levels(&self) -> u32 {
        // The nested page table has the host's paging depth (APM vol. 2,
        // 15.25.5): 5 levels when the host runs with CR4.LA57.
        if x86::read_cr4() & (1 << 12) != 0 {
            5
        } else {
            4
        }
    }
}

impl VendorVcpu for SvmVcpu {
    fn reset(&mut self) {
        // The power-on state (APM vol. 2, 14.1.3; C: `init_vmcb()` and
        // `kvm_vcpu_reset()`), with CS:IP = f000:fff0 at base ffff0000.
        let data = |sel| VmcbSeg { selector: sel, attrib: 0x93, limit: 0xffff, base: 0 };
        let s = &mut self.vmcb.save;
        s.cs = VmcbSeg { selector: 0xf000, attrib: 0x9b, limit: 0xffff, base: 0xffff_0000 };
        s.ds = data(0);
        s.es = data(0);
        s.fs = data(0);
        s.gs = data(0);
        s.ss = data(0);
        s.gdtr = VmcbSeg { selector: 0, attrib: 0, limit: 0xffff, base: 0 };
        s.idtr = VmcbSeg { selector: 0, attrib: 0, limit: 0xffff, base: 0 };
        s.ldtr = VmcbSeg { selector: 0, attrib: 0x82, limit: 0xffff, base: 0 };
        s.tr = VmcbSeg { selector: 0, attrib: 0x8b, limit: 0xffff, base: 0 };
        s.cr0 = 0x6000_0010;
        s.cr2 = 0;
        s.cr3 = 0;
        s.cr4 = 0;
        s.efer = EFER_SVME;
        s.dr6 = 0xffff_0ff0;
        s.dr7 = 0x400;
        s.rflags = 2;
        s.rip = 0xfff0;
        s.g_pat = PAT_RESET;
        s.cpl = 0;
        s.star = 0;
        s.lstar = 0;
        s.cstar = 0;
        s.sfmask = 0;
        s.kernel_gs_base = 0;
        s.sysenter_cs = 0;
        s.sysenter_esp = 0;
        s.sysenter_eip = 0;
        let c = &mut self.vmcb.control;
        c.event_inj = 0;
        c.event_inj_err = 0;
        c.int_state = 0;
        c.int_ctl = V_INTR_MASKING;
        c.intercepts.clear(Intercept::Vintr);
        c.intercepts.clear(Intercept::Iret);
        self.dr7 = 0x400;
        self.nmi_masked = false;
        self.window = false;
        self.tpr_threshold = None;
    }

    fn seg(&self, s: Seg) -> KvmSegment {
        let mut v = seg_from_vmcb(self.seg_ref(s));
        // The VMCB does not keep SS.DPL reliably; the CPL is the truth (C:
        // `svm_get_segment()`).
        if s == Seg::Ss {
            v.dpl = self.vmcb.save.cpl & 3;
        }
        // A usable TR is always busy, and an unusable segment reports its
        // type as the C KVM does (zeroed).
        v
    }

    fn set_seg(&mut self, s: Seg, v: &KvmSegment) {
        *self.seg_mut(s) = seg_to_vmcb(v);
        if s == Seg::Ss {
            self.vmcb.save.cpl = v.dpl & 3;
        }
    }

    fn gdt(&self) -> KvmDtable {
        KvmDtable { base: self.vmcb.save.gdtr.base, limit: self.vmcb.save.gdtr.limit as u16 }
    }

    fn set_gdt(&mut self, v: &KvmDtable) {
        self.vmcb.save.gdtr.base = v.base;
        self.vmcb.save.gdtr.limit = u32::from(v.limit);
    }

    fn idt(&self) -> KvmDtable {
        KvmDtable { base: self.vmcb.save.idtr.base, limit: self.vmcb.save.idtr.limit as u16 }
    }

    fn set_idt(&mut self, v: &KvmDtable) {
        self.vmcb.save.idtr.base = v.base;
        self.vmcb.save.idtr.limit = u32::from(v.limit);
    }

    fn cr0(&self) -> u64 {
        self.vmcb.save.cr0
    }

    fn set_cr0(&mut self, v: u64) {
        self.vmcb.save.cr0 = v;
    }

    fn cr2(&self) -> u64 {
        self.vmcb.save.cr2
    }

    fn set_cr2(&mut self, v: u64) {
        self.vmcb.save.cr2 = v;
    }

    fn cr3(&self) -> u64 {
        self.vmcb.save.cr3
    }

    fn set_cr3(&mut self, v: u64) {
        self.vmcb.save.cr3 = v;
    }

    fn cr4(&self) -> u64 {
        self.vmcb.save.cr4
    }

    fn set_cr4(&mut self, v: u64) {
        self.vmcb.save.cr4 = v;
    }

    fn efer(&self) -> u64 {
        self.vmcb.save.efer & !EFER_SVME
    }

    fn set_efer(&mut self, v: u64) {
        self.vmcb.save.efer = v | EFER_SVME;
    }

    fn rflags(&self) -> u64 {
        self.vmcb.save.rflags
    }

    fn set_rflags(&mut self, v: u64) {
        self.vmcb.save.rflags = v;
    }

    fn dr6(&self) -> u64 {
        self.vmcb.save.dr6
    }

    fn set_dr6(&mut self, v: u64) {
        self.vmcb.save.dr6 = v;
    }

    fn dr7(&self) -> u64 {
        self.dr7
    }

    fn set_dr7(&mut self, v: u64) {
        self.dr7 = v;
    }

    fn cpl(&self) -> u8 {
        self.vmcb.save.cpl & 3
    }

    fn interrupt_shadow(&self) -> bool {
        self.vmcb.control.int_state & INT_SHADOW != 0
    }

    fn set_interrupt_shadow(&mut self, on: bool) {
        if on {
            self.vmcb.control.int_state |= INT_SHADOW;
        } else {
            self.vmcb.control.int_state &= !INT_SHADOW;
        }
    }

    fn get_msr(&self, index: u32) -> Option<u64> {
        let s = &self.vmcb.save;
        Some(match index {
            0xc000_0100 => s.fs.base,
            0xc000_0101 => s.gs.base,
            0xc000_0102 => s.kernel_gs_base,
            0xc000_0081 => s.star,
            0xc000_0082 => s.lstar,
            0xc000_0083 => s.cstar,
            0xc000_0084 => s.sfmask,
            0x174 => s.sysenter_cs,
            0x175 => s.sysenter_esp,
            0x176 => s.sysenter_eip,
            0x277 => s.g_pat,
            0x1d9 => s.dbgctl,
            _ => return None,
        })
    }

    fn set_msr(&mut self, index: u32, value: u64) -> Option<core::result::Result<(), ()>> {
        // Canonical checks were made by common code.
        let s = &mut self.vmcb.save;
        let ok = match index {
            0xc000_0100 => {
                s.fs.base = value;
                true
            }
            0xc000_0101 => {
                s.gs.base = value;
                true
            }
            0xc000_0102 => {
                s.kernel_gs_base = value;
                true
            }
            0xc000_0081 => {
                s.star = value;
                true
            }
            0xc000_0082 => {
                s.lstar = value;
                true
            }
            0xc000_0083 => {
                s.cstar = value;
                true
            }
            0xc000_0084 => {
                s.sfmask = value & 0xffff_ffff;
                true
            }
            0x174 => {
                s.sysenter_cs = value & 0xffff_ffff;
                true
            }
            0x175 => {
                s.sysenter_esp = value;
                true
            }
            0x176 => {
                s.sysenter_eip = value;
                true
            }
            0x277 => {
                // Each byte a valid memory type: 0, 1, 4, 5, 6 or 7.
                let valid = (0..8).all(|i| matches!((value >> (i * 8)) & 0xff, 0 | 1 | 4..=7));
                if valid {
                    s.g_pat = value;
                }
                valid
            }
            0x1d9 => {
                // DEBUGCTL: only the LBR and BTF bits are defined on AMD;
                // without LBR virtualization they are accepted and ignored
                // (C KVM keeps the value), others #GP.
                let ok = value & !0x3f == 0;
                if ok {
                    s.dbgctl = value;
                }
                ok
            }
            _ => return None,
        };
        Some(if ok { Ok(()) } else { Err(()) })
    }

    fn set_tsc_offset(&mut self, offset: u64) {
        self.vmcb.control.tsc_offset = offset;
    }

    fn inject(&mut self, ev: Event) {
        let (v, ty, err) = match ev {
            Event::Exception { vector, error_code } => (vector, EV_TYPE_EXCEPTION, error_code),
            Event::Nmi => {
                self.nmi_masked = true;
                self.vmcb.control.intercepts.set(Intercept::Iret);
                (2, EV_TYPE_NMI, None)
            }
            Event::Interrupt { vector, soft: false } => (vector, EV_TYPE_INTR, None),
            Event::Interrupt { vector, soft: true } => (vector, EV_TYPE_SOFT, None),
        };
        let mut inj = EV_VALID | u32::from(v) | (ty << EV_TYPE_SHIFT);
        if let Some(e) = err {
            inj |= EV_ERR_VALID;
            self.vmcb.control.event_inj_err = e;
        }
        self.vmcb.control.event_inj = inj;
    }

    fn take_injected(&mut self) -> Option<Event> {
        let inj = core::mem::take(&mut self.vmcb.control.event_inj);
        decode_event(inj, self.vmcb.control.event_inj_err, true)
    }

    fn interrupted_event(&self) -> Option<Event> {
        decode_event(self.vmcb.control.exit_int_info, self.vmcb.control.exit_int_info_err, false)
    }

    fn interrupt_allowed(&self) -> bool {
        self.vmcb.save.rflags & RFLAGS_IF != 0
            && self.vmcb.control.int_state & INT_SHADOW == 0
            && self.vmcb.control.event_inj & EV_VALID == 0
    }

    fn nmi_allowed(&self) -> bool {
        !self.nmi_masked && self.vmcb.control.int_state & INT_SHADOW == 0 && self.vmcb.control.event_inj & EV_VALID == 0
    }

    fn set_interrupt_window(&mut self, on: bool) {
        self.window = on;
        self.update_vintr();
    }

    fn tpr(&self) -> u8 {
        (self.vmcb.control.int_ctl & V_TPR_MASK) as u8
    }

    fn set_tpr(&mut self, cr8: u8) {
        let c = &mut self.vmcb.control;
        c.int_ctl = (c.int_ctl & !V_TPR_MASK) | (u32::from(cr8) & V_TPR_MASK);
    }

    fn set_tpr_threshold(&mut self, class: Option<u8>) {
        // C: `svm_update_cr8_intercept()`. Any CR8 write then exits; common
        // code applies it and looks at the pending interrupts again.
        self.tpr_threshold = class;
        if class.is_some() {
            self.vmcb.control.intercepts.set(Intercept::Cr8Write);
        } else {
            self.vmcb.control.intercepts.clear(Intercept::Cr8Write);
        }
    }

    fn run(&mut self, irq: &IrqDisabled, ctx: &mut EntryCtx, gprs: &mut [u64; 16], rip: &mut u64) -> (Exit, Option<u64>) {
        let cpu = irq.cpu();
        let cpus = self.cpus.clone();
        let Some(c) = cpus.data().cpus.get(cpu as usize) else {
            return (Exit::FailedEntry { reason: u64::MAX }, None);
        };
        self.vmcb.control.tlb_ctl = 0;
        if self.cpu != Some(cpu) || self.asid_gen != c.asid_gen.load(Ordering::Relaxed) {
            self.cpu = Some(cpu);
            self.new_asid(c);
        } else if ctx.flush_tlb {
            if self.flush_by_asid {
                self.vmcb.control.tlb_ctl = TLB_FLUSH_ASID;
            } else {
                self.new_asid(c);
            }
        }
        // Another vCPU ran here last: keep its branch predictions away from
        // this one (C: `svm_vcpu_load()`).
        if c.last_vcpu.swap(self.uid, Ordering::Relaxed) != self.uid {
            x86::indirect_branch_prediction_barrier();
        }
        let s = &mut self.vmcb.save;
        s.rax = gprs[0];
        s.rsp = gprs[4];
        s.rip = *rip;
        self.vmcb.control.nested_cr3 = ctx.tdp_root;
        self.vmcb.control.msrpm_base_pa =
            if ctx.msr_passthrough { self.msrpm.phys_addr() } else { self.msrpm_all.phys_addr() };
        let sw = svm_ops::SwitchCtx {
            host_save: &c.host_save,
            guest_xcr0: ctx.guest_xcr0,
            host_xcr0: ctx.host_xcr0,
            guest_pkru: ctx.guest_pkru,
            host_pkru: ctx.host_pkru,
        };
        let out = svm_ops::run(irq, &mut self.vmcb, &sw, gprs);
        ctx.exit_xcr0 = out.xcr0;
        ctx.exit_pkru = out.pkru;
        if !out.ok {
            return (Exit::FailedEntry { reason: u64::MAX - 1 }, None);
        }
        // A machine check that hit the guest is the host's, handled before
        // interrupts come back on (C: `svm_handle_mce()`; kvm-rs has no
        // erratum 383 workaround: the CPUs it affects predate SVM's NPT).
        if SvmExit::from_raw(self.vmcb.control.exit_code) == SvmExit::Exception(ExceptionVector::MC) {
            x86::machine_check(irq);
        }
        let s = &self.vmcb.save;
        gprs[0] = s.rax;
        gprs[4] = s.rsp;
        *rip = s.rip;
        // The event, if any, was delivered or is in EXITINTINFO now.
        self.vmcb.control.event_inj = 0;
        let (exit, next) = self.decode_exit();
        if let Exit::InterruptWindow = exit {
            if SvmExit::from_raw(self.vmcb.control.exit_code) == SvmExit::Iret {
                // IRET after an injected NMI: NMIs are unblocked once it
                // completes; close enough to unblock now.
                self.nmi_masked = false;
                self.vmcb.control.intercepts.clear(Intercept::Iret);
            } else {
                // The window opened or the TPR dropped: common code looks
                // again before the next entry.
                self.window = false;
                self.update_vintr();
            }
        }
        (exit, next)
    }
}

/// An EVENTINJ or EXITINTINFO value as an [`Event`] (APM 15.20). For
/// EXITINTINFO (`programmed` false), #BP/#OF and INTn are left to the guest to
/// raise again by executing the instruction (RIP still points at it, as no
/// NRIPS gives the next one); a programmed injection is taken back as is.
fn decode_event(info: u32, err: u32, programmed: bool) -> Option<Event> {
    if info & EV_VALID == 0 {
        return None;
    }
    let vector = (info & 0xff) as u8;
    match (info >> EV_TYPE_SHIFT) & 7 {
        EV_TYPE_INTR => Some(Event::Interrupt { vector, soft: false }),
        EV_TYPE_NMI => Some(Event::Nmi),
        // #BP and #OF come from INT3/INTO: without NRIPS the instruction
        // is executed again rather than the exception re-injected.
        EV_TYPE_EXCEPTION if !programmed && (vector == 3 || vector == 4) => None,
        EV_TYPE_EXCEPTION => Some(Event::Exception {
            vector,
            error_code: (info & EV_ERR_VALID != 0).then_some(err),
        }),
        EV_TYPE_SOFT if programmed => Some(Event::Interrupt { vector, soft: true }),
        // INTn: executed again (RIP still points at it).
        _ => None,
    }
}

impl SvmVcpu {
    /// Programs the dummy virtual interrupt that makes the guest exit (VINTR
    /// intercept) once RFLAGS.IF lets it take one, whatever its TPR (C:
    /// `svm_set_vintr()`). Not used for TPR thresholds: QEMU's SVM compares
    /// V_INTR_PRIO with V_TPR as `>=` where the APM has `>`, and 7.2 aborts
    /// when a CR8 write raises a virtual interrupt; CR8 writes are
    /// intercepted instead, as the C KVM does.
    fn update_vintr(&mut self) {
        let c = &mut self.vmcb.control;
        c.int_ctl &= !(V_IRQ | V_IGN_TPR | (0xf << V_INTR_PRIO_SHIFT));
        c.int_vector = 0;
        if self.window {
            c.int_ctl |= V_IRQ | V_IGN_TPR | (0xf << V_INTR_PRIO_SHIFT);
            c.intercepts.set(Intercept::Vintr);
        } else {
            c.intercepts.clear(Intercept::Vintr);
        }
    }
}
