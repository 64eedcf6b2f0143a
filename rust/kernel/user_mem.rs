// SPDX-License-Identifier: GPL-2.0

//! Memory shared with user space: pages a driver maps into a process
//! ([`SharedPage`]) and user pages a driver pins to hand to hardware
//! ([`PinnedPage`]).
//!
//! C headers: [`include/linux/mm.h`](srctree/include/linux/mm.h)

use crate::{
    alloc::{AllocError, Flags},
    bindings,
    error::{code::EFAULT, Error, Result},
    page::{Page, PAGE_SIZE},
};
use core::ptr::NonNull;

/// A zeroed page that user space may map (see
/// [`VmArea::insert_page`](crate::mm::VmArea::insert_page)) and so may read and
/// write at any time.
///
/// Every access goes through volatile loads and stores of the given width,
/// like the C kernel's `READ_ONCE`/`WRITE_ONCE` on such pages: user space can
/// change any byte between two reads, so callers read a field once and check
/// the copy.
///
/// # Invariants
///
/// `addr` is the direct-map address of `page`'s memory, valid while `page` lives.
pub struct SharedPage {
    page: Page,
    addr: NonNull<u8>,
}

// SAFETY: The page is owned; all accesses are volatile and bounds-checked.
unsafe impl Send for SharedPage {}
// SAFETY: Concurrent volatile accesses to the page are the intended use (the
// page is shared with user space anyway).
unsafe impl Sync for SharedPage {}

impl SharedPage {
    /// Allocates a zeroed page (`flags` may add `__GFP_ACCOUNT`).
    pub fn new(flags: Flags) -> Result<Self, AllocError> {
        let page = Page::alloc_page(flags | crate::alloc::flags::__GFP_ZERO)?;
        // SAFETY: `page` is a valid lowmem page (x86-64 and the other 64-bit
        // architectures with Rust support have no highmem).
        let addr = unsafe { bindings::page_address(page.as_ptr()) };
        let addr = NonNull::new(addr.cast::<u8>()).ok_or(AllocError)?;
        // INVARIANT: `addr` is the direct-map address of `page`.
        Ok(Self { page, addr })
    }

    /// The page, to map it into user space.
    pub fn page(&self) -> &Page {
        &self.page
    }

    fn ptr<T>(&self, offset: usize) -> *mut T {
        let size = core::mem::size_of::<T>();
        assert!(offset % core::mem::align_of::<T>() == 0 && offset + size <= PAGE_SIZE);
        // SAFETY: `offset + size <= PAGE_SIZE`, so the result stays inside the page.
        unsafe { self.addr.as_ptr().add(offset).cast::<T>() }
    }

    /// Reads the byte at `offset`. Panics if `offset >= PAGE_SIZE`.
    pub fn read_u8(&self, offset: usize) -> u8 {
        // SAFETY: `ptr` checked bounds and alignment; the page is valid (type invariant).
        unsafe { self.ptr::<u8>(offset).read_volatile() }
    }

    /// Reads the naturally aligned `u16` at `offset`; panics if out of bounds or misaligned.
    pub fn read_u16(&self, offset: usize) -> u16 {
        // SAFETY: As in `read_u8`.
        unsafe { self.ptr::<u16>(offset).read_volatile() }
    }

    /// Reads the naturally aligned `u32` at `offset`; panics if out of bounds or misaligned.
    pub fn read_u32(&self, offset: usize) -> u32 {
        // SAFETY: As in `read_u8`.
        unsafe { self.ptr::<u32>(offset).read_volatile() }
    }

    /// Reads the naturally aligned `u64` at `offset`; panics if out of bounds or misaligned.
    pub fn read_u64(&self, offset: usize) -> u64 {
        // SAFETY: As in `read_u8`.
        unsafe { self.ptr::<u64>(offset).read_volatile() }
    }

    /// Writes the byte at `offset`.
    pub fn write_u8(&self, offset: usize, v: u8) {
        // SAFETY: As in `read_u8`.
        unsafe { self.ptr::<u8>(offset).write_volatile(v) }
    }

    /// Writes the naturally aligned `u16` at `offset`.
    pub fn write_u16(&self, offset: usize, v: u16) {
        // SAFETY: As in `read_u8`.
        unsafe { self.ptr::<u16>(offset).write_volatile(v) }
    }

    /// Writes the naturally aligned `u32` at `offset`.
    pub fn write_u32(&self, offset: usize, v: u32) {
        // SAFETY: As in `read_u8`.
        unsafe { self.ptr::<u32>(offset).write_volatile(v) }
    }

    /// Writes the naturally aligned `u64` at `offset`.
    pub fn write_u64(&self, offset: usize, v: u64) {
        // SAFETY: As in `read_u8`.
        unsafe { self.ptr::<u64>(offset).write_volatile(v) }
    }

    /// Copies `out.len()` bytes from `offset` into `out`. Panics if out of bounds.
    pub fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        assert!(offset <= PAGE_SIZE && out.len() <= PAGE_SIZE - offset);
        for (i, b) in out.iter_mut().enumerate() {
            *b = self.read_u8(offset + i);
        }
    }

    /// Copies `data` to `offset`. Panics if out of bounds.
    pub fn write_bytes(&self, offset: usize, data: &[u8]) {
        assert!(offset <= PAGE_SIZE && data.len() <= PAGE_SIZE - offset);
        for (i, &b) in data.iter().enumerate() {
            self.write_u8(offset + i, b);
        }
    }

    /// Zeroes `len` bytes from `offset`. Panics if out of bounds.
    pub fn zero(&self, offset: usize, len: usize) {
        assert!(offset <= PAGE_SIZE && len <= PAGE_SIZE - offset);
        for i in 0..len {
            self.write_u8(offset + i, 0);
        }
    }
}

/// A page of the current process's memory pinned with `pin_user_pages_fast()`
/// (`FOLL_LONGTERM`: it may stay pinned indefinitely, so the kernel migrates
/// it out of movable zones first). The page cannot be freed or moved while
/// pinned, so hardware may use its physical address; unpinned on drop (and
/// marked dirty if it was pinned for writing).
///
/// # Invariants
///
/// `page` holds one pin reference taken by `pin_user_pages_fast`, for writing
/// if `writable`.
pub struct PinnedPage {
    page: NonNull<bindings::page>,
    writable: bool,
}

// SAFETY: A pin may be dropped on any thread.
unsafe impl Send for PinnedPage {}
// SAFETY: `&PinnedPage` only exposes the physical address.
unsafe impl Sync for PinnedPage {}

impl PinnedPage {
    /// Pins the page at user address `addr` (page aligned) of the current
    /// process, for writing if `write`. May sleep and fault the page in.
    /// Fails with `EFAULT` if there is no such mapping or it does not allow
    /// the access, or with the error of the fault (e.g. `EINTR` on a fatal signal).
    pub fn pin_current(addr: usize, write: bool) -> Result<Self> {
        let mut flags = bindings::FOLL_LONGTERM;
        if write {
            flags |= bindings::FOLL_WRITE;
        }
        let mut page: *mut bindings::page = core::ptr::null_mut();
        // SAFETY: `page` is a valid array of one page pointer; the call uses
        // `current->mm` under its own locking.
        let n = unsafe { bindings::pin_user_pages_fast(addr as _, 1, flags as _, &mut page) };
        if n < 0 {
            return Err(Error::from_errno(n));
        }
        match NonNull::new(page) {
            // INVARIANT: `pin_user_pages_fast` pinned `page` once.
            Some(page) if n == 1 => Ok(Self { page, writable: write }),
            _ => Err(EFAULT),
        }
    }

    /// The page frame number.
    pub fn pfn(&self) -> u64 {
        // SAFETY: `page` is pinned, so it is a valid `struct page` (type invariant).
        unsafe { bindings::page_to_pfn(self.page.as_ptr()) as u64 }
    }

    /// The physical address of the page.
    pub fn phys_addr(&self) -> u64 {
        self.pfn() << crate::page::PAGE_SHIFT
    }

    /// Whether the page was pinned for writing.
    pub fn writable(&self) -> bool {
        self.writable
    }
}

impl Drop for PinnedPage {
    fn drop(&mut self) {
        let mut page = self.page.as_ptr();
        // A page pinned for writing may have been written through its
        // physical address, behind the page tables' dirty bits: mark it dirty
        // so that file-backed memory is written back.
        // SAFETY: We hold one pin on `page` (type invariant), released here
        // once; `page` is a one-element array.
        unsafe { bindings::unpin_user_pages_dirty_lock(&mut page, 1, self.writable) };
    }
}

/// Whether `[addr, addr + size)` lies in the user part of the address space
/// (`access_ok()`); a range that wraps is not.
pub fn access_ok(addr: u64, size: u64) -> bool {
    // SAFETY: `access_ok` only compares the range against the user limit.
    unsafe { bindings::kvm_rs_access_ok(addr as usize, size as usize) }
}
