// SPDX-License-Identifier: GPL-2.0

//! Read-only module parameters (`/sys/module/NAME/parameters/PARAM`).
//!
//! 6.12's `module!` macro has no parameters. [`module_param_bool!`] declares one
//! boolean parameter the way C's `module_param(name, bool, 0444)` does: a
//! `struct kernel_param` in the `__param` section of the module, with the
//! kernel's `param_ops_bool`, plus the `parmtype`/`parm` modinfo entries.
//! Parameters are read-only (0444), so the value only changes while the module
//! loader parses `insmod` arguments, before the module's init runs.
//!
//! C header: [`include/linux/moduleparam.h`](srctree/include/linux/moduleparam.h)

use crate::{bindings, ffi::c_void, str::CStr};
use core::cell::UnsafeCell;

/// The storage of a read-only boolean parameter.
///
/// # Invariants
///
/// The value is written only by `param_ops_bool.set` while the module loader
/// parses the module's arguments, before any code of the module runs; the
/// sysfs file is read-only.
#[repr(transparent)]
pub struct BoolParam(UnsafeCell<bool>);

// SAFETY: After module load the value is never written (type invariant), so
// concurrent reads are fine.
unsafe impl Sync for BoolParam {}

impl BoolParam {
    /// A parameter with default value `v`.
    pub const fn new(v: bool) -> Self {
        Self(UnsafeCell::new(v))
    }

    /// The parameter's value.
    pub fn get(&self) -> bool {
        // SAFETY: No writer exists once module code runs (type invariant).
        unsafe { *self.0.get() }
    }
}

/// A `struct kernel_param` placed in the `__param` section.
#[repr(transparent)]
pub struct KernelParam(bindings::kernel_param);

// SAFETY: The descriptor is read-only data: pointers to a static name, the
// module, the kernel's `param_ops_bool` and a `BoolParam`.
unsafe impl Sync for KernelParam {}

impl KernelParam {
    /// The descriptor of read-only boolean parameter `name` stored in `value`.
    pub const fn new_bool(
        name: &'static CStr,
        owner: *mut bindings::module,
        value: &'static BoolParam,
    ) -> Self {
        Self(bindings::kernel_param {
            name: name.as_char_ptr(),
            mod_: owner,
            ops: &raw const bindings::param_ops_bool,
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

/// Declares a read-only (0444) boolean module parameter.
///
/// `module_param_bool!(FORCE_EMULATION_PREFIX, "force_emulation_prefix", false, "text")`
/// defines `static FORCE_EMULATION_PREFIX: BoolParam`, readable with `.get()`,
/// shown as `/sys/module/<module>/parameters/force_emulation_prefix`.
#[macro_export]
macro_rules! module_param_bool {
    ($var:ident, $name:literal, $default:expr, $desc:literal) => {
        static $var: $crate::module_param::BoolParam =
            $crate::module_param::BoolParam::new($default);
        const _: () = {
            #[cfg(MODULE)]
            #[link_section = "__param"]
            #[used]
            static PARAM: $crate::module_param::KernelParam =
                $crate::module_param::KernelParam::new_bool(
                    $crate::c_str!($name),
                    crate::THIS_MODULE.as_ptr(),
                    &$var,
                );
            const TYPE: &str = concat!("parmtype=", $name, ":bool");
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
