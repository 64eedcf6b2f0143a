#!/usr/bin/env bash
# Build the kvm-rs module (kvm.ko) out of tree against the patched kernel in the cache.
set -euo pipefail
. "$(dirname "$0")/env.sh"
[ -f "$KTREE/vmlinux" ] || { echo "kernel not built: run scripts/build-kernel.sh" >&2; exit 1; }
mkdir -p "$MODBUILD"
# Copy only sources whose content changed, so kbuild rebuilds incrementally.
srcs=()
for p in Kbuild virt arch include; do [ -e "$KVMRS_ROOT/$p" ] && srcs+=("$KVMRS_ROOT/$p"); done
rsync -rc --include='*/' --include='*.rs' --include='*.c' --include='*.h' --include='*.S' \
  --include='Kbuild' --exclude='*' "${srcs[@]}" "$MODBUILD/"
log "building kvm-rs module"
make -s -C "$KTREE" "${KMAKE_FLAGS[@]}" M="$MODBUILD" -j"$NPROC" modules
log "modules ready: $MODBUILD/kvm.ko $MODBUILD/kvm_amd.ko $MODBUILD/kvm_intel.ko"
