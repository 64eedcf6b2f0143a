// SPDX-License-Identifier: GPL-2.0

//! The per-CPU lists of loaded VMCSs (`loaded_vmcss_on_cpu` and
//! `struct loaded_vmcs` in `arch/x86/kvm/vmx/vmx.c`).
//!
//! A VMCS that a CPU has loaded (VMPTRLD) stays *active* on that CPU, its
//! data possibly cached inside the CPU, until VMCLEAR runs on that same CPU.
//! Before a VMCS can be loaded on another CPU, freed, or before the CPU
//! leaves VMX operation (CPU offline, module unload, crash/kexec), it must be
//! VMCLEARed where it is active. So every CPU keeps a list of the VMCSs
//! active on it.
//!
//! The list must stay walkable from an NMI: the crash path (kexec, or
//! `panic()` stopping the other CPUs) runs the emergency callback in NMI
//! context on every CPU, possibly in the middle of that CPU adding or
//! removing an entry, and it must VMCLEAR every VMCS in use there, without
//! locks. The rules that make that hold:
//!
//! - A CPU's list is changed only by that CPU, with interrupts disabled; so
//!   the only code that can observe it half-updated is an NMI handler on the
//!   same CPU, which sees the updates in program order.
//! - Walkers only follow `next` links from the head. Adding writes the new
//!   entry's `next` first and publishes the entry last (one store to the
//!   head); removing unlinks the entry with one store (the predecessor's
//!   `next`, or the head) and leaves the removed entry's own `next` alone.
//!   At any point between two stores the forward chain is therefore either
//!   the old list or the new list: never a cycle, never a lost tail.
//! - A VMCS is added before the VMPTRLD that makes it active, and removed
//!   after the VMCLEAR that makes it inactive. So the one entry a walk may
//!   see or miss mid-update is never in use.
//! - Walks are bounded by the number of slots, so even a corrupted list
//!   could not hang the crash path.
//!
//! `tests` below interrupt every update at every step with a walk and check
//! all of this.
//!
//! Entries are slots of one table, linked by index (the table is allocated
//! once, at module load, so the crash path never follows a pointer to freed
//! memory and this file needs no `unsafe`). Core-only (host-tested).

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// No slot / no CPU.
pub(crate) const NIL: u32 = u32::MAX;

/// One VMCS's entry.
pub(crate) struct Slot {
    /// Physical address of the VMCS; 0 while the slot is free.
    pa: AtomicU64,
    /// The next entry on the same CPU's list.
    next: AtomicU32,
    /// The previous entry (only the owning CPU reads it).
    prev: AtomicU32,
    /// The CPU whose list holds the entry (where the VMCS is active), or [`NIL`].
    cpu: AtomicU32,
    /// The slot belongs to a VMCS.
    used: AtomicBool,
}

impl Slot {
    /// A free slot.
    pub(crate) const fn new() -> Self {
        Self {
            pa: AtomicU64::new(0),
            next: AtomicU32::new(NIL),
            prev: AtomicU32::new(NIL),
            cpu: AtomicU32::new(NIL),
            used: AtomicBool::new(false),
        }
    }
}

impl Default for Slot {
    fn default() -> Self {
        Self::new()
    }
}

/// A point in a list update where an NMI can arrive. The kernel build uses
/// [`NoNmi`]; the tests run a walk there.
pub(crate) trait NmiPoint {
    /// Called between any two stores of an update.
    fn at(&mut self, lists: &Lists<'_>);
}

/// No interruption (the kernel's case: a real NMI needs no hook).
pub(crate) struct NoNmi;

impl NmiPoint for NoNmi {
    #[inline(always)]
    fn at(&mut self, _lists: &Lists<'_>) {}
}

/// The table of slots and the per-CPU list heads.
#[derive(Clone, Copy)]
pub(crate) struct Lists<'a> {
    slots: &'a [Slot],
    heads: &'a [AtomicU32],
}

impl<'a> Lists<'a> {
    /// A view of `slots` (all free at first) and `heads` (one per CPU, all [`NIL`] at first).
    pub(crate) fn new(slots: &'a [Slot], heads: &'a [AtomicU32]) -> Self {
        Self { slots, heads }
    }

    fn slot(&self, i: u32) -> Option<&'a Slot> {
        self.slots.get(i as usize)
    }

    fn head(&self, cpu: u32) -> Option<&'a AtomicU32> {
        self.heads.get(cpu as usize)
    }

    /// Takes a free slot for the VMCS at `pa` (non-zero); `None` if all are
    /// in use. Any CPU, any context.
    pub(crate) fn alloc(&self, pa: u64) -> Option<u32> {
        for (i, s) in self.slots.iter().enumerate() {
            if s.used.compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                s.next.store(NIL, Ordering::Relaxed);
                s.prev.store(NIL, Ordering::Relaxed);
                s.cpu.store(NIL, Ordering::Relaxed);
                s.pa.store(pa, Ordering::Release);
                return u32::try_from(i).ok();
            }
        }
        None
    }

    /// Frees slot `i`, which must not be on any list (its VMCS was cleared).
    /// Returns `false`, leaving the slot alone, if it still is.
    pub(crate) fn free(&self, i: u32) -> bool {
        let Some(s) = self.slot(i) else { return false };
        if s.cpu.load(Ordering::Acquire) != NIL {
            return false;
        }
        s.pa.store(0, Ordering::Relaxed);
        s.used.store(false, Ordering::Release);
        true
    }

    /// The CPU whose list holds slot `i` (where its VMCS is active), or [`NIL`].
    /// Pairs with the release in [`Lists::remove`]: once this reads `NIL`
    /// the removal from the old CPU's list is complete, and the slot may go
    /// on another CPU's list.
    pub(crate) fn cpu_of(&self, i: u32) -> u32 {
        self.slot(i).map_or(NIL, |s| s.cpu.load(Ordering::Acquire))
    }

    /// Puts slot `i` at the head of `cpu`'s list. Runs on `cpu` with
    /// interrupts disabled, before the VMPTRLD; the slot is on no list.
    pub(crate) fn add(&self, cpu: u32, i: u32, nmi: &mut impl NmiPoint) {
        let (Some(s), Some(head)) = (self.slot(i), self.head(cpu)) else { return };
        let first = head.load(Ordering::Relaxed);
        nmi.at(self);
        // 1. The new entry points at the current list: not visible yet.
        s.next.store(first, Ordering::Relaxed);
        nmi.at(self);
        s.prev.store(NIL, Ordering::Relaxed);
        nmi.at(self);
        // 2. Back link of the old first entry (walkers do not use it).
        if let Some(f) = self.slot(first) {
            f.prev.store(i, Ordering::Relaxed);
            nmi.at(self);
        }
        // 3. Publish: one store makes the entry, already pointing at the
        //    rest of the list, reachable. Release orders the stores above
        //    before it (for the compiler: an NMI sees program order).
        head.store(i, Ordering::Release);
        nmi.at(self);
        // 4. Other CPUs may now see where the VMCS is active.
        s.cpu.store(cpu, Ordering::Release);
        nmi.at(self);
    }

    /// Takes slot `i` off `cpu`'s list. Runs on `cpu` with interrupts
    /// disabled, after the VMCLEAR.
    pub(crate) fn remove(&self, cpu: u32, i: u32, nmi: &mut impl NmiPoint) {
        let (Some(s), Some(head)) = (self.slot(i), self.head(cpu)) else { return };
        if s.cpu.load(Ordering::Relaxed) != cpu {
            return;
        }
        let next = s.next.load(Ordering::Relaxed);
        let prev = s.prev.load(Ordering::Relaxed);
        nmi.at(self);
        // 1. Unlink with one store: walkers now skip the entry. Its own
        //    `next` stays, so the chain behind it is intact either way.
        match self.slot(prev) {
            Some(p) => p.next.store(next, Ordering::Release),
            None => head.store(next, Ordering::Release),
        }
        nmi.at(self);
        // 2. Back link of the successor.
        if let Some(n) = self.slot(next) {
            n.prev.store(prev, Ordering::Relaxed);
            nmi.at(self);
        }
        // 3. Only now may another CPU add the slot to its list (C: the
        //    `smp_wmb()` before `loaded_vmcs->cpu = -1`).
        s.cpu.store(NIL, Ordering::Release);
        nmi.at(self);
    }

    /// Calls `f` with the physical address of every VMCS on `cpu`'s list.
    /// Lock-free and bounded: safe from NMI context on `cpu` (the crash path).
    pub(crate) fn walk(&self, cpu: u32, mut f: impl FnMut(u64)) {
        let Some(head) = self.head(cpu) else { return };
        let mut i = head.load(Ordering::Acquire);
        let mut left = self.slots.len();
        while let Some(s) = self.slot(i) {
            if left == 0 {
                break;
            }
            left -= 1;
            let pa = s.pa.load(Ordering::Relaxed);
            if pa != 0 {
                f(pa);
            }
            i = s.next.load(Ordering::Acquire);
        }
    }

    /// Empties `cpu`'s list: for each entry, `f` (VMCLEAR) runs on the VMCS
    /// and then the entry is removed (CPU offline, module unload). Runs on
    /// `cpu` with interrupts disabled.
    pub(crate) fn drain(&self, cpu: u32, mut f: impl FnMut(u64), nmi: &mut impl NmiPoint) {
        let Some(head) = self.head(cpu) else { return };
        let mut left = self.slots.len();
        loop {
            let i = head.load(Ordering::Acquire);
            let Some(s) = self.slot(i) else { break };
            if left == 0 {
                break;
            }
            left -= 1;
            let pa = s.pa.load(Ordering::Relaxed);
            if pa != 0 {
                f(pa);
            }
            nmi.at(self);
            self.remove(cpu, i, nmi);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    const CPUS: usize = 3;

    struct Table {
        slots: Vec<Slot>,
        heads: Vec<AtomicU32>,
    }

    impl Table {
        fn new(n: usize) -> Self {
            Self {
                slots: (0..n).map(|_| Slot::new()).collect(),
                heads: (0..CPUS).map(|_| AtomicU32::new(NIL)).collect(),
            }
        }
        fn lists(&self) -> Lists<'_> {
            Lists::new(&self.slots, &self.heads)
        }
    }

    fn pa(i: u32) -> u64 {
        0x10_0000 + u64::from(i) * 0x1000
    }

    fn walk_vec(l: &Lists<'_>, cpu: u32) -> Vec<u64> {
        let mut v = Vec::new();
        l.walk(cpu, |p| v.push(p));
        v
    }

    /// The NMI of the tests: at the `k`-th point of an update it walks the
    /// list (as the crash path would) and checks that every VMCS in use
    /// is there exactly once and nothing else appears, except `changing`
    /// (the entry being added or removed, not in use), which may appear at
    /// most once.
    struct CheckingNmi {
        cpu: u32,
        at: usize,
        seen: usize,
        in_use: Vec<u64>,
        changing: u64,
        fired: bool,
    }

    impl NmiPoint for CheckingNmi {
        fn at(&mut self, l: &Lists<'_>) {
            if self.seen == self.at {
                self.fired = true;
                let got = walk_vec(l, self.cpu);
                for p in &self.in_use {
                    assert_eq!(got.iter().filter(|g| *g == p).count(), 1, "VMCS {p:#x} in use missed at step {}", self.at);
                }
                assert!(got.iter().filter(|g| **g == self.changing).count() <= 1);
                for g in &got {
                    assert!(*g == self.changing || self.in_use.contains(g), "stray {g:#x}");
                }
            }
            self.seen += 1;
        }
    }

    /// Counts the NMI points of an update.
    struct Counter(usize);
    impl NmiPoint for Counter {
        fn at(&mut self, _: &Lists<'_>) {
            self.0 += 1;
        }
    }

    #[derive(Clone, Copy, Debug)]
    enum Op {
        Add(u32, u32),
        Remove(u32, u32),
    }

    /// Builds the lists `setup` describes (slot -> cpu, in order of adding),
    /// then runs `op` interrupted at every point in turn, each time on a
    /// fresh copy, checking the walk there and the final lists.
    fn interrupt_everywhere(nslots: usize, setup: &[(u32, u32)], op: Op) {
        let build = || {
            let t = Table::new(nslots);
            let l = t.lists();
            for i in 0..nslots as u32 {
                assert_eq!(l.alloc(pa(i)), Some(i));
            }
            for &(i, cpu) in setup {
                l.add(cpu, i, &mut NoNmi);
            }
            t
        };
        let t = build();
        let mut c = Counter(0);
        let (cpu, changing) = match op {
            Op::Add(cpu, i) => {
                t.lists().add(cpu, i, &mut c);
                (cpu, i)
            }
            Op::Remove(cpu, i) => {
                t.lists().remove(cpu, i, &mut c);
                (cpu, i)
            }
        };
        let expect_after = walk_vec(&t.lists(), cpu);
        assert!(c.0 >= 3, "{op:?}: only {} points", c.0);
        for k in 0..c.0 {
            let t = build();
            let l = t.lists();
            let before = walk_vec(&l, cpu);
            let in_use: Vec<u64> = before.iter().copied().filter(|p| *p != pa(changing)).collect();
            let mut nmi = CheckingNmi { cpu, at: k, seen: 0, in_use, changing: pa(changing), fired: false };
            match op {
                Op::Add(cpu, i) => l.add(cpu, i, &mut nmi),
                Op::Remove(cpu, i) => l.remove(cpu, i, &mut nmi),
            }
            assert!(nmi.fired);
            assert_eq!(walk_vec(&l, cpu), expect_after);
            // The other CPUs' lists are untouched.
            for other in 0..CPUS as u32 {
                if other != cpu {
                    let b = build();
                    assert_eq!(walk_vec(&l, other), walk_vec(&b.lists(), other));
                }
            }
        }
    }

    #[test]
    fn add_and_remove_basics() {
        let t = Table::new(4);
        let l = t.lists();
        let a = l.alloc(pa(0)).unwrap();
        let b = l.alloc(pa(1)).unwrap();
        assert_eq!(l.cpu_of(a), NIL);
        l.add(1, a, &mut NoNmi);
        l.add(1, b, &mut NoNmi);
        assert_eq!(l.cpu_of(a), 1);
        assert_eq!(walk_vec(&l, 1), [pa(1), pa(0)]);
        assert!(walk_vec(&l, 0).is_empty());
        assert!(!l.free(a), "a listed slot cannot be freed");
        // Removing from the wrong CPU does nothing.
        l.remove(0, a, &mut NoNmi);
        assert_eq!(walk_vec(&l, 1), [pa(1), pa(0)]);
        l.remove(1, a, &mut NoNmi);
        assert_eq!(walk_vec(&l, 1), [pa(1)]);
        assert_eq!(l.cpu_of(a), NIL);
        assert!(l.free(a));
        // Moving b to CPU 2 (after clearing it on CPU 1).
        l.remove(1, b, &mut NoNmi);
        l.add(2, b, &mut NoNmi);
        assert!(walk_vec(&l, 1).is_empty());
        assert_eq!(walk_vec(&l, 2), [pa(1)]);
        // Slots are reused.
        assert_eq!(l.alloc(pa(7)), Some(a));
        assert_eq!(l.alloc(pa(8)), Some(2));
        assert_eq!(l.alloc(pa(9)), Some(3));
        assert_eq!(l.alloc(pa(10)), None);
    }

    #[test]
    fn nmi_during_add_at_every_step() {
        // Onto an empty list, a list of one, a list of three; on CPU 0 and 2.
        interrupt_everywhere(6, &[], Op::Add(0, 0));
        interrupt_everywhere(6, &[(1, 0)], Op::Add(0, 0));
        interrupt_everywhere(6, &[(1, 2), (2, 2), (3, 2), (4, 0)], Op::Add(2, 5));
        // A slot that was on another CPU's list before (moved).
        interrupt_everywhere(6, &[(1, 1), (2, 1)], Op::Add(1, 0));
    }

    #[test]
    fn nmi_during_remove_at_every_step() {
        let three = [(0, 1), (1, 1), (2, 1), (3, 0)];
        // The list on CPU 1 is 2 -> 1 -> 0: remove the head, middle, tail.
        interrupt_everywhere(5, &three, Op::Remove(1, 2));
        interrupt_everywhere(5, &three, Op::Remove(1, 1));
        interrupt_everywhere(5, &three, Op::Remove(1, 0));
        // The only entry.
        interrupt_everywhere(5, &[(4, 2)], Op::Remove(2, 4));
    }

    #[test]
    fn nmi_during_drain() {
        // The crash path walking while a CPU drains its list (CPU offline):
        // the entries not yet cleared are all seen.
        for k in 0..40 {
            let t = Table::new(5);
            let l = t.lists();
            for i in 0..5 {
                l.alloc(pa(i));
                l.add(0, i, &mut NoNmi);
            }
            let mut cleared: Vec<u64> = Vec::new();
            struct DrainNmi<'c> {
                at: usize,
                seen: usize,
                cleared: &'c core::cell::RefCell<Vec<u64>>,
            }
            impl NmiPoint for DrainNmi<'_> {
                fn at(&mut self, l: &Lists<'_>) {
                    if self.seen == self.at {
                        let got = walk_vec(l, 0);
                        for i in 0..5u32 {
                            if !self.cleared.borrow().contains(&pa(i)) {
                                assert!(got.contains(&pa(i)), "live VMCS missed");
                            }
                        }
                    }
                    self.seen += 1;
                }
            }
            let cell = core::cell::RefCell::new(Vec::new());
            let mut nmi = DrainNmi { at: k, seen: 0, cleared: &cell };
            l.drain(0, |p| cell.borrow_mut().push(p), &mut nmi);
            cleared.extend(cell.borrow().iter());
            assert_eq!(cleared.len(), 5);
            assert!(walk_vec(&l, 0).is_empty());
            for i in 0..5 {
                assert_eq!(l.cpu_of(i), NIL);
                assert!(l.free(i));
            }
        }
    }

    #[test]
    fn random_sequences_interrupted() {
        // A deterministic pseudo-random mix of moves between CPUs, each
        // update interrupted at a pseudo-random point by a checking walk.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let n = 8u32;
        let t = Table::new(n as usize);
        let l = t.lists();
        for i in 0..n {
            l.alloc(pa(i));
        }
        for _ in 0..3000 {
            let i = rnd(u64::from(n)) as u32;
            let cur = l.cpu_of(i);
            let cpu = if cur == NIL { rnd(CPUS as u64) as u32 } else { cur };
            let before = walk_vec(&l, cpu);
            let in_use: Vec<u64> = before.iter().copied().filter(|p| *p != pa(i)).collect();
            let mut nmi =
                CheckingNmi { cpu, at: rnd(8) as usize, seen: 0, in_use: in_use.clone(), changing: pa(i), fired: false };
            if cur == NIL {
                l.add(cpu, i, &mut nmi);
                assert_eq!(walk_vec(&l, cpu)[0], pa(i));
            } else {
                l.remove(cpu, i, &mut nmi);
                assert!(!walk_vec(&l, cpu).contains(&pa(i)));
            }
            let mut after = walk_vec(&l, cpu);
            after.retain(|p| *p != pa(i));
            assert_eq!(after, in_use);
        }
        // Every slot is on exactly one list or none.
        let mut all = Vec::new();
        for c in 0..CPUS as u32 {
            all.extend(walk_vec(&l, c));
        }
        let listed = (0..n).filter(|i| l.cpu_of(*i) != NIL).count();
        assert_eq!(all.len(), listed);
    }

    #[test]
    fn walk_is_bounded_on_a_corrupted_list() {
        // Not reachable through the API; the crash path must still end.
        let t = Table::new(2);
        let l = t.lists();
        l.alloc(pa(0));
        l.alloc(pa(1));
        l.add(0, 0, &mut NoNmi);
        l.add(0, 1, &mut NoNmi);
        t.slots[0].next.store(1, Ordering::Relaxed); // a cycle 1 -> 0 -> 1
        let mut n = 0;
        l.walk(0, |_| n += 1);
        assert_eq!(n, 2);
        // Out-of-range indices and CPUs are ignored.
        l.walk(99, |_| panic!("no such CPU"));
        l.add(99, 0, &mut NoNmi);
        l.remove(0, 77, &mut NoNmi);
    }
}
