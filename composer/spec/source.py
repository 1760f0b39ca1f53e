"""Read compose YAML into plain Python values that remember where they came from.

PURE: the caller hands in the text and the name to report; nothing here opens files.

The result of `load_documents` is a list of `MDict` (one per YAML document). `MDict` and `MList` are
a `dict` and a `list` that also carry the `Location` of every key and value, so that any later stage
(interpolation, merge, validation, normalization) can point a user at file:line:col. Later stages
build new trees instead of mutating these, and carry the locations along (see `MDict.put`).

Scalars follow YAML 1.2 as Compose (go-yaml v3) reads them, not PyYAML's YAML 1.1:
`20:20` is the string "20:20", `on`/`off`/`yes`/`no` are strings, only true/True/TRUE and
false/False/FALSE are booleans, integers are read like Go's `strconv.ParseInt(s, 0, 64)` after
removing `_` (so `0x1F` is 31, `0o17` and `017` are 15, `0b11` is 3).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from composer.errors import Location, PathPart, SpecError

try:  # libyaml's parser is 5-10x faster; the pure-Python one behaves the same.
    from yaml._yaml import CParser as _CParser

    _HAVE_LIBYAML = True
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    _HAVE_LIBYAML = False

__all__ = [
    "MAX_DEPTH",
    "MAX_NODES",
    "MDict",
    "MList",
    "Override",
    "Reset",
    "from_plain",
    "load_documents",
    "locate",
    "to_plain",
]

MAX_DEPTH = 128
"""Deepest nesting accepted; real compose files stay under 12."""

MAX_NODES = 4_000_000
"""Values built per file, counting every alias expansion (stops 'billion laughs' documents)."""


class MDict(dict[str, Any]):
    """A mapping from a compose file, with the location of each key and value."""

    __slots__ = ("key_locations", "location", "value_locations")

    def __init__(self, location: Location | None = None) -> None:
        super().__init__()
        self.location = location
        self.key_locations: dict[str, Location] = {}
        self.value_locations: dict[str, Location] = {}

    def put(
        self,
        key: str,
        value: Any,
        value_location: Location | None = None,
        key_location: Location | None = None,
    ) -> None:
        """Set `key` and remember where it (and its value) came from."""
        self[key] = value
        if value_location is not None:
            self.value_locations[key] = value_location
        if key_location is not None:
            self.key_locations[key] = key_location

    def put_from(self, other: MDict, key: str, value: Any) -> None:
        """Set `key` to `value`, taking the locations that `other` has for the same key."""
        self.put(key, value, other.value_locations.get(key), other.key_locations.get(key))

    def where(self, key: str) -> Location | None:
        """Where the value of `key` stands (falling back to the key, then to the mapping itself)."""
        return self.value_locations.get(key) or self.key_locations.get(key) or self.location

    def like(self) -> MDict:
        """An empty MDict at the same location."""
        return MDict(self.location)

    def clone(self) -> MDict:
        """A shallow copy that keeps every location."""
        out = MDict(self.location)
        out.update(self)
        out.key_locations.update(self.key_locations)
        out.value_locations.update(self.value_locations)
        return out


class MList(list[Any]):
    """A sequence from a compose file, with the location of each item."""

    __slots__ = ("item_locations", "location")

    def __init__(self, location: Location | None = None) -> None:
        super().__init__()
        self.location = location
        self.item_locations: list[Location | None] = []

    def add(self, value: Any, location: Location | None = None) -> None:
        self.append(value)
        self.item_locations.append(location)

    def where(self, index: int) -> Location | None:
        if 0 <= index < len(self.item_locations):
            return self.item_locations[index] or self.location
        return self.location

    def like(self) -> MList:
        return MList(self.location)


@dataclass(frozen=True, slots=True)
class Reset:
    """`!reset`: remove the attribute from what earlier files set (Compose merge, SPEC 13-merge.md)."""

    location: Location | None = None


@dataclass(frozen=True, slots=True)
class Override:
    """`!override VALUE`: replace the attribute wholesale instead of merging it."""

    value: Any
    location: Location | None = None


def to_plain(value: Any) -> Any:
    """A tree as plain JSON-able data: MDict/MList (and any dict/list) -> dict/list, keys as strings."""
    if isinstance(value, dict):
        return {str(key): to_plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [to_plain(item) for item in value]
    return value


def from_plain(value: Any, location: Location | None) -> Any:
    """Plain data -> MDict/MList whose every key and value stands at `location`."""
    if isinstance(value, dict):
        out = MDict(location)
        for key, item in value.items():
            out.put(str(key), from_plain(item, location), location, location)
        return out
    if isinstance(value, list):
        seq = MList(location)
        for item in value:
            seq.add(from_plain(item, location), location)
        return seq
    return value


def locate(tree: Any, path: tuple[PathPart, ...] | list[PathPart]) -> Location | None:
    """The most precise known location of `path` inside `tree` (deepest existing part wins)."""
    best: Location | None = getattr(tree, "location", None)
    node = tree
    for part in path:
        if isinstance(node, MDict) and isinstance(part, str) and part in node:
            best = node.where(part) or best
            node = node[part]
        elif isinstance(node, MList) and isinstance(part, int) and 0 <= part < len(node):
            best = node.where(part) or best
            node = node[part]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            break
        if isinstance(node, Override):
            node = node.value
    return best


# --- scalar resolution (YAML 1.2 core schema, as go-yaml v3 applies it) -----------------------------

_NULL = frozenset({"", "~", "null", "Null", "NULL"})
_TRUE = frozenset({"true", "True", "TRUE"})
_FALSE = frozenset({"false", "False", "FALSE"})
_INT = re.compile(r"[-+]?(?:0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)")
_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_INF = frozenset({".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"})
_NINF = frozenset({"-.inf", "-.Inf", "-.INF"})
_NAN = frozenset({".nan", ".NaN", ".NAN"})

_TAG_STR = "tag:yaml.org,2002:str"
_TAG_INT = "tag:yaml.org,2002:int"
_TAG_FLOAT = "tag:yaml.org,2002:float"
_TAG_BOOL = "tag:yaml.org,2002:bool"
_TAG_NULL = "tag:yaml.org,2002:null"
_TAG_MERGE = "tag:yaml.org,2002:merge"
_TAG_MAP = "tag:yaml.org,2002:map"
_TAG_SEQ = "tag:yaml.org,2002:seq"
_TAG_PLAIN = "tag:composer,2026:plain"  # an untagged, unquoted scalar: typed by _plain_scalar
_TAG_RESET = "!reset"
_TAG_OVERRIDE = "!override"


def _parse_int(text: str) -> int | None:
    plain = text.replace("_", "")
    if not _INT.fullmatch(plain):
        return None
    sign = -1 if plain.startswith("-") else 1
    digits = plain.lstrip("+-")
    low = digits[:2].lower()
    if low == "0x":
        return sign * int(digits[2:], 16)
    if low == "0o":
        return sign * int(digits[2:], 8)
    if low == "0b":
        return sign * int(digits[2:], 2)
    if len(digits) > 1 and digits[0] == "0":
        return sign * int(digits[1:], 8)
    return sign * int(digits)


def _parse_float(text: str) -> float | None:
    if text in _INF:
        return float("inf")
    if text in _NINF:
        return float("-inf")
    if text in _NAN:
        return float("nan")
    plain = text.replace("_", "")
    if _FLOAT.fullmatch(plain):
        return float(plain)
    return None


def _plain_scalar(text: str) -> Any:
    if text in _NULL:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if text[:1] in "+-0123456789.":
        as_int = _parse_int(text)
        if as_int is not None:
            return as_int
        as_float = _parse_float(text)
        if as_float is not None:
            return as_float
    return text


class _Resolver(yaml.resolver.BaseResolver):
    """Tags every plain scalar as a string; `_plain_scalar` types it later with YAML 1.2 rules."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        if kind is ScalarNode:
            if implicit[0]:
                return _TAG_MERGE if value == "<<" else _TAG_PLAIN
            return _TAG_STR
        if kind is SequenceNode:
            return _TAG_SEQ
        return _TAG_MAP


if _HAVE_LIBYAML:

    class _Loader(_CParser, _Resolver):
        def __init__(self, stream: str) -> None:
            _CParser.__init__(self, stream)
            _Resolver.__init__(self)

else:  # pragma: no cover

    class _Loader(  # type: ignore[no-redef]
        yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser, yaml.composer.Composer, _Resolver
    ):
        def __init__(self, stream: str) -> None:
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)
            yaml.composer.Composer.__init__(self)
            _Resolver.__init__(self)


# --- node -> value --------------------------------------------------------------------------------


class _Builder:
    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.nodes = 0
        self.active: set[int] = set()

    def loc(self, node: Node) -> Location:
        return Location(self.filename, node.start_mark.line + 1, node.start_mark.column + 1)

    def fail(self, node: Node, path: list[PathPart], message: str) -> SpecError:
        return SpecError(message, location=self.loc(node), path=path)

    def build(self, node: Node, path: list[PathPart]) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.fail(
                node, path, f"document expands to more than {MAX_NODES} values (excessive aliasing)"
            )
        if len(path) > MAX_DEPTH:
            raise self.fail(node, path, f"document nests deeper than {MAX_DEPTH} levels")
        tag = node.tag
        if tag == _TAG_RESET:
            return Reset(self.loc(node))
        if tag == _TAG_OVERRIDE:
            return Override(self.build_untagged(node, path), self.loc(node))
        return self.build_untagged(node, path)

    def build_untagged(self, node: Node, path: list[PathPart]) -> Any:
        key = id(node)
        if key in self.active:
            raise self.fail(node, path, "an alias refers to the value that contains it (recursive anchor)")
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        self.active.add(key)
        try:
            if isinstance(node, SequenceNode):
                return self.sequence(node, path)
            if isinstance(node, MappingNode):
                return self.mapping(node, path)
        finally:
            self.active.discard(key)
        raise self.fail(node, path, "unsupported YAML node")  # pragma: no cover

    def scalar(self, node: ScalarNode, path: list[PathPart]) -> Any:
        tag, text = node.tag, node.value
        if tag == _TAG_PLAIN:
            return _plain_scalar(text)
        if tag in (_TAG_STR, _TAG_MERGE, _TAG_RESET, _TAG_OVERRIDE):
            return text
        if tag == _TAG_NULL:
            return None
        if tag == _TAG_BOOL:
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
        elif tag == _TAG_INT:
            as_int = _parse_int(text)
            if as_int is not None:
                return as_int
        elif tag == _TAG_FLOAT:
            as_float = _parse_float(text)
            if as_float is None:
                as_int = _parse_int(text)
                as_float = None if as_int is None else float(as_int)
            if as_float is not None:
                return as_float
        elif tag.startswith("tag:yaml.org,2002:") and tag[18:] in ("binary", "timestamp"):
            return text
        else:
            raise self.fail(node, path, f"unknown YAML tag {tag}")
        raise self.fail(node, path, f"cannot read {text!r} as {tag.rsplit(':', 1)[-1]}")

    def sequence(self, node: SequenceNode, path: list[PathPart]) -> MList:
        if node.tag not in (_TAG_SEQ, _TAG_RESET, _TAG_OVERRIDE):
            raise self.fail(node, path, f"unknown YAML tag {node.tag}")
        out = MList(self.loc(node))
        for index, item in enumerate(node.value):
            out.add(self.build(item, [*path, index]), self.loc(item))
        return out

    def key_text(self, node: Node, path: list[PathPart]) -> str:
        if not isinstance(node, ScalarNode):
            raise self.fail(node, path, "a mapping key must be a string, not a list or a mapping")
        return str(node.value)

    def mapping(self, node: MappingNode, path: list[PathPart]) -> MDict:
        if node.tag not in (_TAG_MAP, _TAG_RESET, _TAG_OVERRIDE):
            raise self.fail(node, path, f"unknown YAML tag {node.tag}")
        out = MDict(self.loc(node))
        merges: list[tuple[Node, Node]] = []
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag == _TAG_MERGE:
                merges.append((key_node, value_node))
                continue
            key = self.key_text(key_node, path)
            if key in out.key_locations:
                first = out.key_locations[key]
                raise self.fail(
                    key_node, [*path, key], f"duplicate key {key!r} (first defined at line {first.line})"
                )
            out.put(key, self.build(value_node, [*path, key]), self.loc(value_node), self.loc(key_node))
        for key_node, value_node in merges:
            for source in self.merge_sources(key_node, value_node, path):
                for key in source:
                    if key not in out:
                        out.put_from(source, key, source[key])
        return out

    def merge_sources(self, key_node: Node, value_node: Node, path: list[PathPart]) -> Iterator[MDict]:
        """`<<: *a` or `<<: [*a, *b]`: the earlier source wins over the later one."""
        value = self.build(value_node, [*path, "<<"])
        items = value if isinstance(value, MList) else [value]
        for item in items:
            if not isinstance(item, MDict):
                raise self.fail(
                    key_node, [*path, "<<"], "a merge key (<<) takes a mapping or a list of mappings"
                )
            yield item


def load_documents(text: str, filename: str) -> list[MDict]:
    """Every YAML document of `text`, each one a mapping; `filename` is what errors will name.

    An empty document is skipped. Anything that is not a mapping at the top is an error.
    """
    loader = _Loader(text)
    builder = _Builder(filename)
    docs: list[MDict] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:  # pragma: no cover - check_node said there is one
                break
            value = builder.build(node, [])
            if value is None:
                continue
            if not isinstance(value, MDict):
                raise SpecError(
                    "the top level of a compose file must be a mapping (services:, networks:, ...)",
                    location=builder.loc(node),
                )
            docs.append(value)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Location(filename, mark.line + 1, mark.column + 1) if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            problem = f"{problem} ({exc.context})"
        raise SpecError(f"invalid YAML: {problem}", location=where) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        before = text[: exc.position]
        where = Location(filename, before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1)
        char = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "\0")
        raise SpecError(f"invalid YAML: character U+{char:04X} is not allowed", location=where) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {exc}", location=Location(filename, 1, 1)) from None
    except RecursionError:
        raise SpecError(
            f"document nests deeper than {MAX_DEPTH} levels", location=Location(filename, 1, 1)
        ) from None
    finally:
        loader.dispose()
    return docs
