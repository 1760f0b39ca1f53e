"""Decide, then do (DESIGN.md rule 2): observed state + project + options -> a `Plan` of single operations.

PURE: no I/O, no clock, sorted iteration, so the same inputs always give the same plan and the same
`Plan.text()` (what `composer up --dry-run` prints; tests compare it with golden text).

    plan = plan_up(project, observed, images={"web": "sha256:..."}, options=UpOptions(scale={"web": 3}))
    plan = plan_down(project, observed, remove_volumes=True, remove_orphans=False, rmi=None)

The executor's contract: run the levels in increasing order; the operations of one level may run in
parallel, except that the operations on one container run in plan order (create, then start). Before
the container operations of a service, the executor waits for that service's `depends_on` conditions
(which all name services of earlier levels). `up` puts the project's networks, volumes, images and
orphan removals in level 0 and the services' start levels (`composer.spec.graph.start_levels`) in 1,
2, ...; `down` stops and removes the dependents first and the networks, volumes and images last.

Rules, as Compose v2's (DC pkg/compose/reconcile.go, convergence.go; research §2.14):
- container names `<project>-<service>-<n>`, or `container_name` (which forbids more than one replica);
  new numbers are max(existing) + 1; a scale-down removes the diverged containers first, then the
  highest numbers;
- a container is recreated when `--force-recreate` targets its service (`--always-recreate-deps` for
  the dependencies pulled in by a selection), when the service it shares a namespace or volumes with
  (`network_mode`/`ipc`/`pid: service:x`, `volumes_from`) is recreated, when its config hash differs,
  or when the image id it runs differs; `--no-recreate` keeps everything (the cause says what diverged);
- a kept container whose dependency was recreated restarts when that `depends_on` entry says
  `restart: true`; a kept container that is not running is started;
- orphans (containers of services that are not in the file, and exited one-off containers) are
  reported, and removed with `--remove-orphans`.

Where composer differs on purpose: `down` also removes the containers of services that profiles
disable now (Compose leaves them, and then fails to remove the network they are attached to).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal, TypeVar

from composer.engine.state import ObservedContainer, ObservedProject
from composer.errors import ComposerError
from composer.spec.graph import start_levels
from composer.spec.hashing import config_hash
from composer.spec.model import Project, Service

__all__ = [
    "BuildImage",
    "CreateContainer",
    "CreateNetwork",
    "CreateVolume",
    "KeepContainer",
    "Operation",
    "Plan",
    "PlanError",
    "PullImage",
    "RecreateContainer",
    "RemoveContainer",
    "RemoveImage",
    "RemoveNetwork",
    "RemoveVolume",
    "RestartContainer",
    "StartContainer",
    "UpOptions",
    "container_name",
    "namespace_parents",
    "plan_down",
    "plan_up",
    "short_id",
]


class PlanError(ComposerError):
    """The options ask for something the project cannot do (unknown service, scale with container_name)."""


# --- operations ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Operation:
    """One step of a plan. `level`: see the module's docstring; `cause`: why, for people."""

    verb: ClassVar[str] = ""
    level: int
    cause: str

    def subject(self) -> str:
        raise NotImplementedError

    def text(self) -> str:
        return f"[{self.level}] {self.verb} {self.subject()}: {self.cause}"


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateNetwork(Operation):
    verb: ClassVar[str] = "create"
    key: str
    name: str

    def subject(self) -> str:
        return f"network {self.name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateVolume(Operation):
    verb: ClassVar[str] = "create"
    key: str
    name: str

    def subject(self) -> str:
        return f"volume {self.name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildImage(Operation):
    verb: ClassVar[str] = "build"
    service: str
    image: str

    def subject(self) -> str:
        return f"image {self.image} (service {self.service})"


@dataclass(frozen=True, slots=True, kw_only=True)
class PullImage(Operation):
    verb: ClassVar[str] = "pull"
    service: str
    image: str

    def subject(self) -> str:
        return f"image {self.image} (service {self.service})"


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerOperation(Operation):
    service: str
    name: str
    number: int

    def subject(self) -> str:
        return f"container {self.name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateContainer(ContainerOperation):
    verb: ClassVar[str] = "create"


@dataclass(frozen=True, slots=True, kw_only=True)
class RecreateContainer(ContainerOperation):
    """Create the new container under a temporary name, stop and remove the old one (`replaces`, an
    id), rename the new one; anonymous volumes carry over (Compose's default, no `-V`)."""

    verb: ClassVar[str] = "recreate"
    replaces: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StartContainer(ContainerOperation):
    verb: ClassVar[str] = "start"


@dataclass(frozen=True, slots=True, kw_only=True)
class RestartContainer(ContainerOperation):
    verb: ClassVar[str] = "restart"


@dataclass(frozen=True, slots=True, kw_only=True)
class KeepContainer(ContainerOperation):
    """Nothing to do; in the plan so that `--dry-run` shows every container and why it stays."""

    verb: ClassVar[str] = "keep"


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoveContainer(ContainerOperation):
    """Stop (stop_signal, grace, SIGKILL) if needed, then remove; `remove_volumes`: its anonymous
    volumes too (`down -v`)."""

    verb: ClassVar[str] = "remove"
    container_id: str
    remove_volumes: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoveNetwork(Operation):
    verb: ClassVar[str] = "remove"
    key: str
    name: str

    def subject(self) -> str:
        return f"network {self.name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoveVolume(Operation):
    verb: ClassVar[str] = "remove"
    key: str
    name: str

    def subject(self) -> str:
        return f"volume {self.name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoveImage(Operation):
    verb: ClassVar[str] = "remove"
    image: str

    def subject(self) -> str:
        return f"image {self.image}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    operations: tuple[Operation, ...] = ()
    warnings: tuple[str, ...] = ()

    def levels(self) -> tuple[tuple[Operation, ...], ...]:
        """The operations grouped by level, in level order (empty levels left out)."""
        out: dict[int, list[Operation]] = {}
        for op in self.operations:
            out.setdefault(op.level, []).append(op)
        return tuple(tuple(out[level]) for level in sorted(out))

    def actions(self) -> tuple[Operation, ...]:
        """The operations that do something (everything but KeepContainer)."""
        return tuple(op for op in self.operations if not isinstance(op, KeepContainer))

    def text(self) -> str:
        """One line per warning (`warning: ...`) and per operation (`[level] verb subject: cause`)."""
        lines = [f"warning: {w}" for w in self.warnings]
        lines += [op.text() for op in self.operations]
        return "\n".join(lines) + "\n" if lines else "nothing to do\n"


# --- options -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class UpOptions:
    services: tuple[str, ...] = ()  # the selection; () = every enabled service
    force_recreate: bool = False
    no_recreate: bool = False
    always_recreate_deps: bool = False
    no_deps: bool = False
    remove_orphans: bool = False
    scale: Mapping[str, int] = field(default_factory=dict)
    build: bool = False  # --build: build every selected service that has `build:`
    no_build: bool = False
    start: bool = True  # False for `composer create`: create and recreate, start nothing


Rmi = Literal["all", "local"]
_C = TypeVar("_C", CreateContainer, StartContainer, RestartContainer, KeepContainer)


# --- naming --------------------------------------------------------------------------------------------


def container_name(project: str, service: Service, number: int) -> str:
    """`container_name`, else `<project>-<service>-<number>` (Compose v2's separator)."""
    return service.container_name or f"{project}-{service.name}-{number}"


def short_id(value: str, length: int = 12) -> str:
    """`sha256:0123...` -> `0123456789ab`: hashes and image ids as people compare them."""
    return value.partition(":")[2][:length] if ":" in value else value[:length]


def namespace_parents(service: Service) -> tuple[tuple[str, str], ...]:
    """The services this one shares a namespace or volumes with: (attribute, service), sorted.

    `network_mode`, `ipc`, `pid` as `service:x`, and `volumes_from` entries that are not
    `container:...`. A recreated parent forces the child's recreation (its reference would go stale).
    """
    out: set[tuple[str, str]] = set()
    for attr, value in (("network_mode", service.network_mode), ("ipc", service.ipc), ("pid", service.pid)):
        if value and value.startswith("service:"):
            out.add((attr, value.removeprefix("service:")))
    for entry in service.volumes_from:
        if not entry.startswith("container:"):
            out.add(("volumes_from", entry.split(":", 1)[0]))
    return tuple(sorted(out))


# --- up ------------------------------------------------------------------------------------------------


def _scope(project: Project, options: UpOptions) -> tuple[str, ...]:
    """The services `up` acts on: the selection with its dependencies (unless --no-deps), sorted."""
    enabled = {s.name: s for s in project.services}
    for name in options.services:
        if name not in enabled:
            raise PlanError(f"no such service: {name}")
    for name in sorted(options.scale):
        if name not in enabled:
            raise PlanError(f"--scale {name}={options.scale[name]}: no such service: {name}")
        if options.scale[name] < 0:
            raise PlanError(f"--scale {name}={options.scale[name]}: the number must not be negative")
    if not options.services:
        return tuple(sorted(enabled))
    chosen: set[str] = set()
    todo = list(options.services)
    while todo:
        name = todo.pop()
        if name in chosen:
            continue
        chosen.add(name)
        if not options.no_deps:
            todo.extend(dep.service for dep in enabled[name].depends_on if dep.service in enabled)
    return tuple(sorted(chosen))


def _replicas(service: Service, options: UpOptions) -> int:
    return options.scale.get(service.name, service.replicas())


def _orphans(project: Project, observed: ObservedProject) -> tuple[ObservedContainer, ...]:
    """Containers of services the file no longer has, and exited one-off containers (Compose's
    isOrphaned): by name."""
    known = {s.name for s in (*project.services, *project.disabled_services)}
    found = [
        c
        for c in observed.containers
        if (c.state in ("exited", "dead") if c.one_off else c.service not in known)
    ]
    return tuple(sorted(found, key=lambda c: c.name))


def _orphan_cause(container: ObservedContainer) -> str:
    if container.one_off:
        return f"orphan one-off container of service {container.service} ({container.state})"
    return f"orphan container (service {container.service} is not in the project)"


def _image_ops(
    services: Iterable[Service], images: Mapping[str, str], options: UpOptions
) -> tuple[list[Operation], set[str]]:
    """Builds and pulls for level 0, and the services whose image will change under them."""
    ops: list[Operation] = []
    pending: set[str] = set()
    for service in services:
        have = service.name in images
        cause = ""
        if service.build is not None:
            if options.build:
                cause = "--build"
            elif service.pull_policy == "build":
                cause = "pull_policy: build"
            elif not have:
                if options.no_build:
                    raise PlanError(
                        f"service {service.name}: image {service.image_name} is not built, "
                        "and --no-build was given"
                    )
                cause = "image not built yet"
            if cause:
                ops.append(BuildImage(level=0, cause=cause, service=service.name, image=service.image_name))
        elif not have:
            cause = "image not in the store"
            ops.append(PullImage(level=0, cause=cause, service=service.name, image=service.image_name))
        if cause:
            pending.add(service.name)
    return ops, pending


def _recreate_cause(
    service: Service,
    container: ObservedContainer,
    *,
    strategy: str,
    wanted_hash: str,
    image_id: str | None,
    recreated: set[str],
) -> str | None:
    """Why `container` must be recreated, or None (Compose's mustRecreate, in its order)."""
    if strategy == "never":
        return None
    if strategy == "force":
        return "--force-recreate"
    if strategy == "force-deps":
        return "--always-recreate-deps"
    for attr, parent in namespace_parents(service):
        if parent in recreated:
            return f"{attr} parent service {parent} recreated"
    if container.config_hash != wanted_hash:
        return f"config hash changed ({short_id(container.config_hash)} -> {short_id(wanted_hash)})"
    if image_id is None:
        return "image will be rebuilt" if service.build is not None else "image will be pulled"
    if container.image_id != image_id:
        return f"image changed ({short_id(container.image_id)} -> {short_id(image_id)})"
    return None


def _diverged(service: Service, container: ObservedContainer, wanted_hash: str, image_id: str | None) -> str:
    """What differs, for the cause of a container kept by --no-recreate ("" when nothing does)."""
    if container.config_hash != wanted_hash:
        return f"config hash changed ({short_id(container.config_hash)} -> {short_id(wanted_hash)})"
    if image_id is not None and container.image_id != image_id:
        return f"image changed ({short_id(container.image_id)} -> {short_id(image_id)})"
    return ""


def _state_cause(container: ObservedContainer) -> str:
    if container.state == "exited":
        code = "" if container.exit_code is None else f" ({container.exit_code})"
        return f"exited{code}"
    if container.state == "created":
        return "created, never started"
    return container.state


def plan_up(
    project: Project,
    observed: ObservedProject,
    *,
    images: Mapping[str, str],
    options: UpOptions = UpOptions(),  # frozen: sharing the default is safe
) -> Plan:
    """What `up` does: networks, volumes, images, then each service's containers, level by level.

    `images`: service name -> the id of the image it would run now (missing: not in the store, so it
    is built or pulled first; its containers are then recreated, since the new id is unknown here.
    The app builds first and plans again for the exact plan)."""
    scope = _scope(project, options)
    scoped = dataclasses.replace(project, services=tuple(project.service(n) for n in scope))
    selected = set(options.services) or set(scope)
    ops: list[Operation] = []
    warnings: list[str] = []

    # level 0: networks, volumes, images, orphans
    used_networks = {net.name for s in scoped.services for net in s.networks}
    have_networks = observed.network_names()
    for network in project.networks:
        if network.key in used_networks and not network.external and network.name not in have_networks:
            ops.append(CreateNetwork(level=0, cause="not found", key=network.key, name=network.name))
    used_volumes = {m.source for s in scoped.services for m in s.volumes if m.type == "volume" and m.source}
    have_volumes = observed.volume_names()
    for volume in project.volumes:
        if volume.key in used_volumes and not volume.external and volume.name not in have_volumes:
            ops.append(CreateVolume(level=0, cause="not found", key=volume.key, name=volume.name))
    image_ops, pending_images = _image_ops(scoped.services, images, options)
    ops += image_ops
    orphans = _orphans(project, observed)
    if orphans and options.remove_orphans:
        for c in orphans:
            ops.append(_remove(c, level=0, cause=_orphan_cause(c)))
    elif orphans:
        names = ", ".join(c.name for c in orphans)
        warnings.append(
            f"found orphan containers ({names}) for this project; if you removed or renamed their service "
            "in the compose file, run up with --remove-orphans to clean them up"
        )

    # levels 1..n: the services
    recreated: set[str] = set()  # services with at least one container recreated
    restarted: set[str] = set()  # ... or restarted (for `depends_on: restart: true`)
    for index, level in enumerate(start_levels(scoped), start=1):
        for name in level:
            service = project.service(name)
            ops += _plan_service(
                project,
                service,
                observed.of_service(name),
                level=index,
                image_id=None if name in pending_images else images.get(name),
                strategy=_strategy(name, selected, options),
                recreated=recreated,
                restarted=restarted,
                options=options,
            )
    return Plan(operations=tuple(ops), warnings=tuple(warnings))


def _strategy(name: str, selected: set[str], options: UpOptions) -> str:
    """Compose's recreate strategies: the selected services follow --force-recreate, the dependencies
    a selection pulls in follow --always-recreate-deps; --no-recreate wins over both."""
    if options.no_recreate:
        return "never"
    if name in selected:
        return "force" if options.force_recreate else "diverged"
    return "force-deps" if options.always_recreate_deps else "diverged"


def _remove(
    container: ObservedContainer, *, level: int, cause: str, volumes: bool = False
) -> RemoveContainer:
    return RemoveContainer(
        level=level,
        cause=cause,
        service=container.service,
        name=container.name,
        number=container.number,
        container_id=container.id,
        remove_volumes=volumes,
    )


def _plan_service(
    project: Project,
    service: Service,
    containers: tuple[ObservedContainer, ...],
    *,
    level: int,
    image_id: str | None,
    strategy: str,
    recreated: set[str],
    restarted: set[str],
    options: UpOptions,
) -> list[Operation]:
    wanted = _replicas(service, options)
    if service.container_name and wanted > 1:
        raise PlanError(
            f'service {service.name}: container_name "{service.container_name}" allows one container, '
            f"not {wanted}; remove container_name to scale"
        )
    wanted_hash = config_hash(service)
    causes = {
        c.id: _recreate_cause(
            service, c, strategy=strategy, wanted_hash=wanted_hash, image_id=image_id, recreated=recreated
        )
        for c in containers
    }
    # diverged ones first, then the lowest numbers: a scale-down trims the others
    ordered = sorted(containers, key=lambda c: (causes[c.id] is not None, c.number, c.name))
    kept, extra = ordered[:wanted], ordered[wanted:]
    ops: list[Operation] = []
    for c in sorted(extra, key=lambda c: (c.number, c.name)):
        ops.append(_remove(c, level=level, cause=f"scale {len(containers)} -> {wanted}"))
    restart_deps = sorted(d.service for d in service.depends_on if d.restart and d.service in restarted)
    any_recreated = any_restarted = False

    def op(kind: type[_C], number: int, cause: str) -> _C:
        name = container_name(project.name, service, number)
        return kind(level=level, cause=cause, service=service.name, name=name, number=number)

    for c in sorted(kept, key=lambda c: (c.number, c.name)):
        cause = causes[c.id]
        if cause is not None:
            any_recreated = True
            name = container_name(project.name, service, c.number)
            ops.append(RecreateContainer(level=level, cause=cause, service=service.name, name=name,
                                         number=c.number, replaces=c.id))  # fmt: skip
            if options.start:
                ops.append(op(StartContainer, c.number, "recreated"))
            continue
        note = _diverged(service, c, wanted_hash, image_id) if strategy == "never" else ""
        if restart_deps and c.running and options.start:
            any_restarted = True
            why = f"dependency {', '.join(restart_deps)} recreated or restarted (depends_on restart: true)"
            ops.append(op(RestartContainer, c.number, why))
        elif options.start and c.state in ("created", "exited", "dead"):
            why = _state_cause(c) + (f"; --no-recreate kept it: {note}" if note else "")
            ops.append(op(StartContainer, c.number, why))
        else:
            why = f"--no-recreate ({note})" if note else f"up to date, {c.state}"
            ops.append(op(KeepContainer, c.number, why))
    next_number = max((c.number for c in containers), default=0) + 1
    for i in range(wanted - len(kept)):
        number = next_number + i
        why = "new service" if not containers else f"scale {len(containers)} -> {wanted}"
        ops.append(op(CreateContainer, number, why))
        if options.start:
            ops.append(op(StartContainer, number, "created"))
    if any_recreated:
        recreated.add(service.name)
    if any_recreated or any_restarted:
        restarted.add(service.name)
    return ops


# --- down ----------------------------------------------------------------------------------------------


def plan_down(
    project: Project,
    observed: ObservedProject,
    *,
    remove_volumes: bool = False,
    remove_orphans: bool = False,
    rmi: Rmi | None = None,
) -> Plan:
    """What `down` does: every container of the project, dependents first (one-off containers of a
    service go with it), then its networks, with -v its named volumes (never external ones) and the
    containers' anonymous volumes, with --rmi its images. Only what exists is removed, so `down` twice
    plans nothing the second time."""
    ops: list[Operation] = []
    warnings: list[str] = []
    enabled = {s.name for s in project.services}
    disabled = {s.name for s in project.disabled_services}
    by_service: dict[str, list[ObservedContainer]] = {}
    for c in observed.containers:
        by_service.setdefault(c.service, []).append(c)

    def remove_all(names: Iterable[str], level: int, cause: str) -> None:
        for name in names:
            for c in sorted(by_service.get(name, ()), key=lambda c: (c.one_off, c.number, c.name)):
                ops.append(_remove(c, level=level, cause=cause, volumes=remove_volumes))

    levels = tuple(reversed(start_levels(project)))
    remove_all(sorted(disabled), 0, "down (service disabled by its profiles)")
    orphans = sorted(n for n in by_service if n not in enabled and n not in disabled)
    if orphans and remove_orphans:
        remove_all(orphans, 0, "orphan container (service not in the project)")
    elif orphans:
        names = ", ".join(sorted(c.name for n in orphans for c in by_service[n]))
        warnings.append(
            f"found orphan containers ({names}) for this project; "
            "run down with --remove-orphans to remove them"
        )
    for index, level in enumerate(levels):
        remove_all(level, index, "down")

    last = len(levels)
    have_networks = observed.network_names()
    for network in project.networks:
        if not network.external and network.name in have_networks:
            ops.append(RemoveNetwork(level=last, cause="down", key=network.key, name=network.name))
    if remove_volumes:
        have_volumes = observed.volume_names()
        for volume in project.volumes:
            if not volume.external and volume.name in have_volumes:
                ops.append(RemoveVolume(level=last, cause="down -v", key=volume.key, name=volume.name))
    if rmi is not None:
        seen: set[str] = set()
        for service in project.services:
            local = service.image is None
            if (rmi == "all" or local) and service.image_name and service.image_name not in seen:
                seen.add(service.image_name)
                ops.append(RemoveImage(level=last, cause=f"--rmi {rmi}", image=service.image_name))
    return Plan(operations=tuple(ops), warnings=tuple(warnings))
