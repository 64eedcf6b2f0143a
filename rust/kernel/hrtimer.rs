// SPDX-License-Identifier: GPL-2.0

//! High-resolution timers (`struct hrtimer`), one-shot, on `CLOCK_MONOTONIC`,
//! firing in hard interrupt context.
//!
//! An [`HrTimer`] carries its callback's data inline; the callback gets a
//! shared reference to it and runs with interrupts disabled, so it may only
//! do what is allowed there (atomics, waking tasks, sending IPIs with
//! `smp_send_reschedule`), never sleep or take a lock that process context
//! holds with interrupts enabled.
//!
//! C header: [`include/linux/hrtimer.h`](srctree/include/linux/hrtimer.h)

use crate::{
    bindings,
    init::PinInit,
    pin_init,
    types::Opaque,
};
use core::marker::PhantomPinned;
use macros::{pin_data, pinned_drop};

/// What a timer does when it fires.
pub trait HrTimerCallback: Send + Sync {
    /// Called in hard interrupt context when the timer expires.
    fn fired(&self);
}

/// A one-shot high-resolution timer whose callback gets `&T`.
///
/// # Invariants
///
/// `timer` was set up by `hrtimer_init` with [`timer_callback::<T>`] as its
/// function; it is cancelled (and its callback finished) before the memory
/// goes away (`Drop`). It is pinned, since the timer core links it.
#[repr(C)]
#[pin_data(PinnedDrop)]
pub struct HrTimer<T: HrTimerCallback> {
    #[pin]
    timer: Opaque<bindings::hrtimer>,
    data: T,
    #[pin]
    _pin: PhantomPinned,
}

// SAFETY: The C timer is used through the timer core's own locking; `T` is
// `Send + Sync`.
unsafe impl<T: HrTimerCallback> Send for HrTimer<T> {}
// SAFETY: `&HrTimer` allows starting and cancelling, both safe from any thread.
unsafe impl<T: HrTimerCallback> Sync for HrTimer<T> {}

unsafe extern "C" fn timer_callback<T: HrTimerCallback>(
    timer: *mut bindings::hrtimer,
) -> bindings::hrtimer_restart {
    // SAFETY: `timer` is the `timer` field of a live, pinned `HrTimer<T>`
    // (type invariant: it is cancelled before it is freed).
    let this = unsafe { &*crate::container_of!(timer, HrTimer<T>, timer) };
    this.data.fired();
    bindings::hrtimer_restart_HRTIMER_NORESTART
}

impl<T: HrTimerCallback> HrTimer<T> {
    /// A stopped timer holding `data`.
    pub fn new(data: T) -> impl PinInit<Self> {
        pin_init!(Self {
            // SAFETY: `slot` is valid, pinned memory for a `struct hrtimer`;
            // `hrtimer_init` sets it up completely.
            timer <- Opaque::ffi_init(|slot: *mut bindings::hrtimer| unsafe {
                bindings::hrtimer_init(
                    slot,
                    bindings::CLOCK_MONOTONIC as _,
                    bindings::hrtimer_mode_HRTIMER_MODE_ABS_HARD,
                );
                (*slot).function = Some(timer_callback::<T>);
            }),
            data,
            _pin: PhantomPinned,
        })
    }

    /// The callback's data.
    pub fn data(&self) -> &T {
        &self.data
    }

    /// (Re)arms the timer to fire at `expires_ns` on `CLOCK_MONOTONIC`
    /// (the clock of [`crate::time::Ktime::ktime_get`]); a time in the past
    /// fires at once.
    pub fn start_at(&self, expires_ns: u64) {
        let t = expires_ns.min(i64::MAX as u64) as i64;
        // SAFETY: The timer was initialised (type invariant); re-arming an
        // armed timer is allowed.
        unsafe {
            bindings::hrtimer_start_range_ns(self.timer.get(), t, 0, bindings::hrtimer_mode_HRTIMER_MODE_ABS_HARD)
        };
    }

    /// Stops the timer and waits for a running callback to finish. Must not
    /// be called from the callback itself.
    pub fn cancel(&self) {
        // SAFETY: The timer was initialised (type invariant).
        unsafe { bindings::hrtimer_cancel(self.timer.get()) };
    }
}

#[pinned_drop]
impl<T: HrTimerCallback> PinnedDrop for HrTimer<T> {
    fn drop(self: core::pin::Pin<&mut Self>) {
        self.cancel();
    }
}
