/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Helpers for the project selftests built on the upstream KVM selftest
 * library: VMs without the in-kernel irqchip the library otherwise always
 * creates, running a few bytes of real-mode code or 64-bit guest code.
 */
#ifndef KVM_RS_LIB_H
#define KVM_RS_LIB_H

#include <errno.h>
#include <string.h>

#include "kvm_util.h"
#include "processor.h"
#include "ucall_common.h"

#define RM_CODE_GPA	0x1000
#define RM_MEM_PAGES	16	/* 64 KiB at guest-physical 0 */

/*
 * A VM without KVM_CREATE_IRQCHIP, 64 KiB of memory at 0, and one vCPU in
 * real mode (CS base 0) about to run @len bytes of @code at RM_CODE_GPA.
 */
static inline struct kvm_vm *rm_vm_create(struct kvm_vcpu **vcpu, const void *code, size_t len)
{
	struct kvm_vm *vm = vm_create_barebones();
	struct kvm_sregs sregs;
	struct kvm_regs regs;

	vm_userspace_mem_region_add(vm, VM_MEM_SRC_ANONYMOUS, 0, 0, RM_MEM_PAGES, 0);
	memcpy(addr_gpa2hva(vm, RM_CODE_GPA), code, len);
	*vcpu = __vm_vcpu_add(vm, 0);
	vcpu_sregs_get(*vcpu, &sregs);
	sregs.cs.selector = 0;
	sregs.cs.base = 0;
	vcpu_sregs_set(*vcpu, &sregs);
	vcpu_regs_get(*vcpu, &regs);
	regs.rip = RM_CODE_GPA;
	regs.rsp = RM_MEM_PAGES * 4096 - 16;
	regs.rflags = 2;
	vcpu_regs_set(*vcpu, &regs);
	return vm;
}

/*
 * What vm_create_with_one_vcpu() builds (slot 0 with the test binary loaded,
 * 64-bit paging, ucalls, one vCPU about to run @guest_code), but without
 * KVM_CREATE_IRQCHIP: the library's kvm_arch_vm_post_create() always creates
 * one, and also sets up the GDT/IDT (static there), which this VM lacks. So
 * the guest must take no exception and no interrupt: either is a triple
 * fault (KVM_EXIT_SHUTDOWN).
 */
static inline struct kvm_vm *vm_create_no_irqchip(struct kvm_vcpu **vcpu, void *guest_code)
{
	const uint64_t pages = 1024;
	struct kvm_vm *vm = vm_create_barebones();
	int i;

	vm_userspace_mem_region_add(vm, VM_MEM_SRC_ANONYMOUS, 0, 0, pages, 0);
	for (i = 0; i < NR_MEM_REGIONS; i++)
		vm->memslots[i] = 0;
	kvm_vm_elf_load(vm, program_invocation_name);
	ucall_init(vm, pages * vm->page_size);
	*vcpu = vm_vcpu_add(vm, 0, guest_code);
	return vm;
}

#endif /* KVM_RS_LIB_H */
