// SPDX-License-Identifier: GPL-2.0
/*
 * MMIO data in both directions: 1-, 2-, 4- and 8-byte loads and stores to a
 * guest-physical page that no memory slot backs, through the MOV forms
 * (register, immediate, the moffs forms A0-A3), the high-byte registers
 * AH/BH/CH/DH, REX byte registers, MOVZX/MOVSX/MOVSXD, and STOS/LODS with
 * DF clear and set.
 *
 * Each access is one step of the table below. The guest announces a step with
 * a ucall, then makes exactly one access. For a store the host checks the exit
 * (address, length, direction) and every data byte; for a load it checks the
 * exit and puts the step's data in kvm_run (poisoning the bytes past the
 * length), and the guest checks the destination register: the loaded bits,
 * the zero- or sign-extension, and the bits a byte or word load must keep.
 */
#include <stdint.h>
#include <string.h>

#include "kvm_util.h"
#include "processor.h"
#include "kvm_test_harness.h"

#define MMIO_GPA	0xc0000000ull	/* no memory slot, no in-kernel device */
#define MMIO_GVA	MMIO_GPA	/* identity-mapped by the test */
#define FILL		0x0123456789abcdefull	/* what registers hold before a load */

struct step {
	const char *name;
	bool write;
	uint8_t len;
	uint16_t off;		/* offset in the MMIO page */
	uint64_t data;		/* what the guest stores, or what the host answers */
};

enum {
	/* stores */
	S_AL, S_AH, S_BH, S_CH, S_DH, S_SIL, S_R12B, S_AX, S_R9W, S_EAX, S_R10D,
	S_RAX, S_R15, S_IMM8, S_IMM16, S_IMM32, S_IMM32_SX64, S_MOFFS_AL, S_MOFFS_AX,
	S_MOFFS_EAX, S_MOFFS_RAX, S_SIB, S_STOSB, S_STOSW, S_STOSL, S_STOSQ, S_STOSB_DOWN,
	S_STOSQ_DOWN,
	/* loads */
	L_AL, L_AH, L_BH, L_CH, L_DH, L_SIL, L_R13B, L_AX, L_R11W, L_EAX, L_R14D,
	L_RAX, L_R8, L_MOVZBL, L_MOVZBW, L_MOVZBQ, L_MOVZWL, L_MOVZWQ, L_MOVSBL,
	L_MOVSBW, L_MOVSBQ, L_MOVSBQ_POS, L_MOVSWL, L_MOVSWQ, L_MOVSLQ, L_MOVSLQ_POS,
	L_MOFFS_AL, L_MOFFS_AX, L_MOFFS_EAX, L_MOFFS_RAX, L_SIB, L_LODSB, L_LODSW,
	L_LODSL, L_LODSQ, L_LODSB_DOWN, L_LODSQ_DOWN,
	NR_STEPS
};

#define ST(n, l, o, d) [n] = { #n, true, l, o, d }
#define LD(n, l, o, d) [n] = { #n, false, l, o, d }

static const struct step steps[NR_STEPS] = {
	ST(S_AL, 1, 0x000, 0x5a),
	ST(S_AH, 1, 0x001, 0xa1),
	ST(S_BH, 1, 0x002, 0xb2),
	ST(S_CH, 1, 0x003, 0xc3),
	ST(S_DH, 1, 0x004, 0xd4),
	ST(S_SIL, 1, 0x005, 0xe5),
	ST(S_R12B, 1, 0x006, 0xf6),
	ST(S_AX, 2, 0x008, 0x8a07),
	ST(S_R9W, 2, 0x00a, 0x9b18),
	ST(S_EAX, 4, 0x00c, 0xa1b2c3d4),
	ST(S_R10D, 4, 0x010, 0x8d7e6f50),
	ST(S_RAX, 8, 0x018, 0xfedcba9876543210ull),
	ST(S_R15, 8, 0x020, 0x8899aabbccddeeffull),
	ST(S_IMM8, 1, 0x028, 0x96),
	ST(S_IMM16, 2, 0x02a, 0xbeef),
	ST(S_IMM32, 4, 0x02c, 0xdeadbeef),
	/* movq $imm32 sign-extends the immediate to 64 bits */
	ST(S_IMM32_SX64, 8, 0x030, 0xffffffff87654321ull),
	ST(S_MOFFS_AL, 1, 0x038, 0x3c),
	ST(S_MOFFS_AX, 2, 0x03a, 0x4d5e),
	ST(S_MOFFS_EAX, 4, 0x03c, 0x6f708192),
	ST(S_MOFFS_RAX, 8, 0x040, 0xa3b4c5d6e7f80912ull),
	ST(S_SIB, 4, 0x048 + 3 * 4 + 8, 0x13243546),
	ST(S_STOSB, 1, 0x070, 0x57),
	ST(S_STOSW, 2, 0x072, 0x6879),
	ST(S_STOSL, 4, 0x074, 0x8a9bacbd),
	ST(S_STOSQ, 8, 0x078, 0xcedff0011223344aull),
	ST(S_STOSB_DOWN, 1, 0x080, 0x5b),
	ST(S_STOSQ_DOWN, 8, 0x088, 0x1a2b3c4d5e6f7081ull),

	LD(L_AL, 1, 0x100, 0x81),
	LD(L_AH, 1, 0x101, 0x92),
	LD(L_BH, 1, 0x102, 0xa3),
	LD(L_CH, 1, 0x103, 0xb4),
	LD(L_DH, 1, 0x104, 0xc5),
	LD(L_SIL, 1, 0x105, 0xd6),
	LD(L_R13B, 1, 0x106, 0xe7),
	LD(L_AX, 2, 0x108, 0xf809),
	LD(L_R11W, 2, 0x10a, 0x8a1b),
	LD(L_EAX, 4, 0x10c, 0x9c2d3e4f),
	LD(L_R14D, 4, 0x110, 0xa0b1c2d3),
	LD(L_RAX, 8, 0x118, 0xe4f5061728394a5bull),
	LD(L_R8, 8, 0x120, 0x8c9dae0f1f2e3d4cull),
	LD(L_MOVZBL, 1, 0x128, 0x80),
	LD(L_MOVZBW, 1, 0x129, 0xfe),
	LD(L_MOVZBQ, 1, 0x12a, 0x9d),
	LD(L_MOVZWL, 2, 0x12c, 0x8001),
	LD(L_MOVZWQ, 2, 0x12e, 0xfffe),
	LD(L_MOVSBL, 1, 0x130, 0x80),
	LD(L_MOVSBW, 1, 0x131, 0xfe),
	LD(L_MOVSBQ, 1, 0x132, 0x9d),
	LD(L_MOVSBQ_POS, 1, 0x133, 0x7f),
	LD(L_MOVSWL, 2, 0x134, 0x8001),
	LD(L_MOVSWQ, 2, 0x136, 0xfffe),
	LD(L_MOVSLQ, 4, 0x138, 0x80000001),
	LD(L_MOVSLQ_POS, 4, 0x13c, 0x7ffffffe),
	LD(L_MOFFS_AL, 1, 0x140, 0xc1),
	LD(L_MOFFS_AX, 2, 0x142, 0xd2e3),
	LD(L_MOFFS_EAX, 4, 0x144, 0xf4051627),
	LD(L_MOFFS_RAX, 8, 0x148, 0x8394a5b6c7d8e9faull),
	LD(L_SIB, 4, 0x150 + 5 * 8 + 16, 0xb1c2d3e4),
	LD(L_LODSB, 1, 0x180, 0xf1),
	LD(L_LODSW, 2, 0x182, 0xe2d3),
	LD(L_LODSL, 4, 0x184, 0xc4b5a697),
	LD(L_LODSQ, 8, 0x188, 0x88796a5b4c3d2e1full),
	LD(L_LODSB_DOWN, 1, 0x190, 0x8e),
	LD(L_LODSQ_DOWN, 8, 0x198, 0xf00fe11ed22dc33cull),
};

/* ---- guest side ---- */

#define P(o)	((uint64_t)(MMIO_GVA + (o)))
#define D(n)	(steps[n].data)
#define A(n)	P(steps[n].off)

/* Each step is announced, so that host and guest cannot drift apart. */
static void step(int n)
{
	GUEST_SYNC(n);
}

static void guest_stores(void)
{
	uint64_t rdi;

	step(S_AL);
	asm volatile("movb %%al, (%[p])" : : "a"((FILL & ~0xffull) | D(S_AL)), [p] "D"(A(S_AL)) : "memory");
	step(S_AH);
	asm volatile("movb %%ah, (%[p])" : : "a"((FILL & ~0xff00ull) | D(S_AH) << 8), [p] "D"(A(S_AH)) : "memory");
	step(S_BH);
	asm volatile("movb %%bh, (%[p])" : : "b"((FILL & ~0xff00ull) | D(S_BH) << 8), [p] "D"(A(S_BH)) : "memory");
	step(S_CH);
	asm volatile("movb %%ch, (%[p])" : : "c"((FILL & ~0xff00ull) | D(S_CH) << 8), [p] "D"(A(S_CH)) : "memory");
	step(S_DH);
	asm volatile("movb %%dh, (%[p])" : : "d"((FILL & ~0xff00ull) | D(S_DH) << 8), [p] "D"(A(S_DH)) : "memory");
	step(S_SIL);
	asm volatile("movb %%sil, (%[p])" : : "S"((FILL & ~0xffull) | D(S_SIL)), [p] "D"(A(S_SIL)) : "memory");
	step(S_R12B);
	{
		register uint64_t r12 asm("r12") = (FILL & ~0xffull) | D(S_R12B);

		asm volatile("movb %%r12b, (%[p])" : : "r"(r12), [p] "D"(A(S_R12B)) : "memory");
	}
	step(S_AX);
	asm volatile("movw %%ax, (%[p])" : : "a"((FILL & ~0xffffull) | D(S_AX)), [p] "D"(A(S_AX)) : "memory");
	step(S_R9W);
	{
		register uint64_t r9 asm("r9") = (FILL & ~0xffffull) | D(S_R9W);

		asm volatile("movw %%r9w, (%[p])" : : "r"(r9), [p] "D"(A(S_R9W)) : "memory");
	}
	step(S_EAX);
	asm volatile("movl %%eax, (%[p])" : : "a"((FILL & ~0xffffffffull) | D(S_EAX)), [p] "D"(A(S_EAX)) : "memory");
	step(S_R10D);
	{
		register uint64_t r10 asm("r10") = (FILL & ~0xffffffffull) | D(S_R10D);

		asm volatile("movl %%r10d, (%[p])" : : "r"(r10), [p] "D"(A(S_R10D)) : "memory");
	}
	step(S_RAX);
	asm volatile("movq %%rax, (%[p])" : : "a"(D(S_RAX)), [p] "D"(A(S_RAX)) : "memory");
	step(S_R15);
	{
		register uint64_t r15 asm("r15") = D(S_R15);

		asm volatile("movq %%r15, (%[p])" : : "r"(r15), [p] "D"(A(S_R15)) : "memory");
	}
	step(S_IMM8);
	asm volatile("movb $0x96, (%[p])" : : [p] "D"(A(S_IMM8)) : "memory");
	step(S_IMM16);
	asm volatile("movw $0xbeef, (%[p])" : : [p] "D"(A(S_IMM16)) : "memory");
	step(S_IMM32);
	asm volatile("movl $0xdeadbeef, (%[p])" : : [p] "D"(A(S_IMM32)) : "memory");
	step(S_IMM32_SX64);
	asm volatile("movq $-0x789abcdf, (%[p])" : : [p] "D"(A(S_IMM32_SX64)) : "memory");
	step(S_MOFFS_AL);
	asm volatile("movabs %%al, %P[a]" : : "a"((FILL & ~0xffull) | D(S_MOFFS_AL)), [a] "i"(A(S_MOFFS_AL)) : "memory");
	step(S_MOFFS_AX);
	asm volatile("movabs %%ax, %P[a]" : : "a"((FILL & ~0xffffull) | D(S_MOFFS_AX)), [a] "i"(A(S_MOFFS_AX)) : "memory");
	step(S_MOFFS_EAX);
	asm volatile("movabs %%eax, %P[a]" : : "a"((FILL & ~0xffffffffull) | D(S_MOFFS_EAX)), [a] "i"(A(S_MOFFS_EAX)) : "memory");
	step(S_MOFFS_RAX);
	asm volatile("movabs %%rax, %P[a]" : : "a"(D(S_MOFFS_RAX)), [a] "i"(A(S_MOFFS_RAX)) : "memory");
	step(S_SIB);
	asm volatile("movl %%eax, 8(%[b],%[i],4)" : : "a"(D(S_SIB)), [b] "D"(P(0x048)), [i] "c"(3ull) : "memory");

	step(S_STOSB);
	rdi = A(S_STOSB);
	asm volatile("stosb" : "+D"(rdi) : "a"((FILL & ~0xffull) | D(S_STOSB)) : "memory");
	GUEST_ASSERT_EQ(rdi, A(S_STOSB) + 1);
	step(S_STOSW);
	rdi = A(S_STOSW);
	asm volatile("stosw" : "+D"(rdi) : "a"((FILL & ~0xffffull) | D(S_STOSW)) : "memory");
	GUEST_ASSERT_EQ(rdi, A(S_STOSW) + 2);
	step(S_STOSL);
	rdi = A(S_STOSL);
	asm volatile("stosl" : "+D"(rdi) : "a"((FILL & ~0xffffffffull) | D(S_STOSL)) : "memory");
	GUEST_ASSERT_EQ(rdi, A(S_STOSL) + 4);
	step(S_STOSQ);
	rdi = A(S_STOSQ);
	asm volatile("stosq" : "+D"(rdi) : "a"(D(S_STOSQ)) : "memory");
	GUEST_ASSERT_EQ(rdi, A(S_STOSQ) + 8);
	step(S_STOSB_DOWN);
	rdi = A(S_STOSB_DOWN);
	asm volatile("std\n\tstosb\n\tcld" : "+D"(rdi) : "a"((FILL & ~0xffull) | D(S_STOSB_DOWN)) : "memory");
	GUEST_ASSERT_EQ(rdi, A(S_STOSB_DOWN) - 1);
	step(S_STOSQ_DOWN);
	rdi = A(S_STOSQ_DOWN);
	asm volatile("std\n\tstosq\n\tcld" : "+D"(rdi) : "a"(D(S_STOSQ_DOWN)) : "memory");
	GUEST_ASSERT_EQ(rdi, A(S_STOSQ_DOWN) - 8);
	GUEST_DONE();
}

/* Sign-extension of the low @bits of @v to 64 bits. */
static uint64_t sx(uint64_t v, int bits)
{
	return (uint64_t)((int64_t)(v << (64 - bits)) >> (64 - bits));
}

/* A load into a register that held FILL: FILL with @mask replaced by @v. */
static uint64_t keep(uint64_t mask, uint64_t v)
{
	return (FILL & ~mask) | (v & mask);
}

#define LOAD(n, insn, reg, want)						\
	do {									\
		uint64_t r = FILL;						\
										\
		step(n);							\
		asm volatile(insn : "+" reg(r) : [p] "D"(A(n)) : "memory");	\
		GUEST_ASSERT_EQ(r, (uint64_t)(want));				\
	} while (0)

#define LOAD_R(n, insn, rname, want)						\
	do {									\
		register uint64_t r asm(rname);					\
										\
		step(n);							\
		/* set after the ucall, which clobbers caller-saved registers */ \
		r = FILL;							\
		asm volatile(insn : "+r"(r) : [p] "D"(A(n)) : "memory");	\
		GUEST_ASSERT_EQ(r, (uint64_t)(want));				\
	} while (0)

static void guest_loads(void)
{
	uint64_t rsi, rax;

	LOAD(L_AL, "movb (%[p]), %%al", "a", keep(0xff, D(L_AL)));
	LOAD(L_AH, "movb (%[p]), %%ah", "a", keep(0xff00, D(L_AH) << 8));
	LOAD(L_BH, "movb (%[p]), %%bh", "b", keep(0xff00, D(L_BH) << 8));
	LOAD(L_CH, "movb (%[p]), %%ch", "c", keep(0xff00, D(L_CH) << 8));
	LOAD(L_DH, "movb (%[p]), %%dh", "d", keep(0xff00, D(L_DH) << 8));
	LOAD(L_SIL, "movb (%[p]), %%sil", "S", keep(0xff, D(L_SIL)));
	LOAD_R(L_R13B, "movb (%[p]), %%r13b", "r13", keep(0xff, D(L_R13B)));
	LOAD(L_AX, "movw (%[p]), %%ax", "a", keep(0xffff, D(L_AX)));
	LOAD_R(L_R11W, "movw (%[p]), %%r11w", "r11", keep(0xffff, D(L_R11W)));
	/* A 32-bit destination is zero-extended to 64 bits. */
	LOAD(L_EAX, "movl (%[p]), %%eax", "a", D(L_EAX));
	LOAD_R(L_R14D, "movl (%[p]), %%r14d", "r14", D(L_R14D));
	LOAD(L_RAX, "movq (%[p]), %%rax", "a", D(L_RAX));
	LOAD_R(L_R8, "movq (%[p]), %%r8", "r8", D(L_R8));

	LOAD(L_MOVZBL, "movzbl (%[p]), %%eax", "a", D(L_MOVZBL));
	LOAD(L_MOVZBW, "movzbw (%[p]), %%ax", "a", keep(0xffff, D(L_MOVZBW)));
	LOAD(L_MOVZBQ, "movzbq (%[p]), %%rax", "a", D(L_MOVZBQ));
	LOAD(L_MOVZWL, "movzwl (%[p]), %%eax", "a", D(L_MOVZWL));
	LOAD(L_MOVZWQ, "movzwq (%[p]), %%rax", "a", D(L_MOVZWQ));
	LOAD(L_MOVSBL, "movsbl (%[p]), %%eax", "a", sx(D(L_MOVSBL), 8) & 0xffffffff);
	LOAD(L_MOVSBW, "movsbw (%[p]), %%ax", "a", keep(0xffff, sx(D(L_MOVSBW), 8)));
	LOAD(L_MOVSBQ, "movsbq (%[p]), %%rax", "a", sx(D(L_MOVSBQ), 8));
	LOAD(L_MOVSBQ_POS, "movsbq (%[p]), %%rax", "a", D(L_MOVSBQ_POS));
	LOAD(L_MOVSWL, "movswl (%[p]), %%eax", "a", sx(D(L_MOVSWL), 16) & 0xffffffff);
	LOAD(L_MOVSWQ, "movswq (%[p]), %%rax", "a", sx(D(L_MOVSWQ), 16));
	LOAD(L_MOVSLQ, "movslq (%[p]), %%rax", "a", sx(D(L_MOVSLQ), 32));
	LOAD(L_MOVSLQ_POS, "movslq (%[p]), %%rax", "a", D(L_MOVSLQ_POS));

	rax = FILL;
	step(L_MOFFS_AL);
	asm volatile("movabs %P[a], %%al" : "+a"(rax) : [a] "i"(A(L_MOFFS_AL)) : "memory");
	GUEST_ASSERT_EQ(rax, keep(0xff, D(L_MOFFS_AL)));
	rax = FILL;
	step(L_MOFFS_AX);
	asm volatile("movabs %P[a], %%ax" : "+a"(rax) : [a] "i"(A(L_MOFFS_AX)) : "memory");
	GUEST_ASSERT_EQ(rax, keep(0xffff, D(L_MOFFS_AX)));
	rax = FILL;
	step(L_MOFFS_EAX);
	asm volatile("movabs %P[a], %%eax" : "+a"(rax) : [a] "i"(A(L_MOFFS_EAX)) : "memory");
	GUEST_ASSERT_EQ(rax, D(L_MOFFS_EAX));
	rax = FILL;
	step(L_MOFFS_RAX);
	asm volatile("movabs %P[a], %%rax" : "+a"(rax) : [a] "i"(A(L_MOFFS_RAX)) : "memory");
	GUEST_ASSERT_EQ(rax, D(L_MOFFS_RAX));

	rax = FILL;
	step(L_SIB);
	asm volatile("movl 16(%[b],%[i],8), %%eax" : "+a"(rax) : [b] "D"(P(0x150)), [i] "c"(5ull) : "memory");
	GUEST_ASSERT_EQ(rax, D(L_SIB));

#define LODS(n, insn, want, delta, down)					\
	do {									\
		rsi = A(n);							\
		rax = FILL;							\
		step(n);							\
		if (down)							\
			asm volatile("std\n\t" insn "\n\tcld" : "+S"(rsi), "+a"(rax) : : "memory"); \
		else								\
			asm volatile(insn : "+S"(rsi), "+a"(rax) : : "memory");	\
		GUEST_ASSERT_EQ(rax, (uint64_t)(want));				\
		GUEST_ASSERT_EQ(rsi, A(n) + (delta));				\
	} while (0)
	LODS(L_LODSB, "lodsb", keep(0xff, D(L_LODSB)), 1, false);
	LODS(L_LODSW, "lodsw", keep(0xffff, D(L_LODSW)), 2, false);
	LODS(L_LODSL, "lodsl", D(L_LODSL), 4, false);
	LODS(L_LODSQ, "lodsq", D(L_LODSQ), 8, false);
	LODS(L_LODSB_DOWN, "lodsb", keep(0xff, D(L_LODSB_DOWN)), -1, true);
	LODS(L_LODSQ_DOWN, "lodsq", D(L_LODSQ_DOWN), -8, true);
#undef LODS
	GUEST_DONE();
}

/* ---- host side ---- */

static void run_steps(struct kvm_vcpu *vcpu, int first, int last)
{
	struct kvm_run *run = vcpu->run;
	int cur = -1, done = 0;
	struct ucall uc;
	unsigned int i;

	for (;;) {
		vcpu_run(vcpu);
		if (run->exit_reason == KVM_EXIT_MMIO) {
			const struct step *s = &steps[cur];

			TEST_ASSERT(cur >= 0 && !done, "MMIO exit (gpa 0x%llx) outside a step, after step %d",
				    run->mmio.phys_addr, cur);
			TEST_ASSERT(run->mmio.phys_addr == MMIO_GPA + s->off &&
				    run->mmio.len == s->len && run->mmio.is_write == s->write,
				    "%s: exit gpa 0x%llx len %u %s, expected gpa 0x%llx len %u %s",
				    s->name, run->mmio.phys_addr, run->mmio.len,
				    run->mmio.is_write ? "write" : "read",
				    MMIO_GPA + s->off, s->len, s->write ? "write" : "read");
			if (s->write) {
				for (i = 0; i < s->len; i++)
					TEST_ASSERT(run->mmio.data[i] == (uint8_t)(s->data >> (8 * i)),
						    "%s: data byte %u is 0x%02x, expected 0x%02x", s->name,
						    i, run->mmio.data[i], (uint8_t)(s->data >> (8 * i)));
			} else {
				memset(run->mmio.data, 0xee, sizeof(run->mmio.data));
				for (i = 0; i < s->len; i++)
					run->mmio.data[i] = (uint8_t)(s->data >> (8 * i));
			}
			done = 1;
			continue;
		}
		switch (get_ucall(vcpu, &uc)) {
		case UCALL_SYNC:
			TEST_ASSERT(cur < 0 || done, "%s: the guest made no MMIO access",
				    steps[cur].name);
			TEST_ASSERT(uc.args[1] == (cur < 0 ? first : cur + 1),
				    "guest announced step %lu after step %d", uc.args[1], cur);
			cur = uc.args[1];
			done = 0;
			break;
		case UCALL_DONE:
			TEST_ASSERT(cur == last && done, "guest done after step %d of %d..%d",
				    cur, first, last);
			return;
		case UCALL_ABORT:
			REPORT_GUEST_ASSERT(uc);
			break;
		default:
			TEST_FAIL("unexpected exit %s after step %d",
				  exit_reason_str(run->exit_reason), cur);
		}
	}
}

FIXTURE(mmio) {
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
};

FIXTURE_SETUP(mmio)
{
	self->vm = vm_create_with_one_vcpu(&self->vcpu, NULL);
	virt_map(self->vm, MMIO_GVA, MMIO_GPA, 1);
}

FIXTURE_TEARDOWN(mmio)
{
	kvm_vm_free(self->vm);
}

TEST_F(mmio, stores)
{
	vcpu_arch_set_entry_point(self->vcpu, guest_stores);
	run_steps(self->vcpu, S_AL, S_STOSQ_DOWN);
}

TEST_F(mmio, loads)
{
	vcpu_arch_set_entry_point(self->vcpu, guest_loads);
	run_steps(self->vcpu, L_AL, L_LODSQ_DOWN);
}

TEST_HARNESS_MAIN
