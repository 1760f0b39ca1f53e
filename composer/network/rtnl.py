"""The few rtnetlink requests and dumps composer makes, on a plain NETLINK_ROUTE socket.

A container's attach is composer's hottest network path (one per container start). pyroute2's sync
`IPRoute` drives a private asyncio loop per request (~0.3 ms each, and two `IPRoute` objects per
attach); the same requests built here with `struct` cost a few microseconds each, and the in-netns
ones go to the kernel in one batch (research/runtime-limits.md §3 measured 306 us against 3 us for a
single RTM_GETLINK). Bridges use it too (bridge.py), so that `up` and `down` never import pyroute2
(0.12-0.18 s of CPU, a `ldconfig -p` child included); pinning a netns still does (netns.py).

Only what composer needs: a veth whose peer is created inside a netns (name, MAC, MTU, bridge master,
up), a bridge, link up (with an alias), an address (IPv4 or IPv6), a default route, a link's
deletion; and reading links, addresses and routes (for bridges.py and IPAM's view of the host).
Errors come back as `RtnlError` (an OSError carrying the kernel's errno).
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address

from composer.network.netns import socket_in

__all__ = ["Address", "Link", "Request", "Route", "Rtnl", "RtnlError"]

NETLINK_ROUTE = 0
# message types (linux/rtnetlink.h, linux/netlink.h)
NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_GETADDR = 22
RTM_NEWROUTE = 24
RTM_GETROUTE = 26
# flags
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
# attributes
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_MASTER = 10
IFLA_LINKINFO = 18
IFLA_IFALIAS = 20
IFLA_NET_NS_FD = 28
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
VETH_INFO_PEER = 1
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_BROADCAST = 4
IFA_FLAGS = 8
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_TABLE = 15
IFF_UP = 0x1
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RT_SCOPE_UNIVERSE = 0
RTN_UNICAST = 1

_NLMSG = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
_RTA = struct.Struct("=HH")  # len, type
_U32 = struct.Struct("=I")
_ERR = struct.Struct("=i")


class RtnlError(OSError):
    """The kernel refused a request: `errno` is its code, the message names the request."""


def _align(size: int) -> int:
    return (size + 3) & ~3


def _attr(kind: int, payload: bytes) -> bytes:
    size = _RTA.size + len(payload)
    return _RTA.pack(size, kind) + payload + b"\0" * (_align(size) - size)


def _name(kind: int, name: str) -> bytes:
    return _attr(kind, name.encode() + b"\0")


def _u32(kind: int, value: int) -> bytes:
    return _attr(kind, _U32.pack(value))


def _mac(text: str) -> bytes:
    return bytes(int(part, 16) for part in text.split(":"))


def _attrs(data: bytes) -> dict[int, bytes]:
    """An attribute area -> {type: payload} (nested flags masked off)."""
    out: dict[int, bytes] = {}
    offset = 0
    while offset + _RTA.size <= len(data):
        size, kind = _RTA.unpack_from(data, offset)
        if size < _RTA.size:
            break
        out[kind & 0x3FFF] = data[offset + _RTA.size : offset + size]
        offset += _align(size)
    return out


@dataclass(frozen=True, slots=True)
class Link:
    index: int
    name: str
    alias: str
    mtu: int


@dataclass(frozen=True, slots=True)
class Address:
    index: int
    address: IPv4Address | IPv6Address
    prefixlen: int


@dataclass(frozen=True, slots=True)
class Route:
    """A route of the main table: its destination (None for a default route) and output link."""

    dst: IPv4Address | IPv6Address | None
    dst_len: int
    oif: int | None


def _text(raw: bytes | None) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace") if raw else ""


def _link(payload: bytes) -> Link:
    index = int(_IFINFO.unpack_from(payload)[2])
    attrs = _attrs(payload[_IFINFO.size :])
    mtu = attrs.get(IFLA_MTU)
    return Link(
        index=index,
        name=_text(attrs.get(IFLA_IFNAME)),
        alias=_text(attrs.get(IFLA_IFALIAS)),
        mtu=_U32.unpack(mtu)[0] if mtu and len(mtu) == 4 else 1500,
    )


@dataclass(frozen=True, slots=True)
class Request:
    """One message to send: its type, flags (REQUEST and ACK are added), body, and what it is for the
    error message (`veth cmv-...`); `tolerate` lists errnos that count as done (EEXIST for an add)."""

    kind: int
    flags: int
    body: bytes
    what: str
    tolerate: tuple[int, ...] = ()


class Rtnl:
    """A NETLINK_ROUTE socket and the requests built on it. Not thread-safe: one per thread, closed
    after use (`with Rtnl.host() as rtnl:`)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._seq = itertools.count(1)  # replies are matched by sequence number

    @classmethod
    def host(cls) -> Rtnl:
        return cls(socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE))

    @classmethod
    def inside(cls, netns_fd: int) -> Rtnl:
        """A socket opened inside the netns `netns_fd` (from this thread, which comes back at once)."""
        return cls(
            socket_in(netns_fd, socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        )

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the wire ------------------------------------------------------------------------------------------

    def run(self, requests: Sequence[Request]) -> None:
        """Send `requests` in one datagram (the kernel handles them in order, each acked) and raise the
        first refusal that is not tolerated, after every ack has been read."""
        seqs: dict[int, Request] = {}
        chunks = []
        for request in requests:
            seq = next(self._seq)
            seqs[seq] = request
            size = _NLMSG.size + len(request.body)
            chunks.append(_NLMSG.pack(size, request.kind, request.flags | NLM_F_REQUEST | NLM_F_ACK, seq, 0))
            chunks.append(request.body)
        self.sock.send(b"".join(chunks))
        failure: RtnlError | None = None
        while seqs:
            for kind, seq, payload in self._receive():
                if kind != NLMSG_ERROR or seq not in seqs:
                    continue
                request = seqs.pop(seq)
                code = -_ERR.unpack_from(payload)[0]
                if code and code not in request.tolerate and failure is None:
                    failure = RtnlError(code, f"{request.what}: {os.strerror(code)}")
        if failure is not None:
            raise failure

    def _receive(self) -> list[tuple[int, int, bytes]]:
        data = self.sock.recv(65536)
        out = []
        offset = 0
        while offset + _NLMSG.size <= len(data):
            size, kind, _flags, seq, _pid = _NLMSG.unpack_from(data, offset)
            if size < _NLMSG.size:
                break
            out.append((kind, seq, data[offset + _NLMSG.size : offset + size]))
            offset += _align(size)
        return out

    def _query(self, kind: int, flags: int, body: bytes, what: str) -> list[tuple[int, bytes]]:
        """A GET (one answer, or a dump until DONE): the replies' (type, payload)."""
        seq = next(self._seq)
        self.sock.send(_NLMSG.pack(_NLMSG.size + len(body), kind, flags | NLM_F_REQUEST, seq, 0) + body)
        out: list[tuple[int, bytes]] = []
        while True:
            for reply_kind, reply_seq, payload in self._receive():
                if reply_seq != seq:
                    continue
                if reply_kind == NLMSG_ERROR:
                    code = -_ERR.unpack_from(payload)[0]
                    if code:
                        raise RtnlError(code, f"{what}: {os.strerror(code)}")
                    return out
                if reply_kind == NLMSG_DONE:
                    return out
                out.append((reply_kind, payload))
                if not flags & NLM_F_DUMP:
                    return out

    # -- requests ------------------------------------------------------------------------------------------

    @staticmethod
    def veth(
        name: str, *, peer: str, peer_netns_fd: int, peer_mac: str, master: int, mtu: int | None = None
    ) -> Request:
        """A veth `name` (up, on bridge `master`) whose peer `peer` is created inside the netns."""
        peer_attrs = _name(IFLA_IFNAME, peer) + _u32(IFLA_NET_NS_FD, peer_netns_fd)
        peer_attrs += _attr(IFLA_ADDRESS, _mac(peer_mac))
        attrs = _name(IFLA_IFNAME, name) + _u32(IFLA_MASTER, master)
        if mtu:
            peer_attrs += _u32(IFLA_MTU, mtu)
            attrs += _u32(IFLA_MTU, mtu)
        info = _name(IFLA_INFO_KIND, "veth")
        info += _attr(IFLA_INFO_DATA, _attr(VETH_INFO_PEER, _IFINFO.pack(0, 0, 0, 0, 0) + peer_attrs))
        body = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, IFF_UP, IFF_UP) + attrs + _attr(IFLA_LINKINFO, info)
        return Request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"veth {name}")

    @staticmethod
    def bridge(name: str, *, mtu: int | None = None) -> Request:
        """A new bridge `name` (down; STP off, the kernel's default)."""
        attrs = _name(IFLA_IFNAME, name) + (_u32(IFLA_MTU, mtu) if mtu else b"")
        attrs += _attr(IFLA_LINKINFO, _name(IFLA_INFO_KIND, "bridge"))
        body = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + attrs
        return Request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"bridge {name}")

    @staticmethod
    def link_up(index: int, what: str, *, alias: str | None = None) -> Request:
        """Link `index` up (and its ifalias set, when given)."""
        body = _IFINFO.pack(socket.AF_UNSPEC, 0, index, IFF_UP, IFF_UP)
        if alias is not None:
            body += _attr(IFLA_IFALIAS, alias.encode())
        return Request(RTM_NEWLINK, 0, body, f"{what} up")

    @staticmethod
    def delete(name: str, *, missing_ok: bool = True) -> Request:
        body = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _name(IFLA_IFNAME, name)
        return Request(RTM_DELLINK, 0, body, f"delete {name}", tolerate=(errno.ENODEV,) if missing_ok else ())

    @staticmethod
    def address(
        index: int,
        address: IPv4Address | IPv6Address,
        prefixlen: int,
        *,
        broadcast: IPv4Address | None = None,
        flags: int = 0,
    ) -> Request:
        """Add `address/prefixlen` to link `index` (an address it already has counts as done)."""
        family = socket.AF_INET if address.version == 4 else socket.AF_INET6
        body = _IFADDR.pack(family, prefixlen, flags & 0xFF, RT_SCOPE_UNIVERSE, index)
        body += _attr(IFA_LOCAL, address.packed) + _attr(IFA_ADDRESS, address.packed)
        if broadcast is not None:
            body += _attr(IFA_BROADCAST, broadcast.packed)
        if flags:
            body += _u32(IFA_FLAGS, flags)
        return Request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body, f"address {address}", (errno.EEXIST,))

    @staticmethod
    def default_route(gateway: IPv4Address | IPv6Address) -> Request:
        """A default route through `gateway` in the main table (one already there counts as done)."""
        family = socket.AF_INET if gateway.version == 4 else socket.AF_INET6
        body = _RTMSG.pack(family, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
        body += _attr(RTA_GATEWAY, gateway.packed)
        what = f"default route via {gateway}"
        return Request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body, what, (errno.EEXIST,))

    # -- queries -------------------------------------------------------------------------------------------

    def link(self, name: str) -> Link | None:
        """Link `name` in this socket's netns, None if there is none."""
        body = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _name(IFLA_IFNAME, name)
        try:
            replies = self._query(RTM_GETLINK, 0, body, f"link {name}")
        except RtnlError as exc:
            if exc.errno == errno.ENODEV:
                return None
            raise
        return next((_link(payload) for kind, payload in replies if kind == RTM_NEWLINK), None)

    def index_of(self, name: str) -> int | None:
        found = self.link(name)
        return found.index if found is not None else None

    def links(self) -> list[Link]:
        body = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        return [
            _link(p) for kind, p in self._query(RTM_GETLINK, NLM_F_DUMP, body, "links") if kind == RTM_NEWLINK
        ]

    def address_list(self, family: int = socket.AF_UNSPEC, index: int | None = None) -> list[Address]:
        """The addresses of `family` (both when AF_UNSPEC), of link `index` or of every link."""
        out = []
        for kind, payload in self._query(
            RTM_GETADDR, NLM_F_DUMP, _IFADDR.pack(family, 0, 0, 0, 0), "addresses"
        ):
            if kind != RTM_NEWADDR:
                continue
            _family, prefixlen, _flags, _scope, link = _IFADDR.unpack_from(payload)
            if index is not None and link != index:
                continue
            attrs = _attrs(payload[_IFADDR.size :])
            raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if raw is not None:
                out.append(Address(index=link, address=ip_address(raw), prefixlen=prefixlen))
        return out

    def addresses(self, index: int) -> set[str]:
        """The addresses (both families, as text) of link `index`."""
        return {str(a.address) for a in self.address_list(index=index)}

    def routes(self, family: int, table: int = RT_TABLE_MAIN) -> list[Route]:
        """The routes of `family` in `table` (the main one by default)."""
        body = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
        out = []
        for kind, payload in self._query(RTM_GETROUTE, NLM_F_DUMP, body, "routes"):
            if kind != RTM_NEWROUTE:
                continue
            _family, dst_len, _src, _tos, short_table, *_rest = _RTMSG.unpack_from(payload)
            attrs = _attrs(payload[_RTMSG.size :])
            raw_table = attrs.get(RTA_TABLE)
            if (_U32.unpack(raw_table)[0] if raw_table else short_table) != table:
                continue
            dst, oif = attrs.get(RTA_DST), attrs.get(RTA_OIF)
            out.append(Route(dst=ip_address(dst) if dst else None, dst_len=dst_len,
                             oif=_U32.unpack(oif)[0] if oif else None))  # fmt: skip
        return out
