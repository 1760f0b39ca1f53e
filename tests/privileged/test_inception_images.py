"""The inception stack's images (stacks/inception/), built for real with `composer build` and checked one
by one through the runtime, as their entrypoints would run them at first start. The whole stack under
`composer up` is tested in tests/e2e/test_inception.py.

The images are built once per session (tests/conftest.py's `inception_build`: debian:bookworm
bootstrapped from the host's mirror, then apt-get in each Dockerfile; about a minute of CPU on this
machine kind), then:

- nginx: the entrypoint makes the certificate, `nginx -t` passes, TLS 1.2 and 1.3 handshakes succeed on
  443 and TLS 1.1 is refused by the server (client at SECLEVEL=0), nothing listens on 80;
- mariadb: first start on an empty data folder creates the database and user from the secrets, root
  cannot log in without its password; a second start keeps the data and skips the initialisation;
- wordpress with mariadb and redis (sharing one network namespace, so 127.0.0.1 reaches them):
  the entrypoint copies WordPress, writes wp-config.php, installs the site with two users (neither an
  admin) and one post, and WordPress's object cache lands in redis; php-fpm's config is valid;
- redis, vsftpd, adminer, the static site: their configs are valid and their daemons start;
- the status board: its probes file is checked (a bad line names the file and line), and it probes
  real daemons (redis) by name and serves its page.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import trio

from composer.image.store import ImageStore
from composer.runtime.forkserver import ForkServer
from composer.runtime.launch import Container, Runtime
from composer.runtime.spec import BindMount, ContainerSpec, Network, Stdio, TmpfsMount
from composer.storage.layout import Layout
from tests.conftest import INCEPTION as STACK
from tests.conftest import INCEPTION_COMPOSE_FILE as COMPOSE_FILE
from tests.conftest import INCEPTION_SERVICES as SERVICES
from tests.conftest import InceptionBuild, read_env_file

pytestmark = pytest.mark.slow


@dataclass
class Stack:
    layout: Layout
    store: ImageStore
    runtime: Runtime
    secrets: Path
    env: dict[str, str]  # srcs/.env
    build_output: str

    def secret(self, name: str) -> str:
        return (self.secrets / f"{name}.txt").read_text()

    def secret_mounts(self, *names: str) -> tuple[BindMount, ...]:
        return tuple(
            BindMount(source=self.secrets / f"{name}.txt", target=f"/run/secrets/{name}", read_only=True)
            for name in names
        )

    def spec(self, service: str, command: tuple[str, ...] | None = None, **changes: object) -> ContainerSpec:
        """A container of the service's image, its ENTRYPOINT kept and `command` replacing CMD."""
        image = self.store.get(f"{service}:inception")
        spec = ContainerSpec(
            id=f"inception-{service}",
            lower_dirs=tuple(self.store.layer_dirs(image)),
            argv=image.config.argv(command=command),
            env=image.config.env,
            cwd=image.config.working_dir or "/",
            user=image.config.user,
            hostname=service,
        )
        return replace(spec, **changes)  # type: ignore[arg-type]

    def run(self, spec: ContainerSpec) -> tuple[int, str]:
        """Run to the end; (exit code, stdout+stderr)."""
        return trio.run(self._run, spec)

    async def _run(self, spec: ContainerSpec) -> tuple[int, str]:
        read_end, write_end = os.pipe()
        try:
            container = await self.runtime.start(
                replace(spec, stdio=Stdio(stdout=write_end, stderr=write_end))
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        chunks: list[bytes] = []
        try:
            async with trio.lowlevel.FdStream(read_end) as stream:
                with trio.fail_after(300):  # a hang is a failure, not a stuck test run
                    while chunk := await stream.receive_some(65536):
                        chunks.append(chunk)
                    status = await container.wait()
        finally:
            await container.kill_and_reap()
            self.runtime.remove(spec.id)
        return status.code, b"".join(chunks).decode(errors="replace")

    def sh(
        self, service: str, script: str, *, expect: int = 0, argv_override: bool = False, **changes: object
    ) -> str:
        """`script` as the command after the service's entrypoint (alone with `argv_override`)."""
        spec = self.spec(service, ("sh", "-c", script), **changes)
        if argv_override:
            spec = replace(spec, argv=("sh", "-c", script))
        code, out = self.run(spec)
        assert code == expect, f"{service}: exit {code}\n{out}"
        return out


@pytest.fixture(scope="module")
def forkserver() -> Iterator[ForkServer]:
    server = ForkServer.start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def stack(inception_build: InceptionBuild, forkserver: ForkServer) -> Stack:
    layout = Layout(inception_build.root).ensure()
    return Stack(
        layout=layout,
        store=ImageStore(layout),
        runtime=Runtime(layout, forkserver),
        secrets=inception_build.secrets,
        env=inception_build.env,
        build_output=inception_build.output,
    )


@pytest.fixture
def netns() -> Iterator[Network]:
    """A network namespace with `lo` up, as composer's network layer (and Docker) gives a container: the
    checks talk to the daemons over 127.0.0.1, and containers that join it share it, like a pod."""
    name = f"composer-inception-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield Network(mode="join", path=f"/run/netns/{name}")
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True)


# --- the files -----------------------------------------------------------------------------------------


def test_compose_file_is_accepted_and_follows_the_rules(tmp_path: Path) -> None:
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run(
        [sys.executable, "-m", "composer", "-f", str(COMPOSE_FILE), "config", "--format", "json"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    project = json.loads(done.stdout)
    services = project["services"]
    assert set(services) == set(SERVICES)
    published = [(name, port["published"]) for name, svc in services.items() for port in svc.get("ports", [])]
    assert published == [("nginx", "443")]
    for name, svc in services.items():
        assert svc["restart"] in ("unless-stopped", "on-failure"), name
        assert svc["image"] == f"{name}:inception"
        assert list(svc["networks"]) == ["inception"], name
        assert "network_mode" not in svc and "links" not in svc
        assert "healthcheck" in svc, name
    assert project["networks"]["inception"]["driver"] == "bridge"
    for volume in ("wordpress", "mariadb"):
        opts = project["volumes"][volume]["driver_opts"]
        assert opts == {"type": "none", "o": "bind", "device": f"{tmp_path}/data/{volume}"}
    # no forbidden patterns, no passwords in the files that are committed
    for path in STACK.rglob("*"):
        if path.is_file() and "secrets" not in path.relative_to(STACK).parts:
            text = path.read_text()
            assert not re.search(r"tail -f|sleep infinity|while true|network_mode|--link", text), path
    for path in STACK.rglob("Dockerfile"):
        froms = re.findall(r"^FROM (\S+)", path.read_text(), re.M)
        assert froms == ["debian:bookworm"], path
    env_file = read_env_file(STACK / "srcs/.env")
    assert not any("PASSWORD" in key for key in env_file), "passwords are secret files, not .env values"
    assert "admin" not in env_file["WP_ADMIN_USER"].lower() and "admin" not in env_file["WP_USER"].lower()
    assert (STACK / ".gitignore").read_text().splitlines()[-1] == "/secrets/"


def test_secrets_script_makes_files_once(tmp_path: Path) -> None:
    script = str(STACK / "tools/generate-secrets.sh")
    subprocess.run(["sh", script, str(tmp_path / "s")], check=True, capture_output=True)
    first = {p.name: p.read_text() for p in (tmp_path / "s").iterdir()}
    assert sorted(first) == sorted(
        f"{n}.txt" for n in ("db_password", "db_root_password", "wp_admin_password", "wp_user_password",
                             "ftp_password")
    )  # fmt: skip
    assert all(re.fullmatch(r"[A-Za-z0-9]{24}", value) for value in first.values())
    assert len(set(first.values())) == len(first)
    assert (tmp_path / "s").stat().st_mode & 0o777 == 0o700
    subprocess.run(["sh", script, str(tmp_path / "s")], check=True, capture_output=True)
    assert {p.name: p.read_text() for p in (tmp_path / "s").iterdir()} == first


# --- each image ------------------------------------------------------------------------------------------


def test_every_image_is_built_from_bookworm(stack: Stack) -> None:
    base = stack.store.get("debian:bookworm")
    for service in SERVICES:
        image = stack.store.get(f"{service}:inception")
        assert image.diff_ids[: len(base.diff_ids)] == base.diff_ids, service
    assert "apache2" not in stack.sh("wordpress", "dpkg-query -W -f '${Package}\\n'", argv_override=True)
    assert "apache2" not in stack.sh("adminer", "dpkg-query -W -f '${Package}\\n'")


def test_nginx_tls_only_on_443(stack: Stack, netns: Network) -> None:
    domain = stack.env["DOMAIN_NAME"]
    # the real entrypoint makes the certificate, then runs the checks in place of nginx's foreground run
    out = stack.sh(
        "nginx",
        "nginx -t 2>&1 && openssl x509 -in /etc/nginx/ssl/inception.crt -noout -subject -ext subjectAltName"
        " && nginx -T 2>/dev/null | grep -E '^\\s*(listen|ssl_protocols)' | sort -u"
        " && nginx && sleep 0.5"
        " && for v in tls1_2 tls1_3; do"
        "    openssl s_client -connect 127.0.0.1:443 -$v </dev/null >/dev/null 2>&1"
        "    && echo $v accepted || echo $v refused; done"
        " && openssl s_client -connect 127.0.0.1:443 -tls1_1 -cipher 'DEFAULT:@SECLEVEL=0'"
        "    </dev/null >/dev/null 2>&1 && echo tls1_1 accepted || echo tls1_1 refused"
        " ; curl -s -o /dev/null --max-time 3 http://127.0.0.1/ && echo port 80 open || echo port 80 closed",
        env=("DOMAIN_NAME=" + domain,),
        network=netns,
    )
    assert "made a self-signed certificate for " + domain in out, out
    assert "syntax is ok" in out and "test is successful" in out, out
    assert f"CN = {domain}" in out and f"DNS:{domain}, DNS:*.{domain}" in out, out
    directives = {line.strip() for line in out.splitlines() if line.strip().startswith(("listen", "ssl_"))}
    assert directives == {
        "listen 443 ssl;",
        "listen 443 ssl default_server;",
        "ssl_protocols TLSv1.2 TLSv1.3;",
    }
    for expected in ("tls1_2 accepted", "tls1_3 accepted", "tls1_1 refused", "port 80 closed"):
        assert expected in out, out


def _mariadb_env(stack: Stack) -> tuple[str, ...]:
    return (
        f"MYSQL_DATABASE={stack.env['MYSQL_DATABASE']}",
        f"MYSQL_USER={stack.env['MYSQL_USER']}",
        "MYSQL_PASSWORD_FILE=/run/secrets/db_password",
        "MYSQL_ROOT_PASSWORD_FILE=/run/secrets/db_root_password",
    )


# Starts mariadbd in the background of the check script (a test command, not the container's main
# process), waits for it, runs "$@"-style checks, and shuts it down cleanly.
MARIADB_AROUND = """
mariadbd --user=mysql & server=$!
for i in $(seq 1 60); do mariadb-admin ping --silent 2>/dev/null && break; sleep 0.5; done
{checks}
mariadb-admin -uroot -p"$(cat /run/secrets/db_root_password)" shutdown; wait $server
"""


def test_mariadb_first_start_creates_database_and_user(stack: Stack, tmp_path: Path, netns: Network) -> None:
    data = tmp_path / "mariadb"
    data.mkdir()
    user, database = stack.env["MYSQL_USER"], stack.env["MYSQL_DATABASE"]
    changes: dict[str, Any] = {
        "env": (*stack.spec("mariadb").env, *_mariadb_env(stack)),
        "mounts": (BindMount(source=data, target="/var/lib/mysql"),
                   *stack.secret_mounts("db_password", "db_root_password")),
        "network": netns,
    }  # fmt: skip
    checks = """
    echo "== as the user, over TCP"
    mariadb -h 127.0.0.1 -u"$MYSQL_USER" -p"$(cat /run/secrets/db_password)" -N \\
        -e 'SHOW DATABASES' "$MYSQL_DATABASE" | sed 's/^/DATABASE /'
    echo "== root without a password"
    for host in localhost 127.0.0.1 ::1; do
        mariadb -h $host -uroot -e 'SELECT 1' 2>&1 && echo ROOT-WITHOUT-PASSWORD
    done
    echo "== root with its password"
    mariadb -uroot -p"$(cat /run/secrets/db_root_password)" -N \\
        -e "SELECT CONCAT(user, '@', host) FROM mysql.user ORDER BY 1" | sed 's/^/ACCOUNT /'
    """
    out = stack.sh("mariadb", MARIADB_AROUND.format(checks=checks), **changes)
    assert f"creating database '{database}' and user '{user}'" in out, out
    assert "ROOT-WITHOUT-PASSWORD" not in out and "Access denied for user 'root'@'localhost'" in out, out
    assert f"DATABASE {database}" in out.splitlines(), out
    accounts = [line.split()[1] for line in out.splitlines() if line.startswith("ACCOUNT ")]
    assert sorted(accounts) == sorted([f"{user}@%", "root@localhost", "mariadb.sys@localhost"]), out
    assert (data / database).is_dir() and (data / ".inception-initialized").exists()
    assert (data / "mysql").stat().st_uid != 0, "the data belongs to mysql"

    # second start on the same data: no initialisation, the database is still there
    checks = 'mariadb -uroot -p"$(cat /run/secrets/db_root_password)" -N -e "SHOW DATABASES"'
    out = stack.sh("mariadb", MARIADB_AROUND.format(checks=checks), **changes)
    assert "creating" not in out and database in out.split(), out
    assert "mariadbd" in stack.sh("mariadb", "mariadbd --version", **changes)


def test_wordpress_image_has_php_fpm_and_wordpress_but_no_nginx(stack: Stack) -> None:
    lib = "/usr/local/lib/inception"
    out = stack.sh(
        "wordpress",
        f"php-fpm8.2 -t 2>&1 && php -l {lib}/wp-install.php && php -l {lib}/object-cache.php && php -m"
        " && grep -h '^$wp_version' /usr/src/wordpress/wp-includes/version.php"
        " && ls /usr/src/wordpress/wp-content/themes && ls /usr/src/wordpress/wp-admin/install.php"
        " && echo broken links: $(find -L /usr/src/wordpress -type l | wc -l)"
        " && ls /usr/src/wordpress/wp-config.php 2>/dev/null; command -v nginx || echo no nginx",
        argv_override=True,
    )
    assert "configuration file /etc/php/8.2/fpm/php-fpm.conf test is successful" in out, out
    assert out.count("No syntax errors detected") == 2, out
    modules = set(out.split())
    assert {"redis", "mysqli", "gd", "mbstring"} <= modules, out
    assert "$wp_version = '6.1." in out and "twentytwentythree" in modules, out
    assert "broken links: 0" in out and "no nginx" in out, out
    assert "wp-config.php" not in out.replace("/usr/src/wordpress/wp-admin/install.php", ""), out


# Printed by WordPress itself after the entrypoint has installed it: what a visitor and the admin see.
WORDPRESS_CHECK = r"""<?php
$_SERVER['HTTP_HOST'] = parse_url(getenv('WORDPRESS_URL'), PHP_URL_HOST);
define('WP_USE_THEMES', false);
require '/var/www/html/wp-load.php';
$redis = new Redis();
$redis->connect(WP_REDIS_HOST, WP_REDIS_PORT);
echo json_encode([
    'installed' => is_blog_installed(),
    'home' => home_url('/'),
    'users' => array_map(fn ($u) => [$u->user_login, $u->roles[0]], get_users(['orderby' => 'ID'])),
    'posts' => array_map(fn ($p) => [$p->post_title, get_userdata($p->post_author)->user_login],
        get_posts(['post_status' => 'publish', 'numberposts' => -1])),
    'permalinks' => get_option('permalink_structure'),
    'cache_in_redis' => $GLOBALS['wp_object_cache']->is_redis_connected(),
    'redis_keys' => count($redis->keys(WP_CACHE_KEY_SALT . ':*')),
]), "
";
"""


def test_wordpress_first_start_installs_the_site_with_mariadb_and_redis(
    stack: Stack, tmp_path: Path, netns: Network
) -> None:
    """mariadb, redis and wordpress share one network namespace (127.0.0.1), as a pod would."""
    site, data = tmp_path / "wordpress", tmp_path / "mariadb"
    site.mkdir()
    data.mkdir()
    check = tmp_path / "check.php"
    check.write_text(WORDPRESS_CHECK)
    env = stack.env
    mariadb = stack.spec(
        "mariadb",
        env=(*stack.spec("mariadb").env, *_mariadb_env(stack)),
        mounts=(BindMount(source=data, target="/var/lib/mysql"),
                *stack.secret_mounts("db_password", "db_root_password")),
        network=netns,
    )  # fmt: skip
    wordpress_env = (
        *stack.spec("wordpress").env,
        *(f"{key}={value}" for key, value in env.items()),
        "WORDPRESS_DB_HOST=127.0.0.1:3306",
        f"WORDPRESS_URL=https://{env['DOMAIN_NAME']}",
        "WORDPRESS_REDIS_HOST=127.0.0.1",
        "WORDPRESS_DB_PASSWORD_FILE=/run/secrets/db_password",
        "WP_ADMIN_PASSWORD_FILE=/run/secrets/wp_admin_password",
        "WP_USER_PASSWORD_FILE=/run/secrets/wp_user_password",
    )
    wordpress_mounts = (
        BindMount(source=site, target="/var/www/html"),
        BindMount(source=check, target="/check.php", read_only=True),
        *stack.secret_mounts("db_password", "wp_admin_password", "wp_user_password"),
    )
    outputs: list[tuple[int, str]] = []

    async def main() -> None:
        logs: list[bytes] = []
        db = await _start_logged(stack, mariadb, logs)
        try:
            redis = stack.spec("redis", network=netns)
            cache = await _start_logged(stack, redis, logs)
            try:
                for _ in range(2):  # first start, then a restart on the same volume
                    outputs.append(
                        await stack._run(
                            stack.spec(
                                "wordpress",
                                ("sh", "-c", "php-fpm8.2 -t 2>&1 && php /check.php"),
                                env=wordpress_env,
                                mounts=wordpress_mounts,
                                network=netns,
                            )
                        )
                    )
            finally:
                await cache.stop(grace=10)
                await cache.kill_and_reap()
                stack.runtime.remove(redis.id)
        finally:
            await db.stop(grace=30)
            await db.kill_and_reap()
            stack.runtime.remove(mariadb.id)

    trio.run(main)
    (code, first), (code2, second) = outputs
    assert code == 0, first
    assert "copying WordPress" in first and "writing wp-config.php" in first, first
    assert f"installed https://{env['DOMAIN_NAME']}" in first, first
    state = json.loads(first.strip().splitlines()[-1])
    assert state["installed"] and state["home"] == f"https://{env['DOMAIN_NAME']}/"
    assert state["users"] == [[env["WP_ADMIN_USER"], "administrator"], [env["WP_USER"], "author"]]
    assert not any("admin" in login.lower() for login, _ in state["users"])
    assert state["posts"] == [["Inception, without Docker", env["WP_USER"]]]
    assert state["permalinks"] == "/%postname%/"
    assert state["cache_in_redis"] and state["redis_keys"] > 0, state
    assert code2 == 0 and "already installed" in second and "copying" not in second, second
    assert json.loads(second.strip().splitlines()[-1])["users"] == state["users"]
    assert "test is successful" in second
    config = (site / "wp-config.php").read_text()
    assert stack.secret("db_password") not in config, "the password stays in the secret file"
    assert (site / "wp-content/object-cache.php").exists()
    assert (site / "index.php").stat().st_uid == 33, "the files belong to www-data"


async def _start_logged(stack: Stack, spec: ContainerSpec, sink: list[bytes]) -> Container:
    """Start a background container whose output is drained (and dropped) by a system task."""
    read_end, write_end = os.pipe()
    try:
        container = await stack.runtime.start(replace(spec, stdio=Stdio(stdout=write_end, stderr=write_end)))
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)

    async def drain() -> None:
        async with trio.lowlevel.FdStream(read_end) as stream:
            while chunk := await stream.receive_some(65536):
                sink.append(chunk)

    trio.lowlevel.spawn_system_task(drain)
    return container


def test_redis_serves_as_its_own_user(stack: Stack, netns: Network) -> None:
    image = stack.store.get("redis:inception")
    assert image.config.user == "redis"
    out = stack.sh(
        "redis",
        "redis-server --version && (redis-server /etc/redis/inception.conf &)"
        " && for i in $(seq 1 50); do redis-cli ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done"
        " && redis-cli ping && redis-cli config get maxmemory-policy && id -un && redis-cli shutdown nosave",
        network=netns,
    )
    assert "Redis server v=7." in out and "PONG" in out and "allkeys-lru" in out and "redis" in out.split()


def test_ftp_entrypoint_makes_the_account_and_certificate(stack: Stack) -> None:
    user = stack.env["FTP_USER"]
    out = stack.sh(
        "ftp",
        'vsftpd -v 0>&1; id "$FTP_USER" && getent passwd "$FTP_USER" | cut -d: -f6'
        " && cat /etc/vsftpd.userlist && openssl x509 -in /etc/vsftpd/ssl/vsftpd.crt -noout -subject"
        " && grep -E '^(ssl_enable|force_local_(data|logins)_ssl|anonymous_enable)=' /etc/vsftpd.conf",
        env=(*stack.spec("ftp").env, f"FTP_USER={user}", "FTP_PASSWORD_FILE=/run/secrets/ftp_password"),
        mounts=stack.secret_mounts("ftp_password"),
    )
    assert "vsftpd: version 3.0" in out, out
    assert f"uid=33({user})" in out or "uid=33(" in out, out
    assert "/var/www/html" in out and "CN = ftp" in out, out
    for line in (
        "ssl_enable=YES",
        "force_local_data_ssl=YES",
        "force_local_logins_ssl=YES",
        "anonymous_enable=NO",
    ):
        assert line in out.splitlines(), out


def test_adminer_is_php_fpm_with_debians_adminer(stack: Stack) -> None:
    out = stack.sh("adminer", "php-fpm8.2 -t 2>&1 && php -l /usr/share/adminer/adminer.php && php -m")
    assert "test is successful" in out and "No syntax errors detected" in out, out
    assert "mysqli" in out.split(), out


def test_static_site_is_lighttpd_without_php(stack: Stack) -> None:
    out = stack.sh(
        "static",
        "lighttpd -tt -f /etc/lighttpd/inception.conf && echo config ok; ls /srv/static;"
        " command -v php || echo no php",
    )
    assert "config ok" in out and "index.html" in out and "no php" in out, out


def test_status_board_probes_and_serves(stack: Stack, tmp_path: Path, netns: Network) -> None:
    """The board as the stack runs it (user nobody, read-only root, a tmpfs on /tmp), here with redis
    in its network namespace and a port nobody listens on: redis is up with its PONG, the other is
    down, the page and the JSON say so, `--check` passes, and SIGTERM ends it with status 0."""
    bad = tmp_path / "bad.conf"
    bad.write_text("redis redis 127.0.0.1:6379\nweb gopher 127.0.0.1:70\n")
    probes = tmp_path / "probes.conf"
    probes.write_text("# a comment\nredis  redis  127.0.0.1:6379\nnobody http 127.0.0.1:1 /\n")
    mounts = (
        BindMount(source=probes, target="/etc/status/probes.conf", read_only=True),
        BindMount(source=bad, target="/etc/status/bad.conf", read_only=True),
        TmpfsMount(target="/tmp"),
    )
    script = (
        "status-board --probes /etc/status/bad.conf; echo bad=$?;"
        " status-board --check; echo check-before=$?;"
        " status-board --interval 0.5 --listen 127.0.0.1:8080 & board=$!;"
        " for i in $(seq 1 50); do status-board --check 2>/dev/null && break; sleep 0.2; done;"
        " status-board --check; echo check=$?; sleep 1;"
        " python3 -c 'import urllib.request as u; print(u.urlopen(\"http://127.0.0.1:8080/status.json\").read().decode())';"
        " python3 -c 'import urllib.request as u; print(u.urlopen(\"http://127.0.0.1:8080/\").read().decode())';"
        " touch /root-is-writable 2>/dev/null || echo read-only root;"
        " kill -TERM $board; wait $board; echo board-exit=$?"
    )
    out = ""

    async def main() -> None:
        nonlocal out
        logs: list[bytes] = []
        redis = stack.spec("redis", network=netns)
        cache = await _start_logged(stack, redis, logs)
        try:
            spec = stack.spec("status", ("sh", "-c", script), user="nobody", read_only=True, mounts=mounts,
                              network=netns, cap_drop=("ALL",), no_new_privs=True)  # fmt: skip
            code, out = await stack._run(replace(spec, argv=("sh", "-c", script)))
            assert code == 0, out
        finally:
            await cache.stop(grace=10)
            await cache.kill_and_reap()
            stack.runtime.remove(redis.id)

    trio.run(main)
    assert "board: /etc/status/bad.conf:2: unknown kind 'gopher'" in out and "bad=1" in out, out
    assert "check-before=1" in out and "check=0" in out, out
    assert "read-only root" in out and "board-exit=0" in out and "board: stopped" in out, out
    state = json.loads(out[out.index("{") : out.index("\n}\n") + 2])
    by_service = {s["service"]: s for s in state["services"]}
    assert by_service["redis"]["ok"] and by_service["redis"]["detail"].startswith("PONG, "), state
    assert not by_service["nobody"]["ok"] and "refused" in by_service["nobody"]["detail"].lower(), state
    assert state["up"] == 1 and state["rounds"] >= 2, state
    sandbox = state["sandbox"]
    assert sandbox["uid"] == 65534 and sandbox["read_only_root"] and sandbox["tmpfs"] == ["/tmp"], sandbox
    assert sandbox["cap_eff"] == "0000000000000000" and sandbox["no_new_privs"], sandbox
    assert "<title>Inception status" in out and "1 of 2 services answer" in out, out
