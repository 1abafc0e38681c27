"""`berth run`, `create` and `start`: flags -> RunOptions -> a container."""

from __future__ import annotations

import os
import sys

from berth.cli.flags import BOOL, Flag, UsageError, parse, usage
from berth.cli.runopts import CREATE_FLAGS, HELP_FLAG, RUN_FLAGS, build_options
from berth.errors import BerthError, FailedPrecondition, InvalidArgument, NotFound

START_FLAGS = (
    Flag(("-a", "--attach"), BOOL, "Attach STDOUT/STDERR and forward signals"),
    Flag(("-i", "--interactive"), BOOL, "Attach container's STDIN"),
)


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise FailedPrecondition(f"berth {what} needs root: run it as root (for example with sudo)")


def _containers(g):
    from berth.container import Containers
    from berth.image import ImageStore

    return Containers(g.root, ImageStore(g.root))


def _parse_create(g, argv: list[str], flags, command_name: str):
    """Flags -> (flag values, RunOptions, image ref, create args); None for --help."""
    values, pos = parse(argv, flags + (HELP_FLAG,), interspersed=False)
    if values["help"]:
        sys.stdout.write(usage(command_name, "[OPTIONS] IMAGE [COMMAND] [ARG...]",
                               "Create and run a new container from an image" if command_name ==
                               "run" else "Create a new container", flags) + "\n")
        return None
    if not pos:
        raise UsageError(f'"berth {command_name}" requires at least 1 argument.')
    _require_root(command_name)
    opts, profile_text = build_options(values, pos[1:])
    if opts.tty and opts.interactive and not values.get("detach") and not os.isatty(0):
        raise InvalidArgument("the input device is not a TTY")
    for b in opts.binds:
        # Docker creates a missing bind source as a directory (only for -v)
        os.makedirs(b.source, exist_ok=True)
    create_args = dict(name=values["name"], auto_remove=values["rm"],
                       seccomp_profile_text=profile_text)
    return values, opts, pos[0], create_args


def cmd_create(g, argv: list[str]) -> int:
    parsed = _parse_create(g, argv, CREATE_FLAGS, "create")
    if parsed is None:
        return 0
    values, opts, image_ref, create_args = parsed
    containers = _containers(g)
    from berth.registry.pull import ensure_image

    image = ensure_image(containers.images, image_ref, values["pull"], sys.stderr,
                         platform=values["platform"])
    record = containers.create(image, opts, image_ref=image_ref, **create_args)
    sys.stdout.write(record["Id"] + "\n")
    return 0


def cmd_run(g, argv: list[str]) -> int:
    """create + start through the hub: a monitor owns the container, this CLI attaches."""
    parsed = _parse_create(g, argv, RUN_FLAGS, "run")
    if parsed is None:
        return 0
    values, opts, image_ref, create_args = parsed
    from berth.container import client
    from berth.container.spec import options_to_dict

    message = {"op": "run", "image": image_ref, "opts": options_to_dict(opts),
               "create": create_args}
    if values["pull"] != "missing":  # "always" pulls first; a bad value is refused here
        _pull(g, image_ref, values)
    try:
        return session(client.hub(g.root), dict(message), tty=opts.tty,
                       interactive=opts.interactive, detach=values["detach"],
                       sig_proxy=values["sig_proxy"])
    except NotFound as exc:
        # as Docker's CLI does: the engine says the image is missing, the CLI pulls it and
        # asks again; an image that is present costs nothing extra
        if values["pull"] != "missing" or not str(exc).startswith("Unable to find image"):
            raise
    _pull(g, image_ref, values)
    return session(client.hub(g.root), message, tty=opts.tty, interactive=opts.interactive,
                   detach=values["detach"], sig_proxy=values["sig_proxy"])


def _pull(g, image_ref: str, values: dict) -> None:
    from berth.image import ImageStore
    from berth.registry.pull import ensure_image

    ensure_image(ImageStore(g.root), image_ref, values["pull"], sys.stderr,
                 platform=values["platform"])


def cmd_start(g, argv: list[str]) -> int:
    values, pos = parse(argv, START_FLAGS + (HELP_FLAG,))
    if values["help"]:
        sys.stdout.write(usage("start", "[OPTIONS] CONTAINER [CONTAINER...]",
                               "Start one or more stopped containers", START_FLAGS) + "\n")
        return 0
    if not pos:
        raise UsageError('"berth start" requires at least 1 argument.')
    if values["attach"] and len(pos) > 1:
        raise InvalidArgument("you cannot start and attach multiple containers at once")
    _require_root("start")
    from berth.container import client

    containers = _containers(g)
    status = 0
    for ref in pos:
        try:
            record = containers.get(ref)
            if containers.running(record):
                if values["attach"]:
                    raise InvalidArgument(f"container {ref} is already running: use berth attach")
                sys.stdout.write(ref + "\n")
                continue
            message = {"op": "start", "id": record["Id"]}
            code = session(client.hub(g.root), message, tty=record["Config"]["Tty"],
                           interactive=values["interactive"], detach=not values["attach"],
                           sig_proxy=True, quiet=True)
            if values["attach"]:
                return code
            sys.stdout.write(ref + "\n")
        except BerthError as exc:
            if len(pos) == 1:
                raise
            sys.stderr.write(f"berth: {exc}\n")
            status = 1
    return status


FORWARDED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGCONT",
             "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGPIPE", "SIGVTALRM", "SIGPROF", "SIGXCPU")


def session(sock, message: dict, *, tty: bool, interactive: bool, detach: bool, sig_proxy: bool,
            quiet: bool = False, hub: bool = True) -> int:
    """Send a run/start/attach request to a monitor (through the hub) and follow it.

    Detached: print the container's ID once it runs. Attached: the monitor writes the
    container's output straight to our stdout/stderr (we lend it the fds); we forward
    signals (or, with a tty, put the terminal in raw mode and pass window sizes) and
    exit with the container's exit code.
    """
    # the C module: signal.py only adds enums, and importing enum costs every run ~2 ms
    import _signal as signal

    from berth import ipc as wire

    fds: list[int] = []
    size = None
    if not detach:
        if tty:
            from berth.container.attach import window_size

            size = window_size(1) or window_size(0)
        message.update(stdin=interactive, stdout=True, stderr=not tty, tty=tty,
                       stdin_once=interactive, console_size=size)
        fds = ([0] if interactive else []) + [1] + ([] if tty else [2])
    handlers = {}
    target = {"pid": None, "pending": []}
    if not detach and not tty and sig_proxy:
        # installed before the request: the container may print (and the user may signal)
        # before the "started" event reaches us; early signals wait for the pid
        def forward(signum, _frame):
            if target["pid"] is None:
                target["pending"].append(signum)
                return
            try:
                os.kill(target["pid"], signum)
            except ProcessLookupError:
                pass

        for name in FORWARDED:
            sig = getattr(signal, name)
            handlers[sig] = signal.signal(sig, forward)
    saved = None
    try:
        wire.send(sock, message, fds, binary=hub)  # a monitor may be berth-shim: JSON
        event = _next_event(sock)
        if event.get("event") == "error":
            raise _error(event)
        if detach:
            if not quiet:
                sys.stdout.write(event["id"] + "\n")
            return 0
        target["pid"] = event["pid"]
        for signum in target["pending"]:
            forward(signum, None)
        if tty:
            if interactive and os.isatty(0):
                import termios
                import tty as _tty

                saved = termios.tcgetattr(0)
                _tty.setraw(0)

            def resize(*_):
                from berth.container.attach import window_size

                now = window_size(1) or window_size(0)
                if now:
                    try:
                        wire.send(sock, {"op": "resize", "rows": now[0], "cols": now[1]})
                    except OSError:
                        pass

            handlers[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, resize)
        while True:
            event = _next_event(sock)
            if event.get("event") == "exit":
                return int(event["code"])
    finally:
        for sig, old in handlers.items():
            signal.signal(sig, old)
        if saved is not None:
            import termios

            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        sock.close()


def _next_event(sock) -> dict:
    from berth import ipc as wire
    from berth.errors import Unavailable

    while True:
        try:
            event, fds = wire.recv(sock)
        except InterruptedError:
            continue
        for fd in fds:
            os.close(fd)
        if event is None:
            raise Unavailable("the container's monitor went away")
        return event


def _error(event: dict) -> BerthError:
    from berth.errors import CommandNotFound, ContainerStartError, NotFound

    code = int(event.get("code", 125))
    message = event.get("message", "the container could not start")
    if code in (126, 127):
        return CommandNotFound(message, code)
    if message.startswith("Unable to find image") or message.startswith("No such"):
        return NotFound(message)
    err = ContainerStartError(message)
    err.exit_code = code
    return err
