"""Check a merged, interpolated compose tree against schemas/compose.schema.json.

PURE: the only file read is our own schema, once; the compiled checks are cached.

A valid document is only run through a yes/no check compiled from the schema into closures (~10x
faster than jsonschema, which is not even imported then). When that says no, jsonschema reports every
violation (of the failing services only, the others are left out); we pick the one a person should fix
first (the earliest in the document; on one branch, the deepest) and reword it as one line that names
the file, line, column and dotted key path:
`compose.yaml:3:5: services.web: unknown attribute "imagee" (did you mean "image"?)`.

The schema only checks shapes. Value grammars (durations, port specs, restart policies, ...) and
cross-references are checked by later stages.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from composer.errors import Location, PathPart, SpecError
from composer.spec.source import MDict, locate

if TYPE_CHECKING:  # jsonschema costs ~40 ms to import: only documents with errors need it
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError

__all__ = ["SCHEMA_PATH", "is_valid", "load_schema", "schema_errors", "validate_document"]

# The file lives in schemas/ at the top of the repository; composer/spec/compose.schema.json is a
# symlink to it, so that wheels (which copy the content) carry the schema too.
SCHEMA_PATH: Final = Path(__file__).with_name("compose.schema.json")

_NAME_PATTERN: Final = "^[a-zA-Z0-9._-]+$"

_DEEPER: Final = 1 << 62  # ends a document-order key, so that a deeper path sorts before its parent

_TYPE_WORDS: Final = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "a boolean",
    "null": "null",
}

# What a key of a named map is called, by the attribute that holds the map.
_NAME_KINDS: Final = {
    "services": "service",
    "networks": "network",
    "volumes": "volume",
    "secrets": "secret",
    "configs": "config",
    "models": "model",
    "depends_on": "service",
    "ulimits": "ulimit",
}

# How to explain a name that does not match its map's key pattern, by the pattern.
_NAME_HINTS: Final = {
    _NAME_PATTERN: 'use only letters, digits, ".", "_" and "-"',
    "^[a-z]+$": "use a lowercase resource name such as nofile or nproc",
}

# How to explain a failed `pattern`, by the attribute ({value} is the quoted value).
_PATTERN_MESSAGES: Final = {
    "container_name": (
        'invalid container name {value}: use a letter or a digit, then letters, digits, "_", "." or "-"'
    ),
    "pull_policy": (
        "{value} is not a pull policy: use always, never, build, missing, if_not_present, refresh, "
        "daily, weekly or every_<duration>"
    ),
    "gpus": 'must be "all" or a list of device requests, not {value}',
}

# Among errors at the same place, the kind a person should read first (lower is better).
_PRIORITY: Final = {
    "additionalProperties": 0,
    "type": 1,
    "required": 2,
    "enum": 3,
    "const": 3,
    "pattern": 4,
    "minLength": 4,
    "minimum": 5,
    "maximum": 5,
    "uniqueItems": 6,
}


@functools.cache
def load_schema() -> dict[str, Any]:
    """Our compose schema, as parsed JSON (read once)."""
    with SCHEMA_PATH.open(encoding="utf-8") as handle:
        schema: dict[str, Any] = json.load(handle)
    return schema


def _inline(node: Any, defs: Mapping[str, Any]) -> Any:
    """`node` with every `{"$ref": "#/$defs/x"}` replaced by its target (our schema has no cycles)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and len(node) == 1 and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {key: _inline(value, defs) for key, value in node.items() if key != "$defs"}
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    return node


@functools.cache
def _validator() -> Draft202012Validator:
    """The compiled validator; `$ref`s are inlined first, which makes validation ~1.5x faster."""
    from jsonschema import Draft202012Validator

    schema = load_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(_inline(schema, schema.get("$defs", {})))


def schema_errors(tree: Mapping[str, Any]) -> list[ValidationError]:
    """Every violation of the schema in `tree`, in no particular order (empty when it is valid)."""
    return list(_validator().iter_errors(tree))


def is_valid(tree: Mapping[str, Any]) -> bool:
    """Whether `tree` satisfies the schema: the fast check, ~10x quicker than jsonschema."""
    return _fast_check()(tree)


def validate_document(tree: MDict) -> None:
    """Raise `SpecError` for the most relevant schema violation in `tree`; return if it is valid."""
    if is_valid(tree):
        return
    errors = schema_errors(_failing_part(tree))
    if not errors:  # pragma: no cover - the fast check and jsonschema agree (tested)
        return
    best = min(errors, key=lambda error: _sort_key(tree, error))
    raise _reword(tree, best)


# --- the fast check ----------------------------------------------------------------------------------
#
# jsonschema spends most of its time on bookkeeping for errors that valid documents never have. Most
# documents are valid, so we first run a yes/no check compiled from the same schema into closures, and
# only ask jsonschema for the errors when it says no. It supports the keywords our schema uses and
# refuses to compile any other, so that it cannot silently accept more than the schema does.

_Check = Callable[[Any], bool]

_IGNORED: Final = frozenset({"$schema", "$id", "$defs", "title", "description", "default", "deprecated"})


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_TYPE_CHECKS: Final[dict[str, _Check]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": _is_number,
    "integer": lambda v: _is_number(v) and (isinstance(v, int) or float(v).is_integer()),
}


def _frozen(value: Any) -> Any:
    """A hashable stand-in that is equal exactly when JSON Schema calls two values equal."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, list):
        return ("array", tuple(_frozen(item) for item in value))
    if isinstance(value, dict):
        return ("object", frozenset((key, _frozen(item)) for key, item in value.items()))
    return (type(value).__name__, value)


def _compile(schema: Mapping[str, Any]) -> _Check:
    unknown = set(schema) - _IGNORED - {
        "type", "properties", "patternProperties", "additionalProperties", "items", "required", "enum",
        "pattern", "minimum", "maximum", "uniqueItems", "propertyNames", "minLength",
    }  # fmt: skip
    if unknown:
        raise ValueError(f"the fast check does not support {sorted(unknown)}")
    checks: list[_Check] = []

    if "type" in schema:
        names = [schema["type"]] if isinstance(schema["type"], str) else list(schema["type"])
        type_checks = [_TYPE_CHECKS[name] for name in names]
        checks.append(lambda v: any(check(v) for check in type_checks))
    if "enum" in schema:
        allowed = list(schema["enum"])
        if not all(isinstance(item, str) for item in allowed):
            raise ValueError("the fast check supports enums of strings only")
        checks.append(lambda v: isinstance(v, str) and v in allowed)
    if "pattern" in schema:
        search = re.compile(schema["pattern"]).search
        checks.append(lambda v: not isinstance(v, str) or search(v) is not None)
    if "minLength" in schema:
        shortest = int(schema["minLength"])
        checks.append(lambda v: not isinstance(v, str) or len(v) >= shortest)
    if "minimum" in schema:
        low = schema["minimum"]
        checks.append(lambda v: not _is_number(v) or v >= low)
    if "maximum" in schema:
        high = schema["maximum"]
        checks.append(lambda v: not _is_number(v) or v <= high)
    if "items" in schema:
        item_check = _compile(schema["items"])
        checks.append(lambda v: not isinstance(v, list) or all(item_check(item) for item in v))
    if schema.get("uniqueItems") is True:
        checks.append(lambda v: not isinstance(v, list) or len({_frozen(item) for item in v}) == len(v))
    if "required" in schema:
        required = list(schema["required"])
        checks.append(lambda v: not isinstance(v, dict) or all(name in v for name in required))
    if "propertyNames" in schema:
        name_check = _compile(schema["propertyNames"])
        checks.append(lambda v: not isinstance(v, dict) or all(name_check(key) for key in v))
    if any(key in schema for key in ("properties", "patternProperties", "additionalProperties")):
        checks.append(_compile_object(schema))

    if len(checks) == 1:
        return checks[0]
    return lambda v: all(check(v) for check in checks)


def _compile_object(schema: Mapping[str, Any]) -> _Check:
    properties = {name: _compile(sub) for name, sub in schema.get("properties", {}).items()}
    patterns = [
        (re.compile(p).search, _compile(sub)) for p, sub in schema.get("patternProperties", {}).items()
    ]
    additional = schema.get("additionalProperties", True)
    rest: _Check | None = None
    if additional is False:
        rest = _never
    elif isinstance(additional, dict):
        rest = _compile(additional)

    def check(value: Any) -> bool:
        if not isinstance(value, dict):
            return True
        for key, item in value.items():
            known = properties.get(key)
            if known is not None and not known(item):
                return False
            matched = False
            for search, sub in patterns:
                if search(key) is not None:
                    matched = True
                    if not sub(item):
                        return False
            if known is None and not matched and rest is not None and not rest(item):
                return False
        return True

    return check


def _never(value: Any) -> bool:
    return False


@functools.cache
def _fast_check() -> _Check:
    schema = load_schema()
    return _compile(_inline(schema, schema.get("$defs", {})))


@functools.cache
def _fast_service_check() -> _Check:
    schema = load_schema()
    return _compile(_inline(schema["$defs"]["service"], schema.get("$defs", {})))


def _failing_part(tree: Mapping[str, Any]) -> Mapping[str, Any]:
    """`tree` without the services that pass, so that jsonschema has less to walk (same paths)."""
    services = tree.get("services")
    if not isinstance(services, dict) or len(services) < 2:
        return tree
    good_name = re.compile(_NAME_PATTERN).search
    check = _fast_service_check()
    failing = {
        name: service
        for name, service in services.items()
        if not (isinstance(name, str) and good_name(name) and check(service))
    }
    return {**tree, "services": failing}


# --- choosing ----------------------------------------------------------------------------------------


def _document_order(tree: Any, path: Sequence[PathPart]) -> tuple[int, ...]:
    """Where `path` stands in document order: the position of each key or index on the way."""
    order: list[int] = []
    node = tree
    for part in path:
        if isinstance(node, dict) and part in node:
            order.append(list(node).index(part))
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            order.append(part)
            node = node[part]
        else:
            break
    return tuple(order)


def _sort_key(tree: Any, error: ValidationError) -> tuple[tuple[int, ...], int]:
    """Earliest in the document first; on one branch the deeper error first; then by kind."""
    path: list[PathPart] = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        extra = _unexpected_keys(error)
        if extra:  # an unknown key sorts where it is written
            path = [*path, extra[0]]
    return (*_document_order(tree, path), _DEEPER), _PRIORITY.get(str(error.validator), 9)


# --- rewording ---------------------------------------------------------------------------------------


def _quote(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return repr(value)
    return _type_word(value)


def _type_word(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    return type(value).__name__


def _one_of(words: Sequence[str]) -> str:
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def _key_location(tree: Any, path: Sequence[PathPart], key: str) -> Location | None:
    """Where `key` itself is written inside the mapping at `path` (else the best known place)."""
    node: Any = tree
    for part in path:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
            break
    if isinstance(node, MDict) and key in node.key_locations:
        return node.key_locations[key]
    return locate(tree, [*path, key])


def _suggest(key: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, sorted(candidates), n=1, cutoff=0.7)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _unexpected_keys(error: ValidationError) -> list[str]:
    """The keys of an `additionalProperties: false` mapping that none of its properties allows."""
    instance = error.instance if isinstance(error.instance, dict) else {}
    schema = error.schema if isinstance(error.schema, dict) else {}
    known: dict[str, Any] = schema.get("properties", {})
    patterns = [re.compile(p) for p in schema.get("patternProperties", {})]
    return [
        key for key in instance if key not in known and not any(pattern.search(key) for pattern in patterns)
    ]


def _unknown_key(tree: Any, error: ValidationError, path: list[PathPart]) -> SpecError:
    schema = error.schema if isinstance(error.schema, dict) else {}
    known: dict[str, Any] = schema.get("properties", {})
    patterns = [p for p in schema.get("patternProperties", {}) if p != "^x-"]
    key = next(iter(_unexpected_keys(error)), "?")
    where = _key_location(tree, path, key)
    if patterns and not known:  # a map of names: services, networks, ulimits, ...
        kind = _NAME_KINDS.get(str(path[-1]), "") if path else ""
        hint = _NAME_HINTS.get(patterns[0], f"must match {patterns[0]}")
        message = f"invalid {kind + ' ' if kind else ''}name {_quote(key)}: {hint}"
        return SpecError(message, location=where, path=path)
    if not path:
        service_keys = load_schema()["$defs"]["service"]["properties"]
        if key in service_keys:
            hint = " (service attributes go under services.<name>)"
        else:
            hint = _suggest(key, known)
        return SpecError(f"unknown top-level key {_quote(key)}{hint}", location=where, path=path)
    return SpecError(f"unknown attribute {_quote(key)}{_suggest(key, known)}", location=where, path=path)


def _reword(tree: Any, error: ValidationError) -> SpecError:
    path = list(error.absolute_path)
    where = locate(tree, path)
    validator = str(error.validator)
    value: Any = error.validator_value
    instance: Any = error.instance

    if validator == "additionalProperties":
        return _unknown_key(tree, error, path)
    if validator == "type":
        types = [value] if isinstance(value, str) else list(value)
        message = "must be " + _one_of([_TYPE_WORDS.get(t, t) for t in types])
    elif validator == "required":
        missing = [name for name in value if isinstance(instance, dict) and name not in instance]
        names = _one_of([_quote(name) for name in missing or value]).replace(" or ", " and ")
        message = f"{names} {'is' if len(missing) <= 1 else 'are'} required"
    elif validator in ("enum", "const"):
        allowed = value if validator == "enum" else [value]
        message = f"must be {_one_of([_quote(v) for v in allowed])}, not {_quote(instance)}"
    elif validator == "pattern":
        template = _PATTERN_MESSAGES.get(str(path[-1]) if path else "", "{value} does not match " + value)
        message = template.format(value=_quote(instance))
    elif "propertyNames" in error.schema_path:
        message = "keys must not be empty"
    elif validator == "minimum":
        message = f"must be at least {value}, not {_quote(instance)}"
    elif validator == "maximum":
        message = f"must be at most {value}, not {_quote(instance)}"
    elif validator == "uniqueItems" and isinstance(instance, list):
        index, item = _first_duplicate(instance)
        if index >= 0:
            path = [*path, index]
            where = locate(tree, path)
        message = f"duplicate item {_quote(item)}" if index >= 0 else "items must be unique"
    else:  # pragma: no cover - a keyword our schema does not use
        message = error.message
    return SpecError(message, location=where, path=path)


def _first_duplicate(items: list[Any]) -> tuple[int, Any]:
    seen: list[str] = []
    for index, item in enumerate(items):
        canonical = json.dumps([type(item).__name__, item], sort_keys=True, default=str)
        if canonical in seen:
            return index, item
        seen.append(canonical)
    return -1, None
