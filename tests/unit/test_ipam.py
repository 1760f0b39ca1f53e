"""IPAM, pure: subnet choice, ipam.config validation, addresses, the locked state file."""

from __future__ import annotations

import multiprocessing
import os
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path

import pytest

from composer.network import sysctl as sysctl_module
from composer.network.attach import InterfaceRequest, mac_for, plan_interfaces
from composer.network.ipam import (
    DEFAULT_POOLS,
    IpamError,
    IpamState,
    IpamStore,
    NetworkRecord,
    Pool,
    SubnetRequest,
    assign_address,
    assign_address6,
    choose_subnet,
    parse_pools,
    plan_network,
    release_address,
    ula_base,
)
from composer.network.sysctl import SysctlLedger

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


def test_a_store_sees_every_other_writer_of_the_file(tmp_path: Path) -> None:
    """A store keeps the file as it last read or wrote it, and parses it again only when the file is
    another one: another store's (another process's) writes, even of the same size, are seen."""
    one, other = IpamStore(tmp_path / "network"), IpamStore(tmp_path / "network")
    with one.transaction() as state:
        state.put(_net())
    with other.transaction() as state:
        record = state.get("n")
        assert record is not None
        state.put(assign_address(record, "web-1"))
    assert one.read().get("n") == other.read().get("n") != _net()
    text = one.path.read_text()
    swapped = text.replace('"web-1"', '"web-2"')
    assert len(swapped) == len(text) and swapped != text
    tmp = one.path.with_name("edited")
    tmp.write_text(swapped)
    os.replace(tmp, one.path)  # a writer of the same size: a new file all the same
    record = one.read().get("n")
    assert record is not None and record.address_of("web-2") is not None
    assert record.address_of("web-1") is None


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


def test_changes_from_many_threads_share_transactions_and_a_failing_one_is_undone(tmp_path: Path) -> None:
    import threading

    store = IpamStore(tmp_path / "network")
    with store.transaction() as state:
        state.put(plan_network(SubnetRequest(name="shared", subnet="10.8.0.0/24")))
    writes = 0
    save = store._save

    def counting_save(state: object) -> None:
        nonlocal writes
        writes += 1
        save(state)  # type: ignore[arg-type]

    store._save = counting_save  # type: ignore[method-assign]
    got: dict[str, object] = {}
    start = threading.Barrier(21)

    def grab(name: str) -> None:
        def change(state: IpamState) -> str:
            record = state.get("shared")
            assert record is not None
            record = assign_address(record, name)
            state.put(record)
            if name == "bad":  # after its put: the put must be undone
                raise IpamError("no")
            return str(record.address_of(name))

        start.wait()
        try:
            got[name] = store.apply(change)
        except IpamError as exc:
            got[name] = exc

    threads = [threading.Thread(target=grab, args=(f"c{n}",)) for n in range(19)]
    threads.append(threading.Thread(target=grab, args=("bad",)))
    for thread in threads:
        thread.start()
    start.wait()
    for thread in threads:
        thread.join(timeout=30)
    assert isinstance(got.pop("bad"), IpamError)
    assert len(got) == 19 and len(set(got.values())) == 19  # every one its own address
    record = store.read().get("shared")
    assert record is not None and record.address_of("bad") is None
    assert all(str(record.address_of(name)) == address for name, address in got.items())
    assert 1 <= writes < 19  # grouped: fewer writes of the file than changes


def test_a_network_manager_keeps_one_store_so_releases_from_threads_share_writes(tmp_path: Path) -> None:
    """`down` gives 50 containers' addresses back from 50 worker threads: one store, few writes of the
    file (a new store per call made every release its own transaction, one after another)."""
    import threading

    from composer.network.manager import NetworkManager

    manager = NetworkManager(tmp_path, firewall=None)
    record = plan_network(SubnetRequest(name="shared", subnet="10.9.0.0/24"))
    for n in range(20):
        record = assign_address(record, f"c{n}")
    with manager.store.transaction() as state:
        state.put(record)
    writes = 0
    save = manager.store._save

    def counting_save(state: IpamState) -> None:
        nonlocal writes
        writes += 1
        save(state)

    manager.store._save = counting_save  # type: ignore[method-assign]
    start = threading.Barrier(21)

    def release(name: str) -> None:
        start.wait()
        manager._release(name, None)

    threads = [threading.Thread(target=release, args=(f"c{n}",)) for n in range(20)]
    for thread in threads:
        thread.start()
    start.wait()
    for thread in threads:
        thread.join(timeout=30)
    left = IpamStore(tmp_path / "network").read().get("shared")
    assert left is not None and left.addresses == ()
    assert 1 <= writes < 20


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


# -- IPv6 -----------------------------------------------------------------------------------------------


def test_ula_base_is_a_stable_fd_48() -> None:
    base = ula_base("machine\0/var/lib/composer")
    assert base.prefixlen == 48 and str(base).startswith("fd")
    assert base == ula_base("machine\0/var/lib/composer") != ula_base("machine\0/other")


def test_ipv6_subnet_given_or_from_the_ula_pool() -> None:
    ula = IPv6Network("fd12:3456:789a::/48")
    given = plan_network(SubnetRequest(name="p_six", ipv6=True, subnet6="fd42::/64"), ula=ula)
    assert given.subnet6 == IPv6Network("fd42::/64") and given.gateway6 == IPv6Address("fd42::1")
    pooled = plan_network(SubnetRequest(name="p_a", ipv6=True), [given], ula=ula)
    assert pooled.subnet6 == IPv6Network("fd12:3456:789a::/64")
    host = [IPv6Network("fd12:3456:789a:1::/64"), IPv6Network("fe80::/64")]
    second = plan_network(SubnetRequest(name="p_b", ipv6=True), [given, pooled], ula=ula, host6=host)
    assert second.subnet6 == IPv6Network("fd12:3456:789a:2::/64")  # skips the host's and composer's
    assert plan_network(SubnetRequest(name="p_c"), ula=ula).subnet6 is None  # no enable_ipv6
    with pytest.raises(IpamError, match="overlaps fd42::/64"):
        plan_network(SubnetRequest(name="p_d", ipv6=True, subnet6="fd42::/56"), [given], ula=ula)
    with pytest.raises(IpamError, match="host bits"):
        plan_network(SubnetRequest(name="p_e", ipv6=True, subnet6="fd43::1/64"), ula=ula)
    with pytest.raises(IpamError, match="not an IPv6 subnet"):
        plan_network(SubnetRequest(name="p_f", ipv6=True, subnet6="10.0.0.0/24"), ula=ula)
    with pytest.raises(IpamError, match="gateway fd44::1:0:0:1 is not a host address"):
        plan_network(
            SubnetRequest(name="p_g", ipv6=True, subnet6="fd44::/96", gateway6="fd44::1:0:0:1"), ula=ula
        )


def test_ipv6_addresses_static_dynamic_stable_released() -> None:
    record = plan_network(SubnetRequest(name="p_six", ipv6=True, subnet6="fd42::/64"))
    record = assign_address6(record, "c-1")
    record = assign_address6(record, "c-2", "fd42::10")
    record = assign_address6(record, "c-3")
    assert record.address6_of("c-1") == IPv6Address("fd42::2")
    assert record.address6_of("c-2") == IPv6Address("fd42::10")
    assert record.address6_of("c-3") == IPv6Address("fd42::3")
    assert assign_address6(record, "c-1") == record  # stable
    with pytest.raises(IpamError, match="already used by c-2"):
        assign_address6(record, "c-4", "fd42::10")
    with pytest.raises(IpamError, match="not a free host address"):
        assign_address6(record, "c-4", "fd42::1")  # the gateway
    with pytest.raises(IpamError, match="not an IPv6 address"):
        assign_address6(record, "c-4", "10.0.0.1")
    released = release_address(record, "c-1")
    assert released.address6_of("c-1") is None and assign_address6(released, "c-5").address6_of(
        "c-5"
    ) == IPv6Address("fd42::2")
    v4only = plan_network(SubnetRequest(name="p_four"))
    assert assign_address6(v4only, "c-1") == v4only
    with pytest.raises(IpamError, match="set enable_ipv6"):
        assign_address6(v4only, "c-1", "fd42::5")


def test_ipv6_record_roundtrip(tmp_path: Path) -> None:
    record = plan_network(
        SubnetRequest(name="p_six", ipv6=True, subnet6="fd42::/64", ip_range6="fd42::100/120")
    )
    record = assign_address6(assign_address(record, "c-1"), "c-1")
    assert record.address6_of("c-1") == IPv6Address("fd42::100")
    assert NetworkRecord.from_json("p_six", record.to_json()) == record


# -- the sysctl ledger ------------------------------------------------------------------------------------


def test_sysctl_ledger_restores_the_value_found_when_the_last_holder_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sysctl_module, "PROC_SYS", str(tmp_path / "proc-sys") + "/")  # a stand-in tree
    knob = tmp_path / "proc-sys" / "route_localnet"
    knob.parent.mkdir()
    knob.write_text("0\n")
    ledger = SysctlLedger(tmp_path / "state")
    path = str(knob)
    ledger.hold(path, "1", holder="p_a")
    ledger.hold(path, "1", holder="p_b")
    assert knob.read_text().strip() == "1"
    assert ledger.held()[path] == ("0", "1", ("p_a", "p_b"))
    assert ledger.release("p_a") == [] and knob.read_text().strip() == "1"
    assert ledger.release("p_b") == [path] and knob.read_text().strip() == "0"
    assert ledger.held() == {} and not ledger.path.exists() and ledger.lock_path.exists()
    # someone else changed it while we held it: theirs stays
    ledger.hold(path, "1", holder="p_a")
    knob.write_text("2\n")
    assert ledger.release("p_a") == [] and knob.read_text().strip() == "2"
    # a setting whose file went (its bridge was deleted) is forgotten
    ledger.hold(path, "1", holder="p_a")
    knob.unlink()
    assert ledger.release("p_a") == [] and ledger.held() == {}
    # a ledger entry outside /proc/sys is never acted on
    ledger.path.write_text(
        '{"sysctls": {"/etc/passwd": {"previous": "x", "value": "y", "holders": ["p_a"]}}}'
    )
    assert ledger.held() == {} and ledger.release("p_a") == []
