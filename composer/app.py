"""One function per command. Wires the real backends; makes no decisions of its own."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from composer import __version__, log
from composer.errors import UsageError

if TYPE_CHECKING:
    from composer.options import ConfigOptions, GlobalOptions
    from composer.spec.loader import LoadOptions


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
