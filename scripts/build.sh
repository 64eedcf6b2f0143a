#!/usr/bin/env bash
# Build everything the test VM needs: kernel (+ C KVM), kvm-rs module, selftests, initramfs.
set -euo pipefail
D=$(dirname "$0")
bash "$D/build-kernel.sh"
bash "$D/build-module.sh"
bash "$D/build-selftests.sh"
bash "$D/mkinitramfs.sh"
