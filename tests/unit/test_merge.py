"""Multi-file merge rules (expected results checked against the docker-compose v2 binary)."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from composer.errors import SpecError
from composer.spec.merge import enforce_unicity, merge_trees, resolve_tags, unicity_key
from composer.spec.source import MDict, load_documents


def load(text: str, name: str) -> MDict:
    docs = load_documents(textwrap.dedent(text), name)
    return docs[0] if docs else MDict()


def merge(*texts: str) -> MDict:
    trees = [load(text, f"f{i}.yaml") for i, text in enumerate(texts)]
    out = trees[0]
    for tree in trees[1:]:
        out = merge_trees(out, tree)
    return resolve_tags(out)


def web(base: str, override: str) -> Any:
    """Merge two `services.web` bodies given as YAML."""
    wrap = "services:\n  web:\n" + textwrap.indent(textwrap.dedent(base), "    ")
    wrap2 = "services:\n  web:\n" + textwrap.indent(textwrap.dedent(override), "    ")
    return merge(wrap, wrap2)["services"]["web"]


CASES = [
    ("scalar", "image: a\nuser: x", "image: b", {"image": "b", "user": "x"}),
    ("null-keeps-base", "image: a", "image:", {"image": "a"}),
    ("command-replaced", "command: [a, b]", "command: c", {"command": "c"}),
    ("command-null-replaces", "command: a", "command:", {"command": None}),
    ("entrypoint-replaced", "entrypoint: [a, b]", "entrypoint: [c]", {"entrypoint": ["c"]}),
    (
        "healthcheck-test-replaced",
        "healthcheck: {test: [CMD, a], interval: 10s}",
        "healthcheck: {test: [CMD, b]}",
        {"healthcheck": {"test": ["CMD", "b"], "interval": "10s"}},
    ),
    (
        "environment-map-list",
        "environment: {A: 1, B: x, C: }",
        "environment: [A=2, D=4]",
        {"environment": ["A=2", "B=x", "C", "D=4"]},
    ),
    (
        "environment-list-map",
        "environment: [B=1, A=2]",
        "environment: {B: 3, C: ''}",
        {"environment": ["B=3", "A=2", "C="]},
    ),
    ("environment-null-override", "environment: {A: 1}", "environment:", {"environment": {"A": 1}}),
    (
        "labels-go-formatting",
        "labels: {z: 1}",
        "labels: {a: 1234567.0, b: 1e6, c: 0.00001, d: 3.0, e: true, f: 0x1F, g: .inf, h: 100000.0}",
        {
            "labels": [
                "z=1",
                "a=1.234567e+06",
                "b=1e+06",
                "c=1e-05",
                "d=3",
                "e=true",
                "f=31",
                "g=+Inf",
                "h=100000",
            ]
        },
    ),
    ("dns-string-list", "dns: 8.8.8.8", "dns: [1.1.1.1, 8.8.8.8]", {"dns": ["8.8.8.8", "1.1.1.1"]}),
    ("dns-search", "dns_search: a.com", "dns_search: [b.com]", {"dns_search": ["a.com", "b.com"]}),
    ("tmpfs", "tmpfs: /run", "tmpfs: [/run, /tmp]", {"tmpfs": ["/run", "/tmp"]}),
    ("env-file", "env_file: [a.env, b.env]", "env_file: b.env", {"env_file": ["a.env", "b.env"]}),
    (
        "env-file-long",
        "env_file: [a.env]",
        "env_file: [{path: a.env, required: false}]",
        {"env_file": [{"path": "a.env", "required": False}]},
    ),
    ("sysctls", "sysctls: {net.a: 1}", "sysctls: [net.a=2, net.b=3]", {"sysctls": ["net.a=2", "net.b=3"]}),
    (
        "extra-hosts-exact-duplicates",
        "extra_hosts: {h1: 1.1.1.1}",
        'extra_hosts: ["h1=1.1.1.1", "h3:3.3.3.3"]',
        {"extra_hosts": ["h1=1.1.1.1", "h3:3.3.3.3"]},
    ),
    ("annotations", "annotations: {an: 1}", "annotations: [an=2]", {"annotations": ["an=2"]}),
    (
        "ports-short-by-string",
        'ports: ["80:80", "443:443"]',
        'ports: ["443:443", 8080]',
        {"ports": ["80:80", "443:443", 8080]},
    ),
    (
        "ports-long-by-key",
        "ports: [{target: 80, published: '8080'}, {target: 53, protocol: udp}]",
        "ports: [{target: 80, published: '8080', host_ip: 0.0.0.0, mode: host}, {target: 53}]",
        {
            "ports": [
                {"target": 80, "published": "8080", "host_ip": "0.0.0.0", "mode": "host"},
                {"target": 53, "protocol": "udp"},
                {"target": 53},
            ]
        },
    ),
    ("expose", 'expose: [80, "90"]', 'expose: ["80", 91]', {"expose": ["80", "90", 91]}),
    (
        "volumes-by-target",
        'volumes: ["./data:/data", "/x:/y:ro", "/anon"]',
        "volumes: [{type: bind, source: ./other, target: /data}, /anon]",
        {"volumes": [{"type": "bind", "source": "./other", "target": "/data"}, "/x:/y:ro", "/anon"]},
    ),
    (
        "devices-by-target",
        'devices: ["/dev/a:/dev/a", "/dev/b"]',
        'devices: ["/dev/c:/dev/a", "/dev/b"]',
        {"devices": ["/dev/c:/dev/a", "/dev/b"]},
    ),
    (
        "secrets-default-target",
        "secrets: [s1, {source: s2, target: /x}]",
        "secrets: [{source: s1, target: /run/secrets/s1, mode: 0400}, s2]",
        {
            "secrets": [
                {"source": "s1", "target": "/run/secrets/s1", "mode": 256},
                {"source": "s2", "target": "/x"},
                "s2",
            ]
        },
    ),
    (
        "configs-default-target",
        "configs: [c1, {source: c2}]",
        "configs: [{source: c1, target: /c1, mode: 0400}, {source: c2, target: /c2}]",
        {"configs": [{"source": "c1", "target": "/c1", "mode": 256}, {"source": "c2", "target": "/c2"}]},
    ),
    (
        "caps-profiles-links",
        "cap_add: [NET_ADMIN, SYS_ADMIN]\ncap_drop: [ALL]\nprofiles: [p1]\nlinks: [db, 'db2:alias']",
        "cap_add: [NET_ADMIN]\ncap_drop: [ALL]\nprofiles: [p1, p2]\nlinks: ['db2:alias', db]",
        {
            "cap_add": ["NET_ADMIN", "SYS_ADMIN"],
            "cap_drop": ["ALL"],
            "profiles": ["p1", "p2"],
            "links": ["db", "db2:alias"],
        },
    ),
    (
        "plain-list-appended",
        "security_opt: [a]\ngroup_add: [g]",
        "security_opt: [a, c]\ngroup_add: [g2]",
        {"security_opt": ["a", "a", "c"], "group_add": ["g", "g2"]},
    ),
    (
        "depends-on-list-map",
        "depends_on: [db, cache]",
        "depends_on: {db: {condition: service_healthy}}",
        {
            "depends_on": {
                "db": {"condition": "service_healthy", "required": True},
                "cache": {"condition": "service_started", "required": True},
            }
        },
    ),
    (
        "networks-list-map",
        "networks: [front]",
        "networks: {back: {aliases: [b]}, front: }",
        {"networks": {"front": None, "back": {"aliases": ["b"]}}},
    ),
    (
        "network-aliases-dedup",
        "networks: {n: {aliases: [a1, a2]}}",
        "networks: {n: {aliases: [a2, a3]}}",
        {"networks": {"n": {"aliases": ["a1", "a2", "a3"]}}},
    ),
    (
        "build-string-map",
        "build: ./dir",
        "build: {dockerfile: Foo, args: [A=1]}",
        {"build": {"context": "./dir", "dockerfile": "Foo", "args": ["A=1"]}},
    ),
    (
        "build-args-tags",
        "build: {context: ., args: {A: 1, B: 2}, tags: [t1, t2], labels: [x=1]}",
        "build: {args: [A=2], tags: [t2, t3], labels: {x: 2}}",
        {"build": {"context": ".", "args": ["A=2", "B=2"], "tags": ["t1", "t2", "t3"], "labels": ["x=2"]}},
    ),
    ("build-string-string", "build: a", "build: b", {"build": {"context": "b"}}),
    (
        "logging-same-driver",
        "logging: {driver: json-file, options: {max-size: 1m}}",
        "logging: {options: {max-file: '3'}}",
        {"logging": {"driver": "json-file", "options": {"max-size": "1m", "max-file": "3"}}},
    ),
    (
        "logging-other-driver",
        "logging: {driver: json-file, options: {max-size: 1m}}",
        "logging: {driver: syslog, options: {tag: x}}",
        {"logging": {"driver": "syslog", "options": {"tag": "x"}}},
    ),
    (
        "ulimits",
        "ulimits: {nofile: {soft: 1, hard: 2}, nproc: 5, core: 1}",
        "ulimits: {nofile: {soft: 3, hard: 9}, nproc: {soft: 1, hard: 2}}",
        {"ulimits": {"nofile": {"soft": 3, "hard": 9}, "nproc": {"soft": 1, "hard": 2}, "core": 1}},
    ),
    (
        "deploy-recursive",
        "deploy: {labels: {d: 1}, resources: {limits: {cpus: '1'}}}",
        "deploy: {labels: [d=2], resources: {limits: {memory: 1g}}}",
        {"deploy": {"labels": ["d=2"], "resources": {"limits": {"cpus": "1", "memory": "1g"}}}},
    ),
    ("extension-replaced", "x-a: {a: 1, b: 2}", "x-a: {c: 3}", {"x-a": {"c": 3}}),
    # !reset and !override
    ("reset-list", 'ports: ["80:80"]\nimage: a', "ports: !reset []", {"image": "a"}),
    ("reset-scalar", "command: a\nimage: a", "command: !reset null", {"image": "a"}),
    (
        "reset-nested",
        "build: {context: ., args: {A: 1}}",
        "build:\n  args: !reset",
        {"build": {"context": "."}},
    ),
    (
        "override-mapping",
        "environment: {A: 1, B: 2}",
        "environment: !override {C: 3}",
        {"environment": {"C": 3}},
    ),
    ("override-list", 'ports: ["80:80"]', 'ports: !override ["90:90"]', {"ports": ["90:90"]}),
]


@pytest.mark.parametrize(("base", "override", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_service_attribute(base: str, override: str, expected: Any) -> None:
    assert web(base, override) == expected


def test_top_level_sections_merge() -> None:
    out = merge(
        """
        services: {web: {image: a}}
        networks: {front: {driver: bridge, labels: {a: 1}}}
        volumes: {data: {labels: [a=1]}}
        x-top: {a: 1}
        """,
        """
        services: {db: {image: pg}}
        networks: {front: , back: {}, n: {labels: [a=2]}}
        volumes: {data: {labels: {a: 2}}}
        secrets: {s: {file: ./s}}
        """,
    )
    assert list(out["services"]) == ["web", "db"]
    assert out["networks"] == {
        "front": {"driver": "bridge", "labels": {"a": 1}},
        "back": {},
        "n": {"labels": ["a=2"]},
    }
    assert out["volumes"] == {"data": {"labels": ["a=2"]}}
    assert out["secrets"] == {"s": {"file": "./s"}}
    assert out["x-top"] == {"a": 1}


def test_ipam_config_merged_by_subnet() -> None:
    out = merge(
        "networks: {n: {ipam: {config: [{subnet: 10.0.0.0/24, gateway: 10.0.0.1}, {subnet: 10.1.0.0/24}]}}}",
        "networks: {n: {ipam: {config: [{subnet: 10.0.0.0/24, gateway: 10.0.0.254},"
        " {subnet: 10.2.0.0/24}]}}}",
    )
    assert out["networks"]["n"]["ipam"]["config"] == [
        {"subnet": "10.0.0.0/24", "gateway": "10.0.0.254"},
        {"subnet": "10.1.0.0/24"},
        {"subnet": "10.2.0.0/24"},
    ]


def test_reset_then_later_file_sets_again() -> None:
    out = merge(
        "services: {web: {ports: ['80:80']}}",
        "services: {web: {ports: !reset []}}",
        "services: {web: {ports: ['90:90']}}",
    )
    assert out["services"]["web"] == {"ports": ["90:90"]}


def test_override_then_later_file_merges_normally() -> None:
    out = merge(
        "services: {web: {environment: {A: 1}}}",
        "services: {web: {environment: !override {B: 2}}}",
        "services: {web: {environment: {C: 3}}}",
    )
    assert out["services"]["web"] == {"environment": ["B=2", "C=3"]}


def test_reset_and_override_whole_service() -> None:
    out = merge(
        "services: {web: {image: a, ports: ['80']}, db: {image: pg, ports: ['5432']}, old: {image: x}}",
        "services: {db: !override {image: other}, old: !reset }",
    )
    assert out["services"] == {"web": {"image": "a", "ports": ["80"]}, "db": {"image": "other"}}


def test_resolve_tags_in_a_single_file() -> None:
    tree = load(
        """
        services:
          web:
            image: nginx
            ports: !reset ["80:80"]
            environment: !override {C: 3}
          other: !reset
        """,
        "one.yaml",
    )
    assert resolve_tags(tree) == {"services": {"web": {"image": "nginx", "environment": {"C": 3}}}}


def test_inputs_are_not_mutated() -> None:
    base = load("services: {web: {environment: {A: 1}, ports: ['80'], build: .}}", "a.yaml")
    over = load("services: {web: {environment: [B=2], ports: ['90'], build: {dockerfile: X}}}", "b.yaml")
    before = (repr(base), repr(over))
    merge_trees(base, over)
    assert (repr(base), repr(over)) == before


def test_locations_follow_the_file_that_provided_the_value() -> None:
    base = load("services:\n  web:\n    image: a\n    user: root\n    ports: ['80']\n", "a.yaml")
    over = load("services:\n  web:\n    image: b\n    ports: ['90']\n", "b.yaml")
    web_out = merge_trees(base, over)["services"]["web"]
    assert str(web_out.where("image")) == "b.yaml:3:12"
    assert str(web_out.where("user")) == "a.yaml:4:11"
    ports = web_out["ports"]
    assert [str(ports.where(i)) for i in range(2)] == ["a.yaml:5:13", "b.yaml:4:13"]


def test_converted_items_point_at_their_source_key() -> None:
    base = load("services:\n  web:\n    environment:\n      A: 1\n", "a.yaml")
    over = load("services:\n  web:\n    environment: [B=2]\n", "b.yaml")
    env = merge_trees(base, over)["services"]["web"]["environment"]
    assert env == ["A=1", "B=2"]
    assert [str(env.where(i)) for i in range(2)] == ["a.yaml:4:10", "b.yaml:3:19"]


def test_type_mismatch_is_reported_with_location() -> None:
    base = load("services:\n  web:\n    deploy: {resources: {}}\n", "a.yaml")
    over = load("services:\n  web:\n    deploy: [x]\n", "b.yaml")
    with pytest.raises(SpecError) as info:
        merge_trees(base, over)
    assert info.value.render() == (
        "b.yaml:3:13: services.web.deploy: "
        "cannot merge a list over a mapping (earlier definition at a.yaml:3:13)"
    )


def test_enforce_unicity_on_a_single_file() -> None:
    tree = load(
        "services: {web: {environment: [A=1, B=2, A=3], volumes: ['/a:/x', '/b:/x'], dns: [d, d]}}", "a.yaml"
    )
    assert enforce_unicity(tree)["services"]["web"] == {
        "environment": ["A=3", "B=2"],
        "volumes": ["/b:/x"],
        "dns": ["d"],
    }


def test_unicity_key() -> None:
    assert (
        unicity_key(("services", "web", "ports"), {"target": 80, "published": "8080"})
        == "0.0.0.0:8080:80/tcp"
    )
    assert unicity_key(("services", "web", "secrets"), "s") == "/run/secrets/s"
    assert unicity_key(("services", "web", "configs"), {"source": "c"}) == "/c"
    assert unicity_key(("services", "web", "volumes"), "vol:/data:ro") == "/data"
    assert unicity_key(("services", "web", "security_opt"), "x") is None
