// SPDX-License-Identifier: GPL-2.0

//! The FPU/XSAVE state of a virtual CPU, kept by the x86 FPU core
//! (`struct fpu_guest`).
//!
//! The x86 FPU core switches the task's register state to the guest's with
//! [`GuestFpu::swap_in`] and back with [`GuestFpu::swap_out`]; while swapped
//! in, context switches save and restore the guest's state on the task's
//! behalf, so a vCPU thread may be preempted in between.
//!
//! C header: [`arch/x86/include/asm/fpu/api.h`](srctree/arch/x86/include/asm/fpu/api.h)

use crate::{
    alloc::{flags::GFP_KERNEL_ACCOUNT, AllocError, KBox},
    bindings,
    error::{Error, Result},
    types::Opaque,
};

/// The size of `struct kvm_xsave` (the legacy `KVM_GET_XSAVE` buffer).
pub const KVM_XSAVE_SIZE: usize = 4096;

/// A guest's FPU state.
///
/// # Invariants
///
/// `gfpu` was set up by `fpu_alloc_guest_fpstate` and is freed in `drop`;
/// `loaded` says whether it is swapped into the current task (between
/// `swap_in` and `swap_out`, always on the same task since `&mut self` is held
/// by one ioctl at a time).
pub struct GuestFpu {
    gfpu: KBox<Opaque<bindings::fpu_guest>>,
    loaded: bool,
}

// SAFETY: The state is owned and only accessed through `&mut self`.
unsafe impl Send for GuestFpu {}
// SAFETY: `&GuestFpu` exposes nothing.
unsafe impl Sync for GuestFpu {}

impl GuestFpu {
    /// Allocates the state in its reset configuration (charged to the caller's memory cgroup).
    pub fn new() -> Result<Self> {
        let gfpu = KBox::new(Opaque::<bindings::fpu_guest>::uninit(), GFP_KERNEL_ACCOUNT)?;
        // SAFETY: `gfpu` is memory we own, sized for a `struct fpu_guest`,
        // which is plain C data: zeroing it makes a valid, empty one.
        unsafe { core::ptr::write_bytes(gfpu.get(), 0, 1) };
        // SAFETY: `gfpu` is a zeroed `struct fpu_guest` we own.
        if !unsafe { bindings::fpu_alloc_guest_fpstate(gfpu.get()) } {
            return Err(AllocError.into());
        }
        // INVARIANT: allocated above, not swapped in.
        Ok(Self { gfpu, loaded: false })
    }

    /// Whether the state is swapped in.
    pub fn is_loaded(&self) -> bool {
        self.loaded
    }

    /// Swaps the guest's FPU state into the current task's registers; the
    /// task's own state is saved. Call [`GuestFpu::swap_out`] on the same task
    /// before returning to user space.
    pub fn swap_in(&mut self) {
        if self.loaded {
            return;
        }
        // SAFETY: Valid `fpu_guest` (type invariant), not in use.
        unsafe { bindings::fpu_swap_kvm_fpstate(self.gfpu.get(), true) };
        self.loaded = true;
    }

    /// Saves the guest's registers and gives the task its own state back.
    pub fn swap_out(&mut self) {
        if !self.loaded {
            return;
        }
        // SAFETY: Swapped in by `swap_in` on this task (type invariant).
        unsafe { bindings::fpu_swap_kvm_fpstate(self.gfpu.get(), false) };
        self.loaded = false;
    }

    /// The state in `struct kvm_xsave` layout (the XSAVE standard format, or
    /// FXSAVE plus an XSAVE header without XSAVE), for `KVM_GET_XSAVE(2)`.
    /// `out` is at least [`KVM_XSAVE_SIZE`] bytes; `xfeatures` are the
    /// components the guest may use. Must not be called while swapped in.
    pub fn get_uabi(&self, out: &mut [u8], xfeatures: u64, pkru: u32) {
        assert!(!self.loaded && out.len() >= KVM_XSAVE_SIZE);
        out.fill(0);
        // SAFETY: Valid, not swapped in (so the memory copy is current);
        // `out` has `out.len()` writable bytes.
        unsafe {
            bindings::fpu_copy_guest_fpstate_to_uabi(
                self.gfpu.get(),
                out.as_mut_ptr().cast(),
                out.len() as _,
                xfeatures,
                pkru,
            )
        };
    }

    /// Loads a `struct kvm_xsave` image, for `KVM_SET_XSAVE`. Fails with
    /// `EINVAL` if it holds components outside `xcr0` or invalid contents
    /// (e.g. reserved MXCSR bits). `pkru` is updated if the image has PKRU.
    pub fn set_uabi(&mut self, image: &[u8], xcr0: u64, pkru: &mut u32) -> Result {
        assert!(!self.loaded && image.len() >= KVM_XSAVE_SIZE);
        // SAFETY: Valid, not swapped in; `image` has at least the bytes of a
        // `struct kvm_xsave`, which the callee reads within.
        let r = unsafe {
            bindings::fpu_copy_uabi_to_guest_fpstate(self.gfpu.get(), image.as_ptr().cast(), xcr0, pkru)
        };
        if r < 0 {
            return Err(Error::from_errno(r));
        }
        Ok(())
    }

    /// The size of the state in `struct kvm_xsave` layout (`KVM_CAP_XSAVE2`).
    pub fn uabi_size(&self) -> usize {
        // SAFETY: Valid `fpu_guest` (type invariant).
        unsafe { (*self.gfpu.get()).uabi_size as usize }
    }
}

impl Drop for GuestFpu {
    fn drop(&mut self) {
        self.swap_out();
        // SAFETY: Allocated in `new`, not in use (swapped out above), freed once.
        unsafe { bindings::fpu_free_guest_fpstate(self.gfpu.get()) };
    }
}
