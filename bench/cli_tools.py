"""What the benchmarks that drive the composer CLI share (bench/stack_up.py, bench/inception.py): how to
run composer, a clean environment for it, its state files and processes read from /proc, and signal
handling that lets a run clean up after itself."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from composer.engine.records import process_start_time


def composer_argv() -> list[str]:
    script = Path(sys.executable).parent / "composer"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "composer"]


def clean_env(work: Path, **extra: str) -> dict[str, str]:
    """No COMPOSE_/DOCKER_/COMPOSER_ variables, HOME an empty folder, and a bytecode cache in `work`: with
    PYTHONDONTWRITEBYTECODE (set on some machines) every composer process would compile its modules
    again, which is not what an installed composer does. `extra`: more variables (DATA_DIR=...)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_", "COMPOSER_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    env["HOME"] = str(work / "home")
    env.update(extra)
    return env


def supervisor_argv(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def is_supervisor(pid: int, root: Path) -> bool:
    """`pid` is a composer supervisor of `root` (a check before trusting or waiting on a pid)."""
    argv = supervisor_argv(pid)
    return b"__supervise" in argv and str(root).encode() in argv and process_start_time(pid) is not None


def supervisors(root: Path) -> list[int]:
    """Every supervisor process of `root` (scanning /proc)."""
    return [int(e.name) for e in os.scandir("/proc") if e.name.isdigit() and is_supervisor(int(e.name), root)]


def run_composer(
    args: Sequence[str], *, common: Sequence[str], cwd: Path, env: dict[str, str], timeout: float, label: str
) -> tuple[float, str]:
    """One composer command (`common` before `args`: --root, -p, -f ...): (wall time, stdout).
    CommandFailed on a non-zero exit or after `timeout`, named by `label` and the last lines of stderr.

    The child has its own session, so a Ctrl-C meant for the bench does not cut it short; if the bench
    is interrupted while it runs, it gets SIGINT (Ctrl-C for composer) and some time to stop."""
    argv = [*composer_argv(), *common, *args]
    what = f"composer {' '.join(args)}{f' ({label})' if label else ''}"
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True
        )
        try:
            code = _wait(proc, timeout)
        except BaseException as exc:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if isinstance(exc, subprocess.TimeoutExpired):
                raise CommandFailed(f"{what}: over {timeout:g} s") from None
            raise
        took = time.perf_counter() - start
        if code != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace").strip().splitlines()[-3:]
            raise CommandFailed(f"{what}: exit {code}: {' | '.join(tail)}")
        out.seek(0)
        return took, out.read().decode(errors="replace")


class CommandFailed(RuntimeError):
    pass


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """`proc.wait(timeout)` without its polling: Popen.wait with a timeout sleeps in steps of up to
    50 ms, which added 0-50 ms to every timed command. A pidfd is readable the moment it exits."""
    pidfd = os.pidfd_open(proc.pid)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if not poller.poll(timeout * 1000):
            raise subprocess.TimeoutExpired(proc.args, timeout)
    finally:
        os.close(pidfd)
    return proc.wait()


def read_json(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_bytes())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def alive(record: dict[str, object]) -> bool:
    """The record's process runs (same pid and start time, as composer's readers check)."""
    pid, start = record.get("pid"), record.get("pid_start")
    return isinstance(pid, int) and start is not None and process_start_time(pid) == start


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    out = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                out += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return out


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    def handler(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def no_interrupts() -> Iterator[None]:
    """While cleaning up: Ctrl-C and SIGTERM say so instead of cutting the cleanup short."""

    def handler(_signum: int, _frame: object) -> None:
        print("cleaning up, please wait", file=sys.stderr)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve())
    with open("/proc/self/mountinfo") as handle:
        found = [line.split()[4] for line in handle]
    return [m for m in found if m == prefix or m.startswith(prefix + "/")]
