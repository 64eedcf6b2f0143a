// SPDX-License-Identifier: GPL-2.0

//! CPUs.
//!
//! C header: [`include/linux/cpumask.h`](srctree/include/linux/cpumask.h)

/// The number of online CPUs (a snapshot: CPUs may come and go).
pub fn num_online_cpus() -> u32 {
    // SAFETY: Reads the online-CPU count; always safe to call.
    unsafe { crate::bindings::num_online_cpus() }
}
