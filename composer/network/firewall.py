"""Egress and isolation in composer's own nftables table (`table ip composer`), via the `nft` command.

    table ip composer {
      set bridges     { type ifname; }                          # every composer bridge
      set internal    { type ifname; }                          # bridges of `internal: true` networks
      set egress_nets { type ipv4_addr; flags interval; }       # subnets of the other networks
      map jumps       { type ifname : verdict; }                # bridge -> jump its own chain
      chain forward {
        type filter hook forward priority filter; policy accept;
        iifname vmap @jumps               # from a composer bridge: its chain decides
        oifname @internal drop            # nothing routed into an internal network
      }
      chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr @egress_nets oifname != @bridges masquerade
      }
      chain net-<bridge> {                # one per network
        oifname "<bridge>" accept         # its own containers (bridged frames cross FORWARD too)
        oifname @bridges drop             # not other composer networks
        accept                            # the rest of the world (internal: drop instead)
      }
    }

Per-network state lives in set and map elements and one chain, so adding or removing a network is
one atomic `nft -f -` transaction that touches nothing else, with no rule handles to remember. The
host's own tables (Docker's, anyone's) and its policies are never touched; the table goes away with
the last network. Note: an `accept` here does not override a `drop` in another base chain (for
example iptables' FORWARD policy DROP set by dockerd); `foreign_forward_drop()` detects that case so
that the caller can say so.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network

from composer.errors import ComposerError

__all__ = ["TABLE", "FirewallError", "NftFirewall", "foreign_forward_drop"]

TABLE = "composer"


class FirewallError(ComposerError):
    """`nft` is missing or refused a ruleset."""


def _base() -> str:
    return (
        f"add table ip {TABLE}\n"
        f"add set ip {TABLE} bridges {{ type ifname; }}\n"
        f"add set ip {TABLE} internal {{ type ifname; }}\n"
        f"add set ip {TABLE} egress_nets {{ type ipv4_addr; flags interval; }}\n"
        f"add map ip {TABLE} jumps {{ type ifname : verdict; }}\n"
        f"add chain ip {TABLE} forward {{ type filter hook forward priority filter; policy accept; }}\n"
        f"flush chain ip {TABLE} forward\n"
        f"add rule ip {TABLE} forward iifname vmap @jumps\n"
        f"add rule ip {TABLE} forward oifname @internal drop\n"
        f"add chain ip {TABLE} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}\n"
        f"flush chain ip {TABLE} postrouting\n"
        f"add rule ip {TABLE} postrouting ip saddr @egress_nets oifname != @bridges masquerade\n"
    )


@dataclass(frozen=True, slots=True)
class NftFirewall:
    nft: str = "nft"

    def _run(self, args: Sequence[str], stdin: str | None = None) -> str:
        exe = shutil.which(self.nft) or (self.nft if "/" in self.nft else None)
        if exe is None:
            raise FirewallError("nft (nftables) is not installed: composer needs it for network egress")
        done = subprocess.run([exe, *args], input=stdin, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            what = " ".join(args)
            raise FirewallError(f"nft {what}: {done.stderr.strip() or f'exit {done.returncode}'}")
        return done.stdout

    def available(self) -> bool:
        return shutil.which(self.nft) is not None

    def add_network(self, bridge: str, subnet: IPv4Network, *, internal: bool) -> None:
        """Idempotent: the table, then this network's elements and chain, in one transaction."""
        chain = f"net-{bridge}"
        lines = [
            _base(),
            f"add chain ip {TABLE} {chain}\n",
            f"flush chain ip {TABLE} {chain}\n",
            f'add rule ip {TABLE} {chain} oifname "{bridge}" accept\n',
        ]
        if internal:
            lines.append(f"add rule ip {TABLE} {chain} drop\n")
            lines.append(f'add element ip {TABLE} internal {{ "{bridge}" }}\n')
        else:
            lines.append(f"add rule ip {TABLE} {chain} oifname @bridges drop\n")
            lines.append(f"add rule ip {TABLE} {chain} accept\n")
            lines.append(f"add element ip {TABLE} egress_nets {{ {subnet} }}\n")
        lines.append(f'add element ip {TABLE} bridges {{ "{bridge}" }}\n')
        lines.append(f'add element ip {TABLE} jumps {{ "{bridge}" : jump {chain} }}\n')
        self._run(["-f", "-"], "".join(lines))

    def remove_network(self, bridge: str, subnet: IPv4Network) -> None:
        """Remove what `add_network` added for `bridge` (whatever of it exists); drop the table
        when no network is left."""
        state = self.state()
        if state is None:
            return
        chain = f"net-{bridge}"
        lines = []
        if bridge in state.jumps:
            lines.append(f'delete element ip {TABLE} jumps {{ "{bridge}" }}\n')
        if chain in state.chains:
            lines.append(f"delete chain ip {TABLE} {chain}\n")
        if str(subnet) in state.egress_nets:
            lines.append(f"delete element ip {TABLE} egress_nets {{ {subnet} }}\n")
        for name, items in (("bridges", state.bridges), ("internal", state.internal)):
            if bridge in items:
                lines.append(f'delete element ip {TABLE} {name} {{ "{bridge}" }}\n')
        if not (state.bridges - {bridge}) and not (state.jumps - {bridge}):
            lines = [f"delete table ip {TABLE}\n"]
        self._run(["-f", "-"], "".join(lines))

    def remove_all(self) -> None:
        if self.state() is not None:
            self._run(["delete", "table", "ip", TABLE])

    def state(self) -> TableState | None:
        """What the table holds now; None if there is no table."""
        try:
            text = self._run(["-j", "list", "table", "ip", TABLE])
        except FirewallError as exc:
            if "No such file" in str(exc) or "does not exist" in str(exc):
                return None
            raise
        return TableState.parse(json.loads(text))


@dataclass(frozen=True, slots=True)
class TableState:
    chains: frozenset[str]
    bridges: frozenset[str]
    internal: frozenset[str]
    jumps: frozenset[str]
    egress_nets: frozenset[str]

    @classmethod
    def parse(cls, data: dict[str, object]) -> TableState:
        chains: set[str] = set()
        sets: dict[str, list[object]] = {}
        items = data.get("nftables", [])
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict):
                continue
            if "chain" in item:
                chains.add(str(item["chain"]["name"]))
            for kind in ("set", "map"):
                if kind in item:
                    sets[str(item[kind]["name"])] = list(item[kind].get("elem", []))
        jumps = frozenset(str(e[0]) if isinstance(e, list) else str(e) for e in sets.get("jumps", []))
        nets = [_prefix(e) for e in sets.get("egress_nets", [])]
        return cls(
            chains=frozenset(chains),
            bridges=frozenset(str(e) for e in sets.get("bridges", [])),
            internal=frozenset(str(e) for e in sets.get("internal", [])),
            jumps=jumps,
            egress_nets=frozenset(n for n in nets if n),
        )


def _prefix(elem: object) -> str:
    if isinstance(elem, dict) and "prefix" in elem:
        prefix = elem["prefix"]
        return f"{prefix['addr']}/{prefix['len']}"
    if isinstance(elem, dict) and "range" in elem:
        return ""
    return str(elem)


def foreign_forward_drop(nft: NftFirewall) -> list[str]:
    """Base chains of other tables on the forward hook whose policy is drop (e.g. dockerd's)."""
    try:
        data = json.loads(nft._run(["-j", "list", "chains"]))
    except (FirewallError, ValueError):
        return []
    found = []
    for item in data.get("nftables", []):
        chain = item.get("chain") if isinstance(item, dict) else None
        if (
            chain
            and chain.get("hook") == "forward"
            and chain.get("policy") == "drop"
            and chain.get("table") != TABLE
        ):
            found.append(f"{chain.get('family')} {chain.get('table')} {chain.get('name')}")
    return sorted(found)
