// SPDX-License-Identifier: GPL-2.0
/*
 * What `make run` shows: a 64-bit guest booted on the KVM that is loaded
 * (kvm-rs, or the C KVM with KVM=c) prints a message through port I/O, one
 * OUT to the debug port 0xe9 per character, which this program collects from
 * KVM_EXIT_IO and prints. Exits non-zero if anything is not as expected.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "kvm_util.h"
#include "processor.h"
#include "kvm_rs_util.h"

#define DEBUG_PORT 0xe9

static void guest_puts(const char *s)
{
	for (; *s; s++)
		asm volatile("outb %%al, %%dx" : : "a"(*s), "d"(DEBUG_PORT));
}

/* Guest code may not call the C library: its IFUNC slots are not relocated there. */
static char *guest_next(char *p)
{
	while (*p != '?')
		p++;
	return p;
}

static void guest_code(void)
{
	uint64_t cr0 = get_cr0(), efer = rdmsr(MSR_EFER);
	char msg[] = "Hello from a guest in 64-bit long mode (CR0.PG=?, EFER.LMA=?), "
		     "6 * 7 = ??\n";
	char *p;

	/* Fill in what only the guest can see. */
	p = guest_next(msg);
	*p = (cr0 & X86_CR0_PG) ? '1' : '0';
	p = guest_next(p);
	*p = (efer & EFER_LMA) ? '1' : '0';
	p = guest_next(p);
	p[0] = '0' + (6 * 7) / 10;
	p[1] = '0' + (6 * 7) % 10;
	guest_puts(msg);
	GUEST_DONE();
}

int main(void)
{
	char out[256], line[256];
	struct kvm_vcpu *vcpu;
	struct timespec t0, t1;
	struct kvm_vm *vm;
	struct ucall uc;
	size_t n = 0;
	int exits = 0, kvm;

	printf("/dev/kvm is answered by %s\n", kvm_rs_kvm_name());
	if (kvm_rs_kmsg_find("kvm-rs loaded", line, sizeof(line)))
		printf("  kernel log: %s\n", line);
	kvm = open_kvm_dev_path_or_exit();
	printf("KVM_GET_API_VERSION = %d, KVM_GET_VCPU_MMAP_SIZE = %d\n",
	       __kvm_ioctl(kvm, KVM_GET_API_VERSION, NULL),
	       __kvm_ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, NULL));
	close(kvm);

	clock_gettime(CLOCK_MONOTONIC, &t0);
	vm = vm_create_with_one_vcpu(&vcpu, guest_code);
	printf("booting a 64-bit guest (1 vCPU) ...\n");
	for (;;) {
		vcpu_run(vcpu);
		exits++;
		if (get_ucall(vcpu, &uc) == UCALL_DONE)
			break;
		if (uc.cmd == UCALL_ABORT)
			REPORT_GUEST_ASSERT(uc);
		TEST_ASSERT_KVM_EXIT_REASON(vcpu, KVM_EXIT_IO);
		TEST_ASSERT(vcpu->run->io.port == DEBUG_PORT &&
			    vcpu->run->io.direction == KVM_EXIT_IO_OUT &&
			    vcpu->run->io.size == 1 && vcpu->run->io.count == 1,
			    "unexpected I/O: port 0x%x dir %d size %d count %d",
			    vcpu->run->io.port, vcpu->run->io.direction,
			    vcpu->run->io.size, vcpu->run->io.count);
		TEST_ASSERT(n < sizeof(out) - 1, "guest output too long");
		out[n++] = *((char *)vcpu->run + vcpu->run->io.data_offset);
	}
	out[n] = 0;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("guest says: %s", out);
	printf("(%d exits to user space, %.2f s)\n", exits,
	       (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
	kvm_vm_free(vm);

	TEST_ASSERT(strstr(out, "(CR0.PG=1, EFER.LMA=1), 6 * 7 = 42\n"),
		    "unexpected guest output");
	printf("kvm answers as expected\n");
	return 0;
}
