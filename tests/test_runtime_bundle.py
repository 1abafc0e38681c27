"""The runtime alone, over an OCI bundle, side by side with runc on the same bundle."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, berth_cgroups

PROBE = ("hostname; ls /dev | tr '\\n' ' '; echo; grep -E 'Cap(Eff|Bnd)|NoNewPrivs' "
         "/proc/self/status; id; ls /sys/class/net; ulimit -n")


def _runtime(*args, **kw):
    return subprocess.run([sys.executable, "-m", "berth.runtime", *args], capture_output=True,
                          env={**os.environ, "PYTHONPATH": REPO}, **kw)


@pytest.fixture
def bundle(tmp_path, busybox_tar):
    root = tmp_path / "bundle"
    (root / "rootfs").mkdir(parents=True)
    subprocess.run(["tar", "-C", str(root / "rootfs"), "-xf", busybox_tar], check=True)
    if shutil.which("runc"):
        subprocess.run(["runc", "spec"], cwd=root, check=True)
        config = json.loads((root / "config.json").read_text())
    else:  # the same shape runc spec writes
        config = json.loads(SPEC)
    config["process"]["terminal"] = False
    config["process"]["args"] = ["sh", "-c", PROBE]
    config["root"]["readonly"] = False
    (root / "config.json").write_text(json.dumps(config))
    return str(root)


def test_runtime_runs_a_bundle_like_runc(bundle):
    ours = _runtime("run", "--bundle", bundle, f"t{os.getpid()}", timeout=60)
    assert ours.returncode == 0, ours.stderr
    if not shutil.which("runc"):
        pytest.skip("runc is not installed: nothing to compare with")
    theirs = subprocess.run(["runc", "run", "--bundle", bundle, f"r{os.getpid()}"],
                            capture_output=True, timeout=60)
    assert theirs.returncode == 0, theirs.stderr
    assert ours.stdout.decode() == theirs.stdout.decode()
    assert not [c for c in berth_cgroups("berth-runtime") if c.endswith(f"t{os.getpid()}")]


def test_runtime_exit_code_and_missing_bundle(bundle, tmp_path):
    config = json.loads(open(os.path.join(bundle, "config.json")).read())
    config["process"]["args"] = ["sh", "-c", "exit 7"]
    open(os.path.join(bundle, "config.json"), "w").write(json.dumps(config))
    assert _runtime("run", "--bundle", bundle, "exit7", timeout=60).returncode == 7
    missing = _runtime("run", "--bundle", str(tmp_path / "nothing"), "x", timeout=60)
    assert missing.returncode == 125
    assert b"is " in missing.stderr and b"an OCI bundle" in missing.stderr


SPEC = """{"ociVersion": "1.0.2", "process": {"terminal": true, "user": {"uid": 0, "gid": 0},
 "args": ["sh"], "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
 "TERM=xterm"], "cwd": "/", "capabilities": {"bounding": ["CAP_AUDIT_WRITE", "CAP_KILL",
 "CAP_NET_BIND_SERVICE"], "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
 "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"], "ambient":
 ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]}, "rlimits": [{"type": "RLIMIT_NOFILE",
 "hard": 1024, "soft": 1024}], "noNewPrivileges": true}, "root": {"path": "rootfs",
 "readonly": true}, "hostname": "runc", "mounts": [{"destination": "/proc", "type": "proc",
 "source": "proc"}, {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options":
 ["nosuid", "strictatime", "mode=755", "size=65536k"]}, {"destination": "/dev/pts", "type":
 "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666",
 "mode=0620", "gid=5"]}, {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
 "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}, {"destination":
 "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
 {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec",
 "nodev", "ro"]}], "linux": {"resources": {"devices": [{"allow": false, "access": "rwm"}]},
 "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"},
 {"type": "mount"}], "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys"],
 "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/sys"]}}"""
