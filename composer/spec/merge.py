"""Merge compose trees the way Docker Compose v2 merges several `-f` files (and `extends`).

PURE: trees in, a new tree out; the inputs are never mutated. Every value keeps the location of the
file that provided it, so later stages can still point at file:line:col.

Rules (Compose's `override` package, checked against the docker-compose v2 binary):

* mappings merge recursively, the later file wins for scalars; a `null` in the later file keeps the
  earlier value (except for `command`, `entrypoint`, `healthcheck.test`, which are replaced wholesale);
* sequences are appended, then de-duplicated by a per-attribute key (`UNIQUE_KEYS`): the later entry
  replaces the earlier one in place;
* `environment`, `labels`, `build.args` ... (`_TO_SEQUENCE`) are turned into `KEY=VALUE` lists first
  (a mapping's entries sorted), so both syntaxes merge; the result is a list, as in Compose;
* `depends_on` and service `networks` lists become mappings, `build: path` becomes `{context: path}`;
* `logging.options` merge only when the driver is the same (or one side names none);
* `ulimits.*` and `x-*` extensions are replaced wholesale;
* `!reset` removes the attribute, `!override value` replaces it without merging.

`resolve_tags` drops the `!reset`/`!override` markers left once all merging is done, and
`enforce_unicity` applies the de-duplication to a whole tree (Compose does it for a single file too).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from composer.errors import Location, PathPart, SpecError
from composer.spec.source import MDict, MList, Override, Reset

__all__ = [
    "UNIQUE_KEYS",
    "enforce_unicity",
    "merge_service",
    "merge_trees",
    "resolve_tags",
    "unicity_key",
]

_Pattern = tuple[str, ...]
_Indexer = Callable[[Any], str | None]


def merge_trees(base: MDict, override: MDict) -> MDict:
    """`override` (a later file) merged over `base` (an earlier one); a new tree."""
    return _merge_mapping(base, override, ())


def merge_service(base: MDict, override: MDict, name: str) -> MDict:
    """One service definition merged over another (`extends`: the base is the earlier side)."""
    return _merge_mapping(base, override, ("services", name))


def resolve_tags(tree: MDict) -> MDict:
    """A copy of `tree` without `!reset` values and with `!override` values unwrapped."""
    out = _resolve(tree)
    assert isinstance(out, MDict)
    return out


def enforce_unicity(tree: MDict) -> MDict:
    """A copy of `tree` whose sequences hold each unicity key once (the last definition, in place)."""
    out = _unique_tree(tree, ())
    assert isinstance(out, MDict)
    return out


# --- paths ---------------------------------------------------------------------------------------


def _pattern(text: str) -> _Pattern:
    return tuple(text.split("."))


def _matches(path: Sequence[str], pattern: _Pattern) -> bool:
    if len(path) != len(pattern):
        return False
    return all(want in ("*", part) for part, want in zip(path, pattern, strict=True))


def _lookup(table: dict[_Pattern, Any], path: Sequence[str]) -> Any:
    for pattern, value in table.items():
        if _matches(path, pattern):
            return value
    return None


# --- formatting scalars like Go's %v (Compose builds KEY=VALUE strings with it) ---------------------


def _go_float(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign, digit_tuple, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(str(d) for d in digit_tuple)
    point = len(digits) + exponent  # position of the decimal point after the first digit run
    exp = point - 1
    prefix = "-" if sign else ""
    if exp < -4 or exp >= 6:  # Go's %g with the shortest precision switches to %e here
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return f"{prefix}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return prefix + digits + "0" * (point - len(digits))
    return f"{prefix}{digits[:point]}.{digits[point:]}"


def _go_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_float(value)
    if value is None:
        return "<nil>"
    if isinstance(value, list):
        return "[" + " ".join(_go_str(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_go_str(v)}" for k, v in sorted(value.items())) + "]"
    return str(value)


# --- unicity keys -----------------------------------------------------------------------------------


def _key_value(item: Any) -> str | None:
    if isinstance(item, str):
        return item.split("=", 1)[0]
    return None


def _scalar_text(value: Any) -> str:
    return _go_str(value) if not isinstance(value, str) else value


def _volume_target(item: Any) -> str | None:
    if isinstance(item, dict):
        target = item.get("target")
        return target if isinstance(target, str) else None
    if isinstance(item, str):
        parts = item.split(":")
        return parts[0] if len(parts) == 1 else parts[1]
    return None


def _device_target(item: Any) -> str | None:
    return _volume_target(item)


def _expose(item: Any) -> str | None:
    if isinstance(item, (str, int)) and not isinstance(item, bool):
        return str(item)
    return None


def _mount(default_dir: str) -> _Indexer:
    def index(item: Any) -> str | None:
        if isinstance(item, str):
            return f"{default_dir}/{item}"
        if isinstance(item, dict):
            target = item.get("target")
            if target is not None:
                return _scalar_text(target)
            return f"{default_dir}/{_scalar_text(item.get('source'))}"
        return None

    return index


def _port(item: Any) -> str | None:
    if isinstance(item, str):
        return item
    if isinstance(item, int) and not isinstance(item, bool):
        return str(item)
    if isinstance(item, dict):
        host = item.get("host_ip", "0.0.0.0")
        published = item.get("published", "")
        protocol = item.get("protocol", "tcp")
        target = item.get("target", "")
        return f"{_scalar_text(host)}:{_scalar_text(published)}:{_scalar_text(target)}/{protocol}"
    return None


def _env_file(item: Any) -> str | None:
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and isinstance(item.get("path"), str):
        return str(item["path"])
    return None


UNIQUE_KEYS: dict[_Pattern, _Indexer] = {
    **{
        _pattern(p): _key_value
        for p in (
            "networks.*.labels",
            "networks.*.ipam.options",
            "volumes.*.labels",
            "services.*.annotations",
            "services.*.build.args",
            "services.*.build.additional_contexts",
            "services.*.build.tags",
            "services.*.build.labels",
            "services.*.cap_add",
            "services.*.cap_drop",
            "services.*.deploy.labels",
            "services.*.dns",
            "services.*.dns_opt",
            "services.*.dns_search",
            "services.*.environment",
            "services.*.labels",
            "services.*.label_file",
            "services.*.links",
            "services.*.networks.*.aliases",
            "services.*.networks.*.link_local_ips",
            "services.*.profiles",
            "services.*.sysctls",
            "services.*.tmpfs",
        )
    },
    _pattern("services.*.configs"): _mount(""),
    _pattern("services.*.devices"): _device_target,
    _pattern("services.*.env_file"): _env_file,
    _pattern("services.*.expose"): _expose,
    _pattern("services.*.ports"): _port,
    _pattern("services.*.secrets"): _mount("/run/secrets"),
    _pattern("services.*.volumes"): _volume_target,
}
"""Sequence attributes de-duplicated after a merge, and how each item's key is computed."""


def unicity_key(path: Sequence[PathPart], item: Any) -> str | None:
    """The key that identifies `item` in the sequence at `path` (None: the sequence is not keyed)."""
    if not all(isinstance(p, str) for p in path):
        return None
    indexer: _Indexer | None = _lookup(UNIQUE_KEYS, [str(p) for p in path])
    return None if indexer is None else indexer(item)


def _dedupe(items: MList, path: Sequence[str]) -> MList:
    indexer: _Indexer | None = _lookup(UNIQUE_KEYS, path)
    if indexer is None:
        return items
    out = items.like()
    slots: dict[str, int] = {}
    for index, item in enumerate(items):
        key = indexer(item)
        location = items.item_locations[index] if index < len(items.item_locations) else None
        if key is not None and key in slots:
            out[slots[key]] = item
            out.item_locations[slots[key]] = location
            continue
        if key is not None:
            slots[key] = len(out)
        out.add(item, location)
    return out


def _unique_tree(value: Any, path: tuple[str, ...]) -> Any:
    if isinstance(value, dict):
        out = value.like() if isinstance(value, MDict) else MDict()
        for key, item in value.items():
            put_value = _unique_tree(item, (*path, key))
            if isinstance(value, MDict):
                out.put_from(value, key, put_value)
            else:
                out[key] = put_value
        return out
    if isinstance(value, list):
        return _dedupe(_as_mlist(value), path)
    return value


# --- tags -------------------------------------------------------------------------------------------


def _resolve(value: Any) -> Any:
    if isinstance(value, Override):
        return _resolve(value.value)
    if isinstance(value, dict):
        out = value.like() if isinstance(value, MDict) else MDict()
        for key, item in value.items():
            if isinstance(item, Reset):
                continue
            if isinstance(value, MDict):
                out.put_from(value, key, _resolve(item))
            else:
                out[key] = _resolve(item)
        return out
    if isinstance(value, list):
        source = _as_mlist(value)
        result = source.like()
        for index, item in enumerate(source):
            if not isinstance(item, Reset):
                result.add(_resolve(item), source.item_locations[index])
        return result
    return value


def _as_mlist(value: list[Any]) -> MList:
    if isinstance(value, MList) and len(value.item_locations) == len(value):
        return value
    out = MList(getattr(value, "location", None))
    locations = getattr(value, "item_locations", [])
    for index, item in enumerate(value):
        out.add(item, locations[index] if index < len(locations) else None)
    return out


def _location(value: Any) -> Location | None:
    if isinstance(value, (Override, Reset)):
        return value.location
    location = getattr(value, "location", None)
    return location if isinstance(location, Location) else None


# --- conversions used by the special rules ------------------------------------------------------------


def _to_sequence(value: Any, where: Location | None) -> MList:
    """A list stays a list; a mapping becomes sorted `KEY=VALUE` items; a string a one-item list."""
    if isinstance(value, list):
        return _as_mlist(value)
    out = MList(_location(value) or where)
    if isinstance(value, dict):
        entries: list[tuple[str, Location | None]] = []
        for key, item in value.items():
            location = value.where(key) if isinstance(value, MDict) else None
            if item is None:
                entries.append((key, location))
            elif isinstance(item, list):
                entries.extend((f"{key}={_go_str(v)}", location) for v in item)
            else:
                entries.append((f"{key}={_go_str(item)}", location))
        for text, location in sorted(entries, key=lambda e: e[0]):
            out.add(text, location)
    elif isinstance(value, str):
        out.add(value, where)
    return out


def _to_mapping(value: Any, default: dict[str, Any] | None, where: Location | None) -> MDict:
    """A mapping stays; a list of names becomes `{name: default}` (`depends_on`, `networks`)."""
    if isinstance(value, MDict):
        return value
    if isinstance(value, dict):
        out = MDict(where)
        for key, item in value.items():
            out[key] = item
        return out
    out = MDict(_location(value) or where)
    if isinstance(value, list):
        items = _as_mlist(value)
        for index, name in enumerate(items):
            location = items.item_locations[index]
            entry: Any = None
            if default is not None:
                entry = MDict(location)
                for key, item in default.items():
                    entry.put(key, item, location, location)
            out.put(str(name), entry, location, location)
    return out


# --- the merge itself -------------------------------------------------------------------------------

_Merger = Callable[[Any, Any, tuple[str, ...], "Location | None"], Any]


def _replace(_base: Any, override: Any, _path: tuple[str, ...], _where: Location | None) -> Any:
    return override


def _merge_to_sequence(base: Any, override: Any, path: tuple[str, ...], where: Location | None) -> Any:
    left = _to_sequence(base, where)
    right = _to_sequence(override, where)
    out = MList(right.location or left.location)
    for items in (left, right):
        for index, item in enumerate(items):
            out.add(item, items.item_locations[index])
    return _dedupe(out, path)


def _merge_extra_hosts(base: Any, override: Any, _path: tuple[str, ...], where: Location | None) -> Any:
    left = _to_sequence(base, where)
    right = _to_sequence(override, where)
    out = MList(right.location or left.location)
    for index, item in enumerate(left):
        out.add(item, left.item_locations[index])
    for index, item in enumerate(right):
        if item not in left:
            out.add(item, right.item_locations[index])
    return out


def _merge_build(base: Any, override: Any, path: tuple[str, ...], where: Location | None) -> Any:
    def as_mapping(value: Any) -> Any:
        if isinstance(value, str):
            out = MDict(where)
            out.put("context", value, where, where)
            return out
        return value

    return _merge_values(as_mapping(base), as_mapping(override), path, where, special=False)


_DEPENDS_DEFAULT = {"condition": "service_started", "required": True}


def _merge_depends_on(base: Any, override: Any, path: tuple[str, ...], where: Location | None) -> Any:
    left = _to_mapping(base, _DEPENDS_DEFAULT, where)
    right = _to_mapping(override, _DEPENDS_DEFAULT, where)
    return _merge_mapping(left, right, path)


def _merge_networks(base: Any, override: Any, path: tuple[str, ...], where: Location | None) -> Any:
    return _merge_mapping(_to_mapping(base, None, where), _to_mapping(override, None, where), path)


def _merge_logging(base: Any, override: Any, path: tuple[str, ...], where: Location | None) -> Any:
    if not isinstance(base, dict) or not isinstance(override, dict):
        return _merge_values(base, override, path, where, special=False)
    same_driver = base.get("driver") == override.get("driver")
    if same_driver or "driver" not in base or "driver" not in override:
        return _merge_values(base, override, path, where, special=False)
    return _resolve(override)


def _merge_ulimit(base: Any, override: Any, path: tuple[str, ...], where: Location | None) -> Any:
    return override


def _merge_ipam_config(base: Any, override: Any, path: tuple[str, ...], where: Location | None) -> Any:
    """Entries are keyed by `subnet`: an entry of the later file merges into the one with its subnet."""
    if not isinstance(base, list) or not isinstance(override, list):
        return _merge_values(base, override, path, where, special=False)
    left, right = _as_mlist(base), _as_mlist(override)
    out = MList(right.location or left.location)
    slots: dict[Any, int] = {}
    for items, merging in ((left, False), (right, True)):
        for index, item in enumerate(items):
            subnet = item.get("subnet") if isinstance(item, dict) else None
            if merging and subnet is not None and subnet in slots:
                slot = slots[subnet]
                out[slot] = _merge_values(out[slot], item, path, where, special=False)
                out.item_locations[slot] = items.item_locations[index]
                continue
            if subnet is not None:
                slots[subnet] = len(out)
            out.add(item, items.item_locations[index])
    return out


_TO_SEQUENCE = (
    "networks.*.labels",
    "volumes.*.labels",
    "services.*.annotations",
    "services.*.build.args",
    "services.*.build.additional_contexts",
    "services.*.build.labels",
    "services.*.deploy.labels",
    "services.*.dns",
    "services.*.dns_opt",
    "services.*.dns_search",
    "services.*.env_file",
    "services.*.environment",
    "services.*.labels",
    "services.*.label_file",
    "services.*.sysctls",
    "services.*.tmpfs",
)

_SPECIALS: dict[_Pattern, _Merger] = {
    **{_pattern(p): _merge_to_sequence for p in _TO_SEQUENCE},
    _pattern("networks.*.ipam.config"): _merge_ipam_config,
    _pattern("services.*.build"): _merge_build,
    _pattern("services.*.build.extra_hosts"): _merge_extra_hosts,
    _pattern("services.*.command"): _replace,
    _pattern("services.*.depends_on"): _merge_depends_on,
    _pattern("services.*.entrypoint"): _replace,
    _pattern("services.*.extra_hosts"): _merge_extra_hosts,
    _pattern("services.*.healthcheck.test"): _replace,
    _pattern("services.*.logging"): _merge_logging,
    _pattern("services.*.networks"): _merge_networks,
    _pattern("services.*.ulimits.*"): _merge_ulimit,
}

_WALKS_MAPPINGS: frozenset[_Merger] = frozenset(
    {_merge_build, _merge_depends_on, _merge_networks, _merge_logging}
)
"""Mergers that recurse into `_merge_mapping`, which handles nested tags itself."""

_REPLACE_NULL = frozenset(
    {
        _pattern("services.*.command"),
        _pattern("services.*.entrypoint"),
        _pattern("services.*.healthcheck.test"),
    }
)


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "list"
    return "scalar"


def _merge_values(
    base: Any, override: Any, path: tuple[str, ...], where: Location | None, *, special: bool
) -> Any:
    """`base` is free of tags; `override` may still hold `!reset`/`!override` below its top."""
    if special:
        for pattern, merger in _SPECIALS.items():
            if _matches(path, pattern):
                if override is None and pattern not in _REPLACE_NULL:
                    return base
                if base is None:
                    return _resolve(override)
                if merger not in _WALKS_MAPPINGS:
                    override = _resolve(override)
                return merger(base, override, path, where)
    if override is None:
        return base
    if isinstance(base, dict) and isinstance(override, dict):
        return _merge_mapping(base, override, path)
    override = _resolve(override)
    if base is None:
        return override
    if isinstance(base, dict):
        raise _mismatch(base, override, path, where)
    if isinstance(base, list):
        if not isinstance(override, list):
            raise _mismatch(base, override, path, where)
        left, right = _as_mlist(base), _as_mlist(override)
        out = MList(right.location or left.location)
        for items in (left, right):
            for index, item in enumerate(items):
                out.add(item, items.item_locations[index])
        return _dedupe(out, path)
    return override


def _mismatch(base: Any, override: Any, path: tuple[str, ...], where: Location | None) -> SpecError:
    earlier = _location(base)
    since = f" (earlier definition at {earlier})" if earlier is not None else ""
    return SpecError(
        f"cannot merge a {_kind(override)} over a {_kind(base)}{since}",
        location=_location(override) or where,
        path=path,
    )


def _merge_mapping(base: dict[str, Any], override: dict[str, Any], path: tuple[str, ...]) -> MDict:
    over_m = override if isinstance(override, MDict) else None
    base_m = base if isinstance(base, MDict) else None
    out = MDict((over_m.location if over_m is not None else None) or getattr(base, "location", None))
    # the earlier file's order, then the keys only the later file has
    for key in [*base, *(k for k in override if k not in base)]:
        if key not in override:
            _put(out, base_m, key, base[key])
            continue
        value = override[key]
        if isinstance(value, Reset):
            continue
        previous = base.get(key)
        if isinstance(previous, Override):
            previous = previous.value
        if isinstance(value, Override):
            _put(out, over_m, key, _resolve(value.value))
        elif key not in base or isinstance(previous, Reset) or key.startswith("x-"):
            _put(out, over_m, key, _resolve(value))
        else:
            where = over_m.where(key) if over_m is not None else None
            result = _merge_values(_resolve(previous), value, (*path, key), where, special=True)
            _put(out, over_m if value is not None else base_m, key, result)
    return out


def _put(out: MDict, source: MDict | None, key: str, value: Any) -> None:
    if source is not None:
        out.put_from(source, key, value)
    else:
        out[key] = value
