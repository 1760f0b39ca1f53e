"""The inception stack (stacks/inception) end to end, as its users and its evaluators check it.

One `composer up -d --wait` for the whole module (the `site` fixture: srcs/ copied into a temporary
folder with its own secrets and data folders, nginx's 443 published on an ephemeral loopback port by
an override file so that the test never collides with a stack running on 443; the images come from the
session's `inception_build`). The tests then run in this file's order, the visitor's view first and
the faults last:

- every service running and healthy; WordPress's front page over TLS 1.2 and 1.3 (the site, not its
  installer); TLS 1.1 refused by the server with the client's security level lowered (and the same
  client shown able to speak TLS 1.1); only 443 published, nothing on port 80;
- `composer exec mariadb` opens the database: two users (neither an admin), one post; a comment
  posted over HTTPS is stored in MariaDB; the administrator and the author log in through
  wp-login.php; adminer.<domain> logs in to MariaDB; static.<domain> is plain HTML; status.<domain>
  shows every service up; FTPS lists (and takes) the WordPress files; redis holds WordPress's keys;
  headless Chromium renders the front page (the PNG is kept as an artifact);
- faults: `kill -9` of each service's main process (restarted within seconds, restart count raised,
  healthy again); `composer stop` (not restarted; the status board, a PID 1 of ours, exits on SIGTERM);
  the supervisor killed with SIGKILL (the containers keep running, its guardian takes over and the
  site keeps answering with no composer command, `ps` shows them, `up` finds them adopted); `down` +
  `up` (the post and the comment are still there); `down -v` (named volumes gone, the bind devices'
  files kept, as Docker does).

The module's set-up and tear-down are leak-checked like a test (tests/conftest.py's Snapshot).
"""

from __future__ import annotations

import ctypes
import ftplib
import html
import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import INCEPTION, INCEPTION_SERVICES, InceptionBuild, Snapshot, supervisor_pids

pytestmark = pytest.mark.slow

PROJECT = "inception-e2e"
POST_TITLE = "Inception, without Docker"  # the post wp-install.php makes
UP_TIMEOUT = 300.0  # s: `up --wait` from empty data folders (MariaDB initialises, WordPress installs)


# --- the stack under test --------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    text: str
    tls: str

    def header(self, name: str) -> str:
        return next((v for k, v in self.headers if k.lower() == name.lower()), "")


@dataclass
class Client:
    """HTTPS to nginx's published port as a browser that resolved `host` to 127.0.0.1 would send it:
    SNI and Host are `host`, every cookie received is sent back, redirects are not followed."""

    port: int
    host: str
    cookies: dict[str, str] = field(default_factory=dict)

    def request(
        self, method: str, path: str, form: dict[str, str] | None = None, *, tls: str = "1.2"
    ) -> Response:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the stack's certificate is self-signed
        version = ssl.TLSVersion.TLSv1_3 if tls == "1.3" else ssl.TLSVersion.TLSv1_2
        context.minimum_version = context.maximum_version = version
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=context, timeout=30)
        connection.sock = context.wrap_socket(  # SNI as the browser sends it
            socket.create_connection(("127.0.0.1", self.port), timeout=30), server_hostname=self.host
        )
        used = str(connection.sock.version())
        headers = {"Host": self.host, "User-Agent": "composer-e2e"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            connection.request(method, path, body=body, headers=headers)
            answer = connection.getresponse()
            text = answer.read().decode(errors="replace")
            received = answer.getheaders()
        finally:
            connection.close()
        for name, value in received:
            if name.lower() == "set-cookie":
                key, _, rest = value.partition("=")
                self.cookies[key.strip()] = rest.split(";", 1)[0]
        return Response(answer.status, received, text, used)

    def get(self, path: str = "/", **kwargs: Any) -> Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, form: dict[str, str]) -> Response:
        return self.request("POST", path, form)


@dataclass
class Site:
    build: InceptionBuild
    base: Path  # the temporary folder: srcs/, secrets/, data/
    argv: list[str]
    env: dict[str, str]
    port: int = 0
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def domain(self) -> str:
        return self.build.env["DOMAIN_NAME"]

    def setting(self, key: str) -> str:
        return self.build.env[key]

    def cli(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*self.argv, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check:
            assert done.returncode == 0, (
                f"composer {' '.join(args)}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
            )
        return done

    def up(self, *, timeout: float = UP_TIMEOUT) -> None:
        """`up -d --wait`, then the published port (ephemeral: a new nginx container gets a new one)."""
        self.cli("up", "-d", "--wait", "--wait-timeout", str(int(timeout)), timeout=timeout + 60)
        self.port = int(self.cli("port", "nginx", "443").stdout.strip().rpartition(":")[2])

    def ps(self) -> dict[str, dict[str, Any]]:
        return {r["Service"]: r for r in json.loads(self.cli("ps", "-a", "--format", "json").stdout)}

    def records(self) -> dict[str, dict[str, Any]]:
        """The containers' state files (<root>/containers/<id>/record.json), by service."""
        out = {}
        for path in (self.build.root / "containers").glob("*/record.json"):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):  # being rewritten: read again next time
                continue
            if record["project"] == PROJECT and not record.get("one_off"):
                out[record["service"]] = record
        return out

    def sql(self, query: str, *, user: str = "root") -> str:
        """`composer exec mariadb mariadb ...`: root with its secret, or the application's user."""
        secret = "db_root_password" if user == "root" else "db_password"
        name = "root" if user == "root" else '"$MYSQL_USER"'
        script = f'mariadb -u{name} -p"$(cat /run/secrets/{secret})" -N -B "$MYSQL_DATABASE" -e "$1"'
        return self.cli("exec", "-T", "mariadb", "sh", "-c", script, "sh", query).stdout

    def client(self, subdomain: str = "") -> Client:
        return Client(self.port, f"{subdomain}.{self.domain}" if subdomain else self.domain)

    def comment(self) -> str:
        """A visitor's comment on the post, posted once over HTTPS (wp-comments-post.php); its words."""
        if "comment" not in self.notes:
            post = self.sql(
                "SELECT ID FROM wp_posts WHERE post_type='post' AND post_status='publish'"
            ).split()
            assert len(post) == 1, post
            words = f"composer e2e comment {time.time_ns()}"
            answer = self.client().post("/wp-comments-post.php", {
                "comment_post_ID": post[0], "comment_parent": "0", "author": "Visitor",
                "email": "visitor@example.invalid", "url": "", "comment": words,
            })  # fmt: skip
            assert answer.status == 302, (answer.status, answer.text[-600:])
            self.notes["comment"] = words
        return self.notes["comment"]

    def wait_for(
        self, what: str, ready: Callable[[dict[str, dict[str, Any]]], bool], timeout: float
    ) -> dict[str, dict[str, Any]]:
        """Polls the records every 0.1 s until `ready(records)`; fails naming `what` after `timeout`."""
        deadline = time.monotonic() + timeout
        records = self.records()
        while not ready(records):
            if time.monotonic() > deadline:
                states = {s: (r["state"], r.get("health"), r["restart_count"]) for s, r in records.items()}
                pytest.fail(f"{what}: not within {timeout:g} s; (state, health, restarts): {states}")
            time.sleep(0.1)
            records = self.records()
        return records

    def started_again(self, service: str, old_pid: int, timeout: float = 10) -> dict[str, Any]:
        """`service` running a new main process with its health back to `starting` (as Docker resets it
        at each start): its record before the first probe of the new run."""
        return self.wait_for(
            f"{service} running again, its health starting over",
            lambda rs: (
                rs.get(service, {}).get("state") == "running"
                and rs[service]["pid"] not in (None, old_pid)
                and rs[service].get("health") == "starting"
            ),
            timeout,
        )[service]

    def all_healthy(self, timeout: float = 120) -> dict[str, dict[str, Any]]:
        return self.wait_for(
            "all services running and healthy",
            lambda rs: (
                set(rs) == set(INCEPTION_SERVICES)
                and all(r["state"] == "running" and r.get("health") == "healthy" for r in rs.values())
            ),
            timeout,
        )


def _child_subreaper(on: bool) -> bool:
    """Sets this process's PR_SET_CHILD_SUBREAPER flag (prctl(2)); returns what it was. ForkServer.start()
    sets it in the pytest process (tests/privileged's runtime fixtures); while it is set, the stack's
    supervisor, orphaned by the CLI that spawned it, is re-parented to pytest rather than to init as
    under a user's shell, and the leak check would count the containers it restarts as the test's."""
    libc = ctypes.CDLL(None, use_errno=True)
    was = ctypes.c_int()
    if libc.prctl(37, ctypes.byref(was), 0, 0, 0) != 0 or libc.prctl(36, int(on), 0, 0, 0) != 0:  # GET, SET
        raise OSError(ctypes.get_errno(), "prctl(PR_*_CHILD_SUBREAPER)")
    return bool(was.value)


def _wait_supervisors_gone(root: Path, timeout: float = 20) -> None:
    """Until no supervisor of `root` runs (one leaves about a second after `down`)."""
    deadline = time.monotonic() + timeout
    while supervisor_pids(root) and time.monotonic() < deadline:
        time.sleep(0.1)


@pytest.fixture(scope="module")
def site(inception_build: InceptionBuild, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("inception-e2e")
    shutil.copytree(INCEPTION / "srcs", base / "srcs")
    shutil.copytree(inception_build.secrets, base / "secrets")
    for folder in ("wordpress", "mariadb"):
        (base / "data" / folder).mkdir(parents=True)
    override = base / "srcs" / "compose.override.yaml"
    override.write_text('services:\n  nginx:\n    ports: !override ["127.0.0.1::443"]\n')
    argv = [sys.executable, "-m", "composer", "--root", str(inception_build.root), "-p", PROJECT,
            "-f", str(base / "srcs/docker-compose.yml"), "-f", str(override)]  # fmt: skip
    stack = Site(inception_build, base, argv, {**os.environ, "DATA_DIR": str(base / "data")})
    subreaper = _child_subreaper(False)
    before = Snapshot.take()
    try:
        started = time.monotonic()
        stack.up()
        print(f"up -d --wait of the inception stack (empty data): {time.monotonic() - started:.1f} s")
        yield stack
    finally:
        subprocess.run([*argv, "down", "-v", "-t", "5"], env=stack.env, capture_output=True, timeout=180,
                       check=False)  # fmt: skip
        _wait_supervisors_gone(inception_build.root)
        _child_subreaper(subreaper)
    leaks = before.leaks()
    if leaks:
        pytest.fail("left behind by the stack's up/down:\n  " + "\n  ".join(leaks), pytrace=False)


# --- a visitor's view ------------------------------------------------------------------------------------


def test_up_wait_leaves_every_service_running_and_healthy(site: Site) -> None:
    rows = site.ps()
    assert set(rows) == set(INCEPTION_SERVICES), rows
    for service, row in rows.items():
        assert (row["State"], row["Health"]) == ("running", "healthy"), (service, row)
    records = site.records()
    assert all(r["restart_count"] == 0 for r in records.values()), records
    networks = {tuple(r["networks"]) for r in records.values()}
    assert networks == {(f"{PROJECT}_inception",)}, networks  # one private bridge network for all


def test_front_page_over_tls_1_2_and_1_3_is_the_installed_site(site: Site) -> None:
    for version in ("1.2", "1.3"):
        page = site.client().get("/", tls=version)
        assert (page.status, page.tls) == (200, f"TLSv{version}"), (page.status, page.tls)
        assert f"<title>{site.setting('WP_TITLE')}" in html.unescape(page.text), page.text[:400]
        assert '<meta name="generator" content="WordPress' in page.text and "/wp-content/" in page.text
        assert POST_TITLE in html.unescape(page.text)
        assert "install.php" not in page.text, "the front page is WordPress's installer"
    login = site.client().get("/wp-login.php")
    assert login.status == 200 and 'name="log"' in login.text, login.status
    admin = site.client().get("/wp-admin/")
    assert admin.status == 302 and "/wp-login.php" in admin.header("Location"), admin.headers


def _tls_1_1_context() -> ssl.SSLContext:
    """A client that offers only TLS 1.1, with OpenSSL's security level lowered to 0 so that the client
    itself is willing to (at the default level OpenSSL 3 refuses TLS 1.1 before sending anything)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_1
    return context


def test_tls_1_1_is_refused_by_the_server(site: Site, tmp_path: Path) -> None:
    # the control: this client completes a TLS 1.1 handshake with a server that allows it
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-nodes", "-newkey", "rsa:2048", "-days", "1",
                    "-subj", "/CN=t", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)  # fmt: skip
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    server_context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server_context.minimum_version = ssl.TLSVersion.TLSv1_1
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)

        def serve_one() -> None:
            connection, _ = listener.accept()
            with connection, server_context.wrap_socket(connection, server_side=True):
                pass

        server = threading.Thread(target=serve_one)
        server.start()
        with (
            socket.create_connection(listener.getsockname(), timeout=10) as raw,
            _tls_1_1_context().wrap_socket(raw, server_hostname="t") as tls,
        ):
            assert tls.version() == "TLSv1.1"
        server.join(timeout=10)

    # nginx: the same client is refused with the server's protocol_version alert
    with (
        pytest.raises(ssl.SSLError) as refused,
        socket.create_connection(("127.0.0.1", site.port), timeout=10) as raw,
        _tls_1_1_context().wrap_socket(raw, server_hostname=site.domain),
    ):
        pass
    assert refused.value.reason == "TLSV1_ALERT_PROTOCOL_VERSION", refused.value


def test_only_443_is_published_and_port_80_is_closed(site: Site) -> None:
    published = {s: r["Publishers"] for s, r in site.ps().items() if r["Publishers"]}
    assert list(published) == ["nginx"], published
    assert [(p["TargetPort"], p["Protocol"]) for p in published["nginx"]] == [(443, "tcp")], published
    assert site.cli("port", "nginx", "80", check=False).returncode != 0
    nginx = next(iter(site.records()["nginx"]["networks"].values()))
    for port in (80, 443):  # on the private network: 80 is closed, 443 listens (the control)
        with socket.socket() as probe:
            probe.settimeout(5)
            code = probe.connect_ex((nginx, port))
        assert code == (0 if port == 443 else 111), f"{nginx}:{port}: {os.strerror(code)}"


def test_services_find_each_other_by_name(site: Site) -> None:
    """From wordpress, through composer's embedded DNS (127.0.0.11): `mariadb` resolves to its
    container's address, and that address back to its name."""
    address = next(iter(site.records()["mariadb"]["networks"].values()))
    forward = site.cli("exec", "-T", "wordpress", "getent", "hosts", "mariadb").stdout.split()
    assert forward[:1] == [address], forward
    reverse = site.cli("exec", "-T", "wordpress", "getent", "hosts", address).stdout.split()
    assert reverse[:1] == [address] and reverse[1].split(".")[0] == "mariadb", reverse  # the container's name
    resolv = site.cli("exec", "-T", "wordpress", "cat", "/etc/resolv.conf").stdout
    assert "nameserver 127.0.0.11" in resolv.splitlines(), resolv


def test_exec_mariadb_opens_the_database_two_users_and_a_post(site: Site) -> None:
    tables = site.sql("SHOW TABLES", user="app").split()
    assert {"wp_users", "wp_posts", "wp_comments", "wp_options"} <= set(tables), tables
    users = dict(
        line.split("\t")
        for line in site.sql(
            "SELECT u.user_login, m.meta_value FROM wp_users u JOIN wp_usermeta m ON m.user_id = u.ID"
            " AND m.meta_key = 'wp_capabilities' ORDER BY u.ID"
        ).splitlines()
    )
    assert set(users) == {site.setting("WP_ADMIN_USER"), site.setting("WP_USER")}, users
    assert (
        '"administrator"' in users[site.setting("WP_ADMIN_USER")]
        and '"author"' in users[site.setting("WP_USER")]
    )
    assert not any("admin" in login.lower() for login in users), users
    posts = site.sql(
        "SELECT p.post_title, u.user_login FROM wp_posts p JOIN wp_users u ON u.ID = p.post_author"
        " WHERE p.post_type = 'post' AND p.post_status = 'publish'"
    )
    assert posts.splitlines() == [f"{POST_TITLE}\t{site.setting('WP_USER')}"], posts
    root = site.cli("exec", "-T", "mariadb", "mariadb", "-uroot", "-e", "SELECT 1", check=False)
    assert root.returncode != 0 and "Access denied for user 'root'" in root.stderr, root


def test_a_comment_posted_over_https_is_stored_in_mariadb(site: Site) -> None:
    words = site.comment()
    stored = site.sql("SELECT comment_author, comment_content FROM wp_comments WHERE comment_content LIKE"
                      f" '{words}'")  # fmt: skip
    assert stored.split("\t") == ["Visitor", words + "\n"], stored


@pytest.mark.parametrize(("login", "password", "role"), [
    ("WP_ADMIN_USER", "wp_admin_password", "administrator"),
    ("WP_USER", "wp_user_password", "author"),
])  # fmt: skip
def test_wordpress_login_through_the_site(site: Site, login: str, password: str, role: str) -> None:
    user = site.setting(login)
    browser = site.client()
    assert browser.get("/wp-login.php").status == 200  # sets WordPress's test cookie, as a browser gets it
    wrong = browser.post("/wp-login.php", {"log": user, "pwd": "not-the-password", "testcookie": "1"})
    assert wrong.status == 200 and "is incorrect" in wrong.text, wrong.status
    answer = browser.post("/wp-login.php", {
        "log": user, "pwd": site.build.secret(password), "wp-submit": "Log In",
        "redirect_to": f"https://{site.domain}/wp-admin/", "testcookie": "1",
    })  # fmt: skip
    assert answer.status == 302, (answer.status, re.findall(r'id="login_error".*?</div>', answer.text, re.S))
    assert answer.header("Location") == f"https://{site.domain}/wp-admin/", answer.headers
    dashboard = browser.get("/wp-admin/")
    assert dashboard.status == 200, dashboard.status
    text = html.unescape(dashboard.text)
    assert "<title>Dashboard" in text and f'<span class="display-name">{user}</span>' in text, text[:500]
    users_page = browser.get("/wp-admin/users.php")  # only the administrator may list the users
    assert users_page.status == (200 if role == "administrator" else 403), users_page.status


def test_adminer_through_nginx_logs_in_to_mariadb(site: Site) -> None:
    browser = site.client("adminer")
    page = browser.get("/")
    assert page.status == 200 and "Adminer" in page.text and 'name="auth[server]"' in page.text, page.text[
        :300
    ]
    form = {
        "auth[driver]": "server",
        "auth[server]": "mariadb",
        "auth[username]": site.setting("MYSQL_USER"),
        "auth[password]": site.build.secret("db_password"),
        "auth[db]": site.setting("MYSQL_DATABASE"),
    }
    stranger = site.client("adminer")
    stranger.get("/")
    denied = stranger.post("/", {**form, "auth[password]": "wrong"})
    assert denied.status == 302, denied.status  # back to the form, with the error in the session
    again = html.unescape(stranger.get("/" + denied.header("Location")).text)
    assert "Access denied for user" in again and "wp_posts" not in again, again[:600]
    answer = browser.post("/", form)
    assert answer.status == 302, (answer.status, answer.text[:300])
    location = answer.header("Location")
    assert "server=mariadb" in location and f"db={site.setting('MYSQL_DATABASE')}" in location, location
    database = browser.get("/" + location if location.startswith("?") else location)
    assert database.status == 200, database.status
    assert f"<title>Database: {site.setting('MYSQL_DATABASE')}" in database.text, database.text[:300]
    for table in ("wp_posts", "wp_users", "wp_comments"):
        assert table in database.text, table


def test_static_site_through_nginx_is_plain_html(site: Site) -> None:
    browser = site.client("static")
    page = browser.get("/")
    assert page.status == 200 and page.header("Content-Type").startswith("text/html"), page.headers
    source = (INCEPTION / "srcs/requirements/static/site/index.html").read_text()
    assert page.text == source, "static.<domain>/ is not the static site's index.html"
    assert not page.header("X-Powered-By"), page.headers  # PHP would say so
    assert browser.get("/style.css").status == 200
    assert browser.get("/index.php").status == 404  # no PHP behind it


def test_status_board_through_nginx_shows_every_service(site: Site) -> None:
    board = site.client("status")
    records = site.records()
    deadline = time.monotonic() + 30
    while True:  # a round every 2 s: up to one round behind the stack
        answer = board.get("/status.json")
        assert answer.status == 200, answer.status
        state = json.loads(answer.text)
        if state["up"] == len(state["services"]) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    probed = {s["service"]: s for s in state["services"]}
    assert set(probed) == set(INCEPTION_SERVICES) - {"status"}, probed
    for service, result in probed.items():
        assert result["ok"], (service, result)
        address = next(iter(records[service]["networks"].values()))
        assert result["address"] == address, (service, result, address)  # the embedded DNS's answer
    assert probed["nginx"]["detail"] == "HTTP 200 over TLSv1.3"
    assert probed["mariadb"]["detail"].endswith("-MariaDB-0+deb12u1"), probed["mariadb"]
    assert probed["redis"]["detail"].startswith("PONG"), probed["redis"]
    assert probed["ftp"]["detail"].startswith("220 "), probed["ftp"]
    assert "FCGI_MPXS_CONNS" in probed["wordpress"]["detail"], probed["wordpress"]
    sandbox = state["sandbox"]
    assert sandbox["pid"] == 1 and sandbox["uid"] == 65534 and sandbox["read_only_root"], sandbox
    assert sandbox["cap_eff"] == "0000000000000000" and sandbox["no_new_privs"], sandbox
    page = board.get("/")
    assert page.status == 200 and "7 of 7 services answer" in page.text, page.text[:600]
    # what composer set up around it, seen from outside
    written = site.cli(
        "exec", "-T", "status", "sh", "-c", "touch /x; touch /tmp/x && echo tmp ok", check=False
    )
    assert "Read-only file system" in written.stderr and "tmp ok" in written.stdout, written
    status = records["status"]
    memory = Path(f"/sys/fs/cgroup/memory/composer/{status['id']}/memory.limit_in_bytes")
    if not memory.exists():  # cgroup v2
        memory = Path(f"/sys/fs/cgroup/composer/{status['id']}/memory.max")
    assert memory.read_text().strip() == str(48 * 1024 * 1024), memory


def test_ftps_lists_and_stores_the_wordpress_files(site: Site) -> None:
    address = next(iter(site.records()["ftp"]["networks"].values()))
    client = ftplib.FTP_TLS(timeout=20)
    try:
        client.connect(address, 21)
        with pytest.raises(ftplib.error_perm):  # no login in clear text
            ftplib.FTP(address, timeout=20).login(site.setting("FTP_USER"), site.build.secret("ftp_password"))
        client.auth()
        client.login(site.setting("FTP_USER"), site.build.secret("ftp_password"))
        client.prot_p()
        names = client.nlst()
        assert {"wp-config.php", "index.php", "wp-content"} <= set(names), names
        payload = f"uploaded over FTPS {time.time_ns()}\n".encode()
        client.storbinary("STOR e2e-upload.txt", io.BytesIO(payload))
        client.quit()
    finally:
        client.close()
    uploaded = site.base / "data" / "wordpress" / "e2e-upload.txt"
    assert uploaded.read_bytes() == payload  # in the host's data folder: the bind-backed volume
    assert uploaded.stat().st_uid == 33, "the FTP user writes as www-data"
    seen = site.cli("exec", "-T", "wordpress", "cat", "/var/www/html/e2e-upload.txt").stdout
    assert seen.encode() == payload


def test_redis_holds_wordpress_keys(site: Site) -> None:
    assert site.client().get("/").status == 200  # a page view fills the cache
    assert site.cli("exec", "-T", "redis", "redis-cli", "ping").stdout.strip() == "PONG"
    scan = site.cli("exec", "-T", "redis", "redis-cli", "--scan", "--pattern", "wordpress:*").stdout
    keys = scan.splitlines()  # "<WP_CACHE_KEY_SALT = DB_NAME>:<group>:<key>" (object-cache.php)
    groups = {key.split(":")[1] for key in keys}
    assert len(keys) >= 5 and {"posts", "userlogins"} <= groups, keys
    info = site.cli("exec", "-T", "redis", "redis-cli", "info", "stats").stdout
    hits = int(re.search(r"keyspace_hits:(\d+)", info).group(1))  # type: ignore[union-attr]
    assert hits > 0, info


# --- a real browser --------------------------------------------------------------------------------------


def _png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of pixels) of an 8-bit RGB or RGBA PNG, with stdlib zlib only."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    at, chunks, header = 8, [], b""
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        body = data[at + 8 : at + 8 + length]
        assert zlib.crc32(kind + body) == struct.unpack(">I", data[at + 8 + length : at + 12 + length])[0]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
        at += 12 + length
        if kind == b"IEND":
            break
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    size = 4 if colour == 6 else 3
    stride = width * size
    raw = zlib.decompress(b"".join(chunks))
    assert len(raw) == height * (stride + 1), "truncated image data"
    rows, previous = [], bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        if kind == 1:
            for i in range(size, stride):
                line[i] = (line[i] + line[i - size]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, previous, strict=True))
        elif kind == 3:
            for i in range(stride):
                left = line[i - size] if i >= size else 0
                line[i] = (line[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = line[i - size] if i >= size else 0
                b, c = previous[i], previous[i - size] if i >= size else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        else:
            assert kind == 0, f"row {y}: filter {kind}"
        rows.append(bytes(line) if size == 3 else bytes(b for i, b in enumerate(line) if i % 4 != 3))
        previous = line
    return width, height, rows


def _group_members(group: int) -> list[int]:
    """The live (not zombie) processes of process group `group`."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == group and fields[0] != "Z":  # state, ppid, pgrp, ...
                members.append(int(entry.name))
    return members


def _chromium(site: Site, *args: str, profile: Path, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Headless Chromium as root (no sandbox), with the site's names mapped to nginx's published port."""
    browser = shutil.which("chromium")
    if browser is None:
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    rules = ", ".join(f"MAP {name}:443 127.0.0.1:{site.port}" for name in
                      (site.domain, f"status.{site.domain}"))  # fmt: skip
    argv = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}",
            "--ignore-certificate-errors", f"--host-resolver-rules={rules}", *args]  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, env={**os.environ, "HOME": str(profile)})  # fmt: skip
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # its own session: chromium and its helpers
        process.communicate()
        pytest.fail(f"chromium {' '.join(args)}: still running after {timeout:g} s")
    finally:
        deadline = time.monotonic() + 10
        while _group_members(process.pid) and time.monotonic() < deadline:  # helpers that outlive it a moment
            time.sleep(0.1)
        if _group_members(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(argv, process.returncode, out, err)


def test_chromium_renders_the_front_page(site: Site, tmp_path: Path, artifact: Callable[[str], Path]) -> None:
    width, height = 1280, 900
    dom = _chromium(site, "--dump-dom", f"https://{site.domain}/", profile=tmp_path / "dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = html.unescape(dom.stdout)
    assert f"<title>{site.setting('WP_TITLE')}" in text and POST_TITLE in text, dom.stdout[:1000]
    assert "wp-block-post-title" in dom.stdout, "not the theme's rendering of the posts"

    shot = artifact("inception-front-page.png")
    done = _chromium(site, f"--window-size={width},{height}", f"--screenshot={shot}", f"https://{site.domain}/",
                     profile=tmp_path / "shot")  # fmt: skip
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    print(f"screenshot of https://{site.domain}/ : {shot}")
    got_width, got_height, rows = _png_pixels(shot.read_bytes())
    assert (got_width, got_height) == (width, height)
    pixels = [row[i : i + 3] for row in rows[::3] for i in range(0, len(row), 9)]  # a 1-in-9 sample
    counts: dict[bytes, int] = {}
    for pixel in pixels:
        counts[pixel] = counts.get(pixel, 0) + 1
    background, most = max(counts.items(), key=lambda item: item[1])
    dark = sum(n for p, n in counts.items() if sum(p) < 3 * 96)
    # a page of text on the theme's white: measured 247 colours, 97.5% background, 1.7% dark pixels
    assert len(counts) > 20, f"{len(counts)} colours: not a rendered page"
    assert most < 0.995 * len(pixels), f"{most / len(pixels):.1%} of the image is {background.hex()}"
    assert dark > 0.005 * len(pixels), f"{dark / len(pixels):.2%} dark pixels: no text to be seen"
    lines = [
        y for y, row in enumerate(rows) if any(sum(row[i : i + 3]) < 3 * 96 for i in range(0, len(row), 3))
    ]
    assert len(lines) > 100 and lines[-1] - lines[0] > height // 2, "no text down the page"
    # the browser fetched the page and what it needs (the theme's style), as nginx logged it
    log = site.cli("logs", "--no-log-prefix", "nginx").stdout
    fetched = [line for line in log.splitlines() if "HeadlessChrome" in line]
    assert any('"GET / HTTP/1.1" 200' in line for line in fetched), fetched
    assert any(".css" in line and '" 200 ' in line for line in fetched), fetched


def test_chromium_renders_the_status_board(
    site: Site, tmp_path: Path, artifact: Callable[[str], Path]
) -> None:
    dom = _chromium(site, "--dump-dom", f"https://status.{site.domain}/", profile=tmp_path / "dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "7 of 7 services answer" in dom.stdout and dom.stdout.count('<tr class="up">') == 7, dom.stdout
    shot = artifact("inception-status-board.png")
    done = _chromium(site, "--window-size=1100,700", f"--screenshot={shot}", f"https://status.{site.domain}/",
                     profile=tmp_path / "shot")  # fmt: skip
    assert done.returncode == 0 and _png_pixels(shot.read_bytes())[:2] == (1100, 700), done.stderr[-2000:]
    print(f"screenshot of https://status.{site.domain}/ : {shot}")


# --- faults ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("service", INCEPTION_SERVICES)
def test_kill_9_of_the_main_process_restarts_the_service(site: Site, service: str) -> None:
    """`restart: unless-stopped`: the container runs again within seconds with its restart count
    raised, its health back to `starting` (as Docker resets it), then healthy again."""
    before = site.all_healthy()[service]
    killed_at = time.monotonic()
    os.kill(before["pid"], signal.SIGKILL)
    after = site.started_again(service, before["pid"])
    back = time.monotonic() - killed_at
    assert after["restart_count"] == before["restart_count"] + 1, after
    assert back < 5, f"{service} took {back:.1f} s to run again"
    site.all_healthy(timeout=120)
    healthy = time.monotonic() - killed_at
    print(f"{service}: running again {back:.2f} s after kill -9, healthy after {healthy:.1f} s")
    assert site.client().get("/").status == 200


def test_composer_stop_is_not_restarted(site: Site) -> None:
    before = site.all_healthy()["mariadb"]
    site.cli("stop", "mariadb")
    stopped = site.records()["mariadb"]
    assert stopped["state"] == "exited" and stopped["manually_stopped"], stopped
    time.sleep(4)  # longer than the first restart delays (0.1 s, 0.2 s, ...)
    still = site.records()["mariadb"]
    assert still["state"] == "exited" and still["restart_count"] == before["restart_count"], still
    page = site.client().get("/")
    assert page.status == 500 and "Error establishing a database connection" in page.text, page.status
    site.cli("start", "mariadb")
    site.started_again("mariadb", before["pid"])
    site.all_healthy()
    assert site.records()["mariadb"]["restart_count"] == before["restart_count"]  # started, not restarted
    assert site.client().get("/").status == 200


def test_the_status_board_as_pid_1_stops_on_sigterm(site: Site) -> None:
    """PID 1 gets no default action for SIGTERM: the board handles it, so `stop` takes well under the
    10 s grace period that would end in SIGKILL, and it exits 0."""
    before = site.all_healthy()["status"]
    started = time.monotonic()
    site.cli("stop", "status")
    took = time.monotonic() - started
    stopped = site.records()["status"]
    assert stopped["state"] == "exited" and stopped["exit_code"] == 0, stopped
    assert took < 3, f"composer stop status took {took:.1f} s"
    assert "board: stopped" in site.cli("logs", "--tail", "5", "status").stdout
    site.cli("start", "status")
    site.started_again("status", before["pid"])
    site.all_healthy()


def test_supervisor_killed_containers_keep_running_and_are_adopted(site: Site) -> None:
    """The supervisor's SIGKILL does not touch the containers: nginx keeps serving on the published port
    (a kernel DNAT rule), its guardian becomes the next supervisor and adopts them at once (the embedded
    DNS answers again: WordPress reaches MariaDB by name with no composer command), `ps` shows every
    service, and `up` finds them all adopted, none restarted."""
    records = site.all_healthy()
    pids = {s: r["pid"] for s, r in records.items()}
    supervisor = int((site.build.root / "projects" / PROJECT / "supervisor.pid").read_text())
    os.kill(supervisor, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while supervisor in supervisor_pids(site.build.root) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert supervisor not in supervisor_pids(site.build.root)
    for service, pid in pids.items():
        stat = Path(f"/proc/{pid}/stat").read_text()
        assert stat.rsplit(")", 1)[1].split()[0] != "Z", f"{service}'s main process died with the supervisor"
    page = site.client().get("/readme.html")  # a file nginx serves itself
    assert page.status == 200 and "WordPress" in page.text, page.status
    root = site.build.root

    def replacement() -> int | None:
        """The new supervisor once it serves (its pid file; its guardian's command line changes as it
        execs, so a scan of command lines alone can see it and then miss it)."""
        try:
            pid = int((root / "projects" / PROJECT / "supervisor.pid").read_text())
        except (OSError, ValueError):
            return None
        return pid if pid != supervisor and pid in supervisor_pids(root) else None

    deadline = time.monotonic() + 10
    while (replaced := replacement()) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert replaced is not None, "no supervisor replaced the killed one"
    deadline = time.monotonic() + 20  # nginx re-resolves wordpress:9000 (resolver valid=10s at most)
    while True:  # the front page needs WordPress -> MariaDB by name, i.e. the replacement's DNS
        front = site.client().get("/")
        if (front.status == 200 and POST_TITLE in html.unescape(front.text)) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert front.status == 200 and POST_TITLE in html.unescape(front.text), (front.status, front.text[-500:])
    rows = site.ps()
    assert {s: r["State"] for s, r in rows.items()} == dict.fromkeys(INCEPTION_SERVICES, "running"), rows
    site.up()
    assert {s: r["pid"] for s, r in site.all_healthy().items()} == pids, "restarted instead of adopted"
    front = site.client().get("/")
    assert front.status == 200 and POST_TITLE in html.unescape(front.text)


@pytest.mark.module_leak_check  # the new containers, bridge and cgroups are the module's until its down -v
def test_down_then_up_keeps_the_post_and_the_comment(site: Site) -> None:
    words = site.comment()
    site.cli("down")
    _wait_supervisors_gone(site.build.root)
    assert site.cli("ps", "-a", "-q").stdout.strip() == ""
    site.up()
    assert words in site.sql("SELECT comment_content FROM wp_comments")
    assert POST_TITLE in html.unescape(site.client().get("/").text)
    logs = site.cli("logs", "mariadb", "wordpress").stdout
    assert "creating database" not in logs and "copying WordPress" not in logs, logs[-2000:]
    assert "WordPress is already installed" in logs, logs[-2000:]


def test_down_v_removes_the_named_volumes_and_keeps_the_bind_devices(site: Site) -> None:
    volumes = site.build.root / "volumes"
    names = [f"{PROJECT}_{v}" for v in ("wordpress", "mariadb", "certs")]
    assert all((volumes / name).is_dir() for name in names), sorted(p.name for p in volumes.iterdir())
    site.cli("down", "-v")
    _wait_supervisors_gone(site.build.root)
    assert not any((volumes / name).exists() for name in names), sorted(p.name for p in volumes.iterdir())
    data = site.base / "data"
    assert (data / "mariadb" / site.setting("MYSQL_DATABASE")).is_dir()  # Docker keeps a bind device's files
    assert (data / "wordpress" / "wp-config.php").is_file()
