"""Consul ``?filter=`` expressions: syntax, matching semantics, errors, and robustness."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from waypost.server.filter import MAX_NESTING, FilterError, compile_filter

WEB = {
    "ID": "web-1",
    "Service": "web",
    "Tags": ["primary", "v1", "8080"],
    "Meta": {"env": "prod", "some-key": "yes", "version": "1.2.3", "empty": ""},
    "Port": 8080,
    "Address": "10.0.0.5",
    "EnableTagOverride": False,
    "Weights": {"Passing": 1, "Warning": 1},
    "Ratio": 0.5,
}
DB = {
    "ID": "db-1",
    "Service": "db",
    "Tags": [],
    "Meta": {},
    "Port": 5432,
    "Address": "",
    "EnableTagOverride": True,
    "Weights": {"Passing": 3, "Warning": 1},
    "Ratio": 2.0,
}
HEALTH = {
    "Node": {"Node": "node-a", "Address": "127.0.0.1", "Meta": {"rack": "r1", "zone-id": "z9"}},
    "Service": WEB,
    "Checks": [
        {"CheckID": "serfHealth", "Status": "passing", "ServiceTags": []},
        {"CheckID": "service:web-1", "Status": "critical", "ServiceTags": ["primary"]},
    ],
}
ALL_PASSING = {
    "Node": {"Node": "node-b", "Address": "127.0.0.2", "Meta": {}},
    "Service": DB,
    "Checks": [{"CheckID": "serfHealth", "Status": "passing"}, {"CheckID": "service:db-1", "Status": "passing"}],
}
NO_CHECKS = {"Node": {"Node": "node-c"}, "Service": DB, "Checks": []}


def matching(expr: str, objects: list[Any]) -> list[Any]:
    predicate = compile_filter(expr)
    return [o for o in objects if predicate(o)]


def ids(expr: str) -> list[str]:
    return [o["ID"] for o in matching(expr, [WEB, DB])]


def check(expr: str, obj: Any, expected: bool) -> None:
    assert compile_filter(expr)(obj) is expected, expr


# ---------------------------------------------------------------------------------------- operators


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('Service == "web"', ["web-1"]),
        ("Service == `web`", ["web-1"]),
        ("Service == web", ["web-1"]),  # unquoted word values, as go-bexpr allows
        ('Service != "web"', ["db-1"]),
        ('Service == "Web"', []),  # case-sensitive
        ('Service == "web "', []),
        ("Port == 8080", ["web-1"]),
        ('Port == "8080"', ["web-1"]),
        ("Port != 8080", ["db-1"]),
        ('Port == "0x1f90"', ["web-1"]),  # 8080 in hex: values coerce to the field's type
        ('Port == "abc"', []),  # uncoercible: no match ...
        ('Port != "abc"', ["web-1", "db-1"]),  # ... and its negation matches
        ("Ratio == 0.5", ["web-1"]),
        ("Ratio == 2", ["db-1"]),
        ("Weights.Passing == 3", ["db-1"]),
        ("EnableTagOverride == true", ["db-1"]),
        ("EnableTagOverride == false", ["web-1"]),
        ("EnableTagOverride == True", ["db-1"]),
        ('EnableTagOverride == "1"', ["db-1"]),
        ("EnableTagOverride == 0", ["web-1"]),
        ('EnableTagOverride == "yes"', []),
        ('Address == "10.0.0.5"', ["web-1"]),
        ('Meta.env == "prod"', ["web-1"]),
        ('Meta.env != "prod"', ["db-1"]),
        ('Meta["some-key"] == "yes"', ["web-1"]),
        ('Meta[ "some-key" ] == "yes"', ["web-1"]),
        ("Meta[`some-key`] == yes", ["web-1"]),
        ('Meta.version == "1.2.3"', ["web-1"]),
        ("Meta.version == v1.2", []),
        ('Service == "we\\x62"', ["web-1"]),
    ],
)
def test_equality(expr: str, expected: list[str]) -> None:
    assert ids(expr) == expected


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('"primary" in Tags', ["web-1"]),
        ('"secondary" in Tags', []),
        ('"primary" not in Tags', ["db-1"]),
        ("primary in Tags", ["web-1"]),
        ('Tags contains "v1"', ["web-1"]),
        ("Tags contains v1", ["web-1"]),
        ('Tags not contains "v1"', ["db-1"]),
        ('Tags contains "v"', []),  # list membership is whole elements, not substrings
        ('Tags contains "8080"', ["web-1"]),
        ("Tags contains 8080", ["web-1"]),
        ('"env" in Meta', ["web-1"]),  # map: key membership
        ('"prod" in Meta', []),
        ('"env" not in Meta', ["db-1"]),
        ('Meta contains "some-key"', ["web-1"]),
        ('"eb" in Service', ["web-1"]),  # string: substring
        ('Service contains "d"', ["db-1"]),
        ('Service not contains "w"', ["db-1"]),
        ('"" in Service', ["web-1", "db-1"]),
        ('"0.0" in Address', ["web-1"]),
        ('Port contains "80"', []),  # not a container: no match
        ('Port not contains "80"', ["web-1", "db-1"]),
    ],
)
def test_in_and_contains(expr: str, expected: list[str]) -> None:
    assert ids(expr) == expected


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("Tags is empty", ["db-1"]),
        ("Tags is not empty", ["web-1"]),
        ("Meta is empty", ["db-1"]),
        ("Meta is not empty", ["web-1"]),
        ("Address is empty", ["db-1"]),
        ("Address is not empty", ["web-1"]),
        ("Meta.empty is empty", ["web-1", "db-1"]),  # "" and missing are both empty
        ("Meta.env is empty", ["db-1"]),
        ("Meta.env is not empty", ["web-1"]),
        ("Port is empty", []),
        ("Port is not empty", ["web-1", "db-1"]),
    ],
)
def test_emptiness(expr: str, expected: list[str]) -> None:
    assert ids(expr) == expected


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('Service matches "^w"', ["web-1"]),
        ('Service matches "b"', ["web-1", "db-1"]),  # unanchored search, like Go's regexp.Match
        ('Service matches "^b"', []),
        ('Service not matches "^w"', ["db-1"]),
        ('Service matches "^(web|db)$"', ["web-1", "db-1"]),
        ('Service matches "(?i)^WEB$"', ["web-1"]),
        ('Service matches "^WEB$"', []),
        ('Address matches "^10\\\\.0\\\\."', ["web-1"]),  # "\\\\." in Python source is \\. in the filter
        ("Address matches `^10\\.0\\.`", ["web-1"]),
        ("Address matches `^[0-9.]+$`", ["web-1"]),
        ("Service matches `b\\z`", ["web-1", "db-1"]),  # RE2's end-of-text
        ("Service matches `^[[:alpha:]]+$`", ["web-1", "db-1"]),  # POSIX class
        ("Address matches `^[[:digit:].]+$`", ["web-1"]),
        ('Meta.env matches "pro"', ["web-1"]),
        ('Meta.env not matches "pro"', ["db-1"]),  # missing key: negation matches
        ('Port matches "80"', []),  # not a string: no match
    ],
)
def test_matches(expr: str, expected: list[str]) -> None:
    assert ids(expr) == expected


# --------------------------------------------------------------------------------- boolean structure


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('Service == "web" and Port == 8080', ["web-1"]),
        ('Service == "web" and Port == 5432', []),
        ('Service == "web" or Port == 5432', ["web-1", "db-1"]),
        ('not Service == "web"', ["db-1"]),
        ('not not Service == "web"', ["web-1"]),
        ('not not not Service == "web"', ["db-1"]),
        ('not (Service == "web")', ["db-1"]),
        ('not(Service == "web")', ["db-1"]),
        # not binds tighter than and, and tighter than or:
        ('not Service == "web" and Port == 8080', []),
        ('not (Service == "web" and Port == 8080)', ["db-1"]),
        ('Service == "db" or Service == "web" and Port == 1', ["db-1"]),
        ('(Service == "db" or Service == "web") and Port == 1', []),
        ('Service == "web" and Port == 1 or Service == "db"', ["db-1"]),
        ('Service == "web" and (Port == 1 or Service == "db")', []),
        ('not Service == "db" or Port == 5432', ["web-1", "db-1"]),
        ('((Service == "web"))', ["web-1"]),
        ('( ( Service == "web" ) or ( Service == "db" ) ) and Tags is empty', ["db-1"]),
        ('Service=="web"', ["web-1"]),
        ('\n\tService\t==\n"web"\r\n', ["web-1"]),
        ('Service == "web" and Service == "web" and Service == "web" and Port == 8080', ["web-1"]),
        ('Service == "x" or Service == "y" or Service == "z" or Service == "db"', ["db-1"]),
    ],
)
def test_boolean_logic_and_precedence(expr: str, expected: list[str]) -> None:
    assert ids(expr) == expected


def test_keywords_are_case_sensitive_and_words_may_be_field_names() -> None:
    with pytest.raises(FilterError):
        compile_filter('Service == "web" AND Port == 8080')
    with pytest.raises(FilterError):
        compile_filter('NOT Service == "web"')
    # A field literally named like a keyword still works where a keyword cannot appear.
    check('not == "x"', {"not": "x"}, True)
    check('or == "x" and and == "y"', {"or": "x", "and": "y"}, True)
    check('notes == "n"', {"notes": "n"}, True)
    check('order contains "o"', {"order": "o"}, True)


# --------------------------------------------------------------------------------------- selectors


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('Node.Node == "node-a"', True),
        ('Node.Meta.rack == "r1"', True),
        ('Node.Meta["zone-id"] == "z9"', True),
        ('Node.Meta.zone == "z9"', False),
        ('Service.Service == "web"', True),
        ('Service.Meta.env == "prod"', True),
        ('"primary" in Service.Tags', True),
        ("Service.Port == 8080", True),
        ('"/Node/Meta/rack" == "r1"', True),  # JSON pointer selector
        ('"r1" in "/Node/Meta/rack"', True),
        # A list inside a selector is searched: true if any element matches.
        ('Checks.Status == "critical"', True),
        ('Checks.Status != "passing"', True),
        ('Checks.CheckID == "serfHealth"', True),
        ('Checks.ServiceTags contains "primary"', True),
        ("Checks.ServiceTags is empty", True),
        ("Checks.Output is empty", True),  # missing in every check
        ('Checks.Status == "warning"', False),
        # Numeric index selects one element.
        ('Checks.0.Status == "passing"', True),
        ('Checks.1.Status == "passing"', False),
        ('Checks.9.Status == "passing"', False),
        ('Checks.9.Status != "passing"', True),
    ],
)
def test_nested_selectors_on_health_entries(expr: str, expected: bool) -> None:
    check(expr, HEALTH, expected)


def test_list_search_selects_the_right_health_entries() -> None:
    entries = [HEALTH, ALL_PASSING, NO_CHECKS]

    def names(expr: str) -> list[str]:
        return [e["Node"]["Node"] for e in matching(expr, entries)]

    assert names('Checks.Status == "critical"') == ["node-a"]
    assert names('Checks.Status != "passing"') == ["node-a"]  # any check not passing; none → false
    assert names('not Checks.Status != "passing"') == ["node-b", "node-c"]
    assert names('Checks.Status == "passing"') == ["node-a", "node-b"]
    assert names("Checks is empty") == ["node-c"]
    assert names('Node.Meta.rack == "r1" or Service.Service == "db"') == ["node-a", "node-b", "node-c"]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('Missing == "x"', False),
        ('Missing != "x"', True),
        ('"x" in Missing', False),
        ('"x" not in Missing', True),
        ('Missing contains "x"', False),
        ('Missing not contains "x"', True),
        ("Missing is empty", True),
        ("Missing is not empty", False),
        ('Missing matches "x"', False),
        ('Missing not matches "x"', True),
        ('Missing.Deeper.Still == "x"', False),
        ('Service.Port.Deeper == "x"', False),  # descending into a scalar: missing
        ('Service.Port.Deeper != "x"', True),
        ('Nothing == "x"', False),  # null value: missing
        ("Nothing is empty", True),
    ],
)
def test_missing_fields_behave_like_missing_map_keys(expr: str, expected: bool) -> None:
    check(expr, {**HEALTH, "Nothing": None}, expected)


@pytest.mark.parametrize("obj", [None, 7, "web", [], [WEB], True, 1.5, {}])
def test_non_dict_objects_never_raise(obj: Any) -> None:
    for expr in ('Service == "web"', '"x" not in Tags', "Meta.env is empty", 'Service matches "w"'):
        assert isinstance(compile_filter(expr)(obj), bool)


def test_regex_classes_are_ascii_like_re2() -> None:
    check("N matches `^\\d+$`", {"N": "123"}, True)
    check("N matches `^\\d+$`", {"N": "\u0661\u0662"}, False)  # Arabic-Indic digits
    check("N matches `^[^]x]+$`", {"N": "ab"}, True)  # "]" first in a class is literal, as in RE2
    check("N matches `^[^]x]+$`", {"N": "a]"}, False)


def test_compiled_filter_is_reusable_and_pure() -> None:
    predicate = compile_filter('Service == "web" and "primary" in Tags')
    before = json.dumps(WEB, sort_keys=True)
    assert [predicate(o) for o in [WEB, DB, WEB, DB]] == [True, False, True, False]
    assert json.dumps(WEB, sort_keys=True) == before


# ---------------------------------------------------------------------------------------- literals


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ('"plain"', "plain"),
        ('"tab\\there"', "tab\there"),
        ('"quote\\"inside"', 'quote"inside'),
        ('"back\\\\slash"', "back\\slash"),
        ('"\\u00e9t\\u00e9"', "été"),
        ('"\\U0001F600"', "\U0001f600"),
        ('"\\x41\\101"', "AA"),
        ('"\\a\\b\\f\\n\\r\\v"', "\a\b\f\n\r\v"),
        ("`raw \\n stays`", "raw \\n stays"),
        ('`has "double" quotes`', 'has "double" quotes'),
        ("`cr\r\nremoved`", "cr\nremoved"),
        ('"héllo wörld"', "héllo wörld"),
        ('""', ""),
        ("-12", "-12"),
        ("0.25", "0.25"),
    ],
)
def test_string_and_number_literals(literal: str, value: str) -> None:
    check(f"Field == {literal}", {"Field": value}, True)
    check(f"Field != {literal}", {"Field": value}, False)


@pytest.mark.parametrize(
    ("expr", "obj", "expected"),
    [
        ("N == -1", {"N": -1}, True),
        ("N == 0", {"N": 0}, True),
        ("N == 0", {"N": False}, True),  # a bool field parses "0" as false (Go ParseBool)
        ("N == 2", {"N": True}, False),
        ("N == 0", {"N": 0.0}, True),
        ("N == 1.50", {"N": 1.5}, True),
        ("N == 1.5", {"N": 1}, False),
        ("N == 2.0", {"N": 2}, True),
        ('N == "2"', {"N": 2.0}, True),
        ("(N == 3)", {"N": 3}, True),
    ],
)
def test_numeric_comparisons(expr: str, obj: dict[str, Any], expected: bool) -> None:
    check(expr, obj, expected)


# ------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("expr", "offset", "words"),
    [
        # unterminated strings / bad escapes
        ('Service == "web', 11, ["unterminated string"]),
        ("Service == `web", 11, ["unterminated string"]),
        ('"web in Tags', 0, ["unterminated string"]),
        ('Service == "a\\"', 11, ["unterminated string"]),
        ('Service == "\\q"', 12, ["invalid escape", "\\q"]),
        ('Service == "\\u12"', 12, ["4 hex digits"]),
        ('Service == "\\ud800"', 12, ["not a valid character"]),
        ('Service == "line\nbreak"', 16, ["newline"]),
        # missing operands
        ("Service ==", 10, ["missing value", "=="]),
        ("Service == )", 11, ["missing value"]),
        ('Service == "web" and', 20, ["missing expression", '"and"']),
        ('Service == "web" or ', 20, ["missing expression", '"or"']),
        ("not", 3, ["missing expression", '"not"']),
        ("()", 1, ["missing expression"]),
        ('and Service == "web"', 0, ['missing expression before "and"']),
        ('Service == "a" or or Port == 1', 18, ['missing expression before "or"']),
        ('"primary" in', 12, ["invalid selector", "in"]),
        ('"primary" in 7', 13, ["invalid selector"]),
        # missing / unknown operators
        ("Service", 7, ["missing operator", "Service"]),
        ('Service "web"', 8, ["unknown operator", "Service"]),
        ('Service = "web"', 8, ["unknown operator", "=="]),
        ('Service === "web"', 10, ["unknown operator", "=="]),
        ("Port > 80", 5, ["unknown operator", ">"]),
        ("Port <= 80", 5, ["unknown operator", "<"]),
        ('Service ~= "w"', 8, ["unexpected character"]),
        ('Service equals "web"', 8, ["unknown operator", "equals"]),
        ('! Service == "web"', 0, ["unknown operator", "not"]),
        ('Service == "a" && Port == 1', 15, ["unknown operator", "and"]),
        ('Service == "a" || Port == 1', 15, ["unknown operator", "or"]),
        ("Tags is full", 8, ['"empty"', "is"]),
        ("Tags is not", 11, ['"empty"']),
        ('Tags not "x"', 5, ["unknown operator"]),
        ('"x" == Service', 0, ['"in"', "selector must come first"]),
        ("8080 == Port", 0, ["expected a selector", "Port == 8080"]),
        # trailing tokens
        ('Service == "web" "db"', 17, ["after a complete expression", '"and", "or"']),
        ('Service == "web" Port == 1', 17, ["after a complete expression"]),
        ('Service == "web" AND Port == 1', 17, ["after a complete expression", "AND"]),
        ('Service == "web")', 16, ['unmatched ")"']),
        # parentheses
        ('(Service == "web"', 17, ["unmatched parentheses", "1:1"]),
        ('((Service == "web")', 19, ["unmatched parentheses", "1:1"]),
        ('not (Service == "web" or (Port == 1)', 36, ["unmatched parentheses", "1:5"]),
        # selectors and values
        ('Meta. == "x"', 4, ["invalid selector", "after \".\""]),
        ('Meta[env] == "x"', 5, ["invalid index", 'Meta["some-key"]']),
        ('Meta["env" == "x"', 11, ["unclosed index", '"]"']),
        ('_Meta == "x"', 0, ["unexpected character"]),
        ("Address == 10.0.0.1", 11, ["invalid number literal", '"10.0.0.1"']),
        ("Port == 80a", 8, ["invalid number literal"]),
        ("Port == 007", 8, ["invalid number literal"]),
        ("Service == my-svc", 13, ['"my-svc"', "quote"]),
        ("Port == - 1", 8, ["negative number"]),
        # regular expressions
        ('Service matches "("', 16, ["invalid regular expression"]),
        ('Service matches "[a-"', 16, ["invalid regular expression"]),
        ('Service matches "a{2,1}"', 16, ["invalid regular expression"]),
        # empty
        ("", 0, ["empty"]),
        ("   \n ", 5, ["empty"]),
    ],
)
def test_bad_expressions_name_the_problem_and_where(expr: str, offset: int, words: list[str]) -> None:
    with pytest.raises(FilterError) as info:
        compile_filter(expr)
    err = info.value
    message = str(err)
    assert message.startswith("Failed to create boolean expression evaluator: "), message
    assert err.offset == offset, message
    assert f"({offset})" in message
    for word in words:
        assert word.lower() in message.lower(), (word, message)
    assert isinstance(err, ValueError)


def test_error_position_counts_lines_and_columns() -> None:
    with pytest.raises(FilterError) as info:
        compile_filter('Service == "web"\nand Port ==\n  ')
    err = info.value
    assert (err.line, err.column, err.offset) == (3, 3, 31)
    assert ": 3:3 (31): " in str(err)


def test_nesting_is_bounded_with_a_clear_error() -> None:
    ok = "(" * MAX_NESTING + 'Service == "web"' + ")" * MAX_NESTING
    assert compile_filter(ok)(WEB) is True
    deep = "(" * (MAX_NESTING + 1) + 'Service == "web"' + ")" * (MAX_NESTING + 1)
    with pytest.raises(FilterError, match="nested too deeply"):
        compile_filter(deep)
    with pytest.raises(FilterError, match="nested too deeply"):
        compile_filter("(" * 100_000)


def test_long_flat_chains_and_negations_do_not_hit_recursion_limits() -> None:
    expr = " or ".join(f'Service == "s{i}"' for i in range(5000)) + ' or Service == "web"'
    assert ids(expr) == ["web-1"]
    expr = " and ".join(['Port == 8080'] * 5000)
    assert ids(expr) == ["web-1"]
    assert ids("not " * 10_001 + 'Service == "web"') == ["db-1"]


def test_deeply_nested_data_does_not_raise() -> None:
    nested: Any = "web"
    for _ in range(10_000):
        nested = [nested]
    check('Items.Name == "x"', {"Items": nested}, False)
    check("Items is not empty", {"Items": nested}, True)


def test_non_string_expression_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        compile_filter(None)  # type: ignore[arg-type]


# -------------------------------------------------------------------------------------- properties

_FRAGMENTS = [
    "Service", "Tags", "Meta", "Meta.env", 'Meta["a-b"]', "Checks.Status", "Port", "Node.Meta.rack",
    "==", "!=", "=", "!", "<", "is", "not", "empty", "in", "contains", "matches", "and", "or",
    "(", ")", '"web"', '"', "`", "`x`", '"\\u00e9"', '"\\', "8080", "-1", "0.5", "1.2.3", "web",
    "[", "]", ".", '"/Node/Meta"', '"(["', "\n", " ", "", "\\",
]

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(
        st.sampled_from(["Service", "Tags", "Meta", "env", "a-b", "Checks", "Status", "Port", "Node", "rack", "0"])
        | st.text(max_size=4),
        children,
        max_size=4,
    ),
    max_leaves=20,
)

_selectors = st.sampled_from(
    ["Service", "Tags", "Meta", "Meta.env", 'Meta["a-b"]', "Checks.Status", "Checks.0.Status", "Port",
     "Node.Meta.rack", '"/Node/Meta/rack"', "and", "Missing.Field"]
)
_values = st.sampled_from(['"web"', "`v1`", "web", "8080", "-1", "0.5", "true", '""', '"prod"', '"0"'])


@st.composite
def _matches(draw: st.DrawFn) -> str:
    sel, val = draw(_selectors), draw(_values)
    form = draw(st.integers(0, 5))
    if form == 0:
        return f"{sel} {draw(st.sampled_from(['==', '!=']))} {val}"
    if form == 1:
        return f"{sel} is {draw(st.sampled_from(['', 'not ']))}empty"
    if form == 2:
        return f"{val} {draw(st.sampled_from(['in', 'not in']))} {sel}"
    if form == 3:
        return f"{sel} {draw(st.sampled_from(['contains', 'not contains']))} {val}"
    return f'{sel} {draw(st.sampled_from(["matches", "not matches"]))} "{draw(st.sampled_from(["^w", "b$", "[0-9]+", ""]))}"'


_expressions = st.recursive(
    _matches(),
    lambda inner: st.builds(lambda a, b: f"{a} and {b}", inner, inner)
    | st.builds(lambda a, b: f"{a} or {b}", inner, inner)
    | st.builds(lambda a: f"not {a}", inner)
    | st.builds(lambda a: f"({a})", inner),
    max_leaves=8,
)

_PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_PROPERTY
@given(st.text(max_size=60) | st.lists(st.sampled_from(_FRAGMENTS), max_size=12).map(" ".join)
       | st.lists(st.sampled_from(_FRAGMENTS), max_size=12).map("".join))
def test_garbage_either_compiles_or_raises_filter_error(expr: str) -> None:
    try:
        predicate = compile_filter(expr)
    except FilterError as err:
        assert str(err).startswith("Failed to create boolean expression evaluator: ")
        assert 0 <= err.offset <= len(expr)
        return
    for obj in (WEB, HEALTH, {}, None, []):
        assert isinstance(predicate(obj), bool)


@_PROPERTY
@given(_expressions, _json)
def test_compiled_filters_never_raise_on_json_like_objects(expr: str, obj: Any) -> None:
    assert isinstance(compile_filter(expr)(obj), bool)


@_PROPERTY
@given(_expressions, _expressions, st.sampled_from([WEB, DB, HEALTH, ALL_PASSING, NO_CHECKS, {}]) | _json)
def test_boolean_operators_compose_like_logic(a: str, b: str, obj: Any) -> None:
    fa, fb = compile_filter(a)(obj), compile_filter(b)(obj)
    assert compile_filter(f"not ({a})")(obj) is (not fa)
    assert compile_filter(f"({a}) and ({b})")(obj) is (fa and fb)
    assert compile_filter(f"({a}) or ({b})")(obj) is (fa or fb)
    assert compile_filter(f"not ({a}) or not ({b})")(obj) is compile_filter(f"not (({a}) and ({b}))")(obj)
