"""The frozen options the command line hands to the commands (a leaf: imports nothing of ours)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class GlobalOptions:
    files: tuple[str, ...]
    project_name: str | None
    profiles: tuple[str, ...]
    env_files: tuple[str, ...]
    project_directory: str | None
    debug: bool
    log_format: str
    root: str | None = None  # --root; else COMPOSER_ROOT, else /var/lib/composer


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigOptions:
    format: str
    quiet: bool
    services: bool
    volumes: bool
    networks: bool
    images: bool
    profiles: bool
    hash: str | None
    no_interpolate: bool
    environment: bool
    output: str | None
    selected: tuple[str, ...] = ()  # `config web db`: only these services and their dependencies


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageListOptions:
    quiet: bool
    format: str  # "table" or "json"
    all: bool = False  # also the untagged images of intermediate build steps


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageRemoveOptions:
    images: tuple[str, ...]
    force: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageInspectOptions:
    images: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ImagePruneOptions:
    force: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageLoadOptions:
    input: str | None  # None or "-": standard input
    quiet: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageImportOptions:
    source: str  # a file, or "-" for standard input
    reference: str | None
    changes: tuple[str, ...]
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ImagePullOptions:
    reference: str
    quiet: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageTagOptions:
    source: str
    target: str


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildOptions:
    services: tuple[str, ...] = ()  # empty: every service with `build:`
    no_cache: bool = False
    build_args: tuple[str, ...] = ()  # "K=V", or a bare "K" taken from the environment
    quiet: bool = False
    parallel: int = 2  # services built at once (independent ones)
