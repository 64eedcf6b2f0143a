// SPDX-License-Identifier: GPL-2.0

//! The CPUID table kvm-rs offers guests (`KVM_GET_SUPPORTED_CPUID`;
//! `arch/x86/kvm/cpuid.c` in the C KVM).
//!
//! Core-only (host-tested). The table is the host's CPUID filtered by the
//! feature masks below: what kvm-rs's SVM backend virtualizes. They are the C
//! KVM's masks (`kvm_set_cpu_caps()`) minus what kvm-rs does not implement:
//! PMU (PDCM, leaf 0xA), MTRR MSRs, TSX, SGX, PKU, PCID,
//! speculation-control MSRs, the x2APIC and TSC-deadline modes of the local
//! APIC, Intel PT, AMX/XFD, XSAVES-managed state, TOPOEXT, and every
//! paravirtual feature in leaf 0x40000001. A guest that sees fewer features
//! still runs; one that sees a feature KVM does not back does not.

use crate::uapi::{errno::E2BIG, Errno};

/// `KVM_MAX_CPUID_ENTRIES`: the most entries `KVM_GET_SUPPORTED_CPUID` returns
/// (and `KVM_SET_CPUID2` accepts).
pub(crate) const KVM_MAX_CPUID_ENTRIES: u32 = 256;
/// `KVM_CPUID_FLAG_SIGNIFCANT_INDEX`: the entry is for one sub-leaf (ECX input).
pub(crate) const KVM_CPUID_FLAG_SIGNIFCANT_INDEX: u32 = 1;
/// `KVM_CPUID_SIGNATURE`: the hypervisor leaf with "KVMKVMKVM\0\0\0".
pub(crate) const KVM_CPUID_SIGNATURE: u32 = 0x4000_0000;
/// `KVM_CPUID_FEATURES`: the paravirtual feature leaf.
pub(crate) const KVM_CPUID_FEATURES: u32 = 0x4000_0001;

/// `struct kvm_cpuid_entry2`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CpuidEntry {
    /// EAX input.
    pub(crate) function: u32,
    /// ECX input (meaningful with [`KVM_CPUID_FLAG_SIGNIFCANT_INDEX`]).
    pub(crate) index: u32,
    /// `KVM_CPUID_FLAG_*`.
    pub(crate) flags: u32,
    /// Output registers.
    pub(crate) eax: u32,
    /// EBX.
    pub(crate) ebx: u32,
    /// ECX.
    pub(crate) ecx: u32,
    /// EDX.
    pub(crate) edx: u32,
}

impl CpuidEntry {
    /// `sizeof(struct kvm_cpuid_entry2)`: seven `__u32` and three of padding.
    pub(crate) const SIZE: usize = 40;

    /// The entry as user space lays it out (padding zero).
    pub(crate) fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        let words = [self.function, self.index, self.flags, self.eax, self.ebx, self.ecx, self.edx];
        for (i, w) in words.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        b
    }

    /// Decodes an entry from user space (padding ignored, as by the C KVM).
    pub(crate) fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let w = |i: usize| u32::from_ne_bytes([b[i * 4], b[i * 4 + 1], b[i * 4 + 2], b[i * 4 + 3]]);
        Self { function: w(0), index: w(1), flags: w(2), eax: w(3), ebx: w(4), ecx: w(5), edx: w(6) }
    }
}

/// The host's CPUID instruction, as the module provides it.
pub(crate) trait HostCpuid {
    /// `[eax, ebx, ecx, edx]` of `CPUID(leaf, subleaf)` on the host.
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4];
    /// The XCR0 bits the host kernel enabled (0 without XSAVE).
    fn host_xcr0(&self) -> u64;
}

const fn bits(list: &[u32]) -> u32 {
    let mut m = 0;
    let mut i = 0;
    while i < list.len() {
        m |= 1 << list[i];
        i += 1;
    }
    m
}

/// CPUID.1:ECX: SSE3, PCLMULQDQ, SSSE3, FMA, CX16, SSE4.1, SSE4.2, MOVBE,
/// POPCNT, AES, XSAVE, AVX, F16C, RDRAND.
const LEAF1_ECX: u32 = bits(&[0, 1, 9, 12, 13, 19, 20, 22, 23, 25, 26, 28, 29, 30]);
/// CPUID.1:ECX.HYPERVISOR: set for every guest.
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// CPUID.1:ECX bits emulated whatever the host has: X2APIC (the in-kernel
/// local APIC implements x2APIC mode).
const LEAF1_ECX_EMULATED: u32 = 1 << 21;
/// CPUID.1:EDX: FPU, VME, DE, PSE, TSC, MSR, PAE, MCE, CX8, APIC, SEP, PGE,
/// MCA, CMOV, PAT, PSE36, CLFLUSH, MMX, FXSR, SSE, SSE2, SS.
const LEAF1_EDX: u32 =
    bits(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 13, 14, 15, 16, 17, 19, 23, 24, 25, 26, 27]);
/// CPUID.7.0:EBX: FSGSBASE, BMI1, AVX2, SMEP, BMI2, ERMS, INVPCID, AVX512F,
/// AVX512DQ, RDSEED, ADX, SMAP, AVX512IFMA, CLFLUSHOPT, CLWB, AVX512CD,
/// SHA, AVX512BW, AVX512VL. (INVPCID runs natively in the guest when the
/// guest's CPUID has it, as with the C KVM under nested paging.)
const LEAF7_EBX: u32 =
    bits(&[0, 3, 5, 7, 8, 9, 10, 16, 17, 18, 19, 20, 21, 23, 24, 28, 29, 30, 31]);
/// CPUID.7.0:EBX bits kvm-rs emulates on any host: TSC_ADJUST.
const LEAF7_EBX_EMULATED: u32 = bits(&[1]);
/// CPUID.7.0:ECX: AVX512VBMI, UMIP, AVX512_VBMI2, GFNI, VAES, VPCLMULQDQ,
/// AVX512_VNNI, AVX512_BITALG, AVX512_VPOPCNTDQ, LA57, MOVDIRI, MOVDIR64B,
/// PKU (only if the host kernel uses protection keys, so that PKRU is in
/// its XCR0 and kvm-rs can switch it).
/// Not RDPID (it reads MSR_TSC_AUX, which kvm-rs does not switch).
const LEAF7_ECX: u32 = bits(&[1, 2, 3, 6, 8, 9, 10, 11, 12, 14, 16, 27, 28]);
/// CPUID.7.0:EDX: FSRM, SERIALIZE.
const LEAF7_EDX: u32 = bits(&[4, 14]);
/// CPUID.0xD.1:EAX: XSAVEOPT, XSAVEC, XGETBV1 (not XSAVES: no IA32_XSS state).
const LEAFD1_EAX: u32 = bits(&[0, 1, 2]);
/// CPUID.0x80000001:ECX: LAHF_LM, CMP_LEGACY, CR8_LEGACY, ABM, SSE4A,
/// MISALIGNSSE, 3DNOWPREFETCH, XOP, FMA4, TBM.
const LEAF81_ECX: u32 = bits(&[0, 1, 4, 5, 6, 7, 8, 11, 16, 21]);
/// CPUID.0x80000001:EDX: the leaf-1 EDX bits AMD mirrors, plus SYSCALL, NX,
/// MMXEXT, FXSR_OPT, GBPAGES (nested paging maps 1 GiB pages), LM,
/// 3DNOWEXT, 3DNOW. Not RDTSCP: kvm-rs does not switch MSR_TSC_AUX, so it
/// intercepts RDTSCP and raises #UD.
const LEAF81_EDX: u32 = bits(&[
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 13, 14, 15, 16, 17, 20, 22, 23, 24, 25, 26, 29, 30, 31,
]);
/// XCR0 components kvm-rs switches between host and guest: x87, SSE, AVX,
/// the AVX-512 opmask/ZMM state, and PKRU (which kvm-rs switches itself).
const SUPPORTED_XCR0: u64 = 0b10_1110_0111;
/// XCR0.PKRU: protection-key state.
const XCR0_PKRU: u64 = 1 << 9;
/// XCR0.YMM: AVX state.
const XCR0_YMM: u64 = 1 << 2;
/// XCR0 opmask, ZMM_Hi256, Hi16_ZMM: AVX-512 state, all or nothing.
const XCR0_AVX512: u64 = 0b1110_0000;
/// The AVX-512 bits of CPUID.7.0:EBX (F, DQ, IFMA, CD, BW, VL).
const LEAF7_EBX_AVX512: u32 = bits(&[16, 17, 21, 28, 30, 31]);
/// The AVX-512 bits of CPUID.7.0:ECX (VBMI, VBMI2, VNNI, BITALG, VPOPCNTDQ).
const LEAF7_ECX_AVX512: u32 = bits(&[1, 6, 11, 12, 14]);
/// Highest basic leaf in the table.
const MAX_BASIC_LEAF: u32 = 0xd;
/// Highest extended leaf in the table.
const MAX_EXT_LEAF: u32 = 0x8000_0008;

/// The XCR0 components offered to guests on this host.
pub(crate) fn supported_xcr0(host: &impl HostCpuid) -> u64 {
    host.host_xcr0() & SUPPORTED_XCR0
}

/// Size of the standard-format XSAVE area holding `xcr0`'s components
/// (`xstate_required_size(xcr0, false)`): the legacy area and header, then
/// each component at the offset CPUID.0xD.i reports.
fn xsave_size(host: &impl HostCpuid, xcr0: u64) -> u32 {
    let mut size = 512 + 64;
    for i in 2..64 {
        if xcr0 & (1 << i) != 0 {
            let [sz, off, _, _] = host.cpuid(0xd, i);
            size = size.max(off + sz);
        }
    }
    size
}

/// A bounded output list: the caller's array of at most `nent` entries.
struct Out<'a> {
    entries: &'a mut [CpuidEntry],
    n: usize,
}

impl Out<'_> {
    fn push(&mut self, e: CpuidEntry) -> Result<(), Errno> {
        let slot = self.entries.get_mut(self.n).ok_or(E2BIG)?;
        *slot = e;
        self.n += 1;
        Ok(())
    }
}

fn host_entry(host: &impl HostCpuid, function: u32, index: u32, flags: u32) -> CpuidEntry {
    let [eax, ebx, ecx, edx] = host.cpuid(function, index);
    CpuidEntry { function, index, flags, eax, ebx, ecx, edx }
}

/// Fills `out` with the supported CPUID table and returns the entry count;
/// `E2BIG` if `out` is too small (as the C KVM, whose callers size `out` from
/// the user's `nent`, capped at [`KVM_MAX_CPUID_ENTRIES`]).
pub(crate) fn supported_cpuid(host: &impl HostCpuid, out: &mut [CpuidEntry]) -> Result<usize, Errno> {
    let mut out = Out { entries: out, n: 0 };
    let max_basic = host.cpuid(0, 0)[0].min(MAX_BASIC_LEAF);
    let xcr0 = supported_xcr0(host);

    for leaf in 0..=max_basic {
        let mut e = host_entry(host, leaf, 0, 0);
        match leaf {
            0 => e.eax = max_basic,
            1 => {
                e.ecx = (e.ecx & LEAF1_ECX) | LEAF1_ECX_HYPERVISOR | LEAF1_ECX_EMULATED;
                e.edx &= LEAF1_EDX;
                if xcr0 & XCR0_YMM == 0 {
                    // No YMM state to switch: no AVX, nor what builds on it.
                    e.ecx &= !bits(&[12, 28, 29]);
                }
                if xcr0 == 0 {
                    e.ecx &= !bits(&[26]);
                }
            }
            7 => {
                e.flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
                e.eax = 0; // only sub-leaf 0
                // TSC_ADJUST is emulated whatever the host has.
                e.ebx = (e.ebx & LEAF7_EBX) | LEAF7_EBX_EMULATED;
                e.ecx &= LEAF7_ECX;
                e.edx &= LEAF7_EDX;
                if xcr0 & XCR0_YMM == 0 {
                    e.ebx &= !(1 << 5); // AVX2
                }
                if xcr0 & XCR0_AVX512 != XCR0_AVX512 {
                    e.ebx &= !LEAF7_EBX_AVX512;
                    e.ecx &= !LEAF7_ECX_AVX512;
                }
                if xcr0 & XCR0_PKRU == 0 {
                    e.ecx &= !(1 << 3);
                }
                // OSPKE mirrors the guest's CR4.PKE at run time.
                e.ecx &= !(1 << 4);
            }
            0xd => {
                e.flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
                e.eax &= xcr0 as u32;
                e.edx &= (xcr0 >> 32) as u32;
                e.ebx = xsave_size(host, xcr0);
                e.ecx = e.ebx;
                out.push(e)?;
                if xcr0 == 0 {
                    continue;
                }
                let mut s1 = host_entry(host, 0xd, 1, KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
                s1.eax &= LEAFD1_EAX;
                s1.ebx = if s1.eax & 0b10 != 0 { xsave_size(host, xcr0) } else { 0 };
                s1.ecx = 0;
                s1.edx = 0;
                out.push(s1)?;
                for i in 2..64 {
                    if xcr0 & (1 << i) != 0 {
                        let mut si = host_entry(host, 0xd, i, KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
                        si.edx = 0;
                        out.push(si)?;
                    }
                }
                continue;
            }
            // Leaves kvm-rs does not describe yet (cache/topology enumeration,
            // PMU, thermal): all zero, so the guest sees them as absent.
            2 | 3 | 4 | 5 | 6 | 8 | 9 | 0xa | 0xb | 0xc => {
                e = CpuidEntry { function: leaf, ..Default::default() };
            }
            _ => unreachable_leaf(&mut e),
        }
        out.push(e)?;
    }

    out.push(CpuidEntry {
        function: KVM_CPUID_SIGNATURE,
        eax: KVM_CPUID_FEATURES,
        ebx: u32::from_le_bytes(*b"KVMK"),
        ecx: u32::from_le_bytes(*b"VMKV"),
        edx: u32::from_le_bytes(*b"M\0\0\0"),
        ..Default::default()
    })?;
    // No paravirtual features.
    out.push(CpuidEntry { function: KVM_CPUID_FEATURES, ..Default::default() })?;

    let max_ext = host.cpuid(0x8000_0000, 0)[0].min(MAX_EXT_LEAF);
    if max_ext >= 0x8000_0000 {
        for leaf in 0x8000_0000..=max_ext {
            let mut e = host_entry(host, leaf, 0, 0);
            match leaf {
                0x8000_0000 => e.eax = max_ext,
                0x8000_0001 => {
                    e.ebx = 0;
                    e.ecx &= LEAF81_ECX;
                    e.edx &= LEAF81_EDX;
                }
                // Brand string and L1/L2 cache descriptions: the host's.
                0x8000_0002..=0x8000_0006 => {}
                0x8000_0007 => e = CpuidEntry { function: leaf, ..Default::default() },
                0x8000_0008 => {
                    // PhysAddrSize is the host's (nested paging translates every
                    // guest physical address); GuestPhysAddrSize the same,
                    // capped at 48 bits by 4-level nested paging; the linear
                    // address width at least 48.
                    let phys = e.eax & 0xff;
                    let virt = ((e.eax >> 8) & 0xff).max(48);
                    e.eax = phys | (virt << 8) | (phys.min(48) << 16);
                    e.ebx = 0;
                    e.ecx = 0;
                    e.edx = 0;
                }
                _ => unreachable_leaf(&mut e),
            }
            out.push(e)?;
        }
    }
    Ok(out.n)
}

/// A leaf outside the ranges above cannot reach the loops; zero it rather than
/// pass unknown host bits through, should the bounds ever change.
fn unreachable_leaf(e: &mut CpuidEntry) {
    *e = CpuidEntry { function: e.function, index: e.index, flags: e.flags, ..Default::default() };
}

/// Validates the `nent` of a `KVM_GET_SUPPORTED_CPUID` call and returns how many
/// entries the table may hold: fewer than one is `E2BIG`; more than
/// [`KVM_MAX_CPUID_ENTRIES`] are capped, as the C KVM does.
pub(crate) fn supported_cpuid_capacity(nent: u32) -> Result<usize, Errno> {
    if nent < 1 {
        return Err(E2BIG);
    }
    Ok(nent.min(KVM_MAX_CPUID_ENTRIES) as usize)
}

/// A CPUID feature bit: leaf, sub-leaf, register (0 EAX .. 3 EDX), bit.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Feature(pub(crate) u32, pub(crate) u32, pub(crate) u8, pub(crate) u8);

/// Guest features the vCPU code asks about.
// Some are named for reference only (the runtime bits are applied by number).
#[allow(dead_code)]
pub(crate) mod feature {
    use super::Feature;
    /// XSAVE.
    pub(crate) const XSAVE: Feature = Feature(1, 0, 2, 26);
    /// OSXSAVE (mirrors CR4.OSXSAVE).
    pub(crate) const OSXSAVE: Feature = Feature(1, 0, 2, 27);
    /// x2APIC.
    pub(crate) const X2APIC: Feature = Feature(1, 0, 2, 21);
    /// TSC-deadline timer.
    pub(crate) const TSC_DEADLINE: Feature = Feature(1, 0, 2, 24);
    /// PCID.
    pub(crate) const PCID: Feature = Feature(1, 0, 2, 17);
    /// VMX.
    pub(crate) const VMX: Feature = Feature(1, 0, 2, 5);
    /// APIC (mirrors APIC_BASE.EN).
    pub(crate) const APIC: Feature = Feature(1, 0, 3, 9);
    /// FSGSBASE.
    pub(crate) const FSGSBASE: Feature = Feature(7, 0, 1, 0);
    /// TSC_ADJUST MSR.
    pub(crate) const TSC_ADJUST: Feature = Feature(7, 0, 1, 1);
    /// SGX.
    pub(crate) const SGX: Feature = Feature(7, 0, 1, 2);
    /// SGX launch control.
    pub(crate) const SGX_LC: Feature = Feature(7, 0, 2, 30);
    /// SMEP.
    pub(crate) const SMEP: Feature = Feature(7, 0, 1, 7);
    /// INVPCID.
    pub(crate) const INVPCID: Feature = Feature(7, 0, 1, 10);
    /// SMAP.
    pub(crate) const SMAP: Feature = Feature(7, 0, 1, 20);
    /// UMIP.
    pub(crate) const UMIP: Feature = Feature(7, 0, 2, 2);
    /// PKU.
    pub(crate) const PKU: Feature = Feature(7, 0, 2, 3);
    /// OSPKE (mirrors CR4.PKE).
    pub(crate) const OSPKE: Feature = Feature(7, 0, 2, 4);
    /// LA57.
    pub(crate) const LA57: Feature = Feature(7, 0, 2, 16);
    /// LAM.
    pub(crate) const LAM: Feature = Feature(7, 1, 0, 26);
    /// SVM.
    pub(crate) const SVM: Feature = Feature(0x8000_0001, 0, 2, 2);
    /// NX.
    pub(crate) const NX: Feature = Feature(0x8000_0001, 0, 3, 20);
    /// Long mode.
    pub(crate) const LM: Feature = Feature(0x8000_0001, 0, 3, 29);
    /// 1 GiB pages.
    pub(crate) const GBPAGES: Feature = Feature(0x8000_0001, 0, 3, 26);
    /// FFXSR.
    pub(crate) const FFXSR: Feature = Feature(0x8000_0001, 0, 3, 25);
    /// LMSLE (long-mode segment limits).
    pub(crate) const LMSLE: Feature = Feature(0x8000_0001, 0, 2, 15);
}

/// The entry of `function`/`index` in a vCPU's table (C:
/// `kvm_find_cpuid_entry_index()`): the index matters only for entries
/// flagged `KVM_CPUID_FLAG_SIGNIFCANT_INDEX`.
pub(crate) fn find(entries: &[CpuidEntry], function: u32, index: u32) -> Option<&CpuidEntry> {
    entries.iter().find(|e| {
        e.function == function && (e.index == index || e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX == 0)
    })
}

/// Whether the table has feature `f`.
pub(crate) fn has(entries: &[CpuidEntry], f: Feature) -> bool {
    find(entries, f.0, f.1).is_some_and(|e| {
        let r = [e.eax, e.ebx, e.ecx, e.edx][usize::from(f.2 & 3)];
        r & (1 << f.3) != 0
    })
}

/// Whether the table describes an AMD-compatible CPU (leaf 0 vendor
/// "AuthenticAMD" or "HygonGenuine"), which changes the answer for leaves
/// beyond the table.
fn is_amd_like(entries: &[CpuidEntry]) -> bool {
    find(entries, 0, 0).is_some_and(|e| {
        (e.ebx, e.edx, e.ecx) == (0x6874_7541, 0x6974_6e65, 0x444d_4163)
            || (e.ebx, e.edx, e.ecx) == (0x6f67_7948, 0x6e65_476e, 0x656e_6975)
    })
}

/// What guest CPUID(`function`, `index`) returns from the table, before the
/// run-time bits (C: `kvm_cpuid()`): the entry if there is one; for a leaf
/// above the range its class (basic, extended, hypervisor) reports, Intel
/// CPUs answer with the highest basic leaf while AMD ones answer zeros; zeros
/// otherwise.
pub(crate) fn lookup(entries: &[CpuidEntry], function: u32, index: u32) -> [u32; 4] {
    if let Some(e) = find(entries, function, index) {
        return [e.eax, e.ebx, e.ecx, e.edx];
    }
    if !is_amd_like(entries) {
        let class_max = |base: u32| find(entries, base, 0).map(|e| e.eax);
        let base = function & 0xffff_0000;
        let out_of_range = match base {
            0 | 0x8000_0000 => class_max(base).map_or(true, |max| function > max),
            _ => false,
        };
        if out_of_range {
            if let Some(max_basic) = class_max(0) {
                if let Some(e) = find(entries, max_basic, index) {
                    return [e.eax, e.ebx, e.ecx, e.edx];
                }
            }
        }
    }
    [0; 4]
}

/// The state the run-time CPUID bits mirror.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RuntimeState {
    /// Guest CR4.
    pub(crate) cr4: u64,
    /// Guest XCR0.
    pub(crate) xcr0: u64,
    /// APIC_BASE.EN.
    pub(crate) apic_enabled: bool,
}

/// Size of the standard-format XSAVE area for `xcr0` as the guest's own
/// CPUID.0xD sub-leaves describe the components.
pub(crate) fn guest_xsave_size(entries: &[CpuidEntry], xcr0: u64) -> u32 {
    let mut size = 512 + 64;
    for i in 2..64u32 {
        if xcr0 & (1 << i) != 0 {
            if let Some(e) = entries.iter().find(|e| e.function == 0xd && e.index == i) {
                size = size.max(e.ebx.saturating_add(e.eax));
            }
        }
    }
    size
}

/// Applies the bits that follow guest state (C: `kvm_update_cpuid_runtime()`):
/// OSXSAVE from CR4.OSXSAVE, APIC from APIC_BASE.EN, OSPKE from CR4.PKE, and
/// the XSAVE area size of leaf 0xD for the current XCR0.
pub(crate) fn apply_runtime(entries: &[CpuidEntry], function: u32, index: u32, r: &mut [u32; 4], st: &RuntimeState) {
    const CR4_OSXSAVE: u64 = 1 << 18;
    const CR4_PKE: u64 = 1 << 22;
    match (function, index) {
        (1, _) => {
            if has(entries, feature::XSAVE) {
                r[2] = (r[2] & !(1 << 27)) | if st.cr4 & CR4_OSXSAVE != 0 { 1 << 27 } else { 0 };
            }
            r[3] = (r[3] & !(1 << 9)) | if st.apic_enabled { 1 << 9 } else { 0 };
        }
        (7, 0) => {
            if has(entries, feature::PKU) {
                r[2] = (r[2] & !(1 << 4)) | if st.cr4 & CR4_PKE != 0 { 1 << 4 } else { 0 };
            }
        }
        (0xd, 0) if find(entries, 0xd, 0).is_some() => r[1] = guest_xsave_size(entries, st.xcr0),
        (0xd, 1) if r[0] & 0b1010 != 0 => r[1] = guest_xsave_size(entries, st.xcr0),
        _ => {}
    }
}

/// The checks of `KVM_SET_CPUID2` on the new table (C: `kvm_check_cpuid()`):
/// the linear-address width of leaf 0x80000008 is 48 or 57 (or absent).
pub(crate) fn check_guest_table(entries: &[CpuidEntry]) -> Result<(), Errno> {
    if let Some(e) = find(entries, 0x8000_0008, 0) {
        let vaddr = (e.eax >> 8) & 0xff;
        if vaddr != 48 && vaddr != 57 && vaddr != 0 {
            return Err(Errno(22));
        }
    }
    Ok(())
}

/// The guest's MAXPHYADDR (C: `cpuid_query_maxphyaddr()`): leaf 0x80000008
/// EAX[7:0] if the table has the leaf, else 36.
pub(crate) fn guest_maxphyaddr(entries: &[CpuidEntry]) -> u8 {
    match find(entries, 0x8000_0000, 0) {
        Some(e) if e.eax >= 0x8000_0008 => find(entries, 0x8000_0008, 0).map_or(36, |e| (e.eax & 0xff) as u8),
        _ => 36,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A host CPU described by a table; unknown leaves read as zero.
    struct FakeHost {
        leaves: HashMap<(u32, u32), [u32; 4]>,
        xcr0: u64,
    }

    impl HostCpuid for FakeHost {
        fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
            *self.leaves.get(&(leaf, subleaf)).unwrap_or(&[0; 4])
        }
        fn host_xcr0(&self) -> u64 {
            self.xcr0
        }
    }

    /// Something like an AMD host with AVX, PKU, SVM and everything set in
    /// the feature words.
    fn amd_host() -> FakeHost {
        let mut l = HashMap::new();
        l.insert((0, 0), [0x10, u32::from_le_bytes(*b"Auth"), u32::from_le_bytes(*b"cAMD"), u32::from_le_bytes(*b"enti")]);
        l.insert((1, 0), [0x00a2_0f12, 0x0510_0800, u32::MAX, u32::MAX]);
        l.insert((7, 0), [1, u32::MAX, u32::MAX, u32::MAX]);
        l.insert((0xd, 0), [0x2e7, 0x988, 0x988, 0]);
        l.insert((0xd, 1), [0xf, 0x348, 0, 0]);
        l.insert((0xd, 2), [256, 576, 0, 0]);
        l.insert((0xd, 5), [64, 832, 0, 0]);
        l.insert((0xd, 6), [512, 896, 0, 0]);
        l.insert((0xd, 7), [1024, 1408, 0, 0]);
        l.insert((0xd, 9), [8, 2432, 0, 0]);
        l.insert((0x8000_0000, 0), [0x8000_0021, 0, 0, 0]);
        l.insert((0x8000_0001, 0), [0x00a2_0f12, 0x2000_0000, u32::MAX, u32::MAX]);
        l.insert((0x8000_0008, 0), [0x3030, 0x1234, 0xff, 0]);
        FakeHost { leaves: l, xcr0: 0x2e7 }
    }

    fn table(host: &FakeHost) -> std::vec::Vec<CpuidEntry> {
        let mut buf = [CpuidEntry::default(); KVM_MAX_CPUID_ENTRIES as usize];
        let n = supported_cpuid(host, &mut buf).unwrap();
        buf[..n].to_vec()
    }

    fn find(t: &[CpuidEntry], f: u32, i: u32) -> CpuidEntry {
        *t.iter().find(|e| e.function == f && e.index == i).unwrap()
    }

    #[test]
    fn basic_and_extended_limits() {
        let t = table(&amd_host());
        assert_eq!(find(&t, 0, 0).eax, 0xd);
        assert_eq!(find(&t, 0, 0).ebx, u32::from_le_bytes(*b"Auth"));
        assert_eq!(find(&t, 0x8000_0000, 0).eax, 0x8000_0008);
        assert!(t.iter().all(|e| e.function <= 0xd
            || (0x4000_0000..=0x4000_0001).contains(&e.function)
            || (0x8000_0000..=0x8000_0008).contains(&e.function)));
    }

    #[test]
    fn features_are_masked() {
        let t = table(&amd_host());
        let l1 = find(&t, 1, 0);
        assert_eq!(l1.ecx, LEAF1_ECX | LEAF1_ECX_HYPERVISOR | LEAF1_ECX_EMULATED);
        assert_eq!(l1.edx, LEAF1_EDX);
        assert_eq!(l1.ecx & (1 << 5), 0, "VMX is never offered");
        let l81 = find(&t, 0x8000_0001, 0);
        assert_eq!(l81.ecx & (1 << 2), 0, "SVM is never offered (no nested)");
        assert_ne!(l81.edx & (1 << 29), 0, "LM");
        assert_ne!(l81.edx & (1 << 20), 0, "NX");
        let l7 = find(&t, 7, 0);
        assert_eq!(l7.flags, KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
        assert_ne!(l7.ebx & (1 << 10), 0, "INVPCID");
        // The host's XCR0 has PKRU, so its protection keys are offered;
        // OSPKE is a run-time bit, not in the supported table.
        assert_ne!(l7.ecx & (1 << 3), 0, "PKU");
        assert_eq!(l7.ecx & (1 << 4), 0, "OSPKE");
        assert_ne!(l7.ebx & (1 << 1), 0, "TSC_ADJUST is emulated");
        let mut h = amd_host();
        h.xcr0 &= !(1 << 9);
        assert_eq!(find(&table(&h), 7, 0).ecx & (1 << 3), 0, "no PKU without host PKRU");
    }

    #[test]
    fn host_without_a_feature_does_not_get_it() {
        let mut h = amd_host();
        h.leaves.insert((1, 0), [0, 0, 0, 0]);
        let l1 = find(&table(&h), 1, 0);
        assert_eq!(l1.ecx, LEAF1_ECX_HYPERVISOR | LEAF1_ECX_EMULATED);
        assert_eq!(l1.edx, 0);
    }

    #[test]
    fn kvm_leaves() {
        let t = table(&amd_host());
        let sig = find(&t, KVM_CPUID_SIGNATURE, 0);
        assert_eq!(sig.eax, KVM_CPUID_FEATURES);
        let mut name = [0u8; 12];
        name[0..4].copy_from_slice(&sig.ebx.to_le_bytes());
        name[4..8].copy_from_slice(&sig.ecx.to_le_bytes());
        name[8..12].copy_from_slice(&sig.edx.to_le_bytes());
        assert_eq!(&name, b"KVMKVMKVM\0\0\0");
        assert_eq!(find(&t, KVM_CPUID_FEATURES, 0), CpuidEntry { function: KVM_CPUID_FEATURES, ..Default::default() });
    }

    #[test]
    fn address_widths() {
        let e = find(&table(&amd_host()), 0x8000_0008, 0);
        assert_eq!(e.eax & 0xff, 0x30);
        assert_eq!((e.eax >> 8) & 0xff, 0x30);
        assert_eq!((e.eax >> 16) & 0xff, 0x30);
        let mut h = amd_host();
        h.leaves.insert((0x8000_0008, 0), [0x3934, 0, 0, 0]); // 52-bit phys, 57-bit linear
        let e = find(&table(&h), 0x8000_0008, 0);
        assert_eq!(e.eax, 0x34 | (0x39 << 8) | (48 << 16));
    }

    #[test]
    fn xsave_leaf_follows_supported_xcr0() {
        let t = table(&amd_host());
        let d0 = find(&t, 0xd, 0);
        // x87|SSE|AVX|opmask|ZMM_Hi256|Hi16_ZMM|PKRU.
        assert_eq!(d0.eax, 0x2e7);
        assert_eq!(d0.ebx, 2432 + 8);
        assert!(t.iter().any(|e| e.function == 0xd && e.index == 2));
        assert!(t.iter().any(|e| e.function == 0xd && e.index == 9));
        assert_eq!(find(&t, 0xd, 1).eax, 0b111, "no XSAVES");
    }

    #[test]
    fn no_avx512_state_no_avx512() {
        let mut h = amd_host();
        h.xcr0 = 0x7;
        let t = table(&h);
        let l7 = find(&t, 7, 0);
        assert_eq!(l7.ebx & LEAF7_EBX_AVX512, 0);
        assert_eq!(l7.ecx & LEAF7_ECX_AVX512, 0);
        assert_ne!(l7.ebx & (1 << 5), 0, "AVX2 stays");
        assert_eq!(find(&t, 0xd, 0).eax, 0x7);
    }

    #[test]
    fn host_without_xsave() {
        let mut h = amd_host();
        h.xcr0 = 0;
        let t = table(&h);
        let l1 = find(&t, 1, 0);
        assert_eq!(l1.ecx & (1 << 26 | 1 << 28), 0);
        assert_eq!(find(&t, 7, 0).ebx & (1 << 5), 0, "no AVX2 without YMM state");
        assert_eq!(find(&t, 0xd, 0).eax, 0);
        assert!(!t.iter().any(|e| e.function == 0xd && e.index > 0));
    }

    #[test]
    fn too_small_is_e2big() {
        let h = amd_host();
        let full = table(&h).len();
        let mut buf = [CpuidEntry::default(); KVM_MAX_CPUID_ENTRIES as usize];
        assert_eq!(supported_cpuid(&h, &mut buf[..full - 1]), Err(E2BIG));
        assert_eq!(supported_cpuid(&h, &mut buf[..full]), Ok(full));
        assert_eq!(supported_cpuid_capacity(0), Err(E2BIG));
        assert_eq!(supported_cpuid_capacity(1), Ok(1));
        assert_eq!(supported_cpuid_capacity(100_000), Ok(256));
    }

    #[test]
    fn entry_bytes_round_trip() {
        let e = CpuidEntry { function: 0xd, index: 2, flags: 1, eax: 4, ebx: 5, ecx: 6, edx: 7 };
        let b = e.to_bytes();
        assert_eq!(&b[28..40], &[0; 12]);
        assert_eq!(CpuidEntry::from_bytes(&b), e);
    }
}
