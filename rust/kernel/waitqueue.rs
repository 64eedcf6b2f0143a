// SPDX-License-Identifier: GPL-2.0

//! A wait queue on which a task sleeps until a condition holds
//! (`wait_event_interruptible_timeout()`), woken from any context, including
//! hard interrupts.
//!
//! Unlike [`CondVar`](crate::sync::CondVar), no lock is involved: the
//! condition is re-checked after the task is on the queue and marked
//! sleeping, so a wake-up between the check and the sleep is never lost. The
//! condition must be something a waker sets before it calls
//! [`WaitQueue::wake_all`] (e.g. an atomic flag).
//!
//! C header: [`include/linux/wait.h`](srctree/include/linux/wait.h)

use crate::{
    bindings,
    init::PinInit,
    pin_init,
    str::CStr,
    sync::LockClassKey,
    task::{MAX_SCHEDULE_TIMEOUT, TASK_INTERRUPTIBLE},
    types::Opaque,
};
use core::marker::PhantomPinned;
use macros::pin_data;

/// Creates a [`WaitQueue`] initialiser with a new lock class.
#[macro_export]
macro_rules! new_waitqueue {
    ($($name:literal)?) => {
        $crate::waitqueue::WaitQueue::new($crate::optional_name!($($name)?), $crate::static_lock_class!())
    };
}

/// Why [`WaitQueue::wait_interruptible`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitResult {
    /// The condition holds.
    Ready,
    /// A signal is pending.
    Signal,
    /// The timeout expired.
    Timeout,
}

/// A `struct wait_queue_head`.
///
/// # Invariants
///
/// `head` was initialised by `__init_waitqueue_head` and is pinned.
#[pin_data]
pub struct WaitQueue {
    #[pin]
    head: Opaque<bindings::wait_queue_head>,
    #[pin]
    _pin: PhantomPinned,
}

// SAFETY: A wait queue head is used through its own internal lock from any thread.
unsafe impl Send for WaitQueue {}
// SAFETY: As above.
unsafe impl Sync for WaitQueue {}

impl WaitQueue {
    /// An empty queue.
    pub fn new(name: &'static CStr, key: &'static LockClassKey) -> impl PinInit<Self> {
        pin_init!(Self {
            // SAFETY: `slot` is valid pinned memory; `name` and `key` are static.
            head <- Opaque::ffi_init(|slot| unsafe {
                bindings::__init_waitqueue_head(slot, name.as_char_ptr(), key.as_ptr())
            }),
            _pin: PhantomPinned,
        })
    }

    /// Sleeps until `cond()` holds, a signal arrives, or `timeout_jiffies`
    /// pass (`None`: no timeout). May sleep: process context only.
    pub fn wait_interruptible(&self, cond: impl Fn() -> bool, timeout_jiffies: Option<u64>) -> WaitResult {
        let mut left: isize = match timeout_jiffies {
            Some(j) => j.min(isize::MAX as u64 - 1) as isize,
            None => MAX_SCHEDULE_TIMEOUT as isize,
        };
        let entry = Opaque::<bindings::wait_queue_entry>::uninit();
        // SAFETY: `entry` is valid stack memory; `init_wait` sets it up for
        // the current task.
        unsafe { bindings::init_wait(entry.get()) };
        let r = loop {
            // SAFETY: `head` is initialised (type invariant) and `entry`
            // valid; this queues the task and sets its state before the
            // condition is checked, so a concurrent wake-up is not lost.
            let intr = unsafe {
                bindings::prepare_to_wait_event(self.head.get(), entry.get(), TASK_INTERRUPTIBLE as _)
            };
            if cond() {
                break WaitResult::Ready;
            }
            if intr != 0 {
                break WaitResult::Signal;
            }
            if left == 0 {
                break WaitResult::Timeout;
            }
            // SAFETY: Sleeping in process context, state set above.
            left = unsafe { bindings::schedule_timeout(left as _) } as isize;
        };
        // SAFETY: `entry` was queued on `head` by `prepare_to_wait_event`.
        unsafe { bindings::finish_wait(self.head.get(), entry.get()) };
        r
    }

    /// Wakes every task waiting on the queue. Allowed in any context.
    pub fn wake_all(&self) {
        // SAFETY: `head` is initialised; `__wake_up` takes its lock with
        // interrupts disabled, so it may run in hard interrupt context.
        unsafe { bindings::__wake_up(self.head.get(), bindings::TASK_NORMAL, 0, core::ptr::null_mut()) };
    }
}

/// Sends a reschedule IPI to `cpu` (`smp_send_reschedule()`): a task in
/// guest mode there exits to the host. Allowed in any context, including
/// hard interrupts; does not wait.
pub fn send_reschedule(cpu: u32) {
    if cpu < crate::smp::nr_cpu_ids() && crate::smp::cpu_online(cpu) {
        // SAFETY: `cpu` is a valid online CPU number.
        unsafe { bindings::kvm_rs_send_reschedule(cpu as _) };
    }
}
