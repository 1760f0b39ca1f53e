"""The runtime on the real kernel: a pty for the container's process; images taller than mount(2) takes."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from composer.runtime import libc, rootfs
from composer.runtime.console import Terminal
from composer.runtime.launch import Container, ContainerStartError, ExitStatus, Runtime
from composer.runtime.spec import ContainerSpec, Stdio
from composer.storage.layout import Layout
from tests.privileged.test_runtime import sh


@pytest.fixture
def spec(busybox_rootfs: Path) -> ContainerSpec:
    return ContainerSpec(id="c1", lower_dirs=(busybox_rootfs,), argv=("true",))


# --- tty ------------------------------------------------------------------------------------------------


class Screen:
    """What came out of a terminal's master, read until EIO (every slave closed), and a way to wait on it."""

    def __init__(self, terminal: Terminal) -> None:
        self.stream = trio.lowlevel.FdStream(os.dup(terminal.fd))
        self.data = b""
        self._changed = trio.Event()

    @property
    def lines(self) -> list[str]:
        return self.data.decode(errors="replace").replace("\r\n", "\n").splitlines()

    async def pump(self) -> None:
        async with self.stream:
            while True:
                try:
                    chunk = await self.stream.receive_some(65536)
                except trio.BrokenResourceError:  # EIO: the last process holding the slave is gone
                    break
                if not chunk:
                    break
                self.data += chunk
                self._changed.set()
                self._changed = trio.Event()
        self._changed.set()

    async def until(self, condition: Callable[[list[str]], bool]) -> None:
        while not condition(self.lines):
            await self._changed.wait()

    async def type(self, text: str) -> None:
        await self.stream.send_all(text.encode())


async def _run_tty(
    runtime: Runtime, spec: ContainerSpec, during: Callable[[Container, Screen], object] | None = None
) -> tuple[ExitStatus, list[str]]:
    container = await runtime.start(spec)
    assert container.terminal is not None
    try:
        with container.terminal as terminal:
            screen = Screen(terminal)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(screen.pump)
                if during is not None:
                    await during(container, screen)  # type: ignore[misc]
                status = await container.wait()
    finally:
        await container.kill_and_reap()
        runtime.remove(spec.id)
    return status, screen.lines


def test_tty_is_the_containers_own_pts_and_controlling_terminal(
    runtime: Runtime, spec: ContainerSpec
) -> None:
    script = (
        "tty; [ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo isatty; t=$(tty); [ -c $t ] && echo exists;"
        "ls /dev/pts | tr '\\n' ' '; echo; stty size; stat -L -c %t:%T /dev/console $t;"
        "cat /proc/self/stat | cut -d' ' -f6,7; echo to-stderr >&2; exit 7"
    )
    tty_spec = replace(spec, argv=("sh", "-c", script), tty=True, tty_size=(30, 100))
    status, lines = trio.run(_run_tty, runtime, tty_spec)
    assert status == ExitStatus(7)
    path, isatty, exists, pts, size, console, slave, session_and_tty, stderr = lines
    assert (path, isatty, exists, size) == ("/dev/pts/0", "isatty", "exists", "30 100")
    assert pts.split() == ["0", "ptmx"]  # its own devpts instance: only its own terminal
    assert console == slave  # /dev/console is the pty too, as with runc
    session, tty_nr = (int(v) for v in session_and_tty.split())
    assert session == 1 and os.major(tty_nr) == 136 and os.minor(tty_nr) == 0  # setsid + TIOCSCTTY
    assert stderr == "to-stderr"


def test_tty_default_size_resize_and_input(runtime: Runtime, spec: ContainerSpec) -> None:
    script = "stty size; read line; echo got:$line; stty size; exit 3"
    seen: list[tuple[int, int]] = []

    async def talk(container: Container, screen: Screen) -> None:
        await screen.until(lambda lines: "24 80" in lines)  # the default size
        assert container.terminal is not None
        container.terminal.resize(50, 132)
        seen.append(container.terminal.size())
        await screen.type("hello there\n")

    status, lines = trio.run(_run_tty, runtime, replace(spec, argv=("sh", "-c", script), tty=True), talk)
    assert status == ExitStatus(3)
    assert seen == [(50, 132)]
    assert lines == ["24 80", "hello there", "got:hello there", "50 132"]  # the terminal echoes the input


def test_tty_sigwinch_and_signal_exit(runtime: Runtime, spec: ContainerSpec) -> None:
    script = "trap 'stty size; exit 0' WINCH; echo ready; while :; do sleep 0.05; done"

    async def resize(container: Container, screen: Screen) -> None:
        await screen.until(lambda lines: "ready" in lines)
        assert container.terminal is not None
        container.terminal.resize(33, 99)

    status, lines = trio.run(_run_tty, runtime, replace(spec, argv=("sh", "-c", script), tty=True), resize)
    assert status == ExitStatus(0) and lines == ["ready", "33 99"]

    async def kill(container: Container, screen: Screen) -> None:
        await screen.until(lambda lines: "ready" in lines)
        container.signal(signal.SIGKILL)

    sleeper = replace(spec, argv=("sh", "-c", "echo ready; sleep 100"), tty=True)
    status, _ = trio.run(_run_tty, runtime, sleeper, kill)
    assert status == ExitStatus(137, signal.SIGKILL)


def test_tty_with_init_and_a_failing_start(runtime: Runtime, spec: ContainerSpec, layout: Layout) -> None:
    with_init = replace(spec, argv=("sh", "-c", "tty; stty size; cat /proc/1/comm"), tty=True, init=True)
    status, lines = trio.run(_run_tty, runtime, with_init)
    assert status == ExitStatus(0) and lines == ["/dev/pts/0", "24 80", "docker-init"]
    with pytest.raises(ContainerStartError, match=r"container c1: exec: ENOENT \(nosuch\)"):
        trio.run(_run_tty, runtime, replace(spec, argv=("nosuch",), tty=True))
    assert not layout.container_dir(spec.id).exists()


def test_exec_with_a_tty(runtime: Runtime, spec: ContainerSpec) -> None:
    results: list[tuple[ExitStatus, list[str]]] = []

    async def main() -> None:
        container = await runtime.start(replace(spec, argv=("sleep", "100")))
        try:
            script = "tty; [ -t 0 ] && echo isatty; stty size; id -u; stat -c %u $(tty); read x; exit $x"
            process = await runtime.start_exec(container, ("sh", "-c", script), user="app", tty=True,
                                               tty_size=(40, 120))  # fmt: skip
            assert process.terminal is not None
            with process.terminal as terminal:
                screen = Screen(terminal)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(screen.pump)
                    await screen.until(lambda lines: len(lines) >= 5)
                    await screen.type("9\n")
                    status = await process.wait()
            results.append((status, screen.lines))
            with pytest.raises(Exception, match="exclude each other"):
                await runtime.start_exec(container, ("true",), tty=True, stdio=Stdio(stdout=1))
        finally:
            await container.kill_and_reap()
            runtime.remove(spec.id)

    trio.run(main)
    [(status, lines)] = results
    assert status == ExitStatus(9)
    assert lines == ["/dev/pts/0", "isatty", "40 120", "1000", "1000", "9"]


# --- image layers ---------------------------------------------------------------------------------------


def _layers(base: Path, count: int) -> list[Path]:
    """`count` small layers, top first: layer i adds /layers/file-i and writes i to /layers/shared."""
    out = []
    for i in range(count):
        # long names, like the store's <root>/images/layers/<64 hex>, so that mount(2) could not take them
        layer = base / f"{i:03d}-{'0123456789abcdef' * 4}"
        (layer / "layers").mkdir(parents=True)
        (layer / "layers" / f"file-{i}").write_text(f"{i}\n")
        (layer / "layers" / "shared").write_text(f"{i}\n")
        out.append(layer)
    return out[::-1]


def test_120_layers_through_lowerdir_plus(runtime: Runtime, spec: ContainerSpec, tmp_path: Path) -> None:
    if not rootfs.lowerdir_plus_supported():
        pytest.skip("this kernel's overlayfs has no lowerdir+ (Linux 6.8)")
    layers = _layers(tmp_path / "layers", 120)
    lower = (*layers, *spec.lower_dirs)  # busybox at the bottom
    folder = runtime.layout.container_dir(spec.id)  # type: ignore[attr-defined]
    assert not rootfs.fits_mount_data(tuple(map(str, lower)), str(folder / "upper"), str(folder / "work"))
    script = (
        "ls /layers | grep -c '^file-'; cat /layers/shared /layers/file-0 /layers/file-119;"
        "echo new > /layers/file-5; cat /layers/file-5"
    )
    out = sh(runtime, spec, script, lower_dirs=lower)
    assert out.split() == ["120", "119", "0", "119", "new"]  # all 120; the top layer (119) wins


def test_one_and_few_layers_still_use_mount2(runtime: Runtime, spec: ContainerSpec, tmp_path: Path) -> None:
    assert sh(runtime, spec, "echo ok") == "ok\n"
    layers = _layers(tmp_path / "layers", 3)
    lower = (*layers, *spec.lower_dirs)
    folder = runtime.layout.container_dir(spec.id)  # type: ignore[attr-defined]
    assert rootfs.fits_mount_data(tuple(map(str, lower)), str(folder / "upper"), str(folder / "work"))
    assert sh(runtime, spec, "ls /layers | tr '\\n' ' '; cat /layers/shared", lower_dirs=lower).split() == [
        "file-0", "file-1", "file-2", "shared", "2",
    ]  # fmt: skip


def test_lowerdir_plus_mount_on_its_own(tmp_path: Path) -> None:
    """The new-API path directly, on a small stack too (the runtime only takes it for tall ones)."""
    if not rootfs.lowerdir_plus_supported():
        pytest.skip("this kernel's overlayfs has no lowerdir+ (Linux 6.8)")
    layers = [str(p) for p in _layers(tmp_path / "layers", 2)]
    for name in ("upper", "work", "merged"):
        (tmp_path / name).mkdir()
    merged = str(tmp_path / "merged")
    rootfs.mount_overlay_fsconfig(merged, tuple(layers), str(tmp_path / "upper"), str(tmp_path / "work"))
    try:
        assert sorted(os.listdir(f"{merged}/layers")) == ["file-0", "file-1", "shared"]
        assert Path(f"{merged}/layers/shared").read_text() == "1\n"
        line = next(line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                    if line.split()[4] == merged)  # fmt: skip
        assert " - overlay overlay " in line
    finally:
        libc.umount2(merged, libc.MNT_DETACH)
    with pytest.raises(OSError, match=r"fsconfig: ENOENT \(lowerdir\+=/nonexistent"):
        rootfs.mount_overlay_fsconfig(
            merged, ("/nonexistent",), str(tmp_path / "upper"), str(tmp_path / "work")
        )
