#!/bin/bash
# Install a Maskwatch edge node on Raspberry Pi OS (64-bit, bookworm or later) as a systemd service.
# Run "sudo deploy/pi/install.sh --help" for usage; deploy/pi/README.md is the guide.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)          # the maskwatch checkout this script belongs to
DESTDIR=                                 # prefix for every installed path (tests)
SITE=
NODE=
BROKER=
CAMERA=picamera
CA=
CREDENTIALS=
PLAIN=0
CONFIG_ONLY=0
START=1
SPEC=

usage() {
    cat <<USAGE
Usage: sudo install.sh --site SITE --node NODE --broker HOST[:PORT] (--ca FILE | --plain)
                       [--credentials FILE] [--camera picamera|usb] [--spec PIP_SPEC] [--no-start]

Installs on this Raspberry Pi:
  apt packages    python3-venv, python3-lgpio (GPIO), python3-picamera2 (Pi camera), libgl1...
                  (lgpio from PyPI when the archive lacks python3-lgpio, as plain Debian does)
  /opt/maskwatch  a venv with maskwatch[edge] (sees the apt-installed lgpio and picamera2)
  user maskwatch  system user in the video and gpio groups, home /var/lib/maskwatch
  /etc/maskwatch  edge.yaml (from deploy/pi/edge.yaml, kept if present), edge.env, ca.crt
  models          'maskwatch model fetch' into /var/lib/maskwatch/models
  systemd         maskwatch-edge.service, enabled and started

Options:
  --site, --node      the node's ids ([a-z0-9_-]); its broker login is "SITE/NODE"
  --broker H[:P]      the broker (default port 8883 with --ca, 1883 with --plain)
  --ca FILE           the site CA (make-certs' ca.crt): TLS to the broker
  --plain             no TLS (a trusted network only)
  --credentials FILE  this node's SITE.NODE.env from make-users (copied to /etc/maskwatch/edge.env)
  --camera KIND       picamera (Raspberry Pi camera, default) or usb (first USB camera)
  --spec SPEC         what pip installs (default: this checkout, "$SRC[edge]")
  --no-start          install and enable, do not start (needed where systemd is not running: a chroot)
  --config-only       only write /etc/maskwatch (no apt, pip, user or systemd); with --destdir
  --destdir DIR       install under DIR instead of / (for tests and images)
USAGE
}

die() { echo "install.sh: $*" >&2; exit 2; }
step() { echo "==> $*"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --site) SITE=${2:?}; shift 2 ;;
        --node) NODE=${2:?}; shift 2 ;;
        --broker) BROKER=${2:?}; shift 2 ;;
        --ca) CA=${2:?}; shift 2 ;;
        --plain) PLAIN=1; shift ;;
        --credentials) CREDENTIALS=${2:?}; shift 2 ;;
        --camera) CAMERA=${2:?}; shift 2 ;;
        --spec) SPEC=${2:?}; shift 2 ;;
        --no-start) START=0; shift ;;
        --config-only) CONFIG_ONLY=1; shift ;;
        --destdir) DESTDIR=${2:?}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

id_ok() { [[ $1 =~ ^[a-z0-9_-]{1,64}$ ]]; }
id_ok "$SITE" || die "--site: give a site id of [a-z0-9_-]"
id_ok "$NODE" || die "--node: give a node id of [a-z0-9_-]"
[ "$NODE" != all ] || die "--node: 'all' is reserved"
[ -n "$BROKER" ] || die "--broker HOST[:PORT] is required"
if [ "$PLAIN" = 1 ]; then
    [ -z "$CA" ] || die "--ca and --plain exclude each other"
    DEFAULT_PORT=1883
else
    [ -n "$CA" ] || die "give the site CA with --ca FILE (TLS), or --plain for plain MQTT"
    [ -r "$CA" ] || die "cannot read --ca $CA"
    DEFAULT_PORT=8883
fi
[ -z "$CREDENTIALS" ] || [ -r "$CREDENTIALS" ] || die "cannot read --credentials $CREDENTIALS"
case "$CAMERA" in
    picamera) SOURCE=picamera ;;
    usb) SOURCE='"0"' ;;
    *) die "--camera: picamera or usb" ;;
esac
if [[ $BROKER == *:* ]]; then HOST=${BROKER%:*}; PORT=${BROKER##*:}; else HOST=$BROKER; PORT=$DEFAULT_PORT; fi
[[ $HOST =~ ^[A-Za-z0-9._-]+$ ]] || die "--broker: give a DNS name or IPv4 address, got '$HOST'"
[[ $PORT =~ ^[0-9]{1,5}$ ]] || die "--broker: bad port in $BROKER"
[ "$CONFIG_ONLY" = 1 ] || [ "$(id -u)" = 0 ] || die "run as root (sudo)"

ETC=$DESTDIR/etc/maskwatch
OPT=$DESTDIR/opt/maskwatch
STATE=$DESTDIR/var/lib/maskwatch
VENV=$OPT/venv

apt_has() { [ -n "$(apt-cache madison "$1" 2>/dev/null)" ]; }

install_packages() {
    step "apt packages"
    [ "$(uname -m)" = aarch64 ] || echo "warning: $(uname -m) is not aarch64; Raspberry Pi OS 64-bit is expected"
    apt-get update
    local packages=(python3 python3-venv python3-pip libgl1 libglib2.0-0 openssl ca-certificates)
    # Raspberry Pi OS packages; plain Debian lacks them (install_venv then tries PyPI or says what to do).
    local optional=(python3-lgpio)
    [ "$CAMERA" = picamera ] && optional+=(python3-picamera2)
    for package in "${optional[@]}"; do
        if apt_has "$package"; then
            packages+=("$package")
        else
            echo "warning: $package is not in this apt archive (it is in Raspberry Pi OS's)"
        fi
    done
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${packages[@]}"
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "Python 3.11 or later is needed"
}

install_user() {
    step "user maskwatch"
    if ! id maskwatch >/dev/null 2>&1; then
        useradd --system --home-dir /var/lib/maskwatch --no-create-home --shell /usr/sbin/nologin maskwatch
    fi
    for group in video gpio; do
        getent group "$group" >/dev/null && usermod -aG "$group" maskwatch
    done
    install -d -o maskwatch -g maskwatch -m 0750 "$STATE" "$STATE/models"
}

install_venv() {
    step "venv $VENV with maskwatch[edge]"
    # --system-site-packages: picamera2 and lgpio come from apt, not from PyPI.
    python3 -m venv --system-site-packages "$VENV"
    "$VENV/bin/pip" install --upgrade pip
    "$VENV/bin/pip" install "${SPEC:-$SRC[edge]}"
    if ! "$VENV/bin/python" -c 'import lgpio' 2>/dev/null; then
        echo "no lgpio from apt: installing lgpio from PyPI (gpiozero's pin factory)"
        "$VENV/bin/pip" install lgpio || echo "warning: no lgpio: gpiozero cannot drive the servo and LEDs" \
            "until python3-lgpio (Raspberry Pi OS's archive) is installed; then rerun install.sh"
    fi
    if [ "$CAMERA" = picamera ] && ! dpkg -s python3-picamera2 >/dev/null 2>&1; then
        echo "warning: python3-picamera2 is not installed: the Pi camera will not open until it is" \
             "(Raspberry Pi OS: apt-get install python3-picamera2), or rerun with --camera usb"
    elif [ "$CAMERA" = picamera ] && ! "$VENV/bin/python" -c 'import picamera2' 2>/dev/null; then
        # apt's compiled helpers (e.g. simplejpeg) may predate the venv's numpy 2
        echo "warning: picamera2 does not import in the venv; trying simplejpeg from PyPI"
        "$VENV/bin/pip" install simplejpeg
        "$VENV/bin/python" -c 'import picamera2' \
            || die "picamera2 does not import in $VENV (see deploy/pi/README.md, Troubleshooting)"
    fi
    mkdir -p "$OPT"
    cp -r "$SRC/deploy" "$SRC/docs" "$OPT/"
}

write_config() {
    step "config $ETC"
    install -d -m 0755 "$ETC"
    if [ -e "$ETC/edge.yaml" ]; then
        echo "keeping the existing $ETC/edge.yaml"
    else
        sed -e "s|^site: [a-z0-9_-]*|site: $SITE|" \
            -e "s|^node: [a-z0-9_-]*|node: $NODE|" \
            -e "s|^source: [^ ]*|source: $SOURCE|" \
            -e "s|^  host: [^ ]*|  host: $HOST|" \
            -e "s|^  port: [0-9]*|  port: $PORT|" \
            "$HERE/edge.yaml" > "$ETC/edge.yaml.new"
        if [ "$PLAIN" = 1 ]; then
            sed -i -e 's|^  tls:$|  tls: null|' -e 's|^    ca_certs:|    # ca_certs:|' "$ETC/edge.yaml.new"
        fi
        mv "$ETC/edge.yaml.new" "$ETC/edge.yaml"
    fi
    chmod 0644 "$ETC/edge.yaml"
    if [ -n "$CA" ]; then
        install -m 0644 "$CA" "$ETC/ca.crt"
    fi
    if [ -n "$CREDENTIALS" ]; then
        grep -q "^MASKWATCH_BROKER__USERNAME=$SITE/$NODE\$" "$CREDENTIALS" \
            || die "$CREDENTIALS is not the login of $SITE/$NODE"
        install -m 0600 "$CREDENTIALS" "$ETC/edge.env"
    elif [ ! -e "$ETC/edge.env" ]; then
        printf '# MASKWATCH_BROKER__USERNAME=%s/%s\n# MASKWATCH_BROKER__PASSWORD=...\n' "$SITE" "$NODE" > "$ETC/edge.env"
        chmod 0600 "$ETC/edge.env"
        echo "warning: no --credentials: fill in $ETC/edge.env (make-users wrote $SITE.$NODE.env)"
    fi
}

fetch_models() {
    step "models"
    runuser -u maskwatch -- env MASKWATCH_MODEL_DIR=/var/lib/maskwatch/models HOME=/var/lib/maskwatch \
        "$VENV/bin/maskwatch" model fetch
}

install_service() {
    step "systemd maskwatch-edge.service"
    install -m 0644 "$SRC/deploy/systemd/maskwatch-edge.service" /etc/systemd/system/maskwatch-edge.service
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload
    else   # a chroot or an image build: enabling works offline, loading and starting need a running systemd
        echo "systemd is not running here: the unit is enabled, it loads at the next boot"
        [ "$START" = 0 ] || die "cannot start the service without a running systemd: rerun with --no-start"
    fi
    systemctl enable maskwatch-edge.service
    if [ "$START" = 1 ]; then
        systemctl restart maskwatch-edge.service
        echo "started; follow it with: journalctl -u maskwatch-edge -f"
    fi
}

if [ "$CONFIG_ONLY" = 1 ]; then
    write_config
    exit 0
fi
install_packages
install_user
install_venv
write_config
fetch_models
install_service
step "done: node $SITE/$NODE -> $HOST:$PORT ($([ "$PLAIN" = 1 ] && echo plain || echo TLS))"
