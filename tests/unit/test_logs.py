"""Container logs: capture from real pipes and ptys, the json-file log and its rotation, fan-out, `logs`.

Capture times come from a counter (`Ticks`), so order and timestamps are exact; `follow` polls under
`MockClock(autojump_threshold=0)`, so its sleeps take no real time.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from composer.engine.logs import (
    LINE_LIMIT,
    Broadcaster,
    Dropped,
    LineSplitter,
    LogConfig,
    LogConfigError,
    LogEntry,
    LogFormatter,
    LogWriter,
    format_time,
    log_config,
    log_path,
    parse_size,
    parse_time,
    pump,
    read_entries,
    read_logs,
)
from composer.runtime.console import Terminal
from composer.spec.model import Logging

S = 10**9
T0 = 1_714_557_600 * S  # 2024-05-01T10:00:00Z


def run(fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    return trio.run(fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))


class Ticks:
    """A capture clock: T0 + 1 ms, + 2 ms, ... one tick per call."""

    def __init__(self, start: int = T0, step: int = 10**6) -> None:
        self.value = start
        self.step = step

    def __call__(self) -> int:
        self.value += self.step
        return self.value


def entry(text: str, at: int, stream: str = "stdout") -> LogEntry:
    return LogEntry(stream=stream, time=at, text=text)


def write_log(path: Path, entries: Sequence[LogEntry], config: LogConfig | None = None) -> None:
    with LogWriter(path, config or LogConfig()) as writer:
        for item in entries:
            writer.write(item)


def raw_lines(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def collect(containers: Sequence[tuple[str, Path | None]], **kwargs: Any) -> list[str]:
    async with contextlib.aclosing(read_logs(containers, **kwargs)) as lines:
        return [line async for line in lines]


def logs(containers: Sequence[tuple[str, Path | None]], **kwargs: Any) -> list[str]:
    kwargs.setdefault("now", lambda: T0 + 3600 * S)
    return run(functools.partial(collect, containers, **kwargs))


# --- the json-file format ---------------------------------------------------------------------------


def test_entry_is_written_like_dockers_json_file(tmp_path: Path) -> None:
    path = log_path(tmp_path, "abc")
    assert path == tmp_path / "abc-json.log"
    write_log(path, [entry("a <b> & c é\n", T0 + 120_000_000), entry("oops\n", T0, "stderr")])
    text = path.read_text()
    assert text == (
        '{"log":"a \\u003cb\\u003e \\u0026 c é\\n","stream":"stdout","time":"2024-05-01T10:00:00.12Z"}\n'
        '{"log":"oops\\n","stream":"stderr","time":"2024-05-01T10:00:00Z"}\n'
    )
    assert oct(path.stat().st_mode & 0o777) == "0o640"
    assert read_entries(path) == [entry("a <b> & c é\n", T0 + 120_000_000), entry("oops\n", T0, "stderr")]


def test_time_formats() -> None:
    assert format_time(T0 + 5) == "2024-05-01T10:00:00.000000005Z"
    assert format_time(T0 + 500_000_000) == "2024-05-01T10:00:00.5Z"
    assert format_time(T0, fixed=True) == "2024-05-01T10:00:00.000000000Z"


def test_writer_appends_to_an_existing_log(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    write_log(path, [entry("one\n", T0)])
    write_log(path, [entry("two\n", T0 + 1)])
    assert [e.text for e in read_entries(path)] == ["one\n", "two\n"]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_failing_disk_loses_entries_but_never_raises() -> None:
    with LogWriter(Path("/dev/full"), LogConfig()) as writer:  # every write fails with ENOSPC
        writer.write(entry("one\n", T0))
        writer.write(entry("two\n", T0))
    assert writer.failures == 2
    writer.write(entry("after close\n", T0))
    assert writer.failures == 2


# --- capture -----------------------------------------------------------------------------------------


def test_splitter_cuts_lines_keeps_cr_and_flushes_partial_at_eof() -> None:
    ticks = Ticks()
    splitter = LineSplitter("stdout", now=ticks)
    out = splitter.feed(b"one\ntw")
    out += splitter.feed(b"o\r\nprogress 50%\rprogress 100%\r\n")
    out += splitter.feed(b"no newline")
    out += splitter.flush()
    assert [e.text for e in out] == ["one\n", "two\r\n", "progress 50%\rprogress 100%\r\n", "no newline"]
    assert [e.partial for e in out] == [False, False, False, True]
    assert [e.time for e in out] == [T0 + 10**6 * i for i in (1, 2, 3, 4)]


def test_splitter_cuts_long_lines_at_the_limit_sharing_the_first_time() -> None:
    ticks = Ticks()
    splitter = LineSplitter("stdout", now=ticks)
    out = splitter.feed(b"x" * 20_000)
    out += splitter.feed(b"x" * 20_000 + b"\nnext\n")
    assert [len(e.text) for e in out] == [LINE_LIMIT, LINE_LIMIT, 40_000 - 2 * LINE_LIMIT + 1, 5]
    assert [e.partial for e in out] == [True, True, False, False]
    assert out[0].time == out[1].time == out[2].time < out[3].time


def test_splitter_never_splits_a_utf8_character() -> None:
    splitter = LineSplitter("stdout", now=Ticks(), limit=4)
    out = splitter.feed("aéé€\n".encode())  # 1 + 2 + 2 + 3 bytes: the cuts fall inside characters
    assert "".join(e.text for e in out) == "aéé€\n"
    assert "\ufffd" not in "".join(e.text for e in out)


def test_pump_captures_interleaved_stdout_and_stderr_in_arrival_order(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"

    async def main() -> list[LogEntry | Dropped]:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        broadcaster = Broadcaster()
        seen: list[LogEntry | Dropped] = []
        with LogWriter(path, LogConfig()) as writer, broadcaster.subscribe() as live:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    functools.partial(pump, out_r, "stdout", writer, broadcaster, now=Ticks(T0, 2))
                )
                nursery.start_soon(
                    functools.partial(pump, err_r, "stderr", writer, broadcaster, now=Ticks(T0 + 1, 2))
                )
                for fd, data in ((out_w, b"out 1\n"), (err_w, b"err 1\n"), (out_w, b"out 2\nout "),
                                 (err_w, b"err 2\n"), (out_w, b"3\n")):  # fmt: skip
                    os.write(fd, data)
                    seen.append(await live.receive())  # the line has been captured before the next
                os.write(out_w, b"last, no newline")
                os.close(out_w)
                os.close(err_w)
                seen.append(await live.receive())
        for fd in (out_r, err_r):
            os.close(fd)
        return seen

    seen = run(main)
    expected = [("stdout", "out 1\n"), ("stderr", "err 1\n"), ("stdout", "out 2\n"), ("stderr", "err 2\n"),
                ("stdout", "out 3\n"), ("stdout", "last, no newline")]  # fmt: skip
    assert [(e.stream, e.text) for e in seen if isinstance(e, LogEntry)] == expected
    assert [(e.stream, e.text) for e in read_entries(path)] == expected
    assert [r["stream"] for r in raw_lines(path)] == [s for s, _ in expected]


def test_pump_writes_a_long_line_in_partial_entries_and_logs_joins_them(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    line = b"y" * (2 * LINE_LIMIT + 100)

    async def main() -> None:
        r, w = os.pipe()
        with LogWriter(path, LogConfig()) as writer:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(functools.partial(pump, r, "stdout", writer, None, now=Ticks()))
                async with trio.lowlevel.FdStream(w) as stream:
                    await stream.send_all(line + b"\nafter\n")
        os.close(r)

    run(main)
    records = raw_lines(path)
    assert [len(r["log"]) for r in records] == [LINE_LIMIT, LINE_LIMIT, 101, 6]
    assert records[0]["time"] == records[1]["time"] == records[2]["time"] != records[3]["time"]
    assert logs([("web-1", path)], prefix=False) == [line.decode() + "\n", "after\n"]


def test_pump_reads_a_pty_master_until_eio(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    master, slave = os.openpty()
    os.write(slave, b"hello\nworld\n")
    os.close(slave)  # the last holder of the slave is gone: reads drain, then fail with EIO

    async def main() -> None:
        with Terminal(master) as terminal, LogWriter(path, LogConfig()) as writer:
            await pump(terminal, "stdout", writer, None, now=Ticks())

    run(main)
    assert [e.text for e in read_entries(path)] == ["hello\r\n", "world\r\n"]  # the tty's \r is kept


# --- configuration and rotation ----------------------------------------------------------------------


def test_log_config_follows_dockers_options() -> None:
    assert parse_size("10m") == 10 << 20
    assert parse_size("1.5k") == 1536
    assert parse_size("100") == 100
    assert parse_size("2MiB") == 2 << 20
    assert log_config(None) == LogConfig()
    opts = (("max-file", "3"), ("max-size", "10m"))
    assert log_config(Logging(driver="json-file", options=opts)) == LogConfig(max_size=10 << 20, max_file=3)
    assert log_config(Logging(driver="local")) == LogConfig(max_size=20 << 20, max_file=5)
    assert not log_config(Logging(driver="none")).enabled
    for bad, message in (
        (Logging(options=(("max-file", "0"),)), "max-file cannot be less than 1"),
        (Logging(options=(("max-size", "ten"),)), "invalid size"),
        (Logging(options=(("max-size", "0"),)), "max-size must be a positive number"),
        (Logging(options=(("max-sise", "1m"),)), "unknown log opt 'max-sise' for json-file log driver"),
        (Logging(driver="syslog"), "logging driver 'syslog' is not supported"),
    ):
        with pytest.raises(LogConfigError, match=message):
            log_config(bad)


def test_rotation_at_max_size_keeps_exactly_max_file_files(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    config = LogConfig(max_size=300, max_file=3)
    written = [entry(f"line {i:03d}\n", T0 + i) for i in range(60)]
    with LogWriter(path, config) as writer:
        for item in written:
            writer.write(item)
            files = sorted(p.name for p in tmp_path.iterdir())
            assert len(files) <= 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c-json.log", "c-json.log.1", "c-json.log.2"]
    for rotated in (Path(f"{path}.1"), Path(f"{path}.2")):
        size = rotated.stat().st_size
        assert 300 <= size < 300 + len(path.read_text().splitlines()[0]) + 1  # rotated once past max-size
    kept = read_entries(path)
    assert kept == written[-len(kept) :]  # the newest lines, in order, none missing between files
    assert len(kept) < len(written)


def test_max_file_one_truncates_in_place(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    write_log(path, [entry(f"{i}\n", T0 + i) for i in range(20)], LogConfig(max_size=200, max_file=1))
    assert [p.name for p in tmp_path.iterdir()] == ["c-json.log"]
    assert path.stat().st_size < 200 + 80
    assert read_entries(path)[-1].text == "19\n"


def test_driver_none_writes_nothing_and_logs_says_so(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"
    write_log(path, [entry("lost\n", T0)], LogConfig(driver="none"))
    assert not path.exists()
    warnings: list[str] = []
    assert logs([("web-1", None)], warn=warnings.append) == []
    assert warnings == ["Can't retrieve logs for 'web-1': configured logging driver does not support reading"]


# --- fan-out -----------------------------------------------------------------------------------------


def test_a_slow_subscriber_never_blocks_capture_and_gets_a_dropped_marker(tmp_path: Path) -> None:
    path = tmp_path / "c-json.log"

    async def main() -> tuple[list[LogEntry | Dropped], list[LogEntry | Dropped], int]:
        broadcaster = Broadcaster(buffer=1000)
        r, w = os.pipe()
        with (
            LogWriter(path, LogConfig()) as writer,
            broadcaster.subscribe(2) as slow,
            broadcaster.subscribe() as fast,
        ):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(functools.partial(pump, r, "stdout", writer, broadcaster, now=Ticks()))
                async with trio.lowlevel.FdStream(w) as stream:
                    await stream.send_all(b"".join(b"line %d\n" % i for i in range(100)))
            # capture finished while nobody read `slow`
            first = [slow.receive_nowait(), slow.receive_nowait()]
            broadcaster.publish(entry("later\n", T0 + 10**9))
            then = [slow.receive_nowait(), slow.receive_nowait()]
            fast_count = 0
            while True:
                try:
                    fast.receive_nowait()
                except trio.WouldBlock:
                    break
                fast_count += 1
        os.close(r)
        return first, then, fast_count

    first, then, fast_count = run(main)
    assert [e.text for e in first if isinstance(e, LogEntry)] == ["line 0\n", "line 1\n"]
    assert then[0] == Dropped(98)
    assert isinstance(then[1], LogEntry) and then[1].text == "later\n"
    assert fast_count == 101  # the other subscriber got everything
    assert len(read_entries(path)) == 100  # and so did the file


def test_closing_the_broadcaster_ends_subscriptions() -> None:
    async def main() -> list[LogEntry | Dropped]:
        broadcaster = Broadcaster()
        with broadcaster.subscribe() as live:
            broadcaster.publish(entry("x\n", T0))
            broadcaster.close()
            got = [item async for item in live]
        with broadcaster.subscribe() as late:
            got += [item async for item in late]
        return got

    assert run(main) == [entry("x\n", T0)]


# --- reading: format, merge, tail, since/until ------------------------------------------------------


def two_containers(tmp_path: Path) -> list[tuple[str, Path | None]]:
    web, db = tmp_path / "web-json.log", tmp_path / "db-json.log"
    write_log(web, [entry(f"web {i}\n", T0 + i * S) for i in (0, 2, 4, 6)])
    write_log(db, [entry(f"db {i}\n", T0 + i * S, "stderr") for i in (1, 3, 5, 7)])
    return [("web-1", web), ("database-1", db)]


def test_logs_merge_containers_by_capture_time_with_compose_prefixes(tmp_path: Path) -> None:
    assert logs(two_containers(tmp_path)) == [
        "web-1       | web 0\n",
        "database-1  | db 1\n",
        "web-1       | web 2\n",
        "database-1  | db 3\n",
        "web-1       | web 4\n",
        "database-1  | db 5\n",
        "web-1       | web 6\n",
        "database-1  | db 7\n",
    ]


def test_logs_merge_also_across_rotated_files(tmp_path: Path) -> None:
    web, db = tmp_path / "web-json.log", tmp_path / "db-json.log"
    write_log(
        web, [entry(f"web {i}\n", T0 + i * S) for i in range(0, 40, 2)], LogConfig(max_size=150, max_file=9)
    )
    write_log(
        db, [entry(f"db {i}\n", T0 + i * S) for i in range(1, 40, 2)], LogConfig(max_size=150, max_file=9)
    )
    assert Path(f"{web}.2").exists()
    out = logs([("web", web), ("db", db)], prefix=False)
    assert out == [f"{'web' if i % 2 == 0 else 'db'} {i}\n" for i in range(40)]


def test_timestamps_colour_and_no_prefix(tmp_path: Path) -> None:
    containers = two_containers(tmp_path)
    coloured = logs(containers, color=True, timestamps=True, until=T0 + S)
    assert coloured == [
        "\x1b[36mweb-1       | \x1b[0m2024-05-01T10:00:00.000000000Z web 0\n",
        "\x1b[33mdatabase-1  | \x1b[0m2024-05-01T10:00:01.000000000Z db 1\n",
    ]
    assert logs(containers, prefix=False, color=True, until=T0 + S) == ["web 0\n", "db 1\n"]
    formatter = LogFormatter([f"s{i}" for i in range(11)], color=True)
    assert formatter.line("s5", "x", T0).startswith("\x1b[36;1m")
    assert formatter.line("s10", "x", T0).startswith("\x1b[36m")  # the palette wraps


def test_tail_counts_per_container(tmp_path: Path) -> None:
    containers = two_containers(tmp_path)
    assert logs(containers, tail=2, prefix=False) == ["web 4\n", "db 5\n", "web 6\n", "db 7\n"]
    assert logs(containers, tail=0) == []
    assert len(logs(containers, tail=100)) == 8


def test_since_and_until_are_inclusive_and_accept_texts(tmp_path: Path) -> None:
    containers = two_containers(tmp_path)
    assert logs(containers, since=T0 + 2 * S, until=T0 + 4 * S, prefix=False) == [
        "web 2\n",
        "db 3\n",
        "web 4\n",
    ]
    texts = logs(containers, since="2024-05-01T10:00:05Z", prefix=False)
    assert texts == ["db 5\n", "web 6\n", "db 7\n"]
    relative = logs(containers, since="3s", until="1s", prefix=False, now=lambda: T0 + 7 * S)
    assert relative == ["web 4\n", "db 5\n", "web 6\n"]
    assert logs(containers, tail=3, since=T0 + 6 * S, prefix=False) == ["web 6\n", "db 7\n"]


def test_parse_time_accepts_what_the_docker_cli_accepts() -> None:
    now = T0 + 3600 * S
    assert parse_time("10m", now) == now - 600 * S
    assert parse_time("1h30m", now) == now - 5400 * S
    assert parse_time("2024-05-01T10:00:00Z", now) == T0
    assert parse_time("2024-05-01T10:00:00.25Z", now) == T0 + S // 4
    assert parse_time("2024-05-01T12:00:00+02:00", now) == T0
    assert parse_time("1714557600", now) == T0
    assert parse_time("1714557600.5", now) == T0 + S // 2
    assert parse_time("0", now) == 0
    local_midnight = parse_time("2024-05-01", now)  # no zone: the local one
    assert abs(local_midnight - (T0 - 10 * 3600 * S)) <= 14 * 3600 * S
    with pytest.raises(ValueError, match="failed to parse"):
        parse_time("yesterday", now)


# --- follow ------------------------------------------------------------------------------------------


def test_follow_prints_history_then_new_lines_by_arrival_across_rotation(tmp_path: Path) -> None:
    web, db = tmp_path / "web-json.log", tmp_path / "db-json.log"
    config = LogConfig(max_size=120, max_file=2)
    write_log(web, [entry("web old\n", T0 + 2 * S)], config)
    write_log(db, [entry("db old\n", T0 + S)], config)

    async def main() -> list[str]:
        done = False
        out: list[str] = []

        async def produce() -> None:
            nonlocal done
            with LogWriter(web, config) as w, LogWriter(db, config) as d:
                await trio.sleep(1)
                w.write(entry("web new, stamped early\n", T0))  # printed when it arrives, not by time
                await trio.sleep(1)
                for i in range(6):  # enough to rotate both files more than once
                    d.write(entry(f"db {i}\n", T0 + (10 + i) * S))
                    await trio.sleep(0.05)
                d.write(entry("db partial ", T0 + 20 * S))
                await trio.sleep(1)
                d.write(entry("end\n", T0 + 21 * S))
                await trio.sleep(1)
            done = True

        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            reader = read_logs(
                [("web-1", web), ("db-1", db)],
                follow=True,
                prefix=False,
                poll_interval=0.1,
                stop=lambda: done,
            )
            async with contextlib.aclosing(reader) as lines:
                async for line in lines:
                    out.append(line)
        return out

    assert run(main) == [
        "db old\n",
        "web old\n",
        "web new, stamped early\n",
        *(f"db {i}\n" for i in range(6)),
        "db partial end\n",
    ]


def test_follow_waits_for_a_log_that_does_not_exist_yet_and_stops_at_until(tmp_path: Path) -> None:
    path = tmp_path / "later-json.log"

    async def main() -> list[str]:
        async def produce() -> None:
            await trio.sleep(1)
            write_log(path, [entry("hello\n", T0)])

        clock = Ticks(T0, S // 10)  # `now` advances 0.1 s per poll
        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            reader = read_logs([("app-1", path)], follow=True, poll_interval=0.1, until=T0 + 5 * S, now=clock)
            async with contextlib.aclosing(reader) as lines:
                return [line async for line in lines]

    assert run(main) == ["app-1  | hello\n"]
