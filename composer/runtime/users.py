"""Resolve `user:` (`name`, `uid`, `name:group`, `uid:gid`) against an image's /etc/passwd and /etc/group.

Docker's rules (moby: daemon/oci_linux.go getUser, via runc's libcontainer/user): a name must exist in
/etc/passwd; a number need not; the group defaults to the passwd entry's primary group (0 for an
unknown uid); supplementary groups are the /etc/group entries that list the user, plus `group_add`.
Pure: the caller reads the files (`find_in_layers` helps with overlay lower dirs).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from composer.errors import ComposerError

__all__ = ["ResolvedUser", "UserError", "find_in_layers", "parse_group", "parse_passwd", "resolve_user"]


class UserError(ComposerError):
    """A user or group that the image does not define."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedUser:
    uid: int
    gid: int
    groups: tuple[int, ...]  # supplementary groups, sorted, without duplicates
    home: str


@dataclass(frozen=True, slots=True)
class _Passwd:
    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True, slots=True)
class _Group:
    name: str
    gid: int
    members: tuple[str, ...]


def parse_passwd(text: str) -> tuple[_Passwd, ...]:
    out = []
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) < 7 or line.startswith("#"):
            continue
        try:
            out.append(_Passwd(parts[0], int(parts[2]), int(parts[3]), parts[5]))
        except ValueError:
            continue
    return tuple(out)


def parse_group(text: str) -> tuple[_Group, ...]:
    out = []
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) < 4 or line.startswith("#"):
            continue
        try:
            members = tuple(m for m in parts[3].split(",") if m)
            out.append(_Group(parts[0], int(parts[2]), members))
        except ValueError:
            continue
    return tuple(out)


def _number(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def resolve_user(
    user: str, passwd: str | None, group: str | None, group_add: Iterable[str] = ()
) -> ResolvedUser:
    """`user` as written in the compose file or image config ("" = root)."""
    users = parse_passwd(passwd or "")
    groups = parse_group(group or "")
    name_part, _, group_part = (user or "0").partition(":")
    uid = _number(name_part)
    entry = next((u for u in users if (u.uid == uid if uid is not None else u.name == name_part)), None)
    if uid is None:
        if entry is None:
            raise UserError(f"user: unable to find user {name_part}: no matching entries in passwd file")
        uid = entry.uid
    gid = entry.gid if entry is not None else 0
    if group_part:
        gid = _group_id(group_part, groups)
    supplementary: set[int] = set()
    if entry is not None and not group_part:
        supplementary.update(g.gid for g in groups if entry.name in g.members)
    supplementary.update(_group_id(g, groups) for g in group_add)
    home = entry.home if entry is not None else "/"
    return ResolvedUser(uid=uid, gid=gid, groups=tuple(sorted(supplementary)), home=home or "/")


def _group_id(text: str, groups: Sequence[_Group]) -> int:
    number = _number(text)
    if number is not None:
        return number
    for entry in groups:
        if entry.name == text:
            return entry.gid
    raise UserError(f"user: unable to find group {text}: no matching entries in group file")


def find_in_layers(dirs: Sequence[Path], relative: str) -> str | None:
    """The text of `relative` (e.g. "etc/passwd") in the topmost of `dirs` holding it (top first).

    A whiteout (a 0:0 character device) in a higher layer hides the file below, as overlayfs does.
    """
    for folder in dirs:
        path = folder / relative
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        except NotADirectoryError:
            return None
        if (info.st_mode & 0o170000) == 0o020000 and info.st_rdev == 0:
            return None
        try:
            return path.read_text(errors="replace")
        except OSError:
            return None
    return None
