// SPDX-License-Identifier: GPL-2.0
/*
 * The system ioctls of /dev/kvm and the VM file: return values and errno for
 * good and bad arguments. Every expectation is the C KVM's behaviour, so the
 * test passes on both the C KVM and kvm-rs (scripts/vmtest.sh runs it on both).
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/kvm.h>

#include "kselftest_harness.h"

FIXTURE(dev) {
	int kvm;
};

FIXTURE_SETUP(dev)
{
	self->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	ASSERT_GE(self->kvm, 0) TH_LOG("open /dev/kvm: %s", strerror(errno));
}

FIXTURE_TEARDOWN(dev)
{
	close(self->kvm);
}

TEST_F(dev, char_device_is_misc_232)
{
	struct stat st;

	ASSERT_EQ(0, fstat(self->kvm, &st));
	EXPECT_TRUE(S_ISCHR(st.st_mode));
	EXPECT_EQ(10, major(st.st_rdev));
	EXPECT_EQ(232, minor(st.st_rdev));
}

TEST_F(dev, api_version)
{
	EXPECT_EQ(KVM_API_VERSION, ioctl(self->kvm, KVM_GET_API_VERSION, 0));
	EXPECT_EQ(-1, ioctl(self->kvm, KVM_GET_API_VERSION, 1));
	EXPECT_EQ(EINVAL, errno);
}

TEST_F(dev, vcpu_mmap_size)
{
	long page = sysconf(_SC_PAGESIZE);

	/* kvm_run, the PIO data page and the coalesced MMIO ring. */
	EXPECT_EQ(3 * page, ioctl(self->kvm, KVM_GET_VCPU_MMAP_SIZE, 0));
	EXPECT_EQ(-1, ioctl(self->kvm, KVM_GET_VCPU_MMAP_SIZE, 1));
	EXPECT_EQ(EINVAL, errno);
}

TEST_F(dev, check_extension)
{
	/* Unknown capabilities answer 0, never an error. */
	EXPECT_EQ(0, ioctl(self->kvm, KVM_CHECK_EXTENSION, 100000));
	EXPECT_EQ(0, ioctl(self->kvm, KVM_CHECK_EXTENSION, -1L));
	EXPECT_EQ(1, ioctl(self->kvm, KVM_CHECK_EXTENSION, KVM_CAP_CHECK_EXTENSION_VM));
}

TEST_F(dev, unknown_system_ioctl_is_einval)
{
	EXPECT_EQ(-1, ioctl(self->kvm, _IO(KVMIO, 0x7f), 0));
	EXPECT_EQ(EINVAL, errno);
}

TEST_F(dev, create_vm_bad_type_is_einval)
{
	EXPECT_EQ(-1, ioctl(self->kvm, KVM_CREATE_VM, 0x1000));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, ioctl(self->kvm, KVM_CREATE_VM, -1L));
	EXPECT_EQ(EINVAL, errno);
}

TEST_F(dev, create_vm)
{
	int vm = ioctl(self->kvm, KVM_CREATE_VM, 0);
	int flags;

	ASSERT_GE(vm, 0) TH_LOG("KVM_CREATE_VM: %s", strerror(errno));
	flags = fcntl(vm, F_GETFD);
	EXPECT_TRUE(flags & FD_CLOEXEC);
	EXPECT_EQ(O_RDWR, fcntl(vm, F_GETFL) & O_ACCMODE);
	/* The VM answers KVM_CHECK_EXTENSION like /dev/kvm. */
	EXPECT_EQ(1, ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_CHECK_EXTENSION_VM));
	EXPECT_EQ(0, ioctl(vm, KVM_CHECK_EXTENSION, 100000));
	/* An ioctl no VM knows: -ENOTTY, as kvm_arch_vm_ioctl() answers. */
	EXPECT_EQ(-1, ioctl(vm, _IO(KVMIO, 0x7f), 0));
	EXPECT_EQ(ENOTTY, errno);
	EXPECT_EQ(0, close(vm));
}

TEST_F(dev, many_vms)
{
	int vms[64];
	int i;

	for (i = 0; i < 64; i++) {
		vms[i] = ioctl(self->kvm, KVM_CREATE_VM, 0);
		ASSERT_GE(vms[i], 0) TH_LOG("VM %d: %s", i, strerror(errno));
	}
	/* Close in an order other than creation's. */
	for (i = 0; i < 64; i += 2)
		EXPECT_EQ(0, close(vms[i]));
	for (i = 63; i > 0; i -= 2)
		EXPECT_EQ(0, close(vms[i]));
}

TEST_F(dev, vm_outlives_dev_fd)
{
	int vm = ioctl(self->kvm, KVM_CREATE_VM, 0);

	ASSERT_GE(vm, 0);
	close(self->kvm);
	self->kvm = open("/dev/null", O_RDONLY);	/* for the teardown */
	EXPECT_EQ(1, ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_CHECK_EXTENSION_VM));
	EXPECT_EQ(0, close(vm));
}

static struct kvm_cpuid2 *alloc_cpuid(int nent)
{
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + nent * sizeof(c->entries[0]));

	c->nent = nent;
	return c;
}

static struct kvm_cpuid_entry2 *find_leaf(struct kvm_cpuid2 *c, __u32 fn, __u32 idx)
{
	__u32 i;

	for (i = 0; i < c->nent; i++)
		if (c->entries[i].function == fn && c->entries[i].index == idx)
			return &c->entries[i];
	return NULL;
}

TEST_F(dev, supported_cpuid_errors)
{
	struct kvm_cpuid2 *c = alloc_cpuid(1);

	c->nent = 0;
	EXPECT_EQ(-1, ioctl(self->kvm, KVM_GET_SUPPORTED_CPUID, c));
	EXPECT_EQ(E2BIG, errno);
	c->nent = 1;
	EXPECT_EQ(-1, ioctl(self->kvm, KVM_GET_SUPPORTED_CPUID, c));
	EXPECT_EQ(E2BIG, errno);
	/* On error nent is left alone. */
	EXPECT_EQ(1, c->nent);
	EXPECT_EQ(-1, ioctl(self->kvm, KVM_GET_SUPPORTED_CPUID, (void *)8));
	EXPECT_EQ(EFAULT, errno);
	free(c);
}

TEST_F(dev, supported_cpuid_table)
{
	struct kvm_cpuid2 *c = alloc_cpuid(256);
	struct kvm_cpuid_entry2 *e;
	char sig[13] = {};
	__u32 vabits;

	ASSERT_EQ(0, ioctl(self->kvm, KVM_GET_SUPPORTED_CPUID, c)) TH_LOG("%s", strerror(errno));
	EXPECT_GT(c->nent, 4);
	EXPECT_LE(c->nent, 256);
	ASSERT_NE(NULL, e = find_leaf(c, 0, 0));
	ASSERT_NE(NULL, find_leaf(c, 1, 0));
	/* The KVM signature leaf, with the feature leaf as the maximum. */
	ASSERT_NE(NULL, e = find_leaf(c, 0x40000000, 0));
	memcpy(sig, &e->ebx, 4);
	memcpy(sig + 4, &e->ecx, 4);
	memcpy(sig + 8, &e->edx, 4);
	EXPECT_STREQ("KVMKVMKVM", sig);
	EXPECT_EQ(0x40000001, e->eax);
	/* Long mode, NX and a 48- or 57-bit linear address width (the selftest library's needs). */
	ASSERT_NE(NULL, e = find_leaf(c, 0x80000001, 0));
	EXPECT_TRUE(e->edx & (1u << 29));
	EXPECT_TRUE(e->edx & (1u << 20));
	ASSERT_NE(NULL, e = find_leaf(c, 0x80000008, 0));
	vabits = (e->eax >> 8) & 0xff;
	EXPECT_TRUE(vabits == 48 || vabits == 57);
	EXPECT_GE(e->eax & 0xff, 32);
	/* Leaf 7 has sub-leaves: its entry is marked so. */
	e = find_leaf(c, 7, 0);
	if (e)
		EXPECT_TRUE(e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
	free(c);
}

/*
 * Halt polling's limit, as x86 sets it when the module is loaded without
 * arguments (KVM_HALT_POLL_NS_DEFAULT): tools read and set it here.
 */
TEST(halt_poll_ns_parameter)
{
	char buf[32] = "";
	FILE *f = fopen("/sys/module/kvm/parameters/halt_poll_ns", "r");

	ASSERT_NE(NULL, f) TH_LOG("halt_poll_ns: %s", strerror(errno));
	ASSERT_NE(NULL, fgets(buf, sizeof(buf), f));
	fclose(f);
	EXPECT_EQ(200000, strtoul(buf, NULL, 10));
}

TEST_HARNESS_MAIN
