"""composer.spec.validate: which schema error is reported, how it reads, and where it points."""

from __future__ import annotations

import json
import subprocess
import sys
from textwrap import dedent
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from composer.errors import Location, SpecError
from composer.spec.source import MDict, load_documents
from composer.spec.validate import SCHEMA_PATH, load_schema, schema_errors, validate_document


def _load(text: str, filename: str = "compose.yaml") -> MDict:
    return load_documents(dedent(text), filename)[0]


def _error(text: str) -> SpecError:
    with pytest.raises(SpecError) as caught:
        validate_document(_load(text))
    return caught.value


def _rendered(text: str) -> str:
    return _error(text).render()


# --- the schema file ----------------------------------------------------------------------------------


def test_schema_is_draft_2020_12_and_closes_every_object() -> None:
    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert SCHEMA_PATH.name == "compose.schema.json"

    open_objects: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if "properties" in node and node.get("additionalProperties") is not False:
                open_objects.append(where)
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}/{index}")

    walk(schema, "#")
    assert open_objects == []


def test_schema_is_itself_a_valid_draft_2020_12_schema() -> None:
    Draft202012Validator.check_schema(load_schema())


def test_valid_documents_do_not_import_jsonschema() -> None:
    """jsonschema costs ~40 ms to import; `composer config` on a valid file should not pay for it."""
    script = (
        "import sys\n"
        "from composer.spec.validate import validate_document\n"
        "validate_document({'services': {'a': {'image': 'x', 'ports': ['80:80']}}})\n"
        "print('jsonschema' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_every_service_attribute_of_compose_is_declared() -> None:
    declared = set(load_schema()["$defs"]["service"]["properties"])
    some = {"image", "build", "ports", "volumes", "depends_on", "healthcheck", "deploy", "develop"}
    some |= {"networks", "secrets", "configs", "logging", "ulimits", "post_start", "pre_stop", "gpus"}
    some |= {"provider", "models", "use_api_socket", "label_file", "blkio_config", "credential_spec"}
    assert some <= declared
    assert len(declared) >= 90


# --- valid documents ----------------------------------------------------------------------------------


def test_valid_document_passes() -> None:
    validate_document(
        _load(
            """\
            name: demo
            x-defaults: &defaults {restart: always}
            services:
              web:
                <<: *defaults
                image: nginx
                ports: ["8080:80", 443, {target: 9000, published: "9000"}]
                depends_on: {db: {condition: service_healthy}}
              db:
                image: postgres
                healthcheck: {test: [CMD, pg_isready], interval: 5s}
            networks: {front: null}
            volumes: {data: {driver_opts: {type: none, o: bind, device: /srv}}}
            """
        )
    )


def test_plain_dicts_are_accepted_and_errors_then_have_a_path_but_no_location() -> None:
    validate_document({"services": {"a": {"image": "x"}}})  # type: ignore[arg-type]
    with pytest.raises(SpecError) as caught:
        validate_document({"services": {"a": {"image": 1}}})  # type: ignore[arg-type]
    assert caught.value.location is None
    assert caught.value.render() == "services.a.image: must be a string"


# --- wording and locations ----------------------------------------------------------------------------


def test_typo_in_attribute_points_at_the_key_and_suggests_the_name() -> None:
    error = _error(
        """\
        services:
          web:
            imagee: nginx
        """
    )
    assert error.location == Location("compose.yaml", 3, 5)
    assert error.path == "services.web"
    assert (
        error.render() == 'compose.yaml:3:5: services.web: unknown attribute "imagee" (did you mean "image"?)'
    )


def test_unknown_attribute_without_a_close_name_has_no_suggestion() -> None:
    assert (
        _rendered(
            """\
        services:
          web:
            image: nginx
            frobnicate: 1
        """
        )
        == 'compose.yaml:4:5: services.web: unknown attribute "frobnicate"'
    )


def test_extension_keys_are_allowed_everywhere_the_spec_allows_them() -> None:
    validate_document(
        _load(
            """\
            x-top: 1
            services:
              web: {image: x, x-a: 1, ports: [{target: 1, x-b: 2}], logging: {x-c: 3}}
            networks: {n: {x-d: 4, ipam: {config: [{x-e: 5}]}}}
            """
        )
    )
    # ...but not where Compose closes the mapping without them
    assert _rendered("services: {a: {image: x, extends: {service: b, x-k: 1}}}\n").endswith(
        'services.a.extends: unknown attribute "x-k"'
    )


def test_wrong_type_for_a_string_attribute() -> None:
    assert (
        _rendered(
            """\
        services:
          web:
            image: nginx
            restart: 5
        """
        )
        == "compose.yaml:4:14: services.web.restart: must be a string"
    )


def test_wrong_type_in_a_list_points_at_the_item() -> None:
    assert (
        _rendered(
            """\
        services:
          web:
            image: nginx
            ports:
              - "80:80"
              - [443]
        """
        )
        == "compose.yaml:6:9: services.web.ports[1]: must be a number, a string or a mapping"
    )


def test_unknown_key_in_long_port_syntax() -> None:
    assert (
        _rendered(
            """\
        services:
          web:
            image: nginx
            ports:
              - target: 80
                publised: 8080
        """
        )
        == 'compose.yaml:6:9: services.web.ports[0]: unknown attribute "publised" (did you mean "published"?)'
    )


def test_unknown_top_level_key() -> None:
    assert (
        _rendered(
            """\
        services: {}
        service: {}
        """
        )
        == 'compose.yaml:2:1: unknown top-level key "service" (did you mean "services"?)'
    )


def test_service_attribute_at_the_top_level_says_where_it_belongs() -> None:
    assert _rendered("image: nginx\n") == (
        'compose.yaml:1:1: unknown top-level key "image" (service attributes go under services.<name>)'
    )


def test_service_that_is_not_a_mapping() -> None:
    assert _rendered("services:\n  web:\n") == "compose.yaml:2:7: services.web: must be a mapping"
    assert _rendered("services:\n  web: nginx\n") == "compose.yaml:2:8: services.web: must be a mapping"


def test_invalid_service_name_points_at_the_name() -> None:
    assert (
        _rendered(
            """\
        services:
          ok: {image: x}
          "my web": {image: x}
        """
        )
        == 'compose.yaml:3:3: services: invalid service name "my web": '
        'use only letters, digits, ".", "_" and "-"'
    )


def test_network_definition_that_is_not_a_mapping() -> None:
    assert (
        _rendered(
            """\
        services: {}
        networks:
          front: bridge
        """
        )
        == "compose.yaml:3:10: networks.front: must be a mapping or null"
    )


def test_network_ipam_mistakes() -> None:
    assert (
        _rendered(
            """\
        networks:
          front:
            ipam:
              subnet: 10.0.0.0/24
        """
        )
        == 'compose.yaml:4:7: networks.front.ipam: unknown attribute "subnet"'
    )
    assert (
        _rendered(
            """\
        networks:
          front:
            ipam:
              config:
                - subnet: 10
        """
        )
        == "compose.yaml:5:19: networks.front.ipam.config[0].subnet: must be a string"
    )


def test_volume_definition_mistakes() -> None:
    assert _rendered("volumes:\n  data: /srv/data\n") == (
        "compose.yaml:2:9: volumes.data: must be a mapping or null"
    )
    assert _rendered("volumes:\n  data:\n    driver_opt: {}\n") == (
        'compose.yaml:3:5: volumes.data: unknown attribute "driver_opt" (did you mean "driver_opts"?)'
    )
    assert _rendered("volumes:\n  data:\n    external: []\n") == (
        "compose.yaml:3:15: volumes.data.external: must be a boolean, a string or a mapping"
    )


def test_missing_required_attribute() -> None:
    assert (
        _rendered(
            """\
        services:
          web:
            image: x
            depends_on:
              db: {restart: true}
        """
        )
        == 'compose.yaml:5:11: services.web.depends_on.db: "condition" is required'
    )
    assert _rendered("services: {a: {image: x, ulimits: {nofile: {}}}}\n").endswith(
        'services.a.ulimits.nofile: "soft" and "hard" are required'
    )


def test_enum_lists_the_choices() -> None:
    assert _rendered("services: {a: {image: x, depends_on: {b: {condition: healthy}}}}\n").endswith(
        "services.a.depends_on.b.condition: must be "
        '"service_started", "service_healthy" or "service_completed_successfully", not "healthy"'
    )


def test_duplicate_item_points_at_the_repeat() -> None:
    assert (
        _rendered(
            """\
        services:
          web:
            image: x
            ports:
              - "80:80"
              - "81:81"
              - "80:80"
        """
        )
        == 'compose.yaml:7:9: services.web.ports[2]: duplicate item "80:80"'
    )


def test_bounds() -> None:
    assert _rendered("services: {a: {image: x, cpu_percent: 101}}\n").endswith(
        "services.a.cpu_percent: must be at most 100, not 101"
    )
    assert _rendered("services: {a: {image: x, oom_score_adj: -1001}}\n").endswith(
        "services.a.oom_score_adj: must be at least -1000, not -1001"
    )


def test_patterns_read_as_sentences() -> None:
    assert _rendered("services: {a: {image: x, pull_policy: sometimes}}\n").endswith(
        'services.a.pull_policy: "sometimes" is not a pull policy: use always, never, build, missing, '
        "if_not_present, refresh, daily, weekly or every_<duration>"
    )
    assert _rendered("services: {a: {image: x, container_name: -web}}\n").endswith(
        'services.a.container_name: invalid container name "-web": '
        'use a letter or a digit, then letters, digits, "_", "." or "-"'
    )


def test_empty_key_in_a_mapping_of_variables() -> None:
    assert _rendered('services: {a: {image: x, environment: {"": 1}}}\n').endswith(
        "services.a.environment: keys must not be empty"
    )


def test_strings_are_accepted_where_interpolation_may_produce_them() -> None:
    validate_document(
        _load(
            """\
            services:
              a:
                image: x
                cpus: "0.5"
                scale: "2"
                privileged: "true"
                mem_limit: 1g
                cpu_count: "${N}"
                ulimits: {nofile: "1024"}
                healthcheck: {retries: "3"}
                deploy: {replicas: "3"}
            """
        )
    )


# --- choosing among several errors --------------------------------------------------------------------


def test_the_earliest_error_in_the_document_wins() -> None:
    assert (
        _rendered(
            """\
        services:
          a:
            image: x
            restart: 1
          b:
            imagee: y
        """
        )
        == "compose.yaml:4:14: services.a.restart: must be a string"
    )
    assert (
        _rendered(
            """\
        services:
          a:
            imagee: y
            restart: 1
        """
        )
        == 'compose.yaml:3:5: services.a: unknown attribute "imagee" (did you mean "image"?)'
    )


def test_errors_are_reported_in_document_order_not_schema_order() -> None:
    # jsonschema yields errors in schema order; we report the one written first
    text = "networks: {n: {ipam: {config: [{%s}]}}}\n"
    assert _rendered(text % "foo: 1, subnet: 1").endswith(
        'networks.n.ipam.config[0]: unknown attribute "foo"'
    )
    assert _rendered(text % "subnet: 1, foo: 1").endswith(
        "networks.n.ipam.config[0].subnet: must be a string"
    )


def test_only_failing_services_are_rechecked_but_order_is_the_documents() -> None:
    text = """\
        services:
          a: {image: x}
          b: {image: x, ports: [[1]]}
          c: {image: x}
          d: {imagee: x}
        volumes: {v: 1}
        """
    assert (
        _rendered(text) == "compose.yaml:3:25: services.b.ports[0]: must be a number, a string or a mapping"
    )
    assert _rendered(text.replace("[[1]]", "[1]")).startswith(
        "compose.yaml:5:7: services.d: unknown attribute"
    )
    assert _rendered(text.replace("[[1]]", "[1]").replace("imagee", "image")) == (
        "compose.yaml:6:14: volumes.v: must be a mapping or null"
    )


def test_same_document_same_error() -> None:
    text = "services: {a: {image: 1, restart: 2, ports: [[1]], zz: 1}, b: {imagee: 1}}\n"
    assert len({_rendered(text) for _ in range(5)}) == 1
    assert len(schema_errors(_load(text))) == 5


def test_locations_follow_the_file_name_given_to_the_loader() -> None:
    tree = load_documents("services:\n  web:\n    image: [x]\n", "deploy/compose.prod.yaml")[0]
    with pytest.raises(SpecError) as caught:
        validate_document(tree)
    assert str(caught.value) == "deploy/compose.prod.yaml:3:12: services.web.image: must be a string"


# --- speed --------------------------------------------------------------------------------------------


def test_an_error_in_the_last_of_five_thousand_services_is_found() -> None:
    """Large documents take the fast path; an error deep in them is still found and named.
    (How fast this runs is measured in bench/config_load.py, not asserted here.)"""
    services = {
        f"s{i}": {
            "image": f"nginx:{i}",
            "restart": "unless-stopped",
            "ports": [f"{8000 + i}:80"],
            "environment": {"A": 1, "B": "x"},
            "volumes": ["data:/data", {"type": "bind", "source": "./a", "target": "/b"}],
            "depends_on": {"db": {"condition": "service_healthy"}},
            "networks": ["front", "back"],
            "healthcheck": {"test": ["CMD", "true"], "interval": "10s", "retries": 3},
            "deploy": {"resources": {"limits": {"cpus": "0.5", "memory": "50M"}}},
            "labels": ["a=b"],
        }
        for i in range(5000)
    }
    tree = json.loads(json.dumps({"services": services}))
    validate_document(tree)
    tree["services"]["s4999"]["imagee"] = "x"
    with pytest.raises(SpecError, match=r"services\.s4999: unknown attribute"):
        validate_document(tree)
