"""The typed, frozen project model: what normalization produces and every later layer reads.

PURE and immutable: frozen dataclasses, tuples instead of lists, sorted `(key, value)` pairs instead
of dicts. Long syntax only: every short form has been expanded by `composer.spec.normalize`.
Values a user wrote as text but that carry a quantity (durations, byte sizes) keep both the text
and the number. Rarely used attributes whose inner structure composer does not act on
(`blkio_config`, `develop`, `gpus`, `deploy.placement` ...) are kept as `Raw`: canonical JSON text.

Field order inside each class follows Compose's (compose-go `types/`), so that serialization can
walk the fields in order and print keys the way `docker compose config --format json` does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Build",
    "ByteSize",
    "ConfigObject",
    "Dependency",
    "Deploy",
    "Device",
    "Duration",
    "Env",
    "FileRef",
    "Healthcheck",
    "Ipam",
    "IpamPool",
    "Logging",
    "Network",
    "Pairs",
    "Port",
    "Project",
    "Raw",
    "Resource",
    "Resources",
    "RestartPolicy",
    "SecretObject",
    "Service",
    "ServiceNetwork",
    "Ulimit",
    "Volume",
    "VolumeBind",
    "VolumeImage",
    "VolumeMount",
    "VolumeOptions",
    "VolumeTmpfs",
    "go_duration",
    "lookup",
]

Pairs = tuple[tuple[str, str], ...]
"""A string map as `(key, value)` pairs sorted by key (labels, options, sysctls ...)."""

Env = tuple[tuple[str, str | None], ...]
"""An environment (or build args): sorted pairs; None = declared without a value and unset."""


def lookup(pairs: tuple[tuple[str, Any], ...], key: str, default: Any = None) -> Any:
    """The value of `key` in sorted pairs, or `default`."""
    for k, v in pairs:
        if k == key:
            return v
    return default


@dataclass(frozen=True, slots=True)
class Raw:
    """A value composer keeps but does not interpret: canonical JSON text (sorted keys)."""

    json: str

    @staticmethod
    def of(value: Any) -> Raw:
        return Raw(json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False))

    def value(self) -> Any:
        return json.loads(self.json)


def go_duration(ns: int) -> str:
    """Nanoseconds as Go's `time.Duration.String()` writes them (`1m30s`, `1.5s`, `500ms`, `0s`)."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    u = abs(ns)
    if u < 10**9:
        for unit, size in (("ms", 10**6), ("µs", 10**3), ("ns", 1)):
            if u >= size or unit == "ns":
                return sign + _fraction(u, size) + unit
    hours, rest = divmod(u, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    out = sign
    if hours:
        out += f"{hours}h"
    if hours or minutes:
        out += f"{minutes}m"
    return out + _fraction(rest, 10**9) + "s"


def _fraction(value: int, size: int) -> str:
    whole, frac = divmod(value, size)
    if not frac:
        return str(whole)
    digits = str(frac).rjust(len(str(size)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"


@dataclass(frozen=True, slots=True)
class Duration:
    """A Go-style duration (`1m30s`): the text as written and its length in nanoseconds."""

    nanoseconds: int
    text: str = ""

    @property
    def seconds(self) -> float:
        return self.nanoseconds / 1e9

    def __str__(self) -> str:
        return go_duration(self.nanoseconds)


@dataclass(frozen=True, slots=True)
class ByteSize:
    """A byte size (`64m`, `1.5g`, `100`): the text as written and the number of bytes (1k = 1024)."""

    bytes: int
    text: str = ""

    def __str__(self) -> str:
        return str(self.bytes)


# --- service parts ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Port:
    """One published or exposed port (a short-syntax range becomes several of these)."""

    name: str | None = None
    mode: str = "ingress"
    host_ip: str | None = None
    target: int
    published: str | None = None  # a port or a range `8000-8001`; None = ephemeral
    protocol: str = "tcp"
    app_protocol: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class VolumeBind:
    propagation: str | None = None
    create_host_path: bool = True
    selinux: str | None = None
    recursive: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class VolumeOptions:
    labels: Pairs = ()
    nocopy: bool = False
    subpath: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class VolumeTmpfs:
    size: ByteSize | None = None
    mode: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class VolumeImage:
    subpath: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class VolumeMount:
    """A service mount. `type` is bind, volume, tmpfs, image, npipe or cluster; `source` of a bind is
    absolute; a volume without `source` is anonymous."""

    type: str
    source: str | None = None
    target: str
    read_only: bool = False
    consistency: str | None = None
    bind: VolumeBind | None = None
    volume: VolumeOptions | None = None
    tmpfs: VolumeTmpfs | None = None
    image: VolumeImage | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceNetwork:
    """A service's attachment to one network. `declared` is False for `networks: [name]` (no options
    at all: Compose prints `null`)."""

    name: str
    declared: bool = False
    aliases: tuple[str, ...] = ()
    driver_opts: Pairs = ()
    gw_priority: int = 0
    interface_name: str | None = None
    ipv4_address: str | None = None
    ipv6_address: str | None = None
    link_local_ips: tuple[str, ...] = ()
    mac_address: str | None = None
    priority: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Dependency:
    """One `depends_on` entry (explicit, or implied by links / `service:` / volumes_from)."""

    service: str
    condition: str = "service_started"
    restart: bool = False
    required: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Healthcheck:
    """`test` is the exec form: ("CMD", ...), ("CMD-SHELL", cmd), ("NONE",), or None (image default)."""

    test: tuple[str, ...] | None = None
    timeout: Duration | None = None
    interval: Duration | None = None
    retries: int | None = None
    start_period: Duration | None = None
    start_interval: Duration | None = None
    disable: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class FileRef:
    """A service's use of a secret or config."""

    source: str
    target: str | None = None
    uid: str | None = None
    gid: str | None = None
    mode: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Ulimit:
    name: str
    single: int | None = None
    soft: int | None = None
    hard: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Logging:
    driver: str | None = None
    options: Pairs = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Device:
    source: str
    target: str | None = None
    permissions: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Build:
    """`build:`; `context` is absolute unless it is a URL; `dockerfile` defaults to `Dockerfile`."""

    context: str
    dockerfile: str | None = None
    dockerfile_inline: str | None = None
    entitlements: tuple[str, ...] = ()
    args: Env = ()
    provenance: str | None = None
    sbom: str | None = None
    ssh: tuple[str, ...] = ()
    labels: Pairs = ()
    cache_from: tuple[str, ...] = ()
    cache_to: tuple[str, ...] = ()
    no_cache: bool = False
    no_cache_filter: tuple[str, ...] = ()
    additional_contexts: Pairs = ()
    pull: bool = False
    extra_hosts: tuple[str, ...] = ()
    isolation: str | None = None
    network: str | None = None
    target: str | None = None
    secrets: tuple[FileRef, ...] = ()
    shm_size: ByteSize | None = None
    tags: tuple[str, ...] = ()
    ulimits: tuple[Ulimit, ...] = ()
    platforms: tuple[str, ...] = ()
    privileged: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Resource:
    cpus: float | None = None
    memory: ByteSize | None = None
    pids: int | None = None
    devices: Raw | None = None
    generic_resources: Raw | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Resources:
    limits: Resource | None = None
    reservations: Resource | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RestartPolicy:
    condition: str | None = None
    delay: Duration | None = None
    max_attempts: int | None = None
    window: Duration | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Deploy:
    mode: str | None = None
    replicas: int | None = None
    labels: Pairs = ()
    update_config: Raw | None = None
    rollback_config: Raw | None = None
    resources: Resources = Resources()
    restart_policy: RestartPolicy | None = None
    placement: Raw | None = None
    endpoint_mode: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Service:
    """One service, fully normalized. `command`/`entrypoint`: None = the image's, () = cleared."""

    name: str
    profiles: tuple[str, ...] = ()
    annotations: Pairs = ()
    attach: bool | None = None
    build: Build | None = None
    develop: Raw | None = None
    blkio_config: Raw | None = None
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    cgroup_parent: str | None = None
    cgroup: str | None = None
    cpu_count: int | None = None
    cpu_percent: float | None = None
    cpu_period: int | None = None
    cpu_quota: int | None = None
    cpu_rt_period: int | None = None
    cpu_rt_runtime: int | None = None
    cpus: float | None = None
    cpuset: str | None = None
    cpu_shares: int | None = None
    command: tuple[str, ...] | None = None
    configs: tuple[FileRef, ...] = ()
    container_name: str | None = None
    credential_spec: Raw | None = None
    depends_on: tuple[Dependency, ...] = ()  # sorted by service
    deploy: Deploy | None = None
    device_cgroup_rules: tuple[str, ...] = ()
    devices: tuple[Device, ...] = ()
    dns: tuple[str, ...] = ()
    dns_opt: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    domainname: str | None = None
    entrypoint: tuple[str, ...] | None = None
    environment: Env = ()
    expose: tuple[str, ...] = ()
    external_links: tuple[str, ...] = ()
    extra_hosts: tuple[str, ...] = ()  # "host=ip", in file order
    group_add: tuple[str, ...] = ()
    gpus: Raw | None = None
    hostname: str | None = None
    healthcheck: Healthcheck | None = None
    image: str | None = None
    init: bool | None = None
    ipc: str | None = None
    isolation: str | None = None
    labels: Pairs = ()
    links: tuple[str, ...] = ()
    logging: Logging | None = None
    mem_limit: ByteSize | None = None
    mem_reservation: ByteSize | None = None
    memswap_limit: ByteSize | None = None
    mem_swappiness: ByteSize | None = None
    mac_address: str | None = None
    network_mode: str | None = None
    networks: tuple[ServiceNetwork, ...] = ()  # sorted by name
    oom_kill_disable: bool = False
    oom_score_adj: int | None = None
    pid: str | None = None
    pids_limit: int | None = None
    platform: str | None = None
    ports: tuple[Port, ...] = ()
    privileged: bool = False
    pull_policy: str | None = None
    read_only: bool = False
    restart: str | None = None
    runtime: str | None = None
    scale: int | None = None
    secrets: tuple[FileRef, ...] = ()
    security_opt: tuple[str, ...] = ()
    shm_size: ByteSize | None = None
    stdin_open: bool = False
    stop_grace_period: Duration | None = None
    stop_signal: str | None = None
    storage_opt: Pairs = ()
    sysctls: Pairs = ()
    tmpfs: tuple[str, ...] = ()
    tty: bool = False
    ulimits: tuple[Ulimit, ...] = ()  # sorted by name
    user: str | None = None
    userns_mode: str | None = None
    uts: str | None = None
    volume_driver: str | None = None
    volumes: tuple[VolumeMount, ...] = ()
    volumes_from: tuple[str, ...] = ()
    working_dir: str | None = None
    post_start: Raw | None = None
    pre_stop: Raw | None = None
    extensions: tuple[tuple[str, Raw], ...] = ()  # x-* keys (Compose does not print them per service)
    image_name: str = ""
    """The image the service runs: `image`, else `<project>-<service>` for a built one (not printed)."""

    def replicas(self) -> int:
        """How many containers `up` runs: `scale`, else `deploy.replicas`, else 1."""
        if self.scale is not None:
            return self.scale
        if self.deploy is not None and self.deploy.replicas is not None:
            return self.deploy.replicas
        return 1

    def dependency(self, name: str) -> Dependency | None:
        for dep in self.depends_on:
            if dep.service == name:
                return dep
        return None


# --- top-level resources ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class IpamPool:
    subnet: str | None = None
    gateway: str | None = None
    ip_range: str | None = None
    aux_addresses: Pairs = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Ipam:
    driver: str | None = None
    config: tuple[IpamPool, ...] = ()
    options: Pairs = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Network:
    """A top-level network; `key` is its name in the file, `name` the real one (`<project>_<key>`)."""

    key: str
    name: str
    driver: str | None = None
    driver_opts: Pairs = ()
    ipam: Ipam = Ipam()
    external: bool = False
    internal: bool = False
    attachable: bool = False
    labels: Pairs = ()
    enable_ipv4: bool | None = None
    enable_ipv6: bool | None = None
    extensions: tuple[tuple[str, Raw], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Volume:
    """A top-level named volume."""

    key: str
    name: str
    driver: str | None = None
    driver_opts: Pairs = ()
    external: bool = False
    labels: Pairs = ()
    extensions: tuple[tuple[str, Raw], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretObject:
    """A top-level secret or config: from `file` (absolute), `environment`, `content`, or external."""

    key: str
    name: str
    file: str | None = None
    environment: str | None = None
    content: str | None = None
    external: bool = False
    labels: Pairs = ()
    driver: str | None = None
    driver_opts: Pairs = ()
    template_driver: str | None = None
    extensions: tuple[tuple[str, Raw], ...] = ()


ConfigObject = SecretObject


@dataclass(frozen=True, slots=True, kw_only=True)
class Project:
    """A whole project. `services` holds the enabled ones, sorted by name; profiles move the others to
    `disabled_services`. Resources are sorted by key."""

    name: str
    working_dir: str
    services: tuple[Service, ...] = ()
    disabled_services: tuple[Service, ...] = ()
    networks: tuple[Network, ...] = ()
    volumes: tuple[Volume, ...] = ()
    secrets: tuple[SecretObject, ...] = ()
    configs: tuple[SecretObject, ...] = ()
    extensions: tuple[tuple[str, Raw], ...] = ()

    def service(self, name: str) -> Service:
        """The enabled service `name`; KeyError if there is none."""
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(name)

    def service_names(self) -> tuple[str, ...]:
        return tuple(service.name for service in self.services)

    def network(self, key: str) -> Network:
        for network in self.networks:
            if network.key == key:
                return network
        raise KeyError(key)

    def volume(self, key: str) -> Volume:
        for volume in self.volumes:
            if volume.key == key:
                return volume
        raise KeyError(key)
