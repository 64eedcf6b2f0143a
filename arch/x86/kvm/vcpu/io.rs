// SPDX-License-Identifier: GPL-2.0

//! Port I/O and MMIO (C: `kvm_fast_pio()`, `complete_fast_pio_in()` and
//! the emulator's string I/O and MMIO paths, `arch/x86/kvm/x86.c` and
//! `emulate.c`): IN/OUT/INS/OUTS to the in-kernel PIC or to user space as
//! `KVM_EXIT_IO`; MMIO loads and stores to the in-kernel LAPIC or IOAPIC, a
//! coalesced zone, or user space as `KVM_EXIT_MMIO`; and the completion of
//! each once user space has answered.

use super::{now_ns, Flow, X86Vcpu, RFLAGS_DF};
use crate::kvm_main::{Backing, VcpuCtx, Vm};
use crate::stats::VcpuStat;
use crate::uapi::{self, exit, run};
use crate::x86::backend::{Backend, VendorVcpu};
use crate::x86::emulate::{self, MmioInsn, MmioOp};
use crate::x86::pio::{self, StringIo};
use crate::x86::regs::{gpr, Seg};
use kernel::prelude::*;

/// An IN or INS user space has to complete.
#[derive(Clone, Copy)]
pub(super) struct PendingIo {
    sio: StringIo,
    string: bool,
    /// Items transferred by this exit.
    count: u32,
    /// INS of one item into memory that is not RAM (MMIO, a PCI hole, a
    /// read-only slot): its guest-physical address, written as MMIO.
    mmio_dest: Option<u64>,
    /// Where RIP goes once the instruction completes.
    next_rip: u64,
}

/// An MMIO read user space has to complete.
#[derive(Clone, Copy)]
pub(super) struct PendingMmio {
    insn: MmioInsn,
    len: u32,
    next_rip: u64,
}

impl<B: Backend> X86Vcpu<B> {
    /// IN/OUT/INS/OUTS: to user space as `KVM_EXIT_IO` (C: `kvm_fast_pio()`
    /// and the emulator's string I/O). String I/O moves up to a page of data
    /// per exit; the rest runs as the instruction is executed again.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn handle_io(
        &mut self,
        ctx: &VcpuCtx<'_>,
        port: u16,
        size: u8,
        input: bool,
        string: bool,
        rep: bool,
        addr_size: u8,
        seg: Option<Seg>,
        next: Option<u64>,
    ) -> Result<Flow> {
        let next_rip = match next {
            Some(n) => n,
            None => return Ok(self.emulation_failure(ctx)),
        };
        // The in-kernel PIC's ports (and its ELCR).
        if !string && self.irqchip() {
            if let Some(f) = self.pic_io(port, size, input, next_rip) {
                return Ok(f);
            }
        }
        let sio = StringIo { size, addr_size, rep, df: self.hw.rflags() & RFLAGS_DF != 0 };
        let mut count = 1u32;
        let mut mmio_dest = None;
        if string {
            count = match sio.batch(self.gprs[gpr::RCX]) {
                Some(n) => n,
                None => {
                    self.rip = next_rip;
                    return Ok(Flow::Resume);
                }
            };
            // INS writes ES:rDI; OUTS reads DS:rSI (or the override).
            let (seg, index) = if input {
                (Seg::Es, self.gprs[gpr::RDI])
            } else {
                (seg.unwrap_or_else(|| self.outs_segment(ctx.vm)), self.gprs[gpr::RSI])
            };
            // The batch stops where guest RAM does; an item outside it goes
            // alone, through the MMIO path.
            match self.string_ram_items(ctx.vm, &sio, seg, index, count, input) {
                Some(0) if input => {
                    let va = self.linear(seg, index);
                    match self.translate(ctx.vm, va, true, false) {
                        Ok(gpa) if (gpa & 0xfff) + u64::from(size) <= 0x1000 => {
                            count = 1;
                            mmio_dest = Some(gpa);
                        }
                        _ => return Ok(self.emulation_failure(ctx)),
                    }
                }
                // OUTS from MMIO would need an MMIO read exit first: not
                // emulated (KVM_EXIT_INTERNAL_ERROR, as for other MMIO
                // instructions kvm-rs does not emulate).
                Some(0) => return Ok(self.emulation_failure(ctx)),
                Some(n) => count = n,
                // The first item faults: the copy below raises the fault.
                None => {}
            }
            if !input {
                let bytes = count as usize * usize::from(size);
                // A page-sized bounce buffer kept with the vCPU, off the stack.
                let mut buf = core::mem::take(&mut self.io_buf);
                let start = sio.block_start(self.gprs[gpr::RSI], count);
                let linear = self.linear(seg, start);
                let r = self.read_virt(ctx.vm, linear, &mut buf[..bytes]);
                if matches!(r, Ok(true)) {
                    sio.order_items(&mut buf[..bytes], count);
                    ctx.pio.write_bytes(0, &buf[..bytes]);
                }
                self.io_buf = buf;
                if !r? {
                    return Ok(Flow::Resume);
                }
            }
        } else if !input {
            let v = self.gprs[gpr::RAX].to_le_bytes();
            let data = &v[..usize::from(size)];
            // A write into a coalesced PIO zone goes to the ring, no exit.
            if ctx.vm.coalesced_write(u64::from(port), data, true) {
                self.rip = next_rip;
                return Ok(Flow::Resume);
            }
            ctx.pio.write_bytes(0, data);
        }
        ctx.run.write_u32(run::EXIT_REASON, exit::IO);
        ctx.run.write_u8(run::IO_DIRECTION, if input { uapi::KVM_EXIT_IO_IN } else { uapi::KVM_EXIT_IO_OUT });
        ctx.run.write_u8(run::IO_SIZE, size);
        ctx.run.write_u16(run::IO_PORT, port);
        ctx.run.write_u32(run::IO_COUNT, count);
        ctx.run.write_u64(run::IO_DATA_OFFSET, (uapi::KVM_PIO_PAGE_OFFSET * 4096) as u64);
        if input {
            self.pending_io = Some(PendingIo { sio, string, count, mmio_dest, next_rip });
        } else if !string || sio.advance(&mut self.gprs, count, true) {
            // OUT and OUTS are done once the data is out (C:
            // `complete_fast_pio_out()` only moves RIP).
            self.rip = next_rip;
        }
        Ok(Flow::User)
    }

    /// IN/OUT on a port of the in-kernel PIC: done here, `None` if the port
    /// is not the PIC's.
    fn pic_io(&mut self, port: u16, size: u8, input: bool, next_rip: u64) -> Option<Flow> {
        let len = usize::from(size);
        let mut data = [0u8; 4];
        let rax = self.gprs[gpr::RAX];
        if !input {
            data.copy_from_slice(&rax.to_le_bytes()[..4]);
        }
        let intr_ok = self.hw.interrupt_allowed();
        let r = self.vm.with_irqchip(|chip, _| {
            if input {
                chip.pic.pio_read(port, &mut data[..len])
            } else {
                chip.pic.pio_write(port, &data[..len], intr_ok)
            }
        });
        match r {
            Ok(Ok(())) => {
                if input {
                    let v = u64::from(u32::from_le_bytes(data));
                    self.gprs[gpr::RAX] = pio::in_result(rax, size, v);
                }
                self.rip = next_rip;
                Some(Flow::Resume)
            }
            _ => None,
        }
    }

    /// The segment of OUTS without decode assists: DS, or the override
    /// prefix of the instruction at RIP.
    fn outs_segment(&self, vm: &Vm) -> Seg {
        let mode = self.exec_mode();
        let insn = self.fetch_insn(vm).and_then(|(b, n)| emulate::decode_insn(&b[..n], mode).ok());
        match insn.and_then(|i| i.prefixes.seg) {
            Some(emulate::Seg::Es) => Seg::Es,
            Some(emulate::Seg::Cs) => Seg::Cs,
            Some(emulate::Seg::Ss) => Seg::Ss,
            Some(emulate::Seg::Fs) => Seg::Fs,
            Some(emulate::Seg::Gs) => Seg::Gs,
            Some(emulate::Seg::Ds) | None => Seg::Ds,
        }
    }

    /// The user-space half of an IN or INS (C: `complete_fast_pio_in()` and
    /// the emulator's string completion).
    pub(super) fn complete_io(&mut self, ctx: &VcpuCtx<'_>, io: PendingIo) -> Result<Flow> {
        let size = io.sio.size;
        if !io.string {
            let mut b = [0u8; 8];
            ctx.pio.read_bytes(0, &mut b[..usize::from(size)]);
            self.gprs[gpr::RAX] = pio::in_result(self.gprs[gpr::RAX], size, u64::from_le_bytes(b));
            self.rip = io.next_rip;
            return Ok(Flow::Resume);
        }
        // INS: as many items as rCX still asks for (user space may have
        // changed it), at most what this exit read.
        let want = io.sio.completion(self.gprs[gpr::RCX], io.count);
        if want == 0 {
            self.rip = io.next_rip;
            return Ok(Flow::Resume);
        }
        if let Some(gpa) = io.mmio_dest {
            // One item into MMIO: written like a guest store, complete once
            // it leaves (C: the emulator's MMIO write after the IN).
            let mut data = [0u8; 4];
            let len = usize::from(size).min(4);
            ctx.pio.read_bytes(0, &mut data[..len]);
            if io.sio.advance(&mut self.gprs, 1, false) {
                self.rip = io.next_rip;
            }
            return Ok(self.mmio_store(ctx, gpa, &data[..len]));
        }
        let bytes = want as usize * usize::from(size);
        let mut buf = core::mem::take(&mut self.io_buf);
        ctx.pio.read_bytes(0, &mut buf[..bytes]);
        io.sio.order_items(&mut buf[..bytes], want);
        let start = io.sio.block_start(self.gprs[gpr::RDI], want);
        let linear = self.linear(Seg::Es, start);
        let r = self.write_virt(ctx.vm, linear, &buf[..bytes]);
        self.io_buf = buf;
        if !r? {
            return Ok(Flow::Resume);
        }
        if io.sio.advance(&mut self.gprs, want, false) {
            self.rip = io.next_rip;
        }
        Ok(Flow::Resume)
    }

    /// How many items of a string I/O batch, from the first in the order
    /// the instruction moves them, lie in memory KVM copies directly: guest
    /// RAM (writable, for INS) or a PCI hole (for OUTS). `None` if the first
    /// item's translation faults.
    fn string_ram_items(&self, vm: &Vm, sio: &StringIo, seg: Seg, index: u64, count: u32, write: bool) -> Option<u32> {
        let mut cached: Option<(u64, bool)> = None;
        for i in 0..count {
            let first = self.linear(seg, sio.item_offset(index, i));
            for va in [first, first.wrapping_add(u64::from(sio.size) - 1)] {
                let ok = match cached {
                    Some((page, ok)) if page == va >> 12 => ok,
                    _ => {
                        let ok = match self.translate(vm, va, write, false) {
                            Ok(gpa) => match vm.gfn_to_backing(gpa >> 12) {
                                Some((Backing::User(h), _)) => !(write && h.readonly),
                                Some((Backing::PciHole, _)) => !write,
                                None => false,
                            },
                            Err(_) if i == 0 => return None,
                            Err(_) => false,
                        };
                        cached = Some((va >> 12, ok));
                        ok
                    }
                };
                if !ok {
                    return Some(i);
                }
            }
        }
        Some(count)
    }

    /// A guest store of `data` to `gpa`, which is not RAM: the in-kernel
    /// LAPIC or IOAPIC, a coalesced zone, else `KVM_EXIT_MMIO` (complete
    /// once it exits).
    fn mmio_store(&mut self, ctx: &VcpuCtx<'_>, gpa: u64, data: &[u8]) -> Flow {
        if self.irqchip() && self.lapic.mmio_in_range(gpa) && self.lapic.xapic_mmio_active() {
            let off = (gpa - self.lapic.base_address()) as u32;
            let a = self.lapic.mmio_write(off, data, now_ns()).unwrap_or(None);
            self.lapic_action(a);
            return Flow::Resume;
        }
        if self.irqchip() {
            let r = self.vm.with_irqchip(|chip, bus| chip.ioapic.mmio_write(gpa, data, bus).map(|_| ()));
            if let Ok(Ok(())) = r {
                return Flow::Resume;
            }
        }
        // A write into a coalesced MMIO zone goes to the ring, no exit.
        if ctx.vm.coalesced_write(gpa, data, false) {
            return Flow::Resume;
        }
        let mut buf = [0u8; 8];
        let len = data.len().min(8);
        buf[..len].copy_from_slice(&data[..len]);
        ctx.run.write_u32(run::EXIT_REASON, exit::MMIO);
        ctx.run.write_u64(run::MMIO_PHYS_ADDR, gpa);
        ctx.run.write_u32(run::MMIO_LEN, len as u32);
        ctx.run.write_u8(run::MMIO_IS_WRITE, 1);
        ctx.run.write_bytes(run::MMIO_DATA, &buf);
        ctx.stats.inc(VcpuStat::MmioExits);
        Flow::User
    }

    /// An access to guest-physical memory with no slot behind it (or a write
    /// to a read-only slot): emulated in the kernel for the LAPIC page, else
    /// `KVM_EXIT_MMIO` (C: the emulator's MMIO path).
    pub(super) fn handle_mmio(&mut self, ctx: &VcpuCtx<'_>, gpa: u64) -> Result<Flow> {
        let mode = self.exec_mode();
        let Some((bytes, n)) = self.fetch_insn(ctx.vm) else {
            return Ok(self.emulation_failure(ctx));
        };
        let insn = match emulate::decode_mmio(&bytes[..n], mode) {
            Ok(i) if !(i.string && i.rep) => i,
            _ => return Ok(self.emulation_failure(ctx)),
        };
        let (size, is_write) = match insn.op {
            MmioOp::Load { size, .. } => (size, false),
            MmioOp::Store { size, .. } => (size, true),
        };
        // An access that crosses out of the page is not emulated.
        if (gpa & 0xfff) + u64::from(size) > 0x1000 {
            return Ok(self.emulation_failure(ctx));
        }
        ctx.stats.inc(VcpuStat::InsnEmulation);
        let next_rip = self.rip.wrapping_add(insn.len as u64);
        let df = self.hw.rflags() & RFLAGS_DF != 0;
        let len = usize::from(size);
        if is_write {
            // The store is done as far as the guest is concerned.
            let v = emulate::store_value(&self.gprs, &insn.op).to_le_bytes();
            emulate::string_advance(&mut self.gprs, &insn, df);
            self.rip = next_rip;
            self.hw.set_interrupt_shadow(false);
            return Ok(self.mmio_store(ctx, gpa, &v[..len]));
        }
        let mut v = [0u8; 8];
        let mut done = false;
        if self.irqchip() && self.lapic.mmio_in_range(gpa) && self.lapic.xapic_mmio_active() {
            let off = (gpa - self.lapic.base_address()) as u32;
            let _ = self.lapic.mmio_read(off, &mut v[..len], now_ns());
            done = true;
        } else if self.irqchip() {
            let r = self.vm.with_irqchip(|chip, _| chip.ioapic.mmio_read(gpa, &mut v[..len]));
            done = matches!(r, Ok(Ok(())));
        }
        if done {
            emulate::complete_load(&mut self.gprs, &insn.op, u64::from_le_bytes(v));
            emulate::string_advance(&mut self.gprs, &insn, df);
            self.rip = next_rip;
            self.hw.set_interrupt_shadow(false);
            return Ok(Flow::Resume);
        }
        ctx.run.write_u32(run::EXIT_REASON, exit::MMIO);
        ctx.run.write_u64(run::MMIO_PHYS_ADDR, gpa);
        ctx.run.write_u32(run::MMIO_LEN, u32::from(size));
        ctx.run.write_u8(run::MMIO_IS_WRITE, 0);
        ctx.run.write_bytes(run::MMIO_DATA, &[0u8; 8]);
        self.pending_mmio = Some(PendingMmio { insn, len: u32::from(size), next_rip });
        ctx.stats.inc(VcpuStat::MmioExits);
        Ok(Flow::User)
    }

    /// The user-space half of an MMIO read.
    pub(super) fn complete_mmio(&mut self, ctx: &VcpuCtx<'_>, m: PendingMmio) {
        let mut data = [0u8; 8];
        ctx.run.read_bytes(run::MMIO_DATA, &mut data[..m.len as usize]);
        emulate::complete_load(&mut self.gprs, &m.insn.op, u64::from_le_bytes(data));
        let df = self.hw.rflags() & RFLAGS_DF != 0;
        emulate::string_advance(&mut self.gprs, &m.insn, df);
        self.rip = m.next_rip;
        self.hw.set_interrupt_shadow(false);
    }
}
