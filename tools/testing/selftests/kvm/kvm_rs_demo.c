// SPDX-License-Identifier: GPL-2.0
/*
 * What `make run` shows: /dev/kvm answering the system ioctls and a VM being
 * created. Exits non-zero if any answer is wrong.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/kvm.h>

static const struct {
	int cap;
	const char *name;
} caps[] = {
	{ KVM_CAP_CHECK_EXTENSION_VM, "KVM_CAP_CHECK_EXTENSION_VM" },
	{ KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY" },
	{ KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT" },
	{ KVM_CAP_MAX_VCPUS, "KVM_CAP_MAX_VCPUS" },
	{ KVM_CAP_COALESCED_MMIO, "KVM_CAP_COALESCED_MMIO" },
};

int main(void)
{
	int kvm, vm, api, size, ok = 1;
	unsigned int i;

	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0) {
		printf("open /dev/kvm: %s\n", strerror(errno));
		return 1;
	}
	api = ioctl(kvm, KVM_GET_API_VERSION, 0);
	printf("KVM_GET_API_VERSION    = %d\n", api);
	ok &= api == KVM_API_VERSION;
	size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	printf("KVM_GET_VCPU_MMAP_SIZE = %d\n", size);
	ok &= size == 3 * getpagesize();
	for (i = 0; i < sizeof(caps) / sizeof(caps[0]); i++)
		printf("KVM_CHECK_EXTENSION(%s) = %d\n", caps[i].name,
		       ioctl(kvm, KVM_CHECK_EXTENSION, caps[i].cap));
	vm = ioctl(kvm, KVM_CREATE_VM, 0);
	printf("KVM_CREATE_VM(0)       = %d%s%s\n", vm, vm < 0 ? ": " : " (a VM fd)",
	       vm < 0 ? strerror(errno) : "");
	ok &= vm >= 0;
	if (vm >= 0)
		close(vm);
	close(kvm);
	printf("%s\n", ok ? "kvm answers as expected" : "UNEXPECTED ANSWER");
	return ok ? 0 : 1;
}
