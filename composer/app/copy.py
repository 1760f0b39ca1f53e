"""`composer cp`: files between the host and a running container, as tar streams, as Docker copies.

The container's side always runs in a child process chrooted into the container's root
(/proc/PID/root, which shows the container's own mounts): there, a path and every link on it resolve
inside the container, so a link the container made (`ln -s / /tmp/x`) can never lead a copy onto the
host's files. The host's side packs or unpacks the same stream:

- into a container: the host path is packed (or the tar stream on stdin is taken as it is) and the
  chrooted child unpacks it, its files owned by root as `docker cp` makes them;
- out of one: the chrooted child packs the path and the host unpacks it (members that would land
  outside the destination are refused, their owner is the caller), or it goes to stdout as it is.

A copied file or folder lands as `cp -r` would put it: at DEST, or inside DEST when that is a folder.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tarfile
from collections.abc import Callable
from typing import IO

from composer.errors import ComposerError

__all__ = ["copy_in", "copy_out"]

_CHUNK = 1 << 16


def copy_in(pid: int, source: str, dest: str, *, archive: bool = False, follow: bool = False) -> None:
    """Host path `source` (or `-`: a tar stream on stdin, unpacked into the folder `dest`) into the
    container of `pid` at `dest`; owned by root unless `archive` (the source's owners kept); a link
    as `source` is copied as a link unless `follow`."""
    owner = None if archive else (0, 0)
    if source == "-":
        _finish(_start_in_root(pid, lambda: _unpack_into_folder(sys.stdin.buffer, dest, owner=owner)))
        return
    if not os.path.lexists(source):
        raise ComposerError(f"cp: {source} does not exist")
    read_end, write_end = os.pipe()
    # the child unpacks while this process packs; the pipe carries the archive between them
    child = _start_in_root(
        pid, lambda: _unpack_as(os.fdopen(read_end, "rb"), dest, owner=owner), close=(write_end,)
    )
    os.close(read_end)
    try:
        _pack(source, os.path.basename(os.path.normpath(source)), os.fdopen(write_end, "wb"), follow=follow)
    except BrokenPipeError:
        pass  # the child stopped reading: its report says why
    except (tarfile.TarError, OSError) as exc:
        # the cause is here (a file that cannot be read): the child only saw the stream end early
        with contextlib.suppress(ComposerError):
            _finish(child, failed=True)
        raise ComposerError(f"cp: {source}: {exc}") from None
    _finish(child)


def copy_out(pid: int, source: str, dest: str, *, archive: bool = False, follow: bool = False) -> None:
    """`source` in the container of `pid` to the host path `dest` (or `-`: a tar stream on stdout);
    owned by the caller unless `archive`; a link as `source` is copied as a link unless `follow`."""
    read_end, write_end = os.pipe()
    name = os.path.basename(os.path.normpath(source)) or "."
    child = _start_in_root(
        pid, lambda: _pack(source, name, os.fdopen(write_end, "wb"), follow=follow), close=(read_end,)
    )
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as stream:
            if dest == "-":
                out = sys.stdout.buffer
                while chunk := stream.read(_CHUNK):
                    out.write(chunk)
                out.flush()
            else:
                _unpack_as(stream, dest, owner=None if archive else (os.getuid(), os.getgid()), host=True)
    except (tarfile.TarError, ComposerError, OSError) as exc:
        _finish(child, failed=True)  # the child's own failure first: it is the cause (a missing source)
        raise ComposerError(f"cp: {dest}: {exc}") from None
    _finish(child)


# --- the two ends of the stream -------------------------------------------------------------------------


def _pack(path: str, name: str, stream: IO[bytes], *, follow: bool) -> None:
    """`path` as a tar stream whose top member is `name`; links in it stay links, and so does `path`
    itself unless `follow` (`cp -L`), as Docker copies."""
    with stream:
        if not os.path.lexists(path):
            raise ComposerError(f"{path} does not exist")
        with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as archive:
            archive.add(os.path.realpath(path) if follow else path, arcname=name)


def _unpack_as(stream: IO[bytes], dest: str, *, owner: tuple[int, int] | None, host: bool = False) -> None:
    """A stream from `_pack` at `dest` as `cp -r` places it: `dest` itself, or inside it if it is a
    folder (then under the stream's own top name)."""
    with stream, tarfile.open(fileobj=stream, mode="r|") as archive:
        top = target = ""
        for member in archive:
            if not top:
                top = member.name
                inside = os.path.isdir(dest)
                if dest.endswith("/") and not inside:
                    raise ComposerError(f"{dest} is not a folder")
                target = os.path.join(dest, top) if inside else dest.rstrip("/")
            if member.name != top and not member.name.startswith(top + "/"):
                raise ComposerError(f"unexpected member {member.name!r} in the stream")
            renamed = os.path.basename(target) + member.name[len(top) :]
            _extract(archive, member.replace(name=renamed, deep=False), os.path.dirname(target) or "/",
                     owner=owner, host=host)  # fmt: skip


def _unpack_into_folder(stream: IO[bytes], dest: str, *, owner: tuple[int, int] | None) -> None:
    """`cp - SERVICE:DEST`: a tar stream's members unpacked into the folder `dest`, as Docker does."""
    if not os.path.isdir(dest):
        raise ComposerError(f"{dest}: the destination of a tar stream must be a folder")
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        for member in archive:
            _extract(archive, member, dest, owner=owner, host=False)


def _extract(
    archive: tarfile.TarFile,
    member: tarfile.TarInfo,
    folder: str,
    *,
    owner: tuple[int, int] | None,
    host: bool,
) -> None:
    """One member under `folder`, never outside it (tarfile's `tar` filter: no absolute or `..` name,
    no path through a link that leaves it), owned by `owner` (None: the member's own numeric ids).
    On the host a hard link must also stay inside (the `data` filter's rule); a symbolic link is
    copied as it is, as Docker copies it."""
    if owner is not None:
        member = member.replace(uid=owner[0], gid=owner[1], deep=False)
    check = tarfile.data_filter if host and member.islnk() else tarfile.tar_filter
    try:
        kept = check(member, folder)
    except tarfile.FilterError as exc:
        raise ComposerError(str(exc)) from None
    if kept is not None:
        archive.extract(kept, folder, filter="fully_trusted", numeric_owner=True)


# --- the chrooted child -----------------------------------------------------------------------------------


def _start_in_root(pid: int, work: Callable[[], None], close: tuple[int, ...] = ()) -> tuple[int, int]:
    """Fork a child that closes `close` (the parent's ends of its pipes), enters the container's root
    and runs `work`; (its pid, the read end of its error pipe)."""
    errors_r, errors_w = os.pipe()
    child = os.fork()
    if child == 0:
        code = 0
        try:
            os.close(errors_r)
            for fd in close:
                os.close(fd)
            os.chroot(f"/proc/{pid}/root")
            os.chdir("/")
            work()
        except BrokenPipeError:
            pass  # the parent stopped reading: it reports its own cause
        except BaseException as exc:  # reported, never raised past the fork
            message = exc.args[0] if isinstance(exc, ComposerError) and exc.args else str(exc) or repr(exc)
            os.write(errors_w, str(message).encode(errors="replace")[:4096])
            code = 1
        finally:
            os._exit(code)
    os.close(errors_w)
    return child, errors_r


def _finish(child: tuple[int, int], *, failed: bool = False) -> None:
    """Wait for the child; its report (or a failed status) as a ComposerError. `failed`: this side
    failed too (and closed its end of the data pipe): only a report of the child's is raised."""
    pid, errors = child
    with os.fdopen(errors, "rb") as stream:
        message = stream.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if message or (status and not failed):
        raise ComposerError(f"cp: {message or f'the copy ended with status {status}'}")
