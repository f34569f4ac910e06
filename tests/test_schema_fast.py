"""The quick schema check (reaper/policy/schema/fast.py) never passes what jsonschema refuses, and
passes the shipped examples (else it would save nothing): compared with jsonschema on the
example files and on random mutations of them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reaper.policy.schema import _validator_class, load_schema
from reaper.policy.schema.fast import conforms

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = [
    ("policy", path) for path in sorted((ROOT / "policies").glob("*.yaml"))
] + [("test", path) for path in sorted((ROOT / "policies" / "tests").glob("*.yaml"))] + [
    ("config", ROOT / "examples" / "reaper.yaml")
]  # fmt: skip


def jsonschema_accepts(data: Any, name: str) -> bool:
    schema = load_schema(name)  # type: ignore[arg-type]
    return not any(True for _ in _validator_class()(schema).iter_errors(data))


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize(("name", "path"), EXAMPLES, ids=lambda v: getattr(v, "name", v))
def test_the_shipped_examples_pass_the_quick_check(name: str, path: Path) -> None:
    data = load(path)
    assert jsonschema_accepts(data, name)
    assert conforms(data, load_schema(name))  # type: ignore[arg-type]


SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 200), st.floats(allow_nan=False, width=32),
    st.sampled_from(["", "x", "5m", "12h", "2d", "gpu-*", "dry_run", "RUNNING", "cap\n",
                     "Europe/Berlin", "09:00-17:00", "mon-fri", "{max_runtime}", "a" * 300]),
)  # fmt: skip
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["name", "x", "every", "gt", "glob", "type"]), inner,
                      max_size=3),
    max_leaves=6,
)  # fmt: skip


def paths_of(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += paths_of(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += paths_of(value, (*prefix, index))
    return found


def mutate(data: Any, path: tuple[Any, ...], how: str, value: Any) -> Any:
    """`data` with the node at `path` replaced, or a key added beside it, or it removed."""
    data = copy.deepcopy(data)
    if not path:
        return value if how == "replace" else data
    parent = data
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if how == "replace":
        parent[last] = value
    elif how == "remove":
        del parent[last]
    elif isinstance(parent, dict):
        parent[f"unknown_{len(parent)}"] = value
    else:
        parent.append(value)
    return data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_what_the_quick_check_passes_jsonschema_passes(data: st.DataObject) -> None:
    name, path = data.draw(st.sampled_from(EXAMPLES))
    original = load(path)
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(paths_of(original)))
        how = data.draw(st.sampled_from(["replace", "remove", "add"]))
        original = mutate(original, where, how, data.draw(VALUES))
    if conforms(original, load_schema(name)):  # type: ignore[arg-type]
        assert jsonschema_accepts(original, name), original


KEYWORD_CASES = [
    ({"type": "integer"}, [1, 1.0, 1.5, True, "1", None]),
    ({"type": "number"}, [1, 2.5, True, "2"]),
    ({"type": ["string", "null"]}, ["x", None, 0]),
    ({"enum": ["a", 1, None]}, ["a", 1, 1.0, True, None, "b"]),
    ({"const": False}, [False, 0, None]),
    ({"required": ["a"], "properties": {"a": {"type": "string"}}}, [{"a": "x"}, {"a": 1}, {}, 3]),
    ({"additionalProperties": False, "properties": {"a": {}}}, [{"a": 1}, {"b": 1}, []]),
    ({"propertyNames": {"pattern": "^[a-z]+$"}}, [{"ab": 1}, {"a1": 1}, {"ab\n": 1}]),
    ({"minProperties": 1}, [{}, {"a": 1}]),
    ({"items": {"type": "string"}, "minItems": 1}, [[], ["x"], ["x", 2], "xy"]),
    ({"minLength": 2, "maxLength": 3}, ["a", "ab", "abcd", 5]),
    ({"minimum": 1, "maximum": 3}, [0, 1, 3, 3.5, "9", True]),
    ({"exclusiveMinimum": 0}, [0, 0.1, -1]),
    ({"allOf": [{"type": "string"}, {"minLength": 2}]}, ["ab", "a", 3]),
    ({"anyOf": [{"type": "string"}, {"type": "integer"}]}, ["a", 1, 1.5]),
    ({"if": {"required": ["a"]}, "then": {"required": ["b"]}, "else": {"required": ["c"]}},
     [{"a": 1, "b": 2}, {"a": 1}, {"c": 1}, {}]),
    ({"definitions": {"d": {"type": "string"}}, "properties": {"x": {"$ref": "#/definitions/d",
      "type": "integer"}}}, [{"x": "s"}, {"x": 1}]),
]  # fmt: skip


@pytest.mark.parametrize(("schema", "instances"), KEYWORD_CASES)
def test_each_keyword_decides_as_jsonschema_does(
    schema: dict[str, Any], instances: list[Any]
) -> None:
    for instance in instances:
        expected = not any(True for _ in _validator_class()(schema).iter_errors(instance))
        assert conforms(instance, schema) == expected, (schema, instance)


def test_an_unknown_keyword_leaves_the_decision_to_jsonschema() -> None:
    assert not conforms("x", {"format": "email"})
    assert not conforms([1], {"items": [{"type": "integer"}]})
    assert not conforms({}, {"$ref": "other.json#/x"})
