"""Each namespace and the root filesystem, proven from inside a real container."""

from __future__ import annotations

import json
import os
import socket


def test_run_prints_command_output_and_exits_zero(berth):
    proc = berth("run", "--rm", "busybox", "echo", "hello from berth")
    assert proc.stdout == b"hello from berth\n"
    assert proc.returncode == 0


def test_pid_namespace_shows_only_the_container_processes(berth):
    out = berth.out("run", "--rm", "busybox", "ps", "-o", "pid,args")
    lines = out.strip().splitlines()[1:]
    assert [line.split()[0] for line in lines] == ["1"]
    assert lines[0].split(None, 1)[1] == "ps -o pid,args"


def test_every_namespace_differs_from_the_host(berth):
    kinds = ["pid", "mnt", "uts", "ipc", "net", "cgroup"]
    script = "; ".join(f"readlink /proc/1/ns/{k}" for k in kinds)
    inside = berth.out("run", "--rm", "busybox", "sh", "-c", script).split()
    host = [os.readlink(f"/proc/self/ns/{k}") for k in kinds]
    for kind, a, b in zip(kinds, inside, host):
        assert a != b, f"{kind} namespace is shared with the host"


def test_hostname_defaults_to_the_short_id_and_can_be_set(berth):
    out = berth.out("run", "--rm", "busybox", "hostname").strip()
    assert len(out) == 12 and all(c in "0123456789abcdef" for c in out)
    assert berth.out("run", "--rm", "--hostname", "web1", "busybox", "cat",
                     "/etc/hostname").strip() == "web1"


def test_hostname_change_inside_is_invisible_on_the_host(berth):
    before = socket.gethostname()
    out = berth.out("run", "--rm", "--cap-add", "SYS_ADMIN", "--security-opt",
                    "seccomp=unconfined", "busybox", "sh", "-c",
                    "hostname changed-inside && hostname")
    assert out.strip() == "changed-inside"
    assert socket.gethostname() == before


def test_network_namespace_has_only_loopback_and_it_is_up(berth):
    out = berth.out("run", "--rm", "--network", "none", "busybox", "sh", "-c",
                    "ls /sys/class/net; ip -o link")
    lines = out.split()
    assert lines[0] == "lo" and "eth0" not in out
    assert "UP" in out.split("lo:", 1)[1]
    assert berth.out("run", "--rm", "--network", "none", "busybox", "ls",
                     "/sys/class/net").split() == ["lo"]


def test_host_network_shares_the_host_interfaces(berth):
    out = berth.out("run", "--rm", "--network", "host", "busybox", "ls", "/sys/class/net")
    assert sorted(out.split()) == sorted(os.listdir("/sys/class/net"))


def test_file_written_in_container_is_absent_on_host_and_in_the_image(berth, tmp_path):
    marker = f"/berth-test-{os.getpid()}"
    berth("run", "--rm", "busybox", "sh", "-c", f"echo x > {marker} && test -f {marker}")
    assert not os.path.exists(marker)
    proc = berth("run", "--rm", "busybox", "test", "-e", marker, check=False)
    assert proc.returncode == 1


def test_upper_dir_keeps_changes_until_rm(berth):
    name = f"keep-{os.getpid()}"
    berth("run", "--name", name, "busybox", "sh", "-c", "echo kept > /data")
    record = json.loads(berth.out("inspect", name))[0]
    upper = record["GraphDriver"]["Data"]["UpperDir"]
    with open(os.path.join(upper, "data")) as f:
        assert f.read() == "kept\n"
    berth("rm", name)
    assert not os.path.exists(upper)


def test_read_only_root_blocks_writes_but_not_tmpfs(berth):
    proc = berth("run", "--rm", "--read-only", "busybox", "touch", "/x", check=False)
    assert proc.returncode == 1
    assert b"Read-only file system" in proc.stderr
    berth("run", "--rm", "--read-only", "--tmpfs", "/scratch", "busybox", "touch", "/scratch/x")
    berth("run", "--rm", "--read-only", "busybox", "touch", "/dev/shm/x")


def test_mount_propagation_is_private(berth):
    out = berth.out("run", "--rm", "busybox", "cat", "/proc/self/mountinfo")
    root_line = next(line for line in out.splitlines() if line.split()[4] == "/")
    assert "shared:" not in root_line


def test_etc_files_are_the_containers_own(berth):
    out = berth.out("run", "--rm", "--hostname", "h1", "busybox", "sh", "-c",
                    "cat /etc/hosts; echo ---; cat /etc/resolv.conf")
    hosts, resolv = out.split("---\n")
    assert "127.0.0.1\tlocalhost" in hosts
    assert "nameserver" in resolv
    assert "nameserver 127." not in resolv


def test_proc_and_sys_are_masked_and_read_only(berth):
    script = ("cat /proc/keys | wc -c; ls /sys/firmware | wc -l; "
              "echo 1 > /proc/sys/kernel/domainname 2>&1 || echo ro-proc-sys; "
              "touch /sys/x 2>&1 || echo ro-sys; "
              "grep ' /proc/sys ' /proc/self/mountinfo | cut -d' ' -f6")
    out = berth.out("run", "--rm", "busybox", "sh", "-c", script).split("\n")
    assert out[0].strip() == "0"  # /proc/keys is /dev/null
    assert out[1].strip() == "0"  # /sys/firmware is an empty tmpfs
    assert "ro-proc-sys" in out
    assert "ro-sys" in out
    assert out[-2].startswith("ro,")


def test_dev_has_only_the_minimal_devices(berth):
    out = berth.out("run", "--rm", "busybox", "ls", "/dev")
    assert sorted(out.split()) == sorted(["console", "fd", "full", "mqueue", "null", "ptmx", "pts",
                                         "random", "shm", "stderr", "stdin", "stdout", "tty",
                                         "urandom", "zero"]) or \
        sorted(out.split()) == sorted(["fd", "full", "mqueue", "null", "ptmx", "pts", "random",
                                      "shm", "stderr", "stdin", "stdout", "tty", "urandom", "zero"])


def test_device_cgroup_lets_mknod_succeed_but_blocks_open(berth):
    out = berth.out("run", "--rm", "busybox", "sh", "-c",
                    "mknod /tmp/sda b 8 0 && echo made; head -c1 /tmp/sda >/dev/null 2>&1 || "
                    "echo blocked")
    assert out.split() == ["made", "blocked"]


def test_cgroup_namespace_shows_the_container_cgroup_as_root(berth):
    out = berth.out("run", "--rm", "busybox", "cat", "/proc/self/cgroup")
    for line in out.strip().splitlines():
        assert line.rsplit(":", 1)[1] == "/", line
