// SPDX-License-Identifier: GPL-2.0

//! The VMX instructions (`arch/x86/kvm/vmx/vmx_ops.h` and `vmenter.S` in
//! the C KVM): the one place of the VMX backend with `unsafe`.
//!
//! The instructions themselves are in `vmenter.S`, each under an
//! exception-table fixup, and return a status; the wrappers here are safe
//! because of what their argument types carry: interrupts disabled
//! ([`IrqDisabled`]), VMX structures in page-aligned memory owned by the
//! caller ([`VmxPage`]), field encodings of the right width
//! ([`super::vmcs`]). Host-state fields, which decide where a VM exit
//! continues and with which page tables, are written only here
//! ([`write_host_state`]), from the CPU's own state.

use super::vmcs::{
    self, Field16, Field32, Field64, FieldNat, FieldSet, InvType, MsrEntry, RoField32, WritableFieldSet,
};
use core::cell::Cell;
use kernel::{
    hwmem::{HwBox, HwZeroable},
    prelude::*,
    smp::IrqDisabled,
    x86,
};

// SAFETY: `MsrEntry` is `repr(C)` and made of integers only.
unsafe impl HwZeroable for MsrEntry {}

/// A 4 KiB page for the CPU: the VMXON region or a VMCS (its first word is
/// the VMCS revision identifier), or the MSR bitmap.
pub(crate) type VmxPage = HwBox<[u32; 1024]>;

/// A page of MSR-list entries (VM-entry load, VM-exit store, VM-exit load).
pub(crate) type MsrList = HwBox<[MsrEntry; 256]>;

/// Why a VMX instruction did not succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VmxError {
    /// VMfailInvalid: no current VMCS, or an invalid pointer operand.
    FailInvalid,
    /// VMfailValid: the VM-instruction error field has the reason.
    FailValid,
    /// The instruction faulted (#UD or #GP), fixed up.
    Fault,
}

fn status(r: u64) -> core::result::Result<(), VmxError> {
    match r {
        0 => Ok(()),
        1 => Err(VmxError::FailInvalid),
        2 => Err(VmxError::FailValid),
        _ => Err(VmxError::Fault),
    }
}

/// The guest registers the world switch loads and saves: the 16 GPRs in
/// x86 order (RSP is not used here: the VMCS switches it) and CR2.
#[repr(C)]
pub(crate) struct VmxRegs {
    /// RAX..R15.
    pub(crate) gprs: [u64; 16],
    /// CR2.
    pub(crate) cr2: u64,
}

extern "C" {
    fn kvm_rs_vmxon(pa: *const u64) -> u64;
    fn kvm_rs_vmxoff() -> u64;
    fn kvm_rs_vmclear(pa: *const u64) -> u64;
    fn kvm_rs_vmptrld(pa: *const u64) -> u64;
    fn kvm_rs_vmread(field: u64, value: *mut u64) -> u64;
    fn kvm_rs_vmwrite(field: u64, value: u64) -> u64;
    fn kvm_rs_vmread_many(fields: *const u32, values: *mut u64, n: u64) -> u64;
    fn kvm_rs_vmwrite_many(fields: *const u32, values: *const u64, n: u64) -> u64;
    fn kvm_rs_invept(ty: u64, desc: *const [u64; 2]) -> u64;
    fn kvm_rs_invvpid(ty: u64, desc: *const [u64; 2]) -> u64;
    fn kvm_rs_vmx_vcpu_run(regs: *mut VmxRegs, flags: u64) -> u64;
    fn kvm_rs_vmx_do_nmi();
    static kvm_rs_vmx_vmexit: u8;
}

/// CR4.VMXE.
const CR4_VMXE: u64 = 1 << 13;

/// How [`enable_on_this_cpu`] may be told to fail, to test the error path
/// (the `vmxon_fault_test` module parameter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VmxonTest {
    /// A real VMXON.
    None,
    /// VMXON on a region with a wrong revision identifier: VMfailInvalid.
    BadRegion,
    /// VMXON with a non-canonical memory operand: #GP, caught by the fixup.
    Fault,
}

/// Enters VMX operation on this CPU (C: `kvm_cpu_vmxon()` and
/// `vmx_hardware_enable()`): checks that nobody else uses VMX here and that
/// the firmware and the CPU state allow it, sets CR4.VMXE, and executes
/// VMXON on `region` (whose first word must be the VMCS revision identifier).
/// On any failure CR4.VMXE is as it was and the error says why.
///
/// `region` must stay allocated until [`disable_on_this_cpu`] ran on this
/// CPU: the caller keeps it in the per-CPU state, freed only after every
/// CPU's teardown.
pub(crate) fn enable_on_this_cpu(
    _irq: &IrqDisabled,
    region: &VmxPage,
    fixed: &CrFixed,
    test: VmxonTest,
) -> core::result::Result<(), (Error, &'static str)> {
    if x86::read_cr4() & CR4_VMXE != 0 {
        return Err((EBUSY, "CR4.VMXE is already set: another hypervisor uses VMX"));
    }
    let fc = x86::rdmsr_safe(vmcs::msr::IA32_FEATURE_CONTROL).map_err(|_| (EIO, "cannot read IA32_FEATURE_CONTROL"))?;
    vmcs::feature_control_allows_vmxon(fc).map_err(|why| (EOPNOTSUPP, why))?;
    // VMXON requires CR0 and CR4 within the fixed bits (SDM 24.8); VMXE is
    // the one CR4 bit we add.
    let cr0 = x86::read_cr0();
    let cr4 = x86::read_cr4() | CR4_VMXE;
    if cr0 & fixed.cr0_fixed0 != fixed.cr0_fixed0 || cr0 & !fixed.cr0_fixed1 & 0xffff_ffff != 0 {
        return Err((EOPNOTSUPP, "CR0 does not satisfy IA32_VMX_CR0_FIXED0/1"));
    }
    if cr4 & fixed.cr4_fixed0 != fixed.cr4_fixed0 || cr4 & !fixed.cr4_fixed1 & 0xffff_ffff != 0 {
        return Err((EOPNOTSUPP, "CR4 does not satisfy IA32_VMX_CR4_FIXED0/1"));
    }
    let mut pa = region.phys_addr();
    // SAFETY: CR4.VMXE only enables the VMX instructions.
    unsafe { x86::cr4_set_bits(CR4_VMXE) };
    let r = match test {
        // SAFETY: VMXON reads the region's revision identifier and then owns
        // the page until VMXOFF (see above); a fault is fixed up.
        VmxonTest::None => unsafe { kvm_rs_vmxon(&pa) },
        VmxonTest::BadRegion => {
            // A region we do not own is never named: flip the address to
            // beyond MAXPHYADDR, which VMXON checks first (VMfailInvalid).
            pa |= 1 << 63;
            // SAFETY: As above; the operand is invalid on purpose and is
            // refused before any access to it.
            unsafe { kvm_rs_vmxon(&pa) }
        }
        // SAFETY: A non-canonical operand address makes VMXON raise #GP
        // before it reads anything; the fixup returns the fault.
        VmxonTest::Fault => unsafe { kvm_rs_vmxon(0x8000_0000_0000_0000usize as *const u64) },
    };
    if let Err(e) = status(r) {
        // SAFETY: Puts CR4.VMXE back: this CPU is not in VMX operation.
        unsafe { x86::cr4_clear_bits(CR4_VMXE) };
        return Err(match e {
            VmxError::Fault => (EIO, "VMXON faulted (VMX disabled or locked off, or CR0/CR4 not allowed)"),
            VmxError::FailInvalid => (EIO, "VMXON failed: invalid VMXON region (VMfailInvalid)"),
            VmxError::FailValid => (EIO, "VMXON failed: already in VMX operation (VMfailValid)"),
        });
    }
    Ok(())
}

/// Leaves VMX operation on this CPU and clears CR4.VMXE (C:
/// `kvm_cpu_vmxoff()`). Every VMCS active here must have been cleared.
/// Safe to call when VMX is off, and from NMI context (the crash path).
pub(crate) fn disable_on_this_cpu() {
    if x86::read_cr4() & CR4_VMXE == 0 {
        return;
    }
    // SAFETY: VMXOFF ends VMX operation; a fault (not in VMX operation) is
    // fixed up. Nothing of VMX is used on this CPU afterwards.
    let _ = unsafe { kvm_rs_vmxoff() };
    // SAFETY: Clearing CR4.VMXE only disables the VMX instructions.
    unsafe { x86::cr4_clear_bits(CR4_VMXE) };
}

/// VMCLEAR of the VMCS at `pa`: writes its data back to memory and makes it
/// inactive on this CPU (SDM 25.11.3). Any context, including NMI.
///
/// `pa` must be a VMCS region kvm-rs owns (the callers take it from the
/// loaded-VMCS list, whose entries are live VMCSs).
pub(crate) fn vmclear(pa: u64) -> core::result::Result<(), VmxError> {
    // SAFETY: VMCLEAR writes only into the VMCS region at `pa`, which is
    // ours (see above) and not in use by software while active; a fault is
    // fixed up.
    status(unsafe { kvm_rs_vmclear(&pa) })
}

/// VMPTRLD of `vmcs`: makes it the current VMCS of this CPU. The caller
/// has put it on this CPU's loaded-VMCS list first, and keeps it allocated
/// until it has been VMCLEARed.
pub(crate) fn vmptrld(_irq: &IrqDisabled, vmcs: &VmxPage) -> core::result::Result<(), VmxError> {
    let pa = vmcs.phys_addr();
    // SAFETY: VMPTRLD makes the CPU use the region we own (see above) as
    // the current VMCS; a fault is fixed up.
    status(unsafe { kvm_rs_vmptrld(&pa) })
}

/// INVEPT of `ty` for `eptp`.
pub(crate) fn invept(_irq: &IrqDisabled, ty: InvType, eptp: u64) -> core::result::Result<(), VmxError> {
    let desc = [eptp, 0];
    // SAFETY: INVEPT only invalidates cached translations; a fault is fixed up.
    status(unsafe { kvm_rs_invept(ty as u64, &desc) })
}

/// INVVPID of `ty` for `vpid`.
pub(crate) fn invvpid(_irq: &IrqDisabled, ty: InvType, vpid: u16) -> core::result::Result<(), VmxError> {
    let desc = [u64::from(vpid), 0];
    // SAFETY: INVVPID only invalidates cached translations; a fault is fixed up.
    status(unsafe { kvm_rs_invvpid(ty as u64, &desc) })
}

/// The fixed-bit MSRs, read once at probe.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CrFixed {
    /// `IA32_VMX_CR0_FIXED0`.
    pub(crate) cr0_fixed0: u64,
    /// `IA32_VMX_CR0_FIXED1`.
    pub(crate) cr0_fixed1: u64,
    /// `IA32_VMX_CR4_FIXED0`.
    pub(crate) cr4_fixed0: u64,
    /// `IA32_VMX_CR4_FIXED1`.
    pub(crate) cr4_fixed1: u64,
}

/// Access to this CPU's current VMCS, with interrupts off. Failed accesses
/// are counted, not fatal: the caller checks [`CurrentVmcs::failed`] and
/// reports a failed entry instead of running with a half-written VMCS.
pub(crate) struct CurrentVmcs<'a> {
    _irq: &'a IrqDisabled,
    errors: Cell<u32>,
    first_error: Cell<u32>,
}

/// Whether every field of `S` is unprivileged, as a constant per set.
struct Unprivileged<S>(core::marker::PhantomData<S>);

impl<S: FieldSet> Unprivileged<S> {
    const OK: bool = vmcs::all_unprivileged(S::ENCODINGS);
}

impl<'a> CurrentVmcs<'a> {
    /// Accesses the VMCS made current on this CPU by [`vmptrld`] (with no
    /// current VMCS every access fails with VMfailInvalid, harmlessly).
    pub(crate) fn new(irq: &'a IrqDisabled) -> Self {
        Self { _irq: irq, errors: Cell::new(0), first_error: Cell::new(0) }
    }

    /// The number of failed accesses and the first failing field encoding.
    pub(crate) fn failed(&self) -> Option<(u32, u32)> {
        let n = self.errors.get();
        (n != 0).then(|| (n, self.first_error.get()))
    }

    fn note(&self, enc: u32, r: u64) {
        if r != 0 {
            if self.errors.get() == 0 {
                self.first_error.set(enc);
            }
            self.errors.set(self.errors.get() + 1);
        }
    }

    fn read(&self, enc: u32) -> u64 {
        let mut v = 0u64;
        // SAFETY: VMREAD only reads the current VMCS; `v` is a valid
        // destination; a fault is fixed up.
        let r = unsafe { kvm_rs_vmread(u64::from(enc), &mut v) };
        self.note(enc, r);
        v
    }

    // Inlined into the typed writers below, whose field is a constant at
    // every call: the privilege check then folds away (as a call, its scan
    // of the address fields cost some 60 instructions per VMWRITE).
    #[inline(always)]
    fn write(&self, enc: u32, v: u64) {
        if vmcs::is_privileged(enc) {
            self.note(enc, 4);
            return;
        }
        // SAFETY: The field is neither host state nor a pointer to memory
        // the CPU accesses (checked above): writing it changes only how the
        // guest runs and exits. A fault is fixed up.
        let r = unsafe { kvm_rs_vmwrite(u64::from(enc), v) };
        self.note(enc, r);
    }

    /// # Safety
    ///
    /// For privileged fields: the value is what the field must hold for the
    /// host to survive the next VM exit (host state) or names memory that
    /// stays allocated while the VMCS may be used (addresses).
    unsafe fn write_privileged(&self, enc: u32, v: u64) {
        // SAFETY: Per the caller; a fault is fixed up.
        let r = unsafe { kvm_rs_vmwrite(u64::from(enc), v) };
        self.note(enc, r);
    }

    /// Reads every field of a [`FieldSet`] with one call; a field that
    /// cannot be read is counted as failed and reads as 0, the others are
    /// still read.
    ///
    /// `set` is filled in place: a set is a few hundred bytes, and copying
    /// it cost as much as the VMREADs.
    pub(crate) fn read_set<S: FieldSet>(&self, set: &mut S) {
        let enc = S::ENCODINGS;
        let raw = set.raw_mut();
        let n = enc.len().min(raw.len());
        let mut start = 0;
        while start < n {
            let (e, r) = (&enc[start..n], &mut raw[start..n]);
            // SAFETY: VMREAD only reads the current VMCS; `e` and `r` are
            // valid for `n - start` elements; faults are fixed up.
            let done = unsafe { kvm_rs_vmread_many(e.as_ptr(), r.as_mut_ptr(), (n - start) as u64) } as usize;
            start += done;
            if start < n {
                self.note(enc[start], 1);
                start += 1;
            }
        }
    }

    /// Writes every field of a [`WritableFieldSet`] with one call (its
    /// fields are neither host state nor addresses: checked where the set
    /// is declared); a field that cannot be written is counted as failed,
    /// the others are still written.
    pub(crate) fn write_set<S: WritableFieldSet>(&self, set: &S) {
        let enc = S::ENCODINGS;
        // The trait can be implemented without the macro's declaration-time
        // check: this one, evaluated at compile time per set, keeps the
        // VMWRITEs below unprivileged whatever the implementation.
        if !Unprivileged::<S>::OK {
            self.note(enc.first().copied().unwrap_or(0), 4);
            return;
        }
        let raw = set.raw();
        let n = enc.len().min(raw.len());
        let mut start = 0;
        while start < n {
            let (e, r) = (&enc[start..n], &raw[start..n]);
            // SAFETY: The fields are unprivileged (checked above): writing them
            // changes only how the guest runs and exits. `e` and `r` are
            // valid for `n - start` elements; faults are fixed up.
            let done = unsafe { kvm_rs_vmwrite_many(e.as_ptr(), r.as_ptr(), (n - start) as u64) } as usize;
            start += done;
            if start < n {
                self.note(enc[start], 1);
                start += 1;
            }
        }
    }

    /// Reads a 32-bit VM-exit information field.
    pub(crate) fn read_ro32(&self, f: RoField32) -> u32 {
        self.read(f.encoding()) as u32
    }
    /// Writes a 16-bit field (not host state: refused and counted as failed).
    #[inline(always)]
    pub(crate) fn write16(&self, f: Field16, v: u16) {
        self.write(f.encoding(), u64::from(v));
    }
    /// Writes a 32-bit field.
    #[inline(always)]
    pub(crate) fn write32(&self, f: Field32, v: u32) {
        self.write(f.encoding(), u64::from(v));
    }
    /// Writes a 64-bit field (not an address: refused and counted as failed).
    #[inline(always)]
    pub(crate) fn write64(&self, f: Field64, v: u64) {
        self.write(f.encoding(), v);
    }
    /// Writes a natural-width field.
    #[inline(always)]
    pub(crate) fn write_nat(&self, f: FieldNat, v: u64) {
        self.write(f.encoding(), v);
    }

    /// Points the VMCS at the structures the CPU uses while the guest runs:
    /// the MSR bitmap, the virtual-APIC page, the three MSR lists (with
    /// their entry counts), and the EPT root, and sets the VMCS link pointer
    /// to "none".
    ///
    /// The bitmap, virtual-APIC page and lists are boxes that the vCPU owning
    /// this VMCS holds (the bitmap through an `Arc`) and that are freed only
    /// with it, after the VMCS was cleared; `eptp` names the VM's EPT root,
    /// which lives as long as the VM, longer than its vCPUs.
    pub(crate) fn set_pointers(&self, p: &VmcsPointers<'_>) {
        let cnt = |n: usize| n.min(256) as u64;
        // SAFETY: See above: every address names memory that outlives any
        // use of this VMCS, of the size the counts say.
        unsafe {
            self.write_privileged(vmcs::MSR_BITMAP.encoding(), p.msr_bitmap.phys_addr());
            if let Some(va) = p.virtual_apic {
                self.write_privileged(vmcs::VIRTUAL_APIC_PAGE_ADDR.encoding(), va.phys_addr());
            }
            self.write_privileged(vmcs::VM_ENTRY_MSR_LOAD_ADDR.encoding(), p.entry_load.phys_addr());
            self.write_privileged(vmcs::VM_ENTRY_MSR_LOAD_COUNT.encoding(), cnt(p.entry_load_count));
            self.write_privileged(vmcs::VM_EXIT_MSR_STORE_ADDR.encoding(), p.exit_store.phys_addr());
            self.write_privileged(vmcs::VM_EXIT_MSR_STORE_COUNT.encoding(), cnt(p.exit_store_count));
            self.write_privileged(vmcs::VM_EXIT_MSR_LOAD_ADDR.encoding(), p.exit_load.phys_addr());
            self.write_privileged(vmcs::VM_EXIT_MSR_LOAD_COUNT.encoding(), cnt(p.exit_load_count));
            self.write_privileged(vmcs::EPT_POINTER.encoding(), p.eptp);
            self.write_privileged(vmcs::VMCS_LINK_POINTER.encoding(), u64::MAX);
        }
    }

    /// Points the VMCS at another MSR bitmap (the one that makes every MSR
    /// exit while an MSR filter is set, or back). Same lifetime rule as
    /// [`CurrentVmcs::set_pointers`]: the vCPU holds the bitmap.
    pub(crate) fn set_msr_bitmap(&self, bitmap: &VmxPage) {
        // SAFETY: A page of 4 KiB, as the MSR bitmap must be, that outlives
        // any use of this VMCS (see above).
        unsafe { self.write_privileged(vmcs::MSR_BITMAP.encoding(), bitmap.phys_addr()) };
    }
}

/// The structures a VMCS names (see [`CurrentVmcs::set_pointers`]).
pub(crate) struct VmcsPointers<'a> {
    /// MSR bitmap.
    pub(crate) msr_bitmap: &'a VmxPage,
    /// Virtual-APIC page, with TPR shadow.
    pub(crate) virtual_apic: Option<&'a VmxPage>,
    /// VM-entry MSR-load list and its length.
    pub(crate) entry_load: &'a MsrList,
    /// Entries used.
    pub(crate) entry_load_count: usize,
    /// VM-exit MSR-store list.
    pub(crate) exit_store: &'a MsrList,
    /// Entries used.
    pub(crate) exit_store_count: usize,
    /// VM-exit MSR-load list.
    pub(crate) exit_load: &'a MsrList,
    /// Entries used.
    pub(crate) exit_load_count: usize,
    /// EPT pointer of the VM's EPT root.
    pub(crate) eptp: u64,
}

/// The host state of the current task that a VM exit does not restore the
/// way the kernel needs, read before entry (C: `vmx_prepare_switch_to_guest()`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct HostSegments {
    ds: u16,
    es: u16,
    fs: u16,
    gs: u16,
    ldt: u16,
    /// The task's user GS base (in `MSR_KERNEL_GS_BASE` while in the kernel).
    pub(crate) kernel_gs_base: u64,
}

fn read_segments() -> (u16, u16, u16, u16, u16) {
    let (ds, es, fs, gs, ldt): (u16, u16, u16, u16, u16);
    // SAFETY: Reading segment selectors and the LDT selector has no side effects.
    unsafe {
        core::arch::asm!(
            "mov {0:x}, ds", "mov {1:x}, es", "mov {2:x}, fs", "mov {3:x}, gs", "sldt {4:x}",
            out(reg) ds, out(reg) es, out(reg) fs, out(reg) gs, out(reg) ldt,
            options(nomem, nostack, preserves_flags)
        )
    };
    (ds, es, fs, gs, ldt)
}

/// Fills the host-state area of the current VMCS from this CPU and the
/// current task (C: `vmx_set_constant_host_state()`, the per-CPU part of
/// `vmx_vcpu_load_vmcs()` and `vmx_set_host_fs_gs()`), and returns what
/// [`restore_host_segments`] needs after the exit. Called before every
/// entry: the values are the ones the host must have when the exit comes
/// back, and the task may have migrated or been switched since the last one.
pub(crate) fn write_host_state(irq: &IrqDisabled, v: &CurrentVmcs<'_>, cache: &mut HostStateCache) -> HostSegments {
    let (ds, es, fs, gs, ldt) = read_segments();
    // The task's user FS and GS bases: only the task itself changes them,
    // in user mode (or ptrace while it is stopped there), so they hold for
    // the whole of `KVM_RUN` (C: read once per vcpu_load as well).
    let (fs_base, kernel_gs_base) = *cache.task_msrs.get_or_insert_with(|| {
        (x86::rdmsr_safe(0xc000_0100).unwrap_or(0), x86::rdmsr_safe(0xc000_0102).unwrap_or(0))
    });
    let cpu = irq.cpu();
    let cr3 = x86::read_cr3();
    let cr4 = x86::read_cr4();
    let fresh = cache.cpu != Some(cpu);
    // SAFETY: Every value written is this CPU's or the current task's own
    // state, which is what the host must get back at the VM exit (SDM 28.5
    // "Loading Host State"): CR0/CR3/CR4, the kernel's CS/SS/TR selectors,
    // this CPU's GDT/IDT/TSS bases, GS base (per-CPU data), the task's FS
    // base and selectors (those with RPL or TI set are restored by
    // `restore_host_segments` instead: the VMCS cannot hold them), the
    // SYSENTER and PAT/EFER MSRs as they are now, and the world switch's
    // return address. HOST_RSP is written by the world switch itself.
    unsafe {
        if fresh {
            let d = x86::host_descriptors(irq);
            v.write_privileged(vmcs::HOST_CS_SELECTOR.encoding(), u64::from(d.kernel_cs));
            v.write_privileged(vmcs::HOST_SS_SELECTOR.encoding(), u64::from(d.kernel_ds));
            v.write_privileged(vmcs::HOST_TR_SELECTOR.encoding(), u64::from(d.tr_selector));
            v.write_privileged(vmcs::HOST_GDTR_BASE.encoding(), d.gdt_base);
            v.write_privileged(vmcs::HOST_IDTR_BASE.encoding(), d.idt_base);
            v.write_privileged(vmcs::HOST_TR_BASE.encoding(), d.tr_base);
            v.write_privileged(vmcs::HOST_CR0.encoding(), x86::read_cr0());
            v.write_privileged(vmcs::HOST_GS_BASE.encoding(), x86::rdmsr_safe(0xc000_0101).unwrap_or(0));
            v.write_privileged(vmcs::HOST_IA32_SYSENTER_CS.encoding(), x86::rdmsr_safe(0x174).unwrap_or(0));
            v.write_privileged(vmcs::HOST_IA32_SYSENTER_ESP.encoding(), x86::rdmsr_safe(0x175).unwrap_or(0));
            v.write_privileged(vmcs::HOST_IA32_SYSENTER_EIP.encoding(), x86::rdmsr_safe(0x176).unwrap_or(0));
            v.write_privileged(vmcs::HOST_IA32_PAT.encoding(), x86::rdmsr_safe(0x277).unwrap_or(0));
            v.write_privileged(vmcs::HOST_IA32_EFER.encoding(), x86::rdmsr_safe(0xc000_0080).unwrap_or(0));
            v.write_privileged(vmcs::HOST_RIP.encoding(), core::ptr::addr_of!(kvm_rs_vmx_vmexit) as u64);
            v.write_privileged(vmcs::HOST_DS_SELECTOR.encoding(), 0);
            v.write_privileged(vmcs::HOST_ES_SELECTOR.encoding(), 0);
            cache.cpu = Some(cpu);
            cache.cr3 = None;
            cache.cr4 = None;
            cache.fs = None;
        }
        if cache.cr3 != Some(cr3) {
            v.write_privileged(vmcs::HOST_CR3.encoding(), cr3);
            cache.cr3 = Some(cr3);
        }
        if cache.cr4 != Some(cr4) {
            v.write_privileged(vmcs::HOST_CR4.encoding(), cr4);
            cache.cr4 = Some(cr4);
        }
        let sel = |s: u16| if s & 7 == 0 { s } else { 0 };
        if cache.fs != Some((fs, gs, fs_base)) {
            v.write_privileged(vmcs::HOST_FS_SELECTOR.encoding(), u64::from(sel(fs)));
            v.write_privileged(vmcs::HOST_GS_SELECTOR.encoding(), u64::from(sel(gs)));
            v.write_privileged(vmcs::HOST_FS_BASE.encoding(), fs_base);
            cache.fs = Some((fs, gs, fs_base));
        }
    }
    HostSegments { ds, es, fs, gs, ldt, kernel_gs_base }
}

/// What [`write_host_state`] last wrote into a VMCS, so that only changes
/// are written. Keyed by CPU: the fields stay in the VMCS across VMCLEAR,
/// and a VMCS used on another CPU in between gets them all written again.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct HostStateCache {
    cpu: Option<u32>,
    cr3: Option<u64>,
    cr4: Option<u64>,
    fs: Option<(u16, u16, u64)>,
    /// The task's FS base and user GS base (`MSR_KERNEL_GS_BASE`), read
    /// once per load of the vCPU.
    task_msrs: Option<(u64, u64)>,
}

impl HostStateCache {
    /// The vCPU is loaded (`KVM_RUN` starts, or another CPU): read the
    /// task's FS and user GS bases again at the next entry.
    pub(crate) fn reload_task_msrs(&mut self) {
        self.task_msrs = None;
    }
}


/// After a VM exit: restores what the exit left different from the host's
/// state (C: `vmx_prepare_switch_to_host()`): the LDT and selectors with RPL
/// or TI set (with the user GS base they imply), DS/ES, the TSS limit, the
/// GDT limit, and the host's breakpoints.
pub(crate) fn restore_host_segments(irq: &IrqDisabled, h: &HostSegments) {
    if h.ldt != 0 || h.gs & 7 != 0 {
        // SAFETY: Reloads the task's own LDT selector and GS selector as
        // they were before the entry; the user GS base is written back after.
        unsafe {
            core::arch::asm!("lldt {0:x}", in(reg) h.ldt, options(nostack, preserves_flags));
            x86::load_gs_index(h.gs);
            let _ = x86::wrmsr_safe(0xc000_0102, h.kernel_gs_base);
        }
    }
    if h.fs & 7 != 0 {
        // SAFETY: The task's own FS selector, as before the entry.
        unsafe { core::arch::asm!("mov fs, {0:x}", in(reg) h.fs, options(nostack, preserves_flags)) };
    }
    if h.ds | h.es != 0 {
        // SAFETY: The task's own DS and ES selectors, as before the entry.
        unsafe {
            core::arch::asm!("mov ds, {0:x}", "mov es, {1:x}", in(reg) h.ds, in(reg) h.es, options(nostack, preserves_flags))
        };
    }
    x86::invalidate_tss_limit(irq);
    x86::load_fixmap_gdt(irq);
    x86::restore_host_dr7(irq);
}

/// Reads XCR0 (the callers check `Feature::Osxsave` first).
fn xgetbv0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: XGETBV(0) only reads XCR0; valid with CR4.OSXSAVE, see above.
    unsafe { core::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    u64::from(lo) | u64::from(hi) << 32
}

fn rdpkru() -> u32 {
    let v: u32;
    // SAFETY: RDPKRU only reads PKRU; callers switch PKRU only with CR4.PKE.
    unsafe { core::arch::asm!("rdpkru", in("ecx") 0u32, out("eax") v, out("edx") _, options(nomem, nostack, preserves_flags)) };
    v
}

/// # Safety
///
/// CR4.PKE is set, and the value is the guest's (about to run, with
/// interrupts off) or the host's own.
unsafe fn wrpkru(v: u32) {
    // SAFETY: Per the caller.
    unsafe { core::arch::asm!("wrpkru", in("eax") v, in("ecx") 0u32, in("edx") 0u32, options(nostack, preserves_flags)) };
}

/// What the world switch needs besides the registers.
pub(crate) struct SwitchCtx {
    /// Use VMRESUME (the VMCS was launched on this CPU) instead of VMLAUNCH.
    pub(crate) launched: bool,
    /// The guest's XCR0 if it differs from the host's (validated: a subset
    /// of the host's with x87 state).
    pub(crate) guest_xcr0: Option<u64>,
    /// The host's XCR0 (0: the kernel did not set CR4.OSXSAVE).
    pub(crate) host_xcr0: u64,
    /// The guest's PKRU, if it is to be loaded.
    pub(crate) guest_pkru: Option<u32>,
    /// The host's PKRU.
    pub(crate) host_pkru: u32,
    /// `MSR_MISC_FEATURES_ENABLES` for the guest and the host's value to
    /// restore, when they differ ([`vmcs::misc_features_switch`]).
    pub(crate) misc_features: Option<(u64, u64)>,
}

/// What the world switch found.
pub(crate) struct SwitchOut {
    /// `Ok`: a VM exit (possibly a failed VM entry, see the exit reason).
    /// `Err`: VMLAUNCH/VMRESUME failed (VMfail) or faulted.
    pub(crate) result: core::result::Result<(), VmxError>,
    /// The guest's XCR0 at the exit.
    pub(crate) xcr0: u64,
    /// The guest's PKRU at the exit, if it was loaded.
    pub(crate) pkru: Option<u32>,
}

/// Runs the guest of the current VMCS until the next VM exit.
///
/// Must run with interrupts off (`irq`) and after [`write_host_state`] and
/// [`CurrentVmcs::set_pointers`] on this VMCS on this CPU: the VM exit then
/// comes back into `vmenter.S` with the host's state. The EPT tables and
/// every guest page mapped in them stay allocated while any vCPU may be in
/// guest mode: the MMU frees tables and unpins pages only after kicking
/// every vCPU out of guest mode.
pub(crate) fn run(_irq: &IrqDisabled, regs: &mut VmxRegs, ctx: &SwitchCtx) -> SwitchOut {
    // XCR0 always has x87 state: 0 means the kernel did not set CR4.OSXSAVE.
    let has_xsave = ctx.host_xcr0 != 0;
    if let Some(pkru) = ctx.guest_pkru {
        // SAFETY: Only requested when the host has CR4.PKE; interrupts are
        // off, so no host code touches user memory until it is restored.
        unsafe { wrpkru(pkru) };
    }
    if let Some(xcr0) = ctx.guest_xcr0 {
        // SAFETY: A validated XCR0 the CPU accepts; with interrupts off the
        // FPU core cannot save or restore state until it is restored below.
        unsafe { x86::xsetbv(0, xcr0) };
    }
    if let Some((guest, _)) = ctx.misc_features {
        // SAFETY: Clears CPUID faulting/ring-3 MWAIT for the guest only;
        // restored right after the exit, interrupts off in between, so the
        // kernel's per-CPU shadow of the MSR is right whenever it looks.
        let _ = unsafe { x86::wrmsr_safe(vmcs::MSR_MISC_FEATURES_ENABLES, guest) };
    }
    // SAFETY: Interrupts are off; the VMCS is current with its host state
    // filled in for this CPU and task and its pointers naming live memory
    // (see above); `regs` is valid for reads and writes. Faults and VMfails
    // are fixed up and reported.
    let r = unsafe { kvm_rs_vmx_vcpu_run(regs, u64::from(ctx.launched)) };
    if let Some((_, host)) = ctx.misc_features {
        // SAFETY: The host's own value, read before entry.
        let _ = unsafe { x86::wrmsr_safe(vmcs::MSR_MISC_FEATURES_ENABLES, host) };
    }
    // XSETBV always exits under VMX, but read back as SVM does: the host
    // must never run with a guest value.
    let xcr0 = if has_xsave { xgetbv0() } else { 0 };
    if has_xsave && xcr0 != ctx.host_xcr0 {
        // SAFETY: The host's own XCR0, read before entry.
        unsafe { x86::xsetbv(0, ctx.host_xcr0) };
    }
    let pkru = ctx.guest_pkru.map(|_| rdpkru());
    if let Some(p) = pkru {
        if p != ctx.host_pkru {
            // SAFETY: The host's own PKRU; CR4.PKE is set.
            unsafe { wrpkru(ctx.host_pkru) };
        }
    }
    SwitchOut { result: status(r), xcr0, pkru }
}

/// Hands an NMI that caused a VM exit to the kernel's NMI handler (C:
/// `vmx_do_nmi_irqoff()`).
pub(crate) fn handle_nmi_exit(_irq: &IrqDisabled) {
    // SAFETY: Called right after an NMI VM exit with interrupts off: the
    // kernel's VMX NMI entry is made for exactly this, and returns here.
    unsafe { kvm_rs_vmx_do_nmi() };
}
