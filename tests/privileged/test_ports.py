"""Published ports on the real kernel: busybox `nc -ll` in a container on a test network, reached
from the host through 127.0.0.1 (composer's DNAT and route_localnet), through the bridge's gateway
address (a host address this test made), and from another container (hairpin); UDP through a
socket the test serves in the container's netns; a range; an ephemeral port; a port in use found
before anything starts; IPv6 ::1 through the userland proxy. Every rule, socket and process goes
(the leak fixture checks nft tables, links, netns and processes).
"""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from composer.network.dns import run_in_netns
from composer.network.firewall import NftFirewall
from composer.network.manager import Attachment, NetworkConfig, NetworkHandle, NetworkManager
from composer.network.ports import ContainerPorts, HeldPorts, PortInUse, PortPublisher, lookup, reserve
from composer.runtime.launch import Container, Runtime
from composer.runtime.spec import ContainerSpec
from composer.spec.model import Port
from composer.spec.normalize import parse_port
from composer.storage.layout import Layout
from tests.privileged.test_network import TEST_POOLS, _nft_table, check, running

HELLO = ("nc", "-ll", "-p", "80", "-e", "echo", "hello")


@pytest.fixture
def manager(layout: Layout) -> Iterator[NetworkManager]:
    if not NftFirewall().available():
        pytest.skip("nft (nftables) is not installed")
    assert not _nft_table(), "a composer nft table is already on this host; refusing to touch it"
    forward = Path("/proc/sys/net/ipv4/ip_forward")
    before = forward.read_text()
    mgr = NetworkManager(layout.root, pools=TEST_POOLS)
    try:
        yield mgr

        async def clean() -> None:
            for record in mgr.networks():
                for container, _ in record.addresses:
                    await mgr.release(container)
                await mgr.remove_network_if_unused(record.name)

        trio.run(clean)
    finally:
        NftFirewall().remove_all()
        forward.write_text(before)


@pytest.fixture
def spec(busybox_rootfs: Path) -> ContainerSpec:
    return ContainerSpec(id="p1", lower_dirs=(busybox_rootfs,), argv=HELLO)


def short(*specs: str) -> list[Port]:
    return [p for s in specs for p in parse_port(s)]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def fetch(host: str, port: int, deadline: float = 10.0) -> bytes:
    """Connect (retrying while the server is not listening yet, bounded) and read to EOF."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    end = time.monotonic() + deadline
    while True:
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.settimeout(3)
                sock.connect((host, port))
                chunks = []
                while chunk := sock.recv(4096):
                    chunks.append(chunk)
                data = b"".join(chunks)
                if data:
                    return data
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.ECONNRESET) or time.monotonic() > end:
                raise
        if time.monotonic() > end:
            return b""
        time.sleep(0.05)


async def afetch(host: str, port: int) -> bytes:
    return await trio.to_thread.run_sync(fetch, host, port)


def pub_chains() -> list[str]:
    return [line.split()[1] for line in _nft_table().splitlines() if line.strip().startswith("chain pub-")]


async def published(
    nursery: trio.Nursery,
    publisher: PortPublisher,
    held: HeldPorts,
    attachment: Attachment,
    net: NetworkHandle,
) -> trio.CancelScope:
    """Publish `held` in its own cancel scope (cancelled: the rules go)."""
    scope = trio.CancelScope()

    async def serve(task_status: trio.TaskStatus[None]) -> None:
        with scope:
            await publisher.serve(held, attachment.addresses[net.name], net.bridge, task_status=task_status)

    await nursery.start(serve)
    return scope


# --- tests ----------------------------------------------------------------------------------------------


def test_tcp_port_from_loopback_gateway_and_another_container(
    runtime: Runtime, manager: NetworkManager, spec: ContainerSpec
) -> None:
    port = free_port()
    attachments: list[Attachment] = []
    publisher = PortPublisher()

    async def main() -> None:
        net = await manager.ensure_network(NetworkConfig(name="proj_default"))
        elsewhere = await manager.ensure_network(NetworkConfig(name="proj_other"))
        sleeper = replace(spec, argv=("sleep", "300"))
        with reserve([ContainerPorts(container="proj-web-1", service="web", ports=short(f"{port}:80"))]) as r:
            held = r.take("proj-web-1")
            async with (
                running(runtime, manager, spec, [(net, None)], attachments),
                running(runtime, manager, replace(sleeper, id="p2"), [(net, None)], attachments) as other,
                running(runtime, manager, replace(sleeper, id="p3"), [(elsewhere, None)], attachments) as far,
                trio.open_nursery() as nursery,
            ):
                scope = await published(nursery, publisher, held, attachments[0], net)
                assert Path(f"/proc/sys/net/ipv4/conf/{net.bridge}/route_localnet").read_text().strip() == "1"
                assert await afetch("127.0.0.1", port) == b"hello\n"
                assert await afetch(str(net.gateway), port) == b"hello\n"  # a host address, not loopback
                # hairpin: a container on the same bridge, through the host's address
                out = await check(runtime, other, "nc", "-w", "5", str(net.gateway), str(port))
                assert out == "hello\n"
                # a container of another network, through its own gateway (published ports are public)
                out = await check(runtime, far, "nc", "-w", "5", str(elsewhere.gateway), str(port))
                assert out == "hello\n"
                assert lookup(publisher.bindings(), "proj-web-1", 80) == [f"0.0.0.0:{port}"]
                assert pub_chains() == ["pub-proj-web-1"]
                scope.cancel()
            assert pub_chains() == [] and publisher.bindings() == ()
            assert "tcp . " not in _nft_table()  # no map element left
            with pytest.raises(OSError):  # still held: the port is composer's until released
                socket.create_server(("127.0.0.1", port)).close()
            held.close()
        socket.create_server(("127.0.0.1", port)).close()

    trio.run(main)


def test_udp_port_reaches_a_socket_in_the_container(
    runtime: Runtime, manager: NetworkManager, spec: ContainerSpec
) -> None:
    attachments: list[Attachment] = []
    publisher = PortPublisher()

    async def main() -> None:
        net = await manager.ensure_network(NetworkConfig(name="proj_default"))
        sleeper = replace(spec, argv=("sleep", "300"))
        wanted = [ContainerPorts(container="proj-dns-1", service="dns", ports=short("127.0.0.1::53/udp"))]
        with reserve(wanted) as r:
            held = r.take("proj-dns-1")
            (binding,) = held.bindings
            async with running(runtime, manager, sleeper, [(net, None)], attachments) as box:
                echo = await run_in_netns(f"/proc/{box.pid}/ns/net", lambda: _udp_socket(53))
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_udp_echo, trio.socket.from_stdlib_socket(echo))
                    scope = await published(nursery, publisher, held, attachments[0], net)
                    reply = await trio.to_thread.run_sync(_udp_ask, binding.host_port)
                    assert reply == b"ECHO ping"
                    scope.cancel()
                    nursery.cancel_scope.cancel()
            assert pub_chains() == []
            held.close()

    trio.run(main)


def _udp_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    sock.bind(("0.0.0.0", port))
    return sock


async def _udp_echo(sock: trio.socket.SocketType) -> None:
    with sock:
        while True:
            data, peer = await sock.recvfrom(2048)
            await sock.sendto(b"ECHO " + data, peer)


def _udp_ask(port: int, host: str = "127.0.0.1", family: int = socket.AF_INET) -> bytes:
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1)
        for _ in range(5):  # bounded retries: UDP may race the rules being ready
            sock.sendto(b"ping", (host, port))
            try:
                data, peer = sock.recvfrom(2048)
            except TimeoutError:
                continue
            assert peer[1] == port  # the reply comes from the published port
            return data
    return b""


def test_range_and_ephemeral_ports(runtime: Runtime, manager: NetworkManager, spec: ContainerSpec) -> None:
    attachments: list[Attachment] = []
    publisher = PortPublisher()
    blocker = socket.create_server(("127.0.0.1", 0))
    base = blocker.getsockname()[1]

    async def main() -> None:
        net = await manager.ensure_network(NetworkConfig(name="proj_default"))
        ports = [Port(target=80, published=f"{base}-{base + 20}", host_ip="127.0.0.1"), Port(target=80)]
        with reserve([ContainerPorts(container="proj-web-1", service="web", ports=ports)]) as r:
            held = r.take("proj-web-1")
            ranged, ephemeral = held.bindings
            assert base < ranged.host_port <= base + 20  # the first one was in use
            assert ephemeral.host_ip == "0.0.0.0" and ephemeral.host_port > 0
            async with (
                running(runtime, manager, spec, [(net, None)], attachments),
                trio.open_nursery() as nursery,
            ):
                scope = await published(nursery, publisher, held, attachments[0], net)
                assert await afetch("127.0.0.1", ranged.host_port) == b"hello\n"
                assert await afetch("127.0.0.1", ephemeral.host_port) == b"hello\n"
                assert lookup(publisher.bindings(), "proj-web-1", 80) == sorted(
                    [f"127.0.0.1:{ranged.host_port}", f"0.0.0.0:{ephemeral.host_port}"]
                )
                scope.cancel()
            held.close()
        assert pub_chains() == []

    try:
        trio.run(main)
    finally:
        blocker.close()


def test_a_port_in_use_is_reported_before_anything_starts(
    runtime: Runtime, manager: NetworkManager, spec: ContainerSpec
) -> None:
    started: list[Container] = []

    async def up() -> None:
        # what `up` does: every host port first, then networks and containers
        wanted = [
            ContainerPorts(container="proj-api-1", service="api", ports=short("127.0.0.1::8080")),
            ContainerPorts(container="proj-web-1", service="web", ports=short(f"{busy}:443")),
        ]
        with reserve(wanted):
            net = await manager.ensure_network(NetworkConfig(name="proj_default"))
            async with running(runtime, manager, spec, [(net, None)], []) as container:
                started.append(container)

    with socket.create_server(("0.0.0.0", 0)) as listener:
        busy = listener.getsockname()[1]
        with pytest.raises(PortInUse) as caught:
            trio.run(up)
    assert str(caught.value) == f"service web: host port {busy}/tcp is already in use"
    assert started == [] and manager.networks() == () and not _nft_table()


def test_rules_of_a_crashed_supervisor_are_removed_by_the_next(
    runtime: Runtime, manager: NetworkManager, spec: ContainerSpec
) -> None:
    attachments: list[Attachment] = []
    port = free_port()

    async def main() -> None:
        net = await manager.ensure_network(NetworkConfig(name="proj_default"))
        async with running(runtime, manager, spec, [(net, None)], attachments):
            with reserve(
                [ContainerPorts(container="proj-web-1", service="web", ports=short(f"{port}:80"))]
            ) as r:
                bindings = r.take("proj-web-1").bindings
            # the rules without their holder (as after a crash): the port is refused to others by
            # `taken`, and the next supervisor's cleanup removes them
            crashed = PortPublisher()
            await crashed.publish("proj-web-1", bindings, attachments[0].addresses[net.name], net.bridge)
            assert await afetch("127.0.0.1", port) == b"hello\n"
            again = [ContainerPorts(container="proj-other-1", service="other", ports=short(f"{port}:80"))]
            with pytest.raises(PortInUse, match="already published by container proj-web-1"):
                reserve(again, taken=NftFirewall().published())
            await PortPublisher().unpublish("proj-web-1")
            await PortPublisher().unpublish("proj-web-1")  # idempotent
            assert pub_chains() == [] and PortPublisher().bindings() == ()

    trio.run(main)


def test_ipv6_loopback_goes_through_the_proxy(
    runtime: Runtime, manager: NetworkManager, spec: ContainerSpec
) -> None:
    attachments: list[Attachment] = []
    publisher = PortPublisher()

    async def main() -> None:
        net = await manager.ensure_network(NetworkConfig(name="proj_default"))
        ports = [Port(target=80, host_ip="::1"), Port(target=80, host_ip="127.0.0.1")]
        with reserve([ContainerPorts(container="proj-web-1", service="web", ports=ports)]) as r:
            held = r.take("proj-web-1")
            six, four = held.bindings
            async with (
                running(runtime, manager, spec, [(net, None)], attachments),
                trio.open_nursery() as nursery,
            ):
                scope = await published(nursery, publisher, held, attachments[0], net)
                assert await afetch("::1", six.host_port) == b"hello\n"
                assert await afetch("127.0.0.1", four.host_port) == b"hello\n"
                # only the IPv4 one is a kernel rule
                assert [b.host_port for b in publisher.bindings()] == [four.host_port]
                scope.cancel()
            held.close()

    trio.run(main)


def test_proxy_mode_serves_tcp_and_udp(
    runtime: Runtime, manager: NetworkManager, spec: ContainerSpec
) -> None:
    """`mode="proxy"` (no kernel rules at all): the held sockets listen and forward."""
    attachments: list[Attachment] = []
    publisher = PortPublisher(firewall=None, mode="proxy")

    async def main() -> None:
        net = await manager.ensure_network(NetworkConfig(name="proj_default"))
        ports = short("127.0.0.1::80", "127.0.0.1::53/udp")
        with reserve([ContainerPorts(container="proj-web-1", service="web", ports=ports)]) as r:
            held = r.take("proj-web-1")
            tcp, udp = held.bindings
            async with running(runtime, manager, spec, [(net, None)], attachments) as box:
                echo = await run_in_netns(f"/proc/{box.pid}/ns/net", lambda: _udp_socket(53))
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_udp_echo, trio.socket.from_stdlib_socket(echo))
                    scope = await published(nursery, publisher, held, attachments[0], net)
                    assert await afetch("127.0.0.1", tcp.host_port) == b"hello\n"
                    assert await trio.to_thread.run_sync(_udp_ask, udp.host_port) == b"ECHO ping"
                    assert pub_chains() == []
                    scope.cancel()
                    nursery.cancel_scope.cancel()
            held.close()

    trio.run(main)
