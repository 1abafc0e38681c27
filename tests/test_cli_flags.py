"""berth.cli.flags (docker-style argv parsing) and the pure helpers of berth.cli.runopts
and berth.cli.mountopts.

The rules are the docker CLI's (spf13/pflag with SetInterspersed(false) for run/create),
and the value parsers follow docker's (go-units RAMInBytes, opts.ParseUlimit, volume specs).
"""

from __future__ import annotations

import pytest

from berth.cli.flags import BOOL, LIST, VALUE, Flag, UsageError, parse, parse_size
from berth.cli.mountopts import parse_volume
from berth.cli.runopts import RUN_FLAGS, build_options, parse_security_opts, parse_ulimit
from berth.container.spec import DEFAULT_SHM_SIZE, BindSpec, VolumeSpec
from berth.errors import InvalidArgument
from berth.oci.runtime import Rlimit

UNLIMITED = 2**64 - 1


def run_argv(*argv: str):
    """Parse like `berth run`: flags stop at the image name."""
    return parse(list(argv), RUN_FLAGS, interspersed=False)


def defaults(**overrides) -> dict:
    values = parse([], RUN_FLAGS)[0]
    values.update(overrides)
    return values


# -- parse: shapes of flags -----------------------------------------------------------------

def test_defaults_are_false_for_bools_empty_for_lists_and_none_for_values():
    values, pos = parse([], RUN_FLAGS)
    assert pos == []
    assert values["tty"] is False and values["rm"] is False
    assert values["env"] == [] and values["volume"] == []
    assert values["name"] is None and values["memory"] is None


def test_flag_default_is_used_when_given():
    assert parse([], RUN_FLAGS)[0]["sig_proxy"] is True


def test_dest_is_the_long_name_with_underscores():
    assert Flag(("-m", "--memory-swap"), VALUE).dest == "memory_swap"
    assert Flag(("-x",), BOOL).dest == "x"


def test_combined_short_bools_it():
    values, pos = run_argv("-it", "busybox")
    assert values["interactive"] and values["tty"] and not values["detach"]
    assert pos == ["busybox"]


def test_combined_short_bools_dit():
    values, _ = run_argv("-dit", "busybox")
    assert values["detach"] and values["interactive"] and values["tty"]


def test_combined_short_bools_end_with_a_value_flag_taking_the_next_arg():
    values, pos = run_argv("-ite", "A=1", "busybox")
    assert values["interactive"] and values["tty"]
    assert values["env"] == ["A=1"] and pos == ["busybox"]


@pytest.mark.parametrize("argv", [["-eA=1"], ["-e", "A=1"], ["--env=A=1"], ["--env", "A=1"],
                                  ["-e=A=1"]])
def test_every_spelling_of_a_value_flag(argv):
    values, pos = run_argv(*argv, "busybox")
    assert values["env"] == ["A=1"]
    assert pos == ["busybox"]


def test_repeated_list_flags_accumulate_in_order():
    values, _ = run_argv("-e", "A=1", "--env=B=2", "-eC=3", "-v", "/a:/a", "-v", "/b:/b", "busybox")
    assert values["env"] == ["A=1", "B=2", "C=3"]
    assert values["volume"] == ["/a:/a", "/b:/b"]


def test_repeated_value_flag_keeps_the_last():
    values, _ = run_argv("--name", "one", "--name=two", "busybox")
    assert values["name"] == "two"


def test_value_may_start_with_a_dash():
    assert run_argv("--entrypoint", "-weird", "busybox")[0]["entrypoint"] == "-weird"


def test_empty_value_with_equals_is_kept():
    assert run_argv("--entrypoint=", "busybox")[0]["entrypoint"] == ""


@pytest.mark.parametrize("text, want", [("--rm=false", False), ("--rm=true", True), ("--rm", True),
                                        ("--rm=0", False), ("--rm=1", True), ("--rm=FALSE", False)])
def test_bool_long_flag_takes_an_optional_value(text, want):
    assert run_argv(text, "busybox")[0]["rm"] is want


def test_bool_with_default_true_can_be_turned_off():
    assert run_argv("--sig-proxy=false", "busybox")[0]["sig_proxy"] is False


def test_short_bool_takes_an_equals_value():
    values, _ = run_argv("-t=false", "-i", "busybox")
    assert values["tty"] is False and values["interactive"] is True


def test_bool_never_consumes_the_next_argument():
    values, pos = run_argv("--rm", "false")
    assert values["rm"] is True and pos == ["false"]


def test_bad_bool_value_is_a_usage_error():
    with pytest.raises(UsageError, match='invalid argument "maybe" for "--rm" flag'):
        run_argv("--rm=maybe", "busybox")


# -- parse: positionals, interspersed, terminator ------------------------------------------

def test_flags_after_the_image_belong_to_the_command():
    values, pos = run_argv("--rm", "busybox", "ls", "-la", "--color=never", "-e")
    assert values["rm"] is True and values["env"] == []
    assert pos == ["busybox", "ls", "-la", "--color=never", "-e"]


def test_interspersed_parsing_takes_flags_after_positionals():
    flags = (Flag(("-a", "--all"), BOOL), Flag(("-f", "--filter"), LIST))
    values, pos = parse(["one", "-a", "two", "--filter", "x"], flags)
    assert values == {"all": True, "filter": ["x"]}
    assert pos == ["one", "two"]


def test_double_dash_ends_flags():
    values, pos = parse(["--rm", "--", "-it", "--name", "x"], RUN_FLAGS)
    assert values["rm"] is True and values["tty"] is False and values["name"] is None
    assert pos == ["-it", "--name", "x"]


def test_double_dash_after_the_image_is_part_of_the_command():
    _, pos = run_argv("busybox", "--", "ls")
    assert pos == ["busybox", "--", "ls"]


def test_lone_dash_is_a_positional():
    flags = (Flag(("-a",), BOOL),)
    assert parse(["-", "-a"], flags) == ({"a": True}, ["-"])


# -- parse: errors --------------------------------------------------------------------------

def test_unknown_long_flag_is_a_usage_error():
    with pytest.raises(UsageError, match="^unknown flag: --bogus$"):
        run_argv("--bogus", "busybox")


def test_unknown_long_flag_with_value_names_only_the_flag():
    with pytest.raises(UsageError, match="^unknown flag: --bogus$"):
        run_argv("--bogus=1", "busybox")


def test_unknown_shorthand_flag_is_a_usage_error():
    with pytest.raises(UsageError, match="^unknown shorthand flag: 'x' in -itx$"):
        run_argv("-itx", "busybox")


def test_long_flag_without_its_argument_is_a_usage_error():
    with pytest.raises(UsageError, match="^flag needs an argument: --name$"):
        run_argv("--name")


def test_short_flag_without_its_argument_is_a_usage_error():
    with pytest.raises(UsageError, match="^flag needs an argument: 'e' in -e$"):
        run_argv("-e")


def test_usage_error_is_an_invalid_argument():
    assert issubclass(UsageError, InvalidArgument)


# -- parse_size -----------------------------------------------------------------------------

@pytest.mark.parametrize("text, size", [
    ("32m", 32 << 20), ("1g", 1 << 30), ("512k", 512 << 10), ("1024", 1024), ("32mb", 32 << 20),
    ("32M", 32 << 20), ("1GB", 1 << 30), ("1.5g", 3 << 29), ("10b", 10), ("-1", -1), ("0", 0),
])
def test_parse_size_uses_powers_of_1024(text, size):
    assert parse_size(text, "--memory") == size


@pytest.mark.parametrize("text", ["abc", "", "12x", "1mm", "-5m", "m", "1bm"])
def test_parse_size_rejects_bad_sizes(text):
    with pytest.raises(UsageError, match=f'invalid argument "{text}" for "--memory" flag: '
                                         "invalid size"):
        parse_size(text, "--memory")


@pytest.mark.parametrize("text", ["nan", "inf"])
def test_parse_size_rejects_non_numbers_with_a_usage_error(text):
    with pytest.raises(UsageError):
        parse_size(text, "--memory")


def test_parse_size_accepts_binary_suffixes():
    assert parse_size("512MiB", "--memory") == 512 << 20


# -- parse_ulimit ---------------------------------------------------------------------------

def test_ulimit_soft_and_hard():
    assert parse_ulimit("nofile=1024:2048") == Rlimit(type="RLIMIT_NOFILE", hard=2048, soft=1024)


def test_ulimit_soft_only_sets_hard_to_the_same():
    assert parse_ulimit("nproc=64") == Rlimit(type="RLIMIT_NPROC", hard=64, soft=64)


def test_ulimit_minus_one_is_unlimited():
    assert parse_ulimit("memlock=-1:-1") == Rlimit(type="RLIMIT_MEMLOCK", hard=UNLIMITED,
                                                   soft=UNLIMITED)
    assert parse_ulimit("core=0:-1") == Rlimit(type="RLIMIT_CORE", hard=UNLIMITED, soft=0)


def test_ulimit_soft_above_hard_is_rejected():
    with pytest.raises(UsageError, match="soft limit must be less than hard limit: 2048 > 1024"):
        parse_ulimit("nofile=2048:1024")


@pytest.mark.parametrize("text", ["bogus=1", "nofile", "NOFILE=1", "nofile=abc", "nofile=1:x"])
def test_ulimit_unknown_name_or_bad_value_is_rejected(text):
    with pytest.raises(UsageError, match="ulimit"):
        parse_ulimit(text)


# -- parse_volume ---------------------------------------------------------------------------

def test_volume_bind_is_read_write_rprivate_by_default():
    assert parse_volume("/srv/data:/data") == BindSpec("/srv/data", "/data", False, "rprivate")


def test_volume_ro_and_propagation_options():
    assert parse_volume("/srv/data:/data:ro,rshared") == BindSpec("/srv/data", "/data", True,
                                                                  "rshared")
    assert parse_volume("/srv/data:/data:rw,z").readonly is False


def test_volume_paths_are_normalised():
    assert parse_volume("/srv//data/../x/:/data/") == BindSpec("/srv/x", "/data", False, "rprivate")


def test_volume_relative_destination_is_rejected():
    with pytest.raises(InvalidArgument, match="mount path must be absolute"):
        parse_volume("/srv:data")


def test_named_volume_is_a_volume_spec():
    assert parse_volume("cache:/data:ro") == VolumeSpec("/data", "cache", readonly=True)


def test_a_lone_path_is_an_anonymous_volume():
    assert parse_volume("/data") == VolumeSpec("/data")


@pytest.mark.parametrize("text", ["/a:/b:bogus", "/a:/b:c:d"])
def test_volume_bad_mode_or_shape_is_rejected(text):
    with pytest.raises(InvalidArgument, match="invalid"):
        parse_volume(text)


# -- parse_security_opts --------------------------------------------------------------------

def test_no_security_opts_is_docker_default():
    assert parse_security_opts([]) == {"no_new_privileges": False, "seccomp_unconfined": False,
                                       "seccomp_file": None}


@pytest.mark.parametrize("opt, want", [("no-new-privileges", True),
                                       ("no-new-privileges=true", True),
                                       ("no-new-privileges:true", True),
                                       ("no-new-privileges=false", False)])
def test_no_new_privileges_forms(opt, want):
    assert parse_security_opts([opt])["no_new_privileges"] is want


def test_no_new_privileges_with_an_unreadable_value_is_rejected():
    with pytest.raises(InvalidArgument):
        parse_security_opts(["no-new-privileges=yes"])


@pytest.mark.parametrize("opt", ["seccomp=unconfined", "seccomp:unconfined"])
def test_seccomp_unconfined_in_new_and_old_form(opt):
    out = parse_security_opts([opt])
    assert out["seccomp_unconfined"] is True and out["seccomp_file"] is None


def test_seccomp_profile_file():
    assert parse_security_opts(["seccomp=/etc/profile.json"])["seccomp_file"] == "/etc/profile.json"


def test_label_and_apparmor_are_accepted_and_ignored():
    assert parse_security_opts(["label=disable", "apparmor=unconfined"]) == parse_security_opts([])


@pytest.mark.parametrize("opt", ["selinux=off", "seccomp=", "bogus"])
def test_unknown_security_opt_is_rejected(opt):
    with pytest.raises(InvalidArgument, match="invalid --security-opt"):
        parse_security_opts([opt])


# -- build_options --------------------------------------------------------------------------

def test_build_options_from_defaults_is_a_plain_container():
    opts, profile = build_options(defaults(), ["sh", "-c", "true"])
    assert profile is None
    assert opts.command == ("sh", "-c", "true")
    assert opts.entrypoint is None
    assert opts.network == "default" and opts.ipc == "private"
    assert opts.shm_size == DEFAULT_SHM_SIZE
    assert opts.memory is None and opts.cpus is None and opts.pids_limit is None


def test_empty_entrypoint_flag_becomes_an_empty_tuple():
    assert build_options(defaults(entrypoint=""), [])[0].entrypoint == ()
    assert build_options(defaults(entrypoint="/bin/sh"), [])[0].entrypoint == ("/bin/sh",)


def test_sizes_and_numbers_are_parsed():
    opts, _ = build_options(defaults(memory="32m", memory_swap="-1", shm_size="1g",
                                     pids_limit="100", cpu_shares="512", cpus="0.5"), [])
    assert opts.memory == 32 << 20 and opts.memory_swap == -1
    assert opts.shm_size == 1 << 30
    assert opts.pids_limit == 100 and opts.cpu_shares == 512 and opts.cpus == 0.5


def test_memory_below_6mb_is_rejected():
    with pytest.raises(InvalidArgument, match="Minimum memory limit allowed is 6MB"):
        build_options(defaults(memory="4m"), [])


def test_non_integer_pids_limit_is_a_usage_error():
    with pytest.raises(UsageError, match='invalid argument "lots" for "--pids-limit" flag'):
        build_options(defaults(pids_limit="lots"), [])


@pytest.mark.parametrize("cpus", ["0", "-1", "100000"])
def test_cpus_out_of_range_is_rejected(cpus):
    with pytest.raises(InvalidArgument, match="range of CPUs"):
        build_options(defaults(cpus=cpus), [])


def test_bridge_network_is_the_default_one_and_network_names_are_checked_at_create():
    assert build_options(defaults(network="bridge"), [])[0].network == "default"
    assert build_options(defaults(network="host"), [])[0].network == "host"
    # a user network is looked up when the container is created, not by the flag parser
    assert build_options(defaults(network="mynet"), [])[0].network == "mynet"
    with pytest.raises(InvalidArgument, match="network my/net not found"):
        build_options(defaults(network="my/net"), [])


def test_bare_env_name_takes_the_callers_value_or_is_dropped(monkeypatch):
    monkeypatch.setenv("BERTH_TEST_SET", "from-host")
    monkeypatch.delenv("BERTH_TEST_UNSET", raising=False)
    opts, _ = build_options(defaults(env=["BERTH_TEST_SET", "BERTH_TEST_UNSET", "A=1"]), [])
    assert opts.env == ("BERTH_TEST_SET=from-host", "A=1")


def test_env_file_lines_come_before_env_flags(tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text("# comment\n\nA=from-file\nB=2\n")
    opts, _ = build_options(defaults(env_file=[str(env_file)], env=["A=from-flag"]), [])
    assert opts.env == ("A=from-file", "B=2", "A=from-flag")


def test_sysctl_tmpfs_volume_ulimit_and_security_opts_are_parsed():
    opts, _ = build_options(defaults(sysctl=["net.core.somaxconn=1024"], tmpfs=["/run:size=1m"],
                                     volume=["/srv:/srv:ro"], ulimit=["nofile=10:20"],
                                     security_opt=["no-new-privileges", "seccomp=unconfined"],
                                     cap_add=["NET_ADMIN"], group_add=["audio"]), [])
    assert opts.sysctls == {"net.core.somaxconn": "1024"}
    assert opts.tmpfs == (("/run", "size=1m"),)
    assert opts.binds == (BindSpec("/srv", "/srv", True, "rprivate"),)
    assert opts.ulimits == (Rlimit(type="RLIMIT_NOFILE", hard=20, soft=10),)
    assert opts.no_new_privileges is True and opts.seccomp_unconfined is True
    assert opts.cap_add == ("NET_ADMIN",) and opts.group_add == ("audio",)


def test_sysctl_without_value_is_rejected():
    with pytest.raises(InvalidArgument, match="sysctl 'net.core.somaxconn' is not allowed"):
        build_options(defaults(sysctl=["net.core.somaxconn"]), [])


def test_relative_tmpfs_path_is_rejected():
    with pytest.raises(InvalidArgument, match="the path must be absolute"):
        build_options(defaults(tmpfs=["run"]), [])


def test_seccomp_profile_file_is_read_here(tmp_path):
    profile = tmp_path / "profile.json"
    profile.write_text('{"defaultAction": "SCMP_ACT_ALLOW"}')
    _, text = build_options(defaults(security_opt=[f"seccomp={profile}"]), [])
    assert text == '{"defaultAction": "SCMP_ACT_ALLOW"}'


def test_missing_seccomp_profile_file_is_an_invalid_argument(tmp_path):
    with pytest.raises(InvalidArgument, match="opening seccomp profile"):
        build_options(defaults(security_opt=[f"seccomp={tmp_path / 'nope.json'}"]), [])
