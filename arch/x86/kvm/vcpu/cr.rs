// SPDX-License-Identifier: GPL-2.0

//! Control and debug registers (C: `kvm_set_cr0()`, `kvm_set_cr4()` and
//! `kvm_is_valid_cr4()` of `arch/x86/kvm/x86.c`; `cr_interception()` and
//! `dr_interception()` of `svm/svm.c`, `handle_cr()` and `handle_dr()` of
//! `vmx/vmx.c`): the checks a new CR0 or CR4 must pass, and the MOV CR,
//! CLTS, LMSW and MOV DR exits.

use super::{cr0, cr4, Flow, X86Vcpu};
use crate::kvm_main::VcpuCtx;
use crate::x86::backend::{Backend, CrOp, VendorVcpu};
use crate::x86::cpuid::{self, feature};
use crate::x86::emulate::{self, ExecMode};
use crate::x86::msrs::efer;
use crate::x86::regs::Seg;

impl<B: Backend> X86Vcpu<B> {
    /// CR4 bits this guest may not set: unknown to KVM, not supported by
    /// kvm-rs on this host, or absent from the guest's CPUID (C:
    /// `kvm_is_valid_cr4()` with `cr4_reserved_bits` and the guest's).
    pub(super) fn cr4_reserved(&self) -> u64 {
        let mut r = !cr4::KNOWN;
        let checks = [
            (feature::XSAVE, cr4::OSXSAVE),
            (feature::SMEP, cr4::SMEP),
            (feature::SMAP, cr4::SMAP),
            (feature::FSGSBASE, cr4::FSGSBASE),
            (feature::PKU, cr4::PKE),
            (feature::LA57, cr4::LA57),
            (feature::UMIP, cr4::UMIP),
            (feature::VMX, cr4::VMXE),
            (feature::PCID, cr4::PCIDE),
            (feature::LAM, cr4::LAM_SUP),
        ];
        for (f, bit) in checks {
            // Both the host (what kvm-rs offers) and the guest must have
            // it; the guest's CPUID counts once user space has set one (C:
            // `cr4_guest_rsvd_bits` is computed by KVM_SET_CPUID2).
            if !cpuid::has(&self.vm.supported, f) || (self.cpuid_set && !self.has(f)) {
                r |= bit;
            }
        }
        // kvm-rs does not nest VMX, and the guest cannot enter VMX operation.
        r | cr4::VMXE
    }

    pub(super) fn cr0_valid(v: u64) -> bool {
        v >> 32 == 0 && !(v & cr0::NW != 0 && v & cr0::CD == 0) && !(v & cr0::PG != 0 && v & cr0::PE == 0)
    }

    /// A control-register access the backend intercepted (C: `handle_cr()`
    /// of vmx.c with `kvm_set_cr0()`, `kvm_set_cr4()`, `kvm_set_cr8()`):
    /// checked as the hardware would, then applied; #GP if not allowed.
    pub(super) fn handle_cr(&mut self, ctx: &VcpuCtx<'_>, cr: u8, op: CrOp, next: Option<u64>) -> Flow {
        let (op, next) = match op {
            CrOp::MovToUndecoded => {
                // Find the source register in the instruction at RIP.
                let mode = self.exec_mode();
                match self.fetch_insn(ctx.vm).and_then(|(b, n)| emulate::decode_mov_cr(&b[..n], mode)) {
                    Some(m) if m.to_cr && m.cr == cr => (CrOp::MovTo(m.gpr), Some(self.rip.wrapping_add(m.len as u64))),
                    _ => return self.emulation_failure(ctx),
                }
            }
            op => (op, next),
        };
        let wide = self.exec_mode() == ExecMode::Long64;
        let narrow = |v: u64| if wide { v } else { v & 0xffff_ffff };
        let ok = match op {
            CrOp::MovTo(gpr) => {
                let v = narrow(self.gprs[usize::from(gpr & 15)]);
                match cr {
                    0 => self.set_cr0_checked(v),
                    3 => {
                        self.hw.set_cr3(v);
                        true
                    }
                    4 => self.set_cr4_checked(v),
                    8 if v >> 4 == 0 => {
                        self.lapic.set_cr8(v);
                        true
                    }
                    _ => false,
                }
            }
            CrOp::MovFrom(gpr) => {
                let v = match cr {
                    0 => self.hw.cr0(),
                    3 => self.hw.cr3(),
                    4 => self.hw.cr4(),
                    8 => self.lapic.cr8(),
                    _ => {
                        self.ud();
                        return Flow::Resume;
                    }
                };
                self.gprs[usize::from(gpr & 15)] = narrow(v);
                true
            }
            CrOp::Clts => {
                let v = self.hw.cr0() & !(1 << 3);
                self.hw.set_cr0(v);
                true
            }
            CrOp::MovToUndecoded => false,
            CrOp::Lmsw(src) => {
                // LMSW loads CR0 bits 3:0 and can set PE but not clear it.
                let old = self.hw.cr0();
                self.set_cr0_checked((old & !0xf) | u64::from(src & 0xf) | (old & cr0::PE))
            }
        };
        if ok {
            self.skip(ctx, next)
        } else {
            self.gp();
            Flow::Resume
        }
    }

    /// `kvm_set_cr0()`: `false` is #GP.
    fn set_cr0_checked(&mut self, v: u64) -> bool {
        const KNOWN: u64 = 0x3f | (1 << 16) | (1 << 18) | (7 << 29);
        if !Self::cr0_valid(v) {
            return false;
        }
        // ET is hardwired to 1; writes to reserved bits are ignored.
        let v = (v | (1 << 4)) & KNOWN;
        let old = self.hw.cr0();
        let efer = self.hw.efer();
        if efer & efer::LME != 0 && old & cr0::PG == 0 && v & cr0::PG != 0 {
            // Entering long mode needs PAE and a CS that is not 64-bit yet.
            if self.hw.cr4() & cr4::PAE == 0 || self.hw.seg(Seg::Cs).l != 0 {
                return false;
            }
        }
        if v & cr0::PG == 0 && (self.exec_mode() == ExecMode::Long64 || self.hw.cr4() & cr4::PCIDE != 0) {
            return false;
        }
        self.hw.set_cr0(v);
        true
    }

    /// `kvm_set_cr4()`: `false` is #GP.
    fn set_cr4_checked(&mut self, v: u64) -> bool {
        let old = self.hw.cr4();
        if v & self.cr4_reserved() != 0 {
            return false;
        }
        if self.hw.efer() & efer::LMA != 0 {
            if v & cr4::PAE == 0 || (v ^ old) & cr4::LA57 != 0 {
                return false;
            }
        }
        // PCIDE only in long mode, with CR3[11:0] = 0.
        if v & cr4::PCIDE != 0 && old & cr4::PCIDE == 0 && (self.hw.cr3() & 0xfff != 0 || self.hw.efer() & efer::LMA == 0) {
            return false;
        }
        self.hw.set_cr4(v);
        true
    }

    /// MOV to/from DRn: the registers are emulated (C: `dr_interception()`).
    pub(super) fn handle_dr(
        &mut self,
        ctx: &VcpuCtx<'_>,
        dr: u8,
        write: bool,
        gpr: Option<u8>,
        next: Option<u64>,
    ) -> Flow {
        if self.hw.cpl() != 0 {
            self.gp();
            return Flow::Resume;
        }
        // Without decode assists, the register is ModRM.rm of 0F 21/23 (with REX.B).
        let reg = match gpr {
            Some(r) => r,
            None => {
                let mode = self.exec_mode();
                match self.fetch_insn(ctx.vm).and_then(|(b, n)| emulate::decode_insn(&b[..n], mode).ok()) {
                    Some(insn) => {
                        let rm = insn.modrm.map_or(0, |m| m & 7);
                        rm | if insn.prefixes.rex_b() { 8 } else { 0 }
                    }
                    None => return self.emulation_failure(ctx),
                }
            }
        };
        let r = usize::from(reg & 15);
        if write {
            let v = self.gprs[r];
            match dr {
                0..=3 => self.db[usize::from(dr)] = v,
                4 | 6 => {
                    if v >> 32 != 0 {
                        self.gp();
                        return Flow::Resume;
                    }
                    self.hw.set_dr6((v & 0xffff_efff) | 0xffff_0ff0);
                }
                _ => {
                    if v >> 32 != 0 {
                        self.gp();
                        return Flow::Resume;
                    }
                    self.hw.set_dr7((v & !0xd000) | 0x400);
                }
            }
        } else {
            self.gprs[r] = match dr {
                0..=3 => self.db[usize::from(dr)],
                4 | 6 => self.hw.dr6(),
                _ => self.hw.dr7(),
            };
        }
        self.skip(ctx, next)
    }
}
