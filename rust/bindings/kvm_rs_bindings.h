/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Kernel headers kvm-rs's kernel-crate additions need bindings for; included
 * from bindings_helper.h.
 */

#include <linux/anon_inodes.h>
#include <linux/fcntl.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/moduleparam.h>
#include <asm/cpufeature.h>
#include <asm/msr.h>
#include <linux/mm.h>
#include <linux/sched/mm.h>
#include <linux/cpuhotplug.h>
#include <linux/smp.h>
#include <asm/fpu/api.h>
#include <asm/fpu/types.h>
#include <asm/reboot.h>
#include <asm/tsc.h>
#include <asm/processor.h>
#include <linux/hrtimer.h>
#include <linux/wait.h>
#include <linux/debugfs.h>
#include <linux/file.h>
#include <asm/desc.h>
#include <asm/cpu_entry_area.h>
#include <asm/tlbflush.h>

/* file_ops.rs: readable anonymous files support pread(2), as KVM's stats files. */
const fmode_t RUST_CONST_HELPER_FMODE_PREAD = FMODE_PREAD;
