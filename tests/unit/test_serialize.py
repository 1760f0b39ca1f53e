"""serialize: the shape of `docker compose config --format json` (Docker Compose v2.26.1)."""

from __future__ import annotations

import json

import pytest

from composer.spec.model import Dependency, Duration, Port, Project, Service, ServiceNetwork, go_duration
from composer.spec.serialize import escape_dollars, project_to_dict, service_to_dict, to_json


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0s"),
        (60 * 10**9, "1m0s"),
        (90 * 10**9, "1m30s"),
        (5400 * 10**9, "1h30m0s"),
        (1500 * 10**6, "1.5s"),
        (500 * 10**6, "500ms"),
        (1000, "1µs"),
        (100, "100ns"),
        (-(10**9), "-1s"),
        (3723500 * 10**6, "1h2m3.5s"),
    ],
)
def test_go_duration(ns: int, text: str) -> None:
    assert go_duration(ns) == text
    assert str(Duration(nanoseconds=ns)) == text


def test_minimal_service() -> None:
    service = Service(name="db", image="mariadb", networks=(ServiceNetwork(name="default"),))
    assert service_to_dict(service) == {
        "command": None,
        "entrypoint": None,
        "image": "mariadb",
        "networks": {"default": None},
    }


def test_field_order_and_omission() -> None:
    service = Service(
        name="web",
        profiles=("p",),
        image="x",
        command=(),
        depends_on=(Dependency(service="db", restart=True), Dependency(service="z", required=False)),
        ports=(Port(target=80, published="8080"),),
        stop_grace_period=Duration(nanoseconds=10**10),
        init=False,
        read_only=False,
    )
    out = service_to_dict(service)
    assert list(out) == [
        "profiles",
        "command",
        "depends_on",
        "entrypoint",
        "image",
        "init",
        "ports",
        "stop_grace_period",
    ]
    assert out["command"] == []
    assert out["init"] is False
    assert out["depends_on"] == {
        "db": {"condition": "service_started", "restart": True, "required": True},
        "z": {"condition": "service_started", "required": False},
    }
    assert out["ports"] == [{"mode": "ingress", "target": 80, "published": "8080", "protocol": "tcp"}]
    assert out["stop_grace_period"] == "10s"


def test_project_keys_sorted_and_empty_sections_left_out() -> None:
    project = Project(name="demo", working_dir="/p", services=(Service(name="a", image="x"),))
    assert list(project_to_dict(project)) == ["name", "services"]


def test_escape_dollars() -> None:
    service = Service(name="a", image="x$y", command=("a$b",))
    project = Project(name="demo", working_dir="/p", services=(service,))
    out = project_to_dict(project, escape_dollars=True)
    assert out["services"]["a"]["image"] == "x$$y"
    assert out["services"]["a"]["command"] == ["a$$b"]
    assert project_to_dict(project)["services"]["a"]["image"] == "x$y"
    assert escape_dollars({"k": ["$"]}) == {"k": ["$$"]}


def test_to_json_escapes_like_go() -> None:
    text = to_json({"command": ["echo hi && <x>"]})
    assert "\\u0026\\u0026" in text and "\\u003cx\\u003e" in text
    assert json.loads(text) == {"command": ["echo hi && <x>"]}
