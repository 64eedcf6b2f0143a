#!/usr/bin/env bash
# The crash/kexec end-to-end test of the VMX backend, under Bochs: the test VM
# boots with a crashkernel= reservation, runs kvm-rs, loads the same kernel as
# crash kernel (kexec -p, Debian's kexec-tools copied into the image), starts
# guests on every CPU and crashes with sysrq-c (scripts/vm/crash-post.sh). The
# crash kernel reports the result: it booted, with /proc/vmcore.
#   scripts/crash-test.sh [KVM=rs|c] [SMP=2] [STALL=host seconds]
set -uo pipefail
. "$(dirname "$0")/env.sh"
KVM=rs; SMP=2; STALL=${STALL:-1200}
for a in "$@"; do case "$a" in KVM=*|SMP=*|STALL=*) eval "${a%%=*}=\${a#*=}" ;; *) echo "unknown $a" >&2; exit 2 ;; esac; done
KEXEC=$(command -v kexec || echo /usr/sbin/kexec)
[ -x "$KEXEC" ] || { echo "crash-test: kexec missing (apt-get install kexec-tools; scripts/setup-deps.sh)" >&2; exit 2; }
X=$(mktemp -d "${TMPDIR:-/tmp}/kvmrs-crash.XXXXXX")
trap 'rm -rf "$X"' EXIT
mkdir -p "$X/usr/sbin" "$X/boot" "$X/tests/kvm-rs"
cp "$KEXEC" "$X/usr/sbin/kexec"
# The shared libraries kexec needs, at the paths the loader looks for.
ldd "$KEXEC" | awk '/=>/ { print $3 } /^\t\/lib/ { print $1 }' | while read -r lib; do
  [ -f "$lib" ] || continue
  mkdir -p "$X$(dirname "$lib")"; cp -L "$lib" "$X$lib"
done
cp "$KTREE/arch/x86/boot/bzImage" "$X/boot/bzImage"
strip -o "$X/tests/kvm-rs/kvm_rs_spin" "$SELFTEST_OUT/project/kvm_rs_spin"
EXTRA_ROOT=$X bash "$KVMRS_ROOT/scripts/vmtest.sh" EMU=bochs KVM="$KVM" SMP="$SMP" STALL="$STALL" \
  TESTS="kvm-rs/kvm_rs_demo" POST="$KVMRS_ROOT/scripts/vm/crash-post.sh" POST_TESTS="kvm-rs/crash_kexec" \
  APPEND="crashkernel=160M" EXPECT=/dev/null
