"""A small stdlib-only fork-server, started before the heavy imports (DESIGN.md rule 5).

`ForkServer.start()` makes the calling process a child subreaper and forks a helper that stays
single-threaded. For each request (a pickled `LaunchPlan` plus descriptors passed with SCM_RIGHTS), the
helper makes the container's process:
- a start into new namespaces (the usual case): the helper clones the PID 1 itself, straight into
  them and as a child of the caller (`libc.clone_sibling`: CLONE_NEW* | CLONE_PARENT), and answers
  with its pid at once;
- a start that enters another container's namespaces, and an exec: the helper forks an intermediate,
  which enters them (setns would change the helper), makes the others, forks the container's
  process, reports its pid and exits. The container's process is then re-parented to the caller (the
  subreaper), which watches it through a pidfd.

Several requests may be in flight: the helper forks each request's intermediate at once and goes back
to its socket, and answers each as its intermediate reports (so the intermediates of many containers
run side by side, on every core, while the caller prepares the next). An intermediate's success is
answered as soon as the pid is reported, so for a moment the container may still be the exiting
intermediate's child (`Process._reap` waits that moment out).

Wire format (SOCK_SEQPACKET, one message each way; ID a u64 the caller chooses, echoed back):
  request: ID + pickle((plan, roles)) + SCM_RIGHTS fds, roles[i] naming fds[i] ("stdin", "go", ...)
  reply:   ID + b"ok <pid>", or ID + b"err\\0<stage>\\0<errno>\\0<detail>"
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import socket
import struct
from dataclasses import dataclass, field
from typing import NoReturn

from composer.runtime import libc
from composer.runtime.init import (
    decode_failure,
    encode_failure,
    run_container_process,
    run_intermediate,
    starts_directly,
)
from composer.runtime.plan import LaunchPlan

__all__ = ["ForkServer", "LaunchFailed", "decode_reply", "encode_request", "split_id"]

_MAX_MESSAGE = 1 << 20
_MAX_FDS = 16


class LaunchFailed(Exception):
    """The intermediate failed before the container's process existed (stage, errno, detail)."""

    def __init__(self, stage: str, err: int, detail: str) -> None:
        super().__init__(stage, err, detail)
        self.stage, self.err, self.detail = stage, err, detail


_ID = struct.Struct("=Q")


def encode_request(request_id: int, plan: LaunchPlan, fds: dict[str, int]) -> tuple[bytes, list[int]]:
    roles = sorted(fds)
    body = pickle.dumps((plan, tuple(roles)), protocol=pickle.HIGHEST_PROTOCOL)
    return _ID.pack(request_id) + body, [fds[r] for r in roles]


def split_id(data: bytes) -> tuple[int | None, bytes]:
    """A message (request or answer) -> (its request id, the rest); (None, b"") for EOF."""
    if len(data) < _ID.size:
        return None, b""
    return _ID.unpack_from(data)[0], data[_ID.size :]


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

    def close(self) -> None:
        """Stop the helper (it exits on EOF) and reap it."""
        if self.sock.fileno() < 0:
            return
        self.sock.close()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


@dataclass(slots=True)
class _Flight:
    """A request whose intermediate has not finished: its id, pid, report pipe, what it said so far."""

    request_id: int
    pid: int
    report: int
    said: bytearray = field(default_factory=bytearray)
    answered: bool = False


def _serve(sock: socket.socket) -> NoReturn:
    libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if os.getppid() == 1:
        os._exit(0)
    flights: dict[int, _Flight] = {}  # by report fd
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    while True:
        try:
            events = poller.poll()
        except InterruptedError:
            continue
        for fd, _mask in events:
            if fd == sock.fileno():
                flight = _receive(sock)
                if flight is not None:
                    flights[flight.report] = flight
                    poller.register(flight.report, select.POLLIN)
                continue
            flight = flights[fd]
            chunk = os.read(fd, 4096)
            if chunk:
                if not flight.said and chunk.startswith(b"ok "):
                    sock.send(_ID.pack(flight.request_id) + chunk)  # the pid (one write: whole here)
                    flight.answered = True
                flight.said += chunk
                continue
            poller.unregister(fd)
            os.close(fd)
            del flights[fd]
            os.waitpid(flight.pid, 0)
            if not flight.answered:
                said = bytes(flight.said) or b"err\0intermediate\x000\0exited without a report"
                sock.send(_ID.pack(flight.request_id) + said)


def _receive(sock: socket.socket) -> _Flight | None:
    """Take one request and start it; None if it was answered at once (a direct start, a bad request),
    else its intermediate's flight. EOF on the socket (the caller is gone) ends the helper."""
    while True:
        try:
            message, fds, _flags, _addr = socket.recv_fds(sock, _MAX_MESSAGE, _MAX_FDS)
            break
        except InterruptedError:
            continue
    if not message:
        os._exit(0)
    request_id, body = split_id(message)
    try:
        return _start(sock, request_id or 0, body, fds)
    except Exception as exc:  # a bad request must not end the server
        sock.send(_ID.pack(request_id or 0) + b"err\0forkserver\x000\0" + repr(exc).encode(errors="replace"))
        return None
    finally:
        for fd in fds:
            os.close(fd)


def _start(sock: socket.socket, request_id: int, body: bytes, fds: list[int]) -> _Flight | None:
    plan, roles = pickle.loads(body)
    if not isinstance(plan, LaunchPlan) or len(roles) != len(fds):
        raise ValueError("malformed request")
    by_role = dict(zip(roles, fds, strict=True))
    if starts_directly(plan):
        try:
            pid = libc.clone_sibling(plan.unshare_flags)
        except libc.SyscallError as exc:  # the stage an intermediate's unshare(2) would have failed
            sock.send(_ID.pack(request_id) + b"err\0" + encode_failure("unshare", exc.errno or 0, ""))
            return None
        if pid == 0:
            run_container_process(plan, by_role)
        sock.send(_ID.pack(request_id) + f"ok {pid}".encode())
        return None
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        run_intermediate(plan, by_role, write_end)
    os.close(write_end)
    return _Flight(request_id=request_id, pid=pid, report=read_end)
