"""Linux bridges, one per compose network: create (idempotent), look up, delete; the host's routes.

Sync functions, each with its own plain `IPRoute` (DESIGN.md rule 6); trio code runs them through
`trio.to_thread.run_sync`. Idempotency comes from `NetlinkError.code`: EEXIST on create, ENODEV /
ENOENT / EADDRNOTAVAIL on delete.

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


def _netlink_code(exc: BaseException) -> int:
    return int(getattr(exc, "code", 0) or 0)


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
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            try:
                options: dict[str, object] = {"ifname": ifname, "kind": "bridge", "br_stp_state": 0}
                if mtu:
                    options["mtu"] = mtu
                ipr.link("add", **options)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise BridgeError(
                        f"bridge {ifname} ({alias}): {errno.errorcode.get(exc.code, exc)}"
                    ) from None
            found = ipr.link_lookup(ifname=ifname)
            if not found:
                raise BridgeError(f"bridge {ifname} ({alias}) vanished while being created")
        index = int(found[0])
        try:
            ipr.addr(
                "add",
                index=index,
                address=str(gateway),
                prefixlen=subnet.prefixlen,
                broadcast=str(subnet.broadcast_address),
            )
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise BridgeError(
                    f"bridge {ifname} ({alias}): address {gateway}/{subnet.prefixlen}: "
                    f"{errno.errorcode.get(exc.code, exc)}"
                ) from None
        if gateway6 is not None and subnet6 is not None:
            disable = f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"
            with open(disable) as handle:
                if handle.read().strip() != "0":
                    raise BridgeError(f"bridge {ifname} ({alias}): IPv6 is disabled on this host")
            try:
                prefix = subnet6.prefixlen
                ipr.addr("add", index=index, address=str(gateway6), prefixlen=prefix, flags=IFA_F_NODAD)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise BridgeError(
                        f"bridge {ifname} ({alias}): address {gateway6}/{subnet6.prefixlen}: "
                        f"{errno.errorcode.get(exc.code, exc)}"
                    ) from None
        ipr.link("set", index=index, state="up", ifalias=ALIAS_PREFIX + alias)
        return index


def lookup_bridge(ifname: str) -> BridgeInfo | None:
    """The bridge (or any link) called `ifname`, with its IPv4 addresses; None if there is none."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return None
        index = int(found[0])
        link = ipr.get_links(index)[0]
        addresses = tuple(
            IPv4Interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
            for a in ipr.get_addr(family=socket.AF_INET, index=index)
        )
        return BridgeInfo(
            ifname=ifname,
            index=index,
            addresses=addresses,
            alias=str(link.get_attr("IFLA_IFALIAS") or ""),
            mtu=int(link.get_attr("IFLA_MTU") or 1500),
        )


def find_bridge_by_alias(alias: str) -> BridgeInfo | None:
    """A link whose ifalias is `alias` or `composer:<alias>` (an external network named in full)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        for link in ipr.get_links():
            if str(link.get_attr("IFLA_IFALIAS") or "") in (alias, ALIAS_PREFIX + alias):
                name = str(link.get_attr("IFLA_IFNAME"))
                break
        else:
            return None
    return lookup_bridge(name)


def delete_bridge(ifname: str) -> bool:
    """Delete the bridge (its remaining ports are released by the kernel). False if it was gone."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr:
        try:
            ipr.link("del", ifname=ifname)
        except NetlinkError as exc:
            if exc.code in (errno.ENODEV, errno.ENOENT):
                return False
            raise BridgeError(f"bridge {ifname}: delete: {errno.errorcode.get(exc.code, exc)}") from None
    return True


def host_networks(*, exclude: Collection[str] = ()) -> list[IPv4Network]:
    """Every IPv4 destination in the main routing table and every IPv4 interface subnet on the host,
    except those of the links named in `exclude` (the bridges this root's IPAM knows already) and the
    default route. Another composer root's bridges count as the host's: their subnets are taken."""
    from pyroute2 import IPRoute

    out: set[IPv4Network] = set()
    with IPRoute() as ipr:
        names = {int(link["index"]): str(link.get_attr("IFLA_IFNAME")) for link in ipr.get_links()}
        ours = {index for index, name in names.items() if name in exclude}
        for route in ipr.get_routes(family=socket.AF_INET, table=254):
            if route.get_attr("RTA_OIF") in ours or route["dst_len"] == 0:
                continue
            dst = route.get_attr("RTA_DST")
            if dst:
                out.add(IPv4Network(f"{dst}/{route['dst_len']}", strict=False))
        for addr in ipr.get_addr(family=socket.AF_INET):
            if addr["index"] in ours:
                continue
            local = addr.get_attr("IFA_ADDRESS")
            if local:
                out.add(IPv4Network(f"{local}/{addr['prefixlen']}", strict=False))
    return sorted(out, key=lambda n: (n.network_address, n.prefixlen))


def host_networks6(*, exclude: Collection[str] = ()) -> list[IPv6Network]:
    """The IPv6 twin of `host_networks`: routes of the main table and interface subnets, without the
    default route, link-local and multicast ones, and those of the links in `exclude`."""
    from pyroute2 import IPRoute

    out: set[IPv6Network] = set()
    with IPRoute() as ipr:
        names = {int(link["index"]): str(link.get_attr("IFLA_IFNAME")) for link in ipr.get_links()}
        ours = {index for index, name in names.items() if name in exclude}
        found = [
            (route.get_attr("RTA_OIF"), route.get_attr("RTA_DST"), route["dst_len"])
            for route in ipr.get_routes(family=socket.AF_INET6, table=254)
        ]
        found += [
            (addr["index"], addr.get_attr("IFA_ADDRESS"), addr["prefixlen"])
            for addr in ipr.get_addr(family=socket.AF_INET6)
        ]
    for index, dst, length in found:
        if index in ours or not dst or not length:
            continue
        network = IPv6Network(f"{dst}/{length}", strict=False)
        if not (network.is_link_local or network.is_multicast or network.is_loopback):
            out.add(network)
    return sorted(out, key=lambda n: (n.network_address, n.prefixlen))
