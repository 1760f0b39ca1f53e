"""A container's /etc/hosts and /etc/resolv.conf, as Docker writes them (pure text, plus one writer).

    hosts_file(hostname="web", addresses=("172.30.0.2",), extra_hosts=("db=10.0.0.9",))
    resolv_conf(host_text, mode="embedded", dns_search=("corp.example",))
    rewrite_in_place(path, text)     # the host-side file that is bind-mounted into the container

Docker's rules (moby: libnetwork/etchosts/etchosts.go, libnetwork/sandbox_dns_unix.go,
libnetwork/resolvconf):

- /etc/hosts: the six localhost lines, then `extra_hosts` (`IP<TAB>NAME`, in the given order), then one
  line per address of the container: `IP<TAB>FQDN HOSTNAME` where FQDN is `hostname.domainname` (the
  bare name follows only when the FQDN has a dot). `network_mode: host` copies the host's /etc/hosts
  (Docker then drops the host's lines when `extra_hosts` is set; we append the extra hosts to them
  instead, which is what a user of `extra_hosts` with the host network means). `none` has no address,
  so no own line.
- /etc/resolv.conf on user-defined networks ("embedded"): `nameserver 127.0.0.11`; `search` from
  `dns_search` or else the host's; `options` from `dns_opt` or else the host's, plus `ndots:0` unless an
  ndots option is already there. The host's nameservers (or `dns`) are not listed: they become the
  embedded server's upstreams (`composer.network.dns.upstreams_for`).
- `network_mode: host`: the host's file verbatim, or when `dns`/`dns_search`/`dns_opt` is set, a file
  built from them with the host's values for the rest.
- `network_mode: none`: as Docker's default bridge: with any of the three options, the file built from
  them; otherwise the host's file without loopback nameservers (unreachable from another netns), and
  Docker's fallback nameservers (8.8.8.8, 8.8.4.4 and their IPv6 twins) when none is left.

`dns_search: ["."]` means no search line (Docker's rule).
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from composer.errors import ComposerError

__all__ = [
    "DEFAULT_HOSTS",
    "EMBEDDED_NAMESERVER",
    "FALLBACK_NAMESERVERS",
    "HostsError",
    "ResolvConf",
    "hosts_file",
    "own_names",
    "parse_extra_host",
    "parse_resolv_conf",
    "resolv_conf",
    "rewrite_in_place",
]

EMBEDDED_NAMESERVER = "127.0.0.11"

DEFAULT_HOSTS: tuple[tuple[str, str], ...] = (
    ("127.0.0.1", "localhost"),
    ("::1", "localhost ip6-localhost ip6-loopback"),
    ("fe00::0", "ip6-localnet"),
    ("ff00::0", "ip6-mcastprefix"),
    ("ff02::1", "ip6-allnodes"),
    ("ff02::2", "ip6-allrouters"),
)

# moby libnetwork/resolvconf: what a container without any reachable nameserver gets.
FALLBACK_NAMESERVERS = ("8.8.8.8", "8.8.4.4", "2001:4860:4860::8888", "2001:4860:4860::8844")

ResolvMode = Literal["embedded", "host", "none"]


class HostsError(ComposerError):
    """An `extra_hosts` entry that cannot be written (bad address, host-gateway without a gateway)."""


# -- /etc/hosts ---------------------------------------------------------------------------------------------


def parse_extra_host(entry: str, host_gateway: str = "") -> tuple[str, str]:
    """`"name=ip"` (the normalized form; `name:ip` is accepted too) -> (address, name).

    `host-gateway` becomes `host_gateway` (Docker: the host's address as seen from the container);
    IPv6 addresses may be bracketed (`[::1]`)."""
    name, sep, address = entry.partition("=")
    if not sep:
        name, sep, address = entry.partition(":")
    name, address = name.strip(), address.strip()
    if not sep or not name or not address:
        raise HostsError(f"extra_hosts: {entry!r} must be HOST=IP")
    if address == "host-gateway":
        if not host_gateway:
            raise HostsError(f"extra_hosts: {entry!r}: no host gateway address is known for this container")
        address = host_gateway
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise HostsError(f"extra_hosts: {entry!r}: {address!r} is not an IP address") from None
    return address, name


def own_names(hostname: str, domainname: str = "") -> str:
    """The names on the container's own lines: `FQDN` or `FQDN HOSTNAME` (Docker's main record)."""
    fqdn = f"{hostname}.{domainname}" if domainname else hostname
    short, dot, _ = fqdn.partition(".")
    return f"{fqdn} {short}" if dot else fqdn


def hosts_file(
    *,
    hostname: str,
    domainname: str = "",
    addresses: Sequence[str] = (),
    extra_hosts: Sequence[str] = (),
    host_gateway: str = "",
    base: str | None = None,
) -> str:
    """The text of a container's /etc/hosts.

    `addresses`: the container's own addresses, one per network in network order (none with
    `network_mode: none`); `extra_hosts`: `name=ip` entries; `base`: the host's /etc/hosts text for
    `network_mode: host` (used instead of the localhost lines and the own lines)."""
    records = [parse_extra_host(entry, host_gateway) for entry in extra_hosts]
    if base is not None:
        text = base if not base or base.endswith("\n") else base + "\n"
        return text + "".join(f"{ip}\t{name}\n" for ip, name in records)
    lines = [f"{ip}\t{names}" for ip, names in DEFAULT_HOSTS]
    lines += [f"{ip}\t{name}" for ip, name in records]
    names = own_names(hostname, domainname)
    lines += [f"{ip}\t{names}" for ip in addresses]
    return "\n".join(lines) + "\n"


# -- /etc/resolv.conf ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvConf:
    """What a resolv.conf says, in file order (the last `search` line wins, as in glibc)."""

    nameservers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


def parse_resolv_conf(text: str) -> ResolvConf:
    nameservers: list[str] = []
    search: list[str] = []
    options: list[str] = []
    for raw in text.splitlines():
        fields = raw.split()
        if not fields or fields[0].startswith(("#", ";")):
            continue
        key, values = fields[0], fields[1:]
        if key == "nameserver" and values:
            address = values[0].split("%")[0]  # a zone index (fe80::1%eth0) is the host's business
            try:
                ipaddress.ip_address(address)
            except ValueError:
                continue
            nameservers.append(values[0])
        elif key in ("search", "domain"):
            search = values
        elif key == "options":
            options.extend(values)
    return ResolvConf(nameservers=tuple(nameservers), search=tuple(search), options=tuple(options))


def _build(nameservers: Sequence[str], search: Sequence[str], options: Sequence[str]) -> str:
    lines = [f"nameserver {ns}" for ns in nameservers]
    if search and " ".join(search).strip() != ".":
        lines.append("search " + " ".join(search))
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n" if lines else ""


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


_NAMESERVER_LINE = re.compile(r"^\s*nameserver\s+(\S+)")


def resolv_conf(
    host_text: str,
    *,
    mode: ResolvMode = "embedded",
    dns: Sequence[str] = (),
    dns_search: Sequence[str] = (),
    dns_opt: Sequence[str] = (),
) -> str:
    """The text of a container's /etc/resolv.conf from the host's (`host_text`) and the service's
    `dns`, `dns_search`, `dns_opt`. `mode`: "embedded" (user-defined networks, served by
    composer.network.dns on 127.0.0.11), "host" or "none" (`network_mode`)."""
    host = parse_resolv_conf(host_text)
    search = tuple(dns_search) or host.search
    options = tuple(dns_opt) or host.options
    if mode == "embedded":
        if not any(opt.split(":")[0] == "ndots" for opt in options):
            options = (*options, "ndots:0")
        return _build((EMBEDDED_NAMESERVER,), search, options)
    if dns or dns_search or dns_opt:
        return _build(tuple(dns) or host.nameservers, search, options)
    if mode == "host":
        return host_text
    # none: the host's file without the loopback nameservers it cannot reach
    kept = [line for line in host_text.splitlines()
            if not ((m := _NAMESERVER_LINE.match(line)) and _is_loopback(m.group(1)))]  # fmt: skip
    text = "\n".join(kept) + "\n" if kept else ""
    if not parse_resolv_conf(text).nameservers:
        text += "".join(f"nameserver {ns}\n" for ns in FALLBACK_NAMESERVERS)
    return text


# -- writing a bind-mounted file ----------------------------------------------------------------------------


def rewrite_in_place(path: Path, text: str) -> bool:
    """Make `path` hold `text`, keeping its inode; False when it already did.

    The file is bind-mounted into the container (a file bind mount pins the inode), so write-temp-
    and-rename would leave the container looking at the old file forever. We write in place instead
    (binding a whole folder over the image's /etc is not an option): one pwrite of the new content
    from offset 0, then ftruncate to its length, under an exclusive flock so that two composer
    processes do not interleave. A reader never sees an empty file (Docker truncates first), and the
    files are smaller than a page; a reader racing the write may, at worst, see the new text followed by
    the old tail for the moment until the ftruncate.
    """
    data = text.encode()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size == len(data) and os.pread(fd, size + 1, 0) == data:
            return False
        done = 0
        while done < len(data):
            done += os.pwrite(fd, data[done:], done)
        os.ftruncate(fd, len(data))
        return True
    finally:
        os.close(fd)  # releases the lock
