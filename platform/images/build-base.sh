#!/usr/bin/env bash
# Build Modelport's offline base image from Debian packages (no registry pull needed):
#   debootstrap --variant=minbase bookworm  ->  docker import  ->  modelport/base:bookworm
#
# Usage: platform/images/build-base.sh [--force] [--upgrade] [--tag IMAGE:TAG]
#   --upgrade  also apply bookworm-updates/-security (slower; for images that ship)
# Env:   MODELPORT_BASE_IMAGE  tag to build (default modelport/base:bookworm)
#        DEBIAN_MIRROR         Debian mirror (default: the one apt uses on this host)
#        DEBIAN_SECURITY_MIRROR security mirror (default: the one apt uses on this host, if any)
#        DEBOOTSTRAP_CACHE     where downloaded .debs are kept between builds
#                              (default ${XDG_CACHE_HOME:-$HOME/.cache}/modelport/debootstrap)
#        EXTRA_PACKAGES        comma-separated extra Debian packages to include
# Idempotent: exits at once when the tag already exists, unless --force. Needs root.
set -euo pipefail

tag=${MODELPORT_BASE_IMAGE:-modelport/base:bookworm}
force=0
upgrade=${BASE_UPGRADE:-0}
suite=bookworm
while [[ $# -gt 0 ]]; do
  case "$1" in
    --force) force=1 ;;
    --upgrade) upgrade=1 ;;
    --tag) tag=$2; shift ;;
    --tag=*) tag=${1#--tag=} ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

if [[ $force -eq 0 ]] && docker image inspect "$tag" >/dev/null 2>&1; then
  echo "base image $tag exists (cached); use --force to rebuild"
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "build-base.sh needs root (debootstrap + chroot)" >&2
  exit 1
fi
command -v debootstrap >/dev/null || { echo "debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }

# The mirror apt already uses on this host (deb822 .sources files first, then one-line lists).
host_uri() {  # $1: grep pattern a URI must match, $2: pattern it must not match
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i}' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] || continue
    awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; break}}' "$f"
  done
} 2>/dev/null
pick() { host_uri | grep -E "$1" | grep -vE "$2" | head -1 || true; }

mirror=${DEBIAN_MIRROR:-$(pick '/debian/?$' 'security')}
mirror=${mirror:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-$(pick 'security' '^$')}
cache=${DEBOOTSTRAP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelport/debootstrap}
mkdir -p "$cache"

# libgomp1: the OpenMP runtime LightGBM's wheels link against (xgboost, scikit-learn and torch
# bundle their own copy); ~300 kB.
packages=python3,python3-venv,ca-certificates,tini,tzdata,libgomp1
[[ -n ${EXTRA_PACKAGES:-} ]] && packages="$packages,$EXTRA_PACKAGES"

start=$(date +%s)
rootfs=$(mktemp -d /tmp/modelport-rootfs.XXXXXX)
cleanup() {
  for m in proc sys dev/pts; do umount -l "$rootfs/$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$rootfs" "$rootfs.log"
}
trap cleanup EXIT

echo "debootstrap $suite from $mirror (cache $cache) into $rootfs"
# Two stages so dpkg can skip fsync (force-unsafe-io) while unpacking into a throw-away tree:
# on a busy disk this is the difference between ~1 and ~3 minutes.
debootstrap --foreign --variant=minbase --include="$packages" --cache-dir="$cache" \
  "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
  tail -30 "$rootfs.log" >&2; exit 1; }
mkdir -p "$rootfs/etc/dpkg/dpkg.cfg.d"
echo force-unsafe-io >"$rootfs/etc/dpkg/dpkg.cfg.d/00modelport-build-unsafe-io"
chroot "$rootfs" /debootstrap/debootstrap --second-stage >>"$rootfs.log" 2>&1 || {
  tail -30 "$rootfs.log" >&2; exit 1; }
rm -f "$rootfs/etc/dpkg/dpkg.cfg.d/00modelport-build-unsafe-io" "$rootfs.log"
echo "debootstrap done in $(( $(date +%s) - start ))s"

# apt sources for images built FROM this one (same mirror as the host), lean apt defaults.
{
  echo "deb $mirror $suite main"
  echo "deb $mirror $suite-updates main"
  [[ -n $security ]] && echo "deb $security $suite-security main"
} >"$rootfs/etc/apt/sources.list"
cat >"$rootfs/etc/apt/apt.conf.d/90modelport" <<'APT'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
APT
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/90modelport-nodoc" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
DPKG

if [[ $upgrade -eq 1 ]]; then
  cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
  # shellcheck disable=SC2016 # expanded by the chroot's shell
  chroot "$rootfs" sh -c 'set -e; o="-qq -o APT::Sandbox::User=root"; apt-get $o update
    DEBIAN_FRONTEND=noninteractive apt-get $o -y -o Dpkg::Options::=--force-unsafe-io upgrade
    apt-get clean' >"$rootfs.log" 2>&1 || { tail -30 "$rootfs.log" >&2; exit 1; }
  rm -f "$rootfs.log"
  : >"$rootfs/etc/resolv.conf"
fi

# The non-root user every Modelport process runs as.
chroot "$rootfs" groupadd --gid 10001 modelport
chroot "$rootfs" useradd --uid 10001 --gid 10001 --create-home --home-dir /home/modelport \
  --shell /usr/sbin/nologin modelport

# Trim: package caches, docs, man pages, apt lists (derived images run apt-get update).
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
  "$rootfs"/usr/share/doc/*/[!c]* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
  "$rootfs"/var/log/*.log "$rootfs"/tmp/* "$rootfs"/root/.cache
: >"$rootfs/etc/machine-id"

py=$(chroot "$rootfs" python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
tar --numeric-owner --xattrs -C "$rootfs" -c . | docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV PYTHONDONTWRITEBYTECODE=1' \
  --change 'ENV PYTHONUNBUFFERED=1' \
  --change "LABEL org.opencontainers.image.title=modelport-base" \
  --change "LABEL org.modelport.debian-suite=$suite" \
  --change "LABEL org.modelport.python=$py" \
  --change 'CMD ["/bin/bash"]' \
  - "$tag" >/dev/null
echo "built $tag (python $py) in $(( $(date +%s) - start ))s"
