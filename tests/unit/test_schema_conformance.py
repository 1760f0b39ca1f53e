"""Our schema (schemas/compose.schema.json) against the official Compose one, document by document.

The corpus is tests/corpus/schema/{valid,invalid}/*.yaml: several YAML documents per file, separated by
`---` lines; an invalid document may start with `# expect: <fragment of our error message>`. On top of it,
mutants of the valid corpus and hypothesis-built services are fed to both schemas. Both must accept and
reject the same documents, except where DIFFERENCES says why not.
"""

from __future__ import annotations

import copy
import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from composer.errors import SpecError, format_path
from composer.spec.source import load_documents
from composer.spec.validate import is_valid, load_schema, schema_errors, validate_document

REPO_ROOT = Path(__file__).resolve().parents[2]
CORPUS = REPO_ROOT / "tests" / "corpus" / "schema"
OFFICIAL_SCHEMA = REPO_ROOT.parent / "shared" / "compose-spec" / "compose-spec.json"


@dataclass(frozen=True)
class Difference:
    """Documents our schema rejects on purpose although the official one accepts them."""

    name: str
    reason: str
    path: str  # regex over the dotted path of our error
    keyword: str  # the JSON Schema keyword of our error


# Every intentional difference between our schema and the official one. All run the same way: ours
# is stricter; nothing the official schema rejects is accepted by ours.
DIFFERENCES: tuple[Difference, ...] = (
    Difference(
        "top-level network and model names",
        "The official schema leaves names that do not match ^[a-zA-Z0-9._-]+$ unchecked under networks and "
        "models (not under services, volumes, secrets, configs); Compose then panics on such a network "
        "(transform.transformMaybeExternal). We reject them like the other maps of names.",
        r"^(networks|models)$",
        "additionalProperties",
    ),
    Difference(
        "service models names",
        "services.*.models as a mapping has no additionalProperties: false in the official schema, unlike "
        "services.*.networks and depends_on; a bad model name is a typo we report.",
        r"^services\.[^.]+\.models$",
        "additionalProperties",
    ),
    Difference(
        "ulimit names",
        "The official ulimits pattern ^[a-z]+$ lets other keys through unchecked (NOFILE: 'x'); the kernel "
        "knows only lowercase names, so we reject them.",
        r"\.ulimits$",
        "additionalProperties",
    ),
    Difference(
        "container_name is anchored",
        "The official pattern [a-zA-Z0-9][a-zA-Z0-9_.-]+ is not anchored, so any name containing two such "
        "characters passes ('my container'); Docker's own rule is the anchored form, which we use.",
        r"\.container_name$",
        "pattern",
    ),
    Difference(
        "pull_policy is anchored",
        "The official pattern is not anchored ('always-and-forever' passes); we accept only the policies "
        "Compose implements.",
        r"\.pull_policy$",
        "pattern",
    ),
    Difference(
        "gpus device requests are closed",
        "In the official schema additionalProperties: false sits beside the array instead of on its items, "
        "so typos in a gpus device request pass; we close the mapping like deploy...devices.",
        r"\.gpus\[\d+\]$",
        "additionalProperties",
    ),
    Difference(
        "secret and config external are closed",
        "networks.*.external and volumes.*.external are closed mappings in the official schema, "
        "secrets.*.external and configs.*.external are not; we close all four alike.",
        r"^(secrets|configs)\.[^.]+\.external$",
        "additionalProperties",
    ),
)


# --- corpus -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusDoc:
    id: str
    text: str
    valid: bool
    expect: str | None

    def load(self) -> Any:
        docs = load_documents(self.text, self.id)
        return docs[0] if docs else {}


def _corpus() -> list[CorpusDoc]:
    out: list[CorpusDoc] = []
    for kind in ("valid", "invalid"):
        for file in sorted((CORPUS / kind).glob("*.yaml")):
            parts = re.split(r"^---$", file.read_text(encoding="utf-8"), flags=re.MULTILINE)
            for index, text in enumerate(parts):
                found = re.search(r"^# expect: (.+)$", text, flags=re.MULTILINE)
                doc_id = f"{kind}/{file.stem}#{index}"
                out.append(CorpusDoc(doc_id, text, kind == "valid", found.group(1) if found else None))
    return out


CORPUS_DOCS = _corpus()
VALID_DOCS = [doc for doc in CORPUS_DOCS if doc.valid]
INVALID_DOCS = [doc for doc in CORPUS_DOCS if not doc.valid]


@cache
def _official() -> Draft202012Validator:
    if not OFFICIAL_SCHEMA.is_file():
        pytest.skip(f"the official Compose schema is not at {OFFICIAL_SCHEMA} (oracle kept outside the repo)")
    schema = json.loads(OFFICIAL_SCHEMA.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _plain(tree: Any) -> Any:
    """A deep copy with plain dicts and lists (mutants must not share or keep locations)."""
    return json.loads(json.dumps(tree))


def _explained(error: ValidationError) -> Difference | None:
    path = format_path(list(error.absolute_path))
    for difference in DIFFERENCES:
        if error.validator == difference.keyword and re.search(difference.path, path):
            return difference
    return None


def _compare(document: Any) -> set[str]:
    """Assert that both schemas agree on `document`; return the names of the differences it shows."""
    ours = schema_errors(document)
    assert is_valid(document) == (not ours), "the fast check and jsonschema disagree on our own schema"
    official_ok = _official().is_valid(document)
    if not ours:
        assert official_ok, (
            "our schema accepts a document the official one rejects: "
            f"{json.dumps(document)[:300]}\n{[e.message for e in _official().iter_errors(document)][:3]}"
        )
        return set()
    if not official_ok:
        return set()
    used: set[str] = set()
    for error in ours:
        difference = _explained(error)
        assert difference is not None, (
            "our schema rejects a document the official one accepts, and DIFFERENCES does not say why: "
            f"{format_path(list(error.absolute_path))}: {error.validator}: {error.message}\n"
            f"{json.dumps(document)[:300]}"
        )
        used.add(difference.name)
    return used


# --- the corpus itself -------------------------------------------------------------------------------


def test_corpus_is_large_enough() -> None:
    assert len(VALID_DOCS) >= 60
    assert len(INVALID_DOCS) >= 150
    assert all(doc.expect for doc in INVALID_DOCS), [doc.id for doc in INVALID_DOCS if not doc.expect]


@pytest.mark.parametrize("doc", VALID_DOCS, ids=lambda doc: doc.id)
def test_valid_document_is_accepted(doc: CorpusDoc) -> None:
    validate_document(doc.load())


@pytest.mark.parametrize("doc", INVALID_DOCS, ids=lambda doc: doc.id)
def test_invalid_document_is_rejected_with_a_located_message(doc: CorpusDoc) -> None:
    tree = doc.load()
    with pytest.raises(SpecError) as caught:
        validate_document(tree)
    error = caught.value
    assert doc.expect is not None
    assert doc.expect in error.render()
    assert error.location is not None and error.location.file == doc.id
    rendered = error.render()
    assert rendered.startswith(f"{doc.id}:{error.location.line}:{error.location.col}: ")
    assert "\n" not in rendered
    if error.path:  # the path is empty only for errors about the top level itself
        assert rendered.startswith(f"{error.location}: {error.path}: ")
    else:
        assert "top-level key" in rendered


# --- agreement with the official schema ---------------------------------------------------------------


@pytest.mark.parametrize("doc", CORPUS_DOCS, ids=lambda doc: doc.id)
def test_corpus_document_agrees_with_official_schema(doc: CorpusDoc) -> None:
    _compare(doc.load())


def test_every_difference_is_exercised_by_the_corpus() -> None:
    used: set[str] = set()
    for doc in INVALID_DOCS:
        used |= _compare(doc.load())
    assert used == {difference.name for difference in DIFFERENCES}


_REPLACEMENTS: tuple[Any, ...] = (
    None,
    True,
    0,
    -1,
    1.5,
    "",
    "s",
    [],
    ["s"],
    ["s", "s"],
    [1],
    {},
    {"k": "v"},
    {"k": None},
    {"k": [1]},
    {"x-k": 1},
)


def _nodes(tree: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _nodes(value, (*path, key))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            yield from _nodes(value, (*path, index))


def _get(tree: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        tree = tree[part]
    return tree


def _mutants(tree: Any) -> Iterator[Any]:
    """Every single-step change of `tree`: a replaced value, an added or removed key, a repeated item."""
    for path in _nodes(tree):
        if path:
            for replacement in _REPLACEMENTS:
                mutant = copy.deepcopy(tree)
                _get(mutant, path[:-1])[path[-1]] = copy.deepcopy(replacement)
                yield mutant
        node = _get(tree, path)
        if isinstance(node, dict):
            for key in node:
                mutant = copy.deepcopy(tree)
                del _get(mutant, path)[key]
                yield mutant
            for extra in ("zz_unknown", "x-zz", "NOFILE", "bad name"):
                mutant = copy.deepcopy(tree)
                _get(mutant, path)[extra] = "v"
                yield mutant
        elif isinstance(node, list) and node:
            mutant = copy.deepcopy(tree)
            _get(mutant, path).append(copy.deepcopy(node[0]))
            yield mutant


MUTANT_SAMPLE = 4000


def test_mutants_of_the_valid_corpus_agree_with_official_schema() -> None:
    _official()
    mutants = [mutant for doc in VALID_DOCS for mutant in _mutants(_plain(doc.load()))]
    assert len(mutants) > MUTANT_SAMPLE
    sample = random.Random(20261123).sample(mutants, MUTANT_SAMPLE)
    rejected = 0
    for mutant in sample:
        _compare(mutant)
        rejected += bool(schema_errors(mutant))
    # the sample must exercise both answers, or it proves little
    assert 0.2 * MUTANT_SAMPLE < rejected < 0.9 * MUTANT_SAMPLE


# --- generated services ------------------------------------------------------------------------------

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2000, 70000),
    st.sampled_from([0.5, 1.0, -1.5]),
    st.sampled_from(["", "x", "80:80", "always", "all", "host", "service_healthy", "sync", "bind", "1m"]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(["target", "source", "type", "condition", "soft", "hard", "path", "x-k", "zz"]),
            inner,
            max_size=3,
        ),
    ),
    max_leaves=6,
)


@cache
def _service_keys() -> list[str]:
    return sorted(load_schema()["$defs"]["service"]["properties"])


@settings(max_examples=400, derandomize=True, database=None, deadline=None)
@given(data=st.data())
def test_generated_services_agree_with_official_schema(data: st.DataObject) -> None:
    _official()
    service = data.draw(
        st.dictionaries(st.sampled_from([*_service_keys(), "imagee", "x-k"]), _VALUES, max_size=4)
    )
    _compare({"services": {"svc": service}})


@settings(
    max_examples=200,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    kind=st.sampled_from(["networks", "volumes", "secrets", "configs", "models"]),
    body=st.one_of(
        st.none(),
        st.dictionaries(
            st.sampled_from(
                ["name", "driver", "driver_opts", "external", "labels", "ipam", "file", "content", "model"]
            ),
            _VALUES,
            max_size=3,
        ),
    ),
)
def test_generated_top_level_objects_agree_with_official_schema(kind: str, body: Any) -> None:
    _official()
    _compare({kind: {"thing": body}})


def _official_schema() -> dict[str, Any]:
    _official()
    schema: dict[str, Any] = json.loads(OFFICIAL_SCHEMA.read_text(encoding="utf-8"))
    return schema


def _property_names(schema: dict[str, Any]) -> set[str]:
    """Every attribute name declared anywhere in `schema` (the keys of each `properties`)."""
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            names.update(node.get("properties", {}))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return names


def test_same_top_level_keys_and_service_attributes_as_official() -> None:
    official = _official_schema()
    ours = load_schema()
    assert set(ours["properties"]) == set(official["properties"])
    assert set(ours["$defs"]["service"]["properties"]) == set(official["$defs"]["service"]["properties"])


def test_same_attribute_names_anywhere_as_official() -> None:
    assert _property_names(load_schema()) == _property_names(_official_schema())
