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

TEST_HARNESS_MAIN
