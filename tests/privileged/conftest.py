"""Fixtures for tests on the real kernel (run as root; CI is root).

Every test in this folder is marked `root`, skipped with a reason when not root, and wrapped in a
leak check (tests/conftest.py, shared with tests/e2e): after the test, no mount, network namespace,
network link, composer cgroup, nft table, or process that the test made may remain.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from composer.runtime.forkserver import ForkServer
from composer.runtime.launch import Runtime
from composer.storage.layout import Layout

# --- a composer root and a busybox image root -----------------------------------------------------------


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    """A fresh composer root in a temporary folder."""
    return Layout(tmp_path / "composer-root").ensure()


BUSYBOX = shutil.which("busybox") or "/bin/busybox"


def make_busybox_rootfs(target: Path) -> Path:
    """A tiny root filesystem: Debian's static busybox, its applets as symlinks, passwd and group."""
    if not Path(BUSYBOX).is_file():
        pytest.skip("busybox-static is not installed (make test installs it)")
    for folder in ("bin", "etc", "tmp", "root", "home/app", "var", "proc", "sys", "dev", "run"):
        (target / folder).mkdir(parents=True, exist_ok=True)
    os.chmod(target / "tmp", 0o1777)
    for link in ("sbin", "usr/bin", "usr/sbin"):
        (target / link).parent.mkdir(parents=True, exist_ok=True)
        if not (target / link).exists():
            os.symlink("/bin", target / link)
    shutil.copy2(BUSYBOX, target / "bin/busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox" and not (target / "bin" / applet).exists():
            os.symlink("busybox", target / "bin" / applet)
    (target / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    )
    (target / "etc/group").write_text("root:x:0:\napp:x:1000:\nextra:x:2000:app\nnogroup:x:65534:\n")
    os.chown(target / "home/app", 1000, 1000)
    return target


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only-by-convention busybox root filesystem shared by the session's tests."""
    return make_busybox_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")


@pytest.fixture(scope="session")
def forkserver() -> Iterator[ForkServer]:
    """One fork-server for the session (in the supervisor it is started before trio is imported)."""
    server = ForkServer.start()
    yield server
    server.close()


@pytest.fixture
def runtime(layout: Layout, forkserver: ForkServer) -> Runtime:
    """A runtime whose containers live under the test's own composer root."""
    return Runtime(layout, forkserver)
