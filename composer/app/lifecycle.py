"""The lifecycle commands: up, down, ps, logs, start, stop, restart, kill, pause, unpause, rm, exec, ls.

Commands that change containers talk to the project's supervisor over its control socket
(composer.engine.control), starting one when none runs: `up -d` leaves it behind, and a supervisor
that finds containers a killed one left running adopts them. `ps`, `logs`, `ls` and `exec` read the
state files and need no supervisor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from composer import dataclass_cache
from composer.errors import ComposerError, UsageError

if TYPE_CHECKING:
    from composer.engine.protocol import Request
    from composer.engine.records import ContainerRecord
    from composer.options import (
        DownArgs,
        ExecArgs,
        GlobalOptions,
        LogsArgs,
        PsArgs,
        RunArgs,
        ServicesArgs,
        UpArgs,
    )
    from composer.runtime.forkserver import ForkServer
    from composer.spec.model import Project
    from composer.storage.layout import Layout

READY_FD_ENV = "COMPOSER_READY_FD"
PROJECT_FD_ENV = "COMPOSER_PROJECT_FD"  # a supervisor started ahead of its name reads it there
SPAWN_TIMEOUT = 60.0
_LIVE = ("running", "paused", "restarting")


# --- the supervisor process -----------------------------------------------------------------------------


def supervise_command(argv: Sequence[str]) -> int:
    """`composer [--log-format F] [--debug] __supervise ROOT PROJECT`: the detached supervisor (PROJECT
    `-`: started ahead of its name, which it reads from a pipe). `python -m composer` comes here
    before the command line's parser is imported."""
    from composer import log

    rest = list(argv)
    fmt = rest[rest.index("--log-format") + 1] if "--log-format" in rest else "json"
    root, project = rest[rest.index("__supervise") + 1 :][:2]
    log.configure(fmt=fmt, debug="--debug" in rest, level="info")  # its log file is the project's history
    return supervise(root, None if project == "-" else project)


def supervise(root: str, project: str | None) -> int:
    """The supervisor of `project` (started by `_launch_supervisor`, detached): serve until idle.

    `project` None: started ahead of its name (`up` spawns it before loading the compose files, so
    that its imports overlap the client's load). It imports, then reads the name from the pipe in
    PROJECT_FD_ENV, and leaves quietly at EOF (the load failed) having made nothing."""
    import fcntl

    from composer.runtime.forkserver import ForkServer

    ready_fd = int(os.environ.pop(READY_FD_ENV, "-1"))
    name_fd = int(os.environ.pop(PROJECT_FD_ENV, "-1"))
    # the guardian first: it must hold neither the lock, the fork-server nor the pipes to the client
    guardian, farewell = _start_guardian(root, (ready_fd, name_fd))
    forkserver = None
    if project is None:
        try:
            forkserver = ForkServer.start()  # before the heavy imports, which it must not carry
            _import_engine()
            project = _read_name(name_fd)
        except BaseException as exc:  # its output goes nowhere yet: the client reads this
            _ready(ready_fd, f"error {exc!r}\n".encode())
            _leave(farewell, guardian, forkserver)
            raise
        if project is None:
            _leave(farewell, guardian, forkserver)
            return 0
        _log_to(Path(root), project)
    with contextlib.suppress(OSError):
        os.write(farewell, f"project {project}\n".encode())
    try:
        from composer.storage.layout import Layout

        layout = Layout(Path(root)).ensure()
        folder = layout.project_dir(project)
        folder.mkdir(parents=True, exist_ok=True)
        lock = os.open(folder / "supervisor.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _ready(ready_fd, b"busy\n")
            os.close(lock)
            return 0
        if forkserver is None:
            forkserver = ForkServer.start()  # before trio: the fork-server must not inherit its threads
        try:
            _import_engine()
            dataclass_cache.save()
            import trio

            from composer.engine import control, protocol
            from composer.engine.supervisor import Supervisor
            from composer.runtime.launch import Runtime

            supervisor = Supervisor(layout, Runtime(layout, forkserver), project)

            async def main() -> None:
                await control.serve(
                    supervisor, protocol.socket_path(folder), on_ready=lambda: _ready(ready_fd, b"ok\n")
                )

            # SIGINT/SIGTERM end the supervisor, not the containers (they are adopted by the next one)
            trio.run(main)
        except BaseException as exc:
            _ready(ready_fd, f"error {exc}\n".encode())
            raise
        finally:
            os.close(lock)
    finally:  # any way out that runs Python code is a chosen one: the guardian just leaves
        _leave(farewell, guardian, forkserver)
    return 0


def _leave(farewell: int, guardian: int, forkserver: ForkServer | None) -> None:
    """A chosen way out: stop the fork-server, tell the guardian "bye" (it leaves) and reap it."""
    if forkserver is not None:
        forkserver.close()
    with contextlib.suppress(OSError):
        os.write(farewell, b"bye")
    os.close(farewell)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(guardian, 0)


def _import_engine() -> None:
    """What the supervisor needs before it can answer (~0.25 s): imported with no thread running."""
    import trio  # noqa: F401

    import composer.engine.control
    import composer.engine.supervisor
    import composer.runtime.launch  # noqa: F401


def _read_name(fd: int) -> str | None:
    """The project's name, one line on `fd`; None at EOF without one (the client's load failed)."""
    if fd < 0:
        return None
    data = b""
    with contextlib.suppress(OSError):
        while not data.endswith(b"\n") and (chunk := os.read(fd, 256)):
            data += chunk
    os.close(fd)
    name = data.decode(errors="replace").strip()
    return name if data.endswith(b"\n") and name else None


def _log_to(root: Path, project: str) -> None:
    """stdout and stderr into the project's supervisor.log (a supervisor started ahead of its name,
    and its guardian, had them on /dev/null)."""
    from composer.storage.layout import Layout

    folder = Layout(root).project_dir(project)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / "supervisor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


RESPAWN_ENV = "COMPOSER_RESPAWNS"  # when the guardian replaced supervisors lately (epoch seconds)
RESPAWN_LIMIT = 3  # replacements within RESPAWN_WINDOW seconds, after which a guardian gives up
RESPAWN_WINDOW = 60.0


def _start_guardian(root: str, inherited: Sequence[int]) -> tuple[int, int]:
    """Fork the supervisor's guardian (stdlib only, before any thread exists): (its pid, the write end
    of the pipe it watches). The supervisor writes "project NAME" on it once it knows its project, and
    "bye" when it leaves by any way that runs its code. When the pipe closes without a bye (SIGKILL,
    the OOM killer), the guardian becomes the project's next supervisor, which adopts the running
    containers at once: their names resolve again, restart policies and healthchecks resume, as when
    systemd restarts dockerd with live-restore. More than RESPAWN_LIMIT replacements in RESPAWN_WINDOW
    seconds: it gives up (the next composer command starts one, as before)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(read_end)
        return pid, write_end
    try:
        watched = os.getppid()
        os.close(write_end)
        for fd in inherited:
            if fd >= 0:
                os.close(fd)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        said = b""
        while chunk := os.read(read_end, 256):
            said += chunk
        project = said.partition(b"\n")[0].removeprefix(b"project ").decode(errors="replace")
        if said.endswith(b"bye") or not said.startswith(b"project "):
            os._exit(0)
        now = time.time()
        recent = [float(t) for t in os.environ.get(RESPAWN_ENV, "").split(",") if t]
        recent = [t for t in recent if now - t < RESPAWN_WINDOW]
        event = "supervisor.respawn" if len(recent) < RESPAWN_LIMIT else "supervisor.respawn_refused"
        line = {
            "event": event, "level": "warning", "gone": watched, "pid": os.getpid(), "recent": len(recent),
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z",
        }  # fmt: skip
        _log_to(Path(root), project)  # where the supervisor wrote (it may have learnt the name late)
        os.write(1, (json.dumps(line) + "\n").encode())
        if len(recent) >= RESPAWN_LIMIT:
            os._exit(1)
        env = dict(os.environ, **{RESPAWN_ENV: ",".join(str(t) for t in (*recent, now))})
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.execve(sys.executable, _supervisor_argv(root, project, debug="--debug" in sys.argv), env)
    finally:
        os._exit(1)


def _ready(fd: int, message: bytes) -> None:
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.write(fd, message)
            os.close(fd)


def _spawn(layout: Layout, project: str, options: GlobalOptions) -> None:
    _await_ready(layout, project, _launch_supervisor(layout, project, options))


def _supervisor_argv(root: str, project: str | None, *, debug: bool) -> list[str]:
    """The command line of a supervisor (PROJECT "-": it reads its name from PROJECT_FD_ENV)."""
    argv = [sys.executable, "-m", "composer", "--log-format", "json"]
    if debug:
        argv.append("--debug")
    return [*argv, "__supervise", root, project or "-"]


# project -> the read end of the ready pipe of a supervisor started ahead of its first request
_early: dict[str, int] = {}


@dataclasses.dataclass
class _Unnamed:
    """A supervisor started before the project's name was known: its process, the write end of the
    pipe it reads the name from, the read end of its ready pipe."""

    process: subprocess.Popen[bytes]
    name_fd: int
    ready_fd: int

    def name(self, project: str) -> None:
        """Tell it its project (it then logs to the project's supervisor.log and answers as usual).
        One that died meanwhile (its imports failed, it was killed) is let go: the request then
        starts a supervisor the usual way, which says what is wrong."""
        try:
            os.write(self.name_fd, f"{project}\n".encode())
        except OSError:  # EPIPE: nobody reads the name any more
            os.close(self.ready_fd)
            self.process.wait()
            return
        finally:
            os.close(self.name_fd)
        _early[project] = self.ready_fd

    def cancel(self) -> None:
        """The load failed: it leaves at EOF on its name pipe, having made nothing; wait for it, so
        that nothing of this `up` outlives the command."""
        os.close(self.name_fd)
        os.close(self.ready_fd)
        self.process.wait()


def _start_unnamed(layout: Layout, options: GlobalOptions, guess: str) -> _Unnamed | None:
    """Start a supervisor ahead of the project's load (its ~0.25 s of imports overlap the client's
    load), unless one already runs for `guess` (the project's likely name: then the start would be
    wasted)."""
    if _running(layout, guess):
        return None
    name_read, name_write = os.pipe2(os.O_CLOEXEC)
    ready_read, ready_write = os.pipe2(os.O_CLOEXEC)
    env = dict(os.environ, **{READY_FD_ENV: str(ready_write), PROJECT_FD_ENV: str(name_read)})
    try:
        process = subprocess.Popen(
            _supervisor_argv(str(layout.root), None, debug=options.debug), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(ready_write, name_read),
            start_new_session=True, env=env, cwd="/",
        )  # fmt: skip
    except BaseException:
        os.close(name_write)
        os.close(ready_read)
        raise
    finally:
        os.close(name_read)
        os.close(ready_write)
    return _Unnamed(process, name_write, ready_read)


def _guess_name(options: GlobalOptions, cwd: str, environ: Mapping[str, str]) -> str:
    """The project's name as far as it can be told without reading the files (a top-level `name:`
    or a COMPOSE_PROJECT_NAME in `.env` can change it): only to skip a wasted early start."""
    from composer.spec.names import normalize_project_name

    name = options.project_name or environ.get("COMPOSE_PROJECT_NAME")
    if not name:
        first = options.files[0] if options.files and options.files[0] != "-" else None
        where = options.project_directory or (os.path.dirname(os.path.join(cwd, first)) if first else cwd)
        name = os.path.basename(os.path.normpath(where))
    return normalize_project_name(name)


def _running(layout: Layout, project: str) -> bool:
    with contextlib.suppress(OSError, ValueError):
        os.kill(int((layout.project_dir(project) / "supervisor.pid").read_text()), 0)
        return True
    return False


def _launch_supervisor(layout: Layout, project: str, options: GlobalOptions) -> int:
    """Start a detached supervisor; the read end of its ready pipe."""
    folder = layout.project_dir(project)
    folder.mkdir(parents=True, exist_ok=True)
    read_fd, write_fd = os.pipe()
    env = dict(os.environ)
    env[READY_FD_ENV] = str(write_fd)
    try:
        with open(folder / "supervisor.log", "ab") as out:
            subprocess.Popen(
                _supervisor_argv(str(layout.root), project, debug=options.debug), stdin=subprocess.DEVNULL,
                stdout=out, stderr=out, pass_fds=(write_fd,), start_new_session=True, env=env, cwd="/",
            )  # fmt: skip
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    return read_fd


def _await_ready(layout: Layout, project: str, read_fd: int) -> None:
    folder = layout.project_dir(project)
    try:
        with os.fdopen(read_fd, "rb") as reader:
            answer = reader.readline().decode(errors="replace").strip()
    except OSError as exc:
        raise ComposerError(f"the supervisor of project {project} did not start: {exc}") from None
    if answer in ("ok", "busy"):
        return
    tail = _tail(folder / "supervisor.log")
    raise ComposerError(f"the supervisor of project {project} did not start: {answer or tail or 'no answer'}")


def _tail(path: Path, lines: int = 3) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def _connect(layout: Layout, project: str, options: GlobalOptions) -> socket.socket:
    """A connection to the project's supervisor, started if none runs (sync: blocks while it starts)."""
    from composer.engine import protocol

    path = protocol.socket_path(layout.project_dir(project))
    early = _early.pop(project, None)
    if early is not None:
        _await_ready(layout, project, early)
    for attempt in range(40):
        try:
            return protocol.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            if attempt == 0:
                _spawn(layout, project, options)
            else:
                time.sleep(0.05 * attempt)
    raise ComposerError(f"cannot reach the supervisor of project {project} ({path})")


async def _call(
    layout: Layout,
    project: str,
    options: GlobalOptions,
    request: Request,
    on_message: Any,
    fds: Sequence[int] = (),
) -> tuple[int, str | None]:
    """One request to the project's supervisor from trio code (cancelling it closes the connection)."""
    import trio

    from composer.engine import protocol

    sock = await trio.to_thread.run_sync(_connect, layout, project, options)
    return await protocol.call(sock, request, on_message, fds)


def _call_sync(
    layout: Layout, project: str, options: GlobalOptions, request: Request, on_message: Any
) -> tuple[int, str | None]:
    """`_call` for the commands that need nothing else meanwhile (no trio to import)."""
    from composer.engine import protocol

    return protocol.exchange(_connect(layout, project, options), request, on_message)


# --- loading -------------------------------------------------------------------------------------------


def _layout(options: GlobalOptions, environ: Mapping[str, str]) -> Layout:
    from composer.storage.layout import Layout, root_from

    return Layout(root_from(environ, options.root)).ensure()


def _load(
    options: GlobalOptions, cwd: str, environ: Mapping[str, str], services: Sequence[str] = ()
) -> tuple[Project, dict[str, str], tuple[str, ...]]:
    from composer.app import _load_options, _warn
    from composer.spec.loader import load_project

    loaded = load_project(
        _load_options(options, cwd=cwd, environ=environ, interpolate=True, services=tuple(services)), _warn
    )
    project = loaded.project
    known = set(project.service_names()) | {s.name for s in project.disabled_services}
    for name in services:
        if name not in known:
            raise UsageError(f"no such service: {name}")
    return project, dict(loaded.environment), loaded.files


def _load_or_state(
    options: GlobalOptions, cwd: str, environ: Mapping[str, str], services: Sequence[str] = ()
) -> tuple[Project, dict[str, str], tuple[str, ...]]:
    """The project from its files or, with no file but a project name (`-p NAME down`, as Compose
    allows), from what its containers recorded."""
    from composer.errors import ConfigFileNotFound

    try:
        return _load(options, cwd, environ, services)
    except ConfigFileNotFound:
        name = options.project_name or environ.get("COMPOSE_PROJECT_NAME")
        if not name or options.files:
            raise
    return _project_from_state(_layout(options, environ), name), {}, ()


def _project_from_state(layout: Layout, name: str) -> Project:
    from composer.spec.model import Network, Project, Service, Volume

    records = _records(layout, name)
    services = {r.service: r.image for r in records}
    networks = sorted({n for r in records for n in r.networks})
    volumes = sorted({v for r in records for v in r.named_volumes})
    return Project(
        name=name,
        working_dir=records[0].labels.get("com.docker.compose.project.working_dir", "/") if records else "/",
        services=tuple(Service(name=s, image=i, image_name=i) for s, i in sorted(services.items())),
        networks=tuple(Network(key=n, name=n) for n in networks),
        volumes=tuple(Volume(key=v, name=v) for v in volumes),
    )


def _records(layout: Layout, project: str) -> list[ContainerRecord]:
    from composer.engine.records import RecordStore

    return RecordStore(layout.containers).of_project(project)


# --- progress --------------------------------------------------------------------------------------------

_WORDS = {
    ("create", "working"): "Creating", ("create", "done"): "Created",
    ("recreate", "working"): "Recreate", ("recreate", "done"): "Recreated",
    ("start", "working"): "Starting", ("start", "done"): "Started",
    ("restart", "working"): "Restarting", ("restart", "done"): "Restarted",
    ("stop", "working"): "Stopping", ("stop", "done"): "Stopped",
    ("kill", "working"): "Killing", ("kill", "done"): "Killed",
    ("remove", "working"): "Removing", ("remove", "done"): "Removed",
    ("rename", "done"): "Renamed", ("pause", "done"): "Paused", ("unpause", "done"): "Unpaused",
    ("pull", "working"): "Pulling", ("pull", "done"): "Pulled",
    ("build", "working"): "Building", ("build", "done"): "Built",
    ("wait", "working"): "Waiting", ("wait", "done"): "Healthy",
}  # fmt: skip


class Progress:
    """Compose's progress lines (` Container p-web-1  Started`) on standard error."""

    def __init__(self, project: Project | None, *, quiet: bool = False) -> None:
        self.networks = {n.name for n in project.networks} if project else set()
        self.volumes = {v.name for v in project.volumes} if project else set()
        self.quiet = quiet

    def kind(self, event: dict[str, Any]) -> str:
        name = event.get("container") or ""
        if event.get("action") in ("build", "pull"):
            return "Image"
        if event.get("service") is None:
            if name in self.networks:
                return "Network"
            if name in self.volumes:
                return "Volume"
            return "Image"
        return "Container" if name else "Service"

    def __call__(self, message: dict[str, Any]) -> None:
        if "warning" in message:
            print(f"WARN[0000] {message['warning']}", file=sys.stderr, flush=True)
            return
        event = message.get("event")
        if event is None or self.quiet:
            return
        action, status = event["action"], event["status"]
        subject = event.get("container") or event.get("service") or ""
        if status == "failed":
            word = "Error"
        elif action == "wait" and status == "warning":
            word = f"Warning {event.get('detail', '')}"
        else:
            found = _WORDS.get((action, status))
            if found is None:
                return
            word = found
        print(f" {self.kind(event)} {subject}  {word}", file=sys.stderr, flush=True)


def _finish(code: int, error: str | None) -> int:
    if error:
        raise ComposerError(error)
    return code


# --- up --------------------------------------------------------------------------------------------------


def _scale(items: Sequence[str]) -> dict[str, int]:
    out = {}
    for item in items:
        name, eq, number = item.partition("=")
        if not eq or not number.isdigit():
            raise UsageError(f"--scale {item!r}: expected SERVICE=NUMBER")
        out[name] = int(number)
    return out


def up(options: GlobalOptions, args: UpArgs, *, cwd: str, environ: Mapping[str, str]) -> int:
    """`composer up`: create and start the project's containers; attached, follow their output."""
    if args.detach and (
        args.abort_on_container_exit or args.abort_on_container_failure or args.exit_code_from
    ):
        raise UsageError("--abort-on-container-exit, --abort-on-container-failure and --exit-code-from "
                         "cannot be combined with -d")  # fmt: skip
    if args.build and args.no_build:
        raise UsageError("--build and --no-build are incompatible")
    if args.force_recreate and args.no_recreate:
        raise UsageError("--force-recreate and --no-recreate are incompatible")
    scale = _scale(args.scale)
    layout = _layout(options, environ)
    unnamed = None if args.dry_run else _start_unnamed(layout, options, _guess_name(options, cwd, environ))
    try:
        project, environment, files = _load(options, cwd, environ, args.services)
    except BaseException:
        if unnamed is not None:
            unnamed.cancel()
        raise
    if unnamed is not None:
        unnamed.name(project.name)
    from composer.engine.plan import UpOptions

    up_options = UpOptions(
        services=args.services, force_recreate=args.force_recreate, no_recreate=args.no_recreate,
        always_recreate_deps=args.always_recreate_deps, no_deps=args.no_deps,
        remove_orphans=args.remove_orphans, scale=scale, build=args.build,
        no_build=args.no_build, start=not args.no_start,
    )  # fmt: skip
    if not args.no_build and not args.dry_run:
        _build_missing(
            options, project, environment, layout, environ, always=args.build, services=args.services
        )
        up_options = dataclasses.replace(up_options, build=False)  # built here: the plan compares image ids
    if args.dry_run:
        return _print_plan(layout, project, up_options)
    from composer.engine.protocol import Request

    request = Request(
        op="up", project=project, environ=environment, up=up_options, timeout=args.timeout,
        wait=args.wait, wait_timeout=args.wait_timeout, compose_files=files,
    )  # fmt: skip
    progress = Progress(project)
    if args.detach or args.no_start:
        return _finish(*_call_sync(layout, project.name, options, request, progress))
    import trio

    return trio.run(_attached, layout, project, options, args, request, progress)


def _build_missing(
    options: GlobalOptions,
    project: Project,
    environment: Mapping[str, str],
    layout: Layout,
    environ: Mapping[str, str],
    *,
    always: bool,
    services: Sequence[str],
) -> None:
    """Build the services that have `build:` and no image yet (all of them with --build; those with
    `pull_policy: build` every time), as `up` does."""
    from composer.app import _run_builds, service_request
    from composer.image.store import ImageStore
    from composer.options import BuildOptions

    store = ImageStore(layout)
    chosen = set(services) or set(project.service_names())
    todo = [s for s in project.services if s.build is not None and s.name in chosen
            and (always or s.pull_policy == "build" or store.resolve(s.image_name) is None)]  # fmt: skip
    if not todo:
        return
    requests = [
        service_request(s, environment=dict(environment), build_args={}, no_cache=False) for s in todo
    ]
    _run_builds(options, BuildOptions(services=tuple(s.name for s in todo)), requests, environ)


def _print_plan(layout: Layout, project: Project, up_options: Any) -> int:
    from composer.engine.plan import plan_up
    from composer.engine.records import observe
    from composer.image.store import ImageStore
    from composer.network.manager import NetworkManager
    from composer.storage.volumes import VolumeStore

    store = ImageStore(layout)
    images = {s.name: img.id for s in project.services if (img := store.resolve(s.image_name)) is not None}
    networks = [r.name for r in NetworkManager(layout.root, firewall=None).networks()]
    volumes = [v.name for v in VolumeStore(layout).list()]
    observed = observe(project.name, _records(layout, project.name), networks, volumes)
    plan = plan_up(project, observed, images=images, options=up_options)
    print(plan.text(), end="" if plan.text().endswith("\n") else "\n")
    return 0


async def _attached(
    layout: Layout,
    project: Project,
    options: GlobalOptions,
    args: UpArgs,
    request: Request,
    progress: Progress,
) -> int:
    import trio

    from composer.engine.logs import read_logs
    from composer.engine.protocol import Request

    chosen = set(args.services) or set(project.service_names())
    if args.attach:
        chosen = set(args.attach)
    chosen -= set(args.no_attach)
    chosen -= {s.name for s in project.services if s.attach is False and s.name not in args.attach}
    states: dict[str, dict[str, Any]] = {}
    names: set[str] = set()
    exit_code = 0
    interrupted = False
    done = trio.Event()
    abort = trio.Event()
    watching = trio.Event()
    color = not args.no_color and sys.stdout.isatty()
    changes_in, changes_out = trio.open_memory_channel[dict[str, Any]](math.inf)

    def on_change(message: dict[str, Any]) -> None:
        if message.get("watching"):
            watching.set()
        change = message.get("change")
        if change is not None and change["service"] in chosen:
            with contextlib.suppress(trio.ClosedResourceError):
                changes_in.send_nowait(change)

    async def watch() -> None:
        """Subscribed before `up` is sent (as Compose attaches first): a container that ends at once
        is still seen running, then exited."""
        await _call(layout, project.name, options, Request(op="watch"), on_change)
        changes_in.close()
        watching.set()

    async def announce() -> None:
        """Container exits, after the output they wrote last (the log files are polled)."""
        nonlocal exit_code
        async for change in changes_out:
            if change["name"] not in names:
                continue
            before = states.get(change["name"], {}).get("status")
            states[change["name"]] = change
            if change["status"] == "exited" and before not in (None, "exited"):
                await trio.sleep(0.2)  # > 2 polls of the followers: the supervisor wrote the file first
                label = change["name"].removeprefix(f"{project.name}-")
                print(f"{label} exited with code {change['exit_code']}", flush=True)
                code = change["exit_code"] or 0
                if args.exit_code_from:
                    if change["service"] == args.exit_code_from:
                        exit_code = code
                        abort.set()
                elif args.abort_on_container_exit or (args.abort_on_container_failure and code):
                    exit_code = code
                    abort.set()
            caught_up = changes_out.statistics().current_buffer_used == 0  # states are the latest
            if (
                caught_up
                and len(states) >= len(names)
                and all(s["status"] not in _LIVE for s in states.values())
            ):
                done.set()
        done.set()  # the supervisor went away

    async def stop(kill: bool = False) -> None:
        op = "kill" if kill else "stop"
        stop_request = Request(op=op, project=project, services=args.services, timeout=args.timeout)
        await _call(layout, project.name, options, stop_request, progress)

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            await watching.wait()
            code, error = await _call(layout, project.name, options, request, progress)
            if error:
                nursery.cancel_scope.cancel()
            _finish(code, error)
            records = [r for r in _records(layout, project.name) if not r.one_off and r.service in chosen]
            names.update(r.name for r in records)
            labels = [(r.name.removeprefix(f"{project.name}-"), Path(r.log_path) if r.log_path else None)
                      for r in records]  # fmt: skip
            print(f"Attaching to {', '.join(label for label, _ in labels)}", file=sys.stderr, flush=True)
            if not names:
                done.set()

            async def follow() -> None:
                async with contextlib.aclosing(
                    read_logs(labels, follow=True, prefix=not args.no_log_prefix, color=color,
                              timestamps=args.timestamps, stop=done.is_set, poll_interval=0.05)
                ) as lines:  # fmt: skip
                    async for line in lines:
                        sys.stdout.write(line)
                        sys.stdout.flush()

            async def interrupts() -> None:
                nonlocal interrupted
                count = 0
                async for _ in signals:
                    interrupted = True
                    count += 1
                    if count == 1:
                        print(
                            "Gracefully stopping... (press Ctrl+C again to force)",
                            file=sys.stderr,
                            flush=True,
                        )
                        nursery.start_soon(stop)
                    else:
                        nursery.start_soon(stop, True)

            async def aborted() -> None:
                await abort.wait()
                print("Aborting on container exit...", file=sys.stderr, flush=True)
                await stop()

            nursery.start_soon(announce)
            nursery.start_soon(follow)
            nursery.start_soon(interrupts)
            nursery.start_soon(aborted)
            await done.wait()
            await trio.sleep(0.1)  # the last lines
            nursery.cancel_scope.cancel()
    return 130 if interrupted else exit_code


# --- down ------------------------------------------------------------------------------------------------


def down(options: GlobalOptions, args: DownArgs, *, cwd: str, environ: Mapping[str, str]) -> int:
    """`composer down`: stop and remove the project's containers and networks (-v: volumes too)."""

    from composer.engine.protocol import Request

    if args.rmi not in (None, "all", "local"):
        raise UsageError(f"--rmi {args.rmi!r}: expected 'all' or 'local'")
    project, environment, _ = _load_or_state(options, cwd, environ)
    layout = _layout(options, environ)
    if args.dry_run:
        from composer.engine.plan import plan_down
        from composer.engine.records import observe

        observed = observe(project.name, _records(layout, project.name), [], [])
        print(plan_down(project, observed, remove_volumes=args.volumes, remove_orphans=args.remove_orphans,
                        rmi=args.rmi).text())  # type: ignore[arg-type]  # fmt: skip
        return 0
    if not _records(layout, project.name) and not project.services:
        print(f'Warning: No resource found to remove for project "{project.name}".', file=sys.stderr)
        return 0
    request = Request(op="down", project=project, environ=environment, volumes=args.volumes,
                      remove_orphans=args.remove_orphans, rmi=args.rmi, timeout=args.timeout)  # fmt: skip
    return _finish(*_call_sync(layout, project.name, options, request, Progress(project)))


# --- start, stop, restart, kill, pause, unpause, rm ------------------------------------------------------


def services_command(
    options: GlobalOptions, args: ServicesArgs, *, cwd: str, environ: Mapping[str, str]
) -> int:

    from composer.engine.protocol import Request
    from composer.engine.translate import parse_signal

    project, environment, _ = _load_or_state(options, cwd, environ, args.services)
    layout = _layout(options, environ)
    sig = parse_signal(args.signal, field="--signal") if args.command == "kill" else int(signal.SIGKILL)
    op = args.command
    if op == "rm" and not args.stop:
        running = [r.name for r in _records(layout, project.name)
                   if r.observed_state() in _LIVE
                   and (not args.services or r.service in args.services)]  # fmt: skip
        if running and not args.force:
            print(f"Going to remove only the stopped containers; still running: {', '.join(running)}",
                  file=sys.stderr)  # fmt: skip
    if not _records(layout, project.name):
        if op in ("rm", "stop", "kill", "pause", "unpause", "restart"):
            if op != "stop":  # Compose's stop says nothing when nothing runs
                print(f"No container to {op}", file=sys.stderr)
            return 0
        raise ComposerError(f"service {'/'.join(args.services) or project.name}: no container to start; "
                            "run composer up")  # fmt: skip

    progress = Progress(project)
    if op == "rm" and args.stop:
        stop = Request(op="stop", project=project, services=args.services, timeout=args.timeout)
        _finish(*_call_sync(layout, project.name, options, stop, progress))
    request = Request(op=op, project=project, environ=environment, services=args.services,
                      timeout=args.timeout, signal=sig, volumes=args.volumes)  # fmt: skip
    return _finish(*_call_sync(layout, project.name, options, request, progress))


# --- ps --------------------------------------------------------------------------------------------------


def _ago(seconds: float) -> str:
    from composer.app import human_duration

    return human_duration(seconds)


def status_text(record: ContainerRecord, now: float) -> str:
    """Docker's Status column: `Up 5 seconds (healthy)`, `Exited (0) 3 minutes ago`, `Created`."""
    state = record.observed_state()
    if state == "created":
        return "Created"
    if state in ("running", "paused"):
        text = f"Up {_ago(now - (record.started_at or now))}"
        if state == "paused":
            return text + " (Paused)"
        if record.health:
            text += f" ({'health: starting' if record.health == 'starting' else record.health})"
        return text
    if state == "restarting":
        return f"Restarting ({record.exit_code}) {_ago(now - (record.finished_at or now))} ago"
    return f"Exited ({record.observed_exit_code()}) {_ago(now - (record.finished_at or now))} ago"


def _ps_json(record: ContainerRecord, project: str, now: float) -> dict[str, Any]:
    created = time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(record.created))
    publishers = []
    for text in record.ports:
        host, _, rest = text.partition("->")
        url, _, port = host.rpartition(":")
        target, _, protocol = rest.partition("/")
        publishers.append(
            {"URL": url, "TargetPort": int(target), "PublishedPort": int(port), "Protocol": protocol}
        )
    return {
        "Command": f'"{record.command}"',
        "CreatedAt": created,
        "ExitCode": record.observed_exit_code() or 0,
        "Health": record.health or "",
        "ID": record.id,
        "Image": record.image,
        "Labels": ",".join(f"{k}={v}" for k, v in sorted(record.labels.items())),
        "LocalVolumes": str(len(record.named_volumes) + len(record.anonymous_volumes)),
        "Mounts": ",".join([*record.named_volumes, *record.anonymous_volumes.values()]),
        "Name": record.name,
        "Names": record.name,
        "Networks": ",".join(sorted(record.networks)),
        "Ports": ", ".join(record.ports),
        "Project": project,
        "Publishers": publishers,
        "RunningFor": f"{_ago(now - record.created)} ago",
        "Service": record.service,
        "Size": "0B",
        "State": record.observed_state(),
        "Status": status_text(record, now),
    }


def ps(options: GlobalOptions, args: PsArgs, *, cwd: str, environ: Mapping[str, str]) -> int:
    """`composer ps`: the project's containers from the state files: running ones, not those of `run`;
    -a (or --status) all of them, `run`'s one-off containers included (Compose's oneoff filter)."""
    project, _, _ = _load_or_state(options, cwd, environ, args.services)
    layout = _layout(options, environ)
    now = time.time()
    one_off = args.all or bool(args.status)
    records = [r for r in _records(layout, project.name) if one_off or not r.one_off]
    if args.services:
        records = [r for r in records if r.service in args.services]
    if args.status:
        records = [r for r in records if r.observed_state() in args.status]
    elif not args.all:
        records = [r for r in records if r.observed_state() in _LIVE]
    records.sort(key=lambda r: r.name)
    if args.list_services:
        for name in sorted({r.service for r in records}):
            print(name)
        return 0
    if args.quiet:
        for record in records:
            print(record.id)
        return 0
    rows = [_ps_json(r, project.name, now) for r in records]
    if args.format == "json":
        print(json.dumps(rows, separators=(",", ":")))
        return 0
    if args.format != "table":
        raise UsageError(f"--format {args.format!r}: expected table or json")
    headers = ("NAME", "IMAGE", "COMMAND", "SERVICE", "CREATED", "STATUS", "PORTS")
    cells = ("Name", "Image", "Command", "Service", "RunningFor", "Status", "Ports")
    _print_table(headers, [[_short_command(r[c]) if c == "Command" else r[c] for c in cells] for r in rows])
    return 0


def _short_command(command: str) -> str:
    inner = command.strip('"')
    return f'"{inner[:20]}…"' if len(inner) > 20 else command


# --- logs ------------------------------------------------------------------------------------------------


def logs(options: GlobalOptions, args: LogsArgs, *, cwd: str, environ: Mapping[str, str]) -> int:
    """`composer logs`: the containers' output from their log files (-f: and what follows)."""
    import trio

    from composer.engine.logs import read_logs

    project, _, _ = _load_or_state(options, cwd, environ, args.services)
    layout = _layout(options, environ)
    tail: int | None = None
    if args.tail != "all":
        try:
            tail = int(args.tail)
        except ValueError:
            raise UsageError(f"--tail {args.tail!r}: expected a number or 'all'") from None
        tail = None if tail < 0 else tail

    records = [r for r in _records(layout, project.name) if not r.one_off]
    if args.services:
        records = [r for r in records if r.service in args.services]
    records.sort(key=lambda r: r.name)
    pairs = [
        (r.name.removeprefix(f"{project.name}-"), Path(r.log_path) if r.log_path else None) for r in records
    ]
    color = not args.no_color and sys.stdout.isatty()
    store_dir = layout.containers
    ids = [r.id for r in records]

    def all_stopped() -> bool:
        from composer.engine.records import RecordStore

        store = RecordStore(store_dir)
        return all((rec := store.load(i)) is None or rec.observed_state() not in _LIVE for i in ids)

    async def main() -> int:
        async with contextlib.aclosing(
            read_logs(pairs, tail=tail, since=args.since, until=args.until, timestamps=args.timestamps,
                      follow=args.follow, prefix=not args.no_log_prefix, color=color, stop=all_stopped)
        ) as lines:  # fmt: skip
            async for line in lines:
                sys.stdout.write(line)
                sys.stdout.flush()
        return 0

    try:
        return trio.run(main)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


# --- exec ------------------------------------------------------------------------------------------------


def exec_(options: GlobalOptions, args: ExecArgs, *, cwd: str, environ: Mapping[str, str]) -> int:
    """`composer exec SERVICE COMMAND...`: run a command in a running container of the service."""
    import dataclasses

    from composer.runtime.forkserver import ForkServer

    project, _, _ = _load(options, cwd, environ, (args.service,))
    layout = _layout(options, environ)
    found = [r for r in _records(layout, project.name)
             if r.service == args.service and not r.one_off and r.number == args.index]  # fmt: skip
    if not found:
        raise ComposerError(f"service {args.service!r} has no container number {args.index}")
    record = found[0]
    if record.observed_state() != "running":
        raise ComposerError(f"container {record.name} is not running")
    from composer.engine.records import RecordStore

    launch = RecordStore(layout.containers).load_launch(record.id)
    spec = getattr(launch, "spec", None)
    pid = record.pid
    if spec is None or pid is None:
        raise ComposerError(f"container {record.name}: its launch spec is missing")
    from composer.app.terminal import StdioPipes, wants_tty

    tty = not args.detach and wants_tty(no_tty=args.no_tty)
    forkserver = ForkServer.start()
    try:
        import trio

        from composer.runtime.launch import ContainerStartError, Runtime
        from composer.runtime.spec import Stdio

        runtime = Runtime(layout, forkserver)

        async def main() -> int:
            from composer.runtime.cgroups import Cgroup, CgroupError

            container_spec = spec
            with contextlib.suppress(CgroupError):  # the command joins the container's cgroup, as in Docker
                container_spec = dataclasses.replace(spec, cgroup=Cgroup.load(record.id))
            container = runtime.adopt(container_spec, pid)
            try:
                if tty:
                    return await _exec_tty(runtime, container, args)
                if args.detach:
                    await runtime.start_exec(
                        container, list(args.command), env=args.env, user=args.user, cwd=args.workdir
                    )
                    return 0
                # -T at a terminal: the process gets pipes, never our terminal itself
                with contextlib.closing(StdioPipes.open()) as pipes:
                    stdin, stdout, stderr = pipes.given
                    process = await runtime.start_exec(
                        container, list(args.command), env=args.env, user=args.user, cwd=args.workdir,
                        stdio=Stdio(stdin=stdin, stdout=stdout, stderr=stderr),
                    )  # fmt: skip
                    pipes.handed_over()
                    try:
                        finished = trio.Event()
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(pipes.copy, finished)
                            status = await process.wait()
                            finished.set()
                    except BaseException:
                        await process.kill_and_reap()
                        raise
                return status.code
            except ContainerStartError as exc:
                if exc.stage != "exec":
                    raise
                # like `docker exec`: 127 for a command not found, 126 for one that cannot run
                print(exc.render(), file=sys.stderr)
                return 127 if exc.errno == errno.ENOENT else 126
            finally:
                os.close(container.pidfd) if container._status is None else None

        return trio.run(main)
    finally:
        forkserver.close()


async def _exec_tty(runtime: Any, container: Any, args: ExecArgs) -> int:
    """`exec` with a pseudo-terminal: the caller's terminal relayed to it (composer.app.terminal)."""
    import trio

    from composer.app.terminal import raw_mode, relay, terminal_size

    process = await runtime.start_exec(
        container, list(args.command), env=args.env, user=args.user, cwd=args.workdir, tty=True,
        tty_size=terminal_size(1),
    )  # fmt: skip
    terminal = process.terminal
    status: Any = None
    try:
        with raw_mode(0):
            finished = trio.Event()
            async with trio.open_nursery() as nursery:

                async def wait() -> None:
                    nonlocal status
                    status = await process.wait()
                    finished.set()

                nursery.start_soon(wait)
                await relay(terminal.fd, finished)
    except BaseException:
        await process.kill_and_reap()
        raise
    finally:
        terminal.close()
    return int(status.code)


# --- ls --------------------------------------------------------------------------------------------------


def ls(
    options: GlobalOptions, *, all_projects: bool, quiet: bool, fmt: str, environ: Mapping[str, str]
) -> int:
    """`composer ls`: the projects that have containers (running ones; -a: all)."""
    from composer.engine.records import RecordStore

    layout = _layout(options, environ)
    by_project: dict[str, list[ContainerRecord]] = {}
    for record in RecordStore(layout.containers).all():
        by_project.setdefault(record.project, []).append(record)
    rows = []
    for name in sorted(by_project):
        records = by_project[name]
        counts: dict[str, int] = {}
        for record in records:
            state = record.observed_state()
            counts[state] = counts.get(state, 0) + 1
        if not all_projects and not counts.get("running"):
            continue
        status = ", ".join(f"{state}({count})" for state, count in sorted(counts.items()))
        files = records[0].labels.get("com.docker.compose.project.config_files", "")
        rows.append({"Name": name, "Status": status, "ConfigFiles": files})
    if quiet:
        for row in rows:
            print(row["Name"])
    elif fmt == "json":
        print(json.dumps(rows, separators=(",", ":")))
    else:
        _print_table(
            ("NAME", "STATUS", "CONFIG FILES"), [(r["Name"], r["Status"], r["ConfigFiles"]) for r in rows]
        )
    return 0


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Docker's plain tables: columns padded to their widest cell, three spaces apart."""
    table = [tuple(headers), *(tuple(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(headers))]
    for line in table:
        print("   ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip())


# --- port, top, images, wait, events -------------------------------------------------------------------


def _service_records(layout: Layout, project: Project, services: Sequence[str]) -> list[ContainerRecord]:
    found = [r for r in _records(layout, project.name) if not r.one_off]
    if services:
        found = [r for r in found if r.service in services]
    return sorted(found, key=lambda r: r.name)


def port(
    options: GlobalOptions,
    *,
    service: str,
    private_port: str,
    protocol: str,
    index: int,
    cwd: str,
    environ: Mapping[str, str],
) -> int:
    """`composer port SERVICE PRIVATE_PORT`: the host address a container port is published on."""
    project, _, _ = _load(options, cwd, environ, (service,))
    target = private_port.partition("/")[0]
    if not target.isdigit():
        raise UsageError(f"port {private_port!r}: expected a port number")
    found = [r for r in _service_records(_layout(options, environ), project, (service,)) if r.number == index]
    if not found or found[0].observed_state() not in _LIVE:
        raise ComposerError(f"service {service!r} has no running container number {index}")
    for text in found[0].ports:
        host, _, rest = text.partition("->")
        if rest == f"{target}/{protocol}":
            print(host)
            return 0
    raise ComposerError(f"no port {target}/{protocol} is published for {found[0].name}")


def top(options: GlobalOptions, *, services: Sequence[str], cwd: str, environ: Mapping[str, str]) -> int:
    """`composer top`: the processes of each running container (from its cgroup), as `ps -ef` lists them."""
    from composer.runtime.cgroups import Cgroup, CgroupError

    project, _, _ = _load_or_state(options, cwd, environ, services)
    hertz = os.sysconf("SC_CLK_TCK")
    boot = time.time() - float(Path("/proc/uptime").read_text().split()[0])
    first = True
    for record in _service_records(_layout(options, environ), project, services):
        if record.observed_state() not in ("running", "paused"):
            continue
        try:
            pids = Cgroup.load(record.id).pids()
        except CgroupError:
            continue
        rows = []
        for pid in pids:
            info = _process_row(pid, hertz, boot)
            if info is not None:
                rows.append(info)
        if not first:
            print()
        first = False
        print(record.name)
        _print_table(("UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"), rows)
    return 0


def _process_row(pid: int, hertz: int, boot: float) -> tuple[str, ...] | None:
    import pwd

    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        uid = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2 :].split()
    ppid, tty_nr = int(fields[1]), int(fields[4])
    cpu = (int(fields[11]) + int(fields[12])) // hertz
    started = boot + int(fields[19]) / hertz
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    command = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
    if not command:
        command = "[" + stat[stat.index(b"(") + 1 : stat.rindex(b")")].decode(errors="replace") + "]"
    return (
        user, str(pid), str(ppid), "0", time.strftime("%H:%M", time.localtime(started)),
        "?" if tty_nr == 0 else "pts", f"{cpu // 3600:02d}:{cpu // 60 % 60:02d}:{cpu % 60:02d}", command,
    )  # fmt: skip


def images(options: GlobalOptions, *, services: Sequence[str], quiet: bool, fmt: str,
           cwd: str, environ: Mapping[str, str]) -> int:  # fmt: skip
    """`composer images`: the image each container of the project runs."""
    from composer.app import human_size
    from composer.image.store import ImageStore

    project, _, _ = _load_or_state(options, cwd, environ, services)
    layout = _layout(options, environ)
    store = ImageStore(layout)
    rows = []
    for record in _service_records(layout, project, services):
        image = store.resolve(record.image_id)
        repository, _, tag = (image.tags[0] if image and image.tags else record.image).rpartition(":")
        rows.append({
            "ContainerName": record.name, "Repository": repository or record.image, "Tag": tag or "latest",
            "ID": record.image_id, "Size": image.size if image else 0,
        })  # fmt: skip
    if quiet:
        for item_id in dict.fromkeys(str(r["ID"]) for r in rows):
            print(item_id.removeprefix("sha256:")[:12])
    elif fmt == "json":
        print(json.dumps(rows, separators=(",", ":")))
    else:
        _print_table(
            ("CONTAINER", "REPOSITORY", "TAG", "IMAGE ID", "SIZE"),
            [(str(r["ContainerName"]), str(r["Repository"]), str(r["Tag"]),
              str(r["ID"]).removeprefix("sha256:")[:12], human_size(int(r["Size"]))) for r in rows],  # type: ignore[call-overload]
        )  # fmt: skip
    return 0


def wait(options: GlobalOptions, *, services: Sequence[str], down_project: bool,
         cwd: str, environ: Mapping[str, str]) -> int:  # fmt: skip
    """`composer wait SERVICE...`: block until the services' containers stop; the first exit code."""
    from composer.engine.records import RecordStore

    project, _, _ = _load_or_state(options, cwd, environ, services)
    layout = _layout(options, environ)
    records = _service_records(layout, project, services)
    if not records:
        raise ComposerError(f"no container for {', '.join(services) or 'the project'}")
    store = RecordStore(layout.containers)
    code: int | None = None
    pending = {r.id for r in records}
    while pending:
        for container_id in sorted(pending):
            rec = store.load(container_id)
            if rec is None or rec.observed_state() not in _LIVE:
                pending.discard(container_id)
                if code is None:
                    code = (rec.observed_exit_code() if rec else 0) or 0
        time.sleep(0.1)
    if down_project:
        from composer.options import DownArgs

        down(options, DownArgs(), cwd=cwd, environ=environ)
    return code or 0


def events(options: GlobalOptions, *, services: Sequence[str], as_json: bool,
           cwd: str, environ: Mapping[str, str]) -> int:  # fmt: skip
    """`composer events`: container changes as they happen (create, start, die, health_status, destroy)."""
    import trio

    from composer.engine.protocol import Request

    project, _, _ = _load_or_state(options, cwd, environ, services)
    layout = _layout(options, environ)
    last: dict[str, dict[str, Any]] = {}
    ids = {r.name: r.id for r in _records(layout, project.name)}

    def on_change(message: dict[str, Any]) -> None:
        change = message.get("change")
        if change is None or (services and change["service"] not in services):
            return
        before = last.get(change["name"])
        last[change["name"]] = change
        actions = _event_actions(before, change)
        if not ids.get(change["name"]):
            ids.update({r.name: r.id for r in _records(layout, project.name)})
        for action in actions:
            now = time.time()
            attributes = {"name": change["name"], "image": "", "exitCode": change["exit_code"]}
            if as_json:
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
                item = {"time": stamp,
                        "type": "container", "action": action, "id": ids.get(change["name"], ""),
                        "service": change["service"], "attributes": attributes}  # fmt: skip
                print(json.dumps(item), flush=True)
            else:
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now))
                print(
                    f"{stamp} container {action} {ids.get(change['name'], '')} (name={change['name']})",
                    flush=True,
                )

    async def main() -> int:
        with contextlib.suppress(KeyboardInterrupt):
            code, error = await _call(
                layout, project.name, options, Request(op="watch", project=project), on_change
            )
            return _finish(code, error)
        return 0

    return trio.run(main)


def _event_actions(before: dict[str, Any] | None, change: dict[str, Any]) -> list[str]:
    """Docker's event actions for a change of state (first sight of a container emits nothing)."""
    status = change["status"]
    if before is None:
        return ["create"] if status == "created" else []
    old = before["status"]
    out = []
    if status is None:
        return ["destroy"]
    if status != old:
        out.append({"running": "start" if old != "paused" else "unpause", "exited": "die",
                    "paused": "pause", "restarting": "restart"}.get(status, status))  # fmt: skip
    if change["health"] and change["health"] != before.get("health") and status == "running":
        out.append(f"health_status: {change['health']}")
    return out


# --- run -------------------------------------------------------------------------------------------------


def one_off_service(
    project: Project, service: Any, args: RunArgs, environ: Mapping[str, str], *, cwd: str, tty: bool
) -> Any:
    """The service as `run` starts it (Compose's rules): its command, entrypoint, environment, user and
    working dir replaced by the flags, `-v` mounts added, `-l` labels over its own; no restart policy,
    no container_name; no published ports but `-p` ones, or its own with --service-ports; on its
    networks under its container name only, unless --use-aliases (then the service's name and aliases
    too); `tty` as the command line decided. UsageError for a bad flag value."""
    import dataclasses
    import shlex

    from composer.spec.normalize import parse_port

    if args.publish and args.service_ports:
        raise UsageError("--service-ports and --publish are incompatible")
    env = dict(service.environment)
    for item in args.env:
        key, eq, value = item.partition("=")
        if eq:
            env[key] = value
        elif key in environ:
            env[key] = environ[key]
    ports = tuple(service.ports) if args.service_ports else ()
    if args.publish:
        published = []
        for item in args.publish:
            try:
                published += parse_port(item)
            except ValueError as exc:
                raise UsageError(f"run --publish {item!r}: {exc}") from None
        ports = tuple(published)
    labels = dict(service.labels)
    for item in args.labels:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise UsageError(f"run --label {item!r}: expected KEY=VALUE")
        labels[key] = value
    volumes = list(service.volumes)
    declared = {v.key for v in project.volumes}
    for item in args.volumes:
        mount = _volume_flag(item)
        if not mount.target.startswith("/"):
            raise UsageError(f"run --volume {item!r}: the target {mount.target!r} is not an absolute path")
        if mount.type == "bind" and mount.source is not None:
            source = mount.source
            if source.startswith("~"):
                source = environ.get("HOME", "/root") + source[1:]
            # relative to the current directory, as `docker run -v` takes it
            mount = dataclasses.replace(mount, source=os.path.normpath(os.path.join(cwd, source)))
        elif mount.type == "volume" and mount.source is not None and mount.source not in declared:
            raise UsageError(
                f"run --volume {item!r}: {mount.source!r} is not a volume of the project (one declared "
                "under the top-level volumes that a service uses); a host path starts with /, ./ or ~"
            )
        volumes.append(mount)
    networks = tuple(
        dataclasses.replace(net, aliases=(service.name, *net.aliases) if args.use_aliases else ())
        for net in service.networks
    )
    changes: dict[str, Any] = {
        "environment": tuple(env.items()),
        "restart": "no",
        "deploy": dataclasses.replace(service.deploy, restart_policy=None) if service.deploy else None,
        "container_name": None,
        "ports": ports,
        "labels": tuple(sorted(labels.items())),
        "volumes": tuple(volumes),
        "networks": networks,
        "tty": tty,
    }
    if args.command:
        changes["command"] = tuple(args.command)
    if args.entrypoint is not None:
        changes["entrypoint"] = tuple(shlex.split(args.entrypoint))
        if not args.command:
            changes["command"] = ()
    if args.user is not None:
        changes["user"] = args.user
    if args.workdir is not None:
        changes["working_dir"] = args.workdir
    return dataclasses.replace(service, **changes)


def _volume_flag(item: str) -> Any:
    from composer.spec.normalize import parse_volume

    try:
        return parse_volume(item)
    except ValueError as exc:
        raise UsageError(f"run --volume {item!r}: {exc}") from None


def run(options: GlobalOptions, args: RunArgs, *, cwd: str, environ: Mapping[str, str]) -> int:
    """`composer run SERVICE [COMMAND...]`: a one-off container, with the caller's stdio (or its terminal
    relayed to a pty of the container's) unless -d."""
    import dataclasses

    import trio

    from composer.app.terminal import StdioPipes, raw_mode, relay, terminal_size, wants_tty
    from composer.engine.plan import UpOptions
    from composer.engine.protocol import Request

    if args.tty and args.no_tty:
        raise UsageError("--tty and --no-TTY are incompatible")
    project, environment, files = _load(options, cwd, environ, (args.service,))
    layout = _layout(options, environ)
    service = project.service(args.service)
    if args.detach:  # its output goes to its log: a pty only if asked for (or the service's own)
        tty = args.tty or (bool(service.tty) and not args.no_tty)
    else:
        tty = wants_tty(no_tty=args.no_tty, force=args.tty)
    wanted = {m.source for item in args.volumes if (m := _volume_flag(item)).type == "volume" and m.source}
    known = {v.key for v in project.volumes}
    if wanted - known:  # a volume of a service outside `run`'s selection (loading for it dropped it)
        everything, _, _ = _load(options, cwd, environ)
        more = tuple(v for v in everything.volumes if v.key in wanted - known)
        project = dataclasses.replace(
            project, volumes=tuple(sorted((*project.volumes, *more), key=lambda v: v.key))
        )
    adapted = one_off_service(project, service, args, environ, cwd=cwd, tty=tty)
    if service.build is not None:
        _build_missing(
            options, project, environment, layout, environ, always=args.build, services=(args.service,)
        )
    run_project = dataclasses.replace(
        project, services=tuple(adapted if s.name == args.service else s for s in project.services)
    )
    deps = tuple(d.service for d in service.depends_on if d.service in project.service_names())
    progress = Progress(project)
    relayed = tty and not args.detach

    async def main() -> int:
        if deps and not args.no_deps:
            up_request = Request(op="up", project=project, environ=environment, up=UpOptions(services=deps))
            _finish(*await _call(layout, project.name, options, up_request, progress))
        request = Request(op="run", project=run_project, environ=environment, services=(args.service,),
                          name=args.name, detach=args.detach, remove=args.remove, compose_files=files,
                          tty=relayed, tty_size=terminal_size(1) if relayed else (24, 80))  # fmt: skip
        started: list[str] = []
        masters: list[int] = []
        got_terminal = trio.Event()
        finished = trio.Event()

        # -T at a terminal: the process gets pipes, never our terminal itself (as through Docker's API)
        pipes = StdioPipes.open() if not args.detach and not relayed else None

        def on_message(message: dict[str, Any]) -> None:
            if pipes is not None:
                pipes.handed_over()  # the supervisor holds its copies by now
            fds = list(message.get("fds", ()))
            if message.get("terminal") and fds and not masters:
                masters.append(fds.pop(0))
                got_terminal.set()
            for fd in fds:
                os.close(fd)
            if "started" in message:
                started.append(message["started"])
            else:
                progress(message)

        try:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                result: tuple[int, str | None] | None = None
                async with trio.open_nursery() as nursery:

                    async def call() -> None:
                        nonlocal result
                        fds = pipes.given if pipes is not None else ()
                        result = await _call(layout, project.name, options, request, on_message, fds=fds)
                        if pipes is not None:
                            pipes.handed_over()
                        finished.set()
                        if not got_terminal.is_set() and pipes is None:
                            nursery.cancel_scope.cancel()

                    async def copy() -> None:
                        assert pipes is not None
                        await pipes.copy(finished)
                        nursery.cancel_scope.cancel()

                    async def terminal() -> None:
                        await got_terminal.wait()
                        with raw_mode(0):
                            await relay(masters[0], finished)
                        nursery.cancel_scope.cancel()

                    async def interrupted() -> None:
                        async for _ in signals:
                            nursery.cancel_scope.cancel()  # the connection closes: the supervisor stops it
                            return

                    nursery.start_soon(call)
                    nursery.start_soon(interrupted)
                    if relayed:
                        nursery.start_soon(terminal)
                    if pipes is not None:
                        nursery.start_soon(copy)
        finally:
            for fd in masters:
                os.close(fd)
            if pipes is not None:
                pipes.close()
        if result is None:
            return 130
        code = _finish(*result)
        if args.detach and started:
            print(started[0])
        return code

    return trio.run(main)


# --- cp --------------------------------------------------------------------------------------------------


def cp(
    options: GlobalOptions,
    *,
    source: str,
    dest: str,
    index: int,
    archive: bool = False,
    follow: bool = False,
    cwd: str,
    environ: Mapping[str, str],
) -> int:
    """`composer cp SERVICE:SRC DEST|-` or `cp SRC|- SERVICE:DEST`: copy to or from a running container
    (composer/app/copy.py: the container's side runs chrooted into its root)."""
    from composer.app import copy

    into = ":" in dest and not dest.startswith(("/", "."))
    outof = ":" in source and not source.startswith(("/", "."))
    if into == outof:
        raise UsageError("cp: exactly one of SRC and DEST must be SERVICE:PATH")
    service, _, path = (dest if into else source).partition(":")
    project, _, _ = _load(options, cwd, environ, (service,))
    found = [r for r in _service_records(_layout(options, environ), project, (service,)) if r.number == index]
    if not found or found[0].observed_state() not in ("running", "paused") or found[0].pid is None:
        raise ComposerError(f"service {service!r} has no running container number {index}")
    host = source if into else dest
    host = host if host == "-" else os.path.join(cwd, host)  # keeps a trailing "/": DEST must be a folder
    if into:
        copy.copy_in(found[0].pid, host, path, archive=archive, follow=follow)
    else:
        copy.copy_out(found[0].pid, path, host, archive=archive, follow=follow)
    return 0
