#!/usr/bin/env python3
"""What the console costs the daemon: CPU and peak memory with 0, 1 and 3 pages
open on the live view, and the live view's bytes per second.

For each number of pages it starts a fresh daemon (the given binary, a release
build) on a `files` source replaying one 640x480 photo at --fps (a static
scene: the change gate keeps the backbone idle), with the embedded broker
and the console on free loopback ports, lets it settle, then opens that many
"pages": each one the live view (GET /api/live.mjpeg) and the event stream (GET
/api/events), as the Live page does, for --seconds. It reports the daemon's CPU
(user + system time over the window, as % of one core), its resident memory
(highest VmRSS sampled every 0.5 s in the window, and VmHWM since start), and
per page the live view's bytes and frames per second.

    tools/console_load.py target/release/edgehead [--seconds 60] [--fps 10]

Needs ffmpeg (to make the 640x480 frames). Standard library only.
"""

import argparse
import http.cookiejar
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PASSWORD = "console load password"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def frames(dir_):
    """A static scene: one fixture photo as a 640x480 JPEG, replayed (the change
    gate then keeps the backbone idle, so what is measured is the console)."""
    src = os.path.join(ROOT, "tests", "fixtures", "images", "hat-1.jpg")
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-i", src,
         "-vf", "scale=640:480", "-q:v", "3", os.path.join(dir_, "scene.jpg")],
        check=True)


def config(dir_, fps, web_port, mqtt_port):
    path = os.path.join(dir_, "edgehead.toml")
    with open(path, "w") as f:
        f.write(f"""device_id = "load"
state_dir = "{dir_}/state"
[source]
kind = "files"
[source.files]
path = "{dir_}/frames"
fps = {fps}
[backbone]
model = "{ROOT}/models/efficientnet-lite0-features-int8w.onnx"
[mqtt]
host = ""
[mqtt.embedded_broker]
listen = "127.0.0.1:{mqtt_port}"
[homeassistant]
discovery = false
[web]
listen = "127.0.0.1:{web_port}"
""")
    return path


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def login(base):
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    req = urllib.request.Request(base + "/api/login", data=json.dumps({"password": PASSWORD}).encode(),
                                 headers={"Content-Type": "application/json"})
    opener.open(req, timeout=10).read()
    return opener


def read_stream(opener, url, until, out, key):
    """Read `url` until `until`; count bytes (and JPEG parts) into out[key]."""
    n, parts = 0, 0
    try:
        with opener.open(url, timeout=10) as r:
            while time.time() < until:
                chunk = r.read1(65536)
                if not chunk:
                    break
                n += len(chunk)
                parts += chunk.count(b"--edgeheadframe")
    except Exception as e:  # report, do not hide
        out[key + "_error"] = str(e)
    out[key] = (n, parts)


def run(binary, pages, seconds, fps, settle):
    dir_ = tempfile.mkdtemp(prefix="edgehead-console-load-")
    try:
        os.makedirs(os.path.join(dir_, "frames"))
        frames(os.path.join(dir_, "frames"))
        web_port, mqtt_port = free_port(), free_port()
        cfg = config(dir_, fps, web_port, mqtt_port)
        subprocess.run([binary, "--config", cfg, "set-password", "--stdin"], input=PASSWORD + "\n",
                       text=True, check=True, capture_output=True)
        log = open(os.path.join(dir_, "daemon.log"), "w")
        daemon = subprocess.Popen([binary, "--config", cfg, "run"], stderr=log, stdout=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{web_port}"
        try:
            deadline = time.time() + 60
            while True:
                try:
                    opener = login(base)
                    break
                except Exception:
                    if time.time() > deadline or daemon.poll() is not None:
                        raise SystemExit(f"the daemon did not start; see {dir_}/daemon.log")
                    time.sleep(0.2)
            time.sleep(settle)
            start_cpu, start = cpu_seconds(daemon.pid), time.time()
            until = start + seconds
            out, threads = {}, []
            for i in range(pages):
                o = login(base)
                for what, path in (("live", "/api/live.mjpeg"), ("events", "/api/events")):
                    t = threading.Thread(target=read_stream, args=(o, base + path, until, out, f"{what}{i}"))
                    t.start()
                    threads.append(t)
            peak = 0
            while time.time() < until:
                peak = max(peak, status_kib(daemon.pid, "VmRSS"))
                time.sleep(0.5)
            for t in threads:
                t.join()
            took = time.time() - start
            cpu = (cpu_seconds(daemon.pid) - start_cpu) / took * 100
            hwm = status_kib(daemon.pid, "VmHWM")
            live = [out.get(f"live{i}", (0, 0)) for i in range(pages)]
            errors = [v for k, v in out.items() if k.endswith("_error")]
            return {
                "pages": pages, "seconds": round(took, 1), "cpu_percent": round(cpu, 1),
                "rss_peak_mib": round(peak / 1024, 1), "vmhwm_mib": round(hwm / 1024, 1),
                "live_bytes_per_s": [round(n / took) for n, _ in live],
                "live_frames_per_s": [round(p / took, 2) for _, p in live],
                "errors": errors,
            }
        finally:
            daemon.terminate()
            daemon.wait(30)
    finally:
        shutil.rmtree(dir_, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--fps", type=float, default=10)
    ap.add_argument("--settle", type=float, default=10, help="seconds after start before measuring")
    ap.add_argument("--pages", default="0,1,3")
    a = ap.parse_args()
    print(f"files source: one 640x480 JPEG at {a.fps} fps; {a.seconds} s per run", file=sys.stderr)
    print("| pages | CPU (% of one core) | RSS peak in the window | VmHWM | live view per page |")
    print("|---|---|---|---|---|")
    for n in [int(p) for p in a.pages.split(",")]:
        r = run(a.binary, n, a.seconds, a.fps, a.settle)
        per_page = ", ".join(f"{b / 1024:.1f} KiB/s ({f} frames/s)" for b, f in
                             zip(r["live_bytes_per_s"], r["live_frames_per_s"])) or "-"
        print(f"| {n} | {r['cpu_percent']} | {r['rss_peak_mib']} MiB | {r['vmhwm_mib']} MiB | {per_page} |")
        if r["errors"]:
            print(f"errors: {r['errors']}", file=sys.stderr)


if __name__ == "__main__":
    main()
