"""`.dockerignore`: which files of a build context a build may see, by Docker's (BuildKit's) rules.

* One pattern a line; a line whose first character is `#` is a comment; blank lines are skipped;
  surrounding blanks are trimmed. `!pattern` re-includes what earlier patterns excluded; the last
  pattern that matches a path decides.
* Patterns are cleaned like paths (`./a//b/../c` -> `a/c`) and a leading `/` is dropped: every pattern
  is relative to the context root. `*` is any run of characters but `/`, `?` one character but `/`,
  `[...]` a class (`[^...]` negated), `\\` quotes the next character, `**` any number of directories
  (zero included); a trailing `**` matches everything below.
* A pattern that matches a directory matches everything below it, unless a later `!` pattern
  re-includes a descendant: such a directory is still walked, and reported when it has a child kept.
* The ignore file is `<Dockerfile name>.dockerignore` beside the Dockerfile when that exists, else
  `<context>/.dockerignore`, else nothing is ignored.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from composer.errors import ComposerError, one_line

__all__ = ["DockerIgnore", "DockerIgnoreError"]


class DockerIgnoreError(ComposerError):
    """A bad pattern in an ignore file: renders `<file>:<line>: <message>`."""

    def __init__(self, message: str, *, file: str, line: int) -> None:
        super().__init__(message)
        self.file = file
        self.line = line

    def render(self) -> str:
        return one_line(f"{self.file}:{self.line}: {self.message}")


@dataclass(frozen=True, slots=True)
class _Pattern:
    text: str  # cleaned, without the `!`
    exclusion: bool  # a `!` pattern: re-includes
    kind: str  # "exact", "prefix" (trailing **), "suffix" (leading ** and literal rest), "regex"
    regex: re.Pattern[str] | None

    def match(self, path: str) -> bool:
        if self.kind == "exact":
            return path == self.text
        if self.kind == "prefix":
            return path.startswith(self.text[:-2])
        if self.kind == "suffix":
            tail = self.text[2:]
            return path.endswith(tail) or (tail.startswith("/") and path == tail[1:])
        assert self.regex is not None
        return self.regex.match(path) is not None


def _clean(path: str) -> str:
    """Go's filepath.Clean for slash paths: `.` for empty, one leading `/` at most."""
    cleaned = posixpath.normpath(path) if path else "."
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


def _compile(text: str) -> tuple[str, re.Pattern[str] | None]:
    """(kind, regex) for a cleaned pattern; ValueError when the pattern is malformed."""
    kind = "exact"
    out = ["^"]
    i, n = 0, len(text)
    while i < n:
        start = i
        ch = text[i]
        i += 1
        if ch == "*":
            if i < n and text[i] == "*":
                i += 1
                if i < n and text[i] == "/":
                    i += 1
                if i == n:  # trailing `**`: everything
                    if kind == "exact":
                        kind = "prefix"
                    else:
                        out.append(".*")
                        kind = "regex"
                else:
                    out.append("(.*/)?")
                    kind = "regex"
                if start == 0:
                    kind = "suffix"  # `**/name`: any path ending in /name, or name itself
            else:
                out.append("[^/]*")
                kind = "regex"
        elif ch == "?":
            out.append("[^/]")
            kind = "regex"
        elif ch == "\\":
            if i == n:
                raise ValueError("syntax error in pattern: it ends with an escaping backslash")
            out.append(re.escape(text[i]))
            i += 1
            kind = "regex"
        elif ch == "[":
            end, klass = _bracket(text, i)
            out.append(klass)
            i = end
            kind = "regex"
        elif ch == "]":
            raise ValueError("syntax error in pattern: ']' without '['")
        else:
            out.append(re.escape(ch))
    if kind != "regex":
        return kind, None
    return kind, re.compile("".join(out) + "$")


def _bracket(text: str, i: int) -> tuple[int, str]:
    """A `[...]` class starting after the `[` at text[i-1]: (index after `]`, regex class)."""
    out = ["["]
    if i < len(text) and text[i] == "^":
        out.append("^")
        i += 1
    first = True
    while True:
        if i >= len(text):
            raise ValueError("syntax error in pattern: '[' without ']'")
        ch = text[i]
        i += 1
        if ch == "]" and not first:
            break
        if ch == "]":
            raise ValueError("syntax error in pattern: empty character class")
        first = False
        if ch == "\\":
            if i >= len(text):
                raise ValueError("syntax error in pattern: '[' without ']'")
            ch = text[i]
            i += 1
        if ch == "-" and out[-1] != "[" and out[-1] != "^" and i < len(text) and text[i] != "]":
            out.append("-")
        else:
            out.append(re.escape(ch) if ch != "/" else "/")
    out.append("]")
    return i, "".join(out)


class DockerIgnore:
    """A compiled ignore file. Paths given to `ignored` are relative to the context, `/`-separated."""

    __slots__ = ("_patterns",)

    def __init__(self, patterns: Sequence[_Pattern] = ()) -> None:
        self._patterns = tuple(patterns)

    @classmethod
    def read(cls, context: Path, dockerfile: Path | None = None) -> DockerIgnore:
        """The ignore file for a build: `<Dockerfile>.dockerignore` beside the Dockerfile wins over
        `<context>/.dockerignore`; with neither, nothing is ignored."""
        candidates = []
        if dockerfile is not None:
            candidates.append(dockerfile.with_name(dockerfile.name + ".dockerignore"))
        candidates.append(context / ".dockerignore")
        for candidate in candidates:
            try:
                data = candidate.read_bytes()
            except (FileNotFoundError, NotADirectoryError):
                continue
            return cls.from_text(data.decode("utf-8", errors="surrogateescape"), filename=str(candidate))
        return cls()

    @classmethod
    def from_text(cls, text: str, *, filename: str = ".dockerignore") -> DockerIgnore:
        patterns = []
        for number, raw in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
            if raw.startswith("#"):
                continue
            line = raw.strip()
            if not line:
                continue
            exclusion = line.startswith("!")
            if exclusion:
                line = line[1:].strip()
                if not line:
                    raise DockerIgnoreError('illegal exclusion pattern: "!"', file=filename, line=number)
            line = _clean(line)
            if len(line) > 1 and line.startswith("/"):
                line = line[1:]
            try:
                kind, regex = _compile(line)
            except ValueError as err:
                raise DockerIgnoreError(f"{err}: {line!r}", file=filename, line=number) from None
            patterns.append(_Pattern(text=line, exclusion=exclusion, kind=kind, regex=regex))
        return cls(patterns)

    @property
    def patterns(self) -> tuple[str, ...]:
        """The cleaned patterns, `!` kept, in order (for messages and cache keys)."""
        return tuple(("!" if p.exclusion else "") + p.text for p in self._patterns)

    def ignored(self, relpath: str) -> bool:
        """Whether the path is left out of the build context. A pattern that matches a parent
        directory matches the path too; the last matching pattern decides."""
        path = _clean(relpath.replace(os.sep, "/")).lstrip("/")
        if path in ("", "."):
            return False
        parts = path.split("/")
        parents = ["/".join(parts[: i + 1]) for i in range(len(parts) - 1)]
        matched = False
        for pattern in self._patterns:
            if pattern.exclusion != matched:
                continue  # an include that already holds, or an exception to nothing
            if pattern.match(path) or any(pattern.match(parent) for parent in parents):
                matched = not pattern.exclusion
        return matched

    def _may_keep_below(self, directory: str) -> bool:
        """Whether some `!` pattern could re-include a path under this ignored directory."""
        dparts = directory.split("/")
        for pattern in self._patterns:
            if not pattern.exclusion:
                continue
            pparts = pattern.text.split("/")
            for i, dpart in enumerate(dparts):
                if i >= len(pparts):
                    return True  # the pattern names an ancestor: it covers this whole tree
                ppart = pparts[i]
                if "**" in ppart or "[" in ppart or "\\" in ppart:
                    return True  # too clever to prune on: walk it
                if not fnmatchcase(dpart, ppart):
                    break
            else:
                return True
        return False

    def walk(self, context: Path) -> Iterator[tuple[str, Path]]:
        """Every file, directory and symlink of the context that is not ignored, as (relpath, path),
        depth first with the entries of each directory sorted by name; symlinks are not followed.
        An ignored directory that holds a re-included path is reported just before its children."""
        yield from self._walk(context, "")

    def _walk(self, directory: Path, prefix: str) -> Iterator[tuple[str, Path]]:
        with os.scandir(directory) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
        for entry in entries:
            rel = f"{prefix}{entry.name}"
            path = Path(entry.path)
            is_dir = stat.S_ISDIR(entry.stat(follow_symlinks=False).st_mode)
            if not self.ignored(rel):
                yield rel, path
                if is_dir:
                    yield from self._walk(path, rel + "/")
            elif is_dir and self._may_keep_below(rel):
                below = list(self._walk(path, rel + "/"))
                if below:
                    yield rel, path
                    yield from below
