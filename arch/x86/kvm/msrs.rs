// SPDX-License-Identifier: GPL-2.0

//! Model-specific registers (`kvm_get_msr_common()`/`kvm_set_msr_common()`
//! of `arch/x86/kvm/x86.c`): the MSR numbers, the lists `KVM_GET_MSR_INDEX_LIST`
//! and `KVM_GET_MSR_FEATURE_INDEX_LIST` report, and the checks on written values.
//!
//! Core-only (host-tested); the vCPU code dispatches on the numbers.

/// `MSR_IA32_TSC`.
pub(crate) const MSR_IA32_TSC: u32 = 0x10;
/// `MSR_IA32_APICBASE`.
pub(crate) const MSR_IA32_APICBASE: u32 = 0x1b;
/// `MSR_IA32_TSC_ADJUST`.
pub(crate) const MSR_IA32_TSC_ADJUST: u32 = 0x3b;
/// `MSR_IA32_UCODE_REV`.
pub(crate) const MSR_IA32_UCODE_REV: u32 = 0x8b;
/// `MSR_PLATFORM_INFO`.
pub(crate) const MSR_PLATFORM_INFO: u32 = 0xce;
/// `MSR_MISC_FEATURES_ENABLES`.
pub(crate) const MSR_MISC_FEATURES_ENABLES: u32 = 0x140;
/// `MSR_IA32_SYSENTER_CS`.
pub(crate) const MSR_IA32_SYSENTER_CS: u32 = 0x174;
/// `MSR_IA32_SYSENTER_ESP`.
pub(crate) const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
/// `MSR_IA32_SYSENTER_EIP`.
pub(crate) const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
/// `MSR_IA32_POWER_CTL`: kept, no effect (the C KVM emulates it so).
pub(crate) const MSR_IA32_POWER_CTL: u32 = 0x1fc;
/// `MSR_IA32_MISC_ENABLE`.
pub(crate) const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
/// `MSR_IA32_CR_PAT`.
pub(crate) const MSR_IA32_CR_PAT: u32 = 0x277;
/// `MSR_IA32_TSC_DEADLINE`.
pub(crate) const MSR_IA32_TSC_DEADLINE: u32 = 0x6e0;
/// The x2APIC MSR range.
pub(crate) const X2APIC_FIRST: u32 = 0x800;
/// Last x2APIC MSR.
pub(crate) const X2APIC_LAST: u32 = 0x8ff;
/// `MSR_EFER`.
pub(crate) const MSR_EFER: u32 = 0xc000_0080;
/// `MSR_STAR`.
pub(crate) const MSR_STAR: u32 = 0xc000_0081;
/// `MSR_LSTAR`.
pub(crate) const MSR_LSTAR: u32 = 0xc000_0082;
/// `MSR_CSTAR`.
pub(crate) const MSR_CSTAR: u32 = 0xc000_0083;
/// `MSR_SYSCALL_MASK`.
pub(crate) const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
/// `MSR_FS_BASE`.
pub(crate) const MSR_FS_BASE: u32 = 0xc000_0100;
/// `MSR_GS_BASE`.
pub(crate) const MSR_GS_BASE: u32 = 0xc000_0101;
/// `MSR_KERNEL_GS_BASE`.
pub(crate) const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
/// `MSR_K7_HWCR`.
pub(crate) const MSR_K7_HWCR: u32 = 0xc001_0015;
/// `MSR_AMD64_DE_CFG`.
pub(crate) const MSR_AMD64_DE_CFG: u32 = 0xc001_1029;
/// `MSR_VM_HSAVE_PA`: nested SVM is not offered, so guests get #GP.
// Named to document that; no code dispatches on it.
#[allow(dead_code)]
pub(crate) const MSR_VM_HSAVE_PA: u32 = 0xc001_0117;

/// `MSR_IA32_MISC_ENABLE` bits KVM sets at reset: "BTS unavailable" and
/// "PEBS unavailable" (no PMU is offered).
pub(crate) const MISC_ENABLE_RESET: u64 = (1 << 11) | (1 << 12);
/// `MSR_PLATFORM_INFO.CPUID_FAULT` (bit 31): CPUID faulting is supported.
pub(crate) const PLATFORM_INFO_CPUID_FAULT: u64 = 1 << 31;
/// `MSR_MISC_FEATURES_ENABLES.CPUID_FAULT` (bit 0).
pub(crate) const MISC_FEATURES_CPUID_FAULT: u64 = 1;
/// `MSR_AMD64_DE_CFG.LFENCE_SERIALIZE` (bit 1): the only bit offered.
pub(crate) const DE_CFG_LFENCE_SERIALIZE: u64 = 1 << 1;

/// The MSRs `KVM_GET_MSR_INDEX_LIST` reports: the ones user space must save
/// and restore with `KVM_GET_MSRS`/`KVM_SET_MSRS` to migrate a vCPU (state
/// not in `kvm_sregs`). Every one is readable and writable from user space.
pub(crate) const MSRS_TO_SAVE: &[u32] = &[
    MSR_IA32_SYSENTER_CS,
    MSR_IA32_SYSENTER_ESP,
    MSR_IA32_SYSENTER_EIP,
    MSR_STAR,
    MSR_CSTAR,
    MSR_KERNEL_GS_BASE,
    MSR_SYSCALL_MASK,
    MSR_LSTAR,
    MSR_IA32_TSC,
    MSR_IA32_TSC_ADJUST,
    MSR_IA32_MISC_ENABLE,
    MSR_IA32_POWER_CTL,
    MSR_MISC_FEATURES_ENABLES,
    MSR_PLATFORM_INFO,
    MSR_IA32_UCODE_REV,
    MSR_K7_HWCR,
    MSR_IA32_CR_PAT,
    // The machine-check globals user space saves (C: `emulated_msrs_all`);
    // it saves the banks itself, from the MCG_CAP it set.
    super::mce::MSR_IA32_MCG_STATUS,
    super::mce::MSR_IA32_MCG_CTL,
];

/// The feature MSRs (`KVM_GET_MSR_FEATURE_INDEX_LIST`): read with
/// `KVM_GET_MSRS` on `/dev/kvm`, they say what the host supports.
pub(crate) const FEATURE_MSRS: &[u32] = &[MSR_IA32_UCODE_REV, MSR_AMD64_DE_CFG];

/// `value` sign-extended from bit `bits - 1` (C: `__canonical_address()`).
pub(crate) fn canonicalize(value: u64, bits: u32) -> u64 {
    let shift = 64 - bits;
    (((value << shift) as i64) >> shift) as u64
}

/// `EFER` bits.
// Architectural bits (APM vol. 2, 3.1.7), listed for reference; not all are checked.
#[allow(dead_code)]
pub(crate) mod efer {
    /// SYSCALL enable.
    pub(crate) const SCE: u64 = 1 << 0;
    /// Long mode enable.
    pub(crate) const LME: u64 = 1 << 8;
    /// Long mode active.
    pub(crate) const LMA: u64 = 1 << 10;
    /// No-execute enable.
    pub(crate) const NXE: u64 = 1 << 11;
    /// SVM enable.
    pub(crate) const SVME: u64 = 1 << 12;
    /// Long-mode segment limit enable.
    pub(crate) const LMSLE: u64 = 1 << 13;
    /// Fast FXSAVE/FXRSTOR.
    pub(crate) const FFXSR: u64 = 1 << 14;
}

/// What the guest's CPUID allows in EFER.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct EferCaps {
    /// CPUID LM.
    pub(crate) lm: bool,
    /// CPUID NX.
    pub(crate) nx: bool,
    /// CPUID SVM (nested).
    pub(crate) svm: bool,
    /// CPUID FFXSR.
    pub(crate) ffxsr: bool,
}

/// `kvm_valid_efer()` plus the guest-write rules of `set_efer()`: whether
/// `new` is a value the guest may write over `old` with paging as given.
/// Host-initiated writes skip the paging rule (`host`).
pub(crate) fn efer_write_ok(old: u64, new: u64, caps: EferCaps, paging: bool, host: bool) -> bool {
    let mut allowed = efer::SCE;
    if caps.lm {
        allowed |= efer::LME | efer::LMA;
    }
    if caps.nx {
        allowed |= efer::NXE;
    }
    if caps.svm {
        allowed |= efer::SVME;
    }
    if caps.ffxsr {
        allowed |= efer::FFXSR;
    }
    if new & !allowed != 0 {
        return false;
    }
    // A guest cannot toggle LME with paging on (SDM vol. 3, 9.8.5).
    !(paging && !host && (old ^ new) & efer::LME != 0)
}

/// `MSR_K7_HWCR` write (C: `kvm_set_msr_common()`): bits 3, 6 and 8 are
/// accepted and dropped, McStatusWrEn (18) and TscFreqSel (24) kept, anything
/// else refused. Returns the value to store.
pub(crate) fn hwcr_write(v: u64) -> Option<u64> {
    let v = v & !((1 << 3) | (1 << 6) | (1 << 8));
    (v & !((1 << 18) | (1 << 24)) == 0).then_some(v)
}

/// `MSR_IA32_MISC_ENABLE` bits a guest may change (C: everything but
/// MWAIT enable when MONITOR is not offered... kvm-rs offers no MONITOR, so
/// bit 18 is fixed). Returns the value to store.
pub(crate) fn misc_enable_write(old: u64, new: u64, host: bool) -> Option<u64> {
    const MWAIT: u64 = 1 << 18;
    if !host && (old ^ new) & MWAIT != 0 {
        return None;
    }
    Some(new)
}

/// Whether `pat` is a valid PAT: each byte 0, 1, 4, 5, 6 or 7.
pub(crate) fn pat_valid(pat: u64) -> bool {
    (0..8).all(|i| matches!((pat >> (i * 8)) & 0xff, 0 | 1 | 4..=7))
}

/// `struct kvm_msr_entry` size.
pub(crate) const MSR_ENTRY_SIZE: usize = 16;
/// `MAX_IO_MSRS`: most entries one `KVM_GET_MSRS`/`KVM_SET_MSRS` takes.
pub(crate) const MAX_IO_MSRS: u32 = 256;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hwcr_matches_selftest_rules() {
        let ignored = (1u64 << 3) | (1 << 6) | (1 << 8);
        let valid = (1u64 << 18) | (1 << 24);
        for bit in 0..64 {
            let v = 1u64 << bit;
            let r = hwcr_write(v);
            if v & !(ignored | valid) != 0 {
                assert_eq!(r, None, "bit {bit}");
            } else {
                assert_eq!(r, Some(v & valid), "bit {bit}");
            }
        }
    }

    #[test]
    fn efer_rules() {
        let caps = EferCaps { lm: true, nx: true, svm: false, ffxsr: false };
        assert!(efer_write_ok(0, efer::LME | efer::SCE | efer::NXE, caps, false, false));
        assert!(!efer_write_ok(0, efer::SVME, caps, false, false));
        assert!(!efer_write_ok(0, efer::LME, caps, true, false));
        assert!(efer_write_ok(0, efer::LME, caps, true, true));
        assert!(!efer_write_ok(0, 1 << 20, caps, false, true));
        let nolm = EferCaps { lm: false, ..caps };
        assert!(!efer_write_ok(0, efer::LME, nolm, false, true));
    }

    #[test]
    fn canonical() {
        assert_eq!(canonicalize(0x0000_8000_0000_0000, 48), 0xffff_8000_0000_0000);
        assert_eq!(canonicalize(0x0000_8000_0000_0000, 57), 0x0000_8000_0000_0000);
        assert_eq!(canonicalize(0x0100_0000_0000_0000, 57), 0xff00_0000_0000_0000);
        assert_eq!(canonicalize(0x1234_5678, 48), 0x1234_5678);
        assert_eq!(canonicalize(0xffff_ffff_ffff_f000, 48), 0xffff_ffff_ffff_f000);
    }

    #[test]
    fn pat() {
        assert!(pat_valid(0x0007_0406_0007_0406));
        assert!(!pat_valid(0x0007_0406_0007_0402));
        assert!(!pat_valid(0x08));
    }

    #[test]
    fn lists_are_sorted_sets() {
        for list in [MSRS_TO_SAVE, FEATURE_MSRS] {
            for (i, a) in list.iter().enumerate() {
                assert!(!list[i + 1..].contains(a));
            }
        }
    }
}
