"""storage/layout.py: the folders `ensure` makes, and `spread_children` (ext4's `chattr +T`)."""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
from pathlib import Path

import pytest

from composer.storage.layout import FS_IOC_GETFLAGS, FS_TOPDIR_FL, Layout, spread_children


def _flags(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return int(struct.unpack("l", fcntl.ioctl(fd, FS_IOC_GETFLAGS, struct.pack("l", 0)))[0])
    finally:
        os.close(fd)


def _fs_type(path: Path) -> str:
    done = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True)
    return done.stdout.strip()


def test_ensure_makes_the_folders_and_spreads_the_busy_ones(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "root").ensure()
    for path in (layout.layers, layout.image_configs, layout.cache, layout.tmp, layout.trash,
                 layout.containers, layout.volumes, layout.projects, layout.locks):  # fmt: skip
        assert path.is_dir()
    assert layout.root.stat().st_mode & 0o777 == 0o700
    if not _fs_type(tmp_path).startswith("ext"):
        pytest.skip(f"{tmp_path} is {_fs_type(tmp_path)}, not ext2/3/4: no top-level-folder flag to check")
    assert _flags(layout.containers) & FS_TOPDIR_FL
    assert _flags(layout.tmp) & FS_TOPDIR_FL
    assert not _flags(layout.volumes) & FS_TOPDIR_FL  # only the folders whose children churn
    Layout(tmp_path / "root").ensure()  # again: already marked, nothing changes
    assert _flags(layout.containers) & FS_TOPDIR_FL


def test_spread_children_is_false_where_the_flag_does_not_exist(tmp_path: Path) -> None:
    assert not spread_children(tmp_path / "missing")
    shm = Path("/dev/shm")
    if _fs_type(shm) != "tmpfs":
        pytest.skip("/dev/shm is not a tmpfs here")
    folder = shm / f"composer-test-{os.getpid()}"
    folder.mkdir()
    try:
        assert not spread_children(folder)  # tmpfs has no such flag: refused, nothing raised
    finally:
        folder.rmdir()
