"""Do what the plan decided (DESIGN.md rule 2): run a `Plan`'s operations through the `Backends`.

The executor decides nothing about *what* to do; it owns only *how*: order, parallelism, waits,
deadlines and what to report. The contract is the plan's (composer.engine.plan):

- levels run in increasing order; the operations of one level run in parallel, bounded by `parallel`
  backend calls at a time (COMPOSE_PARALLEL_LIMIT); the operations on one container run in plan order;
- before the container operations of a service that starts or restarts a container, `execute_up` waits
  for the service's `depends_on` conditions (`depends.wait_for_dependencies`) on a `StateBoard` fed by
  the backend's container changes. A dependency is waited for only if the plan keeps or runs a
  container of it: a service left out by `--no-deps` or scaled to 0 is not (research §2.9);
- recreate, as Compose (DC pkg/compose/convergence.go recreateContainer): create the new container as
  `<old id[:12]>_<name>`, stop the old one, remove it, rename the new one to `<name>`; the start is the
  plan's next operation;
- stop: the container's stop signal, then SIGKILL after its grace period (or `timeout`, `-t`), then at
  most `KILL_WAIT` more for it to go (research §2.12). Restart = stop, then start.

Failures. The first failing operation ends the run with one `ExecutionError` line naming the service
(or resource), the stage and the cause: the level's other operations are cancelled and no later level
starts. What this run already created or started is left as it is, as Compose does (DC up.go has no
rollback): the containers started keep running, and `composer down` (or the next `up`) takes them from
there. `execute_down` instead goes on past a failure to the end (removing everything it can, since
`down` is how people clean up) and then raises the first failure, counting the others.

Cancellation. When `execute_up` is cancelled (the first Ctrl-C), it stops the containers it started or
created in this run, in reverse levels, containers of one level in parallel, each with its stop signal
and grace period, in a shielded scope whose every wait has a deadline, then re-raises. Setting `force`
(the second Ctrl-C; `Interrupt` does both) sends SIGKILL to whatever is still waiting out its grace.

Events. Every operation and every container state change goes to `on_event` as an `ExecutionEvent`
(time from trio's clock) and to the debug log.
"""

from __future__ import annotations

import contextlib
import math
import signal
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import trio

from composer.engine.backends import Backends, ContainerChange, ContainerRef, Containers
from composer.engine.depends import StateBoard, wait_for_dependencies
from composer.engine.plan import (
    BuildImage,
    ContainerOperation,
    CreateContainer,
    CreateNetwork,
    CreateVolume,
    KeepContainer,
    Operation,
    Plan,
    PullImage,
    RecreateContainer,
    RemoveContainer,
    RemoveImage,
    RemoveNetwork,
    RemoveVolume,
    RestartContainer,
    StartContainer,
)
from composer.errors import ComposerError, one_line
from composer.log import logger
from composer.spec.model import Dependency, Project

__all__ = [
    "DEFAULT_PARALLEL",
    "KILL_WAIT",
    "ExecutionError",
    "ExecutionEvent",
    "Interrupt",
    "execute_down",
    "execute_up",
    "temporary_name",
]

DEFAULT_PARALLEL = 64  # backend calls at a time when no limit is given
KILL_WAIT = 10.0  # after SIGKILL, how long a container may take to go before the stop fails

EventSink = Callable[["ExecutionEvent"], None]
_T = TypeVar("_T")


class ExecutionError(ComposerError):
    """One failed operation: `service web: start: <cause>` (or `network p_default: create: ...`)."""

    def __init__(self, subject: str, stage: str, cause: str, *, service: str | None = None) -> None:
        super().__init__(one_line(f"{subject}: {stage}: {cause}"))
        self.subject = subject
        self.stage = stage
        self.cause = cause
        self.service = service


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionEvent:
    """A change: `action` on `container` (a container's name, or a network/volume/image name) of
    `service`, now `status`.

    Actions: create, recreate, start, restart, stop, kill, remove, rename, build, pull, wait (for
    depends_on), and `state` for a container's own changes (status `running`, `healthy`, `exited` ...).
    Statuses of actions: `working`, `done`, `failed` (with `detail`), `skipped` (nothing to do),
    `cancelled`; `wait` may also report `warning` (an optional dependency failed). `interrupt` brackets
    the stop after a cancellation."""

    at: float
    action: str
    status: str
    service: str | None = None
    container: str | None = None
    detail: str = ""


@dataclass(slots=True)
class Interrupt:
    """Ctrl-C for an `up`: the first `interrupt()` cancels `scope` (graceful stop), the next sets
    `force` (kill). Run `execute_up(..., force=i.force)` inside `with i.scope:`."""

    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    force: trio.Event = field(default_factory=trio.Event)

    def interrupt(self) -> None:
        if not self.scope.cancel_called:
            self.scope.cancel()
        else:
            self.force.set()


def temporary_name(replaced: ContainerRef | str, name: str) -> str:
    """The name a recreated container is created under: `<old id[:12]>_<name>` (Compose's)."""
    old_id = replaced.id if isinstance(replaced, ContainerRef) else replaced
    return f"{old_id[:12]}_{name}"


def _cause(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return one_line(str(exc) or type(exc).__name__)


class _Failed(Exception):
    """An operation failed and was reported; unwinds a chain (never leaves the executor)."""


class _Run:
    """The state of one execution: the backends, the reporting, the failures, what was started."""

    def __init__(
        self,
        backends: Backends,
        *,
        parallel: int | None,
        on_event: EventSink | None,
        timeout: float | None,
        force: trio.Event | None,
    ) -> None:
        self.backends = backends
        self.containers: Containers = backends.containers
        self.limiter = trio.CapacityLimiter(parallel if parallel and parallel > 0 else DEFAULT_PARALLEL)
        self.on_event = on_event
        self.timeout = timeout
        self.force = force if force is not None else trio.Event()
        self.failures: list[ExecutionError] = []
        self.refs: dict[str, ContainerRef] = {}  # by name: created, looked up
        self.touched: dict[str, tuple[int, ContainerRef]] = {}  # by id: (level, ref) created/started here
        self.board = StateBoard()

    # -- reporting ---------------------------------------------------------------------------------

    def emit(
        self,
        action: str,
        status: str,
        *,
        service: str | None = None,
        container: str | None = None,
        detail: str = "",
    ) -> None:
        event = ExecutionEvent(
            at=trio.current_time(),
            action=action,
            status=status,
            service=service,
            container=container,
            detail=detail,
        )
        logger().debug(
            "executor.event",
            action=action,
            status=status,
            service=service,
            container=container,
            detail=detail or None,
        )
        if self.on_event is not None:
            self.on_event(event)

    def on_change(self, change: ContainerChange) -> None:
        if change.state is None:
            self.board.remove(change.service, change.name)
            self.emit("state", "gone", service=change.service, container=change.name)
            return
        self.board.update(change.service, change.state)
        state = change.state
        status = state.status
        health = state.current_health()
        if status == "running" and health is not None:
            status = health
        detail = f"exit {state.exit_code}" if state.exit_code is not None and status == "exited" else ""
        self.emit("state", status, service=change.service, container=change.name, detail=detail)

    def fail(self, subject: str, stage: str, exc: BaseException | str, *, service: str | None) -> _Failed:
        cause = exc if isinstance(exc, str) else _cause(exc)
        error = ExecutionError(subject, stage, cause, service=service)
        self.failures.append(error)
        return _Failed(error.message)

    # -- one backend call --------------------------------------------------------------------------

    async def call(
        self,
        action: str,
        fn: Callable[[], Awaitable[_T]],
        *,
        subject: str,
        service: str | None,
        container: str | None,
    ) -> _T:
        """One backend call under the parallel limit, reported as `working` then `done`/`failed`."""
        async with self.limiter:
            self.emit(action, "working", service=service, container=container)
            try:
                result = await fn()
            except trio.Cancelled:
                self.emit(action, "cancelled", service=service, container=container)
                raise
            except Exception as exc:
                self.emit(action, "failed", service=service, container=container, detail=_cause(exc))
                raise self.fail(subject, action, exc, service=service) from exc
        self.emit(action, "done", service=service, container=container)
        return result

    # -- containers --------------------------------------------------------------------------------

    async def ref(self, op: ContainerOperation, key: str | None = None) -> ContainerRef | None:
        found = self.refs.get(op.name) if key is None else None
        if found is None:
            found = await self.containers.lookup(key or op.name)
            if found is not None:
                self.refs[found.name] = found
        return found

    def grace(self, ref: ContainerRef) -> float:
        return ref.stop_grace if self.timeout is None else self.timeout

    async def _exited(self, ref: ContainerRef, within: float, *, forceable: bool) -> bool:
        """Whether the container went within `within` s (cut short by `force` when `forceable`)."""
        gone = False

        async def wait() -> None:
            nonlocal gone
            await self.containers.wait(ref)
            gone = True
            nursery.cancel_scope.cancel()

        async def forced() -> None:
            await self.force.wait()
            nursery.cancel_scope.cancel()

        with trio.move_on_after(within):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait)
                if forceable:
                    nursery.start_soon(forced)
        return gone

    async def stop(self, ref: ContainerRef, subject: str) -> None:
        """Stop signal -> grace -> SIGKILL -> KILL_WAIT, as Docker's `stop`."""
        service, name = ref.service, ref.name
        async with self.limiter:
            self.emit("stop", "working", service=service, container=name)
            try:
                if not self.force.is_set():
                    await self.containers.signal(ref, ref.stop_signal)
                    if await self._exited(ref, self.grace(ref), forceable=True):
                        self.emit("stop", "done", service=service, container=name)
                        return
                    self.emit(
                        "kill",
                        "working",
                        service=service,
                        container=name,
                        detail="forced" if self.force.is_set() else "grace period over",
                    )
                await self.containers.signal(ref, int(signal.SIGKILL))
                if not await self._exited(ref, KILL_WAIT, forceable=False):
                    message = f"container {name} did not exit {KILL_WAIT:g}s after SIGKILL"
                    self.emit("stop", "failed", service=service, container=name, detail=message)
                    raise self.fail(subject, "stop", message, service=service)
            except Exception as exc:
                if isinstance(exc, _Failed):
                    raise
                self.emit("stop", "failed", service=service, container=name, detail=_cause(exc))
                raise self.fail(subject, "stop", exc, service=service) from exc
        self.emit("stop", "done", service=service, container=name, detail="killed")

    async def remove_container(self, op: RemoveContainer) -> None:
        subject = f"service {op.service}"
        ref = await self.ref(op, op.container_id)
        if ref is None:
            self.emit("remove", "skipped", service=op.service, container=op.name, detail="already gone")
            return
        await self.stop(ref, subject)
        await self.call(
            "remove",
            lambda: self.containers.remove(ref, volumes=op.remove_volumes),
            subject=subject,
            service=op.service,
            container=op.name,
        )
        self.refs.pop(ref.name, None)

    async def container_op(self, op: ContainerOperation, project: Project | None, level: int) -> None:
        subject = f"service {op.service}"
        service, name = op.service, op.name
        c = self.containers
        if isinstance(op, KeepContainer):
            return
        if isinstance(op, RemoveContainer):
            await self.remove_container(op)
            return
        if isinstance(op, CreateContainer | RecreateContainer):
            assert project is not None
            model = project.service(service)
            if isinstance(op, CreateContainer):
                created = await self.call(
                    "create",
                    lambda: c.create(model, op.number, name),
                    subject=subject,
                    service=service,
                    container=name,
                )
                self.refs[name] = created
                self.touched[created.id] = (level, created)
                return
            old = await self.ref(op, op.replaces)
            temp = temporary_name(op.replaces, name)
            self.emit("recreate", "working", service=service, container=name)
            new = await self.call(
                "create",
                lambda: c.create(model, op.number, temp, replaces=old),
                subject=subject,
                service=service,
                container=temp,
            )
            self.touched[new.id] = (level, new)
            if old is not None:
                await self.stop(old, subject)
                await self.call(
                    "remove", lambda: c.remove(old), subject=subject, service=service, container=old.name
                )
            renamed = await self.call(
                "rename", lambda: c.rename(new, name), subject=subject, service=service, container=temp
            )
            self.refs[name] = renamed
            self.touched[renamed.id] = (level, renamed)
            self.emit("recreate", "done", service=service, container=name)
            return
        if isinstance(op, StartContainer | RestartContainer):
            ref = await self.ref(op)
            if ref is None:
                self.emit(op.verb, "failed", service=service, container=name, detail="no such container")
                raise self.fail(subject, op.verb, f"no such container: {name}", service=service)
            self.touched[ref.id] = (level, ref)
            if isinstance(op, RestartContainer):
                self.emit("restart", "working", service=service, container=name)
                await self.stop(ref, subject)
            await self.call("start", lambda: c.start(ref), subject=subject, service=service, container=name)
            if isinstance(op, RestartContainer):
                self.emit("restart", "done", service=service, container=name)
            return
        raise AssertionError(f"unknown container operation {op!r}")

    # -- everything else ---------------------------------------------------------------------------

    async def resource_op(self, op: Operation) -> None:
        b = self.backends
        if isinstance(op, CreateNetwork):
            await self.call(
                "create",
                lambda: b.networks.create(op.key, op.name),
                subject=f"network {op.name}",
                service=None,
                container=op.name,
            )
        elif isinstance(op, RemoveNetwork):
            await self.call(
                "remove",
                lambda: b.networks.remove(op.key, op.name),
                subject=f"network {op.name}",
                service=None,
                container=op.name,
            )
        elif isinstance(op, CreateVolume):
            await self.call(
                "create",
                lambda: b.volumes.create(op.key, op.name),
                subject=f"volume {op.name}",
                service=None,
                container=op.name,
            )
        elif isinstance(op, RemoveVolume):
            await self.call(
                "remove",
                lambda: b.volumes.remove(op.key, op.name),
                subject=f"volume {op.name}",
                service=None,
                container=op.name,
            )
        elif isinstance(op, BuildImage):
            await self.call(
                "build",
                lambda: b.images.build(op.service, op.image),
                subject=f"service {op.service}",
                service=op.service,
                container=op.image,
            )
        elif isinstance(op, PullImage):
            await self.call(
                "pull",
                lambda: b.images.pull(op.service, op.image),
                subject=f"service {op.service}",
                service=op.service,
                container=op.image,
            )
        elif isinstance(op, RemoveImage):
            await self.call(
                "remove",
                lambda: b.images.remove(op.image),
                subject=f"image {op.image}",
                service=None,
                container=op.image,
            )
        else:
            raise AssertionError(f"unknown operation {op!r}")

    # -- levels ------------------------------------------------------------------------------------

    async def run_level(
        self,
        level: int,
        operations: Sequence[Operation],
        *,
        project: Project | None,
        waits: Mapping[str, Sequence[Dependency]],
        cancel_on_failure: bool = True,
    ) -> None:
        """The level's operations in parallel; one container's in order; a failure cancels the rest
        (unless not `cancel_on_failure`)."""
        singles: list[Operation] = []
        services: dict[str, dict[str, list[ContainerOperation]]] = {}
        for op in operations:
            if isinstance(op, ContainerOperation):
                services.setdefault(op.service, {}).setdefault(op.name, []).append(op)
            else:
                singles.append(op)

        async with trio.open_nursery() as nursery:

            async def guarded(work: Callable[..., Awaitable[None]], *args: object) -> None:
                try:
                    await work(*args)
                except _Failed:
                    if cancel_on_failure:
                        nursery.cancel_scope.cancel()

            async def chain(ops: Sequence[ContainerOperation]) -> None:
                for op in ops:
                    await self.container_op(op, project, level)

            async def service_ops(service: str, chains: Mapping[str, list[ContainerOperation]]) -> None:
                deps = waits.get(service, ())
                if deps:
                    await self.wait_dependencies(service, deps)
                async with trio.open_nursery() as inner:
                    for ops in chains.values():
                        inner.start_soon(guarded, chain, ops)

            for op in singles:
                nursery.start_soon(guarded, self.resource_op, op)
            for service, chains in services.items():
                nursery.start_soon(guarded, service_ops, service, chains)

    async def wait_dependencies(self, service: str, deps: Sequence[Dependency]) -> None:
        names = ", ".join(d.service for d in deps)
        self.emit("wait", "working", service=service, detail=names)

        def warn(message: str) -> None:
            self.emit("wait", "warning", service=service, detail=message)

        try:
            await wait_for_dependencies(self.board, service, deps, warn=warn)
        except ComposerError as exc:
            self.emit("wait", "failed", service=service, detail=exc.message)
            raise self.fail(f"service {service}", "depends_on", exc, service=service) from exc
        self.emit("wait", "done", service=service)

    async def stop_touched(self) -> None:
        """Stop what this run created or started: reverse levels, one level's containers in parallel."""
        by_level: dict[int, list[ContainerRef]] = {}
        for level, ref in self.touched.values():
            by_level.setdefault(level, []).append(ref)
        for level in sorted(by_level, reverse=True):
            async with trio.open_nursery() as nursery:
                for ref in sorted(by_level[level], key=lambda r: r.name):
                    nursery.start_soon(self.stop_quietly, ref)

    async def stop_quietly(self, ref: ContainerRef) -> None:
        with contextlib.suppress(_Failed):  # reported already; the others still stop
            await self.stop(ref, f"service {ref.service}")


def _dependency_waits(plan: Plan, project: Project) -> dict[str, tuple[Dependency, ...]]:
    """Per service that starts or restarts a container: the depends_on entries to wait for, those on
    services the plan keeps or runs containers of (a service left out or scaled to 0 is not waited for)."""
    present = {
        op.service
        for op in plan.operations
        if isinstance(op, ContainerOperation) and not isinstance(op, RemoveContainer)
    }
    starting = {op.service for op in plan.operations if isinstance(op, StartContainer | RestartContainer)}
    waits: dict[str, tuple[Dependency, ...]] = {}
    for name in sorted(starting):
        deps = tuple(d for d in project.service(name).depends_on if d.service in present)
        if deps:
            waits[name] = deps
    return waits


def _raise_first(failures: Iterable[ExecutionError]) -> None:
    failures = list(failures)
    if not failures:
        return
    first = failures[0]
    if len(failures) == 1:
        raise first
    more = len(failures) - 1
    raise ExecutionError(
        first.subject,
        first.stage,
        f"{first.cause} (and {more} more failure{'s' if more > 1 else ''})",
        service=first.service,
    )


async def execute_up(
    plan: Plan,
    backends: Backends,
    *,
    project: Project,
    wait_conditions: bool = True,
    on_event: EventSink | None = None,
    timeout: float | None = None,
    parallel: int | None = None,
    force: trio.Event | None = None,
) -> None:
    """Run an `up` (or `create`) plan. `timeout`: the stop grace for recreates, restarts and a
    cancellation (`-t`; None = each container's own). `wait_conditions=False` skips the depends_on waits.
    Raises `ExecutionError` for the first failure (see the module's docstring for what stays)."""
    run = _Run(backends, parallel=parallel, on_event=on_event, timeout=timeout, force=force)
    for change in backends.containers.states():
        if change.state is not None:
            run.board.update(change.service, change.state)
    waits = _dependency_waits(plan, project) if wait_conditions else {}
    unsubscribe = backends.containers.subscribe(run.on_change)
    try:
        for level, operations in zip(_level_numbers(plan), plan.levels(), strict=True):
            await run.run_level(level, operations, project=project, waits=waits)
            if run.failures:
                break
    except BaseException:
        # cancelled (Ctrl-C): stop what this run started, within deadlines, then go on unwinding
        with trio.CancelScope(shield=True):
            run.emit("interrupt", "working", detail="stopping what this run started")
            with trio.move_on_after(_stop_deadline(run)):
                await run.stop_touched()
            run.emit("interrupt", "done")
        raise
    finally:
        unsubscribe()
    _raise_first(run.failures[:1])


def _level_numbers(plan: Plan) -> list[int]:
    return sorted({op.level for op in plan.operations})


def _stop_deadline(run: _Run) -> float:
    """An upper bound for the shielded stop: per level, its longest grace plus the kill wait, once per
    round of `parallel` stops."""
    by_level: dict[int, list[float]] = {}
    for level, ref in run.touched.values():
        by_level.setdefault(level, []).append(run.grace(ref))
    rounds = (math.ceil(len(graces) / run.limiter.total_tokens) for graces in by_level.values())
    total = sum(n * (max(graces) + KILL_WAIT) for n, graces in zip(rounds, by_level.values(), strict=True))
    return total + 1.0


async def execute_down(
    plan: Plan,
    backends: Backends,
    *,
    stop_timeout: float | None = None,
    on_event: EventSink | None = None,
    parallel: int | None = None,
    force: trio.Event | None = None,
) -> None:
    """Run a `down` plan (or the removals of any plan): each level in order, its operations in parallel;
    every container stopped (stop signal, `stop_timeout` or its grace, SIGKILL) then removed. Goes on
    after a failure and raises the first one at the end. `force` set: SIGKILL without the grace."""
    run = _Run(backends, parallel=parallel, on_event=on_event, timeout=stop_timeout, force=force)
    for level, operations in zip(_level_numbers(plan), plan.levels(), strict=True):
        await run.run_level(level, operations, project=None, waits={}, cancel_on_failure=False)
    _raise_first(run.failures)
