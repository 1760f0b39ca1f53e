"""Dockerfile builds: cold and cached builds of a Debian-based stack, and a no-op rebuild through the CLI.

    sudo .venv/bin/python bench/build.py [--keep DIR]

Needs root and the host's Debian mirror. Steps:
1. bootstrap debian:bookworm once into a fresh composer root (not timed: `image pull` does it once);
2. write a compose project of three services (nginx, mariadb, php-fpm, each `FROM debian:bookworm` +
   `apt-get install`) plus four small ones built FROM scratch on a busybox rootfs (7 services);
3. time `composer build --no-cache` (cold: every step runs, 2 services at once), `composer build`
   (cached: every step hits) and the same again (the no-op rebuild of the 7-service stack);
4. for each Debian service, time the same apt-get command run directly in a chroot over an overlay of
   the same base (`unshare --mount` + `mount -t overlay` + `chroot`), to show composer's overhead;
5. when a Docker engine has debian:bookworm locally, `docker build` the same Dockerfiles for a ratio.
Prints a table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

APT = "apt-get update && apt-get install -y --no-install-recommends {pkgs} && rm -rf /var/lib/apt/lists/*"
DEBIAN_SERVICES = {
    "nginx": "nginx-light",
    "mariadb": "mariadb-server",
    "php": "php-fpm",
}
SMALL_SERVICES = ("tools", "worker", "cron", "proxy")
COMPOSER = [sys.executable, "-m", "composer"]


def _write_project(folder: Path) -> None:
    from tests.privileged.conftest import make_busybox_rootfs

    services = []
    for name, pkgs in DEBIAN_SERVICES.items():
        (folder / name).mkdir(parents=True)
        (folder / name / "Dockerfile").write_text(
            f'FROM debian:bookworm\nRUN {APT.format(pkgs=pkgs)}\nCMD ["sleep", "infinity"]\n'
        )
        services.append(f"  {name}:\n    build: ./{name}\n")
    small = folder / "small"
    make_busybox_rootfs(small / "rootfs")
    (small / "app.conf").write_text("setting = 1\n")
    for name in SMALL_SERVICES:
        (small / f"{name}.Dockerfile").write_text(
            "FROM scratch\nCOPY rootfs/ /\nCOPY app.conf /etc/app.conf\n"
            f"RUN echo {name} > /etc/role && mkdir -p /var/lib/{name}\nWORKDIR /var/lib/{name}\n"
            'CMD ["cat", "/etc/role"]\n'
        )
        services.append(
            f"  {name}:\n    build:\n      context: ./small\n      dockerfile: {name}.Dockerfile\n"
        )
    (folder / "compose.yaml").write_text("services:\n" + "".join(services))


def _timed(argv: list[str], *, cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    return elapsed


def _chroot_apt(layers: list[Path], scratch: Path, pkgs: str) -> float:
    """The same apt-get command in a chroot over an overlay of the base layers (composer's floor)."""
    for name in ("upper", "work", "merged"):
        (scratch / name).mkdir(parents=True, exist_ok=True)
    lower = ":".join(str(p) for p in layers)
    script = (
        f"mount -t overlay overlay -o lowerdir={lower},upperdir={scratch}/upper,workdir={scratch}/work "
        f"{scratch}/merged && mount -t proc proc {scratch}/merged/proc && "
        f"mount --bind /dev {scratch}/merged/dev && cp /etc/resolv.conf {scratch}/merged/etc/resolv.conf && "
        f'exec chroot {scratch}/merged /bin/sh -c "$0"'
    )
    started = time.perf_counter()
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "sh", "-c", script,
         APT.format(pkgs=pkgs)],
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive"},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"chroot apt-get failed:\n{done.stderr[-2000:]}")
    return elapsed


def _docker_ratio(folder: Path) -> str:
    docker = shutil.which("docker")
    if not docker:
        return "docker: not installed"
    probe = subprocess.run([docker, "image", "inspect", "debian:bookworm"], capture_output=True)
    if probe.returncode != 0:
        return "docker: no local debian:bookworm image (no registry here), skipped"
    total = 0.0
    for name in DEBIAN_SERVICES:
        started = time.perf_counter()
        argv = [docker, "build", "--no-cache", "-q", "-t", f"bench-{name}", str(folder / name)]
        done = subprocess.run(argv, capture_output=True, text=True)
        total += time.perf_counter() - started
        if done.returncode != 0:
            return f"docker build failed: {done.stderr.strip()[-300:]}"
    return f"docker build --no-cache of the 3 Debian images, one after another: {total:.1f} s"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keep", type=Path, help="work in DIR and keep it (default: a temporary folder)")
    opts = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/build.py needs root", file=sys.stderr)
        return 1
    from composer.image.base import ensure_base_image
    from composer.image.store import ImageStore
    from composer.storage.layout import Layout

    work = opts.keep or Path(tempfile.mkdtemp(prefix="composer-bench-build-"))
    try:
        root = work / "root"
        layout = Layout(root).ensure()
        store = ImageStore(layout)
        print("bootstrapping debian:bookworm (not timed) ...", file=sys.stderr)
        base = ensure_base_image(store, "debian:bookworm", layout=layout, progress=lambda _: None)
        assert base is not None
        project = work / "project"
        if project.exists():
            shutil.rmtree(project)
        _write_project(project)
        env = {
            **os.environ,
            "COMPOSER_ROOT": str(root),
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        }
        rows: list[tuple[str, str]] = []
        cold = _timed([*COMPOSER, "build", "--no-cache"], cwd=project, env=env)
        rows.append(("composer build --no-cache (7 services, 3 with apt-get, 2 at a time)", f"{cold:.2f} s"))
        cached = _timed([*COMPOSER, "build"], cwd=project, env=env)
        rows.append(("composer build, everything cached", f"{cached:.2f} s"))
        noop = min(_timed([*COMPOSER, "build"], cwd=project, env=env) for _ in range(3))
        rows.append(("no-op rebuild of the 7-service stack (best of 3)", f"{noop:.2f} s"))
        chroot_total = 0.0
        for name, pkgs in DEBIAN_SERVICES.items():
            single = _timed([*COMPOSER, "build", "--no-cache", "-q", name], cwd=project, env=env)
            with tempfile.TemporaryDirectory(dir=layout.tmp) as scratch:
                floor = _chroot_apt(store.layer_dirs(base), Path(scratch), pkgs)
            chroot_total += floor
            rows.append((f"{name}: composer build --no-cache / same apt-get in a chroot",
                         f"{single:.2f} s / {floor:.2f} s (+{single - floor:.2f} s)"))  # fmt: skip
        rows.append(("the 3 apt-get commands in chroots, one after another", f"{chroot_total:.2f} s"))
        rows.append(("docker", _docker_ratio(project)))
        width = max(len(label) for label, _ in rows)
        print(f"{'measurement'.ljust(width)}  value")
        for label, value in rows:
            print(f"{label.ljust(width)}  {value}")
    finally:
        if opts.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
