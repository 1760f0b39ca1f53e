"""Folders deleted off the critical path: renamed into `<root>/trash/` at once, deleted later.

    trash.discard(layout, layout.container_dir(cid))   # one rename: the folder is gone from its place
    trash.empty(layout)                                 # later, in a worker thread: the deletion itself

A removed container's folder (writable layer, log, fifos, hosts files: ~20 entries) took ~17 ms to
delete in a `down` of 50, one scandir, lstat or unlink at a time, each giving the GIL back to ~40
other threads; the `down` waited for all of them before it answered. A rename is one system call.
The supervisor empties the trash in a worker thread after each removal and once more before it
leaves; what a killed supervisor left there is emptied by the next one, of any project. Several
processes may empty it at once: each deletes what it finds and ignores what another took first.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from pathlib import Path

from composer.storage.layout import Layout


def discard(layout: Layout, path: Path) -> None:
    """Move `path` (a folder on the root's file system) into the trash; nothing if it is gone. Where a
    rename cannot do it (another file system, a trash that is not a folder), it is deleted here and
    now, as far as it can be: like the rmtree it replaces, this never raises."""
    target = layout.trash / f"{path.name}.{secrets.token_hex(4)}"
    for _ in range(2):
        try:
            os.rename(path, target)
            return
        except FileNotFoundError:
            if not path.exists():
                return
            with contextlib.suppress(OSError):
                layout.trash.mkdir(parents=True, exist_ok=True)  # the trash itself was missing
        except OSError:
            break
    shutil.rmtree(path, ignore_errors=True)


def empty(layout: Layout) -> int:
    """Delete everything in the trash; how many entries were there."""
    try:
        entries = os.listdir(layout.trash)
    except FileNotFoundError:
        return 0
    for name in entries:
        path = layout.trash / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return len(entries)
