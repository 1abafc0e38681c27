"""berth.layer.diff: layer tars of real overlay-form dirs, docker diff, and tree compare.

Upper and lower dirs are built by hand in tmp_path, in the form overlayfs leaves them
(whiteouts are 0/0 character devices, opaque dirs carry trusted.overlay.opaque=y), so
these run as root without a container. Every tar written is read back by tarfile, by
GNU tar and by berth's own apply_layer.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
import tarfile
import threading
import tracemalloc

import pytest

from berth.errors import FailedPrecondition
from berth.layer import apply_layer
from berth.layer.diff import changes, compare_trees, write_layer

T0 = 1_600_000_000
CAP_NET_RAW = bytes.fromhex("0100000200200000000000000000000000000000")
EMPTY_LAYER = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"


def mkfile(path, data=b"", mode=0o644, uid=0, gid=0, mtime=T0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chown(path, uid, gid)
    os.chmod(path, mode)
    os.utime(path, (mtime, mtime))


def mkdir(path, mode=0o755, mtime=T0, opaque=False):
    os.makedirs(path, exist_ok=True)
    os.chmod(path, mode)
    if opaque:
        os.setxattr(path, "trusted.overlay.opaque", b"y")
    os.utime(path, (mtime, mtime))


def whiteout(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(0, 0))


def layer_of(upper, **kw) -> tuple[bytes, str, int]:
    out = io.BytesIO()
    diff_id, size = write_layer(str(upper), out, **kw)
    return out.getvalue(), diff_id, size


def members(raw: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        return tf.getmembers()


def names(raw: bytes) -> list[str]:
    return [m.name for m in members(raw)]


# -- the layer tar


def test_commit_turns_overlay_whiteouts_into_oci_whiteouts(tmp_path):
    upper = tmp_path / "upper"
    mkdir(upper / "bin")
    whiteout(upper / "bin" / "ls")
    mkdir(upper / "etc", opaque=True)
    mkfile(upper / "etc" / "only", b"x\n")

    raw, _, _ = layer_of(upper)

    assert names(raw) == ["bin", "bin/.wh.ls", "etc", "etc/.wh..wh..opq", "etc/only"]
    by_name = {m.name: m for m in members(raw)}
    assert by_name["bin/.wh.ls"].isreg() and by_name["bin/.wh.ls"].size == 0
    assert by_name["etc/.wh..wh..opq"].isreg()
    assert not any(k.startswith("SCHILY.xattr.trusted.overlay") for m in members(raw)
                   for k in m.pax_headers)


def test_whiteouts_sharing_one_inode_stay_whiteouts_not_hardlinks(tmp_path):
    # overlayfs (5.8+) hardlinks every whiteout to one shared inode
    upper = tmp_path / "upper"
    whiteout(upper / "a")
    os.link(upper / "a", upper / "b")

    raw, _, _ = layer_of(upper)

    assert [(m.name, m.type) for m in members(raw)] == [(".wh.a", tarfile.REGTYPE),
                                                        (".wh.b", tarfile.REGTYPE)]


def _tree(root) -> dict:
    """path -> (type, mode, uid, gid, size, mtime, link target, rdev, inode group, xattrs)"""
    out, inodes = {}, {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            xattrs = {}
            if not stat.S_ISLNK(st.st_mode):
                xattrs = {a: os.getxattr(path, a) for a in os.listxattr(path)}
            group = inodes.setdefault(st.st_ino, rel) if not stat.S_ISDIR(st.st_mode) else None
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                        st.st_size if stat.S_ISREG(st.st_mode) else 0,
                        int(st.st_mtime) if not stat.S_ISLNK(st.st_mode) else 0,
                        os.readlink(path) if stat.S_ISLNK(st.st_mode) else None,
                        st.st_rdev, group, xattrs)
    return out


@pytest.fixture
def rich_upper(tmp_path):
    """An upper dir with one of everything a layer must carry."""
    upper = tmp_path / "upper"
    mkdir(upper / "tmp", mode=0o1777)
    mkfile(upper / "usr/bin/su", b"\x7fELF su", mode=0o4755)
    mkfile(upper / "usr/bin/wall", b"\x7fELF wall", mode=0o2755, gid=5)
    mkfile(upper / "usr/bin/ping", b"\x7fELF ping", mode=0o755)
    os.setxattr(upper / "usr/bin/ping", "security.capability", CAP_NET_RAW)
    mkfile(upper / "home/u/notes", b"notes", mode=0o600, uid=1000, gid=1000)
    os.setxattr(upper / "home/u/notes", "user.color", b"\xff\x00blue")
    os.link(upper / "home/u/notes", upper / "home/u/notes.link")
    os.symlink("../usr/bin/su", upper / "home/su")
    os.lchown(upper / "home/su", 7, 8)
    os.mkfifo(upper / "tmp/fifo", 0o640)
    os.mknod(upper / "tmp/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(upper / "tmp/loop", stat.S_IFBLK | 0o660, os.makedev(7, 0))
    long_dir = upper / ("d" * 60) / ("e" * 60)
    mkfile(long_dir / ("f" * 90), b"deep")
    os.symlink("t" * 150, upper / "longlink")
    mkfile(upper / "ünïcödé.txt", b"utf-8 name")
    mkfile(upper / "big-ids", b"ids", uid=3_000_000, gid=2_500_000)
    mkfile(upper / "big", os.urandom(3 << 20))  # more than one buffer
    for d in ("usr/bin", "usr", "home/u", "home", str(long_dir), str(long_dir.parent)):
        os.utime(upper / d, (T0, T0))
    return upper


def test_layer_round_trips_through_apply_layer_with_all_metadata(rich_upper, tmp_path):
    raw, diff_id, size = layer_of(rich_upper)
    dest = tmp_path / "dest"
    dest.mkdir()

    result = apply_layer(io.BytesIO(raw), str(dest))

    assert (result.diff_id, result.size) == (diff_id, size) == (
        "sha256:" + hashlib.sha256(raw).hexdigest(), len(raw))
    assert _tree(dest) == _tree(rich_upper)
    assert os.stat(dest / "usr/bin/su").st_mode & stat.S_ISUID
    assert os.getxattr(dest / "usr/bin/ping", "security.capability") == CAP_NET_RAW
    assert os.stat(dest / "home/u/notes").st_ino == os.stat(dest / "home/u/notes.link").st_ino


def test_layer_is_pax_sorted_parents_first_with_numeric_ids_only(rich_upper):
    raw, _, _ = layer_of(rich_upper)
    listed = members(raw)

    order = [m.name for m in listed]
    assert order == sorted(order, key=lambda n: n.encode().split(b"/"))
    for m in listed:
        assert m.uname == "" and m.gname == ""
        assert not {"atime", "ctime"} & set(m.pax_headers)
        assert m.mtime == int(m.mtime)
    by_name = {m.name: m for m in listed}
    assert by_name["home/u/notes.link"].islnk()
    assert by_name["home/u/notes.link"].linkname == "home/u/notes"
    assert by_name["big-ids"].uid == 3_000_000 and by_name["big-ids"].gid == 2_500_000
    assert by_name["longlink"].linkname == "t" * 150
    assert by_name["tmp/null"].ischr() and (by_name["tmp/null"].devmajor,
                                            by_name["tmp/null"].devminor) == (1, 3)
    # USTAR where it can say it: no PAX header for a plain member
    assert by_name["usr/bin/su"].pax_headers == {}
    assert raw.endswith(bytes(1024)) and len(raw) % 512 == 0


def test_gnu_tar_reads_the_layer_as_tarfile_does(rich_upper, tmp_path):
    raw, _, _ = layer_of(rich_upper)
    path = tmp_path / "layer.tar"
    path.write_bytes(raw)

    listed = subprocess.run(["tar", "--list", "-f", str(path)], capture_output=True, check=True)

    assert listed.stderr == b""
    assert [n.rstrip("/") for n in listed.stdout.decode().splitlines()] == names(raw)


def test_empty_upper_is_docker_empty_layer(tmp_path):
    (tmp_path / "upper").mkdir()
    raw, diff_id, size = layer_of(tmp_path / "upper")
    assert (raw, diff_id, size) == (bytes(1024), EMPTY_LAYER, 1024)


def test_engine_stubs_are_left_out_and_real_changes_kept(tmp_path):
    lower = tmp_path / "lower"
    mkdir(lower / "etc")
    mkfile(lower / "etc/passwd", b"root:x:0:0::/:/bin/sh\n")
    upper = tmp_path / "upper"
    mkdir(upper / "etc", mtime=T0 + 5)  # copied up for the stubs, so its mtime moved
    for stub in ("hosts", "hostname", "resolv.conf"):
        mkfile(upper / "etc" / stub)
    mkdir(upper / "proc")
    exclude = ("etc/hosts", "etc/hostname", "etc/resolv.conf", "proc")

    raw, diff_id, _ = layer_of(upper, lowers=[str(lower)], exclude=exclude)
    assert diff_id == EMPTY_LAYER
    assert changes(str(upper), [str(lower)], exclude) == []

    mkfile(upper / "etc/hosts", b"10.0.0.1 db\n")  # content is a change, not a stub
    mkfile(upper / "etc/new", b"x")
    assert names(layer_of(upper, lowers=[str(lower)], exclude=exclude)[0]) == [
        "etc", "etc/hosts", "etc/new"]
    assert changes(str(upper), [str(lower)], exclude) == [
        ("C", "/etc"), ("A", "/etc/hosts"), ("A", "/etc/new")]


def test_overlay_redirects_are_refused_not_written_wrong(tmp_path):
    upper = tmp_path / "upper"
    mkdir(upper / "moved")
    os.setxattr(upper / "moved", "trusted.overlay.redirect", b"/original")

    with pytest.raises(FailedPrecondition, match="/moved .*redirect"):
        layer_of(upper)


def test_large_files_stream_through_bounded_memory(tmp_path):
    upper = tmp_path / "upper"
    upper.mkdir()
    with open(upper / "sparse", "wb") as f:
        f.truncate(64 << 20)
    hashed = hashlib.sha256()

    class Sink:
        def write(self, data):
            hashed.update(data)

    tracemalloc.start()
    try:
        diff_id, size = write_layer(str(upper), Sink())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert diff_id == "sha256:" + hashed.hexdigest() and size > 64 << 20
    assert peak < 16 << 20


def test_a_failing_output_raises_and_leaves_no_thread(tmp_path):
    upper = tmp_path / "upper"
    for i in range(8):
        mkfile(upper / f"f{i}", os.urandom(1 << 20))

    class Full:
        def write(self, data):
            raise OSError(28, "No space left on device")

    before = threading.active_count()
    with pytest.raises(OSError, match="No space"):
        write_layer(str(upper), Full())
    assert threading.active_count() == before


# -- docker diff


@pytest.fixture
def image_layers(tmp_path):
    """Two lower layers (topmost first): the base, and one that deleted and hid things."""
    base = tmp_path / "base"
    mkfile(base / "bin/ls", b"ls")
    mkfile(base / "bin/cat", b"cat")
    mkfile(base / "etc/passwd", b"root\n")
    mkfile(base / "etc/group", b"root\n")
    mkfile(base / "var/lib/a", b"a")
    mkfile(base / "var/lib/b", b"b")
    mkfile(base / "old", b"old")
    for d in ("bin", "etc", "var/lib", "var"):
        os.utime(base / d, (T0, T0))
    top = tmp_path / "top"
    whiteout(top / "old")  # the second layer deleted /old
    mkdir(top / "var/lib", opaque=True)  # ... and replaced /var/lib's content
    mkfile(top / "var/lib/c", b"c")
    os.utime(top / "var", (T0, T0))
    return [str(top), str(base)]


def test_diff_reports_added_changed_and_deleted_like_docker(image_layers, tmp_path):
    upper = tmp_path / "upper"
    mkdir(upper / "bin", mtime=T0 + 1)
    whiteout(upper / "bin/ls")
    mkdir(upper / "etc", mtime=T0)  # copied up for a child; itself unchanged
    mkfile(upper / "etc/passwd", b"root\nuser\n")
    mkdir(upper / "opt/app", mtime=T0)
    mkfile(upper / "opt/app/run", b"#!/bin/sh\n")
    mkfile(upper / "old", b"back again")  # deleted by the image's top layer: new here

    assert changes(str(upper), image_layers) == [
        ("C", "/bin"), ("D", "/bin/ls"),
        ("C", "/etc"), ("C", "/etc/passwd"),
        ("A", "/old"),
        ("A", "/opt"), ("A", "/opt/app"), ("A", "/opt/app/run"),
    ]


def test_diff_of_an_opaque_dir_deletes_what_it_hides(image_layers, tmp_path):
    upper = tmp_path / "upper"
    mkdir(upper / "etc", opaque=True)
    mkfile(upper / "etc/only", b"x")
    mkfile(upper / "etc/group", b"new group\n")
    mkdir(upper / "var", mtime=T0)
    mkdir(upper / "var/lib", opaque=True)  # what the lowers show there is only /var/lib/c
    mkfile(upper / "var/lib/d", b"d")

    assert changes(str(upper), image_layers) == [
        ("C", "/etc"), ("C", "/etc/group"), ("A", "/etc/only"), ("D", "/etc/passwd"),
        ("C", "/var"), ("C", "/var/lib"), ("D", "/var/lib/c"), ("A", "/var/lib/d"),
    ]


def test_unchanged_copied_up_dir_is_not_a_change_but_chmod_is(image_layers, tmp_path):
    upper = tmp_path / "upper"
    mkdir(upper / "bin", mtime=T0)
    mkdir(upper / "etc", mode=0o700, mtime=T0)
    assert changes(str(upper), image_layers) == [("C", "/etc")]


# -- image diff


def test_compare_trees_reports_file_level_changes(image_layers, tmp_path):
    new = tmp_path / "new"
    whiteout(new / "bin/cat")
    mkfile(new / "etc/passwd", b"ROOT\n")  # same size, other content
    mkfile(new / "etc/group", b"root\n")  # same content, other inode: no change
    os.symlink("/bin/ls", new / "sh")
    mkdir(new / "var/lib", opaque=True)
    mkfile(new / "var/lib/c", b"c")
    mkfile(new / "var/lib/e", b"e")

    assert compare_trees(image_layers, [str(new)] + image_layers) == [
        ("C", "/bin"), ("D", "/bin/cat"),
        ("C", "/etc"), ("C", "/etc/passwd"),
        ("A", "/sh"),
        ("C", "/var"), ("C", "/var/lib"), ("A", "/var/lib/e"),
    ]
    assert compare_trees([str(new)] + image_layers, image_layers) == [
        ("C", "/bin"), ("A", "/bin/cat"),
        ("C", "/etc"), ("C", "/etc/passwd"),
        ("D", "/sh"),
        ("C", "/var"), ("C", "/var/lib"), ("D", "/var/lib/e"),
    ]
    assert compare_trees(image_layers, image_layers) == []


def test_compare_trees_sees_types_modes_owners_and_links(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    for root in (old, new):
        mkfile(root / "same", b"same")
    mkfile(old / "mode", b"m", mode=0o644)
    mkfile(new / "mode", b"m", mode=0o755)
    mkfile(old / "owner", b"o")
    mkfile(new / "owner", b"o", uid=1)
    os.symlink("a", old / "link")
    os.symlink("b", new / "link")
    mkfile(old / "kind", b"")
    mkdir(new / "kind")
    mkfile(new / "kind/inner", b"i")

    assert compare_trees([str(old)], [str(new)]) == [
        ("C", "/kind"), ("A", "/kind/inner"), ("C", "/link"), ("C", "/mode"), ("C", "/owner")]
