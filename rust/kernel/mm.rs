// SPDX-License-Identifier: GPL-2.0

//! Address spaces (`struct mm_struct`) and user mappings (`struct vm_area_struct`).
//!
//! C headers: [`include/linux/sched/mm.h`](srctree/include/linux/sched/mm.h),
//! [`include/linux/mm.h`](srctree/include/linux/mm.h)

use crate::{bindings, error::{to_result, Result}, page::Page, types::Opaque};
use core::ptr::NonNull;

/// A reference that keeps a `struct mm_struct` allocated (`mmgrab`/`mmdrop`),
/// not its address space alive: enough to compare identities, as the C KVM
/// does with `kvm->mm`.
///
/// # Invariants
///
/// `mm` points to an `mm_struct` on which this object holds one `mmgrab` reference.
pub struct MmGrab {
    mm: NonNull<bindings::mm_struct>,
}

// SAFETY: `mmgrab` references may be taken and dropped on any thread.
unsafe impl Send for MmGrab {}
// SAFETY: `&MmGrab` only allows pointer comparison.
unsafe impl Sync for MmGrab {}

impl MmGrab {
    /// Grabs the current task's `mm`; `None` for a kernel thread.
    pub fn current() -> Option<Self> {
        // SAFETY: Reads `current->mm`, stable while the current task runs.
        let mm = NonNull::new(unsafe { bindings::get_current_mm() })?;
        // SAFETY: `mm` is the live `mm` of the current task.
        unsafe { bindings::mmgrab(mm.as_ptr()) };
        // INVARIANT: one `mmgrab` reference taken above.
        Some(Self { mm })
    }

    /// Whether this is the current task's `mm`.
    pub fn is_current(&self) -> bool {
        // SAFETY: As in `current()`.
        core::ptr::eq(unsafe { bindings::get_current_mm() }, self.mm.as_ptr())
    }
}

impl Drop for MmGrab {
    fn drop(&mut self) {
        // SAFETY: We hold one `mmgrab` reference (type invariant).
        unsafe { bindings::mmdrop(self.mm.as_ptr()) };
    }
}

/// A user mapping being set up by a file's `mmap` operation.
///
/// # Invariants
///
/// The wrapped `vm_area_struct` is valid, and its `mm`'s mmap lock is held for
/// writing, for the lifetime of the reference.
#[repr(transparent)]
pub struct VmArea(Opaque<bindings::vm_area_struct>);

impl VmArea {
    /// # Safety
    ///
    /// `vma` is a valid VMA whose `mm`'s mmap lock is held for writing for `'a`
    /// (true inside `file_operations.mmap`).
    pub(crate) unsafe fn from_raw<'a>(vma: *mut bindings::vm_area_struct) -> &'a Self {
        // SAFETY: `VmArea` is a transparent wrapper; validity per the caller.
        unsafe { &*vma.cast() }
    }

    fn raw(&self) -> *mut bindings::vm_area_struct {
        self.0.get()
    }

    /// First user address of the mapping.
    pub fn start(&self) -> usize {
        // SAFETY: Valid VMA (type invariant); fields are stable under the mmap lock.
        unsafe { (*self.raw()).__bindgen_anon_1.__bindgen_anon_1.vm_start as usize }
    }

    /// One past the last user address of the mapping.
    pub fn end(&self) -> usize {
        // SAFETY: As in `start`.
        unsafe { (*self.raw()).__bindgen_anon_1.__bindgen_anon_1.vm_end as usize }
    }

    /// The mapping's offset in the file, in pages.
    pub fn pgoff(&self) -> usize {
        // SAFETY: As in `start`.
        unsafe { (*self.raw()).vm_pgoff as usize }
    }

    /// Maps `page` at user address `addr` (page-aligned, inside the mapping).
    /// The mapping takes its own reference to the page, so the page stays
    /// valid for user space even after its owner frees it.
    pub fn insert_page(&self, addr: usize, page: &Page) -> Result {
        // SAFETY: Valid VMA with the mmap lock held for writing (type invariant);
        // `vm_insert_page` checks `addr` against the VMA and takes a page reference.
        to_result(unsafe { bindings::vm_insert_page(self.raw(), addr as _, page.as_ptr()) })
    }
}
