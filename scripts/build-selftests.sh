#!/usr/bin/env bash
# Build the upstream KVM selftests of the same tree (static) and the project's own
# selftests (tools/testing/selftests/kvm of this repository).
set -euo pipefail
. "$(dirname "$0")/env.sh"
[ -d "$KTREE/usr/include/linux" ] || { echo "kernel headers missing: run scripts/build-kernel.sh" >&2; exit 1; }
mkdir -p "$SELFTEST_OUT/upstream" "$SELFTEST_OUT/project"
log "building upstream KVM selftests"
# The upstream selftests are C built with the host gcc; LLVM/Rust variables do not apply.
make -s -C "$KTREE/tools/testing/selftests/kvm" EXTRA_CFLAGS=-static \
  OUTPUT="$SELFTEST_OUT/upstream" -j"$NPROC" >/dev/null
log "building project selftests"
make -s -C "$KVMRS_ROOT/tools/testing/selftests/kvm" KTREE="$KTREE" \
  UPSTREAM_OUT="$SELFTEST_OUT/upstream" OUTPUT="$SELFTEST_OUT/project" -j"$NPROC"
log "selftests ready in $SELFTEST_OUT"
