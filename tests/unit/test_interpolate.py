"""Interpolation: the grammar (cases as compose-go's template tests list them, plus corner cases
checked against docker-compose 2.26) and the walk over a located compose tree."""

from __future__ import annotations

import pytest

from composer.errors import Location, SpecError
from composer.spec.interpolate import TemplateError, interpolate_tree, substitute, unset_warning
from composer.spec.source import MDict, MList, Override, Reset, load_documents

ENV = {"FOO": "first", "BAR": ""}


def sub(template: str, env: dict[str, str] | None = None) -> str:
    return substitute(template, (ENV if env is None else env).get)


def sub_warnings(template: str) -> tuple[str, list[str]]:
    warnings: list[str] = []
    return substitute(template, ENV.get, warn=warnings.append), warnings


# --- the grammar ----------------------------------------------------------------------------------


def test_no_reference_is_returned_as_is() -> None:
    text = "plain text"
    assert substitute(text, ENV.get) is text


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("$${foo}", "${foo}"),
        ("$$FOO", "$FOO"),
        ("$$$FOO", "$first"),
        ("$$$$", "$$"),
        ("a $ string", "a $ string"),
        ("^REGEX$", "^REGEX$"),
        ("$}", "$}"),
        ("$", "$"),
        ("$1", "$1"),
        ("$-x", "$-x"),
    ],
)
def test_escapes_and_literal_dollars(template: str, expected: str) -> None:
    assert sub(template) == expected


def test_escaped_dollar_is_not_expanded_again() -> None:
    assert sub("$${FOO}", {"FOO": "x", "${FOO}": "never"}) == "${FOO}"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("This $FOO var", "This first var"),
        ("This ${FOO} var", "This first var"),
        ("$FOO-bar", "first-bar"),  # docker/compose#8601: `-` after a bare name is text
        ("$FOO:bar", "first:bar"),
        ("${FOO}${FOO}", "firstfirst"),
        ("$FOO_X", ""),  # the name runs as far as name characters go
        ("${FOO}}", "first}"),
        ("$FOO}", "first}"),
    ],
)
def test_plain_references(template: str, expected: str) -> None:
    assert sub(template) == expected


def test_names_are_case_sensitive_in_lookup() -> None:
    assert sub("${foo}-${FOO}") == "-first"


def test_unset_and_empty_without_default_give_blank() -> None:
    assert sub("This ${missing} var") == "This  var"
    assert sub("This ${BAR} var") == "This  var"


def test_unset_variable_warns_with_compose_text_each_time() -> None:
    result, warnings = sub_warnings("$NOPE ${NOPE} ${BAR}")
    assert result == "  "
    assert warnings == [unset_warning("NOPE")] * 2
    assert warnings[0] == 'The "NOPE" variable is not set. Defaulting to a blank string.'


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("ok ${missing:-def}", "ok def"),
        ("ok ${missing-def}", "ok def"),
        ("ok ${BAR:-def}", "ok def"),
        ("ok ${BAR-def}", "ok "),
        ("ok ${FOO:-def}", "ok first"),
        ("ok ${FOO-def}", "ok first"),
        ("ok ${BAR:-/non:-alphanumeric}", "ok /non:-alphanumeric"),
        ("ok ${missing:-}", "ok "),
        ("ok ${missing:-a b  c}", "ok a b  c"),
    ],
)
def test_defaults(template: str, expected: str) -> None:
    assert sub(template) == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("ok ${UNSET_VAR:+presence_value}", "ok "),
        ("ok ${UNSET_VAR+presence_value}", "ok "),
        ("ok ${FOO:+presence_value}", "ok presence_value"),
        ("ok ${FOO+presence_value}", "ok presence_value"),
        ("ok ${BAR+presence_value}", "ok presence_value"),
        ("ok ${BAR:+presence_value}", "ok "),
    ],
)
def test_alternative_values(template: str, expected: str) -> None:
    assert sub(template) == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("-ok ${BAR:-defaultValue}", "-ok defaultValue"),
        ("+ok ${UNSET:-${BAR-defaultValue}}", "+ok "),
        ("-ok ${FOO:-defaultValue}", "-ok first"),
        (":-ok ${UNSET-defaultValue}", ":-ok defaultValue"),
        (":-ok ${BAR-defaultValue}", ":-ok "),
        (":?ok ${BAR-defaultValue}", ":?ok "),
        (":?ok ${BAR:-defaultValue}", ":?ok defaultValue"),
        (":+ok ${BAR:-defaultValue}", ":+ok defaultValue"),
        ("+ok ${BAR-defaultValue}", "+ok "),
        ("?ok ${BAR:-defaultValue}", "?ok defaultValue"),
    ],
)
def test_operators_outside_a_reference_do_not_interfere(template: str, expected: str) -> None:
    assert sub(template) == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("ok ${UNSET_VAR-$FOO}", "ok first"),
        ("ok ${UNSET_VAR-${FOO}}", "ok first"),
        ("ok ${UNSET_VAR-${FOO} ${FOO}}", "ok first first"),
        ("ok ${BAR:-$FOO}", "ok first"),
        ("ok ${BAR:-${FOO}}", "ok first"),
        ("ok ${BAR:-${FOO} ${FOO}}", "ok first first"),
        ("ok ${BAR+$FOO}", "ok first"),
        ("ok ${BAR+$FOO ${FOO:+second}}", "ok first second"),
        ("${FOO:+${FOO},}B", "first,B"),
        ("${UNSET:-${X:-1}2}3}", "123}"),
        ("${UNSET:-${FOO}x}y}z}", "firstxy}z}"),
        ("${foo:-${FOO}}", "first"),
        ("${A:-x} ${B:-y}", "x y"),
    ],
)
def test_nested_expansion(template: str, expected: str) -> None:
    assert sub(template) == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        # Compose's brace counting skips the character right after each `{`.
        ("${FOO:-{}}", "first"),
        ("${UNSET:-{}}", "{}"),
        ("${UNSET:-{x}", "{x"),
        ("${FOO:-}}", "first}"),
        ("${UNSET:-a}b}", "ab}"),
    ],
)
def test_braces_inside_defaults_follow_compose(template: str, expected: str) -> None:
    assert sub(template) == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("${FOO?bar-baz}", "first"),
        ("${UNSET_VAR-myerror?msg}", "myerror?msg"),
        ("${BAR:-default_value_for_empty_var}", "default_value_for_empty_var"),
        ("${UNSET_VAR-default_value_for_unset_var}", "default_value_for_unset_var"),
        ("${UNSET-a:-b}", "a:-b"),
        ("${FOO:+x-y}", "x-y"),
    ],
)
def test_first_operator_wins(template: str, expected: str) -> None:
    assert sub(template) == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [("ok ${FOO:?err}", "ok first"), ("ok ${FOO?err}", "ok first"), ("ok ${BAR?err}", "ok ")],
)
def test_required_variables_with_values(template: str, expected: str) -> None:
    assert sub(template) == expected


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            "not ok ${UNSET_VAR:?Mandatory Variable Unset}",
            "required variable UNSET_VAR is missing a value: Mandatory Variable Unset",
        ),
        (
            "not ok ${BAR:?Mandatory Variable Empty}",
            "required variable BAR is missing a value: Mandatory Variable Empty",
        ),
        ("not ok ${UNSET_VAR:?}", "required variable UNSET_VAR is missing a value"),
        (
            "not ok ${UNSET_VAR?Mandatory Variable Unset}",
            "required variable UNSET_VAR is missing a value: Mandatory Variable Unset",
        ),
        ("not ok ${UNSET_VAR?}", "required variable UNSET_VAR is missing a value"),
        (
            "not ok ${UNSET_VAR:?Mandatory Variable ${FOO}}",
            "required variable UNSET_VAR is missing a value: Mandatory Variable first",
        ),
        (
            "not ok ${UNSET_VAR?Mandatory Variable ${FOO}}",
            "required variable UNSET_VAR is missing a value: Mandatory Variable first",
        ),
        ("${UNSET_VAR?bar-baz}", "required variable UNSET_VAR is missing a value: bar-baz"),
        ("${A:-x} ${B:?${C}}", "required variable B is missing a value"),
        # The default is expanded before the name is looked up, so its error wins (as in Compose).
        ("${FOO:-${X:?err}}", "required variable X is missing a value: err"),
    ],
)
def test_required_variables_without_values(template: str, message: str) -> None:
    with pytest.raises(TemplateError) as info:
        sub(template)
    assert info.value.message == message
    assert str(info.value) == message
    assert info.value.template is None


def test_default_is_expanded_even_when_unused() -> None:
    result, warnings = sub_warnings("${FOO:-$NOPE}")
    assert result == "first"
    assert warnings == [unset_warning("NOPE")]


@pytest.mark.parametrize(
    ("template", "reported"),
    [
        ("${", "${"),
        ("${}", "${}"),
        ("${ }", "${ }"),
        ("${ foo}", "${ foo}"),
        ("${foo }", "${foo }"),
        ("${foo!}", "${foo!}"),
        ("a ${}", "a ${}"),
        ("${FOO:x}", "${FOO:x}"),
        ("${FOO/a/b}", "${FOO/a/b}"),
        ("${1}", "${1}"),
        ("${A:-x\n}", "${A:-x\n}"),  # `.` stops at a newline: the reference never closes
        ("${A:-${B!}}", "${B!}"),  # the innermost template is the one reported
    ],
)
def test_invalid_templates(template: str, reported: str) -> None:
    with pytest.raises(TemplateError) as info:
        sub(template)
    assert info.value.template == reported
    assert info.value.message.startswith("invalid interpolation format ")
    assert info.value.message.endswith(": you may need to escape any $ with another $")
    assert "\n" not in info.value.message


def test_invalid_template_message_quotes_the_template() -> None:
    with pytest.raises(TemplateError, match=r'^invalid interpolation format "a\\"\\n \$\{\}"'):
        sub('a"\n ${}')


def test_multiline_values_expand_on_each_line() -> None:
    assert sub("a $FOO\nb ${UNSET:-d}\n") == "a first\nb d\n"


# --- the tree -------------------------------------------------------------------------------------


def interpolate(yaml_text: str, env: dict[str, str] | None = None) -> tuple[MDict, list[str]]:
    tree = load_documents(yaml_text, "compose.yaml")[0]
    warnings: list[str] = []
    return interpolate_tree(tree, (ENV if env is None else env).get, warnings.append), warnings


def test_tree_strings_are_interpolated_everywhere() -> None:
    out, warnings = interpolate(
        "services:\n"
        "  web:\n"
        "    image: ${FOO}:${TAG:-latest}\n"
        "    command: [echo, $FOO, '$$HOME']\n"
        "    environment:\n"
        "      - K=${FOO}\n"
        "x-ext:\n"
        "  a: ${FOO}\n"
    )
    assert out["services"]["web"]["image"] == "first:latest"
    assert list(out["services"]["web"]["command"]) == ["echo", "first", "$HOME"]
    assert list(out["services"]["web"]["environment"]) == ["K=first"]
    assert out["x-ext"]["a"] == "first"  # extension fields are interpolated, as in Compose
    assert warnings == []


def test_tree_keys_are_never_interpolated() -> None:
    out, _ = interpolate("services:\n  ${FOO}:\n    labels:\n      $FOO: $FOO\n")
    assert list(out["services"]) == ["${FOO}"]
    assert dict(out["services"]["${FOO}"]["labels"]) == {"$FOO": "first"}


def test_tree_non_strings_are_untouched() -> None:
    out, _ = interpolate("x-a:\n  n: 12\n  f: 1.5\n  b: true\n  z: null\n  s: '12'\n")
    assert out["x-a"] == {"n": 12, "f": 1.5, "b": True, "z": None, "s": "12"}
    assert type(out["x-a"]["n"]) is int


def test_tree_keeps_every_location_and_builds_new_containers() -> None:
    text = "services:\n  web:\n    image: ${FOO}\n    ports:\n      - ${P:-80}:80\n      - 443\n"
    tree = load_documents(text, "compose.yaml")[0]
    out = interpolate_tree(tree, ENV.get, lambda _: None)
    web, old_web = out["services"]["web"], tree["services"]["web"]
    assert web is not old_web and web["ports"] is not old_web["ports"]
    assert old_web["image"] == "${FOO}"  # the input is not mutated
    assert web.location == old_web.location == Location("compose.yaml", 3, 5)
    assert web.key_locations == old_web.key_locations
    assert web.value_locations == old_web.value_locations
    assert web.value_locations["image"] == Location("compose.yaml", 3, 12)
    assert list(web["ports"]) == ["80:80", 443]
    assert web["ports"].item_locations == old_web["ports"].item_locations
    assert web["ports"].location == old_web["ports"].location
    assert isinstance(web["ports"], MList)


def test_tree_override_and_reset() -> None:
    out, _ = interpolate("services:\n  web:\n    image: !override ${FOO}\n    ports: !reset []\n")
    image = out["services"]["web"]["image"]
    assert isinstance(image, Override)
    assert image.value == "first"
    assert image.location == Location("compose.yaml", 3, 12)
    assert isinstance(out["services"]["web"]["ports"], Reset)


def test_tree_override_of_a_mapping() -> None:
    out, _ = interpolate("services:\n  web:\n    environment: !override\n      A: $FOO\n")
    env = out["services"]["web"]["environment"]
    assert isinstance(env, Override)
    assert isinstance(env.value, MDict)
    assert dict(env.value) == {"A": "first"}


def test_tree_warns_once_per_variable() -> None:
    _, warnings = interpolate("x-a: $NOPE\nx-b: ${NOPE}\nx-c: [$NOPE, $OTHER]\n")
    assert warnings == [unset_warning("NOPE"), unset_warning("OTHER")]


def test_tree_required_error_points_at_the_value() -> None:
    with pytest.raises(SpecError) as info:
        interpolate("services:\n  web:\n    image: ${IMAGE:?set IMAGE first}\n")
    err = info.value
    assert err.location == Location("compose.yaml", 3, 12)
    assert err.path == "services.web.image"
    assert str(err) == (
        "compose.yaml:3:12: services.web.image: required variable IMAGE is missing a value: set IMAGE first"
    )


def test_tree_invalid_template_in_a_list_item() -> None:
    with pytest.raises(SpecError) as info:
        interpolate("services:\n  web:\n    command:\n      - ok\n      - 'a ${}'\n")
    assert info.value.location == Location("compose.yaml", 5, 9)
    assert info.value.path == "services.web.command[1]"
    assert 'invalid interpolation format "a ${}"' in info.value.message


def test_tree_error_inside_override_has_full_path() -> None:
    with pytest.raises(SpecError) as info:
        interpolate("services:\n  web:\n    environment: !override\n      A: ${X?}\n")
    assert info.value.path == "services.web.environment.A"
    assert info.value.location == Location("compose.yaml", 4, 10)


def test_tree_path_is_clean_after_a_sibling() -> None:
    with pytest.raises(SpecError) as info:
        interpolate("a:\n  - {b: $FOO}\n  - [x]\nc: ${X?}\n")
    assert info.value.path == "c"


def test_tree_unchanged_strings_are_the_same_objects() -> None:
    tree = load_documents("x-a: plain\n", "compose.yaml")[0]
    out = interpolate_tree(tree, ENV.get, lambda _: None)
    assert out["x-a"] is tree["x-a"]


def test_tree_large_file_is_interpolated_throughout() -> None:
    """(Its speed is measured in bench/config_load.py, not asserted here.)"""
    services = "".join(
        f"  s{i}:\n    image: busybox\n    command: [sh, -c, 'echo {i}']\n"
        f"    environment: {{A: '1', B: '${{FOO}}'}}\n"
        for i in range(2000)
    )
    tree = load_documents("services:\n" + services, "compose.yaml")[0]
    out = interpolate_tree(tree, ENV.get, lambda _: None)
    assert out["services"]["s1999"]["environment"]["B"] == "first"
    assert out["services"]["s0"]["environment"]["B"] == "first"
    assert out["services"]["s1999"]["command"] == ["sh", "-c", "echo 1999"]
