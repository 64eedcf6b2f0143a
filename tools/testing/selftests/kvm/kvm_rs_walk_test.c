// SPDX-License-Identifier: GPL-2.0
/*
 * The #PF KVM injects when its own walk of the guest's page tables (for an
 * instruction it emulates) finds a page-table page outside guest memory: a
 * not-present fault whose error code carries the access (W for a write,
 * U for user mode, I for a fetch), CR2 the linear address, as the C KVM's
 * walker does (walk_addr_generic()'s error path). The access here is REP
 * INSB, emulated by KVM: its write lands after the port data came back from
 * user space, through such a walk.
 */
#include "kvm_util.h"
#include "processor.h"
#include "kselftest_harness.h"

/* A linear address alone in its 2 MiB region, so its page-table page is its own. */
#define BAD_VA		0x40000000ul
/* Where its page-table page is made to point: no memory slot, no device. */
#define UNBACKED_GPA	0xe0000000ul
#define PORT		0x5b

static inline uint64_t read_cr2(void)
{
	uint64_t v;

	asm volatile("mov %%cr2, %0" : "=r"(v));
	return v;
}

static void guest_ins_to_unbacked_table(void)
{
	uint64_t ec = 0;
	uint8_t vector;

	/* It faults before any element: RDI and RCX are left as they were. */
	vector = kvm_asm_safe_ec("rep insb", ec, "D"(BAD_VA), "c"(1ul), "d"(PORT));
	GUEST_ASSERT_EQ(vector, PF_VECTOR);
	/* Not present, write, supervisor, no fetch. */
	GUEST_ASSERT_EQ(ec, PFERR_WRITE_MASK);
	GUEST_ASSERT_EQ(read_cr2(), BAD_VA);
	GUEST_DONE();
}

TEST(ins_through_unbacked_page_table_page_gets_not_present_pf)
{
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	struct ucall uc;
	uint64_t *pde;
	int level = PG_LEVEL_2M, i;

	vm = vm_create_with_one_vcpu(&vcpu, guest_ins_to_unbacked_table);
	/* Map BAD_VA normally (a page table of its own), then point its PDE away. */
	virt_pg_map(vm, BAD_VA, vm_phy_page_alloc(vm, KVM_GUEST_PAGE_TABLE_MIN_PADDR, 0));
	pde = __vm_get_page_table_entry(vm, BAD_VA, &level);
	*pde = (*pde & ~PHYSICAL_PAGE_MASK) | UNBACKED_GPA;

	for (i = 0; i < 4; i++) {
		vcpu_run(vcpu);
		if (vcpu->run->exit_reason == KVM_EXIT_IO && vcpu->run->io.port == PORT)
			continue;	/* the port's byte; KVM then writes it to BAD_VA */
		switch (get_ucall(vcpu, &uc)) {
		case UCALL_DONE:
			kvm_vm_free(vm);
			return;
		case UCALL_ABORT:
			REPORT_GUEST_ASSERT(uc);
			break;
		default:
			TEST_FAIL("unexpected exit %u (%s)", vcpu->run->exit_reason,
				  exit_reason_str(vcpu->run->exit_reason));
		}
	}
	TEST_FAIL("the guest did not finish");
}

TEST_HARNESS_MAIN
