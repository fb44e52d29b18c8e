# Sourced by scripts/test, scripts/bench and scripts/demo: the latest leg on a machine without
# Python 3.14. Debian's own python3.14 comes in a minimal Debian forky root made once with
# debootstrap (bookworm's debootstrap has no forky script; sid's serves) and kept, with the
# leg's venv, in $HA_INGESTOR_CACHE (default /var/cache/ha-ingestor), outside the checkout.
# A run mounts the checkout at /src inside the root, runs the same script there, and unmounts
# everything it mounted when it ends, however it ends. Needs root and a Debian host.

ROOT_CACHE=${HA_INGESTOR_CACHE:-/var/cache/ha-ingestor}
ROOT_DIR=$ROOT_CACHE/forky
ROOT_SRC=/src
ROOT_PACKAGES=python3.14,python3.14-venv,ca-certificates
ROOT_MOUNTS=()

debian_mirror() {
  # The Debian archive this machine's apt uses (one-line or deb822 sources), else the default.
  local url
  url=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
      2>/dev/null | grep -E '^[[:space:]]*(deb[[:space:]]|URIs:)' \
    | grep -oE 'https?://[^[:space:]]+/debian/?([[:space:]]|$)' | head -1 | tr -d '[:space:]')
  echo "${url:-http://deb.debian.org/debian}"
}

root_is_mounted() {
  grep -q " $ROOT_DIR/" /proc/mounts
}

ensure_root() {
  if [ -x "$ROOT_DIR/usr/bin/python3.14" ] && [ -f "$ROOT_DIR/.ha-ingestor-root" ]; then
    return 0
  fi
  if [ "$(id -u)" -ne 0 ] || [ ! -r /etc/debian_version ]; then
    echo "Python 3.14 not found: put a python3.14 on PATH, or run as root on Debian to build" \
      "one from Debian's packages" >&2
    return 1
  fi
  if root_is_mounted; then
    echo "$ROOT_DIR is incomplete but still has mounts; unmount them first" >&2
    return 1
  fi
  if ! command -v debootstrap >/dev/null 2>&1; then
    echo "installing Debian's debootstrap package"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  local mirror log
  mirror=$(debian_mirror)
  log="$ROOT_CACHE/debootstrap.log"
  echo "building a Debian forky root with Python 3.14 in $ROOT_DIR from $mirror (once, ~1 min)"
  mkdir -p "$ROOT_CACHE"
  rm -rf "$ROOT_DIR.new" "$ROOT_DIR"
  if ! debootstrap --variant=minbase --include="$ROOT_PACKAGES" forky "$ROOT_DIR.new" "$mirror" \
      /usr/share/debootstrap/scripts/sid >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    echo "debootstrap failed (whole log: $log)" >&2
    return 1
  fi
  touch "$ROOT_DIR.new/.ha-ingestor-root"
  mv "$ROOT_DIR.new" "$ROOT_DIR"
}

mount_in_root() {
  # mount_in_root TARGET MOUNT-ARGS...: remembered, so unmount_root undoes exactly these.
  local target="$ROOT_DIR$1"
  shift
  mount "$@" "$target" || return 1
  ROOT_MOUNTS+=("$target")
  # Private: nothing mounted or unmounted here may reach the host's own mounts.
  mount --make-private "$target"
}

mount_root() {
  # What the tests need: /proc, /dev with its own /dev/shm, the checkout, and the host's
  # influxd (Debian forky has no influxdb package; the binary needs only libc).
  mount_in_root /proc -t proc proc || return 1
  mount_in_root /dev --bind /dev || return 1
  mount_in_root /dev/shm -t tmpfs -o mode=1777 shm || return 1
  mkdir -p "$ROOT_DIR$ROOT_SRC"
  mount_in_root "$ROOT_SRC" --bind "$PWD" || return 1
  local influxd
  if influxd=$(command -v influxd); then
    touch "$ROOT_DIR/usr/bin/influxd"
    mount_in_root /usr/bin/influxd --bind "$influxd" || return 1
  fi
}

unmount_root() {
  local i
  for ((i = ${#ROOT_MOUNTS[@]} - 1; i >= 0; i--)); do
    # Lazily: a process that still holds a file there cannot keep the mount alive.
    umount -l "${ROOT_MOUNTS[i]}" 2>/dev/null || true
  done
  ROOT_MOUNTS=()
}

unmount_stale() {
  # Mounts left by a run that was killed outright (the lock says no run is active).
  local target
  { grep -oE " $ROOT_DIR/[^ ]+" /proc/mounts || true; } | sort -r | while read -r target; do
    umount -l "$target" 2>/dev/null || true
  done
}

run_in_root() {
  # run_in_root COMMAND...: run COMMAND (relative to the checkout) inside the root; one run
  # at a time per root. COMMAND learns where the root and the checkout are on the host
  # (scripts/demo prints commands and paths for the user's shell, outside the root).
  ensure_root || return 1
  cp /etc/ssl/certs/ca-certificates.crt "$ROOT_DIR/etc/ssl/certs/ca-certificates.crt"
  cp /etc/resolv.conf /etc/hosts "$ROOT_DIR/etc/"
  if [ -f /etc/pip.conf ]; then cp /etc/pip.conf "$ROOT_DIR/etc/pip.conf"; fi
  (
    exec 9>"$ROOT_CACHE/forky.lock"
    flock 9
    unmount_stale
    trap unmount_root EXIT
    trap 'exit 130' INT TERM
    mount_root || exit 1
    chroot "$ROOT_DIR" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM="${TERM:-dumb}" \
      PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      HA_INGESTOR_LATEST_VENV=/opt/ha-ingestor/venv-latest \
      HA_INGESTOR_ROOT_DIR="$ROOT_DIR" HA_INGESTOR_HOST_CHECKOUT="$PWD" \
      PIP_DEFAULT_TIMEOUT="${PIP_DEFAULT_TIMEOUT:-180}" \
      /bin/bash -c 'cd "$0" && exec "$@"' "$ROOT_SRC" "$@"
  )
}
