#!/usr/bin/env bash
# Run KVM selftests in the test VM against kvm-rs (KVM=rs) or the C KVM of the
# same tree (KVM=c). Two emulators:
#   EMU=qemu  (default) QEMU TCG, -cpu max: emulated AMD SVM with NPT
#   EMU=bochs Bochs, corei7_skylake_x: emulated Intel VMX with EPT (scripts/vmtest-bochs.sh)
#
#   scripts/vmtest.sh KVM=rs|c [EMU=qemu|bochs] [TESTS="name ..."] [CPU=max] [SMP=2] [MEM=3G]
#                     [EXPECT=file] [RESULTS=file] [SHOW_OUTPUT=1] [CONSOLE=file]
#                     [POST=script POST_TESTS="names"] [APPEND="kernel args"] [STALL=seconds]
#
# TESTS are names as in the upstream tree (x86_64/cpuid_test) or kvm-rs/NAME for
# the project's own selftests; TESTS=all runs the 85 upstream ones. Timeouts and
# arguments come from tools/testing/selftests/kvm/upstream-tests.conf (under Bochs,
# upstream-tests.bochs.conf first). POST is a script run in the VM after the
# tests, which reports the results of POST_TESTS itself ("@@START name timeout"
# and "@@RESULT name rc s" lines on the results port); APPEND adds kernel
# command-line arguments. EXTRA_ROOT (environment) is a directory copied into
# the VM's root. Under Bochs, guest timeouts count emulated seconds (the guest
# clock follows emulated instructions), so the host-side limit of a test is
# STALL host seconds (default 1200) instead of its timeout plus a grace period.
# Prints kselftest TAP and closes with "N passed, N failed, N skipped".
# Exit status 1 when a test expected to pass did not pass, or the VM did not finish.
set -uo pipefail
. "$(dirname "$0")/env.sh"

KVM=rs; EMU=qemu; TESTS=""; CPU=""; SMP=2; MEM=""; EXPECT=""; RESULTS=""; SHOW_OUTPUT=""; CONSOLE=""
POST=""; POST_TESTS=""; APPEND=""; STALL=${STALL:-1200}
for a in "$@"; do
  case "$a" in
    KVM=*|EMU=*|TESTS=*|CPU=*|SMP=*|MEM=*|EXPECT=*|RESULTS=*|SHOW_OUTPUT=*|CONSOLE=*|POST=*|POST_TESTS=*|APPEND=*|STALL=*)
      eval "${a%%=*}=\${a#*=}" ;;
    *) echo "vmtest: unknown argument $a" >&2; exit 2 ;;
  esac
done
case "$KVM" in rs|c|none) ;; *) echo "vmtest: KVM must be rs or c" >&2; exit 2 ;; esac
case "$EMU" in qemu|bochs) ;; *) echo "vmtest: EMU must be qemu or bochs" >&2; exit 2 ;; esac
ST=$KVMRS_ROOT/tools/testing/selftests/kvm
CONF=$ST/upstream-tests.conf
CONFS=("$CONF")
if [ "$EMU" = bochs ]; then
  CONFS=("$ST/upstream-tests.bochs.conf" "$CONF")
  : "${CPU:=corei7_skylake_x}" "${MEM:=2048}"
  if [ -z "$EXPECT" ]; then
    if [ "$KVM" = c ]; then EXPECT=$ST/baseline/bochs-vmx-c.md; else EXPECT=$ST/kvm-rs.bochs.expected; fi
  fi
else
  : "${CPU:=max}" "${MEM:=3G}"
  if [ -z "$EXPECT" ]; then
    if [ "$KVM" = c ]; then EXPECT=$ST/baseline/qemu-svm-c.md; else EXPECT=$ST/kvm-rs.expected; fi
  fi
fi
[ "$TESTS" = all ] && TESTS=$(grep -v '^#' "$CONF" | awk '{print $1}')
[ -n "$TESTS" ] || { echo "vmtest: no TESTS" >&2; exit 2; }
for f in "$KTREE/arch/x86/boot/bzImage" "$IMAGES/base.cpio.gz"; do
  [ -f "$f" ] || { echo "vmtest: missing $f (run 'make build')" >&2; exit 2; }
done

# expected NAME -> PASS, SKIP, FAIL or "" (the expectation files: a markdown table
# "| name | RESULT | ..." or lines "name RESULT [# why]").
expected() {
  [ -f "$EXPECT" ] || return 0
  awk -v n="$1" '
    /^\|/ { split($0, c, "|"); gsub(/ /, "", c[2]); gsub(/ /, "", c[3]); if (c[2] == n) { print c[3]; exit } next }
    $1 == n { print $2; exit }' "$EXPECT"
}
reason() {
  [ -f "$EXPECT" ] || return 0
  awk -v n="$1" '
    /^\|/ { split($0, c, "|"); gsub(/ /, "", c[2]); if (c[2] == n) { gsub(/^ +| +$/, "", c[6]); print c[6]; exit } next }
    $1 == n { sub(/^[^#]*#? ?/, ""); print; exit }' "$EXPECT"
}

RUN=$(mktemp -d "${TMPDIR:-/tmp}/kvmrs-vmtest.XXXXXX")
QPID=""
# The emulator runs under timeout(1) (QPID): SIGTERM to timeout reaches the
# emulator, SIGKILL would leave it running. Stopped or failing, vmtest never
# leaves a VM behind (Bochs does not stop by itself).
stop_vm() { [ -n "$QPID" ] && kill -TERM $QPID 2>/dev/null; }
trap 'stop_vm; rm -rf "$RUN"' EXIT
trap 'exit 143' TERM INT HUP
n=0
for t in $TESTS $POST_TESTS; do n=$((n + 1)); done
APPEND="console=ttyS0 panic=-1 oops=panic quiet loglevel=4 $APPEND"

echo "TAP version 13"
echo "# emu: $EMU, kvm: $KVM, cpu: $CPU, smp: $SMP, expectations: ${EXPECT#$KVMRS_ROOT/}"
echo "1..$((n + 1))"
i=0; pass=0; fail=0; skip=0; xfail=0; done_seen=0; boots=0
declare -A seen=()
[ -n "$RESULTS" ] && : > "$RESULTS"
[ -n "$CONSOLE" ] && : > "$CONSOLE"

# boot LIST: one boot of the test VM running the tests of LIST. Sets
# done_seen (the guest finished the list), hung and current (a test that never
# reported). A test that hangs or brings the VM down is reported as failed
# and the remaining tests run in a new boot.
boot() {
  local list=$1 t c line tmo args total_tmo=0 l st left deadline vmboots=0 t0=$SECONDS shown
  rm -rf "$RUN/root"; mkdir -p "$RUN/root/run"
  for t in $list; do
    line=""
    for c in "${CONFS[@]}"; do
      [ -f "$c" ] || continue
      line=$(grep -E "^$t( |$)" "$c" | sed 's/ *#.*//' || true)
      [ -n "$line" ] && break
    done
    tmo=120; args=""
    if [ -n "$line" ]; then set -- $line; tmo=$2; shift 2; args="$*"; fi
    echo "$t $tmo $args" >> "$RUN/root/run/kvmrs.tests"
    total_tmo=$((total_tmo + tmo + 5))
  done
  printf 'KVM=%s\nSHOW_OUTPUT=%s\n' "$KVM" "$SHOW_OUTPUT" > "$RUN/root/run/kvmrs.conf"
  if [ -n "$POST" ]; then
    install -m 755 "$POST" "$RUN/root/run/kvmrs.post"
    total_tmo=$((total_tmo + 600))
  fi
  : > "$RUN/results"; : > "$RUN/console"
  boots=$((boots + 1))
  if [ "$EMU" = bochs ]; then
    # A small initramfs: the base image without its test binaries, plus the
    # ones this run needs (Bochs loads the CD and unpacks the archive slowly).
    [ -d "$IMAGES/rootfs" ] || { echo "vmtest: missing $IMAGES/rootfs (run 'make initramfs')" >&2; exit 2; }
    # guest_print_test always: project scripts use it to show a guest runs.
    for t in $list guest_print_test; do
      if [ -e "$IMAGES/rootfs/tests/$t" ]; then
        mkdir -p "$RUN/root/tests/$(dirname "$t")"; cp "$IMAGES/rootfs/tests/$t" "$RUN/root/tests/$t"
      fi
    done
    [ -n "${EXTRA_ROOT:-}" ] && cp -a "$EXTRA_ROOT"/. "$RUN/root/"
    [ -f "$RUN/base.cpio.gz" ] ||
      (cd "$IMAGES/rootfs" && find . -path ./tests -prune -o -print | cpio -o -H newc --quiet) | gzip -1 > "$RUN/base.cpio.gz"
    (cd "$RUN/root" && find . | cpio -o -H newc --quiet) | gzip -1 > "$RUN/run.cpio.gz"
    cat "$RUN/base.cpio.gz" "$RUN/run.cpio.gz" > "$RUN/initrd.gz"
    rm -rf "$RUN/bochs"
    timeout -s KILL $((STALL * (n + 1) + 600)) bash "$KVMRS_ROOT/scripts/vmtest-bochs.sh" "$RUN/bochs" \
      "$KTREE/arch/x86/boot/bzImage" "$RUN/initrd.gz" "$RUN/console" "$RUN/results" \
      "$SMP" "$MEM" "$CPU" "$APPEND" 2>"$RUN/qemu.err" &
    QPID=$!
  else
    [ -n "${EXTRA_ROOT:-}" ] && cp -a "$EXTRA_ROOT"/. "$RUN/root/"
    (cd "$RUN/root" && find . | cpio -o -H newc --quiet) | gzip -1 > "$RUN/run.cpio.gz"
    cat "$IMAGES/base.cpio.gz" "$RUN/run.cpio.gz" > "$RUN/initrd.gz"
    timeout -s KILL $((total_tmo + 180)) qemu-system-x86_64 -M q35 -cpu "$CPU" -smp "$SMP" -m "$MEM" \
      -display none -monitor none -no-reboot \
      -kernel "$KTREE/arch/x86/boot/bzImage" -initrd "$RUN/initrd.gz" \
      -append "$APPEND" \
      -serial "file:$RUN/console" -serial "file:$RUN/results" >/dev/null 2>"$RUN/qemu.err" &
    QPID=$!
  fi

  # Host-side watchdog: the boot must report within BOOT_TMO, and a test
  # that started must report within its timeout + HANG_GRACE (the guest's own
  # watchdog dumps the kernel state at timeout + 30 s). Otherwise the VM is
  # hung: stop it rather than wait for the sum of all timeouts. Under Bochs
  # the limit of a test is STALL host seconds (its timeout is emulated time).
  local BOOT_TMO=300 HANG_GRACE=${VMTEST_HANG_GRACE:-150}  # (override: tests of vmtest itself)
  [ "$EMU" = bochs ] && BOOT_TMO=600
  deadline=$((SECONDS + BOOT_TMO)); current="(boot)"; hung=""; done_seen=0
  while :; do
    left=$((deadline - SECONDS))
    [ $left -gt 0 ] || { hung=$current; stop_vm; break; }
    IFS= read -r -t "$left" l; st=$?
    [ $st -gt 128 ] && { hung=$current; stop_vm; break; }
    [ $st = 0 ] || break
    l=${l%$'\r'}
    case "$l" in
      "@@START "*)
        set -- ${l#@@START }; current=$1; t0=$SECONDS
        if [ "$EMU" = bochs ]; then deadline=$((SECONDS + STALL)); else deadline=$((SECONDS + $2 + HANG_GRACE)); fi ;;
      "@@BOOT "*)
        # A second boot in one VM is a reboot after a panic (Bochs has no -no-reboot).
        vmboots=$((vmboots + 1))
        [ $vmboots -gt 1 ] && { echo "# the VM rebooted"; stop_vm; break; }
        echo "# ${l#@@}" ;;
      "@@LOAD "*)
        lrc=${l##*rc=}
        if [ $boots -gt 1 ] && [ "$lrc" = 0 ]; then continue; fi
        i=$((i + 1))
        if [ "$lrc" = 0 ]; then echo "ok $i selftests: kvm: load $KVM module"; pass=$((pass + 1))
        else echo "not ok $i selftests: kvm: load $KVM module # insmod rc $lrc"; fail=$((fail + 1)); fi ;;
      "@@LOG "*) echo "# ${l#@@LOG }" ;;
      "@@RESULT "*)
        set -- ${l#@@RESULT }; name=$1; rc=$2; secs=$3
        i=$((i + 1)); seen[$name]=1
        exp=$(expected "$name")
        case "$rc" in 0) got=PASS ;; 4) got=SKIP ;; *) got=FAIL ;; esac
        [ -n "$RESULTS" ] && echo "$name $got $rc $secs" >> "$RESULTS"
        current="(between tests)"; deadline=$((SECONDS + BOOT_TMO))
        # Under Bochs guest seconds are emulated ones: host seconds beside them.
        shown="${secs}s"; [ "$EMU" = bochs ] && shown="${secs}s emulated, $((SECONDS - t0))s host"
        if [ "$got" = PASS ]; then
          echo "ok $i selftests: kvm: $name # $shown"; pass=$((pass + 1))
        elif [ "$got" = SKIP ] && [ "$exp" != PASS ]; then
          echo "ok $i selftests: kvm: $name # SKIP"; skip=$((skip + 1))
        elif [ "$got" = FAIL ] && [ "$exp" = FAIL ]; then
          echo "not ok $i selftests: kvm: $name # TODO expected failure (rc $rc): $(reason "$name")"; xfail=$((xfail + 1))
        else
          echo "not ok $i selftests: kvm: $name # rc $rc, $shown, expected ${exp:-PASS}"; fail=$((fail + 1))
        fi ;;
      "@@DONE") done_seen=1; break ;;
    esac
  done < <(tail -n +1 -f --pid=$QPID "$RUN/results" 2>/dev/null)
  # QEMU stops by itself (-no-reboot); Bochs would boot the CD again.
  [ "$EMU" = bochs ] && stop_vm
  wait $QPID 2>/dev/null
  QPID=""
  [ -n "$CONSOLE" ] && cat "$RUN/console" >> "$CONSOLE"
  [ -n "$CONSOLE" ] && [ -f "$RUN/bochs/bochs.log" ] && cat "$RUN/bochs/bochs.log" >> "$CONSOLE.bochs"
  return 0
}

remaining=$TESTS
while :; do
  boot "$remaining"
  [ $done_seen = 1 ] && break
  # The VM hung or went down before the list was done.
  if [ $i -eq 0 ]; then
    i=1; echo "not ok 1 selftests: kvm: load $KVM module # the VM did not boot"; fail=$((fail + 1))
  elif [ -n "$hung" ] && [ "$current" != "(between tests)" ] && [ "$current" != "(boot)" ]; then
    i=$((i + 1)); seen[$current]=1
    echo "not ok $i selftests: kvm: $current # hung: no result within $([ "$EMU" = bochs ] && echo "${STALL}s of host time" || echo "its timeout plus the grace period"); the host stopped the VM"
    [ -n "$RESULTS" ] && echo "$current FAIL hang -" >> "$RESULTS"
    fail=$((fail + 1))
  elif [ -n "$current" ] && [ "$current" != "(between tests)" ] && [ "$current" != "(boot)" ]; then
    i=$((i + 1)); seen[$current]=1
    echo "not ok $i selftests: kvm: $current # the VM went down during this test"
    fail=$((fail + 1))
  fi
  echo "# ---- VM console (last $([ -n "$hung" ] && echo 250 || echo 60) lines) ----"
  tail -$([ -n "$hung" ] && echo 250 || echo 60) "$RUN/console" | sed 's/^/# /'
  [ -s "$RUN/qemu.err" ] && sed 's/^/# qemu: /' "$RUN/qemu.err"
  next=""
  for t in $TESTS; do [ -n "${seen[$t]:-}" ] || next="$next $t"; done
  # Only a boot that got somewhere earns another: no endless reboots.
  [ -n "$next" ] && [ "$next" != " $remaining" ] && [ $boots -lt 5 ] || break
  echo "# restarting the VM for the remaining tests:$next"
  remaining=$next
done

for t in $TESTS $POST_TESTS; do
  if [ -z "${seen[$t]:-}" ]; then
    i=$((i + 1)); echo "not ok $i selftests: kvm: $t # no result: the VM stopped or timed out"; fail=$((fail + 1))
  fi
done
if [ $done_seen = 1 ] && [ $fail -gt 0 ]; then
  echo "# ---- VM console (last 60 lines) ----"
  tail -60 "$RUN/console" | sed 's/^/# /'
  [ -s "$RUN/qemu.err" ] && sed 's/^/# qemu: /' "$RUN/qemu.err"
fi
[ $xfail -gt 0 ] && echo "# $xfail expected failure(s) (TODO): see ${EXPECT#$KVMRS_ROOT/}"
echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ] && [ $done_seen = 1 ] && [ $boots = 1 ]
