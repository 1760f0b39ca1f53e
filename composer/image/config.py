"""An image's run-time configuration, in the shape of the OCI image config's `config` object.

`ImageConfig.to_oci()` / `from_oci()` convert to and from the JSON that `docker save`, OCI layouts and
`docker inspect` use (keys `Env`, `Cmd`, `Entrypoint`, `WorkingDir`, `User`, `ExposedPorts`, `Volumes`,
`Healthcheck`, `Labels`, `StopSignal`, `Shell`, `OnBuild`). Durations in `Healthcheck` are nanoseconds,
as in Docker's JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["Healthcheck", "ImageConfig"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Healthcheck:
    test: tuple[str, ...]  # ("CMD", ...), ("CMD-SHELL", "..."), or ("NONE",)
    interval_ns: int = 0  # 0 = inherit / the engine default
    timeout_ns: int = 0
    start_period_ns: int = 0
    start_interval_ns: int = 0
    retries: int = 0

    def to_oci(self) -> dict[str, Any]:
        out: dict[str, Any] = {"Test": list(self.test)}
        for key, value in (("Interval", self.interval_ns), ("Timeout", self.timeout_ns),
                           ("StartPeriod", self.start_period_ns), ("StartInterval", self.start_interval_ns),
                           ("Retries", self.retries)):  # fmt: skip
            if value:
                out[key] = value
        return out

    @classmethod
    def from_oci(cls, data: dict[str, Any]) -> Healthcheck:
        return cls(
            test=tuple(str(x) for x in data.get("Test") or ()),
            interval_ns=int(data.get("Interval") or 0),
            timeout_ns=int(data.get("Timeout") or 0),
            start_period_ns=int(data.get("StartPeriod") or 0),
            start_interval_ns=int(data.get("StartInterval") or 0),
            retries=int(data.get("Retries") or 0),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageConfig:
    env: tuple[str, ...] = ()  # "KEY=VALUE", in order
    cmd: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    working_dir: str = ""
    user: str = ""
    exposed_ports: tuple[str, ...] = ()  # "80/tcp", sorted
    volumes: tuple[str, ...] = ()  # container paths, sorted
    healthcheck: Healthcheck | None = None
    labels: tuple[tuple[str, str], ...] = ()  # sorted by key
    stop_signal: str = ""
    shell: tuple[str, ...] | None = None
    on_build: tuple[str, ...] = ()
    extra: tuple[tuple[str, Any], ...] = field(default=())  # keys we keep but do not interpret

    def env_dict(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for item in self.env:
            key, _, value = item.partition("=")
            out[key] = value
        return out

    def with_env(self, key: str, value: str) -> ImageConfig:
        kept = tuple(item for item in self.env if item.partition("=")[0] != key)
        return replace(self, env=(*kept, f"{key}={value}"))

    def argv(
        self, entrypoint: Sequence[str] | None = None, command: Sequence[str] | None = None
    ) -> tuple[str, ...]:
        """The process a container runs, by Docker's rules: a given `entrypoint` replaces the image's
        ENTRYPOINT *and* drops its CMD; a given `command` replaces CMD; an empty list clears either;
        `None` means "not set, use the image's"."""
        if entrypoint is not None:
            return (*entrypoint, *(command or ()))
        return (*(self.entrypoint or ()), *(self.cmd or () if command is None else command))

    def to_oci(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.user:
            out["User"] = self.user
        if self.exposed_ports:
            out["ExposedPorts"] = {port: {} for port in self.exposed_ports}
        if self.env:
            out["Env"] = list(self.env)
        if self.entrypoint is not None:
            out["Entrypoint"] = list(self.entrypoint)
        if self.cmd is not None:
            out["Cmd"] = list(self.cmd)
        if self.healthcheck is not None:
            out["Healthcheck"] = self.healthcheck.to_oci()
        if self.volumes:
            out["Volumes"] = {path: {} for path in self.volumes}
        if self.working_dir:
            out["WorkingDir"] = self.working_dir
        if self.labels:
            out["Labels"] = dict(self.labels)
        if self.stop_signal:
            out["StopSignal"] = self.stop_signal
        if self.shell is not None:
            out["Shell"] = list(self.shell)
        if self.on_build:
            out["OnBuild"] = list(self.on_build)
        for key, value in self.extra:
            out.setdefault(key, value)
        return out

    @classmethod
    def from_oci(cls, data: dict[str, Any] | None) -> ImageConfig:
        data = dict(data or {})

        def strings(key: str) -> tuple[str, ...] | None:
            value = data.pop(key, None)
            return None if value is None else tuple(str(x) for x in value)

        health = data.pop("Healthcheck", None)
        return cls(
            user=str(data.pop("User", "") or ""),
            exposed_ports=tuple(sorted(data.pop("ExposedPorts", None) or {})),
            env=strings("Env") or (),
            entrypoint=strings("Entrypoint"),
            cmd=strings("Cmd"),
            healthcheck=Healthcheck.from_oci(health) if health else None,
            volumes=tuple(sorted(data.pop("Volumes", None) or {})),
            working_dir=str(data.pop("WorkingDir", "") or ""),
            labels=tuple(sorted((str(k), str(v)) for k, v in (data.pop("Labels", None) or {}).items())),
            stop_signal=str(data.pop("StopSignal", "") or ""),
            shell=strings("Shell"),
            on_build=strings("OnBuild") or (),
            extra=tuple(sorted(data.items())),
        )
