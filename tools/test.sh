#!/usr/bin/env bash
# The test command (README, "Quick start"): installs the Debian packages the tests
# need if they are missing (mosquitto for the brokers the tests start; ffmpeg for
# the command source's tests; chromium and chromium-driver for the console's
# browser test; libclang for the camera feature's bindgen), then runs every test
# with every feature.
# Extra arguments go to `cargo test` (e.g. a test name).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/need-packages.sh mosquitto libclang1-14 ffmpeg chromium chromium-driver
exec cargo test --locked --features camera "$@"
