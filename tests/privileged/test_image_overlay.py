"""Images on the real kernel: layers with whiteouts load into folders that overlayfs stacks into the
right view, and a container's upper folder commits back into OCI whiteouts."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from composer.image.archive import load, write_layer_tar
from composer.image.config import ImageConfig
from composer.image.store import ImageStore
from composer.storage.layout import Layout
from tests.unit.test_image_fixtures import (
    LOWER,
    UPPER,
    Entry,
    d,
    docker_save,
    f,
    layer_tar,
    oci_layout,
    sha,
)


@contextmanager
def overlay(target: Path, lowers: Sequence[Path], upper: Path | None = None) -> Iterator[Path]:
    target.mkdir(parents=True, exist_ok=True)
    options = "lowerdir=" + ":".join(str(p) for p in lowers)
    if upper is not None:
        work = upper.parent / (upper.name + ".work")
        work.mkdir(exist_ok=True)
        options += f",upperdir={upper},workdir={work}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(target)], check=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


MERGED = [
    "app",
    "app/new",
    "bin",
    "bin/hard",
    "bin/link",
    "bin/tool",
    "data.txt",
    "etc",
    "etc/added",
    "etc/passwd",
]


def _check_merged(view: Path) -> None:
    assert _tree(view) == MERGED
    assert not os.path.lexists(view / "etc/removed.txt")  # the upper layer's whiteout hides it
    assert (view / "app/new").read_text() == "new in app\n"  # opaque: old1 and sub/ are gone
    assert oct(os.stat(view / "app").st_mode & 0o777) == "0o750"
    tool = os.stat(view / "bin/tool")
    assert (tool.st_uid, tool.st_gid, oct(tool.st_mode & 0o7777)) == (1000, 2000, "0o4755")
    assert os.stat(view / "bin/hard").st_ino == tool.st_ino
    assert os.getxattr(view / "data.txt", "user.origin") == b"lower"


@pytest.mark.parametrize("kind", ["docker-save", "oci-dir", "oci-tar-gzip"])
def test_two_layer_image_gives_the_right_overlay_view(layout: Layout, tmp_path: Path, kind: str) -> None:
    store = ImageStore(layout)
    layers = [layer_tar(LOWER), layer_tar(UPPER)]
    if kind == "docker-save":
        docker_save(tmp_path / "img.tar", layers, repo_tags=["two:layers"])
        source = tmp_path / "img.tar"
    elif kind == "oci-dir":
        (tmp_path / "oci").mkdir()
        oci_layout(tmp_path / "oci", layers, ref_name="two:layers", compress=False)
        source = tmp_path / "oci"
    else:
        oci_layout(tmp_path / "img.tar", layers, ref_name="two:layers", as_tar=True, compress=True)
        source = tmp_path / "img.tar"
    load(store, source)
    image = store.get("two:layers")
    top, bottom = store.layer_dirs(image)
    assert top == layout.layer_dir(sha(layers[1])) and bottom == layout.layer_dir(sha(layers[0]))
    whiteout = os.lstat(top / "etc/removed.txt")
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == os.makedev(0, 0)
    assert os.getxattr(top / "app", "trusted.overlay.opaque") == b"y"
    with overlay(tmp_path / "merged", [top, bottom]) as view:
        _check_merged(view)


def test_overlay_style_whiteouts_and_devices_in_a_tar(layout: Layout, tmp_path: Path) -> None:
    """A tar made from an overlay upper folder holds char 0/0 whiteouts already; real devices stay."""
    store = ImageStore(layout)
    base = store.add_layer_from_tar(io.BytesIO(layer_tar([d("etc"), f("etc/gone", "x"), f("etc/kept", "k")])))
    upper = layer_tar([
        d("etc"), Entry("etc/gone", "chr", device=(0, 0), mode=0), d("dev"),
        Entry("dev/null", "chr", device=(1, 3), mode=0o666), Entry("dev/fifo", "fifo", mode=0o600),
    ])  # fmt: skip
    top = store.add_layer_from_tar(io.BytesIO(upper))
    null = os.lstat(layout.layer_dir(top) / "dev/null")
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
    assert stat.S_ISFIFO(os.lstat(layout.layer_dir(top) / "dev/fifo").st_mode)
    with overlay(tmp_path / "m", [layout.layer_dir(top), layout.layer_dir(base)]) as view:
        assert _tree(view) == ["dev", "dev/fifo", "dev/null", "etc", "etc/kept"]


def test_committing_an_upper_folder_writes_oci_whiteouts(layout: Layout, tmp_path: Path) -> None:
    store = ImageStore(layout)
    docker_save(tmp_path / "base.tar", [layer_tar(LOWER)], repo_tags=["base"])
    base = load(store, tmp_path / "base.tar")[0].image
    upper = layout.tmp / "upper"  # where a container's writable layer lives: the store's filesystem
    upper.mkdir()
    with overlay(tmp_path / "rootfs", store.layer_dirs(base), upper) as rootfs:
        (rootfs / "etc/removed.txt").unlink()
        shutil.rmtree(rootfs / "app")
        (rootfs / "app").mkdir(mode=0o750)
        (rootfs / "app/new").write_text("new in app\n")
        (rootfs / "etc/added").write_text("new\n")
    shutil.rmtree(layout.tmp / "upper.work")
    committed = store.commit_rootfs(upper, ImageConfig(cmd=("/bin/sh",)), tags=["child"], parent=base)
    assert not upper.exists()
    new_layer = store.layer_dirs(committed)[0]

    buffer = io.BytesIO()
    write_layer_tar(new_layer, buffer)
    assert sha(buffer.getvalue()) == committed.diff_ids[-1]  # the diff_id is the digest of that tar
    with tarfile.open(fileobj=io.BytesIO(buffer.getvalue())) as tar:
        names = tar.getnames()
    assert "etc/.wh.removed.txt" in names and "app/.wh..wh..opq" in names
    assert not any(name.startswith("app/old") for name in names)

    with overlay(tmp_path / "view", store.layer_dirs(committed)) as view:
        assert _tree(view) == MERGED
        assert (view / "app/new").read_text() == "new in app\n"

    # and the tar loads back (as from `docker save`) into an identical layer
    other = ImageStore(Layout(tmp_path / "other").ensure())
    again = other.add_layer_from_tar(io.BytesIO(buffer.getvalue()))
    assert again == committed.diff_ids[-1]
    assert stat.S_ISCHR(os.lstat(other.layout.layer_dir(again) / "etc/removed.txt").st_mode)
    assert os.getxattr(other.layout.layer_dir(again) / "app", "trusted.overlay.opaque") == b"y"


def test_commit_from_another_filesystem_copies(layout: Layout, tmp_path: Path) -> None:
    store = ImageStore(layout)
    elsewhere = tmp_path / "tmpfs"
    elsewhere.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(elsewhere)], check=True)
    try:
        (elsewhere / "dev").mkdir()
        os.mknod(elsewhere / "dev/zero", stat.S_IFCHR | 0o666, os.makedev(1, 5))
        (elsewhere / "owned").write_text("x")
        os.chown(elsewhere / "owned", 123, 456)
        image = store.commit_rootfs(elsewhere, ImageConfig(), tags=["copied"])
        assert (elsewhere / "owned").exists()  # left in place: copied, not moved
    finally:
        subprocess.run(["umount", str(elsewhere)], check=True)
    layer = store.layer_dirs(image)[0]
    assert os.lstat(layer / "dev/zero").st_rdev == os.makedev(1, 5)
    assert (os.stat(layer / "owned").st_uid, os.stat(layer / "owned").st_gid) == (123, 456)
    assert os.listdir(layout.tmp) == []
