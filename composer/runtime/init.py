"""The child side: the intermediate that makes the namespaces, and the container's process stages.

Runs in processes forked by the fork-server; stdlib only, no logging, no threads. The stages are one
straight line (DESIGN.md rule 4). A failing stage writes `stage NUL errno NUL detail` on the error pipe
and exits 127; a successful exec closes the pipe (it is close-on-exec), which the parent reads as EOF.
"""

from __future__ import annotations

import fcntl
import os
import resource
import signal
import socket
import struct
from collections.abc import Callable, Iterable, Mapping
from typing import NoReturn

from composer.runtime import console, libc, mounts, rootfs
from composer.runtime.plan import LaunchPlan

# a cgroup leaf folder, and the (file, value) pairs written into it after its mkdir
LeafSteps = tuple[str, tuple[tuple[str, str], ...]]

__all__ = [
    "EXIT_STAGE_FAILED", "INIT_PATH", "LeafSteps", "decode_failure", "encode_failure", "make_cgroup_leaves",
    "run_container_process", "run_intermediate", "starts_directly",
]  # fmt: skip

EXIT_STAGE_FAILED = 127
INIT_PATH = "/sbin/docker-init"  # where `init: true` binds tini, as Docker does
_JOIN_ALL = (libc.CLONE_NEWNS | libc.CLONE_NEWUTS | libc.CLONE_NEWIPC | libc.CLONE_NEWNET | libc.CLONE_NEWPID
             | libc.CLONE_NEWCGROUP)  # fmt: skip


class StageFailed(Exception):
    def __init__(self, stage: str, err: int, detail: str) -> None:
        super().__init__(stage, err, detail)
        self.stage, self.err, self.detail = stage, err, detail


def encode_failure(stage: str, err: int, detail: str) -> bytes:
    return "\0".join((stage, str(err), detail.replace("\0", " "))).encode(errors="replace")


def decode_failure(data: bytes) -> tuple[str, int, str]:
    parts = data.decode(errors="replace").split("\0")
    while len(parts) < 3:
        parts.append("")
    try:
        err = int(parts[1])
    except ValueError:
        err = 0
    return parts[0], err, parts[2]


def _stage(name: str, action: Callable[[], object]) -> None:
    try:
        action()
    except libc.SyscallError as exc:
        detail = f"{exc.syscall} {exc.detail}".strip() if exc.syscall != name else exc.detail
        raise StageFailed(name, exc.errno or 0, detail) from None
    except OSError as exc:
        raise StageFailed(name, exc.errno or 0, str(exc.filename or "")) from None


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def starts_directly(plan: LaunchPlan) -> bool:
    """Whether the fork-server can clone the container's PID 1 itself, straight into new namespaces
    (`libc.clone_sibling`). Entering existing namespaces (an exec, `network_mode: service:`, `pid:` or
    `ipc:` of another container) needs an intermediate: setns(2) would change the fork-server."""
    return plan.kind == "start" and not (plan.netns_path or plan.join_namespaces or plan.shm_from)


def run_container_process(plan: LaunchPlan, fds: Mapping[str, int]) -> NoReturn:
    """In a PID 1 the fork-server cloned into its namespaces (`starts_directly`): the stages, then exec."""
    _container_process(plan, fds, -1)


def run_intermediate(plan: LaunchPlan, fds: Mapping[str, int], report_fd: int) -> NoReturn:
    """In the fork-server's child: enter the namespaces (and make the others), fork the container's
    process, report its pid."""
    code = 0
    try:
        try:
            if plan.kind == "exec":
                root_fd = os.open(
                    f"/proc/{plan.target_pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
                )
                _stage("setns", lambda: libc.setns(fds["pidfd"], _JOIN_ALL))
            else:
                root_fd = -1
                if plan.netns_path:
                    _stage("netns", lambda: _join_netns(plan.netns_path))
                for path, kind in plan.join_namespaces:
                    # pid: the fork below is born in it (setns sets the namespace of our children)
                    _stage(_NAMESPACE_STAGES.get(kind, "setns"), lambda p=path, k=kind: _join(p, k))  # type: ignore[misc]
                if plan.shm_from:
                    trees: list[int] = []
                    _stage("ipc shm", lambda: trees.append(_clone_shm(plan.shm_from)))
                    fds = {**fds, "shm": trees[0]}
                _stage("unshare", lambda: libc.unshare(plan.unshare_flags))
            pid = os.fork()
            if pid == 0:
                os.close(report_fd)
                _container_process(plan, fds, root_fd)
            _write_all(report_fd, f"ok {pid}".encode())
        except StageFailed as exc:
            _write_all(report_fd, b"err\0" + encode_failure(exc.stage, exc.err, exc.detail))
            code = 1
        except BaseException as exc:  # anything else is reported, never raised past the fork
            _write_all(report_fd, b"err\0" + encode_failure("intermediate", 0, repr(exc)))
            code = 1
    finally:
        os._exit(code)


_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_IFREQ = struct.Struct("16sH22x")  # struct ifreq: the name, then ifr_flags in the 24-byte union


def _loopback_up() -> None:
    """`lo` up in a new network namespace, as Docker does for every container (network_mode none too):
    127.0.0.1 must work before, and whether or not, the network layer attaches anything."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        _, flags = _IFREQ.unpack(fcntl.ioctl(sock, _SIOCGIFFLAGS, _IFREQ.pack(b"lo", 0)))
        fcntl.ioctl(sock, _SIOCSIFFLAGS, _IFREQ.pack(b"lo", flags | _IFF_UP))


def _join_netns(path: str) -> None:
    _join(path, libc.CLONE_NEWNET)


_NAMESPACE_STAGES = {libc.CLONE_NEWPID: "pidns", libc.CLONE_NEWIPC: "ipcns", libc.CLONE_NEWNET: "netns"}


def _join(path: str, kind: int) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        libc.setns(fd, kind)
    finally:
        os.close(fd)


def _clone_shm(mount_ns: str) -> int:
    """A detached copy of /dev/shm as the mount namespace `mount_ns` (another container's) sees it: we
    step into that namespace for the open_tree(2) and back out; the copy is attached after /dev is made."""
    own = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _join(mount_ns, libc.CLONE_NEWNS)
        try:
            return libc.open_tree("/dev/shm")
        finally:
            libc.setns(own, libc.CLONE_NEWNS)
    finally:
        os.close(own)


def _container_process(plan: LaunchPlan, fds: Mapping[str, int], root_fd: int) -> NoReturn:
    """The container's PID 1 (start) or the exec'd process: wait for GO, run the stages, exec."""
    err_fd = fds["err"]
    try:
        try:
            _stages(plan, fds, root_fd)
        except StageFailed as exc:
            _write_all(err_fd, encode_failure(exc.stage, exc.err, exc.detail))
        except BaseException as exc:
            _write_all(err_fd, encode_failure("internal", 0, repr(exc)))
    finally:
        os._exit(EXIT_STAGE_FAILED)


def _stages(plan: LaunchPlan, fds: Mapping[str, int], root_fd: int) -> NoReturn:
    # Into its cgroup first (while the supervisor attaches the network), made here unless it exists:
    # the supervisor's main thread did these mkdirs and writes before, ~1 ms a container under load.
    if plan.cgroup_make:
        _stage("cgroup", lambda: make_cgroup_leaves(plan.cgroup_make, []))
    for procs in plan.cgroups:
        _stage("cgroup", lambda procs=procs: _join_cgroup(procs))  # type: ignore[misc]
    if plan.kind == "start" and plan.unshare_flags & libc.CLONE_NEWNET:
        _stage("loopback", _loopback_up)
    # Wait for GO: the parent has attached the network (and an exec's cgroups) by now. EOF = abandoned.
    go = os.read(fds["go"], 1)
    if go != b"G":
        os._exit(EXIT_STAGE_FAILED)
    os.close(fds["go"])
    if not plan.tty:
        _stage("stdio", lambda: _stdio(fds))
    os.umask(0)
    if plan.kind == "start":
        root = plan.rootfs
        _stage("cgroupns", lambda: libc.unshare(libc.CLONE_NEWCGROUP))
        _stage("rprivate", rootfs.make_private)
        _stage("rootfs", lambda: rootfs.mount_overlay(root, plan.lower_dirs, plan.upper_dir, plan.work_dir))
        _stage("proc", lambda: mounts.mount_proc(root))
        _stage("dev", lambda: mounts.mount_dev(root, shm=plan.dev_shm))
        if "shm" in fds:  # ipc shared with another container: its /dev/shm over ours
            _stage("ipc shm", lambda: libc.move_mount(fds["shm"], mounts.secure_join(root, "/dev/shm")))
        _stage("sys", lambda: mounts.mount_sys(root, read_only=plan.sys_read_only))
        for step in plan.mounts:
            _stage(f"mount {step.target}", lambda step=step: mounts.mount_user(root, step))  # type: ignore[misc]
        _stage("cwd", lambda: os.makedirs(mounts.secure_join(root, plan.cwd), 0o755, exist_ok=True))
        if plan.read_only:
            _stage("read_only", lambda: rootfs.remount_read_only(root))
        _stage("pivot_root", lambda: rootfs.pivot(root))
        if plan.tty:
            _stage("tty", lambda: _terminal(plan, fds, console_path="/dev/console"))
        if plan.hostname:
            _stage("hostname", lambda: libc.sethostname(plan.hostname))
        if plan.domainname:
            _stage("domainname", lambda: libc.setdomainname(plan.domainname))
        for key, value in plan.sysctls:
            _stage(f"sysctl {key}", lambda key=key, value=value: _sysctl(key, value))  # type: ignore[misc]
        _stage("readonly_paths", lambda: mounts.readonly_paths(plan.readonly_paths))
        _stage("masked_paths", lambda: mounts.mask_paths(plan.masked_paths))
    else:
        _stage("chroot", lambda: _chroot(root_fd))
        if plan.tty:
            _stage("tty", lambda: _terminal(plan, fds, console_path=""))
    for number, soft, hard in plan.rlimits:
        _stage("rlimits", lambda n=number, s=soft, h=hard: resource.setrlimit(n, (s, h)))  # type: ignore[misc]
    os.umask(0o022)
    _stage("capabilities", lambda: _drop_bounding(plan))
    _stage("user", lambda: _switch_user(plan))
    _stage("capabilities", lambda: _set_caps(plan))
    _stage("chdir", lambda: os.chdir(plan.cwd))
    _stage("signals", _reset_signals)
    _stage("close_range", lambda: libc.close_range_cloexec(3))
    env = dict(item.partition("=")[::2] for item in plan.env)
    try:
        os.execvpe(plan.argv[0], list(plan.argv), env)
    except OSError as exc:
        raise StageFailed("exec", exc.errno or 0, plan.argv[0]) from None


def make_cgroup_leaves(leaves: Iterable[LeafSteps], made: list[str]) -> None:
    """mkdir each leaf (0755), then write its files in order; each folder made is appended to `made`
    (the caller's undo). A failure is an OSError whose `filename` says what failed: the leaf's path
    (its mkdir) or `file = value`. Run by a start's PID 1 and by
    composer/runtime/cgroups.py's `Cgroup.create`."""
    for leaf, writes in leaves:
        try:
            os.mkdir(leaf, 0o755)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, leaf) from None
        made.append(leaf)
        for filename, value in writes:
            try:
                fd = os.open(
                    f"{leaf}/{filename}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644
                )
                try:
                    os.write(fd, value.encode())
                finally:
                    os.close(fd)
            except OSError as exc:
                raise OSError(exc.errno, exc.strerror, f"{filename} = {value}") from None


def _join_cgroup(leaf: str) -> None:
    """Move this process into the cgroup folder `leaf` ("0": the writer itself)."""
    fd = os.open(f"{leaf}/cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, b"0")
    finally:
        os.close(fd)


def _stdio(fds: Mapping[str, int]) -> None:
    null = -1
    for target, role in enumerate(("stdin", "stdout", "stderr")):
        fd = fds.get(role)
        if fd is None:
            if null < 0:
                null = os.open("/dev/null", os.O_RDWR)
            fd = null
        os.dup2(fd, target, inheritable=True)
    if null > 2:
        os.close(null)


def _terminal(plan: LaunchPlan, fds: Mapping[str, int], console_path: str) -> None:
    """A pty from the container's devpts: the master goes to the supervisor, the slave becomes stdio."""
    master, slave, path = console.open_pty(*plan.tty_size)
    try:
        if console_path:
            libc.mount(path, console_path, None, libc.MS_BIND)
    except BaseException:
        os.close(master)
        raise
    console.send_master(fds["console"], master)
    console.take_as_controlling(slave, plan.uid)


def _chroot(root_fd: int) -> None:
    os.fchdir(root_fd)
    os.chroot(".")
    os.close(root_fd)


def _sysctl(key: str, value: str) -> None:
    with open("/proc/sys/" + key.replace(".", "/"), "w") as handle:
        handle.write(value)


def _drop_bounding(plan: LaunchPlan) -> None:
    for number in range(plan.last_cap + 1):
        if not plan.caps >> number & 1:
            libc.prctl(libc.PR_CAPBSET_DROP, number)


def _switch_user(plan: LaunchPlan) -> None:
    os.setgroups(list(plan.groups))
    os.setgid(plan.gid)
    os.setuid(plan.uid)  # a non-zero uid clears the permitted and effective sets (no keepcaps)


def _set_caps(plan: LaunchPlan) -> None:
    if plan.uid == 0:
        _eff, permitted, _inh = libc.capget()
        keep = plan.caps & permitted  # `privileged` gets what the supervisor itself holds
        libc.capset(keep, keep, 0)
    else:
        libc.capset(0, 0, 0)
    libc.prctl(libc.PR_CAP_AMBIENT, libc.PR_CAP_AMBIENT_CLEAR_ALL)
    if plan.no_new_privs:
        libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)


def _reset_signals() -> None:
    """Dispositions the fork-server's Python set (SIGPIPE and SIGXFSZ ignored, SIGINT...) back to default."""
    for number in signal.valid_signals():
        if number in (signal.SIGKILL, signal.SIGSTOP):
            continue
        handler = signal.getsignal(number)
        if handler is not None and handler != signal.SIG_DFL:
            signal.signal(number, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
