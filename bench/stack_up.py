"""Stack up/down, restart after a crash, supervisor memory: the composer CLI on N trivial services.

    sudo .venv/bin/python bench/stack_up.py [--sizes 1,10,50,100] [--repeats 3] [--variant kill|spec]
                                            [--restart-rounds 3] [--settle 1] [--keep DIR]

Needs root. Everything happens under a private root (`--root <tmp>/root`) with project names unique
to the run, all removed at the end, also after Ctrl-C or SIGTERM (`down -t 0` of every project
brought up, then a wait for its supervisor to leave).

Not timed: a busybox image built once with `composer build` (FROM scratch, the host's static
/bin/busybox copied in, `busybox --install -s /bin`), and one warm-up `up -d`/`down` of N=1. The
composer processes get a bytecode cache in the work folder (PYTHONPYCACHEPREFIX; a
PYTHONDONTWRITEBYTECODE in the environment is dropped), as an installed composer has one.

1. For each N: the compose file `../shared/tools/peers/gen_stack.py -n N` writes (services svc01..,
   `command: ["sleep", "3600"]`, `restart: unless-stopped`, default network, no `name:` key; the
   `kill` variant adds `stop_signal: SIGKILL` as `gen_stack.py --stop-signal SIGKILL` does), with the
   built image instead of `busybox`. `up -d` is timed from the start of the command until it has
   returned and every record says running (the peers' method: until all N run); then, after
   --settle seconds, `down` until it returns. Each run starts with no supervisor (the previous one is
   waited out), so `up -d` includes starting the project's supervisor. Median and min of the
   --repeats rounds; a round that fails is counted in `ok`, left out of the times, listed under the
   table (exit status 1), and cleaned up (`down -t 0`) before the next.
   The supervisor's RSS (VmRSS of the pid in `supervisor.pid`; its two small children, the fork-server
   and the guardian, apart and summed: mostly pages shared with the supervisor) is read
   after every `up -d`.
2. Restart after a crash: one service with `restart: always`; its main process (the pid in
   `<root>/containers/<id>/record.json`) is killed with SIGKILL and the record polled every ms until
   it says running with a new pid. Three kills in a row (0.2 s after each restart) show the backoff
   (100 ms, doubling, as Docker's); --restart-rounds rounds, each on a fresh `up -d`.

The peers' numbers (Docker Compose v2, v1, podman-compose on a Docker 20.10 / podman 4.3 engine) are
printed as a reference only: they were measured elsewhere, not in this run (see PEER_SOURCE).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cli_tools import (
    CommandFailed,
    alive,
    children,
    clean_env,
    is_supervisor,
    mounts_under,
    no_interrupts,
    read_json,
    rss_kib,
    run_composer,
    sigterm_as_interrupt,
)  # fmt: skip

DEFAULT_SIZES = (1, 10, 50, 100)
IMAGE = "composer-bench-busybox:latest"
BUSYBOX = Path("/bin/busybox")
COMMAND_TIMEOUT = 300.0  # seconds: bound on any one composer command
READY_TIMEOUT = 60.0  # seconds: bound on waiting for N records to say running
SUPERVISOR_EXIT_TIMEOUT = 20.0  # seconds: bound on waiting for a supervisor to leave after `down`
RESTART_TIMEOUT = 10.0  # seconds: bound on waiting for one restart
RSS_SERVICES = 100

# The issue's targets (shown, not asserted).
TARGET_UP_50 = 0.8  # s
TARGET_DOWN_50 = 0.4  # s
TARGET_FIRST_RESTART = 0.150  # s from the kill
TARGET_RSS_100 = 60.0  # MiB

# Measured elsewhere, NOT in this run: ../shared/research/peers.md, "Stack up/down" (2026-11-23,
# Debian 12 VM of this machine kind, 2 cores, busy with other work; median of 3, runs A / B; seconds).
PEER_SOURCE = "../shared/research/peers.md (2026-11-23, Docker 20.10 / podman 4.3 engines; not this run)"
PEERS: dict[str, dict[str, dict[int, tuple[str, str]]]] = {
    # variant -> peer -> N -> (up -d "A / B", down "A / B")
    "kill": {
        "Compose v2 2.26.1": {1: ("0.61/0.51", "0.43/0.40"), 10: ("2.84/1.83", "1.18/0.96"),
                              50: ("9.90/8.09", "3.93/3.62")},
        "Compose v1 1.29.2": {1: ("0.94/0.99", "0.78/0.91"), 10: ("2.47/2.60", "1.51/1.55"),
                              50: ("9.85/9.17", "4.37/4.38")},
        "podman-compose 1.6.0": {1: ("0.51/0.54", "0.53/0.52"), 10: ("2.45/2.41", "1.68/1.53"),
                                 50: ("11.57/11.50", "6.54/6.77")},
    },
    "spec": {
        "Compose v2 2.26.1": {1: ("0.52/0.49", "10.56/10.40"), 10: ("2.35/2.17", "11.12/10.98"),
                              50: ("9.43/7.70", "13.65/13.56")},
        "Compose v1 1.29.2": {1: ("1.03/1.06", "11.02/10.87"), 10: ("2.94/2.58", "11.44/11.59"),
                              50: ("10.05/9.71", "14.53/14.22")},
        "podman-compose 1.6.0": {1: ("0.61/0.55", "10.72/10.57"), 10: ("2.73/2.52", "11.80/11.50"),
                                 50: ("11.94/12.27", "16.88/16.36")},
    },
}  # fmt: skip
# peers.md, "Restart": intervals between starts of a service whose command exits 1 at once.
PEER_RESTARTS = (
    "docker 20.10 (restart: always): 0.37, 0.50, 0.72 s between the first starts (backoff + ~0.3 s/cycle)",
    "podman 4.3 (restart: always): 0.08-0.11 s between starts, no backoff",
)


# --- the compose files (gen_stack.py's shape, re-implemented) -------------------------------------------


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_stack(
    n: int,
    image: str,
    argv: tuple[str, ...] = ("sleep", "3600"),
    restart: str = "unless-stopped",
    stop_signal: str | None = None,
) -> str:
    """What `gen_stack.py -n N [--stop-signal S] [--restart R]` writes, with `image` for busybox."""
    width = max(2, len(str(n)))
    lines = [f"# generated by bench/stack_up.py in gen_stack.py's shape: {n} service(s)", "services:"]
    for i in range(1, n + 1):
        lines.append(f"  svc{i:0{width}d}:")
        lines.append(f"    image: {_quote(image)}")
        lines.append(f"    command: [{', '.join(_quote(a) for a in argv)}]")
        if restart:
            lines.append(f"    restart: {_quote(restart)}")
        if stop_signal:
            lines.append(f"    stop_signal: {_quote(stop_signal)}")
    return "\n".join(lines) + "\n"


# --- running composer ------------------------------------------------------------------------------------


@dataclass
class Bench:
    work: Path
    env: dict[str, str]
    prefix: str  # unique to the run: every project name starts with it
    root: Path = field(init=False)
    brought_up: dict[str, Path] = field(default_factory=dict)  # project -> compose file

    def __post_init__(self) -> None:
        self.root = self.work / "root"

    def composer(self, project: str, file: Path, *args: str, timeout: float = COMMAND_TIMEOUT) -> float:
        """Run one composer command on `project`; its wall time (cli_tools.run_composer)."""
        common = ["--root", str(self.root), "-p", project, "-f", str(file)]
        took, _ = run_composer(
            args, common=common, cwd=file.parent, env=self.env, timeout=timeout, label=project
        )
        return took

    def up(self, project: str, file: Path) -> float:
        self.brought_up[project] = file
        return self.composer(project, file, "up", "-d")

    def down(self, project: str, file: Path, *args: str) -> float:
        took = self.composer(project, file, "down", *args)
        self.brought_up.pop(project, None)
        return took

    # -- state files --

    def records(self, project: str) -> list[dict[str, object]]:
        out = []
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.root / "containers"):
                record = read_json(Path(entry.path) / "record.json")
                if record is not None and record.get("project") == project:
                    out.append(record)
        return out

    def supervisor_pid(self, project: str) -> int | None:
        try:
            return int((self.root / "projects" / project / "supervisor.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def wait_running(self, project: str, n: int, timeout: float = READY_TIMEOUT) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            records = self.records(project)
            if len(records) >= n and all(r.get("state") == "running" and alive(r) for r in records):
                return True
            time.sleep(0.005)
        return False

    def wait_supervisor_gone(
        self, project: str, pid: int | None, timeout: float = SUPERVISOR_EXIT_TIMEOUT
    ) -> bool:
        """Wait (bounded) until `project`'s supervisor has left: its pid gone and no pid file."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            current = self.supervisor_pid(project)
            if (pid is None or not is_supervisor(pid, self.root)) and (
                current is None or not is_supervisor(current, self.root)
            ):
                return True
            time.sleep(0.02)
        return False

    def cleanup(self) -> list[str]:
        """Bring down every project this run brought up; wait for the supervisors. Problems, as text."""
        problems = []
        for project, file in list(self.brought_up.items()):
            pid = self.supervisor_pid(project)
            try:
                self.down(project, file, "-t", "0")
            except CommandFailed as exc:
                problems.append(f"cleanup of {project}: {exc}")
            if not self.wait_supervisor_gone(project, pid):
                problems.append(f"cleanup of {project}: its supervisor ({pid}) is still there")
        if self.root.is_dir():
            projects = {p.name for p in (self.root / "projects").glob("*") if p.name.startswith(self.prefix)}
            for project in sorted(projects):
                pid = self.supervisor_pid(project)
                if (
                    pid is not None
                    and is_supervisor(pid, self.root)
                    and not self.wait_supervisor_gone(project, pid)
                ):
                    problems.append(f"supervisor {pid} of {project} did not leave")
        return problems


def supervisor_rss(bench: Bench, project: str) -> tuple[float, float] | None:
    """(supervisor MiB, its children's MiB: the fork-server and the guardian) for `project`'s supervisor."""
    pid = bench.supervisor_pid(project)
    if pid is None or not is_supervisor(pid, bench.root):
        return None
    main = rss_kib(pid)
    helper = sum(rss_kib(c) or 0 for c in children(pid) if is_supervisor(c, bench.root))
    return (main or 0) / 1024, helper / 1024


# --- the measurements ------------------------------------------------------------------------------------


def build_image(bench: Bench) -> float:
    context = bench.work / "image"
    context.mkdir()
    shutil.copy2(BUSYBOX, context / "busybox")
    (context / "Dockerfile").write_text(
        'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
    )
    file = bench.work / "build.yaml"
    file.write_text(f"services:\n  image:\n    image: {IMAGE}\n    build: ./image\n")
    return bench.composer(f"{bench.prefix}build", file, "build", "-q")


@dataclass
class StackResult:
    n: int
    up: list[float] = field(default_factory=list)
    down: list[float] = field(default_factory=list)
    rss: list[tuple[float, float]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # rounds that failed (not in the times)
    error: str | None = None  # the measurement of this N stopped


def recover(bench: Bench, project: str, file: Path) -> bool:
    """After a failed round: `down -t 0` and wait for the supervisor; True if nothing is left."""
    pid = bench.supervisor_pid(project)
    try:
        bench.down(project, file, "-t", "0")
    except CommandFailed:
        return False
    return not bench.records(project) and bench.wait_supervisor_gone(project, pid)


# --- Docker Compose v2, side by side (where an engine runs: ../shared/tools/peers/setup.sh) ---------------

DOCKER = "/usr/bin/docker"  # Debian's CLI, matching Debian's engine (setup.sh's choice)
PEER_IMAGE = "busybox:latest"  # setup.sh imports the same static busybox into docker
PEER_PREFIX = "pbench"  # setup.sh's rule: the peers' projects and containers are named pbench*


@dataclass
class ComposeV2:
    """`docker compose` on the same files, timed the same way (until N containers run; down)."""

    version: str
    prefix: str

    @classmethod
    def find(cls) -> ComposeV2 | None:
        def out(*argv: str) -> str | None:
            try:
                done = subprocess.run([DOCKER, *argv], capture_output=True, text=True, timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                return None
            return done.stdout.strip() if done.returncode == 0 else None

        version = out("compose", "version", "--short")
        if not version or out("info", "--format", "{{.ServerVersion}}") is None:
            return None
        if out("image", "inspect", PEER_IMAGE) is None:
            return None
        return cls(version=version, prefix=f"{PEER_PREFIX}{os.getpid()}")

    def run(self, project: str, file: Path, *args: str) -> float:
        argv = [DOCKER, "compose", "-p", project, "-f", str(file), *args]
        start = time.perf_counter()
        done = subprocess.run(argv, cwd=file.parent, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
        took = time.perf_counter() - start
        if done.returncode != 0:
            tail = " | ".join(done.stderr.strip().splitlines()[-3:])
            raise CommandFailed(
                f"docker compose {' '.join(args)} ({project}): exit {done.returncode}: {tail}"
            )
        return took

    def running(self, project: str) -> int:
        done = subprocess.run(
            [DOCKER, "ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
             "--filter", "status=running"], capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        return len(done.stdout.split())

    def round(self, file: Path, n: int, settle: float, result: StackResult) -> None:
        project = f"{self.prefix}n{n}"
        start = time.perf_counter()
        try:
            self.run(project, file, "up", "-d")
            deadline = time.monotonic() + READY_TIMEOUT
            while self.running(project) < n:
                if time.monotonic() > deadline:
                    raise CommandFailed(f"docker compose {project}: not all {n} running")
                time.sleep(0.02)
            result.up.append(time.perf_counter() - start)
            time.sleep(settle)
            result.down.append(self.run(project, file, "down"))
        except CommandFailed as exc:
            result.failures.append(str(exc))
            with contextlib.suppress(CommandFailed, subprocess.TimeoutExpired):
                self.run(project, file, "down", "-t", "0")


def stack_round(bench: Bench, project: str, file: Path, n: int, settle: float, result: StackResult) -> None:
    start = time.perf_counter()
    bench.up(project, file)
    if not bench.wait_running(project, n):
        raise CommandFailed(f"{project}: not all {n} containers running {READY_TIMEOUT:g} s after up -d")
    result.up.append(time.perf_counter() - start)
    rss = supervisor_rss(bench, project)
    if rss is not None:
        result.rss.append(rss)
    time.sleep(settle)
    pid = bench.supervisor_pid(project)
    result.down.append(bench.down(project, file))
    left = bench.records(project)
    if left:
        raise CommandFailed(f"{project}: {len(left)} container record(s) left after down")
    if not bench.wait_supervisor_gone(project, pid):
        raise CommandFailed(
            f"{project}: supervisor {pid} still there {SUPERVISOR_EXIT_TIMEOUT:g} s after down"
        )


def bench_stacks(
    bench: Bench, sizes: list[int], repeats: int, variant: str, settle: float, peer: ComposeV2 | None = None
) -> tuple[list[StackResult], list[StackResult]]:
    """composer's rounds, and Compose v2's on the same file (its image apart) right after each, when
    `peer` is given."""
    stop_signal = "SIGKILL" if variant == "kill" else None
    warm = bench.work / "stack-warm-1.yaml"
    warm.write_text(render_stack(1, IMAGE, stop_signal=stop_signal))
    stack_round(bench, f"{bench.prefix}warm", warm, 1, 0.0, StackResult(1))
    if peer is not None:
        peer_warm = bench.work / "peer" / "stack-warm-1.yaml"
        peer_warm.parent.mkdir(exist_ok=True)
        peer_warm.write_text(render_stack(1, PEER_IMAGE, stop_signal=stop_signal))
        peer.round(peer_warm, 1, 0.0, StackResult(1))
    results, peer_results = [], []
    for n in sizes:
        file = bench.work / f"stack-{variant}-{n}.yaml"
        file.write_text(render_stack(n, IMAGE, stop_signal=stop_signal))
        peer_file = bench.work / "peer" / file.name
        if peer is not None:
            peer_file.write_text(render_stack(n, PEER_IMAGE, stop_signal=stop_signal))
        result, peer_result = StackResult(n), StackResult(n)
        project = f"{bench.prefix}n{n}"
        for _ in range(repeats):
            try:
                stack_round(bench, project, file, n, settle, result)
            except CommandFailed as exc:
                result.failures.append(str(exc))
                if not recover(bench, project, file):
                    result.error = f"stopped: could not clean up after a failed round ({exc})"
                    break
            if peer is not None:
                peer.round(peer_file, n, settle, peer_result)
        results.append(result)
        peer_results.append(peer_result)
        print(f"  measured {n} services", file=sys.stderr)
    return results, peer_results


@dataclass
class RestartResult:
    to_running: list[list[float]] = field(default_factory=list)  # [k-th restart] -> seconds from the kill
    to_noticed: list[list[float]] = field(default_factory=list)  # kill -> record no longer "running"
    counts: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    error: str | None = None


def _poll(read: Callable[[], dict[str, object] | None], done: Callable[[dict[str, object]], bool],
          timeout: float) -> tuple[float, dict[str, object]] | None:  # fmt: skip
    """Poll every ms until `done(record)`; (perf_counter when seen, record), None on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = read()
        if record is not None and done(record):
            return time.perf_counter(), record
        time.sleep(0.001)
    return None


def restart_round(bench: Bench, project: str, file: Path, result: RestartResult) -> None:
    bench.up(project, file)
    if not bench.wait_running(project, 1):
        raise CommandFailed(f"{project}: not running after up -d")
    (record,) = bench.records(project)
    path = bench.root / "containers" / str(record["id"]) / "record.json"

    def read() -> dict[str, object] | None:
        return read_json(path)

    for k in range(len(result.to_running)):
        time.sleep(0.2)
        record = read() or {}
        pid = record.get("pid")
        if not (isinstance(pid, int) and record.get("state") == "running" and alive(record)):
            raise CommandFailed(f"{project}: before kill {k + 1}: not running ({record.get('state')})")
        t_kill = time.perf_counter()
        os.kill(pid, signal.SIGKILL)  # the container's main process (pid and start time checked just above)
        noticed = _poll(read, lambda r, pid=pid: r.get("pid") != pid or r.get("state") != "running",
                        RESTART_TIMEOUT)  # fmt: skip
        running = _poll(read, lambda r, pid=pid: r.get("state") == "running" and r.get("pid") != pid
                        and alive(r), RESTART_TIMEOUT)  # fmt: skip
        if running is None:
            raise CommandFailed(f"{project}: restart {k + 1} not seen within {RESTART_TIMEOUT:g} s")
        if noticed is not None:
            result.to_noticed[k].append(noticed[0] - t_kill)
        result.to_running[k].append(running[0] - t_kill)
    count = (read() or {}).get("restart_count")
    result.counts.append(count if isinstance(count, int) else -1)
    pid = bench.supervisor_pid(project)
    bench.down(project, file)
    if not bench.wait_supervisor_gone(project, pid):
        raise CommandFailed(f"{project}: supervisor {pid} still there after down")


def bench_restart(bench: Bench, rounds: int, kills: int = 3) -> RestartResult:
    file = bench.work / "stack-restart.yaml"
    file.write_text(render_stack(1, IMAGE, restart="always", stop_signal="SIGKILL"))
    project = f"{bench.prefix}restart"
    result = RestartResult(to_running=[[] for _ in range(kills)], to_noticed=[[] for _ in range(kills)])
    for _ in range(rounds):
        try:
            restart_round(bench, project, file, result)
        except CommandFailed as exc:
            result.failures.append(str(exc))
            if not recover(bench, project, file):
                result.error = f"stopped: could not clean up after a failed round ({exc})"
                break
    return result


# --- report ------------------------------------------------------------------------------------------------


def _s(values: list[float], how: Callable[[list[float]], float]) -> str:
    return f"{how(values):.3f}" if values else "n/a"


def _ms(values: list[float], how: Callable[[list[float]], float]) -> str:
    return f"{how(values) * 1e3:.1f}" if values else "n/a"


def _failures(label: str, failures: list[str], attempts: int) -> list[str]:
    counted: dict[str, int] = {}
    for text in failures:  # keyed by the last line of composer's output (the error, not the progress)
        key = text.split(" | ")[-1] if " | " in text else text
        counted[key] = counted.get(key, 0) + 1
    return [f"{label}: {count} of {attempts} round(s) failed: {text}" for text, count in counted.items()]


def print_report(
    stacks: list[StackResult],
    restart: RestartResult | None,
    args: argparse.Namespace,
    build_s: float,
    compose_v2: ComposeV2 | None = None,
    peer_stacks: list[StackResult] | None = None,
) -> list[str]:
    errors = []
    peers = PEERS[args.variant]
    v2 = peers["Compose v2 2.26.1"]
    variant = (
        "stop_signal: SIGKILL" if args.variant == "kill" else "no stop_signal: down waits the 10 s timeout"
    )
    print(f"composer up -d / down of N services (gen_stack.py's shape, {variant}); seconds, median and min "
          f"of the rounds that succeeded; supervisor RSS (VmRSS, max) after up -d")  # fmt: skip
    print(f"python {sys.version.split()[0]}; image build (not timed): {build_s:.2f} s; "
          f"load1 at the end: {os.getloadavg()[0]:.2f}")  # fmt: skip
    header = (
        f"{'services':>8} {'ok':>5} | {'up -d med':>9} {'min':>6} {'target':>6} | {'down med':>8} {'min':>6} "
        f"{'target':>6} | {'RSS MiB':>7} {'+children':>9} | {'ref: Compose v2 up':>18} {'down':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in stacks:
        up_target = f"<{TARGET_UP_50:g}" if r.n == 50 else ""
        down_target = f"<{TARGET_DOWN_50:g}" if r.n == 50 else ""
        rss = f"{max(m for m, _ in r.rss):.1f}" if r.rss else "n/a"
        helper = f"{max(h for _, h in r.rss):.1f}" if r.rss else "n/a"
        ref_up, ref_down = v2.get(r.n, ("-", "-"))
        ok = f"{len(r.down)}/{len(r.down) + len(r.failures)}"
        print(
            f"{r.n:>8} {ok:>5} | {_s(r.up, statistics.median):>9} {_s(r.up, min):>6} {up_target:>6} | "
            f"{_s(r.down, statistics.median):>8} {_s(r.down, min):>6} {down_target:>6} | "
            f"{rss:>7} {helper:>9} | {ref_up:>18} {ref_down:>10}"
        )
        errors += _failures(f"{r.n} services", r.failures, len(r.down) + len(r.failures))
        if r.error:
            errors.append(f"{r.n} services: {r.error}")
    if compose_v2 is not None and peer_stacks:
        print()
        print(f"side by side in this run: Docker Compose {compose_v2.version} ({DOCKER} compose, image "
              f"{PEER_IMAGE}), each round right after composer's; seconds, median (min)")  # fmt: skip
        header = f"{'services':>8} | {'composer up -d':>14} {'Compose v2':>12} {'faster':>7} | " \
                 f"{'composer down':>13} {'Compose v2':>12} {'faster':>7}"  # fmt: skip
        print(header)
        print("-" * len(header))
        for ours, theirs in zip(stacks, peer_stacks, strict=True):

            def ratio(a: list[float], b: list[float]) -> str:
                return f"{statistics.median(b) / statistics.median(a):.1f}x" if a and b else "n/a"

            print(
                f"{ours.n:>8} | {_s(ours.up, statistics.median):>14} {_s(theirs.up, statistics.median):>12} "
                f"{ratio(ours.up, theirs.up):>7} | {_s(ours.down, statistics.median):>13} "
                f"{_s(theirs.down, statistics.median):>12} {ratio(ours.down, theirs.down):>7}"
            )
            errors += _failures(f"Compose v2, {theirs.n} services", theirs.failures,
                                len(theirs.down) + len(theirs.failures))  # fmt: skip
    rss_row = {r.n: r for r in stacks}.get(RSS_SERVICES)
    if rss_row is not None and rss_row.rss:
        main = max(m for m, _ in rss_row.rss)
        helper = max(h for _, h in rss_row.rss)
        print(f"supervisor RSS with {RSS_SERVICES} services running: {main:.1f} MiB (target < "
              f"{TARGET_RSS_100:g} MiB); its fork-server and guardian: {helper:.1f} MiB more")  # fmt: skip
    print(f"reference, measured elsewhere, NOT in this run ({args.variant} variant; up -d / down, medians of "
          f"runs A/B, s): {PEER_SOURCE}")  # fmt: skip
    for peer, cells in peers.items():
        text = "; ".join(f"N={n}: up {u}, down {d}" for n, (u, d) in sorted(cells.items()))
        print(f"  {peer}: {text}")
    if restart is not None:
        print()
        print(f"restart after SIGKILL of the main process (restart: always), {len(restart.counts)} round(s) "
              "of 3 kills; ms from the kill")  # fmt: skip
        header = (
            f"{'':<12} | {'to running med':>14} {'min':>7} {'max':>7} {'backoff':>7} {'target':>6} | "
            f"{'exit seen med':>13}"
        )
        print(header)
        print("-" * len(header))
        for k, times in enumerate(restart.to_running):
            target = f"<{TARGET_FIRST_RESTART * 1e3:g}" if k == 0 else ""
            print(
                f"{f'restart {k + 1}':<12} | {_ms(times, statistics.median):>14} {_ms(times, min):>7} "
                f"{_ms(times, max):>7} {100 * 2**k:>7} {target:>6} | "
                f"{_ms(restart.to_noticed[k], statistics.median):>13}"
            )
        if restart.counts:
            print(f"restart_count in the record after the 3 kills, per round: {restart.counts}")
        print(
            f"reference, measured elsewhere, NOT in this run (a command that exits 1 at once; {PEER_SOURCE}):"
        )
        for line in PEER_RESTARTS:
            print(f"  {line}")
        attempts = len(restart.counts) + len(restart.failures)
        errors += _failures("restart", restart.failures, attempts)
        if restart.error:
            errors.append(f"restart: {restart.error}")
    for line in errors:
        print(f"error: {line}")
    return errors


# --- main ---------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="comma-separated N")
    parser.add_argument("--repeats", type=int, default=3, help="up/down runs per N (median and min shown)")
    parser.add_argument("--variant", choices=("kill", "spec"), default="kill",
                        help="kill: stop_signal SIGKILL (orchestration cost alone); spec: sleep ignores "
                        "SIGTERM, so down waits the 10 s stop timeout")  # fmt: skip
    parser.add_argument("--settle", type=float, default=1.0, help="seconds running before down (peers: 1)")
    parser.add_argument("--restart-rounds", type=int, default=3, help="0 skips the restart measurement")
    parser.add_argument(
        "--keep", type=Path, metavar="DIR", help="work under DIR and keep it (files, root, supervisor logs)"
    )
    parser.add_argument("--no-peer", action="store_true",
                        help="no Docker Compose v2 side by side, even where an engine runs")  # fmt: skip
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("needs root")
    if not BUSYBOX.is_file():
        sys.exit(f"{BUSYBOX} is missing (apt-get install busybox-static)")
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if not sizes or min(sizes) < 1 or args.repeats < 1 or args.restart_rounds < 0:
        parser.error("--sizes must be >= 1, --repeats >= 1, --restart-rounds >= 0")
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="composer-bench-", dir=args.keep))
    else:
        work = Path(tempfile.mkdtemp(prefix="composer-bench-"))
    (work / "home").mkdir()
    bench = Bench(work=work, env=clean_env(work), prefix=f"sbench{os.getpid()}")
    problems: list[str] = []
    errors: list[str] = []
    try:
        with sigterm_as_interrupt():
            build_s = build_image(bench)
            peer = None if args.no_peer else ComposeV2.find()
            if peer is None and not args.no_peer:
                print(f"note: no Docker engine with Compose v2 and {PEER_IMAGE} here: composer alone "
                      "(../shared/tools/peers/setup.sh installs them)", file=sys.stderr)  # fmt: skip
            stacks, peer_stacks = bench_stacks(bench, sizes, args.repeats, args.variant, args.settle, peer)
            restart = bench_restart(bench, args.restart_rounds) if args.restart_rounds else None
        errors = print_report(stacks, restart, args, build_s, peer, peer_stacks)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except CommandFailed as exc:  # the image build or the warm-up
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        with no_interrupts():
            problems = bench.cleanup()
            left = mounts_under(work)
            if left:
                problems.append(f"mounts left under {work}, not removed: {left[:3]}")
            elif not args.keep:
                shutil.rmtree(work, ignore_errors=True)
            for line in problems:
                print(f"cleanup: {line}", file=sys.stderr)
    return 1 if errors or problems else 0


if __name__ == "__main__":
    sys.exit(main())
