"""Restart policies and the supervision loop, with fake containers under a virtual clock."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

from composer.engine.restart import (
    EventKind,
    PolicyName,
    RestartEvent,
    RestartManager,
    RestartPolicy,
    RestartPolicyError,
    Supervision,
    parse_restart,
    service_restart_policy,
    starts_on_boot,
    supervise,
)
from composer.runtime.launch import ExitStatus
from composer.spec.model import Deploy, Service
from composer.spec.model import RestartPolicy as DeployRestartPolicy

ALWAYS = RestartPolicy(PolicyName.ALWAYS)
UNLESS_STOPPED = RestartPolicy(PolicyName.UNLESS_STOPPED)
ON_FAILURE = RestartPolicy(PolicyName.ON_FAILURE)
NO = RestartPolicy(PolicyName.NO)


def run(fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    return trio.run(fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))


class FakeHandle:
    def __init__(self, run_for: float, code: int) -> None:
        self.run_for = run_for
        self.code = code
        self.status: ExitStatus | None = None
        self._killed = trio.Event()

    def kill(self, sig: int = 9) -> None:
        self.status = ExitStatus(128 + sig, sig)
        self._killed.set()

    async def wait(self) -> ExitStatus:
        with trio.move_on_after(self.run_for):
            await self._killed.wait()
        return self.status or ExitStatus(self.code)


class FakeStarter:
    """Run n (0-based) lives `script(n)` = (seconds, exit code); `fail_at` makes that start raise."""

    def __init__(self, script: Callable[[int], tuple[float, int]], fail_at: int | None = None) -> None:
        self.script = script
        self.fail_at = fail_at
        self.starts: list[float] = []
        self.handles: list[FakeHandle] = []

    async def start(self) -> FakeHandle:
        n = len(self.starts)
        self.starts.append(trio.current_time())
        if n == self.fail_at:
            raise OSError("pivot_root: no such file or directory")
        handle = FakeHandle(*self.script(n))
        self.handles.append(handle)
        return handle


def crashes(code: int = 1, run_for: float = 0.0) -> Callable[[int], tuple[float, int]]:
    return lambda n: (run_for, code)


def supervised(
    starter: FakeStarter,
    policy: RestartPolicy,
    *,
    stop_after: int | None = None,
    limit: float = 10_000.0,
) -> tuple[ExitStatus | None, list[RestartEvent], Supervision]:
    """Run a supervision; a user stop comes once `stop_after` restarts were made."""
    events: list[RestartEvent] = []
    sup: Supervision

    def on_event(event: RestartEvent) -> None:
        events.append(event)
        if (
            stop_after is not None
            and event.kind is EventKind.RESTARTING
            and event.restart_count >= stop_after
        ):
            sup.stop_requested()

    sup = Supervision(starter, policy, on_event=on_event)
    result: list[ExitStatus] = []

    async def main() -> None:
        with trio.move_on_after(limit):
            result.append(await sup.run())

    run(main)
    return (result[0] if result else None), events, sup


def delays(events: list[RestartEvent]) -> list[float]:
    return [e.delay for e in events if e.kind is EventKind.RESTARTING and e.delay is not None]


# -- policies --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        (None, NO),
        ("no", NO),
        ("always", ALWAYS),
        ("unless-stopped", UNLESS_STOPPED),
        ("on-failure", ON_FAILURE),
        ("on-failure:5", RestartPolicy(PolicyName.ON_FAILURE, 5)),
    ],
)
def test_parse_restart(text: str | None, policy: RestartPolicy) -> None:
    assert parse_restart(text) == policy


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sometimes", "unknown policy 'sometimes'"),
        ("always:3", "maximum retry count can only be used with 'on-failure'"),
        ("on-failure:x", "bad maximum retry count 'x'"),
        ("on-failure:-1", "cannot be negative"),
    ],
)
def test_parse_restart_refuses(text: str, message: str) -> None:
    with pytest.raises(RestartPolicyError, match=message):
        parse_restart(text)


def test_policy_text() -> None:
    assert [str(parse_restart(t)) for t in ("no", "always", "on-failure", "on-failure:3")] == [
        "no",
        "always",
        "on-failure",
        "on-failure:3",
    ]


@pytest.mark.parametrize(
    ("condition", "attempts", "policy"),
    [
        ("none", None, NO),
        ("any", None, ALWAYS),
        ("on-failure", 4, RestartPolicy(PolicyName.ON_FAILURE, 4)),
        ("on-failure", None, ON_FAILURE),
        (None, None, NO),  # Compose passes "" to the engine, which reads it as `no`
    ],
)
def test_deploy_restart_policy_wins(
    condition: str | None, attempts: int | None, policy: RestartPolicy
) -> None:
    deploy = Deploy(restart_policy=DeployRestartPolicy(condition=condition, max_attempts=attempts))
    assert service_restart_policy(Service(name="web", restart="always", deploy=deploy)) == policy
    assert service_restart_policy(Service(name="web", restart="unless-stopped")) == UNLESS_STOPPED
    assert service_restart_policy(Service(name="web", deploy=Deploy())) == NO


def test_starts_on_boot() -> None:
    assert starts_on_boot(ALWAYS, manually_stopped=True)
    assert starts_on_boot(UNLESS_STOPPED, manually_stopped=False)
    assert not starts_on_boot(UNLESS_STOPPED, manually_stopped=True)
    assert not starts_on_boot(ON_FAILURE, manually_stopped=False)
    assert not starts_on_boot(NO, manually_stopped=False)


def test_manager_computes_the_delay_even_without_a_restart() -> None:
    manager = RestartManager(ON_FAILURE)
    assert manager.should_restart(0, False, 0.0) is None  # exit 0: no restart, but the delay moved
    assert manager.delay == pytest.approx(0.1)
    assert manager.should_restart(1, False, 0.0) == pytest.approx(0.2)
    assert manager.restart_count == 1


# -- backoff ---------------------------------------------------------------------------------------


def test_backoff_doubles_from_100ms_to_one_minute() -> None:
    starter = FakeStarter(crashes())
    status, events, sup = supervised(starter, ALWAYS, stop_after=14)
    expected = [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 51.2, 60.0, 60.0, 60.0, 60.0]
    assert delays(events) == pytest.approx(expected)
    # each start comes exactly its delay after the previous crash (the fake runs for 0 s)
    gaps = [b - a for a, b in zip(starter.starts, starter.starts[1:], strict=False)]
    assert gaps == pytest.approx(expected[:13])
    assert sup.restart_count == 14
    assert status == ExitStatus(1)
    assert events[-1].kind is EventKind.DONE


def test_backoff_resets_after_ten_seconds_of_running() -> None:
    runs = [0.0, 0.0, 0.0, 10.0, 0.0, 9.99, 0.0]
    starter = FakeStarter(lambda n: (runs[n], 1))
    _, events, _ = supervised(starter, ALWAYS, stop_after=len(runs))
    assert delays(events) == pytest.approx([0.1, 0.2, 0.4, 0.1, 0.2, 0.4, 0.8])
    exits = [(e.at, e.ran_for) for e in events if e.kind is EventKind.EXITED]
    assert exits[3] == pytest.approx((10.7, 10.0))


def test_first_restart_comes_100ms_after_the_crash() -> None:
    starter = FakeStarter(lambda n: (5.0, 137) if n == 0 else (1000.0, 0))
    _, events, _ = supervised(starter, ALWAYS, limit=100)
    assert starter.starts == pytest.approx([0.0, 5.1])
    kinds = [(e.kind, e.at) for e in events]
    assert kinds == [
        (EventKind.STARTED, 0.0),
        (EventKind.EXITED, 5.0),
        (EventKind.RESTARTING, 5.0),
        (EventKind.STARTED, pytest.approx(5.1)),
    ]
    assert events[1].exit == ExitStatus(137)


# -- decisions -------------------------------------------------------------------------------------


def test_on_failure_n_stops_after_n_restarts() -> None:
    starter = FakeStarter(crashes(code=3, run_for=1.0))
    status, events, sup = supervised(starter, RestartPolicy(PolicyName.ON_FAILURE, 3))
    assert len(starter.starts) == 4  # the first start and 3 restarts
    assert sup.restart_count == 3
    assert status == ExitStatus(3)
    assert [e.restart_count for e in events if e.kind is EventKind.RESTARTING] == [1, 2, 3]
    assert events[-1].kind is EventKind.DONE and events[-1].at == pytest.approx(4.7)


def test_on_failure_does_not_restart_on_exit_zero() -> None:
    starter = FakeStarter(crashes(code=0, run_for=2.0))
    status, events, sup = supervised(starter, ON_FAILURE)
    assert (status, len(starter.starts), sup.restart_count) == (ExitStatus(0), 1, 0)
    assert [e.kind for e in events] == [EventKind.STARTED, EventKind.EXITED, EventKind.DONE]


def test_always_restarts_on_exit_zero() -> None:
    starter = FakeStarter(crashes(code=0, run_for=1.0))
    _, _, sup = supervised(starter, ALWAYS, stop_after=2)
    assert sup.restart_count == 2


def test_no_never_restarts() -> None:
    starter = FakeStarter(crashes(code=1))
    status, _, sup = supervised(starter, NO)
    assert (status, len(starter.starts), sup.restart_count) == (ExitStatus(1), 1, 0)


def test_supervise_function() -> None:
    starter = FakeStarter(crashes(code=0))

    async def main() -> ExitStatus:
        return await supervise(starter, ON_FAILURE)

    assert run(main) == ExitStatus(0)


# -- user stop and kill ---------------------------------------------------------------------------


@pytest.mark.parametrize("policy", [ALWAYS, UNLESS_STOPPED, ON_FAILURE])
def test_a_user_stop_never_restarts(policy: RestartPolicy) -> None:
    starter = FakeStarter(lambda n: (1000.0, 0))
    events: list[RestartEvent] = []
    sup = Supervision(starter, policy, on_event=events.append)

    async def main() -> ExitStatus:
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(7)
            sup.stop_requested()
            handle = await sup.current_handle()
            assert isinstance(handle, FakeHandle)
            handle.kill(9)
        assert sup.last_exit is not None
        return sup.last_exit

    assert run(main) == ExitStatus(137, 9)
    assert len(starter.starts) == 1
    assert [(e.kind, e.at) for e in events][-2:] == [(EventKind.EXITED, 7.0), (EventKind.DONE, 7.0)]


def test_stop_calls_off_a_pending_restart() -> None:
    starter = FakeStarter(crashes(run_for=1.0))
    events: list[RestartEvent] = []
    sup = Supervision(starter, ALWAYS, on_event=events.append)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sup.run)
            # crashes at 1.0, 1.1+1 = 2.1, 2.1+0.2+1 = 3.3, 3.3+0.4+1 = 4.7; restarting until 5.5
            await trio.sleep(5.0)
            sup.stop_requested()

    run(main)
    assert len(starter.starts) == 4
    assert [(e.kind, e.at) for e in events][-1] == (EventKind.DONE, 5.0)


def test_kill_with_another_signal_restarts_always_not_unless_stopped() -> None:
    def scenario(policy: RestartPolicy) -> int:
        starter = FakeStarter(lambda n: (1000.0, 0))
        sup = Supervision(starter, policy)

        async def main() -> None:
            with trio.move_on_after(50):
                async with trio.open_nursery() as nursery:
                    handle = await nursery.start(sup.run)
                    await trio.sleep(3)
                    sup.stop_requested(cancel=False)  # e.g. `kill -s USR1` when stop_signal is TERM
                    assert isinstance(handle, FakeHandle)
                    handle.kill(10)

        run(main)
        return len(starter.starts)

    assert scenario(ALWAYS) == 2
    assert scenario(UNLESS_STOPPED) == 1


# -- start failures --------------------------------------------------------------------------------


def test_a_failed_first_start_propagates() -> None:
    starter = FakeStarter(crashes(), fail_at=0)

    async def main() -> None:
        await Supervision(starter, ALWAYS).run()

    with pytest.raises(OSError, match="pivot_root"):
        run(main)


def test_a_failed_restart_ends_supervision() -> None:
    starter = FakeStarter(crashes(run_for=1.0), fail_at=2)
    status, events, _ = supervised(starter, ALWAYS)
    assert status == ExitStatus(1)
    assert events[-1].kind is EventKind.START_FAILED
    assert events[-1].error == "pivot_root: no such file or directory"
    assert events[-1].at == pytest.approx(2.3)  # crashes at 1 and 2.1, restarts 0.1 and 0.2 later
