// SPDX-License-Identifier: GPL-2.0
/*
 * KVM_CREATE_VCPU, KVM_ENABLE_CAP(KVM_CAP_MAX_VCPU_ID), the vCPU mmap area and
 * the owner-process rule, with good and bad arguments. Expectations are the
 * C KVM's; scripts/vmtest.sh runs this on both the C KVM and kvm-rs.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/kvm.h>

#include "kselftest_harness.h"

FIXTURE(vm) {
	int kvm;
	int vm;
	long page;
};

FIXTURE_SETUP(vm)
{
	self->page = sysconf(_SC_PAGESIZE);
	self->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	ASSERT_GE(self->kvm, 0);
	self->vm = ioctl(self->kvm, KVM_CREATE_VM, 0);
	ASSERT_GE(self->vm, 0);
}

FIXTURE_TEARDOWN(vm)
{
	close(self->vm);
	close(self->kvm);
}

static int enable_cap(int fd, __u32 cap, __u32 flags, __u64 arg0)
{
	struct kvm_enable_cap c = { .cap = cap, .flags = flags, .args = { arg0 } };

	return ioctl(fd, KVM_ENABLE_CAP, &c);
}

TEST_F(vm, limits_are_advertised)
{
	int max_vcpus = ioctl(self->kvm, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
	int max_id = ioctl(self->kvm, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPU_ID);
	int nr = ioctl(self->kvm, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS);

	EXPECT_GT(max_vcpus, 0);
	EXPECT_GE(max_id, max_vcpus);
	EXPECT_GE(nr, 1);
	EXPECT_LE(nr, max_vcpus);
	EXPECT_EQ(1, ioctl(self->vm, KVM_CHECK_EXTENSION, KVM_CAP_ENABLE_CAP_VM));
}

TEST_F(vm, create_vcpu_ids)
{
	int max_id = ioctl(self->kvm, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPU_ID);
	int v0, vmax;

	v0 = ioctl(self->vm, KVM_CREATE_VCPU, 0);
	ASSERT_GE(v0, 0) TH_LOG("KVM_CREATE_VCPU(0): %s", strerror(errno));
	EXPECT_TRUE(fcntl(v0, F_GETFD) & FD_CLOEXEC);

	EXPECT_EQ(-1, ioctl(self->vm, KVM_CREATE_VCPU, 0));
	EXPECT_EQ(EEXIST, errno);
	EXPECT_EQ(-1, ioctl(self->vm, KVM_CREATE_VCPU, max_id));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, ioctl(self->vm, KVM_CREATE_VCPU, 1UL << 32));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, ioctl(self->vm, KVM_CREATE_VCPU, -1UL));
	EXPECT_EQ(EINVAL, errno);

	vmax = ioctl(self->vm, KVM_CREATE_VCPU, max_id - 1);
	EXPECT_GE(vmax, 0);
	close(vmax);
	close(v0);
}

TEST_F(vm, max_vcpu_id_cap)
{
	int max_id = ioctl(self->kvm, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPU_ID);
	struct kvm_enable_cap *bad = (void *)8;
	int v;

	EXPECT_EQ(-1, ioctl(self->vm, KVM_ENABLE_CAP, bad));
	EXPECT_EQ(EFAULT, errno);
	EXPECT_EQ(-1, enable_cap(self->vm, KVM_CAP_MAX_VCPU_ID, 1, 4));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, enable_cap(self->vm, 100000, 0, 4));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, enable_cap(self->vm, KVM_CAP_MAX_VCPU_ID, 0, max_id + 1));
	EXPECT_EQ(EINVAL, errno);

	EXPECT_EQ(0, enable_cap(self->vm, KVM_CAP_MAX_VCPU_ID, 0, 4));
	EXPECT_EQ(0, enable_cap(self->vm, KVM_CAP_MAX_VCPU_ID, 0, 4));
	EXPECT_EQ(-1, enable_cap(self->vm, KVM_CAP_MAX_VCPU_ID, 0, 5));
	EXPECT_EQ(EINVAL, errno);

	EXPECT_EQ(-1, ioctl(self->vm, KVM_CREATE_VCPU, 4));
	EXPECT_EQ(EINVAL, errno);
	v = ioctl(self->vm, KVM_CREATE_VCPU, 3);
	EXPECT_GE(v, 0);
	close(v);
}

TEST_F(vm, first_vcpu_fixes_max_vcpu_id)
{
	int v = ioctl(self->vm, KVM_CREATE_VCPU, 0);

	ASSERT_GE(v, 0);
	EXPECT_EQ(-1, enable_cap(self->vm, KVM_CAP_MAX_VCPU_ID, 0, 8));
	EXPECT_EQ(EINVAL, errno);
	close(v);
}

static sigjmp_buf sigbus_jmp;

static void on_sigbus(int sig)
{
	siglongjmp(sigbus_jmp, 1);
}

TEST_F(vm, vcpu_mmap)
{
	int size = ioctl(self->kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	volatile uint8_t *p, *extra;
	int v = ioctl(self->vm, KVM_CREATE_VCPU, 0);
	struct sigaction sa = { .sa_handler = on_sigbus }, old;
	int i, faulted;

	ASSERT_GE(v, 0);
	ASSERT_EQ(3 * self->page, size);
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, v, 0);
	ASSERT_NE(MAP_FAILED, p) TH_LOG("mmap: %s", strerror(errno));
	/* All three pages are there, writable, and distinct. */
	for (i = 0; i < 3; i++)
		p[i * self->page] = 0xa0 + i;
	for (i = 0; i < 3; i++)
		EXPECT_EQ(0xa0 + i, p[i * self->page]);

	/* One page at a time, by offset: the same pages. */
	for (i = 0; i < 3; i++) {
		volatile uint8_t *q = mmap(NULL, self->page, PROT_READ, MAP_SHARED, v,
					   i * self->page);

		ASSERT_NE(MAP_FAILED, q);
		EXPECT_EQ(0xa0 + i, q[0]);
		munmap((void *)q, self->page);
	}

	/* Past the three pages: the mapping exists, touching it is SIGBUS. */
	extra = mmap(NULL, self->page, PROT_READ, MAP_SHARED, v, 3 * self->page);
	ASSERT_NE(MAP_FAILED, extra);
	sigaction(SIGBUS, &sa, &old);
	faulted = sigsetjmp(sigbus_jmp, 1);
	if (!faulted)
		(void)extra[0];
	sigaction(SIGBUS, &old, NULL);
	EXPECT_TRUE(faulted);
	munmap((void *)extra, self->page);

	/* The mapping outlives the vCPU and VM files. */
	close(v);
	close(self->vm);
	self->vm = open("/dev/null", O_RDONLY);
	EXPECT_EQ(0xa1, p[self->page]);
	munmap((void *)p, size);
}

TEST_F(vm, vcpu_unknown_ioctls)
{
	int v = ioctl(self->vm, KVM_CREATE_VCPU, 0);

	ASSERT_GE(v, 0);
	EXPECT_EQ(-1, ioctl(v, _IO(KVMIO, 0x7f), 0));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, ioctl(v, _IO('x', 0x01), 0));
	EXPECT_EQ(EINVAL, errno);
	close(v);
}

TEST_F(vm, other_process_gets_eio)
{
	int v = ioctl(self->vm, KVM_CREATE_VCPU, 0);
	pid_t pid;
	int status;

	ASSERT_GE(v, 0);
	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		int bad = 0;

		if (ioctl(self->vm, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS) != -1 || errno != EIO)
			bad |= 1;
		if (ioctl(self->vm, KVM_CREATE_VCPU, 1) != -1 || errno != EIO)
			bad |= 2;
		if (ioctl(v, _IO(KVMIO, 0x7f), 0) != -1 || errno != EIO)
			bad |= 4;
		/* /dev/kvm itself is not tied to a process. */
		if (ioctl(self->kvm, KVM_GET_API_VERSION, 0) != KVM_API_VERSION)
			bad |= 8;
		_exit(bad);
	}
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_TRUE(WIFEXITED(status));
	EXPECT_EQ(0, WEXITSTATUS(status));
	close(v);
}

TEST_F(vm, many_vcpus_closed_out_of_order)
{
	int fds[64], i;

	for (i = 0; i < 64; i++) {
		fds[i] = ioctl(self->vm, KVM_CREATE_VCPU, i);
		ASSERT_GE(fds[i], 0) TH_LOG("vCPU %d: %s", i, strerror(errno));
	}
	for (i = 0; i < 64; i += 2)
		close(fds[i]);
	/* The VM keeps its vCPUs: the ids stay taken. */
	EXPECT_EQ(-1, ioctl(self->vm, KVM_CREATE_VCPU, 0));
	EXPECT_EQ(EEXIST, errno);
	close(self->vm);
	self->vm = open("/dev/null", O_RDONLY);
	for (i = 1; i < 64; i += 2)
		close(fds[i]);
}

TEST_HARNESS_MAIN
