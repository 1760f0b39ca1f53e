"""Healthchecks: the effective check, and the monitor's schedule under a virtual clock.

Times are exact: `MockClock(autojump_threshold=0)` jumps straight to the next deadline whenever every
task waits, so a 30 s interval takes no real time and `trio.current_time()` reads 30.0 exactly.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
import trio
import trio.testing

from composer.engine.health import (
    HealthcheckError,
    HealthConfig,
    HealthEvent,
    HealthMonitor,
    HealthStatus,
    ProbeOutput,
    RuntimeProbe,
    effective_healthcheck,
)
from composer.image.config import Healthcheck as ImageHealthcheck
from composer.runtime.launch import ExitStatus
from composer.runtime.spec import Stdio
from composer.spec.model import Duration, Healthcheck

S = 1_000_000_000


def run(fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    return trio.run(fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))


def secs(value: float, text: str = "") -> Duration:
    return Duration(int(value * S), text)


class ScriptProbe:
    """Probe n (0-based) takes `script(n)` = (seconds, exit code, output)."""

    def __init__(self, script: Callable[[int], tuple[float, int, str]]) -> None:
        self.script = script
        self.starts: list[float] = []
        self.argvs: list[tuple[str, ...]] = []

    async def run(self, argv: Sequence[str], output: ProbeOutput) -> int:
        n = len(self.starts)
        self.starts.append(trio.current_time())
        self.argvs.append(tuple(argv))
        seconds, code, text = self.script(n)
        output.write(text.encode())
        await trio.sleep(seconds)
        return code


def codes(*results: int, then: int | None = None) -> Callable[[int], tuple[float, int, str]]:
    def script(n: int) -> tuple[float, int, str]:
        code = results[n] if n < len(results) else (results[-1] if then is None else then)
        return (0.0, code, f"probe {n}")

    return script


def config(**kw: Any) -> HealthConfig:
    ns = {key: int(kw.pop(key) * S) for key in list(kw) if key.endswith("_s")}
    fields = {key[:-2] + "_ns": value for key, value in ns.items()}
    return HealthConfig(test=("CMD", "true"), argv=("true",), **fields, **kw)


def monitor_for(
    cfg: HealthConfig, probe: ScriptProbe, until: float
) -> tuple[HealthMonitor, list[HealthEvent]]:
    events: list[HealthEvent] = []
    mon = HealthMonitor(cfg, probe, on_change=events.append)

    async def main() -> None:
        with trio.move_on_after(until):
            await mon.run()

    run(main)
    return mon, events


def timeline(events: list[HealthEvent]) -> list[tuple[float, str]]:
    return [(e.at, str(e.status)) for e in events]


# -- the effective healthcheck ---------------------------------------------------------------------


def test_shell_string_runs_through_bin_sh() -> None:
    cfg = effective_healthcheck(Healthcheck(test=("CMD-SHELL", "curl -f localhost || exit 1")), None)
    assert cfg is not None
    assert cfg.argv == ("/bin/sh", "-c", "curl -f localhost || exit 1")
    assert (cfg.interval, cfg.timeout, cfg.effective_retries, cfg.start_period, cfg.start_interval) == (
        30.0,
        30.0,
        3,
        0.0,
        5.0,
    )


def test_shell_form_uses_the_image_shell() -> None:
    cfg = effective_healthcheck(Healthcheck(test=("CMD-SHELL", "echo hi")), None, shell=("/bin/bash", "-ec"))
    assert cfg is not None and cfg.argv == ("/bin/bash", "-ec", "echo hi")


def test_exec_form_is_the_argv() -> None:
    cfg = effective_healthcheck(Healthcheck(test=("CMD", "pg_isready", "-U", "app")), None)
    assert cfg is not None and cfg.argv == ("pg_isready", "-U", "app")


def test_none_and_disable_turn_the_image_check_off() -> None:
    image = ImageHealthcheck(test=("CMD", "true"))
    assert effective_healthcheck(Healthcheck(test=("NONE",)), image) is None
    assert effective_healthcheck(Healthcheck(disable=True), image) is None
    assert effective_healthcheck(None, ImageHealthcheck(test=("NONE",))) is None
    assert effective_healthcheck(None, None) is None


def test_image_check_is_inherited_field_by_field() -> None:
    image = ImageHealthcheck(test=("CMD", "probe"), interval_ns=10 * S, timeout_ns=3 * S, retries=7)
    assert effective_healthcheck(None, image) == HealthConfig(
        test=("CMD", "probe"), argv=("probe",), interval_ns=10 * S, timeout_ns=3 * S, retries=7
    )
    # the service sets only an interval: the test and the rest come from the image
    cfg = effective_healthcheck(Healthcheck(interval=secs(2)), image)
    assert cfg is not None
    assert (cfg.argv, cfg.interval, cfg.timeout, cfg.effective_retries) == (("probe",), 2.0, 3.0, 7)
    # no test anywhere: no check
    assert effective_healthcheck(Healthcheck(interval=secs(2)), None) is None


def test_zero_means_default() -> None:
    cfg = effective_healthcheck(Healthcheck(test=("CMD", "x"), interval=secs(0), retries=0), None)
    assert cfg is not None and (cfg.interval, cfg.effective_retries) == (30.0, 3)


@pytest.mark.parametrize(
    ("check", "message"),
    [
        (Healthcheck(test=("HTTP", "/")), "unknown healthcheck type 'HTTP'"),
        (Healthcheck(test=("CMD",)), "healthcheck CMD has no command"),
        (Healthcheck(test=("CMD-SHELL", "")), "healthcheck CMD-SHELL has no command"),
        (Healthcheck(test=("CMD", "x"), interval=Duration(500_000)), "interval cannot be less than 1ms"),
    ],
)
def test_refused_checks(check: Healthcheck, message: str) -> None:
    with pytest.raises(HealthcheckError, match=message):
        effective_healthcheck(check, None)


# -- the schedule ----------------------------------------------------------------------------------


def test_default_schedule_first_probe_after_one_interval() -> None:
    probe = ScriptProbe(codes(0))
    mon, events = monitor_for(config(), probe, until=100)
    assert probe.starts == [30.0, 60.0, 90.0]
    assert timeline(events) == [(0.0, "starting"), (30.0, "healthy")]
    assert mon.probes == 3


def test_next_probe_is_an_interval_after_the_previous_one_ended() -> None:
    probe = ScriptProbe(lambda n: (2.0, 0, ""))
    monitor_for(config(interval_s=10), probe, until=50)
    assert probe.starts == [10.0, 22.0, 34.0, 46.0]


def test_unhealthy_after_retries_consecutive_failures() -> None:
    probe = ScriptProbe(codes(1))
    mon, events = monitor_for(config(interval_s=5, retries=3), probe, until=16)
    assert probe.starts == [5.0, 10.0, 15.0]
    assert timeline(events) == [(0.0, "starting"), (15.0, "unhealthy")]
    assert mon.failing_streak == 3


def test_default_retries_is_three() -> None:
    probe = ScriptProbe(codes(1))
    _, events = monitor_for(config(), probe, until=100)
    assert timeline(events) == [(0.0, "starting"), (90.0, "unhealthy")]


def test_recovery_resets_the_streak() -> None:
    probe = ScriptProbe(codes(1, 1, 1, 1, 0, 1, 1, 0))
    mon, events = monitor_for(config(interval_s=1, retries=3), probe, until=8.5)
    assert timeline(events) == [(0.0, "starting"), (3.0, "unhealthy"), (5.0, "healthy")]
    # two failures after recovery do not make it unhealthy again, and the success at 8 resets them
    assert mon.status is HealthStatus.HEALTHY and mon.failing_streak == 0


def test_start_period_uses_start_interval_and_does_not_count_failures() -> None:
    probe = ScriptProbe(codes(1))
    cfg = config(interval_s=30, start_period_s=60, start_interval_s=5)
    mon, events = monitor_for(cfg, probe, until=121)
    # every 5 s while starting; once less than an interval of the start period remains, the next probe
    # is due at its end (moby getInterval); then the normal interval
    assert probe.starts == [5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 60.0, 90.0, 120.0]
    # failures that began inside the start period did not count: 60, 90 and 120 make it unhealthy
    assert timeline(events) == [(0.0, "starting"), (120.0, "unhealthy")]
    assert mon.failing_streak == 3


def test_failures_count_in_the_start_period_once_healthy() -> None:
    probe = ScriptProbe(codes(0, 1, 1, 1))
    cfg = config(interval_s=30, start_period_s=60, start_interval_s=5, retries=3)
    _, events = monitor_for(cfg, probe, until=100)
    # healthy at 5; then the normal interval (status no longer starting), clipped to the period's end
    assert probe.starts == [5.0, 35.0, 60.0, 90.0]
    assert timeline(events) == [(0.0, "starting"), (5.0, "healthy"), (90.0, "unhealthy")]


def test_default_start_interval_is_five_seconds() -> None:
    probe = ScriptProbe(codes(1, 1, 0))
    _, events = monitor_for(config(start_period_s=100), probe, until=16)
    assert probe.starts == [5.0, 10.0, 15.0]
    assert timeline(events) == [(0.0, "starting"), (15.0, "healthy")]


def test_slow_probe_times_out_with_dockers_message() -> None:
    probe = ScriptProbe(lambda n: (100.0, 0, "partial"))
    mon, events = monitor_for(config(interval_s=30, timeout_s=10, retries=1), probe, until=75)
    assert probe.starts == [30.0, 70.0]  # the next one an interval after the timed-out one ended
    assert timeline(events) == [(0.0, "starting"), (40.0, "unhealthy")]
    snap = mon.snapshot()
    assert snap is not None
    (record,) = snap.log
    assert (record.start, record.end, record.exit_code) == (30.0, 40.0, -1)
    assert record.output == "Health check exceeded timeout (10s): partial"


def test_timeout_message_without_output_and_go_duration_text() -> None:
    probe = ScriptProbe(lambda n: (1000.0, 0, ""))
    mon, _ = monitor_for(config(interval_s=1, timeout_s=90), probe, until=100)
    snap = mon.snapshot()
    assert snap is not None and snap.log[0].output == "Health check exceeded timeout (1m30s)"


def test_default_timeout_is_thirty_seconds() -> None:
    probe = ScriptProbe(lambda n: (1000.0, 0, ""))
    mon, _ = monitor_for(config(interval_s=1), probe, until=40)
    snap = mon.snapshot()
    assert snap is not None
    assert (snap.log[0].start, snap.log[0].end) == (1.0, 31.0)
    assert snap.log[0].output == "Health check exceeded timeout (30s)"


def test_a_probe_that_cannot_run_is_a_failure() -> None:
    class Broken:
        async def run(self, argv: Sequence[str], output: ProbeOutput) -> int:
            raise OSError("exec: no such file")

    events: list[HealthEvent] = []
    mon = HealthMonitor(config(interval_s=1, retries=1), Broken(), on_change=events.append)

    async def main() -> None:
        with trio.move_on_after(1.5):
            await mon.run()

    run(main)
    snap = mon.snapshot()
    assert snap is not None and (snap.status, snap.log[0].exit_code) == (HealthStatus.UNHEALTHY, -1)
    assert snap.log[0].output == "exec: no such file"


def test_last_five_results_kept_and_output_truncated() -> None:
    probe = ScriptProbe(lambda n: (0.0, 0, "x" * 5000 if n == 6 else f"run {n}"))
    mon, _ = monitor_for(config(interval_s=1), probe, until=7.5)
    snap = mon.snapshot()
    assert snap is not None
    assert [r.output[:5] for r in snap.log] == ["run 2", "run 3", "run 4", "run 5", "xxxxx"]
    assert snap.log[-1].output == "x" * 4096 + "..."
    assert snap.last_output == snap.log[-1].output


def test_output_exactly_4096_bytes_is_not_marked() -> None:
    out = ProbeOutput()
    out.write(b"a" * 4000)
    out.write(b"b" * 96)
    assert out.text() == "a" * 4000 + "b" * 96
    out.write(b"")
    assert not out.truncated
    out.write(b"c")
    assert out.text().endswith("b...")


# -- starts, generations, waiting -----------------------------------------------------------------


def test_each_start_is_a_new_generation_reset_to_starting() -> None:
    probe = ScriptProbe(codes(1))
    events: list[HealthEvent] = []
    mon = HealthMonitor(config(interval_s=1, retries=1), probe, on_change=events.append)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            first = await nursery.start(mon.run)
            assert first == 1
            await trio.sleep(2.5)  # unhealthy at 1
            nursery.cancel_scope.cancel()  # the container exited
        await trio.sleep(0.5)  # the restart backoff
        async with trio.open_nursery() as nursery:
            assert await nursery.start(mon.run) == 2
            snap = mon.snapshot()
            assert snap is not None and (snap.status, snap.generation) == (HealthStatus.STARTING, 2)
            assert snap.failing_streak == 0
            nursery.cancel_scope.cancel()

    run(main)
    assert [(e.at, e.generation, str(e.status)) for e in events] == [
        (0.0, 1, "starting"),
        (1.0, 1, "unhealthy"),
        (3.0, 2, "starting"),
    ]


def test_resume_after_pause_keeps_the_status() -> None:
    probe = ScriptProbe(codes(0))
    mon = HealthMonitor(config(interval_s=10), probe)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(mon.run)
            await trio.sleep(15)
            nursery.cancel_scope.cancel()  # paused at 15
        await trio.sleep(100)
        async with trio.open_nursery() as nursery:
            assert (
                await nursery.start(lambda task_status: mon.run(0.0, fresh=False, task_status=task_status))
                == 1
            )
            assert mon.status is HealthStatus.HEALTHY
            await trio.sleep(11)
            nursery.cancel_scope.cancel()

    run(main)
    assert probe.starts == [10.0, 125.0]


def test_wait_for_accepts_only_the_current_generation() -> None:
    probe = ScriptProbe(codes(1, 0))
    mon = HealthMonitor(config(interval_s=1, retries=1), probe)
    seen: list[tuple[float, str, int]] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(mon.run)
            snap = await mon.wait_for()
            seen.append((trio.current_time(), str(snap.status), snap.generation))
            nursery.cancel_scope.cancel()
        async with trio.open_nursery() as nursery:
            generation = await nursery.start(mon.run)
            snap = await mon.wait_for(generation=generation)
            seen.append((trio.current_time(), str(snap.status), snap.generation))
            nursery.cancel_scope.cancel()

    run(main)
    assert seen == [(1.0, "unhealthy", 1), (2.0, "healthy", 2)]


def test_wait_for_an_old_generation_fails_after_a_restart() -> None:
    mon = HealthMonitor(config(interval_s=100), ScriptProbe(codes(0)))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(mon.run)
            nursery.cancel_scope.cancel()
        async with trio.open_nursery() as nursery:
            await nursery.start(mon.run)
            with pytest.raises(trio.BrokenResourceError):
                await mon.wait_for(generation=1)
            nursery.cancel_scope.cancel()

    run(main)


# -- the probe through the runtime ----------------------------------------------------------------


class FakeRuntime:
    """`Runtime.exec` stand-in: writes to the stdout it is given, takes `seconds`, exits `code`."""

    def __init__(self, text: bytes, code: int, seconds: float = 0.0) -> None:
        self.text, self.code, self.seconds = text, code, seconds
        self.calls: list[tuple[str, ...]] = []

    async def exec(
        self,
        container: object,
        argv: Sequence[str],
        *,
        env: Sequence[str] = (),
        user: str | None = None,
        cwd: str | None = None,
        stdio: Stdio | None = None,
    ) -> ExitStatus:
        assert stdio is not None and stdio.stdout is not None and stdio.stdout == stdio.stderr
        self.calls.append(tuple(argv))
        os.write(stdio.stdout, self.text)
        await trio.sleep(self.seconds)
        return ExitStatus(self.code)


def test_runtime_probe_collects_output_and_exit_code() -> None:
    runtime = FakeRuntime(b"ok " * 2000, 3)
    probe = RuntimeProbe(runtime, container=None)  # type: ignore[arg-type]
    output = ProbeOutput()

    async def main() -> int:
        return await probe.run(["pg_isready"], output)

    assert run(main) == 3
    assert runtime.calls == [("pg_isready",)]
    assert output.text() == ("ok " * 2000)[:4096] + "..."


def test_runtime_probe_timeout_through_the_monitor() -> None:
    runtime = FakeRuntime(b"still working", 0, seconds=100)
    events: list[HealthEvent] = []
    mon = HealthMonitor(
        config(interval_s=1, timeout_s=2, retries=1),
        RuntimeProbe(runtime, container=None),  # type: ignore[arg-type]
        on_change=events.append,
    )

    async def main() -> None:
        with trio.move_on_after(3.5):
            await mon.run()

    run(main)
    assert timeline(events) == [(0.0, "starting"), (3.0, "unhealthy")]
    snap = mon.snapshot()
    assert snap is not None and snap.log[0].output == "Health check exceeded timeout (2s): still working"


def test_runtime_probe_that_cannot_exec_reads_as_the_error() -> None:
    class NoExec(FakeRuntime):
        async def exec(self, container: object, argv: Sequence[str], **kw: Any) -> ExitStatus:
            raise OSError("exec: container web is not running")

    mon = HealthMonitor(config(interval_s=1, retries=1), RuntimeProbe(NoExec(b"", 0), container=None))  # type: ignore[arg-type]

    async def main() -> None:
        with trio.move_on_after(1.5):
            await mon.run()

    run(main)
    snap = mon.snapshot()
    assert snap is not None and snap.log[0].output == "exec: container web is not running"
