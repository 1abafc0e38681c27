#!/bin/sh
# The main job on built-in defaults: a busybox image made from Debian's busybox-static
# (no registry), and a container that shows it is isolated from the host.
set -eu
cd "$(dirname "$0")"
berth=${BERTH:-/usr/local/bin/berth}
if ! "$berth" image inspect busybox >/dev/null 2>&1; then
    tarball=$(mktemp --suffix=.tar)
    ./scripts/busybox-rootfs.sh "$tarball"
    "$berth" import -c 'CMD ["sh"]' -m "busybox from Debian's busybox-static" "$tarball" busybox
    rm -f "$tarball"
fi
echo "host: hostname $(hostname), $(ls /proc | grep -c '^[0-9]') processes, interfaces: $(ls /sys/class/net | tr '\n' ' ')"
"$berth" run --rm --hostname isolated busybox sh -c '
    echo "container: hostname $(hostname), processes:"; ps -o pid,user,args
    echo "container: interfaces: $(ls /sys/class/net | tr "\n" " ")"
    echo "container: writes to its own root: $(touch /written-in-container && echo ok)"'
test ! -e /written-in-container && echo "host: /written-in-container does not exist on the host"
