"""Secrets and configs of one container, written as files composer owns.

Each secret or config a service uses becomes one file in the container's state folder
(`<state>/secrets/<key>`, `<state>/configs/<key>`), whatever its source: `file:` (copied), `environment:`
(the variable's value), `content:` (the text). Composer owns the copy, so the file has the owner and
mode the service asks for (default root:root 0444) even for `file:` sources, which Docker Compose
bind-mounts as they are (docker/compose#9648). The translate step binds each file read-only at its
target (/run/secrets/<key>, /<key>); removing the container removes the folder.

Files are written to a temporary name and renamed into place, so a restarted container never sees a
half-written secret, and a running one keeps the file it was started with.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from composer.errors import ComposerError

__all__ = [
    "DEFAULT_MODE",
    "SecretError",
    "SecretFile",
    "Written",
    "materialize",
    "parse_id",
    "remove",
]

DEFAULT_MODE = 0o444
_KEY = re.compile(r"^[a-zA-Z0-9._-]+$")
Kind = Literal["secret", "config"]


class SecretError(ComposerError):
    """A secret or config that cannot be written: names it and the path or variable."""

    def __init__(self, kind: Kind, key: str, message: str) -> None:
        super().__init__(f"{kind} {key}: {message}")
        self.kind = kind
        self.key = key


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretFile:
    """One secret or config for one container: exactly one of `file` (absolute host path),
    `environment` (a variable's name, looked up in the environ given to `materialize`) or `content`."""

    kind: Kind
    key: str  # the top-level secret/config key
    file: Path | None = None
    environment: str | None = None
    content: str | None = None
    uid: str | int | None = None
    gid: str | int | None = None
    mode: int | None = None


def parse_id(kind: Kind, key: str, what: str, value: str | int | None) -> int:
    """A numeric uid or gid (the compose file gives them as strings); None is 0."""
    if value is None or value == "":
        return 0
    if isinstance(value, int):
        number = value
    elif value.strip().isdigit():
        number = int(value.strip())
    else:
        raise SecretError(kind, key, f"{what} {value!r} is not a number")
    if not 0 <= number < 2**32 - 1:
        raise SecretError(kind, key, f"{what} {number} is out of range")
    return number


def _payload(item: SecretFile, environ: Mapping[str, str]) -> bytes:
    given = [s for s in (item.file, item.environment, item.content) if s is not None]
    if len(given) != 1:
        raise SecretError(item.kind, item.key, "needs exactly one of file, environment and content")
    if item.file is not None:
        if not item.file.is_absolute():
            raise SecretError(item.kind, item.key, f"file {item.file} is not an absolute path")
        try:
            return item.file.read_bytes()
        except FileNotFoundError:
            raise SecretError(item.kind, item.key, f"file {item.file} does not exist") from None
        except IsADirectoryError:
            raise SecretError(item.kind, item.key, f"file {item.file} is a folder") from None
        except OSError as exc:
            raise SecretError(item.kind, item.key, f"file {item.file}: {exc.strerror}") from None
    if item.environment is not None:
        value = environ.get(item.environment)
        if value is None:
            raise SecretError(item.kind, item.key, f"environment variable {item.environment} is not set")
        return value.encode()
    assert item.content is not None
    return item.content.encode()


def _write(folder: Path, name: str, data: bytes, uid: int, gid: int, mode: int) -> Path:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            os.fchown(handle.fileno(), uid, gid)
            os.fchmod(handle.fileno(), mode)
        path = folder / name
        os.replace(tmp, path)
        return path
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@dataclass(frozen=True, slots=True)
class Written:
    """The files `materialize` wrote: key -> host path, for translate's `secret_files`/`config_files`."""

    secrets: dict[str, Path]
    configs: dict[str, Path]


def materialize(state_dir: Path, items: Iterable[SecretFile], environ: Mapping[str, str]) -> Written:
    """Write `items` under `state_dir` (the container's own folder, given by the caller). A key used
    twice by one service must ask for the same owner and mode both times (it is one file)."""
    written: dict[Kind, dict[str, Path]] = {"secret": {}, "config": {}}
    seen: dict[tuple[Kind, str], SecretFile] = {}
    for item in items:
        before = seen.setdefault((item.kind, item.key), item)
        if before is not item:
            if (before.uid, before.gid, before.mode) != (item.uid, item.gid, item.mode):
                raise SecretError(item.kind, item.key, "used twice with a different uid, gid or mode")
            continue
        written[item.kind][item.key] = _one(state_dir, item, environ)
    return Written(secrets=written["secret"], configs=written["config"])


def _one(state_dir: Path, item: SecretFile, environ: Mapping[str, str]) -> Path:
    if not _KEY.match(item.key) or item.key in (".", ".."):
        raise SecretError(item.kind, item.key, "not a valid name ([a-zA-Z0-9._-]+)")
    mode = DEFAULT_MODE if item.mode is None else item.mode
    if not 0 <= mode <= 0o7777:
        raise SecretError(item.kind, item.key, f"mode {mode:o} is not a file mode")
    uid = parse_id(item.kind, item.key, "uid", item.uid)
    gid = parse_id(item.kind, item.key, "gid", item.gid)
    data = _payload(item, environ)
    folder = state_dir / f"{item.kind}s"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return _write(folder, item.key, data, uid, gid, mode)


def remove(state_dir: Path) -> None:
    """Delete the container's secret and config files (with the container)."""
    for kind in ("secrets", "configs"):
        shutil.rmtree(state_dir / kind, ignore_errors=True)
