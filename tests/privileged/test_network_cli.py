"""Networks through the CLI, as a user runs them: `links` and `external_links` (names only the linking
container resolves), the host sysctls composer changes and puts back on `down` (also after a crashed
supervisor), external networks, and `network_mode: service:X` across X's restarts.

The projects, their image and their cleanup are test_lifecycle.py's (`compose` fixture: `down -v -t 0`
and the supervisor gone, even when a test fails); the folder's leak check holds after each test.
Traffic stays between the host and the containers and bridges the tests make.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.privileged import test_lifecycle
from tests.privileged.test_lifecycle import Compose, alive, free_port, wait_until

lifecycle_root = test_lifecycle.lifecycle_root  # the fixtures: the image, and one project per test
compose = test_lifecycle.compose

HTTPD = 'sh -c "mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p 8080 -h /www"'


def resolves(project: Compose, service: str, name: str) -> str | None:
    """The address `name` has for `service` through the embedded DNS, or None."""
    done = project.run("exec", "-T", service, "nslookup", name, "127.0.0.11")
    if done.code != 0:
        return None
    _, name_line, tail = done.out.partition("Name:")  # busybox: Server, its Address, then the answers
    found = [line.split()[-1] for line in tail.splitlines() if name_line and line.startswith("Address")]
    return found[0] if found else None


def sysctl(path: str) -> str:
    return Path("/proc/sys", path).read_text().strip()


# --- links ----------------------------------------------------------------------------------------------


def test_a_link_alias_resolves_in_the_linking_container_only(compose: Compose) -> None:
    compose.write(f"""
        services:
          db:
            image: IMAGE
            command: {HTTPD.format(text="db-here")}
          web:
            image: IMAGE
            command: ["sleep", "1000"]
            links: ["db:database", "cache"]
          cache:
            image: IMAGE
            command: ["sleep", "1000"]
          other:
            image: IMAGE
            command: ["sleep", "1000"]
            dns: ["127.0.0.1"]  # what the embedded server does not know goes nowhere
    """)
    compose.ok("up", "-d")
    network = f"{compose.name}_default"
    db_ip = compose.must("db")["networks"][network]
    assert resolves(compose, "web", "database") == db_ip
    assert resolves(compose, "web", f"database.{network}") == db_ip
    assert resolves(compose, "web", "cache") == compose.must("cache")["networks"][network]
    page = compose.exec("web", "wget", "-q", "-O", "-", "http://database:8080/")
    assert page == "db-here\n"
    assert resolves(compose, "other", "database") is None  # the alias is web's alone
    assert resolves(compose, "other", "db") == db_ip

    # the linked container restarts: the alias follows it at once
    compose.ok("restart", "-t", "0", "db")
    assert wait_until(lambda: resolves(compose, "web", "database"), "the alias after db's restart") == db_ip


def test_external_links_reach_a_container_of_another_project(
    compose: Compose, lifecycle_root: Path, tmp_path: Path
) -> None:
    shared = f"{compose.name}-shared"
    compose.write(f"""
        services:
          legacy:
            image: IMAGE
            command: {HTTPD.format(text="legacy-here")}
            networks: [shared]
        networks:
          shared: {{name: {shared}}}
    """)
    compose.ok("up", "-d")
    legacy = compose.must("legacy")
    other = Compose(root=lifecycle_root, name=f"{compose.name}b", dir=tmp_path / "other")
    other.dir.mkdir()
    try:
        other.write(f"""
            services:
              app:
                image: IMAGE
                command: ["sleep", "1000"]
                networks: [shared]
                external_links: ["{legacy["name"]}:old"]
            networks:
              shared: {{external: true, name: {shared}}}
        """)
        other.ok("up", "-d")
        assert resolves(other, "app", "old") == legacy["networks"][shared]
        assert other.exec("app", "wget", "-q", "-O", "-", "http://old:8080/") == "legacy-here\n"
        other.ok("down", "-t", "0")
    finally:
        problems = other.cleanup()
    assert not problems, problems


# --- host sysctls, external networks -----------------------------------------------------------------------

EXTERNAL_BRIDGE = "cmtestext0"
EXTERNAL_GATEWAY = "10.213.201.1"


@pytest.fixture
def external_bridge() -> Iterator[str]:
    """A bridge made outside composer, as an `external: true` network is; deleted after the project's
    own cleanup (request it before `compose`)."""
    subprocess.run(["ip", "link", "add", EXTERNAL_BRIDGE, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", f"{EXTERNAL_GATEWAY}/24", "dev", EXTERNAL_BRIDGE], check=True)
        subprocess.run(["ip", "link", "set", EXTERNAL_BRIDGE, "up"], check=True)
        yield EXTERNAL_BRIDGE
    finally:
        subprocess.run(["ip", "link", "del", EXTERNAL_BRIDGE], check=False)


def fetch(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return None


def test_route_localnet_is_put_back_on_down_and_after_a_crash(external_bridge: str, compose: Compose) -> None:
    """127.0.0.1:P needs route_localnet=1 on the bridge: composer's own bridge goes on `down` (with the
    setting), an external bridge gets its old value back, also when the supervisor had crashed."""
    port = free_port()
    compose.write(f"""
        services:
          web:
            image: IMAGE
            command: {HTTPD.format(text="outside-web")}
            ports: ["127.0.0.1:{port}:8080"]
            networks: [outside, default]
          client:
            image: IMAGE
            command: ["sleep", "1000"]
            networks: [outside]
        networks:
          outside: {{external: true, name: {external_bridge}}}
    """)
    knob = f"net/ipv4/conf/{external_bridge}/route_localnet"
    before = {
        k: sysctl(k)
        for k in (knob, "net/ipv4/conf/all/route_localnet", "net/ipv4/conf/default/route_localnet")
    }
    assert before[knob] == "0"
    ledger = Path("/run/composer/sysctls.json")  # host-wide: other roots' entries may be there too
    for crash in (False, True):
        compose.ok("up", "-d")
        web = compose.must("web")
        assert web["networks"][external_bridge].startswith("10.213.201.")
        assert sysctl(knob) == "1"
        assert wait_until(lambda: fetch(f"http://127.0.0.1:{port}/"), "the published port") == "outside-web\n"
        # the external bridge carries the containers' traffic (its veths are its ports)
        assert compose.exec("client", "wget", "-q", "-O", "-", "http://web:8080/") == "outside-web\n"
        held = json.loads(ledger.read_text())["sysctls"][f"/proc/sys/{knob}"]
        assert held["previous"] == "0" and held["holders"] == [f"{external_bridge}@{compose.root}"]
        bridge = json.loads((compose.root / "network" / "ipam.json").read_text())["networks"]
        own = bridge[f"{compose.name}_default"]["extra"]["bridge"]
        assert sysctl(f"net/ipv4/conf/{own}/route_localnet") == "1"
        if crash:
            compose.kill_supervisor()
        compose.ok("down", "-t", "0")
        assert {k: sysctl(k) for k in before} == before
        assert not Path(f"/sys/class/net/{own}").exists()
        left = json.loads(ledger.read_text())["sysctls"] if ledger.exists() else {}
        assert not [k for k, v in left.items() if any(str(compose.root) in h for h in v["holders"])], left
        assert (
            external_bridge
            not in json.loads((compose.root / "network" / "ipam.json").read_text())["networks"]
        )


# --- network_mode: service:X --------------------------------------------------------------------------


def netns_inode(pid: int) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def test_a_container_sharing_x_netns_keeps_its_network_when_x_restarts(compose: Compose) -> None:
    """`network_mode: service:x`: x killed (restart: always) or stopped and started again comes back in
    the same network namespace, so the container sharing it is never cut off (Docker's is:
    docker/compose#6626)."""
    compose.write(f"""
        services:
          peer:
            image: IMAGE
            command: {HTTPD.format(text="peer-here")}
          x:
            image: IMAGE
            command: ["sh", "-c", "echo x-here > /tmp/index.html; exec httpd -f -p 9090 -h /tmp"]
            restart: always
          side:
            image: IMAGE
            network_mode: "service:x"
            command: ["sleep", "1000"]
    """)
    compose.ok("up", "-d")
    network = f"{compose.name}_default"
    address = compose.must("x")["networks"][network]

    def side_reaches_peer() -> bool:
        done = compose.run("exec", "-T", "side", "timeout", "3", "wget", "-q", "-O", "-", "http://peer:8080/")
        return done.code == 0 and done.out == "peer-here\n"

    def side_reaches_x() -> bool:
        done = compose.run(
            "exec", "-T", "side", "timeout", "3", "wget", "-q", "-O", "-", "http://127.0.0.1:9090/"
        )
        return done.code == 0 and done.out == "x-here\n"

    wait_until(side_reaches_peer, "side to reach peer by name", timeout=10)
    wait_until(side_reaches_x, "side to reach x's server on 127.0.0.1", timeout=10)
    side = compose.running_pid("side")
    first = compose.running_pid("x")
    assert netns_inode(first) == netns_inode(side)
    eth0 = compose.exec("side", "cat", "/sys/class/net/eth0/ifindex")

    os.kill(first, signal.SIGKILL)
    record = compose.wait_record(
        "x", lambda r: r["state"] == "running" and r["pid"] not in (None, first), "restarted"
    )
    second = int(record["pid"])
    assert record["restart_count"] >= 1
    assert netns_inode(second) == netns_inode(side)  # x came back in the netns side holds
    assert record["networks"][network] == address
    assert compose.exec("side", "cat", "/sys/class/net/eth0/ifindex") == eth0  # kept, not made again
    wait_until(side_reaches_peer, "side to reach peer by name after x's restart", timeout=10)
    wait_until(side_reaches_x, "side to reach x's server after x's restart", timeout=10)
    assert compose.exec("peer", "wget", "-q", "-O", "-", "http://x:9090/") == "x-here\n"

    compose.ok("stop", "-t", "0", "x")
    compose.ok("start", "x")
    third = compose.running_pid("x")
    assert third != second and netns_inode(third) == netns_inode(side)
    wait_until(side_reaches_peer, "side to reach peer after x's stop and start", timeout=10)
    assert compose.running_pid("side") == side and alive(side)


# --- IPv6 ------------------------------------------------------------------------------------------------

V6_SUBNET = "fd42:c0de:5::/64"


def test_ipv6_between_containers_names_routes_and_cleanup(compose: Compose) -> None:
    """`enable_ipv6`: an IPv6 address on eth0 (static or from IPAM; a ULA /64 when no subnet is given),
    an IPv6 default route, AAAA and PTR answers, /etc/hosts, ping and TCP over IPv6 by name, masquerade
    rules in `table ip6 composer`, a port without host_ip published on [::] too (Docker's); `down`
    takes it all and puts IPv6 forwarding back."""
    port = free_port()
    compose.write(f"""
        services:
          a:
            image: IMAGE
            command: ["sleep", "1000"]
            networks:
              six: {{ipv6_address: "fd42:c0de:5::10"}}
              ula: {{}}
          b:
            image: IMAGE
            command: {HTTPD.format(text="b-over-v6")}
            networks: [six]
            ports: ["{port}:8080"]
        networks:
          six:
            enable_ipv6: true
            ipam:
              config: [{{subnet: "10.213.205.0/24"}}, {{subnet: "{V6_SUBNET}"}}]
          ula:
            enable_ipv6: true
    """)
    forwarding = sysctl("net/ipv6/conf/all/forwarding")
    compose.ok("up", "-d")
    ipam = json.loads((compose.root / "network" / "ipam.json").read_text())["networks"]
    six, ula = ipam[f"{compose.name}_six"], ipam[f"{compose.name}_ula"]
    assert six["subnet6"] == V6_SUBNET and six["gateway6"] == "fd42:c0de:5::1"
    assert ula["subnet6"].startswith("fd") and ula["subnet6"].endswith("::/64")
    a6 = six["addresses6"][f"{compose.name}-a-1"]
    b6 = six["addresses6"][f"{compose.name}-b-1"]
    assert a6 == "fd42:c0de:5::10" and b6 == "fd42:c0de:5::2"

    inet6 = compose.exec("a", "cat", "/proc/net/if_inet6")
    assert "fd42c0de000500000000000000000010" in inet6  # on eth0 (or eth1), no longer tentative
    routes = compose.exec("a", "ip", "-6", "route")
    assert "default via fd42:c0de:5::1" in routes or "default via " + ula["gateway6"] in routes, routes
    hosts = compose.exec("a", "cat", "/etc/hosts")
    assert any(line.split()[:1] == [a6] for line in hosts.splitlines()), hosts

    aaaa = compose.ok("exec", "-T", "a", "nslookup", "-type=AAAA", "b", "127.0.0.11").out
    assert b6 in aaaa, aaaa
    ptr = compose.ok("exec", "-T", "a", "nslookup", b6, "127.0.0.11").out
    assert f"{compose.name}-b-1.{compose.name}_six" in ptr, ptr
    compose.ok("exec", "-T", "a", "ping6", "-c", "1", "-W", "5", "b")
    page = compose.exec("a", "wget", "-q", "-O", "-", f"http://[{b6}]:8080/")
    assert page == "b-over-v6\n"

    assert wait_until(lambda: fetch(f"http://[::1]:{port}/"), "[::1]:port through the proxy") == "b-over-v6\n"
    assert fetch(f"http://127.0.0.1:{port}/") == "b-over-v6\n"  # DNAT
    assert compose.ok("port", "b", "8080").out == f"0.0.0.0:{port}\n"
    (row,) = [r for r in compose.ps_json() if r["Service"] == "b"]
    assert f"0.0.0.0:{port}->8080/tcp" in row["Ports"] and f"[::]:{port}->8080/tcp" in row["Ports"], row

    rules = subprocess.run(["nft", "list", "table", "ip6", "composer"], capture_output=True, text=True)
    assert rules.returncode == 0 and V6_SUBNET in rules.stdout and ula["subnet6"] in rules.stdout
    assert "masquerade" in rules.stdout
    assert sysctl("net/ipv6/conf/all/forwarding") == "1"

    compose.ok("down", "-t", "0")
    assert fetch(f"http://[::1]:{port}/") is None
    assert sysctl("net/ipv6/conf/all/forwarding") == forwarding
    listed = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert "table ip6 composer" not in listed
