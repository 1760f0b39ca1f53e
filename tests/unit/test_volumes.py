"""Volumes and secrets without the kernel: driver_opts parsing and checks, the store's metadata on plain
folders, copy-up of one folder, secrets written with owner and mode (the current user's ids)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from composer.storage import volumes as v
from composer.storage.layout import Layout
from composer.storage.secrets import SecretError, SecretFile, materialize, parse_id, remove
from composer.storage.volumes import (
    ANONYMOUS_LABEL,
    MountOptions,
    VolumeError,
    VolumeInUse,
    VolumeNotFound,
    VolumeStore,
    check_driver_opts,
    copy_up,
    mount_options,
    valid_name,
)


@pytest.fixture
def store(tmp_path: Path) -> VolumeStore:
    return VolumeStore(Layout(tmp_path / "root").ensure())


# --- driver_opts ------------------------------------------------------------------------------------------


def test_no_options_is_a_plain_folder() -> None:
    assert mount_options("db", {}) is None


def test_the_inception_bind() -> None:
    opts = mount_options("db", {"type": "none", "o": "bind", "device": "/home/x/data"})
    assert opts == MountOptions(source="/home/x/data", fstype=None, flags=v.MS_BIND, data="")
    assert opts.is_bind


def test_bind_flags_and_data_split_like_docker() -> None:
    opts = mount_options("db", {"type": "none", "o": "rbind,ro,nosuid,rw,rprivate", "device": "/d"})
    assert opts is not None
    assert opts.flags == v.MS_BIND | v.MS_REC | v.MS_NOSUID | v.MS_PRIVATE  # rw after ro clears it


def test_tmpfs_passes_o_as_data() -> None:
    opts = mount_options("cache", {"type": "tmpfs", "o": "size=10m,uid=1000,noexec"})
    assert opts == MountOptions(source="tmpfs", fstype="tmpfs", flags=v.MS_NOEXEC, data="size=10m,uid=1000")


def test_nfs_keeps_its_device() -> None:
    opts = mount_options("n", {"type": "nfs", "o": "addr=10.0.0.1,rw", "device": ":/export"})
    assert opts == MountOptions(source=":/export", fstype="nfs", flags=0, data="addr=10.0.0.1")


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        (
            {"type": "none", "o": "bind", "device": "./data"},
            "volume db: driver_opts device ./data is not an absolute path",
        ),
        (
            {"type": "none", "o": "bind"},
            "volume db: driver_opts o: bind needs a device (an absolute host path)",
        ),
        ({"type": "none", "device": "/x"}, "volume db: driver_opts type none needs o: bind"),
        ({"device": "/x"}, "volume db: driver_opts o and device need a type (type: none for a bind)"),
        ({"size": "10G"}, "volume db: driver_opts 'size' is not supported (use type, o and device)"),
    ],
)
def test_bad_options_name_the_volume(opts: dict[str, str], message: str) -> None:
    with pytest.raises(VolumeError) as caught:
        mount_options("db", opts)
    assert str(caught.value) == message


def test_check_driver_opts_looks_at_the_device(tmp_path: Path) -> None:
    missing = tmp_path / "home/x/data/mariadb"
    with pytest.raises(VolumeError, match=f"^volume db: driver_opts device {missing} does not exist$"):
        check_driver_opts("db", "local", {"type": "none", "o": "bind", "device": str(missing)})
    (tmp_path / "file").write_text("")
    with pytest.raises(VolumeError, match="is not a folder"):
        check_driver_opts("db", None, {"type": "none", "o": "bind", "device": str(tmp_path / "file")})
    with pytest.raises(VolumeError, match=r"^volume db: driver 'nfs-plugin' is not supported"):
        check_driver_opts("db", "nfs-plugin", {})
    assert (
        check_driver_opts("db", "local", {"type": "none", "o": "bind", "device": str(tmp_path)}) is not None
    )


def test_names() -> None:
    assert valid_name("proj_db") and valid_name("a.b-c_1") and valid_name("x")
    for bad in ("", "..", "../etc", "a/b", "_x", "-x", "a b"):
        assert not valid_name(bad), bad


# --- the store on plain folders -----------------------------------------------------------------------------


def test_ensure_creates_once_and_keeps_metadata(store: VolumeStore) -> None:
    first = store.ensure("proj_db", "local", {}, {"com.docker.compose.volume": "db"})
    assert first.created and first.mountpoint == store.layout.volumes / "proj_db/_data"
    assert first.mountpoint.is_dir() and first.driver == "local"
    (first.mountpoint / "kept").write_text("x")
    again = store.ensure("proj_db", None, None, {"other": "label"})
    assert not again.created and again.created_at == first.created_at
    assert again.labels == (("com.docker.compose.volume", "db"),)
    assert (again.mountpoint / "kept").read_text() == "x"
    meta = json.loads((store.layout.volumes / "proj_db/meta.json").read_text())
    assert meta["driver"] == "local" and meta["populated"] is False and meta["users"] == []
    assert store.exists("proj_db") and not store.exists("proj_other") and not store.exists("../x")
    assert [info.name for info in store.list()] == ["proj_db"]


def test_ensure_refuses_other_driver_opts(store: VolumeStore, tmp_path: Path) -> None:
    store.ensure("proj_db")
    with pytest.raises(VolumeError, match=r"^volume proj_db: exists with other driver_opts"):
        store.ensure("proj_db", "local", {"type": "none", "o": "bind", "device": str(tmp_path)})


def test_bad_name_is_refused(store: VolumeStore) -> None:
    with pytest.raises(VolumeError, match="not a valid volume name"):
        store.ensure("../escape")


def test_external_is_looked_up_not_created(store: VolumeStore) -> None:
    with pytest.raises(VolumeNotFound, match=r"^volume shared: external volume not found in "):
        store.lookup_external("shared")
    assert not store.exists("shared")
    store.ensure("shared")
    assert store.lookup_external("shared").name == "shared"


def test_anonymous_volumes_get_random_ids(store: VolumeStore) -> None:
    one = store.create_anonymous({"com.docker.compose.project": "p"})
    two = store.create_anonymous()
    assert one.name != two.name and len(one.name) == 64 and all(c in "0123456789abcdef" for c in one.name)
    assert one.anonymous and dict(one.labels) == {"com.docker.compose.project": "p", ANONYMOUS_LABEL: ""}


def test_users_block_removal_and_acquire_is_idempotent(store: VolumeStore) -> None:
    info = store.ensure("proj_db")
    assert store.acquire("proj_db", "c1") == info.mountpoint
    store.acquire("proj_db", "c1")
    store.acquire("proj_db", "c2")
    assert store.get("proj_db").users == ("c1", "c2")
    with pytest.raises(VolumeInUse, match=r"^volume proj_db: in use by c1, c2$"):
        store.remove("proj_db")
    store.release("proj_db", "c1")
    store.release("proj_db", "c1")
    store.release("proj_db", "c2")
    assert store.remove("proj_db")
    assert not (store.layout.volumes / "proj_db").exists()
    assert not store.remove("proj_db", missing_ok=True)
    assert not store.release("proj_db", "c1")  # down works twice
    with pytest.raises(VolumeNotFound):
        store.remove("proj_db")


def test_remove_deletes_read_only_folders(store: VolumeStore) -> None:
    info = store.ensure("proj_db")
    locked = info.mountpoint / "a/b"
    locked.mkdir(parents=True)
    (locked / "f").write_text("x")
    os.chmod(locked, 0o555)
    os.chmod(locked.parent, 0o555)
    store.remove("proj_db")
    assert not (store.layout.volumes / "proj_db").exists()


def test_populate_once_and_only_into_an_empty_volume(store: VolumeStore, tmp_path: Path) -> None:
    image = tmp_path / "image/var/lib/app"
    image.mkdir(parents=True)
    (image / "seed").write_text("from image")
    info = store.ensure("proj_data")
    store.acquire("proj_data", "c1")
    assert store.populate("proj_data", image)
    assert (info.mountpoint / "seed").read_text() == "from image"
    (info.mountpoint / "seed").unlink()
    assert not store.populate("proj_data", image)  # marked done: not again, even when empty
    assert not (info.mountpoint / "seed").exists()

    full = store.ensure("proj_full")
    (full.mountpoint / "mine").write_text("x")
    assert not store.populate("proj_full", image)
    assert sorted(os.listdir(full.mountpoint)) == ["mine"]


def test_nocopy_leaves_the_volume_empty_and_unmarked(store: VolumeStore, tmp_path: Path) -> None:
    image = tmp_path / "src"
    image.mkdir()
    (image / "seed").write_text("x")
    info = store.ensure("proj_v")
    assert not store.populate("proj_v", image, nocopy=True)
    assert os.listdir(info.mountpoint) == [] and not store.get("proj_v").populated
    assert store.populate("proj_v", image)


def test_copy_up_keeps_modes_links_and_root_mode(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub/file").write_text("data")
    os.chmod(src / "sub/file", 0o640)
    os.chmod(src / "sub", 0o750)
    os.symlink("sub/file", src / "link")
    os.symlink("/nowhere", src / "dangling")
    os.link(src / "sub/file", src / "hard")
    os.utime(src / "sub/file", ns=(1_000_000_000, 2_000_000_000))
    os.chmod(src, 0o711)
    dest = tmp_path / "vol"
    dest.mkdir()
    assert copy_up(dest, src)
    assert (dest / "sub/file").read_text() == "data"
    assert stat.S_IMODE(os.stat(dest / "sub/file").st_mode) == 0o640
    assert stat.S_IMODE(os.stat(dest / "sub").st_mode) == 0o750
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o711
    assert os.readlink(dest / "link") == "sub/file" and os.readlink(dest / "dangling") == "/nowhere"
    assert os.stat(dest / "hard").st_ino == os.stat(dest / "sub/file").st_ino
    assert os.stat(dest / "sub/file").st_mtime_ns == 2_000_000_000
    assert not copy_up(dest, src)  # not empty any more
    assert not copy_up(tmp_path / "empty-dest", tmp_path / "missing")


def test_copy_up_of_a_file_target_copies_nothing(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    (tmp_path / "vol").mkdir()
    assert not copy_up(tmp_path / "vol", tmp_path / "f")


# --- secrets and configs ------------------------------------------------------------------------------------


def test_secrets_and_configs_from_each_source(tmp_path: Path) -> None:
    source = tmp_path / "password.txt"
    source.write_text("hunter2\n")
    os.chmod(source, 0o600)
    me, group = os.getuid(), os.getgid()
    state = tmp_path / "state"
    written = materialize(
        state,
        [
            SecretFile(kind="secret", key="db_password", file=source, uid=str(me), gid=str(group)),
            SecretFile(kind="secret", key="token", environment="TOKEN", mode=0o400, uid=me, gid=group),
            SecretFile(kind="config", key="nginx.conf", content="server {}\n", uid=me, gid=group),
        ],
        {"TOKEN": "t0k3n"},
    )
    assert written.secrets == {"db_password": state / "secrets/db_password", "token": state / "secrets/token"}
    assert written.configs == {"nginx.conf": state / "configs/nginx.conf"}
    assert (state / "secrets/db_password").read_text() == "hunter2\n"
    assert stat.S_IMODE(os.stat(state / "secrets/db_password").st_mode) == 0o444  # composer owns the copy
    assert stat.S_IMODE(os.stat(state / "secrets/token").st_mode) == 0o400
    assert (state / "secrets/token").read_text() == "t0k3n"
    assert (state / "configs/nginx.conf").read_text() == "server {}\n"
    assert stat.S_IMODE(os.stat(state / "secrets").st_mode) == 0o700
    assert [p for p in os.listdir(state / "secrets") if p.startswith(".")] == []
    remove(state)
    assert not (state / "secrets").exists() and not (state / "configs").exists()
    remove(state)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (
            SecretFile(kind="secret", key="pw", file=Path("/nonexistent/pw")),
            "secret pw: file /nonexistent/pw does not exist",
        ),
        (
            SecretFile(kind="secret", key="pw", environment="NOPE"),
            "secret pw: environment variable NOPE is not set",
        ),
        (
            SecretFile(kind="config", key="c", content="x", uid="www-data"),
            "config c: uid 'www-data' is not a number",
        ),
        (SecretFile(kind="config", key="c"), "config c: needs exactly one of file, environment and content"),
        (
            SecretFile(kind="config", key="../c", content="x"),
            "config ../c: not a valid name ([a-zA-Z0-9._-]+)",
        ),
        (
            SecretFile(kind="secret", key="pw", file=Path("rel")),
            "secret pw: file rel is not an absolute path",
        ),
    ],
)
def test_secret_errors_are_one_line(tmp_path: Path, item: SecretFile, message: str) -> None:
    with pytest.raises(SecretError) as caught:
        materialize(tmp_path, [item], {})
    assert str(caught.value) == message


def test_same_key_twice_must_agree(tmp_path: Path) -> None:
    a = SecretFile(kind="secret", key="pw", content="x", uid=os.getuid(), gid=os.getgid())
    assert materialize(tmp_path, [a, a], {}).secrets == {"pw": tmp_path / "secrets/pw"}
    b = SecretFile(kind="secret", key="pw", content="x", mode=0o400, uid=os.getuid(), gid=os.getgid())
    with pytest.raises(SecretError, match="used twice"):
        materialize(tmp_path, [a, b], {})


def test_parse_id() -> None:
    assert parse_id("secret", "k", "uid", None) == 0
    assert parse_id("secret", "k", "uid", " 33 ") == 33
    assert parse_id("secret", "k", "gid", 1000) == 1000
    with pytest.raises(SecretError, match="out of range"):
        parse_id("secret", "k", "uid", -1)


def test_a_store_without_mount_refuses_driver_opts_volumes(store: VolumeStore, tmp_path: Path) -> None:
    store.ensure("proj_db", "local", {"type": "none", "o": "bind", "device": str(tmp_path)})
    with pytest.raises(VolumeError, match="need mount"):
        store.acquire("proj_db", "c1")
    assert store.get("proj_db").users == ()
    assert store.remove("proj_db")  # nothing mounted: nothing to undo
