"""The container's root: an overlay of the image layers and its writable layer; pivot_root. Stdlib only.

Two ways to mount the overlay. mount(2) takes all its options in one page (4 KiB): about 39 layers
with the store's ~100-character layer paths. The new mount API (fsopen, then one `lowerdir+` per layer,
fsmount, move_mount) takes up to the kernel's 500 layers, but `lowerdir+` needs Linux 6.8. Measured
here (research/runtime-limits.md §7): mount(2) is 20-40 µs faster for short stacks, so a stack whose
options fit in a page uses mount(2), and only a taller one uses the new API. `lowerdir_plus_supported()`
checks the kernel once, so that a tall stack on an older kernel fails before any process is forked.
"""

from __future__ import annotations

import functools
import os

from composer.runtime import libc

__all__ = [
    "fits_mount_data",
    "lowerdir_plus_supported",
    "make_private",
    "mount_overlay",
    "mount_overlay_fsconfig",
    "overlay_options",
    "pivot",
    "remount_read_only",
]

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _esc(path: str) -> str:
    return path.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


def overlay_options(lower_dirs: tuple[str, ...], upper_dir: str, work_dir: str) -> str:
    """overlayfs options; `:` and `,` in paths are escaped as the kernel expects."""
    lower = ":".join(_esc(d) for d in lower_dirs)
    return f"lowerdir={lower},upperdir={_esc(upper_dir)},workdir={_esc(work_dir)}"


def fits_mount_data(lower_dirs: tuple[str, ...], upper_dir: str, work_dir: str) -> bool:
    """Whether mount(2) can take these options: the kernel copies one page, NUL included."""
    return len(os.fsencode(overlay_options(lower_dirs, upper_dir, work_dir))) < _PAGE_SIZE


@functools.cache
def lowerdir_plus_supported() -> bool:
    """Whether this kernel's overlayfs takes `lowerdir+` through the new mount API (Linux 6.8+).

    Builds (and drops, unmounted) a read-only overlay of two empty folders; needs CAP_SYS_ADMIN. A
    kernel without fsopen (ENOSYS), one whose overlay rejects the key (6.5-6.7), and one that only
    fails at create (before 6.5, where the key is passed through as a mount option) all answer False.
    """
    import tempfile  # here: 3 ms that the fork-server, which imports this module, need not pay

    with tempfile.TemporaryDirectory(prefix="composer-ovl-probe-") as folder:
        lowers = [os.path.join(folder, name) for name in ("a", "b")]
        for lower in lowers:
            os.mkdir(lower)
        try:
            fs_fd = libc.fsopen("overlay")
        except OSError:
            return False
        try:
            for lower in lowers:
                libc.fsconfig_string(fs_fd, "lowerdir+", lower)
            libc.fsconfig_create(fs_fd)
        except OSError:
            return False
        finally:
            os.close(fs_fd)
    return True


def make_private() -> None:
    """Nothing we mount may propagate back to the host (`/` is shared on systemd hosts)."""
    libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)


def mount_overlay(rootfs: str, lower_dirs: tuple[str, ...], upper_dir: str, work_dir: str) -> None:
    """Overlay `lower_dirs` (top first) under `upper_dir` on `rootfs`, by mount(2) when the options fit."""
    if fits_mount_data(lower_dirs, upper_dir, work_dir):
        libc.mount("overlay", rootfs, "overlay", 0, overlay_options(lower_dirs, upper_dir, work_dir))
    else:
        mount_overlay_fsconfig(rootfs, lower_dirs, upper_dir, work_dir)


def mount_overlay_fsconfig(rootfs: str, lower_dirs: tuple[str, ...], upper_dir: str, work_dir: str) -> None:
    """The new mount API: one `lowerdir+` per layer (top first, as in `lowerdir=`), no length limit."""
    fs_fd = libc.fsopen("overlay")
    try:
        libc.fsconfig_string(fs_fd, "source", "overlay")
        for lower in lower_dirs:
            libc.fsconfig_string(fs_fd, "lowerdir+", lower)
        libc.fsconfig_string(fs_fd, "upperdir", upper_dir)
        libc.fsconfig_string(fs_fd, "workdir", work_dir)
        libc.fsconfig_create(fs_fd)
        mount_fd = libc.fsmount(fs_fd)
    finally:
        os.close(fs_fd)
    try:
        libc.move_mount(mount_fd, rootfs)
    finally:
        os.close(mount_fd)


def remount_read_only(rootfs: str) -> None:
    libc.mount(None, rootfs, None, libc.MS_BIND | libc.MS_REMOUNT | libc.MS_RDONLY)


def pivot(rootfs: str) -> None:
    """pivot_root(".", ".") and detach the old root, which then sits on top of the new one (runc's trick)."""
    os.chdir(rootfs)
    libc.pivot_root(".", ".")
    libc.umount2(".", libc.MNT_DETACH)
    os.chdir("/")
