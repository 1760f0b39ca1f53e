"""The command line as a user meets it: flags, outputs, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from composer.cli import main

STACK = """\
services:
  web:
    image: nginx
    ports: ["8080:80"]
    depends_on: [db]
    profiles: [front]
  db:
    image: mariadb
    volumes: [data:/var/lib/mysql]
  tools:
    build: ./tools
    profiles: [debug]
volumes: {data: {}}
networks: {back: {}}
"""


@pytest.fixture
def project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "shop"
    root.mkdir()
    (root / "compose.yaml").write_text(STACK)
    monkeypatch.chdir(root)
    for key in list(os.environ):
        if key.startswith("COMPOSE_"):
            monkeypatch.delenv(key)
    return root


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_config_json_has_compose_shape(project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--profile", "front", "config", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["name"] == "shop"
    assert sorted(data["services"]) == ["db", "web"]
    assert data["services"]["web"]["ports"][0] == {
        "mode": "ingress",
        "target": 80,
        "published": "8080",
        "protocol": "tcp",
    }
    assert data["volumes"]["data"]["name"] == "shop_data"


def test_config_yaml_round_trips_to_the_same_data(
    project_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    _, as_json, _ = run(capsys, "config", "--format", "json")
    _, as_yaml, _ = run(capsys, "config")
    assert yaml.safe_load(as_yaml) == json.loads(as_json)


def test_listing_flags(project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "--profile", "*", "config", "--services")[1] == "db\ntools\nweb\n"
    assert run(capsys, "config", "--volumes")[1] == "data\n"
    assert run(capsys, "config", "--profiles")[1] == "debug\nfront\n"
    assert run(capsys, "--profile", "debug", "config", "--images")[1] == "mariadb\nshop-tools\n"
    code, out, _ = run(capsys, "config", "--hash", "*")
    assert code == 0
    name, digest = out.split()
    assert name == "db" and len(digest) == 64


def test_hash_changes_with_the_config_and_not_with_depends_on(
    project_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = run(capsys, "--profile", "front", "config", "--hash", "web")[1]
    (project_dir / "compose.yaml").write_text(STACK.replace("depends_on: [db]", "depends_on: []"))
    assert run(capsys, "--profile", "front", "config", "--hash", "web")[1] == before
    (project_dir / "compose.yaml").write_text(STACK.replace("8080:80", "8081:80"))
    assert run(capsys, "--profile", "front", "config", "--hash", "web")[1] != before


def test_quiet_prints_nothing_and_output_writes_a_file(
    project_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "config", "-q") == (0, "", "")
    code, out, _ = run(capsys, "config", "--format", "json", "-o", "out.json")
    assert code == 0 and out == ""
    assert json.loads((project_dir / "out.json").read_text())["name"] == "shop"


def test_global_flags_also_work_after_the_command(
    project_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "config", "-p", "other", "--format", "json")
    assert code == 0 and json.loads(out)["name"] == "other"


def test_unknown_flag_is_exit_16_with_one_line(project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "config", "--bogus")
    assert code == 16 and out == ""
    assert err.splitlines()[0] == "composer: unknown flag: --bogus"


def test_invalid_file_is_exit_15_with_location_and_no_traceback(
    project_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project_dir / "compose.yaml").write_text("services:\n  web:\n    imagee: x\n")
    code, out, err = run(capsys, "config")
    assert code == 15 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith(f"{project_dir / 'compose.yaml'}:3:")
    assert "Traceback" not in err


def test_debug_shows_the_traceback(project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project_dir / "compose.yaml").write_text("services: [\n")
    code, _, err = run(capsys, "--debug", "config")
    assert code == 15 and "Traceback" in err


def test_missing_file_is_exit_14(project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "-f", "missing.yaml", "config")
    assert code == 14 and "missing.yaml: no such file or directory" in err


def test_bad_project_name_is_exit_1(project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "-p", "Bad", "config")
    assert code == 1 and err.startswith('invalid project name "Bad"')


def test_warnings_go_to_stderr_as_json_lines_on_request(
    project_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project_dir / "compose.yaml").write_text("services: {s: {image: '${UNSET_X}a'}}\n")
    code, out, err = run(capsys, "--log-format", "json", "config", "--format", "json")
    assert code == 0 and json.loads(out)["services"]["s"]["image"] == "a"
    record = json.loads(err.strip().splitlines()[0])
    assert record["level"] == "warning" and "UNSET_X" in record["event"]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "version", "--short")
    assert code == 0 and out.strip().count(".") == 2


def test_stdin_and_the_console_script(project_dir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "composer", "-f", "-", "config", "--services"],
        input="services: {only: {image: x}}\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "only\n"), done.stderr
