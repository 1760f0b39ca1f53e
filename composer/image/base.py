"""Base images with no registry: `scratch`, and `debian:<suite>` bootstrapped from the host's mirror.

References accepted (`is_base_reference`, `resolve_alias`):

    scratch                               the empty image (no layers; `ensure_base_image` returns None)
    debian, debian:latest                 stable
    debian:<codename>                     bookworm, trixie, bullseye, sid, ... (whatever the mirror has)
    debian:<archive name>                 stable, oldstable, oldoldstable, testing, unstable
    debian:<major version>                11, 12, 13, ... through a small table checked against the mirror
    debian:<any of these>-slim            minbase without docs, man pages and locales (Docker's slim)

`ensure_base_image` first looks for the tag in the store and returns at once when it is there (no
network, no lock). Otherwise it resolves the suite through the mirror's Release file, takes a lock per
codename, and bootstraps with mmdebstrap (`--variant=minbase`, root mode), or debootstrap when
mmdebstrap is missing, into a folder under `layout.tmp`, then finishes the rootfs the way Docker's debian
images are made (debuerreotype): apt sources pointing at the host's mirror (plus its -updates and
-security suites when the mirror has them), the host's proxy settings, a policy-rc.d that exits 101,
empty /etc/resolv.conf and /etc/hostname (the runtime bind-mounts its own), no apt lists or caches, an
empty /dev. The result is committed through `ImageStore.commit_rootfs` and tagged both as asked and by
codename (`debian:12` -> also `debian:bookworm`).

The bootstrap tool runs in its own session, mount namespace and pid namespace (`unshare`), so whatever
it mounts inside the target (/proc, /dev, /sys) disappears with it even when it is killed; on failure or
Ctrl-C its whole process group is killed by id and the staging folder removed: nothing is left.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from composer.errors import ComposerError, one_line
from composer.image.aptconfig import DebianMirror, HostApt, find_debian_mirror, read_host_apt
from composer.image.config import ImageConfig
from composer.image.store import Image, ImageError, ImageStore, normalize_ref
from composer.storage.layout import Layout

__all__ = [
    "BaseImageError",
    "BootstrapError",
    "MirrorError",
    "NoRegistryError",
    "SuiteNotFound",
    "bootstrap_command",
    "bootstrap_rootfs",
    "ensure_base_image",
    "is_base_reference",
    "parse_release",
    "resolve_alias",
]

Progress = Callable[[str], None]
Fetch = Callable[[str], bytes | None]  # URL -> body, None for "not found"; raises OSError otherwise

DEBIAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEBIAN_CONFIG = ImageConfig(env=(f"PATH={DEBIAN_PATH}",), cmd=("bash",))

# Major version -> codename. Checked against the Version field of the mirror's Release file.
VERSION_CODENAMES = {"9": "stretch", "10": "buster", "11": "bullseye", "12": "bookworm", "13": "trixie",
                     "14": "forky", "15": "duke"}  # fmt: skip
ARCHIVE_NAMES = ("stable", "oldstable", "oldoldstable", "testing", "unstable")
# Suites that exist on mirrors but cannot be bootstrapped on their own.
NOT_BOOTSTRAPPABLE = ("experimental", "rc-buggy")
NOT_BOOTSTRAPPABLE_SUFFIXES = (
    "-updates",
    "-security",
    "-backports",
    "-backports-sloppy",
    "-proposed-updates",
)

AVAILABLE = (
    "scratch, debian:<codename> (bookworm, trixie, ...), debian:<version> (11, 12, 13), "
    "debian:stable|oldstable|testing|unstable|latest, and each debian one as -slim"
)

# Docker's slim variant (debuerreotype's slimify lists): excluded from dpkg installs and removed.
SLIM_EXCLUDES = ("/usr/share/doc/*", "/usr/share/groff/*", "/usr/share/info/*", "/usr/share/linda/*",
                 "/usr/share/lintian/overrides/*", "/usr/share/locale/*", "/usr/share/man/*")  # fmt: skip
SLIM_INCLUDES = ("/usr/share/doc/*/copyright", "/usr/share/doc/kde/HTML/C/*", "/usr/share/gnome/help/*/C/*",
                 "/usr/share/locale/all_languages", "/usr/share/locale/currency/*",
                 "/usr/share/locale/l10n/*", "/usr/share/locale/languages", "/usr/share/locale/locale.alias",
                 "/usr/share/omf/*/*-C.emf")  # fmt: skip

_TAG = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


# --- errors ------------------------------------------------------------------------------------------


class BaseImageError(ComposerError):
    """A base image could not be provided."""


class NoRegistryError(BaseImageError):
    """The reference is not a base image, and there is no registry to pull it from."""


class SuiteNotFound(BaseImageError):
    """The host's mirror has no such suite."""


class MirrorError(BaseImageError):
    """The mirror could not be reached or answered nonsense."""


class BootstrapError(BaseImageError):
    """mmdebstrap or debootstrap failed."""


# --- references --------------------------------------------------------------------------------------


def _split(ref: str) -> tuple[str, str] | None:
    """`debian:12` -> ("debian", "12"); the store's normal form first (`library/debian` = `debian`)."""
    try:
        name, _, tag = normalize_ref(ref).rpartition(":")
    except ImageError:
        return None
    return name, tag


def is_base_reference(ref: str) -> bool:
    """True for `scratch` and for `debian[:tag]` with a well-formed tag (the suite is not checked)."""
    if ref == "scratch":
        return True
    parts = _split(ref)
    return parts is not None and parts[0] == "debian" and bool(_TAG.match(parts[1]))


def resolve_alias(ref: str) -> tuple[str, bool]:
    """`debian:12-slim` -> ("bookworm", True); `debian:stable` -> ("stable", False); no network.

    Archive names (stable, testing, ...) stay as they are: the mirror's Release file turns them into
    codenames at bootstrap time. Raises NoRegistryError for anything that is not a debian reference.
    """
    if ref == "scratch":
        raise NoRegistryError("scratch: the empty image is not bootstrapped from a suite")
    if not is_base_reference(ref):
        raise NoRegistryError(f"{one_line(ref)}: no image registry is available; base images are {AVAILABLE}")
    _, tag = _split(ref) or ("", "")
    slim = tag.endswith("-slim")
    suite = tag.removesuffix("-slim")
    suite = "stable" if suite == "latest" else suite
    suite = VERSION_CODENAMES.get(suite, suite)
    if suite in NOT_BOOTSTRAPPABLE or suite.endswith(NOT_BOOTSTRAPPABLE_SUFFIXES):
        raise NoRegistryError(
            f'{ref}: suite "{suite}" cannot be bootstrapped on its own; base images are {AVAILABLE}'
        )
    return suite, slim


def _canonical(ref: str) -> str:
    parts = _split(ref)
    return ref if parts is None else f"{parts[0]}:{parts[1]}"


# --- the mirror --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Release:
    suite: str
    codename: str
    version: str


def parse_release(text: str) -> Release:
    """The fields we need from a Release file's first paragraph (Suite, Codename, Version)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break
        if line[0] in " \t":
            continue
        key, colon, value = line.partition(":")
        if colon:
            fields[key.strip().lower()] = value.strip()
    return Release(
        suite=fields.get("suite", ""), codename=fields.get("codename", ""), version=fields.get("version", "")
    )


def http_fetcher(host: HostApt, *, timeout: float = 20.0) -> Fetch:
    """GET through the proxy the host's apt would use for that URL; None on 404 / 410."""

    def fetch(url: str) -> bytes | None:
        parts = urlsplit(url)
        proxy = host.proxy(parts.scheme, parts.hostname or "")
        handler = urllib.request.ProxyHandler({parts.scheme: proxy} if proxy else {})
        opener = urllib.request.build_opener(handler)
        try:
            with opener.open(url, timeout=timeout) as response:
                body: bytes = response.read()
                return body
        except urllib.error.HTTPError as error:
            if error.code in (404, 410):
                return None
            raise

    return fetch


def _release(fetch: Fetch, uri: str, suite: str, ref: str) -> Release | None:
    url = f"{uri}/dists/{suite}/Release"
    try:
        body = fetch(url)
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise MirrorError(f"{ref}: cannot reach the Debian mirror {uri}: {reason}") from error
    if body is None:
        return None
    return parse_release(body.decode("utf-8", errors="replace"))


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """What to bootstrap, from where; pure data (`bootstrap_command` turns it into argv)."""

    ref: str  # as asked, canonical (debian:12-slim)
    codename: str
    slim: bool
    mirror: DebianMirror
    updates: bool  # the mirror has <codename>-updates
    security: bool  # the security archive has <codename>-security
    settings: tuple[tuple[str, str], ...] = ()  # apt settings carried from the host

    @property
    def tag(self) -> str:
        return f"debian:{self.codename}{'-slim' if self.slim else ''}"

    def source_lines(self) -> list[str]:
        lines = [f"deb {self.mirror.uri} {self.codename} main"]
        if self.updates:
            lines.append(f"deb {self.mirror.uri} {self.codename}-updates main")
        if self.security and self.mirror.security_uri:
            lines.append(f"deb {self.mirror.security_uri} {self.codename}-security main")
        return lines


def plan_bootstrap(ref: str, *, host: HostApt, fetch: Fetch, etc_apt: Path = Path("/etc/apt")) -> Plan:
    """Resolve the suite through the mirror (Release files) and decide which suites the image gets."""
    ref = _canonical(ref)
    suite, slim = resolve_alias(ref)
    mirror = find_debian_mirror(host, str(etc_apt))
    release = _release(fetch, mirror.uri, suite, ref)
    if release is None:
        raise SuiteNotFound(f'{ref}: suite "{suite}" not found on {mirror.uri}')
    codename = release.codename or suite
    tag = ref.partition(":")[2].removesuffix("-slim")
    if tag in VERSION_CODENAMES and release.version and release.version.split(".")[0] != tag:
        raise SuiteNotFound(f"{ref}: {mirror.uri} has {codename} as Debian {release.version}, not {tag}")
    if codename in NOT_BOOTSTRAPPABLE:
        raise NoRegistryError(
            f'{ref}: suite "{codename}" cannot be bootstrapped on its own; base images are {AVAILABLE}'
        )
    updates = _release(fetch, mirror.uri, f"{codename}-updates", ref) is not None
    security = False
    if mirror.security_uri:
        security = _release(fetch, mirror.security_uri, f"{codename}-security", ref) is not None
    return Plan(ref=ref, codename=codename, slim=slim, mirror=mirror, updates=updates, security=security,
                settings=host.settings)  # fmt: skip


# --- running the bootstrap ---------------------------------------------------------------------------

_UNSHARE = (
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "--pid",
    "--fork",
    "--kill-child",
    "--mount-proc",
)
_SBIN_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


def find_tool(name: str | None = None) -> tuple[str, str]:
    """("mmdebstrap", path), or debootstrap when mmdebstrap is missing (or the one asked for)."""
    for tool in (name,) if name else ("mmdebstrap", "debootstrap"):
        path = shutil.which(tool, path=":".join(_SBIN_PATH))
        if path:
            return tool, path
    raise BootstrapError("cannot bootstrap base images: neither mmdebstrap nor debootstrap is installed")


def _apt_option(key: str, value: str) -> str:
    return f'{key} "{value}";'


def bootstrap_command(plan: Plan, target: Path, *, tool: str, path: str) -> list[str]:
    """The argv that bootstraps `plan` into `target`, wrapped in its own mount and pid namespaces."""
    if tool == "mmdebstrap":
        argv = [*_UNSHARE, "--", path, "--mode=root", "--variant=minbase", "--format=directory"]
        hooks = Path(path).resolve().parent.parent / "share/mmdebstrap/hooks/maybe-merged-usr"
        if hooks.is_dir():  # merged /usr without the usrmerge package (and the perl it pulls in)
            argv.append(f"--hook-dir={hooks}")
        argv += [f"--aptopt={_apt_option(k, v)}" for k, v in plan.settings]
        if plan.slim:
            argv += [f"--dpkgopt=path-exclude={p}" for p in SLIM_EXCLUDES]
            argv += [f"--dpkgopt=path-include={p}" for p in SLIM_INCLUDES]
        return [*argv, plan.codename, str(target), *plan.source_lines()]
    if tool == "debootstrap":
        return [*_UNSHARE, "--", path, "--variant=minbase", "--components=main", plan.codename, str(target),
                plan.mirror.uri]  # fmt: skip
    raise BootstrapError(f"unknown bootstrap tool {tool!r}")


def _child_env(plan: Plan, staging: Path) -> dict[str, str]:
    env = {"PATH": ":".join(_SBIN_PATH), "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive",
           "TMPDIR": str(staging), "HOME": "/root"}  # fmt: skip
    for scheme in ("http", "https", "ftp"):  # debootstrap's wget reads these
        proxy = HostApt(settings=plan.settings).proxy(scheme)
        if proxy:
            env[f"{scheme}_proxy"] = proxy
    return env


def _group_alive(pgid: int) -> bool:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            return True
    return False


def _end(proc: subprocess.Popen[bytes]) -> None:
    """Kill the tool's whole process group (the session we started it in) and wait until it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.01)


def run_streamed(argv: Sequence[str], *, env: Mapping[str, str], progress: Progress, tail: deque[str]) -> int:
    """Run argv in a new session, each output line to `progress`; on any exception, kill it all."""
    proc = subprocess.Popen(
        list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=dict(env), start_new_session=True, close_fds=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            # A line redrawn with carriage returns (dpkg's "Reading database ... 5%") shows its last state.
            line = raw.decode("utf-8", errors="replace").rstrip().rsplit("\r", 1)[-1].strip()
            if line:
                tail.append(line)
                progress(line)
        return proc.wait()
    except BaseException:
        _end(proc)
        raise
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
        if proc.returncode is None:
            _end(proc)
        elif _group_alive(proc.pid):  # leftovers that outlived the leader (--kill-child should prevent it)
            _end(proc)


def _failure_line(tail: Sequence[str]) -> str:
    for line in reversed(tail):
        if line.startswith("E:"):
            return line[2:].strip()
    return tail[-1] if tail else "no output"


def bootstrap_rootfs(plan: Plan, target: Path, *, progress: Progress, tool: str | None = None) -> None:
    """Bootstrap and finish a rootfs at `target` (which must not exist; its parent is the staging folder
    and also the tool's TMPDIR). On failure the caller removes the staging folder."""
    name, path = find_tool(tool)
    progress(f"{plan.ref}: bootstrapping {plan.codename} from {plan.mirror.uri} with {name} (minbase"
             f"{', slim' if plan.slim else ''})")  # fmt: skip
    argv = bootstrap_command(plan, target, tool=name, path=path)
    tail: deque[str] = deque(maxlen=50)
    status = run_streamed(argv, env=_child_env(plan, target.parent), progress=progress, tail=tail)
    if status != 0:
        raise BootstrapError(f"{plan.ref}: {name} failed (exit status {status}): {_failure_line(tail)}")
    finish_rootfs(target, plan)


# --- finishing the rootfs ----------------------------------------------------------------------------

_POLICY_RC_D = """#!/bin/sh
# Written by composer when this base image was bootstrapped: services installed by apt-get in a
# container must not be started by their maintainer scripts (Docker's debian images do the same).
exit 101
"""

_CLEAN = (
    "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"
)
_APT_FILES = {
    "docker-clean": (
        "# Keep image layers small: drop downloaded packages and apt's binary caches after each run.\n"
        f'DPkg::Post-Invoke {{ "{_CLEAN}"; }};\nAPT::Update::Post-Invoke {{ "{_CLEAN}"; }};\n'
        'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n'
    ),
    "docker-gzip-indexes": '# Keep package lists compressed on disk.\nAcquire::GzipIndexes "true";\n',
    "docker-no-languages": '# No translated package descriptions.\nAcquire::Languages "none";\n',
    "docker-autoremove-suggests": (
        "# autoremove also removes packages that are only suggested.\n"
        'Apt::AutoRemove::SuggestsImportant "false";\n'
    ),
}


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    path.write_text(text)
    os.chmod(path, mode)


def _empty_folder(folder: Path, *, keep_dirs: bool = False) -> None:
    if not folder.is_dir() or folder.is_symlink():
        return
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            if keep_dirs:
                _empty_folder(entry, keep_dirs=True)
            else:
                shutil.rmtree(entry)
        else:
            entry.unlink()


def _inside(root: Path, link: Path) -> Path:
    """Where a symlink in the image points, resolved inside the image (absolute targets under root)."""
    target = os.readlink(link)
    return root / target.lstrip("/") if target.startswith("/") else link.parent / target


def _dangling(root: Path, link: Path) -> bool:
    current = link
    for _ in range(40):
        if not current.is_symlink():
            return not os.path.lexists(current)
        current = _inside(root, current)
    return True


def slimify(root: Path) -> None:
    """Remove what Docker's slim variant leaves out (debuerreotype's two-pass rule)."""
    for pattern in SLIM_EXCLUDES:
        folder = root / pattern.removesuffix("/*").lstrip("/")
        if not folder.is_dir():
            continue
        for current, _dirs, files in os.walk(folder):  # 1: files (not folders, not symlinks) not included
            for name in files:
                path = Path(current) / name
                inner = "/" + str(path.relative_to(root))
                if not path.is_symlink() and not any(fnmatch.fnmatchcase(inner, p) for p in SLIM_INCLUDES):
                    path.unlink()
        removed = True
        while removed:  # 2: empty folders and dangling symlinks, until there are none
            removed = False
            for current, dirs, files in os.walk(folder, topdown=False):
                for name in [*files, *dirs]:
                    path = Path(current) / name
                    if path.is_symlink():
                        if _dangling(root, path):
                            path.unlink()
                            removed = True
                    elif path.is_dir() and not any(path.iterdir()):
                        path.rmdir()
                        removed = True


def _slim_dpkg_config() -> str:
    lines = ['# The "slim" variant of the Debian base image: files that containers rarely need are',
             "# excluded from packages, and this file keeps them excluded.", ""]  # fmt: skip
    lines += [f"path-exclude {p}" for p in SLIM_EXCLUDES]
    lines += [""] + [f"path-include {p}" for p in SLIM_INCLUDES]
    return "\n".join(lines) + "\n"


def _keyring(root: Path) -> str | None:
    for name in ("debian-archive-keyring.pgp", "debian-archive-keyring.gpg"):
        if (root / "usr/share/keyrings" / name).exists():
            return f"/usr/share/keyrings/{name}"
    return None


def debian_sources(plan: Plan, keyring: str | None) -> str:
    """The image's /etc/apt/sources.list.d/debian.sources (deb822, as in Docker's images since bookworm)."""
    signed = f"Signed-By: {keyring}\n" if keyring else ""
    suites = plan.codename + (f" {plan.codename}-updates" if plan.updates else "")
    text = f"Types: deb\nURIs: {plan.mirror.uri}\nSuites: {suites}\nComponents: main\n{signed}"
    if plan.security and plan.mirror.security_uri:
        text += (f"\nTypes: deb\nURIs: {plan.mirror.security_uri}\nSuites: {plan.codename}-security\n"
                 f"Components: main\n{signed}")  # fmt: skip
    return text


def host_settings_conf(settings: Sequence[tuple[str, str]]) -> str:
    lines = [
        "// Copied from the host's apt configuration when composer bootstrapped this image:",
        "// the proxies and mirror settings that apt-get inside needs to reach the same mirror.",
    ]
    seen: dict[str, tuple[str, str]] = {}
    for key, value in settings:  # the last value of each key wins, in first-seen order
        seen[key.lower()] = (key, value) if key.lower() not in seen else (seen[key.lower()][0], value)
    lines += [_apt_option(k, v) for k, v in seen.values()]
    return "\n".join(lines) + "\n"


def finish_rootfs(root: Path, plan: Plan) -> None:
    """Make a freshly bootstrapped tree into a base image's rootfs."""
    etc = root / "etc"
    for leftover in ("apt/apt.conf.d/99mmdebstrap", "dpkg/dpkg.cfg.d/99mmdebstrap", "apt/sources.list"):
        with contextlib.suppress(FileNotFoundError):
            (etc / leftover).unlink()
    _write(etc / "apt/sources.list.d/debian.sources", debian_sources(plan, _keyring(root)))
    for name, text in _APT_FILES.items():
        _write(etc / "apt/apt.conf.d" / name, text)
    if plan.settings:
        _write(etc / "apt/apt.conf.d/90composer-host", host_settings_conf(plan.settings))
    speedup = "# No sync() after unpacking packages: a failed build is redone anyway.\nforce-unsafe-io\n"
    _write(etc / "dpkg/dpkg.cfg.d/docker-apt-speedup", speedup)
    if plan.slim:
        _write(etc / "dpkg/dpkg.cfg.d/docker", _slim_dpkg_config())
        slimify(root)
    _write(root / "usr/sbin/policy-rc.d", _POLICY_RC_D, 0o755)
    for name in ("resolv.conf", "hostname"):  # the runtime bind-mounts per-container files here
        _write(etc / name, "")
    _empty_folder(root / "var/lib/apt/lists", keep_dirs=True)
    _empty_folder(root / "var/cache/apt", keep_dirs=True)
    for folder in ("dev", "tmp", "run"):
        _empty_folder(root / folder)


def tree_size(root: Path) -> tuple[int, int]:
    """(apparent bytes, entries) of a tree, without following symlinks."""
    total = entries = 0
    for current, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            entries += 1
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(current, name)).st_size
    return total, entries


# --- the store ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(path: Path, waiting: Callable[[], None]) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            waiting()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def ensure_base_image(
    store: ImageStore,
    ref: str,
    *,
    layout: Layout,
    progress: Progress,
    etc_apt: Path = Path("/etc/apt"),
    environ: Mapping[str, str] | None = None,
    fetch: Fetch | None = None,
    tool: str | None = None,
) -> Image | None:
    """The stored image for a base reference, bootstrapping it once if needed; None for `scratch`.

    Raises NoRegistryError for references that are not base images. `etc_apt` and `environ` are where
    the mirror and proxies are read from; `fetch` replaces HTTP (tests); `tool` forces mmdebstrap or
    debootstrap.
    """
    if ref == "scratch":
        return None
    canonical = _canonical(ref)
    resolve_alias(canonical)  # raises for non-base references before anything else happens
    found = store.resolve(canonical)
    if found is not None:
        return found

    host = read_host_apt(etc_apt, os.environ if environ is None else environ)
    plan = plan_bootstrap(canonical, host=host, fetch=fetch or http_fetcher(host), etc_apt=etc_apt)
    tags = sorted({canonical, plan.tag})
    lock = layout.locks / f"base-{plan.tag.replace(':', '-')}.lock"
    with _locked(
        lock, lambda: progress(f"{canonical}: waiting for another process bootstrapping {plan.tag}")
    ):
        for tag in (canonical, plan.tag):
            found = store.resolve(tag)
            if found is not None:
                # the same image, also under the name asked for (debian:12 once debian:bookworm exists)
                return found if tag == canonical else store.tag(found.id, canonical)
        layout.tmp.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="base-", dir=layout.tmp))
        try:
            started = time.monotonic()
            target = staging / "rootfs"
            bootstrap_rootfs(plan, target, progress=progress, tool=tool)
            size, entries = tree_size(target)
            progress(f"{canonical}: bootstrapped in {time.monotonic() - started:.1f} s, "
                     f"{size / 2**20:.0f} MiB in {entries} entries; committing")  # fmt: skip
            return store.commit_rootfs(target, DEBIAN_CONFIG, tags=tags)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
