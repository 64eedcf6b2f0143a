// SPDX-License-Identifier: GPL-2.0

//! File operations for files whose behaviour is written in Rust.
//!
//! A driver implements [`FileOps`] for a type and declares one static
//! [`FileOpsTable`] for it with [`file_ops_table!`]. The table is the C
//! `struct file_operations`; its `owner` is the declaring module, so a file
//! created from it pins the module until the file is released (as the C KVM
//! does for its `/dev/kvm`, VM and vCPU files).
//!
//! Each file owns one [`FileOps::Ptr`] as its private data: from [`create_anon_fd`]
//! (or [`MiscDevice::open`](crate::miscdevice::MiscDevice::open)) until the last
//! reference to the file goes away, when it is dropped.
//!
//! C header: [`include/linux/fs.h`](srctree/include/linux/fs.h),
//! [`include/linux/anon_inodes.h`](srctree/include/linux/anon_inodes.h)

use crate::{
    bindings,
    error::{Error, Result},
    ffi::{c_int, c_long, c_uint, c_ulong},
    mm::VmArea,
    str::CStr,
    types::ForeignOwnable,
    uaccess::{UserSlice, UserSliceWriter},
};
use core::marker::PhantomData;

/// Flags for a new file descriptor.
pub mod flags {
    /// Read and write access.
    pub const O_RDWR: u32 = crate::bindings::O_RDWR;
    /// Read-only access.
    pub const O_RDONLY: u32 = crate::bindings::O_RDONLY;
    /// Close the descriptor on `execve`.
    pub const O_CLOEXEC: u32 = crate::bindings::O_CLOEXEC;
}

/// The operations of a file.
///
/// There is no `compat_ioctl`: a 32-bit caller gets `-ENOTTY`, since argument
/// layouts may differ between the two ABIs. Only the operations a type implements are put into its table; the others
/// stay NULL, so the VFS gives the C default for them (for `ioctl`, `-ENOTTY`).
#[macros::vtable]
pub trait FileOps: Sized + 'static {
    /// The private data of each file: owned by the file, dropped at release.
    type Ptr: ForeignOwnable + Send + Sync;

    /// Handles `ioctl(2)`. `arg` is the raw argument: an integer or a user
    /// address, as `cmd` defines. The returned value is given to user space.
    fn ioctl(
        _this: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        _cmd: u32,
        _arg: usize,
    ) -> Result<isize> {
        crate::build_error!(crate::error::VTABLE_DEFAULT_ERROR)
    }

    /// Handles `read(2)` and `pread(2)`: writes the bytes at file offset
    /// `offset` into `out`, at most `out.len()`, and returns how many it
    /// wrote (0 at the end of the file). The file offset then moves on by
    /// that much. A file with `read` also supports `pread(2)` (`FMODE_PREAD`).
    fn read(
        _this: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        _out: &mut UserSliceWriter,
        _offset: u64,
    ) -> Result<usize> {
        crate::build_error!(crate::error::VTABLE_DEFAULT_ERROR)
    }

    /// Handles `mmap(2)`: typically maps pages with [`VmArea::insert_page`].
    fn mmap(_this: <Self::Ptr as ForeignOwnable>::Borrowed<'_>, _vma: &VmArea) -> Result {
        crate::build_error!(crate::error::VTABLE_DEFAULT_ERROR)
    }
}

/// The `struct file_operations` of a [`FileOps`] type.
///
/// # Invariants
///
/// The table is never written after construction, and every callback in it
/// expects `private_data` to come from `T::Ptr::into_foreign`.
#[repr(transparent)]
pub struct FileOpsTable<T: FileOps> {
    ops: bindings::file_operations,
    _t: PhantomData<T>,
}

// SAFETY: The table is immutable after construction (type invariant); the
// pointers in it are to functions and to the owning module, valid from any
// thread.
unsafe impl<T: FileOps> Sync for FileOpsTable<T> {}

impl<T: FileOps> FileOpsTable<T> {
    /// Builds the table of a file created by [`create_anon_fd`]. Use
    /// [`file_ops_table!`] rather than calling this directly.
    pub const fn new(owner: *mut bindings::module) -> Self {
        // INVARIANT: every callback below is one of this module's trampolines for `T`.
        Self {
            ops: bindings::file_operations {
                owner,
                llseek: Some(bindings::noop_llseek),
                read: if T::HAS_READ { Some(read_callback::<T>) } else { None },
                unlocked_ioctl: if T::HAS_IOCTL { Some(ioctl_callback::<T>) } else { None },
                mmap: if T::HAS_MMAP { Some(mmap_callback::<T>) } else { None },
                release: Some(release_callback::<T>),
                ..pin_zeroed_file_operations()
            },
            _t: PhantomData,
        }
    }

    /// Builds the table of a character device whose files are opened through
    /// [`MiscDevice::open`](crate::miscdevice::MiscDevice::open).
    pub const fn new_misc(owner: *mut bindings::module) -> Self
    where
        T: crate::miscdevice::MiscDevice,
    {
        let mut table = Self::new(owner);
        table.ops.open = Some(crate::miscdevice::open_callback::<T>);
        table
    }

    /// The C table.
    pub(crate) const fn as_ptr(&self) -> *const bindings::file_operations {
        &self.ops
    }
}

/// An all-zero `struct file_operations`: every operation NULL.
const fn pin_zeroed_file_operations() -> bindings::file_operations {
    // SAFETY: `struct file_operations` is plain C data made of function
    // pointers (`Option<fn>`), integers and a module pointer, for all of which
    // all-zero bytes are a valid value (NULL, 0).
    unsafe { core::mem::MaybeUninit::zeroed().assume_init() }
}

/// Declares the static [`FileOpsTable`] of a [`FileOps`] type, owned by the
/// module that declares it.
///
/// `file_ops_table!(VM_FOPS, VmFile)` declares an anonymous-inode file table;
/// `file_ops_table!(DEV_FOPS, KvmDev, misc)` a character device table with `open`.
#[macro_export]
macro_rules! file_ops_table {
    ($name:ident, $t:ty) => {
        static $name: $crate::file_ops::FileOpsTable<$t> =
            $crate::file_ops::FileOpsTable::new($crate::file_ops_table!(@owner));
    };
    ($name:ident, $t:ty, misc) => {
        static $name: $crate::file_ops::FileOpsTable<$t> =
            $crate::file_ops::FileOpsTable::new_misc($crate::file_ops_table!(@owner));
    };
    (@owner) => {
        crate::THIS_MODULE.as_ptr()
    };
}

/// Creates a file on the anonymous inode with the operations `table` and
/// `data` as its private data, and installs it as a new descriptor of the
/// current process.
///
/// On success the file owns `data`; user space may close the descriptor at
/// any time from then on, so the caller keeps only what it kept a reference to.
/// On failure `data` is dropped here.
pub fn create_anon_fd<T: FileOps>(
    table: &'static FileOpsTable<T>,
    name: &CStr,
    data: T::Ptr,
    flags: u32,
) -> Result<i32> {
    if T::HAS_READ {
        return create_anon_fd_pread(table, name, data, flags);
    }
    let ptr = data.into_foreign();
    // SAFETY: `name` is NUL-terminated (the VFS copies it into the new dentry);
    // `table` is static and its
    // callbacks expect private data made by `T::Ptr::into_foreign`, which `ptr` is.
    let fd = unsafe {
        bindings::anon_inode_getfd(name.as_char_ptr(), table.as_ptr(), ptr.cast_mut(), flags as c_int)
    };
    if fd < 0 {
        // SAFETY: no file was created, so `ptr` still belongs to us and was
        // never borrowed.
        drop(unsafe { T::Ptr::from_foreign(ptr) });
        return Err(Error::from_errno(fd));
    }
    Ok(fd)
}

/// [`create_anon_fd`] for a readable file: the same, with `FMODE_PREAD` set
/// before the descriptor is installed (as the C KVM's stats files are made).
fn create_anon_fd_pread<T: FileOps>(
    table: &'static FileOpsTable<T>,
    name: &CStr,
    data: T::Ptr,
    flags: u32,
) -> Result<i32> {
    // SAFETY: No preconditions; the descriptor is reserved, not installed.
    let fd = unsafe { bindings::get_unused_fd_flags(flags & bindings::O_CLOEXEC) };
    if fd < 0 {
        return Err(Error::from_errno(fd));
    }
    let ptr = data.into_foreign();
    // SAFETY: As in `create_anon_fd`: `name` is NUL-terminated, `table` is
    // static and expects private data made by `T::Ptr::into_foreign`.
    let file = unsafe { bindings::anon_inode_getfile(name.as_char_ptr(), table.as_ptr(), ptr.cast_mut(), flags as c_int) };
    match crate::error::from_err_ptr(file) {
        Ok(file) => {
            // SAFETY: `file` is the new file, not yet visible to anyone else:
            // its mode may be changed. Installing it hands our reference to
            // the descriptor table of the current process, at the reserved `fd`.
            unsafe {
                (*file).f_mode |= bindings::FMODE_PREAD;
                bindings::fd_install(fd as c_uint, file);
            }
            Ok(fd)
        }
        Err(e) => {
            // SAFETY: `fd` was reserved above and never installed.
            unsafe { bindings::put_unused_fd(fd as c_uint) };
            // SAFETY: no file was created, so `ptr` still belongs to us and was
            // never borrowed.
            drop(unsafe { T::Ptr::from_foreign(ptr) });
            Err(e)
        }
    }
}

/// # Safety
///
/// As for [`ioctl_callback`]; `buf` is a user address of `size` bytes and
/// `ppos` the file position to use and advance.
unsafe extern "C" fn read_callback<T: FileOps>(
    file: *mut bindings::file,
    buf: *mut crate::ffi::c_char,
    size: usize,
    ppos: *mut bindings::loff_t,
) -> isize {
    // SAFETY: As in `ioctl_callback`: `read` holds a file reference.
    let this = unsafe { T::Ptr::borrow((*file).private_data) };
    // SAFETY: The VFS passes a valid position pointer for the duration of the call.
    let pos = unsafe { *ppos };
    let Ok(offset) = u64::try_from(pos) else {
        return crate::error::code::EINVAL.to_errno() as isize;
    };
    let mut out = UserSlice::new(buf as usize, size).writer();
    match T::read(this, &mut out, offset) {
        Ok(n) => {
            // SAFETY: As above.
            unsafe { *ppos = pos.saturating_add(n as bindings::loff_t) };
            n as isize
        }
        Err(e) => e.to_errno() as isize,
    }
}

/// # Safety
///
/// `file` is a live file whose operations are `FileOpsTable<T>`, so its
/// private data came from `T::Ptr::into_foreign`.
unsafe extern "C" fn ioctl_callback<T: FileOps>(
    file: *mut bindings::file,
    cmd: c_uint,
    arg: c_ulong,
) -> c_long {
    // SAFETY: The caller guarantees `file` is valid and its private data is a
    // `T::Ptr`; it is released only in `release_callback`, which the VFS never
    // runs while an ioctl on the file is in progress (the ioctl holds a file reference).
    let this = unsafe { T::Ptr::borrow((*file).private_data) };
    match T::ioctl(this, cmd, arg as usize) {
        Ok(ret) => ret as c_long,
        Err(e) => e.to_errno() as c_long,
    }
}

/// # Safety
///
/// As for [`ioctl_callback`]; `vma` is the mapping being created, with its
/// `mm`'s mmap lock held for writing.
unsafe extern "C" fn mmap_callback<T: FileOps>(
    file: *mut bindings::file,
    vma: *mut bindings::vm_area_struct,
) -> c_int {
    // SAFETY: As in `ioctl_callback`: `mmap` holds a file reference.
    let this = unsafe { T::Ptr::borrow((*file).private_data) };
    // SAFETY: The caller guarantees `vma` is valid under the mmap write lock
    // for the duration of this call.
    let vma = unsafe { VmArea::from_raw(vma) };
    match T::mmap(this, vma) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// # Safety
///
/// As for [`ioctl_callback`]; called once, when the last reference to `file` goes.
unsafe extern "C" fn release_callback<T: FileOps>(
    _inode: *mut bindings::inode,
    file: *mut bindings::file,
) -> c_int {
    // SAFETY: The caller guarantees `file` is valid. Its private data came from
    // `T::Ptr::into_foreign` and no borrow of it is alive: this is the last
    // reference to the file.
    let ptr = unsafe { (*file).private_data };
    // SAFETY: See above; `from_foreign` is called once per `into_foreign`.
    drop(unsafe { T::Ptr::from_foreign(ptr) });
    0
}
