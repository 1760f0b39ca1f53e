"""A small stdlib-only fork-server, started before the heavy imports (DESIGN.md rule 5).

`ForkServer.start()` makes the calling process a child subreaper and forks a helper that stays
single-threaded. For each request (a pickled `LaunchPlan` plus descriptors passed with SCM_RIGHTS), the
helper forks an intermediate, which makes the namespaces and forks the container's process, reports
its pid and exits. The container's process is then re-parented to the caller (the subreaper), which
watches it through a pidfd. Requests are answered in order, one at a time; the pid is answered as soon
as the intermediate reports it, so for a moment the container may still be the intermediate's child
(`Process._reap` waits that moment out).

Wire format (SOCK_SEQPACKET, one message each way):
  request: pickle((plan, roles)) + SCM_RIGHTS fds, roles[i] naming fds[i] ("stdin", "go", "err", ...)
  reply:   b"ok <pid>" or b"err\\0<stage>\\0<errno>\\0<detail>"
"""

from __future__ import annotations

import array
import contextlib
import os
import pickle
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from composer.runtime import libc
from composer.runtime.init import decode_failure, run_intermediate
from composer.runtime.plan import LaunchPlan

__all__ = ["ForkServer", "LaunchFailed", "decode_reply", "encode_request"]

_MAX_MESSAGE = 1 << 20
_MAX_FDS = 16


class LaunchFailed(Exception):
    """The intermediate failed before the container's process existed (stage, errno, detail)."""

    def __init__(self, stage: str, err: int, detail: str) -> None:
        super().__init__(stage, err, detail)
        self.stage, self.err, self.detail = stage, err, detail


def encode_request(plan: LaunchPlan, fds: dict[str, int]) -> tuple[bytes, list[int]]:
    roles = sorted(fds)
    return pickle.dumps((plan, tuple(roles)), protocol=pickle.HIGHEST_PROTOCOL), [fds[r] for r in roles]


def decode_reply(data: bytes) -> int:
    """The container's pid, or LaunchFailed."""
    if data.startswith(b"ok "):
        return int(data[3:])
    if data.startswith(b"err\0"):
        raise LaunchFailed(*decode_failure(data[4:]))
    raise LaunchFailed("forkserver", 0, "the fork-server is gone" if not data else f"bad reply {data[:40]!r}")


@dataclass(slots=True)
class ForkServer:
    """The caller's end. `sock` is a blocking SOCK_SEQPACKET socket; `pid` is the helper's pid."""

    sock: socket.socket
    pid: int

    @classmethod
    def start(cls) -> ForkServer:
        """Call early, before trio and friends are imported: the helper is a fork of this process."""
        libc.prctl(libc.PR_SET_CHILD_SUBREAPER, 1)
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:  # the helper
            try:
                parent.close()
                _serve(child)
            finally:
                os._exit(0)
        child.close()
        return cls(sock=parent, pid=pid)

    def launch(self, plan: LaunchPlan, fds: dict[str, int]) -> int:
        """Blocking form of one request (for the sync wrapper and benchmarks)."""
        data, fd_list = encode_request(plan, fds)
        socket.send_fds(self.sock, [data], fd_list)
        return decode_reply(self.sock.recv(4096))

    def close(self) -> None:
        """Stop the helper (it exits on EOF) and reap it."""
        if self.sock.fileno() < 0:
            return
        self.sock.close()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


def _serve(sock: socket.socket) -> NoReturn:
    libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if os.getppid() == 1:
        os._exit(0)
    while True:
        try:
            message, fds, _flags, _addr = socket.recv_fds(sock, _MAX_MESSAGE, _MAX_FDS)
        except InterruptedError:
            continue
        if not message:
            os._exit(0)
        try:
            reply = _handle(message, fds, sock.send)
        except Exception as exc:  # a bad request must not end the server
            reply = b"err\0forkserver\x000\0" + repr(exc).encode(errors="replace")
        finally:
            for fd in fds:
                os.close(fd)
        if reply:
            sock.send(reply)


def _handle(message: bytes, fds: list[int], send: Callable[[bytes], object]) -> bytes:
    """One request; returns the reply still to send (b"" once `send` has been called with it). A
    success is sent as soon as the intermediate reports the pid (one write, whole in one read): the
    caller goes on while the intermediate exits and is reaped here (~2 ms on a loaded machine)."""
    plan, roles = pickle.loads(message)
    if not isinstance(plan, LaunchPlan) or len(roles) != len(fds):
        return b"err\0forkserver\x000\0malformed request"
    by_role = dict(zip(roles, fds, strict=True))
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        run_intermediate(plan, by_role, write_end)
    os.close(write_end)
    chunks = array.array("b")
    sent = False
    try:
        while True:
            chunk = os.read(read_end, 4096)
            if not chunk:
                break
            if not chunks and chunk.startswith(b"ok "):
                send(chunk)
                sent = True
            chunks.frombytes(chunk)
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    if sent:
        return b""
    return chunks.tobytes() or b"err\0intermediate\x000\0exited without a report"
