// SPDX-License-Identifier: GPL-2.0

//! x86 common code (`arch/x86/kvm/x86.c`): the [`Arch`] of the core, the x86
//! part of a VM, the choice of the vendor backend at module load, and the
//! system ioctls of `/dev/kvm` that are x86's.

use crate::binary_stats::VmStats;
use crate::kvm_main::{err, Arch, ArchVcpu, ArchVm, Vm};
use crate::memslots::Change;
use crate::stats::VmStat;
use crate::uapi::{self, errno, KvmEnableCap};
use backend::Backend;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use cpuid::{CpuidEntry, HostCpuid};
use kernel::{
    hrtimer::{HrTimer, HrTimerCallback},
    hwmem::HwBox,
    new_mutex, new_waitqueue,
    prelude::*,
    smp,
    sync::{Arc, Mutex},
    uaccess::UserSlice,
    user_mem::PinnedPage,
    waitqueue::{send_reschedule, WaitQueue},
    x86,
};
use mmu::tdp_mmu::Tdp;
use msr_filter::{KvmMsrFilter, MsrFilter};

#[path = "backend.rs"]
pub(crate) mod backend;
#[path = "cpuid.rs"]
pub(crate) mod cpuid;
#[path = "emulate.rs"]
pub(crate) mod emulate;
#[path = "i8259.rs"]
pub(crate) mod i8259;
#[path = "ioapic.rs"]
pub(crate) mod ioapic;
#[path = "irq.rs"]
pub(crate) mod irq;
#[path = "irq_comm.rs"]
pub(crate) mod irq_comm;
#[path = "lapic.rs"]
pub(crate) mod lapic;
#[path = "mce.rs"]
pub(crate) mod mce;
#[path = "msr_filter.rs"]
pub(crate) mod msr_filter;
#[path = "msrs.rs"]
pub(crate) mod msrs;
#[path = "pio.rs"]
pub(crate) mod pio;
#[path = "regs.rs"]
pub(crate) mod regs;
#[path = "svm/svm.rs"]
mod svm;
#[path = "vcpu/vcpu.rs"]
mod vcpu;
#[path = "vmx/vmx.rs"]
mod vmx;

// The register structs' encodings (regs.rs, core-only) against the tree's
// uapi bindings: a layout change there fails the build here.
const _: () = {
    use core::mem::size_of;
    use kernel::uapi as u;
    assert!(regs::KvmRegs::SIZE == size_of::<u::kvm_regs>());
    assert!(regs::KvmSregs::SIZE == size_of::<u::kvm_sregs>());
    assert!(regs::KvmDebugRegs::SIZE == size_of::<u::kvm_debugregs>());
    assert!(regs::KvmFpu::SIZE == size_of::<u::kvm_fpu>());
    assert!(regs::KvmVcpuEvents::SIZE == size_of::<u::kvm_vcpu_events>());
    assert!(mce::KvmX86Mce::SIZE == size_of::<u::kvm_x86_mce>());
    assert!(ioc::KVM_CAP_MCE == u::KVM_CAP_MCE as i64);
};

/// The MMU.
pub(crate) mod mmu {
    #[path = "paging_tmpl.rs"]
    pub(crate) mod paging_tmpl;
    #[path = "tdp_mmu.rs"]
    pub(crate) mod tdp_mmu;
}

/// x86 ioctl numbers and capabilities handled here.
pub(crate) mod ioc {
    use crate::uapi::{io, ior, iow, iowr};
    /// `KVM_GET_MSR_INDEX_LIST`.
    pub(crate) const KVM_GET_MSR_INDEX_LIST: u32 = iowr(0x02, 4);
    /// `KVM_GET_MSR_FEATURE_INDEX_LIST`.
    pub(crate) const KVM_GET_MSR_FEATURE_INDEX_LIST: u32 = iowr(0x0a, 4);
    /// `KVM_GET_MSRS` (vCPU, or `/dev/kvm` for feature MSRs).
    pub(crate) const KVM_GET_MSRS: u32 = iowr(0x88, 8);
    /// `KVM_SET_MSRS`.
    pub(crate) const KVM_SET_MSRS: u32 = iow(0x89, 8);
    /// `KVM_CREATE_IRQCHIP`.
    pub(crate) const KVM_CREATE_IRQCHIP: u32 = io(0x60);
    /// `KVM_GET_TSC_KHZ` (VM and vCPU).
    pub(crate) const KVM_GET_TSC_KHZ: u32 = io(0xa3);
    /// `KVM_SET_TSS_ADDR`.
    pub(crate) const KVM_SET_TSS_ADDR: u32 = io(0x47);
    /// `KVM_SET_IDENTITY_MAP_ADDR`.
    pub(crate) const KVM_SET_IDENTITY_MAP_ADDR: u32 = iow(0x48, 8);
    /// `KVM_GET_REGS`.
    pub(crate) const KVM_GET_REGS: u32 = ior(0x81, 144);
    /// `KVM_SET_REGS`.
    pub(crate) const KVM_SET_REGS: u32 = iow(0x82, 144);
    /// `KVM_GET_SREGS`.
    pub(crate) const KVM_GET_SREGS: u32 = ior(0x83, 312);
    /// `KVM_SET_SREGS`.
    pub(crate) const KVM_SET_SREGS: u32 = iow(0x84, 312);
    /// `KVM_GET_FPU`.
    pub(crate) const KVM_GET_FPU: u32 = ior(0x8c, 416);
    /// `KVM_SET_FPU`.
    pub(crate) const KVM_SET_FPU: u32 = iow(0x8d, 416);
    /// `KVM_SET_CPUID2`.
    pub(crate) const KVM_SET_CPUID2: u32 = iow(0x90, 8);
    /// `KVM_GET_CPUID2`.
    pub(crate) const KVM_GET_CPUID2: u32 = iowr(0x91, 8);
    /// `KVM_GET_MP_STATE`.
    pub(crate) const KVM_GET_MP_STATE: u32 = ior(0x98, 4);
    /// `KVM_SET_MP_STATE`.
    pub(crate) const KVM_SET_MP_STATE: u32 = iow(0x99, 4);
    /// `KVM_GET_VCPU_EVENTS`.
    pub(crate) const KVM_GET_VCPU_EVENTS: u32 = ior(0x9f, 64);
    /// `KVM_SET_VCPU_EVENTS`.
    pub(crate) const KVM_SET_VCPU_EVENTS: u32 = iow(0xa0, 64);
    /// `KVM_GET_DEBUGREGS`.
    pub(crate) const KVM_GET_DEBUGREGS: u32 = ior(0xa1, 128);
    /// `KVM_SET_DEBUGREGS`.
    pub(crate) const KVM_SET_DEBUGREGS: u32 = iow(0xa2, 128);
    /// `KVM_GET_XSAVE`.
    pub(crate) const KVM_GET_XSAVE: u32 = ior(0xa4, 4096);
    /// `KVM_SET_XSAVE`.
    pub(crate) const KVM_SET_XSAVE: u32 = iow(0xa5, 4096);
    /// `KVM_GET_XCRS`.
    pub(crate) const KVM_GET_XCRS: u32 = ior(0xa6, 392);
    /// `KVM_SET_XCRS`.
    pub(crate) const KVM_SET_XCRS: u32 = iow(0xa7, 392);
    /// `KVM_GET_XSAVE2`.
    pub(crate) const KVM_GET_XSAVE2: u32 = ior(0xcf, 4096);
    /// `KVM_INTERRUPT`.
    pub(crate) const KVM_INTERRUPT: u32 = iow(0x86, 4);
    /// `KVM_NMI`.
    pub(crate) const KVM_NMI: u32 = io(0x9a);
    /// `KVM_X86_GET_MCE_CAP_SUPPORTED`.
    pub(crate) const KVM_X86_GET_MCE_CAP_SUPPORTED: u32 = ior(0x9d, 8);
    /// `KVM_X86_SETUP_MCE`.
    pub(crate) const KVM_X86_SETUP_MCE: u32 = iow(0x9c, 8);
    /// `KVM_X86_SET_MCE`.
    pub(crate) const KVM_X86_SET_MCE: u32 = iow(0x9e, 64);
    /// `KVM_CAP_MCE`.
    pub(crate) const KVM_CAP_MCE: i64 = 31;
    /// `KVM_TRANSLATE`.
    pub(crate) const KVM_TRANSLATE: u32 = iowr(0x85, 24);
    /// `KVM_CAP_TSC_DEADLINE_TIMER`.
    pub(crate) const KVM_CAP_TSC_DEADLINE_TIMER: i64 = 72;
    /// `KVM_CAP_X2APIC_API`.
    pub(crate) const KVM_CAP_X2APIC_API: i64 = 129;
    /// `KVM_CAP_X86_APIC_BUS_CYCLES_NS`.
    pub(crate) const KVM_CAP_X86_APIC_BUS_CYCLES_NS: i64 = 237;
    /// `KVM_CAP_MSR_PLATFORM_INFO`.
    pub(crate) const KVM_CAP_MSR_PLATFORM_INFO: i64 = 159;
    /// `KVM_CAP_SYNC_REGS`.
    pub(crate) const KVM_CAP_SYNC_REGS: i64 = 74;
    /// `KVM_GET_LAPIC`.
    pub(crate) const KVM_GET_LAPIC: u32 = ior(0x8e, 1024);
    /// `KVM_SET_LAPIC`.
    pub(crate) const KVM_SET_LAPIC: u32 = iow(0x8f, 1024);
    /// `KVM_SET_NR_MMU_PAGES`.
    pub(crate) const KVM_SET_NR_MMU_PAGES: u32 = io(0x44);

    /// `KVM_CAP_IRQCHIP`.
    pub(crate) const KVM_CAP_IRQCHIP: i64 = 0;
    /// `KVM_CAP_HLT`.
    pub(crate) const KVM_CAP_HLT: i64 = 1;
    /// `KVM_CAP_SET_TSS_ADDR`.
    pub(crate) const KVM_CAP_SET_TSS_ADDR: i64 = 4;
    /// `KVM_CAP_EXT_CPUID`.
    pub(crate) const KVM_CAP_EXT_CPUID: i64 = 7;
    /// `KVM_CAP_MP_STATE`.
    pub(crate) const KVM_CAP_MP_STATE: i64 = 14;
    /// `KVM_CAP_NOP_IO_DELAY`.
    pub(crate) const KVM_CAP_NOP_IO_DELAY: i64 = 12;
    /// `KVM_CAP_SET_IDENTITY_MAP_ADDR`.
    pub(crate) const KVM_CAP_SET_IDENTITY_MAP_ADDR: i64 = 37;
    /// `KVM_CAP_VCPU_EVENTS`.
    pub(crate) const KVM_CAP_VCPU_EVENTS: i64 = 41;
    /// `KVM_CAP_DEBUGREGS`.
    pub(crate) const KVM_CAP_DEBUGREGS: i64 = 50;
    /// `KVM_CAP_XSAVE`.
    pub(crate) const KVM_CAP_XSAVE: i64 = 55;
    /// `KVM_CAP_XCRS`.
    pub(crate) const KVM_CAP_XCRS: i64 = 56;
    /// `KVM_CAP_GET_TSC_KHZ`.
    pub(crate) const KVM_CAP_GET_TSC_KHZ: i64 = 61;
    /// `KVM_CAP_GET_MSR_FEATURES`.
    pub(crate) const KVM_CAP_GET_MSR_FEATURES: i64 = 153;
    /// `KVM_CAP_XSAVE2`.
    pub(crate) const KVM_CAP_XSAVE2: i64 = 208;
    /// `KVM_CAP_VM_TYPES`.
    pub(crate) const KVM_CAP_VM_TYPES: i64 = 235;
}

/// The hardware virtualization extension in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Vendor {
    /// AMD SVM.
    Svm,
    /// Intel VMX.
    Vmx,
}

/// Finds the CPU's virtualization extension, checks the backend can use it,
/// and enables it on every CPU. Fails with `EOPNOTSUPP` and a message saying
/// why, as `kvm-amd` and `kvm-intel` do.
pub(crate) fn probe() -> Result<(Arc<dyn Arch>, Vendor)> {
    if x86::boot_cpu_has(x86::Feature::Svm) {
        svm::probe()?;
        let b = svm::Svm::new()?;
        let arch: Arc<dyn Arch> = Arc::new(X86::new(b)?, GFP_KERNEL)?;
        Ok((arch, Vendor::Svm))
    } else if x86::boot_cpu_has(x86::Feature::Vmx) {
        let b = vmx::Vmx::new()?;
        let arch: Arc<dyn Arch> = Arc::new(X86::new(b)?, GFP_KERNEL)?;
        Ok((arch, Vendor::Vmx))
    } else {
        pr_err!("no hardware virtualization: the CPU has neither SVM nor VMX\n");
        Err(EOPNOTSUPP)
    }
}

/// The host CPU, for the CPUID table.
pub(crate) struct Host;

impl HostCpuid for Host {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        x86::cpuid_count(leaf, subleaf)
    }
    fn host_xcr0(&self) -> u64 {
        x86::host_xcr0()
    }
}

/// x86 state of the module, for a backend.
pub(crate) struct X86<B: Backend> {
    backend: Arc<B>,
    /// A page of all ones, mapped read-only behind PCI-hole slots.
    ones_page: Arc<HwBox<[u8; 4096]>>,
    /// `KVM_GET_SUPPORTED_CPUID`, computed once.
    supported: KVec<CpuidEntry>,
    /// `IA32_FEATURE_CONTROL` is in `KVM_GET_MSR_INDEX_LIST`: the host's
    /// RDMSR of it works (C probes `msrs_to_save_base[]` so). Emulated only
    /// with [`Backend::feature_control`]; otherwise user space may still
    /// read it as 0 and write 0 (C: `kvm_do_msr_access()`), as under QEMU's
    /// emulated AMD CPU, whose RDMSR of it works.
    feat_ctl_listed: bool,
}

impl<B: Backend> X86<B> {
    fn new(backend: B) -> Result<Self> {
        let mut all = KVec::from_elem(CpuidEntry::default(), cpuid::KVM_MAX_CPUID_ENTRIES as usize, GFP_KERNEL)?;
        let n = cpuid::supported_cpuid(&Host, &mut all).map_err(err)?;
        let mut supported = KVec::new();
        supported.extend_from_slice(&all[..n], GFP_KERNEL)?;
        let mut ones = HwBox::<[u8; 4096]>::new_zeroed(GFP_KERNEL)?;
        ones.fill(0xff);
        let feat_ctl_listed = x86::rdmsr_safe(msrs::MSR_IA32_FEAT_CTL).is_ok();
        Ok(Self {
            backend: Arc::new(backend, GFP_KERNEL)?,
            ones_page: Arc::new(ones, GFP_KERNEL)?,
            supported,
            feat_ctl_listed,
        })
    }
}

impl<B: Backend> Arch for X86<B> {
    fn check_extension(&self, _vm: Option<&Vm>, cap: i64) -> i64 {
        use ioc::*;
        match cap {
            KVM_CAP_IRQCHIP | KVM_CAP_HLT | KVM_CAP_EXT_CPUID | KVM_CAP_MP_STATE | KVM_CAP_NOP_IO_DELAY => 1,
            KVM_CAP_SET_TSS_ADDR | KVM_CAP_SET_IDENTITY_MAP_ADDR => 1,
            KVM_CAP_VCPU_EVENTS | KVM_CAP_DEBUGREGS | KVM_CAP_GET_TSC_KHZ => 1,
            // XCR0 exists only on a host with XSAVE (Bochs's CPUs have none).
            KVM_CAP_XCRS => i64::from(x86::boot_cpu_has(x86::Feature::Xsave)),
            KVM_CAP_GET_MSR_FEATURES => 1,
            KVM_CAP_SYNC_REGS => vcpu::KVM_SYNC_X86_VALID_FIELDS as i64,
            KVM_CAP_TSC_DEADLINE_TIMER => 1,
            KVM_CAP_MSR_PLATFORM_INFO => 1,
            KVM_CAP_MCE => mce::KVM_MAX_MCE_BANKS as i64,
            irq_comm::KVM_CAP_IRQ_INJECT_STATUS => 1,
            msr_filter::KVM_CAP_X86_USER_SPACE_MSR | msr_filter::KVM_CAP_X86_MSR_FILTER => 1,
            // KVM_X2APIC_API_USE_32BIT_IDS | KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK
            KVM_CAP_X2APIC_API => 3,
            KVM_CAP_X86_APIC_BUS_CYCLES_NS => lapic::APIC_BUS_CYCLE_NS_DEFAULT as i64,
            KVM_CAP_XSAVE => i64::from(x86::boot_cpu_has(x86::Feature::Xsave)),
            KVM_CAP_XSAVE2 => vcpu::xsave2_size(&self.supported) as i64,
            KVM_CAP_VM_TYPES => 1 << uapi::KVM_X86_DEFAULT_VM,
            _ => 0,
        }
    }

    fn vm_type_supported(&self, vm_type: usize) -> bool {
        vm_type == uapi::KVM_X86_DEFAULT_VM
    }

    fn dev_ioctl(&self, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            uapi::KVM_GET_SUPPORTED_CPUID => get_supported_cpuid(&self.supported, arg),
            ioc::KVM_GET_MSR_INDEX_LIST => {
                let feat_ctl: &[u32] = if self.feat_ctl_listed { &[msrs::MSR_IA32_FEAT_CTL] } else { &[] };
                copy_index_list(arg, &[msrs::MSRS_TO_SAVE, feat_ctl])
            }
            ioc::KVM_GET_MSR_FEATURE_INDEX_LIST => copy_index_list(arg, &[msrs::FEATURE_MSRS]),
            ioc::KVM_GET_MSRS => get_feature_msrs(arg),
            ioc::KVM_X86_GET_MCE_CAP_SUPPORTED => {
                UserSlice::new(arg, 8).writer().write_slice(&self.backend.mce_cap().to_ne_bytes())?;
                Ok(0)
            }
            // `kvm_arch_dev_ioctl()` answers -EINVAL to what it does not handle.
            _ => Err(err(errno::EINVAL)),
        }
    }

    fn create_vm(&self, _vm_type: usize, stats: Arc<VmStats>) -> Result<KBox<dyn ArchVm>> {
        let tdp = Tdp::new(self.backend.tdp_levels())?;
        let tdp_root = tdp.root_pa();
        let supported = copy_entries(&self.supported)?;
        let shared = Arc::pin_init(
            pin_init!(X86VmShared::<B> {
                backend: self.backend.clone(),
                ones_page: self.ones_page.clone(),
                supported,
                feat_ctl_listed: self.feat_ctl_listed,
                tdp_root,
                tdp <- new_mutex!(tdp),
                vcpus <- new_mutex!(KVec::new()),
                tlb_gen: AtomicU64::new(0),
                irqchip: AtomicBool::new(false),
                irqchip_dev <- new_mutex!(None),
                pic_output: AtomicBool::new(false),
                eoi_inject_at: AtomicU64::new(0),
                ioapic_vectors: [const { AtomicU64::new(0) }; 4],
                tsc_khz: AtomicU32::new(x86::tsc_khz()),
                nr_mmu_pages: AtomicU64::new(0),
                apic_bus_cycle_ns: AtomicU64::new(lapic::APIC_BUS_CYCLE_NS_DEFAULT),
                msr_filter <- new_mutex!(None),
                msr_filtered: AtomicBool::new(false),
                user_space_msr: AtomicU32::new(0),
                platform_info_readable: AtomicBool::new(true),
                x2apic_format: AtomicBool::new(false),
                broadcast_quirk_disabled: AtomicBool::new(false),
                stats,
            }),
            GFP_KERNEL_ACCOUNT,
        )?;
        let vm = KBox::new(X86Vm { shared }, GFP_KERNEL_ACCOUNT)?;
        let vm: KBox<dyn ArchVm> = vm;
        Ok(vm)
    }

    fn max_gfn(&self) -> u64 {
        // The host's MAXPHYADDR, also within 4-level nested paging.
        let bits = u32::from(x86::phys_bits()).min(48);
        (1u64 << (bits - 12)) - 1
    }
}

/// A copy of a CPUID table.
fn copy_entries(e: &[CpuidEntry]) -> Result<KVec<CpuidEntry>> {
    let mut v = KVec::new();
    v.extend_from_slice(e, GFP_KERNEL_ACCOUNT)?;
    Ok(v)
}

/// `KVM_GET_SUPPORTED_CPUID`: reads `nent` once, writes the entries, then
/// the new `nent`, as `kvm_arch_dev_ioctl()` does (nothing is written on error).
fn get_supported_cpuid(supported: &[CpuidEntry], arg: usize) -> Result<isize> {
    let mut hdr = [0u8; 8];
    UserSlice::new(arg, hdr.len()).reader().read_slice(&mut hdr)?;
    let nent = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
    let cap = cpuid::supported_cpuid_capacity(nent).map_err(err)?;
    if cap < supported.len() {
        return Err(err(errno::E2BIG));
    }
    let mut w = UserSlice::new(arg + hdr.len(), supported.len() * CpuidEntry::SIZE).writer();
    for e in supported {
        w.write_slice(&e.to_bytes())?;
    }
    hdr[0..4].copy_from_slice(&(supported.len() as u32).to_ne_bytes());
    UserSlice::new(arg, hdr.len()).writer().write_slice(&hdr)?;
    Ok(0)
}

/// `KVM_GET_MSR_INDEX_LIST`/`KVM_GET_MSR_FEATURE_INDEX_LIST`: writes the
/// count, and the lists one after the other if the caller's `nmsrs` is large
/// enough (else `E2BIG` with the count written, as the C KVM does).
fn copy_index_list(arg: usize, lists: &[&[u32]]) -> Result<isize> {
    let mut hdr = [0u8; 4];
    UserSlice::new(arg, 4).reader().read_slice(&mut hdr)?;
    let n = u32::from_ne_bytes(hdr) as usize;
    let len: usize = lists.iter().map(|l| l.len()).sum();
    UserSlice::new(arg, 4).writer().write_slice(&(len as u32).to_ne_bytes())?;
    if n < len {
        return Err(E2BIG);
    }
    let mut w = UserSlice::new(arg + 4, len * 4).writer();
    for m in lists.iter().flat_map(|l| l.iter()) {
        w.write_slice(&m.to_ne_bytes())?;
    }
    Ok(0)
}

/// The value of feature MSR `index` on this host (C: `kvm_get_msr_feature()`).
pub(crate) fn feature_msr(index: u32) -> Option<u64> {
    match index {
        msrs::MSR_IA32_UCODE_REV => Some(u64::from(x86::microcode_rev()) << 32),
        msrs::MSR_AMD64_DE_CFG => {
            x86::rdmsr_safe(msrs::MSR_AMD64_DE_CFG).ok().map(|v| v & msrs::DE_CFG_LFENCE_SERIALIZE)
        }
        _ => None,
    }
}

/// `KVM_GET_MSRS` on `/dev/kvm`: the feature MSRs. Returns how many entries
/// were read, stopping at the first unknown one.
fn get_feature_msrs(arg: usize) -> Result<isize> {
    let mut hdr = [0u8; 8];
    UserSlice::new(arg, 8).reader().read_slice(&mut hdr)?;
    let n = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
    if n >= msrs::MAX_IO_MSRS {
        return Err(E2BIG);
    }
    let len = n as usize * msrs::MSR_ENTRY_SIZE;
    let mut buf = KVec::from_elem(0u8, len, GFP_KERNEL)?;
    UserSlice::new(arg + 8, len).reader().read_slice(&mut buf)?;
    let mut done = 0;
    for e in buf.chunks_exact_mut(msrs::MSR_ENTRY_SIZE) {
        let index = u32::from_ne_bytes([e[0], e[1], e[2], e[3]]);
        match feature_msr(index) {
            Some(v) => e[8..16].copy_from_slice(&v.to_ne_bytes()),
            None => break,
        }
        done += 1;
    }
    UserSlice::new(arg + 8, len).writer().write_slice(&buf)?;
    Ok(done)
}

/// `vcpu->mode`: whether a vCPU is in guest mode, so that a remote request
/// must kick it out with an IPI.
pub(crate) const OUTSIDE_GUEST_MODE: u8 = 0;
/// See [`OUTSIDE_GUEST_MODE`].
pub(crate) const IN_GUEST_MODE: u8 = 1;

/// How to get a vCPU's attention from another thread or from its timer: wake
/// it if it sleeps, IPI it if it is in guest mode (`kvm_vcpu_kick()`).
/// Everything here may be used from hard interrupt context.
#[pin_data]
pub(crate) struct Kicker {
    /// [`IN_GUEST_MODE`] or [`OUTSIDE_GUEST_MODE`].
    pub(crate) mode: AtomicU8,
    /// The CPU it last entered the guest on.
    pub(crate) cpu: AtomicU32,
    /// Something was posted: re-check before entering or while halted.
    pub(crate) pending: AtomicBool,
    /// The LAPIC timer fired.
    pub(crate) timer_fired: AtomicBool,
    /// A halted vCPU sleeps here.
    #[pin]
    pub(crate) wq: WaitQueue,
}

impl Kicker {
    fn new() -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Self {
                mode: AtomicU8::new(OUTSIDE_GUEST_MODE),
                cpu: AtomicU32::new(0),
                pending: AtomicBool::new(false),
                timer_fired: AtomicBool::new(false),
                wq <- new_waitqueue!(),
            }),
            GFP_KERNEL_ACCOUNT,
        )
    }

    /// Makes the vCPU notice `pending` soon.
    pub(crate) fn kick(&self) {
        self.pending.store(true, Ordering::SeqCst);
        self.wq.wake_all();
        if self.mode.load(Ordering::SeqCst) == IN_GUEST_MODE {
            send_reschedule(self.cpu.load(Ordering::SeqCst));
        }
    }
}

/// The LAPIC timer's target: the vCPU's kicker.
pub(crate) struct TimerTarget(pub(crate) Arc<Kicker>);

impl HrTimerCallback for TimerTarget {
    fn fired(&self) {
        self.0.timer_fired.store(true, Ordering::SeqCst);
        self.0.kick();
    }
}

/// The part of a vCPU other threads touch: to kick it out of guest mode, to
/// post an interrupt to it, to wake it from HLT; and its LAPIC timer.
#[pin_data]
pub(crate) struct VcpuShared {
    /// The vCPU id.
    pub(crate) id: u32,
    /// Waking and kicking.
    pub(crate) kicker: Arc<Kicker>,
    /// Interrupt vectors posted by other vCPUs or devices (256 bits).
    pub(crate) posted_irr: [AtomicU64; 4],
    /// Level-triggered flags of the posted vectors.
    pub(crate) posted_tmr: [AtomicU64; 4],
    /// A posted NMI.
    pub(crate) posted_nmi: AtomicBool,
    /// A posted INIT.
    pub(crate) posted_init: AtomicBool,
    /// A posted SIPI: its vector plus 0x100, or 0.
    pub(crate) posted_sipi: AtomicU32,
    /// `KVM_SET_IRQCHIP` restored the IOAPIC: the RTC EOI tracking took
    /// this vCPU's published LAPIC; the vCPU checks it against its live
    /// LAPIC before it enters the guest again.
    pub(crate) rtc_restore: AtomicBool,
    /// A copy of the vCPU's LAPIC as other vCPUs and devices see it when
    /// they route interrupts (C: the APIC map), refreshed after every change
    /// of the vCPU's LAPIC registers.
    #[pin]
    pub(crate) apic_view: Mutex<Option<lapic::Lapic>>,
    /// The host timer behind the LAPIC timer.
    #[pin]
    pub(crate) timer: HrTimer<TimerTarget>,
}

impl VcpuShared {
    fn new(id: u32) -> Result<Arc<Self>> {
        let kicker = Kicker::new()?;
        let target = TimerTarget(kicker.clone());
        Arc::pin_init(
            pin_init!(Self {
                id,
                kicker,
                posted_irr: [const { AtomicU64::new(0) }; 4],
                posted_tmr: [const { AtomicU64::new(0) }; 4],
                posted_nmi: AtomicBool::new(false),
                posted_init: AtomicBool::new(false),
                posted_sipi: AtomicU32::new(0),
                rtc_restore: AtomicBool::new(false),
                apic_view <- new_mutex!(None),
                timer <- HrTimer::new(target),
            }),
            GFP_KERNEL_ACCOUNT,
        )
    }

    /// Kicks the vCPU (see [`Kicker::kick`]).
    pub(crate) fn kick(&self) {
        self.kicker.kick();
    }

    /// Whether the vCPU is in guest mode now, and on which CPU.
    pub(crate) fn in_guest(&self) -> Option<u32> {
        (self.kicker.mode.load(Ordering::SeqCst) == IN_GUEST_MODE).then(|| self.kicker.cpu.load(Ordering::SeqCst))
    }

    /// For the RTC EOI tracking of `KVM_SET_IRQCHIP`: whether this vCPU's
    /// LAPIC, as last published, is a destination of `dest`, and whether
    /// `vector` is in its IRR or ISR or posted to it (C reads the LAPIC
    /// itself: `__rtc_irq_eoi_tracking_restore_one()`).
    pub(crate) fn rtc_view(&self, dest: &lapic::Destination, vector: u8, flags: &lapic::VmFlags) -> (bool, bool) {
        let posted = self.posted_irr[usize::from(vector / 64)].load(Ordering::SeqCst) & (1 << (vector % 64)) != 0;
        match &*self.apic_view.lock() {
            Some(l) => (l.matches_dest(dest, lapic::Source::Device, flags), posted || l.pending_eoi(vector)),
            None => (false, false),
        }
    }

    /// Posts interrupt `vector` (accepted into the LAPIC at the next entry).
    pub(crate) fn post_interrupt(&self, vector: u8, level: bool) {
        let (w, b) = (usize::from(vector / 64), vector % 64);
        if level {
            self.posted_tmr[w].fetch_or(1 << b, Ordering::SeqCst);
        }
        self.posted_irr[w].fetch_or(1 << b, Ordering::SeqCst);
        self.kick();
    }

    /// Posts an NMI.
    pub(crate) fn post_nmi(&self) {
        self.posted_nmi.store(true, Ordering::SeqCst);
        self.kick();
    }

    /// Posts an interrupt message of any delivery mode (what the vCPU's
    /// LAPIC accepts at its next entry). Returns whether it was posted.
    pub(crate) fn post(&self, irq: &lapic::Irq) -> bool {
        use lapic::DeliveryMode as M;
        match irq.mode {
            M::Fixed | M::LowestPriority => {
                if irq.level_triggered && !irq.level {
                    return false;
                }
                self.post_interrupt(irq.vector, irq.level_triggered);
            }
            M::Nmi => self.post_nmi(),
            M::Init => {
                if irq.level_triggered && !irq.level {
                    return false;
                }
                self.posted_sipi.store(0, Ordering::SeqCst);
                self.posted_init.store(true, Ordering::SeqCst);
                self.kick();
            }
            M::StartUp => {
                self.posted_sipi.store(u32::from(irq.vector) | 0x100, Ordering::SeqCst);
                self.kick();
            }
            M::Smi | M::RemoteRead | M::ExtInt => return false,
        }
        true
    }

    /// Whether a message for `dest` from `source` reaches this vCPU's LAPIC
    /// (C: `kvm_apic_match_dest()` over the APIC map).
    pub(crate) fn matches(&self, dest: &lapic::Destination, source: lapic::Source, flags: &lapic::VmFlags) -> bool {
        match &*self.apic_view.lock() {
            Some(l) => l.hw_enabled() && l.matches_dest(dest, source, flags),
            None => false,
        }
    }
}

/// Delivers interrupt messages to the LAPICs of a VM (C:
/// `kvm_irq_delivery_to_apic()`): every vCPU the destination matches gets a
/// fixed, NMI, INIT or SIPI message; a lowest-priority one goes to one of
/// them, picked by vector hashing.
pub(crate) struct ApicRouter<'a> {
    pub(crate) vcpus: &'a [Arc<VcpuShared>],
    pub(crate) flags: lapic::VmFlags,
    /// The sending vCPU, if a LAPIC (not a device) sent it.
    pub(crate) from: Option<u32>,
}

impl ApicRouter<'_> {
    /// Delivers `irq` to `dest`; -1 if nothing matched, else how many accepted.
    pub(crate) fn deliver(&self, dest: &lapic::Destination, irq: &lapic::Irq) -> i32 {
        self.deliver_tracked(dest, irq, None)
    }

    /// [`Self::deliver`], recording in `dest_map` the vCPUs that accepted a
    /// fixed or lowest-priority interrupt (C: `__apic_accept_irq()` with a
    /// `dest_map`, for the RTC's EOI tracking).
    fn deliver_tracked(
        &self,
        dest: &lapic::Destination,
        irq: &lapic::Irq,
        mut dest_map: Option<&mut ioapic::DestMap>,
    ) -> i32 {
        let source = |id: u32| match self.from {
            Some(me) if me == id => lapic::Source::ThisApic,
            Some(_) => lapic::Source::OtherApic,
            None => lapic::Source::Device,
        };
        let mut accept = |v: &Arc<VcpuShared>| {
            let ok = v.post(irq);
            if ok && matches!(irq.mode, lapic::DeliveryMode::Fixed | lapic::DeliveryMode::LowestPriority) {
                if let Some(m) = dest_map.as_deref_mut() {
                    m.record(v.id, irq.vector);
                }
            }
            i32::from(ok)
        };
        let hit = |v: &&Arc<VcpuShared>| v.matches(dest, source(v.id), &self.flags);
        if irq.mode == lapic::DeliveryMode::LowestPriority {
            let n = self.vcpus.iter().filter(hit).count();
            return match lapic::lowest_prio_index(irq.vector, n).and_then(|i| self.vcpus.iter().filter(hit).nth(i)) {
                Some(v) => accept(v),
                None => -1,
            };
        }
        let mut matched = false;
        let mut accepted = 0;
        for v in self.vcpus.iter().filter(hit) {
            matched = true;
            accepted += accept(v);
        }
        if matched {
            accepted
        } else {
            -1
        }
    }
}

impl ioapic::ApicBus for ApicRouter<'_> {
    fn deliver(&mut self, d: &ioapic::Delivery, dest_map: Option<&mut ioapic::DestMap>) -> i32 {
        self.deliver_tracked(&d.dest, &d.irq, dest_map)
    }
}

/// The x86 state of a VM that vCPUs share.
#[pin_data]
pub(crate) struct X86VmShared<B: Backend> {
    pub(crate) backend: Arc<B>,
    /// The all-ones page of PCI-hole slots; shared through an `Arc`, so it
    /// outlives every nested page table that maps it.
    pub(crate) ones_page: Arc<HwBox<[u8; 4096]>>,
    /// `KVM_GET_SUPPORTED_CPUID`.
    pub(crate) supported: KVec<CpuidEntry>,
    /// `IA32_FEATURE_CONTROL` is in `KVM_GET_MSR_INDEX_LIST` (`X86::feat_ctl_listed`).
    pub(crate) feat_ctl_listed: bool,
    /// The root of the nested page table (never replaced).
    pub(crate) tdp_root: u64,
    /// The nested page table (C: `kvm->mmu_lock` and the TDP MMU roots).
    #[pin]
    pub(crate) tdp: Mutex<Tdp>,
    /// Every vCPU's shared part, for kicks and interrupt delivery.
    #[pin]
    pub(crate) vcpus: Mutex<KVec<Arc<VcpuShared>>>,
    /// Bumped for each remote TLB flush; a vCPU flushes when it sees a new value.
    pub(crate) tlb_gen: AtomicU64,
    /// `KVM_CREATE_IRQCHIP` was done.
    pub(crate) irqchip: AtomicBool,
    /// The PIC pair and the IOAPIC, once `KVM_CREATE_IRQCHIP` made them.
    #[pin]
    pub(crate) irqchip_dev: Mutex<Option<KBox<irq_comm::Irqchip>>>,
    /// The PIC's INTR output (a copy, so vCPUs need not lock the chip to see it).
    pub(crate) pic_output: AtomicBool,
    /// When the IOAPIC's EOI-storm re-delivery is due (`CLOCK_MONOTONIC`
    /// ns), 0 if none is: C's delayed `eoi_inject` work. The vCPUs run it
    /// from their loop, and a halted one sleeps no longer than this.
    pub(crate) eoi_inject_at: AtomicU64,
    /// Every vector an IOAPIC redirection entry has held (bit `v % 64` of
    /// word `v / 64`; only ever grows): a LAPIC EOI of another vector needs
    /// neither the IOAPIC nor its locks (C: `kvm_ioapic_handles_vector()`).
    pub(crate) ioapic_vectors: [AtomicU64; 4],
    /// The guest TSC frequency.
    pub(crate) tsc_khz: AtomicU32,
    /// `KVM_SET_NR_MMU_PAGES`.
    pub(crate) nr_mmu_pages: AtomicU64,
    /// `KVM_CAP_X86_APIC_BUS_CYCLES_NS`.
    pub(crate) apic_bus_cycle_ns: AtomicU64,
    /// `KVM_X86_SET_MSR_FILTER`'s filter, if any.
    #[pin]
    pub(crate) msr_filter: Mutex<Option<MsrFilter<KVec<u8>>>>,
    /// Whether a filter is installed (vCPUs then intercept every MSR).
    pub(crate) msr_filtered: AtomicBool,
    /// `KVM_CAP_X86_USER_SPACE_MSR`'s exit-reason mask.
    pub(crate) user_space_msr: AtomicU32,
    /// `KVM_CAP_MSR_PLATFORM_INFO`: guests may read MSR_PLATFORM_INFO.
    pub(crate) platform_info_readable: AtomicBool,
    /// `KVM_CAP_X2APIC_API`: 32-bit x2APIC IDs in `KVM_GET/SET_LAPIC`.
    pub(crate) x2apic_format: AtomicBool,
    /// `KVM_CAP_X2APIC_API`: no 0xff broadcast quirk in x2APIC mode.
    pub(crate) broadcast_quirk_disabled: AtomicBool,
    /// The VM's statistics.
    pub(crate) stats: Arc<VmStats>,
}

impl<B: Backend> X86VmShared<B> {
    /// Runs `f` on the PIC/IOAPIC with a router to the LAPICs, then publishes
    /// the PIC's output and kicks the vCPUs that take PIC interrupts if it
    /// rose. `ENXIO` without `KVM_CREATE_IRQCHIP`.
    pub(crate) fn with_irqchip<R>(
        &self,
        f: impl FnOnce(&mut irq_comm::Irqchip, &mut ApicRouter<'_>) -> R,
    ) -> Result<R> {
        self.with_irqchip_from(None, f)
    }

    /// Whether an IOAPIC redirection entry has ever held `vector`.
    pub(crate) fn is_ioapic_vector(&self, vector: u8) -> bool {
        self.ioapic_vectors[usize::from(vector >> 6)].load(Ordering::SeqCst) & (1 << (vector & 63)) != 0
    }

    /// [`Self::with_irqchip`] on behalf of vCPU `from` (a LAPIC EOI).
    pub(crate) fn with_irqchip_from<R>(
        &self,
        from: Option<u32>,
        f: impl FnOnce(&mut irq_comm::Irqchip, &mut ApicRouter<'_>) -> R,
    ) -> Result<R> {
        let mut dev = self.irqchip_dev.lock();
        let chip = dev.as_deref_mut().ok_or(ENXIO)?;
        let vcpus = self.vcpus.lock();
        let mut router = ApicRouter { vcpus: &vcpus, flags: self.lapic_flags(), from };
        let r = f(chip, &mut router);
        // Published before the lock is dropped, so before any interrupt
        // through a new entry can be delivered, let alone EOIed.
        for (w, v) in self.ioapic_vectors.iter().zip(chip.ioapic.entry_vectors()) {
            w.fetch_or(v, Ordering::SeqCst);
        }
        let out = chip.pic.output();
        let was = self.pic_output.swap(out, Ordering::SeqCst);
        if out && !was {
            // The PIC's INTR goes to the vCPUs whose LINT0 takes ExtINT;
            // they check it at their next entry.
            for v in vcpus.iter() {
                v.kick();
            }
        }
        Ok(r)
    }

    /// `KVM_X86_SET_MSR_FILTER` (`kvm_vm_ioctl_set_msr_filter()`): the
    /// struct is read once, checked, its bitmaps copied, then the new filter
    /// replaces the old one and every vCPU is kicked, so that none runs with
    /// MSRs passed through that the filter denies.
    fn set_msr_filter(&self, arg: usize) -> Result<isize> {
        let mut b = [0u8; KvmMsrFilter::SIZE];
        UserSlice::new(arg, b.len()).reader().read_slice(&mut b)?;
        let f = KvmMsrFilter::from_bytes(&b);
        let filter = f
            .build(|copy| {
                let mut v = KVec::from_elem(0u8, copy.len, GFP_KERNEL_ACCOUNT).map_err(|_| errno::ENOMEM)?;
                UserSlice::new(copy.addr as usize, copy.len).reader().read_slice(&mut v).map_err(|_| errno::EFAULT)?;
                Ok(v)
            })
            .map_err(err)?;
        *self.msr_filter.lock() = Some(filter);
        self.msr_filtered.store(true, Ordering::SeqCst);
        for v in self.vcpus.lock().iter() {
            v.kick();
        }
        Ok(0)
    }

    /// Whether the guest may make this MSR access (C: `kvm_msr_allowed()`).
    pub(crate) fn msr_allowed(&self, index: u32, write: bool) -> bool {
        msr_filter::msr_allowed(self.msr_filter.lock().as_ref(), index, write)
    }

    /// The VM-wide LAPIC flags.
    pub(crate) fn lapic_flags(&self) -> lapic::VmFlags {
        lapic::VmFlags {
            x2apic_format: self.x2apic_format.load(Ordering::Relaxed),
            broadcast_quirk_disabled: self.broadcast_quirk_disabled.load(Ordering::Relaxed),
            ..lapic::VmFlags::DEFAULT
        }
    }
}

impl<B: Backend> X86VmShared<B> {
    /// `kvm_flush_remote_tlbs()`: every vCPU flushes its TLB before it next
    /// runs guest code, and none is in guest mode with a stale TLB when this
    /// returns. Must be called where sleeping is allowed.
    pub(crate) fn flush_remote_tlbs(&self) {
        self.tlb_gen.fetch_add(1, Ordering::SeqCst);
        self.stats.inc(VmStat::RemoteTlbFlushRequests);
        let vcpus = self.vcpus.lock();
        let mut kicked = false;
        for v in vcpus.iter() {
            if let Some(cpu) = v.in_guest() {
                kicked = true;
                // Waiting for the IPI means waiting until the vCPU has left
                // guest mode (it takes interrupts only after the #VMEXIT); an
                // offline CPU runs no guest.
                let _ = smp::kick_cpu(cpu, true);
            }
        }
        // C counts a flush that had to interrupt some vCPU.
        if kicked {
            self.stats.inc(VmStat::RemoteTlbFlush);
        }
    }

    /// Unmaps guest frames `[start, end)` from the nested page table, flushes
    /// every vCPU's TLB, and only then releases the pages.
    pub(crate) fn zap_gfn_range(&self, start: u64, end: u64) {
        let mut from = start;
        loop {
            let mut released: KVec<PinnedPage> = KVec::new();
            let r = self.tdp.lock().zap_range(from, end, &mut released, 4096);
            self.flush_remote_tlbs();
            drop(released);
            match r {
                Ok(Some(next)) => from = next,
                Ok(None) => break,
                Err(_) => {
                    // Could not record the pins to release: what was zapped
                    // is released above; retry the rest once memory frees up.
                    pr_err!("kvm-rs: out of memory zapping guest frames {:#x}..{:#x}\n", from, end);
                    break;
                }
            }
        }
    }
}

/// The x86 part of a VM.
pub(crate) struct X86Vm<B: Backend> {
    shared: Arc<X86VmShared<B>>,
}

impl<B: Backend> ArchVm for X86Vm<B> {
    fn ioctl(&self, vm: &Vm, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            ioc::KVM_CREATE_IRQCHIP => {
                // Only before the first vCPU, and once (C: -EEXIST, -EINVAL).
                let mut dev = self.shared.irqchip_dev.lock();
                if dev.is_some() {
                    return Err(EEXIST);
                }
                if !self.shared.vcpus.lock().is_empty() {
                    return Err(EINVAL);
                }
                *dev = Some(KBox::new(irq_comm::Irqchip::new(), GFP_KERNEL_ACCOUNT)?);
                self.shared.irqchip.store(true, Ordering::SeqCst);
                Ok(0)
            }
            irq_comm::KVM_IRQ_LINE | irq_comm::KVM_IRQ_LINE_STATUS => {
                let mut b = [0u8; irq_comm::KVM_IRQ_LEVEL_SIZE];
                UserSlice::new(arg, b.len()).reader().read_slice(&mut b)?;
                let status = cmd == irq_comm::KVM_IRQ_LINE_STATUS;
                let out = self.shared.with_irqchip(|chip, bus| chip.irq_line(&b, status, bus))?;
                if status {
                    UserSlice::new(arg, out.len()).writer().write_slice(&out)?;
                }
                Ok(0)
            }
            irq_comm::KVM_GET_IRQCHIP => {
                let mut b = [0u8; irq_comm::KVM_IRQCHIP_SIZE];
                UserSlice::new(arg, b.len()).reader().read_slice(&mut b)?;
                let dev = self.shared.irqchip_dev.lock();
                let chip = dev.as_ref().ok_or(ENXIO)?;
                chip.get_irqchip(&mut b).map_err(err)?;
                drop(dev);
                UserSlice::new(arg, b.len()).writer().write_slice(&b)?;
                Ok(0)
            }
            irq_comm::KVM_SET_IRQCHIP => {
                let mut b = [0u8; irq_comm::KVM_IRQCHIP_SIZE];
                UserSlice::new(arg, b.len()).reader().read_slice(&mut b)?;
                self.shared
                    .with_irqchip(|chip, bus| {
                        let r = chip.set_irqchip(&b, bus);
                        if r.is_ok() && irq_comm::irqchip_chip_id(&b) == Ok(irq_comm::ChipId::Ioapic) {
                            // kvm_rtc_eoi_tracking_restore_all(): from every
                            // LAPIC as published, then each vCPU checks its
                            // own live LAPIC before it runs again.
                            let (dest, vector) = chip.ioapic.rtc_target();
                            for v in bus.vcpus.iter() {
                                let (is_dest, pending) = v.rtc_view(&dest, vector, &bus.flags);
                                chip.ioapic.rtc_restore_one(v.id, is_dest, pending);
                                v.rtc_restore.store(true, Ordering::SeqCst);
                                v.kick();
                            }
                        }
                        r
                    })?
                    .map_err(err)?;
                Ok(0)
            }
            ioc::KVM_GET_TSC_KHZ => Ok(self.shared.tsc_khz.load(Ordering::Relaxed) as isize),
            // The limit of shadow MMU pages. With nested paging no shadow
            // pages exist, so, as in the C KVM under TDP, the value is only
            // checked and kept.
            ioc::KVM_SET_NR_MMU_PAGES => {
                if (arg as u64) < 64 {
                    return Err(EINVAL);
                }
                self.shared.nr_mmu_pages.store(arg as u64, Ordering::Relaxed);
                Ok(0)
            }
            // KVM_GET_NR_MMU_PAGES is gone from the C KVM: ENOTTY below.
            msr_filter::KVM_X86_SET_MSR_FILTER => self.shared.set_msr_filter(arg),
            // The TSS and identity-map pages are only needed by VMX without
            // unrestricted guest; checked as in C, then ignored, as kvm-amd
            // does (the three TSS pages must end below 4 GiB).
            ioc::KVM_SET_TSS_ADDR => {
                if arg as u64 > 0xffff_d000 {
                    return Err(EINVAL);
                }
                Ok(0)
            }
            ioc::KVM_SET_IDENTITY_MAP_ADDR => {
                if vm.created_vcpus() != 0 {
                    return Err(EINVAL);
                }
                let mut b = [0u8; 8];
                UserSlice::new(arg, 8).reader().read_slice(&mut b)?;
                Ok(0)
            }
            // `kvm_arch_vm_ioctl()`'s answer to what it does not know.
            _ => Err(ENOTTY),
        }
    }

    fn enable_cap(&self, _vm: &Vm, cap: &KvmEnableCap) -> Result<isize> {
        // x86's kvm_vm_ioctl_enable_cap(): no capability takes flags.
        if cap.flags != 0 {
            return Err(EINVAL);
        }
        let sh = &self.shared;
        match i64::from(cap.cap) {
            ioc::KVM_CAP_X2APIC_API => {
                if cap.args[0] & !3 != 0 {
                    return Err(EINVAL);
                }
                if cap.args[0] & 1 != 0 {
                    sh.x2apic_format.store(true, Ordering::SeqCst);
                }
                if cap.args[0] & 2 != 0 {
                    sh.broadcast_quirk_disabled.store(true, Ordering::SeqCst);
                }
                Ok(0)
            }
            ioc::KVM_CAP_X86_APIC_BUS_CYCLES_NS => {
                let ns = cap.args[0];
                if !lapic::LapicConfig::bus_cycle_ns_valid(ns) {
                    return Err(EINVAL);
                }
                if !sh.irqchip.load(Ordering::SeqCst) {
                    return Err(ENXIO);
                }
                if !sh.vcpus.lock().is_empty() {
                    return Err(EINVAL);
                }
                sh.apic_bus_cycle_ns.store(ns, Ordering::SeqCst);
                Ok(0)
            }
            ioc::KVM_CAP_MSR_PLATFORM_INFO => {
                sh.platform_info_readable.store(cap.args[0] != 0, Ordering::SeqCst);
                Ok(0)
            }
            msr_filter::KVM_CAP_X86_USER_SPACE_MSR => {
                let m = msr_filter::UserSpaceMsr::from_cap_arg(cap.args[0]).map_err(err)?;
                sh.user_space_msr.store(m.mask(), Ordering::SeqCst);
                Ok(0)
            }
            _ => Err(EINVAL),
        }
    }

    fn create_vcpu(&self, _vm: &Vm, id: u32) -> Result<KBox<dyn ArchVcpu>> {
        let shared = VcpuShared::new(id)?;
        let v = vcpu::X86Vcpu::new(self.shared.clone(), shared.clone())?;
        let v = KBox::new(v, GFP_KERNEL_ACCOUNT)?;
        let v: KBox<dyn ArchVcpu> = v;
        self.shared.vcpus.lock().push(shared, GFP_KERNEL_ACCOUNT)?;
        Ok(v)
    }

    fn memslot_changed(&self, _vm: &Vm, change: &Change) {
        match *change {
            Change::Delete { old } | Change::Move { old, .. } => {
                self.shared.zap_gfn_range(old.base_gfn, old.end_gfn());
            }
            Change::FlagsOnly { old, new } if new.logs_dirty_pages() && !old.logs_dirty_pages() => {
                // Logging starts: every write from now on must fault once.
                let mut changed = false;
                {
                    let mut tdp = self.shared.tdp.lock();
                    for gfn in new.base_gfn..new.end_gfn() {
                        changed |= tdp.write_protect(gfn, |p| self.shared.backend.tdp_wrprot(p));
                    }
                }
                if changed {
                    self.shared.flush_remote_tlbs();
                }
            }
            Change::FlagsOnly { .. } | Change::Create { .. } | Change::Nothing => {}
        }
    }

    fn write_protect(&self, _vm: &Vm, base_gfn: u64, bitmap: &[u64]) {
        let mut changed = false;
        {
            let mut tdp = self.shared.tdp.lock();
            for (w, word) in bitmap.iter().enumerate() {
                let mut bits = *word;
                while bits != 0 {
                    let b = bits.trailing_zeros() as u64;
                    bits &= bits - 1;
                    let gfn = base_gfn + w as u64 * 64 + b;
                    changed |= tdp.write_protect(gfn, |p| self.shared.backend.tdp_wrprot(p));
                }
            }
        }
        if changed {
            self.shared.flush_remote_tlbs();
        }
    }
}
