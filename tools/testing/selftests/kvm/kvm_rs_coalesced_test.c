// SPDX-License-Identifier: GPL-2.0
/*
 * Coalesced MMIO and PIO (KVM_CAP_COALESCED_MMIO, KVM_CAP_COALESCED_PIO):
 * zones set with KVM_REGISTER/UNREGISTER_COALESCED_MMIO, and the ring that
 * user space maps at page KVM_COALESCED_MMIO_PAGE_OFFSET of a vCPU fd.
 *
 * - Guest writes (MOV of 1, 2, 4, 8 bytes; OUT of 1, 2, 4) lying entirely in a
 *   zone are appended to the ring with their address, length, data and pio
 *   flag, without an exit; writes outside or straddling a zone's edge exit as
 *   usual, and so do reads inside a zone (MMIO load, IN). The ring is one
 *   page per VM: every vCPU's mapping shows it. STOS is coalesced; REP OUTS
 *   into a PIO zone is coalesced by the C KVM, passed to user space in an
 *   exit by kvm-rs: either way in order and complete.
 * - A full ring makes the write exit (KVM_EXIT_MMIO / KVM_EXIT_IO) instead of
 *   losing it; while user space does not drain, every further write exits;
 *   after draining, every write arrives exactly once and in order.
 * - Hostile user space: `first` or `last` set to garbage (the ring size or
 *   more) or moved backwards, before and while the guest writes. What the C
 *   KVM does (virt/kvm/coalesced_mmio.c, coalesced_mmio_write()): it reads
 *   `last` and `first` once per write; a `last` of the ring size or more, or
 *   `(last + 1) % size == first`, declines the write, which then exits to user
 *   space; otherwise the entry goes to slot `last`, and `last` becomes
 *   `(last + 1) % size`. So a garbage `first` means the ring never looks full
 *   and unread entries get overwritten, and a garbage `last` means every write
 *   exits. The test models that and requires exactly those exits, indices and
 *   slot contents, and no kernel bug report in the log.
 * - Unregistering removes every zone of the same kind containing the range
 *   (not a larger or merely overlapping range), after which writes exit.
 * - The number of zones: the C KVM allows 1000 devices per I/O bus (MMIO and
 *   PIO counted apart, in-kernel devices included); kvm-rs 1000 zones in all.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "kvm_util.h"
#include "processor.h"
#include "kselftest_harness.h"
#include "kvm_rs_util.h"
#include "kvm_rs_lib.h"

#define MMIO_GPA	0xc0000000ull	/* no memory slot; identity-mapped in the guest */
#define MMIO_ZONE	0x100		/* the MMIO zone: [MMIO_GPA, MMIO_GPA + 0x100) */
#define PORT		0x5a0		/* the PIO zone: [PORT, PORT + 8) */
#define PORT_ZONE	8
#define MMIO_TAG	0xabcd000000000000ull

#define MMIO(type, off)	(*(volatile type *)(MMIO_GPA + (off)))

static inline void out8(uint16_t port, uint8_t v)
{
	asm volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline void out16(uint16_t port, uint16_t v)
{
	asm volatile("outw %0, %1" : : "a"(v), "Nd"(port));
}

static inline void out32(uint16_t port, uint32_t v)
{
	asm volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint8_t in8(uint16_t port)
{
	uint8_t v;

	asm volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

/* ---- host helpers ---- */

static struct kvm_coalesced_mmio_ring *ring_of(struct kvm_vcpu *vcpu)
{
	return (void *)((char *)vcpu->run + KVM_COALESCED_MMIO_PAGE_OFFSET * getpagesize());
}

/* KVM_COALESCED_MMIO_MAX: entries in the one-page ring (170 with 4 KiB pages). */
static uint32_t ring_max(void)
{
	return (getpagesize() - sizeof(struct kvm_coalesced_mmio_ring)) /
	       sizeof(struct kvm_coalesced_mmio);
}

static uint32_t ring_used(struct kvm_coalesced_mmio_ring *ring)
{
	uint32_t first = READ_ONCE(ring->first), last = READ_ONCE(ring->last);

	TEST_ASSERT(first < ring_max() && last < ring_max(),
		    "ring indices out of range: first %u, last %u", first, last);
	return (last + ring_max() - first) % ring_max();
}

/* Takes the entry at `first`, as a VMM does; false if the ring is empty. */
static bool ring_pop(struct kvm_coalesced_mmio_ring *ring, struct kvm_coalesced_mmio *e)
{
	uint32_t first = READ_ONCE(ring->first);

	if (!ring_used(ring))
		return false;
	__atomic_thread_fence(__ATOMIC_ACQUIRE);	/* the entry after `last` */
	*e = ring->coalesced_mmio[first];
	WRITE_ONCE(ring->first, (first + 1) % ring_max());
	return true;
}

static void check_entry(const struct kvm_coalesced_mmio *e, uint64_t addr, uint32_t len,
			uint64_t data, bool pio, const char *what)
{
	uint64_t got = 0;

	memcpy(&got, e->data, len <= 8 ? len : 8);
	TEST_ASSERT(e->phys_addr == addr && e->len == len && e->pio == pio && got == data,
		    "%s: ring entry %s 0x%llx len %u data 0x%lx, expected %s 0x%lx len %u data 0x%lx",
		    what, e->pio ? "PIO" : "MMIO", e->phys_addr, e->len, got,
		    pio ? "PIO" : "MMIO", addr, len, data);
}

static void pop_expect(struct kvm_coalesced_mmio_ring *ring, uint64_t addr, uint32_t len,
		       uint64_t data, bool pio, const char *what)
{
	struct kvm_coalesced_mmio e;

	TEST_ASSERT(ring_pop(ring, &e), "%s: the ring is empty", what);
	check_entry(&e, addr, len, data, pio, what);
}

/* The exit must be an MMIO access; a read is answered with @data. */
static void expect_mmio(struct kvm_vcpu *vcpu, uint64_t addr, uint32_t len, bool write,
			uint64_t data, const char *what)
{
	struct kvm_run *run = vcpu->run;
	uint64_t got = 0;

	TEST_ASSERT(run->exit_reason == KVM_EXIT_MMIO,
		    "%s: exit %s, expected an MMIO %s", what, exit_reason_str(run->exit_reason),
		    write ? "write" : "read");
	TEST_ASSERT(run->mmio.phys_addr == addr && run->mmio.len == len &&
		    run->mmio.is_write == write,
		    "%s: MMIO %s 0x%llx len %u, expected %s 0x%lx len %u", what,
		    run->mmio.is_write ? "write" : "read", run->mmio.phys_addr, run->mmio.len,
		    write ? "write" : "read", addr, len);
	if (write) {
		memcpy(&got, run->mmio.data, len);
		TEST_ASSERT(got == data, "%s: MMIO write data 0x%lx, expected 0x%lx", what, got, data);
	} else {
		memcpy(run->mmio.data, &data, len);
	}
}

/* The exit must be a 1-element I/O access; an IN is answered with @data. */
static void expect_pio(struct kvm_vcpu *vcpu, uint16_t port, uint8_t size, bool out,
		       uint32_t data, const char *what)
{
	struct kvm_run *run = vcpu->run;
	uint8_t *p = (uint8_t *)run + run->io.data_offset;
	uint32_t got = 0;

	TEST_ASSERT(run->exit_reason == KVM_EXIT_IO,
		    "%s: exit %s, expected %s", what, exit_reason_str(run->exit_reason),
		    out ? "OUT" : "IN");
	TEST_ASSERT(run->io.port == port && run->io.size == size && run->io.count == 1 &&
		    run->io.direction == (out ? KVM_EXIT_IO_OUT : KVM_EXIT_IO_IN),
		    "%s: I/O dir %d port 0x%x size %d count %u, expected %s port 0x%x size %d",
		    what, run->io.direction, run->io.port, run->io.size, run->io.count,
		    out ? "OUT" : "IN", port, size);
	if (out) {
		memcpy(&got, p, size);
		TEST_ASSERT(got == data, "%s: OUT data 0x%x, expected 0x%x", what, got, data);
	} else {
		memcpy(p, &data, size);
	}
}

/* The exit must be the ucall GUEST_SYNC(@arg) (or GUEST_DONE if @arg < 0). */
static void expect_ucall(struct kvm_vcpu *vcpu, int64_t arg, const char *what)
{
	struct ucall uc;

	switch (get_ucall(vcpu, &uc)) {
	case UCALL_SYNC:
		TEST_ASSERT(arg >= 0 && uc.args[1] == (uint64_t)arg,
			    "%s: GUEST_SYNC(%lu), expected %ld", what, uc.args[1], arg);
		break;
	case UCALL_DONE:
		TEST_ASSERT(arg < 0, "%s: GUEST_DONE, expected GUEST_SYNC(%ld)", what, arg);
		break;
	case UCALL_ABORT:
		REPORT_GUEST_ASSERT(uc);
		break;
	default:
		TEST_FAIL("%s: unexpected exit %s (MMIO 0x%llx, port 0x%x)", what,
			  exit_reason_str(vcpu->run->exit_reason), vcpu->run->mmio.phys_addr,
			  vcpu->run->io.port);
	}
}

static int zone_ioctl(struct kvm_vm *vm, unsigned long cmd, uint64_t addr, uint32_t size, bool pio)
{
	struct kvm_coalesced_mmio_zone z = { .addr = addr, .size = size, .pio = pio };

	return ioctl(vm->fd, cmd, &z);
}

static void zones_register(struct kvm_vm *vm)
{
	kvm_vm_register_coalesced_io(vm, MMIO_GPA, MMIO_ZONE, false);
	kvm_vm_register_coalesced_io(vm, PORT, PORT_ZONE, true);
}

/* A VM with @n vCPUs running @guest, the MMIO page and its neighbours mapped. */
static struct kvm_vm *coalesced_vm(int n, struct kvm_vcpu **vcpus, void *guest)
{
	struct kvm_vm *vm;

	TEST_REQUIRE(kvm_check_cap(KVM_CAP_COALESCED_MMIO) == KVM_COALESCED_MMIO_PAGE_OFFSET);
	TEST_REQUIRE(kvm_has_cap(KVM_CAP_COALESCED_PIO));
	vm = vm_create_with_vcpus(n, guest, vcpus);
	virt_map(vm, MMIO_GPA - 0x1000, MMIO_GPA - 0x1000, 3);
	return vm;
}

static bool klog_clean(void)
{
	char line[512];

	if (kvm_rs_klog_has_bug(line, sizeof(line))) {
		printf("# kernel log: %s\n", line);
		return false;
	}
	return true;
}

/* ---- writes inside and outside the zones ---- */

static void guest_zones(void)
{
	uint32_t v32;
	uint8_t v8;

	/* Inside: coalesced. */
	MMIO(uint8_t, 0x00) = 0x11;
	MMIO(uint16_t, 0x10) = 0x2233;
	MMIO(uint32_t, 0x20) = 0x44556677;
	MMIO(uint64_t, 0x30) = 0x8899aabbccddeeffull;
	MMIO(uint64_t, MMIO_ZONE - 8) = 0x0123456789abcdefull;	/* ends at the zone's end */
	out8(PORT, 0x12);
	out16(PORT + 2, 0x3456);
	out32(PORT + PORT_ZONE - 4, 0x789abcde);
	GUEST_SYNC(1);
	/* Outside, or straddling an edge: exits. */
	MMIO(uint8_t, MMIO_ZONE) = 0x21;
	MMIO(uint64_t, MMIO_ZONE - 4) = 0x1122334455667788ull;
	MMIO(uint16_t, -2) = 0x4321;
	out8(PORT + PORT_ZONE, 0x31);
	out32(PORT + PORT_ZONE - 2, 0x41424344);
	out8(PORT - 1, 0x51);
	/* Reads inside a zone: exits. */
	v32 = MMIO(uint32_t, 0x20);
	GUEST_ASSERT_EQ(v32, 0xfeedface);
	v8 = in8(PORT + 1);
	GUEST_ASSERT_EQ(v8, 0x5c);
	/* And coalesced again. */
	MMIO(uint32_t, 0x40) = 0xcafef00d;
	out8(PORT + 7, 0x61);
	GUEST_SYNC(2);
	GUEST_DONE();
}

TEST(writes_in_zones_are_coalesced)
{
	struct kvm_coalesced_mmio_ring *ring;
	struct kvm_vcpu *vcpus[2], *vcpu;
	struct kvm_vm *vm = coalesced_vm(2, vcpus, guest_zones);
	struct {
		uint64_t addr;
		uint32_t len;
		bool write, pio;
		uint64_t data;
		const char *what;
	} exits[] = {
		{ MMIO_GPA + MMIO_ZONE, 1, true, false, 0x21, "1 byte just past the MMIO zone" },
		{ MMIO_GPA + MMIO_ZONE - 4, 8, true, false, 0x1122334455667788ull,
		  "8 bytes across the MMIO zone's end" },
		{ MMIO_GPA - 2, 2, true, false, 0x4321, "2 bytes just below the MMIO zone" },
		{ PORT + PORT_ZONE, 1, true, true, 0x31, "OUT just past the PIO zone" },
		{ PORT + PORT_ZONE - 2, 4, true, true, 0x41424344, "OUT across the PIO zone's end" },
		{ PORT - 1, 1, true, true, 0x51, "OUT just below the PIO zone" },
		{ MMIO_GPA + 0x20, 4, false, false, 0xfeedface, "MMIO read inside the zone" },
		{ PORT + 1, 1, false, true, 0x5c, "IN inside the PIO zone" },
	};
	unsigned int i;

	vcpu = vcpus[0];
	ring = ring_of(vcpu);
	zones_register(vm);
	ASSERT_EQ(0, ring->first);
	ASSERT_EQ(0, ring->last);

	vcpu_run(vcpu);
	expect_ucall(vcpu, 1, "after the writes inside the zones");
	ASSERT_EQ(8, ring_used(ring));
	/* One ring per VM: vCPU 1's mapping (never run) shows the same page. */
	ASSERT_EQ(0, memcmp(ring, ring_of(vcpus[1]), getpagesize()));
	pop_expect(ring, MMIO_GPA, 1, 0x11, false, "MOV byte");
	pop_expect(ring, MMIO_GPA + 0x10, 2, 0x2233, false, "MOV word");
	pop_expect(ring, MMIO_GPA + 0x20, 4, 0x44556677, false, "MOV dword");
	pop_expect(ring, MMIO_GPA + 0x30, 8, 0x8899aabbccddeeffull, false, "MOV qword");
	pop_expect(ring, MMIO_GPA + MMIO_ZONE - 8, 8, 0x0123456789abcdefull, false,
		   "MOV qword at the zone's end");
	pop_expect(ring, PORT, 1, 0x12, true, "OUT byte");
	pop_expect(ring, PORT + 2, 2, 0x3456, true, "OUT word");
	pop_expect(ring, PORT + PORT_ZONE - 4, 4, 0x789abcde, true, "OUT dword at the zone's end");
	ASSERT_EQ(ring->first, ring_of(vcpus[1])->first);

	for (i = 0; i < ARRAY_SIZE(exits); i++) {
		vcpu_run(vcpu);
		if (exits[i].pio)
			expect_pio(vcpu, exits[i].addr, exits[i].len, exits[i].write, exits[i].data,
				   exits[i].what);
		else
			expect_mmio(vcpu, exits[i].addr, exits[i].len, exits[i].write,
				    exits[i].data, exits[i].what);
		EXPECT_EQ(0, ring_used(ring)) TH_LOG("%s went to the ring", exits[i].what);
	}
	vcpu_run(vcpu);
	expect_ucall(vcpu, 2, "after the second writes inside the zones");
	ASSERT_EQ(2, ring_used(ring));
	pop_expect(ring, MMIO_GPA + 0x40, 4, 0xcafef00d, false, "MOV dword after the exits");
	pop_expect(ring, PORT + 7, 1, 0x61, true, "OUT byte after the exits");
	vcpu_run(vcpu);
	expect_ucall(vcpu, -1, "end");
	kvm_vm_free(vm);
}

/* ---- string instructions ---- */

static void guest_strings(void)
{
	static const uint8_t bytes[3] = { 0x21, 0x22, 0x23 };
	uint64_t rsi = (uint64_t)bytes, rcx = 3, rdi = MMIO_GPA + 0x50;

	out8(PORT, 0x10);
	asm volatile("rep outsb" : "+S"(rsi), "+c"(rcx) : "d"(PORT + 1) : "memory");
	out8(PORT + 2, 0x30);
	/* STOS without REP: a MOV-like store, coalesced by both KVMs. */
	asm volatile("stosl" : "+D"(rdi) : "a"(0x44434241) : "memory");
	GUEST_ASSERT_EQ(rdi, MMIO_GPA + 0x54);
	GUEST_SYNC(1);
	GUEST_DONE();
}

/*
 * REP OUTSB into a PIO zone: the C KVM's emulator writes the elements one by
 * one through the PIO bus, so they are coalesced; kvm-rs hands string I/O to
 * user space in one exit (api.rst: "a guest MMIO write or OUT" is coalesced).
 * Either way nothing may be lost or reordered: the ring holds what came
 * before the exit, the exit the string, the ring again what came after.
 */
TEST(string_writes)
{
	struct kvm_coalesced_mmio_ring *ring;
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm = coalesced_vm(1, &vcpu, guest_strings);
	struct kvm_run *run = vcpu->run;
	uint32_t outs_exits = 0, done = 0, i;

	ring = ring_of(vcpu);
	zones_register(vm);
	for (;;) {
		vcpu_run(vcpu);
		if (run->exit_reason != KVM_EXIT_IO || run->io.port != PORT + 1)
			break;
		/* Only the first OUT came before. */
		ASSERT_EQ(done ? 0 : 1, ring_used(ring));
		if (!done)
			pop_expect(ring, PORT, 1, 0x10, true, "OUT before the OUTS");
		ASSERT_TRUE(run->io.direction == KVM_EXIT_IO_OUT && run->io.size == 1 &&
			    done + run->io.count <= 3);
		for (i = 0; i < run->io.count; i++)
			ASSERT_EQ(0x21 + done + i, ((uint8_t *)run + run->io.data_offset)[i]);
		done += run->io.count;
		outs_exits++;
	}
	expect_ucall(vcpu, 1, "after the string writes");
	if (!outs_exits) {
		pop_expect(ring, PORT, 1, 0x10, true, "OUT before the OUTS");
		for (i = 0; i < 3; i++)
			pop_expect(ring, PORT + 1, 1, 0x21 + i, true, "OUTS element");
	} else {
		ASSERT_EQ(3, done);
	}
	pop_expect(ring, PORT + 2, 1, 0x30, true, "OUT after the OUTS");
	pop_expect(ring, MMIO_GPA + 0x50, 4, 0x44434241, false, "STOS");
	ASSERT_EQ(0, ring_used(ring));
	pr_info("%s: REP OUTSB into a PIO zone: %s\n", kvm_rs_kvm_name(),
		outs_exits ? "exits to user space" : "coalesced");
	vcpu_run(vcpu);
	expect_ucall(vcpu, -1, "end");
	kvm_vm_free(vm);
}

/* ---- a full ring ---- */

#define FULL_WRITES	400

/* Write @i of guest_ring_full(): every third one an OUT, the others MOVs. */
static void full_write(uint32_t i, uint64_t *addr, uint32_t *len, uint64_t *data, bool *pio)
{
	*pio = i % 3 == 2;
	*addr = *pio ? PORT + 4 : MMIO_GPA + 8 * (i % 16);
	*len = *pio ? 4 : 8;
	*data = *pio ? i : MMIO_TAG | i;
}

static void guest_ring_full(void)
{
	uint32_t i;

	for (i = 0; i < FULL_WRITES; i++) {
		if (i % 3 == 2)
			out32(PORT + 4, i);
		else
			MMIO(uint64_t, 8 * (i % 16)) = MMIO_TAG | i;
	}
	GUEST_SYNC(0);
	GUEST_DONE();
}

TEST(full_ring_exits_and_loses_nothing)
{
	struct kvm_coalesced_mmio_ring *ring;
	uint32_t next = 0, exits = 0, held[2], nheld = 0, first0 = 0, last0 = 0, k;
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm = coalesced_vm(1, &vcpu, guest_ring_full);
	struct kvm_coalesced_mmio e;
	struct kvm_run *run = vcpu->run;
	struct ucall uc;

	ring = ring_of(vcpu);
	zones_register(vm);
	for (;;) {
		uint64_t addr, data;
		uint32_t len, seq;
		bool pio;

		vcpu_run(vcpu);
		if (run->exit_reason == KVM_EXIT_MMIO) {
			uint64_t v = 0;

			memcpy(&v, run->mmio.data, 8);
			seq = (uint32_t)v;
		} else if (run->exit_reason == KVM_EXIT_IO && run->io.port == PORT + 4) {
			seq = *(uint32_t *)((uint8_t *)run + run->io.data_offset);
		} else {
			ASSERT_EQ(UCALL_SYNC, get_ucall(vcpu, &uc));
			break;
		}
		ASSERT_LT(seq, FULL_WRITES);
		full_write(seq, &addr, &len, &data, &pio);
		if (pio)
			expect_pio(vcpu, addr, len, true, data, "write exit");
		else
			expect_mmio(vcpu, addr, len, true, data, "write exit");
		exits++;
		/* A write inside a zone exits only when the ring is full. */
		ASSERT_EQ(ring_max() - 1, ring_used(ring))
			TH_LOG("write %u exited with the ring not full (first %u, last %u)",
			       seq, ring->first, ring->last);
		held[nheld++] = seq;
		if (exits == 1) {
			/* Not drained: the next write must exit too, the ring untouched. */
			first0 = ring->first;
			last0 = ring->last;
			continue;
		}
		if (exits == 2) {
			ASSERT_EQ(first0, ring->first);
			ASSERT_EQ(last0, ring->last);
		}
		/* Drain as a VMM must: the ring first, then the write that exited. */
		while (ring_pop(ring, &e)) {
			full_write(next, &addr, &len, &data, &pio);
			check_entry(&e, addr, len, data, pio, "drained entry");
			next++;
		}
		for (k = 0; k < nheld; k++)
			ASSERT_EQ(next++, held[k]) TH_LOG("write %u out of order", held[k]);
		nheld = 0;
	}
	while (ring_pop(ring, &e)) {
		uint64_t addr, data;
		uint32_t len;
		bool pio;

		full_write(next, &addr, &len, &data, &pio);
		check_entry(&e, addr, len, data, pio, "entry drained at the end");
		next++;
	}
	EXPECT_EQ(FULL_WRITES, next);
	EXPECT_EQ(0, nheld);
	EXPECT_GE(exits, 2);
	pr_info("%d writes, ring of %u entries: %u exits\n", FULL_WRITES, ring_max(), exits);
	vcpu_run(vcpu);
	expect_ucall(vcpu, -1, "end");
	kvm_vm_free(vm);
}

/* ---- hostile ring indices ---- */

#define HOSTILE_WRITES	200

static void guest_hostile(void)
{
	uint32_t round, i;

	for (round = 0;; round++) {
		GUEST_SYNC(round);
		for (i = 0; i < HOSTILE_WRITES; i++)
			MMIO(uint64_t, 0) = ((uint64_t)round << 32) | i;
	}
}

#define CANARY 0xa5a5a5a5a5a5a5a5ull

/*
 * One round of HOSTILE_WRITES writes with the ring's indices set to @first and
 * @last and nobody draining. The expectation is the C algorithm (see the top
 * of the file) run on the same indices: which writes exit, the final `last`,
 * which write each slot holds (slots never written keep a canary), `first`
 * never written by KVM.
 */
static void hostile_round(struct kvm_vcpu *vcpu, uint32_t round, uint32_t first, uint32_t last,
			  const char *what)
{
	struct kvm_coalesced_mmio_ring *ring = ring_of(vcpu);
	uint32_t max = ring_max(), i, s, m_last = last, nexits = 0, got_exits = 0;
	int64_t slot[256];
	bool exits[HOSTILE_WRITES];

	TEST_ASSERT(max <= 256, "ring of %u entries", max);
	for (s = 0; s < max; s++) {
		slot[s] = -1;
		memcpy(ring->coalesced_mmio[s].data, &(uint64_t){ CANARY }, 8);
	}
	for (i = 0; i < HOSTILE_WRITES; i++) {
		exits[i] = m_last >= max || (m_last + 1) % max == first;
		if (exits[i]) {
			nexits++;
			continue;
		}
		slot[m_last] = i;
		m_last = (m_last + 1) % max;
	}

	WRITE_ONCE(ring->first, first);
	WRITE_ONCE(ring->last, last);
	for (i = 0;;) {
		vcpu_run(vcpu);
		if (vcpu->run->exit_reason != KVM_EXIT_MMIO)
			break;
		TEST_ASSERT(vcpu->run->mmio.is_write && vcpu->run->mmio.phys_addr == MMIO_GPA &&
			    vcpu->run->mmio.len == 8,
			    "%s: MMIO exit %s 0x%llx len %u", what,
			    vcpu->run->mmio.is_write ? "write" : "read",
			    vcpu->run->mmio.phys_addr, vcpu->run->mmio.len);
		uint64_t v;

		memcpy(&v, vcpu->run->mmio.data, 8);
		TEST_ASSERT(v >> 32 == round && (uint32_t)v < HOSTILE_WRITES,
			    "%s: exit for write 0x%lx in round %u", what, v, round);
		/* The writes that should have gone to the ring come before it. */
		while (i < (uint32_t)v) {
			TEST_ASSERT(!exits[i], "%s: write %u did not exit (C: first %u, last %u)",
				    what, i, first, last);
			i++;
		}
		TEST_ASSERT(exits[i], "%s: write %u exited; C coalesces it (first %u, last %u)",
			    what, i, first, last);
		i++;
		got_exits++;
	}
	expect_ucall(vcpu, round + 1, what);
	TEST_ASSERT(got_exits == nexits, "%s: %u writes exited, C: %u (first %u, last %u)",
		    what, got_exits, nexits, first, last);
	TEST_ASSERT(ring->first == first, "%s: `first` changed from %u to %u", what, first,
		    ring->first);
	TEST_ASSERT(ring->last == m_last, "%s: `last` is %u, C: %u", what, ring->last, m_last);
	for (s = 0; s < max; s++) {
		struct kvm_coalesced_mmio *e = &ring->coalesced_mmio[s];
		uint64_t v;

		memcpy(&v, e->data, 8);
		if (slot[s] < 0)
			TEST_ASSERT(v == CANARY, "%s: slot %u written (0x%lx), C leaves it",
				    what, s, v);
		else
			TEST_ASSERT(e->phys_addr == MMIO_GPA && e->len == 8 && !e->pio &&
				    v == (((uint64_t)round << 32) | slot[s]),
				    "%s: slot %u holds 0x%llx len %u data 0x%lx, C: write %ld",
				    what, s, e->phys_addr, e->len, v, slot[s]);
	}
	pr_info("%-44s first %10u last %10u: %3u exits, last -> %u\n", what, first, last,
		got_exits, m_last);
}

struct scribbler {
	struct kvm_coalesced_mmio_ring *ring;
	atomic_int stop;
	unsigned long writes;
};

/* Sets `first` and `last` to assorted values, valid and not, as fast as it can. */
static void *scribble(void *arg)
{
	static const uint32_t vals[] = { 0, 1, 84, 168, 169, 170, 171, 1000, 0x80000000u,
					 0xfffffffeu, 0xffffffffu };
	struct scribbler *s = arg;
	uint32_t x = 12345;

	while (!atomic_load(&s->stop)) {
		x = x * 1103515245 + 12345;
		WRITE_ONCE(s->ring->first, vals[(x >> 8) % ARRAY_SIZE(vals)]);
		x = x * 1103515245 + 12345;
		WRITE_ONCE(s->ring->last, x & 0x100 ? vals[(x >> 9) % ARRAY_SIZE(vals)] : x >> 16);
		s->writes++;
	}
	return NULL;
}

TEST(hostile_ring_indices)
{
	struct kvm_coalesced_mmio_ring *ring;
	struct scribbler sc = {};
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm = coalesced_vm(1, &vcpu, guest_hostile);
	uint32_t max = ring_max(), round = 0, r, exits;
	pthread_t t;

	ring = ring_of(vcpu);
	kvm_vm_register_coalesced_io(vm, MMIO_GPA, 8, false);
	vcpu_run(vcpu);
	expect_ucall(vcpu, 0, "start");

	/* Garbage `first`: the ring never looks full, unread entries are overwritten. */
	hostile_round(vcpu, round++, 0xdeadbeef, 0, "first 0xdeadbeef");
	hostile_round(vcpu, round++, max, max - 1, "first = ring size");
	hostile_round(vcpu, round++, 0xffffffff, 5, "first 0xffffffff");
	/* Garbage `last`: every write exits, nothing is written. */
	hostile_round(vcpu, round++, 0, 0xffffffff, "last 0xffffffff");
	hostile_round(vcpu, round++, 3, max, "last = ring size");
	hostile_round(vcpu, round++, 0x80000000u, 0x80000000u, "first = last = 2^31");
	/* `first` moved back by 5 behind an empty ring: 5 entries look unread. */
	hostile_round(vcpu, round++, 5, 10, "first moved back by 5");
	/* `first` just past `last`: the ring looks full from the start. */
	hostile_round(vcpu, round++, 21, 20, "first = last + 1 (full)");
	hostile_round(vcpu, round++, 0, max - 1, "first 0, last = size - 1 (full)");
	/* And a sane ring still works afterwards. */
	hostile_round(vcpu, round++, 7, 7, "sane again");

	/* Indices changing under KVM's feet while the guest writes. */
	sc.ring = ring;
	ASSERT_EQ(0, pthread_create(&t, NULL, scribble, &sc));
	for (r = 0; r < 5; r++, round++) {
		uint32_t last_i = 0;

		exits = 0;
		for (;;) {
			struct kvm_run *run = vcpu->run;
			uint64_t v;

			vcpu_run(vcpu);
			if (run->exit_reason != KVM_EXIT_MMIO)
				break;
			ASSERT_TRUE(run->mmio.is_write && run->mmio.phys_addr == MMIO_GPA &&
				    run->mmio.len == 8);
			memcpy(&v, run->mmio.data, 8);
			ASSERT_EQ(round, v >> 32);
			/* Each write exits at most once, in order. */
			ASSERT_TRUE(exits == 0 || (uint32_t)v > last_i)
				TH_LOG("write %u exited after write %u", (uint32_t)v, last_i);
			last_i = (uint32_t)v;
			exits++;
		}
		expect_ucall(vcpu, round + 1, "scribbled ring");
		pr_info("indices scribbled: %u of %d writes exited\n", exits, HOSTILE_WRITES);
	}
	atomic_store(&sc.stop, 1);
	pthread_join(t, NULL);
	pr_info("%lu index writes by the scribbler\n", sc.writes);

	hostile_round(vcpu, round++, 0, 0, "sane after the scribbling");
	kvm_vm_free(vm);
	EXPECT_TRUE(klog_clean());
}

/* ---- unregistering ---- */

static void guest_unregister(void)
{
	uint32_t k;

	for (k = 1;; k++) {
		MMIO(uint32_t, 0x10) = k;
		out8(PORT + 1, k);
		GUEST_SYNC(k);
	}
}

/*
 * Runs guest_unregister() to its next GUEST_SYNC(@k): its MMIO and PIO write
 * must be coalesced (@mmio_c, @pio_c) or exit.
 */
static void step(struct kvm_vcpu *vcpu, uint32_t k, bool mmio_c, bool pio_c, const char *what)
{
	struct kvm_coalesced_mmio_ring *ring = ring_of(vcpu);
	char w[128];

	snprintf(w, sizeof(w), "%s: MMIO write", what);
	if (!mmio_c) {
		vcpu_run(vcpu);
		expect_mmio(vcpu, MMIO_GPA + 0x10, 4, true, k, w);
	}
	snprintf(w, sizeof(w), "%s: OUT", what);
	if (!pio_c) {
		vcpu_run(vcpu);
		expect_pio(vcpu, PORT + 1, 1, true, k & 0xff, w);
	}
	vcpu_run(vcpu);
	expect_ucall(vcpu, k, what);
	TEST_ASSERT(ring_used(ring) == (uint32_t)mmio_c + pio_c,
		    "%s: %u ring entries, expected %u", what, ring_used(ring), mmio_c + pio_c);
	if (mmio_c)
		pop_expect(ring, MMIO_GPA + 0x10, 4, k, false, what);
	if (pio_c)
		pop_expect(ring, PORT + 1, 1, k & 0xff, true, what);
}

TEST(unregister_stops_coalescing)
{
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm = coalesced_vm(1, &vcpu, guest_unregister);
	uint32_t k = 1;

	zones_register(vm);
	step(vcpu, k++, true, true, "both zones");
	/* A range larger than the zone, or only overlapping it, removes nothing. */
	ASSERT_EQ(0, zone_ioctl(vm, KVM_UNREGISTER_COALESCED_MMIO, MMIO_GPA, 2 * MMIO_ZONE, false));
	ASSERT_EQ(0, zone_ioctl(vm, KVM_UNREGISTER_COALESCED_MMIO, MMIO_GPA + 0x80, MMIO_ZONE, false));
	ASSERT_EQ(0, zone_ioctl(vm, KVM_UNREGISTER_COALESCED_MMIO, PORT - 1, 2, true));
	/* The other kind at the same numbers removes nothing either. */
	ASSERT_EQ(0, zone_ioctl(vm, KVM_UNREGISTER_COALESCED_MMIO, PORT, PORT_ZONE, false));
	ASSERT_EQ(0, zone_ioctl(vm, KVM_REGISTER_COALESCED_MMIO, MMIO_GPA + 0x10, 4, true));
	ASSERT_EQ(0, zone_ioctl(vm, KVM_UNREGISTER_COALESCED_MMIO, MMIO_GPA + 0x10, 4, true));
	step(vcpu, k++, true, true, "after unregistering larger and other-kind ranges");
	/* A range inside the zone removes it. */
	ASSERT_EQ(0, zone_ioctl(vm, KVM_UNREGISTER_COALESCED_MMIO, MMIO_GPA + 0x10, 4, false));
	step(vcpu, k++, false, true, "MMIO zone unregistered");
	ASSERT_EQ(0, zone_ioctl(vm, KVM_UNREGISTER_COALESCED_MMIO, PORT, PORT_ZONE, true));
	step(vcpu, k++, false, false, "both zones unregistered");
	/* Unregistering what is not there succeeds. */
	ASSERT_EQ(0, zone_ioctl(vm, KVM_UNREGISTER_COALESCED_MMIO, PORT, PORT_ZONE, true));
	/* Registered again: coalesced again. Twice the same zone: one range removes both. */
	zones_register(vm);
	kvm_vm_register_coalesced_io(vm, MMIO_GPA, MMIO_ZONE, false);
	step(vcpu, k++, true, true, "zones registered again");
	ASSERT_EQ(0, zone_ioctl(vm, KVM_UNREGISTER_COALESCED_MMIO, MMIO_GPA + 0x10, 1, false));
	step(vcpu, k++, false, true, "duplicate MMIO zones unregistered by one range");
	/* A zero-sized range at a zone's end still falls in it. */
	ASSERT_EQ(0, zone_ioctl(vm, KVM_UNREGISTER_COALESCED_MMIO, PORT + PORT_ZONE, 0, true));
	step(vcpu, k++, false, false, "PIO zone unregistered by an empty range at its end");
	kvm_vm_free(vm);
}

/* ---- how many zones ---- */

/* Registers 1-page MMIO or 1-port PIO zones until one fails; returns how many. */
static int fill_zones(struct kvm_vm *vm, bool pio, uint64_t base, int limit, int *err)
{
	int n;

	*err = 0;
	for (n = 0; n < limit; n++) {
		if (zone_ioctl(vm, KVM_REGISTER_COALESCED_MMIO, pio ? base + n : base + n * 0x1000ull,
			       pio ? 1 : 0x1000, pio)) {
			*err = errno;
			break;
		}
	}
	return n;
}

TEST(zone_limit)
{
	struct kvm_vm *vm;
	int n_mmio, n_pio, n, err_mmio, err_pio, err;

	TEST_REQUIRE(kvm_has_cap(KVM_CAP_COALESCED_PIO));
	/* No irqchip: nothing else on either bus. */
	vm = vm_create_barebones();
	n_mmio = fill_zones(vm, false, 0x100000000ull, 2500, &err_mmio);
	n_pio = fill_zones(vm, true, 0x2000, 2500, &err_pio);
	pr_info("%s: %d MMIO zones (then errno %d), then %d PIO zones (then errno %d)\n",
		kvm_rs_kvm_name(), n_mmio, err_mmio, n_pio, err_pio);
	EXPECT_EQ(1000, n_mmio);
	EXPECT_EQ(ENOSPC, err_mmio);
	EXPECT_EQ(ENOSPC, err_pio);
	if (kvm_rs_is_c_kvm()) {
		/* C: 1000 devices per I/O bus, the MMIO and PIO buses counted apart. */
		EXPECT_EQ(1000, n_pio);
	} else {
		/*
		 * kvm-rs (deliberately, Documentation/virt/kvm-rs/api.rst): 1000
		 * zones per VM, MMIO and PIO together.
		 */
		EXPECT_EQ(0, n_pio);
		/* One zone unregistered: room for one more, of either kind. */
		ASSERT_EQ(0, zone_ioctl(vm, KVM_UNREGISTER_COALESCED_MMIO, 0x100000000ull, 0x1000,
					false));
		n = fill_zones(vm, true, 0x2000, 10, &err);
		EXPECT_EQ(1, n);
		EXPECT_EQ(ENOSPC, err);
	}
	/* Everything unregistered: all the room is back. */
	for (n = 0; n < n_mmio; n++)
		ASSERT_EQ(0, zone_ioctl(vm, KVM_UNREGISTER_COALESCED_MMIO,
					0x100000000ull + n * 0x1000ull, 0x1000, false));
	for (n = 0; n < 1000; n++)
		ASSERT_EQ(0, zone_ioctl(vm, KVM_UNREGISTER_COALESCED_MMIO, 0x2000 + n, 1, true));
	n = fill_zones(vm, false, 0x100000000ull, 2500, &err);
	EXPECT_EQ(1000, n);
	EXPECT_EQ(ENOSPC, err);
	kvm_vm_free(vm);

	/* For the record: with an irqchip, C's in-kernel devices share the buses. */
	vm = vm_create_barebones();
	vm_create_irqchip(vm);
	n_mmio = fill_zones(vm, false, 0x100000000ull, 2500, &err_mmio);
	n_pio = fill_zones(vm, true, 0x2000, 2500, &err_pio);
	pr_info("with KVM_CREATE_IRQCHIP: %d MMIO zones (errno %d), %d PIO zones (errno %d)\n",
		n_mmio, err_mmio, n_pio, err_pio);
	kvm_vm_free(vm);
}

TEST_HARNESS_MAIN
