"""Dockerfile parsing and Docker's word rules, with line numbers for every instruction.

Pure: no I/O. The rules follow BuildKit's Dockerfile frontend (the reference for what `docker build`
accepts), written from its documented behaviour:

* Parser directives (`# escape=`` ` ``, `# syntax=...`, `# check=...`) only at the very top; the escape
  token (backslash or backtick) is also the line-continuation token. A line whose last non-blank
  character is the escape token (not itself escaped) continues on the next line; comment lines and
  blank lines inside a continuation are skipped; only whole-line comments exist (`#` first on the line).
* `KEYWORD [--flag[=value]...] rest`; keywords are case-insensitive. RUN/CMD/ENTRYPOINT/SHELL and
  COPY/ADD/VOLUME take a JSON array (exec form) when the rest parses as one, else the shell form.
* Heredocs (`RUN <<EOF`, `COPY <<EOF /path`, several per line, `<<-` strips leading tabs, a quoted
  delimiter turns off expansion) for RUN, COPY and ADD in shell form, also under ONBUILD. Their bodies
  follow the instruction's last line, one after the other.
* Substitution (`expand`): `$v ${v} ${v:-x} ${v-x} ${v:+x} ${v+x} ${v:?msg} ${v?msg}`, and BuildKit's
  `${v#p} ${v##p} ${v%p} ${v%%p} ${v/p/r} ${v//p/r}`; single quotes keep everything literal, double quotes
  keep `$` live; the escape token keeps the next character literal.

Where we are stricter than Docker, on purpose: an exec form that is broken JSON (`CMD ['a', 'b']`,
which Docker silently runs as a shell command that cannot work) is an error here; so is a duplicate
stage name and a continuation that runs into the end of the file with nothing after it.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from composer.errors import ComposerError, one_line

__all__ = [
    "KEYWORDS",
    "Dockerfile",
    "DockerfileError",
    "Heredoc",
    "Instruction",
    "Stage",
    "expand",
    "heredoc_name",
    "key_values",
    "onbuild_trigger",
    "parse_dockerfile",
    "parse_duration",
    "split_shell_words",
]

Lookup = Callable[[str], str | None]

_KEYWORD_LIST = (
    "ADD ARG CMD COPY ENTRYPOINT ENV EXPOSE FROM HEALTHCHECK LABEL MAINTAINER ONBUILD RUN SHELL STOPSIGNAL "
    "USER VOLUME WORKDIR"
)
KEYWORDS = frozenset(_KEYWORD_LIST.split())

# Flags each instruction accepts: "str" needs a value, "bool" may stand alone (true), "list" repeats.
_FLAGS: dict[str, dict[str, str]] = {
    "FROM": {"platform": "str"},
    "RUN": {"mount": "list", "network": "str", "security": "str"},
    "COPY": {
        "from": "str",
        "chown": "str",
        "chmod": "str",
        "link": "bool",
        "parents": "bool",
        "exclude": "list",
    },
    "ADD": {
        "chown": "str",
        "chmod": "str",
        "link": "bool",
        "checksum": "str",
        "keep-git-dir": "bool",
        "exclude": "list",
        "unpack": "bool",
    },
    "HEALTHCHECK": {
        "interval": "str",
        "timeout": "str",
        "start-period": "str",
        "start-interval": "str",
        "retries": "str",
    },
}
_JSON_KEYWORDS = frozenset({"RUN", "CMD", "ENTRYPOINT", "SHELL", "COPY", "ADD", "VOLUME"})
_HEREDOC_KEYWORDS = frozenset({"RUN", "COPY", "ADD"})
_DIRECTIVES = frozenset({"escape", "syntax", "check"})

_WHITESPACE = re.compile(r"[\t\v\f\r ]+")
_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_HEREDOC_WORD = re.compile(r"^(\d*)<<(-?)([^<]*)$")
_LEADING_TABS = re.compile(r"^\t+", re.MULTILINE)
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9\-_.]*$")


class DockerfileError(ComposerError):
    """A Dockerfile a user wrote is wrong: renders `<file>:<line>: <message>` on one line."""

    def __init__(self, message: str, *, file: str, line: int) -> None:
        super().__init__(message)
        self.file = file
        self.line = line

    def render(self) -> str:
        return one_line(f"{self.file}:{self.line}: {self.message}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Heredoc:
    name: str
    content: str  # body lines, each ending in "\n"; leading tabs already gone when chomp
    expand: bool  # False when the delimiter was quoted (`<<'EOF'`, `<<"EOF"`)
    chomp: bool  # `<<-`
    fd: int | None = None  # `3<<EOF`: the file descriptor it feeds (RUN), else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Instruction:
    keyword: str  # upper case
    line: int  # 1-based first line
    end_line: int  # 1-based last line, heredoc bodies included
    original: str  # as written, continuation lines joined
    flags: tuple[tuple[str, str], ...]  # ("from", "build"), ("link", "true"), in order, values raw
    json_form: bool  # exec form (a JSON array)
    args: tuple[str, ...]  # json form: the array items; shell form: (rest of the line,) raw, or ()
    heredocs: tuple[Heredoc, ...] = ()
    sub: Instruction | None = None  # ONBUILD's trigger; HEALTHCHECK's CMD

    def flag(self, name: str) -> str | None:
        """The last value given for --name, or None."""
        found = None
        for key, value in self.flags:
            if key == name:
                found = value
        return found

    def flag_values(self, name: str) -> tuple[str, ...]:
        """Every value given for a repeatable flag (--mount, --exclude), in order."""
        return tuple(value for key, value in self.flags if key == name)


@dataclass(frozen=True, slots=True, kw_only=True)
class Stage:
    index: int
    name: str | None  # AS name, lower-cased
    base: str  # raw: may hold ${ARG}s expanded with the meta args
    platform: str | None  # --platform, raw
    line: int
    instructions: tuple[Instruction, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Dockerfile:
    filename: str
    escape: str
    meta_args: tuple[Instruction, ...]  # ARGs before the first FROM
    stages: tuple[Stage, ...]

    def error(self, inst: Instruction | Stage, message: str) -> DockerfileError:
        """An error located at an instruction of this file (for the builder's own checks)."""
        return DockerfileError(message, file=self.filename, line=inst.line)

    def stage(self, name_or_index: str) -> Stage | None:
        """A stage by its AS name (case-insensitive) or its index as a string."""
        wanted = name_or_index.lower()
        for stage in self.stages:
            if stage.name == wanted:
                return stage
        if name_or_index.isdecimal() and int(name_or_index) < len(self.stages):
            return self.stages[int(name_or_index)]
        return None


# --------------------------------------------------------------------------------------------------
# The word lexer: substitution, quotes and escapes


class _Words:
    """Collects words the way Docker's lexer does: text from `$` substitutions splits on blanks,
    quoted text and escaped characters never do; an empty quoted string makes no word."""

    __slots__ = ("buf", "in_word", "words")

    def __init__(self) -> None:
        self.words: list[str] = []
        self.buf = ""
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if ch.isspace():
            if self.in_word and self.buf:
                self.words.append(self.buf)
                self.buf = ""
                self.in_word = False
        else:
            self.add_raw(ch)

    def add_raw(self, text: str) -> None:
        self.buf += text
        self.in_word = True

    def add_split(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def done(self) -> list[str]:
        if self.buf:
            self.words.append(self.buf)
            self.buf = ""
        return self.words


class _Lexer:
    def __init__(self, text: str, lookup: Lookup | None, escape: str, *, quotes: bool = True) -> None:
        self.text = text
        self.pos = 0
        self.lookup = lookup  # None: `$` is an ordinary character
        self.escape = escape
        self.quotes = quotes  # False: quote characters are ordinary (heredoc bodies)
        self.raw_escapes = False
        self.quoted = False  # a quoted section was seen

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> str:
        ch = self.peek()
        self.pos += 1 if ch else 0
        return ch

    def run(self, stop: str = "", raw_escapes: bool = False) -> tuple[str, list[str]]:
        saved, self.raw_escapes = self.raw_escapes, raw_escapes
        try:
            return self._run(stop)
        finally:
            self.raw_escapes = saved

    def _run(self, stop: str) -> tuple[str, list[str]]:
        out: list[str] = []
        words = _Words()
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if stop and ch == stop:
                self.pos += 1
                return "".join(out), words.done()
            if ch == "$" and self.lookup is not None:
                value = self._dollar()
                out.append(value)
                words.add_split(value)
            elif self.quotes and ch in "'\"":
                value = self._single() if ch == "'" else self._double()
                out.append(value)
                words.add_raw(value)
            else:
                self.pos += 1
                if ch == self.escape:
                    if self.raw_escapes:
                        out.append(ch)
                        words.add_raw(ch)
                    ch = self.next()
                    if not ch:
                        break
                    words.add_raw(ch)
                else:
                    words.add_char(ch)
                out.append(ch)
        if stop:
            raise ValueError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(out), words.done()

    def _single(self) -> str:
        self.quoted = True
        self.pos += 1
        end = self.text.find("'", self.pos)
        if end < 0:
            raise ValueError("unexpected end of statement while looking for matching single-quote")
        value = self.text[self.pos : end]
        self.pos = end + 1
        return value

    def _double(self) -> str:
        self.quoted = True
        self.pos += 1
        out: list[str] = []
        while True:
            ch = self.peek()
            if not ch:
                raise ValueError("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.pos += 1
                return "".join(out)
            if ch == "$" and self.lookup is not None:
                out.append(self._dollar())
                continue
            self.pos += 1
            if ch == self.escape:
                if self.raw_escapes:
                    out.append(ch)
                following = self.peek()
                if not following:
                    continue
                if following in ('"', "$", self.escape):
                    ch = self.next()
            out.append(ch)

    def _name(self) -> str:
        ch = self.peek()
        if ch.isdecimal():
            start = self.pos
            while self.peek().isdecimal():
                self.pos += 1
            return self.text[start : self.pos]
        if ch and ch in "@*#?-$!0":
            self.pos += 1
            return ch
        start = self.pos
        while (ch := self.peek()) and (ch.isalpha() or ch.isdecimal() or ch == "_"):
            self.pos += 1
        return self.text[start : self.pos]

    def _get(self, name: str) -> str | None:
        assert self.lookup is not None
        return self.lookup(name)

    def _dollar(self) -> str:
        self.pos += 1  # the `$`
        if self.peek() != "{":
            name = self._name()
            return (self._get(name) or "") if name else "$"
        self.pos += 1
        first = self.peek()
        if not first:
            raise ValueError("syntax error: missing '}'")
        if first in "{}:":
            raise ValueError("syntax error: bad substitution")
        name = self._name()
        op = self.next()
        if op == "}":
            return self._get(name) or ""
        if not op:
            raise ValueError("syntax error: missing '}'")
        colon = op == ":"
        if colon:
            op = self.next()
            if not op:
                raise ValueError("syntax error: missing '}'")
        if op in "+-?#%" and not (colon and op in "#%"):
            word = self._until_brace(raw_escapes=op in "#%")
            value = self._get(name)
            unset = value is None or (colon and value == "")
            if op == "-":
                return word if unset else value or ""
            if op == "+":
                return "" if unset else word
            if op == "?":
                if value is None:
                    raise ValueError(f"{name}: {word or 'is not allowed to be unset'}")
                if colon and value == "":
                    raise ValueError(f"{name}: {word or 'is not allowed to be empty'}")
                return value
            greedy = word.startswith(op)
            return _trim(value or "", word[1:] if greedy else word, suffix=op == "%", greedy=greedy)
        if op == "/" and not colon:
            replace_all = self.peek() == "/"
            if replace_all:
                self.pos += 1
            try:
                pattern, _ = self.run("/", raw_escapes=True)
            except ValueError:
                if self.pos >= len(self.text):
                    raise ValueError("syntax error: missing '/' in ${}") from None
                raise
            replacement = self._until_brace(raw_escapes=True)
            regex = _shell_pattern(pattern, greedy=True)
            return regex.sub(lambda _m: replacement, self._get(name) or "", count=0 if replace_all else 1)
        raise ValueError(f"unsupported modifier ({':' if colon else ''}{op}) in substitution")

    def _until_brace(self, *, raw_escapes: bool) -> str:
        try:
            word, _ = self.run("}", raw_escapes=raw_escapes)
        except ValueError:
            if self.pos >= len(self.text):
                raise ValueError("syntax error: missing '}'") from None
            raise
        return word


def _shell_pattern(pattern: str, *, greedy: bool) -> re.Pattern[str]:
    """`*` any string, `?` one character, `\\` quotes the next; everything else literal."""
    out: list[str] = []
    chars = iter(range(len(pattern)))
    for i in chars:
        ch = pattern[i]
        if ch == "*":
            out.append(".*" if greedy else ".*?")
        elif ch == "?":
            out.append(".")
        elif ch == "\\":
            following = pattern[i + 1 : i + 2]
            if following in ("}", "/"):
                continue
            if following not in ("*", "?", "\\"):
                raise ValueError(
                    f"invalid pattern ({pattern}) in substitution: invalid escape '\\{following}'"
                )
            out.append(re.escape(following))
            next(chars)
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.DOTALL)


def _trim(value: str, pattern: str, *, suffix: bool, greedy: bool) -> str:
    regex = _shell_pattern(pattern, greedy=True)
    cuts = range(len(value) + 1)
    if suffix:  # shortest suffix: try the cut furthest right first
        for cut in cuts if greedy else reversed(cuts):
            if regex.fullmatch(value, cut):
                return value[:cut]
    else:
        for cut in reversed(cuts) if greedy else cuts:
            if regex.fullmatch(value, 0, cut):
                return value[cut:]
    return value


def expand(word: str, lookup: Lookup, *, escape: str = "\\", quotes: bool = True) -> str:
    """One word with Docker's substitution, quote removal and escapes; blanks are kept.

    This is what Docker does to ENV/LABEL/ARG values, WORKDIR, USER, VOLUME, STOPSIGNAL, FROM's base
    and each COPY/ADD path. `quotes=False` is the rule for the body of an expanding COPY/ADD heredoc:
    only `$` and the escape token are special. Raises ValueError with the reason on bad syntax.
    """
    lexer = _Lexer(word, lookup, escape, quotes=quotes)
    try:
        return lexer.run()[0]
    except ValueError as err:
        shown = word if len(word) <= 60 else word[:57] + "..."
        raise ValueError(f"{err} in {shown!r}") from None


def _raw_words(text: str, escape: str) -> list[str]:
    """Split on blanks outside quotes, keeping quotes and escapes (Docker's first pass for ENV, LABEL,
    ARG and for finding heredocs). An unterminated quote runs to the end of the text."""
    words: list[str] = []
    word: list[str] = []
    started = False  # a quote makes a word even when empty
    quote = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            word.append(ch)
            if ch == quote:
                quote = ""
            elif ch == escape and quote != "'" and i + 1 < len(text):
                i += 1
                word.append(text[i])
        elif ch.isspace():
            if word or started:
                words.append("".join(word))
            word, started = [], False
        else:
            word.append(ch)
            if ch in "'\"":
                quote, started = ch, True
            elif ch == escape:
                if i + 1 == len(text):
                    word.pop()
                else:
                    i += 1
                    word.append(text[i])
        i += 1
    if word or started:
        words.append("".join(word))
    return words


def split_shell_words(text: str, lookup: Lookup | None = None, *, escape: str = "\\") -> list[str]:
    """Words of a shell-form COPY/ADD/VOLUME/EXPOSE argument list: split on blanks outside quotes,
    then each word has its quotes and escapes removed and, when `lookup` is given, its `$` substituted
    (a substituted value with blanks stays one word, as for Docker's COPY/VOLUME paths; for EXPOSE,
    which Docker splits again after substitution, split each result with `.split()`).
    Raises ValueError on an unterminated quote or bad substitution."""
    out = []
    for raw in _raw_words(text, escape):
        lexer = _Lexer(raw, lookup, escape)
        try:
            value = lexer.run()[0]
        except ValueError as err:
            raise ValueError(f"{err} in {raw!r}") from None
        if value or lexer.quoted:
            out.append(value)
    return out


def _raw_pairs(keyword: str, text: str, escape: str) -> list[tuple[str, str | None]]:
    """ENV/LABEL/ARG arguments before substitution: (raw key, raw value or None)."""
    words = _raw_words(text, escape)
    if not words:
        raise ValueError(f"{keyword} requires at least one argument")
    pairs: list[tuple[str, str | None]] = []
    if keyword == "ARG":
        for word in words:
            key, eq, value = word.partition("=")
            if not key:
                raise ValueError("ARG names can not be blank")
            pairs.append((key, value if eq else None))
        return pairs
    if "=" not in words[0]:  # legacy `ENV key value with blanks`
        parts = _WHITESPACE.split(text.strip(), maxsplit=1)
        if len(parts) < 2:
            raise ValueError(f"{keyword} must have two arguments (`{keyword} key=value`)")
        return [(parts[0], parts[1])]
    for word in words:
        key, eq, value = word.partition("=")
        if not eq:
            raise ValueError(f"syntax error: can't find = in {word!r}; must be of the form: name=value")
        if not key:
            raise ValueError(f"{keyword} names can not be blank")
        pairs.append((key, value))
    return pairs


def key_values(inst: Instruction, lookup: Lookup, *, escape: str = "\\") -> list[tuple[str, str | None]]:
    """ENV/LABEL: [(key, value)] from `k=v k2="v 2"` or legacy `ENV k v w`, keys and values
    substituted; ARG: [(name, default or None)], defaults substituted. ValueError on bad syntax."""
    if inst.keyword not in ("ENV", "LABEL", "ARG"):
        raise ValueError(f"{inst.keyword} has no key=value arguments")
    pairs = _raw_pairs(inst.keyword, inst.args[0] if inst.args else "", escape)
    out: list[tuple[str, str | None]] = []
    for key, value in pairs:
        if inst.keyword != "ARG":
            key = expand(key, lookup, escape=escape)
        out.append((key, None if value is None else expand(value, lookup, escape=escape)))
    return out


def heredoc_name(word: str) -> str | None:
    """The delimiter of a heredoc word (`<<EOF`, `<<-"EOF"`, `3<<EOF`), else None. For COPY/ADD:
    a source word for which this is not None stands for the heredoc of that name."""
    match = _HEREDOC_WORD.match(word)
    if not match or not match.group(3):
        return None
    try:
        words = split_shell_words(match.group(3))
    except ValueError:
        return None
    return words[0] if len(words) == 1 else None


def onbuild_trigger(inst: Instruction) -> str:
    """The text an image's OnBuild list stores for an ONBUILD instruction (heredocs appended)."""
    assert inst.keyword == "ONBUILD" and inst.sub is not None
    text = inst.sub.original
    for doc in inst.heredocs:
        text += "\n" + doc.content + doc.name
    return text


_DURATION_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> int:
    """A Go duration (`30s`, `1m30s`, `1.5h`, `500ms`) in nanoseconds; ValueError otherwise."""
    rest = text.strip()
    sign = -1 if rest.startswith("-") else 1
    rest = rest.lstrip("+-")
    if rest == "0":
        return 0
    if not rest:
        raise ValueError(f"invalid duration {text!r}")
    total = 0.0
    pos = 0
    while pos < len(rest):
        match = _DURATION_PART.match(rest, pos)
        if not match:
            raise ValueError(f"invalid duration {text!r}")
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    return sign * round(total)


# --------------------------------------------------------------------------------------------------
# The parser


@dataclass(slots=True)
class _Parser:
    filename: str
    lines: list[str]
    escape: str = "\\"
    pos: int = 0  # index of the next line to read

    def fail(self, message: str, line: int) -> DockerfileError:
        return DockerfileError(message, file=self.filename, line=line)

    # ---- lines

    def directives(self) -> None:
        seen: set[str] = set()
        while self.pos < len(self.lines):
            match = _DIRECTIVE.match(self.lines[self.pos].lstrip())
            if not match or match.group(1).lower() not in _DIRECTIVES:
                return
            key, value = match.group(1).lower(), match.group(2)
            if key in seen:
                raise self.fail(f"only one {key} parser directive can be used", self.pos + 1)
            seen.add(key)
            if key == "escape":
                if value not in ("\\", "`"):
                    raise self.fail(f"invalid escape token {value!r} does not match ` or \\", self.pos + 1)
                self.escape = value
            self.pos += 1

    def continues(self, text: str) -> tuple[str, bool]:
        """(text without its continuation token, whether it continues)."""
        stripped = text.rstrip(" \t")
        if stripped.endswith(self.escape) and not stripped.endswith(self.escape * 2):
            return stripped[:-1], True
        if stripped == self.escape:
            return "", True
        return text, False

    def next_instruction(self) -> tuple[str, int, int] | None:
        lines = self.lines
        while self.pos < len(lines):
            raw = lines[self.pos]
            self.pos += 1
            text = raw.lstrip()
            if text.startswith("#"):
                text = ""
            text, more = self.continues(text)
            if not more and not text:
                continue
            start = self.pos
            parts = [text]
            while more:
                if self.pos >= len(lines):
                    joined = "".join(parts)
                    if len(_WHITESPACE.split(joined.strip(), maxsplit=1)) < 2:
                        raise self.fail(
                            "line continuation at the end of the file with nothing after it", start
                        )
                    break
                raw = lines[self.pos]
                self.pos += 1
                if raw.lstrip().startswith("#") or not raw.strip():
                    continue
                text, more = self.continues(raw)
                parts.append(text)
            return "".join(parts), start, self.pos
        return None

    def heredoc_bodies(self, docs: list[tuple[str, bool, bool, int | None]], line: int) -> list[Heredoc]:
        out = []
        for name, expand_, chomp, fd in docs:
            body: list[str] = []
            while True:
                if self.pos >= len(self.lines):
                    raise self.fail(f"unterminated heredoc <<{name}: no line {name!r} after it", line)
                raw = self.lines[self.pos]
                self.pos += 1
                candidate = raw.rstrip("\r")
                if chomp:
                    candidate = candidate.lstrip("\t")
                if candidate == name:
                    break
                body.append(raw + "\n")
            content = "".join(body)
            if chomp:
                content = _LEADING_TABS.sub("", content)
            out.append(Heredoc(name=name, content=content, expand=expand_, chomp=chomp, fd=fd))
        return out

    # ---- instructions

    def flags(self, keyword: str, words: list[str], line: int) -> tuple[tuple[str, str], ...]:
        allowed = _FLAGS.get(keyword, {})
        out: list[tuple[str, str]] = []
        for word in words:
            name, eq, value = word[2:].partition("=")
            kind = allowed.get(name)
            if kind is None:
                known = ", ".join(f"--{flag}" for flag in allowed) or "none"
                raise self.fail(f"unknown flag --{name} for {keyword} (it accepts: {known})", line)
            if kind == "bool":
                value = value.lower() if eq else "true"
                if value not in ("true", "false"):
                    raise self.fail(f"expecting a boolean value for flag --{name}, not {value!r}", line)
            elif not eq:
                raise self.fail(f"missing a value on flag --{name} (write --{name}=VALUE)", line)
            if kind != "list" and any(key == name for key, _ in out):
                raise self.fail(f"duplicate flag specified: --{name}", line)
            out.append((name, value))
        return tuple(out)

    def instruction(self, text: str, line: int, end: int) -> Instruction:
        parts = _WHITESPACE.split(text.strip(), maxsplit=1)
        word = parts[0]
        keyword = word.upper()
        if keyword not in KEYWORDS:
            close = difflib.get_close_matches(keyword, sorted(KEYWORDS), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise self.fail(f"unknown instruction: {word}{hint}", line)
        rest, flag_words = _extract_flags(parts[1] if len(parts) > 1 else "")
        flags = self.flags(keyword, flag_words, line)
        json_form = False
        args: tuple[str, ...] = (rest,) if rest else ()
        if keyword in _JSON_KEYWORDS:
            json_form, args = self.maybe_json(keyword, rest, line)
        sub = None
        if keyword == "ONBUILD":
            if not rest:
                raise self.fail("ONBUILD requires at least one argument", line)
            sub = self.instruction(rest, line, end)
            if sub.keyword in ("ONBUILD", "FROM", "MAINTAINER"):
                raise self.fail(f"{sub.keyword} isn't allowed as an ONBUILD trigger", line)
        elif keyword == "HEALTHCHECK":
            args, sub = self.healthcheck(rest, flags, line, end)
        inst = Instruction(
            keyword=keyword,
            line=line,
            end_line=end,
            original=text,
            flags=flags,
            json_form=json_form,
            args=args,
            sub=sub,
        )
        self.check(inst)
        return inst

    def maybe_json(self, keyword: str, rest: str, line: int) -> tuple[bool, tuple[str, ...]]:
        if rest.startswith("["):
            try:
                value, _ = json.JSONDecoder().raw_decode(rest)
            except json.JSONDecodeError as err:
                body = rest.rstrip()
                if body.endswith("]") and rest[1:2] in ("'", '"'):
                    raise self.fail(
                        f"{keyword}: {rest!r} is not a valid JSON array ({err.msg}); the exec form needs "
                        'double quotes: ["a", "b"]',
                        line,
                    ) from None
            else:
                if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                    raise self.fail(
                        f"{keyword}: when using JSON array syntax, arrays must be comprised of strings only",
                        line,
                    )
                return True, tuple(value)
        return False, (rest,) if rest else ()

    def healthcheck(
        self, rest: str, flags: tuple[tuple[str, str], ...], line: int, end: int
    ) -> tuple[tuple[str, ...], Instruction | None]:
        parts = _WHITESPACE.split(rest, maxsplit=1)
        kind = parts[0].upper()
        if not kind:
            raise self.fail("HEALTHCHECK requires at least one argument", line)
        if kind == "NONE":
            if len(parts) > 1 or flags:
                raise self.fail("HEALTHCHECK NONE takes no arguments and no flags", line)
            return ("NONE",), None
        if kind != "CMD":
            raise self.fail(f"unknown type {parts[0]!r} in HEALTHCHECK (try CMD)", line)
        command = parts[1].strip() if len(parts) > 1 else ""
        json_form, args = self.maybe_json("HEALTHCHECK", command, line)
        if not args:
            raise self.fail("missing command after HEALTHCHECK CMD", line)
        for name, value in flags:
            if name == "retries":
                if not value.isdecimal() or int(value) < 1:
                    raise self.fail(f"--retries must be an integer of at least 1, not {value!r}", line)
                continue
            try:
                duration = parse_duration(value)
            except ValueError as err:
                raise self.fail(f"--{name}: {err}", line) from None
            if duration < 1_000_000:
                raise self.fail(f"--{name} cannot be less than 1ms (got {value!r})", line)
        sub = Instruction(
            keyword="CMD",
            line=line,
            end_line=end,
            original=f"CMD {command}",
            flags=(),
            json_form=json_form,
            args=args,
        )
        return ("CMD",), sub

    def check(self, inst: Instruction) -> None:
        """Argument counts and shapes, as Docker checks them before building."""
        kw, args, line = inst.keyword, inst.args, inst.line
        text = args[0] if args and not inst.json_form else ""
        try:
            if kw in ("ENV", "LABEL", "ARG"):
                _raw_pairs(kw, text, self.escape)
            elif kw in ("COPY", "ADD"):
                words = list(args) if inst.json_form else split_shell_words(text, escape=self.escape)
                if len(words) < 2:
                    raise ValueError(f"{kw} requires at least two arguments: a source and a destination")
                if heredoc_name(words[-1]) is not None:
                    raise ValueError(f"{kw} cannot accept a heredoc as a destination")
            elif kw in ("EXPOSE", "VOLUME"):
                words = list(args) if inst.json_form else split_shell_words(text, escape=self.escape)
                if not words or any(not word.strip() for word in words):
                    raise ValueError(f"{kw} requires at least one non-empty argument")
            elif kw in ("WORKDIR", "USER", "STOPSIGNAL", "MAINTAINER", "RUN"):
                if not args:
                    raise ValueError(
                        f"{kw} requires exactly one argument"
                        if kw != "RUN"
                        else "RUN requires at least one argument"
                    )
            elif kw == "SHELL":
                if not inst.json_form:
                    raise ValueError(
                        'SHELL requires the arguments to be in JSON form: SHELL ["/bin/sh", "-c"]'
                    )
                if not args:
                    raise ValueError("SHELL requires at least one argument")
            elif kw == "FROM":
                words = _WHITESPACE.split(text.strip()) if text else []
                if len(words) == 3 and words[1].lower() == "as":
                    if not _STAGE_NAME.match(words[2].lower()):
                        raise ValueError(
                            f"invalid name for build stage: {words[2]!r}, name can't start with a number "
                            "or contain symbols"
                        )
                elif len(words) != 1:
                    raise ValueError("FROM requires either one or three arguments: FROM image [AS name]")
        except ValueError as err:
            raise self.fail(str(err), line) from None

    def heredoc_words(self, inst: Instruction) -> list[tuple[str, bool, bool, int | None]]:
        target = inst.sub if inst.keyword == "ONBUILD" and inst.sub is not None else inst
        if target.keyword not in _HEREDOC_KEYWORDS or target.json_form:
            return []
        docs: list[tuple[str, bool, bool, int | None]] = []
        for word in _raw_words(inst.original, "\\"):
            match = _HEREDOC_WORD.match(word)
            if not match or not match.group(3):
                continue
            lexer = _Lexer(match.group(3), None, "\\")
            try:
                name = lexer.run()[0]
                if len(split_shell_words(match.group(3))) != 1:
                    continue
            except ValueError as err:
                raise self.fail(f"bad heredoc delimiter {word!r}: {err}", inst.line) from None
            fd = int(match.group(1)) if match.group(1) else None
            docs.append((name, not lexer.quoted, match.group(2) == "-", fd))
        return docs

    def parse(self) -> Dockerfile:
        self.directives()
        meta: list[Instruction] = []
        stages: list[Stage] = []
        current: list[Instruction] = []
        names: dict[str, int] = {}
        seen_any = False

        def close_stage() -> None:
            if stages:
                stages[-1] = _replace_instructions(stages[-1], tuple(current))

        while (found := self.next_instruction()) is not None:
            text, line, end = found
            seen_any = True
            inst = self.instruction(text, line, end)
            docs = self.heredoc_words(inst)
            if docs:
                heredocs = tuple(self.heredoc_bodies(docs, line))
                sub = inst.sub
                if sub is not None and inst.keyword == "ONBUILD":
                    sub = _with_heredocs(sub, heredocs, self.pos)
                inst = _with_heredocs(inst, heredocs, self.pos, sub=sub)
            if inst.keyword == "FROM":
                close_stage()
                current = []
                words = _WHITESPACE.split(inst.args[0].strip())
                name = words[2].lower() if len(words) == 3 else None
                if name is not None:
                    if name in names:
                        raise self.fail(
                            f"duplicate stage name {name!r} (first used on line {names[name]})", line
                        )
                    names[name] = line
                stages.append(
                    Stage(
                        index=len(stages),
                        name=name,
                        base=words[0],
                        platform=inst.flag("platform"),
                        line=line,
                        instructions=(),
                    )
                )
            elif not stages:
                if inst.keyword != "ARG":
                    raise self.fail(
                        f"{inst.keyword} before the first FROM (only ARG may come before FROM)", line
                    )
                meta.append(inst)
            else:
                current.append(inst)
        close_stage()
        if not seen_any:
            raise self.fail("the Dockerfile has no instructions", max(len(self.lines), 1))
        if not stages:
            raise self.fail("no FROM instruction: a Dockerfile must have at least one stage", meta[-1].line)
        return Dockerfile(
            filename=self.filename, escape=self.escape, meta_args=tuple(meta), stages=tuple(stages)
        )


def _extract_flags(text: str) -> tuple[str, list[str]]:
    """Leading `--name[=value]` words (quotes and backslashes in them removed) and the rest."""
    flags: list[str] = []
    i = 0
    n = len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if not text.startswith("--", i):
            return text[i:].strip(), flags
        word: list[str] = []
        quote = ""
        while i < n and (quote or not text[i].isspace()):
            ch = text[i]
            i += 1
            if quote:
                if ch == quote:
                    quote = ""
                    continue
            elif ch in "'\"":
                quote = ch
                continue
            if ch == "\\":
                if i == n:
                    continue
                ch = text[i]
                i += 1
            word.append(ch)
        flag = "".join(word)
        if flag == "--":
            return text[i:].strip(), flags
        flags.append(flag)


def _with_heredocs(
    inst: Instruction, heredocs: tuple[Heredoc, ...], end_pos: int, *, sub: Instruction | None = None
) -> Instruction:
    return Instruction(
        keyword=inst.keyword,
        line=inst.line,
        end_line=end_pos,
        original=inst.original,
        flags=inst.flags,
        json_form=inst.json_form,
        args=inst.args,
        heredocs=heredocs,
        sub=sub if sub is not None else inst.sub,
    )


def _replace_instructions(stage: Stage, instructions: tuple[Instruction, ...]) -> Stage:
    return Stage(
        index=stage.index,
        name=stage.name,
        base=stage.base,
        platform=stage.platform,
        line=stage.line,
        instructions=instructions,
    )


def parse_dockerfile(text: str, filename: str) -> Dockerfile:
    """Parse a Dockerfile. Raises DockerfileError (`file:line: message`) for anything Docker rejects:
    unknown instructions (with the closest one suggested), bad or unknown flags, broken JSON exec
    forms, a missing FROM, unterminated heredocs, a continuation into the end of the file, ..."""
    text = text.removeprefix("\ufeff")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [line.removesuffix("\r") for line in lines]
    return _Parser(filename, lines).parse()
