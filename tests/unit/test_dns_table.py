"""The embedded DNS's names and answers without sockets (composer/network/dns.py)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest
from dnslib import EDNS0, QTYPE, RCODE, DNSRecord

from composer.network.dns import (
    Endpoint,
    Link,
    NameTable,
    NameTables,
    ResolverView,
    Upstream,
    answer,
    parse_links,
    ptr_address,
    udp_payload,
    upstreams_for,
)


def ep(cid: str, name: str, service: str, ip: str, *aliases: str, ip6: str | None = None) -> Endpoint:
    return Endpoint(
        container_id=cid,
        container_name=name,
        service=service,
        aliases=aliases,
        address=IPv4Address(ip),
        address6=IPv6Address(ip6) if ip6 else None,
    )


@pytest.fixture
def tables() -> NameTables:
    tables = NameTables()
    front = tables.table("proj_front")
    front.add(ep("c1", "proj-web-1", "web", "172.30.0.2", "www"))
    front.add(ep("c2", "proj-web-2", "web", "172.30.0.3", "www"))
    front.add(ep("c3", "proj-db-1", "db", "172.30.0.4", "database", "Primary.DB"))
    back = tables.table("proj_back")
    back.add(ep("c3", "proj-db-1", "db", "172.31.0.4", "database"))
    back.add(ep("c4", "proj-cache-1", "cache", "172.31.0.5"))
    return tables


def addresses(view: ResolverView, name: str, qtype: str = "A", rotate: int = 0) -> list[str]:
    reply = answer(view, DNSRecord.question(name, qtype), rotate)
    assert reply is not None and reply.header.rcode == RCODE.NOERROR
    return [str(rr.rdata) for rr in reply.rr]


def rcode(view: ResolverView, name: str, qtype: str = "A") -> int | None:
    reply = answer(view, DNSRecord.question(name, qtype))
    return None if reply is None else int(reply.header.rcode)


# -- the table ---------------------------------------------------------------------------------------------


def test_lookup_by_every_name(tables: NameTables) -> None:
    front = tables.table("proj_front")
    assert [e.container_id for e in front.lookup("web")] == ["c1", "c2"]
    assert [e.container_id for e in front.lookup("www")] == ["c1", "c2"]
    assert [e.container_id for e in front.lookup("proj-web-2")] == ["c2"]
    assert [e.container_id for e in front.lookup("proj-web-2.proj_front")] == ["c2"]
    assert [e.container_id for e in front.lookup("web.proj_front.")] == ["c1", "c2"]
    assert [e.container_id for e in front.lookup("PRIMARY.db")] == ["c3"]  # case-insensitive
    assert front.lookup("proj-web-2.proj_back") == ()
    assert front.lookup("cache") == ()


def test_replace_and_remove_are_seen_at_once(tables: NameTables) -> None:
    front = tables.table("proj_front")
    view = tables.view(["proj_front"])
    assert addresses(view, "proj-web-1") == ["172.30.0.2"]
    front.add(ep("c1", "proj-web-1", "web", "172.30.0.9"))  # recreated, new address, alias dropped
    assert addresses(view, "proj-web-1") == ["172.30.0.9"]
    assert [e.container_id for e in front.lookup("www")] == ["c2"]
    assert front.reverse(IPv4Address("172.30.0.2")) is None
    assert front.remove("c2") and not front.remove("c2")
    assert front.lookup("www") == ()
    assert sorted(addresses(view, "web")) == ["172.30.0.9"]
    tables.remove_container("c3")
    assert front.lookup("db") == () and tables.table("proj_back").lookup("db") == ()


def test_view_sees_only_its_networks_first_network_first(tables: NameTables) -> None:
    front_only = tables.view(["proj_front"])
    both = tables.view(["proj_back", "proj_front"])
    assert rcode(front_only, "cache") == RCODE.NXDOMAIN
    assert addresses(both, "cache") == ["172.31.0.5"]
    assert addresses(both, "db") == ["172.31.0.4"]  # proj_back comes first for this container
    assert addresses(both, "db.proj_front") == ["172.30.0.4"]
    assert addresses(tables.view(["proj_front", "proj_back"]), "db") == ["172.30.0.4"]


# -- answers ---------------------------------------------------------------------------------------------


def test_service_name_gives_every_replica_round_robin(tables: NameTables) -> None:
    view = tables.view(["proj_front"])
    assert addresses(view, "web", rotate=0) == ["172.30.0.2", "172.30.0.3"]
    assert addresses(view, "web", rotate=1) == ["172.30.0.3", "172.30.0.2"]


def test_answer_keeps_the_question_spelling_and_ttl(tables: NameTables) -> None:
    reply = answer(tables.view(["proj_front"]), DNSRecord.question("WeB", "A"))
    assert reply is not None and reply.header.aa == 1
    assert {str(rr.rname) for rr in reply.rr} == {"WeB."}
    assert {rr.ttl for rr in reply.rr} == {600}


def test_aaaa_empty_noerror_or_address(tables: NameTables) -> None:
    view = tables.view(["proj_front"])
    assert addresses(view, "web", "AAAA") == []
    tables.table("proj_front").add(ep("c5", "proj-v6-1", "v6", "172.30.0.8", ip6="fd00::8"))
    assert addresses(view, "v6", "AAAA") == ["fd00::8"]
    assert addresses(view, "v6", "ANY") == ["172.30.0.8", "fd00::8"]
    assert addresses(view, "v6", "MX") == []  # a known name: empty, never forwarded


def test_ptr(tables: NameTables) -> None:
    view = tables.view(["proj_front", "proj_back"])
    assert addresses(view, "3.0.30.172.in-addr.arpa", "PTR") == ["proj-web-2.proj_front."]
    assert addresses(view, "5.0.31.172.in-addr.arpa", "PTR") == ["proj-cache-1.proj_back."]
    assert rcode(view, "9.9.9.9.in-addr.arpa", "PTR") is None  # not ours: forwarded


def test_ptr_address_parsing() -> None:
    assert ptr_address("4.3.2.1.in-addr.arpa.") == IPv4Address("1.2.3.4")
    nibbles = ".".join(reversed("fd000000000000000000000000000008"))
    assert ptr_address(nibbles + ".ip6.arpa") == IPv6Address("fd00::8")
    assert ptr_address("3.2.1.in-addr.arpa") is None
    assert ptr_address("300.2.1.1.in-addr.arpa") is None
    assert ptr_address("example.com") is None


def test_unknown_single_label_nxdomain_dotted_forwarded(tables: NameTables) -> None:
    view = tables.view(["proj_front"])
    assert rcode(view, "nosuch") == RCODE.NXDOMAIN
    assert rcode(view, "nosuch", "AAAA") == RCODE.NXDOMAIN
    assert rcode(view, "example.com") is None
    assert rcode(view, "web.proj_back") is None  # not one of this container's networks


def test_not_a_plain_query() -> None:
    view = ResolverView()
    notify = DNSRecord.question("example.com")
    notify.header.opcode = 4
    reply = answer(view, notify)
    assert reply is not None and reply.header.rcode == RCODE.NOTIMP
    chaos = DNSRecord.question("version.bind", "TXT", "CH")
    assert answer(view, chaos) is None


# -- UDP size and truncation -------------------------------------------------------------------------------


def big_table(replicas: int) -> ResolverView:
    table = NameTable("big")
    for i in range(replicas):
        table.add(ep(f"c{i}", f"big-web-{i}", "web", f"10.0.{i // 250}.{i % 250 + 1}"))
    return ResolverView(tables=(table,))


def test_large_answer_truncated_over_udp() -> None:
    view = big_table(100)  # 100 A records, ~1.6 kB
    query = DNSRecord.question("web")
    reply = answer(view, query)
    assert reply is not None and len(reply.pack()) > 512
    packed = udp_payload(reply, query)
    short = DNSRecord.parse(packed)
    assert len(packed) <= 512 and short.header.tc == 1 and not short.rr
    assert str(short.q.qname) == "web."


def test_edns_size_lets_it_fit() -> None:
    view = big_table(100)
    query = DNSRecord.question("web")
    query.add_ar(EDNS0(udp_len=4096))
    reply = answer(view, query)
    assert reply is not None
    parsed = DNSRecord.parse(udp_payload(reply, query))
    assert parsed.header.tc == 0 and len(parsed.rr) == 100
    assert [r.rtype for r in parsed.ar] == [QTYPE.OPT]


# -- links ------------------------------------------------------------------------------------------------


def test_parse_links() -> None:
    assert parse_links(["db", "cache:memo"], ["other-db-1:legacy", "solo"]) == (
        Link(alias="db", service="db"),
        Link(alias="memo", service="cache"),
        Link(alias="legacy", container="other-db-1"),
        Link(alias="solo", container="solo"),
    )


def test_a_link_alias_resolves_only_in_the_linking_view(tables: NameTables) -> None:
    linking = tables.view(["proj_front", "proj_back"], parse_links(["db:sql", "cache"]))
    other = tables.view(["proj_front", "proj_back"])
    assert addresses(linking, "sql") == ["172.30.0.4"]  # db on the first shared network
    assert addresses(linking, "SQL.proj_back") == ["172.31.0.4"]  # alias.<network>
    assert addresses(linking, "cache") == ["172.31.0.5"]
    assert rcode(other, "sql") == RCODE.NXDOMAIN
    assert addresses(other, "db") == ["172.30.0.4"]
    # a link alias is looked up first: it shadows a name of the network for the linking container only
    shadow = tables.view(["proj_front"], parse_links(["db:www"]))
    assert addresses(shadow, "www") == ["172.30.0.4"]
    assert sorted(addresses(other, "www")) == ["172.30.0.2", "172.30.0.3"]


def test_a_link_to_a_service_gives_its_replicas_and_follows_changes(tables: NameTables) -> None:
    view = tables.view(["proj_front"], parse_links(["web:app"]))
    assert sorted(addresses(view, "app")) == ["172.30.0.2", "172.30.0.3"]
    tables.table("proj_front").remove("c2")
    assert addresses(view, "app") == ["172.30.0.2"]
    tables.table("proj_front").remove("c1")
    assert rcode(view, "app") == RCODE.NXDOMAIN  # a single label nobody has


def test_external_link_by_container_name_or_known_address(tables: NameTables) -> None:
    view = tables.view(
        ["proj_front"],
        (
            Link(alias="legacy", container="proj-db-1"),
            Link(alias="far", container="other-x-1", address=IPv4Address("172.30.0.99")),
        ),
    )
    assert addresses(view, "legacy") == ["172.30.0.4"]
    assert addresses(view, "far") == ["172.30.0.99"]
    assert addresses(view, "far", "AAAA") == []


# -- upstreams -------------------------------------------------------------------------------------------


def test_upstreams_host_or_dns() -> None:
    host = "nameserver 127.0.0.53\nnameserver 2001:db8::53\n"
    assert upstreams_for(host) == (Upstream(address="127.0.0.53"), Upstream(address="2001:db8::53"))
    assert upstreams_for(host, dns=("9.9.9.9",), container_netns="/proc/7/ns/net") == (
        Upstream(address="9.9.9.9", netns="/proc/7/ns/net"),
    )
    assert upstreams_for("") == ()
