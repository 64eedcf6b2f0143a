// SPDX-License-Identifier: GPL-2.0
/*
 * HLT. Without an in-kernel irqchip, HLT leaves KVM_RUN with KVM_EXIT_HLT and
 * RIP past the instruction, the vCPU still runnable. With KVM_CREATE_IRQCHIP,
 * a halted vCPU sleeps inside KVM_RUN: a signal makes KVM_RUN fail with EINTR
 * and exit_reason KVM_EXIT_INTR while the vCPU stays halted (and sleeps again
 * on the next KVM_RUN); an NMI (KVM_NMI), a LAPIC timer interrupt, or an IPI
 * from another vCPU wakes it, and the guest goes on after the HLT.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>

#include "kvm_util.h"
#include "processor.h"
#include "apic.h"
#include "kselftest_harness.h"
#include "kvm_rs_lib.h"

#define TIMER_VECTOR	0xe0
#define IPI_VECTOR	0xe1
#define HALT_MS		300	/* how long a halted vCPU is watched sleeping */

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000ull + ts.tv_nsec / 1000000;
}

/* Waits up to @ms for @flag; returns whether it was set. */
static bool wait_flag(atomic_int *flag, int ms)
{
	uint64_t end = now_ms() + ms;

	while (!atomic_load(flag)) {
		if (now_ms() > end)
			return false;
		usleep(1000);
	}
	return true;
}

/* ---- no in-kernel irqchip: KVM_EXIT_HLT ---- */

TEST(hlt_exits_without_irqchip)
{
	static const uint8_t code[] = {
		0xf4,			/* 0x1000: hlt */
		0xfb, 0xf4,		/* 0x1001: sti; hlt (IF does not matter) */
		0xb0, 0x5a,		/* 0x1003: mov $0x5a, %al */
		0xe6, 0x10,		/* 0x1005: out %al, $0x10 */
		0xf4,			/* 0x1007: hlt */
	};
	struct kvm_mp_state mp;
	struct kvm_vcpu *vcpu;
	struct kvm_regs regs;
	struct kvm_vm *vm = rm_vm_create(&vcpu, code, sizeof(code));
	static const uint64_t hlt_rips[] = { 0x1001, 0x1003 };
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(hlt_rips); i++) {
		vcpu_run(vcpu);
		TEST_ASSERT_KVM_EXIT_REASON(vcpu, KVM_EXIT_HLT);
		vcpu_regs_get(vcpu, &regs);
		EXPECT_EQ(hlt_rips[i], regs.rip);
		vcpu_mp_state_get(vcpu, &mp);
		EXPECT_EQ(KVM_MP_STATE_RUNNABLE, mp.mp_state);
	}
	/* Running again goes on after the HLT. */
	vcpu_run(vcpu);
	TEST_ASSERT_KVM_EXIT_REASON(vcpu, KVM_EXIT_IO);
	EXPECT_EQ(0x10, vcpu->run->io.port);
	EXPECT_EQ(0x5a, *((uint8_t *)vcpu->run + vcpu->run->io.data_offset));
	vcpu_run(vcpu);
	TEST_ASSERT_KVM_EXIT_REASON(vcpu, KVM_EXIT_HLT);
	vcpu_regs_get(vcpu, &regs);
	EXPECT_EQ(0x1008, regs.rip);
	kvm_vm_free(vm);
}

/* ---- in-kernel irqchip: the vCPU sleeps ---- */

struct runner {
	struct kvm_vcpu *vcpu;
	pthread_t thread;
	atomic_int started, done;
	int ret, err;
	bool to_done;	/* run until UCALL_DONE instead of one KVM_RUN */
};

static void *runner_fn(void *arg)
{
	struct runner *r = arg;
	struct ucall uc;

	atomic_store(&r->started, 1);
	for (;;) {
		r->ret = __vcpu_run(r->vcpu);
		r->err = errno;
		if (!r->to_done || r->ret)
			break;
		if (get_ucall(r->vcpu, &uc) != UCALL_SYNC)
			break;
	}
	atomic_store(&r->done, 1);
	return NULL;
}

static void runner_start(struct runner *r, struct kvm_vcpu *vcpu, bool to_done)
{
	*r = (struct runner){ .vcpu = vcpu, .to_done = to_done };
	TEST_ASSERT(!pthread_create(&r->thread, NULL, runner_fn, r), "pthread_create");
	TEST_ASSERT(wait_flag(&r->started, 5000), "runner did not start");
}

static void on_sigusr1(int sig)
{
}

static volatile int nmis;

static void nmi_handler(struct ex_regs *regs)
{
	nmis++;
}

static void guest_halt_until_nmi(void)
{
	asm volatile("cli");
	GUEST_SYNC(0);
	asm volatile("hlt");
	GUEST_ASSERT_EQ(nmis, 1);
	GUEST_DONE();
}

TEST(halted_vcpu_sleeps_until_signal_or_nmi)
{
	struct sigaction sa = { .sa_handler = on_sigusr1 };	/* no SA_RESTART */
	struct kvm_mp_state mp;
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	struct runner r;
	struct ucall uc;
	int round;

	ASSERT_EQ(0, sigaction(SIGUSR1, &sa, NULL));
	vm = vm_create_with_one_vcpu(&vcpu, guest_halt_until_nmi);
	vm_install_exception_handler(vm, NMI_VECTOR, nmi_handler);
	vcpu_run(vcpu);
	ASSERT_EQ(UCALL_SYNC, get_ucall(vcpu, &uc));

	/* Twice: the vCPU stays halted across the signal and sleeps again. */
	for (round = 0; round < 2; round++) {
		runner_start(&r, vcpu, false);
		usleep(HALT_MS * 1000);
		EXPECT_FALSE(atomic_load(&r.done))
			TH_LOG("round %d: KVM_RUN returned (%d, errno %d, exit %s) "
			       "instead of sleeping in HLT", round, r.ret, r.err,
			       exit_reason_str(vcpu->run->exit_reason));
		pthread_kill(r.thread, SIGUSR1);
		ASSERT_TRUE(wait_flag(&r.done, 10000))
			TH_LOG("round %d: KVM_RUN did not return after a signal", round);
		pthread_join(r.thread, NULL);
		EXPECT_EQ(-1, r.ret);
		EXPECT_EQ(EINTR, r.err);
		EXPECT_EQ(KVM_EXIT_INTR, vcpu->run->exit_reason)
			TH_LOG("exit reason %s", exit_reason_str(vcpu->run->exit_reason));
		vcpu_mp_state_get(vcpu, &mp);
		EXPECT_EQ(KVM_MP_STATE_HALTED, mp.mp_state);
	}

	/* An NMI wakes it, even with IF=0; the guest goes on after HLT. */
	vcpu_ioctl(vcpu, KVM_NMI, NULL);
	vcpu_run(vcpu);
	switch (get_ucall(vcpu, &uc)) {
	case UCALL_DONE:
		break;
	case UCALL_ABORT:
		REPORT_GUEST_ASSERT(uc);
		break;
	default:
		TEST_FAIL("unexpected exit %s", exit_reason_str(vcpu->run->exit_reason));
	}
	vcpu_mp_state_get(vcpu, &mp);
	EXPECT_EQ(KVM_MP_STATE_RUNNABLE, mp.mp_state);
	kvm_vm_free(vm);
}

static volatile int timer_irqs;

static void timer_handler(struct ex_regs *regs)
{
	timer_irqs++;
	xapic_write_reg(APIC_EOI, 0);
}

static void guest_timer_setup(void)
{
	xapic_enable();
	xapic_write_reg(APIC_TDCR, 0xb);	/* divide by 1 */
	xapic_write_reg(APIC_LVTT, APIC_LVT_TIMER_ONESHOT | TIMER_VECTOR);
	asm volatile("cli");
	/* 20 ms: the C KVM's APIC bus runs at 1 GHz. */
	xapic_write_reg(APIC_TMICT, 20 * 1000 * 1000);
}

/* Without HLT: the timer interrupt itself arrives (within some 2^32 TSC cycles). */
static void guest_timer_spin(void)
{
	uint64_t t0;

	guest_timer_setup();
	t0 = rdtsc();
	asm volatile("sti");
	while (!timer_irqs && rdtsc() - t0 < (1ull << 32))
		asm volatile("pause");
	asm volatile("cli");
	__GUEST_ASSERT(timer_irqs == 1,
		       "%d timer interrupts; TMCCT 0x%x, LVTT 0x%x, IRR[%d] 0x%x, ISR 0x%x",
		       timer_irqs, xapic_read_reg(APIC_TMCCT), xapic_read_reg(APIC_LVTT),
		       TIMER_VECTOR / 32, xapic_read_reg(APIC_IRR + 0x10 * (TIMER_VECTOR / 32)),
		       xapic_read_reg(0x100 + 0x10 * (TIMER_VECTOR / 32)));
	GUEST_DONE();
}

/* With HLT: the timer interrupt wakes the halted vCPU. */
static void guest_timer_hlt(void)
{
	guest_timer_setup();
	asm volatile("sti; hlt; cli");
	GUEST_ASSERT_EQ(timer_irqs, 1);
	GUEST_DONE();
}

/* Runs @vcpu to UCALL_DONE in a thread; fails after @ms. */
static void run_to_done(struct kvm_vcpu *vcpu, int ms, const char *what)
{
	struct runner r;
	struct ucall uc;

	runner_start(&r, vcpu, true);
	TEST_ASSERT(wait_flag(&r.done, ms), "%s: still in KVM_RUN after %d ms", what, ms);
	pthread_join(r.thread, NULL);
	TEST_ASSERT(r.ret == 0, "%s: KVM_RUN failed, errno %d", what, r.err);
	switch (get_ucall(vcpu, &uc)) {
	case UCALL_DONE:
		break;
	case UCALL_ABORT:
		REPORT_GUEST_ASSERT(uc);
		break;
	default:
		TEST_FAIL("%s: unexpected exit %s", what, exit_reason_str(vcpu->run->exit_reason));
	}
}

static void timer_test(void (*guest)(void), const char *what)
{
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	uint64_t t0;

	vm = vm_create_with_one_vcpu(&vcpu, guest);
	virt_pg_map(vm, APIC_DEFAULT_GPA, APIC_DEFAULT_GPA);
	vm_install_exception_handler(vm, TIMER_VECTOR, timer_handler);
	t0 = now_ms();
	/* The interrupt (and the halt and wakeup) happen inside one KVM_RUN. */
	run_to_done(vcpu, 10000, what);
	pr_info("%s: done after %lu ms\n", what, (unsigned long)(now_ms() - t0));
	kvm_vm_free(vm);
}

TEST(lapic_timer_interrupt)
{
	timer_test(guest_timer_spin, "LAPIC timer, no HLT");
}

TEST(halted_vcpu_wakes_on_timer_interrupt)
{
	timer_test(guest_timer_hlt, "LAPIC timer wakes HLT");
}

static volatile int ipis;

static void ipi_handler(struct ex_regs *regs)
{
	ipis++;
	xapic_write_reg(APIC_EOI, 0);
}

static void guest_halter(void)
{
	xapic_enable();
	asm volatile("cli");
	GUEST_SYNC(0);
	while (!ipis)
		asm volatile("sti; hlt; cli");
	GUEST_ASSERT_EQ(ipis, 1);
	GUEST_DONE();
}

static void guest_sender(void)
{
	xapic_enable();
	xapic_write_reg(APIC_ICR2, SET_APIC_DEST_FIELD(0));
	xapic_write_reg(APIC_ICR, APIC_DEST_PHYSICAL | APIC_DM_FIXED | IPI_VECTOR);
	GUEST_DONE();
}

TEST(halted_vcpu_wakes_on_ipi)
{
	struct kvm_vcpu *vcpus[2];
	struct kvm_vm *vm;
	struct runner r;
	struct ucall uc;

	vm = vm_create_with_vcpus(2, guest_halter, vcpus);
	vcpu_arch_set_entry_point(vcpus[1], guest_sender);
	virt_pg_map(vm, APIC_DEFAULT_GPA, APIC_DEFAULT_GPA);
	vm_install_exception_handler(vm, IPI_VECTOR, ipi_handler);

	vcpu_run(vcpus[0]);
	ASSERT_EQ(UCALL_SYNC, get_ucall(vcpus[0], &uc));
	runner_start(&r, vcpus[0], true);
	usleep(HALT_MS * 1000);
	EXPECT_FALSE(atomic_load(&r.done))
		TH_LOG("vCPU 0 left KVM_RUN (%d, errno %d, exit %s) instead of sleeping",
		       r.ret, r.err, exit_reason_str(vcpus[0]->run->exit_reason));

	vcpu_run(vcpus[1]);
	switch (get_ucall(vcpus[1], &uc)) {
	case UCALL_DONE:
		break;
	case UCALL_ABORT:
		REPORT_GUEST_ASSERT(uc);
		break;
	default:
		TEST_FAIL("vCPU 1: unexpected exit %s",
			  exit_reason_str(vcpus[1]->run->exit_reason));
	}
	ASSERT_TRUE(wait_flag(&r.done, 10000)) TH_LOG("the IPI did not wake vCPU 0");
	pthread_join(r.thread, NULL);
	ASSERT_EQ(0, r.ret) TH_LOG("KVM_RUN: errno %d", r.err);
	switch (get_ucall(vcpus[0], &uc)) {
	case UCALL_DONE:
		break;
	case UCALL_ABORT:
		REPORT_GUEST_ASSERT(uc);
		break;
	default:
		TEST_FAIL("vCPU 0: unexpected exit %s",
			  exit_reason_str(vcpus[0]->run->exit_reason));
	}
	kvm_vm_free(vm);
}

/*
 * "Older userspace won't unhalt the vcpu on reset" (C: __set_sregs_common()):
 * the BSP given the reset CS (f000, base ffff0000) at RIP fff0 in real mode
 * becomes runnable, whatever state INIT left it in; not at another RIP.
 */
static void set_reset_sregs(struct kvm_vcpu *vcpu, uint64_t rip)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs;

	vcpu_regs_get(vcpu, &regs);
	regs.rip = rip;
	vcpu_regs_set(vcpu, &regs);
	vcpu_sregs_get(vcpu, &sregs);
	sregs.cs.selector = 0xf000;
	sregs.cs.base = 0xffff0000;
	sregs.cs.l = 0;
	sregs.cs.db = 0;
	sregs.cr0 = 0x60000010;	/* real mode, no paging */
	sregs.cr4 = 0;
	sregs.efer = 0;
	vcpu_sregs_set(vcpu, &sregs);
}

TEST(bsp_given_reset_cs_ip_becomes_runnable)
{
	struct kvm_mp_state mp = { .mp_state = KVM_MP_STATE_INIT_RECEIVED };
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm = vm_create_with_one_vcpu(&vcpu, NULL);

	vcpu_mp_state_set(vcpu, &mp);
	set_reset_sregs(vcpu, 0xfff0);
	vcpu_mp_state_get(vcpu, &mp);
	EXPECT_EQ(KVM_MP_STATE_RUNNABLE, mp.mp_state);

	mp.mp_state = KVM_MP_STATE_INIT_RECEIVED;
	vcpu_mp_state_set(vcpu, &mp);
	set_reset_sregs(vcpu, 0x1000);
	vcpu_mp_state_get(vcpu, &mp);
	EXPECT_EQ(KVM_MP_STATE_INIT_RECEIVED, mp.mp_state);
	kvm_vm_free(vm);
}

TEST_HARNESS_MAIN
