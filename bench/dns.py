"""Embedded DNS: answers per second and latency from inside a container netns, and set-up cost.

    sudo .venv/bin/python bench/dns.py [--count 5000] [--seconds 10]

The server (composer.network.dns.serve_dns) runs under trio in this process, in a netns the bench
makes; the client is a separate process (`ip netns exec`, blocking sockets) so that the two do not
share an interpreter. Rows:
  udp local, 1 in flight   sequential A queries of a service name (3 replicas)
  udp local, 16 in flight  the same, 16 outstanding on one socket (throughput)
  tcp local, 1 in flight   sequential queries on one TCP connection
  udp forwarded            A queries of a name the server forwards to an upstream (another
                           serve_dns on 127.0.0.1:53 in a second netns the bench makes; an upstream
                           with a netns costs a thread per query to make its socket there)
  setup                    serve_dns start (thread + setns + bind UDP/TCP) and stop, per netns
Each row is bounded by --count queries and --seconds. Needs root. No traffic leaves the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import statistics
import subprocess
import sys
import time
import uuid
from functools import partial
from ipaddress import IPv4Address
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


# -- the client (runs inside the netns) ------------------------------------------------------------------


def client(name: str, count: int, seconds: float, window: int, tcp: bool) -> dict[str, object]:
    from dnslib import DNSRecord

    queries = [DNSRecord.question(name, "A") for _ in range(min(count, 65536))]
    for i, query in enumerate(queries):
        query.header.id = i
    packed = [q.pack() for q in queries]
    latencies: list[float] = []
    lost = 0
    deadline = time.monotonic() + seconds
    start = time.perf_counter()
    if tcp:
        sock = socket.create_connection(("127.0.0.11", 53), timeout=2.0)
        buf = b""
        for data in packed:
            if time.monotonic() > deadline:
                break
            t0 = time.perf_counter()
            sock.sendall(len(data).to_bytes(2, "big") + data)
            while len(buf) < 2 or len(buf) < 2 + int.from_bytes(buf[:2], "big"):
                buf += sock.recv(65535)
            size = int.from_bytes(buf[:2], "big")
            buf = buf[2 + size :]
            latencies.append(time.perf_counter() - t0)
        sock.close()
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect(("127.0.0.11", 53))
        sock.setblocking(False)
        sel = selectors.DefaultSelector()
        sel.register(sock, selectors.EVENT_READ)
        sent: dict[int, float] = {}
        next_index = 0
        while (next_index < len(packed) or sent) and time.monotonic() < deadline:
            while len(sent) < window and next_index < len(packed):
                sent[next_index] = time.perf_counter()
                sock.send(packed[next_index])
                next_index += 1
            if not sel.select(timeout=2.0):
                lost += len(sent)
                sent.clear()
                continue
            while True:
                try:
                    reply = sock.recv(65535)
                except BlockingIOError:
                    break
                ident = int.from_bytes(reply[:2], "big")
                if ident in sent:
                    latencies.append(time.perf_counter() - sent.pop(ident))
        lost += len(sent)
        sock.close()
    wall = time.perf_counter() - start
    return {"latencies": latencies, "wall": wall, "lost": lost}


# -- the server side ---------------------------------------------------------------------------------------


def _netns() -> tuple[str, str]:
    name = f"composer-bench-dns-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    return name, f"/run/netns/{name}"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _run_client(
    ns: str, name: str, args: argparse.Namespace, window: int, tcp: bool
) -> dict[str, object]:
    import trio

    argv = ["ip", "netns", "exec", ns, sys.executable, __file__, "--client", name, "--count", str(args.count),
            "--seconds", str(args.seconds), "--window", str(window)] + (["--tcp"] if tcp else [])  # fmt: skip
    done = await trio.run_process(argv, capture_stdout=True)
    result: dict[str, object] = json.loads(done.stdout)
    return result


def _row(label: str, result: dict[str, object]) -> str:
    lat = [x * 1e6 for x in result["latencies"]]  # type: ignore[attr-defined]
    wall = float(result["wall"])  # type: ignore[arg-type]
    if not lat:
        return f"| {label} | 0 | n/a | n/a | n/a | {result['lost']} |"
    return (
        f"| {label} | {len(lat)} | {len(lat) / wall:,.0f} | {statistics.median(lat):,.0f} | "
        f"{_pct(lat, 0.99):,.0f} | {result['lost']} |"
    )


async def bench(args: argparse.Namespace) -> list[str]:
    import trio

    from composer.network.dns import Endpoint, NameTables, Upstream, serve_dns

    tables = NameTables()
    table = tables.table("bench_default")
    for i in range(3):
        table.add(Endpoint(container_id=f"c{i}", container_name=f"bench-web-{i + 1}", service="web",
                           address=IPv4Address(f"172.30.0.{i + 2}")))  # fmt: skip
    upstream_tables = NameTables()
    upstream_tables.table("upstream").add(
        Endpoint(
            container_id="u",
            container_name="u",
            aliases=("www.example.com",),
            address=IPv4Address("192.0.2.1"),
        )
    )
    made: list[str] = []
    rows: list[str] = []
    try:
        ns, path = _netns()
        made.append(ns)
        up_ns, up_path = _netns()
        made.append(up_ns)
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(serve_dns, address="127.0.0.1"), up_path, upstream_tables.view(["upstream"]), ()
            )
            upstreams = (Upstream(address="127.0.0.1", netns=up_path),)
            await nursery.start(serve_dns, path, tables.view(["bench_default"]), upstreams)
            for label, name, window, tcp in (
                ("udp local, 1 in flight", "web", 1, False),
                ("udp local, 16 in flight", "web", 16, False),
                ("tcp local, 1 in flight", "web", 1, True),
                ("udp forwarded (netns upstream), 1 in flight", "www.example.com", 1, False),
            ):
                rows.append(_row(label, await _run_client(ns, name, args, window, tcp)))
            nursery.cancel_scope.cancel()

        # set-up and tear-down of a server per container netns
        paths = []
        for _ in range(args.netns):
            name, p = _netns()
            made.append(name)
            paths.append(p)
        starts: list[float] = []
        t_stop = 0.0
        async with trio.open_nursery() as nursery:
            for p in paths:
                t0 = time.perf_counter()
                await nursery.start(serve_dns, p, tables.view(["bench_default"]), ())
                starts.append(time.perf_counter() - t0)
            t_stop = time.perf_counter()
            nursery.cancel_scope.cancel()
        stop = (time.perf_counter() - t_stop) / len(paths)
        rows.append(
            f"| setup: serve_dns start per netns ({len(paths)} netns) | {len(paths)} | | "
            f"{statistics.median(starts) * 1e6:,.0f} | {_pct(starts, 0.99) * 1e6:,.0f} | |"
        )
        rows.append(f"| teardown: cancel, per server | {len(paths)} | | {stop * 1e6:,.0f} | | |")
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "delete", name], check=False)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000, help="queries per row (at most)")
    parser.add_argument("--seconds", type=float, default=10.0, help="time limit per row")
    parser.add_argument("--netns", type=int, default=20, help="netns for the set-up row")
    parser.add_argument("--client", metavar="NAME", help=argparse.SUPPRESS)
    parser.add_argument("--window", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--tcp", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        print(json.dumps(client(args.client, args.count, args.seconds, args.window, args.tcp)))
        return 0
    if os.geteuid() != 0:
        print("bench/dns.py needs root (network namespaces)", file=sys.stderr)
        return 1
    import trio

    rows = trio.run(bench, args)
    print("| row | answers | q/s | median µs | p99 µs | lost |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
