// SPDX-License-Identifier: GPL-2.0

//! The x86 vCPU (`struct kvm_vcpu_arch` and the vCPU half of
//! `arch/x86/kvm/x86.c`): register state and its ioctls, `KVM_RUN`'s loop,
//! and the handling of every exit the backends decode, the same for SVM and
//! VMX.

use super::backend::{vector, Backend, CrOp, EntryCtx, Event, Exit, VendorVcpu};
use super::cpuid::{self, feature, CpuidEntry};
use super::emulate::{self, ExecMode, MmioInsn, MmioOp};
use super::ioapic;
use super::ioc;
use super::lapic::{self, Action, Delivered, HostTimer, Lapic, LapicConfig};
use super::mmu::paging_tmpl::{self, Access, GuestMem, PagingCtx, WalkError};
use super::msrs::{self, *};
use super::pio::{self, StringIo};
use super::regs::{gpr, KvmDebugRegs, KvmFpu, KvmRegs, KvmSegment, KvmSregs, KvmVcpuEvents, Seg};
use super::{ApicRouter, VcpuShared, X86VmShared, IN_GUEST_MODE, OUTSIDE_GUEST_MODE};
use crate::kvm_main::{ArchVcpu, Backing, SlotRange, VcpuCtx, Vm};
use crate::stats::VcpuStat;
use crate::uapi::{self, exit, internal, run};
use core::sync::atomic::Ordering;
use kernel::{
    fpu::{GuestFpu, KVM_XSAVE_SIZE},
    prelude::*,
    smp::IrqDisabled,
    sync::Arc,
    uaccess::UserSlice,
    user_mem::PinnedPage,
    waitqueue::WaitResult,
    x86,
};

/// `KVM_MP_STATE_*`.
mod mp {
    pub(super) const RUNNABLE: u32 = 0;
    pub(super) const UNINITIALIZED: u32 = 1;
    pub(super) const INIT_RECEIVED: u32 = 2;
    pub(super) const HALTED: u32 = 3;
    pub(super) const SIPI_RECEIVED: u32 = 4;
    pub(super) const AP_RESET_HOLD: u32 = 9;
}

/// CR0 bits.
mod cr0 {
    pub(super) const PE: u64 = 1 << 0;
    pub(super) const NW: u64 = 1 << 29;
    pub(super) const CD: u64 = 1 << 30;
    pub(super) const PG: u64 = 1 << 31;
}

/// CR4 bits.
mod cr4 {
    pub(super) const PAE: u64 = 1 << 5;
    pub(super) const UMIP: u64 = 1 << 11;
    pub(super) const LA57: u64 = 1 << 12;
    pub(super) const VMXE: u64 = 1 << 13;
    pub(super) const FSGSBASE: u64 = 1 << 16;
    pub(super) const PCIDE: u64 = 1 << 17;
    pub(super) const OSXSAVE: u64 = 1 << 18;
    pub(super) const SMEP: u64 = 1 << 20;
    pub(super) const SMAP: u64 = 1 << 21;
    pub(super) const PKE: u64 = 1 << 22;
    pub(super) const LAM_SUP: u64 = 1 << 28;
    /// Every bit KVM can let a guest set (C: `CR4_RESERVED_BITS`' complement).
    pub(super) const KNOWN: u64 = 0x1ff
        | (1 << 9)
        | (1 << 10)
        | UMIP
        | LA57
        | VMXE
        | FSGSBASE
        | PCIDE
        | OSXSAVE
        | SMEP
        | SMAP
        | PKE
        | LAM_SUP;
}

/// RFLAGS bits.
const RFLAGS_IF: u64 = 1 << 9;
const RFLAGS_DF: u64 = 1 << 10;
const RFLAGS_VM: u64 = 1 << 17;

/// XCR0 bits.
const XFEATURE_FP: u64 = 1;
const XFEATURE_SSE: u64 = 2;
const XFEATURE_YMM: u64 = 4;
const XFEATURE_BNDREGS: u64 = 8;
const XFEATURE_BNDCSR: u64 = 16;
const XFEATURE_AVX512: u64 = 0xe0;

/// `-KVM_ENOSYS` and `-KVM_EPERM`, the hypercall results (`include/uapi/linux/kvm_para.h`).
const KVM_ENOSYS: u64 = 1000;
const KVM_EPERM: u64 = 1;

/// Why an MSR access failed (C: 1 vs `KVM_MSR_RET_UNSUPPORTED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MsrErr {
    /// A known MSR, an invalid access or value: #GP.
    Invalid,
    /// An MSR kvm-rs does not know.
    Unsupported,
}

/// An MSR access user space has to complete (`KVM_EXIT_X86_RDMSR/WRMSR`).
#[derive(Clone, Copy)]
struct PendingMsr {
    read: bool,
    next_rip: u64,
}

/// What an exit handler wants next.
enum Flow {
    /// Enter the guest again.
    Resume,
    /// Return to user space; `kvm_run` says why.
    User,
}

/// An IN or INS user space has to complete.
#[derive(Clone, Copy)]
struct PendingIo {
    sio: StringIo,
    string: bool,
    /// Items transferred by this exit.
    count: u32,
    /// INS of one item into memory that is not RAM (MMIO, a PCI hole, a
    /// read-only slot): its guest-physical address, written as MMIO.
    mmio_dest: Option<u64>,
    /// Where RIP goes once the instruction completes.
    next_rip: u64,
}

/// An MMIO read user space has to complete.
#[derive(Clone, Copy)]
struct PendingMmio {
    insn: MmioInsn,
    len: u32,
    next_rip: u64,
}

/// `KVM_CAP_XSAVE2`: the size of `struct kvm_xsave` for the supported XCR0,
/// at least 4096.
pub(crate) fn xsave2_size(supported: &[CpuidEntry]) -> usize {
    let size = cpuid::find(supported, 0xd, 0).map_or(0, |e| e.ebx as usize);
    size.max(KVM_XSAVE_SIZE)
}

/// Guest memory for the page-table walker, read through the memory slots.
/// Guest memory for one page walk. The slot of the last entry read is kept
/// for the next one (page tables mostly sit in one slot), as the C KVM's
/// last-used-slot cache does; it lives for one walk only. Entries are
/// naturally aligned, so none crosses a page.
struct WalkMem<'a> {
    vm: &'a Vm,
    slot: Option<SlotRange>,
}

impl<'a> WalkMem<'a> {
    fn new(vm: &'a Vm) -> Self {
        Self { vm, slot: None }
    }

    fn read(&mut self, gpa: u64, buf: &mut [u8]) -> core::result::Result<(), ()> {
        let hva = match self.slot.and_then(|s| s.hva_of(gpa)) {
            Some(h) => h,
            None => {
                // Not in a user-memory slot (a PCI hole, no slot): the
                // general path answers.
                let Some(s) = self.vm.user_slot_of(gpa >> 12) else {
                    return self.vm.read_guest(gpa, buf).map_err(|_| ());
                };
                self.slot = Some(s);
                s.hva_of(gpa).ok_or(())?
            }
        };
        UserSlice::new(hva as usize, buf.len()).reader().read_slice(buf).map_err(|_| ())
    }
}

impl GuestMem for WalkMem<'_> {
    fn read_u64(&mut self, gpa: u64) -> core::result::Result<u64, ()> {
        let mut b = [0u8; 8];
        self.read(gpa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn read_u32(&mut self, gpa: u64) -> core::result::Result<u32, ()> {
        let mut b = [0u8; 4];
        self.read(gpa, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
}

/// Host time in nanoseconds, for the LAPIC timer registers.
fn now_ns() -> u64 {
    kernel::time::Ktime::ktime_get().to_ns() as u64
}

/// The guest CPUID bits a guest page walk depends on.
#[derive(Clone, Copy, Debug)]
struct WalkCaps {
    maxphyaddr: u8,
    gbpages: bool,
    /// An AMD-compatible vendor ("AuthenticAMD", "HygonGenuine").
    amd: bool,
}

impl WalkCaps {
    fn of(entries: &[CpuidEntry]) -> Self {
        Self {
            maxphyaddr: cpuid::guest_maxphyaddr(entries),
            gbpages: cpuid::has(entries, feature::GBPAGES),
            amd: matches!(cpuid::find(entries, 0, 0), Some(e) if e.ebx == 0x6874_7541 || e.ebx == 0x6f67_7948),
        }
    }
}

/// An x86 vCPU.
pub(crate) struct X86Vcpu<B: Backend> {
    vm: Arc<X86VmShared<B>>,
    shared: Arc<VcpuShared>,
    hw: KBox<B::Vcpu>,
    gprs: [u64; 16],
    rip: u64,
    cpuid: KVec<CpuidEntry>,
    /// What guest page walks need from `cpuid`, derived once per table
    /// (every emulated instruction fetch walks the guest's page tables).
    walk_caps: WalkCaps,
    /// The table of `KVM_GET_SUPPORTED_CPUID`, for validation.
    supported_xcr0: u64,
    /// KVM_RUN ran at least once (CPUID changes are then refused).
    ran: bool,
    xcr0: u64,
    /// The guest's PKRU (switched only if the host uses protection keys).
    pkru: u32,
    fpu: GuestFpu,
    lapic: KBox<Lapic>,
    mp_state: u32,
    tsc_offset: u64,
    tsc_adjust: u64,
    misc_enable: u64,
    power_ctl: u64,
    misc_features_enables: u64,
    hwcr: u64,
    microcode: u64,
    /// Emulated DR0-DR3.
    db: [u64; 4],
    /// An exception raised by emulation, injected at the next entry.
    pending_exception: Option<Event>,
    /// The event an exit interrupted, injected again at the next entry.
    reinject: Option<Event>,
    /// An NMI from `KVM_NMI` or the LAPIC, not injected yet.
    nmi_pending: bool,
    /// Without an in-kernel irqchip: the vector of `KVM_INTERRUPT`.
    user_irq: Option<u8>,
    pending_io: Option<PendingIo>,
    pending_mmio: Option<PendingMmio>,
    pending_msr: Option<PendingMsr>,
    /// The bounce buffer of string I/O (a page, kept off the kernel stack).
    io_buf: KVec<u8>,
    /// `MSR_PLATFORM_INFO` (CPUID faulting offered by default, as in C).
    platform_info: u64,
    /// What the host timer is armed for.
    armed: HostTimer,
    tlb_gen_seen: u64,
    last_cpu: u32,
    /// The last SIPI vector (C: `apic->sipi_vector`).
    sipi_vector: u8,
    /// User space has set a CPUID table.
    cpuid_set: bool,
}

impl<B: Backend> X86Vcpu<B> {
    /// A vCPU in its power-on state (`kvm_arch_vcpu_create()` and
    /// `kvm_vcpu_reset()`), with an empty CPUID table until user space sets
    /// one (as in C: no feature is offered to a guest nobody described).
    pub(crate) fn new(vm: Arc<X86VmShared<B>>, shared: Arc<VcpuShared>) -> Result<Self> {
        let supported: &[CpuidEntry] = &vm.supported;
        let cpuid = KVec::new();
        let supported_xcr0 = cpuid::find(supported, 0xd, 0)
            .map_or(0, |e| u64::from(e.eax) | u64::from(e.edx) << 32);
        let hw = vm.backend.create_vcpu()?;
        let id = shared.id;
        let irqchip = vm.irqchip.load(Ordering::SeqCst);
        let cfg = LapicConfig {
            bus_cycle_ns: vm.apic_bus_cycle_ns.load(Ordering::Relaxed),
            ioapic_in_kernel: irqchip,
            ..LapicConfig::DEFAULT
        };
        let mut lapic = KBox::new(Lapic::new(id, cfg), GFP_KERNEL_ACCOUNT)?;
        lapic.reset(id == 0, &vm.lapic_flags());
        let mut v = Self {
            vm,
            shared,
            hw,
            gprs: [0; 16],
            rip: 0xfff0,
            walk_caps: WalkCaps::of(&cpuid),
            cpuid,
            supported_xcr0,
            ran: false,
            xcr0: XFEATURE_FP,
            pkru: 0,
            fpu: GuestFpu::new()?,
            lapic,
            mp_state: if !irqchip || id == 0 { mp::RUNNABLE } else { mp::UNINITIALIZED },
            tsc_offset: 0,
            tsc_adjust: 0,
            misc_enable: MISC_ENABLE_RESET,
            power_ctl: 0,
            misc_features_enables: 0,
            hwcr: 0,
            microcode: u64::from(x86::microcode_rev()) << 32,
            db: [0; 4],
            pending_exception: None,
            reinject: None,
            nmi_pending: false,
            user_irq: None,
            pending_io: None,
            pending_mmio: None,
            pending_msr: None,
            io_buf: KVec::from_elem(0u8, pio::BATCH_BYTES as usize, GFP_KERNEL_ACCOUNT)?,
            platform_info: PLATFORM_INFO_CPUID_FAULT,
            armed: HostTimer::Off,
            tlb_gen_seen: 0,
            last_cpu: 0,
            sipi_vector: 0,
            cpuid_set: false,
        };
        // The guest TSC starts at 0 (C: `kvm_synchronize_tsc(vcpu, 0)`).
        v.set_tsc_offset(0u64.wrapping_sub(x86::rdtsc()));
        v.reset_gprs();
        v.update_lapic_caps();
        v.publish_apic();
        Ok(v)
    }

    fn irqchip(&self) -> bool {
        self.vm.irqchip.load(Ordering::Relaxed)
    }

    fn set_tsc_offset(&mut self, off: u64) {
        self.tsc_offset = off;
        self.hw.set_tsc_offset(off);
    }

    fn guest_tsc(&self) -> u64 {
        x86::rdtsc().wrapping_add(self.tsc_offset)
    }

    /// RDX at reset holds the CPU signature (CPUID.1:EAX), as on hardware.
    fn reset_gprs(&mut self) {
        self.gprs = [0; 16];
        self.gprs[gpr::RDX] = u64::from(cpuid::lookup(&self.cpuid, 1, 0)[0]).max(0x600);
        self.rip = 0xfff0;
    }

    fn has(&self, f: cpuid::Feature) -> bool {
        cpuid::has(&self.cpuid, f)
    }

    fn update_lapic_caps(&mut self) {
        let caps = lapic::GuestCaps {
            x2apic: self.has(feature::X2APIC),
            tsc_deadline: self.has(feature::TSC_DEADLINE),
            maxphyaddr: cpuid::guest_maxphyaddr(&self.cpuid),
            intel_compatible: !self.guest_is_amd(),
        };
        self.lapic.set_guest_caps(caps);
    }

    fn guest_is_amd(&self) -> bool {
        self.walk_caps.amd
    }

    fn runtime_state(&self) -> cpuid::RuntimeState {
        cpuid::RuntimeState { cr4: self.hw.cr4(), xcr0: self.xcr0, apic_enabled: self.lapic.hw_enabled() }
    }

    /// The XCR0 bits the guest may set: its CPUID.0xD.0 EDX:EAX within the
    /// supported ones, plus x87 (C: `guest_supported_xcr0`).
    fn guest_supported_xcr0(&self) -> u64 {
        let g = cpuid::find(&self.cpuid, 0xd, 0).map_or(0, |e| u64::from(e.eax) | u64::from(e.edx) << 32);
        (g & self.supported_xcr0) | XFEATURE_FP
    }

    /// `__kvm_set_xcr()`: whether `xcr0` is a valid XCR0 for this guest.
    fn xcr0_valid(&self, xcr0: u64) -> bool {
        xcr0 & XFEATURE_FP != 0
            && !(xcr0 & XFEATURE_YMM != 0 && xcr0 & XFEATURE_SSE == 0)
            && xcr0 & !self.guest_supported_xcr0() == 0
            && (xcr0 & XFEATURE_BNDREGS == 0) == (xcr0 & XFEATURE_BNDCSR == 0)
            && !(xcr0 & XFEATURE_AVX512 != 0 && (xcr0 & XFEATURE_YMM == 0 || xcr0 & XFEATURE_AVX512 != XFEATURE_AVX512))
    }

    // ---- paging and guest memory ----

    fn paging_ctx(&self) -> PagingCtx {
        PagingCtx {
            cr0: self.hw.cr0(),
            cr3: self.hw.cr3(),
            cr4: self.hw.cr4(),
            efer: self.hw.efer(),
            maxphyaddr: self.walk_caps.maxphyaddr,
            gbpages: self.walk_caps.gbpages,
            amd: self.walk_caps.amd,
        }
    }

    fn exec_mode(&self) -> ExecMode {
        let cs = self.hw.seg(Seg::Cs);
        ExecMode::from_state(
            self.hw.cr0() & cr0::PE != 0,
            self.hw.rflags() & RFLAGS_VM != 0,
            self.hw.efer() & efer::LMA != 0,
            cs.l != 0,
            cs.db != 0,
        )
    }

    /// The linear address of `off` in segment `seg` (no limit checks: the
    /// hardware checked them before the exit for the accesses emulated here).
    fn linear(&self, seg: Seg, off: u64) -> u64 {
        if self.exec_mode() == ExecMode::Long64 {
            match seg {
                Seg::Fs | Seg::Gs => self.hw.seg(seg).base.wrapping_add(off),
                _ => off,
            }
        } else {
            self.hw.seg(seg).base.wrapping_add(off) & 0xffff_ffff
        }
    }

    fn translate(&self, vm: &Vm, gva: u64, write: bool, fetch: bool) -> core::result::Result<u64, WalkError> {
        let access = Access {
            write,
            fetch,
            user: self.hw.cpl() == 3,
            smap_override: self.hw.rflags() & (1 << 18) != 0,
        };
        let ctx = self.paging_ctx();
        paging_tmpl::translate(&mut WalkMem::new(vm), &ctx, gva, access).map(|t| t.gpa).map_err(|e| match e {
            // A page-table page outside guest memory: a not-present #PF
            // with the access's W/U/I bits, as the C KVM's walker injects.
            WalkError::NoMemory { .. } => {
                WalkError::PageFault { error_code: paging_tmpl::not_present_error_code(&ctx, access) }
            }
            e => e,
        })
    }

    /// Queues the exception a failed walk calls for.
    fn walk_fault(&mut self, gva: u64, e: WalkError) {
        match e {
            WalkError::PageFault { error_code } => {
                self.hw.set_cr2(gva);
                self.queue_exception(vector::PF, Some(error_code));
            }
            // `translate` turns it into a page fault with the access's bits;
            // a walk without the access at hand injects the bare not-present one.
            WalkError::NoMemory { .. } => {
                self.hw.set_cr2(gva);
                self.queue_exception(vector::PF, Some(0));
            }
            WalkError::NonCanonical => self.queue_exception(vector::GP, Some(0)),
        }
    }

    /// Copies guest-virtual memory at `gva` (for string I/O). On a fault the
    /// exception is queued and `Ok(false)` returned.
    fn read_virt(&mut self, vm: &Vm, gva: u64, buf: &mut [u8]) -> Result<bool> {
        let mut done = 0;
        while done < buf.len() {
            let va = gva.wrapping_add(done as u64);
            let n = (4096 - (va & 0xfff) as usize).min(buf.len() - done);
            match self.translate(vm, va, false, false) {
                Ok(gpa) => vm.read_guest(gpa, &mut buf[done..done + n])?,
                Err(e) => {
                    self.walk_fault(va, e);
                    return Ok(false);
                }
            }
            done += n;
        }
        Ok(true)
    }

    /// Copies into guest-virtual memory at `gva`; like [`Self::read_virt`].
    fn write_virt(&mut self, vm: &Vm, gva: u64, buf: &[u8]) -> Result<bool> {
        let mut done = 0;
        while done < buf.len() {
            let va = gva.wrapping_add(done as u64);
            let n = (4096 - (va & 0xfff) as usize).min(buf.len() - done);
            match self.translate(vm, va, true, false) {
                Ok(gpa) => vm.write_guest(gpa, &buf[done..done + n])?,
                Err(e) => {
                    self.walk_fault(va, e);
                    return Ok(false);
                }
            }
            done += n;
        }
        Ok(true)
    }

    /// The bytes at CS:RIP, up to 15, fewer if the fetch runs into a page it
    /// cannot read. `None` if not even the first byte can be fetched.
    /// The length of the instruction at RIP. An instruction that ends before
    /// the page does is decoded without walking the next page (the fetch of
    /// [`Self::fetch_insn`] takes 15 bytes, which may cross into it).
    fn insn_len_at_rip(&self, vm: &Vm, mode: ExecMode) -> Option<core::result::Result<usize, emulate::DecodeError>> {
        let start = self.linear(Seg::Cs, self.rip);
        let in_page = 4096 - (start & 0xfff) as usize;
        if in_page < emulate::MAX_INSN_LEN {
            let mut buf = [0u8; emulate::MAX_INSN_LEN];
            let gpa = self.translate(vm, start, false, true).ok()?;
            vm.read_guest(gpa, &mut buf[..in_page]).ok()?;
            match emulate::insn_len(&buf[..in_page], mode) {
                Err(emulate::DecodeError::Truncated) => {}
                r => return Some(r),
            }
        }
        self.fetch_insn(vm).map(|(b, n)| emulate::insn_len(&b[..n], mode))
    }

    fn fetch_insn(&self, vm: &Vm) -> Option<([u8; emulate::MAX_INSN_LEN], usize)> {
        let mut buf = [0u8; emulate::MAX_INSN_LEN];
        let start = self.linear(Seg::Cs, self.rip);
        let mut got = 0;
        while got < buf.len() {
            let va = start.wrapping_add(got as u64);
            let n = (4096 - (va & 0xfff) as usize).min(buf.len() - got);
            let Ok(gpa) = self.translate(vm, va, false, true) else { break };
            if vm.read_guest(gpa, &mut buf[got..got + n]).is_err() {
                break;
            }
            got += n;
        }
        (got > 0).then_some((buf, got))
    }

    // ---- events ----

    fn queue_exception(&mut self, vector: u8, error_code: Option<u32>) {
        self.pending_exception = Some(Event::Exception { vector, error_code });
    }

    fn gp(&mut self) {
        self.queue_exception(vector::GP, Some(0));
    }

    fn ud(&mut self) {
        self.queue_exception(vector::UD, None);
    }

    /// Arms, re-arms or stops the host timer to match what the LAPIC needs.
    fn sync_timer(&mut self) {
        let want = self.lapic.host_timer();
        if want == self.armed {
            return;
        }
        self.armed = want;
        match want {
            HostTimer::Off => self.shared.timer.cancel(),
            HostTimer::At { expires_ns } => self.shared.timer.start_at(expires_ns),
            HostTimer::TscDeadline { tsc } => {
                // Guest TSC ticks to host nanoseconds at the guest TSC rate.
                let khz = u64::from(self.vm.tsc_khz.load(Ordering::Relaxed)).max(1);
                let now_tsc = self.guest_tsc();
                let delta_ns = tsc.saturating_sub(now_tsc).saturating_mul(1_000_000) / khz;
                self.shared.timer.start_at(now_ns().saturating_add(delta_ns));
            }
        }
    }

    /// Moves interrupts posted by other vCPUs and devices into the LAPIC.
    fn drain_posted(&mut self) {
        if self.shared.kicker.timer_fired.swap(false, Ordering::SeqCst) {
            let exp = self.lapic.timer_fired(now_ns());
            if exp.delivered == Delivered::Nmi {
                self.nmi_pending = true;
            }
            // A periodic timer re-arms: what was armed has fired.
            self.armed = HostTimer::Off;
            self.sync_timer();
        }
        if self.shared.posted_nmi.swap(false, Ordering::SeqCst) {
            self.nmi_pending = true;
        }
        if self.shared.posted_init.swap(false, Ordering::SeqCst) {
            let irq = lapic::Irq { vector: 0, mode: lapic::DeliveryMode::Init, level: true, level_triggered: false };
            self.lapic.accept(&irq);
        }
        let sipi = self.shared.posted_sipi.swap(0, Ordering::SeqCst);
        if sipi != 0 {
            let irq = lapic::Irq {
                vector: (sipi & 0xff) as u8,
                mode: lapic::DeliveryMode::StartUp,
                level: true,
                level_triggered: false,
            };
            self.lapic.accept(&irq);
        }
        for w in 0..4 {
            let irr = self.shared.posted_irr[w].swap(0, Ordering::SeqCst);
            if irr == 0 {
                continue;
            }
            let tmr = self.shared.posted_tmr[w].fetch_and(!irr, Ordering::SeqCst);
            for b in 0..64 {
                if irr & (1 << b) != 0 {
                    let v = (w * 64 + b) as u8;
                    self.lapic.accept_fixed(v, tmr & (1 << b) != 0);
                }
            }
        }
    }

    /// Picks the event to inject at the next entry (C: `kvm_check_and_inject_events()`).
    fn inject_events(&mut self, ctx: &VcpuCtx<'_>) {
        self.hw.set_tpr(self.lapic.cr8() as u8);
        // An interrupt the TPR blocks: exit when the guest lowers CR8 below
        // its class (an ISR-blocked one waits for the EOI write, which exits).
        // IRR is scanned once here; nothing below changes it before `pending` is used.
        let (pending, irr) = if self.irqchip() { self.lapic.pending_and_highest_irr() } else { (None, None) };
        let threshold = match (pending, irr) {
            (None, Some(v)) if u64::from(v >> 4) <= self.lapic.cr8() => Some(v >> 4),
            _ => None,
        };
        self.hw.set_tpr_threshold(threshold);
        if let Some(ev) = self.reinject.take() {
            self.hw.inject(ev);
            return;
        }
        if let Some(ev) = self.pending_exception.take() {
            self.hw.inject(ev);
            return;
        }
        if self.nmi_pending && self.hw.nmi_allowed() {
            self.nmi_pending = false;
            ctx.stats.inc(VcpuStat::NmiInjections);
            self.hw.inject(Event::Nmi);
            return;
        }
        if self.irqchip() && self.vm.pic_output.load(Ordering::SeqCst) && self.lapic.accepts_pic_intr() {
            // An ExtINT from the PIC comes before the LAPIC's interrupts
            // (C: `kvm_cpu_has_extint()`); INTA is the guest taking it.
            if self.hw.interrupt_allowed() {
                if let Ok(v) = self.vm.with_irqchip(|chip, _| chip.pic.ack()) {
                    ctx.stats.inc(VcpuStat::IrqInjections);
                    self.hw.inject(Event::Interrupt { vector: v, soft: false });
                    return;
                }
            } else {
                self.hw.set_interrupt_window(true);
                return;
            }
        }
        if self.irqchip() {
            if let Some(v) = pending {
                if self.hw.interrupt_allowed() {
                    self.lapic.ack(v);
                    ctx.stats.inc(VcpuStat::IrqInjections);
                    self.hw.inject(Event::Interrupt { vector: v, soft: false });
                } else {
                    self.hw.set_interrupt_window(true);
                }
            }
        } else if let Some(v) = self.user_irq {
            if self.hw.interrupt_allowed() {
                self.user_irq = None;
                ctx.stats.inc(VcpuStat::IrqInjections);
                self.hw.inject(Event::Interrupt { vector: v, soft: false });
            } else {
                self.hw.set_interrupt_window(true);
            }
        } else if ctx.run.read_u8(run::REQUEST_INTERRUPT_WINDOW) != 0 && !self.hw.interrupt_allowed() {
            self.hw.set_interrupt_window(true);
        }
    }

    /// Whether a halted vCPU has something to wake for (C: `kvm_vcpu_has_events()`).
    fn has_wake_event(&self) -> bool {
        if self.nmi_pending {
            return true;
        }
        let if_set = self.hw.rflags() & RFLAGS_IF != 0;
        let extint = self.vm.pic_output.load(Ordering::SeqCst) && self.lapic.accepts_pic_intr();
        if_set && (self.lapic.highest_pending().is_some() || self.user_irq.is_some() || extint)
    }

    /// Sleeps while halted; `Err(EINTR)` on a signal (C: `kvm_vcpu_block()`).
    fn block(&mut self, ctx: &VcpuCtx<'_>) -> Result {
        loop {
            let due_in = self.eoi_inject_due();
            self.drain_posted();
            self.handle_init_sipi();
            match self.mp_state {
                mp::HALTED | mp::AP_RESET_HOLD if self.has_wake_event() => {
                    self.mp_state = mp::RUNNABLE;
                    return Ok(());
                }
                mp::RUNNABLE => return Ok(()),
                _ => {}
            }
            let k = self.shared.kicker.clone();
            ctx.stats.set(VcpuStat::Blocking, 1);
            let start = now_ns();
            // A pending EOI-storm re-delivery may be what wakes this vCPU:
            // sleep no longer than until it is due.
            let timeout = due_in.map(|ns| (kernel::time::msecs_to_jiffies(ns.div_ceil(1_000_000).min(u64::from(u32::MAX)) as u32) as u64).max(1));
            let r = k.wq.wait_interruptible(|| k.pending.swap(false, Ordering::SeqCst), timeout);
            let slept = now_ns().saturating_sub(start);
            ctx.stats.set(VcpuStat::Blocking, 0);
            ctx.stats.add(VcpuStat::HaltWaitNs, slept);
            ctx.stats.hist_add(VcpuStat::HaltWaitHist, slept);
            if r == WaitResult::Signal {
                ctx.stats.inc(VcpuStat::SignalExits);
                ctx.run.write_u32(run::EXIT_REASON, exit::INTR);
                return Err(EINTR);
            }
            ctx.stats.inc(VcpuStat::HaltWakeup);
        }
    }

    /// Runs the IOAPIC's delayed EOI-storm re-delivery once it is due (C:
    /// `kvm_ioapic_eoi_inject_work()`, a delayed work item): whichever vCPU
    /// gets here first after the deadline does it. Returns how long until it
    /// is due, if it is pending.
    fn eoi_inject_due(&self) -> Option<u64> {
        let at = self.vm.eoi_inject_at.load(Ordering::SeqCst);
        if at == 0 {
            return None;
        }
        let now = now_ns();
        if now < at {
            return Some(at - now);
        }
        if self.vm.eoi_inject_at.compare_exchange(at, 0, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            let _ = self.vm.with_irqchip(|chip, bus| chip.ioapic.eoi_inject_work(bus));
        }
        None
    }

    /// INIT and SIPI from the LAPIC (C: `kvm_apic_accept_events()`).
    fn handle_init_sipi(&mut self) {
        if self.lapic.take_init() {
            let bsp = self.lapic.apic_base() & lapic::APICBASE_BSP != 0;
            self.lapic.init(bsp, &self.vm.lapic_flags());
            self.publish_apic();
            self.sync_timer();
            self.hw.reset();
            self.reset_gprs();
            self.mp_state = if bsp { mp::RUNNABLE } else { mp::INIT_RECEIVED };
        }
        if let Some(v) = self.lapic.take_sipi() {
            self.sipi_vector = v;
            if self.mp_state == mp::INIT_RECEIVED {
                let cs = KvmSegment {
                    selector: u16::from(v) << 8,
                    base: u64::from(v) << 12,
                    ..self.hw.seg(Seg::Cs)
                };
                self.hw.set_seg(Seg::Cs, &cs);
                self.rip = 0;
                self.mp_state = mp::RUNNABLE;
            }
        }
    }

    /// Carries out what a LAPIC register write asked for.
    fn lapic_action(&mut self, a: Option<Action>) {
        self.publish_apic();
        match a {
            Some(Action::Ipi(ipi)) => self.send_ipi(&ipi),
            Some(Action::Eoi { vector, level_triggered }) => {
                // The IOAPIC learns of the EOI (remote IRR, re-delivery of a
                // still-asserted level line).
                let (id, directed) = (self.shared.id, self.lapic.suppress_eoi_broadcast());
                let out = self.vm.with_irqchip_from(Some(id), |chip, bus| {
                    chip.ioapic.eoi(id, vector, level_triggered, directed, bus)
                });
                if out.is_ok_and(|o| o.schedule_inject) {
                    // An EOI storm: the line's next delivery waits 10 ms (C:
                    // `schedule_delayed_work(&ioapic->eoi_inject, HZ / 100)`,
                    // not moved if already pending).
                    let at = now_ns().saturating_add(ioapic::EOI_INJECT_DELAY_NS).max(1);
                    let _ = self.vm.eoi_inject_at.compare_exchange(0, at, Ordering::SeqCst, Ordering::SeqCst);
                }
            }
            Some(Action::Timer(_)) | None => {}
        }
        self.sync_timer();
    }

    /// Delivers an IPI through the VM's APIC routing (this vCPU's LAPIC
    /// included: its view is published before the ICR write is acted on).
    fn send_ipi(&mut self, ipi: &lapic::Ipi) {
        let vcpus = self.vm.vcpus.lock();
        let router = ApicRouter { vcpus: &vcpus, flags: self.vm.lapic_flags(), from: Some(self.shared.id) };
        router.deliver(&ipi.dest, &ipi.irq);
    }

    /// Publishes this vCPU's LAPIC for interrupt routing (after any change of
    /// its ID, LDR, DFR, mode or enable bits).
    fn publish_apic(&self) {
        if self.irqchip() {
            *self.shared.apic_view.lock() = Some(self.lapic.clone());
        }
    }

    // ---- state ioctls ----

    fn get_regs(&self) -> KvmRegs {
        KvmRegs { gprs: self.gprs, rip: self.rip, rflags: self.hw.rflags() }
    }

    fn set_regs(&mut self, r: &KvmRegs) {
        self.gprs = r.gprs;
        self.rip = r.rip;
        // Bit 1 of RFLAGS is always 1 (C: `kvm_set_rflags()` callers set it).
        self.hw.set_rflags(r.rflags | 2);
        // A new RIP cancels an instruction in progress.
        self.pending_exception = None;
    }

    fn get_sregs(&self) -> KvmSregs {
        let mut s = KvmSregs::default();
        for seg in Seg::ALL {
            *s.seg_mut(seg) = self.hw.seg(seg);
        }
        s.gdt = self.hw.gdt();
        s.idt = self.hw.idt();
        s.cr0 = self.hw.cr0();
        s.cr2 = self.hw.cr2();
        s.cr3 = self.hw.cr3();
        s.cr4 = self.hw.cr4();
        s.cr8 = self.lapic.cr8();
        s.efer = self.hw.efer();
        s.apic_base = self.lapic.apic_base();
        if let Some(Event::Interrupt { vector, soft: false }) = self.reinject {
            s.interrupt_bitmap[usize::from(vector / 64)] |= 1 << (vector % 64);
        }
        s
    }

    /// CR4 bits this guest may not set: unknown to KVM, not supported by
    /// kvm-rs on this host, or absent from the guest's CPUID (C:
    /// `kvm_is_valid_cr4()` with `cr4_reserved_bits` and the guest's).
    fn cr4_reserved(&self) -> u64 {
        let mut r = !cr4::KNOWN;
        let checks = [
            (feature::XSAVE, cr4::OSXSAVE),
            (feature::SMEP, cr4::SMEP),
            (feature::SMAP, cr4::SMAP),
            (feature::FSGSBASE, cr4::FSGSBASE),
            (feature::PKU, cr4::PKE),
            (feature::LA57, cr4::LA57),
            (feature::UMIP, cr4::UMIP),
            (feature::VMX, cr4::VMXE),
            (feature::PCID, cr4::PCIDE),
            (feature::LAM, cr4::LAM_SUP),
        ];
        for (f, bit) in checks {
            // Both the host (what kvm-rs offers) and the guest must have
            // it; the guest's CPUID counts once user space has set one (C:
            // `cr4_guest_rsvd_bits` is computed by KVM_SET_CPUID2).
            if !cpuid::has(&self.vm.supported, f) || (self.cpuid_set && !self.has(f)) {
                r |= bit;
            }
        }
        // kvm-rs does not nest VMX, and the guest cannot enter VMX operation.
        r | cr4::VMXE
    }

    fn cr0_valid(v: u64) -> bool {
        v >> 32 == 0 && !(v & cr0::NW != 0 && v & cr0::CD == 0) && !(v & cr0::PG != 0 && v & cr0::PE == 0)
    }

    /// `kvm_is_valid_sregs()` and `__set_sregs()`.
    fn set_sregs(&mut self, s: &KvmSregs) -> Result {
        let cs = s.seg(Seg::Cs);
        if s.efer & efer::LME != 0 && s.cr0 & cr0::PG != 0 {
            if s.cr4 & cr4::PAE == 0 || s.efer & efer::LMA == 0 {
                return Err(EINVAL);
            }
            let maxphy = cpuid::guest_maxphyaddr(&self.cpuid);
            if maxphy < 64 && s.cr3 >> maxphy != 0 {
                return Err(EINVAL);
            }
        } else if s.efer & efer::LMA != 0 || cs.l != 0 {
            return Err(EINVAL);
        }
        if s.cr4 & self.cr4_reserved() != 0 || !Self::cr0_valid(s.cr0) {
            return Err(EINVAL);
        }
        if !msrs::efer_write_ok(self.hw.efer(), s.efer, self.efer_caps(), false, true) {
            return Err(EINVAL);
        }
        // Checked even without an in-kernel LAPIC, whose model then only
        // stores the value (C: `kvm_set_apic_base()`).
        self.lapic.set_apic_base(s.apic_base, true).map_err(|_| EINVAL)?;
        self.publish_apic();
        for seg in Seg::ALL {
            self.hw.set_seg(seg, s.seg(seg));
        }
        self.hw.set_gdt(&s.gdt);
        self.hw.set_idt(&s.idt);
        self.hw.set_cr2(s.cr2);
        self.hw.set_cr3(s.cr3);
        self.hw.set_cr4(s.cr4);
        self.hw.set_cr0(s.cr0);
        self.hw.set_efer(s.efer);
        // A CR8 with reserved bits is ignored, not refused (C).
        if s.cr8 <= 15 {
            self.lapic.set_cr8(s.cr8);
        }
        // One pending external interrupt (without an in-kernel irqchip).
        let bits = s.interrupt_bitmap;
        if let Some((w, v)) = bits.iter().enumerate().find(|(_, v)| **v != 0) {
            let vec = (w * 64) as u32 + v.trailing_zeros();
            if !self.irqchip() {
                self.user_irq = Some(vec as u8);
            }
        }
        self.mp_state_after_sregs();
        Ok(())
    }

    fn mp_state_after_sregs(&mut self) {
        // C: a vCPU waiting for SIPI that gets CS from user space is
        // treated as started (`kvm_vcpu_is_bsp` quirk in `__set_sregs`).
        if self.mp_state == mp::SIPI_RECEIVED {
            self.mp_state = mp::RUNNABLE;
        }
    }

    fn efer_caps(&self) -> EferCaps {
        EferCaps {
            lm: self.has(feature::LM),
            nx: self.has(feature::NX),
            svm: false,
            ffxsr: self.has(feature::FFXSR),
        }
    }

    fn get_fpu(&self) -> KvmFpu {
        let mut buf = KVec::from_elem(0u8, self.fpu.uabi_size().max(KVM_XSAVE_SIZE), GFP_KERNEL).unwrap_or_default();
        if buf.len() < KVM_XSAVE_SIZE {
            return KvmFpu::from_fxsave(&[0u8; 512]);
        }
        self.fpu.get_uabi(&mut buf, self.supported_xcr0 | XFEATURE_FP | XFEATURE_SSE, self.pkru);
        KvmFpu::from_fxsave(&buf[..512])
    }

    fn set_fpu(&mut self, f: &KvmFpu) -> Result {
        let mut buf = KVec::from_elem(0u8, self.fpu.uabi_size().max(KVM_XSAVE_SIZE), GFP_KERNEL)?;
        let all = self.supported_xcr0 | XFEATURE_FP | XFEATURE_SSE;
        self.fpu.get_uabi(&mut buf, all, self.pkru);
        f.to_fxsave(&mut buf[..512]);
        // XSTATE_BV: x87 and SSE state present.
        buf[512] |= 3;
        self.fpu.set_uabi(&buf, all, &mut self.pkru)
    }

    // ---- MSRs ----

    /// `kvm_get_msr_common()` and the backend's: `Err(())` is #GP for a
    /// guest, a failed entry for `KVM_GET_MSRS`.
    fn get_msr(&self, index: u32, host: bool) -> core::result::Result<u64, MsrErr> {
        if let Some(v) = self.hw.get_msr(index) {
            return Ok(v);
        }
        Ok(match index {
            MSR_EFER => self.hw.efer(),
            MSR_IA32_TSC => self.guest_tsc(),
            MSR_IA32_TSC_ADJUST => self.tsc_adjust,
            MSR_IA32_APICBASE => self.lapic.apic_base(),
            MSR_IA32_MISC_ENABLE => self.misc_enable,
            MSR_IA32_POWER_CTL => self.power_ctl,
            MSR_PLATFORM_INFO => {
                if !host && !self.vm.platform_info_readable.load(Ordering::Relaxed) {
                    return Err(MsrErr::Invalid);
                }
                self.platform_info
            }
            MSR_MISC_FEATURES_ENABLES => self.misc_features_enables,
            MSR_IA32_UCODE_REV => self.microcode,
            MSR_K7_HWCR => self.hwcr,
            MSR_IA32_TSC_DEADLINE if self.irqchip() && (host || self.has(feature::TSC_DEADLINE)) => {
                self.lapic.tsc_deadline()
            }
            X2APIC_FIRST..=X2APIC_LAST if self.irqchip() => {
                self.lapic.rdmsr(index, now_ns()).map_err(|_| MsrErr::Invalid)?
            }
            _ => return Err(MsrErr::Unsupported),
        })
    }

    /// `kvm_set_msr_common()` and the backend's.
    fn set_msr(&mut self, index: u32, mut value: u64, host: bool) -> core::result::Result<(), MsrErr> {
        match index {
            // Linear addresses: canonical for the widest address KVM
            // offers, whatever CR4.LA57 says, as on hardware (C:
            // `is_noncanonical_msr_address()`).
            MSR_FS_BASE | MSR_GS_BASE | MSR_KERNEL_GS_BASE | MSR_CSTAR | MSR_LSTAR => {
                let bits = if cpuid::has(&self.vm.supported, feature::LA57) { 57 } else { 48 };
                if msrs::canonicalize(value, bits) != value {
                    return Err(MsrErr::Invalid);
                }
            }
            // AMD ignores their upper half and Intel faults: made canonical
            // for the current paging depth so that either vendor's entry
            // takes the value.
            MSR_IA32_SYSENTER_ESP | MSR_IA32_SYSENTER_EIP => {
                let bits = if self.hw.cr4() & cr4::LA57 != 0 { 57 } else { 48 };
                value = msrs::canonicalize(value, bits);
            }
            _ => {}
        }
        if let Some(r) = self.hw.set_msr(index, value) {
            return r.map_err(|()| MsrErr::Invalid);
        }
        self.set_msr_common(index, value, host).map_err(|()| {
            if self.msr_known(index) {
                MsrErr::Invalid
            } else {
                MsrErr::Unsupported
            }
        })
    }

    /// The MSRs x86 common code keeps: `Err(())` is #GP; unknown ones are
    /// answered by the last arm.
    fn set_msr_common(&mut self, index: u32, value: u64, host: bool) -> core::result::Result<(), ()> {
        match index {
            MSR_EFER => {
                let paging = self.hw.cr0() & cr0::PG != 0;
                if !msrs::efer_write_ok(self.hw.efer(), value, self.efer_caps(), paging, host) {
                    return Err(());
                }
                // LMA follows LME and CR0.PG; a guest cannot set it.
                let lma = self.hw.efer() & efer::LMA;
                let v = if host { value } else { (value & !efer::LMA) | lma };
                self.hw.set_efer(v);
            }
            MSR_IA32_TSC => {
                if host {
                    self.set_tsc_offset(value.wrapping_sub(x86::rdtsc()));
                } else {
                    let delta = value.wrapping_sub(self.guest_tsc());
                    self.tsc_adjust = self.tsc_adjust.wrapping_add(delta);
                    self.set_tsc_offset(self.tsc_offset.wrapping_add(delta));
                }
            }
            MSR_IA32_TSC_ADJUST => {
                // Ignored, not refused, when the guest's CPUID lacks it (C KVM).
                if self.has(feature::TSC_ADJUST) {
                    if !host {
                        let delta = value.wrapping_sub(self.tsc_adjust);
                        self.set_tsc_offset(self.tsc_offset.wrapping_add(delta));
                    }
                    self.tsc_adjust = value;
                }
            }
            MSR_IA32_APICBASE => {
                self.lapic.set_apic_base(value, host).map_err(|_| ())?;
                self.publish_apic();
            }
            MSR_IA32_MISC_ENABLE => {
                self.misc_enable = msrs::misc_enable_write(self.misc_enable, value, host).ok_or(())?;
            }
            MSR_IA32_POWER_CTL => self.power_ctl = value,
            MSR_PLATFORM_INFO => {
                // Read-only for the guest. User space may not take CPUID
                // faulting away while the guest uses it.
                let faulting = self.misc_features_enables & MISC_FEATURES_CPUID_FAULT != 0;
                if !host || (value & PLATFORM_INFO_CPUID_FAULT == 0 && faulting) {
                    return Err(());
                }
                self.platform_info = value;
            }
            MSR_MISC_FEATURES_ENABLES => {
                // Only CPUID faulting, and only if MSR_PLATFORM_INFO offers it.
                if value & !MISC_FEATURES_CPUID_FAULT != 0
                    || (value != 0 && self.platform_info & PLATFORM_INFO_CPUID_FAULT == 0)
                {
                    return Err(());
                }
                self.misc_features_enables = value;
            }
            MSR_IA32_UCODE_REV => {
                // The guest writes 0 to ask for the revision; only user space sets it.
                if host {
                    self.microcode = value;
                }
            }
            MSR_K7_HWCR => self.hwcr = msrs::hwcr_write(value).ok_or(())?,
            MSR_IA32_TSC_DEADLINE if self.irqchip() && (host || self.has(feature::TSC_DEADLINE)) => {
                let _ = self.lapic.set_tsc_deadline(value);
                self.sync_timer();
            }
            X2APIC_FIRST..=X2APIC_LAST if self.irqchip() => {
                let a = self.lapic.wrmsr(index, value, now_ns()).map_err(|_| ())?;
                self.lapic_action(a);
            }
            _ => return Err(()),
        }
        Ok(())
    }

    /// Whether x86 common code or the backend knows MSR `index` (for the
    /// "unknown MSR" exit reason of user-space MSR exits).
    fn msr_known(&self, index: u32) -> bool {
        self.get_msr(index, true).is_ok()
    }

    /// `KVM_GET_MSRS` / `KVM_SET_MSRS` on the vCPU: processes entries until
    /// one fails, returns how many succeeded.
    fn msrs_ioctl(&mut self, arg: usize, set: bool) -> Result<isize> {
        let mut hdr = [0u8; 8];
        UserSlice::new(arg, 8).reader().read_slice(&mut hdr)?;
        let n = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        if n >= MAX_IO_MSRS {
            return Err(E2BIG);
        }
        let len = n as usize * MSR_ENTRY_SIZE;
        let mut buf = KVec::from_elem(0u8, len, GFP_KERNEL)?;
        UserSlice::new(arg + 8, len).reader().read_slice(&mut buf)?;
        let mut done = 0;
        for e in buf.chunks_exact_mut(MSR_ENTRY_SIZE) {
            let index = u32::from_ne_bytes([e[0], e[1], e[2], e[3]]);
            let ok = if set {
                let mut d = [0u8; 8];
                d.copy_from_slice(&e[8..16]);
                self.set_msr(index, u64::from_ne_bytes(d), true).is_ok()
            } else {
                // The entry that fails reads as 0 (C clears it).
                let r = self.get_msr(index, true);
                e[8..16].copy_from_slice(&r.unwrap_or(0).to_ne_bytes());
                r.is_ok()
            };
            if !ok {
                break;
            }
            done += 1;
        }
        if !set {
            UserSlice::new(arg + 8, len).writer().write_slice(&buf)?;
        }
        Ok(done)
    }

    // ---- CPUID ----

    fn set_cpuid2(&mut self, arg: usize) -> Result<isize> {
        let mut hdr = [0u8; 8];
        UserSlice::new(arg, 8).reader().read_slice(&mut hdr)?;
        let n = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        if n > cpuid::KVM_MAX_CPUID_ENTRIES {
            return Err(E2BIG);
        }
        let mut r = UserSlice::new(arg + 8, n as usize * CpuidEntry::SIZE).reader();
        let mut entries = KVec::with_capacity(n as usize, GFP_KERNEL_ACCOUNT)?;
        for _ in 0..n {
            let mut b = [0u8; CpuidEntry::SIZE];
            r.read_slice(&mut b)?;
            entries.push(CpuidEntry::from_bytes(&b), GFP_KERNEL_ACCOUNT)?;
        }
        cpuid::check_guest_table(&entries).map_err(|_| EINVAL)?;
        if self.ran {
            // After KVM_RUN only the same table is accepted (C:
            // `kvm_cpuid_check_equal()`), ignoring the run-time bits.
            let st = self.runtime_state();
            let same = entries.len() == self.cpuid.len()
                && entries.iter().zip(self.cpuid.iter()).all(|(a, b)| {
                    let mut ra = [a.eax, a.ebx, a.ecx, a.edx];
                    let mut rb = [b.eax, b.ebx, b.ecx, b.edx];
                    cpuid::apply_runtime(&entries, a.function, a.index, &mut ra, &st);
                    cpuid::apply_runtime(&self.cpuid, b.function, b.index, &mut rb, &st);
                    (a.function, a.index, a.flags) == (b.function, b.index, b.flags) && ra == rb
                });
            // EINVAL as in 6.12 (later kernels answer EBUSY).
            return if same { Ok(0) } else { Err(EINVAL) };
        }
        self.walk_caps = WalkCaps::of(&entries);
        self.cpuid = entries;
        self.cpuid_set = true;
        self.update_lapic_caps();
        // XCR0 must stay within what the new table allows.
        if !self.xcr0_valid(self.xcr0) {
            self.xcr0 = XFEATURE_FP;
        }
        Ok(0)
    }

    fn get_cpuid2(&self, arg: usize) -> Result<isize> {
        let mut hdr = [0u8; 8];
        UserSlice::new(arg, 8).reader().read_slice(&mut hdr)?;
        let n = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        if (n as usize) < self.cpuid.len() {
            return Err(E2BIG);
        }
        let st = self.runtime_state();
        let mut w = UserSlice::new(arg + 8, self.cpuid.len() * CpuidEntry::SIZE).writer();
        for e in self.cpuid.iter() {
            let mut r = [e.eax, e.ebx, e.ecx, e.edx];
            cpuid::apply_runtime(&self.cpuid, e.function, e.index, &mut r, &st);
            let out = CpuidEntry { eax: r[0], ebx: r[1], ecx: r[2], edx: r[3], ..*e };
            w.write_slice(&out.to_bytes())?;
        }
        hdr[0..4].copy_from_slice(&(self.cpuid.len() as u32).to_ne_bytes());
        UserSlice::new(arg, 8).writer().write_slice(&hdr)?;
        Ok(0)
    }

    // ---- XSAVE ----

    fn get_xsave(&self, arg: usize, size: usize) -> Result<isize> {
        let mut buf = KVec::from_elem(0u8, size.max(KVM_XSAVE_SIZE), GFP_KERNEL)?;
        // As the C KVM: every component kvm-rs supports, whatever the guest's
        // CPUID says (user space may save before it sets CPUID).
        self.fpu.get_uabi(&mut buf, self.supported_xcr0 | XFEATURE_FP | XFEATURE_SSE, self.pkru);
        UserSlice::new(arg, size).writer().write_slice(&buf[..size])?;
        Ok(0)
    }

    fn set_xsave(&mut self, arg: usize) -> Result<isize> {
        let size = self.fpu.uabi_size().max(KVM_XSAVE_SIZE);
        let mut buf = KVec::from_elem(0u8, size, GFP_KERNEL)?;
        UserSlice::new(arg, size).reader().read_slice(&mut buf)?;
        self.fpu.set_uabi(&buf, self.supported_xcr0 | XFEATURE_FP | XFEATURE_SSE, &mut self.pkru)?;
        Ok(0)
    }

    /// `KVM_GET_XCRS`: XCR0, or no register on a host without XSAVE (C:
    /// `kvm_vcpu_ioctl_x86_get_xcrs()`).
    fn get_xcrs(&self, arg: usize) -> Result<isize> {
        let mut b = [0u8; 392];
        if !x86::boot_cpu_has(x86::Feature::Xsave) {
            UserSlice::new(arg, b.len()).writer().write_slice(&b)?;
            return Ok(0);
        }
        b[0..4].copy_from_slice(&1u32.to_ne_bytes());
        b[8..12].copy_from_slice(&0u32.to_ne_bytes());
        b[16..24].copy_from_slice(&self.xcr0.to_ne_bytes());
        UserSlice::new(arg, b.len()).writer().write_slice(&b)?;
        Ok(0)
    }

    fn set_xcrs(&mut self, arg: usize) -> Result<isize> {
        let mut b = [0u8; 392];
        UserSlice::new(arg, b.len()).reader().read_slice(&mut b)?;
        let nr = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
        let flags = u32::from_ne_bytes([b[4], b[5], b[6], b[7]]);
        if !x86::boot_cpu_has(x86::Feature::Xsave) || nr > 16 || flags != 0 {
            return Err(EINVAL);
        }
        for i in 0..nr as usize {
            let o = 8 + i * 16;
            let xcr = u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
            if xcr == 0 {
                let mut v = [0u8; 8];
                v.copy_from_slice(&b[o + 8..o + 16]);
                let v = u64::from_ne_bytes(v);
                if !self.xcr0_valid(v) {
                    return Err(EINVAL);
                }
                self.xcr0 = v;
                break;
            }
        }
        Ok(0)
    }

    // ---- events and debug registers ----

    fn get_events(&self) -> KvmVcpuEvents {
        let mut e = KvmVcpuEvents::default();
        let exc = match (self.reinject, self.pending_exception) {
            (Some(Event::Exception { vector, error_code }), _) | (None, Some(Event::Exception { vector, error_code })) => {
                Some((vector, error_code))
            }
            _ => None,
        };
        if let Some((v, ec)) = exc {
            e.exc_injected = 1;
            e.exc_nr = v;
            e.exc_has_error_code = u8::from(ec.is_some());
            e.exc_error_code = ec.unwrap_or(0);
        }
        if let Some(Event::Interrupt { vector, soft }) = self.reinject {
            e.irq_injected = 1;
            e.irq_nr = vector;
            e.irq_soft = u8::from(soft);
        }
        if self.hw.interrupt_shadow() {
            e.irq_shadow = 1 | 2;
        }
        e.nmi_injected = u8::from(matches!(self.reinject, Some(Event::Nmi)));
        e.nmi_pending = u8::from(self.nmi_pending);
        e.nmi_masked = u8::from(!self.hw.nmi_allowed() && !self.hw.interrupt_shadow());
        // KVM_VCPUEVENT_VALID_NMI_PENDING | _SHADOW | _SMM
        e.flags = 1 | 4 | 8;
        e
    }

    fn set_events(&mut self, e: &KvmVcpuEvents) -> Result {
        // NMI_PENDING, SIPI_VECTOR, SHADOW, SMM, PAYLOAD, TRIPLE_FAULT.
        if e.flags & !(1 | 2 | 4 | 8 | 16 | 32) != 0 {
            return Err(EINVAL);
        }
        // KVM_CAP_EXCEPTION_PAYLOAD and KVM_CAP_X86_TRIPLE_FAULT_EVENT are
        // not offered: their flags are refused and `exception.pending`
        // ignored, as the C KVM does then.
        if e.flags & (16 | 32) != 0 {
            return Err(EINVAL);
        }
        let mut e = *e;
        e.exc_pending = 0;
        let e = &e;
        // SMM is not supported: only "not in SMM, nothing pending".
        if e.flags & 8 != 0 && (e.smi[0] != 0 || e.smi[1] != 0) {
            return Err(EINVAL);
        }
        if (e.exc_injected != 0 || e.exc_pending != 0) && (e.exc_nr > 31 || e.exc_nr == 2) {
            return Err(EINVAL);
        }
        self.reinject = None;
        self.pending_exception = None;
        if e.exc_injected != 0 {
            self.reinject = Some(Event::Exception {
                vector: e.exc_nr,
                error_code: (e.exc_has_error_code != 0).then_some(e.exc_error_code),
            });
        } else if e.irq_injected != 0 {
            self.reinject = Some(Event::Interrupt { vector: e.irq_nr, soft: e.irq_soft != 0 });
        } else if e.nmi_injected != 0 {
            self.reinject = Some(Event::Nmi);
        }
        if e.flags & 4 != 0 {
            self.hw.set_interrupt_shadow(e.irq_shadow != 0);
        }
        if e.flags & 1 != 0 {
            self.nmi_pending = e.nmi_pending != 0;
        }
        if e.flags & 2 != 0 && self.irqchip() {
            self.sipi_vector = e.sipi_vector as u8;
        }
        Ok(())
    }

    fn get_debugregs(&self) -> KvmDebugRegs {
        KvmDebugRegs { db: self.db, dr6: self.hw.dr6(), dr7: self.hw.dr7(), flags: 0 }
    }

    fn set_debugregs(&mut self, d: &KvmDebugRegs) -> Result {
        if d.flags != 0 || d.dr6 >> 32 != 0 || d.dr7 >> 32 != 0 {
            return Err(EINVAL);
        }
        self.db = d.db;
        self.hw.set_dr6(d.dr6);
        self.hw.set_dr7(d.dr7);
        Ok(())
    }

    // ---- KVM_RUN ----

    /// `vcpu_run()`: enters the guest until something needs user space.
    fn run_loop(&mut self, ctx: &VcpuCtx<'_>) -> Result<isize> {
        if let Some(io) = self.pending_io.take() {
            if let Flow::User = self.complete_io(ctx, io)? {
                return Ok(0);
            }
        }
        if let Some(m) = self.pending_mmio.take() {
            self.complete_mmio(ctx, m);
        }
        if let Some(m) = self.pending_msr.take() {
            self.complete_msr(ctx, m);
        }
        // `immediate_exit`: back to user space at once, leaving `kvm_run` as
        // the last exit left it (the selftests' ucall completion reads it).
        if ctx.run.read_u8(run::IMMEDIATE_EXIT) != 0 {
            return Err(EINTR);
        }
        self.ran = true;
        loop {
            // Signals, rescheduling, rseq and other resume-to-user work
            // (C: `xfer_to_guest_mode_handle_work()`).
            if kernel::smp::xfer_to_guest_work().is_err() {
                ctx.stats.inc(VcpuStat::SignalExits);
                ctx.run.write_u32(run::EXIT_REASON, exit::INTR);
                return Err(EINTR);
            }
            self.drain_posted();
            self.eoi_inject_due();
            self.handle_init_sipi();
            if self.mp_state != mp::RUNNABLE {
                self.block(ctx)?;
                continue;
            }
            self.inject_events(ctx);
            self.hw.prepare_entry();
            let seen = (self.tlb_gen_seen, self.last_cpu);
            let (exit, next) = {
                let irq = IrqDisabled::new();
                let cpu = irq.cpu();
                let k = &self.shared.kicker;
                k.cpu.store(cpu, Ordering::SeqCst);
                k.mode.store(IN_GUEST_MODE, Ordering::SeqCst);
                // A request posted after the checks above, or work for the
                // task that came up meanwhile: handle it first (C:
                // `kvm_vcpu_exit_request()`).
                if kernel::smp::xfer_to_guest_work_pending(&irq) || k.pending.swap(false, Ordering::SeqCst) {
                    k.mode.store(OUTSIDE_GUEST_MODE, Ordering::SeqCst);
                    drop(irq);
                    self.undo_injection();
                    continue;
                }
                let gen = self.vm.tlb_gen.load(Ordering::SeqCst);
                // The guest's XCR0 is loaded whatever its CR4.OSXSAVE: CR4
                // writes are not intercepted, so the guest may set OSXSAVE
                // and use XGETBV/XSAVE without an exit in between. PKRU is
                // switched whenever the host uses protection keys, for the
                // same reason (a guest can set CR4.PKE and run WRPKRU).
                let host_xcr0 = x86::host_xcr0();
                let host_pke = x86::boot_cpu_has(x86::Feature::Ospke);
                let host_pkru = if host_pke { x86::read_pkru() } else { 0 };
                let mut entry = EntryCtx {
                    guest_xcr0: (x86::boot_cpu_has(x86::Feature::Osxsave) && self.xcr0 != host_xcr0)
                        .then_some(self.xcr0),
                    host_xcr0,
                    guest_pkru: host_pke.then_some(self.pkru),
                    host_pkru,
                    exit_xcr0: self.xcr0,
                    exit_pkru: None,
                    tdp_root: self.vm.tdp_root,
                    msr_passthrough: !self.vm.msr_filtered.load(Ordering::SeqCst),
                    flush_tlb: gen != self.tlb_gen_seen || cpu != self.last_cpu,
                };
                self.tlb_gen_seen = gen;
                self.last_cpu = cpu;
                let r = self.hw.run(&irq, &mut entry, &mut self.gprs, &mut self.rip);
                self.shared.kicker.mode.store(OUTSIDE_GUEST_MODE, Ordering::SeqCst);
                if x86::boot_cpu_has(x86::Feature::Osxsave) {
                    self.xcr0 = entry.exit_xcr0;
                }
                if let Some(p) = entry.exit_pkru {
                    self.pkru = p;
                }
                r
            };
            if let Exit::NotEntered = exit {
                // Nothing ran: a flush asked for is still owed, and the
                // event programmed for this entry goes back to be injected.
                (self.tlb_gen_seen, self.last_cpu) = seen;
                self.undo_injection();
                continue;
            }
            // CR8 writes do not exit: the guest's TPR comes back from the
            // hardware (C: `sync_cr8_to_lapic()`).
            let cr8 = u64::from(self.hw.tpr());
            if cr8 != self.lapic.cr8() {
                self.lapic.set_cr8(cr8);
                self.publish_apic();
            }
            self.reinject = self.hw.interrupted_event();
            ctx.stats.inc(VcpuStat::Exits);
            if let Some(stat) = exit_stat(&exit) {
                ctx.stats.inc(stat);
            }
            match self.handle_exit(ctx, exit, next)? {
                Flow::Resume => continue,
                Flow::User => return Ok(0),
            }
        }
    }

    /// An entry was abandoned after an event was programmed: take it back
    /// from the hardware and inject it first on the next attempt, so that a
    /// pending exception programmed meanwhile cannot overwrite it.
    fn undo_injection(&mut self) {
        if let Some(ev) = self.hw.take_injected() {
            debug_assert!(self.reinject.is_none());
            self.reinject = Some(ev);
        }
    }

    /// Skips the instruction that exited: to `next` if the hardware told, else
    /// past the instruction decoded at RIP (no NRIPS under emulation).
    fn skip(&mut self, ctx: &VcpuCtx<'_>, next: Option<u64>) -> Flow {
        self.hw.set_interrupt_shadow(false);
        if let Some(n) = next {
            self.rip = n;
            return Flow::Resume;
        }
        let mode = self.exec_mode();
        match self.insn_len_at_rip(ctx.vm, mode) {
            Some(Ok(len)) => {
                self.rip = self.rip.wrapping_add(len as u64);
                if mode != ExecMode::Long64 {
                    self.rip &= 0xffff_ffff;
                }
                Flow::Resume
            }
            _ => self.emulation_failure(ctx),
        }
    }

    /// `KVM_EXIT_INTERNAL_ERROR` with `KVM_INTERNAL_ERROR_EMULATION`.
    fn emulation_failure(&mut self, ctx: &VcpuCtx<'_>) -> Flow {
        ctx.stats.inc(VcpuStat::InsnEmulationFail);
        ctx.run.write_u32(run::EXIT_REASON, exit::INTERNAL_ERROR);
        ctx.run.write_u32(run::INTERNAL_SUBERROR, internal::EMULATION);
        ctx.run.write_u32(run::INTERNAL_NDATA, 0);
        Flow::User
    }

    fn handle_exit(&mut self, ctx: &VcpuCtx<'_>, exit: Exit, next: Option<u64>) -> Result<Flow> {
        Ok(match exit {
            Exit::Io { port, size, input, string, rep, addr_size, seg } => {
                self.handle_io(ctx, port, size, input, string, rep, addr_size, seg, next)?
            }
            Exit::Cpuid if self.misc_features_enables & MISC_FEATURES_CPUID_FAULT != 0 && self.hw.cpl() > 0 => {
                // CPUID faulting the guest enabled: CPUID above CPL 0 is #GP.
                self.gp();
                Flow::Resume
            }
            Exit::Cpuid => {
                let (f, i) = (self.gprs[gpr::RAX] as u32, self.gprs[gpr::RCX] as u32);
                let mut r = cpuid::lookup(&self.cpuid, f, i);
                cpuid::apply_runtime(&self.cpuid, f, i, &mut r, &self.runtime_state());
                self.gprs[gpr::RAX] = u64::from(r[0]);
                self.gprs[gpr::RBX] = u64::from(r[1]);
                self.gprs[gpr::RCX] = u64::from(r[2]);
                self.gprs[gpr::RDX] = u64::from(r[3]);
                self.skip(ctx, next)
            }
            Exit::Rdmsr => {
                let index = self.gprs[gpr::RCX] as u32;
                let r = if self.vm.msr_allowed(index, false) {
                    self.get_msr(index, false).map_err(Some)
                } else {
                    Err(None)
                };
                match r {
                    Ok(v) => {
                        self.gprs[gpr::RAX] = v & 0xffff_ffff;
                        self.gprs[gpr::RDX] = v >> 32;
                        self.skip(ctx, next)
                    }
                    Err(e) => self.msr_failed(ctx, index, 0, true, e, next),
                }
            }
            Exit::Wrmsr => {
                let index = self.gprs[gpr::RCX] as u32;
                let v = (self.gprs[gpr::RAX] & 0xffff_ffff) | (self.gprs[gpr::RDX] << 32);
                let r = if self.vm.msr_allowed(index, true) {
                    self.set_msr(index, v, false).map_err(Some)
                } else {
                    Err(None)
                };
                match r {
                    Ok(()) => self.skip(ctx, next),
                    Err(e) => self.msr_failed(ctx, index, v, false, e, next),
                }
            }
            Exit::Hlt => {
                let f = self.skip(ctx, next);
                if let Flow::User = f {
                    return Ok(f);
                }
                if self.irqchip() {
                    self.mp_state = mp::HALTED;
                    Flow::Resume
                } else {
                    ctx.run.write_u32(run::EXIT_REASON, exit::HLT);
                    Flow::User
                }
            }
            Exit::Hypercall => {
                // No hypercall is offered (CPUID 0x40000001 is empty): every
                // one fails with -KVM_ENOSYS, or -KVM_EPERM above CPL 0.
                let r = if self.hw.cpl() != 0 { KVM_EPERM } else { KVM_ENOSYS };
                self.gprs[gpr::RAX] = r.wrapping_neg();
                let f = self.skip(ctx, next);
                f
            }
            Exit::Xsetbv => {
                let index = self.gprs[gpr::RCX] as u32;
                let v = (self.gprs[gpr::RAX] & 0xffff_ffff) | (self.gprs[gpr::RDX] << 32);
                if self.hw.cpl() != 0 || index != 0 || !self.xcr0_valid(v) {
                    self.gp();
                    Flow::Resume
                } else {
                    self.xcr0 = v;
                    self.skip(ctx, next)
                }
            }
            Exit::UdInstruction => {
                self.ud();
                Flow::Resume
            }
            Exit::Wbinvd | Exit::Pause => self.skip(ctx, next),
            Exit::Rdpmc => {
                // No PMU is offered.
                self.gp();
                Flow::Resume
            }
            Exit::TdpFault { gpa, write, fetch, present, on_table_walk } => {
                self.handle_tdp_fault(ctx, gpa, write, fetch, present, on_table_walk)?
            }
            // The TPR the guest lowered was synced above; the interrupt it
            // blocked is looked at before the next entry.
            Exit::ExternalInterrupt | Exit::Nmi | Exit::TprBelowThreshold => Flow::Resume,
            // Handled in `run_loop`, never passed here.
            Exit::NotEntered => Flow::Resume,
            Exit::InterruptWindow => {
                if !self.irqchip()
                    && self.user_irq.is_none()
                    && ctx.run.read_u8(run::REQUEST_INTERRUPT_WINDOW) != 0
                {
                    ctx.stats.inc(VcpuStat::RequestIrqExits);
                    ctx.run.write_u32(run::EXIT_REASON, exit::IRQ_WINDOW_OPEN);
                    Flow::User
                } else {
                    Flow::Resume
                }
            }
            Exit::Shutdown => {
                // The VMCB is undefined after a shutdown: INIT the vCPU (C:
                // `shutdown_interception()`), and tell user space.
                self.hw.reset();
                self.reset_gprs();
                self.reinject = None;
                self.pending_exception = None;
                ctx.run.write_u32(run::EXIT_REASON, exit::SHUTDOWN);
                Flow::User
            }
            Exit::Exception { vector, error_code, .. } => {
                self.queue_exception(vector, error_code);
                Flow::Resume
            }
            Exit::DrAccess { dr, write, gpr } => self.handle_dr(ctx, dr, write, gpr, next),
            Exit::CrAccess { cr, op } => self.handle_cr(ctx, cr, op, next),
            Exit::TaskSwitch => self.emulation_failure(ctx),
            Exit::FailedEntry { reason } => {
                ctx.run.write_u32(run::EXIT_REASON, exit::FAIL_ENTRY);
                ctx.run.write_u64(run::FAIL_ENTRY_REASON, reason);
                ctx.run.write_u32(run::FAIL_ENTRY_CPU, self.last_cpu);
                Flow::User
            }
            Exit::Unknown { code, info1, info2 } => {
                // As the C KVM's `vcpu_unimpl()` and VMCB/VMCS dump: the raw
                // exit information goes to the log; user space gets the code.
                pr_err!(
                    "kvm-rs: vCPU {}: unexpected exit {:#x} (info {:#x} {:#x})\n",
                    self.shared.id,
                    code,
                    info1,
                    info2
                );
                ctx.run.write_u32(run::EXIT_REASON, exit::INTERNAL_ERROR);
                ctx.run.write_u32(run::INTERNAL_SUBERROR, internal::UNEXPECTED_EXIT_REASON);
                ctx.run.write_u32(run::INTERNAL_NDATA, 2);
                ctx.run.write_u64(run::INTERNAL_DATA, code);
                ctx.run.write_u64(run::INTERNAL_DATA + 8, u64::from(self.last_cpu));
                Flow::User
            }
        })
    }

    /// A guest RDMSR/WRMSR failed (`None`: the filter denied it): exit to
    /// user space if it asked for this reason (`kvm_msr_user_space()`), else #GP.
    fn msr_failed(
        &mut self,
        ctx: &VcpuCtx<'_>,
        index: u32,
        data: u64,
        read: bool,
        e: Option<MsrErr>,
        next: Option<u64>,
    ) -> Flow {
        use super::msr_filter::{MsrExitReason, UserSpaceMsr};
        let reason = match e {
            None => MsrExitReason::Filter,
            Some(MsrErr::Unsupported) => MsrExitReason::Unknown,
            Some(MsrErr::Invalid) => MsrExitReason::Inval,
        };
        let mask = self.vm.user_space_msr.load(Ordering::Relaxed);
        let wants = UserSpaceMsr::from_cap_arg(u64::from(mask)).map_or(false, |m| m.wants(reason));
        if !wants {
            self.gp();
            return Flow::Resume;
        }
        // The exit needs the next RIP now; without the hardware's, decode.
        let next_rip = match next {
            Some(n) => n,
            None => {
                let rip = self.rip;
                if let Flow::User = self.skip(ctx, None) {
                    return Flow::User;
                }
                core::mem::replace(&mut self.rip, rip)
            }
        };
        let r = ctx.run;
        r.write_u32(run::EXIT_REASON, if read { exit::X86_RDMSR } else { exit::X86_WRMSR });
        r.write_bytes(run::MSR_ERROR, &[0u8; 8]);
        r.write_u32(run::MSR_REASON, reason.bit());
        r.write_u32(run::MSR_INDEX, index);
        r.write_u64(run::MSR_DATA, data);
        self.pending_msr = Some(PendingMsr { read, next_rip });
        Flow::User
    }

    /// User space answered an MSR exit: `msr.error` non-zero is #GP, else a
    /// RDMSR gets `msr.data` (C: `complete_fast_msr_access()`).
    fn complete_msr(&mut self, ctx: &VcpuCtx<'_>, m: PendingMsr) {
        if ctx.run.read_u8(run::MSR_ERROR) != 0 {
            self.gp();
            return;
        }
        if m.read {
            let v = ctx.run.read_u64(run::MSR_DATA);
            self.gprs[gpr::RAX] = v & 0xffff_ffff;
            self.gprs[gpr::RDX] = v >> 32;
        }
        self.rip = m.next_rip;
        self.hw.set_interrupt_shadow(false);
    }

    /// A control-register access the backend intercepted (C: `handle_cr()`
    /// of vmx.c with `kvm_set_cr0()`, `kvm_set_cr4()`, `kvm_set_cr8()`):
    /// checked as the hardware would, then applied; #GP if not allowed.
    fn handle_cr(&mut self, ctx: &VcpuCtx<'_>, cr: u8, op: CrOp, next: Option<u64>) -> Flow {
        let (op, next) = match op {
            CrOp::MovToUndecoded => {
                // Find the source register in the instruction at RIP.
                let mode = self.exec_mode();
                match self.fetch_insn(ctx.vm).and_then(|(b, n)| emulate::decode_mov_cr(&b[..n], mode)) {
                    Some(m) if m.to_cr && m.cr == cr => (CrOp::MovTo(m.gpr), Some(self.rip.wrapping_add(m.len as u64))),
                    _ => return self.emulation_failure(ctx),
                }
            }
            op => (op, next),
        };
        let wide = self.exec_mode() == ExecMode::Long64;
        let narrow = |v: u64| if wide { v } else { v & 0xffff_ffff };
        let ok = match op {
            CrOp::MovTo(gpr) => {
                let v = narrow(self.gprs[usize::from(gpr & 15)]);
                match cr {
                    0 => self.set_cr0_checked(v),
                    3 => {
                        self.hw.set_cr3(v);
                        true
                    }
                    4 => self.set_cr4_checked(v),
                    8 if v >> 4 == 0 => {
                        self.lapic.set_cr8(v);
                        true
                    }
                    _ => false,
                }
            }
            CrOp::MovFrom(gpr) => {
                let v = match cr {
                    0 => self.hw.cr0(),
                    3 => self.hw.cr3(),
                    4 => self.hw.cr4(),
                    8 => self.lapic.cr8(),
                    _ => {
                        self.ud();
                        return Flow::Resume;
                    }
                };
                self.gprs[usize::from(gpr & 15)] = narrow(v);
                true
            }
            CrOp::Clts => {
                let v = self.hw.cr0() & !(1 << 3);
                self.hw.set_cr0(v);
                true
            }
            CrOp::MovToUndecoded => false,
            CrOp::Lmsw(src) => {
                // LMSW loads CR0 bits 3:0 and can set PE but not clear it.
                let old = self.hw.cr0();
                self.set_cr0_checked((old & !0xf) | u64::from(src & 0xf) | (old & cr0::PE))
            }
        };
        if ok {
            self.skip(ctx, next)
        } else {
            self.gp();
            Flow::Resume
        }
    }

    /// `kvm_set_cr0()`: `false` is #GP.
    fn set_cr0_checked(&mut self, v: u64) -> bool {
        const KNOWN: u64 = 0x3f | (1 << 16) | (1 << 18) | (7 << 29);
        if !Self::cr0_valid(v) {
            return false;
        }
        // ET is hardwired to 1; writes to reserved bits are ignored.
        let v = (v | (1 << 4)) & KNOWN;
        let old = self.hw.cr0();
        let efer = self.hw.efer();
        if efer & efer::LME != 0 && old & cr0::PG == 0 && v & cr0::PG != 0 {
            // Entering long mode needs PAE and a CS that is not 64-bit yet.
            if self.hw.cr4() & cr4::PAE == 0 || self.hw.seg(Seg::Cs).l != 0 {
                return false;
            }
        }
        if v & cr0::PG == 0 && (self.exec_mode() == ExecMode::Long64 || self.hw.cr4() & cr4::PCIDE != 0) {
            return false;
        }
        self.hw.set_cr0(v);
        true
    }

    /// `kvm_set_cr4()`: `false` is #GP.
    fn set_cr4_checked(&mut self, v: u64) -> bool {
        let old = self.hw.cr4();
        if v & self.cr4_reserved() != 0 {
            return false;
        }
        if self.hw.efer() & efer::LMA != 0 {
            if v & cr4::PAE == 0 || (v ^ old) & cr4::LA57 != 0 {
                return false;
            }
        }
        // PCIDE only in long mode, with CR3[11:0] = 0.
        if v & cr4::PCIDE != 0 && old & cr4::PCIDE == 0 && (self.hw.cr3() & 0xfff != 0 || self.hw.efer() & efer::LMA == 0) {
            return false;
        }
        self.hw.set_cr4(v);
        true
    }

    /// MOV to/from DRn: the registers are emulated (C: `dr_interception()`).
    fn handle_dr(&mut self, ctx: &VcpuCtx<'_>, dr: u8, write: bool, gpr: Option<u8>, next: Option<u64>) -> Flow {
        if self.hw.cpl() != 0 {
            self.gp();
            return Flow::Resume;
        }
        // Without decode assists, the register is ModRM.rm of 0F 21/23 (with REX.B).
        let reg = match gpr {
            Some(r) => r,
            None => {
                let mode = self.exec_mode();
                match self.fetch_insn(ctx.vm).and_then(|(b, n)| emulate::decode_insn(&b[..n], mode).ok()) {
                    Some(insn) => {
                        let rm = insn.modrm.map_or(0, |m| m & 7);
                        rm | if insn.prefixes.rex_b() { 8 } else { 0 }
                    }
                    None => return self.emulation_failure(ctx),
                }
            }
        };
        let r = usize::from(reg & 15);
        if write {
            let v = self.gprs[r];
            match dr {
                0..=3 => self.db[usize::from(dr)] = v,
                4 | 6 => {
                    if v >> 32 != 0 {
                        self.gp();
                        return Flow::Resume;
                    }
                    self.hw.set_dr6((v & 0xffff_efff) | 0xffff_0ff0);
                }
                _ => {
                    if v >> 32 != 0 {
                        self.gp();
                        return Flow::Resume;
                    }
                    self.hw.set_dr7((v & !0xd000) | 0x400);
                }
            }
        } else {
            self.gprs[r] = match dr {
                0..=3 => self.db[usize::from(dr)],
                4 | 6 => self.hw.dr6(),
                _ => self.hw.dr7(),
            };
        }
        self.skip(ctx, next)
    }

    // ---- port I/O ----

    /// IN/OUT/INS/OUTS: to user space as `KVM_EXIT_IO` (C: `kvm_fast_pio()`
    /// and the emulator's string I/O). String I/O moves up to a page of data
    /// per exit; the rest runs as the instruction is executed again.
    #[allow(clippy::too_many_arguments)]
    fn handle_io(
        &mut self,
        ctx: &VcpuCtx<'_>,
        port: u16,
        size: u8,
        input: bool,
        string: bool,
        rep: bool,
        addr_size: u8,
        seg: Option<Seg>,
        next: Option<u64>,
    ) -> Result<Flow> {
        let next_rip = match next {
            Some(n) => n,
            None => return Ok(self.emulation_failure(ctx)),
        };
        // The in-kernel PIC's ports (and its ELCR).
        if !string && self.irqchip() {
            if let Some(f) = self.pic_io(port, size, input, next_rip) {
                return Ok(f);
            }
        }
        let sio = StringIo { size, addr_size, rep, df: self.hw.rflags() & RFLAGS_DF != 0 };
        let mut count = 1u32;
        let mut mmio_dest = None;
        if string {
            count = match sio.batch(self.gprs[gpr::RCX]) {
                Some(n) => n,
                None => {
                    self.rip = next_rip;
                    return Ok(Flow::Resume);
                }
            };
            // INS writes ES:rDI; OUTS reads DS:rSI (or the override).
            let (seg, index) = if input {
                (Seg::Es, self.gprs[gpr::RDI])
            } else {
                (seg.unwrap_or_else(|| self.outs_segment(ctx.vm)), self.gprs[gpr::RSI])
            };
            // The batch stops where guest RAM does; an item outside it goes
            // alone, through the MMIO path.
            match self.string_ram_items(ctx.vm, &sio, seg, index, count, input) {
                Some(0) if input => {
                    let va = self.linear(seg, index);
                    match self.translate(ctx.vm, va, true, false) {
                        Ok(gpa) if (gpa & 0xfff) + u64::from(size) <= 0x1000 => {
                            count = 1;
                            mmio_dest = Some(gpa);
                        }
                        _ => return Ok(self.emulation_failure(ctx)),
                    }
                }
                // OUTS from MMIO would need an MMIO read exit first: not
                // emulated (KVM_EXIT_INTERNAL_ERROR, as for other MMIO
                // instructions kvm-rs does not emulate).
                Some(0) => return Ok(self.emulation_failure(ctx)),
                Some(n) => count = n,
                // The first item faults: the copy below raises the fault.
                None => {}
            }
            if !input {
                let bytes = count as usize * usize::from(size);
                // A page-sized bounce buffer kept with the vCPU, off the stack.
                let mut buf = core::mem::take(&mut self.io_buf);
                let start = sio.block_start(self.gprs[gpr::RSI], count);
                let linear = self.linear(seg, start);
                let r = self.read_virt(ctx.vm, linear, &mut buf[..bytes]);
                if matches!(r, Ok(true)) {
                    sio.order_items(&mut buf[..bytes], count);
                    ctx.pio.write_bytes(0, &buf[..bytes]);
                }
                self.io_buf = buf;
                if !r? {
                    return Ok(Flow::Resume);
                }
            }
        } else if !input {
            let v = self.gprs[gpr::RAX].to_le_bytes();
            let data = &v[..usize::from(size)];
            // A write into a coalesced PIO zone goes to the ring, no exit.
            if ctx.vm.coalesced_write(u64::from(port), data, true) {
                self.rip = next_rip;
                return Ok(Flow::Resume);
            }
            ctx.pio.write_bytes(0, data);
        }
        ctx.run.write_u32(run::EXIT_REASON, exit::IO);
        ctx.run.write_u8(run::IO_DIRECTION, if input { uapi::KVM_EXIT_IO_IN } else { uapi::KVM_EXIT_IO_OUT });
        ctx.run.write_u8(run::IO_SIZE, size);
        ctx.run.write_u16(run::IO_PORT, port);
        ctx.run.write_u32(run::IO_COUNT, count);
        ctx.run.write_u64(run::IO_DATA_OFFSET, (uapi::KVM_PIO_PAGE_OFFSET * 4096) as u64);
        if input {
            self.pending_io = Some(PendingIo { sio, string, count, mmio_dest, next_rip });
        } else if !string || sio.advance(&mut self.gprs, count, true) {
            // OUT and OUTS are done once the data is out (C:
            // `complete_fast_pio_out()` only moves RIP).
            self.rip = next_rip;
        }
        Ok(Flow::User)
    }

    /// IN/OUT on a port of the in-kernel PIC: done here, `None` if the port
    /// is not the PIC's.
    fn pic_io(&mut self, port: u16, size: u8, input: bool, next_rip: u64) -> Option<Flow> {
        let len = usize::from(size);
        let mut data = [0u8; 4];
        let rax = self.gprs[gpr::RAX];
        if !input {
            data.copy_from_slice(&rax.to_le_bytes()[..4]);
        }
        let intr_ok = self.hw.interrupt_allowed();
        let r = self.vm.with_irqchip(|chip, _| {
            if input {
                chip.pic.pio_read(port, &mut data[..len])
            } else {
                chip.pic.pio_write(port, &data[..len], intr_ok)
            }
        });
        match r {
            Ok(Ok(())) => {
                if input {
                    let v = u64::from(u32::from_le_bytes(data));
                    self.gprs[gpr::RAX] = pio::in_result(rax, size, v);
                }
                self.rip = next_rip;
                Some(Flow::Resume)
            }
            _ => None,
        }
    }

    /// The segment of OUTS without decode assists: DS, or the override
    /// prefix of the instruction at RIP.
    fn outs_segment(&self, vm: &Vm) -> Seg {
        let mode = self.exec_mode();
        let insn = self.fetch_insn(vm).and_then(|(b, n)| emulate::decode_insn(&b[..n], mode).ok());
        match insn.and_then(|i| i.prefixes.seg) {
            Some(emulate::Seg::Es) => Seg::Es,
            Some(emulate::Seg::Cs) => Seg::Cs,
            Some(emulate::Seg::Ss) => Seg::Ss,
            Some(emulate::Seg::Fs) => Seg::Fs,
            Some(emulate::Seg::Gs) => Seg::Gs,
            Some(emulate::Seg::Ds) | None => Seg::Ds,
        }
    }

    /// The user-space half of an IN or INS (C: `complete_fast_pio_in()` and
    /// the emulator's string completion).
    fn complete_io(&mut self, ctx: &VcpuCtx<'_>, io: PendingIo) -> Result<Flow> {
        let size = io.sio.size;
        if !io.string {
            let mut b = [0u8; 8];
            ctx.pio.read_bytes(0, &mut b[..usize::from(size)]);
            self.gprs[gpr::RAX] = pio::in_result(self.gprs[gpr::RAX], size, u64::from_le_bytes(b));
            self.rip = io.next_rip;
            return Ok(Flow::Resume);
        }
        // INS: as many items as rCX still asks for (user space may have
        // changed it), at most what this exit read.
        let want = io.sio.completion(self.gprs[gpr::RCX], io.count);
        if want == 0 {
            self.rip = io.next_rip;
            return Ok(Flow::Resume);
        }
        if let Some(gpa) = io.mmio_dest {
            // One item into MMIO: written like a guest store, complete once
            // it leaves (C: the emulator's MMIO write after the IN).
            let mut data = [0u8; 4];
            let len = usize::from(size).min(4);
            ctx.pio.read_bytes(0, &mut data[..len]);
            if io.sio.advance(&mut self.gprs, 1, false) {
                self.rip = io.next_rip;
            }
            return Ok(self.mmio_store(ctx, gpa, &data[..len]));
        }
        let bytes = want as usize * usize::from(size);
        let mut buf = core::mem::take(&mut self.io_buf);
        ctx.pio.read_bytes(0, &mut buf[..bytes]);
        io.sio.order_items(&mut buf[..bytes], want);
        let start = io.sio.block_start(self.gprs[gpr::RDI], want);
        let linear = self.linear(Seg::Es, start);
        let r = self.write_virt(ctx.vm, linear, &buf[..bytes]);
        self.io_buf = buf;
        if !r? {
            return Ok(Flow::Resume);
        }
        if io.sio.advance(&mut self.gprs, want, false) {
            self.rip = io.next_rip;
        }
        Ok(Flow::Resume)
    }

    /// How many items of a string I/O batch, from the first in the order
    /// the instruction moves them, lie in memory KVM copies directly: guest
    /// RAM (writable, for INS) or a PCI hole (for OUTS). `None` if the first
    /// item's translation faults.
    fn string_ram_items(&self, vm: &Vm, sio: &StringIo, seg: Seg, index: u64, count: u32, write: bool) -> Option<u32> {
        let mut cached: Option<(u64, bool)> = None;
        for i in 0..count {
            let first = self.linear(seg, sio.item_offset(index, i));
            for va in [first, first.wrapping_add(u64::from(sio.size) - 1)] {
                let ok = match cached {
                    Some((page, ok)) if page == va >> 12 => ok,
                    _ => {
                        let ok = match self.translate(vm, va, write, false) {
                            Ok(gpa) => match vm.gfn_to_backing(gpa >> 12) {
                                Some((Backing::User(h), _)) => !(write && h.readonly),
                                Some((Backing::PciHole, _)) => !write,
                                None => false,
                            },
                            Err(_) if i == 0 => return None,
                            Err(_) => false,
                        };
                        cached = Some((va >> 12, ok));
                        ok
                    }
                };
                if !ok {
                    return Some(i);
                }
            }
        }
        Some(count)
    }

    /// A guest store of `data` to `gpa`, which is not RAM: the in-kernel
    /// LAPIC or IOAPIC, a coalesced zone, else `KVM_EXIT_MMIO` (complete
    /// once it exits).
    fn mmio_store(&mut self, ctx: &VcpuCtx<'_>, gpa: u64, data: &[u8]) -> Flow {
        if self.irqchip() && self.lapic.mmio_in_range(gpa) && self.lapic.xapic_mmio_active() {
            let off = (gpa - self.lapic.base_address()) as u32;
            let a = self.lapic.mmio_write(off, data, now_ns()).unwrap_or(None);
            self.lapic_action(a);
            return Flow::Resume;
        }
        if self.irqchip() {
            let r = self.vm.with_irqchip(|chip, bus| chip.ioapic.mmio_write(gpa, data, bus).map(|_| ()));
            if let Ok(Ok(())) = r {
                return Flow::Resume;
            }
        }
        // A write into a coalesced MMIO zone goes to the ring, no exit.
        if ctx.vm.coalesced_write(gpa, data, false) {
            return Flow::Resume;
        }
        let mut buf = [0u8; 8];
        let len = data.len().min(8);
        buf[..len].copy_from_slice(&data[..len]);
        ctx.run.write_u32(run::EXIT_REASON, exit::MMIO);
        ctx.run.write_u64(run::MMIO_PHYS_ADDR, gpa);
        ctx.run.write_u32(run::MMIO_LEN, len as u32);
        ctx.run.write_u8(run::MMIO_IS_WRITE, 1);
        ctx.run.write_bytes(run::MMIO_DATA, &buf);
        ctx.stats.inc(VcpuStat::MmioExits);
        Flow::User
    }

    // ---- nested page faults and MMIO ----

    fn handle_tdp_fault(
        &mut self,
        ctx: &VcpuCtx<'_>,
        gpa: u64,
        write: bool,
        fetch: bool,
        present: bool,
        _on_table_walk: bool,
    ) -> Result<Flow> {
        let gfn = gpa >> 12;
        let (hva, gen) = match ctx.vm.gfn_to_backing(gfn) {
            Some((Backing::User(hva), gen)) if !(write && hva.readonly) => {
                // A write to a page write-protected for dirty logging: only
                // the permission comes back (C: `fast_page_fault()`).
                if write && present {
                    let done = {
                        let mut tdp = self.vm.tdp.lock();
                        ctx.vm.mem_generation() == gen && tdp.make_writable(&*self.vm.backend, gfn)
                    };
                    if done {
                        ctx.stats.inc(VcpuStat::PfFixed);
                        if hva.log_dirty {
                            ctx.vm.mark_dirty(gfn);
                        }
                        return Ok(Flow::Resume);
                    }
                }
                (hva, gen)
            }
            Some((Backing::PciHole, gen)) if !write && !fetch => {
                // Reads of a PCI hole: map the all-ones page read-only, so
                // that they never exit; writes fault and exit as MMIO.
                let mut tdp = self.vm.tdp.lock();
                if ctx.vm.mem_generation() == gen {
                    let old = tdp.map_ones(&*self.vm.backend, gfn, self.vm.ones_page.phys_addr())?;
                    drop(tdp);
                    if old.is_some() {
                        self.vm.flush_remote_tlbs();
                    }
                }
                return Ok(Flow::Resume);
            }
            _ => {
                if fetch {
                    // Executing from MMIO cannot be emulated.
                    return Ok(self.emulation_failure(ctx));
                }
                return self.handle_mmio(ctx, gpa);
            }
        };
        // Pin the page, for writing if the slot and the user mapping allow
        // (so that the pinned page is the process's own, never a shared
        // zero or copy-on-write page). In a slot logging dirty pages it is
        // mapped writable only on a write, which is then recorded.
        let (page, mut writable) = if hva.readonly {
            (PinnedPage::pin_current(hva.addr as usize, false)?, false)
        } else {
            match PinnedPage::pin_current(hva.addr as usize, true) {
                Ok(p) => (p, true),
                Err(e) if e == EFAULT && !write => (PinnedPage::pin_current(hva.addr as usize, false)?, false),
                Err(e) => return Err(e),
            }
        };
        if hva.log_dirty && !write {
            writable = false;
        }
        let replaced = {
            let mut tdp = self.vm.tdp.lock();
            if ctx.vm.mem_generation() != gen {
                // The slot changed meanwhile: fault again.
                return Ok(Flow::Resume);
            }
            let r = tdp.map(&*self.vm.backend, gfn, page, writable)?;
            ctx.stats.inc(VcpuStat::PfFixed);
            r
        };
        // Marked once the writable mapping is in, as C does: a
        // `KVM_GET_DIRTY_LOG` in between write-protects it again and the
        // page shows up in the next log.
        if hva.log_dirty && writable {
            ctx.vm.mark_dirty(gfn);
        }
        if replaced.is_some() {
            // Another vCPU mapped it too; release the old page only after no
            // TLB can hold it.
            self.vm.flush_remote_tlbs();
            drop(replaced);
        }
        Ok(Flow::Resume)
    }

    /// An access to guest-physical memory with no slot behind it (or a write
    /// to a read-only slot): emulated in the kernel for the LAPIC page, else
    /// `KVM_EXIT_MMIO` (C: the emulator's MMIO path).
    fn handle_mmio(&mut self, ctx: &VcpuCtx<'_>, gpa: u64) -> Result<Flow> {
        let mode = self.exec_mode();
        let Some((bytes, n)) = self.fetch_insn(ctx.vm) else {
            return Ok(self.emulation_failure(ctx));
        };
        let insn = match emulate::decode_mmio(&bytes[..n], mode) {
            Ok(i) if !(i.string && i.rep) => i,
            _ => return Ok(self.emulation_failure(ctx)),
        };
        let (size, is_write) = match insn.op {
            MmioOp::Load { size, .. } => (size, false),
            MmioOp::Store { size, .. } => (size, true),
        };
        // An access that crosses out of the page is not emulated.
        if (gpa & 0xfff) + u64::from(size) > 0x1000 {
            return Ok(self.emulation_failure(ctx));
        }
        ctx.stats.inc(VcpuStat::InsnEmulation);
        let next_rip = self.rip.wrapping_add(insn.len as u64);
        let df = self.hw.rflags() & RFLAGS_DF != 0;
        let len = usize::from(size);
        if is_write {
            // The store is done as far as the guest is concerned.
            let v = emulate::store_value(&self.gprs, &insn.op).to_le_bytes();
            emulate::string_advance(&mut self.gprs, &insn, df);
            self.rip = next_rip;
            self.hw.set_interrupt_shadow(false);
            return Ok(self.mmio_store(ctx, gpa, &v[..len]));
        }
        let mut v = [0u8; 8];
        let mut done = false;
        if self.irqchip() && self.lapic.mmio_in_range(gpa) && self.lapic.xapic_mmio_active() {
            let off = (gpa - self.lapic.base_address()) as u32;
            let _ = self.lapic.mmio_read(off, &mut v[..len], now_ns());
            done = true;
        } else if self.irqchip() {
            let r = self.vm.with_irqchip(|chip, _| chip.ioapic.mmio_read(gpa, &mut v[..len]));
            done = matches!(r, Ok(Ok(())));
        }
        if done {
            emulate::complete_load(&mut self.gprs, &insn.op, u64::from_le_bytes(v));
            emulate::string_advance(&mut self.gprs, &insn, df);
            self.rip = next_rip;
            self.hw.set_interrupt_shadow(false);
            return Ok(Flow::Resume);
        }
        ctx.run.write_u32(run::EXIT_REASON, exit::MMIO);
        ctx.run.write_u64(run::MMIO_PHYS_ADDR, gpa);
        ctx.run.write_u32(run::MMIO_LEN, u32::from(size));
        ctx.run.write_u8(run::MMIO_IS_WRITE, 0);
        ctx.run.write_bytes(run::MMIO_DATA, &[0u8; 8]);
        self.pending_mmio = Some(PendingMmio { insn, len: u32::from(size), next_rip });
        ctx.stats.inc(VcpuStat::MmioExits);
        Ok(Flow::User)
    }

    /// The user-space half of an MMIO read.
    fn complete_mmio(&mut self, ctx: &VcpuCtx<'_>, m: PendingMmio) {
        let mut data = [0u8; 8];
        ctx.run.read_bytes(run::MMIO_DATA, &mut data[..m.len as usize]);
        emulate::complete_load(&mut self.gprs, &m.insn.op, u64::from_le_bytes(data));
        let df = self.hw.rflags() & RFLAGS_DF != 0;
        emulate::string_advance(&mut self.gprs, &m.insn, df);
        self.rip = m.next_rip;
        self.hw.set_interrupt_shadow(false);
    }

    /// The fields of `kvm_run` every exit reports (C: `post_kvm_run_save()`).
    fn post_run_save(&self, ctx: &VcpuCtx<'_>) {
        let r = ctx.run;
        r.write_u8(run::IF_FLAG, u8::from(self.hw.rflags() & RFLAGS_IF != 0));
        r.write_u64(run::CR8, self.lapic.cr8());
        r.write_u64(run::APIC_BASE, self.lapic.apic_base());
        let ready = if self.irqchip() {
            true
        } else {
            self.user_irq.is_none() && self.hw.interrupt_allowed()
        };
        r.write_u8(run::READY_FOR_INTERRUPT_INJECTION, u8::from(ready));
        r.write_u16(run::FLAGS, 0);
    }
}

/// The per-reason counter of an exit, if it has one.
fn exit_stat(exit: &Exit) -> Option<VcpuStat> {
    Some(match exit {
        Exit::Io { .. } => VcpuStat::IoExits,
        Exit::Cpuid => VcpuStat::CpuidExits,
        Exit::Rdmsr | Exit::Wrmsr => VcpuStat::MsrExits,
        Exit::Hlt => VcpuStat::HaltExits,
        Exit::Hypercall => VcpuStat::Hypercalls,
        Exit::TdpFault { .. } => VcpuStat::NptFaults,
        Exit::ExternalInterrupt => VcpuStat::IrqExits,
        Exit::InterruptWindow => VcpuStat::IrqWindowExits,
        Exit::Xsetbv
        | Exit::UdInstruction
        | Exit::Wbinvd
        | Exit::Pause
        | Exit::Rdpmc
        | Exit::Nmi
        | Exit::Shutdown
        | Exit::Exception { .. }
        | Exit::DrAccess { .. }
        | Exit::CrAccess { .. }
        | Exit::TprBelowThreshold
        | Exit::NotEntered
        | Exit::TaskSwitch
        | Exit::FailedEntry { .. }
        | Exit::Unknown { .. } => return None,
    })
}

/// Reads a fixed-size ioctl argument.
fn read_arg<const N: usize>(arg: usize) -> Result<[u8; N]> {
    let mut b = [0u8; N];
    UserSlice::new(arg, N).reader().read_slice(&mut b)?;
    Ok(b)
}

/// Writes a fixed-size ioctl result.
fn write_arg(arg: usize, b: &[u8]) -> Result<isize> {
    UserSlice::new(arg, b.len()).writer().write_slice(b)?;
    Ok(0)
}

/// `KVM_SYNC_X86_*`: the state `kvm_run.s.regs` carries.
const KVM_SYNC_X86_REGS: u64 = 1;
const KVM_SYNC_X86_SREGS: u64 = 2;
const KVM_SYNC_X86_EVENTS: u64 = 4;
/// `KVM_SYNC_X86_VALID_FIELDS`, also `KVM_CHECK_EXTENSION(KVM_CAP_SYNC_REGS)`.
pub(crate) const KVM_SYNC_X86_VALID_FIELDS: u64 = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS | KVM_SYNC_X86_EVENTS;
/// Offsets of `struct kvm_sync_regs` in `kvm_run`.
const SYNC_REGS_OFF: usize = run::SYNC_REGS;
const SYNC_SREGS_OFF: usize = SYNC_REGS_OFF + KvmRegs::SIZE;
const SYNC_EVENTS_OFF: usize = SYNC_SREGS_OFF + KvmSregs::SIZE;

impl<B: Backend> X86Vcpu<B> {
    /// `sync_regs()`: applies the state user space marked dirty in
    /// `kvm_run`. Each struct is copied out of the shared page once, then
    /// checked and applied, so a racing writer cannot change it halfway.
    fn sync_regs(&mut self, ctx: &VcpuCtx<'_>, dirty: u64) -> Result {
        if dirty & KVM_SYNC_X86_REGS != 0 {
            let mut b = [0u8; KvmRegs::SIZE];
            ctx.run.read_bytes(SYNC_REGS_OFF, &mut b);
            self.set_regs(&KvmRegs::from_bytes(&b));
        }
        if dirty & KVM_SYNC_X86_SREGS != 0 {
            let mut b = [0u8; KvmSregs::SIZE];
            ctx.run.read_bytes(SYNC_SREGS_OFF, &mut b);
            self.set_sregs(&KvmSregs::from_bytes(&b)).map_err(|_| EINVAL)?;
        }
        if dirty & KVM_SYNC_X86_EVENTS != 0 {
            let mut b = [0u8; KvmVcpuEvents::SIZE];
            ctx.run.read_bytes(SYNC_EVENTS_OFF, &mut b);
            self.set_events(&KvmVcpuEvents::from_bytes(&b))?;
        }
        // The C KVM clears the bits it consumed.
        ctx.run.write_u64(run::KVM_DIRTY_REGS, 0);
        Ok(())
    }

    /// `store_regs()`: copies the state user space asked for into `kvm_run`.
    fn store_regs(&self, ctx: &VcpuCtx<'_>, valid: u64) {
        if valid & KVM_SYNC_X86_REGS != 0 {
            ctx.run.write_bytes(SYNC_REGS_OFF, &self.get_regs().to_bytes());
        }
        if valid & KVM_SYNC_X86_SREGS != 0 {
            ctx.run.write_bytes(SYNC_SREGS_OFF, &self.get_sregs().to_bytes());
        }
        if valid & KVM_SYNC_X86_EVENTS != 0 {
            ctx.run.write_bytes(SYNC_EVENTS_OFF, &self.get_events().to_bytes());
        }
    }

    /// `KVM_TRANSLATE`: a supervisor translation of a linear address.
    fn translate_ioctl(&self, ctx: &VcpuCtx<'_>, arg: usize) -> Result<isize> {
        let b: [u8; 24] = read_arg(arg)?;
        let la = u64::from_ne_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        let mut out = [0u8; 24];
        out[0..8].copy_from_slice(&la.to_ne_bytes());
        let access = Access { write: false, fetch: false, user: false, smap_override: true };
        match paging_tmpl::translate(&mut WalkMem::new(ctx.vm), &self.paging_ctx(), la, access) {
            Ok(t) => {
                out[8..16].copy_from_slice(&t.gpa.to_ne_bytes());
                out[16] = 1; // valid
                out[17] = 1; // writeable, as the C KVM reports
            }
            Err(_) => out[8..16].copy_from_slice(&u64::MAX.to_ne_bytes()),
        }
        write_arg(arg, &out)
    }
}

impl<B: Backend> X86Vcpu<B> {
    /// `KVM_GET_LAPIC` (kept out of the ioctl dispatcher: its buffer would
    /// otherwise sit in that frame for every ioctl).
    #[inline(never)]
    fn get_lapic(&self, arg: usize) -> Result<isize> {
        if !self.irqchip() {
            return Err(EINVAL);
        }
        let st = self.lapic.get_state(now_ns(), &self.vm.lapic_flags()).map_err(crate::kvm_main::err)?;
        write_arg(arg, &st)
    }

    /// `KVM_SET_LAPIC`.
    #[inline(never)]
    fn set_lapic(&mut self, arg: usize) -> Result<isize> {
        if !self.irqchip() {
            return Err(EINVAL);
        }
        let st: [u8; lapic::KVM_APIC_REG_SIZE] = read_arg(arg)?;
        self.lapic.set_state(&st, now_ns(), &self.vm.lapic_flags()).map_err(crate::kvm_main::err)?;
        self.sync_timer();
        Ok(0)
    }
}

impl<B: Backend> ArchVcpu for X86Vcpu<B> {
    fn run(&mut self, ctx: &VcpuCtx<'_>) -> Result<isize> {
        ctx.run.write_u16(run::FLAGS, 0);
        // Read once: user space may change them while KVM_RUN runs.
        let valid = ctx.run.read_u64(run::KVM_VALID_REGS);
        let dirty = ctx.run.read_u64(run::KVM_DIRTY_REGS);
        let r = if (valid | dirty) & !KVM_SYNC_X86_VALID_FIELDS != 0 {
            Err(EINVAL)
        } else if dirty != 0 {
            self.sync_regs(ctx, dirty)
        } else {
            Ok(())
        };
        // Without an in-kernel LAPIC, user space owns the TPR and passes it
        // in `kvm_run->cr8` (C: `kvm_set_cr8()` at KVM_RUN).
        let r = r.and_then(|()| {
            if self.irqchip() {
                return Ok(());
            }
            let cr8 = ctx.run.read_u64(run::CR8);
            if cr8 > 15 {
                return Err(EINVAL);
            }
            self.lapic.set_cr8(cr8);
            Ok(())
        });
        let r = r.and_then(|()| {
            self.hw.vcpu_load();
            self.fpu.swap_in();
            let r = self.run_loop(ctx);
            self.fpu.swap_out();
            r
        });
        if valid != 0 {
            self.store_regs(ctx, valid);
        }
        self.post_run_save(ctx);
        r
    }

    fn ioctl(&mut self, ctx: &VcpuCtx<'_>, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            ioc::KVM_GET_REGS => write_arg(arg, &self.get_regs().to_bytes()),
            ioc::KVM_SET_REGS => {
                let r = KvmRegs::from_bytes(&read_arg(arg)?);
                self.set_regs(&r);
                Ok(0)
            }
            ioc::KVM_GET_SREGS => write_arg(arg, &self.get_sregs().to_bytes()),
            ioc::KVM_SET_SREGS => {
                let s = KvmSregs::from_bytes(&read_arg(arg)?);
                self.set_sregs(&s)?;
                Ok(0)
            }
            ioc::KVM_GET_FPU => write_arg(arg, &self.get_fpu().to_bytes()),
            ioc::KVM_SET_FPU => {
                let f = KvmFpu::from_bytes(&read_arg(arg)?);
                self.set_fpu(&f)?;
                Ok(0)
            }
            ioc::KVM_SET_CPUID2 => self.set_cpuid2(arg),
            ioc::KVM_GET_CPUID2 => self.get_cpuid2(arg),
            ioc::KVM_GET_MSRS => self.msrs_ioctl(arg, false),
            ioc::KVM_SET_MSRS => self.msrs_ioctl(arg, true),
            ioc::KVM_GET_MP_STATE => {
                // Latched INIT and SIPI take effect first (C:
                // `kvm_apic_accept_events()`).
                if self.irqchip() {
                    self.drain_posted();
                    self.handle_init_sipi();
                }
                write_arg(arg, &self.mp_state.to_ne_bytes())
            }
            ioc::KVM_SET_MP_STATE => {
                let s = u32::from_ne_bytes(read_arg(arg)?);
                match s {
                    mp::RUNNABLE => {}
                    mp::UNINITIALIZED
                    | mp::INIT_RECEIVED
                    | mp::HALTED
                    | mp::SIPI_RECEIVED
                    | mp::AP_RESET_HOLD
                        if self.irqchip() => {}
                    _ => return Err(EINVAL),
                }
                if s == mp::SIPI_RECEIVED {
                    // Waiting for SIPI with one latched, to the last vector
                    // the LAPIC received or user space set.
                    self.mp_state = mp::INIT_RECEIVED;
                    self.lapic.latch_sipi(self.sipi_vector);
                } else {
                    self.mp_state = s;
                }
                Ok(0)
            }
            ioc::KVM_GET_XSAVE => self.get_xsave(arg, KVM_XSAVE_SIZE),
            ioc::KVM_GET_XSAVE2 => self.get_xsave(arg, self.fpu.uabi_size().max(KVM_XSAVE_SIZE)),
            ioc::KVM_SET_XSAVE => self.set_xsave(arg),
            ioc::KVM_GET_XCRS => self.get_xcrs(arg),
            ioc::KVM_SET_XCRS => self.set_xcrs(arg),
            ioc::KVM_GET_VCPU_EVENTS => write_arg(arg, &self.get_events().to_bytes()),
            ioc::KVM_SET_VCPU_EVENTS => {
                let e = KvmVcpuEvents::from_bytes(&read_arg(arg)?);
                self.set_events(&e)?;
                Ok(0)
            }
            ioc::KVM_GET_DEBUGREGS => write_arg(arg, &self.get_debugregs().to_bytes()),
            ioc::KVM_SET_DEBUGREGS => {
                let d = KvmDebugRegs::from_bytes(&read_arg(arg)?);
                self.set_debugregs(&d)?;
                Ok(0)
            }
            ioc::KVM_GET_TSC_KHZ => Ok(self.vm.tsc_khz.load(Ordering::Relaxed) as isize),
            ioc::KVM_INTERRUPT => {
                let v = u32::from_ne_bytes(read_arg(arg)?);
                if v >= 256 {
                    return Err(EINVAL);
                }
                if self.irqchip() {
                    return Err(ENXIO);
                }
                self.user_irq = Some(v as u8);
                Ok(0)
            }
            ioc::KVM_GET_LAPIC => self.get_lapic(arg),
            ioc::KVM_SET_LAPIC => self.set_lapic(arg),
            ioc::KVM_TRANSLATE => self.translate_ioctl(ctx, arg),
            ioc::KVM_NMI => {
                self.nmi_pending = true;
                Ok(0)
            }
            _ => {
                let _ = ctx;
                // `kvm_arch_vcpu_ioctl()`'s answer to what it does not know.
                Err(EINVAL)
            }
        }
    }
}
