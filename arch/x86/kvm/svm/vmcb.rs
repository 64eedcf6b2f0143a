// SPDX-License-Identifier: GPL-2.0

//! The Virtual Machine Control Block (`struct vmcb` in `asm/svm.h`), its
//! intercept bitmap and the `#VMEXIT` codes (`uapi/asm/svm.h`).
//!
//! Core-only (host-tested). The layout follows AMD APM vol. 2, appendix B
//! ("Layout of VMCB"); intercepts follow section 15.9 and table B-1, exit
//! codes appendix C ("SVM Intercept Exit Codes"). Each field is declared
//! next to its APM offset and the offset is checked at compile time, so a
//! layout mistake cannot build.

use core::mem::{align_of, offset_of, size_of};

/// Types with an all-zero value usable in `const` context, so the VMCB
/// structs get a `ZERO` constant without `unsafe` (arrays above 32
/// elements have no `Default`). Only the layout tests build them so far.
#[cfg(test)]
trait ConstZero {
    /// The all-zero value.
    const ZERO: Self;
}

/// Implements [`ConstZero`] for integer types.
#[cfg(test)]
macro_rules! const_zero_ints {
    ($($t:ty),*) => { $(impl ConstZero for $t { const ZERO: Self = 0; })* };
}
#[cfg(test)]
const_zero_ints!(u8, u16, u32, u64);

#[cfg(test)]
impl<T: ConstZero + Copy, const N: usize> ConstZero for [T; N] {
    const ZERO: Self = [T::ZERO; N];
}

/// Declares a `repr(C)` VMCB struct from a table of `offset => field: type`
/// rows, asserts its size and every field offset at compile time, and gives
/// it an all-zero `ZERO` constant.
///
/// The C header marks these structs `__packed`; every field here is
/// naturally aligned, so `repr(C)` yields the same layout without packing,
/// and the assertions prove it.
macro_rules! vmcb_struct {
    (
        $(#[$meta:meta])*
        struct $name:ident (size $size:expr) {
            $($(#[$fmeta:meta])* $off:literal => $field:ident: $ty:ty,)*
        }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy)]
        pub(crate) struct $name {
            $($(#[$fmeta])* pub(crate) $field: $ty,)*
        }

        const _: () = assert!(size_of::<$name>() == $size);
        $(const _: () = assert!(offset_of!($name, $field) == $off);)*

        #[cfg(test)]
        impl $name {
            /// All fields zero (reserved fields must be zero: APM vol. 2,
            /// appendix B).
            pub(crate) const ZERO: Self = Self { $($field: <$ty as ConstZero>::ZERO,)* };
        }

        #[cfg(test)]
        impl ConstZero for $name {
            const ZERO: Self = Self::ZERO;
        }
    };
}

/// Number of 32-bit intercept words at the start of the control area
/// (`MAX_INTERCEPT`): CR, DR, exceptions, then three instruction/event words.
pub(crate) const MAX_INTERCEPT_WORDS: usize = 6;

/// The intercept word holding the exception vectors (`INTERCEPT_EXCEPTION`).
const EXCEPTION_WORD: usize = 2;

vmcb_struct! {
    /// The VMCB control area, VMCB offsets 0x000..0x400 (APM vol. 2,
    /// table B-1).
    struct VmcbControlArea (size 0x400) {
        /// Intercept vectors.
        0x000 => intercepts: Intercepts,
        /// Reserved.
        0x018 => _reserved_0x018: [u8; 36],
        /// PAUSE filter threshold, in cycles between PAUSEs (APM 15.14.4).
        0x03c => pause_filter_thresh: u16,
        /// PAUSE filter count: PAUSEs allowed before an intercept.
        0x03e => pause_filter_count: u16,
        /// Physical address of the I/O permission map (12 KiB, page aligned).
        0x040 => iopm_base_pa: u64,
        /// Physical address of the MSR permission map (8 KiB, page aligned).
        0x048 => msrpm_base_pa: u64,
        /// Added to the host TSC to form the guest TSC.
        0x050 => tsc_offset: u64,
        /// Guest ASID; 0 belongs to the host and makes VMRUN fail.
        0x058 => asid: u32,
        /// TLB_CONTROL: which TLB entries VMRUN flushes (APM 15.16.2).
        0x05c => tlb_ctl: u8,
        /// Reserved.
        0x05d => _reserved_0x05d: [u8; 3],
        /// Virtual interrupt control: V_TPR, V_IRQ, V_GIF, V_INTR_MASKING, AVIC.
        0x060 => int_ctl: u32,
        /// Vector of the virtual interrupt that V_IRQ injects.
        0x064 => int_vector: u32,
        /// Interrupt shadow (bit 0) and guest interrupt mask (bit 1).
        0x068 => int_state: u32,
        /// Reserved.
        0x06c => _reserved_0x06c: [u8; 4],
        /// EXITCODE, see [`SvmExit`]. The APM defines one 64-bit field (VMRUN
        /// failure is -1); 6.12's C header splits it into `exit_code` and
        /// `exit_code_hi`.
        0x070 => exit_code: u64,
        /// EXITINFO1: exit-specific information.
        0x078 => exit_info_1: u64,
        /// EXITINFO2: exit-specific information.
        0x080 => exit_info_2: u64,
        /// EXITINTINFO: the event being delivered when the exit happened.
        0x088 => exit_int_info: u32,
        /// Error code of the event in `exit_int_info`.
        0x08c => exit_int_info_err: u32,
        /// Nested paging enable (bit 0), SEV (bit 1), SEV-ES (bit 2).
        0x090 => nested_ctl: u64,
        /// AVIC APIC_BAR: guest physical address of the virtual APIC page.
        0x098 => avic_vapic_bar: u64,
        /// Guest physical address of the GHCB (SEV-ES).
        0x0a0 => ghcb_gpa: u64,
        /// EVENTINJ: the event VMRUN injects into the guest (APM 15.20).
        0x0a8 => event_inj: u32,
        /// Error code of the event in `event_inj`.
        0x0ac => event_inj_err: u32,
        /// Nested page table root (nCR3).
        0x0b0 => nested_cr3: u64,
        /// LBR virtualization (bit 0), virtual VMLOAD/VMSAVE (bit 1).
        0x0b8 => virt_ext: u64,
        /// VMCB clean bits: state the CPU may keep cached (APM 15.15.3).
        0x0c0 => clean: u32,
        /// Reserved.
        0x0c4 => _reserved_0x0c4: u32,
        /// nRIP: the next sequential RIP, when the CPU has NRIPS.
        0x0c8 => next_rip: u64,
        /// Number of valid bytes in `insn_bytes` (decode assists).
        0x0d0 => insn_len: u8,
        /// Guest instruction bytes fetched for a #NPF or #PF exit.
        0x0d1 => insn_bytes: [u8; 15],
        /// AVIC backing page physical address.
        0x0e0 => avic_backing_page: u64,
        /// Reserved.
        0x0e8 => _reserved_0x0e8: [u8; 8],
        /// AVIC logical APIC ID table pointer.
        0x0f0 => avic_logical_id: u64,
        /// AVIC physical APIC ID table pointer and maximum index.
        0x0f8 => avic_physical_id: u64,
        /// Reserved.
        0x100 => _reserved_0x100: [u8; 8],
        /// VMSA pointer: the encrypted save area of an SEV-ES guest.
        0x108 => vmsa_pa: u64,
        /// Reserved.
        0x110 => _reserved_0x110: [u8; 720],
        /// Reserved for hypervisor/software use; C KVM keeps Hyper-V
        /// enlightenments here.
        0x3e0 => reserved_sw: [u8; 32],
    }
}

vmcb_struct! {
    /// A segment register as the VMCB stores it (APM vol. 2, 15.5.1).
    #[derive(Debug, PartialEq, Eq)]
    struct VmcbSeg (size 16) {
        /// Selector.
        0 => selector: u16,
        /// Descriptor attributes, compressed to 12 bits (type, S, DPL, P,
        /// AVL, L, D/B, G).
        2 => attrib: u16,
        /// Expanded segment limit, in bytes.
        4 => limit: u32,
        /// Segment base.
        8 => base: u64,
    }
}

vmcb_struct! {
    /// The state-save area of a legacy (non-SEV-ES) guest, VMCB offsets
    /// 0x400..0x6e8 (APM vol. 2, table B-2). Offsets are relative to the
    /// area, as in the APM and in C's `struct vmcb_save_area`.
    struct VmcbSaveArea (size 744) {
        /// ES.
        0x000 => es: VmcbSeg,
        /// CS.
        0x010 => cs: VmcbSeg,
        /// SS.
        0x020 => ss: VmcbSeg,
        /// DS.
        0x030 => ds: VmcbSeg,
        /// FS.
        0x040 => fs: VmcbSeg,
        /// GS.
        0x050 => gs: VmcbSeg,
        /// GDTR (only base and limit are used).
        0x060 => gdtr: VmcbSeg,
        /// LDTR.
        0x070 => ldtr: VmcbSeg,
        /// IDTR (only base and limit are used).
        0x080 => idtr: VmcbSeg,
        /// TR.
        0x090 => tr: VmcbSeg,
        /// Reserved.
        0x0a0 => _reserved_0x0a0: [u8; 42],
        /// VMPL of the guest (SEV-SNP).
        0x0ca => vmpl: u8,
        /// Current privilege level; the CPU takes it from here, not SS.DPL.
        0x0cb => cpl: u8,
        /// Reserved.
        0x0cc => _reserved_0x0cc: [u8; 4],
        /// EFER; VMRUN fails unless EFER.SVME is set.
        0x0d0 => efer: u64,
        /// Reserved.
        0x0d8 => _reserved_0x0d8: [u8; 112],
        /// CR4.
        0x148 => cr4: u64,
        /// CR3 (the guest's own page table root).
        0x150 => cr3: u64,
        /// CR0.
        0x158 => cr0: u64,
        /// DR7.
        0x160 => dr7: u64,
        /// DR6.
        0x168 => dr6: u64,
        /// RFLAGS.
        0x170 => rflags: u64,
        /// RIP.
        0x178 => rip: u64,
        /// Reserved.
        0x180 => _reserved_0x180: [u8; 88],
        /// RSP.
        0x1d8 => rsp: u64,
        /// S_CET (supervisor shadow stack control).
        0x1e0 => s_cet: u64,
        /// SSP (shadow stack pointer).
        0x1e8 => ssp: u64,
        /// ISST_ADDR (interrupt shadow stack table).
        0x1f0 => isst_addr: u64,
        /// RAX; the other GPRs are not in the VMCB and software switches them.
        0x1f8 => rax: u64,
        /// STAR.
        0x200 => star: u64,
        /// LSTAR.
        0x208 => lstar: u64,
        /// CSTAR.
        0x210 => cstar: u64,
        /// SFMASK.
        0x218 => sfmask: u64,
        /// KernelGSBase.
        0x220 => kernel_gs_base: u64,
        /// SYSENTER_CS.
        0x228 => sysenter_cs: u64,
        /// SYSENTER_ESP.
        0x230 => sysenter_esp: u64,
        /// SYSENTER_EIP.
        0x238 => sysenter_eip: u64,
        /// CR2.
        0x240 => cr2: u64,
        /// Reserved.
        0x248 => _reserved_0x248: [u8; 32],
        /// Guest PAT, used with nested paging.
        0x268 => g_pat: u64,
        /// DBGCTL MSR, used with LBR virtualization.
        0x270 => dbgctl: u64,
        /// LastBranchFromIP.
        0x278 => br_from: u64,
        /// LastBranchToIP.
        0x280 => br_to: u64,
        /// LastIntFromIP.
        0x288 => last_excp_from: u64,
        /// LastIntToIP.
        0x290 => last_excp_to: u64,
        /// Reserved.
        0x298 => _reserved_0x298: [u8; 72],
        /// Guest SPEC_CTRL, when the CPU swaps it on VMRUN/#VMEXIT.
        0x2e0 => spec_ctrl: u64,
    }
}

vmcb_struct! {
    /// One VMCB: the 4 KiB page whose physical address VMRUN takes in rAX.
    /// The alignment encodes the APM's rule that it be page aligned
    /// (APM vol. 2, 15.5.1).
    #[repr(align(4096))]
    struct Vmcb (size 4096) {
        /// Control area.
        0x000 => control: VmcbControlArea,
        /// State-save area.
        0x400 => save: VmcbSaveArea,
        /// Rest of the page, reserved.
        0x6e8 => _reserved_0x6e8: [u8; 2328],
    }
}

const _: () = assert!(align_of::<Vmcb>() == 4096);

/// Declares [`Intercept`] from `Name = absolute bit => doc` rows; tests
/// also get the list of all variants.
macro_rules! intercepts {
    ($(#[$meta:meta])* enum $name:ident { $($v:ident = $bit:literal => $doc:literal,)* }) => {
        $(#[$meta])*
        #[repr(u8)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub(crate) enum $name {
            $(#[doc = $doc] $v = $bit,)*
        }

        // Every bit lies in an intercept word, and not in the exception word.
        $(const _: () = assert!($bit < 32 * MAX_INTERCEPT_WORDS && $bit / 32 != EXCEPTION_WORD);)*

        impl $name {
            /// Every intercept, in declaration order.
            #[cfg(test)]
            const ALL: &'static [Self] = &[$(Self::$v),*];
        }
    };
}

intercepts! {
    /// An intercept bit of the VMCB, numbered across the six intercept words
    /// (word * 32 + bit) as C's `INTERCEPT_*` enum does (APM vol. 2,
    /// table B-1).
    ///
    /// Exceptions (word 2) are not here: see [`ExceptionVector`]. Every
    /// discriminant is below `32 * MAX_INTERCEPT_WORDS`, so the range check
    /// that C's `vmcb_set_intercept()` does with `WARN_ON_ONCE` cannot fail.
    // The APM table B-1 intercepts, listed for reference; the backend sets a subset.
    #[allow(dead_code)]
    enum Intercept {
        Cr0Read = 0 => "Word 0 bit 0: read of CR0.",
        Cr3Read = 3 => "Word 0 bit 3: read of CR3.",
        Cr4Read = 4 => "Word 0 bit 4: read of CR4.",
        Cr8Read = 8 => "Word 0 bit 8: read of CR8.",
        Cr0Write = 16 => "Word 0 bit 16: write of CR0.",
        Cr3Write = 19 => "Word 0 bit 19: write of CR3.",
        Cr4Write = 20 => "Word 0 bit 20: write of CR4.",
        Cr8Write = 24 => "Word 0 bit 24: write of CR8.",
        Dr0Read = 32 => "Word 1 bit 0: read of DR0.",
        Dr1Read = 33 => "Word 1 bit 1: read of DR1.",
        Dr2Read = 34 => "Word 1 bit 2: read of DR2.",
        Dr3Read = 35 => "Word 1 bit 3: read of DR3.",
        Dr4Read = 36 => "Word 1 bit 4: read of DR4.",
        Dr5Read = 37 => "Word 1 bit 5: read of DR5.",
        Dr6Read = 38 => "Word 1 bit 6: read of DR6.",
        Dr7Read = 39 => "Word 1 bit 7: read of DR7.",
        Dr0Write = 48 => "Word 1 bit 16: write of DR0.",
        Dr1Write = 49 => "Word 1 bit 17: write of DR1.",
        Dr2Write = 50 => "Word 1 bit 18: write of DR2.",
        Dr3Write = 51 => "Word 1 bit 19: write of DR3.",
        Dr4Write = 52 => "Word 1 bit 20: write of DR4.",
        Dr5Write = 53 => "Word 1 bit 21: write of DR5.",
        Dr6Write = 54 => "Word 1 bit 22: write of DR6.",
        Dr7Write = 55 => "Word 1 bit 23: write of DR7.",
        Intr = 96 => "Word 3 bit 0: physical INTR.",
        Nmi = 97 => "Word 3 bit 1: physical NMI.",
        Smi = 98 => "Word 3 bit 2: physical SMI.",
        Init = 99 => "Word 3 bit 3: INIT.",
        Vintr = 100 => "Word 3 bit 4: virtual interrupt taken (V_IRQ).",
        SelectiveCr0 = 101 => "Word 3 bit 5: CR0 writes changing bits other than TS and MP.",
        StoreIdtr = 102 => "Word 3 bit 6: SIDT.",
        StoreGdtr = 103 => "Word 3 bit 7: SGDT.",
        StoreLdtr = 104 => "Word 3 bit 8: SLDT.",
        StoreTr = 105 => "Word 3 bit 9: STR.",
        LoadIdtr = 106 => "Word 3 bit 10: LIDT.",
        LoadGdtr = 107 => "Word 3 bit 11: LGDT.",
        LoadLdtr = 108 => "Word 3 bit 12: LLDT.",
        LoadTr = 109 => "Word 3 bit 13: LTR.",
        Rdtsc = 110 => "Word 3 bit 14: RDTSC.",
        Rdpmc = 111 => "Word 3 bit 15: RDPMC.",
        Pushf = 112 => "Word 3 bit 16: PUSHF.",
        Popf = 113 => "Word 3 bit 17: POPF.",
        Cpuid = 114 => "Word 3 bit 18: CPUID.",
        Rsm = 115 => "Word 3 bit 19: RSM.",
        Iret = 116 => "Word 3 bit 20: IRET.",
        Intn = 117 => "Word 3 bit 21: INTn.",
        Invd = 118 => "Word 3 bit 22: INVD.",
        Pause = 119 => "Word 3 bit 23: PAUSE (subject to the pause filter).",
        Hlt = 120 => "Word 3 bit 24: HLT.",
        Invlpg = 121 => "Word 3 bit 25: INVLPG.",
        Invlpga = 122 => "Word 3 bit 26: INVLPGA.",
        IoioProt = 123 => "Word 3 bit 27: IN/OUT, filtered by the I/O permission map.",
        MsrProt = 124 => "Word 3 bit 28: RDMSR/WRMSR, filtered by the MSR permission map.",
        TaskSwitch = 125 => "Word 3 bit 29: task switch.",
        FerrFreeze = 126 => "Word 3 bit 30: FERR_FREEZE (frozen on an x87 error).",
        Shutdown = 127 => "Word 3 bit 31: shutdown (triple fault).",
        Vmrun = 128 => "Word 4 bit 0: VMRUN; VMRUN fails if it is clear (APM 15.5.1).",
        Vmmcall = 129 => "Word 4 bit 1: VMMCALL.",
        Vmload = 130 => "Word 4 bit 2: VMLOAD.",
        Vmsave = 131 => "Word 4 bit 3: VMSAVE.",
        Stgi = 132 => "Word 4 bit 4: STGI.",
        Clgi = 133 => "Word 4 bit 5: CLGI.",
        Skinit = 134 => "Word 4 bit 6: SKINIT.",
        Rdtscp = 135 => "Word 4 bit 7: RDTSCP.",
        Icebp = 136 => "Word 4 bit 8: ICEBP.",
        Wbinvd = 137 => "Word 4 bit 9: WBINVD and WBNOINVD.",
        Monitor = 138 => "Word 4 bit 10: MONITOR/MONITORX.",
        Mwait = 139 => "Word 4 bit 11: MWAIT/MWAITX, unconditionally.",
        MwaitCond = 140 => "Word 4 bit 12: MWAIT/MWAITX, if the monitor hardware is armed.",
        Xsetbv = 141 => "Word 4 bit 13: XSETBV.",
        Rdpru = 142 => "Word 4 bit 14: RDPRU.",
        TrapEferWrite = 143 => "Word 4 bit 15: trap after an EFER write (SEV-ES).",
        TrapCr0Write = 144 => "Word 4 bit 16: trap after a CR0 write (SEV-ES).",
        TrapCr1Write = 145 => "Word 4 bit 17: trap after a CR1 write.",
        TrapCr2Write = 146 => "Word 4 bit 18: trap after a CR2 write.",
        TrapCr3Write = 147 => "Word 4 bit 19: trap after a CR3 write.",
        TrapCr4Write = 148 => "Word 4 bit 20: trap after a CR4 write.",
        TrapCr5Write = 149 => "Word 4 bit 21: trap after a CR5 write.",
        TrapCr6Write = 150 => "Word 4 bit 22: trap after a CR6 write.",
        TrapCr7Write = 151 => "Word 4 bit 23: trap after a CR7 write.",
        TrapCr8Write = 152 => "Word 4 bit 24: trap after a CR8 write.",
        Invlpgb = 160 => "Word 5 bit 0: INVLPGB.",
        InvlpgbIllegal = 161 => "Word 5 bit 1: INVLPGB with illegal operands.",
        Invpcid = 162 => "Word 5 bit 2: INVPCID.",
        Mcommit = 163 => "Word 5 bit 3: MCOMMIT.",
        Tlbsync = 164 => "Word 5 bit 4: TLBSYNC.",
    }
}

impl Intercept {
    /// The absolute bit number (word * 32 + bit).
    #[cfg(test)]
    pub(crate) const fn bit(self) -> u32 {
        self as u32
    }

    /// Index of the intercept word holding this bit.
    pub(crate) const fn word(self) -> usize {
        self as usize / 32
    }

    /// This intercept's mask within its word.
    pub(crate) const fn mask(self) -> u32 {
        1 << (self as u32 % 32)
    }
}

/// An exception vector, 0..=31: the bits of intercept word 2 and the exit
/// codes `SVM_EXIT_EXCP_BASE + vector` (APM vol. 2, 15.12).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ExceptionVector(u8);

// The named architectural vectors (APM vol. 2, 8.2); the backend uses a subset.
#[allow(dead_code)]
impl ExceptionVector {
    /// #DE, divide error.
    pub(crate) const DE: Self = Self(0);
    /// #DB, debug.
    pub(crate) const DB: Self = Self(1);
    /// #BP, breakpoint.
    pub(crate) const BP: Self = Self(3);
    /// #UD, invalid opcode.
    pub(crate) const UD: Self = Self(6);
    /// #NM, device not available.
    pub(crate) const NM: Self = Self(7);
    /// #GP, general protection.
    pub(crate) const GP: Self = Self(13);
    /// #PF, page fault.
    pub(crate) const PF: Self = Self(14);
    /// #AC, alignment check.
    pub(crate) const AC: Self = Self(17);
    /// #MC, machine check.
    pub(crate) const MC: Self = Self(18);
}

impl ExceptionVector {
    /// The vector `v`, or `None` if it is not an exception vector (>= 32).
    #[cfg(test)]
    pub(crate) const fn new(v: u8) -> Option<Self> {
        if v < 32 {
            Some(Self(v))
        } else {
            None
        }
    }

    /// The vector number.
    pub(crate) const fn get(self) -> u8 {
        self.0
    }
}

/// The intercept words of a control area (`u32 intercepts[MAX_INTERCEPT]`).
/// Bit `n` is bit `n % 32` of word `n / 32`, which on little-endian x86 is
/// the bit C's `__set_bit()` addresses.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Intercepts(pub(crate) [u32; MAX_INTERCEPT_WORDS]);

const _: () = assert!(size_of::<Intercepts>() == 4 * MAX_INTERCEPT_WORDS);

#[cfg(test)]
impl ConstZero for Intercepts {
    const ZERO: Self = Self::EMPTY;
}

impl Intercepts {
    /// No intercepts.
    #[cfg(test)]
    pub(crate) const EMPTY: Self = Self([0; MAX_INTERCEPT_WORDS]);

    /// Sets intercept `i` (`vmcb_set_intercept()`).
    pub(crate) fn set(&mut self, i: Intercept) {
        self.0[i.word()] |= i.mask();
    }

    /// Clears intercept `i` (`vmcb_clr_intercept()`).
    pub(crate) fn clear(&mut self, i: Intercept) {
        self.0[i.word()] &= !i.mask();
    }

    /// Whether intercept `i` is set (`vmcb_is_intercept()`).
    #[cfg(test)]
    pub(crate) const fn test(&self, i: Intercept) -> bool {
        self.0[i.word()] & i.mask() != 0
    }

    /// Intercepts exception `v` (`set_exception_intercept()`).
    pub(crate) fn set_exception(&mut self, v: ExceptionVector) {
        self.0[EXCEPTION_WORD] |= 1 << v.0;
    }

    /// Stops intercepting exception `v` (`clr_exception_intercept()`).
    #[cfg(test)]
    pub(crate) fn clear_exception(&mut self, v: ExceptionVector) {
        self.0[EXCEPTION_WORD] &= !(1 << v.0);
    }

    /// Whether exception `v` is intercepted.
    #[cfg(test)]
    pub(crate) const fn test_exception(&self, v: ExceptionVector) -> bool {
        self.0[EXCEPTION_WORD] & (1 << v.0) != 0
    }
}

/// A control or debug register number, 0..=15, as the CR/DR exit codes
/// carry it (APM vol. 2, appendix C: 0x00..0x3f and 0x90..0x9f).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RegIndex(u8);

impl RegIndex {
    /// Register `n`, or `None` if `n` >= 16.
    #[cfg(test)]
    pub(crate) const fn new(n: u8) -> Option<Self> {
        if n < 16 {
            Some(Self(n))
        } else {
            None
        }
    }

    /// The register number.
    pub(crate) const fn get(self) -> u8 {
        self.0
    }
}

/// First CR read exit code (`SVM_EXIT_READ_CR0`).
const EXIT_READ_CR: u64 = 0x000;
/// First CR write exit code (`SVM_EXIT_WRITE_CR0`).
const EXIT_WRITE_CR: u64 = 0x010;
/// First DR read exit code (`SVM_EXIT_READ_DR0`).
const EXIT_READ_DR: u64 = 0x020;
/// First DR write exit code (`SVM_EXIT_WRITE_DR0`).
const EXIT_WRITE_DR: u64 = 0x030;
/// First exception exit code (`SVM_EXIT_EXCP_BASE`).
const EXIT_EXCP_BASE: u64 = 0x040;
/// First CR write trap exit code (`SVM_EXIT_CR0_WRITE_TRAP`).
const EXIT_CR_WRITE_TRAP: u64 = 0x090;

/// Declares [`SvmExit`] with its ranged variants (CR/DR accesses,
/// exceptions, CR write traps) plus one variant per `Name = code => doc` row, and
/// both directions of the mapping from the same rows. A row whose code
/// falls into a range or repeats another trips `unreachable_patterns`.
macro_rules! svm_exits {
    ($(#[$meta:meta])* enum $name:ident { $($v:ident = $code:literal => $doc:literal,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub(crate) enum $name {
            /// 0x00..0x0f: read of CRn (`SVM_EXIT_READ_CR0` + n).
            ReadCr(RegIndex),
            /// 0x10..0x1f: write of CRn (`SVM_EXIT_WRITE_CR0` + n).
            WriteCr(RegIndex),
            /// 0x20..0x2f: read of DRn.
            ReadDr(RegIndex),
            /// 0x30..0x3f: write of DRn.
            WriteDr(RegIndex),
            /// 0x40..0x5f: exception (`SVM_EXIT_EXCP_BASE` + vector).
            Exception(ExceptionVector),
            /// 0x90..0x9f: trap after a write of CRn (SEV-ES).
            CrWriteTrap(RegIndex),
            $(#[doc = $doc] $v,)*
            /// Any other code, kept so it can be reported.
            Unknown(u64),
        }

        impl $name {
            /// Decodes an EXITCODE; never fails.
            pub(crate) const fn from_raw(raw: u64) -> Self {
                // Each range is at most 32 long, so the `as u8` casts are exact.
                match raw {
                    0x00..=0x0f => Self::ReadCr(RegIndex((raw - EXIT_READ_CR) as u8)),
                    0x10..=0x1f => Self::WriteCr(RegIndex((raw - EXIT_WRITE_CR) as u8)),
                    0x20..=0x2f => Self::ReadDr(RegIndex((raw - EXIT_READ_DR) as u8)),
                    0x30..=0x3f => Self::WriteDr(RegIndex((raw - EXIT_WRITE_DR) as u8)),
                    0x40..=0x5f => Self::Exception(ExceptionVector((raw - EXIT_EXCP_BASE) as u8)),
                    0x90..=0x9f => Self::CrWriteTrap(RegIndex((raw - EXIT_CR_WRITE_TRAP) as u8)),
                    $($code => Self::$v,)*
                    _ => Self::Unknown(raw),
                }
            }

            /// The EXITCODE value.
            pub(crate) const fn raw(self) -> u64 {
                match self {
                    Self::ReadCr(r) => EXIT_READ_CR + r.0 as u64,
                    Self::WriteCr(r) => EXIT_WRITE_CR + r.0 as u64,
                    Self::ReadDr(r) => EXIT_READ_DR + r.0 as u64,
                    Self::WriteDr(r) => EXIT_WRITE_DR + r.0 as u64,
                    Self::Exception(v) => EXIT_EXCP_BASE + v.0 as u64,
                    Self::CrWriteTrap(r) => EXIT_CR_WRITE_TRAP + r.0 as u64,
                    $(Self::$v => $code,)*
                    Self::Unknown(raw) => raw,
                }
            }
        }
    };
}

svm_exits! {
    /// A `#VMEXIT` reason: the VMCB's EXITCODE (APM vol. 2, appendix C), as
    /// `uapi/asm/svm.h` names them.
    ///
    /// [`SvmExit::from_raw`] is total: codes without a name become
    /// [`SvmExit::Unknown`], which `from_raw` never yields for a named code,
    /// so downstream `match`es can be exhaustive and no raw value is lost.
    enum SvmExit {
        Intr = 0x060 => "Physical INTR.",
        Nmi = 0x061 => "Physical NMI.",
        Smi = 0x062 => "Physical SMI.",
        Init = 0x063 => "INIT.",
        Vintr = 0x064 => "Virtual interrupt.",
        Cr0SelWrite = 0x065 => "Selective CR0 write.",
        IdtrRead = 0x066 => "SIDT.",
        GdtrRead = 0x067 => "SGDT.",
        LdtrRead = 0x068 => "SLDT.",
        TrRead = 0x069 => "STR.",
        IdtrWrite = 0x06a => "LIDT.",
        GdtrWrite = 0x06b => "LGDT.",
        LdtrWrite = 0x06c => "LLDT.",
        TrWrite = 0x06d => "LTR.",
        Rdtsc = 0x06e => "RDTSC.",
        Rdpmc = 0x06f => "RDPMC.",
        Pushf = 0x070 => "PUSHF.",
        Popf = 0x071 => "POPF.",
        Cpuid = 0x072 => "CPUID.",
        Rsm = 0x073 => "RSM.",
        Iret = 0x074 => "IRET.",
        Swint = 0x075 => "INTn.",
        Invd = 0x076 => "INVD.",
        Pause = 0x077 => "PAUSE.",
        Hlt = 0x078 => "HLT.",
        Invlpg = 0x079 => "INVLPG.",
        Invlpga = 0x07a => "INVLPGA.",
        Ioio = 0x07b => "IN/OUT; details in EXITINFO1.",
        Msr = 0x07c => "RDMSR (EXITINFO1 = 0) or WRMSR (EXITINFO1 = 1).",
        TaskSwitch = 0x07d => "Task switch.",
        FerrFreeze = 0x07e => "FERR_FREEZE.",
        Shutdown = 0x07f => "Shutdown.",
        Vmrun = 0x080 => "VMRUN.",
        Vmmcall = 0x081 => "VMMCALL.",
        Vmload = 0x082 => "VMLOAD.",
        Vmsave = 0x083 => "VMSAVE.",
        Stgi = 0x084 => "STGI.",
        Clgi = 0x085 => "CLGI.",
        Skinit = 0x086 => "SKINIT.",
        Rdtscp = 0x087 => "RDTSCP.",
        Icebp = 0x088 => "ICEBP.",
        Wbinvd = 0x089 => "WBINVD.",
        Monitor = 0x08a => "MONITOR.",
        Mwait = 0x08b => "MWAIT.",
        MwaitCond = 0x08c => "MWAIT, conditional.",
        Xsetbv = 0x08d => "XSETBV.",
        Rdpru = 0x08e => "RDPRU.",
        EferWriteTrap = 0x08f => "Trap after an EFER write (SEV-ES).",
        Invpcid = 0x0a2 => "INVPCID.",
        Npf = 0x400 => "Nested page fault; EXITINFO1 = error code, EXITINFO2 = GPA.",
        AvicIncompleteIpi = 0x401 => "AVIC could not deliver an IPI.",
        AvicUnacceleratedAccess = 0x402 => "Access to an APIC register AVIC does not accelerate.",
        Vmgexit = 0x403 => "VMGEXIT (SEV-ES).",
        Err = 0xffff_ffff_ffff_ffff => "`SVM_EXIT_ERR` (-1): VMRUN failed its checks (APM 15.5.1).",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Intercept::*;

    #[test]
    fn intercept_numbers_match_c_enum() {
        // (intercept, word, bit), computed from asm/svm.h's INTERCEPT_* enum.
        let cases = [
            (Cr0Read, 0, 0),
            (Cr8Read, 0, 8),
            (Cr0Write, 0, 16),
            (Cr8Write, 0, 24),
            (Dr0Read, 1, 0),
            (Dr7Read, 1, 7),
            (Dr0Write, 1, 16),
            (Dr7Write, 1, 23),
            (Intr, 3, 0),
            (Vintr, 3, 4),
            (Rdtsc, 3, 14),
            (Cpuid, 3, 18),
            (Iret, 3, 20),
            (Hlt, 3, 24),
            (IoioProt, 3, 27),
            (MsrProt, 3, 28),
            (Shutdown, 3, 31),
            (Vmrun, 4, 0),
            (Vmmcall, 4, 1),
            (Xsetbv, 4, 13),
            (Rdpru, 4, 14),
            (TrapEferWrite, 4, 15),
            (TrapCr0Write, 4, 16),
            (TrapCr8Write, 4, 24),
            (Invlpgb, 5, 0),
            (Invpcid, 5, 2),
            (Tlbsync, 5, 4),
        ];
        for (i, word, bit) in cases {
            assert_eq!((i.word(), i.bit() % 32), (word, bit), "{i:?}");
            assert_eq!(i.mask(), 1 << bit);
        }
        assert_eq!(Cpuid.bit(), 114);
        assert_eq!(Vmrun.bit(), 128);
        assert_eq!(Invpcid.bit(), 162);
    }

    #[test]
    fn intercept_list_is_ordered_and_in_range() {
        // 8 CR + 16 DR + 32 (word 3) + 25 (word 4) + 5 (word 5).
        assert_eq!(Intercept::ALL.len(), 86);
        for w in Intercept::ALL.windows(2) {
            assert!(w[0].bit() < w[1].bit(), "{:?} {:?}", w[0], w[1]);
        }
        for &i in Intercept::ALL {
            assert!(i.word() < MAX_INTERCEPT_WORDS && i.word() != EXCEPTION_WORD);
        }
        // Words 3 and 4 are contiguous runs in the C enum.
        assert_eq!(Shutdown.bit() - Intr.bit(), 31);
        assert_eq!(TrapCr8Write.bit() - Vmrun.bit(), 24);
    }

    #[test]
    fn each_intercept_sets_exactly_its_bit() {
        for &i in Intercept::ALL {
            let mut x = Intercepts::EMPTY;
            assert!(!x.test(i));
            x.set(i);
            for (w, &v) in x.0.iter().enumerate() {
                let want = if w == i.word() {
                    1 << (i.bit() % 32)
                } else {
                    0
                };
                assert_eq!(v, want, "{i:?} word {w}");
            }
            for &j in Intercept::ALL {
                assert_eq!(x.test(j), i == j, "{i:?} set, testing {j:?}");
            }
            x.set(i);
            assert_eq!(x.0.iter().map(|w| w.count_ones()).sum::<u32>(), 1);
            x.clear(i);
            assert_eq!(x, Intercepts::EMPTY);
        }
    }

    #[test]
    fn clear_leaves_other_bits() {
        let mut full = Intercepts::EMPTY;
        for &i in Intercept::ALL {
            full.set(i);
        }
        full.set_exception(ExceptionVector::PF);
        for &i in Intercept::ALL {
            let mut y = full;
            y.clear(i);
            assert!(!y.test(i));
            for &j in Intercept::ALL.iter().filter(|&&j| j != i) {
                assert!(y.test(j), "clearing {i:?} cleared {j:?}");
            }
            assert!(y.test_exception(ExceptionVector::PF));
            y.set(i);
            assert_eq!(y, full);
        }
    }

    #[test]
    fn exception_vectors() {
        assert_eq!(ExceptionVector::new(0), Some(ExceptionVector::DE));
        assert_eq!(ExceptionVector::new(31).map(ExceptionVector::get), Some(31));
        assert_eq!(ExceptionVector::new(32), None);
        assert_eq!(ExceptionVector::new(u8::MAX), None);

        let mut x = Intercepts::EMPTY;
        for v in (0..32).filter_map(ExceptionVector::new) {
            x.set_exception(v);
            assert!(x.test_exception(v));
        }
        assert_eq!(x.0, [0, 0, u32::MAX, 0, 0, 0]);
        x.clear_exception(ExceptionVector::PF);
        assert_eq!(x.0[EXCEPTION_WORD], !(1 << 14));
        assert!(!x.test_exception(ExceptionVector::PF));
        assert!(x.test_exception(ExceptionVector::GP));

        // C: INTERCEPT_EXCEPTION_OFFSET (64) + vector.
        let mut y = Intercepts::EMPTY;
        y.set_exception(ExceptionVector::UD);
        assert_eq!(y.0[(64 + 6) / 32], 1 << ((64 + 6) % 32));
    }

    #[test]
    fn reg_index_bounds() {
        assert_eq!(RegIndex::new(15).map(RegIndex::get), Some(15));
        assert_eq!(RegIndex::new(16), None);
    }

    #[test]
    fn exit_codes_match_uapi() {
        let cases = [
            (0x000, SvmExit::ReadCr(RegIndex(0))),
            (0x003, SvmExit::ReadCr(RegIndex(3))),
            (0x018, SvmExit::WriteCr(RegIndex(8))),
            (0x027, SvmExit::ReadDr(RegIndex(7))),
            (0x030, SvmExit::WriteDr(RegIndex(0))),
            (0x04e, SvmExit::Exception(ExceptionVector::PF)),
            (0x05f, SvmExit::Exception(ExceptionVector(31))),
            (0x060, SvmExit::Intr),
            (0x064, SvmExit::Vintr),
            (0x065, SvmExit::Cr0SelWrite),
            (0x072, SvmExit::Cpuid),
            (0x075, SvmExit::Swint),
            (0x078, SvmExit::Hlt),
            (0x07b, SvmExit::Ioio),
            (0x07c, SvmExit::Msr),
            (0x07f, SvmExit::Shutdown),
            (0x080, SvmExit::Vmrun),
            (0x081, SvmExit::Vmmcall),
            (0x08d, SvmExit::Xsetbv),
            (0x08f, SvmExit::EferWriteTrap),
            (0x094, SvmExit::CrWriteTrap(RegIndex(4))),
            (0x0a2, SvmExit::Invpcid),
            (0x400, SvmExit::Npf),
            (0x401, SvmExit::AvicIncompleteIpi),
            (0x402, SvmExit::AvicUnacceleratedAccess),
            (0x403, SvmExit::Vmgexit),
            (0xffff_ffff_ffff_ffff, SvmExit::Err),
        ];
        for (raw, exit) in cases {
            assert_eq!(SvmExit::from_raw(raw), exit, "{raw:#x}");
            assert_eq!(exit.raw(), raw);
        }
    }

    #[test]
    fn exit_codes_round_trip_and_unknown() {
        let extra = [0xf000_0000, 0xffff_ffff, u64::MAX - 1, u64::MAX];
        let mut named = 0;
        for raw in (0..0x1000).chain(extra) {
            let exit = SvmExit::from_raw(raw);
            assert_eq!(exit.raw(), raw, "{raw:#x}");
            named += u32::from(!matches!(exit, SvmExit::Unknown(_)));
        }
        // 0x00..=0x8f, 16 CR write traps, INVPCID, 0x400..=0x403 and ERR.
        assert_eq!(named, 0x90 + 16 + 1 + 4 + 1);
        for raw in [0x0a0, 0x0a1, 0x0a3, 0x3ff, 0x404, 0xffff_ffff] {
            assert_eq!(SvmExit::from_raw(raw), SvmExit::Unknown(raw));
        }
    }

    #[test]
    fn vmcb_page() {
        assert_eq!(size_of::<Vmcb>(), 4096);
        assert_eq!(size_of::<VmcbControlArea>(), 1024);
        assert_eq!(size_of::<VmcbSaveArea>(), 744);
        let save = offset_of!(Vmcb, save);
        assert_eq!(save + offset_of!(VmcbSaveArea, efer), 0x4d0);
        assert_eq!(save + offset_of!(VmcbSaveArea, rsp), 0x5d8);
        assert_eq!(save + offset_of!(VmcbSaveArea, rax), 0x5f8);
        assert_eq!(save + offset_of!(VmcbSaveArea, g_pat), 0x668);

        let mut vmcb = std::boxed::Box::new(Vmcb::ZERO);
        assert_eq!(&*vmcb as *const Vmcb as usize % 4096, 0);
        assert_eq!(vmcb.save.cs, VmcbSeg::ZERO);
        vmcb.control.intercepts.set(Vmrun);
        vmcb.control.exit_code = u64::MAX;
        assert!(vmcb.control.intercepts.test(Vmrun));
        assert_eq!(vmcb.control.intercepts.0[4], 1);
        assert_eq!(SvmExit::from_raw(vmcb.control.exit_code), SvmExit::Err);
    }
}
