"""`run` and `exec` as a user at a terminal runs them, and `run`'s flags: the CLI on a real pty (a new
session whose controlling terminal is the pty, as a shell gives it), the container's process on a pty of
its own whose size follows the terminal's, raw mode (Ctrl-C reaches the process) restored on exit, the
exit code returned; `run -p/-P/-v/-l/--use-aliases/-T`, and `ps` with one-off containers (Compose's
rules: research/compose-semantics.md §1.7, §2.15).

Uses the busybox image and the `compose` fixture of test_lifecycle.py (every project taken down, the
supervisor gone and the leak check passed after each test). Every read of the pty is bounded in time.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import socket
import subprocess
import sys
import termios
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from composer.runtime.console import set_size
from tests.privileged.test_lifecycle import (
    COMMAND_TIMEOUT,
    Compose,
    compose,
    free_port,
    lifecycle_root,
    wait_until,
)

__all__ = ["compose", "lifecycle_root"]  # the fixtures, shared with test_lifecycle.py


@pytest.fixture(autouse=True)
def _down_at_the_end(compose: Compose) -> Iterator[None]:
    """`down` even when nothing is left running (a `run --rm` leaves the project's network behind, as in
    Compose, and the supervisor may be gone by then): the leak check must find nothing."""
    yield
    compose.run("down", "-v", "-t", "0", "--remove-orphans", timeout=90)


SLEEPER = """
services:
  web:
    image: IMAGE
    command: ["sleep", "1000"]
"""


@dataclass
class Terminal:
    """The CLI running with a pty as its controlling terminal and stdio; the test holds the master."""

    master: int
    slave: int
    process: subprocess.Popen[bytes]
    seen: bytes = b""

    def read_until(self, text: bytes, timeout: float = 20.0) -> bytes:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"no {text!r} on the terminal in {timeout:g}s; it showed {self.seen!r}")
            ready, _, _ = select.select([self.master], [], [], min(left, 0.2))
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # EIO: nothing holds the other end any more
                    chunk = b""
                if not chunk and self.process.poll() is not None:
                    pytest.fail(f"the CLI ended ({self.process.returncode}) before {text!r}: {self.seen!r}")
                self.seen += chunk
        return self.seen

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def wait(self, timeout: float = COMMAND_TIMEOUT) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:  # keep reading: a full pty would block the CLI's writes
            if time.monotonic() > deadline:
                pytest.fail(f"the CLI did not end in {timeout:g}s; the terminal showed {self.seen!r}")
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                with contextlib.suppress(OSError):
                    self.seen += os.read(self.master, 4096)
        return self.process.returncode


def _take_terminal() -> None:
    """In the child, after setsid: stdin (the pty's slave) becomes the controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@contextlib.contextmanager
def at_terminal(compose: Compose, *args: str, rows: int, cols: int) -> Iterator[Terminal]:
    master, slave = os.openpty()
    set_size(slave, rows, cols)
    process = subprocess.Popen(
        [sys.executable, "-m", "composer", *compose.argv(*args)], cwd=compose.dir, stdin=slave,
        stdout=slave, stderr=slave, start_new_session=True, preexec_fn=_take_terminal,
    )  # fmt: skip
    terminal = Terminal(master=master, slave=slave, process=process)
    try:
        yield terminal
    finally:
        if process.poll() is None:
            process.kill()  # the CLI this test started; the compose fixture takes the rest down
            process.wait(timeout=30)
        os.close(master)
        os.close(slave)


SIZE_SCRIPT = (
    "stty size; echo ready; read line; i=0; "
    # bounded: up to 5 s for the new size to arrive (SIGWINCH -> the relay -> the container's pty)
    'while [ $i -lt 50 ]; do s=$(stty size); [ "$s" = "45 120" ] && break; sleep 0.1; i=$((i+1)); done; '
    'echo "now:$s got:$line"; exit 3'
)


def check_terminal_session(terminal: Terminal) -> None:
    before = termios.tcgetattr(terminal.slave)
    terminal.read_until(b"31 97")  # the pty starts with the terminal's size
    terminal.read_until(b"ready")
    assert not termios.tcgetattr(terminal.slave)[3] & termios.ECHO, "the caller's terminal is not raw"
    set_size(terminal.master, 45, 120)  # the kernel sends the CLI SIGWINCH (its terminal's foreground group)
    terminal.write(b"hello\r")
    terminal.read_until(b"now:45 120 got:hello")
    assert terminal.wait() == 3, terminal.seen
    assert termios.tcgetattr(terminal.slave) == before, "the terminal's settings were not restored"


def test_run_relays_the_terminal(compose: Compose) -> None:
    compose.write(SLEEPER)
    with at_terminal(compose, "run", "--rm", "web", "sh", "-c", SIZE_SCRIPT, rows=31, cols=97) as terminal:
        before = termios.tcgetattr(terminal.slave)
        check_terminal_session(terminal)
        assert termios.tcgetattr(terminal.slave) == before
    assert not [r for r in compose.records() if r["one_off"]]  # --rm


def test_exec_relays_the_terminal(compose: Compose) -> None:
    compose.write(SLEEPER)
    compose.ok("up", "-d")
    with at_terminal(compose, "exec", "web", "sh", "-c", SIZE_SCRIPT, rows=31, cols=97) as terminal:
        check_terminal_session(terminal)


@pytest.mark.parametrize("command", ["run", "exec"])
def test_ctrl_c_reaches_the_process_on_the_pty(compose: Compose, command: str) -> None:
    """In raw mode Ctrl-C is a byte for the container's pty, whose line discipline signals the process
    there (its trap answers); without raw mode it would interrupt the CLI itself."""
    compose.write(SLEEPER)
    if command == "exec":
        compose.ok("up", "-d")
    script = "trap 'echo got-int; exit 7' INT; echo ready; while :; do sleep 0.1; done"
    extra = ("--rm",) if command == "run" else ()
    with at_terminal(compose, command, *extra, "web", "sh", "-c", script, rows=24, cols=80) as terminal:
        before = termios.tcgetattr(terminal.slave)
        terminal.read_until(b"ready")
        terminal.write(b"\x03")
        terminal.read_until(b"got-int")
        assert terminal.wait() == 7, terminal.seen
        assert termios.tcgetattr(terminal.slave) == before


@pytest.mark.parametrize("command", ["run", "exec"])
def test_an_interrupted_cli_restores_the_terminal_and_ends_the_process(
    compose: Compose, command: str
) -> None:
    """SIGINT to the CLI itself (not Ctrl-C typed, which raw mode hands to the process): the terminal's
    settings come back, the CLI exits 130, and the process it ran is gone (`run --rm`: its container too)."""
    compose.write(SLEEPER)
    if command == "exec":
        compose.ok("up", "-d")
    extra = ("--rm",) if command == "run" else ()
    script = "echo ready; exec sleep 1717"
    with at_terminal(compose, command, *extra, "web", "sh", "-c", script, rows=24, cols=80) as terminal:
        before = termios.tcgetattr(terminal.slave)
        terminal.read_until(b"ready")
        assert termios.tcgetattr(terminal.slave) != before  # raw while it runs
        terminal.process.send_signal(signal.SIGINT)
        assert terminal.wait() == 130, terminal.seen
        assert termios.tcgetattr(terminal.slave) == before
    wait_until(lambda: not sleeping(1717), "the interrupted command to end")
    if command == "run":
        wait_until(lambda: not [r for r in compose.records() if r["one_off"]], "the --rm one-off to go")
    else:
        assert compose.must("web")["state"] == "running"  # exec's end leaves the container as it was


def sleeping(seconds: int) -> bool:
    """A `sleep SECONDS` runs on this machine (this test's: the number is its own)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/cmdline", "rb") as handle:
                if handle.read() == f"sleep\0{seconds}\0".encode():
                    return True
    return False


def test_no_tty_flag_and_no_terminal(compose: Compose) -> None:
    compose.write(SLEEPER)
    probe = "if [ -t 0 ]; then echo has-tty; else echo no-tty; fi"
    with at_terminal(compose, "run", "--rm", "-T", "web", "sh", "-c", probe, rows=24, cols=80) as terminal:
        terminal.read_until(b"no-tty")
        assert terminal.wait() == 0
    with at_terminal(compose, "run", "--rm", "web", "sh", "-c", probe, rows=24, cols=80) as terminal:
        terminal.read_until(b"has-tty")
        assert terminal.wait() == 0
    # pipes, not a terminal: no pty unless -t
    assert compose.ok("run", "--rm", "web", "sh", "-c", probe).out == "no-tty\n"
    forced = compose.ok("run", "--rm", "-t", "web", "sh", "-c", probe + "; stty size")
    assert forced.out.replace("\r\n", "\n") == "has-tty\n24 80\n", str(forced)
    compose.ok("up", "-d")
    assert compose.ok("exec", "web", "sh", "-c", probe).out == "no-tty\n"


# --- run's flags --------------------------------------------------------------------------------------------


def fetch(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as reply:
            return str(reply.read().decode())
    except OSError:
        return None


def test_run_publishes_only_what_it_is_told(compose: Compose) -> None:
    service_port, run_port = free_port(), free_port()
    compose.write(f"""
        services:
          web:
            image: IMAGE
            command: ["sleep", "1000"]
            ports: ["127.0.0.1:{service_port}:8080"]
    """)
    server = "mkdir -p /www; echo from-$WHO > /www/index.html; exec httpd -f -p 8080 -h /www"
    name = compose.ok("run", "-d", "-e", "WHO=publish", "-p", f"127.0.0.1:{run_port}:8080", "web", "sh", "-c",
                      server).out.strip()  # fmt: skip
    assert name.startswith(f"{compose.name}-web-run-"), name
    assert wait_until(lambda: fetch(run_port), f"the one-off on port {run_port}") == "from-publish\n"
    assert fetch(service_port) is None  # the service's own ports are not the one-off's (Compose's rule)
    one_off = next(r for r in compose.records() if r["one_off"])
    assert one_off["ports"] == [f"127.0.0.1:{run_port}->8080/tcp"], one_off

    name = compose.ok("run", "-d", "-e", "WHO=service-ports", "--service-ports", "web", "sh", "-c",
                      server).out.strip()  # fmt: skip
    assert wait_until(lambda: fetch(service_port), "the service's port") == "from-service-ports\n"

    # a port in use: a clear error, and no one-off container left
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        taken = holder.getsockname()[1]
        before = {r["name"] for r in compose.records()}
        failed = compose.run("run", "--rm", "-T", "-p", f"127.0.0.1:{taken}:8080", "web", "true")
        assert failed.code != 0, str(failed)
        assert f"host port {taken}/tcp on 127.0.0.1 is already in use" in failed.err, str(failed)
        assert "Traceback" not in failed.err
        assert {r["name"] for r in compose.records()} == before
    bad = compose.run("run", "--rm", "-T", "-P", "-p", "1:1", "web", "true")
    assert bad.code != 0 and "--service-ports and --publish are incompatible" in bad.err, str(bad)
    bad = compose.run("run", "--rm", "-T", "-p", "99999:80", "web", "true")
    assert bad.code != 0 and "run --publish '99999:80': published port must be 1-65535" in bad.err, str(bad)


def test_run_volumes_and_labels(compose: Compose) -> None:
    compose.write("""
        services:
          web:
            image: IMAGE
            command: ["sleep", "1000"]
          db:
            image: IMAGE
            command: ["sleep", "1000"]
            volumes: [data:/var/data]
        volumes:
          data: {}
          unused: {}
    """)
    (compose.dir / "shared").mkdir()
    (compose.dir / "shared" / "in.txt").write_text("from the host\n")
    out = compose.ok("run", "--rm", "-T", "-v", "./shared:/mnt", "web", "sh", "-c",
                     "cat /mnt/in.txt; echo from the container > /mnt/out.txt").out  # fmt: skip
    assert out == "from the host\n"
    assert (compose.dir / "shared" / "out.txt").read_text() == "from the container\n"
    ro = compose.run("run", "--rm", "-T", "-v", f"{compose.dir / 'shared'}:/mnt:ro", "web", "touch", "/mnt/x")
    assert ro.code != 0 and not (compose.dir / "shared" / "x").exists(), str(ro)
    compose.ok("run", "--rm", "-T", "-v", "data:/data", "web", "sh", "-c", "echo kept > /data/f")
    assert (compose.volume_dir("data") / "_data" / "f").read_text() == "kept\n"
    for name in ("undeclared", "unused"):  # a volume no service uses is not the project's (Compose's rule)
        bad = compose.run("run", "--rm", "-T", "-v", f"{name}:/x", "web", "true")
        assert bad.code != 0 and f"'{name}' is not a volume of the project" in bad.err, str(bad)

    name = compose.ok("run", "-d", "-l", "purpose=test", "web").out.strip()
    one_off = next(r for r in compose.records() if r["name"] == name)
    assert one_off["labels"]["purpose"] == "test"
    assert one_off["labels"]["com.docker.compose.oneoff"] == "True"


def test_run_aliases(compose: Compose) -> None:
    compose.write("""
        services:
          web:
            image: IMAGE
            command: ["sleep", "1000"]
            networks:
              default: {aliases: [www]}
          client:
            image: IMAGE
            command: ["sleep", "1000"]
    """)
    compose.ok("up", "-d", "client")
    network = f"{compose.name}_default"

    def addresses(name: str) -> str:
        done = compose.run("exec", "-T", "client", "nslookup", name, "127.0.0.11")
        return done.out.split("127.0.0.11", 1)[-1] if done.code == 0 else ""

    plain = compose.ok("run", "-d", "--no-deps", "web").out.strip()
    aliased = compose.ok("run", "-d", "--no-deps", "--use-aliases", "web").out.strip()
    ips = {r["name"]: r["networks"][network] for r in compose.records() if r["one_off"]}
    for alias in ("www", "web"):
        found = wait_until(lambda alias=alias: addresses(alias), f"{alias} to resolve")
        assert ips[aliased] in found and ips[plain] not in found, (alias, found, ips)
    assert ips[plain] in addresses(plain)  # its own name always


def test_ps_lists_one_off_containers_only_with_all(compose: Compose) -> None:
    compose.write(SLEEPER)
    compose.ok("up", "-d")
    name = compose.ok("run", "-d", "web").out.strip()
    names = [row["Name"] for row in compose.ps_json()]
    assert names == [f"{compose.name}-web-1"], names
    assert name not in compose.ok("ps").out and compose.ok("ps", "-q").out.count("\n") == 1
    assert sorted(row["Name"] for row in compose.ps_json("-a")) == sorted([f"{compose.name}-web-1", name])
    assert name in [row["Name"] for row in compose.ps_json("--status", "running")]
    assert name in [row["Name"] for row in compose.ps_json("--filter", "status=running")]
    assert compose.ok("ps", "--services").out == "web\n"
