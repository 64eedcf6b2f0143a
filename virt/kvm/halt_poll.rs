// SPDX-License-Identifier: GPL-2.0

//! Halt polling (C: the polling part of `kvm_vcpu_halt()`, with
//! `grow_halt_poll_ns()` and `shrink_halt_poll_ns()`, in `virt/kvm/kvm_main.c`):
//! how long a halted vCPU waits for its wake-up event spinning, before it
//! sleeps, and how that window adapts from one halt to the next.
//!
//! A vCPU that sleeps gives its CPU away; its wake-up then costs a trip
//! through the scheduler and, if the CPU went idle meanwhile, the CPU's way
//! out of idle. An event that comes within the window (an IPI answered at
//! once, a short timer) is taken without either. The window starts at zero,
//! grows while halts end within the limit, and shrinks when they outlast it,
//! so a vCPU that halts for long does not burn its CPU.
//!
//! Depends only on `core`: also compiled by `tools/testing/kvm-rs-host`.

/// The default limit of the window (x86's `KVM_HALT_POLL_NS_DEFAULT`), in ns:
/// the `halt_poll_ns` module parameter.
pub(crate) const HALT_POLL_NS_DEFAULT: u32 = 200_000;

/// The factor by which a window that was too short grows (`halt_poll_ns_grow`).
const GROW: u32 = 2;
/// The first non-zero window (`halt_poll_ns_grow_start`, 10 µs); a window
/// that shrinks below it becomes zero.
const GROW_START: u32 = 10_000;
/// The divisor of a window that was too long (`halt_poll_ns_shrink`).
const SHRINK: u32 = 2;

/// A vCPU's polling window in ns (C: `vcpu->halt_poll_ns`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct HaltPoll {
    ns: u32,
}

impl HaltPoll {
    /// No polling until a short halt has been seen.
    pub(crate) const fn new() -> Self {
        Self { ns: 0 }
    }

    /// The window of the next halt, first capped at the current limit `max`
    /// (the module parameter may have been lowered since it grew).
    pub(crate) fn window(&mut self, max: u32) -> u32 {
        self.ns = self.ns.min(max);
        self.ns
    }

    /// Adapts the window after a halt that lasted `halt_ns`, polling
    /// included, under the limit `max`: a halt that ended within the window
    /// leaves it as it is; one longer than the limit shrinks it; one between
    /// the two grows it, so that the next such halt ends while polling.
    pub(crate) fn update(&mut self, halt_ns: u64, max: u32) {
        if max == 0 {
            self.ns = 0;
        } else if halt_ns <= u64::from(self.ns) {
        } else if self.ns != 0 && halt_ns > u64::from(max) {
            self.ns /= SHRINK;
            if self.ns < GROW_START {
                self.ns = 0;
            }
        } else if self.ns < max && halt_ns < u64::from(max) {
            self.ns = self.ns.saturating_mul(GROW).max(GROW_START);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u32 = HALT_POLL_NS_DEFAULT;

    #[test]
    fn starts_without_polling() {
        let mut p = HaltPoll::new();
        assert_eq!(p.window(MAX), 0);
    }

    #[test]
    fn halts_that_outlast_the_window_grow_it_to_the_limit() {
        let mut p = HaltPoll::new();
        let mut seen = [0u32; 7];
        for w in seen.iter_mut() {
            p.update(190_000, MAX);
            *w = p.window(MAX);
        }
        // 10 µs, then doubling; 320 µs is capped by window(), and a halt
        // within the window then keeps it.
        assert_eq!(
            seen,
            [10_000, 20_000, 40_000, 80_000, 160_000, 200_000, 200_000]
        );
    }

    #[test]
    fn a_halt_within_the_window_keeps_it() {
        let mut p = HaltPoll { ns: 40_000 };
        p.update(40_000, MAX);
        assert_eq!(p.window(MAX), 40_000);
        p.update(5_000, MAX);
        assert_eq!(p.window(MAX), 40_000);
    }

    #[test]
    fn long_halts_shrink_the_window_to_zero() {
        let mut p = HaltPoll { ns: MAX };
        p.update(u64::from(MAX) + 1, MAX);
        assert_eq!(p.window(MAX), 100_000);
        for _ in 0..3 {
            p.update(10_000_000, MAX);
        }
        // 50, 25, then 12.5 µs: still at least the 10 µs start; halving once more is not.
        assert_eq!(p.window(MAX), 12_500);
        p.update(10_000_000, MAX);
        assert_eq!(p.window(MAX), 0);
        // A zero window stays zero on long halts.
        p.update(10_000_000, MAX);
        assert_eq!(p.window(MAX), 0);
    }

    #[test]
    fn a_halt_between_window_and_limit_grows_it() {
        let mut p = HaltPoll { ns: 10_000 };
        p.update(150_000, MAX);
        assert_eq!(p.window(MAX), 20_000);
    }

    #[test]
    fn limit_zero_turns_polling_off() {
        let mut p = HaltPoll { ns: 80_000 };
        p.update(1_000, 0);
        assert_eq!(p.window(0), 0);
        p.update(1_000, 0);
        assert_eq!(p.window(MAX), 0);
    }

    #[test]
    fn a_lowered_limit_caps_the_window() {
        let mut p = HaltPoll { ns: 160_000 };
        assert_eq!(p.window(50_000), 50_000);
        p.update(1_000, 50_000);
        assert_eq!(p.window(50_000), 50_000);
    }
}
