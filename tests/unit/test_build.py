"""The builder's pure parts: compose `build:` -> BuildRequest, build order, errors, source selection and
hashing, the cache index, the CLI wiring. Real builds are in tests/privileged/test_build.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from composer import app, cli
from composer.engine.builds import build_order
from composer.errors import UsageError
from composer.image.build import BuildError, BuildRequest, _Lines, dockerfile_refs
from composer.image.buildcache import BuildCache, step_key
from composer.image.config import ImageConfig
from composer.image.context import LayeredTree, SourceError, hash_ops, select
from composer.image.dockerignore import DockerIgnore
from composer.image.store import ImageStore
from composer.options import BuildOptions
from composer.spec.loader import LoadOptions, load_project
from composer.spec.model import Project
from composer.storage.layout import Layout


def _project(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Project:
    (tmp_path / "compose.yaml").write_text(text)
    loaded = load_project(LoadOptions(cwd=str(tmp_path), environ=environ or {}), lambda _: None)
    return loaded.project


def test_service_request_follows_compose(tmp_path: Path) -> None:
    project = _project(
        tmp_path,
        "name: demo\nservices:\n"
        "  web:\n    build:\n      context: ./web\n      dockerfile: Other.Dockerfile\n"
        "      args: [A=1, BARE, MISSING]\n      target: prod\n      labels: {x: y}\n"
        "      tags: [web:extra]\n"
        "      no_cache: true\n"
        "  db:\n    image: mydb:2\n    build: ./db\n"
        "  plain:\n    image: busybox\n",
        {"BARE": "from-env"},
    )
    web = project.service("web")
    request = app.service_request(web, environment={"BARE": "from-env"}, build_args={"A": "cli"})
    assert request.context == tmp_path / "web"
    assert request.dockerfile == Path("Other.Dockerfile")
    assert dict(request.args) == {"A": "cli", "BARE": "from-env"}  # MISSING is unset: left out
    assert request.target == "prod" and request.labels == (("x", "y"),) and request.no_cache
    assert request.tags == ("demo-web", "web:extra") and request.service == "web"
    db = app.service_request(project.service("db"), environment={})
    assert db.tags == ("mydb:2",) and not db.no_cache
    assert [s.name for s in app.services_to_build(project, ())] == ["db", "web"]
    assert [s.name for s in app.services_to_build(project, ("plain", "web"))] == ["web"]
    with pytest.raises(UsageError, match="no such service: nope"):
        app.services_to_build(project, ("nope",))


def test_pull_policy_always_and_remote_context_are_clear_errors(tmp_path: Path) -> None:
    project = _project(
        tmp_path,
        "services:\n  a:\n    build: .\n    pull_policy: always\n"
        "  b:\n    build: https://github.com/x/y.git\n",
    )
    with pytest.raises(BuildError, match="service a: pull_policy: always needs an image registry"):
        app.service_request(project.service("a"), environment={})
    with pytest.raises(BuildError, match="remote contexts are not supported"):
        app.service_request(project.service("b"), environment={})


def test_parse_build_args() -> None:
    assert app.parse_build_args(["A=1", "B", "C", "D="], {"B": "env"}) == {"A": "1", "B": "env", "D": ""}
    with pytest.raises(UsageError):
        app.parse_build_args(["=x"], {})


def test_build_order_follows_from_lines(tmp_path: Path) -> None:
    for name, text in {
        "base": "FROM scratch\n",
        "app": "ARG BASE=mybase\nFROM ${BASE}:1 AS b\nFROM b\nCOPY --from=tools:latest /x /x\n",
        "tools": "FROM debian:bookworm\n",
    }.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "Dockerfile").write_text(text)
    requests = [
        BuildRequest(context=tmp_path / "base", tags=("mybase:1",), service="base"),
        BuildRequest(context=tmp_path / "app", tags=("app",), service="app"),
        BuildRequest(context=tmp_path / "tools", tags=("tools",), service="tools"),
    ]
    assert dockerfile_refs(requests[1]) == {"mybase:1", "tools:latest"}
    assert build_order(requests) == {"base": set(), "app": {"base", "tools"}, "tools": set()}


def test_build_error_renders_service_file_line_and_tail() -> None:
    error = BuildError(
        "RUN false: exit code 1", service="web", file="web/Dockerfile", line=7, output=["a", "b"]
    )
    assert error.render() == "service web: web/Dockerfile:7: RUN false: exit code 1\n  | a\n  | b"


def test_output_lines_split_on_newlines_and_carriage_returns() -> None:
    seen: list[str] = []
    lines = _Lines(seen.append)
    lines.feed(b"one\ntw")
    lines.feed(b"o\r\nprogress 10%\rprogress 100%\n\nlast")
    lines.close()
    assert seen == ["one", "two", "progress 10%", "progress 100%", "last"]
    assert list(lines.tail) == seen


def test_select_globs_dirs_and_dockerignore(tmp_path: Path) -> None:
    (tmp_path / "src/sub").mkdir(parents=True)
    for name in ("a.py", "b.py", "c.txt", "sub/d.py", "sub/e.key"):
        (tmp_path / "src" / name).write_text(name)
    os.symlink("a.py", tmp_path / "src/link")
    ignore = DockerIgnore.from_text("**/*.key\n")
    tree = LayeredTree([tmp_path], ignored=ignore.ignored)
    ops = select(tree, ["src/*.py"], "/app/", dest_is_dir=True, what="ctx")
    assert [op.dest for op in ops] == ["/app/a.py", "/app/b.py"]
    ops = select(tree, ["src"], "/tree", dest_is_dir=False, what="ctx")
    assert [op.dest for op in ops] == ["/tree", "/tree/a.py", "/tree/b.py", "/tree/c.txt", "/tree/link",
                                       "/tree/sub", "/tree/sub/d.py"]  # fmt: skip
    single = select(tree, ["src/c.txt"], "/etc/renamed", dest_is_dir=False, what="ctx")
    assert [op.dest for op in single] == ["/etc/renamed"]
    with pytest.raises(SourceError, match="nothing: not found in ctx"):
        select(tree, ["nothing"], "/x", dest_is_dir=False, what="ctx")
    with pytest.raises(SourceError):
        select(tree, ["src/sub/e.key"], "/x", dest_is_dir=False, what="ctx")
    before = hash_ops(ops, with_owner=False)
    assert hash_ops(select(tree, ["src"], "/tree", dest_is_dir=False, what="ctx"), with_owner=False) == before
    (tmp_path / "src/sub/e.key").write_text("ignored files do not count")
    assert hash_ops(select(tree, ["src"], "/tree", dest_is_dir=False, what="ctx"), with_owner=False) == before
    (tmp_path / "src/c.txt").write_text("changed")
    assert hash_ops(select(tree, ["src"], "/tree", dest_is_dir=False, what="ctx"), with_owner=False) != before


def test_layered_tree_follows_symlinks_inside_the_tree(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "usr/bin").mkdir(parents=True)
    (lower / "usr/bin/tool").write_text("lower")
    os.symlink("usr/bin", lower / "bin")
    (upper / "usr/bin").mkdir(parents=True)
    (upper / "usr/bin/new").write_text("upper")
    os.symlink("/../../../etc", upper / "escape")
    tree = LayeredTree([upper, lower])
    node = tree.lookup("/bin/tool")
    assert node is not None and node.path == "/usr/bin/tool" and node.real == lower / "usr/bin/tool"
    root = tree.lookup("/usr/bin")
    assert root is not None and tree.listdir(root) == ["new", "tool"]
    assert tree.lookup("/escape") is None  # `..` stops at the tree's root: never the host's /etc


def test_cache_index_round_trip(tmp_path: Path) -> None:
    store = ImageStore(Layout(tmp_path / "root").ensure())
    cache = BuildCache(store)
    key = step_key(diff_ids=(), config=ImageConfig(), step="RUN x")
    assert key != step_key(diff_ids=(), config=ImageConfig(env=("A=1",)), step="RUN x")
    assert key != step_key(diff_ids=(), config=ImageConfig(), step="RUN x", args=(("A", "1"),))
    assert cache.get(key) is None
    layer = tmp_path / "layer"
    layer.mkdir()
    (layer / "file").write_text("x")
    image = store.commit_rootfs(layer, ImageConfig())
    cache.put(key, image, "RUN x")
    assert cache.get(key) == image
    assert cache.image_ids() == {image.id}
    store.prune()  # untagged: collected, and the entry is a miss from then on
    assert cache.get(key) is None
    assert cache.prune() == 1


def test_cli_build_flags_reach_the_app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[object] = []

    def fake_build(options: object, opts: object, *, cwd: str, environ: object) -> int:
        seen.append(opts)
        return 0

    monkeypatch.setattr(app, "build", fake_build)
    assert cli.main(["build", "--no-cache", "--build-arg", "A=1", "--build-arg", "B", "-q", "web", "db"]) == 0
    (opts,) = seen
    assert opts == BuildOptions(services=("web", "db"), no_cache=True, build_args=("A=1", "B"), quiet=True)


def test_cli_build_with_nothing_to_build(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "compose.yaml").write_text("services:\n  a:\n    image: busybox\n")
    assert cli.main(["-f", str(tmp_path / "compose.yaml"), "--root", str(tmp_path / "root"), "build"]) == 0
    assert "no service to build" in capsys.readouterr().err


def test_a_cycle_of_service_images_is_an_error() -> None:
    from composer.engine.builds import _check_cycles

    _check_cycles({"a": {"b"}, "b": set()})
    with pytest.raises(BuildError, match="cycle: a -> b -> a"):
        _check_cycles({"a": {"b"}, "b": {"a"}})
