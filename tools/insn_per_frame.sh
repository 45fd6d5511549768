#!/usr/bin/env bash
# Guest instructions per frame of an arm64 build's backbone under qemu
# (../shared/tools/qemu-insn/count.sh, a repeatable proxy for CPU work on a board):
# `embed` on 1 image and on 3 images, one backbone thread; the difference / 2 is the
# cost of one frame (decode, preprocess, backbone), start-up cancels out.
#
#   tools/insn_per_frame.sh [--cpu cortex-a72|max|cortex-a53] [ARM64_BINARY]
#
# Backbone settings come from the environment as for the daemon, e.g.
#   EDGEHEAD__BACKBONE__INPUT_WIDTH=192 EDGEHEAD__BACKBONE__INPUT_HEIGHT=192 tools/insn_per_frame.sh
# f16 needs a CPU with FP16 arithmetic: qemu's "max" (without SVE, which a Pi 5's
# Cortex-A76 lacks), and TRACT_CPU_AARCH64_KIND=a55, because tract reads FP16 from
# /proc/cpuinfo and qemu-user shows the host's:
#   TRACT_CPU_AARCH64_KIND=a55 tools/insn_per_frame.sh --cpu max,sve=off,sme=off
# (with EDGEHEAD__BACKBONE__PRECISION=f32 for the f32 count on the same CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
cpu=cortex-a72
if [ "${1:-}" = --cpu ]; then cpu=$2; shift 2; fi
bin=${1:-target/aarch64-unknown-linux-gnu/release/edgehead}
count=${QEMU_INSN:-../shared/tools/qemu-insn/count.sh}
export EDGEHEAD__BACKBONE__THREADS=1
imgs=(tests/fixtures/images/hat-1.jpg tests/fixtures/images/hat-2.jpg tests/fixtures/images/shoes-1.jpg)
n() { "$count" --cpu "$cpu" -- "$bin" --config config/edgehead.toml embed "$@" 2>&1 >/dev/null \
        | sed -n 's/^guest_insns //p' | tail -1; }
one=$(n "${imgs[0]}")
three=$(n "${imgs[@]}")
per=$(( (three - one) / 2 ))
precision=$("$count" --cpu "$cpu" -- "$bin" --config config/edgehead.toml embed "${imgs[0]}" 2>/dev/null \
        | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["precision"])')
echo "cpu $cpu precision $precision: 1 image $one, 3 images $three -> $per instructions per frame ($(( per / 1000000 ))M)"
