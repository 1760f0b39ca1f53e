"""Volumes and secrets on the real kernel: bind-device and tmpfs volumes mounted at first use and
unmounted after the last, copy-up from real layer folders (whiteouts, opaque folders, owners, modes,
xattrs, device nodes), `remove` that never deletes through a mount, and containers that use them."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from composer.runtime import libc
from composer.runtime.launch import ExitStatus, Runtime
from composer.runtime.spec import BindMount, ContainerSpec, Stdio
from composer.storage.layout import Layout
from composer.storage.secrets import SecretFile, materialize
from composer.storage.secrets import remove as remove_secrets
from composer.storage.volumes import VolumeError, VolumeInUse, VolumeStore


def mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo") as handle:
        return any(line.split()[4] == str(path) for line in handle)


def mount_line(path: Path) -> str:
    with open("/proc/self/mountinfo") as handle:
        return next(line for line in handle if line.split()[4] == str(path))


@pytest.fixture
def store(layout: Layout) -> VolumeStore:
    return VolumeStore(layout, libc)


@pytest.fixture
def device(tmp_path: Path) -> Path:
    """A host folder holding data of its own, as /home/<login>/data/mariadb would."""
    folder = tmp_path / "home/x/data/mariadb"
    folder.mkdir(parents=True)
    (folder / "precious").write_text("do not delete\n")
    os.chown(folder / "precious", 1000, 1000)
    return folder


def bind_opts(device: Path, o: str = "bind") -> dict[str, str]:
    return {"type": "none", "o": o, "device": str(device)}


# --- bind devices -------------------------------------------------------------------------------------------


def test_bind_device_is_mounted_while_in_use(store: VolumeStore, device: Path) -> None:
    info = store.ensure("proj_db", "local", bind_opts(device))
    assert not mounted(info.mountpoint)
    try:
        assert store.acquire("proj_db", "c1") == info.mountpoint
        assert mounted(info.mountpoint)
        assert (info.mountpoint / "precious").read_text() == "do not delete\n"
        store.acquire("proj_db", "c2")
        (info.mountpoint / "written").write_text("through the volume\n")
        assert not store.release("proj_db", "c1")
        assert mounted(info.mountpoint)
        assert store.release("proj_db", "c2")
        assert not mounted(info.mountpoint)
        assert os.listdir(info.mountpoint) == []  # the data lives on the device
        assert (device / "written").read_text() == "through the volume\n"
    finally:
        store.release("proj_db", "c1")
        store.release("proj_db", "c2")
    assert store.remove("proj_db")
    assert not (store.layout.volumes / "proj_db").exists()
    assert sorted(os.listdir(device)) == ["precious", "written"]
    assert (device / "precious").read_text() == "do not delete\n"


def test_remove_undoes_a_stale_mount_and_keeps_the_device(store: VolumeStore, device: Path) -> None:
    """A supervisor that died left the device mounted and its users forgotten: remove unmounts only."""
    info = store.ensure("proj_db", "local", bind_opts(device))
    store.acquire("proj_db", "c1")
    meta_path = store.layout.volumes / "proj_db/meta.json"
    meta = json.loads(meta_path.read_text())
    meta["users"] = []
    meta_path.write_text(json.dumps(meta))
    assert mounted(info.mountpoint)
    store.remove("proj_db")
    assert not mounted(info.mountpoint) and not (store.layout.volumes / "proj_db").exists()
    assert os.listdir(device) == ["precious"]


def test_remove_through_a_symlinked_root_keeps_the_device(device: Path, tmp_path: Path) -> None:
    """mountinfo lists resolved paths: a root reached through a symlink must still see its mounts."""
    real = Layout(tmp_path / "real-root").ensure()
    os.symlink(real.root, tmp_path / "link-root")
    store = VolumeStore(Layout(tmp_path / "link-root"), libc)
    info = store.ensure("proj_db", "local", bind_opts(device))
    store.acquire("proj_db", "c1")
    meta_path = store.layout.volumes / "proj_db/meta.json"
    meta = json.loads(meta_path.read_text())
    meta["users"] = []
    meta_path.write_text(json.dumps(meta))
    store.remove("proj_db")
    assert not mounted(real.volumes / "proj_db/_data") and not info.mountpoint.exists()
    assert os.listdir(device) == ["precious"]


def test_remove_refuses_while_a_foreign_mount_is_inside(store: VolumeStore, device: Path) -> None:
    info = store.ensure("proj_data")
    inner = info.mountpoint / "sub"
    inner.mkdir()
    libc.mount(str(device), str(inner), None, libc.MS_BIND)
    try:
        with pytest.raises(VolumeInUse, match=f"^volume proj_data: {inner} is still mounted"):
            store.remove("proj_data")
        assert (inner / "precious").exists() and info.mountpoint.exists()
    finally:
        libc.umount2(str(inner))
    assert os.listdir(device) == ["precious"]
    store.remove("proj_data")


def test_users_block_remove_of_a_mounted_device(store: VolumeStore, device: Path) -> None:
    store.ensure("proj_db", "local", bind_opts(device))
    store.acquire("proj_db", "c1")
    try:
        with pytest.raises(VolumeInUse, match="in use by c1"):
            store.remove("proj_db")
    finally:
        store.release("proj_db", "c1")
    store.remove("proj_db")
    assert os.listdir(device) == ["precious"]


def test_missing_device_is_named_at_ensure_and_at_mount(store: VolumeStore, device: Path) -> None:
    missing = device.parent / "wordpress"
    with pytest.raises(VolumeError, match=f"^volume proj_wp: driver_opts device {missing} does not exist$"):
        store.ensure("proj_wp", "local", bind_opts(missing))
    assert not store.exists("proj_wp")
    gone = device.parent / "later"
    gone.mkdir()
    store.ensure("proj_later", "local", bind_opts(gone))
    gone.rmdir()
    with pytest.raises(VolumeError, match=f"driver_opts device {gone} does not exist"):
        store.acquire("proj_later", "c1")
    assert store.get("proj_later").users == ()
    store.remove("proj_later")


def test_read_only_bind(store: VolumeStore, device: Path) -> None:
    info = store.ensure("proj_ro", "local", bind_opts(device, "bind,ro"))
    store.acquire("proj_ro", "c1")
    try:
        assert " ro," in mount_line(info.mountpoint) or " ro " in mount_line(info.mountpoint)
        with pytest.raises(OSError, match="Read-only"):
            (info.mountpoint / "x").write_text("no")
    finally:
        store.release("proj_ro", "c1")
    store.remove("proj_ro")


# --- other mount types --------------------------------------------------------------------------------------


def test_tmpfs_volume(store: VolumeStore) -> None:
    info = store.ensure(
        "proj_cache", "local", {"type": "tmpfs", "device": "tmpfs", "o": "size=1m,mode=0750,nosuid"}
    )
    store.acquire("proj_cache", "c1")
    try:
        line = mount_line(info.mountpoint)
        assert " - tmpfs tmpfs " in line and "size=1024k" in line and "mode=750" in line and "nosuid" in line
        assert stat.S_IMODE(os.stat(info.mountpoint).st_mode) == 0o750
        (info.mountpoint / "f").write_text("in memory")
    finally:
        store.release("proj_cache", "c1")
    assert not mounted(info.mountpoint) and os.listdir(info.mountpoint) == []
    store.remove("proj_cache")


def test_a_failing_mount_names_the_volume(store: VolumeStore) -> None:
    store.ensure("proj_bad", "local", {"type": "tmpfs", "o": "size=nonsense"})
    with pytest.raises(VolumeError, match=r"^volume proj_bad: mounting tmpfs on .*_data: mount: EINVAL"):
        store.acquire("proj_bad", "c1")
    store.remove("proj_bad")


# --- copy-up ------------------------------------------------------------------------------------------------


def build_layers(base: Path) -> tuple[Path, Path]:
    """Two layer folders for /var/lib/mysql: the lower one from a package, the upper one from a RUN."""
    lower = base / "lower/var/lib/mysql"
    (lower / "conf").mkdir(parents=True)
    (lower / "conf/old.cnf").write_text("old")
    (lower / "ibdata").write_text("lower data")
    (lower / "removed").write_text("whited out above")
    os.chown(lower / "ibdata", 999, 999)
    os.chmod(lower / "ibdata", 0o640)
    (lower / "bin").mkdir()
    (lower / "bin/tool").write_text("#!/bin/sh\n")
    os.chown(lower / "bin/tool", 0, 999)
    os.chmod(lower / "bin/tool", 0o4750)  # set-uid survives the chown
    os.mknod(lower / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mkfifo(lower / "pipe", 0o620)
    os.symlink("ibdata", lower / "current")
    os.lchown(lower / "current", 999, 999)
    os.setxattr(lower / "ibdata", "user.checksum", b"abc")
    os.setxattr(lower / "ibdata", "security.capability", b"\x01\x00\x00\x02" + b"\x00" * 16)

    upper = base / "upper/var/lib/mysql"
    (upper / "conf").mkdir(parents=True)
    os.setxattr(upper / "conf", "trusted.overlay.opaque", b"y")
    (upper / "conf/new.cnf").write_text("new")
    os.mknod(upper / "removed", stat.S_IFCHR, os.makedev(0, 0))  # a whiteout
    (upper / "added").write_text("upper")
    os.chown(upper, 999, 999)
    os.chmod(upper, 0o750)
    return upper, lower


def test_copy_up_from_layers_into_a_bind_device(store: VolumeStore, device: Path, tmp_path: Path) -> None:
    for name in os.listdir(device):
        os.unlink(device / name)  # an empty device, as on a first `up`
    sources = build_layers(tmp_path / "layers")
    info = store.ensure("proj_db", "local", bind_opts(device))
    store.acquire("proj_db", "c1")
    try:
        assert store.populate("proj_db", sources)
        vol = info.mountpoint
        assert sorted(os.listdir(vol)) == ["added", "bin", "conf", "current", "ibdata", "null", "pipe"]
        assert os.listdir(vol / "conf") == ["new.cnf"]  # opaque: the lower conf/ is hidden
        ib = os.stat(vol / "ibdata")
        assert (ib.st_uid, ib.st_gid, stat.S_IMODE(ib.st_mode)) == (999, 999, 0o640)
        assert os.getxattr(vol / "ibdata", "user.checksum") == b"abc"
        assert os.getxattr(vol / "ibdata", "security.capability")[:4] == b"\x01\x00\x00\x02"
        tool = os.stat(vol / "bin/tool")
        assert (tool.st_uid, tool.st_gid, stat.S_IMODE(tool.st_mode)) == (0, 999, 0o4750)
        null = os.lstat(vol / "null")
        assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
        assert stat.S_ISFIFO(os.lstat(vol / "pipe").st_mode)
        link = os.lstat(vol / "current")
        assert os.readlink(vol / "current") == "ibdata" and (link.st_uid, link.st_gid) == (999, 999)
        root = os.stat(vol)
        assert (root.st_uid, root.st_gid, stat.S_IMODE(root.st_mode)) == (999, 999, 0o750)  # copyOwnership
        with pytest.raises(OSError):
            os.getxattr(vol / "conf", "trusted.overlay.opaque")
        assert not store.populate("proj_db", sources)  # once
    finally:
        store.release("proj_db", "c1")
    assert (device / "ibdata").read_text() == "lower data"  # it went to the device
    store.remove("proj_db")
    assert (device / "ibdata").exists()


def test_populate_of_an_unmounted_device_volume_is_refused(
    store: VolumeStore, device: Path, tmp_path: Path
) -> None:
    store.ensure("proj_db", "local", bind_opts(device))
    with pytest.raises(VolumeError, match="is not mounted: acquire the volume before filling it"):
        store.populate("proj_db", tmp_path)
    store.remove("proj_db")


def test_a_device_with_data_is_not_filled(store: VolumeStore, device: Path, tmp_path: Path) -> None:
    sources = build_layers(tmp_path / "layers")
    info = store.ensure("proj_db", "local", bind_opts(device))
    store.acquire("proj_db", "c1")
    try:
        assert not store.populate("proj_db", sources)
        assert os.listdir(info.mountpoint) == ["precious"]
    finally:
        store.release("proj_db", "c1")
    store.remove("proj_db")


# --- with containers ----------------------------------------------------------------------------------------


def run_sh(runtime: Runtime, spec: ContainerSpec, script: str) -> str:
    async def go() -> tuple[ExitStatus, str]:
        read_end, write_end = os.pipe()
        one = replace(spec, argv=("sh", "-c", script), stdio=Stdio(stdout=write_end, stderr=write_end))
        try:
            container = await runtime.start(one)
        finally:
            os.close(write_end)
        try:
            status = await container.wait()
        finally:
            await container.kill_and_reap()
        with os.fdopen(read_end) as handle:
            return status, handle.read()

    try:
        status, out = trio.run(go)
    finally:
        runtime.remove(spec.id)
    assert status == ExitStatus(0), out
    return out


def test_a_volume_keeps_its_data_across_containers(
    runtime: Runtime, store: VolumeStore, busybox_rootfs: Path, device: Path, tmp_path: Path
) -> None:
    seed = tmp_path / "image/srv/www"
    seed.mkdir(parents=True)
    (seed / "index.html").write_text("from the image\n")
    os.chown(seed, 1000, 1000)
    for name in os.listdir(device):
        os.unlink(device / name)
    info = store.ensure("proj_www", "local", bind_opts(device))
    spec = ContainerSpec(
        id="vol1", lower_dirs=(busybox_rootfs,), argv=("true",), user="app",
        mounts=(BindMount(source=info.mountpoint, target="/srv/www"),),
    )  # fmt: skip
    try:
        store.acquire("proj_www", "vol1")
        assert store.populate("proj_www", seed)
        out = run_sh(
            runtime, spec, "cat /srv/www/index.html; echo run1 >> /srv/www/log; stat -c '%u %a' /srv/www"
        )
        assert out == "from the image\n1000 755\n"
        store.release("proj_www", "vol1")
        store.acquire("proj_www", "vol1")
        out = run_sh(runtime, spec, "echo run2 >> /srv/www/log; cat /srv/www/log")
        assert out == "run1\nrun2\n"
    finally:
        store.release("proj_www", "vol1")
    store.remove("proj_www")
    assert (device / "log").read_text() == "run1\nrun2\n"


def test_secrets_in_a_container_with_owner_and_mode(
    runtime: Runtime, busybox_rootfs: Path, layout: Layout, tmp_path: Path
) -> None:
    source = tmp_path / "db_password.txt"
    source.write_text("hunter2")
    os.chmod(source, 0o600)
    state = layout.container_dir("sec1")
    written = materialize(
        state,
        [
            SecretFile(kind="secret", key="db_password", file=source, uid="1000", gid="1000", mode=0o400),
            SecretFile(kind="config", key="app.conf", content="debug=1\n"),
        ],
        {},
    )
    spec = ContainerSpec(
        id="sec1", lower_dirs=(busybox_rootfs,), argv=("true",), user="app",
        mounts=(
            BindMount(source=written.secrets["db_password"], target="/run/secrets/db_password",
                      read_only=True, recursive=False),
            BindMount(source=written.configs["app.conf"], target="/app.conf", read_only=True,
                      recursive=False),
        ),
    )  # fmt: skip
    try:
        out = run_sh(
            runtime, spec,
            "cat /run/secrets/db_password; echo; stat -c '%u %g %a' /run/secrets/db_password /app.conf;"
            "cat /app.conf; echo x 2>&1 > /app.conf || true",
        )  # fmt: skip
    finally:
        remove_secrets(state)
    assert (
        out == "hunter2\n1000 1000 400\n0 0 444\ndebug=1\nsh: can't create /app.conf: Read-only file system\n"
    )
    assert not (state / "secrets").exists()
