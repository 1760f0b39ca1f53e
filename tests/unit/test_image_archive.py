"""Layer extraction, archive loading (docker save, OCI layout) and `--change` parsing, on real tarballs.

Whiteouts need root (they become device nodes): those tests are in tests/privileged/test_image_overlay.py.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from composer.image.archive import (
    BadArchive,
    ImageError,
    UnsafeArchive,
    apply_changes,
    import_rootfs,
    load,
    load_docker_save,
    load_oci_layout,
    write_layer_tar,
)
from composer.image.config import ImageConfig
from composer.image.store import ImageStore
from composer.storage.layout import Layout
from tests.unit.test_image_fixtures import (
    LOWER,
    d,
    docker_save,
    f,
    hard,
    image_config,
    layer_tar,
    oci_layout,
    sha,
    sym,
)


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(Layout(tmp_path / "root").ensure())


def _leftovers(store: ImageStore) -> list[str]:
    return sorted(os.listdir(store.layout.tmp))


# --- loading ------------------------------------------------------------------------------------------


def test_docker_save_loads_files_links_modes_and_xattrs(store: ImageStore, tmp_path: Path) -> None:
    lower = layer_tar(LOWER)
    image_id = docker_save(tmp_path / "app.tar", [lower], repo_tags=["docker.io/library/app:1.0", "app:x"])
    loaded = load(store, tmp_path / "app.tar")
    assert [item.image.id for item in loaded] == [image_id]
    image = store.get("app:1.0")
    assert image.id == image_id and image.tags == ("app:1.0", "app:x")
    assert image.diff_ids == (sha(lower),)
    assert image.config.cmd == ("/bin/sh",) and image.config.env == ("PATH=/bin",)
    (top,) = store.layer_dirs(image)
    assert top == store.layout.layer_dir(sha(lower))
    assert (top / "etc/passwd").read_text().startswith("root:")
    assert os.readlink(top / "bin/link") == "tool"
    assert os.stat(top / "bin/hard").st_ino == os.stat(top / "bin/tool").st_ino
    assert oct(os.stat(top / "bin/tool").st_mode & 0o7777) == "0o4755"
    assert os.getxattr(top / "data.txt", "user.origin") == b"lower"
    assert os.stat(top / "etc/passwd").st_mtime == 1_700_000_000
    # the config is kept byte for byte: the id is the sha256 of the stored file
    assert sha(store.layout.image_config(image_id).read_bytes()) == image_id
    assert _leftovers(store) == []


def test_loading_twice_reuses_layers(store: ImageStore, tmp_path: Path) -> None:
    docker_save(tmp_path / "a.tar", [layer_tar(LOWER)])
    load(store, tmp_path / "a.tar")
    meta = store.layout.layer_meta(sha(layer_tar(LOWER)))
    first = meta.stat().st_mtime_ns
    load(store, tmp_path / "a.tar")
    assert meta.stat().st_mtime_ns == first
    assert len(store.list()) == 1


def test_docker_save_with_a_repeated_layer_as_symlink(store: ImageStore, tmp_path: Path) -> None:
    empty = layer_tar([])
    top = layer_tar([f("x", "1")])
    docker_save(tmp_path / "a.tar", [empty, top, empty], duplicate_as_symlink=True, repo_tags=["rep:1"])
    image = load(store, tmp_path / "a.tar")[0].image
    assert image.diff_ids == (sha(empty), sha(top), sha(empty))
    # the repeat keeps only its top occurrence: overlay refuses one folder twice
    assert store.layer_dirs(image) == [store.layout.layer_dir(sha(empty)), store.layout.layer_dir(sha(top))]


def test_gzip_compressed_docker_save_and_a_pipe(store: ImageStore, tmp_path: Path) -> None:
    docker_save(tmp_path / "a.tar", [layer_tar(LOWER)], repo_tags=["piped:1"])
    (tmp_path / "a.tar.gz").write_bytes(gzip.compress((tmp_path / "a.tar").read_bytes()))
    assert load(store, tmp_path / "a.tar.gz")[0].tags == ("piped:1",)
    other = ImageStore(Layout(tmp_path / "root2").ensure())
    with subprocess.Popen(["cat", str(tmp_path / "a.tar")], stdout=subprocess.PIPE) as cat:
        assert cat.stdout is not None
        loaded = load(other, cat.stdout)  # type: ignore[arg-type]
    assert loaded[0].image.tags == ("piped:1",)
    assert _leftovers(other) == []


@pytest.mark.parametrize("as_tar", [False, True])
@pytest.mark.parametrize("compress", [False, True])
def test_oci_layout_loads(store: ImageStore, tmp_path: Path, as_tar: bool, compress: bool) -> None:
    target = tmp_path / ("layout.tar" if as_tar else "layout")
    if not as_tar:
        target.mkdir()
    lower = layer_tar(LOWER)
    image_id = oci_layout(target, [lower], as_tar=as_tar, compress=compress, nested_index=True)
    loaded = load_oci_layout(store, target)
    assert loaded[0].image.id == image_id
    assert loaded[0].tags == ("example/oci:2.0",)
    top = store.layer_dirs(store.get("example/oci:2.0"))[0]
    assert (top / "app/sub/deep").read_text() == "deep\n"


def test_oci_bare_tag_annotation_loads_untagged(store: ImageStore, tmp_path: Path) -> None:
    image_id = oci_layout(tmp_path, [layer_tar([f("a", "1")])], ref_name="latest")
    loaded = load(store, tmp_path)
    assert loaded[0].tags == () and loaded[0].image.id == image_id
    assert store.list()[0].tags == ()


def test_a_layer_that_does_not_match_its_diff_id_is_refused(store: ImageStore, tmp_path: Path) -> None:
    lower = layer_tar(LOWER)
    wrong = image_config([sha(b"something else")])
    docker_save(tmp_path / "bad.tar", [lower], config=wrong)
    with pytest.raises(
        BadArchive, match=r"bad\.tar: .*layer\.tar: content digest sha256:\w+ is not the diff_id"
    ):
        load_docker_save(store, tmp_path / "bad.tar")
    assert not store.has_layer(sha(lower)) and os.listdir(store.layout.layers) == []
    assert store.list() == [] and _leftovers(store) == []


def test_a_config_that_does_not_match_its_name_is_refused(store: ImageStore, tmp_path: Path) -> None:
    docker_save(tmp_path / "a.tar", [layer_tar([f("a")])])
    with tarfile.open(tmp_path / "a.tar") as src, tarfile.open(tmp_path / "b.tar", "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member)
            if member.name.endswith(".json") and member.name != "manifest.json":
                raw = data.read().replace(b'"/bin/sh"', b'"/bin/ash"')  # type: ignore[union-attr]
                member.size = len(raw)
                dst.addfile(member, io.BytesIO(raw))
            else:
                dst.addfile(member, data)
    with pytest.raises(BadArchive, match="does not match its digest"):
        load(store, tmp_path / "b.tar")


def test_not_an_archive(store: ImageStore, tmp_path: Path) -> None:
    (tmp_path / "junk.tar").write_bytes(b"hello" * 200)
    with pytest.raises(BadArchive, match=r"junk\.tar"):
        load(store, tmp_path / "junk.tar")
    with tarfile.open(tmp_path / "empty.tar", "w"):
        pass
    with pytest.raises(BadArchive, match=r"empty\.tar: neither a docker save archive"):
        load(store, tmp_path / "empty.tar")
    with pytest.raises(ImageError, match=r"missing\.tar: No such file"):
        load(store, tmp_path / "missing.tar")


# --- unsafe archives -----------------------------------------------------------------------------------

UNSAFE = {
    "absolute": ([f("/etc/evil", "x")], "absolute path"),
    "dotdot": ([f("a/../../evil", "x")], "climbs out"),
    "symlink-out": ([sym("esc", "../../../.."), f("esc/evil", "x")], "points outside"),
    "symlink-out-abs-then-up": ([sym("esc", "/../.."), f("esc/evil", "x")], "points outside"),
    "symlink-chain": ([d("a"), sym("a/b", ".."), sym("c", "a/b/.."), f("c/evil", "x")], "points outside"),
    "hardlink-out": ([hard("evil", "../../outside/secret")], "climbs out"),
    "hardlink-abs": ([hard("evil", "/etc/passwd")], "absolute path"),
    "hardlink-through-symlink": ([sym("esc", "../.."), hard("evil", "esc/secret")], "points outside"),
    "whiteout-through-symlink": ([sym("esc", "../.."), f("esc/.wh.secret")], "points outside"),
}


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_unsafe_archives_are_refused(store: ImageStore, tmp_path: Path, case: str) -> None:
    entries, message = UNSAFE[case]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("keep me")
    with pytest.raises(UnsafeArchive, match=message):
        store.add_layer_from_tar(io.BytesIO(layer_tar(entries)), source=f"{case}.tar")
    assert (outside / "secret").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.rglob("evil")) == []
    assert os.listdir(store.layout.layers) == [] and _leftovers(store) == []


def test_a_folder_replaced_by_a_symlink_keeps_its_attributes_inside(
    store: ImageStore, tmp_path: Path
) -> None:
    """Folder attributes are set last: by then a later member may have turned the folder (or one above
    it) into a symlink pointing out. The late chmod/chown must not follow it onto the host."""
    outside = tmp_path / "outside"
    (outside / "y").mkdir(parents=True)
    os.chmod(outside, 0o700)
    os.chmod(outside / "y", 0o700)
    entries = [
        d("a", mode=0o777, uid=4242), sym("a", str(outside)),
        d("x", mode=0o777), d("x/y", mode=0o777, uid=4242), sym("x", str(outside)),
    ]  # fmt: skip
    digest = store.add_layer_from_tar(io.BytesIO(layer_tar(entries)))
    for path in (outside, outside / "y"):
        st = os.stat(path)
        assert (oct(st.st_mode & 0o777), st.st_uid) == ("0o700", os.geteuid())
    assert os.readlink(store.layout.layer_dir(digest) / "a") == str(outside)


def test_symlinks_inside_the_target_are_followed_as_in_a_chroot(store: ImageStore) -> None:
    entries = [
        d("usr"),
        d("usr/lib"),
        sym("lib", "/usr/lib"),
        f("lib/libc.so", "elf"),
        sym("up", "usr/../usr"),
    ]
    digest = store.add_layer_from_tar(io.BytesIO(layer_tar(entries)))
    root = store.layout.layer_dir(digest)
    assert (root / "usr/lib/libc.so").read_text() == "elf"
    assert os.readlink(root / "lib") == "/usr/lib"


def test_a_hardlink_to_a_missing_file_is_an_error(store: ImageStore) -> None:
    with pytest.raises(BadArchive, match="no such file in the archive"):
        store.add_layer_from_tar(io.BytesIO(layer_tar([hard("a", "nothere")])), source="x.tar")


def test_a_truncated_layer_is_an_error(store: ImageStore) -> None:
    data = layer_tar([f("big", b"x" * 100_000)])[:20_000]
    with pytest.raises(BadArchive, match=r"t\.tar"):
        store.add_layer_from_tar(io.BytesIO(data), source="t.tar")
    assert os.listdir(store.layout.layers) == [] and _leftovers(store) == []


# --- writing a layer tar from a folder -------------------------------------------------------------


def test_write_layer_tar_is_a_fixed_point(store: ImageStore, tmp_path: Path) -> None:
    digest = store.add_layer_from_tar(io.BytesIO(layer_tar(LOWER)))
    first = tmp_path / "first.tar"
    with first.open("wb") as out:
        write_layer_tar(store.layout.layer_dir(digest), out)
    again = store.add_layer_from_tar(first.open("rb"))
    second = tmp_path / "second.tar"
    with second.open("wb") as out:
        write_layer_tar(store.layout.layer_dir(again), out)
    assert first.read_bytes() == second.read_bytes()
    assert again == sha(first.read_bytes())
    with tarfile.open(first) as tar:
        names = tar.getnames()
        assert names == sorted(names, key=lambda n: n.split("/")) or names[0] == "app"
        assert tar.getmember("bin/hard").islnk() or tar.getmember("bin/tool").islnk()
        assert tar.getmember("data.txt").pax_headers["SCHILY.xattr.user.origin"] == "lower"


# --- import and --change --------------------------------------------------------------------------


def test_import_rootfs_with_changes(store: ImageStore, tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs.tar.gz"
    rootfs.write_bytes(gzip.compress(layer_tar([d("bin"), f("bin/sh", "#!", mode=0o755)])))
    changes = ['CMD ["/bin/sh", "-c", "echo hi"]', "ENV A=1 B='two words'", "EXPOSE 80 53/udp"]
    image = import_rootfs(store, rootfs, "mine:v1", changes, message="first")
    assert image.tags == ("mine:v1",)
    assert image.config.cmd == ("/bin/sh", "-c", "echo hi")
    assert image.config.env == ("A=1", "B=two words")
    assert image.config.exposed_ports == ("53/udp", "80/tcp")
    raw = store.raw_config(image)
    assert raw["history"][-1]["comment"] == "first" and raw["os"] == "linux"
    assert (store.layer_dirs(image)[0] / "bin/sh").read_text() == "#!"


def test_import_refuses_a_bad_name_before_reading(store: ImageStore, tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="invalid image name"):
        import_rootfs(store, tmp_path / "none.tar", "Bad Name", [])


CHANGES = [
    (["CMD echo hi"], {"cmd": ("/bin/sh", "-c", "echo hi")}),
    (['CMD ["a", "b"]'], {"cmd": ("a", "b")}),
    (["ENTRYPOINT [not json"], {"entrypoint": ("/bin/sh", "-c", "[not json")}),
    (['ENTRYPOINT ["/init"]', 'CMD ["x"]'], {"entrypoint": ("/init",), "cmd": ("x",)}),
    (["ENV PATH /usr/bin:/bin", "ENV X=1", "ENV X=2"], {"env": ("PATH=/usr/bin:/bin", "X=2")}),
    (['ENV A="x y" B=z'], {"env": ("A=x y", "B=z")}),
    (["WORKDIR /srv", "WORKDIR app", "WORKDIR ../lib"], {"working_dir": "/srv/lib"}),
    (["USER app:app"], {"user": "app:app"}),
    (["EXPOSE 8000-8002/tcp 9000/udp"], {"exposed_ports": ("8000/tcp", "8001/tcp", "8002/tcp", "9000/udp")}),
    (['LABEL a=1 "b c"=2', "LABEL a=3"], {"labels": (("a", "3"), ("b c", "2"))}),
    (['VOLUME ["/data", "/logs"]', "VOLUME /cache"], {"volumes": ("/cache", "/data", "/logs")}),
    (["stopsignal SIGQUIT"], {"stop_signal": "SIGQUIT"}),
]


@pytest.mark.parametrize(("changes", "expected"), CHANGES)
def test_changes(changes: list[str], expected: dict[str, object]) -> None:
    config = apply_changes(ImageConfig(), changes)
    for key, value in expected.items():
        assert getattr(config, key) == value, key


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("RUN make", "RUN is not one of CMD, ENTRYPOINT"),
        ("EXPOSE http", "'http' is not PORT"),
        ("EXPOSE 70000", "within 1-65535"),
        ("ENV =x", "is not KEY=VALUE"),
        ("WORKDIR a b", "exactly one argument"),
        ("CMD", "needs an argument"),
        ("LABEL 'unclosed", "No closing quotation"),
    ],
)
def test_bad_changes(change: str, message: str) -> None:
    with pytest.raises(ImageError, match=message) as info:
        apply_changes(ImageConfig(), [change])
    assert "\n" not in info.value.render() and "--change" in info.value.render()


def test_json_configs_of_changes_round_trip() -> None:
    config = apply_changes(ImageConfig(), ["CMD x", "EXPOSE 1", "LABEL k=v", "VOLUME /v"])
    assert ImageConfig.from_oci(json.loads(json.dumps(config.to_oci()))) == config
