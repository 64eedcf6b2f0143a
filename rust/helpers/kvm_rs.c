// SPDX-License-Identifier: GPL-2.0
/*
 * C helpers for the abstractions kvm-rs adds to the kernel crate: static
 * inline functions and macros that bindgen cannot bind.
 */

#include <asm/cpufeature.h>
#include <asm/msr.h>

bool rust_helper_boot_cpu_has(u16 bit)
{
	return boot_cpu_has(bit);
}

int rust_helper_rdmsrl_safe(u32 msr, u64 *val)
{
	return rdmsrl_safe(msr, val);
}
