"""`LaunchPlan`: the container's start (or an exec) reduced to plain paths and numbers.

Built in the supervisor by composer/runtime/launch.py, pickled to the fork-server, and carried out
by composer/runtime/init.py. Stdlib only: the fork-server unpickles it without importing anything heavy.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LaunchPlan", "MountStep"]


@dataclass(frozen=True, slots=True, kw_only=True)
class MountStep:
    kind: str  # "bind" or "tmpfs"
    target: str  # absolute path inside the container
    source: str = ""
    read_only: bool = False
    propagation: int = 0  # MS_PRIVATE / MS_SLAVE / MS_SHARED, with MS_REC for the r-forms; 0 = leave
    recursive: bool = True
    flags: int = 0  # extra mount flags (tmpfs: MS_NOSUID, MS_NODEV, MS_NOEXEC)
    data: str = ""  # tmpfs options


@dataclass(frozen=True, slots=True, kw_only=True)
class LaunchPlan:
    kind: str  # "start" or "exec"
    container_id: str
    # namespaces
    unshare_flags: int = 0  # for the intermediate (start); the PID 1 adds CLONE_NEWCGROUP after GO
    netns_path: str = ""  # join this netns first (start with network mode `join`)
    join_namespaces: tuple[tuple[str, int], ...] = ()  # (/proc/PID/ns/KIND, CLONE_NEW*) joined before unshare
    shm_from: str = ""  # a mount namespace (/proc/PID/ns/mnt) whose /dev/shm becomes the container's
    target_pid: int = 0  # exec: the container's PID 1 (its pidfd travels with the request)
    # start: the cgroup leaves (one per hierarchy) the PID 1 moves itself into, first thing after the
    # fork (an exec is moved by the supervisor: it has entered the container's mounts by then), after
    # making those of `cgroup_make` (each a folder and the (file, value) pairs written into it)
    cgroups: tuple[str, ...] = ()
    cgroup_make: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    # root filesystem (start)
    rootfs: str = ""
    lower_dirs: tuple[str, ...] = ()
    upper_dir: str = ""
    work_dir: str = ""
    read_only: bool = False
    mounts: tuple[MountStep, ...] = ()
    masked_paths: tuple[str, ...] = ()
    readonly_paths: tuple[str, ...] = ()
    sys_read_only: bool = True
    dev_shm: bool = True  # a tmpfs on /dev/shm (not with `ipc: none`)
    # process
    hostname: str = ""
    domainname: str = ""
    sysctls: tuple[tuple[str, str], ...] = ()
    rlimits: tuple[tuple[int, int, int], ...] = ()  # (RLIMIT_*, soft, hard)
    caps: int = 0  # mask of the capabilities kept
    last_cap: int = 40
    no_new_privs: bool = False
    uid: int = 0
    gid: int = 0
    groups: tuple[int, ...] = ()
    cwd: str = "/"
    argv: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    # a pty from the container's devpts as stdio; the master goes back over the "console" socket
    tty: bool = False
    tty_size: tuple[int, int] = (24, 80)  # rows, columns
