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


@dataclass(frozen=True, slots=True, kw_only=True)
class UpArgs:
    services: tuple[str, ...] = ()
    detach: bool = False
    build: bool = False
    no_build: bool = False
    force_recreate: bool = False
    no_recreate: bool = False
    always_recreate_deps: bool = False
    no_deps: bool = False
    remove_orphans: bool = False
    scale: tuple[str, ...] = ()  # "SERVICE=N"
    wait: bool = False
    wait_timeout: float | None = None
    abort_on_container_exit: bool = False
    abort_on_container_failure: bool = False
    exit_code_from: str | None = None
    attach: tuple[str, ...] = ()
    no_attach: tuple[str, ...] = ()
    no_log_prefix: bool = False
    no_color: bool = False
    timestamps: bool = False
    timeout: float | None = None
    dry_run: bool = False
    no_start: bool = False  # `composer create`


@dataclass(frozen=True, slots=True, kw_only=True)
class DownArgs:
    volumes: bool = False
    rmi: str | None = None
    remove_orphans: bool = False
    timeout: float | None = None
    dry_run: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class PsArgs:
    services: tuple[str, ...] = ()
    all: bool = False
    quiet: bool = False
    list_services: bool = False
    status: tuple[str, ...] = ()
    format: str = "table"


@dataclass(frozen=True, slots=True, kw_only=True)
class LogsArgs:
    services: tuple[str, ...] = ()
    follow: bool = False
    tail: str = "all"
    timestamps: bool = False
    since: str | None = None
    until: str | None = None
    no_color: bool = False
    no_log_prefix: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ServicesArgs:
    """start, stop, restart, kill, pause, unpause, rm."""

    command: str
    services: tuple[str, ...] = ()
    timeout: float | None = None
    signal: str = "SIGKILL"
    force: bool = False  # rm -f: no question (composer never asks)
    stop: bool = False  # rm -s
    volumes: bool = False  # rm -v
    dry_run: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecArgs:
    service: str
    command: tuple[str, ...]
    detach: bool = False
    no_tty: bool = False
    user: str | None = None
    workdir: str | None = None
    env: tuple[str, ...] = ()
    index: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class RunArgs:
    service: str
    command: tuple[str, ...] = ()
    remove: bool = False
    no_deps: bool = False
    detach: bool = False
    env: tuple[str, ...] = ()
    entrypoint: str | None = None
    name: str | None = None
    user: str | None = None
    workdir: str | None = None
    no_tty: bool = False  # -T: no pseudo-terminal (by default one when stdin and stdout are terminals)
    tty: bool = False  # -t: a pseudo-terminal even when they are not
    service_ports: bool = False  # -P: publish the service's ports (never published otherwise)
    publish: tuple[str, ...] = ()  # -p: publish these instead ([IP:][HOST:]CONTAINER[/PROTO])
    volumes: tuple[str, ...] = ()  # -v: more mounts, in the short syntax of a service's `volumes`
    labels: tuple[str, ...] = ()  # -l KEY=VALUE
    use_aliases: bool = False  # the service's name and network aliases for the one-off container too
    build: bool = False
