// SPDX-License-Identifier: GPL-2.0

//! Read-only module parameters (`/sys/module/NAME/parameters/PARAM`).
//!
//! 6.12's `module!` macro has no parameters. [`module_param!`] declares one the
//! way C's `module_param(name, type, 0444)` does: a `struct kernel_param` in the
//! `__param` section of the module, with the kernel's `param_ops_bool` or
//! `param_ops_int`, plus the `parmtype`/`parm` modinfo entries.
//! Parameters are read-only (0444): the value changes while the module loader
//! parses `insmod` arguments, before the module's init runs, and afterwards
//! only through [`Param::set`], with which a module reports what it found
//! (as C modules write their parameter variables, e.g. kvm-intel's
//! `enable_vpid` when the CPU has no VPID).
//!
//! C header: [`include/linux/moduleparam.h`](srctree/include/linux/moduleparam.h)

use crate::{bindings, ffi::c_void, str::CStr};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// A parameter type the kernel's `param_ops_*` can parse: `bool` (`param_ops_bool`)
/// or `i32` (`param_ops_int`); [`module_param!`] pairs each with its operations.
pub trait ParamType: Copy + Send + 'static {
    /// Reads the value at `p` atomically.
    ///
    /// # Safety
    ///
    /// `p` is valid and aligned for `Self`, and every concurrent access from
    /// Rust is atomic.
    #[doc(hidden)]
    unsafe fn load(p: *mut Self) -> Self;
    /// Writes the value at `p` atomically.
    ///
    /// # Safety
    ///
    /// As for [`ParamType::load`].
    #[doc(hidden)]
    unsafe fn store(p: *mut Self, v: Self);
}

impl ParamType for bool {
    unsafe fn load(p: *mut Self) -> Self {
        // SAFETY: Per the caller: valid, aligned, accessed atomically.
        unsafe { AtomicBool::from_ptr(p) }.load(Ordering::Relaxed)
    }
    unsafe fn store(p: *mut Self, v: Self) {
        // SAFETY: Per the caller: valid, aligned, accessed atomically.
        unsafe { AtomicBool::from_ptr(p) }.store(v, Ordering::Relaxed)
    }
}

impl ParamType for i32 {
    unsafe fn load(p: *mut Self) -> Self {
        // SAFETY: Per the caller: valid, aligned, accessed atomically.
        unsafe { AtomicI32::from_ptr(p) }.load(Ordering::Relaxed)
    }
    unsafe fn store(p: *mut Self, v: Self) {
        // SAFETY: Per the caller: valid, aligned, accessed atomically.
        unsafe { AtomicI32::from_ptr(p) }.store(v, Ordering::Relaxed)
    }
}

/// The storage of a read-only parameter.
///
/// # Invariants
///
/// The value is written by the type's `param_ops_*.set` while the module
/// loader parses the module's arguments, before any code of the module runs
/// (the sysfs file is read-only), and afterwards only atomically by
/// [`Param::set`]; Rust reads it atomically. The kernel's `param_ops_*.get`
/// (a sysfs read) reads the aligned scalar once.
#[repr(transparent)]
pub struct Param<T: ParamType>(UnsafeCell<T>);

// SAFETY: Every access after module load is atomic (type invariant).
unsafe impl<T: ParamType> Sync for Param<T> {}

impl<T: ParamType> Param<T> {
    /// A parameter with default value `v`.
    pub const fn new(v: T) -> Self {
        Self(UnsafeCell::new(v))
    }

    /// The parameter's value.
    pub fn get(&self) -> T {
        // SAFETY: The cell is valid and aligned; Rust accesses it only
        // atomically once module code runs (type invariant).
        unsafe { T::load(self.0.get()) }
    }

    /// Changes the value shown in sysfs: for a module that reports what it
    /// found rather than what was asked (C: `enable_vpid = 0` in kvm-intel's
    /// `hardware_setup()`). The file stays read-only.
    pub fn set(&self, v: T) {
        // INVARIANT: An atomic write after load.
        // SAFETY: As in `get`.
        unsafe { T::store(self.0.get(), v) }
    }
}

/// A `struct kernel_param` placed in the `__param` section.
#[repr(transparent)]
pub struct KernelParam(bindings::kernel_param);

// SAFETY: The descriptor is read-only data: pointers to a static name, the
// module, the kernel's `param_ops_*` and a `Param`.
unsafe impl Sync for KernelParam {}

impl KernelParam {
    /// The descriptor of read-only parameter `name` stored in `value`, parsed
    /// and printed by `ops`, which must be the kernel's operations for `T`.
    pub const fn new<T: ParamType>(
        name: &'static CStr,
        owner: *mut bindings::module,
        ops: *const bindings::kernel_param_ops,
        value: &'static Param<T>,
    ) -> Self {
        Self(bindings::kernel_param {
            name: name.as_char_ptr(),
            mod_: owner,
            ops,
            perm: 0o444,
            level: -1,
            flags: 0,
            __bindgen_anon_1: bindings::kernel_param__bindgen_ty_1 {
                arg: value.0.get().cast::<c_void>(),
            },
        })
    }
}

/// Copies `s` into a NUL-terminated byte array of length `N` (`s.len() + 1`),
/// for `.modinfo` strings built with `concat!`.
pub const fn modinfo_bytes<const N: usize>(s: &str) -> [u8; N] {
    let b = s.as_bytes();
    assert!(b.len() + 1 == N);
    let mut out = [0u8; N];
    let mut i = 0;
    while i < b.len() {
        out[i] = b[i];
        i += 1;
    }
    out
}

/// Declares a read-only (0444) module parameter of type `bool` or `i32`.
///
/// `module_param!(FORCE_EMULATION_PREFIX: i32 = 0, "force_emulation_prefix", "text")`
/// defines `static FORCE_EMULATION_PREFIX: Param<i32>`, readable with `.get()`,
/// shown as `/sys/module/<module>/parameters/force_emulation_prefix`.
#[macro_export]
macro_rules! module_param {
    ($var:ident : bool = $default:expr, $name:literal, $desc:literal) => {
        $crate::module_param!(@impl $var, bool, "bool", param_ops_bool, $default, $name, $desc);
    };
    ($var:ident : i32 = $default:expr, $name:literal, $desc:literal) => {
        $crate::module_param!(@impl $var, i32, "int", param_ops_int, $default, $name, $desc);
    };
    (@impl $var:ident, $t:ty, $tname:literal, $ops:ident, $default:expr, $name:literal, $desc:literal) => {
        static $var: $crate::module_param::Param<$t> = $crate::module_param::Param::new($default);
        const _: () = {
            #[cfg(MODULE)]
            #[link_section = "__param"]
            #[used]
            static PARAM: $crate::module_param::KernelParam = $crate::module_param::KernelParam::new(
                $crate::c_str!($name),
                crate::THIS_MODULE.as_ptr(),
                &raw const $crate::bindings::$ops,
                &$var,
            );
            const TYPE: &str = concat!("parmtype=", $name, ":", $tname);
            #[cfg(MODULE)]
            #[link_section = ".modinfo"]
            #[used]
            static PARMTYPE: [u8; TYPE.len() + 1] = $crate::module_param::modinfo_bytes(TYPE);
            const DESC: &str = concat!("parm=", $name, ":", $desc);
            #[cfg(MODULE)]
            #[link_section = ".modinfo"]
            #[used]
            static PARM: [u8; DESC.len() + 1] = $crate::module_param::modinfo_bytes(DESC);
        };
    };
}
