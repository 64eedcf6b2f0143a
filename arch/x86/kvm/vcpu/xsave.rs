// SPDX-License-Identifier: GPL-2.0

//! FPU, XSAVE and XCR0 state (C: `__kvm_set_xcr()`,
//! `kvm_arch_vcpu_ioctl_get_fpu()`, `kvm_vcpu_ioctl_x86_get_xsave()` and
//! the XCRS ioctls of `arch/x86/kvm/x86.c`): the XCR0 a guest may set, and
//! the ioctls that read and write the guest's FPU state and XCR0.

use super::X86Vcpu;
use crate::x86::backend::Backend;
use crate::x86::cpuid::{self, CpuidEntry};
use crate::x86::regs::KvmFpu;
use kernel::{fpu::KVM_XSAVE_SIZE, prelude::*, uaccess::UserSlice, x86};

/// XCR0 bits.
pub(super) const XFEATURE_FP: u64 = 1;
const XFEATURE_SSE: u64 = 2;
const XFEATURE_YMM: u64 = 4;
const XFEATURE_BNDREGS: u64 = 8;
const XFEATURE_BNDCSR: u64 = 16;
const XFEATURE_AVX512: u64 = 0xe0;

/// `KVM_CAP_XSAVE2`: the size of `struct kvm_xsave` for the supported XCR0,
/// at least 4096.
pub(crate) fn xsave2_size(supported: &[CpuidEntry]) -> usize {
    let size = cpuid::find(supported, 0xd, 0).map_or(0, |e| e.ebx as usize);
    size.max(KVM_XSAVE_SIZE)
}

impl<B: Backend> X86Vcpu<B> {
    /// The XCR0 bits the guest may set: its CPUID.0xD.0 EDX:EAX within the
    /// supported ones, plus x87 (C: `guest_supported_xcr0`).
    fn guest_supported_xcr0(&self) -> u64 {
        let g = cpuid::find(&self.cpuid, 0xd, 0).map_or(0, |e| u64::from(e.eax) | u64::from(e.edx) << 32);
        (g & self.supported_xcr0) | XFEATURE_FP
    }

    /// `__kvm_set_xcr()`: whether `xcr0` is a valid XCR0 for this guest.
    pub(super) fn xcr0_valid(&self, xcr0: u64) -> bool {
        xcr0 & XFEATURE_FP != 0
            && !(xcr0 & XFEATURE_YMM != 0 && xcr0 & XFEATURE_SSE == 0)
            && xcr0 & !self.guest_supported_xcr0() == 0
            && (xcr0 & XFEATURE_BNDREGS == 0) == (xcr0 & XFEATURE_BNDCSR == 0)
            && !(xcr0 & XFEATURE_AVX512 != 0 && (xcr0 & XFEATURE_YMM == 0 || xcr0 & XFEATURE_AVX512 != XFEATURE_AVX512))
    }

    pub(super) fn get_fpu(&self) -> Result<KvmFpu> {
        let mut buf = KVec::from_elem(0u8, self.fpu.uabi_size().max(KVM_XSAVE_SIZE), GFP_KERNEL)?;
        self.fpu.get_uabi(&mut buf, self.supported_xcr0 | XFEATURE_FP | XFEATURE_SSE, self.pkru);
        Ok(KvmFpu::from_fxsave(&buf[..512]))
    }

    pub(super) fn set_fpu(&mut self, f: &KvmFpu) -> Result {
        let mut buf = KVec::from_elem(0u8, self.fpu.uabi_size().max(KVM_XSAVE_SIZE), GFP_KERNEL)?;
        let all = self.supported_xcr0 | XFEATURE_FP | XFEATURE_SSE;
        self.fpu.get_uabi(&mut buf, all, self.pkru);
        f.to_fxsave(&mut buf[..512]);
        // XSTATE_BV: x87 and SSE state present.
        buf[512] |= 3;
        self.fpu.set_uabi(&buf, all, &mut self.pkru)
    }

    pub(super) fn get_xsave(&self, arg: usize, size: usize) -> Result<isize> {
        let mut buf = KVec::from_elem(0u8, size.max(KVM_XSAVE_SIZE), GFP_KERNEL)?;
        // As the C KVM: every component kvm-rs supports, whatever the guest's
        // CPUID says (user space may save before it sets CPUID).
        self.fpu.get_uabi(&mut buf, self.supported_xcr0 | XFEATURE_FP | XFEATURE_SSE, self.pkru);
        UserSlice::new(arg, size).writer().write_slice(&buf[..size])?;
        Ok(0)
    }

    pub(super) fn set_xsave(&mut self, arg: usize) -> Result<isize> {
        let size = self.fpu.uabi_size().max(KVM_XSAVE_SIZE);
        let mut buf = KVec::from_elem(0u8, size, GFP_KERNEL)?;
        UserSlice::new(arg, size).reader().read_slice(&mut buf)?;
        self.fpu.set_uabi(&buf, self.supported_xcr0 | XFEATURE_FP | XFEATURE_SSE, &mut self.pkru)?;
        Ok(0)
    }

    /// `KVM_GET_XCRS`: XCR0, or no register on a host without XSAVE (C:
    /// `kvm_vcpu_ioctl_x86_get_xcrs()`).
    pub(super) fn get_xcrs(&self, arg: usize) -> Result<isize> {
        let mut b = [0u8; 392];
        if !x86::boot_cpu_has(x86::Feature::Xsave) {
            UserSlice::new(arg, b.len()).writer().write_slice(&b)?;
            return Ok(0);
        }
        b[0..4].copy_from_slice(&1u32.to_ne_bytes());
        b[8..12].copy_from_slice(&0u32.to_ne_bytes());
        b[16..24].copy_from_slice(&self.xcr0.to_ne_bytes());
        UserSlice::new(arg, b.len()).writer().write_slice(&b)?;
        Ok(0)
    }

    pub(super) fn set_xcrs(&mut self, arg: usize) -> Result<isize> {
        let mut b = [0u8; 392];
        UserSlice::new(arg, b.len()).reader().read_slice(&mut b)?;
        let nr = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
        let flags = u32::from_ne_bytes([b[4], b[5], b[6], b[7]]);
        if !x86::boot_cpu_has(x86::Feature::Xsave) || nr > 16 || flags != 0 {
            return Err(EINVAL);
        }
        for i in 0..nr as usize {
            let o = 8 + i * 16;
            let xcr = u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
            if xcr == 0 {
                let mut v = [0u8; 8];
                v.copy_from_slice(&b[o + 8..o + 16]);
                let v = u64::from_ne_bytes(v);
                if !self.xcr0_valid(v) {
                    return Err(EINVAL);
                }
                self.xcr0 = v;
                break;
            }
        }
        Ok(0)
    }
}
