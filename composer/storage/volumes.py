"""Named and anonymous volumes of the local driver, and Docker's copy-up of image content into them.

A volume is a folder `<root>/volumes/<name>/` holding `meta.json` (driver, options, labels, creation
time, whether it was filled from an image, who is using it) and `_data`, the folder containers see:

- no `driver_opts`: `_data` is a plain folder on composer's disk;
- `{type: none, o: bind, device: /abs/path}` (the inception pattern): `device` is bind-mounted on
  `_data` when the first user acquires the volume and unmounted when the last one releases it. The
  device must be an absolute path to an existing folder, checked when the volume is ensured and again
  at every mount, with an error naming the volume and the path;
- any other `type` (tmpfs, nfs, ...): `mount(2)` of `device` (or the type's name) on `_data` with the
  type, and `o` split like Docker's local driver does (moby pkg/mount parseOptions): known words
  (`ro`, `nosuid`, `bind`, `rprivate` ...) become mount flags, the rest is the data string.

Users are recorded in `meta.json` (container ids), so a supervisor that crashed and came back finds the
mount still counted, and `remove` refuses a volume somebody uses. `remove` never deletes through a
mount: it unmounts composer's own mount on `_data`, refuses if any mount is left under the volume's
folder, and only then deletes the folder: a bind device's files are never touched.

Copy-up (Docker's rule, moby daemon/volumes_unix.go copyExistingContents + copyOwnership): on the first
mount of a volume, if `_data` is empty, the image's content at the mount target is copied into it with
owners, modes, timestamps, symlinks, hard links, device nodes and extended attributes, and the root of
the volume takes the owner and mode of the image's folder. It happens once per volume (marked in
`meta.json`) and not at all with `nocopy`. The image's content is given as its layer folders at the
target, top first (overlayfs lower order); whiteouts and opaque folders are honoured, so the copy is
the merged view without mounting anything.

Plain paths and values in, nothing from the spec or the image layers: the engine maps compose volumes
to names and options. The functions are synchronous; the engine runs them in a worker thread.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from composer.errors import ComposerError
from composer.storage.layout import Layout

__all__ = [
    "ANONYMOUS_LABEL",
    "MountOptions",
    "Mounter",
    "VolumeError",
    "VolumeInUse",
    "VolumeInfo",
    "VolumeNotFound",
    "VolumeStore",
    "check_driver_opts",
    "copy_up",
    "is_empty",
    "mount_options",
    "valid_name",
]

ANONYMOUS_LABEL = "com.docker.volume.anonymous"  # what Docker puts on anonymous volumes
META = "meta.json"
DATA = "_data"
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")  # Docker's volume name rule (daemon/names)
_OPT_KEYS = ("type", "o", "device")
_OVERLAY_XATTR = "trusted.overlay."

# mount(2) flags (linux/mount.h).
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2
_PROPAGATION = MS_UNBINDABLE | MS_PRIVATE | MS_SLAVE | MS_SHARED

# moby pkg/mount (now moby/sys/mount) flags_linux.go: word -> (clear instead of set, flag).
_FLAGS: dict[str, tuple[bool, int]] = {
    "defaults": (False, 0),
    "ro": (False, MS_RDONLY),
    "rw": (True, MS_RDONLY),
    "suid": (True, MS_NOSUID),
    "nosuid": (False, MS_NOSUID),
    "dev": (True, MS_NODEV),
    "nodev": (False, MS_NODEV),
    "exec": (True, MS_NOEXEC),
    "noexec": (False, MS_NOEXEC),
    "sync": (False, MS_SYNCHRONOUS),
    "async": (True, MS_SYNCHRONOUS),
    "dirsync": (False, MS_DIRSYNC),
    "remount": (False, MS_REMOUNT),
    "mand": (False, MS_MANDLOCK),
    "nomand": (True, MS_MANDLOCK),
    "atime": (True, MS_NOATIME),
    "noatime": (False, MS_NOATIME),
    "diratime": (True, MS_NODIRATIME),
    "nodiratime": (False, MS_NODIRATIME),
    "bind": (False, MS_BIND),
    "rbind": (False, MS_BIND | MS_REC),
    "unbindable": (False, MS_UNBINDABLE),
    "runbindable": (False, MS_UNBINDABLE | MS_REC),
    "private": (False, MS_PRIVATE),
    "rprivate": (False, MS_PRIVATE | MS_REC),
    "shared": (False, MS_SHARED),
    "rshared": (False, MS_SHARED | MS_REC),
    "slave": (False, MS_SLAVE),
    "rslave": (False, MS_SLAVE | MS_REC),
    "relatime": (False, MS_RELATIME),
    "norelatime": (True, MS_RELATIME),
    "strictatime": (False, MS_STRICTATIME),
    "nostrictatime": (True, MS_STRICTATIME),
}


class VolumeError(ComposerError):
    """A volume that cannot be made, mounted or removed: names the volume (and the path when one is)."""

    def __init__(self, volume: str, message: str) -> None:
        super().__init__(f"volume {volume}: {message}")
        self.volume = volume


class VolumeNotFound(VolumeError):
    """An external volume (or one named on the command line) that does not exist."""


class VolumeInUse(VolumeError):
    """`remove` of a volume that containers still use."""


@dataclass(frozen=True, slots=True, kw_only=True)
class VolumeInfo:
    """One volume. `created` says whether this call made it (for `ensure`); `created_at` is RFC 3339."""

    name: str
    mountpoint: Path  # the `_data` folder containers bind
    driver: str = "local"
    driver_opts: tuple[tuple[str, str], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    created_at: str = ""
    created: bool = False
    populated: bool = False  # copy-up was done (or found the volume not empty)
    users: tuple[str, ...] = ()  # who holds it (container ids), sorted

    @property
    def anonymous(self) -> bool:
        return any(key == ANONYMOUS_LABEL for key, _ in self.labels)


@dataclass(frozen=True, slots=True, kw_only=True)
class MountOptions:
    """What `driver_opts` mean for mount(2): None for a plain folder (see `mount_options`)."""

    source: str
    fstype: str | None  # None for a bind
    flags: int = 0
    data: str = ""

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & MS_BIND)


# --- pure: names and options ---------------------------------------------------------------------------


def valid_name(name: str) -> bool:
    """Docker's rule for volume names (also what keeps a name inside the volumes folder)."""
    return bool(_NAME.match(name)) and name not in (".", "..")


def _split_o(volume: str, text: str) -> tuple[int, str]:
    """`o` -> (flags, data): known words are flags (later ones win), the rest is passed as data."""
    flags = 0
    data: list[str] = []
    for word in filter(None, (w.strip() for w in text.split(","))):
        known = _FLAGS.get(word)
        if known is None:
            data.append(word)
            continue
        clear, flag = known
        flags = flags & ~flag if clear else flags | flag
    return flags, ",".join(data)


def mount_options(volume: str, driver_opts: Mapping[str, str]) -> MountOptions | None:
    """The mount a local volume's `driver_opts` ask for, or None for a plain folder. Checks the keys
    and the shape of the values (not the disk: see `check_driver_opts`)."""
    for key in sorted(driver_opts):
        if key not in _OPT_KEYS:
            raise VolumeError(volume, f"driver_opts {key!r} is not supported (use type, o and device)")
    fstype = driver_opts.get("type", "").strip()
    options = driver_opts.get("o", "")
    device = driver_opts.get("device", "")
    if not fstype:
        if options or device:
            raise VolumeError(volume, "driver_opts o and device need a type (type: none for a bind)")
        return None
    flags, data = _split_o(volume, options)
    if fstype == "none" or flags & MS_BIND:
        if not flags & MS_BIND:
            raise VolumeError(volume, f"driver_opts type {fstype} needs o: bind")
        if not device:
            raise VolumeError(volume, "driver_opts o: bind needs a device (an absolute host path)")
        if not device.startswith("/"):
            raise VolumeError(volume, f"driver_opts device {device} is not an absolute path")
        return MountOptions(source=device, fstype=None, flags=flags, data=data)
    return MountOptions(source=device or fstype, fstype=fstype, flags=flags, data=data)


def check_driver_opts(volume: str, driver: str | None, driver_opts: Mapping[str, str]) -> MountOptions | None:
    """All of `mount_options`, the driver (only `local`), and that a bind device exists and is a folder.

    Meant for `config`/`up` time as well as mount time (research: the top inception failure)."""
    if driver not in (None, "", "local"):
        raise VolumeError(volume, f"driver {driver!r} is not supported (only local)")
    options = mount_options(volume, driver_opts)
    if options is not None and options.is_bind:
        device = Path(options.source)
        if not device.exists():
            raise VolumeError(volume, f"driver_opts device {device} does not exist")
        if not device.is_dir():
            raise VolumeError(volume, f"driver_opts device {device} is not a folder")
    return options


# --- mounts as the kernel sees them -------------------------------------------------------------------------


def _unescape(text: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def _mount_points() -> list[str]:
    with open("/proc/self/mountinfo") as handle:
        return [_unescape(line.split()[4]) for line in handle if line.strip()]


def _is_mount_point(path: Path) -> bool:
    return os.path.realpath(path) in _mount_points()  # the kernel lists paths with symlinks resolved


def _mounts_under(folder: Path) -> list[str]:
    base = os.path.realpath(folder)
    return sorted(p for p in _mount_points() if p == base or p.startswith(base + "/"))


class Mounter(Protocol):
    """mount(2) and umount2(2): the module composer.runtime.libc is one. The engine passes it in (storage
    sits below the runtime and imports nothing of it); both raise OSError."""

    def mount(
        self, source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None
    ) -> None: ...

    def umount2(self, target: str, flags: int = 0) -> None: ...


def _mount(libc: Mounter, options: MountOptions, target: Path) -> None:
    """Docker's order: the mount without propagation flags, then propagation, then a read-only (etc.)
    remount for a bind, whose first mount ignores those flags."""
    path = str(target)
    base = (
        options.flags & ~_PROPAGATION & ~MS_REC if not options.is_bind else MS_BIND | (options.flags & MS_REC)
    )
    if options.is_bind:
        libc.mount(options.source, path, None, base)
    else:
        libc.mount(options.source, path, options.fstype, base, options.data or None)
    try:
        if options.flags & _PROPAGATION:
            libc.mount(None, path, None, options.flags & (_PROPAGATION | MS_REC))
        extra = options.flags & ~(_PROPAGATION | MS_REC | MS_BIND | MS_REMOUNT)
        if options.is_bind and extra:
            libc.mount(None, path, None, MS_BIND | MS_REMOUNT | extra)
    except OSError:
        libc.umount2(path, MNT_DETACH)
        raise


def _unmount(libc: Mounter, target: Path) -> None:
    try:
        libc.umount2(str(target))
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # not a mount point (any more)
            return
        if exc.errno != errno.EBUSY:
            raise
        libc.umount2(str(target), MNT_DETACH)


# --- the store ----------------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pairs(mapping: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in mapping.items()))


@dataclass(slots=True)
class _Meta:
    name: str
    driver: str
    driver_opts: dict[str, str]
    labels: dict[str, str]
    created_at: str
    populated: bool = False
    users: list[str] = field(default_factory=list)

    def to_json(self) -> bytes:
        data = {
            "name": self.name,
            "driver": self.driver,
            "driver_opts": dict(sorted(self.driver_opts.items())),
            "labels": dict(sorted(self.labels.items())),
            "created_at": self.created_at,
            "populated": self.populated,
            "users": sorted(set(self.users)),
        }
        return json.dumps(data, indent=2).encode() + b"\n"

    @staticmethod
    def from_json(raw: bytes) -> _Meta:
        data = json.loads(raw)
        return _Meta(
            name=str(data["name"]),
            driver=str(data.get("driver") or "local"),
            driver_opts={str(k): str(v) for k, v in (data.get("driver_opts") or {}).items()},
            labels={str(k): str(v) for k, v in (data.get("labels") or {}).items()},
            created_at=str(data.get("created_at") or ""),
            populated=bool(data.get("populated", False)),
            users=[str(u) for u in data.get("users") or ()],
        )


class VolumeStore:
    """The local driver's volumes under `<root>/volumes`. All changes hold one lock file, so that
    supervisors of different projects sharing an external volume count its users correctly."""

    def __init__(self, layout: Layout, mounter: Mounter | None = None) -> None:
        self.layout = layout
        self.mounter = mounter

    def _mounter(self, name: str) -> Mounter:
        if self.mounter is None:
            raise VolumeError(name, "driver_opts volumes need mount(2), and this store was given none")
        return self.mounter

    # --- paths and metadata

    def _dir(self, name: str) -> Path:
        if not valid_name(name):
            raise VolumeError(name, "not a valid volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]*)")
        return self.layout.volumes / name

    def mountpoint(self, name: str) -> Path:
        return self._dir(name) / DATA

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.layout.locks.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.layout.locks / "volumes.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read(self, name: str) -> _Meta | None:
        try:
            return _Meta.from_json((self._dir(name) / META).read_bytes())
        except FileNotFoundError:
            return None
        except (ValueError, KeyError) as exc:
            raise VolumeError(name, f"{self._dir(name) / META} is damaged: {exc}") from None

    def _write(self, meta: _Meta) -> None:
        folder = self._dir(meta.name)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".meta-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(meta.to_json())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, folder / META)
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _info(self, meta: _Meta, *, created: bool = False) -> VolumeInfo:
        return VolumeInfo(
            name=meta.name,
            mountpoint=self.mountpoint(meta.name),
            driver=meta.driver,
            driver_opts=_pairs(meta.driver_opts),
            labels=_pairs(meta.labels),
            created_at=meta.created_at,
            created=created,
            populated=meta.populated,
            users=tuple(sorted(set(meta.users))),
        )

    # --- queries

    def exists(self, name: str) -> bool:
        return valid_name(name) and (self.layout.volumes / name / META).is_file()

    def get(self, name: str) -> VolumeInfo:
        meta = self._read(name)
        if meta is None:
            raise VolumeNotFound(name, "no such volume")
        return self._info(meta)

    def lookup_external(self, name: str) -> VolumeInfo:
        """An `external: true` volume: looked up, never created."""
        meta = self._read(name)
        if meta is None:
            raise VolumeNotFound(
                name,
                f"external volume not found in {self.layout.volumes} (create it first)",
            )
        return self._info(meta)

    def list(self) -> list[VolumeInfo]:
        out = []
        try:
            names = sorted(os.listdir(self.layout.volumes))
        except FileNotFoundError:
            return []
        for name in names:
            if not valid_name(name):
                continue
            meta = self._read(name)
            if meta is not None:
                out.append(self._info(meta))
        return out

    # --- create

    def ensure(
        self,
        name: str,
        driver: str | None = None,
        driver_opts: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> VolumeInfo:
        """The volume `name` (a full name, `proj_db`), created when missing. An existing volume with other
        driver options is an error (its data would silently live elsewhere); other labels are kept."""
        opts = dict(driver_opts or {})
        check_driver_opts(name, driver, opts)
        folder = self._dir(name)
        with self._locked():
            meta = self._read(name)
            if meta is not None:
                if meta.driver_opts != opts:
                    raise VolumeError(
                        name,
                        f"exists with other driver_opts ({_show(meta.driver_opts)}, the file says "
                        f"{_show(opts)}); remove it (composer down -v) to recreate it",
                    )
                return self._info(meta)
            folder.mkdir(mode=0o701, parents=True, exist_ok=True)
            (folder / DATA).mkdir(mode=0o755, exist_ok=True)
            meta = _Meta(
                name=name, driver="local", driver_opts=opts, labels=dict(labels or {}), created_at=_now()
            )
            self._write(meta)
            return self._info(meta, created=True)

    def create_anonymous(self, labels: Mapping[str, str] | None = None) -> VolumeInfo:
        """A new volume named by a random 64-hex id, labelled as anonymous like Docker's."""
        while True:
            name = secrets.token_hex(32)
            if not (self.layout.volumes / name).exists():
                break
        return self.ensure(name, labels={**(labels or {}), ANONYMOUS_LABEL: ""})

    # --- use

    def acquire(self, name: str, user: str) -> Path:
        """Record `user` (a container id) and return the folder to bind; the first user mounts a
        driver_opts volume. Acquiring twice with the same user is a no-op (re-adoption after a crash)."""
        with self._locked():
            meta = self._read(name)
            if meta is None:
                raise VolumeNotFound(name, "no such volume")
            target = self.mountpoint(name)
            options = check_driver_opts(name, meta.driver, meta.driver_opts)
            if options is not None and not _is_mount_point(target):
                target.mkdir(mode=0o755, exist_ok=True)
                try:
                    _mount(self._mounter(name), options, target)
                except OSError as exc:
                    raise VolumeError(name, f"mounting {options.source} on {target}: {exc}") from None
            if user not in meta.users:
                meta.users.append(user)
                self._write(meta)
            return target

    def release(self, name: str, user: str) -> bool:
        """Forget `user`; the last user unmounts a driver_opts volume. Returns whether it was unmounted.
        Releasing a user that holds nothing (or a missing volume) is a no-op: `down` works twice."""
        with self._locked():
            meta = self._read(name)
            if meta is None:
                return False
            if user in meta.users:
                meta.users = [u for u in meta.users if u != user]
                self._write(meta)
            if meta.users or not meta.driver_opts:
                return False
            target = self.mountpoint(name)
            if not _is_mount_point(target):
                return False
            _unmount(self._mounter(name), target)
            return True

    def populate(self, name: str, sources: Path | Sequence[Path] | None, *, nocopy: bool = False) -> bool:
        """Docker's copy-up, once per volume: call after `acquire`. `sources`: the image's folder at the
        mount target in each layer, top first (None or missing: the image has nothing there). Returns
        whether anything was copied."""
        with self._locked():
            meta = self._read(name)
            if meta is None:
                raise VolumeNotFound(name, "no such volume")
            if meta.populated:
                return False
            target = self.mountpoint(name)
            if meta.driver_opts and not _is_mount_point(target):
                raise VolumeError(name, f"{target} is not mounted: acquire the volume before filling it")
            copied = False
            if not nocopy and sources is not None:
                try:
                    copied = copy_up(target, sources)
                except OSError as exc:
                    raise VolumeError(name, f"copying the image's content into {target}: {exc}") from None
            if not nocopy:  # a nocopy mount leaves the next mount of the volume free to fill it
                meta.populated = True
                self._write(meta)
            return copied

    # --- remove

    def remove(self, name: str, *, missing_ok: bool = False) -> bool:
        """Delete a volume: refused while users hold it; composer's own mount on `_data` is undone first,
        and nothing is deleted while any other mount lies under the volume's folder (a bind device's
        files are never touched). Returns whether there was a volume to remove."""
        folder = self._dir(name)
        with self._locked():
            meta = self._read(name)
            if meta is None and not folder.exists():
                if missing_ok:
                    return False
                raise VolumeNotFound(name, "no such volume")
            if meta is not None and meta.users:
                raise VolumeInUse(name, f"in use by {', '.join(sorted(set(meta.users)))}")
            target = folder / DATA
            for _ in range(16):  # stacked mounts: undo each of ours
                if not _is_mount_point(target):
                    break
                _unmount(self._mounter(name), target)
            left = _mounts_under(folder)
            if left:
                raise VolumeInUse(name, f"{left[0]} is still mounted; not deleting anything")
            _rmtree(folder)
            return True


def _show(opts: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(opts.items())) or "none"


def _rmtree(path: Path) -> None:
    """Remove a tree even when folders in it are read-only (an image may hold 0555 folders)."""

    def retry(func: Callable[[str], object], target: str, _exc: object) -> None:
        os.chmod(os.path.dirname(target), 0o700)
        if os.path.isdir(target) and not os.path.islink(target):
            os.chmod(target, 0o700)
        func(target)

    if os.path.lexists(path):
        shutil.rmtree(path, onerror=retry)


# --- copy-up ------------------------------------------------------------------------------------------------


def is_empty(folder: Path) -> bool:
    with os.scandir(folder) as entries:
        return next(entries, None) is None


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _merged(dirs: Sequence[Path]) -> Iterator[tuple[str, Path, os.stat_result, list[Path]]]:
    """The merged entries of folder `dirs` (top first): name, topmost path, its lstat, and for a folder
    the layers' folders that show through (top first). Whiteouts hide, opaque folders stop the descent."""
    names: set[str] = set()
    for folder in dirs:
        names.update(os.listdir(folder))
    for name in sorted(names):
        top: tuple[Path, os.stat_result] | None = None
        below: list[Path] = []
        for folder in dirs:
            path = folder / name
            st = _lstat(path)
            if st is None:
                continue
            if top is None:
                if _is_whiteout(st):
                    break
                top = (path, st)
                if not stat.S_ISDIR(st.st_mode):
                    break
            elif not stat.S_ISDIR(st.st_mode):
                break  # a file (or whiteout) in a lower layer is hidden along with what lies below it
            below.append(path)
            if _is_opaque(path):
                break
        if top is not None:
            yield name, top[0], top[1], below


def _copy_xattrs(source: Path, dest: Path) -> None:
    try:
        names = os.listxattr(source, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EPERM):
            return
        raise
    for key in names:
        if key.startswith(_OVERLAY_XATTR):
            continue
        try:
            os.setxattr(dest, key, os.getxattr(source, key, follow_symlinks=False), follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.ENOTSUP, errno.EPERM):
                raise


def _finish(source: Path, dest: Path, st: os.stat_result) -> None:
    """Owner, then mode (chown clears set-id bits), xattrs, times."""
    os.lchown(dest, st.st_uid, st.st_gid)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dest, stat.S_IMODE(st.st_mode))
    _copy_xattrs(source, dest)
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _copy_dir(dirs: Sequence[Path], dest: Path, links: dict[tuple[int, int], Path]) -> None:
    for name, path, st, below in _merged(dirs):
        out = dest / name
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            os.mkdir(out, 0o700)
            _copy_dir(below, out, links)
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(path), out)
        else:
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in links:
                os.link(links[key], out)
                continue
            if stat.S_ISREG(mode):
                shutil.copyfile(path, out, follow_symlinks=False)
            elif stat.S_ISFIFO(mode):
                os.mkfifo(out, 0o600)
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                os.mknod(out, stat.S_IFMT(mode) | 0o600, st.st_rdev)
            else:
                continue  # sockets mean nothing in a copy
            if st.st_nlink > 1:
                links[key] = out
        _finish(path, out, st)


def copy_up(volume_dir: Path, source: Path | Sequence[Path]) -> bool:
    """Fill an EMPTY `volume_dir` from `source`: one folder, or one layer folder per image layer at the
    mount target (top first), merged as overlayfs would. The volume's root takes the owner and mode of
    the topmost source folder (Docker's copyOwnership). Returns whether a copy happened: False when the
    volume is not empty or the source is missing or not a folder."""
    given = [source] if isinstance(source, Path) else list(source)
    dirs: list[Path] = []
    for folder in given:
        st = _lstat(folder)
        if st is None:
            continue
        if _is_whiteout(st) or not stat.S_ISDIR(st.st_mode):
            break
        dirs.append(folder)
        if _is_opaque(folder):
            break
    if not dirs or not is_empty(volume_dir):
        return False
    _copy_dir(dirs, volume_dir, {})
    top = os.lstat(dirs[0])
    os.chown(volume_dir, top.st_uid, top.st_gid)
    os.chmod(volume_dir, stat.S_IMODE(top.st_mode))
    return True
