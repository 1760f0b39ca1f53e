"""The only ctypes module: the Linux syscalls that Python 3.11's `os` lacks.

Every wrapper raises `SyscallError` (an OSError) carrying the syscall's name and errno, so that a
stage can report `pivot_root: EINVAL`. Stdlib only: the fork-server and the container's child
stages import it before anything heavy is loaded.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import os

__all__ = [
    "CAP_VERSION_3",
    "CLONE_NEWCGROUP",
    "CLONE_NEWIPC",
    "CLONE_NEWNET",
    "CLONE_NEWNS",
    "CLONE_NEWPID",
    "CLONE_NEWUTS",
    "MNT_DETACH",
    "MS_BIND",
    "MS_NODEV",
    "MS_NOEXEC",
    "MS_NOSUID",
    "MS_PRIVATE",
    "MS_RDONLY",
    "MS_REC",
    "MS_REMOUNT",
    "MS_SHARED",
    "MS_SLAVE",
    "MS_STRICTATIME",
    "SyscallError",
    "capget",
    "capset",
    "clone_sibling",
    "close_range_cloexec",
    "errno_name",
    "fs_messages",
    "fsconfig_create",
    "fsconfig_string",
    "fsmount",
    "fsopen",
    "mount",
    "move_mount",
    "open_tree",
    "pivot_root",
    "prctl",
    "setdomainname",
    "sethostname",
    "setns",
    "umount2",
    "unshare",
]

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_STRICTATIME = 1 << 24

MNT_DETACH = 2

# The new mount API (Linux 5.2): fsopen / fsconfig / fsmount / move_mount.
FSOPEN_CLOEXEC = 1
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
FSMOUNT_CLOEXEC = 1
MOVE_MOUNT_F_EMPTY_PATH = 4
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = 0o2000000  # O_CLOEXEC
AT_RECURSIVE = 0x8000
AT_FDCWD = -100

PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

CAP_VERSION_3 = 0x20080522
CLOSE_RANGE_CLOEXEC = 1 << 2

# x86_64 / aarch64 numbers for the calls glibc 2.36 may not wrap.
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
_SYS_CLOSE_RANGE = 436  # the same on every architecture (asm-generic numbering since 5.9)
_SYS_MOVE_MOUNT = 429  # these four too (unified numbering since 5.2)
_SYS_FSOPEN = 430
_SYS_FSCONFIG = 431
_SYS_FSMOUNT = 432
_SYS_OPEN_TREE = 428
_SYS_CLONE3 = 435
CLONE_PARENT = 0x00008000


class SyscallError(OSError):
    """A failed syscall: `str()` is `name: ENAME`, and `.syscall` / `.errno` hold the parts."""

    def __init__(self, syscall: str, err: int, detail: str = "") -> None:
        super().__init__(err, os.strerror(err))
        self.syscall = syscall
        self.detail = detail

    def __str__(self) -> str:
        text = f"{self.syscall}: {errno_name(self.errno or 0)}"
        return f"{text} ({self.detail})" if self.detail else text


def errno_name(err: int) -> str:
    return _errno.errorcode.get(err, f"errno {err}")


_libc = ctypes.CDLL(None, use_errno=True)
_machine = os.uname().machine


def _check(name: str, result: int, detail: str = "") -> int:
    if result < 0:
        raise SyscallError(name, ctypes.get_errno(), detail)
    return result


def _b(path: str | bytes | None) -> bytes | None:
    if path is None:
        return None
    return path if isinstance(path, bytes) else os.fsencode(path)


_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
_libc.unshare.argtypes = (ctypes.c_int,)
_libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)
_libc.sethostname.argtypes = (ctypes.c_char_p, ctypes.c_size_t)
_libc.setdomainname.argtypes = (ctypes.c_char_p, ctypes.c_size_t)
_libc.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
_libc.syscall.restype = ctypes.c_long


def mount(
    source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None
) -> None:
    _check("mount", _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)), target)


def umount2(target: str, flags: int = 0) -> None:
    _check("umount2", _libc.umount2(_b(target), flags), target)


def unshare(flags: int) -> None:
    _check("unshare", _libc.unshare(flags))


def setns(fd: int, nstype: int) -> None:
    _check("setns", _libc.setns(fd, nstype))


def pivot_root(new_root: str, put_old: str) -> None:
    number = _SYS_PIVOT_ROOT.get(_machine)
    if number is None:
        raise SyscallError("pivot_root", _errno.ENOSYS, f"unknown architecture {_machine}")
    _check("pivot_root", _libc.syscall(ctypes.c_long(number), _b(new_root), _b(put_old)))


def sethostname(name: str) -> None:
    raw = name.encode()
    _check("sethostname", _libc.sethostname(raw, len(raw)))


def setdomainname(name: str) -> None:
    raw = name.encode()
    _check("setdomainname", _libc.setdomainname(raw, len(raw)))


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check("prctl", _libc.prctl(option, arg2, arg3, arg4, arg5))


def close_range_cloexec(first: int) -> None:
    """Mark every descriptor from `first` up close-on-exec (close_range(2), Linux 5.11)."""
    _check(
        "close_range",
        _libc.syscall(
            ctypes.c_long(_SYS_CLOSE_RANGE), ctypes.c_uint(first), ctypes.c_uint(0xFFFFFFFF),
            ctypes.c_uint(CLOSE_RANGE_CLOEXEC),
        ),
    )  # fmt: skip


def fsopen(fstype: str) -> int:
    """A filesystem context (close-on-exec); configure it with `fsconfig_*`, then `fsmount` it."""
    return _check(
        "fsopen", _libc.syscall(ctypes.c_long(_SYS_FSOPEN), _b(fstype), ctypes.c_uint(FSOPEN_CLOEXEC))
    )


def fs_messages(fs_fd: int) -> str:
    """The kernel's messages queued on a filesystem context ("e overlayfs: ..."), joined; "" if none."""
    lines = []
    while True:
        try:
            line = os.read(fs_fd, 1024)
        except OSError:
            break
        if not line:
            break
        lines.append(line.decode(errors="replace").strip())
    return "; ".join(lines)


def _fsconfig(fs_fd: int, cmd: int, key: bytes | None, value: bytes | None, what: str) -> None:
    result = _libc.syscall(
        ctypes.c_long(_SYS_FSCONFIG), ctypes.c_int(fs_fd), ctypes.c_uint(cmd), key, value, ctypes.c_int(0)
    )
    if result < 0:
        err = ctypes.get_errno()
        messages = fs_messages(fs_fd)
        raise SyscallError("fsconfig", err, f"{what}: {messages}" if messages else what)


def fsconfig_string(fs_fd: int, key: str, value: str) -> None:
    _fsconfig(fs_fd, FSCONFIG_SET_STRING, key.encode(), _b(value), f"{key}={value}")


def fsconfig_create(fs_fd: int) -> None:
    """FSCONFIG_CMD_CREATE: make the superblock from the parameters given so far."""
    _fsconfig(fs_fd, FSCONFIG_CMD_CREATE, None, None, "create")


def fsmount(fs_fd: int, attr_flags: int = 0) -> int:
    """A detached mount of the context's superblock (close-on-exec); attach it with `move_mount`."""
    return _check(
        "fsmount",
        _libc.syscall(
            ctypes.c_long(_SYS_FSMOUNT), ctypes.c_int(fs_fd), ctypes.c_uint(FSMOUNT_CLOEXEC),
            ctypes.c_uint(attr_flags),
        ),
    )  # fmt: skip


def open_tree(path: str, *, recursive: bool = False) -> int:
    """A detached copy of the mount at `path` (OPEN_TREE_CLONE, close-on-exec), as a bind mount would
    make; attach it with `move_mount`, in this or another mount namespace."""
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (AT_RECURSIVE if recursive else 0)
    return _check(
        "open_tree",
        _libc.syscall(ctypes.c_long(_SYS_OPEN_TREE), ctypes.c_int(AT_FDCWD), _b(path), ctypes.c_uint(flags)),
        path,
    )


def move_mount(mount_fd: int, target: str) -> None:
    """Attach the detached mount `mount_fd` on `target`."""
    _check(
        "move_mount",
        _libc.syscall(
            ctypes.c_long(_SYS_MOVE_MOUNT), ctypes.c_int(mount_fd), b"", ctypes.c_int(AT_FDCWD), _b(target),
            ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH),
        ),
        target,
    )  # fmt: skip


class _CloneArgs(ctypes.Structure):
    """struct clone_args as of Linux 5.3 (CLONE_ARGS_SIZE_VER0): stack 0 = the caller's, as fork."""

    _fields_ = tuple(
        (name, ctypes.c_uint64)
        for name in ("flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size", "tls")
    )


def clone_sibling(namespaces: int) -> int:
    """fork(2) into new namespaces (CLONE_NEW* flags) with the caller's parent as the child's parent
    (CLONE_PARENT): the pid, or 0 in the child. A raw clone3(2): the C library's and Python's fork
    handlers do not run, so only a single-threaded caller may use it (the fork-server)."""
    # exit_signal stays 0: with CLONE_PARENT the child gets the caller's own (SIGCHLD for a fork)
    args = _CloneArgs(flags=namespaces | CLONE_PARENT)
    return _check(
        "clone3",
        _libc.syscall(ctypes.c_long(_SYS_CLONE3), ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args))),
    )


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


_libc.capget.argtypes = (ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData))
_libc.capset.argtypes = (ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData))


def capget(pid: int = 0) -> tuple[int, int, int]:
    """(effective, permitted, inheritable) as 64-bit masks."""
    header = _CapHeader(CAP_VERSION_3, pid)
    data = (_CapData * 2)()
    _check("capget", _libc.capget(ctypes.byref(header), data))
    eff, prm, inh = (
        getattr(data[0], field) | (getattr(data[1], field) << 32)
        for field in ("effective", "permitted", "inheritable")
    )
    return eff, prm, inh


def capset(effective: int, permitted: int, inheritable: int) -> None:
    header = _CapHeader(CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    for index in (0, 1):
        shift = 32 * index
        data[index].effective = (effective >> shift) & 0xFFFFFFFF
        data[index].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[index].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _check("capset", _libc.capset(ctypes.byref(header), data))
