"""Per-container network setup and teardown time, for N containers on one network.

    sudo .venv/bin/python bench/network_setup.py [--sizes 1,10,50] [--rounds 3] [--ipv6]

Needs root and nft. Each "container" is a process in its own netns (`unshare --net sleep`, spawned
before the clock starts), so the numbers are composer/network's alone: `NetworkManager.attach(name,
pid, [(net, None)])` (IPAM under the flock, veth with its peer made in the netns, address, lo, route,
sysctls), one container after another, as the runtime's before_go hook would. Teardown is the lazy
kind: the process is killed (not timed), then `detach(release=True)` (IPAM release) is timed, and
`gone ms` is how long after the last detach the kernel had destroyed every host veth. One network
(bridge + nft rules) is made and removed per round; its cost is printed too. Medians over rounds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from ipaddress import IPv4Network
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from composer.network.attach import wait_links_gone
from composer.network.ipam import Pool
from composer.network.manager import Attachment, NetworkConfig, NetworkManager

POOLS = (Pool(IPv4Network("10.213.0.0/16"), 16),)
SUBNET6 = "fd42:be9c:1::/64"  # --ipv6: an enable_ipv6 network (a second address and route per container)


async def one_round(root: Path, n: int, ipv6: bool = False) -> dict[str, float]:
    manager = NetworkManager(root, pools=POOLS)
    t0 = time.perf_counter()
    config = NetworkConfig(name="bench_default", ipv6=ipv6, subnet6=SUBNET6 if ipv6 else None)
    net = await manager.ensure_network(config)
    t_net = time.perf_counter() - t0
    procs = [subprocess.Popen(["unshare", "--net", "sleep", "600"]) for _ in range(n)]
    attachments: list[Attachment] = []
    try:
        # wait until every child has its own netns (unshare done, sleep exec'd)
        me = os.readlink("/proc/self/ns/net")
        for proc in procs:
            while os.readlink(f"/proc/{proc.pid}/ns/net") == me:
                await trio.sleep(0.001)
        setup: list[float] = []
        for i, proc in enumerate(procs):
            t0 = time.perf_counter()
            attachments.append(await manager.attach(f"bench-{i}", proc.pid, [(net, None)]))
            setup.append(time.perf_counter() - t0)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
        for proc in procs:
            proc.wait()
    teardown: list[float] = []
    for attachment in attachments:
        t0 = time.perf_counter()
        await manager.detach(attachment, release=True)
        teardown.append(time.perf_counter() - t0)
    t_last = time.perf_counter()
    links = [name for a in attachments for name in a.host_links]
    gone = await trio.to_thread.run_sync(wait_links_gone, links, 30.0)
    t_gone = time.perf_counter() - t_last
    t0 = time.perf_counter()
    await manager.remove_network_if_unused(net)
    t_rm = time.perf_counter() - t0
    if not gone:
        raise RuntimeError("host veths still present 30 s after teardown")
    return {
        "setup": statistics.median(setup) * 1e3,
        "setup_p90": sorted(setup)[int(0.9 * (len(setup) - 1))] * 1e3,
        "teardown": statistics.median(teardown) * 1e3,
        "gone": t_gone * 1e3,
        "net": t_net * 1e3,
        "net_rm": t_rm * 1e3,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,50")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ipv6", action="store_true", help=f"enable_ipv6 on the network ({SUBNET6})")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 2
    if shutil.which("nft") is None:
        print("needs nft (apt-get install nftables)", file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.sizes.split(",")]
    forward = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    print(
        f"{'N':>4} | {'setup ms/ctr':>12} | {'p90':>6} | {'teardown ms/ctr':>15} | {'all veths gone ms':>17} "
        f"| {'network up ms':>13} | {'network rm ms':>13}"
    )
    print("-" * 100)
    try:
        for n in sizes:
            rows = []
            for _ in range(args.rounds):
                with tempfile.TemporaryDirectory(prefix="composer-bench-net-") as tmp:
                    rows.append(trio.run(one_round, Path(tmp), n, args.ipv6))
            med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
            print(
                f"{n:>4} | {med['setup']:>12.2f} | {med['setup_p90']:>6.2f} | {med['teardown']:>15.3f} | "
                f"{med['gone']:>17.1f} | {med['net']:>13.2f} | {med['net_rm']:>13.2f}"
            )
    finally:
        Path("/proc/sys/net/ipv4/ip_forward").write_text(forward)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
