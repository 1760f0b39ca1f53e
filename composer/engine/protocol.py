"""The control socket's wire format and its client: what every lifecycle command imports (it stays
light: no supervisor, executor or kernel modules). The server is composer.engine.control.

A request is one frame; the answer is frames of `{"event": ...}`, `{"warning": ...}`,
`{"change": ...}`, `{"watching": True}` or `{"started": name}`, and a last `{"result": exit code,
"error": text or None}`. A frame is a 4-byte big-endian length and a pickle (both ends are this
package; the socket admits only root). A `run` sends the caller's stdio descriptors with its request
(SCM_RIGHTS on the frame's first bytes); a `run` with a TTY gets the pty's master back the same way,
with its `{"started": name, "terminal": True}` frame (the client sees it as the message's "fds").
"""

from __future__ import annotations

import array
import os
import pickle
import signal
import socket
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from composer.errors import ComposerError
from composer.spec.model import Project

if TYPE_CHECKING:
    import trio

    from composer.engine.plan import UpOptions

__all__ = [
    "Request", "call", "connect", "exchange", "receive_frame", "receive_request", "send_frame", "socket_path"
]  # fmt: skip

_HEADER = struct.Struct(">I")
_MAX_FRAME = 256 << 20


def socket_path(project_dir: Path) -> Path:
    return project_dir / "supervisor.sock"


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    op: str
    project: Project | None = None
    environ: Mapping[str, str] = field(default_factory=dict)
    services: tuple[str, ...] = ()
    up: UpOptions | None = None  # `up`'s options; None: the defaults (the client need not import plan)
    timeout: float | None = None  # -t
    wait: bool = False  # up --wait
    wait_timeout: float | None = None
    signal: int = int(signal.SIGKILL)  # kill -s
    volumes: bool = False  # down -v, rm -v
    remove_orphans: bool = False
    rmi: str | None = None
    name: str | None = None  # run --name
    detach: bool = False  # run -d
    remove: bool = False  # run --rm
    compose_files: tuple[str, ...] = ()  # for the com.docker.compose.project.config_files label
    tty: bool = False  # run: a pty whose master comes back to the client (it relays its terminal)
    tty_size: tuple[int, int] = (24, 80)  # run: the pty's first size (rows, columns)


# -- frames ------------------------------------------------------------------------------------------------


def _frame(message: Any) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


def _rights(fds: Sequence[int]) -> list[tuple[int, int, array.array[int]]]:
    return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]


async def send_frame(stream: trio.SocketStream, message: Any, fds: Sequence[int] = ()) -> None:
    frame = _frame(message)
    if fds:  # the descriptors ride on the frame's first bytes (a `run` hands over its stdio)
        sent = await stream.socket.sendmsg([frame], _rights(fds))
        frame = frame[sent:]
    if frame:
        await stream.send_all(frame)


def _passed_fds(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    """The descriptors an SCM_RIGHTS message carried (the receiver owns them)."""
    out: list[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            received = array.array("i")
            received.frombytes(payload[: len(payload) - len(payload) % received.itemsize])
            out += list(received)
    return out


async def receive_request(stream: trio.SocketStream) -> tuple[Any, list[int]]:
    """The first frame of a connection, with the descriptors sent along with it."""
    fds: list[int] = []
    data, ancillary, _flags, _addr = await stream.socket.recvmsg(1 << 16, socket.CMSG_SPACE(16 * 4))
    fds += _passed_fds(ancillary)
    try:
        if len(data) < _HEADER.size:
            more = await _receive_exactly(stream, _HEADER.size - len(data))
            if more is None:
                return None, fds
            data += more
        (size,) = _HEADER.unpack(data[: _HEADER.size])
        if size > _MAX_FRAME:
            raise ComposerError(f"control socket: frame of {size} bytes refused")
        body = data[_HEADER.size :]
        if len(body) < size:
            more = await _receive_exactly(stream, size - len(body))
            if more is None:
                return None, fds
            body += more
        return pickle.loads(body), fds
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


async def _receive_exactly(stream: trio.SocketStream, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


async def receive_frame(stream: trio.SocketStream, fds: list[int] | None = None) -> Any:
    """The next frame; with `fds`, the descriptors sent with it are appended there (the caller owns
    them), else refused by the kernel (closed)."""
    if fds is None:
        header = await _receive_exactly(stream, _HEADER.size)
    else:
        header = await _receive_header_with_fds(stream, fds)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > _MAX_FRAME:
        raise ComposerError(f"control socket: frame of {size} bytes refused")
    data = await _receive_exactly(stream, size)
    if data is None:
        return None
    return pickle.loads(data)


async def _receive_header_with_fds(stream: trio.SocketStream, fds: list[int]) -> bytes | None:
    data = b""
    while len(data) < _HEADER.size:
        chunk, ancillary, _flags, _addr = await stream.socket.recvmsg(
            _HEADER.size - len(data), socket.CMSG_SPACE(16 * 4)
        )
        fds += _passed_fds(ancillary)
        if not chunk:
            return None
        data += chunk
    return data


# -- the client ----------------------------------------------------------------------------------------------


async def call(
    sock: socket.socket,
    request: Request,
    on_message: Callable[[dict[str, Any]], None],
    fds: Sequence[int] = (),
) -> tuple[int, str | None]:
    """Send `request` on the connected `sock` (with `fds`, for `run`); hand every message to
    `on_message`; return (exit code, error). Cancelling the call closes the connection: a `run` or
    `watch` then ends on the other side."""
    import trio

    stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
    async with stream:
        await send_frame(stream, request, fds)
        while True:
            received: list[int] = []
            try:
                message = await receive_frame(stream, received)
            except BaseException:
                for fd in received:
                    os.close(fd)
                raise
            if received:
                if isinstance(message, dict):
                    message = {**message, "fds": received}  # on_message owns them now
                else:
                    for fd in received:
                        os.close(fd)
            if message is None:
                return _GONE
            if "result" in message:
                return int(message["result"]), message.get("error")
            on_message(message)


def exchange(
    sock: socket.socket,
    request: Request,
    on_message: Callable[[dict[str, Any]], None],
    fds: Sequence[int] = (),
) -> tuple[int, str | None]:
    """`call` without trio, for the commands that only send one request and print what comes back
    (trio's import is ~70 ms of such a command). Ctrl-C closes the connection, as cancelling does."""
    with sock:
        frame = _frame(request)
        if fds:
            frame = frame[sock.sendmsg([frame], _rights(fds)) :]
        sock.sendall(frame)
        reader = sock.makefile("rb")
        with reader:
            while True:
                header = reader.read(_HEADER.size)
                if len(header) < _HEADER.size:
                    return _GONE
                (size,) = _HEADER.unpack(header)
                if size > _MAX_FRAME:
                    raise ComposerError(f"control socket: frame of {size} bytes refused")
                data = reader.read(size)
                if len(data) < size:
                    return _GONE
                message = pickle.loads(data)
                if "result" in message:
                    return int(message["result"]), message.get("error")
                on_message(message)


def connect(path: Path) -> socket.socket:
    """A connection to the supervisor's socket (FileNotFoundError / ConnectionRefusedError when
    none listens there)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(str(path))
    except BaseException:
        sock.close()
        raise
    return sock


_GONE = (1, "the supervisor went away before answering")
