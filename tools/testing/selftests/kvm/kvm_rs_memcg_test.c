// SPDX-License-Identifier: GPL-2.0
/*
 * Memory-cgroup accounting of vCPUs.
 *
 * A worker process is moved into a new cgroup v2 group with the memory
 * controller (the test VM mounts cgroup2 at /sys/fs/cgroup). There it
 * creates a VM and vCPUs:
 *  - each vCPU raises the group's memory.stat "kernel" by at least the pages
 *    every KVM allocates for it with GFP_KERNEL_ACCOUNT: the kvm_run and PIO
 *    pages, the VMCB (or VMCS) and a page more of state (MIN_PAGES_PER_VCPU);
 *  - with memory.max set a little above memory.current, KVM_CREATE_VCPU
 *    eventually fails with ENOMEM; the worker (oom_score_adj -1000, so the
 *    group's OOM killer has no one to kill) survives, and so does an
 *    unrelated process outside the group, and the kernel logs no oops,
 *    warning or OOM kill;
 *  - once everything is closed, the charges are gone: "kernel" and
 *    memory.current are back where they were before /dev/kvm was opened.
 * memory.stat is read after 2.5 s, when the kernel's periodic flush of the
 * per-CPU statistics (every 2 s) has run.
 */
#define _GNU_SOURCE	/* strerrorname_np() */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/kvm.h>

#include "kselftest_harness.h"
#include "kvm_rs_util.h"

#define CG_ROOT		"/sys/fs/cgroup"
#define NR_VCPUS	64
#define MAX_VCPUS	900	/* below RLIMIT_NOFILE */
#define PAGE		4096l
/*
 * What every KVM charges per vCPU at least: the kvm_run and PIO data pages,
 * the VMCB (or VMCS), and a page more of per-vCPU state (the C KVM: the MSR
 * permission map and the LAPIC page; kvm-rs: its per-vCPU coalesced ring).
 */
#define MIN_PAGES_PER_VCPU 4

static int write_str(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY), r;

	if (fd < 0)
		return -1;
	r = write(fd, s, strlen(s)) == (ssize_t)strlen(s) ? 0 : -1;
	close(fd);
	return r;
}

static long read_stat(const char *cg, const char *file, const char *key)
{
	char path[256], buf[8192];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", cg, file);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	if (!key)
		return strtol(buf, NULL, 10);
	for (char *p = buf; p; p = strchr(p, '\n')) {
		if (*p == '\n')
			p++;
		if (!strncmp(p, key, strlen(key)) && p[strlen(key)] == ' ')
			return strtol(p + strlen(key) + 1, NULL, 10);
	}
	return -1;
}

/* ---- the worker, inside the group ---- */

struct reply {
	int count;
	int err;
};

static void worker(const char *cg, int cmd_fd, int reply_fd)
{
	static int vcpus[MAX_VCPUS];
	int kvm = -1, vm = -1, n = 0;
	struct reply r = { 0, 0 };
	char path[256], c;

	/* Nothing for the group's OOM killer to kill: charges fail instead. */
	if (write_str("/proc/self/oom_score_adj", "-1000"))
		r.err = errno;
	snprintf(path, sizeof(path), "%s/cgroup.procs", cg);
	if (write_str(path, "0"))
		r.err = errno;
	if (write(reply_fd, &r, sizeof(r)) != sizeof(r))
		_exit(1);
	while (read(cmd_fd, &c, 1) == 1) {
		r.count = 0;
		r.err = 0;
		switch (c) {
		case 'o':	/* open /dev/kvm and create a VM */
			kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
			vm = kvm >= 0 ? ioctl(kvm, KVM_CREATE_VM, 0) : -1;
			if (vm < 0)
				r.err = errno;
			break;
		case 'v':	/* NR_VCPUS vCPUs */
		case 'f':	/* vCPUs until it fails */
			while (n < MAX_VCPUS && (c == 'f' || r.count < NR_VCPUS)) {
				int fd = ioctl(vm, KVM_CREATE_VCPU, n);

				if (fd < 0) {
					r.err = errno;
					break;
				}
				vcpus[n++] = fd;
				r.count++;
			}
			break;
		case 'c':	/* close everything */
			while (n > 0)
				close(vcpus[--n]);
			close(vm);
			close(kvm);
			vm = kvm = -1;
			break;
		case 'q':
			_exit(0);
		}
		if (write(reply_fd, &r, sizeof(r)) != sizeof(r))
			_exit(1);
	}
	_exit(0);
}

FIXTURE(memcg) {
	char cg[128];
	pid_t worker, bystander;
	int cmd, reply;
};

FIXTURE_SETUP(memcg)
{
	int to_worker[2], from_worker[2];
	struct reply r;
	char buf[256] = "";
	int fd;

	self->worker = self->bystander = -1;
	fd = open(CG_ROOT "/cgroup.controllers", O_RDONLY);
	if (fd < 0 || read(fd, buf, sizeof(buf) - 1) <= 0 || !strstr(buf, "memory"))
		SKIP(return, "no cgroup v2 memory controller at " CG_ROOT);
	close(fd);
	ASSERT_EQ(0, write_str(CG_ROOT "/cgroup.subtree_control", "+memory"));
	snprintf(self->cg, sizeof(self->cg), CG_ROOT "/kvm_rs_memcg_%d", getpid());
	ASSERT_EQ(0, mkdir(self->cg, 0755));

	/* An unrelated process outside the group, that must survive. */
	self->bystander = fork();
	ASSERT_GE(self->bystander, 0);
	if (!self->bystander) {
		for (;;)
			pause();
	}

	ASSERT_EQ(0, pipe(to_worker));
	ASSERT_EQ(0, pipe(from_worker));
	self->worker = fork();
	ASSERT_GE(self->worker, 0);
	if (!self->worker) {
		close(to_worker[1]);
		close(from_worker[0]);
		worker(self->cg, to_worker[0], from_worker[1]);
	}
	close(to_worker[0]);
	close(from_worker[1]);
	self->cmd = to_worker[1];
	self->reply = from_worker[0];
	ASSERT_EQ(sizeof(r), read(self->reply, &r, sizeof(r)));
	ASSERT_EQ(0, r.err) TH_LOG("worker could not join %s: %s", self->cg, strerror(r.err));
}

FIXTURE_TEARDOWN(memcg)
{
	if (self->worker > 0) {
		kill(self->worker, SIGKILL);
		waitpid(self->worker, NULL, 0);
	}
	if (self->bystander > 0) {
		kill(self->bystander, SIGKILL);
		waitpid(self->bystander, NULL, 0);
	}
	if (self->cg[0])
		rmdir(self->cg);
}

/* Sends @c to the worker; its reply, or count -1 if the worker is gone. */
static struct reply command(FIXTURE_DATA(memcg) *self, char c)
{
	struct reply r = { -1, 0 };

	if (write(self->cmd, &c, 1) != 1 || read(self->reply, &r, sizeof(r)) != sizeof(r))
		r.count = -1;
	return r;
}

static long kernel_kb(FIXTURE_DATA(memcg) *self)
{
	usleep(2500 * 1000);	/* the periodic rstat flush */
	return read_stat(self->cg, "memory.stat", "kernel") / 1024;
}

TEST_F_TIMEOUT(memcg, vcpus_are_charged_limited_and_uncharged, 300)
{
	long base_kernel, base_current, vm_kernel, vcpus_kernel, end_kernel, end_current;
	char line[512], max[64];
	struct reply r;
	int status;

	base_kernel = kernel_kb(self);
	base_current = read_stat(self->cg, "memory.current", NULL);
	ASSERT_GE(base_kernel, 0) TH_LOG("no \"kernel\" in memory.stat");

	r = command(self, 'o');
	ASSERT_EQ(0, r.err) TH_LOG("KVM_CREATE_VM: %s", strerror(r.err));
	vm_kernel = kernel_kb(self);

	/* Each vCPU is charged at least MIN_PAGES_PER_VCPU pages. */
	r = command(self, 'v');
	ASSERT_EQ(NR_VCPUS, r.count) TH_LOG("KVM_CREATE_VCPU: %s", strerror(r.err));
	vcpus_kernel = kernel_kb(self);
	TH_LOG("memory.stat kernel: %ld kB before, %ld kB with a VM, %ld kB with %d vCPUs "
	       "(%ld kB per vCPU)", base_kernel, vm_kernel, vcpus_kernel, NR_VCPUS,
	       (vcpus_kernel - vm_kernel) / NR_VCPUS);
	EXPECT_GE(vcpus_kernel - vm_kernel, NR_VCPUS * MIN_PAGES_PER_VCPU * PAGE / 1024);

	/* A limit 2 MiB above the current use: vCPU creation stops with ENOMEM. */
	snprintf(max, sizeof(max), "%ld",
		 read_stat(self->cg, "memory.current", NULL) + (2l << 20));
	snprintf(line, sizeof(line), "%s/memory.max", self->cg);
	ASSERT_EQ(0, write_str(line, max));
	r = command(self, 'f');
	ASSERT_GE(r.count, 0) TH_LOG("the worker died creating vCPUs up to the limit");
	TH_LOG("%d more vCPUs within 2 MiB, then: %s", r.count, strerrorname_np(r.err));
	EXPECT_EQ(ENOMEM, r.err);
	EXPECT_LT(r.count, MAX_VCPUS - NR_VCPUS);
	EXPECT_GE(r.count, 1);
	ASSERT_EQ(0, write_str(line, "max"));

	/* Everything closed: the charges are gone. */
	r = command(self, 'c');
	ASSERT_EQ(0, r.count);
	end_kernel = kernel_kb(self);
	end_current = read_stat(self->cg, "memory.current", NULL);
	TH_LOG("after close: kernel %ld kB (before: %ld), memory.current %ld kB (before: %ld)",
	       end_kernel, base_kernel, end_current / 1024, base_current / 1024);
	EXPECT_LE(end_kernel - base_kernel, 256);
	EXPECT_LE(end_current - base_current, 512 * 1024);

	/* Nobody was killed, the kernel did not complain. */
	EXPECT_EQ(0, waitpid(self->bystander, &status, WNOHANG));
	EXPECT_EQ(0, kill(self->bystander, 0));
	EXPECT_EQ(0, command(self, 'c').count) TH_LOG("the worker is gone");
	if (kvm_rs_klog_has_bug(line, sizeof(line)))
		TH_LOG("kernel log: %s", line);
	EXPECT_FALSE(kvm_rs_klog_has_bug(line, sizeof(line)));
}

TEST_HARNESS_MAIN
