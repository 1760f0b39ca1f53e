"""Property test: whatever the document, the loader either loads it or raises a located SpecError.

About 10,000 documents in all go through the whole pipeline (`composer.spec.loader.load_project`:
YAML, interpolation, include/extends, merge, validation, normalization, profiles, cycles):

- mutated corpus trees (tests/corpus/compose): keys deleted, duplicated, renamed, values retyped
  or replaced by random scalars, containers turned into scalars and back;
- mutated corpus text: lines deleted, duplicated, swapped, re- or mis-indented, truncated, random
  characters and YAML syntax (anchors, aliases, tags, `<<`, flow collections, block scalars, `---`)
  spliced in;
- random compose-shaped documents (known keys, random values) and random text/bytes.

Each example must either load or raise `composer.errors.SpecError` whose rendered text is one line
starting with `file:line:col`. Any other exception fails the test. The corpus projects (their .env,
env_file, extends and include files) are served from memory through the loader's `Files` protocol,
so nothing touches the disk except `test_random_bytes_from_disk`, which goes through `LocalFiles`.
Deterministic: hypothesis runs derandomized, without an example database.
"""

from __future__ import annotations

import copy
import posixpath
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from composer.errors import ConfigFileNotFound, SpecError
from composer.spec.loader import LoadOptions, load_project
from composer.spec.source import Override, Reset, load_documents

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "compose"
ROOT = "/fuzz"
COMPOSE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")
ENVIRON = {"HOME": "/fuzz-home", "CORPUS_OS_VAR": "from-os", "PATH": "/usr/bin:/bin"}

# Split of the ~10,000 examples; each property also stops early if it runs out of new inputs.
N_TREE, N_TEXT, N_RANDOM_DOC, N_RANDOM_TEXT, N_DISK = 3500, 3500, 2000, 1000, 300

LOCATED = re.compile(r"^\S.*?:\d+:\d+(: |$)")


# --- the corpus, in memory ---------------------------------------------------------------------------


def _read_corpus() -> dict[str, dict[str, str]]:
    """{project: {absolute virtual path: text}} for every text file of every corpus project."""
    projects: dict[str, dict[str, str]] = {}
    for folder in sorted(p for p in CORPUS.iterdir() if p.is_dir()):
        files: dict[str, str] = {}
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                files[posixpath.join(ROOT, folder.name, path.relative_to(folder).as_posix())] = (
                    path.read_text()
                )
        if any(posixpath.join(ROOT, folder.name, name) in files for name in COMPOSE_NAMES):
            projects[folder.name] = files
    return projects


PROJECTS = _read_corpus()
NAMES = sorted(PROJECTS)


def _main_file(project: str) -> str:
    for name in COMPOSE_NAMES:
        path = posixpath.join(ROOT, project, name)
        if path in PROJECTS[project]:
            return path
    raise AssertionError(project)


class MemoryFiles:
    """The loader's `Files` over a dict; answers like `LocalFiles` for what is missing."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files = files
        self.dirs = {posixpath.dirname(p) for p in files}
        for d in list(self.dirs):
            while d not in ("/", ""):
                d = posixpath.dirname(d)
                self.dirs.add(d)

    def read_text(self, path: str) -> str:
        if path in self.files:
            return self.files[path]
        if path in self.dirs:
            raise SpecError(f"{path}: is a directory, not a file")
        raise ConfigFileNotFound(f"{path}: no such file or directory")

    def is_file(self, path: str) -> bool:
        return path in self.files


def _plain(value: Any) -> Any:
    if isinstance(value, Override):
        return _plain(value.value)
    if isinstance(value, Reset):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


TREES = {
    name: [_plain(doc) for doc in load_documents(PROJECTS[name][_main_file(name)], "x")] for name in NAMES
}
LINES = sorted({line for files in PROJECTS.values() for text in files.values() for line in text.splitlines()})


# --- the check every example goes through -------------------------------------------------------------


def load_text(text: str, project: str | None = None) -> None:
    """Load `text` as the main compose file of `project` (or of an empty folder); assert the outcome."""
    files = dict(PROJECTS[project]) if project else {}
    main = _main_file(project) if project else posixpath.join(ROOT, "empty", "compose.yaml")
    files[main] = text
    check(lambda: _load(main, files))


def _load(main: str, files: dict[str, str]) -> None:
    warnings: list[str] = []
    options = LoadOptions(cwd=posixpath.dirname(main), environ=ENVIRON, files=(main,))
    load_project(options, warnings.append, MemoryFiles(files))


def check(load: Callable[[], None]) -> None:
    try:
        load()
    except SpecError as exc:
        rendered = exc.render()
        assert LOCATED.match(rendered), f"SpecError without file:line:col: {rendered!r}"
        assert "\n" not in rendered, f"SpecError on several lines: {rendered!r}"


# --- value strategies -----------------------------------------------------------------------------------


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


SERVICE_KEYS = _words(
    "image build command entrypoint environment env_file ports expose volumes volumes_from depends_on "
    "healthcheck networks network_mode secrets configs labels restart deploy profiles extends "
    "container_name hostname user working_dir logging ulimits sysctls tmpfs extra_hosts dns "
    "cap_add devices stop_grace_period stop_signal scale links init read_only shm_size develop"
)
TOP_KEYS = ("name", "services", "networks", "volumes", "secrets", "configs", "include", "version", "x-ext")
RESOURCE_KEYS = _words(
    "driver driver_opts external name labels ipam internal file environment content device o type"
)
LONG_KEYS = _words(
    "target published protocol host_ip mode source type read_only condition required restart test "
    "interval timeout retries start_period disable context dockerfile args aliases ipv4_address "
    "service file path bind volume tmpfs size soft hard uid gid"
)
KEYS = (*SERVICE_KEYS, *TOP_KEYS, *RESOURCE_KEYS, *LONG_KEYS, "<<", "web", "db", "default", "x-y")

TRICKY = (
    "",
    " ",
    "~",
    "null",
    "true",
    "yes",
    "on",
    "0",
    "-1",
    "0x1F",
    "1e400",
    ".inf",
    "nan",
    "20:20",
    "80:80",
    "127.0.0.1:8080:80/udp",
    "[::1]:53:53",
    "99999:80",
    "8000-8010:80-90",
    "a:b:c:d",
    "./data:/data:ro",
    "vol:/x:z,ro",
    "~/x:/y",
    "/abs",
    "../..",
    "..",
    "/",
    ".",
    "service:web",
    "container:x",
    "host",
    "none",
    "${X}",
    "${X:-d}",
    "${X:?boom}",
    "${X:+alt}",
    "$$",
    "$",
    "${",
    "${X:-${Y:-z}}",
    "$X",
    "${1}",
    "${X:?}",
    "always",
    "on-failure:3",
    "unless-stopped",
    "no",
    "1m30s",
    "10",
    "1.5",
    "512m",
    "1g",
    "CMD",
    "CMD-SHELL",
    "NONE",
    "service_healthy",
    "web",
    "db",
    "default",
    "external",
    "bind",
    "volume",
    "tmpfs",
    "\t",
    "a\nb",
    "é",
    "\u2028",
    "#",
    "&a",
    "*a",
    "!!str",
    "KEY=value",
    "KEY",
    "=x",
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(TRICKY),
    st.text(max_size=12),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(min_size=1, max_size=8))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(keys, inner, max_size=4),
    ),
    max_leaves=8,
)

# --- tree mutations ----------------------------------------------------------------------------------------


def _slots(tree: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every (path to a container, key or index) in `tree`, in a stable order."""
    out: list[tuple[Any, ...]] = []
    if isinstance(tree, dict):
        for key in tree:
            out.append((*path, key))
            out.extend(_slots(tree[key], (*path, key)))
    elif isinstance(tree, list):
        for index, item in enumerate(tree):
            out.append((*path, index))
            out.extend(_slots(item, (*path, index)))
    return out


def _parent(tree: Any, slot: tuple[Any, ...]) -> Any:
    node = tree
    for part in slot[:-1]:
        node = node[part]
    return node


def mutate_tree(tree: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    slots = _slots(tree)
    if not slots:
        return data.draw(st.dictionaries(keys, values, max_size=3))
    slot = data.draw(st.sampled_from(slots))
    parent, last = _parent(tree, slot), slot[-1]
    op = data.draw(st.sampled_from(("delete", "retype", "duplicate", "rename", "wrap", "unwrap", "add")))
    if op == "delete":
        del parent[last]
    elif op == "retype":
        parent[last] = data.draw(values)
    elif op == "duplicate":
        if isinstance(parent, list):
            parent.insert(last, copy.deepcopy(parent[last]))
        else:
            parent[data.draw(keys)] = copy.deepcopy(parent[last])
    elif op == "rename" and isinstance(parent, dict):
        parent[data.draw(keys)] = parent.pop(last)
    elif op == "wrap":
        if data.draw(st.booleans()):
            parent[last] = [parent[last]]
        else:
            parent[last] = {data.draw(keys): parent[last]}
    elif op == "unwrap" and isinstance(parent[last], dict | list) and parent[last]:
        inner = parent[last]
        parent[last] = next(iter(inner.values())) if isinstance(inner, dict) else inner[0]
    elif op == "add":
        target = parent[last]
        if isinstance(target, dict):
            target[data.draw(keys)] = data.draw(values)
        elif isinstance(target, list):
            target.append(data.draw(values))
        else:
            parent[last] = data.draw(values)
    return tree


def _dump(docs: list[Any]) -> str:
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump_all(docs, Dumper=dumper, sort_keys=False, allow_unicode=True, default_flow_style=False)


# --- text mutations --------------------------------------------------------------------------------------

SNIPPETS = (
    "&anchor ",
    "*anchor",
    "*missing",
    "<<: *anchor\n",
    "<<: [*a, *b]\n",
    "!!int ",
    "!!str ",
    "!!float ",
    "!!bool ",
    "!!binary ",
    "!!timestamp ",
    "!!set ",
    "!!omap ",
    "!!python/object:os.system ",
    "!reset ",
    "!override ",
    "!custom ",
    "? complex\n: key\n",
    "{",
    "}",
    "[",
    "]",
    "{a: 1, b: [2, 3]}",
    "|\n  block\n",
    ">-\n  folded\n",
    "---\n",
    "...\n",
    "%YAML 1.2\n---\n",
    "%TAG ! tag:x,2000:\n",
    "\t",
    "  ",
    "- ",
    ": ",
    "#",
    "'",
    '"',
    "\\",
    "\ufeff",
    "\x00",
    "\x85",
    "\u2028",
    "${",
    "$$",
    "x-a: &a {k: v}\n",
    "services:\n",
    "services: []\n",
    "  web:\n    image: x\n",
    "    extends: web\n",
    "    depends_on: [web]\n",
    "&a [*a]",
    "a: &x [*x]\n",
    "include:\n  - ./nope.yaml\n",
)


def mutate_text(text: str, data: st.DataObject) -> str:
    lines = text.splitlines(keepends=True) or [""]
    op = data.draw(
        st.sampled_from(
            ("delete", "duplicate", "swap", "indent", "dedent", "snippet", "chars", "truncate", "line")
        )
    )
    i = data.draw(st.integers(0, len(lines) - 1))
    if op == "delete":
        del lines[i]
    elif op == "duplicate":
        lines.insert(i, lines[i])
    elif op == "swap":
        j = data.draw(st.integers(0, len(lines) - 1))
        lines[i], lines[j] = lines[j], lines[i]
    elif op == "indent":
        lines[i] = " " * data.draw(st.integers(1, 3)) + lines[i]
    elif op == "dedent":
        lines[i] = lines[i][data.draw(st.integers(1, 3)) :]
    elif op in ("snippet", "chars"):
        where = data.draw(st.integers(0, len(lines[i])))
        piece = data.draw(st.sampled_from(SNIPPETS) if op == "snippet" else st.text(min_size=1, max_size=4))
        lines[i] = lines[i][:where] + piece + lines[i][where:]
    elif op == "truncate":
        return "".join(lines)[: data.draw(st.integers(0, len(text)))]
    else:
        lines.insert(i, data.draw(st.sampled_from(LINES)) + "\n")
    return "".join(lines)


# --- the properties --------------------------------------------------------------------------------------

pytestmark = pytest.mark.skipif(not NAMES, reason="empty corpus")
COMMON = {
    "deadline": None,
    "derandomize": True,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
}


def test_corpus_loads_cleanly() -> None:
    """The unmutated corpus goes through the same harness (and loads, if the loader exists)."""
    for name in NAMES:
        load_text(PROJECTS[name][_main_file(name)], name)


@settings(max_examples=N_TREE, **COMMON)
@given(data=st.data())
def test_mutated_corpus_trees(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(NAMES))
    docs = copy.deepcopy(TREES[name]) or [{}]
    for _ in range(data.draw(st.integers(1, 4))):
        docs[0] = mutate_tree(docs[0], data)
    load_text(_dump(docs), name)


@settings(max_examples=N_TEXT, **COMMON)
@given(data=st.data())
def test_mutated_corpus_text(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(NAMES))
    text = PROJECTS[name][_main_file(name)]
    for _ in range(data.draw(st.integers(1, 4))):
        text = mutate_text(text, data)
    load_text(text, name)


service = st.dictionaries(st.sampled_from(SERVICE_KEYS), values, max_size=6)
resource = st.one_of(st.none(), st.dictionaries(st.sampled_from(RESOURCE_KEYS), values, max_size=3))
section = st.dictionaries(st.sampled_from(("web", "db", "default", "data")), resource, max_size=3)
compose_doc = st.fixed_dictionaries(
    {"services": st.dictionaries(st.sampled_from(("web", "db", "worker")), service, min_size=1, max_size=3)},
    optional={
        "networks": section,
        "volumes": section,
        "secrets": section,
        "configs": section,
        "name": st.one_of(st.sampled_from(("demo", "Bad Name", "___", "")), st.text(max_size=6)),
        "x-anything": values,
    },
)


@settings(max_examples=N_RANDOM_DOC, **COMMON)
@given(doc=compose_doc, project=st.sampled_from(NAMES))
def test_random_compose_documents(doc: dict[str, Any], project: str) -> None:
    load_text(_dump([doc]), project)


random_text = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
    st.lists(st.sampled_from(SNIPPETS + tuple(LINES[:400])), max_size=12).map("".join),
    st.lists(st.sampled_from(LINES), max_size=20).map("\n".join),
)


@settings(max_examples=N_RANDOM_TEXT, **COMMON)
@given(text=random_text)
def test_random_text(text: str) -> None:
    load_text(text)


@pytest.fixture(scope="module")
def disk_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-disk")


@settings(max_examples=N_DISK, **COMMON)
@given(
    raw=st.one_of(
        st.binary(max_size=120),
        st.tuples(st.sampled_from(LINES), st.binary(max_size=8)).map(lambda t: t[0].encode() + b"\n" + t[1]),
        st.sampled_from((b"\xef\xbb\xbfservices: {a: {image: x}}\n", b"services:\n  a:\n    image: \xff\n")),
    )
)
def test_random_bytes_from_disk(raw: bytes, disk_dir: Path) -> None:
    """Bytes that may not be UTF-8, read by the real `LocalFiles`."""
    path = disk_dir / "compose.yaml"
    path.write_bytes(raw)
    options = LoadOptions(cwd=str(disk_dir), environ=ENVIRON, files=(str(path),))
    check(lambda: load_project(options, lambda _m: None))


def test_check_rejects_unlocated_errors() -> None:
    """The harness itself can fail: an error without a location, or a foreign exception."""

    def unlocated() -> None:
        raise SpecError("no location")

    def foreign() -> None:
        raise KeyError("x")

    with pytest.raises(AssertionError):
        check(unlocated)
    with pytest.raises(KeyError):
        check(foreign)
    check(lambda: None)


def test_mutations_change_the_document() -> None:
    """Guard against a mutator that silently does nothing."""
    changed = 0

    @settings(max_examples=50, **COMMON)
    @given(data=st.data())
    def probe(data: st.DataObject) -> None:
        nonlocal changed
        name = data.draw(st.sampled_from(NAMES))
        before = PROJECTS[name][_main_file(name)]
        if mutate_text(before, data) != before:
            changed += 1

    probe()
    assert changed > 25
