"""The caller's terminal relayed to a container process's pseudo-terminal (`exec` and `run` with a TTY).

As `docker compose exec`/`run` do: the process gets a pty of its own (the runtime opens it in the
container's devpts and hands us the master); the caller's terminal is put in raw mode for the session
(so Ctrl-C, Ctrl-Z and line editing reach the process as bytes) and restored when it ends, however it
ends; the pty starts with the terminal's size and follows it on every SIGWINCH; input is copied to the
pty, the pty's output to standard output. The relay ends once the process has exited (`finished`) and
what it wrote last has been read, even if a child it left in the background still holds the pty.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import termios
import tty
from collections.abc import Iterator
from dataclasses import dataclass

import trio

from composer.runtime.console import DEFAULT_SIZE, set_size

__all__ = ["StdioPipes", "raw_mode", "relay", "terminal_size", "wants_tty"]

_CHUNK = 65536
_DRAIN_S = 0.5  # at most this long reading what the process left in the pty after its end
_WRITE_S = 5.0  # at most this long writing out what was read, once the relay is told to stop


def wants_tty(*, no_tty: bool, force: bool = False) -> bool:
    """A pty by default when standard input and output are both terminals (`-T` says no, `-t` yes)."""
    if no_tty:
        return False
    return force or (sys.stdin.isatty() and sys.stdout.isatty())


def terminal_size(fd: int = 1) -> tuple[int, int]:
    """(rows, columns) of the terminal on `fd` (else standard input's), or 24x80 like `docker run -t`."""
    for candidate in (fd, 0):
        with contextlib.suppress(OSError):
            columns, rows = os.get_terminal_size(candidate)
            if rows > 0 and columns > 0:
                return rows, columns
    return DEFAULT_SIZE


@contextlib.contextmanager
def raw_mode(fd: int = 0) -> Iterator[None]:
    """The terminal on `fd` in raw mode inside the block, its settings (and blocking mode) restored after,
    on an error or Ctrl-C too. Not a terminal: nothing to do."""
    try:
        saved = termios.tcgetattr(fd)
    except termios.error:
        yield
        return
    blocking = os.get_blocking(fd)
    tty.setraw(fd, termios.TCSANOW)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.set_blocking(fd, blocking)
        with contextlib.suppress(termios.error):
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def relay(
    master: int, finished: trio.Event, *, stdin: int = 0, stdout: int = 1, follow_size: bool = True
) -> None:
    """Copy `stdin` to the pty `master` and the pty's output to `stdout` until `finished` is set (the
    process has exited), then drain the pty; resize it on SIGWINCH. The caller keeps (and closes) its fds."""
    blocking = {fd: os.get_blocking(fd) for fd in {stdin, stdout}}
    pty_stream = trio.lowlevel.FdStream(os.dup(master))
    out_stream = trio.lowlevel.FdStream(os.dup(stdout))
    try:
        if follow_size:
            with contextlib.suppress(OSError):
                set_size(master, *terminal_size(stdout))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_copy_in, stdin, pty_stream)
            if follow_size:
                nursery.start_soon(_follow_size, master, stdout)
            nursery.start_soon(_copy_out, pty_stream, out_stream)
            await finished.wait()
            nursery.cancel_scope.cancel()
        # what the process wrote last is in the pty: read it until it is empty (or every holder of its
        # other end is gone: EIO), bounded in time for a child that still writes
        with trio.move_on_after(_DRAIN_S):
            while True:
                data = _read_ready(master)
                if not data:
                    break
                await out_stream.send_all(data)
    finally:
        for stream in (pty_stream, out_stream):
            with trio.CancelScope(shield=True):
                await stream.aclose()
        for fd, mode in blocking.items():
            with contextlib.suppress(OSError):
                os.set_blocking(fd, mode)


def _read_ready(fd: int) -> bytes:
    """What `fd` holds right now (b"" when nothing, or when its other end is gone)."""
    was = os.get_blocking(fd)
    os.set_blocking(fd, False)
    try:
        return os.read(fd, _CHUNK)
    except BlockingIOError:
        return b""
    except OSError as exc:
        if exc.errno == errno.EIO:
            return b""
        raise
    finally:
        os.set_blocking(fd, was)


async def _copy_in(stdin: int, pty_stream: trio.lowlevel.FdStream) -> None:
    async with trio.lowlevel.FdStream(os.dup(stdin)) as source:
        while True:
            try:
                data = await source.receive_some(_CHUNK)
            except trio.BrokenResourceError:
                return
            if not data:
                return  # end of input: the process keeps its pty (a terminal never ends this way)
            try:
                await _write(pty_stream, data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return


async def _copy_out(pty_stream: trio.lowlevel.FdStream, out_stream: trio.lowlevel.FdStream) -> None:
    while True:
        try:
            data = await pty_stream.receive_some(_CHUNK)
        except trio.BrokenResourceError as exc:
            if isinstance(exc.__cause__, OSError) and exc.__cause__.errno == errno.EIO:
                return  # every holder of the pty's other end has closed it
            raise
        if not data:
            return
        await _write(out_stream, data)


async def _write(stream: trio.lowlevel.FdStream, data: bytes) -> None:
    """Write all of `data`: what was read is not lost to the relay's end (a cancel), bounded in time."""
    with trio.CancelScope(shield=True, deadline=trio.current_time() + _WRITE_S):
        await stream.send_all(data)


async def _follow_size(master: int, stdout: int) -> None:
    with trio.open_signal_receiver(signal.SIGWINCH) as winches:
        async for _ in winches:
            with contextlib.suppress(OSError):
                set_size(master, *terminal_size(stdout))


# --- no pseudo-terminal (-T) while the caller is at one ---------------------------------------------------


@dataclass(eq=False)
class StdioPipes:
    """Standard input, output and error for a process that must not get a terminal (`-T`) while ours are
    terminals: a pipe stands in for each one that is a terminal (the others are given as they are), and
    `copy` moves the bytes between the pipes and our descriptors, as Docker's attach streams do."""

    given: tuple[int, int, int]  # what the process gets as its fds 0, 1, 2
    copies: tuple[tuple[int, int], ...]  # (from, to) for each pipe: ours <-> the pipe's near end
    far: list[int]  # the pipe ends handed to the process: `handed_over` closes our copies
    near: list[int]

    @classmethod
    def open(cls, fds: tuple[int, int, int] = (0, 1, 2)) -> StdioPipes:
        given, copies, far, near = list(fds), [], [], []
        for index, fd in enumerate(fds):
            if not os.isatty(fd):
                continue
            read_end, write_end = os.pipe2(os.O_CLOEXEC)
            if index == 0:
                given[0] = read_end
                copies.append((fd, write_end))
                far.append(read_end)
                near.append(write_end)
            else:
                given[index] = write_end
                copies.append((read_end, fd))
                far.append(write_end)
                near.append(read_end)
        return cls(given=(given[0], given[1], given[2]), copies=tuple(copies), far=far, near=near)

    def handed_over(self) -> None:
        """The process (or the supervisor) holds its own copies now: without ours, its end of output
        is seen as EOF, and its input's end as a closed pipe."""
        for fd in self.far:
            os.close(fd)
        self.far = []

    def close(self) -> None:
        self.handed_over()
        for fd in self.near:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.near = []

    async def copy(self, finished: trio.Event) -> None:
        """Copy until `finished` (the process has exited) and its output pipes are drained (EOF, or
        _DRAIN_S after the end for a child left holding them)."""
        blocking = {fd: os.get_blocking(fd) for pair in self.copies for fd in pair if fd not in self.near}
        try:
            async with trio.open_nursery() as nursery:
                done_outputs = [0]
                total = sum(1 for source, _ in self.copies if source in self.near)
                drained = trio.Event()
                if total == 0:
                    drained.set()

                async def one(source: int, target: int) -> None:
                    output = source in self.near
                    try:
                        async with (
                            trio.lowlevel.FdStream(os.dup(source)) as reader,
                            trio.lowlevel.FdStream(os.dup(target)) as writer,
                        ):
                            while data := await _receive(reader):
                                await _write(writer, data)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
                    finally:
                        if output:
                            done_outputs[0] += 1
                            if done_outputs[0] == total:
                                drained.set()
                        elif target in self.near:  # end of our input: the process reads EOF
                            self.near.remove(target)
                            os.close(target)

                for source, target in self.copies:
                    nursery.start_soon(one, source, target)
                await finished.wait()
                with trio.move_on_after(_DRAIN_S):
                    await drained.wait()
                nursery.cancel_scope.cancel()
        finally:
            for fd, mode in blocking.items():
                with contextlib.suppress(OSError):
                    os.set_blocking(fd, mode)


async def _receive(stream: trio.lowlevel.FdStream) -> bytes:
    try:
        return await stream.receive_some(_CHUNK)
    except trio.BrokenResourceError as exc:
        if isinstance(exc.__cause__, OSError) and exc.__cause__.errno == errno.EIO:
            return b""
        raise
