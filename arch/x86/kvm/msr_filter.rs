// SPDX-License-Identifier: GPL-2.0

//! The user-space MSR filter (`KVM_X86_SET_MSR_FILTER`) and the user-space MSR
//! exits (`KVM_CAP_X86_USER_SPACE_MSR`) of `arch/x86/kvm/x86.c`.
//!
//! Core-only (host-tested): the core decodes and checks the user struct and
//! answers `kvm_msr_allowed()`; the module copies the bitmaps from user space
//! (through the `fetch` callback of [`KvmMsrFilter::build`]) into storage it
//! owns, and publishes the built [`MsrFilter`] the way the C KVM swaps its RCU
//! pointer.

use crate::uapi::{errno, iow, Errno};
use core::ops::Deref;

/// `KVM_MSR_FILTER_MAX_RANGES`: the fixed number of ranges in the user struct.
pub(crate) const KVM_MSR_FILTER_MAX_RANGES: usize = 16;
/// `KVM_MSR_FILTER_MAX_BITMAP_SIZE`: the largest bitmap of one range, in bytes
/// (so a range covers at most 0x3000 MSRs).
pub(crate) const KVM_MSR_FILTER_MAX_BITMAP_SIZE: usize = 0x600;

/// `KVM_MSR_FILTER_READ`: the range's bitmap decides RDMSR.
pub(crate) const KVM_MSR_FILTER_READ: u32 = 1 << 0;
/// `KVM_MSR_FILTER_WRITE`: the range's bitmap decides WRMSR.
pub(crate) const KVM_MSR_FILTER_WRITE: u32 = 1 << 1;
/// `KVM_MSR_FILTER_RANGE_VALID_MASK`.
pub(crate) const KVM_MSR_FILTER_RANGE_VALID_MASK: u32 = KVM_MSR_FILTER_READ | KVM_MSR_FILTER_WRITE;
/// `KVM_MSR_FILTER_DEFAULT_DENY`: MSRs no range decides are denied
/// (`KVM_MSR_FILTER_DEFAULT_ALLOW` is 0).
pub(crate) const KVM_MSR_FILTER_DEFAULT_DENY: u32 = 1 << 0;
/// `KVM_MSR_FILTER_VALID_MASK`.
pub(crate) const KVM_MSR_FILTER_VALID_MASK: u32 = KVM_MSR_FILTER_DEFAULT_DENY;

/// `KVM_X86_SET_MSR_FILTER` = `_IOW(KVMIO, 0xc6, struct kvm_msr_filter)`.
pub(crate) const KVM_X86_SET_MSR_FILTER: u32 = iow(0xc6, KvmMsrFilter::SIZE);
/// `KVM_CAP_X86_USER_SPACE_MSR`: `KVM_ENABLE_CAP` with the exit-reason mask.
pub(crate) const KVM_CAP_X86_USER_SPACE_MSR: i64 = 188;
/// `KVM_CAP_X86_MSR_FILTER`: `KVM_X86_SET_MSR_FILTER` exists.
pub(crate) const KVM_CAP_X86_MSR_FILTER: i64 = 189;

/// The x2APIC MSRs, which `kvm_msr_allowed()` never filters (api.rst: KVM
/// silently ignores filters covering them).
const X2APIC_MSRS: core::ops::RangeInclusive<u32> = 0x800..=0x8ff;

/// `sizeof(long)` of x86-64: the C KVM copies bitmaps in whole longs.
const LONG_BYTES: usize = 8;

/// Bytes `memdup_user()` copies for a range of `nmsrs` MSRs:
/// `BITS_TO_LONGS(nmsrs) * sizeof(long)`, in `kvm_add_msr_filter()`. Computed
/// in `usize` as the C `size_t` arithmetic, so `u32::MAX` does not wrap.
pub(crate) const fn bitmap_bytes(nmsrs: u32) -> usize {
    (nmsrs as usize).div_ceil(LONG_BYTES * 8) * LONG_BYTES
}

/// Reads a native-endian `u32` at `o` (the struct is copied as is).
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// Reads a native-endian `u64` at `o`.
fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[o..o + 8]);
    u64::from_ne_bytes(w)
}

/// `struct kvm_msr_filter_range` as read from user space.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct KvmMsrFilterRange {
    /// `KVM_MSR_FILTER_READ` and/or `KVM_MSR_FILTER_WRITE`.
    pub(crate) flags: u32,
    /// MSRs covered; 0 makes the whole range ignored.
    pub(crate) nmsrs: u32,
    /// The first MSR covered.
    pub(crate) base: u32,
    /// User address of the bitmap (`__u8 *`); never dereferenced here.
    pub(crate) bitmap: u64,
}

impl KvmMsrFilterRange {
    /// `sizeof(struct kvm_msr_filter_range)` on x86-64: three `__u32`, 4 bytes
    /// of padding, then the 8-byte aligned pointer.
    pub(crate) const SIZE: usize = 24;

    /// Decodes one range from its 24 bytes; the padding is ignored, as by C.
    fn from_bytes(b: &[u8]) -> Self {
        Self {
            flags: u32_at(b, 0),
            nmsrs: u32_at(b, 4),
            base: u32_at(b, 8),
            bitmap: u64_at(b, 16),
        }
    }

    /// The checks of `kvm_add_msr_filter()`, in its order: `Ok(None)` for an
    /// empty range (skipped *before* its flags are looked at), else what to copy.
    pub(crate) fn check(&self) -> Result<Option<BitmapCopy>, Errno> {
        if self.nmsrs == 0 {
            return Ok(None);
        }
        if self.flags & !KVM_MSR_FILTER_RANGE_VALID_MASK != 0 || self.flags == 0 {
            return Err(errno::EINVAL);
        }
        let len = bitmap_bytes(self.nmsrs);
        // C also rejects `!bitmap_size`, which cannot happen once nmsrs != 0.
        if len > KVM_MSR_FILTER_MAX_BITMAP_SIZE {
            return Err(errno::EINVAL);
        }
        Ok(Some(BitmapCopy {
            addr: self.bitmap,
            len,
        }))
    }
}

/// One bitmap the module must copy from user space (`memdup_user(addr, len)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BitmapCopy {
    /// The user address.
    pub(crate) addr: u64,
    /// The byte count, a multiple of 8 of at most `KVM_MSR_FILTER_MAX_BITMAP_SIZE`.
    pub(crate) len: usize,
}

/// `struct kvm_msr_filter` as read from user space.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct KvmMsrFilter {
    /// `KVM_MSR_FILTER_DEFAULT_DENY` or 0 (default allow).
    pub(crate) flags: u32,
    /// All 16 ranges; the empty ones (`nmsrs == 0`) may sit anywhere.
    pub(crate) ranges: [KvmMsrFilterRange; KVM_MSR_FILTER_MAX_RANGES],
}

impl KvmMsrFilter {
    /// `sizeof(struct kvm_msr_filter)` on x86-64: `flags`, 4 bytes of padding
    /// (the ranges are 8-byte aligned), then 16 ranges of 24 bytes.
    pub(crate) const SIZE: usize = 8 + KVM_MSR_FILTER_MAX_RANGES * KvmMsrFilterRange::SIZE;

    /// Decodes the bytes `copy_from_user()` fetched (native endianness).
    pub(crate) fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let mut ranges = [KvmMsrFilterRange::default(); KVM_MSR_FILTER_MAX_RANGES];
        for (i, r) in ranges.iter_mut().enumerate() {
            let o = 8 + i * KvmMsrFilterRange::SIZE;
            *r = KvmMsrFilterRange::from_bytes(&b[o..o + KvmMsrFilterRange::SIZE]);
        }
        Self {
            flags: u32_at(b, 0),
            ranges,
        }
    }

    /// The checks of `kvm_vm_ioctl_set_msr_filter()` before any range is
    /// looked at: unknown flags, then "default deny with no non-empty range"
    /// (api.rst: an all-empty filter disables filtering, so denying everything
    /// that way is refused). Returns `default_allow`.
    pub(crate) fn check(&self) -> Result<bool, Errno> {
        if self.flags & !KVM_MSR_FILTER_VALID_MASK != 0 {
            return Err(errno::EINVAL);
        }
        let empty = self.ranges.iter().all(|r| r.nmsrs == 0);
        let default_allow = self.flags & KVM_MSR_FILTER_DEFAULT_DENY == 0;
        if empty && !default_allow {
            return Err(errno::EINVAL);
        }
        Ok(default_allow)
    }

    /// Builds the filter as `kvm_vm_ioctl_set_msr_filter()` does: [`Self::check`],
    /// then for each range in order [`KvmMsrFilterRange::check`] and, if not
    /// empty, `fetch` to copy its bitmap. Checking and copying interleave as in
    /// C, so a fault copying range 0 wins over bad flags in range 1; on error
    /// the bitmaps fetched so far are dropped (`kvm_free_msr_filter()`).
    /// A bitmap shorter than asked counts as a failed copy (`EFAULT`).
    pub(crate) fn build<B, F>(&self, mut fetch: F) -> Result<MsrFilter<B>, Errno>
    where
        B: Deref<Target = [u8]>,
        F: FnMut(BitmapCopy) -> Result<B, Errno>,
    {
        let default_allow = self.check()?;
        let mut filter = MsrFilter {
            default_allow,
            ranges: core::array::from_fn(|_| None),
        };
        let mut count = 0;
        for r in &self.ranges {
            let Some(copy) = r.check()? else { continue };
            let bitmap = fetch(copy)?;
            if bitmap.len() < copy.len {
                return Err(errno::EFAULT);
            }
            filter.ranges[count] = Some(MsrBitmapRange {
                flags: r.flags,
                base: r.base,
                nmsrs: r.nmsrs,
                bitmap,
            });
            count += 1;
        }
        Ok(filter)
    }
}

/// One installed range (`struct msr_bitmap_range`), its bitmap in kernel memory.
#[derive(Debug)]
struct MsrBitmapRange<B> {
    /// `KVM_MSR_FILTER_READ` and/or `KVM_MSR_FILTER_WRITE`.
    flags: u32,
    /// The first MSR covered.
    base: u32,
    /// MSRs covered, at least 1.
    nmsrs: u32,
    /// At least `bitmap_bytes(nmsrs)` bytes; bit `n` (LSB first in each byte,
    /// which is `test_bit()` on little-endian longs) allows MSR `base + n`.
    bitmap: B,
}

/// An installed filter (`struct kvm_x86_msr_filter`). A VM without one
/// (`kvm->arch.msr_filter == NULL`) allows everything: see [`msr_allowed`].
#[derive(Debug)]
pub(crate) struct MsrFilter<B> {
    /// What an MSR that no range decides gets.
    default_allow: bool,
    /// The non-empty user ranges, compacted to the front in user order.
    ranges: [Option<MsrBitmapRange<B>>; KVM_MSR_FILTER_MAX_RANGES],
}

impl<B: Deref<Target = [u8]>> MsrFilter<B> {
    /// Whether the guest may read (`write == false`) or write MSR `index`,
    /// as `kvm_msr_allowed()`: x2APIC MSRs always; else the first range that
    /// contains `index` *and* whose flags cover the access decides by its bit
    /// (a range for the other access type is passed over, not a match); else
    /// the default. `base + nmsrs` wraps in `u32` as in C, so a range running
    /// past 0xffffffff matches nothing.
    pub(crate) fn allowed(&self, index: u32, write: bool) -> bool {
        if X2APIC_MSRS.contains(&index) {
            return true;
        }
        let access = if write {
            KVM_MSR_FILTER_WRITE
        } else {
            KVM_MSR_FILTER_READ
        };
        for r in self.ranges.iter().flatten() {
            let end = r.base.wrapping_add(r.nmsrs);
            if index >= r.base && index < end && r.flags & access != 0 {
                let bit = (index - r.base) as usize;
                return r.bitmap[bit / 8] & (1 << (bit % 8)) != 0;
            }
        }
        self.default_allow
    }

    /// Whether unmatched MSRs are allowed (no `KVM_MSR_FILTER_DEFAULT_DENY`).
    #[cfg(test)]
    pub(crate) fn default_allow(&self) -> bool {
        self.default_allow
    }

    /// How many (non-empty) ranges were installed.
    #[cfg(test)]
    pub(crate) fn range_count(&self) -> usize {
        self.ranges.iter().flatten().count()
    }
}

/// `kvm_msr_allowed()` including the no-filter case (everything allowed).
pub(crate) fn msr_allowed<B: Deref<Target = [u8]>>(
    filter: Option<&MsrFilter<B>>,
    index: u32,
    write: bool,
) -> bool {
    match filter {
        Some(f) => f.allowed(index, write),
        None => true,
    }
}

/// `KVM_MSR_EXIT_REASON_INVAL`: the access is invalid for the vCPU model/mode.
pub(crate) const KVM_MSR_EXIT_REASON_INVAL: u32 = 1 << 0;
/// `KVM_MSR_EXIT_REASON_UNKNOWN`: KVM does not know the MSR.
pub(crate) const KVM_MSR_EXIT_REASON_UNKNOWN: u32 = 1 << 1;
/// `KVM_MSR_EXIT_REASON_FILTER`: the MSR filter denied the access.
pub(crate) const KVM_MSR_EXIT_REASON_FILTER: u32 = 1 << 2;
/// `KVM_MSR_EXIT_REASON_VALID_MASK`.
pub(crate) const KVM_MSR_EXIT_REASON_VALID_MASK: u32 =
    KVM_MSR_EXIT_REASON_INVAL | KVM_MSR_EXIT_REASON_UNKNOWN | KVM_MSR_EXIT_REASON_FILTER;

/// `KVM_MSR_RET_UNSUPPORTED` of `x86.h`: the MSR access failed as unknown.
#[cfg(test)]
pub(crate) const KVM_MSR_RET_UNSUPPORTED: i32 = 2;
/// `KVM_MSR_RET_FILTERED` of `x86.h`: the MSR filter denied the access.
#[cfg(test)]
pub(crate) const KVM_MSR_RET_FILTERED: i32 = 3;

/// Why a failed MSR access may go to user space (`kvm_run.msr.reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MsrExitReason {
    /// `KVM_MSR_EXIT_REASON_INVAL`.
    Inval,
    /// `KVM_MSR_EXIT_REASON_UNKNOWN`.
    Unknown,
    /// `KVM_MSR_EXIT_REASON_FILTER`.
    Filter,
}

impl MsrExitReason {
    /// `kvm_msr_reason()`: maps a failed access's return code; anything but
    /// "unsupported" and "filtered" (e.g. 1, a #GP-worthy value) is `Inval`.
    #[cfg(test)]
    pub(crate) fn from_ret(r: i32) -> Self {
        match r {
            KVM_MSR_RET_UNSUPPORTED => Self::Unknown,
            KVM_MSR_RET_FILTERED => Self::Filter,
            _ => Self::Inval,
        }
    }

    /// The `KVM_MSR_EXIT_REASON_*` bit, also the value of `kvm_run.msr.reason`.
    pub(crate) fn bit(self) -> u32 {
        match self {
            Self::Inval => KVM_MSR_EXIT_REASON_INVAL,
            Self::Unknown => KVM_MSR_EXIT_REASON_UNKNOWN,
            Self::Filter => KVM_MSR_EXIT_REASON_FILTER,
        }
    }
}

/// The mask set by `KVM_ENABLE_CAP(KVM_CAP_X86_USER_SPACE_MSR)`
/// (`kvm->arch.user_space_msr_mask`); 0 (the default) sends nothing to user
/// space, so failed accesses inject #GP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct UserSpaceMsr(u32);

impl UserSpaceMsr {
    /// Checks `args[0]` as `kvm_vm_ioctl_enable_cap()`: any bit outside
    /// `KVM_MSR_EXIT_REASON_VALID_MASK` (the upper 32 included) is `EINVAL`.
    /// The cap may be enabled again at any time; the new mask replaces the old.
    /// (`cap->flags != 0` is refused earlier, for every VM capability.)
    pub(crate) fn from_cap_arg(arg0: u64) -> Result<Self, Errno> {
        if arg0 & !u64::from(KVM_MSR_EXIT_REASON_VALID_MASK) != 0 {
            return Err(errno::EINVAL);
        }
        Ok(Self(arg0 as u32))
    }

    /// The mask.
    pub(crate) fn mask(self) -> u32 {
        self.0
    }

    /// Whether a failure for `reason` exits to user space, the test at the
    /// top of `kvm_msr_user_space()`.
    pub(crate) fn wants(self, reason: MsrExitReason) -> bool {
        self.0 & reason.bit() != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    const R: u32 = KVM_MSR_FILTER_READ;
    const W: u32 = KVM_MSR_FILTER_WRITE;
    const RW: u32 = R | W;
    const MAX_NMSRS: u32 = (KVM_MSR_FILTER_MAX_BITMAP_SIZE * 8) as u32;

    /// A filter whose range `i` has bitmap address `i + 1`, so `fetch` finds it.
    fn user(flags: u32, ranges: &[(u32, u32, u32)]) -> KvmMsrFilter {
        let mut f = KvmMsrFilter {
            flags,
            ..Default::default()
        };
        for (i, &(flags, base, nmsrs)) in ranges.iter().enumerate() {
            f.ranges[i] = KvmMsrFilterRange {
                flags,
                nmsrs,
                base,
                bitmap: i as u64 + 1,
            };
        }
        f
    }

    /// Builds `u` with `bitmaps[i]` (zero-padded to the copy size) for range `i`.
    fn build(u: &KvmMsrFilter, bitmaps: &[&[u8]]) -> Result<MsrFilter<Vec<u8>>, Errno> {
        u.build(|c| {
            let mut v = bitmaps[c.addr as usize - 1].to_vec();
            v.resize(c.len, 0);
            Ok(v)
        })
    }

    #[test]
    fn sizes_and_numbers() {
        assert_eq!(KvmMsrFilterRange::SIZE, 24);
        assert_eq!(KvmMsrFilter::SIZE, 392);
        assert_eq!(KVM_X86_SET_MSR_FILTER, 0x4188_aec6);
        assert_eq!(KVM_MSR_EXIT_REASON_VALID_MASK, 7);
    }

    #[test]
    fn decoding() {
        let mut b = [0u8; KvmMsrFilter::SIZE];
        b[0..4].copy_from_slice(&1u32.to_ne_bytes());
        b[4] = 0xff; // padding after flags: ignored
        let o = 8 + 15 * 24; // the last range
        b[o..o + 4].copy_from_slice(&2u32.to_ne_bytes());
        b[o + 4..o + 8].copy_from_slice(&0x40u32.to_ne_bytes());
        b[o + 8..o + 12].copy_from_slice(&0xc000_0080u32.to_ne_bytes());
        b[o + 12] = 0xff; // padding before the pointer: ignored
        b[o + 16..o + 24].copy_from_slice(&0x7fff_1234_5678u64.to_ne_bytes());
        let f = KvmMsrFilter::from_bytes(&b);
        assert_eq!(f.flags, 1);
        assert!(f.ranges[..15]
            .iter()
            .all(|r| *r == KvmMsrFilterRange::default()));
        let last = KvmMsrFilterRange {
            flags: 2,
            nmsrs: 0x40,
            base: 0xc000_0080,
            bitmap: 0x7fff_1234_5678,
        };
        assert_eq!(f.ranges[15], last);
    }

    #[test]
    fn bitmap_sizes_are_whole_longs() {
        assert_eq!(bitmap_bytes(0), 0);
        assert_eq!(bitmap_bytes(1), 8);
        assert_eq!(bitmap_bytes(64), 8);
        assert_eq!(bitmap_bytes(65), 16);
        assert_eq!(bitmap_bytes(MAX_NMSRS), 0x600);
        assert_eq!(bitmap_bytes(MAX_NMSRS + 1), 0x608);
        assert_eq!(bitmap_bytes(u32::MAX), 0x2000_0000);
    }

    #[test]
    fn header_errors() {
        assert_eq!(
            build(&user(2, &[(R, 0, 1)]), &[&[1]]).err(),
            Some(errno::EINVAL)
        );
        assert_eq!(build(&user(1 << 31, &[]), &[]).err(), Some(errno::EINVAL));
        // Default deny needs a non-empty range, even if other ranges carry flags.
        assert_eq!(
            build(&user(KVM_MSR_FILTER_DEFAULT_DENY, &[(R, 0, 0)]), &[]).err(),
            Some(errno::EINVAL)
        );
        // Default allow with no ranges is fine: it installs a filter that allows all.
        let f = build(&user(0, &[]), &[]).unwrap();
        assert!(f.default_allow() && f.range_count() == 0 && f.allowed(0x10, true));
    }

    #[test]
    fn range_errors() {
        let e = |flags, nmsrs| build(&user(0, &[(flags, 0, nmsrs)]), &[&[]]).err();
        assert_eq!(e(4, 1), Some(errno::EINVAL));
        assert_eq!(e(RW | 8, 1), Some(errno::EINVAL));
        assert_eq!(e(0, 1), Some(errno::EINVAL));
        assert_eq!(e(R, MAX_NMSRS + 1), Some(errno::EINVAL));
        assert_eq!(e(R, u32::MAX), Some(errno::EINVAL));
        assert_eq!(e(R, MAX_NMSRS), None);
        // An empty range is skipped before its flags are checked.
        assert_eq!(e(0xdead, 0), None);
    }

    #[test]
    fn empty_ranges_do_not_end_the_list() {
        let u = user(
            KVM_MSR_FILTER_DEFAULT_DENY,
            &[(R, 0, 0), (0, 5, 0), (R, 0x10, 8)],
        );
        let f = build(&u, &[&[], &[], &[0x01]]).unwrap();
        assert_eq!(f.range_count(), 1);
        assert!(f.allowed(0x10, false));
        assert!(!f.allowed(0x11, false));
    }

    #[test]
    fn copies_interleave_with_checks() {
        // Range 0 faults, range 1 is invalid: EFAULT, as C copies range 0 first.
        let u = user(0, &[(R, 0, 8), (7, 0, 8)]);
        let mut calls = vec![];
        let r = u.build::<Vec<u8>, _>(|c| {
            calls.push(c);
            Err(errno::EFAULT)
        });
        assert_eq!(r.err(), Some(errno::EFAULT));
        assert_eq!(calls, [BitmapCopy { addr: 1, len: 8 }]);
        // Range 0 invalid: nothing is copied at all.
        let u = user(0, &[(0, 0, 8), (R, 0, 8)]);
        let r = u.build::<Vec<u8>, _>(|_| panic!("copied"));
        assert_eq!(r.err(), Some(errno::EINVAL));
        // Each non-empty range is copied once, in order, in whole longs.
        let u = user(0, &[(R, 0, 65), (R, 0, 0), (W, 0, MAX_NMSRS)]);
        let mut calls = vec![];
        let f = u.build(|c| {
            calls.push(c);
            Ok(vec![0u8; c.len])
        });
        assert_eq!(f.unwrap().range_count(), 2);
        assert_eq!(
            calls,
            [
                BitmapCopy { addr: 1, len: 16 },
                BitmapCopy {
                    addr: 3,
                    len: 0x600
                }
            ]
        );
        // A short copy is a failed copy.
        assert_eq!(
            u.build(|c| Ok(vec![0u8; c.len - 1])).err(),
            Some(errno::EFAULT)
        );
    }

    #[test]
    fn range_edges() {
        // Base 0x1000, 16 MSRs, all allowed, under default deny.
        let f = build(
            &user(KVM_MSR_FILTER_DEFAULT_DENY, &[(RW, 0x1000, 16)]),
            &[&[0xff, 0xff]],
        )
        .unwrap();
        assert!(!f.allowed(0xfff, false));
        assert!(f.allowed(0x1000, false) && f.allowed(0x1000, true));
        assert!(f.allowed(0x100f, false) && f.allowed(0x100f, true));
        assert!(!f.allowed(0x1010, false) && !f.allowed(0x1010, true));
        // The bits beyond nmsrs in the copied long are never looked at.
        let u = user(KVM_MSR_FILTER_DEFAULT_DENY, &[(RW, 0x1000, 3)]);
        let f = build(&u, &[&[0b1111_1010]]).unwrap();
        let got = [0x1000, 0x1001, 0x1002, 0x1003, 0x1004].map(|m| f.allowed(m, false));
        assert_eq!(got, [false, true, false, false, false]);
    }

    #[test]
    fn bit_order_is_lsb_first() {
        let mut bm = [0u8; 16];
        bm[9] = 0b0000_0100; // bit 74
        let f = build(&user(0, &[(R, 0x100, 128)]), &[&bm]).unwrap();
        assert!(!f.allowed(0x100 + 73, false));
        assert!(f.allowed(0x100 + 74, false));
        assert!(!f.allowed(0x100 + 75, false));
    }

    #[test]
    fn read_only_and_write_only_ranges() {
        // Deny reads of 0x10.. by a read range, deny writes of 0x20.. by a write range.
        let u = user(0, &[(R, 0x10, 8), (W, 0x20, 8)]);
        let f = build(&u, &[&[0], &[0]]).unwrap();
        assert!(!f.allowed(0x10, false) && f.allowed(0x10, true));
        assert!(f.allowed(0x20, false) && !f.allowed(0x20, true));
        // Under default deny the uncovered access type falls to the default.
        let u = user(KVM_MSR_FILTER_DEFAULT_DENY, &[(R, 0x10, 8)]);
        let f = build(&u, &[&[0xff]]).unwrap();
        assert!(f.allowed(0x10, false) && !f.allowed(0x10, true));
    }

    #[test]
    fn first_match_wins() {
        // Range 0 denies 0x10..0x18 for reads; range 1 allows 0x0..0x40 for both.
        let u = user(KVM_MSR_FILTER_DEFAULT_DENY, &[(R, 0x10, 8), (RW, 0, 64)]);
        let f = build(&u, &[&[0], &[0xff; 8]]).unwrap();
        assert!(!f.allowed(0x10, false));
        // A range for the other access type is passed over: range 1 decides.
        assert!(f.allowed(0x10, true));
        assert!(f.allowed(0x18, false) && f.allowed(0x3f, false));
        assert!(!f.allowed(0x40, false));
        // The same ranges swapped: the wide range shadows the narrow one.
        let u = user(KVM_MSR_FILTER_DEFAULT_DENY, &[(RW, 0, 64), (R, 0x10, 8)]);
        let f = build(&u, &[&[0xff; 8], &[0]]).unwrap();
        assert!(f.allowed(0x10, false));
    }

    #[test]
    fn default_allow_and_deny() {
        let allow = build(&user(0, &[(RW, 0, 8)]), &[&[0]]).unwrap();
        let deny = build(
            &user(KVM_MSR_FILTER_DEFAULT_DENY, &[(RW, 0, 8)]),
            &[&[0xff]],
        )
        .unwrap();
        for m in [8, 0x174, 0xc000_0080, u32::MAX] {
            assert!(allow.allowed(m, false) && allow.allowed(m, true));
            assert!(!deny.allowed(m, false) && !deny.allowed(m, true));
        }
        assert!(msr_allowed::<Vec<u8>>(None, 0x10, true));
        assert!(!msr_allowed(Some(&deny), 0x10, true));
    }

    #[test]
    fn x2apic_msrs_are_never_filtered() {
        let u = user(KVM_MSR_FILTER_DEFAULT_DENY, &[(RW, 0x700, 0x300)]);
        let f = build(&u, &[&[0u8; 0x60]]).unwrap();
        assert!(!f.allowed(0x7ff, false) && !f.allowed(0x900, true));
        for m in [0x800, 0x830, 0x8ff] {
            assert!(f.allowed(m, false) && f.allowed(m, true));
        }
    }

    #[test]
    fn largest_range() {
        let mut bm = vec![0u8; 0x600];
        bm[0x5ff] = 0x80; // the last MSR only
        let f = build(
            &user(KVM_MSR_FILTER_DEFAULT_DENY, &[(RW, 0x4000_0000, MAX_NMSRS)]),
            &[&bm],
        )
        .unwrap();
        assert!(!f.allowed(0x4000_0000, false));
        assert!(f.allowed(0x4000_0000 + MAX_NMSRS - 1, true));
        assert!(!f.allowed(0x4000_0000 + MAX_NMSRS, true));
        let u = user(0, &[(RW, 0x4000_0000, MAX_NMSRS + 1)]);
        assert_eq!(build(&u, &[&bm]).err(), Some(errno::EINVAL));
    }

    #[test]
    fn range_past_u32_max_matches_nothing() {
        // base + nmsrs wraps to 0x100 in C's u32, so `index < end` never holds.
        let u = user(0, &[(RW, 0xffff_ff00, 0x200)]);
        let f = build(&u, &[&[0u8; 0x40]]).unwrap();
        assert!(f.allowed(0xffff_ff00, false) && f.allowed(0x10, true));
        // Ending exactly at 2^32 wraps to 0 too: even the last MSR is unfiltered.
        let f = build(&user(0, &[(RW, 0xffff_ffc0, 0x40)]), &[&[0u8; 8]]).unwrap();
        assert!(f.allowed(0xffff_ffff, false));
    }

    #[test]
    fn user_space_msr_cap() {
        assert_eq!(UserSpaceMsr::default().mask(), 0);
        assert_eq!(UserSpaceMsr::from_cap_arg(8), Err(errno::EINVAL));
        assert_eq!(UserSpaceMsr::from_cap_arg(1 << 32), Err(errno::EINVAL));
        let u = UserSpaceMsr::from_cap_arg(u64::from(KVM_MSR_EXIT_REASON_FILTER)).unwrap();
        assert!(u.wants(MsrExitReason::Filter));
        assert!(!u.wants(MsrExitReason::Inval) && !u.wants(MsrExitReason::Unknown));
        let all = UserSpaceMsr::from_cap_arg(7).unwrap();
        assert_eq!(all.mask(), 7);
        assert!([
            MsrExitReason::Inval,
            MsrExitReason::Unknown,
            MsrExitReason::Filter
        ]
        .iter()
        .all(|&r| all.wants(r)));
    }

    #[test]
    fn exit_reason_from_ret() {
        assert_eq!(
            MsrExitReason::from_ret(KVM_MSR_RET_UNSUPPORTED),
            MsrExitReason::Unknown
        );
        assert_eq!(
            MsrExitReason::from_ret(KVM_MSR_RET_FILTERED),
            MsrExitReason::Filter
        );
        assert_eq!(MsrExitReason::from_ret(1), MsrExitReason::Inval);
        assert_eq!(MsrExitReason::from_ret(-22), MsrExitReason::Inval);
        assert_eq!(MsrExitReason::Filter.bit(), 4);
    }
}
