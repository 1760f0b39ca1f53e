"""Networks: bridges, IPAM, per-container veths in the container's netns, egress rules.

The only package that imports pyroute2 (lazily, inside functions: DESIGN.md rule 6), and only to pin
a netns (netns.py): links, addresses and routes go through composer's own rtnetlink requests (rtnl.py),
so that `up` and `down` never pay pyroute2's import. The supervisor uses `NetworkManager`
(composer/network/manager.py); the pieces:

    ipam.py      subnets and addresses (pure planning) + the locked state file <root>/network/ipam.json
    bridge.py    one Linux bridge per network (`cmp-<hash>`, full name in ifalias); the host's routes
    netns.py     fork-free netns access: a netlink socket opened in a netns from a thread; pins
    rtnl.py      the rtnetlink requests and dumps composer needs, on a plain socket
    attach.py    a container's veths (peer made inside its netns as eth0..), addresses, default route
    firewall.py  composer's own nftables tables (ip, ip6): masquerade for egress, isolation, DNAT
    sysctl.py    host sysctls composer changes (route_localnet, IPv6 forwarding), put back on `down`
"""
