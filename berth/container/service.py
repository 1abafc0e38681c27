"""The engine's containers: create from an image, start, record the exit, remove.

A container's record (container.json) is shaped like `docker inspect` output from the
start, so a Docker Engine API layer can serve it nearly as is. The process that starts
a container and waits for it (the CLI for a foreground run) is its monitor; its pid and
start time are recorded so any berth command can tell a live container from one whose
monitor died (the container dies with it, by PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import os
import signal
import time

from berth import errors
from berth.container import spec as specmod
from berth.container import users
from berth.container.networking import ContainerNetworking, write_resolv_and_hosts
from berth.container.networking import resolv_conf  # noqa: F401 - re-exported
from berth.container.record import new_record
from berth.container.store import ZERO_TIME, ContainerStore
from berth.proc import process_start as _proc_start
from berth.container.volumes import remove_anonymous_volumes, resolve_volumes
from berth.image import Image, ImageStore, now_rfc3339
from berth.network.settings import DEFAULT_DNS, HOSTS_BASE  # noqa: F401 - re-exported
from berth.oci import runtime as rt
from berth.snapshot import overlay_mount, read_layered
from berth.trace import trace

MONITOR_DIED = "the container's monitor process died"
CGROUP_PARENT = "berth"  # like dockerd's --cgroup-parent; BERTH_CGROUP_PARENT overrides it


def new_id() -> str:
    return os.urandom(32).hex()


def host_devices() -> tuple[rt.Device, ...]:
    """Every device node of the host, for --privileged."""
    import stat

    out = []
    for dirpath, dirnames, filenames in os.walk("/dev"):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in
                       ("/dev/pts", "/dev/shm", "/dev/mqueue", "/dev/.lxc", "/dev/.udev")]
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if path in ("/dev/console", "/dev/ptmx", "/dev/tty"):
                continue
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                kind = "c" if stat.S_ISCHR(st.st_mode) else "b"
                out.append(rt.Device(kind, path, os.major(st.st_rdev), os.minor(st.st_rdev),
                                     stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid))
    return tuple(out)


class Containers:
    def __init__(self, root: str, images: ImageStore) -> None:
        self.root = root
        self.images = images
        self.store = ContainerStore(root)
        self.seccomp_cache = os.path.join(root, "cache", "seccomp")
        self.cgroup_parent = (os.environ.get("BERTH_CGROUP_PARENT") or CGROUP_PARENT).strip("/")
        self.net = ContainerNetworking(root, self.store, self.get, self.running)

    # --- create ----------------------------------------------------------------------

    def create(self, image: Image, opts: specmod.RunOptions, **create_args) -> dict:
        """Make the container's record, directories and runtime spec; start nothing."""
        return self._create(image, opts, **create_args)[0]

    def _create(self, image: Image, opts: specmod.RunOptions, *, name: str | None = None,
                image_ref: str | None = None, auto_remove: bool = False,
                seccomp_profile_text: str | None = None,
                cid: str | None = None) -> tuple[dict, rt.Spec]:
        store = self.store
        store.ensure()
        lowerdirs = self.images.ensure_unpacked(image)
        cid = cid or new_id()
        if name is None:
            from berth.container import names

            name = names.generate(lambda n: os.path.lexists(os.path.join(store.names, n)))
        store.reserve_name(name, cid)
        cdir = store.dir(cid)
        volumes = None
        if opts.volumes or opts.volumes_from or image.config.config.volumes:
            from berth.volume import VolumeStore

            volumes = VolumeStore(self.root)
        made: list[str] = []  # anonymous volumes made for this container
        try:
            os.makedirs(cdir, mode=0o710)
            for sub in ("diff", "work", "merged"):
                os.mkdir(os.path.join(cdir, sub), 0o755)
            if volumes is None:
                record, spec = self._build(image, opts, cid, name, cdir, lowerdirs, image_ref,
                                           auto_remove, seccomp_profile_text)
                store.write(record)
            else:
                # shared: `volume rm` cannot take a volume between its lookup and the record
                with volumes.lock(shared=True):
                    opts = resolve_volumes(volumes, image, opts, cdir, lowerdirs, made,
                                           self.get)
                    record, spec = self._build(image, opts, cid, name, cdir, lowerdirs,
                                               image_ref, auto_remove, seccomp_profile_text)
                    store.write(record)
        except BaseException:
            store.delete(cid, name)
            for volume in made:
                volumes._delete(volume)
            raise
        return record, spec

    def spare_prefix(self) -> str:
        """Spare cgroups are named after their root: roots may share a cgroup parent."""
        from zlib import crc32

        return f".spare-{crc32(os.path.abspath(self.root).encode()):08x}-"

    def spare(self, detached: bool = True):
        """A prepared stage A in a cgroup of its own, waiting for `run(..., spare=)`."""
        from berth.runtime import ContainerProcess

        proc = ContainerProcess(cgroup_path=f"{self.cgroup_parent}/{self.spare_prefix()}"
                                            f"{new_id()[:16]}",
                                seccomp_cache=self.seccomp_cache, detached=detached)
        proc.prepare()
        proc.wait_joined()  # a spare is ready when its stage A is in the cgroup
        return proc

    def run(self, image_ref: str, opts: specmod.RunOptions, stdio, *, console_size=None,
            detached: bool = False, spare=None, **create_args):
        """create + start, with the slow cgroup join kept off the critical path.

        Joining a cgroup waits for an RCU grace period, so stage A is forked into the new
        cgroup before the image is even looked up; or, better, a `spare` made earlier by
        spare() is renamed into this container's cgroup. Returns the record and the
        started ContainerProcess (this process is its monitor).
        """
        from berth.runtime import ContainerProcess

        cid = new_id()
        resources = specmod.resources(opts, specmod.device_rules(opts))
        if spare is not None:
            proc = spare
            proc.stdio, proc.init, proc.console_size = stdio, opts.init, console_size
            try:
                proc.retarget(f"{self.cgroup_parent}/{cid}", resources)
            except BaseException:
                proc.abort()
                raise
        else:
            proc = ContainerProcess(
                cgroup_path=f"{self.cgroup_parent}/{cid}", resources=resources, stdio=stdio,
                init=opts.init, seccomp_cache=self.seccomp_cache, console_size=console_size,
                detached=detached)
            proc.prepare()
        trace("run: prepared")
        try:
            image = self.resolve_image(image_ref)
            # the spec as built, not read back from config.json (~1 ms)
            record, spec = self._create(image, opts, cid=cid, image_ref=image_ref, **create_args)
            trace("run: created")
        except BaseException:
            proc.abort()
            raise
        self._start(record, proc, spec)
        return record, proc

    def resolve_image(self, text: str) -> Image:
        try:
            return self.images.resolve(text)
        except errors.NotFound:
            from berth.oci import reference

            try:
                shown = reference.parse(text).familiar()
            except errors.InvalidArgument:
                shown = text
            raise errors.NotFound(f"Unable to find image '{shown}' locally; import or pull it "
                                  "first") from None

    # --- networks (berth.container.networking) ---------------------------------------

    def connect(self, ref: str, network_ref: str, aliases=(), ip: str | None = None) -> None:
        self.net.connect(ref, network_ref, aliases, ip)

    def disconnect(self, ref: str, network_ref: str) -> None:
        self.net.disconnect(ref, network_ref)

    def _build(self, image: Image, opts: specmod.RunOptions, cid: str, name: str, cdir: str,
               lowerdirs: list[str], image_ref: str | None, auto_remove: bool,
               seccomp_profile_text: str | None) -> tuple[dict, rt.Spec]:
        cfg = image.config.config
        layers = [os.path.join(cdir, "diff")] + lowerdirs
        passwd = read_layered(layers, "/etc/passwd")
        group = read_layered(layers, "/etc/group")
        user = users.resolve(opts.user if opts.user is not None else cfg.user, 
                             passwd.decode(errors="replace") if passwd else None,
                             group.decode(errors="replace") if group else None, opts.group_add)
        network, joined = self.net.network_of(opts)
        paths = {n: os.path.join(cdir, n) for n in ("hostname", "hosts", "resolv.conf")}
        ctx = specmod.Context(
            container_id=cid, rootfs=os.path.join(cdir, "merged"),
            hostname_file=paths["hostname"], hosts_file=paths["hosts"],
            resolv_file=paths["resolv.conf"], ncpus=os.cpu_count() or 1,
            host_devices=host_devices() if opts.privileged else (),
            host_hostname=os.uname().nodename, cgroup_parent=self.cgroup_parent,
        )
        spec = specmod.build(cfg, opts, user, ctx)
        if spec.linux.seccomp is None and not (opts.privileged or opts.seccomp_unconfined):
            spec = _with_seccomp(spec, seccomp_profile_text)
        _write(paths["hostname"], spec.hostname + "\n")
        write_resolv_and_hosts(paths, opts, network, joined)
        _write(os.path.join(cdir, "config.json"), spec.to_json().decode())
        return new_record(cid=cid, name=name, cdir=cdir, image=image, image_ref=image_ref,
                          opts=opts, spec=spec, lowerdirs=lowerdirs, auto_remove=auto_remove,
                          network=network, joined=joined), spec

    # --- run -------------------------------------------------------------------------

    def start(self, cid: str, stdio, *, console_size=None, detached: bool = False):
        """Start an existing container with this process as its monitor."""
        from berth.runtime import ContainerProcess

        record = self.store.read(cid)
        if record["State"]["Running"] and self._monitor_alive(record):
            raise errors.Conflict(f"container {cid[:12]} is already running")
        spec = self.spec_of(cid)
        proc = ContainerProcess(cgroup_path=spec.linux.cgroups_path, resources=spec.linux.resources,
                                stdio=stdio, init=record["Berth"].get("Init", False),
                                seccomp_cache=self.seccomp_cache, console_size=console_size,
                                detached=detached)
        self._start(record, proc, spec)
        return proc

    def spec_of(self, cid: str) -> rt.Spec:
        with open(os.path.join(self.store.dir(cid), "config.json"), "rb") as f:
            return rt.Spec.from_json(f.read())

    def _start(self, record: dict, proc, spec: rt.Spec | None = None) -> None:
        from berth.network import endpoints as netep

        cid = record["Id"]
        cdir = self.store.dir(cid)
        joined: list[dict] = []  # endpoints made by the on_pid hook, undone if the start fails
        published: list = []
        try:
            spec = self.net.joined_namespace(record, spec or self.spec_of(cid))
            lowerdirs = self.images.snapshots.lowerdirs(record["Berth"]["ImageChain"])
            mount = overlay_mount(lowerdirs, os.path.join(cdir, "diff"), os.path.join(cdir, "work"))
            def network_up(pid: int) -> None:
                netep.up(self.net.networks(), record, pid, joined, published)

            pid = proc.start(spec, (mount,), on_pid=network_up if netep.wanted(record) else None)
        except BaseException as exc:
            proc.abort()
            if joined:
                netep.down(self.net.networks(), cid, joined)
            if record["HostConfig"].get("AutoRemove"):
                self.remove(cid, force=True)  # --rm: a container that never ran goes too
            elif isinstance(exc, errors.BerthError):
                self._set_state(cid, Status="exited" if record["State"]["StartedAt"] != ZERO_TIME
                                else "created", Error=str(exc),
                                ExitCode=exc.exit_code if isinstance(exc, errors.CommandNotFound)
                                else 125)
            raise
        self._set_state(cid, Status="running", Running=True, Paused=False, Restarting=False,
                        Pid=pid, ExitCode=0, Error="", OOMKilled=False, StartedAt=now_rfc3339(),
                        FinishedAt=ZERO_TIME, _monitor=[os.getpid(), _proc_start(os.getpid())],
                        _berth={"Process": [pid, _proc_start(pid)], "ManuallyStopped": False},
                        _update=netep.running_update(joined, published, pid) if joined else None)

    def finish(self, cid: str, status) -> None:
        trace("finish")
        released = self.net.release(cid, exited=True)
        trace("finish: network released")
        self._set_state(cid, Status="exited", Running=False, Paused=False, Restarting=False,
                        Pid=0, ExitCode=status.code, OOMKilled=status.oom_killed,
                        FinishedAt=now_rfc3339(), _monitor=None, _berth={"Process": None},
                        _update=released)

    def mark_restarting(self, cid: str) -> None:
        """The monitor waits out a restart back-off: Docker shows "Restarting (N)"."""
        def bump(record):
            record["RestartCount"] = record.get("RestartCount", 0) + 1
        self._set_state(cid, Status="restarting", Restarting=True, _update=bump)

    def set_manually_stopped(self, cid: str, stopped: bool = True) -> None:
        """stop and kill disable the restart policy until the next start, as in Docker."""
        self._set_state(cid, _berth={"ManuallyStopped": stopped})

    def set_paused(self, cid: str, paused: bool) -> None:
        self._set_state(cid, Paused=paused, Status="paused" if paused else "running")

    def set_health(self, cid: str, health: dict) -> None:
        self._set_state(cid, Health=health)

    def wants_restore(self, record: dict) -> bool:
        """After monitors died (a host restart of berth's processes): start it again?"""
        if self._monitor_alive(record) or record["Berth"].get("ManuallyStopped"):
            return False
        policy = (record["HostConfig"].get("RestartPolicy") or {}).get("Name") or "no"
        if policy in ("always", "unless-stopped"):
            return record["State"]["StartedAt"] != ZERO_TIME  # it ran once: it runs again
        if policy == "on-failure":
            return record["State"]["Status"] == "exited" and record["State"]["ExitCode"] != 0 \
                and record["State"].get("Error") == MONITOR_DIED
        return False

    def _set_state(self, cid: str, **changes) -> None:
        try:
            with self.store.lock(cid):
                record = self.store.read(cid)
                monitor = changes.pop("_monitor", False)
                berth = changes.pop("_berth", None)
                update = changes.pop("_update", None)
                record["State"].update(changes)
                if monitor is not False:
                    record["Berth"]["Monitor"] = monitor
                if berth:
                    record["Berth"].update(berth)
                if update:
                    update(record)
                self.store.write(record)
        except errors.NotFound:
            pass  # removed meanwhile (rm -f); nothing left to record

    def _monitor_alive(self, record: dict) -> bool:
        monitor = record.get("Berth", {}).get("Monitor")
        if not monitor:
            return False
        pid, started = monitor
        return _proc_start(pid) == started

    def _remove_stale_cgroup(self, cid: str) -> None:
        from berth.runtime import cgroups

        try:
            cg = cgroups.Cgroup(cgroups.layout(), self.spec_of(cid).linux.cgroups_path)
            if not cg.procs():
                cg.destroy()
        except (OSError, ValueError, errors.BerthError):
            pass

    def reconcile(self, record: dict) -> dict:
        """A record that says running while its monitor is gone.

        A container outlives a killed monitor (it is re-parented, as under conmon), so it
        may still run, unmonitored; once it is gone, nobody saw its exit status.
        """
        state = record["State"]
        if (state["Running"] or state.get("Restarting")) and not self._monitor_alive(record):
            process = record["Berth"].get("Process")
            if process and _proc_start(process[0]) == process[1]:
                return record  # still running; only its monitor is gone
            cid = record["Id"]
            self._remove_stale_cgroup(cid)
            released = self.net.release(cid, record)
            self._set_state(cid, Status="exited", Running=False, Paused=False, Restarting=False,
                            Pid=0, ExitCode=137 if state["Running"] else state["ExitCode"],
                            Error=MONITOR_DIED, FinishedAt=now_rfc3339(), _monitor=None,
                            _berth={"Process": None}, _update=released)
            record = self.store.read(cid)
        return record

    def running(self, record: dict) -> bool:
        """Running as far as anyone can tell: a live monitor, or a live unmonitored PID 1."""
        return self.reconcile(record)["State"]["Running"]

    # --- queries ---------------------------------------------------------------------

    def get(self, ref: str) -> dict:
        return self.reconcile(self.store.read(self.store.lookup(ref)))

    def list(self) -> list[dict]:
        out = []
        for cid in self.store.ids():
            try:
                out.append(self.reconcile(self.store.read(cid)))
            except errors.NotFound:
                continue
        out.sort(key=lambda r: r["Created"], reverse=True)
        return out

    def users_of(self, image_id: str) -> list[str]:
        return [r["Id"] for r in self.list() if r["Image"] == image_id]

    # --- remove ----------------------------------------------------------------------

    def remove(self, ref: str, force: bool = False, volumes: bool | None = None) -> str:
        """`volumes` (rm -v; by default, what --rm asked) also removes the anonymous volumes
        no other container uses; named volumes always stay."""
        cid = self.store.lookup(ref)
        record = self.get(cid)
        state = record["State"]
        if state["Running"] or state.get("Restarting"):
            if not force:
                raise errors.Conflict(
                    f"cannot remove container \"{record['Name']}\": container is running: stop the "
                    "container before removing or force remove")
            self.kill_and_wait(record)
        self.net.release(cid)  # held still if its monitor died mid-way
        with self.store.lock(cid):
            self.store.delete(cid, record["Name"].lstrip("/"))
        if volumes is None:
            volumes = bool(record["HostConfig"].get("AutoRemove"))
        if volumes:
            remove_anonymous_volumes(self.root, record, self.list)
        return cid

    def rename(self, ref: str, new_name: str) -> None:
        cid = self.store.lookup(ref)
        new_name = new_name.lstrip("/")
        old = self.store.read(cid)["Name"].lstrip("/")
        if new_name == old:
            raise errors.InvalidArgument("Renaming a container with the same name as its current "
                                         "name")
        self.store.reserve_name(new_name, cid)
        try:
            with self.store.lock(cid):
                record = self.store.read(cid)
                record["Name"] = "/" + new_name
                self.store.write(record)
        except BaseException:
            self.store.release_name(new_name, cid)
            raise
        self.store.release_name(old, cid)

    def signal(self, record: dict, sig: int, *, manual: bool = True) -> None:
        """Send `sig` to the container's PID 1; `manual` keeps the restart policy off."""
        if manual:
            self.set_manually_stopped(record["Id"])
        if record["State"].get("Paused"):
            self.unpause(record)  # a frozen process cannot die; Docker thaws it too
        pid = record["State"]["Pid"]
        if pid:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def wait_stopped(self, cid: str, timeout: float | None) -> bool:
        """Poll until the container is neither running nor about to restart."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.005
        while True:
            try:
                state = self.reconcile(self.store.read(cid))["State"]
            except errors.NotFound:
                return True
            if not state["Running"] and not state.get("Restarting"):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def kill_and_wait(self, record: dict, timeout: float = 10.0) -> None:
        self.signal(record, signal.SIGKILL)
        if not self.wait_stopped(record["Id"], timeout):
            raise errors.Unavailable(f"container {record['Id'][:12]} did not stop within "
                                     f"{timeout:.0f}s")

    def stop(self, record: dict, timeout: int | None = None) -> None:
        """Docker's stop: the stop signal, up to `timeout` seconds, then SIGKILL."""
        cfg = record["Config"]
        if timeout is None:
            timeout = cfg.get("StopTimeout", 10)
        self.signal(record, parse_signal(cfg.get("StopSignal") or "SIGTERM"))
        if timeout < 0 or not self.wait_stopped(record["Id"], float(timeout)):
            if timeout >= 0:
                self.kill_and_wait(record)
            else:
                self.wait_stopped(record["Id"], None)

    def cgroup_of(self, record: dict):
        from berth.runtime import cgroups

        return cgroups.Cgroup(cgroups.layout(), self.spec_of(record["Id"]).linux.cgroups_path)

    def pause(self, record: dict) -> None:
        if not record["State"]["Running"]:
            raise errors.Conflict(f"container {record['Id'][:12]} is not running")
        if record["State"].get("Paused"):
            raise errors.Conflict(f"container {record['Id'][:12]} is already paused")
        self.cgroup_of(record).freeze()
        self.set_paused(record["Id"], True)

    def unpause(self, record: dict) -> None:
        if not record["State"].get("Paused"):
            raise errors.Conflict(f"container {record['Id'][:12]} is not paused")
        self.cgroup_of(record).thaw()
        self.set_paused(record["Id"], False)

    def inspect(self, ref: str) -> dict:
        record = dict(self.get(ref))
        record.pop("Berth", None)
        return record


def _with_seccomp(spec: rt.Spec, profile_text: str | None) -> rt.Spec:
    from berth.oci.record import replace

    caps = spec.process.capabilities.bounding if spec.process.capabilities else ()
    if profile_text is None:
        resolved = default_seccomp(caps)
    else:
        import json

        from berth.runtime import seccomp

        try:
            profile = json.loads(profile_text)
        except ValueError as exc:
            raise errors.InvalidArgument(f"seccomp profile is not valid JSON: {exc}") from None
        resolved = seccomp.resolve(profile, caps)
    return replace(spec, linux=replace(spec.linux, seccomp=resolved))


_DEFAULT_SECCOMP: dict = {}  # bounding capabilities -> Docker's profile resolved for them


def default_seccomp(caps: tuple[str, ...]):
    """Docker's default profile resolved for a container with these capabilities. The
    hub resolves it for the default set before it forks, so a run finds it done (~2 ms)."""
    key = frozenset(caps)
    resolved = _DEFAULT_SECCOMP.get(key)
    if resolved is None:
        from berth.runtime import seccomp

        resolved = _DEFAULT_SECCOMP[key] = seccomp.resolve(seccomp.default_profile(), caps)
    return resolved


def parse_signal(text: str | int) -> int:
    """SIGTERM, TERM, 15 -> 15, as Docker's --stop-signal and kill -s accept them."""
    if isinstance(text, int) or str(text).isdigit():
        number = int(text)
    else:
        name = str(text).upper()
        name = name if name.startswith("SIG") else "SIG" + name
        number = getattr(signal, name, None)
        if not isinstance(number, int):
            raise errors.InvalidArgument(f"invalid signal: {text}")
    if not 0 < number < signal.NSIG:
        raise errors.InvalidArgument(f"invalid signal: {text}")
    return int(number)


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
