"""The line-keeping YAML loader: positions, duplicate keys, YAML 1.1 traps, and no traceback for
any input."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reaper.errors import ConfigError
from reaper.policy.yamlsrc import Position, Problem, parse_yaml, read_as_hint

DOC = """\
policies:
  - name: gpu-cap
    queues: ["gpu-*", cpu]
    tags:
      team: ml
"""


def only_error(text: str | bytes) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_yaml(text, "f.yaml")
    assert len(caught.value.diagnostics) == 1, caught.value.diagnostics
    return str(caught.value.diagnostics[0])


def test_data_is_plain_python() -> None:
    doc = parse_yaml(DOC, "f.yaml")
    assert doc.data == {
        "policies": [{"name": "gpu-cap", "queues": ["gpu-*", "cpu"], "tags": {"team": "ml"}}]
    }


def test_values_and_keys_keep_their_positions() -> None:
    source = parse_yaml(DOC, "f.yaml").source
    assert source.value_position(("policies", 0, "name")) == Position(2, 11)
    assert source.key_position(("policies", 0, "name")) == Position(2, 5)
    assert source.value_position(("policies", 0, "queues", 1)) == Position(3, 23)
    assert source.value_position(("policies", 0, "tags", "team")) == Position(5, 13)
    assert source.key_position(("policies", 0, "tags", "team")) == Position(5, 7)


def test_a_missing_path_falls_back_to_its_nearest_ancestor() -> None:
    source = parse_yaml(DOC, "f.yaml").source
    assert source.value_position(("policies", 0, "tags", "env")) == Position(5, 7)
    problem = Problem(("policies", 0, "absent"), "boom", at_key=True)
    assert str(source.locate(problem)) == "f.yaml:2:5: boom"


def test_duplicate_key_names_both_lines() -> None:
    text = "a: 1\nb:\n  c: 1\n  c: 2\na: 3\n"
    with pytest.raises(ConfigError) as caught:
        parse_yaml(text, "f.yaml")
    assert [str(d) for d in caught.value.diagnostics] == [
        "f.yaml:4:3: duplicate key 'c': already given at line 3",
        "f.yaml:5:1: duplicate key 'a': already given at line 1",
    ]


def test_merge_keys_do_not_count_as_duplicates_and_explicit_keys_win() -> None:
    text = "base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  y: 3\n"
    doc = parse_yaml(text, "f.yaml")
    assert doc.data["c"] == {"x": 1, "y": 3}
    assert doc.source.value_position(("c", "y")) == Position(4, 6)


@pytest.mark.parametrize(
    ("text", "value", "plain"),
    [
        ("a: no", False, "no"),
        ("a: Off", False, "Off"),
        ("a: 1:30", 90, "1:30"),
        ("a: 42", 42, "42"),
        ('a: "no"', "no", None),
        ("a: n", "n", None),  # PyYAML reads y/n as strings
    ],
)
def test_plain_scalars_read_as_non_strings_keep_their_text(
    text: str, value: object, plain: str | None
) -> None:
    doc = parse_yaml(text, "f.yaml")
    assert doc.data["a"] == value
    assert doc.source.plain_text(("a",)) == plain


@pytest.mark.parametrize(
    ("text", "value", "hint"),
    [
        ("no", False, '; YAML 1.1 reads unquoted no as false — quote it: "no"'),
        ("ON", True, '; YAML 1.1 reads unquoted ON as true — quote it: "ON"'),
        ("1:30", 90, '; YAML 1.1 reads unquoted 1:30 as 90 (base 60) — quote it: "1:30"'),
        ("42", 42, '; YAML reads unquoted 42 as a number — quote it: "42"'),
        ("true", True, '; YAML reads unquoted true as a boolean — quote it: "true"'),
        ("", None, "; the value is empty (null)"),
        ("text", "text", ""),
    ],
)
def test_read_as_hint(text: str, value: object, hint: str) -> None:
    assert read_as_hint(text, value) == hint


def test_a_key_read_as_a_boolean_is_an_error_with_the_fix() -> None:
    message = only_error("tags:\n  on: x\n")
    assert message == (
        "f.yaml:2:3: key 'on' must be a string; "
        'YAML 1.1 reads unquoted on as true — quote it: "on"'
    )


def test_syntax_error_points_at_the_mark() -> None:
    message = only_error('policies:\n  - name: x\n    queues: ["a"\n    max_runtime: 1h\n')
    assert message.startswith("f.yaml:4:5: YAML syntax error: ")
    assert "(line 3)" in message


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty_file_is_one_clear_error(text: str) -> None:
    assert only_error(text) == "f.yaml:1:1: the file is empty: expected a mapping"


@pytest.mark.parametrize(("text", "kind"), [("- a\n", "a list"), ("just text\n", "a single value")])
def test_top_level_must_be_a_mapping(text: str, kind: str) -> None:
    assert only_error(text).endswith(f"must be a mapping (key: value lines), not {kind}")


def test_non_utf8_bytes_are_located() -> None:
    message = only_error(b"a: 1\nb: caf\xe9\n")
    assert message == "f.yaml:2:7: not valid UTF-8 (byte 0xe9); save the file as UTF-8"


def test_utf8_bom_is_accepted() -> None:
    assert parse_yaml(b"\xef\xbb\xbfa: 1\n", "f.yaml").data == {"a": 1}


def test_control_character_is_located() -> None:
    assert only_error("a: 1\nb: \x07\n").startswith("f.yaml:2:4: unacceptable character #x0007")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a: !!python/object:os.system x\n", "cannot read this value"),
        ("a: !!set {x}\n", "unsupported YAML tag !!set"),
        ("a: 2024-13-45\n", "cannot read '2024-13-45'"),
        ("a: &x [*x]\n", "recursive alias"),
        ("a: &x {<<: *x}\n", "merge key"),
        ("a: *nowhere\n", "undefined alias"),
        ("? [a]\n: b\n", "a key must be a plain string"),
        ("---\na: 1\n---\nb: 2\n", "single document"),
    ],
)
def test_hostile_or_odd_documents_are_diagnostics(text: str, fragment: str) -> None:
    assert fragment in only_error(text)


@pytest.mark.parametrize("opener", ["[", "{", "- "])
def test_deep_nesting_is_refused_with_a_location(opener: str) -> None:
    # libyaml's composer overflows the C stack (a segfault) at a few ten thousand levels; reaper
    # counts the depth itself, and newer PyYAML also stops it (its own wording): whichever layer
    # stops the input, the user gets one located error, never a crash.
    text = (
        "a: " + opener * 100_000
        if opener != "- "
        else "a:\n" + "".join(" " * i + "-\n" for i in range(0, 3000))
    )
    error = only_error(text)
    assert re.match(r"f\.yaml:\d+:\d+: ", error), error


def test_deep_nesting_is_refused_by_validate_in_bounded_memory(tmp_path: Path) -> None:
    # Through the CLI in a child limited to 512 MiB of address space: exit 78 and file:line:col.
    policy = tmp_path / "deep.yaml"
    policy.write_text("policies: " + "[" * 200_000)
    limit = "import resource; resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20))"
    code = f"{limit}; import sys; from reaper.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", code, "validate", str(policy)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 78, done.stderr
    assert re.search(rf"{re.escape(str(policy))}:1:\d+: ", done.stdout + done.stderr)
    assert "Traceback" not in done.stderr


def test_alias_expansion_is_bounded() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    assert "after expanding aliases" in only_error("\n".join(lines) + "\n")


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200)))
def test_any_input_gives_data_or_a_config_error(raw: bytes | str) -> None:
    try:
        doc = parse_yaml(raw, "f.yaml")
    except ConfigError as exc:
        assert exc.diagnostics
        assert all(d.line >= 1 and d.column >= 1 for d in exc.diagnostics)
    else:
        assert isinstance(doc.data, dict)


YAMLISH = st.text(alphabet=list("ab:-[]{},&*!?|>'\"#\n \t<~01.%@`"), max_size=120)


@settings(max_examples=500, deadline=None)
@given(YAMLISH)
def test_yaml_like_noise_gives_data_or_a_config_error(text: str) -> None:
    try:
        parse_yaml(text, "f.yaml")
    except ConfigError as exc:
        assert exc.diagnostics
