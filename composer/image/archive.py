"""Tarballs in and out of the image store: layer tars (with whiteouts), `docker save` archives, OCI image
layouts (directory or tar), and plain root filesystem tarballs (`docker import`).

Each layer stays a separate overlayfs lower directory, so an OCI whiteout is converted on the way in:
`.wh.NAME` becomes a character device 0/0 named NAME, `.wh..wh..opq` the `trusted.overlay.opaque=y`
xattr on its folder (research/runtime-limits.md §7). `write_layer_tar` does the reverse, so the digest of
a committed directory is the diff_id that `docker save` would write for it.

Extraction never writes outside its target: absolute names and `..` are refused, a symlink is followed
only when it resolves inside the target (chroot semantics), hardlinks must point at something already
extracted inside it.
"""

from __future__ import annotations

import base64
import bz2
import errno
import gzip
import hashlib
import json
import lzma
import os
import platform
import re
import shlex
import shutil
import stat
import tarfile
import tempfile
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Protocol, cast

from composer.errors import ComposerError, one_line
from composer.image.config import ImageConfig

if TYPE_CHECKING:
    from composer.image.store import Image, ImageStore

__all__ = [
    "BadArchive",
    "DigestWriter",
    "ExtractStats",
    "ImageConflict",
    "ImageError",
    "ImageNotFound",
    "LoadedImage",
    "UnsafeArchive",
    "apply_changes",
    "extract_layer",
    "import_rootfs",
    "load",
    "load_docker_save",
    "load_oci_layout",
    "open_layer_stream",
    "write_layer_tar",
]

OPAQUE_XATTR = "trusted.overlay.opaque"
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
_CHUNK = 1 << 20
_MAX_SYMLINK_HOPS = 40


# --- errors -------------------------------------------------------------------------------------------


class ImageError(ComposerError):
    """Something about an image, a layer or an image archive that a user can fix."""


class ImageNotFound(ImageError):
    """No image by that name or id."""


class ImageConflict(ImageError):
    """The operation would break something else (an image tagged several times, a layer in use)."""


class BadArchive(ImageError):
    """An archive that is not what it claims: bad JSON, missing files, digests that do not match."""


class UnsafeArchive(BadArchive):
    """An archive that would write outside its target (absolute path, `..`, symlink or hardlink out)."""


# --- streams ------------------------------------------------------------------------------------------


class _Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class HashingReader:
    """Reads through, keeping the sha256 and the count of what passed."""

    def __init__(self, raw: _Reader) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self.count = 0

    def read(self, size: int = -1, /) -> bytes:
        data = self._raw.read(size)
        self._hash.update(data)
        self.count += len(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


class _Prefixed:
    """`prefix` then the rest of `raw`: lets us sniff the magic bytes of a stream that cannot seek."""

    def __init__(self, prefix: bytes, raw: _Reader) -> None:
        self._prefix = prefix
        self._raw = raw

    def read(self, size: int = -1, /) -> bytes:
        if self._prefix:
            if size < 0:
                data, self._prefix = self._prefix + self._raw.read(), b""
                return data
            data, self._prefix = self._prefix[:size], self._prefix[size:]
            return data
        return self._raw.read(size)


class _Writer(Protocol):
    def write(self, data: bytes, /) -> int: ...


class DigestWriter:
    """A write-only sink that keeps the sha256 of what it was given."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def write(self, data: bytes, /) -> int:
        self._hash.update(data)
        return len(data)

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


def _read_exactly(raw: _Reader, size: int) -> bytes:
    out = b""
    while len(out) < size:
        data = raw.read(size - len(out))
        if not data:
            break
        out += data
    return out


def open_layer_stream(raw: _Reader, *, source: str) -> tuple[HashingReader, HashingReader]:
    """(uncompressed reader, compressed reader), both hashing: the first gives the diff_id, the second
    the blob digest. gzip, xz and bzip2 are recognized by their magic bytes."""
    outer = HashingReader(raw)
    head = _read_exactly(outer, 6)
    stream: _Reader = _Prefixed(head, outer)
    compressed = cast(BinaryIO, stream)  # they need only read()
    if head.startswith(b"\x1f\x8b"):
        stream = gzip.GzipFile(fileobj=compressed, mode="rb")
    elif head.startswith(b"\xfd7zXZ\x00"):
        stream = lzma.LZMAFile(compressed, mode="rb")  # noqa: SIM115
    elif head.startswith(b"BZh"):
        stream = bz2.BZ2File(compressed, mode="rb")
    elif head.startswith(b"\x28\xb5\x2f\xfd"):
        raise BadArchive(f"{source}: zstd-compressed layers are not supported yet; decompress it first")
    return HashingReader(stream), outer


# --- extraction ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ExtractStats:
    size: int  # bytes of regular file content
    entries: int
    whiteouts: int
    opaque_dirs: int
    skipped: int  # device nodes not created (not root), aufs metadata


def _clean_name(name: str, source: str) -> list[str]:
    """A member name as path components under the target; refuses absolute names and `..`."""
    if name.startswith("/"):
        raise UnsafeArchive(f"{source}: absolute path {one_line(name)!r} in the archive")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"{source}: path {one_line(name)!r} climbs out with '..'")
    return parts


def _is_dir_nofollow(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _remove(path: str) -> None:
    if _is_dir_nofollow(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


class _Extractor:
    def __init__(self, target: Path, source: str) -> None:
        self.root = str(target)
        self.source = source
        self.as_root = os.geteuid() == 0
        self.dirs: list[tuple[list[str], tarfile.TarInfo]] = []  # attributes set last, deepest first
        self.size = 0
        self.entries = 0
        self.whiteouts = 0
        self.opaque = 0
        self.skipped = 0

    def _path(self, parts: Sequence[str]) -> str:
        return os.path.join(self.root, *parts) if parts else self.root

    def _resolve_dir(self, parts: Sequence[str], *, create: bool, shown: str = "") -> list[str]:
        """The real location (components under the root) of the folder `parts`, resolved one component
        at a time as the kernel would, with the target as `/`: a symlink or `..` that would leave the
        target is refused. Missing folders are made (mode 0755) if `create`."""
        shown = shown or "/".join(parts)
        done: list[str] = []
        todo = list(reversed(parts))
        hops = 0
        while todo:
            part = todo.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if not done:
                    raise UnsafeArchive(
                        f"{self.source}: {shown!r} goes through a symlink that points outside"
                    )
                done.pop()
                continue
            path = self._path([*done, part])
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                if not create:
                    missing = "/".join([*done, part])
                    raise BadArchive(f"{self.source}: {shown!r}: {missing} does not exist") from None
                os.mkdir(path, 0o755)
                done.append(part)
                continue
            if stat.S_ISDIR(st.st_mode):
                done.append(part)
            elif create and stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:  # this layer's whiteout, then
                os.unlink(path)  # a folder of that name: the folder wins (it hides the lower one anyway)
                os.mkdir(path, 0o755)
                done.append(part)
            elif stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > _MAX_SYMLINK_HOPS:
                    raise BadArchive(f"{self.source}: {shown!r}: too many levels of symbolic links")
                link = os.readlink(path)
                if link.startswith("/"):
                    done = []
                todo.extend(reversed(link.split("/")))
            else:
                raise BadArchive(f"{self.source}: {shown!r}: {'/'.join([*done, part])} is not a directory")
        return done

    def extract(self, stream: _Reader) -> ExtractStats:
        try:
            with tarfile.open(fileobj=stream, mode="r|", errorlevel=2, bufsize=_CHUNK) as tar:  # type: ignore[call-overload]
                for member in tar:
                    self._member(tar, member)
        except tarfile.TarError as exc:
            raise BadArchive(f"{self.source}: not a valid tar stream: {exc}") from exc
        except EOFError as exc:
            raise BadArchive(f"{self.source}: the tar stream ends early") from exc
        for parts, member in sorted(self.dirs, key=lambda item: -len(item[0])):
            # a later member may have replaced the folder, or one above it, by a symlink: never follow one
            if all(_is_dir_nofollow(self._path(parts[:depth])) for depth in range(1, len(parts) + 1)):
                self._attrs(self._path(parts), member)
        return ExtractStats(
            size=self.size, entries=self.entries, whiteouts=self.whiteouts, opaque_dirs=self.opaque,
            skipped=self.skipped,
        )  # fmt: skip

    def _member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = _clean_name(member.name, self.source)
        self.entries += 1
        if not parts:  # the root itself ("./")
            if member.isdir():
                self.dirs.append(([], member))
            return
        base = parts[-1]
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(parts)
            return
        real = self._resolve_dir(parts[:-1], create=True)
        dest = os.path.join(self._path(real), base)
        exists = os.path.lexists(dest)
        if member.isdir():
            if exists and not _is_dir_nofollow(dest):
                os.unlink(dest)
                exists = False
            if not exists:
                os.mkdir(dest, 0o700)
            self.dirs.append(([*real, base], member))
            return
        if member.islnk():
            source = self._link_source(member)
            if exists:
                _remove(dest)
            os.link(source, dest, follow_symlinks=False)
            return
        if exists:
            _remove(dest)
        if member.isreg():
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as out:
                data = tar.extractfile(member)
                if data is not None:
                    shutil.copyfileobj(data, out, _CHUNK)
            self.size += member.size
        elif member.issym():
            os.symlink(member.linkname, dest)
        elif member.ischr() or member.isblk():
            if not self.as_root:
                self.skipped += 1
                return
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            os.mknod(dest, kind | 0o600, os.makedev(member.devmajor, member.devminor))
        elif member.isfifo():
            os.mkfifo(dest, 0o600)
        else:
            self.skipped += 1
            return
        self._attrs(dest, member)

    def _whiteout(self, parts: list[str]) -> None:
        base = parts[-1]
        parent = self._path(self._resolve_dir(parts[:-1], create=True))
        if base == OPAQUE_MARKER:
            os.setxattr(parent, OPAQUE_XATTR, b"y")
            self.opaque += 1
            return
        if base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):  # aufs metadata (.wh..wh.plnk and such)
            self.skipped += 1
            return
        hidden = base[len(WHITEOUT_PREFIX) :]
        if hidden in ("", ".", ".."):
            raise UnsafeArchive(f"{self.source}: bad whiteout {'/'.join(parts)!r}")
        dest = os.path.join(parent, hidden)
        if os.path.lexists(dest):  # a whiteout hides lower layers only, never its own layer's file
            return
        try:
            os.mknod(dest, stat.S_IFCHR | 0o600, os.makedev(0, 0))
        except PermissionError as exc:
            name = "/".join(parts)
            raise ImageError(
                f"{self.source}: whiteout {name!r} needs root (overlay whiteouts are devices)"
            ) from exc
        self.whiteouts += 1

    def _link_source(self, member: tarfile.TarInfo) -> str:
        parts = _clean_name(member.linkname, self.source)
        if not parts:
            raise UnsafeArchive(f"{self.source}: hardlink {member.name!r} points at the root")
        parent = self._path(self._resolve_dir(parts[:-1], create=False, shown=member.linkname))
        source = os.path.join(parent, parts[-1])
        try:
            st = os.lstat(source)
        except FileNotFoundError:
            raise BadArchive(
                f"{self.source}: hardlink {member.name!r} -> {member.linkname!r}: no such file in the archive"
            ) from None
        if stat.S_ISDIR(st.st_mode):
            raise BadArchive(f"{self.source}: hardlink {member.name!r} -> {member.linkname!r} is a directory")
        return source

    def _attrs(self, path: str, member: tarfile.TarInfo) -> None:
        link = member.issym()
        if self.as_root:
            os.lchown(path, member.uid, member.gid)
        if not link:
            os.chmod(path, member.mode & 0o7777)
        for name, value in _xattrs(member):
            try:
                os.setxattr(path, name, value, follow_symlinks=False)
            except OSError as exc:
                if exc.errno in (errno.ENOTSUP, errno.EPERM) and (link or not self.as_root):
                    self.skipped += 1
                    continue
                what = f"{self.source}: {member.name}: cannot set xattr {name}"
                raise ImageError(f"{what}: {exc.strerror}") from exc
        mtime = int(member.mtime * 1_000_000_000)
        os.utime(path, ns=(mtime, mtime), follow_symlinks=False)


def _xattrs(member: tarfile.TarInfo) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for key, value in member.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            out.append((key[len("SCHILY.xattr.") :], value.encode("utf-8", "surrogateescape")))
        elif key.startswith("LIBARCHIVE.xattr."):
            name = urllib.parse.unquote(key[len("LIBARCHIVE.xattr.") :])
            out.append((name, base64.b64decode(value + "=" * (-len(value) % 4))))
    # overlay's own bookkeeping (redirect, origin, metacopy) means nothing in another overlay: drop it
    return [(k, v) for k, v in out if not k.startswith("trusted.overlay.") or k == OPAQUE_XATTR]


def extract_layer(stream: _Reader, target: Path, *, source: str) -> ExtractStats:
    """Unpack an (uncompressed) layer tar stream into `target`, converting whiteouts for overlayfs."""
    return _Extractor(target, source).extract(stream)


# --- writing a layer tar from a directory ------------------------------------------------------------


def write_layer_tar(directory: Path, out: _Writer) -> None:
    """A deterministic tar of `directory` in OCI layer form (overlay whiteouts as `.wh.` files, opaque
    folders with a `.wh..wh..opq` entry): sorted names, numeric owners only, whole-second mtimes."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        _write_tree(tar, str(directory), "")


def _write_tree(tar: tarfile.TarFile, root: str, rel: str) -> None:
    folder = os.path.join(root, rel) if rel else root
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        arcname = f"{rel}/{name}" if rel else name
        st = os.lstat(path)
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:  # an overlay whiteout
            info = tarfile.TarInfo(f"{rel}/{WHITEOUT_PREFIX}{name}" if rel else WHITEOUT_PREFIX + name)
            _owner(info, st)
            info.mode = 0o644
            tar.addfile(info)
            continue
        info = tar.gettarinfo(path, arcname)
        _owner(info, st)
        opaque = False
        pax: dict[str, str] = {}
        for key in sorted(os.listxattr(path, follow_symlinks=False)):
            if key.startswith("trusted.overlay."):
                opaque = opaque or (key == OPAQUE_XATTR and _getxattr(path, key) == b"y")
                continue
            pax["SCHILY.xattr." + key] = _getxattr(path, key).decode("utf-8", "surrogateescape")
        info.pax_headers = pax
        if info.isreg():
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as handle:
                tar.addfile(info, handle)
        else:
            tar.addfile(info)
        if info.isdir():
            if opaque:
                marker = tarfile.TarInfo(f"{arcname}/{OPAQUE_MARKER}")
                _owner(marker, st)
                marker.mode = 0o644
                tar.addfile(marker)
            _write_tree(tar, root, arcname)


def _owner(info: tarfile.TarInfo, st: os.stat_result) -> None:
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""
    info.mtime = int(st.st_mtime)


def _getxattr(path: str, key: str) -> bytes:
    return os.getxattr(path, key, follow_symlinks=False)


# --- archive sources: a directory or a tar ----------------------------------------------------------


class _Source(Protocol):
    label: str

    def exists(self, name: str) -> bool: ...

    def open(self, name: str) -> IO[bytes]: ...


class _DirSource:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.label = str(root)

    def _path(self, name: str) -> Path:
        parts = _clean_name(name, self.label)
        path = (self.root.joinpath(*parts)).resolve()
        if self.root != path and self.root not in path.parents:
            raise UnsafeArchive(f"{self.label}: {name!r} points outside the layout")
        return path

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def open(self, name: str) -> IO[bytes]:
        path = self._path(name)
        if not path.is_file():
            raise BadArchive(f"{self.label}: {name} is missing")
        return path.open("rb")


class _TarSource:
    def __init__(self, tar: tarfile.TarFile, label: str) -> None:
        self.tar = tar
        self.label = label
        self.members: dict[str, tarfile.TarInfo] = {}
        for member in tar.getmembers():
            self.members["/".join(_clean_name(member.name, label))] = member

    def _member(self, name: str) -> tarfile.TarInfo | None:
        key = "/".join(_clean_name(name, self.label))
        for _ in range(_MAX_SYMLINK_HOPS):
            member = self.members.get(key)
            if member is None or not (member.issym() or member.islnk()):
                return member
            # docker save links repeated layers: ../<id>/layer.tar
            joined = str(PurePosixPath(key).parent / member.linkname) if member.issym() else member.linkname
            parts: list[str] = []
            for piece in joined.split("/"):
                if piece == "..":
                    if not parts:
                        raise UnsafeArchive(f"{self.label}: {name!r} links outside the archive")
                    parts.pop()
                elif piece not in ("", "."):
                    parts.append(piece)
            key = "/".join(parts)
        raise BadArchive(f"{self.label}: {name}: too many levels of links")

    def exists(self, name: str) -> bool:
        member = self._member(name)
        return member is not None and member.isreg()

    def open(self, name: str) -> IO[bytes]:
        member = self._member(name)
        handle = self.tar.extractfile(member) if member is not None and member.isreg() else None
        if handle is None:
            raise BadArchive(f"{self.label}: {name} is missing")
        return handle


def _read_json(source: _Source, name: str, *, digest: str | None = None) -> tuple[Any, bytes]:
    with source.open(name) as handle:
        raw = handle.read()
    if digest is not None and "sha256:" + hashlib.sha256(raw).hexdigest() != digest:
        raise BadArchive(f"{source.label}: {name}: content does not match its digest {digest}")
    try:
        return json.loads(raw), raw
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadArchive(f"{source.label}: {name}: not valid JSON ({exc})") from exc


def _blob_name(digest: Any, label: str) -> str:
    if not isinstance(digest, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise BadArchive(f"{label}: unsupported or malformed digest {one_line(str(digest))!r}")
    return "blobs/sha256/" + digest.split(":", 1)[1]


@contextmanager
def _open_archive(store: ImageStore, source: Path | BinaryIO, label: str) -> Iterator[_Source]:
    """A directory as is; a plain tar file in place; anything else (compressed, or a stream such as
    stdin) through an uncompressed, seekable copy under the store's tmp folder."""
    if isinstance(source, Path) and source.is_dir():
        yield _DirSource(source)
        return
    with ExitStack() as stack:
        if isinstance(source, Path):
            try:
                raw: IO[bytes] | BinaryIO = stack.enter_context(source.open("rb"))
            except OSError as exc:
                raise ImageError(f"{label}: {exc.strerror}") from exc
        else:
            raw = source
        head = _read_exactly(raw, 6)
        compressed = head.startswith((b"\x1f\x8b", b"\xfd7zXZ\x00", b"BZh", b"\x28\xb5\x2f\xfd"))
        if not compressed and raw.seekable():
            raw.seek(0)
            try:
                tar = stack.enter_context(tarfile.open(fileobj=raw, mode="r:"))
            except tarfile.TarError as exc:
                raise BadArchive(f"{label}: not a tar archive ({exc})") from exc
            yield _TarSource(tar, label)
            return
        store.layout.ensure()
        spool = stack.enter_context(tempfile.TemporaryFile(dir=store.layout.tmp, prefix="load-"))
        reader, _ = open_layer_stream(_Prefixed(head, raw), source=label)
        while data := reader.read(_CHUNK):
            spool.write(data)
        spool.seek(0)
        try:
            tar = stack.enter_context(tarfile.open(fileobj=spool, mode="r:"))
        except tarfile.TarError as exc:
            raise BadArchive(f"{label}: not a tar archive ({exc})") from exc
        yield _TarSource(tar, label)


# --- loading image archives ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedImage:
    image: Image
    tags: tuple[str, ...]  # the tags this load set


def load(store: ImageStore, source: Path | BinaryIO, *, label: str | None = None) -> list[LoadedImage]:
    """`composer image load`: a `docker save` tarball or an OCI image layout (directory or tar)."""
    label = label or (str(source) if isinstance(source, Path) else "<stdin>")
    try:
        with _open_archive(store, source, label) as archive:
            if archive.exists("manifest.json"):
                return _load_docker_save(store, archive)
            if archive.exists("oci-layout") and archive.exists("index.json"):
                return _load_oci(store, archive)
            raise BadArchive(f"{label}: neither a docker save archive (manifest.json) nor an OCI layout")
    except tarfile.TarError as exc:
        raise BadArchive(f"{label}: not a tar archive ({exc})") from exc


def load_docker_save(
    store: ImageStore, source: Path | BinaryIO, *, label: str | None = None
) -> list[LoadedImage]:
    label = label or (str(source) if isinstance(source, Path) else "<stdin>")
    with _open_archive(store, source, label) as archive:
        return _load_docker_save(store, archive)


def load_oci_layout(
    store: ImageStore, source: Path | BinaryIO, *, label: str | None = None
) -> list[LoadedImage]:
    label = label or (str(source) if isinstance(source, Path) else "<stdin>")
    with _open_archive(store, source, label) as archive:
        if not archive.exists("oci-layout"):
            raise BadArchive(f"{label}: not an OCI image layout (no oci-layout file)")
        return _load_oci(store, archive)


def _diff_ids(config: Any, where: str) -> list[str]:
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise BadArchive(f"{where}: the image config has no rootfs.diff_ids list")
    return diff_ids


def _load_docker_save(store: ImageStore, archive: _Source) -> list[LoadedImage]:
    manifest, _ = _read_json(archive, "manifest.json")
    if not isinstance(manifest, list):
        raise BadArchive(f"{archive.label}: manifest.json is not a list")
    out: list[LoadedImage] = []
    with store.ingest():
        for entry in manifest:
            if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
                raise BadArchive(f"{archive.label}: manifest.json: an entry without Config")
            config_name: str = entry["Config"]
            match = re.fullmatch(r"(?:blobs/sha256/)?([0-9a-f]{64})(?:\.json)?", config_name)
            config, raw = _read_json(archive, config_name, digest=f"sha256:{match[1]}" if match else None)
            diff_ids = _diff_ids(config, f"{archive.label}: {config_name}")
            layers = entry.get("Layers") or []
            if not isinstance(layers, list) or len(layers) != len(diff_ids):
                raise BadArchive(
                    f"{archive.label}: manifest.json lists {len(layers)} layers, the config {len(diff_ids)}"
                )
            for name, diff_id in zip(layers, diff_ids, strict=True):
                if not store.has_layer(diff_id):
                    with archive.open(str(name)) as handle:
                        store.add_layer_from_tar(handle, expect=diff_id, source=f"{archive.label}: {name}")
            tags = tuple(store.check_ref(str(t)) for t in entry.get("RepoTags") or ())
            out.append(LoadedImage(image=store.add_image(raw, tags=tags), tags=tags))
    return out


def _platform() -> tuple[str, str]:
    return "linux", host_architecture()


def host_architecture() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "i386": "386"}.get(
        machine, machine
    )


_INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)


def _load_oci(store: ImageStore, archive: _Source) -> list[LoadedImage]:
    marker, _ = _read_json(archive, "oci-layout")
    if not isinstance(marker, dict) or "imageLayoutVersion" not in marker:
        raise BadArchive(f"{archive.label}: oci-layout has no imageLayoutVersion")
    index, _ = _read_json(archive, "index.json")
    manifests = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(manifests, list):
        raise BadArchive(f"{archive.label}: index.json has no manifests list")
    out: list[LoadedImage] = []
    with store.ingest():
        for descriptor in manifests:
            if not isinstance(descriptor, dict):
                raise BadArchive(f"{archive.label}: index.json: a manifest entry is not an object")
            annotations = descriptor.get("annotations") or {}
            manifest_desc = _pick_manifest(archive, descriptor)
            image = _load_oci_manifest(store, archive, manifest_desc)
            name = _oci_ref_name(annotations)
            tags = (store.check_ref(name),) if name else ()
            if name:
                image = store.tag(image.id, name)
            out.append(LoadedImage(image=image, tags=tags))
    return out


def _pick_manifest(archive: _Source, descriptor: dict[str, Any], depth: int = 0) -> dict[str, Any]:
    if descriptor.get("mediaType") not in _INDEX_TYPES:
        return descriptor
    if depth > 4:
        raise BadArchive(f"{archive.label}: image indexes nested too deep")
    digest = descriptor.get("digest")
    index, _ = _read_json(archive, _blob_name(digest, archive.label), digest=str(digest))
    want_os, want_arch = _platform()
    candidates = [m for m in index.get("manifests") or [] if isinstance(m, dict)]
    for item in candidates:
        plat = item.get("platform") or {}
        if plat.get("os", want_os) == want_os and plat.get("architecture", want_arch) == want_arch:
            return _pick_manifest(archive, item, depth + 1)
    raise BadArchive(f"{archive.label}: no {want_os}/{want_arch} image in index {digest}")


def _load_oci_manifest(store: ImageStore, archive: _Source, descriptor: dict[str, Any]) -> Image:
    digest = descriptor.get("digest")
    manifest, _ = _read_json(archive, _blob_name(digest, archive.label), digest=str(digest))
    config_desc = manifest.get("config") if isinstance(manifest, dict) else None
    if not isinstance(config_desc, dict):
        raise BadArchive(f"{archive.label}: manifest {digest} has no config")
    config_digest = str(config_desc.get("digest"))
    config, raw = _read_json(archive, _blob_name(config_digest, archive.label), digest=config_digest)
    diff_ids = _diff_ids(config, f"{archive.label}: config {config_digest}")
    layers = manifest.get("layers") or []
    if not isinstance(layers, list) or len(layers) != len(diff_ids):
        raise BadArchive(
            f"{archive.label}: manifest {digest} lists {len(layers)} layers, the config {len(diff_ids)}"
        )
    for layer, diff_id in zip(layers, diff_ids, strict=True):
        if store.has_layer(diff_id):
            continue
        blob = str(layer.get("digest")) if isinstance(layer, dict) else ""
        name = _blob_name(blob, archive.label)
        with archive.open(name) as handle:
            where = f"{archive.label}: {name}"
            store.add_layer_from_tar(handle, expect=diff_id, expect_blob=blob, source=where)
    return store.add_image(raw)


def _oci_ref_name(annotations: Any) -> str | None:
    if not isinstance(annotations, dict):
        return None
    full = annotations.get("io.containerd.image.name")
    if isinstance(full, str) and full:
        return full
    ref = annotations.get("org.opencontainers.image.ref.name")
    if isinstance(ref, str) and ("/" in ref or ":" in ref):  # a bare tag ("latest") names no repository
        return ref
    return None


# --- import of a plain root filesystem tarball -------------------------------------------------------


def import_rootfs(
    store: ImageStore,
    source: Path | BinaryIO,
    ref: str | None,
    changes: Sequence[str] = (),
    *,
    message: str = "",
    label: str | None = None,
) -> Image:
    """`composer image import ROOTFS.tar NAME[:TAG] --change ...`: one layer, a config from the changes."""
    label = label or (str(source) if isinstance(source, Path) else "<stdin>")
    config = apply_changes(ImageConfig(), changes)
    if ref is not None:
        store.check_ref(ref)
    try:
        handle: IO[bytes] | BinaryIO = source.open("rb") if isinstance(source, Path) else source
    except OSError as exc:
        raise ImageError(f"{label}: {exc.strerror}") from exc
    with store.ingest(), handle:
        diff_id = store.add_layer_from_tar(handle, source=label)
        history = {"created_by": "composer image import", "comment": message or f"Imported from {label}"}
        return store.create_image(config, [diff_id], history=[history], tags=(ref,) if ref else ())


_CHANGE_KEYWORDS = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR")


def _json_or_shell(rest: str, shell: tuple[str, ...], where: str) -> tuple[str, ...]:
    text = rest.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if isinstance(value, list) and all(isinstance(x, str) for x in value):
            return tuple(value)
    if not text:
        raise ImageError(f"{where}: needs an argument")
    return (*shell, text)


def _words(rest: str, where: str) -> list[str]:
    try:
        return shlex.split(rest, posix=True)
    except ValueError as exc:
        raise ImageError(f"{where}: {exc}") from exc


def _pairs(rest: str, where: str, *, legacy: bool) -> list[tuple[str, str]]:
    """`K=V K2="v 2"` (and, for ENV and LABEL, the legacy `K V with spaces` form)."""
    words = _words(rest, where)
    if not words:
        raise ImageError(f"{where}: needs KEY=VALUE")
    if legacy and "=" not in words[0]:
        key, _, value = rest.strip().partition(" ")
        return [(key, " ".join(_words(value, where)))]
    out: list[tuple[str, str]] = []
    for word in words:
        key, eq, value = word.partition("=")
        if not eq or not key:
            raise ImageError(f"{where}: {word!r} is not KEY=VALUE")
        out.append((key, value))
    return out


def _ports(words: list[str], where: str) -> list[str]:
    out: list[str] = []
    for word in words:
        match = re.fullmatch(r"(\d+)(?:-(\d+))?(?:/(tcp|udp|sctp))?", word.lower())
        if not match:
            raise ImageError(f"{where}: {word!r} is not PORT[-PORT][/PROTO]")
        first, last = int(match[1]), int(match[2] or match[1])
        if not 0 < first <= last <= 65535:
            raise ImageError(f"{where}: {word!r} is not a port range within 1-65535")
        out.extend(f"{port}/{match[3] or 'tcp'}" for port in range(first, last + 1))
    return out


def apply_changes(config: ImageConfig, changes: Sequence[str]) -> ImageConfig:
    """Apply Dockerfile-style `--change` lines (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER,
    VOLUME, WORKDIR) as `docker import --change` does: JSON or shell form for CMD/ENTRYPOINT."""
    for change in changes:
        keyword, _, rest = change.strip().partition(" ")
        keyword = keyword.upper()
        where = f"--change {one_line(change)!r}"
        if keyword not in _CHANGE_KEYWORDS:
            raise ImageError(f"{where}: {keyword or 'empty'} is not one of {', '.join(_CHANGE_KEYWORDS)}")
        shell = config.shell or ("/bin/sh", "-c")
        if keyword == "CMD":
            config = replace(config, cmd=_json_or_shell(rest, shell, where))
        elif keyword == "ENTRYPOINT":
            config = replace(config, entrypoint=_json_or_shell(rest, shell, where))
        elif keyword == "ENV":
            for key, value in _pairs(rest, where, legacy=True):
                config = config.with_env(key, value)
        elif keyword == "LABEL":
            labels = dict(config.labels)
            labels.update(_pairs(rest, where, legacy=True))
            config = replace(config, labels=tuple(sorted(labels.items())))
        elif keyword == "EXPOSE":
            ports = set(config.exposed_ports) | set(_ports(_words(rest, where), where))
            config = replace(config, exposed_ports=tuple(sorted(ports)))
        elif keyword == "VOLUME":
            text = rest.strip()
            paths = json.loads(text) if text.startswith("[") and _valid_json(text) else _words(text, where)
            if not paths or not all(isinstance(p, str) and p for p in paths):
                raise ImageError(f"{where}: needs one or more paths")
            config = replace(config, volumes=tuple(sorted(set(config.volumes) | set(paths))))
        else:
            words = _words(rest, where)
            if len(words) != 1:
                raise ImageError(f"{where}: takes exactly one argument")
            value = words[0]
            if keyword == "WORKDIR":
                value = os.path.normpath(os.path.join(config.working_dir or "/", value))
                config = replace(config, working_dir=value)
            elif keyword == "USER":
                config = replace(config, user=value)
            else:
                config = replace(config, stop_signal=value)
    return config


def _valid_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
