#!/bin/sh
# Install berth and what it needs on a Debian 12 machine, as root. Idempotent.
set -eu
cd "$(dirname "$0")"
if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (berth creates namespaces, mounts and cgroups)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# busybox-static: the offline base image; libseccomp2: seccomp compiler; python3-venv: the venv
apt-get install -y -q --no-install-recommends \
    python3 python3-venv busybox-static libseccomp2 ca-certificates tar gzip xz-utils \
    gcc libc6-dev iproute2 nftables iptables containernetworking-plugins
# Debian's interpreter, not whatever python3 is first on PATH: the venv must outlive shells
/usr/bin/python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check '.[test]'
# berth's own launcher: pip's imports re, and site (its .pth files, Debian's apport hook)
# costs every command ~3 ms; -S skips it and the launcher adds the venv's packages itself
site=$(.venv/bin/python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
printf '#!%s/.venv/bin/python3 -S\nimport sys\nsys.path.append("%s")\nfrom berth.cli import launch\nlaunch()\n' \
    "$PWD" "$site" > .venv/bin/berth
# berth-shim: what a settled container's monitor becomes (berth/shim/shim.c says why)
cc -O2 -Wall -o .venv/bin/berth-shim berth/shim/shim.c
ln -sf "$PWD/.venv/bin/berth" /usr/local/bin/berth
echo "berth installed: $(/usr/local/bin/berth --version)"
