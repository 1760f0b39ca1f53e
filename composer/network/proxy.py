"""The userland port proxy in trio: TCP with splice(2) (socket -> pipe -> socket, no copy through
Python), UDP datagram by datagram. ports.py uses it where kernel DNAT cannot go (an IPv6 host
address in front of an IPv4 container, or no nftables); bench/ports.py measures it against DNAT.

    await nursery.start(serve_binding, held_socket, container_address, target_port)

The socket is the one ports.py bound to hold the host port; TCP listens on it, UDP receives on it.
Each TCP connection is its own task; an error of one connection (a reset, a refused connect) ends
that connection only (research/runtime-limits.md §5: a reset must stay local to its connection).
UDP keeps one upstream socket per client address, dropped after `UDP_IDLE` seconds without traffic
(docker-proxy: 90 s) and at most `UDP_FLOWS` of them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address

import trio

__all__ = ["UDP_FLOWS", "UDP_IDLE", "copy_pump", "serve_binding", "serve_tcp", "serve_udp", "splice_pump"]

PIPE_SIZE = 256 * 1024  # measured best in research/runtime-limits.md §5
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
UDP_IDLE = 90.0
UDP_FLOWS = 1024
BACKLOG = 128
_FAIRNESS = 16  # yield to other tasks at least every this many transfers in a row

Pump = Callable[[trio.socket.SocketType, trio.socket.SocketType], Awaitable[None]]


async def serve_binding(
    sock: socket.socket,
    address: IPv4Address,
    target: int,
    *,
    pump: str = "splice",
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve one held host socket until cancelled (the socket stays open: its owner closes it)."""
    listener = trio.socket.from_stdlib_socket(socket.socket(fileno=os.dup(sock.fileno())))
    with listener:
        if sock.type == socket.SOCK_STREAM:
            chosen: Pump = splice_pump if pump == "splice" else copy_pump
            await serve_tcp(listener, (str(address), target), chosen, task_status=task_status)
        else:
            await serve_udp(listener, (str(address), target), task_status=task_status)


async def serve_tcp(
    listener: trio.socket.SocketType,
    upstream: tuple[str, int],
    pump: Pump,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    listener.listen(BACKLOG)
    async with trio.open_nursery() as nursery:
        task_status.started()
        while True:
            client, _ = await listener.accept()
            nursery.start_soon(_connection, client, upstream, pump)


async def _connection(client: trio.socket.SocketType, upstream: tuple[str, int], pump: Pump) -> None:
    with client:
        try:
            server = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            with server:
                await server.connect(upstream)
                for s in (client, server):
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(pump, client, server)
                    nursery.start_soon(pump, server, client)
        except* OSError:
            pass  # this connection only (a reset, a refused or unreachable container)


def _shutdown_write(sock: trio.socket.SocketType) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


async def splice_pump(src: trio.socket.SocketType, dst: trio.socket.SocketType) -> None:
    """src -> dst through a pipe with splice(2) until src's EOF; then dst's write side is shut."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        with contextlib.suppress(OSError):  # else the default 64 KiB still works
            fcntl.fcntl(write_end, F_SETPIPE_SZ, PIPE_SIZE)
        flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
        sfd, dfd = src.fileno(), dst.fileno()
        streak = 0
        while True:
            try:
                pending = os.splice(sfd, write_end, PIPE_SIZE, flags=flags)
            except BlockingIOError:
                streak = 0
                await trio.lowlevel.wait_readable(src)
                continue
            if pending == 0:
                break
            while pending:
                try:
                    pending -= os.splice(read_end, dfd, pending, flags=flags)
                except BlockingIOError:
                    streak = 0
                    await trio.lowlevel.wait_writable(dst)
            streak += 1
            if streak >= _FAIRNESS:
                streak = 0
                await trio.lowlevel.checkpoint()
        _shutdown_write(dst)
    finally:
        os.close(read_end)
        os.close(write_end)


async def copy_pump(src: trio.socket.SocketType, dst: trio.socket.SocketType) -> None:
    """src -> dst through a 256 KiB buffer (recv_into / send)."""
    buffer = bytearray(PIPE_SIZE)
    view = memoryview(buffer)
    while True:
        size = await src.recv_into(buffer)
        if size == 0:
            break
        sent = 0
        while sent < size:
            sent += await dst.send(view[sent:size])
    _shutdown_write(dst)


async def serve_udp(
    listener: trio.socket.SocketType,
    upstream: tuple[str, int],
    *,
    idle: float = UDP_IDLE,
    flows: int = UDP_FLOWS,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    clients: dict[tuple[str, int], trio.socket.SocketType] = {}
    async with trio.open_nursery() as nursery:
        task_status.started()
        while True:
            data, peer = await listener.recvfrom(65535)
            flow = clients.get(peer)
            if flow is None:
                if len(clients) >= flows:
                    continue  # dropped, as a full conntrack table would
                flow = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    await flow.connect(upstream)
                except OSError:
                    flow.close()
                    continue
                clients[peer] = flow
                nursery.start_soon(_udp_replies, listener, flow, peer, clients, idle)
            try:
                await flow.send(data)
            except OSError as exc:
                if exc.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                    raise


async def _udp_replies(
    listener: trio.socket.SocketType,
    flow: trio.socket.SocketType,
    peer: tuple[str, int],
    clients: dict[tuple[str, int], trio.socket.SocketType],
    idle: float,
) -> None:
    with flow:
        try:
            while True:
                with trio.move_on_after(idle) as scope:
                    try:
                        data = await flow.recv(65535)
                    except OSError:
                        continue  # ICMP port unreachable reported on the connected socket
                if scope.cancelled_caught:
                    return
                with contextlib.suppress(OSError):
                    await listener.sendto(data, peer)
        finally:
            clients.pop(peer, None)
