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
use kernel::{prelude::*, waitqueue::WaitResult};

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

    /// Sleeps while halted; `Err(EINTR)` on a signal (C: `kvm_vcpu_block()`).
    pub(super) fn block(&mut self, ctx: &VcpuCtx<'_>) -> Result {
        loop {
            let due_in = self.eoi_inject_due();
            self.drain_posted();
            self.handle_init_sipi();
            match self.mp_state {
                mp::HALTED | mp::AP_RESET_HOLD if self.has_wake_event() => {
                    self.mp_state = mp::RUNNABLE;
                    return Ok(());
                }
                mp::RUNNABLE => return Ok(()),
                _ => {}
            }
            let k = self.shared.kicker.clone();
            ctx.stats.set(VcpuStat::Blocking, 1);
            let start = now_ns();
            // A pending EOI-storm re-delivery may be what wakes this vCPU:
            // sleep no longer than until it is due.
            let timeout = due_in.map(|ns| (kernel::time::msecs_to_jiffies(ns.div_ceil(1_000_000).min(u64::from(u32::MAX)) as u32) as u64).max(1));
            let r = k.wq.wait_interruptible(|| k.pending.swap(false, Ordering::SeqCst), timeout);
            let slept = now_ns().saturating_sub(start);
            ctx.stats.set(VcpuStat::Blocking, 0);
            ctx.stats.add(VcpuStat::HaltWaitNs, slept);
            ctx.stats.hist_add(VcpuStat::HaltWaitHist, slept);
            if r == WaitResult::Signal {
                ctx.stats.inc(VcpuStat::SignalExits);
                ctx.run.write_u32(run::EXIT_REASON, exit::INTR);
                return Err(EINTR);
            }
            ctx.stats.inc(VcpuStat::HaltWakeup);
        }
    }
}
