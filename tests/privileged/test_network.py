"""Networks on the real kernel: bridges, IPAM, busybox containers on veths, egress rules.

Traffic only between netns this test made (containers, and an "outside" netns behind a veth that
stands for the world), never off the machine. Every test removes what it made, even on failure: the
leak fixture checks links and netns; `clean_networks` removes bridges, records and the nft table.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
import trio

from composer.network.bridge import bridge_name, lookup_bridge
from composer.network.firewall import NftFirewall
from composer.network.ipam import Pool
from composer.network.manager import (
    Attachment,
    AttachOptions,
    NetworkConfig,
    NetworkHandle,
    NetworkManager,
    NetworkNotFound,
)
from composer.runtime.launch import Container, ExitStatus, Runtime
from composer.runtime.spec import ContainerSpec, Stdio
from composer.storage.layout import Layout
from tests.privileged.conftest import BUSYBOX

# A pool far from anything a host usually routes, so tests never take a real subnet.
TEST_POOLS = (Pool(IPv4Network("10.213.0.0/16"), 24),)


def _nft_table() -> str:
    done = subprocess.run(["nft", "list", "table", "ip", "composer"], capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else ""


@pytest.fixture
def ip_forward() -> Iterator[None]:
    """Egress needs net.ipv4.ip_forward=1 (the manager turns it on, like dockerd); put it back."""
    path = Path("/proc/sys/net/ipv4/ip_forward")
    before = path.read_text()
    yield
    path.write_text(before)


@pytest.fixture
def manager(layout: Layout, ip_forward: None) -> Iterator[NetworkManager]:
    if not NftFirewall().available():
        pytest.skip("nft (nftables) is not installed")
    assert not _nft_table(), "a composer nft table is already on this host; refusing to touch it"
    mgr = NetworkManager(layout.root, pools=TEST_POOLS)
    yield mgr

    async def clean() -> None:
        for record in mgr.networks():
            for container, _ in record.addresses:
                await mgr.release(container)
            await mgr.remove_network_if_unused(record.name)

    trio.run(clean)
    NftFirewall().remove_all()


@pytest.fixture
def spec(busybox_rootfs: Path) -> ContainerSpec:
    return ContainerSpec(id="n1", lower_dirs=(busybox_rootfs,), argv=("sleep", "300"))


@asynccontextmanager
async def running(
    runtime: Runtime,
    manager: NetworkManager,
    spec: ContainerSpec,
    networks: Sequence[tuple[NetworkHandle, AttachOptions | None]],
    attachments: list[Attachment],
) -> AsyncIterator[Container]:
    """A container attached to `networks` from the runtime's before_go hook; killed, reaped and its
    veths gone (lazy teardown, waited for) on the way out."""

    async def before_go(pid: int) -> None:
        attachments.append(await manager.attach(spec.id, pid, networks))

    container = await runtime.start(spec, before_go=before_go)
    try:
        yield container
    finally:
        await container.kill_and_reap()
        runtime.remove(spec.id)
        with trio.CancelScope(shield=True):
            for attachment in attachments:
                if attachment.container == spec.id:
                    await manager.detach(attachment, wait=True)


async def output(runtime: Runtime, container: Container, *argv: str) -> tuple[ExitStatus, str]:
    read_end, write_end = os.pipe()
    try:
        status = await runtime.exec(container, argv, stdio=Stdio(stdout=write_end, stderr=write_end))
    finally:
        os.close(write_end)
    with os.fdopen(read_end, "rb") as handle:
        return status, handle.read().decode()


async def check(runtime: Runtime, container: Container, *argv: str) -> str:
    status, out = await output(runtime, container, *argv)
    assert status == ExitStatus(0), f"{argv}: {out}"
    return out


# --- tests ------------------------------------------------------------------------------------------------


def test_two_containers_on_one_network_ping_each_other(
    runtime: Runtime, manager: NetworkManager, spec: ContainerSpec
) -> None:
    attachments: list[Attachment] = []

    async def main() -> None:
        net = await manager.ensure_network(NetworkConfig(name="proj_default"))
        assert net.bridge == bridge_name("proj_default") and len(net.bridge) <= 15
        info = lookup_bridge(net.bridge)
        assert info is not None and info.alias == "composer:proj_default"
        assert [str(a) for a in info.addresses] == [f"{net.gateway}/{net.subnet.prefixlen}"]
        async with (
            running(runtime, manager, spec, [(net, None)], attachments) as one,
            running(runtime, manager, replace(spec, id="n2"), [(net, None)], attachments) as two,
        ):
            first, second = (a.addresses["proj_default"] for a in attachments)
            assert first != second and first in net.subnet and second in net.subnet
            await check(runtime, one, "ping", "-c", "1", "-W", "5", str(second))
            await check(runtime, two, "ping", "-c", "1", "-W", "5", str(first))
            routes = await check(runtime, one, "ip", "route")
            assert f"default via {net.gateway} dev eth0" in routes
            links = await check(runtime, one, "ls", "/sys/class/net")
            assert links.split() == ["eth0", "lo"]
            sysctl = await check(runtime, one, "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start")
            assert sysctl.strip() == "0"

    trio.run(main)


def test_internal_network_has_no_default_route_and_no_masquerade(
    runtime: Runtime, manager: NetworkManager, spec: ContainerSpec
) -> None:
    attachments: list[Attachment] = []

    async def main() -> None:
        net = await manager.ensure_network(NetworkConfig(name="proj_back", internal=True))
        assert net.internal
        table = _nft_table()
        assert f'"{net.bridge}"' in table and str(net.subnet) not in table  # no masquerade entry
        async with running(runtime, manager, spec, [(net, None)], attachments) as one:
            routes = await check(runtime, one, "ip", "route")
            assert "default" not in routes and str(net.subnet) in routes

    trio.run(main)


def test_two_networks_give_eth0_and_eth1_and_priority_orders_them(
    runtime: Runtime, manager: NetworkManager, spec: ContainerSpec
) -> None:
    attachments: list[Attachment] = []

    async def main() -> None:
        front = await manager.ensure_network(NetworkConfig(name="proj_front", mtu=1400))
        back = await manager.ensure_network(NetworkConfig(name="proj_back", internal=True))
        assert front.subnet != back.subnet
        nets = [(back, AttachOptions(priority=0)), (front, AttachOptions(priority=10))]
        async with (
            running(runtime, manager, spec, nets, attachments) as one,
            running(runtime, manager, replace(spec, id="n2"), [(back, None)], attachments) as two,
        ):
            addresses = attachments[0].addresses
            out = await check(runtime, one, "ip", "-o", "-4", "addr")
            assert f"eth0    inet {addresses['proj_front']}/" in out
            assert f"eth1    inet {addresses['proj_back']}/" in out
            mtu = await check(runtime, one, "cat", "/sys/class/net/eth0/mtu")
            assert mtu.strip() == "1400"
            routes = await check(runtime, one, "ip", "route")
            assert f"default via {front.gateway} dev eth0" in routes  # the internal one gives none
            # the second container, on `back` only, reaches the first through eth1
            await check(runtime, two, "ping", "-c", "1", "-W", "5", str(addresses["proj_back"]))

    trio.run(main)


def test_containers_on_different_networks_cannot_reach_each_other(
    runtime: Runtime, manager: NetworkManager, spec: ContainerSpec
) -> None:
    attachments: list[Attachment] = []

    async def main() -> None:
        a = await manager.ensure_network(NetworkConfig(name="proj_a"))
        b = await manager.ensure_network(NetworkConfig(name="proj_b"))
        async with (
            running(runtime, manager, spec, [(a, None)], attachments) as one,
            running(runtime, manager, replace(spec, id="n2"), [(b, None)], attachments),
        ):
            target = attachments[1].addresses["proj_b"]
            status, out = await output(runtime, one, "ping", "-c", "1", "-W", "1", str(target))
            assert status != ExitStatus(0), out

    trio.run(main)


def test_restart_keeps_the_address_and_release_gives_it_back(
    runtime: Runtime, manager: NetworkManager, spec: ContainerSpec
) -> None:
    attachments: list[Attachment] = []

    async def main() -> None:
        net = await manager.ensure_network(NetworkConfig(name="proj_default"))
        async with running(runtime, manager, spec, [(net, None)], attachments):
            pass
        async with running(runtime, manager, spec, [(net, None)], attachments) as again:
            out = await check(runtime, again, "ip", "-o", "-4", "addr", "show", "eth0")
            assert f"inet {attachments[0].addresses['proj_default']}/" in out
        assert attachments[0].addresses == attachments[1].addresses
        assert not await manager.remove_network_if_unused(net)  # n1 still holds its address
        await manager.release(spec.id)
        assert await manager.remove_network_if_unused(net)
        assert lookup_bridge(net.bridge) is None
        assert not _nft_table()

    trio.run(main)


def test_static_address_and_ipam_config(
    runtime: Runtime, manager: NetworkManager, spec: ContainerSpec
) -> None:
    attachments: list[Attachment] = []

    async def main() -> None:
        config = NetworkConfig(
            name="proj_static", subnet="10.213.77.0/24", gateway="10.213.77.254", ip_range="10.213.77.128/25"
        )
        net = await manager.ensure_network(config)
        assert net.gateway == IPv4Address("10.213.77.254")
        async with (
            running(
                runtime, manager, spec, [(net, AttachOptions(ipv4_address="10.213.77.9"))], attachments
            ) as one,
            running(runtime, manager, replace(spec, id="n2"), [(net, None)], attachments),
        ):
            assert attachments[0].addresses["proj_static"] == IPv4Address("10.213.77.9")
            assert attachments[1].addresses["proj_static"] == IPv4Address("10.213.77.128")  # ip_range start
            await check(runtime, one, "ping", "-c", "1", "-W", "5", "10.213.77.128")
            await check(runtime, one, "ping", "-c", "1", "-W", "5", "10.213.77.254")  # the gateway

    trio.run(main)


def test_ipam_skips_a_subnet_already_on_the_host(layout: Layout, manager: NetworkManager) -> None:
    """Like docker0 holding 172.17.0.0/16: a bridge that is not composer's holds the first subnet."""
    subprocess.run(["ip", "link", "add", "tdocker0", "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", "10.213.0.1/16", "dev", "tdocker0"], check=True)
        docker_like = NetworkManager(
            layout.root,
            pools=(Pool(IPv4Network("10.213.0.0/16"), 16), Pool(IPv4Network("10.214.0.0/16"), 16)),
        )

        async def main() -> NetworkHandle:
            return await docker_like.ensure_network(NetworkConfig(name="proj_default", internal=True))

        net = trio.run(main)
        assert net.subnet == IPv4Network("10.214.0.0/16")
    finally:
        subprocess.run(["ip", "link", "del", "tdocker0"], check=True)


def test_default_pools_skip_routed_subnets(layout: Layout, manager: NetworkManager) -> None:
    """With Docker's default pools, the chosen subnet overlaps no route or address of this host."""
    from composer.network.bridge import host_networks

    default = NetworkManager(layout.root)

    async def main() -> NetworkHandle:
        return await default.ensure_network(NetworkConfig(name="proj_pool", internal=True))

    host = host_networks()
    net = trio.run(main)
    assert not any(net.subnet.overlaps(n) for n in host)
    assert net.subnet.subnet_of(IPv4Network("172.16.0.0/12")) or net.subnet.subnet_of(
        IPv4Network("192.168.0.0/16")
    )


def test_external_network_is_looked_up_never_created(manager: NetworkManager) -> None:
    async def missing() -> None:
        await manager.ensure_network(NetworkConfig(name="nowhere_net", external=True))

    with pytest.raises(NetworkNotFound, match="nowhere_net"):
        trio.run(missing)
    assert lookup_bridge(bridge_name("nowhere_net")) is None

    subprocess.run(["ip", "link", "add", "textnet0", "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", "10.213.200.1/24", "dev", "textnet0"], check=True)

        async def found() -> None:
            net = await manager.ensure_network(NetworkConfig(name="textnet0", external=True))
            assert net.external and net.bridge == "textnet0" and net.subnet == IPv4Network("10.213.200.0/24")
            assert await manager.remove_network_if_unused(net)  # the record only

        trio.run(found)
        assert lookup_bridge("textnet0") is not None  # never removed by composer
    finally:
        subprocess.run(["ip", "link", "del", "textnet0"], check=True)


OUTSIDE_NS = "composer-test-outside"
OUTSIDE_HOST, OUTSIDE_PEER = "10.213.250.1", "10.213.250.2"


@pytest.fixture
def outside() -> Iterator[str]:
    """A netns behind a veth standing for "the world": 10.213.250.2, with no route back to any
    container subnet, so a container's ping gets an answer only if it was masqueraded."""
    subprocess.run(["ip", "netns", "add", OUTSIDE_NS], check=True)
    try:
        subprocess.run(
            ["ip", "link", "add", "tout0", "type", "veth", "peer", "name", "eth0", "netns", OUTSIDE_NS],
            check=True,
        )
        for cmd in (
            ["ip", "addr", "add", f"{OUTSIDE_HOST}/30", "dev", "tout0"],
            ["ip", "link", "set", "tout0", "up"],
            ["ip", "-n", OUTSIDE_NS, "addr", "add", f"{OUTSIDE_PEER}/30", "dev", "eth0"],
            ["ip", "-n", OUTSIDE_NS, "link", "set", "eth0", "up"],
            ["ip", "-n", OUTSIDE_NS, "link", "set", "lo", "up"],
        ):
            subprocess.run(cmd, check=True)
        yield OUTSIDE_PEER
    finally:
        subprocess.run(["ip", "link", "del", "tout0"], check=False)
        subprocess.run(["ip", "netns", "del", OUTSIDE_NS], check=True)


def test_egress_is_masqueraded_and_internal_gets_none(
    runtime: Runtime, manager: NetworkManager, spec: ContainerSpec, outside: str
) -> None:
    attachments: list[Attachment] = []

    async def main() -> None:
        net = await manager.ensure_network(NetworkConfig(name="proj_egress"))
        assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "1"
        table = _nft_table()
        assert "ip saddr @egress_nets oifname != @bridges masquerade" in table
        assert str(net.subnet) in table and f"chain net-{net.bridge}" in table
        async with running(runtime, manager, spec, [(net, None)], attachments) as one:
            await check(runtime, one, "ping", "-c", "1", "-W", "5", outside)
        internal = await manager.ensure_network(NetworkConfig(name="proj_closed", internal=True))
        async with running(runtime, manager, replace(spec, id="n2"), [(internal, None)], attachments) as two:
            status, out = await output(runtime, two, "ping", "-c", "1", "-W", "1", outside)
            assert status != ExitStatus(0), out
        for handle in (net, internal):
            await manager.release("n1")
            await manager.release("n2")
            assert await manager.remove_network_if_unused(handle)
        assert not _nft_table()

    trio.run(main)


def test_host_reaches_container_and_teardown_leaves_nothing(
    runtime: Runtime, manager: NetworkManager, spec: ContainerSpec
) -> None:
    attachments: list[Attachment] = []

    async def main() -> None:
        net = await manager.ensure_network(NetworkConfig(name="proj_default"))
        async with running(runtime, manager, spec, [(net, None)], attachments):
            address = attachments[0].addresses["proj_default"]
            done = subprocess.run(
                [BUSYBOX, "ping", "-c", "1", "-W", "5", str(address)], capture_output=True, text=True
            )
            assert done.returncode == 0, done.stdout + done.stderr
            host_link = attachments[0].host_links[0]
            assert Path(f"/sys/class/net/{host_link}/master").resolve().name == net.bridge
        assert not Path(f"/sys/class/net/{host_link}").exists()
        await manager.release(spec.id)
        assert await manager.remove_network_if_unused(net)
        assert not Path(f"/sys/class/net/{net.bridge}").exists()

    trio.run(main)


def test_pinned_netns_is_dropped_by_detach(
    runtime: Runtime, manager: NetworkManager, spec: ContainerSpec
) -> None:
    async def main() -> None:
        net = await manager.ensure_network(NetworkConfig(name="proj_default", internal=True))
        attachments: list[Attachment] = []

        async def before_go(pid: int) -> None:
            attachments.append(
                await manager.attach(spec.id, pid, [(net, None)], pin_name="composer-test-pin")
            )

        container = await runtime.start(spec, before_go=before_go)
        try:
            assert attachments[0].netns_path == "/run/netns/composer-test-pin"
            container.signal(signal.SIGKILL)
            await container.wait()
            # the pin keeps the netns (and the veth) alive after the process is gone
            assert Path(f"/sys/class/net/{attachments[0].host_links[0]}").exists()
        finally:
            await container.kill_and_reap()
            runtime.remove(spec.id)
            if attachments:
                await manager.detach(attachments[0], release=True, wait=True)
        assert not Path("/run/netns/composer-test-pin").exists()

    trio.run(main)
