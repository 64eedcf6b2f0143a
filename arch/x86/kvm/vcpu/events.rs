// SPDX-License-Identifier: GPL-2.0

//! Event injection and halting (C: `kvm_check_and_inject_events()` and
//! `kvm_vcpu_has_events()` of `arch/x86/kvm/x86.c`, `kvm_vcpu_block()` of
//! `virt/kvm/kvm_main.c`): exceptions queued by emulation, NMIs, the PIC's
//! ExtINT, LAPIC and user-space interrupts, interrupt windows, and the sleep
//! of a halted vCPU.

use super::{mp, now_ns, X86Vcpu, RFLAGS_IF};
use crate::kvm_main::VcpuCtx;
use crate::stats::VcpuStat;
use crate::uapi::{exit, run};
use crate::x86::backend::{vector, Backend, Event, VendorVcpu};
use core::sync::atomic::Ordering;
use crate::kvm_main::halt_poll_ns;
use kernel::{prelude::*, smp::IrqDisabled, waitqueue::WaitResult};

impl<B: Backend> X86Vcpu<B> {
    pub(super) fn queue_exception(&mut self, vector: u8, error_code: Option<u32>) {
        self.pending_exception = Some(Event::Exception { vector, error_code });
    }

    pub(super) fn gp(&mut self) {
        self.queue_exception(vector::GP, Some(0));
    }

    pub(super) fn ud(&mut self) {
        self.queue_exception(vector::UD, None);
    }

    /// Picks the event to inject at the next entry (C: `kvm_check_and_inject_events()`).
    pub(super) fn inject_events(&mut self, ctx: &VcpuCtx<'_>) {
        self.hw.set_tpr(self.lapic.cr8() as u8);
        // An interrupt the TPR blocks: exit when the guest lowers CR8 below
        // its class (an ISR-blocked one waits for the EOI write, which exits).
        // IRR is scanned once here; nothing below changes it before `pending` is used.
        let (pending, irr) = if self.irqchip() { self.lapic.pending_and_highest_irr() } else { (None, None) };
        let threshold = match (pending, irr) {
            (None, Some(v)) if u64::from(v >> 4) <= self.lapic.cr8() => Some(v >> 4),
            _ => None,
        };
        self.hw.set_tpr_threshold(threshold);
        if let Some(ev) = self.reinject.take() {
            self.hw.inject(ev);
            return;
        }
        if let Some(ev) = self.pending_exception.take() {
            self.hw.inject(ev);
            return;
        }
        if self.nmi_pending && self.hw.nmi_allowed() {
            self.nmi_pending = false;
            ctx.stats.inc(VcpuStat::NmiInjections);
            self.hw.inject(Event::Nmi);
            return;
        }
        if self.irqchip() && self.vm.pic_output.load(Ordering::SeqCst) && self.lapic.accepts_pic_intr() {
            // An ExtINT from the PIC comes before the LAPIC's interrupts
            // (C: `kvm_cpu_has_extint()`); INTA is the guest taking it.
            if self.hw.interrupt_allowed() {
                if let Ok(v) = self.vm.with_irqchip(|chip, _| chip.pic.ack()) {
                    ctx.stats.inc(VcpuStat::IrqInjections);
                    self.hw.inject(Event::Interrupt { vector: v, soft: false });
                    return;
                }
            } else {
                self.hw.set_interrupt_window(true);
                return;
            }
        }
        if self.irqchip() {
            if let Some(v) = pending {
                if self.hw.interrupt_allowed() {
                    self.lapic.ack(v);
                    ctx.stats.inc(VcpuStat::IrqInjections);
                    self.hw.inject(Event::Interrupt { vector: v, soft: false });
                } else {
                    self.hw.set_interrupt_window(true);
                }
            }
        } else if let Some(v) = self.user_irq {
            if self.hw.interrupt_allowed() {
                self.user_irq = None;
                ctx.stats.inc(VcpuStat::IrqInjections);
                self.hw.inject(Event::Interrupt { vector: v, soft: false });
            } else {
                self.hw.set_interrupt_window(true);
            }
        } else if ctx.run.read_u8(run::REQUEST_INTERRUPT_WINDOW) != 0 && !self.hw.interrupt_allowed() {
            self.hw.set_interrupt_window(true);
        }
    }

    /// Whether a halted vCPU has something to wake for (C: `kvm_vcpu_has_events()`).
    fn has_wake_event(&self) -> bool {
        if self.nmi_pending {
            return true;
        }
        let if_set = self.hw.rflags() & RFLAGS_IF != 0;
        let extint = self.vm.pic_output.load(Ordering::SeqCst) && self.lapic.accepts_pic_intr();
        if_set && (self.lapic.highest_pending().is_some() || self.user_irq.is_some() || extint)
    }

    /// Waits while halted or waiting for INIT/SIPI; `Err(EINTR)` on a
    /// signal (C: `kvm_vcpu_halt()` and `kvm_vcpu_block()`). A halted vCPU
    /// first polls for up to its halt-polling window (`halt_poll.rs`), then
    /// sleeps; the window adapts to how long the halt lasted.
    pub(super) fn block(&mut self, ctx: &VcpuCtx<'_>) -> Result {
        // As in C, only a halt polls: not the wait for INIT or SIPI.
        let halt = matches!(self.mp_state, mp::HALTED | mp::AP_RESET_HOLD);
        let window = if halt { self.halt_poll.window(halt_poll_ns().unwrap_or(0)) } else { 0 };
        let k = self.shared.kicker.clone();
        // Set once the vCPU has found nothing to wake for: a halt whose event
        // was already there is no halt (C: `__kvm_emulate_halt()` does not
        // halt when `kvm_vcpu_has_events()`), and neither polls nor adapts.
        let mut start = None;
        let mut poll_end = 0;
        // Until when to poll (C: `stop`); 0 once polling is over.
        let mut poll_until = 0;
        let mut waited = false;
        // A kick left from before the halt would end the poll at once; what
        // it announced is posted already and looked at below.
        k.pending.store(false, Ordering::SeqCst);
        let r = loop {
            let due_in = self.eoi_inject_due();
            self.drain_posted();
            self.handle_init_sipi();
            match self.mp_state {
                mp::HALTED | mp::AP_RESET_HOLD if self.has_wake_event() => {
                    self.mp_state = mp::RUNNABLE;
                    break Ok(());
                }
                mp::RUNNABLE => break Ok(()),
                _ => {}
            }
            if start.is_none() {
                let now = now_ns();
                start = Some(now);
                poll_end = now;
                if window != 0 {
                    poll_until = now.saturating_add(u64::from(window));
                }
            }
            if poll_end < poll_until {
                // Everything that can end a halt kicks the vCPU: spin on the
                // kick, then look again above, until the window is over.
                // C also stops when another task is runnable on this CPU
                // (`single_task_running()`), which has no binding yet; a
                // reschedule the scheduler asks for, or a signal, stops it.
                loop {
                    let kicked = k.pending.swap(false, Ordering::SeqCst);
                    let work = kernel::smp::xfer_to_guest_work_pending(&IrqDisabled::new());
                    poll_end = now_ns();
                    if work {
                        poll_until = 0;
                    }
                    if kicked || work || poll_end >= poll_until {
                        break;
                    }
                    core::hint::spin_loop();
                }
                continue;
            }
            ctx.stats.set(VcpuStat::Blocking, 1);
            let sleep_start = now_ns();
            // A pending EOI-storm re-delivery may be what wakes this vCPU:
            // sleep no longer than until it is due.
            let timeout = due_in.map(|ns| (kernel::time::msecs_to_jiffies(ns.div_ceil(1_000_000).min(u64::from(u32::MAX)) as u32) as u64).max(1));
            let w = k.wq.wait_interruptible(|| k.pending.swap(false, Ordering::SeqCst), timeout);
            waited = true;
            let slept = now_ns().saturating_sub(sleep_start);
            ctx.stats.set(VcpuStat::Blocking, 0);
            ctx.stats.add(VcpuStat::HaltWaitNs, slept);
            ctx.stats.hist_add(VcpuStat::HaltWaitHist, slept);
            if w == WaitResult::Signal {
                ctx.stats.inc(VcpuStat::SignalExits);
                ctx.run.write_u32(run::EXIT_REASON, exit::INTR);
                break Err(EINTR);
            }
            ctx.stats.inc(VcpuStat::HaltWakeup);
        };
        let Some(start) = start else { return r };
        if window != 0 {
            // C: `update_halt_poll_stats()`. The poll succeeded if the vCPU
            // never slept, even if the event came just after the window.
            let poll_ns = poll_end.saturating_sub(start);
            ctx.stats.inc(VcpuStat::HaltAttemptedPoll);
            if waited {
                ctx.stats.add(VcpuStat::HaltPollFailNs, poll_ns);
                ctx.stats.hist_add(VcpuStat::HaltPollFailHist, poll_ns);
            } else {
                ctx.stats.inc(VcpuStat::HaltSuccessfulPoll);
                ctx.stats.add(VcpuStat::HaltPollSuccessNs, poll_ns);
                ctx.stats.hist_add(VcpuStat::HaltPollSuccessHist, poll_ns);
            }
        }
        if halt {
            // The limit is read again, as in C (it may change at run time there).
            self.halt_poll.update(now_ns().saturating_sub(start), halt_poll_ns().unwrap_or(0));
        }
        r
    }
}
