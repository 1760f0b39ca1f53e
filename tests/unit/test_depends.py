"""depends_on waits: conditions, Compose's messages, generations, timeouts; event-driven and polled."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

import pytest
import trio
import trio.testing

from composer.engine.depends import (
    Condition,
    ContainerState,
    DependencyError,
    DependencyTimeout,
    StateBoard,
    check_condition,
    wait_for_condition,
    wait_for_dependencies,
)
from composer.engine.health import HealthConfig, HealthEvent, HealthMonitor, ProbeOutput
from composer.spec.model import Dependency

S = 1_000_000_000


def run(fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    return trio.run(fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))


DB_STARTING = ContainerState(
    name="p-db-1",
    status="running",
    has_healthcheck=True,
    health="starting",
    start_generation=1,
    health_generation=1,
)


def healthy_dep(required: bool = True) -> Dependency:
    return Dependency(service="db", condition="service_healthy", required=required)


def scheduled(
    board: StateBoard, changes: Sequence[tuple[float, str, ContainerState]]
) -> Callable[[], Awaitable[None]]:
    async def driver() -> None:
        for at, service, state in changes:
            await trio.sleep_until(at)
            board.update(service, state)

    return driver


def wait_outcome(
    changes: Sequence[tuple[float, str, ContainerState]],
    dependency: Dependency,
    *,
    warnings: list[str] | None = None,
) -> tuple[float, bool | str]:
    """(time the wait ended, its result or the error's message)."""
    board = StateBoard()
    board.update("db", DB_STARTING)
    out: list[tuple[float, bool | str]] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(scheduled(board, changes))
            try:
                result: bool | str = await wait_for_condition(
                    board, "web", dependency, warn=None if warnings is None else warnings.append
                )
            except DependencyError as exc:
                result = exc.message
            out.append((trio.current_time(), result))
            nursery.cancel_scope.cancel()

    run(main)
    return out[0]


# -- service_healthy -------------------------------------------------------------------------------


def test_healthy_ends_the_wait_the_moment_it_happens() -> None:
    at, result = wait_outcome([(12.3, "db", replace(DB_STARTING, health="healthy"))], healthy_dep())
    assert (at, result) == (12.3, True)


def test_unhealthy_fails_at_once_with_the_last_probe_output() -> None:
    bad = replace(DB_STARTING, health="unhealthy", health_output="pg_isready: no response\n")
    at, result = wait_outcome([(40.0, "db", bad)], healthy_dep())
    assert at == 40.0
    assert result == (
        "dependency failed to start: container p-db-1 is unhealthy (last probe: pg_isready: no response)"
    )


def test_exit_before_healthy_fails_at_once() -> None:
    gone = replace(DB_STARTING, status="exited", exit_code=3)
    assert wait_outcome([(2.0, "db", gone)], healthy_dep()) == (
        2.0,
        "dependency failed to start: container p-db-1 exited (3)",
    )


def test_no_healthcheck_is_an_error() -> None:
    plain = ContainerState(name="p-db-1", status="running")
    assert wait_outcome([(0.0, "db", plain)], healthy_dep()) == (
        0.0,
        "dependency failed to start: container p-db-1 has no healthcheck configured",
    )


def test_a_health_state_from_an_earlier_start_is_not_accepted() -> None:
    # restarted: the container runs its 2nd start, but the health is still the 1st start's `unhealthy`
    stale = replace(DB_STARTING, health="unhealthy", start_generation=2, health_generation=1)
    fresh = replace(stale, health="healthy", health_generation=2)
    assert wait_outcome([(1.0, "db", stale), (31.0, "db", fresh)], healthy_dep()) == (31.0, True)


def test_restarting_is_waited_out() -> None:
    restarting = replace(DB_STARTING, status="restarting", health="unhealthy")
    back = replace(DB_STARTING, start_generation=2, health_generation=2, health="healthy")
    assert wait_outcome([(1.0, "db", restarting), (5.0, "db", back)], healthy_dep()) == (5.0, True)


def test_every_container_must_be_healthy() -> None:
    second = replace(DB_STARTING, name="p-db-2")
    changes = [
        (0.0, "db", second),
        (3.0, "db", replace(DB_STARTING, health="healthy")),
        (8.0, "db", replace(second, health="healthy")),
    ]
    assert wait_outcome(changes, healthy_dep()) == (8.0, True)


def test_optional_dependency_warns_and_continues() -> None:
    warnings: list[str] = []
    bad = replace(DB_STARTING, health="unhealthy")
    assert wait_outcome([(4.0, "db", bad)], healthy_dep(required=False), warnings=warnings) == (4.0, False)
    assert warnings == ['optional dependency "db" failed to start: container p-db-1 is unhealthy']


# -- service_completed_successfully ----------------------------------------------------------------


def completed_dep(required: bool = True) -> Dependency:
    return Dependency(service="db", condition="service_completed_successfully", required=required)


def test_completed_with_exit_zero() -> None:
    done = replace(DB_STARTING, status="exited", exit_code=0)
    assert wait_outcome([(6.0, "db", done)], completed_dep()) == (6.0, True)


def test_completed_with_an_error() -> None:
    done = replace(DB_STARTING, status="exited", exit_code=2)
    assert wait_outcome([(6.0, "db", done)], completed_dep()) == (
        6.0,
        'service "db" didn\'t complete successfully: exit 2',
    )


def test_optional_completed_with_an_error() -> None:
    warnings: list[str] = []
    done = replace(DB_STARTING, status="exited", exit_code=2)
    assert wait_outcome([(6.0, "db", done)], completed_dep(False), warnings=warnings) == (6.0, False)
    assert warnings == ['optional dependency "db" didn\'t complete successfully: exit 2']


# -- the rest --------------------------------------------------------------------------------------


def test_service_started_waits_for_nothing() -> None:
    assert wait_outcome([], Dependency(service="db")) == (0.0, True)


def test_missing_dependency() -> None:
    async def main() -> tuple[str, bool]:
        board = StateBoard()
        with pytest.raises(DependencyError) as info:
            await wait_for_condition(board, "web", healthy_dep())
        warnings: list[str] = []
        result = await wait_for_condition(board, "web", healthy_dep(False), warn=warnings.append)
        assert warnings == ["web is missing dependency db"]
        return info.value.message, result

    assert run(main) == ("web is missing dependency db", False)


def test_running_or_healthy_for_up_wait() -> None:
    plain = ContainerState(name="p-web-1", status="running")
    assert check_condition("web", Condition.RUNNING_OR_HEALTHY, [plain])
    assert not check_condition("web", Condition.RUNNING_OR_HEALTHY, [replace(plain, status="created")])
    assert not check_condition("db", Condition.RUNNING_OR_HEALTHY, [DB_STARTING])
    assert check_condition("db", Condition.RUNNING_OR_HEALTHY, [replace(DB_STARTING, health="healthy")])


def test_polls_every_500ms_when_the_view_cannot_signal() -> None:
    class Silent:
        def __init__(self) -> None:
            self.state = DB_STARTING
            self.looks: list[float] = []

        def containers(self, service: str) -> Sequence[ContainerState]:
            self.looks.append(trio.current_time())
            return [self.state]

        async def wait_changed(self) -> None:
            await trio.sleep_forever()

    view = Silent()

    async def main() -> float:
        async with trio.open_nursery() as nursery:

            async def flip() -> None:
                await trio.sleep(1.2)
                view.state = replace(DB_STARTING, health="healthy")

            nursery.start_soon(flip)
            await wait_for_condition(view, "web", healthy_dep())
            return trio.current_time()

    assert run(main) == 1.5
    assert view.looks == [0.0, 0.5, 1.0, 1.5]


def test_parallel_waits_and_the_first_failure() -> None:
    async def main() -> str:
        board = StateBoard()
        board.update("db", DB_STARTING)
        board.update("init", ContainerState(name="p-init-1", status="running"))
        deps = [healthy_dep(), Dependency(service="init", condition="service_completed_successfully")]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                scheduled(
                    board, [(3.0, "init", ContainerState(name="p-init-1", status="exited", exit_code=1))]
                )
            )
            with pytest.raises(DependencyError) as info:
                await wait_for_dependencies(board, "web", deps)
            assert trio.current_time() == 3.0
        return info.value.message

    assert run(main) == 'service "init" didn\'t complete successfully: exit 1'


def test_parallel_waits_succeed_together() -> None:
    async def main() -> tuple[float, dict[str, bool]]:
        board = StateBoard()
        board.update("db", DB_STARTING)
        board.update("init", ContainerState(name="p-init-1", status="running"))
        deps = [healthy_dep(), Dependency(service="init", condition="service_completed_successfully")]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                scheduled(
                    board,
                    [
                        (2.0, "init", ContainerState(name="p-init-1", status="exited", exit_code=0)),
                        (30.0, "db", replace(DB_STARTING, health="healthy")),
                    ],
                )
            )
            results = await wait_for_dependencies(board, "web", deps)
        return trio.current_time(), dict(results)

    assert run(main) == (30.0, {"db": True, "init": True})


def test_timeout() -> None:
    async def main() -> tuple[float, str]:
        board = StateBoard()
        board.update("db", DB_STARTING)
        with pytest.raises(DependencyTimeout) as info:
            await wait_for_dependencies(
                board, "", [healthy_dep()], timeout=60, timeout_message="application not healthy after 1m0s"
            )
        return trio.current_time(), info.value.message

    assert run(main) == (60.0, "application not healthy after 1m0s")


# -- with a real HealthMonitor ---------------------------------------------------------------------


def test_monitor_to_board_to_wait_with_the_default_schedule() -> None:
    """A dependency with the default healthcheck: `service_healthy` is met 30 s after its start."""

    class Ok:
        async def run(self, argv: Sequence[str], output: ProbeOutput) -> int:
            return 0

    board = StateBoard()
    start_generation = 1

    def publish(event: HealthEvent) -> None:
        board.update(
            "db",
            ContainerState(
                name="p-db-1",
                status="running",
                has_healthcheck=True,
                health=str(event.status),
                start_generation=start_generation,
                health_generation=event.generation,
            ),
        )

    monitor = HealthMonitor(HealthConfig(test=("CMD", "true"), argv=("true",)), Ok(), on_change=publish)

    async def main() -> float:
        async with trio.open_nursery() as nursery:
            await nursery.start(monitor.run)
            await wait_for_condition(board, "web", healthy_dep())
            nursery.cancel_scope.cancel()
            return trio.current_time()

    assert run(main) == 30.0
