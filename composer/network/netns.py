"""Network namespaces without forks: a netlink socket opened inside one from a thread, pins, names.

Sync functions only (trio code calls them through `trio.to_thread.run_sync`). `setns(CLONE_NEWNET)`
changes the calling thread only, so a worker thread may enter a container's netns, open a socket
there and come back; the socket stays in the netns (setns through runtime.libc, the only ctypes
module). pyroute2 is imported lazily (its top level costs ~140 ms) and only in this package
(DESIGN.md rule 6); its `netns.attach(name, pid)` is fork-free (its `netns.create` and
`IPRoute(netns=)` fork: not used).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import socket
from collections.abc import Iterator

from composer.runtime import libc

__all__ = ["NETNS_DIR", "entered", "open_netns", "pin", "short_name", "socket_in", "unpin"]

NETNS_DIR = "/run/netns"


def short_name(prefix: str, *parts: str, size: int = 15) -> str:
    """`prefix` + hex of a hash of `parts`, `size` characters in all (IFNAMSIZ - 1 = 15 for links)."""
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()
    return prefix + digest[: size - len(prefix)]


def open_netns(target: int | str) -> int:
    """An O_RDONLY fd on a netns: a pid (its /proc/PID/ns/net) or a path (/run/netns/NAME, ...)."""
    path = f"/proc/{target}/ns/net" if isinstance(target, int) else target
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


@contextlib.contextmanager
def entered(netns_fd: int) -> Iterator[None]:
    """Run the block with this thread in `netns_fd`; always come back (or raise, never stay).

    The one way composer's threads enter a network namespace (the DNS server's sockets too)."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        libc.setns(netns_fd, libc.CLONE_NEWNET)
        try:
            yield
        finally:
            libc.setns(home, libc.CLONE_NEWNET)
    finally:
        os.close(home)


def socket_in(netns_fd: int, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A socket created inside the netns (the caller's thread is back home when this returns)."""
    with entered(netns_fd):
        return socket.socket(family, kind, proto)


def pin(name: str, pid: int) -> str:
    """Bind-mount /proc/PID/ns/net on /run/netns/NAME (like `ip netns attach`); returns the path.

    A pinned netns outlives the process (for `ip netns exec` while debugging, or a restart that
    wants the same netns); `unpin` drops it."""
    from pyroute2 import netns as pyroute2_netns

    path = os.path.join(NETNS_DIR, name)
    if os.path.exists(path):
        raise FileExistsError(errno.EEXIST, "netns exists", path)
    pyroute2_netns.attach(name, pid)
    return path


def unpin(name_or_path: str) -> bool:
    """Unmount and remove /run/netns/NAME (lazy: the kernel takes the netns and its veths once
    nothing else holds it). False if it was not there."""
    from pyroute2 import netns as pyroute2_netns

    name = os.path.basename(name_or_path)
    if not os.path.exists(os.path.join(NETNS_DIR, name)):
        return False
    pyroute2_netns.remove(name)
    return True
