// SPDX-License-Identifier: GPL-2.0

//! Nested page faults (C: `kvm_tdp_page_fault()` and `fast_page_fault()`
//! of `arch/x86/kvm/mmu/mmu.c`): a guest page pinned and mapped in the TDP
//! tables, a page write-protected for dirty logging made writable again, a
//! PCI hole mapped to the all-ones page, and any other access handed to the
//! MMIO emulation.

use super::{Flow, X86Vcpu};
use crate::kvm_main::{Backing, VcpuCtx};
use crate::stats::VcpuStat;
use crate::x86::backend::Backend;
use kernel::{prelude::*, user_mem::PinnedPage};

impl<B: Backend> X86Vcpu<B> {
    pub(super) fn handle_tdp_fault(
        &mut self,
        ctx: &VcpuCtx<'_>,
        gpa: u64,
        write: bool,
        fetch: bool,
        present: bool,
        _on_table_walk: bool,
    ) -> Result<Flow> {
        let gfn = gpa >> 12;
        let (hva, gen) = match ctx.vm.gfn_to_backing(gfn) {
            Some((Backing::User(hva), gen)) if !(write && hva.readonly) => {
                // A write to a page write-protected for dirty logging: only
                // the permission comes back (C: `fast_page_fault()`).
                if write && present {
                    let done = {
                        let mut tdp = self.vm.tdp.lock();
                        ctx.vm.mem_generation() == gen && tdp.make_writable(&*self.vm.backend, gfn)
                    };
                    if done {
                        ctx.stats.inc(VcpuStat::PfFixed);
                        if hva.log_dirty {
                            ctx.vm.mark_dirty(gfn);
                        }
                        return Ok(Flow::Resume);
                    }
                }
                (hva, gen)
            }
            Some((Backing::PciHole, gen)) if !write && !fetch => {
                // Reads of a PCI hole: map the all-ones page read-only, so
                // that they never exit; writes fault and exit as MMIO.
                let mut tdp = self.vm.tdp.lock();
                if ctx.vm.mem_generation() == gen {
                    let old = tdp.map_ones(&*self.vm.backend, gfn, self.vm.ones_page.phys_addr())?;
                    drop(tdp);
                    if old.is_some() {
                        self.vm.flush_remote_tlbs();
                    }
                }
                return Ok(Flow::Resume);
            }
            _ => {
                if fetch {
                    // Executing from MMIO cannot be emulated.
                    return Ok(self.emulation_failure(ctx));
                }
                return self.handle_mmio(ctx, gpa);
            }
        };
        // Pin the page, for writing if the slot and the user mapping allow
        // (so that the pinned page is the process's own, never a shared
        // zero or copy-on-write page). In a slot logging dirty pages it is
        // mapped writable only on a write, which is then recorded.
        let (page, mut writable) = if hva.readonly {
            (PinnedPage::pin_current(hva.addr as usize, false)?, false)
        } else {
            match PinnedPage::pin_current(hva.addr as usize, true) {
                Ok(p) => (p, true),
                Err(e) if e == EFAULT && !write => (PinnedPage::pin_current(hva.addr as usize, false)?, false),
                Err(e) => return Err(e),
            }
        };
        if hva.log_dirty && !write {
            writable = false;
        }
        let replaced = {
            let mut tdp = self.vm.tdp.lock();
            if ctx.vm.mem_generation() != gen {
                // The slot changed meanwhile: fault again.
                return Ok(Flow::Resume);
            }
            let r = tdp.map(&*self.vm.backend, gfn, page, writable)?;
            ctx.stats.inc(VcpuStat::PfFixed);
            r
        };
        // Marked once the writable mapping is in, as C does: a
        // `KVM_GET_DIRTY_LOG` in between write-protects it again and the
        // page shows up in the next log.
        if hva.log_dirty && writable {
            ctx.vm.mark_dirty(gfn);
        }
        if replaced.is_some() {
            // Another vCPU mapped it too; release the old page only after no
            // TLB can hold it.
            self.vm.flush_remote_tlbs();
            drop(replaced);
        }
        Ok(Flow::Resume)
    }
}
