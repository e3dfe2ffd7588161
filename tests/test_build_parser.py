"""The Containerfile grammar, variable expansion, .containerignore patterns and metadata
instructions: pure functions, checked against what Docker's own parser does (no root needed)."""

from __future__ import annotations

import pytest

from pytest_hermetic.build import ignore, instructions, words
from pytest_hermetic.build.parser import parse
from pytest_hermetic.errors import BuildError


def test_continuations_comments_and_forms():
    parsed = parse(
        "# syntax=docker/dockerfile:1\n"
        "# escape=\\\n"
        "\n"
        "FROM busybox AS Build\n"
        "# a comment\n"
        "RUN echo one \\\n"
        "  # a comment inside the continuation is dropped\n"
        "\n"
        "    two \\   \n"
        "    three\n"
        "copy --from=build --chmod=755 [\"/a b\", \"/dest/\"]\n"
        "CMD [\"not json'\n"
        "ENTRYPOINT [\"/bin/app\", \"--flag\"]\n")
    assert [i.keyword for i in parsed.instructions] == ["FROM", "RUN", "COPY", "CMD", "ENTRYPOINT"]
    assert parsed.notes and "syntax=docker/dockerfile:1" in parsed.notes[0]
    run = parsed.instructions[1]
    assert run.text == "echo one     two     three" and run.line == 6 and run.exec_form is None
    copy = parsed.instructions[2]
    assert copy.flags == {"from": "build", "chmod": "755"} and copy.exec_form == ["/a b", "/dest/"]
    assert parsed.instructions[3].exec_form is None  # not JSON: the shell form, as Docker reads it
    assert parsed.instructions[4].exec_form == ["/bin/app", "--flag"]


def test_escape_directive_and_directives_only_at_the_top():
    parsed = parse("# escape=`\nFROM x\nRUN dir c:\\ `\n  && echo hi\n")
    assert parsed.escape == "`" and parsed.instructions[1].text == "dir c:\\   && echo hi"
    late = parse("FROM x\n# escape=`\nRUN a `\n")  # below an instruction it is a comment
    assert late.escape == "\\" and late.instructions[1].text == "a `"


def test_syntax_errors_name_the_line():
    with pytest.raises(BuildError, match=r"Containerfile:2: RUN: heredocs"):
        parse("FROM x\nRUN <<EOF\necho\nEOF\n")
    with pytest.raises(BuildError, match=r"Containerfile:1: escape='x'"):
        parse("# escape=x\nFROM x\n")
    with pytest.raises(BuildError, match=r"Containerfile:2: COPY: '--from' is not a flag such as --from=VALUE"):
        parse("FROM x\nCOPY --from a b\n")


@pytest.mark.parametrize(("text", "expected"), [
    ("$A", ["1"]), ("${A}x", ["1x"]), ("'$A'", ["$A"]), ('"$A b"', ["1 b"]), ("\\$A", ["$A"]),
    ("${UNSET:-d}", ["d"]), ("${A:-d}", ["1"]), ("${A:+set}", ["set"]), ("${UNSET:+set}", []),
    ("${EMPTY-d}", []), ("${EMPTY:-d}", ["d"]), ("a b  c", ["a", "b", "c"]), ("$", ["$"]),
    ("k=\"v w\" k2=$A", ["k=v w", "k2=1"]),
])
def test_words_as_docker_expands_them(text, expected):
    assert words.split(text, {"A": "1", "EMPTY": ""}) == expected


def test_unset_with_question_mark_fails():
    with pytest.raises(BuildError, match="X: needed"):
        words.expand("${X:?needed}", {})


@pytest.mark.parametrize(("patterns", "path", "out"), [
    ("*.key", "a.key", True), ("*.key", "d/a.key", False), ("**/*.key", "d/e/a.key", True),
    ("d", "d/e/f", True), ("d/*", "d/e", True), ("/d/e", "d/e", True), ("./d//e/", "d/e", True),
    ("*\n!keep.txt", "keep.txt", False), ("*\n!keep.txt", "other", True),
    ("d\n!d/e", "d/e/f", False), ("d\n!d/e\nd/e/f", "d/e/f", True), ("a?c", "abc", True),
    ("[a-c]x", "bx", True), ("[!a-c]x", "bx", False), ("# comment\n\n", "x", False),
    ("**", "any/thing", True), ("d/**/z", "d/z", True),
])
def test_containerignore_patterns(patterns, path, out):
    assert ignore.excluded(ignore.parse(patterns), path) is out


def _apply(lines: str, config: dict | None = None) -> dict:
    config = dict(config or {})
    facts: dict = {}
    for ins in parse(lines).instructions:
        instructions.apply(ins, config, dict(instructions.env_dict(config)), "\\", "here", facts)
    return config


def test_metadata_instructions_change_the_config_as_docker():
    config = _apply('ENV A=1 B="two words"\nENV C $A-x\nWORKDIR /a\nWORKDIR b/../c\nUSER app:app\n'
                    'LABEL x=y "z w"=v\nEXPOSE 80 53/udp\nVOLUME ["/data"]\nSTOPSIGNAL SIGINT\n'
                    'SHELL ["/bin/bash", "-c"]\nCMD echo hi\n')
    assert config["Env"] == ["A=1", "B=two words", "C=1-x"]
    assert config["WorkingDir"] == "/a/c" and config["User"] == "app:app"
    assert config["Labels"] == {"x": "y", "z w": "v"}
    assert config["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}} and config["Volumes"] == {"/data": {}}
    assert config["Cmd"] == ["/bin/bash", "-c", "echo hi"]  # the shell form takes SHELL


def test_entrypoint_drops_the_inherited_cmd_but_not_its_own():
    assert "Cmd" not in _apply('ENTRYPOINT ["/app"]\n', {"Cmd": ["sh"]})
    assert _apply('CMD ["x"]\nENTRYPOINT ["/app"]\n', {"Cmd": ["sh"]})["Cmd"] == ["x"]


def test_healthcheck():
    config = _apply('HEALTHCHECK --interval=1m30s --retries=3 CMD ["curl", "-f", "x"]\n')
    assert config["Healthcheck"] == {"Test": ["CMD", "curl", "-f", "x"], "Interval": 90 * 10**9, "Retries": 3}
    assert _apply("HEALTHCHECK NONE\n")["Healthcheck"] == {"Test": ["NONE"]}
    with pytest.raises(BuildError, match="not a duration"):
        _apply("HEALTHCHECK --interval=soon CMD true\n")
