#!/usr/bin/env bash
# The README's test command (make test): installs what is missing, builds
# everything, then runs every test suite and closes with one summary line
# "N passed, N failed, N skipped". Exit status non-zero if any suite failed.
set -uo pipefail
. "$(dirname "$0")/env.sh"
cd "$KVMRS_ROOT"
ST=tools/testing/selftests/kvm

# Elapsed time on every stage line: CI has a hard limit, so its log must say
# where the time went.
T0=$SECONDS
stamp() { echo "=== [$((SECONDS - T0)) s] $*"; }
stamp "setup"
bash scripts/setup-deps.sh || exit 1
stamp "build"
bash scripts/build.sh || exit 1

P=0; F=0; S=0; suites_failed=0
# tally LOGFILE: add the suite's closing "N passed, N failed, N skipped" line.
tally() {
  local line
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped' "$1" | tail -1)
  if [ -z "$line" ]; then F=$((F + 1)); return; fi
  set -- $line
  P=$((P + $1)); F=$((F + $3)); S=$((S + $5))
}
run_suite() {
  local name=$1; shift
  stamp "$name"
  local log; log=$(mktemp)
  "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  tally "$log"; rm -f "$log"
  [ "$rc" = 0 ] || { suites_failed=$((suites_failed + 1)); stamp "$name: FAILED (rc $rc)"; }
}

# 1. Host tests of the hardware-independent code.
host_tests() {
  local out; out=$(cd tools/testing/kvm-rs-host && cargo test --quiet 2>&1); local rc=$?
  echo "$out"
  echo "$out" | awk '/^test result:/ { p += $4; f += $6; s += $8 } END { printf "%d passed, %d failed, %d skipped\n", p, f, s }'
  return $rc
}
run_suite "host: cargo test (core-only files)" host_tests

# 2. kvm-rs in the QEMU test VM (emulated SVM): the project selftests and the
#    upstream selftests kvm-rs runs in CI (issue 3's tiers and what passes since;
#    exceptions with reasons in kvm-rs.expected).
PROJECT_TESTS="kvm-rs/kvm_rs_dev_test kvm-rs/kvm_rs_vcpu_test kvm-rs/kvm_rs_demo kvm-rs/kvm_rs_errno_test
  kvm-rs/kvm_rs_pio_test kvm-rs/kvm_rs_mmio_test kvm-rs/kvm_rs_hlt_test kvm-rs/kvm_rs_shutdown_test
  kvm-rs/kvm_rs_msr_test kvm-rs/kvm_rs_leak_test kvm-rs/kvm_rs_memcg_test
  kvm-rs/kvm_rs_coalesced_test kvm-rs/kvm_rs_pci_hole_test kvm-rs/kvm_rs_tpr_test
  kvm-rs/kvm_rs_stats_test kvm-rs/kvm_rs_ioapic_test kvm-rs/kvm_rs_walk_test kvm-rs/kvm_rs_mce_test
  kvm-rs/kvm_rs_lapic_state_test
  kvm-rs/kvm_rs_feat_ctl_test"
RS_UPSTREAM="kvm_create_max_vcpus guest_print_test x86_64/cpuid_test set_memory_region_test
  hardware_disable_test x86_64/max_vcpuid_cap_test x86_64/get_msr_index_features
  x86_64/hwcr_msr_test x86_64/set_sregs_test x86_64/userspace_io_test x86_64/cr4_cpuid_sync_test
  x86_64/xcr0_cpuid_test x86_64/tsc_msrs_test x86_64/sync_regs_test x86_64/xapic_state_test
  x86_64/state_test x86_64/debug_regs
  coalesced_io_test x86_64/userspace_msr_exit_test x86_64/platform_info_test dirty_log_test
  kvm_page_table_test x86_64/xapic_ipi_test x86_64/recalc_apic_map_test x86_64/ucna_injection_test
  demand_paging_test kvm_binary_stats_test kvm-rs/metricfs_unload_test"
run_suite "vm: kvm-rs (QEMU, SVM)" bash scripts/vmtest.sh KVM=rs TESTS="$PROJECT_TESTS $RS_UPSTREAM"

# 3. kvm-rs on a CPU without SVM or VMX: refuses to load cleanly.
run_suite "vm: kvm-rs load without SVM/VMX" bash scripts/vmtest.sh KVM=none CPU=qemu64,-svm \
  TESTS="kvm-rs/no_virt_load_test"

# 4. The C KVM of the same tree, same project selftests: the ABI yardstick.
#    kvm_rs_leak_test is left out here: it measures kvm-rs, not an ABI answer,
#    and the C KVM's deferred frees (vmap areas, kmalloc-8) show as growth in it
#    when the machine is loaded (failed 2 of 3 runs on 2026-11-26).
C_PROJECT_TESTS=$(echo $PROJECT_TESTS | tr ' ' '\n' | grep -v '^kvm-rs/kvm_rs_leak_test$' | tr '\n' ' ')
run_suite "vm: C KVM (QEMU, SVM)" bash scripts/vmtest.sh KVM=c \
  TESTS="$C_PROJECT_TESTS kvm_binary_stats_test guest_print_test x86_64/cpuid_test x86_64/set_sregs_test"

# 5. The VMX backend under Bochs (emulated Intel VMX with EPT), much slower than
#    TCG: a selection that fits about 13 minutes on 2 cores. Each test
#    has STALL host seconds to report (guest timeouts are emulated seconds);
#    exceptions with reasons in kvm-rs.bochs.expected.
# Issue 3's tier tests the C kvm-intel passes under Bochs (measured side by
# side: testing.rst, "The SVM tiers under Bochs"), the quick ones; the C suite
# below runs them too.
BOCHS_TIERS="kvm_create_max_vcpus x86_64/max_vcpuid_cap_test coalesced_io_test kvm_binary_stats_test
  x86_64/ucna_injection_test x86_64/xapic_state_test kvm_page_table_test demand_paging_test"
BOCHS_TESTS="kvm-rs/kvm_rs_vcpu_test kvm-rs/kvm_rs_demo kvm-rs/kvm_rs_errno_test kvm-rs/kvm_rs_pio_test
  kvm-rs/kvm_rs_mmio_test kvm-rs/kvm_rs_shutdown_test kvm-rs/kvm_rs_msr_test kvm-rs/kvm_rs_tpr_test
  kvm-rs/kvm_rs_pci_hole_test kvm-rs/kvm_rs_stats_test kvm-rs/kvm_rs_cpuid_fault_test
  guest_print_test x86_64/cpuid_test x86_64/userspace_io_test x86_64/platform_info_test
  x86_64/userspace_msr_exit_test x86_64/set_sregs_test x86_64/state_test x86_64/tsc_msrs_test
  x86_64/hwcr_msr_test x86_64/get_msr_index_features x86_64/vmx_msrs_test
  kvm-rs/kvm_rs_mce_test kvm-rs/kvm_rs_walk_test kvm-rs/kvm_rs_dev_test kvm-rs/kvm_rs_coalesced_test
  $BOCHS_TIERS x86_64/cr4_cpuid_sync_test x86_64/xcr0_cpuid_test dirty_log_test kvm-rs/kvm_rs_hlt_test
  kvm-rs/kvm_rs_lapic_state_test
  kvm-rs/kvm_rs_feat_ctl_test"
run_suite "vm: kvm-rs (Bochs, VMX)" bash scripts/vmtest.sh EMU=bochs KVM=rs STALL=240 TESTS="$BOCHS_TESTS"
# VMXON failing on purpose (bad region, #GP on every CPU, #GP on the last CPU
# after the others entered VMX operation): refused cleanly, then kvm-intel and
# kvm-rs load.
run_suite "vm: kvm-rs VMXON failures (Bochs)" bash scripts/vmtest.sh EMU=bochs KVM=none STALL=240 \
  TESTS="kvm-rs/vmxon_fault_test"
# Crash the host with guests running on every CPU: the kexec crash kernel boots.
run_suite "vm: kvm-rs crash/kexec (Bochs)" bash scripts/crash-test.sh STALL=300
# The C kvm-intel, same command: the project selftests' answers hold for it too.
run_suite "vm: C KVM (Bochs, VMX)" bash scripts/vmtest.sh EMU=bochs KVM=c STALL=240 \
  TESTS="kvm-rs/kvm_rs_demo kvm-rs/kvm_rs_msr_test kvm-rs/kvm_rs_tpr_test kvm-rs/kvm_rs_mmio_test
  kvm-rs/kvm_rs_shutdown_test kvm-rs/kvm_rs_mce_test guest_print_test x86_64/cpuid_test x86_64/vmx_msrs_test
  kvm-rs/kvm_rs_feat_ctl_test $BOCHS_TIERS"

# 6. The benchmarks' smoke run (make bench-smoke): every figure produced for both
#    modules with a few iterations; checks that it works, times nothing.
bench_smoke() {
  local out; out=$(mktemp)
  bash scripts/bench.sh SMOKE=1 OUT="$out"; local rc=$?
  rm -f "$out"
  if [ $rc = 0 ]; then echo "1 passed, 0 failed, 0 skipped"; else echo "0 passed, 1 failed, 0 skipped"; fi
  return $rc
}
run_suite "bench: smoke run (QEMU, kvm-rs and C KVM)" bench_smoke

stamp "summary"
[ $suites_failed = 0 ] || echo "$suites_failed suite(s) failed"
echo "$P passed, $F failed, $S skipped"
[ $suites_failed = 0 ] && [ $F = 0 ]
