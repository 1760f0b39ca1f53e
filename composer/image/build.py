"""The Dockerfile builder: stages, RUN steps in composer's own containers, COPY/ADD, and the layer cache.

    image = await build_image(request, store=store, runtime=runtime, layout=layout, progress=print)

What happens, Docker's rules throughout:

* The Dockerfile is parsed (composer.image.dockerfile). The meta ARGs (before the first FROM) take the
  build args given and expand the FROM lines. Only the stages the target needs are built: the target
  (the last stage by default), the stages it is FROM, and those it copies from (`COPY --from`).
* A stage starts FROM `scratch`, an earlier stage, a local image in the store, or `debian:<suite>`
  (bootstrapped once from the host's mirror by composer.image.base). There is no registry.
* RUN runs in a container of the image as it is at that point: its layers as the overlay's lower dirs,
  a fresh upper dir, the host's network (so apt reaches the mirror) with a copy of the host's
  /etc/resolv.conf, the image's env plus the build args in scope, its USER and WORKDIR. The output
  streams to `progress`, one line at a time, as `[service 3/7] | line`. The container's pid namespace
  ends with the step, so a daemon the step starts dies with it. The upper dir (whiteouts included)
  becomes the step's layer; a failure raises BuildError and keeps nothing.
* COPY/ADD read the build context (less what .dockerignore excludes) or another stage / image, and
  write a new layer folder directly (context.py): no container, no mount.
* ENV, ARG, LABEL, EXPOSE, VOLUME, USER, CMD, ENTRYPOINT, HEALTHCHECK, STOPSIGNAL, SHELL, ONBUILD only
  change the config; WORKDIR also makes its folder (a layer) when the image lacks it.
* Every layer step goes through the cache (buildcache.py): a hit skips the work, a miss runs the step
  and records the result. `no_cache` skips the lookups (the results are still recorded).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import tarfile
import tempfile
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import trio

from composer.errors import ComposerError, one_line
from composer.image.archive import host_architecture
from composer.image.base import ensure_base_image, is_base_reference
from composer.image.buildcache import BuildCache, step_key
from composer.image.config import Healthcheck, ImageConfig
from composer.image.context import CopyOp, LayeredTree, LayerWriter, SourceError, hash_ops, select
from composer.image.dockerfile import (
    Dockerfile,
    DockerfileError,
    Instruction,
    Stage,
    expand,
    heredoc_name,
    key_values,
    onbuild_trigger,
    parse_dockerfile,
    parse_duration,
    split_shell_words,
)
from composer.image.dockerignore import DockerIgnore
from composer.image.store import Image, ImageError, ImageStore
from composer.storage.layout import Layout

__all__ = [
    "BuildError",
    "BuildRequest",
    "RunMount",
    "RunStep",
    "StepRunner",
    "build_image",
    "dockerfile_refs",
    "read_dockerfile",
]

Progress = Callable[[str], None]

DEFAULT_SHELL = ("/bin/sh", "-c")
TAIL_LINES = 15
# Build args Docker accepts without an ARG line; they reach RUN but not the cache key or the image.
PROXY_ARGS = frozenset(
    name
    for base in ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")
    for name in (base, base.lower())
)
_GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "ppc64le": "ppc64le",
            "s390x": "s390x", "riscv64": "riscv64"}  # fmt: skip
_URL = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|git@)", re.IGNORECASE)
_HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


class BuildError(ComposerError):
    """A build failed: `service web: Dockerfile:7: RUN ...: exit code 2`, then the last lines of output."""

    def __init__(
        self, message: str, *, service: str = "", file: str = "", line: int = 0, output: Sequence[str] = ()
    ) -> None:
        super().__init__(message)
        self.service, self.file, self.line, self.output = service, file, line, tuple(output)

    def render(self) -> str:
        head = f"service {self.service}: " if self.service else ""
        where = (
            f"{self.file}:{self.line}: "
            if self.file and self.line
            else (f"{self.file}: " if self.file else "")
        )
        text = one_line(f"{head}{where}{self.message}")
        if self.output:
            text += "\n" + "\n".join(f"  | {one_line(line)}" for line in self.output)
        return text


class UserError(ComposerError):
    """A --chown user or group the image does not define."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunMount:
    """A mount for a RUN step: a bind of `source` (a host path), or a tmpfs when `source` is None."""

    target: str
    source: Path | None = None
    read_only: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStep:
    """One RUN step's container, as plain data (the image layer may not import the runtime: the
    engine's adapter turns this into a ContainerSpec)."""

    id: str
    lower_dirs: tuple[Path, ...]  # top first
    argv: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    user: str
    hostname: str
    mounts: tuple[RunMount, ...]
    etc_hosts: Path
    etc_resolv_conf: Path
    network: str  # "host" or "none"
    output: int  # the descriptor for the step's stdout and stderr (the runner duplicates it)


class StepRunner(Protocol):
    """Runs RUN steps in containers (composer.engine.builds.RuntimeStepRunner is the real one)."""

    async def run(self, step: RunStep) -> int:
        """Start the step's container, wait for it, return its exit code (128+N for signal N).
        Raises ComposerError when it cannot start. The writable layer stays until `remove`."""
        ...

    def upper_dir(self, step_id: str) -> Path:
        """The container's upper dir (its changes, overlay whiteouts included) after `run`."""
        ...

    def remove(self, step_id: str) -> None:
        """Delete the container's folder (whatever of the upper dir is left)."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildRequest:
    context: Path
    dockerfile: Path | None = None  # relative to the context; None: <context>/Dockerfile
    dockerfile_inline: str | None = None
    target: str | None = None
    args: tuple[tuple[str, str], ...] = ()  # build args, compose semantics applied (bare names resolved)
    labels: tuple[tuple[str, str], ...] = ()
    tags: tuple[str, ...] = ()
    no_cache: bool = False
    service: str = ""
    environ: Mapping[str, str] | None = None  # for the base-image bootstrap (proxies); None: os.environ


def dockerfile_path(request: BuildRequest) -> Path:
    path = request.dockerfile or Path("Dockerfile")
    return path if path.is_absolute() else request.context / path


def _shown(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def read_dockerfile(request: BuildRequest) -> Dockerfile:
    """Read and parse the request's Dockerfile (inline text wins); BuildError/DockerfileError on failure."""
    if request.dockerfile_inline is not None:
        return parse_dockerfile(request.dockerfile_inline, "<inline Dockerfile>")
    path = dockerfile_path(request)
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise BuildError(f"cannot read the Dockerfile: {exc.strerror or exc}", service=request.service,
                         file=_shown(path)) from exc  # fmt: skip
    return parse_dockerfile(text, _shown(path))


def _automatic_args() -> dict[str, str]:
    arch = _GO_ARCH.get(os.uname().machine, host_architecture())
    platform = f"linux/{arch}"
    return {"TARGETPLATFORM": platform, "TARGETOS": "linux", "TARGETARCH": arch, "TARGETVARIANT": "",
            "BUILDPLATFORM": platform, "BUILDOS": "linux", "BUILDARCH": arch, "BUILDVARIANT": ""}  # fmt: skip


def _meta_values(dockerfile: Dockerfile, args: Mapping[str, str]) -> dict[str, str | None]:
    values: dict[str, str | None] = dict(_automatic_args())
    for inst in dockerfile.meta_args:
        try:
            pairs = key_values(inst, values.get, escape=dockerfile.escape)
        except ValueError as exc:
            raise dockerfile.error(inst, str(exc)) from None
        for name, default in pairs:
            values[name] = args.get(name, default)
    return values


def dockerfile_refs(request: BuildRequest) -> set[str]:
    """The images (not stages, not scratch) the build reads: FROM bases and `COPY --from` images, with
    the meta args expanded. For ordering builds: a service FROM another service's image goes after it."""
    dockerfile = read_dockerfile(request)
    meta = _meta_values(dockerfile, dict(request.args))
    names = {stage.name for stage in dockerfile.stages if stage.name}
    refs: set[str] = set()
    for stage in dockerfile.stages:
        words = [stage.base] + [
            value for inst in stage.instructions if inst.keyword in ("COPY", "ADD")
            for value in inst.flag_values("from")
        ]  # fmt: skip
        for word in words:
            try:
                value = expand(word, meta.get, escape=dockerfile.escape)
            except ValueError:
                continue
            if value and value != "scratch" and value.lower() not in names and not value.isdecimal():
                refs.add(value)
    return refs


# --- state -------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _State:
    """A stage as it is being built."""

    diff_ids: tuple[str, ...] = ()
    config: ImageConfig = field(default_factory=ImageConfig)
    parent: Image | None = None  # a stored image whose layers are `diff_ids`
    base_raw: dict[str, Any] = field(default_factory=dict)  # the base image's OCI config (its history)
    history: list[dict[str, Any]] = field(default_factory=list)
    args: dict[str, str | None] = field(default_factory=dict)
    cmd_set: bool = False

    def lookup(self, name: str) -> str | None:
        env = self.config.env_dict()
        if name in env:
            return env[name]
        return self.args.get(name)


class _Lines:
    """Splits a byte stream into lines (\\n or \\r) for progress, keeping the last ones."""

    def __init__(self, emit: Progress) -> None:
        self.emit = emit
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._buffer = b""

    def feed(self, data: bytes) -> None:
        self._buffer += data
        parts = re.split(rb"\r\n|\n|\r", self._buffer)
        self._buffer = parts.pop()
        for part in parts:
            self._line(part)

    def close(self) -> None:
        if self._buffer:
            self._line(self._buffer)
            self._buffer = b""

    def _line(self, raw: bytes) -> None:
        text = raw.decode("utf-8", errors="replace").rstrip()
        if text:
            self.tail.append(text)
            self.emit(text)


# --- the builder ---------------------------------------------------------------------------------------


class _Builder:
    def __init__(
        self,
        request: BuildRequest,
        store: ImageStore,
        runtime: StepRunner,
        layout: Layout,
        progress: Progress,
    ) -> None:
        self.request = request
        self.store = store
        self.runtime = runtime
        self.layout = layout
        self.progress = progress
        self.cache = BuildCache(store)
        self.args = dict(request.args)
        self.used_args: set[str] = set()
        self.results: dict[int, _State] = {}
        self.step = 0
        self.total = 0
        self.dockerfile: Dockerfile | None = None
        self._ignore: DockerIgnore | None = None

    # -- messages

    def _prefix(self) -> str:
        service = f"{self.request.service} " if self.request.service else ""
        return f"[{service}{self.step}/{self.total}]"

    def _error(self, inst: Instruction | Stage, message: str, output: Sequence[str] = ()) -> BuildError:
        assert self.dockerfile is not None
        return BuildError(message, service=self.request.service, file=self.dockerfile.filename,
                          line=inst.line, output=output)  # fmt: skip

    def _expand(self, inst: Instruction, word: str, lookup: Callable[[str], str | None]) -> str:
        assert self.dockerfile is not None
        try:
            return expand(word, lookup, escape=self.dockerfile.escape)
        except ValueError as exc:
            raise self._error(inst, str(exc)) from None

    # -- the whole build

    async def run(self) -> Image:
        try:
            self.dockerfile = dockerfile = read_dockerfile(self.request)
        except DockerfileError as exc:
            raise BuildError(
                exc.message, service=self.request.service, file=exc.file, line=exc.line
            ) from None
        if not dockerfile.stages:
            raise BuildError("no FROM instruction: nothing to build", service=self.request.service,
                             file=dockerfile.filename)  # fmt: skip
        self.meta = _meta_values(dockerfile, self.args)
        self.used_args.update(
            name for inst in dockerfile.meta_args for name, _ in self._pairs(inst, self.meta.get)
        )
        if self.request.target:
            target = dockerfile.stage(self.request.target)
            if target is None:
                raise BuildError(f"target stage {self.request.target!r} could not be found",
                                 service=self.request.service, file=dockerfile.filename)  # fmt: skip
        else:
            target = dockerfile.stages[-1]
        needed = self._needed(target)
        self.total = sum(1 + len(stage.instructions) for stage in dockerfile.stages if stage.index in needed)
        self.layout.ensure()
        guard = self.store.ingest()  # no `image prune` may collect what this build has made, until it ends
        await trio.to_thread.run_sync(guard.__enter__)
        try:
            for stage in dockerfile.stages:
                if stage.index in needed:
                    self.results[stage.index] = await self._stage(stage)
            image = await trio.to_thread.run_sync(self._finish, self.results[target.index])
        finally:
            guard.__exit__(None, None, None)
        unused = sorted(set(self.args) - self.used_args - PROXY_ARGS)
        if unused:
            self._say(f"warning: build args not used by the Dockerfile: {', '.join(unused)}")
        return image

    def _say(self, text: str) -> None:
        service = f"[{self.request.service}] " if self.request.service else ""
        self.progress(service + text)

    def _pairs(self, inst: Instruction, lookup: Callable[[str], str | None]) -> list[tuple[str, str | None]]:
        assert self.dockerfile is not None
        try:
            return key_values(inst, lookup, escape=self.dockerfile.escape)
        except ValueError as exc:
            raise self._error(inst, str(exc)) from None

    def _needed(self, target: Stage) -> set[int]:
        assert self.dockerfile is not None
        dockerfile = self.dockerfile
        needed: set[int] = set()
        todo = [target]
        while todo:
            stage = todo.pop()
            if stage.index in needed:
                continue
            needed.add(stage.index)
            words = [self._expand_meta(stage, stage.base)]
            for inst in stage.instructions:
                if inst.keyword in ("COPY", "ADD"):
                    words += [self._expand_meta(inst, value) for value in inst.flag_values("from")]
            for position, word in enumerate(words):
                found = dockerfile.stage(word)
                if found is None or (position == 0 and word.isdecimal()):  # FROM takes stage names only
                    continue
                if found.index >= stage.index:
                    if position == 0:
                        continue  # FROM a later stage's name: Docker reads it as an image
                    raise self._error(stage, f"--from={word}: stage {word!r} is not defined before this one")
                todo.append(found)
        return needed

    def _expand_meta(self, where: Instruction | Stage, word: str) -> str:
        assert self.dockerfile is not None
        try:
            return expand(word, self.meta.get, escape=self.dockerfile.escape)
        except ValueError as exc:
            raise self._error(where, str(exc)) from None

    # -- stages

    async def _stage(self, stage: Stage) -> _State:
        assert self.dockerfile is not None
        self.step += 1
        base = self._expand_meta(stage, stage.base)
        self.progress(f"{self._prefix()} FROM {base}" + (f" AS {stage.name}" if stage.name else ""))
        if stage.platform:
            platform = self._expand_meta(stage, stage.platform)
            host = _automatic_args()["TARGETPLATFORM"]
            if platform not in (host, "linux", f"{host}/", _automatic_args()["TARGETARCH"]):
                raise self._error(
                    stage, f"--platform={platform}: only this host's platform ({host}) can be built"
                )
        state = await self._base_state(stage, base)
        for inst in stage.instructions:
            self.step += 1
            await self._instruction(state, inst)
        return state

    async def _base_state(self, stage: Stage, base: str) -> _State:
        assert self.dockerfile is not None
        earlier = self.dockerfile.stage(base)
        if earlier is not None and not base.isdecimal() and earlier.index < stage.index:
            prior = self.results[earlier.index]
            return _State(diff_ids=prior.diff_ids, config=prior.config, parent=prior.parent,
                          base_raw=prior.base_raw, history=list(prior.history))  # fmt: skip
        if base == "scratch":
            return _State()
        image = await self._image(stage, base)
        config = replace(image.config, on_build=())
        raw = await trio.to_thread.run_sync(self.store.raw_config, image)
        return _State(diff_ids=image.diff_ids, config=config, parent=image, base_raw=raw)

    async def _image(self, where: Instruction | Stage, ref: str) -> Image:
        """A local image, or a base image (bootstrapped once); there is no registry to pull from."""
        try:
            found = await trio.to_thread.run_sync(self.store.resolve, ref)
        except ImageError as exc:
            raise self._error(where, str(exc)) from None
        if found is not None:
            return found
        if is_base_reference(ref):
            prefix = self._prefix()

            def forward(line: str) -> None:
                self.progress(f"{prefix} {line}")

            try:
                image = await trio.to_thread.run_sync(
                    lambda: ensure_base_image(
                        self.store, ref, layout=self.layout, progress=forward, environ=self.request.environ
                    )
                )
            except ComposerError as exc:
                raise self._error(where, exc.render()) from None
            if image is not None:
                return image
        raise self._error(
            where,
            f"image {ref!r} is not in the local store and there is no registry to pull it from "
            "(base images: scratch, debian:<suite>; or build it first and refer to it by tag)",
        )

    # -- instructions

    async def _instruction(self, state: _State, inst: Instruction) -> None:
        keyword = inst.keyword
        handler = getattr(self, f"_do_{keyword.lower()}", None)
        if handler is None:
            raise self._error(inst, f"{keyword} is not supported")
        if keyword not in ("RUN", "COPY", "ADD", "WORKDIR"):
            self.progress(f"{self._prefix()} {one_line(inst.original)}")
            handler(state, inst)
            state.history.append({"created_by": inst.original, "empty_layer": True})
            return
        await handler(state, inst)

    # metadata

    def _do_arg(self, state: _State, inst: Instruction) -> None:
        for name, default in self._pairs(inst, state.lookup):
            self.used_args.add(name)
            if name in self.args:
                state.args[name] = self.args[name]
            elif default is None and name in self.meta:
                state.args[name] = self.meta[name]
            else:
                state.args[name] = default

    def _do_env(self, state: _State, inst: Instruction) -> None:
        config = state.config
        for key, value in self._pairs(inst, state.lookup):
            config = config.with_env(key, value or "")
        state.config = config

    def _do_label(self, state: _State, inst: Instruction) -> None:
        labels = dict(state.config.labels)
        labels.update((key, value or "") for key, value in self._pairs(inst, state.lookup))
        state.config = replace(state.config, labels=tuple(sorted(labels.items())))

    def _words(self, state: _State, inst: Instruction) -> list[str]:
        assert self.dockerfile is not None
        if inst.json_form:
            return [self._expand(inst, item, state.lookup) for item in inst.args]
        try:
            return split_shell_words(
                inst.args[0] if inst.args else "", state.lookup, escape=self.dockerfile.escape
            )
        except ValueError as exc:
            raise self._error(inst, str(exc)) from None

    def _do_expose(self, state: _State, inst: Instruction) -> None:
        ports = set(state.config.exposed_ports)
        for word in self._words(state, inst):
            for item in word.split():
                match = re.fullmatch(r"(\d+)(?:-(\d+))?(?:/(tcp|udp|sctp))?", item.lower())
                if not match or not 0 < int(match[1]) <= int(match[2] or match[1]) <= 65535:
                    raise self._error(inst, f"EXPOSE {item!r}: not PORT[-PORT][/tcp|udp|sctp]")
                proto = match[3] or "tcp"
                ports.update(
                    f"{port}/{proto}" for port in range(int(match[1]), int(match[2] or match[1]) + 1)
                )
        state.config = replace(state.config, exposed_ports=tuple(sorted(ports)))

    def _do_volume(self, state: _State, inst: Instruction) -> None:
        paths = [p for p in self._words(state, inst) if p]
        if not paths:
            raise self._error(inst, "VOLUME needs at least one path")
        state.config = replace(state.config, volumes=tuple(sorted(set(state.config.volumes) | set(paths))))

    def _one(self, state: _State, inst: Instruction) -> str:
        value = self._expand(inst, (inst.args[0] if inst.args else "").strip(), state.lookup)
        if not value:
            raise self._error(inst, f"{inst.keyword} needs an argument")
        return value

    def _do_user(self, state: _State, inst: Instruction) -> None:
        state.config = replace(state.config, user=self._one(state, inst))

    def _do_stopsignal(self, state: _State, inst: Instruction) -> None:
        state.config = replace(state.config, stop_signal=self._one(state, inst))

    def _command(self, state: _State, inst: Instruction) -> tuple[str, ...]:
        if inst.json_form:
            return tuple(inst.args)
        text = inst.args[0] if inst.args else ""
        return (*(state.config.shell or DEFAULT_SHELL), text) if text.strip() else ()

    def _do_cmd(self, state: _State, inst: Instruction) -> None:
        state.config = replace(state.config, cmd=self._command(state, inst))
        state.cmd_set = True

    def _do_entrypoint(self, state: _State, inst: Instruction) -> None:
        config = replace(state.config, entrypoint=self._command(state, inst))
        state.config = config if state.cmd_set else replace(config, cmd=None)

    def _do_shell(self, state: _State, inst: Instruction) -> None:
        if not inst.json_form or not inst.args:
            raise self._error(inst, 'SHELL needs the JSON form: SHELL ["executable", "parameters"]')
        state.config = replace(state.config, shell=tuple(inst.args))

    def _do_onbuild(self, state: _State, inst: Instruction) -> None:
        state.config = replace(state.config, on_build=(*state.config.on_build, onbuild_trigger(inst)))

    def _do_maintainer(self, state: _State, inst: Instruction) -> None:
        pass  # deprecated; Docker puts it in the image's Author field, which we do not keep

    def _do_healthcheck(self, state: _State, inst: Instruction) -> None:
        if inst.sub is None:
            if tuple(a.upper() for a in inst.args) != ("NONE",):
                raise self._error(inst, "HEALTHCHECK needs CMD or NONE")
            state.config = replace(state.config, healthcheck=Healthcheck(test=("NONE",)))
            return
        sub = inst.sub
        if sub.json_form:
            test: tuple[str, ...] = ("CMD", *sub.args)
        else:
            test = ("CMD-SHELL", sub.args[0] if sub.args else "")
        values: dict[str, int] = {}
        durations = (
            ("interval", "interval_ns"),
            ("timeout", "timeout_ns"),
            ("start-period", "start_period_ns"),
            ("start-interval", "start_interval_ns"),
        )
        for flag, key in durations:
            text = inst.flag(flag)
            if text is not None:
                try:
                    values[key] = parse_duration(text)
                except ValueError as exc:
                    raise self._error(inst, f"--{flag}: {exc}") from None
                if values[key] < 0:
                    raise self._error(inst, f"--{flag} cannot be negative")
        retries = inst.flag("retries")
        if retries is not None:
            if not retries.isdecimal():
                raise self._error(inst, f"--retries={retries}: not a number")
            values["retries"] = int(retries)
        state.config = replace(state.config, healthcheck=Healthcheck(test=test, **values))

    # layers

    def _layer_dirs(self, diff_ids: Sequence[str]) -> list[Path]:
        seen: set[str] = set()
        out: list[Path] = []
        for digest in reversed(diff_ids):
            if digest not in seen:
                seen.add(digest)
                out.append(self.layout.layer_dir(digest))
        return out

    def _lookup_cache(self, state: _State, inst: Instruction, key: str, text: str) -> bool:
        if self.request.no_cache:
            return False
        hit = self.cache.get(key)
        if hit is None or hit.diff_ids[: len(state.diff_ids)] != state.diff_ids:
            return False
        self.progress(f"{self._prefix()} CACHED {one_line(text)}")
        self._advance(state, hit, text)
        return True

    def _advance(self, state: _State, image: Image, text: str) -> None:
        state.diff_ids = image.diff_ids
        state.parent = image
        state.history.append({"created_by": text})

    def _commit(self, state: _State, folder: Path, key: str, text: str) -> Image:
        image = self.store.commit_rootfs(folder, state.config, parent=state.parent)
        self.cache.put(key, image, text)
        return image

    # WORKDIR

    async def _do_workdir(self, state: _State, inst: Instruction) -> None:
        value = self._one(state, inst)
        path = os.path.normpath(os.path.join(state.config.working_dir or "/", value))
        path = "/" + path.lstrip("/")
        state.config = replace(state.config, working_dir=path)
        text = f"WORKDIR {path}"
        node = LayeredTree(self._layer_dirs(state.diff_ids)).lookup(path)
        if node is not None and node.is_dir:
            self.progress(f"{self._prefix()} {text}")
            state.history.append({"created_by": text, "empty_layer": True})
            return
        key = step_key(diff_ids=state.diff_ids, config=state.config, step=text)
        if self._lookup_cache(state, inst, key, text):
            return
        self.progress(f"{self._prefix()} {text}")
        owner = self._owner_or_root(state)
        image = await trio.to_thread.run_sync(self._write_layer, state, key, text,
                                              lambda writer: writer.folder(path, owner))  # fmt: skip
        self._advance(state, image, text)

    def _owner_or_root(self, state: _State) -> tuple[int, int] | None:
        if not state.config.user:
            return None
        try:
            return self._chown(state, state.config.user)
        except UserError:
            return None

    def _write_layer(
        self, state: _State, key: str, text: str, fill: Callable[[LayerWriter], object]
    ) -> Image:
        self.layout.tmp.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.layout.tmp, prefix="build-layer-"))
        try:
            os.chmod(staging, 0o755)
            fill(LayerWriter(staging, LayeredTree(self._layer_dirs(state.diff_ids))))
            return self._commit(state, staging, key, text)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    # COPY / ADD

    def _chown(self, state: _State, spec: str) -> tuple[int, int]:
        """`user[:group]` (names or numbers) by the image's /etc/passwd and /etc/group; a user alone
        gives the same number as group (Docker's rule for --chown)."""
        tree = LayeredTree(self._layer_dirs(state.diff_ids))
        user, _, group = spec.partition(":")
        uid = int(user) if user.isdecimal() else _id_of(tree, "etc/passwd", user, "user")
        if not group:
            return uid, uid
        return uid, int(group) if group.isdecimal() else _id_of(tree, "etc/group", group, "group")

    def _context_tree(self) -> LayeredTree:
        if self._ignore is None:
            dockerfile = None if self.request.dockerfile_inline is not None else dockerfile_path(self.request)
            self._ignore = DockerIgnore.read(self.request.context, dockerfile)
        ignore = self._ignore
        return LayeredTree([self.request.context], ignored=ignore.ignored)

    async def _source_tree(self, state: _State, inst: Instruction, source: str) -> tuple[LayeredTree, str]:
        """The tree COPY --from reads and a name for messages."""
        assert self.dockerfile is not None
        stage = self.dockerfile.stage(source)
        if stage is not None and stage.index in self.results:
            return LayeredTree(self._layer_dirs(self.results[stage.index].diff_ids)), f"stage {source}"
        if stage is not None:
            raise self._error(inst, f"--from={source}: that stage is not built before this one")
        if source == "scratch":
            return LayeredTree([]), "scratch"
        image = await self._image(inst, source)
        return LayeredTree(self._layer_dirs(image.diff_ids)), f"image {source}"

    async def _do_copy(self, state: _State, inst: Instruction) -> None:
        await self._copy(state, inst, add=False)

    async def _do_add(self, state: _State, inst: Instruction) -> None:
        await self._copy(state, inst, add=True)

    async def _copy(self, state: _State, inst: Instruction, *, add: bool) -> None:
        for flag in ("parents", "exclude", "checksum", "keep-git-dir"):
            if inst.flag(flag) is not None:
                raise self._error(inst, f"{inst.keyword} --{flag} is not supported")
        words = self._words(state, inst)
        if len(words) < 2:
            raise self._error(inst, f"{inst.keyword} needs at least one source and a destination")
        *sources, dest = words
        workdir = state.config.working_dir or "/"
        dest_abs = dest if dest.startswith("/") else os.path.join(workdir, dest)
        if dest.endswith("/") or dest in (".", ".."):
            dest_abs = dest_abs.rstrip("/") + "/"
        chown = self._expand(inst, inst.flag("chown") or "", state.lookup) or None
        chmod_text = self._expand(inst, inst.flag("chmod") or "", state.lookup) or None
        chmod: int | None = None
        if chmod_text is not None:
            if not re.fullmatch(r"[0-7]{1,4}", chmod_text):
                raise self._error(inst, f"--chmod={chmod_text}: only octal modes (e.g. 755) are supported")
            chmod = int(chmod_text, 8)
        owner: tuple[int, int] | None = None
        if chown:
            try:
                owner = self._chown(state, chown)
            except UserError as exc:
                raise self._error(inst, f"--chown={chown}: {exc}") from None
        from_value = inst.flag("from")
        docs = {doc.name: doc for doc in inst.heredocs}
        inline: list[CopyOp] = []
        real_sources: list[str] = []
        for source in sources:
            name = heredoc_name(source)
            if name is not None and name in docs:
                doc = docs[name]
                data = doc.content
                if doc.expand:
                    assert self.dockerfile is not None
                    try:
                        data = expand(data, state.lookup, escape=self.dockerfile.escape, quotes=False)
                    except ValueError as exc:
                        raise self._error(inst, str(exc)) from None
                target = dest_abs if not dest_abs.endswith("/") else dest_abs + name
                inline.append(CopyOp(dest=target, node=None, data=data.encode()))
                continue
            if _URL.match(source):
                raise self._error(
                    inst,
                    f"{inst.keyword} {source}: remote sources are not supported (no network here but the "
                    "Debian mirror); download it into the build context",
                )
            real_sources.append(source)
        if from_value:
            tree, what = await self._source_tree(state, inst, self._expand(inst, from_value, state.lookup))
            keep_owner = True
        else:
            tree, what = self._context_tree(), "the build context"
            keep_owner = False
            for source in real_sources:
                clean = os.path.normpath(source.lstrip("/")) if source.lstrip("/") else "."
                if clean == ".." or clean.startswith("../"):
                    raise self._error(inst, f"{source}: outside the build context")
        image_tree = LayeredTree(self._layer_dirs(state.diff_ids))
        if not dest_abs.endswith("/"):
            node = image_tree.lookup(dest_abs)
            if (node is not None and node.is_dir) or len(real_sources) + len(inline) > 1:
                dest_abs += "/"
        ops: list[CopyOp] = list(inline)
        tars: list[tuple[CopyOp, str]] = []
        try:
            if real_sources:
                selected = await trio.to_thread.run_sync(
                    lambda: select(
                        tree, real_sources, dest_abs, dest_is_dir=dest_abs.endswith("/"), what=what
                    )
                )
                for op in selected:
                    if (
                        add
                        and not from_value
                        and op.node is not None
                        and not op.node.is_dir
                        and inst.flag("unpack") not in ("false", "0")
                        and _is_archive(op.node.real)
                    ):
                        tars.append((op, dest_abs))
                        continue
                    ops.append(op)
            content = await trio.to_thread.run_sync(
                lambda: hash_ops([*ops, *(op for op, _ in tars)], with_owner=keep_owner)
            )
        except SourceError as exc:
            raise self._error(inst, f"{inst.keyword}: {exc}") from None
        except OSError as exc:
            raise self._error(inst, f"{inst.keyword}: {exc.strerror or exc}: {exc.filename or ''}") from None
        flags = [(k, v) for k, v in inst.flags if k != "link"]
        text = f"{inst.keyword} " + " ".join([*(f"--{k}={v}" for k, v in flags), *sources, dest_abs])
        key = step_key(diff_ids=state.diff_ids, config=state.config, step=text, content=content)
        if self._lookup_cache(state, inst, key, text):
            return
        self.progress(f"{self._prefix()} {one_line(text)}")

        def fill(writer: LayerWriter) -> None:
            for op in ops:
                writer.write(op, owner=owner, chmod=chmod, keep_owner=keep_owner)
            for op, target in tars:
                assert op.node is not None
                folder, _ = writer.folder(target, owner)
                _extract(op.node.real, writer.root / folder.lstrip("/"))

        try:
            image = await trio.to_thread.run_sync(self._write_layer, state, key, text, fill)
        except (OSError, tarfile.TarError) as exc:
            raise self._error(inst, f"{inst.keyword}: {exc}") from None
        self._advance(state, image, text)

    # RUN

    def _run_argv(
        self, state: _State, inst: Instruction, mounts: list[RunMount], scratch: Path
    ) -> tuple[str, ...]:
        shell = state.config.shell or DEFAULT_SHELL
        if inst.json_form:
            if not inst.args:
                raise self._error(inst, "RUN needs a command")
            return tuple(inst.args)
        text = inst.args[0] if inst.args else ""
        if inst.heredocs:
            only = heredoc_name(text.strip())
            if only is not None and len(inst.heredocs) == 1 and inst.heredocs[0].name == only:
                script = inst.heredocs[0].content
                if script.startswith("#!"):  # a script with its own interpreter: run it as a file
                    path = scratch / "heredoc"
                    path.write_text(script)
                    os.chmod(path, 0o755)
                    mounts.append(RunMount(source=path, target="/dev/.composer-heredoc", read_only=True))
                    return ("/dev/.composer-heredoc",)
                return (*shell, script)
            text = text + "\n" + "".join(doc.content + doc.name + "\n" for doc in inst.heredocs)
        if not text.strip():
            raise self._error(inst, "RUN needs a command")
        return (*shell, text)

    def _run_mounts(self, state: _State, inst: Instruction, mounts: list[RunMount]) -> None:
        for value in inst.flag_values("mount"):
            fields = dict(
                [*part.split("=", 1), "true"][:2]
                for part in self._expand(inst, value, state.lookup).split(",")
            )
            kind = fields.get("type", "bind")
            target = fields.get("target") or fields.get("dst") or fields.get("destination")
            if not target:
                raise self._error(inst, f"--mount={value}: needs target=")
            if not target.startswith("/"):
                target = os.path.join(state.config.working_dir or "/", target)
            if kind == "cache":
                ident = fields.get("id") or target
                folder = (
                    self.layout.cache / "mounts" / step_key(diff_ids=(), config=ImageConfig(), step=ident)
                )
                folder.mkdir(parents=True, exist_ok=True)
                mounts.append(RunMount(source=folder, target=target))
            elif kind == "tmpfs":
                mounts.append(RunMount(target=target))
            elif kind == "bind" and "from" not in fields:
                source = os.path.normpath(fields.get("source") or fields.get("src") or ".").lstrip("/")
                if source == ".." or source.startswith("../"):
                    raise self._error(inst, f"--mount={value}: source outside the build context")
                read_only = fields.get("rw", fields.get("readwrite")) is None
                mounts.append(
                    RunMount(source=self.request.context / source, target=target, read_only=read_only)
                )
            else:
                raise self._error(inst, f"--mount={value}: type={kind} is not supported")

    async def _do_run(self, state: _State, inst: Instruction) -> None:
        network = inst.flag("network") or "default"
        if network not in ("default", "host", "none"):
            raise self._error(inst, f"--network={network}: only default, host and none are supported")
        if inst.flag("security") not in (None, "sandbox"):
            raise self._error(inst, "--security=insecure is not supported")
        self.layout.tmp.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=self.layout.tmp, prefix="build-run-"))
        try:
            mounts: list[RunMount] = []
            argv = self._run_argv(state, inst, mounts, scratch)
            self._run_mounts(state, inst, mounts)
            scoped = sorted((k, v) for k, v in state.args.items() if v is not None)
            env = dict(state.config.env_dict())
            for name, value in scoped:
                env.setdefault(name, value)
            for name in sorted(PROXY_ARGS & set(self.args)):
                env.setdefault(name, self.args[name])
            shown = "RUN " + (
                json.dumps(list(argv)) if inst.json_form else (inst.args[0] if inst.args else "")
            )
            flags = " ".join(f"--{k}={v}" for k, v in inst.flags)
            text = f"RUN {flags + ' ' if flags else ''}{json.dumps(list(argv))}"
            key = step_key(diff_ids=state.diff_ids, config=state.config, step=text, args=scoped)
            if self._lookup_cache(state, inst, key, shown):
                return
            self.progress(f"{self._prefix()} {one_line(shown)}")
            image = await self._execute(state, inst, argv, env, mounts, network, scratch, key, shown)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        self._advance(state, image, shown)

    async def _execute(
        self,
        state: _State,
        inst: Instruction,
        argv: tuple[str, ...],
        env: dict[str, str],
        mounts: list[RunMount],
        network: str,
        scratch: Path,
        key: str,
        shown: str,
    ) -> Image:
        lower = self._layer_dirs(state.diff_ids)
        if not lower:
            empty = scratch / "empty"
            empty.mkdir()
            lower = [empty]
        resolv = scratch / "resolv.conf"
        try:
            shutil.copyfile("/etc/resolv.conf", resolv)
        except OSError:
            resolv.write_text("")
        hosts = scratch / "hosts"
        hosts.write_text(_HOSTS)
        step_id = "build-" + secrets.token_hex(6)
        prefix = self._prefix()
        lines = _Lines(lambda line: self.progress(f"{prefix} | {line}"))
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        step = RunStep(
            id=step_id,
            lower_dirs=tuple(lower),
            argv=argv,
            env=tuple(f"{k}={v}" for k, v in env.items()),
            cwd=state.config.working_dir or "/",
            user=state.config.user,
            hostname=step_id[:12],
            mounts=tuple(mounts),
            etc_hosts=hosts,
            etc_resolv_conf=resolv,
            network="none" if network == "none" else "host",
            output=write_end,
        )
        code: int | None = None
        failure: ComposerError | None = None
        write_open = True

        def close_write() -> None:
            nonlocal write_open
            if write_open:
                write_open = False
                os.close(write_end)

        async def runner() -> None:
            nonlocal code, failure
            try:
                code = await self.runtime.run(step)
            except ComposerError as exc:
                failure = exc
            finally:
                close_write()  # the container's copies are gone too: the reader sees EOF

        try:
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(runner)
                    async with trio.lowlevel.FdStream(read_end) as stream:
                        while chunk := await stream.receive_some(65536):
                            lines.feed(chunk)
                    lines.close()
            finally:
                close_write()
            if failure is not None:
                raise self._error(inst, f"RUN: the container did not start: {failure.render()}")
            assert code is not None
            if code != 0:
                how = f"exit code {code}" + (f" (signal {code - 128})" if code > 128 else "")
                raise self._error(inst, f"{one_line(shown)}: {how}", output=list(lines.tail))
            upper = self.runtime.upper_dir(step_id)
            return await trio.to_thread.run_sync(self._commit_run, state, upper, lower, key, shown)
        finally:
            self.runtime.remove(step_id)

    def _commit_run(self, state: _State, upper: Path, lower: list[Path], key: str, shown: str) -> Image:
        _drop_mount_stubs(upper, LayeredTree(lower))
        return self._commit(state, upper, key, shown)

    # -- the image

    def _finish(self, state: _State) -> Image:
        config = state.config
        if self.request.labels:
            labels = dict(config.labels)
            labels.update(self.request.labels)
            config = replace(config, labels=tuple(sorted(labels.items())))
        history = [dict(item) for item in state.history]
        key = step_key(
            diff_ids=state.diff_ids, config=config, step="image " + json.dumps(history, sort_keys=True)
        )
        cached = self.cache.get(key)
        if cached is not None and cached.diff_ids == state.diff_ids:
            image = cached
            for tag in self.request.tags:
                image = self.store.tag(image.id, tag)
            return image
        image = self.store.create_image(config, state.diff_ids, history=history, tags=self.request.tags,
                                        base=state.base_raw)  # fmt: skip
        self.cache.put(key, image, "image")
        return image


def _id_of(tree: LayeredTree, file: str, name: str, what: str) -> int:
    node = tree.lookup(file)
    text = ""
    if node is not None and not node.is_dir:
        with contextlib.suppress(OSError):
            text = node.real.read_text(errors="replace")
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) >= 3 and parts[0] == name and parts[2].isdecimal():
            return int(parts[2])
    raise UserError(f"unable to find {what} {name}: no matching entries in the image's /{file}")


_STUBS = ("etc/resolv.conf", "etc/hosts", "etc/hostname", "proc", "sys", "dev")


def _drop_mount_stubs(upper: Path, lower: LayeredTree) -> None:
    """Remove what the runtime made in the upper dir only as mount points (an empty /etc/resolv.conf
    in an image that had none, /proc, /sys, /dev), so they do not end up in the layer."""
    for rel in _STUBS:
        path = upper / rel
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if lower.lookup(rel, follow=False) is not None:
            continue
        with contextlib.suppress(OSError):
            if os.path.isdir(path) and not os.path.islink(path):
                os.rmdir(path)  # only when empty
            elif st.st_size == 0:
                os.unlink(path)
    etc = upper / "etc"
    if lower.lookup("etc", follow=False) is None:
        with contextlib.suppress(OSError):
            os.rmdir(etc)


_ARCHIVE_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")  # gzip, bzip2, xz (tarfile reads these)


def _is_archive(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(512)
    except OSError:
        return False
    if head.startswith(_ARCHIVE_MAGIC):
        return True
    return len(head) >= 262 and head[257:262] == b"ustar"


def _extract(archive: Path, target: Path) -> None:
    """ADD's local tar: unpacked into `target` (plain, gzip, bzip2, xz), owners kept, nothing outside."""
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:*") as tar:
        tar.extractall(target, numeric_owner=True, filter="tar")


async def build_image(
    request: BuildRequest, *, store: ImageStore, runtime: StepRunner, layout: Layout, progress: Progress
) -> Image:
    """Build `request` and return the image, tagged with `request.tags`. BuildError on failure."""
    return await _Builder(request, store, runtime, layout, progress).run()
