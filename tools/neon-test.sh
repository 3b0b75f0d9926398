#!/usr/bin/env bash
# The NEON tier's tests: the kernels crate's unit tests (every tier against the scalar reference,
# the base-NEON and `sdot` paths against each other) built for AArch64 and run under QEMU on this
# x86-64 machine. The same steps as ../shared/tools/neon-setup.sh (which it runs when present):
# Debian's rustc-web/cargo-web with the arm64 std (rustup here has no aarch64 std and cannot
# fetch one), gcc's aarch64 linker, qemu-user; statically linked, since dynamically linked
# aarch64 programs hang in pthread_create under qemu-user on this kind of machine.
# Usage: tools/neon-test.sh [cargo test args]   (default: -p autoround-kernels --release --lib)
set -euo pipefail
cd "$(dirname "$0")/.."
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(-p autoround-kernels --release --lib)
shared=../shared/tools/neon-setup.sh
if [ -f "$shared" ]; then exec bash "$shared" "${args[@]}"; fi
if [ ! -d /usr/lib/rustlib/aarch64-unknown-linux-gnu ] || ! command -v qemu-aarch64 >/dev/null; then
  dpkg --add-architecture arm64
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    rustc-web cargo-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user >/dev/null
fi
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static"
exec /usr/bin/cargo test --target aarch64-unknown-linux-gnu --target-dir target/aarch64-qemu "${args[@]}"
