// SPDX-License-Identifier: GPL-2.0
/*
 * The in-kernel IOAPIC's EOI-storm limit. A level-triggered pin whose line
 * stays asserted is delivered again at each EOI. After 10,000 such
 * re-deliveries in a row the IOAPIC delays the next one by 10 ms (C KVM:
 * IOAPIC_SUCCESSIVE_IRQ_MAX_COUNT and the delayed eoi_inject work), so that
 * a storming guest still makes progress; the interrupt must then come again,
 * not be lost. The guest counts interrupts past the limit while the host
 * holds the line high; KVM_RUN is given a deadline (a watchdog thread sends
 * the vCPU thread SIGUSR1) so that a lost interrupt fails the test instead of
 * hanging it.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <unistd.h>

#include "kvm_util.h"
#include "processor.h"
#include "apic.h"
#include "kselftest_harness.h"
#include "kvm_rs_lib.h"

#define IOAPIC_GPA	0xfec00000ull
#define IOAPIC_REGSEL	0x00
#define IOAPIC_WINDOW	0x10
#define IOAPIC_REDTBL(pin)	(0x10 + 2 * (pin))
#define REDIR_LEVEL	(1u << 15)
#define APIC_LVT0	0x350	/* LINT0 (SDM 11.5.1); not in the selftests' apic.h */

#define PIN		5
#define VECTOR		0x55
/* The limit, and enough beyond it to see delayed deliveries go on. */
#define STORM_LIMIT	10000
#define TARGET		(STORM_LIMIT + 200)
#define DEADLINE_S	20

static uint64_t delivered;

static void isr(struct ex_regs *regs)
{
	WRITE_ONCE(delivered, delivered + 1);
	xapic_write_reg(APIC_EOI, 0);
}

static void ioapic_write(uint32_t reg, uint32_t val)
{
	*(volatile uint32_t *)(IOAPIC_GPA + IOAPIC_REGSEL) = reg;
	*(volatile uint32_t *)(IOAPIC_GPA + IOAPIC_WINDOW) = val;
}

static void guest_storm(void)
{
	xapic_enable();
	/*
	 * GSI 5 also reaches the (uninitialised) PIC, and LINT0 comes out of
	 * reset as ExtINT: mask LINT0 so only the IOAPIC's message arrives.
	 */
	xapic_write_reg(APIC_LVT0, APIC_LVT_MASKED);
	/* Physical destination APIC 0, fixed delivery, level, unmasked. */
	ioapic_write(IOAPIC_REDTBL(PIN) + 1, 0);
	ioapic_write(IOAPIC_REDTBL(PIN), VECTOR | REDIR_LEVEL);
	asm volatile("cli");
	GUEST_SYNC(0);
	while (READ_ONCE(delivered) < TARGET)
		asm volatile("sti; hlt; cli");
	GUEST_DONE();
}

static void on_sigusr1(int sig)
{
}

struct watchdog {
	pthread_t vcpu_thread, thread;
	atomic_int done;
};

/* SIGUSR1 to the vCPU thread after DEADLINE_S unless the run ended. */
static void *watchdog_fn(void *arg)
{
	struct watchdog *w = arg;
	int i;

	for (i = 0; i < DEADLINE_S * 10 && !atomic_load(&w->done); i++)
		usleep(100000);
	if (!atomic_load(&w->done))
		pthread_kill(w->vcpu_thread, SIGUSR1);
	return NULL;
}

TEST(level_interrupt_survives_eoi_storm_limit)
{
	struct sigaction sa = { .sa_handler = on_sigusr1 };
	struct watchdog w = { .vcpu_thread = pthread_self() };
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	struct ucall uc;
	int r, err;

	vm = vm_create_with_one_vcpu(&vcpu, guest_storm);
	virt_pg_map(vm, APIC_DEFAULT_GPA, APIC_DEFAULT_GPA);
	virt_pg_map(vm, IOAPIC_GPA, IOAPIC_GPA);
	vm_install_exception_handler(vm, VECTOR, isr);

	vcpu_run(vcpu);
	ASSERT_EQ(UCALL_SYNC, get_ucall(vcpu, &uc));

	/* The line goes high and stays high: every EOI re-delivers. */
	kvm_irq_line(vm, PIN, 1);

	/* No SA_RESTART: the watchdog's signal makes KVM_RUN fail with EINTR. */
	ASSERT_EQ(0, sigaction(SIGUSR1, &sa, NULL));
	ASSERT_EQ(0, pthread_create(&w.thread, NULL, watchdog_fn, &w));
	r = __vcpu_run(vcpu);
	err = errno;
	atomic_store(&w.done, 1);
	pthread_join(w.thread, NULL);
	sync_global_from_guest(vm, delivered);
	TEST_ASSERT(r == 0,
		    "KVM_RUN failed (%s) after %lu deliveries of an asserted level line: "
		    "the EOI-storm limit (%d) stopped it for good",
		    strerror(err), delivered, STORM_LIMIT);
	switch (get_ucall(vcpu, &uc)) {
	case UCALL_DONE:
		break;
	case UCALL_ABORT:
		REPORT_GUEST_ASSERT(uc);
		break;
	default:
		TEST_FAIL("unexpected exit %u (%s)", vcpu->run->exit_reason,
			  exit_reason_str(vcpu->run->exit_reason));
	}
	ASSERT_GE(delivered, TARGET);
	kvm_vm_free(vm);
}

TEST_HARNESS_MAIN
