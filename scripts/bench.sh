#!/usr/bin/env bash
# Benchmarks of kvm-rs against the C KVM of the same tree, side by side in
# one boot of the test VM: exit cost, kernel memory per VM and vCPU, VM
# start-up (tools/testing/selftests/kvm/bench/kvm_bench.c). Two emulators:
#   qemu         QEMU TCG, -cpu max (AMD SVM): real time, noisy. The modules
#                alternate (rs c, c rs, ...) for ROUNDS rounds; medians.
#   qemu-icount  the same VM with "-icount shift=3,sleep=off": the guest's
#                clock follows emulated instructions (8 ns each), so a figure
#                is the same on every run: a noise-free SVM comparison.
#   bochs        Bochs, corei7_skylake_x (Intel VMX), "clock: sync=none":
#                likewise deterministic, in TSC cycles (one per instruction).
# ROUNDS under the deterministic two only shows that the figures repeat.
#
#   scripts/bench.sh [EMU=qemu|qemu-icount|bochs|all] [ROUNDS=N] [SMOKE=1] [OUT=file]
#                    [MODULES="rs c"] [JOBS=file] [CONSOLE=file] [VERBOSE=1]
#                    [ENV="VAR=value ..."]   (environment of kvm_bench in the VM)
#
# Prints, per emulator, a table: each figure's median under kvm-rs and under
# the C KVM and their ratio kvm-rs / C KVM (below 1.0: kvm-rs better; times
# and bytes, VM start-up as time per VM). The tables, the command and the raw
# figures also go to OUT (default: a dated file in the cache's bench/
# directory). Defaults: ROUNDS=9 under QEMU, 2 otherwise. SMOKE=1 is the CI run: a few
# iterations, one round, QEMU only; it checks that every figure is produced
# for both modules and times nothing. Exit status 1 when a job failed, a
# figure is missing or the VM did not finish.
# Needs a built kernel, kvm-rs module and upstream selftests (make build).
set -uo pipefail
. "$(dirname "$0")/env.sh"

EMU=all; ROUNDS=""; SMOKE=""; OUT=""; MODULES="rs c"; JOBS=""; CONSOLE=""; VERBOSE=""; ENV=""
for a in "$@"; do
  case "$a" in
    EMU=*|ROUNDS=*|SMOKE=*|OUT=*|MODULES=*|JOBS=*|CONSOLE=*|VERBOSE=*|ENV=*) eval "${a%%=*}=\${a#*=}" ;;
    *) echo "bench: unknown argument $a" >&2; exit 2 ;;
  esac
done
[ -n "$SMOKE" ] && [ "$EMU" = all ] && EMU=qemu
case "$EMU" in qemu|qemu-icount|bochs|all) ;; *) echo "bench: EMU must be qemu, qemu-icount, bochs or all" >&2; exit 2 ;; esac
BENCHDIR=$KVMRS_ROOT/tools/testing/selftests/kvm/bench
OUTDIR=$KVMRS_CACHE/bench
KERNEL=$KTREE/arch/x86/boot/bzImage
for f in "$KERNEL" "$MODBUILD/kvm.ko" "$SELFTEST_OUT/upstream/lib/kvm_util.o"; do
  [ -f "$f" ] || { echo "bench: missing $f (run 'make build')" >&2; exit 2; }
done
mkdir -p "$OUTDIR"
log "building kvm_bench"
make -s -C "$BENCHDIR" KTREE="$KTREE" UPSTREAM_OUT="$SELFTEST_OUT/upstream" OUTPUT="$OUTDIR" || exit 2

# The jobs: "kind args" lines for kvm_bench ("nopoll JOB": JOB with the C
# KVM's halt polling off; "upto N JOB": in the first N rounds only). Under
# QEMU TCG an exit costs 0.05 to 0.5 ms and an IPI round trip milliseconds:
# a figure takes a second or so. The deterministic runs need no averaging:
# fewer iterations; memory figures again only under Bochs, for the VMX
# backends (one VM of each size: Bochs is slow to create and destroy). Under
# icount TCG runs the two vCPUs round-robin, so an IPI round trip would
# measure TCG's time slice: no hlt_ipi there. Under Bochs no start-up figure:
# creating and destroying a VM is dominated by idle waits for RCU grace
# periods, which Bochs emulates tick by tick (minutes per VM).
jobs_for() {
  if [ -n "$JOBS" ]; then cat "$JOBS"; return; fi
  if [ -n "$SMOKE" ]; then
    for w in cpuid hypercall rdmsr pio_out mmio_write mmio_read coalesced pci_hole hlt_ipi; do
      echo "exit $w 50 5"
    done
    echo "nopoll exit hlt_ipi 50 5"
    echo "mem 8"; echo "start 10"; return
  fi
  case "$1" in
    qemu) cat <<'EOF'
exit cpuid 5000
exit hypercall 5000
exit rdmsr 5000
exit pio_out 5000
exit mmio_write 5000
exit mmio_read 5000
exit coalesced 5000
exit pci_hole 200000
exit hlt_ipi 500
nopoll exit hlt_ipi 500
upto 3 mem 64
start 50
EOF
    ;;
    qemu-icount) cat <<'EOF'
exit cpuid 1000
exit hypercall 1000
exit rdmsr 1000
exit pio_out 500
exit mmio_write 500
exit mmio_read 500
exit coalesced 1000
exit pci_hole 100000
start 10
EOF
    ;;
    bochs) cat <<'EOF'
exit cpuid 1000
exit hypercall 1000
exit rdmsr 1000
exit pio_out 500
exit mmio_write 500
exit mmio_read 500
exit coalesced 1000
exit pci_hole 100000
exit hlt_ipi 100
nopoll exit hlt_ipi 100
mem 1
EOF
    ;;
  esac
}

# Boots one emulator with the bench initramfs; leaves the results port in $RUN/results.
# Returns 0 when the VM said @@DONE.
run_vm() {
  local emu=$1 rounds=$2 tmo=$3
  local R=$RUN/root
  rm -rf "$R" && mkdir -p "$R"/{bin,sbin,etc,proc,sys,dev,tmp,run,root,tests/kvm-rs,lib/modules/c,lib/modules/kvm-rs}
  cp /bin/busybox "$R/bin/busybox"
  for a in $("$R/bin/busybox" --list); do [ -e "$R/bin/$a" ] || ln -s busybox "$R/bin/$a"; done
  install -m 755 "$KVMRS_ROOT/scripts/vm/init" "$R/init"
  cp "$KTREE"/arch/x86/kvm/{kvm.ko,kvm-amd.ko,kvm-intel.ko} "$KTREE/virt/lib/irqbypass.ko" "$R/lib/modules/c/"
  cp "$MODBUILD/kvm.ko" "$R/lib/modules/kvm-rs/kvm.ko"
  strip -o "$R/tests/kvm-rs/kvm_bench" "$OUTDIR/kvm_bench"
  install -m 755 "$KVMRS_ROOT/scripts/vm/bench" "$R/run/kvmrs.post"
  : > "$R/run/kvmrs.tests"
  printf 'KVM=none\nSHOW_OUTPUT=\n' > "$R/run/kvmrs.conf"
  jobs_for "$emu" > "$R/run/kvmrs.jobs"
  printf 'ROUNDS=%s\nMODULES="%s"\nJOBS=/run/kvmrs.jobs\nTIMEOUT=%s\n' \
    "$rounds" "$MODULES" "$([ "$emu" = bochs ] && echo 1200 || echo 300)" > "$R/run/kvmrs.bench"
  # Under Bochs: TSC cycles (one per emulated instruction) rather than the
  # guest's nanoseconds, and short pauses (idle time is slow to emulate).
  [ "$emu" = bochs ] && echo "export KVM_BENCH_UNIT=cycles KVM_BENCH_SETTLE_MS=20" >> "$R/run/kvmrs.bench"
  [ -n "$ENV" ] && echo "export $ENV" >> "$R/run/kvmrs.bench"
  (cd "$R" && find . | cpio -o -H newc --quiet) | gzip -1 > "$RUN/initrd.gz"
  : > "$RUN/results"; : > "$RUN/console"
  local append="console=ttyS0 panic=-1 oops=panic quiet loglevel=4"
  # Under Bochs, expedited RCU grace periods: a normal one waits jiffies in an
  # idle guest, which Bochs emulates tick by tick (minutes per VM destroyed).
  [ "$emu" = bochs ] && append+=" rcupdate.rcu_expedited=1"
  if [ "$emu" != bochs ]; then
    local icount=""
    [ "$emu" = qemu-icount ] && icount="-icount shift=3,sleep=off"
    timeout -s KILL "$tmo" qemu-system-x86_64 -M q35 -cpu max -smp 2 -m 3G $icount \
      -display none -monitor none -no-reboot \
      -kernel "$KERNEL" -initrd "$RUN/initrd.gz" -append "$append" \
      -serial "file:$RUN/console" -serial "file:$RUN/results" >/dev/null 2>"$RUN/emu.err" &
  else
    bochs_start "$tmo" "$append" &
  fi
  local pid=$! t0=$SECONDS n0=0 n
  # Bochs does not end on the guest's reboot: stop it once the VM is done.
  # Each job's start is noted with the host's clock ($RUN/arrivals).
  : > "$RUN/arrivals"
  while :; do
    # Complete lines only: the serial port may be in the middle of one.
    head -c "$(stat -c %s "$RUN/results")" "$RUN/results" > "$RUN/results.now"
    [ -z "$(tail -c1 "$RUN/results.now")" ] || sed -i '$d' "$RUN/results.now"
    n=$(grep -c '^@@BENCHTRACE' "$RUN/results.now")
    if [ "${n:-0}" -gt $n0 ]; then
      grep '^@@BENCHTRACE' "$RUN/results.now" | tail -n $((n - n0)) | sed "s/^/$((SECONDS - t0)) /" >> "$RUN/arrivals"
      n0=$n
    fi
    kill -0 $pid 2>/dev/null || break
    grep -q '^@@DONE' "$RUN/results" 2>/dev/null && { sleep 1; kill $pid 2>/dev/null; break; }
    sleep 1
  done
  wait $pid 2>/dev/null
  [ -n "$CONSOLE" ] && cp "$RUN/console" "$CONSOLE.$emu"
  grep -q '^@@DONE' "$RUN/results"
}

# Bochs 2.7 (Debian): ISOLINUX CD with the kernel and initramfs; the debugger
# stops before the first instruction, so "c" comes from an -rc file; no
# "nogui" display in Debian's build, so RFB with no wait for a client.
bochs_start() {
  local tmo=$1 append=$2 D=$RUN/bochs
  mkdir -p "$D/iso/isolinux"
  cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 "$D/iso/isolinux/"
  cp "$KERNEL" "$D/iso/bzimage"; cp "$RUN/initrd.gz" "$D/iso/initrd.gz"
  printf 'default linux\nprompt 0\ntimeout 0\nlabel linux\n  kernel /bzimage\n  append initrd=/initrd.gz %s\n' \
    "$append" > "$D/iso/isolinux/isolinux.cfg"
  xorriso -as mkisofs -quiet -o "$D/boot.iso" -b isolinux/isolinux.bin -c isolinux/boot.cat \
    -no-emul-boot -boot-load-size 4 -boot-info-table "$D/iso" 2>"$D/xorriso.err" || return 2
  cat > "$D/bochsrc" <<EOF
display_library: rfb, options="timeout=0"
cpu: model=corei7_skylake_x, count=${BOCHS_CPUS:-2}, ips=100000000, reset_on_triple_fault=1
megs: 2048
romimage: file=/usr/share/bochs/BIOS-bochs-latest
vgaromimage: file=/usr/share/vgabios/vgabios.bin
ata0-master: type=cdrom, path=$D/boot.iso, status=inserted
boot: cdrom
clock: sync=none, time0=946684800
com1: enabled=1, mode=file, dev=$RUN/console
com2: enabled=1, mode=file, dev=$RUN/results
log: $D/bochs.log
panic: action=fatal
error: action=report
info: action=ignore
debug: action=ignore
EOF
  echo c > "$D/rc"
  exec timeout -s KILL "$tmo" bochs -q -f "$D/bochsrc" -rc "$D/rc" </dev/null >"$D/bochs.out" 2>&1
}

# report EMU ROUNDS: the table of medians and ratios from $RUN/figures
# ("module round key value unit note..."). Two ratios: of the medians, and
# the median of the per-round ratios (each pair taken back to back).
report() {
  local emu=$1 rounds=$2
  awk -v emu="$emu" -v rounds="$rounds" '
    function median(s,   a, n, i, j, t) {
      n = split(s, a, " ")
      if (n == 0) return ""
      for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
      return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function spread(s,   a, n, i, lo, hi, m) {
      n = split(s, a, " "); if (n < 2) return "-"
      lo = hi = a[1] + 0
      for (i = 2; i <= n; i++) { if (a[i] + 0 < lo) lo = a[i] + 0; if (a[i] + 0 > hi) hi = a[i] + 0 }
      m = median(s); if (m == 0) return "-"
      return sprintf("%.0f%%", 100 * (hi - lo) / m)
    }
    function fmt(v) { if (v == "") return "-"; return (v >= 100 || v == int(v)) ? sprintf("%.0f", v) : sprintf("%.2f", v) }
    $3 == "note" || $4 == "n/a" { next }
    {
      mod = $1; rnd = $2; key = $3; val = $4 + 0; unit = $5
      if (unit == "VMs/s") { val = (val > 0) ? 1e6 / val : 0; unit = "us/VM" }
      if (!(key in seen)) { seen[key] = 1; order[++nk] = key; units[key] = unit }
      vals[key, mod] = vals[key, mod] " " val
      one[key, mod, rnd] = val; rounds_of[key] = rounds_of[key] " " rnd
    }
    END {
      if (emu == "qemu")
        print "QEMU TCG -cpu max (AMD SVM), host real time, medians of " rounds " rounds (pairs back to back, order alternating)"
      else if (emu == "qemu-icount")
        print "QEMU TCG -cpu max (AMD SVM) with -icount shift=3: virtual time, 8 ns per emulated instruction, medians of " rounds " rounds"
      else
        print "Bochs corei7_skylake_x (Intel VMX), clock sync=none: TSC cycles (one per emulated instruction), medians of " rounds " rounds"
      print ""
      printf "| %-34s | %-9s | %10s | %10s | %6s | %6s | %-11s |\n", "figure", "unit", "kvm-rs", "C KVM", "rs/C", "paired", "spread rs,C"
      printf "|%s|%s|%s|%s|%s|%s|%s|\n", "------------------------------------", "-----------", "------------", "------------", "--------", "--------", "-------------"
      for (i = 1; i <= nk; i++) {
        k = order[i]; ck = k; label = k
        # The C KVM has no PCI hole: its MMIO read exit is the comparison point.
        if (k == "exit.pci_hole" && vals[k, "c"] == "") { ck = "exit.mmio_read"; label = k " (C: mmio_read)" }
        r = median(vals[k, "rs"]); c = median(vals[ck, "c"])
        ratio = (r != "" && c != "" && c > 0) ? sprintf("%.2f", r / c) : "-"
        pr = ""; split(rounds_of[k], rr, " "); delete done
        for (j in rr) { q = rr[j]; if (q in done) continue; done[q] = 1
          if (((k, "rs", q) in one) && ((ck, "c", q) in one) && one[ck, "c", q] > 0) pr = pr " " one[k, "rs", q] / one[ck, "c", q] }
        paired = (pr == "") ? "-" : sprintf("%.2f", median(pr))
        printf "| %-34s | %-9s | %10s | %10s | %6s | %6s | %-11s |\n", label, units[k], fmt(r), fmt(c), ratio, paired, spread(vals[k, "rs"]) "," spread(vals[ck, "c"])
      }
    }' "$RUN/figures"
}

# check EMU: no job failed, and every job gave its figures (or n/a) for every
# module that loaded.
check() {
  local emu=$1 bad=0 m k keys
  if grep -v '^@@BENCHFAIL rs [0-9]* load' "$RUN/results" | grep -q '^@@BENCHFAIL'; then
    echo "# FAILED ($emu):"; grep -E '^@@BENCH(FAIL|INFO   )' "$RUN/results" | sed 's/^@@/#   /'; bad=1
  fi
  keys=$(jobs_for "$emu" | awk '
    $1 == "exit" { print "exit." $2 }
    $1 == "upto" { $1 = $2 = ""; $0 = $0 }
    $1 == "nopoll" { print $2 "." $3 ".nopoll" }
    $1 == "start" { print "start.bare"; print "start.full" }
    $1 == "mem" { print "mem.vm0.system"; print "mem.vcpu1.system" }')
  for m in $MODULES; do
    if grep -q "^@@BENCHFAIL $m [0-9]* load" "$RUN/results"; then
      # kvm-rs under Bochs needs the VMX backend: until it is there, its
      # load failure is expected and only reported.
      if [ "$emu" = bochs ] && [ "$m" = rs ] && grep -q 'VMX backend is not implemented' "$RUN/results"; then
        echo "# $emu: kvm-rs did not load (its VMX backend is not implemented yet): C KVM figures only"
      else
        echo "# $emu: module $m did not load: no figures"; bad=1
      fi
      continue
    fi
    for k in $keys; do
      grep -q "^$m [0-9]* $k " "$RUN/figures" || { echo "# $emu: no figure $k for module $m"; bad=1; }
    done
  done
  return $bad
}

RUN=$(mktemp -d "${TMPDIR:-/tmp}/kvmrs-bench.XXXXXX")
trap 'rm -rf "$RUN"' EXIT
status=0
tables=""
raw=""
for emu in qemu qemu-icount bochs; do
  [ "$EMU" = all ] || [ "$EMU" = "$emu" ] || continue
  if [ "$emu" = qemu ]; then r=${ROUNDS:-9}; tmo=3000; else r=${ROUNDS:-2}; tmo=3000; fi
  [ -n "$SMOKE" ] && { r=1; [ "$emu" = qemu ] && tmo=300; }
  log "$emu: $r round(s), modules: $MODULES"
  t0=$(date +%s)
  if ! run_vm "$emu" "$r" "$tmo"; then
    echo "# $emu: the VM did not finish; last console lines:"; tail -30 "$RUN/console" | sed 's/^/#   /'
    status=1
  fi
  secs=$(( $(date +%s) - t0 ))
  sed -n 's/^@@BENCHINFO //p' "$RUN/results" | grep -v '^  ' | sed 's/^/# /'
  sed -n 's/^@@BENCH //p' "$RUN/results" | tr -d '\r' > "$RUN/figures"
  t=$(report "$emu" "$r"; echo; echo "($emu: ${secs} s wall clock, $(grep -c . "$RUN/figures") figures)")
  echo "$t"; echo
  tables+="$t"$'\n\n'
  raw+="### raw figures, $emu (module round figure value unit note)"$'\n\n'"$(sed 's/^/    /' "$RUN/figures")"$'\n\n'
  check "$emu" || status=1
  if [ -n "$VERBOSE" ]; then
    echo "# host seconds per job (module round job), from the VM's start:"
    awk '{ if (prev != "") printf "#   %5d  %s\n", $1 - t, prev; else printf "#   %5d  boot\n", $1
           t = $1; prev = ""; for (i = 4; i <= NF; i++) prev = prev " " $i }' "$RUN/arrivals"
  fi
done
# The results are always kept: OUT, or the cache.
[ -n "$OUT" ] || OUT=$OUTDIR/results-$(date -u +%Y%m%d-%H%M%S).md
if [ -n "$OUT" ]; then
  {
    echo "Command: \`scripts/bench.sh $*\` (KVMRS_CACHE=$KVMRS_CACHE), $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$KVMRS_ROOT" rev-parse --short HEAD 2>/dev/null)"
    echo
    echo "$tables"
    echo "$raw"
  } > "$OUT"
  log "results written to $OUT"
fi
[ $status = 0 ] && echo "bench: ok" || echo "bench: FAILED"
exit $status
