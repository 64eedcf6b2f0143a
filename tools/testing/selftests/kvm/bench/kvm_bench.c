// SPDX-License-Identifier: GPL-2.0
/*
 * kvm_bench: exit cost, kernel memory per VM and vCPU, and VM start-up, for
 * whichever KVM module is loaded (kvm-rs or the C KVM), so that the two can
 * be run side by side in the same test VM (scripts/bench.sh).
 *
 *   kvm_bench exit WORKLOAD ITERATIONS [WARMUP]
 *   kvm_bench mem [TOTAL_VCPUS]
 *   kvm_bench start ITERATIONS
 *
 * Every figure is printed as one line "BENCH key value unit [note]".
 * Environment: KVM_BENCH_UNIT=cycles times with the TSC instead of
 * CLOCK_MONOTONIC; KVM_BENCH_CHUNKS (default 10): timed loops are split in
 * that many chunks and the fastest is the figure; KVM_BENCH_SETTLE_MS
 * (default 500) is the pause before each memory reading. For diagnosis of
 * hlt_ipi: KVM_BENCH_HIST=1 prints the round trips and ICR writes by guest
 * TSC cycles (log2 buckets), KVM_BENCH_PIN=1 pins the sender's thread to
 * CPU 0 and the halter's to CPU 1.
 *
 * Exit workloads, each a small guest timed over ITERATIONS round trips from
 * user space (CLOCK_MONOTONIC around each of 10 chunks of the loop, after
 * WARMUP untimed iterations; the fastest chunk is the figure), kvm-unit-tests
 * vmexit style. The count is checked from user
 * space: in-kernel exits by the guest's own count of correct results
 * (reported at the end through a ucall), user-space exits by counting them.
 *
 *   cpuid      CPUID leaf 0, handled in the kernel
 *   hypercall  VMMCALL (AMD) / VMCALL (Intel) of an unknown number: the
 *              kernel answers -KVM_ENOSYS (a no-op hypercall on both modules)
 *   rdmsr      RDMSR of IA32_APIC_BASE, handled in the kernel
 *   pio_out    OUT to a port nobody claims: KVM_EXIT_IO round trip
 *   mmio_write MOV to unbacked memory: KVM_EXIT_MMIO round trip (the kernel
 *              fetches and decodes the instruction)
 *   mmio_read  MOV from unbacked memory: KVM_EXIT_MMIO, user space answers ~0
 *   coalesced  MOV into a coalesced MMIO zone (no exit); every 128 writes an
 *              OUT lets user space drain the ring (its cost is included)
 *   pci_hole   MOV from a KVM_MEM_PCI_HOLE slot (kvm-rs only): ~0, no exit
 *   hlt_ipi    vCPU 1 sits in STI;HLT, vCPU 0 sends it a fixed IPI (xAPIC
 *              ICR) and waits until the handler has counted it: one figure
 *              per round trip (HLT, wake-up, interrupt delivery, EOI)
 *
 * mem: kernel memory of VMs with 0, 1, 8 and 64 vCPUs (each with an
 * in-kernel irqchip, one 64 KiB memory slot, and every vCPU run once to its
 * first exit). So that each figure is large enough to read, 64 such VMs are
 * built for 0 and 1 vCPU, 8 for 8 and one for 64. Two sources: the memory
 * cgroup's "kernel" counter (what the module charges to the VM's owner:
 * __GFP_ACCOUNT allocations) and the system's free pages (free lists plus
 * per-CPU lists, from /proc/zoneinfo: everything, accounted or not).
 *
 * start: VMs created and destroyed per second, bare (KVM_CREATE_VM, close)
 * and full (irqchip, memory slot, one vCPU run to its first exit, close).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <linux/kvm.h>
#include <linux/kvm_para.h>
#include <linux/kvm_rs.h>

#include "kvm_util.h"
#include "processor.h"
#include "apic.h"

enum workload {
	W_CPUID, W_HYPERCALL, W_RDMSR, W_PIO_OUT, W_MMIO_WRITE, W_MMIO_READ,
	W_COALESCED, W_PCI_HOLE, W_HLT_IPI, W_NR
};

static const char *const workload_names[W_NR] = {
	"cpuid", "hypercall", "rdmsr", "pio_out", "mmio_write", "mmio_read",
	"coalesced", "pci_hole", "hlt_ipi",
};

#define PIO_PORT	0x2000		/* unclaimed: exits to user space */
#define DRAIN_PORT	0x2001		/* "drain the coalesced ring now" */
#define MMIO_GPA	0xc0000000ull	/* no memory slot: MMIO exits */
#define COALESCED_GPA	0xc0001000ull	/* a coalesced MMIO zone */
#define HOLE_GPA	0xc0200000ull	/* a KVM_MEM_PCI_HOLE slot (kvm-rs) */
#define HOLE_SLOT	10
#define COALESCED_BATCH	128		/* below the ring's 169 free entries */
#define HC_UNKNOWN	0x4b52		/* no such hypercall in either module */
#define IPI_VECTOR	0xe1

static inline void outb_port(uint16_t port, uint8_t v)
{
	asm volatile("outb %0, %1" : : "a"(v), "d"(port));
}

/* Runs one workload N times in the guest; returns how many gave the right result. */
static uint64_t guest_loop(uint64_t w, uint64_t n)
{
	uint32_t a, b, c, d;
	uint64_t i, ok = 0;

	switch (w) {
	case W_CPUID:
		for (i = 0; i < n; i++) {
			__cpuid(0, 0, &a, &b, &c, &d);
			ok += a >= 1;
		}
		break;
	case W_HYPERCALL:
		for (i = 0; i < n; i++)
			ok += kvm_hypercall(HC_UNKNOWN, 0, 0, 0, 0) == (uint64_t)-KVM_ENOSYS;
		break;
	case W_RDMSR:
		for (i = 0; i < n; i++)
			ok += (rdmsr(MSR_IA32_APICBASE) & MSR_IA32_APICBASE_BASE) == APIC_DEFAULT_GPA;
		break;
	case W_PIO_OUT:
		for (i = 0; i < n; i++)
			outb_port(PIO_PORT, i);
		ok = n;		/* user space counts the exits */
		break;
	case W_MMIO_WRITE:
		for (i = 0; i < n; i++)
			*(volatile uint32_t *)MMIO_GPA = i;
		ok = n;
		break;
	case W_MMIO_READ:
		for (i = 0; i < n; i++)
			ok += *(volatile uint32_t *)MMIO_GPA == 0xffffffffu;
		break;
	case W_COALESCED:
		for (i = 0; i < n; i++) {
			*(volatile uint32_t *)COALESCED_GPA = i;
			if ((i + 1) % COALESCED_BATCH == 0)
				outb_port(DRAIN_PORT, 0);
		}
		if (n % COALESCED_BATCH)
			outb_port(DRAIN_PORT, 0);
		ok = n;
		break;
	case W_PCI_HOLE:
		for (i = 0; i < n; i++)
			ok += *(volatile uint32_t *)HOLE_GPA == 0xffffffffu;
		break;
	}
	return ok;
}

static void guest_code(uint64_t w, uint64_t warm, uint64_t chunk, uint64_t chunks)
{
	uint64_t c;

	GUEST_SYNC1(guest_loop(w, warm));
	for (c = 0; c < chunks; c++)
		GUEST_SYNC1(guest_loop(w, chunk));
	GUEST_DONE();
}

/* hlt_ipi: vCPU 1 halts, vCPU 0 wakes it with IPIs. */
static uint64_t ipis, halter_ready, halter_stop;

static void ipi_handler(struct ex_regs *regs)
{
	WRITE_ONCE(ipis, ipis + 1);
	xapic_write_reg(APIC_EOI, 0);
}

static void halter_code(void)
{
	xapic_enable();
	WRITE_ONCE(halter_ready, 1);
	while (!READ_ONCE(halter_stop))
		asm volatile("sti; hlt; cli" ::: "memory");
	GUEST_DONE();
}

static void send_ipi_to_halter(void)
{
	xapic_write_reg(APIC_ICR2, SET_APIC_DEST_FIELD(1));
	xapic_write_reg(APIC_ICR, APIC_DEST_PHYSICAL | APIC_DM_FIXED | IPI_VECTOR);
}

/* Round trips by guest TSC cycles, log2 buckets (printed with KVM_BENCH_HIST=1). */
static uint64_t rtt_hist[64], send_hist[64];

static uint64_t ping(uint64_t n)
{
	uint64_t base = READ_ONCE(ipis), i, t0;

	for (i = 1; i <= n; i++) {
		t0 = rdtsc();
		send_ipi_to_halter();
		send_hist[63 - __builtin_clzll((rdtsc() - t0) | 1)]++;
		/* No PAUSE: only the IPI path should differ between the modules. */
		while (READ_ONCE(ipis) != base + i)
			;
		rtt_hist[63 - __builtin_clzll((rdtsc() - t0) | 1)]++;
	}
	return READ_ONCE(ipis) - base;
}

static void sender_code(uint64_t warm, uint64_t chunk, uint64_t chunks)
{
	uint64_t c;

	xapic_enable();
	while (!READ_ONCE(halter_ready))
		;
	GUEST_SYNC1(ping(warm));
	for (c = 0; c < chunks; c++)
		GUEST_SYNC1(ping(chunk));
	WRITE_ONCE(halter_stop, 1);
	send_ipi_to_halter();
	GUEST_DONE();
}

/*
 * The clock: nanoseconds of CLOCK_MONOTONIC, or with KVM_BENCH_UNIT=cycles
 * the TSC (under Bochs one tick per emulated instruction, a finer and more
 * telling unit there than the guest's idea of nanoseconds).
 */
static int use_cycles;

static double now(void)
{
	struct timespec ts;

	if (use_cycles)
		return (double)__builtin_ia32_rdtsc();
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static const char *unit(void)
{
	return use_cycles ? "cycles" : "ns";
}

/*
 * A timed loop is split into chunks (KVM_BENCH_CHUNKS, default 10), each
 * timed alone: the figure is the fastest chunk, the one least disturbed by
 * the host (under QEMU other processes take the emulator's CPUs away for
 * whole milliseconds); the median chunk is printed beside it.
 */
static uint64_t nr_chunks = 10;

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Sorts the per-chunk figures; returns the fastest, *median the median. */
static double best_of(double *v, uint64_t n, double *median)
{
	qsort(v, n, sizeof(*v), cmp_double);
	*median = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
	return v[0];
}

static const char *module_name(void)
{
	if (!access("/sys/module/kvm_amd", F_OK))
		return "kvm-amd";
	if (!access("/sys/module/kvm_intel", F_OK))
		return "kvm-intel";
	return "kvm-rs";
}

static unsigned int ring_size(void)
{
	return (getpagesize() - sizeof(struct kvm_coalesced_mmio_ring)) /
	       sizeof(struct kvm_coalesced_mmio);
}

struct user_counts {
	uint64_t exits;		/* the workload's own user-space exits */
	uint64_t drained;	/* coalesced entries drained from the ring */
};

static void drain_ring(struct kvm_vcpu *vcpu, struct user_counts *uc)
{
	struct kvm_coalesced_mmio_ring *ring =
		(void *)vcpu->run + KVM_COALESCED_MMIO_PAGE_OFFSET * getpagesize();
	uint32_t first = READ_ONCE(ring->first), last = READ_ONCE(ring->last);
	unsigned int max = ring_size();

	TEST_ASSERT(first < max && last < max, "ring indices %u %u out of range", first, last);
	__sync_synchronize();
	while (first != last) {
		struct kvm_coalesced_mmio *e = &ring->coalesced_mmio[first];

		TEST_ASSERT(e->phys_addr == COALESCED_GPA && e->len == 4 && !e->pio,
			    "coalesced entry %u: addr %llx len %u pio %u", first,
			    (unsigned long long)e->phys_addr, e->len, e->pio);
		uc->drained++;
		first = (first + 1) % max;
	}
	__sync_synchronize();
	WRITE_ONCE(ring->first, first);
}

/*
 * Runs the vCPU until its next ucall, handling the workload's user-space
 * exits on the way. Returns the ucall (SYNC's argument in *arg).
 */
static uint64_t run_to_ucall(struct kvm_vcpu *vcpu, struct user_counts *uc, uint64_t *arg)
{
	struct kvm_run *run = vcpu->run;
	struct ucall ucall;

	for (;;) {
		int r = __vcpu_run(vcpu);

		if (r < 0 && errno == EINTR)
			continue;
		TEST_ASSERT(!r, "KVM_RUN: %s", strerror(errno));
		switch (run->exit_reason) {
		case KVM_EXIT_IO:
			if (run->io.port == PIO_PORT && run->io.direction == KVM_EXIT_IO_OUT) {
				uc->exits++;
				continue;
			}
			if (run->io.port == DRAIN_PORT) {
				drain_ring(vcpu, uc);
				continue;
			}
			break;
		case KVM_EXIT_MMIO:
			if (run->mmio.phys_addr == MMIO_GPA) {
				if (!run->mmio.is_write)
					memset(run->mmio.data, 0xff, sizeof(run->mmio.data));
				uc->exits++;
				continue;
			}
			if (run->mmio.phys_addr == COALESCED_GPA && run->mmio.is_write) {
				uc->exits++;	/* the ring was full: counted as drained */
				uc->drained++;
				continue;
			}
			break;
		}
		switch (get_ucall(vcpu, &ucall)) {
		case UCALL_SYNC:
			*arg = ucall.args[0];
			return UCALL_SYNC;
		case UCALL_DONE:
			return UCALL_DONE;
		case UCALL_ABORT:
			REPORT_GUEST_ASSERT(ucall);
		default:
			TEST_FAIL("unexpected exit %u (%s)", run->exit_reason,
				  exit_reason_str(run->exit_reason));
		}
	}
}

static void sync_expect(struct kvm_vcpu *vcpu, struct user_counts *uc, uint64_t want_ok,
			const char *what)
{
	uint64_t arg = 0;

	TEST_ASSERT(run_to_ucall(vcpu, uc, &arg) == UCALL_SYNC, "%s: no sync", what);
	TEST_ASSERT(arg == want_ok, "%s: the guest counted %lu correct results of %lu",
		    what, arg, want_ok);
}

static void bench_exit(enum workload w, uint64_t n, uint64_t warm)
{
	struct user_counts uc = {};
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	uint64_t want_exits = 0, want_drained = 0, arg, chunk = n / nr_chunks, c;
	double t0, t1, per_op[nr_chunks], best, median;

	if (w == W_PCI_HOLE && !kvm_check_cap(KVM_CAP_KVMRS_PCI_HOLE)) {
		printf("BENCH exit.%s n/a %s no KVM_MEM_PCI_HOLE in %s\n",
		       workload_names[w], unit(), module_name());
		return;
	}
	vm = vm_create_with_one_vcpu(&vcpu, guest_code);
	vcpu_args_set(vcpu, 4, (uint64_t)w, warm, chunk, nr_chunks);
	virt_pg_map(vm, MMIO_GPA, MMIO_GPA);
	virt_pg_map(vm, COALESCED_GPA, COALESCED_GPA);
	if (w == W_COALESCED)
		kvm_vm_register_coalesced_io(vm, COALESCED_GPA, 4, false);
	if (w == W_PCI_HOLE) {
		vm_enable_cap(vm, KVM_CAP_KVMRS_PCI_HOLE, 0);
		vm_set_user_memory_region(vm, HOLE_SLOT, KVM_MEM_PCI_HOLE, HOLE_GPA,
					  getpagesize(), NULL);
		virt_pg_map(vm, HOLE_GPA, HOLE_GPA);
	}

	sync_expect(vcpu, &uc, warm, "warm-up");
	uc = (struct user_counts){};
	for (c = 0; c < nr_chunks; c++) {
		t0 = now();
		sync_expect(vcpu, &uc, chunk, workload_names[w]);
		t1 = now();
		per_op[c] = (t1 - t0) / chunk;
	}
	TEST_ASSERT(run_to_ucall(vcpu, &uc, &arg) == UCALL_DONE, "no GUEST_DONE");
	n = chunk * nr_chunks;

	switch (w) {
	case W_PIO_OUT: case W_MMIO_WRITE: case W_MMIO_READ:
		want_exits = n;
		break;
	case W_COALESCED:
		want_drained = n;
		break;
	default:
		break;
	}
	TEST_ASSERT(uc.exits == want_exits || (w == W_COALESCED && uc.exits <= n),
		    "%s: %lu user-space exits, expected %lu", workload_names[w], uc.exits,
		    want_exits);
	TEST_ASSERT(uc.drained == want_drained, "%s: %lu coalesced writes drained, expected %lu",
		    workload_names[w], uc.drained, want_drained);
	best = best_of(per_op, nr_chunks, &median);
	printf("BENCH exit.%s %.1f %s n=%lu chunks=%lu median_chunk=%.1f user_exits=%lu%s\n",
	       workload_names[w], best, unit(), n, nr_chunks, median, uc.exits,
	       w == W_COALESCED && uc.exits ? " (ring overflowed)" : "");
	kvm_vm_free(vm);
}

struct halter {
	struct kvm_vcpu *vcpu;
	int done;
};

static void *halter_thread(void *data)
{
	struct halter *h = data;
	struct user_counts uc = {};
	uint64_t arg;

	TEST_ASSERT(run_to_ucall(h->vcpu, &uc, &arg) == UCALL_DONE, "halter: no GUEST_DONE");
	h->done = 1;
	return NULL;
}

static void bench_hlt_ipi(uint64_t n, uint64_t warm)
{
	struct kvm_vcpu *vcpus[2];
	struct user_counts uc = {};
	struct halter h;
	struct kvm_vm *vm;
	pthread_t thread;
	uint64_t arg, chunk = n / nr_chunks, c;
	double t0, t1, per_op[nr_chunks], best, median;

	vm = vm_create_with_vcpus(2, sender_code, vcpus);
	vcpu_arch_set_entry_point(vcpus[1], halter_code);
	vcpu_args_set(vcpus[0], 3, warm, chunk, nr_chunks);
	vm_install_exception_handler(vm, IPI_VECTOR, ipi_handler);
	virt_pg_map(vm, APIC_DEFAULT_GPA, APIC_DEFAULT_GPA);

	h.vcpu = vcpus[1];
	h.done = 0;
	TEST_ASSERT(!pthread_create(&thread, NULL, halter_thread, &h), "pthread_create");
	if (getenv("KVM_BENCH_PIN")) {
		/* Diagnosis: sender on CPU 0, halter on CPU 1. */
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(1, &set);
		pthread_setaffinity_np(thread, sizeof(set), &set);
		CPU_ZERO(&set);
		CPU_SET(0, &set);
		pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	}
	sync_expect(vcpus[0], &uc, warm, "hlt_ipi warm-up");
	for (c = 0; c < nr_chunks; c++) {
		t0 = now();
		sync_expect(vcpus[0], &uc, chunk, "hlt_ipi");
		t1 = now();
		per_op[c] = (t1 - t0) / chunk;
	}
	TEST_ASSERT(run_to_ucall(vcpus[0], &uc, &arg) == UCALL_DONE, "sender: no GUEST_DONE");
	n = chunk * nr_chunks;
	pthread_join(thread, NULL);
	sync_global_from_guest(vm, ipis);
	TEST_ASSERT(ipis == warm + n + 1, "hlt_ipi: %lu IPIs received, expected %lu",
		    ipis, warm + n + 1);
	best = best_of(per_op, nr_chunks, &median);
	printf("BENCH exit.hlt_ipi %.1f %s n=%lu chunks=%lu median_chunk=%.1f ipis=%lu\n", best,
	       unit(), n, nr_chunks, median, ipis);
	if (getenv("KVM_BENCH_HIST")) {
		int b;

		sync_global_from_guest(vm, rtt_hist);
		sync_global_from_guest(vm, send_hist);
		for (b = 0; b < 64; b++)
			if (rtt_hist[b] || send_hist[b])
				printf("INFO hlt_ipi 2^%d..2^%d guest TSC cycles: %lu round trips, %lu ICR writes\n",
				       b, b + 1, rtt_hist[b], send_hist[b]);
	}
	kvm_vm_free(vm);
}

/*
 * Raw VMs for the memory and start-up figures: no selftest library, so that
 * nothing but KVM's own allocations lands between two readings.
 */
#define RAW_MEM_SIZE	0x10000
#define RAW_CODE_GPA	0x1000

struct raw_vm {
	int fd;
	int nr_vcpus;
	int vcpu_fd[64];
	struct kvm_run *run[64];
};

static int kvm_dev = -1;
static long run_size;
static uint8_t *raw_guest_mem;	/* shared by every raw VM: faulted in once */

static int xioctl(int fd, unsigned long req, void *arg, const char *what)
{
	int r = ioctl(fd, req, arg);

	TEST_ASSERT(r >= 0, "%s: %s", what, strerror(errno));
	return r;
}

static void raw_setup(void)
{
	/* Real mode at 0x1000: out 0x10, al; hlt; jmp $-1 */
	static const uint8_t code[] = { 0xe6, 0x10, 0xf4, 0xeb, 0xfd };

	kvm_dev = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	TEST_ASSERT(kvm_dev >= 0, "/dev/kvm: %s", strerror(errno));
	run_size = xioctl(kvm_dev, KVM_GET_VCPU_MMAP_SIZE, NULL, "KVM_GET_VCPU_MMAP_SIZE");
	raw_guest_mem = mmap(NULL, RAW_MEM_SIZE, PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	TEST_ASSERT(raw_guest_mem != MAP_FAILED, "mmap");
	memset(raw_guest_mem, 0, RAW_MEM_SIZE);
	memcpy(raw_guest_mem + RAW_CODE_GPA, code, sizeof(code));
}

static void raw_vm_create(struct raw_vm *v, int nr_vcpus, int full)
{
	struct kvm_userspace_memory_region region = {
		.slot = 0, .guest_phys_addr = 0, .memory_size = RAW_MEM_SIZE,
		.userspace_addr = (uintptr_t)raw_guest_mem,
	};
	int i;

	v->fd = xioctl(kvm_dev, KVM_CREATE_VM, 0, "KVM_CREATE_VM");
	v->nr_vcpus = nr_vcpus;
	if (!full)
		return;
	xioctl(v->fd, KVM_CREATE_IRQCHIP, NULL, "KVM_CREATE_IRQCHIP");
	xioctl(v->fd, KVM_SET_USER_MEMORY_REGION, &region, "KVM_SET_USER_MEMORY_REGION");
	for (i = 0; i < nr_vcpus; i++) {
		struct kvm_mp_state mp = { .mp_state = KVM_MP_STATE_RUNNABLE };
		struct kvm_sregs sregs;
		struct kvm_regs regs = { .rip = RAW_CODE_GPA, .rflags = 2 };

		v->vcpu_fd[i] = xioctl(v->fd, KVM_CREATE_VCPU, (void *)(long)i, "KVM_CREATE_VCPU");
		v->run[i] = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED,
				 v->vcpu_fd[i], 0);
		TEST_ASSERT(v->run[i] != MAP_FAILED, "mmap vCPU");
		xioctl(v->vcpu_fd[i], KVM_GET_SREGS, &sregs, "KVM_GET_SREGS");
		sregs.cs.base = 0;
		sregs.cs.selector = 0;
		xioctl(v->vcpu_fd[i], KVM_SET_SREGS, &sregs, "KVM_SET_SREGS");
		xioctl(v->vcpu_fd[i], KVM_SET_REGS, &regs, "KVM_SET_REGS");
		/* APs of an in-kernel irqchip wait for INIT/SIPI: make them runnable. */
		xioctl(v->vcpu_fd[i], KVM_SET_MP_STATE, &mp, "KVM_SET_MP_STATE");
		xioctl(v->vcpu_fd[i], KVM_RUN, NULL, "KVM_RUN");
		TEST_ASSERT(v->run[i]->exit_reason == KVM_EXIT_IO && v->run[i]->io.port == 0x10,
			    "raw vCPU %d: exit %u, expected the OUT to port 0x10", i,
			    v->run[i]->exit_reason);
	}
}

static void raw_vm_destroy(struct raw_vm *v)
{
	int i;

	for (i = 0; i < v->nr_vcpus; i++) {
		munmap(v->run[i], run_size);
		close(v->vcpu_fd[i]);
	}
	close(v->fd);
}

/* Free pages of the system: buddy free lists plus per-CPU lists (/proc/zoneinfo). */
static long free_pages(void)
{
	FILE *f = fopen("/proc/zoneinfo", "r");
	char line[256];
	long total = 0, v;

	TEST_ASSERT(f, "/proc/zoneinfo");
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, " pages free %ld", &v) == 1 || sscanf(line, " count: %ld", &v) == 1)
			total += v;
	}
	fclose(f);
	return total;
}

static char memcg_stat_path[512];

static char cgroup_cpu_stat_path[512];

/*
 * The memory cgroup's "kernel" counter. memory.stat flushes the per-CPU
 * statistics only once enough pages changed (or every 2 s), which would hide
 * small differences; reading cpu.stat flushes every controller's per-CPU
 * statistics of the cgroup (cgroup_rstat_flush()) first.
 */
static long memcg_kernel(void)
{
	FILE *f;
	char line[256];
	long v = -1;

	if (!memcg_stat_path[0])
		return -1;
	f = fopen(cgroup_cpu_stat_path, "r");
	if (f) {
		while (fgets(line, sizeof(line), f))
			;
		fclose(f);
	}
	f = fopen(memcg_stat_path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "kernel %ld", &v) == 1)
			break;
	fclose(f);
	return v;
}

static void memcg_find(void)
{
	FILE *f = fopen("/proc/self/cgroup", "r");
	char line[256];

	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "0::", 3)) {
			line[strcspn(line, "\n")] = 0;
			snprintf(memcg_stat_path, sizeof(memcg_stat_path),
				 "/sys/fs/cgroup%s/memory.stat", line + 3);
			snprintf(cgroup_cpu_stat_path, sizeof(cgroup_cpu_stat_path),
				 "/sys/fs/cgroup%s/cpu.stat", line + 3);
		}
	}
	fclose(f);
	if (memcg_kernel() < 0)
		memcg_stat_path[0] = 0;
}

/*
 * Lets RCU-deferred frees of earlier VMs finish before a reading: 500 ms, or
 * KVM_BENCH_SETTLE_MS (under Bochs idle time is slow to emulate).
 */
static void settle(void)
{
	const char *ms = getenv("KVM_BENCH_SETTLE_MS");

	usleep((ms ? atoi(ms) : 500) * 1000);
}

static void bench_mem(int total_vcpus)
{
	static struct raw_vm vms[64];
	static const int sizes[] = { 0, 1, 8, 64 };
	long pg = getpagesize(), sys[4] = {}, kmem[4] = {};
	unsigned int s;

	raw_setup();
	memcg_find();
	if (!memcg_stat_path[0])
		printf("BENCH note 0 - no memory cgroup with a kernel counter: memcg figures skipped\n");
	for (s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		int n = sizes[s], copies, i;
		long free0, free1, kmem0, kmem1;

		if (n > total_vcpus)
			break;
		copies = n ? total_vcpus / n : total_vcpus;
		settle();
		free0 = free_pages();
		kmem0 = memcg_kernel();
		for (i = 0; i < copies; i++)
			raw_vm_create(&vms[i], n, 1);
		settle();
		free1 = free_pages();
		kmem1 = memcg_kernel();
		for (i = 0; i < copies; i++)
			raw_vm_destroy(&vms[i]);
		sys[s] = (free0 - free1) * pg / copies;
		kmem[s] = (kmem1 - kmem0) / copies;
		printf("BENCH mem.vm%d.system %ld bytes per VM with %d vCPUs, %d VMs\n", n, sys[s],
		       n, copies);
		if (memcg_stat_path[0])
			printf("BENCH mem.vm%d.memcg %ld bytes per VM with %d vCPUs, %d VMs\n", n,
			       kmem[s], n, copies);
		if (!n)
			continue;
		/* Per vCPU: what N vCPUs add to a VM, divided by N. */
		printf("BENCH mem.vcpu%d.system %ld bytes per vCPU, (vm%d - vm0) / %d\n", n,
		       (sys[s] - sys[0]) / n, n, n);
		if (memcg_stat_path[0])
			printf("BENCH mem.vcpu%d.memcg %ld bytes per vCPU, (vm%d - vm0) / %d\n", n,
			       (kmem[s] - kmem[0]) / n, n, n);
	}
	close(kvm_dev);
}

/* Creates and destroys N VMs (bare or full) in chunks; prints the fastest chunk. */
static void start_loop(const char *key, uint64_t n, int full)
{
	uint64_t chunk = n / nr_chunks, c, i;
	double t0, per_vm[nr_chunks], best, median;
	struct raw_vm v;

	for (c = 0; c < nr_chunks; c++) {
		t0 = now();
		for (i = 0; i < chunk; i++) {
			raw_vm_create(&v, full ? 1 : 0, full);
			raw_vm_destroy(&v);
		}
		per_vm[c] = (now() - t0) / chunk;
	}
	best = best_of(per_vm, nr_chunks, &median);
	if (use_cycles)
		printf("BENCH %s %.0f cycles/VM n=%lu chunks=%lu median_chunk=%.0f\n", key, best,
		       chunk * nr_chunks, nr_chunks, median);
	else
		printf("BENCH %s %.1f VMs/s n=%lu chunks=%lu median_chunk=%.1f\n", key, 1e9 / best,
		       chunk * nr_chunks, nr_chunks, 1e9 / median);
}

static void bench_start(uint64_t n)
{
	struct raw_vm v;
	uint64_t i;

	raw_setup();
	for (i = 0; i < 3; i++) {	/* warm-up */
		raw_vm_create(&v, 1, 1);
		raw_vm_destroy(&v);
	}
	start_loop("start.bare", n, 0);
	start_loop("start.full", n, 1);
	close(kvm_dev);
}

static void usage(void)
{
	int i;

	fprintf(stderr, "usage: kvm_bench exit WORKLOAD ITERATIONS [WARMUP]\n"
			"       kvm_bench mem [TOTAL_VCPUS]\n"
			"       kvm_bench start ITERATIONS\nworkloads:");
	for (i = 0; i < W_NR; i++)
		fprintf(stderr, " %s", workload_names[i]);
	fprintf(stderr, "\n");
	exit(KSFT_FAIL);
}

int main(int argc, char **argv)
{
	setbuf(stdout, NULL);
	use_cycles = getenv("KVM_BENCH_UNIT") && !strcmp(getenv("KVM_BENCH_UNIT"), "cycles");
	if (getenv("KVM_BENCH_CHUNKS"))
		nr_chunks = strtoull(getenv("KVM_BENCH_CHUNKS"), NULL, 0);
	if (!nr_chunks)
		nr_chunks = 1;
	if (argc >= 4 && !strcmp(argv[1], "exit")) {
		uint64_t n = strtoull(argv[3], NULL, 0);
		uint64_t warm = argc >= 5 ? strtoull(argv[4], NULL, 0) : n / 10 + 1;
		int w;

		for (w = 0; w < W_NR; w++)
			if (!strcmp(argv[2], workload_names[w]))
				break;
		if (w == W_NR || n < nr_chunks)
			usage();
		if (w == W_HLT_IPI)
			bench_hlt_ipi(n, warm);
		else
			bench_exit(w, n, warm);
	} else if (argc >= 2 && !strcmp(argv[1], "mem")) {
		int total = argc >= 3 ? atoi(argv[2]) : 64;

		if (total < 1 || total > 64)
			usage();
		bench_mem(total);
	} else if (argc >= 3 && !strcmp(argv[1], "start")) {
		uint64_t n = strtoull(argv[2], NULL, 0);

		if (n < nr_chunks)
			usage();
		bench_start(n);
	} else {
		usage();
	}
	return 0;
}
