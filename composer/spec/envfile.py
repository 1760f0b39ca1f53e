"""The `.env` / `env_file` formats: Compose's own dotenv grammar, and `format: raw`.

PURE: the caller reads the file and hands in its text, its name (for errors) and a lookup.

Compose's grammar (compose-semantics.md §2.5; behaviour checked against docker-compose 2.26),
which is not python-dotenv's:

* a UTF-8 BOM is skipped; blank lines and lines whose first non-blank character is `#` are skipped;
* `export ` before a key is ignored; the key may hold letters, digits, `_ . - [ ]`; `=` or `:`
  separates it from the value; blanks around the key and after the separator are dropped;
* a bare `KEY` takes its value from the lookup, and is left out when the lookup has none;
* an unquoted value runs to the end of the line, is cut at the first ` #`, right-trimmed, then
  interpolated (`$V`, `${V:-d}` ..., see interpolate.py);
* `'...'` is literal and may span lines; `\\'` gives `'`, any other backslash stays;
* `"..."` may span lines; `\\"` gives `"`; then `\\a \\b \\f \\n \\r \\t \\v \\\\` and `\\0NNN` (octal)
  are decoded, `\\$` becomes a literal `$`, and the result is interpolated;
* whatever follows a closing quote on the same line is read as the next statement (as Compose
  does: `A="x" B=2` sets both);
* while expanding, a name is looked up in `lookup` first (OS + already-loaded environment), then
  in the keys defined earlier in the same file.

Where Compose misbehaves we do not follow it: a bare `KEY` on the last line without a newline is
inherited (Compose stores it under the empty name), `=value` with no name is an error (Compose
stores it under the empty name), and a key with a tab inside is rejected like one with a space.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Callable

from composer.errors import Location, SpecError
from composer.spec.interpolate import TemplateError, substitute

__all__ = ["parse_dotenv", "parse_raw_envfile"]

Lookup = Callable[[str], str | None]
Warn = Callable[[str], None]

_BOM = "\ufeff"
# Blanks inside a statement (Compose's isSpace): never a newline.
_BLANKS = frozenset("\t\v\f\r \x85\xa0")
# Go's unicode.IsSpace; Python's str.isspace also counts the \x1c-\x1f separators.
_NOT_GO_SPACE = frozenset("\x1c\x1d\x1e\x1f")
_EXPORT = re.compile(r"export[\t\n\f\r ]+")
_ESCAPE = re.compile(r'\\(?:[abcfnrtv$"\\]|0[0-9]{0,3})')
_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    '"': '"',
    "$": "$$",  # a literal `$` for the interpolation that follows
}


def _is_go_space(char: str) -> bool:
    return char.isspace() and char not in _NOT_GO_SPACE


def _rstrip_go_space(text: str) -> str:
    end = len(text)
    while end and _is_go_space(text[end - 1]):
        end -= 1
    return text[:end]


def _is_key_char(char: str) -> bool:
    if char in "_.-[]":
        return True
    if char.isascii():
        return char.isalnum()
    category = unicodedata.category(char)
    return category[0] in "LN"


def _go_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _decode_escape(match: re.Match[str]) -> str:
    """One escape inside double quotes, decoded as Compose does (Go's UnquoteChar rules)."""
    sequence = match.group()
    char = sequence[1]
    if char != "0":
        return _SIMPLE_ESCAPES.get(char, sequence)  # `\c` is matched but kept as is
    digits = sequence[2:]
    # Compose rewrites `\0NNN` to `\NNN`: exactly three octal digits, at most 0o377, make a character.
    if len(digits) == 3 and all(d in "01234567" for d in digits) and int(digits, 8) <= 0o377:
        return chr(int(digits, 8))
    return "\\" + digits


def _expand_escapes(text: str) -> str:
    if "\\" not in text:
        return text
    return _ESCAPE.sub(_decode_escape, text)


class _Parser:
    def __init__(self, text: str, filename: str, lookup: Lookup, warn: Warn | None) -> None:
        self.text = text
        self.filename = filename
        self.lookup = lookup
        self.warn = warn
        self.out: dict[str, str] = {}
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        # A BOM is skipped but does not count as a column.
        self.column_shift = 1 if text.startswith(_BOM) else 0

    def location(self, pos: int) -> Location:
        line = bisect.bisect_right(self.line_starts, pos) - 1
        col = pos - self.line_starts[line] + 1
        if line == 0:
            col -= self.column_shift
        return Location(self.filename, line + 1, max(col, 1))

    def fail(self, message: str, pos: int) -> SpecError:
        return SpecError(message, location=self.location(pos))

    def lookup_in_scope(self, name: str) -> str | None:
        value = self.lookup(name)
        if value is None:
            value = self.out.get(name)
        return value

    def expand(self, value: str, pos: int) -> str:
        if "$" not in value:
            return value
        try:
            return substitute(value, self.lookup_in_scope, warn=self.warn)
        except TemplateError as exc:
            raise self.fail(exc.message, pos) from None

    def statement_start(self, pos: int) -> int:
        """Index of the next statement, skipping blanks and comment lines; -1 at the end."""
        text, end = self.text, len(self.text)
        while True:
            while pos < end and _is_go_space(text[pos]):
                pos += 1
            if pos >= end:
                return -1
            if text[pos] != "#":
                return pos
            newline = text.find("\n", pos)
            if newline < 0:
                return -1
            pos = newline

    def skip_blanks(self, pos: int) -> int:
        text, end = self.text, len(self.text)
        while pos < end and text[pos] in _BLANKS:
            pos += 1
        return pos

    def parse(self) -> dict[str, str]:
        pos = 1 if self.text.startswith(_BOM) else 0
        while True:
            pos = self.statement_start(pos)
            if pos < 0:
                return self.out
            pos = self.statement(pos)

    def statement(self, start: int) -> int:
        text, end = self.text, len(self.text)
        export = _EXPORT.match(text, start)
        key_start = self.skip_blanks(start + 6) if export else start
        pos = key_start
        separator = ""
        while pos < end:
            char = text[pos]
            if char in "=:\n":
                separator = char
                break
            if char not in _BLANKS and not _is_key_char(char):
                line_end = text.find("\n", key_start)
                line = text[key_start : line_end if line_end >= 0 else end]
                raise self.fail(
                    f"unexpected character {_go_quote(char)} in variable name {_go_quote(line)}", pos
                )
            pos += 1
        key = _rstrip_go_space(text[key_start:pos])
        if any(_is_go_space(char) for char in key):
            raise self.fail("key cannot contain a space", key_start)
        if separator in ("\n", ""):  # a bare KEY: inherited
            if key:
                value = self.lookup(key)
                if value is not None:
                    self.out[key] = value
            return pos + 1
        if not key:
            raise self.fail(f"missing variable name before {separator!r}", pos)
        pos = self.skip_blanks(pos + 1)
        if pos < end and text[pos] in "\"'":
            value, pos = self.quoted(pos)
        else:
            newline = text.find("\n", pos)
            stop = newline if newline >= 0 else end
            raw = text[pos:stop]
            comment = raw.find(" #")
            if comment >= 0:
                raw = raw[:comment]
            value = self.expand(_rstrip_go_space(raw), pos)
            pos = stop
        self.out[key] = value
        return pos

    def quoted(self, start: int) -> tuple[str, int]:
        text, end = self.text, len(self.text)
        quote = text[start]
        chars: list[str] = []
        escaped = False
        pos = start + 1
        while pos < end:
            char = text[pos]
            if escaped:
                escaped = False
                if char != quote:
                    chars.append("\\")
                chars.append(char)
            elif char == "\\":
                escaped = True
            elif char == quote:
                value = "".join(chars)
                if quote == '"':
                    value = self.expand(_expand_escapes(value), start)
                return value, pos + 1
            else:
                chars.append(char)
            pos += 1
        line_end = text.find("\n", start)
        raise self.fail(
            f"unterminated quoted value {text[start : line_end if line_end >= 0 else end]}", start
        )


def parse_dotenv(
    text: str,
    filename: str,
    lookup: Callable[[str], str | None],
    warn: Callable[[str], None] | None = None,
) -> dict[str, str]:
    """The variables of a `.env` / `env_file` text, in file order (a repeated key keeps its first
    position and its last value). `lookup` answers for the environment outside the file; `warn`
    receives the interpolation warnings (unset variables). Raises SpecError at file:line:col.
    """
    return _Parser(text, filename, lookup, warn).parse()


def parse_raw_envfile(text: str, filename: str, lookup: Callable[[str], str | None]) -> dict[str, str]:
    """`env_file: {format: raw}`: the `docker run --env-file` rules.

    Each line is `KEY=VALUE` taken literally (quotes, `$`, `#` and trailing blanks are kept); leading
    blanks are dropped; lines starting with `#` and blank lines are skipped; a bare `KEY` takes its
    value from `lookup` and is left out when the lookup has none. A key with a blank is an error.
    """
    out: dict[str, str] = {}
    if text.startswith(_BOM):
        text = text[1:]
    for number, line in enumerate(text.split("\n"), start=1):
        if line.endswith("\r"):  # Go's line scanner drops the \r of a CRLF ending
            line = line[:-1]
        stripped = line.lstrip()
        if not stripped or stripped.startswith("#"):
            continue
        col = len(line) - len(stripped) + 1
        key, has_value, value = stripped.partition("=")
        if not key:
            raise SpecError(
                f"no variable name on line '{stripped}'", location=Location(filename, number, col)
            )
        if " " in key or "\t" in key:
            raise SpecError(
                f"variable '{key}' contains whitespaces", location=Location(filename, number, col)
            )
        if has_value:
            out[key] = value
        else:
            inherited = lookup(key)
            if inherited is not None:
                out[key] = inherited
    return out
