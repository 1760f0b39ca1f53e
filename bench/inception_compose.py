"""The inception stack under composer and under Docker Compose v2, side by side in one run.

    sudo .venv/bin/python bench/inception_compose.py [--rounds 3] [--keep DIR]

Needs root, the host's Debian mirror, and a Docker engine with Compose v2 (../shared/tools/peers/setup.sh
installs Debian's docker.io 20.10 and the Compose v2 plugin); without one it says so and exits 2.

Same images and files for both: composer builds the 8 images into a fresh root (as bench/inception.py
does); each is then given to Docker as it is, its layers merged by a read-only overlay mount, `tar`
into `docker import` with its ENTRYPOINT, CMD, ENV, WORKDIR, USER and EXPOSE (HEALTHCHECK is not
needed: the compose file has one for every service). Same files: the stack's srcs/ copied with its own
secrets, DATA_DIR in the work folder, and the override that publishes nginx's 443 on an ephemeral
loopback port. The project names start with `pbench` (setup.sh's rule for the peers' projects).

One first `up -d --wait` by composer initialises the data (MariaDB, the WordPress install); then, for
--rounds rounds, composer and Compose v2 in turn on the same data folder (warm: the data is there, no
container, no supervisor):
1. `up -d --wait` until it returns (8 services healthy), then `down`;
2. `up -d`, and from its start, the first HTTPS 200 from nginx (TLS 1.2, Host: DOMAIN_NAME), then a
   wait for all 8 healthy, then `down`.
The healthchecks' own schedule (the start intervals along mariadb -> wordpress -> nginx) is the same for
both and dominates (1); (2) shows when a visitor is first served.

At the end (also after a failure or Ctrl-C): both projects down with their volumes, the imported images
removed from Docker, the work folder removed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cli_tools import CommandFailed, mounts_under, no_interrupts, sigterm_as_interrupt
from inception import (
    BUILD_TIMEOUT,
    HTTPS_POLL,
    HTTPS_TIMEOUT,
    SERVICES,
    WAIT_TIMEOUT,
    Stack,
    https_status,
    tls12_context,
)

DOCKER = "/usr/bin/docker"  # Debian's CLI, matching Debian's engine (setup.sh's choice)
COMMAND_TIMEOUT = 600.0  # s: one docker command


def docker(*args: str, stdin: bytes | None = None, timeout: float = COMMAND_TIMEOUT) -> str:
    done = subprocess.run([DOCKER, *args], input=stdin, capture_output=True, timeout=timeout)
    if done.returncode != 0:
        tail = " | ".join(done.stderr.decode(errors="replace").strip().splitlines()[-3:])
        raise CommandFailed(f"docker {' '.join(args[:3])}: exit {done.returncode}: {tail}")
    return done.stdout.decode(errors="replace")


def compose_v2_version() -> str | None:
    try:
        version = docker("compose", "version", "--short", timeout=30).strip()
        docker("info", "--format", "{{.ServerVersion}}", timeout=30)
    except (CommandFailed, OSError, subprocess.TimeoutExpired):
        return None
    return version or None


def image_changes(config: dict[str, object]) -> list[str]:
    """`docker import --change` lines for an image config (what `import` can carry)."""
    changes = []
    for key, instruction in (("Entrypoint", "ENTRYPOINT"), ("Cmd", "CMD")):
        value = config.get(key)
        if value:
            changes.append(f"{instruction} {json.dumps(value)}")
    for item in config.get("Env") or []:  # type: ignore[attr-defined]
        name, _, value = str(item).partition("=")
        changes.append(f"ENV {name}={json.dumps(value)}")
    for key, instruction in (("WorkingDir", "WORKDIR"), ("User", "USER")):
        if config.get(key):
            changes.append(f"{instruction} {config[key]}")
    for port in config.get("ExposedPorts") or {}:  # type: ignore[attr-defined]
        changes.append(f"EXPOSE {port}")
    return changes


def export_to_docker(stack: Stack, image: str, mnt: Path) -> float:
    """composer's `image` into Docker under the same name; seconds taken."""
    start = time.perf_counter()
    _, out = stack.composer("image", "inspect", image)
    (info,) = json.loads(out)
    lower = info["GraphDriver"]["Data"]["LowerDir"]
    mnt.mkdir(exist_ok=True)
    if ":" in lower:
        subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", f"ro,lowerdir={lower}", str(mnt)], check=True
        )
    else:
        subprocess.run(["mount", "--bind", "-o", "ro", lower, str(mnt)], check=True)
    try:
        tar = subprocess.Popen(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(mnt), "-cf", "-", "."], stdout=subprocess.PIPE
        )
        argv = [DOCKER, "import"]
        for change in image_changes(info["Config"]):
            argv += ["--change", change]
        done = subprocess.run(
            [*argv, "-", image], stdin=tar.stdout, capture_output=True, timeout=COMMAND_TIMEOUT
        )
        tar.wait()
        if done.returncode != 0 or tar.returncode != 0:
            raise CommandFailed(
                f"docker import {image}: {done.stderr.decode(errors='replace').strip()[-300:]}"
            )
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
    return time.perf_counter() - start


class ComposeV2:
    """`docker compose` on the same files and data as `stack`."""

    def __init__(self, stack: Stack, project: str) -> None:
        self.stack, self.project = stack, project

    def run(self, *args: str, timeout: float = COMMAND_TIMEOUT) -> tuple[float, str]:
        files = [
            *("-f", str(self.stack.srcs / "docker-compose.yml")),
            *("-f", str(self.stack.srcs / "compose.override.yaml")),
        ]
        argv = [DOCKER, "compose", "-p", self.project, *files, *args]
        start = time.perf_counter()
        done = subprocess.run(
            argv, cwd=self.stack.srcs, env=self.stack.env, capture_output=True, timeout=timeout
        )
        took = time.perf_counter() - start
        if done.returncode != 0:
            tail = " | ".join(done.stderr.decode(errors="replace").strip().splitlines()[-3:])
            raise CommandFailed(f"docker compose {' '.join(args)}: exit {done.returncode}: {tail}")
        return took, done.stdout.decode(errors="replace")

    def port(self) -> int | None:
        with contextlib.suppress(CommandFailed, subprocess.TimeoutExpired):
            _, out = self.run("port", "nginx", "443", timeout=30)
            text = out.strip().rsplit(":", 1)[-1]
            return int(text) if text.isdigit() else None
        return None

    def all_healthy(self) -> bool:
        with contextlib.suppress(CommandFailed, subprocess.TimeoutExpired):
            _, out = self.run("ps", "--format", "json", timeout=30)
            text = out.strip()
            rows = (
                json.loads(text) if text.startswith("[") else [json.loads(x) for x in text.splitlines() if x]
            )
            return len(rows) == len(SERVICES) and all(r.get("Health") == "healthy" for r in rows)
        return False


def composer_port(stack: Stack) -> int | None:
    with contextlib.suppress(CommandFailed):
        _, out = stack.composer("port", "nginx", "443")
        text = out.strip().rsplit(":", 1)[-1]
        return int(text) if text.isdigit() else None
    return None


def first_200(port_of: object, domain: str, since: float) -> float:
    """Seconds from `since` to nginx's first 200 (the port asked for until it is known)."""
    context = tls12_context()
    deadline = time.monotonic() + HTTPS_TIMEOUT
    port = None
    while time.monotonic() < deadline:
        if port is None:
            port = port_of()  # type: ignore[operator]
        if port is not None and https_status(port, domain, context) == 200:
            return time.perf_counter() - since
        time.sleep(HTTPS_POLL)
    raise CommandFailed(f"no HTTPS 200 within {HTTPS_TIMEOUT:g} s")


def wait_healthy(check: object, timeout: float = WAIT_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise CommandFailed(f"not all {len(SERVICES)} healthy within {timeout:g} s")
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", type=Path, metavar="DIR", help="work under DIR and keep it")
    args = parser.parse_args(argv)
    version = compose_v2_version()
    if version is None:
        print(
            "no Docker engine with Compose v2 here (../shared/tools/peers/setup.sh installs one)",
            file=sys.stderr,
        )
        return 2
    base = args.keep or Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="composer-bench-incv2-", dir=base))
    stack = Stack(work=work, project=f"pbench{work.name[-6:].lower()}c")
    peer = ComposeV2(stack, f"pbench{work.name[-6:].lower()}d")
    images = [f"{name}:inception" for name in SERVICES]
    exported: list[str] = []
    times: dict[str, dict[str, list[float]]] = {
        tool: {"up --wait": [], "first 200": [], "down": []} for tool in ("composer", "Compose v2")
    }
    status = 0
    try:
        with sigterm_as_interrupt():
            stack.prepare()
            built, _ = stack.composer("build", timeout=BUILD_TIMEOUT)
            print(f"composer build of the 8 images (not compared): {built:.1f} s", file=sys.stderr)
            for image in images:
                took = export_to_docker(stack, image, work / "mnt")
                exported.append(image)
                print(f"  {image} into Docker: {took:.1f} s", file=sys.stderr)
            stack.composer(
                "up", "-d", "--wait", "--wait-timeout", str(WAIT_TIMEOUT), timeout=WAIT_TIMEOUT + 60
            )
            stack.composer("down")  # the data is initialised: every round below is warm
            for k in range(args.rounds):
                for tool in ("composer", "Compose v2"):
                    run = stack.composer if tool == "composer" else peer.run
                    took, _ = run(
                        "up", "-d", "--wait", "--wait-timeout", str(WAIT_TIMEOUT), timeout=WAIT_TIMEOUT + 60
                    )
                    times[tool]["up --wait"].append(took)
                    times[tool]["down"].append(run("down")[0])
                    start = time.perf_counter()
                    run("up", "-d")
                    port_of = (lambda: composer_port(stack)) if tool == "composer" else peer.port
                    times[tool]["first 200"].append(first_200(port_of, stack.domain, start))
                    wait_healthy(stack.all_healthy if tool == "composer" else peer.all_healthy)
                    times[tool]["down"].append(run("down")[0])
                print(f"  round {k + 1} done", file=sys.stderr)
        print(
            f"the inception stack (8 services, warm: data present), composer against Docker Compose "
            f"{version} on the same images and files, {args.rounds} round(s) each, in turn; seconds, "
            "median (min-max)"
        )
        header = f"{'':<12} | {'composer':>20} | {'Compose v2':>20} | {'faster':>7}"
        print(header)
        print("-" * len(header))
        for what in ("up --wait", "first 200", "down"):
            ours, theirs = times["composer"][what], times["Compose v2"][what]

            def cell(values: list[float]) -> str:
                return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"

            ratio = statistics.median(theirs) / statistics.median(ours)
            print(f"{what:<12} | {cell(ours):>20} | {cell(theirs):>20} | {ratio:>6.1f}x")
        print(
            "up --wait: until `up -d --wait` returns with all 8 healthy; first 200: from the start of "
            "`up -d` to nginx's first HTTPS 200; down: both downs of every round"
        )
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        status = 130
    except (CommandFailed, subprocess.TimeoutExpired, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        status = 1
    finally:
        with no_interrupts():
            with contextlib.suppress(CommandFailed, subprocess.TimeoutExpired):
                peer.run("down", "-v", "-t", "5")
            with contextlib.suppress(CommandFailed, subprocess.TimeoutExpired):
                stack.composer("down", "-v", "-t", "5")
            stack.wait_supervisors_gone()
            for image in exported:
                with contextlib.suppress(CommandFailed, subprocess.TimeoutExpired):
                    docker("rmi", image, timeout=120)
            left = mounts_under(work)
            if left:
                print(f"cleanup: mounts left under {work}, not removed: {left[:3]}", file=sys.stderr)
                status = status or 1
            elif not args.keep:
                shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
