"""The embedded DNS server: Docker's 127.0.0.11, served by the supervisor in each container's netns.

    tables = NameTables()
    tables.table("proj_default").add(Endpoint(container_id=cid, container_name="proj-web-1",
                                              service="web", aliases=("www",), address=ip))
    view = tables.view(["proj_default", "proj_back"])           # the networks of one container
    upstreams = upstreams_for(host_resolv_conf, dns=service.dns, container_netns=netns_path)
    server = await nursery.start(serve_dns, netns_path, view, upstreams)   # cancel the nursery to stop

What a container asks 127.0.0.11 (UDP and TCP port 53, in its own netns) and what it gets:
- A/AAAA of a name on one of its networks: the service name (every replica; the order rotates on
  each answer), the container name, aliases (`networks.<n>.aliases`), and any of those followed by
  `.<network name>`. The first network of the view that knows the name answers (Docker's order).
  Link aliases (`links: ["db:database"]`: the linked service's containers; `external_links`: a
  container, of any project) belong to the view of the linking container only, and are looked up
  before the networks' names (Docker's order too). A name that is known but has no address of the
  asked type (AAAA on an IPv4 network, MX, ...) gets an empty NOERROR, never a forward.
- PTR of a container's address: `<container name>.<network>.`.
- Any other single-label name: NXDOMAIN (so `ndots:0` plus a `search` list moves on at once).
- Everything else goes to the upstream resolvers, tried in order with a timeout each; SERVFAIL when
  none answers, or when there are none (containers only on `internal` networks).
Names are case-insensitive; answers keep the question's spelling. The tables are live objects: a
container added, removed or re-added with a new address is seen by the next query of every view.

One server per container netns, not one per network. Measured here (bench/dns.py): starting a
server in a netns (thread, setns, two sockets, its tasks) costs ~0.4 ms median and two descriptors,
stopping it ~0.1 ms, and a container's view (the networks it is on) is then fixed by the socket the
query arrived on. Answers: ~6,500 q/s one at a time (median 130-155 µs, p99 0.22 ms), ~10,000 q/s with
16 in flight, mostly dnslib's parse and pack. A per-network socket (on the bridge's gateway
address) would have to map source addresses back to containers to know a multi-network container's
view, could not be 127.0.0.11 (which images and tools expect), and forwarding would leave from the
host for `internal` networks anyway.

The sockets are made by a short-lived thread that setns()es into the netns, binds, and setns()es
back (a thread's netns is its own; the sockets stay in the netns they were made in): a fresh thread,
not trio's thread cache, so a thread that could not switch back is never reused. Forwarding to an
upstream whose `netns` is set (a `dns:` server, reached like Docker from the container's side) makes
its socket the same way; the host's resolvers (netns "") are reached from the supervisor's own
netns, which is also how a loopback resolver such as 127.0.0.53 stays reachable.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import ipaddress
import itertools
import os
import socket
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio
from dnslib import AAAA, CLASS, EDNS0, PTR, QTYPE, RCODE, RR, A, DNSError, DNSRecord

from composer.errors import ComposerError
from composer.network.hosts import EMBEDDED_NAMESERVER, parse_resolv_conf
from composer.network.netns import entered, open_netns

__all__ = [
    "DNS_PORT",
    "DnsError",
    "DnsServer",
    "Endpoint",
    "Link",
    "NameTable",
    "NameTables",
    "ResolverView",
    "Upstream",
    "answer",
    "bind_dns_sockets",
    "parse_links",
    "run_in_netns",
    "serve_dns",
    "udp_payload",
    "upstreams_for",
]

DNS_PORT = 53
TTL = 600  # Docker's embedded server answers with 600 s
UDP_PLAIN_LIMIT = 512  # RFC 1035, for queries without EDNS
UDP_MAX_LIMIT = 4096  # what we advertise and honour at most with EDNS
TCP_IDLE_TIMEOUT = 10.0
MAX_FORWARDS = 256  # in-flight forwarded queries per server; beyond that, SERVFAIL at once

_SIOCGIFFLAGS = 0x8913
_IFF_UP = 0x1

T = TypeVar("T")
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class DnsError(ComposerError):
    """The embedded DNS server could not start (its sockets could not be made in the netns)."""


def _log() -> Any:
    from composer.log import logger

    return logger(component="dns")


def _norm(name: str) -> str:
    return name.rstrip(".").lower()


# -- names ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """One container on one network, as the name table knows it."""

    container_id: str  # the key: one endpoint per container per network
    container_name: str
    service: str = ""  # "" for containers that do not answer to their service's name (`run`)
    aliases: tuple[str, ...] = ()  # networks.<n>.aliases, links' aliases, ...
    address: ipaddress.IPv4Address | None = None
    address6: ipaddress.IPv6Address | None = None

    def names(self) -> tuple[str, ...]:
        """Its names, lower case, without duplicates, in a stable order."""
        raw = (self.container_name, self.service, *self.aliases)
        return tuple(dict.fromkeys(_norm(n) for n in raw if n and _norm(n)))


class NameTable:
    """The names of one network. Shared by the views of every container on it; changes show at once."""

    def __init__(self, network: str) -> None:
        self.network = network
        self._suffix = "." + _norm(network)
        self._endpoints: dict[str, Endpoint] = {}
        self._by_name: dict[str, dict[str, Endpoint]] = {}
        self._by_address: dict[Address, Endpoint] = {}

    def __repr__(self) -> str:
        return f"NameTable({self.network!r}, {len(self._endpoints)} endpoints)"

    def add(self, endpoint: Endpoint) -> None:
        """Add (or replace: a restart, a recreate under the same id) a container's endpoint."""
        self.remove(endpoint.container_id)
        self._endpoints[endpoint.container_id] = endpoint
        for name in endpoint.names():
            self._by_name.setdefault(name, {})[endpoint.container_id] = endpoint
        for address in (endpoint.address, endpoint.address6):
            if address is not None:
                self._by_address[address] = endpoint

    def remove(self, container_id: str) -> bool:
        """Forget a container; False when it was not there."""
        endpoint = self._endpoints.pop(container_id, None)
        if endpoint is None:
            return False
        for name in endpoint.names():
            holders = self._by_name.get(name)
            if holders is not None:
                holders.pop(container_id, None)
                if not holders:
                    del self._by_name[name]
        for address in (endpoint.address, endpoint.address6):
            if address is not None and self._by_address.get(address) is endpoint:
                del self._by_address[address]
        return True

    def endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(self._endpoints[key] for key in sorted(self._endpoints))

    def lookup(self, name: str) -> tuple[Endpoint, ...]:
        """The endpoints answering to `name` or `name` + `.<network>`, sorted by container name."""
        key = _norm(name)
        holders = self._by_name.get(key)
        if not holders and key.endswith(self._suffix):
            holders = self._by_name.get(key[: -len(self._suffix)])
        if not holders:
            return ()
        return tuple(sorted(holders.values(), key=lambda e: (e.container_name, e.container_id)))

    def reverse(self, address: Address) -> str | None:
        """`<container name>.<network>` for a container's address, or None."""
        endpoint = self._by_address.get(address)
        return f"{endpoint.container_name}.{self.network}" if endpoint is not None else None


class NameTables:
    """Every network's table, made on first use; the supervisor holds one."""

    def __init__(self) -> None:
        self._tables: dict[str, NameTable] = {}

    def table(self, network: str) -> NameTable:
        found = self._tables.get(network)
        if found is None:
            found = self._tables[network] = NameTable(network)
        return found

    def view(self, networks: Iterable[str], links: Iterable[Link] = ()) -> ResolverView:
        """What a container on `networks` (in its network order), with `links`, resolves."""
        return ResolverView(tables=tuple(self.table(n) for n in networks), links=tuple(links))

    def drop(self, network: str) -> None:
        self._tables.pop(network, None)

    def remove_container(self, container_id: str) -> None:
        for table in self._tables.values():
            table.remove(container_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class Link:
    """A name only one container resolves (Docker's link alias on a user-defined network): `alias`
    (`links: ["db:database"]` gives `database`) stands for the containers of `service` (links), or
    for the container `container` (external_links), on the networks the linking container shares
    with them."""

    alias: str
    service: str = ""
    container: str = ""
    # an external container this supervisor does not run (another project's): its addresses, from IPAM
    address: ipaddress.IPv4Address | None = None
    address6: ipaddress.IPv6Address | None = None

    def matches(self, endpoint: Endpoint) -> bool:
        if self.service:
            return endpoint.service == self.service
        return _norm(endpoint.container_name) == _norm(self.container)


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolverView:
    """The tables of the networks one container is on, first network first, and its links."""

    tables: tuple[NameTable, ...] = ()
    links: tuple[Link, ...] = ()

    def lookup(self, name: str) -> tuple[Endpoint, ...]:
        if self.links:  # link aliases first, as Docker's resolver does
            found = self._linked(_norm(name))
            if found:
                return found
        for table in self.tables:
            found = table.lookup(name)
            if found:
                return found
        return ()

    def _linked(self, key: str) -> tuple[Endpoint, ...]:
        for table in self.tables:
            bare = key
            if key.endswith(table._suffix):
                bare = key[: -len(table._suffix)]
            for link in self.links:
                if _norm(link.alias) in (key, bare):
                    target = link.service or link.container
                    found = tuple(e for e in table.lookup(target) if link.matches(e))
                    if found:
                        return found
        for link in self.links:
            if _norm(link.alias) == key and (link.address is not None or link.address6 is not None):
                endpoint = Endpoint(
                    container_id=f"link:{link.container}",
                    container_name=link.container,
                    address=link.address,
                    address6=link.address6,
                )
                return (endpoint,)
        return ()

    def reverse(self, address: Address) -> str | None:
        for table in self.tables:
            name = table.reverse(address)
            if name is not None:
                return name
        return None


def parse_links(links: Iterable[str] = (), external_links: Iterable[str] = ()) -> tuple[Link, ...]:
    """A service's `links` (`SERVICE[:ALIAS]`) and `external_links` (`CONTAINER[:ALIAS]`) as Links."""
    out = []
    for text in links:
        target, _, alias = text.partition(":")
        out.append(Link(alias=alias or target, service=target))
    for text in external_links:
        target, _, alias = text.partition(":")
        out.append(Link(alias=alias or target, container=target))
    return tuple(out)


# -- answers (pure) --------------------------------------------------------------------------------------


def ptr_address(name: str) -> Address | None:
    """`4.3.2.1.in-addr.arpa` -> 1.2.3.4 (and ip6.arpa nibbles); None for any other name."""
    key = _norm(name)
    try:
        if key.endswith(".in-addr.arpa"):
            parts = key[: -len(".in-addr.arpa")].split(".")
            return ipaddress.IPv4Address(".".join(reversed(parts))) if len(parts) == 4 else None
        if key.endswith(".ip6.arpa"):
            nibbles = key[: -len(".ip6.arpa")].split(".")
            if len(nibbles) != 32 or any(len(n) != 1 for n in nibbles):
                return None
            hexed = "".join(reversed(nibbles))
            return ipaddress.IPv6Address(":".join(hexed[i : i + 4] for i in range(0, 32, 4)))
    except ValueError:
        return None
    return None


def _error(query: DNSRecord, rcode: int) -> DNSRecord:
    reply = query.reply()
    reply.header.rcode = rcode
    return reply


def servfail(query: DNSRecord) -> DNSRecord:
    return _error(query, RCODE.SERVFAIL)


def answer(view: ResolverView, query: DNSRecord, rotate: int = 0) -> DNSRecord | None:
    """The local answer to `query`, or None when it is to be forwarded. `rotate` turns the order of
    a name's addresses (round robin over a service's replicas)."""
    if query.header.opcode != 0:
        return _error(query, RCODE.NOTIMP)
    if len(query.questions) != 1:
        return _error(query, RCODE.FORMERR)
    question = query.q
    if question.qclass != CLASS.IN:
        return None
    qname = str(question.qname)
    qtype = question.qtype
    if qtype == QTYPE.PTR:
        address = ptr_address(qname)
        target = view.reverse(address) if address is not None else None
        if target is None:
            return None
        reply = query.reply()
        reply.add_answer(RR(question.qname, QTYPE.PTR, ttl=TTL, rdata=PTR(target + ".")))
        return reply
    endpoints = view.lookup(qname)
    if not endpoints:
        if "." not in _norm(qname) and _norm(qname):
            return _error(query, RCODE.NXDOMAIN)
        return None
    reply = query.reply()
    records: list[RR] = []
    if qtype in (QTYPE.A, QTYPE.ANY):
        v4 = [e.address for e in endpoints if e.address is not None]
        records += [RR(question.qname, QTYPE.A, ttl=TTL, rdata=A(str(ip))) for ip in _rotated(v4, rotate)]
    if qtype in (QTYPE.AAAA, QTYPE.ANY):
        v6 = [e.address6 for e in endpoints if e.address6 is not None]
        records += [
            RR(question.qname, QTYPE.AAAA, ttl=TTL, rdata=AAAA(str(ip))) for ip in _rotated(v6, rotate)
        ]
    for record in records:
        reply.add_answer(record)
    return reply


def _rotated(items: Sequence[T], by: int) -> list[T]:
    if not items:
        return []
    cut = by % len(items)
    return [*items[cut:], *items[:cut]]


def _edns_size(query: DNSRecord) -> int | None:
    for record in query.ar:
        if record.rtype == QTYPE.OPT:
            return int(record.rclass)
    return None


def udp_payload(reply: DNSRecord, query: DNSRecord) -> bytes:
    """`reply` packed for UDP: an OPT record when the query had one, and only the header, question
    (and OPT) with TC set when it does not fit the client's size (512, or its EDNS size up to 4096)."""
    size = _edns_size(query)
    limit = UDP_PLAIN_LIMIT if size is None else max(UDP_PLAIN_LIMIT, min(size, UDP_MAX_LIMIT))
    if size is not None and not any(r.rtype == QTYPE.OPT for r in reply.ar):
        reply.add_ar(EDNS0(udp_len=UDP_MAX_LIMIT))
    data: bytes = reply.pack()
    if len(data) <= limit:
        return data
    short = DNSRecord(reply.header, q=reply.q)
    short.header.tc = 1
    if size is not None:
        short.add_ar(EDNS0(udp_len=UDP_MAX_LIMIT))
    packed: bytes = short.pack()
    return packed


# -- upstreams -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Upstream:
    """A resolver to forward to: `netns` "" = from the supervisor's own netns (the host's resolvers),
    else a netns path to send from (a service's `dns:` servers, reached from the container's side)."""

    address: str
    port: int = DNS_PORT
    netns: str = ""

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.address else socket.AF_INET


def upstreams_for(
    host_resolv_conf: str, *, dns: Sequence[str] = (), container_netns: str = ""
) -> tuple[Upstream, ...]:
    """Docker's choice: a service's `dns` servers (asked from the container's netns), else the host's
    nameservers (asked from the host's, so that a loopback resolver works)."""
    if dns:
        return tuple(Upstream(address=a, netns=container_netns) for a in dns)
    return tuple(Upstream(address=a) for a in parse_resolv_conf(host_resolv_conf).nameservers)


# -- netns plumbing ------------------------------------------------------------------------------------------


def _call_in_netns(path: str, fn: Callable[[], T]) -> T:
    target = open_netns(path)
    try:
        with entered(target):
            return fn()
    finally:
        os.close(target)


async def run_in_netns(path: str, fn: Callable[[], T]) -> T:
    """`fn()` in a worker thread that has entered the netns at `path` ("" = here, inline), and come
    back (`entered`: or raised; the network layer's worker threads enter netns the same way).

    Meant for making sockets (fast); once the thread runs, the wait cannot be cancelled. A new thread
    per call held the supervisor's trio thread in its start-up handshake: ~0.4 ms a container in an
    up of 50 (py-spy)."""
    if not path:
        return fn()
    return await trio.to_thread.run_sync(_call_in_netns, path, fn)


def bind_dns_sockets(
    address: str = EMBEDDED_NAMESERVER, port: int = DNS_PORT
) -> tuple[socket.socket, socket.socket]:
    """A bound UDP socket and a listening TCP socket on address:port, in the calling thread's netns."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        udp.bind((address, port))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((address, port))
            tcp.listen(128)
        except BaseException:
            tcp.close()
            raise
    except BaseException:
        udp.close()
        raise
    return udp, tcp


def _lo_is_up(sock: socket.socket) -> bool:
    """Whether `lo` is up in the netns `sock` was made in (SIOCGIFFLAGS answers for the socket's)."""
    request = struct.pack("16sH", b"lo", 0)
    try:
        flags = struct.unpack("16sH", fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, request)[:18])[1]
    except OSError:
        return False
    return bool(flags & _IFF_UP)


# -- the server ----------------------------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class DnsServer:
    """What `serve_dns` hands to `nursery.start`: counters, for tests and benchmarks."""

    netns: str
    queries: int = 0
    local: int = 0
    forwarded: int = 0
    failed: int = 0  # forwards that ended in SERVFAIL
    _rotation: itertools.count[int] = field(default_factory=itertools.count)


class _Resolver:
    def __init__(
        self, server: DnsServer, view: ResolverView, upstreams: Sequence[Upstream], timeout: float
    ) -> None:
        self.server = server
        self.view = view
        self.upstreams = tuple(upstreams)
        self.timeout = timeout
        self.in_flight = 0

    def local(self, query: DNSRecord) -> DNSRecord | None:
        self.server.queries += 1
        try:
            reply = answer(self.view, query, next(self.server._rotation))
        except Exception:  # a bug must cost one answer, not the server
            _log().exception("dns: answering failed", netns=self.server.netns)
            reply = servfail(query)
        if reply is not None:
            self.server.local += 1
        return reply

    async def forward(self, data: bytes, *, tcp: bool) -> bytes | None:
        """The first upstream's raw reply to `data`, or None."""
        self.server.forwarded += 1
        for upstream in self.upstreams:
            with trio.move_on_after(self.timeout):
                try:
                    return await (_ask_tcp if tcp else _ask_udp)(upstream, data)
                except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, EOFError):
                    continue
        self.server.failed += 1
        return None


async def _upstream_socket(upstream: Upstream, kind: int) -> trio.socket.SocketType:
    def make() -> socket.socket:
        return socket.socket(upstream.family, kind | socket.SOCK_CLOEXEC)

    return trio.socket.from_stdlib_socket(await run_in_netns(upstream.netns, make))


async def _ask_udp(upstream: Upstream, data: bytes) -> bytes:
    with await _upstream_socket(upstream, socket.SOCK_DGRAM) as sock:
        await sock.connect((upstream.address, upstream.port))  # replies from elsewhere are dropped
        await sock.send(data)
        while True:
            reply = await sock.recv(65535)
            if reply[:2] == data[:2] and len(reply) >= 12:
                return reply


async def _recv_exactly(sock: trio.socket.SocketType, size: int) -> bytes:
    buf = b""
    while len(buf) < size:
        chunk = await sock.recv(size - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


async def _ask_tcp(upstream: Upstream, data: bytes) -> bytes:
    with await _upstream_socket(upstream, socket.SOCK_STREAM) as sock:
        await sock.connect((upstream.address, upstream.port))
        await _send_all(sock, len(data).to_bytes(2, "big") + data)
        size = int.from_bytes(await _recv_exactly(sock, 2), "big")
        return await _recv_exactly(sock, size)


async def _send_all(sock: trio.socket.SocketType, data: bytes) -> None:
    view = memoryview(data)
    while view:
        sent = await sock.send(view)
        view = view[sent:]


def _parse(data: bytes) -> DNSRecord | None:
    try:
        query = DNSRecord.parse(data)
    except (DNSError, ValueError, IndexError, UnicodeDecodeError):
        return None
    return None if query.header.qr else query  # a response sent to us: drop it, never loop


async def _serve_udp(sock: trio.socket.SocketType, resolver: _Resolver, nursery: trio.Nursery) -> None:
    async def reply_to(peer: Any, data: bytes) -> None:
        with contextlib.suppress(OSError):
            await sock.sendto(data, peer)

    async def forward(query: DNSRecord, data: bytes, peer: Any) -> None:
        try:
            raw = await resolver.forward(data, tcp=False)
            await reply_to(peer, raw if raw is not None else udp_payload(servfail(query), query))
        finally:
            resolver.in_flight -= 1

    while True:
        try:
            data, peer = await sock.recvfrom(65535)
        except OSError:  # a queued ICMP error and the like: not the server's end
            continue
        query = _parse(data)
        if query is None:
            continue
        reply = resolver.local(query)
        if reply is not None:
            await reply_to(peer, udp_payload(reply, query))
        elif resolver.in_flight >= MAX_FORWARDS or not resolver.upstreams:
            resolver.server.failed += 1
            await reply_to(peer, udp_payload(servfail(query), query))
        else:
            resolver.in_flight += 1
            nursery.start_soon(forward, query, data, peer)


async def _serve_tcp_client(stream: trio.SocketStream, resolver: _Resolver) -> None:
    async with stream:
        buf = b""
        while True:
            while len(buf) < 2 or len(buf) < 2 + int.from_bytes(buf[:2], "big"):
                with trio.move_on_after(TCP_IDLE_TIMEOUT) as idle:
                    try:
                        chunk = await stream.receive_some(65535)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        return
                if idle.cancelled_caught or not chunk:
                    return
                buf += chunk
            size = int.from_bytes(buf[:2], "big")
            data, buf = buf[2 : 2 + size], buf[2 + size :]
            query = _parse(data)
            if query is None:
                return
            reply = resolver.local(query)
            if reply is not None:
                out: bytes = reply.pack()
            else:
                raw = await resolver.forward(data, tcp=True) if resolver.upstreams else None
                if raw is None and not resolver.upstreams:
                    resolver.server.failed += 1
                out = raw if raw is not None else servfail(query).pack()
            try:
                await stream.send_all(len(out).to_bytes(2, "big") + out)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return


async def serve_dns(
    netns_path: str,
    view: ResolverView,
    upstreams: Sequence[Upstream],
    *,
    address: str = EMBEDDED_NAMESERVER,
    port: int = DNS_PORT,
    timeout: float = 2.0,
    task_status: trio.TaskStatus[DnsServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `view` on address:port (UDP and TCP) inside the netns at `netns_path` ("" = the caller's
    own); `timeout` is per upstream. Ready when `nursery.start` returns the DnsServer; runs until
    cancelled, then closes its sockets. `lo` must be up in the netns (it brings 127.0.0.0/8)."""
    where = netns_path or "the supervisor's netns"
    try:
        udp_raw, tcp_raw = await run_in_netns(netns_path, lambda: bind_dns_sockets(address, port))
    except OSError as exc:
        raise DnsError(f"dns: cannot serve {address}:{port} in {where}: {exc}") from exc
    if ipaddress.ip_address(address).is_loopback and not _lo_is_up(udp_raw):
        # binding works on a down `lo`, but nothing could reach the server: say so now
        udp_raw.close()
        tcp_raw.close()
        raise DnsError(f"dns: cannot serve {address}:{port} in {where}: lo is down there")
    server = DnsServer(netns=netns_path)
    resolver = _Resolver(server, view, upstreams, timeout)
    with trio.socket.from_stdlib_socket(udp_raw) as udp, trio.socket.from_stdlib_socket(tcp_raw) as tcp:
        listener = trio.SocketListener(tcp)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_serve_udp, udp, resolver, nursery)
            nursery.start_soon(
                trio.serve_listeners, functools.partial(_serve_tcp_client, resolver=resolver), [listener]
            )
            task_status.started(server)
