#!/usr/bin/env bash
# Install everything kvm-rs needs on a fresh Debian bookworm machine (idempotent).
# Debian packages: kernel source, the Rust toolchain with core source, LLVM 19, QEMU,
# Bochs and the usual kernel build tools. crates.io: bindgen-cli (Debian's is too old).
set -euo pipefail
export PATH=$HOME/.cargo/bin:$PATH

PKGS=(
  linux-source-6.12
  rustc-web rust-web-src
  clang-19 lld-19 llvm-19 libclang-19-dev
  flex bison bc libelf-dev libssl-dev cpio busybox-static dwarves rsync
  kmod xz-utils make gcc libc6-dev
  qemu-system-x86
  bochs bochsbios vgabios bochs-term xorriso isolinux syslinux-common
  kexec-tools
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

BINDGEN_VERSION=0.73.2
if ! command -v bindgen >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/bindgen" ]; then
  echo "setup: cargo install bindgen-cli $BINDGEN_VERSION"
  LIBCLANG_PATH=/usr/lib/llvm-19/lib cargo install --quiet --locked bindgen-cli --version "$BINDGEN_VERSION"
fi
echo "setup: dependencies present"
