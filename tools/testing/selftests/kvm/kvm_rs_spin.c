// SPDX-License-Identifier: GPL-2.0
/*
 * Keeps a VMCS loaded on every CPU: a VM with an in-kernel irqchip and one
 * vCPU per online CPU, each in its own thread pinned to that CPU. Each guest
 * (real mode, interrupts off) exits once to user space through an OUT, which
 * shows it ran on its CPU, then halts for good: the vCPU sleeps in KVM_RUN
 * and its VMCS stays active on the CPU (nothing clears it until the vCPU
 * moves, is freed, or the CPU leaves VMX). Used by the crash/kexec test,
 * which crashes the host then. Prints "spinning N" once every vCPU has run
 * on its CPU, and stays until killed.
 *
 * The guests halt rather than loop: a busy guest on every CPU slows Bochs
 * down so much (minutes of host time per emulated second) that the test
 * would take hours.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <linux/kvm.h>

static int vm;
static int mmap_size;
static volatile int entered;

static void die(const char *what)
{
	printf("kvm_rs_spin: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void *vcpu_thread(void *arg)
{
	long id = (long)arg;
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	struct kvm_mp_state mp = { .mp_state = KVM_MP_STATE_RUNNABLE };
	struct kvm_run *run;
	cpu_set_t set;
	int fd;

	CPU_ZERO(&set);
	CPU_SET(id, &set);
	if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set))
		die("pthread_setaffinity_np");
	fd = ioctl(vm, KVM_CREATE_VCPU, id);
	if (fd < 0)
		die("KVM_CREATE_VCPU");
	run = mmap(NULL, mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (run == MAP_FAILED)
		die("mmap vcpu");
	if (ioctl(fd, KVM_GET_SREGS, &sregs))
		die("KVM_GET_SREGS");
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	if (ioctl(fd, KVM_SET_SREGS, &sregs))
		die("KVM_SET_SREGS");
	/* With an in-kernel irqchip the APs wait for INIT/SIPI: start them all. */
	if (ioctl(fd, KVM_SET_MP_STATE, &mp))
		die("KVM_SET_MP_STATE");
	memset(&regs, 0, sizeof(regs));
	regs.rflags = 2;
	regs.rip = 0;
	if (ioctl(fd, KVM_SET_REGS, &regs))
		die("KVM_SET_REGS");
	for (;;) {
		if (ioctl(fd, KVM_RUN, 0) < 0 && errno != EINTR)
			die("KVM_RUN");
		if (run->exit_reason == KVM_EXIT_IO)
			__sync_fetch_and_add(&entered, 1);
		else if (run->exit_reason != KVM_EXIT_INTR) {
			printf("kvm_rs_spin: vCPU %ld: exit reason %u\n", id, run->exit_reason);
			exit(1);
		}
	}
	return NULL;
}

int main(void)
{
	static const unsigned char guest[] = {
		0xe6, 0x80,	/* out 0x80, al: tell user space it runs */
		0xf4,		/* 1: hlt (IF = 0: for good) */
		0xeb, 0xfd,	/* jmp 1b */
	};
	struct kvm_userspace_memory_region mr;
	long i, n = sysconf(_SC_NPROCESSORS_ONLN);
	pthread_t t;
	unsigned char *mem;
	int kvm;

	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		die("open /dev/kvm");
	vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0)
		die("KVM_CREATE_VM");
	if (ioctl(vm, KVM_CREATE_IRQCHIP, 0))
		die("KVM_CREATE_IRQCHIP");
	mmap_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	mem = mmap(NULL, 0x10000, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		die("mmap");
	memcpy(mem, guest, sizeof(guest));
	memset(&mr, 0, sizeof(mr));
	mr.memory_size = 0x10000;
	mr.userspace_addr = (unsigned long)mem;
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &mr))
		die("KVM_SET_USER_MEMORY_REGION");
	for (i = 0; i < n; i++)
		if (pthread_create(&t, NULL, vcpu_thread, (void *)i))
			die("pthread_create");
	while (entered < n)
		usleep(100000);
	printf("spinning %ld\n", n);
	fflush(stdout);
	for (;;)
		pause();
}
