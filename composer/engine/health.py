"""Healthchecks: the effective check of a service and the monitor that runs it with the engine's schedule.

The rules are the Docker engine's (moby `daemon/health.go`, research/compose-semantics.md §2.10):

- The service's `healthcheck:` is merged over the image's HEALTHCHECK field by field, as the engine
  merges a container's config over its image's: an unset `test` takes the image's, an unset (or zero)
  duration or `retries` takes the image's. `disable: true` and `test: ["NONE"]` turn the check off,
  the image's included.
- Defaults: interval 30 s, timeout 30 s, retries 3, start_period 0, start_interval 5 s. Zero means the
  default.
- Status `starting` at every start; `healthy` after any probe that exits 0 (the failing streak resets);
  `unhealthy` once `retries` failures in a row have been counted. A failure is not counted while the
  status is still `starting` and the probe began less than `start_period` after the container started.
- The first probe runs one interval after the start, the next one an interval after the previous one
  ended (never overlapping). Inside the start period the interval is `start_interval` while the status
  is `starting`, and a probe is due at the end of the start period when that comes sooner than the
  interval.
- A probe slower than `timeout` is cancelled and recorded as exit -1 with `Health check exceeded timeout
  (30s)` (and its output so far). A probe that cannot run is recorded as exit -1 with the error.
- The output kept is the first 4096 bytes, `...` appended when more was written; the last 5 results are
  kept.

`HealthMonitor` keeps one container's health across its starts. The container's owner calls `run()`
in a nursery for each start (cancelling it when the container exits or pauses). Every fresh start
bumps `generation`, so a waiter can accept only states produced after the container's current start
(research §3 row 2: a wait that saw the previous run's `unhealthy` failed a deploy).

Times are trio's clock (`trio.current_time()`), so tests run the 30 s defaults under
`trio.testing.MockClock(autojump_threshold=0)` in milliseconds.
"""

from __future__ import annotations

import contextlib
import enum
import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import trio

from composer.errors import ComposerError
from composer.image.config import Healthcheck as ImageHealthcheck
from composer.log import logger
from composer.runtime.launch import Container, ExitStatus
from composer.runtime.spec import Stdio
from composer.spec.model import Duration, Healthcheck, go_duration

__all__ = [
    "DEFAULT_INTERVAL",
    "DEFAULT_RETRIES",
    "DEFAULT_START_INTERVAL",
    "DEFAULT_START_PERIOD",
    "DEFAULT_TIMEOUT",
    "MAX_LOG_ENTRIES",
    "MAX_OUTPUT",
    "HealthConfig",
    "HealthEvent",
    "HealthMonitor",
    "HealthSnapshot",
    "HealthStatus",
    "HealthcheckError",
    "Probe",
    "ProbeOutput",
    "ProbeRecord",
    "RuntimeProbe",
    "effective_healthcheck",
]

NS = 1_000_000_000
DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 30.0
DEFAULT_START_PERIOD = 0.0
DEFAULT_START_INTERVAL = 5.0
DEFAULT_RETRIES = 3
MAX_OUTPUT = 4096
MAX_LOG_ENTRIES = 5
MIN_DURATION_NS = 1_000_000  # the engine refuses non-zero durations under 1 ms
DEFAULT_SHELL = ("/bin/sh", "-c")


class HealthcheckError(ComposerError):
    """A healthcheck the engine would refuse (unknown test type, empty command, a duration under 1 ms)."""


class HealthStatus(enum.StrEnum):
    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthConfig:
    """The check a container runs: `argv` is what the probe executes; durations in seconds."""

    test: tuple[str, ...]  # as configured: ("CMD", ...) or ("CMD-SHELL", "...")
    argv: tuple[str, ...]
    interval_ns: int = 0  # 0 = the default; kept in nanoseconds for Go-style messages
    timeout_ns: int = 0
    start_period_ns: int = 0
    start_interval_ns: int = 0
    retries: int = 0

    @property
    def interval(self) -> float:
        return (self.interval_ns / NS) if self.interval_ns else DEFAULT_INTERVAL

    @property
    def timeout(self) -> float:
        return (self.timeout_ns / NS) if self.timeout_ns else DEFAULT_TIMEOUT

    @property
    def start_period(self) -> float:
        return (self.start_period_ns / NS) if self.start_period_ns else DEFAULT_START_PERIOD

    @property
    def start_interval(self) -> float:
        return (self.start_interval_ns / NS) if self.start_interval_ns else DEFAULT_START_INTERVAL

    @property
    def effective_retries(self) -> int:
        return self.retries if self.retries > 0 else DEFAULT_RETRIES

    def timeout_text(self) -> str:
        """The timeout as Go prints a `time.Duration` (`30s`, `1m30s`, `500ms`), for Docker's message."""
        return go_duration(self.timeout_ns or int(DEFAULT_TIMEOUT * NS))


def _ns(value: Duration | None) -> int:
    return 0 if value is None else value.nanoseconds


def effective_healthcheck(
    service: Healthcheck | None,
    image: ImageHealthcheck | None,
    *,
    shell: Sequence[str] | None = None,
) -> HealthConfig | None:
    """The check a service's containers run, or None for none. `shell`: the image's SHELL, if any."""
    if service is not None and service.disable:
        return None
    test: tuple[str, ...] | None = None
    fields = {"interval": 0, "timeout": 0, "start_period": 0, "start_interval": 0}
    retries = 0
    if service is not None:
        test = service.test
        fields = {
            "interval": _ns(service.interval),
            "timeout": _ns(service.timeout),
            "start_period": _ns(service.start_period),
            "start_interval": _ns(service.start_interval),
        }
        retries = service.retries or 0
    if image is not None:
        if not test:
            test = image.test
        inherited = {
            "interval": image.interval_ns,
            "timeout": image.timeout_ns,
            "start_period": image.start_period_ns,
            "start_interval": image.start_interval_ns,
        }
        fields = {key: value or inherited[key] for key, value in fields.items()}
        retries = retries or image.retries
    if not test or test[0] == "NONE":
        return None
    for key, value in fields.items():
        if value < 0 or 0 < value < MIN_DURATION_NS:
            raise HealthcheckError(f"healthcheck {key} cannot be less than 1ms")
    if retries < 0:
        raise HealthcheckError("healthcheck retries cannot be negative")
    kind, args = test[0], test[1:]
    if kind == "CMD":
        argv = args
    elif kind == "CMD-SHELL":
        argv = (*(tuple(shell) if shell else DEFAULT_SHELL), *args)
    else:
        raise HealthcheckError(f"unknown healthcheck type {kind!r} (expected CMD, CMD-SHELL or NONE)")
    if not args or not args[0]:
        raise HealthcheckError(f"healthcheck {kind} has no command")
    return HealthConfig(
        test=test,
        argv=argv,
        interval_ns=fields["interval"],
        timeout_ns=fields["timeout"],
        start_period_ns=fields["start_period"],
        start_interval_ns=fields["start_interval"],
        retries=retries,
    )


class ProbeOutput:
    """What a probe printed (stdout and stderr together): the first 4096 bytes, `...` when cut."""

    __slots__ = ("_buf", "truncated")

    def __init__(self) -> None:
        self._buf = bytearray()
        self.truncated = False

    def write(self, data: bytes) -> None:
        room = MAX_OUTPUT - len(self._buf)
        if room > 0:
            self._buf += data[:room]
        if len(data) > room:
            self.truncated = True

    def text(self) -> str:
        out = self._buf.decode("utf-8", errors="replace")
        return out + "..." if self.truncated else out


class Probe(Protocol):
    """Runs a command inside the container; writes what it prints to `output`; returns the exit code.

    The monitor enforces the timeout by cancelling `run`: an implementation must kill and reap its
    process when cancelled (as `Runtime.exec` does).
    """

    async def run(self, argv: Sequence[str], output: ProbeOutput) -> int: ...


class ExecRuntime(Protocol):
    """The part of `composer.runtime.launch.Runtime` a probe uses."""

    async def exec(
        self,
        container: Container,
        argv: Sequence[str],
        *,
        env: Sequence[str] = (),
        user: str | None = None,
        cwd: str | None = None,
        stdio: Stdio | None = None,
    ) -> ExitStatus: ...


class RuntimeProbe:
    """Runs probes with `Runtime.exec` in the container (its user, working dir and env, no TTY), stdout
    and stderr into one pipe. Cancellation (the timeout) kills and reaps the probe (`Runtime.exec`).

    Output still arriving after the probe's exit (a child holding the pipe) is read for `drain` seconds."""

    def __init__(self, runtime: ExecRuntime, container: Container, *, drain: float = 0.05) -> None:
        self.runtime = runtime
        self.container = container
        self.drain = drain

    async def run(self, argv: Sequence[str], output: ProbeOutput) -> int:
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        stream = trio.lowlevel.FdStream(read_fd)  # owns read_fd from here
        try:
            async with trio.open_nursery() as nursery:
                done = trio.Event()

                async def pump() -> None:
                    try:
                        while chunk := await stream.receive_some(65536):
                            output.write(chunk)
                    finally:
                        done.set()

                nursery.start_soon(pump)
                try:
                    status = await self.runtime.exec(
                        self.container, argv, stdio=Stdio(stdout=write_fd, stderr=write_fd)
                    )
                finally:
                    os.close(write_fd)
                    write_fd = -1
                with trio.move_on_after(self.drain):
                    await done.wait()
                nursery.cancel_scope.cancel()
            return status.code
        finally:
            if write_fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(write_fd)
            await stream.aclose()


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeRecord:
    """One probe's result, as in `docker inspect`'s `State.Health.Log`."""

    start: float
    end: float
    exit_code: int
    output: str


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthSnapshot:
    generation: int  # the container start this state belongs to (1 = the first start)
    status: HealthStatus
    failing_streak: int
    log: tuple[ProbeRecord, ...]  # the last 5, oldest first
    changed_at: float  # when `status` took its value

    @property
    def last_output(self) -> str | None:
        return self.log[-1].output if self.log else None


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthEvent:
    """A change of health status (including `starting` at each fresh start)."""

    generation: int
    status: HealthStatus
    previous: HealthStatus | None
    at: float
    failing_streak: int
    record: ProbeRecord | None  # the probe that caused it; None for the reset at a start


class HealthMonitor:
    """One container's health across its starts. Call `run()` per start; read or await the state."""

    def __init__(
        self,
        config: HealthConfig,
        probe: Probe,
        *,
        on_change: Callable[[HealthEvent], None] | None = None,
    ) -> None:
        self.config = config
        self.probe = probe
        self.on_change = on_change
        self.generation = 0
        self.status: HealthStatus | None = None  # None until the first start
        self.failing_streak = 0
        self.changed_at = 0.0
        self.probes = 0  # how many probes ran, over all starts
        self._log: deque[ProbeRecord] = deque(maxlen=MAX_LOG_ENTRIES)
        self._changed = trio.Event()
        self._running = False

    # -- reading -------------------------------------------------------------------------------------

    def snapshot(self) -> HealthSnapshot | None:
        if self.status is None:
            return None
        return HealthSnapshot(
            generation=self.generation,
            status=self.status,
            failing_streak=self.failing_streak,
            log=tuple(self._log),
            changed_at=self.changed_at,
        )

    async def wait_changed(self) -> None:
        """Return at the next change of state (status, streak, log or generation)."""
        await self._changed.wait()

    async def wait_for(
        self,
        statuses: Sequence[HealthStatus] = (HealthStatus.HEALTHY, HealthStatus.UNHEALTHY),
        *,
        generation: int | None = None,
    ) -> HealthSnapshot:
        """Wait until the status is one of `statuses` within `generation` (default: the current one)."""
        want = self.generation if generation is None else generation
        while True:
            snap = self.snapshot()
            if snap is not None and snap.generation == want and snap.status in statuses:
                return snap
            if snap is not None and snap.generation > want:
                raise trio.BrokenResourceError(f"container restarted (start {snap.generation} > {want})")
            await self.wait_changed()

    # -- running -------------------------------------------------------------------------------------

    async def run(
        self,
        started_at: float | None = None,
        *,
        fresh: bool = True,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Probe until cancelled. `started_at`: the container's start (default: now).

        `fresh=True` (a start or restart) resets the status to `starting` and begins a new generation;
        `fresh=False` resumes after an unpause, keeping the status. `task_status.started()` gets the
        generation.
        """
        if self._running:
            raise RuntimeError("a HealthMonitor runs once at a time")
        self._running = True
        try:
            started = trio.current_time() if started_at is None else started_at
            if fresh or self.status is None:
                self.generation += 1
                self.failing_streak = 0
                self._set_status(HealthStatus.STARTING, None, force=True)
            task_status.started(self.generation)
            while True:
                await trio.sleep(self._next_interval(started))
                self._handle(await self._probe_once(), started)
        finally:
            self._running = False

    def _next_interval(self, started: float) -> float:
        """The wait before the next probe (moby `monitor.getInterval`)."""
        config = self.config
        elapsed = trio.current_time() - started
        if elapsed >= config.start_period:
            return config.interval
        remaining = config.start_period - elapsed
        if remaining < config.interval:
            return remaining
        if self.status is HealthStatus.STARTING:
            return config.start_interval
        return config.interval

    async def _probe_once(self) -> ProbeRecord:
        output = ProbeOutput()
        start = trio.current_time()
        self.probes += 1
        exit_code: int | None = None
        error: str | None = None
        with trio.move_on_after(self.config.timeout):
            try:
                exit_code = await self.probe.run(self.config.argv, output)
            except Exception as exc:  # a probe that cannot run is a failed probe, as in the engine
                error = _describe(exc)
        end = trio.current_time()
        if error is not None:
            return ProbeRecord(start=start, end=end, exit_code=-1, output=error)
        if exit_code is None:
            text = output.text()
            message = f"Health check exceeded timeout ({self.config.timeout_text()})"
            if text:
                message += f": {text}"
            return ProbeRecord(start=start, end=end, exit_code=-1, output=message)
        return ProbeRecord(start=start, end=end, exit_code=exit_code, output=output.text())

    def _handle(self, record: ProbeRecord, started: float) -> None:
        """Fold one result into the state (moby `handleProbeResult`)."""
        self._log.append(record)
        if record.exit_code == 0:
            self.failing_streak = 0
            self._set_status(HealthStatus.HEALTHY, record)
            return
        counts = not (
            self.status is HealthStatus.STARTING and record.start - started < self.config.start_period
        )
        if counts:
            self.failing_streak += 1
            if self.failing_streak >= self.config.effective_retries:
                self._set_status(HealthStatus.UNHEALTHY, record)
                return
        self._notify()

    def _set_status(self, status: HealthStatus, record: ProbeRecord | None, *, force: bool = False) -> None:
        previous = self.status
        if status is not previous or force:
            self.status = status
            self.changed_at = trio.current_time()
            event = HealthEvent(
                generation=self.generation,
                status=status,
                previous=previous,
                at=self.changed_at,
                failing_streak=self.failing_streak,
                record=record,
            )
            code = None if record is None else record.exit_code
            logger().debug("health.status", status=str(status), generation=self.generation, exit_code=code)
            if self.on_change is not None:
                self.on_change(event)
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


def _describe(exc: BaseException) -> str:
    """An error's text; a group of one (a probe's nursery) reads as its only member."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return str(exc) or type(exc).__name__
