"""normalize: one compose snippet per attribute family, expected output from Docker Compose v2.26.1.

Each EXPECTED value is what `docker compose -p demo config --format json` printed for the snippet in
/proj with HOME=/home/user and FROM_ENV=env-value; key order is checked too.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from composer.errors import SpecError
from composer.spec.normalize import normalize_project, parse_bytes, parse_duration, parse_port, parse_volume
from composer.spec.profiles import select_services
from composer.spec.serialize import project_to_dict
from composer.spec.source import load_documents

ENVIRON = {"FROM_ENV": "env-value", "HOME": "/home/user"}


def _no_files(path: str) -> str:
    raise FileNotFoundError(path)


def project_of(text: str, files: dict[str, str] | None = None, warnings: list[str] | None = None) -> Any:
    tree = load_documents(text, "compose.yaml")[0]
    found = files or {}

    def read_text(path: str) -> str:
        if path in found:
            return found[path]
        raise FileNotFoundError(path)

    return normalize_project(
        tree,
        name="demo",
        working_dir="/proj",
        environ=ENVIRON,
        read_text=read_text,
        warn=(warnings if warnings is not None else []).append,
    )


def config_dict(text: str, files: dict[str, str] | None = None) -> dict[str, Any]:
    return project_to_dict(select_services(project_of(text, files), profiles=()), escape_dollars=True)


def same_json(a: Any, b: Any) -> bool:
    return json.dumps(a) == json.dumps(b)


CASES: dict[str, str] = {}
EXPECTED: dict[str, Any] = {}

CASES["ports"] = """
services:
  web:
    image: nginx
    ports:
      - "443:443"
      - "127.0.0.1:8000-8001:9000-9001/udp"
      - "[::1]:53:53"
      - 3000
      - "8080-8081:80"
      - target: 80
        published: 8082
"""
EXPECTED["ports"] = {
    "name": "demo",
    "networks": {"default": {"name": "demo_default", "ipam": {}}},
    "services": {
        "web": {
            "command": None,
            "entrypoint": None,
            "image": "nginx",
            "networks": {"default": None},
            "ports": [
                {"mode": "ingress", "target": 443, "published": "443", "protocol": "tcp"},
                {
                    "mode": "ingress",
                    "host_ip": "127.0.0.1",
                    "target": 9000,
                    "published": "8000",
                    "protocol": "udp",
                },
                {
                    "mode": "ingress",
                    "host_ip": "127.0.0.1",
                    "target": 9001,
                    "published": "8001",
                    "protocol": "udp",
                },
                {"mode": "ingress", "host_ip": "::1", "target": 53, "published": "53", "protocol": "tcp"},
                {"mode": "ingress", "target": 3000, "protocol": "tcp"},
                {"mode": "ingress", "target": 80, "published": "8080-8081", "protocol": "tcp"},
                {"mode": "ingress", "target": 80, "published": "8082", "protocol": "tcp"},
            ],
        }
    },
}

CASES["volumes_short"] = """
services:
  web:
    image: nginx
    volumes:
      - ./data:/data:ro
      - db:/var/lib/db:nocopy
      - /anon
      - ~/x:/x
      - /abs:/z:rw,rshared
      - ./r:/y:z
volumes:
  db:
"""
EXPECTED["volumes_short"] = {
    "name": "demo",
    "networks": {"default": {"name": "demo_default", "ipam": {}}},
    "services": {
        "web": {
            "command": None,
            "entrypoint": None,
            "image": "nginx",
            "networks": {"default": None},
            "volumes": [
                {
                    "type": "bind",
                    "source": "/proj/data",
                    "target": "/data",
                    "read_only": True,
                    "bind": {"create_host_path": True},
                },
                {"type": "volume", "source": "db", "target": "/var/lib/db", "volume": {"nocopy": True}},
                {"type": "volume", "target": "/anon", "volume": {}},
                {
                    "type": "bind",
                    "source": "/home/user/x",
                    "target": "/x",
                    "bind": {"create_host_path": True},
                },
                {
                    "type": "bind",
                    "source": "/abs",
                    "target": "/z",
                    "bind": {"propagation": "rshared", "create_host_path": True},
                },
                {
                    "type": "bind",
                    "source": "/proj/r",
                    "target": "/y",
                    "bind": {"selinux": "z", "create_host_path": True},
                },
            ],
        }
    },
    "volumes": {"db": {"name": "demo_db"}},
}

CASES["volumes_long"] = """
services:
  web:
    image: nginx
    volumes:
      - type: bind
        source: ./rel
        target: /r
        bind: {propagation: rprivate, create_host_path: false}
      - type: volume
        source: db
        target: /v
      - type: tmpfs
        target: /t
        tmpfs: {size: 1m, mode: 0755}
volumes:
  db:
    driver: local
    driver_opts: {type: none, o: bind, device: ./data}
"""
EXPECTED["volumes_long"] = {
    "name": "demo",
    "networks": {"default": {"name": "demo_default", "ipam": {}}},
    "services": {
        "web": {
            "command": None,
            "entrypoint": None,
            "image": "nginx",
            "networks": {"default": None},
            "volumes": [
                {"type": "bind", "source": "/proj/rel", "target": "/r", "bind": {"propagation": "rprivate"}},
                {"type": "volume", "source": "db", "target": "/v"},
                {"type": "tmpfs", "target": "/t", "tmpfs": {"size": "1048576", "mode": 493}},
            ],
        }
    },
    "volumes": {
        "db": {
            "name": "demo_db",
            "driver": "local",
            "driver_opts": {"device": "/proj/data", "o": "bind", "type": "none"},
        }
    },
}

CASES["depends_on"] = """
services:
  a:
    image: x
    links: [b]
    volumes_from: [c, "container:other"]
  b:
    image: x
    network_mode: "service:c"
  c:
    image: x
  d:
    image: x
    depends_on:
      a: {condition: service_healthy, restart: true}
      b: {condition: service_started, required: false}
  e:
    image: x
    depends_on: [a, c]
"""
EXPECTED["depends_on"] = {
    "name": "demo",
    "networks": {"default": {"name": "demo_default", "ipam": {}}},
    "services": {
        "a": {
            "command": None,
            "depends_on": {
                "b": {"condition": "service_started", "restart": True, "required": True},
                "c": {"condition": "service_started", "required": True},
            },
            "entrypoint": None,
            "image": "x",
            "links": ["b"],
            "networks": {"default": None},
            "volumes_from": ["c", "container:other"],
        },
        "b": {
            "command": None,
            "depends_on": {"c": {"condition": "service_started", "restart": True, "required": True}},
            "entrypoint": None,
            "image": "x",
            "network_mode": "service:c",
        },
        "c": {"command": None, "entrypoint": None, "image": "x", "networks": {"default": None}},
        "d": {
            "command": None,
            "depends_on": {
                "a": {"condition": "service_healthy", "restart": True, "required": True},
                "b": {"condition": "service_started", "required": False},
            },
            "entrypoint": None,
            "image": "x",
            "networks": {"default": None},
        },
        "e": {
            "command": None,
            "depends_on": {
                "a": {"condition": "service_started", "required": True},
                "c": {"condition": "service_started", "required": True},
            },
            "entrypoint": None,
            "image": "x",
            "networks": {"default": None},
        },
    },
}

CASES["healthcheck"] = """
services:
  a:
    image: x
    healthcheck:
      test: curl -f http://localhost
      interval: 1m30s
      timeout: 1500ms
      retries: 3
      start_period: .5s
  b:
    image: x
    healthcheck:
      test: ["CMD", "true"]
      start_interval: 1h
  c:
    image: x
    healthcheck:
      disable: true
"""
EXPECTED["healthcheck"] = {
    "name": "demo",
    "networks": {"default": {"name": "demo_default", "ipam": {}}},
    "services": {
        "a": {
            "command": None,
            "entrypoint": None,
            "healthcheck": {
                "test": ["CMD-SHELL", "curl -f http://localhost"],
                "timeout": "1.5s",
                "interval": "1m30s",
                "retries": 3,
                "start_period": "500ms",
            },
            "image": "x",
            "networks": {"default": None},
        },
        "b": {
            "command": None,
            "entrypoint": None,
            "healthcheck": {"test": ["CMD", "true"], "start_interval": "1h0m0s"},
            "image": "x",
            "networks": {"default": None},
        },
        "c": {
            "command": None,
            "entrypoint": None,
            "healthcheck": {"disable": True},
            "image": "x",
            "networks": {"default": None},
        },
    },
}

CASES["build"] = """
services:
  a:
    build: ./app
  b:
    build:
      context: .
      dockerfile: Other
      args: [X=1, UNSET_ARG_FOR_TEST]
      target: prod
  c:
    build:
      context: https://github.com/x/y.git
"""
EXPECTED["build"] = {
    "name": "demo",
    "networks": {"default": {"name": "demo_default", "ipam": {}}},
    "services": {
        "a": {
            "build": {"context": "/proj/app", "dockerfile": "Dockerfile"},
            "command": None,
            "entrypoint": None,
            "networks": {"default": None},
        },
        "b": {
            "build": {"context": "/proj", "dockerfile": "Other", "args": {"X": "1"}, "target": "prod"},
            "command": None,
            "entrypoint": None,
            "networks": {"default": None},
        },
        "c": {
            "build": {"context": "https://github.com/x/y.git", "dockerfile": "Dockerfile"},
            "command": None,
            "entrypoint": None,
            "networks": {"default": None},
        },
    },
}

CASES["environment"] = """
services:
  a:
    image: x
    environment:
      - A=1
      - UNSET_VAR_FOR_TEST
      - FROM_ENV
      - EMPTY=
  b:
    image: x
    environment: {N: 1, B: true, F: 1.5, E: null, S: ""}
"""
EXPECTED["environment"] = {
    "name": "demo",
    "networks": {"default": {"name": "demo_default", "ipam": {}}},
    "services": {
        "a": {
            "command": None,
            "entrypoint": None,
            "environment": {"A": "1", "EMPTY": "", "FROM_ENV": "env-value", "UNSET_VAR_FOR_TEST": None},
            "image": "x",
            "networks": {"default": None},
        },
        "b": {
            "command": None,
            "entrypoint": None,
            "environment": {"B": "true", "E": None, "F": "1.5", "N": "1", "S": ""},
            "image": "x",
            "networks": {"default": None},
        },
    },
}

CASES["networks"] = """
services:
  a:
    image: x
    networks:
      front:
        aliases: [x1]
        ipv4_address: 10.0.0.5
      back:
  b:
    image: x
    networks: [front]
  c:
    image: x
    network_mode: host
networks:
  front:
    driver: bridge
    ipam: {config: [{subnet: 10.0.0.0/24, gateway: 10.0.0.1}]}
    labels: [a=b]
  back:
    external: true
  unused:
    name: custom
"""
EXPECTED["networks"] = {
    "name": "demo",
    "networks": {
        "back": {"name": "back", "ipam": {}, "external": True},
        "front": {
            "name": "demo_front",
            "driver": "bridge",
            "ipam": {"config": [{"subnet": "10.0.0.0/24", "gateway": "10.0.0.1"}]},
            "labels": {"a": "b"},
        },
    },
    "services": {
        "a": {
            "command": None,
            "entrypoint": None,
            "image": "x",
            "networks": {"back": None, "front": {"aliases": ["x1"], "ipv4_address": "10.0.0.5"}},
        },
        "b": {"command": None, "entrypoint": None, "image": "x", "networks": {"front": None}},
        "c": {"command": None, "entrypoint": None, "image": "x", "network_mode": "host"},
    },
}

CASES["resources"] = """
services:
  a:
    image: x
    secrets: [s1, {source: s2, target: custom, mode: 0400}]
    configs: [c1]
secrets:
  s1: {file: ./s1.txt}
  s2: {environment: HOME}
  unused: {file: ./u}
configs:
  c1: {file: ./c1.txt}
volumes:
  unusedvol:
"""
EXPECTED["resources"] = {
    "configs": {"c1": {"name": "demo_c1", "file": "/proj/c1.txt"}},
    "name": "demo",
    "networks": {"default": {"name": "demo_default", "ipam": {}}},
    "secrets": {
        "s1": {"name": "demo_s1", "file": "/proj/s1.txt"},
        "s2": {"name": "demo_s2", "environment": "HOME"},
    },
    "services": {
        "a": {
            "command": None,
            "configs": [{"source": "c1"}],
            "entrypoint": None,
            "image": "x",
            "networks": {"default": None},
            "secrets": [
                {"source": "s1", "target": "/run/secrets/s1"},
                {"source": "s2", "target": "custom", "mode": 256},
            ],
        }
    },
}

CASES["misc"] = """
services:
  a:
    image: x
    command: echo "hi there"
    entrypoint: []
    container_name: aa
    hostname: h
    user: "1000:1000"
    working_dir: /w
    read_only: true
    init: true
    cap_add: [NET_ADMIN]
    cap_drop: [ALL]
    stop_signal: SIGTERM
    stop_grace_period: 1m
    restart: on-failure:3
    dns: 8.8.8.8
    dns_search: example.com
    extra_hosts: ["h:1.2.3.4", "g=::1"]
    labels: {l: 1}
    logging: {driver: json-file, options: {max-size: 10m}}
    ulimits:
      nofile: {soft: 1024, hard: 2048}
      nproc: 5
    tmpfs: /tmp
    expose: ["80", 81]
    shm_size: 64m
    mem_limit: 1.5g
    pull_policy: if_not_present
    tty: true
    sysctls: [net.core.somaxconn=1024]
  b:
    image: x
    command: ""
    scale: 2
    deploy:
      resources: {limits: {cpus: "0.5", memory: 50M}}
      restart_policy: {condition: on-failure, max_attempts: 3, delay: 5s}
"""
EXPECTED["misc"] = {
    "name": "demo",
    "networks": {"default": {"name": "demo_default", "ipam": {}}},
    "services": {
        "a": {
            "cap_add": ["NET_ADMIN"],
            "cap_drop": ["ALL"],
            "command": ["echo", "hi there"],
            "container_name": "aa",
            "dns": ["8.8.8.8"],
            "dns_search": ["example.com"],
            "entrypoint": [],
            "expose": ["80", "81"],
            "extra_hosts": ["g=::1", "h=1.2.3.4"],
            "hostname": "h",
            "image": "x",
            "init": True,
            "labels": {"l": "1"},
            "logging": {"driver": "json-file", "options": {"max-size": "10m"}},
            "mem_limit": "1610612736",
            "networks": {"default": None},
            "pull_policy": "missing",
            "read_only": True,
            "restart": "on-failure:3",
            "shm_size": "67108864",
            "stop_grace_period": "1m0s",
            "stop_signal": "SIGTERM",
            "sysctls": {"net.core.somaxconn": "1024"},
            "tmpfs": ["/tmp"],
            "tty": True,
            "ulimits": {"nofile": {"soft": 1024, "hard": 2048}, "nproc": 5},
            "user": "1000:1000",
            "working_dir": "/w",
        },
        "b": {
            "command": [],
            "deploy": {
                "replicas": 2,
                "resources": {"limits": {"cpus": 0.5, "memory": "52428800"}},
                "restart_policy": {"condition": "on-failure", "delay": "5s", "max_attempts": 3},
                "placement": {},
            },
            "entrypoint": None,
            "image": "x",
            "networks": {"default": None},
            "scale": 2,
        },
    },
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_compose(case: str) -> None:
    got = config_dict(CASES[case])
    assert got == EXPECTED[case]
    assert same_json(got, EXPECTED[case])  # same key order as Compose


def test_env_file_merged_into_environment() -> None:
    text = """
services:
  a:
    image: x
    env_file:
      - one.env
      - path: two.env
      - path: missing.env
        required: false
    environment:
      B: env
"""
    files = {"/proj/one.env": "A=from_file\nB=fb\nHOMEX=${HOME}/x\n", "/proj/two.env": "A=two\n"}
    got = config_dict(text, files)["services"]["a"]
    assert got["environment"] == {"A": "two", "B": "env", "HOMEX": "/home/user/x"}
    assert "env_file" not in got


def test_env_file_required_missing() -> None:
    with pytest.raises(SpecError, match=r"env file /proj/nope.env not found"):
        project_of("services:\n  a:\n    image: x\n    env_file: nope.env\n")


def test_yaml11_boolean_warns() -> None:
    warnings: list[str] = []
    project = project_of('services:\n  a:\n    image: x\n    init: "yes"\n', warnings=warnings)
    assert project.service("a").init is True
    assert warnings == ['"yes" for boolean is not supported by YAML 1.2, please use `true`']


def test_typed_values() -> None:
    service = project_of(
        "services:\n  a:\n    image: x\n    stop_grace_period: 1m30s\n    shm_size: 64m\n"
    ).service("a")
    assert service.stop_grace_period is not None
    assert service.stop_grace_period.seconds == 90.0
    assert service.stop_grace_period.text == "1m30s"
    assert service.shm_size is not None and service.shm_size.bytes == 64 * 1024 * 1024


ERRORS = [
    (
        "a: {image: x, networks: [nope]}",
        r"services\.a\.networks\[0\]: service \"a\" refers to undefined network nope",
    ),
    ('a: {image: x, volumes: ["nope:/x"]}', "refers to undefined volume nope"),
    ("a: {image: x, secrets: [nope]}", "refers to undefined secret nope"),
    ("a: {image: x, configs: [nope]}", "refers to undefined config nope"),
    ("a: {image: x, depends_on: [nope]}", 'service "a" depends on undefined service "nope"'),
    ('a: {image: x, network_mode: "service:zz"}', 'service "a" depends on undefined service "zz"'),
    ("a: {image: x, container_name: c, scale: 2}", "container_name 'c' cannot be used with 2 replicas"),
    (
        "a: {image: x, network_mode: host, networks: [default]}",
        "mutually exclusive `network_mode` and `networks`",
    ),
    ("a: {image: x, restart: sometimes}", "restart must be no, always, unless-stopped or on-failure"),
    ('a: {image: x, restart: "on-failure:x"}', "restart must be"),
    ("a: {image: x, stop_grace_period: 10 seconds}", "invalid duration '10 seconds'"),
    ("a: {image: x, healthcheck: {interval: 5x}}", r"services\.a\.healthcheck\.interval: invalid duration"),
    ("a: {image: x, stop_grace_period: 1d}", "unknown unit 'd'"),
    ('a: {image: x, ports: ["70000:80"]}', r"services\.a\.ports\[0\]: published port must be 1-65535"),
    ('a: {image: x, ports: ["80:0"]}', "container port must be 1-65535"),
    ('a: {image: x, ports: ["8000-8002:80-81"]}', "ranges differ in length"),
    ('a: {image: x, ports: ["a:b:c:d"]}', "invalid IP address"),
    ('a: {image: x, volumes: [":/x"]}', "empty section between colons"),
    ('a: {image: x, volumes: ["/a:/b:ro:x"]}', "too many colons"),
    ("a: {image: x, shm_size: 12q}", "invalid size '12q'"),
]


@pytest.mark.parametrize(("service", "message"), ERRORS)
def test_semantic_errors(service: str, message: str) -> None:
    with pytest.raises(SpecError, match=message) as info:
        project_of("services:\n  " + service + "\n")
    assert info.value.location is not None
    assert info.value.render().startswith("compose.yaml:2:")


def test_bind_volume_device_must_be_absolute() -> None:
    text = (
        "services:\n  a: {image: x}\nvolumes:\n  v:\n    driver_opts: {type: none, o: bind, device: ./rel}\n"
    )
    with pytest.raises(SpecError) as info:
        project_of(text)
    assert info.value.render() == (
        "compose.yaml:5:48: volumes.v.driver_opts.device: "
        "a bind volume needs an absolute device path, not './rel'"
    )


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0", 0),
        ("1m30s", 90 * 10**9),
        (".5s", 5 * 10**8),
        ("1h2m3.5s", 3723500 * 10**6),
        ("-1s", -(10**9)),
        ("1µs", 1000),
        ("1us", 1000),
        ("100ns", 100),
    ],
)
def test_parse_duration(text: str, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize("text", ["", "90", "1d", "1w", "1e3s", "s", "1.s.", "10 seconds"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("1.5g", 1610612736),
        ("100", 100),
        (100, 100),
        ("1kb", 1024),
        ("1 KiB", 1024),
        ("1b", 1),
        ("2T", 2 << 40),
    ],
)
def test_parse_bytes(value: str | int, size: int) -> None:
    assert parse_bytes(value) == size


def test_parse_port_sorts_like_compose() -> None:
    ports = parse_port("98-100:98-100")
    assert [(p.target, p.published) for p in ports] == [(100, "100"), (98, "98"), (99, "99")]


def test_parse_volume_windows_drive_quirk() -> None:
    mount = parse_volume("v:/x")
    assert (mount.type, mount.source, mount.target) == ("volume", None, "v:/x")


def test_image_name_defaults_for_built_services() -> None:
    project = project_of("services:\n  a: {build: .}\n  b: {image: nginx, build: .}\n")
    assert [s.image_name for s in project.services] == ["demo-a", "nginx"]
