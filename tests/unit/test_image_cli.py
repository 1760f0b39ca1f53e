"""`composer image ...` as a user meets it, in a temporary root: load, ls, inspect, tag, rm, prune, import."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from composer.cli import main
from tests.unit.test_image_fixtures import LOWER, d, docker_save, f, layer_tar, oci_layout, sha

REPO = Path(__file__).resolve().parents[2]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("COMPOSER_ROOT", raising=False)
    return tmp_path / "root"


@pytest.fixture
def archive(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "app.tar"
    return path, docker_save(path, [layer_tar(LOWER)], repo_tags=["docker.io/library/app:1.0"])


def test_load_ls_inspect_rm_round_trip(
    capsys: pytest.CaptureFixture[str], root: Path, archive: tuple[Path, str]
) -> None:
    path, image_id = archive
    assert run(capsys, "--root", str(root), "image", "load", "-i", str(path)) == (
        0,
        "Loaded image: app:1.0\n",
        "",
    )
    assert run(capsys, "image", "tag", "app:1.0", "other/app", "--root", str(root))[0] == 0

    code, out, _ = run(capsys, "image", "ls", "--root", str(root))
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert lines[0].index("TAG") == len("REPOSITORY") + 3  # padded like docker's tabwriter
    rows = sorted(line.split(None, 3) for line in lines[1:])
    assert [row[:3] for row in rows] == [
        ["app", "1.0", image_id[7:19]],
        ["other/app", "latest", image_id[7:19]],
    ]
    assert rows[0][3].startswith(("2 years ago", "3 years ago", "4 years ago"))

    assert run(capsys, "image", "ls", "-q", "--root", str(root))[1] == image_id[7:19] + "\n"
    code, out, _ = run(capsys, "image", "ls", "--format", "json", "--root", str(root))
    first = json.loads(out.splitlines()[0])
    assert first["ID"] == image_id[7:19] and first["Repository"] == "app" and first["Size"].endswith("B")

    code, out, err = run(capsys, "image", "inspect", "app:1.0", "--root", str(root))
    (data,) = json.loads(out)
    assert code == 0 and err == ""
    assert data["Id"] == image_id and data["RepoTags"] == ["app:1.0", "other/app:latest"]
    assert data["RootFS"] == {"Type": "layers", "Layers": [sha(layer_tar(LOWER))]}
    assert data["Config"]["Cmd"] == ["/bin/sh"] and data["Os"] == "linux"
    assert data["GraphDriver"]["Data"]["LowerDir"] == str(root / "images/layers" / sha(layer_tar(LOWER))[7:])

    code, out, err = run(capsys, "image", "rm", image_id[7:19], "--root", str(root))
    assert code == 1 and out == "" and "tagged app:1.0, other/app:latest" in err and "--force" in err
    code, out, _ = run(capsys, "image", "rm", "app:1.0", "other/app", "--root", str(root))
    assert code == 0
    assert out.splitlines() == [
        "Untagged: app:1.0", "Untagged: other/app:latest", f"Deleted: {image_id}",
        f"Deleted: {sha(layer_tar(LOWER))}",
    ]  # fmt: skip
    assert run(capsys, "image", "ls", "-q", "--root", str(root))[1] == ""
    assert os.listdir(root / "images/layers") == []


def test_composer_root_from_the_environment(
    capsys: pytest.CaptureFixture[str], root: Path, archive: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMPOSER_ROOT", str(root))
    assert run(capsys, "image", "load", "-q", "-i", str(archive[0])) == (0, "", "")
    assert (root / "images/tags.json").is_file()
    other = root.parent / "other"
    assert run(capsys, "image", "ls", "-q", "--root", str(other)) == (0, "", "")  # --root wins


def test_inspect_missing_prints_the_rest(
    capsys: pytest.CaptureFixture[str], root: Path, archive: tuple[Path, str]
) -> None:
    run(capsys, "--root", str(root), "image", "load", "-i", str(archive[0]))
    code, out, err = run(capsys, "--root", str(root), "image", "inspect", "nope", "app:1.0")
    assert code == 1 and len(json.loads(out)) == 1
    assert err == "Error: no such image: nope\n"


def test_prune_asks_unless_forced(
    capsys: pytest.CaptureFixture[str], root: Path, archive: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run(capsys, "--root", str(root), "image", "load", "-i", str(archive[0]))
    run(capsys, "--root", str(root), "image", "rm", "app:1.0")
    layer = layer_tar([f("unused", "u" * 2000)])
    oci = root.parent / "oci"
    oci_layout(oci, [layer], ref_name="latest")  # loads untagged: dangling
    assert run(capsys, "--root", str(root), "image", "load", "-i", str(oci))[1].startswith(
        "Loaded image ID: sha256:"
    )
    monkeypatch.setattr(sys, "stdin", io.StringIO("n\n"))
    code, out, _ = run(capsys, "--root", str(root), "image", "prune")
    assert code == 0 and "Are you sure" in out and len(os.listdir(root / "images/configs")) == 1
    code, out, _ = run(capsys, "--root", str(root), "image", "prune", "-f")
    assert code == 0 and out.startswith("Deleted Images:\ndeleted: sha256:")
    assert f"deleted layer: {sha(layer)}" in out and out.endswith("Total reclaimed space: 2kB\n")
    assert os.listdir(root / "images/configs") == [] and os.listdir(root / "images/layers") == []
    assert run(capsys, "--root", str(root), "image", "prune", "-f")[1] == "Total reclaimed space: 0B\n"


def test_import_with_changes(capsys: pytest.CaptureFixture[str], root: Path, tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs.tar.gz"
    rootfs.write_bytes(gzip.compress(layer_tar([d("bin"), f("bin/sh", "#!", mode=0o755)])))
    code, out, err = run(
        capsys, "--root", str(root), "image", "import", str(rootfs), "mine:v1",
        "--change", "CMD /bin/sh -c 'echo hi'", "-c", "ENV A=1", "-c", "WORKDIR /srv", "-m", "hello",
    )  # fmt: skip
    assert code == 0 and err == "" and out.startswith("sha256:")
    code, out, _ = run(capsys, "--root", str(root), "image", "inspect", "mine:v1")
    (data,) = json.loads(out)
    assert data["Config"] == {
        "Env": ["A=1"],
        "Cmd": ["/bin/sh", "-c", "/bin/sh -c 'echo hi'"],
        "WorkingDir": "/srv",
    }
    assert data["Comment"] == "hello"


def test_import_and_load_from_standard_input(root: Path, tmp_path: Path, archive: tuple[Path, str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COMPOSER_ROOT": str(root)}
    command = [sys.executable, "-m", "composer"]
    done = subprocess.run(
        [*command, "image", "import", "-", "piped"],
        input=layer_tar([f("x", "1")]),
        capture_output=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    done = subprocess.run(
        [*command, "image", "load"], input=archive[0].read_bytes(), capture_output=True, env=env
    )
    assert (done.returncode, done.stdout) == (0, b"Loaded image: app:1.0\n"), done.stderr
    listing = subprocess.run([*command, "image", "ls"], capture_output=True, env=env, text=True).stdout
    assert {line.split()[0] for line in listing.splitlines()[1:]} == {"piped", "app"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["image", "load", "-i", "{tmp}/nothing.tar"], "nothing.tar: No such file or directory"),
        (["image", "load", "-i", "{tmp}/junk.tar"], "junk.tar: not a tar archive"),
        (["image", "import", "{tmp}/junk.tar", "x", "-c", "RUN rm -rf /"], "RUN is not one of"),
        (["image", "import", "{tmp}/junk.tar", "Upper"], "invalid image name"),
        (["image", "rm", "nope"], "no such image: nope"),
        (["image", "tag", "nope", "x"], "no such image: nope"),
    ],
)
def test_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], root: Path, tmp_path: Path, argv: list[str], message: str
) -> None:
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    code, out, err = run(capsys, "--root", str(root), *(arg.format(tmp=tmp_path) for arg in argv))
    assert code == 1 and out == ""
    assert message in err and err.count("\n") == 1, err


def test_image_needs_a_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "image")
    assert code == 16 and "required" in err


def test_pull_of_a_non_base_image_says_there_is_no_registry(
    capsys: pytest.CaptureFixture[str], root: Path
) -> None:
    code, out, err = run(capsys, "--root", str(root), "image", "pull", "ubuntu:22.04")
    assert (code, out) == (1, "")
    assert err.startswith("ubuntu:22.04: no image registry is available; base images are scratch, debian:")


def test_pull_of_a_stored_base_image_is_instant_and_needs_no_network(
    capsys: pytest.CaptureFixture[str], root: Path, archive: tuple[Path, str]
) -> None:
    """A debian tag already in the store is found before any mirror is asked (the real bootstrap is
    tests/privileged/test_base_images.py)."""
    path, _ = archive
    assert run(capsys, "--root", str(root), "image", "load", "-i", str(path))[0] == 0
    loaded = run(capsys, "--root", str(root), "image", "ls", "-q")[1].split()[0]
    assert run(capsys, "--root", str(root), "image", "tag", loaded, "debian:bookworm")[0] == 0
    code, out, _ = run(capsys, "--root", str(root), "image", "pull", "-q", "debian:bookworm")
    assert code == 0 and out.strip().startswith("sha256:") and out.strip()[7:19] == loaded
    assert run(capsys, "--root", str(root), "image", "pull", "scratch")[0] == 0
