/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * kvm-rs extensions of the KVM API (include/uapi/linux/kvm.h).
 *
 * Numbers are chosen not to collide with anything in Linux 6.12's KVM API:
 * memory-slot flags use bit 15, the highest of the 16 flag bits visible to
 * user space (bits 16 and up are internal to the C KVM); capabilities are
 * numbered from 0x4b520000 ("KR"), far above the C KVM's.
 * See Documentation/virt/kvm-rs/api.rst.
 */
#ifndef _UAPI_LINUX_KVM_RS_H
#define _UAPI_LINUX_KVM_RS_H

/*
 * KVM_MEM_PCI_HOLE: a memory slot with no memory behind it (userspace_addr
 * must be 0). Guest reads of any size return all ones without an exit;
 * guest writes exit to user space as KVM_EXIT_MMIO. Not combinable with
 * KVM_MEM_READONLY or KVM_MEM_LOG_DIRTY_PAGES; cannot be toggled on an
 * existing slot.
 */
#define KVM_MEM_PCI_HOLE		(1UL << 15)

/*
 * KVM_CHECK_EXTENSION: 1 if KVM_MEM_PCI_HOLE is available; it is accepted once
 * KVM_ENABLE_CAP(KVM_CAP_KVMRS_PCI_HOLE) (no flags, no arguments) was done on
 * the VM fd.
 */
#define KVM_CAP_KVMRS_PCI_HOLE		0x4b520001

#endif /* _UAPI_LINUX_KVM_RS_H */
