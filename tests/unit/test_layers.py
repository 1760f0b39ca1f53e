"""The import rules of DESIGN.md hold by themselves: this test reads every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "composer"


def _modules() -> dict[str, tuple[set[str], set[str]]]:
    """module name -> (imports at module level, imports anywhere)."""
    out: dict[str, tuple[set[str], set[str]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(part for part in rel.parts if part != "__init__")
        tree = ast.parse(path.read_text(), str(path))
        top: set[str] = set()
        anywhere: set[str] = set()
        for node in ast.walk(tree):
            found: list[str] = []
            if isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                base = node.module
                if node.level:
                    parent = name.split(".")[: -node.level] if path.name != "__init__.py" else name.split(".")
                    base = ".".join([*parent, node.module])
                found = [base]
            anywhere.update(found)
            if found and node in tree.body:
                top.update(found)
        out[name] = (top, anywhere)
    return out


MODULES = _modules()


def _composer_imports(names: set[str]) -> set[str]:
    return {n for n in names if n == "composer" or n.startswith("composer.")}


def test_package_was_found() -> None:
    assert "composer.spec.source" in MODULES and "composer.cli" in MODULES


def test_leaves_import_nothing_of_ours() -> None:
    for leaf in ("composer.errors", "composer.log", "composer.dataclass_cache"):
        assert _composer_imports(MODULES[leaf][1]) == set(), leaf


def test_spec_is_pure() -> None:
    forbidden = {"trio", "pyroute2", "structlog", "subprocess", "socket", "ctypes", "threading"}
    for name, (_, anywhere) in MODULES.items():
        if not name.startswith("composer.spec"):
            continue
        ours = _composer_imports(anywhere)
        assert all(m.startswith("composer.spec") or m == "composer.errors" for m in ours), (name, ours)
        assert not {m.split(".")[0] for m in anywhere} & forbidden, (name, anywhere)


def test_arrows_point_down() -> None:
    """cli -> app -> engine -> spec; engine -> (image, network) -> runtime -> storage: never upward.

    The image builder runs RUN steps in containers and the network layer enters namespaces through
    runtime.libc, so both sit above the runtime; the layout (only paths) is the bottom."""
    rank = {"__main__": -1, "cli": 0, "app": 1, "engine": 2, "spec": 3, "image": 4, "network": 4,
            "runtime": 5, "storage": 6, "options": 9, "errors": 9, "log": 9, "composer": 9,
            "dataclass_cache": 10}  # fmt: skip
    for name, (_, anywhere) in MODULES.items():
        layer = name.split(".")[1] if "." in name else "composer"
        for target in _composer_imports(anywhere):
            tlayer = target.split(".")[1] if "." in target else "composer"
            if tlayer == layer:
                continue
            assert rank[tlayer] > rank[layer], f"{name} imports {target}: the arrow points up"


def test_heavy_imports_are_lazy_in_the_cli() -> None:
    top, _ = MODULES["composer.cli"]
    heavy = {"trio", "pyroute2", "structlog", "yaml", "jsonschema"}
    assert not {m.split(".")[0] for m in top} & heavy
    assert not {
        m for m in _composer_imports(top) if m not in ("composer", "composer.errors", "composer.options")
    }


def test_kernel_libraries_have_one_home() -> None:
    for name, (_, anywhere) in MODULES.items():
        roots = {m.split(".")[0] for m in anywhere}
        if "pyroute2" in roots:
            assert name.startswith("composer.network"), name
        if "ctypes" in roots:
            assert name == "composer.runtime.libc", name
