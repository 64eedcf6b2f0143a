// SPDX-License-Identifier: GPL-2.0

//! x86 CPU features and model-specific registers.
//!
//! C headers: [`arch/x86/include/asm/cpufeature.h`](srctree/arch/x86/include/asm/cpufeature.h),
//! [`arch/x86/include/asm/msr.h`](srctree/arch/x86/include/asm/msr.h)

use crate::{bindings, error::{code::EIO, Result}, smp::IrqDisabled};

/// A CPU feature bit of `boot_cpu_data` (`X86_FEATURE_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Feature {
    /// Intel VMX.
    Vmx = bindings::X86_FEATURE_VMX as u16,
    /// AMD SVM.
    Svm = bindings::X86_FEATURE_SVM as u16,
    /// Hypervisor present (we run as a guest).
    Hypervisor = bindings::X86_FEATURE_HYPERVISOR as u16,
    /// SVM nested paging.
    Npt = bindings::X86_FEATURE_NPT as u16,
    /// SVM next-RIP save.
    Nrips = bindings::X86_FEATURE_NRIPS as u16,
    /// SVM flush by ASID (TLB_CONTROL 3 and 7).
    FlushByAsid = bindings::X86_FEATURE_FLUSHBYASID as u16,
    /// SVM decode assists.
    DecodeAssists = bindings::X86_FEATURE_DECODEASSISTS as u16,
    /// XSAVE and XCR0.
    Xsave = bindings::X86_FEATURE_XSAVE as u16,
    /// CR4.OSXSAVE set by the kernel.
    Osxsave = bindings::X86_FEATURE_OSXSAVE as u16,
    /// Protection keys enabled by the kernel (CR4.PKE).
    Ospke = bindings::X86_FEATURE_OSPKE as u16,
    /// Constant-rate TSC.
    ConstantTsc = bindings::X86_FEATURE_CONSTANT_TSC as u16,
    /// RDTSCP and TSC_AUX.
    Rdtscp = bindings::X86_FEATURE_RDTSCP as u16,
    /// Invariant TSC.
    NonstopTsc = bindings::X86_FEATURE_NONSTOP_TSC as u16,
}

/// Whether the boot CPU (and so, on x86, every CPU) has `f`.
pub fn boot_cpu_has(f: Feature) -> bool {
    // SAFETY: Reads `boot_cpu_data`, which is set up before any module loads.
    unsafe { bindings::boot_cpu_has(f as u16) }
}

/// Reads MSR `msr` on the current CPU; an MSR the CPU faults on gives `EIO`
/// instead of an oops (the `#GP` is caught by an exception-table fixup).
pub fn rdmsr_safe(msr: u32) -> Result<u64> {
    let mut val = 0u64;
    // SAFETY: `rdmsrl_safe` only writes `val`; a faulting RDMSR is fixed up.
    let r = unsafe { bindings::rdmsrl_safe(msr, &mut val) };
    if r != 0 {
        return Err(EIO);
    }
    Ok(val)
}

/// `[eax, ebx, ecx, edx]` of `CPUID(leaf, subleaf)` on the current CPU.
pub fn cpuid_count(leaf: u32, subleaf: u32) -> [u32; 4] {
    let mut r = [0u32; 4];
    let [a, b, c, d] = &mut r;
    // SAFETY: CPUID has no side effects the kernel cares about; the pointers
    // are to four distinct local `u32`s.
    unsafe { bindings::cpuid_count(leaf, subleaf, a, b, c, d) };
    r
}

/// The host's XCR0 (the XSAVE features the kernel enabled), 0 without XSAVE.
pub fn host_xcr0() -> u64 {
    // SAFETY: Reads XCR0 only when CR4.OSXSAVE is set (checked by the helper).
    unsafe { bindings::host_xcr0() }
}

/// Writes MSR `msr`; an MSR the CPU faults on gives `EIO` instead of an oops.
///
/// # Safety
///
/// Writing an MSR can change how the CPU accesses memory (e.g. EFER, PAT, the
/// SVM host save area address): the caller guarantees the value is one the
/// kernel can live with.
pub unsafe fn wrmsr_safe(msr: u32, val: u64) -> Result {
    // SAFETY: Per the caller; a faulting WRMSR is fixed up.
    let r = unsafe { bindings::wrmsrl_safe(msr, val) };
    if r != 0 {
        return Err(EIO);
    }
    Ok(())
}

/// The current CR0.
pub fn read_cr0() -> u64 {
    // SAFETY: Reading CR0 has no side effects.
    unsafe { bindings::read_cr0() as u64 }
}

/// The current CR4 (the kernel's shadow of it, which is always in sync).
pub fn read_cr4() -> u64 {
    // SAFETY: Reads this CPU's CR4 shadow; any CPU's value has the same
    // feature bits that matter to callers (VMXE/SVM-relevant bits are per CPU
    // and callers hold interrupts off when they need this CPU's).
    unsafe { bindings::__read_cr4() as u64 }
}

/// The TSC frequency in kHz the kernel calibrated (`tsc_khz`), 0 if unknown.
pub fn tsc_khz() -> u32 {
    // SAFETY: `tsc_khz` is an exported variable written during boot calibration.
    unsafe { bindings::tsc_khz }
}

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects; the kernel does not disable it for itself.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The boot CPU's physical address width (MAXPHYADDR).
pub fn phys_bits() -> u8 {
    // SAFETY: `boot_cpu_data` is set up before any module loads.
    unsafe { bindings::boot_cpu_data.x86_phys_bits }
}

/// Sets extended control register `index` (XCR0 is 0).
///
/// # Safety
///
/// The value must be one the CPU accepts (or it faults) and that the kernel's
/// FPU code can live with until the caller restores the host value.
pub unsafe fn xsetbv(index: u32, value: u64) {
    // SAFETY: Per the caller.
    unsafe { bindings::xsetbv(index, value) };
}

/// Issues an indirect branch prediction barrier if the kernel uses them
/// (`indirect_branch_prediction_barrier()`), e.g. when another guest's
/// vCPU is about to run on this CPU.
pub fn indirect_branch_prediction_barrier() {
    // SAFETY: A barrier; no memory effects.
    unsafe { bindings::kvm_rs_ibpb() };
}

/// Clears the divider unit if the CPU leaks its quotient across privilege
/// levels (AMD erratum, `amd_clear_divider()`), before entering a guest.
pub fn amd_clear_divider() {
    // SAFETY: Executes a harmless division if the CPU has the bug.
    unsafe { bindings::amd_clear_divider() };
}

/// The microcode revision of the boot CPU.
pub fn microcode_rev() -> u32 {
    // SAFETY: `boot_cpu_data` is set up before any module loads.
    unsafe { bindings::boot_cpu_data.microcode }
}

/// The current PKRU (the host's protection-key rights) when the kernel uses
/// protection keys (`Feature::Ospke`), else 0.
pub fn read_pkru() -> u32 {
    if !boot_cpu_has(Feature::Ospke) {
        return 0;
    }
    let v: u32;
    // SAFETY: RDPKRU only reads PKRU; valid because CR4.PKE is set (OSPKE).
    unsafe { core::arch::asm!("rdpkru", in("ecx") 0u32, out("eax") v, out("edx") _, options(nomem, nostack, preserves_flags)) };
    v
}

/// The current CR3 (the page tables of the current address space).
pub fn read_cr3() -> u64 {
    // SAFETY: Reading CR3 has no side effects.
    unsafe { bindings::__read_cr3() as u64 }
}

/// Sets bits in CR4 and the kernel's per-CPU shadow of it (`cr4_set_bits()`).
///
/// # Safety
///
/// CR4 controls paging and protection features the kernel relies on; the
/// caller sets only bits that do not change how the kernel runs (e.g. VMXE).
pub unsafe fn cr4_set_bits(mask: u64) {
    // SAFETY: Per the caller; the helper updates CR4 and its shadow with
    // interrupts off.
    unsafe { bindings::kvm_rs_cr4_set_bits(mask as _) };
}

/// Clears bits in CR4 and its shadow (`cr4_clear_bits()`).
///
/// # Safety
///
/// As for [`cr4_set_bits`].
pub unsafe fn cr4_clear_bits(mask: u64) {
    // SAFETY: Per the caller.
    unsafe { bindings::kvm_rs_cr4_clear_bits(mask as _) };
}

/// What the host-state area of a VMCS needs from this CPU's descriptor tables
/// (SDM vol. 3C, 26.2.3 and 28.5: the selectors and bases a VM exit loads).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostDescriptors {
    /// `__KERNEL_CS`.
    pub kernel_cs: u16,
    /// `__KERNEL_DS`.
    pub kernel_ds: u16,
    /// The TSS selector.
    pub tr_selector: u16,
    /// This CPU's GDT, read-only mapping (`get_current_gdt_ro()`).
    pub gdt_base: u64,
    /// The IDT.
    pub idt_base: u64,
    /// This CPU's TSS (`&get_cpu_entry_area(cpu)->tss.x86_tss`).
    pub tr_base: u64,
}

/// This CPU's [`HostDescriptors`] (interrupts off: the values are per CPU).
pub fn host_descriptors(irq: &IrqDisabled) -> HostDescriptors {
    let cpu = irq.cpu();
    // SAFETY: The helpers only read per-CPU descriptor addresses of the
    // current CPU (stable with interrupts off) and constants.
    unsafe {
        HostDescriptors {
            kernel_cs: bindings::kvm_rs_kernel_cs(),
            kernel_ds: bindings::kvm_rs_kernel_ds(),
            tr_selector: bindings::kvm_rs_tss_selector(),
            gdt_base: bindings::kvm_rs_host_gdt_base() as u64,
            idt_base: bindings::kvm_rs_host_idt_base() as u64,
            tr_base: bindings::kvm_rs_host_tr_base(cpu as _) as u64,
        }
    }
}

/// After a VMX exit, which leaves the TSS limit at 0x67: makes the kernel
/// reload TR before the I/O bitmap is needed (`invalidate_tss_limit()`).
pub fn invalidate_tss_limit(_irq: &IrqDisabled) {
    // SAFETY: Interrupts are off, as the helper requires (per-CPU state).
    unsafe { bindings::kvm_rs_invalidate_tss_limit() };
}

/// After a VMX exit, which leaves the GDT limit at 0xffff: reloads this
/// CPU's GDT descriptor (`load_fixmap_gdt()`).
pub fn load_fixmap_gdt(irq: &IrqDisabled) {
    // SAFETY: Reloads the current CPU's own GDT; interrupts are off.
    unsafe { bindings::load_fixmap_gdt(irq.cpu() as _) };
}

/// Runs the host's machine-check handler for a machine check that made a
/// guest exit (C: `kvm_machine_check()`): the host, not the guest, owns it.
pub fn machine_check(_irq: &IrqDisabled) {
    // SAFETY: `do_machine_check()` is the kernel's #MC handler; it is meant to
    // be called this way by hypervisors after an #MC VM exit, on the CPU that
    // took it, with interrupts off (which the `IrqDisabled` proves).
    unsafe { bindings::kvm_rs_machine_check() };
}

/// After a VMX exit, which sets DR7 to 0x400: restores the host's hardware
/// breakpoints if any are armed (`hw_breakpoint_active()`, `cpu_dr7`).
pub fn restore_host_dr7(_irq: &IrqDisabled) {
    // SAFETY: Writes this CPU's own DR7 value back; interrupts are off.
    unsafe { bindings::kvm_rs_restore_host_dr7() };
}

/// Loads the GS selector (and the user GS base it implies) the way the
/// kernel does for a task (`load_gs_index()`).
///
/// # Safety
///
/// `sel` must be the current task's own GS selector (read before a VMX
/// entry), so that returning to user space sees the state it had.
pub unsafe fn load_gs_index(sel: u16) {
    // SAFETY: Per the caller.
    unsafe { bindings::kvm_rs_load_gs_index(sel) };
}
