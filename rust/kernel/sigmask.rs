// SPDX-License-Identifier: GPL-2.0

//! A signal mask for a stretch of kernel work done on behalf of a task, such
//! as `KVM_RUN` with `KVM_SET_SIGNAL_MASK`: the task's blocked set is
//! replaced on entry and restored on exit, so that a signal the task blocks
//! in user space can interrupt the work (C: `kvm_sigset_activate()`).
//!
//! C header: [`include/linux/signal.h`](srctree/include/linux/signal.h)

use crate::bindings;
use core::marker::PhantomData;

/// SIGKILL's bit.
const SIGKILL_BIT: u64 = 1 << (9 - 1);
/// SIGSTOP's bit.
const SIGSTOP_BIT: u64 = 1 << (19 - 1);

/// A signal set: bit `n - 1` is signal `n` (the kernel's `sigset_t` on 64-bit
/// architectures, one word).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SigSet(u64);

impl SigSet {
    /// The set from the bytes user space passes (`sizeof(sigset_t)` = 8);
    /// SIGKILL and SIGSTOP can never be blocked, as `sigdelsetmask()` ensures.
    pub fn from_user_bits(bits: u64) -> Self {
        Self(bits & !(SIGKILL_BIT | SIGSTOP_BIT))
    }

    /// The raw bits.
    pub fn bits(&self) -> u64 {
        self.0
    }

    /// Makes this the current task's blocked set until the returned guard is
    /// dropped (on the same task), when the task's own set comes back.
    pub fn activate(&self) -> ActiveSigMask {
        // SAFETY: Replaces the current task's blocked set, keeping the old one
        // in `current->real_blocked`, as the C KVM does around KVM_RUN.
        unsafe { bindings::kvm_rs_sigset_activate(self.0) };
        ActiveSigMask { _not_send: PhantomData }
    }
}

/// The task runs with a [`SigSet`] as its blocked set; restored on drop.
pub struct ActiveSigMask {
    _not_send: PhantomData<*mut ()>,
}

impl Drop for ActiveSigMask {
    fn drop(&mut self) {
        // SAFETY: Undoes `activate` on the same task (the guard is not `Send`).
        unsafe { bindings::kvm_rs_sigset_deactivate() };
    }
}
