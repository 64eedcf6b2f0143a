#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Run with kvm-rs loaded (vmtest KVM=rs): the metricfs files under
# /sys/kernel/debug/kvm-rs are read while VMs come and go, then the module is
# unloaded with metricfs files open and loaded again. No oops, no warning, no
# file left behind, and the files open across the unload hold only their snapshot.
fail() { echo "FAIL: $*"; exit 1; }
M=/sys/kernel/debug/kvm-rs
KO=/lib/modules/kvm-rs/kvm.ko
[ -d $M ] || { echo "SKIP: no $M (not kvm-rs)"; exit 4; }
dmesg -c > /dev/null

# Readers racing VM creation and destruction. (kvm_binary_stats_test 6.12
# sizes an array by #vm and indexes it by #vcpu: keep #vcpu <= #vm.)
(while :; do cat $M/*/values > /dev/null 2>&1; done) &
reader=$!
for i in 1 2 3; do
	/tests/kvm_binary_stats_test 8 8 > /tmp/bst.log 2>&1
	rc=$?
	[ $rc = 0 ] || { kill $reader; cat /tmp/bst.log; fail "kvm_binary_stats_test: rc $rc"; }
done
kill $reader
wait $reader 2>/dev/null

# Unload with files open: one read before, one never read.
exec 3< $M/exits/values
exec 4< $M/halt_wait_hist/values
exec 5< $M/io_exits/annotations
head -c 1 <&3 > /dev/null
rmmod kvm || fail "rmmod with metricfs files open"
[ -e $M ] && fail "$M left behind"
[ -e /sys/module/kvm ] && fail "module left loaded"
# Reads after the unload: the snapshot or -EIO, never a crash.
cat <&3 > /dev/null 2>&1
cat <&4 > /dev/null 2>&1
exec 3<&- 4<&- 5<&-

insmod $KO || fail "insmod again"
[ -r $M/exits/values ] || fail "no metrics after reload"
n=$(ls $M | wc -l)
[ "$n" -gt 30 ] || fail "only $n metrics after reload"
grep -q '^DESCRIPTION ' $M/exits/annotations || fail "annotations"
[ "$(cat $M/exits/version)" = 1 ] || fail "version"

dmesg | grep -qE "Oops|BUG:|WARNING:|Call Trace|debugfs file owner" && { dmesg; fail "kernel warning or oops"; }
echo "ok: $n metrics, unload with open files and reload clean"
