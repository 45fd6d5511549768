#!/usr/bin/env bash
# Smoke test of a cross-built ARM binary under qemu-user (Debian's
# qemu-user-static; CPU model of a Raspberry Pi 4 for arm64, of a Pi 2 for armhf,
# by default; QEMU_CPU overrides):
#   1. --version
#   2. check-config on the shipped configs (config/ and deploy/, with the model path
#      and state_dir pointed at this checkout)
#   3. embed the fixture images and compare the features with the x86-64 build's
#      (cosine >= 0.9999 for every image); on arm64 also with qemu's "max" CPU,
#      which has FP16 arithmetic: precision auto must pick f16, cosine >= 0.999
#   4. a short run of the daemon (files source, embedded broker on a free port)
#      until predictions arrive, then SIGTERM: exit code 0.
#
#   deploy/smoke-cross.sh [arm64|armhf] [ARM_BINARY] [X86_64_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:-arm64}
source deploy/cross.sh
arm=${2:-target/$target/release/edgehead}
x86=${3:-target/release/edgehead}
tools/need-packages.sh qemu-user-static mosquitto-clients
export QEMU_CPU=${QEMU_CPU:-$cpu}
run_arm() { "$qemu" -L "/usr/$gnu" "$arm" "$@"; }
tmp=$(mktemp -d)
pid=""
cleanup() {
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
export EDGEHEAD__STATE_DIR="$tmp/state"

echo "== version"
run_arm --version

echo "== check-config"
run_arm --config config/edgehead.toml check-config
EDGEHEAD__BACKBONE__MODEL=models/efficientnet-lite0-features-int8w.onnx \
    run_arm --config deploy/edgehead.toml check-config

echo "== features: $arch (qemu $QEMU_CPU) against x86-64"
images=(tests/fixtures/images/*.jpg)
# f32 on both sides, whatever QEMU_CPU offers (precision auto would pick f16 on "max").
EDGEHEAD__BACKBONE__PRECISION=f32 run_arm --config config/edgehead.toml embed "${images[@]}" > "$tmp/arm.jsonl"
EDGEHEAD__BACKBONE__PRECISION=f32 "$x86" --config config/edgehead.toml embed "${images[@]}" > "$tmp/x86.jsonl"
python3 - "$tmp/arm.jsonl" "$tmp/x86.jsonl" "$arch" <<'PY'
import json, math, sys
arm = [json.loads(l) for l in open(sys.argv[1])]
x86 = [json.loads(l) for l in open(sys.argv[2])]
assert len(arm) == len(x86) > 0, "no embeddings"
worst = 1.0
for a, b in zip(arm, x86):
    fa, fb = a["features"], b["features"]
    dot = sum(x * y for x, y in zip(fa, fb))
    cos = dot / (math.sqrt(sum(x * x for x in fa)) * math.sqrt(sum(y * y for y in fb)))
    diff = max(abs(x - y) for x, y in zip(fa, fb))
    worst = min(worst, cos)
    print(f"{a['image']}: cosine {cos:.6f}, max |diff| {diff:.5f}, {sys.argv[3]} {a['inference_ms']:.0f} ms under qemu, x86-64 {b['inference_ms']:.1f} ms")
if worst < 0.9999:
    sys.exit(f"features differ: worst cosine {worst}")
PY

if [ "$arch" = arm64 ]; then
    # backbone.precision = auto on a CPU with FP16 arithmetic (qemu's "max" model,
    # like a Pi 5's Cortex-A76): f16 everywhere but the depthwise convolutions.
    # tract reads FP16 from /proc/cpuinfo, which qemu-user does not emulate (it is the
    # host's): TRACT_CPU_AARCH64_KIND=a55 names a CPU tract knows has it.
    echo "== features: arm64 f16 (precision auto, qemu max) against x86-64 f32"
    QEMU_CPU=max TRACT_CPU_AARCH64_KIND=a55 EDGEHEAD__BACKBONE__PRECISION=auto \
        run_arm --config config/edgehead.toml embed "${images[@]}" > "$tmp/arm16.jsonl"
    python3 - "$tmp/arm16.jsonl" "$tmp/x86.jsonl" <<'PY'
import json, math, sys
arm = [json.loads(l) for l in open(sys.argv[1])]
x86 = [json.loads(l) for l in open(sys.argv[2])]
assert len(arm) == len(x86) > 0, "no embeddings"
assert all(a["precision"] == "f16" for a in arm), "auto did not choose f16 on an FP16 CPU"
worst = 1.0
for a, b in zip(arm, x86):
    fa, fb = a["features"], b["features"]
    cos = sum(x * y for x, y in zip(fa, fb)) / (math.sqrt(sum(x * x for x in fa)) * math.sqrt(sum(y * y for y in fb)))
    worst = min(worst, cos)
    print(f"{a['image']}: f16 cosine {cos:.6f} against f32")
if worst < 0.999:
    sys.exit(f"f16 features differ: worst cosine {worst}")
PY
fi

echo "== short daemon run under qemu"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
EDGEHEAD__DEVICE_ID=smoke EDGEHEAD__MQTT__EMBEDDED_BROKER__LISTEN="127.0.0.1:$port" \
    "$qemu" -L "/usr/$gnu" "$arm" --config config/edgehead.toml run > "$tmp/daemon.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do
    (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat "$tmp/daemon.log"; echo "daemon exited early"; exit 1; }
    sleep 0.5
done
mosquitto_sub -h 127.0.0.1 -p "$port" -t edgehead/smoke/default/prediction -C 2 -W 300 > "$tmp/predictions"
head -c 300 "$tmp/predictions"; echo
kill -TERM "$pid"
code=0
wait "$pid" || code=$?
tail -3 "$tmp/daemon.log"
pid=""
[ "$code" = 0 ] || { echo "daemon exited with $code after SIGTERM"; exit 1; }
echo "$arch smoke test passed"
