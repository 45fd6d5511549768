#!/usr/bin/env bash
# Install the package with dpkg on this machine, check what it installed, run the
# installed daemon as its own user for a few seconds, check that an edited
# conffile survives a reinstall, then remove and purge it and check that nothing
# is left behind. Needs root (or sudo); changes the system it runs on.
#
#   deploy/test-deb.sh target/deb/edgehead_<version>_amd64.deb
set -euo pipefail
deb=${1:?usage: test-deb.sh <package.deb>}
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
fail() { echo "FAIL: $*" >&2; exit 1; }

echo "== install"
$sudo dpkg -i "$deb"
[ -x /usr/bin/edgehead ] || fail "no /usr/bin/edgehead"
/usr/bin/edgehead --version
[ -f /usr/share/edgehead/models/efficientnet-lite0-features-int8w.onnx ] || fail "model missing"
[ -f /etc/edgehead/edgehead.toml ] || fail "config missing"
[ -f /lib/systemd/system/edgehead.service ] || fail "unit missing"
getent passwd edgehead >/dev/null || fail "user edgehead not created"
if getent group video >/dev/null; then id -nG edgehead | grep -qw video || fail "edgehead not in group video"; fi
[ "$(stat -c %U /var/lib/edgehead)" = edgehead ] || fail "/var/lib/edgehead not owned by edgehead"
systemd-analyze verify /lib/systemd/system/edgehead.service
systemd-analyze security --offline=true /lib/systemd/system/edgehead.service | tail -1

echo "== check-config and a short run as user edgehead (synthetic source: no camera here)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_edgehead() {
    $sudo runuser -u edgehead -- env EDGEHEAD__STATE_DIR=/var/lib/edgehead EDGEHEAD__SOURCE__KIND=synthetic \
        EDGEHEAD__DEVICE_ID=debtest EDGEHEAD__MQTT__EMBEDDED_BROKER__LISTEN="127.0.0.1:$port" \
        /usr/bin/edgehead --config /etc/edgehead/edgehead.toml "$@"
}
as_edgehead check-config
log=$(mktemp)
as_edgehead run > "$log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
    grep -q "edgehead running" "$log" && break
    kill -0 "$pid" 2>/dev/null || { cat "$log"; fail "daemon exited early"; }
    sleep 0.2
done
sleep 3
$sudo pkill -TERM -u edgehead -x edgehead || true
code=0
wait "$pid" || code=$?
[ "$code" = 0 ] || { cat "$log"; fail "daemon exited with $code"; }
grep -q "stopped" "$log" || { cat "$log"; fail "no clean stop"; }
rm -f "$log"
[ -d /var/lib/edgehead/classifiers/default/samples ] || fail "no state written to /var/lib/edgehead/classifiers/default"

echo "== reinstall keeps an edited config"
echo "# local edit" | $sudo tee -a /etc/edgehead/edgehead.toml >/dev/null
$sudo dpkg -i --force-confold "$deb" >/dev/null
grep -q "# local edit" /etc/edgehead/edgehead.toml || fail "reinstall overwrote the edited config"

echo "== remove"
$sudo dpkg -r edgehead
[ ! -e /usr/bin/edgehead ] || fail "binary left after remove"
[ ! -e /usr/share/edgehead ] || fail "/usr/share/edgehead left after remove"
[ -f /etc/edgehead/edgehead.toml ] || fail "remove (not purge) should keep the config"

echo "== purge"
$sudo dpkg -P edgehead
for p in /etc/edgehead /var/lib/edgehead /lib/systemd/system/edgehead.service /usr/share/doc/edgehead; do
    [ ! -e "$p" ] || fail "$p left after purge"
done
! getent passwd edgehead >/dev/null || fail "user edgehead left after purge"
! dpkg -s edgehead >/dev/null 2>&1 || fail "package still known to dpkg"
echo "package installs, runs, keeps config edits, removes and purges cleanly"
