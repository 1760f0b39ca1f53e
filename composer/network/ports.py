"""Published ports: from the compose model's `ports` to held host ports and kernel DNAT rules.

    wanted = [ContainerPorts(container="proj-web-1", service="web", ports=service.ports), ...]
    reservation = reserve(wanted, taken=firewall.published())   # every host port bound now, or PortInUse
    ...                                                          # (before any container starts)
    held = reservation.take("proj-web-1")
    publisher = PortPublisher(firewall)
    await nursery.start(publisher.serve, held, address, bridge)  # DNAT rules (+ proxies for IPv6)
    ...                                                          # cancel: the rules go
    held.close()                                                 # removal: the host ports are free
    lookup(publisher.bindings(), "proj-web-1", 80, "tcp")        # `composer port web 80` -> 0.0.0.0:8080

Why kernel DNAT: measured here (bench/ports.py, 1 GiB transfers x5, loopback to a container on a
test bridge): direct to the container 17.3 Gbit/s, DNAT 17.1 (99 %, no CPU of ours), the trio splice
proxy 10.3 (60 %, 0.47 CPU-s/GiB), the copy proxy 10.6 (0.63 CPU-s/GiB); connection setup (connect,
1-byte round trip, close) p50 171 us with DNAT against 385 us through the proxy, a UDP round trip
18 us against 75 us. DNAT also keeps the client's address for clients from other hosts. The proxy
(proxy.py) serves what DNAT cannot: an IPv6 host address in front of the IPv4 container networks (IPv6
has no route_localnet: ::1 cannot be DNATed), or hosts without nftables (`mode="proxy"`). A port
without `host_ip` is published on both families, as Docker does (`reserve(dual_stack=True)`, which the
supervisor uses): 0.0.0.0:P by DNAT and [::]:P by the proxy, with the same P.

Every host port is *held* by a socket of ours, like Docker's docker-proxy does: a TCP socket bound but
not listening (DNAT takes the packets before they could reach it; nothing else can bind the port), a
bound UDP socket. Binding is also the check: a port in use is found with the service's name before
anything starts; an ephemeral port (`- 9000`) is the kernel's choice at bind time, and a range
(`8000-8010:80`) takes its first free port. The proxy listens on the held sockets themselves.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import socket
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Protocol

import trio

from composer.errors import ComposerError
from composer.log import logger
from composer.network.firewall import Dnat, FirewallError, NftFirewall

__all__ = [
    "ContainerPorts",
    "HeldPorts",
    "PortBinding",
    "PortError",
    "PortInUse",
    "PortPublisher",
    "PortRequest",
    "Reservation",
    "lookup",
    "port_requests",
    "reserve",
    "set_route_localnet",
]

PROTOCOLS = ("tcp", "udp")
ANY4 = "0.0.0.0"


class PortError(ComposerError):
    """A `ports` entry that cannot be published."""


class PortInUse(PortError):
    """A requested host port is taken (by the host, another project, or another service)."""


class PortLike(Protocol):
    """composer.spec.model.Port fits (read structurally: network may not import spec)."""

    @property
    def target(self) -> int: ...
    @property
    def published(self) -> str | None: ...
    @property
    def host_ip(self) -> str | None: ...
    @property
    def protocol(self) -> str: ...


# --- pure: requests and bindings ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PortRequest:
    """One port to publish: host ports `first`..`last` (0, 0: ephemeral) -> `target` in the container."""

    service: str
    target: int
    protocol: str = "tcp"
    host_ip: str = ANY4  # canonical text; "0.0.0.0" every IPv4 address, "::" every IPv6 one
    first: int = 0
    last: int = 0
    any_family: bool = False  # no host_ip given: with `reserve(dual_stack=True)`, "::" too (Docker's)

    @property
    def ephemeral(self) -> bool:
        return self.first == 0

    @property
    def ipv6(self) -> bool:
        return ":" in self.host_ip

    def describe(self) -> str:
        ports = "an ephemeral port" if self.ephemeral else f"host port {_range(self.first, self.last)}"
        where = "" if self.host_ip in (ANY4, "::") else f" on {self.host_ip}"
        return f"{ports}/{self.protocol}{where}"


def _range(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


def port_requests(service: str, ports: Iterable[PortLike]) -> tuple[PortRequest, ...]:
    """Validate and canonicalize a service's (normalized) ports. PortError names the service."""
    out = []
    for port in ports:
        protocol = (port.protocol or "tcp").lower()
        if protocol not in PROTOCOLS:
            raise PortError(
                f"service {service}: port {port.target}/{protocol}: only tcp and udp can be published"
            )
        if not 1 <= port.target <= 65535:
            raise PortError(f"service {service}: container port {port.target} must be 1-65535")
        host_ip = ANY4
        if port.host_ip:
            try:
                host_ip = str(ipaddress.ip_address(port.host_ip.strip("[]")))
            except ValueError:
                raise PortError(f"service {service}: host_ip {port.host_ip!r} is not an IP address") from None
        first = last = 0
        text = (port.published or "").strip()
        if text:
            head, _, tail = text.partition("-")
            try:
                first = int(head)
                last = int(tail) if tail else first
            except ValueError:
                raise PortError(
                    f"service {service}: published port {text!r} is not a port or range"
                ) from None
            if not (0 <= first <= last <= 65535) or (first == 0 and last != 0):
                raise PortError(f"service {service}: published port {text!r} must be 1-65535 (low-high)")
        out.append(
            PortRequest(
                service=service,
                target=port.target,
                protocol=protocol,
                host_ip=host_ip,
                first=first,
                last=last,
                any_family=not port.host_ip,
            )
        )
    return tuple(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class PortBinding:
    """A concrete published port: host_ip:host_port/protocol -> the container's `target`."""

    container: str
    service: str
    target: int
    protocol: str
    host_ip: str  # "0.0.0.0": every IPv4 address
    host_port: int

    @property
    def host(self) -> str:
        """`0.0.0.0:8080`, `[::1]:8080`: what `composer port` prints."""
        ip = f"[{self.host_ip}]" if ":" in self.host_ip else self.host_ip
        return f"{ip}:{self.host_port}"

    @property
    def ipv6(self) -> bool:
        return ":" in self.host_ip

    def __str__(self) -> str:
        return f"{self.host}->{self.target}/{self.protocol}"

    def dnat(self, address: IPv4Address) -> Dnat:
        if self.ipv6:
            raise PortError(
                f"service {self.service}: {self.host} is IPv6: kernel DNAT cannot reach an IPv4 container"
            )
        host_ip = None if self.host_ip == ANY4 else IPv4Address(self.host_ip)
        return Dnat(
            container=self.container,
            protocol=self.protocol,
            host_ip=host_ip,
            host_port=self.host_port,
            address=address,
            target=self.target,
        )

    @classmethod
    def from_dnat(cls, rule: Dnat, service: str = "") -> PortBinding:
        return cls(
            container=rule.container,
            service=service,
            target=rule.target,
            protocol=rule.protocol,
            host_ip=str(rule.host_ip) if rule.host_ip is not None else ANY4,
            host_port=rule.host_port,
        )


def lookup(bindings: Iterable[PortBinding], container: str, target: int, protocol: str = "tcp") -> list[str]:
    """`composer port`: the host addresses publishing the container's `target`/`protocol`, sorted."""
    return sorted(
        b.host for b in bindings if b.container == container and b.target == target and b.protocol == protocol
    )


# --- holding host ports ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerPorts:
    container: str
    service: str
    ports: Sequence[PortLike]


@dataclass(slots=True)
class HeldPorts:
    """A container's bindings and the sockets holding their host ports (closed by `close`)."""

    container: str
    bindings: tuple[PortBinding, ...]
    sockets: dict[PortBinding, socket.socket] = field(default_factory=dict)

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()


@dataclass(slots=True)
class Reservation:
    """Every container's held ports; `take` hands one container's over, `close` frees the rest."""

    held: dict[str, HeldPorts] = field(default_factory=dict)

    def take(self, container: str) -> HeldPorts:
        return self.held.pop(container, None) or HeldPorts(container=container, bindings=())

    def bindings(self) -> tuple[PortBinding, ...]:
        return tuple(b for h in self.held.values() for b in h.bindings)

    def close(self) -> None:
        for held in self.held.values():
            held.close()
        self.held.clear()

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def hold_port(protocol: str, host_ip: str, port: int) -> socket.socket:
    """Bind (never listen) a socket on host_ip:port (0: the kernel picks). OSError as bind raises it."""
    family = socket.AF_INET6 if ":" in host_ip else socket.AF_INET
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(family, kind | socket.SOCK_CLOEXEC)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host_ip, port))
    except BaseException:
        sock.close()
        raise
    return sock


def reserve(
    wanted: Sequence[ContainerPorts],
    *,
    taken: Iterable[Dnat] = (),
    dual_stack: bool = False,
) -> Reservation:
    """Hold every host port the containers ask for, or none: the first that cannot be had raises
    PortInUse naming the service and the port (`service web: host port 443/tcp is already in use`).
    `taken`: composer's own rules already in the kernel (another project, a crashed supervisor's);
    those of the containers in `wanted` do not count (they are being re-created).

    `dual_stack`: a port without `host_ip` is also held on "::" (every IPv6 address), with the same
    port number, as Docker publishes it; where the host has no IPv6, or that IPv6 port is taken by
    someone else, only IPv4 is published (the IPv4 port decides; a warning says so)."""
    ours = {c.container for c in wanted}
    kernel: dict[tuple[str, int], tuple[str, IPv4Address | None]] = {
        (r.protocol, r.host_port): (r.container, r.host_ip) for r in taken if r.container not in ours
    }
    given: dict[tuple[str, int], tuple[str, str]] = {}  # (protocol, port) -> (service, host_ip), this call
    reservation = Reservation()
    try:
        for item in sorted(wanted, key=lambda c: c.container):
            requests = port_requests(item.service, item.ports)
            held = HeldPorts(container=item.container, bindings=())
            reservation.held[item.container] = held
            bindings = []
            for request in requests:
                sock, port = _hold_request(request, kernel, given)
                binding = PortBinding(
                    container=item.container,
                    service=item.service,
                    target=request.target,
                    protocol=request.protocol,
                    host_ip=request.host_ip,
                    host_port=port,
                )
                given[(request.protocol, port)] = (item.service, request.host_ip)
                held.sockets[binding] = sock
                bindings.append(binding)
                if dual_stack and request.any_family:
                    twin = _hold_twin(binding)
                    if twin is not None:
                        held.sockets[twin[0]] = twin[1]
                        bindings.append(twin[0])
            held.bindings = tuple(bindings)
    except BaseException:
        reservation.close()
        raise
    return reservation


def _hold_twin(binding: PortBinding) -> tuple[PortBinding, socket.socket] | None:
    """The IPv6 twin of an IPv4 wildcard binding: [::]:P, the same P; None where it cannot be had."""
    twin = dataclasses.replace(binding, host_ip="::")
    try:
        return twin, hold_port(binding.protocol, "::", binding.host_port)
    except OSError as exc:
        if exc.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
            return None  # no IPv6 on this host
        logger().warning(
            "ports.ipv6_not_published", service=binding.service, port=str(twin), error=exc.strerror,
            detail="published on IPv4 only",
        )  # fmt: skip
        return None


def _overlaps(a: str, b: str | None) -> bool:
    """Do two host addresses of one family share ports? (a wildcard overlaps everything)"""
    b = b or ANY4
    if (":" in a) != (":" in b):
        return False
    return a == b or a in (ANY4, "::") or b in (ANY4, "::")


def _hold_request(
    request: PortRequest,
    kernel: Mapping[tuple[str, int], tuple[str, IPv4Address | None]],
    given: Mapping[tuple[str, int], tuple[str, str]],
) -> tuple[socket.socket, int]:
    candidates: Iterator[int] = (
        iter((0,)) if request.ephemeral else iter(range(request.first, request.last + 1))
    )
    last_error = ""
    for port in candidates:
        if port:
            mine = given.get((request.protocol, port))
            if mine is not None and _overlaps(request.host_ip, mine[1]):
                last_error = f"is already taken by service {mine[0]}"
                continue
            other = kernel.get((request.protocol, port))
            if other is not None and _overlaps(request.host_ip, str(other[1]) if other[1] else None):
                last_error = f"is already published by container {other[0]}"
                continue
        try:
            sock = hold_port(request.protocol, request.host_ip, port)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                last_error = "is already in use"
                continue
            if exc.errno == errno.EADDRNOTAVAIL:
                raise PortError(
                    f"service {request.service}: host_ip {request.host_ip} is not an address of this host"
                ) from None
            raise PortError(f"service {request.service}: {request.describe()}: {exc.strerror}") from None
        return sock, sock.getsockname()[1]
    if request.first != request.last:
        raise PortInUse(
            f"service {request.service}: no free host port in {_range(request.first, request.last)}/"
            f"{request.protocol} (the last {last_error.removeprefix('is ')})"
        )
    where = "" if request.host_ip in (ANY4, "::") else f" on {request.host_ip}"
    raise PortInUse(
        f"service {request.service}: host port {request.first}/{request.protocol}{where} {last_error}"
    )


# --- publishing -----------------------------------------------------------------------------------------


def set_route_localnet(bridge: str, proc: Path = Path("/proc/sys/net/ipv4/conf")) -> None:
    """127.0.0.1:P -> a container needs the bridge to route loopback sources (the SYN is dropped
    silently without it). The network manager sets it when it makes the network, and remembers the
    old value for `down` (composer/network/sysctl.py); this only makes sure of it."""
    path = proc / bridge / "route_localnet"
    if path.read_text().strip() != "1":
        path.write_text("1\n")


@dataclass(slots=True)
class PortPublisher:
    """Kernel DNAT for IPv4 host addresses; the userland proxy for IPv6 ones, or for everything with
    `mode="proxy"` (no nftables)."""

    firewall: NftFirewall | None = field(default_factory=NftFirewall)
    mode: str = "dnat"  # dnat | proxy

    async def serve(
        self,
        held: HeldPorts,
        address: IPv4Address,
        bridge: str,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Publish `held` to the container at `address` (on `bridge`) until cancelled; then the rules go.
        The held sockets stay open (a restarted container keeps its ports): `held.close()` frees them."""
        kernel = [b for b in held.bindings if not b.ipv6] if self.mode == "dnat" else []
        proxied = [b for b in held.bindings if b not in kernel]
        if kernel:
            if self.firewall is None:
                raise PortError(f"container {held.container}: kernel DNAT needs nftables")
            await self.publish(held.container, kernel, address, bridge)
        try:
            async with trio.open_nursery() as nursery:
                if proxied:
                    from composer.network.proxy import serve_binding

                    for binding in proxied:
                        await nursery.start(serve_binding, held.sockets[binding], address, binding.target)
                task_status.started()
                await trio.sleep_forever()
        finally:
            if kernel:
                with trio.CancelScope(shield=True):
                    await self.unpublish(held.container)

    async def publish(
        self, container: str, bindings: Sequence[PortBinding], address: IPv4Address, bridge: str
    ) -> None:
        """The DNAT rules of one container (replacing any it had), and route_localnet on its bridge."""
        assert self.firewall is not None
        firewall = self.firewall
        rules = [b.dnat(address) for b in bindings]

        def run() -> None:
            set_route_localnet(bridge)
            firewall.add_ports(container, rules)

        await trio.to_thread.run_sync(run)
        logger().info("ports.published", container=container, ports=[str(b) for b in bindings])

    async def unpublish(self, container: str) -> None:
        """Remove the container's DNAT rules (idempotent; also after a crashed supervisor)."""
        if self.firewall is None:
            return
        try:
            await trio.to_thread.run_sync(self.firewall.remove_ports, container)
        except FirewallError as exc:
            logger().warning("ports.unpublish_failed", container=container, error=str(exc))

    def bindings(self) -> tuple[PortBinding, ...]:
        """Every DNAT-published port in the kernel (any project), for `composer port` and `ps`."""
        if self.firewall is None:
            return ()
        return tuple(PortBinding.from_dnat(rule) for rule in self.firewall.published())
