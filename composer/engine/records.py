"""Each container's record on disk: what `ps`, `logs`, `down` and a re-adopting supervisor read.

One JSON file per container (`<root>/containers/<id>/record.json`), written atomically by the
supervisor on every change of state; the container's launch spec beside it (`launch.pickle`, for
`exec` and for a supervisor that takes over running containers). A record says `running` with a pid
and the pid's start time (field 22 of /proc/PID/stat): a reader trusts it only while that process is
alive with that start time, so a record left by a killed supervisor never names a recycled pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from composer.engine.state import ObservedContainer, ObservedNetwork, ObservedProject, ObservedVolume

__all__ = [
    "LOST_EXIT_CODE",
    "ContainerRecord",
    "RecordStore",
    "process_start_time",
]

RECORD = "record.json"
LAUNCH = "launch.pickle"
LOST_EXIT_CODE = (
    255  # the exit of a container that ended while no supervisor watched it (Docker's choice too)
)
_LIVE = ("running", "paused", "restarting")


def process_start_time(pid: int) -> int | None:
    """The start time of `pid` in clock ticks since boot (/proc/PID/stat field 22); None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # the command (field 2) may hold spaces and parentheses: split after its last ')'
    rest = data[data.rindex(b")") + 2 :].split()
    if rest[0] == b"Z":
        return None  # a zombie has ended; whoever reaps it has its status
    return int(rest[19])


@dataclass(slots=True, kw_only=True)
class ContainerRecord:
    """One container as it stands. Mutable: the supervisor updates and saves it."""

    id: str
    name: str
    project: str
    service: str
    number: int
    image: str  # the reference the service names
    image_id: str
    config_hash: str
    labels: dict[str, str] = field(default_factory=dict)
    one_off: bool = False
    command: str = ""  # for `ps`
    created: float = field(default_factory=time.time)  # unix seconds
    state: str = "created"  # Docker's words: created running paused restarting exited dead
    pid: int | None = None
    pid_start: int | None = None
    exit_code: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    restart_count: int = 0
    manually_stopped: bool = False
    health: str | None = None  # starting healthy unhealthy; None: no healthcheck
    health_output: str | None = None
    stop_signal: int = 15
    stop_grace: float = 10.0
    networks: dict[str, str] = field(default_factory=dict)  # network name -> address
    ports: list[str] = field(default_factory=list)  # "0.0.0.0:8080->80/tcp"
    named_volumes: list[str] = field(default_factory=list)  # the volumes' real names
    anonymous_volumes: dict[str, str] = field(default_factory=dict)  # target -> volume name
    log_path: str | None = None  # None: `logging.driver: none`

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ContainerRecord:
        data: dict[str, Any] = json.loads(raw)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def alive(self) -> bool:
        """Its recorded process runs (the same process: pid and start time)."""
        if self.pid is None or self.pid_start is None:
            return False
        return process_start_time(self.pid) == self.pid_start

    def observed_state(self) -> str:
        """The state a reader should believe: a live state whose process has gone reads `exited`."""
        if self.state in ("running", "paused") and not self.alive():
            return "exited"
        return self.state

    def observed_exit_code(self) -> int | None:
        if self.state in ("running", "paused") and not self.alive():
            return LOST_EXIT_CODE
        return self.exit_code

    def observed(self) -> ObservedContainer:
        return ObservedContainer(
            id=self.id,
            name=self.name,
            service=self.service,
            number=self.number,
            config_hash=self.config_hash,
            image_id=self.image_id,
            state=self.observed_state(),  # type: ignore[arg-type]
            exit_code=self.observed_exit_code(),
            labels=tuple(sorted(self.labels.items())),
            one_off=self.one_off,
        )


class RecordStore:
    """The records under `<root>/containers`."""

    def __init__(self, containers_dir: Path) -> None:
        self.dir = containers_dir

    def folder(self, container_id: str) -> Path:
        return self.dir / container_id

    def save(self, record: ContainerRecord) -> None:
        """Atomically (a reader sees the old record or the new one, never half of one)."""
        folder = self.folder(record.id)
        tmp = folder / f".{RECORD}.tmp"
        try:
            tmp.write_bytes(record.to_json())
        except FileNotFoundError:
            folder.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(record.to_json())
        os.replace(tmp, folder / RECORD)

    def load(self, container_id: str) -> ContainerRecord | None:
        try:
            return ContainerRecord.from_json((self.folder(container_id) / RECORD).read_bytes())
        except (FileNotFoundError, NotADirectoryError, ValueError, TypeError):
            return None

    def all(self) -> list[ContainerRecord]:
        out = []
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.dir):
                record = self.load(entry.name) if entry.is_dir() else None
                if record is not None:
                    out.append(record)
        return sorted(out, key=lambda r: (r.project, r.service, r.number, r.name))

    def of_project(self, project: str) -> list[ContainerRecord]:
        return [r for r in self.all() if r.project == project]

    def projects(self) -> list[str]:
        return sorted({r.project for r in self.all()})

    def save_launch(self, container_id: str, launch: object) -> None:
        """The supervisor's launch data (its own pickled type: the ContainerSpec and the service's rest)."""
        folder = self.folder(container_id)
        tmp = folder / f".{LAUNCH}.tmp"
        tmp.write_bytes(pickle.dumps(launch, protocol=pickle.HIGHEST_PROTOCOL))
        os.replace(tmp, folder / LAUNCH)

    def load_launch(self, container_id: str) -> object | None:
        try:
            launch: object = pickle.loads((self.folder(container_id) / LAUNCH).read_bytes())
        except (FileNotFoundError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
            return None
        return launch


def observe(
    project: str, records: list[ContainerRecord], networks: list[str], volumes: list[str]
) -> ObservedProject:
    """The observed half of a reconcile: the project's containers and the networks/volumes that exist."""
    return ObservedProject(
        name=project,
        containers=tuple(r.observed() for r in records if r.project == project),
        networks=tuple(ObservedNetwork(name=n) for n in sorted(networks)),
        volumes=tuple(ObservedVolume(name=v) for v in sorted(volumes)),
    )


def live(record: ContainerRecord) -> bool:
    return record.observed_state() in _LIVE
