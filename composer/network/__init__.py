"""Networks: bridges, IPAM, per-container veths in the container's netns, egress rules.

The only package that imports pyroute2 (lazily, inside functions: DESIGN.md rule 6). The supervisor
uses `NetworkManager` (composer/network/manager.py); the pieces:

    ipam.py      subnets and addresses (pure planning) + the locked state file <root>/network/ipam.json
    bridge.py    one Linux bridge per network (`cmp-<hash>`, full name in ifalias); the host's routes
    netns.py     fork-free netns access: a netlink socket opened in a netns from a thread; pins
    attach.py    a container's veths (peer made inside its netns as eth0..), addresses, default route
    firewall.py  composer's own nftables tables (ip, ip6): masquerade for egress, isolation, DNAT
    sysctl.py    host sysctls composer changes (route_localnet, IPv6 forwarding), put back on `down`
"""


def warm_up() -> None:
    """Import pyroute2 now (about 0.1 s): the supervisor calls this in a worker thread while it waits
    for its first request, so that the first container's network is not the one to pay for it."""
    import pyroute2
    import pyroute2.netlink.exceptions  # noqa: F401
