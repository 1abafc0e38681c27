"""berth's command line: argv -> library calls -> one line of error or the output.

Thin on purpose. Each command lives in a module imported only when that command runs,
so `berth --version` loads almost nothing.
"""

from __future__ import annotations

import os
import sys

DEFAULT_ROOT = "/var/lib/berth"

# command -> (module under berth.cli, function). Commands of later issues are listed with
# the module that will hold them; until it exists they answer "not implemented yet".
COMMANDS = {
    "run": ("run", "cmd_run"),
    "create": ("run", "cmd_create"),
    "start": ("run", "cmd_start"),
    "import": ("images", "cmd_import"),
    "images": ("images", "cmd_images"),
    "rmi": ("images", "cmd_rmi"),
    "tag": ("images", "cmd_tag"),
    "ps": ("containers", "cmd_ps"),
    "rm": ("containers", "cmd_rm"),
    "inspect": ("containers", "cmd_inspect"),
    "version": ("system", "cmd_version"),
    "info": ("system", "cmd_info"),
    # images as history: commit, diff, history, save/load, export, prune (issue 3)
    "commit": ("commit", "cmd_commit"),
    "diff": ("commit", "cmd_diff"),
    "history": ("commit", "cmd_history"),
    "save": ("archive", "cmd_save"),
    "load": ("archive", "cmd_load"),
    "export": ("archive", "cmd_export"),
    # registries (issue 4)
    "pull": ("registry", "cmd_pull"),
    "push": ("registry", "cmd_push"),
    "login": ("registry", "cmd_login"),
    "logout": ("registry", "cmd_logout"),
    # build (issue 5)
    "build": ("build", "cmd_build"),
    # container lifecycle (issue 6)
    "stop": ("lifecycle", "cmd_stop"),
    "kill": ("lifecycle", "cmd_kill"),
    "restart": ("lifecycle", "cmd_restart"),
    "pause": ("lifecycle", "cmd_pause"),
    "unpause": ("lifecycle", "cmd_unpause"),
    "wait": ("lifecycle", "cmd_wait"),
    "logs": ("lifecycle", "cmd_logs"),
    "attach": ("lifecycle", "cmd_attach"),
    "exec": ("lifecycle", "cmd_exec"),
    "top": ("lifecycle", "cmd_top"),
    "stats": ("lifecycle", "cmd_stats"),
    "cp": ("lifecycle", "cmd_cp"),
    "rename": ("lifecycle", "cmd_rename"),
    "port": ("lifecycle", "cmd_port"),
}
# `berth image ls`, `berth container rm`, ... as Docker's management commands. A string
# names a command above; a tuple is (module, function) of its own.
GROUPS = {
    "image": {"ls": "images", "list": "images", "rm": "rmi", "remove": "rmi", "import": "import",
              "inspect": ("images", "cmd_image_inspect"), "tag": "tag", "history": "history",
              "save": "save", "load": "load", "pull": "pull", "push": "push", "build": "build",
              "diff": ("commit", "cmd_image_diff"), "prune": ("gc", "cmd_image_prune")},
    "container": {"ls": "ps", "list": "ps", "ps": "ps", "rm": "rm", "remove": "rm", "run": "run",
                  "create": "create", "start": "start", "stop": "stop", "kill": "kill",
                  "restart": "restart", "pause": "pause", "unpause": "unpause", "wait": "wait",
                  "logs": "logs", "attach": "attach", "exec": "exec", "top": "top",
                  "stats": "stats", "cp": "cp", "rename": "rename", "port": "port",
                  "commit": "commit", "diff": "diff", "export": "export",
                  "inspect": ("containers", "cmd_container_inspect"),
                  "prune": ("lifecycle", "cmd_container_prune")},
    "system": {"info": "info", "df": ("gc", "cmd_system_df"), "prune": ("gc", "cmd_system_prune"),
               "check": ("gc", "cmd_system_check")},
    "volume": {"create": ("volumes", "cmd_volume_create"), "ls": ("volumes", "cmd_volume_ls"),
               "list": ("volumes", "cmd_volume_ls"), "inspect": ("volumes", "cmd_volume_inspect"),
               "rm": ("volumes", "cmd_volume_rm"), "remove": ("volumes", "cmd_volume_rm"),
               "prune": ("volumes", "cmd_volume_prune")},
    "network": {"create": ("network", "cmd_network_create"), "ls": ("network", "cmd_network_ls"),
                "inspect": ("network", "cmd_network_inspect"), "rm": ("network", "cmd_network_rm"),
                "connect": ("network", "cmd_network_connect"),
                "disconnect": ("network", "cmd_network_disconnect"),
                "prune": ("network", "cmd_network_prune")},
    "registry": {"serve": ("registry_server", "cmd_registry_serve"),
                 "gc": ("registry_server", "cmd_registry_gc")},
}
# errors of these commands exit 125 like docker run's; other commands exit 1
ENGINE_EXIT_COMMANDS = ("run", "create", "start")
# Commands that leave nothing for Python's finalization to do (no threads, no temporary
# files): the launcher ends them with os._exit, which saves ~1.5 ms of every run and exec.
QUICK_EXIT_COMMANDS = ("run", "exec", "start", "create", "--version")

HELP = """Usage:  berth [OPTIONS] COMMAND

A container engine: Docker's commands, written in Python.

Options:
      --root string   Root directory of berth's state (default "/var/lib/berth", or $BERTH_ROOT)
  -D, --debug         Show tracebacks of errors
  -v, --version       Print version information and quit

Common Commands:
  run         Create and run a new container from an image
  exec        Execute a command in a running container
  ps          List containers
  build       Build an image from a Dockerfile
  pull        Download an image from a registry
  push        Upload an image to a registry
  images      List images
  login       Log in to a registry
  logout      Log out from a registry
  version     Show the berth version information
  info        Display system-wide information

Management Commands:
  container   Manage containers
  image       Manage images
  volume      Manage volumes
  network     Manage networks
  registry    Run berth's own OCI registry (serve, gc)
  system      Manage berth (df, prune, check, info)

Commands:
  attach      Attach local standard input, output, and error streams to a running container
  commit      Create a new image from a container's changes
  cp          Copy files/folders between a container and the local filesystem
  create      Create a new container
  diff        Inspect changes to files or directories on a container's filesystem
  export      Export a container's filesystem as a tar archive
  history     Show the history of an image
  import      Import the contents from a tarball to create a filesystem image
  inspect     Return low-level information on containers or images
  kill        Kill one or more running containers
  load        Load an image from a tar archive or STDIN
  logs        Fetch the logs of a container
  pause       Pause all processes within one or more containers
  port        List port mappings or a specific mapping for the container
  rename      Rename a container
  restart     Restart one or more containers
  rm          Remove one or more containers
  rmi         Remove one or more images
  save        Save one or more images to a tar archive
  start       Start one or more stopped containers
  stats       Display a live stream of container(s) resource usage statistics
  stop        Stop one or more running containers
  tag         Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
  top         Display the running processes of a container
  unpause     Unpause all processes within one or more containers
  wait        Block until one or more containers stop, then print their exit codes

Run 'berth COMMAND --help' for more information on a command.
"""


class Globals:
    def __init__(self) -> None:
        self.root = os.environ.get("BERTH_ROOT") or DEFAULT_ROOT
        self.debug = bool(os.environ.get("BERTH_DEBUG"))
        self.command = ""


def launch() -> None:
    """The launcher's entry (install.sh writes .venv/bin/berth to call it)."""
    g = Globals()
    code = main(g=g)
    if g.command in QUICK_EXIT_COMMANDS:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except OSError:
            pass
        os._exit(code)
    sys.exit(code)


def _err(message: str) -> None:
    sys.stderr.write(f"berth: {message}\n")
    sys.stderr.flush()


def _command(module_name: str, func_name: str):
    """The command's function, or None when its module or function does not exist yet."""
    if not os.path.exists(os.path.join(os.path.dirname(__file__), module_name + ".py")):
        return None
    module = __import__(f"berth.cli.{module_name}", fromlist=[func_name])
    return getattr(module, func_name, None)


def main(argv: list[str] | None = None, g: Globals | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    g = g or Globals()
    while argv and argv[0].startswith("-"):
        arg = argv.pop(0)
        if arg in ("-v", "--version"):
            g.command = "--version"
            from berth import __version__

            sys.stdout.write(f"berth version {__version__}\n")
            return 0
        if arg in ("-h", "--help"):
            sys.stdout.write(HELP)
            return 0
        if arg in ("-D", "--debug"):
            g.debug = True
        elif arg == "--root" or arg.startswith("--root="):
            value = arg.partition("=")[2] if "=" in arg else (argv.pop(0) if argv else "")
            if not value:
                _err("flag needs an argument: --root")
                return 125
            g.root = value
        else:
            _err(f"unknown flag: {arg}; see 'berth --help'")
            return 125
    if not argv:
        sys.stdout.write(HELP)
        return 0
    command = argv.pop(0)
    target = COMMANDS.get(command)
    if command in GROUPS:
        if not argv or argv[0] in ("-h", "--help"):
            sys.stdout.write(f"Usage:  berth {command} COMMAND\n\nCommands: "
                             + ", ".join(sorted(GROUPS[command])) + "\n")
            return 0
        sub = argv.pop(0)
        alias = GROUPS[command].get(sub)
        if alias is None:
            _err(f"'{command} {sub}' is not a berth command; see 'berth {command} --help'")
            return 1
        target = alias if isinstance(alias, tuple) else COMMANDS[alias]
        command = alias if isinstance(alias, str) else f"{command} {sub}"
    if target is None:
        _err(f"'{command}' is not a berth command; see 'berth --help'")
        return 1
    module_name, func_name = target
    g.command = command
    from berth.errors import BerthError
    from berth.cli.flags import UsageError

    try:
        func = _command(module_name, func_name)
        if func is None:
            _err(f"'{command}' is not implemented yet")
            return 1
        return func(g, argv) or 0
    except UsageError as exc:
        _err(f"{exc}; see 'berth {command} --help'")
        return 125
    except BerthError as exc:
        if g.debug:
            import traceback

            traceback.print_exc()
        _err(str(exc))
        from berth.errors import CommandNotFound

        if isinstance(exc, CommandNotFound) or command in ENGINE_EXIT_COMMANDS:
            return exc.exit_code  # 126/127 from exec too, as Docker gives them
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:
        # an unexpected host failure (disk full, permission): one line, no traceback
        if g.debug:
            import traceback

            traceback.print_exc()
        _err(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
        return 125 if command in ENGINE_EXIT_COMMANDS else 1
