"""A yes/no check of an instance against the shipped draft-07 schemas, without jsonschema.

Importing jsonschema costs about a third of `reaper validate`'s start-up, and a valid file (the
common case) needs no error messages. `conforms` answers True only when the instance is valid;
whenever it cannot be sure (an invalid instance, a keyword it does not know, a `$ref` it cannot
follow, a value whose equality it does not model) it answers False, and the caller runs
jsonschema, which decides and explains. So a False is never an error by itself, and a True
agrees with jsonschema (tests/test_schema_fast.py checks both on generated files).

Semantics follow jsonschema's Draft7Validator as installed: the keywords beside a `$ref` are
checked too, a bool is neither an integer nor a number, an integer may be a float with no
fraction, `pattern` is searched with `$` read as the end of the string
(reaper.policy.schema._ecma_pattern)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

# Keywords that carry no constraint.
_ANNOTATIONS = frozenset({"$schema", "$id", "title", "description", "default", "examples",
                          "$comment", "patternErrorMessage", "definitions"})  # fmt: skip


class _Unsure(Exception):
    """The check cannot decide: jsonschema must."""


def conforms(instance: Any, schema: Mapping[str, Any]) -> bool:
    """True only if `instance` is valid against `schema` (its `$ref`s resolved in `schema`)."""
    try:
        return _valid(instance, schema, schema)
    except (_Unsure, RecursionError):
        return False


def _valid(instance: Any, schema: Any, root: Mapping[str, Any]) -> bool:
    if schema is True:
        return True
    if schema is False or not isinstance(schema, Mapping):
        raise _Unsure
    for keyword, value in schema.items():
        if keyword in _ANNOTATIONS:
            continue
        if keyword == "$ref":  # jsonschema checks the keywords beside it too
            if not _valid(instance, _resolve(str(value), root), root):
                return False
            continue
        check = _KEYWORDS.get(keyword)
        if check is None:
            raise _Unsure
        if not check(instance, value, schema, root):
            return False
    return True


def _resolve(ref: str, root: Mapping[str, Any]) -> Any:
    if not ref.startswith("#"):
        raise _Unsure
    node: Any = root
    for escaped in ref[1:].split("/")[1:]:
        part = escaped.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or part not in node:
            raise _Unsure
        node = node[part]
    return node


_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "integer": lambda v: (
        not isinstance(v, bool)
        and (isinstance(v, int) or (isinstance(v, float) and v.is_integer()))
    ),
}


def _is_type(instance: Any, name: str) -> bool:
    check = _TYPES.get(name)
    if check is None:
        raise _Unsure
    return check(instance)


def _type(instance: Any, value: Any, schema: Any, root: Any) -> bool:
    names = value if isinstance(value, list) else [value]
    return any(_is_type(instance, str(name)) for name in names)


def _same(instance: Any, expected: Any) -> bool:
    """Equality as jsonschema decides it, for the scalars the schemas use (a bool equals only a
    bool); anything else is left to jsonschema."""
    if expected is None or instance is None:
        return instance is None and expected is None
    if isinstance(expected, bool) or isinstance(instance, bool):
        return type(instance) is type(expected) and instance == expected
    if isinstance(expected, str) or isinstance(instance, str):
        return type(instance) is str and type(expected) is str and instance == expected
    if isinstance(expected, int | float) and isinstance(instance, int | float):
        return bool(instance == expected)
    raise _Unsure


def _enum(instance: Any, value: Any, schema: Any, root: Any) -> bool:
    if not isinstance(value, list):
        raise _Unsure
    return any(_same(instance, option) for option in value)


def _const(instance: Any, value: Any, schema: Any, root: Any) -> bool:
    return _same(instance, value)


def _properties(instance: Any, value: Any, schema: Any, root: Any) -> bool:
    if not isinstance(instance, dict):
        return True
    return all(_valid(instance[k], sub, root) for k, sub in value.items() if k in instance)


def _additional(instance: Any, value: Any, schema: Any, root: Any) -> bool:
    if not isinstance(instance, dict):
        return True
    if "patternProperties" in schema:
        raise _Unsure
    known = schema.get("properties", {})
    extra = [key for key in instance if key not in known]
    return all(_valid(instance[key], value, root) for key in extra)


def _property_names(instance: Any, value: Any, schema: Any, root: Any) -> bool:
    return not isinstance(instance, dict) or all(_valid(key, value, root) for key in instance)


def _required(instance: Any, value: Any, schema: Any, root: Any) -> bool:
    return not isinstance(instance, dict) or all(key in instance for key in value)


def _min_properties(instance: Any, value: Any, schema: Any, root: Any) -> bool:
    return not isinstance(instance, dict) or len(instance) >= value


def _items(instance: Any, value: Any, schema: Any, root: Any) -> bool:
    if not isinstance(instance, list):
        return True
    if not isinstance(value, Mapping | bool):
        raise _Unsure  # the tuple form
    return all(_valid(item, value, root) for item in instance)


def _min_items(instance: Any, value: Any, schema: Any, root: Any) -> bool:
    return not isinstance(instance, list) or len(instance) >= value


def _min_length(instance: Any, value: Any, schema: Any, root: Any) -> bool:
    return not isinstance(instance, str) or len(instance) >= value


def _max_length(instance: Any, value: Any, schema: Any, root: Any) -> bool:
    return not isinstance(instance, str) or len(instance) <= value


def _number(instance: Any) -> bool:
    return isinstance(instance, int | float) and not isinstance(instance, bool)


def _minimum(instance: Any, value: Any, schema: Any, root: Any) -> bool:
    return not _number(instance) or bool(instance >= value)


def _maximum(instance: Any, value: Any, schema: Any, root: Any) -> bool:
    return not _number(instance) or bool(instance <= value)


def _exclusive_minimum(instance: Any, value: Any, schema: Any, root: Any) -> bool:
    return not _number(instance) or bool(instance > value)


_PATTERNS: dict[str, re.Pattern[str]] = {}


def _pattern(instance: Any, value: Any, schema: Any, root: Any) -> bool:
    if not isinstance(instance, str):
        return True
    compiled = _PATTERNS.get(value)
    if compiled is None:
        compiled = _PATTERNS[value] = re.compile(re.sub(r"(?<!\\)\$", r"\\Z", value))
    return compiled.search(instance) is not None


def _all_of(instance: Any, value: Any, schema: Any, root: Any) -> bool:
    return all(_valid(instance, sub, root) for sub in value)


def _any_of(instance: Any, value: Any, schema: Any, root: Any) -> bool:
    return any(_valid(instance, sub, root) for sub in value)


def _if(instance: Any, value: Any, schema: Any, root: Any) -> bool:
    branch = "then" if _valid(instance, value, root) else "else"
    return branch not in schema or _valid(instance, schema[branch], root)


def _handled_by_if(instance: Any, value: Any, schema: Any, root: Any) -> bool:
    """`then`/`else` count only beside an `if`, which checks them."""
    return True


_KEYWORDS: dict[str, Callable[[Any, Any, Any, Any], bool]] = {
    "type": _type, "enum": _enum, "const": _const, "properties": _properties,
    "additionalProperties": _additional, "propertyNames": _property_names,
    "required": _required, "minProperties": _min_properties, "items": _items,
    "minItems": _min_items, "minLength": _min_length, "maxLength": _max_length,
    "minimum": _minimum, "maximum": _maximum, "exclusiveMinimum": _exclusive_minimum,
    "pattern": _pattern, "allOf": _all_of, "anyOf": _any_of, "if": _if,
    "then": _handled_by_if, "else": _handled_by_if,
}  # fmt: skip
