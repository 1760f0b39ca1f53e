"""The privileged fixtures themselves: the busybox root works, and the leak check sees leaks."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import Snapshot


def test_busybox_rootfs_runs_in_a_chroot(busybox_rootfs: Path) -> None:
    done = subprocess.run(
        ["chroot", str(busybox_rootfs), "/bin/sh", "-c", "id -un; ls /bin | wc -l"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    user, count = done.stdout.split()
    assert user == "root" and int(count) > 100


def test_leak_check_sees_a_mount_and_a_process(tmp_path: Path) -> None:
    before = Snapshot.take()
    target = tmp_path / "m"
    target.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(target)], check=True)
    child = subprocess.Popen(["sleep", "30"])
    try:
        leaks = before.leaks()
        assert any(line.startswith("mounts:") and str(target) in line for line in leaks)
        assert any(line.startswith("processes:") and str(child.pid) in line for line in leaks)
    finally:
        child.kill()
        child.wait()
        subprocess.run(["umount", str(target)], check=True)
    assert before.leaks() == []


def test_layout_fixture_makes_a_private_root(layout: object) -> None:
    root = layout.root  # type: ignore[attr-defined]
    assert oct(os.stat(root).st_mode & 0o777) == "0o700"
    assert (root / "images/layers").is_dir() and (root / "containers").is_dir()
