"""berth's OCI runtime: a runtime-spec config plus root filesystem mounts -> a process.

It knows nothing of images, containers' names or the CLI.

    process   ContainerProcess: cgroup, stage A, namespaces, the container's PID 1
    init      what runs inside the new namespaces up to exec
    rootfs    mounts, devices, pivot_root, masked paths
    cgroups   v1, hybrid and v2; devices: the v2 device filter (BPF)
    caps, seccomp   the security context; exec: a process joining a running container

Importing this package costs nothing: names are loaded on first use (PEP 562), so a
caller that only needs `caps` or `cgroups` does not pay for the rest.
"""

from __future__ import annotations

_PROCESS = ("ContainerProcess", "ExitStatus", "Stdio", "close_fds_except", "_Pipes", "_recv_fd",
            "_start_error", "_read_all", "_read_exact", "_waitpid", "_kill_and_reap", "_close")


def __getattr__(name: str):
    if name in _PROCESS:
        from berth.runtime import process

        return getattr(process, name)
    raise AttributeError(f"module 'berth.runtime' has no attribute {name!r}")
