"""berth.image.changes: Dockerfile instructions applied to an image config (`import -c`, `commit -c`)."""

from __future__ import annotations

import pytest

from berth.errors import InvalidArgument
from berth.image.changes import apply
from berth.oci.image import ContainerConfig

BASE = ContainerConfig(env=("PATH=/bin", "LANG=C"), cmd=("sh",), labels={"a": "1"})


def test_cmd_json_form_is_used_as_is():
    assert apply(BASE, ['CMD ["nginx", "-g", "daemon off;"]']).cmd == ("nginx", "-g", "daemon off;")


def test_cmd_shell_form_runs_under_bin_sh_c():
    assert apply(BASE, ["CMD echo hello && sleep 1"]).cmd == ("/bin/sh", "-c",
                                                              "echo hello && sleep 1")


def test_cmd_with_invalid_json_falls_back_to_shell_form():
    assert apply(BASE, ["CMD [not json"]).cmd == ("/bin/sh", "-c", "[not json")


def test_cmd_json_with_non_strings_falls_back_to_shell_form():
    assert apply(BASE, ["CMD [1, 2]"]).cmd == ("/bin/sh", "-c", "[1, 2]")


def test_entrypoint_json_and_shell_forms():
    assert apply(BASE, ['ENTRYPOINT ["/entry.sh", "--flag"]']).entrypoint == ("/entry.sh", "--flag")
    assert apply(BASE, ["ENTRYPOINT exec /entry.sh"]).entrypoint == ("/bin/sh", "-c",
                                                                     "exec /entry.sh")


def test_instruction_names_are_case_insensitive():
    assert apply(BASE, ['cmd ["top"]']).cmd == ("top",)


def test_env_key_value_pairs_with_quotes():
    cfg = apply(BASE, ['ENV A=1 B="two words" C=\'x y\''])
    assert cfg.env == ("PATH=/bin", "LANG=C", "A=1", "B=two words", "C=x y")


def test_env_overrides_an_existing_variable_in_place():
    assert apply(BASE, ["ENV LANG=C.UTF-8"]).env == ("PATH=/bin", "LANG=C.UTF-8")


def test_legacy_env_form_takes_the_rest_of_the_line_as_value():
    assert apply(BASE, ["ENV GREETING hello big world"]).env[-1] == "GREETING=hello big world"


def test_legacy_env_form_removes_quotes_like_docker():
    assert apply(BASE, ['ENV GREETING "hello world"']).env[-1] == "GREETING=hello world"


def test_env_without_arguments_is_rejected():
    with pytest.raises(InvalidArgument, match="ENV requires at least one argument"):
        apply(BASE, ["ENV"])


def test_env_with_a_blank_name_is_rejected():
    with pytest.raises(InvalidArgument, match="names can not be blank"):
        apply(BASE, ["ENV A=1 =2"])


def test_label_adds_and_overrides_keeping_existing_labels():
    cfg = apply(BASE, ['LABEL a=2 "org.example.title"="My App"'])
    assert cfg.labels == {"a": "2", "org.example.title": "My App"}
    assert BASE.labels == {"a": "1"}


def test_legacy_label_form():
    assert apply(ContainerConfig(), ["LABEL maintainer someone@example.com"]).labels == {
        "maintainer": "someone@example.com"}


def test_expose_defaults_to_tcp_and_keeps_protocols():
    cfg = apply(ContainerConfig(), ["EXPOSE 80 53/udp 443/tcp"])
    assert cfg.exposed_ports == {"80/tcp": {}, "53/udp": {}, "443/tcp": {}}


def test_expose_adds_to_existing_ports():
    cfg = apply(ContainerConfig(exposed_ports={"22/tcp": {}}), ["EXPOSE 80"])
    assert cfg.exposed_ports == {"22/tcp": {}, "80/tcp": {}}


def test_volume_json_and_space_separated_forms():
    assert apply(ContainerConfig(), ['VOLUME ["/data", "/logs"]']).volumes == {"/data": {},
                                                                            "/logs": {}}
    assert apply(ContainerConfig(), ["VOLUME /a /b"]).volumes == {"/a": {}, "/b": {}}


def test_user_workdir_stopsignal_onbuild():
    cfg = apply(BASE, ["USER app:staff", "WORKDIR /srv/app", "STOPSIGNAL SIGQUIT",
                       "ONBUILD RUN make"])
    assert cfg.user == "app:staff"
    assert cfg.working_dir == "/srv/app"
    assert cfg.stop_signal == "SIGQUIT"
    assert cfg.on_build == ("RUN make",)


def test_changes_apply_in_order_and_leave_other_fields_alone():
    cfg = apply(BASE, ["CMD a", 'CMD ["b"]', "ENV X=1"])
    assert cfg.cmd == ("b",)
    assert cfg.labels == BASE.labels and cfg.entrypoint is None


def test_no_changes_returns_the_same_config():
    assert apply(BASE, []) == BASE


@pytest.mark.parametrize("change", ["RUN echo hi", "FROM busybox", "COPY a b", "BOGUS x"])
def test_instructions_docker_refuses_are_invalid(change):
    with pytest.raises(InvalidArgument, match="is not a valid change command"):
        apply(BASE, [change])
