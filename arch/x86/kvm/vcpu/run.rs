// SPDX-License-Identifier: GPL-2.0

//! `KVM_RUN`'s loop and the exit dispatch (C: `vcpu_run()` and
//! `vcpu_enter_guest()` of `arch/x86/kvm/x86.c`, and the exit handlers of
//! `svm/svm.c` and `vmx/vmx.c` that do the same for both): the work before
//! each entry, the entry itself, and the exhaustive `match` that sends every
//! exit to its handler.

use super::{mp, Flow, X86Vcpu};
use crate::kvm_main::VcpuCtx;
use crate::stats::VcpuStat;
use crate::uapi::{exit, internal, run};
use crate::x86::backend::{Backend, EntryCtx, Exit, VendorVcpu};
use crate::x86::cpuid;
use crate::x86::msrs::MISC_FEATURES_CPUID_FAULT;
use crate::x86::regs::gpr;
use crate::x86::{IN_GUEST_MODE, OUTSIDE_GUEST_MODE};
use core::sync::atomic::Ordering;
use kernel::{prelude::*, smp::IrqDisabled, x86};

/// `-KVM_ENOSYS` and `-KVM_EPERM`, the hypercall results (`include/uapi/linux/kvm_para.h`).
const KVM_ENOSYS: u64 = 1000;
const KVM_EPERM: u64 = 1;

impl<B: Backend> X86Vcpu<B> {
    /// `vcpu_run()`: enters the guest until something needs user space.
    pub(super) fn run_loop(&mut self, ctx: &VcpuCtx<'_>) -> Result<isize> {
        if let Some(io) = self.pending_io.take() {
            if let Flow::User = self.complete_io(ctx, io)? {
                return Ok(0);
            }
        }
        if let Some(m) = self.pending_mmio.take() {
            self.complete_mmio(ctx, m);
        }
        if let Some(m) = self.pending_msr.take() {
            self.complete_msr(ctx, m);
        }
        // `immediate_exit`: back to user space at once, leaving `kvm_run` as
        // the last exit left it (the selftests' ucall completion reads it).
        if ctx.run.read_u8(run::IMMEDIATE_EXIT) != 0 {
            return Err(EINTR);
        }
        self.ran = true;
        if core::mem::take(&mut self.triple_fault) {
            ctx.run.write_u32(run::EXIT_REASON, exit::SHUTDOWN);
            return Ok(0);
        }
        loop {
            // Signals, rescheduling, rseq and other resume-to-user work
            // (C: `xfer_to_guest_mode_handle_work()`).
            if kernel::smp::xfer_to_guest_work().is_err() {
                ctx.stats.inc(VcpuStat::SignalExits);
                ctx.run.write_u32(run::EXIT_REASON, exit::INTR);
                return Err(EINTR);
            }
            self.drain_posted();
            self.eoi_inject_due();
            self.handle_init_sipi();
            if self.mp_state != mp::RUNNABLE {
                self.block(ctx)?;
                continue;
            }
            self.inject_events(ctx);
            self.hw.prepare_entry();
            let seen = (self.tlb_gen_seen, self.last_cpu);
            let (exit, next) = {
                let irq = IrqDisabled::new();
                let cpu = irq.cpu();
                let k = &self.shared.kicker;
                k.cpu.store(cpu, Ordering::SeqCst);
                k.mode.store(IN_GUEST_MODE, Ordering::SeqCst);
                // A request posted after the checks above, or work for the
                // task that came up meanwhile: handle it first (C:
                // `kvm_vcpu_exit_request()`).
                if kernel::smp::xfer_to_guest_work_pending(&irq) || k.pending.swap(false, Ordering::SeqCst) {
                    k.mode.store(OUTSIDE_GUEST_MODE, Ordering::SeqCst);
                    drop(irq);
                    self.undo_injection();
                    continue;
                }
                let gen = self.vm.tlb_gen.load(Ordering::SeqCst);
                // The guest's XCR0 is loaded whatever its CR4.OSXSAVE: CR4
                // writes are not intercepted, so the guest may set OSXSAVE
                // and use XGETBV/XSAVE without an exit in between. PKRU is
                // switched whenever the host uses protection keys, for the
                // same reason (a guest can set CR4.PKE and run WRPKRU).
                let (host_xcr0, host_pke) = (self.host_xcr0, self.host_pke);
                let host_pkru = if host_pke { x86::read_pkru() } else { 0 };
                let mut entry = EntryCtx {
                    guest_xcr0: (host_xcr0 != 0 && self.xcr0 != host_xcr0).then_some(self.xcr0),
                    host_xcr0,
                    guest_pkru: host_pke.then_some(self.pkru),
                    host_pkru,
                    exit_xcr0: self.xcr0,
                    exit_pkru: None,
                    tdp_root: self.vm.tdp_root,
                    msr_passthrough: !self.vm.msr_filtered.load(Ordering::SeqCst),
                    flush_tlb: gen != self.tlb_gen_seen || cpu != self.last_cpu,
                };
                self.tlb_gen_seen = gen;
                self.last_cpu = cpu;
                let r = self.hw.run(&irq, &mut entry, &mut self.gprs, &mut self.rip);
                self.shared.kicker.mode.store(OUTSIDE_GUEST_MODE, Ordering::SeqCst);
                if host_xcr0 != 0 {
                    self.xcr0 = entry.exit_xcr0;
                }
                if let Some(p) = entry.exit_pkru {
                    self.pkru = p;
                }
                r
            };
            if let Exit::NotEntered = exit {
                // Nothing ran: a flush asked for is still owed, and the
                // event programmed for this entry goes back to be injected.
                (self.tlb_gen_seen, self.last_cpu) = seen;
                self.undo_injection();
                continue;
            }
            // CR8 writes do not exit: the guest's TPR comes back from the
            // hardware (C: `sync_cr8_to_lapic()`).
            let cr8 = u64::from(self.hw.tpr());
            if cr8 != self.lapic.cr8() {
                self.lapic.set_cr8(cr8);
                self.publish_apic();
            }
            self.reinject = self.hw.interrupted_event();
            ctx.stats.inc(VcpuStat::Exits);
            if let Some(stat) = exit_stat(&exit) {
                ctx.stats.inc(stat);
            }
            match self.handle_exit(ctx, exit, next)? {
                Flow::Resume => continue,
                Flow::User => return Ok(0),
            }
        }
    }

    /// An entry was abandoned after an event was programmed: take it back
    /// from the hardware and inject it first on the next attempt, so that a
    /// pending exception programmed meanwhile cannot overwrite it.
    fn undo_injection(&mut self) {
        if let Some(ev) = self.hw.take_injected() {
            debug_assert!(self.reinject.is_none());
            self.reinject = Some(ev);
        }
    }

    fn handle_exit(&mut self, ctx: &VcpuCtx<'_>, exit: Exit, next: Option<u64>) -> Result<Flow> {
        Ok(match exit {
            Exit::Io { port, size, input, string, rep, addr_size, seg } => {
                self.handle_io(ctx, port, size, input, string, rep, addr_size, seg, next)?
            }
            Exit::Cpuid if self.misc_features_enables & MISC_FEATURES_CPUID_FAULT != 0 && self.hw.cpl() > 0 => {
                // CPUID faulting the guest enabled: CPUID above CPL 0 is #GP.
                self.gp();
                Flow::Resume
            }
            Exit::Cpuid => {
                let (f, i) = (self.gprs[gpr::RAX] as u32, self.gprs[gpr::RCX] as u32);
                let mut r = cpuid::lookup(&self.cpuid, f, i);
                cpuid::apply_runtime(&self.cpuid, f, i, &mut r, &self.runtime_state());
                self.gprs[gpr::RAX] = u64::from(r[0]);
                self.gprs[gpr::RBX] = u64::from(r[1]);
                self.gprs[gpr::RCX] = u64::from(r[2]);
                self.gprs[gpr::RDX] = u64::from(r[3]);
                self.skip(ctx, next)
            }
            Exit::Rdmsr => {
                let index = self.gprs[gpr::RCX] as u32;
                let r = if self.vm.msr_allowed(index, false) {
                    self.get_msr(index, false).map_err(Some)
                } else {
                    Err(None)
                };
                match r {
                    Ok(v) => {
                        self.gprs[gpr::RAX] = v & 0xffff_ffff;
                        self.gprs[gpr::RDX] = v >> 32;
                        self.skip(ctx, next)
                    }
                    Err(e) => self.msr_failed(ctx, index, 0, true, e, next),
                }
            }
            Exit::Wrmsr => {
                let index = self.gprs[gpr::RCX] as u32;
                let v = (self.gprs[gpr::RAX] & 0xffff_ffff) | (self.gprs[gpr::RDX] << 32);
                let r = if self.vm.msr_allowed(index, true) {
                    self.set_msr(index, v, false).map_err(Some)
                } else {
                    Err(None)
                };
                match r {
                    Ok(()) => self.skip(ctx, next),
                    Err(e) => self.msr_failed(ctx, index, v, false, e, next),
                }
            }
            Exit::Hlt => {
                let f = self.skip(ctx, next);
                if let Flow::User = f {
                    return Ok(f);
                }
                if self.irqchip() {
                    self.mp_state = mp::HALTED;
                    Flow::Resume
                } else {
                    ctx.run.write_u32(run::EXIT_REASON, exit::HLT);
                    Flow::User
                }
            }
            Exit::Hypercall => {
                // No hypercall is offered (CPUID 0x40000001 is empty): every
                // one fails with -KVM_ENOSYS, or -KVM_EPERM above CPL 0.
                let r = if self.hw.cpl() != 0 { KVM_EPERM } else { KVM_ENOSYS };
                self.gprs[gpr::RAX] = r.wrapping_neg();
                let f = self.skip(ctx, next);
                f
            }
            Exit::Xsetbv => {
                let index = self.gprs[gpr::RCX] as u32;
                let v = (self.gprs[gpr::RAX] & 0xffff_ffff) | (self.gprs[gpr::RDX] << 32);
                if self.hw.cpl() != 0 || index != 0 || !self.xcr0_valid(v) {
                    self.gp();
                    Flow::Resume
                } else {
                    self.xcr0 = v;
                    self.skip(ctx, next)
                }
            }
            Exit::UdInstruction => {
                self.ud();
                Flow::Resume
            }
            Exit::Wbinvd | Exit::Pause => self.skip(ctx, next),
            Exit::Rdpmc => {
                // No PMU is offered.
                self.gp();
                Flow::Resume
            }
            Exit::TdpFault { gpa, write, fetch, present, on_table_walk } => {
                self.handle_tdp_fault(ctx, gpa, write, fetch, present, on_table_walk)?
            }
            // The TPR the guest lowered was synced above; the interrupt it
            // blocked is looked at before the next entry.
            Exit::ExternalInterrupt | Exit::Nmi | Exit::MachineCheck | Exit::TprBelowThreshold => Flow::Resume,
            // Handled in `run_loop`, never passed here.
            Exit::NotEntered => Flow::Resume,
            Exit::InterruptWindow => {
                if !self.irqchip()
                    && self.user_irq.is_none()
                    && ctx.run.read_u8(run::REQUEST_INTERRUPT_WINDOW) != 0
                {
                    ctx.stats.inc(VcpuStat::RequestIrqExits);
                    ctx.run.write_u32(run::EXIT_REASON, exit::IRQ_WINDOW_OPEN);
                    Flow::User
                } else {
                    Flow::Resume
                }
            }
            Exit::Shutdown => {
                // The VMCB is undefined after a shutdown: INIT the vCPU (C:
                // `shutdown_interception()`), and tell user space.
                self.hw.reset();
                self.reset_gprs();
                self.reinject = None;
                self.pending_exception = None;
                ctx.run.write_u32(run::EXIT_REASON, exit::SHUTDOWN);
                Flow::User
            }
            Exit::Exception { vector, error_code, .. } => {
                self.queue_exception(vector, error_code);
                Flow::Resume
            }
            Exit::DrAccess { dr, write, gpr } => self.handle_dr(ctx, dr, write, gpr, next),
            Exit::CrAccess { cr, op } => self.handle_cr(ctx, cr, op, next),
            Exit::TaskSwitch => self.emulation_failure(ctx),
            Exit::FailedEntry { reason } => {
                ctx.run.write_u32(run::EXIT_REASON, exit::FAIL_ENTRY);
                ctx.run.write_u64(run::FAIL_ENTRY_REASON, reason);
                ctx.run.write_u32(run::FAIL_ENTRY_CPU, self.last_cpu);
                Flow::User
            }
            Exit::Unknown { code, info1, info2 } => {
                // As the C KVM's `vcpu_unimpl()` and VMCB/VMCS dump: the raw
                // exit information goes to the log; user space gets the code.
                pr_err!(
                    "kvm-rs: vCPU {}: unexpected exit {:#x} (info {:#x} {:#x})\n",
                    self.shared.id,
                    code,
                    info1,
                    info2
                );
                ctx.run.write_u32(run::EXIT_REASON, exit::INTERNAL_ERROR);
                ctx.run.write_u32(run::INTERNAL_SUBERROR, internal::UNEXPECTED_EXIT_REASON);
                ctx.run.write_u32(run::INTERNAL_NDATA, 2);
                ctx.run.write_u64(run::INTERNAL_DATA, code);
                ctx.run.write_u64(run::INTERNAL_DATA + 8, u64::from(self.last_cpu));
                Flow::User
            }
        })
    }
}

/// The per-reason counter of an exit, if it has one.
fn exit_stat(exit: &Exit) -> Option<VcpuStat> {
    Some(match exit {
        Exit::Io { .. } => VcpuStat::IoExits,
        Exit::Cpuid => VcpuStat::CpuidExits,
        Exit::Rdmsr | Exit::Wrmsr => VcpuStat::MsrExits,
        Exit::Hlt => VcpuStat::HaltExits,
        Exit::Hypercall => VcpuStat::Hypercalls,
        Exit::TdpFault { .. } => VcpuStat::NptFaults,
        Exit::ExternalInterrupt => VcpuStat::IrqExits,
        Exit::InterruptWindow => VcpuStat::IrqWindowExits,
        Exit::Xsetbv
        | Exit::UdInstruction
        | Exit::Wbinvd
        | Exit::Pause
        | Exit::Rdpmc
        | Exit::Nmi
        | Exit::MachineCheck
        | Exit::Shutdown
        | Exit::Exception { .. }
        | Exit::DrAccess { .. }
        | Exit::CrAccess { .. }
        | Exit::TprBelowThreshold
        | Exit::NotEntered
        | Exit::TaskSwitch
        | Exit::FailedEntry { .. }
        | Exit::Unknown { .. } => return None,
    })
}
