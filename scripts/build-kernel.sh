#!/usr/bin/env bash
# Build the patched Linux 6.12 tree in the cache: bzImage, the C KVM modules (the
# baseline) and the uapi headers. The tree is kept between runs; the overlay from rust/
# and the config fragment are re-applied by checksum, so a warm cache rebuilds only what
# changed.
set -euo pipefail
. "$(dirname "$0")/env.sh"

[ -f "$KERNEL_TARBALL" ] || { echo "missing $KERNEL_TARBALL: run scripts/setup-deps.sh" >&2; exit 1; }
[ -n "$KVER" ] || { echo "linux-source-6.12 is not installed" >&2; exit 1; }
mkdir -p "$KVMRS_KCACHE"

# 1. Pristine source (patched files are regenerated from it) and the build tree.
if [ ! -f "$KPRISTINE/.kvmrs-done" ]; then
  log "unpacking $KERNEL_TARBALL"
  rm -rf "$KPRISTINE" && mkdir -p "$KPRISTINE"
  tar -xf "$KERNEL_TARBALL" -C "$KPRISTINE" --strip-components=1
  touch "$KPRISTINE/.kvmrs-done"
fi
if [ ! -f "$KTREE/.kvmrs-tree" ]; then
  log "creating build tree $KTREE"
  rm -rf "$KTREE"
  cp -a "$KPRISTINE" "$KTREE"
  rm -f "$KTREE/.kvmrs-done"
  touch "$KTREE/.kvmrs-tree"
fi

# 2. Kernel-crate additions: new files are copied (only when their content changed),
#    edits to existing files are patches applied to the pristine file.
rsync -rc --exclude=patches/ "$KVMRS_ROOT/rust/" "$KTREE/rust/"
STAGE=$KVMRS_KCACHE/stage
rm -rf "$STAGE" && mkdir -p "$STAGE"
patched=()
for p in "$KVMRS_ROOT"/rust/patches/*.patch; do
  [ -e "$p" ] || continue
  while read -r f; do patched+=("$f"); done < <(sed -n 's|^+++ b/\([^[:space:]]*\).*|\1|p' "$p")
done
for f in ${patched[@]+"${patched[@]}"}; do
  mkdir -p "$STAGE/$(dirname "$f")"
  [ -f "$STAGE/$f" ] || cp "$KPRISTINE/$f" "$STAGE/$f"
done
for p in "$KVMRS_ROOT"/rust/patches/*.patch; do
  [ -e "$p" ] || continue
  patch -s -p1 -d "$STAGE" < "$p" || { echo "patch $p does not apply to $KVER" >&2; exit 1; }
done
# Files patched by an earlier run but not any more go back to pristine.
if [ -f "$KTREE/.kvmrs-patched" ]; then
  while read -r f; do
    [ -n "$f" ] || continue
    [ -f "$STAGE/$f" ] || cmp -s "$KPRISTINE/$f" "$KTREE/$f" || cp "$KPRISTINE/$f" "$KTREE/$f"
  done < "$KTREE/.kvmrs-patched"
fi
rsync -rc "$STAGE/" "$KTREE/"
printf '%s\n' ${patched[@]+"${patched[@]}"} > "$KTREE/.kvmrs-patched"

# 3. Configuration: tinyconfig + the fragment, redone only when the fragment changes.
FRAG=$KVMRS_ROOT/scripts/config/kvm-rs.config
fhash=$(sha256sum "$FRAG" | cut -d' ' -f1)
if [ "$(cat "$KTREE/.kvmrs-config-hash" 2>/dev/null)" != "$fhash" ] || [ ! -f "$KTREE/.config" ]; then
  log "configuring (tinyconfig + $FRAG)"
  make -s -C "$KTREE" "${KMAKE_FLAGS[@]}" tinyconfig >/dev/null
  (cd "$KTREE" && scripts/kconfig/merge_config.sh -m .config "$FRAG" >/dev/null)
  make -s -C "$KTREE" "${KMAKE_FLAGS[@]}" olddefconfig >/dev/null
  bad=0
  while IFS='=' read -r sym val; do
    case "$sym" in CONFIG_*) ;; *) continue ;; esac
    got=$(grep -E "^$sym=" "$KTREE/.config" | cut -d= -f2- || true)
    if [ "$got" != "$val" ]; then echo "config: $sym wanted $val, got '${got:-unset}'" >&2; bad=1; fi
  done < "$FRAG"
  [ $bad = 0 ] || { echo "config fragment not satisfied (see above)" >&2; exit 1; }
  echo "$fhash" > "$KTREE/.kvmrs-config-hash"
fi

# 4. Build.
log "building kernel $KVER (bzImage, modules, headers)"
make -s -C "$KTREE" "${KMAKE_FLAGS[@]}" -j"$NPROC" bzImage modules
make -s -C "$KTREE" "${KMAKE_FLAGS[@]}" headers_install >/dev/null
log "kernel ready: $KTREE/arch/x86/boot/bzImage"
