"""The host's apt configuration: which Debian mirror it uses, and how it reaches it.

Base images are bootstrapped from the mirror the host's apt is configured for (there is no registry),
so this module reads, without running apt:

- the sources: one-line `sources.list` files and deb822 `.sources` files (`Enabled: no` respected);
- from `apt.conf` and `apt.conf.d/*`: the proxies (`Acquire::http::Proxy`, per-host
  `Acquire::http::Proxy::<host>`, the same for https and ftp) and the two settings a stale or snapshot
  mirror needs to be usable at all (`Acquire::Check-Valid-Until`, `Acquire::Check-Date`);
- the `http_proxy` / `https_proxy` / `ftp_proxy` / `no_proxy` environment, which apt also honours.

Everything takes its paths and environment as arguments (DESIGN.md rule 8), so tests feed sample files.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from composer.errors import ComposerError

__all__ = [
    "AptSource",
    "DebianMirror",
    "HostApt",
    "NoMirrorError",
    "find_debian_mirror",
    "parse_apt_conf",
    "parse_deb822_sources",
    "parse_one_line_sources",
    "proxies_from_environ",
    "read_host_apt",
]

# Debian's archive names and codenames (bases of suites such as `bookworm-updates`): how a Debian mirror
# is told apart from the other repositories a host may list (vendor repositories with suites such as
# `nodistro` or `cloud-sdk-bookworm`).
DEBIAN_SUITE_NAMES = frozenset(
    {"stable", "oldstable", "oldoldstable", "testing", "unstable", "sid", "experimental"}
    | {"jessie", "stretch", "buster", "bullseye", "bookworm", "trixie", "forky", "duke"}
)
_SUITE_SUFFIXES = ("-updates", "-security", "-backports", "-proposed-updates", "-backports-sloppy")

# apt.conf keys we carry into images and use ourselves (compared lower-cased).
_CARRIED_KEY = re.compile(r"^acquire::(?:(?:https?|ftp)::proxy(?:::.+)?|check-valid-until|check-date)$")
# apt's own rule for files in apt.conf.d and sources.list.d: these names are read, others ignored.
_PART_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_IGNORED_SUFFIXES = (".disabled", ".bak", ".dpkg-old", ".dpkg-dist", ".dpkg-new", ".dpkg-tmp", ".ucf-old",
                     ".ucf-dist", ".ucf-new", ".save", ".orig", ".distUpgrade", "~")  # fmt: skip


class NoMirrorError(ComposerError):
    """The host's apt configuration names no Debian mirror to bootstrap from."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AptSource:
    """One source entry; a deb822 paragraph may list several URIs and suites."""

    types: tuple[str, ...]  # "deb", "deb-src"
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    options: tuple[tuple[str, str], ...] = ()  # lower-cased keys: ("signed-by", ...), ("arch", ...)
    origin: str = ""  # file:line, for messages


@dataclass(frozen=True, slots=True, kw_only=True)
class HostApt:
    """What the host's apt says: its sources and the settings we carry (in file order, later wins)."""

    sources: tuple[AptSource, ...] = ()
    settings: tuple[tuple[str, str], ...] = ()  # ("Acquire::http::Proxy", "http://..."), ...

    def setting(self, key: str) -> str | None:
        wanted = key.lower()
        found = None
        for name, value in self.settings:
            if name.lower() == wanted:
                found = value
        return found

    def proxy(self, scheme: str, host: str = "") -> str | None:
        """The proxy apt would use for `scheme://host/` ("" or None for a direct connection)."""
        if host:
            specific = self.setting(f"Acquire::{scheme}::Proxy::{host}")
            if specific is not None:
                return None if specific.upper() == "DIRECT" else specific
        general = self.setting(f"Acquire::{scheme}::Proxy")
        if general is None or general.upper() == "DIRECT" or not general:
            return None
        return general


@dataclass(frozen=True, slots=True, kw_only=True)
class DebianMirror:
    """The Debian mirror to bootstrap from, and the security archive next to it (if the host has one)."""

    uri: str  # without a trailing slash
    security_uri: str | None = None
    components: tuple[str, ...] = ("main",)

    def __str__(self) -> str:
        return self.uri


# --- sources -----------------------------------------------------------------------------------------


def _strip_comment(line: str) -> str:
    return line.split("#", 1)[0].strip()


def parse_one_line_sources(text: str, origin: str = "sources.list") -> list[AptSource]:
    """`deb [opt=value ...] URI SUITE [COMPONENT ...]` lines; comments and blank lines skipped."""
    out: list[AptSource] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw)
        if not line:
            continue
        kind, _, rest = line.partition(" ")
        if kind not in ("deb", "deb-src"):
            continue
        rest = rest.strip()
        options: list[tuple[str, str]] = []
        if rest.startswith("["):
            inside, closed, rest = rest[1:].partition("]")
            if not closed:
                continue
            for item in inside.split():
                key, _, value = item.partition("=")
                options.append((key.lower(), value))
        words = rest.split()
        if len(words) < 2:
            continue
        out.append(
            AptSource(
                types=(kind,),
                uris=(words[0],),
                suites=(words[1],),
                components=tuple(words[2:]),
                options=tuple(options),
                origin=f"{origin}:{number}",
            )
        )
    return out


def _deb822_paragraphs(text: str) -> Iterator[tuple[int, dict[str, str]]]:
    fields: dict[str, str] = {}
    start = 0
    key = ""
    for number, raw in enumerate(text.splitlines(), 1):
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if fields:
                yield start, fields
            fields, key = {}, ""
            continue
        if raw[0] in " \t":
            if key:  # a continuation line (multi-line Signed-By keys, long URI lists)
                fields[key] += "\n" + raw.strip()
            continue
        name, colon, value = raw.partition(":")
        if not colon:
            continue
        if not fields:
            start = number
        key = name.strip().lower()
        fields[key] = value.strip()
    if fields:
        yield start, fields


def parse_deb822_sources(text: str, origin: str = "debian.sources") -> list[AptSource]:
    """deb822 `.sources` paragraphs (Types, URIs, Suites, Components, Enabled, options)."""
    out: list[AptSource] = []
    known = {"types", "uris", "suites", "components", "enabled"}
    for start, fields in _deb822_paragraphs(text):
        if fields.get("enabled", "yes").strip().lower() in ("no", "false", "0"):
            continue
        types = tuple(t for t in fields.get("types", "").split() if t in ("deb", "deb-src"))
        uris = tuple(fields.get("uris", "").split())
        suites = tuple(fields.get("suites", "").split())
        if not types or not uris or not suites:
            continue
        options = tuple(sorted((k, v) for k, v in fields.items() if k not in known))
        out.append(
            AptSource(
                types=types,
                uris=uris,
                suites=suites,
                components=tuple(fields.get("components", "").split()),
                options=options,
                origin=f"{origin}:{start}",
            )
        )
    return out


def _parts(folder: Path, suffixes: Sequence[str]) -> list[Path]:
    """The files apt reads from a `.d` folder, in apt's (lexical) order."""
    try:
        names = sorted(entry.name for entry in folder.iterdir() if entry.is_file())
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for name in names:
        if not _PART_NAME.match(name) or name.endswith(_IGNORED_SUFFIXES):
            continue
        if suffixes and not name.endswith(tuple(suffixes)):
            continue
        out.append(folder / name)
    return out


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
        return None


# --- apt.conf ----------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<line_comment>(?://|\#)[^\n]*)
    | (?P<block_comment>/\*.*?\*/)
    | (?P<string>"[^"]*")
    | (?P<punct>[{};])
    | (?P<word>[^\s{};"]+)
    """,
    re.VERBOSE | re.DOTALL,
)


def parse_apt_conf(text: str) -> list[tuple[str, str]]:
    """apt.conf syntax to flat `(key, value)` pairs in file order (later pairs override earlier ones).

    Handles `A::B "v";`, nested `A { B "v"; C { D "w"; }; };`, unquoted values, `//`, `#` and
    `/* */` comments, and `#clear A::B` (pairs under that key are dropped). List items (`"v";` with no
    key) come out under the enclosing key. `#include` is not followed.
    """
    out: list[tuple[str, str]] = []
    stack: list[str] = []
    key: str | None = None
    value: str | None = None
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup
        token = match.group()
        if kind in ("space", "block_comment"):
            continue
        if kind == "line_comment":
            if token.startswith("#clear"):
                for name in token[len("#clear") :].split():
                    full = "::".join([*stack, name.rstrip(";")]).lower()
                    out = [
                        (k, v) for k, v in out if k.lower() != full and not k.lower().startswith(full + "::")
                    ]
            continue
        if token == "{":
            stack.append(key or "")
            key = value = None
        elif token == "}":
            if stack:
                stack.pop()
            key = value = None
        elif token == ";":
            if key is not None and value is not None:
                out.append(("::".join([*stack, key]), value))
            elif key is not None and value is None and stack:  # an unquoted list item
                out.append(("::".join(stack), key))
            key = value = None
        else:
            text_value = token[1:-1] if kind == "string" else token
            if key is None and kind == "string":  # a list item: `"value";`
                if stack:
                    out.append(("::".join(stack), text_value))
                continue
            if key is None:
                key = text_value
            else:
                value = text_value
    return out


def proxies_from_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """`http_proxy` & co. as apt reads them: lower case wins over upper case; empty means none."""
    out: dict[str, str] = {}
    for scheme in ("http", "https", "ftp"):
        for name in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY"):
            value = environ.get(name)
            if value is not None:
                if value.strip():
                    out[scheme] = value.strip()
                break
    return out


def _no_proxy_matches(host: str, environ: Mapping[str, str]) -> bool:
    value = environ.get("no_proxy", environ.get("NO_PROXY", ""))
    for item in value.replace(",", " ").split():
        item = item.strip().lower().lstrip("*")
        if item == ".":
            continue
        if item and (host == item.lstrip(".") or host.endswith("." + item.lstrip("."))):
            return True
    return False


def read_host_apt(etc_apt: Path, environ: Mapping[str, str]) -> HostApt:
    """Read the sources and the carried settings from an apt configuration folder (usually /etc/apt).

    Proxies from the environment are added after the files' settings unless the files already set
    one for that scheme (apt's own precedence), with `DIRECT` for mirror hosts listed in `no_proxy`.
    """
    sources: list[AptSource] = []
    main = etc_apt / "sources.list"
    text = _read(main)
    if text is not None:
        sources += parse_one_line_sources(text, str(main))
    for path in _parts(etc_apt / "sources.list.d", (".list", ".sources")):
        text = _read(path)
        if text is None:
            continue
        if path.name.endswith(".sources"):
            sources += parse_deb822_sources(text, str(path))
        else:
            sources += parse_one_line_sources(text, str(path))

    settings: list[tuple[str, str]] = []
    for path in [*_parts(etc_apt / "apt.conf.d", ()), etc_apt / "apt.conf"]:
        text = _read(path)
        if text is not None:
            settings += [(k, v) for k, v in parse_apt_conf(text) if _CARRIED_KEY.match(k.lower())]

    host = HostApt(sources=tuple(sources), settings=tuple(settings))
    extra: list[tuple[str, str]] = []
    for scheme, proxy in sorted(proxies_from_environ(environ).items()):
        if host.setting(f"Acquire::{scheme}::Proxy") is not None:
            continue
        extra.append((f"Acquire::{scheme}::Proxy", proxy))
        hosts = sorted({urlsplit(uri).hostname or "" for s in sources for uri in s.uris} - {""})
        extra += [
            (f"Acquire::{scheme}::Proxy::{h}", "DIRECT") for h in hosts if _no_proxy_matches(h, environ)
        ]
    return HostApt(sources=host.sources, settings=host.settings + tuple(extra))


# --- the Debian mirror -------------------------------------------------------------------------------


def _suite_base(suite: str) -> str:
    suite = suite.split("/", 1)[0]  # buster/updates
    for suffix in _SUITE_SUFFIXES:
        if suite.endswith(suffix):
            return suite[: -len(suffix)]
    return suite


def _is_security(suite: str) -> bool:
    return suite.endswith("-security") or suite.endswith("/updates")


def find_debian_mirror(host: HostApt, where: str = "/etc/apt") -> DebianMirror:
    """The first `deb` source with a Debian suite that is not the security archive, and the security
    archive's URI if the host lists one."""
    uri: str | None = None
    security: str | None = None
    for source in host.sources:
        if "deb" not in source.types:
            continue
        debian = [s for s in source.suites if _suite_base(s) in DEBIAN_SUITE_NAMES]
        if not debian:
            continue
        if all(_is_security(s) for s in debian):
            security = security or source.uris[0].rstrip("/")
        elif uri is None:
            uri = source.uris[0].rstrip("/")
    if uri is None:
        raise NoMirrorError(
            f"no Debian mirror in the apt sources under {where}: cannot bootstrap base images"
        )
    # Images get main only, as Docker's debian images do, whatever else the host enables.
    return DebianMirror(uri=uri, security_uri=security)
