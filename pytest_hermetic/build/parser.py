"""The Containerfile grammar: directives, continuations, comments, flags, exec form.

What this module knows is syntax only (Docker's `dockerfile/parser`):
parser directives at the very top (`# escape=` is honoured, `# syntax=` and
`# check=` are noted and ignored: there is no frontend image to run), lines
joined at the escape character, comment lines dropped (also inside a
continuation), `--flag=value` options at the start of an instruction, and
the JSON exec form.  What an instruction means is `instructions.py`'s.
"""

from __future__ import annotations

import json
import re

from .._record import factory, record
from ..errors import BuildError

_DIRECTIVE = re.compile(r"#\s*([a-zA-Z][a-zA-Z0-9_-]*)\s*=\s*(.*?)\s*$")
_FLAG = re.compile(r"--([a-zA-Z][a-zA-Z0-9-]*)(?:=(\S*))?$")
_HEREDOC = re.compile(r"<<-?\s*['\"]?[A-Za-z_][A-Za-z0-9_]*['\"]?")


@record
class Instruction:
    keyword: str  # upper case: RUN, COPY, ...
    text: str  # everything after the keyword and its flags, continuations joined
    line: int  # where it starts (1-based)
    flags: dict = factory(dict)  # --name=value options given before the arguments
    exec_form: list | None = None  # the JSON array form, when `text` is one
    original: str = ""  # the instruction as written (continuations joined): for history and errors

    def where(self, source: str) -> str:
        return f"{source}:{self.line}: {self.keyword}"


@record
class Parsed:
    instructions: list = factory(list)
    escape: str = "\\"
    notes: list = factory(list)  # directives ignored, and why


def parse(text: str, source: str = "Containerfile") -> Parsed:
    """The instructions of a Containerfile; a syntax error is a `BuildError` naming its line."""
    result = Parsed()
    lines = text.splitlines()
    start = 0
    seen: set[str] = set()
    for number, line in enumerate(lines):  # directives: only before anything else, each once
        match = _DIRECTIVE.match(line.strip())
        if not match or not line.lstrip().startswith("#"):
            break
        name, value = match.group(1).lower(), match.group(2)
        if name in seen or name not in ("escape", "syntax", "check"):
            break
        seen.add(name)
        start = number + 1
        if name == "escape":
            if value not in ("\\", "`"):
                raise BuildError(f"{source}:{number + 1}: escape={value!r}: the escape character must be \\ or `")
            result.escape = value
        else:
            result.notes.append(f"{source}:{number + 1}: note: `# {name}={value}` ignored: hermetic builds with "
                                "its own Containerfile frontend")
    escape = result.escape
    number = start
    while number < len(lines):
        line = lines[number]
        first = number + 1
        number += 1
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = []
        current = line.rstrip()
        while current.endswith(escape):  # (Docker's rule: escape, blanks, end of line)
            parts.append(current[:-1])
            while number < len(lines) and (not lines[number].strip() or lines[number].lstrip().startswith("#")):
                number += 1  # comments and empty lines inside a continuation are dropped, as Docker does
            if number >= len(lines):
                current = ""
                break
            current = lines[number].rstrip()
            number += 1
        parts.append(current)
        joined = "".join(parts).strip()
        result.instructions.append(_instruction(joined, first, source))
    return result


def _instruction(joined: str, line: int, source: str) -> Instruction:
    keyword = joined.split(None, 1)[0]
    rest = joined[len(keyword):].strip()
    upper = keyword.upper()
    if not re.fullmatch(r"[A-Za-z]+", keyword):
        raise BuildError(f"{source}:{line}: {keyword!r} is not an instruction; an instruction is a word such as RUN or COPY")
    flags: dict[str, str] = {}
    if upper in ("FROM", "COPY", "ADD", "RUN", "HEALTHCHECK"):
        while rest.startswith("--"):
            word, _, after = rest.partition(" ")
            match = _FLAG.match(word)
            if not match:
                raise BuildError(f"{source}:{line}: {upper}: {word!r} is not a flag such as --from=NAME")
            name = match.group(1).lower()
            if match.group(2) is None and name not in ("link", "parents"):  # the switches; others take a value
                raise BuildError(f"{source}:{line}: {upper}: {word!r} is not a flag such as --{name}=VALUE")
            flags[name] = match.group(2) if match.group(2) is not None else "true"
            rest = after.strip()
    exec_form = None
    if rest.startswith("["):
        try:
            value = json.loads(rest)
        except ValueError:
            value = None  # not JSON: the shell form, as Docker reads it
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            exec_form = value
    if exec_form is None and upper in ("RUN", "COPY", "ADD") and _HEREDOC.search(rest):
        raise BuildError(f"{source}:{line}: {upper}: heredocs (<<EOF) are not supported by hermetic build; "
                         "write the script to a file in the context and COPY it, or use RUN with sh -c")
    return Instruction(upper, rest, line, flags, exec_form, joined)
