// SPDX-License-Identifier: GPL-2.0

//! CPUs as a driver of per-CPU hardware state sees them: the current CPU with
//! interrupts off, cross-CPU calls, CPU hotplug callbacks, and the emergency
//! (crash/kexec) callback for virtualization.
//!
//! C headers: [`include/linux/smp.h`](srctree/include/linux/smp.h),
//! [`include/linux/cpuhotplug.h`](srctree/include/linux/cpuhotplug.h),
//! [`arch/x86/include/asm/reboot.h`](srctree/arch/x86/include/asm/reboot.h)

use crate::{
    alloc::{flags::GFP_KERNEL, KBox},
    bindings,
    error::{to_result, Error, Result},
    ffi::{c_int, c_uint, c_void},
    str::CStr,
    types::Opaque,
};
use core::{marker::PhantomData, pin::Pin};

/// Proof that local interrupts are disabled on this CPU (and hence that the
/// task cannot be preempted or migrated) while the guard lives. Restores the
/// previous interrupt state on drop.
///
/// # Invariants
///
/// Interrupts were disabled by `local_irq_save` in [`IrqDisabled::new`], whose
/// saved flags are `flags`; the guard is not `Send`, so it is dropped on the
/// CPU that made it.
pub struct IrqDisabled {
    flags: crate::ffi::c_ulong,
    _not_send: PhantomData<*mut ()>,
}

impl IrqDisabled {
    /// Disables local interrupts.
    pub fn new() -> Self {
        // SAFETY: Saving and disabling the interrupt flag is always allowed.
        let flags = unsafe { bindings::local_irq_save() };
        // INVARIANT: interrupts are now off; `flags` restores them.
        Self { flags, _not_send: PhantomData }
    }

    /// The number of this CPU: stable while the guard lives.
    pub fn cpu(&self) -> u32 {
        // SAFETY: Reading the CPU number is always safe; with interrupts off
        // (type invariant) it cannot change.
        unsafe { bindings::raw_smp_processor_id() as u32 }
    }
}

impl Default for IrqDisabled {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for IrqDisabled {
    fn drop(&mut self) {
        // SAFETY: Restores the state saved in `new` on the same CPU (type invariant).
        unsafe { bindings::local_irq_restore(self.flags) };
    }
}

/// The number of possible CPU ids (`nr_cpu_ids`): CPU numbers are below it.
pub fn nr_cpu_ids() -> u32 {
    // SAFETY: `nr_cpu_ids` is set during boot and read-only afterwards.
    unsafe { bindings::nr_cpu_ids }
}

/// Whether `cpu` is online now (a snapshot).
pub fn cpu_online(cpu: u32) -> bool {
    // SAFETY: Reads the online mask; any CPU number is allowed (out of range is false).
    cpu < nr_cpu_ids() && unsafe { bindings::cpu_online(cpu) }
}

unsafe extern "C" fn call_fn(info: *mut c_void) {
    // SAFETY: `info` was made from a `fn()` in `on_each_cpu`.
    let f: fn() = unsafe { core::mem::transmute::<*mut c_void, fn()>(info) };
    f();
}

/// Runs `f` on every online CPU (with interrupts disabled there) and waits
/// for all of them to finish.
pub fn on_each_cpu(f: fn()) {
    // SAFETY: `call_fn` turns `info` back into the `fn()` it came from; the
    // call waits, and `f` is a plain function pointer valid forever anyway.
    unsafe { bindings::on_each_cpu(Some(call_fn), f as *mut c_void, 1) };
}

unsafe extern "C" fn nop_fn(_info: *mut c_void) {}

/// Sends an IPI to `cpu` and, if `wait`, waits until it has handled it. A
/// task running in guest mode on `cpu` is thereby forced out of it (the
/// interrupt causes a VM exit); with `wait`, it has left guest mode when this
/// returns. Must not be called with interrupts disabled. Returns an error if
/// `cpu` is offline.
pub fn kick_cpu(cpu: u32, wait: bool) -> Result {
    // SAFETY: `nop_fn` ignores its argument; `smp_call_function_single` checks `cpu`.
    to_result(unsafe {
        bindings::smp_call_function_single(cpu as c_int, Some(nop_fn), core::ptr::null_mut(), wait as c_int)
    })
}

/// The function and argument of a [`call_on_cpu`], on the caller's stack.
struct CallOn<'a, T: Sync> {
    data: &'a T,
    f: fn(&T),
}

unsafe extern "C" fn call_on_trampoline<T: Sync>(info: *mut c_void) {
    // SAFETY: `info` is the `CallOn<T>` of `call_on_cpu`, which waits for
    // this call to finish, so it is alive.
    let c = unsafe { &*info.cast::<CallOn<'_, T>>() };
    (c.f)(c.data);
}

/// Runs `f(data)` on `cpu`, with interrupts disabled there (in the IPI
/// handler, or directly if `cpu` is the current CPU), and waits until it has
/// run (`smp_call_function_single(cpu, f, data, 1)`). Must not be called with
/// interrupts disabled. `ENXIO` if `cpu` is offline (nothing ran).
pub fn call_on_cpu<T: Sync>(cpu: u32, data: &T, f: fn(&T)) -> Result {
    let c = CallOn { data, f };
    // SAFETY: The trampoline matches `CallOn<T>`; `wait = 1` keeps `c`
    // (and `data`, borrowed for the call) alive until `f` returned. `T: Sync`
    // because `f` may run on another CPU.
    to_result(unsafe {
        bindings::smp_call_function_single(
            cpu as c_int,
            Some(call_on_trampoline::<T>),
            (&c as *const CallOn<'_, T>).cast_mut().cast(),
            1,
        )
    })
}

/// Callbacks of a CPU hotplug state: `startup` runs on each CPU as it comes
/// online (and, at registration, on each CPU already online), `teardown` on
/// each CPU as it goes offline (and, at removal, on each online CPU).
pub trait HotplugCallbacks: Send + Sync {
    /// Prepares `cpu`; runs on `cpu`, may sleep.
    fn startup(&self, cpu: u32) -> Result;
    /// Undoes `startup` on `cpu`; runs on `cpu`.
    fn teardown(&self, cpu: u32) -> Result;
}

/// The registered instance: the C list node the hotplug core links, and the
/// data the callbacks get.
#[repr(C)]
struct HpInstance<T: HotplugCallbacks> {
    node: Opaque<bindings::hlist_node>,
    data: T,
}

/// # Safety
///
/// `node` is the `node` field of a live `HpInstance<T>`.
unsafe fn instance<'a, T: HotplugCallbacks>(node: *mut bindings::hlist_node) -> &'a T {
    // SAFETY: Per the caller, `node` is inside a live `HpInstance<T>`, which
    // stays alive while its instance is registered (see `Hotplug::drop`).
    unsafe {
        let inst = crate::container_of!(node, HpInstance<T>, node);
        &(*inst).data
    }
}

unsafe extern "C" fn startup_cb<T: HotplugCallbacks>(cpu: c_uint, node: *mut bindings::hlist_node) -> c_int {
    // SAFETY: The hotplug core passes the node we registered.
    match unsafe { instance::<T>(node) }.startup(cpu) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

unsafe extern "C" fn teardown_cb<T: HotplugCallbacks>(cpu: c_uint, node: *mut bindings::hlist_node) -> c_int {
    // SAFETY: The hotplug core passes the node we registered.
    match unsafe { instance::<T>(node) }.teardown(cpu) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

type SingleCb = unsafe extern "C" fn(c_uint) -> c_int;
type MultiCb = unsafe extern "C" fn(c_uint, *mut bindings::hlist_node) -> c_int;

/// A dynamic CPU hotplug state with one instance whose data the callbacks
/// get; removed on drop, which tears down every online CPU first.
///
/// # Invariants
///
/// `state` is a multi-instance dynamic state set up with `T`'s callbacks, and
/// `inst.node` is registered on it.
pub struct Hotplug<T: HotplugCallbacks> {
    inst: Pin<KBox<HpInstance<T>>>,
    state: c_int,
}

// SAFETY: The node is only touched by the hotplug core under its own lock;
// `T: Send + Sync`.
unsafe impl<T: HotplugCallbacks> Send for Hotplug<T> {}
// SAFETY: `&Hotplug<T>` only gives `&T`, and `T: Sync`.
unsafe impl<T: HotplugCallbacks> Sync for Hotplug<T> {}

impl<T: HotplugCallbacks> Hotplug<T> {
    /// Registers `data`'s callbacks and runs `startup` on every online CPU.
    /// If one fails, the CPUs already started are torn down and the error
    /// returned.
    pub fn register(name: &'static CStr, data: T) -> Result<Self> {
        let inst = KBox::pin(HpInstance { node: Opaque::uninit(), data }, GFP_KERNEL)?;
        // The C API declares single-instance callback types and casts
        // multi-instance ones to them (`cpuhp_setup_state_multi()`).
        // SAFETY: The two function-pointer types have the same ABI apart from
        // the extra argument, which the hotplug core passes for a
        // multi-instance state; it calls them through the multi type.
        let (start, tear) = unsafe {
            (
                core::mem::transmute::<MultiCb, SingleCb>(startup_cb::<T>),
                core::mem::transmute::<MultiCb, SingleCb>(teardown_cb::<T>),
            )
        };
        // SAFETY: `name` is static; the callbacks stay valid until the state
        // is removed in `drop` (or below, on failure).
        let state = unsafe {
            bindings::__cpuhp_setup_state(
                bindings::cpuhp_state_CPUHP_AP_ONLINE_DYN,
                name.as_char_ptr(),
                false,
                Some(start),
                Some(tear),
                true,
            )
        };
        if state < 0 {
            return Err(Error::from_errno(state));
        }
        // SAFETY: `state` was just set up as multi-instance; `inst` is pinned
        // and outlives its registration (removed in `drop` before it is freed).
        let r = unsafe { bindings::__cpuhp_state_add_instance(state as _, inst.node.get(), true) };
        if r < 0 {
            // SAFETY: Set up above, no instance registered.
            unsafe { bindings::__cpuhp_remove_state(state as _, false) };
            return Err(Error::from_errno(r));
        }
        // INVARIANT: set up and registered above.
        Ok(Self { inst, state })
    }

    /// The data the callbacks get.
    pub fn data(&self) -> &T {
        &self.inst.data
    }
}

impl<T: HotplugCallbacks> Drop for Hotplug<T> {
    fn drop(&mut self) {
        // SAFETY: Registered (type invariant); removing the instance runs
        // `teardown` on every online CPU and unlinks the node before `inst`
        // is freed; then the empty state goes.
        unsafe {
            bindings::__cpuhp_state_remove_instance(self.state as _, self.inst.node.get(), true);
            bindings::__cpuhp_remove_state(self.state as _, false);
        }
    }
}

#[cfg(CONFIG_X86)]
pub use emergency::{EmergencyVirt, EmergencyVirtCallback, EmergencyVirtHandler, EmergencyVirtWith};

#[cfg(CONFIG_X86)]
mod emergency {
use crate::{bindings, error::{code::EBUSY, Result}, sync::Arc};
use core::{
    marker::PhantomData,
    sync::atomic::{AtomicPtr, Ordering},
};

/// The callback x86 runs on every CPU when the kernel crashes or kexecs
/// (`cpu_emergency_register_virt_callback()`): it must leave virtualization
/// (VMXOFF after VMCLEARing every loaded VMCS, or clear EFER.SVME), in NMI
/// context, without locks.
pub trait EmergencyVirtCallback {
    /// Leaves virtualization on this CPU; may run in NMI context.
    fn disable_virtualization();
}

unsafe extern "C" fn emergency_cb<T: EmergencyVirtCallback>() {
    T::disable_virtualization();
}

/// The registered emergency callback; unregistered on drop. x86 holds one
/// such callback at a time.
pub struct EmergencyVirt<T: EmergencyVirtCallback> {
    _t: PhantomData<T>,
}

impl<T: EmergencyVirtCallback> EmergencyVirt<T> {
    /// Registers `T`'s callback.
    pub fn register() -> Self {
        // SAFETY: The callback is a function of this module, unregistered in `drop`.
        unsafe { bindings::cpu_emergency_register_virt_callback(Some(emergency_cb::<T>)) };
        Self { _t: PhantomData }
    }
}

impl<T: EmergencyVirtCallback> Drop for EmergencyVirt<T> {
    fn drop(&mut self) {
        // SAFETY: Registered in `register`; unregistering waits for running callbacks (RCU).
        unsafe { bindings::cpu_emergency_unregister_virt_callback(Some(emergency_cb::<T>)) };
    }
}

/// An emergency callback that needs data: the VMX one VMCLEARs the VMCSs
/// on this CPU's list of loaded VMCSs before VMXOFF.
pub trait EmergencyVirtHandler: Send + Sync + 'static {
    /// Leaves virtualization on this CPU; may run in NMI context, so it
    /// must not take locks, allocate or sleep.
    fn disable_virtualization(&self);
}

/// The data of the registered [`EmergencyVirtWith`] (x86 holds one
/// emergency callback at a time, so one pointer suffices).
static EMERGENCY_DATA: AtomicPtr<core::ffi::c_void> = AtomicPtr::new(core::ptr::null_mut());

unsafe extern "C" fn emergency_with_cb<T: EmergencyVirtHandler>() {
    let p = EMERGENCY_DATA.load(Ordering::Acquire);
    if p.is_null() {
        return;
    }
    // SAFETY: `p` was set from the `Arc<T>` of the registered
    // `EmergencyVirtWith<T>`, which keeps it alive until after it has
    // unregistered this callback and waited for running ones (RCU).
    let data = unsafe { &*p.cast::<T>() };
    data.disable_virtualization();
}

/// A registered emergency callback with its data; unregistered on drop.
///
/// # Invariants
///
/// `EMERGENCY_DATA` points at `data`'s `T` while the callback is registered.
pub struct EmergencyVirtWith<T: EmergencyVirtHandler> {
    data: Arc<T>,
}

impl<T: EmergencyVirtHandler> EmergencyVirtWith<T> {
    /// Registers `T::disable_virtualization` on `data`. `EBUSY` if another
    /// callback with data is registered.
    pub fn register(data: Arc<T>) -> Result<Self> {
        let p = (&*data as *const T).cast_mut().cast::<core::ffi::c_void>();
        EMERGENCY_DATA
            .compare_exchange(core::ptr::null_mut(), p, Ordering::AcqRel, Ordering::Acquire)
            .map_err(|_| EBUSY)?;
        // SAFETY: The callback is a function of this module and reads data
        // that stays alive until `drop` has unregistered it.
        unsafe { bindings::cpu_emergency_register_virt_callback(Some(emergency_with_cb::<T>)) };
        // INVARIANT: published above.
        Ok(Self { data })
    }

    /// The data.
    pub fn data(&self) -> &Arc<T> {
        &self.data
    }
}

impl<T: EmergencyVirtHandler> Drop for EmergencyVirtWith<T> {
    fn drop(&mut self) {
        // SAFETY: Registered in `register`; unregistering waits (RCU) for
        // callbacks already running, so none uses the data after this.
        unsafe { bindings::cpu_emergency_unregister_virt_callback(Some(emergency_with_cb::<T>)) };
        EMERGENCY_DATA.store(core::ptr::null_mut(), Ordering::Release);
    }
}
}

/// Does the work due before entering a guest (`xfer_to_guest_mode_handle_work()`):
/// reschedules, runs resume-to-user work (rseq, task work, memory-cgroup
/// reclaim) in kernel context. `Err(EINTR)` if a signal is pending (or
/// `TIF_NOTIFY_SIGNAL` task work): the caller returns to user space.
pub fn xfer_to_guest_work() -> crate::error::Result {
    // SAFETY: Process context with interrupts and preemption enabled, as the
    // C function requires; it only acts on the current task.
    let r = unsafe { bindings::kvm_rs_xfer_to_guest_work() };
    if r == 0 {
        Ok(())
    } else {
        Err(crate::error::code::EINTR)
    }
}

/// Whether work is due before entering a guest (`xfer_to_guest_mode_work_pending()`),
/// checked with interrupts off just before entry: if so the entry is abandoned.
pub fn xfer_to_guest_work_pending(_irq: &IrqDisabled) -> bool {
    // SAFETY: Reads the current task's flags; interrupts are off (`_irq`).
    unsafe { bindings::kvm_rs_xfer_to_guest_work_pending() }
}

/// Gives up the CPU if a reschedule is due (`cond_resched()`): long loops in
/// process context call it so that they do not hog a CPU.
pub fn cond_resched() {
    // SAFETY: Called from process context (sleeping allowed), as documented.
    unsafe { bindings::cond_resched() };
}
