"""The end-to-end tests' own plumbing: where their artifacts go, and a summary line naming each one.

The root marker, the skip when not root and the leak check come from tests/conftest.py (shared with
tests/privileged), as do the inception images, built once per session.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import REPO

ARTIFACTS_KEY = pytest.StashKey[list[tuple[str, Path]]]()


def artifacts_dir() -> Path:
    """COMPOSER_TEST_ARTIFACTS, else the repository's .cache/artifacts (git-ignored; CI can keep it)."""
    return Path(os.environ.get("COMPOSER_TEST_ARTIFACTS") or REPO / ".cache" / "artifacts")


@pytest.fixture
def artifact(request: pytest.FixtureRequest) -> Callable[[str], Path]:
    """artifact(NAME) -> the path to write NAME to; the run's summary lists it once it is written."""

    def make(name: str) -> Path:
        folder = artifacts_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        path.unlink(missing_ok=True)  # an earlier run's file is not this run's artifact
        request.config.stash.setdefault(ARTIFACTS_KEY, []).append((request.node.nodeid, path))
        return path

    return make


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    kept = [(test, path) for test, path in config.stash.get(ARTIFACTS_KEY, []) if path.is_file()]
    if kept:
        terminalreporter.section("artifacts")
        for test, path in kept:
            terminalreporter.write_line(f"{test}: {path}")
