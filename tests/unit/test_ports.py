"""Published ports without the kernel's NAT: requests from the model, holding host ports (real
sockets on 127.0.0.1 only), lookup, and the nft rule text and state parsing."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from ipaddress import IPv4Address

import pytest

from composer.network.firewall import Dnat, TableState
from composer.network.ports import (
    ContainerPorts,
    PortBinding,
    PortError,
    PortInUse,
    PortRequest,
    lookup,
    port_requests,
    reserve,
)
from composer.spec.model import Port
from composer.spec.normalize import parse_port


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def busy() -> Iterator[int]:
    """A port some host process listens on (127.0.0.1)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def short(*specs: str) -> list[Port]:
    return [p for spec in specs for p in parse_port(spec)]


def can_bind(port: int, kind: int = socket.SOCK_STREAM) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


# --- requests -------------------------------------------------------------------------------------------


def test_requests_from_short_syntax() -> None:
    got = port_requests(
        "web", short("8080:80", "127.0.0.1:53:53/udp", "9000", "8000-8001:80-81", "7000-7010:22")
    )
    assert got == (
        PortRequest(service="web", target=80, first=8080, last=8080, any_family=True),
        PortRequest(service="web", target=53, protocol="udp", host_ip="127.0.0.1", first=53, last=53),
        PortRequest(service="web", target=9000, any_family=True),
        PortRequest(service="web", target=80, first=8000, last=8000, any_family=True),
        PortRequest(service="web", target=81, first=8001, last=8001, any_family=True),
        PortRequest(service="web", target=22, first=7000, last=7010, any_family=True),
    )
    assert got[2].ephemeral and got[2].describe() == "an ephemeral port/tcp"
    assert got[5].describe() == "host port 7000-7010/tcp"


def test_requests_from_long_syntax_and_ipv6() -> None:
    got = port_requests("db", [Port(target=5432, published="15432", host_ip="::1", protocol="TCP")])
    assert got == (PortRequest(service="db", target=5432, host_ip="::1", first=15432, last=15432),)
    assert got[0].ipv6


@pytest.mark.parametrize(
    ("port", "message"),
    [
        (Port(target=80, protocol="sctp"), "service web: port 80/sctp: only tcp and udp can be published"),
        (Port(target=80, host_ip="localhost"), "service web: host_ip 'localhost' is not an IP address"),
        (Port(target=80, published="80-x"), "service web: published port '80-x' is not a port or range"),
        (Port(target=80, published="90-80"), "service web: published port '90-80' must be 1-65535"),
        (Port(target=80, published="70000"), "service web: published port '70000' must be 1-65535"),
        (Port(target=0), "service web: container port 0 must be 1-65535"),
    ],
)
def test_invalid_requests_name_the_service(port: Port, message: str) -> None:
    with pytest.raises(PortError) as caught:
        port_requests("web", [port])
    assert str(caught.value).startswith(message)


# --- holding ports --------------------------------------------------------------------------------------


def test_fixed_port_is_held_until_closed() -> None:
    port = free_port()
    with reserve(
        [ContainerPorts(container="p-web-1", service="web", ports=short(f"127.0.0.1:{port}:80"))]
    ) as r:
        (binding,) = r.bindings()
        assert binding == PortBinding(
            container="p-web-1", service="web", target=80, protocol="tcp", host_ip="127.0.0.1", host_port=port
        )
        assert str(binding) == f"127.0.0.1:{port}->80/tcp"
        assert not can_bind(port)
    assert can_bind(port)


def test_port_in_use_is_an_error_naming_service_and_port(busy: int) -> None:
    with pytest.raises(PortInUse) as caught:
        reserve([ContainerPorts(container="p-web-1", service="web", ports=short(f"{busy}:443"))])
    assert str(caught.value) == f"service web: host port {busy}/tcp is already in use"
    with pytest.raises(PortInUse, match=f"service web: host port {busy}/tcp on 127.0.0.1 is already in use"):
        reserve([ContainerPorts(container="p-web-1", service="web", ports=short(f"127.0.0.1:{busy}:443"))])


def test_failure_holds_nothing(busy: int) -> None:
    first = free_port()
    wanted = [
        ContainerPorts(container="p-a-1", service="a", ports=short(f"127.0.0.1:{first}:80")),
        ContainerPorts(container="p-b-1", service="b", ports=short(f"127.0.0.1:{busy}:80")),
    ]
    with pytest.raises(PortInUse, match="service b:"):
        reserve(wanted)
    assert can_bind(first)


def test_ephemeral_port_is_the_kernels_choice_and_held() -> None:
    wanted = [
        ContainerPorts(
            container="p-web-1", service="web", ports=short("127.0.0.1::9000", "127.0.0.1::9000/udp")
        )
    ]
    with reserve(wanted) as r:
        held = r.take("p-web-1")
        tcp, udp = held.bindings
        assert tcp.host_port > 0 and udp.host_port > 0 and udp.protocol == "udp"
        assert held.sockets[tcp].getsockname()[1] == tcp.host_port
        assert not can_bind(tcp.host_port) and not can_bind(udp.host_port, socket.SOCK_DGRAM)
        assert lookup(held.bindings, "p-web-1", 9000) == [f"127.0.0.1:{tcp.host_port}"]
        assert lookup(held.bindings, "p-web-1", 9000, "udp") == [f"127.0.0.1:{udp.host_port}"]
        assert lookup(held.bindings, "p-web-1", 9001) == []
        held.close()
        assert can_bind(tcp.host_port)


def ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_dual_stack_holds_the_same_port_on_ipv6_when_no_host_ip_is_given() -> None:
    if not ipv6_available():
        pytest.skip("no IPv6 on this host")
    wanted = [
        ContainerPorts(
            container="p-web-1", service="web", ports=short("9000", "127.0.0.1::9001", "0.0.0.0::9002")
        )
    ]
    with reserve(wanted, dual_stack=True) as r:
        held = r.take("p-web-1")
        four, six, loop, explicit = held.bindings  # only the port without host_ip is doubled
        assert (four.host_ip, six.host_ip) == ("0.0.0.0", "::") and four.host_port == six.host_port > 0
        assert str(six) == f"[::]:{six.host_port}->9000/tcp" and six.ipv6
        assert loop.host_ip == "127.0.0.1" and explicit.host_ip == "0.0.0.0"
        with socket.socket(socket.AF_INET6) as probe, pytest.raises(OSError):
            probe.bind(("::", six.host_port))
        held.close()
    with reserve(wanted) as r:  # without dual_stack: IPv4 only
        assert [b.host_ip for b in r.bindings()] == ["0.0.0.0", "127.0.0.1", "0.0.0.0"]


def test_dual_stack_publishes_ipv4_only_when_the_ipv6_port_is_taken() -> None:
    if not ipv6_available():
        pytest.skip("no IPv6 on this host")
    with socket.socket(socket.AF_INET6) as other:
        other.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        other.bind(("::", 0))
        other.listen()
        port = other.getsockname()[1]
        wanted = [ContainerPorts(container="p-web-1", service="web", ports=short(f"{port}:80"))]
        try:
            reservation = reserve(wanted, dual_stack=True)
        except PortInUse:
            pytest.skip(f"port {port} is busy on IPv4 too")
        with reservation as r:
            assert [b.host_ip for b in r.bindings()] == ["0.0.0.0"]


def two_listeners() -> tuple[socket.socket, socket.socket]:
    """Listeners on two consecutive ports of 127.0.0.1 (retried a few times)."""
    for _ in range(20):
        first = socket.socket()
        first.bind(("127.0.0.1", 0))
        second = socket.socket()
        try:
            second.bind(("127.0.0.1", first.getsockname()[1] + 1))
        except OSError:
            first.close()
            second.close()
            continue
        first.listen()
        second.listen()
        return first, second
    pytest.skip("no two consecutive free ports")


def test_range_takes_the_first_free_port() -> None:
    first, second = two_listeners()
    base = first.getsockname()[1]
    wanted = [
        ContainerPorts(container="p-web-1", service="web", ports=short(f"127.0.0.1:{base}-{base + 1}:80"))
    ]
    try:
        with pytest.raises(PortInUse) as caught:
            reserve(wanted)
        assert str(caught.value) == (
            f"service web: no free host port in {base}-{base + 1}/tcp (the last already in use)"
        )
        second.close()
        with reserve(wanted) as r:
            assert [b.host_port for b in r.bindings()] == [base + 1]
    finally:
        first.close()
        second.close()


def test_two_services_asking_for_one_port() -> None:
    port = free_port()
    wanted = [
        ContainerPorts(container="p-a-1", service="a", ports=short(f"{port}:80")),
        ContainerPorts(container="p-b-1", service="b", ports=short(f"127.0.0.1:{port}:80")),
    ]
    with pytest.raises(
        PortInUse, match=f"service b: host port {port}/tcp on 127.0.0.1 is already taken by service a"
    ):
        reserve(wanted)
    udp_and_tcp = [
        ContainerPorts(container="p-a-1", service="a", ports=short(f"127.0.0.1:{port}:80")),
        ContainerPorts(container="p-b-1", service="b", ports=short(f"127.0.0.1:{port}:80/udp")),
    ]
    with reserve(udp_and_tcp) as r:
        assert len(r.bindings()) == 2


def test_replicas_share_a_range() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1]
    ports = [Port(target=80, published=f"{base}-{base + 20}", host_ip="127.0.0.1")]
    wanted = [ContainerPorts(container=f"p-web-{i}", service="web", ports=ports) for i in (1, 2)]
    try:
        r = reserve(wanted)
    except PortInUse:
        pytest.skip("the range is busy on this host")
    with r:
        one, two = (r.held[f"p-web-{i}"].bindings[0].host_port for i in (1, 2))
        assert one != two and base <= one <= base + 20 and base <= two <= base + 20


def test_composer_rules_in_the_kernel_count_as_taken() -> None:
    port = free_port()
    rule = Dnat(
        container="other-web-1",
        protocol="tcp",
        host_ip=None,
        host_port=port,
        address=IPv4Address("10.1.0.2"),
        target=80,
    )
    wanted = [ContainerPorts(container="p-web-1", service="web", ports=short(f"127.0.0.1:{port}:80"))]
    with pytest.raises(PortInUse, match="already published by container other-web-1"):
        reserve(wanted, taken=[rule])
    # the container's own rules (it is being re-created) do not count
    with reserve(wanted, taken=[Dnat(**{**_fields(rule), "container": "p-web-1"})]):
        pass


def _fields(rule: Dnat) -> dict[str, object]:
    return {f: getattr(rule, f) for f in Dnat.__dataclass_fields__}


# --- kernel rules as text ---------------------------------------------------------------------------------


def test_dnat_key_comment_and_parse() -> None:
    rule = Dnat(
        container="p-web-1",
        protocol="udp",
        host_ip=IPv4Address("127.0.0.1"),
        host_port=5353,
        address=IPv4Address("10.1.0.2"),
        target=53,
    )
    assert rule.key == "127.0.0.1 . udp . 5353"
    assert rule.comment() == "udp 127.0.0.1:5353 10.1.0.2:53"
    assert Dnat.from_comment("p-web-1", rule.comment()) == rule
    assert Dnat.from_comment("p-web-1", "nonsense") is None
    binding = PortBinding.from_dnat(rule, "web")
    assert binding.host == "127.0.0.1:5353" and binding.dnat(rule.address) == rule
    any_rule = PortBinding(
        container="c", service="s", target=80, protocol="tcp", host_ip="0.0.0.0", host_port=8080
    )
    assert any_rule.dnat(rule.address).host_ip is None and any_rule.dnat(rule.address).key == "tcp . 8080"
    with pytest.raises(PortError, match="IPv6"):
        PortBinding(container="c", service="s", target=80, protocol="tcp", host_ip="::1", host_port=1).dnat(
            rule.address
        )


def test_table_state_reads_published_rules() -> None:
    data = {
        "nftables": [
            {"chain": {"name": "pub-p-web-1"}},
            {"rule": {"chain": "pub-p-web-1", "comment": "tcp 0.0.0.0:8080 10.1.0.2:80", "expr": []}},
            {"rule": {"chain": "forward", "expr": []}},
            {
                "map": {
                    "name": "pub_any",
                    "elem": [[{"concat": ["tcp", 8080]}, {"jump": {"target": "pub-p-web-1"}}]],
                }
            },
        ]
    }
    state = TableState.parse(data)
    assert state.dnat == (
        Dnat(
            container="p-web-1",
            protocol="tcp",
            host_ip=None,
            host_port=8080,
            address=IPv4Address("10.1.0.2"),
            target=80,
        ),
    )
    assert "pub-p-web-1" in state.chains
