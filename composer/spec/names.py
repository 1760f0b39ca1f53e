"""Compose's project-name rule, in a leaf module: `up` guesses the name before it loads anything."""

from __future__ import annotations

__all__ = ["normalize_project_name"]


def normalize_project_name(name: str) -> str:
    """Compose's rule: lowercase, keep [a-z0-9_-], then drop leading '_' and '-'."""
    kept = "".join(ch for ch in name.lower() if ch in "abcdefghijklmnopqrstuvwxyz0123456789_-")
    return kept.lstrip("_-")
