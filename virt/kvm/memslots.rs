// SPDX-License-Identifier: GPL-2.0

//! Memory slots (`virt/kvm/kvm_main.c`): `KVM_SET_USER_MEMORY_REGION(2)`, decoded,
//! validated and applied, and the lookups of a guest frame number (gfn).
//!
//! Core-only (host-tested). The slots live in caller storage behind [`SlotStore`]
//! (the module: a `KVec<MemSlot>`; tests: a `Vec`), so nothing here allocates.
//! The caller serializes updates (C: `kvm->slots_lock`). kvm-rs has one address
//! space (no SMM), so the C per-address-space arrays collapse to one set.
//!
//! Invariant of a store that only [`commit`] modifies: the slots are sorted by
//! `base_gfn`, do not overlap, have `npages > 0` and distinct ids. Lookups by gfn
//! are therefore binary searches, as C's walk of its gfn-ordered rb-tree.

use crate::uapi::{errno, iow, Errno};

/// `PAGE_SHIFT` of x86.
pub(crate) const PAGE_SHIFT: u32 = 12;
/// `PAGE_SIZE` of x86 (4 KiB): sizes and addresses of slots are multiples of it.
pub(crate) const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;

/// `KVM_MEM_LOG_DIRTY_PAGES`: track writes for `KVM_GET_DIRTY_LOG`.
pub(crate) const KVM_MEM_LOG_DIRTY_PAGES: u32 = 1 << 0;
/// `KVM_MEM_READONLY`: guest writes exit to user space as MMIO.
pub(crate) const KVM_MEM_READONLY: u32 = 1 << 1;
/// `KVM_MEM_GUEST_MEMFD`: private memory; kvm-rs has none, so always `EINVAL`
/// (it is not in `VALID_FLAGS`; the tests check the rejection).
#[cfg(test)]
pub(crate) const KVM_MEM_GUEST_MEMFD: u32 = 1 << 2;
/// `KVM_MEM_PCI_HOLE` (kvm-rs, `include/uapi/linux/kvm_rs.h`): a slot with no
/// memory behind it, whose reads return all ones and whose writes exit as
/// MMIO. Bit 15: the highest of the 16 user-visible flag bits (bits 16 and up
/// are the C KVM's internal ones), far from the bits upstream allocates next.
pub(crate) const KVM_MEM_PCI_HOLE: u32 = 1 << 15;
/// `KVM_CAP_KVMRS_PCI_HOLE`: `KVM_MEM_PCI_HOLE` exists; a VM accepts the flag
/// once it enabled the capability with `KVM_ENABLE_CAP` (until then the flag
/// is an unknown bit, `EINVAL`, as for the C KVM). kvm-rs numbers its own
/// capabilities from 0x4b520000 ("KR"), far above the C KVM's.
pub(crate) const KVM_CAP_KVMRS_PCI_HOLE: i64 = 0x4b52_0001;
/// `KVM_SET_USER_MEMORY_REGION_V1_FLAGS`: the flags that do not use the v2 fields.
const V1_FLAGS: u32 = KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY | KVM_MEM_PCI_HOLE;
/// What `check_memory_region_flags()` allows on x86 without private memory and
/// with read-only memory (`!kvm->arch.has_protected_state`), plus the PCI hole.
const VALID_FLAGS: u32 = KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY | KVM_MEM_PCI_HOLE;

/// `KVM_MEM_SLOTS_NUM` (`SHRT_MAX`): slot ids per address space.
pub(crate) const KVM_MEM_SLOTS_NUM: u32 = 32767;
/// `KVM_INTERNAL_MEM_SLOTS` of x86: the top ids are for KVM's own slots (APIC
/// access page, identity map, TSS), which user space may not name.
pub(crate) const KVM_INTERNAL_MEM_SLOTS: u32 = 3;
/// `KVM_USER_MEM_SLOTS` (32764): user slot ids are below it; `KVM_CAP_NR_MEMSLOTS`.
pub(crate) const KVM_USER_MEM_SLOTS: u32 = KVM_MEM_SLOTS_NUM - KVM_INTERNAL_MEM_SLOTS;
/// `kvm_arch_nr_memslot_as_ids()` in kvm-rs: one address space (C x86 has 2, for SMM).
pub(crate) const NR_ADDRESS_SPACES: u32 = 1;
/// `KVM_MEM_MAX_NR_PAGES`: the dirty bitmap helpers take an `int` bit count.
pub(crate) const KVM_MEM_MAX_NR_PAGES: u64 = (1 << 31) - 1;

/// `sizeof(struct kvm_userspace_memory_region)`.
pub(crate) const REGION_V1_SIZE: usize = 32;
/// `sizeof(struct kvm_userspace_memory_region2)`.
pub(crate) const REGION_V2_SIZE: usize = 160;
/// `KVM_SET_USER_MEMORY_REGION` (VM ioctl).
pub(crate) const KVM_SET_USER_MEMORY_REGION: u32 = iow(0x46, REGION_V1_SIZE);
/// `KVM_SET_USER_MEMORY_REGION2` (VM ioctl).
pub(crate) const KVM_SET_USER_MEMORY_REGION2: u32 = iow(0x49, REGION_V2_SIZE);

/// `KVM_CAP_USER_MEMORY`: `KVM_SET_USER_MEMORY_REGION` exists.
pub(crate) const KVM_CAP_USER_MEMORY: i64 = 3;
/// `KVM_CAP_NR_MEMSLOTS`: answers `KVM_USER_MEM_SLOTS`.
pub(crate) const KVM_CAP_NR_MEMSLOTS: i64 = 10;
/// `KVM_CAP_READONLY_MEM`: `KVM_MEM_READONLY` is accepted.
pub(crate) const KVM_CAP_READONLY_MEM: i64 = 81;
/// `KVM_CAP_USER_MEMORY2`: `KVM_SET_USER_MEMORY_REGION2` exists.
pub(crate) const KVM_CAP_USER_MEMORY2: i64 = 231;

/// `EEXIST` (not in `uapi::errno`): a new or moved slot overlaps another one.
const EEXIST: Errno = Errno(17);

/// What `KVM_CHECK_EXTENSION` answers for the capabilities of this file (generic
/// `kvm_vm_ioctl_check_extension_generic()` and x86's `KVM_CAP_READONLY_MEM`), or
/// `None` for others. `KVM_CAP_MULTI_ADDRESS_SPACE` is left out, as C does when
/// `KVM_MAX_NR_ADDRESS_SPACES` is 1, so it answers 0.
pub(crate) fn check_extension(cap: i64) -> Option<i64> {
    match cap {
        KVM_CAP_USER_MEMORY | KVM_CAP_USER_MEMORY2 | KVM_CAP_READONLY_MEM => Some(1),
        KVM_CAP_KVMRS_PCI_HOLE => Some(1),
        KVM_CAP_NR_MEMSLOTS => Some(KVM_USER_MEM_SLOTS as i64),
        _ => None,
    }
}

/// Which of the two ioctls passed the region: v1 may use only the v1 flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ioctl {
    /// `KVM_SET_USER_MEMORY_REGION`.
    V1,
    /// `KVM_SET_USER_MEMORY_REGION2`.
    V2,
}

/// `struct kvm_userspace_memory_region2` as read from user space; v1 leaves the
/// v2 fields zero (C memsets the struct). `pad1` and `pad2` are not kept: C
/// never checks them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Region {
    /// Address space id (bits 16-31) and slot id (bits 0-15).
    pub(crate) slot: u32,
    /// `KVM_MEM_*` flags.
    pub(crate) flags: u32,
    /// First guest-physical address.
    pub(crate) guest_phys_addr: u64,
    /// Size in bytes; 0 deletes the slot.
    pub(crate) memory_size: u64,
    /// First user-space address backing the slot.
    pub(crate) userspace_addr: u64,
    /// v2: offset in the guest_memfd (only read with `KVM_MEM_GUEST_MEMFD`).
    pub(crate) guest_memfd_offset: u64,
    /// v2: the guest_memfd file descriptor (likewise).
    pub(crate) guest_memfd: u32,
}

/// Reads a native-endian `u32` at `off`.
fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut w = [0; 4];
    w.copy_from_slice(&b[off..off + 4]);
    u32::from_ne_bytes(w)
}

/// Reads a native-endian `u64` at `off`.
fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut w = [0; 8];
    w.copy_from_slice(&b[off..off + 8]);
    u64::from_ne_bytes(w)
}

impl Region {
    /// Decodes `struct kvm_userspace_memory_region` (native endianness).
    pub(crate) fn from_bytes_v1(b: &[u8; REGION_V1_SIZE]) -> Self {
        Region {
            slot: u32_at(b, 0),
            flags: u32_at(b, 4),
            guest_phys_addr: u64_at(b, 8),
            memory_size: u64_at(b, 16),
            userspace_addr: u64_at(b, 24),
            guest_memfd_offset: 0,
            guest_memfd: 0,
        }
    }

    /// Decodes `struct kvm_userspace_memory_region2`: the v1 fields at the same
    /// offsets (C asserts this), then `guest_memfd_offset` and `guest_memfd`.
    pub(crate) fn from_bytes_v2(b: &[u8; REGION_V2_SIZE]) -> Self {
        let mut v1 = [0; REGION_V1_SIZE];
        v1.copy_from_slice(&b[..REGION_V1_SIZE]);
        Region {
            guest_memfd_offset: u64_at(b, 32),
            guest_memfd: u32_at(b, 40),
            ..Self::from_bytes_v1(&v1)
        }
    }
}

/// One slot (C: `struct kvm_memory_slot`, the fields kvm-rs needs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct MemSlot {
    /// Slot id, below `KVM_USER_MEM_SLOTS`.
    pub(crate) id: u16,
    /// First guest frame.
    pub(crate) base_gfn: u64,
    /// Number of pages, 1 to `KVM_MEM_MAX_NR_PAGES`.
    pub(crate) npages: u64,
    /// `KVM_MEM_*` flags.
    pub(crate) flags: u32,
    /// User-space address of the first page, page-aligned.
    pub(crate) userspace_addr: u64,
}

impl MemSlot {
    /// One past the last gfn. Validation bounds `base_gfn + npages` by 2^52, so
    /// this does not overflow.
    pub(crate) fn end_gfn(&self) -> u64 {
        self.base_gfn + self.npages
    }

    /// Whether `gfn` lies in the slot (`try_get_memslot()`'s range test).
    pub(crate) fn contains(&self, gfn: u64) -> bool {
        gfn >= self.base_gfn && gfn < self.end_gfn()
    }

    /// `__gfn_to_hva_memslot()`: the user address of `gfn`, which must be in the
    /// slot. The slot's user range passed `access_ok()`, which never accepts a
    /// range that wraps, so the sum does not overflow; the arithmetic wraps as
    /// C's `unsigned long` anyway, so a caller bug gives a bad address, not a panic.
    pub(crate) fn hva_of(&self, gfn: u64) -> u64 {
        let offset = gfn.wrapping_sub(self.base_gfn);
        self.userspace_addr
            .wrapping_add(offset.wrapping_mul(PAGE_SIZE))
    }

    /// `KVM_MEM_READONLY`: guest writes must exit as MMIO.
    pub(crate) fn is_readonly(&self) -> bool {
        self.flags & KVM_MEM_READONLY != 0
    }

    /// `KVM_MEM_PCI_HOLE`: no memory; reads give all ones, writes exit.
    pub(crate) fn is_pci_hole(&self) -> bool {
        self.flags & KVM_MEM_PCI_HOLE != 0
    }

    /// `kvm_slot_dirty_track_enabled()` without guest_memfd: `KVM_MEM_LOG_DIRTY_PAGES`.
    pub(crate) fn logs_dirty_pages(&self) -> bool {
        self.flags & KVM_MEM_LOG_DIRTY_PAGES != 0
    }
}

/// Caller storage for the slots. Only [`commit`] may change it, so that the
/// invariant holds: sorted by `base_gfn`, disjoint, non-empty, ids unique.
pub(crate) trait SlotStore {
    /// The slots, sorted by `base_gfn`.
    fn slots(&self) -> &[MemSlot];
    /// The slots, mutably (for in-place reordering).
    fn slots_mut(&mut self) -> &mut [MemSlot];
    /// Appends a slot; `Err(ENOMEM)` (or the caller's errno) if storage fails.
    fn try_push(&mut self, slot: MemSlot) -> Result<(), Errno>;
    /// Removes and returns the last slot.
    fn pop(&mut self) -> Option<MemSlot>;
}

/// What a valid request changes (C: `enum kvm_mr_change`, plus the early return
/// of an unchanged slot), with the slots before and after, so that the caller
/// can zap nested page tables (old of `Delete`/`Move`) and update dirty logging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// `KVM_MR_CREATE`: a new slot.
    Create { new: MemSlot },
    /// `KVM_MR_DELETE`: the slot goes away.
    Delete { old: MemSlot },
    /// `KVM_MR_MOVE`: a new base gfn (flags may change too, except READONLY).
    Move { old: MemSlot, new: MemSlot },
    /// `KVM_MR_FLAGS_ONLY`: `KVM_MEM_LOG_DIRTY_PAGES` toggled.
    FlagsOnly { old: MemSlot, new: MemSlot },
    /// The slot already is as requested: C returns 0 at once.
    Nothing,
}

/// `__gfn_to_memslot()`: the slot holding `gfn`, by binary search over the
/// sorted slots (the last slot starting at or below `gfn`, if it reaches it).
pub(crate) fn find_by_gfn(slots: &[MemSlot], gfn: u64) -> Option<&MemSlot> {
    let after = slots.partition_point(|s| s.base_gfn <= gfn);
    slots[..after].last().filter(|s| s.contains(gfn))
}

/// `id_to_memslot()`: the slot with this id. A linear scan (C hashes the id):
/// only ioctls such as `KVM_GET_DIRTY_LOG` and updates look slots up by id.
pub(crate) fn find_by_id(slots: &[MemSlot], id: u16) -> Option<&MemSlot> {
    slots.iter().find(|s| s.id == id)
}

/// Index of `slot`, found by its `base_gfn` (unique by the invariant).
fn index_of(slots: &[MemSlot], slot: &MemSlot) -> Option<usize> {
    let i = slots
        .binary_search_by_key(&slot.base_gfn, |s| s.base_gfn)
        .ok()?;
    (slots[i].id == slot.id).then_some(i)
}

/// `kvm_check_memslot_overlap()`: whether a slot other than `id` intersects
/// `[start, end)`. End gfns are sorted too, so the first slot ending after
/// `start` is found by binary search; the one with `id` itself is skipped, so a
/// slot may move onto part of its own old range.
fn overlaps(slots: &[MemSlot], id: u16, start: u64, end: u64) -> bool {
    let first = slots.partition_point(|s| s.end_gfn() <= start);
    slots[first..]
        .iter()
        .take_while(|s| s.base_gfn < end)
        .any(|s| s.id != id)
}

/// `kvm_vm_ioctl()`'s `KVM_SET_USER_MEMORY_REGION(2)` case after the copy from
/// user space, through `kvm_vm_ioctl_set_memory_region()`,
/// `__kvm_set_memory_region()` and x86's `kvm_arch_prepare_memory_region()`:
/// every check, in C's order, with C's errno; nothing is changed. `max_gfn` is
/// `kvm_mmu_max_gfn()` (from the host MAXPHYADDR). `access_ok(addr, len)` is
/// called where C calls `access_ok()`; the module's closure must also reject a
/// tagged address (`addr != untagged_addr(addr)`), which C tests just before
/// with the same `EINVAL`. Pass the result to [`commit`] on the same store.
#[cfg(test)]
pub(crate) fn validate(
    slots: &[MemSlot],
    ioctl: Ioctl,
    mem: &Region,
    max_gfn: u64,
    access_ok: impl FnOnce(u64, u64) -> bool,
) -> Result<Change, Errno> {
    validate_with(slots, ioctl, mem, max_gfn, false, access_ok)
}

/// [`validate`], with `KVM_MEM_PCI_HOLE` accepted if `pci_hole` (the VM
/// enabled `KVM_CAP_KVMRS_PCI_HOLE`).
pub(crate) fn validate_with(
    slots: &[MemSlot],
    ioctl: Ioctl,
    mem: &Region,
    max_gfn: u64,
    pci_hole: bool,
    access_ok: impl FnOnce(u64, u64) -> bool,
) -> Result<Change, Errno> {
    // kvm_vm_ioctl(): v1 cannot use flags that need the v2 fields.
    if ioctl == Ioctl::V1 && mem.flags & !V1_FLAGS != 0 {
        return Err(errno::EINVAL);
    }
    if !pci_hole && mem.flags & KVM_MEM_PCI_HOLE != 0 {
        return Err(errno::EINVAL);
    }
    // kvm_vm_ioctl_set_memory_region(): the internal slot ids are not for users.
    // This looks at the low 16 bits only, before the address space is checked.
    let id = mem.slot as u16;
    if u32::from(id) >= KVM_USER_MEM_SLOTS {
        return Err(errno::EINVAL);
    }
    // check_memory_region_flags(): with no private memory GUEST_MEMFD is invalid.
    if mem.flags & !VALID_FLAGS != 0 {
        return Err(errno::EINVAL);
    }
    // __kvm_set_memory_region()'s sanity checks. They apply to deletions too.
    // (`memory_size != (unsigned long)memory_size` cannot fail on 64-bit.)
    let (size, gpa, uaddr) = (mem.memory_size, mem.guest_phys_addr, mem.userspace_addr);
    if size & (PAGE_SIZE - 1) != 0 || gpa & (PAGE_SIZE - 1) != 0 {
        return Err(errno::EINVAL);
    }
    if uaddr & (PAGE_SIZE - 1) != 0 || !access_ok(uaddr, size) {
        return Err(errno::EINVAL);
    }
    // A PCI hole has no memory to read-protect or to log, and no user
    // memory: its address must be 0.
    if mem.flags & KVM_MEM_PCI_HOLE != 0
        && (mem.flags & (KVM_MEM_READONLY | KVM_MEM_LOG_DIRTY_PAGES) != 0 || (size != 0 && uaddr != 0))
    {
        return Err(errno::EINVAL);
    }
    // The guest_memfd_offset checks need KVM_MEM_GUEST_MEMFD, rejected above.
    let as_id = mem.slot >> 16;
    if as_id >= NR_ADDRESS_SPACES || u32::from(id) >= KVM_MEM_SLOTS_NUM {
        return Err(errno::EINVAL);
    }
    // Ending exactly at 2^64 counts as wrapping too (the sum is 0).
    if gpa.wrapping_add(size) < gpa {
        return Err(errno::EINVAL);
    }
    let npages = size >> PAGE_SHIFT;
    if npages > KVM_MEM_MAX_NR_PAGES {
        return Err(errno::EINVAL);
    }

    let old = find_by_id(slots, id).copied();
    if size == 0 {
        // C also WARNs and returns EIO if the VM's page total is below the slot's
        // pages; kvm-rs does not keep that total, and it cannot happen.
        return old.map(|old| Change::Delete { old }).ok_or(errno::EINVAL);
    }
    // C checks that the total pages of all slots fit in an unsigned long before
    // a creation; 32764 slots of < 2^31 pages cannot overflow 64 bits.
    let (base_gfn, flags, userspace_addr) = (gpa >> PAGE_SHIFT, mem.flags, uaddr);
    let new = MemSlot {
        id,
        base_gfn,
        npages,
        flags,
        userspace_addr,
    };
    let change = match old {
        None => Change::Create { new },
        Some(old) => {
            // A slot cannot be resized, remapped or made (not) read-only or
            // (not) a PCI hole in place.
            if uaddr != old.userspace_addr
                || npages != old.npages
                || (mem.flags ^ old.flags) & (KVM_MEM_READONLY | KVM_MEM_PCI_HOLE) != 0
            {
                return Err(errno::EINVAL);
            }
            if new.base_gfn != old.base_gfn {
                Change::Move { old, new }
            } else if new.flags != old.flags {
                Change::FlagsOnly { old, new }
            } else {
                return Ok(Change::Nothing);
            }
        }
    };
    if let Change::Create { new } | Change::Move { new, .. } = change {
        if overlaps(slots, id, new.base_gfn, new.end_gfn()) {
            return Err(EEXIST);
        }
        // kvm_arch_prepare_memory_region(): the MMU cannot map frames beyond the
        // host MAXPHYADDR. (Its EINVAL for moves under KVMGT does not apply.)
        if new.end_gfn() - 1 > max_gfn {
            return Err(errno::EINVAL);
        }
    }
    Ok(change)
}

/// Moves the last slot down to its place in the `base_gfn` order.
fn sink_last(slots: &mut [MemSlot]) {
    if let Some((last, rest)) = slots.split_last() {
        let at = rest.partition_point(|s| s.base_gfn < last.base_gfn);
        slots[at..].rotate_right(1);
    }
}

/// `kvm_set_memslot()`'s bookkeeping: applies a change from [`validate`] (made
/// under the same lock), keeping the sort. Only `Create` allocates (one
/// `try_push`); on its failure the store is unchanged. `EIO` if the old slot is
/// gone, which means the caller broke the locking (C WARNs).
pub(crate) fn commit<S: SlotStore + ?Sized>(store: &mut S, change: &Change) -> Result<(), Errno> {
    match *change {
        Change::Nothing => {}
        Change::Create { new } => {
            store.try_push(new)?;
            sink_last(store.slots_mut());
        }
        Change::Delete { old } => {
            let i = index_of(store.slots(), &old).ok_or(errno::EIO)?;
            store.slots_mut()[i..].rotate_left(1);
            store.pop();
        }
        Change::Move { old, new } => {
            let i = index_of(store.slots(), &old).ok_or(errno::EIO)?;
            let slots = store.slots_mut();
            slots[i..].rotate_left(1);
            let n = slots.len();
            slots[n - 1] = new;
            sink_last(slots);
        }
        Change::FlagsOnly { old, new } => {
            let i = index_of(store.slots(), &old).ok_or(errno::EIO)?;
            store.slots_mut()[i] = new;
        }
    }
    Ok(())
}

/// `kvm_set_memory_region()`: [`validate`] then [`commit`], for callers with
/// nothing to do in between.
#[cfg(test)]
pub(crate) fn set<S: SlotStore + ?Sized>(
    store: &mut S,
    ioctl: Ioctl,
    mem: &Region,
    max_gfn: u64,
    access_ok: impl FnOnce(u64, u64) -> bool,
) -> Result<Change, Errno> {
    let change = validate(store.slots(), ioctl, mem, max_gfn, access_ok)?;
    commit(store, &change)?;
    Ok(change)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::vec::Vec;
    use Ioctl::{V1, V2};

    /// A store over `Vec` whose pushes fail beyond `cap` (to test ENOMEM).
    struct Store {
        v: Vec<MemSlot>,
        cap: usize,
    }

    impl SlotStore for Store {
        fn slots(&self) -> &[MemSlot] {
            &self.v
        }
        fn slots_mut(&mut self) -> &mut [MemSlot] {
            &mut self.v
        }
        fn try_push(&mut self, slot: MemSlot) -> Result<(), Errno> {
            if self.v.len() >= self.cap {
                return Err(errno::ENOMEM);
            }
            self.v.push(slot);
            Ok(())
        }
        fn pop(&mut self) -> Option<MemSlot> {
            self.v.pop()
        }
    }

    type Res = Result<Change, Errno>;
    const EINVAL: Res = Err(errno::EINVAL);
    const EXISTS: Res = Err(EEXIST);
    /// `kvm_mmu_max_gfn()` for MAXPHYADDR 52.
    const MAX_GFN: u64 = (1 << 40) - 1;
    const P: u64 = PAGE_SIZE;

    fn store() -> Store {
        let (v, cap) = (Vec::new(), usize::MAX);
        Store { v, cap }
    }

    fn region(slot: u32, flags: u32, gpa: u64, size: u64, uaddr: u64) -> Region {
        let mut r = Region::default();
        (r.slot, r.flags) = (slot, flags);
        (r.guest_phys_addr, r.memory_size, r.userspace_addr) = (gpa, size, uaddr);
        r
    }

    /// A distinct user address per slot id.
    fn uaddr(id: u32) -> u64 {
        0x7000_0000_0000 + u64::from(id) * 0x1_0000_0000
    }

    /// Sets through v2 with a permissive `access_ok`, then checks the invariant.
    fn set2(s: &mut Store, r: Region) -> Res {
        let res = set(s, V2, &r, MAX_GFN, |_, _| true);
        for w in s.v.windows(2) {
            assert!(w[0].end_gfn() <= w[1].base_gfn, "{w:?}");
        }
        assert!(s.v.iter().all(|s| s.npages > 0));
        res
    }

    /// Creates (or moves) slot `id` at `gpa` with `pages` pages.
    fn add(s: &mut Store, id: u32, gpa: u64, pages: u64) -> Res {
        set2(s, region(id, 0, gpa, pages * P, uaddr(id)))
    }

    /// Validates, also reporting whether `access_ok` was called.
    fn check(s: &Store, ioctl: Ioctl, r: Region) -> (Res, bool) {
        let called = Cell::new(false);
        let res = validate(&s.v, ioctl, &r, MAX_GFN, |_, _| {
            called.set(true);
            true
        });
        (res, called.get())
    }

    fn ids(s: &Store) -> Vec<u16> {
        s.v.iter().map(|s| s.id).collect()
    }

    #[test]
    fn constants_and_ioctls() {
        assert_eq!(KVM_USER_MEM_SLOTS, 32764);
        assert_eq!(KVM_SET_USER_MEMORY_REGION, 0x4020_ae46);
        // struct kvm_userspace_memory_region2 is 160 bytes (pad2[14] included).
        assert_eq!(KVM_SET_USER_MEMORY_REGION2, 0x40a0_ae49);
        assert_eq!(check_extension(KVM_CAP_NR_MEMSLOTS), Some(32764));
        assert_eq!(check_extension(KVM_CAP_USER_MEMORY2), Some(1));
        assert_eq!(check_extension(KVM_CAP_READONLY_MEM), Some(1));
        assert_eq!(check_extension(118), None);
    }

    #[test]
    fn decode_v1_and_v2() {
        let mut b = [0xffu8; REGION_V2_SIZE];
        b[0..4].copy_from_slice(&0x1_0005u32.to_ne_bytes());
        b[4..8].copy_from_slice(&3u32.to_ne_bytes());
        for (off, v) in [(8, 0x1000u64), (16, 0x2000), (24, 0x7000), (32, 0x9000)] {
            b[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        }
        b[40..44].copy_from_slice(&7u32.to_ne_bytes());
        let v1 = region(0x1_0005, 3, 0x1000, 0x2000, 0x7000);
        let mut v2 = v1;
        (v2.guest_memfd_offset, v2.guest_memfd) = (0x9000, 7);
        assert_eq!(Region::from_bytes_v2(&b), v2);
        let b1 = b[..REGION_V1_SIZE].try_into().unwrap();
        assert_eq!(Region::from_bytes_v1(b1), v1);
    }

    #[test]
    fn flags_v1_v2() {
        let s = store();
        for ioctl in [V1, V2] {
            for ok in [0, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY, KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY] {
                let res = check(&s, ioctl, region(0, ok, 0, P, P)).0;
                assert!(matches!(res, Ok(Change::Create { .. })));
            }
            // KVM_MEM_GUEST_MEMFD, alone or not, and unknown bits.
            for bad in [KVM_MEM_GUEST_MEMFD, KVM_MEM_GUEST_MEMFD | 1, 8, 1 << 16, 1 << 31] {
                assert_eq!(check(&s, ioctl, region(0, bad, 0, P, P)), (EINVAL, false));
            }
        }
        // Without GUEST_MEMFD the v2 fields are ignored.
        let mut r = region(0, 0, 0, P, P);
        (r.guest_memfd_offset, r.guest_memfd) = (1, 99);
        assert!(check(&s, V2, r).0.is_ok());
    }

    #[test]
    fn slot_ids_and_address_spaces() {
        let mut s = store();
        assert!(add(&mut s, KVM_USER_MEM_SLOTS - 1, 0, 1).is_ok());
        // Bad ids, even with a bad as_id, fail before the flags and access_ok.
        for bad in [KVM_USER_MEM_SLOTS, KVM_MEM_SLOTS_NUM, 0xffff, 0x1_ffff] {
            assert_eq!(check(&s, V2, region(bad, 4, P, P, P)), (EINVAL, false));
        }
        // as_id 1 (SMM in C x86) does not exist: rejected after access_ok.
        assert_eq!(check(&s, V2, region(1 << 16, 0, P, P, P)), (EINVAL, true));
        let r = region(0xffff_0001, 0, P, P, P);
        assert_eq!(check(&s, V1, r), (EINVAL, true));
    }

    #[test]
    fn alignment_and_access_ok() {
        let s = store();
        for (gpa, size, uaddr) in [(0, P + 1, P), (0x800, P, P), (0, P, P + 8)] {
            let r = region(0, 0, gpa, size, uaddr);
            assert_eq!(check(&s, V2, r), (EINVAL, false));
        }
        let args = Cell::new((0, 0));
        let r = region(0, 0, 0, 3 * P, 5 * P);
        let denied = validate(&s.v, V2, &r, MAX_GFN, |a, l| {
            args.set((a, l));
            false
        });
        assert_eq!((denied, args.get()), (EINVAL, (5 * P, 3 * P)));
    }

    #[test]
    fn gpa_wrap_npages_and_max_gfn() {
        let s = store();
        let v = |gpa, size, max| validate(&s.v, V2, &region(0, 0, gpa, size, P), max, |_, _| true);
        let top = 0u64.wrapping_sub(P);
        assert_eq!(v(top, 2 * P, u64::MAX), EINVAL);
        // Ending exactly at 2^64 wraps to 0: EINVAL too.
        assert_eq!(v(top, P, u64::MAX), EINVAL);
        assert!(v(top - P, P, u64::MAX).is_ok());
        assert!(v(0, KVM_MEM_MAX_NR_PAGES * P, u64::MAX).is_ok());
        assert_eq!(v(0, (KVM_MEM_MAX_NR_PAGES + 1) * P, u64::MAX), EINVAL);
        // kvm_mmu_max_gfn(): the last page may be max_gfn, not beyond.
        assert!(v(MAX_GFN << PAGE_SHIFT, P, MAX_GFN).is_ok());
        assert_eq!(v(MAX_GFN << PAGE_SHIFT, 2 * P, MAX_GFN), EINVAL);
        assert_eq!(v((MAX_GFN + 1) << PAGE_SHIFT, P, MAX_GFN), EINVAL);
    }

    #[test]
    fn create_and_delete() {
        let mut s = store();
        let (id, base_gfn, npages, flags, userspace_addr) = (3, 16, 4, 1, 0x10000);
        let new = MemSlot {
            id,
            base_gfn,
            npages,
            flags,
            userspace_addr,
        };
        let created = set2(&mut s, region(3, 1, 16 * P, 4 * P, 0x10000));
        assert_eq!(created, Ok(Change::Create { new }));
        assert_eq!(find_by_id(&s.v, 3), Some(&new));
        // Deleting needs only the id: gpa and uaddr are not compared with the
        // slot's, but they, the flags and the as_id are still checked.
        assert_eq!(set2(&mut s, region(3, 4, 0, 0, 0)), EINVAL);
        assert_eq!(set2(&mut s, region(3, 0, 0, 0, 0x5008)), EINVAL);
        assert_eq!(set2(&mut s, region(1 << 16 | 3, 0, 0, 0, 0)), EINVAL);
        let del = region(3, 0, 0, 0, 0x5000);
        let deleted = Ok(Change::Delete { old: new });
        assert_eq!(check(&s, V2, del), (deleted, true));
        assert_eq!(set2(&mut s, del), Ok(Change::Delete { old: new }));
        assert!(s.v.is_empty());
        assert_eq!(set2(&mut s, del), EINVAL);
        // The id may be reused anywhere afterwards.
        assert!(add(&mut s, 3, 0, 1).is_ok());
    }

    #[test]
    fn overlap_edges() {
        let mut s = store();
        add(&mut s, 0, 10 * P, 10).unwrap(); // gfns [10, 20)
        assert!(add(&mut s, 1, 0, 10).is_ok()); // [0, 10): adjacent below
        assert!(add(&mut s, 2, 20 * P, 5).is_ok()); // [20, 25): adjacent above
        for (gfn, pages) in [(9, 2), (19, 1), (24, 10), (12, 2), (5, 30), (10, 10)] {
            assert_eq!(add(&mut s, 7, gfn * P, pages), EXISTS, "{gfn} {pages}");
        }
        assert!(add(&mut s, 7, 25 * P, 1).is_ok());
        assert_eq!(ids(&s), [1, 0, 2, 7]);
    }

    #[test]
    fn moves() {
        let mut s = store();
        add(&mut s, 0, 0, 4).unwrap(); // [0, 4)
        add(&mut s, 1, 100 * P, 4).unwrap(); // [100, 104)
        let old = *find_by_id(&s.v, 0).unwrap();
        // Onto part of its own range: fine.
        let new = MemSlot { base_gfn: 2, ..old };
        assert_eq!(add(&mut s, 0, 2 * P, 4), Ok(Change::Move { old, new }));
        // Past the other slot, then back: the order follows.
        assert!(add(&mut s, 0, 200 * P, 4).is_ok());
        assert_eq!(ids(&s), [1, 0]);
        assert_eq!(add(&mut s, 0, 97 * P, 4), EXISTS);
        assert_eq!(add(&mut s, 0, 103 * P, 4), EXISTS);
        assert!(add(&mut s, 0, 96 * P, 4).is_ok());
        assert_eq!(ids(&s), [0, 1]);
        // Resizing, remapping or READONLY changes: EINVAL, before the overlap check.
        assert_eq!(add(&mut s, 0, 100 * P, 5), EINVAL);
        let remap = region(0, 0, 100 * P, 4 * P, uaddr(0) + P);
        assert_eq!(set2(&mut s, remap), EINVAL);
        assert_eq!(set2(&mut s, region(0, 2, 0, 4 * P, uaddr(0))), EINVAL);
        // A move may toggle dirty logging too.
        let old = *find_by_id(&s.v, 0).unwrap();
        let mut new = old;
        (new.base_gfn, new.flags) = (0, KVM_MEM_LOG_DIRTY_PAGES);
        let moved = set2(&mut s, region(0, 1, 0, 4 * P, uaddr(0)));
        assert_eq!(moved, Ok(Change::Move { old, new }));
        // Moving beyond max_gfn fails and leaves the slot.
        let r = region(0, 1, (MAX_GFN - 2) << PAGE_SHIFT, 4 * P, uaddr(0));
        assert_eq!(set2(&mut s, r), EINVAL);
        assert_eq!(find_by_id(&s.v, 0), Some(&new));
    }

    #[test]
    fn flags_only_and_nothing() {
        let mut s = store();
        let r = region(5, KVM_MEM_READONLY, 8 * P, 2 * P, uaddr(5));
        assert!(matches!(set2(&mut s, r), Ok(Change::Create { .. })));
        let old = *find_by_id(&s.v, 5).unwrap();
        assert!(old.is_readonly() && !old.logs_dirty_pages());
        assert_eq!(set2(&mut s, r), Ok(Change::Nothing));
        let new = MemSlot { flags: 3, ..old };
        let r = region(5, KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY, 8 * P, 2 * P, uaddr(5));
        assert_eq!(check(&s, V1, r).0, Ok(Change::FlagsOnly { old, new }));
        assert_eq!(set2(&mut s, r), Ok(Change::FlagsOnly { old, new }));
        assert!(find_by_id(&s.v, 5).unwrap().logs_dirty_pages());
        // READONLY may not be dropped, nor added.
        assert_eq!(set2(&mut s, region(5, 1, 8 * P, 2 * P, uaddr(5))), EINVAL);
        add(&mut s, 6, 0, 1).unwrap();
        assert_eq!(set2(&mut s, region(6, 2, 0, P, uaddr(6))), EINVAL);
    }

    #[test]
    fn enomem_and_stale_change() {
        let mut s = Store { cap: 1, ..store() };
        add(&mut s, 0, 0, 1).unwrap();
        assert_eq!(add(&mut s, 1, P, 1), Err(errno::ENOMEM));
        assert_eq!(ids(&s), [0]);
        // Changes of existing slots need no storage.
        assert!(add(&mut s, 0, 8 * P, 1).is_ok());
        assert!(set2(&mut s, region(0, 0, 0, 0, 0)).is_ok());
        let old = MemSlot::default();
        assert_eq!(commit(&mut s, &Change::Delete { old }), Err(errno::EIO));
    }

    #[test]
    fn lookups_at_edges() {
        let mut s = store();
        add(&mut s, 1, 0x10 * P, 0x10).unwrap(); // [0x10, 0x20)
        add(&mut s, 2, 0x20 * P, 1).unwrap(); // [0x20, 0x21)
        add(&mut s, 3, 0x30 * P, 2).unwrap(); // [0x30, 0x32)
        let id = |gfn| find_by_gfn(&s.v, gfn).map(|s| s.id);
        let hits = [(0x10, 1), (0x1f, 1), (0x20, 2), (0x30, 3), (0x31, 3)];
        for (gfn, slot) in hits {
            assert_eq!(id(gfn), Some(slot), "gfn {gfn:#x}");
        }
        for gfn in [0, 0xf, 0x21, 0x2f, 0x32, u64::MAX] {
            assert_eq!(id(gfn), None, "gfn {gfn:#x}");
        }
        let s1 = find_by_id(&s.v, 1).unwrap();
        assert_eq!(s1.hva_of(0x10), uaddr(1));
        assert_eq!(s1.hva_of(0x1f), uaddr(1) + 0xf * P);
        assert_eq!(find_by_id(&s.v, 4), None);
        assert_eq!(find_by_gfn(&[], 0), None);
    }

    #[test]
    fn all_user_slots() {
        let mut s = store();
        let n = KVM_USER_MEM_SLOTS;
        let set_fast = |s: &mut Store, r: Region| set(s, V2, &r, MAX_GFN, |_, _| true);
        // Ids and gfns in scrambled orders (both primes are coprime with n);
        // slot k covers gfn 2k only.
        for i in 0..n {
            let (k, id) = ((i * 7919) % n, (i * 104_729) % n);
            set_fast(&mut s, region(id, 0, 2 * u64::from(k) * P, P, uaddr(id))).unwrap();
        }
        assert_eq!(s.v.len(), n as usize);
        for k in 0..u64::from(n) {
            let slot = find_by_gfn(&s.v, 2 * k).unwrap();
            assert_eq!(slot.base_gfn, 2 * k);
            assert_eq!(slot.hva_of(2 * k), uaddr(u32::from(slot.id)));
            assert_eq!(find_by_gfn(&s.v, 2 * k + 1), None);
        }
        // Growing slot 0 is EINVAL before any overlap check; once it is gone,
        // the same request overlaps another slot by one page.
        assert_eq!(add(&mut s, 0, P, 2), EINVAL);
        set_fast(&mut s, region(0, 0, 0, 0, 0)).unwrap();
        assert_eq!(add(&mut s, 0, P, 2), EXISTS);
        // Move the first slot to the end, then delete them all.
        let first = s.v[0];
        assert!(add(&mut s, u32::from(first.id), u64::from(2 * n) * P, 1).is_ok());
        assert_eq!(s.v.last().unwrap().id, first.id);
        for id in 1..n {
            assert!(set_fast(&mut s, region(id, 0, 0, 0, 0)).is_ok());
        }
        assert!(s.v.is_empty());
    }

    #[test]
    fn random_ops_keep_the_order() {
        // A fixed xorshift sequence of creates, moves, dirty-logging toggles and
        // deletes (set2 checks the order); gfn lookups match a linear scan.
        let (mut s, mut x) = (store(), 0x2545_f491_4f6c_dd1du64);
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let (id, gfn, flags) = ((x % 64) as u32, (x >> 8) % 512, (x >> 30) as u32 & 1);
            // One request in eight deletes; each id keeps its size, so moves happen.
            let size = (1 + u64::from(id % 4)) * P * u64::from((x >> 40) % 8 != 0);
            let res = set2(&mut s, region(id, flags, gfn * P, size, uaddr(id)));
            assert!(matches!(res, Ok(_) | EINVAL | EXISTS));
            let g = (x >> 45) % 520;
            assert_eq!(find_by_gfn(&s.v, g), s.v.iter().find(|m| m.contains(g)));
        }
        assert!(s.v.len() > 16);
    }

    /// [`set`] with the PCI hole enabled.
    fn set_hole(s: &mut Store, ioctl: Ioctl, r: &Region, max: u64, ok: impl FnOnce(u64, u64) -> bool) -> Res {
        let change = validate_with(&s.v, ioctl, r, max, true, ok)?;
        commit(s, &change)?;
        Ok(change)
    }

    #[test]
    fn pci_hole_slots() {
        let mut store = store();
        let ok = |_: u64, _: u64| true;
        // Not enabled: an unknown flag, as for the C KVM.
        let r = region(1, KVM_MEM_PCI_HOLE, 16 * P, 4 * P, 0);
        assert_eq!(set(&mut store, V1, &r, MAX_GFN, ok), Err(errno::EINVAL));
        assert_eq!(set(&mut store, V2, &r, MAX_GFN, ok), Err(errno::EINVAL));
        // A hole: no user memory (address 0), any size.
        let r = region(1, KVM_MEM_PCI_HOLE, 16 * P, 4 * P, 0);
        assert!(matches!(set_hole(&mut store, V1, &r, MAX_GFN, ok), Ok(Change::Create { .. })));
        assert!(store.v[0].is_pci_hole());
        // Not with user memory, not read-only, not logged.
        for (flags, ua) in [
            (KVM_MEM_PCI_HOLE, uaddr(2)),
            (KVM_MEM_PCI_HOLE | KVM_MEM_READONLY, 0),
            (KVM_MEM_PCI_HOLE | KVM_MEM_LOG_DIRTY_PAGES, 0),
        ] {
            let r = region(2, flags, 64 * P, P, ua);
            assert_eq!(set_hole(&mut store, V1, &r, MAX_GFN, ok), Err(errno::EINVAL), "{flags:#x}");
        }
        // The flag cannot be toggled on an existing slot; moving is fine.
        let r = region(1, 0, 16 * P, 4 * P, 0);
        assert_eq!(set_hole(&mut store, V1, &r, MAX_GFN, ok), Err(errno::EINVAL));
        let r = region(1, KVM_MEM_PCI_HOLE, 32 * P, 4 * P, 0);
        assert!(matches!(set_hole(&mut store, V1, &r, MAX_GFN, ok), Ok(Change::Move { .. })));
        // Deleting takes size 0, like any slot.
        let r = region(1, KVM_MEM_PCI_HOLE, 32 * P, 0, 0);
        assert!(matches!(set_hole(&mut store, V1, &r, MAX_GFN, ok), Ok(Change::Delete { .. })));
        assert_eq!(check_extension(KVM_CAP_KVMRS_PCI_HOLE), Some(1));
    }
}
