"""The trio-facing API the supervisor uses: networks (bridge + IPAM + firewall) and attachments.

    manager = NetworkManager(layout.root)
    front = await manager.ensure_network(NetworkConfig.from_compose(project.networks["front"]))
    async def before_go(pid: int) -> None:                       # Runtime.start(spec, before_go=...)
        attachment = await manager.attach("proj-web-1", pid, [(front, service.networks[0])])
    ...                                                          # the container exits: its netns goes
    await manager.detach(attachment)                             # stop: keep the address (restart)
    await manager.release("proj-web-1")                          # removal: give the addresses back
    await manager.remove_network_if_unused(front)                # down

Why attach through `/proc/PID/ns/net` from `before_go` rather than a named netns made first: the
runtime already unshares CLONE_NEWNET in the container's child (no extra syscalls, no forks), the
netns then dies with the container, so teardown is lazy and free, and a crashed supervisor leaves
no /run/netns entry to sweep. `attach` also accepts a path (`/run/netns/NAME`, or a runtime started
with `Network(mode="join")`), and `pin=True` bind-mounts the netns under /run/netns for debugging.

Every kernel step runs in `trio.to_thread.run_sync` with its own IPRoute (DESIGN.md rule 6). The IPAM
state's flock serializes network creation and removal between composer processes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network
from pathlib import Path
from typing import Protocol

import trio

from composer.errors import ComposerError
from composer.log import logger
from composer.network import bridge as bridges
from composer.network.attach import (
    InterfacePlan,
    InterfaceRequest,
    attached,
    plan_interfaces,
    setup,
    wait_links_gone,
)
from composer.network.firewall import FirewallError, NftFirewall, foreign_forward_drop
from composer.network.ipam import (
    DEFAULT_POOLS,
    IpamState,
    IpamStore,
    NetworkRecord,
    Pool,
    SubnetRequest,
    assign_address,
    assign_address6,
    plan_network,
    release_address,
    ula_base,
)
from composer.network.netns import open_netns, pin, short_name, unpin
from composer.network.sysctl import SysctlLedger, route_localnet_path

__all__ = [
    "AttachOptions",
    "Attachment",
    "NetworkConfig",
    "NetworkHandle",
    "NetworkManager",
    "NetworkNotFound",
]

MTU_OPTION = "com.docker.network.driver.mtu"
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
IPV6_FORWARDING = "/proc/sys/net/ipv6/conf/all/forwarding"
MACHINE_ID = Path("/etc/machine-id")
SYSCTL_STATE = Path("/run/composer")


class NetworkNotFound(ComposerError):
    """An `external: true` network that does not exist."""


# --- inputs: the compose model's shapes, read structurally (network may not import spec) -------------


class _PoolLike(Protocol):
    @property
    def subnet(self) -> str | None: ...
    @property
    def gateway(self) -> str | None: ...
    @property
    def ip_range(self) -> str | None: ...
    @property
    def aux_addresses(self) -> tuple[tuple[str, str], ...]: ...


class _IpamLike(Protocol):
    @property
    def config(self) -> Sequence[_PoolLike]: ...


class ComposeNetworkLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def external(self) -> bool: ...
    @property
    def internal(self) -> bool: ...
    @property
    def enable_ipv6(self) -> bool | None: ...
    @property
    def driver_opts(self) -> tuple[tuple[str, str], ...]: ...
    @property
    def ipam(self) -> _IpamLike: ...


class ServiceNetworkLike(Protocol):
    """composer.spec.model.ServiceNetwork fits."""

    @property
    def ipv4_address(self) -> str | None: ...
    @property
    def ipv6_address(self) -> str | None: ...
    @property
    def mac_address(self) -> str | None: ...
    @property
    def interface_name(self) -> str | None: ...
    @property
    def priority(self) -> int: ...
    @property
    def gw_priority(self) -> int: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class AttachOptions:
    ipv4_address: str | None = None
    ipv6_address: str | None = None
    mac_address: str | None = None
    interface_name: str | None = None
    priority: int = 0
    gw_priority: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkConfig:
    """One compose network as the network layer needs it (`name` is the real, project-prefixed one)."""

    name: str
    external: bool = False
    internal: bool = False
    mtu: int | None = None
    subnet: str | None = None
    ip_range: str | None = None
    gateway: str | None = None
    aux_addresses: tuple[tuple[str, str], ...] = ()
    ipv6: bool = False  # enable_ipv6
    subnet6: str | None = None  # the first IPv6 ipam.config entry (none: a /64 of the ULA pool)
    ip_range6: str | None = None
    gateway6: str | None = None

    @classmethod
    def from_compose(cls, network: ComposeNetworkLike) -> NetworkConfig:
        opts = dict(network.driver_opts)
        mtu = None
        if MTU_OPTION in opts:
            try:
                mtu = int(opts[MTU_OPTION])
            except ValueError:
                raise ComposerError(f"network {network.name}: {MTU_OPTION} must be a number") from None
            if not 68 <= mtu <= 65535:
                raise ComposerError(f"network {network.name}: {MTU_OPTION} {mtu} is out of range (68-65535)")
        pools = [p for p in network.ipam.config if not (p.subnet and ":" in p.subnet)]  # IPv4 only
        first = pools[0] if pools else None
        ipv6 = bool(network.enable_ipv6)
        pools6 = [p for p in network.ipam.config if p.subnet and ":" in p.subnet]
        first6 = pools6[0] if pools6 and ipv6 else None
        return cls(
            name=network.name,
            external=network.external,
            internal=network.internal,
            mtu=mtu,
            subnet=first.subnet if first else None,
            ip_range=first.ip_range if first else None,
            gateway=first.gateway if first else None,
            aux_addresses=tuple(first.aux_addresses) if first else (),
            ipv6=ipv6,
            subnet6=first6.subnet if first6 else None,
            ip_range6=first6.ip_range if first6 else None,
            gateway6=first6.gateway if first6 else None,
        )


# --- outputs ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkHandle:
    name: str
    bridge: str  # kernel name
    bridge_index: int
    subnet: IPv4Network
    gateway: IPv4Address
    internal: bool = False
    external: bool = False
    mtu: int | None = None
    subnet6: IPv6Network | None = None
    gateway6: IPv6Address | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Attachment:
    container: str
    netns_path: str  # /proc/PID/ns/net, or the pin / join path
    interfaces: tuple[InterfacePlan, ...]
    pinned: bool = False

    @property
    def addresses(self) -> dict[str, IPv4Address]:
        """network name -> the container's address on it."""
        return {p.request.network: p.request.address.ip for p in self.interfaces}

    @property
    def addresses6(self) -> dict[str, IPv6Address]:
        """network name -> the container's IPv6 address on it (IPv6 networks only)."""
        return {p.request.network: p.request.address6.ip for p in self.interfaces if p.request.address6}

    @property
    def host_links(self) -> tuple[str, ...]:
        return tuple(p.host_ifname for p in self.interfaces)


# --- the manager --------------------------------------------------------------------------------------


@dataclass(slots=True)
class NetworkManager:
    root: Path  # composer's root (Layout.root); the state goes to <root>/network/
    pools: Sequence[Pool] = DEFAULT_POOLS
    firewall: NftFirewall | None = field(default_factory=NftFirewall)  # None: no egress rules at all
    ip_forward: bool = True  # turn net.ipv4.ip_forward on for egress (like dockerd), if it is off
    sysctls: bool = True  # Docker's per-netns sysctls (unprivileged ports from 0, ping for all groups)
    sysctl_state: Path = SYSCTL_STATE  # the host-wide ledger of host sysctls composer changed (sysctl.py)
    # one store per manager: its changes from many threads share transactions, and it parses the
    # file again only when another process wrote it (a new store per call did neither)
    store: IpamStore = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.store = IpamStore(self.root / "network")

    @property
    def ledger(self) -> SysctlLedger:
        """The host sysctls composer changed (route_localnet, IPv6 forwarding), host-wide."""
        return SysctlLedger(self.sysctl_state)

    def _holder(self, network: str) -> str:
        return f"{network}@{self.root}"

    def _hold_sysctls(self, handle: NetworkHandle) -> None:
        """127.0.0.1:P -> a container (kernel DNAT) needs route_localnet on the bridge; remembered in
        the ledger so that `down` puts the bridge's old value back (an external bridge outlives us)."""
        if self.firewall is not None and not handle.internal:
            holder = self._holder(handle.name)
            self.ledger.hold(route_localnet_path(handle.bridge), "1", holder=holder)
            if handle.subnet6 is not None:  # egress over IPv6 is routed: forwarding, while it exists
                self.ledger.hold(IPV6_FORWARDING, "1", holder=holder)

    def ula(self) -> IPv6Network:
        """The ULA /48 this host's composer takes IPv6 subnets from (stable: machine id and root)."""
        try:
            machine = MACHINE_ID.read_text().strip()
        except OSError:
            machine = os.uname().nodename
        return ula_base(f"{machine}\0{self.root}")

    # networks -----------------------------------------------------------------------------------------

    async def ensure_network(self, config: NetworkConfig) -> NetworkHandle:
        """The network's bridge, address plan and egress rules, created if missing (idempotent)."""
        return await trio.to_thread.run_sync(self._ensure_network, config)

    def _ensure_network(self, config: NetworkConfig) -> NetworkHandle:
        with self.store.transaction() as state:
            record = state.get(config.name)
            if config.external:
                if record is None:
                    record = self._adopt_external(config.name)
                    state.put(record)
                handle = _handle(record)
                info = bridges.lookup_bridge(handle.bridge)
                if info is None:
                    raise NetworkNotFound(
                        f"network {config.name} is external, but its bridge {handle.bridge} is gone"
                    )
                self._hold_sysctls(handle)
                return replace(handle, external=True, bridge_index=info.index)
            if record is None:
                request = SubnetRequest(
                    name=config.name,
                    subnet=config.subnet,
                    ip_range=config.ip_range,
                    gateway=config.gateway,
                    aux_addresses=config.aux_addresses,
                    ipv6=config.ipv6,
                    subnet6=config.subnet6,
                    ip_range6=config.ip_range6,
                    gateway6=config.gateway6,
                )
                known = {dict(r.extra).get("bridge", "") for r in state.records()}
                host = bridges.host_networks(exclude=known)
                host6 = bridges.host_networks6(exclude=known) if config.ipv6 else []
                record = plan_network(
                    request, state.records(), host=host, pools=self.pools, host6=host6, ula=self.ula()
                )
                notes = {"bridge": bridges.bridge_name(config.name), "internal": str(config.internal).lower()}
                if config.mtu:
                    notes["mtu"] = str(config.mtu)
                record = replace(record, extra=tuple(sorted(notes.items())))
                state.put(record)
                logger().info("network.created", network=config.name, subnet=str(record.subnet))
            elif config.subnet and IPv4Network(config.subnet, strict=False) != record.subnet:
                raise ComposerError(
                    f"network {config.name} exists with subnet {record.subnet}, not {config.subnet}: "
                    "remove it first (composer down)"
                )
            elif config.ipv6 != (record.subnet6 is not None) or (
                config.subnet6 and IPv6Network(config.subnet6, strict=False) != record.subnet6
            ):
                now = f"IPv6 subnet {record.subnet6}" if record.subnet6 else "no IPv6"
                raise ComposerError(
                    f"network {config.name} exists with {now}, unlike its definition: "
                    "remove it first (composer down)"
                )
            handle = _handle(record)
            index = bridges.ensure_bridge(
                handle.bridge, alias=record.name, gateway=handle.gateway, subnet=handle.subnet,
                mtu=handle.mtu, gateway6=handle.gateway6, subnet6=handle.subnet6,
            )  # fmt: skip
            if self.firewall is not None:
                self.firewall.add_network(handle.bridge, handle.subnet, internal=handle.internal)
                if handle.subnet6 is not None:
                    self.firewall.add_network(handle.bridge, handle.subnet6, internal=handle.internal)
                if not handle.internal:
                    self._check_forwarding()
            self._hold_sysctls(handle)
            return replace(handle, bridge_index=index)

    def _adopt_external(self, name: str) -> NetworkRecord:
        """An external network not made by composer: a bridge named `name` (or aliased so)."""
        info = bridges.lookup_bridge(name) if len(name) <= 15 else None
        info = info or bridges.find_bridge_by_alias(name)
        if info is None or not info.addresses:
            raise NetworkNotFound(
                f"network {name} declared as external, but could not be found "
                "(create it with composer, or make a bridge of that name with an IPv4 address)"
            )
        iface = info.addresses[0]
        return NetworkRecord(
            name=name,
            subnet=iface.network,
            gateway=iface.ip,
            reserved=(),
            managed=False,
            extra=(("bridge", info.ifname), ("internal", "false")),
        )

    def _check_forwarding(self) -> None:
        if self.ip_forward and IP_FORWARD.read_text().strip() == "0":
            IP_FORWARD.write_text("1\n")
            logger().warning(
                "network.ip_forward_enabled", detail="net.ipv4.ip_forward was 0; set to 1 (as dockerd does)"
            )
        if self.firewall is not None:
            blocking = foreign_forward_drop(self.firewall)
            if blocking:
                logger().warning(
                    "network.forward_dropped_elsewhere",
                    chains=blocking,
                    detail="another table drops forwarded packets; composer's accept cannot override it",
                )

    async def remove_network_if_unused(self, network: NetworkHandle | str) -> bool:
        """Remove the bridge, rules and record if no container holds an address on it.
        External networks are never removed (their record is dropped when unused)."""
        name = network if isinstance(network, str) else network.name
        return await trio.to_thread.run_sync(self._remove_if_unused, name)

    def _remove_if_unused(self, name: str) -> bool:
        with self.store.transaction() as state:
            record = state.get(name)
            if record is None:
                return False
            if record.addresses:
                return False
            handle = _handle(record)
            if record.managed and self.firewall is not None:
                try:
                    self.firewall.remove_network(handle.bridge, handle.subnet)
                    if handle.subnet6 is not None:
                        self.firewall.remove_network(handle.bridge, handle.subnet6)
                except FirewallError as exc:
                    logger().warning("network.firewall_cleanup_failed", network=name, error=str(exc))
            self.ledger.release(self._holder(name))  # before the bridge goes: an external one stays
            if record.managed:
                bridges.delete_bridge(handle.bridge)
            state.drop(name)
            logger().info("network.removed", network=name)
            return True

    def networks(self) -> tuple[NetworkRecord, ...]:
        """Every network composer holds (a snapshot, for `network ls` and tests)."""
        return self.store.read().records()

    # containers ---------------------------------------------------------------------------------------

    async def attach(
        self,
        container: str,
        target: int | str,
        networks: Sequence[tuple[NetworkHandle, ServiceNetworkLike | None]],
        *,
        pin_name: str | None = None,
        reuse: bool = False,
    ) -> Attachment:
        """Addresses from IPAM (the container's own if it had some), then the veths in `target`
        (a pid: /proc/PID/ns/net; or a netns path). `pin_name`: also pin it as /run/netns/NAME.
        `reuse`: `target` is the netns of the container's previous run, still alive: when its veths
        are all there (both ends), nothing is changed."""
        return await trio.to_thread.run_sync(
            self._attach, container, target, tuple(networks), pin_name, reuse
        )

    def _attach(
        self,
        container: str,
        target: int | str,
        networks: tuple[tuple[NetworkHandle, ServiceNetworkLike | None], ...],
        pin_name: str | None,
        reuse: bool = False,
    ) -> Attachment:
        requests = self._assign(container, networks)
        fd = open_netns(target)
        path = f"/proc/{target}/ns/net" if isinstance(target, int) else target
        pinned = False
        try:
            plans = plan_interfaces(container, requests, netns_id=str(os.fstat(fd).st_ino))
            if not (reuse and attached(fd, plans)):
                setup(container, fd, plans, sysctls=self.sysctls)
            if pin_name is not None:
                if not isinstance(target, int):
                    raise ComposerError(f"container {container}: only a pid's netns can be pinned")
                path = pin(pin_name, target)
                pinned = True
        finally:
            os.close(fd)
        return Attachment(container=container, netns_path=path, interfaces=plans, pinned=pinned)

    def _assign(
        self, container: str, networks: tuple[tuple[NetworkHandle, ServiceNetworkLike | None], ...]
    ) -> list[InterfaceRequest]:

        def change(state: IpamState) -> list[InterfaceRequest]:
            out = []
            for handle, options in networks:
                record = state.get(handle.name)
                if record is None:
                    raise NetworkNotFound(f"container {container}: network {handle.name} does not exist")
                static = options.ipv4_address if options is not None else None
                record = assign_address(record, container, static)
                static6 = options.ipv6_address if options is not None else None
                record = assign_address6(record, container, static6)
                state.put(record)
                address = record.address_of(container)
                assert address is not None
                address6 = record.address6_of(container)
                out.append(
                    InterfaceRequest(
                        network=handle.name,
                        bridge=handle.bridge,
                        bridge_index=handle.bridge_index,
                        address=IPv4Interface(f"{address}/{record.subnet.prefixlen}"),
                        gateway=record.gateway,
                        address6=IPv6Interface(f"{address6}/{record.subnet6.prefixlen}")
                        if address6 is not None and record.subnet6 is not None
                        else None,
                        gateway6=record.gateway6,
                        internal=handle.internal,
                        mtu=handle.mtu,
                        mac_address=options.mac_address if options is not None else None,
                        interface_name=options.interface_name if options is not None else None,
                        priority=options.priority if options is not None else 0,
                        gw_priority=options.gw_priority if options is not None else 0,
                    )
                )
            return out

        return self.store.apply(change)

    async def detach(self, attachment: Attachment, *, release: bool = False, wait: bool = False) -> None:
        """The container is gone (or going): unpin its netns if pinned (lazy teardown: the kernel
        takes the veths), give its addresses back if `release` (the container is being removed), and
        with `wait` return only once the kernel has destroyed the host ends."""
        await trio.to_thread.run_sync(self._detach, attachment, release, wait)

    def _detach(self, attachment: Attachment, release: bool, wait: bool) -> None:
        if attachment.pinned:
            unpin(attachment.netns_path)
        if release:
            self._release(attachment.container, tuple(p.request.network for p in attachment.interfaces))
        if wait and not wait_links_gone(attachment.host_links):
            logger().warning(
                "network.veths_linger", container=attachment.container, links=attachment.host_links
            )

    async def release(self, container: str, networks: Sequence[str] | None = None) -> None:
        """Give back the container's addresses (on `networks`, or all): it is being removed."""
        await trio.to_thread.run_sync(
            self.release_blocking, container, tuple(networks) if networks is not None else None
        )

    def release_blocking(self, container: str, networks: Sequence[str] | None = None) -> None:
        """`release` for a worker thread that has more to do (one thread hop instead of two)."""
        self._release(container, tuple(networks) if networks is not None else None)

    def _release(self, container: str, networks: tuple[str, ...] | None) -> None:
        def change(state: IpamState) -> None:
            for record in state.records():
                if networks is None or record.name in networks:
                    state.put(release_address(record, container))

        self.store.apply(change)


def _handle(record: NetworkRecord) -> NetworkHandle:
    mtu = record.note("mtu")
    return NetworkHandle(
        name=record.name,
        bridge=record.note("bridge") or bridges.bridge_name(record.name),
        bridge_index=0,
        subnet=record.subnet,
        gateway=record.gateway,
        internal=record.note("internal") == "true",
        external=not record.managed,
        mtu=int(mtu) if mtu else None,
        subnet6=record.subnet6,
        gateway6=record.gateway6,
    )


def pin_name_for(container: str) -> str:
    """A stable /run/netns name for a container (`cmn-` + hash)."""
    return short_name("cmn-", container, size=20)
