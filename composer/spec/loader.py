"""The load pipeline: compose files on disk -> a validated, typed `Project`.

For each file, in order (compose-semantics.md §2.3): read YAML with locations -> interpolate values
(OS environment over `.env`) -> `include` -> `extends` -> merge into what earlier files gave. Then:
`!reset`/`!override` resolved -> schema validation -> normalization and semantic checks -> profiles ->
dependency cycles.

This module reads the compose files, `.env` files and `env_file:`/`extends`/`include` files it is
pointed at, and looks for the default file names upward from the working directory. It does no other
I/O: the file system is reached only through the `Files` it is given.
"""

from __future__ import annotations

import gc
import os
import posixpath
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from composer.errors import ComposerError, ConfigFileNotFound, Location, SpecError
from composer.spec import graph
from composer.spec.envfile import parse_dotenv
from composer.spec.extends import apply_extends
from composer.spec.interpolate import interpolate_tree
from composer.spec.merge import enforce_unicity, merge_trees, resolve_tags
from composer.spec.model import Project
from composer.spec.names import normalize_project_name
from composer.spec.normalize import normalize_project
from composer.spec.profiles import only_services, select_services
from composer.spec.serialize import project_to_dict
from composer.spec.source import MDict, MList, from_plain, load_documents, locate, to_plain
from composer.spec.validate import validate_document

__all__ = [
    "DEFAULT_FILES",
    "OVERRIDE_FILES",
    "Files",
    "InvalidProjectName",
    "LoadOptions",
    "Loaded",
    "LocalFiles",
    "find_compose_files",
    "load_merged_tree",
    "load_project",
    "load_tree",
    "normalize_project_name",
    "project_environment",
]

DEFAULT_FILES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")
OVERRIDE_FILES = (
    "compose.override.yml",
    "compose.override.yaml",
    "docker-compose.override.yml",
    "docker-compose.override.yaml",
)
STDIN = "-"

Warn = Callable[[str], None]


class Files(Protocol):
    """The only way the loader touches the file system."""

    def read_text(self, path: str) -> str: ...

    def is_file(self, path: str) -> bool: ...


class LocalFiles:
    """`Files` on the real file system."""

    def read_text(self, path: str) -> str:
        try:
            with open(path, encoding="utf-8-sig") as handle:
                return handle.read()
        except FileNotFoundError:
            raise ConfigFileNotFound(f"{path}: no such file or directory") from None
        except IsADirectoryError:
            raise SpecError(f"{path}: is a directory, not a file") from None
        except UnicodeDecodeError as exc:
            raw = exc.object[: exc.start]
            line = raw.count(b"\n") + 1
            col = len(raw) - (raw.rfind(b"\n") + 1) + 1
            raise SpecError(
                f"not UTF-8 text ({exc.reason} at byte {exc.start})", location=Location(path, line, col)
            ) from None
        except OSError as exc:
            raise SpecError(f"{path}: cannot read: {exc.strerror}") from None

    def is_file(self, path: str) -> bool:
        return os.path.isfile(path)


class InvalidProjectName(ComposerError):
    """`-p` or COMPOSE_PROJECT_NAME holds a name that normalization would change (Compose exits 1)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadOptions:
    """What the command line and the environment say about where the project is."""

    cwd: str
    environ: Mapping[str, str]
    files: tuple[str, ...] = ()
    stdin_text: str | None = None
    project_name: str | None = None
    project_directory: str | None = None
    env_files: tuple[str, ...] = ()
    profiles: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    interpolate: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Loaded:
    """A loaded project and how it was found."""

    project: Project
    files: tuple[str, ...]
    working_dir: str
    environment: tuple[tuple[str, str], ...]
    """The variables interpolation saw (OS environment over the .env files), sorted."""
    tree: MDict = field(repr=False)
    """The merged raw tree (locations kept), for messages and for `config --no-interpolate`."""


# --- project name -----------------------------------------------------------------------------------


def _checked_name(name: str, source: str) -> str:
    normal = normalize_project_name(name)
    if normal != name or not normal:
        hint = f' (try "{normal}")' if normal else ""
        raise InvalidProjectName(
            f'invalid project name "{name}": must consist only of lowercase alphanumeric characters, '
            f"hyphens, and underscores as well as start with a letter or number{hint}"
            + (f"; it comes from {source}" if source != "-p" else "")
        )
    return name


# --- environment ------------------------------------------------------------------------------------


def _read_env_files(
    paths: Sequence[str], base_env: Mapping[str, str], files: Files, warn: Warn
) -> dict[str, str]:
    """Later files override earlier ones; expansion inside sees `base_env` first, then earlier files."""
    loaded: dict[str, str] = {}
    for path in paths:
        text = files.read_text(path)

        def lookup(key: str) -> str | None:
            if key in base_env:
                return base_env[key]
            return loaded.get(key)

        loaded.update(parse_dotenv(text, path, lookup, warn))
    return loaded


def project_environment(
    environ: Mapping[str, str], env_files: Sequence[str], files: Files, warn: Warn
) -> dict[str, str]:
    """The interpolation environment: the OS environment always wins over the env files."""
    merged = dict(_read_env_files(env_files, environ, files, warn))
    merged.update(environ)
    return merged


def _default_env_files(directory: str, environ: Mapping[str, str], files: Files) -> list[str]:
    if environ.get("COMPOSE_DISABLE_ENV_FILE", "").lower() in ("1", "true"):
        return []
    candidate = posixpath.join(directory, ".env")
    return [candidate] if files.is_file(candidate) else []


# --- discovery --------------------------------------------------------------------------------------


def find_compose_files(cwd: str, environ: Mapping[str, str], files: Files, warn: Warn) -> list[str]:
    """The default file of the nearest directory from `cwd` upward, plus its override file."""
    if environ.get("COMPOSE_FILE"):
        separator = environ.get("COMPOSE_PATH_SEPARATOR") or os.pathsep
        return [_absolute(cwd, part) for part in environ["COMPOSE_FILE"].split(separator) if part]
    directory = cwd
    while True:
        found = [posixpath.join(directory, name) for name in DEFAULT_FILES]
        found = [path for path in found if files.is_file(path)]
        if found:
            if len(found) > 1:
                warn(f"Found multiple config files with supported names: {', '.join(found)}")
                warn(f"Using {found[0]}")
            chosen = [found[0]]
            for name in OVERRIDE_FILES:
                override = posixpath.join(directory, name)
                if files.is_file(override):
                    chosen.append(override)
                    break
            return chosen
        parent = posixpath.dirname(directory)
        if parent == directory:
            raise ConfigFileNotFound(
                "no configuration file provided: not found "
                f"(looked for {', '.join(DEFAULT_FILES)} in {cwd} and its parents)"
            )
        directory = parent


def _absolute(base: str, path: str) -> str:
    path = os.path.expanduser(path) if path.startswith("~") else path
    return posixpath.normpath(posixpath.join(base, path))


# --- trees ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Context:
    files: Files
    warn: Warn
    lookup: Callable[[str], str | None]
    interpolate: bool
    name: str
    environ: Mapping[str, str]
    stack: tuple[str, ...] = ()
    cache: dict[str, list[MDict]] = field(default_factory=dict)
    raw: dict[str, list[MDict]] = field(default_factory=dict)
    """Parsed but not interpolated, shared with sub-contexts: each file is parsed once."""
    warned: set[str] = field(default_factory=set)


def _parse(path: str, ctx: _Context, stdin_text: str | None) -> list[MDict]:
    if path not in ctx.raw:
        text = stdin_text if path == STDIN and stdin_text is not None else ctx.files.read_text(path)
        ctx.raw[path] = load_documents(text, "<stdin>" if path == STDIN else path)
    return ctx.raw[path]


def _read_documents(path: str, ctx: _Context, stdin_text: str | None) -> list[MDict]:
    if path in ctx.cache:
        return ctx.cache[path]
    docs = _parse(path, ctx, stdin_text)
    if ctx.interpolate:

        def warn_once(message: str) -> None:
            if message not in ctx.warned:
                ctx.warned.add(message)
                ctx.warn(message)

        docs = [interpolate_tree(doc, ctx.lookup, warn_once) for doc in docs]
    ctx.cache[path] = docs
    return docs


def _merged_file(path: str, ctx: _Context) -> MDict:
    """One file other than the main ones (an `extends: file:`), documents merged."""
    docs = _read_documents(path, ctx, None)
    tree = docs[0] if docs else MDict(Location(path, 1, 1))
    for doc in docs[1:]:
        tree = merge_trees(tree, doc)
    return tree


def load_tree(paths: Sequence[str], working_dir: str, ctx: _Context, stdin_text: str | None = None) -> MDict:
    """Read, interpolate, include, extend and merge `paths` into one raw tree."""
    merged: MDict | None = None
    for path in paths:
        for doc in _read_documents(path, ctx, stdin_text):
            if "version" in doc:
                ctx.warn(
                    f"{path}: the attribute `version` is obsolete, it will be ignored, "
                    "please remove it to avoid potential confusion"
                )
            doc = _apply_include(doc, path, working_dir, ctx)
            base_dir = working_dir if path == STDIN else posixpath.dirname(path)

            def load_other(other: str, _base: str = base_dir) -> MDict:
                return _merged_file(_absolute(_base, other), ctx)

            doc = apply_extends(doc, filename=path, load_file=load_other)
            merged = doc if merged is None else merge_trees(merged, doc)
    if merged is None:
        raise SpecError("empty compose file", location=Location(paths[0] if paths else STDIN, 1, 1))
    tree = enforce_unicity(resolve_tags(merged))
    out = tree.like()
    for key in tree:
        if key not in ("version", "include"):
            out.put_from(tree, key, tree[key])
    return out


# --- include ------------------------------------------------------------------------------------


_SECTIONS = ("services", "networks", "volumes", "secrets", "configs")


def _as_strings(value: Any, where: Location | None, path: tuple[str | int, ...]) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise SpecError("must be a string or a list of strings", location=where, path=path)


def _apply_include(doc: MDict, path: str, working_dir: str, ctx: _Context) -> MDict:
    entries = doc.get("include")
    if entries is None:
        return doc
    if not isinstance(entries, MList):
        raise SpecError("include must be a list", location=doc.where("include"), path=("include",))
    result = doc
    for index, entry in enumerate(entries):
        where = entries.where(index)
        epath: tuple[str | int, ...] = ("include", index)
        if isinstance(entry, str):
            entry = {"path": entry}
        if not isinstance(entry, dict) or "path" not in entry:
            raise SpecError("an include entry is a path or a mapping with path:", location=where, path=epath)
        unknown = sorted(set(entry) - {"path", "project_directory", "env_file"})
        if unknown:
            raise SpecError(f"unknown attribute {unknown[0]!r} in include", location=where, path=epath)
        sub_paths = [_absolute(working_dir, p) for p in _as_strings(entry["path"], where, (*epath, "path"))]
        sub_dir = (
            _absolute(working_dir, str(entry["project_directory"]))
            if entry.get("project_directory")
            else posixpath.dirname(sub_paths[0])
        )
        for sub in sub_paths:
            if sub in ctx.stack:
                chain = " -> ".join([*ctx.stack, sub])
                raise SpecError(f"include cycle: {chain}", location=where, path=epath)
            if not ctx.files.is_file(sub):
                raise ConfigFileNotFound(f"included file {sub} not found", location=where, path=epath)
        if "env_file" in entry:
            env_paths = [
                _absolute(working_dir, p) for p in _as_strings(entry["env_file"], where, (*epath, "env_file"))
            ]
        else:
            env_paths = _default_env_files(sub_dir, {}, ctx.files)
        try:
            sub_env = project_environment(ctx.environ, env_paths, ctx.files, ctx.warn)
        except SpecError as exc:
            if exc.location is not None:
                raise
            raise SpecError(exc.message, location=where, path=(*epath, "env_file")) from None
        sub_ctx = _Context(
            files=ctx.files,
            warn=ctx.warn,
            lookup=sub_env.get,
            interpolate=ctx.interpolate,
            name=ctx.name,
            environ=ctx.environ,
            stack=(*ctx.stack, path, *sub_paths),
            raw=ctx.raw,
        )
        sub_tree = load_tree(sub_paths, sub_dir, sub_ctx)
        validate_document(sub_tree)
        project = normalize_project(
            sub_tree,
            name=ctx.name,
            working_dir=sub_dir,
            environ=sub_env,
            read_text=ctx.files.read_text,
            warn=ctx.warn,
        )
        imported = from_plain(project_to_dict(project), where)
        assert isinstance(imported, MDict)
        result = _add_imported(result, imported, sub_paths[0], where)
    return result


def _add_imported(doc: MDict, imported: MDict, source: str, where: Location | None) -> MDict:
    out = doc.clone()
    for section in _SECTIONS:
        theirs = imported.get(section)
        if not isinstance(theirs, MDict):
            continue
        ours = out.get(section)
        combined = ours.clone() if isinstance(ours, MDict) else MDict(where)
        for key in theirs:
            if key in combined and to_plain(combined[key]) != to_plain(theirs[key]):
                raise SpecError(
                    f"{section} {key!r} is defined both here and in the included file {source}",
                    location=combined.where(key),
                    path=(section, key),
                )
            if key not in combined:
                combined.put_from(theirs, key, theirs[key])
        out.put(section, combined, where, where)
    return out


# --- the whole pipeline -----------------------------------------------------------------------------


def _prescan_name(
    paths: Sequence[str], ctx: _Context, stdin_text: str | None
) -> tuple[str | None, Location | None]:
    """The last non-empty top-level `name:` across the files, interpolated, and where it stands."""
    found: str | None = None
    where: Location | None = None
    for path in paths:
        for doc in _parse(path, ctx, stdin_text):
            value = doc.get("name")
            if isinstance(value, str) and ctx.interpolate:
                probe = MDict(doc.location)
                probe.put_from(doc, "name", value)
                value = interpolate_tree(probe, ctx.lookup, lambda _: None)["name"]
            if value not in (None, ""):
                found, where = str(value), doc.where("name")
    return found, where


@dataclass(slots=True)
class _Prepared:
    paths: list[str]
    working_dir: str
    environment: dict[str, str]
    ctx: _Context


def _prepare(options: LoadOptions, warn: Warn, fs: Files) -> _Prepared:
    """Steps 1-4: the environment, the files, the project directory and the project name."""
    cwd = options.cwd
    explicit_project_dir = _absolute(cwd, options.project_directory) if options.project_directory else None

    # 1. The environment for COMPOSE_* lookups: OS + .env of the working directory.
    env_files = [_absolute(cwd, path) for path in options.env_files]
    first_dir = explicit_project_dir or cwd
    discovery_env = project_environment(
        options.environ, env_files or _default_env_files(first_dir, options.environ, fs), fs, warn
    )

    # 2. Which files, and the project directory.
    if options.files:
        paths = [path if path == STDIN else _absolute(cwd, path) for path in options.files]
        for path in paths:
            if path != STDIN and not fs.is_file(path):
                raise ConfigFileNotFound(f"{path}: no such file or directory")
    else:
        paths = find_compose_files(first_dir, discovery_env, fs, warn)
    if explicit_project_dir is not None:
        working_dir = explicit_project_dir
    elif paths[0] == STDIN:
        working_dir = cwd
    else:
        working_dir = posixpath.dirname(paths[0])

    # 3. The project environment: OS + --env-file, or OS + the project directory's .env.
    if env_files or working_dir == first_dir:
        environment = discovery_env
    else:
        environment = project_environment(
            options.environ, _default_env_files(working_dir, options.environ, fs), fs, warn
        )

    # 4. The project name: -p > COMPOSE_PROJECT_NAME > name: > directory name.
    ctx = _Context(
        files=fs,
        warn=warn,
        lookup=environment.get,
        interpolate=options.interpolate,
        name="",
        environ=options.environ,
        stack=tuple(paths),
    )
    if options.project_name:
        name = _checked_name(options.project_name, "-p")
    elif environment.get("COMPOSE_PROJECT_NAME"):
        name = _checked_name(environment["COMPOSE_PROJECT_NAME"], "COMPOSE_PROJECT_NAME")
    else:
        from_file, where = _prescan_name(paths, ctx, options.stdin_text)
        name = normalize_project_name(from_file or posixpath.basename(working_dir.rstrip("/")) or "")
        if not name and from_file:
            raise SpecError(
                f"project name {from_file!r} has no letter or digit to keep: "
                "use lowercase letters, digits, '-' and '_'",
                location=where,
                path=("name",),
            )
        if not name:
            raise InvalidProjectName(
                f"cannot derive a project name from the directory {working_dir!r}: "
                "give one with -p or a top-level name:"
            )
    environment = {**environment, "COMPOSE_PROJECT_NAME": name}
    ctx.lookup = environment.get
    ctx.name = name
    ctx.cache.clear()
    return _Prepared(paths=paths, working_dir=working_dir, environment=environment, ctx=ctx)


def load_merged_tree(options: LoadOptions, warn: Warn, files: Files | None = None) -> MDict:
    """The files read, included, extended and merged, with the project name set, but neither
    validated nor normalized: what `config --no-interpolate` shows."""
    prepared = _prepare(options, warn, files if files is not None else LocalFiles())
    tree = load_tree(prepared.paths, prepared.working_dir, prepared.ctx, options.stdin_text)
    tree.put("name", prepared.ctx.name)
    return _with_default_network(tree, prepared.ctx.name)


def _with_default_network(tree: MDict, name: str) -> MDict:
    """The implicit `default` network, as Compose adds it even to uninterpolated output: every service
    without `networks` and `network_mode` joins it, and it is declared when some service uses it."""
    services = tree.get("services")
    if not isinstance(services, MDict):
        return tree
    out_services = services.like()
    used = False
    for key, service in services.items():
        if isinstance(service, MDict) and "networks" not in service and "network_mode" not in service:
            service = service.clone()
            service.put("networks", from_plain({"default": None}, service.location))
            used = True
        out_services.put_from(services, key, service)
    out = tree.clone()
    out.put_from(tree, "services", out_services)
    networks = tree.get("networks")
    if used and not (isinstance(networks, dict) and "default" in networks):
        declared = networks.clone() if isinstance(networks, MDict) else MDict(tree.location)
        declared.put("default", from_plain({"name": f"{name}_default"}, tree.location))
        out.put("networks", declared)
    return out


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Loading makes hundreds of thousands of small acyclic objects; the cyclic collector's passes
    over them were 55-70 % of the load time of 1000-5000 service files (bench/config_load.py).
    Reference counting still frees everything; the collector is back on when loading ends."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_project(options: LoadOptions, warn: Warn, files: Files | None = None) -> Loaded:
    """Find, read and check the compose files that `options` point at; see the module docstring."""
    with _cyclic_gc_paused():
        return _load_project(options, warn, files)


def _load_project(options: LoadOptions, warn: Warn, files: Files | None) -> Loaded:
    fs = files if files is not None else LocalFiles()
    prepared = _prepare(options, warn, fs)
    name, working_dir, environment = prepared.ctx.name, prepared.working_dir, prepared.environment

    # 5. Read, interpolate, include, extend, merge; validate; normalize.
    tree = load_tree(prepared.paths, working_dir, prepared.ctx, options.stdin_text)
    tree.put("name", name)
    validate_document(tree)
    project = normalize_project(
        tree,
        name=name,
        working_dir=working_dir,
        environ=environment,
        read_text=fs.read_text,
        warn=warn,
    )

    # 6. Profiles, then dependency cycles among what is enabled.
    profiles = options.profiles
    if not profiles and environment.get("COMPOSE_PROFILES"):
        profiles = tuple(p.strip() for p in environment["COMPOSE_PROFILES"].split(",") if p.strip())
    project = select_services(project, profiles=profiles, requested=options.services, tree=tree)
    project = only_services(project, options.services)
    for service in project.services:
        if service.image is None and service.build is None:
            raise SpecError(
                f'service "{service.name}" has neither an image nor a build context specified',
                location=locate(tree, ("services", service.name)),
                path=("services", service.name),
            )
    cycle = graph.find_cycle(project)
    if cycle:
        raise SpecError(
            "dependency cycle detected: " + " -> ".join(cycle),
            location=locate(tree, ("services", cycle[0], "depends_on")),
            path=("services", cycle[0], "depends_on"),
        )
    return Loaded(
        project=project,
        files=tuple(prepared.paths),
        working_dir=working_dir,
        environment=tuple(sorted(environment.items())),
        tree=tree,
    )
