// SPDX-License-Identifier: GPL-2.0
/*
 * C helpers for the abstractions kvm-rs adds to the kernel crate: static
 * inline functions and macros that bindgen cannot bind.
 */

#include <linux/cpumask.h>
#include <asm/cpufeature.h>
#include <asm/msr.h>
#include <asm/processor.h>
#include <asm/fpu/xcr.h>
#include <linux/sched/mm.h>
#include <linux/mm.h>
#include <linux/smp.h>
#include <linux/irqflags.h>
#include <asm/io.h>
#include <asm/nospec-branch.h>
#include <asm/special_insns.h>
#include <linux/uaccess.h>
#include <linux/sched.h>
#include <linux/signal.h>
#include <linux/entry-kvm.h>
#include <linux/resume_user_mode.h>
#include <asm/desc.h>
#include <asm/cpu_entry_area.h>
#include <asm/debugreg.h>
#include <asm/tlbflush.h>
#include <asm/segment.h>
#include <asm/gsseg.h>
#include <asm/mce.h>

bool rust_helper_boot_cpu_has(u16 bit)
{
	return boot_cpu_has(bit);
}

int rust_helper_rdmsrl_safe(u32 msr, u64 *val)
{
	return rdmsrl_safe(msr, val);
}

void rust_helper_mmgrab(struct mm_struct *mm)
{
	mmgrab(mm);
}

void rust_helper_mmdrop(struct mm_struct *mm)
{
	mmdrop(mm);
}

unsigned int rust_helper_num_online_cpus(void)
{
	return num_online_cpus();
}

struct mm_struct *rust_helper_get_current_mm(void)
{
	return current->mm;
}

void rust_helper_cpuid_count(u32 op, u32 count, u32 *eax, u32 *ebx, u32 *ecx, u32 *edx)
{
	cpuid_count(op, count, eax, ebx, ecx, edx);
}

u64 rust_helper_host_xcr0(void)
{
	return boot_cpu_has(X86_FEATURE_OSXSAVE) ? xgetbv(XCR_XFEATURE_ENABLED_MASK) : 0;
}

/* hwmem.rs, user_mem.rs */
void *rust_helper_page_address(const struct page *page)
{
	return page_address(page);
}

phys_addr_t rust_helper_virt_to_phys(volatile void *addr)
{
	return virt_to_phys(addr);
}

unsigned long rust_helper_page_to_pfn(const struct page *page)
{
	return page_to_pfn(page);
}

/* smp.rs */
unsigned long rust_helper_local_irq_save(void)
{
	unsigned long flags;

	local_irq_save(flags);
	return flags;
}

void rust_helper_local_irq_restore(unsigned long flags)
{
	local_irq_restore(flags);
}

unsigned int rust_helper_raw_smp_processor_id(void)
{
	return raw_smp_processor_id();
}

bool rust_helper_cpu_online(unsigned int cpu)
{
	return cpu_online(cpu);
}

void rust_helper_on_each_cpu(smp_call_func_t func, void *info, int wait)
{
	on_each_cpu(func, info, wait);
}

/* x86.rs */
int rust_helper_wrmsrl_safe(u32 msr, u64 val)
{
	return wrmsrl_safe(msr, val);
}

unsigned long rust_helper_read_cr0(void)
{
	return read_cr0();
}

unsigned long rust_helper___read_cr4(void)
{
	return __read_cr4();
}

void rust_helper_xsetbv(u32 index, u64 value)
{
	xsetbv(index, value);
}

void rust_helper_kvm_rs_ibpb(void)
{
	indirect_branch_prediction_barrier();
}

void rust_helper_amd_clear_divider(void)
{
	amd_clear_divider();
}

/* user_mem.rs */
bool rust_helper_kvm_rs_access_ok(unsigned long addr, unsigned long size)
{
	return access_ok((void __user *)addr, size);
}

int rust_helper_cond_resched(void)
{
	return cond_resched();
}

/*
 * The work a task must do before it enters a guest (kernel/entry/kvm.c's
 * xfer_to_guest_mode_work(), which needs a C struct kvm_vcpu): reschedule,
 * resume-to-user work (rseq, task work, memcg high-limit reclaim) in kernel
 * context, and -EINTR for a signal. Interrupts and preemption enabled.
 */
int rust_helper_kvm_rs_xfer_to_guest_work(void)
{
	unsigned long ti_work = read_thread_flags();

	if (!(ti_work & XFER_TO_GUEST_MODE_WORK) && !need_resched())
		return 0;
	do {
		if (ti_work & (_TIF_SIGPENDING | _TIF_NOTIFY_SIGNAL))
			return -EINTR;
		if (ti_work & _TIF_NEED_RESCHED)
			schedule();
		if (ti_work & _TIF_NOTIFY_RESUME)
			resume_user_mode_work(NULL);
		ti_work = read_thread_flags();
	} while (ti_work & XFER_TO_GUEST_MODE_WORK || need_resched());
	return 0;
}

/* With interrupts off, just before entry (xfer_to_guest_mode_work_pending()). */
bool rust_helper_kvm_rs_xfer_to_guest_work_pending(void)
{
	return __xfer_to_guest_mode_work_pending();
}

/* waitqueue.rs */
void rust_helper_kvm_rs_send_reschedule(int cpu)
{
	arch_smp_send_reschedule(cpu);
}

/* sigmask.rs */
void rust_helper_kvm_rs_sigset_activate(u64 bits)
{
	sigset_t set;

	sigemptyset(&set);
	set.sig[0] = bits;
	sigprocmask(SIG_SETMASK, &set, &current->real_blocked);
}

void rust_helper_kvm_rs_sigset_deactivate(void)
{
	sigprocmask(SIG_SETMASK, &current->real_blocked, NULL);
	sigemptyset(&current->real_blocked);
}

/* task.rs: Task::pid() (bindgen's task_struct layout is not to be trusted). */
pid_t rust_helper_task_pid_nr(struct task_struct *tsk)
{
	return task_pid_nr(tsk);
}

/* x86.rs: VMX host state */
unsigned long rust_helper___read_cr3(void)
{
	return __read_cr3();
}

void rust_helper_kvm_rs_cr4_set_bits(unsigned long mask)
{
	cr4_set_bits(mask);
}

void rust_helper_kvm_rs_cr4_clear_bits(unsigned long mask)
{
	cr4_clear_bits(mask);
}

u16 rust_helper_kvm_rs_kernel_cs(void)
{
	return __KERNEL_CS;
}

u16 rust_helper_kvm_rs_kernel_ds(void)
{
	return __KERNEL_DS;
}

u16 rust_helper_kvm_rs_tss_selector(void)
{
	return GDT_ENTRY_TSS * 8;
}

unsigned long rust_helper_kvm_rs_host_gdt_base(void)
{
	return (unsigned long)get_current_gdt_ro();
}

unsigned long rust_helper_kvm_rs_host_idt_base(void)
{
	struct desc_ptr dt;

	store_idt(&dt);
	return dt.address;
}

unsigned long rust_helper_kvm_rs_host_tr_base(int cpu)
{
	return (unsigned long)&get_cpu_entry_area(cpu)->tss.x86_tss;
}

void rust_helper_kvm_rs_invalidate_tss_limit(void)
{
	invalidate_tss_limit();
}

void rust_helper_kvm_rs_restore_host_dr7(void)
{
	if (hw_breakpoint_active())
		set_debugreg(__this_cpu_read(cpu_dr7), 7);
}

void rust_helper_kvm_rs_load_gs_index(u16 sel)
{
	load_gs_index(sel);
}

/*
 * A machine check that interrupted a guest (an #MC VM exit, or one during
 * VM entry): the host's handler runs it, as if it had hit user mode (C:
 * kvm_machine_check()). Called with interrupts off, right after the exit.
 */
void rust_helper_kvm_rs_machine_check(void)
{
#ifdef CONFIG_X86_MCE
	struct pt_regs regs = {
		.cs = 3,	/* ring 3, whatever the guest ran at */
		.flags = X86_EFLAGS_IF,
	};

	do_machine_check(&regs);
#endif
}
