// SPDX-License-Identifier: GPL-2.0

//! Memory that hardware reads by physical address.
//!
//! Virtualization hardware takes physical addresses of the structures it uses
//! (the SVM VMCB, host save area, I/O and MSR permission maps; the VMX VMXON
//! region and VMCS; nested page tables). [`HwBox`] owns such a structure:
//! page-aligned, physically contiguous, zeroed at allocation, in the kernel's
//! direct map, so that [`HwBox::phys_addr`] is the address hardware needs.
//!
//! C header: [`include/linux/gfp.h`](srctree/include/linux/gfp.h)

use crate::{
    alloc::{AllocError, Flags},
    bindings,
    page::PAGE_SIZE,
};
use core::{
    marker::PhantomData,
    ops::{Deref, DerefMut},
    ptr::NonNull,
    sync::atomic::{AtomicU32, AtomicU64},
};

/// Types for which the all-zero byte pattern is a valid value.
///
/// # Safety
///
/// Every field of the type, recursively, must accept all-zero bytes: integers,
/// atomics, arrays and `repr(C)` structs of such types. No references,
/// `NonNull`, enums without a zero variant or `bool` fields set to anything
/// but zero.
pub unsafe trait HwZeroable {}

// SAFETY: Zero is a valid integer.
unsafe impl HwZeroable for u8 {}
// SAFETY: Zero is a valid integer.
unsafe impl HwZeroable for u16 {}
// SAFETY: Zero is a valid integer.
unsafe impl HwZeroable for u32 {}
// SAFETY: Zero is a valid integer.
unsafe impl HwZeroable for u64 {}
// SAFETY: Zero is a valid atomic integer.
unsafe impl HwZeroable for AtomicU32 {}
// SAFETY: Zero is a valid atomic integer.
unsafe impl HwZeroable for AtomicU64 {}
// SAFETY: An array of zero-valid elements is zero-valid.
unsafe impl<T: HwZeroable, const N: usize> HwZeroable for [T; N] {}

/// An owned `T` in zeroed, page-aligned, physically contiguous memory.
///
/// # Invariants
///
/// `page` heads an allocation of `2^ORDER` pages made by `alloc_pages` with
/// `order`, owned by this object; `ptr` is its direct-map address, where a
/// valid `T` lives; `size_of::<T>() <= PAGE_SIZE << order`.
pub struct HwBox<T: HwZeroable> {
    page: NonNull<bindings::page>,
    ptr: NonNull<T>,
    order: u32,
    _t: PhantomData<T>,
}

// SAFETY: `HwBox<T>` owns its `T` like a `Box` does.
unsafe impl<T: HwZeroable + Send> Send for HwBox<T> {}
// SAFETY: `&HwBox<T>` only gives `&T`.
unsafe impl<T: HwZeroable + Sync> Sync for HwBox<T> {}

impl<T: HwZeroable> HwBox<T> {
    /// Allocates a zeroed `T` (`flags` may add `__GFP_ACCOUNT` to charge the
    /// caller's memory cgroup; `__GFP_ZERO` is always added).
    pub fn new_zeroed(flags: Flags) -> Result<Self, AllocError> {
        let size = core::mem::size_of::<T>().max(1);
        // The smallest order whose pages hold `T`.
        let mut order = 0u32;
        while (PAGE_SIZE << order) < size {
            order += 1;
        }
        if core::mem::align_of::<T>() > PAGE_SIZE << order {
            return Err(AllocError);
        }
        let flags = flags | crate::alloc::flags::__GFP_ZERO;
        // SAFETY: `alloc_pages` may sleep depending on `flags`; otherwise always safe.
        let page = unsafe { bindings::alloc_pages(flags.as_raw(), order) };
        let page = NonNull::new(page).ok_or(AllocError)?;
        // SAFETY: `page` is a valid, just-allocated lowmem page (x86-64 has no
        // highmem), so it has a direct-map address.
        let addr = unsafe { bindings::page_address(page.as_ptr()) };
        let Some(ptr) = NonNull::new(addr.cast::<T>()) else {
            // SAFETY: Allocated above with this order and not shared.
            unsafe { bindings::__free_pages(page.as_ptr(), order) };
            return Err(AllocError);
        };
        // INVARIANT: the memory is zeroed, which is a valid `T` (`HwZeroable`),
        // page aligned (so aligned for `T`, checked above) and large enough.
        Ok(Self { page, ptr, order, _t: PhantomData })
    }

    /// The physical address of the `T`, for hardware.
    pub fn phys_addr(&self) -> u64 {
        // SAFETY: `ptr` is a direct-map address (type invariant).
        unsafe { bindings::virt_to_phys(self.ptr.as_ptr().cast()) }
    }
}

impl<T: HwZeroable> Deref for HwBox<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: `ptr` points to a valid `T` owned by `self` (type invariant).
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: HwZeroable> DerefMut for HwBox<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: As in `deref`; `&mut self` makes the access exclusive.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T: HwZeroable> Drop for HwBox<T> {
    fn drop(&mut self) {
        // SAFETY: `ptr` holds a valid `T` that is not used after this.
        unsafe { core::ptr::drop_in_place(self.ptr.as_ptr()) };
        // SAFETY: We own the allocation of this order (type invariant).
        unsafe { bindings::__free_pages(self.page.as_ptr(), self.order) };
    }
}
