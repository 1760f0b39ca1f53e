"""Stopping a long command as users do: Ctrl-C (SIGINT) or SIGTERM in the middle of a RUN step."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.privileged.conftest import make_busybox_rootfs


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    make_busybox_rootfs(root / "rootfs")
    (root / "Dockerfile").write_text(
        "FROM scratch\nCOPY rootfs/ /\nRUN echo started && sleep 30 && echo never\n"
    )
    (root / "compose.yaml").write_text("services:\n  app:\n    build: .\n")
    return root


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_during_a_build_stops_cleanly(project: Path, tmp_path: Path, signum: signal.Signals) -> None:
    store_root = tmp_path / "root"
    child = subprocess.Popen(
        [sys.executable, "-m", "composer", "--root", str(store_root), "build"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as a terminal would leave it
    )
    assert child.stdout is not None
    seen = b""
    deadline = time.monotonic() + 60
    try:
        while b"| started" not in seen:  # the RUN step's container is running
            assert time.monotonic() < deadline, seen.decode()
            ready, _, _ = select.select([child.stdout], [], [], 1)
            if ready:
                chunk = os.read(child.stdout.fileno(), 65536)
                assert chunk, f"composer ended early:\n{seen.decode()}"
                seen += chunk
        child.send_signal(signum)
        rest, _ = child.communicate(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    output = (seen + rest).decode()
    assert child.returncode == 130, output
    assert "Traceback" not in output
    assert "| never" not in output
    assert list((store_root / "containers").iterdir()) == []
    assert list((store_root / "tmp").iterdir()) == []
