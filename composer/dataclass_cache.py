"""The bytecode of the methods `@dataclass` writes, kept between runs like Python's own .pyc files.

The dataclasses module writes each class's `__init__`, `__repr__`, `__eq__`, `__setattr__`... as
source text and compiles it while the class's module is imported. composer has ~185 dataclasses:
compiling their methods was 65 ms of the supervisor's ~190 ms of imports (which every `up` waits for)
and 10-25 ms of each command's. Python caches the bytecode of modules in __pycache__, not of this
text; this module does, in one file there: the code compiled from each exact text, so that a text
that changes is simply compiled again (stale entries are never used, only dropped).

`install()` (first thing in composer/__init__.py) makes the dataclasses module's `exec` look the
text up before compiling it; `save()` writes what was compiled anew, once a command's or the
supervisor's imports are done; `warm()` imports every module and saves (`make install` runs it).
Without a writable folder it only costs the compiles it always did.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import marshal
import os
import sys
from importlib.util import MAGIC_NUMBER
from types import CodeType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

__all__ = ["install", "save", "warm"]

PATH = os.path.join(
    os.path.dirname(__file__), "__pycache__", f"dataclass-methods.{sys.implementation.cache_tag}.bin"
)

# The file: MAGIC_NUMBER + marshal({module name: marshal({text: code})}); a module's part is decoded
# when that module first defines a dataclass, so a command pays only for the modules it imports.
_raw: dict[str, bytes] = {}
_codes: dict[str, dict[str, CodeType]] = {}  # by module, once decoded
_used: dict[str, set[str]] = {}  # the texts this process looked up, by module
_changed: set[str] = set()  # modules with a text compiled anew: saved with only the texts used


def _module_codes(module: str) -> dict[str, CodeType]:
    codes = _codes.get(module)
    if codes is None:
        codes = {}
        raw = _raw.get(module)
        if raw is not None:
            try:
                loaded = marshal.loads(raw)
            except (ValueError, EOFError, TypeError):
                loaded = None
            if isinstance(loaded, dict):
                codes = {k: v for k, v in loaded.items() if isinstance(k, str) and isinstance(v, CodeType)}
        _codes[module] = codes
    return codes


def _exec(source: Any, globals: dict[str, Any] | None = None, locals: Any = None, /) -> None:
    """`exec` as dataclasses calls it, with the text's code from the cache. Compiled as dataclasses'
    own `exec(text)` compiles it: no __future__ flags (this module's `annotations` must not leak)."""
    scope = vars(dataclasses) if globals is None else globals
    if isinstance(source, str):
        module = str(scope.get("__name__", ""))
        codes = _module_codes(module)
        code = codes.get(source)
        if code is None:
            code = compile(source, "<string>", "exec", dont_inherit=True)
            codes[source] = code
            _changed.add(module)
        _used.setdefault(module, set()).add(source)
        source = code
    builtins.exec(source, scope, locals)


def install() -> None:
    """Read the file and hook dataclasses' `exec` (once)."""
    if getattr(dataclasses, "exec", None) is _exec:
        return
    _read()
    dataclasses.exec = _exec  # type: ignore[attr-defined]


def _read() -> None:
    """The file's parts into `_raw`, if it is this Python's; else nothing (none yet, unreadable or
    damaged: classes are compiled as Python does)."""
    try:
        with open(PATH, "rb") as handle:
            data = handle.read()
        if data.startswith(MAGIC_NUMBER):
            loaded = marshal.loads(data[len(MAGIC_NUMBER) :])
            if isinstance(loaded, dict):
                _raw.update((k, v) for k, v in loaded.items() if isinstance(k, str) and isinstance(v, bytes))
    except (OSError, ValueError, EOFError, TypeError):
        pass


def save(*, force: bool = False) -> None:
    """Write the file if this process compiled anything new (atomically; any error is ignored),
    unless Python writes no bytecode here (PYTHONDONTWRITEBYTECODE, -B) and not `force`. A module
    with a new text keeps only the texts this process used: its classes as they are now."""
    if not _changed or (sys.dont_write_bytecode and not force):
        return
    out = dict(_raw)
    for module in _changed:
        used = _used.get(module, set())
        out[module] = marshal.dumps({k: v for k, v in _codes[module].items() if k in used})
    temporary = f"{PATH}.{os.getpid()}"
    try:
        os.makedirs(os.path.dirname(PATH), exist_ok=True)
        with open(temporary, "wb") as handle:
            handle.write(MAGIC_NUMBER + marshal.dumps(out))
        os.replace(temporary, PATH)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        return
    _raw.update((module, out[module]) for module in _changed)
    _changed.clear()


def warm() -> int:
    """Import every composer module (not `__main__`, which runs the command line) and save, whatever
    PYTHONDONTWRITEBYTECODE says (as compileall does); the number of modules. `make install` runs it."""
    import importlib
    import pkgutil

    count = 0
    for module in pkgutil.walk_packages([os.path.dirname(__file__)], "composer."):
        if module.name.rpartition(".")[2] != "__main__":
            importlib.import_module(module.name)
            count += 1
    save(force=True)
    return count
