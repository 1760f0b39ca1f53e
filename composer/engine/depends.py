"""Waiting for `depends_on` conditions (and for `up --wait`), given a view of the dependencies' state.

Compose's rules (DC `pkg/compose/convergence.go waitDependencies`, `isServiceHealthy`,
`isServiceCompleted`; research/compose-semantics.md §2.9) and its messages:

- `service_started`: nothing to wait for (the start order is the graph's).
- `service_healthy`: every container of the dependency `healthy`. `starting` -> keep waiting. An exited
  container fails at once (`container X exited (N)`), so does `unhealthy` (`container X is unhealthy`)
  and a container without a healthcheck (`container X has no healthcheck configured`); the error reads
  `dependency failed to start: ...`. composer adds the last probe's output to the unhealthy case
  (research §3 row 1).
- `service_completed_successfully`: the first exited container decides: 0 succeeds, otherwise
  `service "X" didn't complete successfully: exit N`.
- `running_or_healthy` (`up --wait`): healthy when the container has a healthcheck, else running.
- `required: false`: a failure is a warning (`optional dependency "X" failed to start: ...`) and the
  wait succeeds. A dependency with no container: `S is missing dependency X` (a warning if optional).
  Scale 0 or a service left out by `--no-deps` is not waited for: the caller leaves it out.
- Compose polls every 500 ms. Here a view also signals changes (`wait_changed`), so a wait ends the
  moment the state allows; the 500 ms poll remains as a floor for views that cannot signal.
- A health state counts only if it belongs to the container's current start (`health_generation ==
  start_generation`); an older one reads as `starting` (research §3 row 2). A container that is
  `created` or `restarting` has not reached the condition yet.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import trio

from composer.errors import ComposerError, one_line
from composer.log import logger
from composer.spec.model import Dependency

__all__ = [
    "POLL_INTERVAL",
    "Condition",
    "ContainerState",
    "DependencyError",
    "DependencyTimeout",
    "StateBoard",
    "StateView",
    "check_condition",
    "wait_for_condition",
    "wait_for_dependencies",
]

POLL_INTERVAL = 0.5
MAX_OUTPUT_IN_MESSAGE = 200


class Condition(enum.StrEnum):
    STARTED = "service_started"
    HEALTHY = "service_healthy"
    COMPLETED_SUCCESSFULLY = "service_completed_successfully"
    RUNNING_OR_HEALTHY = "running_or_healthy"  # `up --wait`, not a compose-file value


class DependencyError(ComposerError):
    """A dependency that failed its condition; `service` names the dependency."""

    def __init__(self, message: str, *, service: str) -> None:
        super().__init__(message)
        self.service = service


class DependencyTimeout(ComposerError):
    """The wait ran past its timeout."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerState:
    """What a wait needs to know about one container of a dependency."""

    name: str  # the container's name (`proj-db-1`)
    status: str  # "created" | "running" | "restarting" | "paused" | "exited" | "dead" (Docker's words)
    exit_code: int | None = None
    has_healthcheck: bool = False
    health: str | None = None  # "starting" | "healthy" | "unhealthy"; None when no healthcheck
    health_output: str | None = None  # the last probe's output
    start_generation: int = 0  # bumped on every start of the container
    health_generation: int = 0  # the start the health status belongs to

    def current_health(self) -> str | None:
        """The health of the current start: a status left over from an earlier start reads `starting`."""
        if not self.has_healthcheck:
            return None
        if self.health is None or self.health_generation != self.start_generation:
            return "starting"
        return self.health


class StateView(Protocol):
    """The supervisor's view of containers by service."""

    def containers(self, service: str) -> Sequence[ContainerState]: ...

    async def wait_changed(self) -> None:
        """Return after the next change of any container's state (early returns are fine)."""
        ...


class StateBoard:
    """A simple `StateView`: the latest `ContainerState` per container, grouped by service."""

    def __init__(self) -> None:
        self._states: dict[str, dict[str, ContainerState]] = {}
        self._changed = trio.Event()

    def update(self, service: str, state: ContainerState) -> None:
        self._states.setdefault(service, {})[state.name] = state
        self._changed.set()
        self._changed = trio.Event()

    def remove(self, service: str, name: str) -> None:
        self._states.get(service, {}).pop(name, None)
        self._changed.set()
        self._changed = trio.Event()

    def containers(self, service: str) -> Sequence[ContainerState]:
        return [state for _, state in sorted(self._states.get(service, {}).items())]

    async def wait_changed(self) -> None:
        await self._changed.wait()


def _excerpt(text: str) -> str:
    text = one_line(text.strip())
    if len(text) > MAX_OUTPUT_IN_MESSAGE:
        text = text[:MAX_OUTPUT_IN_MESSAGE] + "..."
    return text


def _healthy(states: Sequence[ContainerState], *, fallback_running: bool) -> bool:
    """True when all are healthy, False to keep waiting; raises ValueError(reason) on a failure."""
    for state in states:
        if state.status in ("exited", "dead"):
            raise ValueError(f"container {state.name} exited ({state.exit_code or 0})")
        if not state.has_healthcheck and fallback_running:
            if state.status != "running":
                return False
            continue
        if state.status in ("created", "restarting"):
            return False
        health = state.current_health()
        if health is None:
            raise ValueError(f"container {state.name} has no healthcheck configured")
        if health == "unhealthy":
            reason = f"container {state.name} is unhealthy"
            if state.health_output:
                reason += f" (last probe: {_excerpt(state.health_output)})"
            raise ValueError(reason)
        if health != "healthy":
            return False
    return True


def check_condition(service: str, condition: str, states: Sequence[ContainerState]) -> bool:
    """One look at a dependency: True = met, False = keep waiting; DependencyError = failed at once.

    The error's message is the required-dependency text; `wait_for_condition` words optional ones."""
    if condition == Condition.STARTED:
        return True
    if condition in (Condition.HEALTHY, Condition.RUNNING_OR_HEALTHY):
        try:
            return _healthy(states, fallback_running=condition == Condition.RUNNING_OR_HEALTHY)
        except ValueError as exc:
            raise DependencyError(str(exc), service=service) from None
    if condition == Condition.COMPLETED_SUCCESSFULLY:
        for state in states:
            if state.status in ("exited", "dead"):
                code = state.exit_code or 0
                if code == 0:
                    return True
                message = f'"{service}" didn\'t complete successfully: exit {code}'
                raise DependencyError(message, service=service)
        return False
    raise DependencyError(f"unsupported depends_on condition: {condition}", service=service)


def _failure_message(condition: str, reason: str) -> str:
    if condition == Condition.COMPLETED_SUCCESSFULLY:
        return f"service {reason}"
    return f"dependency failed to start: {reason}"


def _optional_message(service: str, condition: str, reason: str) -> str:
    if condition == Condition.COMPLETED_SUCCESSFULLY:
        return f"optional dependency {reason}"
    if condition == Condition.RUNNING_OR_HEALTHY:
        return f'optional dependency "{service}" is not running or is unhealthy: {reason}'
    return f'optional dependency "{service}" failed to start: {reason}'


async def wait_for_condition(
    view: StateView,
    dependent: str,
    dependency: Dependency,
    *,
    warn: Callable[[str], None] | None = None,
    poll: float = POLL_INTERVAL,
) -> bool:
    """Wait until `dependency` meets its condition. True when met; False when an optional dependency
    failed or is missing (after a warning); raises DependencyError for a required one."""
    service, condition = dependency.service, dependency.condition

    def optional(message: str) -> bool:
        logger().warning("depends.optional_failed", service=dependent, dependency=service, message=message)
        if warn is not None:
            warn(message)
        return False

    if condition == Condition.STARTED:
        return True
    while True:
        states = view.containers(service)
        if not states:
            message = f"{dependent} is missing dependency {service}"
            if dependency.required:
                raise DependencyError(message, service=service)
            return optional(message)
        try:
            if check_condition(service, condition, states):
                return True
        except DependencyError as exc:
            if not dependency.required:
                return optional(_optional_message(service, condition, exc.message))
            raise DependencyError(_failure_message(condition, exc.message), service=service) from None
        with trio.move_on_after(poll):
            await view.wait_changed()


async def wait_for_dependencies(
    view: StateView,
    dependent: str,
    dependencies: Sequence[Dependency],
    *,
    timeout: float | None = None,
    timeout_message: str = "timeout waiting for dependencies",
    warn: Callable[[str], None] | None = None,
    poll: float = POLL_INTERVAL,
) -> Mapping[str, bool]:
    """Wait for all `dependencies` in parallel; the first failure cancels the rest and is raised.

    Returns, per dependency, whether it met its condition (False: an optional one that failed).
    `timeout` (seconds, None = none) raises DependencyTimeout(timeout_message) - `up --wait` passes
    `application not healthy after <t>`."""
    results: dict[str, bool] = {}

    async def one(dep: Dependency) -> None:
        results[dep.service] = await wait_for_condition(view, dependent, dep, warn=warn, poll=poll)

    with trio.move_on_after(math.inf if timeout is None else timeout) as scope:
        try:
            async with trio.open_nursery() as nursery:
                for dep in sorted(dependencies, key=lambda d: d.service):
                    nursery.start_soon(one, dep)
        except BaseExceptionGroup as group:
            # the first failure cancels its siblings, so a group holds one DependencyError
            failures = [exc for exc in _leaves(group) if isinstance(exc, DependencyError)]
            if failures and len(failures) == len(list(_leaves(group))):
                raise failures[0] from None
            raise
    if scope.cancelled_caught:
        raise DependencyTimeout(timeout_message)
    return results


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(_leaves(exc))
        else:
            out.append(exc)
    return out
