"""Every path composer writes under its root, from one place.

The root is /var/lib/composer unless `COMPOSER_ROOT` or `--root` says otherwise; it is passed down
explicitly (DESIGN.md rule 8: no global state). Nothing here creates anything except `ensure()`.

    <root>/images/layers/<hex>/        one unpacked layer (an overlayfs lower dir), named by digest
    <root>/images/layers/<hex>.json    the layer's metadata (diff_id, size, created)
    <root>/images/configs/<hex>.json   an image: OCI image config + its layer list; <hex> is the image id
    <root>/images/tags.json            name:tag -> image id
    <root>/images/cache/               the build cache and the base-image bootstrap cache
    <root>/tmp/                        staging: things are built here and renamed into place atomically
    <root>/containers/<id>/            a container's writable layer (upper/, work/), rootfs mount point
                                       (rootfs/), and its /etc/hostname, /etc/hosts, /etc/resolv.conf
    <root>/volumes/<name>/_data        named volumes (the local driver)
    <root>/projects/<project>/         per-project state and the supervisor's socket
    <root>/locks/                      lock files (image store, IPAM)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ROOT = "/var/lib/composer"


def root_from(environ: Mapping[str, str], flag: str | None = None) -> Path:
    """`--root` wins over COMPOSER_ROOT, which wins over the default."""
    return Path(flag or environ.get("COMPOSER_ROOT") or DEFAULT_ROOT).absolute()


@dataclass(frozen=True, slots=True)
class Layout:
    root: Path

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def layers(self) -> Path:
        return self.images / "layers"

    @property
    def image_configs(self) -> Path:
        return self.images / "configs"

    @property
    def tags_file(self) -> Path:
        return self.images / "tags.json"

    @property
    def cache(self) -> Path:
        return self.images / "cache"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def containers(self) -> Path:
        return self.root / "containers"

    @property
    def volumes(self) -> Path:
        return self.root / "volumes"

    @property
    def projects(self) -> Path:
        return self.root / "projects"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    def layer_dir(self, digest: str) -> Path:
        return self.layers / _hex(digest)

    def layer_meta(self, digest: str) -> Path:
        return self.layers / f"{_hex(digest)}.json"

    def image_config(self, image_id: str) -> Path:
        return self.image_configs / f"{_hex(image_id)}.json"

    def container_dir(self, container_id: str) -> Path:
        return self.containers / container_id

    def volume_data(self, name: str) -> Path:
        return self.volumes / name / "_data"

    def project_dir(self, project: str) -> Path:
        return self.projects / project

    def ensure(self) -> Layout:
        """Create the top-level folders (mode 0700 for the root, like Docker's)."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        for path in (self.layers, self.image_configs, self.cache, self.tmp, self.containers,
                     self.volumes, self.projects, self.locks):  # fmt: skip
            path.mkdir(parents=True, exist_ok=True)
        return self


def _hex(digest: str) -> str:
    """`sha256:abc...` or `abc...` -> `abc...` (refusing anything that could escape the folder)."""
    value = digest.split(":", 1)[1] if ":" in digest else digest
    if not value or any(ch not in "0123456789abcdef" for ch in value):
        raise ValueError(f"not a hex digest: {digest!r}")
    return value
