"""Container cgroups on the real hierarchies: limits land, the kernel enforces them, nothing stays behind.

Every process here is started by the test, waits on its stdin until it has been moved into the cgroup,
is bounded in count and time, and is killed and reaped in a `finally`. Every cgroup is destroyed in a
`finally`; the leak check of conftest.py looks at <hierarchy>/composer after each test.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from composer.runtime.cgroups import (
    DEFAULT_ROOT,
    Cgroup,
    CgroupError,
    CgroupExists,
    Hierarchies,
    Mode,
    Resources,
    detect,
    parse_flat_keyed,
    resources_from,
)

MiB = 1024 * 1024


def _name(tag: str) -> str:
    return f"test-{tag}-{os.getpid()}"


@pytest.fixture
def hierarchies() -> Hierarchies:
    found = detect(DEFAULT_ROOT)
    if found.mode is Mode.UNIFIED:
        assert found.unified is not None
        if not {"memory", "pids", "cpu"} <= found.unified.controllers:
            pytest.skip("cgroup v2 without the memory, pids and cpu controllers")
    return found


@contextlib.contextmanager
def cgroup(tag: str, resources: Resources | None, found: Hierarchies) -> Iterator[Cgroup]:
    group = Cgroup.create(_name(tag), resources, hierarchies=found)
    try:
        yield group
    finally:
        group.destroy()


@contextlib.contextmanager
def held(argv: list[str], group: Cgroup) -> Iterator[subprocess.Popen[bytes]]:
    """Start argv (which first reads one line of stdin), move it into `group`, then let it go."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        group.attach(proc.pid)
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        proc.stdin.close()
        proc.stdin = None  # so that communicate() does not flush it
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def python(code: str) -> list[str]:
    return [sys.executable, "-S", "-c", "import sys\nsys.stdin.readline()\n" + code]


def limit(group: Cgroup, controller: str, v1_file: str, v2_file: str) -> str:
    return group.read(controller, v2_file if group.hierarchies.limits_on_v2() else v1_file)


def expected_mode() -> Mode:
    """From the mount table, independently of detect()'s directory probing."""
    types: dict[str, str] = {}
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            mount_point, fstype = fields[4], fields[fields.index("-") + 1]
            types[mount_point] = fstype
    root = str(DEFAULT_ROOT)
    if types.get(root) == "cgroup2":
        return Mode.UNIFIED
    if types.get(f"{root}/unified") == "cgroup2":
        return Mode.HYBRID
    return Mode.LEGACY


# --- detection and set-up --------------------------------------------------------------------------


def test_detection_matches_the_mount_table() -> None:
    found = detect(DEFAULT_ROOT)
    assert found.mode is expected_mode()
    if found.mode is Mode.HYBRID:  # this machine kind: v1 controllers, a controller-less cgroup2
        assert found.unified is not None and found.unified.path == DEFAULT_ROOT / "unified"
        for controller in ("memory", "pids", "cpu", "cpuset", "freezer"):
            assert found.v1_for(controller) is not None, controller


def test_the_process_joins_every_hierarchy_and_limits_read_back(hierarchies: Hierarchies) -> None:
    resources = resources_from(
        mem_limit=64 * MiB, memswap_limit=96 * MiB, cpus=1.5, cpu_shares=512, pids_limit=50, cpuset="0"
    )
    name = _name("limits")
    with cgroup("limits", resources, hierarchies) as group:
        for path in group.dirs.values():
            assert path.is_dir() and path.parent.name == "composer" and path.name == name
        assert limit(group, "memory", "memory.limit_in_bytes", "memory.max") == str(64 * MiB)
        assert limit(group, "pids", "pids.max", "pids.max") == "50"
        assert limit(group, "cpuset", "cpuset.cpus", "cpuset.cpus") == "0"
        if hierarchies.limits_on_v2():
            assert group.read("cpu", "cpu.max") == "150000 100000"
            assert group.read("cpu", "cpu.weight") == "59"
            assert group.read("memory", "memory.swap.max") == str(32 * MiB)
        else:
            assert group.read("cpu", "cpu.cfs_quota_us") == "150000"
            assert group.read("cpu", "cpu.cfs_period_us") == "100000"
            assert group.read("cpu", "cpu.shares") == "512"
            if (group.dirs["memory"] / "memory.memsw.limit_in_bytes").exists():
                assert group.read("memory", "memory.memsw.limit_in_bytes") == str(96 * MiB)
        with held(python("print(open('/proc/self/cgroup').read(), end='')"), group) as proc:
            out, _ = proc.communicate(timeout=30)
        lines = out.decode().splitlines()
        assert lines and all(line.endswith(f"/composer/{name}") for line in lines), lines
        assert len(lines) == len(group.dirs)


def test_a_second_cgroup_with_the_same_name_is_a_clear_error(hierarchies: Hierarchies) -> None:
    with cgroup("twice", None, hierarchies) as first:
        with pytest.raises(CgroupExists, match=r"cgroup composer/test-twice-\d+ already exists"):
            Cgroup.create(first.name, Resources(pids_limit=5), hierarchies=hierarchies)
        assert all(path.is_dir() for path in first.dirs.values())  # the first one is untouched


def test_a_limit_the_kernel_refuses_names_the_file_and_leaves_no_cgroup(hierarchies: Hierarchies) -> None:
    name = _name("refused")
    with pytest.raises(
        CgroupError, match=r"^cgroup composer/test-refused-\d+: cpuset\.cpus = 1023: E[A-Z]+$"
    ):
        Cgroup.create(name, Resources(memory=64 * MiB, cpuset_cpus="1023"), hierarchies=hierarchies)
    for hierarchy in hierarchies.all():
        assert not (hierarchy.path / "composer" / name).exists()


# --- enforcement -----------------------------------------------------------------------------------

HOG = """
chunks = []
for _ in range(64):  # at most 512 MiB, written so that every page is charged
    chunks.append(b"\\x01" * (8 << 20))
print("survived", flush=True)
"""


def test_a_memory_hog_is_oom_killed_and_the_cgroup_says_so(hierarchies: Hierarchies) -> None:
    with cgroup("oom", resources_from(mem_limit=48 * MiB), hierarchies) as group:
        with held(python("print('small', flush=True)"), group) as quiet:
            out, _ = quiet.communicate(timeout=30)
        assert out == b"small\n" and quiet.returncode == 0
        assert not group.oom_killed()
        with held(python(HOG), group) as hog:
            out, _ = hog.communicate(timeout=60)
        assert b"survived" not in out
        assert hog.returncode == -9
        assert group.oom_killed() and group.oom_kills() >= 1


FORKS = """
import os, time
children, refused = [], 0
try:
    for _ in range(20):  # bounded: at most 20 children, each sleeping at most 20 s
        try:
            pid = os.fork()
        except BlockingIOError:  # EAGAIN from the pids controller
            refused += 1
            break
        if pid == 0:
            time.sleep(20)
            os._exit(0)
        children.append(pid)
    print(len(children), refused, flush=True)
finally:
    for pid in children:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
"""


def test_pids_limit_stops_a_fork_loop(hierarchies: Hierarchies) -> None:
    with cgroup("pids", resources_from(pids_limit=6), hierarchies) as group:
        with held(python(FORKS), group) as proc:
            out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        started, refused = map(int, out.split())
        assert (started, refused) == (5, 1)  # the parent and five children: six live processes
        events = parse_flat_keyed(group.read("pids", "pids.events"))
        assert events.get("max", 0) >= 1


BUSY = """
import time
end = time.monotonic() + 0.4  # bounded busy loop
while time.monotonic() < end:
    pass
"""


def test_a_cpu_quota_throttles_a_busy_loop(hierarchies: Hierarchies) -> None:
    with cgroup("cpu", resources_from(cpus=0.05), hierarchies) as group:
        assert limit(group, "cpu", "cpu.cfs_quota_us", "cpu.max").split()[0] == "5000"
        with held(python(BUSY), group) as proc:
            proc.communicate(timeout=60)
        assert proc.returncode == 0
        stat = parse_flat_keyed(group.read("cpu", "cpu.stat"))
        assert stat["nr_throttled"] >= 1


# --- kill and destroy ------------------------------------------------------------------------------

SLEEPERS = ["/bin/sh", "-c", "read go; sleep 30 & sleep 30 & sleep 30 & echo started; wait"]


def _started(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"started\n"


def test_kill_all_then_destroy_leaves_nothing(hierarchies: Hierarchies) -> None:
    group = Cgroup.create(_name("kill"), None, hierarchies=hierarchies)
    try:
        with held(SLEEPERS, group) as proc:
            _started(proc)
            assert len(group.pids()) == 4  # the shell and three sleeps
            group.kill_all()
            assert group.pids() == []
            assert proc.wait(timeout=30) == -9
        group.destroy()
        assert not any(path.exists() for path in group.dirs.values())
        group.destroy()  # idempotent
        assert group.pids() == []
    finally:
        group.destroy()


def test_destroy_kills_what_is_left_even_an_unreaped_child(hierarchies: Hierarchies) -> None:
    group = Cgroup.create(_name("destroy"), None, hierarchies=hierarchies)
    try:
        with held(SLEEPERS, group) as proc:
            _started(proc)
            group.destroy()  # the shell becomes our zombie until proc.wait() below
            assert not any(path.exists() for path in group.dirs.values())
            assert proc.wait(timeout=30) == -9
    finally:
        group.destroy()


def test_v1_kill_path_freezes_signals_and_thaws(tmp_path: Path, hierarchies: Hierarchies) -> None:
    """Without a cgroup2 (no cgroup.kill), kill_all freezes with the v1 freezer, SIGKILLs, thaws."""
    if not hierarchies.v1 or hierarchies.v1_for("freezer") is None:
        pytest.skip("no v1 freezer hierarchy on this host")
    root = tmp_path / "cgroup-v1-only"
    root.mkdir()
    for hierarchy in hierarchies.v1:  # the real v1 hierarchies, without the unified one
        os.symlink(hierarchy.path, root / hierarchy.key)
    legacy = detect(root)
    assert legacy.mode is Mode.LEGACY and legacy.unified is None
    group = Cgroup.create(_name("v1kill"), Resources(pids_limit=20), hierarchies=legacy)
    try:
        with held(SLEEPERS, group) as proc:
            _started(proc)
            assert len(group.pids()) == 4
            group.kill_all()
            assert group.pids() == []
            assert group.read("freezer", "freezer.state") == "THAWED"
            assert proc.wait(timeout=30) == -9
    finally:
        group.destroy()
    assert not any(path.exists() for path in group.dirs.values())


# --- cgroup v2 as far as this host allows ---------------------------------------------------------


@pytest.fixture
def private_cgroup2(tmp_path: Path) -> Iterator[Path]:
    """A second mount of the cgroup2 hierarchy, seen by composer as a unified root.

    It is the host's one cgroup2 hierarchy (a hybrid host's /sys/fs/cgroup/unified): the test restores
    the subtree_control files it changes and unmounts it.
    """
    mount = tmp_path / "cgroup2"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "cgroup2", "cgroup2", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount cgroup2: {done.stderr.strip()}")
    controls = [mount / "cgroup.subtree_control", mount / "composer" / "cgroup.subtree_control"]
    before = {path: set(path.read_text().split()) if path.exists() else set() for path in controls}
    try:
        yield mount
    finally:
        for path in reversed(controls):  # children first: a parent cannot drop what a child uses
            if path.exists():
                for controller in sorted(set(path.read_text().split()) - before[path]):
                    with contextlib.suppress(OSError):
                        path.write_text(f"-{controller}")
        subprocess.run(["umount", str(mount)], check=True)


def test_v2_create_attach_freeze_kill_destroy_on_a_cgroup2_mount(private_cgroup2: Path) -> None:
    found = detect(private_cgroup2)
    assert found.mode is Mode.UNIFIED and found.unified is not None
    group = Cgroup.create(_name("v2"), None, hierarchies=found)
    try:
        leaf = group.dirs[""]
        assert leaf == private_cgroup2 / "composer" / group.name
        # every controller the root offers is enabled on the way down (hugetlb alone on a hybrid host)
        offered = set(found.unified.controllers)
        assert offered <= set((private_cgroup2 / "composer" / "cgroup.subtree_control").read_text().split())
        assert set((leaf / "cgroup.controllers").read_text().split()) == offered
        with held(SLEEPERS, group) as proc:
            _started(proc)
            assert len(group.pids()) == 4
            assert group.freeze()
            assert "frozen 1" in (leaf / "cgroup.events").read_text().splitlines()
            assert group.thaw()
            assert "frozen 0" in (leaf / "cgroup.events").read_text().splitlines()
            group.kill_all()  # cgroup.kill
            assert group.pids() == []
            assert "populated 0" in (leaf / "cgroup.events").read_text().splitlines()
            assert proc.wait(timeout=30) == -9
        assert not group.oom_killed()
    finally:
        group.destroy()
    assert not leaf.exists()


def test_v2_limits_without_their_controller_are_a_clear_error(private_cgroup2: Path) -> None:
    found = detect(private_cgroup2)
    assert found.unified is not None
    if "memory" in found.unified.controllers:
        pytest.skip("this host's cgroup2 has the memory controller")
    name = _name("v2mem")
    with pytest.raises(CgroupError, match="the memory controller is not available in cgroup v2"):
        Cgroup.create(name, Resources(memory=64 * MiB), hierarchies=found)
    assert not (private_cgroup2 / "composer" / name).exists()
