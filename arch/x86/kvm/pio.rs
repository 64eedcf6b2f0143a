// SPDX-License-Identifier: GPL-2.0

//! Port I/O arithmetic (`kvm_fast_pio()` and the emulator's string I/O in
//! `arch/x86/kvm/x86.c` and `emulate.c`): what an IN result does to RAX, and
//! how INS/OUTS move through memory and count down rCX.
//!
//! Core-only (host-tested). String I/O goes to user space in batches of at
//! most a page of data; the instruction is executed again until rCX is 0.
//! Between batches user space may change rCX: the completion then transfers
//! only as many items as rCX still asks for, never more than the batch held
//! (C KVM behaviour that `userspace_io_test` checks).

/// Register numbers (x86 encoding order) of the string registers.
mod gpr {
    pub(crate) const RCX: usize = 1;
    pub(crate) const RSI: usize = 6;
    pub(crate) const RDI: usize = 7;
}

/// Bytes of data one string I/O exit moves at most (the PIO page).
pub(crate) const BATCH_BYTES: u32 = 4096;

/// `IN` of `size` bytes: the value of RAX after reading `value`. 8- and
/// 16-bit results keep the other bits; a 32-bit result zero-extends into
/// RAX, as every 32-bit register write in 64-bit mode (SDM vol. 1, 3.4.1.1).
pub(crate) fn in_result(rax: u64, size: u8, value: u64) -> u64 {
    match size {
        1 => (rax & !0xff) | (value & 0xff),
        2 => (rax & !0xffff) | (value & 0xffff),
        _ => value & 0xffff_ffff,
    }
}

/// An INS or OUTS being executed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StringIo {
    /// Item size: 1, 2 or 4.
    pub(crate) size: u8,
    /// Address size: 2, 4 or 8 (sizes rSI, rDI and rCX).
    pub(crate) addr_size: u8,
    /// With a REP prefix.
    pub(crate) rep: bool,
    /// RFLAGS.DF: addresses go down.
    pub(crate) df: bool,
}

impl StringIo {
    /// The mask of the address size.
    pub(crate) fn mask(&self) -> u64 {
        match self.addr_size {
            2 => 0xffff,
            4 => 0xffff_ffff,
            _ => u64::MAX,
        }
    }

    /// Items this exit moves: 1 without REP; with REP, rCX capped by a
    /// page of data; `None` for REP with rCX = 0 (the instruction does nothing).
    pub(crate) fn batch(&self, rcx: u64) -> Option<u32> {
        if !self.rep {
            return Some(1);
        }
        let n = rcx & self.mask();
        if n == 0 {
            return None;
        }
        Some(n.min(u64::from(BATCH_BYTES / u32::from(self.size.max(1)))) as u32)
    }

    /// Items the completion of an INS batch of `got` items moves, after user
    /// space may have changed rCX.
    pub(crate) fn completion(&self, rcx: u64, got: u32) -> u32 {
        if self.rep {
            (rcx & self.mask()).min(u64::from(got)) as u32
        } else {
            got.min(1)
        }
    }

    /// The offset of item `i` of a block whose first item is at `index`, in
    /// the order the instruction moves them (down with DF set).
    pub(crate) fn item_offset(&self, index: u64, i: u32) -> u64 {
        let delta = u64::from(i) * u64::from(self.size);
        let off = if self.df { index.wrapping_sub(delta) } else { index.wrapping_add(delta) };
        off & self.mask()
    }

    /// The lowest address of a block of `count` items whose first item is at
    /// `index` (rSI or rDI): the block runs down from it with DF set.
    pub(crate) fn block_start(&self, index: u64, count: u32) -> u64 {
        let index = index & self.mask();
        if self.df {
            let span = (u64::from(count).saturating_sub(1)) * u64::from(self.size);
            index.wrapping_sub(span) & self.mask()
        } else {
            index
        }
    }

    /// Puts `count` items of `buf` in the order the instruction accesses
    /// them when memory is read or written in address order (with DF set
    /// the first item is the highest address).
    pub(crate) fn order_items(&self, buf: &mut [u8], count: u32) {
        if !self.df {
            return;
        }
        let s = usize::from(self.size);
        let n = (count as usize).min(buf.len() / s.max(1));
        for i in 0..n / 2 {
            let j = n - 1 - i;
            for k in 0..s {
                buf.swap(i * s + k, j * s + k);
            }
        }
    }

    /// Moves rSI (OUTS, `out`) or rDI (INS) past `done` items and counts them
    /// off rCX for REP, each wrapping at the address size and keeping the
    /// bits above it. Returns whether the instruction is complete.
    pub(crate) fn advance(&self, regs: &mut [u64; 16], done: u32, out: bool) -> bool {
        let m = self.mask();
        let delta = u64::from(done) * u64::from(self.size);
        let idx = if out { gpr::RSI } else { gpr::RDI };
        let cur = regs[idx];
        let new = if self.df { cur.wrapping_sub(delta) } else { cur.wrapping_add(delta) };
        regs[idx] = (cur & !m) | (new & m);
        if !self.rep {
            return true;
        }
        let left = (regs[gpr::RCX] & m).saturating_sub(u64::from(done));
        regs[gpr::RCX] = (regs[gpr::RCX] & !m) | left;
        left == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_offsets() {
        let up = StringIo { size: 2, addr_size: 2, rep: true, df: false };
        assert_eq!(up.item_offset(0xfffe, 0), 0xfffe);
        assert_eq!(up.item_offset(0xfffe, 1), 0);
        let down = StringIo { size: 4, addr_size: 8, rep: true, df: true };
        assert_eq!(down.item_offset(0x1000, 2), 0xff8);
        assert_eq!(down.block_start(0x1000, 3), down.item_offset(0x1000, 2));
    }

    #[test]
    fn in_results() {
        let rax = 0x1122_3344_5566_7788;
        assert_eq!(in_result(rax, 1, 0xaa), 0x1122_3344_5566_77aa);
        assert_eq!(in_result(rax, 2, 0xaabb), 0x1122_3344_5566_aabb);
        assert_eq!(in_result(rax, 4, 0xaabb_ccdd), 0xaabb_ccdd);
        assert_eq!(in_result(rax, 1, 0x1ff), 0x1122_3344_5566_77ff);
    }

    fn s(size: u8, addr_size: u8, rep: bool, df: bool) -> StringIo {
        StringIo { size, addr_size, rep, df }
    }

    #[test]
    fn batches() {
        assert_eq!(s(1, 8, false, false).batch(0), Some(1));
        assert_eq!(s(1, 8, true, false).batch(0), None);
        assert_eq!(s(1, 8, true, false).batch(3), Some(3));
        assert_eq!(s(1, 8, true, false).batch(8192), Some(4096));
        assert_eq!(s(4, 8, true, false).batch(8192), Some(1024));
        // rCX counts at the address size: 0x1_0000 is 0 for a 16-bit count.
        assert_eq!(s(1, 2, true, false).batch(0x1_0000), None);
        assert_eq!(s(2, 4, true, false).batch(0xffff_ffff_0000_0005), Some(5));
    }

    #[test]
    fn completion_follows_rcx_changed_by_user_space() {
        // userspace_io_test: a batch of 2, user space sets rCX to 1.
        assert_eq!(s(1, 8, true, false).completion(1, 2), 1);
        // A batch of 3, user space sets rCX to 8192: only 3 items were read.
        assert_eq!(s(1, 8, true, false).completion(8192, 3), 3);
        assert_eq!(s(1, 8, false, false).completion(0, 1), 1);
    }

    #[test]
    fn advance_up_and_down() {
        let mut r = [0u64; 16];
        r[gpr::RDI] = 0x1000;
        r[gpr::RCX] = 10;
        assert!(!s(2, 8, true, false).advance(&mut r, 4, false));
        assert_eq!((r[gpr::RDI], r[gpr::RCX]), (0x1008, 6));
        assert!(s(2, 8, true, false).advance(&mut r, 6, false));
        assert_eq!((r[gpr::RDI], r[gpr::RCX]), (0x1014, 0));
        // DF set, OUTS moves rSI down.
        r[gpr::RSI] = 0x2000;
        r[gpr::RCX] = 2;
        assert!(s(4, 8, true, true).advance(&mut r, 2, true));
        assert_eq!(r[gpr::RSI], 0x1ff8);
    }

    #[test]
    fn advance_wraps_at_address_size() {
        let mut r = [0u64; 16];
        r[gpr::RDI] = 0xdead_0000_ffff;
        r[gpr::RCX] = 0xbeef_0000_0001;
        assert!(s(1, 2, true, false).advance(&mut r, 1, false));
        assert_eq!(r[gpr::RDI], 0xdead_0000_0000);
        assert_eq!(r[gpr::RCX], 0xbeef_0000_0000);
        r[gpr::RDI] = 0xffff_ffff;
        s(4, 4, false, false).advance(&mut r, 1, false);
        assert_eq!(r[gpr::RDI], 0x3);
    }

    #[test]
    fn blocks_and_order() {
        assert_eq!(s(2, 8, true, false).block_start(0x100, 4), 0x100);
        assert_eq!(s(2, 8, true, true).block_start(0x100, 4), 0xfa);
        assert_eq!(s(1, 2, true, true).block_start(0x1, 3), 0xffff);
        let mut b = [1u8, 2, 3, 4, 5, 6];
        s(2, 8, true, true).order_items(&mut b, 3);
        assert_eq!(b, [5, 6, 3, 4, 1, 2]);
        let mut c = [1u8, 2, 3];
        s(1, 8, true, false).order_items(&mut c, 3);
        assert_eq!(c, [1, 2, 3]);
        // Never past the buffer.
        s(4, 8, true, true).order_items(&mut c, 100);
    }
}
