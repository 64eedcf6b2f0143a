// SPDX-License-Identifier: GPL-2.0

//! Guest page walks and the instruction at RIP (C: the helpers of
//! `arch/x86/kvm/x86.c` around `mmu/paging_tmpl.h`, such as
//! `kvm_read_guest_virt()` and `kvm_fetch_guest_virt()`, with
//! `kvm_skip_emulated_instruction()` and `handle_emulation_failure()`):
//! guest-virtual to guest-physical translation, guest-virtual copies, the
//! fetch and length of the instruction at RIP, skipping it, or reporting
//! that it cannot be emulated.

use super::{cr0, Flow, X86Vcpu, RFLAGS_VM};
use crate::kvm_main::{SlotRange, VcpuCtx, Vm};
use crate::stats::VcpuStat;
use crate::uapi::{exit, internal, run};
use crate::x86::backend::{vector, Backend, VendorVcpu};
use crate::x86::cpuid::{self, feature, CpuidEntry};
use crate::x86::emulate::{self, ExecMode};
use crate::x86::mmu::paging_tmpl::{self, Access, GuestMem, PagingCtx, WalkError};
use crate::x86::msrs::efer;
use crate::x86::regs::Seg;
use kernel::{prelude::*, uaccess::UserSlice};

/// Guest memory for the page-table walker, read through the memory slots.
/// Guest memory for one page walk. The slot of the last entry read is kept
/// for the next one (page tables mostly sit in one slot), as the C KVM's
/// last-used-slot cache does; it lives for one walk only. Entries are
/// naturally aligned, so none crosses a page.
pub(super) struct WalkMem<'a> {
    vm: &'a Vm,
    slot: Option<SlotRange>,
}

impl<'a> WalkMem<'a> {
    pub(super) fn new(vm: &'a Vm) -> Self {
        Self { vm, slot: None }
    }

    fn read(&mut self, gpa: u64, buf: &mut [u8]) -> core::result::Result<(), ()> {
        let hva = match self.slot.and_then(|s| s.hva_of(gpa)) {
            Some(h) => h,
            None => {
                // Not in a user-memory slot (a PCI hole, no slot): the
                // general path answers.
                let Some(s) = self.vm.user_slot_of(gpa >> 12) else {
                    return self.vm.read_guest(gpa, buf).map_err(|_| ());
                };
                self.slot = Some(s);
                s.hva_of(gpa).ok_or(())?
            }
        };
        UserSlice::new(hva as usize, buf.len()).reader().read_slice(buf).map_err(|_| ())
    }
}

impl GuestMem for WalkMem<'_> {
    fn read_u64(&mut self, gpa: u64) -> core::result::Result<u64, ()> {
        let mut b = [0u8; 8];
        self.read(gpa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn read_u32(&mut self, gpa: u64) -> core::result::Result<u32, ()> {
        let mut b = [0u8; 4];
        self.read(gpa, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
}

/// The guest CPUID bits a guest page walk depends on.
#[derive(Clone, Copy, Debug)]
pub(super) struct WalkCaps {
    maxphyaddr: u8,
    gbpages: bool,
    /// An AMD-compatible vendor ("AuthenticAMD", "HygonGenuine").
    amd: bool,
}

impl WalkCaps {
    pub(super) fn of(entries: &[CpuidEntry]) -> Self {
        Self {
            maxphyaddr: cpuid::guest_maxphyaddr(entries),
            gbpages: cpuid::has(entries, feature::GBPAGES),
            amd: matches!(cpuid::find(entries, 0, 0), Some(e) if e.ebx == 0x6874_7541 || e.ebx == 0x6f67_7948),
        }
    }
}

impl<B: Backend> X86Vcpu<B> {
    pub(super) fn guest_is_amd(&self) -> bool {
        self.walk_caps.amd
    }

    pub(super) fn paging_ctx(&self) -> PagingCtx {
        PagingCtx {
            cr0: self.hw.cr0(),
            cr3: self.hw.cr3(),
            cr4: self.hw.cr4(),
            efer: self.hw.efer(),
            maxphyaddr: self.walk_caps.maxphyaddr,
            gbpages: self.walk_caps.gbpages,
            amd: self.walk_caps.amd,
        }
    }

    pub(super) fn exec_mode(&self) -> ExecMode {
        let cs = self.hw.seg(Seg::Cs);
        ExecMode::from_state(
            self.hw.cr0() & cr0::PE != 0,
            self.hw.rflags() & RFLAGS_VM != 0,
            self.hw.efer() & efer::LMA != 0,
            cs.l != 0,
            cs.db != 0,
        )
    }

    /// The linear address of `off` in segment `seg` (no limit checks: the
    /// hardware checked them before the exit for the accesses emulated here).
    pub(super) fn linear(&self, seg: Seg, off: u64) -> u64 {
        if self.exec_mode() == ExecMode::Long64 {
            match seg {
                Seg::Fs | Seg::Gs => self.hw.seg(seg).base.wrapping_add(off),
                _ => off,
            }
        } else {
            self.hw.seg(seg).base.wrapping_add(off) & 0xffff_ffff
        }
    }

    pub(super) fn translate(&self, vm: &Vm, gva: u64, write: bool, fetch: bool) -> core::result::Result<u64, WalkError> {
        let access = Access {
            write,
            fetch,
            user: self.hw.cpl() == 3,
            smap_override: self.hw.rflags() & (1 << 18) != 0,
        };
        let ctx = self.paging_ctx();
        paging_tmpl::translate(&mut WalkMem::new(vm), &ctx, gva, access).map(|t| t.gpa).map_err(|e| match e {
            // A page-table page outside guest memory: a not-present #PF
            // with the access's W/U/I bits, as the C KVM's walker injects.
            WalkError::NoMemory { .. } => {
                WalkError::PageFault { error_code: paging_tmpl::not_present_error_code(&ctx, access) }
            }
            e => e,
        })
    }

    /// Queues the exception a failed walk calls for.
    fn walk_fault(&mut self, gva: u64, e: WalkError) {
        match e {
            WalkError::PageFault { error_code } => {
                self.hw.set_cr2(gva);
                self.queue_exception(vector::PF, Some(error_code));
            }
            // `translate` turns it into a page fault with the access's bits;
            // a walk without the access at hand injects the bare not-present one.
            WalkError::NoMemory { .. } => {
                self.hw.set_cr2(gva);
                self.queue_exception(vector::PF, Some(0));
            }
            WalkError::NonCanonical => self.queue_exception(vector::GP, Some(0)),
        }
    }

    /// Copies guest-virtual memory at `gva` (for string I/O). On a fault the
    /// exception is queued and `Ok(false)` returned.
    pub(super) fn read_virt(&mut self, vm: &Vm, gva: u64, buf: &mut [u8]) -> Result<bool> {
        let mut done = 0;
        while done < buf.len() {
            let va = gva.wrapping_add(done as u64);
            let n = (4096 - (va & 0xfff) as usize).min(buf.len() - done);
            match self.translate(vm, va, false, false) {
                Ok(gpa) => vm.read_guest(gpa, &mut buf[done..done + n])?,
                Err(e) => {
                    self.walk_fault(va, e);
                    return Ok(false);
                }
            }
            done += n;
        }
        Ok(true)
    }

    /// Copies into guest-virtual memory at `gva`; like [`Self::read_virt`].
    pub(super) fn write_virt(&mut self, vm: &Vm, gva: u64, buf: &[u8]) -> Result<bool> {
        let mut done = 0;
        while done < buf.len() {
            let va = gva.wrapping_add(done as u64);
            let n = (4096 - (va & 0xfff) as usize).min(buf.len() - done);
            match self.translate(vm, va, true, false) {
                Ok(gpa) => vm.write_guest(gpa, &buf[done..done + n])?,
                Err(e) => {
                    self.walk_fault(va, e);
                    return Ok(false);
                }
            }
            done += n;
        }
        Ok(true)
    }

    /// The bytes at CS:RIP, up to 15, fewer if the fetch runs into a page it
    /// cannot read. `None` if not even the first byte can be fetched.
    /// The length of the instruction at RIP. An instruction that ends before
    /// the page does is decoded without walking the next page (the fetch of
    /// [`Self::fetch_insn`] takes 15 bytes, which may cross into it).
    fn insn_len_at_rip(&self, vm: &Vm, mode: ExecMode) -> Option<core::result::Result<usize, emulate::DecodeError>> {
        let start = self.linear(Seg::Cs, self.rip);
        let in_page = 4096 - (start & 0xfff) as usize;
        if in_page < emulate::MAX_INSN_LEN {
            let mut buf = [0u8; emulate::MAX_INSN_LEN];
            let gpa = self.translate(vm, start, false, true).ok()?;
            vm.read_guest(gpa, &mut buf[..in_page]).ok()?;
            match emulate::insn_len(&buf[..in_page], mode) {
                Err(emulate::DecodeError::Truncated) => {}
                r => return Some(r),
            }
        }
        self.fetch_insn(vm).map(|(b, n)| emulate::insn_len(&b[..n], mode))
    }

    pub(super) fn fetch_insn(&self, vm: &Vm) -> Option<([u8; emulate::MAX_INSN_LEN], usize)> {
        let mut buf = [0u8; emulate::MAX_INSN_LEN];
        let start = self.linear(Seg::Cs, self.rip);
        let mut got = 0;
        while got < buf.len() {
            let va = start.wrapping_add(got as u64);
            let n = (4096 - (va & 0xfff) as usize).min(buf.len() - got);
            let Ok(gpa) = self.translate(vm, va, false, true) else { break };
            if vm.read_guest(gpa, &mut buf[got..got + n]).is_err() {
                break;
            }
            got += n;
        }
        (got > 0).then_some((buf, got))
    }

    /// Skips the instruction that exited: to `next` if the hardware told, else
    /// past the instruction decoded at RIP (no NRIPS under emulation).
    pub(super) fn skip(&mut self, ctx: &VcpuCtx<'_>, next: Option<u64>) -> Flow {
        self.hw.set_interrupt_shadow(false);
        if let Some(n) = next {
            self.rip = n;
            return Flow::Resume;
        }
        let mode = self.exec_mode();
        match self.insn_len_at_rip(ctx.vm, mode) {
            Some(Ok(len)) => {
                self.rip = self.rip.wrapping_add(len as u64);
                if mode != ExecMode::Long64 {
                    self.rip &= 0xffff_ffff;
                }
                Flow::Resume
            }
            _ => self.emulation_failure(ctx),
        }
    }

    /// `KVM_EXIT_INTERNAL_ERROR` with `KVM_INTERNAL_ERROR_EMULATION`.
    pub(super) fn emulation_failure(&mut self, ctx: &VcpuCtx<'_>) -> Flow {
        ctx.stats.inc(VcpuStat::InsnEmulationFail);
        ctx.run.write_u32(run::EXIT_REASON, exit::INTERNAL_ERROR);
        ctx.run.write_u32(run::INTERNAL_SUBERROR, internal::EMULATION);
        ctx.run.write_u32(run::INTERNAL_NDATA, 0);
        Flow::User
    }
}
