// SPDX-License-Identifier: GPL-2.0

//! The vCPU's side of the in-kernel local APIC (C: the vCPU glue of
//! `arch/x86/kvm/lapic.c`, with `kvm_apic_accept_events()`): the host timer
//! behind the LAPIC timer, interrupts posted by other vCPUs and devices,
//! INIT and SIPI, IPIs, EOIs passed on to the IOAPIC, and the LAPIC view
//! published for interrupt routing.

use super::{mp, now_ns, X86Vcpu};
use crate::x86::backend::{Backend, VendorVcpu};
use crate::x86::ioapic;
use crate::x86::lapic::{self, Action, Delivered, HostTimer};
use crate::x86::regs::{KvmSegment, Seg};
use crate::x86::ApicRouter;
use core::sync::atomic::Ordering;

impl<B: Backend> X86Vcpu<B> {
    /// Arms, re-arms or stops the host timer to match what the LAPIC needs.
    pub(super) fn sync_timer(&mut self) {
        let want = self.lapic.host_timer();
        if want == self.armed {
            return;
        }
        self.armed = want;
        match want {
            HostTimer::Off => self.shared.timer.cancel(),
            HostTimer::At { expires_ns } => self.shared.timer.start_at(expires_ns),
            HostTimer::TscDeadline { tsc } => {
                // Guest TSC ticks to host nanoseconds at the guest TSC rate.
                let khz = u64::from(self.vm.tsc_khz.load(Ordering::Relaxed)).max(1);
                let now_tsc = self.guest_tsc();
                let delta_ns = tsc.saturating_sub(now_tsc).saturating_mul(1_000_000) / khz;
                self.shared.timer.start_at(now_ns().saturating_add(delta_ns));
            }
        }
    }

    /// Moves interrupts posted by other vCPUs and devices into the LAPIC.
    pub(super) fn drain_posted(&mut self) {
        if self.shared.kicker.timer_fired.swap(false, Ordering::SeqCst) {
            let exp = self.lapic.timer_fired(now_ns());
            if exp.delivered == Delivered::Nmi {
                self.nmi_pending = true;
            }
            // A periodic timer re-arms: what was armed has fired.
            self.armed = HostTimer::Off;
            self.sync_timer();
        }
        if self.shared.posted_nmi.swap(false, Ordering::SeqCst) {
            self.nmi_pending = true;
        }
        if self.shared.posted_init.swap(false, Ordering::SeqCst) {
            let irq = lapic::Irq { vector: 0, mode: lapic::DeliveryMode::Init, level: true, level_triggered: false };
            self.lapic.accept(&irq);
        }
        let sipi = self.shared.posted_sipi.swap(0, Ordering::SeqCst);
        if sipi != 0 {
            let irq = lapic::Irq {
                vector: (sipi & 0xff) as u8,
                mode: lapic::DeliveryMode::StartUp,
                level: true,
                level_triggered: false,
            };
            self.lapic.accept(&irq);
        }
        let _ = self.drain_posted_irr();
        if self.shared.rtc_restore.load(Ordering::Relaxed) {
            self.rtc_restore();
        }
    }

    /// Moves the fixed interrupts posted by other vCPUs and devices into
    /// the LAPIC's IRR (C: `sync_pir_to_irr()`, also done before
    /// `KVM_GET_LAPIC` and `KVM_SET_LAPIC`).
    /// Returns whether there were any.
    pub(super) fn drain_posted_irr(&mut self) -> bool {
        // Plain loads first: nothing is posted on most entries. A post that
        // these miss is not lost: the poster sets the kicker's `pending`
        // after the vector, and `run_loop` checks `pending` with the vCPU
        // already in guest mode (else the poster sees that mode and IPIs).
        let posted = &self.shared.posted_irr;
        if posted[0].load(Ordering::Relaxed)
            | posted[1].load(Ordering::Relaxed)
            | posted[2].load(Ordering::Relaxed)
            | posted[3].load(Ordering::Relaxed)
            == 0
        {
            return false;
        }
        let mut any = false;
        for w in 0..4 {
            let irr = self.shared.posted_irr[w].swap(0, Ordering::SeqCst);
            if irr == 0 {
                continue;
            }
            any = true;
            let tmr = self.shared.posted_tmr[w].fetch_and(!irr, Ordering::SeqCst);
            for b in 0..64 {
                if irr & (1 << b) != 0 {
                    let v = (w * 64 + b) as u8;
                    self.lapic.accept_fixed(v, tmr & (1 << b) != 0);
                }
            }
        }
        any
    }

    /// `kvm_rtc_eoi_tracking_restore_one()`: records in the IOAPIC's RTC
    /// EOI tracking whether this vCPU still owes an EOI for the RTC's
    /// vector, from its LAPIC as it is now (after `KVM_SET_LAPIC`, and after
    /// `KVM_SET_IRQCHIP` restored the IOAPIC, see [`crate::x86::VcpuShared::rtc_view`]).
    pub(super) fn rtc_restore(&mut self) {
        self.shared.rtc_restore.store(false, Ordering::SeqCst);
        if !self.irqchip() {
            return;
        }
        let flags = self.vm.lapic_flags();
        let (lapic, id) = (&self.lapic, self.shared.id);
        let _ = self.vm.with_irqchip(|chip, _| {
            let (dest, vector) = chip.ioapic.rtc_target();
            let is_dest = lapic.matches_dest(&dest, lapic::Source::Device, &flags);
            chip.ioapic.rtc_restore_one(id, is_dest, lapic.pending_eoi(vector));
        });
    }

    /// Runs the IOAPIC's delayed EOI-storm re-delivery once it is due (C:
    /// `kvm_ioapic_eoi_inject_work()`, a delayed work item): whichever vCPU
    /// gets here first after the deadline does it. Returns how long until it
    /// is due, if it is pending.
    pub(super) fn eoi_inject_due(&self) -> Option<u64> {
        let at = self.vm.eoi_inject_at.load(Ordering::SeqCst);
        if at == 0 {
            return None;
        }
        let now = now_ns();
        if now < at {
            return Some(at - now);
        }
        if self.vm.eoi_inject_at.compare_exchange(at, 0, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            let _ = self.vm.with_irqchip(|chip, bus| chip.ioapic.eoi_inject_work(bus));
        }
        None
    }

    /// INIT and SIPI from the LAPIC (C: `kvm_apic_accept_events()`).
    pub(super) fn handle_init_sipi(&mut self) {
        if self.lapic.take_init() {
            let bsp = self.lapic.apic_base() & lapic::APICBASE_BSP != 0;
            self.lapic.init(bsp, &self.vm.lapic_flags());
            self.publish_apic();
            self.sync_timer();
            self.hw.reset();
            self.reset_gprs();
            self.mp_state = if bsp { mp::RUNNABLE } else { mp::INIT_RECEIVED };
        }
        if let Some(v) = self.lapic.take_sipi() {
            self.sipi_vector = v;
            if self.mp_state == mp::INIT_RECEIVED {
                let cs = KvmSegment {
                    selector: u16::from(v) << 8,
                    base: u64::from(v) << 12,
                    ..self.hw.seg(Seg::Cs)
                };
                self.hw.set_seg(Seg::Cs, &cs);
                self.rip = 0;
                self.mp_state = mp::RUNNABLE;
            }
        }
    }

    /// Carries out what a LAPIC register write asked for.
    pub(super) fn lapic_action(&mut self, a: Option<Action>) {
        self.publish_apic();
        match a {
            Some(Action::Ipi(ipi)) => self.send_ipi(&ipi),
            // An EOI of a vector no IOAPIC entry ever had (IPIs, the LAPIC
            // timer, MSIs) is not the IOAPIC's business: skipping it keeps
            // the irqchip and vCPU-list locks out of every such EOI, where a
            // vCPU sending IPIs contended for them with the one taking them.
            Some(Action::Eoi { vector, .. }) if !self.vm.is_ioapic_vector(vector) => {}
            Some(Action::Eoi { vector, level_triggered }) => {
                // The IOAPIC learns of the EOI (remote IRR, re-delivery of a
                // still-asserted level line).
                let (id, directed) = (self.shared.id, self.lapic.suppress_eoi_broadcast());
                let out = self.vm.with_irqchip_from(Some(id), |chip, bus| {
                    chip.ioapic.eoi(id, vector, level_triggered, directed, bus)
                });
                if out.is_ok_and(|o| o.schedule_inject) {
                    // An EOI storm: the line's next delivery waits 10 ms (C:
                    // `schedule_delayed_work(&ioapic->eoi_inject, HZ / 100)`,
                    // not moved if already pending).
                    let at = now_ns().saturating_add(ioapic::EOI_INJECT_DELAY_NS).max(1);
                    let _ = self.vm.eoi_inject_at.compare_exchange(0, at, Ordering::SeqCst, Ordering::SeqCst);
                }
            }
            Some(Action::Timer(_)) | None => {}
        }
        self.sync_timer();
    }

    /// Delivers an IPI through the VM's APIC routing (this vCPU's LAPIC
    /// included: its view is published before the ICR write is acted on).
    fn send_ipi(&mut self, ipi: &lapic::Ipi) {
        let vcpus = self.vm.vcpus.lock();
        let router = ApicRouter { vcpus: &vcpus, flags: self.vm.lapic_flags(), from: Some(self.shared.id) };
        router.deliver(&ipi.dest, &ipi.irq);
    }

    /// Publishes this vCPU's LAPIC for interrupt routing (after any change of
    /// its ID, LDR, DFR, mode or enable bits).
    pub(super) fn publish_apic(&self) {
        if self.irqchip() {
            *self.shared.apic_view.lock() = Some(self.lapic.clone());
        }
    }
}
