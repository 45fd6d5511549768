#!/usr/bin/env bash
# Frames per second and CPU per frame of the command and http sources at 640x480
# and 1280x720, fed by real programs (ffmpeg's test pattern as MJPEG on a pipe,
# ffmpeg's own HTTP server sending multipart MJPEG, python's http.server for
# snapshots), with `edgehead bench-source`; and the decode cost of USB camera
# buffers. Usage: tools/bench_sources.sh [BINARY] [SECONDS]  (default
# target/release/edgehead, 15 s). Needs ffmpeg and python3. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/edgehead}
secs=${2:-15}
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
run() { # kind, then TOML lines for the source
    local kind=$1; shift
    printf 'device_id = "bench"\nstate_dir = "%s/state"\n[source]\nkind = "%s"\n%s\n' \
        "$tmp" "$kind" "$*" > "$tmp/edgehead.toml"
    "$bin" --config "$tmp/edgehead.toml" bench-source --seconds "$secs" > "$tmp/last" 2>/dev/null
    head -1 "$tmp/last"
}
for size in 640x480 1280x720; do
    echo "== $size"
    echo -n "command, ffmpeg 30 fps MJPEG pipe: "
    run command "[source.command]
program = \"ffmpeg\"
args = [\"-nostdin\", \"-loglevel\", \"error\", \"-re\", \"-f\", \"lavfi\", \"-i\", \"testsrc=size=$size:rate=30\", \"-f\", \"mjpeg\", \"-q:v\", \"5\", \"pipe:1\"]"

    p=$(port)
    ffmpeg -nostdin -loglevel error -re -f lavfi -i "testsrc=size=$size:rate=30" -f mpjpeg -q:v 5 \
        -content_type "multipart/x-mixed-replace;boundary=ffmpeg" -listen 1 "http://127.0.0.1:$p/stream" 2>/dev/null &
    pids+=($!)
    sleep 1
    echo -n "http stream, ffmpeg 30 fps multipart: "
    run http "[source.http]
url = \"http://127.0.0.1:$p/stream\""

    ffmpeg -y -nostdin -loglevel error -f lavfi -i "testsrc=size=$size:rate=1" -frames:v 1 -q:v 5 "$tmp/snap.jpg"
    p=$(port)
    (cd "$tmp" && exec python3 -m http.server "$p" --bind 127.0.0.1 >/dev/null 2>&1) &
    pids+=($!)
    sleep 1
    echo -n "http snapshot every 50 ms: "
    run http "[source.http]
url = \"http://127.0.0.1:$p/snap.jpg\"
mode = \"snapshot\"
interval_ms = 50"
done
echo "== USB camera path (decode only)"
grep "^decode" "$tmp/last" || true
