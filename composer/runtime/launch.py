"""The supervisor's side of a container: plan, fork-server request, GO handshake, pidfd, exit status.

    forkserver = ForkServer.start()            # early, before trio is imported
    runtime = Runtime(layout, forkserver)      # layout: composer.storage.layout.Layout (or any ContainerDirs)
    container = await runtime.start(spec)      # returns once the container's argv is exec'd
    container.terminal                         # with spec.tty: the pty's master (Terminal); caller closes
    status = await container.wait()            # ExitStatus(code=0 | 128+N, signal=N | None)
    await runtime.exec(container, ["sh", "-c", "..."])
    await container.stop(signal.SIGTERM, grace=10)
    runtime.remove(spec.id)                    # the writable layer and the container folder

A stage that fails raises `ContainerStartError` (`container web: pivot_root: EINVAL`) after the
process is reaped: its mounts died with its mount namespace, the cgroup hook is destroyed, and a
container folder made by this start is removed.
"""

from __future__ import annotations

import array
import contextlib
import errno
import itertools
import os
import resource
import select
import shutil
import signal as signals
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import trio

from composer.errors import ComposerError
from composer.runtime import libc, rootfs
from composer.runtime.caps import cap_mask, resolve_caps
from composer.runtime.console import DEFAULT_SIZE as DEFAULT_TTY_SIZE
from composer.runtime.console import Terminal, receive_master
from composer.runtime.forkserver import ForkServer, LaunchFailed, decode_reply, encode_request, split_id
from composer.runtime.init import INIT_PATH, decode_failure
from composer.runtime.mounts import DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS
from composer.runtime.plan import LaunchPlan, MountStep
from composer.runtime.spec import (
    BindMount,
    CgroupHook,
    ContainerDirs,
    ContainerSpec,
    Namespace,
    Stdio,
    TmpfsMount,
)
from composer.runtime.users import ResolvedUser, find_in_layers, resolve_user

__all__ = [
    "AdoptedContainer",
    "Container",
    "ContainerSpecError",
    "ContainerStartError",
    "ExitStatus",
    "Process",
    "Runtime",
    "build_plan",
]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TINI = Path("/usr/bin/tini-static")
_REPARENT_WAIT = 2.0  # seconds an exited container may stay its exiting intermediate's child
_REPORT_WAIT = 1.0  # seconds to read the report of a PID 1 that ended before GO

_PROPAGATION = {
    "rprivate": libc.MS_PRIVATE | libc.MS_REC, "private": libc.MS_PRIVATE,
    "rshared": libc.MS_SHARED | libc.MS_REC, "shared": libc.MS_SHARED,
    "rslave": libc.MS_SLAVE | libc.MS_REC, "slave": libc.MS_SLAVE,
}  # fmt: skip
# moby: daemon/oci_linux.go / runc validator: the sysctls a container's own namespaces make safe.
_IPC_SYSCTLS = frozenset({"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
                          "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"})  # fmt: skip


class ContainerSpecError(ComposerError):
    """A ContainerSpec the runtime cannot carry out (bad path, sysctl, rlimit, user)."""


class ContainerStartError(ComposerError):
    """A stage of the container's start failed: `container ID: STAGE: ERRNO (detail)`."""

    def __init__(self, container_id: str, stage: str, err: int, detail: str) -> None:
        name = libc.errno_name(err) if err else "error"
        super().__init__(f"container {container_id}: {stage}: {name}" + (f" ({detail})" if detail else ""))
        self.container_id, self.stage, self.errno, self.detail = container_id, stage, err, detail


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """`code` is the exit code, or 128+N for a process killed by signal N (`signal` is then N)."""

    code: int
    signal: int | None = None

    @classmethod
    def from_waitid(cls, result: os.waitid_result) -> ExitStatus:
        if result.si_code == os.CLD_EXITED:
            return cls(result.si_status)
        return cls(128 + result.si_status, result.si_status)


def _ended(pidfd: int) -> bool:
    """Whether the process of `pidfd` has exited (its pidfd is readable), without waiting."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


@dataclass(eq=False, slots=True)
class Process:
    """A process the supervisor is the parent of (cloned as its child, or by subreaping), watched
    through a pidfd."""

    pid: int
    pidfd: int
    terminal: Terminal | None = None  # the pty's master with tty; the caller closes it (after reading out)
    _status: ExitStatus | None = None
    _reaping: bool = False
    _done: trio.Event = field(default_factory=trio.Event)

    def signal(self, sig: int) -> None:
        """Send `sig`; a process that has already exited is left alone."""
        if self._status is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            signals.pidfd_send_signal(self.pidfd, sig)

    async def wait(self) -> ExitStatus:
        if self._status is not None:
            return self._status
        if self._reaping:
            await self._done.wait()
            assert self._status is not None
            return self._status
        self._reaping = True
        try:
            await trio.lowlevel.wait_readable(self.pidfd)
        except BaseException:
            self._reaping = False
            raise
        self._status = self._reap()
        os.close(self.pidfd)
        self._done.set()
        return self._status

    def _reap(self) -> ExitStatus:
        """The status of the process, which has ended (its pidfd is readable). A process started through
        an intermediate that died at once may still be the intermediate's child, which is exiting
        (the fork-server answers before it has): it becomes ours a moment later."""
        deadline = time.monotonic() + _REPARENT_WAIT
        while True:
            try:
                result = os.waitid(os.P_PIDFD, self.pidfd, os.WEXITED)
            except ChildProcessError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.0005)
                continue
            assert result is not None
            return ExitStatus.from_waitid(result)

    async def stop(self, sig: int = signals.SIGTERM, grace: float = 10.0) -> ExitStatus:
        """`sig`, then SIGKILL after `grace` seconds; returns the exit status."""
        self.signal(sig)
        with trio.move_on_after(grace):
            return await self.wait()
        self.signal(signals.SIGKILL)
        with trio.CancelScope(shield=True):
            status = await self.wait()
        return status

    async def kill_and_reap(self) -> None:
        self.signal(signals.SIGKILL)
        with trio.CancelScope(shield=True):
            await self.wait()


@dataclass(eq=False, slots=True)
class Container(Process):
    spec: ContainerSpec | None = None
    plan: LaunchPlan | None = None


@dataclass(eq=False, slots=True)
class AdoptedContainer(Container):
    """A running container this process did not start (a killed supervisor's): it is not our child, so
    its exit is seen through the pidfd but its status is not ours to read (`lost_status` stands in)."""

    lost_status: ExitStatus = field(default_factory=lambda: ExitStatus(255))

    def _reap(self) -> ExitStatus:
        return self.lost_status


class Runtime:
    """Starts containers through one fork-server; one instance per supervisor."""

    def __init__(self, layout: ContainerDirs, forkserver: ForkServer) -> None:
        self.layout = layout
        self._forkserver = forkserver
        self._sock: trio.socket.SocketType | None = None
        self._send_lock = trio.Lock()
        self._receive_lock = trio.Lock()
        self._ids = itertools.count(1)
        self._answers: dict[int, bytes] = {}
        with open("/proc/sys/kernel/cap_last_cap") as handle:
            self.last_cap = int(handle.read())

    # -- the fork-server ----------------------------------------------------------------------------------

    async def _request(self, plan: LaunchPlan, fds: dict[str, int]) -> int:
        """One request to the fork-server. Several tasks may wait at once: whoever holds the receive
        lock reads the next answer and files it under its id for its waiter."""
        if self._sock is None:
            self._sock = trio.socket.from_stdlib_socket(self._forkserver.sock)
        request_id = next(self._ids)
        data, fd_list = encode_request(request_id, plan, fds)
        # shielded: a request sent and not waited for would leave a container running that nobody knows
        with trio.CancelScope(shield=True):
            async with self._send_lock:
                rights = array.array("i", fd_list)
                await self._sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])
            while request_id not in self._answers:
                async with self._receive_lock:
                    if request_id in self._answers:
                        break
                    answered, answer = split_id(await self._sock.recv(4096))
                    if answered is None:  # the fork-server is gone: every waiter hears it
                        raise LaunchFailed("forkserver", 0, "the fork-server is gone")
                    self._answers[answered] = answer
        return decode_reply(self._answers.pop(request_id))

    # -- start ---------------------------------------------------------------------------------------------

    async def start(
        self, spec: ContainerSpec, *, before_go: Callable[[int], Awaitable[None]] | None = None
    ) -> Container:
        """Start `spec`; `before_go(pid)` runs after the cgroup attach, before the process may continue
        (the network layer attaches veths to /proc/PID/ns/net there). Returns once argv is exec'd."""
        folder = self.layout.container_dir(spec.id)
        created = not folder.exists()
        try:
            for sub in ("upper", "work", "rootfs"):
                (folder / sub).mkdir(parents=True, exist_ok=True)
            plan = build_plan(spec, self.layout, last_cap=self.last_cap)
            process = await self._launch(plan, spec.stdio, spec.cgroup, before_go)
            if spec.cgroup is not None:
                spec.cgroup.pending = ()  # made by the PID 1
        except BaseException:
            if spec.cgroup is not None:
                spec.cgroup.destroy()
            if created:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        return Container(
            pid=process.pid, pidfd=process.pidfd, terminal=process.terminal, spec=spec, plan=plan
        )

    async def _launch(
        self,
        plan: LaunchPlan,
        stdio: Stdio,
        cgroup: CgroupHook | None,
        before_go: Callable[[int], Awaitable[None]] | None,
        extra_fds: dict[str, int] | None = None,
    ) -> Process:
        go_r, go_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        console_sock, console_child = (
            socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) if plan.tty else (None, None)
        )
        joins_itself = bool(plan.cgroups)  # a start's PID 1 moves itself into its cgroup (init.py)
        early_go = (cgroup is None or joins_itself) and before_go is None
        if early_go:  # nothing to do between fork and exec: the process need not wait for a round trip
            os.write(go_w, b"G")
        err_stream = trio.lowlevel.FdStream(err_r)
        try:
            fds = {"go": go_r, "err": err_w, **(extra_fds or {})}
            for role in ("stdin", "stdout", "stderr"):
                fd = getattr(stdio, role)
                if fd is not None:
                    fds[role] = fd
            if console_child is not None:
                fds["console"] = console_child.fileno()
            try:
                pid = await self._request(plan, fds)
            except LaunchFailed as exc:
                raise ContainerStartError(plan.container_id, exc.stage, exc.err, exc.detail) from None
            finally:
                os.close(go_r)
                os.close(err_w)
                if console_child is not None:
                    console_child.close()
            process = Process(pid=pid, pidfd=os.pidfd_open(pid))
            try:
                if cgroup is not None and not joins_itself:
                    cgroup.attach(pid)
                if before_go is not None:
                    try:
                        await before_go(pid)
                    except Exception:
                        # a PID 1 that failed a stage of its own meanwhile (its cgroup) took its
                        # namespaces with it: its report is the cause, not what that broke here
                        if _ended(process.pidfd):
                            with trio.move_on_after(_REPORT_WAIT):
                                failure = b""
                                while chunk := await err_stream.receive_some(65536):
                                    failure += chunk
                                if failure:
                                    raise ContainerStartError(
                                        plan.container_id, *decode_failure(failure)
                                    ) from None
                        raise
                # a process that died before GO: the error pipe and the exit status tell the rest
                if not early_go:
                    with contextlib.suppress(BrokenPipeError):
                        os.write(go_w, b"G")
                failure = b""
                while chunk := await err_stream.receive_some(65536):
                    failure += chunk
                if failure or process._status is not None:
                    await process.wait()
                    stage, err, detail = decode_failure(failure) if failure else ("start", 0, "exited early")
                    raise ContainerStartError(plan.container_id, stage, err, detail)
                if console_sock is not None:
                    # sent before exec, so it is queued by now that the error pipe saw exec's EOF
                    master = receive_master(console_sock)
                    if master is None:
                        raise ContainerStartError(plan.container_id, "tty", 0, "no terminal came back")
                    process.terminal = Terminal(master)
            except BaseException:
                if process.terminal is not None:
                    process.terminal.close()
                await process.kill_and_reap()
                raise
            return process
        finally:
            os.close(go_w)
            await err_stream.aclose()
            if console_sock is not None:
                console_sock.close()

    def adopt(self, spec: ContainerSpec, pid: int) -> Container:
        """The running container `spec` whose main process is `pid` (left by another supervisor), for
        signals, waits and `exec`. ProcessLookupError if it is gone."""
        pidfd = os.pidfd_open(pid)
        try:
            plan = build_plan(spec, self.layout, last_cap=self.last_cap)
        except BaseException:
            os.close(pidfd)
            raise
        return AdoptedContainer(pid=pid, pidfd=pidfd, spec=spec, plan=plan)

    # -- exec ----------------------------------------------------------------------------------------------

    async def exec(
        self,
        container: Container,
        argv: Sequence[str],
        *,
        env: Sequence[str] = (),
        user: str | None = None,
        cwd: str | None = None,
        stdio: Stdio | None = None,
    ) -> ExitStatus:
        """Run `argv` in all of the container's namespaces and its root; wait for its exit status."""
        try:
            process = await self.start_exec(container, argv, env=env, user=user, cwd=cwd, stdio=stdio)
        except ContainerStartError as exc:
            if exc.stage != "exec":
                raise
            # like `docker exec`: 127 for a command not found, 126 for one that cannot run
            if stdio is not None and stdio.stderr is not None:
                with contextlib.suppress(OSError):
                    os.write(stdio.stderr, f"{exc}\n".encode())
            return ExitStatus(127 if exc.errno == errno.ENOENT else 126)
        try:
            return await process.wait()
        except BaseException:
            await process.kill_and_reap()
            raise

    async def start_exec(
        self,
        container: Container,
        argv: Sequence[str],
        *,
        env: Sequence[str] = (),
        user: str | None = None,
        cwd: str | None = None,
        stdio: Stdio | None = None,
        tty: bool = False,
        tty_size: tuple[int, int] = DEFAULT_TTY_SIZE,
    ) -> Process:
        """Start `argv` in the container (as `exec`) and return it running; with `tty`, its stdio is a
        new pty of the container's devpts and `process.terminal` holds the master (the caller closes it)."""
        spec, base = container.spec, container.plan
        if spec is None or base is None or container._status is not None:
            raise ContainerSpecError(f"exec: container {spec.id if spec else '?'} is not running")
        if not argv:
            raise ContainerSpecError("exec: empty command")
        if tty and stdio is not None and stdio != Stdio():
            raise ContainerSpecError(
                "exec: tty and stdio descriptors exclude each other (the pty is all three)"
            )
        _check_tty_size(tty_size, "exec")
        root = Path(f"/proc/{container.pid}/root")
        resolved = _resolve(user if user is not None else spec.user, spec.group_add, [root])
        base_env = list(base.env)
        if not any(item.startswith("HOME=") for item in spec.env):  # HOME is the exec user's, as Docker's
            base_env = [item for item in base_env if not item.startswith("HOME=")] + [f"HOME={resolved.home}"]
        merged = _merge_env(base_env, env)
        plan = replace(
            base, kind="exec", target_pid=container.pid, unshare_flags=0, netns_path="", mounts=(),
            join_namespaces=(), shm_from="", cgroups=(), cgroup_make=(),
            argv=tuple(argv), env=merged, cwd=cwd or base.cwd,
            uid=resolved.uid, gid=resolved.gid, groups=resolved.groups, tty=tty, tty_size=tty_size,
        )  # fmt: skip
        pidfd = os.dup(container.pidfd)
        try:
            # the container's pidfd travels with the request: setns(pidfd, ...) cannot hit a recycled pid
            return await self._launch(plan, stdio or Stdio(), spec.cgroup, None, {"pidfd": pidfd})
        finally:
            os.close(pidfd)

    # -- remove --------------------------------------------------------------------------------------------

    def remove(self, container_id: str) -> None:
        """Delete the container's folder (writable layer included). The container must have exited."""
        shutil.rmtree(self.layout.container_dir(container_id), ignore_errors=True)


# -- the plan ---------------------------------------------------------------------------------------------


def _resolve(user: str, group_add: Sequence[str], dirs: Sequence[Path]) -> ResolvedUser:
    passwd = find_in_layers(dirs, "etc/passwd")
    group = find_in_layers(dirs, "etc/group")
    return resolve_user(user, passwd, group, group_add)


def _merge_env(base: Sequence[str], extra: Sequence[str]) -> tuple[str, ...]:
    out: dict[str, str] = {}
    for item in (*base, *extra):
        key, _, value = item.partition("=")
        out[key] = value
    return tuple(f"{k}={v}" for k, v in out.items())


def _check_path(path: str, what: str) -> None:
    if not path.startswith("/"):
        raise ContainerSpecError(f"{what}: {path!r} is not an absolute path")


def _check_tty_size(size: tuple[int, int], what: str) -> None:
    rows, cols = size
    if not (0 < rows < 65536 and 0 < cols < 65536):
        raise ContainerSpecError(f"{what}: bad tty size {rows}x{cols} (rows x columns, 1 to 65535)")


def _rlimit_number(name: str) -> int:
    attr = "RLIMIT_" + name.upper().removeprefix("RLIMIT_")
    number = getattr(resource, attr, None)
    if not isinstance(number, int):
        raise ContainerSpecError(f"ulimits: unknown limit {name!r}")
    return number


def _check_sysctl(key: str, network_mode: str, ipc_mode: str = "new") -> None:
    if key in _IPC_SYSCTLS or key.startswith("fs.mqueue."):
        if ipc_mode == "host":
            raise ContainerSpecError(f"sysctls: {key} cannot be set with the host IPC namespace")
        return
    if key.startswith("net."):
        if network_mode == "host":
            raise ContainerSpecError(f"sysctls: {key} cannot be set with the host network")
        return
    raise ContainerSpecError(f"sysctls: {key} is not namespaced and cannot be set in a container")


def build_plan(spec: ContainerSpec, layout: ContainerDirs, *, last_cap: int) -> LaunchPlan:
    """The start of `spec` as plain data for the child (reads the image's /etc/passwd and /etc/group)."""
    if not spec.argv:
        raise ContainerSpecError(f"container {spec.id}: no command (neither entrypoint nor command)")
    if not spec.lower_dirs:
        raise ContainerSpecError(f"container {spec.id}: no image layers")
    _check_path(spec.cwd, "working_dir")
    if spec.tty and spec.stdio != Stdio():
        raise ContainerSpecError(f"container {spec.id}: tty and stdio descriptors exclude each other")
    _check_tty_size(spec.tty_size, f"container {spec.id}")
    folder = layout.container_dir(spec.id)
    upper = folder / "upper"
    lower_dirs = tuple(str(d) for d in spec.lower_dirs)
    if not rootfs.fits_mount_data(lower_dirs, str(upper), str(folder / "work")) and (
        not rootfs.lowerdir_plus_supported()
    ):
        raise ContainerSpecError(
            f"container {spec.id}: {len(lower_dirs)} image layers do not fit in mount(2)'s options, and this "
            "kernel's overlayfs lacks lowerdir+ (Linux 6.8) to add them one by one"
        )
    user = _resolve(spec.user, spec.group_add, [upper, *spec.lower_dirs])
    # a spec from a launch file written before `pid_ns`/`ipc_ns`/`uts_ns` existed lacks them: its own
    pid_ns: Namespace = getattr(spec, "pid_ns", None) or Namespace()
    ipc_ns: Namespace = getattr(spec, "ipc_ns", None) or Namespace()
    uts_ns: Namespace = getattr(spec, "uts_ns", None) or Namespace()
    uts_host = uts_ns.mode == "host"
    if uts_host and spec.domainname:
        raise ContainerSpecError(f"container {spec.id}: a domainname needs the container's own UTS namespace")
    hostname = spec.hostname or (os.uname().nodename if uts_host else spec.id[:12])
    env = list(spec.env)
    keys = {item.partition("=")[0] for item in env}
    if "PATH" not in keys:
        env.insert(0, f"PATH={DEFAULT_PATH}")
    if "HOSTNAME" not in keys:
        env.insert(1, f"HOSTNAME={hostname}")
    if "HOME" not in keys:
        env.append(f"HOME={user.home}")
    steps: list[MountStep] = []
    for source, target in ((spec.etc_hostname, "/etc/hostname"), (spec.etc_hosts, "/etc/hosts"),
                           (spec.etc_resolv_conf, "/etc/resolv.conf")):  # fmt: skip
        if source is not None:
            steps.append(MountStep(kind="bind", source=str(source), target=target, recursive=False))
    argv = tuple(spec.argv)
    if spec.init:
        steps.append(
            MountStep(kind="bind", source=str(TINI), target=INIT_PATH, read_only=True, recursive=False)
        )
        argv = (INIT_PATH, "--", *argv)
    for mount in sorted(spec.mounts, key=lambda m: len([p for p in m.target.split("/") if p])):
        _check_path(mount.target, "mounts")
        if isinstance(mount, BindMount):
            if mount.create_source:
                mount.source.mkdir(parents=True, exist_ok=True)
            steps.append(MountStep(kind="bind", source=str(mount.source), target=mount.target,
                                   read_only=mount.read_only, recursive=mount.recursive,
                                   propagation=_PROPAGATION[mount.propagation]))  # fmt: skip
        elif isinstance(mount, TmpfsMount):
            options = [f"mode={mount.mode:o}"] + ([f"size={mount.size}"] if mount.size else [])
            flags = libc.MS_NOSUID | libc.MS_NODEV | (libc.MS_NOEXEC if mount.noexec else 0)
            steps.append(MountStep(kind="tmpfs", target=mount.target, read_only=mount.read_only, flags=flags,
                                   data=",".join(options)))  # fmt: skip
    for key, _ in spec.sysctls:
        _check_sysctl(key, spec.network.mode, ipc_ns.mode)
    if spec.network.mode == "join" and not spec.network.path:
        raise ContainerSpecError(f"container {spec.id}: network mode join needs a netns path")
    flags = libc.CLONE_NEWNS | (0 if uts_host else libc.CLONE_NEWUTS)
    joins: list[tuple[str, int]] = []
    shm_from = ""
    for what, namespace, clone in (("pid", pid_ns, libc.CLONE_NEWPID),
                                   ("ipc", ipc_ns, libc.CLONE_NEWIPC)):  # fmt: skip
        if namespace.mode in ("new", "none"):
            flags |= clone
        elif namespace.mode == "join":
            if namespace.pid <= 0:
                raise ContainerSpecError(f"container {spec.id}: joining a {what} namespace needs a pid")
            joins.append((f"/proc/{namespace.pid}/ns/{what}", clone))
    if ipc_ns.mode == "join":
        shm_from = f"/proc/{ipc_ns.pid}/ns/mnt"  # its /dev/shm, as Docker shares the donor's
    elif ipc_ns.mode == "host":
        steps.insert(0, MountStep(kind="bind", source="/dev/shm", target="/dev/shm", recursive=False))
    if spec.network.mode == "new":
        flags |= libc.CLONE_NEWNET
    caps = resolve_caps(cap_add=spec.cap_add, cap_drop=spec.cap_drop, privileged=spec.privileged,
                        last_cap=last_cap)  # fmt: skip
    return LaunchPlan(
        kind="start",
        container_id=spec.id,
        unshare_flags=flags,
        netns_path=spec.network.path if spec.network.mode == "join" else "",
        join_namespaces=tuple(joins),
        shm_from=shm_from,
        cgroups=tuple(spec.cgroup.paths) if spec.cgroup is not None else (),
        cgroup_make=spec.cgroup.pending if spec.cgroup is not None else (),
        rootfs=str(folder / "rootfs"),
        lower_dirs=lower_dirs,
        upper_dir=str(upper),
        work_dir=str(folder / "work"),
        read_only=spec.read_only,
        mounts=tuple(steps),
        masked_paths=() if spec.privileged else DEFAULT_MASKED_PATHS,
        readonly_paths=() if spec.privileged else DEFAULT_READONLY_PATHS,
        sys_read_only=not spec.privileged,
        dev_shm=ipc_ns.mode != "none",
        hostname="" if uts_host else hostname,  # the host's is never set from a container
        domainname=spec.domainname,
        sysctls=tuple(spec.sysctls),
        rlimits=tuple((_rlimit_number(r.name), r.soft, r.hard) for r in spec.rlimits),
        caps=cap_mask(caps),
        last_cap=last_cap,
        no_new_privs=spec.no_new_privs,
        uid=user.uid,
        gid=user.gid,
        groups=user.groups,
        cwd=spec.cwd,
        argv=argv,
        env=tuple(env),
        tty=spec.tty,
        tty_size=spec.tty_size,
    )
