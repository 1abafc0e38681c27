"""`-u user[:group]` resolved against the image's /etc/passwd and /etc/group.

The rules are Docker's (moby/sys/user GetExecUser): names must exist, numbers need
not; a user found in passwd gets its primary group and its /etc/group memberships;
an unknown numeric uid runs with gid 0 and HOME=/.
"""

from __future__ import annotations

from berth.oci.record import Record

from berth.errors import InvalidArgument, NotFound

MAX_ID = 2**31 - 1


class ExecUser(Record):
    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()
    home: str = "/"


def _parse_passwd(text: str):
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) < 7 or line.startswith("#"):
            continue
        try:
            yield fields[0], int(fields[2]), int(fields[3]), fields[5]
        except ValueError:
            continue


def _parse_group(text: str):
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) < 4 or line.startswith("#"):
            continue
        try:
            yield fields[0], int(fields[2]), [m for m in fields[3].split(",") if m]
        except ValueError:
            continue


def _number(text: str) -> int | None:
    if text.isdigit():
        value = int(text)
        if value > MAX_ID:
            raise InvalidArgument(f"uid/gid {text} is out of range")
        return value
    return None


def resolve(spec: str | None, passwd: str | None, group: str | None,
            group_add: tuple[str, ...] = ()) -> ExecUser:
    """Resolve a Docker user spec ('', 'name', 'uid', 'name:group', 'uid:gid', ...)."""
    spec = spec or ""
    user_part, _, group_part = spec.partition(":")
    passwd_entries = list(_parse_passwd(passwd or ""))
    group_entries = list(_parse_group(group or ""))
    uid_num = _number(user_part) if user_part else 0
    entry = None
    for name, uid, gid, home in passwd_entries:
        if (user_part and name == user_part) or (uid_num is not None and uid == uid_num):
            entry = (name, uid, gid, home)
            break
    if entry is None:
        if uid_num is None:
            raise NotFound(f"unable to find user {user_part}: no matching entries in passwd file")
        name, uid, gid, home = "", uid_num, 0, "/"
    else:
        name, uid, gid, home = entry
    supplementary: list[int] = []
    if group_part:
        gid_num = _number(group_part)
        match = next((g for g in group_entries if g[0] == group_part or g[1] == gid_num), None)
        if match is None:
            if gid_num is None:
                raise NotFound(f"unable to find group {group_part}: no matching entries in group file")
            gid = gid_num
        else:
            gid = match[1]
    elif name:
        supplementary = [g[1] for g in group_entries if name in g[2]]
    for extra in group_add:
        number = _number(extra)
        match = next((g for g in group_entries if g[0] == extra or g[1] == number), None)
        if match is None and number is None:
            raise NotFound(f"unable to find group {extra}: no matching entries in group file")
        value = match[1] if match else number
        if value not in supplementary:
            supplementary.append(value)
    return ExecUser(uid, gid, tuple(supplementary), home or "/")
