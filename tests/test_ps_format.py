"""`berth ps --filter` and `--format`, on real containers in every state; and the template
methods and table rendering behind them."""

from __future__ import annotations

import json
import time

import pytest

from berth.cli.containers import render_rows
from berth.cli.template import render


def _names(berth, *args: str) -> list[str]:
    return sorted(berth.out("ps", *args, "--format", "{{.Names}}").split())


def _until(predicate, timeout: float = 20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, busybox_tar):
    """One root with a container in each state, labelled, with volumes and a derived image."""
    from conftest import Berth

    b = Berth(str(tmp_path_factory.mktemp("zoo") / "root"))
    b("import", "-c", 'CMD ["sh"]', busybox_tar, "busybox")
    b("create", "--name", "fresh", "-l", "tier=db", "busybox", "true")
    b("run", "--name", "ok", "-l", "tier=web", "-l", "team=a", "busybox", "touch", "/ok")
    b("run", "--name", "failed", "-l", "tier=web", "busybox", "sh", "-c", "exit 3", check=False)
    b("run", "-d", "--name", "up", "-l", "tier=web", "-v", "data:/data", "busybox", "sleep", "300")
    b("run", "-d", "--name", "frozen", "busybox", "sleep", "300")
    b("pause", "frozen")
    b("run", "-d", "--name", "doc", "--health-cmd", "true", "--health-interval", "200ms",
      "busybox", "sleep", "300")
    b("commit", "ok", "derived")  # its labels go with it, into the child's, as in Docker
    b("run", "--name", "child", "derived", "true")
    _until(lambda: "(healthy)" in b.out("ps"))
    yield b
    b.shutdown()


def test_status_filter_shows_stopped_ones_without_a(zoo):
    assert _names(zoo, "--filter", "status=exited") == ["child", "failed", "ok"]
    assert _names(zoo, "--filter", "status=created") == ["fresh"]
    assert _names(zoo, "--filter", "status=paused") == ["frozen"]
    assert _names(zoo, "--filter", "status=running") == ["doc", "up"]
    assert _names(zoo) == ["doc", "frozen", "up"]  # running ones, paused included


def test_one_key_ors_different_keys_and(zoo):
    assert _names(zoo, "-f", "status=created", "-f", "status=paused") == ["fresh", "frozen"]
    assert _names(zoo, "-a", "-f", "status=exited", "-f", "label=tier=web") == \
        ["child", "failed", "ok"]
    assert _names(zoo, "-a", "-f", "name=fresh", "-f", "name=froz") == ["fresh", "frozen"]


def test_name_id_label_and_exited_filters(zoo):
    assert _names(zoo, "-a", "-f", "name=^/fr") == ["fresh", "frozen"]
    up_id = zoo.out("ps", "-q", "--no-trunc", "-f", "name=up").strip()
    assert _names(zoo, "-a", "-f", f"id={up_id[:6]}") == ["up"]
    assert _names(zoo, "-a", "-f", "label=team") == ["child", "ok"]
    assert _names(zoo, "-a", "-f", "label=tier=db") == ["fresh"]
    # labels must all match, as Docker has it
    assert _names(zoo, "-a", "-f", "label=tier=web", "-f", "label=team=a", "-f",
                  "ancestor=busybox") == ["child", "ok"]
    assert _names(zoo, "-a", "-f", "exited=3") == ["failed"]
    assert _names(zoo, "-a", "-f", "exited=0") == ["child", "ok"]  # never-started ones: no


def test_ancestor_volume_and_health_filters(zoo):
    assert _names(zoo, "-a", "-f", "ancestor=derived") == ["child"]
    assert "child" in _names(zoo, "-a", "-f", "ancestor=busybox")  # a descendant
    assert _names(zoo, "-a", "-f", "ancestor=no-such-image") == []
    assert _names(zoo, "-a", "-f", "volume=data") == ["up"]
    assert _names(zoo, "-a", "-f", "volume=/data") == ["up"]
    assert _names(zoo, "-f", "health=healthy") == ["doc"]
    assert _names(zoo, "-f", "health=none") == ["frozen", "up"]


def test_bad_filters_are_one_line_errors(zoo):
    for flt, message in (("nope=1", b"invalid filter 'nope'"),
                         ("status=sleeping", b"invalid filter 'status=sleeping'"),
                         ("health=meh", b"Unrecognised filter value for health: meh"),
                         ("status", b"bad format of filter")):
        proc = zoo("ps", "-f", flt, check=False)
        assert proc.returncode == 1 and proc.stderr.startswith(b"berth: " + message)
        assert proc.stderr.count(b"\n") == 1


def test_format_fields(zoo):
    line = zoo.out("ps", "-f", "name=up", "--format",
                   "{{.ID}}|{{.Image}}|{{.Command}}|{{.Status}}|{{.Names}}|{{.Labels}}|"
                   '{{.Label "tier"}}|{{.Label "none"}}|{{.Mounts}}|{{.State}}|{{.Ports}}|'
                   "{{.Networks}}|{{.LocalVolumes}}").rstrip("\n")
    fields = line.split("|")
    assert len(fields[0]) == 12 and fields[1] == "busybox"
    assert fields[2] == '"sleep 300"' and fields[3].startswith("Up ")
    assert fields[4:] == ["up", "tier=web", "web", "", "data", "running", "", "bridge", "1"]
    created = zoo.out("ps", "-f", "name=up", "--format", "{{.CreatedAt}} / {{.RunningFor}}")
    assert created.endswith(" ago\n") and " +0000 UTC / " in created
    paused = zoo.out("ps", "-f", "name=frozen", "--format", "{{.State}} {{.Status}}")
    assert paused.startswith("paused Up ") and paused.endswith("(Paused)\n")
    assert zoo.out("ps", "-a", "-f", "name=failed", "--format", "{{.Status}}").startswith(
        "Exited (3) ")
    no_trunc = zoo.out("ps", "--no-trunc", "-f", "name=up", "--format", "{{.ID}}").strip()
    assert len(no_trunc) == 64


def test_table_format_prints_headers_and_aligns(zoo):
    out = zoo.out("ps", "-a", "-f", "label=tier", "--format",
                  'table {{.Names}}\t{{.Label "tier"}}\t{{.State}}').splitlines()
    assert out[0].split() == ["NAMES", "LABEL", "STATE"]
    rows = sorted(line.split() for line in out[1:])
    assert rows == [["child", "web", "exited"], ["failed", "web", "exited"],
                    ["fresh", "db", "created"],
                    ["ok", "web", "exited"], ["up", "web", "running"]]
    assert out[1].index(out[1].split()[1]) == out[0].index("LABEL")  # columns line up
    default = zoo.out("ps", "--format", "table").splitlines()
    assert default[0].split() == ["CONTAINER", "ID", "IMAGE", "COMMAND", "CREATED", "STATUS",
                                  "PORTS", "NAMES"]
    plain = zoo.out("ps").splitlines()  # the same table (times may tick on in between)
    assert default[0] == plain[0] and [r.split()[-1] for r in default] == \
        [r.split()[-1] for r in plain]


def test_json_format_is_one_object_per_line(zoo):
    lines = zoo.out("ps", "-a", "--format", "json").splitlines()
    assert len(lines) == 7
    first = json.loads(lines[0])
    assert {"ID", "Image", "Command", "CreatedAt", "RunningFor", "Status", "Names", "Labels",
            "Mounts", "State"} <= set(first)
    assert "Label" not in first  # a method, not data
    assert zoo.out("ps", "-q", "--format", "{{.Names}}").split() == \
        zoo.out("ps", "-q").split()  # -q wins over --format


def test_template_calls_methods_with_string_arguments():
    data = {"Label": lambda key: {"a b": "spaced"}.get(key, ""), "X": 1}
    assert render('{{.Label "a b"}}|{{ .Label "zz" }}', data) == "spaced|"
    assert render("{{json .}}", data) == '{"X":1}'


def test_table_rows_take_docker_headers_and_align_cells():
    out = render_rows("table {{.Names}}\t{{.State}}", [{"Names": "a", "State": "running"},
                                                       {"Names": "longer-name", "State": ""}])
    assert out.splitlines() == ["NAMES         STATE", "a             running", "longer-name"]
    assert render_rows("{{.Names}}\t{{.State}}", [{"Names": "a", "State": "b"}]) == "a\tb\n"
