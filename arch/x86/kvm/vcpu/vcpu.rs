// SPDX-License-Identifier: GPL-2.0

//! The x86 vCPU (`struct kvm_vcpu_arch` and the vCPU half of
//! `arch/x86/kvm/x86.c`): register state and its ioctls, `KVM_RUN`'s loop,
//! and the handling of every exit the backends decode, the same for SVM and
//! VMX.
//!
//! This file holds the vCPU's state, its creation and reset
//! (`kvm_arch_vcpu_create()`, `kvm_vcpu_reset()`), its TSC offset and the
//! definitions its parts share. Each part is a child module, one concept
//! each, as listed below.

use crate::halt_poll::HaltPoll;
use crate::x86::mce::Mce;
use super::backend::{Backend, Event, VendorVcpu};
use super::cpuid::{self, feature, CpuidEntry};
use super::lapic::{self, HostTimer, Lapic, LapicConfig};
use super::msrs::{MISC_ENABLE_RESET, PLATFORM_INFO_CPUID_FAULT};
use super::pio;
use super::regs::gpr;
use super::{VcpuShared, X86VmShared};
use core::sync::atomic::Ordering;
use io::{PendingIo, PendingMmio};
use kernel::{fpu::GuestFpu, prelude::*, sync::Arc, x86};
use msr::PendingMsr;
use walk::WalkCaps;
use xsave::XFEATURE_FP;

pub(crate) use ioctl::KVM_SYNC_X86_VALID_FIELDS;
pub(crate) use xsave::xsave2_size;

/// The vCPU's side of the in-kernel LAPIC: timer, posted interrupts,
/// INIT/SIPI, IPIs, EOIs (`lapic.c`).
#[path = "apic.rs"]
mod apic;
/// Control and debug registers: CR0/CR4 checks, MOV CR/DR exits (`x86.c`,
/// `svm.c`, `vmx.c`).
#[path = "cr.rs"]
mod cr;
/// Event injection and HLT blocking (`x86.c`, `kvm_main.c`).
#[path = "events.rs"]
mod events;
/// Port I/O and MMIO emulation and their completion (`x86.c`, `emulate.c`).
#[path = "io.rs"]
mod io;
/// `KVM_RUN` and the other vCPU ioctls (`x86.c`, `cpuid.c`).
#[path = "ioctl.rs"]
mod ioctl;
/// MSR accesses and MSR exits to user space (`x86.c`).
#[path = "msr.rs"]
mod msr;
/// Nested page faults (`mmu/mmu.c`).
#[path = "page_fault.rs"]
mod page_fault;
/// The run loop and the exit dispatch (`x86.c`).
#[path = "run.rs"]
mod run;
/// Guest page walks and the instruction at RIP (`x86.c`, `emulate.c`).
#[path = "walk.rs"]
mod walk;
/// FPU, XSAVE and XCR0 state (`x86.c`).
#[path = "xsave.rs"]
mod xsave;

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
    pub(super) const MCE: u64 = 1 << 6;
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

/// What an exit handler wants next.
enum Flow {
    /// Enter the guest again.
    Resume,
    /// Return to user space; `kvm_run` says why.
    User,
}

/// Host time in nanoseconds, for the LAPIC timer registers.
fn now_ns() -> u64 {
    kernel::time::Ktime::ktime_get().to_ns() as u64
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
    /// Machine-check banks and MSRs (boxed: 1.3 KB).
    mce: KBox<Mce>,
    /// `KVM_X86_SET_MCE` made a triple fault: the next `KVM_RUN` returns
    /// `KVM_EXIT_SHUTDOWN` (C: `KVM_REQ_TRIPLE_FAULT`).
    triple_fault: bool,
    mp_state: u32,
    tsc_offset: u64,
    tsc_adjust: u64,
    misc_enable: u64,
    power_ctl: u64,
    misc_features_enables: u64,
    /// `IA32_FEATURE_CONTROL`, when the backend offers it: 0 at creation,
    /// kept across INIT and RESET (C: `msr_ia32_feature_control`).
    feat_ctl: u64,
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
    /// The host's XCR0 (0 without CR4.OSXSAVE) and whether it uses
    /// protection keys: fixed once the kernel booted, so read once here
    /// rather than before every entry (C: `kvm_host.xcr0`).
    host_xcr0: u64,
    host_pke: bool,
    /// The last SIPI vector (C: `apic->sipi_vector`).
    sipi_vector: u8,
    /// User space has set a CPUID table.
    cpuid_set: bool,
    /// The halt-polling window (C: `vcpu->halt_poll_ns`).
    halt_poll: HaltPoll,
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
            mce: KBox::new(Mce::new(), GFP_KERNEL_ACCOUNT)?,
            triple_fault: false,
            mp_state: if !irqchip || id == 0 { mp::RUNNABLE } else { mp::UNINITIALIZED },
            tsc_offset: 0,
            tsc_adjust: 0,
            misc_enable: MISC_ENABLE_RESET,
            power_ctl: 0,
            misc_features_enables: 0,
            feat_ctl: 0,
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
            host_xcr0: x86::host_xcr0(),
            host_pke: x86::boot_cpu_has(x86::Feature::Ospke),
            sipi_vector: 0,
            cpuid_set: false,
            halt_poll: HaltPoll::new(),
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

    fn runtime_state(&self) -> cpuid::RuntimeState {
        cpuid::RuntimeState { cr4: self.hw.cr4(), xcr0: self.xcr0, apic_enabled: self.lapic.hw_enabled() }
    }
}
