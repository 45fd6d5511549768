#!/usr/bin/env bash
# Cross-build edgehead for ARM boards on an x86-64 Debian machine, with camera
# support.
#
#   deploy/cross-build.sh [arm64|armhf]          # profile "dist" (fat LTO): what ships
#   PROFILE=release deploy/cross-build.sh arm64  # quicker to build (CI)
#
# arm64 (default): 64-bit Raspberry Pi OS / Debian; armhf: 32-bit Raspberry Pi OS
# (ARMv7). Installs what it needs when missing (Debian's cross compiler and C
# library, libclang for bindgen, the rustup target).
# Result: target/<rust target>/<profile>/edgehead (stripped).
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:-arm64}
source deploy/cross.sh
profile=${PROFILE:-dist}
# shellcheck disable=SC2086 # a list of packages
tools/need-packages.sh $packages libclang1-14
rustup target list --installed | grep -qx "$target" || rustup target add "$target"
# ring's C code and v4l2-sys-mit's bindgen need the cross compiler and headers;
# the linker and the qemu runner are set in .cargo/config.toml.
t=${target//-/_}
export "CC_$t=$gnu-gcc" "AR_$t=$gnu-ar"
export "BINDGEN_EXTRA_CLANG_ARGS_$t=--sysroot=/usr/$gnu -I/usr/$gnu/include"
cargo build --locked --profile "$profile" --target "$target" --features camera
bin="target/$target/$profile/edgehead"
ls -l "$bin"
file "$bin" 2>/dev/null || true
