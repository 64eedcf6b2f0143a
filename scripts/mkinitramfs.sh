#!/usr/bin/env bash
# Build the test VM's base initramfs: busybox, the init script, the C KVM modules,
# the kvm-rs module and every selftest binary. scripts/vmtest.sh appends a small
# per-run archive with the run's configuration.
set -euo pipefail
. "$(dirname "$0")/env.sh"
mkdir -p "$IMAGES"
R=$IMAGES/rootfs
rm -rf "$R" && mkdir -p "$R"/{bin,sbin,etc,proc,sys,dev,tmp,run,root,tests,lib/modules/c,lib/modules/kvm-rs}
cp /bin/busybox "$R/bin/busybox"
for a in $("$R/bin/busybox" --list); do [ -e "$R/bin/$a" ] || ln -s busybox "$R/bin/$a"; done
install -m 755 "$KVMRS_ROOT/scripts/vm/init" "$R/init"
cp "$KTREE"/arch/x86/kvm/{kvm.ko,kvm-amd.ko,kvm-intel.ko} "$KTREE/virt/lib/irqbypass.ko" "$R/lib/modules/c/"
cp "$MODBUILD/kvm.ko" "$MODBUILD/kvm_amd.ko" "$MODBUILD/kvm_intel.ko" "$R/lib/modules/kvm-rs/"
# Upstream selftests keep their directory (x86_64/NAME); project ones go under kvm-rs/.
(cd "$SELFTEST_OUT/upstream" && find . -type f -perm -u+x ! -name '*.o' ! -name '*.d' | while read -r f; do
   case "$f" in ./lib/*|*.sh) continue ;; esac
   mkdir -p "$R/tests/$(dirname "$f")"; strip -o "$R/tests/$f" "$f"; done)
if [ -d "$SELFTEST_OUT/project" ]; then
  mkdir -p "$R/tests/kvm-rs"
  find "$SELFTEST_OUT/project" -maxdepth 1 -type f -perm -u+x | while read -r f; do
    dst=$R/tests/kvm-rs/$(basename "$f")
    if head -c4 "$f" | grep -q ELF; then strip -o "$dst" "$f"; else install -m 755 "$f" "$dst"; fi
  done
fi
# Written aside and renamed, so that a test VM starting meanwhile never reads half an image.
(cd "$R" && find . | cpio -o -H newc --quiet) | gzip -1 > "$IMAGES/base.cpio.gz.tmp"
mv -f "$IMAGES/base.cpio.gz.tmp" "$IMAGES/base.cpio.gz"
log "initramfs: $IMAGES/base.cpio.gz ($(du -h "$IMAGES/base.cpio.gz" | cut -f1))"
