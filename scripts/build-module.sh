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
# Warnings are errors (as CONFIG_WERROR for C): the module builds with none,
# and a new one fails the build (the module is one crate: any change rebuilds
# all of it, so none can hide in an unchanged file). KVMRS_WERROR=0 relaxes it
# while experimenting.
werror=()
[ "${KVMRS_WERROR:-1}" = 0 ] || werror=(KRUSTFLAGS=-Dwarnings)
make -s -C "$KTREE" "${KMAKE_FLAGS[@]}" "${werror[@]}" M="$MODBUILD" -j"$NPROC" modules
log "modules ready: $MODBUILD/kvm.ko $MODBUILD/kvm_amd.ko $MODBUILD/kvm_intel.ko"
