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
