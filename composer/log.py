"""The only structlog.configure call. Text for people (stderr), or JSON lines with --log-format json."""

from __future__ import annotations

import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
_TAGS = {"debug": "DEBUG", "info": "INFO", "warning": "WARN", "error": "ERROR", "critical": "ERROR"}


def _text(_: Any, method: str, event: MutableMapping[str, Any]) -> str:
    message = str(event.pop("event", ""))
    level = str(event.pop("level", method))
    event.pop("timestamp", None)
    extra = " ".join(f"{key}={value}" for key, value in sorted(event.items()))
    return f"{_TAGS.get(level, level.upper())} {message}" + (f" ({extra})" if extra else "")


def configure(*, fmt: str = "text", debug: bool = False, stream: TextIO | None = None) -> None:
    """Route every log line to `stream` (stderr by default): warnings and up, or everything with debug."""
    processors: list[Any] = [structlog.contextvars.merge_contextvars, structlog.processors.add_log_level]
    if fmt == "json":
        processors += [
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ]
    else:
        processors.append(_text)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS["debug" if debug else "warning"]),
        logger_factory=structlog.PrintLoggerFactory(stream if stream is not None else sys.stderr),
        cache_logger_on_first_use=False,
    )
