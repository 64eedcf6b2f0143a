// SPDX-License-Identifier: GPL-2.0
/*
 * KVM_SET_LAPIC and interrupt routing. A LAPIC state restored with
 * KVM_SET_LAPIC (as after a migration) must be the one interrupts are routed
 * by from then on: a new xAPIC ID, a logical ID in LDR and the flat model in
 * DFR take effect at once, without the guest running (C KVM:
 * kvm_apic_set_state() recalculates the APIC map). The interrupt comes from
 * the in-kernel IOAPIC: a redirection entry written with KVM_SET_IRQCHIP, the
 * pin raised with KVM_IRQ_LINE_STATUS; the vector must then be in the IRR
 * that KVM_GET_LAPIC reports, and the line status must be the C KVM's.
 *
 * The RTC's EOI tracking (KVM_IRQ_LINE_STATUS reports an RTC interrupt as
 * coalesced while a vCPU that took the previous one has not EOIed it) is
 * rebuilt from the LAPICs by KVM_SET_IRQCHIP of the IOAPIC and by
 * KVM_SET_LAPIC (C: kvm_rtc_eoi_tracking_restore_all/_one()): an RTC vector
 * restored in service counts as owed, one restored cleared does not. And
 * the guest's EOI pays what is owed: the RTC interrupt after it is delivered
 * (before kvm-rs recorded who accepted the RTC vector, no EOI ever counted,
 * and every RTC interrupt after the first was reported coalesced and dropped).
 */
#include <string.h>

#include "kvm_util.h"
#include "processor.h"
#include "apic.h"
#include "kselftest_harness.h"

/* Not in the selftests' apic.h (SDM 11.6.2). */
#define APIC_LDR	0xd0
#define APIC_DFR	0xe0
#define APIC_ISR	0x100

#define NEW_ID		5
#define LOGICAL_ID	0x04
/* GSIs 16-23 reach only the IOAPIC (no PIC pin), with the default routing. */
#define PIN		18
#define REDIR_LOGICAL	(1ull << 11)
#define RTC_GSI		8
#define RTC_VECTOR	0x50

static uint32_t reg_get(struct kvm_lapic_state *s, uint32_t reg)
{
	uint32_t v;

	memcpy(&v, &s->regs[reg], 4);
	return v;
}

static void reg_set(struct kvm_lapic_state *s, uint32_t reg, uint32_t v)
{
	memcpy(&s->regs[reg], &v, 4);
}

static bool irr_has(struct kvm_vcpu *vcpu, uint8_t vector)
{
	struct kvm_lapic_state s;

	vcpu_ioctl(vcpu, KVM_GET_LAPIC, &s);
	return reg_get(&s, APIC_IRR + 0x10 * (vector / 32)) & (1u << (vector % 32));
}

/* Points `pin` at `dest` with `vector` (fixed, edge, unmasked). */
static void redirect_pin(struct kvm_vm *vm, int pin, bool logical, uint8_t dest, uint8_t vector)
{
	struct kvm_irqchip chip = { .chip_id = KVM_IRQCHIP_IOAPIC };

	vm_ioctl(vm, KVM_GET_IRQCHIP, &chip);
	chip.chip.ioapic.redirtbl[pin].bits =
		vector | (logical ? REDIR_LOGICAL : 0) | ((uint64_t)dest << 56);
	vm_ioctl(vm, KVM_SET_IRQCHIP, &chip);
}

static void redirect(struct kvm_vm *vm, bool logical, uint8_t dest, uint8_t vector)
{
	redirect_pin(vm, PIN, logical, dest, vector);
}

/* An edge on `gsi`; returns the status of the rising edge. */
static int pulse_gsi(struct kvm_vm *vm, int gsi)
{
	struct kvm_irq_level irq = { .irq = gsi, .level = 1 };

	vm_ioctl(vm, KVM_IRQ_LINE_STATUS, &irq);
	int status = irq.status;

	/* irq and status share a union: name the GSI again. */
	irq.irq = gsi;
	irq.level = 0;
	vm_ioctl(vm, KVM_IRQ_LINE_STATUS, &irq);
	return status;
}

static int pulse(struct kvm_vm *vm)
{
	return pulse_gsi(vm, PIN);
}

/* Sets the xAPIC ID, enables the APIC, and puts RTC_VECTOR in service or not. */
static void set_lapic(struct kvm_vcpu *vcpu, bool rtc_in_service)
{
	struct kvm_lapic_state s;
	uint32_t isr_reg = APIC_ISR + 0x10 * (RTC_VECTOR / 32);

	vcpu_ioctl(vcpu, KVM_GET_LAPIC, &s);
	reg_set(&s, APIC_ID, NEW_ID << 24);
	reg_set(&s, APIC_SPIV, APIC_SPIV_APIC_ENABLED | 0xff);
	reg_set(&s, isr_reg, rtc_in_service ? 1u << (RTC_VECTOR % 32) : 0);
	reg_set(&s, APIC_IRR + 0x10 * (RTC_VECTOR / 32), 0);
	vcpu_ioctl(vcpu, KVM_SET_LAPIC, &s);
}

TEST(set_lapic_routes)
{
	struct kvm_lapic_state s;
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;

	vm = vm_create_with_one_vcpu(&vcpu, NULL);
	vcpu_ioctl(vcpu, KVM_GET_LAPIC, &s);
	reg_set(&s, APIC_ID, NEW_ID << 24);
	reg_set(&s, APIC_LDR, LOGICAL_ID << 24);
	reg_set(&s, APIC_DFR, 0xffffffffu);
	reg_set(&s, APIC_SPIV, APIC_SPIV_APIC_ENABLED | 0xff);
	vcpu_ioctl(vcpu, KVM_SET_LAPIC, &s);

	vcpu_ioctl(vcpu, KVM_GET_LAPIC, &s);
	ASSERT_EQ(reg_get(&s, APIC_ID) >> 24, NEW_ID);
	ASSERT_EQ(reg_get(&s, APIC_LDR) >> 24, LOGICAL_ID);

	/* The ID before KVM_SET_LAPIC (0) no longer matches. */
	redirect(vm, false, 0, 0x40);
	pulse(vm);
	ASSERT_FALSE(irr_has(vcpu, 0x40));

	/* The restored physical ID does. */
	redirect(vm, false, NEW_ID, 0x41);
	ASSERT_EQ(pulse(vm), 1);
	ASSERT_TRUE(irr_has(vcpu, 0x41));

	/* And so does the restored logical ID, in the flat model. */
	redirect(vm, true, LOGICAL_ID, 0x42);
	ASSERT_EQ(pulse(vm), 1);
	ASSERT_TRUE(irr_has(vcpu, 0x42));

	/* Another logical ID does not. */
	redirect(vm, true, 0x10, 0x43);
	pulse(vm);
	ASSERT_FALSE(irr_has(vcpu, 0x43));

	kvm_vm_free(vm);
}

TEST(rtc_eoi_tracking_restored)
{
	struct kvm_irqchip pic = { .chip_id = KVM_IRQCHIP_PIC_SLAVE };
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;

	vm = vm_create_with_one_vcpu(&vcpu, NULL);
	/* IRQ 8 also reaches the slave PIC: masked, it gives no status. */
	vm_ioctl(vm, KVM_GET_IRQCHIP, &pic);
	pic.chip.pic.imr = 0xff;
	vm_ioctl(vm, KVM_SET_IRQCHIP, &pic);

	/* Restored with the RTC vector in service: an EOI is owed. */
	set_lapic(vcpu, true);
	redirect_pin(vm, RTC_GSI, false, NEW_ID, RTC_VECTOR);
	ASSERT_EQ(pulse_gsi(vm, RTC_GSI), 0);

	/* Restored without it: the next RTC interrupt is delivered... */
	set_lapic(vcpu, false);
	ASSERT_EQ(pulse_gsi(vm, RTC_GSI), 1);
	ASSERT_TRUE(irr_has(vcpu, RTC_VECTOR));
	/* ...and the one after it is coalesced, the first not being EOIed. */
	ASSERT_EQ(pulse_gsi(vm, RTC_GSI), 0);

	/* The IOAPIC restored while the vector is requested: still owed. */
	redirect_pin(vm, RTC_GSI, false, NEW_ID, RTC_VECTOR);
	ASSERT_EQ(pulse_gsi(vm, RTC_GSI), 0);

	kvm_vm_free(vm);
}

static volatile uint64_t rtc_irqs;

static void rtc_isr(struct ex_regs *regs)
{
	rtc_irqs++;
	xapic_write_reg(APIC_EOI, 0);
}

static void guest_rtc(void)
{
	uint64_t seen = 0;

	xapic_enable();
	GUEST_SYNC(0);
	for (;;) {
		asm volatile("sti; hlt; cli" ::: "memory");
		if (rtc_irqs != seen) {
			seen = rtc_irqs;
			GUEST_SYNC(seen);
		}
	}
}

static void run_to_sync(struct kvm_vcpu *vcpu, uint64_t want)
{
	struct ucall uc;

	vcpu_run(vcpu);
	TEST_ASSERT_KVM_EXIT_REASON(vcpu, KVM_EXIT_IO);
	TEST_ASSERT(get_ucall(vcpu, &uc) == UCALL_SYNC, "guest: ucall %lu", uc.cmd);
	TEST_ASSERT(uc.args[1] == want, "guest saw %lu RTC interrupts, want %lu", uc.args[1], want);
}

TEST(rtc_eoi_pays)
{
	struct kvm_irqchip pic = { .chip_id = KVM_IRQCHIP_PIC_SLAVE };
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;

	vm = vm_create_with_one_vcpu(&vcpu, guest_rtc);
	virt_pg_map(vm, APIC_DEFAULT_GPA, APIC_DEFAULT_GPA);
	vm_install_exception_handler(vm, RTC_VECTOR, rtc_isr);
	vm_ioctl(vm, KVM_GET_IRQCHIP, &pic);
	pic.chip.pic.imr = 0xff;
	vm_ioctl(vm, KVM_SET_IRQCHIP, &pic);
	redirect_pin(vm, RTC_GSI, false, 0, RTC_VECTOR);

	run_to_sync(vcpu, 0);
	ASSERT_EQ(pulse_gsi(vm, RTC_GSI), 1);
	run_to_sync(vcpu, 1);
	/* EOIed: delivered again, not reported coalesced. */
	ASSERT_EQ(pulse_gsi(vm, RTC_GSI), 1);
	run_to_sync(vcpu, 2);
	ASSERT_EQ(pulse_gsi(vm, RTC_GSI), 1);
	/* Not EOIed yet (the guest has not run): coalesced. */
	ASSERT_EQ(pulse_gsi(vm, RTC_GSI), 0);
	run_to_sync(vcpu, 3);

	kvm_vm_free(vm);
}

TEST_HARNESS_MAIN
