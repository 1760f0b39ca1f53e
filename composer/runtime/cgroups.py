"""Control groups for containers: cgroup v2 first, v1 and the v1/v2 hybrid for hosts that still mount it.

Every container gets one leaf `<parent>/<name>` (parent `composer` by default) in each hierarchy:

- **unified** (cgroup2 mounted at the root, every current systemd distribution): one directory; the
  controllers that the parent offers are enabled in `cgroup.subtree_control` on the way down (as runc and
  crun do), then the limits are written to `memory.max`, `memory.swap.max`, `cpu.max`, `cpu.weight`,
  `pids.max`, `cpuset.cpus`.
- **legacy** (v1 only): one directory per mounted hierarchy (memory, cpu, pids, ... and name=systemd),
  so that the container's cgroup namespace looks whole; limits go to the v1 files.
- **hybrid** (v1 controllers plus a controller-less cgroup2 at `<root>/unified`, as on this machine kind):
  v1 as above, and the process joins a v2 leaf too (as runc does). The v2 leaf carries no limits but
  gives `cgroup.kill`, `cgroup.freeze` and `cgroup.events` to kill and watch a whole container.

The cgroup root (default /sys/fs/cgroup) is passed in; nothing here holds global state. Writes are
plain file I/O on cgroupfs. Every error a user can cause is a `CgroupError` with a one-line message
naming the cgroup, the file and the errno, and a failed `create` leaves no directory behind.

Docker semantics kept by `resources_from`: `memswap_limit` is memory + swap (-1: unlimited swap; unset
with a memory limit: swap as large as the memory, i.e. memory + swap = 2 x memory); `cpus` becomes a CFS
quota over a 100 ms period; a `pids_limit` of 0 or -1 means no limit.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import math
import os
import re
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from composer.errors import ComposerError
from composer.runtime.init import LeafSteps, make_cgroup_leaves

if TYPE_CHECKING:
    from composer.runtime.spec import CgroupHook

DEFAULT_ROOT = Path("/sys/fs/cgroup")
DEFAULT_PARENT = "composer"
CPU_PERIOD_US = 100_000  # Docker's CFS period for --cpus
MIN_CPU_QUOTA_US = 1_000  # the kernel refuses a CFS quota under 1 ms
MIN_MEMORY = 6 * 1024 * 1024  # Docker refuses a memory limit under 6 MiB
MAX_CPU_SHARES = 262_144  # the kernel's MAX_SHARES (1 << 18)
MIN_CPU_SHARES = 2
MAX_CPU_WEIGHT = 10_000

_UNIFIED_DIR = "unified"  # where hybrid hosts mount their cgroup2 hierarchy
_CPUSET_RE = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")
_EMPTY_WAIT_S = 2.0  # how long destroy/kill_all wait for the kernel to empty a cgroup
_FREEZE_WAIT_S = 1.0


class CgroupError(ComposerError):
    """A cgroup could not be set up, joined or removed, or resource values are invalid."""


class CgroupExists(CgroupError):
    """A cgroup with this name already exists under the parent."""


class Mode(enum.Enum):
    UNIFIED = "v2"  # cgroup2 mounted at the root
    LEGACY = "v1"  # v1 hierarchies only
    HYBRID = "hybrid"  # v1 hierarchies for the controllers plus a cgroup2 at <root>/unified


# --- resources (pure) ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Resources:
    """Limits for one container. None means "leave the kernel's default" (no limit).

    memory_swap is Docker's memory + swap total in bytes, -1 for unlimited swap; it needs `memory`.
    cpu_quota/cpu_period are the CFS bandwidth in microseconds (`cpus: 1.5` -> 150000/100000).
    cpu_shares is the v1 relative weight (2-262144, default 1024); v2 gets `cpu_weight(cpu_shares)`.
    """

    memory: int | None = None
    memory_swap: int | None = None
    memory_reservation: int | None = None
    cpu_quota: int | None = None
    cpu_period: int = CPU_PERIOD_US
    cpu_shares: int | None = None
    pids_limit: int | None = None
    cpuset_cpus: str | None = None
    cpuset_mems: str | None = None

    def controllers(self) -> frozenset[str]:
        """The controllers these limits need (v1 and v2 share the names)."""
        needed = set()
        if self.memory is not None or self.memory_swap is not None or self.memory_reservation is not None:
            needed.add("memory")
        if self.cpu_quota is not None or self.cpu_shares is not None:
            needed.add("cpu")
        if self.pids_limit is not None:
            needed.add("pids")
        if self.cpuset_cpus is not None or self.cpuset_mems is not None:
            needed.add("cpuset")
        return frozenset(needed)


def cpu_quota_us(cpus: float, period: int = CPU_PERIOD_US) -> int:
    """`cpus: 0.5` -> 50000 (µs of CPU time per `period` µs), as Docker's NanoCPUs do."""
    return round(cpus * period)


def cpu_weight(shares: int) -> int:
    """v1 cpu.shares [2, 262144] (default 1024) -> v2 cpu.weight [1, 10000] (default 100).

    The quadratic-in-log mapping of opencontainers/cgroups (runc 1.3+) and crun 1.23+:
    weight = ceil(10 ** ((l*l + 125*l) / 612 - 7/34)) with l = log2(shares). It sends the ends to
    the ends and the defaults to each other (1024 -> 100), which the older linear formula
    1 + (shares - 2) * 9999 / 262142 did not (1024 -> 39, starving containers that set no shares
    next to others). See kubernetes/kubernetes#131216.
    """
    if shares <= MIN_CPU_SHARES:
        return 1
    if shares >= MAX_CPU_SHARES:
        return MAX_CPU_WEIGHT
    log2 = math.log2(shares)
    return min(MAX_CPU_WEIGHT, math.ceil(10 ** ((log2 * log2 + 125 * log2) / 612.0 - 7.0 / 34.0)))


def swap_max_v2(memory: int | None, memory_swap: int | None) -> int | None:
    """Docker's memory + swap total -> v2 memory.swap.max (swap alone); -1 means "max", None unset."""
    if memory_swap is None:
        return None
    if memory_swap == -1:
        return -1
    if memory is None:
        raise CgroupError("memswap_limit needs mem_limit")
    return memory_swap - memory


def parse_cpuset(value: str) -> tuple[int, ...]:
    """`0-2,5` -> (0, 1, 2, 5); a clear error for anything else."""
    text = value.strip()
    if not _CPUSET_RE.match(text):
        raise CgroupError(f"cpuset {value!r}: expected a list like 0-3,5")
    out: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        first, last = int(low), int(high or low)
        if last < first:
            raise CgroupError(f"cpuset {value!r}: range {part} runs backwards")
        out.update(range(first, last + 1))
    return tuple(sorted(out))


def resources_from(
    *,
    mem_limit: int | None = None,
    memswap_limit: int | None = None,
    mem_reservation: int | None = None,
    cpus: float | None = None,
    cpu_quota: int | None = None,
    cpu_period: int | None = None,
    cpu_shares: int | None = None,
    pids_limit: int | None = None,
    cpuset: str | None = None,
    cpuset_mems: str | None = None,
) -> Resources:
    """Compose values (already in bytes and numbers) -> checked `Resources`, with Docker's rules.

    `deploy.resources.limits` map here too (memory -> mem_limit, cpus, pids). Values of 0 mean "unset",
    as in Docker's API.
    """
    memory = mem_limit or None
    if memory is not None and memory < MIN_MEMORY:
        raise CgroupError(f"mem_limit {memory}: the minimum is 6 MiB")
    swap: int | None = memswap_limit or None
    if swap is not None:
        if memory is None:
            raise CgroupError("memswap_limit needs mem_limit")
        if swap != -1 and swap < memory:
            raise CgroupError(f"memswap_limit {swap} is smaller than mem_limit {memory}")
        if swap < -1:
            raise CgroupError(f"memswap_limit {swap}: use -1 for unlimited swap")
    elif memory is not None:
        swap = 2 * memory  # Docker: an unset memswap with a memory limit allows as much swap again
    reservation = mem_reservation or None
    if reservation is not None and (reservation < 0 or (memory is not None and reservation > memory)):
        raise CgroupError(f"mem_reservation {reservation} must lie between 0 and mem_limit")

    period = cpu_period or CPU_PERIOD_US
    if not 1_000 <= period <= 1_000_000:
        raise CgroupError(f"cpu_period {period}: must be 1000-1000000 µs")
    quota: int | None = None
    if cpus:
        if cpu_quota:
            raise CgroupError("cpus and cpu_quota cannot both be set")
        if cpus < 0 or not math.isfinite(cpus):
            raise CgroupError(f"cpus {cpus}: must be a positive number")
        quota = cpu_quota_us(cpus, period)
    elif cpu_quota and cpu_quota != -1:
        quota = cpu_quota
    if quota is not None and quota < MIN_CPU_QUOTA_US:
        raise CgroupError(f"cpus {quota / period:g}: the minimum is {MIN_CPU_QUOTA_US / period:g}")

    shares = cpu_shares or None
    if shares is not None:
        if shares < 0:
            raise CgroupError(f"cpu_shares {shares}: must be positive")
        shares = max(MIN_CPU_SHARES, min(MAX_CPU_SHARES, shares))  # the kernel clamps the same way

    pids = pids_limit or None
    if pids is not None and pids < -1:
        raise CgroupError(f"pids_limit {pids}: use -1 or 0 for no limit")
    if pids == -1:
        pids = None

    for value in (cpuset, cpuset_mems):
        if value is not None:
            parse_cpuset(value)
    return Resources(
        memory=memory,
        memory_swap=swap,
        memory_reservation=reservation,
        cpu_quota=quota,
        cpu_period=period,
        cpu_shares=shares,
        pids_limit=pids,
        cpuset_cpus=cpuset.strip() if cpuset else None,
        cpuset_mems=cpuset_mems.strip() if cpuset_mems else None,
    )


def v1_writes(res: Resources) -> list[tuple[str, str, str]]:
    """(controller, file, value) in the order a fresh v1 cgroup takes them."""
    out: list[tuple[str, str, str]] = []
    if res.cpuset_cpus is not None:
        out.append(("cpuset", "cpuset.cpus", res.cpuset_cpus))
    if res.cpuset_mems is not None:
        out.append(("cpuset", "cpuset.mems", res.cpuset_mems))
    if res.memory is not None:  # memory before memsw: memsw must stay >= memory at every step
        out.append(("memory", "memory.limit_in_bytes", str(res.memory)))
    if res.memory_swap is not None:
        out.append(("memory", "memory.memsw.limit_in_bytes", str(res.memory_swap)))
    if res.memory_reservation is not None:
        out.append(("memory", "memory.soft_limit_in_bytes", str(res.memory_reservation)))
    if res.cpu_shares is not None:
        out.append(("cpu", "cpu.shares", str(res.cpu_shares)))
    if res.cpu_quota is not None:
        out.append(("cpu", "cpu.cfs_period_us", str(res.cpu_period)))
        out.append(("cpu", "cpu.cfs_quota_us", str(res.cpu_quota)))
    if res.pids_limit is not None:
        out.append(("pids", "pids.max", str(res.pids_limit)))
    return out


def v2_writes(res: Resources) -> list[tuple[str, str, str]]:
    """(controller, file, value) for a v2 leaf."""
    out: list[tuple[str, str, str]] = []
    if res.cpuset_cpus is not None:
        out.append(("cpuset", "cpuset.cpus", res.cpuset_cpus))
    if res.cpuset_mems is not None:
        out.append(("cpuset", "cpuset.mems", res.cpuset_mems))
    if res.memory is not None:
        out.append(("memory", "memory.max", str(res.memory)))
    swap = swap_max_v2(res.memory, res.memory_swap)
    if swap is not None:
        out.append(("memory", "memory.swap.max", "max" if swap == -1 else str(swap)))
    if res.memory_reservation is not None:
        out.append(("memory", "memory.low", str(res.memory_reservation)))
    if res.cpu_shares is not None:
        out.append(("cpu", "cpu.weight", str(cpu_weight(res.cpu_shares))))
    if res.cpu_quota is not None:
        out.append(("cpu", "cpu.max", f"{res.cpu_quota} {res.cpu_period}"))
    if res.pids_limit is not None:
        out.append(("pids", "pids.max", str(res.pids_limit)))
    return out


def parse_flat_keyed(text: str) -> dict[str, int]:
    """`key value` lines (memory.events, memory.oom_control, pids.events, cpu.stat) -> {key: value}."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key and value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


# --- hierarchies -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Hierarchy:
    key: str  # the folder under the root ("memory", "cpu,cpuacct", "unified"; "" for a unified root)
    path: Path  # the mount point
    controllers: frozenset[str]  # v1: from the hierarchy's name; v2: from cgroup.controllers
    v2: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Hierarchies:
    mode: Mode
    root: Path
    v1: tuple[Hierarchy, ...]
    unified: Hierarchy | None

    def all(self) -> tuple[Hierarchy, ...]:
        return self.v1 + ((self.unified,) if self.unified else ())

    def limits_on_v2(self) -> bool:
        return self.mode is Mode.UNIFIED

    def v1_for(self, controller: str) -> Hierarchy | None:
        for hierarchy in self.v1:
            if controller in hierarchy.controllers:
                return hierarchy
        return None


def _read(path: Path) -> str:
    with open(path) as handle:
        return handle.read()


def _v2_controllers(path: Path) -> frozenset[str]:
    try:
        return frozenset(_read(path / "cgroup.controllers").split())
    except OSError:
        return frozenset()


def detect(root: Path = DEFAULT_ROOT) -> Hierarchies:
    """Which cgroup layout is mounted at `root`: unified v2, legacy v1, or the v1/v2 hybrid."""
    root = Path(root)
    if (root / "cgroup.controllers").is_file():
        unified = Hierarchy(key="", path=root, controllers=_v2_controllers(root), v2=True)
        return Hierarchies(mode=Mode.UNIFIED, root=root, v1=(), unified=unified)
    try:
        entries = sorted(os.listdir(root))
    except OSError as exc:
        raise CgroupError(f"no cgroup hierarchy at {root}: {_errno_name(exc)}") from None
    v1: list[Hierarchy] = []
    seen: set[Path] = set()
    hybrid: Hierarchy | None = None
    for entry in entries:
        path = root / entry
        if not (path / "cgroup.procs").is_file():
            continue
        if (path / "cgroup.controllers").is_file():
            if entry == _UNIFIED_DIR:
                hybrid = Hierarchy(key=entry, path=path, controllers=_v2_controllers(path), v2=True)
            continue
        real = path.resolve()
        if real in seen:  # `cpu` -> `cpu,cpuacct` symlinks: one hierarchy, joined once
            continue
        seen.add(real)
        name = real.name if real.parent == root.resolve() else entry
        controllers = frozenset(
            part for part in real.name.split(",") if part and not part.startswith("name=")
        )
        v1.append(Hierarchy(key=name, path=root / name, controllers=controllers, v2=False))
    if not v1:
        if hybrid is not None:  # a cgroup2 only under <root>/unified: use it as the unified root
            return Hierarchies(mode=Mode.UNIFIED, root=root, v1=(), unified=hybrid)
        raise CgroupError(f"no cgroup hierarchy is mounted at {root}")
    return Hierarchies(mode=Mode.HYBRID if hybrid else Mode.LEGACY, root=root, v1=tuple(v1), unified=hybrid)


_host_layout: Hierarchies | None = None


def host_layout() -> Hierarchies:
    """`detect()` of the host's own root, read once per process: its layout does not change while
    composer runs, and a detect costs 1.7 ms on a hybrid host (it was paid for every container)."""
    global _host_layout
    if _host_layout is None:
        _host_layout = detect(DEFAULT_ROOT)
    return _host_layout


def _detected(root: Path) -> Hierarchies:
    return host_layout() if Path(root) == DEFAULT_ROOT else detect(root)


# --- file helpers ----------------------------------------------------------------------------------


def _errno_name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc.errno)) if exc.errno else str(exc)


def _write(path: Path, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


def _read_pids(path: Path) -> list[int]:
    try:
        return [int(line) for line in _read(path / "cgroup.procs").split()]
    except FileNotFoundError:
        return []


def _validate_name(name: str, what: str) -> None:
    """A name is one path component; a parent may be several joined by `/` (never `..`, never absolute)."""
    parts = name.split("/")
    if (what == "name" and len(parts) != 1) or any(
        part in ("", ".", "..") or len(part) > 255 or not part.isprintable() for part in parts
    ):
        raise CgroupError(f"invalid cgroup {what} {name!r}")


# --- the cgroup of one container -------------------------------------------------------------------


class Cgroup:
    """One container's cgroup: a leaf `<parent>/<name>` in every mounted hierarchy.

    Matches composer.runtime.spec's cgroup protocol: `attach(pid)`, `paths`, `destroy()`.
    """

    __slots__ = ("_dirs", "hierarchies", "name", "parent", "pending")

    def __init__(self, name: str, parent: str, hierarchies: Hierarchies, dirs: Mapping[str, Path]) -> None:
        self.name = name
        self.parent = parent
        self.hierarchies = hierarchies
        self._dirs = dict(dirs)
        self.pending: tuple[LeafSteps, ...] = ()  # leaves still to make (see `prepare`)

    def __repr__(self) -> str:
        return f"Cgroup({self.parent}/{self.name}, {self.hierarchies.mode.value})"

    # -- creation --

    @classmethod
    def create(
        cls,
        name: str,
        resources: Resources | None = None,
        *,
        root: Path = DEFAULT_ROOT,
        parent: str = DEFAULT_PARENT,
        hierarchies: Hierarchies | None = None,
    ) -> Cgroup:
        """mkdir `<parent>/<name>` in every hierarchy and write the limits; all or nothing."""
        group = cls.prepare(name, resources, root=root, parent=parent, hierarchies=hierarchies)
        made: list[str] = []
        try:
            make_cgroup_leaves(group.pending, made)
        except OSError as exc:
            for path in reversed(made):
                _rmdir_quietly(Path(path))
            what = str(exc.filename)
            if not what.startswith("/"):  # `file = value`
                raise CgroupError(f"cgroup {parent}/{name}: {what}: {_errno_name(exc)}") from None
            if isinstance(exc, FileExistsError):
                raise CgroupExists(f"cgroup {parent}/{name} already exists ({what})") from None
            raise CgroupError(f"cgroup {parent}/{name}: mkdir {what}: {_errno_name(exc)}") from None
        except BaseException:
            for path in reversed(made):
                _rmdir_quietly(Path(path))
            raise
        group.pending = ()
        return group

    @classmethod
    def prepare(
        cls,
        name: str,
        resources: Resources | None = None,
        *,
        root: Path = DEFAULT_ROOT,
        parent: str = DEFAULT_PARENT,
        hierarchies: Hierarchies | None = None,
    ) -> Cgroup:
        """The cgroup `create` would make, with the parents made but not its leaves: `pending` says
        what is left to do (`make_cgroup_leaves`), for a container's PID 1 to do it itself (runtime/init.py).
        An error here is a CgroupError (a missing controller, a parent that cannot be made)."""
        _validate_name(name, "name")
        _validate_name(parent, "parent")
        found = hierarchies or _detected(root)
        res = resources or Resources()
        needed = res.controllers()
        if found.mode is Mode.UNIFIED:
            assert found.unified is not None
            missing = sorted(needed - found.unified.controllers)
            if missing:
                raise CgroupError(
                    f"cgroup {parent}/{name}: the {', '.join(missing)} controller"
                    f"{'s are' if len(missing) > 1 else ' is'} not available in cgroup v2 at {found.root}"
                )
        else:
            missing = sorted(c for c in needed if found.v1_for(c) is None)
            if missing:
                raise CgroupError(f"cgroup {parent}/{name}: no v1 hierarchy for {', '.join(missing)}")
        dirs: dict[str, Path] = {}
        writes: dict[str, list[tuple[str, str]]] = {}
        for hierarchy in found.all():
            cls._make_parents(hierarchy, parent, needed, enable=found.limits_on_v2())
            leaf = hierarchy.path / parent / name
            dirs[hierarchy.key] = leaf
            writes[hierarchy.key] = []
            if not hierarchy.v2 and "cpuset" in hierarchy.controllers:
                # a new v1 cpuset cgroup has empty cpus/mems and refuses tasks: the parent's, first
                for filename in ("cpuset.cpus", "cpuset.mems"):
                    try:
                        value = _read(leaf.parent / filename).strip()
                    except OSError as exc:
                        where = f"cgroup {leaf.parent}: read {filename}"
                        raise CgroupError(f"{where}: {_errno_name(exc)}") from None
                    writes[hierarchy.key].append((filename, value))
        if found.limits_on_v2():
            assert found.unified is not None
            writes[found.unified.key] += [(filename, value) for _, filename, value in v2_writes(res)]
        else:
            for controller, filename, value in v1_writes(res):
                owner = found.v1_for(controller)
                assert owner is not None  # checked above
                swap = filename.startswith("memory.memsw.")
                if swap and not (dirs[owner.key].parent / filename).exists():
                    continue  # no swap accounting in this kernel: Docker ignores the swap limit too
                writes[owner.key].append((filename, value))
        group = cls(name, parent, found, dirs)
        group.pending = tuple((str(dirs[key]), tuple(writes[key])) for key in dirs)
        return group

    @classmethod
    def load(
        cls,
        name: str,
        *,
        root: Path = DEFAULT_ROOT,
        parent: str = DEFAULT_PARENT,
        hierarchies: Hierarchies | None = None,
    ) -> Cgroup:
        """The existing cgroup `<parent>/<name>` (after a supervisor restart); an error if it is gone."""
        _validate_name(name, "name")
        _validate_name(parent, "parent")
        found = hierarchies or _detected(root)
        dirs = {h.key: h.path / parent / name for h in found.all()}
        missing = sorted(str(p) for p in dirs.values() if not p.is_dir())
        if missing:
            raise CgroupError(f"cgroup {parent}/{name} does not exist ({missing[0]})")
        return cls(name, parent, found, dirs)

    @staticmethod
    def _make_parents(hierarchy: Hierarchy, parent: str, needed: frozenset[str], *, enable: bool) -> None:
        """Create the parent folders (kept: they are shared); v2 with `enable`: turn the controllers on
        on the way down. A hybrid host's cgroup2 has no controllers to turn on: tracking only."""
        current = hierarchy.path
        enable = enable and hierarchy.v2
        for part in parent.split("/"):
            if enable:
                _enable_controllers(current, needed, hierarchy.controllers)
            current = current / part
            try:
                os.mkdir(current, 0o755)
            except FileExistsError:
                pass
            except OSError as exc:
                raise CgroupError(f"cgroup parent {parent}: mkdir {current}: {_errno_name(exc)}") from None
            if not hierarchy.v2 and "cpuset" in hierarchy.controllers:
                _inherit_cpuset(current)
        if enable:
            _enable_controllers(current, needed, hierarchy.controllers)

    def _set(self, path: Path, value: str) -> None:
        try:
            _write(path, value)
        except OSError as exc:
            raise CgroupError(
                f"cgroup {self.parent}/{self.name}: {path.name} = {value}: {_errno_name(exc)}"
            ) from None

    # -- use --

    @property
    def dirs(self) -> Mapping[str, Path]:
        """Folder under the cgroup root ("memory", "unified", "" for a v2 root) -> this container's leaf."""
        return dict(self._dirs)

    @property
    def paths(self) -> tuple[str, ...]:
        """The leaves, one per hierarchy (spec.CgroupHook). A process that joined them all and then
        unshares CLONE_NEWCGROUP sees each as its cgroup root."""
        return tuple(str(path) for path in self._dirs.values())

    def attach(self, pid: int) -> None:
        """Move process `pid` (its whole thread group) into every hierarchy's leaf.

        Cost measured here (kernel 6.18): 0.3-0.5 ms for all ten hierarchies, but the first migration
        after ~20-50 ms without one waits for an RCU grace period (cgroup_threadgroup_rwsem): 8-15 ms.
        A cgroup2 mounted with `favordynmods` removes that wait (0.5 ms after idle).
        """
        for key, path in self._dirs.items():
            for attempt in range(5):
                try:
                    _write(path / "cgroup.procs", str(pid))
                    break
                except OSError as exc:
                    # EINVAL: a task still in TASK_NEW (just forked); runc retries the same way.
                    if exc.errno == errno.EINVAL and attempt < 4:
                        time.sleep(0.001 * (attempt + 1))
                        continue
                    where = key or "cgroup2"
                    raise CgroupError(
                        f"cgroup {self.parent}/{self.name}: attach pid {pid} ({where}): {_errno_name(exc)}"
                    ) from None

    def _primary(self) -> Path:
        """The leaf every attached process is in: v2 when there is one, else the pids (or first) v1 one."""
        if self.hierarchies.unified is not None:
            return self._dirs[self.hierarchies.unified.key]
        pids = self.hierarchies.v1_for("pids")
        return self._dirs[pids.key if pids else self.hierarchies.v1[0].key]

    def pids(self) -> list[int]:
        """Processes in the cgroup now, sorted (empty once destroyed)."""
        return sorted(_read_pids(self._primary()))

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer killed in this cgroup."""
        if self.hierarchies.limits_on_v2():
            assert self.hierarchies.unified is not None
            path = self._dirs[self.hierarchies.unified.key] / "memory.events"
            if not path.exists():
                return 0
            return parse_flat_keyed(_read(path)).get("oom_kill", 0)
        memory = self.hierarchies.v1_for("memory")
        if memory is None:
            return 0
        leaf = self._dirs[memory.key]
        try:
            control = parse_flat_keyed(_read(leaf / "memory.oom_control"))
        except FileNotFoundError:
            return 0
        if "oom_kill" in control:  # Linux >= 4.13
            return control["oom_kill"]
        try:  # older kernels: hitting the limit at all is the best we can tell
            return 1 if int(_read(leaf / "memory.failcnt")) > 0 else 0
        except (FileNotFoundError, ValueError):
            return 0

    def oom_killed(self) -> bool:
        return self.oom_kills() > 0

    def read(self, controller: str, filename: str) -> str:
        """The raw text of one cgroup file, e.g. read("memory", "memory.max"); "" for v2's own files."""
        if self.hierarchies.limits_on_v2() or not controller:
            assert self.hierarchies.unified is not None
            return _read(self._dirs[self.hierarchies.unified.key] / filename).strip()
        hierarchy = self.hierarchies.v1_for(controller)
        if hierarchy is None:
            raise CgroupError(f"cgroup {self.parent}/{self.name}: no {controller} hierarchy")
        return _read(self._dirs[hierarchy.key] / filename).strip()

    def freeze(self) -> bool:
        """Stop every process in the cgroup (v2 cgroup.freeze, else the v1 freezer); False if neither."""
        return self._freeze(True)

    def thaw(self) -> bool:
        return self._freeze(False)

    def _freeze(self, frozen: bool) -> bool:
        unified = self.hierarchies.unified
        if unified is not None and (self._dirs[unified.key] / "cgroup.freeze").exists():
            leaf = self._dirs[unified.key]
            self._set(leaf / "cgroup.freeze", "1" if frozen else "0")
            want = "frozen 1" if frozen else "frozen 0"
            _wait_until(lambda: want in _read(leaf / "cgroup.events").splitlines(), _FREEZE_WAIT_S)
            return True
        freezer = self.hierarchies.v1_for("freezer")
        if freezer is None:
            return False
        state = self._dirs[freezer.key] / "freezer.state"
        self._set(state, "FROZEN" if frozen else "THAWED")
        if frozen:
            _wait_until(lambda: _read(state).strip() == "FROZEN", _FREEZE_WAIT_S)
        return True

    def kill_all(self) -> None:
        """SIGKILL every process in the cgroup: v2 cgroup.kill when the kernel has it (5.14+), else
        freeze, signal each pid, thaw (no fork can slip through), repeated until the cgroup is empty."""
        if not any(path.is_dir() for path in self._dirs.values()):
            return
        unified = self.hierarchies.unified
        if unified is not None and (self._dirs[unified.key] / "cgroup.kill").exists():
            self._set(self._dirs[unified.key] / "cgroup.kill", "1")
        else:
            deadline = time.monotonic() + _EMPTY_WAIT_S
            while time.monotonic() < deadline:
                frozen = self.freeze()
                try:
                    targets = self.pids()
                    for pid in targets:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                finally:
                    if frozen:
                        self.thaw()
                if not targets:
                    break
                if _wait_until(lambda: not self.pids(), 0.05):
                    break
        _wait_until(lambda: not self.pids(), _EMPTY_WAIT_S)

    def destroy(self) -> None:
        """rmdir every leaf; one that is busy (processes left in it): kill what is left, then retry
        while the kernel empties it. Idempotent.

        The usual case, a container whose processes are all gone, is ten rmdirs: reading the ten
        cgroup.procs first took 5-60 ms in a `down` of 50 (each of its 30 syscalls gives the GIL back
        and waits for it among the other threads)."""
        left: list[str] = []
        killed = False
        for path in reversed(list(self._dirs.values())):
            deadline = time.monotonic() + _EMPTY_WAIT_S
            delay = 0.0005
            while True:
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno == errno.EBUSY and not killed:
                        killed = True
                        self.kill_all()
                        continue
                    if exc.errno == errno.EBUSY and time.monotonic() < deadline:
                        time.sleep(delay)
                        delay = min(delay * 2, 0.05)
                        continue
                    left.append(f"{path}: {_errno_name(exc)}")
                    break
        if left:
            raise CgroupError(f"cgroup {self.parent}/{self.name}: cannot remove {left[0]}")


def _wait_until(check: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    delay = 0.0002
    while True:
        try:
            if check():
                return True
        except FileNotFoundError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def _rmdir_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.rmdir(path)


def _inherit_cpuset(path: Path) -> None:
    """v1 cpuset: a new cgroup starts with empty cpus/mems and refuses tasks; copy the parent's."""
    for filename in ("cpuset.cpus", "cpuset.mems"):
        try:
            with contextlib.suppress(FileNotFoundError):  # (always there on cgroupfs)
                if _read(path / filename).strip():
                    continue
            value = _read(path.parent / filename).strip()
            _write(path / filename, value)
        except OSError as exc:
            raise CgroupError(f"cgroup {path}: inherit {filename}: {_errno_name(exc)}") from None


def _enable_controllers(path: Path, needed: Iterable[str], available: frozenset[str]) -> None:
    """v2: turn on in `path`'s subtree_control every controller it offers (as runc does); an error only
    when a needed one cannot be enabled (for instance EBUSY: processes in `path`, the no-internal-
    processes rule)."""
    offered = _v2_controllers(path) or available
    try:
        enabled = set(_read(path / "cgroup.subtree_control").split())
    except OSError:
        enabled = set()
    needed_set = set(needed)
    for controller in sorted(offered - enabled):
        try:
            _write(path / "cgroup.subtree_control", f"+{controller}")
        except OSError as exc:
            if controller in needed_set:
                raise CgroupError(
                    f"cgroup {path}: enable +{controller} in cgroup.subtree_control: {_errno_name(exc)}"
                ) from None


if TYPE_CHECKING:

    def _is_a_cgroup_hook(group: Cgroup) -> CgroupHook:
        return group  # mypy checks that Cgroup satisfies the runtime's protocol
