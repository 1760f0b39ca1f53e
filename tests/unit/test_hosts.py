"""A container's /etc/hosts and /etc/resolv.conf text (composer/network/hosts.py), Docker's rules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from composer.network.hosts import (
    FALLBACK_NAMESERVERS,
    HostsError,
    hosts_file,
    parse_extra_host,
    parse_resolv_conf,
    resolv_conf,
    rewrite_in_place,
)

LOCALHOST = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)

HOST_RESOLV = """\
# This is /etc/resolv.conf of the host
nameserver 127.0.0.53
nameserver 10.1.2.3
search corp.example lab.example
options edns0 trust-ad
"""


# -- /etc/hosts ------------------------------------------------------------------------------------------


def test_hosts_like_docker_localhost_extra_then_own_lines() -> None:
    text = hosts_file(
        hostname="abc123def456", addresses=("172.30.0.2", "172.31.0.5"), extra_hosts=("db=10.0.0.9",)
    )
    assert text == LOCALHOST + "10.0.0.9\tdb\n172.30.0.2\tabc123def456\n172.31.0.5\tabc123def456\n"


def test_hosts_domainname_gives_fqdn_then_short_name() -> None:
    text = hosts_file(hostname="web", domainname="example.org", addresses=("172.30.0.2",))
    assert text.endswith("172.30.0.2\tweb.example.org web\n")


def test_hosts_hostname_already_fqdn() -> None:
    text = hosts_file(hostname="web.example.org", addresses=("172.30.0.2",))
    assert text.endswith("172.30.0.2\tweb.example.org web\n")


def test_hosts_network_none_has_no_own_line() -> None:
    assert hosts_file(hostname="web", addresses=()) == LOCALHOST


def test_hosts_network_host_copies_host_file_and_appends_extra_hosts() -> None:
    base = "127.0.0.1 localhost\n192.168.1.5 myhost"
    assert hosts_file(hostname="x", base=base) == base + "\n"
    assert hosts_file(hostname="x", base=base, extra_hosts=("a=1.2.3.4",)) == base + "\n1.2.3.4\ta\n"


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("db=10.0.0.9", ("10.0.0.9", "db")),
        ("db:10.0.0.9", ("10.0.0.9", "db")),
        ("v6=[::1]", ("::1", "v6")),
        ("v6=2001:db8::1", ("2001:db8::1", "v6")),
        ("host.docker.internal=host-gateway", ("172.30.0.1", "host.docker.internal")),
    ],
)
def test_extra_host_forms(entry: str, expected: tuple[str, str]) -> None:
    assert parse_extra_host(entry, host_gateway="172.30.0.1") == expected


@pytest.mark.parametrize("entry", ["nohost", "db=", "=1.2.3.4", "db=not-an-ip", "gw=host-gateway"])
def test_extra_host_errors(entry: str) -> None:
    with pytest.raises(HostsError, match="extra_hosts"):
        parse_extra_host(entry)


# -- /etc/resolv.conf ----------------------------------------------------------------------------------


def test_parse_resolv_conf() -> None:
    conf = parse_resolv_conf(HOST_RESOLV + "nameserver bogus\ndomain other.example\noptions ndots:2\n")
    assert conf.nameservers == ("127.0.0.53", "10.1.2.3")
    assert conf.search == ("other.example",)  # the last search/domain line wins
    assert conf.options == ("edns0", "trust-ad", "ndots:2")


def test_embedded_keeps_host_search_and_options_adds_ndots0() -> None:
    assert resolv_conf(HOST_RESOLV) == (
        "nameserver 127.0.0.11\nsearch corp.example lab.example\noptions edns0 trust-ad ndots:0\n"
    )


def test_embedded_plain_host() -> None:
    assert resolv_conf("nameserver 10.255.255.53\n") == "nameserver 127.0.0.11\noptions ndots:0\n"


def test_embedded_dns_options_override_and_user_ndots_wins() -> None:
    text = resolv_conf(
        HOST_RESOLV, dns=("9.9.9.9",), dns_search=("svc.example",), dns_opt=("ndots:3", "rotate")
    )
    # `dns` servers are the embedded server's upstreams, never listed
    assert text == "nameserver 127.0.0.11\nsearch svc.example\noptions ndots:3 rotate\n"


def test_embedded_dns_search_dot_means_none() -> None:
    assert resolv_conf(HOST_RESOLV, dns_search=(".",)) == (
        "nameserver 127.0.0.11\noptions edns0 trust-ad ndots:0\n"
    )


def test_host_mode_copies_verbatim_without_options() -> None:
    assert resolv_conf(HOST_RESOLV, mode="host") == HOST_RESOLV


def test_host_mode_with_dns_builds_file() -> None:
    assert resolv_conf(HOST_RESOLV, mode="host", dns=("1.1.1.1",)) == (
        "nameserver 1.1.1.1\nsearch corp.example lab.example\noptions edns0 trust-ad\n"
    )


def test_none_mode_drops_loopback_nameservers() -> None:
    assert resolv_conf(HOST_RESOLV, mode="none") == HOST_RESOLV.replace("nameserver 127.0.0.53\n", "")


def test_none_mode_falls_back_to_docker_defaults() -> None:
    text = resolv_conf("nameserver 127.0.0.53\nnameserver ::1\nsearch x\n", mode="none")
    assert text == "search x\n" + "".join(f"nameserver {ns}\n" for ns in FALLBACK_NAMESERVERS)


def test_none_mode_with_options_builds_file() -> None:
    assert resolv_conf(HOST_RESOLV, mode="none", dns_opt=("use-vc",)) == (
        "nameserver 127.0.0.53\nnameserver 10.1.2.3\nsearch corp.example lab.example\noptions use-vc\n"
    )


# -- rewriting a bind-mounted file ---------------------------------------------------------------------


def test_rewrite_in_place_keeps_inode_and_shrinks(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    assert rewrite_in_place(path, "a long first content\n" * 10)
    inode = os.stat(path).st_ino
    assert rewrite_in_place(path, "short\n")
    assert path.read_text() == "short\n"
    assert os.stat(path).st_ino == inode
    assert not rewrite_in_place(path, "short\n")  # unchanged: not written
    assert rewrite_in_place(path, "longer than before\n")
    assert path.read_text() == "longer than before\n" and os.stat(path).st_ino == inode
