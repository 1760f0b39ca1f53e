"""Benchmark: load + validate + normalize of generated compose files, next to Docker Compose v2.

    .venv/bin/python bench/config_load.py [--sizes 10,100,1000,5000] [--repeats 5] [--no-peer] [--keep DIR]

For each size N it writes a project of N services (image or build, ports, named and bind volumes,
environment with interpolation, short and long depends_on, healthchecks, two networks, env_file on
some) and measures, each in a fresh process:

- in-process: `composer.spec.loader.load_project` (read, interpolate, merge, validate, normalize,
  profiles, cycle check), median of --repeats runs after one warm-up, and the peak of Python
  allocations during one run (tracemalloc);
- composer CLI: `python -m composer -f FILE config --format json > /dev/null`, median wall time and
  max RSS (os.wait4) over --repeats runs;
- Compose v2: `docker-compose -f FILE config --format json > /dev/null`, the same, when the binary is
  present ($COMPOSER_COMPOSE_V2, else .cache/peers/docker-compose).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SIZES = (10, 100, 1000, 5000)


# --- generation -------------------------------------------------------------------------------------


def generate(n: int) -> str:
    """A compose file of `n` services; deterministic, acyclic dependencies, unique host ports."""
    out = [
        "name: bench",
        "x-health: &health",
        "  interval: 10s",
        "  timeout: 3s",
        "  retries: 3",
        "services:",
    ]
    for i in range(n):
        s = f"svc{i:05d}"
        out.append(f"  {s}:")
        if i % 10 == 3:
            out += ["    build:", f"      context: ./ctx/{s}", "      args:", f"        INDEX: '{i}'"]
        else:
            out.append(f"    image: registry.example.com/team/app{i % 7}:${{TAG:-1.{i % 5}}}")
        out += [
            "    restart: unless-stopped",
            "    ports:",
            f'      - "{10000 + i}:80"',
            f'      - "127.0.0.1:{20000 + i}:443/tcp"',
            "    volumes:",
            f"      - data{i % max(1, n // 10)}:/var/lib/app",
            f"      - ./conf/{s}:/etc/app:ro",
            "      - type: tmpfs",
            "        target: /run/app",
            "    environment:",
            f"      SERVICE_NAME: {s}",
            "      LOG_LEVEL: ${LOG_LEVEL:-info}",
            f'      INDEX: "{i}"',
            "      DATABASE_URL: postgres://app:${DB_PASSWORD}@db:5432/app",
            "      FEATURE_FLAG: 'on'",
        ]
        if i % 4 == 0:
            out += ["    env_file:", "      - path: ./common.env", "        required: false"]
        # Dependencies in groups of ten: members on their group's first service, group leaders on
        # svc00000. (A deep DAG with many paths, e.g. i -> i-1 and i -> i//3, makes Compose 2.26's
        # `config` take more than 10 minutes at 1000 services: its graph walk is not linear.)
        leader = i - i % 10
        if i % 10:
            if i % 2:
                out += ["    depends_on:", f"      - svc{leader:05d}"]
            else:
                out += ["    depends_on:", f"      svc{leader:05d}:", "        condition: service_started"]
        elif i:
            out += [
                "    depends_on:",
                "      svc00000:",
                "        condition: service_healthy",
                "        restart: true",
            ]
        out += [
            "    healthcheck:",
            "      <<: *health",
            f'      test: ["CMD", "curl", "-fsS", "http://localhost:{80}/health/{i}"]',
            "      start_period: 30s",
            "    networks:",
            "      front:",
            f"        aliases: [{s}.front]",
            "      back: {}",
            "    labels:",
            f"      com.example.index: '{i}'",
            "      com.example.tier: backend",
        ]
    out.append("volumes:")
    for v in range(max(1, n // 10)):
        out += [f"  data{v}:", "    labels:", f"      com.example.volume: '{v}'"]
    out += [
        "networks:",
        "  front:",
        "    driver: bridge",
        "  back:",
        "    internal: true",
        "    ipam:",
        "      config:",
        "        - subnet: 172.30.0.0/16",
    ]
    return "\n".join(out) + "\n"


def write_project(root: Path, n: int) -> Path:
    folder = root / f"bench-{n}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "compose.yaml").write_text(generate(n))
    (folder / ".env").write_text("DB_PASSWORD=secret\nLOG_LEVEL=debug\n")
    (folder / "common.env").write_text("COMMON=1\nREGION=eu\n")
    return folder / "compose.yaml"


# --- measuring ---------------------------------------------------------------------------------------


def clean_env(home: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}
    env["HOME"] = home
    return env


def run_measured(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, int, int, str]:
    """(wall seconds, max RSS bytes, exit code, stderr tail) of one run, stdout discarded."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read().decode(errors="replace").strip().splitlines()[-1:]
    return wall, usage.ru_maxrss * 1024, proc.returncode, "".join(tail)


def measure_cli(cmd: list[str], cwd: Path, env: dict[str, str], repeats: int) -> dict[str, object]:
    walls, rss = [], []
    for _ in range(repeats):
        wall, maxrss, code, tail = run_measured(cmd, cwd, env)
        if code != 0:
            return {"error": f"exit {code}: {tail[:80]}"}
        walls.append(wall)
        rss.append(maxrss)
    return {"ms": statistics.median(walls) * 1000, "rss": max(rss)}


def child_in_process(path: str, repeats: int) -> None:
    """Runs in a fresh interpreter: time load_project, then measure its peak allocations."""
    import tracemalloc

    from composer.spec.loader import LoadOptions, load_project

    env = dict(os.environ)
    options = LoadOptions(cwd=str(Path(path).parent), environ=env, files=(path,))

    def once() -> int:
        loaded = load_project(options, lambda _m: None)
        project = getattr(loaded, "project", loaded)
        return len(project.services)

    count = once()  # warm-up: imports, schema compilation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        once()
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    once()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(json.dumps({"ms": statistics.median(times) * 1000, "peak": peak, "services": count}))


def measure_in_process(path: Path, env: dict[str, str], repeats: int) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(path), "--repeats", str(repeats)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": last[:80]}
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def peer_binary() -> Path | None:
    configured = os.environ.get("COMPOSER_COMPOSE_V2")
    path = Path(configured) if configured else REPO / ".cache" / "peers" / "docker-compose"
    return path if path.is_file() and os.access(path, os.X_OK) else None


# --- report ------------------------------------------------------------------------------------------


def _ms(cell: dict[str, object], key: str = "ms") -> str:
    return f"{cell[key]:.0f}" if key in cell else "n/a"


def _mib(cell: dict[str, object], key: str) -> str:
    value = cell.get(key)
    return f"{value / 2**20:.0f}" if isinstance(value, int | float) else "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="comma-separated service counts"
    )
    parser.add_argument("--repeats", type=int, default=5, help="runs per measurement (median is shown)")
    parser.add_argument("--no-peer", action="store_true", help="do not run Docker Compose v2")
    parser.add_argument("--no-cli", action="store_true", help="skip the composer CLI runs")
    parser.add_argument("--keep", metavar="DIR", help="write the generated projects to DIR and keep them")
    parser.add_argument("--child", metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_in_process(args.child, args.repeats)
        return 0

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    peer = None if args.no_peer else peer_binary()
    with tempfile.TemporaryDirectory(prefix="composer-bench-") as tmp:
        root = Path(args.keep) if args.keep else Path(tmp) / "projects"
        home = Path(tmp) / "home"
        home.mkdir()
        env = clean_env(str(home))
        rows = []
        for n in sizes:
            path = write_project(root, n)
            cwd = path.parent
            inproc = measure_in_process(path, env, args.repeats)
            cli = (
                {}
                if args.no_cli
                else measure_cli(
                    [sys.executable, "-m", "composer", "-f", str(path), "config", "--format", "json"],
                    cwd,
                    env,
                    args.repeats,
                )
            )
            ref = (
                measure_cli(
                    [str(peer), "-f", str(path), "config", "--format", "json"], cwd, env, args.repeats
                )
                if peer
                else {}
            )
            rows.append((n, path.stat().st_size, inproc, cli, ref))
            print(f"  measured {n} services", file=sys.stderr)

    header = (
        f"{'services':>8} {'file KiB':>8} | {'load ms':>8} {'ms/svc':>7} {'peak MiB':>8} | "
        f"{'cli ms':>7} {'cli RSS':>7} | {'compose ms':>10} {'RSS MiB':>7} | {'cli/compose':>11}"
    )
    print(f"composer config load (median of {args.repeats}; RSS = max resident set of the process)")
    print(f"python {sys.version.split()[0]}; peer: {peer or 'not found'}")
    print(header)
    print("-" * len(header))
    errors = []
    for n, size, inproc, cli, ref in rows:
        per = f"{float(inproc['ms']) / n:.2f}" if "ms" in inproc else "n/a"  # type: ignore[arg-type]
        ratio = (
            f"{float(cli['ms']) / float(ref['ms']):.2f}x"  # type: ignore[arg-type]
            if "ms" in cli and "ms" in ref
            else "n/a"
        )
        print(
            f"{n:>8} {size / 1024:>8.0f} | {_ms(inproc):>8} {per:>7} {_mib(inproc, 'peak'):>8} | "
            f"{_ms(cli):>7} {_mib(cli, 'rss'):>7} | {_ms(ref):>10} {_mib(ref, 'rss'):>7} | {ratio:>11}"
        )
        for label, cell in (("in-process", inproc), ("composer cli", cli), ("compose", ref)):
            if "error" in cell:
                errors.append(f"{n} services, {label}: {cell['error']}")
    for line in errors:
        print(f"error: {line}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
