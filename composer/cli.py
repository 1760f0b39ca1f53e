"""argv -> frozen options; configure logging; run the command; ComposerError -> one line + exit code.

Only this module maps errors to exit codes. Heavy modules (the spec layer, trio, pyroute2) are
imported inside the commands, so `composer --help` answers quickly.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn

from composer import __version__, dataclass_cache
from composer.errors import ComposerError, UsageError
from composer.options import (
    BuildOptions,
    ConfigOptions,
    DownArgs,
    ExecArgs,
    GlobalOptions,
    ImageImportOptions,
    ImageInspectOptions,
    ImageListOptions,
    ImageLoadOptions,
    ImagePruneOptions,
    ImagePullOptions,
    ImageRemoveOptions,
    ImageTagOptions,
    LogsArgs,
    PsArgs,
    RunArgs,
    ServicesArgs,
    UpArgs,
)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a UsageError (exit 16, as Compose) instead of SystemExit(2)."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments: "):
            message = "unknown flag: " + message.removeprefix("unrecognized arguments: ")
        raise UsageError(f"{message}\nSee '{self.prog} --help'.")


def _add_global_flags(
    parser: argparse.ArgumentParser,
    *,
    suppress: bool,
    project: bool = True,
    short_file: bool = True,
    short_project: bool = True,
) -> None:
    """The global flags, accepted before the command and (as Compose allows) after it. `project=False`
    leaves out the compose-file flags (for `image ...`, whose `-f` means --force, as in Docker)."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("global options")
    if project:
        _add_project_flags(group, default, short_file=short_file, short_project=short_project)
    group.add_argument(
        "--debug", action="store_true", default=default(False), help="show tracebacks and debug logs"
    )
    group.add_argument(
        "--log-format", dest="log_format", choices=("text", "json"), default=default("text"),
        help="format of log lines on stderr",
    )  # fmt: skip
    group.add_argument(
        "--root", dest="root", default=default(None), metavar="DIR",
        help="where images and containers live (else COMPOSER_ROOT, else /var/lib/composer)",
    )  # fmt: skip


def _add_project_flags(
    group: argparse._ArgumentGroup,
    default: Callable[[object], object],
    *,
    short_file: bool = True,
    short_project: bool = True,
) -> None:
    group.add_argument(
        *(("-f", "--file") if short_file else ("--file",)), dest="files", action="append",
        default=default([]), metavar="FILE",
        help="compose file (repeatable; '-' reads standard input)",
    )  # fmt: skip
    group.add_argument(
        *(("-p", "--project-name") if short_project else ("--project-name",)), dest="project_name",
        default=default(None), metavar="NAME",
    )  # fmt: skip
    group.add_argument(
        "--profile", dest="profiles", action="append", default=default([]), metavar="PROFILE",
        help="enable a profile (repeatable)",
    )  # fmt: skip
    group.add_argument(
        "--env-file", dest="env_files", action="append", default=default([]), metavar="PATH",
        help="an environment file to use instead of .env (repeatable)",
    )  # fmt: skip
    group.add_argument("--project-directory", dest="project_directory", default=default(None), metavar="DIR")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="composer",
        description="Define and run multi-container applications from compose files, without Docker.",
    )
    _add_global_flags(parser, suppress=False)
    parser.add_argument("-v", "--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    config = commands.add_parser(
        "config", help="parse, resolve and render the compose file in canonical format"
    )
    _add_global_flags(config, suppress=True)
    config.add_argument("--format", choices=("yaml", "json"), default="yaml", help="output format")
    config.add_argument("-q", "--quiet", action="store_true", help="only validate, print nothing")
    config.add_argument("--services", action="store_true", help="print the service names, one per line")
    config.add_argument("--volumes", action="store_true", help="print the volume names, one per line")
    config.add_argument("--networks", action="store_true", help="print the network names, one per line")
    config.add_argument("--images", action="store_true", help="print the image names, one per line")
    config.add_argument(
        "--profiles", dest="list_profiles", action="store_true", help="print the profile names, one per line"
    )
    config.add_argument(
        "--hash", metavar="SERVICES", help='print "service hash" for SERVICES (comma list or "*")'
    )
    config.add_argument(
        "--no-interpolate", action="store_true", help="do not interpolate environment variables"
    )
    config.add_argument("--environment", action="store_true", help="print the interpolation environment")
    config.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")
    config.add_argument(
        "selected", nargs="*", metavar="SERVICE", help="only these services and what they depend on"
    )

    version = commands.add_parser("version", help="show the composer version")
    _add_global_flags(version, suppress=True)
    version.add_argument("--short", action="store_true", help="print only the version number")
    version.add_argument("--format", choices=("pretty", "json"), default="pretty")
    build = commands.add_parser("build", help="build the images of services that have `build:`")
    _add_global_flags(build, suppress=True)
    build.add_argument("services", nargs="*", metavar="SERVICE", help="only these services (default: all)")
    build.add_argument("--no-cache", action="store_true", help="do not use the layer cache")
    build.add_argument(
        "--build-arg", dest="build_args", action="append", default=[], metavar="KEY[=VALUE]",
        help="set a build arg (repeatable); a bare KEY takes its value from the environment",
    )  # fmt: skip
    build.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    _add_image_commands(commands)
    _add_lifecycle_commands(commands)
    return parser


def _add_lifecycle_commands(commands: argparse._SubParsersAction[_Parser]) -> None:
    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text)
        # `logs -f` is --follow, `rm -f` --force and `run -p` --publish, as in Compose: there, -f FILE
        # and -p NAME go before the command
        _add_global_flags(parser, suppress=True, short_file=name not in ("logs", "rm"),
                          short_project=name != "run")  # fmt: skip
        return parser

    def services(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("services", nargs="*", metavar="SERVICE", help="only these services")

    def timeout(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("-t", "--timeout", type=float, metavar="SECONDS",
                            help="seconds to wait for a container to stop before killing it")  # fmt: skip

    for name, text in (("up", "create and start the containers"), ("create", "create the containers")):
        up = command(name, text)
        services(up)
        if name == "up":
            up.add_argument("-d", "--detach", action="store_true", help="run in the background")
            up.add_argument("--wait", action="store_true", help="with -d: wait until running or healthy")
            up.add_argument("--wait-timeout", type=float, metavar="SECONDS", help="give up --wait after this")
            up.add_argument("--abort-on-container-exit", action="store_true", help="stop all when one exits")
            up.add_argument("--abort-on-container-failure", action="store_true",
                            help="stop all when one exits with a non-zero code")  # fmt: skip
            up.add_argument("--exit-code-from", metavar="SERVICE", help="return this service's exit code")
            up.add_argument("--attach", action="append", default=[], metavar="SERVICE", help="follow these")
            up.add_argument("--no-attach", action="append", default=[], metavar="SERVICE", help="not these")
            up.add_argument("--no-log-prefix", action="store_true", help="no container prefix on log lines")
            up.add_argument("--no-color", action="store_true", help="monochrome output")
            up.add_argument("--timestamps", action="store_true", help="show timestamps")
            up.add_argument("--no-start", action="store_true", help="create, do not start")
            timeout(up)
        up.add_argument("--build", action="store_true", help="build images before starting")
        up.add_argument("--no-build", action="store_true", help="do not build missing images")
        up.add_argument("--force-recreate", action="store_true", help="recreate even if nothing changed")
        up.add_argument("--no-recreate", action="store_true", help="keep existing containers")
        up.add_argument("--always-recreate-deps", action="store_true", help="recreate dependencies too")
        up.add_argument("--no-deps", action="store_true", help="do not start linked services")
        up.add_argument("--remove-orphans", action="store_true", help="remove containers of removed services")
        up.add_argument("--scale", action="append", default=[], metavar="SERVICE=NUM", help="replicas")
        up.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")

    down = command("down", "stop and remove containers and networks")
    down.add_argument("-v", "--volumes", action="store_true", help="also remove named and anonymous volumes")
    down.add_argument("--rmi", choices=("all", "local"), help="also remove images")
    down.add_argument("--remove-orphans", action="store_true", help="remove containers of removed services")
    down.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    timeout(down)

    ps = command("ps", "list containers")
    services(ps)
    ps.add_argument("-a", "--all", action="store_true", help="also stopped containers")
    ps.add_argument("-q", "--quiet", action="store_true", help="only ids")
    ps.add_argument("--services", dest="list_services", action="store_true", help="only service names")
    ps.add_argument("--status", action="append", default=[], help="only containers in this state")
    ps.add_argument("--filter", metavar="status=STATE", help="only containers in this state")
    ps.add_argument("--format", default="table", choices=("table", "json"), help="output format")

    logs = command("logs", "show container output")
    services(logs)
    logs.add_argument("-f", "--follow", action="store_true", help="follow the output")
    logs.add_argument("-n", "--tail", default="all", help="lines from the end of each container's log")
    logs.add_argument("-t", "--timestamps", action="store_true", help="show timestamps")
    logs.add_argument("--since", help="since a timestamp or relative time (42m)")
    logs.add_argument("--until", help="until a timestamp or relative time")
    logs.add_argument("--no-color", action="store_true", help="monochrome output")
    logs.add_argument("--no-log-prefix", action="store_true", help="no container prefix")

    for name, text in (
        ("start", "start existing containers"), ("stop", "stop running containers"),
        ("restart", "restart containers"), ("kill", "send a signal to containers"),
        ("pause", "pause containers (freezer cgroup)"), ("unpause", "unpause containers"),
        ("rm", "remove stopped containers"),
    ):  # fmt: skip
        parser = command(name, text)
        services(parser)
        parser.add_argument("--dry-run", action="store_true", help=argparse.SUPPRESS)
        if name in ("stop", "restart", "rm"):
            timeout(parser)
        if name == "kill":
            parser.add_argument("-s", "--signal", default="SIGKILL", help="the signal (default SIGKILL)")
        if name == "rm":
            parser.add_argument("-f", "--force", action="store_true", help="do not ask")
            parser.add_argument("-s", "--stop", action="store_true", help="stop them first")
            parser.add_argument("-v", "--volumes", action="store_true", help="their anonymous volumes too")

    exec_ = command("exec", "run a command in a running container")
    exec_.add_argument("-d", "--detach", action="store_true", help="run it in the background")
    exec_.add_argument("-T", "--no-TTY", dest="no_tty", action="store_true", help="no pseudo-terminal")
    exec_.add_argument("-u", "--user", help="run as this user")
    exec_.add_argument("-w", "--workdir", help="working directory")
    exec_.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VAL", help="set a variable")
    exec_.add_argument("--index", type=int, default=1, help="which container of the service (default 1)")
    exec_.add_argument("service", metavar="SERVICE")
    exec_.add_argument("exec_command", nargs=argparse.REMAINDER, metavar="COMMAND")

    port = command("port", "print the public address of a container port")
    port.add_argument("service", metavar="SERVICE")
    port.add_argument("private_port", metavar="PRIVATE_PORT")
    port.add_argument("--protocol", default="tcp", choices=("tcp", "udp"), help="tcp or udp")
    port.add_argument("--index", type=int, default=1, help="which container of the service (default 1)")

    top = command("top", "show the processes of running containers")
    services(top)

    images = command("images", "list the images the containers use")
    services(images)
    images.add_argument("-q", "--quiet", action="store_true", help="only ids")
    images.add_argument("--format", default="table", choices=("table", "json"), help="output format")

    wait = command(
        "wait", "block until the services' containers stop; print nothing, exit with the first code"
    )
    wait.add_argument("services", nargs="+", metavar="SERVICE")
    wait.add_argument("--down-project", action="store_true", help="then take the project down")

    events = command("events", "stream container events")
    services(events)
    events.add_argument("--json", action="store_true", help="one JSON object per line")

    run = command("run", "run a one-off command in a new container of a service")
    run.add_argument("--rm", dest="remove", action="store_true", help="remove the container when it exits")
    run.add_argument("--no-deps", action="store_true", help="do not start the services it depends on")
    run.add_argument("-d", "--detach", action="store_true", help="run in the background, print its name")
    run.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VAL", help="set a variable")
    run.add_argument("--entrypoint", help="override the entrypoint")
    run.add_argument("--name", help="the container's name")
    run.add_argument("-u", "--user", help="run as this user")
    run.add_argument("-w", "--workdir", help="working directory")
    run.add_argument("-T", "--no-TTY", dest="no_tty", action="store_true",
                     help="no pseudo-terminal (default: one if stdin and stdout are terminals)")  # fmt: skip
    run.add_argument("-t", "--tty", action="store_true", help="a pseudo-terminal even without a terminal")
    run.add_argument("-i", "--interactive", action="store_true", help="accepted: stdin is always attached")
    run.add_argument("-P", "--service-ports", action="store_true", help="publish the service's ports")
    run.add_argument("-p", "--publish", action="append", default=[], metavar="[IP:][HOST:]PORT[/PROTO]",
                     help="publish a container port (repeatable)")  # fmt: skip
    run.add_argument("-v", "--volume", dest="volumes", action="append", default=[], metavar="VOLUME",
                     help="mount a volume or bind a host path (SOURCE:TARGET[:ro], repeatable)")  # fmt: skip
    run.add_argument("-l", "--label", dest="labels", action="append", default=[], metavar="KEY=VALUE",
                     help="add or override a label (repeatable)")  # fmt: skip
    run.add_argument("--use-aliases", action="store_true",
                     help="the service's name and network aliases for this container too")  # fmt: skip
    run.add_argument("--build", action="store_true", help="build the image first")
    run.add_argument("service", metavar="SERVICE")
    run.add_argument("run_command", nargs=argparse.REMAINDER, metavar="COMMAND")

    cp = command("cp", "copy files between a running container and the host")
    cp.add_argument("--index", type=int, default=1, help="which container of the service (default 1)")
    cp.add_argument("-a", "--archive", action="store_true", help="keep the files' owners (uid/gid)")
    cp.add_argument("-L", "--follow-link", action="store_true", help="copy what SRC links to, not the link")
    cp.add_argument("source", metavar="SRC", help="SERVICE:PATH, a host path, or - (a tar stream on stdin)")
    cp.add_argument("dest", metavar="DEST", help="SERVICE:PATH, a host path, or - (a tar stream on stdout)")

    ls = command("ls", "list projects")
    ls.add_argument("-a", "--all", action="store_true", help="also stopped projects")
    ls.add_argument("-q", "--quiet", action="store_true", help="only names")
    ls.add_argument("--format", default="table", choices=("table", "json"), help="output format")


def _add_image_commands(commands: argparse._SubParsersAction[_Parser]) -> None:
    image = commands.add_parser(
        "image", help="manage images: ls, rm, inspect, prune, load, import, pull, tag"
    )
    _add_global_flags(image, suppress=True, project=False)
    sub = image.add_subparsers(dest="image_command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def leaf(name: str, help_text: str, *aliases: str) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, help=help_text, aliases=list(aliases))
        _add_global_flags(parser, suppress=True, project=False)
        return parser

    ls = leaf("ls", "list images", "list")
    ls.add_argument("-q", "--quiet", action="store_true", help="only show image ids")
    ls.add_argument("-a", "--all", action="store_true", help="also show intermediate build images")
    ls.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    rm = leaf("rm", "remove one or more images (by tag or id)", "remove")
    rm.add_argument("images", nargs="+", metavar="IMAGE")
    rm.add_argument("-f", "--force", action="store_true", help="remove an image id that several tags name")
    inspect = leaf("inspect", "show images' details as a JSON array")
    inspect.add_argument("images", nargs="+", metavar="IMAGE")
    prune = leaf("prune", "remove dangling images and unused layers")
    prune.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    load = leaf("load", "load images from a docker save tarball or an OCI layout (directory or tar)")
    load.add_argument("-i", "--input", metavar="FILE", help="read from FILE instead of standard input")
    load.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    imp = leaf("import", "make an image from a root filesystem tarball")
    imp.add_argument("source", metavar="FILE", help="a tar file (plain, gzip, xz, bzip2), or - for stdin")
    imp.add_argument("reference", nargs="?", metavar="REPOSITORY[:TAG]")
    imp.add_argument(
        "-c", "--change", dest="changes", action="append", default=[], metavar="INSTRUCTION",
        help="apply a Dockerfile instruction (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, "
        "VOLUME, WORKDIR); repeatable",
    )  # fmt: skip
    imp.add_argument("-m", "--message", default="", help="commit message for the image's history")
    pull = leaf("pull", "bootstrap a base image (scratch, debian:<suite>) from the host's Debian mirror")
    pull.add_argument("reference", metavar="NAME[:TAG]")
    pull.add_argument("-q", "--quiet", action="store_true", help="print only the image id")
    tag = leaf("tag", "give an image another name")
    tag.add_argument("source", metavar="SOURCE_IMAGE[:TAG]")
    tag.add_argument("target", metavar="TARGET_IMAGE[:TAG]")


def _global_options(args: argparse.Namespace) -> GlobalOptions:
    return GlobalOptions(
        files=tuple(args.files),
        project_name=args.project_name,
        profiles=tuple(p for value in args.profiles for p in value.split(",") if p),
        env_files=tuple(args.env_files),
        project_directory=args.project_directory,
        debug=args.debug,
        log_format=args.log_format,
        root=args.root,
    )


def _config_options(args: argparse.Namespace) -> ConfigOptions:
    return ConfigOptions(
        format=args.format,
        quiet=args.quiet,
        services=args.services,
        volumes=args.volumes,
        networks=args.networks,
        images=args.images,
        profiles=args.list_profiles,
        hash=args.hash,
        no_interpolate=args.no_interpolate,
        environment=args.environment,
        output=args.output,
        selected=tuple(args.selected),
    )


_IMAGE_ALIASES = {"list": "ls", "remove": "rm"}


def _run_image(options: GlobalOptions, args: argparse.Namespace) -> int:
    from composer import app

    environ = dict(os.environ)
    command = _IMAGE_ALIASES.get(args.image_command, args.image_command)
    if command == "ls":
        return app.image_ls(
            options, ImageListOptions(quiet=args.quiet, format=args.format, all=args.all), environ=environ
        )
    if command == "rm":
        opts = ImageRemoveOptions(images=tuple(args.images), force=args.force)
        return app.image_rm(options, opts, environ=environ)
    if command == "inspect":
        return app.image_inspect(options, ImageInspectOptions(images=tuple(args.images)), environ=environ)
    if command == "prune":
        return app.image_prune(options, ImagePruneOptions(force=args.force), environ=environ)
    if command == "load":
        return app.image_load(options, ImageLoadOptions(input=args.input, quiet=args.quiet), environ=environ)
    if command == "import":
        opts_import = ImageImportOptions(
            source=args.source, reference=args.reference, changes=tuple(args.changes), message=args.message
        )
        return app.image_import(options, opts_import, environ=environ)
    if command == "pull":
        return app.image_pull(
            options, ImagePullOptions(reference=args.reference, quiet=args.quiet), environ=environ
        )
    if command == "tag":
        opts_tag = ImageTagOptions(source=args.source, target=args.target)
        return app.image_tag(options, opts_tag, environ=environ)
    raise UsageError(f"unknown command 'image {command}'")  # pragma: no cover - argparse stops it


def _run_lifecycle(options: GlobalOptions, args: argparse.Namespace) -> int | None:
    from composer.app import lifecycle

    cwd, environ = os.getcwd(), dict(os.environ)
    command = args.command
    if command in ("up", "create"):
        up = UpArgs(
            services=tuple(args.services), detach=getattr(args, "detach", False), build=args.build,
            no_build=args.no_build, force_recreate=args.force_recreate, no_recreate=args.no_recreate,
            always_recreate_deps=args.always_recreate_deps, no_deps=args.no_deps,
            remove_orphans=args.remove_orphans, scale=tuple(args.scale), wait=getattr(args, "wait", False),
            wait_timeout=getattr(args, "wait_timeout", None),
            abort_on_container_exit=getattr(args, "abort_on_container_exit", False),
            abort_on_container_failure=getattr(args, "abort_on_container_failure", False),
            exit_code_from=getattr(args, "exit_code_from", None), attach=tuple(getattr(args, "attach", ())),
            no_attach=tuple(getattr(args, "no_attach", ())),
            no_log_prefix=getattr(args, "no_log_prefix", False),
            no_color=getattr(args, "no_color", False), timestamps=getattr(args, "timestamps", False),
            timeout=getattr(args, "timeout", None), dry_run=args.dry_run,
            no_start=command == "create" or getattr(args, "no_start", False),
        )  # fmt: skip
        if up.wait and not up.detach and command == "up":
            up = dataclasses.replace(up, detach=True)  # --wait implies -d, as in Compose
        return lifecycle.up(options, up, cwd=cwd, environ=environ)
    if command == "down":
        down = DownArgs(volumes=args.volumes, rmi=args.rmi, remove_orphans=args.remove_orphans,
                        timeout=args.timeout, dry_run=args.dry_run)  # fmt: skip
        return lifecycle.down(options, down, cwd=cwd, environ=environ)
    if command == "ps":
        status = list(args.status)
        if args.filter is not None:
            key, eq, value = args.filter.partition("=")
            if not eq:
                raise UsageError("arguments to --filter should be in form KEY=VAL")
            if key != "status":
                raise UsageError(f"unknown filter {key} (supported: status)")
            status.append(value)
        ps = PsArgs(services=tuple(args.services), all=args.all, quiet=args.quiet,
                    list_services=args.list_services, status=tuple(status),
                    format=args.format)  # fmt: skip
        return lifecycle.ps(options, ps, cwd=cwd, environ=environ)
    if command == "logs":
        logs = LogsArgs(services=tuple(args.services), follow=args.follow, tail=args.tail,
                        timestamps=args.timestamps, since=args.since, until=args.until,
                        no_color=args.no_color, no_log_prefix=args.no_log_prefix)  # fmt: skip
        return lifecycle.logs(options, logs, cwd=cwd, environ=environ)
    if command in ("start", "stop", "restart", "kill", "pause", "unpause", "rm"):
        svc = ServicesArgs(
            command=command, services=tuple(args.services), timeout=getattr(args, "timeout", None),
            signal=getattr(args, "signal", "SIGKILL"), force=getattr(args, "force", False),
            stop=getattr(args, "stop", False), volumes=getattr(args, "volumes", False),
        )  # fmt: skip
        return lifecycle.services_command(options, svc, cwd=cwd, environ=environ)
    if command == "exec":
        argv = list(args.exec_command)
        if not argv:
            raise UsageError("exec: a command is required")
        ex = ExecArgs(service=args.service, command=tuple(argv), detach=args.detach, no_tty=args.no_tty,
                      user=args.user, workdir=args.workdir, env=tuple(args.env),
                      index=args.index)  # fmt: skip
        return lifecycle.exec_(options, ex, cwd=cwd, environ=environ)
    if command == "run":
        run = RunArgs(service=args.service, command=tuple(args.run_command), remove=args.remove,
                      no_deps=args.no_deps, detach=args.detach, env=tuple(args.env),
                      entrypoint=args.entrypoint, name=args.name, user=args.user, workdir=args.workdir,
                      no_tty=args.no_tty, tty=args.tty, service_ports=args.service_ports,
                      publish=tuple(args.publish), volumes=tuple(args.volumes), labels=tuple(args.labels),
                      use_aliases=args.use_aliases, build=args.build)  # fmt: skip
        return lifecycle.run(options, run, cwd=cwd, environ=environ)
    if command == "cp":
        return lifecycle.cp(
            options, source=args.source, dest=args.dest, index=args.index, archive=args.archive,
            follow=args.follow_link, cwd=cwd, environ=environ,
        )  # fmt: skip
    if command == "port":
        return lifecycle.port(options, service=args.service, private_port=args.private_port,
                              protocol=args.protocol, index=args.index, cwd=cwd, environ=environ)  # fmt: skip
    if command == "top":
        return lifecycle.top(options, services=tuple(args.services), cwd=cwd, environ=environ)
    if command == "images":
        return lifecycle.images(options, services=tuple(args.services), quiet=args.quiet, fmt=args.format,
                                cwd=cwd, environ=environ)  # fmt: skip
    if command == "wait":
        return lifecycle.wait(options, services=tuple(args.services), down_project=args.down_project,
                              cwd=cwd, environ=environ)  # fmt: skip
    if command == "events":
        return lifecycle.events(
            options, services=tuple(args.services), as_json=args.json, cwd=cwd, environ=environ
        )
    if command == "ls":
        return lifecycle.ls(
            options, all_projects=args.all, quiet=args.quiet, fmt=args.format, environ=environ
        )
    return None


def run() -> NoReturn:
    """The `composer` command: `main()`, then out without the interpreter's teardown (~20 ms of
    finalizing every module and object after an `up -d`). Output is flushed first; no thread of
    composer's outlives main (trio's workers are daemons) and none registers exit handlers."""
    code = main()
    dataclass_cache.save()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()  # (a supervisor, `python -m composer ... __supervise`, never gets here)
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except ComposerError as exc:
        print(f"composer: {exc.render()}", file=sys.stderr)
        return exc.exit_code
    if args.version and args.command is None:
        print(f"composer version {__version__}")
        return 0
    if args.command is None:
        parser.print_help()
        return 0
    options = _global_options(args)
    debug = options.debug

    from composer import app, log

    log.configure(fmt=options.log_format, debug=options.debug)
    # SIGTERM stops a command the way Ctrl-C does: trio turns SIGINT into a clean cancellation (steps
    # stopped, containers reaped, staging removed), where SIGTERM's default would kill us mid-way.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: signal.raise_signal(signal.SIGINT))
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        # started in the background by a shell without job control: like Compose (Go's signal.Notify),
        # take SIGINT back, or SIGTERM (raised as SIGINT above) could not stop us either
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if args.command == "config":
            return app.config(options, _config_options(args), cwd=os.getcwd(), environ=dict(os.environ))
        if args.command == "version":
            return app.version(short=args.short, fmt=args.format)
        if args.command == "image":
            return _run_image(options, args)
        if args.command == "build":
            opts_build = BuildOptions(services=tuple(args.services), no_cache=args.no_cache,
                                      build_args=tuple(args.build_args), quiet=args.quiet)  # fmt: skip
            return app.build(options, opts_build, cwd=os.getcwd(), environ=dict(os.environ))
        result = _run_lifecycle(options, args)
        if result is not None:
            return result
        raise UsageError(f"unknown command {args.command!r}")  # pragma: no cover - argparse stops it
    except ComposerError as exc:
        if debug:
            traceback.print_exc()
        print(exc.render(), file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        # The reader went away (`composer config | head`): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130
    except BaseExceptionGroup as group:
        # trio nurseries wrap what their tasks raised: report our own errors as usual, Ctrl-C as 130.
        errors, rest = group.split(ComposerError)
        interrupts, rest = rest.split(KeyboardInterrupt) if rest is not None else (None, None)
        if rest is not None:
            raise
        if debug:
            traceback.print_exc()
        seen: list[str] = []
        for error in _leaves(errors):
            if error.render() not in seen:
                seen.append(error.render())
                print(error.render(), file=sys.stderr)
        if seen:
            return next(iter(_leaves(errors))).exit_code
        return 130 if interrupts is not None else 1


def _leaves(group: BaseExceptionGroup[ComposerError] | None) -> list[ComposerError]:
    """The errors inside a (possibly nested) exception group, in order."""
    if group is None:
        return []
    out: list[ComposerError] = []
    for member in group.exceptions:
        out.extend(_leaves(member) if isinstance(member, BaseExceptionGroup) else [member])
    return out
