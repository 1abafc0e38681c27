"""version and info."""

from __future__ import annotations

import os
import platform
import sys

from berth.cli.flags import BOOL, VALUE, Flag, parse

HELP_FLAG = Flag(("--help",), BOOL, "Print usage")
FORMAT = Flag(("-f", "--format"), VALUE, "Format output using a Go template")


def version_dict() -> dict:
    from berth import __version__

    return {
        "Version": __version__,
        "ApiVersion": "1.43",
        "Os": "linux",
        "Arch": platform.machine(),
        "KernelVersion": platform.release(),
        "PythonVersion": platform.python_version(),
        "Runtime": "berth (built in)",
    }


def cmd_version(g, argv) -> int:
    values, _ = parse(argv, (FORMAT, HELP_FLAG))
    info = version_dict()
    if values["format"]:
        from berth.cli.template import render

        sys.stdout.write(render(values["format"], {"Client": info, "Server": info}) + "\n")
        return 0
    sys.stdout.write(
        "Client/Server: berth\n"
        f" Version:        {info['Version']}\n"
        f" API version:    {info['ApiVersion']}\n"
        f" Python version: {info['PythonVersion']}\n"
        f" OS/Arch:        {info['Os']}/{info['Arch']}\n"
        f" Kernel:         {info['KernelVersion']}\n")
    return 0


def info_dict(root: str) -> dict:
    from berth.container import Containers
    from berth.image import ImageStore
    from berth.runtime import cgroups

    images = ImageStore(root)
    records = Containers(root, images).list() if os.path.isdir(root) else []
    states = [r["State"]["Status"] for r in records]
    try:
        lay = cgroups.layout()
        cgroup_version = "2" if lay.is_v2 else "1"
        driver = "cgroupfs" + (" (hybrid)" if lay.unified and not lay.is_v2 else "")
    except Exception:  # noqa: BLE001 - info must work on odd hosts
        cgroup_version, driver = "unknown", "none"
    seccomp = os.path.exists("/proc/self/status") and "Seccomp:" in open("/proc/self/status").read()
    return {
        "Containers": len(records),
        "ContainersRunning": states.count("running"),
        "ContainersPaused": states.count("paused"),
        "ContainersStopped": states.count("exited") + states.count("created"),
        "Images": len(images.list()) if os.path.isdir(root) else 0,
        "Driver": "overlay",
        "CgroupDriver": driver,
        "CgroupVersion": cgroup_version,
        "KernelVersion": platform.release(),
        "OperatingSystem": _os_name(),
        "OSType": "linux",
        "Architecture": platform.machine(),
        "NCPU": os.cpu_count(),
        "MemTotal": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "DockerRootDir": root,
        "SecurityOptions": ["name=seccomp,profile=builtin"] if seccomp else [],
        "ServerVersion": version_dict()["Version"],
        "DefaultRuntime": "berth",
    }


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"


def cmd_info(g, argv) -> int:
    values, _ = parse(argv, (FORMAT, HELP_FLAG))
    info = info_dict(g.root)
    if values["format"]:
        from berth.cli.template import render

        sys.stdout.write(render(values["format"], info) + "\n")
        return 0
    mem = info["MemTotal"] / (1 << 30)
    sys.stdout.write(
        f"Containers: {info['Containers']}\n"
        f" Running: {info['ContainersRunning']}\n"
        f" Paused: {info['ContainersPaused']}\n"
        f" Stopped: {info['ContainersStopped']}\n"
        f"Images: {info['Images']}\n"
        f"Server Version: {info['ServerVersion']}\n"
        f"Storage Driver: {info['Driver']}\n"
        f"Cgroup Driver: {info['CgroupDriver']}\n"
        f"Cgroup Version: {info['CgroupVersion']}\n"
        f"Security Options:\n" + "".join(f" {s}\n" for s in info["SecurityOptions"]) +
        f"Kernel Version: {info['KernelVersion']}\n"
        f"Operating System: {info['OperatingSystem']}\n"
        f"OSType: {info['OSType']}\n"
        f"Architecture: {info['Architecture']}\n"
        f"CPUs: {info['NCPU']}\n"
        f"Total Memory: {mem:.2f}GiB\n"
        f"Berth Root Dir: {info['DockerRootDir']}\n")
    return 0
