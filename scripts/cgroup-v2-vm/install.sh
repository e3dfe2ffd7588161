#!/bin/sh
# Install what scripts/cgroup-v2-vm/run.py needs, from Debian's archive.
# Idempotent: packages already installed are left alone and nothing is fetched
# when all three are present. Must run as root (apt-get).
set -eu

# kmod (modinfo) comes with linux-image-amd64; named so that a machine that
# somehow lacks it gets it too.
PACKAGES="qemu-system-x86 linux-image-amd64 busybox-static kmod"

missing=""
for pkg in $PACKAGES; do
    # dpkg-query prints "install ok installed" only for a fully installed package.
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || missing="$missing $pkg"
done

if [ -z "$missing" ]; then
    echo "cgroup-v2-vm: all packages present:$PACKAGES"
    exit 0
fi

echo "cgroup-v2-vm: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086  # word splitting of the package list is intended
apt-get install -y -qq --no-install-recommends $missing
