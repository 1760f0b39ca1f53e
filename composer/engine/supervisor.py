"""The supervisor: one project's containers kept as the plan and the policies say, over the real kernel.

It implements the executor's `Backends` (composer.engine.backends) over composer.runtime, network,
image and storage, and owns every container's life as trio tasks:

    supervisor = Supervisor(layout, runtime, project_name)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)          # adopts what a killed supervisor left running
        backends = supervisor.backends(project, environ)
        await execute_up(plan_up(...), backends, project=project)

A container's life (a `Unit`): `create` prepares its folder (volumes acquired and filled from the
image, secrets, /etc/hostname, hosts, resolv.conf), its record and launch spec; `start` runs it under
a `Supervision` (restart policy, Docker's backoff) whose every run is: a cgroup with the service's
limits, stdout/stderr through FIFOs in the container's folder (the container holds them read-write, so
a supervisor that dies never breaks its pipes: output waits in the pipe until the next supervisor
drains it), the veths attached before the process may go on, then beside it while it runs: the log
pumps, the embedded DNS server in its netns, its published ports, its healthcheck. Every change of
state is saved to the record (composer.engine.records) and sent to the listeners.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import ipaddress
import os
import secrets
import shutil
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from composer.engine.backends import Backends, ContainerChange, ContainerListener, ContainerRef
from composer.engine.depends import ContainerState
from composer.engine.health import (
    HealthConfig,
    HealthEvent,
    HealthMonitor,
    HealthStatus,
    RuntimeProbe,
    effective_healthcheck,
)
from composer.engine.logs import LogConfig, LogWriter, log_config, log_path, pump
from composer.engine.records import ContainerRecord, RecordStore, process_start_time
from composer.engine.restart import (
    EventKind,
    RestartEvent,
    RestartPolicy,
    Supervision,
    parse_restart,
    service_restart_policy,
)
from composer.engine.translate import anonymous_volumes, config_targets, container_spec, secret_targets
from composer.errors import ComposerError
from composer.image.store import Image, ImageStore
from composer.log import logger
from composer.network.dns import Endpoint, Link, NameTables, parse_links, serve_dns, upstreams_for
from composer.network.hosts import hosts_file, resolv_conf, rewrite_in_place
from composer.network.manager import NetworkConfig, NetworkHandle, NetworkManager
from composer.network.ports import ContainerPorts, HeldPorts, PortPublisher, reserve
from composer.runtime import libc
from composer.runtime.cgroups import Cgroup, CgroupError, Resources
from composer.runtime.console import Terminal
from composer.runtime.launch import AdoptedContainer, Container, ExitStatus, Runtime
from composer.runtime.spec import ContainerSpec, Namespace, Network, Stdio
from composer.spec.model import Project, Service, ServiceNetwork
from composer.storage import secrets as secret_files
from composer.storage import trash
from composer.storage.layout import Layout
from composer.storage.volumes import VolumeStore

__all__ = ["Launch", "Supervisor", "SupervisorError"]

HOST_RESOLV_CONF = Path("/etc/resolv.conf")
_LIVE = ("running", "paused", "restarting")
TRASH_QUIET = 0.25  # seconds without a removal before the trash is emptied (it competes for the GIL)


class SupervisorError(ComposerError):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Launch:
    """Everything a container's runs need beyond its record, pickled beside it for a re-adopting
    supervisor and for `exec`."""

    spec: ContainerSpec  # without stdio and cgroup (each run has its own)
    service: str
    aliases: tuple[str, ...] = ()  # names on every network besides its name and service (its short id)
    networks: tuple[tuple[NetworkConfig, ServiceNetwork], ...] = ()  # in attach order
    restart: RestartPolicy = dataclasses.field(default_factory=lambda: parse_restart(None))  # "no"
    health: HealthConfig | None = None
    resources: Resources = dataclasses.field(default_factory=Resources)
    logging: LogConfig = dataclasses.field(default_factory=LogConfig)
    ports: tuple[Any, ...] = ()  # the service's Port models
    dns: tuple[str, ...] = ()
    hostname: str = ""
    domainname: str = ""
    extra_hosts: tuple[str, ...] = ()
    join: str = ""  # network_mode `service:NAME` or `container:NAME`: whose network namespace it shares
    links: tuple[Link, ...] = ()  # `links` and `external_links`: names only this container resolves
    pid: str = ""  # the service's `pid:` (`host`, `service:NAME`, `container:NAME`) and `ipc:` (also
    ipc: str = ""  # `shareable`: others may join it, as Docker requires of an IPC namespace's owner)


@dataclass(eq=False)
class Unit:
    """One container of the project in this supervisor."""

    record: ContainerRecord
    launch: Launch
    container: Container | None = None
    supervision: Supervision | None = None
    health: HealthMonitor | None = None
    held_ports: HeldPorts | None = None
    stdio: Stdio | None = None  # `run` in the foreground: the client's own descriptors, no log file
    netns_inode: int | None = None  # its last run's network namespace (see Supervisor._kept_netns)
    addresses6: dict[str, str] = field(default_factory=dict)  # network -> IPv6 address (enable_ipv6)
    relay_tty: bool = False  # `run` with a TTY: its pty's master goes to the client (`terminal`), not a log
    terminal: Terminal | None = None
    generation: int = 0
    last_exit: ExitStatus | None = None
    cgroup_removed: bool = False  # its last run's end removed its cgroup (remove need not look for one)
    changed: trio.Event = field(default_factory=trio.Event)

    @property
    def ref(self) -> ContainerRef:
        return ContainerRef(
            id=self.record.id,
            name=self.record.name,
            service=self.record.service,
            stop_signal=self.record.stop_signal,
            stop_grace=self.record.stop_grace,
        )

    def state(self) -> ContainerState:
        snap = self.health.snapshot() if self.health is not None else None
        return ContainerState(
            name=self.record.name,
            status=self.record.state,
            exit_code=self.record.exit_code,
            has_healthcheck=self.launch.health is not None,
            health=str(snap.status) if snap is not None else None,
            health_output=snap.last_output if snap is not None else None,
            start_generation=self.generation,
            health_generation=snap.generation if snap is not None else 0,
        )


class Supervisor:
    """One project's containers. `run` must be running (in a nursery) before any other call."""

    def __init__(
        self,
        layout: Layout,
        runtime: Runtime,
        project: str,
        *,
        networks: NetworkManager | None = None,
        publisher: PortPublisher | None = None,
    ) -> None:
        self.layout = layout
        self.runtime = runtime
        self.project = project
        self.records = RecordStore(layout.containers)
        self.images = ImageStore(layout)
        self.volumes = VolumeStore(layout, mounter=libc)  # driver_opts volumes are mounted
        self.networks = networks or NetworkManager(layout.root)
        self.publisher = publisher or PortPublisher()
        self.tables = NameTables()
        self.units: dict[str, Unit] = {}  # by id
        self.listeners: list[ContainerListener] = []
        self.lock = trio.Lock()  # one request that changes things at a time
        self._handles: dict[str, NetworkHandle] = {}
        self._nursery: trio.Nursery | None = None
        self.changed = trio.Event()  # set (and renewed) on every change of any unit
        self._discarded = trio.Event()  # set (and renewed) when `remove` put a folder in the trash

    # -- the life of the supervisor ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Adopt the project's containers, then keep them until cancelled. Cancelling does not stop the
        containers (they outlive the supervisor); `stop_all` does."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                nursery.start_soon(self._empty_trash)
                await self._adopt_all()
                task_status.started()
                await trio.sleep_forever()
            finally:
                self._nursery = None
                for unit in self.units.values():
                    if unit.held_ports is not None:
                        unit.held_ports.close()
        trash.empty(self.layout)  # what the last removals put there (the task above waited for its thread)

    async def _empty_trash(self) -> None:
        """Delete what `remove` put in the trash (and what a killed supervisor left there), in a
        worker thread, after the removals have answered."""
        while True:
            await trio.to_thread.run_sync(trash.empty, self.layout)
            await self._discarded.wait()
            while True:  # until the removals pause: a `down` of 50 answers meanwhile
                self._discarded = trio.Event()
                with trio.move_on_after(TRASH_QUIET):
                    await self._discarded.wait()
                    continue
                break

    @property
    def nursery(self) -> trio.Nursery:
        if self._nursery is None:
            raise SupervisorError("the supervisor is not running")
        return self._nursery

    def warm_up(self) -> None:
        """What the first request would otherwise pay for on its way (sync: run it in a thread while
        waiting for that request): reading the host's cgroup layout."""
        from composer.runtime import cgroups

        cgroups.host_layout()

    def idle(self) -> bool:
        """Nothing to watch: no container runs or waits for a restart."""
        return not any(u.record.state in _LIVE for u in self.units.values())

    async def _adopt_all(self) -> None:
        for record in self.records.of_project(self.project):
            launch = self.records.load_launch(record.id)
            if not isinstance(launch, Launch):
                logger().warning("supervisor.unreadable", container=record.name)
                continue
            unit = Unit(record=record, launch=launch)
            self.units[record.id] = unit
            if record.state in _LIVE and record.alive() and record.pid is not None:
                try:
                    container = self.runtime.adopt(launch.spec, record.pid)
                except (ProcessLookupError, OSError) as exc:
                    logger().warning("supervisor.adopt_failed", container=record.name, error=str(exc))
                    self._lost(unit)
                    continue
                await self._supervise(unit, adopted=container)
                logger().info("supervisor.adopted", container=record.name, pid=record.pid)
            elif record.state in _LIVE:
                self._lost(unit)

    def _lost(self, unit: Unit) -> None:
        """A container that ended while no supervisor watched it."""
        unit.record.state = "exited"
        unit.record.exit_code = unit.record.observed_exit_code()
        unit.record.pid = unit.record.pid_start = None
        unit.record.finished_at = unit.record.finished_at or time.time()
        self._changed(unit)

    # -- reporting -----------------------------------------------------------------------------------------

    def subscribe(self, listener: ContainerListener) -> Callable[[], None]:
        self.listeners.append(listener)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self.listeners.remove(listener)

        return unsubscribe

    def _changed(self, unit: Unit, *, save: bool = True) -> None:
        if save and unit.record.id in self.units:
            self.records.save(unit.record)
        change = ContainerChange(service=unit.record.service, name=unit.record.name, state=unit.state())
        for listener in list(self.listeners):
            listener(change)
        unit.changed.set()
        unit.changed = trio.Event()
        self.changed.set()
        self.changed = trio.Event()

    def _gone(self, unit: Unit, name: str | None = None) -> None:
        change = ContainerChange(service=unit.record.service, name=name or unit.record.name, state=None)
        for listener in list(self.listeners):
            listener(change)
        unit.changed.set()
        self.changed.set()
        self.changed = trio.Event()

    def states(self) -> list[ContainerChange]:
        return [ContainerChange(service=u.record.service, name=u.record.name, state=u.state())
                for u in sorted(self.units.values(), key=lambda u: u.record.name)]  # fmt: skip

    def unit(self, key: str) -> Unit | None:
        for unit in self.units.values():
            if key in (unit.record.id, unit.record.name):
                return unit
        return None

    def backends(
        self, project: Project, environ: Mapping[str, str], compose_files: Sequence[str] = ()
    ) -> Backends:
        return Backends(
            images=_Images(self),
            networks=_Networks(self, project),
            volumes=_Volumes(self, project),
            containers=_Containers(self, project, environ, compose_files),
        )

    # -- networks --------------------------------------------------------------------------------------

    async def network_handle(self, config: NetworkConfig) -> NetworkHandle:
        handle = self._handles.get(config.name)
        if handle is None:
            handle = await self.networks.ensure_network(config)
            self._handles[config.name] = handle
        return handle

    # -- create --------------------------------------------------------------------------------------------

    def prepare(
        self,
        project: Project,
        service: Service,
        number: int,
        name: str,
        environ: Mapping[str, str],
        replaces: Unit | None,
        *,
        one_off: bool = False,
        compose_files: Sequence[str] = (),
    ) -> tuple[ContainerRecord, Launch]:
        """The container's folder, volumes, files, record and launch spec (sync: run it in a thread).
        All or nothing: a failure releases what it took and removes the folder. `one_off`: a `run`."""
        image = self.images.resolve(service.image_name)
        if image is None:
            raise SupervisorError(
                f"image {service.image_name} is not in the store: "
                + ("build it (composer build, or up --build)" if service.build else "pull or build it first")
            )
        cid = secrets.token_hex(32)
        folder = self.layout.container_dir(cid)
        folder.mkdir(parents=True)
        taken: list[str] = []
        try:
            return self._prepare(
                project, service, number, name, environ, replaces, image, cid, folder, taken, one_off,
                compose_files,
            )  # fmt: skip
        except BaseException:
            for volume in taken:
                with contextlib.suppress(Exception):
                    self.volumes.release(volume, cid)
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def _prepare(
        self,
        project: Project,
        service: Service,
        number: int,
        name: str,
        environ: Mapping[str, str],
        replaces: Unit | None,
        image: Image,
        cid: str,
        folder: Path,
        taken: list[str],
        one_off: bool,
        compose_files: Sequence[str],
    ) -> tuple[ContainerRecord, Launch]:
        layers = self.images.layer_dirs(image)
        sources: dict[str, Path] = {}
        named: list[str] = []
        anonymous: dict[str, str] = {}

        def fill(volume: str, target: str, nocopy: bool) -> None:
            rel = target.lstrip("/")
            self.volumes.populate(volume, [layer / rel for layer in layers], nocopy=nocopy)

        for mount in service.volumes:
            if mount.type != "volume" or not mount.source:
                continue
            top = project.volume(mount.source)
            if top.external:
                self.volumes.lookup_external(top.name)
            else:
                self.volumes.ensure(
                    top.name,
                    top.driver,
                    dict(top.driver_opts),
                    {**dict(top.labels), **_volume_labels(project, top.key)},
                )
            sources[mount.source] = self.volumes.acquire(top.name, cid)
            taken.append(top.name)
            named.append(top.name)
            fill(top.name, mount.target, bool(mount.volume and mount.volume.nocopy))
        previous = replaces.record.anonymous_volumes if replaces is not None else {}
        for target in anonymous_volumes(service, image.config):
            if any(m.target == target and m.source for m in service.volumes):
                continue
            volume = previous.get(target)
            if volume is None or not self.volumes.exists(volume):
                volume = self.volumes.create_anonymous(
                    {"com.docker.compose.project": project.name, "com.docker.compose.volume": target}
                ).name
            sources[target] = self.volumes.acquire(volume, cid)
            taken.append(volume)
            anonymous[target] = volume
            fill(volume, target, False)

        items = []
        for targets, tops in (
            (secret_targets(service), project.secrets),
            (config_targets(service), project.configs),
        ):
            by_key = {t.key: t for t in tops}
            for wanted in targets:
                obj = by_key.get(wanted.source)
                what = f"service {service.name}: {wanted.kind} {wanted.source}"
                if obj is None:
                    raise SupervisorError(f"{what} is not defined")
                if obj.external:
                    raise SupervisorError(f"{what} is external (a swarm feature composer does not have)")
                items.append(
                    secret_files.SecretFile(
                        kind=wanted.kind, key=wanted.source, file=Path(obj.file) if obj.file else None,
                        environment=obj.environment, content=obj.content,
                        uid=wanted.uid, gid=wanted.gid, mode=wanted.mode,
                    )
                )  # fmt: skip
        written = secret_files.materialize(folder, items, environ)

        hostname = service.hostname or (os.uname().nodename if service.uts == "host" else cid[:12])
        mode = service.network_mode or ""
        networks: list[tuple[NetworkConfig, ServiceNetwork]] = []
        if mode == "host":
            network = Network(mode="host")
            hosts_text = hosts_file(hostname=hostname, extra_hosts=service.extra_hosts,
                                    base=_read_text(Path("/etc/hosts")))  # fmt: skip
            resolv_text = resolv_conf(_read_text(HOST_RESOLV_CONF), mode="host", dns=service.dns,
                                      dns_search=service.dns_search, dns_opt=service.dns_opt)  # fmt: skip
        elif mode in ("", "bridge", "none") or mode.startswith("bridge"):
            network = Network(mode="new")
            if mode != "none":
                ordered = sorted(service.networks, key=lambda n: (-n.priority, n.name))
                networks = [(NetworkConfig.from_compose(project.network(n.name)), n) for n in ordered]
            hosts_text = hosts_file(hostname=hostname, domainname=service.domainname or "",
                                    extra_hosts=service.extra_hosts)  # fmt: skip
            resolv_text = resolv_conf(
                _read_text(HOST_RESOLV_CONF), mode="embedded" if networks else "none",
                dns=service.dns, dns_search=service.dns_search, dns_opt=service.dns_opt,
            )  # fmt: skip
        elif mode.startswith(("service:", "container:")):
            # the other container's netns (found at each start); its hosts and resolv.conf are copied then
            network = Network(mode="join")
            hosts_text = resolv_text = ""
        else:
            raise SupervisorError(f"service {service.name}: network_mode {mode!r} is not supported")
        etc = {"hostname": f"{hostname}\n", "hosts": hosts_text, "resolv.conf": resolv_text}
        for file, text in etc.items():
            (folder / file).write_text(text)

        translated = container_spec(
            project,
            service,
            container_id=cid,
            number=number,
            image=image.config,
            image_id=image.id,
            lower_dirs=layers,
            network=network,
            etc_hostname=folder / "hostname",
            etc_hosts=folder / "hosts",
            etc_resolv_conf=folder / "resolv.conf",
            volume_sources=sources,
            secret_files=written.secrets,
            config_files=written.configs,
            one_off=one_off,
            compose_files=compose_files,
        )
        for warning in translated.warnings:
            logger().warning(warning)
        spec = dataclasses.replace(translated.spec, hostname=hostname)
        logging = log_config(service.logging)
        labels = dict(translated.labels)
        record = ContainerRecord(
            id=cid,
            name=name,
            project=project.name,
            service=service.name,
            number=number,
            image=service.image_name,
            image_id=image.id,
            config_hash=labels.get("com.docker.compose.config-hash", ""),
            labels=labels,
            one_off=one_off,
            command=" ".join(spec.argv),
            stop_signal=translated.stop_signal,
            stop_grace=translated.stop_grace,
            named_volumes=named,
            anonymous_volumes=anonymous,
            log_path=str(log_path(folder, cid)) if logging.enabled else None,
        )
        launch = Launch(
            spec=spec,
            service=service.name,
            aliases=(cid[:12],),  # Docker's DNS answers to the short id; `networks.<n>.aliases` per network
            networks=tuple(networks),
            restart=service_restart_policy(service),
            health=effective_healthcheck(
                service.healthcheck, image.config.healthcheck, shell=image.config.shell
            ),
            resources=translated.resources,
            logging=logging,
            ports=tuple(service.ports),
            dns=service.dns,
            hostname=hostname,
            domainname=service.domainname or "",
            extra_hosts=service.extra_hosts,
            join=mode if mode.startswith(("service:", "container:")) else "",
            links=() if one_off else parse_links(service.links, service.external_links),
            pid=service.pid or "",
            ipc=service.ipc or "",
        )
        self.records.save(record)
        self.records.save_launch(cid, launch)
        return record, launch

    def register(self, record: ContainerRecord, launch: Launch) -> Unit:
        unit = Unit(record=record, launch=launch)
        self.units[record.id] = unit
        self._changed(unit, save=False)  # `prepare` saved it
        return unit

    # -- start ---------------------------------------------------------------------------------------------

    async def start(self, unit: Unit) -> None:
        """Start the container under its restart policy; returns once it runs (raises if it cannot)."""
        if unit.record.state in _LIVE:
            return
        unit.record.manually_stopped = False
        await self._supervise(unit)

    async def _supervise(self, unit: Unit, adopted: Container | None = None) -> None:
        if unit.health is None and unit.launch.health is not None:
            unit.health = HealthMonitor(
                unit.launch.health, _UnitProbe(self.runtime, unit), on_change=self._health_cb(unit)
            )
        starter = _Starter(self, unit, adopted)
        supervision = Supervision(
            starter,
            unit.launch.restart,
            on_event=self._restart_cb(unit),
            restart_count=unit.record.restart_count,
        )
        unit.supervision = supervision
        first = _FirstStart()
        # The supervision belongs to the supervisor's nursery from the first moment: a request cancelled
        # while the container starts (Ctrl-C of `up`) never leaves a running container unwatched.
        self.nursery.start_soon(self._supervision_task, unit, supervision, first)
        await first.done.wait()
        if first.error is not None:
            raise first.error

    async def _supervision_task(self, unit: Unit, supervision: Supervision, first: _FirstStart) -> None:
        try:
            await supervision.run(task_status=first)
        except Exception as exc:
            if not first.done.is_set():
                first.error = exc  # the first start failed: its caller reports it
            else:
                logger().exception(
                    "supervisor.supervision_failed", container=unit.record.name, error=str(exc)
                )
        finally:
            first.done.set()
            if unit.supervision is supervision:
                unit.supervision = None
            if unit.held_ports is not None and unit.record.state not in _LIVE:
                unit.held_ports.close()
                unit.held_ports = None

    def _restart_cb(self, unit: Unit) -> Callable[[RestartEvent], None]:
        def on_event(event: RestartEvent) -> None:
            record = unit.record
            record.restart_count = event.restart_count
            if event.kind == EventKind.RESTARTING:
                record.state = "restarting"
                self._changed(unit)
            elif event.kind in (EventKind.DONE, EventKind.START_FAILED) and record.state == "restarting":
                record.state = "exited"
                self._changed(unit)
            logger().info(
                "container.restart_event", container=record.name, kind=str(event.kind),
                restart_count=event.restart_count, delay=event.delay, error=event.error,
            )  # fmt: skip

        return on_event

    def _health_cb(self, unit: Unit) -> Callable[[HealthEvent], None]:
        def on_change(event: HealthEvent) -> None:
            snap = unit.health.snapshot() if unit.health is not None else None
            if snap is None:
                return
            before = unit.record.health
            unit.record.health = str(snap.status)
            unit.record.health_output = snap.last_output
            if before != unit.record.health:
                logger().info("container.health", container=unit.record.name, status=unit.record.health)
            self._changed(unit, save=before != unit.record.health)

        return on_change

    async def run_once(self, unit: Unit, adopted: Container | None) -> _RunHandle:
        """One run of the container: launched (or adopted), with everything beside it started."""
        launch, record = unit.launch, unit.record
        folder = self.layout.container_dir(record.id)
        fifos: list[int] = []
        cgroup: Cgroup | None = None
        scope = _Scopes()
        try:
            reads: dict[str, int] = {}
            writes: dict[str, int] = {}
            if not launch.spec.tty and unit.stdio is None:
                for stream in ("stdout", "stderr"):
                    path = folder / f"{stream}.fifo"
                    with contextlib.suppress(FileExistsError):
                        os.mkfifo(path, 0o600)
                        # writable by any user: a server that drops privileges and then opens
                        # /dev/stderr (lighttpd's errorlog) reopens this FIFO through /proc/self/fd
                        os.chmod(path, 0o622)
                    reads[stream] = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                    fifos.append(reads[stream])
                    if adopted is None:
                        writes[stream] = os.open(path, os.O_RDWR | os.O_CLOEXEC)
                        fifos.append(writes[stream])
            if adopted is None:
                kept = ""
                unit.cgroup_removed = False
                cgroup = Cgroup.prepare(record.id, launch.resources)  # the PID 1 makes its leaves
                stdio = unit.stdio or Stdio(stdout=writes.get("stdout"), stderr=writes.get("stderr"))
                spec = dataclasses.replace(launch.spec, stdio=stdio, cgroup=cgroup)
                joined = self._joined(unit)
                if joined:
                    spec = dataclasses.replace(spec, **joined)
                    # kept for `exec` and a re-adopting supervisor, which read the launch file
                    unit.launch = dataclasses.replace(launch, spec=dataclasses.replace(launch.spec, **joined))
                    self.records.save_launch(record.id, unit.launch)
                elif launch.networks and (kept := self._kept_netns(unit)):
                    spec = dataclasses.replace(spec, network=Network(mode="join", path=kept))
                container = await self.runtime.start(
                    spec, before_go=lambda pid: self._attach(unit, pid, scope, reuse=bool(kept))
                )
                if unit.relay_tty and container.terminal is not None:
                    unit.terminal, container.terminal = container.terminal, None  # not pumped here
                for stream in ("stdout", "stderr"):
                    if stream in writes:
                        os.close(writes[stream])
                        fifos.remove(writes[stream])
            else:
                container = adopted
                with contextlib.suppress(CgroupError):
                    cgroup = Cgroup.load(record.id)
                if cgroup is not None and container.spec is not None:
                    container.spec = dataclasses.replace(container.spec, cgroup=cgroup)  # probes join it
                await self._attach_known(unit, container.pid, scope)
        except BaseException:
            scope.cancel()
            for fd in fifos:
                os.close(fd)
            raise
        unit.container = container
        unit.generation += 1
        record.state = "running"
        record.pid = container.pid
        record.pid_start = process_start_time(container.pid)
        record.exit_code = None
        if adopted is None:
            record.started_at = time.time()
            if unit.health is not None:  # a new run is not healthy yet (the monitor says so a bit later)
                record.health = str(HealthStatus.STARTING)
        self._changed(unit)
        handle = _RunHandle(self, unit, container, cgroup, reads, scope, adopted=adopted is not None)
        try:
            await self.nursery.start(handle.beside)
        except BaseException:
            await container.kill_and_reap()
            with trio.CancelScope(shield=True):
                await handle.wait()
            raise
        return handle

    def _joined(self, unit: Unit) -> dict[str, Any]:
        """The namespaces this run shares with other running containers, as ContainerSpec fields:
        `network_mode: service:X` / `container:X` (X's netns, and its /etc/hosts and resolv.conf copied
        into this container's, as Docker shares them), `pid:` and `ipc:` the same way (an IPC namespace
        only from a container whose `ipc:` is `shareable` or `host`, Docker's rule)."""
        launch = unit.launch
        changes: dict[str, Any] = {}
        if launch.join:
            target = self._donor(unit, "network_mode", launch.join)
            source = self.layout.container_dir(target.record.id)
            mine = self.layout.container_dir(unit.record.id)
            for file in ("hosts", "resolv.conf"):
                rewrite_in_place(mine / file, _read_text(source / file))
            changes["network"] = Network(mode="join", path=f"/proc/{target.record.pid}/ns/net")
        pid, ipc = getattr(launch, "pid", ""), getattr(launch, "ipc", "")  # a launch file from before
        if pid.startswith(("service:", "container:")):
            target = self._donor(unit, "pid", pid)
            changes["pid_ns"] = Namespace(mode="join", pid=target.record.pid or 0)
        if ipc.startswith(("service:", "container:")):
            target = self._donor(unit, "ipc", ipc)
            if getattr(target.launch, "ipc", "") not in ("shareable", "host"):
                raise SupervisorError(
                    f"service {unit.record.service}: ipc {ipc}: container {target.record.name} has a "
                    "non-shareable IPC namespace (give it `ipc: shareable`, as Docker requires)"
                )
            changes["ipc_ns"] = Namespace(mode="join", pid=target.record.pid or 0)
        return changes

    def _donor(self, unit: Unit, field: str, ref: str) -> Unit:
        """The running container that `service:X` / `container:X` names (the service's first)."""
        kind, _, name = ref.partition(":")
        running = [u for u in self.units.values() if u.container is not None and u.record.pid]
        if kind == "service":
            found = [u for u in running if u.record.service == name and not u.record.one_off]
        else:
            found = [u for u in running if u.record.name == name]
        if not found:
            raise SupervisorError(
                f"service {unit.record.service}: {field} {ref}: no running container to join"
            )
        return min(found, key=lambda u: u.record.number)

    def _kept_netns(self, unit: Unit) -> str:
        """The network namespace of the container's last run, if it outlived that run: a container that
        shares it (`network_mode: service:X` / `container:X`) still runs in it. The container then starts
        in it again, with its veths, addresses and routes as they are, so that the containers sharing
        it keep their network across its restarts (Docker makes a new one, and leaves them cut off:
        docker/compose#6626, #10263). "" when there is none (a new one is made)."""
        if unit.netns_inode is None:
            return ""
        for other in self.units.values():
            if other is unit or other.container is None or not other.launch.join:
                continue
            path = f"/proc/{other.container.pid}/ns/net"
            with contextlib.suppress(OSError):
                if os.stat(path).st_ino == unit.netns_inode:
                    return path
        return ""

    async def _ended(self, unit: Unit, handle: _RunHandle, status: ExitStatus) -> None:
        """The end of a run (from `_RunHandle.wait`): the cgroup goes, the record says exited."""
        record = unit.record
        unit.cgroup_removed = False
        if handle.cgroup is not None:
            cgroup = handle.cgroup
            with contextlib.suppress(CgroupError, OSError):
                await trio.to_thread.run_sync(cgroup.destroy)
                unit.cgroup_removed = True
        self.tables.remove_container(record.id)
        unit.container = None
        unit.last_exit = status
        record.state = "exited"
        record.exit_code = status.code
        record.pid = record.pid_start = None
        record.finished_at = time.time()
        record.ports = []
        self._changed(unit)
        logger().info("container.exited", container=record.name, code=status.code)

    async def _attach(self, unit: Unit, pid: int, scope: _Scopes, *, reuse: bool = False) -> None:
        """Before the process may go on: its veths, /etc/hosts with its addresses, its DNS server (so
        that a lookup as the very first thing it does is answered, as in Docker). `reuse`: it runs in
        its previous run's netns (`_kept_netns`), whose veths are kept when they are all there."""
        if not unit.launch.networks:
            return
        with contextlib.suppress(OSError):
            unit.netns_inode = os.stat(f"/proc/{pid}/ns/net").st_ino
        pairs = [(await self.network_handle(config), net) for config, net in unit.launch.networks]
        attachment = await self.networks.attach(unit.record.name, pid, pairs, reuse=reuse)
        addresses = attachment.addresses
        unit.record.networks = {name: str(ip) for name, ip in addresses.items()}
        unit.addresses6 = {name: str(ip) for name, ip in attachment.addresses6.items()}
        self._publish_names(unit)
        order = [c.name for c, _ in unit.launch.networks]
        text = hosts_file(
            hostname=unit.launch.hostname, domainname=unit.launch.domainname,
            addresses=[str(addresses[n]) for n in order if n in addresses]
            + [unit.addresses6[n] for n in order if n in unit.addresses6],
            extra_hosts=unit.launch.extra_hosts,
        )  # fmt: skip
        rewrite_in_place(self.layout.container_dir(unit.record.id) / "hosts", text)
        await self.nursery.start(self._serve_dns, unit, pid, scope)

    async def _serve_dns(
        self, unit: Unit, pid: int, scope: _Scopes, *, task_status: trio.TaskStatus[Any]
    ) -> None:
        """The run's DNS server, in the supervisor's nursery, until the run's `scope` is cancelled."""
        netns = f"/proc/{pid}/ns/net"
        view = self.tables.view(unit.record.networks, self._links(unit))
        upstreams = upstreams_for(_read_text(HOST_RESOLV_CONF), dns=unit.launch.dns, container_netns=netns)
        with scope.new():
            await serve_dns(netns, view, upstreams, task_status=task_status)

    def _links(self, unit: Unit) -> tuple[Link, ...]:
        """The container's links; an external link to a container this supervisor does not run (another
        project's, on a shared network) gets that container's addresses from IPAM, as they are now."""
        links = getattr(unit.launch, "links", ())
        if not any(link.container for link in links):
            return links
        ours = {u.record.name for u in self.units.values()}
        records = {r.name: r for r in self.networks.networks()}
        out = []
        for link in links:
            if link.container and link.container not in ours:
                found = [records[n].address_of(link.container) for n in unit.record.networks if n in records]
                address = next((a for a in found if a is not None), None)
                found6 = [
                    records[n].address6_of(link.container) for n in unit.record.networks if n in records
                ]
                link = dataclasses.replace(link, address6=next((a for a in found6 if a is not None), None))
                if address is None:
                    logger().warning(
                        "network.external_link_unresolved", container=unit.record.name, link=link.container,
                        detail="no container of that name on a network this container is on",
                    )  # fmt: skip
                link = dataclasses.replace(link, address=address)
            out.append(link)
        return tuple(out)

    async def _attach_known(self, unit: Unit, pid: int, scope: _Scopes) -> None:
        """An adopted container's veths are there: the name tables need its addresses again, and its
        netns a DNS server."""
        for config, _ in unit.launch.networks:
            await self.network_handle(config)
        if unit.launch.networks:
            with contextlib.suppress(OSError):
                unit.netns_inode = os.stat(f"/proc/{pid}/ns/net").st_ino
            records = {r.name: r for r in self.networks.networks()}
            found = {
                n: records[n].address6_of(unit.record.name) for n in unit.record.networks if n in records
            }
            unit.addresses6 = {n: str(a) for n, a in found.items() if a is not None}
        self._publish_names(unit)
        if unit.record.networks:
            await self.nursery.start(self._serve_dns, unit, pid, scope)

    def _publish_names(self, unit: Unit) -> None:
        """The container's names on each of its networks: its name, its service's (not for a `run`),
        its short id, and that network's `aliases`."""
        own = {config.name: net.aliases for config, net in unit.launch.networks}
        for network, address in unit.record.networks.items():
            self.tables.table(network).add(
                Endpoint(
                    container_id=unit.record.id,
                    container_name=unit.record.name,
                    service="" if unit.record.one_off else unit.record.service,
                    aliases=(*unit.launch.aliases, *own.get(network, ())),
                    address=ipaddress.IPv4Address(address),
                    address6=ipaddress.IPv6Address(unit.addresses6[network])
                    if network in unit.addresses6
                    else None,
                )
            )

    # -- user actions ----------------------------------------------------------------------------------

    async def signal(self, unit: Unit, sig: int, *, user: bool = True) -> None:
        supervision = unit.supervision
        if supervision is not None and user:
            unit.record.manually_stopped = True
            stop = sig in (unit.record.stop_signal, signal.SIGKILL)
            supervision.stop_requested(cancel=stop)
            handle = await supervision.current_handle()
            container = getattr(handle, "container", None)
        else:
            container = unit.container
        if container is not None and unit.record.state in ("running", "paused"):
            if unit.record.state == "paused":
                self._thaw(unit)
            if isinstance(container, AdoptedContainer):
                # not our child: its status cannot be read; the signal that ends it is the best guess
                container.lost_status = ExitStatus(128 + sig, sig)
            container.signal(sig)

    async def wait(self, unit: Unit) -> ExitStatus | None:
        while unit.record.state in _LIVE or unit.supervision is not None:
            await unit.changed.wait()
        return unit.last_exit

    def pause(self, unit: Unit) -> bool:
        if unit.record.state != "running":
            return False
        with contextlib.suppress(CgroupError):
            if Cgroup.load(unit.record.id).freeze():
                unit.record.state = "paused"
                self._changed(unit)
                return True
        return False

    def unpause(self, unit: Unit) -> bool:
        if unit.record.state != "paused":
            return False
        self._thaw(unit)
        unit.record.state = "running"
        self._changed(unit)
        return True

    def _thaw(self, unit: Unit) -> None:
        with contextlib.suppress(CgroupError):
            Cgroup.load(unit.record.id).thaw()

    async def rename(self, unit: Unit, name: str) -> None:
        old = unit.record.name
        unit.record.name = name
        self._gone(unit, old)
        self._changed(unit)

    async def remove(self, unit: Unit, *, volumes: bool = False) -> None:
        if unit.record.state in _LIVE:
            raise SupervisorError(f"container {unit.record.name} is {unit.record.state}: stop it first")
        record = unit.record
        self.tables.remove_container(record.id)
        if unit.held_ports is not None:
            unit.held_ports.close()
            unit.held_ports = None

        def sync() -> None:  # one worker thread for all of it: each hop waited for a busy trio loop
            self.networks.release_blocking(record.name)
            if not unit.cgroup_removed:  # left by a run nobody saw end (a crash): 20 syscalls otherwise
                with contextlib.suppress(CgroupError, OSError):
                    Cgroup.load(record.id).destroy()
            for volume in [*record.named_volumes, *record.anonymous_volumes.values()]:
                with contextlib.suppress(Exception):
                    self.volumes.release(volume, record.id)
            if volumes:
                for volume in record.anonymous_volumes.values():
                    self.volumes.remove(volume, missing_ok=True)
            trash.discard(self.layout, self.layout.container_dir(record.id))  # `_empty_trash` deletes it

        await trio.to_thread.run_sync(sync)
        self._discarded.set()
        for config, _ in unit.launch.networks:
            if config.external:  # never removed by `down`: forget it (and put its bridge's sysctls back)
                self._handles.pop(config.name, None)
                await self.networks.remove_network_if_unused(config.name)
        self.units.pop(record.id, None)
        self._gone(unit)
        logger().info("container.removed", container=record.name)


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _volume_labels(project: Project, key: str) -> dict[str, str]:
    return {"com.docker.compose.project": project.name, "com.docker.compose.volume": key}


# -- one run ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _PublishedPort:
    """A port as a record keeps it, in the shape of the spec's Port (network.ports.PortLike)."""

    target: int
    published: str | None
    host_ip: str | None
    protocol: str


def _recorded_port(text: str) -> _PublishedPort:
    """`127.0.0.1:40123->443/tcp` (or `[::1]:80->80/tcp`) as a request for that exact host port."""
    host, _, rest = text.partition("->")
    address, _, port = host.rpartition(":")
    target, _, protocol = rest.partition("/")
    return _PublishedPort(target=int(target), published=port, host_ip=address.strip("[]"), protocol=protocol)


class _FirstStart:
    """Stands in for a trio TaskStatus: Supervision.run calls `started` once the container runs."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: Exception | None = None

    def started(self, value: object = None) -> None:
        self.done.set()


class _Scopes:
    """The cancel scopes of one run's tasks (its DNS server, the tasks beside it): `cancel` ends all."""

    def __init__(self) -> None:
        self.scopes: list[trio.CancelScope] = []
        self.cancelled = False

    def new(self) -> trio.CancelScope:
        scope = trio.CancelScope()
        if self.cancelled:
            scope.cancel()
        self.scopes.append(scope)
        return scope

    def cancel(self) -> None:
        self.cancelled = True
        for scope in self.scopes:
            scope.cancel()


class _UnitProbe:
    """The healthcheck's probe, run in whatever run of the container is current."""

    def __init__(self, runtime: Runtime, unit: Unit) -> None:
        self.runtime = runtime
        self.unit = unit

    async def run(self, argv: Sequence[str], output: Any) -> int:
        container = self.unit.container
        if container is None:
            raise SupervisorError("the container is not running")
        return await RuntimeProbe(self.runtime, container).run(argv, output)


class _Starter:
    def __init__(self, supervisor: Supervisor, unit: Unit, adopted: Container | None) -> None:
        self.supervisor = supervisor
        self.unit = unit
        self.adopted = adopted

    async def start(self) -> _RunHandle:
        adopted, self.adopted = self.adopted, None
        return await self.supervisor.run_once(self.unit, adopted)


class _RunHandle:
    """One run: the process, and the tasks beside it (pumps, DNS, ports, healthcheck) until it ends."""

    def __init__(
        self,
        supervisor: Supervisor,
        unit: Unit,
        container: Container,
        cgroup: Cgroup | None,
        reads: dict[str, int],
        scope: _Scopes,
        *,
        adopted: bool = False,
    ) -> None:
        self.adopted = adopted
        self.supervisor = supervisor
        self.unit = unit
        self.container = container
        self.cgroup = cgroup
        self.reads = reads
        self.scope = scope
        self.pumps_done = trio.Event()
        self.finished = trio.Event()
        self._status: ExitStatus | None = None

    def signal(self, sig: int) -> None:
        self.container.signal(sig)

    async def beside(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        unit = self.unit
        record = unit.record
        writer = LogWriter(Path(record.log_path), unit.launch.logging) if record.log_path else None
        try:
            with self.scope.new():
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pumps, writer)
                    if unit.launch.ports and record.networks:
                        await nursery.start(self._ports)
                    if unit.health is not None:
                        health = unit.health
                        fresh = True
                        if self.adopted and record.health and health.status is None:
                            # a killed supervisor's container: its health carries on from the record
                            health.status = HealthStatus(record.health)
                            health.generation = unit.generation  # the status belongs to this run
                            fresh = False
                        started = trio.current_time()
                        await nursery.start(functools.partial(health.run, started, fresh=fresh))
                    task_status.started()
                    await trio.sleep_forever()
        finally:
            if writer is not None:
                writer.close()

    async def _pumps(self, writer: LogWriter | None) -> None:
        try:
            async with trio.open_nursery() as nursery:
                for stream, fd in self.reads.items():
                    nursery.start_soon(pump, fd, stream, writer)
                if self.container.terminal is not None:
                    nursery.start_soon(pump, self.container.terminal, "stdout", writer)
        finally:
            for fd in self.reads.values():
                os.close(fd)
            self.reads = {}
            self.pumps_done.set()

    async def _ports(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        unit, sup = self.unit, self.supervisor
        record = unit.record
        if unit.held_ports is None:
            ports: Sequence[Any] = unit.launch.ports
            if self.adopted and record.ports:  # the host ports it has (an ephemeral one stays the same)
                ports = [_recorded_port(text) for text in record.ports]
            wanted = [ContainerPorts(container=record.name, service=record.service, ports=ports)]
            reservation = reserve(wanted, taken=(), dual_stack=True)
            unit.held_ports = reservation.take(record.name)
        held = unit.held_ports
        first = unit.launch.networks[0][0].name
        handle = await sup.network_handle(unit.launch.networks[0][0])
        record.ports = [str(b) for b in held.bindings]
        sup.records.save(record)
        await sup.publisher.serve(
            held, ipaddress.IPv4Address(record.networks[first]), handle.bridge, task_status=task_status
        )

    async def wait(self) -> ExitStatus:
        if self._status is not None:
            await self.finished.wait()
            return self._status
        status = await self.container.wait()
        self._status = status
        with trio.CancelScope(shield=True):
            with trio.move_on_after(2):
                await self.pumps_done.wait()  # the output the process wrote last
            self.scope.cancel()
            if self.container.terminal is not None:  # a `tty: true` service's pty (the pump read a dup)
                self.container.terminal.close()
            await self.supervisor._ended(self.unit, self, status)
        self.finished.set()
        return status


# -- the executor's backends --------------------------------------------------------------------------------


class _Images:
    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    async def build(self, service: str, image: str) -> None:
        raise SupervisorError(f"image {image} must be built before the supervisor starts the service")

    async def pull(self, service: str, image: str) -> None:
        from composer.image.base import ensure_base_image, is_base_reference

        if not is_base_reference(image):
            raise SupervisorError(
                f"image {image} is not in the store and no registry is reachable: build it, or load it "
                "(composer image load)"
            )
        store = self.supervisor.images
        layout = self.supervisor.layout

        def progress(line: str) -> None:
            logger().info("image.pull", image=image, line=line)

        await trio.to_thread.run_sync(
            lambda: ensure_base_image(store, image, layout=layout, progress=progress)
        )

    async def remove(self, image: str) -> None:
        store = self.supervisor.images
        with contextlib.suppress(ComposerError):
            await trio.to_thread.run_sync(lambda: store.remove(image))


class _Networks:
    def __init__(self, supervisor: Supervisor, project: Project) -> None:
        self.supervisor = supervisor
        self.project = project

    async def create(self, key: str, name: str) -> None:
        await self.supervisor.network_handle(NetworkConfig.from_compose(self.project.network(key)))

    async def remove(self, key: str, name: str) -> None:
        self.supervisor._handles.pop(name, None)
        await self.supervisor.networks.remove_network_if_unused(name)


class _Volumes:
    def __init__(self, supervisor: Supervisor, project: Project) -> None:
        self.supervisor = supervisor
        self.project = project

    async def create(self, key: str, name: str) -> None:
        top = self.project.volume(key)
        store = self.supervisor.volumes
        labels = {**dict(top.labels), **_volume_labels(self.project, key)}
        await trio.to_thread.run_sync(lambda: store.ensure(name, top.driver, dict(top.driver_opts), labels))

    async def remove(self, key: str, name: str) -> None:
        store = self.supervisor.volumes
        await trio.to_thread.run_sync(lambda: store.remove(name, missing_ok=True))


class _Containers:
    def __init__(
        self,
        supervisor: Supervisor,
        project: Project,
        environ: Mapping[str, str],
        compose_files: Sequence[str],
    ) -> None:
        self.supervisor = supervisor
        self.project = project
        self.environ = environ
        self.compose_files = compose_files

    def states(self) -> Sequence[ContainerChange]:
        return self.supervisor.states()

    def subscribe(self, listener: ContainerListener) -> Callable[[], None]:
        return self.supervisor.subscribe(listener)

    def _unit(self, ref: ContainerRef) -> Unit:
        unit = self.supervisor.units.get(ref.id) or self.supervisor.unit(ref.name)
        if unit is None:
            raise SupervisorError(f"no such container: {ref.name}")
        return unit

    async def lookup(self, key: str) -> ContainerRef | None:
        unit = self.supervisor.unit(key)
        return unit.ref if unit is not None else None

    async def create(
        self, service: Service, number: int, name: str, *, replaces: ContainerRef | None = None
    ) -> ContainerRef:
        old = self.supervisor.units.get(replaces.id) if replaces is not None else None
        sup = self.supervisor
        record, launch = await trio.to_thread.run_sync(
            lambda: sup.prepare(
                self.project, service, number, name, self.environ, old, compose_files=self.compose_files
            )
        )
        return sup.register(record, launch).ref

    async def start(self, container: ContainerRef) -> None:
        await self.supervisor.start(self._unit(container))

    async def signal(self, container: ContainerRef, sig: int) -> None:
        unit = self.supervisor.units.get(container.id)
        if unit is not None:
            await self.supervisor.signal(unit, sig)

    async def wait(self, container: ContainerRef) -> ExitStatus | None:
        unit = self.supervisor.units.get(container.id)
        return await self.supervisor.wait(unit) if unit is not None else None

    async def rename(self, container: ContainerRef, name: str) -> ContainerRef:
        unit = self._unit(container)
        await self.supervisor.rename(unit, name)
        return unit.ref

    async def remove(self, container: ContainerRef, *, volumes: bool = False) -> None:
        unit = self.supervisor.units.get(container.id)
        if unit is not None:
            await self.supervisor.remove(unit, volumes=volumes)
