"""What the executor needs from the world, as small Protocols (DESIGN.md rules 2 and 10).

The executor (`composer.engine.executor`) runs a `Plan` through these and nothing else, so it stays
free of kernel concerns and its tests run on in-memory fakes under trio's MockClock. The real
implementations sit over composer.runtime, network, image and storage.

Rules every implementation keeps:
- Every operation is idempotent where Docker's is: creating a network or volume that exists, removing
  one that is gone, signalling or waiting for a container that is not running are not errors.
- Cancellation-safe: a cancelled call either completed or left nothing behind that a later `down`
  cannot remove (the executor cancels a level's other operations when one fails, and all of them on
  Ctrl-C).
- An error is raised as an exception whose text is the cause, for people (`ComposerError` ideally);
  the executor adds the service or resource and the stage.
- `Containers` reports every change of a container's state (created, running, health, exited,
  removed, renamed) to its listeners, synchronously, as it happens: the executor's depends_on waits
  read nothing else.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from composer.engine.depends import ContainerState
from composer.engine.translate import DEFAULT_STOP_GRACE
from composer.runtime.launch import ExitStatus
from composer.spec.model import Service

__all__ = [
    "Backends",
    "ContainerChange",
    "ContainerListener",
    "ContainerRef",
    "Containers",
    "Images",
    "Networks",
    "Volumes",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerRef:
    """A container that exists, as the executor handles it. `stop_signal` and `stop_grace` are the
    service's (`Translated.stop_signal`/`stop_grace`: the service's, else the image's STOPSIGNAL, else
    SIGTERM; `stop_grace_period`, else 10 s)."""

    id: str
    name: str
    service: str
    stop_signal: int = int(signal.SIGTERM)
    stop_grace: float = DEFAULT_STOP_GRACE


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerChange:
    """A container's new state; `state` None: no container has this name any more (removed, or renamed
    away: a rename reports the old name gone, then the new name's state)."""

    service: str
    name: str
    state: ContainerState | None


ContainerListener = Callable[[ContainerChange], None]


class Images(Protocol):
    async def build(self, service: str, image: str) -> None:
        """Build the image of `service` (tagged `image`)."""
        ...

    async def pull(self, service: str, image: str) -> None:
        """Fetch `image` into the store."""
        ...

    async def remove(self, image: str) -> None:
        """Remove `image` (`down --rmi`); an image that is gone is not an error."""
        ...


class Networks(Protocol):
    async def create(self, key: str, name: str) -> None:
        """Create the project's network `key` (its real name `name`)."""
        ...

    async def remove(self, key: str, name: str) -> None: ...


class Volumes(Protocol):
    async def create(self, key: str, name: str) -> None:
        """Create the project's named volume `key` (its real name `name`)."""
        ...

    async def remove(self, key: str, name: str) -> None: ...


class Containers(Protocol):
    def states(self) -> Sequence[ContainerChange]:
        """The current state of every container of the project (to seed the executor's board)."""
        ...

    def subscribe(self, listener: ContainerListener) -> Callable[[], None]:
        """Call `listener` on every change from now on, until the returned function is called."""
        ...

    async def lookup(self, key: str) -> ContainerRef | None:
        """The container with this id or name, or None when there is none."""
        ...

    async def create(
        self, service: Service, number: int, name: str, *, replaces: ContainerRef | None = None
    ) -> ContainerRef:
        """Create (not start) container `number` of `service` named `name`. `replaces`: the container a
        recreate replaces; the new one takes over its anonymous volumes (Compose's default, no -V)."""
        ...

    async def start(self, container: ContainerRef) -> None:
        """Start it (under its restart policy and healthcheck); returns once its process runs. A start
        that fails raises, and leaves the container `created` or `exited`."""
        ...

    async def signal(self, container: ContainerRef, sig: int) -> None:
        """Send `sig` to its main process as a user's stop or kill: no restart policy brings it back
        (`Supervision.stop_requested` before the signal). A container that is not running is left alone."""
        ...

    async def wait(self, container: ContainerRef) -> ExitStatus | None:
        """Return once it is not running: its last exit status (None if it never ran)."""
        ...

    async def rename(self, container: ContainerRef, name: str) -> ContainerRef: ...

    async def remove(self, container: ContainerRef, *, volumes: bool = False) -> None:
        """Remove a container that is not running; `volumes`: its anonymous volumes too."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Backends:
    images: Images
    networks: Networks
    volumes: Volumes
    containers: Containers
