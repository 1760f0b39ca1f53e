"""The project's control socket: the CLI's requests to the project's supervisor, answered as a stream.

The supervisor of project P listens on `<root>/projects/P/supervisor.sock` (mode 0600: root's own
commands only) and writes its pid to `supervisor.pid` beside it while it serves. The wire format and
the client are in composer.engine.protocol.

Requests (`op`): `up` (a Project, its environment, UpOptions, timeout, wait), `down`, `stop`,
`start`, `restart`, `kill`, `pause`, `unpause`, `rm` (services), `watch` (container changes until the
client goes). Requests that change things run one at a time. The supervisor leaves when no container
runs or waits for a restart and no client is connected (`LINGER` after the last one).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import secrets
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from composer.engine.backends import ContainerChange
from composer.engine.depends import Condition, DependencyTimeout, StateBoard, wait_for_dependencies
from composer.engine.executor import ExecutionEvent, execute_down, execute_up
from composer.engine.plan import Plan, UpOptions, plan_down, plan_up
from composer.engine.protocol import Request, receive_request, send_frame
from composer.engine.records import observe
from composer.engine.supervisor import Supervisor, Unit
from composer.errors import ComposerError, one_line
from composer.log import logger
from composer.spec.graph import start_levels
from composer.spec.model import Dependency, Project

__all__ = ["LINGER", "serve"]

LINGER = 1.0  # seconds idle before the supervisor leaves
# Requests that wait (for dependencies, healthchecks) end when their client goes, as Ctrl-C ends them in
# Compose (`up` then stops what it started); the others (down, stop, kill, rm) finish their work.
_CANCELLED_BY_THE_CLIENT = frozenset({"up", "start", "restart"})


# -- the server ----------------------------------------------------------------------------------------------


class _Server:
    def __init__(self, supervisor: Supervisor, nursery: trio.Nursery) -> None:
        self.supervisor = supervisor
        self.nursery = nursery
        self.clients = 0
        self.busy = 0
        self.activity = trio.Event()

    def _poke(self) -> None:
        self.activity.set()
        self.activity = trio.Event()

    async def handle(self, stream: trio.SocketStream) -> None:
        self.clients += 1
        self._poke()
        try:
            async with stream:
                request, fds = await receive_request(stream)
                if not isinstance(request, Request):
                    for fd in fds:
                        os.close(fd)
                    return

                lock = trio.Lock()

                async def send(message: dict[str, Any], fds: tuple[int, ...] = ()) -> None:
                    async with lock:  # a frame is never interleaved with another
                        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                            await send_frame(stream, message, fds)

                if request.op == "watch":
                    await self._until_gone(stream, self.watch(send))
                    return
                if request.op == "run":
                    await self._until_gone(stream, self.run_one_off(request, fds, send))
                    return
                for fd in fds:
                    os.close(fd)
                if request.op in _CANCELLED_BY_THE_CLIENT:
                    answer: list[tuple[int, str | None]] = []

                    async def work() -> None:
                        answer.append(await self.dispatch(request, send))

                    await self._until_gone(stream, work())
                    if not answer:
                        return  # the client went away (Ctrl-C): the operation was cancelled
                    code, error = answer[0]
                else:
                    code, error = await self.dispatch(request, send)
                await send({"result": code, "error": error})
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception as exc:  # a request that fails unexpectedly must not take the supervisor down
            logger().exception("control.request_failed", error=str(exc))
        finally:
            self.clients -= 1
            self._poke()

    async def _until_gone(self, stream: trio.SocketStream, work: Awaitable[None]) -> None:
        """Run `work` until the client closes its end (a watcher sends nothing more after its request)."""
        async with trio.open_nursery() as nursery:

            async def eof() -> None:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    while await stream.receive_some(4096):
                        pass
                nursery.cancel_scope.cancel()

            async def run() -> None:
                await work
                nursery.cancel_scope.cancel()

            nursery.start_soon(eof)
            nursery.start_soon(run)

    async def dispatch(
        self, request: Request, send: Callable[[dict[str, Any]], Awaitable[None]]
    ) -> tuple[int, str | None]:
        if request.op == "ping":
            return 0, None
        handler = getattr(self, f"op_{request.op}", None)
        if handler is None:
            return 1, f"unknown request {request.op!r}"
        # one sender: the handler's messages go through a channel to one forwarding task, drained to
        # the end before the result is sent
        sender, receiver = trio.open_memory_channel[dict[str, Any]](math.inf)

        def emit(message: dict[str, Any]) -> None:
            with contextlib.suppress(trio.ClosedResourceError):
                sender.send_nowait(message)

        async def forward() -> None:
            async for message in receiver:
                await send(message)

        async with self.supervisor.lock:
            self.busy += 1
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(forward)
                    try:
                        code = await handler(request, emit)
                        error = None
                    except* ComposerError as group:
                        code, error = 1, "; ".join(one_line(str(e)) for e in _leaves(group))
                    finally:
                        sender.close()
                return code, error
            finally:
                self.busy -= 1
                self._poke()

    async def watch(self, send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        """Stream container changes until the client goes."""
        send_channel, receive_channel = trio.open_memory_channel[ContainerChange](1024)

        def listener(change: ContainerChange) -> None:
            with contextlib.suppress(trio.WouldBlock):
                send_channel.send_nowait(change)

        unsubscribe = self.supervisor.subscribe(listener)
        try:
            await send({"watching": True})  # from here on, no change is missed
            for change in self.supervisor.states():
                await send({"change": _change(change)})
            async for change in receive_channel:
                await send({"change": _change(change)})
        finally:
            unsubscribe()

    async def run_one_off(
        self, request: Request, fds: list[int], send: Callable[..., Awaitable[None]]
    ) -> None:
        """`run`: a one-off container of the request's (already adapted) service. In the foreground it
        gets the client's descriptors as stdio, or with `tty` a pty whose master goes back to the client,
        and lives as long as the client's connection: a client that goes stops it (then removes it
        with --rm)."""
        sup = self.supervisor
        unit: Unit | None = None
        self.busy += 1
        try:
            error: str | None = None
            try:
                unit = await self._create_one_off(request, fds)
            except* ComposerError as group:  # a start's error comes out of nurseries in a group
                error = "; ".join(one_line(str(e)) for e in _leaves(group))
            finally:
                for fd in fds:
                    os.close(fd)
            if error is not None or unit is None:
                await send({"result": 1, "error": error or "the container did not start"})
                return
            terminal, unit.terminal = unit.terminal, None
            if terminal is not None:
                try:  # the client relays its terminal to it; ours closes (the client's end keeps it)
                    await send({"started": unit.record.name, "id": unit.record.id, "terminal": True},
                               (terminal.fd,))  # fmt: skip
                finally:
                    terminal.close()
            else:
                await send({"started": unit.record.name, "id": unit.record.id})
            if request.detach:
                await send({"result": 0, "error": None})
                return
            status = await sup.wait(unit)
            if request.remove:  # gone before the answer, as Compose's `run --rm` returns
                with trio.CancelScope(shield=True):
                    await sup.remove(unit, volumes=True)
            await send({"result": status.code if status else 0, "error": None})
        finally:
            with trio.CancelScope(shield=True):
                if unit is not None and not request.detach:
                    if unit.record.state in ("running", "paused", "restarting"):
                        await self._stop_one(unit, request.timeout, lambda _message: None)
                    if request.remove and unit.record.id in sup.units:
                        await sup.remove(unit, volumes=True)
                self.busy -= 1
                self._poke()

    async def _create_one_off(self, request: Request, fds: list[int]) -> Unit:
        from composer.runtime.spec import Stdio

        sup = self.supervisor
        project = _need_project(request)
        service = project.service(request.services[0])
        async with sup.lock:
            taken = [u.record.number for u in sup.units.values()
                     if u.record.one_off and u.record.service == service.name]  # fmt: skip
            name = request.name or f"{project.name}-{service.name}-run-{secrets.token_hex(6)}"
            if sup.unit(name) is not None:
                raise ComposerError(f"a container named {name} already exists")
            number = max(taken, default=0) + 1
            record, launch = await trio.to_thread.run_sync(
                lambda: sup.prepare(
                    project,
                    service,
                    number,
                    name,
                    request.environ,
                    None,
                    one_off=True,
                    compose_files=request.compose_files,
                )
            )
            unit = sup.register(record, launch)
            if request.tty and not request.detach:
                unit.relay_tty = True
                unit.launch = dataclasses.replace(
                    launch, spec=dataclasses.replace(launch.spec, tty=True, tty_size=request.tty_size)
                )
                unit.record.log_path = None
            elif len(fds) == 3 and not request.detach:
                unit.stdio = Stdio(stdin=fds[0], stdout=fds[1], stderr=fds[2])
                unit.record.log_path = None
            try:
                await sup.start(unit)
            except BaseException:
                with trio.CancelScope(shield=True):
                    await sup.remove(unit, volumes=True)
                raise
        return unit

    # -- operations ------------------------------------------------------------------------------------

    def _observed_names(self) -> tuple[list[str], list[str]]:
        sup = self.supervisor
        networks = [r.name for r in sup.networks.networks()]
        volumes = [v.name for v in sup.volumes.list()]
        return networks, volumes

    def _observe(self, project: Project) -> Any:
        networks, volumes = self._observed_names()
        return observe(project.name, [u.record for u in self.supervisor.units.values()], networks, volumes)

    def _images(self, project: Project) -> dict[str, str]:
        found = {}
        for service in project.services:
            image = self.supervisor.images.resolve(service.image_name) if service.image_name else None
            if image is not None:
                found[service.name] = image.id
        return found

    async def op_up(self, request: Request, emit: Callable[[dict[str, Any]], None]) -> int:
        project = _need_project(request)
        options = request.up or UpOptions()
        plan = plan_up(project, self._observe(project), images=self._images(project), options=options)
        _warnings(plan, emit)
        backends = self.supervisor.backends(project, request.environ, request.compose_files)
        await execute_up(plan, backends, project=project, on_event=_events(emit), timeout=request.timeout)
        if request.wait:
            await self._wait_ready(project, request, emit)
        return 0

    async def _wait_ready(
        self, project: Project, request: Request, emit: Callable[[dict[str, Any]], None]
    ) -> None:
        board = StateBoard()
        for change in self.supervisor.states():
            if change.state is not None:
                board.update(change.service, change.state)

        def on_change(change: ContainerChange) -> None:
            if change.state is None:
                board.remove(change.service, change.name)
            else:
                board.update(change.service, change.state)

        unsubscribe = self.supervisor.subscribe(on_change)
        try:
            chosen = set(request.up.services if request.up else ()) or {s.name for s in project.services}
            deps = [
                Dependency(service=s.name, condition=str(Condition.RUNNING_OR_HEALTHY))
                for s in project.services
                if s.name in chosen and s.replicas() > 0
            ]
            timeout = request.wait_timeout if request.wait_timeout and request.wait_timeout > 0 else None
            try:
                await wait_for_dependencies(
                    board, "up --wait", deps, timeout=timeout,
                    timeout_message=f"application not healthy after {timeout:g}s" if timeout else "",
                )  # fmt: skip
            except DependencyTimeout as exc:
                raise ComposerError(str(exc)) from None
        finally:
            unsubscribe()

    async def op_down(self, request: Request, emit: Callable[[dict[str, Any]], None]) -> int:
        project = _need_project(request)
        plan = plan_down(
            project,
            self._observe(project),
            remove_volumes=request.volumes,
            remove_orphans=request.remove_orphans,
            rmi=request.rmi,  # type: ignore[arg-type]
        )
        _warnings(plan, emit)
        backends = self.supervisor.backends(project, request.environ)
        await execute_down(plan, backends, stop_timeout=request.timeout, on_event=_events(emit))
        return 0

    def _select(self, request: Request) -> list[Unit]:
        units = [u for u in self.supervisor.units.values() if not u.record.one_off]
        if request.services:
            known = {u.record.service for u in units}
            if request.project is not None:
                known |= set(request.project.service_names())
            missing = [s for s in request.services if s not in known]
            if missing:
                raise ComposerError(f"no such service: {missing[0]}")
            units = [u for u in units if u.record.service in request.services]
        return units

    def _levels(self, request: Request, units: list[Unit], *, reverse: bool) -> list[list[Unit]]:
        """The units grouped by the project's start levels (reversed for stops); unknown services last."""
        project = request.project
        order: dict[str, int] = {}
        if project is not None:
            for index, level in enumerate(start_levels(project)):
                for name in level:
                    order[name] = index
        groups: dict[int, list[Unit]] = {}
        for unit in units:
            groups.setdefault(order.get(unit.record.service, len(order) + 1), []).append(unit)
        keys = sorted(groups, reverse=reverse)
        return [sorted(groups[k], key=lambda u: u.record.name) for k in keys]

    async def _stop_units(
        self,
        units: list[Unit],
        timeout: float | None,
        emit: Callable[[dict[str, Any]], None],
        request: Request,
    ) -> None:
        for level in self._levels(request, units, reverse=True):
            async with trio.open_nursery() as nursery:
                for unit in level:
                    nursery.start_soon(self._stop_one, unit, timeout, emit)

    async def _stop_one(
        self, unit: Unit, timeout: float | None, emit: Callable[[dict[str, Any]], None]
    ) -> None:
        sup = self.supervisor
        if unit.record.state not in ("running", "paused", "restarting") and unit.supervision is None:
            return
        _emit(emit, "stop", "working", unit)
        grace = unit.record.stop_grace if timeout is None else timeout
        await sup.signal(unit, unit.record.stop_signal)
        with trio.move_on_after(grace):
            await sup.wait(unit)
            _emit(emit, "stop", "done", unit)
            return
        await sup.signal(unit, int(signal.SIGKILL))
        with trio.move_on_after(10):
            await sup.wait(unit)
            _emit(emit, "stop", "done", unit)
            return
        raise ComposerError(f"container {unit.record.name}: stop: still running 10 s after SIGKILL")

    async def op_stop(self, request: Request, emit: Callable[[dict[str, Any]], None]) -> int:
        await self._stop_units(self._select(request), request.timeout, emit, request)
        return 0

    async def op_start(self, request: Request, emit: Callable[[dict[str, Any]], None]) -> int:
        units = self._select(request)
        if not units:
            raise ComposerError("no container to start")
        for level in self._levels(request, units, reverse=False):
            async with trio.open_nursery() as nursery:
                for unit in level:
                    nursery.start_soon(self._start_one, unit, emit)
        return 0

    async def _start_one(self, unit: Unit, emit: Callable[[dict[str, Any]], None]) -> None:
        if unit.record.state in ("running", "paused", "restarting"):
            return
        _emit(emit, "start", "working", unit)
        try:
            await self.supervisor.start(unit)
        except ComposerError as exc:
            raise ComposerError(f"container {unit.record.name}: start: {one_line(str(exc))}") from None
        _emit(emit, "start", "done", unit)

    async def op_restart(self, request: Request, emit: Callable[[dict[str, Any]], None]) -> int:
        units = self._select(request)
        await self._stop_units(units, request.timeout, emit, request)
        for level in self._levels(request, units, reverse=False):
            async with trio.open_nursery() as nursery:
                for unit in level:
                    nursery.start_soon(self._start_one, unit, emit)
        return 0

    async def op_kill(self, request: Request, emit: Callable[[dict[str, Any]], None]) -> int:
        for unit in self._select(request):
            if unit.record.state in ("running", "paused", "restarting"):
                await self.supervisor.signal(unit, request.signal)
                _emit(emit, "kill", "done", unit)
        return 0

    async def op_pause(self, request: Request, emit: Callable[[dict[str, Any]], None]) -> int:
        for unit in self._select(request):
            if self.supervisor.pause(unit):
                _emit(emit, "pause", "done", unit)
        return 0

    async def op_unpause(self, request: Request, emit: Callable[[dict[str, Any]], None]) -> int:
        for unit in self._select(request):
            if self.supervisor.unpause(unit):
                _emit(emit, "unpause", "done", unit)
        return 0

    async def op_rm(self, request: Request, emit: Callable[[dict[str, Any]], None]) -> int:
        for unit in self._select(request):
            if unit.record.state in ("running", "paused", "restarting") or unit.supervision is not None:
                continue
            await self.supervisor.remove(unit, volumes=request.volumes)
            _emit(emit, "remove", "done", unit)
        return 0


def _need_project(request: Request) -> Project:
    if request.project is None:
        raise ComposerError(f"{request.op}: the request carries no project")
    return request.project


def _warnings(plan: Plan, emit: Callable[[dict[str, Any]], None]) -> None:
    for warning in plan.warnings:
        emit({"warning": warning})


def _events(emit: Callable[[dict[str, Any]], None]) -> Callable[[ExecutionEvent], None]:
    def on_event(event: ExecutionEvent) -> None:
        emit({"event": dataclasses.asdict(event)})

    return on_event


def _emit(emit: Callable[[dict[str, Any]], None], action: str, status: str, unit: Unit) -> None:
    emit({"event": {"action": action, "status": status, "service": unit.record.service,
                    "container": unit.record.name, "detail": "", "at": trio.current_time()}})  # fmt: skip


def _change(change: ContainerChange) -> dict[str, Any]:
    state = change.state
    return {
        "service": change.service,
        "name": change.name,
        "status": state.status if state else None,
        "exit_code": state.exit_code if state else None,
        "health": state.current_health() if state else None,
    }


def _leaves(group: BaseExceptionGroup[ComposerError]) -> list[ComposerError]:
    out: list[ComposerError] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out += _leaves(exc)
        else:
            out.append(exc)
    return out


async def serve(
    supervisor: Supervisor, path: Path, *, on_ready: Callable[[], None] | None = None, linger: float = LINGER
) -> None:
    """Run `supervisor` and answer requests on `path` until it has been idle for `linger` seconds."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        await sock.bind(str(path))
    finally:
        os.umask(old)
    sock.listen(128)
    listener = trio.SocketListener(sock)
    pid_file = path.with_name("supervisor.pid")
    pid_file.write_text(f"{os.getpid()}\n")
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            server = _Server(supervisor, nursery)
            nursery.start_soon(trio.serve_listeners, server.handle, [listener])
            if on_ready is not None:
                on_ready()
            logger().info("supervisor.ready", project=supervisor.project, pid=os.getpid())
            nursery.start_soon(trio.to_thread.run_sync, supervisor.warm_up)
            while True:
                if supervisor.idle() and server.clients == 0 and server.busy == 0:
                    with trio.move_on_after(linger):
                        await _either(server.activity, supervisor)
                        continue
                    if supervisor.idle() and server.clients == 0 and server.busy == 0:
                        break
                else:
                    await _either(server.activity, supervisor)
            logger().info("supervisor.leaving", project=supervisor.project)
            nursery.cancel_scope.cancel()
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()


async def _either(event: trio.Event, supervisor: Supervisor) -> None:
    changed = supervisor.changed
    async with trio.open_nursery() as nursery:

        async def one(wait: Callable[[], Awaitable[Any]]) -> None:
            await wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(one, event.wait)
        nursery.start_soon(one, changed.wait)
