// SPDX-License-Identifier: GPL-2.0
/*
 * MSRs a guest may not touch, and KVM_GET_MSRS/KVM_SET_MSRS stopping at one.
 *
 * In the guest, RDMSR and WRMSR of an MSR KVM does not know raise #GP (caught
 * with the library's exception fixups), as do the x2APIC MSRs while the APIC
 * is in xAPIC mode and a write of a reserved EFER bit; a known MSR works.
 * From user space, KVM_GET_MSRS and KVM_SET_MSRS process entries in order and
 * stop at the first that fails (an unknown MSR, or a non-canonical address
 * for MSR_LSTAR); the return value counts the entries processed, the entries
 * after it are neither read nor written, and the C KVM zeroes the data of the
 * entry it failed to read. Addresses in MSRs are canonical with the host's
 * virtual-address width: 57 bits if KVM offers LA57.
 * Every MSR of KVM_GET_MSR_INDEX_LIST can be read from user space, and every
 * feature MSR of KVM_GET_MSR_FEATURE_INDEX_LIST through /dev/kvm.
 *
 * MSR_VM_HSAVE_PA and MSR_VM_CR (AMD): the C kvm-amd lets the guest and user
 * space read them whatever the guest's CPUID says (svm_get_msr() has no
 * CPUID check), so on the C KVM they are checked to read without a fault. The
 * C kvm-intel reads MSR_VM_HSAVE_PA as 0 and drops writes to it (common
 * kvm_get/set_msr_common()) but has no MSR_VM_CR (#GP).
 * kvm-rs offers no nested SVM, so for it they are MSRs the guest may not
 * touch, as on a CPU without SVM: #GP in the guest and a failed entry for
 * KVM_GET_MSRS. That difference is intended; see kvm_rs_is_c_kvm() below.
 */
#include <stdint.h>
#include <stdlib.h>

#include "kvm_util.h"
#include "processor.h"
#include "kselftest_harness.h"
#include "kvm_rs_util.h"

#define MSR_UNKNOWN		0x00001337u	/* no such MSR */
#define MSR_UNKNOWN_AMD		0xc0011337u
#define X2APIC_APICID		0x802u		/* x2APIC ID register */
/* Non-canonical with 48- and with 57-bit addresses. */
#define NONCANONICAL		0x0100000000000000ull
/* Canonical only with 57-bit addresses (LA57). */
#define CANONICAL_LA57_ONLY	0x0000800000000000ull

/* Set by the host before the guest runs: does the guest own the SVM MSRs? */
static bool hsave_readable, vm_cr_readable;

static void guest_code(void)
{
	uint64_t v;

	GUEST_ASSERT_EQ(rdmsr_safe(MSR_UNKNOWN, &v), GP_VECTOR);
	GUEST_ASSERT_EQ(wrmsr_safe(MSR_UNKNOWN, 0), GP_VECTOR);
	GUEST_ASSERT_EQ(rdmsr_safe(MSR_UNKNOWN_AMD, &v), GP_VECTOR);
	GUEST_ASSERT_EQ(wrmsr_safe(MSR_UNKNOWN_AMD, 1), GP_VECTOR);
	/* The x2APIC MSRs exist only in x2APIC mode; the APIC is in xAPIC mode. */
	GUEST_ASSERT_EQ(rdmsr_safe(X2APIC_APICID, &v), GP_VECTOR);
	/*
	 * A known MSR, a bad value: a reserved EFER bit. (Not a non-canonical
	 * MSR_LSTAR: SVM passes LSTAR through, so that #GP is the CPU's.)
	 */
	GUEST_ASSERT_EQ(wrmsr_safe(MSR_EFER, rdmsr(MSR_EFER) | (1ull << 63)), GP_VECTOR);

	/* Known MSRs work. */
	GUEST_ASSERT_EQ(rdmsr_safe(MSR_LSTAR, &v), 0);
	GUEST_ASSERT_EQ(v, 0xffffffff81000000ull);
	GUEST_ASSERT_EQ(wrmsr_safe(MSR_IA32_SYSENTER_CS, 0x10), 0);
	GUEST_ASSERT_EQ(rdmsr_safe(MSR_IA32_SYSENTER_CS, &v), 0);
	GUEST_ASSERT_EQ(v, 0x10);

	if (hsave_readable) {
		GUEST_ASSERT_EQ(rdmsr_safe(MSR_VM_HSAVE_PA, &v), 0);
	} else {
		GUEST_ASSERT_EQ(rdmsr_safe(MSR_VM_HSAVE_PA, &v), GP_VECTOR);
		GUEST_ASSERT_EQ(wrmsr_safe(MSR_VM_HSAVE_PA, 0x10000), GP_VECTOR);
	}
	GUEST_ASSERT_EQ(rdmsr_safe(MSR_VM_CR, &v), vm_cr_readable ? 0 : GP_VECTOR);
	GUEST_DONE();
}

struct msrs {
	struct kvm_msrs hdr;
	struct kvm_msr_entry e[8];
};

static int msrs_ioctl(struct kvm_vcpu *vcpu, unsigned long cmd, struct msrs *m, int n)
{
	m->hdr.nmsrs = n;
	m->hdr.pad = 0;
	return ioctl(vcpu->fd, cmd, m);
}

static void set_entries(struct msrs *m, const uint32_t *idx, const uint64_t *data, int n)
{
	int i;

	memset(m, 0, sizeof(*m));
	for (i = 0; i < n; i++) {
		m->e[i].index = idx[i];
		m->e[i].data = data[i];
	}
}

FIXTURE(msr) {
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
};

FIXTURE_SETUP(msr)
{
	self->vm = vm_create_with_one_vcpu(&self->vcpu, guest_code);
	vcpu_set_msr(self->vcpu, MSR_LSTAR, 0xffffffff81000000ull);
}

FIXTURE_TEARDOWN(msr)
{
	kvm_vm_free(self->vm);
}

TEST_F(msr, guest_gets_gp)
{
	struct ucall uc;

	/* Intended difference, see the comment at the top. */
	hsave_readable = kvm_rs_is_c_kvm();
	vm_cr_readable = kvm_rs_is_c_kvm() && host_cpu_is_amd;
	sync_global_to_guest(self->vm, hsave_readable);
	sync_global_to_guest(self->vm, vm_cr_readable);
	vcpu_run(self->vcpu);
	switch (get_ucall(self->vcpu, &uc)) {
	case UCALL_DONE:
		break;
	case UCALL_ABORT:
		REPORT_GUEST_ASSERT(uc);
		break;
	default:
		TEST_FAIL("unexpected exit %s", exit_reason_str(self->vcpu->run->exit_reason));
	}
}

TEST_F(msr, get_msrs_stops_at_unknown)
{
	const uint32_t idx[] = { MSR_IA32_SYSENTER_CS, MSR_STAR, MSR_UNKNOWN, MSR_LSTAR };
	const uint64_t poison[] = { 0x1111, 0x2222, 0x3333, 0x4444 };
	struct msrs m;

	set_entries(&m, idx, poison, 4);
	EXPECT_EQ(2, msrs_ioctl(self->vcpu, KVM_GET_MSRS, &m, 4));
	EXPECT_EQ(0, m.e[0].data);	/* SYSENTER_CS at reset */
	EXPECT_EQ(0, m.e[1].data);	/* STAR at reset */
	/* The failed read zeroes its entry (C: kvm_do_msr_access()). */
	EXPECT_EQ(0, m.e[2].data);
	/* Not read: left as it was. */
	EXPECT_EQ(0x4444, m.e[3].data);
	EXPECT_EQ(MSR_LSTAR, m.e[3].index);

	/* An unknown MSR first: nothing read. */
	set_entries(&m, idx + 2, poison, 2);
	EXPECT_EQ(0, msrs_ioctl(self->vcpu, KVM_GET_MSRS, &m, 2));
	EXPECT_EQ(0, m.e[0].data);
	EXPECT_EQ(0x2222, m.e[1].data);
	/* No entries at all. */
	EXPECT_EQ(0, msrs_ioctl(self->vcpu, KVM_GET_MSRS, &m, 0));
}

TEST_F(msr, set_msrs_stops_at_unknown_or_bad_value)
{
	const uint32_t idx[] = { MSR_IA32_SYSENTER_CS, MSR_STAR, MSR_UNKNOWN, MSR_LSTAR };
	const uint64_t val[] = { 0x10, 0x0023001000000000ull, 0, 0xffffffff82000000ull };
	const uint32_t idx2[] = { MSR_SYSCALL_MASK, MSR_LSTAR, MSR_IA32_SYSENTER_CS };
	const uint64_t val2[] = { 0x4700, NONCANONICAL, 0x20 };
	struct msrs m;

	set_entries(&m, idx, val, 4);
	EXPECT_EQ(2, msrs_ioctl(self->vcpu, KVM_SET_MSRS, &m, 4));
	EXPECT_EQ(0x10, vcpu_get_msr(self->vcpu, MSR_IA32_SYSENTER_CS));
	EXPECT_EQ(0x0023001000000000ull, vcpu_get_msr(self->vcpu, MSR_STAR));
	/* After the failed entry: not written. */
	EXPECT_EQ(0xffffffff81000000ull, vcpu_get_msr(self->vcpu, MSR_LSTAR));

	/* A known MSR with a value it cannot take stops the list too. */
	set_entries(&m, idx2, val2, 3);
	EXPECT_EQ(1, msrs_ioctl(self->vcpu, KVM_SET_MSRS, &m, 3));
	EXPECT_EQ(0x4700, vcpu_get_msr(self->vcpu, MSR_SYSCALL_MASK));
	EXPECT_EQ(0xffffffff81000000ull, vcpu_get_msr(self->vcpu, MSR_LSTAR));
	EXPECT_EQ(0x10, vcpu_get_msr(self->vcpu, MSR_IA32_SYSENTER_CS));

	/* Bit 47 set, bits 63:48 clear: canonical only with LA57. */
	set_entries(&m, idx2 + 1, (const uint64_t[]){ CANONICAL_LA57_ONLY }, 1);
	EXPECT_EQ(kvm_cpu_has(X86_FEATURE_LA57) ? 1 : 0,
		  msrs_ioctl(self->vcpu, KVM_SET_MSRS, &m, 1))
		TH_LOG("MSR_LSTAR = 0x%llx with%s LA57 offered", CANONICAL_LA57_ONLY,
		       kvm_cpu_has(X86_FEATURE_LA57) ? "" : "out");
}

TEST_F(msr, svm_msrs_from_user_space)
{
	const uint32_t idx[] = { MSR_VM_HSAVE_PA, MSR_VM_CR };
	const uint64_t poison[] = { 0x5555, 0x6666 };
	struct msrs m;
	int want;

	if (!host_cpu_is_amd)
		SKIP(return, "AMD MSRs");
	/* Intended difference, see the comment at the top. */
	want = kvm_rs_is_c_kvm() ? 2 : 0;
	set_entries(&m, idx, poison, 2);
	EXPECT_EQ(want, msrs_ioctl(self->vcpu, KVM_GET_MSRS, &m, 2));
}

TEST_F(msr, every_listed_msr_is_readable)
{
	const struct kvm_msr_list *list = kvm_get_msr_index_list();
	struct msrs m;
	unsigned int i;

	for (i = 0; i < list->nmsrs; i++) {
		memset(&m, 0, sizeof(m));
		m.e[0].index = list->indices[i];
		EXPECT_EQ(1, msrs_ioctl(self->vcpu, KVM_GET_MSRS, &m, 1))
			TH_LOG("KVM_GET_MSRS of listed MSR 0x%x failed", list->indices[i]);
	}
}

TEST(every_feature_msr_is_readable)
{
	const struct kvm_msr_list *list = kvm_get_feature_msr_index_list();
	int kvm = open_kvm_dev_path_or_exit();
	const uint32_t idx[] = { MSR_IA32_UCODE_REV, MSR_UNKNOWN, MSR_IA32_UCODE_REV };
	const uint64_t poison[] = { 0, 0x7777, 0x8888 };
	struct msrs m;
	unsigned int i;

	for (i = 0; i < list->nmsrs; i++) {
		memset(&m, 0, sizeof(m));
		m.hdr.nmsrs = 1;
		m.e[0].index = list->indices[i];
		EXPECT_EQ(1, ioctl(kvm, KVM_GET_MSRS, &m))
			TH_LOG("KVM_GET_MSRS(/dev/kvm) of feature MSR 0x%x failed",
			       list->indices[i]);
	}
	/* The system ioctl stops at an MSR that is not a feature MSR too. */
	set_entries(&m, idx, poison, 3);
	m.hdr.nmsrs = 3;
	EXPECT_EQ(1, ioctl(kvm, KVM_GET_MSRS, &m));
	EXPECT_EQ(0x8888, m.e[2].data);
	close(kvm);
}

TEST_HARNESS_MAIN
