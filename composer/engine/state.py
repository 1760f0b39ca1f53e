"""What the supervisor sees of a project on disk and alive: the observed half of reconciliation.

PURE types only (DESIGN.md rule 1): whoever reads the state files and the live processes fills them;
`composer.engine.plan` compares them with the `Project`. Containers carry the com.docker.compose.*
facts Compose keeps in labels (service, number, config hash, image, one-off); `labels` keeps the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["ContainerState", "ObservedContainer", "ObservedNetwork", "ObservedProject", "ObservedVolume"]

ContainerState = Literal["created", "running", "paused", "restarting", "exited", "dead", "removing"]
"""Docker's container states, with their meanings (`ps --format json` State)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ObservedContainer:
    id: str
    name: str
    service: str
    number: int
    config_hash: str
    image_id: str
    state: ContainerState
    exit_code: int | None = None
    labels: tuple[tuple[str, str], ...] = ()  # sorted by key
    one_off: bool = False

    @property
    def running(self) -> bool:
        """Running, paused or restarting: a process (or the will to restart one) is there."""
        return self.state in ("running", "paused", "restarting")


@dataclass(frozen=True, slots=True, kw_only=True)
class ObservedNetwork:
    name: str  # the real name (`<project>_<key>` or `name:`)
    config_hash: str = ""  # "" = not recorded


@dataclass(frozen=True, slots=True, kw_only=True)
class ObservedVolume:
    name: str
    config_hash: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ObservedProject:
    """Everything that exists for project `name`: its containers (one-off ones included), and the
    networks and volumes that carry its name."""

    name: str
    containers: tuple[ObservedContainer, ...] = ()
    networks: tuple[ObservedNetwork, ...] = ()
    volumes: tuple[ObservedVolume, ...] = ()

    def of_service(self, service: str) -> tuple[ObservedContainer, ...]:
        """The service's containers (not the one-off ones), by number."""
        found = (c for c in self.containers if c.service == service and not c.one_off)
        return tuple(sorted(found, key=lambda c: (c.number, c.name)))

    def network_names(self) -> frozenset[str]:
        return frozenset(n.name for n in self.networks)

    def volume_names(self) -> frozenset[str]:
        return frozenset(v.name for v in self.volumes)

    @staticmethod
    def empty(name: str) -> ObservedProject:
        return ObservedProject(name=name)
