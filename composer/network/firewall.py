"""Egress and isolation in composer's own nftables table (`table ip composer`), via the `nft` command.

    table ip composer {
      set bridges     { type ifname; }                          # every composer bridge
      set internal    { type ifname; }                          # bridges of `internal: true` networks
      set egress_nets { type ipv4_addr; flags interval; }       # subnets of the other networks
      map jumps       { type ifname : verdict; }                # bridge -> jump its own chain
      map pub_any     { type inet_proto . inet_service : verdict; }               # published ports:
      map pub_addr    { type ipv4_addr . inet_proto . inet_service : verdict; }   # -> jump pub-<container>
      chain forward {
        type filter hook forward priority filter; policy accept;
        ct status dnat oifname != @internal accept   # published ports (and their replies), any network
        iifname vmap @jumps               # from a composer bridge: its chain decides
        oifname @internal drop            # nothing routed into an internal network
      }
      chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr @egress_nets oifname != @bridges masquerade
        ip saddr 127.0.0.0/8 oifname @bridges masquerade      # 127.0.0.1:P -> a container
        ct status dnat iifname @bridges oifname @bridges masquerade   # hairpin: container -> host:P
      }
      chain guard {                       # route_localnet=1 on the bridges must not open the host's
        type filter hook prerouting priority raw; policy accept;      # loopback to the containers
        iifname @bridges ip daddr 127.0.0.0/8 drop                    # (checked before de-NAT)
      }
      chain prerouting { type nat hook prerouting priority dstnat; fib daddr type local jump ports }
      chain output     { type nat hook output priority -100; fib daddr type local jump ports }
      chain ports {
        ip daddr . meta l4proto . th dport vmap @pub_addr   # host_ip given
        meta l4proto . th dport vmap @pub_any               # every local address
      }
      chain pub-<container> {             # one per container with published ports
        ip daddr 127.0.0.1 tcp dport 8080 dnat to 10.213.0.2:80 comment "tcp 127.0.0.1:8080 10.213.0.2:80"
      }
      chain net-<bridge> {                # one per network
        oifname "<bridge>" accept         # its own containers (bridged frames cross FORWARD too)
        oifname @bridges drop             # not other composer networks
        accept                            # the rest of the world (internal: drop instead)
      }
    }

Per-network state lives in set and map elements and one chain, so adding or removing a network is
one atomic `nft -f -` transaction that touches nothing else, with no rule handles to remember.
Published ports follow the same pattern (composer/network/ports.py): a container's DNAT rules live
in its own `pub-<container>` chain, reached through map elements keyed by (address,) protocol and
port, added and removed in one transaction. The output chain is what makes 127.0.0.1:P work (with
`route_localnet=1` on the bridge, which manager.py sets and sysctl.py puts back); its masquerade gives
the container a source it can answer; the guard chain keeps the bridges' route_localnet from letting a
container reach the host's 127.0.0.1. Published ports are reachable from other composer networks
(they are public on the host anyway), but never routed into an `internal` network from outside. The
host's own tables (Docker's, anyone's) and its policies are never touched; the table goes away with
the last network. Note: an `accept` here does not override a `drop` in another base chain (for
example iptables' FORWARD policy DROP set by dockerd); `foreign_forward_drop()` detects that case so
that the caller can say so.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Network

from composer.errors import ComposerError

__all__ = ["TABLE", "Dnat", "FirewallError", "NftFirewall", "foreign_forward_drop"]

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
        f"add map ip {TABLE} pub_any {{ type inet_proto . inet_service : verdict; }}\n"
        f"add map ip {TABLE} pub_addr {{ type ipv4_addr . inet_proto . inet_service : verdict; }}\n"
        f"add chain ip {TABLE} forward {{ type filter hook forward priority filter; policy accept; }}\n"
        f"flush chain ip {TABLE} forward\n"
        f"add rule ip {TABLE} forward ct status dnat oifname != @internal accept\n"
        f"add rule ip {TABLE} forward iifname vmap @jumps\n"
        f"add rule ip {TABLE} forward oifname @internal drop\n"
        f"add chain ip {TABLE} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}\n"
        f"flush chain ip {TABLE} postrouting\n"
        f"add rule ip {TABLE} postrouting ip saddr @egress_nets oifname != @bridges masquerade\n"
        f"add rule ip {TABLE} postrouting ip saddr 127.0.0.0/8 oifname @bridges masquerade\n"
        f"add rule ip {TABLE} postrouting ct status dnat iifname @bridges oifname @bridges masquerade\n"
        f"add chain ip {TABLE} ports\n"
        f"flush chain ip {TABLE} ports\n"
        f"add rule ip {TABLE} ports ip daddr . meta l4proto . th dport vmap @pub_addr\n"
        f"add rule ip {TABLE} ports meta l4proto . th dport vmap @pub_any\n"
        f"add chain ip {TABLE} prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}\n"
        f"flush chain ip {TABLE} prerouting\n"
        f"add rule ip {TABLE} prerouting fib daddr type local jump ports\n"
        f"add chain ip {TABLE} guard {{ type filter hook prerouting priority raw; policy accept; }}\n"
        f"flush chain ip {TABLE} guard\n"
        f"add rule ip {TABLE} guard iifname @bridges ip daddr 127.0.0.0/8 drop\n"
        f"add chain ip {TABLE} output {{ type nat hook output priority -100; policy accept; }}\n"
        f"flush chain ip {TABLE} output\n"
        f"add rule ip {TABLE} output fib daddr type local jump ports\n"
    )


def _family(subnet: IPv4Network | IPv6Network) -> str:
    return "ip" if subnet.version == 4 else "ip6"


def _base6() -> str:
    """The IPv6 twin (`table ip6 composer`) for `enable_ipv6` networks: isolation and masquerade the
    same way (no published ports: IPv6 host addresses are served by the proxy, ports.py)."""
    t = f"ip6 {TABLE}"
    return (
        f"add table {t}\n"
        f"add set {t} bridges {{ type ifname; }}\n"
        f"add set {t} internal {{ type ifname; }}\n"
        f"add set {t} egress_nets {{ type ipv6_addr; flags interval; }}\n"
        f"add map {t} jumps {{ type ifname : verdict; }}\n"
        f"add chain {t} forward {{ type filter hook forward priority filter; policy accept; }}\n"
        f"flush chain {t} forward\n"
        f"add rule {t} forward iifname vmap @jumps\n"
        f"add rule {t} forward oifname @internal drop\n"
        f"add chain {t} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}\n"
        f"flush chain {t} postrouting\n"
        f"add rule {t} postrouting ip6 saddr @egress_nets oifname != @bridges masquerade\n"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Dnat:
    """One published port as a kernel rule: (host_ip or every local address):host_port -> address:target."""

    container: str
    protocol: str  # tcp | udp
    host_ip: IPv4Address | None  # None: every local address
    host_port: int
    address: IPv4Address
    target: int

    @property
    def key(self) -> str:
        """The map element's key (without the verdict)."""
        head = f"{self.host_ip} . " if self.host_ip is not None else ""
        return f"{head}{self.protocol} . {self.host_port}"

    def comment(self) -> str:
        return f"{self.protocol} {self.host_ip or '0.0.0.0'}:{self.host_port} {self.address}:{self.target}"

    @classmethod
    def from_comment(cls, container: str, text: str) -> Dnat | None:
        try:
            protocol, host, dest = text.split()
            host_ip, host_port = host.rsplit(":", 1)
            address, target = dest.rsplit(":", 1)
            return cls(
                container=container,
                protocol=protocol,
                host_ip=None if host_ip == "0.0.0.0" else IPv4Address(host_ip),
                host_port=int(host_port),
                address=IPv4Address(address),
                target=int(target),
            )
        except ValueError:
            return None


_CHAIN_NAME = re.compile(r"[A-Za-z0-9_.-]{1,200}")


def pub_chain(container: str) -> str:
    """The nft chain of a container's published ports."""
    if not _CHAIN_NAME.fullmatch(container):
        raise FirewallError(f"container name {container!r} cannot name an nft chain")
    return f"pub-{container}"


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

    def add_network(self, bridge: str, subnet: IPv4Network | IPv6Network, *, internal: bool) -> None:
        """Idempotent: the table of the subnet's family (`ip composer`, or `ip6 composer` for an
        `enable_ipv6` network's IPv6 half), then this network's elements and chain, in one transaction."""
        t, chain = f"{_family(subnet)} {TABLE}", f"net-{bridge}"
        lines = [
            _base() if subnet.version == 4 else _base6(),
            f"add chain {t} {chain}\n",
            f"flush chain {t} {chain}\n",
        ]
        lines.append(f'add rule {t} {chain} oifname "{bridge}" accept\n')
        if internal:
            lines.append(f"add rule {t} {chain} drop\n")
            lines.append(f'add element {t} internal {{ "{bridge}" }}\n')
        else:
            lines.append(f"add rule {t} {chain} oifname @bridges drop\n")
            lines.append(f"add rule {t} {chain} accept\n")
            lines.append(f"add element {t} egress_nets {{ {subnet} }}\n")
        lines.append(f'add element {t} bridges {{ "{bridge}" }}\n')
        lines.append(f'add element {t} jumps {{ "{bridge}" : jump {chain} }}\n')
        self._run(["-f", "-"], "".join(lines))

    def remove_network(self, bridge: str, subnet: IPv4Network | IPv6Network) -> None:
        """Remove what `add_network` added for `bridge` in the subnet's family (whatever of it exists);
        drop that table when no network is left in it."""
        family = _family(subnet)
        state = self.state(family=family)
        if state is None:
            return
        t, chain = f"{family} {TABLE}", f"net-{bridge}"
        lines = []
        if bridge in state.jumps:
            lines.append(f'delete element {t} jumps {{ "{bridge}" }}\n')
        if chain in state.chains:
            lines.append(f"delete chain {t} {chain}\n")
        if str(subnet) in state.egress_nets:
            lines.append(f"delete element {t} egress_nets {{ {subnet} }}\n")
        for name, items in (("bridges", state.bridges), ("internal", state.internal)):
            if bridge in items:
                lines.append(f'delete element {t} {name} {{ "{bridge}" }}\n')
        if not (state.bridges - {bridge}) and not (state.jumps - {bridge}):
            lines = [f"delete table {t}\n"]
        if lines:
            self._run(["-f", "-"], "".join(lines))

    def add_ports(self, container: str, rules: Sequence[Dnat]) -> None:
        """The container's DNAT rules (replacing any it had), in one transaction. The table must
        exist (a network was added first)."""
        chain = pub_chain(container)
        state = self.state()
        if state is None:
            raise FirewallError(f"container {container}: no composer network to publish ports on")
        lines = [_base(), *self._unpublish_lines(state, container)]
        lines.append(f"add chain ip {TABLE} {chain}\n")
        for rule in rules:
            if rule.container != container:
                raise FirewallError(f"container {container}: a rule of {rule.container} given")
            match = f"ip daddr {rule.host_ip} " if rule.host_ip is not None else ""
            lines.append(
                f"add rule ip {TABLE} {chain} {match}{rule.protocol} dport {rule.host_port} "
                f'dnat to {rule.address}:{rule.target} comment "{rule.comment()}"\n'
            )
            where = "pub_addr" if rule.host_ip is not None else "pub_any"
            lines.append(f"add element ip {TABLE} {where} {{ {rule.key} : jump {chain} }}\n")
        self._run(["-f", "-"], "".join(lines))

    def remove_ports(self, container: str) -> bool:
        """Remove the container's DNAT rules, if any (idempotent). True if there were some."""
        state = self.state()
        if state is None:
            return False
        lines = self._unpublish_lines(state, container)
        if lines:
            self._run(["-f", "-"], "".join(lines))
        return bool(lines)

    @staticmethod
    def _unpublish_lines(state: TableState, container: str) -> list[str]:
        chain = pub_chain(container)
        lines = []
        for rule in state.dnat:
            if rule.container == container:
                where = "pub_addr" if rule.host_ip is not None else "pub_any"
                lines.append(f"delete element ip {TABLE} {where} {{ {rule.key} }}\n")
        if chain in state.chains:
            lines.append(f"delete chain ip {TABLE} {chain}\n")
        return lines

    def published(self) -> tuple[Dnat, ...]:
        """Every DNAT rule in the table (for `composer port`, `ps` and cleanup)."""
        state = self.state()
        return state.dnat if state is not None else ()

    def remove_all(self) -> None:
        for family in ("ip", "ip6"):
            if self.state(family=family) is not None:
                self._run(["delete", "table", family, TABLE])

    def state(self, *, family: str = "ip") -> TableState | None:
        """What the table (of `family`: ip, or ip6 for IPv6 networks) holds now; None if there is none."""
        try:
            text = self._run(["-j", "list", "table", family, TABLE])
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
    dnat: tuple[Dnat, ...] = ()

    @classmethod
    def parse(cls, data: dict[str, object]) -> TableState:
        chains: set[str] = set()
        dnat: list[Dnat] = []
        sets: dict[str, list[object]] = {}
        items = data.get("nftables", [])
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict):
                continue
            if "chain" in item:
                chains.add(str(item["chain"]["name"]))
            rule = item.get("rule")
            if isinstance(rule, dict) and str(rule.get("chain", "")).startswith("pub-"):
                found = Dnat.from_comment(str(rule["chain"])[4:], str(rule.get("comment", "")))
                if found is not None:
                    dnat.append(found)
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
            dnat=tuple(sorted(dnat, key=lambda d: (d.container, d.protocol, d.host_port, str(d.host_ip)))),
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
