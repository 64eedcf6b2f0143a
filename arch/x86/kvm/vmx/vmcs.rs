// SPDX-License-Identifier: GPL-2.0

//! The Virtual-Machine Control Structure as software sees it (`vmx/vmcs.h`,
//! `asm/vmx.h`, `asm/msr-index.h` in the C KVM): field encodings typed by
//! width, the control bits, the capability MSRs and the adjustment of the
//! controls to what the CPU allows, basic exit reasons, and the formats of
//! the exit-information fields.
//!
//! Core-only (host-tested). References are to the Intel SDM, vol. 3C:
//! chapter 25 ("Virtual-Machine Control Structures"), appendix A ("VMX
//! Capability Reporting Facility"), appendix B ("Field Encoding in VMCS"),
//! appendix C ("VMX Basic Exit Reasons").
//!
//! A field is one of eight types: 16-bit, 32-bit, 64-bit or natural-width,
//! each either writable or read-only (the VM-exit information fields). The
//! accessors of `vmx_ops.rs` take exactly one type each, so reading a 16-bit
//! field as 32 bits, or writing an exit-information field, does not compile;
//! and each constant's encoding is checked against its type when it is
//! defined (bits 14:13 give the width, bits 11:10 the kind: SDM B.1), so a
//! wrong table entry does not compile either.

/// The width of a field (bits 14:13 of its encoding, SDM 25.11.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Width {
    /// 16 bits.
    W16,
    /// 64 bits.
    W64,
    /// 32 bits.
    W32,
    /// Natural width: 64 bits on x86-64.
    Natural,
}

/// The width encoded in `enc`.
pub(crate) const fn width_of(enc: u32) -> Width {
    match (enc >> 13) & 3 {
        0 => Width::W16,
        1 => Width::W64,
        2 => Width::W32,
        _ => Width::Natural,
    }
}

/// Whether `enc` is a read-only VM-exit information field (type 1, SDM 25.11.2).
pub(crate) const fn is_read_only(enc: u32) -> bool {
    (enc >> 10) & 3 == 1
}

const fn width_eq(a: Width, b: Width) -> bool {
    a as u32 == b as u32
}

/// Declares a field type of one width and access kind; its `new` refuses,
/// at compile time for constants, an encoding of another width or kind, a
/// "high" access encoding (bit 0) or bits outside the defined ones.
macro_rules! field_type {
    ($(#[$m:meta])* $name:ident, $width:expr, $ro:expr, $val:ty) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub(crate) struct $name(u32);

        impl $name {
            /// The field of encoding `enc`; panics (a compile error in a
            /// `const`) unless `enc` encodes a field of this type.
            pub(crate) const fn new(enc: u32) -> Self {
                assert!(width_eq(width_of(enc), $width), "VMCS field encoding of another width");
                assert!(is_read_only(enc) == $ro, "VMCS field encoding of another access kind");
                assert!(enc & 1 == 0, "high-access encodings are not used on x86-64");
                assert!(enc & !0x6fff == 0 && enc & (1 << 12) == 0, "reserved encoding bits");
                Self(enc)
            }

            /// The encoding, for VMREAD/VMWRITE.
            pub(crate) const fn encoding(self) -> u32 {
                self.0
            }

            /// This field's value in what VMREAD returned for it.
            #[inline(always)]
            pub(crate) const fn value_of(self, raw: u64) -> $val {
                raw as $val
            }
        }
    };
}

field_type!(
    /// A writable 16-bit field.
    Field16, Width::W16, false, u16
);
field_type!(
    /// A writable 32-bit field.
    Field32, Width::W32, false, u32
);
field_type!(
    /// A writable 64-bit field.
    Field64, Width::W64, false, u64
);
field_type!(
    /// A writable natural-width field.
    FieldNat, Width::Natural, false, u64
);
field_type!(
    /// A read-only 32-bit field (VM-exit information).
    RoField32, Width::W32, true, u32
);
field_type!(
    /// A read-only 64-bit field (VM-exit information).
    RoField64, Width::W64, true, u64
);
field_type!(
    /// A read-only natural-width field (VM-exit information).
    RoFieldNat, Width::Natural, true, u64
);

/// `raw_of` for the writable field types only: a write set of a read-only
/// field does not compile.
macro_rules! writable {
    ($($name:ident: $val:ty),*) => {
        $(impl $name {
            /// What VMWRITE takes for `value` of this field.
            // One per writable width; the field sets declared so far use only some.
            #[allow(dead_code)]
            #[inline(always)]
            pub(crate) const fn raw_of(self, value: $val) -> u64 {
                value as u64
            }
        })*
    };
}
writable!(Field16: u16, Field32: u32, Field64: u64, FieldNat: u64);

/// Declares field constants: `NAME: Type = encoding;`.
macro_rules! fields {
    ($($(#[$m:meta])* $name:ident: $ty:ident = $enc:literal;)*) => {
        // SDM appendix B encodings, listed for reference; the backend uses a subset.
        $($(#[$m])* #[allow(dead_code)] pub(crate) const $name: $ty = $ty::new($enc);)*

        /// Every field constant, with its name and encoding (for tests and dumps).
        #[cfg(test)]
        pub(crate) const ALL_FIELDS: &[(&str, u32)] = &[$((stringify!($name), $enc)),*];
    };
}

fields! {
    // 16-bit control fields (SDM B.1.1).
    /// Virtual-processor identifier.
    VIRTUAL_PROCESSOR_ID: Field16 = 0x0000;
    // 16-bit guest-state fields (B.1.2).
    /// Guest ES selector.
    GUEST_ES_SELECTOR: Field16 = 0x0800;
    /// Guest CS selector.
    GUEST_CS_SELECTOR: Field16 = 0x0802;
    /// Guest SS selector.
    GUEST_SS_SELECTOR: Field16 = 0x0804;
    /// Guest DS selector.
    GUEST_DS_SELECTOR: Field16 = 0x0806;
    /// Guest FS selector.
    GUEST_FS_SELECTOR: Field16 = 0x0808;
    /// Guest GS selector.
    GUEST_GS_SELECTOR: Field16 = 0x080a;
    /// Guest LDTR selector.
    GUEST_LDTR_SELECTOR: Field16 = 0x080c;
    /// Guest TR selector.
    GUEST_TR_SELECTOR: Field16 = 0x080e;
    // 16-bit host-state fields (B.1.3).
    /// Host ES selector.
    HOST_ES_SELECTOR: Field16 = 0x0c00;
    /// Host CS selector.
    HOST_CS_SELECTOR: Field16 = 0x0c02;
    /// Host SS selector.
    HOST_SS_SELECTOR: Field16 = 0x0c04;
    /// Host DS selector.
    HOST_DS_SELECTOR: Field16 = 0x0c06;
    /// Host FS selector.
    HOST_FS_SELECTOR: Field16 = 0x0c08;
    /// Host GS selector.
    HOST_GS_SELECTOR: Field16 = 0x0c0a;
    /// Host TR selector.
    HOST_TR_SELECTOR: Field16 = 0x0c0c;
    // 64-bit control fields (B.2.1).
    /// I/O bitmap A address.
    IO_BITMAP_A: Field64 = 0x2000;
    /// I/O bitmap B address.
    IO_BITMAP_B: Field64 = 0x2002;
    /// MSR bitmap address.
    MSR_BITMAP: Field64 = 0x2004;
    /// VM-exit MSR-store list address.
    VM_EXIT_MSR_STORE_ADDR: Field64 = 0x2006;
    /// VM-exit MSR-load list address.
    VM_EXIT_MSR_LOAD_ADDR: Field64 = 0x2008;
    /// VM-entry MSR-load list address.
    VM_ENTRY_MSR_LOAD_ADDR: Field64 = 0x200a;
    /// TSC offset.
    TSC_OFFSET: Field64 = 0x2010;
    /// Virtual-APIC page address.
    VIRTUAL_APIC_PAGE_ADDR: Field64 = 0x2012;
    /// APIC-access page address.
    APIC_ACCESS_ADDR: Field64 = 0x2014;
    /// EPT pointer.
    EPT_POINTER: Field64 = 0x201a;
    // 64-bit read-only data field (B.2.2).
    /// Guest-physical address of an EPT violation or misconfiguration.
    GUEST_PHYSICAL_ADDRESS: RoField64 = 0x2400;
    // 64-bit guest-state fields (B.2.3).
    /// VMCS link pointer (all ones: no shadow VMCS).
    VMCS_LINK_POINTER: Field64 = 0x2800;
    /// Guest IA32_DEBUGCTL.
    GUEST_IA32_DEBUGCTL: Field64 = 0x2802;
    /// Guest IA32_PAT.
    GUEST_IA32_PAT: Field64 = 0x2804;
    /// Guest IA32_EFER.
    GUEST_IA32_EFER: Field64 = 0x2806;
    /// Guest IA32_PERF_GLOBAL_CTRL.
    GUEST_IA32_PERF_GLOBAL_CTRL: Field64 = 0x2808;
    /// Guest PDPTE0 (PAE paging with EPT).
    GUEST_PDPTR0: Field64 = 0x280a;
    /// Guest PDPTE1.
    GUEST_PDPTR1: Field64 = 0x280c;
    /// Guest PDPTE2.
    GUEST_PDPTR2: Field64 = 0x280e;
    /// Guest PDPTE3.
    GUEST_PDPTR3: Field64 = 0x2810;
    // 64-bit host-state fields (B.2.4).
    /// Host IA32_PAT.
    HOST_IA32_PAT: Field64 = 0x2c00;
    /// Host IA32_EFER.
    HOST_IA32_EFER: Field64 = 0x2c02;
    // 32-bit control fields (B.3.1).
    /// Pin-based VM-execution controls.
    PIN_BASED_VM_EXEC_CONTROL: Field32 = 0x4000;
    /// Primary processor-based VM-execution controls.
    CPU_BASED_VM_EXEC_CONTROL: Field32 = 0x4002;
    /// Exception bitmap.
    EXCEPTION_BITMAP: Field32 = 0x4004;
    /// Page-fault error-code mask.
    PAGE_FAULT_ERROR_CODE_MASK: Field32 = 0x4006;
    /// Page-fault error-code match.
    PAGE_FAULT_ERROR_CODE_MATCH: Field32 = 0x4008;
    /// CR3-target count.
    CR3_TARGET_COUNT: Field32 = 0x400a;
    /// Primary VM-exit controls.
    VM_EXIT_CONTROLS: Field32 = 0x400c;
    /// VM-exit MSR-store count.
    VM_EXIT_MSR_STORE_COUNT: Field32 = 0x400e;
    /// VM-exit MSR-load count.
    VM_EXIT_MSR_LOAD_COUNT: Field32 = 0x4010;
    /// VM-entry controls.
    VM_ENTRY_CONTROLS: Field32 = 0x4012;
    /// VM-entry MSR-load count.
    VM_ENTRY_MSR_LOAD_COUNT: Field32 = 0x4014;
    /// VM-entry interruption-information field.
    VM_ENTRY_INTR_INFO_FIELD: Field32 = 0x4016;
    /// VM-entry exception error code.
    VM_ENTRY_EXCEPTION_ERROR_CODE: Field32 = 0x4018;
    /// VM-entry instruction length.
    VM_ENTRY_INSTRUCTION_LEN: Field32 = 0x401a;
    /// TPR threshold.
    TPR_THRESHOLD: Field32 = 0x401c;
    /// Secondary processor-based VM-execution controls.
    SECONDARY_VM_EXEC_CONTROL: Field32 = 0x401e;
    // 32-bit read-only data fields (B.3.2).
    /// VM-instruction error.
    VM_INSTRUCTION_ERROR: RoField32 = 0x4400;
    /// Exit reason.
    VM_EXIT_REASON: RoField32 = 0x4402;
    /// VM-exit interruption information.
    VM_EXIT_INTR_INFO: RoField32 = 0x4404;
    /// VM-exit interruption error code.
    VM_EXIT_INTR_ERROR_CODE: RoField32 = 0x4406;
    /// IDT-vectoring information.
    IDT_VECTORING_INFO_FIELD: RoField32 = 0x4408;
    /// IDT-vectoring error code.
    IDT_VECTORING_ERROR_CODE: RoField32 = 0x440a;
    /// VM-exit instruction length.
    VM_EXIT_INSTRUCTION_LEN: RoField32 = 0x440c;
    /// VM-exit instruction information.
    VMX_INSTRUCTION_INFO: RoField32 = 0x440e;
    // 32-bit guest-state fields (B.3.3).
    /// Guest ES limit.
    GUEST_ES_LIMIT: Field32 = 0x4800;
    /// Guest CS limit.
    GUEST_CS_LIMIT: Field32 = 0x4802;
    /// Guest SS limit.
    GUEST_SS_LIMIT: Field32 = 0x4804;
    /// Guest DS limit.
    GUEST_DS_LIMIT: Field32 = 0x4806;
    /// Guest FS limit.
    GUEST_FS_LIMIT: Field32 = 0x4808;
    /// Guest GS limit.
    GUEST_GS_LIMIT: Field32 = 0x480a;
    /// Guest LDTR limit.
    GUEST_LDTR_LIMIT: Field32 = 0x480c;
    /// Guest TR limit.
    GUEST_TR_LIMIT: Field32 = 0x480e;
    /// Guest GDTR limit.
    GUEST_GDTR_LIMIT: Field32 = 0x4810;
    /// Guest IDTR limit.
    GUEST_IDTR_LIMIT: Field32 = 0x4812;
    /// Guest ES access rights.
    GUEST_ES_AR_BYTES: Field32 = 0x4814;
    /// Guest CS access rights.
    GUEST_CS_AR_BYTES: Field32 = 0x4816;
    /// Guest SS access rights.
    GUEST_SS_AR_BYTES: Field32 = 0x4818;
    /// Guest DS access rights.
    GUEST_DS_AR_BYTES: Field32 = 0x481a;
    /// Guest FS access rights.
    GUEST_FS_AR_BYTES: Field32 = 0x481c;
    /// Guest GS access rights.
    GUEST_GS_AR_BYTES: Field32 = 0x481e;
    /// Guest LDTR access rights.
    GUEST_LDTR_AR_BYTES: Field32 = 0x4820;
    /// Guest TR access rights.
    GUEST_TR_AR_BYTES: Field32 = 0x4822;
    /// Guest interruptibility state.
    GUEST_INTERRUPTIBILITY_INFO: Field32 = 0x4824;
    /// Guest activity state.
    GUEST_ACTIVITY_STATE: Field32 = 0x4826;
    /// Guest SMBASE.
    GUEST_SMBASE: Field32 = 0x4828;
    /// Guest IA32_SYSENTER_CS.
    GUEST_SYSENTER_CS: Field32 = 0x482a;
    /// VMX-preemption timer value.
    VMX_PREEMPTION_TIMER_VALUE: Field32 = 0x482e;
    // 32-bit host-state field (B.3.4).
    /// Host IA32_SYSENTER_CS.
    HOST_IA32_SYSENTER_CS: Field32 = 0x4c00;
    // Natural-width control fields (B.4.1).
    /// CR0 guest/host mask.
    CR0_GUEST_HOST_MASK: FieldNat = 0x6000;
    /// CR4 guest/host mask.
    CR4_GUEST_HOST_MASK: FieldNat = 0x6002;
    /// CR0 read shadow.
    CR0_READ_SHADOW: FieldNat = 0x6004;
    /// CR4 read shadow.
    CR4_READ_SHADOW: FieldNat = 0x6006;
    // Natural-width read-only data fields (B.4.2).
    /// Exit qualification.
    EXIT_QUALIFICATION: RoFieldNat = 0x6400;
    /// Guest-linear address.
    GUEST_LINEAR_ADDRESS: RoFieldNat = 0x640a;
    // Natural-width guest-state fields (B.4.3).
    /// Guest CR0.
    GUEST_CR0: FieldNat = 0x6800;
    /// Guest CR3.
    GUEST_CR3: FieldNat = 0x6802;
    /// Guest CR4.
    GUEST_CR4: FieldNat = 0x6804;
    /// Guest ES base.
    GUEST_ES_BASE: FieldNat = 0x6806;
    /// Guest CS base.
    GUEST_CS_BASE: FieldNat = 0x6808;
    /// Guest SS base.
    GUEST_SS_BASE: FieldNat = 0x680a;
    /// Guest DS base.
    GUEST_DS_BASE: FieldNat = 0x680c;
    /// Guest FS base.
    GUEST_FS_BASE: FieldNat = 0x680e;
    /// Guest GS base.
    GUEST_GS_BASE: FieldNat = 0x6810;
    /// Guest LDTR base.
    GUEST_LDTR_BASE: FieldNat = 0x6812;
    /// Guest TR base.
    GUEST_TR_BASE: FieldNat = 0x6814;
    /// Guest GDTR base.
    GUEST_GDTR_BASE: FieldNat = 0x6816;
    /// Guest IDTR base.
    GUEST_IDTR_BASE: FieldNat = 0x6818;
    /// Guest DR7.
    GUEST_DR7: FieldNat = 0x681a;
    /// Guest RSP.
    GUEST_RSP: FieldNat = 0x681c;
    /// Guest RIP.
    GUEST_RIP: FieldNat = 0x681e;
    /// Guest RFLAGS.
    GUEST_RFLAGS: FieldNat = 0x6820;
    /// Guest pending debug exceptions.
    GUEST_PENDING_DBG_EXCEPTIONS: FieldNat = 0x6822;
    /// Guest IA32_SYSENTER_ESP.
    GUEST_SYSENTER_ESP: FieldNat = 0x6824;
    /// Guest IA32_SYSENTER_EIP.
    GUEST_SYSENTER_EIP: FieldNat = 0x6826;
    // Natural-width host-state fields (B.4.4).
    /// Host CR0.
    HOST_CR0: FieldNat = 0x6c00;
    /// Host CR3.
    HOST_CR3: FieldNat = 0x6c02;
    /// Host CR4.
    HOST_CR4: FieldNat = 0x6c04;
    /// Host FS base.
    HOST_FS_BASE: FieldNat = 0x6c06;
    /// Host GS base.
    HOST_GS_BASE: FieldNat = 0x6c08;
    /// Host TR base.
    HOST_TR_BASE: FieldNat = 0x6c0a;
    /// Host GDTR base.
    HOST_GDTR_BASE: FieldNat = 0x6c0c;
    /// Host IDTR base.
    HOST_IDTR_BASE: FieldNat = 0x6c0e;
    /// Host IA32_SYSENTER_ESP.
    HOST_IA32_SYSENTER_ESP: FieldNat = 0x6c10;
    /// Host IA32_SYSENTER_EIP.
    HOST_IA32_SYSENTER_EIP: FieldNat = 0x6c12;
    /// Host RSP (written by the world switch itself).
    HOST_RSP: FieldNat = 0x6c14;
    /// Host RIP.
    HOST_RIP: FieldNat = 0x6c16;
}

/// The fields of one guest segment register.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SegFields {
    /// Selector.
    pub(crate) selector: Field16,
    /// Base.
    pub(crate) base: FieldNat,
    /// Limit.
    pub(crate) limit: Field32,
    /// Access rights.
    pub(crate) ar: Field32,
}

/// Guest segment fields in `kvm_sregs` order: CS, DS, ES, FS, GS, SS, TR, LDTR.
pub(crate) const GUEST_SEGS: [SegFields; 8] = [
    SegFields { selector: GUEST_CS_SELECTOR, base: GUEST_CS_BASE, limit: GUEST_CS_LIMIT, ar: GUEST_CS_AR_BYTES },
    SegFields { selector: GUEST_DS_SELECTOR, base: GUEST_DS_BASE, limit: GUEST_DS_LIMIT, ar: GUEST_DS_AR_BYTES },
    SegFields { selector: GUEST_ES_SELECTOR, base: GUEST_ES_BASE, limit: GUEST_ES_LIMIT, ar: GUEST_ES_AR_BYTES },
    SegFields { selector: GUEST_FS_SELECTOR, base: GUEST_FS_BASE, limit: GUEST_FS_LIMIT, ar: GUEST_FS_AR_BYTES },
    SegFields { selector: GUEST_GS_SELECTOR, base: GUEST_GS_BASE, limit: GUEST_GS_LIMIT, ar: GUEST_GS_AR_BYTES },
    SegFields { selector: GUEST_SS_SELECTOR, base: GUEST_SS_BASE, limit: GUEST_SS_LIMIT, ar: GUEST_SS_AR_BYTES },
    SegFields { selector: GUEST_TR_SELECTOR, base: GUEST_TR_BASE, limit: GUEST_TR_LIMIT, ar: GUEST_TR_AR_BYTES },
    SegFields {
        selector: GUEST_LDTR_SELECTOR,
        base: GUEST_LDTR_BASE,
        limit: GUEST_LDTR_LIMIT,
        ar: GUEST_LDTR_AR_BYTES,
    },
];

/// Whether `enc` is a field only the instruction module may write: host
/// state (where and how a VM exit returns to the host) and the physical
/// addresses of structures the CPU reads or writes, with their counts.
pub(crate) const fn is_privileged(enc: u32) -> bool {
    const ADDRESSES: [u32; 13] = [
        IO_BITMAP_A.encoding(),
        IO_BITMAP_B.encoding(),
        MSR_BITMAP.encoding(),
        VM_EXIT_MSR_STORE_ADDR.encoding(),
        VM_EXIT_MSR_LOAD_ADDR.encoding(),
        VM_ENTRY_MSR_LOAD_ADDR.encoding(),
        VIRTUAL_APIC_PAGE_ADDR.encoding(),
        APIC_ACCESS_ADDR.encoding(),
        EPT_POINTER.encoding(),
        VMCS_LINK_POINTER.encoding(),
        VM_EXIT_MSR_STORE_COUNT.encoding(),
        VM_EXIT_MSR_LOAD_COUNT.encoding(),
        VM_ENTRY_MSR_LOAD_COUNT.encoding(),
    ];
    if (enc >> 10) & 3 == 3 {
        return true;
    }
    let mut i = 0;
    while i < ADDRESSES.len() {
        if ADDRESSES[i] == enc {
            return true;
        }
        i += 1;
    }
    false
}

/// Whether none of `encodings` is privileged ([`is_privileged`]).
pub(crate) const fn all_unprivileged(encodings: &[u32]) -> bool {
    let mut i = 0;
    while i < encodings.len() {
        if is_privileged(encodings[i]) {
            return false;
        }
        i += 1;
    }
    true
}

/// A group of fields read with one call into the instruction module (one
/// loop of VMREADs there) instead of one call per field: the exit path reads
/// some sixty fields, and a call each cost several times the VMREAD itself.
/// The values stay as VMREAD returned them, in one array the instruction
/// module fills directly; declared with [`field_set!`], whose accessors
/// keep the width typing (a member's type must be its field's value type).
pub(crate) trait FieldSet: Sized {
    /// The fields' encodings, in member order.
    const ENCODINGS: &'static [u32];
    /// All fields 0.
    fn zeroed() -> Self;
    /// The raw values, in `ENCODINGS` order.
    fn raw(&self) -> &[u64];
    /// The same, for VMREAD to fill in.
    fn raw_mut(&mut self) -> &mut [u64];
}

/// A [`FieldSet`] of writable, unprivileged fields, written with one call.
pub(crate) trait WritableFieldSet: FieldSet {}

/// Declares a set of VMCS fields: `Name, index_module { member: type =
/// FIELD, ... }` gives `Name` with one accessor per member (and
/// `index_module`, private, numbering them).
macro_rules! field_set {
    ($(#[$m:meta])* $name:ident, $idx:ident { $($(#[$fm:meta])* $f:ident: $t:ty = $field:ident,)* }) => {
        mod $idx {
            #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
            pub(super) enum I {
                $($f,)*
            }
            pub(super) const N: usize = [$(stringify!($f)),*].len();
        }

        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub(crate) struct $name {
            raw: [u64; $idx::N],
        }

        impl FieldSet for $name {
            const ENCODINGS: &'static [u32] = &[$($field.encoding()),*];
            fn zeroed() -> Self {
                Self { raw: [0; $idx::N] }
            }
            fn raw(&self) -> &[u64] {
                &self.raw
            }
            fn raw_mut(&mut self) -> &mut [u64] {
                &mut self.raw
            }
        }

        #[allow(dead_code)]
        impl $name {
            $(
                $(#[$fm])*
                #[inline(always)]
                pub(crate) fn $f(&self) -> $t {
                    $field.value_of(self.raw[$idx::I::$f as usize])
                }
            )*
        }
    };
}

/// [`field_set!`] for a set that is also written, with `new` taking every
/// member: each field must be writable (`raw_of` exists only for those) and
/// unprivileged (checked when the set is declared).
macro_rules! writable_field_set {
    ($(#[$m:meta])* $name:ident, $idx:ident { $($(#[$fm:meta])* $f:ident: $t:ty = $field:ident,)* }) => {
        field_set!($(#[$m])* $name, $idx { $($(#[$fm])* $f: $t = $field,)* });

        impl WritableFieldSet for $name {}

        impl $name {
            /// The set with these values.
            pub(crate) fn new($($f: $t),*) -> Self {
                let mut raw = [0; $idx::N];
                $(raw[$idx::I::$f as usize] = $field.raw_of($f);)*
                Self { raw }
            }
        }

        const _: () = assert!(
            all_unprivileged(<$name as FieldSet>::ENCODINGS),
            "a privileged field in a writable field set"
        );
    };
}

field_set! {
    /// What the exit path reads after every VM exit: the exit information and
    /// the guest registers the common exit handling looks at (C reads these
    /// lazily, one inlined VMREAD at a time; see vmx.rst). The rest of what
    /// the guest can change without an exit is [`ColdState`].
    ExitState, exit_state_idx {
        /// `VM_EXIT_REASON`.
        reason: u32 = VM_EXIT_REASON,
        /// `EXIT_QUALIFICATION`.
        qualification: u64 = EXIT_QUALIFICATION,
        /// `VM_EXIT_INSTRUCTION_LEN`.
        insn_len: u32 = VM_EXIT_INSTRUCTION_LEN,
        /// `VMX_INSTRUCTION_INFO`.
        insn_info: u32 = VMX_INSTRUCTION_INFO,
        /// `VM_EXIT_INTR_INFO`.
        intr_info: u32 = VM_EXIT_INTR_INFO,
        /// `VM_EXIT_INTR_ERROR_CODE`.
        intr_error: u32 = VM_EXIT_INTR_ERROR_CODE,
        /// `IDT_VECTORING_INFO_FIELD`.
        idt_vectoring: u32 = IDT_VECTORING_INFO_FIELD,
        /// `IDT_VECTORING_ERROR_CODE`.
        idt_vectoring_error: u32 = IDT_VECTORING_ERROR_CODE,
        /// `GUEST_PHYSICAL_ADDRESS`.
        gpa: u64 = GUEST_PHYSICAL_ADDRESS,
        /// RIP.
        rip: u64 = GUEST_RIP,
        /// RSP.
        rsp: u64 = GUEST_RSP,
        /// RFLAGS.
        rflags: u64 = GUEST_RFLAGS,
        /// Interruptibility state.
        intr_state: u32 = GUEST_INTERRUPTIBILITY_INFO,
        /// Pending debug exceptions.
        pending_dbg: u64 = GUEST_PENDING_DBG_EXCEPTIONS,
        /// CR0 as the hardware runs it.
        cr0: u64 = GUEST_CR0,
        /// CR3.
        cr3: u64 = GUEST_CR3,
        /// CR4 as the hardware runs it.
        cr4: u64 = GUEST_CR4,
        /// SS access rights, for the CPL (SS.DPL).
        ss_ar: u32 = GUEST_SS_AR_BYTES,
    }
}

field_set! {
    /// The guest state the guest can change without an exit and that most
    /// exits never look at: segments, descriptor tables, the SYSENTER MSRs
    /// and PAT. Read after the exits whose handling may need it.
    ColdState, cold_state_idx {
        /// CS selector, base, limit, access rights; then DS, ES, FS, GS, SS,
        /// TR, LDTR (`GUEST_SEGS` order).
        cs_sel: u16 = GUEST_CS_SELECTOR,
        /// CS base.
        cs_base: u64 = GUEST_CS_BASE,
        /// CS limit.
        cs_limit: u32 = GUEST_CS_LIMIT,
        /// CS access rights.
        cs_ar: u32 = GUEST_CS_AR_BYTES,
        /// DS selector.
        ds_sel: u16 = GUEST_DS_SELECTOR,
        /// DS base.
        ds_base: u64 = GUEST_DS_BASE,
        /// DS limit.
        ds_limit: u32 = GUEST_DS_LIMIT,
        /// DS access rights.
        ds_ar: u32 = GUEST_DS_AR_BYTES,
        /// ES selector.
        es_sel: u16 = GUEST_ES_SELECTOR,
        /// ES base.
        es_base: u64 = GUEST_ES_BASE,
        /// ES limit.
        es_limit: u32 = GUEST_ES_LIMIT,
        /// ES access rights.
        es_ar: u32 = GUEST_ES_AR_BYTES,
        /// FS selector.
        fs_sel: u16 = GUEST_FS_SELECTOR,
        /// FS base.
        fs_base: u64 = GUEST_FS_BASE,
        /// FS limit.
        fs_limit: u32 = GUEST_FS_LIMIT,
        /// FS access rights.
        fs_ar: u32 = GUEST_FS_AR_BYTES,
        /// GS selector.
        gs_sel: u16 = GUEST_GS_SELECTOR,
        /// GS base.
        gs_base: u64 = GUEST_GS_BASE,
        /// GS limit.
        gs_limit: u32 = GUEST_GS_LIMIT,
        /// GS access rights.
        gs_ar: u32 = GUEST_GS_AR_BYTES,
        /// SS selector.
        ss_sel: u16 = GUEST_SS_SELECTOR,
        /// SS base.
        ss_base: u64 = GUEST_SS_BASE,
        /// SS limit.
        ss_limit: u32 = GUEST_SS_LIMIT,
        /// SS access rights.
        ss_ar: u32 = GUEST_SS_AR_BYTES,
        /// TR selector.
        tr_sel: u16 = GUEST_TR_SELECTOR,
        /// TR base.
        tr_base: u64 = GUEST_TR_BASE,
        /// TR limit.
        tr_limit: u32 = GUEST_TR_LIMIT,
        /// TR access rights.
        tr_ar: u32 = GUEST_TR_AR_BYTES,
        /// LDTR selector.
        ldtr_sel: u16 = GUEST_LDTR_SELECTOR,
        /// LDTR base.
        ldtr_base: u64 = GUEST_LDTR_BASE,
        /// LDTR limit.
        ldtr_limit: u32 = GUEST_LDTR_LIMIT,
        /// LDTR access rights.
        ldtr_ar: u32 = GUEST_LDTR_AR_BYTES,
        /// GDTR base.
        gdtr_base: u64 = GUEST_GDTR_BASE,
        /// GDTR limit.
        gdtr_limit: u32 = GUEST_GDTR_LIMIT,
        /// IDTR base.
        idtr_base: u64 = GUEST_IDTR_BASE,
        /// IDTR limit.
        idtr_limit: u32 = GUEST_IDTR_LIMIT,
        /// `IA32_SYSENTER_CS`.
        sysenter_cs: u32 = GUEST_SYSENTER_CS,
        /// `IA32_SYSENTER_ESP`.
        sysenter_esp: u64 = GUEST_SYSENTER_ESP,
        /// `IA32_SYSENTER_EIP`.
        sysenter_eip: u64 = GUEST_SYSENTER_EIP,
        /// `IA32_PAT`.
        pat: u64 = GUEST_IA32_PAT,
    }
}

/// One guest segment as the VMCS holds it: selector, base, limit, access rights.
pub(crate) type RawSeg = (u16, u64, u32, u32);

impl ColdState {
    /// Guest segment `i` in `GUEST_SEGS` order (LDTR for `i` above 7).
    pub(crate) fn seg(&self, i: usize) -> RawSeg {
        match i {
            0 => (self.cs_sel(), self.cs_base(), self.cs_limit(), self.cs_ar()),
            1 => (self.ds_sel(), self.ds_base(), self.ds_limit(), self.ds_ar()),
            2 => (self.es_sel(), self.es_base(), self.es_limit(), self.es_ar()),
            3 => (self.fs_sel(), self.fs_base(), self.fs_limit(), self.fs_ar()),
            4 => (self.gs_sel(), self.gs_base(), self.gs_limit(), self.gs_ar()),
            5 => (self.ss_sel(), self.ss_base(), self.ss_limit(), self.ss_ar()),
            6 => (self.tr_sel(), self.tr_base(), self.tr_limit(), self.tr_ar()),
            _ => (self.ldtr_sel(), self.ldtr_base(), self.ldtr_limit(), self.ldtr_ar()),
        }
    }
}

writable_field_set! {
    /// What every VM entry writes: the registers that change on nearly
    /// every exit.
    EntryRegs, entry_regs_idx {
        /// RIP.
        rip: u64 = GUEST_RIP,
        /// RSP.
        rsp: u64 = GUEST_RSP,
        /// RFLAGS.
        rflags: u64 = GUEST_RFLAGS,
    }
}

/// Pin-based VM-execution controls (SDM 25.6.1).
// Every pin-based control (SDM 25.6.1); the backend uses a subset.
#[allow(dead_code)]
pub(crate) mod pin {
    /// External interrupts cause VM exits.
    pub(crate) const EXT_INTR_EXITING: u32 = 1 << 0;
    /// NMIs cause VM exits.
    pub(crate) const NMI_EXITING: u32 = 1 << 3;
    /// Virtual NMIs (NMI blocking tracked by the CPU for the guest).
    pub(crate) const VIRTUAL_NMIS: u32 = 1 << 5;
    /// VMX-preemption timer.
    pub(crate) const PREEMPTION_TIMER: u32 = 1 << 6;
    /// Posted interrupts.
    pub(crate) const POSTED_INTR: u32 = 1 << 7;
}

/// Primary processor-based VM-execution controls (SDM 25.6.2, table 25-6).
// The SDM table 25-6 bits, listed for reference; the backend uses a subset.
#[allow(dead_code)]
pub(crate) mod proc {
    /// Exit when the guest can take an interrupt.
    pub(crate) const INTR_WINDOW_EXITING: u32 = 1 << 2;
    /// Add the TSC offset to guest TSC reads.
    pub(crate) const USE_TSC_OFFSETTING: u32 = 1 << 3;
    /// HLT exits.
    pub(crate) const HLT_EXITING: u32 = 1 << 7;
    /// INVLPG exits.
    pub(crate) const INVLPG_EXITING: u32 = 1 << 9;
    /// MWAIT exits.
    pub(crate) const MWAIT_EXITING: u32 = 1 << 10;
    /// RDPMC exits.
    pub(crate) const RDPMC_EXITING: u32 = 1 << 11;
    /// RDTSC exits.
    pub(crate) const RDTSC_EXITING: u32 = 1 << 12;
    /// MOV to CR3 exits.
    pub(crate) const CR3_LOAD_EXITING: u32 = 1 << 15;
    /// MOV from CR3 exits.
    pub(crate) const CR3_STORE_EXITING: u32 = 1 << 16;
    /// MOV to CR8 exits.
    pub(crate) const CR8_LOAD_EXITING: u32 = 1 << 19;
    /// MOV from CR8 exits.
    pub(crate) const CR8_STORE_EXITING: u32 = 1 << 20;
    /// TPR shadow (virtual-APIC page).
    pub(crate) const TPR_SHADOW: u32 = 1 << 21;
    /// Exit when the guest can take an NMI.
    pub(crate) const NMI_WINDOW_EXITING: u32 = 1 << 22;
    /// MOV DR exits.
    pub(crate) const MOV_DR_EXITING: u32 = 1 << 23;
    /// Every I/O instruction exits.
    pub(crate) const UNCOND_IO_EXITING: u32 = 1 << 24;
    /// I/O bitmaps decide.
    pub(crate) const USE_IO_BITMAPS: u32 = 1 << 25;
    /// Monitor trap flag.
    pub(crate) const MONITOR_TRAP_FLAG: u32 = 1 << 27;
    /// The MSR bitmap decides which RDMSR/WRMSR exit.
    pub(crate) const USE_MSR_BITMAPS: u32 = 1 << 28;
    /// MONITOR exits.
    pub(crate) const MONITOR_EXITING: u32 = 1 << 29;
    /// PAUSE exits.
    pub(crate) const PAUSE_EXITING: u32 = 1 << 30;
    /// The secondary controls are used.
    pub(crate) const SECONDARY_CONTROLS: u32 = 1 << 31;
}

/// Secondary processor-based VM-execution controls (SDM 25.6.2, table 25-7).
// The SDM table 25-7 bits, listed for reference; the backend uses a subset.
#[allow(dead_code)]
pub(crate) mod proc2 {
    /// Virtualize APIC accesses.
    pub(crate) const VIRT_APIC_ACCESSES: u32 = 1 << 0;
    /// Enable EPT.
    pub(crate) const ENABLE_EPT: u32 = 1 << 1;
    /// Descriptor-table exiting.
    pub(crate) const DESC_TABLE_EXITING: u32 = 1 << 2;
    /// Enable RDTSCP (else it raises #UD).
    pub(crate) const ENABLE_RDTSCP: u32 = 1 << 3;
    /// Virtualize x2APIC mode.
    pub(crate) const VIRT_X2APIC_MODE: u32 = 1 << 4;
    /// Enable VPID.
    pub(crate) const ENABLE_VPID: u32 = 1 << 5;
    /// WBINVD exits.
    pub(crate) const WBINVD_EXITING: u32 = 1 << 6;
    /// Unrestricted guest (real mode and unpaged protected mode under EPT).
    pub(crate) const UNRESTRICTED_GUEST: u32 = 1 << 7;
    /// Enable INVPCID (else it raises #UD).
    pub(crate) const ENABLE_INVPCID: u32 = 1 << 12;
    /// Enable XSAVES/XRSTORS (else they raise #UD).
    pub(crate) const ENABLE_XSAVES: u32 = 1 << 20;
}

/// Primary VM-exit controls (SDM 25.7.1, table 25-13).
// The SDM table 25-13 bits, listed for reference; the backend uses a subset.
#[allow(dead_code)]
pub(crate) mod exit_ctl {
    /// Save DR7 and IA32_DEBUGCTL.
    pub(crate) const SAVE_DEBUG_CONTROLS: u32 = 1 << 2;
    /// The host runs in 64-bit mode after the exit.
    pub(crate) const HOST_ADDR_SPACE_SIZE: u32 = 1 << 9;
    /// Acknowledge the interrupt that caused the exit.
    pub(crate) const ACK_INTR_ON_EXIT: u32 = 1 << 15;
    /// Save the guest's IA32_PAT.
    pub(crate) const SAVE_IA32_PAT: u32 = 1 << 18;
    /// Load the host's IA32_PAT.
    pub(crate) const LOAD_IA32_PAT: u32 = 1 << 19;
    /// Save the guest's IA32_EFER.
    pub(crate) const SAVE_IA32_EFER: u32 = 1 << 20;
    /// Load the host's IA32_EFER.
    pub(crate) const LOAD_IA32_EFER: u32 = 1 << 21;
}

/// VM-entry controls (SDM 25.8.1, table 25-15).
pub(crate) mod entry_ctl {
    /// Load DR7 and IA32_DEBUGCTL.
    pub(crate) const LOAD_DEBUG_CONTROLS: u32 = 1 << 2;
    /// The guest is in IA-32e mode (EFER.LMA) after the entry.
    pub(crate) const IA32E_MODE: u32 = 1 << 9;
    /// Load the guest's IA32_PAT.
    pub(crate) const LOAD_IA32_PAT: u32 = 1 << 14;
    /// Load the guest's IA32_EFER.
    pub(crate) const LOAD_IA32_EFER: u32 = 1 << 15;
}

/// The capability MSRs (SDM appendix A).
// The SDM appendix A MSRs, listed for reference; the backend reads a subset.
#[allow(dead_code)]
pub(crate) mod msr {
    /// `IA32_FEATURE_CONTROL`.
    pub(crate) const IA32_FEATURE_CONTROL: u32 = 0x3a;
    /// `IA32_VMX_BASIC`.
    pub(crate) const IA32_VMX_BASIC: u32 = 0x480;
    /// `IA32_VMX_PINBASED_CTLS`.
    pub(crate) const IA32_VMX_PINBASED_CTLS: u32 = 0x481;
    /// `IA32_VMX_PROCBASED_CTLS`.
    pub(crate) const IA32_VMX_PROCBASED_CTLS: u32 = 0x482;
    /// `IA32_VMX_EXIT_CTLS`.
    pub(crate) const IA32_VMX_EXIT_CTLS: u32 = 0x483;
    /// `IA32_VMX_ENTRY_CTLS`.
    pub(crate) const IA32_VMX_ENTRY_CTLS: u32 = 0x484;
    /// `IA32_VMX_MISC`.
    pub(crate) const IA32_VMX_MISC: u32 = 0x485;
    /// `IA32_VMX_CR0_FIXED0`.
    pub(crate) const IA32_VMX_CR0_FIXED0: u32 = 0x486;
    /// `IA32_VMX_CR0_FIXED1`.
    pub(crate) const IA32_VMX_CR0_FIXED1: u32 = 0x487;
    /// `IA32_VMX_CR4_FIXED0`.
    pub(crate) const IA32_VMX_CR4_FIXED0: u32 = 0x488;
    /// `IA32_VMX_CR4_FIXED1`.
    pub(crate) const IA32_VMX_CR4_FIXED1: u32 = 0x489;
    /// `IA32_VMX_PROCBASED_CTLS2`.
    pub(crate) const IA32_VMX_PROCBASED_CTLS2: u32 = 0x48b;
    /// `IA32_VMX_EPT_VPID_CAP`.
    pub(crate) const IA32_VMX_EPT_VPID_CAP: u32 = 0x48c;
    /// `IA32_VMX_TRUE_PINBASED_CTLS`.
    pub(crate) const IA32_VMX_TRUE_PINBASED_CTLS: u32 = 0x48d;
    /// `IA32_VMX_TRUE_PROCBASED_CTLS`.
    pub(crate) const IA32_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48e;
    /// `IA32_VMX_TRUE_EXIT_CTLS`.
    pub(crate) const IA32_VMX_TRUE_EXIT_CTLS: u32 = 0x48f;
    /// `IA32_VMX_TRUE_ENTRY_CTLS`.
    pub(crate) const IA32_VMX_TRUE_ENTRY_CTLS: u32 = 0x490;
}

/// `IA32_FEATURE_CONTROL` bits (SDM vol. 3C, 24.7 "Enabling and Entering VMX Operation").
// Every VMX-related bit of the MSR; only some are checked.
#[allow(dead_code)]
pub(crate) mod feature_control {
    /// Lock: the MSR cannot be written until reset.
    pub(crate) const LOCKED: u64 = 1 << 0;
    /// VMXON allowed inside SMX operation.
    pub(crate) const VMXON_IN_SMX: u64 = 1 << 1;
    /// VMXON allowed outside SMX operation.
    pub(crate) const VMXON_OUTSIDE_SMX: u64 = 1 << 2;
}

/// Whether `IA32_FEATURE_CONTROL` lets this kernel execute VMXON: `Err` says why not.
pub(crate) fn feature_control_allows_vmxon(v: u64) -> Result<(), &'static str> {
    if v & feature_control::LOCKED == 0 {
        // Unlocked: VMXON raises #GP until someone locks it (the kernel
        // does at boot, `init_ia32_feat_ctl()`).
        return Err("IA32_FEATURE_CONTROL is not locked");
    }
    if v & feature_control::VMXON_OUTSIDE_SMX == 0 {
        return Err("VMX is disabled by the firmware (IA32_FEATURE_CONTROL locked without VMXON outside SMX)");
    }
    Ok(())
}

/// `IA32_VMX_BASIC`, decoded (SDM A.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct VmxBasic {
    /// VMCS revision identifier (bits 30:0), written at the start of the
    /// VMXON region and of every VMCS.
    pub(crate) revision: u32,
    /// Bytes to allocate for the VMXON region and a VMCS (bits 44:32), at most 4096.
    pub(crate) region_size: u32,
    /// Physical addresses of VMX structures are limited to 32 bits (bit 48).
    pub(crate) addr_32bit: bool,
    /// Memory type the CPU uses for VMX structures (bits 53:50; 6 = write-back).
    pub(crate) mem_type: u8,
    /// INS/OUTS exits report the instruction information (bit 54).
    pub(crate) ins_outs_info: bool,
    /// The `IA32_VMX_TRUE_*_CTLS` MSRs exist (bit 55).
    pub(crate) true_ctls: bool,
}

impl VmxBasic {
    /// Decodes the MSR value.
    pub(crate) fn from_msr(v: u64) -> Self {
        Self {
            revision: (v & 0x7fff_ffff) as u32,
            region_size: ((v >> 32) & 0x1fff) as u32,
            addr_32bit: v & (1 << 48) != 0,
            mem_type: ((v >> 50) & 0xf) as u8,
            ins_outs_info: v & (1 << 54) != 0,
            true_ctls: v & (1 << 55) != 0,
        }
    }

    /// Why kvm-rs cannot use this CPU's VMX, if it cannot: regions must fit
    /// a page, be addressable anywhere, and be write-back (C:
    /// `setup_vmcs_config()` makes the same three checks).
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        if self.region_size == 0 || self.region_size > 4096 {
            return Err("VMCS region size is not within a page");
        }
        if self.addr_32bit {
            return Err("VMX structures limited to 32-bit physical addresses");
        }
        if self.mem_type != MEM_TYPE_WB {
            return Err("VMCS memory type is not write-back");
        }
        Ok(())
    }
}

/// Memory type write-back (SDM 11.3).
pub(crate) const MEM_TYPE_WB: u8 = 6;

/// Adjusts a control word to a capability MSR (SDM A.3.1): bits clear in
/// the low half must be 1 ("allowed 0-settings"), bits set in the high half
/// may be 1 ("allowed 1-settings"). `min` are the controls kvm-rs requires,
/// `opt` the ones it uses when present. Returns the value to write, or the
/// required bits the CPU cannot set (C: `adjust_vmx_controls()`).
pub(crate) fn adjust_controls(min: u32, opt: u32, cap: u64) -> Result<u32, u32> {
    let must_be_one = cap as u32;
    let may_be_one = (cap >> 32) as u32;
    let mut ctl = min | opt;
    ctl &= may_be_one;
    ctl |= must_be_one;
    let missing = min & !ctl;
    if missing != 0 {
        return Err(missing);
    }
    Ok(ctl)
}

/// Whether `value` is a setting of the control word the CPU accepts: every
/// must-be-one bit set, no bit set that may not be (the VM-entry check of
/// SDM 27.2.1.1, used to check a control word before writing it).
#[cfg(test)]
pub(crate) fn controls_valid(value: u32, cap: u64) -> bool {
    let must_be_one = cap as u32;
    let may_be_one = (cap >> 32) as u32;
    value & must_be_one == must_be_one && value & !may_be_one == 0
}

/// `IA32_VMX_EPT_VPID_CAP` bits (SDM A.10).
// The SDM A.10 bits, listed for reference; the backend checks a subset.
#[allow(dead_code)]
pub(crate) mod ept_cap {
    /// Execute-only EPT entries.
    pub(crate) const EXECUTE_ONLY: u64 = 1 << 0;
    /// 4-level EPT walks.
    pub(crate) const WALK_4: u64 = 1 << 6;
    /// 5-level EPT walks.
    pub(crate) const WALK_5: u64 = 1 << 7;
    /// EPT paging structures may be uncacheable.
    pub(crate) const MEM_UC: u64 = 1 << 8;
    /// EPT paging structures may be write-back.
    pub(crate) const MEM_WB: u64 = 1 << 14;
    /// 2 MiB EPT pages.
    pub(crate) const PAGE_2M: u64 = 1 << 16;
    /// INVEPT.
    pub(crate) const INVEPT: u64 = 1 << 20;
    /// Accessed and dirty flags.
    pub(crate) const AD: u64 = 1 << 21;
    /// Single-context INVEPT.
    pub(crate) const INVEPT_SINGLE: u64 = 1 << 25;
    /// All-context INVEPT.
    pub(crate) const INVEPT_ALL: u64 = 1 << 26;
    /// INVVPID.
    pub(crate) const INVVPID: u64 = 1 << 32;
    /// Individual-address INVVPID.
    pub(crate) const INVVPID_ADDR: u64 = 1 << 40;
    /// Single-context INVVPID.
    pub(crate) const INVVPID_SINGLE: u64 = 1 << 41;
    /// All-context INVVPID.
    pub(crate) const INVVPID_ALL: u64 = 1 << 42;
}

/// INVEPT/INVVPID types (SDM 30.3, "INVEPT" and "INVVPID").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub(crate) enum InvType {
    /// One address (INVVPID only).
    // The SDM's type 0: kvm-rs never flushes a single address.
    #[allow(dead_code)]
    Address = 0,
    /// One context: an EPTP or a VPID.
    Single = 1,
    /// Every context.
    All = 2,
}

/// How kvm-rs flushes TLB entries tagged by an EPTP, or by a VPID, on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FlushCaps {
    /// INVEPT type for one EPTP (single-context, or all-context when that
    /// is all the CPU has).
    pub(crate) invept: InvType,
    /// INVVPID type for one VPID, or `None` when the CPU has no INVVPID
    /// (VPIDs are then not used: entries and exits flush by themselves).
    pub(crate) invvpid: Option<InvType>,
}

/// What kvm-rs uses of EPT and VPID on a CPU with `cap`; `Err` says what is
/// missing (EPT with 4-level walks, write-back tables and INVEPT are required).
pub(crate) fn flush_caps(cap: u64) -> Result<FlushCaps, &'static str> {
    if cap & ept_cap::WALK_4 == 0 {
        return Err("EPT without 4-level walks");
    }
    if cap & ept_cap::MEM_WB == 0 {
        return Err("EPT tables cannot be write-back");
    }
    if cap & ept_cap::INVEPT == 0 {
        return Err("no INVEPT");
    }
    let invept = if cap & ept_cap::INVEPT_SINGLE != 0 {
        InvType::Single
    } else if cap & ept_cap::INVEPT_ALL != 0 {
        InvType::All
    } else {
        return Err("INVEPT supports neither single- nor all-context invalidation");
    };
    let invvpid = if cap & ept_cap::INVVPID == 0 {
        None
    } else if cap & ept_cap::INVVPID_SINGLE != 0 {
        Some(InvType::Single)
    } else if cap & ept_cap::INVVPID_ALL != 0 {
        Some(InvType::All)
    } else {
        None
    };
    Ok(FlushCaps { invept, invvpid })
}

/// Whether kvm-rs uses VPIDs on a CPU with these capability MSRs
/// (`IA32_VMX_PROCBASED_CTLS2`, `IA32_VMX_EPT_VPID_CAP`): "enable VPID" can
/// be set and INVVPID has single- or all-context invalidation (C:
/// `cpu_has_vmx_vpid()` and the INVVPID checks of `hardware_setup()`). The
/// backend's probe and `kvm_intel.ko`'s `vpid` parameter both ask this.
pub(crate) fn vpid_usable(proc2_cap: u64, ept_vpid_cap: u64) -> bool {
    (proc2_cap >> 32) as u32 & proc2::ENABLE_VPID != 0
        && ept_vpid_cap & ept_cap::INVVPID != 0
        && ept_vpid_cap & (ept_cap::INVVPID_SINGLE | ept_cap::INVVPID_ALL) != 0
}

/// EPT entries and the EPT pointer (SDM 29.3.2 and 25.6.11).
pub(crate) mod ept {
    /// Read access.
    pub(crate) const READ: u64 = 1 << 0;
    /// Write access.
    pub(crate) const WRITE: u64 = 1 << 1;
    /// Execute access.
    pub(crate) const EXEC: u64 = 1 << 2;
    /// Memory type of a leaf (bits 5:3).
    pub(crate) const MT_SHIFT: u32 = 3;
    /// Ignore the guest's PAT in a leaf: the EPT memory type alone decides.
    pub(crate) const IGNORE_PAT: u64 = 1 << 6;

    /// A 4 KiB leaf mapping `pa`: readable, executable, writable if asked;
    /// write-back with the guest PAT ignored, as the C KVM maps ordinary RAM
    /// when no device needs coherent DMA.
    pub(crate) const fn leaf(pa: u64, writable: bool) -> u64 {
        let mut e = (pa & !0xfff) | READ | EXEC | ((super::MEM_TYPE_WB as u64) << MT_SHIFT) | IGNORE_PAT;
        if writable {
            e |= WRITE;
        }
        e
    }

    /// A non-leaf entry pointing at the table at `pa`: all accesses
    /// allowed, the leaves decide.
    pub(crate) const fn table(pa: u64) -> u64 {
        (pa & !0xfff) | READ | WRITE | EXEC
    }

    /// Whether an entry is present (any of R, W, X: SDM 29.3.2).
    #[cfg(test)]
    pub(crate) const fn present(e: u64) -> bool {
        e & (READ | WRITE | EXEC) != 0
    }

    /// The EPT pointer for the root table at `root_pa` walked with
    /// `levels` levels (4 or 5), write-back, without accessed/dirty flags.
    pub(crate) const fn eptp(root_pa: u64, levels: u32) -> u64 {
        (root_pa & !0xfff) | (((levels - 1) as u64) << 3) | super::MEM_TYPE_WB as u64
    }
}

/// Basic exit reasons (bits 15:0 of the exit reason, SDM appendix C).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ExitReason {
    /// 0: an exception or NMI.
    ExceptionNmi,
    /// 1: an external interrupt.
    ExternalInterrupt,
    /// 2: triple fault.
    TripleFault,
    /// 3: INIT signal.
    Init,
    /// 4: start-up IPI.
    Sipi,
    /// 5, 6: SMIs.
    Smi,
    /// 7: interrupt window.
    InterruptWindow,
    /// 8: NMI window.
    NmiWindow,
    /// 9: task switch.
    TaskSwitch,
    /// 10: CPUID.
    Cpuid,
    /// 11: GETSEC.
    Getsec,
    /// 12: HLT.
    Hlt,
    /// 13: INVD.
    Invd,
    /// 14: INVLPG.
    Invlpg,
    /// 15: RDPMC.
    Rdpmc,
    /// 16: RDTSC.
    Rdtsc,
    /// 17: RSM.
    Rsm,
    /// 18: VMCALL.
    Vmcall,
    /// 19-27: VMCLEAR, VMLAUNCH, VMPTRLD, VMPTRST, VMREAD, VMRESUME,
    /// VMWRITE, VMXOFF, VMXON.
    VmxInstruction,
    /// 28: control-register access.
    CrAccess,
    /// 29: MOV DR.
    DrAccess,
    /// 30: I/O instruction.
    Io,
    /// 31: RDMSR.
    Rdmsr,
    /// 32: WRMSR.
    Wrmsr,
    /// 33: VM-entry failure due to invalid guest state.
    InvalidGuestState,
    /// 34: VM-entry failure due to MSR loading.
    MsrLoadFail,
    /// 36: MWAIT.
    Mwait,
    /// 37: monitor trap flag.
    MonitorTrapFlag,
    /// 39: MONITOR.
    Monitor,
    /// 40: PAUSE.
    Pause,
    /// 41: VM-entry failure due to a machine-check event.
    MachineCheckOnEntry,
    /// 43: TPR below threshold.
    TprBelowThreshold,
    /// 44: APIC access.
    ApicAccess,
    /// 46, 47: descriptor-table accesses.
    DescriptorTable,
    /// 48: EPT violation.
    EptViolation,
    /// 49: EPT misconfiguration.
    EptMisconfig,
    /// 50, 53: INVEPT, INVVPID.
    InvEptVpid,
    /// 51: RDTSCP.
    Rdtscp,
    /// 52: VMX-preemption timer expired.
    PreemptionTimer,
    /// 54: WBINVD or WBNOINVD.
    Wbinvd,
    /// 55: XSETBV.
    Xsetbv,
    /// 57, 61: RDRAND, RDSEED.
    RdRandSeed,
    /// 58: INVPCID.
    Invpcid,
    /// 59: VMFUNC.
    Vmfunc,
    /// 63, 64: XSAVES, XRSTORS.
    XsavesXrstors,
    /// Any other basic exit reason.
    Other(u16),
}

impl ExitReason {
    /// Decodes the basic exit reason (bits 15:0 of the exit-reason field).
    pub(crate) fn from_basic(b: u16) -> Self {
        match b {
            0 => Self::ExceptionNmi,
            1 => Self::ExternalInterrupt,
            2 => Self::TripleFault,
            3 => Self::Init,
            4 => Self::Sipi,
            5 | 6 => Self::Smi,
            7 => Self::InterruptWindow,
            8 => Self::NmiWindow,
            9 => Self::TaskSwitch,
            10 => Self::Cpuid,
            11 => Self::Getsec,
            12 => Self::Hlt,
            13 => Self::Invd,
            14 => Self::Invlpg,
            15 => Self::Rdpmc,
            16 => Self::Rdtsc,
            17 => Self::Rsm,
            18 => Self::Vmcall,
            19..=27 => Self::VmxInstruction,
            28 => Self::CrAccess,
            29 => Self::DrAccess,
            30 => Self::Io,
            31 => Self::Rdmsr,
            32 => Self::Wrmsr,
            33 => Self::InvalidGuestState,
            34 => Self::MsrLoadFail,
            36 => Self::Mwait,
            37 => Self::MonitorTrapFlag,
            39 => Self::Monitor,
            40 => Self::Pause,
            41 => Self::MachineCheckOnEntry,
            43 => Self::TprBelowThreshold,
            44 => Self::ApicAccess,
            46 | 47 => Self::DescriptorTable,
            48 => Self::EptViolation,
            49 => Self::EptMisconfig,
            50 | 53 => Self::InvEptVpid,
            51 => Self::Rdtscp,
            52 => Self::PreemptionTimer,
            54 => Self::Wbinvd,
            55 => Self::Xsetbv,
            57 | 61 => Self::RdRandSeed,
            58 => Self::Invpcid,
            59 => Self::Vmfunc,
            63 | 64 => Self::XsavesXrstors,
            o => Self::Other(o),
        }
    }

    /// Whether the exit was caused by executing an instruction, so that the
    /// VM-exit instruction length is valid (SDM 28.2.5, the list of exits
    /// that report it; task switches and EPT violations are excluded).
    pub(crate) fn has_instruction_length(self) -> bool {
        matches!(
            self,
            Self::Cpuid
                | Self::Getsec
                | Self::Hlt
                | Self::Invd
                | Self::Invlpg
                | Self::Rdpmc
                | Self::Rdtsc
                | Self::Rsm
                | Self::Vmcall
                | Self::VmxInstruction
                | Self::CrAccess
                | Self::DrAccess
                | Self::Io
                | Self::Rdmsr
                | Self::Wrmsr
                | Self::Mwait
                | Self::Monitor
                | Self::Pause
                | Self::DescriptorTable
                | Self::InvEptVpid
                | Self::Rdtscp
                | Self::Wbinvd
                | Self::Xsetbv
                | Self::RdRandSeed
                | Self::Invpcid
                | Self::Vmfunc
                | Self::XsavesXrstors
        )
    }
}

/// The exit-reason field: bit 31 says the VM entry failed (SDM 25.9.1).
pub(crate) const EXIT_REASON_FAILED_VMENTRY: u32 = 1 << 31;

/// Interruption-information fields: VM-entry interruption information,
/// VM-exit interruption information and IDT-vectoring information share
/// this format (SDM 25.8.3, 25.9.2, 25.9.3).
// The SDM format, listed for reference; the backend uses a subset.
#[allow(dead_code)]
pub(crate) mod intr_info {
    /// Vector (bits 7:0).
    pub(crate) const VECTOR_MASK: u32 = 0xff;
    /// Type (bits 10:8).
    pub(crate) const TYPE_SHIFT: u32 = 8;
    /// External interrupt.
    pub(crate) const TYPE_EXT_INTR: u32 = 0;
    /// NMI.
    pub(crate) const TYPE_NMI: u32 = 2;
    /// Hardware exception.
    pub(crate) const TYPE_HW_EXCEPTION: u32 = 3;
    /// Software interrupt (INTn).
    pub(crate) const TYPE_SOFT_INTR: u32 = 4;
    /// Privileged software exception (INT1).
    pub(crate) const TYPE_PRIV_SOFT_EXCEPTION: u32 = 5;
    /// Software exception (INT3, INTO).
    pub(crate) const TYPE_SOFT_EXCEPTION: u32 = 6;
    /// An error code is delivered (bit 11).
    pub(crate) const DELIVER_CODE: u32 = 1 << 11;
    /// VM-exit information: NMI unblocking due to IRET (bit 12).
    pub(crate) const NMI_UNBLOCK_IRET: u32 = 1 << 12;
    /// Valid (bit 31).
    pub(crate) const VALID: u32 = 1 << 31;

    /// The type field.
    pub(crate) const fn kind(info: u32) -> u32 {
        (info >> TYPE_SHIFT) & 7
    }

    /// The vector.
    pub(crate) const fn vector(info: u32) -> u8 {
        (info & VECTOR_MASK) as u8
    }

    /// Encodes a valid event.
    pub(crate) const fn encode(vector: u8, kind: u32, deliver_code: bool) -> u32 {
        let mut v = VALID | (kind << TYPE_SHIFT) | vector as u32;
        if deliver_code {
            v |= DELIVER_CODE;
        }
        v
    }
}

/// Guest interruptibility state (SDM 25.4.2, table 25-3).
// The SDM table 25-3 bits, listed for reference; the backend uses a subset.
#[allow(dead_code)]
pub(crate) mod interruptibility {
    /// Blocking by STI.
    pub(crate) const STI: u32 = 1 << 0;
    /// Blocking by MOV SS or POP SS.
    pub(crate) const MOV_SS: u32 = 1 << 1;
    /// Blocking by SMI.
    pub(crate) const SMI: u32 = 1 << 2;
    /// Blocking by NMI.
    pub(crate) const NMI: u32 = 1 << 3;
}

/// An I/O instruction exit, decoded from the exit qualification (SDM table
/// 28-5) and, for INS/OUTS, the VM-exit instruction information (table 28-8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IoExit {
    /// Port.
    pub(crate) port: u16,
    /// Access size in bytes: 1, 2 or 4.
    pub(crate) size: u8,
    /// IN/INS.
    pub(crate) input: bool,
    /// INS/OUTS.
    pub(crate) string: bool,
    /// REP prefixed.
    pub(crate) rep: bool,
    /// Address size of INS/OUTS in bytes (2, 4, 8), when reported.
    pub(crate) addr_size: Option<u8>,
    /// The segment register of OUTS (0 ES .. 5 GS), when reported.
    pub(crate) seg: Option<u8>,
}

impl IoExit {
    /// Decodes the exit qualification, and `insn_info` when the CPU reports
    /// it for INS/OUTS (`IA32_VMX_BASIC` bit 54).
    pub(crate) fn decode(qual: u64, insn_info: Option<u32>) -> Self {
        let string = qual & (1 << 4) != 0;
        let (addr_size, seg) = match insn_info {
            Some(i) if string => {
                let a = match (i >> 7) & 7 {
                    0 => Some(2),
                    1 => Some(4),
                    2 => Some(8),
                    _ => None,
                };
                (a, Some(((i >> 15) & 7) as u8).filter(|s| *s <= 5))
            }
            _ => (None, None),
        };
        Self {
            port: (qual >> 16) as u16,
            size: ((qual & 7) + 1) as u8,
            input: qual & (1 << 3) != 0,
            string,
            rep: qual & (1 << 5) != 0,
            addr_size,
            seg,
        }
    }
}

/// A control-register access, decoded from the exit qualification (SDM table 28-3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CrExit {
    /// MOV to CRn from a general-purpose register.
    MovTo {
        /// CR number.
        cr: u8,
        /// Source register.
        gpr: u8,
    },
    /// MOV from CRn to a general-purpose register.
    MovFrom {
        /// CR number.
        cr: u8,
        /// Destination register.
        gpr: u8,
    },
    /// CLTS.
    Clts,
    /// LMSW with this source operand (bits 15:0).
    Lmsw(u16),
}

impl CrExit {
    /// Decodes the exit qualification.
    pub(crate) fn decode(qual: u64) -> Self {
        let cr = (qual & 0xf) as u8;
        let gpr = ((qual >> 8) & 0xf) as u8;
        match (qual >> 4) & 3 {
            0 => Self::MovTo { cr, gpr },
            1 => Self::MovFrom { cr, gpr },
            2 => Self::Clts,
            _ => Self::Lmsw((qual >> 16) as u16),
        }
    }
}

/// A MOV DR exit, decoded from the exit qualification (SDM table 28-4):
/// (DR number, MOV to DR, general-purpose register).
pub(crate) fn decode_dr_exit(qual: u64) -> (u8, bool, u8) {
    ((qual & 7) as u8, qual & (1 << 4) == 0, ((qual >> 8) & 0xf) as u8)
}

/// An EPT violation, decoded from the exit qualification (SDM table 28-7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EptViolation {
    /// The access was a data write.
    pub(crate) write: bool,
    /// The access was an instruction fetch.
    pub(crate) fetch: bool,
    /// The guest-physical address was mapped (readable, writable or executable).
    pub(crate) present: bool,
    /// The access was to the guest's paging structures during a walk, not
    /// to the final translated address.
    pub(crate) on_table_walk: bool,
    /// NMI unblocking due to IRET (bit 12).
    pub(crate) nmi_unblocked: bool,
}

impl EptViolation {
    /// Decodes the exit qualification.
    pub(crate) fn decode(q: u64) -> Self {
        Self {
            write: q & (1 << 1) != 0,
            fetch: q & (1 << 2) != 0,
            present: q & (7 << 3) != 0,
            // Bit 7: the guest-linear address is valid; then bit 8 tells a
            // final access (1) from a paging-structure access (0).
            on_table_walk: q & (1 << 7) != 0 && q & (1 << 8) == 0,
            nmi_unblocked: q & (1 << 12) != 0,
        }
    }
}

/// Segment access rights (SDM 25.4.1, table 25-2): the descriptor's
/// attribute bits with bit 16 "unusable". `attrib` is the 12-bit packed form
/// of `KvmSegment::attrib()` (type/S/DPL/P in bits 7:0, AVL/L/D/G in 11:8).
pub(crate) mod ar {
    /// Segment unusable.
    pub(crate) const UNUSABLE: u32 = 1 << 16;
    /// Type bit 0: accessed.
    pub(crate) const ACCESSED: u32 = 1;

    /// Access rights from the packed attribute; an unusable segment is
    /// encoded as only the unusable bit, as the C KVM does
    /// (`vmx_segment_access_rights()`).
    pub(crate) const fn from_attrib(attrib: u16, unusable: bool) -> u32 {
        if unusable {
            return UNUSABLE;
        }
        let a = attrib as u32;
        (a & 0xff) | ((a & 0xf00) << 4)
    }

    /// The packed attribute and the unusable flag of access rights. An
    /// unusable segment reads as not present.
    pub(crate) const fn to_attrib(ar: u32) -> (u16, bool) {
        let unusable = ar & UNUSABLE != 0;
        let mut a = ((ar & 0xff) | ((ar >> 4) & 0xf00)) as u16;
        if unusable {
            a &= !(1 << 7);
        }
        (a, unusable)
    }
}

/// CR0 bits.
// Architectural bits listed for reference; not every one is used.
#[allow(dead_code)]
pub(crate) mod cr0 {
    /// Protection enable.
    pub(crate) const PE: u64 = 1 << 0;
    /// Task switched.
    pub(crate) const TS: u64 = 1 << 3;
    /// Numeric error.
    pub(crate) const NE: u64 = 1 << 5;
    /// Write protect.
    pub(crate) const WP: u64 = 1 << 16;
    /// Not write-through.
    pub(crate) const NW: u64 = 1 << 29;
    /// Cache disable.
    pub(crate) const CD: u64 = 1 << 30;
    /// Paging.
    pub(crate) const PG: u64 = 1 << 31;
}

/// CR4 bits.
// Architectural bits listed for reference; not every one is used.
#[allow(dead_code)]
pub(crate) mod cr4 {
    /// PAE.
    pub(crate) const PAE: u64 = 1 << 5;
    /// PGE.
    pub(crate) const PGE: u64 = 1 << 7;
    /// VMX enable.
    pub(crate) const VMXE: u64 = 1 << 13;
    /// PCID enable.
    pub(crate) const PCIDE: u64 = 1 << 17;
}

/// How a guest control register is presented under VMX (SDM 25.6.6 and
/// 24.8 "Restrictions on VMX Operation"): the value the hardware runs with,
/// the guest/host mask (bits whose writes exit, and whose reads come from the
/// read shadow) and the shadow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CrPolicy {
    /// Bits the hardware value must have set.
    pub(crate) must_be_one: u64,
    /// Bits the hardware value may have set.
    pub(crate) may_be_one: u64,
    /// Bits owned by KVM: guest writes that change them exit.
    pub(crate) mask: u64,
}

impl CrPolicy {
    /// CR0 with the fixed bits from `IA32_VMX_CR0_FIXED0/1`. With unrestricted
    /// guest, PE and PG may be clear (SDM 27.3.1.1). PG is owned by KVM in
    /// any case: turning paging on or off changes EFER.LMA and the
    /// "IA-32e mode guest" control, which only KVM can update.
    pub(crate) fn cr0(fixed0: u64, fixed1: u64, unrestricted: bool) -> Self {
        let mut must = fixed0;
        if unrestricted {
            must &= !(cr0::PE | cr0::PG);
        }
        let may = fixed1 & 0xffff_ffff;
        Self { must_be_one: must, may_be_one: may, mask: must | !may | cr0::PG }
    }

    /// CR4 with the fixed bits from `IA32_VMX_CR4_FIXED0/1` (VMXE must be set
    /// in VMX operation, and the guest sees it clear). PAE and PCIDE are
    /// owned by KVM too: their changes need checks against the guest's mode
    /// and CR3 (C: `kvm_is_valid_cr4()` and `kvm_set_cr4()`).
    pub(crate) fn cr4(fixed0: u64, fixed1: u64) -> Self {
        let may = fixed1 & 0xffff_ffff;
        Self { must_be_one: fixed0, may_be_one: may, mask: fixed0 | !may | cr4::PAE | cr4::PCIDE }
    }

    /// The value the hardware runs with for the guest value `guest`.
    pub(crate) fn hw_value(&self, guest: u64) -> u64 {
        (guest | self.must_be_one) & self.may_be_one
    }

    /// The value the guest sees, from the hardware value and the read shadow.
    pub(crate) fn guest_value(&self, hw: u64, shadow: u64) -> u64 {
        (hw & !self.mask) | (shadow & self.mask)
    }
}

/// The layout of the MSR bitmap (SDM 25.6.9): four 1 KiB bitmaps (read low,
/// read high, write low, write high); a set bit makes the access exit. Low
/// MSRs are 0..=0x1fff, high ones 0xc0000000..=0xc0001fff; every other MSR
/// always exits. Returns the byte offsets in the page of the read and write
/// bits and the bit number.
pub(crate) fn msr_bitmap_pos(msr: u32) -> Option<(usize, usize, u8)> {
    let (base, off) = match msr {
        0..=0x1fff => (0, msr),
        0xc000_0000..=0xc000_1fff => (1024, msr - 0xc000_0000),
        _ => return None,
    };
    let byte = base + (off / 8) as usize;
    Some((byte, byte + 2048, (off % 8) as u8))
}

/// One entry of a VM-entry/VM-exit MSR list (SDM 25.7.2, table 25-15): the
/// MSR index, 32 reserved bits, the value. The lists are arrays of these,
/// 16-byte aligned.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct MsrEntry {
    /// MSR index.
    pub(crate) index: u32,
    /// Reserved, zero.
    pub(crate) reserved: u32,
    /// Value.
    pub(crate) value: u64,
}

const _: () = assert!(core::mem::size_of::<MsrEntry>() == 16);

/// Decides the `MSR_MISC_FEATURES_ENABLES` switch around the guest
/// (`msr-index.h`: bit 0 CPUID faulting, bit 1 ring-3 MWAIT).
///
/// The host value is per task (CPUID faulting follows
/// `arch_prctl(ARCH_SET_CPUID)`) and per CPU (ring-3 MWAIT): the caller reads
/// it when the vCPU is loaded. The hardware value while the guest runs is
/// the guest's with CPUID faulting cleared: for the guest, KVM emulates
/// CPUID faulting in the CPUID exit, and a set hardware bit would make the
/// guest's CPUID at CPL > 0 fault in the guest without an exit. Returns the
/// value to write before entry and the value to restore after exit, or
/// `None` when the hardware value is already right (the common case: no
/// WRMSR on either side).
pub(crate) fn misc_features_switch(host: u64, guest: u64) -> Option<(u64, u64)> {
    let hw_guest = guest & !MISC_FEATURES_CPUID_FAULT;
    (hw_guest != host).then_some((hw_guest, host))
}

/// `MSR_MISC_FEATURES_ENABLES`.
pub(crate) const MSR_MISC_FEATURES_ENABLES: u32 = 0x140;
/// `MSR_MISC_FEATURES_ENABLES` bit 0: CPUID faulting.
pub(crate) const MISC_FEATURES_CPUID_FAULT: u64 = 1 << 0;

/// A short name for a VM-instruction error number (SDM 31.4, table 31-1),
/// for messages about failed VMX instructions.
pub(crate) fn instruction_error_name(e: u32) -> &'static str {
    match e {
        1 => "VMCALL in VMX root operation",
        2 => "VMCLEAR with an invalid physical address",
        3 => "VMCLEAR with the VMXON pointer",
        4 => "VMLAUNCH with a non-clear VMCS",
        5 => "VMRESUME with a non-launched VMCS",
        6 => "VMRESUME after VMXOFF",
        7 => "VM entry with invalid control fields",
        8 => "VM entry with invalid host-state fields",
        9 => "VMPTRLD with an invalid physical address",
        10 => "VMPTRLD with the VMXON pointer",
        11 => "VMPTRLD with an incorrect VMCS revision identifier",
        12 => "VMREAD/VMWRITE of an unsupported VMCS component",
        13 => "VMWRITE to a read-only VMCS component",
        15 => "VMXON in VMX root operation",
        16 => "VM entry with an invalid executive-VMCS pointer",
        17 => "VM entry with a non-launched executive VMCS",
        26 => "VM entry with events blocked by MOV SS",
        28 => "invalid operand to INVEPT/INVVPID",
        _ => "unknown VM-instruction error",
    }
}

/// VPIDs: 1..=0xffff, one per vCPU (0 is the host's). A free VPID is a clear
/// bit; allocation and release are lock-free. `None` when all are in use:
/// the vCPU then runs without a VPID (C: `allocate_vpid()`).
pub(crate) struct VpidBitmap<W: core::ops::Deref<Target = [core::sync::atomic::AtomicU64]>> {
    words: W,
}

impl<W: core::ops::Deref<Target = [core::sync::atomic::AtomicU64]>> VpidBitmap<W> {
    /// Words of a bitmap covering every VPID.
    pub(crate) const WORDS: usize = 65536 / 64;

    /// A bitmap over `words` (all zero, [`Self::WORDS`] of them); VPID 0 is
    /// reserved for the host.
    pub(crate) fn new(words: W) -> Self {
        if let Some(w) = words.first() {
            w.fetch_or(1, core::sync::atomic::Ordering::Relaxed);
        }
        Self { words }
    }

    /// Takes a free VPID.
    pub(crate) fn alloc(&self) -> Option<u16> {
        use core::sync::atomic::Ordering;
        for (i, w) in self.words.iter().enumerate() {
            let mut cur = w.load(Ordering::Relaxed);
            while cur != u64::MAX {
                let bit = (!cur).trailing_zeros();
                match w.compare_exchange(cur, cur | (1 << bit), Ordering::AcqRel, Ordering::Relaxed) {
                    Ok(_) => return u16::try_from(i * 64 + bit as usize).ok(),
                    Err(now) => cur = now,
                }
            }
        }
        None
    }

    /// Returns `vpid` (non-zero) to the pool.
    pub(crate) fn free(&self, vpid: u16) {
        if vpid == 0 {
            return;
        }
        if let Some(w) = self.words.get(usize::from(vpid) / 64) {
            w.fetch_and(!(1 << (vpid % 64)), core::sync::atomic::Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::AtomicU64;
    use std::vec::Vec;

    #[test]
    fn field_types_match_encodings() {
        // Every constant was checked at compile time; check the table too,
        // and that no encoding appears twice.
        let mut seen = Vec::new();
        for (name, enc) in ALL_FIELDS {
            assert!(!seen.contains(enc), "{name} duplicates {enc:#x}");
            seen.push(*enc);
            if name.starts_with("GUEST_") && !is_read_only(*enc) {
                assert_eq!((enc >> 10) & 3, 2, "{name} is not a guest-state field");
            }
            if name.starts_with("HOST_") {
                assert_eq!((enc >> 10) & 3, 3, "{name} is not a host-state field");
            }
        }
        assert_eq!(width_of(GUEST_CS_SELECTOR.encoding()), Width::W16);
        assert_eq!(width_of(GUEST_CS_LIMIT.encoding()), Width::W32);
        assert_eq!(width_of(EPT_POINTER.encoding()), Width::W64);
        assert_eq!(width_of(GUEST_RIP.encoding()), Width::Natural);
        assert!(is_read_only(VM_EXIT_REASON.encoding()));
        assert!(is_read_only(EXIT_QUALIFICATION.encoding()));
        assert!(!is_read_only(VM_ENTRY_INTR_INFO_FIELD.encoding()));
    }

    #[test]
    #[should_panic(expected = "another width")]
    fn wrong_width_is_refused() {
        // At run time this panics; in a `const` (as every field above) it
        // is a compile error.
        let _ = Field32::new(0x0802);
    }

    #[test]
    #[should_panic(expected = "access kind")]
    fn writable_exit_info_is_refused() {
        let _ = Field32::new(0x4402);
    }

    #[test]
    fn exit_state_reads_each_field_once_and_segments_in_table_order() {
        for enc in [<ExitState as FieldSet>::ENCODINGS, <ColdState as FieldSet>::ENCODINGS] {
            for (i, e) in enc.iter().enumerate() {
                assert!(!enc[i + 1..].contains(e), "field {:#x} twice", e);
            }
        }
        let mut r = <ExitState as FieldSet>::zeroed();
        let enc = <ExitState as FieldSet>::ENCODINGS;
        for (r, e) in r.raw_mut().iter_mut().zip(enc) {
            *r = u64::from(*e) << 8 | 0x5a;
        }
        assert_eq!(r.reason(), (u64::from(VM_EXIT_REASON.encoding()) << 8 | 0x5a) as u32);
        assert_eq!(r.ss_ar(), (u64::from(GUEST_SS_AR_BYTES.encoding()) << 8 | 0x5a) as u32);
        // Give every field a distinct raw value, then check each segment
        // accessor returns the fields GUEST_SEGS names for that segment.
        let enc = <ColdState as FieldSet>::ENCODINGS;
        let mut x = <ColdState as FieldSet>::zeroed();
        for (r, e) in x.raw_mut().iter_mut().zip(enc) {
            *r = u64::from(*e) << 8 | 0x5a;
        }
        for (i, f) in GUEST_SEGS.iter().enumerate() {
            let (sel, base, limit, ar) = x.seg(i);
            assert_eq!(sel, f.selector.value_of(u64::from(f.selector.encoding()) << 8 | 0x5a));
            assert_eq!(base, u64::from(f.base.encoding()) << 8 | 0x5a);
            assert_eq!(limit, f.limit.value_of(u64::from(f.limit.encoding()) << 8 | 0x5a));
            assert_eq!(ar, f.ar.value_of(u64::from(f.ar.encoding()) << 8 | 0x5a));
        }
        assert_eq!(x.pat(), u64::from(GUEST_IA32_PAT.encoding()) << 8 | 0x5a);
    }

    #[test]
    fn entry_regs_hold_what_was_given_in_field_order() {
        let e = EntryRegs::new(0x1000, 0x2000, 0x202);
        assert_eq!(<EntryRegs as FieldSet>::ENCODINGS, &[GUEST_RIP.encoding(), GUEST_RSP.encoding(), GUEST_RFLAGS.encoding()]);
        assert_eq!(e.raw(), &[0x1000, 0x2000, 0x202]);
        assert_eq!((e.rip(), e.rsp(), e.rflags()), (0x1000, 0x2000, 0x202));
    }

    #[test]
    fn privileged_fields_are_host_state_and_addresses() {
        assert!(is_privileged(HOST_RIP.encoding()));
        assert!(is_privileged(EPT_POINTER.encoding()));
        assert!(is_privileged(MSR_BITMAP.encoding()));
        assert!(is_privileged(VM_ENTRY_MSR_LOAD_COUNT.encoding()));
        assert!(!is_privileged(GUEST_RIP.encoding()));
        assert!(!is_privileged(CPU_BASED_VM_EXEC_CONTROL.encoding()));
        assert!(!is_privileged(GUEST_CS_SELECTOR.encoding()));
    }

    #[test]
    fn segment_table_is_consistent() {
        for s in GUEST_SEGS {
            let n = s.selector.encoding() & 0x1e;
            assert_eq!(s.limit.encoding() & 0x1e, n);
            assert_eq!(s.ar.encoding() & 0x3e, 0x14 + n);
            assert_eq!(s.base.encoding() & 0x1e, (6 + n) & 0x1e);
        }
    }

    #[test]
    fn adjust_controls_follows_allowed_settings() {
        // Allowed 0-settings: bits 1, 2 must be 1; allowed 1-settings: 0..=7.
        let cap = (0xffu64 << 32) | 0x6;
        assert_eq!(adjust_controls(1 << 0, 1 << 7, cap), Ok(0x87));
        // An optional control the CPU lacks is dropped.
        assert_eq!(adjust_controls(1 << 0, 1 << 9, cap), Ok(0x7));
        // A required one is an error naming it.
        assert_eq!(adjust_controls(1 << 8 | 1, 0, cap), Err(1 << 8));
        assert!(controls_valid(0x87, cap));
        assert!(!controls_valid(0x81, cap));
        assert!(!controls_valid(0x107, cap));
    }

    #[test]
    fn vmx_basic_decodes() {
        // Bochs corei7_skylake_x style: revision 0x10, 4 KiB, WB, INS/OUTS info, TRUE controls.
        let v = 0x10u64 | (0x1000 << 32) | (6 << 50) | (1 << 54) | (1 << 55);
        let b = VmxBasic::from_msr(v);
        assert_eq!(b.revision, 0x10);
        assert_eq!(b.region_size, 4096);
        assert!(b.ins_outs_info && b.true_ctls && !b.addr_32bit);
        assert_eq!(b.check(), Ok(()));
        assert!(VmxBasic::from_msr(v | (1 << 48)).check().is_err());
        assert!(VmxBasic::from_msr((v & !(0xf << 50)) | (0 << 50)).check().is_err());
        assert!(VmxBasic::from_msr((v & !(0x1fff << 32)) | (0x2000 << 32)).check().is_err());
    }

    #[test]
    fn feature_control() {
        assert!(feature_control_allows_vmxon(0).is_err());
        assert!(feature_control_allows_vmxon(feature_control::LOCKED).is_err());
        assert!(feature_control_allows_vmxon(feature_control::VMXON_OUTSIDE_SMX).is_err());
        assert_eq!(feature_control_allows_vmxon(feature_control::LOCKED | feature_control::VMXON_OUTSIDE_SMX), Ok(()));
    }

    #[test]
    fn ept_formats() {
        let pa = 0x1234_5000u64;
        let l = ept::leaf(pa, true);
        assert_eq!(l, pa | 7 | (6 << 3) | (1 << 6));
        assert_eq!(ept::leaf(pa, false) & ept::WRITE, 0);
        assert!(ept::present(l) && !ept::present(0) && ept::present(ept::table(pa)));
        assert_eq!(ept::table(pa | 0x123), pa | 7);
        assert_eq!(ept::eptp(pa, 4), pa | (3 << 3) | 6);
        assert_eq!(ept::eptp(pa, 5), pa | (4 << 3) | 6);
    }

    #[test]
    fn flush_caps_prefer_single_context() {
        let base = ept_cap::WALK_4 | ept_cap::MEM_WB | ept_cap::INVEPT;
        assert!(flush_caps(base).is_err());
        let c = flush_caps(base | ept_cap::INVEPT_SINGLE | ept_cap::INVEPT_ALL | ept_cap::INVVPID | ept_cap::INVVPID_SINGLE)
            .unwrap();
        assert_eq!(c, FlushCaps { invept: InvType::Single, invvpid: Some(InvType::Single) });
        let c = flush_caps(base | ept_cap::INVEPT_ALL).unwrap();
        assert_eq!(c, FlushCaps { invept: InvType::All, invvpid: None });
        assert!(flush_caps(ept_cap::MEM_WB | ept_cap::INVEPT | ept_cap::INVEPT_ALL).is_err());
    }

    #[test]
    fn vpid_needs_the_control_and_invvpid() {
        let ctl = u64::from(proc2::ENABLE_VPID) << 32;
        let inv = ept_cap::INVVPID | ept_cap::INVVPID_SINGLE;
        assert!(vpid_usable(ctl, inv));
        assert!(vpid_usable(ctl, ept_cap::INVVPID | ept_cap::INVVPID_ALL));
        assert!(!vpid_usable(0, inv));
        // Allowed-0 (must be one) bits do not make it settable.
        assert!(!vpid_usable(u64::from(proc2::ENABLE_VPID), inv));
        assert!(!vpid_usable(ctl, ept_cap::INVVPID));
        assert!(!vpid_usable(ctl, ept_cap::INVVPID_SINGLE));
        // Whenever it is usable, flush_caps offers an INVVPID type.
        let base = ept_cap::WALK_4 | ept_cap::MEM_WB | ept_cap::INVEPT | ept_cap::INVEPT_SINGLE;
        for cap in [inv, ept_cap::INVVPID | ept_cap::INVVPID_ALL, ept_cap::INVVPID, 0] {
            assert_eq!(vpid_usable(ctl, cap), flush_caps(base | cap).unwrap().invvpid.is_some());
        }
    }

    #[test]
    fn exit_reasons() {
        assert_eq!(ExitReason::from_basic(10), ExitReason::Cpuid);
        assert_eq!(ExitReason::from_basic(48), ExitReason::EptViolation);
        assert_eq!(ExitReason::from_basic(24), ExitReason::VmxInstruction);
        assert_eq!(ExitReason::from_basic(200), ExitReason::Other(200));
        assert!(ExitReason::Io.has_instruction_length());
        assert!(!ExitReason::EptViolation.has_instruction_length());
        assert!(!ExitReason::ExceptionNmi.has_instruction_length());
        assert!(!ExitReason::TaskSwitch.has_instruction_length());
    }

    #[test]
    fn io_exit_decodes() {
        // OUT dx, al to port 0x1000 (size 1, out, not string).
        let q = 0x1000u64 << 16;
        assert_eq!(
            IoExit::decode(q, None),
            IoExit { port: 0x1000, size: 1, input: false, string: false, rep: false, addr_size: None, seg: None }
        );
        // REP INSW, 64-bit addressing, ES.
        let q = (0x60u64 << 16) | 1 | (1 << 3) | (1 << 4) | (1 << 5);
        let info = (2 << 7) | (0 << 15);
        let d = IoExit::decode(q, Some(info));
        assert_eq!((d.size, d.input, d.string, d.rep, d.addr_size, d.seg), (2, true, true, true, Some(8), Some(0)));
        // IN eax: size 4.
        assert_eq!(IoExit::decode(3 | (1 << 3), None).size, 4);
    }

    #[test]
    fn cr_and_dr_exits_decode() {
        assert_eq!(CrExit::decode(0x0300), CrExit::MovTo { cr: 0, gpr: 3 });
        assert_eq!(CrExit::decode(0x0c14), CrExit::MovFrom { cr: 4, gpr: 12 });
        assert_eq!(CrExit::decode(0x20), CrExit::Clts);
        assert_eq!(CrExit::decode(0x0001_0030), CrExit::Lmsw(1));
        assert_eq!(decode_dr_exit(0x0207), (7, true, 2));
        assert_eq!(decode_dr_exit(0x0f16), (6, false, 15));
    }

    #[test]
    fn ept_violation_decodes() {
        let v = EptViolation::decode(0x2 | (1 << 7) | (1 << 8));
        assert!(v.write && !v.fetch && !v.present && !v.on_table_walk);
        let v = EptViolation::decode(0x1 | (1 << 3) | (1 << 7));
        assert!(v.present && v.on_table_walk);
        assert!(EptViolation::decode(0x4).fetch);
    }

    #[test]
    fn access_rights_round_trip() {
        // 64-bit code: type 11, S, DPL 0, P, L, G.
        let attrib: u16 = 0xb | (1 << 4) | (1 << 7) | (1 << 9) | (1 << 11);
        let a = ar::from_attrib(attrib, false);
        assert_eq!(a, 0xb | (1 << 4) | (1 << 7) | (1 << 13) | (1 << 15));
        assert_eq!(ar::to_attrib(a), (attrib, false));
        assert_eq!(ar::from_attrib(attrib, true), ar::UNUSABLE);
        assert_eq!(ar::to_attrib(ar::UNUSABLE | 0x93), (0x13, true));
    }

    #[test]
    fn cr_policies() {
        // Typical values: CR0 FIXED0 = PE|NE|PG, FIXED1 = all ones; CR4
        // FIXED0 = VMXE, FIXED1 = the supported bits.
        let p = CrPolicy::cr0(0x8000_0021, 0xffff_ffff, true);
        assert_eq!(p.must_be_one, cr0::NE);
        assert_eq!(p.hw_value(0x10), 0x30);
        assert_eq!(p.mask & 0xffff_ffff, cr0::NE | cr0::PG);
        assert_eq!(p.guest_value(0x30 | cr0::PG, 0x10 | cr0::PG), 0x10 | cr0::PG);
        assert_eq!(p.guest_value(0x31, 0x11), 0x11);
        let p = CrPolicy::cr0(0x8000_0021, 0xffff_ffff, false);
        assert_eq!(p.hw_value(0), 0x8000_0021);
        let p = CrPolicy::cr4(cr4::VMXE, 0x3727ff);
        assert_eq!(p.hw_value(cr4::PAE), cr4::PAE | cr4::VMXE);
        assert_eq!(p.guest_value(cr4::PAE | cr4::VMXE, cr4::PAE), cr4::PAE);
        assert_ne!(p.mask & cr4::VMXE, 0);
        // Bits the CPU cannot set in VMX operation are KVM's.
        assert_ne!(p.mask & (1 << 23), 0);
        assert_eq!(p.hw_value(1 << 23), cr4::VMXE);
    }

    #[test]
    fn msr_bitmap_positions() {
        assert_eq!(msr_bitmap_pos(0), Some((0, 2048, 0)));
        assert_eq!(msr_bitmap_pos(0x1ff), Some((63, 2048 + 63, 7)));
        assert_eq!(msr_bitmap_pos(0xc000_0080), Some((1024 + 16, 3072 + 16, 0)));
        assert_eq!(msr_bitmap_pos(0xc000_0102), Some((1024 + 32, 3072 + 32, 2)));
        assert_eq!(msr_bitmap_pos(0x2000), None);
        assert_eq!(msr_bitmap_pos(0xc001_0000), None);
    }

    #[test]
    fn misc_features_switch_cases() {
        // Neither host nor guest uses anything: nothing to write.
        assert_eq!(misc_features_switch(0, 0), None);
        // The guest's CPUID faulting is emulated: still nothing.
        assert_eq!(misc_features_switch(0, MISC_FEATURES_CPUID_FAULT), None);
        // Host task with CPUID faulting (arch_prctl): cleared for the guest,
        // restored after.
        assert_eq!(misc_features_switch(1, 0), Some((0, 1)));
        assert_eq!(misc_features_switch(1, 1), Some((0, 1)));
        // Host with ring-3 MWAIT, guest without.
        assert_eq!(misc_features_switch(2, 0), Some((0, 2)));
        // Both.
        assert_eq!(misc_features_switch(3, 0), Some((0, 3)));
    }

    #[test]
    fn intr_info_encoding() {
        let v = intr_info::encode(14, intr_info::TYPE_HW_EXCEPTION, true);
        assert_eq!(v, (1 << 31) | (3 << 8) | (1 << 11) | 14);
        assert_eq!(intr_info::kind(v), 3);
        assert_eq!(intr_info::vector(v), 14);
    }

    #[test]
    fn vpids_are_unique_and_recycled() {
        let words: Vec<AtomicU64> = (0..VpidBitmap::<Vec<AtomicU64>>::WORDS).map(|_| AtomicU64::new(0)).collect();
        let b = VpidBitmap::new(words);
        let mut got = Vec::new();
        for _ in 0..200 {
            got.push(b.alloc().unwrap());
        }
        assert_eq!(got[0], 1, "VPID 0 is the host's");
        let mut sorted = got.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), got.len());
        b.free(got[5]);
        assert_eq!(b.alloc(), Some(got[5]));
        // A small bitmap runs out after its 255 VPIDs (0 is the host's).
        let small = VpidBitmap::new((0..4).map(|_| AtomicU64::new(0)).collect::<Vec<_>>());
        let mut n = 0;
        while small.alloc().is_some() {
            n += 1;
        }
        assert_eq!(n, 255);
        small.free(0);
        assert_eq!(small.alloc(), None, "VPID 0 is never handed out");
    }
}
