"""Restart policies and the supervision of one container: start, wait, decide, back off, start again.

The rules are the Docker engine's (moby `restartmanager/restartmanager.go`, `daemon/kill.go`,
research/compose-semantics.md §2.11) with Compose's mapping of the service (`create.go getRestartPolicy`):

- `restart: no | always | on-failure[:N] | unless-stopped`; `deploy.restart_policy` wins when set:
  condition `none`/`no` -> no, `any`/`always` -> always, `on-failure`, `unless-stopped`, and
  `max_attempts` -> N. An unset condition passes through as "" which the engine treats as `no`.
  `delay` and `window` are not used by Compose or the engine (swarm-only), so not here either.
- On every exit the delay is computed first: reset to 0 when the container ran at least 10 s, then
  100 ms if 0, else doubled while under 1 min, capped at 1 min (0.1, 0.2, 0.4 ... 51.2, 60, 60 s).
- Then: `always` restarts; `unless-stopped` restarts unless the container was manually stopped;
  `on-failure[:N]` restarts on a non-zero exit while N is 0 or fewer than N restarts were made; `no`
  never does. A user's stop or kill cancels the restart manager: no policy restarts after it, and a
  pending restart is called off. (`always` and `unless-stopped` differ after a user stop only when the
  engine itself starts: see `starts_on_boot`.)
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import trio

from composer.errors import ComposerError
from composer.log import logger
from composer.runtime.launch import ExitStatus
from composer.spec import model

__all__ = [
    "BACKOFF_MULTIPLIER",
    "INITIAL_DELAY",
    "MAX_DELAY",
    "RESET_AFTER",
    "Handle",
    "RestartEvent",
    "RestartManager",
    "RestartPolicy",
    "RestartPolicyError",
    "Starter",
    "Supervision",
    "parse_restart",
    "service_restart_policy",
    "starts_on_boot",
    "supervise",
]

INITIAL_DELAY = 0.1
BACKOFF_MULTIPLIER = 2
MAX_DELAY = 60.0
RESET_AFTER = 10.0  # a run at least this long resets the backoff


class RestartPolicyError(ComposerError):
    """A restart policy the engine refuses."""


class PolicyName(enum.StrEnum):
    NO = "no"
    ALWAYS = "always"
    ON_FAILURE = "on-failure"
    UNLESS_STOPPED = "unless-stopped"


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    name: PolicyName = PolicyName.NO
    max_retries: int = 0  # on-failure only; 0 = no limit

    def __str__(self) -> str:
        if self.name is PolicyName.ON_FAILURE and self.max_retries:
            return f"{self.name}:{self.max_retries}"
        return str(self.name)


_ALIASES = {
    "": PolicyName.NO,
    "no": PolicyName.NO,
    "none": PolicyName.NO,
    "always": PolicyName.ALWAYS,
    "any": PolicyName.ALWAYS,
    "on-failure": PolicyName.ON_FAILURE,
    "unless-stopped": PolicyName.UNLESS_STOPPED,
}


def _policy(name: str, retries: int) -> RestartPolicy:
    try:
        policy_name = _ALIASES[name]
    except KeyError:
        raise RestartPolicyError(
            f"invalid restart policy: unknown policy {name!r}; "
            "use one of 'no', 'always', 'on-failure', or 'unless-stopped'"
        ) from None
    if retries < 0:
        raise RestartPolicyError("invalid restart policy: maximum retry count cannot be negative")
    if retries and policy_name is not PolicyName.ON_FAILURE:
        raise RestartPolicyError(
            f"invalid restart policy: maximum retry count can only be used with 'on-failure' (not {name!r})"
        )
    return RestartPolicy(policy_name, retries)


def parse_restart(text: str | None) -> RestartPolicy:
    """`restart:` text -> policy (`on-failure:3`). None or "" -> `no`."""
    if not text:
        return RestartPolicy()
    name, sep, count = text.partition(":")
    retries = 0
    if sep:
        try:
            retries = int(count)
        except ValueError:
            raise RestartPolicyError(f"invalid restart policy: bad maximum retry count {count!r}") from None
    return _policy(name, retries)


def service_restart_policy(service: model.Service) -> RestartPolicy:
    """The service's policy as Compose hands it to the engine: `deploy.restart_policy` wins."""
    policy = parse_restart(service.restart)
    deploy = service.deploy.restart_policy if service.deploy is not None else None
    if deploy is not None:
        policy = _policy(deploy.condition or "", deploy.max_attempts or 0)
    return policy


def starts_on_boot(policy: RestartPolicy, manually_stopped: bool) -> bool:
    """Whether the engine starts a stopped container when it starts itself (for a re-adopting supervisor):
    `always` containers even after a user stop, `unless-stopped` ones only if not stopped by a user."""
    if policy.name is PolicyName.ALWAYS:
        return True
    return policy.name is PolicyName.UNLESS_STOPPED and not manually_stopped


class RestartManager:
    """The decision and the backoff for one container, over its restarts (moby's restartManager)."""

    def __init__(self, policy: RestartPolicy, restart_count: int = 0) -> None:
        self.policy = policy
        self.restart_count = restart_count
        self.delay = 0.0  # the current backoff; 0 before the first exit
        self.cancelled = False

    def cancel(self) -> None:
        """A user stopped or killed the container: no restart from now on."""
        self.cancelled = True

    def should_restart(self, exit_code: int, manually_stopped: bool, ran_for: float) -> float | None:
        """After an exit: the delay before the restart, or None for no restart. Counts the restart."""
        if self.policy.name is PolicyName.NO or self.cancelled:
            return None
        if ran_for >= RESET_AFTER:
            self.delay = 0.0
        if self.delay == 0:
            self.delay = INITIAL_DELAY
        elif self.delay < MAX_DELAY:
            self.delay *= BACKOFF_MULTIPLIER
        self.delay = min(self.delay, MAX_DELAY)
        name = self.policy.name
        if name is PolicyName.ALWAYS:
            restart = True
        elif name is PolicyName.UNLESS_STOPPED:
            restart = not manually_stopped
        else:  # on-failure
            limit = self.policy.max_retries
            restart = exit_code != 0 and (limit == 0 or self.restart_count < limit)
        if not restart:
            return None
        self.restart_count += 1
        return self.delay


class Handle(Protocol):
    """A started container's main process."""

    async def wait(self) -> ExitStatus: ...


class Starter(Protocol):
    """Starts the container (again); raises if it cannot."""

    async def start(self) -> Handle: ...


class EventKind(enum.StrEnum):
    STARTED = "started"  # running; `restart_count` restarts so far
    EXITED = "exited"  # the main process ended; `exit`, `ran_for`
    RESTARTING = "restarting"  # a restart follows after `delay` (Docker's `restarting` state)
    START_FAILED = "start_failed"  # a restart could not start; `error`. Supervision ends
    DONE = "done"  # no restart follows (policy, limit, user stop): supervision ends; `exit`


@dataclass(frozen=True, slots=True, kw_only=True)
class RestartEvent:
    kind: EventKind
    at: float  # trio's clock
    restart_count: int
    exit: ExitStatus | None = None
    ran_for: float | None = None
    delay: float | None = None
    error: str | None = None


class Supervision:
    """One container kept running under its policy, from a (manual) start until it stays down.

    `await nursery.start(sup.run)` returns the first handle once the container runs (a failure of the
    first start propagates, for `up` to report). A user stop calls `stop_requested()` *before* it signals,
    so the exit it causes is not restarted (a pending restart is called off too), then signals the handle
    `current_handle()` returns (it waits out a restart being started at that moment).
    """

    def __init__(
        self,
        starter: Starter,
        policy: RestartPolicy,
        *,
        on_event: Callable[[RestartEvent], None] | None = None,
        restart_count: int = 0,
    ) -> None:
        self.starter = starter
        self.manager = RestartManager(policy, restart_count)
        self.on_event = on_event
        self.manually_stopped = False
        self.handle: Handle | None = None
        self.last_exit: ExitStatus | None = None
        self._pending: trio.CancelScope | None = None
        self._starting = trio.Lock()

    @property
    def restart_count(self) -> int:
        return self.manager.restart_count

    def stop_requested(self, *, cancel: bool = True) -> None:
        """A user stop/kill is coming. `cancel=False` is a kill with a signal other than the stop signal:
        the engine then keeps its restart manager but marks the container manually stopped, which only
        `unless-stopped` honours."""
        self.manually_stopped = True
        if cancel:
            self.manager.cancel()
            if self._pending is not None:
                self._pending.cancel()

    async def current_handle(self) -> Handle | None:
        """The handle to signal for a stop: waits out a start in progress (call after `stop_requested`)."""
        async with self._starting:
            return self.handle

    async def _start(self) -> Handle:
        async with self._starting:
            handle = await self.starter.start()
            self.handle = handle
            return handle

    def _emit(
        self,
        kind: EventKind,
        *,
        exit: ExitStatus | None = None,
        ran_for: float | None = None,
        delay: float | None = None,
        error: str | None = None,
    ) -> None:
        event = RestartEvent(
            kind=kind,
            at=trio.current_time(),
            restart_count=self.restart_count,
            exit=exit,
            ran_for=ran_for,
            delay=delay,
            error=error,
        )
        logger().debug("restart.event", kind=str(kind), restart_count=self.restart_count, delay=delay)
        if self.on_event is not None:
            self.on_event(event)

    async def run(self, *, task_status: trio.TaskStatus[Handle] = trio.TASK_STATUS_IGNORED) -> ExitStatus:
        """Supervise until no restart follows; return the last exit status."""
        handle = await self._start()
        self._emit(EventKind.STARTED)
        task_status.started(handle)
        while True:
            started_at = trio.current_time()
            status = await handle.wait()
            ran_for = trio.current_time() - started_at
            self.last_exit = status
            self._emit(EventKind.EXITED, exit=status, ran_for=ran_for)
            delay = self.manager.should_restart(status.code, self.manually_stopped, ran_for)
            if delay is None:
                self._emit(EventKind.DONE, exit=status)
                return status
            self._emit(EventKind.RESTARTING, exit=status, delay=delay)
            with trio.CancelScope() as scope:
                self._pending = scope
                await trio.sleep(delay)
            self._pending = None
            if self.manager.cancelled:
                self._emit(EventKind.DONE, exit=status)
                return status
            try:
                handle = await self._start()
            except Exception as exc:  # the engine logs a failed restart and leaves the container exited
                self._emit(EventKind.START_FAILED, exit=status, error=str(exc) or type(exc).__name__)
                return status
            self._emit(EventKind.STARTED)


async def supervise(
    starter: Starter,
    policy: RestartPolicy,
    on_event: Callable[[RestartEvent], None] | None = None,
    *,
    task_status: trio.TaskStatus[Handle] = trio.TASK_STATUS_IGNORED,
) -> ExitStatus:
    """`Supervision(starter, policy, on_event=...).run()`, for when no stop control is needed."""
    return await Supervision(starter, policy, on_event=on_event).run(task_status=task_status)
