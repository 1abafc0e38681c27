"""berth.cli.template: the subset of Go's text/template that `--format` users reach for."""

from __future__ import annotations

import pytest

from berth.cli.template import render
from berth.errors import InvalidArgument

DATA = {
    "Id": "0123456789abcdef",
    "Name": "/web",
    "State": {"Status": "running", "Running": True, "Paused": False, "Pid": 4242, "ExitCode": 0},
    "Config": {"Image": "busybox", "Cmd": ["sh", "-c", "top"], "Labels": {"b": "2", "a": "1"},
               "Tty": False},
    "Mounts": [],
}


def test_field_path_prints_the_value():
    assert render("{{.State.Status}}", DATA) == "running"


def test_text_around_actions_is_kept():
    assert render("id={{.Id}} pid={{.State.Pid}}!", DATA) == "id=0123456789abcdef pid=4242!"


def test_spaces_inside_braces_are_allowed():
    assert render("{{ .Name }}", DATA) == "/web"


def test_booleans_print_as_go_does():
    assert render("{{.State.Running}} {{.State.Paused}}", DATA) == "true false"


def test_zero_is_printed_not_dropped():
    assert render("{{.State.ExitCode}}", DATA) == "0"


def test_missing_field_prints_no_value():
    assert render("{{.Nope}}", DATA) == "<no value>"
    assert render("{{.State.Nope.Deeper}}", DATA) == "<no value>"


def test_path_through_a_non_map_prints_no_value():
    assert render("{{.Name.Length}}", DATA) == "<no value>"


def test_maps_print_sorted_like_go():
    assert render("{{.Config.Labels}}", DATA) == "map[a:1 b:2]"


def test_lists_print_space_separated_in_brackets():
    assert render("{{.Config.Cmd}}", DATA) == "[sh -c top]"
    assert render("{{.Mounts}}", DATA) == "[]"


def test_dot_is_the_whole_value():
    assert render("{{.}}", {"b": True, "a": 1}) == "map[a:1 b:true]"


def test_json_of_a_value_is_valid_json():
    import json

    assert json.loads(render("{{json .Config}}", DATA)) == DATA["Config"]
    assert render("{{json .Config.Tty}}", DATA) == "false"
    assert render("{{json .Nope}}", DATA) == "null"
    assert render("{{json .Name}}", DATA) == '"/web"'


def test_json_is_compact_like_docker():
    assert render("{{json .Config.Cmd}}", DATA) == '["sh","-c","top"]'


def test_upper_and_lower():
    assert render("{{upper .Config.Image}} {{lower .State.Status}}", DATA) == "BUSYBOX running"


def test_escaped_tab_and_newline_become_real_ones():
    assert render(r"{{.Id}}\t{{.Name}}\n", DATA) == "0123456789abcdef\t/web\n"


@pytest.mark.parametrize("template", ['{{.Id | printf "%.12s"}}', "{{range .Mounts}}x{{end}}",
                                      "{{if .State.Running}}up{{end}}", "{{index .Config 0}}",
                                      "{{Id}}"])
def test_unsupported_actions_are_invalid_arguments(template):
    with pytest.raises(InvalidArgument, match="template: unsupported action"):
        render(template, DATA)
