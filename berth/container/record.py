"""A new container's record: the Docker-inspect-shaped dict stored as container.json.

Pure: built from what the engine decided (image, options, spec, paths, network), no disk
and no kernel. A Docker Engine API layer can serve these records nearly as they are.
"""

from __future__ import annotations

import os

from berth.container import spec as specmod
from berth.container.store import ZERO_TIME
from berth.image import Image, now_rfc3339
from berth.network import settings as netset
from berth.oci import runtime as rt


def new_record(*, cid: str, name: str, cdir: str, image: Image, image_ref: str | None,
               opts: specmod.RunOptions, spec: rt.Spec, lowerdirs: list[str], auto_remove: bool,
               network: dict | None, joined: dict | None) -> dict:
    cfg = image.config.config
    paths = {n: os.path.join(cdir, n) for n in ("hostname", "hosts", "resolv.conf")}
    return {
        "Id": cid,
        "Created": now_rfc3339(),
        "Path": spec.process.args[0],
        "Args": list(spec.process.args[1:]),
        "State": {"Status": "created", "Running": False, "Paused": False, "Restarting": False,
                  "OOMKilled": False, "Dead": False, "Pid": 0, "ExitCode": 0, "Error": "",
                  "StartedAt": ZERO_TIME, "FinishedAt": ZERO_TIME},
        "Image": image.id,
        "ResolvConfPath": paths["resolv.conf"],
        "HostnamePath": paths["hostname"],
        "HostsPath": paths["hosts"],
        "LogPath": os.path.join(cdir, f"{cid}-json.log"),
        "Name": "/" + name,
        "RestartCount": 0,
        "Driver": "overlay",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": None,
        "HostConfig": _host_config(opts, auto_remove,
                                   f"container:{joined['Id']}" if joined else None),
        "GraphDriver": {"Name": "overlay", "Data": {
            "LowerDir": ":".join(lowerdirs), "UpperDir": os.path.join(cdir, "diff"),
            "WorkDir": os.path.join(cdir, "work"), "MergedDir": os.path.join(cdir, "merged")}},
        "Mounts": [{"Type": "bind", "Source": b.source, "Destination": b.destination,
                    "Mode": "ro" if b.readonly else "", "RW": not b.readonly,
                    "Propagation": b.propagation} for b in opts.binds]
                  + [{"Type": "volume", "Name": v.name, "Source": v.source,
                      "Destination": v.destination, "Driver": "local",
                      "Mode": "ro" if v.readonly else "", "RW": not v.readonly,
                      "Propagation": ""} for v in opts.volumes]
                  + [{"Type": "tmpfs", "Source": "", "Destination": d, "Mode": o, "RW": True,
                      "Propagation": ""} for d, o in opts.tmpfs],
        "Config": {
            "Hostname": spec.hostname, "Domainname": opts.domainname or "",
            "User": opts.user if opts.user is not None else (cfg.user or ""),
            "AttachStdin": opts.interactive, "AttachStdout": True, "AttachStderr": True,
            "Tty": opts.tty, "OpenStdin": opts.interactive, "StdinOnce": opts.interactive,
            # the image's and the user's, as Docker shows it (not HOSTNAME, HOME, TERM, which the
        # engine adds for the process): commit and inspect both read it
        "Env": list(specmod.merge_env(tuple(cfg.env), opts.env)),
            "Cmd": list(opts.command) if opts.command else (list(cfg.cmd) if cfg.cmd and
                                                            opts.entrypoint is None else None),
            "Image": image_ref or image.id,
            "Volumes": cfg.volumes,
            "WorkingDir": opts.workdir or cfg.working_dir or "",
            "Entrypoint": list(opts.entrypoint) if opts.entrypoint is not None else
            (list(cfg.entrypoint) if cfg.entrypoint else None),
            "OnBuild": list(cfg.on_build) or None,
            "Labels": {**(cfg.labels or {}), **opts.labels},
            **({"StopSignal": opts.stop_signal or cfg.stop_signal}
               if opts.stop_signal or cfg.stop_signal else {}),
            **({"StopTimeout": opts.stop_timeout} if opts.stop_timeout is not None else {}),
            **({"Healthcheck": opts.health or _health_dict(cfg.healthcheck)}
               if opts.health or cfg.healthcheck else {}),
            **({"ExposedPorts": exposed} if (exposed := _exposed_ports(cfg, opts)) else {}),
        },
        "NetworkSettings": netset.empty_settings(
            {network["Name"]: netset.endpoint_settings(network["Id"], opts.aliases, opts.ip)}
            if network is not None else {}),
        "Berth": {"ImageChain": image.chain_ids, "Init": opts.init},
    }


def _health_dict(h) -> dict:
    return {"Test": list(h.test), "Interval": h.interval or 0, "Timeout": h.timeout or 0,
            "StartPeriod": h.start_period or 0, "Retries": h.retries or 0}


def _restart_policy(text: str) -> dict:
    name, _, count = text.partition(":")
    return {"Name": "" if name == "no" else name, "MaximumRetryCount": int(count or 0)}


def _exposed_ports(cfg, opts: specmod.RunOptions) -> dict:
    """Config.ExposedPorts: the image's, --expose and every -p port, as Docker merges them."""
    out = dict.fromkeys(cfg.exposed_ports or {}, {})
    out.update(dict.fromkeys(opts.expose, {}))
    out.update(dict.fromkeys((f"{p.container_port}/{p.proto}" for p in opts.publish), {}))
    return {k: {} for k in out}


def _host_config(opts: specmod.RunOptions, auto_remove: bool, network_mode: str | None) -> dict:
    return {
        "RestartPolicy": _restart_policy(opts.restart),
        "LogConfig": {"Type": "json-file", "Config": dict(opts.log_opts)},
        "Binds": [f"{b.source}:{b.destination}{':ro' if b.readonly else ''}" for b in opts.binds]
        or None,
        "NetworkMode": network_mode or ("bridge" if opts.network == "default" else opts.network),
        "PortBindings": netset.port_bindings(opts.publish) or None,
        "PublishAllPorts": opts.publish_all,
        "Dns": list(opts.dns) or None,
        "DnsSearch": list(opts.dns_search) or None,
        "DnsOptions": list(opts.dns_options) or None,
        "ExtraHosts": list(opts.extra_hosts) or None,
        "AutoRemove": auto_remove,
        "Privileged": opts.privileged,
        "ReadonlyRootfs": opts.read_only,
        "CapAdd": list(opts.cap_add) or None,
        "CapDrop": list(opts.cap_drop) or None,
        "SecurityOpt": (["no-new-privileges"] if opts.no_new_privileges else [])
        + (["seccomp=unconfined"] if opts.seccomp_unconfined else []) or None,
        "Memory": opts.memory or 0,
        "MemorySwap": opts.memory_swap if opts.memory_swap is not None else
        ((opts.memory * 2) if opts.memory else 0),
        "MemoryReservation": opts.memory_reservation or 0,
        "NanoCpus": int(opts.cpus * 1e9) if opts.cpus else 0,
        "CpuShares": opts.cpu_shares or 0,
        "CpuPeriod": opts.cpu_period or 0,
        "CpuQuota": opts.cpu_quota or 0,
        "CpusetCpus": opts.cpuset_cpus or "",
        "CpusetMems": opts.cpuset_mems or "",
        "PidsLimit": opts.pids_limit,
        "OomKillDisable": opts.oom_kill_disable,
        "Tmpfs": {d: o for d, o in opts.tmpfs} or None,
        "Ulimits": [{"Name": u.type.removeprefix("RLIMIT_").lower(), "Soft": u.soft, "Hard": u.hard}
                    for u in opts.ulimits] or None,
        "Init": opts.init,
        "ShmSize": opts.shm_size,
        "Sysctls": opts.sysctls or None,
        "IpcMode": opts.ipc,
        "PidMode": "",
        "UTSMode": "",
        "OomScoreAdj": opts.oom_score_adj or 0,
        "GroupAdd": list(opts.group_add) or None,
    }
