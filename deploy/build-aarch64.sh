#!/usr/bin/env bash
# Cross-build edgehead for 64-bit ARM boards (Raspberry Pi OS / Debian arm64) on an
# x86-64 Debian machine, with camera support.
#
#   deploy/build-aarch64.sh            # profile "dist" (fat LTO): what ships
#   PROFILE=release deploy/build-aarch64.sh   # quicker to build (CI)
#
# Result: target/aarch64-unknown-linux-gnu/<profile>/edgehead (stripped).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-dist}
target=aarch64-unknown-linux-gnu
tools/need-packages.sh gcc-aarch64-linux-gnu libc6-dev-arm64-cross libclang1-14
rustup target list --installed | grep -qx "$target" || rustup target add "$target"
# ring's C code and v4l2-sys-mit's bindgen need the arm64 compiler and headers.
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
export BINDGEN_EXTRA_CLANG_ARGS_aarch64_unknown_linux_gnu="--sysroot=/usr/aarch64-linux-gnu -I/usr/aarch64-linux-gnu/include"
cargo build --locked --profile "$profile" --target "$target" --features camera
bin="target/$target/$profile/edgehead"
ls -l "$bin"
file "$bin" 2>/dev/null || true
