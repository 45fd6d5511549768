#!/usr/bin/env bash
# Install edgehead on a board, locally or over ssh, without a package manager:
# binary, default model, configuration (never overwriting an edited one), systemd
# unit and the `edgehead` system user. Prefer the .deb (deploy/build-deb.sh) where
# dpkg is available; this is for everything else.
#
#   deploy/install.sh BINARY                 # on this machine (as root or with sudo)
#   deploy/install.sh BINARY pi@raspberrypi  # on a board over ssh (sudo there)
#
# Then: sudo systemctl enable --now edgehead; journalctl -u edgehead -f
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:?usage: install.sh BINARY [user@host]}
host=${2:-}
files=("$bin" models/efficientnet-lite0-features-int8w.onnx models/efficientnet-lite0-features-int8w.json
       deploy/edgehead.toml systemd/edgehead.service)

remote_script='#!/bin/sh
set -eu
src=$1
sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
$sudo install -D -m 0755 "$src/edgehead" /usr/bin/edgehead
$sudo install -D -m 0644 "$src/efficientnet-lite0-features-int8w.onnx" /usr/share/edgehead/models/efficientnet-lite0-features-int8w.onnx
$sudo install -D -m 0644 "$src/efficientnet-lite0-features-int8w.json" /usr/share/edgehead/models/efficientnet-lite0-features-int8w.json
if [ -e /etc/edgehead/edgehead.toml ]; then
    if ! cmp -s "$src/edgehead.toml" /etc/edgehead/edgehead.toml; then
        $sudo install -m 0644 "$src/edgehead.toml" /etc/edgehead/edgehead.toml.new
        echo "kept your /etc/edgehead/edgehead.toml; the new default is edgehead.toml.new"
    fi
else
    $sudo install -D -m 0644 "$src/edgehead.toml" /etc/edgehead/edgehead.toml
fi
$sudo install -D -m 0644 "$src/edgehead.service" /etc/systemd/system/edgehead.service
getent passwd edgehead >/dev/null || $sudo useradd --system --home-dir /var/lib/edgehead --no-create-home --shell /usr/sbin/nologin --user-group edgehead
getent group video >/dev/null && $sudo usermod -aG video edgehead
$sudo install -d -o edgehead -g edgehead -m 0750 /var/lib/edgehead
$sudo /usr/bin/edgehead --config /etc/edgehead/edgehead.toml check-config || echo "check-config failed: edit /etc/edgehead/edgehead.toml"
if [ -d /run/systemd/system ]; then $sudo systemctl daemon-reload; fi
echo "installed; start with: sudo systemctl enable --now edgehead"
'

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp "${files[@]}" "$stage/"
[ "$(basename "$bin")" = edgehead ] || mv "$stage/$(basename "$bin")" "$stage/edgehead"
printf '%s\n' "$remote_script" > "$stage/install-here.sh"
if [ -z "$host" ]; then
    sh "$stage/install-here.sh" "$stage"
else
    remote=$(ssh "$host" mktemp -d)
    scp -q "$stage"/* "$host:$remote/"
    ssh -t "$host" "sh $remote/install-here.sh $remote; rm -rf $remote"
fi
