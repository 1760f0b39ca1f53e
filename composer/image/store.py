"""The local image store: content-addressed layers kept as directories, image configs, and tags.

    layers/<hex>/       one unpacked layer, ready as an overlayfs lower dir; <hex> is its diff_id: the
                        sha256 of its uncompressed tar (from a tar), or of `write_layer_tar` of the
                        directory (committed from a directory); the two agree for the same content
    layers/<hex>.json   {"diff_id", "size", "created"}: written last, so a layer exists once this does
    configs/<hex>.json  an image: the OCI image config JSON, byte for byte; <hex> (its sha256) is the id
    tags.json           {"name:tag": "sha256:<id>"}

Concurrency: several composer processes may use one store. Every change to the store's files happens
under an exclusive flock on locks/images.lock and lands by rename, so nothing half-written is ever seen.
Adding content (a layer, then an image that uses it) runs inside `ingest()`, a shared flock on
locks/images.gc.lock; `remove` and `prune` take that one exclusively, so they never collect a layer
that a concurrent load or commit has just added and not yet referenced.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, BinaryIO

from composer.errors import one_line
from composer.image.archive import (
    BadArchive,
    DigestWriter,
    ImageConflict,
    ImageError,
    ImageNotFound,
    UnsafeArchive,
    extract_layer,
    host_architecture,
    open_layer_stream,
    write_layer_tar,
)
from composer.image.config import ImageConfig
from composer.storage.layout import Layout

__all__ = [
    "BadArchive",
    "Image",
    "ImageConflict",
    "ImageError",
    "ImageNotFound",
    "ImageStore",
    "PruneResult",
    "RemoveResult",
    "UnsafeArchive",
    "normalize_ref",
]

# distribution/reference's grammar
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN = re.compile(
    r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*"
    r"(?::[0-9]+)?"
)
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_HEX_PREFIX = re.compile(r"(?:sha256:)?([0-9a-f]{4,64})")
_DOCKER_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io")


def normalize_ref(ref: str) -> str:
    """`busybox` -> `busybox:latest`; `docker.io/library/x:1` -> `x:1`; `localhost:5000/a/b` kept."""
    text = ref.strip()
    if "@" in text:
        raise ImageError(f"{one_line(ref)!r}: references by digest are not supported yet")
    name, tag = text, "latest"
    slash, colon = text.rfind("/"), text.rfind(":")
    if colon > slash:
        name, tag = text[:colon], text[colon + 1 :]
    if not _TAG.fullmatch(tag):
        raise ImageError(f"{one_line(ref)!r}: invalid tag {one_line(tag)!r}")
    parts = name.split("/")
    domain: str | None = None
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        domain = parts.pop(0)
        if not _DOMAIN.fullmatch(domain):
            raise ImageError(f"{one_line(ref)!r}: invalid registry {one_line(domain)!r}")
        if domain in _DOCKER_HUB:
            domain = None
    if domain is None and len(parts) == 2 and parts[0] == "library":
        parts = parts[1:]
    if not all(_COMPONENT.fullmatch(part) for part in parts) or len(name) > 255:
        raise ImageError(
            f"{one_line(ref)!r}: invalid image name (lowercase letters, digits and separators . _ - /)"
        )
    return "/".join([*([domain] if domain else []), *parts]) + ":" + tag


@dataclass(frozen=True, slots=True, kw_only=True)
class Image:
    id: str  # sha256:<hex> of the image config JSON
    tags: tuple[str, ...]  # normalized name:tag, sorted
    config: ImageConfig
    diff_ids: tuple[str, ...]  # bottom layer first, as in the OCI config
    created: str  # RFC 3339, as written in the config ("" when unknown)
    size: int  # bytes of file content over all layers
    architecture: str = ""
    os: str = ""

    @property
    def short_id(self) -> str:
        return self.id.removeprefix("sha256:")[:12]


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoveResult:
    untagged: tuple[str, ...]
    deleted: tuple[str, ...]  # image ids
    layers: tuple[str, ...]  # layer digests freed
    reclaimed: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PruneResult:
    images: tuple[str, ...]
    layers: tuple[str, ...]
    reclaimed: int


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _rmtree(path: Path | str) -> None:
    """Remove a tree even when folders in it are read-only (a layer may hold 0555 folders)."""

    def retry(func: Any, target: str, _exc: Any) -> None:
        parent = os.path.dirname(target)
        os.chmod(parent, 0o700)
        if os.path.isdir(target) and not os.path.islink(target):
            os.chmod(target, 0o700)
        func(target)

    shutil.rmtree(path, onerror=retry)


def _tree_size(path: Path) -> int:
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(folder, name))
            if st.st_mode & 0o170000 == 0o100000:
                total += st.st_size
    return total


class ImageStore:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        # resolve()'s answers while tags.json is the same file: (its inode, mtime, size), ref -> image.
        # An id names its config's content, so only the tags and the config's presence can change.
        self._resolved: tuple[tuple[int, int, int], dict[str, Image]] | None = None

    # --- locks -------------------------------------------------------------------------------------

    @contextmanager
    def _flock(self, name: str, mode: int) -> Iterator[None]:
        self.layout.ensure()
        fd = os.open(self.layout.locks / name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)  # closing drops the lock

    def _lock(self) -> Any:
        return self._flock("images.lock", fcntl.LOCK_EX)

    def ingest(self) -> Any:
        """Hold while adding layers and the image that uses them: no collection runs meanwhile."""
        return self._flock("images.gc.lock", fcntl.LOCK_SH)

    @contextmanager
    def _collecting(self) -> Iterator[None]:
        with self._flock("images.gc.lock", fcntl.LOCK_EX), self._lock():
            yield

    def _write_atomic(self, path: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.layout.tmp, prefix=".write-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)
            os.rename(tmp, path)
        except BaseException:
            with _suppress_missing():
                os.unlink(tmp)
            raise

    # --- layers ------------------------------------------------------------------------------------

    def has_layer(self, digest: str) -> bool:
        try:
            return self.layout.layer_meta(digest).is_file()
        except ValueError:
            return False

    def layer_size(self, digest: str) -> int:
        try:
            data = json.loads(self.layout.layer_meta(digest).read_bytes())
            return int(data.get("size") or 0)
        except (OSError, ValueError, AttributeError):
            return 0

    def add_layer_from_tar(
        self,
        stream: IO[bytes] | BinaryIO,
        *,
        expect: str | None = None,
        expect_blob: str | None = None,
        source: str = "<layer>",
    ) -> str:
        """Unpack a layer tar (plain, gzip, xz or bzip2) into the store; returns its diff_id.

        `expect` / `expect_blob`: the diff_id and the compressed blob digest the caller was promised;
        a mismatch is an error and nothing is kept."""
        self.layout.ensure()
        staging = Path(tempfile.mkdtemp(dir=self.layout.tmp, prefix="layer-"))
        try:
            os.chmod(staging, 0o755)
            plain, blob = open_layer_stream(stream, source=source)
            with self.ingest():
                stats = extract_layer(plain, staging, source=source)
                plain.drain()
                blob.drain()
                if expect is not None and plain.digest != expect:
                    raise BadArchive(f"{source}: content digest {plain.digest} is not the diff_id {expect}")
                if expect_blob is not None and blob.digest != expect_blob:
                    raise BadArchive(f"{source}: blob digest {blob.digest} does not match {expect_blob}")
                self._install_layer(staging, plain.digest, stats.size)
        except OSError as exc:
            raise ImageError(f"{source}: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")) from exc
        except EOFError as exc:
            raise BadArchive(f"{source}: the stream ends early") from exc
        finally:
            if staging.exists():
                _rmtree(staging)
        return plain.digest

    def _install_layer(self, staging: Path, digest: str, size: int) -> bool:
        """Rename a finished folder into place (unless the layer exists); True when it was installed."""
        with self._lock():
            if self.has_layer(digest):
                return False
            target = self.layout.layer_dir(digest)
            if os.path.lexists(target):  # left by a crash between rename and metadata: replace
                _rmtree(target)
            os.rename(staging, target)
            meta = {"diff_id": digest, "size": size, "created": _now()}
            self._write_atomic(self.layout.layer_meta(digest), json.dumps(meta, sort_keys=True).encode())
            return True

    def commit_rootfs(
        self,
        path: Path,
        config: ImageConfig,
        *,
        tags: Sequence[str] = (),
        parent: Image | None = None,
    ) -> Image:
        """Make `path` a new layer on top of `parent`'s layers and an image with `config`.

        When `path` is on the store's filesystem it is consumed: renamed into the store (or deleted
        if an identical layer exists already). On another filesystem it is copied and left alone."""
        for ref in tags:
            normalize_ref(ref)
        if not path.is_dir():
            raise ImageError(f"{path}: not a directory")
        self.layout.ensure()
        with self.ingest():
            hasher = DigestWriter()
            write_layer_tar(path, hasher)
            digest = hasher.digest
            same_fs = os.stat(path).st_dev == os.stat(self.layout.layers).st_dev
            if same_fs:
                size = _tree_size(path)
                try:
                    if not self._install_layer(path, digest, size):
                        _rmtree(path)
                except OSError as exc:
                    if exc.errno not in (errno.EXDEV, errno.EBUSY):
                        raise
                    same_fs = False
            if not same_fs and not self.has_layer(digest):
                with tempfile.TemporaryFile(dir=self.layout.tmp, prefix="commit-") as spool:
                    write_layer_tar(path, spool)
                    spool.seek(0)
                    self.add_layer_from_tar(spool, expect=digest, source=str(path))
            base = self.raw_config(parent) if parent is not None else {}
            history = {"created_by": "composer commit"}
            diff_ids = [*(parent.diff_ids if parent else ()), digest]
            return self.create_image(config, diff_ids, history=[history], tags=tags, base=base)

    def layer_dirs(self, image: Image) -> list[Path]:
        """The image's layer folders, top first (overlayfs lowerdir order); repeats keep the top one."""
        seen: set[str] = set()
        out: list[Path] = []
        for digest in reversed(image.diff_ids):
            if digest not in seen:
                seen.add(digest)
                out.append(self.layout.layer_dir(digest))
        return out

    # --- images ------------------------------------------------------------------------------------

    def create_image(
        self,
        config: ImageConfig,
        diff_ids: Sequence[str],
        *,
        history: Sequence[dict[str, Any]] = (),
        tags: Sequence[str] = (),
        base: dict[str, Any] | None = None,
    ) -> Image:
        """Write an OCI image config for `config` over `diff_ids` (history appended to `base`'s)."""
        now = _now()
        data = {
            "architecture": (base or {}).get("architecture") or host_architecture(),
            "os": (base or {}).get("os") or "linux",
            "created": now,
            "config": config.to_oci(),
            "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
            "history": [*((base or {}).get("history") or []), *({"created": now, **h} for h in history)],
        }
        raw = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        return self.add_image(raw, tags=tags)

    def add_image(self, config_json: bytes, *, tags: Sequence[str] = ()) -> Image:
        """Store an image config as given (its sha256 is the id); every layer must be present."""
        data = _parse_config(config_json, "image config")
        keys = [normalize_ref(ref) for ref in tags]
        image_id = _sha256(config_json)
        with self._lock():
            missing = [d for d in data["rootfs"]["diff_ids"] if not self.has_layer(d)]
            if missing:
                raise ImageError(f"image {image_id[7:19]}: layer {missing[0]} is not in the store")
            path = self.layout.image_config(image_id)
            if not path.exists():
                self._write_atomic(path, config_json)
            if keys:
                current = self._read_tags()
                current.update(dict.fromkeys(keys, image_id))
                self._write_tags(current)
        return self._image(image_id, data, self._read_tags())

    def raw_config(self, image: Image) -> dict[str, Any]:
        try:
            data = json.loads(self.layout.image_config(image.id).read_bytes())
        except FileNotFoundError:
            raise ImageNotFound(f"image {image.short_id} was removed") from None
        return data if isinstance(data, dict) else {}

    def _image(
        self, image_id: str, data: dict[str, Any], tags: dict[str, str], sizes: dict[str, int] | None = None
    ) -> Image:
        diff_ids = tuple(data["rootfs"]["diff_ids"])
        sizes = {} if sizes is None else sizes
        total = 0
        for digest in set(diff_ids):
            if digest not in sizes:
                sizes[digest] = self.layer_size(digest)
            total += sizes[digest]
        return Image(
            id=image_id,
            tags=tuple(sorted(key for key, value in tags.items() if value == image_id)),
            config=ImageConfig.from_oci(data.get("config") if isinstance(data.get("config"), dict) else None),
            diff_ids=diff_ids,
            created=str(data.get("created") or ""),
            size=total,
            architecture=str(data.get("architecture") or ""),
            os=str(data.get("os") or ""),
        )

    def _load(self, image_id: str, tags: dict[str, str]) -> Image | None:
        path = self.layout.image_config(image_id)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        return self._image(image_id, _parse_config(raw, str(path)), tags)

    def _ids(self) -> list[str]:
        try:
            names = os.listdir(self.layout.image_configs)
        except FileNotFoundError:
            return []
        return sorted("sha256:" + n[:-5] for n in names if re.fullmatch(r"[0-9a-f]{64}\.json", n))

    # --- references ------------------------------------------------------------------------------

    def _read_tags(self) -> dict[str, str]:
        try:
            data = json.loads(self.layout.tags_file.read_bytes())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise ImageError(f"{self.layout.tags_file}: not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise ImageError(f"{self.layout.tags_file}: not a JSON object")
        return {str(k): str(v) for k, v in data.items()}

    def _write_tags(self, tags: dict[str, str]) -> None:
        self._write_atomic(self.layout.tags_file, json.dumps(dict(sorted(tags.items())), indent=1).encode())

    def check_ref(self, ref: str) -> str:
        """`ref` normalized (`docker.io/library/x` -> `x:latest`), or an ImageError saying what is wrong."""
        return normalize_ref(ref)

    def _resolve_id(self, ref: str) -> str | None:
        match = _HEX_PREFIX.fullmatch(ref.strip())
        if not match:
            return None
        found = [i for i in self._ids() if i[7:].startswith(match[1])]
        if len(found) > 1:
            raise ImageError(f"{ref!r} is ambiguous: it starts {len(found)} image ids")
        return found[0] if found else None

    def resolve(self, ref: str) -> Image | None:
        """A tag (`name[:tag]`), a full id (`sha256:...`) or an id prefix (4+ hex digits).

        Remembered while tags.json stays the same file and the image's config is there: the
        supervisor resolves the same image for each of a service's containers (~1 ms each: the
        tags, the config and its layers' sizes read and parsed)."""
        signature = _signature(self.layout.tags_file)
        known = self._resolved
        if signature is not None and known is not None and known[0] == signature:
            image = known[1].get(ref)
            if image is not None and self.layout.image_config(image.id).exists():
                return image
        image = self._resolve(ref)
        if signature is not None and image is not None:
            known = self._resolved
            cache = known[1] if known is not None and known[0] == signature else {}
            cache[ref] = image
            self._resolved = (signature, cache)
        return image

    def _resolve(self, ref: str) -> Image | None:
        tags = self._read_tags()
        try:
            key: str | None = normalize_ref(ref)
        except ImageError:
            key = None
        if key is not None and key in tags:
            image = self._load(tags[key], tags)
            if image is not None:
                return image
        image_id = self._resolve_id(ref)
        return self._load(image_id, tags) if image_id else None

    def get(self, ref: str) -> Image:
        image = self.resolve(ref)
        if image is None:
            raise ImageNotFound(f"no such image: {one_line(ref)}")
        return image

    def tag(self, ref: str, new: str) -> Image:
        """Point `new` (name[:tag]) at the image `ref` names."""
        key = normalize_ref(new)
        with self._lock():
            image = self.get(ref)
            tags = self._read_tags()
            tags[key] = image.id
            self._write_tags(tags)
            return replace(image, tags=tuple(sorted(k for k, v in tags.items() if v == image.id)))

    def untag(self, ref: str) -> str:
        """Remove one tag (the image stays, dangling if that was its last tag); returns the tag."""
        key = normalize_ref(ref)
        with self._lock():
            tags = self._read_tags()
            if key not in tags:
                raise ImageNotFound(f"no such tag: {key}")
            del tags[key]
            self._write_tags(tags)
        return key

    # --- listing and collection ------------------------------------------------------------------

    def remove(self, ref: str, *, force: bool = False) -> RemoveResult:
        """`image rm`: by tag, untag (and delete the image with its last tag); by id, delete the image,
        refusing when several tags name it unless `force`. Layers nothing else uses are freed."""
        trash: list[Path] = []
        with self._collecting():
            tags = self._read_tags()
            try:
                key: str | None = normalize_ref(ref)
            except ImageError:
                key = None
            if key is not None and key in tags:
                image_id = tags.pop(key)
                untagged = [key]
                if any(value == image_id for value in tags.values()):
                    self._write_tags(tags)
                    return RemoveResult(untagged=(key,), deleted=(), layers=(), reclaimed=0)
            else:
                found = self._resolve_id(ref)
                if found is None:
                    raise ImageNotFound(f"no such image: {one_line(ref)}")
                image_id = found
                untagged = sorted(k for k, v in tags.items() if v == image_id)
                if len(untagged) > 1 and not force:
                    raise ImageConflict(
                        f"image {image_id[7:19]} is tagged {', '.join(untagged)}: remove a tag or use --force"
                    )
                for name in untagged:
                    del tags[name]
            self._write_tags(tags)
            image = self._load(image_id, tags)
            with _suppress_missing():
                os.unlink(self.layout.image_config(image_id))
            layers, reclaimed = self._collect_layers(set(image.diff_ids) if image else set(), trash)
        for path in trash:
            _rmtree(path)
        return RemoveResult(untagged=tuple(untagged), deleted=(image_id,), layers=layers, reclaimed=reclaimed)

    def prune(self) -> PruneResult:
        """Delete dangling images (no tag) and every layer no image uses; returns what was freed."""
        trash: list[Path] = []
        with self._collecting():
            tagged = set(self._read_tags().values())
            deleted = [image_id for image_id in self._ids() if image_id not in tagged]
            for image_id in deleted:
                with _suppress_missing():
                    os.unlink(self.layout.image_config(image_id))
            layers, reclaimed = self._collect_layers(None, trash)
        for path in trash:
            _rmtree(path)
        return PruneResult(images=tuple(deleted), layers=layers, reclaimed=reclaimed)

    def _collect_layers(self, candidates: set[str] | None, trash: list[Path]) -> tuple[tuple[str, ...], int]:
        """Under the collection lock: drop layers (all, or only `candidates`) that no image uses.
        Folders are renamed into tmp (into `trash`) for deletion after the lock is released."""
        used: set[str] = set()
        for image_id in self._ids():
            path = self.layout.image_config(image_id)
            try:
                used.update(_parse_config(path.read_bytes(), str(path))["rootfs"]["diff_ids"])
            except (FileNotFoundError, ImageError):
                continue
        if candidates is None:
            try:
                names = os.listdir(self.layout.layers)
            except FileNotFoundError:
                names = []
            candidates = {"sha256:" + n.removesuffix(".json") for n in names
                          if re.fullmatch(r"[0-9a-f]{64}(?:\.json)?", n)}  # fmt: skip
        freed: list[str] = []
        reclaimed = 0
        for digest in sorted(candidates - used):
            try:
                meta, folder = self.layout.layer_meta(digest), self.layout.layer_dir(digest)
            except ValueError:
                continue
            size = self.layer_size(digest)
            with _suppress_missing():
                os.unlink(meta)
            if os.path.lexists(folder):
                gone = Path(tempfile.mkdtemp(dir=self.layout.tmp, prefix="gone-"))
                os.rename(folder, gone / "layer")
                trash.append(gone)
            freed.append(digest)
            reclaimed += size
        return tuple(freed), reclaimed

    def list(self) -> list[Image]:
        """Every image, newest first (dangling ones included, with no tags)."""
        tags = self._read_tags()
        sizes: dict[str, int] = {}
        images = []
        for image_id in self._ids():
            path = self.layout.image_config(image_id)
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                continue
            images.append(self._image(image_id, _parse_config(raw, str(path)), tags, sizes))
        images.sort(key=lambda image: image.id)
        images.sort(key=lambda image: image.created, reverse=True)
        return images


def _suppress_missing() -> suppress:
    return suppress(FileNotFoundError)


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_ino, info.st_mtime_ns, info.st_size


def _parse_config(raw: bytes, where: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadArchive(f"{where}: not valid JSON ({exc})") from exc
    rootfs = data.get("rootfs") if isinstance(data, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(
        isinstance(d, str) and re.fullmatch(r"sha256:[0-9a-f]{64}", d) for d in diff_ids
    ):
        raise BadArchive(f"{where}: no valid rootfs.diff_ids (sha256 digests) in the image config")
    assert isinstance(data, dict)
    return data
