"""The runtime on the real kernel: one busybox container at a time, started through the fork-server."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio

from composer.runtime import libc
from composer.runtime.caps import DEFAULT_CAPS, cap_mask, cap_names, resolve_caps
from composer.runtime.forkserver import ForkServer
from composer.runtime.launch import Container, ContainerStartError, ExitStatus, Runtime
from composer.runtime.spec import BindMount, ContainerSpec, Network, Rlimit, Stdio, TmpfsMount
from composer.storage.layout import Layout

LAST_CAP = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
DEFAULT_MASK = cap_mask(resolve_caps(last_cap=LAST_CAP))


@pytest.fixture
def spec(busybox_rootfs: Path) -> ContainerSpec:
    return ContainerSpec(id="c1", lower_dirs=(busybox_rootfs,), argv=("true",))


async def _read_all(fd: int, sink: list[bytes]) -> None:
    async with trio.lowlevel.FdStream(fd) as stream:
        while chunk := await stream.receive_some(65536):
            sink.append(chunk)


async def run_in(
    runtime: Runtime,
    spec: ContainerSpec,
    during: Callable[[Container], Awaitable[Any]] | None = None,
) -> tuple[ExitStatus, str]:
    """Start `spec` with stdout+stderr on a pipe, run `during(container)`, wait; (status, output)."""
    read_end, write_end = os.pipe()
    out: list[bytes] = []
    try:
        try:
            container = await runtime.start(
                replace(spec, stdio=replace(spec.stdio, stdout=write_end, stderr=write_end))
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_read_all, read_end, out)
                if during is not None:
                    await during(container)
                status = await container.wait()
        finally:
            await container.kill_and_reap()
    finally:
        runtime.remove(spec.id)
    return status, b"".join(out).decode()


def run(runtime: Runtime, spec: ContainerSpec, *argv: str, **changes: Any) -> tuple[ExitStatus, str]:
    if argv:
        changes["argv"] = argv
    return trio.run(run_in, runtime, replace(spec, **changes))


def sh(runtime: Runtime, spec: ContainerSpec, script: str, **changes: Any) -> str:
    status, out = run(runtime, spec, "sh", "-c", script, **changes)
    assert status == ExitStatus(0), out
    return out


def status_field(text: str, name: str) -> int:
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1], 16)
    raise AssertionError(f"{name} not in {text!r}")


# --- isolation ----------------------------------------------------------------------------------------------


def test_own_pid_namespace_sees_itself_as_pid_1(runtime: Runtime, spec: ContainerSpec) -> None:
    out = sh(runtime, spec, "echo $$; ls /proc | grep -E '^[0-9]+$' | sort -n | tr '\\n' ' '")
    first, pids = out.splitlines()
    assert first == "1"
    numbers = [int(p) for p in pids.split()]
    assert numbers[0] == 1 and max(numbers) <= 5  # sh and its 4-command pipeline, nothing else


def test_clone_sibling_makes_a_pid_1_in_new_namespaces_as_a_child_of_the_callers_parent() -> None:
    """The fork-server's direct start: a helper clones; the child is PID 1 of its own pid namespace, in
    its own netns, and is this process's child (CLONE_PARENT), so this process reaps its status."""
    read_end, write_end = os.pipe()
    helper = os.fork()
    if helper == 0:
        try:
            os.close(read_end)
            pid = libc.clone_sibling(libc.CLONE_NEWPID | libc.CLONE_NEWNET)
            if pid == 0:
                own = os.readlink("/proc/self/ns/net")
                os.write(write_end, f"{os.getpid()} {own}\n".encode())
                os._exit(7)
            os.write(write_end, f"{pid}\n".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        lines = pipe.read().splitlines()
    assert os.waitpid(helper, 0)[1] == 0
    cloned = int(next(line for line in lines if " " not in line))
    inside_pid, inside_net = next(line for line in lines if " " in line).split()
    assert inside_pid == "1" and inside_net != os.readlink("/proc/self/ns/net")
    assert os.waitpid(cloned, 0) == (cloned, 7 << 8)  # our child, not the helper's


def test_a_clone_the_kernel_refuses_fails_the_start_with_nothing_left(
    spec: ContainerSpec, layout: Layout, tmp_path: Path
) -> None:
    """A fork-server in a pids cgroup that is full: its clone fails, and the start says so."""
    leaf = Path("/sys/fs/cgroup/pids") / f"composer-test-{os.getpid()}"
    leaf.mkdir()
    server = ForkServer.start()
    try:
        (leaf / "pids.max").write_text("1")
        (leaf / "cgroup.procs").write_text(str(server.pid))
        with pytest.raises(ContainerStartError, match=r"^container c1: unshare: EAGAIN"):
            run(Runtime(layout, server), spec)
        assert not layout.container_dir(spec.id).exists()
        (leaf / "pids.max").write_text("max")
        assert sh(Runtime(layout, server), spec, "echo again") == "again\n"
    finally:
        server.close()
        leaf.rmdir()


def test_own_mounts_only(runtime: Runtime, spec: ContainerSpec) -> None:
    out = sh(runtime, spec, "cut -d' ' -f5 /proc/self/mountinfo")
    points = set(out.split())
    assert "/" in points and "/proc" in points and "/dev" in points and "/sys" in points
    assert not any(p.startswith(("/work", "/home", "/var/lib", "/run/")) for p in points), points
    host = {line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()}
    assert not (points - {"/", "/proc", "/dev", "/sys", "/dev/pts", "/dev/shm", "/dev/mqueue"}) - {
        p for p in points if p.startswith(("/proc/", "/sys/"))
    }
    assert host - points  # the host's mounts are not there


def test_hostname_and_domainname(runtime: Runtime, spec: ContainerSpec) -> None:
    out = sh(runtime, spec, "hostname; cat /proc/sys/kernel/domainname; echo $HOSTNAME", hostname="web-1",
             domainname="example.org")  # fmt: skip
    assert out.split() == ["web-1", "example.org", "web-1"]
    assert os.uname().nodename != "web-1"


def test_default_capabilities_are_dockers_14(runtime: Runtime, spec: ContainerSpec) -> None:
    out = sh(runtime, spec, "cat /proc/self/status")
    assert status_field(out, "CapEff") == DEFAULT_MASK
    assert status_field(out, "CapPrm") == DEFAULT_MASK
    assert status_field(out, "CapBnd") == DEFAULT_MASK
    assert status_field(out, "CapInh") == 0 and status_field(out, "CapAmb") == 0
    assert set(cap_names(DEFAULT_MASK)) == set(DEFAULT_CAPS)


def test_cap_add_and_cap_drop(runtime: Runtime, spec: ContainerSpec) -> None:
    out = sh(
        runtime, spec, "cat /proc/self/status", cap_add=("NET_ADMIN", "cap_sys_time"), cap_drop=("CHOWN",)
    )
    names = set(cap_names(status_field(out, "CapEff")))
    assert names == (set(DEFAULT_CAPS) - {"CAP_CHOWN"}) | {"CAP_NET_ADMIN", "CAP_SYS_TIME"}
    assert status_field(out, "CapBnd") == status_field(out, "CapEff")


def test_cap_drop_all_and_privileged(runtime: Runtime, spec: ContainerSpec) -> None:
    out = sh(runtime, spec, "cat /proc/self/status", cap_drop=("ALL",), cap_add=("KILL",))
    assert cap_names(status_field(out, "CapEff")) == ("CAP_KILL",)
    assert cap_names(status_field(out, "CapBnd")) == ("CAP_KILL",)
    out = sh(runtime, spec, "cat /proc/self/status; mount -t tmpfs t /tmp && echo mounted", privileged=True)
    assert status_field(out, "CapEff") == status_field(Path("/proc/self/status").read_text(), "CapBnd")
    assert "mounted" in out


def test_non_root_user_has_no_effective_capabilities(runtime: Runtime, spec: ContainerSpec) -> None:
    out = sh(runtime, spec, "cat /proc/self/status", user="app")
    assert status_field(out, "CapEff") == 0 and status_field(out, "CapPrm") == 0
    assert status_field(out, "CapBnd") == DEFAULT_MASK


def test_cannot_mount_or_write_sys(runtime: Runtime, spec: ContainerSpec) -> None:
    status, out = run(runtime, spec, "mount", "-t", "tmpfs", "t", "/tmp")
    assert status.code != 0 and "permission denied" in out.lower(), out
    out = sh(
        runtime, spec, "echo x > /sys/kernel/uevent_helper 2>&1 || echo refused; mkdir /sys/x || echo refused"
    )
    assert out.count("refused") == 2 and "Read-only file system" in out, out
    out = sh(runtime, spec, "echo 1 > /proc/sys/kernel/ns_last_pid 2>&1 || echo refused")
    assert "refused" in out


def test_only_its_own_dev(runtime: Runtime, spec: ContainerSpec) -> None:
    out = sh(runtime, spec, "ls -A /dev; ls -l /dev/null; echo x > /dev/null; head -c 4 /dev/zero | wc -c")
    names = set(out.split("\n")[0:16])
    expected = {"console", "core", "fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm", "stderr",
                "stdin", "stdout", "tty", "urandom", "zero"}  # fmt: skip
    assert expected <= names and not (names - expected - {""}), names
    assert "1,   3" in out and out.split()[-1] == "4"


def test_masked_and_readonly_proc_paths(runtime: Runtime, spec: ContainerSpec) -> None:
    out = sh(
        runtime, spec, "wc -c < /proc/keys; ls /proc/acpi 2>/dev/null | wc -l; touch /proc/sys/x 2>&1; true"
    )
    lines = out.splitlines()
    assert lines[0].strip() == "0" and lines[1].strip() == "0"
    assert "Read-only" in out or "denied" in out.lower() or "No such file" in out


# --- process --------------------------------------------------------------------------------------


def test_user_by_name_with_supplementary_groups(runtime: Runtime, spec: ContainerSpec) -> None:
    assert sh(runtime, spec, "id -u; id -g; id -G; echo $HOME", user="app").split() == [
        "1000", "1000", "1000", "2000", "/home/app",
    ]  # fmt: skip
    assert sh(runtime, spec, "id -u; id -g; id -G", user="app:root").split() == ["1000", "0", "0"]
    assert sh(runtime, spec, "id -u; id -g", user="4321:4321").split() == ["4321", "4321"]


def test_unknown_user_is_a_clear_error(runtime: Runtime, spec: ContainerSpec, layout: Layout) -> None:
    with pytest.raises(Exception, match="unable to find user nosuch"):
        run(runtime, spec, user="nosuch")
    assert not layout.container_dir(spec.id).exists()


def test_env_and_cwd(runtime: Runtime, spec: ContainerSpec) -> None:
    out = sh(runtime, spec, "echo $FOO; pwd; echo $PATH", env=("FOO=bar baz",), cwd="/srv/app")
    assert out.splitlines() == [
        "bar baz",
        "/srv/app",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ]


def test_rlimits_sysctls_and_no_new_privs(runtime: Runtime, spec: ContainerSpec) -> None:
    out = sh(
        runtime, spec,
        "ulimit -n; cat /proc/sys/net/ipv4/ip_unprivileged_port_start; grep NoNewPrivs /proc/self/status",
        rlimits=(Rlimit(name="nofile", soft=777, hard=888),),
        sysctls=(("net.ipv4.ip_unprivileged_port_start", "0"),),
        no_new_privs=True,
    )  # fmt: skip
    assert out.split() == ["777", "0", "NoNewPrivs:", "1"]


def test_new_network_namespace_has_only_lo(runtime: Runtime, spec: ContainerSpec) -> None:
    assert sh(runtime, spec, "ls /sys/class/net").split() == ["lo"]
    # lo is up, as Docker leaves it in every container: 127.0.0.1 answers with nothing attached
    assert "UP" in sh(runtime, spec, "ip -o link show lo").split()[2].strip("<>").split(",")
    script = (
        "nc -l -p 7000 -e echo hi & "
        "for i in $(seq 100); do echo | nc 127.0.0.1 7000 2>/dev/null && break; sleep 0.05; done; wait"
    )
    assert sh(runtime, spec, script).strip() == "hi"
    host = sorted(os.listdir("/sys/class/net"))
    assert sh(runtime, spec, "ls /sys/class/net", network=Network(mode="host")).split() == host


# --- root filesystem and mounts -------------------------------------------------------------------


def test_writable_layer_survives_a_restart_and_goes_with_remove(
    runtime: Runtime, spec: ContainerSpec, layout: Layout, busybox_rootfs: Path
) -> None:
    async def twice() -> list[str]:
        outputs = []
        for script in ("echo kept > /root/note; rm /bin/vi", "cat /root/note; ls /bin/vi 2>&1 || true"):
            read_end, write_end = os.pipe()
            one = replace(spec, argv=("sh", "-c", script), stdio=Stdio(stdout=write_end, stderr=write_end))
            container = await runtime.start(one)
            os.close(write_end)
            assert await container.wait() == ExitStatus(0)
            with os.fdopen(read_end) as handle:
                outputs.append(handle.read())
        return outputs

    try:
        _, second = trio.run(twice)
        assert second.splitlines()[0] == "kept" and "No such file" in second
        assert (busybox_rootfs / "bin/vi").is_symlink()  # the image is untouched
        assert (layout.container_dir(spec.id) / "upper/root/note").is_file()
    finally:
        runtime.remove(spec.id)
    assert not layout.container_dir(spec.id).exists()


def test_read_only_rootfs_with_tmpfs(runtime: Runtime, spec: ContainerSpec) -> None:
    out = sh(
        runtime, spec,
        "touch /x 2>&1; echo ok > /scratch/y && cat /scratch/y; stat -c %a /scratch;"
        "grep ' /scratch ' /proc/self/mountinfo",
        read_only=True, mounts=(TmpfsMount(target="/scratch", size=1 << 20, mode=0o700),),
    )  # fmt: skip
    assert "Read-only file system" in out
    assert "\nok\n700\n" in out and "size=1024k" in out and "mode=700" in out


def test_bind_mounts_rw_ro_and_single_file(runtime: Runtime, spec: ContainerSpec, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("from host\n")
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.11\n")
    out = sh(
        runtime, spec,
        "cat /data/in.txt; echo back > /data/out.txt; cat /run/secrets/token; echo no > /ro/in.txt 2>&1;"
        "cat /etc/resolv.conf",
        mounts=(
            BindMount(source=data, target="/data"),
            BindMount(source=data, target="/ro", read_only=True),
            BindMount(source=secret, target="/run/secrets/token", read_only=True),
        ),
        etc_resolv_conf=resolv,
    )  # fmt: skip
    assert "from host\n" in out and "s3cret\n" in out and "Read-only file system" in out
    assert "nameserver 127.0.0.11" in out
    assert (data / "out.txt").read_text() == "back\n"
    assert (data / "in.txt").read_text() == "from host\n"


def test_bind_target_symlink_stays_inside_the_rootfs(
    runtime: Runtime, spec: ContainerSpec, tmp_path: Path
) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d/f").write_text("x")
    # /sbin is a symlink to /bin in the image: the mount lands on the image's /bin/..., not the host's /bin
    out = sh(
        runtime, spec, "ls /bin/hostdir", mounts=(BindMount(source=tmp_path / "d", target="/sbin/hostdir"),)
    )
    assert out.split() == ["f"]
    assert not Path("/bin/hostdir").exists()


# --- exit status, signals, stop, exec, init -------------------------------------------------------


def test_exit_code_and_signal(runtime: Runtime, spec: ContainerSpec) -> None:
    assert run(runtime, spec, "sh", "-c", "exit 3")[0] == ExitStatus(3)

    async def kill(container: Container) -> None:
        container.signal(signal.SIGKILL)

    status, _ = trio.run(run_in, runtime, replace(spec, argv=("sleep", "100")), kill)
    assert status == ExitStatus(137, signal.SIGKILL)


def test_stop_with_grace_then_sigkill(runtime: Runtime, spec: ContainerSpec) -> None:
    statuses: list[ExitStatus] = []

    async def stop(container: Container) -> None:
        statuses.append(await container.stop(signal.SIGTERM, grace=0.2))

    # PID 1 without a handler ignores SIGTERM (as in Docker): the grace runs out and SIGKILL ends it
    run_status, _ = trio.run(run_in, runtime, replace(spec, argv=("sleep", "100")), stop)
    assert statuses == [ExitStatus(137, signal.SIGKILL)] and run_status == statuses[0]
    statuses.clear()
    script = "trap 'exit 7' TERM; echo ready; while true; do sleep 0.05; done"
    trio.run(run_in, runtime, replace(spec, argv=("sh", "-c", script)),
                         lambda c: _stop_when_ready(c, statuses))  # fmt: skip
    assert statuses == [ExitStatus(7)]


async def _stop_when_ready(container: Container, statuses: list[ExitStatus]) -> None:
    await until(
        lambda: bool(status_field(Path(f"/proc/{container.pid}/status").read_text(), "SigCgt") & 1 << 14)
    )
    statuses.append(await container.stop(signal.SIGTERM, grace=30))  # sh (PID 1) has its TERM trap now


async def until(condition: Callable[[], bool]) -> None:
    """Poll a condition of the kernel's state (no timing assumption: it waits as long as needed)."""
    while not condition():
        await trio.sleep(0.01)


def test_exec_into_a_running_container(runtime: Runtime, spec: ContainerSpec) -> None:
    results: list[tuple[ExitStatus, str]] = []

    async def during(container: Container) -> None:
        first = "hostname; echo $$; ps -o pid,comm; cat /proc/self/status; id -u; echo hi > /tmp/f"
        for argv, user in ((("sh", "-c", first), None), (("sh", "-c", "cat /tmp/f; id -un; exit 5"), "app"),
                           (("nosuchcommand",), None)):  # fmt: skip
            read_end, write_end = os.pipe()
            status = await runtime.exec(container, argv, user=user, env=("X=1",),
                                        stdio=Stdio(stdout=write_end, stderr=write_end))  # fmt: skip
            os.close(write_end)
            with os.fdopen(read_end) as handle:
                results.append((status, handle.read()))
        container.signal(signal.SIGKILL)

    trio.run(run_in, runtime, replace(spec, argv=("sleep", "100"), hostname="box"), during)
    (first, out1), (second, out2), (third, _out3) = results
    assert first == ExitStatus(0)
    lines = out1.splitlines()
    assert lines[0] == "box" and lines[1] != "1"
    assert any(line.split() == ["1", "sleep"] for line in lines)
    assert status_field(out1, "CapEff") == DEFAULT_MASK
    assert second == ExitStatus(5) and out2.split() == ["hi", "app"]
    assert third.code == 127


def test_init_reaps_and_forwards_signals(runtime: Runtime, spec: ContainerSpec) -> None:
    def sleep_running(container: Container) -> bool:
        children = Path(f"/proc/{container.pid}/task/{container.pid}/children").read_text().split()
        return bool(children) and Path(f"/proc/{children[0]}/comm").read_text().strip() == "sleep"

    async def term(container: Container) -> None:
        await until(lambda: sleep_running(container))  # tini has forked and set up its signal handling
        container.signal(signal.SIGTERM)

    status, _ = trio.run(run_in, runtime, replace(spec, argv=("sleep", "100"), init=True), term)
    assert status == ExitStatus(143)  # tini forwarded SIGTERM to sleep and exits 128+15
    script = (
        "(sleep 0.05 & echo $! > /tmp/orphan); p=$(cat /tmp/orphan); i=0;"
        "while [ -e /proc/$p ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done;"
        "[ -e /proc/$p ] && echo left || echo reaped; cat /proc/1/comm"
    )
    assert sh(runtime, spec, script, init=True).split() == ["reaped", "docker-init"]  # tini reaped the orphan


def test_failing_stage_names_stage_and_errno_and_leaves_nothing(
    runtime: Runtime, spec: ContainerSpec, layout: Layout, tmp_path: Path
) -> None:
    destroyed: list[bool] = []

    class Hook:
        paths: tuple[str, ...] = ()
        pending: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()

        def attach(self, pid: int) -> None:
            assert Path(f"/proc/{pid}").exists()

        def destroy(self) -> None:
            destroyed.append(True)

    missing = BindMount(source=tmp_path / "missing", target="/data")
    with pytest.raises(ContainerStartError) as caught:
        run(runtime, spec, mounts=(missing,), cgroup=Hook())
    assert caught.value.stage == "mount /data" and caught.value.errno == 2
    assert str(caught.value).startswith("container c1: mount /data: ENOENT")
    assert destroyed == [True] and not layout.container_dir(spec.id).exists()
    with pytest.raises(ContainerStartError, match=r"container c1: exec: ENOENT \(nosuch\)"):
        run(runtime, spec, "nosuch")
    with pytest.raises(ContainerStartError, match=r"container c1: cwd: EEXIST"):
        run(runtime, spec, cwd="/etc/passwd")
    with pytest.raises(
        ContainerStartError, match=r"^container c1: netns: ENOENT"
    ):  # before any process exists
        run(runtime, spec, network=Network(mode="join", path=str(tmp_path / "no-netns")))
    assert not layout.container_dir(spec.id).exists()


def test_many_starts_at_once_each_get_their_own_answer(
    runtime: Runtime, spec: ContainerSpec, layout: Layout, tmp_path: Path
) -> None:
    """The fork-server keeps several requests in flight and answers each as its intermediate reports:
    failures (a netns that is not there, reported before any process exists) come back first, in
    between the pids of the others; every caller gets its own answer and exit status."""
    results: dict[int, ExitStatus | ContainerStartError] = {}

    async def one(i: int) -> None:
        changes: dict[str, Any] = {"id": f"many{i}"}
        if i % 3 == 0:
            changes["network"] = Network(mode="join", path=str(tmp_path / "no-netns"))
        else:
            changes["argv"] = ("sh", "-c", f"exit {i}")
        try:
            results[i] = (await run_in(runtime, replace(spec, **changes)))[0]
        except ContainerStartError as exc:
            results[i] = exc

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for i in range(12):
                nursery.start_soon(one, i)

    trio.run(main)
    assert sorted(results) == list(range(12))
    for i, result in results.items():
        if i % 3 == 0:
            assert isinstance(result, ContainerStartError), (i, result)
            assert result.stage == "netns" and str(result).startswith(f"container many{i}: netns: ENOENT")
        else:
            assert result == ExitStatus(i), (i, result)
        assert not layout.container_dir(f"many{i}").exists()


def test_cancelled_start_leaves_nothing(runtime: Runtime, spec: ContainerSpec, layout: Layout) -> None:
    async def main() -> None:
        async def never(pid: int) -> None:
            await trio.sleep_forever()

        with trio.move_on_after(0.05) as scope:
            await runtime.start(spec, before_go=never)
        assert scope.cancelled_caught

    trio.run(main)
    assert not layout.container_dir(spec.id).exists()


def test_stdin_pipe(runtime: Runtime, spec: ContainerSpec) -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, b"through stdin\n")
    os.close(write_end)
    try:
        status, out = run(runtime, spec, "sh", "-c", "tr a-z A-Z", stdio=Stdio(stdin=read_end))
    finally:
        os.close(read_end)
    assert status == ExitStatus(0) and out == "THROUGH STDIN\n"


def test_before_go_sees_the_new_netns_before_the_process_runs(runtime: Runtime, spec: ContainerSpec) -> None:
    seen: list[str] = []

    async def before_go(pid: int) -> None:
        seen.append(os.readlink(f"/proc/{pid}/ns/net"))
        seen.append(Path(f"/proc/{pid}/comm").read_text().strip())

    async def main() -> None:
        container = await runtime.start(spec, before_go=before_go)
        assert await container.wait() == ExitStatus(0)

    try:
        trio.run(main)
    finally:
        runtime.remove(spec.id)
    assert seen[0] != os.readlink("/proc/self/ns/net")
    assert seen[1] != "true"  # not exec'd yet


def test_join_another_containers_netns(runtime: Runtime, spec: ContainerSpec) -> None:
    netns = "composer-test-rt"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        subprocess.run(
            ["ip", "-n", netns, "link", "add", "rt0", "type", "veth", "peer", "name", "rt1"], check=True
        )
        out = sh(runtime, spec, "ls /sys/class/net", network=Network(mode="join", path=f"/run/netns/{netns}"))
        assert out.split() == ["lo", "rt0", "rt1"]
    finally:
        subprocess.run(["ip", "netns", "delete", netns], check=True)


def test_share_another_containers_netns(runtime: Runtime, spec: ContainerSpec) -> None:
    outputs: list[str] = []

    async def second(first: Container) -> None:
        read_end, write_end = os.pipe()
        other = replace(
            spec, id="c2", argv=("sh", "-c", "readlink /proc/self/ns/net"),
            network=Network(mode="join", path=f"/proc/{first.pid}/ns/net"),
            stdio=Stdio(stdout=write_end, stderr=write_end),
        )  # fmt: skip
        try:
            container = await runtime.start(other)
            os.close(write_end)
            assert await container.wait() == ExitStatus(0)
            with os.fdopen(read_end) as handle:
                outputs.append(handle.read().strip())
            outputs.append(os.readlink(f"/proc/{first.pid}/ns/net"))
        finally:
            runtime.remove("c2")
            first.signal(signal.SIGKILL)

    trio.run(run_in, runtime, replace(spec, argv=("sleep", "100")), second)
    assert outputs[0] == outputs[1] and outputs[0] != os.readlink("/proc/self/ns/net")


def test_the_pid_1_joins_its_cgroup_itself_and_one_it_cannot_join_is_a_clear_stage_error(
    runtime: Runtime, spec: ContainerSpec, layout: Layout
) -> None:
    """A start's PID 1 moves itself into every hierarchy's leaf before it waits for GO (the
    supervisor no longer writes its pid there); a leaf that is gone fails the `cgroup` stage."""
    from composer.runtime.cgroups import Cgroup

    group = Cgroup.create(f"test-join-{os.getpid()}", None)
    try:

        async def inside(container: Container) -> None:
            for leaf in group.paths:
                pids = Path(leaf, "cgroup.procs").read_text().split()
                assert str(container.pid) in pids, (leaf, pids)
            container.signal(signal.SIGKILL)

        trio.run(run_in, runtime, replace(spec, argv=("sleep", "100"), cgroup=group), inside)
    finally:
        group.destroy()
    group = Cgroup.create(f"test-join-{os.getpid()}", None)
    gone = Path(group.paths[-1])
    try:
        os.rmdir(gone)
        with pytest.raises(ContainerStartError) as caught:
            run(runtime, spec, "true", cgroup=group)
        assert caught.value.stage == "cgroup" and caught.value.errno == 2, caught.value
        assert not layout.container_dir(spec.id).exists()
    finally:
        group.destroy()
    assert not any(Path(leaf).exists() for leaf in group.paths)


def test_a_prepared_cgroup_is_made_by_the_pid_1_and_a_refused_limit_fails_its_start(
    runtime: Runtime, spec: ContainerSpec, layout: Layout
) -> None:
    """The supervisor only prepares a container's cgroup (Cgroup.prepare): its PID 1 makes the leaves
    and writes the limits before it joins them. A limit the kernel refuses fails the `cgroup` stage,
    names the file, and leaves no leaf behind."""
    from composer.runtime.cgroups import Cgroup, Resources

    group = Cgroup.prepare(f"test-prepared-{os.getpid()}", Resources(pids_limit=8))
    assert group.pending and not any(Path(leaf).exists() for leaf in group.paths)
    try:
        script = "cat /proc/self/cgroup | cut -d: -f3 | sort -u; for i in $(seq 20); do sleep 5 & done; true"
        _, out = run(runtime, spec, "sh", "-c", script, cgroup=group)
        assert out.splitlines()[0] == "/" and "can't fork" in out  # rooted there, pids.max=8 holds
        assert group.pending == ()  # made now
    finally:
        group.destroy()
    refused = Cgroup.prepare(f"test-prepared-{os.getpid()}", Resources(cpuset_cpus="1023"))
    with pytest.raises(ContainerStartError) as caught:
        run(runtime, spec, "true", cgroup=refused)
    assert caught.value.stage == "cgroup" and "cpuset.cpus = 1023" in str(caught.value), caught.value
    assert not any(Path(leaf).exists() for leaf in refused.paths)
    assert not layout.container_dir(spec.id).exists()

    # meanwhile the supervisor attaches the network; what the PID 1's exit breaks there (its netns
    # is gone) must not hide the PID 1's own report
    async def network(pid: int) -> None:
        with trio.fail_after(10):
            while Path(f"/proc/{pid}/ns/net").exists():
                await trio.sleep(0.005)
        os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)  # ENOENT, as the network layer meets it

    async def start() -> None:
        await runtime.start(replace(spec, argv=("true",), cgroup=refused), before_go=network)

    with pytest.raises(ContainerStartError) as caught:
        trio.run(start)
    assert caught.value.stage == "cgroup" and "cpuset.cpus = 1023" in str(caught.value), caught.value
    assert not any(Path(leaf).exists() for leaf in refused.paths)
    assert not layout.container_dir(spec.id).exists()


def test_with_a_real_cgroup_the_namespace_is_rooted_there_and_limits_hold(
    runtime: Runtime, spec: ContainerSpec
) -> None:
    from composer.runtime.cgroups import Cgroup, Resources

    group = Cgroup.create(f"test-runtime-{os.getpid()}", Resources(pids_limit=8))
    try:
        script = "cat /proc/self/cgroup | cut -d: -f3 | sort -u; for i in $(seq 20); do sleep 5 & done; true"
        _, out = run(runtime, spec, "sh", "-c", script, cgroup=group)  # sh gives up when a fork fails
        lines = out.splitlines()
        assert lines[0] == "/"  # every hierarchy shows the container's cgroup as its root
        assert "can't fork" in out  # pids.max=8 stopped the loop
    finally:
        group.destroy()
