// SPDX-License-Identifier: GPL-2.0
/*
 * The MSR_MISC_FEATURES_ENABLES switch around the guest: a host task with
 * CPUID faulting enabled (arch_prctl(ARCH_SET_CPUID, 0)) runs a guest whose
 * user-mode (CPL 3) code executes CPUID. The hardware must run the guest with
 * CPUID faulting off (for the guest, KVM emulates CPUID faulting; with the
 * host's value left in place the guest's CPUID would raise #GP inside the
 * guest, which has no IDT here: a triple fault). After KVM_RUN the task's
 * CPUID faulting must be back: CPUID in the task raises SIGSEGV.
 *
 * Skips (exit 4) when the host CPU has no CPUID faulting (ARCH_SET_CPUID
 * fails with ENODEV), as under Bochs and QEMU TCG.
 */
#include <asm/prctl.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/kvm.h>

static sigjmp_buf jb;

static void on_segv(int sig)
{
	siglongjmp(jb, 1);
}

static int host_cpuid_faults(void)
{
	unsigned int a = 0, b, c = 0, d;

	signal(SIGSEGV, on_segv);
	if (sigsetjmp(jb, 1))
		return 1;
	asm volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
	return 0;
}

#define FAIL(...) do { printf("FAIL: " __VA_ARGS__); printf("\n"); exit(1); } while (0)

int main(void)
{
	/* Guest code at 0x1000, CPL 3, 32-bit flat protected mode without paging:
	 * cpuid; out 0x10, al (reports EBX through the I/O exit); jmp $. */
	static const unsigned char code[] = { 0x0f, 0xa2, 0xe6, 0x10, 0xeb, 0xfe };
	struct kvm_userspace_memory_region mr = { 0 };
	struct kvm_sregs s;
	struct kvm_regs r;
	struct kvm_run *run;
	unsigned char *mem;
	int kvm, vm, vcpu, rc;

	rc = syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
	if (rc && errno == ENODEV) {
		printf("SKIP: the host CPU has no CPUID faulting (MSR_PLATFORM_INFO bit 31)\n");
		return 4;
	}
	if (rc)
		FAIL("ARCH_SET_CPUID: %s", strerror(errno));
	if (!host_cpuid_faults())
		FAIL("CPUID does not fault in the task after ARCH_SET_CPUID(0)");

	kvm = open("/dev/kvm", O_RDWR);
	vm = ioctl(kvm, KVM_CREATE_VM, 0);
	mem = mmap(NULL, 0x10000, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (kvm < 0 || vm < 0 || mem == MAP_FAILED)
		FAIL("VM setup: %s", strerror(errno));
	memcpy(mem + 0x1000, code, sizeof(code));
	mr.memory_size = 0x10000;
	mr.userspace_addr = (unsigned long)mem;
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &mr))
		FAIL("KVM_SET_USER_MEMORY_REGION: %s", strerror(errno));
	vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	run = mmap(NULL, ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0), PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (vcpu < 0 || run == MAP_FAILED)
		FAIL("vCPU setup: %s", strerror(errno));
	if (ioctl(vcpu, KVM_GET_SREGS, &s))
		FAIL("KVM_GET_SREGS");
	/* Flat 32-bit segments, DPL 3; TR a busy 32-bit TSS; CR0.PE. */
	s.cs = (struct kvm_segment){ .base = 0, .limit = 0xffffffff, .selector = 0x1b, .type = 11,
				     .present = 1, .dpl = 3, .db = 1, .s = 1, .g = 1 };
	s.ds = (struct kvm_segment){ .base = 0, .limit = 0xffffffff, .selector = 0x23, .type = 3,
				     .present = 1, .dpl = 3, .db = 1, .s = 1, .g = 1 };
	s.es = s.fs = s.gs = s.ss = s.ds;
	s.tr = (struct kvm_segment){ .base = 0x2000, .limit = 0x67, .selector = 0x28, .type = 11, .present = 1 };
	s.cr0 = 0x11;
	if (ioctl(vcpu, KVM_SET_SREGS, &s))
		FAIL("KVM_SET_SREGS: %s", strerror(errno));
	memset(&r, 0, sizeof(r));
	r.rip = 0x1000;
	r.rflags = 0x3002;	/* IOPL 3: the OUT at CPL 3 needs no TSS I/O bitmap */
	r.rax = 0;
	if (ioctl(vcpu, KVM_SET_REGS, &r))
		FAIL("KVM_SET_REGS");
	if (ioctl(vcpu, KVM_RUN, 0))
		FAIL("KVM_RUN: %s", strerror(errno));
	if (run->exit_reason != KVM_EXIT_IO)
		FAIL("exit reason %u, not KVM_EXIT_IO: the guest's CPUID did not reach KVM "
		     "(hardware CPUID faulting left on while the guest ran?)", run->exit_reason);
	if (ioctl(vcpu, KVM_GET_REGS, &r))
		FAIL("KVM_GET_REGS");
	printf("guest CPUID at CPL 3 exited to KVM: leaf 0 EBX = %#llx\n", (unsigned long long)r.rbx);
	if (r.rbx != 0x756e6547 && r.rbx != 0x68747541)
		FAIL("unexpected vendor in EBX");
	if (!host_cpuid_faults())
		FAIL("the task's CPUID faulting was not restored after KVM_RUN");
	printf("ok: guest ran without CPUID faulting, the task's was restored\n");
	return 0;
}
