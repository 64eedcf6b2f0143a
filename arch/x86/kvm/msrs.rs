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
/// `MSR_IA32_FEAT_CTL` (`IA32_FEATURE_CONTROL`): emulated only by backends
/// that say so (`Backend::feature_control()`: VMX, as the C kvm-intel; the C
/// kvm-amd has no such MSR).
pub(crate) const MSR_IA32_FEAT_CTL: u32 = 0x3a;
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

/// `IA32_FEATURE_CONTROL` bits (SDM vol. 4, table 2-2; vol. 3C, 24.7).
pub(crate) mod feat_ctl {
    /// Lock: the guest can no longer write the MSR (until reset).
    pub(crate) const LOCKED: u64 = 1 << 0;
    /// VMXON allowed inside SMX operation.
    pub(crate) const VMX_INSIDE_SMX: u64 = 1 << 1;
    /// VMXON allowed outside SMX operation.
    pub(crate) const VMX_OUTSIDE_SMX: u64 = 1 << 2;
    /// SGX launch control (the launch-enclave key hash MSRs are writable).
    pub(crate) const SGX_LC: u64 = 1 << 17;
    /// SGX enabled.
    pub(crate) const SGX: u64 = 1 << 18;
    /// Local machine-check exceptions enabled.
    pub(crate) const LMCE: u64 = 1 << 20;
    /// Every bit KVM knows (C: `KVM_SUPPORTED_FEATURE_CONTROL`): what user
    /// space may set whatever the guest's CPUID says ("VMX inside SMX"
    /// included, although SMX is never emulated: the C KVM keeps it for
    /// compatibility with existing user space).
    pub(crate) const SUPPORTED: u64 = LOCKED | VMX_INSIDE_SMX | VMX_OUTSIDE_SMX | SGX_LC | SGX | LMCE;
}

/// What decides which `IA32_FEATURE_CONTROL` bits the guest may write (C:
/// `msr_ia32_feature_control_valid_bits`, kept up to date by
/// `vmx_vcpu_after_set_cpuid()` and `vmx_setup_mce()`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FeatCtlCaps {
    /// The guest has VMX and KVM offers it (nested VMX: C's governed
    /// feature, the guest's CPUID bit and KVM's both).
    pub(crate) vmx: bool,
    /// The guest's CPUID has SGX (as set by user space: the C KVM checks
    /// the guest's CPUID alone here, not what KVM supports).
    pub(crate) sgx: bool,
    /// The guest's CPUID has SGX_LC (likewise).
    pub(crate) sgx_lc: bool,
    /// The guest's `MCG_CAP` has `MCG_LMCE_P`.
    pub(crate) lmce: bool,
}

impl FeatCtlCaps {
    /// The bits a guest WRMSR may set: the lock always, the others as the
    /// guest's features allow.
    pub(crate) fn guest_valid(self) -> u64 {
        let mut v = feat_ctl::LOCKED;
        if self.vmx {
            v |= feat_ctl::VMX_INSIDE_SMX | feat_ctl::VMX_OUTSIDE_SMX;
        }
        if self.sgx {
            v |= feat_ctl::SGX;
        }
        if self.sgx_lc {
            v |= feat_ctl::SGX_LC;
        }
        if self.lmce {
            v |= feat_ctl::LMCE;
        }
        v
    }
}

/// Whether writing `new` to `IA32_FEATURE_CONTROL`, which holds `cur`, is
/// allowed (C: `is_vmx_feature_control_msr_valid()`). User space may write
/// any known bit, locked or not; the guest only while the lock is clear, and
/// only bits its features allow. A refused guest write is #GP.
pub(crate) fn feat_ctl_write_ok(cur: u64, new: u64, host: bool, caps: FeatCtlCaps) -> bool {
    if host {
        return new & !feat_ctl::SUPPORTED == 0;
    }
    cur & feat_ctl::LOCKED == 0 && new & !caps.guest_valid() == 0
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
    fn feat_ctl_host_writes() {
        let none = FeatCtlCaps::default();
        // Every known bit, alone and together, locked or not: the guest's
        // features do not matter to user space.
        for cur in [0, feat_ctl::LOCKED, feat_ctl::SUPPORTED] {
            for bit in 0..64 {
                let v = 1u64 << bit;
                assert_eq!(feat_ctl_write_ok(cur, v, true, none), feat_ctl::SUPPORTED & v != 0, "bit {bit}");
            }
            assert!(feat_ctl_write_ok(cur, feat_ctl::SUPPORTED, true, none));
            assert!(feat_ctl_write_ok(cur, 0, true, none));
        }
        assert_eq!(feat_ctl::SUPPORTED, 0x16_0007);
    }

    #[test]
    fn feat_ctl_guest_writes() {
        let none = FeatCtlCaps::default();
        // Without features the guest can only lock the MSR (and write 0).
        assert!(feat_ctl_write_ok(0, 0, false, none));
        assert!(feat_ctl_write_ok(0, feat_ctl::LOCKED, false, none));
        for bit in [
            feat_ctl::VMX_INSIDE_SMX,
            feat_ctl::VMX_OUTSIDE_SMX,
            feat_ctl::SGX_LC,
            feat_ctl::SGX,
            feat_ctl::LMCE,
            1 << 3,
            1 << 63,
        ] {
            assert!(!feat_ctl_write_ok(0, bit, false, none), "{bit:#x}");
            assert!(!feat_ctl_write_ok(0, bit | feat_ctl::LOCKED, false, none), "{bit:#x}");
        }
        // Each feature opens its own bits, nothing else.
        let cases = [
            (FeatCtlCaps { vmx: true, ..none }, feat_ctl::VMX_INSIDE_SMX | feat_ctl::VMX_OUTSIDE_SMX),
            (FeatCtlCaps { sgx: true, ..none }, feat_ctl::SGX),
            (FeatCtlCaps { sgx_lc: true, ..none }, feat_ctl::SGX_LC),
            (FeatCtlCaps { lmce: true, ..none }, feat_ctl::LMCE),
        ];
        for (caps, bits) in cases {
            assert_eq!(caps.guest_valid(), feat_ctl::LOCKED | bits);
            for bit in 0..64 {
                let v = 1u64 << bit;
                let ok = (feat_ctl::LOCKED | bits) & v != 0;
                assert_eq!(feat_ctl_write_ok(0, v, false, caps), ok, "{caps:?} bit {bit}");
            }
        }
        let all = FeatCtlCaps { vmx: true, sgx: true, sgx_lc: true, lmce: true };
        assert_eq!(all.guest_valid(), feat_ctl::SUPPORTED);
        // Locked: every guest write faults, even of the same value.
        for v in [0, feat_ctl::LOCKED, feat_ctl::SUPPORTED] {
            assert!(!feat_ctl_write_ok(feat_ctl::LOCKED, v, false, all));
        }
        assert!(!feat_ctl_write_ok(feat_ctl::LOCKED | feat_ctl::VMX_OUTSIDE_SMX, 0, false, all));
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
