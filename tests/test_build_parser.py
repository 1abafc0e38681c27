"""The Dockerfile language, without a build: parsing, substitution, .dockerignore rules and
the history text of metadata instructions. Pure functions, no root needed."""

from __future__ import annotations

import pytest

from berth.build import metadata
from berth.build.ignore import Ignore, read_ignore
from berth.build.metadata import parse_duration
from berth.build.parser import ParseError, parse, parse_instruction
from berth.build.shell import expand, expand_heredoc, expand_words
from berth.errors import InvalidArgument
from berth.oci import image as oci


def only(text: str):
    """The instructions of the single stage of `text`."""
    df = parse(text)
    assert len(df.stages) == 1
    return df.stages[0].instructions


# --- lines, comments, continuations, directives


def test_comments_and_blank_lines_are_skipped_and_lines_are_numbered():
    df = parse("# a comment\n\nFROM busybox\n   # indented comment\nRUN true\n")
    (run,) = df.stages[0].instructions
    assert (run.cmd, run.line, run.args) == ("RUN", 5, ("true",))
    assert df.stages[0].source.line == 3


def test_keywords_are_case_insensitive():
    (run,) = only("from busybox\nrun echo hi\n")
    assert run.cmd == "RUN"


def test_backslash_continues_a_line_and_the_joined_text_is_the_original():
    (run,) = only("FROM b\nRUN echo a \\\n    && echo b\n")
    assert run.original == "RUN echo a     && echo b"
    assert run.args == ("echo a     && echo b",)
    assert run.line == 2


def test_comments_and_blank_lines_inside_a_continuation_are_dropped():
    df = parse("FROM b\nRUN echo a \\\n# a comment\n\n  && echo b\nRUN next\n")
    first, second = df.stages[0].instructions
    assert first.args == ("echo a   && echo b",)
    assert second.line == 6
    assert df.warnings  # Docker warns about the empty continuation line


def test_escape_directive_makes_backtick_the_escape_character():
    df = parse("# escape=`\nFROM b\nRUN dir c:\\ `\n  && echo done\n")
    assert df.escape == "`"
    (run,) = df.stages[0].instructions
    assert run.args == ("dir c:\\   && echo done",)


def test_syntax_directive_is_read_and_directives_stop_at_the_first_other_line():
    df = parse("# syntax=docker/dockerfile:1\n# escape=`\nFROM b\n")
    assert (df.syntax, df.escape) == ("docker/dockerfile:1", "`")
    late = parse("# a comment\n# escape=`\nFROM b\n")
    assert late.escape == "\\"
    after_blank = parse("\n# escape=`\nFROM b\n")
    assert after_blank.escape == "\\"


def test_a_repeated_directive_and_a_bad_escape_are_errors():
    with pytest.raises(ParseError, match="only one escape parser directive"):
        parse("# escape=`\n# escape=\\\nFROM b\n")
    with pytest.raises(ParseError, match="invalid escape token"):
        parse("# escape=x\nFROM b\n")


def test_crlf_line_endings_and_a_byte_order_mark_are_accepted():
    (run,) = only("\ufeffFROM b\r\nRUN echo hi\r\n")
    assert run.args == ("echo hi",)


# --- errors name the file and the line


def test_unknown_instruction_names_file_and_line():
    with pytest.raises(ParseError) as info:
        parse("FROM b\nRUN true\n\nFOO bar\n", "Dockerfile")
    assert str(info.value) == "Dockerfile:4: unknown instruction: FOO"


def test_instructions_before_from_other_than_arg_are_errors():
    with pytest.raises(ParseError, match=r"^Dockerfile:1: RUN before the first FROM"):
        parse("RUN true\nFROM b\n")


def test_missing_arguments_are_errors_at_their_line():
    for text, message in (("FROM b\nCOPY onlyone\n", "COPY requires at least two arguments"),
                          ("FROM b\nENV\n", "ENV requires at least one argument"),
                          ("FROM a b\n", "FROM requires either one or three arguments"),
                          ("FROM b\nSHELL /bin/sh\n", "SHELL requires the arguments to be in JSON"),
                          ("FROM b\nWORKDIR\n", "WORKDIR requires exactly one argument")):
        with pytest.raises(ParseError, match=message) as info:
            parse(text)
        assert info.value.line == text.count("\n")


def test_a_file_without_from_is_an_error():
    with pytest.raises(ParseError, match="no FROM"):
        parse("ARG X=1\n")
    with pytest.raises(ParseError, match="no instructions"):
        parse("# nothing\n")


def test_unknown_and_repeated_flags_are_errors():
    with pytest.raises(ParseError, match="unknown flag: frm"):
        parse("FROM b\nCOPY --frm=x a b\n")
    with pytest.raises(ParseError, match="duplicate flag specified: chown"):
        parse("FROM b\nCOPY --chown=1 --chown=2 a b\n")
    with pytest.raises(ParseError, match="missing a value on flag: from"):
        parse("FROM b\nCOPY --from a b\n")
    with pytest.raises(ParseError, match="unknown flag: x"):
        parse("FROM b\nENV --x=1 A=b\n")


def test_bad_stage_names_and_duplicate_stage_names_are_errors():
    with pytest.raises(ParseError, match="invalid name for build stage"):
        parse("FROM b AS 1st\n")
    with pytest.raises(ParseError, match="duplicate name one"):
        parse("FROM b AS one\nFROM b AS ONE\n")


# --- forms of each instruction


def test_exec_form_is_a_json_array_and_anything_else_is_shell_form():
    run, cmd, entry, bad = only('FROM b\nRUN ["echo", "hi there"]\nCMD echo hi\n'
                                'ENTRYPOINT ["sh"] trailing\nCMD [not json\n')
    assert (run.exec_form, run.args) == (True, ("echo", "hi there"))
    assert (cmd.exec_form, cmd.args) == (False, ("echo hi",))
    assert (entry.exec_form, entry.args) == (True, ("sh",))  # as Docker's decoder: rest ignored
    assert (bad.exec_form, bad.args) == (False, ("[not json",))


def test_json_arrays_of_non_strings_are_errors():
    with pytest.raises(ParseError, match="arrays must be comprised of strings only"):
        parse('FROM b\nCMD ["a", 1]\n')


def test_copy_flags_and_sources_and_destination():
    (copy,) = only("FROM b\nCOPY --from=build --chown=1000:1000 --chmod=755 a b /dst/\n")
    assert copy.flags == (("from", "build"), ("chown", "1000:1000"), ("chmod", "755"))
    assert copy.args == ("a", "b", "/dst/")
    (json_copy,) = only('FROM b\nCOPY ["my file", "/dst/"]\n')
    assert json_copy.args == ("my file", "/dst/") and json_copy.exec_form


def test_flag_values_may_be_quoted_and_bool_flags_need_no_value():
    (copy,) = only('FROM b\nCOPY --link --chown="a b" x y\n')
    assert copy.flags == (("link", "true"), ("chown", "a b"))


def test_env_and_label_pairs_keep_their_quotes_for_substitution():
    env, label, legacy = only('FROM b\nENV A=1 B="two words" C=three\\ words\n'
                              'LABEL "com.example"="x y" v=1\nENV LEGACY hello   world\n')
    assert env.pairs == (("A", "1"), ("B", '"two words"'), ("C", "three\\ words"))
    assert label.pairs == (('"com.example"', '"x y"'), ("v", "1"))
    assert legacy.pairs == (("LEGACY", "hello   world"),)


def test_env_needs_name_value_pairs():
    with pytest.raises(ParseError, match="can't find = in"):
        parse("FROM b\nENV A=1 B\n")
    with pytest.raises(ParseError, match="must have two arguments"):
        parse("FROM b\nENV A\n")


def test_arg_may_have_no_default_and_several_names():
    (arg,) = only("FROM b\nARG A B=2 C=\n")
    assert arg.pairs == (("A", None), ("B", "2"), ("C", ""))


def test_args_before_from_are_the_global_ones():
    df = parse("ARG BASE=busybox\nARG TAG\nFROM ${BASE}:${TAG:-latest} AS build\nARG BASE\n")
    assert [a.pairs for a in df.meta_args] == [(("BASE", "busybox"),), (("TAG", None),)]
    stage = df.stages[0]
    assert (stage.base, stage.name) == ("${BASE}:${TAG:-latest}", "build")
    assert stage.instructions[0].pairs == (("BASE", None),)


def test_from_platform_flag_and_stage_lookup():
    df = parse("FROM --platform=linux/amd64 busybox AS One\nFROM one\n")
    assert df.stages[0].platform == "linux/amd64"
    assert df.stage("ONE") is df.stages[0]
    assert df.stage("1") is df.stages[1]
    assert df.stage("nope") is None


def test_healthcheck_forms_and_options():
    none, cmd, shell = only("FROM b\nHEALTHCHECK NONE\n"
                            'HEALTHCHECK --interval=30s --retries=3 CMD ["wget", "-q", "x"]\n'
                            "HEALTHCHECK --timeout=1m30s cmd wget -q x || exit 1\n")
    assert none.args == ("NONE",)
    assert cmd.args == ("CMD", "wget", "-q", "x") and cmd.exec_form
    assert cmd.flags == (("interval", "30s"), ("retries", "3"))
    assert shell.args == ("CMD", "wget -q x || exit 1") and not shell.exec_form


def test_healthcheck_errors():
    for text, message in (("HEALTHCHECK NONE x", "takes no arguments"),
                          ("HEALTHCHECK RUN x", 'Unknown type "RUN"'),
                          ("HEALTHCHECK --interval=1us CMD x", "cannot be less than 1ms"),
                          ("HEALTHCHECK --retries=-1 CMD x", "cannot be negative"),
                          ("HEALTHCHECK --interval=xs CMD x", "invalid duration")):
        with pytest.raises(ParseError, match=message):
            parse(f"FROM b\n{text}\n")


def test_durations_follow_go():
    assert parse_duration("1m30s") == 90_000_000_000
    assert parse_duration("1.5s") == 1_500_000_000
    assert parse_duration("300ms") == 300_000_000
    assert parse_duration("0") == 0
    assert metadata.go_duration(90_000_000_000) == "1m30s"
    assert metadata.go_duration(3_600_000_000_000) == "1h0m0s"
    assert metadata.go_duration(1_500_000_000) == "1.5s"
    assert metadata.go_duration(300_000_000) == "300ms"


def test_onbuild_holds_its_trigger_and_refuses_some_triggers():
    (onbuild,) = only("FROM b\nONBUILD COPY . /app\n")
    assert onbuild.args == ("COPY . /app",)
    assert onbuild.trigger.cmd == "COPY" and onbuild.trigger.args == (".", "/app")
    for trigger, message in (("ONBUILD x", "ONBUILD ONBUILD isn't allowed"),
                             ("FROM b", "FROM isn't allowed as an ONBUILD trigger"),
                             ("MAINTAINER me", "MAINTAINER isn't allowed")):
        with pytest.raises(ParseError, match=message):
            parse(f"FROM b\nONBUILD {trigger}\n")


def test_parse_instruction_reads_one_line():
    inst = parse_instruction("run echo hi", "Dockerfile", 7)
    assert (inst.cmd, inst.args, inst.line) == ("RUN", ("echo hi",), 7)


# --- here-documents


def test_run_heredoc_body_follows_the_instruction():
    df = parse("FROM b\nRUN <<EOF\necho one\necho two\nEOF\nRUN after\n")
    run, after = df.stages[0].instructions
    (doc,) = run.heredocs
    assert (doc.name, doc.content, doc.expand) == ("EOF", "echo one\necho two\n", True)
    assert after.line == 6


def test_heredoc_with_dash_strips_leading_tabs_and_quoted_name_does_not_expand():
    (run,) = only('FROM b\nRUN <<-"END"\n\techo $HOME\n\tEND\n')
    (doc,) = run.heredocs
    assert (doc.name, doc.content, doc.expand) == ("END", "echo $HOME\n", False)


def test_several_heredocs_on_one_line_are_read_in_order():
    (run,) = only("FROM b\nRUN cat <<A > /a && cat 3<<'B' > /b\nfirst\nA\nsecond\nB\n")
    assert [(d.name, d.content, d.fd) for d in run.heredocs] == [("A", "first\n", None),
                                                                ("B", "second\n", 3)]


def test_copy_heredoc_is_a_source():
    (copy,) = only("FROM b\nCOPY <<conf.txt /etc/app/\nkey=value\nconf.txt\n")
    assert copy.args == ("<<conf.txt", "/etc/app/")
    assert copy.heredocs[0].name == "conf.txt"
    assert copy.heredocs[0].content == "key=value\n"


def test_an_unterminated_heredoc_is_an_error():
    with pytest.raises(ParseError, match="unterminated heredoc EOF"):
        parse("FROM b\nRUN <<EOF\necho\n")


def test_a_left_shift_that_is_not_a_heredoc_is_left_alone():
    (run,) = only("FROM b\nRUN echo $((1<<3))\n")
    assert run.heredocs == ()


# --- variable substitution (Docker's shell lexer)

ENV = {"A": "apple", "EMPTY": "", "SP": "a b"}


@pytest.mark.parametrize("word,expected", [
    ("$A", "apple"),
    ("${A}", "apple"),
    ("x${A}y", "xappley"),
    ("$A.txt", "apple.txt"),
    ("$UNSET", ""),
    ("${UNSET:-default}", "default"),
    ("${EMPTY:-default}", "default"),
    ("${EMPTY-default}", ""),
    ("${UNSET-default}", "default"),
    ("${A:-default}", "apple"),
    ("${A:+alt}", "alt"),
    ("${EMPTY:+alt}", ""),
    ("${EMPTY+alt}", "alt"),
    ("${UNSET+alt}", ""),
    ("${UNSET:-$A}", "apple"),
    ("${UNSET:-'quoted $A'}", "quoted $A"),
    ("'$A'", "$A"),
    ('"$A"', "apple"),
    ('"a \\"q\\" $A"', 'a "q" apple'),
    ('"keep \\n"', "keep \\n"),
    ("\\$A", "$A"),
    ("a\\ b", "a b"),
    ("$", "$"),
    ("${A#ap}", "ple"),
    ("${A%le}", "app"),
    ("${A/p/P}", "aPple"),
    ("${A//p/P}", "aPPle"),
    ("$1", ""),
])
def test_substitution_follows_docker(word, expected):
    assert expand(word, ENV) == expected


def test_substitution_errors_name_the_word():
    with pytest.raises(InvalidArgument, match=r'failed to process "\${A": syntax error: missing'):
        expand("${A", ENV)
    with pytest.raises(InvalidArgument, match="bad substitution"):
        expand("${}", ENV)
    with pytest.raises(InvalidArgument, match="UNSET: is not allowed to be unset"):
        expand("${UNSET:?}", ENV)
    with pytest.raises(InvalidArgument, match="EMPTY: needed"):
        expand("${EMPTY:?needed}", ENV)
    with pytest.raises(InvalidArgument, match="matching single-quote"):
        expand("'open", ENV)


def test_backtick_escape_directive_applies_to_substitution():
    assert expand("`$A", ENV, "`") == "$A"
    assert expand("c:\\dir", ENV, "`") == "c:\\dir"


def test_words_split_on_unquoted_whitespace_including_expanded_values():
    assert expand_words("$SP 'c d' e", ENV) == ["a", "b", "c d", "e"]


def test_heredoc_bodies_expand_like_sh():
    assert expand_heredoc('echo "$A" \\$A \\\\ \\n\n', ENV) == 'echo "apple" $A \\ \\n\n'


# --- .dockerignore


def ignore(text: str) -> Ignore:
    return Ignore(read_ignore(text))


def test_dockerignore_patterns_match_paths_and_their_parents():
    rules = ignore("# comment\n*.log\n/build\nsecret/\n")
    assert rules.excluded("a.log")
    assert not rules.excluded("dir/a.log")  # * does not cross a /
    assert rules.excluded("build/out/x")  # the parent directory matches
    assert rules.excluded("secret/key")
    assert not rules.excluded("src/main.c")


def test_dockerignore_double_star_and_exceptions_last_match_wins():
    rules = ignore("**/*.tmp\nlogs\n!logs/keep.txt\n")
    assert rules.excluded("a/b/c.tmp") and rules.excluded("c.tmp")
    assert rules.excluded("logs/x.txt")
    assert not rules.excluded("logs/keep.txt")
    later = ignore("!keep.txt\n*.txt\n")
    assert later.excluded("keep.txt")


def test_dockerignore_question_mark_classes_and_escapes():
    rules = ignore("file?.txt\n[ab].c\nliteral\\*\n")
    assert rules.excluded("file1.txt") and not rules.excluded("file10.txt")
    assert rules.excluded("a.c") and not rules.excluded("c.c")
    assert rules.excluded("literal*") and not rules.excluded("literalx")


def test_dockerignore_cleans_patterns_as_docker_does():
    assert read_ignore("/a/../b/\n./c\n  d  \n!/e\n") == ["b", "c", "d", "!e"]


# --- history text of metadata instructions

BASE = oci.ContainerConfig(cmd=("sh",), env=("PATH=/bin",))


def applied(cmd: str, **kw):
    return metadata.apply(BASE, cmd, **kw)


def test_metadata_comments_are_dockers():
    assert applied("CMD", args=("echo hi",)).comment == 'CMD ["/bin/sh" "-c" "echo hi"]'
    assert applied("ENTRYPOINT", args=("sh",), exec_form=True).comment == 'ENTRYPOINT ["sh"]'
    assert applied("ENV", pairs=(("A", "1"), ("B", "two words"))).comment == "ENV A=1 B=two words"
    assert applied("VOLUME", args=("/a", "/b")).comment == "VOLUME [/a /b]"
    assert applied("SHELL", args=("/bin/bash", "-c")).comment == "SHELL [/bin/bash -c]"
    assert applied("EXPOSE", args=("80", "53/udp")).comment == "EXPOSE 80 53/udp"
    health = applied("HEALTHCHECK", args=("CMD", "wget -q x"), flags=(("interval", "5s"),
                                                                      ("retries", "3")))
    assert health.comment == "HEALTHCHECK &{[\"CMD-SHELL\" \"wget -q x\"] \"5s\" \"0s\" \"0s\" '\\x03'}"
    assert metadata.created_by(BASE, "CMD [\"sh\"]") == '/bin/sh -c #(nop)  CMD ["sh"]'
    assert metadata.created_by(BASE, "WORKDIR /a", one_space=True) == "/bin/sh -c #(nop) WORKDIR /a"


def test_metadata_changes_the_config_as_docker_does():
    env = applied("ENV", pairs=(("PATH", "/x"), ("NEW", "1"))).config
    assert env.env == ("PATH=/x", "NEW=1")  # replaced in place, new ones appended
    entry = applied("ENTRYPOINT", args=("run",), exec_form=True).config
    assert entry.entrypoint == ("run",) and entry.cmd is None  # the old CMD goes
    kept = metadata.apply(BASE, "ENTRYPOINT", args=("run",), exec_form=True, cmd_set=True).config
    assert kept.cmd == ("sh",)
    ports = applied("EXPOSE", args=("80", "8000-8001/udp")).config
    assert ports.exposed_ports == {"80/tcp": {}, "8000/udp": {}, "8001/udp": {}}
    health = applied("HEALTHCHECK", args=("NONE",)).config.healthcheck
    assert health.test == ("NONE",)
    shell_cmd = metadata.apply(applied("SHELL", args=("/bin/bash", "-c")).config, "CMD",
                               args=("x",)).config
    assert shell_cmd.cmd == ("/bin/bash", "-c", "x")


def test_metadata_refuses_bad_values():
    with pytest.raises(InvalidArgument, match="Invalid containerPort"):
        applied("EXPOSE", args=("http",))
    with pytest.raises(InvalidArgument, match="Invalid signal: SIGNOPE"):
        applied("STOPSIGNAL", args=("SIGNOPE",))
    with pytest.raises(InvalidArgument, match="can not be an empty string"):
        applied("VOLUME", args=("",))
