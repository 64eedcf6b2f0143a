// SPDX-License-Identifier: GPL-2.0

//! metricfs: metrics under debugfs, one directory per metric.
//!
//! A subsystem registers a metric with a description, its fields (names and
//! types) and a callback that emits one row per object. Each metric is a
//! directory holding four read-only files:
//!
//! - `annotations`: `DESCRIPTION <text>` and, for a metric that only grows,
//!   `CUMULATIVE`;
//! - `fields`: the field names on one line, their types (`str`, `int`) on the next;
//! - `values`: one row per object, fields separated by a space;
//! - `version`: `1`.
//!
//! Strings are escaped so that a row splits on spaces: a space becomes `\ `, a
//! backslash `\\` and a newline `\n`.
//!
//! `values` is generated when the file is opened, by one call of the callback,
//! into a buffer the reads then return: a reader sees one consistent snapshot
//! however it reads. The snapshot is capped at [`VALUES_MAX`] bytes; rows past
//! the cap are dropped whole, so a callback emits its most important rows first.
//!
//! Lifetime: [`Metric`] removes its directory when dropped. debugfs waits for
//! opens in progress before the removal returns and refuses new ones after,
//! so the callback never runs once [`Metric`] is gone; a file left open keeps
//! only its snapshot, which belongs to the kernel crate. A module can therefore
//! drop its metrics at unload with files still open.
//!
//! C header: [`include/linux/debugfs.h`](srctree/include/linux/debugfs.h)

use crate::{
    alloc::{flags::GFP_KERNEL, KBox, KVVec},
    bindings, c_str,
    error::{code::EINVAL, from_err_ptr, Result},
    ffi::{c_char, c_int},
    fmt,
    str::{CStr, CString},
    sync::Arc,
    types::ForeignOwnable,
    uaccess::UserSlice,
};

/// The most bytes a `values` snapshot holds.
pub const VALUES_MAX: usize = 64 * 1024;

/// The type of a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    /// A string (escaped).
    Str,
    /// A decimal integer.
    Int,
}

impl FieldType {
    fn name(self) -> &'static str {
        match self {
            FieldType::Str => "str",
            FieldType::Int => "int",
        }
    }
}

/// A field of a metric's rows.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    /// Its name (no spaces).
    pub name: &'static str,
    /// Its type.
    pub ty: FieldType,
}

/// A value in a row.
#[derive(Clone, Copy, Debug)]
pub enum Value<'a> {
    /// A string field.
    Str(&'a [u8]),
    /// A signed integer field.
    Int(i64),
    /// An unsigned integer field.
    UInt(u64),
}

/// The row writer a callback gets: appends rows to the snapshot until it is full.
pub struct Emitter {
    buf: KVVec<u8>,
    nfields: usize,
    full: bool,
}

impl Emitter {
    fn new(nfields: usize) -> Self {
        Self { buf: KVVec::new(), nfields, full: false }
    }

    /// Appends one row, whose values are in the order of the metric's fields.
    /// Returns `false` once the snapshot is full (that row and all later ones
    /// are dropped): the callback may stop then. A row with the wrong number
    /// of values is skipped.
    pub fn emit(&mut self, row: &[Value<'_>]) -> bool {
        if self.full {
            return false;
        }
        if row.len() != self.nfields {
            return true;
        }
        let start = self.buf.len();
        let mut ok = true;
        for (i, v) in row.iter().enumerate() {
            if i > 0 {
                ok &= self.put(b" ");
            }
            ok &= match *v {
                Value::Str(s) => self.put_escaped(s),
                Value::Int(n) => self.put_int(n < 0, n.unsigned_abs()),
                Value::UInt(n) => self.put_int(false, n),
            };
        }
        ok &= self.put(b"\n");
        if !ok || self.buf.len() > VALUES_MAX {
            // SAFETY: `start` is not above the current length, and every byte
            // below it is initialised; `u8` needs no drop.
            unsafe { self.buf.set_len(start) };
            self.full = true;
        }
        !self.full
    }

    /// Whether the snapshot is full.
    pub fn is_full(&self) -> bool {
        self.full
    }

    fn put(&mut self, b: &[u8]) -> bool {
        self.buf.len() + b.len() <= VALUES_MAX && self.buf.extend_from_slice(b, GFP_KERNEL).is_ok()
    }

    fn put_escaped(&mut self, s: &[u8]) -> bool {
        s.iter().all(|&c| match c {
            b' ' => self.put(b"\\ "),
            b'\\' => self.put(b"\\\\"),
            b'\n' => self.put(b"\\n"),
            c => self.put(&[c]),
        })
    }

    fn put_int(&mut self, negative: bool, mut n: u64) -> bool {
        let mut digits = [0u8; 21];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        if negative {
            i -= 1;
            digits[i] = b'-';
        }
        self.put(&digits[i..])
    }
}

/// The callback of a metric: emits the rows of one `values` snapshot.
pub type EmitFn = dyn Fn(&mut Emitter) + Send + Sync;

/// A debugfs directory, removed (with all it holds) when the last
/// [`MetricDir`] and [`Metric`] referring to it are gone.
///
/// # Invariants
///
/// `dentry` is a directory made by `debugfs_create_dir` and not yet removed.
struct DirInner {
    dentry: *mut bindings::dentry,
}

// SAFETY: The dentry pointer is only passed to `debugfs_remove`, which may be
// called from any thread.
unsafe impl Send for DirInner {}
// SAFETY: `&DirInner` gives nothing but the pointer, used as a parent in
// `debugfs_create_*`, which the debugfs core serializes.
unsafe impl Sync for DirInner {}

impl Drop for DirInner {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the directory is still there; removing
        // it is the last use of the pointer.
        unsafe { bindings::debugfs_remove(self.dentry) };
    }
}

/// A directory at the root of debugfs that holds metrics.
pub struct MetricDir {
    inner: Arc<DirInner>,
}

impl MetricDir {
    /// Creates `/sys/kernel/debug/<name>`.
    pub fn new(name: &CStr) -> Result<Self> {
        // SAFETY: `name` is NUL-terminated; a NULL parent is the debugfs root.
        let dentry = from_err_ptr(unsafe { bindings::debugfs_create_dir(name.as_char_ptr(), core::ptr::null_mut()) })?;
        // INVARIANT: made by `debugfs_create_dir` just above.
        Ok(Self { inner: Arc::new(DirInner { dentry }, GFP_KERNEL)? })
    }
}

/// What the files of a metric read from; pointed to by their `i_private`.
struct MetricInfo {
    description: &'static str,
    fields: &'static [Field],
    cumulative: bool,
    emit: KBox<EmitFn>,
}

/// A registered metric; its directory goes when this is dropped.
///
/// # Invariants
///
/// `dentry` is the metric's directory, made by `debugfs_create_dir` in
/// `dir` and not yet removed; its files' `i_private` point to `*info`, which
/// stays where it is until the directory is removed.
pub struct Metric {
    dentry: *mut bindings::dentry,
    info: KBox<MetricInfo>,
    _dir: Arc<DirInner>,
}

// SAFETY: As for `DirInner`; `MetricInfo` is `Send + Sync` (its callback is).
unsafe impl Send for Metric {}
// SAFETY: `&Metric` gives access to nothing.
unsafe impl Sync for Metric {}

impl Metric {
    /// Registers metric `name` in `dir`: `description` for `annotations`,
    /// `fields` for `fields`, and `emit` called at each open of `values` to
    /// write one snapshot. `cumulative` adds the `CUMULATIVE` annotation.
    pub fn register(
        dir: &MetricDir,
        name: &str,
        description: &'static str,
        fields: &'static [Field],
        cumulative: bool,
        emit: KBox<EmitFn>,
    ) -> Result<Self> {
        if name.is_empty() || name.contains(['/', ' ']) || fields.is_empty() {
            return Err(EINVAL);
        }
        let cname = CString::try_from_fmt(fmt!("{}", name))?;
        let info = KBox::new(MetricInfo { description, fields, cumulative, emit }, GFP_KERNEL)?;
        // SAFETY: `cname` is NUL-terminated; `dir.inner.dentry` is a live
        // directory (`DirInner` invariant), kept by the reference we hold.
        let dentry = from_err_ptr(unsafe { bindings::debugfs_create_dir(cname.as_char_ptr(), dir.inner.dentry) })?;
        // INVARIANT: the directory was just made; the files below point to
        // `info`, whose heap address does not change when the box moves.
        let metric = Self { dentry, info, _dir: dir.inner.clone() };
        let data = (&*metric.info as *const MetricInfo).cast_mut().cast();
        for (file, fops) in [
            (c_str!("annotations"), &ANNOTATIONS_FOPS),
            (c_str!("fields"), &FIELDS_FOPS),
            (c_str!("values"), &VALUES_FOPS),
            (c_str!("version"), &VERSION_FOPS),
        ] {
            // SAFETY: `file` is NUL-terminated, `metric.dentry` is live, the
            // table is static and its `open` expects `i_private` to point to a
            // `MetricInfo`, which `data` does for as long as the file exists.
            // On failure `metric` is dropped, which removes what was made.
            from_err_ptr(unsafe { bindings::debugfs_create_file(file.as_char_ptr(), 0o444, metric.dentry, data, &fops.0) })?;
        }
        Ok(metric)
    }
}

impl Drop for Metric {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the directory is there. The removal
        // waits for opens in progress and refuses later ones, so no file
        // callback uses `info` after it returns; `info` is freed after this.
        unsafe { bindings::debugfs_remove(self.dentry) };
    }
}


/// A `struct file_operations` that may be shared between threads.
#[repr(transparent)]
struct Fops(bindings::file_operations);

// SAFETY: The tables are never written; they hold function pointers and a
// NULL owner (the code is built in).
unsafe impl Sync for Fops {}

/// Which file of a metric directory.
const ANNOTATIONS: u8 = 0;
const FIELDS: u8 = 1;
const VALUES: u8 = 2;
const VERSION: u8 = 3;

const fn fops<const K: u8>() -> Fops {
    // SAFETY: All-zero is a valid `struct file_operations`: NULL pointers and zeros.
    let zero: bindings::file_operations = unsafe { core::mem::MaybeUninit::zeroed().assume_init() };
    Fops(bindings::file_operations {
        open: Some(open_callback::<K>),
        read: Some(read_callback),
        llseek: Some(bindings::default_llseek),
        release: Some(release_callback),
        ..zero
    })
}

static ANNOTATIONS_FOPS: Fops = fops::<ANNOTATIONS>();
static FIELDS_FOPS: Fops = fops::<FIELDS>();
static VALUES_FOPS: Fops = fops::<VALUES>();
static VERSION_FOPS: Fops = fops::<VERSION>();

/// The content of file `K` of a metric.
fn snapshot<const K: u8>(info: &MetricInfo) -> Result<KVVec<u8>> {
    let mut e = Emitter::new(info.fields.len());
    let ok = match K {
        ANNOTATIONS => {
            e.put(b"DESCRIPTION ")
                && e.put_escaped(info.description.as_bytes())
                && e.put(b"\n")
                && (!info.cumulative || e.put(b"CUMULATIVE\n"))
        }
        FIELDS => {
            let names = info.fields.iter().enumerate().all(|(i, f)| (i == 0 || e.put(b" ")) && e.put(f.name.as_bytes()));
            let types = e.put(b"\n")
                && info.fields.iter().enumerate().all(|(i, f)| (i == 0 || e.put(b" ")) && e.put(f.ty.name().as_bytes()));
            names && types && e.put(b"\n")
        }
        VALUES => {
            (*info.emit)(&mut e);
            true
        }
        _ => e.put(b"1\n"),
    };
    if !ok {
        return Err(crate::error::code::ENOMEM);
    }
    Ok(e.buf)
}

/// # Safety
///
/// `inode` is a metric file made by [`Metric::register`], being opened through
/// debugfs (which keeps the file from being removed during the call); `file`
/// is the file being opened.
unsafe extern "C" fn open_callback<const K: u8>(inode: *mut bindings::inode, file: *mut bindings::file) -> c_int {
    // SAFETY: The caller guarantees `inode` is a metric file: its `i_private`
    // points to the `MetricInfo` of a registered metric, alive during the open.
    let info = unsafe { &*(*inode).i_private.cast::<MetricInfo>() };
    let snap = match snapshot::<K>(info).and_then(|s| Ok(KBox::new(s, GFP_KERNEL)?)) {
        Ok(s) => s,
        Err(e) => return e.to_errno(),
    };
    // SAFETY: The file is being opened and its private data is ours; it is
    // released in `release_callback`.
    unsafe { (*file).private_data = snap.into_foreign().cast_mut() };
    0
}

/// # Safety
///
/// `file` was opened by [`open_callback`] and not released; `buf` is a user
/// address of `size` bytes; `ppos` the position to use and advance.
unsafe extern "C" fn read_callback(
    file: *mut bindings::file,
    buf: *mut c_char,
    size: usize,
    ppos: *mut bindings::loff_t,
) -> isize {
    // SAFETY: The private data is the snapshot made at open, freed only at release.
    let snap = unsafe { <KBox<KVVec<u8>> as ForeignOwnable>::borrow((*file).private_data) };
    // SAFETY: The VFS passes a valid position pointer for the duration of the call.
    let pos = unsafe { *ppos };
    let Ok(pos) = usize::try_from(pos) else {
        return EINVAL.to_errno() as isize;
    };
    let Some(rest) = snap.as_slice().get(pos..) else {
        return 0;
    };
    let n = rest.len().min(size);
    if let Err(e) = UserSlice::new(buf as usize, n).writer().write_slice(&rest[..n]) {
        return e.to_errno() as isize;
    }
    // SAFETY: As above.
    unsafe { *ppos = (pos + n) as bindings::loff_t };
    n as isize
}

/// # Safety
///
/// `file` was opened by [`open_callback`]; this is its last reference.
unsafe extern "C" fn release_callback(_inode: *mut bindings::inode, file: *mut bindings::file) -> c_int {
    // SAFETY: The private data came from `into_foreign` in `open_callback` and
    // no borrow of it is alive. `i_private` is not touched: the metric may be gone.
    drop(unsafe { <KBox<KVVec<u8>> as ForeignOwnable>::from_foreign((*file).private_data) });
    0
}
