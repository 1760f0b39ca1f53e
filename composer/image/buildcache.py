"""The build cache: which image a build step produced, found by a key over everything the step depends on.

    <layout.cache>/build/<key>    {"image": "sha256:...", "step": "RUN ..."}

The key (`step_key`) is a sha256 over the parent (the layer chain and the whole image config at that
point: env, workdir, user, shell...), the instruction's canonical text with its substitutions done, the
build args in scope where the step sees them (RUN), and for COPY/ADD a content hash of the selected
sources. The value names an untagged image in the store whose top layer is the step's result.
Entries are written by rename (never half-seen) and checked on use: an entry whose image was pruned
(`composer image prune` deletes untagged images, so it empties the cache) or lost a layer is a miss.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from composer.image.config import ImageConfig
from composer.image.store import Image, ImageStore

__all__ = ["BuildCache", "step_key"]

_VERSION = "composer-build-cache-1"


def step_key(
    *,
    diff_ids: Sequence[str],
    config: ImageConfig,
    step: str,
    args: Sequence[tuple[str, str]] = (),
    content: str = "",
) -> str:
    data: dict[str, Any] = {
        "v": _VERSION,
        "layers": list(diff_ids),
        "config": config.to_oci(),
        "step": step,
        "args": [list(pair) for pair in args],
        "content": content,
    }
    raw = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()


class BuildCache:
    def __init__(self, store: ImageStore) -> None:
        self.store = store
        self.folder = store.layout.cache / "build"

    def _path(self, key: str) -> Path:
        if len(key) != 64 or any(ch not in "0123456789abcdef" for ch in key):
            raise ValueError(f"not a cache key: {key!r}")
        return self.folder / key

    def get(self, key: str) -> Image | None:
        """The image stored for `key`, if it and all of its layers are still in the store."""
        try:
            data = json.loads(self._path(key).read_bytes())
        except (FileNotFoundError, ValueError):
            return None
        image_id = data.get("image") if isinstance(data, dict) else None
        if not isinstance(image_id, str) or not image_id.startswith("sha256:"):
            return None
        image = self.store.resolve(image_id)
        if image is None or image.id != image_id:
            return None
        if not all(self.store.has_layer(digest) for digest in image.diff_ids):
            return None
        return image

    def put(self, key: str, image: Image, step: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".put-")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump({"image": image.id, "step": step}, handle)
            os.rename(tmp, self._path(key))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def image_ids(self) -> set[str]:
        """The images the cache names (intermediate build steps; `image ls` hides them unless -a)."""
        out: set[str] = set()
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return out
        for name in names:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                image_id = json.loads((self.folder / name).read_bytes()).get("image")
                if isinstance(image_id, str):
                    out.add(image_id)
        return out

    def prune(self) -> int:
        """Drop entries whose image is gone; returns how many."""
        dropped = 0
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return 0
        for name in names:
            if name.startswith("."):
                continue
            with contextlib.suppress(ValueError):
                if self.get(name) is None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.folder / name)
                    dropped += 1
        return dropped
