// SPDX-License-Identifier: GPL-2.0

//! MSRs (C: `kvm_get_msr_common()`, `kvm_set_msr_common()`,
//! `kvm_msr_user_space()` and `complete_fast_msr_access()` of
//! `arch/x86/kvm/x86.c`): the MSRs x86 common code keeps, a failed guest
//! RDMSR/WRMSR turned into #GP or an exit to user space, and
//! `KVM_GET_MSRS`/`KVM_SET_MSRS` on the vCPU.

use super::{cr0, cr4, now_ns, Flow, X86Vcpu};
use crate::kvm_main::VcpuCtx;
use crate::uapi::{exit, run};
use crate::x86::backend::{Backend, VendorVcpu};
use crate::x86::cpuid::{self, feature};
use crate::x86::msrs::{self, *};
use crate::x86::regs::gpr;
use core::sync::atomic::Ordering;
use kernel::{prelude::*, uaccess::UserSlice, x86};

/// Why an MSR access failed (C: 1 vs `KVM_MSR_RET_UNSUPPORTED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum MsrErr {
    /// A known MSR, an invalid access or value: #GP.
    Invalid,
    /// An MSR kvm-rs does not know.
    Unsupported,
}

/// An MSR access user space has to complete (`KVM_EXIT_X86_RDMSR/WRMSR`).
#[derive(Clone, Copy)]
pub(super) struct PendingMsr {
    read: bool,
    next_rip: u64,
}

impl<B: Backend> X86Vcpu<B> {
    pub(super) fn efer_caps(&self) -> EferCaps {
        EferCaps {
            lm: self.has(feature::LM),
            nx: self.has(feature::NX),
            svm: false,
            ffxsr: self.has(feature::FFXSR),
        }
    }

    /// What lets the guest set `IA32_FEATURE_CONTROL` bits: VMX only when
    /// KVM offers it too (nested VMX, which kvm-rs does not have yet), SGX
    /// from the guest's CPUID, LMCE from its `MCG_CAP` (C:
    /// `vmx_vcpu_after_set_cpuid()`, `vmx_setup_mce()`).
    fn feat_ctl_caps(&self) -> FeatCtlCaps {
        FeatCtlCaps {
            vmx: self.has(feature::VMX) && cpuid::has(&self.vm.supported, feature::VMX),
            sgx: self.has(feature::SGX),
            sgx_lc: self.has(feature::SGX_LC),
            lmce: self.mce.lmce(),
        }
    }

    /// `kvm_get_msr_common()` and the backend's: `Err(())` is #GP for a
    /// guest, a failed entry for `KVM_GET_MSRS`.
    pub(super) fn get_msr(&self, index: u32, host: bool) -> core::result::Result<u64, MsrErr> {
        if let Some(v) = self.hw.get_msr(index) {
            return Ok(v);
        }
        if let Some(r) = self.mce.get_msr(index, host) {
            return r.map_err(|()| MsrErr::Invalid);
        }
        Ok(match index {
            MSR_EFER => self.hw.efer(),
            MSR_IA32_TSC => self.guest_tsc(),
            MSR_IA32_TSC_ADJUST => self.tsc_adjust,
            MSR_IA32_APICBASE => self.lapic.apic_base(),
            MSR_IA32_MISC_ENABLE => self.misc_enable,
            MSR_IA32_POWER_CTL => self.power_ctl,
            MSR_PLATFORM_INFO => {
                if !host && !self.vm.platform_info_readable.load(Ordering::Relaxed) {
                    return Err(MsrErr::Invalid);
                }
                self.platform_info
            }
            MSR_MISC_FEATURES_ENABLES => self.misc_features_enables,
            MSR_IA32_FEAT_CTL if self.vm.backend.feature_control() => self.feat_ctl,
            MSR_IA32_FEAT_CTL if host && self.feat_ctl_listed_only() => 0,
            MSR_IA32_UCODE_REV => self.microcode,
            MSR_K7_HWCR => self.hwcr,
            MSR_IA32_TSC_DEADLINE if self.irqchip() && (host || self.has(feature::TSC_DEADLINE)) => {
                self.lapic.tsc_deadline()
            }
            X2APIC_FIRST..=X2APIC_LAST if self.irqchip() => {
                self.lapic.rdmsr(index, now_ns()).map_err(|_| MsrErr::Invalid)?
            }
            _ => return Err(MsrErr::Unsupported),
        })
    }

    /// `kvm_set_msr_common()` and the backend's.
    pub(super) fn set_msr(&mut self, index: u32, mut value: u64, host: bool) -> core::result::Result<(), MsrErr> {
        match index {
            // Linear addresses: canonical for the widest address KVM
            // offers, whatever CR4.LA57 says, as on hardware (C:
            // `is_noncanonical_msr_address()`).
            MSR_FS_BASE | MSR_GS_BASE | MSR_KERNEL_GS_BASE | MSR_CSTAR | MSR_LSTAR => {
                let bits = if cpuid::has(&self.vm.supported, feature::LA57) { 57 } else { 48 };
                if msrs::canonicalize(value, bits) != value {
                    return Err(MsrErr::Invalid);
                }
            }
            // AMD ignores their upper half and Intel faults: made canonical
            // for the current paging depth so that either vendor's entry
            // takes the value.
            MSR_IA32_SYSENTER_ESP | MSR_IA32_SYSENTER_EIP => {
                let bits = if self.hw.cr4() & cr4::LA57 != 0 { 57 } else { 48 };
                value = msrs::canonicalize(value, bits);
            }
            _ => {}
        }
        if let Some(r) = self.hw.set_msr(index, value) {
            return r.map_err(|()| MsrErr::Invalid);
        }
        // AMD's HWCR.McStatusWrEn lets the guest write MCi_STATUS (C:
        // `can_set_mci_status()`).
        let status_writable = self.guest_is_amd() && self.hwcr & (1 << 18) != 0;
        if let Some(r) = self.mce.set_msr(index, value, host, status_writable) {
            return r.map_err(|()| MsrErr::Invalid);
        }
        self.set_msr_common(index, value, host).map_err(|()| {
            if self.msr_known(index) {
                MsrErr::Invalid
            } else {
                MsrErr::Unsupported
            }
        })
    }

    /// The MSRs x86 common code keeps: `Err(())` is #GP; unknown ones are
    /// answered by the last arm.
    fn set_msr_common(&mut self, index: u32, value: u64, host: bool) -> core::result::Result<(), ()> {
        match index {
            MSR_EFER => {
                let paging = self.hw.cr0() & cr0::PG != 0;
                if !msrs::efer_write_ok(self.hw.efer(), value, self.efer_caps(), paging, host) {
                    return Err(());
                }
                // LMA follows LME and CR0.PG; a guest cannot set it.
                let lma = self.hw.efer() & efer::LMA;
                let v = if host { value } else { (value & !efer::LMA) | lma };
                self.hw.set_efer(v);
            }
            MSR_IA32_TSC => {
                if host {
                    self.set_tsc_offset(value.wrapping_sub(x86::rdtsc()));
                } else {
                    let delta = value.wrapping_sub(self.guest_tsc());
                    self.tsc_adjust = self.tsc_adjust.wrapping_add(delta);
                    self.set_tsc_offset(self.tsc_offset.wrapping_add(delta));
                }
            }
            MSR_IA32_TSC_ADJUST => {
                // Ignored, not refused, when the guest's CPUID lacks it (C KVM).
                if self.has(feature::TSC_ADJUST) {
                    if !host {
                        let delta = value.wrapping_sub(self.tsc_adjust);
                        self.set_tsc_offset(self.tsc_offset.wrapping_add(delta));
                    }
                    self.tsc_adjust = value;
                }
            }
            MSR_IA32_APICBASE => {
                self.lapic.set_apic_base(value, host).map_err(|_| ())?;
                self.publish_apic();
            }
            MSR_IA32_MISC_ENABLE => {
                self.misc_enable = msrs::misc_enable_write(self.misc_enable, value, host).ok_or(())?;
            }
            MSR_IA32_POWER_CTL => self.power_ctl = value,
            MSR_PLATFORM_INFO => {
                // Read-only for the guest. User space may not take CPUID
                // faulting away while the guest uses it.
                let faulting = self.misc_features_enables & MISC_FEATURES_CPUID_FAULT != 0;
                if !host || (value & PLATFORM_INFO_CPUID_FAULT == 0 && faulting) {
                    return Err(());
                }
                self.platform_info = value;
            }
            MSR_MISC_FEATURES_ENABLES => {
                // Only CPUID faulting, and only if MSR_PLATFORM_INFO offers it.
                if value & !MISC_FEATURES_CPUID_FAULT != 0
                    || (value != 0 && self.platform_info & PLATFORM_INFO_CPUID_FAULT == 0)
                {
                    return Err(());
                }
                self.misc_features_enables = value;
            }
            MSR_IA32_FEAT_CTL if self.vm.backend.feature_control() => {
                if !msrs::feat_ctl_write_ok(self.feat_ctl, value, host, self.feat_ctl_caps()) {
                    return Err(());
                }
                // (C leaves nested VMX here when user space writes 0; there
                // is no nested state to leave.)
                self.feat_ctl = value;
            }
            MSR_IA32_FEAT_CTL if host && value == 0 && self.feat_ctl_listed_only() => {}
            MSR_IA32_UCODE_REV => {
                // The guest writes 0 to ask for the revision; only user space sets it.
                if host {
                    self.microcode = value;
                }
            }
            MSR_K7_HWCR => self.hwcr = msrs::hwcr_write(value).ok_or(())?,
            MSR_IA32_TSC_DEADLINE if self.irqchip() && (host || self.has(feature::TSC_DEADLINE)) => {
                let _ = self.lapic.set_tsc_deadline(value);
                self.sync_timer();
            }
            X2APIC_FIRST..=X2APIC_LAST if self.irqchip() => {
                let a = self.lapic.wrmsr(index, value, now_ns()).map_err(|_| ())?;
                self.lapic_action(a);
            }
            _ => return Err(()),
        }
        Ok(())
    }

    /// `IA32_FEATURE_CONTROL` is listed for user space but not emulated:
    /// user space may read 0 and write 0, the guest has no such MSR (C:
    /// `kvm_do_msr_access()` for an advertised MSR KVM does not handle).
    fn feat_ctl_listed_only(&self) -> bool {
        self.vm.feat_ctl_listed && !self.vm.backend.feature_control()
    }

    /// Whether x86 common code or the backend knows MSR `index` (for the
    /// "unknown MSR" exit reason of user-space MSR exits).
    fn msr_known(&self, index: u32) -> bool {
        !(index == MSR_IA32_FEAT_CTL && self.feat_ctl_listed_only()) && self.get_msr(index, true).is_ok()
    }

    /// `KVM_GET_MSRS` / `KVM_SET_MSRS` on the vCPU: processes entries until
    /// one fails, returns how many succeeded.
    pub(super) fn msrs_ioctl(&mut self, arg: usize, set: bool) -> Result<isize> {
        let mut hdr = [0u8; 8];
        UserSlice::new(arg, 8).reader().read_slice(&mut hdr)?;
        let n = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        if n >= MAX_IO_MSRS {
            return Err(E2BIG);
        }
        let len = n as usize * MSR_ENTRY_SIZE;
        let mut buf = KVec::from_elem(0u8, len, GFP_KERNEL)?;
        UserSlice::new(arg + 8, len).reader().read_slice(&mut buf)?;
        let mut done = 0;
        for e in buf.chunks_exact_mut(MSR_ENTRY_SIZE) {
            let index = u32::from_ne_bytes([e[0], e[1], e[2], e[3]]);
            let ok = if set {
                let mut d = [0u8; 8];
                d.copy_from_slice(&e[8..16]);
                self.set_msr(index, u64::from_ne_bytes(d), true).is_ok()
            } else {
                // The entry that fails reads as 0 (C clears it).
                let r = self.get_msr(index, true);
                e[8..16].copy_from_slice(&r.unwrap_or(0).to_ne_bytes());
                r.is_ok()
            };
            if !ok {
                break;
            }
            done += 1;
        }
        if !set {
            UserSlice::new(arg + 8, len).writer().write_slice(&buf)?;
        }
        Ok(done)
    }

    /// A guest RDMSR/WRMSR failed (`None`: the filter denied it): exit to
    /// user space if it asked for this reason (`kvm_msr_user_space()`), else #GP.
    pub(super) fn msr_failed(
        &mut self,
        ctx: &VcpuCtx<'_>,
        index: u32,
        data: u64,
        read: bool,
        e: Option<MsrErr>,
        next: Option<u64>,
    ) -> Flow {
        use crate::x86::msr_filter::{MsrExitReason, UserSpaceMsr};
        let reason = match e {
            None => MsrExitReason::Filter,
            Some(MsrErr::Unsupported) => MsrExitReason::Unknown,
            Some(MsrErr::Invalid) => MsrExitReason::Inval,
        };
        let mask = self.vm.user_space_msr.load(Ordering::Relaxed);
        let wants = UserSpaceMsr::from_cap_arg(u64::from(mask)).map_or(false, |m| m.wants(reason));
        if !wants {
            self.gp();
            return Flow::Resume;
        }
        // The exit needs the next RIP now; without the hardware's, decode.
        let next_rip = match next {
            Some(n) => n,
            None => {
                let rip = self.rip;
                if let Flow::User = self.skip(ctx, None) {
                    return Flow::User;
                }
                core::mem::replace(&mut self.rip, rip)
            }
        };
        let r = ctx.run;
        r.write_u32(run::EXIT_REASON, if read { exit::X86_RDMSR } else { exit::X86_WRMSR });
        r.write_bytes(run::MSR_ERROR, &[0u8; 8]);
        r.write_u32(run::MSR_REASON, reason.bit());
        r.write_u32(run::MSR_INDEX, index);
        r.write_u64(run::MSR_DATA, data);
        self.pending_msr = Some(PendingMsr { read, next_rip });
        Flow::User
    }

    /// User space answered an MSR exit: `msr.error` non-zero is #GP, else a
    /// RDMSR gets `msr.data` (C: `complete_fast_msr_access()`).
    pub(super) fn complete_msr(&mut self, ctx: &VcpuCtx<'_>, m: PendingMsr) {
        if ctx.run.read_u8(run::MSR_ERROR) != 0 {
            self.gp();
            return;
        }
        if m.read {
            let v = ctx.run.read_u64(run::MSR_DATA);
            self.gprs[gpr::RAX] = v & 0xffff_ffff;
            self.gprs[gpr::RDX] = v >> 32;
        }
        self.rip = m.next_rip;
        self.hw.set_interrupt_shadow(false);
    }
}
