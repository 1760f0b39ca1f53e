"""The executor on in-memory backends under a virtual clock: order, parallelism, waits, failures, stops."""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from textwrap import dedent
from typing import Any

import pytest
import trio
import trio.testing

from composer.engine.backends import Backends, ContainerChange, ContainerListener, ContainerRef
from composer.engine.depends import ContainerState
from composer.engine.executor import (
    KILL_WAIT,
    ExecutionError,
    ExecutionEvent,
    Interrupt,
    execute_down,
    execute_up,
    temporary_name,
)
from composer.engine.plan import Plan, plan_down, plan_up
from composer.engine.state import ObservedContainer, ObservedNetwork, ObservedProject
from composer.engine.translate import parse_signal, stop_grace
from composer.runtime.launch import ExitStatus
from composer.spec.hashing import config_hash
from composer.spec.loader import LoadOptions, load_project
from composer.spec.model import Project, Service

IMG = "sha256:" + "1" * 64
TERM, KILL = int(signal.SIGTERM), int(signal.SIGKILL)


def project(yaml_text: str) -> Project:
    options = LoadOptions(cwd="/w", environ={}, files=("-",), stdin_text=dedent(yaml_text), project_name="p")
    return load_project(options, lambda _: None).project


def run(fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    return trio.run(fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))


# --- the fake world ----------------------------------------------------------------------------------


@dataclass
class FakeContainer:
    id: str
    name: str
    service: Service
    number: int
    status: str = "created"
    exit_code: int | None = None
    health: str | None = None
    generation: int = 0
    exited: trio.Event = field(default_factory=trio.Event)
    life: trio.CancelScope | None = None

    def ref(self) -> ContainerRef:
        sig = parse_signal(self.service.stop_signal) if self.service.stop_signal else TERM
        return ContainerRef(
            id=self.id,
            name=self.name,
            service=self.service.name,
            stop_signal=sig,
            stop_grace=stop_grace(self.service),
        )

    def state(self, scripted_health: bool) -> ContainerState:
        return ContainerState(
            name=self.name,
            status=self.status,
            exit_code=self.exit_code,
            has_healthcheck=scripted_health,
            health=self.health,
            start_generation=self.generation,
            health_generation=self.generation,
        )


class FakeWorld:
    """Images, networks, volumes and containers in memory. Every call is logged as (time, call,
    subject); `durations[call]` is how long a call takes; `fail[(call, subject)]` makes it raise;
    `hang` makes it never return. Per service: `health` = [(seconds after start, status)],
    `exits` = (seconds after start, code), `ignore_term`: the stop signal does nothing."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.log: list[tuple[float, str, str]] = []
        self.durations: dict[str, float] = {}
        self.fail: dict[tuple[str, str], str] = {}
        self.hang: set[tuple[str, str]] = set()
        self.health: dict[str, list[tuple[float, str]]] = {}
        self.exits: dict[str, tuple[float, int]] = {}
        self.ignore_term: set[str] = set()
        self.containers: dict[str, FakeContainer] = {}  # by id
        self.networks: set[str] = set()
        self.volumes: set[str] = set()
        self.listeners: list[ContainerListener] = []
        self.active = 0
        self.max_active = 0
        self._ids = 0

    # -- plumbing --------------------------------------------------------------------------------

    async def _call(self, call: str, subject: str) -> None:
        self.log.append((trio.current_time(), call, subject))
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if (call, subject) in self.hang:
                await trio.sleep_forever()
            await trio.sleep(self.durations.get(call, 0.0))
            if (call, subject) in self.fail:
                raise RuntimeError(self.fail[(call, subject)])
        finally:
            self.active -= 1

    def _notify(self, c: FakeContainer, name: str | None = None, gone: bool = False) -> None:
        change = ContainerChange(
            service=c.service.name,
            name=name or c.name,
            state=None if gone else c.state(c.service.name in self.health),
        )
        for listener in list(self.listeners):
            listener(change)

    def calls(self, *kinds: str) -> list[tuple[float, str, str]]:
        return [entry for entry in self.log if not kinds or entry[1] in kinds]

    def by_name(self, name: str) -> FakeContainer:
        return next(c for c in self.containers.values() if c.name == name)

    def observed(self) -> ObservedProject:
        return ObservedProject(
            name="p",
            containers=tuple(
                ObservedContainer(
                    id=c.id,
                    name=c.name,
                    service=c.service.name,
                    number=c.number,
                    config_hash=config_hash(c.service),
                    image_id=IMG,
                    state="running" if c.status == "running" else "exited",
                )
                for c in self.containers.values()
            ),
            networks=tuple(ObservedNetwork(name=n) for n in sorted(self.networks)),
        )

    def preload(self, service: Service, number: int = 1) -> FakeContainer:
        """A running container left by an earlier `up`."""
        self._ids += 1
        c = FakeContainer(id=f"old{self._ids:02d}".ljust(64, "0"), name=f"p-{service.name}-{number}",
                          service=service, number=number, status="running", generation=1)  # fmt: skip
        self.containers[c.id] = c
        return c

    # -- Images ----------------------------------------------------------------------------------

    async def build(self, service: str, image: str) -> None:
        await self._call("build", image)

    async def pull(self, service: str, image: str) -> None:
        await self._call("pull", image)

    async def remove_image(self, image: str) -> None:
        await self._call("rmi", image)

    # -- Networks, Volumes -------------------------------------------------------------------------

    @property
    def net(self) -> Any:
        world = self

        class Net:
            async def create(self, key: str, name: str) -> None:
                await world._call("network create", name)
                world.networks.add(name)

            async def remove(self, key: str, name: str) -> None:
                await world._call("network rm", name)
                world.networks.discard(name)

        return Net()

    @property
    def vol(self) -> Any:
        world = self

        class Vol:
            async def create(self, key: str, name: str) -> None:
                await world._call("volume create", name)
                world.volumes.add(name)

            async def remove(self, key: str, name: str) -> None:
                await world._call("volume rm", name)
                world.volumes.discard(name)

        return Vol()

    # -- Containers ------------------------------------------------------------------------------

    def states(self) -> Sequence[ContainerChange]:
        return [
            ContainerChange(service=c.service.name, name=c.name, state=c.state(c.service.name in self.health))
            for c in self.containers.values()
        ]

    def subscribe(self, listener: ContainerListener) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    async def lookup(self, key: str) -> ContainerRef | None:
        for c in self.containers.values():
            if key in (c.id, c.name):
                return c.ref()
        return None

    async def create(
        self, service: Service, number: int, name: str, *, replaces: ContainerRef | None = None
    ) -> ContainerRef:
        await self._call("create", name)
        self._ids += 1
        c = FakeContainer(id=f"new{self._ids:02d}".ljust(64, "0"), name=name, service=service, number=number)
        self.containers[c.id] = c
        self._notify(c)
        return c.ref()

    async def start(self, container: ContainerRef) -> None:
        await self._call("start", container.name)
        c = self.containers[container.id]
        c.status, c.exit_code, c.exited = "running", None, trio.Event()
        c.generation += 1
        c.health = "starting" if c.service.name in self.health else None
        self._notify(c)
        self.nursery.start_soon(self._live, c)

    async def _live(self, c: FakeContainer) -> None:
        with trio.CancelScope() as scope:
            c.life = scope
            started = trio.current_time()
            for at, status in self.health.get(c.service.name, []):
                await trio.sleep_until(started + at)
                c.health = status
                self._notify(c)
            if c.service.name in self.exits:
                at, code = self.exits[c.service.name]
                await trio.sleep_until(started + at)
                self._exit(c, code)

    def _exit(self, c: FakeContainer, code: int) -> None:
        c.status, c.exit_code = "exited", code
        if c.life is not None:
            c.life.cancel()
        c.exited.set()
        self._notify(c)

    async def signal(self, container: ContainerRef, sig: int) -> None:
        self.log.append((trio.current_time(), f"signal {sig}", container.name))
        c = self.containers.get(container.id)
        if c is None or c.status != "running":
            return
        if sig == KILL or c.service.name not in self.ignore_term:
            self._exit(c, 128 + sig)

    async def wait(self, container: ContainerRef) -> ExitStatus | None:
        c = self.containers[container.id]
        if c.status == "running":
            await c.exited.wait()
        return None if c.exit_code is None else ExitStatus(c.exit_code)

    async def rename(self, container: ContainerRef, name: str) -> ContainerRef:
        await self._call("rename", f"{container.name} -> {name}")
        c = self.containers[container.id]
        old, c.name = c.name, name
        self._notify(c, name=old, gone=True)
        self._notify(c)
        return c.ref()

    async def remove(self, container: ContainerRef, *, volumes: bool = False) -> None:
        await self._call("rm", container.name)
        c = self.containers[container.id]
        assert c.status != "running", f"removing running {c.name}"
        del self.containers[c.id]
        self._notify(c, gone=True)


class FakeImages:
    """`Images` over a FakeWorld (its `remove` is the container one)."""

    def __init__(self, world: FakeWorld) -> None:
        self.world = world

    async def build(self, service: str, image: str) -> None:
        await self.world.build(service, image)

    async def pull(self, service: str, image: str) -> None:
        await self.world.pull(service, image)

    async def remove(self, image: str) -> None:
        await self.world.remove_image(image)


def backends(world: FakeWorld) -> Backends:
    return Backends(images=FakeImages(world), networks=world.net, volumes=world.vol, containers=world)


def images(p: Project) -> dict[str, str]:
    return {s.name: IMG for s in p.services}


async def up(
    world: FakeWorld, p: Project, *, events: list[ExecutionEvent] | None = None, **kwargs: Any
) -> Plan:
    plan = plan_up(p, world.observed(), images=images(p))
    await execute_up(plan, backends(world), project=p, on_event=events.append if events is not None else None,
                     **kwargs)  # fmt: skip
    return plan


def scenario(body: Callable[[FakeWorld], Awaitable[None]]) -> FakeWorld:
    """Run `body` with a fresh world; the containers' lives end with it."""
    out: list[FakeWorld] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            world = FakeWorld(nursery)
            out.append(world)
            world.durations = {"create": 1.0, "start": 1.0, "network create": 1.0}
            await body(world)
            nursery.cancel_scope.cancel()

    run(main)
    return out[0]


STACK = """
services:
  db: {image: postgres}
  cache: {image: redis}
  web:
    image: nginx
    depends_on: [db, cache]
  proxy:
    image: nginx
    depends_on: [web]
"""


# --- order and parallelism ---------------------------------------------------------------------------


def test_levels_in_order_operations_of_a_level_in_parallel() -> None:
    p = project(STACK)

    async def body(world: FakeWorld) -> None:
        await up(world, p)
        assert trio.current_time() == 7.0

    world = scenario(body)
    assert sorted(world.calls("network create", "create", "start")) == [
        (0.0, "network create", "p_default"),
        (1.0, "create", "p-cache-1"),
        (1.0, "create", "p-db-1"),
        (2.0, "start", "p-cache-1"),
        (2.0, "start", "p-db-1"),
        (3.0, "create", "p-web-1"),
        (4.0, "start", "p-web-1"),
        (5.0, "create", "p-proxy-1"),
        (6.0, "start", "p-proxy-1"),
    ]
    assert {c.name: c.status for c in world.containers.values()} == {
        "p-cache-1": "running",
        "p-db-1": "running",
        "p-web-1": "running",
        "p-proxy-1": "running",
    }


def test_parallel_limit_is_respected() -> None:
    p = project("services:\n" + "".join(f"  s{i}: {{image: busybox}}\n" for i in range(6)))

    async def body(world: FakeWorld) -> None:
        world.durations["network create"] = 0.0
        await up(world, p, parallel=2)
        # 12 calls of 1 s, two at a time; one container's create and start stay in order
        assert trio.current_time() == 6.0

    world = scenario(body)
    assert world.max_active == 2
    for i in range(6):
        (created,) = [t for t, call, name in world.calls("create") if name == f"p-s{i}-1"]
        (started,) = [t for t, call, name in world.calls("start") if name == f"p-s{i}-1"]
        assert started >= created + 1.0


def test_without_a_limit_a_level_runs_all_at_once() -> None:
    p = project("services:\n" + "".join(f"  s{i}: {{image: busybox}}\n" for i in range(6)))

    async def body(world: FakeWorld) -> None:
        world.durations["network create"] = 0.0
        await up(world, p)
        assert trio.current_time() == 2.0

    assert scenario(body).max_active == 6


# --- depends_on --------------------------------------------------------------------------------------

HEALTHY_STACK = """
services:
  db:
    image: postgres
    healthcheck: {test: [CMD, pg_isready]}
  web:
    image: nginx
    depends_on: {db: {condition: service_healthy}}
"""


def test_a_dependent_waits_until_its_dependency_is_healthy() -> None:
    p = project(HEALTHY_STACK)
    events: list[ExecutionEvent] = []

    async def body(world: FakeWorld) -> None:
        world.health["db"] = [(30.0, "healthy")]
        await up(world, p, events=events)

    world = scenario(body)
    # the network 0..1, db created 1..2 and started 2..3, healthy at 33; web's create follows at once
    assert world.calls("create", "start") == [
        (1.0, "create", "p-db-1"),
        (2.0, "start", "p-db-1"),
        (33.0, "create", "p-web-1"),
        (34.0, "start", "p-web-1"),
    ]
    seen = [(e.at, e.action, e.status, e.service, e.container) for e in events]
    assert (3.0, "state", "starting", "db", "p-db-1") in seen
    assert (33.0, "state", "healthy", "db", "p-db-1") in seen
    assert (3.0, "wait", "working", "web", None) in seen
    assert (33.0, "wait", "done", "web", None) in seen
    assert (35.0, "start", "done", "web", "p-web-1") in seen
    assert (35.0, "state", "running", "web", "p-web-1") in seen


def test_an_unhealthy_dependency_fails_the_dependent_with_one_line() -> None:
    p = project(HEALTHY_STACK)

    async def body(world: FakeWorld) -> None:
        world.health["db"] = [(90.0, "unhealthy")]
        with pytest.raises(ExecutionError) as info:
            await up(world, p)
        assert info.value.message == (
            "service web: depends_on: dependency failed to start: container p-db-1 is unhealthy"
        )
        assert (info.value.service, info.value.stage) == ("web", "depends_on")
        assert trio.current_time() == 93.0

    world = scenario(body)
    assert [name for _, _, name in world.calls("create")] == ["p-db-1"]
    assert world.by_name("p-db-1").status == "running"  # left running, as Compose does


def test_completed_successfully_waits_for_exit_zero() -> None:
    p = project("""
        services:
          migrate: {image: app}
          web:
            image: app
            depends_on: {migrate: {condition: service_completed_successfully}}
    """)

    async def body(world: FakeWorld) -> None:
        world.exits["migrate"] = (5.0, 0)
        await up(world, p)

    world = scenario(body)
    assert [(t, name) for t, _, name in world.calls("create")] == [(1.0, "p-migrate-1"), (8.0, "p-web-1")]


def test_wait_conditions_false_does_not_wait() -> None:
    p = project(HEALTHY_STACK)

    async def body(world: FakeWorld) -> None:
        world.health["db"] = [(30.0, "healthy")]
        await up(world, p, wait_conditions=False)

    assert [t for t, _, _ in scenario(body).calls("create")] == [1.0, 3.0]


# --- failures ----------------------------------------------------------------------------------------

FAIL_STACK = """
services:
  db: {image: postgres}
  web: {image: nginx, depends_on: [db]}
  worker: {image: app, depends_on: [db]}
  proxy: {image: nginx, depends_on: [web, worker]}
"""


def test_a_failing_start_names_service_and_stage_and_stops_further_levels() -> None:
    p = project(FAIL_STACK)
    events: list[ExecutionEvent] = []

    async def body(world: FakeWorld) -> None:
        world.fail[("start", "p-web-1")] = "exec: /docker-entrypoint.sh: no such file or directory"
        world.durations["create"] = 1.0
        world.hang.add(("start", "p-worker-1"))
        with pytest.raises(ExecutionError) as info:
            await up(world, p, events=events)
        assert str(info.value) == (
            "service web: start: exec: /docker-entrypoint.sh: no such file or directory"
        )
        assert trio.current_time() == 5.0

    world = scenario(body)
    assert sorted(world.calls("create")) == [
        (1.0, "create", "p-db-1"),
        (3.0, "create", "p-web-1"),
        (3.0, "create", "p-worker-1"),
    ]
    assert "p-proxy-1" not in {name for _, _, name in world.log}  # the next level never started
    # what this run created stays as it is (Compose: no rollback): db runs, web and worker created
    assert {c.name: c.status for c in world.containers.values()} == {
        "p-db-1": "running",
        "p-web-1": "created",
        "p-worker-1": "created",
    }
    assert not world.calls(f"signal {TERM}", f"signal {KILL}", "rm")
    failed = [(e.action, e.container, e.detail) for e in events if e.status == "failed"]
    assert failed == [("start", "p-web-1", "exec: /docker-entrypoint.sh: no such file or directory")]


def test_a_failing_network_fails_before_any_container() -> None:
    p = project(STACK)

    async def body(world: FakeWorld) -> None:
        world.fail[("network create", "p_default")] = "bridge p_default: address in use"
        with pytest.raises(ExecutionError, match=r"^network p_default: create: bridge p_default: address"):
            await up(world, p)

    assert not scenario(body).calls("create")


# --- recreate, restart -------------------------------------------------------------------------------


def test_recreate_creates_under_a_temporary_name_then_stops_removes_renames() -> None:
    old = project("services:\n  web: {image: nginx}\n")
    new = project("services:\n  web: {image: nginx, environment: {A: '1'}}\n")

    async def body(world: FakeWorld) -> None:
        world.networks.add("p_default")
        was = world.preload(old.service("web"))
        await up(world, new)
        assert trio.current_time() == 2.0
        (now,) = world.containers.values()
        assert (now.name, now.status, now.id != was.id) == ("p-web-1", "running", True)
        assert config_hash(now.service) == config_hash(new.service("web"))

    world = scenario(body)
    temp = temporary_name("old01".ljust(64, "0"), "p-web-1")
    assert temp == "old010000000_p-web-1"
    assert [(t, call, name) for t, call, name in world.log] == [
        (0.0, "create", temp),
        (1.0, f"signal {TERM}", "p-web-1"),
        (1.0, "rm", "p-web-1"),
        (1.0, "rename", f"{temp} -> p-web-1"),
        (1.0, "start", "p-web-1"),
    ]


def test_restart_with_depends_on_restart_true_stops_then_starts() -> None:
    yaml = """
        services:
          db: {image: postgres}
          web:
            image: nginx
            depends_on: {db: {condition: service_started, restart: true}}
    """
    old = project(yaml)
    new = project(yaml.replace("db: {image: postgres}", "db: {image: postgres, environment: {A: '1'}}"))

    async def body(world: FakeWorld) -> None:
        world.networks.add("p_default")
        world.preload(old.service("db"))
        world.preload(old.service("web"))
        await up(world, new)

    log = [(call, name) for _, call, name in scenario(body).log]
    assert log[-2:] == [(f"signal {TERM}", "p-web-1"), ("start", "p-web-1")]
    assert log.index((f"signal {TERM}", "p-web-1")) < log.index(("start", "p-web-1"))
    assert log.index(("start", "p-db-1")) < log.index((f"signal {TERM}", "p-web-1"))


# --- down --------------------------------------------------------------------------------------------

DOWN_STACK = """
services:
  db: {image: postgres}
  web:
    image: nginx
    depends_on: [db]
    stop_grace_period: 3s
"""


def test_down_stops_dependents_first_with_grace_then_kill() -> None:
    p = project(DOWN_STACK)
    events: list[ExecutionEvent] = []

    async def body(world: FakeWorld) -> None:
        await up(world, p)
        world.ignore_term.add("web")  # a shell PID 1 that ignores SIGTERM
        world.durations = {"rm": 0.5, "network rm": 0.5}
        t0 = trio.current_time()
        plan = plan_down(p, world.observed())
        await execute_down(plan, backends(world), on_event=events.append)
        world.log = [(t - t0, call, name) for t, call, name in world.log if t >= t0]

    world = scenario(body)
    assert world.log == [
        (0.0, f"signal {TERM}", "p-web-1"),
        (3.0, f"signal {KILL}", "p-web-1"),
        (3.0, "rm", "p-web-1"),
        (3.5, f"signal {TERM}", "p-db-1"),
        (3.5, "rm", "p-db-1"),
        (4.0, "network rm", "p_default"),
    ]
    assert world.containers == {}
    kills = [(e.at, e.detail) for e in events if e.action == "kill"]
    assert len(kills) == 1 and kills[0][1] == "grace period over"


def test_down_timeout_overrides_the_grace_and_containers_of_a_level_stop_in_parallel() -> None:
    p = project("services:\n" + "".join(f"  s{i}: {{image: busybox}}\n" for i in range(3)))

    async def body(world: FakeWorld) -> None:
        await up(world, p)
        world.ignore_term.update({"s0", "s1", "s2"})
        world.durations = {}
        t0 = trio.current_time()
        await execute_down(plan_down(p, world.observed()), backends(world), stop_timeout=2.0)
        assert trio.current_time() - t0 == 2.0

    world = scenario(body)
    assert sorted(name for _, call, name in world.calls(f"signal {KILL}")) == ["p-s0-1", "p-s1-1", "p-s2-1"]


def test_down_goes_on_after_a_failure_and_reports_the_first() -> None:
    p = project(STACK)

    async def body(world: FakeWorld) -> None:
        await up(world, p)
        world.durations = {}
        world.fail[("rm", "p-cache-1")] = "device or resource busy"
        with pytest.raises(ExecutionError) as info:
            await execute_down(plan_down(p, world.observed()), backends(world))
        assert str(info.value) == "service cache: remove: device or resource busy"
        assert [c.name for c in world.containers.values()] == ["p-cache-1"]
        # twice: only what is left, and a missing container is not an error
        world.fail.clear()
        await execute_down(plan_down(p, world.observed()), backends(world))
        assert world.containers == {}

    scenario(body)


def test_down_skips_a_container_already_gone() -> None:
    p = project(DOWN_STACK)
    events: list[ExecutionEvent] = []

    async def body(world: FakeWorld) -> None:
        await up(world, p)
        plan = plan_down(p, world.observed())
        gone = world.by_name("p-web-1")
        world._exit(gone, 0)
        del world.containers[gone.id]
        await execute_down(plan, backends(world), on_event=events.append)

    scenario(body)
    assert [(e.action, e.status, e.container) for e in events if e.status == "skipped"] == [
        ("remove", "skipped", "p-web-1")
    ]


# --- cancellation ------------------------------------------------------------------------------------


def test_cancel_during_up_stops_what_this_run_started_gracefully() -> None:
    p = project(HEALTHY_STACK)

    async def body(world: FakeWorld) -> None:
        world.health["db"] = []  # stays `starting`: web waits forever
        world.ignore_term.add("db")
        interrupt = Interrupt()

        async def ctrl_c() -> None:
            await trio.sleep(5.0)
            interrupt.interrupt()

        world.nursery.start_soon(ctrl_c)
        with interrupt.scope:
            await up(world, p, force=interrupt.force)
        assert interrupt.scope.cancelled_caught
        assert trio.current_time() == 15.0  # db's 10 s grace, then SIGKILL

    world = scenario(body)
    assert world.calls(f"signal {TERM}", f"signal {KILL}") == [
        (5.0, f"signal {TERM}", "p-db-1"),
        (15.0, f"signal {KILL}", "p-db-1"),
    ]
    assert world.by_name("p-db-1").status == "exited"
    assert "p-web-1" not in {name for _, _, name in world.log}


def test_a_second_interrupt_kills_at_once() -> None:
    p = project(HEALTHY_STACK)

    async def body(world: FakeWorld) -> None:
        world.health["db"] = []
        world.ignore_term.add("db")
        interrupt = Interrupt()

        async def ctrl_c_twice() -> None:
            await trio.sleep(5.0)
            interrupt.interrupt()
            await trio.sleep(2.0)
            interrupt.interrupt()

        world.nursery.start_soon(ctrl_c_twice)
        with interrupt.scope:
            await up(world, p, force=interrupt.force)
        assert trio.current_time() == 7.0

    world = scenario(body)
    assert world.calls(f"signal {TERM}", f"signal {KILL}") == [
        (5.0, f"signal {TERM}", "p-db-1"),
        (7.0, f"signal {KILL}", "p-db-1"),
    ]


def test_cancel_during_a_start_stops_that_container_too_and_leaves_kept_ones() -> None:
    p = project(STACK)

    async def body(world: FakeWorld) -> None:
        world.networks.add("p_default")
        world.preload(p.service("cache"))  # kept: not this run's
        world.durations["start"] = 10.0
        with trio.move_on_after(3.0):
            await up(world, p)
        assert trio.current_time() == 3.0

    world = scenario(body)
    # db was being started when cancelled (the fake's start never completed): signalled all the same
    assert [(t, name) for t, _, name in world.calls(f"signal {TERM}")] == [(3.0, "p-db-1")]
    assert world.by_name("p-cache-1").status == "running"


def test_a_container_that_survives_sigkill_fails_the_stop_after_the_kill_wait() -> None:
    p = project(DOWN_STACK)

    async def body(world: FakeWorld) -> None:
        await up(world, p)
        world.durations = {}

        async def never_exits(container: ContainerRef) -> ExitStatus | None:
            await trio.sleep_forever()
            raise AssertionError

        world.wait = never_exits  # type: ignore[method-assign]
        t0 = trio.current_time()
        with pytest.raises(ExecutionError) as info:
            await execute_down(plan_down(p, world.observed()), backends(world), stop_timeout=1.0)
        assert str(info.value).startswith(
            f"service web: stop: container p-web-1 did not exit {KILL_WAIT:g}s after SIGKILL"
        )
        assert trio.current_time() - t0 == 2 * (1.0 + KILL_WAIT)

    scenario(body)
