"""Resolve `services.X.extends`: a service built on another one, from the same file or another file.

PURE: other files are read through the `load_file` callback, which returns an already interpolated
tree (the caller owns I/O and caching). Path arithmetic is done on the strings only.

Semantics (Docker Compose v2, checked against its binary):

* `extends: name` or `extends: {service: name}` takes the base from the same file;
  `extends: {service: name, file: path}` from another file, `path` relative to the directory of the
  file that holds the `extends`;
* the base is resolved first (it may extend another service, in any file), then the extending service
  is merged over it with the multi-file rules of `composer.spec.merge` (the base is the earlier side);
* every attribute is inherited, `depends_on`, `links`, `volumes_from` and `network_mode` included;
  nothing else of the other file (networks, volumes, ...) is imported;
* relative paths of a base taken from another directory are rebased onto the directory of the
  extending file: `build` / `build.context` (unless remote), `build.additional_contexts`, `env_file`,
  `label_file`, bind-mount sources in `volumes` (short form `./x:/y`, long form `type: bind`) and
  `develop.watch[].path`. As in Compose, a `build` mapping without `context` is left alone;
* a cycle is an error naming the chain; so is a missing service or a file without `services`.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from typing import Any

from composer.errors import ConfigFileNotFound, Location, SpecError
from composer.spec.merge import merge_service, resolve_tags
from composer.spec.source import MDict, MList, Override

__all__ = ["apply_extends", "rebase_service_paths"]

_Key = tuple[str, str]  # (file, service)
_REMOTE_PREFIXES = ("http://", "https://", "git://", "ssh://", "git@", "github.com/")


def apply_extends(tree: MDict, *, filename: str, load_file: Callable[[str], MDict]) -> MDict:
    """A copy of `tree` in which every service with `extends` is merged over its (resolved) base.

    `load_file` gets the other file's path already joined to the directory of `filename` (or the
    path as written when it is absolute or starts with `~`); each path is loaded once per call.
    """
    services = tree.get("services")
    if not isinstance(services, MDict) or not any(
        isinstance(s, dict) and "extends" in s for s in services.values()
    ):
        return tree
    resolver = _Resolver(load_file)
    resolved = services.like()
    for name in services:
        resolved.put_from(services, name, resolver.service(filename, services, name, ()))
    out = tree.like()
    for key, value in tree.items():
        out.put_from(tree, key, resolved if key == "services" else value)
    return out


class _Resolver:
    def __init__(self, load_file: Callable[[str], MDict]) -> None:
        self.load_file = load_file
        self.done: dict[_Key, Any] = {}
        self.files: dict[str, MDict] = {}

    def service(self, filename: str, services: MDict, name: str, chain: tuple[_Key, ...]) -> Any:
        key = (filename, name)
        if key in self.done:
            return self.done[key]
        if key in chain:
            raise _cycle(chain, key, services)
        raw = services[name]
        definition = raw.value if isinstance(raw, Override) else raw
        if not isinstance(definition, MDict) or "extends" not in definition:
            self.done[key] = raw
            return raw
        path = ("services", name, "extends")
        ref, ref_file, where = _parse(definition, path)
        if ref_file is None:
            base_file, base_services = filename, services
            if ref not in services:
                raise SpecError(
                    f'cannot extend service "{name}": service "{ref}" not found in {filename}',
                    location=where,
                    path=path,
                )
        else:
            base_file = ref_file  # absolute, or `~/...` for the caller to expand
            if not ref_file.startswith(("/", "~")):
                base_file = posixpath.normpath(posixpath.join(posixpath.dirname(filename), ref_file))
            file_where = (
                definition["extends"].where("file") if isinstance(definition["extends"], MDict) else None
            )
            base_services = self.services_of(base_file, name, ref_file, where, file_where, path)
            if ref not in base_services:
                raise SpecError(
                    f'cannot extend service "{name}": service "{ref}" not found in {ref_file}',
                    location=where,
                    path=path,
                )
        base = self.service(base_file, base_services, ref, (*chain, key))
        if isinstance(base, Override):
            base = base.value
        if not isinstance(base, MDict):
            raise SpecError(
                f'cannot extend service "{name}": service "{ref}" in {base_file} is not a mapping',
                location=where,
                path=path,
            )
        base = resolve_tags(base)
        if ref_file is not None:
            base = rebase_service_paths(base, posixpath.dirname(ref_file))
        own = definition.like()
        for attr, value in definition.items():
            if attr != "extends":
                own.put_from(definition, attr, value)
        merged: Any = merge_service(base, own, name)
        if isinstance(raw, Override):
            merged = Override(merged, raw.location)
        self.done[key] = merged
        return merged

    def services_of(
        self,
        base_file: str,
        name: str,
        ref_file: str,
        where: Location | None,
        file_where: Location | None,
        path: tuple[str, ...],
    ) -> MDict:
        if base_file not in self.files:
            try:
                self.files[base_file] = self.load_file(base_file)
            except OSError as exc:
                reason = exc.strerror or str(exc)
                raise SpecError(
                    f'cannot extend service "{name}": cannot read {ref_file}: {reason}',
                    location=file_where or where,
                    path=(*path, "file"),
                ) from None
            except ConfigFileNotFound as exc:
                if exc.location is not None:
                    raise
                raise SpecError(
                    f'cannot extend service "{name}": {exc.message}', location=where, path=path
                ) from None
        services = self.files[base_file].get("services")
        if not isinstance(services, MDict):
            raise SpecError(
                f'cannot extend service "{name}": {ref_file} has no services section',
                location=where,
                path=path,
            )
        return services


def _parse(definition: MDict, path: tuple[str, ...]) -> tuple[str, str | None, Location | None]:
    value = definition["extends"]
    where = definition.where("extends")
    if isinstance(value, str) and value:
        return value, None, where
    if isinstance(value, MDict):
        ref = value.get("service")
        if not isinstance(ref, str) or not ref:
            raise SpecError("extends needs a service name (extends.service)", location=where, path=path)
        ref_file = value.get("file")
        if ref_file is not None and (not isinstance(ref_file, str) or not ref_file):
            raise SpecError(
                "extends.file must be a path", location=value.where("file") or where, path=(*path, "file")
            )
        return ref, ref_file, value.where("service") or where
    raise SpecError(
        "extends must be a service name or a mapping with service (and file)", location=where, path=path
    )


def _cycle(chain: tuple[_Key, ...], again: _Key, services: MDict) -> SpecError:
    steps = [*chain[chain.index(again) :], again]
    text = " -> ".join(f"{svc} ({file})" for file, svc in steps)
    node = services.get(again[1])
    where = node.where("extends") if isinstance(node, MDict) else None
    return SpecError(f"extends cycle: {text}", location=where, path=("services", again[1], "extends"))


# --- rebasing relative paths -------------------------------------------------------------------------


def _is_remote(value: str) -> bool:
    return value.startswith(_REMOTE_PREFIXES) or "://" in value


def _rebase(prefix: str, value: str) -> str:
    if value.startswith(("/", "~")) or not prefix:
        return value
    joined = posixpath.normpath(posixpath.join(prefix, value))
    if joined.startswith(("/", ".", "~")):
        return joined
    return "./" + joined


def rebase_service_paths(service: MDict, prefix: str) -> MDict:
    """A copy of `service` (a raw definition) whose relative paths are prefixed with directory `prefix`.

    Used when a service defined in `prefix/file.yaml` is used from a file in the current directory.
    Remote build contexts, absolute and `~` paths, and named volumes are left as they are.
    """
    if not prefix or prefix == ".":
        return service
    out = service.like()
    for attr, value in service.items():
        new = value
        if attr == "build":
            new = _rebase_build(value, prefix)
        elif attr in ("env_file", "label_file"):
            new = _rebase_files(value, prefix)
        elif attr == "volumes" and isinstance(value, MList):
            new = _map_list(value, lambda item: _rebase_volume(item, prefix))
        elif attr == "develop" and isinstance(value, MDict):
            new = _rebase_develop(value, prefix)
        out.put_from(service, attr, new)
    return out


def _map_list(items: MList, change: Callable[[Any], Any]) -> MList:
    out = items.like()
    for index, item in enumerate(items):
        out.add(change(item), items.item_locations[index] if index < len(items.item_locations) else None)
    return out


def _with(mapping: MDict, key: str, value: Any) -> MDict:
    out = mapping.like()
    for k, v in mapping.items():
        out.put_from(mapping, k, value if k == key else v)
    return out


def _rebase_build(value: Any, prefix: str) -> Any:
    if isinstance(value, str):
        return value if _is_remote(value) else _rebase(prefix, value)
    if not isinstance(value, MDict):
        return value
    out = value
    context = value.get("context")
    if isinstance(context, str) and not _is_remote(context):
        out = _with(out, "context", _rebase(prefix, context))
    extra = value.get("additional_contexts")
    if isinstance(extra, MDict):
        moved = extra.like()
        for name, where in extra.items():
            if isinstance(where, str) and not _is_remote(where):
                where = _rebase(prefix, where)
            moved.put_from(extra, name, where)
        out = _with(out, "additional_contexts", moved)
    elif isinstance(extra, MList):

        def move(item: Any) -> Any:
            if isinstance(item, str) and "=" in item:
                name, where = item.split("=", 1)
                if not _is_remote(where):
                    return f"{name}={_rebase(prefix, where)}"
            return item

        out = _with(out, "additional_contexts", _map_list(extra, move))
    return out


def _rebase_files(value: Any, prefix: str) -> Any:
    def move(item: Any) -> Any:
        if isinstance(item, str):
            return _rebase(prefix, item)
        if isinstance(item, MDict) and isinstance(item.get("path"), str):
            return _with(item, "path", _rebase(prefix, item["path"]))
        return item

    if isinstance(value, MList):
        return _map_list(value, move)
    return move(value)


def _rebase_volume(item: Any, prefix: str) -> Any:
    if isinstance(item, str):
        source, sep, rest = item.partition(":")
        if sep and source.startswith("."):
            return f"{_rebase(prefix, source)}:{rest}"
        return item
    if isinstance(item, MDict) and item.get("type") == "bind" and isinstance(item.get("source"), str):
        return _with(item, "source", _rebase(prefix, item["source"]))
    return item


def _rebase_develop(develop: MDict, prefix: str) -> MDict:
    watch = develop.get("watch")
    if not isinstance(watch, MList):
        return develop

    def move(rule: Any) -> Any:
        if isinstance(rule, MDict) and isinstance(rule.get("path"), str):
            return _with(rule, "path", _rebase(prefix, rule["path"]))
        return rule

    return _with(develop, "watch", _map_list(watch, move))
