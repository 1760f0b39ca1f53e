"""The embedded DNS server on the real kernel: served inside netns this test makes, asked from inside.

No query leaves the machine: the upstream resolver is a small dnslib server the test runs on
127.0.0.1:53 inside another netns it made.
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import trio
from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from composer.network.dns import (
    DnsError,
    DnsServer,
    Endpoint,
    NameTables,
    Upstream,
    bind_dns_sockets,
    run_in_netns,
    serve_dns,
    udp_payload,
)
from composer.network.hosts import hosts_file, resolv_conf, rewrite_in_place
from composer.runtime.forkserver import ForkServer
from composer.runtime.launch import ExitStatus, Runtime
from composer.runtime.spec import ContainerSpec, Network, Stdio
from composer.storage.layout import Layout

NET = "proj_default"
SAFETY = 10.0  # seconds: a hung test fails instead of hanging; never a timing assertion


# -- netns and clients -----------------------------------------------------------------------------------


@pytest.fixture
def make_netns() -> Iterator[list[str]]:
    """`make_netns.append`-style: call `new_netns(made)` to get a fresh netns path with `lo` up."""
    made: list[str] = []
    yield made
    for name in made:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def new_netns(made: list[str]) -> str:
    name = f"composer-dns-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    made.append(name)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    return f"/run/netns/{name}"


async def ask(
    netns: str, name: str, qtype: str = "A", *, tcp: bool = False, server: str = "127.0.0.11", port: int = 53
) -> DNSRecord:
    """One query from a socket made inside `netns`."""
    query = DNSRecord.question(name, qtype)
    data = query.pack()
    kind = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
    raw = await run_in_netns(netns, lambda: socket.socket(socket.AF_INET, kind))
    with trio.fail_after(SAFETY), trio.socket.from_stdlib_socket(raw) as sock:
        await sock.connect((server, port))
        if tcp:
            await sock.send(len(data).to_bytes(2, "big") + data)
            buf = b""
            while len(buf) < 2 or len(buf) < 2 + int.from_bytes(buf[:2], "big"):
                chunk = await sock.recv(65535)
                assert chunk, "server closed the connection"
                buf += chunk
            reply = DNSRecord.parse(buf[2:])
        else:
            await sock.send(data)
            reply = DNSRecord.parse(await sock.recv(65535))
    assert reply.header.id == query.header.id
    return reply


def ips(reply: DNSRecord) -> list[str]:
    assert reply.header.rcode == RCODE.NOERROR, reply
    return [str(rr.rdata) for rr in reply.rr]


def ep(cid: str, name: str, service: str, ip: str, *aliases: str) -> Endpoint:
    return Endpoint(
        container_id=cid, container_name=name, service=service, aliases=aliases, address=IPv4Address(ip)
    )


def project_tables() -> NameTables:
    tables = NameTables()
    table = tables.table(NET)
    table.add(ep("c1", "proj-web-1", "web", "172.30.0.2", "www"))
    table.add(ep("c2", "proj-web-2", "web", "172.30.0.3", "www"))
    table.add(ep("c3", "proj-db-1", "db", "172.30.0.4", "database"))
    tables.table("proj_other").add(ep("c9", "proj-other-1", "other", "172.31.0.9"))
    return tables


# -- a fake upstream resolver ----------------------------------------------------------------------------


@dataclass
class FakeUpstream:
    """Answers A of any name with 192.0.2.1, `big.example` with 100 addresses; never answers `slow.*`;
    NXDOMAIN under `corp.example` (the search domain busybox's nslookup tries first); other types empty."""

    seen: list[str] = field(default_factory=list)

    def reply(self, query: DNSRecord) -> DNSRecord | None:
        name = str(query.q.qname)
        self.seen.append(name)
        if name.startswith("slow."):
            return None
        reply = query.reply()
        if name.endswith(".corp.example."):
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        if query.q.qtype != QTYPE.A:
            return reply
        count = 100 if name == "big.example." else 1
        for i in range(count):
            reply.add_answer(RR(query.q.qname, QTYPE.A, ttl=60, rdata=A(f"192.0.2.{i + 1}")))
        return reply

    async def serve(
        self, netns: str, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        udp_raw, tcp_raw = await run_in_netns(netns, lambda: bind_dns_sockets("127.0.0.1", 53))
        with trio.socket.from_stdlib_socket(udp_raw) as udp, trio.socket.from_stdlib_socket(tcp_raw) as tcp:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._udp, udp)
                nursery.start_soon(self._tcp, tcp, nursery)
                task_status.started()

    async def _udp(self, sock: trio.socket.SocketType) -> None:
        while True:
            data, peer = await sock.recvfrom(65535)
            query = DNSRecord.parse(data)
            reply = self.reply(query)
            if reply is not None:
                await sock.sendto(udp_payload(reply, query), peer)

    async def _tcp(self, listener: trio.socket.SocketType, nursery: trio.Nursery) -> None:
        while True:
            conn, _ = await listener.accept()
            nursery.start_soon(self._tcp_one, conn)

    async def _tcp_one(self, conn: trio.socket.SocketType) -> None:
        with conn:
            buf = b""
            while len(buf) < 2 or len(buf) < 2 + int.from_bytes(buf[:2], "big"):
                chunk = await conn.recv(65535)
                if not chunk:
                    return
                buf += chunk
            query = DNSRecord.parse(buf[2:])
            reply = self.reply(query)
            if reply is not None:
                out = reply.pack()
                await conn.send(len(out).to_bytes(2, "big") + out)


# -- names --------------------------------------------------------------------------------------------------


def test_names_ptr_nxdomain_udp_and_tcp(make_netns: list[str]) -> None:
    netns = new_netns(make_netns)
    tables = project_tables()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            server: DnsServer = await nursery.start(serve_dns, netns, tables.view([NET]), ())
            assert sorted(ips(await ask(netns, "web"))) == ["172.30.0.2", "172.30.0.3"]
            assert ips(await ask(netns, "proj-web-2")) == ["172.30.0.3"]
            assert ips(await ask(netns, "proj-db-1.proj_default")) == ["172.30.0.4"]
            assert ips(await ask(netns, "DATABASE")) == ["172.30.0.4"]
            assert sorted(ips(await ask(netns, "www"))) == ["172.30.0.2", "172.30.0.3"]
            assert ips(await ask(netns, "web", "AAAA")) == []
            assert ips(await ask(netns, "4.0.30.172.in-addr.arpa", "PTR")) == ["proj-db-1.proj_default."]
            assert (await ask(netns, "nosuch")).header.rcode == RCODE.NXDOMAIN
            assert (await ask(netns, "other")).header.rcode == RCODE.NXDOMAIN  # not on this network
            # no upstream (an internal network): whatever is not ours fails fast
            assert (await ask(netns, "example.com")).header.rcode == RCODE.SERVFAIL
            assert ips(await ask(netns, "db", tcp=True)) == ["172.30.0.4"]
            assert sorted(ips(await ask(netns, "web", tcp=True))) == ["172.30.0.2", "172.30.0.3"]
            assert server.queries == 12 and server.local == 11
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_round_robin_truncation_and_tcp_for_a_large_service(make_netns: list[str]) -> None:
    netns = new_netns(make_netns)
    tables = NameTables()
    for i in range(100):
        tables.table(NET).add(ep(f"c{i}", f"proj-big-{i + 1}", "big", f"172.30.1.{i + 1}"))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_dns, netns, tables.view([NET]), ())
            udp = await ask(netns, "big")
            assert udp.header.tc == 1 and not udp.rr
            first = ips(await ask(netns, "big", tcp=True))
            second = ips(await ask(netns, "big", tcp=True))
            assert len(first) == 100 and sorted(first) == sorted(second) and first != second
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_changes_are_seen_at_once_and_each_container_sees_its_networks(make_netns: list[str]) -> None:
    front, both = new_netns(make_netns), new_netns(make_netns)
    tables = project_tables()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_dns, front, tables.view([NET]), ())
            await nursery.start(serve_dns, both, tables.view(["proj_other", NET]), ())
            assert (await ask(front, "other")).header.rcode == RCODE.NXDOMAIN
            assert ips(await ask(both, "other")) == ["172.31.0.9"]
            assert ips(await ask(both, "db")) == ["172.30.0.4"]

            tables.table(NET).add(ep("c3", "proj-db-1", "db", "172.30.0.40"))  # recreated, new address
            tables.table(NET).add(ep("c4", "proj-cache-1", "cache", "172.30.0.5"))  # started
            assert ips(await ask(front, "db")) == ["172.30.0.40"]
            assert ips(await ask(both, "cache")) == ["172.30.0.5"]
            assert (await ask(front, "database")).header.rcode == RCODE.NXDOMAIN  # alias dropped
            tables.remove_container("c1")  # stopped
            assert ips(await ask(front, "web")) == ["172.30.0.3"]
            assert (await ask(both, "proj-web-1")).header.rcode == RCODE.NXDOMAIN
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_a_netns_without_lo_up_is_a_clear_error(make_netns: list[str]) -> None:
    name = f"composer-dns-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    make_netns.append(name)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_dns, f"/run/netns/{name}", NameTables().view([NET]), ())

    home = os.readlink("/proc/thread-self/ns/net")
    with pytest.raises(
        DnsError, match=r"cannot serve 127.0.0.11:53 in /run/netns/composer-dns-\w+: lo is down"
    ):
        try:
            trio.run(main)
        except BaseExceptionGroup as group:
            raise group.exceptions[0] from None
    assert os.readlink("/proc/thread-self/ns/net") == home


# -- forwarding ---------------------------------------------------------------------------------------------


def test_forwarding_to_an_upstream_in_another_netns(make_netns: list[str]) -> None:
    netns, upstream_ns = new_netns(make_netns), new_netns(make_netns)
    tables = project_tables()
    fake = FakeUpstream()
    upstreams = (Upstream(address="127.0.0.1", netns=upstream_ns),)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(fake.serve, upstream_ns)
            server: DnsServer = await nursery.start(
                partial(serve_dns, timeout=0.5), netns, tables.view([NET]), upstreams
            )
            assert ips(await ask(netns, "www.example.com")) == ["192.0.2.1"]
            assert ips(await ask(netns, "www.example.com", tcp=True)) == ["192.0.2.1"]
            assert ips(await ask(netns, "9.9.9.9.in-addr.arpa", "PTR")) == []  # not ours: forwarded
            assert "9.9.9.9.in-addr.arpa." in fake.seen
            big = await ask(netns, "big.example")  # the upstream truncates over UDP, we pass it on
            assert big.header.tc == 1
            assert len(ips(await ask(netns, "big.example", tcp=True))) == 100
            assert (await ask(netns, "slow.example")).header.rcode == RCODE.SERVFAIL
            assert (await ask(netns, "slow.example", tcp=True)).header.rcode == RCODE.SERVFAIL
            assert sorted(ips(await ask(netns, "web"))) == ["172.30.0.2", "172.30.0.3"]
            assert "web." not in fake.seen and "nosuch." not in fake.seen
            assert (await ask(netns, "nosuch")).header.rcode == RCODE.NXDOMAIN
            assert server.forwarded == 7 and server.failed == 2
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_unreachable_upstream_is_servfail(make_netns: list[str]) -> None:
    netns, empty_ns = new_netns(make_netns), new_netns(make_netns)
    upstreams = (Upstream(address="127.0.0.1", netns=empty_ns), Upstream(address="127.0.0.2", netns=empty_ns))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_dns, timeout=0.5), netns, NameTables().view([NET]), upstreams)
            # nothing listens: ICMP port unreachable turns into ECONNREFUSED, both upstreams fail
            assert (await ask(netns, "example.com")).header.rcode == RCODE.SERVFAIL
            assert (await ask(netns, "example.com", tcp=True)).header.rcode == RCODE.SERVFAIL
            nursery.cancel_scope.cancel()

    trio.run(main)


# -- a real container ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def forkserver() -> Iterator[ForkServer]:
    server = ForkServer.start()
    yield server
    server.close()


def test_busybox_container_resolves_with_the_generated_files(
    make_netns: list[str], layout: Layout, forkserver: ForkServer, busybox_rootfs: Path, tmp_path: Path
) -> None:
    netns, upstream_ns = new_netns(make_netns), new_netns(make_netns)
    tables = project_tables()
    fake = FakeUpstream()
    # no search line: busybox's nslookup would then ask only `db.<search>` (unlike glibc with ndots:0)
    host_resolv = "nameserver 10.255.255.53\noptions edns0\n"
    resolv = tmp_path / "resolv.conf"
    hosts = tmp_path / "hosts"
    rewrite_in_place(resolv, resolv_conf(host_resolv))
    rewrite_in_place(
        hosts, hosts_file(hostname="proj-web-1", addresses=("172.30.0.2",), extra_hosts=("gw=10.9.9.9",))
    )
    runtime = Runtime(layout, forkserver)
    script = (
        "cat /etc/resolv.conf; nslookup db; nslookup proj-web-2.proj_default; nslookup www.example.com; "
        "nslookup 172.30.0.4; grep -c proj-web-1 /etc/hosts"
    )
    spec = ContainerSpec(
        id="dns1", lower_dirs=(busybox_rootfs,), argv=("sh", "-c", script),
        network=Network(mode="join", path=netns), etc_resolv_conf=resolv, etc_hosts=hosts,
    )  # fmt: skip
    output: list[bytes] = []

    async def main() -> ExitStatus:
        upstreams = (Upstream(address="127.0.0.1", netns=upstream_ns),)
        async with trio.open_nursery() as nursery:
            await nursery.start(fake.serve, upstream_ns)
            await nursery.start(serve_dns, netns, tables.view([NET]), upstreams)
            read_end, write_end = os.pipe()
            try:
                container = await runtime.start(
                    replace(spec, stdio=Stdio(stdout=write_end, stderr=write_end))
                )
            finally:
                os.close(write_end)
            try:
                with trio.fail_after(SAFETY * 3):
                    async with trio.lowlevel.FdStream(read_end) as stream:
                        while chunk := await stream.receive_some(65536):
                            output.append(chunk)
                    status = await container.wait()
            finally:
                await container.kill_and_reap()
            nursery.cancel_scope.cancel()
        return status

    try:
        status = trio.run(main)
    finally:
        runtime.remove(spec.id)
    text = b"".join(output).decode()
    assert status == ExitStatus(0), text
    assert text.startswith("nameserver 127.0.0.11\noptions edns0 ndots:0\n"), text
    assert "Address: 172.30.0.4" in text
    assert "Address: 172.30.0.3" in text
    assert "Address: 192.0.2.1" in text
    assert "proj-db-1.proj_default" in text  # the PTR answer
    assert text.rstrip().endswith("1"), text  # the container's own /etc/hosts line
    assert "www.example.com." in fake.seen
