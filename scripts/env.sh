# Common settings for the kvm-rs scripts; sourced, not run.
KVMRS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Build cache outside the repository: kernel tree, module build dir, selftests, images.
KVMRS_CACHE=${KVMRS_CACHE:-$HOME/.cache/kvm-rs}
KERNEL_TARBALL=${KERNEL_TARBALL:-/usr/src/linux-source-6.12.tar.xz}
export PATH=/usr/lib/llvm-19/bin:$HOME/.cargo/bin:$PATH
export LIBCLANG_PATH=/usr/lib/llvm-19/lib
# The kernel needs the Debian rustc: its sysroot carries the core source (rust-web-src).
KMAKE_FLAGS=(LLVM=1 RUSTC=/usr/bin/rustc BINDGEN=bindgen)
NPROC=$(nproc)

kernel_version() {
  dpkg-query -W -f='${Version}' linux-source-6.12 2>/dev/null | sed 's/-.*//'
}
KVER=$(kernel_version)
# The kernel tree may live in another cache (KVMRS_KCACHE), so that a second
# work tree can build its module, selftests and images against an already
# built kernel without rebuilding it (it must then not run build-kernel.sh).
KVMRS_KCACHE=${KVMRS_KCACHE:-$KVMRS_CACHE}
KTREE=$KVMRS_KCACHE/linux-$KVER
KPRISTINE=$KVMRS_KCACHE/pristine-$KVER
MODBUILD=$KVMRS_CACHE/module
SELFTEST_OUT=$KVMRS_CACHE/selftests
IMAGES=$KVMRS_CACHE/images
log() { echo "[kvm-rs] $*" >&2; }
