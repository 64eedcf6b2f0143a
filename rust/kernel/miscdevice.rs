// SPDX-License-Identifier: GPL-2.0

//! Miscellaneous character devices (`/dev/NAME` with major 10).
//!
//! C header: [`include/linux/miscdevice.h`](srctree/include/linux/miscdevice.h)

use crate::{
    alloc::{flags::GFP_KERNEL, KBox},
    bindings,
    error::{to_result, Result},
    ffi::c_int,
    file_ops::{FileOps, FileOpsTable},
    str::CStr,
    types::{ForeignOwnable, Opaque},
};
use core::pin::Pin;

/// A character device whose files are [`FileOps`] files.
pub trait MiscDevice: FileOps {
    /// Data given at registration and lent to every `open`.
    type Context: Send + Sync;

    /// Called on `open(2)` of the device node: makes the new file's private data.
    fn open(ctx: &Self::Context) -> Result<Self::Ptr>;
}

/// The registered device and its context, pinned on the heap.
#[repr(C)]
struct Inner<T: MiscDevice> {
    dev: Opaque<bindings::miscdevice>,
    ctx: T::Context,
}

/// A registered misc device; deregistered on drop.
///
/// # Invariants
///
/// `inner.dev` is a `struct miscdevice` registered with `misc_register()`, whose
/// `fops` is a static `FileOpsTable<T>`.
pub struct Registration<T: MiscDevice> {
    inner: Pin<KBox<Inner<T>>>,
}

// SAFETY: The registration holds a `struct miscdevice` that the misc core
// guards with its own lock, and a `Send + Sync` context; it may be dropped on
// any thread.
unsafe impl<T: MiscDevice> Send for Registration<T> {}
// SAFETY: `&Registration` gives access to nothing but the `Sync` context.
unsafe impl<T: MiscDevice> Sync for Registration<T> {}

impl<T: MiscDevice> Registration<T> {
    /// Registers `/dev/name` with the given minor number (or a dynamic one if `None`).
    pub fn register(
        name: &'static CStr,
        minor: Option<u32>,
        fops: &'static FileOpsTable<T>,
        ctx: T::Context,
    ) -> Result<Self> {
        let inner = KBox::pin(Inner::<T> { dev: Opaque::uninit(), ctx }, GFP_KERNEL)?;
        let raw = inner.dev.get();
        // SAFETY: `raw` points to memory we own exclusively; all-zero is a valid
        // unregistered `struct miscdevice` (NULL pointers, empty list head is
        // initialised by `misc_register`).
        unsafe {
            core::ptr::write_bytes(raw, 0, 1);
            (*raw).minor = minor.map_or(bindings::MISC_DYNAMIC_MINOR as c_int, |m| m as c_int);
            (*raw).name = name.as_char_ptr();
            (*raw).fops = fops.as_ptr();
        }
        // SAFETY: `raw` is a filled-in `struct miscdevice` in pinned memory that
        // stays alive until `misc_deregister` in `drop`.
        to_result(unsafe { bindings::misc_register(raw) })?;
        // INVARIANT: registered above, with a static `FileOpsTable<T>`.
        Ok(Self { inner })
    }
}

impl<T: MiscDevice> Drop for Registration<T> {
    fn drop(&mut self) {
        // SAFETY: Registered in `register` (type invariant) and not yet deregistered.
        unsafe { bindings::misc_deregister(self.inner.dev.get()) };
    }
}

/// `open` of a misc device file.
///
/// # Safety
///
/// `file` is a file being opened through a device registered by
/// [`Registration::register`] with a `FileOpsTable<T>`.
pub(crate) unsafe extern "C" fn open_callback<T: MiscDevice>(
    _inode: *mut bindings::inode,
    file: *mut bindings::file,
) -> c_int {
    // SAFETY: The caller guarantees `file` is valid; `misc_open` put the
    // `struct miscdevice` in its private data, and that device is the `dev`
    // field of an `Inner<T>` (`Registration::register`), alive while the
    // device is registered, which it is while one of its files is being opened.
    let ctx = unsafe {
        let dev = (*file).private_data.cast::<bindings::miscdevice>();
        let inner = crate::container_of!(dev, Inner<T>, dev);
        &(*inner).ctx
    };
    match T::open(ctx) {
        Ok(data) => {
            // SAFETY: The caller guarantees `file` is valid and being opened;
            // nothing else uses its private data yet (the misc core left a
            // pointer to the `miscdevice` there, which we replace).
            unsafe { (*file).private_data = data.into_foreign().cast_mut() };
            0
        }
        Err(e) => e.to_errno(),
    }
}
