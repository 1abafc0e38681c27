"""berth.container.users: `-u user[:group]` against the image's /etc/passwd and /etc/group.

Docker's rules (moby/sys/user GetExecUser): names must exist, numbers need not.
"""

from __future__ import annotations

import pytest

from berth.container.users import ExecUser, resolve
from berth.errors import InvalidArgument, NotFound

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
# a comment line
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
app:x:1000:1000:App User:/home/app:/bin/sh
nohome:x:1001:1001::/:/bin/sh
broken line without fields
bad:x:notanumber:1::/:/bin/sh
"""

GROUP = """\
root:x:0:
wheel:x:10:root,app
audio:x:29:app
staff:x:50:
app:x:1000:
video:x:44:daemon
"""


def test_empty_user_is_root_with_home_from_passwd():
    assert resolve("", PASSWD, GROUP) == ExecUser(0, 0, (10,), "/root")
    assert resolve(None, PASSWD, GROUP).home == "/root"


def test_empty_user_without_passwd_is_root_with_home_slash():
    assert resolve("", None, None) == ExecUser(0, 0, (), "/")


def test_name_resolves_uid_gid_home_and_group_memberships():
    assert resolve("app", PASSWD, GROUP) == ExecUser(1000, 1000, (10, 29), "/home/app")


def test_uid_in_passwd_resolves_like_its_name():
    assert resolve("1000", PASSWD, GROUP) == resolve("app", PASSWD, GROUP)


def test_uid_not_in_passwd_runs_with_gid_0_and_home_slash():
    assert resolve("4242", PASSWD, GROUP) == ExecUser(4242, 0, (), "/")


def test_uid_without_any_passwd_file_is_accepted():
    assert resolve("1234", None, None) == ExecUser(1234, 0, (), "/")


def test_name_with_group_name_sets_gid_and_drops_memberships():
    assert resolve("app:staff", PASSWD, GROUP) == ExecUser(1000, 50, (), "/home/app")


def test_uid_and_gid_numbers_need_not_exist():
    assert resolve("4242:4343", PASSWD, GROUP) == ExecUser(4242, 4343, (), "/")


def test_uid_gid_of_known_user_keeps_its_home():
    assert resolve("1000:50", PASSWD, GROUP) == ExecUser(1000, 50, (), "/home/app")


def test_unknown_name_is_not_found_with_dockers_message():
    with pytest.raises(NotFound, match="^unable to find user nobody: no matching entries in "
                                       "passwd file$"):
        resolve("nobody", PASSWD, GROUP)


def test_name_without_passwd_file_is_not_found():
    with pytest.raises(NotFound, match="unable to find user app"):
        resolve("app", None, None)


def test_unknown_group_name_is_not_found():
    with pytest.raises(NotFound, match="^unable to find group nogroup: no matching entries in "
                                       "group file$"):
        resolve("app:nogroup", PASSWD, GROUP)


def test_ids_above_int32_are_rejected():
    with pytest.raises(InvalidArgument, match="out of range"):
        resolve(str(2**31), PASSWD, GROUP)
    with pytest.raises(InvalidArgument, match="out of range"):
        resolve("0:" + str(2**31), PASSWD, GROUP)


def test_comment_and_malformed_lines_are_skipped():
    assert resolve("daemon", PASSWD, GROUP) == ExecUser(1, 1, (44,), "/usr/sbin")
    with pytest.raises(NotFound):
        resolve("bad", PASSWD, GROUP)


def test_group_add_by_name_and_number_appends_without_duplicates():
    user = resolve("app", PASSWD, GROUP, group_add=("audio", "staff", "777"))
    assert user.additional_gids == (10, 29, 50, 777)


def test_group_add_applies_with_an_explicit_group_too():
    assert resolve("app:staff", PASSWD, GROUP, group_add=("video",)).additional_gids == (44,)


def test_group_add_unknown_name_is_not_found():
    with pytest.raises(NotFound, match="unable to find group gamers"):
        resolve("app", PASSWD, GROUP, group_add=("gamers",))
