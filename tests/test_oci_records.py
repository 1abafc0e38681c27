"""berth.oci.record / codec / runtime / image / digest: frozen value types and their JSON.

The JSON documents below are written by hand in the shapes registries and Docker produce
(schema2 manifest, OCI index, image config), including keys berth does not model.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from berth.errors import InvalidArgument
from berth.oci import digest, image, runtime as rt
from berth.oci.codec import dumps, from_dict, loads, to_dict
from berth.oci.record import FrozenInstanceError, Record, fields, is_record, jf, replace


class Point(Record):
    x: int = jf("x", keep=True)
    y: int = jf("y", default=0, keep=True)
    label: str | None = jf("label", default=None)
    tags: tuple[str, ...] = jf("tags", default=())


class Plain(Record):
    name: str
    size: int = 1


class Holder(Record):
    items: dict = jf("items", factory=dict)


def sha(n: int) -> str:
    return "sha256:" + hashlib.sha256(str(n).encode()).hexdigest()


# -- record: construction ---------------------------------------------------------------------

def test_positional_and_keyword_arguments_fill_fields_in_order():
    assert Point(1, 2) == Point(x=1, y=2) == Point(1, y=2)
    assert Point(1).y == 0 and Point(1).label is None


def test_missing_required_argument_is_a_type_error():
    with pytest.raises(TypeError, match="missing required argument: 'x'"):
        Point()
    with pytest.raises(TypeError, match="'name'"):
        Plain()


def test_too_many_or_duplicate_or_unknown_arguments_are_type_errors():
    with pytest.raises(TypeError):
        Point(1, 2, "a", (), "extra")
    with pytest.raises(TypeError, match="multiple values for x"):
        Point(1, x=2)
    with pytest.raises(TypeError, match="unexpected arguments"):
        Point(1, z=3)


def test_mutable_default_is_refused_at_class_definition():
    with pytest.raises(TypeError, match="mutable default"):
        jf("items", default={})


def test_factory_default_is_fresh_per_instance():
    a, b = Holder(), Holder()
    assert a.items == {} and a.items is not b.items


def test_plain_annotations_are_fields_named_as_the_attribute():
    assert [f.name for f in fields(Plain)] == ["name", "size"]
    assert to_dict(Plain("n")) == {"name": "n", "size": 1}


def test_is_record():
    assert is_record(Point(1)) and not is_record({"x": 1})


# -- record: immutability, replace, equality ------------------------------------------------

def test_records_are_immutable():
    p = Point(1)
    with pytest.raises(FrozenInstanceError):
        p.x = 2
    with pytest.raises(FrozenInstanceError):
        del p.x
    with pytest.raises(FrozenInstanceError):
        p.new_attribute = 1
    assert p.x == 1


def test_frozen_instance_error_is_an_attribute_error():
    assert issubclass(FrozenInstanceError, AttributeError)


def test_replace_returns_a_modified_copy():
    p = Point(1, 2, "a")
    q = replace(p, y=5)
    assert q == Point(1, 5, "a")
    assert p == Point(1, 2, "a")


def test_replace_with_an_unknown_field_is_a_type_error():
    with pytest.raises(TypeError, match="no fields"):
        replace(Point(1), z=1)


def test_equal_records_hash_equal_and_dedupe_in_sets():
    assert Point(1, 2) == Point(1, 2)
    assert hash(Point(1, 2, "a", ("t",))) == hash(Point(1, 2, "a", ("t",)))
    assert len({Point(1, 2), Point(1, 2), Point(2, 1)}) == 2


def test_records_of_different_types_are_never_equal():
    assert rt.Namespace("pid") != rt.Root("pid")
    assert Point(1) != (1, 0, None, ())
    assert rt.Namespace("pid") != rt.Namespace("ipc")


def test_repr_names_the_fields():
    assert repr(Point(1)) == "Point(x=1, y=0, label=None, tags=())"


# -- codec: omitempty and canonical bytes -------------------------------------------------------

def test_none_and_empty_containers_are_omitted():
    assert to_dict(Point(1)) == {"x": 1, "y": 0}
    assert to_dict(rt.Mount("/proc")) == {"destination": "/proc"}


def test_keep_fields_are_written_even_when_empty_or_zero():
    assert to_dict(image.Descriptor("application/x", sha(1), 0)) == {
        "mediaType": "application/x", "digest": sha(1), "size": 0}
    assert to_dict(rt.Capabilities()) == {"bounding": [], "effective": [], "inheritable": [],
                                          "permitted": [], "ambient": []}
    assert to_dict(rt.User()) == {"uid": 0, "gid": 0}
    assert json.loads(image.Manifest(image.Descriptor(image.OCI_CONFIG, sha(1), 2)).to_json())[
        "layers"] == []


def test_false_is_written_not_omitted():
    assert to_dict(rt.Root("/r")) == {"path": "/r", "readonly": False}


def test_dumps_is_compact_in_field_order_and_keeps_unicode():
    assert dumps(Point(1, 2, "é")) == '{"x":1,"y":2,"label":"é"}'.encode()
    assert dumps(Point(1), indent=2) == b'{\n  "x": 1,\n  "y": 0\n}'


def test_json_lists_become_tuples_nested_records_are_built():
    p = loads(rt.Process, '{"args": ["sh", "-c"], "user": {"uid": 5, "gid": 6}}')
    assert p.args == ("sh", "-c")
    assert p.user == rt.User(uid=5, gid=6)


def test_json_null_means_the_default():
    assert loads(Point, '{"x": 1, "y": null, "tags": null}') == Point(1)


def test_missing_required_json_key_is_a_value_error():
    with pytest.raises(ValueError, match="Point"):
        loads(Point, '{"y": 1}')


def test_non_object_json_is_a_value_error():
    with pytest.raises(ValueError, match="expected a JSON object"):
        from_dict(Point, [1, 2])


def test_unknown_keys_are_ignored():
    assert loads(Point, '{"x": 1, "z": 9, "extra": {"a": 1}}') == Point(1)


# -- runtime spec -------------------------------------------------------------------------------

def full_spec() -> rt.Spec:
    caps = ("CAP_CHOWN", "CAP_KILL")
    return rt.Spec(
        process=rt.Process(
            args=("sh", "-c", "echo hi"), cwd="/app", env=("PATH=/bin", "A=1"),
            user=rt.User(1000, 1000, additional_gids=(10, 20)), terminal=True,
            console_size=rt.Box(24, 80),
            capabilities=rt.Capabilities(caps, caps, (), caps, ()),
            rlimits=(rt.Rlimit("RLIMIT_NOFILE", 2048, 1024),), no_new_privileges=True,
            oom_score_adj=100),
        root=rt.Root("/rootfs", readonly=True),
        hostname="abc",
        mounts=(rt.Mount("/proc", "proc", "proc", ("nosuid",)),
                rt.Mount("/data", "bind", "/srv", ("rbind", "ro"))),
        linux=rt.Linux(
            namespaces=(rt.Namespace("pid"), rt.Namespace("network", "/proc/1/ns/net")),
            devices=(rt.Device("c", "/dev/null", 1, 3, 0o666, 0, 0),),
            cgroups_path="berth/abc",
            resources=rt.Resources(
                devices=(rt.DeviceRule(False, "a", None, None, "rwm"),
                         rt.DeviceRule(True, "c", 136, None, "rwm")),
                memory=rt.Memory(limit=1 << 26, swap=1 << 27),
                cpu=rt.CPU(shares=512, quota=50000, period=100000),
                pids=rt.Pids(-1)),
            sysctl={"net.ipv4.ping_group_range": "0 2147483647"},
            seccomp=rt.Seccomp("SCMP_ACT_ERRNO", 1, ("SCMP_ARCH_X86_64",), (), (
                rt.SeccompSyscall(("read", "write"), "SCMP_ACT_ALLOW"),
                rt.SeccompSyscall(("personality",), "SCMP_ACT_ALLOW",
                                  args=(rt.SeccompArg(0, 0, "SCMP_CMP_EQ"),)))),
            rootfs_propagation="rprivate",
            masked_paths=("/proc/kcore",), readonly_paths=("/proc/sys",)),
        annotations={"org.example": "x"},
    )


def test_runtime_spec_round_trips_through_json():
    spec = full_spec()
    assert rt.Spec.from_json(spec.to_json()) == spec
    assert rt.Spec.from_json(spec.to_json(indent=2)) == spec


def test_runtime_spec_json_has_the_spec_field_names():
    doc = json.loads(full_spec().to_json())
    assert doc["ociVersion"] == rt.OCI_VERSION
    assert doc["process"]["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [10, 20]}
    assert doc["process"]["noNewPrivileges"] is True
    assert doc["process"]["consoleSize"] == {"height": 24, "width": 80}
    assert doc["linux"]["cgroupsPath"] == "berth/abc"
    assert doc["linux"]["resources"]["devices"][1] == {"allow": True, "type": "c", "major": 136,
                                                       "access": "rwm"}
    assert doc["linux"]["resources"]["pids"] == {"limit": -1}
    assert doc["linux"]["seccomp"]["syscalls"][1]["args"] == [
        {"index": 0, "value": 0, "op": "SCMP_CMP_EQ", "valueTwo": 0}]
    assert doc["linux"]["maskedPaths"] == ["/proc/kcore"]


def test_minimal_runtime_spec_omits_what_is_unset():
    doc = json.loads(rt.Spec(rt.Process(args=("true",)), rt.Root("/r")).to_json())
    assert set(doc) == {"process", "root", "ociVersion", "linux"}
    assert doc["linux"] == {}
    assert "capabilities" not in doc["process"] and doc["process"]["user"] == {"uid": 0, "gid": 0}


def test_runtime_spec_from_a_foreign_config_ignores_what_it_does_not_model():
    raw = json.dumps({
        "ociVersion": "1.0.2-dev",
        "process": {"terminal": False, "user": {"uid": 0, "gid": 0}, "args": ["sh"],
                    "env": ["PATH=/bin"], "cwd": "/", "apparmorProfile": "x",
                    "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"],
                                     "permitted": ["CAP_KILL"]}},
        "root": {"path": "rootfs", "readonly": True},
        "hooks": {"prestart": []},
        "linux": {"namespaces": [{"type": "pid"}], "maskedPaths": ["/proc/kcore"],
                  "intelRdt": {"closID": "x"}},
    })
    spec = rt.Spec.from_json(raw)
    assert spec.oci_version == "1.0.2-dev"
    assert spec.process.capabilities == rt.Capabilities(("CAP_KILL",), ("CAP_KILL",), (),
                                                        ("CAP_KILL",), ())
    assert spec.linux.namespaces == (rt.Namespace("pid"),)
    assert spec.root.readonly is True


# -- image documents ------------------------------------------------------------------------------

SCHEMA2_MANIFEST = json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
    "config": {
        "mediaType": "application/vnd.docker.container.image.v1+json",
        "size": 1471,
        "digest": sha(1),
    },
    "layers": [
        {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 2808418,
         "digest": sha(2)},
        {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 93,
         "digest": sha(3), "urls": ["https://example.com/layer"]},
    ],
    "x-vendor-extension": True,
}, indent=3).encode()

OCI_INDEX = json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 610, "digest": sha(4),
         "platform": {"architecture": "amd64", "os": "linux"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 610, "digest": sha(5),
         "platform": {"architecture": "arm64", "os": "linux", "variant": "v8",
                      "features": ["sse4"]}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1100, "digest": sha(6),
         "platform": {"architecture": "amd64", "os": "windows", "os.version": "10.0.17763.5329"},
         "annotations": {"org.opencontainers.image.ref.name": "1.0"}},
    ],
    "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
}).encode()

IMAGE_CONFIG = json.dumps({
    "architecture": "amd64",
    "os": "linux",
    "created": "2024-01-01T00:00:00.000000000Z",
    "docker_version": "20.10.23",
    "container": "3f1a",
    "container_config": {"Hostname": "3f1a", "Cmd": ["/bin/sh", "-c", "#(nop) CMD [\"sh\"]"]},
    "config": {
        "Hostname": "",
        "User": "app",
        "ExposedPorts": {"80/tcp": {}},
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"],
        "Cmd": ["nginx", "-g", "daemon off;"],
        "Entrypoint": ["/docker-entrypoint.sh"],
        "Volumes": None,
        "WorkingDir": "/srv",
        "Labels": {"maintainer": "someone"},
        "StopSignal": "SIGQUIT",
        "ArgsEscaped": True,
        "Image": sha(9),
    },
    "rootfs": {"type": "layers", "diff_ids": [sha(7), sha(8)]},
    "history": [
        {"created": "2024-01-01T00:00:00Z", "created_by": "/bin/sh -c #(nop) ADD file:abc in / "},
        {"created": "2024-01-01T00:00:01Z", "created_by": "/bin/sh -c #(nop)  CMD [\"sh\"]",
         "empty_layer": True},
    ],
}).encode()


def test_docker_schema2_manifest_is_read():
    m = image.Manifest.from_json(SCHEMA2_MANIFEST)
    assert m.media_type == image.DOCKER_MANIFEST and m.media_type in image.MANIFEST_TYPES
    assert m.schema_version == 2
    assert m.config == image.Descriptor(image.DOCKER_CONFIG, sha(1), 1471)
    assert [layer.digest for layer in m.layers] == [sha(2), sha(3)]
    assert image.LAYER_COMPRESSION[m.layers[0].media_type] == "gzip"
    assert m.layers[1].size == 93


def test_manifest_written_by_berth_reads_back_equal():
    m = image.Manifest.from_json(SCHEMA2_MANIFEST)
    assert image.Manifest.from_json(m.to_json()) == m


def test_manifest_without_media_type_defaults_to_oci():
    raw = json.dumps({"schemaVersion": 2, "config": {"mediaType": image.OCI_CONFIG, "size": 2,
                                                     "digest": sha(1)}, "layers": []})
    assert image.Manifest.from_json(raw.encode()).media_type == image.OCI_MANIFEST


def test_oci_index_with_platforms_is_read():
    idx = image.Index.from_json(OCI_INDEX)
    assert idx.media_type == image.OCI_INDEX and idx.media_type in image.INDEX_TYPES
    assert [d.platform for d in idx.manifests] == [
        image.Platform("amd64", "linux"),
        image.Platform("arm64", "linux", variant="v8"),
        image.Platform("amd64", "windows", os_version="10.0.17763.5329"),
    ]
    assert idx.manifests[2].annotations == {image.ANNOTATION_REF_NAME: "1.0"}
    assert idx.annotations == {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}


def test_index_round_trips_and_writes_os_version_with_its_dot():
    idx = image.Index.from_json(OCI_INDEX)
    assert image.Index.from_json(idx.to_json()) == idx
    assert json.loads(idx.to_json())["manifests"][2]["platform"]["os.version"] == "10.0.17763.5329"


def test_image_config_is_read_and_unknown_keys_ignored():
    cfg = image.ImageConfig.from_json(IMAGE_CONFIG)
    assert (cfg.architecture, cfg.os) == ("amd64", "linux")
    assert cfg.rootfs == image.RootFS((sha(7), sha(8)))
    c = cfg.config
    assert c.user == "app"
    assert c.cmd == ("nginx", "-g", "daemon off;")
    assert c.entrypoint == ("/docker-entrypoint.sh",)
    assert c.env[1] == "LANG=C"
    assert c.exposed_ports == {"80/tcp": {}}
    assert c.volumes is None
    assert c.working_dir == "/srv" and c.stop_signal == "SIGQUIT"
    assert c.labels == {"maintainer": "someone"}
    assert cfg.history[1].empty_layer is True and cfg.history[0].empty_layer is None


def test_image_config_round_trips():
    cfg = image.ImageConfig.from_json(IMAGE_CONFIG)
    assert image.ImageConfig.from_json(cfg.to_json()) == cfg


def test_image_config_always_writes_config_and_diff_ids():
    doc = json.loads(image.ImageConfig("amd64", "linux", image.RootFS()).to_json())
    assert doc["config"] == {}
    assert doc["rootfs"] == {"diff_ids": [], "type": "layers"}


# -- digests --------------------------------------------------------------------------------------

def test_validate_returns_a_good_digest():
    assert digest.validate(sha(1)) == sha(1)
    assert digest.validate("sha512:" + "0" * 128).startswith("sha512:")
    assert digest.hex_of(sha(1)) == sha(1)[7:]


@pytest.mark.parametrize("bad", ["", "sha256", "sha256:", "sha256:" + "0" * 63, "sha256:" + "A" * 64,
                                 "md5:" + "0" * 32, "sha256:" + "g" * 64, None, "SHA256:" + "0" * 64])
def test_validate_rejects_malformed_digests(bad):
    with pytest.raises(InvalidArgument):
        digest.validate(bad)


def test_sha256_bytes():
    assert digest.sha256_bytes(b"") == (
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")


def test_chain_id_of_one_layer_is_its_diff_id():
    assert digest.chain_ids([sha(1)]) == [sha(1)]


def test_chain_id_of_two_layers_hashes_parent_space_diff_id():
    a, b = sha(1), sha(2)
    expect = "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    assert digest.chain_ids([a, b]) == [a, expect]


def test_chain_ids_build_on_the_previous_chain_id():
    a, b, c = sha(1), sha(2), sha(3)
    ids = digest.chain_ids((a, b, c))
    assert ids[2] == "sha256:" + hashlib.sha256(f"{ids[1]} {c}".encode()).hexdigest()
    assert digest.chain_ids([]) == []
