/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Small helpers shared by the project selftests: which KVM module answers,
 * and the kernel log (to look for oopses and warnings a test provoked).
 */
#ifndef KVM_RS_UTIL_H
#define KVM_RS_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/klog.h>
#include <unistd.h>

#include <linux/kvm.h>

/*
 * Which KVM answers /dev/kvm. Tests use this only where kvm-rs differs from
 * the C KVM on purpose, and say why at the place they use it. The module
 * names do not tell (kvm-rs loads a kvm_amd.ko too, for its parameters), so
 * ask the ABI: only kvm-rs knows KVM_CAP_KVMRS_PCI_HOLE
 * (include/uapi/linux/kvm_rs.h), which the C KVM answers with 0.
 */
#define KVM_RS_CAP_PCI_HOLE	0x4b520001

static inline bool kvm_rs_is_kvm_rs(void)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	bool rs;

	if (fd < 0)
		return false;
	rs = ioctl(fd, KVM_CHECK_EXTENSION, KVM_RS_CAP_PCI_HOLE) > 0;
	close(fd);
	return rs;
}

static inline bool kvm_rs_is_c_kvm(void)
{
	return access("/sys/module/kvm", F_OK) == 0 && !kvm_rs_is_kvm_rs();
}

static inline const char *kvm_rs_kvm_name(void)
{
	if (access("/sys/module/kvm", F_OK) != 0)
		return "no KVM module";
	if (kvm_rs_is_kvm_rs())
		return "kvm-rs (module kvm)";
	if (access("/sys/module/kvm_amd", F_OK) == 0)
		return "the C KVM (kvm + kvm_amd)";
	if (access("/sys/module/kvm_intel", F_OK) == 0)
		return "the C KVM (kvm + kvm_intel)";
	return "the C KVM (kvm, no vendor module)";
}

/* The kernel log (malloc'd, NUL-terminated), or NULL. */
static inline char *kvm_rs_read_klog(void)
{
	int size = klogctl(10 /* SYSLOG_ACTION_SIZE_BUFFER */, NULL, 0);
	char *buf;
	int n;

	if (size <= 0)
		return NULL;
	buf = malloc(size + 1);
	if (!buf)
		return NULL;
	n = klogctl(3 /* SYSLOG_ACTION_READ_ALL */, buf, size);
	if (n < 0) {
		free(buf);
		return NULL;
	}
	buf[n] = 0;
	return buf;
}

/*
 * The first line of the kernel log that looks like a kernel bug report
 * (oops, BUG, WARNING, an OOM kill), copied into @line; false if none.
 */
static inline bool kvm_rs_klog_has_bug(char *line, size_t len)
{
	static const char *const pats[] = {
		"BUG:", "Oops", "WARNING:", "Kernel panic", "Killed process",
		"general protection fault", "Unable to handle",
	};
	char *log = kvm_rs_read_klog(), *p, *save = NULL;
	bool found = false;
	unsigned int i;

	if (!log)
		return false;
	for (p = strtok_r(log, "\n", &save); p && !found; p = strtok_r(NULL, "\n", &save)) {
		for (i = 0; i < sizeof(pats) / sizeof(pats[0]); i++) {
			if (strstr(p, pats[i])) {
				snprintf(line, len, "%s", p);
				found = true;
				break;
			}
		}
	}
	free(log);
	return found;
}

/*
 * The last line of the whole kernel log (/dev/kmsg, which a "dmesg -c" does
 * not empty) containing @needle, without its record header, copied into @line.
 */
static inline bool kvm_rs_kmsg_find(const char *needle, char *line, size_t len)
{
	char rec[2048];
	bool found = false;
	ssize_t n;
	int fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK);

	if (fd < 0)
		return false;
	for (;;) {
		n = read(fd, rec, sizeof(rec) - 1);
		if (n < 0 && errno == EPIPE)
			continue;	/* overwritten records: go on */
		if (n <= 0)
			break;
		rec[n] = 0;
		if (strstr(rec, needle)) {
			char *msg = strchr(rec, ';');

			msg = msg ? msg + 1 : rec;
			msg[strcspn(msg, "\n")] = 0;
			snprintf(line, len, "%s", msg);
			found = true;
		}
	}
	close(fd);
	return found;
}

#endif /* KVM_RS_UTIL_H */
