"""Profiles: which services are enabled (SPEC 15-profiles.md, research §2.8).

A service without `profiles` is always enabled; one with profiles only when one of them is active.
`*` activates every profile. A service named on the command line activates its own profiles (and so
every service sharing one of them). The others move to `Project.disabled_services`. A `depends_on`
on a disabled service is an error unless it is `required: false`. Then, like Compose, networks,
volumes, secrets and configs that no enabled service uses are left out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from composer.errors import SpecError
from composer.spec.model import Project, Service
from composer.spec.source import MDict, locate

__all__ = ["select_services", "without_unused_resources"]


def _enabled(service: Service, active: set[str]) -> bool:
    return not service.profiles or "*" in active or bool(active.intersection(service.profiles))


def select_services(
    project: Project,
    *,
    profiles: Sequence[str],
    requested: Sequence[str] = (),
    tree: MDict | None = None,
    prune: bool = True,
) -> Project:
    """The project with only the services the active `profiles` (and the `requested` names) enable.

    `tree`, when given, lets errors point at the file location of the offending `depends_on`.
    """
    everyone = {s.name: s for s in (*project.services, *project.disabled_services)}
    active = {p for p in profiles if p}
    for name in requested:
        if name not in everyone:
            raise SpecError(f"no such service: {name}")
        active.update(everyone[name].profiles)
    enabled = [everyone[n] for n in sorted(everyone) if _enabled(everyone[n], active)]
    disabled = [everyone[n] for n in sorted(everyone) if not _enabled(everyone[n], active)]
    on = {s.name for s in enabled}
    for service in enabled:
        for dep in service.depends_on:
            if dep.service in on or not dep.required or dep.service not in everyone:
                continue
            names = ", ".join(everyone[dep.service].profiles)
            first = everyone[dep.service].profiles[0]
            path = ("services", service.name, "depends_on", dep.service)
            raise SpecError(
                f'service "{service.name}" depends on undefined service "{dep.service}": '
                f"it is disabled by its profiles ({names}); enable it with --profile {first}",
                location=None if tree is None else locate(tree, path),
                path=path,
            )
    selected = dataclasses.replace(project, services=tuple(enabled), disabled_services=tuple(disabled))
    return without_unused_resources(selected) if prune else selected


def without_unused_resources(project: Project) -> Project:
    """Drop the networks, volumes, secrets and configs that no enabled service refers to."""
    networks: set[str] = set()
    volumes: set[str] = set()
    secrets: set[str] = set()
    configs: set[str] = set()
    for service in project.services:
        networks.update(n.name for n in service.networks)
        volumes.update(m.source for m in service.volumes if m.type == "volume" and m.source)
        secrets.update(ref.source for ref in service.secrets)
        if service.build is not None:
            secrets.update(ref.source for ref in service.build.secrets)
        configs.update(ref.source for ref in service.configs)
    return dataclasses.replace(
        project,
        networks=tuple(n for n in project.networks if n.key in networks),
        volumes=tuple(v for v in project.volumes if v.key in volumes),
        secrets=tuple(s for s in project.secrets if s.key in secrets),
        configs=tuple(c for c in project.configs if c.key in configs),
    )


def only_services(project: Project, names: Sequence[str]) -> Project:
    """The services named (as on `composer config web db`) and, transitively, what they depend on;
    the others move to `disabled_services`. An empty `names` keeps everything."""
    if not names:
        return project
    by_name = {service.name: service for service in project.services}
    keep: set[str] = set()
    todo = [name for name in names if name in by_name]
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep.add(name)
        todo.extend(dep.service for dep in by_name[name].depends_on if dep.service in by_name)
    selected = dataclasses.replace(
        project,
        services=tuple(s for s in project.services if s.name in keep),
        disabled_services=tuple(
            sorted((*project.disabled_services, *(s for s in project.services if s.name not in keep)),
                   key=lambda s: s.name)
        ),
    )  # fmt: skip
    return without_unused_resources(selected)
