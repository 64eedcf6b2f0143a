// SPDX-License-Identifier: GPL-2.0
/*
 * Many VMs, created and destroyed, leak no kernel memory.
 *
 * Each iteration creates a VM with 1 MiB of guest memory and one or two
 * vCPUs (with or without the in-kernel irqchip), runs them in real mode over
 * 200 pages of that memory (so that nested page tables get built and guest
 * pages pinned), sometimes deletes or moves the memory slot, and closes it
 * all in one order or another. After a warm-up, two phases of ITERS
 * iterations each are measured: the kernel's used memory (MemTotal -
 * MemFree), unreclaimable slab, and the objects in use in every slab cache
 * (/sys/kernel/slab/<cache>/objects, after <cache>/shrink flushed the per-CPU
 * slabs), each after RCU grace periods and 6 s for deferred frees. Something that grows by a fixed amount per VM grows in both phases;
 * noise does not. The test fails if a measure grows in both phases by more
 * than: 4 pages per VM for used memory (it moves by megabytes as the page
 * allocator's per-CPU lists fill and drain; a VM's VMCB, kvm_run pages and
 * nested page tables, or its 200 guest pages if they stayed pinned, are more),
 * half a page per VM for vmalloc and kernel stacks, 2 KiB per VM for
 * unreclaimable slab (vmap_area objects pile up there until vmalloc purges
 * them), 256 bytes per VM for per-CPU memory, and 3/4 object per VM for any
 * one slab cache (but vmap_area) - the finest of these measures.
 *
 * The kernel has no kmemleak; to find what leaks once this test says that
 * something does, build it with CONFIG_DEBUG_KERNEL=y, CONFIG_DEBUG_KMEMLEAK=y,
 * CONFIG_DEBUG_KMEMLEAK_MEM_POOL_SIZE=16000 and read
 * /sys/kernel/debug/kmemleak after "echo scan > /sys/kernel/debug/kmemleak".
 *
 * KVM_RS_LEAK_ITERS overrides the number of iterations per phase (default 150).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <linux/kvm.h>
#include <linux/membarrier.h>
#include <sys/syscall.h>

#include "kselftest_harness.h"

#define MEM_SIZE	(1 << 20)
#define TOUCH_PAGES	200
#define MAX_CACHES	512

/* Real mode at 0x1000: write a byte into each of TOUCH_PAGES pages from 0x10000, then OUT. */
static const uint8_t guest_code[] = {
	0xb9, TOUCH_PAGES & 0xff, TOUCH_PAGES >> 8,	/* mov $TOUCH_PAGES, %cx */
	0xb8, 0x00, 0x10,				/* mov $0x1000, %ax */
	0x8e, 0xc0,					/* 1: mov %ax, %es */
	0x26, 0xc6, 0x06, 0x00, 0x00, 0x01,		/* movb $1, %es:0 */
	0x05, 0x00, 0x01,				/* add $0x100, %ax */
	0x49,						/* dec %cx */
	0x75, 0xf2,					/* jnz 1b */
	0xe6, 0x10,					/* out %al, $0x10 */
	0xf4,						/* hlt */
};

static int run_vcpu(int vm, int id, int run_size, uint8_t *mem)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs = { .rip = 0x1000, .rflags = 2 };
	struct kvm_run *run;
	int vcpu = ioctl(vm, KVM_CREATE_VCPU, id), r = -1;

	if (vcpu < 0)
		return -1;
	run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED)
		goto out;
	if (ioctl(vcpu, KVM_GET_SREGS, &sregs))
		goto out_unmap;
	sregs.cs.selector = 0;
	sregs.cs.base = 0;
	if (ioctl(vcpu, KVM_SET_SREGS, &sregs) || ioctl(vcpu, KVM_SET_REGS, &regs))
		goto out_unmap;
	if (ioctl(vcpu, KVM_RUN, 0) || run->exit_reason != KVM_EXIT_IO || run->io.port != 0x10)
		goto out_unmap;
	/* The guest ran over the pages. */
	if (mem[0x10000] != 1 || mem[0x10000 + (TOUCH_PAGES - 1) * 4096] != 1)
		goto out_unmap;
	r = vcpu;
out_unmap:
	munmap(run, run_size);
out:
	if (r < 0)
		close(vcpu);
	return r;
}

/* One VM's life; the iteration number picks the variant. Returns 0 on success. */
static int one_vm(int kvm, int i, int run_size)
{
	struct kvm_userspace_memory_region region = {
		.slot = 0, .guest_phys_addr = 0, .memory_size = MEM_SIZE,
	};
	int vm, vcpus[2] = { -1, -1 }, nvcpus = 1, r = -1, j;
	uint8_t *mem;

	vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0)
		return -1;
	mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		goto out_vm;
	memcpy(mem + 0x1000, guest_code, sizeof(guest_code));
	region.userspace_addr = (uint64_t)mem;
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region))
		goto out_mem;
	switch (i % 3) {
	case 0:
		/* With the in-kernel irqchip, one vCPU (an AP would wait for INIT). */
		if (ioctl(vm, KVM_CREATE_IRQCHIP, 0))
			goto out_mem;
		break;
	case 1:
		nvcpus = 2;
		break;
	}
	for (j = 0; j < nvcpus; j++) {
		vcpus[j] = run_vcpu(vm, j, run_size, mem);
		if (vcpus[j] < 0)
			goto out_vcpus;
	}
	switch (i % 3) {
	case 1:
		/* Delete the slot: its nested page tables and pins must go. */
		region.memory_size = 0;
		if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region))
			goto out_vcpus;
		break;
	case 2:
		/* Move it. */
		region.guest_phys_addr = 0x10000000;
		if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region))
			goto out_vcpus;
		/* Close the VM before its vCPU. */
		close(vm);
		vm = -1;
		break;
	}
	r = 0;
out_vcpus:
	for (j = 0; j < nvcpus; j++)
		if (vcpus[j] >= 0)
			close(vcpus[j]);
out_mem:
	munmap(mem, MEM_SIZE);
out_vm:
	if (vm >= 0)
		close(vm);
	return r;
}

struct cache {
	char name[256];
	long objects;
};

struct snapshot {
	long used_kb, sunreclaim_kb, slab_kb, kstack_kb, pagetables_kb, vmalloc_kb, percpu_kb;
	int ncaches;
	struct cache caches[MAX_CACHES];
};

static long meminfo(const char *buf, const char *key)
{
	const char *p = strstr(buf, key);

	return p ? strtol(p + strlen(key), NULL, 10) : -1;
}

static void write_file(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY);

	if (fd >= 0) {
		if (write(fd, s, strlen(s)) < 0)
			;	/* best effort */
		close(fd);
	}
}

static long read_long(const char *path)
{
	char buf[64] = "";
	int fd = open(path, O_RDONLY);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	return n > 0 ? strtol(buf, NULL, 10) : -1;
}

/* Settles the allocators, then reads the counters. */
static void snapshot(struct snapshot *s)
{
	char buf[8192], path[320];
	struct dirent *d;
	DIR *dir;
	ssize_t n;
	int fd;

	/*
	 * Let RCU-deferred frees happen: end a grace period now (membarrier's
	 * global command waits for one), then give the callbacks and the
	 * kvfree_rcu() batches (drained every 5 s) time to run; a loaded
	 * machine otherwise shows the C KVM's deferred frees as growth. Then
	 * drop caches and flush the per-CPU slabs.
	 */
	syscall(__NR_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0);
	sleep(6);
	syscall(__NR_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0);
	sync();
	write_file("/proc/sys/vm/drop_caches", "3");
	dir = opendir("/sys/kernel/slab");
	s->ncaches = 0;
	if (dir) {
		/* Merged caches appear once as a directory, then as symlinks (aliases). */
		while ((d = readdir(dir))) {
			if (d->d_name[0] == '.' || d->d_type != DT_DIR)
				continue;
			snprintf(path, sizeof(path), "/sys/kernel/slab/%s/shrink", d->d_name);
			write_file(path, "1");
		}
		rewinddir(dir);
		while ((d = readdir(dir)) && s->ncaches < MAX_CACHES) {
			if (d->d_name[0] == '.' || d->d_type != DT_DIR)
				continue;
			snprintf(path, sizeof(path), "/sys/kernel/slab/%s/objects", d->d_name);
			snprintf(s->caches[s->ncaches].name, sizeof(s->caches[0].name), "%s", d->d_name);
			s->caches[s->ncaches++].objects = read_long(path);
		}
		closedir(dir);
	}
	fd = open("/proc/meminfo", O_RDONLY);
	n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
	if (fd >= 0)
		close(fd);
	buf[n > 0 ? n : 0] = 0;
	s->used_kb = meminfo(buf, "MemTotal:") - meminfo(buf, "MemFree:");
	s->sunreclaim_kb = meminfo(buf, "SUnreclaim:");
	s->slab_kb = meminfo(buf, "Slab:");
	s->kstack_kb = meminfo(buf, "KernelStack:");
	s->pagetables_kb = meminfo(buf, "PageTables:");
	s->vmalloc_kb = meminfo(buf, "VmallocUsed:");
	s->percpu_kb = meminfo(buf, "Percpu:");
}

/* The names of the caches merged into @cache, for the report. */
static void cache_aliases(const char *cache, char *out, size_t len)
{
	char path[320], target[320];
	struct dirent *d;
	DIR *dir = opendir("/sys/kernel/slab");
	size_t used = 0;
	ssize_t n;

	out[0] = 0;
	if (!dir)
		return;
	while ((d = readdir(dir)) && used + 2 < len) {
		if (d->d_type != DT_LNK)
			continue;
		snprintf(path, sizeof(path), "/sys/kernel/slab/%s", d->d_name);
		n = readlink(path, target, sizeof(target) - 1);
		if (n <= 0)
			continue;
		target[n] = 0;
		if (strcmp(strrchr(target, '/') ? strrchr(target, '/') + 1 : target, cache))
			continue;
		used += snprintf(out + used, len - used, "%s%s", used ? " " : "", d->d_name);
	}
	closedir(dir);
}

/*
 * vmalloc()'s vmap_area objects are freed lazily, in batches once enough
 * accumulated (also with the C KVM, which vmallocs its VM and FPU state):
 * such caches are judged through VmallocUsed instead.
 */
static bool lazily_freed(const char *cache)
{
	char aliases[1024];

	cache_aliases(cache, aliases, sizeof(aliases));
	return !strcmp(cache, "vmap_area") || strstr(aliases, "vmap_area");
}

static long cache_objects(const struct snapshot *s, const char *name)
{
	int i;

	for (i = 0; i < s->ncaches; i++)
		if (!strcmp(s->caches[i].name, name))
			return s->caches[i].objects;
	return -1;
}

/* A fixture only to give the test a longer timeout than the harness's 30 s. */
FIXTURE(leak) {
	int unused;
};

FIXTURE_SETUP(leak)
{
}

FIXTURE_TEARDOWN(leak)
{
}

TEST_F_TIMEOUT(leak, many_vms_leak_nothing, 900)
{
	static struct snapshot s[3];
	const char *env = getenv("KVM_RS_LEAK_ITERS");
	int iters = env ? atoi(env) : 150;
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	int run_size, phase, i, bad = 0;
	long d1, d2;

	ASSERT_GE(kvm, 0);
	run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	ASSERT_GT(run_size, 0);
	/* Warm-up: the allocators' caches fill once. */
	for (i = 0; i < 30; i++)
		ASSERT_EQ(0, one_vm(kvm, i, run_size)) TH_LOG("warm-up VM %d: %s", i, strerror(errno));
	snapshot(&s[0]);
	for (phase = 1; phase <= 2; phase++) {
		for (i = 0; i < iters; i++)
			ASSERT_EQ(0, one_vm(kvm, i, run_size))
				TH_LOG("phase %d, VM %d: %s", phase, i, strerror(errno));
		snapshot(&s[phase]);
	}
	close(kvm);

	TH_LOG("%d VMs per phase; growth in phase 1 / phase 2:", iters);
#define REPORT(field, limit_kb)							\
	do {									\
		d1 = s[1].field - s[0].field;					\
		d2 = s[2].field - s[1].field;					\
		TH_LOG("  %-14s %+7ld kB / %+7ld kB (limit %ld kB)", #field,	\
		       d1, d2, (long)(limit_kb));				\
		if (d1 > (limit_kb) && d2 > (limit_kb))				\
			bad = 1;						\
	} while (0)
	REPORT(used_kb, iters * 16);
	REPORT(sunreclaim_kb, iters * 2);
	REPORT(vmalloc_kb, iters * 2);
	REPORT(percpu_kb, iters / 4);
	REPORT(kstack_kb, iters * 2);
	/* Shown, judged through the others. */
	REPORT(slab_kb, 1L << 40);
	REPORT(pagetables_kb, 1L << 40);
#undef REPORT
	for (i = 0; i < s[0].ncaches; i++) {
		long o0 = s[0].caches[i].objects;
		long o1 = cache_objects(&s[1], s[0].caches[i].name);
		long o2 = cache_objects(&s[2], s[0].caches[i].name);

		if (o0 < 0 || o1 < 0 || o2 < 0)
			continue;
		if (o1 - o0 >= iters * 3 / 4 && o2 - o1 >= iters * 3 / 4) {
			char aliases[1024];

			cache_aliases(s[0].caches[i].name, aliases, sizeof(aliases));
			TH_LOG("  slab cache %s (%s): %ld -> %ld -> %ld objects in use%s",
			       s[0].caches[i].name, aliases, o0, o1, o2,
			       lazily_freed(s[0].caches[i].name) ? " (freed lazily: ignored)" : "");
			if (!lazily_freed(s[0].caches[i].name))
				bad = 1;
		}
	}
	if (!s[0].ncaches)
		TH_LOG("  (no /sys/kernel/slab: per-cache counts not checked)");
	EXPECT_EQ(0, bad) TH_LOG("memory grows with the number of VMs created");
}

TEST_HARNESS_MAIN
