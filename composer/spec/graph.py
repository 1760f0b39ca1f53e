"""The dependency graph of a project's enabled services: start levels, stop order, cycles.

A service depends on the services named in its `depends_on` (normalization has already added the
implicit ones: links, `network_mode: service:x`, `volumes_from`, ...). Dependencies on services that
are not enabled (a `required: false` dependency on a disabled profile) are left out. Everything is
sorted, so the same project always gives the same order and the same cycle message.
"""

from __future__ import annotations

from composer.spec.model import Project

__all__ = ["dependencies", "find_cycle", "start_levels", "start_order", "stop_order"]


def dependencies(project: Project) -> dict[str, tuple[str, ...]]:
    """Service name -> the enabled services it depends on, sorted."""
    enabled = {service.name for service in project.services}
    return {
        service.name: tuple(sorted({dep.service for dep in service.depends_on if dep.service in enabled}))
        for service in project.services
    }


def find_cycle(project: Project) -> tuple[str, ...] | None:
    """A dependency cycle as `(a, b, a)`, starting at its smallest name, or None.

    Depth-first from each service in sorted order, so the cycle reported is always the same one.
    """
    deps = dependencies(project)
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(name: str) -> tuple[str, ...] | None:
        state[name] = 1
        path.append(name)
        for dep in deps.get(name, ()):
            if state.get(dep) == 1:
                cycle = path[path.index(dep) :]
                start = cycle.index(min(cycle))
                ordered = cycle[start:] + cycle[:start]
                return (*ordered, ordered[0])
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        state[name] = 2
        return None

    for name in sorted(deps):
        if name not in state:
            found = visit(name)
            if found:
                return found
    return None


def start_levels(project: Project) -> tuple[tuple[str, ...], ...]:
    """Services grouped by level: a level depends only on earlier levels, so each level can start in
    parallel. Raises ValueError on a cycle (the loader reports cycles before anyone gets here)."""
    deps = dependencies(project)
    placed: dict[str, int] = {}
    remaining = set(deps)
    levels: list[tuple[str, ...]] = []
    while remaining:
        level = sorted(name for name in remaining if all(dep in placed for dep in deps[name]))
        if not level:
            raise ValueError(f"dependency cycle among {sorted(remaining)}")
        for name in level:
            placed[name] = len(levels)
        remaining.difference_update(level)
        levels.append(tuple(level))
    return tuple(levels)


def start_order(project: Project) -> tuple[str, ...]:
    """Every enabled service, dependencies first."""
    return tuple(name for level in start_levels(project) for name in level)


def stop_order(project: Project) -> tuple[tuple[str, ...], ...]:
    """Levels to stop, dependents first: the start levels reversed."""
    return tuple(reversed(start_levels(project)))
