"""Builders of real image archives for the image tests: layer tars (with `.wh.` whiteouts and opaque
folders), `docker save` tarballs and OCI image layouts, written by the tests themselves.

The tests at the bottom check the builders against the formats' own rules (digests, file names)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str = "file"  # file, dir, symlink, hardlink, chr, fifo
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    link: str = ""
    device: tuple[int, int] = (0, 0)
    xattrs: dict[str, bytes] = field(default_factory=dict)
    mtime: int = 1_700_000_000


def f(name: str, data: bytes | str = b"", **kw: Any) -> Entry:
    return Entry(name, "file", data.encode() if isinstance(data, str) else data, **kw)


def d(name: str, mode: int = 0o755, **kw: Any) -> Entry:
    return Entry(name, "dir", mode=mode, **kw)


def sym(name: str, target: str) -> Entry:
    return Entry(name, "symlink", link=target, mode=0o777)


def hard(name: str, target: str) -> Entry:
    return Entry(name, "hardlink", link=target)


def whiteout(path: str) -> Entry:
    folder, _, base = path.rpartition("/")
    return f(f"{folder}/.wh.{base}" if folder else f".wh.{base}")


def opaque(folder: str) -> Entry:
    return f(f"{folder}/.wh..wh..opq")


def layer_tar(entries: Sequence[Entry]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.mode, info.uid, info.gid, info.mtime = entry.mode, entry.uid, entry.gid, entry.mtime
            if entry.xattrs:
                info.pax_headers = {
                    "SCHILY.xattr." + k: v.decode("utf-8", "surrogateescape") for k, v in entry.xattrs.items()
                }
            payload = None
            if entry.kind == "file":
                info.size = len(entry.data)
                payload = io.BytesIO(entry.data)
            elif entry.kind == "dir":
                info.type = tarfile.DIRTYPE
            elif entry.kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, entry.link
            elif entry.kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, entry.link
            elif entry.kind == "chr":
                info.type = tarfile.CHRTYPE
                info.devmajor, info.devminor = entry.device
            elif entry.kind == "fifo":
                info.type = tarfile.FIFOTYPE
            tar.addfile(info, payload)
    return buffer.getvalue()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# The two-layer image of the tests: the upper layer deletes a file and replaces a folder opaquely.
LOWER = [
    d("etc"),
    f("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
    f("etc/removed.txt", "to be deleted\n"),
    d("app"),
    f("app/old1", "old one\n"),
    d("app/sub"),
    f("app/sub/deep", "deep\n"),
    d("bin"),
    f("bin/tool", "#!/bin/sh\necho tool\n", mode=0o4755, uid=1000, gid=2000),
    sym("bin/link", "tool"),
    hard("bin/hard", "bin/tool"),
    f("data.txt", "with an xattr\n", xattrs={"user.origin": b"lower"}),
]
UPPER = [
    d("etc"),
    whiteout("etc/removed.txt"),
    f("etc/added", "new\n"),
    d("app", mode=0o750),
    opaque("app"),
    f("app/new", "new in app\n"),
]


def image_config(diff_ids: Sequence[str], **config: Any) -> dict[str, Any]:
    return {
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-02T03:04:05.123456789Z",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], **config},
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": [{"created_by": f"step {i}"} for i in range(len(diff_ids))],
    }


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
    tar.addfile(info, io.BytesIO(data))


def docker_save(
    path: Path,
    layers: Sequence[bytes],
    *,
    repo_tags: Sequence[str] = ("example/app:1.0",),
    config: dict[str, Any] | None = None,
    duplicate_as_symlink: bool = False,
) -> str:
    """A `docker save` tarball (the classic layout: <id>/layer.tar, <id>.json, manifest.json); returns
    the image id. With `duplicate_as_symlink`, a repeated layer is a symlink as docker writes it."""
    diff_ids = [sha(layer) for layer in layers]
    raw = json.dumps(config or image_config(diff_ids)).encode()
    image_id = sha(raw)
    names: list[str] = []
    with tarfile.open(path, "w") as tar:
        seen: dict[str, str] = {}
        for index, layer in enumerate(layers):
            folder = hashlib.sha256(f"{index}{diff_ids[index]}".encode()).hexdigest()
            name = f"{folder}/layer.tar"
            if duplicate_as_symlink and diff_ids[index] in seen:
                info = tarfile.TarInfo(name)
                info.type, info.linkname = tarfile.SYMTYPE, f"../{seen[diff_ids[index]]}"
                tar.addfile(info)
            else:
                _add(tar, name, layer)
                seen[diff_ids[index]] = name
            names.append(name)
        _add(tar, f"{image_id[7:]}.json", raw)
        manifest = [{"Config": f"{image_id[7:]}.json", "RepoTags": list(repo_tags), "Layers": names}]
        _add(tar, "manifest.json", json.dumps(manifest).encode())
    return image_id


def oci_layout(
    target: Path,
    layers: Sequence[bytes],
    *,
    ref_name: str | None = "example/oci:2.0",
    as_tar: bool = False,
    compress: bool = True,
    nested_index: bool = False,
    config: dict[str, Any] | None = None,
) -> str:
    """An OCI image layout (gzip layers unless told otherwise) as a folder or a tar; returns the id."""
    blobs: dict[str, bytes] = {}

    def blob(data: bytes) -> str:
        digest = sha(data)
        blobs[digest] = data
        return digest

    diff_ids = [sha(layer) for layer in layers]
    raw = json.dumps(config or image_config(diff_ids)).encode()
    layer_descs = []
    for layer in layers:
        data = gzip.compress(layer, mtime=0) if compress else layer
        media = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if compress else "")
        layer_descs.append({"mediaType": media, "digest": blob(data), "size": len(data)})
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": blob(raw),
            "size": len(raw),
        },
        "layers": layer_descs,
    }
    manifest_raw = json.dumps(manifest).encode()
    descriptor: dict[str, Any] = {
        "mediaType": manifest["mediaType"], "digest": blob(manifest_raw), "size": len(manifest_raw),
        "platform": {"architecture": "amd64", "os": "linux"},
    }  # fmt: skip
    if nested_index:
        other = {"mediaType": manifest["mediaType"], "digest": "sha256:" + "0" * 64, "size": 1,
                 "platform": {"architecture": "s390x", "os": "linux"}}  # fmt: skip
        inner = json.dumps({"schemaVersion": 2, "manifests": [other, descriptor]}).encode()
        descriptor = {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": blob(inner),
                      "size": len(inner)}  # fmt: skip
    if ref_name:
        descriptor["annotations"] = {"org.opencontainers.image.ref.name": ref_name}
    files = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps({"schemaVersion": 2, "manifests": [descriptor]}).encode(),
        **{f"blobs/sha256/{digest[7:]}": data for digest, data in blobs.items()},
    }
    if as_tar:
        with tarfile.open(target, "w") as tar:
            for name, data in files.items():
                _add(tar, name, data)
    else:
        for name, data in files.items():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes(data)
    return sha(raw)


# --- the builders follow the formats ---------------------------------------------------------------


def test_docker_save_names_the_config_by_its_digest(tmp_path: Path) -> None:
    image_id = docker_save(tmp_path / "x.tar", [layer_tar(LOWER), layer_tar(UPPER)])
    with tarfile.open(tmp_path / "x.tar") as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        raw = tar.extractfile(manifest[0]["Config"]).read()  # type: ignore[union-attr]
        layer = tar.extractfile(manifest[0]["Layers"][1]).read()  # type: ignore[union-attr]
    assert sha(raw) == image_id
    assert json.loads(raw)["rootfs"]["diff_ids"][1] == sha(layer)


def test_oci_layout_blobs_match_their_names(tmp_path: Path) -> None:
    oci_layout(tmp_path, [layer_tar(LOWER)], nested_index=True)
    for blob in (tmp_path / "blobs/sha256").iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["manifests"][0]["mediaType"].endswith("index.v1+json")
