"""The engine's containers.

    service   the Containers service: create, start, stop, remove, records (heavy)
    spec      image config + run options -> OCI runtime spec (pure)
    monitor   the per-container monitor; hub: the process that forks monitors
    relay     a monitor's side of the container's stdio: the log and attached clients
    client    the CLI's side of hub and monitors (frames: berth.ipc)
    store, users, names, logs, attach, health: the rest of a container's life

This package's own import is free: `from berth.container import Containers` loads the
service on first use (PEP 562), so the CLI can use `spec` or `client` without it.
"""

from __future__ import annotations

_SERVICE = ("Containers", "new_id", "resolv_conf", "host_devices", "MONITOR_DIED",
            "CGROUP_PARENT", "HOSTS_BASE")


def __getattr__(name: str):
    if name in _SERVICE:
        from berth.container import service

        return getattr(service, name)
    raise AttributeError(f"module 'berth.container' has no attribute {name!r}")
