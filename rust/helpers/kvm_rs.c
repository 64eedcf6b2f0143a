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
