// SPDX-License-Identifier: GPL-2.0

//! Coalesced MMIO and PIO (`virt/kvm/coalesced_mmio.c`): the zones set with
//! `KVM_(UN)REGISTER_COALESCED_MMIO` and the ring shared with user space.
//!
//! A guest write lying entirely inside a zone does not exit to user space: it is
//! appended to a ring in one page that user space maps at
//! `KVM_COALESCED_MMIO_PAGE_OFFSET` of every vCPU fd, and user space replays the
//! ring at its next exit. The kernel produces at `last`, user space consumes at `first`.
//!
//! Core-only (host-tested). User space can write the page at any time, so every
//! access goes through [`RingMem`]: the module implements it on the shared page with
//! single loads and stores and a real `smp_wmb()`; tests use [`RingPage`]. The
//! caller serializes appends (`kvm->ring_lock`) and zone changes (`kvm->slots_lock`).
//! Fields are in native byte order, as the C structs (little-endian on x86).

use crate::uapi::{errno, iow, Errno};

/// `PAGE_SIZE` on x86: the ring is one page.
pub(crate) const PAGE_SIZE: usize = 4096;
/// `offsetof(struct kvm_coalesced_mmio_ring, first)`: next entry user space reads.
pub(crate) const RING_FIRST: usize = 0;
/// `offsetof(struct kvm_coalesced_mmio_ring, last)`: next entry the kernel fills.
pub(crate) const RING_LAST: usize = 4;
/// `sizeof(struct kvm_coalesced_mmio_ring)`: the entries start here.
pub(crate) const RING_HEADER_SIZE: usize = 8;
/// `sizeof(struct kvm_coalesced_mmio)`.
pub(crate) const ENTRY_SIZE: usize = 24;
/// `offsetof(struct kvm_coalesced_mmio, phys_addr)`.
pub(crate) const ENTRY_PHYS_ADDR: usize = 0;
/// `offsetof(struct kvm_coalesced_mmio, len)`.
pub(crate) const ENTRY_LEN: usize = 8;
/// `offsetof(struct kvm_coalesced_mmio, pio)` (a union with `pad`).
pub(crate) const ENTRY_PIO: usize = 12;
/// `offsetof(struct kvm_coalesced_mmio, data)`.
pub(crate) const ENTRY_DATA: usize = 16;
/// `sizeof(((struct kvm_coalesced_mmio *)0)->data)`: the longest coalesced write.
pub(crate) const ENTRY_DATA_SIZE: usize = 8;
/// `KVM_COALESCED_MMIO_MAX`: entries in the ring (170); one is always left free.
pub(crate) const MAX_ENTRIES: u32 = ((PAGE_SIZE - RING_HEADER_SIZE) / ENTRY_SIZE) as u32;
/// `sizeof(struct kvm_coalesced_mmio_zone)`: addr (u64), size (u32), pio (u32).
pub(crate) const ZONE_SIZE: usize = 16;

/// `KVM_REGISTER_COALESCED_MMIO` (VM ioctl).
pub(crate) const KVM_REGISTER_COALESCED_MMIO: u32 = iow(0x67, ZONE_SIZE);
/// `KVM_UNREGISTER_COALESCED_MMIO` (VM ioctl).
pub(crate) const KVM_UNREGISTER_COALESCED_MMIO: u32 = iow(0x68, ZONE_SIZE);
/// `KVM_CAP_COALESCED_MMIO`: `KVM_CHECK_EXTENSION` answers the ring's page offset.
pub(crate) const KVM_CAP_COALESCED_MMIO: i64 = 15;
/// `KVM_CAP_COALESCED_PIO`: zones may have `pio` = 1; `KVM_CHECK_EXTENSION` answers 1.
pub(crate) const KVM_CAP_COALESCED_PIO: i64 = 162;

/// `ENOSPC` (not in `uapi::errno`): `kvm_io_bus_register_dev()` returns it when a
/// bus already holds `NR_IOBUS_DEVS` (1000) devices; here, when [`Zones`] is full.
const ENOSPC: Errno = Errno(28);

// The last entry must end inside the page: every ring index below MAX_ENTRIES is safe.
const _: () = assert!(RING_HEADER_SIZE + MAX_ENTRIES as usize * ENTRY_SIZE <= PAGE_SIZE);
const _: () = assert!(ENTRY_DATA + ENTRY_DATA_SIZE == ENTRY_SIZE);

/// Reads a native-endian `u32` at a constant offset of a fixed-size buffer.
fn u32_at<const L: usize>(b: &[u8; L], off: usize) -> u32 {
    let mut w = [0; 4];
    w.copy_from_slice(&b[off..off + 4]);
    u32::from_ne_bytes(w)
}

/// One `struct kvm_coalesced_mmio_zone`: guest writes inside it are coalesced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Zone {
    /// First guest-physical address (MMIO) or port (PIO).
    pub(crate) addr: u64,
    /// Length in bytes; 0 and ranges past 2^64 are accepted, as in C.
    pub(crate) size: u32,
    /// Port I/O zone (on `KVM_PIO_BUS`) rather than MMIO.
    pub(crate) pio: bool,
}

impl Zone {
    /// Decodes the user struct. Like both ioctls in C, only `pio` is checked: the
    /// whole 32-bit field (it aliases `pad`) must be 0 or 1, else `EINVAL`.
    pub(crate) fn from_bytes(b: &[u8; ZONE_SIZE]) -> Result<Self, Errno> {
        let mut addr = [0; 8];
        addr.copy_from_slice(&b[0..8]);
        let (addr, size) = (u64::from_ne_bytes(addr), u32_at(b, 8));
        let pio = match u32_at(b, 12) {
            0 => false,
            1 => true,
            _ => return Err(errno::EINVAL),
        };
        Ok(Zone { addr, size, pio })
    }

    /// `coalesced_mmio_in_range()`: whether `[addr, addr + len)` lies entirely in
    /// the zone. The kind (`pio`) is the caller's check, as in C.
    fn contains(&self, addr: u64, len: u32) -> bool {
        // C takes `int len`: a length of 2 GiB or more is negative there and never
        // matches. Only unregister can pass one (the user's `size`).
        if len > i32::MAX as u32 {
            return false;
        }
        let Some(end) = addr.checked_add(u64::from(len)) else {
            return false;
        };
        // C computes the zone's end in u64 and lets it wrap, so a zone reaching
        // 2^64 matches nothing. Mirrored, so that the same writes exit.
        let zone_end = self.addr.wrapping_add(u64::from(self.size));
        addr >= self.addr && end <= zone_end
    }
}

/// The zones of one VM (C: `kvm->coalesced_zones`, a list of devices on the MMIO
/// and PIO buses), kept in registration order in caller storage `S` whose
/// length is the capacity (the module: a heap buffer, so the kernel stack
/// never holds it; tests: a `Vec`).
#[derive(Debug)]
pub(crate) struct Zones<S> {
    /// `zones[..len]` are registered.
    zones: S,
    /// Number of registered zones.
    len: usize,
}

impl<S: core::ops::DerefMut<Target = [Zone]>> Zones<S> {
    /// No zones, with room for as many as `storage` holds.
    pub(crate) fn new(storage: S) -> Self {
        Zones { zones: storage, len: 0 }
    }

    /// The registered zones, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Zone> {
        self.zones[..self.len].iter()
    }

    /// `kvm_vm_ioctl_register_coalesced_mmio()` after decoding. C accepts overlapping,
    /// duplicate, empty and wrapping zones; its only failure is a full bus (or no
    /// memory), so a full set gives `ENOSPC`. C's limit is 1000 devices per bus,
    /// shared with other in-kernel devices; choosing `N` is the caller's concern.
    pub(crate) fn register(&mut self, zone: Zone) -> Result<(), Errno> {
        let slot = self.zones.get_mut(self.len).ok_or(ENOSPC)?;
        *slot = zone;
        self.len += 1;
        Ok(())
    }

    /// `kvm_vm_ioctl_unregister_coalesced_mmio()` after decoding: removes every zone
    /// of the same kind that *contains* `[range.addr, range.addr + range.size)`.
    /// A range larger than a zone or only overlapping it removes nothing; a range
    /// of size 0 removes every zone it falls in, even at the zone's end. The ioctl
    /// returns 0 whatever happens; the count returned here is for tests.
    pub(crate) fn unregister(&mut self, range: Zone) -> usize {
        let before = self.len;
        let mut kept = 0;
        let zones = &mut *self.zones;
        for i in 0..before {
            let z = zones[i];
            if !(z.pio == range.pio && z.contains(range.addr, range.size)) {
                zones[kept] = z;
                kept += 1;
            }
        }
        self.len = kept;
        before - kept
    }

    /// Whether a guest write of `len` bytes at `addr` is coalesced: some zone of
    /// the same kind contains it entirely (the io-bus lookup plus
    /// `coalesced_mmio_in_range()` of each candidate device).
    pub(crate) fn find(&self, addr: u64, len: u32, pio: bool) -> bool {
        self.iter().any(|z| z.pio == pio && z.contains(addr, len))
    }

    /// `coalesced_mmio_write()`: records the write `val` at `addr` in the ring.
    /// `EOPNOTSUPP` (the device declines, so the write exits to user space) when
    /// no zone contains it, when it is longer than 8 bytes (C trusts its callers
    /// here and would overrun `data`) or when the ring is full or corrupt.
    pub(crate) fn write<R: RingMem + ?Sized>(
        &self,
        ring: &mut R,
        addr: u64,
        val: &[u8],
        pio: bool,
    ) -> Result<(), Errno> {
        let entry = Entry::new(addr, val, pio).ok_or(errno::EOPNOTSUPP)?;
        if !self.find(addr, entry.len, pio) {
            return Err(errno::EOPNOTSUPP);
        }
        append(ring, &entry).map_err(|RingFull| errno::EOPNOTSUPP)
    }
}

/// One `struct kvm_coalesced_mmio` to append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Guest-physical address or port written.
    phys_addr: u64,
    /// Bytes written, at most 8.
    len: u32,
    /// Written to a PIO zone.
    pio: bool,
    /// The bytes, zero-padded to 8.
    data: [u8; ENTRY_DATA_SIZE],
}

impl Entry {
    /// An entry for the write `val` at `phys_addr`; `None` if `val` exceeds 8 bytes.
    pub(crate) fn new(phys_addr: u64, val: &[u8], pio: bool) -> Option<Self> {
        let mut data = [0; ENTRY_DATA_SIZE];
        data.get_mut(..val.len())?.copy_from_slice(val);
        Some(Entry {
            phys_addr,
            len: val.len() as u32,
            pio,
            data,
        })
    }

    /// The entry as laid out in the page. Unlike C, which copies only `len` bytes
    /// of data, the unused tail is written as zeros rather than left stale.
    fn to_bytes(self) -> [u8; ENTRY_SIZE] {
        let mut b = [0; ENTRY_SIZE];
        b[ENTRY_PHYS_ADDR..ENTRY_LEN].copy_from_slice(&self.phys_addr.to_ne_bytes());
        b[ENTRY_LEN..ENTRY_PIO].copy_from_slice(&self.len.to_ne_bytes());
        b[ENTRY_PIO..ENTRY_DATA].copy_from_slice(&u32::from(self.pio).to_ne_bytes());
        b[ENTRY_DATA..].copy_from_slice(&self.data);
        b
    }
}

/// The ring has no free slot, or its `last` index is corrupt: the write must exit
/// to user space instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RingFull;

/// Access to the ring page, which user space may change at any moment.
pub(crate) trait RingMem {
    /// Reads the `u32` at byte offset `off` with a single load (`READ_ONCE()`).
    /// [`append`] calls it only with [`RING_FIRST`] and [`RING_LAST`].
    fn read_u32(&self, off: usize) -> u32;
    /// Copies `bytes` to byte offset `off`; [`append`] guarantees
    /// `off + bytes.len() <= PAGE_SIZE`.
    fn write(&mut self, off: usize, bytes: &[u8]);
    /// `smp_wmb()`: earlier writes become visible to user space before later ones.
    fn wmb(&mut self);
}

/// A ring page owned by the caller (host tests, or a private copy): offsets are
/// checked, so even a wrong one cannot reach past the page.
#[cfg(test)]
pub(crate) struct RingPage<'a>(pub(crate) &'a mut [u8; PAGE_SIZE]);

#[cfg(test)]
impl RingMem for RingPage<'_> {
    fn read_u32(&self, off: usize) -> u32 {
        match self.0.get(off..off.saturating_add(4)) {
            Some(b) => u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            // Unreachable from `append`; an invalid index makes it refuse to write.
            None => u32::MAX,
        }
    }

    fn write(&mut self, off: usize, bytes: &[u8]) {
        match self.0.get_mut(off..off.saturating_add(bytes.len())) {
            Some(dst) => dst.copy_from_slice(bytes),
            None => debug_assert!(false, "ring write out of the page"),
        }
    }

    // Exclusively borrowed: nobody can observe the order.
    fn wmb(&mut self) {}
}

/// The ring part of `coalesced_mmio_write()`: stores `entry` at `last` and
/// publishes it by advancing `last`. The caller holds `kvm->ring_lock`.
///
/// Each index is read once and only `last` is used for indexing, after the bounds
/// check; 6.12 does the same (the check added for CVE-2019-14821). User-space
/// values can therefore only make the ring refuse writes or overwrite entries
/// not yet consumed, never move a write outside the page.
pub(crate) fn append<R: RingMem + ?Sized>(ring: &mut R, entry: &Entry) -> Result<(), RingFull> {
    let insert = ring.read_u32(RING_LAST);
    if insert >= MAX_ENTRIES {
        return Err(RingFull);
    }
    let next = (insert + 1) % MAX_ENTRIES;
    // One slot stays free so that `first == last` means empty. A `first` of
    // MAX_ENTRIES or more never equals `next`: the ring never looks full and old
    // entries get overwritten, which hurts only the user space that wrote it.
    if next == ring.read_u32(RING_FIRST) {
        return Err(RingFull);
    }
    let slot = RING_HEADER_SIZE + insert as usize * ENTRY_SIZE;
    ring.write(slot, &entry.to_bytes());
    // smp_wmb() here in C: user space must see the whole entry before the `last`
    // that makes it visible.
    ring.wmb();
    ring.write(RING_LAST, &next.to_ne_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;
    use std::vec::Vec;

    type Page = [u8; PAGE_SIZE];
    const WMB: (usize, usize) = (usize::MAX, 0);
    /// MAX_ENTRIES, MAX_ENTRIES + 1 and worse.
    const HOSTILE: [u32; 5] = [170, 171, 1 << 31, u32::MAX - 1, u32::MAX];

    fn zone(addr: u64, size: u32, pio: bool) -> Zone {
        Zone { addr, size, pio }
    }

    fn zone_bytes(addr: u64, size: u32, pio: u32) -> [u8; ZONE_SIZE] {
        let mut b = [0; ZONE_SIZE];
        b[..8].copy_from_slice(&addr.to_ne_bytes());
        b[8..12].copy_from_slice(&size.to_ne_bytes());
        b[12..].copy_from_slice(&pio.to_ne_bytes());
        b
    }

    fn set(p: &mut Page, off: usize, v: u32) {
        p[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    }

    fn ring(first: u32, last: u32) -> Page {
        let mut p = [0; PAGE_SIZE];
        set(&mut p, RING_FIRST, first);
        set(&mut p, RING_LAST, last);
        p
    }

    /// What user space (QEMU's `kvm_flush_coalesced_mmio_buffer()`) does: takes the
    /// entry at `first` and advances it. Returns (addr, len, pio, data).
    fn pop(p: &mut Page) -> Option<(u64, u32, u32, [u8; 8])> {
        let first = u32_at(p, RING_FIRST);
        if first == u32_at(p, RING_LAST) {
            return None;
        }
        let e = RING_HEADER_SIZE + first as usize * ENTRY_SIZE;
        let addr = u64::from(u32_at(p, e)) | u64::from(u32_at(p, e + 4)) << 32;
        let data = p[e + ENTRY_DATA..e + ENTRY_SIZE].try_into().unwrap();
        let (len, pio) = (u32_at(p, e + ENTRY_LEN), u32_at(p, e + ENTRY_PIO));
        set(p, RING_FIRST, (first + 1) % MAX_ENTRIES);
        Some((addr, len, pio, data))
    }

    fn entry(n: u64) -> Entry {
        Entry::new(0x1000 + n, &n.to_ne_bytes(), false).unwrap()
    }

    fn push(p: &mut Page, n: u64) -> Result<(), RingFull> {
        append(&mut RingPage(p), &entry(n))
    }

    /// A [`RingPage`] that counts index reads and logs writes and barriers.
    struct Logged {
        page: Page,
        reads: Cell<[u32; 2]>,
        log: Vec<(usize, usize)>,
    }

    impl Logged {
        fn new(first: u32, last: u32) -> Self {
            let (page, reads, log) = (ring(first, last), Cell::new([0; 2]), Vec::new());
            Logged { page, reads, log }
        }
    }

    impl RingMem for Logged {
        fn read_u32(&self, off: usize) -> u32 {
            let mut r = self.reads.get();
            r[off / 4] += 1;
            self.reads.set(r);
            u32_at(&self.page, off)
        }
        fn write(&mut self, off: usize, bytes: &[u8]) {
            assert!(off + bytes.len() <= PAGE_SIZE);
            self.log.push((off, bytes.len()));
            RingPage(&mut self.page).write(off, bytes);
        }
        fn wmb(&mut self) {
            self.log.push(WMB);
        }
    }

    // Values printed by a C program including the 6.12 <linux/kvm.h>.
    #[test]
    fn layout_matches_c() {
        assert_eq!((RING_FIRST, RING_LAST, RING_HEADER_SIZE), (0, 4, 8));
        assert_eq!((ENTRY_PHYS_ADDR, ENTRY_LEN, ENTRY_PIO), (0, 8, 12));
        assert_eq!((ENTRY_DATA, ENTRY_SIZE, ZONE_SIZE), (16, 24, 16));
        assert_eq!(MAX_ENTRIES, 170);
        assert_eq!(KVM_REGISTER_COALESCED_MMIO, 0x4010_ae67);
        assert_eq!(KVM_UNREGISTER_COALESCED_MMIO, 0x4010_ae68);
        assert_eq!((KVM_CAP_COALESCED_MMIO, KVM_CAP_COALESCED_PIO), (15, 162));
        let b = Entry::new(0x1122_3344, &[1, 2, 3], true)
            .unwrap()
            .to_bytes();
        assert_eq!(b[..8], 0x1122_3344u64.to_ne_bytes());
        assert_eq!((u32_at(&b, 8), u32_at(&b, 12)), (3, 1));
        assert_eq!(b[16..], [1, 2, 3, 0, 0, 0, 0, 0]);
        assert!(Entry::new(0, &[], false).is_some() && Entry::new(0, &[0; 8], false).is_some());
        assert_eq!(Entry::new(0, &[0; 9], false), None);
    }

    #[test]
    fn zone_decode() {
        let z = Zone::from_bytes(&zone_bytes(0xfee0_0000, 0x1000, 0));
        assert_eq!(z, Ok(zone(0xfee0_0000, 0x1000, false)));
        let z = Zone::from_bytes(&zone_bytes(0x3f8, 8, 1));
        assert_eq!(z, Ok(zone(0x3f8, 8, true)));
        // Only pio is validated: empty and wrapping zones decode fine.
        let z = Zone::from_bytes(&zone_bytes(u64::MAX, u32::MAX, 0));
        assert_eq!(z, Ok(zone(u64::MAX, u32::MAX, false)));
        assert_eq!(Zone::from_bytes(&zone_bytes(1, 0, 1)), Ok(zone(1, 0, true)));
        for pio in [2, 0x100, 1 << 31, u32::MAX] {
            assert_eq!(Zone::from_bytes(&zone_bytes(0, 1, pio)), Err(errno::EINVAL));
        }
    }

    #[test]
    fn register_accepts_overlaps_until_full() {
        let mut zs = Zones::new(std::vec![Zone::default(); 3]);
        assert_eq!(zs.register(zone(0x1000, 0x100, false)), Ok(()));
        assert_eq!(zs.register(zone(0x1000, 0x100, false)), Ok(()));
        assert_eq!(zs.register(zone(0x1080, 0, false)), Ok(()));
        assert_eq!(zs.register(zone(0, 1, true)), Err(ENOSPC));
        assert_eq!(zs.iter().count(), 3);
        assert_eq!(Zones::new(std::vec![Zone::default(); 0]).register(zone(0, 1, false)), Err(ENOSPC));
    }

    #[test]
    fn find_edges() {
        let mut zs = Zones::new(std::vec![Zone::default(); 4]);
        zs.register(zone(0x1000, 0x10, false)).unwrap();
        assert!(zs.find(0x1000, 1, false) && zs.find(0x1000, 0x10, false));
        assert!(zs.find(0x1008, 8, false)); // ends exactly at the zone's end
        assert!(!zs.find(0x1009, 8, false)); // one byte past
        assert!(!zs.find(0x1010, 1, false) && !zs.find(0xfff, 2, false));
        assert!(!zs.find(u64::MAX, 2, false));
        // Ending at u64::MAX is fine; reaching 2^64 wraps the end in C: no match.
        zs.register(zone(u64::MAX - 0x10, 0x10, true)).unwrap();
        assert!(zs.find(u64::MAX - 8, 8, true));
        zs.register(zone(u64::MAX - 0xf, 0x10, false)).unwrap();
        assert!(!zs.find(u64::MAX - 0xf, 1, false));
        // An empty zone contains no real write.
        zs.register(zone(0x40, 0, true)).unwrap();
        assert!(!zs.find(0x40, 1, true));
    }

    #[test]
    fn pio_and_mmio_are_separate() {
        let mut zs = Zones::new(std::vec![Zone::default(); 2]);
        zs.register(zone(0x70, 2, true)).unwrap();
        zs.register(zone(0x1000, 0x10, false)).unwrap();
        assert!(zs.find(0x70, 1, true) && !zs.find(0x70, 1, false));
        assert!(zs.find(0x1000, 4, false) && !zs.find(0x1000, 4, true));
        assert_eq!(zs.unregister(zone(0x70, 2, false)), 0);
        assert_eq!(zs.unregister(zone(0x70, 2, true)), 1);
        assert!(zs.find(0x1000, 4, false) && !zs.find(0x70, 1, true));
    }

    #[test]
    fn unregister_removes_containing_zones() {
        let mut zs = Zones::new(std::vec![Zone::default(); 8]);
        for (a, s) in [(0x1000, 0x1000), (0x1000, 0x100), (0x1800, 0x800)] {
            zs.register(zone(a, s, false)).unwrap();
        }
        zs.register(zone(0x4000, 0x10, false)).unwrap();
        // Larger than every zone, or only overlapping: nothing goes.
        assert_eq!(zs.unregister(zone(0, 0x10000, false)), 0);
        assert_eq!(zs.unregister(zone(0x1ff0, 0x20, false)), 0);
        // 2 GiB or more is a negative `int` in C: matches nothing.
        zs.register(zone(0, u32::MAX, false)).unwrap();
        assert_eq!(zs.unregister(zone(0, 1 << 31, false)), 0);
        assert_eq!(zs.unregister(zone(0, (1 << 31) - 1, false)), 1);
        // Inside two zones: both go, the others keep their order.
        assert_eq!(zs.unregister(zone(0x1800, 0x10, false)), 2);
        let left: Vec<_> = zs.iter().map(|z| (z.addr, z.size)).collect();
        assert_eq!(left, [(0x1000, 0x100), (0x4000, 0x10)]);
        // Size 0 at the zone's end still counts as inside.
        assert_eq!(zs.unregister(zone(0x4010, 0, false)), 1);
        assert_eq!(zs.unregister(zone(0x1000, 0x100, false)), 1);
        assert_eq!(zs.iter().count(), 0);
    }

    #[test]
    fn append_until_full() {
        let mut p = ring(0, 0);
        assert!((0..u64::from(MAX_ENTRIES) - 1).all(|n| push(&mut p, n).is_ok()));
        assert_eq!(u32_at(&p, RING_LAST), MAX_ENTRIES - 1);
        let before = p;
        assert_eq!(push(&mut p, 999), Err(RingFull));
        assert_eq!(p, before);
        // Consuming one entry makes room for exactly one more.
        assert_eq!(pop(&mut p).unwrap().0, 0x1000);
        assert_eq!(push(&mut p, 999), Ok(()));
        assert_eq!(u32_at(&p, RING_LAST), 0);
        assert_eq!(push(&mut p, 1000), Err(RingFull));
    }

    #[test]
    fn wrap_around() {
        let mut p = ring(MAX_ENTRIES - 1, MAX_ENTRIES - 1);
        assert!((0..3).all(|n| push(&mut p, n).is_ok()));
        assert_eq!(u32_at(&p, RING_LAST), 2);
        assert!((0..3).all(|n| pop(&mut p).unwrap().0 == 0x1000 + n));
        assert_eq!(pop(&mut p), None);
    }

    #[test]
    fn nothing_lost_or_duplicated() {
        let (mut p, mut produced, mut consumed) = (ring(0, 0), 0u64, 0u64);
        // Uneven producer and consumer bursts, wrapping many times.
        for round in 0..500usize {
            for _ in 0..round % 37 {
                if push(&mut p, produced).is_ok() {
                    produced += 1;
                }
            }
            for (addr, len, pio, data) in core::iter::from_fn(|| pop(&mut p)).take(round % 29) {
                assert_eq!((addr, len, pio), (0x1000 + consumed, 8, 0));
                assert_eq!(u64::from_ne_bytes(data), consumed);
                consumed += 1;
            }
        }
        while let Some((addr, ..)) = pop(&mut p) {
            assert_eq!(addr, 0x1000 + consumed);
            consumed += 1;
        }
        assert_eq!(produced, consumed);
        assert!(produced > 10 * u64::from(MAX_ENTRIES));
    }

    #[test]
    fn hostile_first_stays_in_bounds() {
        for first in HOSTILE {
            let mut r = Logged::new(first, 0);
            // The ring never looks full: it keeps overwriting, but only real slots.
            for n in 0..3 * u64::from(MAX_ENTRIES) {
                let slot = RING_HEADER_SIZE + u32_at(&r.page, RING_LAST) as usize * ENTRY_SIZE;
                assert_eq!(append(&mut r, &entry(n)), Ok(()));
                assert_eq!(r.log[r.log.len() - 3..], [(slot, 24), WMB, (RING_LAST, 4)]);
                assert!(u32_at(&r.page, RING_LAST) < MAX_ENTRIES);
                assert_eq!(u32_at(&r.page, RING_FIRST), first);
            }
        }
    }

    #[test]
    fn every_index_pair_is_safe() {
        // Every first/last pair, valid or hostile: C's verdict (a bad `last` is
        // refused), and either nothing is written or exactly (entry, barrier, last).
        let values: Vec<u32> = (0..MAX_ENTRIES).chain(HOSTILE).collect();
        for &first in &values {
            for &last in &values {
                let mut r = Logged::new(first, last);
                let ok = append(&mut r, &entry(0)).is_ok();
                assert_eq!(ok, last < MAX_ENTRIES && (last + 1) % MAX_ENTRIES != first);
                assert_eq!(r.log.len(), if ok { 3 } else { 0 });
            }
        }
    }

    #[test]
    fn each_index_read_once_entry_before_last() {
        let mut r = Logged::new(5, 7);
        append(&mut r, &entry(1)).unwrap();
        assert_eq!(r.reads.get(), [1, 1]);
        let slot = RING_HEADER_SIZE + 7 * ENTRY_SIZE;
        assert_eq!(r.log, [(slot, ENTRY_SIZE), WMB, (RING_LAST, 4)]);
        // A bad `last` is refused before `first` is even read.
        let mut r = Logged::new(0, u32::MAX);
        assert_eq!(append(&mut r, &entry(1)), Err(RingFull));
        assert_eq!(r.reads.get(), [0, 1]);
    }

    #[test]
    fn write_goes_through_zones() {
        let mut zs = Zones::new(std::vec![Zone::default(); 2]);
        zs.register(zone(0x3f8, 8, true)).unwrap();
        let mut p = ring(0, 0);
        let r = &mut RingPage(&mut p);
        assert_eq!(zs.write(r, 0x3f8, &[0xab, 0xcd], true), Ok(()));
        assert_eq!(zs.write(r, 0x3f8, &[0xab], false), Err(errno::EOPNOTSUPP));
        assert_eq!(zs.write(r, 0x3ff, &[1, 2], true), Err(errno::EOPNOTSUPP));
        assert_eq!(zs.write(r, 0x3f8, &[0; 9], true), Err(errno::EOPNOTSUPP));
        let want = (0x3f8, 2, 1, [0xab, 0xcd, 0, 0, 0, 0, 0, 0]);
        assert_eq!(pop(&mut p), Some(want));
        assert_eq!(pop(&mut p), None);
        // A full ring declines the write, so it exits to user space.
        let mut p = ring(1, 0);
        let r = &mut RingPage(&mut p);
        assert_eq!(zs.write(r, 0x3f8, &[1], true), Err(errno::EOPNOTSUPP));
        // RingPage itself never reads past the page.
        assert_eq!(r.read_u32(PAGE_SIZE - 2), u32::MAX);
        assert_eq!(r.read_u32(usize::MAX), u32::MAX);
    }
}
