"""The error hierarchy. Every error a user can cause renders as one line written for people.

Only composer.cli maps these to exit codes (through `exit_code`) and prints them; tracebacks are
shown only with --debug.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Location:
    """A place in a file: 1-based line and column, as editors count them."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


PathPart = str | int


def format_path(path: Sequence[PathPart]) -> str:
    """`("services", "web", "ports", 0)` -> `services.web.ports[0]`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


class ComposerError(Exception):
    """Base of every error composer reports to a user."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def render(self) -> str:
        return self.message

    def __str__(self) -> str:
        return self.render()


class UsageError(ComposerError):
    """Bad command-line usage: unknown flag, missing argument, incompatible options."""


class SpecError(ComposerError):
    """Bad compose input. Renders `file:line:col: dotted.key.path: message`, each part when known."""

    def __init__(
        self,
        message: str,
        *,
        location: Location | None = None,
        path: Sequence[PathPart] | str | None = None,
    ) -> None:
        super().__init__(message)
        self.location = location
        self.path = path if isinstance(path, str) or path is None else format_path(path)

    def render(self) -> str:
        parts = []
        if self.location is not None:
            parts.append(str(self.location))
        if self.path:
            parts.append(self.path)
        parts.append(self.message)
        return ": ".join(parts)


class ConfigFileNotFound(SpecError):
    """No compose file found, or a named file does not exist (Compose v2 exits 14 here too)."""

    exit_code = 14
