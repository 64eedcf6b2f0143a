// SPDX-License-Identifier: GPL-2.0
/*
 * Machine-check injection: KVM_X86_SETUP_MCE and KVM_X86_SET_MCE as the C
 * KVM answers them (x86.c: kvm_vcpu_ioctl_x86_setup_mce(),
 * kvm_vcpu_ioctl_x86_set_mce()). The errno of bad arguments; an uncorrected
 * error with CR4.MCE set raises #MC in the guest, which finds the bank filled
 * in; the same error with CR4.MCE clear shuts the guest down (KVM_RUN exits
 * with KVM_EXIT_SHUTDOWN). The CMCI path (UCNA) is covered by the upstream
 * ucna_injection_test (Intel only: AMD has no CMCI).
 */
#include <errno.h>

#include "kvm_util.h"
#include "processor.h"
#include "kselftest_harness.h"

#define MCG_CTL_P		(1ull << 8)
#define MCG_STATUS_RIPV		(1ull << 0)
#define MCG_STATUS_MCIP		(1ull << 2)
#define MCI_STATUS_VAL		(1ull << 63)
#define MCI_STATUS_UC		(1ull << 61)
#define MCI_STATUS_EN		(1ull << 60)
#define MCI_STATUS_S		(1ull << 56)
#define MCI_STATUS_AR		(1ull << 55)
#define MSR_MC1_STATUS		(0x400 + 4 + 1)
#define MSR_MC1_ADDR		(0x400 + 4 + 2)
#define MSR_MCG_STATUS		0x17a

#define SRAR_STATUS	(MCI_STATUS_VAL | MCI_STATUS_UC | MCI_STATUS_EN | MCI_STATUS_S | \
			 MCI_STATUS_AR | 0x134)
#define SRAR_ADDR	0x12345000ull

static volatile bool got_mc;

static void mc_handler(struct ex_regs *regs)
{
	GUEST_ASSERT_EQ(rdmsr(MSR_MC1_STATUS), SRAR_STATUS);
	GUEST_ASSERT_EQ(rdmsr(MSR_MC1_ADDR), SRAR_ADDR);
	GUEST_ASSERT(rdmsr(MSR_MCG_STATUS) & MCG_STATUS_MCIP);
	got_mc = true;
	GUEST_DONE();
}

static void guest_wait_for_mc(void)
{
	set_cr4(get_cr4() | X86_CR4_MCE);
	GUEST_SYNC(0);
	for (;;)
		GUEST_ASSERT(!got_mc);
}

static void guest_without_cr4_mce(void)
{
	GUEST_SYNC(0);
	for (;;)
		;
}

static struct kvm_x86_mce srar(void)
{
	return (struct kvm_x86_mce){
		.status = SRAR_STATUS,
		.addr = SRAR_ADDR,
		.mcg_status = MCG_STATUS_MCIP | MCG_STATUS_RIPV,
		.bank = 1,
	};
}

static struct kvm_vcpu *mce_vcpu(struct kvm_vm **vm, void *guest)
{
	struct kvm_vcpu *vcpu;
	uint64_t cap = 2 | MCG_CTL_P;

	*vm = vm_create_with_one_vcpu(&vcpu, guest);
	vcpu_ioctl(vcpu, KVM_X86_SETUP_MCE, &cap);
	return vcpu;
}

TEST(setup_and_set_mce_errno)
{
	struct kvm_x86_mce m = srar();
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	uint64_t cap;

	TEST_REQUIRE(kvm_has_cap(KVM_CAP_MCE));
	vm = vm_create_with_one_vcpu(&vcpu, guest_without_cr4_mce);
	cap = 0;
	EXPECT_EQ(-1, __vcpu_ioctl(vcpu, KVM_X86_SETUP_MCE, &cap));
	EXPECT_EQ(EINVAL, errno);
	cap = kvm_check_cap(KVM_CAP_MCE) + 1;
	EXPECT_EQ(-1, __vcpu_ioctl(vcpu, KVM_X86_SETUP_MCE, &cap));
	EXPECT_EQ(EINVAL, errno);
	cap = 2 | (1ull << 9);	/* MCG_EXT_P: offered by neither KVM */
	EXPECT_EQ(-1, __vcpu_ioctl(vcpu, KVM_X86_SETUP_MCE, &cap));
	EXPECT_EQ(EINVAL, errno);
	cap = 2 | MCG_CTL_P;
	EXPECT_EQ(0, __vcpu_ioctl(vcpu, KVM_X86_SETUP_MCE, &cap));
	EXPECT_EQ(cap, vcpu_get_msr(vcpu, 0x179));

	m.bank = 2;		/* beyond the two banks */
	EXPECT_EQ(-1, __vcpu_ioctl(vcpu, KVM_X86_SET_MCE, &m));
	EXPECT_EQ(EINVAL, errno);
	m = srar();
	m.status &= ~MCI_STATUS_VAL;
	EXPECT_EQ(-1, __vcpu_ioctl(vcpu, KVM_X86_SET_MCE, &m));
	EXPECT_EQ(EINVAL, errno);
	kvm_vm_free(vm);
}

TEST(uncorrected_error_raises_mc)
{
	struct kvm_x86_mce m = srar();
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	struct ucall uc;

	TEST_REQUIRE(kvm_has_cap(KVM_CAP_MCE));
	vcpu = mce_vcpu(&vm, guest_wait_for_mc);
	vm_install_exception_handler(vm, MC_VECTOR, mc_handler);
	vcpu_run(vcpu);
	ASSERT_EQ(UCALL_SYNC, get_ucall(vcpu, &uc));
	vcpu_ioctl(vcpu, KVM_X86_SET_MCE, &m);
	vcpu_run(vcpu);
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
	kvm_vm_free(vm);
}

TEST(uncorrected_error_without_cr4_mce_shuts_down)
{
	struct kvm_x86_mce m = srar();
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	struct ucall uc;

	TEST_REQUIRE(kvm_has_cap(KVM_CAP_MCE));
	vcpu = mce_vcpu(&vm, guest_without_cr4_mce);
	vcpu_run(vcpu);
	ASSERT_EQ(UCALL_SYNC, get_ucall(vcpu, &uc));
	vcpu_ioctl(vcpu, KVM_X86_SET_MCE, &m);
	vcpu_run(vcpu);
	TEST_ASSERT_KVM_EXIT_REASON(vcpu, KVM_EXIT_SHUTDOWN);
	kvm_vm_free(vm);
}

TEST_HARNESS_MAIN
