#!/bin/sh
# Run in the test VM after the tests (vmtest POST=, from scripts/crash-test.sh):
# loads a crash kernel (the same bzImage) with kexec -p, starts guests on
# kvm-rs on every CPU, and crashes the host with sysrq-c. The crash path must
# VMCLEAR the loaded VMCSs and leave VMX on every CPU; the crash kernel then
# boots and reports "@@RESULT kvm-rs/crash_kexec 0" itself. If the crash
# kernel does not boot, the VM reboots or hangs and the result never comes.
R=/dev/ttyS1
say() { echo "$@" > $R; }
fail() { say "@@LOG crash_kexec: $*"; say "@@RESULT kvm-rs/crash_kexec 1 0"; exit 0; }
# The host-side watchdog times this "test" from here (the crash kernel's
# boot included).
say "@@START kvm-rs/crash_kexec 600"
[ -x /usr/sbin/kexec ] || fail "no kexec in the image"
[ -f /boot/bzImage ] || fail "no /boot/bzImage in the image"
grep -q crashkernel= /proc/cmdline || fail "no crashkernel= on the command line"

# The crash kernel's initramfs: busybox and an init that reports.
C=/tmp/crashroot
mkdir -p $C/bin $C/proc $C/dev $C/sys
cp /bin/busybox $C/bin/busybox
cat > $C/init <<'EOI'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs devtmpfs /dev
v=$(/bin/busybox stat -c %s /proc/vmcore 2>/dev/null)
echo "@@LOG crash kernel booted: $(/bin/busybox uname -r), /proc/vmcore ${v:-missing} bytes, cmdline: $(/bin/busybox cat /proc/cmdline)" > /dev/ttyS1
if [ -n "$v" ]; then
	echo "@@RESULT kvm-rs/crash_kexec 0 0" > /dev/ttyS1
else
	echo "@@RESULT kvm-rs/crash_kexec 1 0" > /dev/ttyS1
fi
echo "@@DONE" > /dev/ttyS1
/bin/busybox sync
while :; do /bin/busybox sleep 100; done
EOI
chmod 755 $C/init
(cd $C && find . | cpio -o -H newc 2>/dev/null) > /tmp/crash.cpio

out=$(/usr/sbin/kexec -p /boot/bzImage --initrd=/tmp/crash.cpio \
	--append="console=ttyS0 nr_cpus=1 irqpoll reset_devices panic=-1 quiet" 2>&1) ||
	fail "kexec -p failed: $out"
[ "$(cat /sys/kernel/kexec_crash_loaded)" = 1 ] || fail "crash kernel not loaded"
say "@@LOG crash_kexec: crash kernel loaded ($(cat /sys/kernel/kexec_crash_size) bytes reserved)"

# A vCPU pinned to every CPU, run there once then halted in the guest, so
# that each CPU has a VMCS loaded when it crashes.
/tests/kvm-rs/kvm_rs_spin > /tmp/spin.log 2>&1 &
# Short sleeps: under Bochs an emulated second costs over a minute of host time.
for i in $(seq 1 600); do
	grep -q spinning /tmp/spin.log && break
	grep -q kvm_rs_spin: /tmp/spin.log && break
	sleep 0.1
done
grep -q spinning /tmp/spin.log || fail "guests did not start: $(cat /tmp/spin.log)"
say "@@LOG crash_kexec: $(cat /tmp/spin.log); crashing the host"
sync
echo c > /proc/sysrq-trigger
fail "sysrq-c returned"
