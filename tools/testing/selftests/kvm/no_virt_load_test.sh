#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Run with no KVM loaded on a CPU without SVM and VMX (vmtest KVM=none CPU=qemu64,-svm):
# kvm-rs must refuse to load with a clear message and leave nothing behind.
fail() { echo "FAIL: $*"; exit 1; }
grep -qwE 'svm|vmx' /proc/cpuinfo && { echo "SKIP: this CPU has SVM or VMX"; exit 4; }
dmesg -c > /dev/null
out=$(insmod /lib/modules/kvm-rs/kvm.ko 2>&1) && fail "insmod succeeded on a CPU without SVM/VMX"
echo "insmod: $out"
case "$out" in *"not supported"*) ;; *) fail "insmod error is not EOPNOTSUPP" ;; esac
log=$(dmesg)
echo "$log" | grep -q "kvm: no hardware virtualization: the CPU has neither SVM nor VMX" ||
	fail "no clear message in dmesg"
echo "$log" | grep -qE "Oops|BUG:|WARNING:|Call Trace" && fail "kernel warning or oops"
[ -e /sys/module/kvm ] && fail "module left loaded"
[ -e /dev/kvm ] && fail "/dev/kvm left behind"
echo "ok: refused cleanly"
