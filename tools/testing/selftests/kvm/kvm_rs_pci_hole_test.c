// SPDX-License-Identifier: GPL-2.0
/*
 * KVM_MEM_PCI_HOLE, a kvm-rs extension (include/uapi/linux/kvm_rs.h,
 * Documentation/virt/kvm-rs/api.rst): a memory slot with no memory behind
 * it, whose guest reads return all ones without an exit and whose guest
 * writes exit to user space as KVM_EXIT_MMIO. Skipped on the C KVM, which
 * answers 0 to KVM_CHECK_EXTENSION(KVM_CAP_KVMRS_PCI_HOLE), except for what
 * both must answer alike: the flag is an unknown bit (EINVAL) until the VM
 * enabled the capability, which the C KVM does not know (EINVAL).
 *
 * - The capability: enabled with KVM_ENABLE_CAP on the VM (flags and
 *   arguments 0), before which the flag is refused.
 * - Slot flags and changes that must be refused: a non-zero userspace_addr,
 *   with KVM_MEM_READONLY or KVM_MEM_LOG_DIRTY_PAGES (v1 and v2 ioctls), the
 *   flag added to or dropped from an existing slot, a resize, an overlap;
 *   KVM_GET_DIRTY_LOG of a hole.
 * - Guest reads of 1, 2, 4, 8 and 16 bytes (and REP MOVSB across the hole's
 *   pages) return all ones and do not exit: the vCPU statistics count no
 *   MMIO exit, and once the pages are mapped no exit in the kernel either.
 * - Guest writes of 1, 2, 4, 8 bytes exit as MMIO writes with their data,
 *   before and after the page was read, and are not stored.
 * - Moving the slot: reads at the old address exit as MMIO (no slot), reads
 *   at the new one give all ones; deleting it: reads exit; a memory slot put
 *   in its place shows its memory, a hole put back shows all ones.
 * - INS into the hole, compared with INS into an address without a slot on
 *   either KVM.
 */
#include <sys/mman.h>

#include "kvm_util.h"
#include "processor.h"
#include "kselftest_harness.h"
#include "kvm_rs_util.h"
#include "kvm_rs_lib.h"
#include "../../../../include/uapi/linux/kvm_rs.h"

#define HOLE_SLOT	10
#define MEM_SLOT	11
#define HOLE_GPA	0xd0000000ull
#define HOLE_PAGES	4
#define HOLE_SIZE	(HOLE_PAGES * 0x1000ull)
#define MOVED_GPA	0xd8000000ull
#define NOSLOT_GPA	0xe0000000ull	/* never a slot */
#define PORT		0x5b0
#define ONES		0xffffffffffffffffull

#define R(type, a)	(*(volatile type *)(a))

static int set_region(struct kvm_vm *vm, uint32_t slot, uint32_t flags, uint64_t gpa,
		      uint64_t size, void *hva)
{
	return __vm_set_user_memory_region(vm, slot, flags, gpa, size, hva);
}

static int set_region2(struct kvm_vm *vm, uint32_t slot, uint32_t flags, uint64_t gpa,
		       uint64_t size, void *hva)
{
	return __vm_set_user_memory_region2(vm, slot, flags, gpa, size, hva, 0, 0);
}

static int enable_hole(struct kvm_vm *vm, uint32_t flags, uint64_t arg0, uint64_t arg3)
{
	struct kvm_enable_cap cap = {
		.cap = KVM_CAP_KVMRS_PCI_HOLE, .flags = flags, .args = { arg0, 0, 0, arg3 },
	};

	return __vm_ioctl(vm, KVM_ENABLE_CAP, &cap);
}

/* -1 with @err, or the test fails (with what came back instead). */
#define EXPECT_ERRNO(err, call)							\
	do {									\
		int __r = (call);						\
		int __e = errno;						\
		EXPECT_TRUE(__r == -1 && __e == (err))				\
			TH_LOG("%s: %d (errno %d), expected errno %d", #call,	\
			       __r, __r ? __e : 0, (err));			\
	} while (0)

static bool has_hole(void)
{
	return kvm_check_cap(KVM_CAP_KVMRS_PCI_HOLE) == 1;
}

TEST(capability)
{
	struct kvm_vm *vm = vm_create_barebones();
	int cap = kvm_check_cap(KVM_CAP_KVMRS_PCI_HOLE);

	pr_info("%s: KVM_CHECK_EXTENSION(KVM_CAP_KVMRS_PCI_HOLE) = %d\n", kvm_rs_kvm_name(), cap);
	EXPECT_EQ(kvm_rs_is_c_kvm() ? 0 : 1, cap);
	EXPECT_EQ(cap, vm_check_cap(vm, KVM_CAP_KVMRS_PCI_HOLE));
	/* Before KVM_ENABLE_CAP the flag is an unknown bit, on both KVMs. */
	EXPECT_ERRNO(EINVAL, set_region(vm, HOLE_SLOT, KVM_MEM_PCI_HOLE, HOLE_GPA, HOLE_SIZE, NULL));
	EXPECT_ERRNO(EINVAL, set_region2(vm, HOLE_SLOT, KVM_MEM_PCI_HOLE, HOLE_GPA, HOLE_SIZE, NULL));
	if (!cap) {
		/* The C KVM does not know the capability. */
		EXPECT_ERRNO(EINVAL, enable_hole(vm, 0, 0, 0));
		EXPECT_ERRNO(EINVAL, set_region(vm, HOLE_SLOT, KVM_MEM_PCI_HOLE, HOLE_GPA,
						HOLE_SIZE, NULL));
		kvm_vm_free(vm);
		SKIP(return, "no KVM_CAP_KVMRS_PCI_HOLE (%s)", kvm_rs_kvm_name());
	}
	/* No flags and no arguments. */
	EXPECT_ERRNO(EINVAL, enable_hole(vm, 1, 0, 0));
	EXPECT_ERRNO(EINVAL, enable_hole(vm, 0, 1, 0));
	EXPECT_ERRNO(EINVAL, enable_hole(vm, 0, 0, 1));
	EXPECT_ERRNO(EINVAL, set_region(vm, HOLE_SLOT, KVM_MEM_PCI_HOLE, HOLE_GPA, HOLE_SIZE, NULL));
	EXPECT_EQ(0, enable_hole(vm, 0, 0, 0));
	EXPECT_EQ(0, enable_hole(vm, 0, 0, 0));	/* again: stays on */
	EXPECT_EQ(0, set_region(vm, HOLE_SLOT, KVM_MEM_PCI_HOLE, HOLE_GPA, HOLE_SIZE, NULL));
	kvm_vm_free(vm);
}

TEST(refused_flags_and_changes)
{
	struct kvm_dirty_log log = { .slot = HOLE_SLOT };
	uint64_t bitmap[4];
	struct kvm_vm *vm;
	void *mem;

	if (!has_hole())
		SKIP(return, "no KVM_CAP_KVMRS_PCI_HOLE (%s)", kvm_rs_kvm_name());
	vm = vm_create_barebones();
	ASSERT_EQ(0, enable_hole(vm, 0, 0, 0));
	mem = mmap(NULL, 2 * HOLE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, mem);

	/* A hole has no user memory. */
	EXPECT_ERRNO(EINVAL, set_region(vm, HOLE_SLOT, KVM_MEM_PCI_HOLE, HOLE_GPA, HOLE_SIZE, mem));
	/* Nothing to make read-only or to log, through either ioctl. */
	EXPECT_ERRNO(EINVAL, set_region(vm, HOLE_SLOT, KVM_MEM_PCI_HOLE | KVM_MEM_READONLY,
					HOLE_GPA, HOLE_SIZE, NULL));
	EXPECT_ERRNO(EINVAL, set_region(vm, HOLE_SLOT, KVM_MEM_PCI_HOLE | KVM_MEM_LOG_DIRTY_PAGES,
					HOLE_GPA, HOLE_SIZE, NULL));
	EXPECT_ERRNO(EINVAL, set_region2(vm, HOLE_SLOT, KVM_MEM_PCI_HOLE | KVM_MEM_READONLY,
					 HOLE_GPA, HOLE_SIZE, NULL));
	EXPECT_ERRNO(EINVAL, set_region2(vm, HOLE_SLOT, KVM_MEM_PCI_HOLE | KVM_MEM_LOG_DIRTY_PAGES,
					 HOLE_GPA, HOLE_SIZE, NULL));
	/* The usual checks still apply. */
	EXPECT_ERRNO(EINVAL, set_region(vm, HOLE_SLOT, KVM_MEM_PCI_HOLE, HOLE_GPA, 0x800, NULL));
	EXPECT_ERRNO(EINVAL, set_region(vm, HOLE_SLOT, KVM_MEM_PCI_HOLE, HOLE_GPA + 0x800,
					HOLE_SIZE, NULL));

	ASSERT_EQ(0, set_region(vm, HOLE_SLOT, KVM_MEM_PCI_HOLE, HOLE_GPA, HOLE_SIZE, NULL));
	EXPECT_EQ(0, set_region(vm, HOLE_SLOT, KVM_MEM_PCI_HOLE, HOLE_GPA, HOLE_SIZE, NULL));
	EXPECT_EQ(0, set_region2(vm, HOLE_SLOT, KVM_MEM_PCI_HOLE, HOLE_GPA, HOLE_SIZE, NULL));
	/* Not logging: KVM_GET_DIRTY_LOG finds no bitmap. */
	log.dirty_bitmap = bitmap;
	EXPECT_ERRNO(ENOENT, __vm_ioctl(vm, KVM_GET_DIRTY_LOG, &log));
	/* The flag cannot be dropped, nor logging or read-only added. */
	EXPECT_ERRNO(EINVAL, set_region(vm, HOLE_SLOT, 0, HOLE_GPA, HOLE_SIZE, NULL));
	EXPECT_ERRNO(EINVAL, set_region(vm, HOLE_SLOT, KVM_MEM_PCI_HOLE | KVM_MEM_LOG_DIRTY_PAGES,
					HOLE_GPA, HOLE_SIZE, NULL));
	EXPECT_ERRNO(EINVAL, set_region(vm, HOLE_SLOT, KVM_MEM_PCI_HOLE | KVM_MEM_READONLY,
					HOLE_GPA, HOLE_SIZE, NULL));
	/* Nor the slot resized or given memory. */
	EXPECT_ERRNO(EINVAL, set_region(vm, HOLE_SLOT, KVM_MEM_PCI_HOLE, HOLE_GPA, 2 * HOLE_SIZE,
					NULL));
	EXPECT_ERRNO(EINVAL, set_region(vm, HOLE_SLOT, KVM_MEM_PCI_HOLE, HOLE_GPA, HOLE_SIZE, mem));
	/* Overlaps, with a memory slot or another hole. */
	EXPECT_ERRNO(EEXIST, set_region(vm, MEM_SLOT, 0, HOLE_GPA + HOLE_SIZE - 0x1000,
					HOLE_SIZE, mem));
	EXPECT_ERRNO(EEXIST, set_region(vm, MEM_SLOT, KVM_MEM_PCI_HOLE, HOLE_GPA - 0x1000,
					0x2000, NULL));

	/* A memory slot cannot become a hole. */
	ASSERT_EQ(0, set_region(vm, MEM_SLOT, 0, MOVED_GPA, HOLE_SIZE, mem));
	EXPECT_ERRNO(EINVAL, set_region(vm, MEM_SLOT, KVM_MEM_PCI_HOLE, MOVED_GPA, HOLE_SIZE, mem));
	EXPECT_ERRNO(EINVAL, set_region(vm, MEM_SLOT, KVM_MEM_PCI_HOLE, MOVED_GPA, HOLE_SIZE, NULL));
	ASSERT_EQ(0, set_region(vm, MEM_SLOT, 0, MOVED_GPA, 0, NULL));

	/* Moved (the flag kept), then deleted (with or without the flag). */
	EXPECT_EQ(0, set_region(vm, HOLE_SLOT, KVM_MEM_PCI_HOLE, MOVED_GPA, HOLE_SIZE, NULL));
	EXPECT_EQ(0, set_region(vm, HOLE_SLOT, KVM_MEM_PCI_HOLE, HOLE_GPA, HOLE_SIZE, NULL));
	EXPECT_EQ(0, set_region(vm, HOLE_SLOT, KVM_MEM_PCI_HOLE, HOLE_GPA, 0, NULL));
	EXPECT_ERRNO(EINVAL, set_region(vm, HOLE_SLOT, KVM_MEM_PCI_HOLE, HOLE_GPA, 0, NULL));
	ASSERT_EQ(0, set_region(vm, HOLE_SLOT, KVM_MEM_PCI_HOLE, HOLE_GPA, HOLE_SIZE, NULL));
	EXPECT_EQ(0, set_region(vm, HOLE_SLOT, 0, HOLE_GPA, 0, NULL));
	/* Its place can hold memory now. */
	EXPECT_EQ(0, set_region(vm, MEM_SLOT, 0, HOLE_GPA, HOLE_SIZE, mem));
	munmap(mem, 2 * HOLE_SIZE);
	kvm_vm_free(vm);
}

/* A VM running @guest with the hole at HOLE_GPA; HOLE_GPA and MOVED_GPA mapped. */
static struct kvm_vm *hole_vm(struct kvm_vcpu **vcpu, void *guest)
{
	struct kvm_vm *vm = vm_create_with_one_vcpu(vcpu, guest);

	TEST_ASSERT(enable_hole(vm, 0, 0, 0) == 0, "KVM_ENABLE_CAP: errno %d", errno);
	TEST_ASSERT(set_region(vm, HOLE_SLOT, KVM_MEM_PCI_HOLE, HOLE_GPA, HOLE_SIZE, NULL) == 0,
		    "hole slot: errno %d", errno);
	virt_map(vm, HOLE_GPA, HOLE_GPA, HOLE_PAGES);
	virt_map(vm, MOVED_GPA, MOVED_GPA, HOLE_PAGES);
	virt_map(vm, NOSLOT_GPA, NOSLOT_GPA, 1);
	return vm;
}

static void expect_ucall(struct kvm_vcpu *vcpu, int64_t arg, const char *what)
{
	struct kvm_run *run = vcpu->run;
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
		TEST_FAIL("%s: unexpected exit %s (MMIO %s 0x%llx len %u)", what,
			  exit_reason_str(run->exit_reason),
			  run->mmio.is_write ? "write" : "read", run->mmio.phys_addr, run->mmio.len);
	}
}

static void expect_mmio(struct kvm_vcpu *vcpu, uint64_t addr, uint32_t len, bool write,
			uint64_t data, const char *what)
{
	struct kvm_run *run = vcpu->run;
	uint64_t got = 0;

	TEST_ASSERT(run->exit_reason == KVM_EXIT_MMIO, "%s: exit %s, expected MMIO", what,
		    exit_reason_str(run->exit_reason));
	TEST_ASSERT(run->mmio.phys_addr == addr && run->mmio.len == len &&
		    run->mmio.is_write == write,
		    "%s: MMIO %s 0x%llx len %u, expected %s 0x%lx len %u", what,
		    run->mmio.is_write ? "write" : "read", run->mmio.phys_addr, run->mmio.len,
		    write ? "write" : "read", addr, len);
	if (write) {
		memcpy(&got, run->mmio.data, len);
		TEST_ASSERT(got == data, "%s: MMIO data 0x%lx, expected 0x%lx", what, got, data);
	} else {
		memcpy(run->mmio.data, &data, len);
	}
}

/* ---- reads ---- */

static uint8_t g_buf[256];

/* One vCPU statistic, by name, from the vCPU's binary stats file. */
static uint64_t vcpu_stat(struct kvm_vcpu *vcpu, const char *name)
{
	struct kvm_stats_header header;
	struct kvm_stats_desc *descs, *d;
	uint64_t v = 0;
	bool found = false;
	int fd = vcpu_get_stats_fd(vcpu), i;

	read_stats_header(fd, &header);
	descs = read_stats_descriptors(fd, &header);
	for (i = 0; i < header.num_desc; i++) {
		d = get_stats_descriptor(descs, i, &header);
		if (!strcmp(d->name, name)) {
			read_stat_data(fd, &header, d, &v, 1);
			found = true;
			break;
		}
	}
	free(descs);
	close(fd);
	TEST_ASSERT(found, "no vCPU statistic %s", name);
	return v;
}

static void hole_reads(void)
{
	static const uint64_t offs[] = { 0, 1, 0x7ff, 0xff0, 0x1000, 0x2abc, 0x3ff0 };
	uint64_t lo, hi, rsi, rdi, rcx;
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(offs); i++) {
		uint64_t a = HOLE_GPA + offs[i];

		GUEST_ASSERT_EQ(R(uint8_t, a), 0xff);
		GUEST_ASSERT_EQ(R(uint16_t, a), 0xffff);
		GUEST_ASSERT_EQ(R(uint32_t, a), 0xffffffff);
		GUEST_ASSERT_EQ(R(uint64_t, a), ONES);
		asm volatile("movdqu (%2), %%xmm0\n\t"
			     "movq %%xmm0, %0\n\t"
			     "pextrq $1, %%xmm0, %1"
			     : "=r"(lo), "=r"(hi) : "r"(a) : "xmm0");
		GUEST_ASSERT_EQ(lo, ONES);
		GUEST_ASSERT_EQ(hi, ONES);
	}
	/* Across the boundary between two pages of the hole. */
	GUEST_ASSERT_EQ(R(uint64_t, HOLE_GPA + 0x1ffc), ONES);
	/* A string copy out of the hole, across a page boundary. */
	memset(g_buf, 0, sizeof(g_buf));
	rsi = HOLE_GPA + 0x2f80;
	rdi = (uint64_t)g_buf;
	rcx = sizeof(g_buf);
	asm volatile("rep movsb" : "+S"(rsi), "+D"(rdi), "+c"(rcx) : : "memory");
	GUEST_ASSERT_EQ(rcx, 0);
	for (i = 0; i < sizeof(g_buf); i++)
		__GUEST_ASSERT(g_buf[i] == 0xff, "byte %u copied from the hole is 0x%x",
			       i, g_buf[i]);
}

static void guest_reads(void)
{
	/* The first pass maps the pages; the second touches only mapped ones. */
	hole_reads();
	GUEST_SYNC(1);
	hole_reads();
	GUEST_DONE();
}

TEST(guest_reads_all_ones)
{
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;

	if (!has_hole())
		SKIP(return, "no KVM_CAP_KVMRS_PCI_HOLE (%s)", kvm_rs_kvm_name());
	uint64_t mmio, npf, io;

	vm = hole_vm(&vcpu, guest_reads);
	/* No exit but the ucalls: a read that exited fails here. */
	vcpu_run(vcpu);
	expect_ucall(vcpu, 1, "reads of the hole, first pass");
	mmio = vcpu_stat(vcpu, "mmio_exits");
	npf = vcpu_stat(vcpu, "npt_faults");
	io = vcpu_stat(vcpu, "io_exits");
	ASSERT_EQ(mmio, 0);
	/* The first pass did fault the pages in: the statistic counts. */
	ASSERT_GT(npf, 0);
	vcpu_run(vcpu);
	expect_ucall(vcpu, -1, "reads of the hole, second pass");
	/*
	 * The statistics show it: no MMIO exit at all, and once the pages are
	 * mapped, reads of every size take no exit in the kernel either (the
	 * only exit of the second pass is the ucall's port I/O).
	 */
	ASSERT_EQ(vcpu_stat(vcpu, "mmio_exits"), 0);
	ASSERT_EQ(vcpu_stat(vcpu, "npt_faults"), npf);
	ASSERT_EQ(vcpu_stat(vcpu, "io_exits"), io + 1);
	kvm_vm_free(vm);
}

/* ---- writes ---- */

static void guest_writes(void)
{
	/* Page 2 was never read: not mapped yet. */
	R(uint8_t, HOLE_GPA + 0x2010) = 0x12;
	R(uint16_t, HOLE_GPA + 0x2020) = 0x3456;
	R(uint32_t, HOLE_GPA + 0x2030) = 0x789abcde;
	R(uint64_t, HOLE_GPA + 0x2ff8) = 0x0123456789abcdefull;
	/* Not stored; now the page is mapped for reading, and a write still exits. */
	GUEST_ASSERT_EQ(R(uint64_t, HOLE_GPA + 0x2ff8), ONES);
	R(uint32_t, HOLE_GPA + 0x2ffc) = 0x55aa55aa;
	GUEST_ASSERT_EQ(R(uint32_t, HOLE_GPA + 0x2ffc), 0xffffffff);
	GUEST_ASSERT_EQ(R(uint8_t, HOLE_GPA + 0x2010), 0xff);
	GUEST_DONE();
}

TEST(guest_writes_exit_as_mmio)
{
	static const struct { uint64_t addr; uint32_t len; uint64_t data; } w[] = {
		{ HOLE_GPA + 0x2010, 1, 0x12 },
		{ HOLE_GPA + 0x2020, 2, 0x3456 },
		{ HOLE_GPA + 0x2030, 4, 0x789abcde },
		{ HOLE_GPA + 0x2ff8, 8, 0x0123456789abcdefull },
		{ HOLE_GPA + 0x2ffc, 4, 0x55aa55aa },
	};
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	unsigned int i;

	if (!has_hole())
		SKIP(return, "no KVM_CAP_KVMRS_PCI_HOLE (%s)", kvm_rs_kvm_name());
	vm = hole_vm(&vcpu, guest_writes);
	for (i = 0; i < ARRAY_SIZE(w); i++) {
		vcpu_run(vcpu);
		expect_mmio(vcpu, w[i].addr, w[i].len, true, w[i].data, "write to the hole");
	}
	vcpu_run(vcpu);
	expect_ucall(vcpu, -1, "after the writes");
	kvm_vm_free(vm);
}

/* ---- moving and deleting ---- */

#define OLD_ANSWER	0x1111222233334444ull
#define GONE_ANSWER	0x5555666677778888ull
#define MEM_PATTERN	0x0f1e2d3c4b5a6978ull

static void guest_move(void)
{
	GUEST_ASSERT_EQ(R(uint64_t, HOLE_GPA + 0x1008), ONES);
	GUEST_SYNC(1);	/* moved to MOVED_GPA */
	GUEST_ASSERT_EQ(R(uint64_t, HOLE_GPA + 0x1008), OLD_ANSWER);
	GUEST_ASSERT_EQ(R(uint64_t, MOVED_GPA + 0x1008), ONES);
	GUEST_SYNC(2);	/* deleted */
	GUEST_ASSERT_EQ(R(uint64_t, MOVED_GPA + 0x1008), GONE_ANSWER);
	GUEST_SYNC(3);	/* memory at HOLE_GPA */
	GUEST_ASSERT_EQ(R(uint64_t, HOLE_GPA + 0x1008), MEM_PATTERN);
	GUEST_SYNC(4);	/* a hole again */
	GUEST_ASSERT_EQ(R(uint64_t, HOLE_GPA + 0x1008), ONES);
	GUEST_DONE();
}

TEST(move_and_delete)
{
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	uint64_t *mem;
	unsigned int i;

	if (!has_hole())
		SKIP(return, "no KVM_CAP_KVMRS_PCI_HOLE (%s)", kvm_rs_kvm_name());
	vm = hole_vm(&vcpu, guest_move);
	vcpu_run(vcpu);
	expect_ucall(vcpu, 1, "first read");

	ASSERT_EQ(0, set_region(vm, HOLE_SLOT, KVM_MEM_PCI_HOLE, MOVED_GPA, HOLE_SIZE, NULL));
	vcpu_run(vcpu);
	expect_mmio(vcpu, HOLE_GPA + 0x1008, 8, false, OLD_ANSWER, "read at the old place");
	vcpu_run(vcpu);
	expect_ucall(vcpu, 2, "after the move");

	ASSERT_EQ(0, set_region(vm, HOLE_SLOT, KVM_MEM_PCI_HOLE, MOVED_GPA, 0, NULL));
	vcpu_run(vcpu);
	expect_mmio(vcpu, MOVED_GPA + 0x1008, 8, false, GONE_ANSWER, "read after the delete");
	vcpu_run(vcpu);
	expect_ucall(vcpu, 3, "after the delete");

	mem = mmap(NULL, HOLE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, mem);
	for (i = 0; i < HOLE_SIZE / 8; i++)
		mem[i] = MEM_PATTERN;
	ASSERT_EQ(0, set_region(vm, MEM_SLOT, 0, HOLE_GPA, HOLE_SIZE, mem));
	vcpu_run(vcpu);
	expect_ucall(vcpu, 4, "memory in the hole's place");

	ASSERT_EQ(0, set_region(vm, MEM_SLOT, 0, HOLE_GPA, 0, NULL));
	ASSERT_EQ(0, set_region(vm, HOLE_SLOT, KVM_MEM_PCI_HOLE, HOLE_GPA, HOLE_SIZE, NULL));
	vcpu_run(vcpu);
	expect_ucall(vcpu, -1, "a hole again");
	munmap(mem, HOLE_SIZE);
	kvm_vm_free(vm);
}

/* ---- INS into the hole ---- */

static void guest_ins(uint64_t gpa)
{
	uint64_t rdi = gpa, rcx = 4;

	asm volatile("rep insb" : "+D"(rdi), "+c"(rcx) : "d"(PORT) : "memory");
	GUEST_ASSERT_EQ(rdi, gpa + 4);
	GUEST_ASSERT_EQ(rcx, 0);
	GUEST_DONE();
}

/*
 * REP INSB of 4 bytes to @gpa. Whatever the split into exits, the four bytes
 * must come back as MMIO writes to @gpa..@gpa+3 (what the C KVM's emulator
 * does for an address without a slot), or KVM_RUN must end with
 * KVM_EXIT_INTERNAL_ERROR (what api.rst promises for an instruction kvm-rs
 * cannot emulate on MMIO). Returns false in the latter case.
 */
static bool run_ins(struct kvm_vcpu *vcpu, uint64_t gpa, const char *what)
{
	static const uint8_t data[4] = { 0xa1, 0xb2, 0xc3, 0xd4 };
	struct kvm_run *run = vcpu->run;
	uint32_t in = 0, written = 0, i;

	for (;;) {
		int r = __vcpu_run(vcpu);

		TEST_ASSERT(r == 0, "%s: KVM_RUN failed with errno %d (%s) after %u bytes in, "
			    "%u written; expected an MMIO exit or KVM_EXIT_INTERNAL_ERROR",
			    what, errno, strerror(errno), in, written);
		if (run->exit_reason == KVM_EXIT_IO && run->io.port == PORT) {
			uint8_t *p = (uint8_t *)run + run->io.data_offset;

			TEST_ASSERT(run->io.direction == KVM_EXIT_IO_IN && run->io.port == PORT &&
				    run->io.size == 1 && in + run->io.count <= 4,
				    "%s: I/O exit dir %d port 0x%x size %d count %u", what,
				    run->io.direction, run->io.port, run->io.size, run->io.count);
			for (i = 0; i < run->io.count; i++)
				p[i] = data[in++];
		} else if (run->exit_reason == KVM_EXIT_MMIO) {
			TEST_ASSERT(run->mmio.is_write && run->mmio.phys_addr == gpa + written &&
				    written + run->mmio.len <= in,
				    "%s: MMIO %s 0x%llx len %u after %u bytes in, %u written", what,
				    run->mmio.is_write ? "write" : "read", run->mmio.phys_addr,
				    run->mmio.len, in, written);
			for (i = 0; i < run->mmio.len; i++)
				TEST_ASSERT(run->mmio.data[i] == data[written + i],
					    "%s: byte %u is 0x%x", what, written + i,
					    run->mmio.data[i]);
			written += run->mmio.len;
		} else if (run->exit_reason == KVM_EXIT_INTERNAL_ERROR) {
			pr_info("%s: KVM_EXIT_INTERNAL_ERROR, suberror %u, after %u bytes in\n",
				what, run->internal.suberror, in);
			return false;
		} else {
			expect_ucall(vcpu, -1, what);
			TEST_ASSERT(in == 4 && written == 4, "%s: %u bytes in, %u written",
				    what, in, written);
			return true;
		}
	}
}

TEST(ins_to_mmio)
{
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;

	/* Both KVMs: an address without a slot. */
	vm = vm_create_with_one_vcpu(&vcpu, guest_ins);
	virt_map(vm, NOSLOT_GPA, NOSLOT_GPA, 1);
	vcpu_args_set(vcpu, 1, NOSLOT_GPA);
	pr_info("%s: INS to an address without a slot: %s\n", kvm_rs_kvm_name(),
		run_ins(vcpu, NOSLOT_GPA, "INS without a slot") ? "MMIO writes" : "internal error");
	kvm_vm_free(vm);
}

TEST(ins_into_hole)
{
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;

	if (!has_hole())
		SKIP(return, "no KVM_CAP_KVMRS_PCI_HOLE (%s)", kvm_rs_kvm_name());
	vm = hole_vm(&vcpu, guest_ins);
	vcpu_args_set(vcpu, 1, HOLE_GPA + 0x100);
	pr_info("INS into the hole: %s\n",
		run_ins(vcpu, HOLE_GPA + 0x100, "INS into the hole") ? "MMIO writes" :
								      "internal error");
	kvm_vm_free(vm);
}

TEST_HARNESS_MAIN
