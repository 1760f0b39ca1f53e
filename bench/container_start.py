"""Container start cost: launch-to-exit of `true` in a busybox container, and its peers.

    sudo .venv/bin/python bench/container_start.py [--runs 200]

Rows: composer one at a time (median and p90 of single starts), 50 in a row and 50 in parallel
(wall time / 50), the same start on an image of 40 and 120 extra layers named like the store's (each
row says whether its overlay options fit mount(2)'s one page or went through `lowerdir+`), the
`unshare` floor, and `crun run` / `runc run` on the same rootfs when installed.
Also: the supervisor's RSS growth per running container. Needs root. Prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from composer.runtime.forkserver import ForkServer  # before trio, on purpose


def _busybox_rootfs(target: Path) -> Path:
    from tests.privileged.conftest import make_busybox_rootfs

    return make_busybox_rootfs(target)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _cpu_busy(interval: float) -> float:
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as handle:
            fields = [int(x) for x in handle.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]

    total0, idle0 = sample()
    time.sleep(interval)
    total1, idle1 = sample()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def wait_idle(limit: float = 0.10, window: float = 2.0, give_up: float = 60.0) -> bool:
    """Wait until the (shared) machine is under `limit` busy for `window` seconds; False if it never was."""
    deadline = time.monotonic() + give_up
    while time.monotonic() < deadline:
        if _cpu_busy(window) < limit:
            return True
    return False


def _rss_kib() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@dataclass(frozen=True, slots=True)
class ComposerResult:
    singles: list[float]
    in_a_row: float
    parallel: float
    rss_kib: float
    by_layers: dict[int, tuple[str, list[float]]]


def _extra_layers(base: Path, count: int) -> list[Path]:
    """`count` one-file layers named by 64 hex digits, as the store's are, top first."""
    out = []
    for i in range(count):
        layer = base / f"{i:064x}"
        layer.mkdir(parents=True)
        (layer / f"file-{i}").write_text("x")
        out.append(layer)
    return out[::-1]


def bench_composer(forkserver: ForkServer, rootfs: Path, state: Path, runs: int) -> ComposerResult:
    import trio

    from composer.runtime import rootfs as overlay
    from composer.runtime.launch import Runtime
    from composer.runtime.spec import ContainerSpec
    from composer.storage.layout import Layout

    layout = Layout(state).ensure()
    runtime = Runtime(layout, forkserver)

    tall = _extra_layers(state.parent / "l", 120)  # <work>/l/<64 hex>, close to the default root's length

    def spec(name: str, argv: tuple[str, ...] = ("true",), layers: int = 0) -> ContainerSpec:
        return ContainerSpec(id=name, lower_dirs=(*tall[:layers], rootfs), argv=argv)

    async def one(name: str, layers: int = 0) -> float:
        start = time.perf_counter()
        container = await runtime.start(spec(name, layers=layers))
        status = await container.wait()
        took = time.perf_counter() - start
        assert status.code == 0, status
        return took

    async def main() -> ComposerResult:
        for i in range(10):  # warm-up
            await one(f"w{i}")
            runtime.remove(f"w{i}")
        await trio.to_thread.run_sync(wait_idle)
        singles = []
        for i in range(runs):
            singles.append(await one(f"s{i}"))
            runtime.remove(f"s{i}")
        await trio.to_thread.run_sync(wait_idle)
        start = time.perf_counter()
        for i in range(50):
            await one(f"r{i}")
        in_a_row = (time.perf_counter() - start) / 50
        for i in range(50):
            runtime.remove(f"r{i}")
        await trio.to_thread.run_sync(wait_idle)
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(one, f"p{i}")
        parallel = (time.perf_counter() - start) / 50
        for i in range(50):
            runtime.remove(f"p{i}")
        by_layers: dict[int, tuple[str, list[float]]] = {}
        for layers in (40, 120):
            await trio.to_thread.run_sync(wait_idle)
            folder = layout.container_dir(f"l{layers}-0")
            lower = tuple(str(d) for d in spec("x", layers=layers).lower_dirs)
            fits = overlay.fits_mount_data(lower, str(folder / "upper"), str(folder / "work"))
            times = []
            for i in range(min(runs, 100)):
                times.append(await one(f"l{layers}-{i}", layers))
                runtime.remove(f"l{layers}-{i}")
            by_layers[layers] = ("mount(2)" if fits else "lowerdir+", times)
        # supervisor memory per running container
        before = _rss_kib()
        running = [await runtime.start(spec(f"m{i}", ("sleep", "1000"))) for i in range(50)]
        per_container = (_rss_kib() - before) / 50
        for container in running:
            await container.stop(grace=0)
        for i in range(50):
            runtime.remove(f"m{i}")
        return ComposerResult(singles, in_a_row, parallel, per_container, by_layers)

    return trio.run(main)


def bench_command(argv: list[str], runs: int) -> list[float]:
    wait_idle()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True)
        times.append(time.perf_counter() - start)
    return times


def bench_oci(tool: str, rootfs: Path, work: Path, runs: int) -> list[float] | None:
    if shutil.which(tool) is None:
        return None
    bundle = work / f"{tool}-bundle"
    bundle.mkdir()
    (bundle / "rootfs").symlink_to(rootfs)
    subprocess.run([tool, "spec"], cwd=bundle, check=True, capture_output=True)
    wait_idle()
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["args"] = ["true"]
    config["process"]["terminal"] = False
    config["root"] = {"path": str(rootfs), "readonly": True}
    (bundle / "config.json").write_text(json.dumps(config))
    times = []
    for i in range(runs):
        start = time.perf_counter()
        done = subprocess.run([tool, "run", "-b", str(bundle), f"bench-{os.getpid()}-{i}"],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
            raise RuntimeError(last)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root")
    forkserver = ForkServer.start()
    work = Path(tempfile.mkdtemp(prefix="composer-bench-"))
    try:
        rootfs = _busybox_rootfs(work / "rootfs")
        result = bench_composer(forkserver, rootfs, work / "state", args.runs)
        rows: list[tuple[str, str, str]] = []
        failures: list[str] = []

        def row(name: str, times: list[float]) -> None:
            rows.append((name, f"{statistics.median(times) * 1e3:.2f}", f"{_pct(times, 0.9) * 1e3:.2f}"))

        row("composer, one at a time", result.singles)
        rows.append(("composer, 50 in a row (wall/50)", f"{result.in_a_row * 1e3:.2f}", ""))
        rows.append(("composer, 50 in parallel (wall/50)", f"{result.parallel * 1e3:.2f}", ""))
        for layers, (method, times) in result.by_layers.items():
            row(f"composer, image of {layers} + 1 layers ({method})", times)
        unshare = ["unshare", "--fork", "--pid", "--mount", "--uts", "--ipc", "--net", "--mount-proc", "true"]
        row(" ".join(unshare), bench_command(unshare, args.runs))
        for tool in ("crun", "runc"):
            try:
                times = bench_oci(tool, rootfs, work, min(args.runs, 50))
            except RuntimeError as exc:  # e.g. crun 1.8 refuses a cgroup v1/v2 hybrid host
                rows.append((f"{tool} run", "failed", ""))
                failures.append(f"{tool}: {exc}")
                continue
            if times is None:
                rows.append((f"{tool} run", "not installed", ""))
            else:
                row(f"{tool} run", times)
        width = max(len(r[0]) for r in rows)
        print(f"{'container start -> exit of `true`':<{width}}  {'median ms':>13}  {'p90 ms':>8}")
        for name, median, p90 in rows:
            print(f"{name:<{width}}  {median:>13}  {p90:>8}")
        for failure in failures:
            print(f"note: {failure}")
        max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"supervisor RSS per running container: {result.rss_kib:.1f} KiB; max RSS {max_rss:.1f} MiB")
    finally:
        forkserver.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
