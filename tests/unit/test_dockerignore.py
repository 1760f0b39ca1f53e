"""`.dockerignore` rules (moby/patternmatcher's semantics) and the context walk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from composer.image.dockerignore import DockerIgnore, DockerIgnoreError


def ignore(text: str) -> DockerIgnore:
    return DockerIgnore.from_text(text)


@pytest.mark.parametrize(
    ("patterns", "path", "ignored"),
    [
        ("*.md", "README.md", True),
        ("*.md", "docs/README.md", False),  # `*` does not cross `/`
        ("*/*.md", "docs/README.md", True),
        ("**/*.md", "docs/a/b/README.md", True),
        ("**/*.md", "README.md", True),  # `**` may be zero directories
        ("**/node_modules", "node_modules", True),
        ("**/node_modules", "web/node_modules/x/y.js", True),  # a matching parent matches the child
        ("a/**/b", "a/b", True),
        ("a/**/b", "a/x/y/b", True),
        ("a/**", "a/x", True),
        ("a/**", "a", False),
        ("temp?", "temp1", True),
        ("temp?", "temp/1", False),
        ("[a-c]x", "bx", True),
        ("[^a-c]x", "bx", False),
        ("[^a-c]x", "dx", True),
        ("/build", "build/out.o", True),  # leading slash: relative to the context
        ("./build", "build", True),
        ("a//b/../c", "a/c", True),
        ("\\*x", "*x", True),
        ("\\*x", "ax", False),
        ("a.b", "axb", False),  # regex characters are literal
        ("*", "anything/at/all", True),
        (".git", ".gitignore", False),
    ],
)
def test_matching(patterns: str, path: str, ignored: bool) -> None:
    assert ignore(patterns).ignored(path) is ignored


def test_exceptions_last_match_wins() -> None:
    rules = ignore("*.md\n!README.md\nREADME*.md\n!README-keep.md\n")
    assert rules.ignored("CHANGES.md")
    assert rules.ignored("README.md")  # excluded again by README*.md
    assert not rules.ignored("README-keep.md")


def test_exception_inside_an_ignored_directory() -> None:
    rules = ignore("docs\n!docs/keep.txt\n")
    assert rules.ignored("docs")
    assert rules.ignored("docs/other.txt")
    assert not rules.ignored("docs/keep.txt")


def test_comments_blank_lines_and_whitespace() -> None:
    rules = ignore("\ufeff# a comment\n\n   secret.txt   \n # not a comment\n!  /keep\n")
    assert rules.patterns == ("secret.txt", "# not a comment", "!keep")
    assert rules.ignored("secret.txt")
    assert rules.ignored("# not a comment")
    assert not rules.ignored("# a comment")


def test_paths_given_are_cleaned_and_the_root_is_never_ignored() -> None:
    rules = ignore("*\n")
    assert rules.ignored("./a//b/")
    assert not rules.ignored(".")
    assert not rules.ignored("")


def test_empty_file_ignores_nothing() -> None:
    assert not DockerIgnore.from_text("").ignored("a")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ok\n!\n", '.dockerignore:2: illegal exclusion pattern: "!"'),
        ("[abc\n", ".dockerignore:1: syntax error in pattern: '[' without ']'"),
        ("a\\\n", ".dockerignore:1: syntax error in pattern: it ends with an escaping backslash"),
    ],
)
def test_bad_patterns(text: str, message: str) -> None:
    with pytest.raises(DockerIgnoreError) as info:
        ignore(text)
    assert str(info.value).startswith(message)


def make_tree(root: Path, files: list[str]) -> None:
    for name in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith("/"):
            path.mkdir(exist_ok=True)
        else:
            path.write_text(name)


def walked(rules: DockerIgnore, root: Path) -> list[str]:
    out = []
    for rel, path in rules.walk(root):
        assert path == root / rel
        out.append(rel)
    return out


def test_walk_everything_sorted_depth_first(tmp_path: Path) -> None:
    make_tree(tmp_path, ["b.txt", "a/z.txt", "a/b/c.txt", "empty/"])
    os.symlink("/nonexistent", tmp_path / "link")
    assert walked(DockerIgnore(), tmp_path) == ["a", "a/b", "a/b/c.txt", "a/z.txt", "b.txt", "empty", "link"]


def test_walk_skips_ignored_and_does_not_follow_symlinks(tmp_path: Path) -> None:
    make_tree(tmp_path, ["src/main.py", "src/__pycache__/main.pyc", "node_modules/x/index.js", "real/f"])
    os.symlink("real", tmp_path / "dirlink")
    rules = ignore("**/__pycache__\nnode_modules\n")
    assert walked(rules, tmp_path) == ["dirlink", "real", "real/f", "src", "src/main.py"]


def test_walk_reports_an_ignored_directory_that_holds_an_exception(tmp_path: Path) -> None:
    make_tree(tmp_path, ["docs/keep.txt", "docs/drop.txt", "docs/sub/x", "other/keep.txt", "top"])
    rules = ignore("docs\nother\n!docs/keep.txt\n")
    assert walked(rules, tmp_path) == ["docs", "docs/keep.txt", "top"]


def test_walk_with_a_wildcard_exception(tmp_path: Path) -> None:
    make_tree(tmp_path, ["a/one.keep", "a/b/two.keep", "a/b/three.drop", "c.drop"])
    rules = ignore("*\n!**/*.keep\n")
    assert walked(rules, tmp_path) == ["a", "a/b", "a/b/two.keep", "a/one.keep"]


def test_read_prefers_the_dockerfile_specific_ignore_file(tmp_path: Path) -> None:
    make_tree(tmp_path, ["ctx/.dockerignore", "build/app.Dockerfile", "build/app.Dockerfile.dockerignore"])
    context, dockerfile = tmp_path / "ctx", tmp_path / "build/app.Dockerfile"
    (context / ".dockerignore").write_text("from-context\n")
    (tmp_path / "build/app.Dockerfile.dockerignore").write_text("from-dockerfile\n")
    assert DockerIgnore.read(context, dockerfile).patterns == ("from-dockerfile",)
    assert DockerIgnore.read(context, tmp_path / "build/other.Dockerfile").patterns == ("from-context",)
    assert DockerIgnore.read(context).patterns == ("from-context",)
    assert DockerIgnore.read(tmp_path / "build").patterns == ()


def test_read_reports_the_file_in_errors(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("ok\n[x\n")
    with pytest.raises(DockerIgnoreError) as info:
        DockerIgnore.read(tmp_path)
    assert (info.value.file, info.value.line) == (str(tmp_path / ".dockerignore"), 2)
