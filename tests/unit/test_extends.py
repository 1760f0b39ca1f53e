"""`extends` resolution (expected results checked against the docker-compose v2 binary)."""

from __future__ import annotations

import textwrap

import pytest

from composer.errors import SpecError
from composer.spec.extends import apply_extends, rebase_service_paths
from composer.spec.merge import resolve_tags
from composer.spec.source import MDict, load_documents


def tree_of(text: str, name: str) -> MDict:
    return load_documents(textwrap.dedent(text), name)[0]


def resolve(files: dict[str, str], main: str = "compose.yaml") -> MDict:
    """Resolve `main` among in-memory `files`; records which files were loaded."""
    loaded: list[str] = []

    def load_file(path: str) -> MDict:
        loaded.append(path)
        if path not in files:
            raise FileNotFoundError(2, "No such file or directory", path)
        return tree_of(files[path], path)

    out = apply_extends(tree_of(files[main], main), filename=main, load_file=load_file)
    assert len(loaded) == len(set(loaded)), "each file is loaded once"
    return resolve_tags(out)


def test_same_file_string_form() -> None:
    out = resolve(
        {
            "compose.yaml": """
            services:
              base: {image: busybox, environment: {A: 1}, ports: ['80']}
              web: {extends: base, environment: [B=2], ports: ['90']}
            """
        }
    )
    assert out["services"]["web"] == {
        "image": "busybox",
        "environment": ["A=1", "B=2"],
        "ports": ["80", "90"],
    }
    assert out["services"]["base"] == {"image": "busybox", "environment": {"A": 1}, "ports": ["80"]}


def test_mapping_form_without_file_and_recursion() -> None:
    out = resolve(
        {
            "compose.yaml": """
            services:
              a: {image: a, user: root, command: [x]}
              b: {extends: {service: a}, command: y}
              c: {extends: b, user: nobody}
            """
        }
    )
    assert out["services"]["c"] == {"image": "a", "user": "nobody", "command": "y"}


def test_everything_is_inherited() -> None:
    out = resolve(
        {
            "compose.yaml": """
            services:
              db: {image: pg}
              base:
                image: x
                depends_on: [db]
                links: [db]
                volumes_from: [db]
                network_mode: "service:db"
              web: {extends: base}
            """
        }
    )
    assert out["services"]["web"] == {
        "image": "x",
        "depends_on": ["db"],
        "links": ["db"],
        "volumes_from": ["db"],
        "network_mode": "service:db",
    }


def test_other_file_paths_are_rebased() -> None:
    out = resolve(
        {
            "compose.yaml": """
            services:
              web:
                extends: {file: sub/base.yaml, service: base}
                labels: [c=d]
            """,
            "sub/base.yaml": """
            services:
              base:
                image: busybox
                build: ./ctx
                env_file: [./a.env, {path: b.env, required: false}]
                volumes:
                  - ./data:/data
                  - named:/n
                  - /abs:/abs
                  - ~/h:/h
                  - {type: bind, source: lb, target: /lb}
                  - {type: volume, source: vol, target: /v}
                labels: {a: b}
                develop: {watch: [{path: ./src, action: sync, target: /app}]}
            networks: {unused: {}}
            """,
        }
    )
    assert out == {
        "services": {
            "web": {
                "image": "busybox",
                "build": "./sub/ctx",
                "env_file": ["./sub/a.env", {"path": "./sub/b.env", "required": False}],
                "volumes": [
                    "./sub/data:/data",
                    "named:/n",
                    "/abs:/abs",
                    "~/h:/h",
                    {"type": "bind", "source": "./sub/lb", "target": "/lb"},
                    {"type": "volume", "source": "vol", "target": "/v"},
                ],
                "labels": ["a=b", "c=d"],
                "develop": {"watch": [{"path": "./sub/src", "action": "sync", "target": "/app"}]},
            }
        }
    }


def test_chain_across_directories() -> None:
    out = resolve(
        {
            "compose.yaml": "services: {m: {extends: {file: sub/base.yaml, service: mid}}}",
            "sub/base.yaml": """
            services:
              mid: {extends: {file: inner/deep.yaml, service: deep}, environment: {M: 1}}
            """,
            "sub/inner/deep.yaml": """
            services:
              deep:
                image: deep
                build: {context: ../../d, dockerfile: X}
                env_file: e.env
                volumes: ['.:/cur']
            """,
        }
    )
    assert out["services"]["m"] == {
        "image": "deep",
        "build": {"context": "./d", "dockerfile": "X"},
        "env_file": "./sub/inner/e.env",
        "volumes": ["./sub/inner:/cur"],
        "environment": {"M": 1},
    }


def test_build_remote_and_additional_contexts() -> None:
    out = resolve(
        {
            "compose.yaml": """
            services:
              w: {extends: {file: sub/b.yaml, service: b}}
              w2: {extends: {file: sub/b.yaml, service: b2}}
              w3: {extends: {file: sub/b.yaml, service: b3}}
            """,
            "sub/b.yaml": """
            services:
              b:
                build:
                  context: "https://github.com/a/b.git#main"
                  additional_contexts: {c1: ./c1, c2: "docker-image://alpine", c3: c3rel}
              b2:
                build: {context: "git@github.com:a/b.git", additional_contexts: [c=./c]}
              b3:
                build: {dockerfile: X}
            """,
        }
    )
    assert out["services"]["w"]["build"] == {
        "context": "https://github.com/a/b.git#main",
        "additional_contexts": {"c1": "./sub/c1", "c2": "docker-image://alpine", "c3": "./sub/c3rel"},
    }
    assert out["services"]["w2"]["build"] == {
        "context": "git@github.com:a/b.git",
        "additional_contexts": ["c=./sub/c"],
    }
    # As in Compose: a build without a context is not given one.
    assert out["services"]["w3"]["build"] == {"dockerfile": "X"}


def test_same_directory_file_needs_no_rebase() -> None:
    out = resolve(
        {
            "compose.yaml": "services: {w: {extends: {file: base.yaml, service: b}}}",
            "base.yaml": "services: {b: {build: ctx, volumes: ['./x:/x']}}",
        }
    )
    assert out["services"]["w"] == {"build": "ctx", "volumes": ["./x:/x"]}


def test_reset_and_override_against_the_base() -> None:
    out = resolve(
        {
            "compose.yaml": """
            services:
              base: {image: a, ports: ['80'], environment: {A: 1}}
              web: {extends: base, ports: !reset [], environment: !override {B: 2}}
            """
        }
    )
    assert out["services"]["web"] == {"image": "a", "environment": {"B": 2}}


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            {
                "compose.yaml": "services:\n  a: {image: x, extends: b}\n"
                "  b: {image: x, extends: c}\n  c: {extends: a}\n"
            },
            "compose.yaml:2:26: services.a.extends: extends cycle: "
            "a (compose.yaml) -> b (compose.yaml) -> c (compose.yaml) -> a (compose.yaml)",
        ),
        (
            {"compose.yaml": "services:\n  a: {image: x, extends: a}\n"},
            "compose.yaml:2:26: services.a.extends: extends cycle: a (compose.yaml) -> a (compose.yaml)",
        ),
        (
            {
                "compose.yaml": "services:\n  a: {extends: {file: sub/x.yaml, service: b}}\n",
                "sub/x.yaml": "services:\n  b: {extends: {file: ../compose.yaml, service: a}}\n",
            },
            "compose.yaml:2:16: services.a.extends: extends cycle: "
            "a (compose.yaml) -> b (sub/x.yaml) -> a (compose.yaml)",
        ),
        (
            {"compose.yaml": "services:\n  a: {image: x, extends: nope}\n"},
            "compose.yaml:2:26: services.a.extends: "
            'cannot extend service "a": service "nope" not found in compose.yaml',
        ),
        (
            {
                "compose.yaml": "services:\n  a: {extends: {file: b.yaml, service: nope}}\n",
                "b.yaml": "services: {}",
            },
            "compose.yaml:2:40: services.a.extends: "
            'cannot extend service "a": service "nope" not found in b.yaml',
        ),
        (
            {"compose.yaml": "services:\n  a: {extends: {file: gone.yaml, service: b}}\n"},
            'compose.yaml:2:23: services.a.extends.file: cannot extend service "a": '
            "cannot read gone.yaml: No such file or directory",
        ),
        (
            {"compose.yaml": "services:\n  a: {extends: {file: b.yaml, service: b}}\n", "b.yaml": "x-a: 1\n"},
            "compose.yaml:2:40: services.a.extends: "
            'cannot extend service "a": b.yaml has no services section',
        ),
        (
            {"compose.yaml": "services:\n  a: {extends: {file: b.yaml}}\n"},
            "compose.yaml:2:16: services.a.extends: extends needs a service name (extends.service)",
        ),
    ],
    ids=[
        "cycle",
        "self",
        "cycle-across-files",
        "missing",
        "missing-in-file",
        "no-file",
        "no-services",
        "no-name",
    ],
)
def test_errors(files: dict[str, str], message: str) -> None:
    with pytest.raises(SpecError) as info:
        resolve(files)
    assert info.value.render() == message


def test_no_extends_returns_the_tree() -> None:
    tree = tree_of("services: {a: {image: x}}", "compose.yaml")
    assert apply_extends(tree, filename="compose.yaml", load_file=lambda p: MDict()) is tree


def test_rebase_keeps_named_volumes_and_absolute_paths() -> None:
    svc = tree_of("volumes: [data:/d, /abs:/a, ../up:/u]\nenv_file: /etc/e.env\n", "x.yaml")
    out = rebase_service_paths(svc, "sub")
    assert out == {"volumes": ["data:/d", "/abs:/a", "./up:/u"], "env_file": "/etc/e.env"}
    assert rebase_service_paths(svc, "/abs/dir")["volumes"][2] == "/abs/up:/u"


def test_home_relative_file_is_passed_to_the_loader() -> None:
    seen: list[str] = []

    def load_file(path: str) -> MDict:
        seen.append(path)
        return tree_of("services: {b: {build: ctx}}", path)

    tree = tree_of("services: {w: {extends: {file: ~/lib/base.yaml, service: b}}}", "dir/compose.yaml")
    out = resolve_tags(apply_extends(tree, filename="dir/compose.yaml", load_file=load_file))
    assert seen == ["~/lib/base.yaml"]
    assert out["services"]["w"] == {"build": "~/lib/ctx"}


def test_relative_file_is_resolved_against_the_extending_file() -> None:
    seen: list[str] = []

    def load_file(path: str) -> MDict:
        seen.append(path)
        return tree_of("services: {b: {image: x}}", path)

    tree = tree_of("services: {w: {extends: {file: ../lib/base.yaml, service: b}}}", "/p/dir/compose.yaml")
    apply_extends(tree, filename="/p/dir/compose.yaml", load_file=load_file)
    assert seen == ["/p/lib/base.yaml"]
