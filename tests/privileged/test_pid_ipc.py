"""`pid:` and `ipc:` through the CLI: a container that joins another's PID namespace sees its processes,
one that joins its IPC namespace sees its System V shared memory, POSIX message queues and /dev/shm,
`pid: host` / `ipc: host` see the host's, and the rest stay private (Docker's rules, including that an
IPC namespace can only be joined when its owner is `ipc: shareable`).

Uses the busybox image and the `compose` fixture of test_lifecycle.py (every project taken down, the
supervisor gone and the leak check passed after each test). The System V segment is made from the host
side (nsenter into the donor's IPC namespace), since busybox has no ipcmk: it reads /proc/sysvipc/shm.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from tests.privileged.test_lifecycle import Compose, compose, lifecycle_root, wait_until

__all__ = ["compose", "lifecycle_root"]  # the fixtures, shared with test_lifecycle.py

SHM_KEY = 0x5EED1E  # the System V key this test makes in the donor's IPC namespace

SHARED = """
services:
  donor:
    image: IMAGE
    command: ["sh", "-c", "touch /dev/mqueue/composer-q; echo from-donor > /dev/shm/marker; exec sleep 1000"]
    ipc: shareable
  peer:
    image: IMAGE
    command: ["sleep", "1001"]
    pid: "service:donor"
    ipc: "service:donor"
  loner:
    image: IMAGE
    command: ["sleep", "1002"]
"""


def ns(pid: int, kind: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def make_sysv_segment(pid: int) -> None:
    """A System V shared memory segment with SHM_KEY in the IPC namespace of `pid` (it lives as long as
    the namespace: the donor's end takes it away)."""
    if shutil.which("nsenter") is None:
        pytest.skip("nsenter (util-linux) is not installed")
    code = textwrap.dedent(f"""
        import ctypes, sys
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.shmget({SHM_KEY}, 4096, 0o1600) < 0:
            sys.exit(f"shmget: errno {{ctypes.get_errno()}}")
    """)
    done = subprocess.run(["nsenter", f"--ipc=/proc/{pid}/ns/ipc", "--", sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr


def sysv_keys(compose: Compose, service: str) -> set[int]:
    lines = compose.exec(service, "cat", "/proc/sysvipc/shm").splitlines()[1:]
    return {int(line.split()[0]) for line in lines if line.strip()}


def test_pid_and_ipc_shared_with_another_service(compose: Compose) -> None:
    compose.write(SHARED)
    compose.ok("up", "-d")
    donor, peer, loner = (compose.running_pid(s) for s in ("donor", "peer", "loner"))
    # the kernel's own view: the peer is in the donor's namespaces, the loner in its own
    assert ns(peer, "pid") == ns(donor, "pid") != ns(loner, "pid")
    assert ns(peer, "ipc") == ns(donor, "ipc") != ns(loner, "ipc")
    assert ns(peer, "net") != ns(donor, "net")  # only what was asked for is shared

    # pid: the peer's ps lists the donor's PID 1 and its own process; the loner sees only its own
    peer_ps = compose.exec("peer", "ps", "-o", "pid,args")
    assert "sleep 1000" in peer_ps and "sleep 1001" in peer_ps, peer_ps
    assert compose.exec("peer", "cat", "/proc/1/cmdline").split("\0")[:2] == ["sleep", "1000"]
    loner_ps = compose.exec("loner", "ps", "-o", "pid,args")
    assert "sleep 1000" not in loner_ps and "sleep 1002" in loner_ps, loner_ps
    # the peer can signal the donor's processes: they are in its namespace (pid 1 is the donor's main)
    assert compose.exec("peer", "sh", "-c", "kill -0 1 && echo reachable").strip() == "reachable"

    # ipc: System V shared memory made in the donor's namespace is the peer's too, not the loner's
    wait_until(lambda: compose.run("exec", "-T", "donor", "test", "-f", "/dev/shm/marker").code == 0,
               "the donor's /dev/shm/marker")  # fmt: skip
    make_sysv_segment(donor)
    assert SHM_KEY in sysv_keys(compose, "donor")
    assert SHM_KEY in sysv_keys(compose, "peer")
    assert SHM_KEY not in sysv_keys(compose, "loner")
    # POSIX message queues (the mqueue filesystem is per IPC namespace) and the donor's /dev/shm
    assert "composer-q" in compose.exec("peer", "ls", "/dev/mqueue").split()
    assert "composer-q" not in compose.exec("loner", "ls", "/dev/mqueue").split()
    assert compose.exec("peer", "cat", "/dev/shm/marker") == "from-donor\n"
    compose.exec("peer", "sh", "-c", "echo from-peer > /dev/shm/back")
    assert compose.exec("donor", "cat", "/dev/shm/back") == "from-peer\n"
    assert compose.run("exec", "-T", "loner", "cat", "/dev/shm/marker").code != 0

    # a restart of the peer joins the donor's namespaces again (found at each start)
    compose.ok("restart", "-t", "0", "peer")
    again = compose.wait_record("peer", lambda r: r["state"] == "running" and r["pid"] not in (None, peer),
                                "running again")  # fmt: skip
    assert ns(int(again["pid"]), "pid") == ns(donor, "pid")
    assert SHM_KEY in sysv_keys(compose, "peer")


def test_pid_and_ipc_host(compose: Compose) -> None:
    marker = Path("/dev/shm") / f"composer-test-{uuid.uuid4().hex[:12]}"
    compose.write("""
        services:
          hosted:
            image: IMAGE
            command: ["sleep", "1000"]
            pid: host
            ipc: host
    """)
    try:
        marker.write_text("from-the-host\n")
        compose.ok("up", "-d")
        hosted = compose.running_pid("hosted")
        assert ns(hosted, "pid") == ns(os.getpid(), "pid")
        assert ns(hosted, "ipc") == ns(os.getpid(), "ipc")
        # the host's processes, this test's own among them, under their host pids
        assert compose.exec("hosted", "cat", f"/proc/{os.getpid()}/stat").startswith(f"{os.getpid()} (")
        assert compose.exec("hosted", "sh", "-c", "echo $$").strip() != "1"
        assert compose.exec("hosted", "cat", f"/dev/shm/{marker.name}") == "from-the-host\n"
    finally:
        marker.unlink(missing_ok=True)


def test_ipc_none_and_uts_host(compose: Compose) -> None:
    """`ipc: none`: an IPC namespace of its own and no /dev/shm; `uts: host`: the host's UTS namespace,
    its hostname in `hostname`, $HOSTNAME and /etc/hostname, which the container cannot change."""
    compose.write("""
        services:
          bare:
            image: IMAGE
            command: ["sleep", "1000"]
            ipc: none
            shm_size: 1m
          named:
            image: IMAGE
            command: ["sleep", "1001"]
            uts: host
    """)
    compose.ok("up", "-d")
    bare, named = compose.running_pid("bare"), compose.running_pid("named")
    assert ns(bare, "ipc") != ns(os.getpid(), "ipc")
    assert compose.exec("bare", "sh", "-c", "[ -e /dev/shm ] && echo there || echo absent") == "absent\n"
    assert "/dev/mqueue" in compose.exec("bare", "cut", "-d ", "-f5", "/proc/self/mountinfo").split()
    assert ns(named, "uts") == ns(os.getpid(), "uts") and ns(bare, "uts") != ns(os.getpid(), "uts")
    host = os.uname().nodename
    script = "hostname; echo $HOSTNAME; cat /etc/hostname; hostname other 2>&1 || echo refused"
    out = compose.exec("named", "sh", "-c", script).splitlines()
    assert out[:3] == [host, host, host] and out[-1] == "refused", out
    assert os.uname().nodename == host


def test_uts_host_with_a_hostname_names_the_conflict(compose: Compose) -> None:
    compose.write("""
        services:
          named:
            image: IMAGE
            command: ["sleep", "1000"]
            uts: host
            hostname: web
    """)
    failed = compose.run("up", "-d")
    assert failed.code != 0, str(failed)
    assert "service named: hostname: conflicts with uts: host" in failed.err, str(failed)
    assert "Traceback" not in failed.err


def test_ipc_of_a_private_container_cannot_be_joined(compose: Compose) -> None:
    compose.write("""
        services:
          private:
            image: IMAGE
            command: ["sleep", "1000"]
          joiner:
            image: IMAGE
            command: ["sleep", "1000"]
            ipc: "service:private"
    """)
    failed = compose.run("up", "-d")
    assert failed.code != 0, str(failed)
    assert "service joiner: ipc service:private" in failed.err, str(failed)
    assert "non-shareable IPC namespace" in failed.err and "ipc: shareable" in failed.err, str(failed)
    assert compose.must("private")["state"] == "running"  # what started stays, as in Compose
    assert "Traceback" not in failed.err


def test_a_bad_pid_mode_names_the_service_and_field(compose: Compose) -> None:
    compose.write("""
        services:
          odd:
            image: IMAGE
            command: ["sleep", "1000"]
            pid: "private-ish"
    """)
    failed = compose.run("up", "-d")
    assert failed.code != 0, str(failed)
    assert "service odd: pid: 'private-ish': expected private, host, service:NAME or container:NAME" in (
        failed.err
    ), str(failed)
    assert "Traceback" not in failed.err
    assert not compose.records() or all(r["state"] != "running" for r in compose.records())
