"""Privileges: capabilities, seccomp, no_new_privs, --privileged, as Docker sets them."""

from __future__ import annotations

DOCKER_DEFAULT_CAPS = 0xA80425FB  # the 14 capabilities of Docker's default set


def _status(berth, *flags: str) -> dict:
    out = berth.out("run", "--rm", *flags, "busybox", "cat", "/proc/self/status")
    fields = {}
    for line in out.splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def test_default_capabilities_are_dockers_set(berth):
    st = _status(berth)
    for key in ("CapEff", "CapPrm", "CapBnd"):
        assert int(st[key], 16) == DOCKER_DEFAULT_CAPS, key
    assert int(st["CapInh"], 16) == 0
    assert int(st["CapAmb"], 16) == 0


def test_cap_add_and_cap_drop(berth):
    st = _status(berth, "--cap-add", "NET_ADMIN", "--cap-drop", "chown")
    eff = int(st["CapEff"], 16)
    assert eff & (1 << 12)  # NET_ADMIN
    assert not eff & (1 << 0)  # CHOWN
    assert int(_status(berth, "--cap-drop", "ALL")["CapBnd"], 16) == 0


def test_seccomp_filter_is_on_by_default_and_off_when_unconfined(berth):
    assert _status(berth)["Seccomp"] == "2"
    assert _status(berth, "--security-opt", "seccomp=unconfined")["Seccomp"] == "0"


def test_no_new_privileges_on_request_only(berth):
    assert _status(berth)["NoNewPrivs"] == "0"
    assert _status(berth, "--security-opt", "no-new-privileges")["NoNewPrivs"] == "1"
    assert _status(berth, "--security-opt", "no-new-privileges")["Seccomp"] == "2"


def test_mount_and_unshare_fail_by_default(berth):
    proc = berth("run", "--rm", "busybox", "mount", "-t", "tmpfs", "none", "/mnt", check=False)
    assert proc.returncode != 0
    assert b"denied" in proc.stderr or b"not permitted" in proc.stderr
    proc = berth("run", "--rm", "busybox", "unshare", "-U", "true", check=False)
    assert proc.returncode != 0


def test_mount_and_unshare_succeed_when_privileged(berth):
    berth("run", "--rm", "--privileged", "busybox", "sh", "-c",
          "mkdir -p /mnt && mount -t tmpfs none /mnt && touch /mnt/x && umount /mnt")
    berth("run", "--rm", "--privileged", "busybox", "unshare", "-U", "true")


def test_privileged_has_every_capability_and_no_masks(berth):
    st = _status(berth, "--privileged")
    with open("/proc/self/status") as f:
        held = next(line.split()[1] for line in f if line.startswith("CapBnd:"))
    # every capability berth itself holds (root here may lack CAP_SYS_RESOURCE)
    assert int(st["CapEff"], 16) == int(held, 16)
    assert st["Seccomp"] == "0"
    out = berth.out("run", "--rm", "--privileged", "busybox", "sh", "-c",
                    "grep -c ' /proc/keys ' /proc/self/mountinfo; true")
    assert out.strip() == "0"


def test_privileged_still_has_private_namespaces(berth):
    out = berth.out("run", "--rm", "--privileged", "--network", "none", "busybox", "sh", "-c",
                    "ps -o pid,comm; ls /sys/class/net")
    lines = out.strip().splitlines()
    assert lines[0].split() == ["PID", "COMMAND"]
    assert [line.split()[1] for line in lines[1:-1]] == ["sh", "ps"]
    assert lines[-1] == "lo"


def test_keyctl_is_blocked_by_the_default_profile(berth):
    # busybox has no keyctl applet; the masked /proc/keys plus seccomp's EPERM are checked
    # in tests/test_seccomp.py; here we check the profile reaches the container's process
    out = berth.out("run", "--rm", "busybox", "grep", "Seccomp_filters", "/proc/self/status")
    assert out.split()[1] == "1"


def test_custom_seccomp_profile_file(berth, tmp_path):
    profile = tmp_path / "profile.json"
    profile.write_text('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": '
                       '[{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}')
    proc = berth("run", "--rm", "--security-opt", f"seccomp={profile}", "busybox", "mkdir", "/x",
                 check=False)
    assert proc.returncode == 1
    assert b"not permitted" in proc.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    proc = berth("run", "--rm", "--security-opt", f"seccomp={bad}", "busybox", "true", check=False)
    assert proc.returncode == 125
    assert proc.stderr.count(b"\n") == 1


def test_non_root_user_has_no_effective_capabilities(berth):
    st = _status(berth, "-u", "nobody")
    assert int(st["CapEff"], 16) == 0
    assert int(st["CapBnd"], 16) == DOCKER_DEFAULT_CAPS
    assert st["Uid"].split()[0] == "65534"
