#!/bin/sh
# Make a busybox root filesystem tarball from Debian's busybox-static, for `berth import`.
#   scripts/busybox-rootfs.sh OUT.tar
# No registry involved: this is the offline base image the README and the tests use.
set -eu
out=${1:?usage: $0 OUT.tar}
busybox=${BUSYBOX:-/bin/busybox}
[ -x "$busybox" ] || { echo "$0: $busybox not found: apt-get install busybox-static" >&2; exit 1; }
"$busybox" --help 2>&1 | head -1 | grep -q static || file -L "$busybox" 2>/dev/null | grep -q static ||
    echo "$0: warning: $busybox may not be statically linked" >&2
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin" "$root/etc" "$root/root" \
         "$root/tmp" "$root/var/tmp" "$root/proc" "$root/sys" "$root/dev" "$root/home" "$root/run"
chmod 1777 "$root/tmp" "$root/var/tmp"
chmod 700 "$root/root"
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list-full); do
    [ "$applet" = bin/busybox ] && continue
    mkdir -p "$root/$(dirname "$applet")"
    ln -sf /bin/busybox "$root/$applet"
done
cat > "$root/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
cat > "$root/etc/group" <<'G'
root:x:0:
daemon:x:1:
tty:x:5:
users:x:100:
nogroup:x:65534:
G
echo "hosts: files dns" > "$root/etc/nsswitch.conf"
tar --numeric-owner --owner=0 --group=0 -C "$root" -cf "$out" .
