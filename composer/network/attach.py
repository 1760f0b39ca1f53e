"""A container's side: veths with their peers made inside the container's netns, addresses, routes.

`plan_interfaces` (pure) orders a container's networks and names its interfaces; `setup` (sync, one
worker thread, two raw rtnetlink sockets (rtnl.py): the host's and one opened inside the netns) makes them:

    host:   veth <host name> (master = the network's bridge, up), peer created directly in the netns
            as eth0/eth1/... with the network's MTU and a MAC derived from its address (Docker's 02:42:..)
    netns:  lo up; per interface: address, up; a default route via the chosen network's gateway
            (none if every network is internal); ip_unprivileged_port_start=0 and
            ping_group_range="0 2147483647" (what Docker sets in every container's netns)

Teardown is lazy: dropping the netns (the container's exit, or `unpin`) lets the kernel take the
veths in one batch (0.1-0.5 ms against 18-36 ms per synchronous `link del`: research §3).
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface

from composer.errors import ComposerError
from composer.network.netns import entered, short_name
from composer.network.rtnl import Rtnl, RtnlError

__all__ = [
    "AttachError",
    "InterfacePlan",
    "InterfaceRequest",
    "attached",
    "mac_for",
    "plan_interfaces",
    "setup",
    "wait_links_gone",
]

VETH_PREFIX = "cmv"
IFA_F_NODAD = 0x02  # addresses IPAM hands out are unique: no duplicate address detection (no 1-2 s wait)
_NETNS_SYSCTLS = (
    ("net/ipv4/ip_unprivileged_port_start", "0"),
    ("net/ipv4/ping_group_range", "0 2147483647"),
)


class AttachError(ComposerError):
    """A container's interfaces could not be made (`container web-1: network front: ...`)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InterfaceRequest:
    """One network of a container, its address already assigned by IPAM."""

    network: str
    bridge: str
    bridge_index: int
    address: IPv4Interface
    gateway: IPv4Address
    internal: bool = False
    mtu: int | None = None
    mac_address: str | None = None
    interface_name: str | None = None
    priority: int = 0  # higher first: the order of eth0, eth1, ...
    gw_priority: int = 0  # the default route goes through the highest (first on a tie)
    address6: IPv6Interface | None = None  # an IPv6 network's
    gateway6: IPv6Address | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class InterfacePlan:
    request: InterfaceRequest
    ifname: str  # inside the container
    host_ifname: str  # the veth's host end
    mac: str
    default_route: bool


def mac_for(address: IPv4Address) -> str:
    """Docker's MAC for an address: 02:42 + the four address bytes (stable across restarts)."""
    return "02:42:" + ":".join(f"{b:02x}" for b in address.packed)


def plan_interfaces(
    container: str, requests: Sequence[InterfaceRequest], *, netns_id: str = ""
) -> tuple[InterfacePlan, ...]:
    """Order by priority (stable), name eth0.. (or `interface_name`), choose the default route.

    `netns_id` (the netns inode) goes into the host veth's name: a restarted container's new veth
    must not collide with the old one the kernel may still be tearing down."""
    ordered = sorted(requests, key=lambda r: -r.priority)
    names = {r.interface_name for r in ordered if r.interface_name}
    gateway_net = None
    routed = [r for r in ordered if not r.internal]
    if routed:
        gateway_net = max(routed, key=lambda r: r.gw_priority)  # max keeps the first on a tie
    out = []
    counter = 0
    for request in ordered:
        ifname = request.interface_name
        if not ifname:
            while f"eth{counter}" in names:
                counter += 1
            ifname = f"eth{counter}"
            counter += 1
        out.append(
            InterfacePlan(
                request=request,
                ifname=ifname,
                host_ifname=short_name(VETH_PREFIX, container, request.network, netns_id),
                mac=request.mac_address or mac_for(request.address.ip),
                default_route=request is gateway_net,
            )
        )
    seen: set[str] = set()
    for plan in out:
        if plan.ifname in seen or len(plan.ifname) > 15:
            raise AttachError(f"container {container}: interface name {plan.ifname!r} is taken or too long")
        seen.add(plan.ifname)
    return tuple(out)


def setup(container: str, netns_fd: int, plans: Sequence[InterfacePlan], *, sysctls: bool = True) -> None:
    """Make the interfaces of `plans` in the netns `netns_fd` (sync; run it in a worker thread).

    Three round trips to the kernel (rtnl.py): the veths from the host, a lookup of their peers'
    indexes inside, then lo, addresses, links up and default routes in one batch. On failure the host
    ends made so far are deleted (a pinned netns would keep them alive)."""
    made: list[str] = []
    with Rtnl.host() as host:
        try:
            for plan in plans:
                req = plan.request
                veth = Rtnl.veth(
                    plan.host_ifname, peer=plan.ifname, peer_netns_fd=netns_fd, peer_mac=plan.mac,
                    master=req.bridge_index, mtu=req.mtu,
                )  # fmt: skip
                try:
                    host.run([veth])
                except RtnlError as exc:
                    if exc.errno != errno.EEXIST:
                        raise AttachError(
                            f"container {container}: network {req.network}: {exc.strerror}"
                        ) from None
                    # a leftover of an earlier attach of this same netns: replace it
                    host.run([Rtnl.delete(plan.host_ifname), veth])
                made.append(plan.host_ifname)
            with Rtnl.inside(netns_fd) as inside:
                batch = [Rtnl.link_up(1, "lo")]  # lo is ifindex 1 in every netns
                for plan in plans:
                    req = plan.request
                    index = inside.index_of(plan.ifname)
                    if index is None:
                        raise AttachError(f"container {container}: {plan.ifname} did not appear in the netns")
                    net = req.address.network
                    batch.append(
                        Rtnl.address(index, req.address.ip, net.prefixlen, broadcast=net.broadcast_address)
                    )
                    if req.address6 is not None:
                        batch.append(
                            Rtnl.address(
                                index, req.address6.ip, req.address6.network.prefixlen, flags=IFA_F_NODAD
                            )
                        )
                    batch.append(Rtnl.link_up(index, plan.ifname))
                batch += [Rtnl.default_route(p.request.gateway) for p in plans if p.default_route]
                asked = [p.request for p in plans]
                routed6 = [r for r in asked if not r.internal and r.address6 and r.gateway6]
                if routed6:  # the IPv6 default route: the highest gw_priority, the first on a tie
                    best = max(routed6, key=lambda r: r.gw_priority)
                    assert best.gateway6 is not None
                    batch.append(Rtnl.default_route(best.gateway6))
                inside.run(batch)
            if sysctls:
                with entered(netns_fd):
                    for key, value in _NETNS_SYSCTLS:
                        with contextlib.suppress(OSError), open(f"/proc/sys/{key}", "w") as handle:
                            handle.write(value)
        except AttachError:
            _delete_quietly(host, made)
            raise
        except OSError as exc:  # RtnlError names the request and the kernel's reason
            _delete_quietly(host, made)
            raise AttachError(f"container {container}: network setup: {exc.strerror or exc}") from None


def attached(netns_fd: int, plans: Sequence[InterfacePlan]) -> bool:
    """Whether the netns already has these interfaces, each up with its address, and their host ends
    on their bridges (a container started again in its previous run's netns)."""
    if not all(
        os.path.exists(f"/sys/class/net/{p.host_ifname}/brport")
        and _master_index(p.host_ifname) == p.request.bridge_index
        for p in plans
    ):
        return False
    with Rtnl.inside(netns_fd) as inside:
        for plan in plans:
            index = inside.index_of(plan.ifname)
            if index is None or str(plan.request.address.ip) not in inside.addresses(index):
                return False
    return True


def _master_index(ifname: str) -> int:
    try:
        with open(f"/sys/class/net/{ifname}/master/ifindex") as handle:
            return int(handle.read())
    except (OSError, ValueError):
        return -1


def _delete_quietly(host: Rtnl, names: Sequence[str]) -> None:
    for name in names:
        with contextlib.suppress(OSError):
            host.run([Rtnl.delete(name)])


def wait_links_gone(names: Sequence[str], timeout: float = 5.0) -> bool:
    """Wait (polling /sys/class/net) until the kernel has destroyed these links; True if it has."""
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while True:
        if not any(os.path.exists(f"/sys/class/net/{name}") for name in names):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.02)
