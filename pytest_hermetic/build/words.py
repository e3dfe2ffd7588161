"""Variable expansion and word splitting as Docker's `shell.Lex` does them.

Used for the instructions Docker expands at build time (FROM, COPY, ADD,
ENV, ARG, LABEL, WORKDIR, USER, EXPOSE, VOLUME, STOPSIGNAL): `$NAME`,
`${NAME}`, `${NAME:-word}`, `${NAME-word}`, `${NAME:+word}`, `${NAME+word}`;
single quotes keep everything, double quotes keep spaces and expand
variables, the escape character takes the next one literally.  RUN, CMD and
ENTRYPOINT are not expanded here: their shell does it when they run.
"""

from __future__ import annotations

import re

from ..errors import BuildError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def expand(text: str, env: dict[str, str], escape: str = "\\") -> str:
    """`text` as one word: variables expanded, quotes removed, spaces kept."""
    return "".join(_lex(text, env, escape, split=False)) if text else ""


def split(text: str, env: dict[str, str], escape: str = "\\") -> list[str]:
    """`text` as words: split at unquoted white space, each expanded."""
    return _lex(text, env, escape, split=True)


def _lex(text: str, env: dict[str, str], escape: str, split: bool) -> list[str]:
    words: list[str] = []
    current: list[str] = []
    started = False
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == escape:
            if i + 1 < n:
                current.append(text[i + 1])
                i += 2
            else:
                current.append(c)
                i += 1
            started = True
        elif c == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise BuildError(f"unmatched ' in {text!r}")
            current.append(text[i + 1:end])
            i, started = end + 1, True
        elif c == '"':
            i += 1
            while True:
                if i >= n:
                    raise BuildError(f'unmatched " in {text!r}')
                c = text[i]
                if c == '"':
                    i += 1
                    break
                if c == escape and i + 1 < n and text[i + 1] in ('"', escape, "$"):
                    current.append(text[i + 1])
                    i += 2
                elif c == "$":
                    value, i = _variable(text, i, env, escape)
                    current.append(value)
                else:
                    current.append(c)
                    i += 1
            started = True
        elif c == "$":
            value, i = _variable(text, i, env, escape)
            current.append(value)
            started = started or bool(value)
        elif split and c.isspace():
            if started or "".join(current):
                words.append("".join(current))
            current, started = [], False
            i += 1
        else:
            current.append(c)
            started = True
            i += 1
    if started or "".join(current) or not split:
        words.append("".join(current))
    return words


def _variable(text: str, i: int, env: dict[str, str], escape: str) -> tuple[str, int]:
    """The value of the variable at text[i] == '$', and the index after it."""
    if i + 1 < len(text) and text[i + 1] == "{":
        end = _closing_brace(text, i + 2)
        body = text[i + 2:end]
        match = _NAME.match(body)
        if not match:
            raise BuildError(f"bad substitution ${{{body}}} in {text!r}")
        name, rest = match.group(), body[match.end():]
        value = env.get(name)
        if not rest:
            return value or "", end + 1
        for op in (":-", ":+", ":?", "-", "+", "?"):
            if rest.startswith(op):
                word = expand(rest[len(op):], env, escape)
                unset = value is None or (op.startswith(":") and value == "")
                if op.endswith("-"):
                    return (word if unset else value or ""), end + 1
                if op.endswith("+"):
                    return ("" if unset else word), end + 1
                if unset:
                    raise BuildError(f"{name}: {word or 'is not set'}")
                return value or "", end + 1
        raise BuildError(f"bad substitution ${{{body}}} in {text!r}")
    match = _NAME.match(text, i + 1)
    if not match:
        return "$", i + 1
    return env.get(match.group()) or "", match.end()


def _closing_brace(text: str, start: int) -> int:
    depth = 1
    for j in range(start, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    raise BuildError(f"missing '}}' in {text!r}")
