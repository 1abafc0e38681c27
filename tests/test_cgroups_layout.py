"""berth.runtime.cgroups without a kernel: layout detection from mountinfo fixtures, the
v1/v2 value conversions, and limit files written into a plain directory tree.
"""

from __future__ import annotations

import pytest

from berth.errors import FailedPrecondition
from berth.oci.runtime import CPU, DeviceRule, Memory, Pids, Resources
from berth.runtime.cgroups import Cgroup, Layout, _read_layout, device_rule_v1, shares_to_weight

# Debian 10 / Ubuntu 20.04 style: v1 hierarchies plus an (empty) cgroup2 at .../unified
HYBRID = """\
22 27 0:20 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
27 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
30 22 0:25 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:26 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
32 30 0:27 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
35 30 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,cpu,cpuacct
36 30 0:31 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,memory
37 30 0:32 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,pids
38 30 0:33 / /sys/fs/cgroup/devices rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,devices
39 30 0:34 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:19 - cgroup cgroup rw,net_cls,net_prio
40 30 0:35 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:20 - cgroup cgroup rw,cpuset,clone_children
"""

# Debian 12 / Fedora: one cgroup2 at /sys/fs/cgroup
UNIFIED = """\
22 27 0:20 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
27 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
33 22 0:28 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
"""

# legacy v1 without any cgroup2, and no optional fields (as inside some containers)
LEGACY = """\
100 99 0:40 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,memory
101 99 0:41 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,pids
102 99 0:42 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,cpuacct,cpu
"""


def layout_from(tmp_path, text: str) -> Layout:
    path = tmp_path / "mountinfo"
    path.write_text(text)
    return _read_layout(str(path))


# -- layout detection -------------------------------------------------------------------------

def test_hybrid_host_is_not_v2_because_v1_holds_memory_and_pids(tmp_path):
    lay = layout_from(tmp_path, HYBRID)
    assert lay.unified == "/sys/fs/cgroup/unified"
    assert lay.is_v2 is False
    assert lay.v1["memory"] == "/sys/fs/cgroup/memory"
    assert lay.v1["name=systemd"] == "/sys/fs/cgroup/systemd"


def test_combined_controller_mount_serves_both_controllers(tmp_path):
    lay = layout_from(tmp_path, HYBRID)
    assert lay.v1["cpu"] == lay.v1["cpuacct"] == "/sys/fs/cgroup/cpu,cpuacct"
    assert lay.v1_options["/sys/fs/cgroup/cpu,cpuacct"] == "cpu,cpuacct"
    assert lay.v1["net_cls"] == lay.v1["net_prio"] == "/sys/fs/cgroup/net_cls,net_prio"


def test_non_controller_mount_options_are_not_controllers(tmp_path):
    lay = layout_from(tmp_path, HYBRID)
    assert lay.v1_options["/sys/fs/cgroup/cpuset"] == "cpuset"
    assert lay.v1_options["/sys/fs/cgroup/systemd"] == "name=systemd"
    assert not {"rw", "xattr", "clone_children"} & set(lay.v1)


def test_pure_v2_host_is_v2(tmp_path):
    lay = layout_from(tmp_path, UNIFIED)
    assert lay == Layout("/sys/fs/cgroup", {}, {})
    assert lay.is_v2 is True


def test_legacy_host_without_cgroup2_and_without_optional_fields(tmp_path):
    lay = layout_from(tmp_path, LEGACY)
    assert lay.unified is None and lay.is_v2 is False
    assert lay.v1["cpu"] == "/sys/fs/cgroup/cpu,cpuacct"
    assert lay.v1_options["/sys/fs/cgroup/cpu,cpuacct"] == "cpuacct,cpu"


def test_cgroup2_at_sys_fs_cgroup_wins_over_one_mounted_elsewhere(tmp_path):
    other = "50 27 0:29 / /run/other rw - cgroup2 cgroup2 rw\n"
    assert layout_from(tmp_path, other + UNIFIED).unified == "/sys/fs/cgroup"


def test_no_cgroup_mount_at_all_is_a_failed_precondition(tmp_path):
    with pytest.raises(FailedPrecondition, match="no cgroup filesystem"):
        layout_from(tmp_path, "27 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n")


# -- one container's directories ---------------------------------------------------------------

def test_v2_container_has_one_directory(tmp_path):
    cg = Cgroup(layout_from(tmp_path, UNIFIED), "/berth/abc/")
    assert cg.dirs == {"": "/sys/fs/cgroup/berth/abc"}
    assert cg.v2_dir() == "/sys/fs/cgroup/berth/abc"
    assert cg._dir("memory") == cg._dir("pids") == "/sys/fs/cgroup/berth/abc"


def test_hybrid_container_has_one_directory_per_v1_hierarchy(tmp_path):
    cg = Cgroup(layout_from(tmp_path, HYBRID), "berth/abc")
    assert cg.dirs == {
        "name=systemd": "/sys/fs/cgroup/systemd/berth/abc",
        "cpu,cpuacct": "/sys/fs/cgroup/cpu,cpuacct/berth/abc",
        "memory": "/sys/fs/cgroup/memory/berth/abc",
        "pids": "/sys/fs/cgroup/pids/berth/abc",
        "devices": "/sys/fs/cgroup/devices/berth/abc",
        "net_cls,net_prio": "/sys/fs/cgroup/net_cls,net_prio/berth/abc",
        "cpuset": "/sys/fs/cgroup/cpuset/berth/abc",
    }
    assert cg._dir("cpuacct") == "/sys/fs/cgroup/cpu,cpuacct/berth/abc"
    assert cg._dir("hugetlb") is None
    assert cg.v2_dir() is None


# -- conversions ------------------------------------------------------------------------------

@pytest.mark.parametrize("shares, weight", [(1024, 39), (2, 1), (262144, 10000), (0, 100),
                                            (512, 20)])
def test_shares_to_weight_is_runcs_conversion(shares, weight):
    assert shares_to_weight(shares) == weight
    if shares:
        assert weight == 1 + ((shares - 2) * 9999) // 262142


@pytest.mark.parametrize("rule, line", [
    (DeviceRule(False, "a", None, None, "rwm"), "a *:* rwm"),
    (DeviceRule(True, "c", 1, 3, "rwm"), "c 1:3 rwm"),
    (DeviceRule(True, "c", 136, None, "rwm"), "c 136:* rwm"),
    (DeviceRule(True, "b", None, None, "m"), "b *:* m"),
    (DeviceRule(True, None, -1, -1, None), "a *:* rwm"),
])
def test_device_rule_v1_format(rule, line):
    assert device_rule_v1(rule) == line


# -- limits written into a directory tree ----------------------------------------------------

def touch(directory, *names):
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        (directory / name).write_text("")


def test_v2_limits_use_v2_file_names_and_values(tmp_path):
    cg = Cgroup(Layout(str(tmp_path), {}, {}), "berth/c1")
    d = tmp_path / "berth" / "c1"
    touch(d, "memory.low", "memory.max", "memory.swap.max", "cpu.weight", "cpu.max", "pids.max")
    cg.apply(Resources(memory=Memory(limit=64 << 20, reservation=32 << 20, swap=128 << 20),
                       cpu=CPU(shares=1024, quota=50000, period=100000), pids=Pids(-1)))
    assert (d / "memory.max").read_text() == str(64 << 20)
    assert (d / "memory.low").read_text() == str(32 << 20)
    # the spec's swap is memory+swap; v2's memory.swap.max is swap alone
    assert (d / "memory.swap.max").read_text() == str(64 << 20)
    assert (d / "cpu.weight").read_text() == "39"
    assert (d / "cpu.max").read_text() == "50000 100000"
    assert (d / "pids.max").read_text() == "max"


def test_v2_unlimited_memory_and_swap_are_max(tmp_path):
    cg = Cgroup(Layout(str(tmp_path), {}, {}), "c2")
    d = tmp_path / "c2"
    touch(d, "memory.max", "memory.swap.max", "cpu.max")
    cg.apply(Resources(memory=Memory(limit=-1, swap=-1), cpu=CPU(period=50000)))
    assert (d / "memory.max").read_text() == "max"
    assert (d / "memory.swap.max").read_text() == "max"
    assert (d / "cpu.max").read_text() == "max 50000"


def test_v1_limits_go_to_each_controllers_hierarchy(tmp_path):
    mem, cpu, pids = tmp_path / "memory", tmp_path / "cpu,cpuacct", tmp_path / "pids"
    lay = Layout(None, {"memory": str(mem), "cpu": str(cpu), "cpuacct": str(cpu), "pids": str(pids)},
                 {str(mem): "memory", str(cpu): "cpu,cpuacct", str(pids): "pids"})
    cg = Cgroup(lay, "c3")
    touch(mem / "c3", "memory.limit_in_bytes", "memory.soft_limit_in_bytes")
    touch(cpu / "c3", "cpu.shares", "cpu.cfs_period_us", "cpu.cfs_quota_us")
    touch(pids / "c3", "pids.max")
    cg.apply(Resources(memory=Memory(limit=64 << 20, reservation=1 << 20, swap=128 << 20),
                       cpu=CPU(shares=512, quota=150000, period=100000), pids=Pids(100)))
    assert (mem / "c3" / "memory.limit_in_bytes").read_text() == str(64 << 20)
    assert (mem / "c3" / "memory.soft_limit_in_bytes").read_text() == str(1 << 20)
    # no memsw file (swap accounting off): the swap limit is skipped, not an error
    assert not (mem / "c3" / "memory.memsw.limit_in_bytes").exists()
    assert (cpu / "c3" / "cpu.shares").read_text() == "512"
    assert (cpu / "c3" / "cpu.cfs_quota_us").read_text() == "150000"
    assert (pids / "c3" / "pids.max").read_text() == "100"


def test_oom_killed_reads_the_v2_events_file(tmp_path):
    cg = Cgroup(Layout(str(tmp_path), {}, {}), "c4")
    assert cg.oom_killed() is False  # no file yet
    touch(tmp_path / "c4")
    (tmp_path / "c4" / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert cg.oom_killed() is True
    (tmp_path / "c4" / "memory.events").write_text("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")
    assert cg.oom_killed() is False


def test_procs_reads_cgroup_procs_and_tolerates_a_missing_cgroup(tmp_path):
    cg = Cgroup(Layout(str(tmp_path), {}, {}), "c5")
    assert cg.procs() == []
    touch(tmp_path / "c5")
    (tmp_path / "c5" / "cgroup.procs").write_text("12\n34\n")
    assert cg.procs() == [12, 34]


def test_destroy_removes_every_directory_and_ignores_missing_ones(tmp_path):
    lay = Layout(None, {"memory": str(tmp_path / "m"), "pids": str(tmp_path / "p")},
                 {str(tmp_path / "m"): "memory", str(tmp_path / "p"): "pids"})
    cg = Cgroup(lay, "c6")
    (tmp_path / "m" / "c6").mkdir(parents=True)
    cg.destroy()
    assert not (tmp_path / "m" / "c6").exists()
