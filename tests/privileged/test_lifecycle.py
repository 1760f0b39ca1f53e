"""The lifecycle commands end to end, as a user runs them: `up`, `down`, `ps`, `logs`, `exec`, `start`,
`stop`, `restart`, `kill`, `pause`, `unpause`, `rm`, `ls`, through the CLI in subprocesses (the project's
supervisor is a detached process anyway), on a tiny busybox image built once per session.

The expected behaviour is Docker Compose's (research/compose-semantics.md §2.9-2.16). Every test has its own
project name in one shared composer root (the image is built there once), and its `compose` fixture takes
everything down (`down -v -t 0`) and waits for the project's supervisor to leave, even when the test fails,
so the folder's leak check (mounts, netns, links, cgroups, nft tables, processes) holds after each test.
Every wait is bounded; nothing asserts on durations (benchmarks live in bench/).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.conftest import supervisor_pids
from tests.privileged.conftest import BUSYBOX

IMAGE = "lifecycle-busybox:latest"
COMMAND_TIMEOUT = 60.0  # seconds any one CLI command may take before the test gives up on it
WAIT = 20.0  # seconds any one condition may take to come true

# PID 1 scripts: one that ends on SIGTERM with 0, one that ignores it (the stop grace then SIGKILL)
GRACEFUL = "trap 'echo got-term; exit 0' TERM; echo ready; while :; do sleep 0.1; done"
STUBBORN = "trap '' TERM; echo ready; while :; do sleep 0.1; done"

T = TypeVar("T")
_names = itertools.count(1)


# --- the image ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lifecycle_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A composer root shared by the module's tests, holding the busybox image (built with composer)."""
    if not Path(BUSYBOX).is_file():
        pytest.skip("busybox-static is not installed (make test installs it)")
    if os.geteuid() != 0:
        pytest.skip("needs root")
    base = tmp_path_factory.mktemp("lifecycle")
    context = base / "image"
    context.mkdir()
    shutil.copy2(BUSYBOX, context / "busybox")
    (context / "Dockerfile").write_text(
        "FROM scratch\n"
        "COPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        "RUN mkdir -p /etc /tmp /root /home/app /data && chmod 1777 /tmp"
        " && printf 'root:x:0:0:root:/root:/bin/sh\\napp:x:1000:1000:app:/home/app:/bin/sh\\n' > /etc/passwd"
        " && printf 'root:x:0:\\napp:x:1000:\\n' > /etc/group && chown 1000:1000 /home/app"
        " && echo seeded > /data/seed.txt\n"
    )
    (base / "compose.yaml").write_text(f"services:\n  image:\n    build: ./image\n    image: {IMAGE}\n")
    store = base / "root"
    done = subprocess.run(
        [sys.executable, "-m", "composer", "--root", str(store), "-p", "lifecycle-image", "build", "-q"],
        cwd=base, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return store


# --- a project and its CLI ----------------------------------------------------------------------------------


@dataclass
class Result:
    argv: list[str]
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        head = f"$ composer {' '.join(self.argv)}\nexit {self.code}"
        return f"{head}\n--- stdout\n{self.out}--- stderr\n{self.err}"


def wait_until(predicate: Callable[[], T], what: str, timeout: float = WAIT) -> T:
    """Poll `predicate` until it returns something true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """`pid` runs (a zombie has ended; if it is ours, reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state in ("Z", "X"):
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def host_routes() -> str:
    return subprocess.run(["ip", "-br", "addr"], capture_output=True, text=True, check=False).stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Compose:
    """One project: its folder, its compose file, and the CLI run against the shared root."""

    root: Path
    name: str
    dir: Path
    commands: list[Result] = field(default_factory=list)

    @property
    def file(self) -> Path:
        return self.dir / "compose.yaml"

    def write(self, text: str, file: str = "compose.yaml") -> None:
        (self.dir / file).write_text(textwrap.dedent(text).replace("IMAGE", IMAGE))

    def argv(self, *args: str, file: str = "compose.yaml") -> list[str]:
        return ["--root", str(self.root), "-p", self.name, "-f", str(self.dir / file), *args]

    def run(
        self,
        *args: str,
        file: str = "compose.yaml",
        input: str | None = None,
        timeout: float = COMMAND_TIMEOUT,
    ) -> Result:
        argv = self.argv(*args, file=file)
        try:
            done = subprocess.run(
                [sys.executable, "-m", "composer", *argv], cwd=self.dir, capture_output=True, text=True,
                input=input, stdin=None if input is not None else subprocess.DEVNULL, timeout=timeout,
                check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            late = f"composer {' '.join(args)}: not done in {timeout:g}s:\n{exc.stdout!r}\n{exc.stderr!r}"
        else:
            late = None
        if late is not None:
            pytest.fail(late, pytrace=False)
        result = Result(list(args), done.returncode, done.stdout, done.stderr)
        self.commands.append(result)
        return result

    def ok(self, *args: str, **kwargs: Any) -> Result:
        result = self.run(*args, **kwargs)
        assert result.code == 0, str(result)
        assert "Traceback" not in result.err, str(result)
        return result

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "composer", *self.argv(*args)], cwd=self.dir, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as a terminal leaves it
        )  # fmt: skip

    # -- state on disk ---------------------------------------------------------------------------------------

    def records(self) -> list[dict[str, Any]]:
        out = []
        for path in (self.root / "containers").glob("*/record.json"):
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(path.read_text())
                if data.get("project") == self.name:
                    out.append(data)
        return sorted(out, key=lambda r: r["name"])

    def record(self, service: str, number: int = 1) -> dict[str, Any] | None:
        for data in self.records():
            if data["service"] == service and data["number"] == number and not data.get("one_off"):
                return data
        return None

    def must(self, service: str, number: int = 1) -> dict[str, Any]:
        found = self.record(service, number)
        assert found is not None, f"no record of {service}-{number}: {[r['name'] for r in self.records()]}"
        return found

    def wait_record(
        self, service: str, check: Callable[[dict[str, Any]], bool], what: str, number: int = 1
    ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            found = self.record(service, number)
            return found if found is not None and check(found) else None

        try:
            return wait_until(probe, f"{service}-{number}: {what}")
        except pytest.fail.Exception:
            found = self.record(service, number)
            raise AssertionError(f"{service}-{number}: not {what}; record: {found}") from None

    def running_pid(self, service: str, number: int = 1) -> int:
        record = self.wait_record(service, lambda r: r["state"] == "running" and r["pid"], "running", number)
        assert alive(record["pid"])
        return int(record["pid"])

    def supervisor_pid(self) -> int | None:
        try:
            return int((self.root / "projects" / self.name / "supervisor.pid").read_text())
        except (OSError, ValueError):
            return None

    def ps_json(self, *args: str) -> list[dict[str, Any]]:
        out = self.ok("ps", "--format", "json", *args).out.strip()
        if not out:
            return []
        if out.startswith("["):  # the older v2 form: one array
            rows: list[dict[str, Any]] = json.loads(out)
            return rows
        return [json.loads(line) for line in out.splitlines() if line.strip()]  # one object per line

    def exec(self, service: str, *command: str, input: str | None = None) -> str:
        return self.ok("exec", "-T", service, *command, input=input).out

    def kill_supervisor(self) -> int:
        pid = self.supervisor_pid()
        assert pid is not None and alive(pid), "no supervisor runs"
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not alive(pid), f"the supervisor {pid} to die")
        return pid

    def volume_dir(self, key: str) -> Path:
        return self.root / "volumes" / f"{self.name}_{key}"

    # -- cleanup ---------------------------------------------------------------------------------------------

    def cleanup(self) -> list[str]:
        """Everything down (`down -v -t 0`), the supervisor gone; what went wrong, if anything."""
        problems = []
        supervisor = self.supervisor_pid()
        if self.records() or (supervisor is not None and alive(supervisor)):
            result = self.run("down", "-v", "-t", "0", "--remove-orphans", timeout=90)
            if result.code != 0 and self.file.exists():  # a broken file: down with an empty project
                self.write("services: {}\n", file="cleanup.yaml")
                down = ("down", "-v", "-t", "0", "--remove-orphans")
                result = self.run(*down, file="cleanup.yaml", timeout=90)
            if result.code != 0:
                problems.append(f"cleanup: {result}")
        supervisor = self.supervisor_pid() or supervisor
        if supervisor is not None:
            deadline = time.monotonic() + 15
            while alive(supervisor) and time.monotonic() < deadline:
                time.sleep(0.05)
            if alive(supervisor):
                problems.append(f"cleanup: the supervisor {supervisor} still runs 15 s after down")
                os.kill(supervisor, signal.SIGKILL)  # started by this test's commands
                wait_until(lambda: not alive(supervisor), "the supervisor to die")
            elif (self.root / "trash").is_dir() and os.listdir(self.root / "trash"):
                left = sorted(os.listdir(self.root / "trash"))
                problems.append(f"cleanup: the trash holds {left} after the supervisor left")
        for record in self.records():
            problems.append(f"cleanup: container {record['name']} is still recorded ({record['state']})")
            pid = record.get("pid")
            if pid and alive(pid):
                os.kill(pid, signal.SIGKILL)  # a container of this test
        return problems


@pytest.fixture
def compose(lifecycle_root: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Compose]:
    stem = re.sub(r"[^a-z0-9]+", "", request.node.name.removeprefix("test_").lower())[:20]
    project = Compose(root=lifecycle_root, name=f"lc{next(_names)}{stem}", dir=tmp_path / "project")
    project.dir.mkdir()
    try:
        yield project
    finally:
        problems = project.cleanup()
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)


# --- up -d, depends_on, ps, ls ------------------------------------------------------------------------------

ORDERED = """
services:
  db:
    image: IMAGE
    command: ["sh", "-c", "echo db >> /shared/order; exec sleep 1000"]
    volumes: [shared:/shared]
    healthcheck:
      test: ["CMD", "test", "-f", "/shared/order"]
      interval: 200ms
      timeout: 2s
      retries: 20
  migrate:
    image: IMAGE
    command: ["sh", "-c", "echo migrate >> /shared/order"]
    volumes: [shared:/shared]
    depends_on:
      db: {condition: service_healthy}
  cache:
    image: IMAGE
    command: ["sh", "-c", "echo cache >> /shared/order; exec sleep 1000"]
    volumes: [shared:/shared]
  web:
    image: IMAGE
    command: ["sh", "-c", "echo web >> /shared/order; exec sleep 1000"]
    volumes: [shared:/shared]
    depends_on:
      db: {condition: service_healthy}
      migrate: {condition: service_completed_successfully}
      cache: {condition: service_started}
volumes:
  shared: {}
"""

PS_FIELDS = {
    "ID", "Name", "Names", "Image", "Command", "Project", "Service", "CreatedAt", "RunningFor", "State",
    "Status", "Health", "ExitCode", "Publishers", "Labels", "Mounts", "Networks", "LocalVolumes", "Ports",
}  # fmt: skip


def test_up_detached_follows_depends_on_and_ps_shows_it(compose: Compose) -> None:
    compose.write(ORDERED)
    up = compose.ok("up", "-d")
    assert f"Container {compose.name}-web-1  Started" in up.err, str(up)

    order = compose.exec("web", "cat", "/shared/order").split()
    assert sorted(order) == ["cache", "db", "migrate", "web"], order
    assert order.index("db") < order.index("migrate") < order.index("web"), order
    assert order.index("cache") < order.index("web"), order
    started = {r["service"]: r["started_at"] for r in compose.records()}
    assert started["db"] < started["migrate"] < started["web"], started
    assert started["cache"] < started["web"], started

    running = compose.ps_json()
    assert [r["Service"] for r in running] == ["cache", "db", "web"], running
    everything = {r["Service"]: r for r in compose.ps_json("-a")}
    assert sorted(everything) == ["cache", "db", "migrate", "web"]
    for service, row in everything.items():
        assert set(row) >= PS_FIELDS, sorted(PS_FIELDS - set(row))
        assert row["Name"] == f"{compose.name}-{service}-1"
        assert row["Project"] == compose.name
        assert row["Image"] == IMAGE
        assert row["ID"] == compose.must(service)["id"]
        assert f"com.docker.compose.service={service}" in row["Labels"]
        assert f"{compose.name}_default" in row["Networks"]
        assert row["Publishers"] == []
    db, migrate, web = everything["db"], everything["migrate"], everything["web"]
    assert (db["State"], db["Health"], db["ExitCode"]) == ("running", "healthy", 0)
    assert db["Status"].startswith("Up ") and db["Status"].endswith("(healthy)"), db["Status"]
    assert (web["State"], web["Health"]) == ("running", "")
    assert (migrate["State"], migrate["ExitCode"]) == ("exited", 0)
    assert migrate["Status"].startswith("Exited (0) "), migrate["Status"]

    table = compose.ok("ps").out.splitlines()
    assert table[0].split()[:3] == ["NAME", "IMAGE", "COMMAND"], table
    names = sorted(line.split()[0] for line in table[1:])
    assert names == [f"{compose.name}-{s}-1" for s in ("cache", "db", "web")], table
    assert len(compose.ok("ps", "-a").out.splitlines()) == 5

    ids = compose.ok("ps", "-q").out.split()
    assert len(ids) == 3
    running_ids = [r["id"] for r in compose.records() if r["service"] != "migrate"]
    assert all(any(full.startswith(i) for full in running_ids) for i in ids), (ids, running_ids)
    assert compose.ok("ps", "-a", "-q", "--status", "exited").out.split() == [compose.must("migrate")["id"]]
    assert compose.ok("ps", "--services").out.split() == ["cache", "db", "web"]
    assert compose.ok("ps", "-q", "web").out.split() == [compose.must("web")["id"]]

    assert compose.name in compose.ok("ls", "-q").out.split()
    listed = {row["Name"]: row for row in json.loads(compose.ok("ls", "--format", "json").out)}
    assert "running(3)" in listed[compose.name]["Status"], listed[compose.name]

    # a second `up -d` recreates nothing: the same processes keep running, and the one-shot `migrate`
    # runs again (Compose starts every stopped container of the project: docker/compose#11590)
    pids = {s: compose.running_pid(s) for s in ("db", "cache", "web")}
    migrate_id = compose.must("migrate")["id"]
    compose.ok("up", "-d")
    assert {s: compose.running_pid(s) for s in ("db", "cache", "web")} == pids
    order = lambda: compose.exec("db", "cat", "/shared/order").split()  # noqa: E731
    wait_until(lambda: order().count("migrate") == 2, "migrate to run again")
    again = compose.wait_record("migrate", lambda r: r["state"] == "exited", "exited again")
    assert (again["id"], again["exit_code"]) == (migrate_id, 0), again


def test_a_dependency_that_never_gets_healthy_fails_up(compose: Compose) -> None:
    compose.write("""
        services:
          db:
            image: IMAGE
            command: ["sleep", "1000"]
            healthcheck:
              test: ["CMD", "false"]
              interval: 200ms
              timeout: 2s
              retries: 2
          web:
            image: IMAGE
            command: ["sleep", "1000"]
            depends_on:
              db: {condition: service_healthy}
    """)
    up = compose.run("up", "-d")
    assert up.code != 0, str(up)
    assert f"{compose.name}-db-1" in up.err and "unhealthy" in up.err, str(up)
    assert "dependency failed to start" in up.err, str(up)
    assert "Traceback" not in up.err
    web = compose.record("web")
    assert web is None or web["state"] == "created", web
    assert compose.must("db")["health"] == "unhealthy"

    # down after a failed up, twice: everything goes, the second one has nothing to do
    first = compose.ok("down", "-t", "0")
    assert compose.records() == [], str(first)
    compose.ok("down", "-t", "0")
    assert compose.ok("ps", "-a", "-q").out == ""


def test_a_dependency_that_fails_to_complete_fails_up(compose: Compose) -> None:
    compose.write("""
        services:
          job:
            image: IMAGE
            command: ["sh", "-c", "echo job ran; exit 3"]
          web:
            image: IMAGE
            command: ["sleep", "1000"]
            depends_on:
              job: {condition: service_completed_successfully}
    """)
    up = compose.run("up", "-d")
    assert up.code != 0, str(up)
    assert "job" in up.err and "didn't complete successfully: exit 3" in up.err, str(up)
    web = compose.record("web")
    assert web is None or web["state"] == "created", web
    assert (compose.must("job")["state"], compose.must("job")["exit_code"]) == ("exited", 3)
    assert compose.ok("logs", "job").out == "job-1  | job ran\n"


def test_containers_that_exit_at_once(compose: Compose) -> None:
    """A main process may end before composer has set up what runs beside it (DNS, log pumps), and before
    an attached `up` watches it: its end is still reported, as Compose attaches before it starts."""
    compose.write("""
        services:
          done:
            image: IMAGE
            command: ["true"]
          fails:
            image: IMAGE
            command: ["sh", "-c", "echo bye; exit 2"]
    """)
    up = compose.ok("up", "-d")
    assert "Error" not in up.err, str(up)
    done = compose.wait_record("done", lambda r: r["state"] == "exited", "exited")
    fails = compose.wait_record("fails", lambda r: r["state"] == "exited", "exited")
    assert (done["exit_code"], fails["exit_code"]) == (0, 2)
    rows = {r["Service"]: r for r in compose.ps_json("-a")}
    assert (rows["done"]["ExitCode"], rows["fails"]["ExitCode"]) == (0, 2), rows
    assert compose.ok("logs", "fails").out == "fails-1  | bye\n"

    attached = compose.ok("up", timeout=30)  # starts them again and follows them to their ends
    assert "done-1 exited with code 0\n" in attached.out, str(attached)
    assert "fails-1 exited with code 2\n" in attached.out, str(attached)


def test_up_wait_returns_once_healthy_and_fails_on_a_timeout(compose: Compose) -> None:
    compose.write("""
        services:
          db:
            image: IMAGE
            command: ["sh", "-c", "sleep 0.5; touch /tmp/ready; exec sleep 1000"]
            healthcheck:
              test: ["CMD", "test", "-f", "/tmp/ready"]
              interval: 200ms
              retries: 50
          never:
            image: IMAGE
            command: ["sleep", "1000"]
            healthcheck:
              test: ["CMD", "false"]
              interval: 200ms
              retries: 1000
    """)
    compose.ok("up", "--wait", "db")  # --wait implies -d
    assert compose.must("db")["health"] == "healthy"
    assert compose.record("never") is None  # not asked for

    late = compose.run("up", "--wait", "--wait-timeout", "1", "never")
    assert late.code != 0, str(late)
    assert "not healthy" in late.err, str(late)
    assert compose.must("never")["state"] == "running"  # --wait does not stop what it waited for


# --- logs ---------------------------------------------------------------------------------------------------


def test_logs_both_streams_tail_prefix_and_timestamps(compose: Compose) -> None:
    compose.write("""
        services:
          web:
            image: IMAGE
            command: ["sh", "-c", "echo out-1; echo err-1 >&2; sleep 0.3; echo out-2; exec sleep 1000"]
    """)
    compose.ok("up", "-d")
    wait_until(lambda: "out-2" in compose.ok("logs").out, "the second stdout line in the logs")
    lines = compose.ok("logs").out.splitlines()
    assert sorted(lines) == ["web-1  | err-1", "web-1  | out-1", "web-1  | out-2"], lines
    assert lines[-1] == "web-1  | out-2"
    assert compose.ok("logs", "web").out.splitlines() == lines
    assert compose.ok("logs", "-n", "1").out.splitlines() == ["web-1  | out-2"]
    assert compose.ok("logs", "--tail", "2").out.splitlines() == lines[-2:]
    assert sorted(compose.ok("logs", "--no-log-prefix").out.splitlines()) == ["err-1", "out-1", "out-2"]
    stamped = compose.ok("logs", "-t", "-n", "1").out.splitlines()
    assert len(stamped) == 1, stamped
    assert re.fullmatch(
        r"web-1  \| \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d) out-2", stamped[0]
    ), stamped

    # -f follows until the container stops; the output of the stop is in it
    follower = compose.popen("logs", "-f", "--no-log-prefix")
    try:
        compose.ok("stop", "-t", "1")
        out, _ = follower.communicate(timeout=COMMAND_TIMEOUT)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 0
    assert "out-2" in out.decode().split("\n"), out


# --- exec ---------------------------------------------------------------------------------------------------


def test_exec_runs_in_the_container(compose: Compose) -> None:
    compose.write("""
        services:
          web:
            image: IMAGE
            command: ["sleep", "1000"]
            environment:
              FROM_FILE: from-the-file
            working_dir: /home
    """)
    compose.ok("up", "-d", "--scale", "web=2")
    first, second = compose.must("web", 1), compose.must("web", 2)
    assert compose.exec("web", "hostname").strip() == first["id"][:12]
    result = compose.ok("exec", "--index", "2", "-T", "web", "hostname")
    assert result.out.strip() == second["id"][:12]
    assert compose.exec("web", "sh", "-c", "echo $FROM_FILE").strip() == "from-the-file"
    assert compose.exec("web", "pwd").strip() == "/home"
    env = compose.ok("exec", "-T", "-e", "EXTRA=given", "-e", "FROM_FILE=over", "web", "env").out.splitlines()
    assert "EXTRA=given" in env and "FROM_FILE=over" in env, env
    assert compose.ok("exec", "-T", "-w", "/tmp", "web", "pwd").out.strip() == "/tmp"
    assert compose.ok("exec", "-T", "-u", "1000", "web", "id", "-u").out.strip() == "1000"
    assert compose.ok("exec", "-T", "-u", "app", "web", "id", "-un").out.strip() == "app"
    assert compose.exec("web", "id", "-u").strip() == "0"
    assert compose.exec("web", "cat", input="through stdin\n") == "through stdin\n"
    # the container's main process is PID 1 of the container's own pid namespace
    assert compose.exec("web", "cat", "/proc/1/cmdline").split("\0")[0] == "sleep"

    failed = compose.run("exec", "-T", "web", "sh", "-c", "echo to-stderr >&2; exit 7")
    assert failed.code == 7, str(failed)
    assert failed.err.strip().endswith("to-stderr"), str(failed)
    assert compose.run("exec", "-T", "web", "/no/such/program").code != 0

    # HOME follows the exec's user (the container's env does not set it), as runc computes it for Docker
    assert compose.ok("exec", "-T", "-u", "app", "web", "sh", "-c", "echo $HOME").out == "/home/app\n"

    compose.ok("stop", "-t", "0")
    stopped = compose.run("exec", "-T", "web", "true")
    assert stopped.code != 0 and "not running" in stopped.err, str(stopped)


# --- stop, start, restart, kill, pause, unpause, rm ---------------------------------------------------------


def test_stop_start_restart_kill_pause_rm(compose: Compose) -> None:
    compose.write(f"""
        services:
          web:
            image: IMAGE
            command: ["sh", "-c", "{GRACEFUL}"]
          stubborn:
            image: IMAGE
            command: ["sh", "-c", "{STUBBORN}"]
    """)
    compose.ok("up", "-d")
    web_pid = compose.running_pid("web")
    stubborn_pid = compose.running_pid("stubborn")

    # a PID 1 that ignores SIGTERM: the grace (-t 1), then SIGKILL
    stop = compose.ok("stop", "-t", "1", "stubborn")
    assert f"Container {compose.name}-stubborn-1  Stopped" in stop.err, str(stop)
    record = compose.must("stubborn")
    assert (record["state"], record["exit_code"]) == ("exited", 137), record
    assert not alive(stubborn_pid)
    assert compose.running_pid("web") == web_pid  # only the one named
    row = {r["Service"]: r for r in compose.ps_json("-a")}["stubborn"]
    assert (row["State"], row["ExitCode"]) == ("exited", 137)
    assert row["Status"].startswith("Exited (137) "), row

    # a graceful one: SIGTERM, exit 0
    compose.ok("stop", "-t", "10", "web")
    record = compose.must("web")
    assert (record["state"], record["exit_code"]) == ("exited", 0), record
    assert not alive(web_pid)
    assert compose.ok("ps", "-q").out == ""

    compose.ok("start")
    new_web = compose.running_pid("web")
    assert new_web != web_pid
    assert compose.running_pid("stubborn") != stubborn_pid

    compose.ok("restart", "-t", "10", "web")
    restarted = compose.running_pid("web")
    assert restarted != new_web and not alive(new_web)
    assert compose.must("web")["restart_count"] == 0  # a user's restart is not a policy restart

    compose.ok("kill", "-s", "SIGTERM", "web")
    record = compose.wait_record("web", lambda r: r["state"] == "exited", "exited after kill -s SIGTERM")
    assert record["exit_code"] == 0, record
    compose.ok("start", "web")
    pid = compose.running_pid("web")
    compose.ok("kill", "web")  # SIGKILL by default
    record = compose.wait_record("web", lambda r: r["state"] == "exited", "exited after kill")
    assert record["exit_code"] == 137, record
    assert not alive(pid)

    compose.ok("start", "web")
    pid = compose.running_pid("web")
    compose.ok("pause", "web")
    assert compose.must("web")["state"] == "paused"
    row = {r["Service"]: r for r in compose.ps_json()}["web"]
    assert row["State"] == "paused" and "Paused" in row["Status"], row
    compose.ok("unpause", "web")
    assert compose.must("web")["state"] == "running"
    assert compose.exec("web", "echo", "thawed").strip() == "thawed"
    assert compose.running_pid("web") == pid

    compose.ok("stop", "-t", "10", "web")
    compose.ok("rm", "-f", "web")
    assert compose.record("web") is None
    assert compose.ok("ps", "-a", "--services").out.split() == ["stubborn"]
    # rm leaves running containers alone; rm -s -f stops them first
    compose.ok("rm", "-f", "stubborn")
    assert compose.must("stubborn")["state"] == "running"
    compose.ok("rm", "-s", "-f", "-t", "0", "stubborn")
    assert compose.records() == []


def test_pause_and_unpause_the_whole_project(compose: Compose) -> None:
    compose.write("""
        services:
          a: {image: IMAGE, command: ["sleep", "1000"]}
          b: {image: IMAGE, command: ["sleep", "1000"]}
          c: {image: IMAGE, command: ["sleep", "1000"]}
    """)
    compose.ok("up", "-d")
    pids = {s: compose.running_pid(s) for s in "abc"}
    paused = compose.ok("pause")
    for service in "abc":
        assert f"Container {compose.name}-{service}-1  Paused" in paused.err, str(paused)
        assert compose.must(service)["state"] == "paused"
    assert {r["State"] for r in compose.ps_json()} == {"paused"}
    unpaused = compose.ok("unpause")
    for service in "abc":
        assert f"Container {compose.name}-{service}-1  Unpaused" in unpaused.err, str(unpaused)
    assert {s: compose.running_pid(s) for s in "abc"} == pids
    assert compose.exec("c", "echo", "thawed") == "thawed\n"


# --- restart policies ---------------------------------------------------------------------------------------


def test_restart_policies_after_the_main_process_is_killed(compose: Compose) -> None:
    compose.write("""
        services:
          always:
            image: IMAGE
            command: ["sleep", "1000"]
            restart: always
          onfailure:
            image: IMAGE
            command: ["sleep", "1000"]
            restart: on-failure
          twice:
            image: IMAGE
            command: ["sh", "-c", "echo attempt; exit 1"]
            restart: on-failure:2
          never:
            image: IMAGE
            command: ["sleep", "1000"]
            restart: "no"
          unless:
            image: IMAGE
            command: ["sleep", "1000"]
            restart: unless-stopped
    """)
    compose.ok("up", "-d")
    pids = {s: compose.running_pid(s) for s in ("always", "onfailure", "never", "unless")}
    for pid in pids.values():
        os.kill(pid, signal.SIGKILL)

    for service in ("always", "onfailure", "unless"):
        old = pids[service]
        record = compose.wait_record(
            service,
            lambda r, old=old: r["state"] == "running" and r["restart_count"] == 1 and r["pid"] != old,
            "restarted once by its policy",
        )
        assert alive(record["pid"])
    never = compose.wait_record("never", lambda r: r["state"] == "exited", "exited")
    assert (never["exit_code"], never["restart_count"]) == (137, 0), never

    # on-failure:2 and a command that exits 1: exactly two restarts, then it stays exited
    twice = compose.wait_record(
        "twice", lambda r: r["state"] == "exited" and r["restart_count"] == 2, "exited after 2 restarts"
    )
    assert twice["exit_code"] == 1, twice
    time.sleep(1.0)  # longer than the next backoff (0.4 s) would be: no third attempt
    twice = compose.must("twice")
    assert (twice["state"], twice["restart_count"]) == ("exited", 2), twice
    assert compose.ok("logs", "--no-log-prefix", "twice").out.split() == ["attempt"] * 3

    # a user's stop never triggers a restart, whatever the policy
    restarted = {s: compose.running_pid(s) for s in ("always", "onfailure", "unless")}
    compose.ok("stop", "-t", "0", "always", "unless")
    compose.ok("kill", "onfailure")
    compose.wait_record("onfailure", lambda r: r["state"] == "exited", "exited after kill")
    time.sleep(1.0)  # longer than a restart's backoff
    for service in ("always", "onfailure", "unless"):
        record = compose.must(service)
        assert (record["state"], record["restart_count"]) == ("exited", 1), record
        assert not alive(restarted[service])
    rows = {r["Service"]: r for r in compose.ps_json("-a")}
    assert rows["onfailure"]["ExitCode"] == 137 and rows["always"]["State"] == "exited", rows


# --- the supervisor's crash ---------------------------------------------------------------------------------


def test_containers_outlive_a_killed_supervisor_and_are_adopted(compose: Compose) -> None:
    compose.write(f"""
        services:
          web:
            image: IMAGE
            command: ["sleep", "1000"]
            restart: always
          side:
            image: IMAGE
            command: ["sh", "-c", "{GRACEFUL}"]
    """)
    compose.ok("up", "-d")
    web, side = compose.running_pid("web"), compose.running_pid("side")
    first = compose.kill_supervisor()

    assert alive(web) and alive(side)
    rows = {r["Service"]: r for r in compose.ps_json()}
    assert (rows["web"]["State"], rows["side"]["State"]) == ("running", "running"), rows
    assert compose.ok("logs", "--no-log-prefix", "side").out.split() == ["ready"]

    # the next command starts a supervisor that adopts them, without restarting them
    stop = compose.ok("stop", "-t", "10", "side")
    second = compose.supervisor_pid()
    assert second is not None and second != first and alive(second), str(stop)
    record = compose.must("side")
    assert record["state"] == "exited", record
    assert record["exit_code"] in (0, 143), record  # the adopted container's status is not readable
    assert not alive(side)
    assert compose.running_pid("web") == web

    # the new supervisor applies the restart policy to the container it adopted
    os.kill(web, signal.SIGKILL)
    record = compose.wait_record(
        "web", lambda r: r["state"] == "running" and r["pid"] != web and r["restart_count"] == 1,
        "restarted by the adopting supervisor",
    )  # fmt: skip
    restarted = record["pid"]

    # once more: crash, then `up -d` adopts and leaves it be
    compose.kill_supervisor()
    assert alive(restarted)
    compose.ok("up", "-d")
    assert compose.running_pid("web") == restarted
    assert compose.running_pid("side") != side  # up starts the stopped one again

    compose.ok("down", "-t", "1")
    assert compose.records() == []
    assert not alive(restarted)


def test_a_restarted_container_is_not_healthy_before_its_new_probes_say_so(compose: Compose) -> None:
    """Its first run is healthy; the run after a crash fails its probes during start_period: from the
    moment the record shows the new pid it says `starting`, never the old run's `healthy`."""
    compose.write(f"""
        services:
          web:
            image: IMAGE
            command: ["sh", "-c", "echo x >> /data/runs; exec sleep 1000"]
            restart: always
            volumes: [data:/data]
            ports: ["127.0.0.1:{free_port()}:80", "127.0.0.1:{free_port()}:81"]
            healthcheck:
              test: ["CMD-SHELL", "test $(wc -l < /data/runs) = 1"]
              interval: 1s
              start_period: 60s
              start_interval: 200ms
        volumes:
          data: {{}}
    """)
    compose.ok("up", "-d", "--wait")
    web = compose.running_pid("web")
    assert compose.must("web")["health"] == "healthy"
    os.kill(web, signal.SIGKILL)
    record = compose.wait_record("web", lambda r: r["pid"] not in (None, web), "the new run")
    assert record["health"] == "starting", record
    time.sleep(1)
    assert compose.must("web")["health"] == "starting"  # failing probes in start_period do not count


def test_a_supervisor_killed_with_sigkill_is_replaced_at_once(compose: Compose) -> None:
    """Its guardian becomes the next supervisor: no composer command is needed for the containers'
    names to resolve again, for their restart policies, or for the guardian to leave with a clean exit."""
    compose.write("""
        services:
          web:
            image: IMAGE
            command: ["sleep", "1000"]
            restart: always
          client:
            image: IMAGE
            command: ["sleep", "1000"]
            dns: ["127.0.0.1"]  # names it lacks go to nothing there: no query leaves the machine
    """)
    compose.ok("up", "-d")
    web = compose.running_pid("web")
    killed_at = time.monotonic()
    first = compose.kill_supervisor()

    def replaced() -> int | None:
        pid = compose.supervisor_pid()
        return pid if pid is not None and pid != first and alive(pid) else None

    second = wait_until(replaced, "a new supervisor", timeout=10)
    took = time.monotonic() - killed_at
    log = (compose.root / "projects" / compose.name / "supervisor.log").read_text()
    assert '"supervisor.respawn"' in log and f'"gone": {first}' in log, log[-2000:]
    assert took < 5, f"replaced after {took:.2f} s"

    def resolves() -> bool:
        done = compose.run("exec", "-T", "client", "nslookup", "web", "127.0.0.11")
        return done.code == 0 and compose.must("web")["networks"][f"{compose.name}_default"] in done.out

    wait_until(resolves, "web to resolve again", timeout=10)
    assert compose.running_pid("web") == web  # adopted, not restarted
    assert compose.supervisor_pid() == second  # the command above found it, did not start another

    os.kill(web, signal.SIGKILL)  # the replacement keeps the restart policy
    compose.wait_record(
        "web", lambda r: r["state"] == "running" and r["pid"] != web and r["restart_count"] == 1,
        "restarted by the replacement supervisor",
    )  # fmt: skip

    compose.ok("down", "-t", "1")
    wait_until(lambda: not alive(second), "the replacement to leave after down")
    assert compose.records() == []


def test_down_after_a_supervisor_crash(compose: Compose) -> None:
    compose.write(f"""
        services:
          web:
            image: IMAGE
            command: ["sh", "-c", "{GRACEFUL}"]
            ports: ["127.0.0.1:{free_port()}:80"]
    """)
    compose.ok("up", "-d")
    pid = compose.running_pid("web")
    compose.kill_supervisor()
    assert alive(pid)
    compose.ok("down", "-t", "10")
    assert not alive(pid)
    assert compose.records() == []
    compose.ok("down")


# --- volumes ------------------------------------------------------------------------------------------------


def test_named_volume_lives_until_down_v(compose: Compose) -> None:
    compose.write(f"""
        services:
          web:
            image: IMAGE
            command: ["sh", "-c", "{GRACEFUL}"]
            volumes:
              - data:/data
              - ./made/by/up:/mnt/bind
        volumes:
          data: {{}}
    """)
    host_dir = compose.dir / "made/by/up"
    compose.ok("up", "-d")
    assert host_dir.is_dir()  # a missing bind source is created
    # Docker's copy-up: an empty named volume gets the image's content at its target
    assert compose.exec("web", "cat", "/data/seed.txt") == "seeded\n"
    compose.exec("web", "sh", "-c", "echo kept > /data/mine; echo from-container > /mnt/bind/file")
    assert (host_dir / "file").read_text() == "from-container\n"
    assert compose.volume_dir("data").is_dir()

    compose.ok("restart", "-t", "10")
    assert compose.exec("web", "cat", "/data/mine") == "kept\n"

    pid = compose.running_pid("web")
    compose.kill_supervisor()
    compose.ok("up", "-d")
    assert compose.running_pid("web") == pid
    assert compose.exec("web", "cat", "/data/mine") == "kept\n"

    first_id = compose.must("web")["id"]
    compose.ok("down", "-t", "10")
    assert compose.records() == []
    assert compose.volume_dir("data").is_dir()  # down keeps named volumes
    compose.ok("up", "-d")
    assert compose.must("web")["id"] != first_id
    assert compose.exec("web", "cat", "/data/mine", "/data/seed.txt") == "kept\nseeded\n"

    compose.ok("down", "-v", "-t", "10")
    assert not compose.volume_dir("data").exists()
    assert (host_dir / "file").read_text() == "from-container\n"  # a bind mount's data is the host's
    compose.ok("up", "-d")
    assert compose.exec("web", "ls", "/data").split() == ["seed.txt"]  # a new volume, filled again


# --- networks, DNS, published ports -------------------------------------------------------------------------


def test_services_reach_each_other_by_name_and_ports_are_published(compose: Compose) -> None:
    port = free_port()
    compose.write(f"""
        services:
          client:
            image: IMAGE
            command: ["sleep", "1000"]
          server:
            image: IMAGE
            command: ["sh", "-c", "mkdir -p /www && echo hello-from-server > /www/index.html && exec httpd -f -p 8080 -h /www"]
            ports: ["127.0.0.1:{port}:8080"]
    """)  # noqa: E501
    compose.ok("up", "-d")
    network = f"{compose.name}_default"
    client, server = compose.must("client"), compose.must("server")
    client_ip, server_ip = client["networks"][network], server["networks"][network]

    hosts = compose.exec("client", "cat", "/etc/hosts").splitlines()
    assert any(line.split()[:1] == [client_ip] and client["id"][:12] in line.split() for line in hosts), hosts

    lookup = compose.ok("exec", "-T", "client", "nslookup", "server")
    assert server_ip in lookup.out, str(lookup)
    lookup = compose.ok("exec", "-T", "server", "nslookup", f"{compose.name}-client-1")
    assert client_ip in lookup.out, str(lookup)
    compose.ok("exec", "-T", "client", "ping", "-c", "1", "-W", "5", "server")
    page = compose.exec("client", "wget", "-q", "-O", "-", "http://server:8080/")
    assert page == "hello-from-server\n"

    # the host reaches the container through the project's bridge (and no other link holds its subnet:
    # another composer root's network on the same subnet would take the traffic)
    ipam = json.loads((compose.root / "network" / "ipam.json").read_text())["networks"][network]
    route = subprocess.run(["ip", "route", "get", server_ip], capture_output=True, text=True, check=False)
    assert f" dev {ipam['extra']['bridge']} " in route.stdout, (ipam, route.stdout, host_routes())

    def fetch() -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                return str(response.read().decode())
        except OSError:
            return None

    assert wait_until(fetch, f"http://127.0.0.1:{port}/ to answer") == "hello-from-server\n"
    row = {r["Service"]: r for r in compose.ps_json()}["server"]
    assert row["Publishers"] == [
        {"URL": "127.0.0.1", "TargetPort": 8080, "PublishedPort": port, "Protocol": "tcp"}
    ], row
    assert f"127.0.0.1:{port}->8080/tcp" in row["Ports"], row

    compose.ok("down", "-t", "0")
    assert fetch() is None


# --- a broken compose file ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "located"),
    [
        ("services:\n  web:\n    image: IMAGE\n    ports: 12\n", ":4:"),
        ("services:\n  web:\n    image: IMAGE\n    command: [sleep\n", ":5:"),
    ],
    ids=["schema", "yaml"],
)
def test_a_broken_compose_file_creates_nothing(compose: Compose, text: str, located: str) -> None:
    compose.write(text)
    for command in (("up", "-d"), ("down",), ("ps",), ("stop",)):
        result = compose.run(*command)
        assert result.code == 15, str(result)
        assert f"{compose.file}{located}" in result.err, str(result)
        assert "Traceback" not in result.err
    assert compose.records() == []
    assert not (compose.root / "projects" / compose.name).exists()
    assert compose.supervisor_pid() is None
    assert supervisor_pids(compose.root) == []  # `up` starts one before it loads the file: it is gone


def test_up_names_a_supervisor_started_before_the_load(compose: Compose) -> None:
    """`up` starts the supervisor before it reads the files, under a guessed name (-p, else the
    folder's); a top-level `name:` makes the guess wrong. The supervisor learns the real name and logs
    into that project's folder; a second `up` finds it running, and the one it started ahead answers
    "busy" and leaves."""
    real = f"{compose.name}-real"
    compose.write(f"""
        name: {real}
        services:
          web:
            image: IMAGE
            command: ["sleep", "1000"]
    """)
    file = str(compose.dir / "compose.yaml")
    argv = [sys.executable, "-m", "composer", "--root", str(compose.root), "-f", file]

    def composer(*args: str) -> None:
        done = subprocess.run([*argv, *args], cwd=compose.dir, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=COMMAND_TIMEOUT, check=False)  # fmt: skip
        assert done.returncode == 0 and "Traceback" not in done.stderr, (args, done.stdout, done.stderr)

    try:
        composer("up", "-d")
        log = compose.root / "projects" / real / "supervisor.log"
        assert '"supervisor.ready"' in log.read_text()
        assert not (compose.root / "projects" / compose.dir.name).exists()  # the guess made nothing
        first = supervisor_pids(compose.root)
        assert len(first) == 3, first  # the supervisor, its guardian, its fork-server
        composer("up", "-d")
        wait_until(lambda: supervisor_pids(compose.root) == first or None, "the extra supervisor to leave")
        assert log.read_text().count('"supervisor.ready"') == 1
    finally:
        composer("down", "-t", "0")
        # the fixture waits for its own project's supervisor; this one is the real name's
        wait_until(lambda: not supervisor_pids(compose.root), "the supervisor to leave after down")


# --- attached up --------------------------------------------------------------------------------------------


def read_until(process: subprocess.Popen[bytes], needle: str, timeout: float = WAIT) -> str:
    """The process's output until `needle` appears in it (bounded)."""
    assert process.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while needle.encode() not in seen:
        if time.monotonic() > deadline:
            pytest.fail(f"no {needle!r} after {timeout:g}s in:\n{seen.decode(errors='replace')}")
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                pytest.fail(f"the command ended before {needle!r}:\n{seen.decode(errors='replace')}")
            seen += chunk
    return seen.decode(errors="replace")


def finish(process: subprocess.Popen[bytes], timeout: float = COMMAND_TIMEOUT) -> str:
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
        late = True
    else:
        late = False
    if late:
        pytest.fail(f"the command did not end in {timeout:g}s:\n{out.decode(errors='replace')}", False)
    return out.decode(errors="replace")


def test_up_attached_shows_the_output_and_the_exit(compose: Compose) -> None:
    compose.write("""
        services:
          web:
            image: IMAGE
            command: ["sh", "-c", "echo hello from web; sleep 0.2; echo on stderr >&2; exit 3"]
    """)
    up = compose.run("up")
    assert "web-1  | hello from web\n" in up.out, str(up)
    assert "web-1  | on stderr\n" in up.out, str(up)
    assert "web-1 exited with code 3\n" in up.out, str(up)
    assert up.out.index("hello from web") < up.out.index("on stderr") < up.out.index("exited with code 3")
    assert "Attaching to web-1" in up.err, str(up)
    assert (compose.must("web")["state"], compose.must("web")["exit_code"]) == ("exited", 3)


def test_up_exit_code_from_stops_the_others(compose: Compose) -> None:
    compose.write(f"""
        services:
          tests:
            image: IMAGE
            command: ["sh", "-c", "echo testing; exit 4"]
          server:
            image: IMAGE
            command: ["sh", "-c", "{GRACEFUL}"]
    """)
    up = compose.run("up", "--exit-code-from", "tests", timeout=30)  # `tests` may end before `up` returns
    assert up.code == 4, str(up)
    assert "tests-1   | testing\n" in up.out, str(up)
    assert "tests-1 exited with code 4\n" in up.out, str(up)
    server = compose.must("server")
    assert (server["state"], server["exit_code"]) == ("exited", 0), server


def test_up_exit_code_from_a_service_that_exits_late(compose: Compose) -> None:
    compose.write(f"""
        services:
          tests:
            image: IMAGE
            command: ["sh", "-c", "sleep 0.5; echo testing; exit 5"]
          server:
            image: IMAGE
            command: ["sh", "-c", "{GRACEFUL}"]
    """)
    up = compose.run("up", "--exit-code-from", "tests")
    assert up.code == 5, str(up)
    assert "tests-1 exited with code 5\n" in up.out, str(up)
    assert "server-1 exited with code 0\n" in up.out, str(up)
    assert compose.must("server")["state"] == "exited"


def test_ctrl_c_stops_an_attached_up_gracefully(compose: Compose) -> None:
    compose.write(f"""
        services:
          web:
            image: IMAGE
            command: ["sh", "-c", "{GRACEFUL}"]
          other:
            image: IMAGE
            command: ["sh", "-c", "{GRACEFUL}"]
    """)
    up = compose.popen("up")
    try:
        seen = read_until(up, "web-1    | ready")
        seen += read_until(up, "other-1  | ready") if "other-1  | ready" not in seen else ""
        pids = [compose.running_pid("web"), compose.running_pid("other")]
        up.send_signal(signal.SIGINT)
        out = seen + finish(up)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    assert up.returncode in (0, 130), out  # Compose's docs say 0
    assert "Gracefully stopping" in out, out
    assert "web-1 exited with code 0" in out and "other-1 exited with code 0" in out, out
    assert "web-1    | got-term" in out, out
    assert "Traceback" not in out
    for service in ("web", "other"):
        record = compose.must(service)
        assert (record["state"], record["exit_code"]) == ("exited", 0), record
    assert not any(alive(pid) for pid in pids)


def test_run_and_cp(compose: Compose, tmp_path: Path) -> None:
    """`run` gives the caller's stdio and exit code to a one-off container (its dependencies up first);
    `cp` copies both ways and never follows a container's link out to the host."""
    compose.write("""
        services:
          db:
            image: IMAGE
            command: ["sleep", "1000"]
          app:
            image: IMAGE
            command: ["sleep", "1000"]
            depends_on: [db]
    """)
    ran = compose.run("run", "--rm", "-T", "-e", "WHO=run", "app", "sh", "-c", "read x; echo $WHO $x; exit 5",
                      input="stdin\n")  # fmt: skip
    assert ran.code == 5 and ran.out == "run stdin\n", str(ran)
    assert compose.must("db")["state"] == "running"  # brought up for it
    assert not [r for r in compose.records() if r["one_off"]]  # --rm
    compose.ok("up", "-d")
    host_file = tmp_path / "in.txt"
    host_file.write_text("to the container\n")
    compose.ok("cp", str(host_file), "app:/tmp/in.txt")
    assert compose.exec("app", "cat", "/tmp/in.txt") == "to the container\n"
    compose.exec("app", "sh", "-c", "ln -s / /tmp/root && echo inside > /tmp/out.txt")
    compose.ok("cp", "app:/tmp/root/tmp/out.txt", str(tmp_path / "out.txt"))  # the link stays inside
    assert (tmp_path / "out.txt").read_text() == "inside\n"
    cp_folders_and_tar_streams(compose, tmp_path)


def cp_folders_and_tar_streams(compose: Compose, tmp_path: Path) -> None:
    """Folders both ways (into an existing folder: under their own name), a container's link that
    would lead a copy into it onto the host's files, and tar streams on stdin and stdout."""
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "a.txt").write_text("a\n")
    (tree / "link").symlink_to("sub/a.txt")
    compose.ok("cp", str(tree), "app:/srv")  # /srv does not exist: the folder becomes /srv
    compose.ok("cp", str(tree), "app:/srv")  # now it does: /srv/tree
    listing = "cd /srv && find . | sort && readlink link && stat -c '%u:%g' sub/a.txt && cat tree/sub/a.txt"
    assert compose.exec("app", "sh", "-c", listing).split() == [
        ".", "./link", "./sub", "./sub/a.txt", "./tree", "./tree/link", "./tree/sub", "./tree/sub/a.txt",
        "sub/a.txt", "0:0", "a",
    ]  # fmt: skip
    back = tmp_path / "back"
    compose.ok("cp", "app:/srv", str(back))
    assert (back / "tree" / "sub" / "a.txt").read_text() == "a\n" and os.readlink(
        back / "link"
    ) == "sub/a.txt"
    # the container prepares /drop/tree/sub as a link to its / : what the copy writes there stays inside
    marker = f"composer-escape-{os.getpid()}.txt"
    (tree / "sub" / marker).write_text("never on the host\n")
    compose.exec("app", "sh", "-c", "mkdir -p /drop/tree && ln -s / /drop/tree/sub")
    compose.run("cp", str(tree), "app:/drop")  # refused or contained: never the host's /
    assert not Path("/", marker).exists()
    # tar streams: out on stdout (its top member named as the source), in on stdin (into a folder)
    argv = [sys.executable, "-m", "composer", *compose.argv("cp", "app:/srv/sub", "-")]
    out = subprocess.run(argv, cwd=compose.dir, capture_output=True, check=True, timeout=60).stdout
    with tarfile.open(fileobj=io.BytesIO(out)) as archive:
        assert sorted(archive.getnames()) == ["sub", "sub/a.txt"]
        assert archive.extractfile("sub/a.txt").read() == b"a\n"  # type: ignore[union-attr]
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w") as archive:
        data = b"from stdin\n"
        info = tarfile.TarInfo("streamed/file.txt")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    argv = [sys.executable, "-m", "composer", *compose.argv("cp", "-", "app:/tmp")]
    subprocess.run(
        argv, cwd=compose.dir, input=stream.getvalue(), capture_output=True, check=True, timeout=60
    )
    assert compose.exec("app", "cat", "/tmp/streamed/file.txt") == "from stdin\n"
    not_a_folder = compose.run("cp", "-", "app:/tmp/streamed/file.txt", input="")
    assert not_a_folder.code != 0 and "must be a folder" in not_a_folder.err, str(not_a_folder)
    # a link as SRC is copied as a link, what it points to with -L; -a keeps the owners
    compose.exec(
        "app", "sh", "-c", "echo target > /tmp/t.txt && ln -s /tmp/t.txt /tmp/l && chown 123:45 /tmp/t.txt"
    )
    compose.ok("cp", "app:/tmp/l", str(tmp_path / "l"))
    assert os.readlink(tmp_path / "l") == "/tmp/t.txt"
    compose.ok("cp", "-L", "app:/tmp/l", str(tmp_path / "followed"))
    assert (tmp_path / "followed").read_text() == "target\n" and (tmp_path / "followed").stat().st_uid == 0
    compose.ok("cp", "-a", "-L", "app:/tmp/l", str(tmp_path / "kept"))
    assert ((tmp_path / "kept").stat().st_uid, (tmp_path / "kept").stat().st_gid) == (123, 45)
    owned = tmp_path / "owned.txt"
    owned.write_text("owned\n")
    os.chown(owned, 1234, 567)
    compose.ok("cp", "-a", str(owned), "app:/tmp/")
    compose.ok("cp", str(owned), "app:/tmp/root-owned.txt")
    ids = compose.exec("app", "stat", "-c", "%u:%g", "/tmp/owned.txt", "/tmp/root-owned.txt").split()
    assert ids == ["1234:567", "0:0"]
    missing = compose.run("cp", "app:/nowhere", str(tmp_path / "x"))
    assert missing.code != 0 and "/nowhere does not exist" in missing.err and "Traceback" not in missing.err


def test_up_builds_what_is_missing_and_rebuilds_with_build(compose: Compose) -> None:
    """`up` builds a service's image when the store lacks it; `up --build` builds again and recreates the
    container when the image changed; otherwise the container is kept."""
    context = compose.dir / "app"
    context.mkdir()
    (context / "Dockerfile").write_text(f'FROM {IMAGE}\nCOPY message /message\nCMD ["sleep", "1000"]\n')
    (context / "message").write_text("first\n")
    compose.write("""
        services:
          app:
            build: ./app
    """)
    first = compose.ok("up", "-d")
    assert "Built" in first.err or "built" in first.err, str(first)
    assert compose.exec("app", "cat", "/message") == "first\n"
    pid = compose.running_pid("app")
    compose.ok("up", "-d")  # nothing changed: kept, not rebuilt
    assert compose.running_pid("app") == pid
    (context / "message").write_text("second\n")
    compose.ok("up", "-d")  # the image exists: no build without --build
    assert compose.exec("app", "cat", "/message") == "first\n"
    compose.ok("up", "-d", "--build")
    assert compose.exec("app", "cat", "/message") == "second\n"
    assert compose.running_pid("app") != pid  # recreated on the new image


def test_network_mode_service_shares_the_network_namespace(compose: Compose) -> None:
    """`network_mode: service:web`: the container sees web's interfaces and loopback servers, resolves
    the project's names through the same embedded DNS, and has web's /etc/hosts."""
    compose.write("""
        services:
          web:
            image: IMAGE
            command: ["sh", "-c", "echo hello > /tmp/index.html; httpd -f -p 8080 -h /tmp"]
          side:
            image: IMAGE
            network_mode: "service:web"
            command: ["sleep", "1000"]
          other:
            image: IMAGE
            command: ["sleep", "1000"]
    """)
    compose.ok("up", "-d")
    assert compose.exec("side", "wget", "-q", "-O", "-", "http://127.0.0.1:8080/index.html") == "hello\n"
    assert compose.exec("side", "cat", "/etc/hosts") == compose.exec("web", "cat", "/etc/hosts")
    web_net = compose.exec("web", "cat", "/proc/net/dev").split("\n")[2:]
    assert [line.split(":")[0] for line in compose.exec("side", "cat", "/proc/net/dev").split("\n")[2:]] == [
        line.split(":")[0] for line in web_net
    ]
    assert "Address" in compose.exec("side", "nslookup", "other", "127.0.0.11")


def test_names_and_aliases_per_network(compose: Compose) -> None:
    """Each network answers for the containers on it: a container's aliases on one network are not names
    on another, and a container on another network is not resolvable (nor reachable) at all."""
    compose.write("""
        services:
          hub:
            image: IMAGE
            command: ["sleep", "1000"]
            networks:
              front: {aliases: [front-alias]}
              back: {aliases: [back-alias]}
          web:
            image: IMAGE
            command: ["sleep", "1000"]
            networks: [front]
            dns: ["127.0.0.1"]  # names it lacks go to nothing there: no query leaves the machine
          db:
            image: IMAGE
            command: ["sleep", "1000"]
            networks: [back]
            dns: ["127.0.0.1"]
        networks:
          front: {}
          back: {}
    """)
    compose.ok("up", "-d")

    def resolves(service: str, name: str) -> bool:
        done = compose.run("exec", "-T", service, "nslookup", name, "127.0.0.11")
        return done.code == 0 and "Address" in done.out.split("127.0.0.11", 1)[-1]

    assert resolves("web", "hub") and resolves("web", "front-alias")
    assert not resolves("web", "back-alias") and not resolves("web", "db")
    assert resolves("db", "hub") and resolves("db", "back-alias")
    assert not resolves("db", "front-alias") and not resolves("db", "web")
    hub = compose.must("hub")
    assert resolves("web", hub["id"][:12])  # the short id, as Docker's DNS answers


def test_ctrl_c_in_the_middle_of_up_detached(compose: Compose) -> None:
    """Ctrl-C while `up -d` starts many containers: whatever had started when the signal came is stopped
    or keeps running supervised (never a container nobody watches), and `down` then removes it all."""
    services = "".join(f"  s{i:02d}:\n    image: {IMAGE}\n    command: [\"sleep\", \"1000\"]\n"
                       "    stop_signal: SIGKILL\n" for i in range(16))  # fmt: skip
    (compose.dir / "compose.yaml").write_text("services:\n" + services)
    up = compose.popen("up", "-d")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(r["state"] == "running" for r in compose.records()):
            time.sleep(0.02)
        up.send_signal(signal.SIGINT)
        finish(up)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    supervisor = compose.supervisor_pid()

    def zombies() -> list[str]:
        """The supervisor's children that ended and were not reaped (briefly normal while it cleans up)."""
        if supervisor is None or not Path(f"/proc/{supervisor}").exists():
            return []
        found = []
        for pid in Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split():
            try:
                if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    found.append(pid)
            except OSError:
                continue
        return found

    deadline = time.monotonic() + 15
    while zombies() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert zombies() == [], "containers left unwatched by the supervisor"

    def stale() -> list[str]:
        """Records that say running for a process that has gone (the record is written once the
        container's output is drained: it settles within seconds)."""
        return [r["name"] for r in compose.records()
                if r["state"] == "running" and not Path(f"/proc/{r['pid']}").exists()]  # fmt: skip

    deadline = time.monotonic() + 15
    while stale() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stale() == []
    compose.ok("down", "-t", "1")
    assert compose.records() == []
