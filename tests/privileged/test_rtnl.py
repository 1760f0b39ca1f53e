"""composer/network/rtnl.py on the real kernel: a netns of the test's own (an unshared thread's, held
by an fd), a bridge made with iproute2, and what `ip` then reads back."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest

from composer.network.attach import IFA_F_NODAD
from composer.network.rtnl import Rtnl, RtnlError
from composer.runtime import libc

BRIDGE = "cmptestrtnl0"
VETH = "cmptestrtnlv0"


@pytest.fixture
def netns_fd() -> Iterator[int]:
    """An fd on a new netns (nothing pins it but the fd: closing it lets the kernel take the veth)."""
    out: list[int] = []

    def make() -> None:
        libc.unshare(libc.CLONE_NEWNET)  # this thread only; it ends right after
        out.append(os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC))

    thread = threading.Thread(target=make)
    thread.start()
    thread.join()
    yield out[0]
    os.close(out[0])


@pytest.fixture
def bridge() -> Iterator[int]:
    subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
    try:
        yield int(_sys(BRIDGE, "ifindex"))
    finally:
        subprocess.run(["ip", "link", "del", VETH], capture_output=True)
        subprocess.run(["ip", "link", "del", BRIDGE], check=True)


def _sys(link: str, name: str) -> str:
    return Path(f"/sys/class/net/{link}/{name}").read_text().strip()


def _ip_in(fd: int, *args: str) -> object:
    """`ip -j ARGS` inside the netns of `fd` (nsenter on the fd's /proc path)."""
    path = f"/proc/{os.getpid()}/fd/{fd}"
    done = subprocess.run(
        ["nsenter", f"--net={path}", "ip", "-j", *args], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout or "[]")


def test_a_veth_with_its_peer_inside_addresses_and_routes(netns_fd: int, bridge: int) -> None:
    with Rtnl.host() as host:
        host.run([Rtnl.veth(VETH, peer="eth0", peer_netns_fd=netns_fd, peer_mac="02:42:0a:01:02:03",
                            master=bridge, mtu=1400)])  # fmt: skip
    assert _sys(VETH, "master/ifindex") == str(bridge)
    assert _sys(VETH, "mtu") == "1400"
    assert int(_sys(VETH, "flags"), 16) & 1  # up
    with Rtnl.inside(netns_fd) as inside:
        index = inside.index_of("eth0")
        assert index is not None
        assert inside.index_of("eth9") is None
        batch = [
            Rtnl.link_up(1, "lo"),
            Rtnl.address(index, IPv4Address("10.213.9.2"), 24, broadcast=IPv4Address("10.213.9.255")),
            Rtnl.address(index, IPv6Address("fd00:213::2"), 64, flags=IFA_F_NODAD),
            Rtnl.link_up(index, "eth0"),
            Rtnl.default_route(IPv4Address("10.213.9.1")),
            Rtnl.default_route(IPv6Address("fd00:213::1")),
        ]
        inside.run(batch)
        inside.run(batch[1:3] + batch[4:])  # the same addresses and routes again: already there is done
        found = inside.addresses(index)
        assert {a for a in found if not a.startswith("fe80:")} == {"10.213.9.2", "fd00:213::2"}
        assert inside.addresses(1) >= {"127.0.0.1"}
    (link,) = _ip_in(netns_fd, "link", "show", "eth0")
    assert link["address"] == "02:42:0a:01:02:03" and link["mtu"] == 1400 and "UP" in link["flags"]
    (addr,) = _ip_in(netns_fd, "-4", "addr", "show", "eth0")
    (info,) = addr["addr_info"]
    assert (info["local"], info["prefixlen"], info["broadcast"]) == ("10.213.9.2", 24, "10.213.9.255")
    (route,) = _ip_in(netns_fd, "route", "show", "default")
    assert (route["gateway"], route["dev"]) == ("10.213.9.1", "eth0")
    (route6,) = _ip_in(netns_fd, "-6", "route", "show", "default")
    assert route6["gateway"] == "fd00:213::1"


def test_refusals_name_the_request_and_keep_the_errno(netns_fd: int, bridge: int) -> None:
    veth = Rtnl.veth(VETH, peer="eth0", peer_netns_fd=netns_fd, peer_mac="02:42:0a:01:02:04", master=bridge)
    with Rtnl.host() as host:
        host.run([veth])
        with pytest.raises(RtnlError) as caught:
            host.run([veth])
        assert caught.value.errno == errno.EEXIST
        assert f"veth {VETH}" in str(caught.value)
        # a batch goes on after a refusal and reports the first one
        with pytest.raises(RtnlError) as caught:
            host.run([Rtnl.link_up(999_999, "ghost"), Rtnl.delete(VETH)])
        assert caught.value.errno == errno.ENODEV and "ghost up" in str(caught.value)
        assert not os.path.exists(f"/sys/class/net/{VETH}")
        host.run([Rtnl.delete(VETH)])  # deleting what is gone counts as done
    with Rtnl.inside(netns_fd) as inside, pytest.raises(RtnlError) as caught:
        inside.run([Rtnl.default_route(IPv4Address("10.213.99.1"))])  # no route to the gateway
    assert caught.value.errno == errno.ENETUNREACH


def test_a_bridge_its_alias_and_what_the_dumps_read_back(netns_fd: int) -> None:
    """Inside the test's own netns: a bridge with an MTU, an address and an alias; the link, address
    and route dumps see them (the connected route of the subnet, the default route through it)."""
    with Rtnl.inside(netns_fd) as rtnl:
        rtnl.run([Rtnl.bridge("br-test", mtu=1450)])
        link = rtnl.link("br-test")
        assert link is not None and link.mtu == 1450 and link.alias == ""
        rtnl.run([
            Rtnl.address(link.index, IPv4Address("10.213.7.1"), 24, broadcast=IPv4Address("10.213.7.255")),
            Rtnl.link_up(link.index, "br-test", alias="composer:front"),
        ])  # fmt: skip
        assert rtnl.link("br-test") == replace(link, alias="composer:front")
        assert {lk.name for lk in rtnl.links()} == {"lo", "br-test"}
        (addr,) = rtnl.address_list(socket.AF_INET, index=link.index)
        assert (str(addr.address), addr.prefixlen) == ("10.213.7.1", 24)
        rtnl.run([Rtnl.default_route(IPv4Address("10.213.7.254"))])
        routes = {(str(r.dst), r.dst_len, r.oif) for r in rtnl.routes(socket.AF_INET)}
        assert ("10.213.7.0", 24, link.index) in routes and ("None", 0, link.index) in routes
        assert all(r.dst is None or r.dst.version == 4 for r in rtnl.routes(socket.AF_INET))
        with pytest.raises(RtnlError) as caught:
            rtnl.run([Rtnl.bridge("br-test")])
        assert caught.value.errno == errno.EEXIST
        rtnl.run([Rtnl.delete("br-test", missing_ok=False)])
        with pytest.raises(RtnlError) as caught:
            rtnl.run([Rtnl.delete("br-test", missing_ok=False)])
        assert caught.value.errno == errno.ENODEV
        assert rtnl.link("br-test") is None and rtnl.routes(socket.AF_INET) == []
