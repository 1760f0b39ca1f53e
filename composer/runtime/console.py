"""A pseudo-terminal for a container's process (`tty: true`). Stdlib only (the child imports it).

Where the pty comes from: the container's own devpts instance, like runc's console socket. The process
opens /dev/ptmx after pivot_root (start) or chroot (exec), so the slave is /dev/pts/N of the
container's devpts: `tty` names a device that exists there, and the host's /dev/pts is never exposed.
A pty opened from the host's /dev/ptmx would be /dev/pts/N of the host's instance, which the
container's /dev/pts does not hold (or holds as some other terminal). The process sends the master
back over a socketpair (SCM_RIGHTS) and keeps the slave as its stdin, stdout, stderr and controlling
terminal (setsid + TIOCSCTTY); for a start, the slave is also bind-mounted on /dev/console, as runc does.

The supervisor gets a `Terminal` (the master): read the process's output from it, write its input to
it, `resize()` it (the kernel sends SIGWINCH to the foreground process group). It owns the descriptor.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import termios
from dataclasses import dataclass

__all__ = ["DEFAULT_SIZE", "Terminal", "open_pty", "receive_master", "send_master", "take_as_controlling"]

DEFAULT_SIZE = (24, 80)  # rows, columns: what a terminal without a known size gets (as `docker run -t`)

# asm-generic ioctl numbers (x86_64, aarch64); `termios` lacks these three.
_TIOCGPTN = 0x80045430  # _IOR('T', 0x30, unsigned int): the pty's number
_TIOCSPTLCK = 0x40045431  # _IOW('T', 0x31, int): (un)lock the slave
_TIOCGPTPEER = 0x5441  # _IO('T', 0x41): open the slave from the master, with no path lookup (Linux 4.13)
_WINSIZE = struct.Struct("HHHH")
_TAG = b"pty"


def set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, _WINSIZE.pack(rows, cols, 0, 0))


def get_size(fd: int) -> tuple[int, int]:
    rows, cols, _x, _y = _WINSIZE.unpack(fcntl.ioctl(fd, termios.TIOCGWINSZ, bytes(_WINSIZE.size)))
    return rows, cols


def open_pty(rows: int, cols: int) -> tuple[int, int, str]:
    """(master, slave, slave path) from the /dev/ptmx this process sees; both close-on-exec."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(master, _TIOCSPTLCK, struct.pack("i", 0))
        (number,) = struct.unpack("I", fcntl.ioctl(master, _TIOCGPTN, bytes(4)))
        set_size(master, rows, cols)
        slave = fcntl.ioctl(master, _TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except BaseException:
        os.close(master)
        raise
    return master, slave, f"/dev/pts/{number}"


def send_master(sock_fd: int, master: int) -> None:
    """Hand the master to the supervisor over the console socket, then close our copies of both."""
    sock = socket.socket(fileno=sock_fd)
    try:
        socket.send_fds(sock, [_TAG], [master])
    finally:
        sock.close()
        os.close(master)


def take_as_controlling(slave: int, uid: int) -> None:
    """A new session whose controlling terminal is `slave`, which becomes fds 0, 1 and 2 (owned by `uid`)."""
    os.fchown(slave, uid, -1)  # as runc does for stdio: a non-root user may reopen its own terminal
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for target in (0, 1, 2):
        os.dup2(slave, target, inheritable=True)
    if slave > 2:
        os.close(slave)


def receive_master(sock: socket.socket) -> int | None:
    """The supervisor's side: the master sent by the process, or None if it sent none (non-blocking)."""
    try:
        message, fds, _flags, _addr = socket.recv_fds(sock, 16, 1, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return None
    if message != _TAG or len(fds) != 1:
        for fd in fds:
            os.close(fd)
        return None
    return fds[0]


@dataclass(eq=False, slots=True)
class Terminal:
    """The supervisor's end of a container process's pty (the master). The caller closes it.

    Read output and write input on `fd` (for trio: `trio.lowlevel.FdStream(os.dup(terminal.fd))`). Once
    every process holding the slave has exited, a read returns what is left, then fails with EIO.
    """

    fd: int

    def fileno(self) -> int:
        return self.fd

    def resize(self, rows: int, cols: int) -> None:
        """TIOCSWINSZ: the processes on the terminal get SIGWINCH and see the new size."""
        set_size(self.fd, rows, cols)

    def size(self) -> tuple[int, int]:
        return get_size(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
