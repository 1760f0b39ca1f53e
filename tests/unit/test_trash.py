"""storage/trash.py: a folder renamed away at once, deleted later by whoever empties the trash."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest

from composer.storage import trash
from composer.storage.layout import Layout


def _container_folder(path: Path) -> Path:
    """What a removed container leaves: nested folders, files, fifos, a read-only folder."""
    (path / "upper/etc").mkdir(parents=True)
    (path / "upper/etc/hosts").write_text("127.0.0.1 localhost\n")
    (path / "work/work").mkdir(parents=True)
    os.mkfifo(path / "stdout.fifo")
    (path / "record.json").write_text("{}")
    (path / "upper/ro").mkdir()
    (path / "upper/ro/file").write_text("x")
    os.chmod(path / "upper/ro", 0o500)
    return path


def test_discard_moves_the_folder_away_and_empty_deletes_it(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "root").ensure()
    folder = _container_folder(layout.container_dir("c1"))
    trash.discard(layout, folder)
    assert not folder.exists()
    inside = os.listdir(layout.trash)
    assert len(inside) == 1 and inside[0].startswith("c1.")
    assert (layout.trash / inside[0] / "upper/etc/hosts").read_text() == "127.0.0.1 localhost\n"
    assert trash.empty(layout) == 1
    assert os.listdir(layout.trash) == []
    assert trash.empty(layout) == 0


def test_discard_of_a_missing_folder_is_nothing_and_a_missing_trash_is_made(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "root")  # not ensured: no trash folder yet
    trash.discard(layout, layout.container_dir("gone"))
    assert not layout.trash.exists()
    assert trash.empty(layout) == 0
    folder = _container_folder(layout.container_dir("c2"))
    trash.discard(layout, folder)
    assert not folder.exists() and len(os.listdir(layout.trash)) == 1


def test_the_same_name_discarded_twice_keeps_both(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "root").ensure()
    for _ in range(2):
        trash.discard(layout, _container_folder(layout.container_dir("same")))
    assert len(os.listdir(layout.trash)) == 2
    assert trash.empty(layout) == 2


def test_a_folder_on_another_file_system_is_deleted_at_once(tmp_path: Path) -> None:
    other = Path("/dev/shm")
    if not other.is_dir() or os.stat(other).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second file system beside the temporary folder")
    layout = Layout(tmp_path / "root").ensure()
    folder = other / f"composer-trash-test-{os.getpid()}"
    try:
        _container_folder(folder)
        trash.discard(layout, folder)
        assert not folder.exists()
        assert os.listdir(layout.trash) == []
    finally:
        if folder.exists():
            shutil.rmtree(folder)


def test_a_trash_that_is_no_folder_still_gets_the_folder_deleted(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "root")
    layout.root.mkdir()
    layout.trash.write_text("not a folder")  # rename into it: ENOTDIR
    folder = _container_folder(layout.container_dir("c3"))
    trash.discard(layout, folder)
    assert not folder.exists()
    assert layout.trash.read_text() == "not a folder"


def test_several_emptiers_at_once_leave_it_empty(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "root").ensure()
    for n in range(30):
        trash.discard(layout, _container_folder(layout.container_dir(f"c{n}")))
    start = threading.Barrier(4)

    def emptier() -> None:
        start.wait()
        trash.empty(layout)

    threads = [threading.Thread(target=emptier) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert os.listdir(layout.trash) == []
