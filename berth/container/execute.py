"""`berth exec`: one more process in a running container, with the container's security.

The engine's part is deciding what the process is (command, environment, user, working
directory, terminal) from the container's spec and the flags; berth.runtime.exec does
the namespaces, cgroup and security. The CLI process waits for it and relays its tty.
"""

from __future__ import annotations

import os

from berth import errors
from berth.container.spec import merge_env
from berth.oci.record import replace


def exec_process(spec, record: dict, command: list[str], *, env=(), user=None, workdir=None,
                 tty=False, privileged=False):
    """The OCI process for an exec, derived from the container's own (`spec`'s) process."""
    process = spec.process
    if user is not None:
        from berth.container import users
        from berth.snapshot import read_layered

        gd = record["GraphDriver"]["Data"]
        layers = [gd["UpperDir"]] + [d for d in gd["LowerDir"].split(":") if d]
        passwd = read_layered(layers, "/etc/passwd")
        group = read_layered(layers, "/etc/group")
        who = users.resolve(user, passwd.decode(errors="replace") if passwd else None,
                            group.decode(errors="replace") if group else None)
        process = replace(process, user=replace(process.user, uid=who.uid, gid=who.gid,
                                                additional_gids=who.additional_gids))
        if process.capabilities is not None and who.uid != 0:
            process = replace(process, capabilities=replace(process.capabilities, effective=(),
                                                            permitted=()))
    if privileged:
        from berth.runtime import caps as _caps

        every = _caps.all_caps()
        process = replace(process, capabilities=replace(
            process.capabilities, bounding=every, effective=every, permitted=every))
        spec = replace(spec, linux=replace(spec.linux, seccomp=None))
    base_env = tuple(e for e in process.env if not e.startswith("TERM="))
    process = replace(process, args=tuple(command), cwd=workdir or process.cwd, terminal=tty,
                      env=merge_env(base_env, ("TERM=xterm",) if tty else (), tuple(env)))
    return spec, process


def prepare(root: str, ref: str, command: list[str], *, stdio, env=(), user=None, workdir=None,
            tty=False, privileged=False, console_size=None):
    """The ExecProcess for `command` in the container `ref`, and the start time its target
    pid must still have. Only the record and the spec are read, not the whole Containers
    service: exec's latency is mostly imports. A record that says running for a container
    that is gone is caught by the runtime, which checks the pid's start time before
    joining anything."""
    from berth.container.store import ContainerStore
    from berth.oci.runtime import Spec
    from berth.runtime.exec import ExecProcess

    store = ContainerStore(root)
    record = store.read(store.lookup(ref))
    with open(os.path.join(store.dir(record["Id"]), "config.json"), "rb") as f:
        container_spec = Spec.from_json(f.read())
    state = record["State"]
    if not state["Running"]:
        raise errors.Conflict(f"container {record['Id'][:12]} is not running")
    if state.get("Paused"):
        raise errors.Conflict(f"container {record['Id'][:12]} is paused, unpause the container "
                              "before exec")
    spec, process = exec_process(container_spec, record, command, env=env, user=user,
                                 workdir=workdir, tty=tty, privileged=privileged)
    target = record["Berth"].get("Process") or [state["Pid"], None]
    proc = ExecProcess(state["Pid"], spec, process, stdio=stdio,
                       seccomp_cache=os.path.join(root, "cache", "seccomp"),
                       console_size=console_size)
    return proc, target[1]


def run_exec(root: str, ref: str, command: list[str], *, env=(), user=None, workdir=None,
             tty=False, interactive=False, detach=False, privileged=False, forward=()) -> int:
    """Run `command` in the container from this process; return its exit code (0 at once
    when detached). `forward` names the signals this process passes on to the command."""
    from berth.runtime import Stdio

    if detach or tty:
        stdio = Stdio()
    else:
        stdio = Stdio(0 if interactive else None, 1, 2)
    size = None
    if tty and not detach:
        from berth.container.attach import window_size

        size = window_size(1) or window_size(0)
    proc, start_time = prepare(root, ref, command, stdio=stdio, env=env, user=user,
                               workdir=workdir, tty=tty, privileged=privileged, console_size=size)
    if detach:
        # a detached exec must outlive us: double-fork so nothing waits for it here
        pid = os.fork()
        if pid == 0:
            os.setsid()
            try:
                proc.start(start_time)
                proc.wait()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        return 0
    import _signal as signal  # signal.py's enums cost an exec ~2 ms of imports

    handlers = {}
    if not tty:
        for name in forward:
            sig = getattr(signal, name)
            handlers[sig] = signal.signal(sig, lambda signum, _f: proc.kill(signum))
    try:
        proc.start(start_time)
        if tty:
            from berth.container.attach import relay

            relay(proc.console, 0, 1, interactive)
        return proc.wait()
    finally:
        for sig, old in handlers.items():
            signal.signal(sig, old)
