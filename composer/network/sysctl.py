"""Host sysctls composer changes for its networks, remembered and put back (`/run/composer/sysctls.json`).

    ledger = SysctlLedger(Path("/run/composer"))
    ledger.hold("/proc/sys/net/ipv4/conf/cmp-1/route_localnet", "1", holder="proj_default@/var/lib/composer")
    ...
    ledger.release("proj_default@/var/lib/composer")   # the network goes: the old value comes back

A value is written only when it differs from what composer wants; the first holder records the value it
found. When the last holder of a setting lets go, the value found is written back, unless someone
changed the setting since (then it is theirs and stays). The file survives a crashed supervisor, so the
next `down` (the last network's removal) restores what the crashed one changed. A setting whose file
is gone (the bridge it belonged to was deleted) is simply forgotten.

The ledger is host-wide, like the settings: one file under /run (which, like the settings, does not
outlive a reboot) and its own flock, shared by every composer root on the host, so that one root's
`down` never puts back a setting another root's networks still need.

What composer holds this way: `route_localnet=1` on each network's bridge (127.0.0.1:P -> a container
through kernel DNAT; the bridge of an `external` network outlives composer's use of it) and
`net.ipv6.conf.all.forwarding=1` while a non-internal IPv6 network exists (egress over IPv6).
`net.ipv4.ip_forward` is turned on and left on, as dockerd does (manager.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from composer.errors import ComposerError
from composer.log import logger

__all__ = ["SysctlError", "SysctlLedger", "route_localnet_path"]

PROC_SYS = "/proc/sys/"


class SysctlError(ComposerError):
    """A sysctl composer needs could not be set."""


def route_localnet_path(ifname: str) -> str:
    return f"{PROC_SYS}net/ipv4/conf/{ifname}/route_localnet"


@dataclass(slots=True)
class _Entry:
    previous: str
    value: str
    holders: list[str] = field(default_factory=list)


def _read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except FileNotFoundError:
        return None


def _write(path: str, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value + "\n")


class SysctlLedger:
    """`<folder>/sysctls.json`, read and written under an exclusive flock on `<folder>/sysctls.lock`."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "sysctls.json"
        self.lock_path = folder / "sysctls.lock"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _load(self) -> dict[str, _Entry]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            logger().warning("network.sysctl_ledger_unreadable", path=str(self.path), error=str(exc))
            return {}
        out = {}
        for key, item in (raw.get("sysctls") or {}).items():
            if isinstance(item, dict) and key.startswith(PROC_SYS):
                holders = [str(h) for h in item.get("holders", [])]
                out[key] = _Entry(str(item.get("previous", "")), str(item.get("value", "")), holders)
        return out

    def _save(self, entries: dict[str, _Entry]) -> None:
        if not entries:
            self.path.unlink(missing_ok=True)
            return
        data = {
            "version": 1,
            "sysctls": {
                key: {"previous": e.previous, "value": e.value, "holders": sorted(e.holders)}
                for key, e in sorted(entries.items())
            },
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".sysctls.json.{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, self.path)

    def held(self) -> dict[str, tuple[str, str, tuple[str, ...]]]:
        """path -> (previous, value, holders): what composer holds now (tests, diagnostics)."""
        return {k: (e.previous, e.value, tuple(sorted(e.holders))) for k, e in self._load().items()}

    def hold(self, path: str, value: str, *, holder: str) -> None:
        """Make `path` hold `value` for `holder` (idempotent)."""
        with self._locked():
            self._hold(path, value, holder)

    def _hold(self, path: str, value: str, holder: str) -> None:
        entries = self._load()
        entry = entries.get(path)
        current = _read(path)
        if current is None:
            raise SysctlError(f"sysctl {path.removeprefix(PROC_SYS)} does not exist on this host")
        if entry is None or current != entry.value:
            # first use, or someone changed it since we set it: what is there now is what to put back
            entry = entries[path] = _Entry(
                previous=current, value=value, holders=entry.holders if entry else []
            )
        if holder not in entry.holders:
            entry.holders.append(holder)
        if current != value:
            try:
                _write(path, value)
            except OSError as exc:
                raise SysctlError(f"sysctl {path.removeprefix(PROC_SYS)}={value}: {exc.strerror}") from None
            logger().info("network.sysctl_set", sysctl=path.removeprefix(PROC_SYS), value=value, was=current)
        self._save(entries)

    def release(self, holder: str) -> list[str]:
        """`holder` no longer needs anything: settings nobody else holds get their old value back.
        Returns the paths restored."""
        with self._locked():
            return self._release(holder)

    def _release(self, holder: str) -> list[str]:
        entries = self._load()
        restored = []
        for path in sorted(entries):
            entry = entries[path]
            if holder not in entry.holders:
                continue
            entry.holders.remove(holder)
            if entry.holders:
                continue
            del entries[path]
            current = _read(path)
            if current is None or current != entry.value or current == entry.previous:
                continue  # gone with its interface, changed by someone else, or nothing to undo
            try:
                _write(path, entry.previous)
            except OSError as exc:
                logger().warning("network.sysctl_restore_failed", sysctl=path, error=str(exc))
                continue
            restored.append(path)
            logger().info("network.sysctl_restored", sysctl=path.removeprefix(PROC_SYS), value=entry.previous)
        self._save(entries)
        return restored
