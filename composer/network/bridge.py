"""Linux bridges, one per compose network: create (idempotent), look up, delete; the host's routes.

Sync functions, each with its own rtnetlink socket (rtnl.py; pyroute2's import alone cost `up` and
`down` 0.12-0.18 s of CPU); trio code runs them through `trio.to_thread.run_sync`. Idempotency comes
from the kernel's errno: EEXIST on create, ENODEV on delete.

The kernel name is `cmp-` + 11 hex characters of a hash of the network's full name (interface names
are limited to 15 characters); the full name is kept in the bridge's `ifalias`, prefixed with
`composer:` so that `ip -d link` tells whose it is.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Collection
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Network

from composer.errors import ComposerError
from composer.network.netns import short_name
from composer.network.rtnl import Rtnl, RtnlError

__all__ = [
    "ALIAS_PREFIX",
    "BRIDGE_PREFIX",
    "BridgeError",
    "BridgeInfo",
    "bridge_name",
    "delete_bridge",
    "ensure_bridge",
    "host_networks",
    "host_networks6",
    "lookup_bridge",
]

BRIDGE_PREFIX = "cmp-"
IFA_F_NODAD = 0x02  # an address we own on a bridge we made: no duplicate address detection (no delay)
ALIAS_PREFIX = "composer:"


class BridgeError(ComposerError):
    """A bridge could not be created or found."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BridgeInfo:
    ifname: str
    index: int
    addresses: tuple[IPv4Interface, ...]
    alias: str = ""
    mtu: int = 1500


def bridge_name(network: str) -> str:
    """The kernel name of a network's bridge: short, stable, 15 characters."""
    return short_name(BRIDGE_PREFIX, "bridge", network)


def _reason(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc))


def ensure_bridge(
    ifname: str,
    *,
    alias: str,
    gateway: IPv4Address,
    subnet: IPv4Network,
    mtu: int | None,
    gateway6: IPv6Address | None = None,
    subnet6: IPv6Network | None = None,
) -> int:
    """Create the bridge if missing (another process may race us: EEXIST is fine), give it the
    gateway address (and the IPv6 one), bring it up; returns its index."""
    with Rtnl.host() as rtnl:
        found = rtnl.link(ifname)
        if found is None:
            try:
                rtnl.run([Rtnl.bridge(ifname, mtu=mtu)])
            except RtnlError as exc:
                if exc.errno != errno.EEXIST:
                    raise BridgeError(f"bridge {ifname} ({alias}): {_reason(exc)}") from None
            found = rtnl.link(ifname)
            if found is None:
                raise BridgeError(f"bridge {ifname} ({alias}) vanished while being created")
        index = found.index
        try:
            rtnl.run([Rtnl.address(index, gateway, subnet.prefixlen, broadcast=subnet.broadcast_address)])
        except RtnlError as exc:
            raise BridgeError(
                f"bridge {ifname} ({alias}): address {gateway}/{subnet.prefixlen}: {_reason(exc)}"
            ) from None
        if gateway6 is not None and subnet6 is not None:
            disable = f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"
            with open(disable) as handle:
                if handle.read().strip() != "0":
                    raise BridgeError(f"bridge {ifname} ({alias}): IPv6 is disabled on this host")
            try:
                rtnl.run([Rtnl.address(index, gateway6, subnet6.prefixlen, flags=IFA_F_NODAD)])
            except RtnlError as exc:
                raise BridgeError(
                    f"bridge {ifname} ({alias}): address {gateway6}/{subnet6.prefixlen}: {_reason(exc)}"
                ) from None
        rtnl.run([Rtnl.link_up(index, ifname, alias=ALIAS_PREFIX + alias)])
        return index


def lookup_bridge(ifname: str) -> BridgeInfo | None:
    """The bridge (or any link) called `ifname`, with its IPv4 addresses; None if there is none."""
    with Rtnl.host() as rtnl:
        link = rtnl.link(ifname)
        if link is None:
            return None
        addresses = tuple(
            IPv4Interface(f"{a.address}/{a.prefixlen}")
            for a in rtnl.address_list(socket.AF_INET, index=link.index)
        )
    return BridgeInfo(ifname=ifname, index=link.index, addresses=addresses, alias=link.alias, mtu=link.mtu)


def find_bridge_by_alias(alias: str) -> BridgeInfo | None:
    """A link whose ifalias is `alias` or `composer:<alias>` (an external network named in full)."""
    with Rtnl.host() as rtnl:
        links = rtnl.links()
    for link in links:
        if link.alias in (alias, ALIAS_PREFIX + alias):
            return lookup_bridge(link.name)
    return None


def delete_bridge(ifname: str) -> bool:
    """Delete the bridge (its remaining ports are released by the kernel). False if it was gone."""
    with Rtnl.host() as rtnl:
        try:
            rtnl.run([Rtnl.delete(ifname, missing_ok=False)])
        except RtnlError as exc:
            if exc.errno in (errno.ENODEV, errno.ENOENT):
                return False
            raise BridgeError(f"bridge {ifname}: delete: {_reason(exc)}") from None
    return True


def _host_view(family: int, exclude: Collection[str]) -> list[tuple[IPv4Address | IPv6Address, int]]:
    """(destination, prefix length) of every route of the main table (but default routes) and every
    interface address of `family`, leaving out those of the links named in `exclude`."""
    with Rtnl.host() as rtnl:
        ours = {link.index for link in rtnl.links() if link.name in exclude}
        routes = rtnl.routes(family)
        addresses = rtnl.address_list(family)
    found = [(r.dst, r.dst_len) for r in routes if r.oif not in ours and r.dst is not None and r.dst_len]
    found += [(a.address, a.prefixlen) for a in addresses if a.index not in ours]
    return found


def host_networks(*, exclude: Collection[str] = ()) -> list[IPv4Network]:
    """Every IPv4 destination in the main routing table and every IPv4 interface subnet on the host,
    except those of the links named in `exclude` (the bridges this root's IPAM knows already) and the
    default route. Another composer root's bridges count as the host's: their subnets are taken."""
    out = {
        IPv4Network(f"{dst}/{length}", strict=False) for dst, length in _host_view(socket.AF_INET, exclude)
    }
    return sorted(out, key=lambda n: (n.network_address, n.prefixlen))


def host_networks6(*, exclude: Collection[str] = ()) -> list[IPv6Network]:
    """The IPv6 twin of `host_networks`: routes of the main table and interface subnets, without the
    default route, link-local and multicast ones, and those of the links in `exclude`."""
    out: set[IPv6Network] = set()
    for dst, length in _host_view(socket.AF_INET6, exclude):
        network = IPv6Network(f"{dst}/{length}", strict=False)
        if not (network.is_link_local or network.is_multicast or network.is_loopback):
            out.add(network)
    return sorted(out, key=lambda n: (n.network_address, n.prefixlen))
