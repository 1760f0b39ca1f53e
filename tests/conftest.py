"""What tests/privileged and tests/e2e share: both run on the real kernel, as root.

- Every test in those folders is marked `root`, skipped with a reason when not root, and wrapped in a
  leak check: after the test, no mount, network namespace, network link, composer cgroup, nft table,
  or process (a descendant of this test process, or an orphan in another pid namespace re-parented to
  init) that the test made may remain. A fixture that sets up something for a whole module (the e2e
  module's `composer up`) checks itself the same way around its set-up and tear-down (`Snapshot`).
- The inception stack's images (stacks/inception) are built once per pytest session, into one composer
  root, by `inception_build`: the image tests (tests/privileged/test_inception_images.py) and the
  end-to-end tests (tests/e2e/) both use them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_NAME = "composer"  # every cgroup composer makes lives under a `composer` folder of each hierarchy
TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
KERNEL_FOLDERS = (TESTS / "privileged", TESTS / "e2e")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "module_leak_check: the test replaces what a module fixture set up (down + up makes new links and"
        " cgroups); the fixture's own leak check, around its set-up and tear-down, covers it",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parents = Path(str(item.fspath)).resolve().parents
        if any(folder in parents for folder in KERNEL_FOLDERS):
            item.add_marker(pytest.mark.root)
            if os.geteuid() != 0:
                item.add_marker(
                    pytest.mark.skip(reason="needs root (namespaces, mounts, cgroups); CI runs as root")
                )


# --- leak check -------------------------------------------------------------------------------------


# The first netns pinned on a machine makes /run/netns a shared mount point of its own (iproute2 and
# pyroute2 both do, and neither ever unmounts it): host set-up made once per boot, not a leak. The
# namespaces pinned under it are mounts too, and are still checked.
HOST_ONCE_MOUNTS = frozenset({"/run/netns"})


def _mounts() -> set[str]:
    with open("/proc/self/mountinfo") as handle:
        return {line.split()[4] for line in handle} - HOST_ONCE_MOUNTS


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


def supervisor_pids(root: Path) -> list[int]:
    """The pids of the `composer __supervise` processes of `root` (a supervisor, its guardian and its
    fork-server share the command line). Detached, they are no descendants of the test: the leak check
    cannot see them."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"__supervise" in argv and str(root).encode() in argv:
                found.append(int(entry.name))
    return sorted(found)


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
    """Fails a test of tests/privileged or tests/e2e if it leaves a mount, netns, link, cgroup or process
    behind."""
    marks = request.node.get_closest_marker
    if os.geteuid() != 0 or marks("root") is None or marks("module_leak_check") is not None:
        yield
        return
    before = Snapshot.take()
    yield
    leaks = before.leaks()
    if leaks:
        pytest.fail("left behind by the test:\n  " + "\n  ".join(leaks), pytrace=False)


# --- the inception stack's images, built once per session ------------------------------------------------

INCEPTION = REPO / "stacks/inception"
INCEPTION_COMPOSE_FILE = INCEPTION / "srcs/docker-compose.yml"
INCEPTION_SERVICES = ("nginx", "wordpress", "mariadb", "redis", "ftp", "adminer", "static", "status")


def read_env_file(path: Path) -> dict[str, str]:
    """srcs/.env: KEY=VALUE lines (the example file has no quotes or references)."""
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


@dataclass(frozen=True)
class InceptionBuild:
    """The stack's images in a composer root of the session, and the secrets they were tried with."""

    root: Path  # a composer root (`--root`): debian:bookworm and the 8 images
    secrets: Path  # tools/generate-secrets.sh's files
    env: dict[str, str]  # srcs/.env
    output: str  # what `composer build` printed

    def secret(self, name: str) -> str:
        return (self.secrets / f"{name}.txt").read_text()


@pytest.fixture(scope="session")
def inception_build(tmp_path_factory: pytest.TempPathFactory) -> InceptionBuild:
    """`composer build` of the inception stack, once per session (debian:bookworm bootstrapped from the
    host's mirror, then apt-get in each Dockerfile: about a minute of CPU), leak-checked like a test."""
    if os.geteuid() != 0:
        pytest.skip("needs root (the builds run in containers)")
    base = tmp_path_factory.mktemp("inception")
    # COMPOSER_TEST_INCEPTION_ROOT: a composer root kept between sessions (the build is then a cache hit)
    root = Path(os.environ.get("COMPOSER_TEST_INCEPTION_ROOT") or base / "root")
    secrets = base / "secrets"
    subprocess.run(["sh", str(INCEPTION / "tools/generate-secrets.sh"), str(secrets)], check=True,
                   capture_output=True)  # fmt: skip
    before = Snapshot.take()
    done = subprocess.run(
        [sys.executable, "-m", "composer", "--root", str(root), "-f", str(INCEPTION_COMPOSE_FILE), "build"],
        env={**os.environ, "DATA_DIR": str(base / "data")}, capture_output=True, text=True, check=False,
        cwd=REPO, timeout=900,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    leaks = before.leaks()
    if leaks:
        pytest.fail("left behind by `composer build`:\n  " + "\n  ".join(leaks), pytrace=False)
    return InceptionBuild(root=root, secrets=secrets,
                          env=read_env_file(INCEPTION / "srcs/.env"), output=output)  # fmt: skip
