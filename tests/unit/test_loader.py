"""The load pipeline end to end: discovery, project directory and name, .env, include, cycles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from composer.errors import ConfigFileNotFound, SpecError
from composer.spec.loader import (
    InvalidProjectName,
    Loaded,
    LoadOptions,
    load_merged_tree,
    load_project,
    normalize_project_name,
)
from composer.spec.serialize import project_to_dict


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def load(cwd: Path, warnings: list[str] | None = None, **kwargs: Any) -> Loaded:
    environ = kwargs.pop("environ", {})
    sink = warnings if warnings is not None else []
    return load_project(LoadOptions(cwd=str(cwd), environ=environ, **kwargs), sink.append)


def as_dict(loaded: Loaded) -> dict[str, Any]:
    return project_to_dict(loaded.project)


# --- discovery -------------------------------------------------------------------------------------


def test_finds_compose_yaml_in_a_parent_directory_with_its_override(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "app/compose.yaml": "services: {web: {image: a}}\n",
            "app/compose.override.yml": "services: {web: {image: b}}\n",
            "app/sub/deeper/.keep": "",
        },
    )
    loaded = load(tmp_path / "app/sub/deeper")
    assert loaded.files == (str(tmp_path / "app/compose.yaml"), str(tmp_path / "app/compose.override.yml"))
    assert loaded.working_dir == str(tmp_path / "app")
    assert loaded.project.name == "app"
    assert as_dict(loaded)["services"]["web"]["image"] == "b"


def test_several_default_names_warn_and_the_first_in_order_wins(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "p/docker-compose.yml": "services: {old: {image: a}}\n",
            "p/compose.yaml": "services: {new: {image: a}}\n",
        },
    )
    warnings: list[str] = []
    loaded = load(tmp_path / "p", warnings)
    assert [s.name for s in loaded.project.services] == ["new"]
    assert any("Found multiple config files" in w for w in warnings)


def test_no_compose_file_anywhere_is_exit_14(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigFileNotFound) as caught:
        load(tmp_path / "empty")
    assert caught.value.exit_code == 14
    assert "no configuration file provided" in caught.value.render()


def test_a_missing_dash_f_file_is_exit_14_and_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileNotFound) as caught:
        load(tmp_path, files=("nope.yaml",))
    assert str(tmp_path / "nope.yaml") in caught.value.render()


def test_compose_file_variable_with_its_separator(tmp_path: Path) -> None:
    write(tmp_path, {"a.yml": "services: {s: {image: one}}\n", "b.yml": "services: {s: {image: two}}\n"})
    loaded = load(tmp_path, environ={"COMPOSE_FILE": "a.yml;b.yml", "COMPOSE_PATH_SEPARATOR": ";"})
    assert as_dict(loaded)["services"]["s"]["image"] == "two"


def test_dash_f_wins_over_compose_file(tmp_path: Path) -> None:
    write(tmp_path, {"a.yml": "services: {s: {image: one}}\n", "b.yml": "services: {s: {image: two}}\n"})
    loaded = load(tmp_path, files=("a.yml",), environ={"COMPOSE_FILE": "b.yml"})
    assert as_dict(loaded)["services"]["s"]["image"] == "one"


def test_stdin_uses_the_working_directory(tmp_path: Path) -> None:
    loaded = load(tmp_path, files=("-",), stdin_text="services: {s: {image: i}}\n")
    assert loaded.working_dir == str(tmp_path)
    assert loaded.project.name == normalize_project_name(tmp_path.name)


def test_several_documents_in_one_file_merge_in_order(tmp_path: Path) -> None:
    write(
        tmp_path,
        {"compose.yaml": "services: {s: {image: a}}\n---\nservices: {s: {image: b}, t: {image: c}}\n"},
    )
    data = as_dict(load(tmp_path))
    assert data["services"]["s"]["image"] == "b"
    assert set(data["services"]) == {"s", "t"}


def test_relative_paths_of_every_file_resolve_against_the_first_files_directory(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "main/compose.yaml": "services: {s: {image: a}}\n",
            "other/extra.yaml": "services: {s: {build: ./ctx}}\n",
        },
    )
    data = as_dict(load(tmp_path, files=("main/compose.yaml", "other/extra.yaml")))
    assert data["services"]["s"]["build"]["context"] == str(tmp_path / "main/ctx")


def test_project_directory_flag_moves_the_root(tmp_path: Path) -> None:
    write(tmp_path, {"files/compose.yaml": "services: {s: {build: .}}\n", "root/.keep": ""})
    loaded = load(tmp_path, files=("files/compose.yaml",), project_directory="root")
    assert loaded.working_dir == str(tmp_path / "root")
    assert loaded.project.name == "root"
    assert as_dict(loaded)["services"]["s"]["build"]["context"] == str(tmp_path / "root")


# --- project name ----------------------------------------------------------------------------------


def test_name_precedence_flag_then_variable_then_file_then_directory(tmp_path: Path) -> None:
    write(tmp_path, {"Dir.Name/compose.yaml": "name: from-file\nservices: {s: {image: a}}\n"})
    where = tmp_path / "Dir.Name"
    assert load(where, project_name="flag").project.name == "flag"
    assert load(where, environ={"COMPOSE_PROJECT_NAME": "env"}).project.name == "env"
    assert load(where).project.name == "from-file"
    (where / "compose.yaml").write_text("services: {s: {image: a}}\n")
    assert load(where).project.name == "dirname"


def test_invalid_dash_p_is_rejected_with_compose_text_and_a_suggestion(tmp_path: Path) -> None:
    write(tmp_path, {"compose.yaml": "services: {s: {image: a}}\n"})
    with pytest.raises(InvalidProjectName) as caught:
        load(tmp_path, project_name="My.App")
    text = caught.value.render()
    assert text.startswith('invalid project name "My.App": must consist only of lowercase alphanumeric')
    assert '(try "myapp")' in text
    assert caught.value.exit_code == 1


def test_name_from_the_file_is_interpolated_and_normalized(tmp_path: Path) -> None:
    write(tmp_path, {"compose.yaml": "name: ${TEAM}_Stack\nservices: {s: {image: a}}\n"})
    assert load(tmp_path, environ={"TEAM": "Blue"}).project.name == "blue_stack"


def test_project_name_is_visible_to_interpolation(tmp_path: Path) -> None:
    write(tmp_path, {"compose.yaml": "services: {s: {image: 'img-${COMPOSE_PROJECT_NAME}'}}\n"})
    assert as_dict(load(tmp_path, project_name="demo"))["services"]["s"]["image"] == "img-demo"


def test_normalize_project_name_rules() -> None:
    assert normalize_project_name("My App_1") == "myapp_1"
    assert normalize_project_name("-_x") == "x"
    assert normalize_project_name("...") == ""


# --- environment -----------------------------------------------------------------------------------


def test_os_environment_wins_over_dot_env(tmp_path: Path) -> None:
    write(
        tmp_path,
        {".env": "TAG=from-file\nOTHER=o\n", "compose.yaml": "services: {s: {image: 'i:${TAG}-${OTHER}'}}\n"},
    )
    data = as_dict(load(tmp_path, environ={"TAG": "from-os"}))
    assert data["services"]["s"]["image"] == "i:from-os-o"


def test_env_file_flag_replaces_dot_env_and_later_files_win(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            ".env": "A=dotenv\nB=dotenv\n",
            "one.env": "A=one\nB=one\n",
            "two.env": "B=two\n",
            "compose.yaml": "services: {s: {image: 'i:${A}-${B}-${C:-none}'}}\n",
        },
    )
    data = as_dict(load(tmp_path, env_files=("one.env", "two.env")))
    assert data["services"]["s"]["image"] == "i:one-two-none"


def test_dot_env_sets_compose_variables(tmp_path: Path) -> None:
    write(
        tmp_path, {".env": "COMPOSE_PROJECT_NAME=fromdotenv\n", "compose.yaml": "services: {s: {image: a}}\n"}
    )
    assert load(tmp_path).project.name == "fromdotenv"


def test_dot_env_of_the_project_directory_is_used(tmp_path: Path) -> None:
    write(tmp_path, {"proj/.env": "TAG=proj\n", "proj/compose.yaml": "services: {s: {image: 'i:${TAG}'}}\n"})
    assert as_dict(load(tmp_path, files=("proj/compose.yaml",)))["services"]["s"]["image"] == "i:proj"


def test_unset_variable_warns_once_with_compose_text(tmp_path: Path) -> None:
    write(tmp_path, {"compose.yaml": "services: {a: {image: '${NOPE}x'}, b: {image: '${NOPE}y'}}\n"})
    warnings: list[str] = []
    load(tmp_path, warnings)
    assert warnings.count('The "NOPE" variable is not set. Defaulting to a blank string.') == 1


def test_version_attribute_warns_it_is_obsolete(tmp_path: Path) -> None:
    write(tmp_path, {"compose.yaml": "version: '3.8'\nservices: {s: {image: a}}\n"})
    warnings: list[str] = []
    data = as_dict(load(tmp_path, warnings))
    assert "version" not in data
    assert any("the attribute `version` is obsolete" in w for w in warnings)


# --- include ---------------------------------------------------------------------------------------


def test_include_loads_with_its_own_directory_and_env(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "compose.yaml": "include: [lib/db.yaml]\nservices: {web: {image: w, depends_on: [db]}}\n",
            "lib/.env": "DB_TAG=11\n",
            "lib/db.yaml": "services: {db: {image: 'db:${DB_TAG}', build: ./ctx}}\n",
        },
    )
    data = as_dict(load(tmp_path, project_name="inc"))
    assert data["services"]["db"]["image"] == "db:11"
    assert data["services"]["db"]["build"]["context"] == str(tmp_path / "lib/ctx")


def test_parent_environment_overrides_the_included_env(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "compose.yaml": "include: [{path: lib/db.yaml, env_file: lib/custom.env}]\nservices: {}\n",
            "lib/custom.env": "DB_TAG=custom\n",
            "lib/db.yaml": "services: {db: {image: 'db:${DB_TAG}'}}\n",
        },
    )
    assert as_dict(load(tmp_path, project_name="x"))["services"]["db"]["image"] == "db:custom"
    got = as_dict(load(tmp_path, project_name="x", environ={"DB_TAG": "os"}))
    assert got["services"]["db"]["image"] == "db:os"


def test_include_conflict_is_an_error_naming_the_service(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "compose.yaml": "include: [lib.yaml]\nservices: {db: {image: mine}}\n",
            "lib.yaml": "services: {db: {image: theirs}}\n",
        },
    )
    with pytest.raises(SpecError) as caught:
        load(tmp_path, project_name="x")
    assert "services 'db' is defined both here and in the included file" in caught.value.render()


def test_include_cycle_is_detected(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "compose.yaml": "include: [a.yaml]\nservices: {}\n",
            "a.yaml": "include: [b.yaml]\nservices: {}\n",
            "b.yaml": "include: [a.yaml]\nservices: {}\n",
        },
    )
    with pytest.raises(SpecError) as caught:
        load(tmp_path, project_name="x")
    assert "include cycle" in caught.value.render()


# --- profiles and cycles -----------------------------------------------------------------------------


def test_compose_profiles_variable_enables_profiles(tmp_path: Path) -> None:
    write(tmp_path, {"compose.yaml": "services: {a: {image: a}, dbg: {image: d, profiles: [debug]}}\n"})
    assert [s.name for s in load(tmp_path).project.services] == ["a"]
    loaded = load(tmp_path, environ={"COMPOSE_PROFILES": "debug"})
    assert [s.name for s in loaded.project.services] == ["a", "dbg"]


def test_dependency_cycle_message_is_deterministic_and_located(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "compose.yaml": (
                "services:\n"
                "  c: {image: x, depends_on: [b]}\n"
                "  b: {image: x, depends_on: [a]}\n"
                "  a: {image: x, depends_on: [c]}\n"
            )
        },
    )
    with pytest.raises(SpecError) as caught:
        load(tmp_path)
    text = caught.value.render()
    assert text.endswith("dependency cycle detected: a -> c -> b -> a")
    assert text.startswith(f"{tmp_path / 'compose.yaml'}:4:")


def test_no_interpolate_keeps_the_templates(tmp_path: Path) -> None:
    write(tmp_path, {"compose.yaml": "services: {s: {image: a, ports: ['${P:-80}:80']}}\n"})
    tree = load_merged_tree(LoadOptions(cwd=str(tmp_path), environ={}, interpolate=False), lambda _: None)
    assert tree["services"]["s"]["ports"] == ["${P:-80}:80"]


def test_errors_carry_file_line_column_and_path(tmp_path: Path) -> None:
    write(tmp_path, {"compose.yaml": "services:\n  web:\n    image: a\n    ports:\n      - '99999:80'\n"})
    with pytest.raises(SpecError) as caught:
        load(tmp_path)
    text = caught.value.render()
    assert text.startswith(f"{tmp_path / 'compose.yaml'}:5:")
    assert "services.web.ports[0]" in text
