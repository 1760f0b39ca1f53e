"""Start levels, stop order and cycle detection over the enabled services."""

from __future__ import annotations

from composer.spec import graph
from composer.spec.loader import LoadOptions, load_project
from composer.spec.model import Project


def project(yaml_text: str) -> Project:
    options = LoadOptions(cwd="/", environ={}, files=("-",), stdin_text=yaml_text, project_name="g")
    return load_project(options, lambda _: None).project


STACK = """
services:
  nginx: {image: n, depends_on: [wordpress]}
  wordpress:
    image: w
    depends_on: {mariadb: {condition: service_healthy}, redis: {condition: service_started}}
  mariadb: {image: m}
  redis: {image: r}
  adminer: {image: a, depends_on: [mariadb]}
  static: {image: s}
"""


def test_levels_start_dependencies_first_and_group_what_can_run_in_parallel() -> None:
    levels = graph.start_levels(project(STACK))
    assert levels == (("mariadb", "redis", "static"), ("adminer", "wordpress"), ("nginx",))


def test_start_order_and_stop_order_are_mirror_images() -> None:
    p = project(STACK)
    assert graph.start_order(p) == ("mariadb", "redis", "static", "adminer", "wordpress", "nginx")
    assert graph.stop_order(p) == (("nginx",), ("adminer", "wordpress"), ("mariadb", "redis", "static"))


def test_no_cycle_in_a_dag() -> None:
    assert graph.find_cycle(project(STACK)) is None


def test_optional_dependency_on_a_disabled_service_is_left_out() -> None:
    p = project(
        """
services:
  app: {image: a, depends_on: {debug: {condition: service_started, required: false}}}
  debug: {image: d, profiles: [debug]}
"""
    )
    assert graph.dependencies(p) == {"app": ()}
    assert graph.start_levels(p) == (("app",),)


def test_implicit_dependencies_count() -> None:
    p = project(
        """
services:
  vpn: {image: v}
  app: {image: a, network_mode: "service:vpn"}
"""
    )
    assert graph.start_order(p) == ("vpn", "app")
