// SPDX-License-Identifier: GPL-2.0
/*
 * IA32_FEATURE_CONTROL (MSR 0x3a) as the C KVM answers it.
 *
 * Intel: the C kvm-intel emulates the MSR for every guest, nested VMX or not
 * (vmx.c: vmx_get_msr(), vmx_set_msr(), is_vmx_feature_control_msr_valid()).
 * It is in KVM_GET_MSR_INDEX_LIST and reads 0 on a new vCPU. User space may
 * write any bit KVM knows (lock, VMX inside and outside SMX, SGX launch
 * control, SGX, LMCE), whatever the guest's CPUID and the lock say, and no
 * other bit (the entry fails). The guest reads it always; it may write it
 * only while the lock is clear, and only with the bits its features allow,
 * else #GP: the VMX bits only when KVM offers VMX (nested VMX) and the
 * guest's CPUID has it, SGX and SGX_LC when the guest's CPUID has them (the
 * C KVM checks the CPUID user space set, not what KVM supports), LMCE when
 * MCG_CAP has MCG_LMCE_P. A host write of 0 unlocks it.
 *
 * kvm-rs offers no nested VMX (VMX is not in KVM_GET_SUPPORTED_CPUID) nor
 * MCG_LMCE_P, so for it the VMX and LMCE cases check the refusal: the test
 * follows what KVM_GET_SUPPORTED_CPUID and KVM_X86_GET_MCE_CAP_SUPPORTED
 * say, the same rule for both modules.
 *
 * AMD: the C kvm-amd has no such MSR; the guest's RDMSR and WRMSR of it
 * raise #GP. It is in KVM_GET_MSR_INDEX_LIST when the host's RDMSR of it
 * works (under QEMU TCG, not on AMD hardware), and user space may then read
 * 0 and write 0 only. kvm-rs's SVM backend answers the same.
 */
#include <stdint.h>

#include "kvm_util.h"
#include "processor.h"
#include "kselftest_harness.h"
#include "kvm_rs_util.h"

#define LOCKED		FEAT_CTL_LOCKED
#define VMX_IN_SMX	FEAT_CTL_VMX_ENABLED_INSIDE_SMX
#define VMX_OUT_SMX	FEAT_CTL_VMX_ENABLED_OUTSIDE_SMX
#define SGX_LC		FEAT_CTL_SGX_LC_ENABLED
#define SGX		FEAT_CTL_SGX_ENABLED
#define LMCE		FEAT_CTL_LMCE_ENABLED
#define SUPPORTED	(LOCKED | VMX_IN_SMX | VMX_OUT_SMX | SGX_LC | SGX | LMCE)
#define MCG_LMCE_P	(1ull << 27)

/* The value the guest writes next, set by the host before each run. */
static uint64_t guest_value;

/*
 * Each round: WRMSR guest_value, then RDMSR; reports both vectors (0 for
 * none) and the value read.
 */
static void guest_code(void)
{
	for (;;) {
		uint64_t v = 0;
		uint8_t wv = wrmsr_safe(MSR_IA32_FEAT_CTL, guest_value);
		uint8_t rv = rdmsr_safe(MSR_IA32_FEAT_CTL, &v);

		GUEST_SYNC_ARGS(0, wv, rv, v, 0);
	}
}

struct result {
	uint8_t wr_vector, rd_vector;
	uint64_t value;
};

static struct result guest_write(struct kvm_vcpu *vcpu, uint64_t value)
{
	struct ucall uc;

	guest_value = value;
	sync_global_to_guest(vcpu->vm, guest_value);
	vcpu_run(vcpu);
	switch (get_ucall(vcpu, &uc)) {
	case UCALL_SYNC:
		break;
	case UCALL_ABORT:
		REPORT_GUEST_ASSERT(uc);
		break;
	default:
		TEST_FAIL("unexpected exit %s", exit_reason_str(vcpu->run->exit_reason));
	}
	return (struct result){ uc.args[2], uc.args[3], uc.args[4] };
}

/* The guest writes @value: #GP or not as @ok says; the MSR then holds @after. */
static void expect_guest(struct kvm_vcpu *vcpu, uint64_t value, bool ok, uint64_t after)
{
	struct result r = guest_write(vcpu, value);

	TEST_ASSERT(r.wr_vector == (ok ? 0 : GP_VECTOR),
		    "guest WRMSR 0x3a <- %#lx: vector %u, expected %s", value, r.wr_vector,
		    ok ? "none" : "#GP");
	TEST_ASSERT(r.rd_vector == 0, "guest RDMSR 0x3a: vector %u", r.rd_vector);
	TEST_ASSERT(r.value == after, "guest RDMSR 0x3a = %#lx, expected %#lx", r.value, after);
	TEST_ASSERT(vcpu_get_msr(vcpu, MSR_IA32_FEAT_CTL) == after, "KVM_GET_MSRS disagrees");
}

static int set_feat_ctl(struct kvm_vcpu *vcpu, uint64_t v)
{
	return _vcpu_set_msr(vcpu, MSR_IA32_FEAT_CTL, v);
}

/* KVM_GET_MSRS of the MSR alone: the number of entries read (0 or 1). */
static int get_feat_ctl(struct kvm_vcpu *vcpu, uint64_t *v)
{
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e;
	} m = { .hdr.nmsrs = 1, .e.index = MSR_IA32_FEAT_CTL, .e.data = ~0ull };
	int r = __vcpu_ioctl(vcpu, KVM_GET_MSRS, &m.hdr);

	*v = m.e.data;
	return r;
}

TEST(amd_has_no_feat_ctl)
{
	const struct kvm_msr_list *list;
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	bool listed = false;
	struct result r;
	unsigned int i;
	uint64_t v;

	if (!host_cpu_is_amd)
		SKIP(return, "AMD only");
	vm = vm_create_with_one_vcpu(&vcpu, guest_code);
	r = guest_write(vcpu, LOCKED);
	EXPECT_EQ(GP_VECTOR, r.wr_vector);
	EXPECT_EQ(GP_VECTOR, r.rd_vector);
	/*
	 * The C KVM lists the MSR when the host's RDMSR of it works (it probes
	 * msrs_to_save_base[]): not on AMD hardware, but under QEMU TCG. Listed
	 * but not handled, user space may read it as 0 and write 0, nothing
	 * else (kvm_do_msr_access()); not listed, it is unknown.
	 */
	list = kvm_get_msr_index_list();
	for (i = 0; i < list->nmsrs; i++)
		listed |= list->indices[i] == MSR_IA32_FEAT_CTL;
	TH_LOG("MSR 0x3a %s in KVM_GET_MSR_INDEX_LIST (%s)", listed ? "is" : "is not",
	       kvm_rs_kvm_name());
	EXPECT_EQ(listed, get_feat_ctl(vcpu, &v));
	EXPECT_EQ(0, v);	/* read as 0, or zeroed by the failed read */
	EXPECT_EQ(listed, set_feat_ctl(vcpu, 0));
	EXPECT_EQ(0, set_feat_ctl(vcpu, LOCKED));
	kvm_vm_free(vm);
}

/*
 * With user-space MSR exits for "unknown" and "invalid" MSR accesses, a
 * guest access that fails exits with the reason the C KVM gives: on AMD the
 * MSR is unknown (listed for user space or not), on Intel a reserved bit is
 * an invalid value. Answering with an error makes it #GP.
 */
TEST(user_space_exit_reasons)
{
	const uint32_t want = KVM_MSR_EXIT_REASON_INVAL | KVM_MSR_EXIT_REASON_UNKNOWN;
	struct kvm_vcpu *vcpu;
	struct kvm_run *run;
	struct kvm_vm *vm;
	struct result r;
	struct ucall uc;
	uint32_t reason = host_cpu_is_amd ? KVM_MSR_EXIT_REASON_UNKNOWN : KVM_MSR_EXIT_REASON_INVAL;
	uint64_t value = host_cpu_is_amd ? LOCKED : 1ull << 3;

	vm = vm_create_with_one_vcpu(&vcpu, guest_code);
	vm_enable_cap(vm, KVM_CAP_X86_USER_SPACE_MSR, want);
	run = vcpu->run;
	guest_value = value;
	sync_global_to_guest(vm, guest_value);
	vcpu_run(vcpu);
	ASSERT_EQ(KVM_EXIT_X86_WRMSR, run->exit_reason);
	EXPECT_EQ(MSR_IA32_FEAT_CTL, run->msr.index);
	EXPECT_EQ(reason, run->msr.reason);
	EXPECT_EQ(value, run->msr.data);
	run->msr.error = 1;
	vcpu_run(vcpu);
	if (host_cpu_is_amd) {
		ASSERT_EQ(KVM_EXIT_X86_RDMSR, run->exit_reason);
		EXPECT_EQ(MSR_IA32_FEAT_CTL, run->msr.index);
		EXPECT_EQ(reason, run->msr.reason);
		run->msr.error = 1;
		vcpu_run(vcpu);
	}
	ASSERT_EQ(UCALL_SYNC, get_ucall(vcpu, &uc));
	r = (struct result){ uc.args[2], uc.args[3], uc.args[4] };
	EXPECT_EQ(GP_VECTOR, r.wr_vector);
	EXPECT_EQ(host_cpu_is_amd ? GP_VECTOR : 0, r.rd_vector);
	EXPECT_EQ(0, r.value);
	kvm_vm_free(vm);
}

TEST(in_index_list)
{
	const struct kvm_msr_list *list;
	bool found = false;
	unsigned int i;

	if (!host_cpu_is_intel)
		SKIP(return, "Intel only");
	list = kvm_get_msr_index_list();
	for (i = 0; i < list->nmsrs; i++)
		found |= list->indices[i] == MSR_IA32_FEAT_CTL;
	EXPECT_TRUE(found);
}

TEST(host_writes)
{
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	unsigned int bit;
	uint64_t locked;

	if (!host_cpu_is_intel)
		SKIP(return, "Intel only");
	vm = vm_create_with_one_vcpu(&vcpu, guest_code);
	EXPECT_EQ(0, vcpu_get_msr(vcpu, MSR_IA32_FEAT_CTL));
	/* Known bits are accepted with the lock clear and set; others never. */
	for (locked = 0; locked <= LOCKED; locked++) {
		for (bit = 0; bit < 64; bit++) {
			uint64_t v = (1ull << bit) | locked;
			bool ok = (SUPPORTED & (1ull << bit)) != 0;

			EXPECT_EQ(ok, set_feat_ctl(vcpu, v)) {
				TH_LOG("KVM_SET_MSRS 0x3a <- %#lx", v);
			}
			EXPECT_EQ(ok ? v : locked, vcpu_get_msr(vcpu, MSR_IA32_FEAT_CTL));
			/* Back to the base value (a failed write changed nothing). */
			EXPECT_EQ(1, set_feat_ctl(vcpu, locked));
		}
	}
	EXPECT_EQ(1, set_feat_ctl(vcpu, SUPPORTED));
	EXPECT_EQ(SUPPORTED, vcpu_get_msr(vcpu, MSR_IA32_FEAT_CTL));
	EXPECT_EQ(1, set_feat_ctl(vcpu, 0));
	EXPECT_EQ(0, vcpu_get_msr(vcpu, MSR_IA32_FEAT_CTL));
	kvm_vm_free(vm);
}

/* A vCPU whose CPUID has none of VMX, SGX, SGX_LC, and MCG_CAP no LMCE_P. */
static struct kvm_vm *plain_vm(struct kvm_vcpu **vcpu)
{
	struct kvm_vm *vm = vm_create_with_one_vcpu(vcpu, guest_code);

	vcpu_clear_cpuid_feature(*vcpu, X86_FEATURE_VMX);
	vcpu_clear_cpuid_feature(*vcpu, X86_FEATURE_SGX);
	vcpu_clear_cpuid_feature(*vcpu, X86_FEATURE_SGX_LC);
	return vm;
}

TEST(guest_without_features)
{
	const uint64_t refused[] = { VMX_IN_SMX, VMX_OUT_SMX, SGX_LC, SGX, LMCE, 1ull << 3,
				     1ull << 63, LOCKED | VMX_OUT_SMX };
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	unsigned int i;

	if (!host_cpu_is_intel)
		SKIP(return, "Intel only");
	vm = plain_vm(&vcpu);
	for (i = 0; i < ARRAY_SIZE(refused); i++)
		expect_guest(vcpu, refused[i], false, 0);
	expect_guest(vcpu, 0, true, 0);
	/* The guest may lock it; then every write faults, the same value too. */
	expect_guest(vcpu, LOCKED, true, LOCKED);
	expect_guest(vcpu, LOCKED, false, LOCKED);
	expect_guest(vcpu, 0, false, LOCKED);
	/* User space is not bound by the lock, nor by the guest's features. */
	EXPECT_EQ(1, set_feat_ctl(vcpu, LOCKED | VMX_OUT_SMX));
	expect_guest(vcpu, 0, false, LOCKED | VMX_OUT_SMX);
	EXPECT_EQ(1, set_feat_ctl(vcpu, 0));
	expect_guest(vcpu, LOCKED, true, LOCKED);
	kvm_vm_free(vm);
}

TEST(guest_vmx_bits)
{
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	bool offered = kvm_cpu_has(X86_FEATURE_VMX);

	if (!host_cpu_is_intel)
		SKIP(return, "Intel only");
	/*
	 * VMX in the guest's CPUID opens the VMX bits only if KVM offers VMX
	 * (the C KVM's governed feature): nested VMX on for kvm-intel, never
	 * for kvm-rs.
	 */
	vm = plain_vm(&vcpu);
	vcpu_set_cpuid_feature(vcpu, X86_FEATURE_VMX);
	TH_LOG("VMX %s in KVM_GET_SUPPORTED_CPUID (%s)", offered ? "is" : "is not",
	       kvm_rs_kvm_name());
	expect_guest(vcpu, VMX_OUT_SMX, offered, offered ? VMX_OUT_SMX : 0);
	expect_guest(vcpu, VMX_IN_SMX | VMX_OUT_SMX, offered, offered ? VMX_IN_SMX | VMX_OUT_SMX : 0);
	expect_guest(vcpu, LOCKED | VMX_OUT_SMX, offered, offered ? LOCKED | VMX_OUT_SMX : 0);
	kvm_vm_free(vm);
}

TEST(guest_sgx_bits)
{
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;

	if (!host_cpu_is_intel)
		SKIP(return, "Intel only");
	/* SGX in the guest's CPUID: SGX, not SGX_LC. */
	vm = plain_vm(&vcpu);
	vcpu_set_cpuid_feature(vcpu, X86_FEATURE_SGX);
	expect_guest(vcpu, SGX_LC, false, 0);
	expect_guest(vcpu, SGX, true, SGX);
	expect_guest(vcpu, LOCKED | SGX, true, LOCKED | SGX);
	kvm_vm_free(vm);

	/* SGX_LC in the guest's CPUID: SGX_LC, not SGX. */
	vm = plain_vm(&vcpu);
	vcpu_set_cpuid_feature(vcpu, X86_FEATURE_SGX_LC);
	expect_guest(vcpu, SGX, false, 0);
	expect_guest(vcpu, SGX_LC, true, SGX_LC);
	kvm_vm_free(vm);
}

TEST(guest_lmce_bit)
{
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	uint64_t supported, cap;
	int kvm_fd;

	if (!host_cpu_is_intel)
		SKIP(return, "Intel only");
	kvm_fd = open_kvm_dev_path_or_exit();
	kvm_ioctl(kvm_fd, KVM_X86_GET_MCE_CAP_SUPPORTED, &supported);
	close(kvm_fd);
	vm = plain_vm(&vcpu);
	cap = 2 | MCG_LMCE_P;
	if (!(supported & MCG_LMCE_P)) {
		/* kvm-rs: no local machine checks, so no LMCE bit. */
		EXPECT_EQ(-1, __vcpu_ioctl(vcpu, KVM_X86_SETUP_MCE, &cap));
		EXPECT_EQ(EINVAL, errno);
		expect_guest(vcpu, LMCE, false, 0);
		kvm_vm_free(vm);
		SKIP(return, "MCG_LMCE_P not supported (%s)", kvm_rs_kvm_name());
	}
	vcpu_ioctl(vcpu, KVM_X86_SETUP_MCE, &cap);
	expect_guest(vcpu, LMCE, true, LMCE);
	expect_guest(vcpu, LOCKED | LMCE, true, LOCKED | LMCE);
	kvm_vm_free(vm);
}

TEST_HARNESS_MAIN
