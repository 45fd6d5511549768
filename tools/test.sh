#!/usr/bin/env bash
# The test command (README "Run the tests"): installs the Debian packages the tests
# need if they are missing (mosquitto for the broker the tests start; libclang for
# the camera feature's bindgen), then runs every test with every feature.
# Extra arguments go to `cargo test` (e.g. a test name).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
ldconfig -p 2>/dev/null | grep -q 'libclang' || need+=(libclang1-14)
if [ ${#need[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    echo "installing ${need[*]} (needed by the tests)" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${need[@]}"
fi
exec cargo test --locked --features camera "$@"
