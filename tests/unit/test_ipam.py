"""IPAM, pure: subnet choice, ipam.config validation, addresses, the locked state file."""

from __future__ import annotations

import multiprocessing
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from composer.network.attach import InterfaceRequest, mac_for, plan_interfaces
from composer.network.ipam import (
    DEFAULT_POOLS,
    IpamError,
    IpamStore,
    NetworkRecord,
    Pool,
    SubnetRequest,
    assign_address,
    choose_subnet,
    parse_pools,
    plan_network,
    release_address,
)

N = IPv4Network
A = IPv4Address


def test_default_pools_are_dockers() -> None:
    subnets = [s for p in DEFAULT_POOLS for s in p.subnets()]
    assert subnets[0] == N("172.17.0.0/16") and subnets[14] == N("172.31.0.0/16")
    assert subnets[15] == N("192.168.0.0/20") and subnets[-1] == N("192.168.240.0/20")
    assert len(subnets) == 15 + 16


def test_choose_skips_docker0_and_host_routes() -> None:
    assert choose_subnet(DEFAULT_POOLS, [N("172.17.0.0/16")]) == N("172.18.0.0/16")
    # a small route inside a candidate rules the whole candidate out
    assert choose_subnet(DEFAULT_POOLS, [N("172.17.0.0/16"), N("172.18.5.0/24")]) == N("172.19.0.0/16")
    # a large route covering many candidates
    assert choose_subnet(DEFAULT_POOLS, [N("172.16.0.0/12")]) == N("192.168.0.0/20")


def test_choose_is_deterministic_and_exhaustion_is_an_error() -> None:
    pools = (Pool(N("10.1.0.0/23"), 24),)
    assert choose_subnet(pools, []) == choose_subnet(pools, []) == N("10.1.0.0/24")
    assert choose_subnet(pools, [N("10.1.0.0/24")]) == N("10.1.1.0/24")
    with pytest.raises(IpamError, match="no free subnet"):
        choose_subnet(pools, [N("10.1.0.0/23")], name="p_default")


def test_parse_pools() -> None:
    assert parse_pools("10.10.0.0/16/24, 172.30.0.0/16") == (
        Pool(N("10.10.0.0/16"), 24),
        Pool(N("172.30.0.0/16"), 16),
    )
    with pytest.raises(IpamError):
        parse_pools("10.10.0.0/16/8")
    with pytest.raises(IpamError):
        parse_pools("nonsense")


def test_plan_avoids_other_composer_networks_and_host() -> None:
    other = NetworkRecord(name="a_default", subnet=N("172.18.0.0/16"), gateway=A("172.18.0.1"))
    record = plan_network(SubnetRequest(name="b_default"), [other], host=[N("172.17.0.0/16"), N("0.0.0.0/0")])
    assert record.subnet == N("172.19.0.0/16") and record.gateway == A("172.19.0.1")


def test_explicit_ipam_config_is_validated() -> None:
    ok = plan_network(
        SubnetRequest(
            name="n",
            subnet="10.5.0.0/24",
            gateway="10.5.0.254",
            ip_range="10.5.0.128/25",
            aux_addresses=(("printer", "10.5.0.200"),),
        )
    )
    assert (ok.subnet, ok.gateway, ok.ip_range, ok.reserved) == (
        N("10.5.0.0/24"),
        A("10.5.0.254"),
        N("10.5.0.128/25"),
        (A("10.5.0.200"),),
    )
    bad = {
        "host bits": SubnetRequest(name="n", subnet="10.5.0.1/24"),
        "not an IPv4 subnet": SubnetRequest(name="n", subnet="banana"),
        "not a host address": SubnetRequest(name="n", subnet="10.5.0.0/24", gateway="10.5.1.1"),
        "not inside subnet": SubnetRequest(name="n", subnet="10.5.0.0/24", ip_range="10.6.0.0/25"),
        "need a subnet": SubnetRequest(name="n", gateway="10.5.0.1"),
        "aux_addresses.x": SubnetRequest(name="n", subnet="10.5.0.0/24", aux_addresses=(("x", "10.9.9.9"),)),
    }
    for message, request in bad.items():
        with pytest.raises(IpamError, match=message):
            plan_network(request)
    other = NetworkRecord(name="o", subnet=N("10.5.0.0/16"), gateway=A("10.5.0.1"))
    with pytest.raises(IpamError, match="overlaps network o"):
        plan_network(SubnetRequest(name="n", subnet="10.5.3.0/24"), [other])
    with pytest.raises(IpamError, match="already on this host"):
        plan_network(SubnetRequest(name="n", subnet="10.5.3.0/24"), host=[N("10.5.0.0/16")])


def _net(**changes: object) -> NetworkRecord:
    return plan_network(SubnetRequest(name="n", subnet="10.5.0.0/29", **changes))  # type: ignore[arg-type]


def test_addresses_first_free_stable_and_released() -> None:
    record = _net()
    record = assign_address(record, "web-1")
    record = assign_address(record, "db-1")
    assert record.address_of("web-1") == A("10.5.0.2") and record.address_of("db-1") == A("10.5.0.3")
    assert assign_address(record, "web-1") == record  # a restart keeps it
    record = release_address(record, "web-1")
    assert record.address_of("web-1") is None
    record = assign_address(record, "cache-1")
    assert record.address_of("cache-1") == A("10.5.0.2")  # first free again


def test_static_addresses() -> None:
    record = assign_address(_net(), "web-1", "10.5.0.5")
    assert record.address_of("web-1") == A("10.5.0.5")
    with pytest.raises(IpamError, match="already used by web-1"):
        assign_address(record, "db-1", "10.5.0.5")
    with pytest.raises(IpamError, match="not inside"):
        assign_address(record, "db-1", "10.6.0.5")
    with pytest.raises(IpamError, match="reserved"):
        assign_address(record, "db-1", "10.5.0.1")  # the gateway
    with pytest.raises(IpamError, match="not an IPv4 address"):
        assign_address(record, "db-1", "nope")
    # a dynamic address skips the static one
    record = assign_address(assign_address(record, "a"), "b")
    assert [str(a) for _, a in record.addresses] == ["10.5.0.2", "10.5.0.3", "10.5.0.5"]


def test_ip_range_excludes_broadcast_and_runs_out() -> None:
    record = _net(ip_range="10.5.0.4/30")
    for name in ("a", "b", "c"):
        record = assign_address(record, name)
    assert [record.address_of(n) for n in "abc"] == [A("10.5.0.4"), A("10.5.0.5"), A("10.5.0.6")]
    with pytest.raises(IpamError, match="no free address"):
        assign_address(record, "d")


def test_store_roundtrip(tmp_path: Path) -> None:
    store = IpamStore(tmp_path / "network")
    with store.transaction() as state:
        record = assign_address(_net(aux_addresses=(("x", "10.5.0.6"),)), "web-1")
        state.put(record)
    assert store.read().get("n") == record
    with store.transaction() as state:
        state.drop("n")
    assert store.read().records() == ()


def _grab(folder: str, name: str, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    store = IpamStore(Path(folder))
    got = []
    for i in range(20):
        with store.transaction() as state:
            record = state.get("shared")
            assert record is not None
            record = assign_address(record, f"{name}-{i}")
            state.put(record)
            got.append(str(record.address_of(f"{name}-{i}")))
    queue.put(got)


def test_two_processes_never_hand_out_the_same_address(tmp_path: Path) -> None:
    folder = tmp_path / "network"
    with IpamStore(folder).transaction() as state:
        state.put(plan_network(SubnetRequest(name="shared", subnet="10.7.0.0/24")))
    ctx = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    workers = [ctx.Process(target=_grab, args=(str(folder), f"p{n}", queue)) for n in range(3)]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    everything = [a for r in results for a in r]
    assert len(everything) == 60 and len(set(everything)) == 60


def test_interfaces_are_ordered_named_and_routed() -> None:
    from ipaddress import IPv4Interface

    def req(
        net: str, prio: int = 0, gw: int = 0, internal: bool = False, name: str | None = None
    ) -> InterfaceRequest:
        return InterfaceRequest(
            network=net,
            bridge="b",
            bridge_index=1,
            address=IPv4Interface("10.0.0.2/24"),
            gateway=A("10.0.0.1"),
            priority=prio,
            gw_priority=gw,
            internal=internal,
            interface_name=name,
        )

    plans = plan_interfaces("web-1", [req("back", internal=True), req("front", prio=5), req("mid")])
    assert [(p.request.network, p.ifname, p.default_route) for p in plans] == [
        ("front", "eth0", True),
        ("back", "eth1", False),
        ("mid", "eth2", False),
    ]
    plans = plan_interfaces("web-1", [req("a"), req("b", gw=3)])
    assert [p.default_route for p in plans] == [False, True]
    plans = plan_interfaces("web-1", [req("a"), req("b", name="eth0")])
    assert [p.ifname for p in plans] == ["eth1", "eth0"]
    assert all(len(p.host_ifname) == 15 for p in plans)
    assert plan_interfaces("web-1", [req("a", internal=True)])[0].default_route is False
    assert mac_for(A("172.18.0.2")) == "02:42:ac:12:00:02"
