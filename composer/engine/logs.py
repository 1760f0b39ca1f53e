"""Container logs: capture (pump), the json-file log with rotation, live fan-out, and `composer logs`.

Capture follows the Docker engine (moby `daemon/logger/copier.go`, `jsonfilelog`, `loggerutils/logfile.go`):

- A pump reads one stream of one container (a pipe, or a pty master where EIO means the end) and cuts
  it into lines at `\\n`. Each line is timestamped when it is captured (research/compose-semantics.md
  §3 row 11), so `logs` can merge containers by time. A carriage return is kept as written (a tty's
  `\\r\\n` stays in the log).
- A line longer than 16 KiB is written in 16 KiB partial entries, without a newline, that share the
  first one's timestamp; the entry that ends the line carries the `\\n`. What is left at EOF is written
  as a partial entry too (no newline added), as Docker does.
- The file is `<container dir>/<id>-json.log`, one JSON object per line:
  `{"log":"hello\\n","stream":"stdout","time":"2024-05-01T10:00:00.123456789Z"}` (RFC 3339 in UTC with
  the trailing zeros of the fraction trimmed, `<`, `>`, `&` escaped as Go does).
- `max-size` (`10m`: binary units, as Docker's `units.RAMInBytes`) and `max-file` (default 1) rotate:
  before a write, once the file has reached max-size, `<log>.N-1` is dropped, `.i` becomes `.i+1` and
  the log becomes `.1`; with `max-file: 1` the log is truncated instead. `driver: none` writes nothing
  and `logs` warns that the driver does not support reading, as Compose does.
- `Broadcaster` fans lines out to attached clients through bounded trio memory channels: a slow
  client never blocks capture; what it misses is counted and it receives a `Dropped(n)` marker.

`read_logs` prints like `docker compose logs`: `<name><padding> | <line>`, the names padded to the
longest plus one, the prefix coloured from Compose's palette in the order the containers are given,
`--timestamps` putting the fixed-width RFC 3339 time after the prefix. Without `follow` the lines of
all containers are merged by their capture time; with it, new lines are printed as they arrive.
"""

from __future__ import annotations

import calendar
import codecs
import datetime
import errno
import heapq
import json
import os
import re
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import trio

from composer.errors import ComposerError
from composer.log import logger
from composer.runtime.console import Terminal
from composer.spec.model import Logging, lookup
from composer.spec.normalize import parse_duration

__all__ = [
    "LINE_LIMIT",
    "PALETTE",
    "Broadcaster",
    "Dropped",
    "LineSplitter",
    "LogConfig",
    "LogConfigError",
    "LogEntry",
    "LogFormatter",
    "LogSink",
    "LogWriter",
    "format_time",
    "log_config",
    "log_path",
    "parse_size",
    "parse_time",
    "pump",
    "read_entries",
    "read_logs",
]

LINE_LIMIT = 16 * 1024  # Docker's copier buffer: a longer line is cut into partial entries
READ_SIZE = 64 * 1024
NOT_READABLE = "configured logging driver does not support reading"

# Compose v2's rainbow (docker/compose cmd/formatter/colors.go): cyan, yellow, green, magenta, blue,
# then the same in bold ("intense").
PALETTE = ("36", "33", "32", "35", "34", "36;1", "33;1", "32;1", "35;1", "34;1")

Nanos = int


class LogConfigError(ComposerError):
    """A `logging:` section composer cannot honour (names the option and the value)."""


# --- configuration ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class LogConfig:
    """How a container's output is kept. `max_size` None = no limit."""

    driver: str = "json-file"  # "json-file" or "none"
    max_size: int | None = None
    max_file: int = 1

    @property
    def enabled(self) -> bool:
        return self.driver != "none"


_SIZE = re.compile(r"^(\d+(?:\.\d+)*) ?([kmgtp])?i?b?$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_OPTIONS = {
    "json-file": {"max-size", "max-file", "compress", "labels", "labels-regex", "env", "env-regex", "tag"},
    "local": {"max-size", "max-file", "compress"},
}


def parse_size(text: str) -> int:
    """Docker's `units.RAMInBytes`: `10m` = 10 MiB, `512k`, `1.5g`, `100` bytes. ValueError if invalid."""
    match = _SIZE.match(text.strip())
    if match is None:
        raise ValueError(f"invalid size: {text!r}")
    number, unit = match.group(1), (match.group(2) or "").lower()
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"invalid size: {text!r}") from None
    return int(value * _SIZE_UNITS[unit])


def log_config(logging: Logging | None) -> LogConfig:
    """A service's `logging:` as a LogConfig, with Docker's checks and error texts.

    `json-file` (the default) and `local` (Docker's defaults for it: 20m, 5 files) are written as
    json-file logs; `none` keeps nothing. Other drivers (syslog, journald, ...) are refused.
    """
    driver = (logging.driver if logging else None) or "json-file"
    options = logging.options if logging else ()
    if driver == "none":
        return LogConfig(driver="none")
    if driver not in _OPTIONS:
        raise LogConfigError(
            f"logging driver {driver!r} is not supported: composer keeps json-file logs"
            " (use json-file or none)"
        )
    for key, _ in options:
        if key not in _OPTIONS[driver]:
            raise LogConfigError(f"unknown log opt {key!r} for {driver} log driver")
    max_size: int | None = 20 << 20 if driver == "local" else None
    max_file = 5 if driver == "local" else 1
    size_text = lookup(options, "max-size")
    if size_text is not None and size_text != "-1":
        try:
            max_size = parse_size(size_text)
        except ValueError as err:
            raise LogConfigError(f"logging.options.max-size: {err}") from None
        if max_size <= 0:
            raise LogConfigError("logging.options.max-size: max-size must be a positive number")
    file_text = lookup(options, "max-file")
    if file_text is not None:
        try:
            max_file = int(file_text)
        except ValueError:
            raise LogConfigError(f"logging.options.max-file: not a number: {file_text!r}") from None
        if max_file < 1:
            raise LogConfigError("logging.options.max-file: max-file cannot be less than 1")
    return LogConfig(driver="json-file", max_size=max_size, max_file=max_file)


def log_path(container_dir: Path, container_id: str) -> Path:
    """`<container dir>/<id>-json.log`, as Docker names it."""
    return container_dir / f"{container_id}-json.log"


# --- time ------------------------------------------------------------------------------------------


def format_time(ns: Nanos, *, fixed: bool = False) -> str:
    """RFC 3339 in UTC: Go's RFC3339Nano (fraction's trailing zeros trimmed) or, `fixed`, 9 digits."""
    seconds, frac = divmod(ns, 10**9)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if fixed:
        return f"{stamp}.{frac:09d}Z"
    digits = f"{frac:09d}".rstrip("0")
    return f"{stamp}.{digits}Z" if digits else f"{stamp}Z"


_STAMP = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt](\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?)?"
    r"([Zz]|[+-]\d{2}:\d{2})?$"
)
_UNIX = re.compile(r"^\d+(?:\.\d{1,9})?$")


def _stamp_ns(match: re.Match[str], local: bool) -> Nanos:
    year, month, day, hour, minute, second = (int(g or 0) for g in match.groups()[:6])
    frac = int((match.group(7) or "").ljust(9, "0"))
    zone = match.group(8)
    if local:
        moment = datetime.datetime(year, month, day, hour, minute, second).astimezone()
        return int(moment.timestamp()) * 10**9 + frac
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    if zone and zone not in ("Z", "z"):
        sign = -1 if zone[0] == "-" else 1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return seconds * 10**9 + frac


def _parse_stamp(text: str) -> Nanos:
    """A json-file `time` value (RFC 3339) as nanoseconds since the epoch."""
    match = _STAMP.match(text)
    if match is None or match.group(4) is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    return _stamp_ns(match, local=False)


def parse_time(value: str, now: Nanos) -> Nanos:
    """`--since`/`--until` as the docker CLI reads them (moby `api/types/time.GetTimestamp`).

    A Go duration (`10m`, `1h30m`) means that long before `now`; RFC 3339 times, complete or cut
    short (`2024-05-01`, `2024-05-01T10:00`, with `Z`, an offset or none = local time); a Unix time
    in seconds (`1714557600.5`). Returns nanoseconds since the epoch; ValueError if none fits.
    """
    text = value.strip()
    if text != "0":
        try:
            return now - parse_duration(text)
        except ValueError:
            pass
    match = _STAMP.match(text)
    if match is not None:
        return _stamp_ns(match, local=match.group(8) is None)
    if _UNIX.match(text):
        whole, _, frac = text.partition(".")
        return int(whole) * 10**9 + int(frac.ljust(9, "0") or "0")
    raise ValueError(f"failed to parse value as time or duration: {value!r}")


# --- entries and the json-file format --------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class LogEntry:
    """One entry of a json-file log: `text` ends with `\\n` unless the entry is partial."""

    stream: str  # "stdout" | "stderr"
    time: Nanos  # capture time, nanoseconds since the epoch (UTC)
    text: str

    @property
    def partial(self) -> bool:
        return not self.text.endswith("\n")


@dataclass(frozen=True, slots=True)
class Dropped:
    """What a subscriber receives in place of the lines it was too slow to take."""

    count: int


_GO_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def encode_entry(entry: LogEntry) -> bytes:
    """One json-file line (with its newline), as Docker's encoder writes it."""
    log = json.dumps(entry.text, ensure_ascii=False).translate(_GO_ESCAPES)
    stream = json.dumps(entry.stream)
    return f'{{"log":{log},"stream":{stream},"time":"{format_time(entry.time)}"}}\n'.encode()


def decode_entry(line: bytes) -> LogEntry | None:
    """A json-file line as a LogEntry; None for a line that is not one (a torn or foreign line)."""
    try:
        obj = json.loads(line)
        return LogEntry(stream=str(obj.get("stream", "")), time=_parse_stamp(obj["time"]), text=obj["log"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


# --- capture ---------------------------------------------------------------------------------------


class LogSink(Protocol):
    """Where captured entries go (LogWriter is one)."""

    def write(self, entry: LogEntry) -> None: ...


class LogWriter:
    """Appends one container's entries to its json-file log, rotating by max-size / max-file.

    Writes are plain `os.write` calls on a local file (small, appended); both pumps of a container share
    one writer. With `driver: none` nothing is opened or written.
    """

    def __init__(self, path: Path, config: LogConfig) -> None:
        self.path = path
        self.config = config
        self._fd = -1
        self._size = 0
        self.failures = 0  # entries lost to write errors
        self._closed = False
        if config.enabled:
            self._open(truncate=False)

    def _open(self, *, truncate: bool) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | (os.O_TRUNC if truncate else 0)
        self._fd = os.open(self.path, flags, 0o640)
        self._size = os.fstat(self._fd).st_size

    def write(self, entry: LogEntry) -> None:
        """Append one entry. A failing disk (ENOSPC, EIO) loses the entry, never stops capture: a pump
        that died would leave the container blocked on a full pipe. The first failure is logged."""
        if self._closed or not self.config.enabled:
            return
        try:
            if self._fd < 0:  # a rotation or an earlier failure left no file open
                self._open(truncate=False)
            if self.config.max_size is not None and self._size >= self.config.max_size:
                self._rotate()
            data = memoryview(encode_entry(entry))
            while data:
                written = os.write(self._fd, data)
                data = data[written:]
                self._size += written
        except OSError as err:
            self.failures += 1
            if self.failures == 1:
                logger().warning("cannot write a container's log", path=str(self.path), error=str(err))

    def _rotate(self) -> None:
        os.close(self._fd)
        self._fd = -1
        keep = self.config.max_file
        if keep >= 2:
            with suppress(FileNotFoundError):
                os.unlink(f"{self.path}.{keep - 1}")
            for i in range(keep - 1, 1, -1):
                with suppress(FileNotFoundError):
                    os.rename(f"{self.path}.{i - 1}", f"{self.path}.{i}")
            with suppress(FileNotFoundError):
                os.rename(self.path, f"{self.path}.1")
        self._open(truncate=True)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
        self._closed = True  # writes after close are dropped

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class LineSplitter:
    """Cuts one stream's bytes into entries (pure; `now` gives each new line its capture time)."""

    def __init__(
        self, stream: str, *, now: Callable[[], Nanos] = time.time_ns, limit: int = LINE_LIMIT
    ) -> None:
        self.stream = stream
        self._now = now
        self._limit = limit
        self._buf = bytearray()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial_time: Nanos | None = None  # the first chunk's time while a long line is being cut

    def _entry(self, data: bytes, *, final: bool = False) -> LogEntry:
        stamp = self._partial_time if self._partial_time is not None else self._now()
        return LogEntry(stream=self.stream, time=stamp, text=self._decoder.decode(data, final=final))

    def feed(self, data: bytes) -> list[LogEntry]:
        self._buf += data
        out: list[LogEntry] = []
        start = 0
        while True:
            end = self._buf.find(b"\n", start, start + self._limit)
            if end >= 0:  # a line (or the end of a long one) within the limit
                out.append(self._entry(bytes(self._buf[start : end + 1])))
                self._partial_time = None
                start = end + 1
            elif len(self._buf) - start >= self._limit:  # no newline in a full buffer: a partial entry
                entry = self._entry(bytes(self._buf[start : start + self._limit]))
                self._partial_time = entry.time
                out.append(entry)
                start += self._limit
            else:
                break
        del self._buf[:start]
        return out

    def flush(self) -> list[LogEntry]:
        """At EOF: what is left, as a partial entry (Docker adds no newline)."""
        out = [self._entry(bytes(self._buf), final=True)] if self._buf else []
        tail = self._decoder.decode(b"", final=True)
        if tail and out:
            out[-1] = LogEntry(stream=out[-1].stream, time=out[-1].time, text=out[-1].text + tail)
        self._buf.clear()
        self._partial_time = None
        return [entry for entry in out if entry.text]


async def pump(
    source: int | Terminal,
    stream: str,
    writer: LogSink | None,
    broadcaster: Broadcaster | None = None,
    *,
    now: Callable[[], Nanos] = time.time_ns,
    limit: int = LINE_LIMIT,
) -> None:
    """Read `source` to its end, writing each entry and publishing it to live subscribers.

    `source` is the read end of a pipe or a pty master (`Terminal`: EIO once the slave is closed means
    the end). The pump reads a duplicate of the descriptor; the caller keeps and closes its own.
    """
    fd = source.fd if isinstance(source, Terminal) else source
    splitter = LineSplitter(stream, now=now, limit=limit)

    def deliver(entries: Iterable[LogEntry]) -> None:
        for entry in entries:
            if writer is not None:
                writer.write(entry)
            if broadcaster is not None:
                broadcaster.publish(entry)

    async with trio.lowlevel.FdStream(os.dup(fd)) as reader:
        while True:
            try:
                data = await reader.receive_some(READ_SIZE)
            except trio.BrokenResourceError as err:
                cause = err.__cause__
                if isinstance(cause, OSError) and cause.errno == errno.EIO:
                    break
                raise
            if not data:
                break
            deliver(splitter.feed(data))
    deliver(splitter.flush())


# --- live fan-out ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Subscriber:
    channel: trio.MemorySendChannel[LogEntry | Dropped]
    dropped: int = 0


class Broadcaster:
    """Fan-out of captured entries to attached clients; publishing never waits.

    Each subscriber has a bounded buffer. When it is full, entries for that subscriber are counted
    instead; once there is room again it first receives `Dropped(count)`. `close()` ends every
    subscription (after what is buffered).
    """

    def __init__(self, buffer: int = 1024) -> None:
        self.buffer = buffer
        self.dropped = 0  # in total, over all subscribers
        self._subscribers: list[_Subscriber] = []
        self._closed = False

    @contextmanager
    def subscribe(self, buffer: int | None = None) -> Iterator[trio.MemoryReceiveChannel[LogEntry | Dropped]]:
        send, receive = trio.open_memory_channel[LogEntry | Dropped](buffer or self.buffer)
        subscriber = _Subscriber(send)
        if self._closed:
            send.close()
        else:
            self._subscribers.append(subscriber)
        try:
            with receive:
                yield receive
        finally:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)
            send.close()

    def _offer(self, subscriber: _Subscriber, item: LogEntry | Dropped) -> bool:
        try:
            subscriber.channel.send_nowait(item)
        except trio.WouldBlock:
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._subscribers.remove(subscriber)
            return False
        return True

    def publish(self, entry: LogEntry) -> None:
        for subscriber in list(self._subscribers):
            if subscriber.dropped and self._offer(subscriber, Dropped(subscriber.dropped)):
                subscriber.dropped = 0
            missed = subscriber.dropped or not self._offer(subscriber, entry)
            if missed and subscriber in self._subscribers:
                subscriber.dropped += 1
                self.dropped += 1

    def close(self) -> None:
        self._closed = True
        for subscriber in self._subscribers:
            if subscriber.dropped:
                with suppress(trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                    subscriber.channel.send_nowait(Dropped(subscriber.dropped))
            subscriber.channel.close()
        self._subscribers.clear()


# --- output ----------------------------------------------------------------------------------------


class LogFormatter:
    """`docker compose logs` lines: `<name padded> | [time ]text`, coloured per name in the given order."""

    def __init__(
        self, labels: Sequence[str], *, prefix: bool = True, color: bool = False, timestamps: bool = False
    ) -> None:
        self.timestamps = timestamps
        width = max((len(label) for label in labels), default=0) + 1
        self._prefixes: dict[str, str] = {}
        for index, label in enumerate(dict.fromkeys(labels)):
            text = f"{label:<{width}} | " if prefix else ""
            if prefix and color:
                text = f"\x1b[{PALETTE[index % len(PALETTE)]}m{text}\x1b[0m"
            self._prefixes[label] = text

    def line(self, label: str, text: str, stamp: Nanos) -> str:
        """One output line (with its newline); `text` is the line without its `\\n`."""
        head = self._prefixes.get(label, "")
        if self.timestamps:
            head += format_time(stamp, fixed=True) + " "
        return f"{head}{text}\n"

    def dropped(self, label: str, count: int) -> str:
        return f"{self._prefixes.get(label, '')}(composer: {count} lines dropped: this reader was too slow)\n"


# --- reading ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Line:
    """A whole line (partial entries joined), stamped with its first entry's time."""

    time: Nanos
    text: str


class _Joiner:
    """Joins partial entries back into lines, per stream."""

    def __init__(self) -> None:
        self._pending: dict[str, tuple[Nanos, str]] = {}

    def add(self, entry: LogEntry) -> _Line | None:
        stamp, head = self._pending.pop(entry.stream, (entry.time, ""))
        if entry.partial:
            self._pending[entry.stream] = (stamp, head + entry.text)
            return None
        return _Line(stamp, head + entry.text[:-1])

    def rest(self) -> list[_Line]:
        """Lines left unfinished (a container that ended without a newline), oldest first."""
        out = sorted(
            (_Line(stamp, text) for stamp, text in self._pending.values()), key=lambda line: line.time
        )
        self._pending.clear()
        return out


def _rotated(path: Path) -> list[Path]:
    """The rotated files of a log, oldest first (`.N` ... `.1`)."""
    found: list[Path] = []
    index = 1
    while (candidate := Path(f"{path}.{index}")).exists():
        found.append(candidate)
        index += 1
    return found[::-1]


def _entries(data: bytes) -> tuple[list[LogEntry], bytes]:
    """The entries in `data`, and an unfinished last line (a write in progress) to keep for later."""
    lines = data.split(b"\n")
    rest = lines.pop()
    return [entry for line in lines if line and (entry := decode_entry(line)) is not None], rest


def read_entries(path: Path) -> list[LogEntry]:
    """Every entry of a container's log, its rotated files first (oldest first)."""
    out: list[LogEntry] = []
    for file in [*_rotated(path), path]:
        with suppress(FileNotFoundError):
            entries, rest = _entries(file.read_bytes())
            out += entries
            if rest and (entry := decode_entry(rest)) is not None:
                out.append(entry)
    return out


class _Follower:
    """Reads one container's log from where the last read stopped, across rotations and truncation."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1
        self.rest = b""
        self.joiner = _Joiner()

    def open(self) -> bool:
        if self.fd < 0:
            try:
                self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return False
        return True

    def history(self) -> list[LogEntry]:
        """The rotated files, then the current one up to now (the follower goes on from there)."""
        out: list[LogEntry] = []
        current = os.fstat(self.fd).st_ino if self.open() else None
        for file in _rotated(self.path):
            with suppress(FileNotFoundError), open(file, "rb") as handle:
                if os.fstat(handle.fileno()).st_ino == current:
                    break  # rotated since we opened it: read through our descriptor below
                entries, rest = _entries(handle.read())
                out += entries
                if rest and (entry := decode_entry(rest)) is not None:
                    out.append(entry)
        return out + self.new()

    def _drain(self) -> list[LogEntry]:
        chunks = [self.rest]
        while chunk := os.read(self.fd, READ_SIZE):
            chunks.append(chunk)
        entries, self.rest = _entries(b"".join(chunks))
        return entries

    def new(self) -> list[LogEntry]:
        if not self.open():
            return []
        out = self._drain()
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            return out  # between a rotation's rename and the new file: next time
        mine = os.fstat(self.fd)
        if on_disk.st_ino != mine.st_ino:  # rotated: the rest of the old file is read; on to the new one
            os.close(self.fd)
            self.fd, self.rest = -1, b""
            out += self.new()
        elif on_disk.st_size < os.lseek(self.fd, 0, os.SEEK_CUR):  # truncated (max-file: 1); refilled
            # past our offset between two polls, the lines before it are missed (as with two rotations)
            os.lseek(self.fd, 0, os.SEEK_SET)
            self.rest = b""
            out += self._drain()
        return out

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _since_until(value: str | Nanos | None, now: Nanos) -> Nanos | None:
    if value is None or isinstance(value, int):
        return value
    return parse_time(value, now)


async def read_logs(
    containers: Sequence[tuple[str, Path | None]],
    *,
    tail: int | None = None,
    since: str | Nanos | None = None,
    until: str | Nanos | None = None,
    timestamps: bool = False,
    follow: bool = False,
    prefix: bool = True,
    color: bool = False,
    poll_interval: float = 0.2,
    stop: Callable[[], bool] | None = None,
    now: Callable[[], Nanos] = time.time_ns,
    warn: Callable[[str], None] | None = None,
) -> AsyncGenerator[str, None]:
    """`composer logs`: yields output lines (each ends with a newline).

    `containers` are `(label, log path)` pairs, the label being the name without the project
    (`web-1`); a path of None is a container with `driver: none`, which is warned about and skipped.
    `tail` is per container (None = all, 0 = none); `since`/`until` are nanoseconds or the texts of
    `parse_time`, inclusive. With `follow`, the lines that arrive afterwards are yielded in arrival
    order until `stop()` says so (the last lines are read first), `until` has passed, or the caller
    stops iterating (use `contextlib.aclosing`).
    """
    start = now()
    low, high = _since_until(since, start), _since_until(until, start)
    if warn is None:
        warn = logger().warning
    labels = [label for label, _ in containers]
    formatter = LogFormatter(labels, prefix=prefix, color=color, timestamps=timestamps)
    followers: list[tuple[str, _Follower]] = []
    for label, path in containers:
        if path is None:
            warn(f"Can't retrieve logs for {label!r}: {NOT_READABLE}")
        else:
            followers.append((label, _Follower(path)))

    def keep(line: _Line) -> bool:
        return (low is None or line.time >= low) and (high is None or line.time <= high)

    try:
        per_container: list[list[tuple[Nanos, int, str]]] = []
        for index, (label, follower) in enumerate(followers):
            lines = [line for entry in follower.history() if (line := follower.joiner.add(entry)) is not None]
            if not follow:
                lines += follower.joiner.rest()
            if tail is not None and tail >= 0:
                lines = lines[len(lines) - tail :] if tail else []
            per_container.append([(line.time, index, formatter.line(label, line.text, line.time))
                                  for line in lines if keep(line)])  # fmt: skip
        for _, _, text in heapq.merge(*per_container, key=lambda item: item[0]):
            yield text
        if not follow:
            return
        while True:
            if high is not None and now() > high:
                return
            last = stop is not None and stop()
            for label, follower in followers:
                for entry in follower.new():
                    line = follower.joiner.add(entry)
                    if line is not None and keep(line):
                        yield formatter.line(label, line.text, line.time)
                if last:
                    for line in follower.joiner.rest():
                        if keep(line):
                            yield formatter.line(label, line.text, line.time)
            if last:
                return
            await trio.sleep(poll_interval)
    finally:
        for _, follower in followers:
            follower.close()
