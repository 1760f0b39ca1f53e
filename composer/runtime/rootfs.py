"""The container's root: an overlay of the image layers and its writable layer; pivot_root. Stdlib only."""

from __future__ import annotations

import os

from composer.runtime import libc

__all__ = ["make_private", "mount_overlay", "overlay_options", "pivot", "remount_read_only"]


def overlay_options(lower_dirs: tuple[str, ...], upper_dir: str, work_dir: str) -> str:
    """overlayfs options; `:` and `,` in paths are escaped as the kernel expects."""

    def esc(path: str) -> str:
        return path.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")

    return (
        f"lowerdir={':'.join(esc(d) for d in lower_dirs)},upperdir={esc(upper_dir)},workdir={esc(work_dir)}"
    )


def make_private() -> None:
    """Nothing we mount may propagate back to the host (`/` is shared on systemd hosts)."""
    libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)


def mount_overlay(rootfs: str, lower_dirs: tuple[str, ...], upper_dir: str, work_dir: str) -> None:
    libc.mount("overlay", rootfs, "overlay", 0, overlay_options(lower_dirs, upper_dir, work_dir))


def remount_read_only(rootfs: str) -> None:
    libc.mount(None, rootfs, None, libc.MS_BIND | libc.MS_REMOUNT | libc.MS_RDONLY)


def pivot(rootfs: str) -> None:
    """pivot_root(".", ".") and detach the old root, which then sits on top of the new one (runc's trick)."""
    os.chdir(rootfs)
    libc.pivot_root(".", ".")
    libc.umount2(".", libc.MNT_DETACH)
    os.chdir("/")
