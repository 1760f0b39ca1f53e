"""profiles: which services are enabled (SPEC 15-profiles.md)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from composer.errors import SpecError
from composer.spec.model import Project
from composer.spec.normalize import normalize_project
from composer.spec.profiles import select_services
from composer.spec.source import load_documents

TEXT = """
services:
  web:
    image: x
    depends_on: [db]
  db:
    image: y
    profiles: [dbp]
    volumes: ["data:/var/lib/db"]
  dbg:
    image: z
    profiles: [debug, other]
    depends_on:
      opt: {condition: service_started, required: false}
  opt:
    image: w
    profiles: [o]
  tool:
    image: t
    profiles: [dbp]
volumes:
  data:
"""


def _project(text: str = TEXT) -> Project:
    tree = load_documents(text, "compose.yaml")[0]

    def no_files(path: str) -> str:
        raise FileNotFoundError(path)

    return normalize_project(tree, name="demo", working_dir="/p", environ={}, read_text=no_files, warn=print)


def _names(profiles: Sequence[str], requested: Sequence[str] = ()) -> tuple[str, ...]:
    return select_services(_project(), profiles=profiles, requested=requested).service_names()


def test_profile_enables_its_services() -> None:
    assert _names(["dbp"]) == ("db", "tool", "web")


def test_star_enables_all() -> None:
    assert _names(["*"]) == ("db", "dbg", "opt", "tool", "web")


def test_requested_service_enables_its_profiles() -> None:
    assert _names(["debug"], ["db"]) == ("db", "dbg", "tool", "web")


def test_disabled_move_aside_and_optional_dependency_kept() -> None:
    project = select_services(_project(), profiles=["dbp", "other"], requested=())
    assert [s.name for s in project.disabled_services] == ["opt"]
    dep = project.service("dbg").dependency("opt")
    assert dep is not None and dep.required is False


def test_dependency_on_disabled_service_is_an_error() -> None:
    with pytest.raises(SpecError) as info:
        select_services(_project(), profiles=[], requested=())
    assert info.value.render() == (
        'services.web.depends_on.db: service "web" depends on undefined service "db": '
        "it is disabled by its profiles (dbp); enable it with --profile dbp"
    )


def test_unknown_requested_service() -> None:
    with pytest.raises(SpecError, match=r"^no such service: nope$"):
        select_services(_project(), profiles=["dbp"], requested=["nope"])


def test_unused_resources_are_dropped() -> None:
    text = (
        "services:\n  a: {image: x, profiles: [p], volumes: ['data:/v']}\n"
        "  b: {image: x}\nvolumes:\n  data:\n"
    )
    without = select_services(_project(text), profiles=[], requested=())
    assert without.volumes == ()
    assert [n.key for n in without.networks] == ["default"]
    assert [v.key for v in select_services(_project(text), profiles=["p"], requested=()).volumes] == ["data"]
