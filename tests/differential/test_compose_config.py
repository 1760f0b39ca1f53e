"""Differential test: `composer config --format json` against Docker Compose v2's own output.

Corpus: every folder of tests/corpus/compose/ is one project (compose.yaml or another default name,
plus whatever .env, override, env_file, secret or include files it uses). Both tools run in that
folder, with the same arguments and the same environment (see `environment`); their JSON is parsed and
compared after the normalizations of `NORMALIZATIONS`, each listed with its reason.

tests/corpus/compose-invalid/: both tools must exit non-zero, and composer must say where (one line,
`file:line:col`), without a traceback. A folder whose case.toml says `compose_accepts = true` is an
intentional difference: Compose v2 accepts it and composer rejects it (the reason is in the file).

An optional `case.toml` per folder holds:
    args = [...]            global flags, before `config` (e.g. ["-f", "a.yaml", "--profile", "x"])
    args_after = [...]      after `config --format json` (service names, --no-interpolate)
    stdin = "FILE"          feed FILE (relative to the folder) on standard input, for `-f -`
    [env]                   extra environment variables (COMPOSE_FILE, COMPOSE_PROFILES, ...)
    compose_accepts = true  (invalid corpus only) see above
    location = false        (invalid corpus only) the error has no file to point at (e.g. bad `-p`)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
VALID = sorted(p for p in (CORPUS / "compose").iterdir() if p.is_dir())
INVALID = sorted(p for p in (CORPUS / "compose-invalid").iterdir() if p.is_dir())
TIMEOUT = 60

# A variable every run sees in its OS environment; env-dotenv checks that it wins over .env.
OS_VARIABLES = {"CORPUS_OS_VAR": "from-os", "LANG": "C.UTF-8"}


@dataclass(frozen=True)
class Normalization:
    name: str
    reason: str
    apply: Callable[[Any], Any] | None  # None: holds by construction of the comparison


_THROTTLES = ("device_read_bps", "device_write_bps", "device_read_iops", "device_write_iops", "weight_device")


def _blkio_as_compose_file(doc: Any) -> Any:
    """Compose 2.26 prints blkio throttles with Go field names (`Path`, `Rate`, `Weight`: its struct has
    no JSON tags) and the rate in bytes; composer prints the compose-file form (`path`, `rate` as
    written). Compare both in the compose-file form, with rates as byte counts."""
    from composer.spec.normalize import parse_bytes

    for service in (doc.get("services") or {}).values():
        blkio = service.get("blkio_config") if isinstance(service, dict) else None
        if not isinstance(blkio, dict):
            continue
        for key in _THROTTLES:
            entries = blkio.get(key)
            if isinstance(entries, list):
                fixed = []
                for entry in entries:
                    entry = {k.lower(): v for k, v in entry.items()}
                    if "rate" in entry:
                        entry["rate"] = str(parse_bytes(str(entry["rate"])))
                    fixed.append(entry)
                blkio[key] = fixed
    return doc


NORMALIZATIONS: tuple[Normalization, ...] = (
    Normalization(
        "blkio throttle field names",
        "Compose 2.26 prints blkio_config.device_* entries with Go field names (Path, Rate) and rates in "
        "bytes; composer keeps the compose-file names and units so its output loads back as a compose file",
        _blkio_as_compose_file,
    ),
    Normalization(
        "object key order",
        "both outputs are parsed before comparing: Go prints struct fields in declaration order and "
        "map keys sorted; the issue asks for the same shape and key names, not the same bytes",
        None,
    ),
    Normalization(
        "stderr",
        "warnings are not compared (Compose prints logrus lines such as `level=warning msg=...`, "
        "composer its own log format); only stdout's JSON is",
        None,
    ),
)


def _case(folder: Path) -> dict[str, Any]:
    path = folder / "case.toml"
    return tomllib.loads(path.read_text()) if path.exists() else {}


def environment(home: Path, case: dict[str, Any]) -> dict[str, str]:
    """The whole environment of both tools: no stray COMPOSE_*/DOCKER_* variables, a fixed HOME."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        **OS_VARIABLES,
        **case.get("env", {}),
    }


def _run(
    cmd: list[str], folder: Path, env: dict[str, str], stdin: str | None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=folder, env=env, input=stdin, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def run_both(
    compose_v2: Path, folder: Path, home: Path
) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    case = _case(folder)
    tail = [*case.get("args", []), "config", "--format", "json", *case.get("args_after", [])]
    env = environment(home, case)
    stdin = (folder / case["stdin"]).read_text() if "stdin" in case else None
    return (
        _run([str(compose_v2), *tail], folder, env, stdin),
        _run([sys.executable, "-m", "composer", *tail], folder, env, stdin),
    )


def normalize(doc: Any) -> Any:
    for rule in NORMALIZATIONS:
        if rule.apply is not None:
            doc = rule.apply(doc)
    return doc


def differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Every place where the two trees differ, as `path: compose=... composer=...` lines."""
    here = path or "(root)"
    if isinstance(expected, dict) and isinstance(actual, dict):
        out: list[str] = []
        for key in sorted(set(expected) | set(actual)):
            sub = f"{path}.{key}" if path else str(key)
            if key not in actual:
                out.append(f"{sub}: missing in composer (compose={json.dumps(expected[key])[:120]})")
            elif key not in expected:
                out.append(f"{sub}: extra in composer ({json.dumps(actual[key])[:120]})")
            else:
                out.extend(differences(expected[key], actual[key], sub))
        return out
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{here}: compose={json.dumps(expected)[:200]} composer={json.dumps(actual)[:200]}"]
        out = []
        for index, (left, right) in enumerate(zip(expected, actual, strict=True)):
            out.extend(differences(left, right, f"{path}[{index}]"))
        return out
    if expected != actual or type(expected) is not type(actual):
        return [f"{here}: compose={json.dumps(expected)[:120]} composer={json.dumps(actual)[:120]}"]
    return []


def _tail(text: str, lines: int = 6) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def test_corpus_is_big_enough() -> None:
    assert len(VALID) >= 40, [p.name for p in VALID]
    assert len(INVALID) >= 5, [p.name for p in INVALID]


def test_normalizations_are_documented() -> None:
    for rule in NORMALIZATIONS:
        assert rule.name and len(rule.reason) > 20, rule


def test_differences_reports_each_changed_leaf() -> None:
    left = {"services": {"a": {"ports": [{"target": 80, "published": "8080"}]}, "b": {}}}
    right = {"services": {"a": {"ports": [{"target": 80, "published": 8080}]}, "c": {}}}
    assert differences(left, right) == [
        'services.a.ports[0].published: compose="8080" composer=8080',
        "services.b: missing in composer (compose={})",
        "services.c: extra in composer ({})",
    ]
    assert differences({"x": True}, {"x": 1}) == ["x: compose=true composer=1"]


@pytest.mark.peer
@pytest.mark.parametrize("folder", VALID, ids=[p.name for p in VALID])
def test_config_json_matches_compose_v2(folder: Path, compose_v2: Path, fixed_home: Path) -> None:
    peer, ours = run_both(compose_v2, folder, fixed_home)
    assert peer.returncode == 0, f"corpus file rejected by Compose v2 itself:\n{_tail(peer.stderr)}"
    assert ours.returncode == 0, f"composer failed (exit {ours.returncode}):\n{_tail(ours.stderr)}"
    expected, actual = normalize(json.loads(peer.stdout)), normalize(json.loads(ours.stdout))
    diff = differences(expected, actual)
    shown = "\n".join(diff[:40]) + (f"\n... and {len(diff) - 40} more" if len(diff) > 40 else "")
    assert not diff, f"{len(diff)} difference(s) from Compose v2 in {folder.name}:\n{shown}"


_LOCATION = re.compile(r"[^\s:]+:\d+:\d+")


@pytest.mark.peer
@pytest.mark.parametrize("folder", INVALID, ids=[p.name for p in INVALID])
def test_invalid_project_is_rejected_by_both(folder: Path, compose_v2: Path, fixed_home: Path) -> None:
    case = _case(folder)
    peer, ours = run_both(compose_v2, folder, fixed_home)
    if case.get("compose_accepts"):
        assert peer.returncode == 0, f"Compose v2 now rejects it; drop compose_accepts:\n{_tail(peer.stderr)}"
    else:
        assert peer.returncode != 0, f"Compose v2 accepts this 'invalid' project:\n{peer.stdout[:500]}"
    assert ours.returncode != 0, f"composer accepted an invalid project:\n{ours.stdout[:500]}"
    assert "Traceback" not in ours.stderr, ours.stderr
    message = ours.stderr.strip()
    assert message, "composer failed without a message"
    if case.get("location", True):
        assert _LOCATION.search(message), f"no file:line:col in composer's error: {message}"
