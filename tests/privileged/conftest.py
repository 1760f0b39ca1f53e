"""Fixtures for tests on the real kernel (run as root; CI is root).

Every test in this folder is marked `root`, skipped with a reason when not root, and wrapped in a
leak check: after the test, no mount, network namespace, network link, composer cgroup, nft table,
or process (a descendant of this test process, or an orphan in another pid namespace re-parented to
init) that the test made may remain.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from composer.runtime.forkserver import ForkServer
from composer.runtime.launch import Runtime
from composer.storage.layout import Layout

CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_NAME = "composer"  # every cgroup composer makes lives under a `composer` folder of each hierarchy


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.root)
            if os.geteuid() != 0:
                item.add_marker(
                    pytest.mark.skip(reason="needs root (namespaces, mounts, cgroups); CI runs as root")
                )


# --- leak check -------------------------------------------------------------------------------------


def _mounts() -> set[str]:
    with open("/proc/self/mountinfo") as handle:
        return {line.split()[4] for line in handle}


def _netns() -> set[str]:
    try:
        return set(os.listdir("/run/netns"))
    except FileNotFoundError:
        return set()


def _links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def _nft_tables() -> set[str]:
    nft = shutil.which("nft")
    if nft is None:
        return set()
    done = subprocess.run([nft, "list", "tables"], capture_output=True, text=True, check=False)
    return set(done.stdout.splitlines()) if done.returncode == 0 else set()


def _cgroups() -> set[str]:
    found: set[str] = set()
    if not CGROUP_ROOT.is_dir():
        return found
    for hierarchy in CGROUP_ROOT.iterdir():
        base = hierarchy / CGROUP_NAME
        if base.is_dir():
            for path, dirs, _ in os.walk(base):
                found.update(str(Path(path) / d) for d in dirs)
    return found


def _pid_ns(pid: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _processes() -> dict[str, tuple[int, str | None]]:
    """pid -> (ppid, pid namespace) for every live process."""
    out: dict[str, tuple[int, str | None]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":  # a zombie is reaped by its parent; not a leak of the container
            continue
        out[entry] = (int(fields[1]), _pid_ns(entry))
    return out


def _suspicious(before: dict[str, tuple[int, str | None]]) -> list[str]:
    me = str(os.getpid())
    my_ns = _pid_ns(me)
    now = _processes()
    ours = {me}
    changed = True
    while changed:  # descendants of this test process
        changed = False
        for pid, (ppid, _) in now.items():
            if pid not in ours and str(ppid) in ours:
                ours.add(pid)
                changed = True
    left = []
    for pid, (ppid, ns) in now.items():
        if pid in before or pid == me:
            continue
        # Ours, or a container's process that outlived its parent and was re-parented to init.
        if pid in ours or (ppid == 1 and ns is not None and ns != my_ns):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    cmd = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                cmd = "?"
            left.append(f"{pid} ({cmd})")
    return sorted(left)


@dataclass(frozen=True)
class Snapshot:
    mounts: set[str]
    netns: set[str]
    links: set[str]
    cgroups: set[str]
    nft_tables: set[str]
    processes: dict[str, tuple[int, str | None]]

    @classmethod
    def take(cls) -> Snapshot:
        return cls(_mounts(), _netns(), _links(), _cgroups(), _nft_tables(), _processes())

    def leaks(self) -> list[str]:
        out = []
        for label, now, then in (
            ("mounts", _mounts(), self.mounts),
            ("network namespaces", _netns(), self.netns),
            ("network links", _links(), self.links),
            ("cgroups", _cgroups(), self.cgroups),
            ("nftables tables", _nft_tables(), self.nft_tables),
        ):
            extra = sorted(now - then)
            if extra:
                out.append(f"{label}: {', '.join(extra[:10])}")
        processes = _suspicious(self.processes)
        if processes:
            out.append(f"processes: {', '.join(processes[:10])}")
        return out


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails the test if it leaves a mount, netns, link, cgroup or process behind."""
    if os.geteuid() != 0:
        yield
        return
    before = Snapshot.take()
    yield
    leaks = before.leaks()
    if leaks:
        pytest.fail("left behind by the test:\n  " + "\n  ".join(leaks), pytrace=False)


# --- a composer root and a busybox image root -----------------------------------------------------------


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    """A fresh composer root in a temporary folder."""
    return Layout(tmp_path / "composer-root").ensure()


BUSYBOX = shutil.which("busybox") or "/bin/busybox"


def make_busybox_rootfs(target: Path) -> Path:
    """A tiny root filesystem: Debian's static busybox, its applets as symlinks, passwd and group."""
    if not Path(BUSYBOX).is_file():
        pytest.skip("busybox-static is not installed (make test installs it)")
    for folder in ("bin", "etc", "tmp", "root", "home/app", "var", "proc", "sys", "dev", "run"):
        (target / folder).mkdir(parents=True, exist_ok=True)
    os.chmod(target / "tmp", 0o1777)
    for link in ("sbin", "usr/bin", "usr/sbin"):
        (target / link).parent.mkdir(parents=True, exist_ok=True)
        if not (target / link).exists():
            os.symlink("/bin", target / link)
    shutil.copy2(BUSYBOX, target / "bin/busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox" and not (target / "bin" / applet).exists():
            os.symlink("busybox", target / "bin" / applet)
    (target / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    )
    (target / "etc/group").write_text("root:x:0:\napp:x:1000:\nextra:x:2000:app\nnogroup:x:65534:\n")
    os.chown(target / "home/app", 1000, 1000)
    return target


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only-by-convention busybox root filesystem shared by the session's tests."""
    return make_busybox_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")


@pytest.fixture(scope="session")
def forkserver() -> Iterator[ForkServer]:
    """One fork-server for the session (in the supervisor it is started before trio is imported)."""
    server = ForkServer.start()
    yield server
    server.close()


@pytest.fixture
def runtime(layout: Layout, forkserver: ForkServer) -> Runtime:
    """A runtime whose containers live under the test's own composer root."""
    return Runtime(layout, forkserver)
