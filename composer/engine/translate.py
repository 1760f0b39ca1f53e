"""A compose `Service` + its image's config -> the runtime's `ContainerSpec`, by Docker's rules. PURE.

Everything that needs the disk or the kernel is prepared by the caller and passed in as plain values:
the image's layer folders, the container's /etc files, where each volume lives on the host, the files
that back secrets and configs, the network namespace. What the ContainerSpec has no room for comes
back beside it in `Translated`: labels, the stop signal and grace period, the cgroup `Resources`, the
volumes the executor must have ready (and copy the image's content into), and warnings about
attributes composer accepts but does not apply.

Docker's rules kept here (moby daemon/oci_linux.go, docker/compose pkg/compose/create.go):
- argv: a service `entrypoint` replaces the image's ENTRYPOINT and drops its CMD; `command` replaces
  CMD (`ImageConfig.argv`);
- env: the image's Env, then the service's `environment` (env_file already merged by the spec); a
  variable declared without a value (`environment: [FOO]`, unset when loading) removes it;
- working_dir, user: the service's, else the image's;
- mounts: binds (propagation, create_host_path), named volumes (their folder, `subpath`), anonymous
  volumes (the service's and the image's VOLUMEs no service mount covers), tmpfs (noexec, nosuid,
  nodev unless `exec`), `shm_size` as the size of /dev/shm, secrets at /run/secrets/<name> (or a
  relative `target` under it) and configs at /<name>, read-only single files; `volumes_from`;
- pid, ipc: `host`, `service:X` / `container:X` (joined: the supervisor finds X's process at each
  start), else the container's own (`shareable` too; ipc `none`: its own without /dev/shm);
  `shm_size` only sizes an own IPC namespace's /dev/shm; uts: `host` (the host's hostname, which
  `hostname`/`domainname` would change: refused with it), else the container's own;
- stop signal: the service's, else the image's STOPSIGNAL, else SIGTERM; grace: `stop_grace_period`,
  else 10 s;
- resources: `mem_limit`, `memswap_limit`, `mem_reservation`, `cpus`, `cpu_quota`, `cpu_period`,
  `cpu_shares`, `pids_limit`, `cpuset`, with `deploy.resources.limits` (memory, cpus, pids) and
  `reservations.memory` when the service-level value is unset;
- labels: the image's, the service's, then Compose's com.docker.compose.* (project, service,
  container-number, config-hash, oneoff, version, image, depends_on, project.working_dir,
  project.config_files).
"""

from __future__ import annotations

import re
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Literal

import composer
from composer.errors import ComposerError
from composer.image.config import ImageConfig
from composer.runtime.cgroups import CgroupError, Resources, resources_from
from composer.runtime.spec import (
    BindMount,
    ContainerSpec,
    Mount,
    Namespace,
    Network,
    Propagation,
    Rlimit,
    TmpfsMount,
)
from composer.spec.hashing import config_hash
from composer.spec.model import FileRef, Project, Service, VolumeBind, VolumeMount

__all__ = [
    "DEFAULT_STOP_GRACE",
    "FileTarget",
    "TranslateError",
    "Translated",
    "VolumeUse",
    "anonymous_volumes",
    "command",
    "compose_labels",
    "config_targets",
    "container_spec",
    "environment",
    "namespace",
    "parse_signal",
    "parse_tmpfs",
    "resources",
    "rlimits",
    "secret_targets",
    "stop_grace",
    "stop_signal",
]

DEFAULT_STOP_GRACE = 10.0  # seconds (Docker's and Compose's default)
SECRETS_DIR = "/run/secrets"
CONFIGS_DIR = "/"
_PROPAGATIONS: tuple[Propagation, ...] = ("rprivate", "private", "rshared", "shared", "rslave", "slave")
_SIZE = re.compile(r"^(\d+)([kmg]?)b?$", re.IGNORECASE)


class TranslateError(ComposerError):
    """A service attribute composer cannot honour, or a value it cannot use: names service and field."""

    def __init__(self, service: str, field: str, message: str) -> None:
        super().__init__(f"service {service}: {field}: {message}")
        self.service = service
        self.field = field


@dataclass(frozen=True, slots=True, kw_only=True)
class VolumeUse:
    """A volume the container mounts: `key` is the compose volume key (named) or the target (anonymous)."""

    kind: Literal["named", "anonymous"]
    key: str
    target: str
    source: Path
    nocopy: bool = False  # do not fill an empty volume from the image


@dataclass(frozen=True, slots=True, kw_only=True)
class FileTarget:
    """Where a secret or config goes in the container, with the owner and mode its file should have."""

    kind: Literal["secret", "config"]
    source: str  # the top-level secret/config key
    target: str  # absolute
    uid: str | None = None
    gid: str | None = None
    mode: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Translated:
    spec: ContainerSpec
    labels: tuple[tuple[str, str], ...]  # sorted by key
    stop_signal: int
    stop_grace: float  # seconds
    resources: Resources
    volumes: tuple[VolumeUse, ...] = ()
    stdin_open: bool = False
    warnings: tuple[str, ...] = ()


# --- process ---------------------------------------------------------------------------------------------


def command(service: Service, image: ImageConfig) -> tuple[str, ...]:
    argv = image.argv(service.entrypoint, service.command)
    if not argv:
        raise TranslateError(
            service.name,
            "command",
            "nothing to run: the image has no ENTRYPOINT or CMD and the service sets none",
        )
    return argv


def environment(service: Service, image: ImageConfig) -> tuple[str, ...]:
    """The image's Env (in its order), then the service's variables (sorted); a value of None unsets."""
    env: dict[str, str] = {}
    for item in image.env:
        key, _, text = item.partition("=")
        env[key] = text
    for key, value in service.environment:
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return tuple(f"{k}={v}" for k, v in env.items())


def parse_signal(value: str, *, service: str = "?", field: str = "stop_signal") -> int:
    """`SIGTERM`, `TERM`, `15`, `SIGRTMIN+3` -> the signal number."""
    text = value.strip().upper()
    if text.isdigit():
        number = int(text)
    else:
        name = text if text.startswith("SIG") else "SIG" + text
        match = re.fullmatch(r"SIGRTM(IN|AX)([+-]\d+)?", name)
        if match:
            base = signal.SIGRTMIN if match.group(1) == "IN" else signal.SIGRTMAX
            number = int(base) + int(match.group(2) or 0)
        else:
            try:
                number = int(signal.Signals[name])
            except KeyError:
                raise TranslateError(service, field, f"unknown signal {value!r}") from None
    if not 1 <= number <= int(signal.SIGRTMAX):
        raise TranslateError(service, field, f"signal {value!r} is out of range")
    return number


def stop_signal(service: Service, image: ImageConfig) -> int:
    if service.stop_signal:
        return parse_signal(service.stop_signal, service=service.name)
    if image.stop_signal:
        return parse_signal(image.stop_signal, service=service.name, field="image STOPSIGNAL")
    return int(signal.SIGTERM)


def stop_grace(service: Service) -> float:
    if service.stop_grace_period is None:
        return DEFAULT_STOP_GRACE
    return max(0.0, service.stop_grace_period.seconds)


def rlimits(service: Service) -> tuple[Rlimit, ...]:
    out = []
    for limit in service.ulimits:
        soft = limit.single if limit.single is not None else limit.soft
        hard = limit.single if limit.single is not None else limit.hard
        if soft is None or hard is None:
            raise TranslateError(
                service.name, f"ulimits.{limit.name}", "needs a single value or soft and hard"
            )
        if soft > hard and hard != -1:
            raise TranslateError(service.name, f"ulimits.{limit.name}", f"soft {soft} is above hard {hard}")
        out.append(Rlimit(name=limit.name, soft=soft, hard=hard))
    return tuple(out)


def resources(service: Service) -> Resources:
    """The cgroup limits: service-level values, else `deploy.resources` (limits; reservations.memory)."""
    limits = service.deploy.resources.limits if service.deploy else None
    reservations = service.deploy.resources.reservations if service.deploy else None

    def size(value: object) -> int | None:
        return getattr(value, "bytes", None)

    try:
        return resources_from(
            mem_limit=size(service.mem_limit) or (size(limits.memory) if limits else None),
            memswap_limit=size(service.memswap_limit),
            mem_reservation=size(service.mem_reservation)
            or (size(reservations.memory) if reservations else None),
            cpus=service.cpus or (limits.cpus if limits else None),
            cpu_quota=service.cpu_quota,
            cpu_period=service.cpu_period,
            cpu_shares=service.cpu_shares,
            pids_limit=service.pids_limit or (limits.pids if limits else None),
            cpuset=service.cpuset,
        )
    except CgroupError as exc:
        raise TranslateError(service.name, "resources", exc.message) from None


# --- mounts ----------------------------------------------------------------------------------------------


def _size(text: str, service: str, field: str) -> int:
    match = _SIZE.match(text.strip())
    if not match:
        raise TranslateError(service, field, f"size {text!r}: expected a number of bytes with k, m or g")
    return int(match.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match.group(2).lower()]


def parse_tmpfs(entry: str, service: str = "?") -> TmpfsMount:
    """`/run:size=64m,mode=1770,exec` (the service's `tmpfs:` list) -> a TmpfsMount, Docker's defaults:
    noexec, nosuid, nodev, mode 1777. Options composer cannot pass (uid=, gid=, ...) are errors."""
    target, _, options = entry.partition(":")
    field = f"tmpfs {entry!r}"
    if not target.startswith("/"):
        raise TranslateError(service, field, "the target must be an absolute path")
    size: int | None = None
    mode = 0o1777
    read_only = False
    noexec = True
    for option in filter(None, (o.strip() for o in options.split(","))):
        key, _, value = option.partition("=")
        if key == "size":
            size = _size(value, service, field)
        elif key == "mode":
            try:
                mode = int(value, 8)
            except ValueError:
                raise TranslateError(service, field, f"mode {value!r} is not octal") from None
        elif key in ("ro", "rw"):
            read_only = key == "ro"
        elif key in ("exec", "noexec"):
            noexec = key == "noexec"
        elif key in ("nosuid", "nodev", "rprivate", "private"):
            continue  # what composer does anyway
        else:
            raise TranslateError(service, field, f"option {option!r} is not supported")
    return TmpfsMount(target=target, size=size, mode=mode, read_only=read_only, noexec=noexec)


def _covered(target: str, taken: set[str]) -> bool:
    return str(PurePosixPath(target)) in taken


def anonymous_volumes(service: Service, image: ImageConfig) -> tuple[str, ...]:
    """Targets that get an anonymous volume: the service's source-less volumes and the image's VOLUMEs
    that no service mount (volume, bind, tmpfs) covers, sorted."""
    taken = {str(PurePosixPath(m.target)) for m in service.volumes}
    taken |= {str(PurePosixPath(entry.partition(":")[0])) for entry in service.tmpfs}
    own = {m.target for m in service.volumes if m.type == "volume" and not m.source}
    from_image = {t for t in image.volumes if not _covered(t, taken)}
    return tuple(sorted(own | from_image))


def _targets(refs: Sequence[FileRef], base: str, kind: Literal["secret", "config"]) -> tuple[FileTarget, ...]:
    out = []
    for ref in refs:
        target = ref.target or ref.source
        if not target.startswith("/"):
            target = str(PurePosixPath(base) / target)
        out.append(
            FileTarget(kind=kind, source=ref.source, target=target, uid=ref.uid, gid=ref.gid, mode=ref.mode)
        )
    return tuple(out)


def secret_targets(service: Service) -> tuple[FileTarget, ...]:
    """Secrets at /run/secrets/<name>, or at `target` (a relative one under /run/secrets)."""
    return _targets(service.secrets, SECRETS_DIR, "secret")


def config_targets(service: Service) -> tuple[FileTarget, ...]:
    """Configs at /<name>, or at `target` (a relative one under /)."""
    return _targets(service.configs, CONFIGS_DIR, "config")


def _propagation(value: str | None, service: str, target: str) -> Propagation:
    if value is None:
        return "rprivate"
    for known in _PROPAGATIONS:
        if value == known:
            return known
    raise TranslateError(service, f"volumes {target}", f"unknown bind propagation {value!r}")


def _service_mount(
    service: Service, mount: VolumeMount, volume_sources: Mapping[str, Path]
) -> tuple[Mount, VolumeUse | None]:
    field = f"volumes {mount.target}"
    if not mount.target.startswith("/"):
        raise TranslateError(service.name, field, "the target must be an absolute path")
    if mount.type == "bind":
        if not mount.source or not mount.source.startswith("/"):
            raise TranslateError(service.name, field, f"bind source {mount.source!r} is not an absolute path")
        bind = mount.bind
        recursive = bind is None or bind.recursive in (None, "enabled", "writable", "readonly")
        bind_mount = BindMount(
            source=Path(mount.source),
            target=mount.target,
            read_only=mount.read_only,
            propagation=_propagation(bind.propagation if bind else None, service.name, mount.target),
            recursive=recursive,
            create_source=(bind or VolumeBind()).create_host_path,  # the model's default when unset
        )
        return bind_mount, None
    if mount.type == "volume":
        key = mount.source or mount.target
        kind: Literal["named", "anonymous"] = "named" if mount.source else "anonymous"
        if key not in volume_sources:
            what = f"volume {mount.source!r}" if mount.source else "anonymous volume"
            raise TranslateError(service.name, field, f"no host folder was given for the {what}")
        folder = volume_sources[key]
        options = mount.volume
        source = folder / options.subpath if options and options.subpath else folder
        use = VolumeUse(
            kind=kind, key=key, target=mount.target, source=folder, nocopy=bool(options and options.nocopy)
        )
        return BindMount(source=source, target=mount.target, read_only=mount.read_only), use
    if mount.type == "tmpfs":
        tmpfs = mount.tmpfs
        return TmpfsMount(
            target=mount.target,
            size=tmpfs.size.bytes if tmpfs and tmpfs.size else None,
            mode=tmpfs.mode if tmpfs and tmpfs.mode is not None else 0o1777,
            read_only=mount.read_only,
            noexec=True,
        ), None
    raise TranslateError(service.name, field, f"mount type {mount.type!r} is not supported")


def _volumes_from(service: Service, parents: Mapping[str, Sequence[Mount]]) -> list[Mount]:
    out: list[Mount] = []
    for entry in service.volumes_from:
        ref, mode = entry, ""
        head, _, tail = entry.rpartition(":")
        if tail in ("ro", "rw") and head:
            ref, mode = head, tail
        if ref not in parents:
            raise TranslateError(service.name, "volumes_from", f"the mounts of {ref!r} were not given")
        for mount in parents[ref]:
            if isinstance(mount, BindMount):
                out.append(replace(mount, read_only=mount.read_only if not mode else mode == "ro"))
    return out


# --- labels ----------------------------------------------------------------------------------------------


def compose_labels(
    project: Project,
    service: Service,
    *,
    number: int,
    image_id: str,
    one_off: bool = False,
    config_files: Sequence[str] = (),
) -> dict[str, str]:
    """The com.docker.compose.* labels Compose puts on a service's container (DC pkg/api/labels.go)."""
    labels = {
        "com.docker.compose.project": project.name,
        "com.docker.compose.service": service.name,
        "com.docker.compose.container-number": str(number),
        "com.docker.compose.config-hash": config_hash(service),
        "com.docker.compose.oneoff": "True" if one_off else "False",
        "com.docker.compose.version": composer.__version__,
        "com.docker.compose.image": image_id,
        "com.docker.compose.project.working_dir": project.working_dir,
        "com.docker.compose.depends_on": ",".join(
            f"{d.service}:{d.condition}:{str(d.restart).lower()}" for d in service.depends_on
        ),
    }
    if config_files:
        labels["com.docker.compose.project.config_files"] = ",".join(config_files)
    return labels


# --- attributes composer refuses or ignores ----------------------------------------------------------------


def _refuse(service: Service) -> list[str]:
    """Raise for what would change the container's meaning if dropped; return warnings for the rest."""
    name = service.name

    def no(field: str, message: str) -> TranslateError:
        return TranslateError(name, field, message)

    if service.devices:
        raise no("devices", "passing host devices into a container is not supported")
    if service.device_cgroup_rules:
        raise no("device_cgroup_rules", "not supported")
    if service.gpus is not None:
        raise no("gpus", "not supported")
    for field, value, modes in (("pid", service.pid, ("private", "host")),
                                ("ipc", service.ipc, ("private", "shareable", "host", "none"))):  # fmt: skip
        if value is None or value in ("", *modes):
            continue
        kind, colon, target = value.partition(":")
        if not colon or kind not in ("service", "container") or not target:
            expected = ", ".join(modes)
            raise no(field, f"{value!r}: expected {expected}, service:NAME or container:NAME")
    if service.uts not in (None, "", "private", "host"):
        raise no("uts", f"{service.uts!r}: expected host (or nothing: the container's own UTS namespace)")
    if service.uts == "host":
        for field, value in (("hostname", service.hostname), ("domainname", service.domainname)):
            if value:
                raise no(field, "conflicts with uts: host (the container has the host's names)")
    if service.userns_mode not in (None, "", "host"):
        raise no("userns_mode", f"{service.userns_mode!r}: user namespaces are not supported")
    if service.cgroup not in (None, "", "private"):
        raise no("cgroup", f"{service.cgroup!r}: containers always get their own cgroup namespace")
    if service.runtime not in (None, "", "runc", "crun"):
        raise no("runtime", f"{service.runtime!r}: composer is the only runtime")
    if service.cpu_rt_runtime or service.cpu_rt_period:
        raise no("cpu_rt_runtime", "real-time CPU scheduling is not supported")
    warnings: list[str] = []
    for option in service.security_opt:
        key, _, value = option.replace("=", ":", 1).partition(":")
        if key == "no-new-privileges" or (key, value) in (
            ("seccomp", "unconfined"), ("apparmor", "unconfined"), ("label", "disable")
        ):  # fmt: skip
            continue
        if key in ("apparmor", "label"):
            warnings.append(f"service {name}: security_opt {option!r} is not applied (no LSM support)")
            continue
        raise no("security_opt", f"{option!r} is not supported")
    ignored: tuple[tuple[str, object], ...] = (
        ("blkio_config", service.blkio_config),
        ("cpu_count", service.cpu_count),
        ("cpu_percent", service.cpu_percent),
        ("cgroup_parent", service.cgroup_parent),
        ("mem_swappiness", service.mem_swappiness),
        ("oom_score_adj", service.oom_score_adj),
        ("oom_kill_disable", service.oom_kill_disable or None),
        ("storage_opt", service.storage_opt or None),
        ("credential_spec", service.credential_spec),
        ("isolation", None if service.isolation in (None, "default") else service.isolation),
    )
    for field, setting in ignored:
        if setting is not None:
            warnings.append(f"service {name}: {field} is accepted but not applied")
    return warnings


def namespace(value: str | None) -> Namespace:
    """`pid:` / `ipc:` / `uts:` as the runtime's Namespace: `host`, `none` (ipc), a `join`
    (`service:X` / `container:X`, whose process the supervisor finds at each start), else the
    container's own."""
    if value == "host":
        return Namespace(mode="host")
    if value == "none":
        return Namespace(mode="none")
    if value is not None and value.startswith(("service:", "container:")):
        return Namespace(mode="join")
    return Namespace()


def _no_new_privs(service: Service) -> bool:
    for option in service.security_opt:
        key, _, value = option.replace("=", ":", 1).partition(":")
        if key == "no-new-privileges":
            return value in ("", "true")
    return False


# --- the whole spec --------------------------------------------------------------------------------------


def container_spec(
    project: Project,
    service: Service,
    *,
    container_id: str,
    number: int,
    image: ImageConfig,
    image_id: str,
    lower_dirs: Sequence[Path],
    network: Network | None = None,
    etc_hostname: Path | None = None,
    etc_hosts: Path | None = None,
    etc_resolv_conf: Path | None = None,
    volume_sources: Mapping[str, Path] | None = None,
    secret_files: Mapping[str, Path] | None = None,
    config_files: Mapping[str, Path] | None = None,
    volumes_from: Mapping[str, Sequence[Mount]] | None = None,
    compose_files: Sequence[str] = (),
    one_off: bool = False,
) -> Translated:
    """One container of `service` as the runtime's ContainerSpec, with what goes beside it.

    `volume_sources`: compose volume key -> its host folder (`<root>/volumes/<name>/_data` or a bind
    device), and for anonymous volumes, container target -> host folder (see `anonymous_volumes`).
    `secret_files` / `config_files`: secret/config key -> the host file to bind read-only (the caller
    writes `environment:`/`content:` ones, with the uid, gid and mode of `secret_targets`).
    `volumes_from`: `service` or `container:name` -> that container's mounts.
    """
    warnings = _refuse(service)
    volume_sources = volume_sources or {}
    working_dir = service.working_dir or image.working_dir or "/"
    if not working_dir.startswith("/"):
        raise TranslateError(service.name, "working_dir", f"{working_dir!r} is not an absolute path")

    mounts: list[Mount] = []
    uses: list[VolumeUse] = []
    for mount in service.volumes:
        made, use = _service_mount(service, mount, volume_sources)
        mounts.append(made)
        if use is not None:
            uses.append(use)
    mounts += [parse_tmpfs(entry, service.name) for entry in service.tmpfs]
    if service.shm_size is not None and namespace(service.ipc).mode == "new":  # else the shared one's
        mounts.append(TmpfsMount(target="/dev/shm", size=service.shm_size.bytes, mode=0o1777, noexec=True))
    own = {m.target for m in service.volumes}
    for target in anonymous_volumes(service, image):
        if target in own:
            continue
        if target not in volume_sources:
            raise TranslateError(service.name, f"image VOLUME {target}", "no host folder was given for it")
        mounts.append(BindMount(source=volume_sources[target], target=target))
        uses.append(VolumeUse(kind="anonymous", key=target, target=target, source=volume_sources[target]))
    for targets, files, what in (
        (secret_targets(service), secret_files or {}, "secrets"),
        (config_targets(service), config_files or {}, "configs"),
    ):
        for file in targets:
            if file.source not in files:
                raise TranslateError(service.name, f"{what}.{file.source}", "no file was given for it")
            mounts.append(
                BindMount(source=files[file.source], target=file.target, read_only=True, recursive=False)
            )
    mounts += _volumes_from(service, volumes_from or {})
    seen: set[str] = set()
    for made in mounts:
        target = str(PurePosixPath(made.target))
        if target in seen:
            raise TranslateError(service.name, "volumes", f"two mounts have the target {target}")
        seen.add(target)

    labels = dict(image.labels)
    labels.update(service.labels)
    labels.update(
        compose_labels(
            project, service, number=number, image_id=image_id, one_off=one_off, config_files=compose_files
        )
    )
    spec = ContainerSpec(
        id=container_id,
        lower_dirs=tuple(lower_dirs),
        read_only=service.read_only,
        argv=command(service, image),
        env=environment(service, image),
        cwd=working_dir,
        user=service.user or image.user,
        group_add=service.group_add,
        hostname=service.hostname or "",
        domainname=service.domainname or "",
        mounts=tuple(mounts),
        etc_hostname=etc_hostname,
        etc_hosts=etc_hosts,
        etc_resolv_conf=etc_resolv_conf,
        cap_add=service.cap_add,
        cap_drop=service.cap_drop,
        privileged=service.privileged,
        no_new_privs=_no_new_privs(service),
        rlimits=rlimits(service),
        sysctls=service.sysctls,
        network=network or Network(),
        pid_ns=namespace(service.pid),
        ipc_ns=namespace(service.ipc),
        uts_ns=namespace(service.uts),
        init=bool(service.init),
        tty=service.tty,
    )
    return Translated(
        spec=spec,
        labels=tuple(sorted(labels.items())),
        stop_signal=stop_signal(service, image),
        stop_grace=stop_grace(service),
        resources=resources(service),
        volumes=tuple(uses),
        stdin_open=service.stdin_open,
        warnings=tuple(warnings),
    )
