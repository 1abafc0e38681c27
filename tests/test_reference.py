"""berth.oci.reference: image references normalised the way Docker does it.

Cases follow distribution/reference (normalize.go, reference_test.go).
"""

from __future__ import annotations

import pytest

from berth.errors import InvalidArgument
from berth.oci.reference import Reference, looks_like_id, parse

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize("text, registry, repository, tag, digest", [
    ("busybox", "docker.io", "library/busybox", "latest", None),
    ("busybox:1.36", "docker.io", "library/busybox", "1.36", None),
    ("user/app", "docker.io", "user/app", "latest", None),
    ("docker.io/busybox", "docker.io", "library/busybox", "latest", None),
    ("docker.io/library/busybox:musl", "docker.io", "library/busybox", "musl", None),
    ("localhost/app", "localhost", "app", "latest", None),
    ("localhost:5000/app:v1", "localhost:5000", "app", "v1", None),
    ("registry.example.com/team/sub/app", "registry.example.com", "team/sub/app", "latest", None),
    (f"busybox@{DIGEST}", "docker.io", "library/busybox", None, DIGEST),
    (f"myreg:5000/ns/app:v2@{DIGEST}", "myreg:5000", "ns/app", "v2", DIGEST),
    ("[::1]:5000/app", "[::1]:5000", "app", "latest", None),
    ("my-app_x.y__z", "docker.io", "library/my-app_x.y__z", "latest", None),
])
def test_references_are_normalised(text, registry, repository, tag, digest):
    assert parse(text) == Reference(registry, repository, tag, digest)


def test_busybox_is_docker_io_library_busybox_latest():
    ref = parse("busybox")
    assert str(ref) == "docker.io/library/busybox:latest"
    assert ref.name == "docker.io/library/busybox"


def test_str_of_registry_port_and_digest():
    assert str(parse(f"localhost:5000/app@{DIGEST}")) == f"localhost:5000/app@{DIGEST}"


@pytest.mark.parametrize("legacy", ["index.docker.io", "registry-1.docker.io"])
def test_legacy_docker_hub_hosts_become_docker_io(legacy):
    assert parse(f"{legacy}/library/busybox") == parse("busybox")
    assert parse(f"{legacy}/user/app:1") == parse("user/app:1")


def test_first_component_without_dot_colon_or_localhost_is_a_path():
    assert parse("myhost/app") == Reference("docker.io", "myhost/app", "latest", None)


def test_default_tag_can_be_left_off():
    assert parse("busybox", default_tag=False).tag is None


@pytest.mark.parametrize("text", ["Busybox", "user/App", "localhost:5000/MyApp:v1"])
def test_uppercase_repository_is_rejected(text):
    with pytest.raises(InvalidArgument, match="repository name must be lowercase"):
        parse(text)


def test_uppercase_registry_host_is_allowed():
    assert parse("Registry.Example.com/app").registry == "Registry.Example.com"


@pytest.mark.parametrize("text", ["busybox:", "busybox:-bad", "busybox:" + "a" * 129, "busybox:a/b"])
def test_bad_tag_is_rejected(text):
    with pytest.raises(InvalidArgument, match="invalid reference format"):
        parse(text)


@pytest.mark.parametrize("text", ["", "busybox@sha256:abc", "busybox@", "-app", "app-", "a//b",
                                  "user/app/", "bad host:5000/app", "app..x"])
def test_malformed_references_are_rejected(text):
    with pytest.raises(InvalidArgument, match="invalid reference format"):
        parse(text)


def test_overlong_name_is_rejected():
    with pytest.raises(InvalidArgument, match="too long"):
        parse("a" * 300)


@pytest.mark.parametrize("text, familiar", [
    ("busybox", "busybox:latest"),
    ("docker.io/library/busybox:1.36", "busybox:1.36"),
    ("user/app", "user/app:latest"),
    ("localhost:5000/app:v1", "localhost:5000/app:v1"),
    (f"busybox@{DIGEST}", f"busybox@{DIGEST}"),
])
def test_familiar_form_drops_docker_io_and_library(text, familiar):
    assert parse(text).familiar() == familiar


@pytest.mark.parametrize("text", ["busybox", "user/app:1", "localhost:5000/app:v1",
                                  f"quay.io/ns/app:v1@{DIGEST}", "index.docker.io/library/alpine"])
def test_familiar_round_trips(text):
    ref = parse(text)
    assert parse(ref.familiar()) == ref
    assert parse(str(ref)) == ref


def test_familiar_keeps_library_prefix_for_nested_official_paths():
    ref = parse("docker.io/library/a/b")
    assert parse(ref.familiar()) == ref


def test_with_tag_replaces_tag_and_drops_digest():
    ref = parse(f"busybox:1@{DIGEST}").with_tag("2")
    assert ref == Reference("docker.io", "library/busybox", "2", None)


def test_looks_like_id_accepts_64_hex_with_or_without_prefix():
    assert looks_like_id("ab" * 32)
    assert looks_like_id("sha256:" + "ab" * 32)


@pytest.mark.parametrize("text", ["ab" * 31, "AB" * 32, "busybox", "sha512:" + "ab" * 32, ""])
def test_looks_like_id_rejects_everything_else(text):
    assert not looks_like_id(text)
