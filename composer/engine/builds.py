"""Building a project's images: the order and parallelism of the builds, and the builder's RUN steps
on composer's runtime (`RunStep` -> `ContainerSpec`). The app turns compose `build:` into requests.

The image layer may not import the runtime (the layers test keeps the arrows pointing down), so the
builder asks for a `StepRunner`; `RuntimeStepRunner`, one layer up, is the real one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import trio

from composer.errors import ComposerError
from composer.image.build import BuildError, BuildRequest, RunStep, build_image, dockerfile_refs
from composer.image.store import Image, ImageError, ImageStore, normalize_ref
from composer.runtime.launch import Runtime
from composer.runtime.spec import BindMount, ContainerSpec, Mount, Network, Stdio, TmpfsMount
from composer.storage.layout import Layout

__all__ = ["RuntimeStepRunner", "build_order", "build_services", "step_spec"]

Progress = Callable[[str], None]


def step_spec(step: RunStep) -> ContainerSpec:
    mounts: list[Mount] = []
    for mount in step.mounts:
        if mount.source is None:
            mounts.append(TmpfsMount(target=mount.target))
        else:
            mounts.append(BindMount(source=mount.source, target=mount.target, read_only=mount.read_only))
    return ContainerSpec(
        id=step.id,
        lower_dirs=step.lower_dirs,
        argv=step.argv,
        env=step.env,
        cwd=step.cwd,
        user=step.user,
        hostname=step.hostname,
        mounts=tuple(mounts),
        etc_hosts=step.etc_hosts,
        etc_resolv_conf=step.etc_resolv_conf,
        network=Network(mode="host" if step.network == "host" else "new"),
        stdio=Stdio(stdin=None, stdout=step.output, stderr=step.output),
    )


class RuntimeStepRunner:
    """Runs each RUN step as a container of `runtime`; its folder lives under `layout.containers`."""

    def __init__(self, runtime: Runtime, layout: Layout) -> None:
        self.runtime = runtime
        self.layout = layout

    async def run(self, step: RunStep) -> int:
        container = await self.runtime.start(step_spec(step))
        try:
            status = await container.wait()
        finally:
            await container.kill_and_reap()
        return status.code

    def upper_dir(self, step_id: str) -> Path:
        return self.layout.container_dir(step_id) / "upper"

    def remove(self, step_id: str) -> None:
        self.runtime.remove(step_id)


# --- ordering and running the builds ---------------------------------------------------------------


def _normalized(ref: str) -> str:
    try:
        return normalize_ref(ref)
    except ImageError:
        return ref


def build_order(requests: Sequence[BuildRequest]) -> dict[str, set[str]]:
    """service -> the services whose images its Dockerfile uses (FROM / COPY --from), to build first."""
    producers: dict[str, str] = {}
    for request in requests:
        for tag in request.tags:
            producers[_normalized(tag)] = request.service
    deps: dict[str, set[str]] = {}
    for request in requests:
        try:
            refs = dockerfile_refs(request)
        except ComposerError:
            refs = set()  # the build itself reports it
        deps[request.service] = {producers[r] for r in map(_normalized, refs) if r in producers} - {
            request.service
        }
    return deps


def _check_cycles(deps: dict[str, set[str]]) -> None:
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = " -> ".join([*path[path.index(name) :], name])
            raise BuildError(f"the services' Dockerfiles use each other's images in a cycle: {cycle}")
        state[name] = 1
        for dep in sorted(deps.get(name, ())):
            visit(dep, [*path, name])
        state[name] = 2

    for name in sorted(deps):
        visit(name, [])


async def build_services(
    requests: Sequence[BuildRequest],
    *,
    store: ImageStore,
    runtime: Runtime,
    layout: Layout,
    progress: Progress,
    parallel: int = 2,
) -> dict[str, Image]:
    """Build every request, at most `parallel` at once, a service after those it builds FROM. The first
    failure stops the others (their steps are cleaned up) and is raised."""
    deps = build_order(requests)
    _check_cycles(deps)
    done = {request.service: trio.Event() for request in requests}
    limiter = trio.CapacityLimiter(max(1, parallel))
    runner = RuntimeStepRunner(runtime, layout)
    results: dict[str, Image] = {}
    errors: list[ComposerError] = []

    async def one(request: BuildRequest, cancel: trio.CancelScope) -> None:
        try:
            for dep in sorted(deps.get(request.service, ())):
                await done[dep].wait()
            async with limiter:
                results[request.service] = await build_image(
                    request, store=store, runtime=runner, layout=layout, progress=progress
                )
        except ComposerError as exc:
            errors.append(exc)
            cancel.cancel()
        finally:
            done[request.service].set()

    async with trio.open_nursery() as nursery:
        for request in requests:
            nursery.start_soon(one, request, nursery.cancel_scope)
    if errors:
        raise errors[0]
    return results
