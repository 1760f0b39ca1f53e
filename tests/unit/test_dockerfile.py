"""Dockerfile parsing and word rules, one inline Dockerfile per feature.

Line numbers were checked against BuildKit's own parser for the continuation, comment and heredoc
cases here.
"""

from __future__ import annotations

import pytest

from composer.image.dockerfile import (
    Dockerfile,
    DockerfileError,
    Heredoc,
    Instruction,
    expand,
    heredoc_name,
    key_values,
    onbuild_trigger,
    parse_dockerfile,
    parse_duration,
    split_shell_words,
)


def parse(text: str) -> Dockerfile:
    return parse_dockerfile(text, "Dockerfile")


def insts(text: str) -> list[Instruction]:
    return list(parse(text).stages[-1].instructions)


def one(text: str) -> Instruction:
    (inst,) = insts("FROM scratch\n" + text)
    return inst


def error(text: str) -> str:
    with pytest.raises(DockerfileError) as info:
        parse(text)
    return str(info.value)


ENV = {"A": "a", "EMPTY": "", "SP": "x y", "HOME": "/root"}


def lookup(name: str) -> str | None:
    return ENV.get(name)


# ---- lines, continuations, comments


def test_continuation_joins_lines_and_keeps_line_range() -> None:
    run = one("RUN apt-get update && \\\n    apt-get install -y nginx\n")
    assert run.keyword == "RUN"
    assert (run.line, run.end_line) == (2, 3)
    assert run.original == "RUN apt-get update &&     apt-get install -y nginx"
    assert run.args == ("apt-get update &&     apt-get install -y nginx",)


def test_comments_and_blank_lines_inside_a_continuation_are_skipped() -> None:
    df = parse("FROM x\nRUN echo a \\\n# a comment\n    b \\\n\n    c\nENV A=1\n")
    run, env = df.stages[0].instructions
    assert run.args == ("echo a     b     c",)
    assert (run.line, run.end_line) == (2, 6)
    assert (env.keyword, env.line) == ("ENV", 7)


def test_hash_in_the_middle_of_a_line_is_not_a_comment() -> None:
    assert one("RUN echo a # b\n").args == ("echo a # b",)


def test_escaped_escape_at_end_of_line_does_not_continue() -> None:
    first, second = insts("FROM x\nRUN echo \\\\\nRUN echo 2\n")
    assert first.args == ("echo \\\\",)
    assert (second.line, second.args) == (3, ("echo 2",))


def test_crlf_line_endings_and_bom() -> None:
    df = parse("\ufeffFROM x\r\nRUN a \\\r\n  b\r\n")
    (run,) = df.stages[0].instructions
    assert run.args == ("a   b",)
    assert (run.line, run.end_line) == (2, 3)


def test_keywords_are_case_insensitive() -> None:
    df = parse("from debian AS Build\nrun true\n")
    assert df.stages[0].name == "build"
    assert df.stages[0].instructions[0].keyword == "RUN"


def test_continuation_into_end_of_file_with_text_is_accepted_like_docker() -> None:
    assert one("RUN echo hi \\").args == ("echo hi",)


def test_continuation_into_end_of_file_with_nothing_is_an_error() -> None:
    assert (
        error("FROM x\nRUN \\\n")
        == "Dockerfile:2: line continuation at the end of the file with nothing after it"
    )


# ---- directives


def test_escape_directive_backtick() -> None:
    df = parse("# escape=`\nFROM x\nRUN dir c:\\ `\n  && echo hi\n")
    assert df.escape == "`"
    (run,) = df.stages[0].instructions
    assert run.args == ("dir c:\\   && echo hi",)
    assert (run.line, run.end_line) == (3, 4)


def test_escape_directive_after_a_comment_is_only_a_comment() -> None:
    df = parse("# hello\n# escape=`\nFROM x\nRUN a \\\n b\n")
    assert df.escape == "\\"
    assert df.stages[0].instructions[0].args == ("a  b",)


def test_syntax_and_escape_directives_together_and_bad_escape() -> None:
    assert parse("# syntax=docker/dockerfile:1\n# escape=`\nFROM x\n").escape == "`"
    assert error("# escape=x\nFROM x\n") == "Dockerfile:1: invalid escape token 'x' does not match ` or \\"
    assert (
        error("# escape=`\n# escape=\\\nFROM x\n")
        == "Dockerfile:2: only one escape parser directive can be used"
    )


# ---- forms and flags


def test_json_and_shell_forms() -> None:
    cmd_json, cmd_shell, run_test = insts('FROM x\nCMD ["echo", "hi"]\nCMD echo hi\nRUN [ -f /x ] && echo\n')
    assert (cmd_json.json_form, cmd_json.args) == (True, ("echo", "hi"))
    assert (cmd_shell.json_form, cmd_shell.args) == (False, ("echo hi",))
    assert (run_test.json_form, run_test.args) == (False, ("[ -f /x ] && echo",))


def test_copy_json_form_and_volume_json_form() -> None:
    copy, volume = insts('FROM x\nCOPY ["a b", "/dst dir/"]\nVOLUME ["/data", "/logs"]\n')
    assert copy.json_form and copy.args == ("a b", "/dst dir/")
    assert volume.json_form and volume.args == ("/data", "/logs")


def test_json_errors() -> None:
    assert error('FROM x\nCMD ["a", 1]\n') == (
        "Dockerfile:2: CMD: when using JSON array syntax, arrays must be comprised of strings only"
    )
    message = error("FROM x\nCMD ['nginx', '-g']\n")
    assert message.startswith("Dockerfile:2: CMD: \"['nginx', '-g']\" is not a valid JSON array")
    assert "SHELL requires the arguments to be in JSON form" in error("FROM x\nSHELL /bin/bash -c\n")


def test_flags_in_order_with_raw_values() -> None:
    copy = one("COPY --from=build --chown=1000:1000 --chmod=755 --link src /dst\n")
    assert copy.flags == (("from", "build"), ("chown", "1000:1000"), ("chmod", "755"), ("link", "true"))
    assert copy.args == ("src /dst",)
    assert copy.flag("from") == "build" and copy.flag("platform") is None


def test_repeatable_flags_and_quoted_flag_values() -> None:
    run = one('RUN --mount=type=cache,target=/a --mount="type=tmpfs,target=/b" echo\n')
    assert run.flag_values("mount") == ("type=cache,target=/a", "type=tmpfs,target=/b")
    assert run.args == ("echo",)


def test_double_dash_ends_flags() -> None:
    assert one("COPY --link=false -- --odd /dst\n").args == ("--odd /dst",)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("COPY --form=x a b", "unknown flag --form for COPY"),
        ("COPY --chown a b", "missing a value on flag --chown (write --chown=VALUE)"),
        ("COPY --link=maybe a b", "expecting a boolean value for flag --link, not 'maybe'"),
        ("COPY --from=a --from=b a b", "duplicate flag specified: --from"),
        ("WORKDIR --x=1 /a", "unknown flag --x for WORKDIR (it accepts: none)"),
    ],
)
def test_bad_flags(line: str, message: str) -> None:
    assert error(f"FROM x\n{line}\n").startswith(f"Dockerfile:2: {message}")


# ---- stages


def test_stages_meta_args_platform_and_names() -> None:
    df = parse(
        "ARG BASE=debian\nARG TAG\n"
        "FROM --platform=linux/amd64 ${BASE}:${TAG:-bookworm} AS Build\nRUN make\n"
        "FROM scratch\nCOPY --from=build /out /\n"
    )
    assert [(a.keyword, a.args) for a in df.meta_args] == [("ARG", ("BASE=debian",)), ("ARG", ("TAG",))]
    build, final = df.stages
    assert (build.index, build.name, build.base, build.platform, build.line) == (
        0, "build", "${BASE}:${TAG:-bookworm}", "linux/amd64", 3,
    )  # fmt: skip
    assert [i.keyword for i in build.instructions] == ["RUN"]
    assert (final.index, final.name, final.base, final.platform, final.line) == (1, None, "scratch", None, 5)
    assert df.stage("BUILD") is build and df.stage("1") is final and df.stage("nope") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("RUN x\n", "Dockerfile:1: RUN before the first FROM (only ARG may come before FROM)"),
        ("ARG A\n", "Dockerfile:1: no FROM instruction: a Dockerfile must have at least one stage"),
        ("# only a comment\n\n", "Dockerfile:2: the Dockerfile has no instructions"),
        ("FROM a AS x\nFROM b AS X\n", "Dockerfile:2: duplicate stage name 'x' (first used on line 1)"),
        ("FROM a AS 1x\n", "Dockerfile:1: invalid name for build stage: '1x'"),
        ("FROM a b\n", "Dockerfile:1: FROM requires either one or three arguments"),
        ("FROM\n", "Dockerfile:1: FROM requires either one or three arguments"),
    ],
)
def test_stage_errors(text: str, message: str) -> None:
    assert error(text).startswith(message)


def test_unknown_instruction_suggests_the_closest() -> None:
    assert error("FROM x\nCOPPY a b\n") == "Dockerfile:2: unknown instruction: COPPY (did you mean COPY?)"
    assert error("FROM x\nFROBNICATE\n") == "Dockerfile:2: unknown instruction: FROBNICATE"


def test_error_renders_on_one_line_with_attributes() -> None:
    with pytest.raises(DockerfileError) as info:
        parse_dockerfile("FROM x\nBAD\n", "svc/Dockerfile")
    assert (info.value.file, info.value.line) == ("svc/Dockerfile", 2)
    assert str(info.value) == "svc/Dockerfile:2: unknown instruction: BAD (did you mean ADD?)"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("COPY onlyone", "COPY requires at least two arguments"),
        ("ADD", "ADD requires at least two arguments"),
        ("COPY a <<EOF", "COPY cannot accept a heredoc as a destination"),
        ('COPY "a /b', "unexpected end of statement while looking for matching double-quote"),
        ("ENV", "ENV requires at least one argument"),
        ("ENV A", "ENV must have two arguments"),
        ("ENV A=1 B", "syntax error: can't find = in 'B'"),
        ("LABEL =x", "LABEL names can not be blank"),
        ("ARG =x", "ARG names can not be blank"),
        ("WORKDIR", "WORKDIR requires exactly one argument"),
        ("RUN", "RUN requires at least one argument"),
        ("EXPOSE", "EXPOSE requires at least one non-empty argument"),
        ('VOLUME [""]', "VOLUME requires at least one non-empty argument"),
        ("ONBUILD", "ONBUILD requires at least one argument"),
        ("ONBUILD ONBUILD RUN x", "ONBUILD isn't allowed as an ONBUILD trigger"),
        ("ONBUILD FROM x", "FROM isn't allowed as an ONBUILD trigger"),
    ],
)
def test_argument_errors(line: str, message: str) -> None:
    assert message in error(f"FROM x\n{line}\n")
    assert error(f"FROM x\n{line}\n").startswith("Dockerfile:2: ")


# ---- ONBUILD and HEALTHCHECK


def test_onbuild_keeps_the_trigger_as_a_sub_instruction() -> None:
    inst = one("ONBUILD COPY --chown=1:1 . /app\n")
    assert inst.keyword == "ONBUILD" and inst.args == ("COPY --chown=1:1 . /app",)
    assert inst.sub is not None
    assert (inst.sub.keyword, inst.sub.flags, inst.sub.args) == ("COPY", (("chown", "1:1"),), (". /app",))
    assert onbuild_trigger(inst) == "COPY --chown=1:1 . /app"


def test_healthcheck_cmd_forms_and_options() -> None:
    shell, exec_, none = insts(
        "FROM x\nHEALTHCHECK --interval=5s --retries=3 CMD curl -f http://localhost/\n"
        'HEALTHCHECK CMD ["pg_isready"]\nHEALTHCHECK NONE\n'
    )
    assert shell.flags == (("interval", "5s"), ("retries", "3"))
    assert shell.args == ("CMD",)
    assert shell.sub is not None and shell.sub.keyword == "CMD"
    assert (shell.sub.json_form, shell.sub.args) == (False, ("curl -f http://localhost/",))
    assert exec_.sub is not None and (exec_.sub.json_form, exec_.sub.args) == (True, ("pg_isready",))
    assert (none.args, none.sub) == (("NONE",), None)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("HEALTHCHECK NONE x", "HEALTHCHECK NONE takes no arguments"),
        ("HEALTHCHECK TEST x", "unknown type 'TEST' in HEALTHCHECK (try CMD)"),
        ("HEALTHCHECK CMD", "missing command after HEALTHCHECK CMD"),
        ("HEALTHCHECK --interval=5 CMD x", "--interval: invalid duration '5'"),
        ("HEALTHCHECK --timeout=0s CMD x", "--timeout cannot be less than 1ms"),
        ("HEALTHCHECK --retries=0 CMD x", "--retries must be an integer of at least 1"),
    ],
)
def test_healthcheck_errors(line: str, message: str) -> None:
    assert error(f"FROM x\n{line}\n").startswith(f"Dockerfile:2: {message}")


def test_parse_duration() -> None:
    assert parse_duration("30s") == 30 * 10**9
    assert parse_duration("1m30s") == 90 * 10**9
    assert parse_duration("1.5h") == 5400 * 10**9
    assert parse_duration("250ms") == 250_000_000
    assert parse_duration("0") == 0
    for bad in ("", "5", "s", "1x", "1s2"):
        with pytest.raises(ValueError):
            parse_duration(bad)


# ---- heredocs


def test_run_heredoc() -> None:
    run, env = insts("FROM x\nRUN <<EOF\necho hi\necho there\nEOF\nENV A=1\n")
    assert run.args == ("<<EOF",)
    assert run.heredocs == (Heredoc(name="EOF", content="echo hi\necho there\n", expand=True, chomp=False),)
    assert (run.line, run.end_line) == (2, 5)
    assert env.line == 6


def test_copy_heredoc_to_a_path() -> None:
    copy = one("COPY <<EOF /etc/motd\nhello $USER\n\nbye\nEOF\n")
    assert copy.args == ("<<EOF /etc/motd",)
    assert copy.heredocs == (Heredoc(name="EOF", content="hello $USER\n\nbye\n", expand=True, chomp=False),)
    assert heredoc_name(split_shell_words(copy.args[0])[0]) == "EOF"


def test_several_heredocs_on_one_line_are_read_in_order() -> None:
    run, env = insts("FROM x\nRUN <<A cat > /a && <<B cat > /b\nfile a\nA\nfile b\nB\nENV Z=1\n")
    assert [(h.name, h.content) for h in run.heredocs] == [("A", "file a\n"), ("B", "file b\n")]
    assert (run.end_line, env.line) == (6, 7)


def test_chomped_heredoc_strips_leading_tabs_from_body_and_terminator() -> None:
    run = one("RUN <<-EOF\n\techo hi\n\t\tnested\n\tEOF\n")
    assert run.heredocs == (Heredoc(name="EOF", content="echo hi\nnested\n", expand=True, chomp=True),)


@pytest.mark.parametrize("delimiter", ["'EOF'", '"EOF"', "E'OF'"])
def test_quoted_delimiter_turns_off_expansion(delimiter: str) -> None:
    run = one(f"RUN <<{delimiter}\necho $HOME\nEOF\n")
    assert run.heredocs == (Heredoc(name="EOF", content="echo $HOME\n", expand=False, chomp=False),)


def test_heredoc_with_file_descriptor_and_continuation_before_it() -> None:
    run = one("RUN python3 \\\n  3<<EOF\nprint(1)\nEOF\n")
    assert run.heredocs == (Heredoc(name="EOF", content="print(1)\n", expand=True, chomp=False, fd=3),)
    assert (run.line, run.end_line) == (2, 5)


def test_heredoc_lookalikes_are_not_heredocs() -> None:
    quoted, glued, json_form = insts('FROM x\nRUN echo "<<EOF"\nRUN cat<<EOF\nRUN ["cat", "<<EOF"]\n')
    assert quoted.heredocs == glued.heredocs == json_form.heredocs == ()
    assert json_form.end_line == 4
    assert one("ENV A=<<EOF\n").heredocs == ()


def test_onbuild_heredoc() -> None:
    inst = one("ONBUILD RUN <<EOF\necho built\nEOF\n")
    assert inst.sub is not None and inst.sub.heredocs == inst.heredocs
    assert [h.content for h in inst.heredocs] == ["echo built\n"]
    assert onbuild_trigger(inst) == "RUN <<EOF\necho built\nEOF"


def test_unterminated_heredoc() -> None:
    assert (
        error("FROM x\nRUN <<EOF\necho hi\n")
        == "Dockerfile:2: unterminated heredoc <<EOF: no line 'EOF' after it"
    )


# ---- substitution


@pytest.mark.parametrize(
    ("word", "result"),
    [
        ("$A", "a"),
        ("${A}b", "ab"),
        ("$Ab", ""),
        ("${NOPE}", ""),
        ("${A:-x}", "a"),
        ("${EMPTY:-x}", "x"),
        ("${EMPTY-x}", ""),
        ("${NOPE-x}", "x"),
        ("${A:+x}", "x"),
        ("${EMPTY:+x}", ""),
        ("${EMPTY+x}", "x"),
        ("${NOPE+x}", ""),
        ("${A:?must}", "a"),
        ("${NOPE:-$A$A}", "aa"),
        ("${NOPE:-${A}}", "a"),
        ("\\$A", "$A"),
        ("'$A'", "$A"),
        ('"$A"', "a"),
        ('"\\$A \\" \\q"', '$A " \\q'),
        ("a\\ b", "a b"),
        ("$", "$"),
        ("$1", ""),
        ("${HOME#/}", "root"),
        ("${HOME%t}", "/roo"),
        ("${HOME/o/0}", "/r0ot"),
        ("${HOME//o/0}", "/r00t"),
        ("x${SP}y", "xx yy"),
    ],
)
def test_expand(word: str, result: str) -> None:
    assert expand(word, lookup) == result


def test_expand_trims_shortest_and_longest() -> None:
    env = {"F": "a.tar.gz"}.get
    assert expand("${F%.*}", env) == "a.tar"
    assert expand("${F%%.*}", env) == "a"
    assert expand("${F#*.}", env) == "tar.gz"
    assert expand("${F##*.}", env) == "gz"


@pytest.mark.parametrize(
    ("word", "message"),
    [
        ("${NOPE:?is required}", "NOPE: is required"),
        ("${NOPE?}", "NOPE: is not allowed to be unset"),
        ("${EMPTY:?}", "EMPTY: is not allowed to be empty"),
        ("${A", "syntax error: missing '}'"),
        ("${A:-x", "syntax error: missing '}'"),
        ("${}", "syntax error: bad substitution"),
        ("${A:x}", "unsupported modifier (:x) in substitution"),
        ("'abc", "unexpected end of statement while looking for matching single-quote"),
    ],
)
def test_expand_errors(word: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        expand(word, lookup)
    assert str(info.value).startswith(message)


def test_expand_with_backtick_escape_and_without_quote_processing() -> None:
    assert expand("`$A\\", lookup, escape="`") == "$A\\"
    assert expand("echo \"$A\" '$A'", lookup, quotes=False) == "echo \"a\" 'a'"


def test_split_shell_words() -> None:
    assert split_shell_words("a \"b c\" d\\ e '$A' $A") == ["a", "b c", "d e", "$A", "$A"]
    assert split_shell_words('a "b c" $A ${SP}', lookup) == ["a", "b c", "a", "x y"]
    assert split_shell_words('"" x') == ["", "x"]
    with pytest.raises(ValueError, match="matching double-quote"):
        split_shell_words('"a b')


def test_key_values_env_label_and_legacy() -> None:
    env = one('ENV A=1 B="two words" C=${A:-z} D=\\$A\n')
    assert key_values(env, lookup) == [("A", "1"), ("B", "two words"), ("C", "a"), ("D", "$A")]
    legacy = one('ENV PATH /usr/local/bin:$HOME  "with quotes"\n')
    assert key_values(legacy, lookup) == [("PATH", "/usr/local/bin:/root  with quotes")]
    label = one('LABEL "org.title"="My App" version=1\n')
    assert key_values(label, lookup) == [("org.title", "My App"), ("version", "1")]


def test_key_values_arg() -> None:
    arg = one('ARG A B=1 C="x $A" D=\n')
    assert key_values(arg, lookup) == [("A", None), ("B", "1"), ("C", "x a"), ("D", "")]


def test_heredoc_name() -> None:
    assert heredoc_name("<<EOF") == "EOF"
    assert heredoc_name("<<-'END'") == "END"
    assert heredoc_name("3<<X") == "X"
    assert heredoc_name("<<") is None and heredoc_name("a<<EOF") is None and heredoc_name("/dst") is None
