#!/usr/bin/env bash
# The manual tier of CI: checks that are kept out of .ci/run to hold its time on a
# 2-core machine under 70 minutes (docs/development.md). Run it before a release,
# after .ci/run (it uses that run's amd64 release build for the comparison):
#   the armhf (32-bit ARMv7, Raspberry Pi OS 32-bit) cross build, release profile,
#   and its qemu smoke test (features against x86-64, a short daemon run).
# About 13 minutes on 2 cores with a cold cache for the armhf target.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
tools/need-packages.sh gcc-arm-linux-gnueabihf libc6-dev-armhf-cross qemu-user-static file
if [ ! -x target/release/edgehead ]; then
    cargo build --locked --release --features camera
fi
echo "== armhf (32-bit ARMv7) cross build (release profile) and qemu smoke test ($(date +%T))"
PROFILE=release deploy/cross-build.sh armhf
deploy/smoke-cross.sh armhf target/armv7-unknown-linux-gnueabihf/release/edgehead target/release/edgehead
echo "== done ($(date +%T))"
