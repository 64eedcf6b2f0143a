// SPDX-License-Identifier: GPL-2.0
/*
 * KVM statistics: KVM_GET_STATS_FD on VM and vCPU fds, and kvm-rs's metricfs
 * export under /sys/kernel/debug/kvm-rs.
 *
 * A real-mode guest makes a known number of exits (6 OUT, 7 CPUID, 3 MMIO,
 * 2 HLT); the binary stats must count them. The statistics the C KVM has are
 * checked on both modules; kvm-rs's own (cpuid_exits, npt_faults,
 * memslot_changes...) and the metricfs files only where they exist, i.e. on
 * kvm-rs: there every metricfs row of the VM must equal the binary stats of
 * the same VM, statistic by statistic.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/kvm.h>

#include "kselftest_harness.h"

#define METRICFS "/sys/kernel/debug/kvm-rs"
/* The C KVM's name size (include/linux/kvm_types.h); the header says it too. */
#define KVM_STATS_NAME_SIZE 48
#define CODE_GPA 0x1000
#define MMIO_GPA 0x4000
#define PORT_LOOP 0x10
#define PORT_DONE 0x12

#define N_OUT 5
#define N_CPUID 7
#define N_MMIO_WRITE 2
#define N_MMIO_READ 1
#define N_HLT 2

/* 16-bit real-mode guest at CODE_GPA; the counts above are baked in. */
static const unsigned char guest_code[] = {
	0xb9, N_OUT, 0x00,		/* mov cx, N_OUT */
	0xe6, PORT_LOOP,		/* 1: out PORT_LOOP, al */
	0xe2, 0xfc,			/* loop 1b */
	0xbe, N_CPUID, 0x00,		/* mov si, N_CPUID */
	0x66, 0x31, 0xc0,		/* 2: xor eax, eax */
	0x0f, 0xa2,			/* cpuid */
	0x4e,				/* dec si */
	0x75, 0xf8,			/* jnz 2b */
	0xbb, 0x00, MMIO_GPA >> 8,	/* mov bx, MMIO_GPA */
	0x88, 0x07,			/* mov [bx], al */
	0x88, 0x07,			/* mov [bx], al */
	0x8a, 0x07,			/* mov al, [bx] */
	0xf4,				/* hlt */
	0xf4,				/* hlt */
	0xe6, PORT_DONE,		/* out PORT_DONE, al */
	0xeb, 0xfe,			/* jmp $ */
};

/* A stats file read whole. */
struct stats {
	struct kvm_stats_header h;
	char id[KVM_STATS_NAME_SIZE];
	char *desc;		/* num_desc descriptors of desc_size bytes */
	size_t desc_size;
	uint64_t *data;
	size_t data_size;	/* bytes */
	char *raw;		/* the whole file */
	size_t size;
};

static int stats_read(int fd, struct stats *s)
{
	size_t i;

	memset(s, 0, sizeof(*s));
	if (pread(fd, &s->h, sizeof(s->h), 0) != sizeof(s->h))
		return -1;
	if (s->h.name_size != KVM_STATS_NAME_SIZE)
		return -1;
	if (pread(fd, s->id, sizeof(s->id), s->h.id_offset) != sizeof(s->id))
		return -1;
	s->desc_size = sizeof(struct kvm_stats_desc) + s->h.name_size;
	s->desc = calloc(s->h.num_desc, s->desc_size);
	if (pread(fd, s->desc, s->h.num_desc * s->desc_size, s->h.desc_offset) !=
	    (ssize_t)(s->h.num_desc * s->desc_size))
		return -1;
	for (i = 0; i < s->h.num_desc; i++) {
		struct kvm_stats_desc *d = (void *)(s->desc + i * s->desc_size);
		size_t end = d->offset + d->size * 8;

		if (end > s->data_size)
			s->data_size = end;
	}
	s->data = calloc(1, s->data_size);
	if (pread(fd, s->data, s->data_size, s->h.data_offset) != (ssize_t)s->data_size)
		return -1;
	s->size = s->h.data_offset + s->data_size;
	s->raw = calloc(1, s->size + 64);
	if (pread(fd, s->raw, s->size + 64, 0) != (ssize_t)s->size)
		return -1;
	return 0;
}

static void stats_free(struct stats *s)
{
	free(s->desc);
	free(s->data);
	free(s->raw);
}

static struct kvm_stats_desc *stats_desc(struct stats *s, size_t i)
{
	return (void *)(s->desc + i * s->desc_size);
}

static struct kvm_stats_desc *stats_find(struct stats *s, const char *name)
{
	size_t i;

	for (i = 0; i < s->h.num_desc; i++)
		if (!strcmp(stats_desc(s, i)->name, name))
			return stats_desc(s, i);
	return NULL;
}

/* The first element of statistic @name, or -1 if there is none. */
static int64_t stat_of(struct stats *s, const char *name)
{
	struct kvm_stats_desc *d = stats_find(s, name);

	return d ? (int64_t)s->data[d->offset / 8] : -1;
}

static int64_t fd_stat(int fd, const char *name)
{
	struct stats s;
	int64_t v;

	if (stats_read(fd, &s))
		return -2;
	v = stat_of(&s, name);
	stats_free(&s);
	return v;
}

static int have_metricfs(void)
{
	struct stat st;

	return !stat(METRICFS, &st);
}

/* Reads a whole file into a NUL-terminated buffer; NULL on error. */
static char *slurp(const char *path, size_t *len)
{
	size_t cap = 4096, n = 0;
	char *buf = malloc(cap + 1);
	int fd = open(path, O_RDONLY);
	ssize_t r;

	if (fd < 0) {
		free(buf);
		return NULL;
	}
	while ((r = read(fd, buf + n, cap - n)) > 0) {
		n += r;
		if (n == cap) {
			cap *= 2;
			buf = realloc(buf, cap + 1);
		}
	}
	close(fd);
	if (r < 0) {
		free(buf);
		return NULL;
	}
	buf[n] = 0;
	if (len)
		*len = n;
	return buf;
}

static char *metric_file(const char *metric, const char *file, size_t *len)
{
	char path[256];

	snprintf(path, sizeof(path), METRICFS "/%s/%s", metric, file);
	return slurp(path, len);
}

/*
 * The value of metric @name in the row of VM @label (and vCPU @vcpu, bucket
 * @bucket where the metric has those fields). Returns the number of matching
 * rows (0 or 1 expected), the value in *value.
 */
static int metric_value(const char *name, const char *label, int vcpu, int bucket,
			int nfields, uint64_t *value)
{
	char *buf = metric_file(name, "values", NULL), *line, *save;
	int found = 0;

	if (!buf)
		return -1;
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char vm[64];
		unsigned long long a, b, c;
		int n;

		switch (nfields) {
		case 2:
			n = sscanf(line, "%63s %llu", vm, &a);
			if (n == 2 && !strcmp(vm, label)) {
				*value = a;
				found++;
			}
			break;
		case 3:	/* vm bucket value, or vm vcpu value */
			n = sscanf(line, "%63s %llu %llu", vm, &a, &b);
			if (n == 3 && !strcmp(vm, label) &&
			    (int)a == (vcpu >= 0 ? vcpu : bucket)) {
				*value = b;
				found++;
			}
			break;
		case 4:
			n = sscanf(line, "%63s %llu %llu %llu", vm, &a, &b, &c);
			if (n == 4 && !strcmp(vm, label) && (int)a == vcpu && (int)b == bucket) {
				*value = c;
				found++;
			}
			break;
		}
	}
	free(buf);
	return found;
}

FIXTURE(guest) {
	int kvm, vm, vcpu;
	struct kvm_run *run;
	size_t run_size;
	void *mem;
	char label[64];
};

FIXTURE_SETUP(guest)
{
	struct kvm_userspace_memory_region r = {
		.slot = 0, .guest_phys_addr = 0, .memory_size = 0x2000,
	};
	struct kvm_sregs sregs;
	struct kvm_regs regs;

	self->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	ASSERT_GE(self->kvm, 0);
	ASSERT_EQ(1, ioctl(self->kvm, KVM_CHECK_EXTENSION, KVM_CAP_BINARY_STATS_FD));
	self->vm = ioctl(self->kvm, KVM_CREATE_VM, 0);
	ASSERT_GE(self->vm, 0);
	snprintf(self->label, sizeof(self->label), "%d-%d", getpid(), self->vm);
	self->mem = mmap(NULL, 0x2000, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, self->mem);
	memcpy((char *)self->mem + CODE_GPA, guest_code, sizeof(guest_code));
	r.userspace_addr = (uintptr_t)self->mem;
	ASSERT_EQ(0, ioctl(self->vm, KVM_SET_USER_MEMORY_REGION, &r));
	self->vcpu = ioctl(self->vm, KVM_CREATE_VCPU, 0);
	ASSERT_GE(self->vcpu, 0);
	self->run_size = ioctl(self->kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	self->run = mmap(NULL, self->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, self->vcpu, 0);
	ASSERT_NE(MAP_FAILED, self->run);
	ASSERT_EQ(0, ioctl(self->vcpu, KVM_GET_SREGS, &sregs));
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	ASSERT_EQ(0, ioctl(self->vcpu, KVM_SET_SREGS, &sregs));
	memset(&regs, 0, sizeof(regs));
	regs.rip = CODE_GPA;
	regs.rflags = 2;
	ASSERT_EQ(0, ioctl(self->vcpu, KVM_SET_REGS, &regs));
}

FIXTURE_TEARDOWN(guest)
{
	if (self->run != MAP_FAILED && self->run)
		munmap(self->run, self->run_size);
	if (self->vcpu >= 0)
		close(self->vcpu);
	if (self->vm >= 0)
		close(self->vm);
	close(self->kvm);
	munmap(self->mem, 0x2000);
}

/*
 * Runs the guest to its last OUT; checks the exits user space sees, with
 * @writes MMIO write exits (fewer if writes are coalesced).
 */
static void run_guest_writes(struct __test_metadata *_metadata, FIXTURE_DATA(guest) *self,
			     int expect_writes)
{
	int outs = 0, writes = 0, reads = 0, hlts = 0, i;

	for (i = 0; i < 100; i++) {
		ASSERT_EQ(0, ioctl(self->vcpu, KVM_RUN, 0)) TH_LOG("KVM_RUN: %s", strerror(errno));
		switch (self->run->exit_reason) {
		case KVM_EXIT_IO:
			ASSERT_EQ(KVM_EXIT_IO_OUT, self->run->io.direction);
			if (self->run->io.port == PORT_DONE)
				goto done;
			ASSERT_EQ(PORT_LOOP, self->run->io.port);
			outs++;
			break;
		case KVM_EXIT_MMIO:
			ASSERT_EQ(MMIO_GPA, self->run->mmio.phys_addr);
			if (self->run->mmio.is_write) {
				writes++;
			} else {
				self->run->mmio.data[0] = 0x5a;
				reads++;
			}
			break;
		case KVM_EXIT_HLT:
			hlts++;
			break;
		default:
			ASSERT_TRUE(0) TH_LOG("unexpected exit %u", self->run->exit_reason);
		}
	}
	ASSERT_TRUE(0) TH_LOG("the guest did not finish");
done:
	ASSERT_EQ(N_OUT, outs);
	ASSERT_EQ(expect_writes, writes);
	ASSERT_EQ(N_MMIO_READ, reads);
	ASSERT_EQ(N_HLT, hlts);
}

static void run_guest(struct __test_metadata *_metadata, FIXTURE_DATA(guest) *self)
{
	run_guest_writes(_metadata, self, N_MMIO_WRITE);
}

TEST_F(guest, binary_stats_count_the_exits)
{
	struct kvm_userspace_memory_region del = { .slot = 0 };
	int64_t flushes;
	struct stats v, m;
	char want[64];
	int vfd, mfd;

	run_guest(_metadata, self);
	vfd = ioctl(self->vcpu, KVM_GET_STATS_FD, 0);
	ASSERT_GE(vfd, 0);
	mfd = ioctl(self->vm, KVM_GET_STATS_FD, 0);
	ASSERT_GE(mfd, 0);
	ASSERT_EQ(0, stats_read(vfd, &v));
	ASSERT_EQ(0, stats_read(mfd, &m));

	/* The C KVM's ids: kvm-<pid> and kvm-<pid>/vcpu-<id>. */
	snprintf(want, sizeof(want), "kvm-%d/vcpu-0", getpid());
	EXPECT_STREQ(want, v.id);
	snprintf(want, sizeof(want), "kvm-%d", getpid());
	EXPECT_STREQ(want, m.id);

	/* Statistics of the C KVM, on both modules. */
	EXPECT_EQ(N_OUT + 1, stat_of(&v, "io_exits"));
	EXPECT_EQ(N_MMIO_WRITE + N_MMIO_READ, stat_of(&v, "mmio_exits"));
	EXPECT_EQ(N_HLT, stat_of(&v, "halt_exits"));
	EXPECT_GE(stat_of(&v, "exits"), N_OUT + 1 + N_CPUID + N_MMIO_WRITE + N_MMIO_READ + N_HLT);
	EXPECT_EQ(0, stat_of(&v, "signal_exits"));
	EXPECT_EQ(0, stat_of(&v, "blocking"));
	EXPECT_EQ(0, stat_of(&v, "hypercalls"));
	EXPECT_EQ(0, stat_of(&v, "request_irq_exits"));
	EXPECT_NE(-1, stat_of(&m, "remote_tlb_flush"));
	EXPECT_NE(-1, stat_of(&m, "remote_tlb_flush_requests"));

	/* kvm-rs's own, where they exist. */
	if (stats_find(&v, "cpuid_exits")) {
		EXPECT_EQ(N_CPUID, stat_of(&v, "cpuid_exits"));
		EXPECT_EQ(0, stat_of(&v, "msr_exits"));
		/* The code page, then every MMIO access. */
		EXPECT_GE(stat_of(&v, "npt_faults"), 1 + N_MMIO_WRITE + N_MMIO_READ);
		EXPECT_GE(stat_of(&v, "pf_fixed"), 1);
		EXPECT_EQ(N_MMIO_WRITE + N_MMIO_READ, stat_of(&v, "insn_emulation"));
		EXPECT_EQ(0, stat_of(&v, "insn_emulation_fail"));
		EXPECT_EQ(1, stat_of(&m, "memslot_changes"));
		EXPECT_EQ(0, stat_of(&m, "coalesced_writes"));
	}

	/*
	 * A slot deleted: kvm-rs unmaps it at once, with a remote TLB flush. (The
	 * C KVM invalidates the roots and zaps later, so it may not count one.)
	 */
	flushes = stat_of(&m, "remote_tlb_flush_requests");
	ASSERT_EQ(0, ioctl(self->vm, KVM_SET_USER_MEMORY_REGION, &del));
	if (stats_find(&m, "memslot_changes")) {
		EXPECT_GT(fd_stat(mfd, "remote_tlb_flush_requests"), flushes);
		EXPECT_EQ(2, fd_stat(mfd, "memslot_changes"));
	}
	stats_free(&v);
	stats_free(&m);
	close(vfd);
	close(mfd);
}

/*
 * MMIO writes into a coalesced zone go to the ring, not to user space: they
 * are not MMIO exits; kvm-rs counts them as coalesced_writes.
 */
TEST_F(guest, coalesced_writes_are_not_mmio_exits)
{
	struct kvm_coalesced_mmio_zone zone = { .addr = MMIO_GPA, .size = 0x1000 };
	struct kvm_coalesced_mmio_ring *ring;
	int vfd, mfd;

	ASSERT_EQ(0, ioctl(self->vm, KVM_REGISTER_COALESCED_MMIO, &zone));
	run_guest_writes(_metadata, self, 0);
	ring = (void *)((char *)self->run + KVM_COALESCED_MMIO_PAGE_OFFSET * getpagesize());
	/* A fresh ring: no wrap-around. */
	EXPECT_EQ(0, ring->first);
	EXPECT_EQ(N_MMIO_WRITE, ring->last);
	vfd = ioctl(self->vcpu, KVM_GET_STATS_FD, 0);
	mfd = ioctl(self->vm, KVM_GET_STATS_FD, 0);
	ASSERT_GE(vfd, 0);
	ASSERT_GE(mfd, 0);
	EXPECT_EQ(N_MMIO_READ, fd_stat(vfd, "mmio_exits"));
	if (fd_stat(mfd, "coalesced_writes") != -1) {
		EXPECT_EQ(N_MMIO_WRITE, fd_stat(mfd, "coalesced_writes"));
	}
	close(vfd);
	close(mfd);
}

/* Every byte of a stats file, whatever the offset and length of the read. */
TEST_F(guest, pread_at_any_offset)
{
	struct stats v;
	size_t pos, i;
	char buf[300];
	int fd, lens[] = { 1, 2, 7, 8, 9, 63, 64, 65, 299 };
	ssize_t n;

	run_guest(_metadata, self);
	fd = ioctl(self->vcpu, KVM_GET_STATS_FD, 0);
	ASSERT_GE(fd, 0);
	EXPECT_TRUE(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	EXPECT_EQ(O_RDONLY, fcntl(fd, F_GETFL) & O_ACCMODE);
	ASSERT_EQ(0, stats_read(fd, &v));
	for (pos = 0; pos <= v.size; pos++) {
		for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
			size_t want = v.size - pos < (size_t)lens[i] ? v.size - pos : (size_t)lens[i];

			n = pread(fd, buf, lens[i], pos);
			ASSERT_EQ((ssize_t)want, n) TH_LOG("pos %zu len %d", pos, lens[i]);
			ASSERT_EQ(0, memcmp(buf, v.raw + pos, want)) TH_LOG("pos %zu len %d", pos, lens[i]);
		}
	}
	EXPECT_EQ(0, pread(fd, buf, sizeof(buf), v.size + 1000));
	/* read(2) goes through the file in order. */
	for (pos = 0; pos < v.size; pos += n) {
		n = read(fd, buf, 100);
		ASSERT_GT(n, 0);
		ASSERT_EQ(0, memcmp(buf, v.raw + pos, n));
	}
	EXPECT_EQ(0, read(fd, buf, 100));
	EXPECT_EQ(-1, write(fd, buf, 1));
	EXPECT_EQ(-1, pread(fd, buf, 8, -1));
	EXPECT_EQ(EINVAL, errno);
	stats_free(&v);
	close(fd);
}

/*
 * kvm-rs: every statistic of the binary stats has a metricfs metric whose
 * files describe it, and whose row for this VM (and vCPU) holds the same
 * values as the binary stats.
 */
TEST_F(guest, metricfs_agrees_with_binary_stats)
{
	struct stats sets[2];
	int fds[2], s, ndirs = 0;
	struct dirent *e;
	uint64_t v = 0;
	size_t i;
	DIR *d;

	if (!have_metricfs())
		SKIP(return, "no " METRICFS " (the C KVM has no metricfs export)");
	run_guest(_metadata, self);
	fds[0] = ioctl(self->vm, KVM_GET_STATS_FD, 0);
	fds[1] = ioctl(self->vcpu, KVM_GET_STATS_FD, 0);
	ASSERT_GE(fds[0], 0);
	ASSERT_GE(fds[1], 0);
	/* The guest is stopped: nothing changes from here on. */
	ASSERT_EQ(0, stats_read(fds[0], &sets[0]));
	ASSERT_EQ(0, stats_read(fds[1], &sets[1]));

	for (s = 0; s < 2; s++) {
		for (i = 0; i < sets[s].h.num_desc; i++) {
			struct kvm_stats_desc *desc = stats_desc(&sets[s], i);
			int type = desc->flags & KVM_STATS_TYPE_MASK;
			int hist = desc->size > 1, vcpu = s == 1, b;
			int cumulative = type == KVM_STATS_TYPE_CUMULATIVE ||
					 type == KVM_STATS_TYPE_LINEAR_HIST ||
					 type == KVM_STATS_TYPE_LOG_HIST;
			char want[64], *f;

			f = metric_file(desc->name, "annotations", NULL);
			ASSERT_NE(NULL, f) TH_LOG("no metric %s", desc->name);
			EXPECT_EQ(0, strncmp(f, "DESCRIPTION ", 12)) TH_LOG("%s: %s", desc->name, f);
			EXPECT_EQ(cumulative, strstr(f, "\nCUMULATIVE\n") != NULL) TH_LOG("%s: %s", desc->name, f);
			free(f);

			snprintf(want, sizeof(want), "vm%s%s value\nstr%s%s int\n",
				 vcpu ? " vcpu" : "", hist ? " bucket" : "",
				 vcpu ? " int" : "", hist ? " int" : "");
			f = metric_file(desc->name, "fields", NULL);
			ASSERT_NE(NULL, f);
			EXPECT_STREQ(want, f) TH_LOG("%s", desc->name);
			free(f);

			f = metric_file(desc->name, "version", NULL);
			ASSERT_NE(NULL, f);
			EXPECT_STREQ("1\n", f);
			free(f);

			for (b = 0; b < desc->size; b++) {
				uint64_t got = ~0ull, want_v = sets[s].data[desc->offset / 8 + b];
				int nf = 2 + vcpu + hist;

				ASSERT_EQ(1, metric_value(desc->name, self->label, vcpu ? 0 : -1,
							  hist ? b : -1, nf, &got))
					TH_LOG("%s: no row for %s", desc->name, self->label);
				EXPECT_EQ(want_v, got) TH_LOG("%s[%d]", desc->name, b);
			}
		}
	}

	/* One directory per statistic, nothing else. */
	d = opendir(METRICFS);
	ASSERT_NE(NULL, d);
	while ((e = readdir(d))) {
		if (e->d_name[0] != '.')
			ndirs++;
	}
	closedir(d);
	EXPECT_EQ(sets[0].h.num_desc + sets[1].h.num_desc, ndirs);

	/* And the counts themselves, through metricfs. */
	EXPECT_EQ(1, metric_value("io_exits", self->label, 0, -1, 3, &v));
	EXPECT_EQ(N_OUT + 1, v);
	EXPECT_EQ(1, metric_value("cpuid_exits", self->label, 0, -1, 3, &v));
	EXPECT_EQ(N_CPUID, v);
	EXPECT_EQ(1, metric_value("halt_exits", self->label, 0, -1, 3, &v));
	EXPECT_EQ(N_HLT, v);
	EXPECT_EQ(1, metric_value("mmio_exits", self->label, 0, -1, 3, &v));
	EXPECT_EQ(N_MMIO_WRITE + N_MMIO_READ, v);
	EXPECT_EQ(1, metric_value("memslot_changes", self->label, -1, -1, 2, &v));
	EXPECT_EQ(1, v);
	stats_free(&sets[0]);
	stats_free(&sets[1]);
	close(fds[0]);
	close(fds[1]);
}

/*
 * Stats files outlive the VM and vCPU files; the VM's metricfs rows go with
 * the VM.
 */
TEST_F(guest, stats_fds_outlive_the_vm)
{
	struct stats before, after;
	int vfd, mfd;
	uint64_t v;

	run_guest(_metadata, self);
	vfd = ioctl(self->vcpu, KVM_GET_STATS_FD, 0);
	mfd = ioctl(self->vm, KVM_GET_STATS_FD, 0);
	ASSERT_GE(vfd, 0);
	ASSERT_GE(mfd, 0);
	ASSERT_EQ(0, stats_read(vfd, &before));
	munmap(self->run, self->run_size);
	self->run = NULL;
	close(self->vcpu);
	close(self->vm);
	self->vcpu = self->vm = -1;
	ASSERT_EQ(0, stats_read(vfd, &after));
	EXPECT_EQ(before.size, after.size);
	EXPECT_EQ(0, memcmp(before.raw, after.raw, before.size));
	EXPECT_EQ(N_OUT + 1, stat_of(&after, "io_exits"));
	EXPECT_GE(fd_stat(mfd, "remote_tlb_flush_requests"), 0);
	if (have_metricfs()) {
		EXPECT_EQ(0, metric_value("io_exits", self->label, 0, -1, 3, &v));
		EXPECT_EQ(0, metric_value("remote_tlb_flush", self->label, -1, -1, 2, &v));
	}
	stats_free(&before);
	stats_free(&after);
	close(vfd);
	close(mfd);
}

/* Two VMs of one process: distinct rows, each with its own counts. */
TEST(metricfs_rows_per_vm)
{
	struct kvm_userspace_memory_region r = { .memory_size = 0x1000 };
	char label[2][64], *f, *p;
	int kvm, vm[2], vcpu[2][2], i, k, fd;
	uint64_t v;
	void *mem;

	if (!have_metricfs())
		SKIP(return, "no " METRICFS " (the C KVM has no metricfs export)");
	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	ASSERT_GE(kvm, 0);
	mem = mmap(NULL, 0x4000, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, mem);
	for (i = 0; i < 2; i++) {
		vm[i] = ioctl(kvm, KVM_CREATE_VM, 0);
		ASSERT_GE(vm[i], 0);
		snprintf(label[i], sizeof(label[i]), "%d-%d", getpid(), vm[i]);
		/* VM i changes its slots i + 1 times. */
		for (k = 0; k <= i; k++) {
			r.slot = k;
			r.guest_phys_addr = k * 0x1000;
			r.userspace_addr = (uintptr_t)mem + k * 0x1000;
			ASSERT_EQ(0, ioctl(vm[i], KVM_SET_USER_MEMORY_REGION, &r));
		}
		vcpu[i][0] = ioctl(vm[i], KVM_CREATE_VCPU, 0);
		vcpu[i][1] = ioctl(vm[i], KVM_CREATE_VCPU, 1);
		ASSERT_GE(vcpu[i][0], 0);
		ASSERT_GE(vcpu[i][1], 0);
	}
	for (i = 0; i < 2; i++) {
		fd = ioctl(vm[i], KVM_GET_STATS_FD, 0);
		EXPECT_EQ(1, metric_value("memslot_changes", label[i], -1, -1, 2, &v));
		EXPECT_EQ((uint64_t)i + 1, v);
		EXPECT_EQ(i + 1, fd_stat(fd, "memslot_changes"));
		/* One row per vCPU. */
		EXPECT_EQ(1, metric_value("exits", label[i], 0, -1, 3, &v));
		EXPECT_EQ(1, metric_value("exits", label[i], 1, -1, 3, &v));
		EXPECT_EQ(0, metric_value("exits", label[i], 2, -1, 3, &v));
		close(fd);
	}
	/* Rows are ordered largest first. */
	f = metric_file("memslot_changes", "values", NULL);
	ASSERT_NE(NULL, f);
	p = strstr(f, label[1]);
	ASSERT_NE(NULL, p);
	EXPECT_TRUE(p < strstr(f, label[0]));
	free(f);
	/* VM 0 is freed once its VM and vCPU fds are closed; its rows go. */
	close(vm[0]);
	close(vcpu[0][0]);
	EXPECT_EQ(1, metric_value("memslot_changes", label[0], -1, -1, 2, &v));
	close(vcpu[0][1]);
	EXPECT_EQ(0, metric_value("memslot_changes", label[0], -1, -1, 2, &v));
	EXPECT_EQ(0, metric_value("exits", label[0], 0, -1, 3, &v));
	EXPECT_EQ(1, metric_value("memslot_changes", label[1], -1, -1, 2, &v));
	close(vcpu[1][0]);
	close(vcpu[1][1]);
	close(vm[1]);
	close(kvm);
}

/*
 * A values snapshot is capped at 64 KiB of whole rows: with many vCPUs, a
 * histogram's rows (32 per vCPU) do not all fit; the largest come first.
 */
TEST(metricfs_values_are_capped)
{
	int kvm, vm, i, n = 200;
	uint64_t prev = ~0ull;
	size_t len, rows = 0;
	char *f, *line, *save;

	if (!have_metricfs())
		SKIP(return, "no " METRICFS " (the C KVM has no metricfs export)");
	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	ASSERT_GE(kvm, 0);
	vm = ioctl(kvm, KVM_CREATE_VM, 0);
	ASSERT_GE(vm, 0);
	for (i = 0; i < n; i++)
		ASSERT_GE(ioctl(vm, KVM_CREATE_VCPU, i), 0) TH_LOG("vCPU %d: %s", i, strerror(errno));
	f = metric_file("halt_wait_hist", "values", &len);
	ASSERT_NE(NULL, f);
	EXPECT_LE(len, 65536);
	EXPECT_GT(len, 60000);
	EXPECT_EQ('\n', f[len - 1]);
	for (line = strtok_r(f, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		unsigned long long vcpu, bucket, value;
		char label[64];

		ASSERT_EQ(4, sscanf(line, "%63s %llu %llu %llu", label, &vcpu, &bucket, &value)) TH_LOG("%s", line);
		EXPECT_LE(value, prev);
		prev = value;
		rows++;
	}
	EXPECT_LT(rows, (size_t)n * 32);
	free(f);
	close(vm);
	close(kvm);
}

TEST_HARNESS_MAIN
