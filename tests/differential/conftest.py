"""Shared fixtures of the differential tests: where the reference Compose v2 binary is, and the one
environment both tools run in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PEER_ENV = "COMPOSER_COMPOSE_V2"


def compose_v2_path() -> Path | None:
    """`$COMPOSER_COMPOSE_V2` (set by `make test`), else `.cache/peers/docker-compose` in the repo."""
    configured = os.environ.get(PEER_ENV)
    candidate = Path(configured) if configured else REPO / ".cache" / "peers" / "docker-compose"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    return None


@pytest.fixture(scope="session")
def compose_v2() -> Path:
    path = compose_v2_path()
    if path is None:
        where = os.environ.get(PEER_ENV) or str(REPO / ".cache" / "peers" / "docker-compose")
        pytest.skip(
            f"Docker Compose v2 not found at {where} (set {PEER_ENV}, or run `make peers` / "
            "`bash tests/tools/fetch-compose-v2.sh .cache/peers`)"
        )
    return path


@pytest.fixture(scope="session")
def fixed_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty HOME, so neither tool reads the user's ~/.docker or dotfiles."""
    return tmp_path_factory.mktemp("home")
