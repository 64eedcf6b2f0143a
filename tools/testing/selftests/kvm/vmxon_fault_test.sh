#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Run with no KVM loaded on a VMX CPU, with two CPUs (vmtest EMU=bochs KVM=none
# TESTS=kvm-rs/vmxon_fault_test). kvm-rs loaded with vmxon_fault_test=N makes
# VMXON fail on purpose: 1 with a bad VMXON region (VMfailInvalid), 2 with a
# fault (#GP, caught by the exception fixup) on every CPU, 3 with a fault on
# the last CPU only, after the others entered VMX operation (their rollback is
# tested). Each time the module must refuse to load with the reason in dmesg,
# no oops or warning, nothing left behind; then the C kvm-intel must load (it
# refuses with EBUSY if any CPU still has CR4.VMXE set), and kvm-rs must load
# normally and run a guest.
fail() { echo "FAIL: $*"; exit 1; }
grep -qw vmx /proc/cpuinfo || { echo "SKIP: this CPU has no VMX"; exit 4; }
[ -e /sys/module/kvm ] && fail "a KVM module is already loaded"
KO=/lib/modules/kvm-rs/kvm.ko
KI=/lib/modules/kvm-rs/kvm_intel.ko
C=/lib/modules/c
echo "cpus: $(grep -c ^processor /proc/cpuinfo)"
grep -m1 "^vmx flags" /proc/cpuinfo
grep -m1 "^flags" /proc/cpuinfo | grep -qw cpuid_fault && echo "CPUID faulting: yes" || echo "CPUID faulting: no"
for mode in 1 2 3; do
	dmesg -c > /dev/null
	out=$(insmod $KO vmxon_fault_test=$mode 2>&1) && fail "mode $mode: insmod succeeded"
	log=$(dmesg)
	echo "mode $mode: insmod: $out"
	echo "$log" | grep "vmx:" | sed 's/^/  dmesg: /'
	case $mode in
	1) want="VMfailInvalid" ;;
	*) want="VMXON faulted" ;;
	esac
	echo "$log" | grep -q "vmx: cannot enable VMX on CPU .*$want.*CR4.VMXE left clear" ||
		fail "mode $mode: no message saying '$want'"
	echo "$log" | grep -qE "Oops|BUG:|WARNING:|Call Trace" && fail "mode $mode: kernel warning or oops"
	[ -e /sys/module/kvm ] && fail "mode $mode: module left loaded"
	[ -e /dev/kvm ] && fail "mode $mode: /dev/kvm left behind"
done
# Every CPU left VMX operation with CR4.VMXE clear: kvm-intel can take them.
dmesg -c > /dev/null
insmod $C/irqbypass.ko && insmod $C/kvm.ko && insmod $C/kvm-intel.ko || {
	dmesg | tail -5; fail "the C kvm-intel does not load after the failures"; }
echo "C kvm-intel loaded after the failures"
rmmod kvm_intel kvm irqbypass || fail "cannot unload the C KVM"
# kvm_intel.ko (the VMX backend's parameters) describes a backend in use:
# it refuses to load while VMX is off.
insmod $KI 2>/dev/null && fail "kvm_intel.ko loaded without kvm-rs"
# And kvm-rs itself loads and runs a guest.
dmesg -c > /dev/null
insmod $KO || { dmesg | tail -5; fail "kvm-rs does not load normally afterwards"; }
dmesg | grep "vmx:" | sed 's/^/  dmesg: /'
insmod $KI || fail "kvm_intel.ko does not load after kvm-rs"
for p in ept unrestricted_guest vpid nested enable_apicv; do
	echo "kvm_intel.$p=$(cat /sys/module/kvm_intel/parameters/$p)"
done
[ "$(cat /sys/module/kvm_intel/parameters/ept)" = Y ] || fail "kvm_intel.ept is not Y"
[ "$(cat /sys/module/kvm_intel/parameters/nested)" = N ] || fail "kvm_intel.nested is not N"
if [ -x /tests/guest_print_test ]; then
	/tests/guest_print_test > /tmp/gpt.log 2>&1 || { tail -5 /tmp/gpt.log; fail "guest_print_test failed"; }
	echo "guest_print_test passed on kvm-rs"
fi
rmmod kvm_intel kvm || fail "cannot unload kvm-rs"
dmesg | grep -qE "Oops|BUG:|WARNING:|Call Trace" && fail "kernel warning or oops"
echo "ok: VMXON failures refused cleanly, kvm-intel and kvm-rs load afterwards"
