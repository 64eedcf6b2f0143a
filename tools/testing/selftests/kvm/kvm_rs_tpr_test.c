// SPDX-License-Identifier: GPL-2.0
/*
 * CR8 and the local APIC's task priority (TPR).
 *
 * With an in-kernel irqchip (KVM_CREATE_IRQCHIP): CR8 is TPR[7:4] (SDM 10.8.6,
 * APM 16.6.4). A fixed interrupt of vector 0x50 (priority class 5), made
 * pending by a self-IPI through the ICR, must not be delivered with IF=1 while
 * CR8 >= 5, through exits and re-entries; once the guest lowers CR8 to 4 with
 * nothing else exiting in between (a register-only loop polls a flag the
 * handler sets), it must arrive within a few iterations. The same with the
 * TPR lowered through the APIC page. And every view of the TPR agrees: CR8
 * written by the guest is what KVM_GET_LAPIC (APIC_TASKPRI bits 7:4),
 * KVM_GET_SREGS (cr8), kvm_run->cr8 and the guest's APIC_TASKPRI/PROCPRI
 * reads report; a TPR written through the APIC page (offset 0x80) is what
 * the guest reads from CR8; a TPR set with KVM_SET_LAPIC or a cr8 set with
 * KVM_SET_SREGS is what the guest reads back.
 *
 * Without an irqchip, user space owns the TPR: kvm_run->cr8 is loaded at
 * every KVM_RUN (16 or more: EINVAL, nothing run, and kvm_run->cr8 rewritten
 * with the current value on the way out), the guest reads it from CR8, and
 * a CR8 the guest writes is in kvm_run->cr8 at the next exit.
 */
#include <signal.h>

#include "kvm_util.h"
#include "processor.h"
#include "apic.h"
#include "kselftest_harness.h"
#include "kvm_rs_util.h"
#include "kvm_rs_lib.h"

#define VECTOR		0x50	/* priority class 5 */
#define SPIN		20000	/* iterations that must pass without the interrupt */
#define LIMIT		10000000 /* how long to wait for it at most */
#define PROMPT		1000	/* and within how many iterations it must come */

static inline uint64_t get_cr8(void)
{
	uint64_t v;

	asm volatile("mov %%cr8, %0" : "=r"(v));
	return v;
}

static inline void set_cr8(uint64_t v)
{
	asm volatile("mov %0, %%cr8" : : "r"(v) : "memory");
}

/*
 * The TPR's subclass (bits 3:0, written through the APIC page) after an exit.
 * The SDM keeps it (a CR8 write alone clears it). The C KVM's SVM code copies
 * V_TPR into the TPR after every exit while it does not intercept CR8 writes
 * (sync_cr8_to_lapic() -> kvm_lapic_set_tpr()), which clears it; its VMX
 * code uses the LAPIC's register page as the virtual-APIC page, so the whole
 * TPR stays. kvm-rs copies V_TPR/VTPR back only when the guest changed CR8.
 * Set on the C kvm-amd.
 */
static bool subclass_lost;
#define TPR_AFTER_EXIT(v)	(subclass_lost ? (v) & 0xf0 : (v))

/* ---- guest side, with the in-kernel LAPIC ---- */

static volatile uint32_t irqs;
static volatile uint64_t cr8_in_handler;

static void irq_handler(struct ex_regs *regs)
{
	irqs++;
	cr8_in_handler = get_cr8();
	xapic_write_reg(APIC_EOI, 0);
}

static void self_ipi(void)
{
	xapic_write_reg(APIC_ICR, APIC_DEST_SELF | APIC_DM_FIXED | VECTOR);
}

static bool irr_pending(void)
{
	return xapic_read_reg(APIC_IRR + 0x10 * (VECTOR / 32)) & (1u << (VECTOR % 32));
}

/* A loop of register instructions only: nothing in it exits. */
static uint64_t spin_until_irq(uint64_t max)
{
	uint64_t i;

	for (i = 0; i < max && !irqs; i++)
		asm volatile("pause");
	return i;
}

static void guest_cr8_gate(void)
{
	uint64_t n;

	xapic_enable();
	asm volatile("cli");
	set_cr8(15);
	self_ipi();
	GUEST_ASSERT(irr_pending());
	asm volatile("sti");
	spin_until_irq(SPIN);
	__GUEST_ASSERT(!irqs, "delivered with CR8 = 15");
	GUEST_SYNC(15);
	/* Blocked across the exit and re-entry too. */
	spin_until_irq(SPIN);
	__GUEST_ASSERT(!irqs, "delivered with CR8 = 15 after an exit");
	set_cr8(5);
	spin_until_irq(SPIN);
	__GUEST_ASSERT(!irqs, "delivered with CR8 = 5 (vector 0x%x)", VECTOR);
	GUEST_ASSERT(irr_pending());
	GUEST_SYNC(5);
	spin_until_irq(SPIN);
	__GUEST_ASSERT(!irqs, "delivered with CR8 = 5 after an exit");
	/* Lowered below the class: no exit until the flag is seen. */
	set_cr8(4);
	n = spin_until_irq(LIMIT);
	__GUEST_ASSERT(irqs == 1, "%u interrupts %lu iterations after CR8 = 4", irqs, n);
	__GUEST_ASSERT(n < PROMPT, "interrupt delivered only %lu iterations after CR8 = 4", n);
	GUEST_ASSERT_EQ(cr8_in_handler, 4);
	GUEST_ASSERT(!irr_pending());
	asm volatile("cli");
	GUEST_SYNC(4);
	GUEST_DONE();
}

static void guest_tpr_views(void)
{
	uint64_t n;

	xapic_enable();
	asm volatile("cli");
	/* CR8 -> APIC page. */
	set_cr8(9);
	GUEST_ASSERT_EQ(xapic_read_reg(APIC_TASKPRI), 0x90);
	GUEST_ASSERT_EQ(xapic_read_reg(APIC_PROCPRI), 0x90);
	GUEST_SYNC(9);
	/* APIC page -> CR8; the subclass (bits 3:0) is kept in the register only. */
	xapic_write_reg(APIC_TASKPRI, 0x70);
	GUEST_ASSERT_EQ(get_cr8(), 7);
	xapic_write_reg(APIC_TASKPRI, 0x3c);
	GUEST_ASSERT_EQ(get_cr8(), 3);
	GUEST_ASSERT_EQ(xapic_read_reg(APIC_TASKPRI), TPR_AFTER_EXIT(0x3c));
	GUEST_SYNC(3);
	/* KVM_SET_LAPIC with TASKPRI 0xa5 -> CR8. */
	GUEST_ASSERT_EQ(get_cr8(), 0xa);
	GUEST_ASSERT_EQ(xapic_read_reg(APIC_TASKPRI), TPR_AFTER_EXIT(0xa5));
	GUEST_SYNC(0xa);
	/* KVM_SET_SREGS with cr8 6 -> CR8 and the APIC page. */
	GUEST_ASSERT_EQ(get_cr8(), 6);
	GUEST_ASSERT_EQ(xapic_read_reg(APIC_TASKPRI), 0x60);

	/* The TPR written through the APIC page gates delivery too. */
	xapic_write_reg(APIC_TASKPRI, 0xf0);
	self_ipi();
	asm volatile("sti");
	spin_until_irq(SPIN);
	__GUEST_ASSERT(!irqs, "delivered with TPR 0xf0");
	xapic_write_reg(APIC_TASKPRI, 0x5f);
	spin_until_irq(SPIN);
	__GUEST_ASSERT(!irqs, "delivered with TPR 0x5f (vector 0x%x)", VECTOR);
	xapic_write_reg(APIC_TASKPRI, 0x4f);
	n = spin_until_irq(LIMIT);
	__GUEST_ASSERT(irqs == 1, "%u interrupts %lu iterations after TPR = 0x4f", irqs, n);
	__GUEST_ASSERT(n < PROMPT, "interrupt delivered only %lu iterations after TPR = 0x4f", n);
	GUEST_ASSERT_EQ(cr8_in_handler, 4);
	asm volatile("cli");
	GUEST_DONE();
}

/* ---- host side ---- */

static void on_alarm(int sig)
{
}

/*
 * KVM_RUN up to the next ucall, GUEST_SYNC(@arg) or (@arg < 0) GUEST_DONE. A
 * guest that makes no progress (a vCPU stuck in KVM_RUN re-entering without
 * running the guest) fails after WATCHDOG_S seconds instead of hanging: the
 * alarm makes KVM_RUN return EINTR.
 */
#define WATCHDOG_S	20

static void run_expect(struct kvm_vcpu *vcpu, int64_t arg)
{
	struct sigaction sa = { .sa_handler = on_alarm };	/* no SA_RESTART */
	struct kvm_regs regs;
	struct ucall uc;
	int r, err;

	TEST_ASSERT(!sigaction(SIGALRM, &sa, NULL), "sigaction");
	alarm(WATCHDOG_S);
	r = __vcpu_run(vcpu);
	err = errno;
	alarm(0);
	if (r && err == EINTR) {
		vcpu_regs_get(vcpu, &regs);
		TEST_FAIL("KVM_RUN still running after %d s, waiting for GUEST_%s(%ld): guest RIP 0x%llx, "
			  "RFLAGS 0x%llx, kvm_run->cr8 %llu", WATCHDOG_S, arg < 0 ? "DONE" : "SYNC",
			  arg, regs.rip, regs.rflags, vcpu->run->cr8);
	}
	TEST_ASSERT(!r, "KVM_RUN: errno %d", err);
	switch (get_ucall(vcpu, &uc)) {
	case UCALL_SYNC:
		TEST_ASSERT(arg >= 0 && uc.args[1] == (uint64_t)arg,
			    "GUEST_SYNC(%lu), expected %ld", uc.args[1], arg);
		break;
	case UCALL_DONE:
		TEST_ASSERT(arg < 0, "GUEST_DONE, expected GUEST_SYNC(%ld)", arg);
		break;
	case UCALL_ABORT:
		REPORT_GUEST_ASSERT(uc);
		break;
	default:
		TEST_FAIL("unexpected exit %s", exit_reason_str(vcpu->run->exit_reason));
	}
}

static uint32_t lapic_reg(struct kvm_lapic_state *s, unsigned int off)
{
	return *(uint32_t *)&s->regs[off];
}

/*
 * Every host view of the TPR: KVM_GET_LAPIC, KVM_GET_SREGS and, right after
 * an exit (@at_exit), kvm_run->cr8.
 */
static void check_host_views(struct kvm_vcpu *vcpu, uint32_t tpr, bool irr, bool at_exit)
{
	struct kvm_lapic_state st;
	struct kvm_sregs sregs;

	vcpu_ioctl(vcpu, KVM_GET_LAPIC, &st);
	vcpu_sregs_get(vcpu, &sregs);
	TEST_ASSERT(lapic_reg(&st, APIC_TASKPRI) == tpr,
		    "KVM_GET_LAPIC: TASKPRI 0x%x, expected 0x%x", lapic_reg(&st, APIC_TASKPRI), tpr);
	TEST_ASSERT(sregs.cr8 == tpr >> 4, "KVM_GET_SREGS: cr8 %llu, expected %u", sregs.cr8,
		    tpr >> 4);
	TEST_ASSERT(!at_exit || vcpu->run->cr8 == tpr >> 4, "kvm_run->cr8 %llu, expected %u",
		    vcpu->run->cr8, tpr >> 4);
	TEST_ASSERT(!!(lapic_reg(&st, APIC_IRR + 0x10 * (VECTOR / 32)) & (1u << (VECTOR % 32))) ==
		    irr, "KVM_GET_LAPIC: vector 0x%x %s in IRR", VECTOR, irr ? "not" : "still");
}

static struct kvm_vm *lapic_vm(struct kvm_vcpu **vcpu, void *guest)
{
	struct kvm_vm *vm = vm_create_with_one_vcpu(vcpu, guest);

	virt_pg_map(vm, APIC_DEFAULT_GPA, APIC_DEFAULT_GPA);
	vm_install_exception_handler(vm, VECTOR, irq_handler);
	return vm;
}

TEST(tpr_views_agree)
{
	struct kvm_lapic_state st;
	struct kvm_sregs sregs;
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm = lapic_vm(&vcpu, guest_tpr_views);

	subclass_lost = kvm_rs_is_c_kvm() && host_cpu_is_amd;
	sync_global_to_guest(vm, subclass_lost);
	run_expect(vcpu, 9);
	check_host_views(vcpu, 0x90, false, true);
	run_expect(vcpu, 3);
	check_host_views(vcpu, TPR_AFTER_EXIT(0x3c), false, true);
	vcpu_ioctl(vcpu, KVM_GET_LAPIC, &st);
	*(uint32_t *)&st.regs[APIC_TASKPRI] = 0xa5;
	vcpu_ioctl(vcpu, KVM_SET_LAPIC, &st);
	check_host_views(vcpu, 0xa5, false, false);
	run_expect(vcpu, 0xa);
	check_host_views(vcpu, TPR_AFTER_EXIT(0xa5), false, true);
	vcpu_sregs_get(vcpu, &sregs);
	sregs.cr8 = 6;
	vcpu_sregs_set(vcpu, &sregs);
	check_host_views(vcpu, 0x60, false, false);
	run_expect(vcpu, -1);
	check_host_views(vcpu, TPR_AFTER_EXIT(0x4f), false, true);
	kvm_vm_free(vm);
}

/* ---- no in-kernel irqchip: kvm_run->cr8 ---- */

static void guest_no_irqchip(void)
{
	GUEST_SYNC(get_cr8());	/* what user space put in kvm_run->cr8 */
	GUEST_SYNC(get_cr8());
	set_cr8(11);		/* raised */
	GUEST_SYNC(get_cr8());
	set_cr8(2);		/* lowered */
	GUEST_SYNC(get_cr8());
	GUEST_DONE();
}

TEST(run_cr8_without_irqchip)
{
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm = vm_create_no_irqchip(&vcpu, guest_no_irqchip);
	struct kvm_run *run = vcpu->run;
	struct kvm_regs regs0, regs;
	struct kvm_sregs sregs;
	static const uint64_t bad[] = { 16, 0x10f, 1ull << 63 };
	unsigned int i;

	vcpu_regs_get(vcpu, &regs0);
	for (i = 0; i < ARRAY_SIZE(bad); i++) {
		run->cr8 = bad[i];
		errno = 0;
		EXPECT_EQ(-1, __vcpu_run(vcpu));
		EXPECT_EQ(EINVAL, errno) TH_LOG("KVM_RUN with cr8 0x%lx", bad[i]);
		/* Refused before the guest ran; the old value is written back. */
		vcpu_regs_get(vcpu, &regs);
		EXPECT_EQ(regs0.rip, regs.rip);
		EXPECT_EQ(0, run->cr8) TH_LOG("kvm_run->cr8 after KVM_RUN with 0x%lx", bad[i]);
	}

	run->cr8 = 7;
	run_expect(vcpu, 7);
	EXPECT_EQ(7, run->cr8);
	vcpu_sregs_get(vcpu, &sregs);
	EXPECT_EQ(7, sregs.cr8);

	run->cr8 = 5;
	run_expect(vcpu, 5);
	EXPECT_EQ(5, run->cr8);

	/* The guest raises CR8 to 11: reported at the next exit. */
	run_expect(vcpu, 11);
	EXPECT_EQ(11, run->cr8);
	vcpu_sregs_get(vcpu, &sregs);
	EXPECT_EQ(11, sregs.cr8);

	/* The guest lowers CR8 to 2. */
	vcpu_run(vcpu);
	if (kvm_rs_is_c_kvm()) {
		/*
		 * The C KVM's SVM intercepts CR8 writes without an in-kernel
		 * LAPIC and reports a lowered TPR at once with
		 * KVM_EXIT_SET_TPR (cr8_write_interception()). kvm-rs lets the
		 * guest write V_TPR without an exit and reports the new value
		 * at the next exit, as the C KVM does for a raised TPR.
		 */
		EXPECT_EQ(KVM_EXIT_SET_TPR, run->exit_reason)
			TH_LOG("exit %s", exit_reason_str(run->exit_reason));
		EXPECT_EQ(2, run->cr8);
		run->cr8 = 2;
		vcpu_run(vcpu);
	}
	TEST_ASSERT(get_ucall(vcpu, NULL) == UCALL_SYNC, "exit %s, expected GUEST_SYNC(2)",
		    exit_reason_str(run->exit_reason));
	EXPECT_EQ(2, run->cr8);
	vcpu_sregs_get(vcpu, &sregs);
	EXPECT_EQ(2, sregs.cr8);

	run_expect(vcpu, -1);
	kvm_vm_free(vm);
}

/* Last, as a failure here can take down the emulator running the test VM. */
TEST(cr8_gates_interrupts)
{
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm = lapic_vm(&vcpu, guest_cr8_gate);

	run_expect(vcpu, 15);
	check_host_views(vcpu, 0xf0, true, true);
	run_expect(vcpu, 5);
	check_host_views(vcpu, 0x50, true, true);
	run_expect(vcpu, 4);
	check_host_views(vcpu, 0x40, false, true);
	run_expect(vcpu, -1);
	kvm_vm_free(vm);
}

TEST_HARNESS_MAIN
