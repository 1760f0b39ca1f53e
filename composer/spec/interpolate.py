"""`${VAR}` interpolation, with the grammar and the corner cases of Docker Compose v2.

PURE: the caller hands in a lookup function (OS environment over `.env`, see envfile.py) and a
`warn` callback; nothing here reads the environment or prints.

Grammar (compose-semantics.md §2.4; behaviour checked against docker-compose 2.26):

* `$$` is a literal `$` and is never expanded again (`$${A}` gives `${A}`).
* `$NAME` and `${NAME}`: NAME is `[_A-Za-z][_A-Za-z0-9]*`; the lookup is exact-case. An unset
  variable gives "" and a warning `The "NAME" variable is not set. Defaulting to a blank string.`
* `${NAME:-d}` d if NAME is unset or empty; `${NAME-d}` d if unset;
  `${NAME:+a}` a if set and non-empty, else the (empty) value; `${NAME+a}` a if set, else "";
  `${NAME:?msg}` error if unset or empty; `${NAME?msg}` error if unset.
  The operator is the one right after the name, so `${A?x-y}` is `?` with the message `x-y`.
* The part after the operator runs to the last `}` of the line, then is cut where the braces
  opened by `${` balance; what follows the cut is interpolated on its own. The part after the
  operator is interpolated recursively and *before* NAME is looked up, so its warnings and
  errors happen even when NAME is set (as in Compose).
* `$` followed by anything else (` `, `}`, end of text) stays a literal `$`; `${` not followed by
  a valid name and operator (`${}`, `${ A}`, `${A }`, `${A!}`, a newline before `}`) is an error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from composer.errors import Location, PathPart, SpecError
from composer.spec.source import MDict, MList, Override

__all__ = ["Lookup", "TemplateError", "interpolate_tree", "substitute", "unset_warning"]

Lookup = Callable[[str], str | None]
Warn = Callable[[str], None]

# One `$` reference. Like Compose, `.` stops at a newline and the braced form runs greedily to the
# last `}` of the line; `invalid` (empty) matches a `${` that starts no valid reference.
_REFERENCE = re.compile(
    r"\$(?:"
    r"(?P<escaped>\$)"
    r"|(?P<named>[_A-Za-z][_A-Za-z0-9]*)"
    r"|\{(?:(?P<braced>[_A-Za-z][_A-Za-z0-9]*(?::?[-+?].*)?)\}|(?P<invalid>))"
    r")"
)
_NAME = re.compile(r"[_A-Za-z][_A-Za-z0-9]*")


class TemplateError(Exception):
    """A template that cannot be expanded: bad syntax, or a required variable without a value.

    `template` is the (innermost) text that failed to parse, None for a missing required variable.
    """

    def __init__(self, message: str, template: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.template = template


def unset_warning(name: str) -> str:
    return f'The "{name}" variable is not set. Defaulting to a blank string.'


def _invalid(template: str) -> TemplateError:
    quoted = json.dumps(template, ensure_ascii=False)
    return TemplateError(
        f"invalid interpolation format {quoted}: you may need to escape any $ with another $", template
    )


def _closing_brace(text: str) -> int:
    """Index of the `}` that closes the first `{` of `text`, or -1 (Compose's brace counting:
    the character right after each `{` is skipped)."""
    depth = 0
    i = 0
    end = len(text)
    while i < end:
        char = text[i]
        if char == "}":
            depth -= 1
            if depth == 0:
                return i
        elif char == "{":
            depth += 1
            i += 1
        i += 1
    return -1


class _Substituter:
    __slots__ = ("lookup", "warn")

    def __init__(self, lookup: Lookup, warn: Warn | None) -> None:
        self.lookup = lookup
        self.warn = warn

    def run(self, template: str) -> str:
        if "$" not in template:
            return template
        out: list[str] = []
        last = 0
        for match in _REFERENCE.finditer(template):
            out.append(template[last : match.start()])
            out.append(self.replace(match.group(), template))
            last = match.end()
        out.append(template[last:])
        return "".join(out)

    def value_of(self, name: str) -> str:
        value = self.lookup(name)
        if value is None:
            if self.warn is not None:
                self.warn(unset_warning(name))
            return ""
        return value

    def replace(self, reference: str, template: str) -> str:
        rest = ""
        cut = _closing_brace(reference)
        if cut > -1:
            reference, rest = reference[: cut + 1], reference[cut + 1 :]
        match = _REFERENCE.match(reference)
        if match is None or match.group("invalid") is not None:
            raise _invalid(template)
        if match.group("escaped") is not None:
            return "$"
        named = match.group("named")
        if named is not None:
            return self.value_of(named)
        braced = match.group("braced")
        name_match = _NAME.match(braced)
        assert name_match is not None  # the pattern guarantees a name
        name = name_match.group()
        tail = braced[len(name) :]
        if not tail:
            return self.value_of(name)
        colon = tail[0] == ":"
        operator = tail[1] if colon else tail[0]
        argument = self.run(tail[2:] if colon else tail[1:])
        value = self.lookup(name)
        if operator == "-":
            result = argument if value is None or (colon and value == "") else value
        elif operator == "+":
            result = argument if value is not None and (not colon or value != "") else (value or "")
        else:  # "?"
            if value is None or (colon and value == ""):
                message = f"required variable {name} is missing a value"
                raise TemplateError(f"{message}: {argument}" if argument else message)
            result = value
        return result + self.run(rest) if rest else result


def substitute(template: str, lookup: Lookup, *, warn: Warn | None = None) -> str:
    """`template` with every `$` reference expanded through `lookup` (None = unset).

    `warn` receives one message per reference to an unset variable (without an operator).
    Raises TemplateError.
    """
    if "$" not in template:
        return template
    return _Substituter(lookup, warn).run(template)


def interpolate_tree(tree: MDict, lookup: Lookup, warn: Warn) -> MDict:
    """A new tree in which every string value (never a key) is interpolated; locations are kept.

    Numbers, booleans, nulls and `!reset` stay as they are; `!override` values are interpolated.
    Extension fields (`x-...`) are interpolated too, as Compose does. `warn` is called once per
    unset variable name. A TemplateError becomes a SpecError at the value that holds the template.
    """
    warned: set[str] = set()

    def warn_once(message: str) -> None:
        if message not in warned:
            warned.add(message)
            warn(message)

    substituter = _Substituter(lookup, warn_once)
    path: list[PathPart] = []

    def expand(text: str, where: Location | None) -> str:
        if "$" not in text:
            return text
        try:
            return substituter.run(text)
        except TemplateError as exc:
            raise SpecError(exc.message, location=where, path=tuple(path)) from None

    def walk(value: Any, where: Location | None) -> Any:
        if isinstance(value, str):
            return expand(value, where)
        if isinstance(value, MDict):
            return walk_dict(value)
        if isinstance(value, MList):
            new_list = value.like()
            locations = value.item_locations
            for index, item in enumerate(value):
                item_where = locations[index] if index < len(locations) else None
                if isinstance(item, str):
                    if "$" in item:
                        path.append(index)
                        item = expand(item, item_where or value.location)
                        path.pop()
                elif isinstance(item, MDict | MList | Override):
                    path.append(index)
                    item = walk(item, item_where or value.location)
                    path.pop()
                new_list.add(item, item_where)
            return new_list
        if isinstance(value, Override):
            inner = walk(value.value, value.location or where)
            return value if inner is value.value else Override(inner, value.location)
        return value

    def walk_dict(mapping: MDict) -> MDict:
        new = mapping.like()
        for key, item in mapping.items():
            if isinstance(item, str):
                if "$" in item:
                    path.append(key)
                    item = expand(item, mapping.where(key))
                    path.pop()
            elif isinstance(item, MDict | MList | Override):
                path.append(key)
                item = walk(item, mapping.where(key))
                path.pop()
            new.put_from(mapping, key, item)
        return new

    return walk_dict(tree)
