"""Atomic writes and tree removal that never follows symlinks."""

from __future__ import annotations

import os

from berth.fsutil import remove_tree, write_atomic


def test_remove_tree_never_follows_symlinks(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("precious")
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "f").write_text("x")
    os.symlink(outside, tree / "a" / "link-to-dir")
    os.symlink(outside / "keep", tree / "link-to-file")
    os.mkfifo(tree / "fifo")
    remove_tree(str(tree))
    assert not tree.exists()
    assert (outside / "keep").read_text() == "precious"


def test_remove_tree_of_missing_path_and_of_a_file(tmp_path):
    remove_tree(str(tmp_path / "missing"))
    f = tmp_path / "file"
    f.write_text("x")
    remove_tree(str(f))
    assert not f.exists()


def test_write_atomic_replaces_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "record.json"
    write_atomic(str(target), b"one")
    write_atomic(str(target), b"two", durable=False)
    assert target.read_bytes() == b"two"
    assert os.listdir(tmp_path) == ["record.json"]


def test_normalize_parts_never_climbs_above_the_root():
    from berth.fsutil import normalize_parts

    assert normalize_parts("/a/./b//../c".split("/")) == ["a", "c"]
    assert normalize_parts(["..", "..", "etc", "passwd"]) == ["etc", "passwd"]
    assert normalize_parts(["a", "..", "..", "b", "."]) == ["b"]
    assert normalize_parts([]) == []
