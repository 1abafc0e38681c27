"""Registry commands: pull, push, login, logout (the client; `registry serve` is elsewhere)."""

from __future__ import annotations

import sys

from berth.cli.flags import BOOL, VALUE, Flag, UsageError, parse, usage
from berth.errors import InvalidArgument

HELP_FLAG = Flag(("--help",), BOOL, "Print usage")
PULL_FLAGS = (
    Flag(("-a", "--all-tags"), BOOL, "Download all tagged images in the repository"),
    Flag(("--platform",), VALUE, "Set platform if server is multi-platform capable (os/arch[/variant])"),
    Flag(("-q", "--quiet"), BOOL, "Suppress verbose output"),
)
PUSH_FLAGS = (
    Flag(("-a", "--all-tags"), BOOL, "Push all tags of an image to the repository"),
    Flag(("-q", "--quiet"), BOOL, "Suppress verbose output"),
)
LOGIN_FLAGS = (
    Flag(("-u", "--username"), VALUE, "Username"),
    Flag(("-p", "--password"), VALUE, "Password"),
    Flag(("--password-stdin",), BOOL, "Take the password from stdin"),
)


def _help(values, command, synopsis, description, flags) -> bool:
    if values.get("help"):
        sys.stdout.write(usage(command, synopsis, description, flags) + "\n")
        return True
    return False


def _images(g):
    from berth.image import ImageStore

    return ImageStore(g.root)


def cmd_pull(g, argv) -> int:
    values, pos = parse(argv, PULL_FLAGS + (HELP_FLAG,))
    if _help(values, "pull", "[OPTIONS] NAME[:TAG|@DIGEST]",
             "Download an image from a registry", PULL_FLAGS):
        return 0
    if len(pos) != 1:
        raise UsageError('"berth pull" requires exactly 1 argument.')
    from berth.registry import Progress
    from berth.registry.pull import pull, pull_all_tags

    progress = Progress(sys.stdout, quiet=values["quiet"])
    if values["all_tags"]:
        pull_all_tags(_images(g), pos[0], platform=values["platform"], progress=progress)
        sys.stdout.write(f"{_name_of(pos[0])}\n")  # Docker names the repository once
        return 0
    result = pull(_images(g), pos[0], platform=values["platform"], progress=progress)
    names = result.image.names
    sys.stdout.write((names[0] if names else f"{_name_of(pos[0])}@{result.digest}") + "\n")
    return 0


def _name_of(text: str) -> str:
    from berth.oci import reference

    return reference.parse(text, default_tag=False).name


def cmd_push(g, argv) -> int:
    values, pos = parse(argv, PUSH_FLAGS + (HELP_FLAG,))
    if _help(values, "push", "[OPTIONS] NAME[:TAG]", "Upload an image to a registry", PUSH_FLAGS):
        return 0
    if len(pos) != 1:
        raise UsageError('"berth push" requires exactly 1 argument.')
    from berth.registry import Progress
    from berth.registry.push import push, tags_of

    images = _images(g)
    progress = Progress(sys.stdout, quiet=values["quiet"])
    targets = tags_of(images, pos[0]) if values["all_tags"] else [pos[0]]
    for target in targets:
        result = push(images, target, progress=progress)
        if values["quiet"]:
            sys.stdout.write(f"{result.name}\n")
    return 0


def cmd_login(g, argv) -> int:
    values, pos = parse(argv, LOGIN_FLAGS + (HELP_FLAG,))
    if _help(values, "login", "[OPTIONS] [SERVER]",
             "Log in to a registry.\nIf no server is specified, the default (docker.io) is used.",
             LOGIN_FLAGS):
        return 0
    if len(pos) > 1:
        raise UsageError('"berth login" requires at most 1 argument.')
    from berth.registry import auth, config, connect

    registry = auth.registry_host(pos[0]) if pos else "docker.io"
    username, password = values["username"], values["password"]
    if values["password_stdin"]:
        if password:
            raise InvalidArgument("--password and --password-stdin are mutually exclusive")
        if not username:
            raise InvalidArgument("Must provide --username with --password-stdin")
        password = sys.stdin.read().rstrip("\r\n")
    elif password:
        sys.stderr.write("WARNING! Using --password via the CLI is insecure. Use --password-stdin.\n")
    if not username or not password:
        username, password = _prompt(registry, username)
    if not username or not password:
        raise InvalidArgument("Error: Non-null Username and Password Required")
    creds = auth.Credentials(username, password)
    cfg = config.load(g.root)
    reg = connect(cfg, cfg.endpoint(registry), credentials=creds)
    try:
        auth.verify_login(reg)
    finally:
        reg.transport.close()
    where = auth.store_credentials(registry, creds)
    if not where.startswith("credential helper"):
        sys.stderr.write(f"WARNING! Your password will be stored unencrypted in {where}.\n"
                         "Configure a credential helper to remove this warning. See\n"
                         "https://docs.docker.com/engine/reference/commandline/login/"
                         "#credentials-store\n\n")
    sys.stdout.write("Login Succeeded\n")
    return 0


def _prompt(registry: str, username: str | None) -> tuple[str, str]:
    import os

    if not os.isatty(0):
        raise InvalidArgument("Cannot perform an interactive login from a non TTY device")
    import getpass

    if not username:
        sys.stdout.write(f"Username ({registry}): " if registry != "docker.io" else "Username: ")
        sys.stdout.flush()
        username = sys.stdin.readline().strip()
    return username, getpass.getpass("Password: ")


def cmd_logout(g, argv) -> int:
    values, pos = parse(argv, (HELP_FLAG,))
    if _help(values, "logout", "[SERVER]", "Log out from a registry.\nIf no server is "
             "specified, the default (docker.io) is used.", ()):
        return 0
    if len(pos) > 1:
        raise UsageError('"berth logout" requires at most 1 argument.')
    from berth.registry import auth

    registry = auth.registry_host(pos[0]) if pos else "docker.io"
    shown = auth.server_key(registry)
    if auth.erase_credentials(registry):
        sys.stdout.write(f"Removing login credentials for {shown}\n")
    else:
        sys.stdout.write(f"Not logged in to {shown}\n")
    return 0
