"""berth.container.spec: image config + run options -> OCI runtime spec, without disk or kernel.

Each test pins one Docker behaviour of the pure builder (moby daemon/oci_linux.go,
daemon/pkg/oci/defaults.go) so a change to one option is caught by one small test.
"""

from __future__ import annotations

import pytest

from berth.container.spec import (
    DEFAULT_PATH,
    DEFAULT_SHM_SIZE,
    MASKED_PATHS,
    READONLY_PATHS,
    BindSpec,
    Context,
    RunOptions,
    build,
    capabilities,
    command_args,
    environment,
    merge_env,
    resources,
)
from berth.container.users import ExecUser
from berth.errors import InvalidArgument
from berth.oci import runtime as rt
from berth.oci.image import ContainerConfig
from berth.runtime import caps

CID = "0123456789abcdef" * 4
DOCKER_DEFAULT_CAPS = {
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}
ROOT = ExecUser(uid=0, gid=0, home="/root")
APP = ExecUser(uid=1000, gid=1000, additional_gids=(10,), home="/home/app")
SECCOMP = rt.Seccomp(default_action="SCMP_ACT_ERRNO", default_errno_ret=1)
IMAGE = ContainerConfig(cmd=("sh",))


def ctx(**kw) -> Context:
    base = dict(container_id=CID, rootfs="/var/lib/berth/rootfs", hostname_file="/run/c/hostname",
                hosts_file="/run/c/hosts", resolv_file="/run/c/resolv.conf", ncpus=2,
                host_hostname="buildhost", seccomp=SECCOMP)
    base.update(kw)
    return Context(**base)


def spec_for(image: ContainerConfig = IMAGE, user: ExecUser = ROOT, context: Context | None = None,
             **opts) -> rt.Spec:
    return build(image, RunOptions(**opts), user, context or ctx())


def mount_at(spec: rt.Spec, destination: str) -> rt.Mount:
    found = [m for m in spec.mounts if m.destination == destination]
    assert len(found) == 1, f"{destination}: {found}"
    return found[0]


# -- command_args: Docker's Entrypoint/Cmd rules ------------------------------------------

def test_image_cmd_is_used_when_no_command_is_given():
    image = ContainerConfig(entrypoint=("/entry.sh",), cmd=("serve", "--port", "80"))
    assert command_args(image, RunOptions()) == ("/entry.sh", "serve", "--port", "80")


def test_command_replaces_image_cmd_but_keeps_entrypoint():
    image = ContainerConfig(entrypoint=("/entry.sh",), cmd=("serve",))
    assert command_args(image, RunOptions(command=("migrate", "up"))) == ("/entry.sh", "migrate", "up")


def test_entrypoint_flag_replaces_image_entrypoint_and_drops_image_cmd():
    image = ContainerConfig(entrypoint=("/entry.sh",), cmd=("serve",))
    assert command_args(image, RunOptions(entrypoint=("/bin/echo",))) == ("/bin/echo",)


def test_entrypoint_flag_with_command_runs_both():
    image = ContainerConfig(entrypoint=("/entry.sh",), cmd=("serve",))
    opts = RunOptions(entrypoint=("/bin/echo",), command=("hi",))
    assert command_args(image, opts) == ("/bin/echo", "hi")


def test_empty_entrypoint_flag_runs_command_alone():
    image = ContainerConfig(entrypoint=("/entry.sh",), cmd=("serve",))
    assert command_args(image, RunOptions(entrypoint=(), command=("ls", "/"))) == ("ls", "/")


def test_empty_entrypoint_flag_without_command_is_no_command():
    image = ContainerConfig(entrypoint=("/entry.sh",), cmd=("serve",))
    with pytest.raises(InvalidArgument, match="no command specified"):
        command_args(image, RunOptions(entrypoint=()))


def test_image_without_cmd_or_entrypoint_and_no_command_is_rejected():
    with pytest.raises(InvalidArgument, match="no command specified"):
        command_args(ContainerConfig(), RunOptions())


# -- environment ----------------------------------------------------------------------------

def test_environment_starts_with_default_path_and_hostname():
    env = environment(ContainerConfig(), RunOptions(), "myhost", ROOT)
    assert env[:2] == ("PATH=" + DEFAULT_PATH, "HOSTNAME=myhost")


def test_term_is_set_only_with_a_tty():
    assert "TERM=xterm" in environment(ContainerConfig(), RunOptions(tty=True), "h", ROOT)
    assert not any(e.startswith("TERM=")
                   for e in environment(ContainerConfig(), RunOptions(), "h", ROOT))


def test_image_path_overrides_default_path_in_place():
    image = ContainerConfig(env=("PATH=/opt/bin", "LANG=C.UTF-8"))
    env = environment(image, RunOptions(), "h", ROOT)
    assert env[0] == "PATH=/opt/bin"
    assert "LANG=C.UTF-8" in env


def test_env_flag_overrides_image_env():
    image = ContainerConfig(env=("MODE=prod", "KEEP=1"))
    env = environment(image, RunOptions(env=("MODE=dev",)), "h", ROOT)
    assert "MODE=dev" in env and "MODE=prod" not in env
    assert "KEEP=1" in env


def test_home_comes_from_the_user_when_not_set():
    assert "HOME=/home/app" in environment(ContainerConfig(), RunOptions(), "h", APP)


def test_home_from_image_or_flag_wins_over_passwd():
    image = ContainerConfig(env=("HOME=/srv",))
    assert environment(image, RunOptions(), "h", APP)[-1] == "HOME=/srv"
    env = environment(image, RunOptions(env=("HOME=/tmp",)), "h", APP)
    assert "HOME=/tmp" in env and "HOME=/srv" not in env and "HOME=/home/app" not in env


def test_merge_env_keeps_first_seen_order_and_last_value():
    assert merge_env(("A=1", "B=2"), ("C=3", "A=9")) == ("A=9", "B=2", "C=3")


def test_merge_env_rejects_an_empty_key():
    with pytest.raises(InvalidArgument, match="invalid environment variable"):
        merge_env(("=oops",))


# -- capabilities ---------------------------------------------------------------------------

def test_default_capabilities_are_dockers_fourteen():
    c = capabilities(RunOptions(), ROOT)
    assert set(c.bounding) == DOCKER_DEFAULT_CAPS and len(c.bounding) == 14
    assert c.effective == c.permitted == c.bounding
    assert c.inheritable == () and c.ambient == ()


def test_cap_add_appends_and_accepts_short_lowercase_names():
    c = capabilities(RunOptions(cap_add=("net_admin",)), ROOT)
    assert set(c.bounding) == DOCKER_DEFAULT_CAPS | {"CAP_NET_ADMIN"}


def test_cap_drop_removes_from_the_default_set():
    c = capabilities(RunOptions(cap_drop=("CAP_CHOWN", "NET_RAW")), ROOT)
    assert set(c.bounding) == DOCKER_DEFAULT_CAPS - {"CAP_CHOWN", "CAP_NET_RAW"}


def test_cap_drop_all_then_add_keeps_only_the_added():
    c = capabilities(RunOptions(cap_drop=("ALL",), cap_add=("NET_BIND_SERVICE",)), ROOT)
    assert c.bounding == ("CAP_NET_BIND_SERVICE",)


def test_cap_add_all_gives_every_capability():
    c = capabilities(RunOptions(cap_add=("ALL",)), ROOT)
    assert c.bounding == caps.all_caps()


def test_cap_add_all_still_honours_cap_drop():
    c = capabilities(RunOptions(cap_add=("ALL",), cap_drop=("SYS_ADMIN",)), ROOT)
    assert "CAP_SYS_ADMIN" not in c.bounding


def test_unknown_capability_is_rejected():
    with pytest.raises(InvalidArgument, match="unknown capability"):
        capabilities(RunOptions(cap_add=("CAP_FLY",)), ROOT)


def test_privileged_gets_every_capability_regardless_of_cap_drop():
    c = capabilities(RunOptions(privileged=True, cap_drop=("ALL",)), ROOT)
    assert c.bounding == c.effective == c.permitted == caps.all_caps()


def test_non_root_user_keeps_bounding_set_but_starts_with_no_live_capabilities():
    c = capabilities(RunOptions(), APP)
    assert set(c.bounding) == DOCKER_DEFAULT_CAPS
    assert c.effective == () and c.permitted == () and c.inheritable == () and c.ambient == ()


# -- resources ------------------------------------------------------------------------------

def test_no_limits_gives_only_device_rules():
    rules = (rt.DeviceRule(False, "a", None, None, "rwm"),)
    assert resources(RunOptions(), rules) == rt.Resources(devices=rules)


def test_memory_swap_defaults_to_twice_the_memory_limit():
    mem = resources(RunOptions(memory=64 << 20), ()).memory
    assert mem.limit == 64 << 20 and mem.swap == 128 << 20


def test_memory_swap_minus_one_means_unlimited_swap():
    assert resources(RunOptions(memory=64 << 20, memory_swap=-1), ()).memory.swap == -1


def test_memory_swap_below_memory_is_rejected():
    with pytest.raises(InvalidArgument, match="Minimum memoryswap limit should be larger than "
                                              "memory limit"):
        resources(RunOptions(memory=64 << 20, memory_swap=32 << 20), ())


def test_memory_swap_zero_means_unset_like_docker():
    assert resources(RunOptions(memory=64 << 20, memory_swap=0), ()).memory.swap == 128 << 20


def test_memory_swap_without_memory_is_rejected():
    with pytest.raises(InvalidArgument, match="Memory limit"):
        resources(RunOptions(memory_swap=128 << 20), ())


def test_oom_kill_disable_alone_makes_a_memory_section():
    mem = resources(RunOptions(oom_kill_disable=True), ()).memory
    assert mem == rt.Memory(disable_oom_killer=True)


def test_cpus_becomes_quota_over_a_100ms_period():
    cpu = resources(RunOptions(cpus=1.5), ()).cpu
    assert (cpu.quota, cpu.period) == (150000, 100000)


def test_fractional_cpus_convert_to_the_exact_quota():
    assert resources(RunOptions(cpus=0.29), ()).cpu.quota == 29000


def test_cpus_with_cpu_period_conflicts():
    with pytest.raises(InvalidArgument, match="Conflicting options: Nano CPUs and CPU Period"):
        resources(RunOptions(cpus=1.0, cpu_period=50000), ())


def test_cpu_shares_and_cpuset_pass_through():
    cpu = resources(RunOptions(cpu_shares=512, cpuset_cpus="0-1", cpuset_mems="0"), ()).cpu
    assert cpu == rt.CPU(shares=512, cpus="0-1", mems="0")


@pytest.mark.parametrize("given, limit", [(0, -1), (-1, -1), (100, 100)])
def test_pids_limit_zero_or_negative_means_unlimited(given, limit):
    assert resources(RunOptions(pids_limit=given), ()).pids == rt.Pids(limit=limit)


# -- build: namespaces, hostname, process -------------------------------------------------

def test_container_gets_its_own_namespaces_including_network():
    types = [n.type for n in spec_for().linux.namespaces]
    assert set(types) == {"pid", "ipc", "uts", "mount", "cgroup", "network"}
    assert all(n.path is None for n in spec_for().linux.namespaces)


def test_host_network_shares_the_host_network_namespace():
    types = [n.type for n in spec_for(network="host").linux.namespaces]
    assert "network" not in types and "uts" in types


def test_hostname_defaults_to_the_short_container_id():
    spec = spec_for()
    assert spec.hostname == CID[:12]
    assert f"HOSTNAME={CID[:12]}" in spec.process.env


def test_host_network_uses_the_host_hostname_unless_given():
    assert spec_for(network="host").hostname == "buildhost"
    assert spec_for(network="host", hostname="web").hostname == "web"


def test_hostname_and_domainname_flags_are_used():
    spec = spec_for(hostname="web", domainname="example.org")
    assert (spec.hostname, spec.domainname) == ("web", "example.org")


def test_workdir_comes_from_flag_then_image_then_root():
    assert spec_for().process.cwd == "/"
    image = ContainerConfig(cmd=("sh",), working_dir="/app")
    assert spec_for(image).process.cwd == "/app"
    assert spec_for(image, workdir="/tmp").process.cwd == "/tmp"


def test_relative_workdir_is_rejected():
    with pytest.raises(InvalidArgument, match="the working directory 'app' is invalid, it needs "
                                              "to be an absolute path"):
        spec_for(workdir="app")


def test_process_user_comes_from_the_resolved_exec_user():
    user = spec_for(user=APP).process.user
    assert (user.uid, user.gid, user.additional_gids) == (1000, 1000, (10,))


def test_tty_ulimits_and_no_new_privileges_reach_the_process():
    nofile = rt.Rlimit(type="RLIMIT_NOFILE", hard=2048, soft=1024)
    process = spec_for(tty=True, ulimits=(nofile,), no_new_privileges=True,
                       oom_score_adj=500).process
    assert process.terminal is True
    assert process.rlimits == (nofile,)
    assert process.no_new_privileges is True
    assert process.oom_score_adj == 500


def test_read_only_flag_makes_the_root_read_only():
    assert spec_for().root == rt.Root(path="/var/lib/berth/rootfs", readonly=False)
    assert spec_for(read_only=True).root.readonly is True


def test_cgroups_path_is_parent_slash_container_id():
    assert spec_for(context=ctx(cgroup_parent="berth")).linux.cgroups_path == f"berth/{CID}"


# -- build: hardening -------------------------------------------------------------------------

def test_masked_and_readonly_paths_are_dockers_plus_thermal_throttle_per_cpu():
    linux = spec_for(context=ctx(ncpus=2)).linux
    assert set(MASKED_PATHS) <= set(linux.masked_paths)
    assert {"/proc/kcore", "/proc/keys", "/sys/firmware", "/proc/interrupts"} <= set(linux.masked_paths)
    assert "/sys/devices/system/cpu/cpu1/thermal_throttle" in linux.masked_paths
    assert "/sys/devices/system/cpu/cpu2/thermal_throttle" not in linux.masked_paths
    assert linux.readonly_paths == READONLY_PATHS
    assert "/proc/sys" in linux.readonly_paths


def test_privileged_has_no_masked_or_readonly_paths():
    linux = spec_for(privileged=True).linux
    assert linux.masked_paths == () and linux.readonly_paths == ()


def test_device_cgroup_denies_all_then_allows_the_default_nodes():
    rules = spec_for().linux.resources.devices
    assert rules[0] == rt.DeviceRule(False, "a", None, None, "rwm")
    assert rt.DeviceRule(True, "c", 1, 3, "rwm") in rules  # /dev/null
    assert rt.DeviceRule(True, "c", 136, None, "rwm") in rules  # /dev/pts/*
    assert rt.DeviceRule(False, "c", 10, 229, "rwm") in rules  # /dev/fuse denied


def test_privileged_device_cgroup_allows_everything_and_adds_host_devices():
    sda = rt.Device("b", "/dev/sda", 8, 0, 0o660, 0, 6)
    null_again = rt.Device("c", "/dev/null", 1, 3, 0o666, 0, 0)
    linux = spec_for(privileged=True, context=ctx(host_devices=(sda, null_again))).linux
    assert linux.resources.devices == (rt.DeviceRule(True, "a", None, None, "rwm"),)
    assert sda in linux.devices
    assert [d.path for d in linux.devices].count("/dev/null") == 1


def test_default_devices_are_the_runtime_spec_set():
    paths = {d.path for d in spec_for().linux.devices}
    assert paths == {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"}


def test_default_sysctls_are_set_only_with_an_own_network_namespace():
    assert spec_for().linux.sysctl == {"net.ipv4.ip_unprivileged_port_start": "0",
                                       "net.ipv4.ping_group_range": "0 2147483647"}
    assert spec_for(network="host").linux.sysctl is None


def test_sysctl_flag_overrides_the_defaults():
    sysctl = spec_for(sysctls={"net.ipv4.ip_unprivileged_port_start": "1024",
                               "net.core.somaxconn": "1024"}).linux.sysctl
    assert sysctl["net.ipv4.ip_unprivileged_port_start"] == "1024"
    assert sysctl["net.core.somaxconn"] == "1024"


def test_seccomp_comes_from_the_context():
    assert spec_for().linux.seccomp == SECCOMP


def test_seccomp_is_off_when_privileged_or_unconfined():
    assert spec_for(privileged=True).linux.seccomp is None
    assert spec_for(seccomp_unconfined=True).linux.seccomp is None


def test_rootfs_propagation_is_rprivate():
    assert spec_for().linux.rootfs_propagation == "rprivate"


# -- build: mounts --------------------------------------------------------------------------

def test_default_mounts_are_present_in_dockers_order():
    dests = [m.destination for m in spec_for().mounts]
    assert dests[:7] == ["/proc", "/dev", "/dev/pts", "/sys", "/sys/fs/cgroup", "/dev/mqueue",
                         "/dev/shm"]


def test_proc_and_dev_mount_options():
    spec = spec_for()
    assert mount_at(spec, "/proc") == rt.Mount("/proc", "proc", "proc", ("nosuid", "noexec", "nodev"))
    dev = mount_at(spec, "/dev")
    assert dev.type == "tmpfs" and {"nosuid", "strictatime", "mode=755"} <= set(dev.options)
    pts = mount_at(spec, "/dev/pts")
    assert pts.type == "devpts" and {"newinstance", "ptmxmode=0666", "gid=5"} <= set(pts.options)
    assert mount_at(spec, "/dev/mqueue").type == "mqueue"


def test_sys_and_cgroup_are_read_only_unless_privileged():
    spec = spec_for()
    assert "ro" in mount_at(spec, "/sys").options
    assert mount_at(spec, "/sys").type == "sysfs"
    assert "ro" in mount_at(spec, "/sys/fs/cgroup").options
    assert mount_at(spec, "/sys/fs/cgroup").type == "cgroup"
    priv = spec_for(privileged=True)
    assert "ro" not in mount_at(priv, "/sys").options
    assert "ro" not in mount_at(priv, "/sys/fs/cgroup").options


def test_dev_shm_has_the_requested_size():
    assert f"size={DEFAULT_SHM_SIZE}" in mount_at(spec_for(), "/dev/shm").options
    shm = mount_at(spec_for(shm_size=128 << 20), "/dev/shm")
    assert shm.source == "shm" and shm.type == "tmpfs"
    assert {f"size={128 << 20}", "mode=1777", "nosuid", "noexec", "nodev"} <= set(shm.options)


def test_ipc_none_has_no_dev_shm():
    assert "/dev/shm" not in [m.destination for m in spec_for(ipc="none").mounts]


def test_resolv_hostname_and_hosts_are_bound_from_the_context():
    spec = spec_for()
    assert mount_at(spec, "/etc/resolv.conf") == rt.Mount("/etc/resolv.conf", "bind",
                                                          "/run/c/resolv.conf", ("rbind", "rprivate"))
    assert mount_at(spec, "/etc/hostname").source == "/run/c/hostname"
    assert mount_at(spec, "/etc/hosts").source == "/run/c/hosts"


def test_user_binds_are_rbinds_with_ro_and_propagation():
    spec = spec_for(binds=(BindSpec("/srv/data", "/data", readonly=True),
                           BindSpec("/srv/logs", "/logs", propagation="rshared")))
    assert mount_at(spec, "/data") == rt.Mount("/data", "bind", "/srv/data",
                                               ("rbind", "rprivate", "ro"))
    assert mount_at(spec, "/logs") == rt.Mount("/logs", "bind", "/srv/logs", ("rbind", "rshared"))


def test_user_mounts_come_after_the_defaults_so_they_can_cover_them():
    dests = [m.destination for m in spec_for(binds=(BindSpec("/x", "/etc/hosts"),)).mounts]
    assert dests.index("/etc/hosts") < len(dests) - 1
    assert dests[-1] == "/etc/hosts"


def test_tmpfs_gets_noexec_nosuid_nodev_before_user_options():
    tmp = mount_at(spec_for(tmpfs=(("/run", "size=1m,exec"),)), "/run")
    assert tmp.type == "tmpfs" and tmp.source == "tmpfs"
    assert tmp.options == ("noexec", "nosuid", "nodev", "size=1m", "exec")


def test_tmpfs_without_options_has_only_the_safe_defaults():
    assert mount_at(spec_for(tmpfs=(("/scratch", ""),)), "/scratch").options == (
        "noexec", "nosuid", "nodev")


def test_built_spec_survives_a_json_round_trip():
    spec = spec_for(binds=(BindSpec("/a", "/b", True),), memory=64 << 20, cpus=0.5,
                    pids_limit=10, tty=True)
    assert rt.Spec.from_json(spec.to_json()) == spec
