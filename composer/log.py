"""The only structlog.configure call. Text for people (stderr), or JSON lines with --log-format json.

structlog costs 40-100 ms to import (it pulls in asyncio), so `configure` only records the settings,
and structlog is imported and configured the first time something is logged: `composer config` on a
file without warnings never pays for it.
"""

from __future__ import annotations

import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
_TAGS = {"debug": "DEBUG", "info": "INFO", "warning": "WARN", "error": "ERROR", "critical": "ERROR"}
_settings: dict[str, Any] = {
    "fmt": "text",
    "debug": False,
    "stream": None,
    "level": "warning",
    "applied": False,
}


def _text(_: Any, method: str, event: MutableMapping[str, Any]) -> str:
    message = str(event.pop("event", ""))
    level = str(event.pop("level", method))
    event.pop("timestamp", None)
    extra = " ".join(f"{key}={value}" for key, value in sorted(event.items()))
    return f"{_TAGS.get(level, level.upper())} {message}" + (f" ({extra})" if extra else "")


def configure(
    *, fmt: str = "text", debug: bool = False, stream: TextIO | None = None, level: str = "warning"
) -> None:
    """Route log lines to `stream` (stderr by default): `level` and up, or everything with debug."""
    _settings.update(fmt=fmt, debug=debug, stream=stream, level=level, applied=False)


def logger(**context: Any) -> Any:
    """A structlog logger with the settings of `configure` applied."""
    import structlog

    if not _settings["applied"]:
        processors: list[Any] = [structlog.contextvars.merge_contextvars, structlog.processors.add_log_level]
        if _settings["fmt"] == "json":
            processors += [
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ]
        else:
            processors.append(_text)
        structlog.configure(
            processors=processors,
            wrapper_class=structlog.make_filtering_bound_logger(
                _LEVELS["debug" if _settings["debug"] else _settings["level"]]
            ),
            logger_factory=structlog.PrintLoggerFactory(_settings["stream"] or sys.stderr),
            cache_logger_on_first_use=False,
        )
        _settings["applied"] = True
    return structlog.get_logger(**context)
