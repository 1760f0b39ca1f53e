"""One function per command. Wires the real backends; makes no decisions of its own."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from composer import __version__, log
from composer.errors import UsageError

if TYPE_CHECKING:
    from composer.image.build import BuildRequest
    from composer.image.store import Image, ImageStore
    from composer.options import (
        BuildOptions,
        ConfigOptions,
        GlobalOptions,
        ImageImportOptions,
        ImageInspectOptions,
        ImageListOptions,
        ImageLoadOptions,
        ImagePruneOptions,
        ImagePullOptions,
        ImageRemoveOptions,
        ImageTagOptions,
    )
    from composer.spec.loader import LoadOptions
    from composer.spec.model import Project, Service


def _warn(message: str) -> None:
    log.logger().warning(message)


def _load_options(
    options: GlobalOptions,
    *,
    cwd: str,
    environ: Mapping[str, str],
    interpolate: bool,
    services: tuple[str, ...] = (),
) -> LoadOptions:
    from composer.spec.loader import STDIN, LoadOptions

    stdin_text = sys.stdin.read() if STDIN in options.files else None
    return LoadOptions(
        cwd=cwd,
        environ=environ,
        files=options.files,
        stdin_text=stdin_text,
        project_name=options.project_name,
        project_directory=options.project_directory,
        env_files=options.env_files,
        profiles=options.profiles,
        interpolate=interpolate,
        services=services,
    )


def _dump(data: Any, fmt: str) -> str:
    if fmt == "json":
        from composer.spec.serialize import to_json

        return to_json(data) + "\n"
    import yaml

    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1 << 16)


def config(options: GlobalOptions, opts: ConfigOptions, *, cwd: str, environ: Mapping[str, str]) -> int:
    """`composer config`: load, check and print the project (or one facet of it)."""
    from composer.spec import graph
    from composer.spec.hashing import config_hash
    from composer.spec.loader import load_merged_tree, load_project
    from composer.spec.serialize import project_to_dict
    from composer.spec.source import to_plain

    load_options = _load_options(
        options, cwd=cwd, environ=environ, interpolate=not opts.no_interpolate, services=opts.selected
    )
    lines: list[str] | None = None
    if opts.no_interpolate:
        if opts.services or opts.volumes or opts.networks or opts.images or opts.hash or opts.profiles:
            raise UsageError(
                "--no-interpolate prints the whole file; it does not combine with a listing flag"
            )
        text = _dump(to_plain(load_merged_tree(load_options, _warn)), opts.format)
    else:
        loaded = load_project(load_options, _warn)
        project = loaded.project
        if opts.services:
            lines = list(graph.start_order(project))
        elif opts.volumes:
            lines = [volume.key for volume in project.volumes]
        elif opts.networks:
            lines = [network.key for network in project.networks]
        elif opts.images:
            lines = [service.image_name for service in project.services]
        elif opts.profiles:
            every = (*project.services, *project.disabled_services)
            lines = sorted({profile for service in every for profile in service.profiles})
        elif opts.hash is not None:
            wanted = (
                None if opts.hash.strip() == "*" else {s.strip() for s in opts.hash.split(",") if s.strip()}
            )
            known = {service.name for service in project.services}
            if wanted is not None and not wanted <= known:
                raise UsageError(f"no such service: {sorted(wanted - known)[0]}")
            lines = [
                f"{service.name} {config_hash(service)}"
                for service in project.services
                if wanted is None or service.name in wanted
            ]
        elif opts.environment:
            lines = [f"{key}={value}" for key, value in loaded.environment]
        if lines is None:
            text = _dump(project_to_dict(project, escape_dollars=True), opts.format)
        else:
            text = "".join(f"{line}\n" for line in lines)
    if opts.quiet:
        return 0
    if opts.output:
        with open(opts.output, "w", encoding="utf-8") as handle:
            handle.write(text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    return 0


def version(*, short: bool, fmt: str) -> int:
    if short:
        print(__version__)
    elif fmt == "json":
        print(json.dumps({"version": __version__}))
    else:
        print(f"composer version {__version__}")
    return 0


# --- images -------------------------------------------------------------------------------------------


def _store(options: GlobalOptions, environ: Mapping[str, str]) -> ImageStore:
    from composer.image.store import ImageStore
    from composer.storage.layout import Layout, root_from

    return ImageStore(Layout(root_from(environ, options.root)))


def human_size(size: float) -> str:
    """Docker's sizes: decimal units, three significant digits (`4.26MB`, `512B`)."""
    units = ("B", "kB", "MB", "GB", "TB", "PB", "EB")
    index = 0
    while size >= 1000 and index < len(units) - 1:
        size /= 1000
        index += 1
    return f"{size:.3g}{units[index]}"


def human_duration(seconds: float) -> str:
    """Docker's (go-units) rough durations: `About a minute`, `3 hours`, `2 weeks`."""
    whole = int(seconds)
    if whole < 1:
        return "Less than a second"
    if whole == 1:
        return "1 second"
    if whole < 60:
        return f"{whole} seconds"
    minutes = whole // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def _created(image: Image, now: float) -> tuple[str, str]:
    """(CreatedSince, CreatedAt) for an image; "N/A" when the config carries no usable date."""
    from datetime import datetime

    try:
        when = datetime.fromisoformat(image.created)
    except ValueError:
        return "N/A", "N/A"
    if when.year <= 1:
        return "N/A", "N/A"
    return human_duration(max(0.0, now - when.timestamp())) + " ago", when.strftime("%Y-%m-%d %H:%M:%S %z %Z")


def _split_tag(tag: str) -> tuple[str, str]:
    name, _, version = tag.rpartition(":")
    return name, version


def image_ls(options: GlobalOptions, opts: ImageListOptions, *, environ: Mapping[str, str]) -> int:
    """`composer image ls`: a table like `docker image ls`, ids only (-q), or JSON lines."""
    import time

    store = _store(options, environ)
    images = store.list()
    if not opts.all:
        from composer.image.buildcache import BuildCache

        hidden = BuildCache(store).image_ids()
        images = [image for image in images if image.tags or image.id not in hidden]
    if opts.quiet:
        sys.stdout.write("".join(f"{image.short_id}\n" for image in images))
        return 0
    now = time.time()
    rows: list[dict[str, str]] = []
    for image in images:
        since, at = _created(image, now)
        for tag in image.tags or ("<none>:<none>",):
            repository, version = _split_tag(tag)
            rows.append({
                "Containers": "N/A", "CreatedAt": at, "CreatedSince": since, "Digest": "<none>",
                "ID": image.short_id, "Repository": repository, "SharedSize": "N/A",
                "Size": human_size(image.size), "Tag": version, "UniqueSize": "N/A",
                "VirtualSize": human_size(image.size),
            })  # fmt: skip
    if opts.format == "json":
        sys.stdout.write("".join(json.dumps(row) + "\n" for row in rows))
        return 0
    header = ("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE")
    table = [header] + [(r["Repository"], r["Tag"], r["ID"], r["CreatedSince"], r["Size"]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        cells = [cell.ljust(width + 3) for cell, width in zip(row, widths, strict=False)]
        sys.stdout.write("".join(cells) + row[-1] + "\n")
    return 0


def _inspect_one(store: ImageStore, image: Image) -> dict[str, Any]:
    raw = store.raw_config(image)
    history = raw.get("history") or []
    last = history[-1] if history and isinstance(history[-1], dict) else {}
    return {
        "Id": image.id,
        "RepoTags": list(image.tags),
        "RepoDigests": [],
        "Parent": "",
        "Comment": str(last.get("comment") or ""),
        "Created": image.created,
        "Author": str(raw.get("author") or ""),
        "Config": image.config.to_oci(),
        "Architecture": image.architecture,
        "Os": image.os,
        "Size": image.size,
        "GraphDriver": {
            "Name": "overlay",
            "Data": {"LowerDir": ":".join(str(path) for path in store.layer_dirs(image))},
        },
        "RootFS": {"Type": "layers", "Layers": list(image.diff_ids)},
        "Metadata": {"LastTagTime": ""},
    }


def image_inspect(options: GlobalOptions, opts: ImageInspectOptions, *, environ: Mapping[str, str]) -> int:
    """`composer image inspect`: a JSON array like docker's; every missing image is an error line."""
    from composer.errors import one_line

    store = _store(options, environ)
    found: list[dict[str, Any]] = []
    missing: list[str] = []
    for ref in opts.images:
        image = store.resolve(ref)
        if image is None:
            missing.append(ref)
        else:
            found.append(_inspect_one(store, image))
    sys.stdout.write(json.dumps(found, indent=4) + "\n")
    for ref in missing:
        print(f"Error: no such image: {one_line(ref)}", file=sys.stderr)
    return 1 if missing else 0


def image_rm(options: GlobalOptions, opts: ImageRemoveOptions, *, environ: Mapping[str, str]) -> int:
    """`composer image rm`: every image in turn; errors are reported and the rest still removed."""
    from composer.errors import ComposerError

    store = _store(options, environ)
    failed = 0
    for ref in opts.images:
        try:
            result = store.remove(ref, force=opts.force)
        except ComposerError as exc:
            print(f"Error: {exc.render()}", file=sys.stderr)
            failed += 1
            continue
        for tag in result.untagged:
            print(f"Untagged: {tag}")
        for item in (*result.deleted, *result.layers):
            print(f"Deleted: {item}")
    return 1 if failed else 0


def image_prune(options: GlobalOptions, opts: ImagePruneOptions, *, environ: Mapping[str, str]) -> int:
    """`composer image prune`: dangling images and the layers nothing uses (asks unless -f)."""
    if not opts.force:
        sys.stdout.write(
            "WARNING! This will remove all dangling images and unused layers.\n"
            "Are you sure you want to continue? [y/N] "
        )
        sys.stdout.flush()
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            return 0
    result = _store(options, environ).prune()
    if result.images or result.layers:
        print("Deleted Images:")
        for item in result.images:
            print(f"deleted: {item}")
        for item in result.layers:
            print(f"deleted layer: {item}")
        print()
    print(f"Total reclaimed space: {human_size(result.reclaimed)}")
    return 0


def image_load(options: GlobalOptions, opts: ImageLoadOptions, *, environ: Mapping[str, str]) -> int:
    """`composer image load`: a docker save tarball or an OCI layout, from -i FILE or standard input."""
    from pathlib import Path

    from composer.image.archive import load

    store = _store(options, environ)
    if opts.input in (None, "-"):
        if sys.stdin.isatty():
            raise UsageError("requested load from standard input, but it is a terminal: use -i FILE")
        loaded = load(store, sys.stdin.buffer, label="<stdin>")
    else:
        loaded = load(store, Path(str(opts.input)))
    if not opts.quiet:
        for item in loaded:
            if item.tags:
                for tag in item.tags:
                    print(f"Loaded image: {tag}")
            else:
                print(f"Loaded image ID: {item.image.id}")
    return 0


def image_import(options: GlobalOptions, opts: ImageImportOptions, *, environ: Mapping[str, str]) -> int:
    """`composer image import FILE [NAME[:TAG]]`: one layer from a root filesystem tarball."""
    from pathlib import Path

    from composer.image.archive import import_rootfs

    store = _store(options, environ)
    if opts.source == "-":
        image = import_rootfs(
            store, sys.stdin.buffer, opts.reference, opts.changes, message=opts.message, label="<stdin>"
        )
    else:
        image = import_rootfs(store, Path(opts.source), opts.reference, opts.changes, message=opts.message)
    print(image.id)
    return 0


def image_pull(options: GlobalOptions, opts: ImagePullOptions, *, environ: Mapping[str, str]) -> int:
    """`composer image pull`: there is no registry; base images are bootstrapped from Debian's mirror
    (once: a second pull finds the stored image). Progress lines go to standard error."""
    from composer.image.base import ensure_base_image

    store = _store(options, environ)
    store.layout.ensure()

    def progress(line: str) -> None:
        if not opts.quiet:
            print(f"{opts.reference}: {line}", file=sys.stderr, flush=True)

    image = ensure_base_image(store, opts.reference, layout=store.layout, progress=progress, environ=environ)
    if image is None:
        print(f"{opts.reference}: the empty image needs no pull", file=sys.stderr)
        return 0
    print(image.id if opts.quiet else f"{', '.join(image.tags)}  {image.short_id}")
    return 0


def image_tag(options: GlobalOptions, opts: ImageTagOptions, *, environ: Mapping[str, str]) -> int:
    _store(options, environ).tag(opts.source, opts.target)
    return 0


def build(options: GlobalOptions, opts: BuildOptions, *, cwd: str, environ: Mapping[str, str]) -> int:
    """`composer build [SERVICE...]`: build the services that have `build:`, independent ones in parallel.
    Progress lines (`[web 3/7] RUN ...`) go to standard error; -q keeps only errors."""
    from composer.spec.loader import load_project

    loaded = load_project(
        _load_options(options, cwd=cwd, environ=environ, interpolate=True, services=opts.services), _warn
    )
    chosen = services_to_build(loaded.project, opts.services)
    if not chosen:
        print("no service to build (none has a build section)", file=sys.stderr)
        return 0
    extra = parse_build_args(opts.build_args, environ)
    environment = dict(loaded.environment)
    requests = [
        service_request(service, environment=environment, build_args=extra, no_cache=opts.no_cache)
        for service in chosen
    ]
    return _run_builds(options, opts, requests, environ)


def _run_builds(
    options: GlobalOptions, opts: BuildOptions, requests: list[Any], environ: Mapping[str, str]
) -> int:
    from composer.runtime.forkserver import ForkServer

    forkserver = ForkServer.start()  # before trio: the fork-server must not inherit its threads
    try:
        import trio

        from composer.engine.builds import build_services
        from composer.runtime.launch import Runtime

        store = _store(options, environ)
        layout = store.layout.ensure()
        runtime = Runtime(layout, forkserver)

        def progress(line: str) -> None:
            if not opts.quiet:
                print(line, file=sys.stderr, flush=True)

        async def main() -> dict[str, Image]:
            return await build_services(
                requests,
                store=store,
                runtime=runtime,
                layout=layout,
                progress=progress,
                parallel=opts.parallel,
            )

        results = trio.run(main)
    finally:
        forkserver.close()
    if not opts.quiet:
        for name in sorted(results):
            image = results[name]
            print(
                f"[{name}] built {', '.join(image.tags) or image.short_id} ({image.short_id})",
                file=sys.stderr,
            )
    return 0


# --- compose build: -> build requests -----------------------------------------------------------------


def _is_url(context: str) -> bool:
    return "://" in context or context.startswith("git@")


def parse_build_args(items: Sequence[str], environ: Mapping[str, str]) -> dict[str, str]:
    """`--build-arg K=V` / bare `K` (its value from the environment; left out when unset)."""
    out: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not key:
            raise UsageError(f"--build-arg {item!r}: needs KEY[=VALUE]")
        if eq:
            out[key] = value
        elif key in environ:
            out[key] = environ[key]
    return out


def service_request(
    service: Service,
    *,
    environment: Mapping[str, str],
    build_args: Mapping[str, str] | None = None,
    no_cache: bool = False,
) -> BuildRequest:
    """The build of one service, by Compose's rules: `args` with a bare name take its value from the
    project's environment (left out when unset), command-line build args win; the image is named
    `service.image_name` (`image:`, else `<project>-<service>`) and also gets `build.tags`."""
    from pathlib import Path

    from composer.image.build import BuildError, BuildRequest

    build = service.build
    if build is None:
        raise UsageError(f"service {service.name} has no build section")
    if _is_url(build.context):
        raise BuildError(
            f"build context {build.context}: remote contexts are not supported", service=service.name
        )
    if service.pull_policy == "always":
        raise BuildError(
            "pull_policy: always needs an image registry, and composer has none; use build, missing or never",
            service=service.name,
        )
    args: dict[str, str] = {}
    for key, value in build.args:
        if value is not None:
            args[key] = value
        elif key in environment:
            args[key] = environment[key]
    args.update(build_args or {})
    tags = tuple(dict.fromkeys([service.image_name, *build.tags]))
    return BuildRequest(
        context=Path(build.context),
        dockerfile=Path(build.dockerfile) if build.dockerfile else None,
        dockerfile_inline=build.dockerfile_inline,
        target=build.target,
        args=tuple(sorted(args.items())),
        labels=build.labels,
        tags=tags,
        no_cache=no_cache or build.no_cache,
        service=service.name,
    )


def services_to_build(project: Project, names: Sequence[str]) -> list[Service]:
    """The services named (each must exist), or all; only those with `build:`, in name order."""
    known = {service.name: service for service in project.services}
    for name in names:
        if name not in known:
            raise UsageError(f"no such service: {name}")
    chosen = [known[name] for name in sorted(set(names))] if names else list(project.services)
    return [service for service in chosen if service.build is not None]
