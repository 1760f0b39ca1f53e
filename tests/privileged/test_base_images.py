"""Base images for real: bootstrap debian:bookworm from the mirror the host's apt uses, once per session.

The bootstrap (~15-20 s) is shared by the session's tests through a session-scoped store under the
session's temporary folder. The image's contents are checked with chroot; one test runs it through
composer's own runtime.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from composer.image import base
from composer.image.aptconfig import find_debian_mirror, read_host_apt
from composer.image.base import SuiteNotFound, ensure_base_image
from composer.image.store import Image, ImageStore
from composer.runtime.forkserver import ForkServer
from composer.runtime.launch import ExitStatus, Runtime
from composer.runtime.spec import ContainerSpec, Stdio
from composer.storage.layout import Layout

ETC_APT = Path("/etc/apt")


def _mirror() -> str:
    return find_debian_mirror(read_host_apt(ETC_APT, os.environ)).uri


@pytest.fixture(scope="session")
def bookworm(tmp_path_factory: pytest.TempPathFactory) -> tuple[ImageStore, Image, list[str]]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    layout = Layout(tmp_path_factory.mktemp("base-images") / "root").ensure()
    store = ImageStore(layout)
    lines: list[str] = []
    image = ensure_base_image(store, "debian:bookworm", layout=layout, progress=lines.append)
    assert image is not None
    return store, image, lines


def _rootfs(store: ImageStore, image: Image) -> Path:
    (layer,) = store.layer_dirs(image)  # one layer: the bootstrapped tree
    return layer


def _chroot(store: ImageStore, image: Image, scratch: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run argv chrooted into an overlay of the image (so the layer stays as it is), in a private mount
    namespace that takes the overlay with it when it ends."""
    for name in ("upper", "work", "merged"):
        (scratch / name).mkdir(exist_ok=True)
    lower = ":".join(str(p) for p in store.layer_dirs(image))  # top first, as overlay wants lowerdir
    script = (
        f"mount -t overlay overlay -o lowerdir={lower},upperdir={scratch}/upper,workdir={scratch}/work "
        f'{scratch}/merged && exec chroot {scratch}/merged "$@"'
    )
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv],
        capture_output=True,
        text=True,
    )


def test_bookworm_runs_apt_get(bookworm: tuple[ImageStore, Image, list[str]], tmp_path: Path) -> None:
    store, image, lines = bookworm
    assert "debian:bookworm" in image.tags
    assert image.config.cmd == ("bash",)
    assert any(line.startswith("I: ") for line in lines), "the tool's progress reaches the callback"
    root = _rootfs(store, image)
    result = _chroot(store, image, tmp_path, "apt-get", "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("apt ")

    etc = root / "etc"
    assert (etc / "debian_version").read_text().startswith("12.")
    assert (etc / "resolv.conf").read_text() == "" and (etc / "hostname").read_text() == ""
    sources = (etc / "apt/sources.list.d/debian.sources").read_text()
    assert f"URIs: {_mirror()}\nSuites: bookworm" in sources
    assert _chroot(store, image, tmp_path, "/usr/sbin/policy-rc.d").returncode == 101
    assert [p.name for p in (root / "var/lib/apt/lists").iterdir() if not p.is_dir()] == []
    assert not list((root / "var/cache/apt/archives").glob("*.deb"))
    assert os.listdir(root / "dev") == []
    assert not (etc / "apt/apt.conf.d/99mmdebstrap").exists()
    assert os.listdir(store.layout.tmp) == []


def test_second_call_is_cached(
    bookworm: tuple[ImageStore, Image, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, image, _ = bookworm

    def no_bootstrap(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached image must not be bootstrapped again")

    def no_network(url: str) -> bytes | None:
        raise AssertionError("the cached image must not ask the mirror")

    monkeypatch.setattr(base, "bootstrap_rootfs", no_bootstrap)
    lines: list[str] = []
    again = ensure_base_image(
        store, "debian:bookworm", layout=store.layout, progress=lines.append, fetch=no_network
    )
    assert again is not None and again.id == image.id
    assert lines == []
    # an alias resolves through the mirror, then finds the codename's image and only adds a tag
    alias = ensure_base_image(store, "debian:12", layout=store.layout, progress=lines.append)
    assert alias is not None and alias.id == image.id and "debian:12" in alias.tags


def test_unknown_suite_names_the_hosts_mirror(layout: Layout) -> None:
    with pytest.raises(SuiteNotFound) as info:
        ensure_base_image(ImageStore(layout), "debian:sid-x", layout=layout, progress=lambda _: None)
    assert str(info.value) == f'debian:sid-x: suite "sid-x" not found on {_mirror()}'


def _mounts_anywhere(fragment: str) -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/mountinfo") as handle:
                    found += [line for line in handle if fragment in line]
            except OSError:
                continue
    return found


def test_interrupted_bootstrap_leaves_nothing(layout: Layout) -> None:
    """Ctrl-C while the tool has /proc, /dev and /sys mounted inside the target: no mount, process or
    folder stays behind."""
    seen: list[str] = []

    def progress(line: str) -> None:
        seen.append(line)
        if line.startswith("I: installing essential packages"):  # the chroot mounts are in place now
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ensure_base_image(ImageStore(layout), "debian:bookworm-slim", layout=layout, progress=progress)
    assert seen[-1].startswith("I: installing essential packages")
    assert os.listdir(layout.tmp) == []
    deadline = time.monotonic() + 5
    while _mounts_anywhere(str(layout.tmp)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _mounts_anywhere(str(layout.tmp)) == []
    assert ImageStore(layout).resolve("debian:bookworm-slim") is None


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("COMPOSER_TEST_DEBOOTSTRAP"), reason="set COMPOSER_TEST_DEBOOTSTRAP=1 (~30 s)"
)
def test_debootstrap_fallback(layout: Layout, tmp_path: Path) -> None:
    store = ImageStore(layout)
    image = ensure_base_image(
        store, "debian:bookworm", layout=layout, progress=lambda _: None, tool="debootstrap"
    )
    assert image is not None
    result = _chroot(store, image, tmp_path, "apt-get", "--version")
    assert result.returncode == 0, result.stderr
    assert (_rootfs(store, image) / "etc/resolv.conf").read_text() == ""


def test_bookworm_runs_in_a_composer_container(
    bookworm: tuple[ImageStore, Image, list[str]], forkserver: ForkServer
) -> None:
    """The bootstrapped image through composer's own runtime (namespaces, overlay, pivot_root), with the
    image's Env and Docker's argv rules, as a service with `command: [apt-get, --version]` would run."""
    store, image, _ = bookworm
    runtime = Runtime(store.layout, forkserver)
    spec = ContainerSpec(
        id="bookworm-apt",
        lower_dirs=tuple(store.layer_dirs(image)),
        argv=image.config.argv(
            command=["sh", "-c", "apt-get --version | head -1; cat /etc/debian_version; id -u"]
        ),
        env=image.config.env,
        hostname="apt-test",
    )

    async def main() -> tuple[ExitStatus, str]:
        read_end, write_end = os.pipe()
        try:
            container = await runtime.start(
                replace(spec, stdio=Stdio(stdin=None, stdout=write_end, stderr=write_end))
            )
        finally:
            os.close(write_end)
        chunks: list[bytes] = []
        try:
            async with trio.lowlevel.FdStream(read_end) as stream:
                while chunk := await stream.receive_some(65536):
                    chunks.append(chunk)
            status = await container.wait()
        finally:
            await container.kill_and_reap()
            runtime.remove(spec.id)
        return status, b"".join(chunks).decode()

    status, out = trio.run(main)
    assert status == ExitStatus(0), out
    apt, version, uid = out.split("\n")[:3]
    assert apt.startswith("apt 2.6") and version.startswith("12.") and uid == "0"
    assert not any(store.layout.containers.iterdir()), "the container's writable layer was removed"
