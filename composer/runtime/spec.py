"""`ContainerSpec`: everything the runtime needs to start one container, frozen and typed.

The engine's translate step (compose Service + ImageConfig -> ContainerSpec) fills it; the runtime
turns it into a `LaunchPlan` (composer/runtime/plan.py) of plain numbers and paths for the child.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

__all__ = [
    "BindMount",
    "CgroupHook",
    "ContainerDirs",
    "ContainerSpec",
    "Mount",
    "Namespace",
    "Network",
    "Rlimit",
    "Stdio",
    "TmpfsMount",
]

Propagation = Literal["rprivate", "private", "rshared", "shared", "rslave", "slave"]


class CgroupHook(Protocol):
    """What the cgroups layer hands the runtime (composer/runtime/cgroups.py makes one).

    `attach(pid)` is called by the launcher for every `exec` process (a start's PID 1 joins `paths`
    itself, after making the `pending` leaves); `destroy()` is called by the runtime only when a start
    fails. After a normal exit, the owner calls it.
    """

    @property
    def paths(self) -> tuple[str, ...]: ...

    # the leaves still to make (folder, (file, value) to write), for the PID 1; () once they exist
    pending: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]

    def attach(self, pid: int) -> None: ...

    def destroy(self) -> None: ...


class ContainerDirs(Protocol):
    """Where containers keep their state: composer.storage.layout.Layout is one."""

    def container_dir(self, container_id: str) -> Path: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class BindMount:
    """A bind mount of a host file or folder (also named-volume `_data` folders and single files)."""

    source: Path
    target: str  # absolute, inside the container
    read_only: bool = False
    propagation: Propagation = "rprivate"
    recursive: bool = True
    create_source: bool = False  # create a missing source folder (long syntax `bind.create_host_path`)


@dataclass(frozen=True, slots=True, kw_only=True)
class TmpfsMount:
    target: str
    size: int | None = None  # bytes; None = the kernel default (half of RAM)
    mode: int = 0o1777
    read_only: bool = False
    noexec: bool = False


Mount = BindMount | TmpfsMount


@dataclass(frozen=True, slots=True, kw_only=True)
class Network:
    """`new` = a fresh netns (the network layer may attach veths before GO; `none` is this with no veth),
    `host` = the host's netns, `join` = an existing netns file (`/run/netns/NAME`, or another
    container's `/proc/PID/ns/net`)."""

    mode: Literal["new", "host", "join"] = "new"
    path: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Namespace:
    """A PID, IPC or UTS namespace (`pid:` / `ipc:` / `uts:`): `new` = the container's own, `host` = the
    supervisor's, `join` = the one of the running process `pid` (another container's PID 1; not UTS),
    `none` = IPC only: its own, with no /dev/shm. Joining an IPC namespace also shares that
    container's /dev/shm, and `host` the host's, as Docker does."""

    mode: Literal["new", "host", "join", "none"] = "new"
    pid: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Rlimit:
    name: str  # "nofile", "nproc", "core", ... (RLIMIT_ without the prefix, any case)
    soft: int
    hard: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Stdio:
    """Descriptors the caller owns, made the container's fds 0, 1, 2 (None = /dev/null).

    The runtime duplicates them; the caller keeps and closes its own.
    """

    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerSpec:
    id: str
    lower_dirs: tuple[Path, ...]  # the image's layer folders, top first
    read_only: bool = False
    argv: tuple[str, ...]
    env: tuple[str, ...] = ()  # "KEY=VALUE"; PATH, HOME and HOSTNAME get Docker's defaults when missing
    cwd: str = "/"
    user: str = ""  # "name", "uid", "name:group", "uid:gid", resolved in the image's /etc/passwd, /etc/group
    group_add: tuple[str, ...] = ()
    hostname: str = ""  # "" = the first 12 characters of the id
    domainname: str = ""
    mounts: tuple[Mount, ...] = ()
    etc_hostname: Path | None = None  # host-side files bind-mounted on /etc/hostname, /etc/hosts, ...
    etc_hosts: Path | None = None
    etc_resolv_conf: Path | None = None
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    privileged: bool = False
    no_new_privs: bool = False
    rlimits: tuple[Rlimit, ...] = ()
    sysctls: tuple[tuple[str, str], ...] = ()  # namespaced sysctls only (kernel.shm*, net.*, ...)
    network: Network = field(default_factory=Network)
    init: bool = False  # tini as PID 1 in front of argv, like `docker run --init`
    stdio: Stdio = field(default_factory=Stdio)  # must stay empty with tty: the pty is all three
    tty: bool = False  # a pseudo-terminal as stdin/stdout/stderr; the caller gets its master (`.terminal`)
    tty_size: tuple[int, int] = (24, 80)  # the terminal's first size: rows, columns
    cgroup: CgroupHook | None = None
    # last: a launch file pickled before these existed still loads (its fields are positional)
    pid_ns: Namespace = field(default_factory=Namespace)
    ipc_ns: Namespace = field(default_factory=Namespace)
    uts_ns: Namespace = field(default_factory=Namespace)  # `host`: the host's hostname, not set
