"""Files for COPY and ADD: an image's merged view read straight from its layer folders, source selection
(globs, directories, .dockerignore), a content hash of what was selected, and the copy into a new layer.

`LayeredTree` reads overlayfs layer folders (top first) the way the kernel merges them: a whiteout (a 0:0
character device) hides what lies below, an opaque folder (`trusted.overlay.opaque=y`) hides the lower
folders' entries, a non-folder hides everything below it. Symlinks are followed inside the tree (an
absolute target starts again at the tree's root), so nothing resolves outside it. A build context is a
`LayeredTree` of one folder with an `ignored` filter (the .dockerignore rules).

No mounts and no processes: COPY never needs the kernel's overlay, and nothing can leak.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shutil
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CopyOp",
    "LayerWriter",
    "LayeredTree",
    "Node",
    "SourceError",
    "hash_ops",
    "select",
]

OPAQUE_XATTR = "trusted.overlay.opaque"
_MAX_LINKS = 40
_MAGIC = re.compile(r"[*?\[]")


class SourceError(Exception):
    """A COPY/ADD source that cannot be used; the builder adds the file, line and service."""


@dataclass(frozen=True, slots=True)
class Node:
    path: str  # canonical, inside the tree: "/usr/bin/x" (symlinks in folders resolved)
    real: Path  # the topmost entry on the host
    st: os.stat_result  # lstat of `real`
    dirs: tuple[Path, ...] = ()  # for a folder: the layer folders whose content shows, top first

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)

    @property
    def is_link(self) -> bool:
        return stat.S_ISLNK(self.st.st_mode)


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


class LayeredTree:
    """A read-only merged view of layer folders (top first), or of one plain folder."""

    def __init__(self, layers: Sequence[Path], *, ignored: Callable[[str], bool] | None = None) -> None:
        self.layers = tuple(layers)
        self.ignored = ignored

    def root(self) -> Node | None:
        if not self.layers:
            return None
        return Node("/", self.layers[0], os.lstat(self.layers[0]), self._dir_layers(self.layers, ""))

    def _dir_layers(self, candidates: Sequence[Path], rel: str) -> tuple[Path, ...]:
        """The layers (from `candidates`, top first) whose folder at `rel` shows through."""
        out: list[Path] = []
        for layer in candidates:
            path = layer / rel if rel else layer
            st = _lstat(path)
            if st is None:
                continue
            if not stat.S_ISDIR(st.st_mode):
                break
            out.append(layer)
            if rel and _is_opaque(path):
                break
        return tuple(out)

    def _child(self, folder: Node, name: str) -> Node | None:
        rel = (folder.path.strip("/") + "/" + name).lstrip("/")
        for index, layer in enumerate(folder.dirs):
            path = layer / rel
            st = _lstat(path)
            if st is None:
                continue
            if _is_whiteout(st):
                return None
            dirs: tuple[Path, ...] = ()
            if stat.S_ISDIR(st.st_mode):
                dirs = (
                    (layer, *self._dir_layers(folder.dirs[index + 1 :], rel))
                    if not _is_opaque(path)
                    else (layer,)
                )
            return Node("/" + rel, path, st, dirs)
        return None

    def lookup(self, path: str, *, follow: bool = True) -> Node | None:
        """The entry at `path` (absolute or relative to the root); symlinks in folders are followed,
        the last one too when `follow`."""
        root = self.root()
        if root is None:
            return None
        parts = [p for p in path.split("/") if p not in ("", ".")]
        stack: list[Node] = [root]
        links = 0
        while parts:
            name = parts.pop(0)
            if name == "..":
                if len(stack) > 1:
                    stack.pop()
                continue
            current = stack[-1]
            if not current.is_dir:
                return None
            child = self._child(current, name)
            if child is None:
                return None
            if child.is_link and (parts or follow):
                links += 1
                if links > _MAX_LINKS:
                    raise SourceError(f"{path}: too many levels of symbolic links")
                target = os.readlink(child.real)
                if target.startswith("/"):
                    stack = [root]
                parts = [p for p in target.split("/") if p not in ("", ".")] + parts
                continue
            stack.append(child)
        return stack[-1]

    def listdir(self, folder: Node) -> list[str]:
        """The merged names in a folder, sorted (whited-out names left out)."""
        seen: dict[str, bool] = {}
        rel = folder.path.strip("/")
        for layer in folder.dirs:
            path = layer / rel if rel else layer
            try:
                names = os.listdir(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            for name in names:
                if name not in seen:
                    seen[name] = not _is_whiteout(os.lstat(path / name))
        return sorted(name for name, visible in seen.items() if visible)

    def children(self, folder: Node) -> Iterator[Node]:
        for name in self.listdir(folder):
            child = self._child(folder, name)
            if child is not None:
                yield child

    def is_ignored(self, node: Node) -> bool:
        return self.ignored is not None and node.path != "/" and self.ignored(node.path.lstrip("/"))

    def glob(self, pattern: str) -> list[Node]:
        """Entries matching a Docker source pattern (`*`, `?`, `[...]` within one path component,
        as Go's filepath.Match); a pattern without magic is a plain lookup (final symlink followed)."""
        parts = [p for p in pattern.split("/") if p not in ("", ".")]
        if not _MAGIC.search(pattern):
            node = self.lookup(pattern, follow=True)
            return [node] if node is not None else []
        root = self.root()
        if root is None:
            return []
        current = [root]
        for part in parts:
            found: list[Node] = []
            for folder in current:
                if not folder.is_dir:
                    continue
                if not _MAGIC.search(part):
                    child = self.lookup(f"{folder.path}/{part}", follow=True)
                    if child is not None:
                        found.append(child)
                    continue
                regex = re.compile(fnmatch.translate(part))
                for name in self.listdir(folder):
                    if regex.match(name):
                        child = self.lookup(f"{folder.path}/{name}", follow=True)
                        if child is not None:
                            found.append(child)
            current = found
        return current


# --- planning a copy ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CopyOp:
    """One entry to create: `dest` is the path inside the image being built."""

    dest: str
    node: Node | None  # None: a folder to make (the destination of a directory source)
    data: bytes | None = None  # inline content (a COPY heredoc)
    mode: int = 0o644


def _under(folder: Node, tree: LayeredTree) -> Iterator[tuple[str, Node]]:
    """(relative path, node) of every entry under `folder`, parents first, ignored ones left out (a
    folder that is ignored is still entered: an exception pattern may bring entries back)."""
    for child in tree.children(folder):
        rel = child.path[len(folder.path.rstrip("/")) + 1 :]
        ignored = tree.is_ignored(child)
        if child.is_dir:
            inner = [(f"{rel}/{r}", n) for r, n in _under(child, tree)]
            if not ignored or inner:
                yield rel, child
            yield from inner
        elif not ignored:
            yield rel, child


def select(
    tree: LayeredTree, sources: Sequence[str], dest: str, *, dest_is_dir: bool, what: str
) -> list[CopyOp]:
    """The entries that `COPY sources... dest` creates. `dest` is absolute; `dest_is_dir` when it ends
    in `/`, there are several sources, or it is a folder in the image already."""
    ops: list[CopyOp] = []
    matched: list[Node] = []
    for source in sources:
        nodes = [n for n in tree.glob(source) if not tree.is_ignored(n) or n.is_dir]
        if not nodes:
            raise SourceError(f"{source}: not found in {what}")
        matched.extend(nodes)
    several = dest_is_dir or len(matched) > 1
    for node in matched:
        if node.is_dir:
            ops.append(CopyOp(dest=dest, node=None))
            ops.extend(
                CopyOp(dest=f"{dest.rstrip('/')}/{rel}", node=child) for rel, child in _under(node, tree)
            )
        else:
            name = node.path.rsplit("/", 1)[-1]
            target = f"{dest.rstrip('/')}/{name}" if several else dest
            ops.append(CopyOp(dest=target, node=node))
    return ops


def hash_ops(ops: Sequence[CopyOp], *, with_owner: bool) -> str:
    """sha256 over what the copy makes: names, types, modes, contents, link targets (and owners when
    they are kept, as for COPY --from)."""
    digest = hashlib.sha256()
    for op in ops:
        digest.update(op.dest.encode("utf-8", "surrogateescape") + b"\0")
        if op.node is None:
            kind = b"d" if op.data is None else b"f"
            digest.update(kind + (op.data or b"") + b"\0")
            continue
        st = op.node.st
        digest.update(f"{stat.S_IFMT(st.st_mode)}:{stat.S_IMODE(st.st_mode)}".encode())
        if with_owner:
            digest.update(f":{st.st_uid}:{st.st_gid}".encode())
        if stat.S_ISREG(st.st_mode):
            digest.update(f":{st.st_size}:".encode())
            with open(op.node.real, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
        elif stat.S_ISLNK(st.st_mode):
            digest.update(b":" + os.fsencode(os.readlink(op.node.real)))
        digest.update(b"\0")
    return digest.hexdigest()


# --- writing a new layer -----------------------------------------------------------------------------


class LayerWriter:
    """Writes entries into a fresh layer folder `root`, over the image `image` (its merged view): the
    folders leading to a path resolve through the image's symlinks (`/bin` -> `usr/bin` stays a link)
    and keep the image's owner and mode; folders the image lacks are made with `owner` (or root)."""

    def __init__(self, root: Path, image: LayeredTree) -> None:
        self.root = root
        self.image = image
        self._made: dict[str, tuple[str, bool]] = {}  # asked path -> (canonical path, from the image)

    def folder(self, path: str, owner: tuple[int, int] | None) -> tuple[str, bool]:
        """Make sure folder `path` exists in the new layer; (its canonical path, whether the image had it)."""
        parts = [p for p in path.split("/") if p not in ("", ".", "..")]
        canonical, in_image = "/", True
        for part in parts:
            wanted = f"{canonical.rstrip('/')}/{part}"
            if wanted in self._made:
                canonical, in_image = self._made[wanted]
                continue
            node = self.image.lookup(wanted, follow=True) if in_image else None
            if node is not None and node.is_dir:
                canonical = node.path
                target = self.root / canonical.lstrip("/")
                if not target.is_dir():
                    if "/" in canonical.strip("/"):
                        self.folder(canonical.rsplit("/", 1)[0], owner)
                    target.mkdir()
                    os.chown(target, node.st.st_uid, node.st.st_gid)
                    os.chmod(target, stat.S_IMODE(node.st.st_mode))
                    os.utime(target, ns=(node.st.st_atime_ns, node.st.st_mtime_ns))
            else:
                in_image = False
                canonical = wanted
                real = self.root / canonical.lstrip("/")
                if os.path.lexists(real) and (real.is_symlink() or not real.is_dir()):
                    real.unlink()
                if not real.is_dir():
                    real.mkdir()
                    uid, gid = owner or (0, 0)
                    os.chown(real, uid, gid)
                    os.chmod(real, 0o755)
            self._made[wanted] = (canonical, in_image)
        return canonical, in_image

    def place(self, dest: str, owner: tuple[int, int] | None) -> Path:
        """The host path where the entry `dest` goes (its folder made); anything in the way removed."""
        parent, _, name = dest.rstrip("/").rpartition("/")
        folder, _ = self.folder(parent or "/", owner)
        real = self.root / folder.lstrip("/") / name
        if os.path.lexists(real):
            if real.is_dir() and not real.is_symlink():
                shutil.rmtree(real)
            else:
                real.unlink()
        return real

    def write(
        self, op: CopyOp, *, owner: tuple[int, int] | None, chmod: int | None, keep_owner: bool
    ) -> None:
        if op.node is None and op.data is None:  # the destination folder of a directory source
            canonical, in_image = self.folder(op.dest, owner)
            if not in_image and chmod is not None:
                os.chmod(self.root / canonical.lstrip("/"), chmod)
            return
        if op.node is None:  # inline content (a heredoc)
            real = self.place(op.dest, owner)
            real.write_bytes(op.data or b"")
            os.chown(real, *(owner or (0, 0)))
            os.chmod(real, chmod if chmod is not None else op.mode)
            return
        st = op.node.st
        uid, gid = owner if owner is not None else ((st.st_uid, st.st_gid) if keep_owner else (0, 0))
        if stat.S_ISDIR(st.st_mode):
            canonical, in_image = self.folder(op.dest, (uid, gid))
            if not in_image:
                real = self.root / canonical.lstrip("/")
                os.chown(real, uid, gid)
                os.chmod(real, chmod if chmod is not None else stat.S_IMODE(st.st_mode))
                os.utime(real, ns=(st.st_atime_ns, st.st_mtime_ns))
            return
        real = self.place(op.dest, owner)
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(op.node.real), real)
            os.lchown(real, uid, gid)
            os.utime(real, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
            return
        if stat.S_ISREG(st.st_mode):
            shutil.copyfile(op.node.real, real, follow_symlinks=False)
        elif stat.S_ISFIFO(st.st_mode):
            os.mkfifo(real)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            os.mknod(real, st.st_mode, st.st_rdev)
        else:  # sockets: nothing to copy
            return
        os.chown(real, uid, gid)
        os.chmod(real, chmod if chmod is not None else stat.S_IMODE(st.st_mode))
        os.utime(real, ns=(st.st_atime_ns, st.st_mtime_ns))
