"""Mounts made inside the container's mount namespace, before and after pivot_root. Stdlib only.

`secure_join` resolves a container path under the rootfs the way the container would (symlinks are
followed relative to the rootfs, and `..` cannot climb out), so an image cannot point a mount at a
host path (runc uses filepath-securejoin for the same reason).
"""

from __future__ import annotations

import os
import stat

from composer.runtime import libc
from composer.runtime.plan import MountStep

__all__ = [
    "DEFAULT_MASKED_PATHS",
    "DEFAULT_READONLY_PATHS",
    "bind_file_or_dir",
    "mask_paths",
    "mount_dev",
    "mount_proc",
    "mount_sys",
    "mount_user",
    "readonly_paths",
    "secure_join",
]

# moby: oci/defaults.go
DEFAULT_MASKED_PATHS: tuple[str, ...] = (
    "/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
    "/sys/devices/virtual/powercap",
)  # fmt: skip
DEFAULT_READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
)  # fmt: skip

_MAX_LINKS = 255


def secure_join(root: str, path: str) -> str:
    """`root` + `path`, with every symlink on the way resolved inside `root`. The last part need not exist."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = os.path.join(root, *done, part)
        try:
            info = os.lstat(candidate)
        except OSError:
            done.append(part)
            continue
        if stat.S_ISLNK(info.st_mode):
            links += 1
            if links > _MAX_LINKS:
                raise OSError(40, "too many levels of symbolic links", path)  # ELOOP
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        done.append(part)
    return os.path.join(root, *done) if done else root


def _ensure_dir(path: str) -> None:
    os.makedirs(path, mode=0o755, exist_ok=True)


def _ensure_file(path: str) -> None:
    _ensure_dir(os.path.dirname(path))
    if not os.path.exists(path):
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))


def mount_proc(root: str) -> None:
    target = secure_join(root, "/proc")
    _ensure_dir(target)
    libc.mount("proc", target, "proc", libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC)


def mount_sys(root: str, *, read_only: bool) -> None:
    target = secure_join(root, "/sys")
    _ensure_dir(target)
    flags = libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC | (libc.MS_RDONLY if read_only else 0)
    try:
        libc.mount("sysfs", target, "sysfs", flags)
    except OSError:  # sysfs of a netns we do not own (network `host` / `join`): bind the host's instead
        libc.mount("/sys", target, None, libc.MS_BIND | libc.MS_REC)
        if read_only:
            libc.mount(None, target, None, libc.MS_BIND | libc.MS_REMOUNT | libc.MS_RDONLY | flags)


_DEVICES = (  # name, major, minor; console is a null device unless a tty is given
    ("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0),
    ("console", 1, 3),
)  # fmt: skip


def mount_dev(root: str, *, shm: bool = True) -> None:
    """A tmpfs /dev with the usual nodes, its own devpts, shm (unless not `shm`) and mqueue (the process
    umask is 0 here)."""
    dev = secure_join(root, "/dev")
    _ensure_dir(dev)
    libc.mount("tmpfs", dev, "tmpfs", libc.MS_NOSUID | libc.MS_STRICTATIME, "mode=755,size=65536k")
    for name, major, minor in _DEVICES:
        os.mknod(f"{dev}/{name}", 0o666 | stat.S_IFCHR, os.makedev(major, minor))
    os.mkdir(f"{dev}/pts", 0o755)
    libc.mount("devpts", f"{dev}/pts", "devpts", libc.MS_NOSUID | libc.MS_NOEXEC,
               "newinstance,ptmxmode=0666,mode=0620,gid=5")  # fmt: skip
    os.symlink("pts/ptmx", f"{dev}/ptmx")
    if shm:
        os.mkdir(f"{dev}/shm", 0o1777)
        libc.mount("shm", f"{dev}/shm", "tmpfs", libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC,
                   "mode=1777,size=67108864")  # fmt: skip
    os.mkdir(f"{dev}/mqueue", 0o755)
    libc.mount("mqueue", f"{dev}/mqueue", "mqueue", libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2"), ("core", "/proc/kcore")):  # fmt: skip
        os.symlink(target, f"{dev}/{name}")


def bind_file_or_dir(
    source: str, target: str, *, read_only: bool = False, recursive: bool = True, propagation: int = 0
) -> None:
    """Bind `source` (host side) on `target` (already resolved under the rootfs), making the mountpoint."""
    try:
        is_dir = stat.S_ISDIR(os.stat(source).st_mode)
    except OSError as exc:
        raise libc.SyscallError("stat", exc.errno or 0, f"bind source {source}") from None
    if is_dir:
        _ensure_dir(target)
    else:
        _ensure_file(target)
    libc.mount(source, target, None, libc.MS_BIND | (libc.MS_REC if recursive else 0))
    if read_only:
        libc.mount(None, target, None, libc.MS_BIND | libc.MS_REMOUNT | libc.MS_RDONLY)
    if propagation:
        libc.mount(None, target, None, propagation)


def mount_user(root: str, step: MountStep) -> None:
    target = secure_join(root, step.target)
    if step.kind == "bind":
        bind_file_or_dir(step.source, target, read_only=step.read_only, recursive=step.recursive,
                         propagation=step.propagation)  # fmt: skip
    elif step.kind == "tmpfs":
        _ensure_dir(target)
        flags = step.flags | (libc.MS_RDONLY if step.read_only else 0)
        libc.mount("tmpfs", target, "tmpfs", flags, step.data or None)
    else:
        raise ValueError(f"unknown mount kind {step.kind}")


def mask_paths(paths: tuple[str, ...]) -> None:
    """After pivot_root: /dev/null over files, an empty read-only tmpfs over folders."""
    for path in paths:
        try:
            info = os.stat(path)
        except OSError:
            continue
        if stat.S_ISDIR(info.st_mode):
            libc.mount("tmpfs", path, "tmpfs", libc.MS_RDONLY)
        else:
            libc.mount("/dev/null", path, None, libc.MS_BIND)


def readonly_paths(paths: tuple[str, ...]) -> None:
    """After pivot_root: bind each path on itself and remount it read-only."""
    for path in paths:
        if not os.path.exists(path):
            continue
        libc.mount(path, path, None, libc.MS_BIND | libc.MS_REC)
        flags = (
            libc.MS_BIND | libc.MS_REMOUNT | libc.MS_RDONLY | libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC
        )
        libc.mount(None, path, None, flags)
