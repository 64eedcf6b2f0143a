// SPDX-License-Identifier: GPL-2.0
/*
 * Keeps guests running: a VM with one vCPU per online CPU, each in its own
 * thread, spinning in real mode on "jmp $" until the process is killed. Used
 * by the crash/kexec test to have a VMCS loaded on every CPU when the host
 * crashes. Prints "spinning N" once every vCPU has entered the guest.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
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
	struct kvm_run *run;
	int fd;

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
	memset(&regs, 0, sizeof(regs));
	regs.rflags = 2;
	regs.rip = 0;
	if (ioctl(fd, KVM_SET_REGS, &regs))
		die("KVM_SET_REGS");
	__sync_fetch_and_add(&entered, 1);
	for (;;) {
		if (ioctl(fd, KVM_RUN, 0) < 0 && errno != EINTR)
			die("KVM_RUN");
		if (run->exit_reason != KVM_EXIT_INTR) {
			printf("kvm_rs_spin: vCPU %ld: exit reason %u\n", id, run->exit_reason);
			exit(1);
		}
	}
	return NULL;
}

int main(void)
{
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
	mmap_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	mem = mmap(NULL, 0x10000, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		die("mmap");
	mem[0] = 0xeb;	/* jmp $ */
	mem[1] = 0xfe;
	memset(&mr, 0, sizeof(mr));
	mr.memory_size = 0x10000;
	mr.userspace_addr = (unsigned long)mem;
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &mr))
		die("KVM_SET_USER_MEMORY_REGION");
	for (i = 0; i < n; i++)
		if (pthread_create(&t, NULL, vcpu_thread, (void *)i))
			die("pthread_create");
	while (entered < n)
		usleep(1000);
	/* Give each vCPU time to enter the guest at least once. */
	sleep(2);
	printf("spinning %ld\n", n);
	fflush(stdout);
	for (;;)
		pause();
}
