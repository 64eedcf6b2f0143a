#!/usr/bin/env bash
# Run KVM selftests in the test VM (QEMU TCG, -cpu max: emulated AMD SVM with NPT)
# against kvm-rs (KVM=rs) or the C KVM of the same tree (KVM=c).
#
#   scripts/vmtest.sh KVM=rs|c [TESTS="name ..."] [CPU=max] [SMP=2] [MEM=3G]
#                     [EXPECT=file] [RESULTS=file] [SHOW_OUTPUT=1] [CONSOLE=file]
#
# TESTS are names as in the upstream tree (x86_64/cpuid_test) or kvm-rs/NAME for
# the project's own selftests; TESTS=all runs the 85 upstream ones. Timeouts and
# arguments come from tools/testing/selftests/kvm/upstream-tests.conf.
# Prints kselftest TAP and closes with "N passed, N failed, N skipped".
# Exit status 1 when a test expected to pass did not pass, or the VM did not finish.
set -uo pipefail
. "$(dirname "$0")/env.sh"

KVM=rs; TESTS=""; CPU=max; SMP=2; MEM=3G; EXPECT=""; RESULTS=""; SHOW_OUTPUT=""; CONSOLE=""
for a in "$@"; do
  case "$a" in
    KVM=*|TESTS=*|CPU=*|SMP=*|MEM=*|EXPECT=*|RESULTS=*|SHOW_OUTPUT=*|CONSOLE=*) eval "${a%%=*}=\${a#*=}" ;;
    *) echo "vmtest: unknown argument $a" >&2; exit 2 ;;
  esac
done
case "$KVM" in rs|c|none) ;; *) echo "vmtest: KVM must be rs or c" >&2; exit 2 ;; esac
ST=$KVMRS_ROOT/tools/testing/selftests/kvm
CONF=$ST/upstream-tests.conf
if [ -z "$EXPECT" ]; then
  if [ "$KVM" = c ]; then EXPECT=$ST/baseline/qemu-svm-c.md; else EXPECT=$ST/kvm-rs.expected; fi
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
# Stopped or failing, vmtest never leaves a VM behind.
trap '[ -n "$QPID" ] && kill -TERM $QPID 2>/dev/null; rm -rf "$RUN"' EXIT
trap 'exit 143' TERM INT HUP
n=0
for t in $TESTS; do n=$((n + 1)); done

echo "TAP version 13"
echo "# kvm: $KVM, cpu: $CPU, smp: $SMP, expectations: ${EXPECT#$KVMRS_ROOT/}"
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
  local list=$1 t line tmo args total_tmo=0 l st left deadline
  rm -rf "$RUN/root"; mkdir -p "$RUN/root/run"
  for t in $list; do
    line=$(grep -E "^$t( |$)" "$CONF" | sed 's/ *#.*//' || true)
    tmo=120; args=""
    if [ -n "$line" ]; then set -- $line; tmo=$2; shift 2; args="$*"; fi
    echo "$t $tmo $args" >> "$RUN/root/run/kvmrs.tests"
    total_tmo=$((total_tmo + tmo + 5))
  done
  printf 'KVM=%s\nSHOW_OUTPUT=%s\n' "$KVM" "$SHOW_OUTPUT" > "$RUN/root/run/kvmrs.conf"
  (cd "$RUN/root" && find . | cpio -o -H newc --quiet) | gzip -1 > "$RUN/run.cpio.gz"
  cat "$IMAGES/base.cpio.gz" "$RUN/run.cpio.gz" > "$RUN/initrd.gz"
  : > "$RUN/results"; : > "$RUN/console"
  boots=$((boots + 1))
  timeout -s KILL $((total_tmo + 180)) qemu-system-x86_64 -M q35 -cpu "$CPU" -smp "$SMP" -m "$MEM" \
    -display none -monitor none -no-reboot \
    -kernel "$KTREE/arch/x86/boot/bzImage" -initrd "$RUN/initrd.gz" \
    -append "console=ttyS0 panic=-1 oops=panic quiet loglevel=4" \
    -serial "file:$RUN/console" -serial "file:$RUN/results" >/dev/null 2>"$RUN/qemu.err" &
  QPID=$!

  # Host-side watchdog: the boot must report within BOOT_TMO, and a test
  # that started must report within its timeout + HANG_GRACE (the guest's own
  # watchdog dumps the kernel state at timeout + 30 s). Otherwise the VM is
  # hung: stop it rather than wait for the sum of all timeouts.
  local BOOT_TMO=300 HANG_GRACE=${VMTEST_HANG_GRACE:-150}  # (override: tests of vmtest itself)
  deadline=$((SECONDS + BOOT_TMO)); current="(boot)"; hung=""; done_seen=0
  while :; do
    left=$((deadline - SECONDS))
    [ $left -gt 0 ] || { hung=$current; kill -TERM $QPID 2>/dev/null; break; }
    IFS= read -r -t "$left" l; st=$?
    [ $st -gt 128 ] && { hung=$current; kill -TERM $QPID 2>/dev/null; break; }
    [ $st = 0 ] || break
    l=${l%$'\r'}
    case "$l" in
      "@@START "*) set -- ${l#@@START }; current=$1; deadline=$((SECONDS + $2 + HANG_GRACE)) ;;
      "@@BOOT "*) echo "# ${l#@@}" ;;
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
        if [ "$got" = PASS ]; then
          echo "ok $i selftests: kvm: $name # ${secs}s"; pass=$((pass + 1))
        elif [ "$got" = SKIP ] && [ "$exp" != PASS ]; then
          echo "ok $i selftests: kvm: $name # SKIP"; skip=$((skip + 1))
        elif [ "$got" = FAIL ] && [ "$exp" = FAIL ]; then
          echo "not ok $i selftests: kvm: $name # TODO expected failure (rc $rc): $(reason "$name")"; xfail=$((xfail + 1))
        else
          echo "not ok $i selftests: kvm: $name # rc $rc, ${secs}s, expected ${exp:-PASS}"; fail=$((fail + 1))
        fi ;;
      "@@DONE") done_seen=1; break ;;
    esac
  done < <(tail -n +1 -f --pid=$QPID "$RUN/results" 2>/dev/null)
  wait $QPID 2>/dev/null
  QPID=""
  [ -n "$CONSOLE" ] && cat "$RUN/console" >> "$CONSOLE"
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
    echo "not ok $i selftests: kvm: $current # hung: no result within its timeout plus the grace period; the host stopped the VM"
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

for t in $TESTS; do
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
