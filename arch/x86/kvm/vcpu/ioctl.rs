// SPDX-License-Identifier: GPL-2.0

//! The vCPU ioctls (C: `kvm_arch_vcpu_ioctl_run()` and
//! `kvm_arch_vcpu_ioctl()` of `arch/x86/kvm/x86.c`, with
//! `kvm_vcpu_ioctl_set_cpuid2()` of `cpuid.c`): [`ArchVcpu`] for the x86
//! vCPU, the register, segment, event, debug-register, MP-state, CPUID,
//! LAPIC and translation ioctls, and the registers synced through
//! `kvm_run`.

use super::walk::{WalkCaps, WalkMem};
use super::xsave::XFEATURE_FP;
use super::{cr0, cr4, mp, now_ns, X86Vcpu, RFLAGS_IF};
use crate::kvm_main::{ArchVcpu, VcpuCtx};
use crate::uapi::run;
use crate::x86::backend::{vector, Backend, Event, VendorVcpu};
use crate::x86::cpuid::{self, CpuidEntry};
use crate::x86::ioc;
use crate::x86::lapic;
use crate::x86::mce::{Delivery, KvmX86Mce};
use crate::x86::mmu::paging_tmpl::{self, Access};
use crate::x86::msrs::{self, efer};
use crate::x86::regs::{KvmDebugRegs, KvmFpu, KvmRegs, KvmSregs, KvmVcpuEvents, Seg};
use core::sync::atomic::Ordering;
use kernel::{fpu::KVM_XSAVE_SIZE, prelude::*, uaccess::UserSlice};

/// Reads a fixed-size ioctl argument.
fn read_arg<const N: usize>(arg: usize) -> Result<[u8; N]> {
    let mut b = [0u8; N];
    UserSlice::new(arg, N).reader().read_slice(&mut b)?;
    Ok(b)
}

/// Writes a fixed-size ioctl result.
fn write_arg(arg: usize, b: &[u8]) -> Result<isize> {
    UserSlice::new(arg, b.len()).writer().write_slice(b)?;
    Ok(0)
}

/// `KVM_SYNC_X86_*`: the state `kvm_run.s.regs` carries.
const KVM_SYNC_X86_REGS: u64 = 1;
const KVM_SYNC_X86_SREGS: u64 = 2;
const KVM_SYNC_X86_EVENTS: u64 = 4;
/// `KVM_SYNC_X86_VALID_FIELDS`, also `KVM_CHECK_EXTENSION(KVM_CAP_SYNC_REGS)`.
pub(crate) const KVM_SYNC_X86_VALID_FIELDS: u64 = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS | KVM_SYNC_X86_EVENTS;
/// Offsets of `struct kvm_sync_regs` in `kvm_run`.
const SYNC_REGS_OFF: usize = run::SYNC_REGS;
const SYNC_SREGS_OFF: usize = SYNC_REGS_OFF + KvmRegs::SIZE;
const SYNC_EVENTS_OFF: usize = SYNC_SREGS_OFF + KvmSregs::SIZE;

impl<B: Backend> X86Vcpu<B> {
    fn get_regs(&self) -> KvmRegs {
        KvmRegs { gprs: self.gprs, rip: self.rip, rflags: self.hw.rflags() }
    }

    fn set_regs(&mut self, r: &KvmRegs) {
        self.gprs = r.gprs;
        self.rip = r.rip;
        // Bit 1 of RFLAGS is always 1 (C: `kvm_set_rflags()` callers set it).
        self.hw.set_rflags(r.rflags | 2);
        // A new RIP cancels an instruction in progress.
        self.pending_exception = None;
    }

    fn get_sregs(&self) -> KvmSregs {
        let mut s = KvmSregs::default();
        for seg in Seg::ALL {
            *s.seg_mut(seg) = self.hw.seg(seg);
        }
        s.gdt = self.hw.gdt();
        s.idt = self.hw.idt();
        s.cr0 = self.hw.cr0();
        s.cr2 = self.hw.cr2();
        s.cr3 = self.hw.cr3();
        s.cr4 = self.hw.cr4();
        s.cr8 = self.lapic.cr8();
        s.efer = self.hw.efer();
        s.apic_base = self.lapic.apic_base();
        if let Some(Event::Interrupt { vector, soft: false }) = self.reinject {
            s.interrupt_bitmap[usize::from(vector / 64)] |= 1 << (vector % 64);
        }
        s
    }

    /// `kvm_is_valid_sregs()` and `__set_sregs()`.
    fn set_sregs(&mut self, s: &KvmSregs) -> Result {
        let cs = s.seg(Seg::Cs);
        if s.efer & efer::LME != 0 && s.cr0 & cr0::PG != 0 {
            if s.cr4 & cr4::PAE == 0 || s.efer & efer::LMA == 0 {
                return Err(EINVAL);
            }
            let maxphy = cpuid::guest_maxphyaddr(&self.cpuid);
            if maxphy < 64 && s.cr3 >> maxphy != 0 {
                return Err(EINVAL);
            }
        } else if s.efer & efer::LMA != 0 || cs.l != 0 {
            return Err(EINVAL);
        }
        if s.cr4 & self.cr4_reserved() != 0 || !Self::cr0_valid(s.cr0) {
            return Err(EINVAL);
        }
        if !msrs::efer_write_ok(self.hw.efer(), s.efer, self.efer_caps(), false, true) {
            return Err(EINVAL);
        }
        // Checked even without an in-kernel LAPIC, whose model then only
        // stores the value (C: `kvm_set_apic_base()`).
        self.lapic.set_apic_base(s.apic_base, true).map_err(|_| EINVAL)?;
        self.publish_apic();
        for seg in Seg::ALL {
            self.hw.set_seg(seg, s.seg(seg));
        }
        self.hw.set_gdt(&s.gdt);
        self.hw.set_idt(&s.idt);
        self.hw.set_cr2(s.cr2);
        self.hw.set_cr3(s.cr3);
        self.hw.set_cr4(s.cr4);
        self.hw.set_cr0(s.cr0);
        self.hw.set_efer(s.efer);
        // A CR8 with reserved bits is ignored, not refused (C).
        if s.cr8 <= 15 {
            self.lapic.set_cr8(s.cr8);
        }
        // One pending external interrupt (without an in-kernel irqchip).
        let bits = s.interrupt_bitmap;
        if let Some((w, v)) = bits.iter().enumerate().find(|(_, v)| **v != 0) {
            let vec = (w * 64) as u32 + v.trailing_zeros();
            if !self.irqchip() {
                self.user_irq = Some(vec as u8);
            }
        }
        self.mp_state_after_sregs();
        Ok(())
    }

    fn mp_state_after_sregs(&mut self) {
        // C (`__set_sregs()`): the BSP given the reset CS:IP in real mode is
        // made runnable, whatever INIT left it waiting for (user space
        // resetting a vCPU this way expects it to run).
        let cs = self.hw.seg(Seg::Cs);
        if self.lapic.apic_base() & lapic::APICBASE_BSP != 0
            && self.rip == 0xfff0
            && cs.selector == 0xf000
            && cs.base == 0xffff_0000
            && self.hw.cr0() & cr0::PE == 0
        {
            self.mp_state = mp::RUNNABLE;
        }
    }

    fn get_events(&self) -> KvmVcpuEvents {
        let mut e = KvmVcpuEvents::default();
        let exc = match (self.reinject, self.pending_exception) {
            (Some(Event::Exception { vector, error_code }), _) | (None, Some(Event::Exception { vector, error_code })) => {
                Some((vector, error_code))
            }
            _ => None,
        };
        if let Some((v, ec)) = exc {
            e.exc_injected = 1;
            e.exc_nr = v;
            e.exc_has_error_code = u8::from(ec.is_some());
            e.exc_error_code = ec.unwrap_or(0);
        }
        if let Some(Event::Interrupt { vector, soft }) = self.reinject {
            e.irq_injected = 1;
            e.irq_nr = vector;
            e.irq_soft = u8::from(soft);
        }
        if self.hw.interrupt_shadow() {
            e.irq_shadow = 1 | 2;
        }
        e.nmi_injected = u8::from(matches!(self.reinject, Some(Event::Nmi)));
        e.nmi_pending = u8::from(self.nmi_pending);
        e.nmi_masked = u8::from(!self.hw.nmi_allowed() && !self.hw.interrupt_shadow());
        // KVM_VCPUEVENT_VALID_NMI_PENDING | _SHADOW | _SMM
        e.flags = 1 | 4 | 8;
        e
    }

    fn set_events(&mut self, e: &KvmVcpuEvents) -> Result {
        // NMI_PENDING, SIPI_VECTOR, SHADOW, SMM, PAYLOAD, TRIPLE_FAULT.
        if e.flags & !(1 | 2 | 4 | 8 | 16 | 32) != 0 {
            return Err(EINVAL);
        }
        // KVM_CAP_EXCEPTION_PAYLOAD and KVM_CAP_X86_TRIPLE_FAULT_EVENT are
        // not offered: their flags are refused and `exception.pending`
        // ignored, as the C KVM does then.
        if e.flags & (16 | 32) != 0 {
            return Err(EINVAL);
        }
        let mut e = *e;
        e.exc_pending = 0;
        let e = &e;
        // SMM is not supported: only "not in SMM, nothing pending".
        if e.flags & 8 != 0 && (e.smi[0] != 0 || e.smi[1] != 0) {
            return Err(EINVAL);
        }
        if (e.exc_injected != 0 || e.exc_pending != 0) && (e.exc_nr > 31 || e.exc_nr == 2) {
            return Err(EINVAL);
        }
        self.reinject = None;
        self.pending_exception = None;
        if e.exc_injected != 0 {
            self.reinject = Some(Event::Exception {
                vector: e.exc_nr,
                error_code: (e.exc_has_error_code != 0).then_some(e.exc_error_code),
            });
        } else if e.irq_injected != 0 {
            self.reinject = Some(Event::Interrupt { vector: e.irq_nr, soft: e.irq_soft != 0 });
        } else if e.nmi_injected != 0 {
            self.reinject = Some(Event::Nmi);
        }
        if e.flags & 4 != 0 {
            self.hw.set_interrupt_shadow(e.irq_shadow != 0);
        }
        if e.flags & 1 != 0 {
            self.nmi_pending = e.nmi_pending != 0;
        }
        if e.flags & 2 != 0 && self.irqchip() {
            self.sipi_vector = e.sipi_vector as u8;
        }
        Ok(())
    }

    fn get_debugregs(&self) -> KvmDebugRegs {
        KvmDebugRegs { db: self.db, dr6: self.hw.dr6(), dr7: self.hw.dr7(), flags: 0 }
    }

    fn set_debugregs(&mut self, d: &KvmDebugRegs) -> Result {
        if d.flags != 0 || d.dr6 >> 32 != 0 || d.dr7 >> 32 != 0 {
            return Err(EINVAL);
        }
        self.db = d.db;
        self.hw.set_dr6(d.dr6);
        self.hw.set_dr7(d.dr7);
        Ok(())
    }

    fn set_cpuid2(&mut self, arg: usize) -> Result<isize> {
        let mut hdr = [0u8; 8];
        UserSlice::new(arg, 8).reader().read_slice(&mut hdr)?;
        let n = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        if n > cpuid::KVM_MAX_CPUID_ENTRIES {
            return Err(E2BIG);
        }
        let mut r = UserSlice::new(arg + 8, n as usize * CpuidEntry::SIZE).reader();
        let mut entries = KVec::with_capacity(n as usize, GFP_KERNEL_ACCOUNT)?;
        for _ in 0..n {
            let mut b = [0u8; CpuidEntry::SIZE];
            r.read_slice(&mut b)?;
            entries.push(CpuidEntry::from_bytes(&b), GFP_KERNEL_ACCOUNT)?;
        }
        cpuid::check_guest_table(&entries).map_err(|_| EINVAL)?;
        if self.ran {
            // After KVM_RUN only the same table is accepted (C:
            // `kvm_cpuid_check_equal()`), ignoring the run-time bits.
            let st = self.runtime_state();
            let same = entries.len() == self.cpuid.len()
                && entries.iter().zip(self.cpuid.iter()).all(|(a, b)| {
                    let mut ra = [a.eax, a.ebx, a.ecx, a.edx];
                    let mut rb = [b.eax, b.ebx, b.ecx, b.edx];
                    cpuid::apply_runtime(&entries, a.function, a.index, &mut ra, &st);
                    cpuid::apply_runtime(&self.cpuid, b.function, b.index, &mut rb, &st);
                    (a.function, a.index, a.flags) == (b.function, b.index, b.flags) && ra == rb
                });
            // EINVAL as in 6.12 (later kernels answer EBUSY).
            return if same { Ok(0) } else { Err(EINVAL) };
        }
        self.walk_caps = WalkCaps::of(&entries);
        self.cpuid = entries;
        self.cpuid_set = true;
        self.update_lapic_caps();
        // XCR0 must stay within what the new table allows.
        if !self.xcr0_valid(self.xcr0) {
            self.xcr0 = XFEATURE_FP;
        }
        Ok(0)
    }

    fn get_cpuid2(&self, arg: usize) -> Result<isize> {
        let mut hdr = [0u8; 8];
        UserSlice::new(arg, 8).reader().read_slice(&mut hdr)?;
        let n = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        if (n as usize) < self.cpuid.len() {
            return Err(E2BIG);
        }
        let st = self.runtime_state();
        let mut w = UserSlice::new(arg + 8, self.cpuid.len() * CpuidEntry::SIZE).writer();
        for e in self.cpuid.iter() {
            let mut r = [e.eax, e.ebx, e.ecx, e.edx];
            cpuid::apply_runtime(&self.cpuid, e.function, e.index, &mut r, &st);
            let out = CpuidEntry { eax: r[0], ebx: r[1], ecx: r[2], edx: r[3], ..*e };
            w.write_slice(&out.to_bytes())?;
        }
        hdr[0..4].copy_from_slice(&(self.cpuid.len() as u32).to_ne_bytes());
        UserSlice::new(arg, 8).writer().write_slice(&hdr)?;
        Ok(0)
    }

    /// `sync_regs()`: applies the state user space marked dirty in
    /// `kvm_run`. Each struct is copied out of the shared page once, then
    /// checked and applied, so a racing writer cannot change it halfway.
    fn sync_regs(&mut self, ctx: &VcpuCtx<'_>, dirty: u64) -> Result {
        if dirty & KVM_SYNC_X86_REGS != 0 {
            let mut b = [0u8; KvmRegs::SIZE];
            ctx.run.read_bytes(SYNC_REGS_OFF, &mut b);
            self.set_regs(&KvmRegs::from_bytes(&b));
        }
        if dirty & KVM_SYNC_X86_SREGS != 0 {
            let mut b = [0u8; KvmSregs::SIZE];
            ctx.run.read_bytes(SYNC_SREGS_OFF, &mut b);
            self.set_sregs(&KvmSregs::from_bytes(&b)).map_err(|_| EINVAL)?;
        }
        if dirty & KVM_SYNC_X86_EVENTS != 0 {
            let mut b = [0u8; KvmVcpuEvents::SIZE];
            ctx.run.read_bytes(SYNC_EVENTS_OFF, &mut b);
            self.set_events(&KvmVcpuEvents::from_bytes(&b))?;
        }
        // The C KVM clears the bits it consumed.
        ctx.run.write_u64(run::KVM_DIRTY_REGS, 0);
        Ok(())
    }

    /// `store_regs()`: copies the state user space asked for into `kvm_run`.
    fn store_regs(&self, ctx: &VcpuCtx<'_>, valid: u64) {
        if valid & KVM_SYNC_X86_REGS != 0 {
            ctx.run.write_bytes(SYNC_REGS_OFF, &self.get_regs().to_bytes());
        }
        if valid & KVM_SYNC_X86_SREGS != 0 {
            ctx.run.write_bytes(SYNC_SREGS_OFF, &self.get_sregs().to_bytes());
        }
        if valid & KVM_SYNC_X86_EVENTS != 0 {
            ctx.run.write_bytes(SYNC_EVENTS_OFF, &self.get_events().to_bytes());
        }
    }

    /// The fields of `kvm_run` every exit reports (C: `post_kvm_run_save()`).
    fn post_run_save(&self, ctx: &VcpuCtx<'_>) {
        let r = ctx.run;
        r.write_u8(run::IF_FLAG, u8::from(self.hw.rflags() & RFLAGS_IF != 0));
        r.write_u64(run::CR8, self.lapic.cr8());
        r.write_u64(run::APIC_BASE, self.lapic.apic_base());
        let ready = if self.irqchip() {
            true
        } else {
            self.user_irq.is_none() && self.hw.interrupt_allowed()
        };
        r.write_u8(run::READY_FOR_INTERRUPT_INJECTION, u8::from(ready));
        r.write_u16(run::FLAGS, 0);
    }

    /// `KVM_TRANSLATE`: a supervisor translation of a linear address.
    fn translate_ioctl(&self, ctx: &VcpuCtx<'_>, arg: usize) -> Result<isize> {
        let b: [u8; 24] = read_arg(arg)?;
        let la = u64::from_ne_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        let mut out = [0u8; 24];
        out[0..8].copy_from_slice(&la.to_ne_bytes());
        let access = Access { write: false, fetch: false, user: false, smap_override: true };
        match paging_tmpl::translate(&mut WalkMem::new(ctx.vm), &self.paging_ctx(), la, access) {
            Ok(t) => {
                out[8..16].copy_from_slice(&t.gpa.to_ne_bytes());
                out[16] = 1; // valid
                out[17] = 1; // writeable, as the C KVM reports
            }
            Err(_) => out[8..16].copy_from_slice(&u64::MAX.to_ne_bytes()),
        }
        write_arg(arg, &out)
    }
}

impl<B: Backend> X86Vcpu<B> {
    /// `KVM_GET_LAPIC` (kept out of the ioctl dispatcher: its buffer would
    /// otherwise sit in that frame for every ioctl).
    #[inline(never)]
    fn get_lapic(&mut self, arg: usize) -> Result<isize> {
        if !self.irqchip() {
            return Err(EINVAL);
        }
        // Interrupts already accepted for this vCPU are in the IRR it
        // reports, and in the copy KVM_SET_IRQCHIP's RTC tracking reads.
        if self.drain_posted_irr() {
            self.publish_apic();
        }
        let st = self.lapic.get_state(now_ns(), &self.vm.lapic_flags()).map_err(crate::kvm_main::err)?;
        write_arg(arg, &st)
    }

    /// `KVM_SET_LAPIC`.
    #[inline(never)]
    fn set_lapic(&mut self, arg: usize) -> Result<isize> {
        if !self.irqchip() {
            return Err(EINVAL);
        }
        let st: [u8; lapic::KVM_APIC_REG_SIZE] = read_arg(arg)?;
        // The restored IRR replaces whatever was accepted before, as in C
        // (which also clears the posted-interrupt descriptor).
        let _ = self.drain_posted_irr();
        self.lapic.set_state(&st, now_ns(), &self.vm.lapic_flags()).map_err(crate::kvm_main::err)?;
        // Interrupts are routed by the restored ID, LDR, DFR and enable
        // bits from now on (C: the APIC map is recalculated).
        self.publish_apic();
        self.rtc_restore();
        self.sync_timer();
        Ok(0)
    }
}

impl<B: Backend> ArchVcpu for X86Vcpu<B> {
    fn run(&mut self, ctx: &VcpuCtx<'_>) -> Result<isize> {
        ctx.run.write_u16(run::FLAGS, 0);
        // Read once: user space may change them while KVM_RUN runs.
        let valid = ctx.run.read_u64(run::KVM_VALID_REGS);
        let dirty = ctx.run.read_u64(run::KVM_DIRTY_REGS);
        let r = if (valid | dirty) & !KVM_SYNC_X86_VALID_FIELDS != 0 {
            Err(EINVAL)
        } else if dirty != 0 {
            self.sync_regs(ctx, dirty)
        } else {
            Ok(())
        };
        // Without an in-kernel LAPIC, user space owns the TPR and passes it
        // in `kvm_run->cr8` (C: `kvm_set_cr8()` at KVM_RUN).
        let r = r.and_then(|()| {
            if self.irqchip() {
                return Ok(());
            }
            let cr8 = ctx.run.read_u64(run::CR8);
            if cr8 > 15 {
                return Err(EINVAL);
            }
            self.lapic.set_cr8(cr8);
            Ok(())
        });
        let r = r.and_then(|()| {
            self.hw.vcpu_load();
            self.fpu.swap_in();
            let r = self.run_loop(ctx);
            self.hw.vcpu_put();
            self.fpu.swap_out();
            r
        });
        if valid != 0 {
            self.store_regs(ctx, valid);
        }
        self.post_run_save(ctx);
        r
    }

    fn ioctl(&mut self, ctx: &VcpuCtx<'_>, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            ioc::KVM_GET_REGS => write_arg(arg, &self.get_regs().to_bytes()),
            ioc::KVM_SET_REGS => {
                let r = KvmRegs::from_bytes(&read_arg(arg)?);
                self.set_regs(&r);
                Ok(0)
            }
            ioc::KVM_GET_SREGS => write_arg(arg, &self.get_sregs().to_bytes()),
            ioc::KVM_SET_SREGS => {
                let s = KvmSregs::from_bytes(&read_arg(arg)?);
                self.set_sregs(&s)?;
                Ok(0)
            }
            ioc::KVM_GET_FPU => write_arg(arg, &self.get_fpu()?.to_bytes()),
            ioc::KVM_SET_FPU => {
                let f = KvmFpu::from_bytes(&read_arg(arg)?);
                self.set_fpu(&f)?;
                Ok(0)
            }
            ioc::KVM_SET_CPUID2 => self.set_cpuid2(arg),
            ioc::KVM_GET_CPUID2 => self.get_cpuid2(arg),
            ioc::KVM_GET_MSRS => self.msrs_ioctl(arg, false),
            ioc::KVM_SET_MSRS => self.msrs_ioctl(arg, true),
            ioc::KVM_GET_MP_STATE => {
                // Latched INIT and SIPI take effect first (C:
                // `kvm_apic_accept_events()`).
                if self.irqchip() {
                    self.drain_posted();
                    self.handle_init_sipi();
                }
                write_arg(arg, &self.mp_state.to_ne_bytes())
            }
            ioc::KVM_SET_MP_STATE => {
                let s = u32::from_ne_bytes(read_arg(arg)?);
                match s {
                    mp::RUNNABLE => {}
                    mp::UNINITIALIZED
                    | mp::INIT_RECEIVED
                    | mp::HALTED
                    | mp::SIPI_RECEIVED
                    | mp::AP_RESET_HOLD
                        if self.irqchip() => {}
                    _ => return Err(EINVAL),
                }
                if s == mp::SIPI_RECEIVED {
                    // Waiting for SIPI with one latched, to the last vector
                    // the LAPIC received or user space set.
                    self.mp_state = mp::INIT_RECEIVED;
                    self.lapic.latch_sipi(self.sipi_vector);
                } else {
                    self.mp_state = s;
                }
                Ok(0)
            }
            ioc::KVM_GET_XSAVE => self.get_xsave(arg, KVM_XSAVE_SIZE),
            ioc::KVM_GET_XSAVE2 => self.get_xsave(arg, self.fpu.uabi_size().max(KVM_XSAVE_SIZE)),
            ioc::KVM_SET_XSAVE => self.set_xsave(arg),
            ioc::KVM_GET_XCRS => self.get_xcrs(arg),
            ioc::KVM_SET_XCRS => self.set_xcrs(arg),
            ioc::KVM_GET_VCPU_EVENTS => write_arg(arg, &self.get_events().to_bytes()),
            ioc::KVM_SET_VCPU_EVENTS => {
                let e = KvmVcpuEvents::from_bytes(&read_arg(arg)?);
                self.set_events(&e)?;
                Ok(0)
            }
            ioc::KVM_GET_DEBUGREGS => write_arg(arg, &self.get_debugregs().to_bytes()),
            ioc::KVM_SET_DEBUGREGS => {
                let d = KvmDebugRegs::from_bytes(&read_arg(arg)?);
                self.set_debugregs(&d)?;
                Ok(0)
            }
            ioc::KVM_GET_TSC_KHZ => Ok(self.vm.tsc_khz.load(Ordering::Relaxed) as isize),
            ioc::KVM_INTERRUPT => {
                let v = u32::from_ne_bytes(read_arg(arg)?);
                if v >= 256 {
                    return Err(EINVAL);
                }
                if self.irqchip() {
                    return Err(ENXIO);
                }
                self.user_irq = Some(v as u8);
                Ok(0)
            }
            ioc::KVM_GET_LAPIC => self.get_lapic(arg),
            ioc::KVM_SET_LAPIC => self.set_lapic(arg),
            ioc::KVM_TRANSLATE => self.translate_ioctl(ctx, arg),
            ioc::KVM_X86_SETUP_MCE => {
                let cap = u64::from_ne_bytes(read_arg::<8>(arg)?);
                self.mce.setup(cap, self.vm.backend.mce_cap()).map_err(|()| EINVAL)?;
                // LVT CMCI exists with MCG_CMCI_P (C: `kvm_apic_after_set_mcg_cap()`).
                self.lapic.set_cmci(self.mce.cmci());
                self.publish_apic();
                Ok(0)
            }
            ioc::KVM_X86_SET_MCE => {
                let m = KvmX86Mce::from_bytes(&read_arg::<{ KvmX86Mce::SIZE }>(arg)?);
                let cr4_mce = self.hw.cr4() & cr4::MCE != 0;
                match self.mce.inject(&m, cr4_mce).map_err(|()| EINVAL)? {
                    Delivery::None => {}
                    Delivery::Cmci => {
                        if self.irqchip() {
                            let _ = self.lapic.local_deliver(lapic::Lvt::Cmci);
                            self.shared.kick();
                        }
                    }
                    Delivery::MachineCheck => self.queue_exception(vector::MC, None),
                    Delivery::TripleFault => self.triple_fault = true,
                }
                Ok(0)
            }
            ioc::KVM_NMI => {
                self.nmi_pending = true;
                Ok(0)
            }
            _ => {
                let _ = ctx;
                // `kvm_arch_vcpu_ioctl()`'s answer to what it does not know.
                Err(EINVAL)
            }
        }
    }
}
