"""The image store: commits, tags and references, removal, prune, and two processes at once."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from composer.image.archive import DigestWriter, write_layer_tar
from composer.image.config import ImageConfig
from composer.image.store import ImageConflict, ImageError, ImageNotFound, ImageStore, normalize_ref
from composer.storage.layout import Layout
from tests.unit.test_image_fixtures import f, layer_tar, sha

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(Layout(tmp_path / "root").ensure())


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def _staged(store: ImageStore, name: str, files: dict[str, str]) -> Path:
    """A folder on the store's filesystem (under its tmp), as a builder or bootstrapper makes one."""
    folder = store.layout.tmp / name
    folder.mkdir()
    return _tree(folder, files)


@pytest.mark.parametrize(
    ("ref", "normal"),
    [
        ("busybox", "busybox:latest"),
        ("busybox:1.36", "busybox:1.36"),
        ("docker.io/library/debian:12", "debian:12"),
        ("index.docker.io/library/x", "x:latest"),
        ("library/x:y", "x:y"),
        ("docker.io/bitnami/redis:7", "bitnami/redis:7"),
        ("localhost:5000/team/app", "localhost:5000/team/app:latest"),
        ("ghcr.io/o/a:v1.2_3-rc", "ghcr.io/o/a:v1.2_3-rc"),
        ("a__b/c-d.e", "a__b/c-d.e:latest"),
    ],
)
def test_normalize_ref(ref: str, normal: str) -> None:
    assert normalize_ref(ref) == normal


@pytest.mark.parametrize(
    "ref", ["Busybox", "a:b:c", "x:", "-x", "a//b", "x@sha256:" + "0" * 64, "a:" + "t" * 129]
)
def test_invalid_refs(ref: str) -> None:
    with pytest.raises(ImageError) as info:
        normalize_ref(ref)
    assert "\n" not in info.value.render()


def test_commit_rootfs_moves_the_folder_in(store: ImageStore) -> None:
    folder = _staged(store, "base", {"etc/os-release": "ID=test\n", "bin/sh": "#!"})
    expected = DigestWriter()
    write_layer_tar(folder, expected)
    config = ImageConfig(env=("PATH=/bin",), cmd=("/bin/sh",), labels=(("a", "b"),))
    image = store.commit_rootfs(folder, config, tags=["docker.io/library/base:1"])
    assert not folder.exists()  # moved, not copied
    assert image.tags == ("base:1",) and image.config == config
    assert image.diff_ids == (expected.digest,)
    assert (store.layer_dirs(image)[0] / "etc/os-release").read_text() == "ID=test\n"
    raw = store.layout.image_config(image.id).read_bytes()
    assert sha(raw) == image.id
    data = json.loads(raw)
    assert data["rootfs"] == {"type": "layers", "diff_ids": [expected.digest]}
    assert data["config"]["Labels"] == {"a": "b"} and data["os"] == "linux" and data["architecture"]
    assert image.size == len("ID=test\n") + 2


def test_commit_on_a_parent_stacks_layers_top_first(store: ImageStore) -> None:
    base = store.commit_rootfs(_staged(store, "b", {"a": "1"}), ImageConfig(), tags=["base"])
    child = store.commit_rootfs(
        _staged(store, "c", {"b": "2"}), ImageConfig(cmd=("x",)), tags=["child"], parent=base
    )
    assert child.diff_ids[0] == base.diff_ids[0] and len(child.diff_ids) == 2
    top, bottom = store.layer_dirs(child)
    assert (top / "b").exists() and (bottom / "a").exists()
    assert len(store.raw_config(child)["history"]) == 2


def test_commit_from_another_folder_copies(store: ImageStore, tmp_path: Path) -> None:
    """Outside the store's filesystem the folder is copied; here (same filesystem) a folder outside
    tmp is still renamed, so this checks the digest is the same either way."""
    one = store.commit_rootfs(_staged(store, "one", {"x": "1"}), ImageConfig())
    two = store.commit_rootfs(_tree(tmp_path / "two", {"x": "1"}), ImageConfig(user="app"))
    assert one.diff_ids == two.diff_ids and one.id != two.id
    assert len([n for n in os.listdir(store.layout.layers) if n.endswith(".json")]) == 1


def test_identical_commits_share_one_layer(store: ImageStore) -> None:
    folders = [_staged(store, name, {"d/f": "same"}) for name in ("a", "b")]
    for folder in folders:  # same content, same times: the same layer tar
        for path in (folder / "d", folder / "d/f"):
            os.utime(path, (1_700_000_000, 1_700_000_000))
    first = store.commit_rootfs(folders[0], ImageConfig(), tags=["a"])
    second = store.commit_rootfs(folders[1], ImageConfig(), tags=["b"])
    assert second.diff_ids == first.diff_ids and second.id != first.id
    assert not folders[1].exists()  # consumed even though the store had the layer
    assert os.listdir(store.layout.tmp) == []


def test_resolve_by_tag_id_and_prefix(store: ImageStore) -> None:
    image = store.commit_rootfs(_staged(store, "a", {"f": "1"}), ImageConfig(), tags=["app:1"])
    hexid = image.id[7:]
    for ref in ("app:1", "docker.io/library/app:1", image.id, hexid, hexid[:12], "sha256:" + hexid[:8]):
        resolved = store.resolve(ref)
        assert resolved is not None and resolved.id == image.id, ref
    assert store.resolve("app") is None  # app:latest does not exist
    assert store.resolve("abc") is None
    with pytest.raises(ImageNotFound, match="no such image: nope"):
        store.get("nope")


def test_resolve_remembers_until_the_tags_or_the_image_change(store: ImageStore) -> None:
    one = store.commit_rootfs(_staged(store, "a", {"f": "1"}), ImageConfig(), tags=["app:1"])
    assert store.resolve("app:1") is store.resolve("app:1")  # remembered: the same object
    two = store.commit_rootfs(_staged(store, "b", {"f": "2"}), ImageConfig(), tags=["app:1"])
    resolved = store.resolve("app:1")
    assert resolved is not None and resolved.id == two.id  # the tag moved: tags.json was rewritten
    dangling = store.get(one.id)
    assert dangling.tags == () and store.resolve(one.id) is store.resolve(one.id)
    store.remove(one.id)  # untagged: tags.json stays as it was, the config goes
    assert store.resolve(one.id) is None
    other = ImageStore(store.layout)  # another process's store: what this one writes shows there
    store.tag("app:1", "app:2")
    assert other.get("app:1").tags == ("app:1", "app:2")
    store.untag("app:2")
    assert other.get("app:1").tags == ("app:1",)


def test_tag_untag_and_dangling(store: ImageStore) -> None:
    image = store.commit_rootfs(_staged(store, "a", {"f": "1"}), ImageConfig(), tags=["app:1"])
    assert store.tag("app:1", "docker.io/library/app:2").tags == ("app:1", "app:2")
    assert store.untag("app:1") == "app:1"
    assert store.get(image.id).tags == ("app:2",)
    store.untag("app:2")
    assert store.get(image.id).tags == ()
    assert [i.id for i in store.list()] == [image.id]
    with pytest.raises(ImageNotFound, match="no such tag: app:2"):
        store.untag("app:2")


def test_remove_by_tag_then_by_id(store: ImageStore) -> None:
    base = store.commit_rootfs(_staged(store, "b", {"base": "1" * 100}), ImageConfig(), tags=["base"])
    child = store.commit_rootfs(
        _staged(store, "c", {"own": "2" * 50}), ImageConfig(), tags=["child:1", "child:2"], parent=base
    )
    result = store.remove("child:1")
    assert result.untagged == ("child:1",) and result.deleted == () and result.layers == ()
    store.tag("child:2", "child:3")
    with pytest.raises(ImageConflict, match=r"is tagged child:2, child:3: remove a tag or use --force"):
        store.remove(child.id[7:19])
    result = store.remove(child.id[7:19], force=True)
    assert result.untagged == ("child:2", "child:3") and result.deleted == (child.id,)
    assert result.layers == (child.diff_ids[1],) and result.reclaimed == 50  # the base layer stays
    assert store.layer_dirs(store.get("base"))[0].is_dir()
    assert not store.layout.layer_dir(child.diff_ids[1]).exists()
    result = store.remove("base")
    assert result.deleted == (base.id,) and result.layers == base.diff_ids
    assert store.list() == [] and os.listdir(store.layout.layers) == []
    assert os.listdir(store.layout.tmp) == []
    with pytest.raises(ImageNotFound):
        store.remove("base")


def test_prune_frees_unreferenced_layers_only(store: ImageStore) -> None:
    kept = store.commit_rootfs(_staged(store, "k", {"k": "keep"}), ImageConfig(), tags=["kept"])
    dangling = store.commit_rootfs(
        _staged(store, "d", {"d": "dangle"}), ImageConfig(), tags=["gone"], parent=kept
    )
    store.untag("gone")
    loose = store.add_layer_from_tar(io.BytesIO(layer_tar([f("loose", "x" * 10)])))
    orphan = store.layout.layers / ("e" * 64)  # a folder left by a crash before its metadata
    orphan.mkdir()
    result = store.prune()
    assert result.images == (dangling.id,)
    assert set(result.layers) == {dangling.diff_ids[1], loose, "sha256:" + "e" * 64}
    assert result.reclaimed == len("dangle") + 10
    assert [image.id for image in store.list()] == [kept.id]
    assert (store.layer_dirs(kept)[0] / "k").read_text() == "keep"
    assert sorted(os.listdir(store.layout.layers)) == sorted(
        [kept.diff_ids[0][7:], kept.diff_ids[0][7:] + ".json"]
    )
    assert store.prune().layers == ()


def test_add_image_needs_its_layers(store: ImageStore) -> None:
    config = {"rootfs": {"type": "layers", "diff_ids": ["sha256:" + "1" * 64]}, "config": {}}
    with pytest.raises(ImageError, match=r"layer sha256:1+ is not in the store"):
        store.add_image(json.dumps(config).encode())
    with pytest.raises(ImageError, match=r"no valid rootfs\.diff_ids"):
        store.add_image(b'{"rootfs": {}}')


def test_a_corrupt_tags_file_is_named(store: ImageStore) -> None:
    store.layout.tags_file.write_text("{not json")
    with pytest.raises(ImageError, match=r"tags\.json: not valid JSON"):
        store.list()


# --- two processes at once --------------------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from composer.image.config import ImageConfig
    from composer.image.store import ImageStore
    from composer.storage.layout import Layout

    root, who, count, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    store = ImageStore(Layout(Path(root)))
    for i in range(count):
        if mode == "prune":
            store.prune()
            continue
        folder = Path(root) / "tmp" / f"{who}-{i}"
        (folder / "shared").mkdir(parents=True)
        (folder / "shared" / "same").write_text("the same in every commit")
        (folder / "own").write_text(f"{who} {i}")
        base = store.commit_rootfs(folder / "shared", ImageConfig(), tags=[f"shared-{who}:{i}"])
        store.commit_rootfs(folder, ImageConfig(env=(f"I={i}",)), tags=[f"{who}:{i}"], parent=base)
    """
)


def _spawn(root: Path, who: str, count: int, mode: str = "commit") -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", WORKER, str(root), who, str(count), mode], env=env)


def _check_consistent(store: ImageStore) -> None:
    for image in store.list():
        for digest in image.diff_ids:
            assert store.has_layer(digest) and store.layout.layer_dir(digest).is_dir(), (image.tags, digest)
    names = os.listdir(store.layout.layers)
    folders = {n for n in names if not n.endswith(".json")}
    assert folders == {n[:-5] for n in names if n.endswith(".json")}
    assert os.listdir(store.layout.tmp) == []  # nothing half-made left behind


def test_two_processes_committing_at_once(store: ImageStore) -> None:
    count = 15
    workers = [_spawn(store.layout.root, who, count) for who in ("a", "b")]
    assert [worker.wait(timeout=120) for worker in workers] == [0, 0]
    tags = json.loads(store.layout.tags_file.read_text())
    assert len(tags) == 4 * count  # no tag lost to a concurrent write
    for who in ("a", "b"):
        for i in range(count):
            image = store.get(f"{who}:{i}")
            assert image.config.env == (f"I={i}",)
            assert (store.layer_dirs(image)[0] / "own").read_text() == f"{who} {i}"
            assert (store.layer_dirs(image)[1] / "same").exists()
    _check_consistent(store)


def test_prune_running_beside_commits_never_breaks_an_image(store: ImageStore) -> None:
    committer = _spawn(store.layout.root, "a", 15)
    pruner = _spawn(store.layout.root, "p", 40, mode="prune")
    assert committer.wait(timeout=120) == 0 and pruner.wait(timeout=120) == 0
    for i in range(15):
        image = store.get(f"a:{i}")
        assert (store.layer_dirs(image)[0] / "own").read_text() == f"a {i}"
    _check_consistent(store)
