"""berth.layer: applying real layer tars, whiteouts, hostile layers and compression.

Every tar here is built with tarfile in tmp_path. Hostile layers are applied to
``<tmp>/outer/layer`` with a sentinel directory beside it; each such test checks the
error names the member and that nothing outside the layer changed.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import random
import resource
import shutil
import stat
import subprocess
import tarfile
import tempfile
import threading
import time
import tracemalloc
import uuid

import pytest

import berth.layer
from berth.errors import DataLoss, InvalidArgument
from berth.layer import ApplyResult, apply_layer, open_decompressed
from berth.layer.compression import detect

T0 = 1_600_000_000
# security.capability for cap_net_raw+ep (VFS_CAP_REVISION_2)
CAP_NET_RAW = bytes.fromhex("0100000200200000000000000000000000000000")


# -- building layers


def member(name, kind=tarfile.REGTYPE, *, data=b"", mode=0o644, uid=0, gid=0, mtime=T0,
           link="", major=0, minor=0, xattrs=None, pax=None):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid, info.gid = uid, gid
    info.mtime = mtime
    info.linkname = link
    info.devmajor, info.devminor = major, minor
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    records = dict(pax or {})
    for key, value in (xattrs or {}).items():
        records["SCHILY.xattr." + key] = value.decode("utf-8", "surrogateescape")
    info.pax_headers = records
    return info, data


def d(name, **kw):
    return member(name, tarfile.DIRTYPE, mode=kw.pop("mode", 0o755), **kw)


def f(name, data=b"", **kw):
    return member(name, data=data, **kw)


def sym(name, target, **kw):
    return member(name, tarfile.SYMTYPE, link=target, mode=0o777, **kw)


def hard(name, target, **kw):
    return member(name, tarfile.LNKTYPE, link=target, **kw)


def tar_bytes(*members, fmt=tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def apply_bytes(raw: bytes, dest, **kw) -> ApplyResult:
    return apply_layer(io.BytesIO(raw), str(dest), **kw)


class NoSeek(io.RawIOBase):
    """A stream that can only be read, like a pipe: no seek, no tell, no peek."""

    def __init__(self, data: bytes, piece: int = 7000, first: int = 3) -> None:
        self._data = memoryview(data)
        self._piece = piece
        self._first = first  # the first read is shorter still, as a pipe's often is

    def readable(self):
        return True

    def seekable(self):
        return False

    def readinto(self, b):
        n = min(len(b), self._first or self._piece, len(self._data))
        self._first = 0
        b[:n] = self._data[:n]
        self._data = self._data[n:]
        return n


# -- the hostile-layer harness


@pytest.fixture
def outer(tmp_path):
    """<tmp>/outer/{layer,sentinel}: the layer dir, and a directory beside it to stay intact."""
    base = tmp_path / "outer"
    (base / "layer").mkdir(parents=True)
    (base / "sentinel").mkdir()
    (base / "sentinel" / "secret").write_bytes(b"do not touch")
    return base


def snapshot_outside(base) -> dict:
    """Everything under tmp_path except the layer dir: path -> (mode, size, nlink, mtime, data)."""
    top = base.parent
    layer = str(base / "layer")
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        if dirpath == layer or dirpath.startswith(layer + os.sep):
            continue
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if path == layer:
                continue
            st = os.lstat(path)
            data = open(path, "rb").read() if stat.S_ISREG(st.st_mode) else None
            out[os.path.relpath(path, top)] = (st.st_mode, st.st_size, st.st_nlink, st.st_mtime_ns, data)
    return out


def assert_rejected(outer, raw: bytes, member_name: str, **kw) -> InvalidArgument:
    before = snapshot_outside(outer)
    with pytest.raises(InvalidArgument) as err:
        apply_bytes(raw, outer / "layer", **kw)
    assert repr(member_name) in str(err.value), str(err.value)
    assert snapshot_outside(outer) == before, "the layer changed something outside its directory"
    return err.value


# -- the package


def test_package_exports_exactly_the_layer_api():
    assert sorted(berth.layer.__all__) == ["ApplyResult", "apply_layer", "detect", "open_decompressed"]


# -- normal extraction


def test_extracts_every_member_type_with_owner_mode_times_and_xattrs(tmp_path):
    raw = tar_bytes(
        d("etc", mtime=T0 + 1),
        f("etc/passwd", b"root:x:0:0\n", uid=1000, gid=1001, mtime=T0 + 2),
        d("usr", uid=7, gid=8, mode=0o750, mtime=T0 + 3),
        d("usr/bin", mtime=T0 + 4, xattrs={"user.dirnote": b"dir"}),
        f("usr/bin/su", b"\x7fELF su", mode=0o4755, uid=1000, gid=0),
        f("usr/bin/wall", b"\x7fELF wall", mode=0o2755, uid=0, gid=5),
        f("usr/bin/ping", b"\x7fELF ping", mode=0o755,
          xattrs={"security.capability": CAP_NET_RAW, "user.bin": b"\xff\xfe\x00\x01"}),
        hard("usr/bin/su-again", "usr/bin/su"),
        d("tmp", mode=0o1777),
        sym("bin", "usr/bin", uid=3, gid=4, mtime=T0 + 5),
        sym("abs", "/etc/passwd"),
        member("run/fifo", tarfile.FIFOTYPE, mode=0o620, uid=2, gid=3, mtime=T0 + 6),
        member("dev/null", tarfile.CHRTYPE, mode=0o666, major=1, minor=3),
        member("dev/loop0", tarfile.BLKTYPE, mode=0o660, major=7, minor=0, gid=6),
    )
    dest = tmp_path / "layer"
    dest.mkdir()
    apply_bytes(raw, dest)

    st = os.lstat(dest / "etc/passwd")
    assert (dest / "etc/passwd").read_bytes() == b"root:x:0:0\n"
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), st.st_mtime) == (1000, 1001, 0o644, T0 + 2)

    usr = os.lstat(dest / "usr")
    assert stat.S_ISDIR(usr.st_mode) and (usr.st_uid, usr.st_gid, stat.S_IMODE(usr.st_mode)) == (7, 8, 0o750)
    # directory times survive the children written into them afterwards
    assert os.lstat(dest / "etc").st_mtime == T0 + 1
    assert usr.st_mtime == T0 + 3
    assert os.lstat(dest / "usr/bin").st_mtime == T0 + 4
    assert os.getxattr(dest / "usr/bin", "user.dirnote") == b"dir"

    su = os.lstat(dest / "usr/bin/su")
    assert stat.S_IMODE(su.st_mode) == 0o4755 and su.st_uid == 1000  # setuid survived the chown
    wall = os.lstat(dest / "usr/bin/wall")
    assert stat.S_IMODE(wall.st_mode) == 0o2755 and wall.st_gid == 5
    assert stat.S_IMODE(os.lstat(dest / "tmp").st_mode) == 0o1777

    assert os.getxattr(dest / "usr/bin/ping", "security.capability") == CAP_NET_RAW
    assert os.getxattr(dest / "usr/bin/ping", "user.bin") == b"\xff\xfe\x00\x01"

    again = os.lstat(dest / "usr/bin/su-again")
    assert again.st_ino == su.st_ino and again.st_nlink == 2

    link = os.lstat(dest / "bin")
    assert stat.S_ISLNK(link.st_mode) and os.readlink(dest / "bin") == "usr/bin"
    assert (link.st_uid, link.st_gid, link.st_mtime) == (3, 4, T0 + 5)
    assert os.readlink(dest / "abs") == "/etc/passwd"

    fifo = os.lstat(dest / "run/fifo")
    assert stat.S_ISFIFO(fifo.st_mode) and stat.S_IMODE(fifo.st_mode) == 0o620
    assert (fifo.st_uid, fifo.st_gid, fifo.st_mtime) == (2, 3, T0 + 6)
    null = os.lstat(dest / "dev/null")
    assert stat.S_ISCHR(null.st_mode) and os.major(null.st_rdev) == 1 and os.minor(null.st_rdev) == 3
    assert stat.S_IMODE(null.st_mode) == 0o666
    loop = os.lstat(dest / "dev/loop0")
    assert stat.S_ISBLK(loop.st_mode) and (os.major(loop.st_rdev), loop.st_gid) == (7, 6)
    # parents the tar never named are made like Docker makes them
    run = os.lstat(dest / "run")
    assert stat.S_ISDIR(run.st_mode) and stat.S_IMODE(run.st_mode) == 0o755


def test_subsecond_pax_mtime_and_long_names_go_through_tarfile(tmp_path):
    long_dir = "/".join(["deep" * 20] * 3)  # > 100 bytes: PAX path records
    raw = tar_bytes(
        d(long_dir, pax={"mtime": f"{T0}.123456789"}),
        f(long_dir + "/" + "n" * 150, b"long"),
        f("plain", b"after the long ones"),
        sym("s", "t" * 200),
    )
    dest = tmp_path / "layer"
    dest.mkdir()
    apply_bytes(raw, dest)
    assert (dest / long_dir / ("n" * 150)).read_bytes() == b"long"
    assert os.lstat(dest / long_dir).st_mtime_ns == T0 * 10**9 + 123456789
    assert (dest / "plain").read_bytes() == b"after the long ones"
    assert os.readlink(dest / "s") == "t" * 200


def test_gnu_format_long_names_and_a_global_pax_header(tmp_path):
    gnu = tar_bytes(f("g" * 120, b"gnu"), f("short", b"s"), fmt=tarfile.GNU_FORMAT)
    dest = tmp_path / "gnu"
    dest.mkdir()
    apply_bytes(gnu, dest)
    assert (dest / ("g" * 120)).read_bytes() == b"gnu"
    assert (dest / "short").read_bytes() == b"s"

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"comment": "from git archive"}) as tf:
        for info, data in (f("a", b"1"), f("b", b"2", uid=9)):
            tf.addfile(info, io.BytesIO(data))
    dest = tmp_path / "pax"
    dest.mkdir()
    apply_bytes(buf.getvalue(), dest)
    assert (dest / "a").read_bytes() == b"1"
    assert os.lstat(dest / "b").st_uid == 9


def test_the_root_entry_and_dot_slash_names_land_in_dest(tmp_path):
    raw = tar_bytes(d(".", mode=0o700), d("./etc"), f("./etc/hosts", b"h"), f("//x//y", b"xy"))
    dest = tmp_path / "layer"
    dest.mkdir(mode=0o755)
    apply_bytes(raw, dest)
    assert (dest / "etc/hosts").read_bytes() == b"h"
    assert (dest / "x/y").read_bytes() == b"xy"
    assert stat.S_IMODE(os.lstat(dest).st_mode) == 0o755  # dest keeps its own mode, as in Docker


def test_deep_paths_do_not_run_out_of_file_descriptors(tmp_path):
    deep = "/".join(["d"] * 600)
    raw = tar_bytes(f(deep + "/f", b"deep"), hard("h", deep + "/f"), f("top", b"t"))
    dest = tmp_path / "layer"
    dest.mkdir()
    soft, hard_limit = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard_limit))
    try:
        apply_bytes(raw, dest)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard_limit))
    assert (dest / "h").read_bytes() == b"deep" and (dest / "top").read_bytes() == b"t"


def test_diff_id_and_size_are_those_of_the_uncompressed_tar(tmp_path):
    raw = tar_bytes(d("a"), f("a/b", os.urandom(100_000)), f("c", b"x" * 5))
    dest = tmp_path / "layer"
    dest.mkdir()
    result = apply_bytes(raw, dest)
    assert result == ApplyResult(size=len(raw), diff_id="sha256:" + hashlib.sha256(raw).hexdigest())
    with pytest.raises(Exception):
        result.size = 0  # frozen

    # through a compressor, the diff ID is still the uncompressed tar's
    dest2 = tmp_path / "layer2"
    dest2.mkdir()
    assert apply_layer(open_decompressed(io.BytesIO(gzip.compress(raw))), str(dest2)) == result


def test_trailing_padding_after_the_archive_is_hashed_too(tmp_path):
    raw = tar_bytes(f("a", b"1")) + bytes(20 * 512)
    dest = tmp_path / "layer"
    dest.mkdir()
    result = apply_bytes(raw, dest)
    assert result.size == len(raw) and result.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()


def test_an_empty_stream_is_an_empty_layer(tmp_path):
    dest = tmp_path / "layer"
    dest.mkdir()
    assert apply_bytes(b"", dest) == ApplyResult(0, "sha256:" + hashlib.sha256(b"").hexdigest())
    assert os.listdir(dest) == []


def test_reads_from_a_pipe(tmp_path):
    blob = os.urandom(3 << 20)
    raw = tar_bytes(d("big"), f("big/blob", blob), f("small", b"s"))
    r, w = os.pipe()

    def feed():
        with os.fdopen(w, "wb") as out:
            out.write(raw)

    writer = threading.Thread(target=feed)
    writer.start()
    dest = tmp_path / "layer"
    dest.mkdir()
    with os.fdopen(r, "rb") as pipe:
        result = apply_layer(pipe, str(dest))
    writer.join()
    assert result.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert (dest / "big/blob").read_bytes() == blob


def test_reads_from_a_stream_that_cannot_seek_and_returns_short_reads(tmp_path):
    data = os.urandom(50_000)
    raw = tar_bytes(f("a", data), f("b", b"bee"))
    dest = tmp_path / "layer"
    dest.mkdir()
    result = apply_layer(NoSeek(raw), str(dest))
    assert (dest / "a").read_bytes() == data and (dest / "b").read_bytes() == b"bee"
    assert result.size == len(raw)


def test_truncated_and_corrupt_tars_are_data_loss(tmp_path):
    raw = tar_bytes(f("a", os.urandom(5000)), f("b", b"bee"))
    for n, broken in enumerate((raw[:1200], raw[:300], raw[:512 + 5000])):
        dest = tmp_path / f"t{n}"
        dest.mkdir()
        with pytest.raises(DataLoss):
            apply_bytes(broken, dest)
    corrupt = bytearray(raw)
    second_header = 512 + 5120
    corrupt[second_header + 10] ^= 0x55  # a name byte: the checksum no longer matches
    dest = tmp_path / "corrupt"
    dest.mkdir()
    with pytest.raises(DataLoss):
        apply_bytes(bytes(corrupt), dest)


def test_header_checksum_shortcut_matches_sum():
    from berth.layer.tarstream import _byte_sum

    rng = random.Random(7)
    blocks = [bytes(512), b"\xff" * 512, b"\xff" * 300 + bytes(212)]
    blocks += [rng.randbytes(512) for _ in range(2000)]
    blocks += [bytes(rng.choice((0, 1, 254, 255)) for _ in range(512)) for _ in range(500)]
    for block in blocks:
        assert _byte_sum(block) == sum(block)


# -- against GNU tar


def _build_tree(root) -> None:
    """A small root filesystem with every kind of entry and metadata a layer carries."""
    os.makedirs(root / "etc/ssl")
    os.makedirs(root / "usr/bin")
    os.makedirs(root / "tmp")
    os.makedirs(root / "home/user/.config")
    (root / "etc/hostname").write_bytes(b"box\n")
    (root / "etc/ssl/key").write_bytes(os.urandom(3000))
    (root / "usr/bin/tool").write_bytes(os.urandom(70_000))
    (root / "usr/bin/ping").write_bytes(b"\x7fELF")
    os.setxattr(root / "usr/bin/ping", "security.capability", CAP_NET_RAW)
    os.setxattr(root / "etc/hostname", "user.note", b"\x00\xffbinary")
    os.link(root / "usr/bin/tool", root / "usr/bin/tool-alias")
    os.symlink("tool", root / "usr/bin/relative")
    os.symlink("/usr/bin/tool", root / "usr/bin/absolute")
    os.symlink("../../nowhere", root / "usr/bin/dangling")
    os.mkfifo(root / "tmp/fifo")
    os.mknod(root / "etc/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    long_dir = root / ("l" * 90) / ("o" * 90) / ("n" * 90)
    os.makedirs(long_dir)
    (long_dir / ("g" * 200)).write_bytes(b"long")
    (root / os.fsdecode(b"caf\xe9-latin1")).write_bytes(b"not utf-8")
    os.chown(root / "home/user", 1000, 1000)
    os.chown(root / "home/user/.config", 1000, 1000)
    os.chown(root / "usr/bin/dangling", 5, 6, follow_symlinks=False)
    os.chmod(root / "tmp", 0o1777)
    os.chmod(root / "etc/ssl/key", 0o600)
    os.chown(root / "usr/bin/tool", 1000, 50)
    os.chmod(root / "usr/bin/tool", 0o6755)
    os.chmod(root / "home/user", 0o700)
    for n, (dirpath, dirnames, filenames) in enumerate(sorted(os.walk(root), reverse=True)):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), ns=(T0 * 10**9, (T0 + n) * 10**9 + 123456789),
                     follow_symlinks=False)


def _describe(root) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            entry = [stat.filemode(st.st_mode), st.st_uid, st.st_gid, st.st_nlink, st.st_rdev]
            entry.append(st.st_mtime_ns if not stat.S_ISLNK(st.st_mode) else st.st_mtime)
            if stat.S_ISREG(st.st_mode):
                entry.append(hashlib.sha256(open(path, "rb").read()).hexdigest())
            if stat.S_ISLNK(st.st_mode):
                entry.append(os.readlink(path))
            else:
                entry.append({a: os.getxattr(path, a, follow_symlinks=False)
                              for a in sorted(os.listxattr(path, follow_symlinks=False))})
            out[os.path.relpath(path, root)] = entry
    return out


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar")
@pytest.mark.parametrize("fmt", ["posix", "gnu"])
def test_matches_gnu_tar_extracting_a_tar_made_by_gnu_tar(tmp_path, fmt):
    src = tmp_path / "src"
    _build_tree(src)
    layer = tmp_path / "layer.tar"
    xattrs = ["--xattrs", "--xattrs-include=*"] if fmt == "posix" else []
    subprocess.run(["tar", f"--format={fmt}", *xattrs, "-cf", str(layer), "-C", str(src), "."], check=True)
    by_tar = tmp_path / "by-tar"
    by_tar.mkdir()
    subprocess.run(["tar", *xattrs, "--numeric-owner", "--same-owner", "-xpf", str(layer), "-C", str(by_tar)],
                   check=True)
    by_berth = tmp_path / "by-berth"
    by_berth.mkdir()
    apply_layer(open(layer, "rb"), str(by_berth))
    ours, theirs = _describe(by_berth), _describe(by_tar)
    assert ours.keys() == theirs.keys()
    for path in ours:
        assert ours[path] == theirs[path], path
    assert ours["usr/bin/ping"][-1].get("security.capability") == (CAP_NET_RAW if fmt == "posix" else None)


def test_gnu_sparse_members_are_filled_in(tmp_path):
    if shutil.which("tar") is None:
        pytest.skip("needs GNU tar")
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as out:
        out.seek(5 << 20)
        out.write(b"middle")
        out.seek(9 << 20)
        out.write(b"end")
    for fmt in ("gnu", "pax"):
        layer = tmp_path / f"{fmt}.tar"
        subprocess.run(["tar", "--sparse", f"--format={fmt}", "-cf", str(layer), "-C", str(src), "sparse"],
                       check=True)
        assert layer.stat().st_size < 1 << 20  # really stored sparse
        dest = tmp_path / fmt
        dest.mkdir()
        apply_layer(open(layer, "rb"), str(dest))
        assert (dest / "sparse").read_bytes() == (src / "sparse").read_bytes()


# -- replacing entries


def test_an_entry_replaces_an_existing_one_of_another_type(tmp_path):
    dest = tmp_path / "layer"
    dest.mkdir()
    apply_bytes(tar_bytes(
        f("file-then-dir", b"x"), d("dir-then-file"), f("dir-then-file/child", b"c"),
        f("file-then-link", b"x"), d("merged", mode=0o700), f("merged/old", b"o"),
        f("hardlinked", b"shared"), hard("hardlinked2", "hardlinked"),
    ), dest)
    apply_bytes(tar_bytes(
        d("file-then-dir"), f("dir-then-file", b"now a file"), sym("file-then-link", "elsewhere"),
        d("merged", mode=0o751, uid=4), f("merged/new", b"n"),
        f("hardlinked", b"replaced"),
    ), dest, whiteouts="apply")
    assert (dest / "file-then-dir").is_dir()
    assert (dest / "dir-then-file").read_bytes() == b"now a file"
    assert os.readlink(dest / "file-then-link") == "elsewhere"
    merged = os.lstat(dest / "merged")
    assert (stat.S_IMODE(merged.st_mode), merged.st_uid) == (0o751, 4)
    assert sorted(os.listdir(dest / "merged")) == ["new", "old"]
    # replacing one name of a hardlinked pair unlinks it; it does not write into the shared inode
    assert (dest / "hardlinked").read_bytes() == b"replaced"
    assert (dest / "hardlinked2").read_bytes() == b"shared"


def test_same_layer_replacement_keeps_the_last_entry(tmp_path):
    dest = tmp_path / "layer"
    dest.mkdir()
    apply_bytes(tar_bytes(d("x", mtime=T0), f("x/inner", b"i"), f("x", b"file wins"), f("y", b"1"), f("y", b"2")), dest)
    assert (dest / "x").read_bytes() == b"file wins"
    assert (dest / "y").read_bytes() == b"2"


# -- whiteouts


def test_whiteouts_become_overlay_char_devices_and_opaque_xattrs(tmp_path):
    dest = tmp_path / "layer"
    dest.mkdir()
    apply_bytes(tar_bytes(
        d("etc"), f("etc/.wh.motd", uid=5, gid=6), d("var/cache", mtime=T0), f("var/cache/.wh..wh..opq"),
        f("var/cache/fresh", b"f"), f(".wh..wh..opq"), f(".wh..wh.plnk/123", b"aufs"),
        d(".wh..wh.aufs"), f("gone/.wh.deep"),
    ), dest)
    motd = os.lstat(dest / "etc/motd")
    assert stat.S_ISCHR(motd.st_mode) and motd.st_rdev == os.makedev(0, 0)
    assert (motd.st_uid, motd.st_gid) == (5, 6)
    assert not os.path.lexists(dest / "etc/.wh.motd")
    assert os.getxattr(dest / "var/cache", "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    assert os.getxattr(dest, "trusted.overlay.opaque") == b"y"
    assert (dest / "var/cache/fresh").read_bytes() == b"f"
    assert os.lstat(dest / "var/cache").st_mtime == T0
    assert sorted(os.listdir(dest)) == ["etc", "gone", "var"]  # no aufs metadata
    assert stat.S_ISCHR(os.lstat(dest / "gone/deep").st_mode)


def test_whiteouts_apply_deletes_what_earlier_layers_left(tmp_path):
    dest = tmp_path / "rootfs"
    dest.mkdir()
    apply_bytes(tar_bytes(
        d("etc"), f("etc/motd", b"m"), f("etc/keep", b"k"), d("opt/tree"), f("opt/tree/x", b"x"),
        d("cache"), f("cache/old1", b"1"), d("cache/olddir"), f("cache/olddir/y", b"y"),
    ), dest, whiteouts="apply")
    apply_bytes(tar_bytes(
        f("etc/.wh.motd"), f("opt/.wh.tree"), f("etc/.wh.never-existed"), f("nowhere/.wh.x"),
        d("cache"), f("cache/.wh..wh..opq"), f("cache/new", b"n"), d("cache/olddir"),
        f("cache/olddir/z", b"z"),
    ), dest, whiteouts="apply")
    assert sorted(os.listdir(dest / "etc")) == ["keep"]
    assert os.listdir(dest / "opt") == []
    assert not os.path.exists(dest / "nowhere")
    assert sorted(os.listdir(dest / "cache")) == ["new", "olddir"]
    assert os.listdir(dest / "cache/olddir") == ["z"]  # the old content of a re-declared dir goes too
    with pytest.raises(OSError):
        os.getxattr(dest / "cache", "trusted.overlay.opaque")


def test_opaque_marker_before_its_entries_hides_only_older_content(tmp_path):
    dest = tmp_path / "rootfs"
    dest.mkdir()
    apply_bytes(tar_bytes(d("d"), f("d/old", b"o")), dest, whiteouts="apply")
    apply_bytes(tar_bytes(f("d/new", b"n"), f("d/.wh..wh..opq")), dest, whiteouts="apply")
    assert os.listdir(dest / "d") == ["new"]


def test_whiteouts_must_name_a_real_entry(outer):
    for name in ("etc/.wh..", "etc/.wh...", ".wh..", ".wh..."):
        for mode in ("overlay", "apply"):
            assert_rejected(outer, tar_bytes(d("etc"), f(name)), name, whiteouts=mode)
    assert os.path.isdir(outer / "layer")


def test_overlay_metadata_xattrs_in_a_layer_are_not_applied(tmp_path):
    dest = tmp_path / "layer"
    dest.mkdir()
    apply_bytes(tar_bytes(d("d", xattrs={"trusted.overlay.redirect": b"/etc", "user.ok": b"1"})), dest)
    assert os.getxattr(dest / "d", "user.ok") == b"1"
    with pytest.raises(OSError):
        os.getxattr(dest / "d", "trusted.overlay.redirect")


# -- hostile layers


def test_rejects_dotdot_escape(outer):
    assert_rejected(outer, tar_bytes(f("../escape", b"x")), "../escape")
    assert not (outer / "escape").exists()


def test_rejects_dotdot_escape_after_a_real_component(outer):
    assert_rejected(outer, tar_bytes(f("ok", b"fine"), f("a/../../escape", b"x")), "a/../../escape")


def test_dotdot_that_stays_inside_is_cleaned_lexically(outer):
    apply_bytes(tar_bytes(f("a/b/../c", b"c")), outer / "layer")
    assert (outer / "layer/a/c").read_bytes() == b"c"


def test_absolute_names_land_under_dest_not_the_host(outer):
    name = f"/etc/berth-test-{uuid.uuid4().hex}"
    before = snapshot_outside(outer)
    apply_bytes(tar_bytes(f(name, b"inside")), outer / "layer")
    assert (outer / "layer" / name.lstrip("/")).read_bytes() == b"inside"
    assert not os.path.exists(name)
    assert snapshot_outside(outer) == before


def test_absolute_dotdot_that_climbs_out_is_rejected(outer):
    assert_rejected(outer, tar_bytes(f("/../sentinel/x", b"x")), "/../sentinel/x")


def test_rejects_writing_through_a_symlink_to_an_absolute_outside_dir(outer):
    target = str(outer / "sentinel")
    err = assert_rejected(outer, tar_bytes(sym("evil", target), f("evil/pwned", b"x")), "evil/pwned")
    assert "symlink 'evil'" in str(err)
    assert not (outer / "sentinel/pwned").exists()


def test_rejects_writing_through_a_relative_symlink_that_climbs_out(outer):
    assert_rejected(outer, tar_bytes(sym("evil", "../.."), f("evil/x", b"x")), "evil/x")
    assert_rejected(outer, tar_bytes(d("a"), sym("a/up", "../../sentinel"), d("a/up/newdir")), "a/up/newdir")


def test_rejects_a_symlinked_parent_even_when_it_points_inside(outer):
    raw = tar_bytes(d("usr/lib"), sym("lib", "usr/lib"), f("lib/libc.so", b"x"))
    assert_rejected(outer, raw, "lib/libc.so")
    assert not (outer / "layer/usr/lib/libc.so").exists()


def test_rejects_a_symlink_planted_by_an_earlier_layer(outer):
    apply_bytes(tar_bytes(sym("etc", str(outer / "sentinel"))), outer / "layer", whiteouts="apply")
    assert_rejected(outer, tar_bytes(f("etc/shadow", b"x")), "etc/shadow", whiteouts="apply")
    assert_rejected(outer, tar_bytes(f("etc/.wh.secret")), "etc/.wh.secret", whiteouts="apply")
    assert_rejected(outer, tar_bytes(f("etc/.wh..wh..opq")), "etc/.wh..wh..opq", whiteouts="apply")
    assert (outer / "sentinel/secret").read_bytes() == b"do not touch"


def test_rejects_a_member_below_a_file_or_fifo(outer):
    for parent in (f("p", b"file"), member("p", tarfile.FIFOTYPE)):
        err = assert_rejected(outer, tar_bytes(parent, f("p/x", b"x")), "p/x")
        assert "needs 'p' to be a directory" in str(err)


def test_rejects_a_hardlink_that_climbs_out(outer):
    (outer / "outside").write_bytes(b"host file")
    err = assert_rejected(outer, tar_bytes(hard("h", "../../outside")), "h")
    assert "escapes the layer root" in str(err)
    assert os.lstat(outer / "outside").st_nlink == 1


def test_rejects_a_hardlink_through_a_symlinked_dir(outer):
    raw = tar_bytes(sym("evil", str(outer / "sentinel")), hard("h", "evil/secret"))
    err = assert_rejected(outer, raw, "h")
    assert "symlink 'evil'" in str(err)
    assert os.lstat(outer / "sentinel/secret").st_nlink == 1
    raw = tar_bytes(sym("up", ".."), hard("h", "up/sentinel/secret"))
    assert_rejected(outer, raw, "h")


def test_a_hardlink_to_an_absolute_host_path_never_links_the_host_file(outer):
    nlink = os.lstat("/etc/passwd").st_nlink
    err = assert_rejected(outer, tar_bytes(hard("pw", "/etc/passwd")), "pw")
    assert "does not exist" in str(err)
    assert os.lstat("/etc/passwd").st_nlink == nlink

    # with the layer's own /etc/passwd, the link resolves inside the layer
    apply_bytes(tar_bytes(f("etc/passwd", b"layer's own"), hard("pw", "/etc/passwd")), outer / "layer")
    assert (outer / "layer/pw").read_bytes() == b"layer's own"
    assert os.lstat(outer / "layer/etc/passwd").st_nlink == 2
    assert os.lstat("/etc/passwd").st_nlink == nlink


def test_rejects_a_hardlink_to_a_directory(outer):
    assert_rejected(outer, tar_bytes(d("dir"), hard("h", "dir")), "h")
    assert_rejected(outer, tar_bytes(hard("h", "/")), "h")
    assert_rejected(outer, tar_bytes(d("a"), f("a/f", b"x"), hard("a", "a/f")), "a")


def test_a_hardlink_to_a_symlink_links_the_symlink_not_its_target(outer):
    raw = tar_bytes(sym("s", str(outer / "sentinel/secret")), hard("h", "s"))
    before = snapshot_outside(outer)
    apply_bytes(raw, outer / "layer")
    assert os.readlink(outer / "layer/h") == str(outer / "sentinel/secret")
    assert os.lstat(outer / "layer/h").st_ino == os.lstat(outer / "layer/s").st_ino
    assert snapshot_outside(outer) == before


def test_a_directory_replaced_by_a_symlink_is_not_reused_from_the_dir_cache(outer):
    raw = tar_bytes(d("a"), f("a/1", b"1"), sym("a", str(outer / "sentinel")), f("a/x", b"x"))
    err = assert_rejected(outer, raw, "a/x")
    assert "symlink 'a'" in str(err)


def test_a_directory_replaced_and_recreated_is_written_afresh(tmp_path):
    dest = tmp_path / "layer"
    dest.mkdir()
    apply_bytes(tar_bytes(d("a"), d("a/b"), f("a/b/1", b"1"), f("a", b"file"), d("a"), f("a/b/2", b"2")), dest)
    assert os.listdir(dest / "a") == ["b"] and os.listdir(dest / "a/b") == ["2"]


def test_a_file_replaces_a_symlink_instead_of_writing_through_it(outer):
    target = outer / "sentinel" / "written-through"
    raw = tar_bytes(sym("f", str(target)), f("f", b"layer data"))
    before = snapshot_outside(outer)
    apply_bytes(raw, outer / "layer")
    assert not os.path.lexists(target)
    assert (outer / "layer/f").read_bytes() == b"layer data" and not os.path.islink(outer / "layer/f")
    assert snapshot_outside(outer) == before

    # also when an earlier layer planted the symlink, to an existing file
    apply_bytes(tar_bytes(sym("g", str(outer / "sentinel/secret"))), outer / "layer", whiteouts="apply")
    apply_bytes(tar_bytes(f("g", b"new"), d("g2"), sym("g2/s", "/"), f("g2/s", b"x")), outer / "layer",
                whiteouts="apply")
    assert (outer / "sentinel/secret").read_bytes() == b"do not touch"
    assert (outer / "layer/g").read_bytes() == b"new"
    assert snapshot_outside(outer) == before


def test_a_dir_entry_replaces_a_symlink_to_a_dir_outside(outer):
    raw = tar_bytes(sym("d", str(outer / "sentinel")), d("d", mode=0o700), f("d/x", b"x"))
    before = snapshot_outside(outer)
    apply_bytes(raw, outer / "layer")
    assert (outer / "layer/d").is_dir() and not (outer / "layer/d").is_symlink()
    assert snapshot_outside(outer) == before


def test_metadata_of_a_symlink_member_is_not_applied_through_it(outer):
    before = snapshot_outside(outer)
    apply_bytes(tar_bytes(sym("s", str(outer / "sentinel/secret"), uid=1234, mtime=5)), outer / "layer")
    assert snapshot_outside(outer) == before
    assert os.lstat(outer / "sentinel/secret").st_uid != 1234


def test_devices_can_be_refused(outer):
    for m in (member("dev/sda", tarfile.BLKTYPE, major=8, minor=0),
              member("dev/mem", tarfile.CHRTYPE, major=1, minor=1)):
        err = assert_rejected(outer, tar_bytes(m), m[0].name, allow_devices=False)
        assert "device" in str(err)
    assert not (outer / "layer/dev").exists()  # checked before even the parent was made
    # whiteouts, in either form, are still fine
    apply_bytes(tar_bytes(f("etc/.wh.gone"), member("etc/also-gone", tarfile.CHRTYPE)),
                outer / "layer", allow_devices=False)
    assert os.lstat(outer / "layer/etc/gone").st_rdev == os.makedev(0, 0)
    assert stat.S_ISCHR(os.lstat(outer / "layer/etc/also-gone").st_mode)


def test_rejects_unknown_whiteout_modes_and_member_types(outer):
    with pytest.raises(InvalidArgument):
        apply_bytes(tar_bytes(f("a")), outer / "layer", whiteouts="aufs")
    assert_rejected(outer, tar_bytes(member("vol", b"V")), "vol")


def test_nothing_is_written_after_the_first_rejected_member(outer):
    raw = tar_bytes(f("before", b"1"), f("../escape", b"x"), f("after", b"2"))
    assert_rejected(outer, raw, "../escape")
    assert (outer / "layer/before").exists() and not (outer / "layer/after").exists()


# -- compression


def test_detects_compression_by_magic():
    raw = tar_bytes(f("a", b"1"))
    assert detect(gzip.compress(raw)) == "gzip"
    assert detect(bz2.compress(raw)) == "bzip2"
    assert detect(lzma.compress(raw)) == "xz"
    assert detect(b"\x28\xb5\x2f\xfd" + bytes(6)) == "zstd"
    assert detect(raw) is None
    assert detect(b"") is None
    assert detect(tar_bytes(f("BZh-not-bzip2", b""))) is None


@pytest.mark.parametrize("compress", [
    lambda raw: raw,
    gzip.compress,
    lambda raw: gzip.compress(raw[:3000]) + gzip.compress(raw[3000:]),  # multi-member, like pigz
    lambda raw: gzip.compress(raw) + bytes(1024),  # zero padding after the member
    bz2.compress,
    lzma.compress,
], ids=["plain", "gzip", "gzip-multi", "gzip-padded", "bzip2", "xz"])
def test_open_decompressed_round_trips(compress, tmp_path):
    raw = tar_bytes(f("blob", os.urandom(300_000)), f("text", b"hello" * 10_000))
    blob = compress(raw)
    assert open_decompressed(io.BytesIO(blob)).read() == raw
    # a stream that can neither seek nor peek, and returns short reads
    assert open_decompressed(NoSeek(blob, piece=1000)).read() == raw
    dest = tmp_path / "layer"
    dest.mkdir()
    result = apply_layer(open_decompressed(NoSeek(blob)), str(dest))
    assert result.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert (dest / "text").read_bytes() == b"hello" * 10_000


def test_open_decompressed_reads_a_pipe(tmp_path):
    raw = tar_bytes(f("a", os.urandom(2 << 20)))
    r, w = os.pipe()

    def feed():
        with os.fdopen(w, "wb", buffering=0) as out:
            blob = gzip.compress(raw)
            out.write(blob[:3])  # a writer that trickles: the first read is short
            time.sleep(0.05)
            out.write(blob[3:])

    writer = threading.Thread(target=feed)
    writer.start()
    with os.fdopen(r, "rb") as pipe:
        assert open_decompressed(pipe).read() == raw
    writer.join()


def test_corrupt_and_truncated_compressed_layers_are_data_loss():
    raw = tar_bytes(f("a", os.urandom(100_000)))
    for blob in (gzip.compress(raw), bz2.compress(raw), lzma.compress(raw)):
        with pytest.raises(DataLoss):
            open_decompressed(io.BytesIO(blob[: len(blob) // 2])).read()
        broken = bytearray(blob)
        broken[len(blob) // 2] ^= 0xFF
        with pytest.raises(DataLoss):
            open_decompressed(io.BytesIO(bytes(broken))).read()


def test_decompression_memory_is_bounded_by_the_read_size():
    bomb = gzip.compress(bytes(64 << 20))  # 64 MiB of zeros in ~64 KiB
    tracemalloc.start()
    try:
        stream = open_decompressed(io.BytesIO(bomb))
        assert len(stream.read(1 << 20)) == 1 << 20
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


def test_zstd_without_the_package_is_a_clear_error():
    try:
        import zstandard  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("zstandard is installed")
    with pytest.raises(InvalidArgument, match="zstd layer needs the zstandard package"):
        open_decompressed(io.BytesIO(b"\x28\xb5\x2f\xfd" + bytes(100)))


# -- speed


def _bench_tar(path: str, rng: random.Random) -> int:
    """~200 MiB shaped like a distro layer: many small files in many dirs, a few big ones."""
    blob = rng.randbytes(1 << 20) * 24
    total = 0
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        for i in range(400):
            info, _ = d(f"usr/lib/pkg{i:03d}")
            tf.addfile(info)
            for j in range(20):
                size = min(int(rng.expovariate(1 / 16000)), len(blob))
                info, _ = f(f"usr/lib/pkg{i:03d}/file{j:02d}.so", mode=0o755)
                info.size = size
                tf.addfile(info, io.BytesIO(blob[:size]))
                total += size
            info, _ = sym(f"usr/lib/pkg{i:03d}/link", "file00.so")
            tf.addfile(info)
        for i in range(4):
            info, _ = f(f"usr/share/big{i}")
            info.size = 20 << 20
            tf.addfile(info, io.BytesIO(blob[: 20 << 20]))
            total += 20 << 20
    return total


@pytest.mark.slow
def test_extraction_speed_is_close_to_gnu_tar(tmp_path):
    # tmpfs when there is one: on a disk, writeback noise swamps the difference
    base = tempfile.mkdtemp(dir="/dev/shm") if os.path.isdir("/dev/shm") else str(tmp_path)
    try:
        _race_gnu_tar(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _race_gnu_tar(base: str) -> None:
    path = os.path.join(base, "bench.tar")
    _bench_tar(path, random.Random(1))

    def fresh(name):
        target = os.path.join(base, name)
        if os.path.exists(target):
            shutil.rmtree(target)
        os.mkdir(target)
        os.sync()
        return target

    tar_times, our_times = [], []
    for _ in range(5):
        dest = fresh("by-tar")
        start = time.perf_counter()
        subprocess.run(["tar", "-xf", path, "-C", dest], check=True)
        tar_times.append(time.perf_counter() - start)
        dest = fresh("by-berth")
        start = time.perf_counter()
        with open(path, "rb") as stream:
            apply_layer(stream, dest)
        our_times.append(time.perf_counter() - start)
    ratio = min(our_times) / min(tar_times)
    size = os.path.getsize(path) >> 20
    print(f"\n{size} MiB layer in {base}: GNU tar {min(tar_times):.3f}s, berth {min(our_times):.3f}s, "
          f"ratio {ratio:.2f}")
    assert subprocess.run(["diff", "-r", "--no-dereference", os.path.join(base, "by-tar"), dest]).returncode == 0
    assert ratio < 3
