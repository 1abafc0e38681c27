"""Order of kernel operations in berth.runtime.rootfs and berth.runtime.init, without root.

Every mount/prctl/capset goes through the berth.linux seam; here it is a
RecordingSyscalls, so these tests see the calls and their order but nothing reaches the
kernel. The real kernel is exercised by the integration tests.
"""

from __future__ import annotations

import json
import os

import pytest

from berth import linux as L
from berth.container.spec import BindSpec, Context, RunOptions, build
from berth.container.users import ExecUser
from berth.errors import CommandNotFound, ContainerStartError
from berth.linux.fake import RecordingSyscalls
from berth.oci.image import ContainerConfig
from berth.oci.runtime import Mount, Rlimit, Seccomp
from berth.runtime import caps, init, rootfs
from berth.runtime.cgroups import Layout

BPF = b"\x06\x00\x00\x00\x00\x00\xff\x7f"  # one "ret ALLOW" instruction; never loaded here


@pytest.fixture
def fake() -> RecordingSyscalls:
    return RecordingSyscalls()


@pytest.fixture
def root(tmp_path):
    path = tmp_path / "rootfs"
    path.mkdir()
    return path


# -- secure_join ------------------------------------------------------------------------------

def test_secure_join_plain_path(root):
    assert rootfs.secure_join(str(root), "/etc/passwd") == str(root / "etc" / "passwd")


def test_secure_join_dotdot_cannot_climb_above_the_root(root):
    assert rootfs.secure_join(str(root), "/../../../etc") == str(root / "etc")
    assert rootfs.secure_join(str(root), "a/./b/../../../c") == str(root / "c")


def test_absolute_symlink_resolves_inside_the_root(root):
    (root / "etc").mkdir()
    (root / "abs").symlink_to("/etc")
    assert rootfs.secure_join(str(root), "/abs/passwd") == str(root / "etc" / "passwd")


def test_symlink_to_a_host_path_stays_inside_the_root(root, tmp_path):
    secret = tmp_path / "host-secret"
    secret.mkdir()
    (root / "escape").symlink_to(str(secret))
    joined = rootfs.secure_join(str(root), "/escape/file")
    assert joined == str(root) + str(secret / "file")
    assert joined.startswith(str(root) + "/")


def test_dotdot_symlink_resolves_inside_the_root(root):
    (root / "up").symlink_to("../../../../../../..")
    assert rootfs.secure_join(str(root), "/up/etc/shadow") == str(root / "etc" / "shadow")


def test_relative_symlink_is_relative_to_its_directory(root):
    (root / "dir").mkdir()
    (root / "dir" / "rel").symlink_to("../target")
    assert rootfs.secure_join(str(root), "/dir/rel/x") == str(root / "target" / "x")


def test_dotdot_after_a_symlink_applies_to_the_link_target(root):
    (root / "l").symlink_to("/a/b")
    assert rootfs.secure_join(str(root), "/l/../c") == str(root / "a" / "c")


def test_symlink_chains_are_followed(root):
    (root / "first").symlink_to("second")
    (root / "second").symlink_to("/third")
    assert rootfs.secure_join(str(root), "/first") == str(root / "third")


def test_symlink_loop_is_an_error(root):
    (root / "loop").symlink_to("loop")
    with pytest.raises(ContainerStartError, match="too many levels of symbolic links"):
        rootfs.secure_join(str(root), "/loop/x")


# -- mount_entry ------------------------------------------------------------------------------

def test_read_only_bind_is_a_bind_then_a_read_only_remount(fake, root, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rootfs.mount_entry(fake, str(root), Mount("/data", "bind", str(src), ("rbind", "rprivate", "ro")))
    dest = str(root / "data")
    assert fake.calls == [
        ("mount", str(src), dest, None, L.MS_BIND | L.MS_REC),
        ("mount", None, dest, None, L.MS_BIND | L.MS_REMOUNT | L.MS_RDONLY),
        ("mount", None, dest, None, L.MS_PRIVATE | L.MS_REC),
    ]
    assert os.path.isdir(dest)


def test_read_write_bind_has_no_remount(fake, root, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rootfs.mount_entry(fake, str(root), Mount("/data", "bind", str(src), ("bind",)))
    assert fake.names() == ["mount"]
    assert fake.calls[0][4] == L.MS_BIND


def test_bind_remount_carries_nosuid_nodev_noexec(fake, root, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rootfs.mount_entry(fake, str(root), Mount("/data", "bind", str(src),
                                              ("rbind", "nosuid", "nodev", "noexec")))
    assert fake.calls[1] == ("mount", None, str(root / "data"), None,
                             L.MS_BIND | L.MS_REMOUNT | L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC)


def test_bind_of_a_file_creates_a_file_mountpoint(fake, root, tmp_path):
    src = tmp_path / "resolv.conf"
    src.write_text("nameserver 10.0.0.1\n")
    rootfs.mount_entry(fake, str(root), Mount("/etc/resolv.conf", "bind", str(src),
                                              ("rbind", "rprivate")))
    assert (root / "etc" / "resolv.conf").is_file()
    assert fake.calls[0] == ("mount", str(src), str(root / "etc" / "resolv.conf"), None,
                             L.MS_BIND | L.MS_REC)


def test_bind_of_a_missing_source_is_a_start_error(fake, root, tmp_path):
    with pytest.raises(ContainerStartError, match="bind mount source"):
        rootfs.mount_entry(fake, str(root), Mount("/data", "bind", str(tmp_path / "nope"), ("rbind",)))
    assert fake.calls == []


def test_bind_destination_symlink_cannot_escape_the_root(fake, root, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (root / "data").symlink_to("../../outside")
    rootfs.mount_entry(fake, str(root), Mount("/data", "bind", str(src), ("rbind",)))
    assert fake.calls[0][2] == str(root / "outside")
    assert not (tmp_path / "outside").exists() and not (tmp_path.parent / "outside").exists()


def test_filesystem_mount_passes_flags_and_data_in_one_call(fake, root):
    rootfs.mount_entry(fake, str(root), Mount("/dev/shm", "tmpfs", "shm",
                                              ("nosuid", "noexec", "nodev", "mode=1777", "size=65536k")))
    assert fake.calls == [("mount", "shm", str(root / "dev" / "shm"), "tmpfs",
                           L.MS_NOSUID | L.MS_NOEXEC | L.MS_NODEV, "mode=1777,size=65536k")]


def test_read_only_sysfs_is_mounted_read_only_directly(fake, root):
    rootfs.mount_entry(fake, str(root), Mount("/sys", "sysfs", "sysfs", ("nosuid", "ro")))
    assert fake.calls == [("mount", "sysfs", str(root / "sys"), "sysfs",
                           L.MS_NOSUID | L.MS_RDONLY, None)]


def test_cgroup_mount_on_v2_is_one_cgroup2_mount(fake, root):
    rootfs.mount_entry(fake, str(root), Mount("/sys/fs/cgroup", "cgroup", "cgroup", ("nosuid", "ro")))
    assert fake.calls == [("mount", "cgroup", str(root / "sys/fs/cgroup"), "cgroup2",
                           L.MS_NOSUID | L.MS_RDONLY)]


def test_cgroup_mount_on_v1_is_a_tmpfs_of_controllers_then_read_only(fake, root):
    lay = Layout(None, {"memory": "/sys/fs/cgroup/memory", "cpu": "/sys/fs/cgroup/cpu,cpuacct",
                        "cpuacct": "/sys/fs/cgroup/cpu,cpuacct"},
                 {"/sys/fs/cgroup/memory": "memory", "/sys/fs/cgroup/cpu,cpuacct": "cpu,cpuacct"})
    rootfs.mount_entry(fake, str(root), Mount("/sys/fs/cgroup", "cgroup", "cgroup", ("nosuid", "ro")),
                       lay)
    dest = str(root / "sys/fs/cgroup")
    flags = L.MS_NOSUID | L.MS_RDONLY
    assert fake.calls == [
        ("mount", "tmpfs", dest, "tmpfs", L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC, "mode=755"),
        ("mount", "cgroup", dest + "/cpu,cpuacct", "cgroup", flags, "cpu,cpuacct"),
        ("mount", "cgroup", dest + "/memory", "cgroup", flags, "memory"),
        ("mount", None, dest, None,
         L.MS_REMOUNT | L.MS_RDONLY | L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC, "mode=755"),
    ]


# -- masked and read-only paths, pivot ---------------------------------------------------------

def test_masked_directories_get_a_read_only_tmpfs_and_files_dev_null(fake, tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("")
    rootfs.mask_paths(fake, (str(tmp_path / "dir"), str(tmp_path / "missing"),
                             str(tmp_path / "file")))
    assert fake.calls == [
        ("mount", "tmpfs", str(tmp_path / "dir"), "tmpfs", L.MS_RDONLY),
        ("mount", "/dev/null", str(tmp_path / "file"), None, L.MS_BIND),
    ]


def test_readonly_path_is_a_bind_then_a_read_only_remount_keeping_its_flags(fake, tmp_path):
    rootfs.readonly_paths(fake, (str(tmp_path), str(tmp_path / "missing")))
    assert len(fake.calls) == 2
    assert fake.calls[0] == ("mount", str(tmp_path), str(tmp_path), None, L.MS_BIND | L.MS_REC)
    name, source, target, fstype, flags = fake.calls[1]
    assert (name, source, target, fstype) == ("mount", None, str(tmp_path), None)
    want = L.MS_BIND | L.MS_REMOUNT | L.MS_RDONLY
    assert flags & want == want
    assert flags & ~want == rootfs._current_flags(str(tmp_path))


def test_finish_masks_before_read_only_paths_before_the_read_only_root(fake, tmp_path):
    (tmp_path / "masked").mkdir()
    spec = build(ContainerConfig(cmd=("sh",)), RunOptions(read_only=True), ExecUser(),
                 Context("c" * 64, str(tmp_path), "/h", "/hosts", "/resolv"))
    from berth.oci.record import replace

    spec = replace(spec, linux=replace(spec.linux, masked_paths=(str(tmp_path / "masked"),),
                                       readonly_paths=(str(tmp_path),)))
    rootfs.finish(fake, spec)
    targets = [c[2] for c in fake.calls]
    assert targets == [str(tmp_path / "masked"), str(tmp_path), str(tmp_path), "/"]
    assert fake.calls[-1][4] & (L.MS_REMOUNT | L.MS_RDONLY | L.MS_BIND) == (
        L.MS_REMOUNT | L.MS_RDONLY | L.MS_BIND)


def test_pivot_root_then_old_root_made_slave_then_detached(fake, root, monkeypatch):
    monkeypatch.setattr(rootfs.os, "chdir", lambda path: fake.calls.append(("chdir", path)))
    rootfs.pivot(fake, str(root))
    assert fake.calls == [
        ("chdir", str(root)),
        ("pivot_root", ".", "."),
        ("mount", None, ".", None, L.MS_SLAVE | L.MS_REC),
        ("umount2", ".", L.MNT_DETACH),
        ("chdir", "/"),
    ]


# -- apply_security ---------------------------------------------------------------------------

def make_args(*, user=ExecUser(), seccomp=True, **opts) -> init.InitArgs:
    ctx = Context("c" * 64, "/rootfs", "/h", "/hosts", "/resolv",
                  seccomp=Seccomp("SCMP_ACT_ERRNO") if seccomp else None)
    spec = build(ContainerConfig(cmd=("sh",)), RunOptions(**opts), user, ctx)
    return init.InitArgs(spec, (), BPF if seccomp else None, error_fd=-1, go_fd=-1,
                         console_sock=None, init=False, cgroup_layout=None, new_netns=True)


@pytest.fixture
def recorded_user_switch(fake, monkeypatch):
    """switch_user records into the same call list instead of calling setresuid."""
    monkeypatch.setattr(init, "switch_user",
                        lambda spec: fake.calls.append(("switch_user", spec.process.user.uid)))
    return fake


def prctls(fake, option):
    return [i for i, c in enumerate(fake.calls) if c[0] == "prctl" and c[1] == option]


def test_without_no_new_privs_seccomp_is_loaded_before_capabilities_are_dropped(recorded_user_switch):
    fake = recorded_user_switch
    init.apply_security(fake, make_args())
    seccomp_at = fake.index("load_seccomp")
    assert fake.names().count("load_seccomp") == 1
    assert seccomp_at < min(prctls(fake, L.PR_CAPBSET_DROP))
    assert seccomp_at < fake.index("capset")
    assert seccomp_at < fake.index("switch_user")
    assert prctls(fake, L.PR_SET_NO_NEW_PRIVS) == []


def test_bounding_set_then_keepcaps_then_user_then_capset(recorded_user_switch):
    fake = recorded_user_switch
    init.apply_security(fake, make_args(user=ExecUser(uid=1000, gid=1000)))
    last_drop = max(prctls(fake, L.PR_CAPBSET_DROP))
    keep_on = fake.index("prctl", L.PR_SET_KEEPCAPS, 1)
    switch = fake.index("switch_user")
    keep_off = fake.index("prctl", L.PR_SET_KEEPCAPS, 0)
    capset = fake.index("capset")
    ambient = fake.index("prctl", L.PR_CAP_AMBIENT, L.PR_CAP_AMBIENT_CLEAR_ALL)
    assert last_drop < keep_on < switch < keep_off < capset < ambient


def test_with_no_new_privs_seccomp_comes_last_after_capset(recorded_user_switch):
    fake = recorded_user_switch
    init.apply_security(fake, make_args(no_new_privileges=True))
    nnp = fake.index("prctl", L.PR_SET_NO_NEW_PRIVS, 1)
    assert fake.index("capset") < nnp < fake.index("load_seccomp")
    assert fake.index("switch_user") < nnp
    assert fake.names().count("load_seccomp") == 1
    assert fake.calls[-1] == ("load_seccomp", BPF)


def test_no_new_privs_without_seccomp_still_sets_the_bit(recorded_user_switch):
    fake = recorded_user_switch
    init.apply_security(fake, make_args(no_new_privileges=True, seccomp_unconfined=True,
                                        seccomp=False))
    assert "load_seccomp" not in fake.names()
    assert fake.calls[-1] == ("prctl", L.PR_SET_NO_NEW_PRIVS, 1)


def test_unconfined_loads_no_filter(recorded_user_switch):
    fake = recorded_user_switch
    init.apply_security(fake, make_args(seccomp=False))
    assert "load_seccomp" not in fake.names()


def test_bounding_set_drops_exactly_the_capabilities_not_granted(recorded_user_switch):
    fake = recorded_user_switch
    init.apply_security(fake, make_args())
    dropped = {fake.calls[i][2] for i in prctls(fake, L.PR_CAPBSET_DROP)}
    kept = {caps.NUMBERS[name] for name in caps.DOCKER_DEFAULT}
    assert dropped == set(range(caps.last_cap() + 1)) - kept
    assert caps.NUMBERS["CAP_SYS_ADMIN"] in dropped and caps.NUMBERS["CAP_CHOWN"] not in dropped


def test_capset_for_root_grants_the_default_set(recorded_user_switch):
    fake = recorded_user_switch
    init.apply_security(fake, make_args())
    default = caps.mask(caps.DOCKER_DEFAULT)
    assert fake.calls[fake.index("capset")] == ("capset", default, default, 0)
    assert prctls(fake, L.PR_CAP_AMBIENT) == [fake.index("prctl", L.PR_CAP_AMBIENT,
                                                         L.PR_CAP_AMBIENT_CLEAR_ALL)]


def test_capset_for_a_non_root_user_clears_effective_and_permitted(recorded_user_switch):
    fake = recorded_user_switch
    init.apply_security(fake, make_args(user=ExecUser(uid=1000, gid=1000)))
    assert fake.calls[fake.index("capset")] == ("capset", 0, 0, 0)


def test_added_capability_is_kept_in_the_bounding_set(recorded_user_switch):
    fake = recorded_user_switch
    init.apply_security(fake, make_args(cap_add=("NET_ADMIN",)))
    dropped = {fake.calls[i][2] for i in prctls(fake, L.PR_CAPBSET_DROP)}
    assert caps.NUMBERS["CAP_NET_ADMIN"] not in dropped


def test_privileged_keeps_every_capability_berth_itself_holds(recorded_user_switch):
    fake = recorded_user_switch
    init.apply_security(fake, make_args(privileged=True, seccomp=False))
    dropped = {fake.calls[i][2] for i in prctls(fake, L.PR_CAPBSET_DROP)}
    held = {caps.NUMBERS[name] for name in caps.all_caps()}
    assert dropped == set(range(caps.last_cap() + 1)) - held
    assert fake.calls[fake.index("capset")][1] == caps.mask(caps.all_caps())


def test_user_switch_sets_groups_then_gid_then_uid_under_keepcaps(fake, monkeypatch):
    for name in ("setgroups", "setresgid", "setresuid"):
        monkeypatch.setattr(init.os, name,
                            lambda *a, _n=name: fake.calls.append((_n, *a)))
    init.apply_security(fake, make_args(user=ExecUser(uid=1000, gid=1001, additional_gids=(10, 29))))
    keep_on = fake.index("prctl", L.PR_SET_KEEPCAPS, 1)
    groups = fake.index("setgroups", [10, 29])
    gid = fake.index("setresgid", 1001, 1001, 1001)
    uid = fake.index("setresuid", 1000, 1000, 1000)
    keep_off = fake.index("prctl", L.PR_SET_KEEPCAPS, 0)
    assert keep_on < groups < gid < uid < keep_off


def test_a_built_spec_with_binds_drives_the_expected_mounts(fake, root, tmp_path):
    src = tmp_path / "srv"
    src.mkdir()
    spec = build(ContainerConfig(cmd=("sh",)), RunOptions(binds=(BindSpec(str(src), "/srv", True),)),
                 ExecUser(), Context("c" * 64, str(root), "/h", "/hosts", "/resolv"))
    bind = next(m for m in spec.mounts if m.destination == "/srv")
    rootfs.mount_entry(fake, str(root), bind)
    assert fake.calls[1][4] & L.MS_RDONLY and fake.calls[1][4] & L.MS_REMOUNT


# -- small pure pieces of init ----------------------------------------------------------------

def test_unknown_rlimit_is_a_start_error():
    with pytest.raises(ContainerStartError, match="unknown rlimit RLIMIT_BOGUS"):
        init.set_rlimits((Rlimit("RLIMIT_BOGUS", 1, 1),))


def test_rlimit_table_matches_the_kernel_numbers_python_knows():
    import resource

    assert init.RLIMITS["RLIMIT_NOFILE"] == resource.RLIMIT_NOFILE
    assert init.RLIMITS["RLIMIT_NPROC"] == resource.RLIMIT_NPROC
    assert init.RLIMITS["RLIMIT_CORE"] == resource.RLIMIT_CORE
    assert init.RLIMITS["RLIMIT_RTTIME"] == resource.RLIMIT_RTTIME


@pytest.mark.parametrize("exc, payload", [
    (CommandNotFound('exec: "nope": executable file not found in $PATH'),
     {"kind": "notfound", "message": 'exec: "nope": executable file not found in $PATH', "code": 127}),
    (CommandNotFound('exec: "/x": permission denied', 126),
     {"kind": "notfound", "message": 'exec: "/x": permission denied', "code": 126}),
    (ContainerStartError("sysctl a=b: denied"), {"kind": "start", "message": "sysctl a=b: denied"}),
    (ValueError("boom"), {"kind": "start", "message": "ValueError: boom"}),
])
def test_report_sends_one_json_error_to_the_engine(exc, payload):
    r, w = os.pipe()
    try:
        init.report(w, exc)
        os.close(w)
        w = -1
        assert json.loads(os.read(r, 65536)) == payload
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
