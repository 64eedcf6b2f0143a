// SPDX-License-Identifier: GPL-2.0

//! The two-dimensional-paging MMU (`arch/x86/kvm/mmu/tdp_mmu.c`): the nested
//! (SVM NPT) or extended (VMX EPT) page table of a VM, built on demand from
//! the memory slots.
//!
//! Design, and how it differs from the C KVM:
//!
//! - Guest memory is pinned, not tracked by MMU notifiers. A fault pins the
//!   user page behind the guest frame (`FOLL_LONGTERM`) and maps its physical
//!   address; the pin is owned by the leaf entry and released when the entry
//!   is zapped (slot deleted or moved, VM destroyed). So the host can never
//!   free or migrate a page the guest can still reach, but it cannot reclaim,
//!   swap, migrate or merge guest memory either, and a host `munmap()` or
//!   `madvise(MADV_DONTNEED)` of slot memory is not seen by the guest until the
//!   slot changes (the guest keeps the old page). KSM, NUMA balancing and
//!   swap do not apply to pinned memory.
//! - 4 KiB leaves only; one table per VM shared by all vCPUs.
//! - Every present leaf holds exactly one pin; a zapped entry's pin is handed
//!   back to the caller, which releases it only after every vCPU left guest
//!   mode and will flush its TLB (the remote-flush protocol of `x86.rs`), so
//!   the hardware never reaches a page after it is unpinned. Intermediate
//!   tables are freed only with the VM, after every vCPU is gone.

use crate::x86::backend::Backend;
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::{hwmem::HwBox, prelude::*, user_mem::PinnedPage};

/// Entries per table.
const ENTRIES: usize = 512;

/// One page of the table and what its entries own.
struct Table {
    /// What the hardware walks.
    hw: HwBox<[AtomicU64; ENTRIES]>,
    /// Non-leaf tables: the child of each present entry. Leaf tables: empty.
    children: KVec<Option<KBox<Table>>>,
    /// Leaf tables: what backs each present entry. Non-leaf: empty.
    pins: KVec<Option<Leaf>>,
}

/// What a present leaf maps.
enum Leaf {
    /// A pinned user page, unpinned when the entry goes.
    User(PinnedPage),
    /// The VM's all-ones page (a PCI-hole slot), owned elsewhere.
    Ones,
}

impl Table {
    fn new(leaf: bool) -> Result<KBox<Self>> {
        let hw = HwBox::new_zeroed(GFP_KERNEL_ACCOUNT)?;
        let mut children = KVec::new();
        let mut pins = KVec::new();
        if leaf {
            pins.reserve(ENTRIES, GFP_KERNEL_ACCOUNT)?;
            for _ in 0..ENTRIES {
                pins.push(None, GFP_KERNEL_ACCOUNT)?;
            }
        } else {
            children.reserve(ENTRIES, GFP_KERNEL_ACCOUNT)?;
            for _ in 0..ENTRIES {
                children.push(None, GFP_KERNEL_ACCOUNT)?;
            }
        }
        Ok(KBox::new(Table { hw, children, pins }, GFP_KERNEL_ACCOUNT)?)
    }
}

/// A VM's nested/extended page table.
pub(crate) struct Tdp {
    root: KBox<Table>,
    levels: u32,
    /// Number of pages mapped (pins held).
    mapped: u64,
}

/// The index of `gfn` in a table of `level` (1 = leaf).
fn index(gfn: u64, level: u32) -> usize {
    ((gfn >> (9 * (level - 1))) & 0x1ff) as usize
}

impl Tdp {
    /// An empty table of `levels` levels (4 for 48-bit guest-physical addresses).
    pub(crate) fn new(levels: u32) -> Result<Self> {
        Ok(Self { root: Table::new(levels == 1)?, levels, mapped: 0 })
    }

    /// The physical address of the root table (nCR3 / EPTP).
    pub(crate) fn root_pa(&self) -> u64 {
        self.root.hw.phys_addr()
    }

    /// The largest frame number the table covers.
    pub(crate) fn max_gfn(&self) -> u64 {
        (1u64 << (9 * self.levels)) - 1
    }

    /// Maps `gfn` to the pinned page, writable or not, taking the pin.
    /// Returns the pin of a mapping it replaced, which the caller releases
    /// only after a remote TLB flush.
    pub(crate) fn map<B: Backend>(
        &mut self,
        b: &B,
        gfn: u64,
        page: PinnedPage,
        writable: bool,
    ) -> Result<Option<PinnedPage>> {
        let pa = page.phys_addr();
        self.map_leaf(b, gfn, pa, Leaf::User(page), writable)
    }

    /// Maps `gfn` read-only to the all-ones page at `ones_pa` (a PCI-hole
    /// slot: reads return all ones with no exit, writes fault). The page must
    /// outlive the table. Returns the pin of a mapping it replaced.
    pub(crate) fn map_ones<B: Backend>(&mut self, b: &B, gfn: u64, ones_pa: u64) -> Result<Option<PinnedPage>> {
        self.map_leaf(b, gfn, ones_pa, Leaf::Ones, false)
    }

    fn map_leaf<B: Backend>(
        &mut self,
        b: &B,
        gfn: u64,
        pa: u64,
        leaf: Leaf,
        writable: bool,
    ) -> Result<Option<PinnedPage>> {
        if gfn > self.max_gfn() {
            return Err(EINVAL);
        }
        let mut t: &mut Table = &mut self.root;
        let mut level = self.levels;
        while level > 1 {
            let i = index(gfn, level);
            if t.children[i].is_none() {
                let child = Table::new(level - 1 == 1)?;
                let pa = child.hw.phys_addr();
                t.children[i] = Some(child);
                // Release: the zeroed child is visible before the entry
                // that lets the hardware walk into it.
                t.hw[i].store(b.tdp_table(pa), Ordering::Release);
            }
            // The child exists: it was found or installed just above.
            t = match t.children[i].as_deref_mut() {
                Some(c) => c,
                None => return Err(EINVAL),
            };
            level -= 1;
        }
        let i = index(gfn, 1);
        let pte = b.tdp_leaf(pa, writable);
        // The same page again (a write to a write-protected mapping): only
        // the permission changes, which needs no TLB flush; the new pin is
        // released at once since the old one holds the page.
        if let (Some(Leaf::User(cur)), Leaf::User(new)) = (&t.pins[i], &leaf) {
            if cur.pfn() == new.pfn() {
                t.hw[i].store(pte, Ordering::Release);
                return Ok(None);
            }
        }
        let old = t.pins[i].replace(leaf);
        t.hw[i].store(pte, Ordering::Release);
        if old.is_none() {
            self.mapped += 1;
        }
        Ok(match old {
            Some(Leaf::User(p)) => Some(p),
            Some(Leaf::Ones) | None => None,
        })
    }

    /// Gives write access back to the leaf of `gfn` if it maps a page pinned
    /// for writing (a write to a page write-protected for dirty logging: C's
    /// `fast_page_fault()`); no new pin, no TLB flush (a stale read-only
    /// translation only faults again). Returns whether it did.
    pub(crate) fn make_writable<B: Backend>(&mut self, b: &B, gfn: u64) -> bool {
        if gfn > self.max_gfn() {
            return false;
        }
        let mut t: &Table = &self.root;
        let mut level = self.levels;
        while level > 1 {
            match t.children[index(gfn, level)].as_deref() {
                Some(c) => t = c,
                None => return false,
            }
            level -= 1;
        }
        let i = index(gfn, 1);
        match &t.pins[i] {
            Some(Leaf::User(p)) if p.writable() => {
                t.hw[i].store(b.tdp_leaf(p.phys_addr(), true), Ordering::Release);
                true
            }
            _ => false,
        }
    }

    /// Removes write access from the leaf of `gfn`, if mapped writable.
    /// Returns whether it changed (the caller flushes remote TLBs).
    pub(crate) fn write_protect(&mut self, gfn: u64, wrprot: impl Fn(u64) -> u64) -> bool {
        if gfn > self.max_gfn() {
            return false;
        }
        let mut t: &Table = &self.root;
        let mut level = self.levels;
        while level > 1 {
            match t.children[index(gfn, level)].as_deref() {
                Some(c) => t = c,
                None => return false,
            }
            level -= 1;
        }
        let i = index(gfn, 1);
        if t.pins[i].is_none() {
            return false;
        }
        let pte = t.hw[i].load(Ordering::Relaxed);
        let new = wrprot(pte);
        if new == pte {
            return false;
        }
        t.hw[i].store(new, Ordering::Release);
        true
    }

    /// Unmaps frames from `start` up to `end`, appending the released pins to
    /// `out` (released by the caller after a remote TLB flush), and stops once
    /// `out` holds `batch` pins. Returns the frame to continue from, or `None`
    /// when the range is done. `ENOMEM` if `out` cannot grow (nothing is lost:
    /// the entry stays mapped).
    pub(crate) fn zap_range(
        &mut self,
        start: u64,
        end: u64,
        out: &mut KVec<PinnedPage>,
        batch: usize,
    ) -> Result<Option<u64>> {
        let end = end.min(self.max_gfn() + 1);
        let levels = self.levels;
        let mut mapped = self.mapped;
        let r = zap(&mut self.root, levels, 0, start, end, out, batch, &mut mapped);
        self.mapped = mapped;
        r
    }
}

/// Zaps `[start, end)` within `t`, a table of `level` whose first frame is
/// `base`, until `out` holds `batch` pins; returns where to resume.
#[allow(clippy::too_many_arguments)]
fn zap(
    t: &mut Table,
    level: u32,
    base: u64,
    start: u64,
    end: u64,
    out: &mut KVec<PinnedPage>,
    batch: usize,
    mapped: &mut u64,
) -> Result<Option<u64>> {
    let span = 1u64 << (9 * (level - 1));
    for i in 0..ENTRIES {
        let lo = base + i as u64 * span;
        let hi = lo + span;
        if hi <= start || lo >= end {
            continue;
        }
        if level == 1 {
            if t.pins[i].is_some() {
                if out.len() >= batch {
                    return Ok(Some(lo));
                }
                // Room first: a pin must never be dropped here, while the
                // hardware may still hold its translation.
                out.reserve(1, GFP_KERNEL)?;
                if let Some(leaf) = t.pins[i].take() {
                    t.hw[i].store(0, Ordering::Release);
                    *mapped -= 1;
                    if let Leaf::User(pin) = leaf {
                        out.push(pin, GFP_KERNEL)?;
                    }
                }
            }
        } else if let Some(child) = t.children[i].as_deref_mut() {
            if let Some(resume) = zap(child, level - 1, lo, start.max(lo), end, out, batch, mapped)? {
                return Ok(Some(resume));
            }
        }
    }
    Ok(None)
}
