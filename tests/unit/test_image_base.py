"""Base images without a registry: references, the host's apt configuration, plans, the finished rootfs.

No network and no root: the mirror is a fake `fetch`, the bootstrap tool is replaced where needed.
"""

from __future__ import annotations

import os
import sys
from collections import deque
from pathlib import Path

import pytest

from composer.image import base
from composer.image.aptconfig import (
    DebianMirror,
    HostApt,
    NoMirrorError,
    find_debian_mirror,
    parse_apt_conf,
    parse_deb822_sources,
    parse_one_line_sources,
    proxies_from_environ,
    read_host_apt,
)
from composer.image.base import (
    BootstrapError,
    MirrorError,
    NoRegistryError,
    Plan,
    SuiteNotFound,
    bootstrap_command,
    ensure_base_image,
    finish_rootfs,
    is_base_reference,
    parse_release,
    plan_bootstrap,
    resolve_alias,
    run_streamed,
)
from composer.image.store import ImageStore
from composer.storage.layout import Layout

MIRROR = "http://mirror.test/debian"
SECURITY = "http://mirror.test/debian-security"

# --- references ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("debian:bookworm", ("bookworm", False)),
        ("debian:bookworm-slim", ("bookworm", True)),
        ("debian:12", ("bookworm", False)),
        ("debian:11", ("bullseye", False)),
        ("debian:13-slim", ("trixie", True)),
        ("debian", ("stable", False)),
        ("debian:latest", ("stable", False)),
        ("debian:stable-slim", ("stable", True)),
        ("debian:oldstable", ("oldstable", False)),
        ("debian:testing", ("testing", False)),
        ("debian:sid", ("sid", False)),
        ("library/debian:12", ("bookworm", False)),
    ],
)
def test_resolve_alias(ref: str, expected: tuple[str, bool]) -> None:
    assert resolve_alias(ref) == expected
    assert is_base_reference(ref)


@pytest.mark.parametrize(
    "ref", ["ubuntu:22.04", "alpine", "debian@sha256:" + "a" * 64, "nginx:1.25", "Debian:12"]
)
def test_other_references_need_a_registry(ref: str) -> None:
    assert not is_base_reference(ref)
    with pytest.raises(NoRegistryError) as info:
        resolve_alias(ref)
    message = str(info.value)
    assert "\n" not in message
    assert "no image registry is available" in message
    assert "scratch" in message and "debian:<codename>" in message


@pytest.mark.parametrize(
    "ref", ["debian:experimental", "debian:bookworm-backports", "debian:trixie-security"]
)
def test_suites_that_cannot_be_bootstrapped(ref: str) -> None:
    with pytest.raises(NoRegistryError, match="cannot be bootstrapped on its own"):
        resolve_alias(ref)


def test_scratch_is_a_base_reference_without_a_suite() -> None:
    assert is_base_reference("scratch")
    with pytest.raises(NoRegistryError):
        resolve_alias("scratch")


# --- sources ---------------------------------------------------------------------------------------


def test_one_line_sources() -> None:
    text = (
        "# a comment\n"
        "deb http://m.test/debian bookworm main contrib  # trailing comment\n"
        "deb-src http://m.test/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://m.test/debian-security bookworm-security main\n"
        "\n"
        "deb [broken http://x bookworm main\n"
        "rpm http://x y\n"
    )
    sources = parse_one_line_sources(text, "s.list")
    assert [(s.types, s.uris, s.suites, s.components) for s in sources] == [
        (("deb",), ("http://m.test/debian",), ("bookworm",), ("main", "contrib")),
        (("deb-src",), ("http://m.test/debian",), ("bookworm",), ("main",)),
        (("deb",), ("http://m.test/debian-security",), ("bookworm-security",), ("main",)),
    ]
    assert sources[2].options == (("arch", "amd64"), ("signed-by", "/k.gpg"))
    assert sources[0].origin == "s.list:2"


def test_deb822_sources() -> None:
    text = (
        "Types: deb deb-src\n"
        "# http://snapshot.test/archive/debian/20250520T000000Z\n"
        "URIs: http://m.test/debian\n"
        "Suites: bookworm bookworm-updates\n"
        "Components: main\n"
        "Signed-By: -----BEGIN PGP PUBLIC KEY BLOCK-----\n"
        " .\n"
        " abc\n"
        "\n"
        "Types: deb\n"
        "URIs: http://m.test/debian-security\n"
        "Suites: bookworm-security\n"
        "Components: main\n"
        "\n"
        "Enabled: no\n"
        "Types: deb\n"
        "URIs: http://off.test/\n"
        "Suites: x\n"
    )
    sources = parse_deb822_sources(text, "d.sources")
    assert len(sources) == 2
    assert sources[0].types == ("deb", "deb-src")
    assert sources[0].suites == ("bookworm", "bookworm-updates")
    assert dict(sources[0].options)["signed-by"].endswith("abc")
    assert sources[1].uris == ("http://m.test/debian-security",)
    assert sources[0].origin == "d.sources:1"


# --- apt.conf --------------------------------------------------------------------------------------


def test_apt_conf_syntax() -> None:
    text = """
    // comment
    Acquire::http::Proxy "http://proxy.test:3142";   # another comment
    /* a block
       comment */
    Acquire {
      https { Proxy "http://p2.test:8080"; };
      http::Proxy::mirror.test "DIRECT";
      Languages { "none"; "en"; };
    };
    APT::Sandbox::User root;
    Acquire::Check-Valid-Until "false";
    #clear Acquire::Languages
    """
    pairs = parse_apt_conf(text)
    assert pairs == [
        ("Acquire::http::Proxy", "http://proxy.test:3142"),
        ("Acquire::https::Proxy", "http://p2.test:8080"),
        ("Acquire::http::Proxy::mirror.test", "DIRECT"),
        ("APT::Sandbox::User", "root"),
        ("Acquire::Check-Valid-Until", "false"),
    ]


def test_proxies_from_environ() -> None:
    env = {"http_proxy": "http://a.test:1", "HTTP_PROXY": "http://b.test:2", "HTTPS_PROXY": "http://c.test:3"}
    assert proxies_from_environ(env) == {"http": "http://a.test:1", "https": "http://c.test:3"}
    assert proxies_from_environ({"http_proxy": "", "HTTP_PROXY": "http://b.test"}) == {}


def _etc_apt(tmp_path: Path) -> Path:
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "apt.conf.d").mkdir()
    (etc / "sources.list.d/vendor.sources").write_text(
        "Types: deb\nURIs: https://vendor.test/node\nSuites: nodistro\nComponents: main\n"
    )
    (etc / "sources.list.d/debian.sources").write_text(
        f"Types: deb\nURIs: {MIRROR}/\nSuites: bookworm bookworm-updates\nComponents: main contrib\n\n"
        f"Types: deb\nURIs: {SECURITY}\nSuites: bookworm-security\nComponents: main\n"
    )
    (etc / "sources.list.d/old.list.disabled-by-someone").write_text("deb http://gone.test/debian sid main\n")
    (etc / "apt.conf.d/99mirror").write_text(
        'Acquire::Check-Valid-Until "false";\nAPT::Get::Assume-Yes "1";\n'
    )
    (etc / "apt.conf.d/01proxy").write_text('Acquire::http::Proxy "http://proxy.test:3142";\n')
    (etc / "apt.conf.d/02proxy.bak").write_text('Acquire::http::Proxy "http://ignored.test";\n')
    return etc


def test_read_host_apt(tmp_path: Path) -> None:
    host = read_host_apt(
        _etc_apt(tmp_path), {"https_proxy": "http://envproxy.test:8080", "no_proxy": ".test"}
    )
    assert [s.origin.rsplit("/", 1)[1] for s in host.sources] == [
        "debian.sources:1",
        "debian.sources:6",
        "vendor.sources:1",
    ]
    assert host.settings == (
        ("Acquire::http::Proxy", "http://proxy.test:3142"),
        ("Acquire::Check-Valid-Until", "false"),
        ("Acquire::https::Proxy", "http://envproxy.test:8080"),
        ("Acquire::https::Proxy::mirror.test", "DIRECT"),
        ("Acquire::https::Proxy::vendor.test", "DIRECT"),
    )
    assert host.proxy("http") == "http://proxy.test:3142"
    assert host.proxy("https", "mirror.test") is None
    assert host.proxy("https", "elsewhere.example") == "http://envproxy.test:8080"
    mirror = find_debian_mirror(host)
    assert mirror == DebianMirror(uri=MIRROR, security_uri=SECURITY)


def test_one_line_sources_list_and_no_security(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(f"deb {MIRROR} trixie main\n")
    host = read_host_apt(tmp_path, {})
    assert find_debian_mirror(host) == DebianMirror(uri=MIRROR, security_uri=None)
    assert host.settings == ()


def test_no_debian_mirror(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text("deb https://vendor.test/apt cloud-sdk-bookworm main\n")
    with pytest.raises(NoMirrorError, match="no Debian mirror"):
        find_debian_mirror(read_host_apt(tmp_path, {}), str(tmp_path))


# --- plans against a fake mirror -------------------------------------------------------------------


def release(suite: str, codename: str, version: str = "") -> bytes:
    text = f"Origin: Debian\nSuite: {suite}\nCodename: {codename}\n"
    text += f"Version: {version}\n" if version else ""
    return (text + "Components: main\nSHA256:\n 0123 12 main/Release\n").encode()


RELEASES = {
    f"{MIRROR}/dists/stable/Release": release("stable", "trixie", "13.1"),
    f"{MIRROR}/dists/trixie/Release": release("stable", "trixie", "13.1"),
    f"{MIRROR}/dists/trixie-updates/Release": release("stable-updates", "trixie-updates"),
    f"{SECURITY}/dists/trixie-security/Release": release("stable-security", "trixie-security", "13"),
    f"{MIRROR}/dists/bookworm/Release": release("oldstable", "bookworm", "12.12"),
    f"{MIRROR}/dists/unstable/Release": release("unstable", "sid"),
    f"{MIRROR}/dists/sid/Release": release("unstable", "sid"),
}


def fake_fetch(url: str) -> bytes | None:
    return RELEASES.get(url)


HOST = HostApt(
    sources=tuple(
        parse_one_line_sources(
            f"deb {MIRROR} bookworm main\ndeb {MIRROR} bookworm-updates main\n"
            f"deb {SECURITY} bookworm-security main\n"
        )
    ),
    settings=(("Acquire::http::Proxy", "http://proxy.test:3142"),),
)


def test_parse_release() -> None:
    assert parse_release(release("stable", "trixie", "13.1").decode()) == base.Release(
        suite="stable", codename="trixie", version="13.1"
    )


def test_plan_resolves_archive_names_through_the_mirror() -> None:
    plan = plan_bootstrap("debian:latest", host=HOST, fetch=fake_fetch)
    assert (plan.codename, plan.slim, plan.updates, plan.security) == ("trixie", False, True, True)
    assert plan.tag == "debian:trixie"
    assert plan.source_lines() == [
        f"deb {MIRROR} trixie main",
        f"deb {MIRROR} trixie-updates main",
        f"deb {SECURITY} trixie-security main",
    ]
    sid = plan_bootstrap("debian:unstable-slim", host=HOST, fetch=fake_fetch)
    assert (sid.codename, sid.slim, sid.tag) == ("sid", True, "debian:sid-slim")
    assert sid.source_lines() == [f"deb {MIRROR} sid main"]  # no -updates or -security on the mirror


def test_plan_unknown_suite_names_the_mirror() -> None:
    with pytest.raises(SuiteNotFound) as info:
        plan_bootstrap("debian:sid-x", host=HOST, fetch=fake_fetch)
    assert str(info.value) == f'debian:sid-x: suite "sid-x" not found on {MIRROR}'


def test_plan_checks_the_version_table() -> None:
    RELEASES[f"{MIRROR}/dists/bullseye/Release"] = release("oldoldstable", "bullseye", "12.1")
    try:
        with pytest.raises(SuiteNotFound, match=r"as Debian 12\.1, not 11"):
            plan_bootstrap("debian:11", host=HOST, fetch=fake_fetch)
    finally:
        del RELEASES[f"{MIRROR}/dists/bullseye/Release"]


def test_plan_unreachable_mirror() -> None:
    def down(url: str) -> bytes | None:
        raise OSError("connection refused")

    with pytest.raises(MirrorError, match=f"cannot reach the Debian mirror {MIRROR}: connection refused"):
        plan_bootstrap("debian:bookworm", host=HOST, fetch=down)


def _plan(**changes: object) -> Plan:
    values: dict[str, object] = dict(
        ref="debian:bookworm-slim",
        codename="bookworm",
        slim=True,
        mirror=DebianMirror(uri=MIRROR, security_uri=SECURITY),
        updates=True,
        security=True,
        settings=(("Acquire::http::Proxy", "http://proxy.test:3142"),),
    )
    values.update(changes)
    return Plan(**values)  # type: ignore[arg-type]


def test_mmdebstrap_command(tmp_path: Path) -> None:
    argv = bootstrap_command(_plan(), tmp_path / "rootfs", tool="mmdebstrap", path="/usr/bin/mmdebstrap")
    assert argv[: argv.index("--")] == list(base._UNSHARE)
    tool = argv[argv.index("--") + 1 :]
    assert tool[:4] == ["/usr/bin/mmdebstrap", "--mode=root", "--variant=minbase", "--format=directory"]
    assert '--aptopt=Acquire::http::Proxy "http://proxy.test:3142";' in tool
    assert "--dpkgopt=path-exclude=/usr/share/man/*" in tool
    assert "--dpkgopt=path-include=/usr/share/doc/*/copyright" in tool
    assert tool[-5:] == [
        "bookworm",
        str(tmp_path / "rootfs"),
        f"deb {MIRROR} bookworm main",
        f"deb {MIRROR} bookworm-updates main",
        f"deb {SECURITY} bookworm-security main",
    ]
    plain = bootstrap_command(
        _plan(slim=False), tmp_path / "r", tool="mmdebstrap", path="/usr/bin/mmdebstrap"
    )
    assert not any(a.startswith("--dpkgopt") for a in plain)


def test_debootstrap_command(tmp_path: Path) -> None:
    argv = bootstrap_command(_plan(), tmp_path / "rootfs", tool="debootstrap", path="/usr/sbin/debootstrap")
    assert argv[argv.index("--") + 1 :] == [
        "/usr/sbin/debootstrap",
        "--variant=minbase",
        "--components=main",
        "bookworm",
        str(tmp_path / "rootfs"),
        MIRROR,
    ]


# --- finishing a rootfs ----------------------------------------------------------------------------


def _fake_bootstrapped(root: Path) -> Path:
    for folder in ("etc/apt/apt.conf.d", "etc/dpkg/dpkg.cfg.d", "usr/sbin", "usr/share/keyrings", "dev/pts",
                   "var/lib/apt/lists/partial", "var/cache/apt/archives/partial", "tmp", "run/lock",
                   "usr/share/doc/bash", "usr/share/doc/libc6", "usr/share/man/man1", "usr/share/locale/de",
                   "usr/share/info"):  # fmt: skip
        (root / folder).mkdir(parents=True, exist_ok=True)
    files = {
        "etc/resolv.conf": "nameserver 10.0.0.1\n",
        "etc/hostname": "buildhost\n",
        "etc/apt/sources.list": f"deb {MIRROR} bookworm main\n",
        "etc/apt/apt.conf.d/99mmdebstrap": 'Acquire::http::Proxy "x";\n',
        "etc/dpkg/dpkg.cfg.d/99mmdebstrap": "path-exclude=/usr/share/man/*\n",
        "usr/share/keyrings/debian-archive-keyring.gpg": "k",
        "var/lib/apt/lists/mirror_dists_bookworm_InRelease": "x",
        "var/lib/apt/lists/lock": "",
        "var/cache/apt/pkgcache.bin": "x",
        "var/cache/apt/archives/bash.deb": "x",
        "dev/null": "",
        "tmp/junk": "x",
        "usr/share/doc/bash/copyright": "GPL",
        "usr/share/doc/bash/README": "read me",
        "usr/share/doc/libc6/changelog.gz": "x",
        "usr/share/man/man1/bash.1.gz": "x",
        "usr/share/locale/de/bash.mo": "x",
        "usr/share/info/bash.info": "x",
    }
    for name, text in files.items():
        (root / name).write_text(text)
    os.symlink("/usr/share/doc/libc6", root / "usr/share/doc/libc-bin")  # dangles once libc6's folder is gone
    os.symlink("bash", root / "usr/share/doc/bash-alias")  # still points at a kept folder
    return root


def test_finish_rootfs_slim(tmp_path: Path) -> None:
    root = _fake_bootstrapped(tmp_path / "rootfs")
    finish_rootfs(root, _plan())
    etc = root / "etc"
    assert (etc / "resolv.conf").read_text() == "" and (etc / "hostname").read_text() == ""
    assert not (etc / "apt/sources.list").exists()
    assert not (etc / "apt/apt.conf.d/99mmdebstrap").exists()
    assert not (etc / "dpkg/dpkg.cfg.d/99mmdebstrap").exists()
    sources = parse_deb822_sources((etc / "apt/sources.list.d/debian.sources").read_text())
    assert [(s.uris, s.suites) for s in sources] == [
        ((MIRROR,), ("bookworm", "bookworm-updates")),
        ((SECURITY,), ("bookworm-security",)),
    ]
    assert dict(sources[0].options)["signed-by"] == "/usr/share/keyrings/debian-archive-keyring.gpg"
    assert parse_apt_conf((etc / "apt/apt.conf.d/90composer-host").read_text()) == [
        ("Acquire::http::Proxy", "http://proxy.test:3142")
    ]
    policy = root / "usr/sbin/policy-rc.d"
    assert policy.stat().st_mode & 0o777 == 0o755 and policy.read_text().rstrip().endswith("exit 101")
    assert "path-exclude /usr/share/man/*" in (etc / "dpkg/dpkg.cfg.d/docker").read_text()
    assert sorted(os.listdir(root / "var/lib/apt/lists")) == ["partial"]
    assert sorted(os.listdir(root / "var/cache/apt")) == ["archives"]
    assert os.listdir(root / "var/cache/apt/archives") == ["partial"]
    assert (
        os.listdir(root / "dev") == [] and os.listdir(root / "tmp") == [] and os.listdir(root / "run") == []
    )
    # slim: only copyright files stay under doc; man, locale and info are emptied
    assert sorted(os.listdir(root / "usr/share/doc")) == ["bash", "bash-alias"]
    assert os.listdir(root / "usr/share/doc/bash") == ["copyright"]
    for folder in ("man", "locale", "info"):
        assert os.listdir(root / "usr/share" / folder) == []


def test_finish_rootfs_full_keeps_docs(tmp_path: Path) -> None:
    root = _fake_bootstrapped(tmp_path / "rootfs")
    finish_rootfs(root, _plan(slim=False, settings=(), security=False))
    assert (root / "usr/share/man/man1/bash.1.gz").exists()
    assert not (root / "etc/dpkg/dpkg.cfg.d/docker").exists()
    assert not (root / "etc/apt/apt.conf.d/90composer-host").exists()
    assert "security" not in (root / "etc/apt/sources.list.d/debian.sources").read_text()


# --- running the tool ------------------------------------------------------------------------------


def test_run_streamed_lines(tmp_path: Path) -> None:
    lines: list[str] = []
    tail: deque[str] = deque(maxlen=5)
    script = "printf 'one\\n(5%%\\r(100%%\\n\\nE: broken\\n' >&2; exit 3"
    status = run_streamed(
        ["sh", "-c", script], env={"PATH": "/usr/bin:/bin"}, progress=lines.append, tail=tail
    )
    assert status == 3
    assert lines == ["one", "(100%", "E: broken"]
    assert base._failure_line(tail) == "broken"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def test_run_streamed_interrupted_kills_the_whole_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = f"sleep 60 & echo $! > {pidfile}; echo started; wait"

    def progress(line: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_streamed(["sh", "-c", script], env={"PATH": "/usr/bin:/bin"}, progress=progress, tail=deque())
    grandchild = int(pidfile.read_text())
    assert not _alive(grandchild)


# --- ensure_base_image with a fake bootstrap -------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(Layout(tmp_path / "root").ensure())


def test_ensure_base_image_caches_and_aliases(store: ImageStore, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def fake_bootstrap(plan: Plan, target: Path, *, progress: base.Progress, tool: str | None = None) -> None:
        calls.append(plan.codename)
        (target / "etc").mkdir(parents=True)
        (target / "etc/debian_version").write_text(f"{plan.codename}\n")

    monkeypatch.setattr(base, "bootstrap_rootfs", fake_bootstrap)
    layout = store.layout
    etc_apt = Path(sys.prefix)  # never read: the HostApt comes from the fake below
    monkeypatch.setattr(base, "read_host_apt", lambda path, environ: HOST)
    lines: list[str] = []
    kw = dict(layout=layout, progress=lines.append, etc_apt=etc_apt, environ={}, fetch=fake_fetch)

    assert ensure_base_image(store, "scratch", **kw) is None  # type: ignore[arg-type]
    first = ensure_base_image(store, "debian:stable", **kw)  # type: ignore[arg-type]
    assert first is not None and calls == ["trixie"]
    assert set(first.tags) == {"debian:stable", "debian:trixie"}
    assert first.config.cmd == ("bash",)
    assert first.config.env_dict()["PATH"] == base.DEBIAN_PATH

    def no_network(url: str) -> bytes | None:
        raise AssertionError("the cache must not ask the mirror")

    again = ensure_base_image(store, "debian:stable", **{**kw, "fetch": no_network})  # type: ignore[arg-type]
    assert again is not None and again.id == first.id and calls == ["trixie"]

    by_number = ensure_base_image(store, "debian:13", **kw)  # type: ignore[arg-type]
    assert by_number is not None and by_number.id == first.id and calls == ["trixie"]
    assert "debian:13" in by_number.tags

    slim = ensure_base_image(store, "debian:trixie-slim", **kw)  # type: ignore[arg-type]
    assert slim is not None and slim.id != first.id and calls == ["trixie", "trixie"]
    assert os.listdir(layout.tmp) == []

    with pytest.raises(NoRegistryError):
        ensure_base_image(store, "ubuntu:22.04", **kw)  # type: ignore[arg-type]


def test_ensure_base_image_failure_leaves_nothing(store: ImageStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(plan: Plan, target: Path, *, progress: base.Progress, tool: str | None = None) -> None:
        (target / "etc").mkdir(parents=True)
        raise BootstrapError(f"{plan.ref}: mmdebstrap failed (exit status 1): no space left")

    monkeypatch.setattr(base, "bootstrap_rootfs", failing)
    monkeypatch.setattr(base, "read_host_apt", lambda path, environ: HOST)
    with pytest.raises(BootstrapError, match="no space left"):
        ensure_base_image(
            store, "debian:bookworm", layout=store.layout, progress=lambda _: None, fetch=fake_fetch
        )
    assert os.listdir(store.layout.tmp) == []
    assert store.resolve("debian:bookworm") is None


def test_find_tool_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base.shutil, "which", lambda name, path=None: None)
    with pytest.raises(BootstrapError, match="neither mmdebstrap nor debootstrap"):
        base.find_tool()
    monkeypatch.setattr(
        base.shutil, "which", lambda name, path=None: "/x/debootstrap" if name == "debootstrap" else None
    )
    assert base.find_tool() == ("debootstrap", "/x/debootstrap")
