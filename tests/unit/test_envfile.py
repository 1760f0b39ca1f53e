"""The dotenv grammar (Compose's, checked against docker-compose 2.26) and the raw env-file format."""

from __future__ import annotations

import pytest

from composer.errors import Location, SpecError
from composer.spec.envfile import parse_dotenv, parse_raw_envfile
from composer.spec.interpolate import unset_warning

OS = {"FOO": "first", "BAR": ""}


def parse(text: str, env: dict[str, str] | None = None) -> dict[str, str]:
    return parse_dotenv(text, ".env", (OS if env is None else env).get)


def fails(text: str, env: dict[str, str] | None = None) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse(text, env)
    return info.value


# --- lines, comments, keys ------------------------------------------------------------------------


def test_plain_fixture() -> None:
    text = (
        "OPTION_A=1\nOPTION_B=2\nOPTION_C= 3\nOPTION_D =4\nOPTION_E = 5\nOPTION_F = \nOPTION_G=\n"
        "OPTION_H = my string # Inline comment\n"
    )
    assert parse(text) == {
        "OPTION_A": "1",
        "OPTION_B": "2",
        "OPTION_C": "3",
        "OPTION_D": "4",
        "OPTION_E": "5",
        "OPTION_F": "",
        "OPTION_G": "",
        "OPTION_H": "my string",
    }


def test_insertion_order_is_file_order() -> None:
    assert list(parse("Z=1\nA=2\nM=3\n")) == ["Z", "A", "M"]


def test_later_definition_wins() -> None:
    assert parse("A=1\nA=2\n") == {"A": "2"}


def test_empty_text() -> None:
    assert parse("") == {}
    assert parse("\n\n  \n# only a comment") == {}


def test_bom_is_skipped() -> None:
    assert parse("\ufeffA=1\n") == {"A": "1"}


def test_comments_and_blank_lines() -> None:
    assert parse("# c\n\n   # indented\n\t\nA=1\n#B=2\n") == {"A": "1"}


def test_export_prefix() -> None:
    assert parse("export A=1\nexport   B = 2\nexportC=3\n") == {"A": "1", "B": "2", "exportC": "3"}


def test_export_alone_on_a_line_sets_nothing() -> None:
    assert parse("export\nB=1\nexport") == {"B": "1"}


def test_colon_separator() -> None:
    assert parse("K:v\nL : w\nM=a=b\nN=a:b\n") == {"K": "v", "L": "w", "M": "a=b", "N": "a:b"}


def test_key_charset() -> None:
    assert parse("A.b-c[0]=1\nä=2\n_x9=3\n") == {"A.b-c[0]": "1", "ä": "2", "_x9": "3"}


def test_crlf_line_endings() -> None:
    assert parse('A=1\r\nFOO\r\nC="x\r\ny"\r\n') == {"A": "1", "FOO": "first", "C": "x\r\ny"}


def test_key_with_a_space_is_an_error() -> None:
    err = fails("A=1\nA B=1\n")
    assert err.message == "key cannot contain a space"
    assert err.location == Location(".env", 2, 1)


def test_key_with_a_tab_is_an_error() -> None:
    assert fails("A\tB=1\n").message == "key cannot contain a space"


def test_unexpected_character_in_key() -> None:
    err = fails("A=1\n\n  A!=1\n")
    assert err.message == 'unexpected character "!" in variable name "A!=1"'
    assert err.location == Location(".env", 3, 4)
    assert str(err) == '.env:3:4: unexpected character "!" in variable name "A!=1"'


def test_missing_key_is_an_error() -> None:
    err = fails("=1\n")
    assert err.location == Location(".env", 1, 1)
    assert "missing variable name" in err.message


# --- inherited keys -------------------------------------------------------------------------------


def test_bare_key_is_inherited_only_when_found() -> None:
    assert parse("FOO\nNOPE\nBAR\n") == {"FOO": "first", "BAR": ""}


def test_bare_key_on_last_line_without_newline() -> None:
    assert parse("A=1\nFOO") == {"A": "1", "FOO": "first"}


def test_bare_key_does_not_look_at_the_file() -> None:
    assert parse("A=1\nA\n", {}) == {"A": "1"}


def test_inherited_not_found_multi_var() -> None:
    assert parse("VARIABLE_1\nVARIABLE_2\nVARIABLE_3=abc\n", {"VARIABLE_2": "two"}) == {
        "VARIABLE_2": "two",
        "VARIABLE_3": "abc",
    }


# --- unquoted values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("A=a b  # comment", "a b"),
        ("A=a#b", "a#b"),
        ("A=a #b", "a"),
        ("A=x\t#y", "x\t#y"),  # only space-hash starts a comment
        ("A= spaced  ", "spaced"),
        ("A= #comment", "#comment"),  # blanks after `=` go first, so no ` #` is left
        ('A=x"y"', 'x"y"'),
        ("A=\\n", "\\n"),  # no escapes outside double quotes
        ("A=", ""),
        ("A=   ", ""),
    ],
)
def test_unquoted_values(line: str, value: str) -> None:
    assert parse(line + "\n") == {"A": value}
    assert parse(line) == {"A": value}  # same without a final newline


def test_unquoted_values_are_interpolated() -> None:
    assert parse("A=$FOO ${BAR:-def} ${UNSET-u} $$x\nB=${A}\n") == {
        "A": "first def u $x",
        "B": "first def u $x",
    }


def test_unquoted_backslash_dollar_is_kept_and_expanded() -> None:
    assert parse('A=\\$FOO \\"q\\"\n') == {"A": '\\first \\"q\\"'}


# --- single quotes --------------------------------------------------------------------------------


def test_quoted_fixture() -> None:
    text = (
        "OPTION_A='1'\nOPTION_B='2'\nOPTION_C=''\nOPTION_D='\\n'\nOPTION_E=\"1\"\nOPTION_F=\"2\"\n"
        'OPTION_G=""\nOPTION_H="\\n"\nOPTION_I = "echo \'asd\'"\n'
        "OPTION_J = 'first line\nsecond line\nthird line\nand so on'\nOPTION_Z = \"last value\"\n"
    )
    assert parse(text) == {
        "OPTION_A": "1",
        "OPTION_B": "2",
        "OPTION_C": "",
        "OPTION_D": "\\n",
        "OPTION_E": "1",
        "OPTION_F": "2",
        "OPTION_G": "",
        "OPTION_H": "\n",
        "OPTION_I": "echo 'asd'",
        "OPTION_J": "first line\nsecond line\nthird line\nand so on",
        "OPTION_Z": "last value",
    }


def test_single_quotes_are_literal() -> None:
    assert parse("A='lit $FOO ${X:?no} \\n \\' x'\n") == {"A": "lit $FOO ${X:?no} \\n ' x"}
    assert parse("A='[\\\\]'\nB='a\\\"b'\n") == {"A": "[\\\\]", "B": 'a\\"b'}


def test_single_quoted_value_does_not_warn() -> None:
    warnings: list[str] = []
    assert parse_dotenv("A='$NOPE'\n", ".env", OS.get, warnings.append) == {"A": "$NOPE"}
    assert warnings == []


# --- double quotes --------------------------------------------------------------------------------


def test_double_quotes_escapes_then_interpolation() -> None:
    text = 'A="esc \\n \\t \\\\ \\" \\$FOO $FOO \\a \\x41 \\q"\n'
    assert parse(text) == {"A": 'esc \n \t \\ " $FOO first \a \\x41 \\q'}


@pytest.mark.parametrize(
    ("escape", "value"),
    [
        ("\\0", "\\"),
        ("\\012", "\\12"),
        ("\\0101", "A"),
        ("\\08", "\\8"),
        ("\\0777", "\\777"),
        ("\\01234", "S4"),
        ("\\c", "\\c"),
        ("\\b\\f\\v\\r", "\b\f\v\r"),
        ("\\'", "\\'"),
        ("\\\\n", "\\n"),
        ("\\\\$FOO", "\\first"),
        ("\\${FOO}", "${FOO}"),
        ("$$FOO", "$FOO"),
    ],
)
def test_double_quote_escapes(escape: str, value: str) -> None:
    assert parse(f'A="[{escape}]"\n') == {"A": f"[{value}]"}


def test_double_quotes_span_lines_and_interpolate() -> None:
    assert parse('A="multi\nline $FOO"\nB=2\n') == {"A": "multi\nline first", "B": "2"}


def test_text_after_a_closing_quote_is_the_next_statement() -> None:
    assert parse('A="x" # c\nB="y"z\nC=3\n') == {"A": "x", "B": "y", "C": "3"}
    assert parse('A="x" D=4\nE=5\n') == {"A": "x", "D": "4", "E": "5"}
    assert parse("A='x'junk=1\n") == {"A": "x", "junk": "1"}


def test_quote_after_blanks_opens_a_quoted_value() -> None:
    assert parse('B= "q"\nC=\'\'\nD=""\n') == {"B": "q", "C": "", "D": ""}


@pytest.mark.parametrize(
    ("text", "where", "shown"),
    [
        ('A="unterminated\nB=2\n', (1, 3), '"unterminated'),
        ("A=1\nB= 'unterm\n", (2, 4), "'unterm"),
        ('A="x\\"\n', (1, 3), '"x\\"'),
    ],
)
def test_unterminated_quotes(text: str, where: tuple[int, int], shown: str) -> None:
    err = fails(text)
    assert err.message == f"unterminated quoted value {shown}"
    assert err.location == Location(".env", *where)


# --- interpolation scope --------------------------------------------------------------------------


def test_lookup_comes_before_earlier_keys() -> None:
    env = {"A": "os", "OSV": "osv"}
    assert parse("A=file\nB=${A}\nC=$OSV\n", env) == {"A": "file", "B": "os", "C": "osv"}


def test_earlier_keys_are_visible_later() -> None:
    assert parse("A=1\nB=$A\nA=2\nC=$A\n", {}) == {"A": "2", "B": "1", "C": "2"}


def test_later_keys_are_not_visible_earlier() -> None:
    assert parse("B=${A:-none}\nA=1\n", {}) == {"B": "none", "A": "1"}


def test_substitutions_default_fixture() -> None:
    text = (
        "OPTION_A=${OPTION_A:-1}\nOPTION_B=${OPTION_A}\nOPTION_C=$OPTION_B\n"
        "OPTION_D=${OPTION_A}_${OPTION_B}\nOPTION_E=${OPTION_NOT_DEFINED}\n"
    )
    assert parse(text, {}) == {
        "OPTION_A": "1",
        "OPTION_B": "1",
        "OPTION_C": "1",
        "OPTION_D": "1_1",
        "OPTION_E": "",
    }


def test_unset_variables_warn() -> None:
    warnings: list[str] = []
    out = parse_dotenv('A= #c\nB=$NOPE x\nC="$NOPE2"\n', ".env", OS.get, warnings.append)
    assert out == {"A": "#c", "B": " x", "C": ""}
    assert warnings == [unset_warning("NOPE"), unset_warning("NOPE2")]


def test_required_variable_error_has_location() -> None:
    err = fails("X=1\nA=${UNSET:?oops}\n")
    assert err.message == "required variable UNSET is missing a value: oops"
    assert err.location == Location(".env", 2, 3)
    assert str(err) == ".env:2:3: required variable UNSET is missing a value: oops"


def test_invalid_template_error_in_double_quotes() -> None:
    err = fails('\n\nA= "${"\n')
    assert err.location == Location(".env", 3, 4)
    assert err.message.startswith('invalid interpolation format "${"')


# --- raw format -----------------------------------------------------------------------------------


def raw(text: str, env: dict[str, str] | None = None) -> dict[str, str]:
    return parse_raw_envfile(text, "raw.env", (OS if env is None else env).get)


def test_raw_values_are_literal() -> None:
    text = "\ufeffA=\"q\" \n  B=$FOO\n# c\n C\nFOO\nD=a=b # x\nE='s'\n\nF=\n"
    assert raw(text) == {"A": '"q" ', "B": "$FOO", "FOO": "first", "D": "a=b # x", "E": "'s'", "F": ""}


def test_raw_crlf() -> None:
    assert raw("A=1\r\nFOO\r\n") == {"A": "1", "FOO": "first"}


def test_raw_errors() -> None:
    with pytest.raises(SpecError) as info:
        raw("A=1\n  B C=1\n")
    assert info.value.message == "variable 'B C' contains whitespaces"
    assert info.value.location == Location("raw.env", 2, 3)
    with pytest.raises(SpecError) as info:
        raw("=x\n")
    assert info.value.message == "no variable name on line '=x'"
