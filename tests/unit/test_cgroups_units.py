"""Pure cgroup logic: Docker's resource rules, v1/v2 conversions, layout detection and the files written,
on fake cgroup trees in a temporary folder (plain directories stand in for cgroupfs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from composer.runtime.cgroups import (
    Cgroup,
    CgroupError,
    CgroupExists,
    Mode,
    Resources,
    cpu_quota_us,
    cpu_weight,
    detect,
    parse_cpuset,
    parse_flat_keyed,
    resources_from,
    swap_max_v2,
    v1_writes,
    v2_writes,
)

MiB = 1024 * 1024


# --- conversions -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shares", "weight"),
    [
        (1, 1),
        (2, 1),
        (3, 2),
        (512, 59),
        (1024, 100),
        (2048, 174),
        (262143, 10000),
        (262144, 10000),
        (10**6, 10000),
    ],
)
def test_cpu_shares_map_to_weights_with_the_defaults_meeting(shares: int, weight: int) -> None:
    assert cpu_weight(shares) == weight


def test_cpu_weight_is_monotonic_over_the_whole_range() -> None:
    weights = [cpu_weight(shares) for shares in range(2, 262145, 97)]
    assert weights == sorted(weights) and weights[0] == 1 and min(weights) >= 1 and max(weights) <= 10000


def test_cpus_become_a_cfs_quota() -> None:
    assert cpu_quota_us(1.5) == 150_000
    assert cpu_quota_us(0.5) == 50_000
    assert cpu_quota_us(0.01) == 1_000
    assert cpu_quota_us(2, period=50_000) == 100_000


def test_memory_swap_becomes_the_swap_alone_on_v2() -> None:
    assert swap_max_v2(64 * MiB, 96 * MiB) == 32 * MiB
    assert swap_max_v2(64 * MiB, 64 * MiB) == 0  # no swap at all
    assert swap_max_v2(64 * MiB, -1) == -1
    assert swap_max_v2(64 * MiB, None) is None
    with pytest.raises(CgroupError, match="needs mem_limit"):
        swap_max_v2(None, 96 * MiB)


def test_cpusets_parse_and_refuse_garbage() -> None:
    assert parse_cpuset("0-2,5") == (0, 1, 2, 5)
    assert parse_cpuset(" 3 ") == (3,)
    for bad in ("", "a", "1-", "0,,1", "-1", "1 2"):
        with pytest.raises(CgroupError, match="expected a list like 0-3,5"):
            parse_cpuset(bad)
    with pytest.raises(CgroupError, match="runs backwards"):
        parse_cpuset("3-1")


def test_flat_keyed_files_parse() -> None:
    text = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"
    assert parse_flat_keyed(text) == {"oom_kill_disable": 0, "under_oom": 0, "oom_kill": 3}
    assert parse_flat_keyed("low 0\nmax 2\noom_group_kill 0\n")["max"] == 2
    assert parse_flat_keyed("usage_usec 12\nnr_throttled 4\n\n")["nr_throttled"] == 4


# --- resources_from: Docker's rules ----------------------------------------------------------------


def test_nothing_set_is_no_limit() -> None:
    assert resources_from() == Resources()
    assert resources_from(mem_limit=0, cpus=0, cpu_shares=0, pids_limit=0) == Resources()
    assert resources_from(pids_limit=-1) == Resources()
    assert Resources().controllers() == frozenset()


def test_an_unset_memswap_allows_as_much_swap_as_memory() -> None:
    res = resources_from(mem_limit=64 * MiB)
    assert (res.memory, res.memory_swap) == (64 * MiB, 128 * MiB)
    assert resources_from(mem_limit=64 * MiB, memswap_limit=-1).memory_swap == -1
    assert resources_from(mem_limit=64 * MiB, memswap_limit=64 * MiB).memory_swap == 64 * MiB


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mem_limit": 1024}, "mem_limit 1024: the minimum is 6 MiB"),
        ({"memswap_limit": 96 * MiB}, "memswap_limit needs mem_limit"),
        ({"mem_limit": 64 * MiB, "memswap_limit": 32 * MiB}, "is smaller than mem_limit"),
        ({"mem_limit": 64 * MiB, "mem_reservation": 65 * MiB}, "mem_reservation"),
        ({"cpus": 0.001}, "cpus 0.001: the minimum is 0.01"),
        ({"cpus": -1.0}, "cpus -1.0: must be a positive number"),
        ({"cpus": 1.0, "cpu_quota": 50000}, "cpus and cpu_quota cannot both be set"),
        ({"cpu_period": 10}, "cpu_period 10"),
        ({"cpu_shares": -5}, "cpu_shares -5"),
        ({"pids_limit": -7}, "pids_limit -7"),
        ({"cpuset": "x"}, "cpuset 'x'"),
    ],
)
def test_bad_values_are_clear_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(CgroupError, match=message.replace("(", r"\(")) as caught:
        resources_from(**kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)


def test_cpu_values() -> None:
    res = resources_from(cpus=1.5, cpu_shares=1)
    assert (res.cpu_quota, res.cpu_period, res.cpu_shares) == (
        150_000,
        100_000,
        2,
    )  # shares clamp like the kernel
    assert resources_from(cpu_quota=20_000, cpu_period=50_000).cpu_quota == 20_000
    assert resources_from(cpu_quota=-1).cpu_quota is None
    assert resources_from(cpu_shares=10**7).cpu_shares == 262_144


def test_controllers_needed() -> None:
    res = resources_from(mem_limit=64 * MiB, cpus=1, pids_limit=10, cpuset="0")
    assert res.controllers() == {"memory", "cpu", "pids", "cpuset"}


# --- files written ---------------------------------------------------------------------------------


def test_v1_files_in_order() -> None:
    res = resources_from(
        mem_limit=64 * MiB, memswap_limit=96 * MiB, mem_reservation=32 * MiB, cpus=0.5, cpu_shares=512,
        pids_limit=100, cpuset="0-1",
    )  # fmt: skip
    assert v1_writes(res) == [
        ("cpuset", "cpuset.cpus", "0-1"),
        ("memory", "memory.limit_in_bytes", str(64 * MiB)),
        ("memory", "memory.memsw.limit_in_bytes", str(96 * MiB)),
        ("memory", "memory.soft_limit_in_bytes", str(32 * MiB)),
        ("cpu", "cpu.shares", "512"),
        ("cpu", "cpu.cfs_period_us", "100000"),
        ("cpu", "cpu.cfs_quota_us", "50000"),
        ("pids", "pids.max", "100"),
    ]


def test_v2_files() -> None:
    res = resources_from(
        mem_limit=64 * MiB, memswap_limit=96 * MiB, mem_reservation=32 * MiB, cpus=0.5, cpu_shares=1024,
        pids_limit=100, cpuset="0-1",
    )  # fmt: skip
    assert v2_writes(res) == [
        ("cpuset", "cpuset.cpus", "0-1"),
        ("memory", "memory.max", str(64 * MiB)),
        ("memory", "memory.swap.max", str(32 * MiB)),
        ("memory", "memory.low", str(32 * MiB)),
        ("cpu", "cpu.weight", "100"),
        ("cpu", "cpu.max", "50000 100000"),
        ("pids", "pids.max", "100"),
    ]
    assert ("memory", "memory.swap.max", "max") in v2_writes(
        resources_from(mem_limit=64 * MiB, memswap_limit=-1)
    )


# --- fake trees --------------------------------------------------------------------------------------


def fake_v2(root: Path, controllers: str = "cpuset cpu io memory pids") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").write_text(controllers + "\n")
    (root / "cgroup.subtree_control").write_text("")
    (root / "cgroup.procs").write_text("")
    return root


def fake_v1(
    root: Path, names: tuple[str, ...] = ("cpu,cpuacct", "memory", "pids", "cpuset", "systemd")
) -> Path:
    for name in names:
        (root / name).mkdir(parents=True)
        (root / name / "cgroup.procs").write_text("")
    if "cpu,cpuacct" in names:
        os.symlink("cpu,cpuacct", root / "cpu")
        os.symlink("cpu,cpuacct", root / "cpuacct")
    if "cpuset" in names:
        (root / "cpuset" / "cpuset.cpus").write_text("0-3\n")
        (root / "cpuset" / "cpuset.mems").write_text("0\n")
    return root


def test_detect_unified(tmp_path: Path) -> None:
    found = detect(fake_v2(tmp_path / "cg"))
    assert found.mode is Mode.UNIFIED and found.v1 == ()
    assert found.unified is not None and found.unified.key == ""
    assert found.unified.controllers == {"cpuset", "cpu", "io", "memory", "pids"}


def test_detect_legacy_joins_comounted_hierarchies_once(tmp_path: Path) -> None:
    found = detect(fake_v1(tmp_path / "cg"))
    assert found.mode is Mode.LEGACY and found.unified is None
    assert [h.key for h in found.v1] == ["cpu,cpuacct", "cpuset", "memory", "pids", "systemd"]
    cpu = found.v1_for("cpu")
    assert cpu is not None and cpu is found.v1_for("cpuacct") and cpu.key == "cpu,cpuacct"


def test_detect_hybrid_and_errors(tmp_path: Path) -> None:
    root = fake_v1(tmp_path / "cg")
    fake_v2(root / "unified", controllers="")
    found = detect(root)
    assert found.mode is Mode.HYBRID
    assert found.unified is not None and found.unified.path == root / "unified"
    assert not found.limits_on_v2()
    (tmp_path / "empty").mkdir()
    with pytest.raises(CgroupError, match="no cgroup hierarchy is mounted at"):
        detect(tmp_path / "empty")
    with pytest.raises(CgroupError, match=r"no cgroup hierarchy at .*: ENOENT"):
        detect(tmp_path / "missing")


def test_create_on_a_fake_v2_tree_writes_the_v2_files(tmp_path: Path) -> None:
    root = fake_v2(tmp_path / "cg")
    res = resources_from(mem_limit=64 * MiB, memswap_limit=-1, cpus=0.5, cpu_shares=2048, pids_limit=7)
    group = Cgroup.create("web-1", res, root=root)
    leaf = root / "composer" / "web-1"
    assert group.dirs == {"": leaf}
    assert group.paths == (str(leaf),)
    assert (leaf / "memory.max").read_text() == str(64 * MiB)
    assert (leaf / "memory.swap.max").read_text() == "max"
    assert (leaf / "cpu.max").read_text() == "50000 100000"
    assert (leaf / "cpu.weight").read_text() == "174"
    assert (leaf / "pids.max").read_text() == "7"
    assert (root / "cgroup.subtree_control").read_text().startswith("+")  # controllers enabled going down
    (leaf / "memory.events").write_text("low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n")
    assert group.oom_killed() and group.oom_kills() == 1
    with pytest.raises(CgroupExists, match="cgroup composer/web-1 already exists"):
        Cgroup.create("web-1", res, root=root)
    assert Cgroup.load("web-1", root=root).dirs == group.dirs


def test_create_refuses_a_controller_v2_lacks_and_leaves_nothing(tmp_path: Path) -> None:
    root = fake_v2(tmp_path / "cg", controllers="cpu pids")
    with pytest.raises(CgroupError, match="the memory controller is not available in cgroup v2"):
        Cgroup.create("db", Resources(memory=64 * MiB, pids_limit=5), root=root)
    assert not (root / "composer" / "db").exists()


def test_create_on_a_fake_v1_tree(tmp_path: Path) -> None:
    root = fake_v1(tmp_path / "cg")
    res = resources_from(mem_limit=64 * MiB, cpus=2, pids_limit=9)
    group = Cgroup.create("api", res, root=root, parent="composer/proj")
    assert set(group.dirs) == {"cpu,cpuacct", "cpuset", "memory", "pids", "systemd"}
    assert all(path == root / key / "composer/proj/api" for key, path in group.dirs.items())
    memory = group.dirs["memory"]
    assert (memory / "memory.limit_in_bytes").read_text() == str(64 * MiB)
    assert not (memory / "memory.memsw.limit_in_bytes").exists()  # no swap accounting: skipped, like Docker
    assert (group.dirs["cpu,cpuacct"] / "cpu.cfs_quota_us").read_text() == "200000"
    assert (group.dirs["pids"] / "pids.max").read_text() == "9"
    for folder in (root / "cpuset/composer", root / "cpuset/composer/proj", group.dirs["cpuset"]):
        assert (folder / "cpuset.cpus").read_text() == "0-3"  # inherited, or no task could join
        assert (folder / "cpuset.mems").read_text() == "0"
    (memory / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 0\n")
    assert not group.oom_killed()


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "x\n"])
def test_bad_names_are_refused(tmp_path: Path, name: str) -> None:
    root = fake_v2(tmp_path / "cg")
    with pytest.raises(CgroupError, match="invalid cgroup name"):
        Cgroup.create(name, root=root)


def test_bad_parents_are_refused(tmp_path: Path) -> None:
    root = fake_v2(tmp_path / "cg")
    for parent in ("/abs", "a/../b", "a//b", ""):
        with pytest.raises(CgroupError, match="invalid cgroup parent"):
            Cgroup.create("x", root=root, parent=parent)
