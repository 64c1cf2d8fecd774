"""YAML documents with key lines, and operator-readable validation messages."""

from __future__ import annotations

import sys
import time
from datetime import date
from enum import StrEnum
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from ccx_agent.config.yamldoc import (
    MAX_ALIAS_VALUES,
    Document,
    DocumentError,
    Problem,
    dotted,
    parse_yaml,
    read_yaml,
    show,
    validate,
)


def problems(text: str, **kwargs: bool) -> list[str]:
    with pytest.raises(DocumentError) as caught:
        parse_yaml(text, "f.yaml", **kwargs)
    return [str(p) for p in caught.value.problems]


# --- keys and lines -------------------------------------------------------------------------


def test_dotted() -> None:
    assert dotted(()) == "(root)"
    assert dotted(("report", "interval")) == "report.interval"
    assert dotted(("license", "premium_features", 2)) == "license.premium_features[2]"
    assert (
        dotted(("events", 0, "usage", "flex-standard-seat")) == "events[0].usage.flex-standard-seat"
    )
    assert dotted(("a", True, None)) == "a.true.null"
    assert dotted(("a", "two words", "x.y")) == "a.'two words'.'x.y'"


def test_lines_of_keys_and_items() -> None:
    doc = parse_yaml("# c\na:\n  b: 1\n  c:\n    - x\n    - y: 2\n", "f.yaml")
    assert doc.data == {"a": {"b": 1, "c": ["x", {"y": 2}]}}
    assert doc.lines[("a",)] == 2
    assert doc.lines[("a", "b")] == 3
    assert doc.lines[("a", "c", 0)] == 5
    assert doc.lines[("a", "c", 1, "y")] == 6
    # The deepest part that exists: a missing key is reported at its parent.
    assert doc.line_of(("a", "c", 1, "nope", 3)) == 6
    assert doc.line_of(("zzz",)) == 2  # the root mapping starts at its first key
    assert doc.line_of(([],)) == 2  # an unhashable part is not a crash


def test_non_string_keys_are_their_yaml_values() -> None:
    doc = parse_yaml("1: a\nfalse: b\n~: c\n2024-01-01: d\n", "f.yaml")
    assert doc.lines[(1,)] == 1
    assert doc.lines[(False,)] == 2
    assert doc.lines[(None,)] == 3
    assert doc.lines[(date(2024, 1, 1),)] == 4


def test_empty_document_is_an_empty_mapping() -> None:
    for text in ("", "\n", "# only a comment\n"):
        doc = parse_yaml(text, "f.yaml")
        assert doc.data == {}
        assert doc.line_of(("x",)) == 1


def test_anchors_and_aliases() -> None:
    doc = parse_yaml("a: &x {b: 1}\nc: *x\n", "f.yaml")
    assert doc.data == {"a": {"b": 1}, "c": {"b": 1}}
    assert doc.line_of(("c", "b")) == 2


def test_nested_aliases_are_refused_quickly() -> None:
    """A billion-laughs document (3^29 values once expanded) is one problem at the key
    whose alias crosses the bound, found without expanding it: validation would walk
    every value, and check-config ran past 10 s and ate memory."""
    lines = ["a0: &a0 [x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 30)]
    started = time.monotonic()
    found = problems("\n".join(lines) + "\n")
    assert time.monotonic() - started < 2
    # 2 * 3^7 = 4374 values under a7; its third alias takes the expansion past 10,000.
    assert found == [
        f"f.yaml:8: a7[2]: aliases expand the document by more than {MAX_ALIAS_VALUES} "
        "values (an alias bomb?): refused"
    ]


def test_aliases_within_the_bound_are_expanded() -> None:
    """A few anchors, as an operator would use them, are fine and expand as usual."""
    text = "base: &b {interval: 15m, jitter: 60s}\nreport: *b\nlists: [*b, *b, *b]\n"
    doc = parse_yaml(text, "f.yaml")
    assert doc.data["report"] == doc.data["lists"][2] == {"interval": "15m", "jitter": "60s"}
    items = ", ".join(["*x"] * (MAX_ALIAS_VALUES - 1))
    assert len(parse_yaml(f"a: &x 1\nb: [{items}]\n", "f.yaml").data["b"]) == MAX_ALIAS_VALUES - 1


def test_an_alias_inside_its_own_value_is_refused() -> None:
    assert problems("a:\n  b: &x [1, *x]\n") == [
        "f.yaml:2: a.b[1]: an alias refers to the value that holds it (a cycle): refused"
    ]


def test_a_number_too_long_to_convert_names_its_key() -> None:
    """5,000 digits: Python's int conversion limit made PyYAML raise a bare ValueError."""
    text = "a:\n  b: 1\n  n: " + "9" * 5000 + "\n"
    limit = sys.get_int_max_str_digits()
    assert problems(text) == [
        f"f.yaml:3: a.n: a number of 5000 digits is too long (at most {limit})"
    ]
    # In a list, and negative, and with separators: the same one line.
    assert problems("l:\n  - 1\n  - -" + "1_000" * 1200 + "\n") == [
        f"f.yaml:3: l[1]: a number of 4800 digits is too long (at most {limit})"
    ]


def test_a_date_that_does_not_exist_names_its_key() -> None:
    assert problems("when:\n  day: 2024-02-30\n") == [
        "f.yaml:2: when.day: not a real date or time (day is out of range for month)"
    ]


def test_an_unknown_bool_names_its_key() -> None:
    """``!!bool maybe``: PyYAML raised a bare KeyError (a traceback in check-config)."""
    why = "not a valid !!bool value ('maybe' is not one of true/false, yes/no, on/off)"
    assert problems("a:\n  b: !!bool maybe\n") == [f"f.yaml:2: a.b: {why}"]
    assert problems("l:\n  - 1\n  - !!bool Maybe\n") == [
        f"f.yaml:3: l[1]: {why.replace('maybe', 'Maybe')}"
    ]
    assert parse_yaml("a: !!bool yes\nb: !!bool OFF\n", "f.yaml").data == {"a": True, "b": False}


def test_a_huge_number_made_by_yaml_arithmetic_is_refused() -> None:
    """Found by fuzzing: a YAML 1.1 base-60 number (1:2:3) of 3,000 groups converts to an
    int of ~5,300 digits whose repr() raises, in pydantic (at source.kind) and in show()."""
    limit = sys.get_int_max_str_digits()
    assert problems("n: " + ":".join(["59"] * 3000) + "\n") == [
        f"f.yaml:1: n: a number too large (more than {limit} digits)"
    ]
    assert problems("n: 0x" + "f" * 4000 + "\n") == [
        f"f.yaml:1: n: a number too large (more than {limit} digits)"
    ]
    assert parse_yaml("n: 1:2:3\n", "f.yaml").data == {"n": 3723}
    assert show(60**3000) == f"a number of more than {limit} digits"


# --- what is wrong with the text ----------------------------------------------------------


def test_duplicate_keys_all_reported() -> None:
    text = "a: 1\nb:\n  c: 1\n  c: 2\na: 3\n"
    assert problems(text) == [
        "f.yaml:4: b.c: duplicate key (the last one would win)",
        "f.yaml:5: a: duplicate key (the last one would win)",
    ]


def test_duplicate_keys_can_be_kept_for_later() -> None:
    doc = parse_yaml("a: 1\na: 2\n", "f.yaml", keep_going=True)
    assert doc.data == {"a": 2}
    assert [str(p) for p in doc.problems] == ["f.yaml:2: a: duplicate key (the last one would win)"]


def test_duplicate_non_string_keys() -> None:
    assert problems("1: a\n1: b\n") == ["f.yaml:2: 1: duplicate key (the last one would win)"]
    # YAML reads both as the same Python key (1 == True): one would overwrite the other.
    assert problems("1: a\ntrue: b\n") == ["f.yaml:2: true: duplicate key (the last one would win)"]


def test_a_list_as_a_key() -> None:
    assert problems("a:\n  ? [x, y]\n  : 1\n") == [
        "f.yaml:2: a: a key must be a name, not a list or a mapping"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a:\n\tb: 1\n", "f.yaml:2: (yaml): a tab cannot indent YAML: indent with spaces"),
        (
            "a:\n  b: 1\n   c: 2\n",
            "f.yaml:3: (yaml): unexpected ':' (is this line indented wrongly, "
            "or does a value need quotes?)",
        ),
        (
            "a: b: c\n",
            "f.yaml:1: (yaml): unexpected ':' (is this line indented wrongly, "
            "or does a value need quotes?)",
        ),
        (
            "a:\n  - b\n - c\n",
            "f.yaml:3: (yaml): this line is not indented like the lines around it "
            "(in the mapping that starts on line 1)",
        ),
        (
            "a: [x, y\n",
            "f.yaml:1: (yaml): the [...] list opened on this line is never closed "
            "(check the lines above too)",
        ),
        (
            "a: {x: 1\n\n",
            "f.yaml:1: (yaml): the {...} mapping opened on this line is never closed "
            "(check the lines above too)",
        ),
        (
            "a: 1\nb: 'x\n",
            "f.yaml:2: (yaml): the quoted text opened on this line is never closed "
            "(check the lines above too)",
        ),
        (
            "a: 1\n---\nb: 2\n",
            "f.yaml:2: (yaml): a second YAML document ('---') is not allowed in this file",
        ),
        ("a: *nope\n", "f.yaml:1: (yaml): found undefined alias 'nope'"),
        (
            "a: !!python/object:os.system x\n",
            "f.yaml:1: (yaml): unsupported YAML tag 'tag:yaml.org,2002:python/object:os.system'",
        ),
        (
            "a: 1\nb: x\x07y\n",
            "f.yaml:2: (yaml): #x0007 is a control character YAML does not allow",
        ),
        ("a: " + "[" * 3000 + "\n", "f.yaml:1: (yaml): nested too deeply"),
    ],
)
def test_syntax_errors_are_one_line(text: str, expected: str) -> None:
    assert problems(text) == [expected]


# --- files ----------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DocumentError) as caught:
        read_yaml(tmp_path / "nope.yaml")
    assert [str(p) for p in caught.value.problems] == [
        f"{tmp_path / 'nope.yaml'}:1: (file): cannot read: No such file or directory"
    ]


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("a: 1\nb: 2\nc: Montréal\n".encode("latin-1"))
    with pytest.raises(DocumentError) as caught:
        read_yaml(path)
    assert [str(p) for p in caught.value.problems] == [
        f"{path}:3: (file): not UTF-8 text (byte 0xe9): save as UTF-8"
    ]


def test_utf8_with_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "win.yaml"
    path.write_bytes(b"\xef\xbb\xbfa: 1\r\nb:\r\n  c: Montr\xc3\xa9al\r\n")
    doc = read_yaml(path)
    assert doc.data == {"a": 1, "b": {"c": "Montréal"}}
    assert doc.lines[("b", "c")] == 3


# --- validation messages ------------------------------------------------------------------


class Colour(StrEnum):
    RED = "red"
    GREEN = "green"


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: StrictInt = Field(default=1, ge=1)
    colour: Colour = Colour.RED


class Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    enabled: StrictBool = True
    tags: list[str] = Field(default_factory=list)
    inner: Inner = Inner()
    items: list[Inner] = Field(default_factory=list)


def messages(text: str) -> list[str]:
    doc = parse_yaml(text, "f.yaml")
    with pytest.raises(DocumentError) as caught:
        validate(Outer, doc)
    return [f"{p.line}: {p.key}: {p.message}" for p in caught.value.problems]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("enabled: true\n", ["1: name: required key is missing"]),
        ("name: x\nenabled: maybe\n", ["2: enabled: must be true or false, got 'maybe'"]),
        (
            "name: x\nenabled: 'yes'\n",
            ["2: enabled: must be true or false (without quotes), got 'yes'"],
        ),
        ("name: 42\n", ["1: name: must be text, got 42 (put it in quotes: '42')"]),
        ("name: x\ntags: a\n", ["2: tags: must be a list, like [a], got 'a'"]),
        ("name: x\ntags: {a: 1}\n", ["2: tags: must be a list, like [a, b], got a mapping"]),
        ("name: x\ninner:\n  size: 0\n", ["3: inner.size: must be at least 1, got 0"]),
        ("name: x\ninner:\n  size: 1.5\n", ["3: inner.size: must be a whole number, got 1.5"]),
        (
            "name: x\ninner:\n  colour: gren\n",
            ["3: inner.colour: must be one of red, green, got 'gren' (did you mean 'green'?)"],
        ),
        (
            "name: x\ninner:\n  color: red\n",
            ["3: inner.color: unknown key (did you mean 'colour'?)"],
        ),
        ("name: x\ninner: 3\n", ["2: inner: must be a mapping of keys (key: value lines), got 3"]),
        (
            "name: x\nsize: 2\n",
            ["2: size: unknown key here (did you mean inner.size or items.size?)"],
        ),
        ("name: x\nwhatever: 2\n", ["2: whatever: unknown key"]),
        (
            "name: x\nitems:\n  - size: 2\n  - size: -1\n    colour: blue\n",
            [
                "4: items[1].size: must be at least 1, got -1",
                "5: items[1].colour: must be one of red, green, got 'blue'",
            ],
        ),
        ("name: x\n3: y\n", ["2: 3: unknown key"]),
        ("name: x\nyes: y\n", ["2: true: unknown key"]),
        ("- a\n", ["1: (root): the file must be a mapping of keys (key: value lines), got a list"]),
        (
            "just text\n",
            ["1: (root): the file must be a mapping of keys (key: value lines), got 'just text'"],
        ),
        (
            "~\n",
            [
                "1: (root): the file must be a mapping of keys (key: value lines), "
                "got nothing (null)"
            ],
        ),
    ],
)
def test_messages(text: str, expected: list[str]) -> None:
    assert messages(text) == expected


def test_every_problem_at_once_in_line_order() -> None:
    text = "inner:\n  size: 0\n  colour: x\nenabled: 2\nextra: 1\n"
    assert messages(text) == [
        "1: name: required key is missing",
        "2: inner.size: must be at least 1, got 0",
        "3: inner.colour: must be one of red, green, got 'x'",
        "4: enabled: must be true or false, got 2",
        "5: extra: unknown key",
    ]


def test_validate_under_a_prefix() -> None:
    doc = parse_yaml("top:\n  sub:\n    name: 5\n", "f.yaml")
    with pytest.raises(DocumentError) as caught:
        validate(Outer, doc, ("top", "sub"))
    assert [str(p) for p in caught.value.problems] == [
        "f.yaml:3: top.sub.name: must be text, got 5 (put it in quotes: '5')"
    ]
    with pytest.raises(DocumentError) as caught:
        validate(Outer, doc, ("top", "missing"))
    assert [str(p) for p in caught.value.problems] == [
        "f.yaml:1: top.missing: must be a mapping of keys (key: value lines), got nothing (null)"
    ]


def test_valid_document() -> None:
    doc = parse_yaml("name: x\nitems: [{size: 3}]\n", "f.yaml")
    model = validate(Outer, doc)
    assert model.items[0].size == 3


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "nothing (null)"),
        (True, "true"),
        (False, "false"),
        (3, "3"),
        (1.5, "1.5"),
        ("", "an empty string ('')"),
        ("abc", "'abc'"),
        ("x" * 50, repr("x" * 37 + "...")),
        (date(2024, 1, 2), "the date 2024-01-02"),
        ({}, "a mapping"),
        ([], "a list"),
    ],
)
def test_show(value: object, text: str) -> None:
    assert show(value) == text


def test_problem_and_error_text() -> None:
    first = Problem("c.yaml", 3, "report.interval", "must be longer than 0s")
    second = Problem("c.yaml", 4, "(yaml)", "x")
    assert str(first) == "c.yaml:3: report.interval: must be longer than 0s"
    assert str(DocumentError([first, second])) == f"{first}\n{second}"
    assert Document("n", {}, {}).line_of(("a",)) == 1
