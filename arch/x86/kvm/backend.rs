// SPDX-License-Identifier: GPL-2.0

//! The vendor backend interface (`kvm_x86_ops` in `asm/kvm-x86-ops.h`): what
//! x86 common code asks of SVM or VMX. A backend keeps the guest state the
//! hardware switches (VMCB or VMCS), enters the guest, and decodes each exit
//! into an [`Exit`] that the common code handles the same way for both.

use super::regs::{KvmDtable, KvmSegment, Seg};
use kernel::{prelude::*, smp::IrqDisabled};

/// An event to inject into the guest, or one whose delivery an exit interrupted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// A hardware exception, with its error code if it has one.
    Exception {
        /// Vector (0-31).
        vector: u8,
        /// Error code.
        error_code: Option<u32>,
    },
    /// An NMI.
    Nmi,
    /// An external (or software, `soft`) interrupt.
    Interrupt {
        /// Vector.
        vector: u8,
        /// INTn (a software interrupt, re-injected after an exit).
        soft: bool,
    },
}

/// Exception vectors.
// The architectural vectors (SDM vol. 3A, table 6-1); the code names a subset.
#[allow(dead_code)]
pub(crate) mod vector {
    /// #DE.
    pub(crate) const DE: u8 = 0;
    /// #DB.
    pub(crate) const DB: u8 = 1;
    /// #BP.
    pub(crate) const BP: u8 = 3;
    /// #UD.
    pub(crate) const UD: u8 = 6;
    /// #DF.
    pub(crate) const DF: u8 = 8;
    /// #TS.
    pub(crate) const TS: u8 = 10;
    /// #NP.
    pub(crate) const NP: u8 = 11;
    /// #SS.
    pub(crate) const SS: u8 = 12;
    /// #GP.
    pub(crate) const GP: u8 = 13;
    /// #PF.
    pub(crate) const PF: u8 = 14;
    /// #AC.
    pub(crate) const AC: u8 = 17;
    /// #MC.
    pub(crate) const MC: u8 = 18;
}

/// A control-register access the backend intercepted (VMX exits on writes
/// to the CR0/CR4 bits KVM owns and on every CR8 access).
#[derive(Clone, Copy, Debug)]
pub(crate) enum CrOp {
    /// MOV to CRn from this general-purpose register.
    MovTo(u8),
    /// MOV from CRn to this general-purpose register.
    MovFrom(u8),
    /// MOV to CRn, the source register not reported by the hardware (SVM
    /// without decode assists): decoded from the instruction at RIP.
    MovToUndecoded,
    /// CLTS.
    Clts,
    /// LMSW with this source operand.
    Lmsw(u16),
}

/// Why the guest exited, decoded by the backend.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Exit {
    /// IN/OUT/INS/OUTS.
    Io {
        /// Port.
        port: u16,
        /// Access size: 1, 2 or 4.
        size: u8,
        /// IN or INS.
        input: bool,
        /// INS/OUTS.
        string: bool,
        /// With a REP prefix.
        rep: bool,
        /// Address size of a string instruction: 2, 4 or 8.
        addr_size: u8,
        /// Segment of the source of OUTS (DS unless overridden), if known.
        seg: Option<Seg>,
    },
    /// CPUID.
    Cpuid,
    /// RDMSR.
    Rdmsr,
    /// WRMSR.
    Wrmsr,
    /// HLT.
    Hlt,
    /// VMMCALL/VMCALL.
    Hypercall,
    /// XSETBV.
    Xsetbv,
    /// An instruction KVM intercepts only to refuse (raise #UD): SVM/VMX
    /// instructions, RDTSCP/RDPID without the feature, MONITOR/MWAIT...
    UdInstruction,
    /// INVD/WBINVD: skipped (no caches to write back for a guest).
    Wbinvd,
    /// PAUSE (only with pause-loop exiting).
    Pause,
    /// RDPMC.
    Rdpmc,
    /// A guest access missed the nested/extended page table.
    TdpFault {
        /// Guest-physical address.
        gpa: u64,
        /// The access was a write.
        write: bool,
        /// The access was an instruction fetch.
        fetch: bool,
        /// The translation existed but did not allow the access.
        present: bool,
        /// The nested walk faulted on the guest's page tables, not the final access.
        on_table_walk: bool,
    },
    /// A physical interrupt arrived (handled by the host once interrupts are on).
    ExternalInterrupt,
    /// A physical NMI arrived.
    Nmi,
    /// A machine check interrupted the guest; the backend has run the host's
    /// handler (the guest is not told, as with the C KVM).
    MachineCheck,
    /// The guest may now take an interrupt (the requested window opened).
    InterruptWindow,
    /// Triple fault or another shutdown condition.
    Shutdown,
    /// An intercepted exception.
    Exception {
        /// Vector.
        vector: u8,
        /// Error code, if the exception has one.
        error_code: Option<u32>,
        /// Extra information (#PF: the faulting address; #DB: DR6).
        // The payload the C KVM delivers with #PF/#DB (CR2/DR6); only #MC,
        // which has none, is intercepted so far.
        #[allow(dead_code)]
        info: u64,
    },
    /// MOV to or from a debug register (intercepted: guest debug registers
    /// are emulated, never loaded into the hardware).
    DrAccess {
        /// DR number (0-7).
        dr: u8,
        /// MOV to DRn.
        write: bool,
        /// The general-purpose register, when the hardware decoded it.
        gpr: Option<u8>,
    },
    /// A control-register access.
    CrAccess {
        /// CR number (0 for CLTS and LMSW).
        cr: u8,
        /// What the instruction does.
        op: CrOp,
    },
    /// The guest lowered its TPR below the class given to
    /// [`VendorVcpu::set_tpr_threshold`] (VMX "TPR below threshold", a trap:
    /// RIP is past the MOV to CR8). The interrupt it blocked may be taken now.
    TprBelowThreshold,
    /// The backend did not enter the guest (VMX: its VMCS is still active on
    /// another CPU and must be cleared there first). Nothing ran; an event
    /// programmed for this entry is taken back with
    /// [`VendorVcpu::take_injected`] and the entry tried again.
    NotEntered,
    /// Task switch through a gate or JMP/CALL to a TSS: not emulated.
    TaskSwitch,
    /// VM entry failed the hardware's checks.
    FailedEntry {
        /// The backend's raw reason.
        reason: u64,
    },
    /// An exit the backend does not decode.
    Unknown {
        /// Raw exit code.
        code: u64,
        /// Exit qualification / EXITINFO1.
        info1: u64,
        /// EXITINFO2 or the like.
        info2: u64,
    },
}

/// The guest's control state the backend needs from common code at entry,
/// and what the world switch found on the way out.
pub(crate) struct EntryCtx {
    /// XCR0 to load for the guest, if different from the host's.
    pub(crate) guest_xcr0: Option<u64>,
    /// The host's XCR0; 0 when the kernel did not set CR4.OSXSAVE (with
    /// it, XCR0 always has x87 state: never 0).
    pub(crate) host_xcr0: u64,
    /// PKRU to load for the guest (when the guest may use protection keys
    /// and the value differs from the host's).
    pub(crate) guest_pkru: Option<u32>,
    /// The host's PKRU (meaningful only if the host uses protection keys).
    pub(crate) host_pkru: u32,
    /// Out: the guest's XCR0 at the exit (an emulated CPU may not intercept
    /// XSETBV, so the guest can change it behind KVM's back).
    pub(crate) exit_xcr0: u64,
    /// Out: the guest's PKRU at the exit, if it was switched.
    pub(crate) exit_pkru: Option<u32>,
    /// The nested page table root.
    pub(crate) tdp_root: u64,
    /// Flush the guest's TLB entries before entering.
    pub(crate) flush_tlb: bool,
    /// Let the guest access the MSRs the hardware switches (segment bases,
    /// syscall MSRs, PAT) without an exit; false while an MSR filter is set.
    pub(crate) msr_passthrough: bool,
}

/// What a vendor backend does for one vCPU.
pub(crate) trait VendorVcpu: Send {
    /// Sets the architectural state at power-on/INIT (`vcpu_reset`), keeping
    /// what the common code owns (GPRs, RIP).
    fn reset(&mut self);

    /// A segment register.
    fn seg(&self, s: Seg) -> KvmSegment;
    /// Sets a segment register.
    fn set_seg(&mut self, s: Seg, v: &KvmSegment);
    /// GDTR.
    fn gdt(&self) -> KvmDtable;
    /// Sets GDTR.
    fn set_gdt(&mut self, v: &KvmDtable);
    /// IDTR.
    fn idt(&self) -> KvmDtable;
    /// Sets IDTR.
    fn set_idt(&mut self, v: &KvmDtable);

    /// CR0 as the guest sees it.
    fn cr0(&self) -> u64;
    /// Sets CR0 (already checked).
    fn set_cr0(&mut self, v: u64);
    /// CR2.
    fn cr2(&self) -> u64;
    /// Sets CR2.
    fn set_cr2(&mut self, v: u64);
    /// CR3.
    fn cr3(&self) -> u64;
    /// Sets CR3.
    fn set_cr3(&mut self, v: u64);
    /// CR4 as the guest sees it.
    fn cr4(&self) -> u64;
    /// Sets CR4 (already checked).
    fn set_cr4(&mut self, v: u64);
    /// EFER as the guest sees it.
    fn efer(&self) -> u64;
    /// Sets EFER (already checked).
    fn set_efer(&mut self, v: u64);
    /// RFLAGS.
    fn rflags(&self) -> u64;
    /// Sets RFLAGS.
    fn set_rflags(&mut self, v: u64);
    /// DR6.
    fn dr6(&self) -> u64;
    /// Sets DR6.
    fn set_dr6(&mut self, v: u64);
    /// DR7.
    fn dr7(&self) -> u64;
    /// Sets DR7.
    fn set_dr7(&mut self, v: u64);
    /// The current privilege level.
    fn cpl(&self) -> u8;
    /// Whether an STI or MOV SS interrupt shadow is in effect.
    fn interrupt_shadow(&self) -> bool;
    /// Sets or clears the interrupt shadow.
    fn set_interrupt_shadow(&mut self, on: bool);

    /// An MSR the backend keeps in hardware state (syscall MSRs, segment
    /// bases, PAT, debug control...): `None` if it is not one of them.
    fn get_msr(&self, index: u32) -> Option<u64>;
    /// Sets such an MSR; `None` if it is not one of them, `Some(Err(()))` if
    /// the value is invalid (#GP).
    fn set_msr(&mut self, index: u32, value: u64) -> Option<core::result::Result<(), ()>>;
    /// Sets the offset added to the host TSC to form the guest's.
    fn set_tsc_offset(&mut self, offset: u64);

    /// Injects `ev` at the next entry (the caller made sure it is allowed).
    fn inject(&mut self, ev: Event);
    /// The event whose delivery the last exit interrupted, to inject again.
    fn interrupted_event(&self) -> Option<Event>;
    /// Takes back an event programmed by [`VendorVcpu::inject`] that was not
    /// delivered because the entry was abandoned.
    fn take_injected(&mut self) -> Option<Event>;
    /// Whether the guest can take an external interrupt now (IF set, no
    /// shadow, no event being injected).
    fn interrupt_allowed(&self) -> bool;
    /// Whether the guest can take an NMI now.
    fn nmi_allowed(&self) -> bool;
    /// Asks for an [`Exit::InterruptWindow`] once the guest can take an
    /// interrupt (or stops asking).
    fn set_interrupt_window(&mut self, on: bool);
    /// The guest's CR8 (TPR[7:4]) as it may have changed it without an exit.
    fn tpr(&self) -> u8;
    /// Loads the guest's CR8 (0-15) before an entry.
    fn set_tpr(&mut self, cr8: u8);
    /// An interrupt of priority class `class` is pending but blocked by the
    /// TPR (`None`: none is): the guest must exit when it lowers its CR8
    /// below `class`, through an intercepted CR8 write ([`Exit::CrAccess`])
    /// or a TPR-threshold exit. C: `update_cr8_intercept()`.
    fn set_tpr_threshold(&mut self, class: Option<u8>);

    /// `KVM_RUN` starts: host state the backend keeps across entries may
    /// have changed since the last `KVM_RUN` (kvm-rs has no preempt
    /// notifiers; this and a change of CPU are the "vCPU load" points).
    fn vcpu_load(&mut self) {}

    /// `KVM_RUN` ends: the backend brings back whatever guest state it
    /// left in the hardware, so that the getters see it (C: `vcpu_put()`,
    /// here with the VMX fields read only after the exits that need them).
    fn vcpu_put(&mut self) {}

    /// Called before each entry with interrupts enabled: the backend may
    /// prepare what needs them (VMX: VMCLEAR of its VMCS on another CPU).
    fn prepare_entry(&mut self) {}

    /// Enters the guest with interrupts off and returns the decoded exit.
    /// `gprs` are the guest's GPRs (RAX and RSP included), `rip` its RIP.
    /// `next_rip` is set when the hardware reported the address of the next
    /// instruction (NRIPS, VMX instruction length, SVM IOIO).
    fn run(&mut self, irq: &IrqDisabled, ctx: &mut EntryCtx, gprs: &mut [u64; 16], rip: &mut u64) -> (Exit, Option<u64>);
}

/// What a vendor backend does for the whole module.
pub(crate) trait Backend: Send + Sync + 'static {
    /// The per-vCPU part.
    type Vcpu: VendorVcpu;

    /// Creates a vCPU's hardware state in its reset configuration, on the
    /// heap: a vCPU is built by a chain of constructors, and by value it was
    /// copied into each one's stack frame (15 KB of a 16 KB stack with VMX).
    fn create_vcpu(&self) -> Result<KBox<Self::Vcpu>>;

    /// The page-table entry format of the nested/extended page tables: a leaf
    /// mapping `pa` with the given permissions.
    fn tdp_leaf(&self, pa: u64, writable: bool) -> u64;
    /// A non-leaf entry pointing at the table at `pa`.
    fn tdp_table(&self, pa: u64) -> u64;
    /// Number of levels of the nested/extended page table (4).
    fn tdp_levels(&self) -> u32;

    /// The machine-check capabilities `KVM_X86_SETUP_MCE` accepts
    /// (`kvm_caps.supported_mce_cap`): MCG_CTL_P and MCG_SER_P; a backend
    /// adds what its vendor has.
    fn mce_cap(&self) -> u64 {
        super::mce::MCG_CTL_P | super::mce::MCG_SER_P
    }
    /// Whether guests have `IA32_FEATURE_CONTROL` (C: kvm-intel emulates it
    /// for every guest, kvm-amd has no such MSR): the common code then keeps
    /// it (`msrs::feat_ctl_write_ok()`). It is in `KVM_GET_MSR_INDEX_LIST`
    /// when the host can read it, whatever the backend (as in C).
    fn feature_control(&self) -> bool {
        false
    }
    /// The entry without write permission (NPT and EPT both keep it in bit 1).
    fn tdp_wrprot(&self, pte: u64) -> u64 {
        pte & !2
    }
}
