"""`.containerignore` / `.dockerignore`: Docker's pattern semantics (moby/patternmatcher).

One pattern a line, `#` comments, blank lines skipped; each pattern is
cleaned (`./a//b/` is `a/b`, a leading `/` dropped) and matched against the
path relative to the context: `*` and `?` within one path component, `[...]`
classes, `**` any number of components, `\\` escapes.  A pattern that
matches a folder excludes what is in it.  `!pattern` takes paths back in;
the last pattern that matches a path (or a folder above it) decides.
"""

from __future__ import annotations

import os
import posixpath
import re

from .._record import record

IGNORE_FILES = (".containerignore", ".dockerignore")


@record
class Pattern:
    regex: re.Pattern
    exclude: bool  # False for `!pattern`
    text: str


def read(context: str, containerfile: str | None = None) -> list[Pattern]:
    """The patterns of the context (`Containerfile.containerignore` beside the file first, as podman and Docker)."""
    candidates = []
    if containerfile:
        candidates += [containerfile + ".containerignore", containerfile + ".dockerignore"]
    candidates += [os.path.join(context, name) for name in IGNORE_FILES]
    for path in candidates:
        try:
            with open(path, encoding="utf-8") as f:
                return parse(f.read())
        except FileNotFoundError:
            continue
    return []


def parse(text: str) -> list[Pattern]:
    patterns = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exclude = not line.startswith("!")
        if not exclude:
            line = line[1:].strip()
        cleaned = posixpath.normpath(line).lstrip("/") if line else ""
        if cleaned in ("", "."):
            continue
        patterns.append(Pattern(re.compile(_translate(cleaned)), exclude, line))
    return patterns


def _translate(pattern: str) -> str:
    out = ["^"]
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                i += 2
                if i < n and pattern[i] == "/":
                    out.append("(?:.*/)?")  # `**/` : zero or more folders
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:end]
                if body.startswith(("!", "^")):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    out.append("$")
    return "".join(out)


def excluded(patterns: list[Pattern], rel: str) -> bool:
    """Whether `rel` (relative to the context, `/`-separated) is left out of it."""
    if not patterns:
        return False
    parents = []
    head = rel
    while "/" in head:
        head = head.rsplit("/", 1)[0]
        parents.append(head)
    result = False
    for pattern in patterns:
        if pattern.exclude == result:
            continue  # cannot change the answer
        if pattern.regex.match(rel) or any(pattern.regex.match(parent) for parent in parents):
            result = pattern.exclude
    return result
