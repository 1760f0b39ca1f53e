"""The bytecode cache of the methods @dataclass writes: hits, misses, what is saved, and that a class
made from the cache is the class Python would have made."""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from composer import dataclass_cache

_names = itertools.count()

# no `from __future__ import annotations` here: the generated __init__'s annotations are objects
MODULE = """
import dataclasses

@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int = 0

@dataclasses.dataclass
class Box:
    items: list = dataclasses.field(default_factory=list)
"""


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh cache in `tmp_path` (the hook is installed by composer's import; its state is swapped)."""
    path = tmp_path / "dataclass-methods.bin"
    monkeypatch.setattr(dataclass_cache, "PATH", str(path))
    for name in ("_raw", "_codes", "_used"):
        monkeypatch.setattr(dataclass_cache, name, {})
    monkeypatch.setattr(dataclass_cache, "_changed", set())
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    assert dataclasses.exec is dataclass_cache._exec  # type: ignore[attr-defined]
    return path


def new_module(source: str = MODULE, name: str = "") -> tuple[str, types.ModuleType]:
    name = name or f"dc_cache_probe_{next(_names)}"
    module = types.ModuleType(name)
    sys.modules[name] = module
    exec(compile(source, name, "exec", dont_inherit=True), vars(module))
    return name, module


def reload_from_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """As a new process would start: nothing in memory, the file read."""
    for name in ("_raw", "_codes", "_used"):
        monkeypatch.setattr(dataclass_cache, name, {})
    monkeypatch.setattr(dataclass_cache, "_changed", set())
    dataclass_cache._read()


def test_classes_are_saved_and_the_next_import_compiles_nothing(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, first = new_module()
    assert dataclass_cache._changed == {name}
    dataclass_cache.save()
    assert cache.exists() and not dataclass_cache._changed
    reload_from_file(monkeypatch)
    # the same text in another process's module of the same name: every method comes from the file
    _, again = new_module(name=name)
    assert not dataclass_cache._changed and dataclass_cache._used[name]
    point = again.Point(1, 2)
    assert (point, repr(point), hash(point)) == (again.Point(1, 2), "Point(x=1, y=2)", hash((1, 2)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        point.x = 3  # type: ignore[misc]
    assert again.Box().items == [] and again.Box().items is not again.Box().items
    assert repr(first.Point(1)) == "Point(x=1, y=0)"


def test_a_cached_init_is_the_one_python_makes(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Compiled without this module's __future__ flags: annotations stay objects, not strings."""
    with monkeypatch.context() as unhooked:
        unhooked.delattr(dataclasses, "exec")
        _, plain = new_module()  # Python's own
    _, compiled = new_module()
    dataclass_cache.save()
    reload_from_file(monkeypatch)
    _, cached = new_module(name=compiled.__name__)
    assert not dataclass_cache._changed
    for module in (plain, compiled, cached):
        signature = inspect.signature(module.Point.__init__)
        assert signature.parameters["x"].annotation is int
        assert str(signature) == "(self, x: int, y: int = 0) -> None"
        assert module.Point.__init__.__code__.co_filename == "<string>"


def test_an_edited_class_is_compiled_again_and_its_old_text_dropped(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, _ = new_module()
    dataclass_cache.save()
    before = len(dataclass_cache._codes[name])
    reload_from_file(monkeypatch)
    _, module = new_module(MODULE.replace("y: int = 0", "y: int = 0\n    z: str = 'z'"), name=name)
    assert dataclass_cache._changed == {name}
    assert module.Point(1).z == "z"
    dataclass_cache.save()
    reload_from_file(monkeypatch)
    kept = dataclass_cache._module_codes(name)
    assert len(kept) == before  # the texts of the edited module as it is now, not old and new
    assert any("z" in text for text in kept)


def test_a_damaged_or_foreign_file_is_ignored(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for content in (b"", b"\x00\x01garbage", dataclass_cache.MAGIC_NUMBER + b"\xffnot marshal", b"x" * 64):
        cache.write_bytes(content)
        reload_from_file(monkeypatch)
        _, module = new_module()
        assert module.Point(3).x == 3


def test_nothing_is_written_where_python_writes_no_bytecode(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    new_module()
    dataclass_cache.save()
    assert not cache.exists()
    dataclass_cache.save(force=True)  # `make install`'s warm-up writes it anyway, as compileall does
    assert cache.exists()


def test_an_unwritable_folder_costs_nothing_but_the_compiles(tmp_path: Path, cache: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    dataclass_cache.PATH = str(blocker / "sub" / "cache.bin")  # restored by the fixture's monkeypatch
    new_module()
    dataclass_cache.save()  # ENOTDIR, ignored
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_warmed_cache_serves_a_whole_command_line_import(tmp_path: Path) -> None:
    """In a fresh interpreter, once composer's own file is warmed (as `make install` does, in the
    package's __pycache__): importing the command line and the engine compiles no method."""
    script = (
        "import sys, composer.dataclass_cache as c\n"
        "import composer.cli, composer.app.lifecycle as l\n"
        "l._import_engine()\n"
        "print(sorted(m for m in c._changed if m.startswith('composer')))\n"
    )
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    warm = "import composer.dataclass_cache as c; c.warm()"
    subprocess.run([sys.executable, "-c", warm], check=True, env=env)
    out = subprocess.run([sys.executable, "-c", script], check=True, env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "[]"
