"""The inception stack (stacks/inception) under composer: builds, up, first HTTPS page, down, a crash.

    sudo .venv/bin/python bench/inception.py [--rounds 3] [--cold] [--kills 1] [--keep DIR]

Needs root and the host's Debian mirror (the images are built from debian:bookworm with apt-get). The
stack runs as the end-to-end test runs it (tests/e2e/test_inception.py, the `site` fixture): srcs/
copied into a temporary folder, its own secrets (tools/generate-secrets.sh into <tmp>/secrets),
DATA_DIR=<tmp>/data (wordpress/ and mariadb/ made empty), and an override file that
publishes nginx's 443 on an ephemeral loopback port (`127.0.0.1::443`), so the bench never collides
with a stack someone runs on 443. Every composer command gets `--root <tmp>/root` and a project name
unique to the run; at the end (also after a failure, Ctrl-C or SIGTERM) `down -v -t 5`, a bounded wait
until no `__supervise` process of that root is left, and the folder is removed. The composer processes
get a bytecode cache in the work folder (PYTHONPYCACHEPREFIX; PYTHONDONTWRITEBYTECODE is dropped), as an
installed composer has one; no COMPOSE_/DOCKER_/COMPOSER_ variables, HOME an empty folder.

Measured (seconds):
1. `composer build` of the 8 images into the fresh root: always done once (the root has nothing),
   timed and shown as "first in this root" (debian:bookworm bootstrap + apt-get in each Dockerfile).
   `--cold` adds `composer build --no-cache` (every image again from the bootstrapped base: the apt
   part alone, ~1 more minute).
2. the no-op rebuild (`composer build` again): median and min of 3.
3. `up -d --wait` from nothing (no container, no supervisor) until it returns with the 8 services
   healthy: round 1 on the empty data folders (MariaDB initialises, WordPress installs) apart from the
   later rounds (data present). Each followed by `down` (data folders kept).
4. `up -d` (no --wait) and, from its return, the first HTTPS 200 from nginx on the published port
   (http.client + ssl, TLS 1.2, Host: DOMAIN_NAME of srcs/.env, certificate not verified; a try every
   50 ms; the port read from nginx's record as soon as it has one, checked against `composer port
   nginx 443` afterwards). Then a wait (bounded) until all 8 are healthy, and `down`.
5. `down` (8 services with their own stop signals and grace periods), both downs of every round; and
   how long after `down` returns the project's supervisor has left.
6. after the rounds, with the stack up again: SIGKILL of MariaDB's main process (the `pid` of its
   `<root>/containers/<id>/record.json`); the record polled every 5 ms until it says running with a new
   pid, then until its health is `healthy` again (after it was reset). --kills in a row.
7. VmRSS of the supervisor (the pid in `<root>/projects/<project>/supervisor.pid`), of its two small
   children (its fork-server and its guardian, summed) with the stack up, and the sum over the 8
   containers' process trees: right after every `up -d --wait` of the rounds, 2 s after the last one,
   and after the MariaDB restart(s).

No Compose numbers for this stack exist in ../shared/research/peers.md; bench/inception_compose.py runs
Docker Compose v2 on it side by side where an engine runs; the report says so.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import ssl
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
    supervisors,
)  # fmt: skip

REPO = Path(__file__).resolve().parents[1]
STACK = REPO / "stacks/inception"
SERVICES = ("nginx", "wordpress", "mariadb", "redis", "ftp", "adminer", "static", "status")
OVERRIDE = 'services:\n  nginx:\n    ports: !override ["127.0.0.1::443"]\n'

BUILD_TIMEOUT = 1800.0  # s: one `composer build` (the first one bootstraps debian:bookworm)
COMMAND_TIMEOUT = 300.0  # s: any other composer command
WAIT_TIMEOUT = 240  # s: `up --wait --wait-timeout`
HTTPS_TIMEOUT = 240.0  # s: from `up -d` returning to the first 200
HTTPS_POLL = 0.05  # s between two tries
HTTPS_TRY_TIMEOUT = 10.0  # s: one request
HEALTHY_TIMEOUT = 240.0  # s: all 8 healthy after `up -d`
RESTART_TIMEOUT = 60.0  # s: MariaDB running again after the kill
RESTART_HEALTHY_TIMEOUT = 180.0  # s: ... and healthy again
SUPERVISOR_EXIT_TIMEOUT = 30.0  # s: a supervisor leaving after `down`
CLEANUP_TIMEOUT = 120.0  # s: the final `down -v -t 5`
POLL = 0.005  # s between two reads of a record
SETTLE = 2.0  # s: the stack up before the RSS sample and the kill

PEERS_FILE = REPO.parent / "shared/research/peers.md"


# --- running composer -------------------------------------------------------------------------------------


def tree_rss_kib(pid: int, limit: int = 2000) -> int:
    """VmRSS summed over `pid` and its descendants (bounded in count; shared pages counted per process)."""
    total, todo, seen = 0, [pid], set()
    while todo and len(seen) < limit:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        total += rss_kib(current) or 0
        todo += children(current)
    return total


@dataclass
class Stack:
    work: Path
    project: str
    srcs: Path = field(init=False)
    root: Path = field(init=False)
    data: Path = field(init=False)
    env: dict[str, str] = field(init=False)
    domain: str = field(init=False)
    may_be_up: bool = False  # an `up` was started: the cleanup brings the project down
    bridge: str = ""  # the network's bridge, seen while the stack was up (checked gone at the end)

    def __post_init__(self) -> None:
        self.srcs = self.work / "srcs"
        self.root = self.work / "root"
        self.data = self.work / "data"
        self.env = clean_env(self.work, DATA_DIR=str(self.data))
        self.domain = ""

    def prepare(self) -> None:
        """srcs/ copied, secrets generated, empty data folders, the override (as the e2e `site` fixture)."""
        shutil.copytree(STACK / "srcs", self.srcs)
        subprocess.run(["sh", str(STACK / "tools/generate-secrets.sh"), str(self.work / "secrets")],
                       check=True, capture_output=True, timeout=60)  # fmt: skip
        for folder in ("wordpress", "mariadb"):
            (self.data / folder).mkdir(parents=True)
        (self.srcs / "compose.override.yaml").write_text(OVERRIDE)
        (self.work / "home").mkdir()
        for line in (self.srcs / ".env").read_text().splitlines():
            if line.startswith("DOMAIN_NAME="):
                self.domain = line.partition("=")[2].strip()
        if not self.domain:
            raise CommandFailed("no DOMAIN_NAME in srcs/.env")

    def composer(self, *args: str, timeout: float = COMMAND_TIMEOUT) -> tuple[float, str]:
        """Run one composer command on the project: (wall time, stdout) (cli_tools.run_composer)."""
        if args and args[0] in ("up", "create", "run"):
            self.may_be_up = True
        files = ["-f", str(self.srcs / "docker-compose.yml"), "-f", str(self.srcs / "compose.override.yaml")]
        common = ["--root", str(self.root), "-p", self.project, *files]
        return run_composer(args, common=common, cwd=self.srcs, env=self.env, timeout=timeout, label="")

    # -- state files --

    def records(self) -> dict[str, dict[str, object]]:
        """service -> record, for this project's containers."""
        out: dict[str, dict[str, object]] = {}
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.root / "containers"):
                record = read_json(Path(entry.path) / "record.json")
                if record is not None and record.get("project") == self.project:
                    out[str(record.get("service"))] = record
        return out

    def record_path(self, service: str) -> Path | None:
        record = self.records().get(service)
        return None if record is None else self.root / "containers" / str(record["id"]) / "record.json"

    def supervisor_pid(self) -> int | None:
        try:
            return int((self.root / "projects" / self.project / "supervisor.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def all_healthy(self) -> bool:
        records = self.records()
        ok = [r.get("state") == "running" and r.get("health") == "healthy" for r in records.values()]
        return set(records) == set(SERVICES) and all(ok) and all(alive(r) for r in records.values())

    def wait_until(self, done: Callable[[], bool], timeout: float, step: float = 0.1) -> float | None:
        """Poll `done` (bounded in time and count); the perf_counter when it held, None on timeout."""
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / step) + 1):
            if done():
                return time.perf_counter()
            if time.monotonic() >= deadline:
                break
            time.sleep(step)
        return None

    def wait_supervisors_gone(self, timeout: float = SUPERVISOR_EXIT_TIMEOUT) -> float | None:
        return self.wait_until(lambda: not supervisors(self.root), timeout, step=0.02)

    def rss(self) -> tuple[float, float, float] | None:
        """(supervisor MiB, its fork-server and guardian MiB, sum over the containers' process trees MiB)."""
        pid = self.supervisor_pid()
        if pid is None or not is_supervisor(pid, self.root):
            return None
        main = rss_kib(pid) or 0
        helper = sum(rss_kib(c) or 0 for c in children(pid) if is_supervisor(c, self.root))
        containers = sum(
            tree_rss_kib(r["pid"]) for r in self.records().values() if alive(r) and isinstance(r["pid"], int)
        )
        return main / 1024, helper / 1024, containers / 1024


# --- HTTPS -------------------------------------------------------------------------------------------------


def tls12_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the stack's certificate is self-signed
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


def https_status(port: int, domain: str, context: ssl.SSLContext) -> int | None:
    """The status of GET / on 127.0.0.1:port as `domain`; None if no answer."""
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=HTTPS_TRY_TIMEOUT)
    try:
        connection.request("GET", "/", headers={"Host": domain})
        response = connection.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


PORT_RE = re.compile(r":(\d+)->443/tcp$")


def nginx_port(stack: Stack) -> int | None:
    record = stack.records().get("nginx")
    if record is None or record.get("state") != "running":
        return None
    ports = record.get("ports")
    for text in ports if isinstance(ports, list) else []:
        match = PORT_RE.search(str(text))
        if match:
            return int(match.group(1))
    return None


def first_200(stack: Stack, context: ssl.SSLContext) -> tuple[float, float, int, dict[str, int]]:
    """Poll every 50 ms (bounded) until nginx answers 200: (perf_counter then, how long that request took,
    port, the other answers seen)."""
    deadline = time.monotonic() + HTTPS_TIMEOUT
    seen: dict[str, int] = {}
    port: int | None = None
    for _ in range(int(HTTPS_TIMEOUT / HTTPS_POLL) + 1):
        if time.monotonic() >= deadline:
            break
        if port is None:
            port = nginx_port(stack)
            if port is None:
                seen["no port yet"] = seen.get("no port yet", 0) + 1
        if port is not None:
            tried = time.perf_counter()
            status = https_status(port, stack.domain, context)
            if status == 200:
                now = time.perf_counter()
                return now, now - tried, port, seen
            key = "no answer" if status is None else f"HTTP {status}"
            seen[key] = seen.get(key, 0) + 1
        time.sleep(HTTPS_POLL)
    raise CommandFailed(f"no HTTPS 200 within {HTTPS_TIMEOUT:g} s after up -d (seen: {seen})")


# --- the measurements ----------------------------------------------------------------------------------


@dataclass
class Results:
    first_build: float | None = None
    cold_build: float | None = None
    noop: list[float] = field(default_factory=list)
    up_first: list[float] = field(default_factory=list)  # up -d --wait on empty data (round 1)
    up_data: list[float] = field(default_factory=list)  # up -d --wait, data present
    up_plain: list[float] = field(default_factory=list)  # up -d (no --wait) until it returns
    to_200: list[float] = field(default_factory=list)  # up -d returned -> first 200
    start_to_200: list[float] = field(default_factory=list)  # up -d started -> first 200
    request_200: list[float] = field(default_factory=list)  # the request that got the first 200, alone
    down: list[float] = field(default_factory=list)
    supervisor_gone: list[float] = field(default_factory=list)  # down returned -> no supervisor
    kill_running: list[float] = field(default_factory=list)
    kill_healthy: list[float] = field(default_factory=list)
    rss: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)  # when -> samples
    started: dict[str, dict[str, float]] = field(default_factory=dict)  # label -> service -> s after up
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def sample_rss(self, stack: Stack, when: str) -> None:
        sample = stack.rss()
        if sample is not None:
            self.rss.setdefault(when, []).append(sample)


def started_offsets(stack: Stack, since: float) -> dict[str, float]:
    """service -> seconds from `since` (unix time) to its record's started_at."""
    out = {}
    for service, record in stack.records().items():
        started = record.get("started_at")
        if isinstance(started, int | float):
            out[service] = started - since
    return out


def down_and_wait(stack: Stack, results: Results) -> None:
    took, _ = stack.composer("down")
    results.down.append(took)
    returned = time.perf_counter()
    gone = stack.wait_supervisors_gone()
    if gone is None:
        raise CommandFailed(f"a supervisor of the root still runs {SUPERVISOR_EXIT_TIMEOUT:g} s after down")
    results.supervisor_gone.append(gone - returned)
    left = stack.records()
    if left:
        raise CommandFailed(f"{len(left)} container record(s) left after down: {sorted(left)}")


def check_ps(stack: Stack) -> None:
    _, out = stack.composer("ps", "--format", "json")
    rows = {r["Service"]: r for r in json.loads(out)}
    bad = {s: (r.get("State"), r.get("Health")) for s, r in rows.items()
           if r.get("State") != "running" or r.get("Health") != "healthy"}  # fmt: skip
    if set(rows) != set(SERVICES) or bad:
        raise CommandFailed(f"after up --wait, ps says: services {sorted(rows)}, not healthy: {bad}")


def up_round(stack: Stack, results: Results, k: int, context: ssl.SSLContext) -> None:
    if supervisors(stack.root):
        raise CommandFailed("a supervisor of the root is there before the round")
    # 3. up -d --wait from nothing
    since = time.time()
    took, _ = stack.composer("up", "-d", "--wait", "--wait-timeout", str(WAIT_TIMEOUT),
                             timeout=WAIT_TIMEOUT + 60)  # fmt: skip
    (results.up_first if k == 0 else results.up_data).append(took)
    label = "up --wait, empty data" if k == 0 else "up --wait, data present"
    results.started.setdefault(label, started_offsets(stack, since))
    check_ps(stack)
    results.sample_rss(stack, "right after up --wait")
    down_and_wait(stack, results)
    # 4. up -d, then the first HTTPS 200
    start = time.perf_counter()
    took, _ = stack.composer("up", "-d")
    returned = time.perf_counter()
    results.up_plain.append(took)
    seen_at, took_200, port, seen = first_200(stack, context)
    results.to_200.append(seen_at - returned)
    results.start_to_200.append(seen_at - start)
    results.request_200.append(took_200)
    if k == 0:
        before = ", ".join(f"{what} x{n}" for what, n in seen.items()) or "none, the first try got it"
        results.notes.append(
            f"HTTPS tries before the first 200 (round 1, every {HTTPS_POLL * 1e3:g} ms): {before}"
        )
    _, out = stack.composer("port", "nginx", "443")
    published = out.strip().rpartition(":")[2]
    if published != str(port):
        results.errors.append(f"round {k + 1}: `composer port nginx 443`: {out.strip()!r}, record: {port}")
    if stack.wait_until(stack.all_healthy, HEALTHY_TIMEOUT) is None:
        raise CommandFailed(f"not all 8 healthy {HEALTHY_TIMEOUT:g} s after up -d: {health_summary(stack)}")
    # 5. down
    down_and_wait(stack, results)


def health_summary(stack: Stack) -> dict[str, tuple[object, object]]:
    return {s: (r.get("state"), r.get("health")) for s, r in stack.records().items()}


def kill_mariadb(stack: Stack, results: Results) -> None:
    path = stack.record_path("mariadb")
    if path is None:
        raise CommandFailed("no record for mariadb")

    def read() -> dict[str, object]:
        return read_json(path) or {}

    record = read()
    pid = record.get("pid")
    if not (isinstance(pid, int) and record.get("state") == "running" and alive(record)):
        raise CommandFailed(f"mariadb is not running before the kill: {record.get('state')}")
    if record.get("health") != "healthy":
        raise CommandFailed(f"mariadb is not healthy before the kill: {record.get('health')}")
    count = record.get("restart_count")
    reset = False

    def running_again() -> bool:
        nonlocal reset
        now = read()
        if now.get("health") != "healthy":
            reset = True  # the health of the new run: `starting` until its first probe passes
        return now.get("state") == "running" and now.get("pid") != pid and alive(now)

    def healthy_again() -> bool:
        ok = running_again()
        return ok and reset and read().get("health") == "healthy"

    t_kill = time.perf_counter()
    os.kill(pid, signal.SIGKILL)  # mariadb's main process: the pid and its start time checked just above
    running = stack.wait_until(running_again, RESTART_TIMEOUT, step=POLL)
    if running is None:
        raise CommandFailed(f"mariadb not running again {RESTART_TIMEOUT:g} s after SIGKILL: {read()}")
    results.kill_running.append(running - t_kill)
    healthy = stack.wait_until(healthy_again, RESTART_HEALTHY_TIMEOUT, step=POLL)
    if healthy is None:
        raise CommandFailed(f"mariadb not healthy again {RESTART_HEALTHY_TIMEOUT:g} s after SIGKILL: "
                            f"{read().get('health')}")  # fmt: skip
    results.kill_healthy.append(healthy - t_kill)
    after = read().get("restart_count")
    if isinstance(count, int) and after != count + 1:
        results.errors.append(f"mariadb restart_count {count} -> {after} after one kill")


def run_bench(stack: Stack, args: argparse.Namespace, results: Results) -> None:
    stack.prepare()
    print("building the 8 images into a fresh root (debian:bookworm bootstrap, apt-get) ...", file=sys.stderr)
    results.first_build, _ = stack.composer("build", timeout=BUILD_TIMEOUT)
    if args.cold:
        print("composer build --no-cache ...", file=sys.stderr)
        results.cold_build, _ = stack.composer("build", "--no-cache", timeout=BUILD_TIMEOUT)
    for _ in range(3):
        results.noop.append(stack.composer("build")[0])
    context = tls12_context()
    for k in range(args.rounds):
        print(f"round {k + 1} of {args.rounds} ...", file=sys.stderr)
        try:
            up_round(stack, results, k, context)
        except CommandFailed as exc:
            results.errors.append(f"round {k + 1}: {exc}")
            if not recover(stack):
                results.errors.append("stopped: could not clean up after a failed round")
                return
    # 6. and 7. with the stack up again
    print("MariaDB crash ...", file=sys.stderr)
    try:
        stack.composer("up", "-d", "--wait", "--wait-timeout", str(WAIT_TIMEOUT), timeout=WAIT_TIMEOUT + 60)
        stack.bridge = project_bridge(stack)
        if not stack.bridge:
            results.notes.append("the project's bridge was not found by name: its removal is not checked")
        time.sleep(SETTLE)
        results.sample_rss(stack, f"{SETTLE:g} s after up --wait")
        for _ in range(args.kills):
            kill_mariadb(stack, results)
        if args.kills:
            results.sample_rss(stack, "after the MariaDB restart(s)")
        status = https_status(nginx_port(stack) or 0, stack.domain, context)
        if status != 200:
            results.errors.append(f"after the MariaDB restart(s) nginx answers {status}")
    except CommandFailed as exc:
        results.errors.append(f"crash: {exc}")


def recover(stack: Stack) -> bool:
    """After a failed round: `down -t 5` and wait for the supervisor; True if nothing is left."""
    try:
        stack.composer("down", "-t", "5")
    except CommandFailed:
        return False
    return not stack.records() and stack.wait_supervisors_gone() is not None


def cleanup(stack: Stack) -> list[str]:
    problems = []
    if stack.may_be_up and stack.root.is_dir():
        try:
            stack.composer("down", "-v", "-t", "5", timeout=CLEANUP_TIMEOUT)
        except CommandFailed as exc:
            problems.append(f"down -v -t 5: {exc}")
    if stack.root.is_dir() and stack.wait_supervisors_gone() is None:
        problems.append(f"supervisor(s) of {stack.root} still there: {supervisors(stack.root)}")
    if stack.bridge and stack.wait_until(lambda: not bridge_exists(stack.bridge), 10.0) is None:
        problems.append(f"the project's bridge {stack.bridge} is still there")
    return problems


def bridge_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def project_bridge(stack: Stack) -> str:
    """The kernel name of the project's network bridge (composer's naming), if it exists now."""
    try:
        from composer.network.bridge import bridge_name
    except ImportError:
        return ""
    name = bridge_name(f"{stack.project}_inception")
    return name if bridge_exists(name) else ""


# --- report ------------------------------------------------------------------------------------------------


def _cells(values: list[float]) -> str:
    if not values:
        return f"{0:>3} {'n/a':>8} {'':>8} {'':>8}"
    if len(values) == 1:
        return f"{1:>3} {values[0]:>8.2f} {'':>8} {'':>8}"
    return f"{len(values):>3} {statistics.median(values):>8.2f} {min(values):>8.2f} {max(values):>8.2f}"


def peers_reference() -> str:
    try:
        text = PEERS_FILE.read_text()
    except OSError:
        return f"none available ({PEERS_FILE} is not there)"
    if "inception" not in text.lower():
        return (f"none in {PEERS_FILE.relative_to(REPO.parent)}; bench/inception_compose.py measures Docker "
                "Compose v2 on this stack side by side where an engine runs")  # fmt: skip
    return f"see {PEERS_FILE} (inception is mentioned there; not copied into this table)"


def print_report(results: Results, args: argparse.Namespace, stack: Stack) -> None:
    r = results
    rows: list[tuple[str, list[float]]] = []
    if r.first_build is not None:
        label = "cold build into a fresh root" if args.cold else "build (first in this root)"
        rows.append((f"{label}: debian:bookworm bootstrap + 8 images", [r.first_build]))
    if r.cold_build is not None:
        rows.append(("build --no-cache of the 8 images (base kept)", [r.cold_build]))
    rows += [
        ("no-op rebuild (composer build again)", r.noop),
        ("up -d --wait, 8 healthy: first (empty data)", r.up_first),
        ("up -d --wait, 8 healthy: data present", r.up_data),
        ("up -d (no --wait) until it returns", r.up_plain),
        ("up -d returned -> first HTTPS 200 (TLS 1.2)", r.to_200),
        ("up -d started -> first HTTPS 200", r.start_to_200),
        ("  the request that got it, alone", r.request_200),
        ("down (8 services, their stop signals)", r.down),
        ("down returned -> supervisor gone", r.supervisor_gone),
        ("mariadb SIGKILL -> running, new pid", r.kill_running),
        ("mariadb SIGKILL -> healthy again", r.kill_healthy),
    ]
    print(f"inception stack (stacks/inception, 8 services) under composer; seconds (n, median, min, max); "
          f"{args.rounds} round(s)")  # fmt: skip
    print(f"python {sys.version.split()[0]}; {os.cpu_count()} CPU(s); load1 at the end: "
          f"{os.getloadavg()[0]:.2f}; nginx 443 on 127.0.0.1:<ephemeral>, Host: {stack.domain}")  # fmt: skip
    width = max(len(label) for label, _ in rows)
    header = f"{'measurement':<{width}} {'n':>3} {'median':>8} {'min':>8} {'max':>8}"
    print(header)
    print("-" * len(header))
    for label, values in rows:
        print(f"{label:<{width}} {_cells(values)}")
    for when, samples in r.rss.items():
        print(f"{f'supervisor RSS MiB, {when}':<{width}} {_cells([x[0] for x in samples])}")
    for when, samples in r.rss.items():
        helper = statistics.median(x[1] for x in samples)
        containers = statistics.median(x[2] for x in samples)
        print(f"RSS MiB {when}: its fork-server and guardian {helper:.1f}; the 8 containers' processes "
              f"{containers:.1f} (VmRSS summed, shared pages counted per process)")  # fmt: skip
    for label, offsets in r.started.items():
        text = ", ".join(f"{s} {t:.1f}" for s, t in sorted(offsets.items(), key=lambda item: item[1]))
        print(f"started, s after `{label}` began: {text}")
    for note in r.notes:
        print(note)
    print(
        f"reference: Docker Compose on this stack, measured elsewhere (not in this run): {peers_reference()}"
    )
    for line in r.errors:
        print(f"error: {line}")


# --- main --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="up/down rounds (round 1 on empty data)")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="also time `composer build --no-cache` of the 8 images (about a minute more)",
    )
    parser.add_argument("--kills", type=int, default=1, help="SIGKILLs of MariaDB in a row (0: none)")
    parser.add_argument(
        "--keep", type=Path, metavar="DIR", help="work under DIR and keep it (files, root, supervisor logs)"
    )  # fmt: skip
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("needs root")
    if args.rounds < 1 or not 0 <= args.kills <= 5:
        parser.error("--rounds must be >= 1, --kills 0..5")
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="composer-bench-inception-", dir=args.keep)).resolve()
    else:
        work = Path(tempfile.mkdtemp(prefix="composer-bench-inception-")).resolve()
    stack = Stack(work=work, project=f"incbench{os.getpid()}")
    results = Results()
    problems: list[str] = []
    try:
        with sigterm_as_interrupt():
            run_bench(stack, args, results)
        print_report(results, args, stack)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (CommandFailed, subprocess.SubprocessError, OSError) as exc:  # preparing or building
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        with no_interrupts():
            problems = cleanup(stack)
            left = mounts_under(work)
            if left:
                problems.append(f"mounts left under {work}, not removed: {left[:3]}")
            elif supervisors(stack.root):
                problems.append(f"a supervisor is still running; {work} not removed")
            elif not args.keep:
                shutil.rmtree(work, ignore_errors=True)
            for line in problems:
                print(f"cleanup: {line}", file=sys.stderr)
    return 1 if results.errors or problems else 0


if __name__ == "__main__":
    sys.exit(main())
