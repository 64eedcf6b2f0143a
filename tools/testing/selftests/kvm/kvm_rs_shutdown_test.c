// SPDX-License-Identifier: GPL-2.0
/*
 * Triple fault: a guest that loads an empty IDT (limit 0) and then raises an
 * exception cannot deliver it, nor the #GP and #DF that follow, and shuts
 * down. KVM_RUN returns 0 with exit_reason KVM_EXIT_SHUTDOWN. Checked in
 * 64-bit mode (with the in-kernel irqchip the library creates) for a fault
 * (#UD), a trap-like software exception (INT3) and a #PF, and in real mode on
 * a VM without an in-kernel irqchip.
 */
#include "kvm_util.h"
#include "processor.h"
#include "kselftest_harness.h"
#include "kvm_rs_lib.h"

static void load_empty_idt(void)
{
	static struct desc_ptr idt = { .size = 0, .address = 0 };

	asm volatile("lidt %0" : : "m"(idt));
}

static void guest_ud(void)
{
	load_empty_idt();
	asm volatile("ud2");
	GUEST_FAIL("survived #UD with an empty IDT");
}

static void guest_int3(void)
{
	load_empty_idt();
	asm volatile("int3");
	GUEST_FAIL("survived INT3 with an empty IDT");
}

static void guest_pf(void)
{
	load_empty_idt();
	/* Far outside anything the library maps. */
	(void)*(volatile uint64_t *)0x7fff00000000ull;
	GUEST_FAIL("survived #PF with an empty IDT");
}

static void expect_shutdown(struct __test_metadata *_metadata, void (*guest)(void))
{
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm = vm_create_with_one_vcpu(&vcpu, guest);
	struct ucall uc;

	vcpu_run(vcpu);
	if (vcpu->run->exit_reason == KVM_EXIT_IO && get_ucall(vcpu, &uc) == UCALL_ABORT)
		REPORT_GUEST_ASSERT(uc);
	EXPECT_EQ(KVM_EXIT_SHUTDOWN, vcpu->run->exit_reason)
		TH_LOG("exit reason %s", exit_reason_str(vcpu->run->exit_reason));
	kvm_vm_free(vm);
}

TEST(long_mode_ud)
{
	expect_shutdown(_metadata, guest_ud);
}

TEST(long_mode_int3)
{
	expect_shutdown(_metadata, guest_int3);
}

TEST(long_mode_page_fault)
{
	expect_shutdown(_metadata, guest_pf);
}

TEST(real_mode_no_irqchip)
{
	static const uint8_t code[] = {
		0x0f, 0x01, 0x1e, 0x00, 0x11,	/* 0x1000: lidt [0x1100] */
		0x0f, 0x0b,			/* 0x1005: ud2 */
		0xf4,				/* 0x1007: hlt */
	};
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm = rm_vm_create(&vcpu, code, sizeof(code));

	/* The IDT descriptor at 0x1100: limit 0, base 0. */
	memset(addr_gpa2hva(vm, 0x1100), 0, 6);
	vcpu_run(vcpu);
	EXPECT_EQ(KVM_EXIT_SHUTDOWN, vcpu->run->exit_reason)
		TH_LOG("exit reason %s", exit_reason_str(vcpu->run->exit_reason));
	kvm_vm_free(vm);
}

TEST_HARNESS_MAIN
