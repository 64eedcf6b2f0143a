#!/usr/bin/env bash
# Boot the test kernel under Bochs (emulated Intel VMX with EPT), for
# scripts/vmtest.sh EMU=bochs. Builds an ISOLINUX CD with the kernel and the
# given initramfs, writes a bochsrc and execs Bochs, so that the caller's PID
# is Bochs itself (the caller stops it once the results say @@DONE).
#
#   scripts/vmtest-bochs.sh DIR KERNEL INITRD CONSOLE RESULTS SMP MEGS MODEL "APPEND"
#
# DIR is a scratch directory for the ISO and the configuration. CONSOLE and
# RESULTS are files for the two serial ports (ttyS0 and ttyS1 in the guest).
#
# Bochs notes (Debian's 2.7, built with the debugger and without a "nogui"
# display): the debugger stops before the first instruction, so a command
# file holding "c" is given with -rc and stdin is /dev/null; the display is
# RFB with no wait for a client (it listens on a free port from 5900 up).
# "clock: sync=none" makes guest time follow emulated instructions (ips), so
# timeouts inside the guest count emulated, not host, seconds.
set -euo pipefail
[ $# = 9 ] || { echo "usage: $0 DIR KERNEL INITRD CONSOLE RESULTS SMP MEGS MODEL APPEND" >&2; exit 2; }
DIR=$1; KERNEL=$2; INITRD=$3; CONSOLE=$4; RESULTS=$5; SMP=$6; MEGS=$7; MODEL=$8; APPEND=$9
ISOLINUX=/usr/lib/ISOLINUX/isolinux.bin
LDLINUX=/usr/lib/syslinux/modules/bios/ldlinux.c32
for f in "$ISOLINUX" "$LDLINUX" /usr/share/bochs/BIOS-bochs-latest /usr/share/vgabios/vgabios.bin; do
  [ -f "$f" ] || { echo "vmtest-bochs: missing $f (run scripts/setup-deps.sh)" >&2; exit 2; }
done
command -v xorriso >/dev/null || { echo "vmtest-bochs: xorriso missing (run scripts/setup-deps.sh)" >&2; exit 2; }

mkdir -p "$DIR/iso/isolinux"
cp "$ISOLINUX" "$LDLINUX" "$DIR/iso/isolinux/"
cp "$KERNEL" "$DIR/iso/bzimage"
cp "$INITRD" "$DIR/iso/initrd.gz"
cat > "$DIR/iso/isolinux/isolinux.cfg" <<EOF
default linux
prompt 0
timeout 0
label linux
  kernel /bzimage
  append initrd=/initrd.gz $APPEND
EOF
xorriso -as mkisofs -quiet -o "$DIR/boot.iso" -b isolinux/isolinux.bin -c isolinux/boot.cat \
  -no-emul-boot -boot-load-size 4 -boot-info-table "$DIR/iso" 2>"$DIR/xorriso.err" || {
  cat "$DIR/xorriso.err" >&2; exit 2; }

cat > "$DIR/bochsrc" <<EOF
display_library: rfb, options="timeout=0"
cpu: model=$MODEL, count=$SMP, ips=100000000, reset_on_triple_fault=1
megs: $MEGS
romimage: file=/usr/share/bochs/BIOS-bochs-latest
vgaromimage: file=/usr/share/vgabios/vgabios.bin
ata0-master: type=cdrom, path=$DIR/boot.iso, status=inserted
boot: cdrom
clock: sync=none, time0=local
com1: enabled=1, mode=file, dev=$CONSOLE
com2: enabled=1, mode=file, dev=$RESULTS
log: $DIR/bochs.log
panic: action=fatal
error: action=report
info: action=ignore
debug: action=ignore
EOF
echo c > "$DIR/rc"
exec bochs -q -f "$DIR/bochsrc" -rc "$DIR/rc" </dev/null >"$DIR/bochs.out" 2>&1
