// SPDX-License-Identifier: GPL-2.0
/*
 * Port I/O data, byte for byte, in both directions: 1-, 2- and 4-byte IN and
 * OUT (immediate-port and DX forms), and the string forms INS/OUTS with and
 * without REP, with DF clear and set, across a page boundary.
 *
 * What the guest sends is a known byte stream (out_byte(k)); the host checks
 * every byte it finds in the kvm_run data area. What the host sends is another
 * stream (in_byte(k)); the guest checks the registers it lands in (including
 * the bits an 8- or 16-bit IN must leave alone and the zero-extension of a
 * 32-bit one) and, for INS, the memory it lands in, the bytes around it, and
 * RCX/RSI/RDI afterwards. KVM may split a REP string instruction into several
 * exits (the C KVM makes one exit per element for OUTS, and reads ahead up to
 * a page or 1024 bytes for INS); the host accepts any split, but checks that
 * the exits add up to exactly the instruction's count.
 */
#include <stdint.h>
#include <string.h>

#include "kvm_util.h"
#include "processor.h"
#include "kvm_test_harness.h"

#define PORT_IMM	0x5a	/* an 8-bit port, for the immediate forms */
#define PORT_DX		0x1234	/* a 16-bit one, for the DX forms */
#define UCALL_PORT	0x1000	/* the selftest library's ucall port */

/* The stream the guest writes and the one the host answers with. */
static inline uint8_t out_byte(uint64_t k)
{
	return (uint8_t)(k * 29 + 0x31);
}

static inline uint8_t in_byte(uint64_t k)
{
	return (uint8_t)(k * 37 + 0x5b);
}

/* ---- guest side ---- */

static uint64_t g_out_k, g_in_k;

/* The next n bytes of the stream the host sends, little-endian. */
static uint64_t next_in(int n)
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < n; i++)
		v |= (uint64_t)in_byte(g_in_k + i) << (8 * i);
	g_in_k += n;
	return v;
}

static uint64_t next_out(int n)
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < n; i++)
		v |= (uint64_t)out_byte(g_out_k + i) << (8 * i);
	g_out_k += n;
	return v;
}

#define RAX_FILL 0x0123456789abcdefull

static void guest_out(void)
{
	uint64_t v;

	v = next_out(1);
	asm volatile("outb %%al, %[p]" : : "a"(v), [p] "i"(PORT_IMM));
	v = next_out(2);
	asm volatile("outw %%ax, %[p]" : : "a"(v), [p] "i"(PORT_IMM));
	v = next_out(4);
	asm volatile("outl %%eax, %[p]" : : "a"(v), [p] "i"(PORT_IMM));
	/* The upper bits of RAX must not leak into the data. */
	v = next_out(1) | (RAX_FILL & ~0xffull);
	asm volatile("outb %%al, %%dx" : : "a"(v), "d"(PORT_DX));
	v = next_out(2) | (RAX_FILL & ~0xffffull);
	asm volatile("outw %%ax, %%dx" : : "a"(v), "d"(PORT_DX));
	v = next_out(4) | (RAX_FILL & ~0xffffffffull);
	asm volatile("outl %%eax, %%dx" : : "a"(v), "d"(PORT_DX));
	GUEST_DONE();
}

static void guest_in(void)
{
	uint64_t rax, rdx, want;

	/* IN AL and IN AX keep the rest of RAX; IN EAX zero-extends into RAX. */
	rax = RAX_FILL;
	want = (RAX_FILL & ~0xffull) | next_in(1);
	asm volatile("inb %[p], %%al" : "+a"(rax) : [p] "i"(PORT_IMM));
	GUEST_ASSERT_EQ(rax, want);
	rax = RAX_FILL;
	want = (RAX_FILL & ~0xffffull) | next_in(2);
	asm volatile("inw %[p], %%ax" : "+a"(rax) : [p] "i"(PORT_IMM));
	GUEST_ASSERT_EQ(rax, want);
	rax = RAX_FILL;
	want = next_in(4);
	asm volatile("inl %[p], %%eax" : "+a"(rax) : [p] "i"(PORT_IMM));
	GUEST_ASSERT_EQ(rax, want);

	rax = RAX_FILL;
	rdx = PORT_DX | 0xffff0000ull;	/* only DX names the port */
	want = (RAX_FILL & ~0xffull) | next_in(1);
	asm volatile("inb %%dx, %%al" : "+a"(rax) : "d"(rdx));
	GUEST_ASSERT_EQ(rax, want);
	rax = RAX_FILL;
	want = (RAX_FILL & ~0xffffull) | next_in(2);
	asm volatile("inw %%dx, %%ax" : "+a"(rax) : "d"(rdx));
	GUEST_ASSERT_EQ(rax, want);
	rax = RAX_FILL;
	want = next_in(4);
	asm volatile("inl %%dx, %%eax" : "+a"(rax) : "d"(rdx));
	GUEST_ASSERT_EQ(rax, want);
	GUEST_DONE();
}

/* Three pages, so that a string can straddle a page boundary. */
static uint8_t g_buf[3 * 4096] __attribute__((aligned(4096)));

#define GUARD 0xcc

/*
 * One string instruction: @size-byte elements, @count of them (with REP; a
 * count of 0 without REP means the plain one-element form), the buffer at
 * g_buf + @off, with DF set if @down.
 */
static void guest_string(bool in, int size, uint64_t count, bool rep, bool down, uint64_t off)
{
	uint64_t n = rep ? count : 1, bytes = n * size, i, j, e;
	/* The lowest address the string touches, and where the index register starts. */
	uint8_t *lo = g_buf + off;
	uint64_t start = (uint64_t)(down ? lo + bytes - size : lo);
	uint64_t idx = start, rcx = count;

	GUEST_ASSERT(off >= 16 && off + bytes + 16 <= sizeof(g_buf));
	memset(g_buf, GUARD, sizeof(g_buf));
	if (!in) {
		/* Element e is sent at position (down ? n-1-e : e). */
		for (e = 0; e < n; e++)
			for (j = 0; j < size; j++)
				lo[e * size + j] = out_byte(g_out_k + (down ? n - 1 - e : e) * size + j);
		g_out_k += bytes;
	}

#define STR(insn, reg)								\
	do {									\
		if (rep && down)						\
			asm volatile("std\n\trep " insn "\n\tcld"			\
				     : "+" reg(idx), "+c"(rcx) : "d"(PORT_DX) : "memory"); \
		else if (rep)							\
			asm volatile("rep " insn				\
				     : "+" reg(idx), "+c"(rcx) : "d"(PORT_DX) : "memory"); \
		else if (down)							\
			asm volatile("std\n\t" insn "\n\tcld"			\
				     : "+" reg(idx) : "d"(PORT_DX) : "memory");	\
		else								\
			asm volatile(insn : "+" reg(idx) : "d"(PORT_DX) : "memory"); \
	} while (0)
	switch ((in ? 10 : 0) + size) {
	case 1:  STR("outsb", "S"); break;
	case 2:  STR("outsw", "S"); break;
	case 4:  STR("outsl", "S"); break;
	case 11: STR("insb", "D"); break;
	case 12: STR("insw", "D"); break;
	case 14: STR("insl", "D"); break;
	}
#undef STR

	/* The index moved by the whole string, in the direction of DF. */
	GUEST_ASSERT_EQ(idx, down ? start - bytes : start + bytes);
	if (rep)
		GUEST_ASSERT_EQ(rcx, 0);
	if (in) {
		for (e = 0; e < n; e++)
			for (j = 0; j < size; j++)
				GUEST_ASSERT_EQ(lo[e * size + j],
						in_byte(g_in_k + (down ? n - 1 - e : e) * size + j));
		g_in_k += bytes;
	}
	/* Nothing around the string was touched. */
	for (i = 0; i < off; i++)
		GUEST_ASSERT_EQ(g_buf[i], GUARD);
	for (i = off + bytes; i < sizeof(g_buf); i++)
		GUEST_ASSERT_EQ(g_buf[i], GUARD);
}

/* The same list of string instructions is run for OUTS and for INS. */
#define STRING_CASES(in)						\
	do {								\
		int s;							\
		for (s = 1; s <= 4; s *= 2) {				\
			guest_string(in, s, 0, false, false, 64);	\
			guest_string(in, s, 0, false, true, 64);	\
			guest_string(in, s, 1, true, false, 64);	\
			guest_string(in, s, 1, true, true, 64);		\
			guest_string(in, s, 7, true, false, 64);	\
			guest_string(in, s, 7, true, true, 4096 - 5);	\
			/* 1500 bytes across the first page boundary */	\
			guest_string(in, s, 1500 / s, true, false, 4096 - 700); \
			guest_string(in, s, 1500 / s, true, true, 4096 - 700); \
			/* 6000 bytes: more than the one-page data area */ \
			guest_string(in, s, 6000 / s, true, false, 100); \
			guest_string(in, s, 6000 / s, true, true, 4096 + 100); \
		}							\
	} while (0)

static void guest_outs(void)
{
	STRING_CASES(false);
	GUEST_DONE();
}

static void guest_ins(void)
{
	STRING_CASES(true);
	GUEST_DONE();
}

static void guest_rep_zero(void)
{
	uint64_t rsi = (uint64_t)g_buf, rdi = (uint64_t)g_buf, rcx = 0;

	/* REP with RCX = 0 does nothing: no exit, no index change. */
	asm volatile("rep outsb" : "+S"(rsi), "+c"(rcx) : "d"(PORT_DX) : "memory");
	asm volatile("rep insb" : "+D"(rdi), "+c"(rcx) : "d"(PORT_DX) : "memory");
	GUEST_ASSERT_EQ(rsi, (uint64_t)g_buf);
	GUEST_ASSERT_EQ(rdi, (uint64_t)g_buf);
	GUEST_DONE();
}

/* ---- host side ---- */

/* One I/O instruction as user space must see it: possibly over several exits. */
struct pio_op {
	uint8_t dir;
	uint16_t port;
	uint8_t size;
	uint32_t count;
};

static void run_pio(struct kvm_vcpu *vcpu, const struct pio_op *ops, int nops)
{
	uint64_t out_k = 0, in_k = 0, exits = 0;
	struct kvm_run *run = vcpu->run;
	long mmap_size = getpagesize() * 3;
	uint32_t done = 0;
	struct ucall uc;
	int i = 0;

	for (;;) {
		vcpu_run(vcpu);
		if (run->exit_reason == KVM_EXIT_IO && run->io.port != UCALL_PORT) {
			const struct pio_op *op = &ops[i];
			uint8_t *data = (uint8_t *)run + run->io.data_offset;
			uint64_t n = (uint64_t)run->io.size * run->io.count, j;

			exits++;
			TEST_ASSERT(i < nops, "extra I/O exit: dir %d port 0x%x size %d count %d",
				    run->io.direction, run->io.port, run->io.size, run->io.count);
			TEST_ASSERT(run->io.direction == op->dir && run->io.port == op->port &&
				    run->io.size == op->size,
				    "op %d: exit dir %d port 0x%x size %d, expected dir %d port 0x%x size %d",
				    i, run->io.direction, run->io.port, run->io.size,
				    op->dir, op->port, op->size);
			TEST_ASSERT(run->io.count >= 1 && done + run->io.count <= op->count,
				    "op %d: exit count %u after %u of %u elements",
				    i, run->io.count, done, op->count);
			TEST_ASSERT(run->io.data_offset >= sizeof(*run) &&
				    run->io.data_offset + n <= mmap_size,
				    "op %d: data at offset %llu, %lu bytes, outside the vCPU mapping",
				    i, (unsigned long long)run->io.data_offset, (unsigned long)n);
			if (op->dir == KVM_EXIT_IO_OUT) {
				for (j = 0; j < n; j++, out_k++)
					TEST_ASSERT(data[j] == out_byte(out_k),
						    "op %d: OUT byte %lu (stream byte %lu) is 0x%02x, expected 0x%02x",
						    i, (unsigned long)j, (unsigned long)out_k,
						    data[j], out_byte(out_k));
			} else {
				for (j = 0; j < n; j++, in_k++)
					data[j] = in_byte(in_k);
				/* Poison what follows: KVM must not read past the count. */
				for (j = n; j < n + 8 && run->io.data_offset + j < mmap_size; j++)
					data[j] = 0xee;
			}
			done += run->io.count;
			if (done == op->count) {
				i++;
				done = 0;
			}
			continue;
		}
		switch (get_ucall(vcpu, &uc)) {
		case UCALL_DONE:
			TEST_ASSERT(i == nops && done == 0,
				    "guest done after %d of %d I/O instructions", i, nops);
			pr_info("%d I/O instructions, %lu exits\n", nops, (unsigned long)exits);
			return;
		case UCALL_ABORT:
			REPORT_GUEST_ASSERT(uc);
			break;
		default:
			TEST_FAIL("unexpected exit %s (port 0x%x)",
				  exit_reason_str(run->exit_reason), run->io.port);
		}
	}
}

KVM_ONE_VCPU_TEST_SUITE(pio);

KVM_ONE_VCPU_TEST(pio, out_1_2_4_bytes, guest_out)
{
	const struct pio_op ops[] = {
		{ KVM_EXIT_IO_OUT, PORT_IMM, 1, 1 }, { KVM_EXIT_IO_OUT, PORT_IMM, 2, 1 },
		{ KVM_EXIT_IO_OUT, PORT_IMM, 4, 1 }, { KVM_EXIT_IO_OUT, PORT_DX, 1, 1 },
		{ KVM_EXIT_IO_OUT, PORT_DX, 2, 1 }, { KVM_EXIT_IO_OUT, PORT_DX, 4, 1 },
	};

	run_pio(vcpu, ops, ARRAY_SIZE(ops));
}

KVM_ONE_VCPU_TEST(pio, in_1_2_4_bytes, guest_in)
{
	const struct pio_op ops[] = {
		{ KVM_EXIT_IO_IN, PORT_IMM, 1, 1 }, { KVM_EXIT_IO_IN, PORT_IMM, 2, 1 },
		{ KVM_EXIT_IO_IN, PORT_IMM, 4, 1 }, { KVM_EXIT_IO_IN, PORT_DX, 1, 1 },
		{ KVM_EXIT_IO_IN, PORT_DX, 2, 1 }, { KVM_EXIT_IO_IN, PORT_DX, 4, 1 },
	};

	run_pio(vcpu, ops, ARRAY_SIZE(ops));
}

/* The I/O instructions of STRING_CASES, as user space sees them. */
static int string_ops(struct pio_op *ops, uint8_t dir)
{
	int n = 0, s;

	for (s = 1; s <= 4; s *= 2) {
		const uint32_t counts[] = { 1, 1, 1, 1, 7, 7, 1500 / s, 1500 / s, 6000 / s, 6000 / s };
		unsigned int c;

		for (c = 0; c < ARRAY_SIZE(counts); c++)
			ops[n++] = (struct pio_op){ dir, PORT_DX, s, counts[c] };
	}
	return n;
}

KVM_ONE_VCPU_TEST(pio, outs, guest_outs)
{
	struct pio_op ops[64];

	run_pio(vcpu, ops, string_ops(ops, KVM_EXIT_IO_OUT));
}

KVM_ONE_VCPU_TEST(pio, ins, guest_ins)
{
	struct pio_op ops[64];

	run_pio(vcpu, ops, string_ops(ops, KVM_EXIT_IO_IN));
}

KVM_ONE_VCPU_TEST(pio, rep_count_zero, guest_rep_zero)
{
	run_pio(vcpu, NULL, 0);
}

TEST_HARNESS_MAIN
