"""The lifecycle's pure parts: container records, ps's columns, progress lines, control-socket frames."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from composer.app.lifecycle import Progress, _ps_json, _scale, status_text
from composer.engine import protocol
from composer.engine.records import LOST_EXIT_CODE, ContainerRecord, RecordStore, observe, process_start_time
from composer.errors import UsageError


def record(**changes: object) -> ContainerRecord:
    base: dict[str, object] = dict(
        id="a" * 64, name="p-web-1", project="p", service="web", number=1, image="busybox",
        image_id="sha256:" + "b" * 64, config_hash="c" * 64, created=1000.0,
    )  # fmt: skip
    base.update(changes)
    return ContainerRecord(**base)  # type: ignore[arg-type]


def test_record_round_trips_through_json_and_ignores_unknown_keys() -> None:
    rec = record(
        state="exited", exit_code=3, networks={"p_default": "172.17.0.2"}, ports=["0.0.0.0:80->80/tcp"]
    )
    again = ContainerRecord.from_json(rec.to_json())
    assert again == rec
    raw = rec.to_json().replace(b'"id":', b'"future_field": 1, "id":')
    assert ContainerRecord.from_json(raw) == rec


def test_process_start_time_is_stable_and_none_for_a_gone_process() -> None:
    me = process_start_time(os.getpid())
    assert me is not None and me == process_start_time(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert process_start_time(child.pid) is None


def test_a_running_record_whose_process_is_gone_reads_exited_with_the_lost_code() -> None:
    alive = record(state="running", pid=os.getpid(), pid_start=process_start_time(os.getpid()))
    assert alive.alive() and alive.observed_state() == "running"
    recycled = record(state="running", pid=os.getpid(), pid_start=1)  # same pid, another start time
    assert not recycled.alive()
    assert recycled.observed_state() == "exited"
    assert recycled.observed_exit_code() == LOST_EXIT_CODE
    assert record(state="exited", exit_code=0).observed_exit_code() == 0


def test_store_lists_a_project_and_observe_builds_the_reconcile_input(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    store.save(record())
    store.save(record(id="d" * 64, name="q-db-1", project="q", service="db"))
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "record.json").write_text("{not json")
    assert [r.name for r in store.of_project("p")] == ["p-web-1"]
    assert store.projects() == ["p", "q"]
    observed = observe("p", store.all(), ["p_default"], ["p_data"])
    assert [c.name for c in observed.containers] == ["p-web-1"]
    assert observed.network_names() == {"p_default"} and observed.volume_names() == {"p_data"}
    store.save_launch("a" * 64, {"any": "object"})
    assert store.load_launch("a" * 64) == {"any": "object"}
    assert store.load_launch("e" * 64) is None


def test_status_column_speaks_dockers_words() -> None:
    now = 2000.0
    assert status_text(record(), now) == "Created"
    running = record(
        state="running", pid=os.getpid(), pid_start=process_start_time(os.getpid()), started_at=1995.0
    )
    assert status_text(running, now) == "Up 5 seconds"
    running.health = "healthy"
    assert status_text(running, now) == "Up 5 seconds (healthy)"
    running.health = "starting"
    assert status_text(running, now) == "Up 5 seconds (health: starting)"
    exited = record(state="exited", exit_code=137, finished_at=1880.0)
    assert status_text(exited, now) == "Exited (137) 2 minutes ago"


def test_ps_json_carries_dockers_field_names() -> None:
    rec = record(state="exited", exit_code=2, finished_at=1000.0, ports=["127.0.0.1:8080->80/tcp"])
    row = _ps_json(rec, "p", 1010.0)
    assert {"Name", "Service", "State", "Status", "Health", "ExitCode", "Publishers", "Project", "ID"} <= set(
        row
    )
    assert row["ExitCode"] == 2 and row["State"] == "exited"
    assert row["Publishers"] == [
        {"URL": "127.0.0.1", "TargetPort": 80, "PublishedPort": 8080, "Protocol": "tcp"}
    ]


def test_progress_lines(capsys: pytest.CaptureFixture[str]) -> None:
    from composer.spec.model import Network, Project, Volume

    project = Project(name="p", working_dir="/", networks=(Network(key="default", name="p_default"),),
                      volumes=(Volume(key="data", name="p_data"),))  # fmt: skip
    progress = Progress(project)
    progress({"event": {"action": "create", "status": "done", "service": None, "container": "p_default"}})
    progress({"event": {"action": "create", "status": "working", "service": None, "container": "p_data"}})
    progress({"event": {"action": "start", "status": "done", "service": "web", "container": "p-web-1"}})
    progress({"event": {"action": "state", "status": "running", "service": "web", "container": "p-web-1"}})
    progress({"warning": "found orphan containers"})
    err = capsys.readouterr().err.splitlines()
    assert err == [
        " Network p_default  Created",
        " Volume p_data  Creating",
        " Container p-web-1  Started",
        "WARN[0000] found orphan containers",
    ]


def test_scale_flags() -> None:
    assert _scale(["web=3", "db=0"]) == {"web": 3, "db": 0}
    with pytest.raises(UsageError, match="SERVICE=NUMBER"):
        _scale(["web"])


@pytest.mark.parametrize("client", ["trio", "sync"])
def test_control_frames_round_trip_a_request_and_its_answers(tmp_path: Path, client: str) -> None:
    async def main() -> None:
        path = tmp_path / "s.sock"
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        await sock.bind(str(path))
        sock.listen(1)
        got: list[object] = []

        async def server() -> None:
            conn, _ = await sock.accept()
            stream = trio.SocketStream(conn)
            request = await protocol.receive_frame(stream)
            assert isinstance(request, protocol.Request) and request.op == "stop"
            await protocol.send_frame(stream, {"event": {"action": "stop"}})
            await protocol.send_frame(stream, {"result": 3, "error": "boom"})
            await stream.aclose()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(server)
            request = protocol.Request(op="stop", services=("web",))
            if client == "trio":
                result = await protocol.call(protocol.connect(path), request, got.append)
            else:  # the plain-socket client, as `down` or `up -d` use it
                result = await trio.to_thread.run_sync(
                    protocol.exchange, protocol.connect(path), request, got.append
                )
        assert result == (3, "boom")
        assert got == [{"event": {"action": "stop"}}]
        sock.close()

    trio.run(main)


def test_an_early_supervisor_that_died_before_its_name_is_let_go() -> None:
    """`up` names the supervisor it started before the load; if that process is gone (its imports
    failed, somebody killed it), naming it must not end in a BrokenPipeError: it is reaped and the
    request starts a supervisor the usual way."""
    import subprocess
    import sys

    from composer.app import lifecycle

    name_read, name_write = os.pipe2(os.O_CLOEXEC)
    ready_read, ready_write = os.pipe2(os.O_CLOEXEC)
    process = subprocess.Popen([sys.executable, "-c", "pass"])  # reads nothing, as a dead supervisor
    os.close(name_read)  # the only reader is gone: a write gets EPIPE
    os.close(ready_write)
    process.wait()
    early = lifecycle._Unnamed(process, name_write, ready_read)
    early.name("proj")
    assert "proj" not in lifecycle._early
    for fd in (name_write, ready_read):
        with pytest.raises(OSError):
            os.fstat(fd)  # both closed
