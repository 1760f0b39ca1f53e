"""`run`'s and `exec`'s command line, the one-off service `run` makes (Compose's rules), the pty master
coming back over the control socket, and the terminal relay over real ptys (os.openpty; no root)."""

from __future__ import annotations

import os
import signal
import socket
import termios
from pathlib import Path

import pytest
import trio

from composer.app.lifecycle import one_off_service
from composer.app.terminal import raw_mode, relay, terminal_size
from composer.cli import build_parser
from composer.engine import protocol
from composer.errors import UsageError
from composer.options import RunArgs
from composer.runtime.console import get_size, set_size
from composer.spec.loader import LoadOptions, load_project
from composer.spec.model import Port, Project

PROJECT = """
services:
  web:
    image: busybox
    command: ["httpd", "-f"]
    ports: ["8080:80"]
    labels: {keep: "yes", tier: "front"}
    restart: always
    container_name: the-web
    volumes: [data:/data]
    networks:
      default: {aliases: [www]}
volumes:
  data: {}
"""


def project() -> Project:
    options = LoadOptions(
        cwd="/w", environ={"HOME": "/root"}, files=("-",), stdin_text=PROJECT, project_name="p"
    )
    return load_project(options, lambda _: None).project


def adapt(*, tty: bool = False, cwd: str = "/here", **flags: object) -> object:
    p = project()
    args = RunArgs(service="web", **flags)  # type: ignore[arg-type]
    return one_off_service(
        p, p.service("web"), args, {"HOME": "/home/me", "FROM_SHELL": "x"}, cwd=cwd, tty=tty
    )


# --- the command line ---------------------------------------------------------------------------------------


def test_run_flags_parse_as_in_compose() -> None:
    args = build_parser().parse_args([
        "run", "-p", "127.0.0.1:8080:80", "--publish", "9090:90/udp", "-v", "./src:/src:ro",
        "--volume", "data:/d", "-l", "a=b", "--use-aliases", "-T", "--rm", "web", "sh", "-c", "echo -p -v",
    ])  # fmt: skip
    assert args.publish == ["127.0.0.1:8080:80", "9090:90/udp"]
    assert args.volumes == ["./src:/src:ro", "data:/d"]
    assert args.labels == ["a=b"] and args.use_aliases and args.no_tty and args.remove
    assert args.service == "web" and args.run_command == ["sh", "-c", "echo -p -v"]  # the command's own flags
    # -p after `run` is --publish: the project name goes before the command, or as --project-name
    assert build_parser().parse_args(["-p", "proj", "run", "web"]).project_name == "proj"
    assert build_parser().parse_args(["run", "--project-name", "proj", "web"]).project_name == "proj"
    forced = build_parser().parse_args(["run", "-t", "-i", "-P", "web"])
    assert forced.tty and forced.interactive and forced.service_ports
    # elsewhere -p is still the project name
    assert build_parser().parse_args(["exec", "-p", "proj", "-T", "web", "true"]).project_name == "proj"


def test_ps_filter_is_status(capsys: pytest.CaptureFixture[str]) -> None:
    from composer.cli import main

    assert main(["ps", "--filter", "state=running"]) == 16
    assert "unknown filter state" in capsys.readouterr().err
    assert main(["ps", "--filter", "running"]) == 16
    assert "KEY=VAL" in capsys.readouterr().err


# --- the one-off service ------------------------------------------------------------------------------------


def test_one_off_drops_ports_restart_and_name_and_keeps_the_rest() -> None:
    service = adapt()
    assert service.ports == () and service.restart == "no" and service.container_name is None  # type: ignore[attr-defined]
    assert service.command == ("httpd", "-f") and service.tty is False  # type: ignore[attr-defined]
    assert [v.target for v in service.volumes] == ["/data"]  # type: ignore[attr-defined]


def test_service_ports_and_publish() -> None:
    assert adapt(service_ports=True).ports == (Port(target=80, published="8080"),)  # type: ignore[attr-defined]
    published = adapt(publish=("127.0.0.1:9000:90", "53/udp")).ports  # type: ignore[attr-defined]
    assert published == (
        Port(host_ip="127.0.0.1", target=90, published="9000"),
        Port(target=53, protocol="udp"),
    )
    with pytest.raises(UsageError, match="--service-ports and --publish are incompatible"):
        adapt(service_ports=True, publish=("1:1",))
    with pytest.raises(UsageError, match=r"run --publish '70000:80': published port must be 1-65535"):
        adapt(publish=("70000:80",))


def test_volumes_binds_resolve_against_the_current_directory_and_named_ones_must_be_declared() -> None:
    mounts = adapt(volumes=("./src:/src:ro", "~/cache:/cache", "data:/more", "/anon"), cwd="/here").volumes  # type: ignore[attr-defined]
    by_target = {m.target: m for m in mounts}
    assert (
        by_target["/src"].type == "bind"
        and by_target["/src"].source == "/here/src"
        and by_target["/src"].read_only
    )
    assert by_target["/cache"].source == "/home/me/cache"
    assert by_target["/more"].type == "volume" and by_target["/more"].source == "data"
    assert by_target["/anon"].type == "volume" and by_target["/anon"].source is None
    with pytest.raises(UsageError, match="'nope' is not a volume of the project"):
        adapt(volumes=("nope:/x",))
    with pytest.raises(UsageError, match="the target 'rel' is not an absolute path"):
        adapt(volumes=("/a:rel",))
    with pytest.raises(UsageError, match="run --volume 'a::b'"):
        adapt(volumes=("a::b",))


def test_labels_env_and_aliases() -> None:
    service = adapt(labels=("tier=back", "new=1"), env=("FROM_SHELL", "SET=v", "MISSING"))
    assert dict(service.labels) == {"keep": "yes", "tier": "back", "new": "1"}  # type: ignore[attr-defined]
    env = dict(service.environment)  # type: ignore[attr-defined]
    assert env["FROM_SHELL"] == "x" and env["SET"] == "v" and "MISSING" not in env
    with pytest.raises(UsageError, match="run --label 'bad': expected KEY=VALUE"):
        adapt(labels=("bad",))
    # on its networks under its own name only, unless --use-aliases (Compose's getAliases)
    assert [n.aliases for n in service.networks] == [()]  # type: ignore[attr-defined]
    assert [n.aliases for n in adapt(use_aliases=True).networks] == [("web", "www")]  # type: ignore[attr-defined]
    assert adapt(tty=True).tty is True  # type: ignore[attr-defined]


# --- the pty master over the control socket ----------------------------------------------------------------


def test_a_frame_brings_descriptors_back_to_the_client(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    read_end, write_end = os.pipe()

    async def main() -> list[dict[str, object]]:
        listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await listener.bind(str(path))
        listener.listen(1)
        seen: list[dict[str, object]] = []

        async def serve() -> None:
            conn, _ = await listener.accept()
            stream = trio.SocketStream(conn)
            request, given = await protocol.receive_request(stream)
            assert given == []
            assert request.op == "run" and request.tty and request.tty_size == (40, 120)
            await protocol.send_frame(stream, {"event": "x"})
            await protocol.send_frame(stream, {"started": "p-web-run-1", "terminal": True}, [write_end])
            await protocol.send_frame(stream, {"result": 3, "error": None})
            await stream.aclose()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            code, error = await protocol.call(
                protocol.connect(path), protocol.Request(op="run", tty=True, tty_size=(40, 120)), seen.append
            )
            assert (code, error) == (3, None)
        listener.close()
        return seen

    try:
        seen = trio.run(main)
        assert seen[0] == {"event": "x"}
        fds = seen[1].pop("fds")
        assert seen[1] == {"started": "p-web-run-1", "terminal": True}
        assert isinstance(fds, list) and len(fds) == 1
        os.write(fds[0], b"through the passed descriptor")  # type: ignore[arg-type]
        os.close(fds[0])  # type: ignore[arg-type]
        os.close(write_end)
        write_end = -1
        assert os.read(read_end, 100) == b"through the passed descriptor"
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


# --- the relay, over real ptys ------------------------------------------------------------------------------


def test_relay_copies_both_ways_follows_the_size_and_drains_after_the_end() -> None:
    """A fake `process` on the slave of one pty (the container's), the caller's terminal on another:
    input goes in, output comes out, SIGWINCH carries the caller's new size, and what the process
    wrote last still arrives after `finished`."""
    proc_master, proc_slave = os.openpty()  # the container's pty: the relay holds its master
    term_master, term_slave = os.openpty()  # the caller's terminal: the relay's stdin and stdout
    set_size(term_slave, 33, 101)

    async def main() -> bytes:
        finished = trio.Event()
        out = b""

        async def process() -> None:
            await trio.sleep(0.1)
            assert get_size(proc_slave) == (33, 101)  # the size at the start
            set_size(term_master, 50, 160)
            os.kill(os.getpid(), signal.SIGWINCH)
            with trio.fail_after(5):
                while get_size(proc_slave) != (50, 160):
                    await trio.sleep(0.02)
            await trio.lowlevel.wait_readable(proc_slave)
            line = os.read(proc_slave, 100)  # what the caller typed, through the relay
            os.write(proc_slave, b"echo:" + line + b"|last words")
            finished.set()

        async def caller_terminal() -> None:
            nonlocal out
            os.write(term_master, b"typed")
            while b"last words" not in out:
                await trio.lowlevel.wait_readable(term_master)
                out += os.read(term_master, 1000)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(process)
                nursery.start_soon(caller_terminal)
                await relay(proc_master, finished, stdin=term_slave, stdout=term_slave)
        return out

    try:
        for fd in (proc_slave, term_slave):
            attrs = termios.tcgetattr(fd)
            attrs[3] &= ~(termios.ECHO | termios.ICANON)  # no echo, no line buffering: bytes as sent
            attrs[1] &= ~termios.OPOST
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
        out = trio.run(main)
        assert out == b"echo:typed|last words"
        assert os.get_blocking(term_slave)  # the caller's descriptors are left as they were
    finally:
        for fd in (proc_master, proc_slave, term_master, term_slave):
            os.close(fd)


def test_raw_mode_is_restored_after_an_error() -> None:
    master, slave = os.openpty()
    try:
        before = termios.tcgetattr(slave)
        with pytest.raises(KeyboardInterrupt), raw_mode(slave):
            raw = termios.tcgetattr(slave)
            assert not raw[3] & termios.ICANON and not raw[3] & termios.ECHO and not raw[3] & termios.ISIG
            raise KeyboardInterrupt
        assert termios.tcgetattr(slave) == before
        r, w = os.pipe()  # not a terminal: nothing to do
        with raw_mode(r):
            pass
        os.close(r)
        os.close(w)
        set_size(slave, 12, 34)
        assert terminal_size(slave) == (12, 34)
    finally:
        os.close(master)
        os.close(slave)
