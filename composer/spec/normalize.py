"""Short syntax -> long syntax, defaults, path resolution and the semantic checks the schema cannot make.

PURE: the input is one merged, interpolated, schema-validated tree (`MDict`); files are read only
through `read_text` (for `env_file:` and `label_file:`), warnings go to `warn`. The output is a
frozen `composer.spec.model.Project` whose values match what `docker compose config --format json`
prints (Docker Compose v2 semantics; compose-go `loader/normalize.go`, `types/`).

Every error a user can cause is a `SpecError` with the file location and the key path.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import posixpath
import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from composer.errors import ConfigFileNotFound, PathPart, SpecError
from composer.spec.model import (
    Build,
    ByteSize,
    Dependency,
    Deploy,
    Device,
    Duration,
    Env,
    FileRef,
    Healthcheck,
    Ipam,
    IpamPool,
    Logging,
    Network,
    Pairs,
    Port,
    Project,
    Raw,
    Resource,
    Resources,
    RestartPolicy,
    SecretObject,
    Service,
    ServiceNetwork,
    Ulimit,
    Volume,
    VolumeBind,
    VolumeImage,
    VolumeMount,
    VolumeOptions,
    VolumeTmpfs,
)
from composer.spec.source import MDict, locate, to_plain

__all__ = [
    "format_scalar",
    "normalize_project",
    "parse_bytes",
    "parse_duration",
    "parse_port",
    "parse_volume",
]

Path = tuple[PathPart, ...]
ReadText = Callable[[str], str]
Warn = Callable[[str], None]

# --- scalar grammars ---------------------------------------------------------------------------------

_DURATION_UNITS = {
    "ns": 1,
    "us": 10**3,
    "µs": 10**3,  # U+00B5
    "μs": 10**3,  # U+03BC
    "ms": 10**6,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}
_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)([^0-9.]+)")
_DURATION_HINT = "a number and a unit (ns, us, ms, s, m, h), e.g. 1m30s"


def parse_duration(text: str) -> int:
    """Go's `time.ParseDuration`: `1h2m3.5s`, `-1.5s`, `0`. Returns nanoseconds; ValueError if invalid."""
    rest = text
    sign = 1
    if rest[:1] in ("+", "-"):
        sign = -1 if rest[0] == "-" else 1
        rest = rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise ValueError(f"invalid duration {text!r}: expected {_DURATION_HINT}")
    total = 0
    pos = 0
    while pos < len(rest):
        match = _DURATION_PART.match(rest, pos)
        if match is None or match.group(1) in ("", "."):
            raise ValueError(f"invalid duration {text!r}: expected {_DURATION_HINT}")
        number, unit = match.groups()
        if unit not in _DURATION_UNITS:
            raise ValueError(f"invalid duration {text!r}: unknown unit {unit!r}, expected {_DURATION_HINT}")
        whole, _, frac = number.partition(".")
        size = _DURATION_UNITS[unit]
        value = int(whole or "0") * size
        if frac:
            value += int(frac) * size // 10 ** len(frac)
        total += value
        pos = match.end()
    if total > 2**63 - 1:
        raise ValueError(f"invalid duration {text!r}: too long")
    return sign * total


_BYTES = re.compile(r"(\d+(?:\.\d+)?) ?([kKmMgGtTpP])?[iI]?[bB]?")
_BYTE_UNITS = {"k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


def parse_bytes(value: str | int) -> int:
    """docker/go-units `RAMInBytes`: `64m`, `1.5g`, `1 KiB`, `100` (binary multiples). ValueError if not."""
    if isinstance(value, int):
        return value
    match = _BYTES.fullmatch(value.strip())
    if match is None:
        raise ValueError(
            f"invalid size {value!r}: expected a number with an optional unit (b, k, m, g, t, p)"
        )
    number = float(match.group(1))
    unit = match.group(2)
    factor = 1024 ** _BYTE_UNITS[unit.lower()] if unit else 1
    return int(number * factor)


def format_scalar(value: Any) -> str:
    """A YAML scalar as the string Compose makes of it (`true`, `1.5`, `10`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value == int(value) and abs(value) < 1e21:
            return str(int(value))
        return repr(value)
    return str(value)


# --- ports --------------------------------------------------------------------------------------------


def _port_range(text: str, what: str) -> tuple[int, int]:
    start_text, dash, end_text = text.partition("-")
    try:
        start = int(start_text, 10)
        end = int(end_text, 10) if dash else start
    except ValueError:
        raise ValueError(
            f"invalid {what} {text!r}: expected a port number or a range like 8000-8010"
        ) from None
    if not (0 <= start <= 65535 and 0 <= end <= 65535):
        raise ValueError(f"{what} must be 1-65535, not {text}")
    if end < start:
        raise ValueError(f"invalid {what} range {text!r}: the end is before the start")
    return start, end


def _valid_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def parse_port(spec: str) -> list[Port]:
    """Short port syntax `[IP:][HOST[-R]:]CONTAINER[-R][/PROTO]` (IPv6 IPs in brackets). ValueError."""
    raw, _, proto = spec.partition("/")
    if not raw:
        raise ValueError(f"invalid port {spec!r}: no container port")
    protocol = proto.lower() or "tcp"
    parts = raw.split(":")
    container = parts[-1]
    host_ip, host = "", ""
    if len(parts) == 2:
        host = parts[0]
    elif len(parts) >= 3:
        host_ip, host = ":".join(parts[:-2]), parts[-2]
    if host_ip.startswith("[") and host_ip.endswith("]"):
        host_ip = host_ip[1:-1]
    if host_ip and not _valid_ip(host_ip):
        raise ValueError(f"invalid IP address {host_ip!r} in port {spec!r}")
    if not container:
        raise ValueError(f"invalid port {spec!r}: no container port")
    start, end = _port_range(container, "container port")
    if start == 0:
        raise ValueError("container port must be 1-65535, not 0")
    host_start = host_end = 0
    if host:
        host_start, host_end = _port_range(host, "published port")
        if end - start != host_end - host_start and end != start:
            raise ValueError(f"invalid port {spec!r}: the container and host ranges differ in length")
    ports: list[tuple[str, Port]] = []
    for offset in range(end - start + 1):
        target = start + offset
        published: str | None = None
        if host:
            published = str(host_start + offset)
            if start == end and host_start != host_end:
                published = f"{host_start}-{host_end}"
        port = Port(host_ip=host_ip or None, target=target, published=published, protocol=protocol)
        ports.append((f"{target}/{protocol}", port))
    # Compose (docker/go-connections nat.ParsePortSpecs) orders the expansion by "port/proto" as text.
    ports.sort(key=lambda item: item[0])
    return [port for _, port in ports]


# --- volumes ------------------------------------------------------------------------------------------

_PROPAGATIONS = frozenset({"private", "rprivate", "shared", "rshared", "slave", "rslave"})


def _is_drive(buffer: str, char: str) -> bool:
    return char == ":" and len(buffer) == 1 and buffer.isalpha()


def parse_volume(spec: str) -> VolumeMount:
    """Short volume syntax `[SOURCE:]TARGET[:OPTIONS]` (compose-go `format/volume.go` rules, including
    the Windows drive-letter quirk: `c:/x` is one path). Paths are not resolved here. ValueError."""
    if not spec:
        raise ValueError("empty volume")
    if len(spec) <= 2:
        return VolumeMount(type="volume", target=spec, volume=VolumeOptions())
    source = target = ""
    options: str | None = None
    buffer = ""
    end = "\0"
    for char in spec + end:
        if _is_drive(buffer, char):
            buffer += char
        elif char in (":", end):
            if not buffer:
                raise ValueError(f"invalid volume {spec!r}: empty section between colons")
            if not source and char == end:
                target = buffer
            elif not source:
                source = buffer
            elif not target:
                target = buffer
            elif char == ":":
                raise ValueError(f"invalid volume {spec!r}: too many colons")
            else:
                options = buffer
            buffer = ""
        else:
            buffer += char
    read_only = False
    nocopy = False
    propagation = selinux = None
    for option in (options or "").split(","):
        if option == "ro":
            read_only = True
        elif option == "rw":
            read_only = False
        elif option == "nocopy":
            nocopy = True
        elif option in _PROPAGATIONS:
            propagation = option
        elif option in ("z", "Z"):
            selinux = option
    if _is_file_path(source):
        return VolumeMount(
            type="bind",
            source=source,
            target=target,
            read_only=read_only,
            bind=VolumeBind(propagation=propagation, selinux=selinux, create_host_path=True),
        )
    return VolumeMount(
        type="volume",
        source=source or None,
        target=target,
        read_only=read_only,
        # Compose keeps a z/Z option under `bind` even for a named volume; so do we, for equal output.
        bind=VolumeBind(selinux=selinux, create_host_path=False) if selinux else None,
        volume=VolumeOptions(nocopy=nocopy),
    )


def _is_file_path(source: str) -> bool:
    if not source:
        return False
    if source[0] in "./~":
        return True
    return len(source) >= 3 and source[0].isalpha() and source[1] == ":" and source[2] in "\\/"


# --- the normalizer -----------------------------------------------------------------------------------

_RESTART = re.compile(r"no|always|unless-stopped|on-failure(?::[0-9]+)?")
_YAML11_BOOLS = {
    "y": True,
    "Y": True,
    "yes": True,
    "Yes": True,
    "YES": True,
    "on": True,
    "On": True,
    "ON": True,
    "n": False,
    "N": False,
    "no": False,
    "No": False,
    "NO": False,
    "off": False,
    "Off": False,
    "OFF": False,
}
_GO_BOOLS = {
    "1": True,
    "t": True,
    "T": True,
    "true": True,
    "True": True,
    "TRUE": True,
    "0": False,
    "f": False,
    "F": False,
    "false": False,
    "False": False,
    "FALSE": False,
}
_NAMESPACE_KEYS = ("network_mode", "ipc", "pid", "uts", "cgroup")


def _is_remote_context(context: str) -> bool:
    return "://" in context or context.startswith(("git@", "github.com/"))


class _Normalizer:
    def __init__(
        self,
        tree: MDict,
        *,
        name: str,
        working_dir: str,
        environ: Mapping[str, str],
        read_text: ReadText,
        warn: Warn,
    ) -> None:
        self.tree = tree
        self.name = name
        self.working_dir = working_dir
        self.environ = environ
        self.read_text = read_text
        self.warn = warn

    # -- errors and scalar conversions

    def fail(self, message: str, path: Path) -> SpecError:
        return SpecError(message, location=locate(self.tree, path), path=path)

    def string(self, value: Any, path: Path) -> str:
        if isinstance(value, (dict, list)):
            raise self.fail("must be a string", path)
        if value is None:
            return ""
        return format_scalar(value)

    def opt_string(self, node: Mapping[str, Any], key: str, path: Path) -> str | None:
        value = node.get(key)
        if value is None:
            return None
        text = self.string(value, (*path, key))
        return text or None

    def boolean(self, value: Any, path: Path) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            if value in _GO_BOOLS:
                return _GO_BOOLS[value]
            if value in _YAML11_BOOLS:
                result = _YAML11_BOOLS[value]
                self.warn(
                    f'"{value}" for boolean is not supported by YAML 1.2, please use `{str(result).lower()}`'
                )
                return result
        raise self.fail(f"must be a boolean (true or false), not {value!r}", path)

    def opt_bool(self, node: Mapping[str, Any], key: str, path: Path) -> bool | None:
        value = node.get(key)
        return None if value is None else self.boolean(value, (*path, key))

    def integer(self, value: Any, path: Path) -> int:
        if isinstance(value, bool):
            raise self.fail(f"must be an integer, not {value!r}", path)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value == int(value):
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip(), 10)
            except ValueError:
                pass
        raise self.fail(f"must be an integer, not {value!r}", path)

    def opt_int(self, node: Mapping[str, Any], key: str, path: Path) -> int | None:
        value = node.get(key)
        return None if value is None else self.integer(value, (*path, key))

    def number(self, value: Any, path: Path) -> float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise self.fail(f"must be a number, not {value!r}", path)

    def opt_float(self, node: Mapping[str, Any], key: str, path: Path) -> float | None:
        value = node.get(key)
        return None if value is None else self.number(value, (*path, key))

    def duration(self, node: Mapping[str, Any], key: str, path: Path) -> Duration | None:
        value = node.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.fail(f"must be a duration as a string ({_DURATION_HINT}), not {value!r}", (*path, key))
        try:
            return Duration(nanoseconds=parse_duration(value), text=value)
        except ValueError as exc:
            raise self.fail(str(exc), (*path, key)) from None

    def size(self, node: Mapping[str, Any], key: str, path: Path) -> ByteSize | None:
        value = node.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, str, float)):
            raise self.fail(f"must be a size such as 64m, not {value!r}", (*path, key))
        try:
            amount = parse_bytes(int(value) if isinstance(value, float) else value)
        except ValueError as exc:
            raise self.fail(str(exc), (*path, key)) from None
        if amount == 0:
            return None  # Compose omits zero sizes
        return ByteSize(bytes=amount, text=format_scalar(value))

    def mode(self, node: Mapping[str, Any], key: str, path: Path) -> int | None:
        value = node.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            try:
                return int(value, 8)
            except ValueError:
                raise self.fail(
                    f"must be an octal file mode such as 0440, not {value!r}", (*path, key)
                ) from None
        return self.integer(value, (*path, key))

    def strings(self, value: Any, path: Path) -> tuple[str, ...]:
        """A string or a list of strings."""
        if value is None:
            return ()
        if isinstance(value, list):
            return tuple(self.string(item, (*path, i)) for i, item in enumerate(value))
        return (self.string(value, path),)

    def labels(self, value: Any, path: Path) -> Pairs:
        """A `KEY=VALUE` list or a mapping (None values -> "") as sorted pairs."""
        out: dict[str, str] = {}
        if isinstance(value, list):
            for i, item in enumerate(value):
                key, _, val = self.string(item, (*path, i)).partition("=")
                out[key] = val
        elif isinstance(value, dict):
            for key, val in value.items():
                out[str(key)] = "" if val is None else self.string(val, (*path, key))
        elif value is not None:
            raise self.fail("must be a list of KEY=VALUE or a mapping", path)
        return tuple(sorted(out.items()))

    def equals_map(self, value: Any, path: Path) -> dict[str, str | None]:
        """A `KEY=VALUE`/`KEY` list or a mapping; a bare key gives None."""
        out: dict[str, str | None] = {}
        if isinstance(value, list):
            for i, item in enumerate(value):
                key, eq, val = self.string(item, (*path, i)).partition("=")
                out[key] = val if eq else None
        elif isinstance(value, dict):
            for key, val in value.items():
                out[str(key)] = None if val is None else self.string(val, (*path, key))
        elif value is not None:
            raise self.fail("must be a list of KEY=VALUE or a mapping", path)
        return out

    def extensions(self, node: Mapping[str, Any]) -> tuple[tuple[str, Raw], ...]:
        return tuple(sorted((k, Raw.of(to_plain(v))) for k, v in node.items() if k.startswith("x-")))

    def develop(self, node: Mapping[str, Any]) -> Raw | None:
        """`develop` is kept as data, with watch paths resolved and `exec` filled in as Compose prints."""
        value = to_plain(node.get("develop"))
        if not isinstance(value, dict):
            return None if value is None else Raw.of(value)
        watches = value.get("watch")
        if isinstance(watches, list):
            value["watch"] = [
                {**w, "path": self.resolve_path(w["path"]), "exec": w.get("exec") or {"command": None}}
                if isinstance(w, dict) and isinstance(w.get("path"), str)
                else w
                for w in watches
            ]
        return Raw.of(value)

    def raw(self, node: Mapping[str, Any], key: str) -> Raw | None:
        value = node.get(key)
        return None if value is None else Raw.of(to_plain(value))

    def resolve_path(self, path: str) -> str:
        if path.startswith("~"):
            home = self.environ.get("HOME", "/")
            path = home + path[1:] if path == "~" or path.startswith("~/") else path
        return posixpath.normpath(posixpath.join(self.working_dir, path))

    # -- the project

    def project(self) -> Project:
        tree = self.tree
        services_node = tree.get("services") or {}
        if not isinstance(services_node, dict):
            raise self.fail("must be a mapping of service names to services", ("services",))
        networks = self.networks()
        volumes = self.volumes()
        secrets = self.file_objects("secrets")
        configs = self.file_objects("configs")
        known = {
            "networks": {n.key for n in networks},
            "volumes": {v.key for v in volumes},
            "secrets": {s.key for s in secrets},
            "configs": {c.key for c in configs},
            "services": set(services_node),
        }
        services = tuple(
            self.service(str(key), services_node[key], known) for key in sorted(services_node, key=str)
        )
        uses_default = any(n.name == "default" for s in services for n in s.networks)
        if uses_default and "default" not in known["networks"]:
            networks = tuple(
                sorted((*networks, Network(key="default", name=f"{self.name}_default")), key=_key)
            )
        return Project(
            name=self.name,
            working_dir=self.working_dir,
            services=services,
            networks=networks,
            volumes=volumes,
            secrets=secrets,
            configs=configs,
            extensions=self.extensions(tree),
        )

    def section(self, key: str) -> dict[str, Any]:
        node = self.tree.get(key) or {}
        if not isinstance(node, dict):
            raise self.fail("must be a mapping", (key,))
        return node

    def resource_name(self, node: Mapping[str, Any], key: str, path: Path) -> tuple[str, bool]:
        """(real name, external): `name:`, else the key when external, else `<project>_<key>`."""
        external_node = node.get("external")
        external = False
        legacy_name = None
        if isinstance(external_node, dict):  # legacy `external: {name: x}`
            external = True
            legacy_name = external_node.get("name")
        elif external_node is not None:
            external = self.boolean(external_node, (*path, "external"))
        name = self.opt_string(node, "name", path)
        if legacy_name is not None:
            if name is not None:
                raise self.fail("cannot use both external.name (deprecated) and name", (*path, "name"))
            name = self.string(legacy_name, (*path, "external", "name"))
        if name is None:
            name = key if external else f"{self.name}_{key}"
        return name, external

    def networks(self) -> tuple[Network, ...]:
        out = []
        for key, node in self.section("networks").items():
            path: Path = ("networks", key)
            node = node or {}
            name, external = self.resource_name(node, key, path)
            ipam_node = node.get("ipam") or {}
            pools = []
            for i, pool in enumerate(ipam_node.get("config") or []):
                ppath: Path = (*path, "ipam", "config", i)
                pools.append(
                    IpamPool(
                        subnet=self.opt_string(pool, "subnet", ppath),
                        gateway=self.opt_string(pool, "gateway", ppath),
                        ip_range=self.opt_string(pool, "ip_range", ppath),
                        aux_addresses=self.labels(pool.get("aux_addresses"), (*ppath, "aux_addresses")),
                    )
                )
            out.append(
                Network(
                    key=key,
                    name=name,
                    driver=self.opt_string(node, "driver", path),
                    driver_opts=self.labels(node.get("driver_opts"), (*path, "driver_opts")),
                    ipam=Ipam(
                        driver=self.opt_string(ipam_node, "driver", (*path, "ipam")),
                        config=tuple(pools),
                        options=self.labels(ipam_node.get("options"), (*path, "ipam", "options")),
                    ),
                    external=external,
                    internal=bool(self.opt_bool(node, "internal", path)),
                    attachable=bool(self.opt_bool(node, "attachable", path)),
                    labels=self.labels(node.get("labels"), (*path, "labels")),
                    enable_ipv4=self.opt_bool(node, "enable_ipv4", path),
                    enable_ipv6=self.opt_bool(node, "enable_ipv6", path),
                    extensions=self.extensions(node),
                )
            )
        return tuple(sorted(out, key=_key))

    def volumes(self) -> tuple[Volume, ...]:
        out = []
        for key, node in self.section("volumes").items():
            path: Path = ("volumes", key)
            node = node or {}
            name, external = self.resource_name(node, key, path)
            driver = self.opt_string(node, "driver", path)
            opts = dict(self.labels(node.get("driver_opts"), (*path, "driver_opts")))
            is_bind = "bind" in opts.get("o", "").split(",")
            if driver == "local" and opts.get("o") == "bind" and "device" in opts:
                opts["device"] = self.resolve_path(opts["device"])
            if is_bind and not opts.get("device", "").startswith("/"):
                raise self.fail(
                    f"a bind volume needs an absolute device path, not {opts.get('device', '')!r}",
                    (*path, "driver_opts", "device"),
                )
            out.append(
                Volume(
                    key=key,
                    name=name,
                    driver=driver,
                    driver_opts=tuple(sorted(opts.items())),
                    external=external,
                    labels=self.labels(node.get("labels"), (*path, "labels")),
                    extensions=self.extensions(node),
                )
            )
        return tuple(sorted(out, key=_key))

    def file_objects(self, section: str) -> tuple[SecretObject, ...]:
        out = []
        for key, node in self.section(section).items():
            path: Path = (section, key)
            node = node or {}
            name, external = self.resource_name(node, key, path)
            file = self.opt_string(node, "file", path)
            out.append(
                SecretObject(
                    key=key,
                    name=name,
                    file=None if file is None else self.resolve_path(file),
                    environment=self.opt_string(node, "environment", path),
                    content=self.opt_string(node, "content", path),
                    external=external,
                    labels=self.labels(node.get("labels"), (*path, "labels")),
                    driver=self.opt_string(node, "driver", path),
                    driver_opts=self.labels(node.get("driver_opts"), (*path, "driver_opts")),
                    template_driver=self.opt_string(node, "template_driver", path),
                    extensions=self.extensions(node),
                )
            )
        return tuple(sorted(out, key=_key))

    # -- one service

    def service(self, name: str, node: Any, known: Mapping[str, set[str]]) -> Service:
        path: Path = ("services", name)
        if node is None:
            node = {}
        if not isinstance(node, dict):
            raise self.fail("a service must be a mapping", path)
        s = node

        def p(key: str) -> Path:
            return (*path, key)

        network_mode = self.opt_string(s, "network_mode", path)
        networks = self.service_networks(s.get("networks"), p("networks"), known["networks"])
        if network_mode is not None and s.get("networks"):
            raise self.fail(
                f"service {name} declares mutually exclusive `network_mode` and `networks`", p("network_mode")
            )
        if not networks and network_mode is None:
            networks = (ServiceNetwork(name="default"),)

        scale = self.opt_int(s, "scale", path)
        deploy = self.deploy(s.get("deploy"), p("deploy"))
        if (
            scale is not None
            and deploy is not None
            and deploy.replicas is not None
            and scale != deploy.replicas
        ):
            raise self.fail(
                f"scale ({scale}) and deploy.replicas ({deploy.replicas}) disagree; set only one", p("scale")
            )
        if scale is not None and deploy is not None and deploy.replicas is None:
            deploy = dataclasses.replace(deploy, replicas=scale)  # Compose keeps the two in step
        container_name = self.opt_string(s, "container_name", path)
        replicas = scale if scale is not None else (deploy.replicas if deploy and deploy.replicas else 1)
        if container_name is not None and replicas > 1:
            raise self.fail(
                f"container_name {container_name!r} cannot be used with {replicas} replicas: "
                "container names must be unique",
                p("container_name"),
            )

        restart = self.opt_string(s, "restart", path)
        if restart is not None and not _RESTART.fullmatch(restart):
            raise self.fail(
                f"restart must be no, always, unless-stopped or on-failure[:max-retries], not {restart!r}",
                p("restart"),
            )

        pull_policy = self.opt_string(s, "pull_policy", path)
        if pull_policy == "if_not_present":
            pull_policy = "missing"

        labels = dict(self.labels(s.get("labels"), p("labels")))
        label_files = self.strings(s.get("label_file"), p("label_file"))
        if label_files:
            from_files: dict[str, str] = {}
            for i, file in enumerate(label_files):
                from_files.update(self.read_label_file(file, (*p("label_file"), i)))
            labels = {**from_files, **labels}

        service = Service(
            name=name,
            profiles=self.strings(s.get("profiles"), p("profiles")),
            annotations=self.labels(s.get("annotations"), p("annotations")),
            attach=self.opt_bool(s, "attach", path),
            build=self.build(s.get("build"), p("build")),
            develop=self.develop(s),
            blkio_config=self.raw(s, "blkio_config"),
            cap_add=self.strings(s.get("cap_add"), p("cap_add")),
            cap_drop=self.strings(s.get("cap_drop"), p("cap_drop")),
            cgroup_parent=self.opt_string(s, "cgroup_parent", path),
            cgroup=self.opt_string(s, "cgroup", path),
            cpu_count=self.opt_int(s, "cpu_count", path),
            cpu_percent=self.opt_float(s, "cpu_percent", path),
            cpu_period=self.opt_int(s, "cpu_period", path),
            cpu_quota=self.opt_int(s, "cpu_quota", path),
            cpu_rt_period=self.opt_int(s, "cpu_rt_period", path),
            cpu_rt_runtime=self.opt_int(s, "cpu_rt_runtime", path),
            cpus=self.opt_float(s, "cpus", path),
            cpuset=self.opt_string(s, "cpuset", path),
            cpu_shares=self.opt_int(s, "cpu_shares", path),
            command=self.command(s, "command", path),
            configs=self.file_refs(s.get("configs"), p("configs"), "config", known["configs"], name),
            container_name=container_name,
            credential_spec=self.raw(s, "credential_spec"),
            depends_on=self.depends_on(s, name, path, known["services"], network_mode),
            deploy=deploy,
            device_cgroup_rules=self.strings(s.get("device_cgroup_rules"), p("device_cgroup_rules")),
            devices=self.devices(s.get("devices"), p("devices")),
            dns=self.strings(s.get("dns"), p("dns")),
            dns_opt=self.strings(s.get("dns_opt"), p("dns_opt")),
            dns_search=self.strings(s.get("dns_search"), p("dns_search")),
            domainname=self.opt_string(s, "domainname", path),
            entrypoint=self.command(s, "entrypoint", path),
            environment=self.environment(s, path),
            expose=self.strings(s.get("expose"), p("expose")),
            external_links=self.strings(s.get("external_links"), p("external_links")),
            extra_hosts=self.extra_hosts(s.get("extra_hosts"), p("extra_hosts")),
            group_add=self.strings(s.get("group_add"), p("group_add")),
            gpus=self.gpus(s.get("gpus")),
            hostname=self.opt_string(s, "hostname", path),
            healthcheck=self.healthcheck(s.get("healthcheck"), p("healthcheck")),
            image=self.opt_string(s, "image", path),
            init=self.opt_bool(s, "init", path),
            ipc=self.opt_string(s, "ipc", path),
            isolation=self.opt_string(s, "isolation", path),
            labels=tuple(sorted(labels.items())),
            links=self.strings(s.get("links"), p("links")),
            logging=self.logging(s.get("logging"), p("logging")),
            mem_limit=self.size(s, "mem_limit", path),
            mem_reservation=self.size(s, "mem_reservation", path),
            memswap_limit=self.size(s, "memswap_limit", path),
            mem_swappiness=self.size(s, "mem_swappiness", path),
            mac_address=self.opt_string(s, "mac_address", path),
            network_mode=network_mode,
            networks=networks,
            oom_kill_disable=bool(self.opt_bool(s, "oom_kill_disable", path)),
            oom_score_adj=self.opt_int(s, "oom_score_adj", path),
            pid=self.opt_string(s, "pid", path),
            pids_limit=self.opt_int(s, "pids_limit", path),
            platform=self.opt_string(s, "platform", path),
            ports=self.ports(s.get("ports"), p("ports")),
            privileged=bool(self.opt_bool(s, "privileged", path)),
            pull_policy=pull_policy,
            read_only=bool(self.opt_bool(s, "read_only", path)),
            restart=restart,
            runtime=self.opt_string(s, "runtime", path),
            scale=scale,
            secrets=self.file_refs(s.get("secrets"), p("secrets"), "secret", known["secrets"], name),
            security_opt=self.strings(s.get("security_opt"), p("security_opt")),
            shm_size=self.size(s, "shm_size", path),
            stdin_open=bool(self.opt_bool(s, "stdin_open", path)),
            stop_grace_period=self.duration(s, "stop_grace_period", path),
            stop_signal=self.opt_string(s, "stop_signal", path),
            storage_opt=self.labels(s.get("storage_opt"), p("storage_opt")),
            sysctls=self.labels(s.get("sysctls"), p("sysctls")),
            tmpfs=self.strings(s.get("tmpfs"), p("tmpfs")),
            tty=bool(self.opt_bool(s, "tty", path)),
            ulimits=self.ulimits(s.get("ulimits"), p("ulimits")),
            user=self.opt_string(s, "user", path),
            userns_mode=self.opt_string(s, "userns_mode", path),
            uts=self.opt_string(s, "uts", path),
            volume_driver=self.opt_string(s, "volume_driver", path),
            volumes=self.service_volumes(s.get("volumes"), p("volumes"), known["volumes"], name),
            volumes_from=self.strings(s.get("volumes_from"), p("volumes_from")),
            working_dir=self.opt_string(s, "working_dir", path),
            post_start=self.raw(s, "post_start"),
            pre_stop=self.raw(s, "pre_stop"),
            extensions=self.extensions(s),
            image_name=self.opt_string(s, "image", path) or f"{self.name}-{name}",
        )
        return service

    def command(self, node: Mapping[str, Any], key: str, path: Path) -> tuple[str, ...] | None:
        if key not in node or node[key] is None:
            return None
        value = node[key]
        if isinstance(value, list):
            return tuple(self.string(item, (*path, key, i)) for i, item in enumerate(value))
        text = self.string(value, (*path, key))
        try:
            return tuple(shlex.split(text))
        except ValueError as exc:
            raise self.fail(f"cannot split {key} into words: {exc}", (*path, key)) from None

    def build(self, value: Any, path: Path) -> Build | None:
        if value is None:
            return None
        node: Mapping[str, Any] = {"context": value} if isinstance(value, str) else value
        context = self.string(node.get("context", "."), (*path, "context")) or "."
        if not _is_remote_context(context):
            context = self.resolve_path(context)
        dockerfile = self.opt_string(node, "dockerfile", path)
        inline = self.opt_string(node, "dockerfile_inline", path)
        if dockerfile is None and inline is None:
            dockerfile = "Dockerfile"
        args: dict[str, str | None] = {}
        for key, val in self.equals_map(node.get("args"), (*path, "args")).items():
            if val is None:
                val = self.environ.get(key)
                if val is None:
                    continue
            args[key] = val
        ssh = node.get("ssh")
        ssh_items: tuple[str, ...]
        if isinstance(ssh, dict):
            ssh_items = tuple(f"{k}={self.string(v, (*path, 'ssh', k))}" if v else k for k, v in ssh.items())
        else:
            ssh_items = self.strings(ssh, (*path, "ssh"))
        return Build(
            context=context,
            dockerfile=dockerfile,
            dockerfile_inline=inline,
            entitlements=self.strings(node.get("entitlements"), (*path, "entitlements")),
            args=tuple(sorted(args.items())),
            provenance=self.opt_string(node, "provenance", path),
            sbom=self.opt_string(node, "sbom", path),
            ssh=ssh_items,
            labels=self.labels(node.get("labels"), (*path, "labels")),
            cache_from=self.strings(node.get("cache_from"), (*path, "cache_from")),
            cache_to=self.strings(node.get("cache_to"), (*path, "cache_to")),
            no_cache=bool(self.opt_bool(node, "no_cache", path)),
            no_cache_filter=self.strings(node.get("no_cache_filter"), (*path, "no_cache_filter")),
            additional_contexts=tuple(
                (key, val if "://" in val or ":" in val.split("/", 1)[0] else self.resolve_path(val))
                for key, val in self.labels(node.get("additional_contexts"), (*path, "additional_contexts"))
            ),
            pull=bool(self.opt_bool(node, "pull", path)),
            extra_hosts=self.extra_hosts(node.get("extra_hosts"), (*path, "extra_hosts")),
            isolation=self.opt_string(node, "isolation", path),
            network=self.opt_string(node, "network", path),
            target=self.opt_string(node, "target", path),
            secrets=self.file_refs(node.get("secrets"), (*path, "secrets"), "secret", None, ""),
            shm_size=self.size(node, "shm_size", path),
            tags=self.strings(node.get("tags"), (*path, "tags")),
            ulimits=self.ulimits(node.get("ulimits"), (*path, "ulimits")),
            platforms=self.strings(node.get("platforms"), (*path, "platforms")),
            privileged=bool(self.opt_bool(node, "privileged", path)),
        )

    def environment(self, node: Mapping[str, Any], path: Path) -> Env:
        env: dict[str, str | None] = {}
        files = node.get("env_file")
        if files is not None:
            entries = files if isinstance(files, list) else [files]
            for i, entry in enumerate(entries):
                epath: Path = (*path, "env_file", i) if isinstance(files, list) else (*path, "env_file")
                env.update(self.read_env_file(entry, epath))
        for key, value in self.equals_map(node.get("environment"), (*path, "environment")).items():
            env[key] = self.environ.get(key) if value is None else value
        return tuple(sorted(env.items()))

    def read_env_file(self, entry: Any, path: Path) -> dict[str, str]:
        from composer.spec import envfile

        required = True
        fmt = None
        if isinstance(entry, dict):
            file = self.string(entry.get("path"), (*path, "path"))
            if entry.get("required") is not None:
                required = self.boolean(entry["required"], (*path, "required"))
            fmt = self.opt_string(entry, "format", path)
        else:
            file = self.string(entry, path)
        full = self.resolve_path(file)
        try:
            text = self.read_text(full)
        except (ConfigFileNotFound, FileNotFoundError):
            if required:
                raise self.fail(f"env file {full} not found", path) from None
            return {}
        except SpecError as exc:
            if exc.location is not None:
                raise
            raise self.fail(f"env file {full}: {exc.message.removeprefix(full + ': ')}", path) from None
        if fmt == "raw":
            return dict(envfile.parse_raw_envfile(text, full, self.environ.get))
        if fmt is not None:
            raise self.fail(
                f"unsupported env_file format {fmt!r} (use raw, or leave it out)", (*path, "format")
            )
        return dict(envfile.parse_dotenv(text, full, self.environ.get, warn=self.warn))

    def read_label_file(self, file: str, path: Path) -> dict[str, str]:
        from composer.spec import envfile

        full = self.resolve_path(file)
        try:
            text = self.read_text(full)
        except (ConfigFileNotFound, FileNotFoundError):
            raise self.fail(f"label file {full} not found", path) from None
        except SpecError as exc:
            if exc.location is not None:
                raise
            raise self.fail(f"label file {full}: {exc.message.removeprefix(full + ': ')}", path) from None
        return dict(envfile.parse_dotenv(text, full, lambda _key: None, warn=self.warn))

    def extra_hosts(self, value: Any, path: Path) -> tuple[str, ...]:
        out: list[str] = []
        if isinstance(value, dict):
            for host in sorted(value):
                ips = value[host]
                for ip in ips if isinstance(ips, list) else [ips]:
                    out.append(f"{host}={self.string(ip, (*path, host))}")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                text = self.string(item, (*path, i))
                host, eq, ip = text.partition("=")
                if not eq:
                    host, colon, ip = text.partition(":")
                    if not colon:
                        raise self.fail(f"extra host {text!r} must be HOST=IP or HOST:IP", (*path, i))
                out.append(f"{host}={ip}")
        elif value is not None:
            raise self.fail("must be a list or a mapping", path)
        # Compose keeps extra hosts as a map of host -> IPs: printed sorted by host.
        return tuple(sorted(out, key=lambda entry: entry.partition("=")[0]))

    def gpus(self, value: Any) -> Raw | None:
        if value is None:
            return None
        if value == "all":
            return Raw.of([{"count": -1}])
        return Raw.of(to_plain(value))

    def devices(self, value: Any, path: Path) -> tuple[Device, ...]:
        out = []
        for i, item in enumerate(value or []):
            if isinstance(item, dict):
                out.append(
                    Device(
                        source=self.string(item.get("source"), (*path, i, "source")),
                        target=self.opt_string(item, "target", (*path, i)),
                        permissions=self.opt_string(item, "permissions", (*path, i)),
                    )
                )
                continue
            parts = self.string(item, (*path, i)).split(":")
            if len(parts) > 3:
                raise self.fail(f"device {item!r} must be HOST[:CONTAINER[:PERMISSIONS]]", (*path, i))
            source = parts[0]
            target = parts[1] if len(parts) > 1 else source
            perms = parts[2] if len(parts) > 2 else "rwm"
            out.append(Device(source=source, target=target, permissions=perms))
        return tuple(out)

    def healthcheck(self, value: Any, path: Path) -> Healthcheck | None:
        if value is None:
            return None
        test_node = value.get("test")
        test: tuple[str, ...] | None
        if test_node is None:
            test = None
        elif isinstance(test_node, list):
            test = tuple(self.string(item, (*path, "test", i)) for i, item in enumerate(test_node))
        else:
            test = ("CMD-SHELL", self.string(test_node, (*path, "test")))
        retries = self.opt_int(value, "retries", path)
        if retries is not None and retries < 0:
            raise self.fail("retries must be 0 or more", (*path, "retries"))
        return Healthcheck(
            test=test,
            timeout=self.duration(value, "timeout", path),
            interval=self.duration(value, "interval", path),
            retries=retries,
            start_period=self.duration(value, "start_period", path),
            start_interval=self.duration(value, "start_interval", path),
            disable=bool(self.opt_bool(value, "disable", path)),
        )

    def logging(self, value: Any, path: Path) -> Logging | None:
        if value is None:
            return None
        return Logging(
            driver=self.opt_string(value, "driver", path),
            options=self.labels(value.get("options"), (*path, "options")),
        )

    def ulimits(self, value: Any, path: Path) -> tuple[Ulimit, ...]:
        out = []
        for key in sorted(value or {}):
            item = value[key]
            if isinstance(item, dict):
                soft = self.opt_int(item, "soft", (*path, key))
                hard = self.opt_int(item, "hard", (*path, key))
                if soft is not None and hard is not None and soft > hard:
                    raise self.fail(f"soft limit {soft} is above hard limit {hard}", (*path, key))
                out.append(Ulimit(name=key, soft=soft, hard=hard))
            else:
                out.append(Ulimit(name=key, single=self.integer(item, (*path, key))))
        return tuple(out)

    def resource(self, value: Any, path: Path) -> Resource | None:
        if value is None:
            return None
        return Resource(
            cpus=self.opt_float(value, "cpus", path),
            memory=self.size(value, "memory", path),
            pids=self.opt_int(value, "pids", path),
            devices=self.raw(value, "devices"),
            generic_resources=self.raw(value, "generic_resources"),
        )

    def deploy(self, value: Any, path: Path) -> Deploy | None:
        if value is None:
            return None
        resources = value.get("resources") or {}
        policy = value.get("restart_policy")
        restart_policy = None
        if policy is not None:
            ppath: Path = (*path, "restart_policy")
            restart_policy = RestartPolicy(
                condition=self.opt_string(policy, "condition", ppath),
                delay=self.duration(policy, "delay", ppath),
                max_attempts=self.opt_int(policy, "max_attempts", ppath),
                window=self.duration(policy, "window", ppath),
            )
        replicas = self.opt_int(value, "replicas", path)
        if replicas is not None and replicas < 0:
            raise self.fail("replicas must be 0 or more", (*path, "replicas"))
        return Deploy(
            mode=self.opt_string(value, "mode", path),
            replicas=replicas,
            labels=self.labels(value.get("labels"), (*path, "labels")),
            update_config=self.raw(value, "update_config"),
            rollback_config=self.raw(value, "rollback_config"),
            resources=Resources(
                limits=self.resource(resources.get("limits"), (*path, "resources", "limits")),
                reservations=self.resource(
                    resources.get("reservations"), (*path, "resources", "reservations")
                ),
            ),
            restart_policy=restart_policy,
            placement=self.raw(value, "placement"),
            endpoint_mode=self.opt_string(value, "endpoint_mode", path),
        )

    def ports(self, value: Any, path: Path) -> tuple[Port, ...]:
        out: list[Port] = []
        for i, item in enumerate(value or []):
            ipath: Path = (*path, i)
            if isinstance(item, dict):
                out.append(self.long_port(item, ipath))
                continue
            try:
                out.extend(parse_port(self.string(item, ipath)))
            except ValueError as exc:
                raise self.fail(str(exc), ipath) from None
        return tuple(out)

    def long_port(self, item: Mapping[str, Any], path: Path) -> Port:
        target = self.opt_int(item, "target", path)
        if target is None or not 1 <= target <= 65535:
            raise self.fail("container port (target) must be 1-65535", (*path, "target"))
        published = self.opt_string(item, "published", path)
        if published is not None:
            try:
                _port_range(published, "published port")
            except ValueError as exc:
                raise self.fail(str(exc), (*path, "published")) from None
        return Port(
            name=self.opt_string(item, "name", path),
            mode=self.opt_string(item, "mode", path) or "ingress",
            host_ip=self.opt_string(item, "host_ip", path),
            target=target,
            published=published,
            protocol=self.opt_string(item, "protocol", path) or "tcp",
            app_protocol=self.opt_string(item, "app_protocol", path),
        )

    def service_volumes(
        self, value: Any, path: Path, known: set[str], service: str
    ) -> tuple[VolumeMount, ...]:
        out = []
        for i, item in enumerate(value or []):
            ipath: Path = (*path, i)
            if isinstance(item, dict):
                mount = self.long_volume(item, ipath)
            else:
                try:
                    mount = parse_volume(self.string(item, ipath))
                except ValueError as exc:
                    raise self.fail(str(exc), ipath) from None
                if mount.type == "bind" and mount.source is not None:
                    mount = dataclasses.replace(mount, source=self.resolve_path(mount.source))
            if not mount.target:
                raise self.fail("a volume needs a target path in the container", ipath)
            if mount.type == "volume" and mount.source is not None and mount.source not in known:
                raise self.fail(f'service "{service}" refers to undefined volume {mount.source}', ipath)
            out.append(mount)
        return tuple(out)

    def long_volume(self, item: Mapping[str, Any], path: Path) -> VolumeMount:
        kind = self.opt_string(item, "type", path) or "volume"
        source = self.opt_string(item, "source", path)
        if kind == "bind":
            if source is None:
                raise self.fail("a bind mount needs a source path", path)
            source = self.resolve_path(source)
        bind = volume = tmpfs = image = None
        if isinstance(item.get("bind"), dict):
            b = item["bind"]
            bpath: Path = (*path, "bind")
            create = self.opt_bool(b, "create_host_path", bpath)
            bind = VolumeBind(
                propagation=self.opt_string(b, "propagation", bpath),
                create_host_path=True if create is None else create,
                selinux=self.opt_string(b, "selinux", bpath),
                recursive=self.opt_string(b, "recursive", bpath),
            )
        if isinstance(item.get("volume"), dict):
            v = item["volume"]
            vpath: Path = (*path, "volume")
            volume = VolumeOptions(
                labels=self.labels(v.get("labels"), (*vpath, "labels")),
                nocopy=bool(self.opt_bool(v, "nocopy", vpath)),
                subpath=self.opt_string(v, "subpath", vpath),
            )
        if isinstance(item.get("tmpfs"), dict):
            t = item["tmpfs"]
            tpath: Path = (*path, "tmpfs")
            tmpfs = VolumeTmpfs(size=self.size(t, "size", tpath), mode=self.mode(t, "mode", tpath))
        if isinstance(item.get("image"), dict):
            image = VolumeImage(subpath=self.opt_string(item["image"], "subpath", (*path, "image")))
        return VolumeMount(
            type=kind,
            source=source,
            target=self.string(item.get("target"), (*path, "target")),
            read_only=bool(self.opt_bool(item, "read_only", path)),
            consistency=self.opt_string(item, "consistency", path),
            bind=bind,
            volume=volume,
            tmpfs=tmpfs,
            image=image,
        )

    def service_networks(self, value: Any, path: Path, known: set[str]) -> tuple[ServiceNetwork, ...]:
        items: Iterable[tuple[str, Any, Path]]
        if isinstance(value, list):
            items = [(self.string(v, (*path, i)), None, (*path, i)) for i, v in enumerate(value)]
        elif isinstance(value, dict):
            items = [(str(k), v, (*path, k)) for k, v in value.items()]
        elif value is None:
            items = []
        else:
            raise self.fail("must be a list or a mapping of network names", path)
        out = []
        service = str(path[1])
        for name, options, npath in items:
            if name not in known and name != "default":
                raise self.fail(f'service "{service}" refers to undefined network {name}', npath)
            if options is None:
                out.append(ServiceNetwork(name=name))
                continue
            out.append(
                ServiceNetwork(
                    name=name,
                    declared=True,
                    aliases=self.strings(options.get("aliases"), (*npath, "aliases")),
                    driver_opts=self.labels(options.get("driver_opts"), (*npath, "driver_opts")),
                    gw_priority=self.opt_int(options, "gw_priority", npath) or 0,
                    interface_name=self.opt_string(options, "interface_name", npath),
                    ipv4_address=self.opt_string(options, "ipv4_address", npath),
                    ipv6_address=self.opt_string(options, "ipv6_address", npath),
                    link_local_ips=self.strings(options.get("link_local_ips"), (*npath, "link_local_ips")),
                    mac_address=self.opt_string(options, "mac_address", npath),
                    priority=self.opt_int(options, "priority", npath) or 0,
                )
            )
        return tuple(sorted(out, key=lambda n: n.name))

    def file_refs(
        self, value: Any, path: Path, kind: str, known: set[str] | None, service: str
    ) -> tuple[FileRef, ...]:
        out = []
        for i, item in enumerate(value or []):
            ipath: Path = (*path, i)
            if isinstance(item, dict):
                source = self.string(item.get("source"), (*ipath, "source"))
                target = self.opt_string(item, "target", ipath)
                ref = FileRef(
                    source=source,
                    target=target,
                    uid=self.opt_string(item, "uid", ipath),
                    gid=self.opt_string(item, "gid", ipath),
                    mode=self.mode(item, "mode", ipath),
                )
            else:
                ref = FileRef(source=self.string(item, ipath))
            if kind == "secret" and ref.target is None and known is not None:
                ref = FileRef(
                    source=ref.source,
                    target=f"/run/secrets/{ref.source}",
                    uid=ref.uid,
                    gid=ref.gid,
                    mode=ref.mode,
                )
            if known is not None and ref.source not in known:
                raise self.fail(f'service "{service}" refers to undefined {kind} {ref.source}', ipath)
            out.append(ref)
        return tuple(out)

    def depends_on(
        self,
        node: Mapping[str, Any],
        name: str,
        path: Path,
        services: set[str],
        network_mode: str | None,
    ) -> tuple[Dependency, ...]:
        deps: dict[str, Dependency] = {}
        value = node.get("depends_on")
        dpath: Path = (*path, "depends_on")
        if isinstance(value, list):
            for i, item in enumerate(value):
                dep = self.string(item, (*dpath, i))
                deps[dep] = Dependency(service=dep)
        elif isinstance(value, dict):
            for dep, options in value.items():
                options = options or {}
                opath: Path = (*dpath, dep)
                required = self.opt_bool(options, "required", opath)
                deps[str(dep)] = Dependency(
                    service=str(dep),
                    condition=self.opt_string(options, "condition", opath) or "service_started",
                    restart=bool(self.opt_bool(options, "restart", opath)),
                    required=True if required is None else required,
                )
        for dep_name, entry in deps.items():
            if dep_name not in services:
                if entry.required:
                    raise self.fail(
                        f'service "{name}" depends on undefined service "{dep_name}"', (*dpath, dep_name)
                    )
                self.warn(
                    f'service "{name}" depends on undefined service "{dep_name}" (not required, ignored)'
                )

        def implied(target: str, restart: bool, where: Path) -> None:
            if target not in services:
                raise self.fail(f'service "{name}" depends on undefined service "{target}"', where)
            if target not in deps:
                deps[target] = Dependency(service=target, restart=restart)

        for i, link in enumerate(self.strings(node.get("links"), (*path, "links"))):
            implied(link.split(":", 1)[0], True, (*path, "links", i))
        for key in _NAMESPACE_KEYS:
            ref = network_mode if key == "network_mode" else self.opt_string(node, key, path)
            if ref is not None and ref.startswith("service:"):
                implied(ref[len("service:") :], True, (*path, key))
        for i, source in enumerate(self.strings(node.get("volumes_from"), (*path, "volumes_from"))):
            if not source.startswith("container:"):
                implied(source.split(":", 1)[0], False, (*path, "volumes_from", i))
        return tuple(deps[k] for k in sorted(deps))


def _key(item: Network | Volume | SecretObject) -> str:
    return item.key


def normalize_project(
    tree: MDict,
    *,
    name: str,
    working_dir: str,
    environ: Mapping[str, str],
    read_text: ReadText,
    warn: Warn,
) -> Project:
    """The typed `Project` of a merged, interpolated, schema-validated tree (see the module doc)."""
    return _Normalizer(
        tree, name=name, working_dir=working_dir, environ=environ, read_text=read_text, warn=warn
    ).project()
