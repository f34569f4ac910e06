"""The JSON Schemas (draft-07) of policy files and of reaper.yaml, and schema checks whose errors
name the offending node and say what to write instead.

Messages follow c7n's `specific_error` (c7n/schema.py): report the most specific sub-error, never
"is not valid under any of the given schemas"; an unknown key gets a "did you mean"."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal

from reaper.policy.schema.fast import conforms
from reaper.policy.yamlsrc import NodePath, Problem, SourceMap, read_as_hint

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError

SchemaName = Literal["policy", "config", "test"]
SECRET_KEYS = frozenset({"token", "api_key", "password", "secret", "secret_access_key"})

_TYPE_WORDS = {
    "string": "a string",
    "array": "a list",
    "object": "a mapping",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "null": "empty",
}


def load_schema(name: SchemaName) -> dict[str, Any]:
    """The schema as shipped in `reaper/policy/schema/<name>.schema.json`."""
    text = resources.files(__package__).joinpath(f"{name}.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def schema_text(name: SchemaName) -> str:
    """The schema's JSON text, for `reaper schema`."""
    return resources.files(__package__).joinpath(f"{name}.schema.json").read_text("utf-8")


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    """JSON Schema's `pattern` is ECMA 262, where `$` ends the string; Python's `$` also matches
    before a final newline, which let a policy named "cap\\n" pass. The schemas stay portable
    (editors read them); only the validator reads `$` as `\\Z`."""
    from jsonschema.exceptions import ValidationError

    if validator.is_type(instance, "string") and not _compiled(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


_PATTERNS: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    found = _PATTERNS.get(pattern)
    if found is None:
        found = _PATTERNS[pattern] = re.compile(re.sub(r"(?<!\\)\$", r"\\Z", pattern))
    return found


@cache
def _validator_class() -> Any:
    """Draft7Validator with ECMA `pattern`; jsonschema is imported only when a file does not
    pass the quick check (`fast.conforms`)."""
    from jsonschema import Draft7Validator, validators

    return validators.extend(Draft7Validator, {"pattern": _ecma_pattern})


def check_schema(data: Any, source: SourceMap, schema: Mapping[str, Any]) -> list[Problem]:
    """Every schema violation in `data`, at most one per node, with operator-friendly messages."""
    if conforms(data, schema):  # the common case, decided without importing jsonschema
        return []
    validator = _validator_class()(schema)
    duration = schema.get("definitions", {}).get("duration")
    problems: dict[tuple[NodePath, bool], Problem] = {}
    for error in validator.iter_errors(data):
        for problem in _explain(_specific(error), source, duration):
            problems.setdefault((problem.path, problem.at_key), problem)
    return sorted(problems.values(), key=lambda p: _position_key(source, p))


def _position_key(source: SourceMap, problem: Problem) -> tuple[int, int]:
    at = source.locate(problem)
    return at.line, at.column


def _specific(error: ValidationError) -> ValidationError:
    """The sub-error that explains an anyOf/oneOf failure best (deepest, most relevant)."""
    from jsonschema.exceptions import best_match

    while error.context:
        error = best_match(error.context)
    return error


def _explain(error: ValidationError, source: SourceMap, duration: Any) -> Iterator[Problem]:
    path: NodePath = tuple(error.absolute_path)
    if error.validator == "additionalProperties":
        yield from _unknown_keys(error, path)
        return
    explain = _EXPLAINERS.get(str(error.validator), _explain_default)
    if error.validator == "required":  # located at the mapping: the key's path does not exist
        missing = _missing_key(error)
        yield Problem((*path, missing), explain(error, _describe(error, path), source, duration))
        return
    if "propertyNames" in error.relative_schema_path:  # the instance is a key of `path`
        message = explain(error, f"key {error.instance!r}", source, duration)
        yield Problem((*path, str(error.instance)), message.split("; got ")[0], at_key=True)
        return
    yield Problem(path, explain(error, _describe(error, path), source, duration))


def _describe(error: ValidationError, path: NodePath) -> str:
    """How a message names the node: a schema title, the key, or the key of its list."""
    title = error.schema.get("title") if isinstance(error.schema, Mapping) else None
    if title:
        return str(title)
    if not path:
        return "the file"
    last = path[-1]
    if isinstance(last, int):
        parent = next((p for p in reversed(path) if isinstance(p, str)), "list")
        return f"item {last + 1} of {parent!r}"
    return repr(last)


def _unknown_keys(error: ValidationError, path: NodePath) -> Iterator[Problem]:
    allowed = sorted(error.schema.get("properties", {}))
    for key in sorted(set(error.instance) - set(allowed)):
        yield Problem((*path, key), _unknown_key_message(str(key), allowed), at_key=True)


def _unknown_key_message(key: str, allowed: list[str]) -> str:
    message = f"unknown key {key!r}"
    if key in SECRET_KEYS or key.endswith(("_token", "_secret", "_password", "_key")):
        message += "; secrets never go in YAML: name an environment variable or a file instead"
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        return f"{message}; did you mean {close[0]!r}?"
    return f"{message}; expected one of: {', '.join(allowed)}"


def _explain_type(error: ValidationError, name: str, source: SourceMap, duration: Any) -> str:
    path: NodePath = tuple(error.absolute_path)
    text = source.plain_text(path)
    if duration is not None and error.schema == duration:
        return _duration_type_message(name, error.instance, text)
    expected = error.validator_value
    kinds = [expected] if isinstance(expected, str) else list(expected)
    message = f"{name} must be {' or '.join(_TYPE_WORDS.get(k, k) for k in kinds)}"
    if "string" in kinds and text is not None:
        return message + read_as_hint(text, error.instance)
    return f"{message}, not {_kind_of(error.instance)}"


def _duration_type_message(name: str, value: Any, text: str | None) -> str:
    base = f"{name} must be a duration with a unit, e.g. 90s, 15m, 12h, 1h30m, 2d"
    if isinstance(value, int | float) and not isinstance(value, bool):
        if text is not None and ":" in text:
            return f"{base}; YAML 1.1 reads unquoted {text} as {value:g} (base 60)"
        return f"{base}; a bare number such as {text or value} is ambiguous"
    return f"{base}, not {_kind_of(value)}"


def _kind_of(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "an empty value" if value is None else str(value).lower()
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text {value!r}"
    names: dict[type, str] = {list: "a list", dict: "a mapping"}
    return names.get(type(value), f"a {type(value).__name__}")


def _explain_enum(error: ValidationError, name: str, source: SourceMap, duration: Any) -> str:
    values = error.validator_value if error.validator == "enum" else [error.validator_value]
    options = [str(option) for option in values]
    message = f"{name} must be one of {', '.join(options)}; got {error.instance!r}"
    close = difflib.get_close_matches(str(error.instance), options, n=1, cutoff=0.6)
    return f"{message}; did you mean {close[0]!r}?" if close else message


def _missing_key(error: ValidationError) -> str:
    """jsonschema raises one error per missing key, its message starting with the key's repr."""
    keys = [str(k) for k in error.validator_value]
    return next((k for k in keys if error.message.startswith(repr(k))), keys[0])


def _explain_required(error: ValidationError, name: str, source: SourceMap, duration: Any) -> str:
    return f"{name} is missing the required key {_missing_key(error)!r}"


def _pattern_text(error: ValidationError) -> str:
    custom = error.schema.get("patternErrorMessage")
    return str(custom) if custom else f"must match {error.validator_value}"


def _explain_pattern(error: ValidationError, name: str, source: SourceMap, duration: Any) -> str:
    return f"{name} {_pattern_text(error)}; got {error.instance!r}"


def _explain_bound(error: ValidationError, name: str, source: SourceMap, duration: Any) -> str:
    words = {
        "minimum": "at least",
        "maximum": "at most",
        "exclusiveMinimum": "more than",
        "exclusiveMaximum": "less than",
    }
    limit = f"{words[str(error.validator)]} {error.validator_value}"
    return f"{name} must be {limit}; got {error.instance!r}"


def _explain_size(error: ValidationError, name: str, source: SourceMap, duration: Any) -> str:
    if error.validator_value in (0, 1) and str(error.validator).startswith("min"):
        return f"{name} must not be empty"
    what = {"minItems": "items", "minProperties": "keys", "minLength": "characters"}
    unit = what.get(str(error.validator), "")
    bound = "at least" if str(error.validator).startswith("min") else "at most"
    return f"{name} must have {bound} {error.validator_value} {unit}".rstrip()


def _explain_unique(error: ValidationError, name: str, source: SourceMap, duration: Any) -> str:
    items = list(error.instance)
    twice = next((item for index, item in enumerate(items) if item in items[:index]), None)
    return f"{name} names {twice!r} more than once"


def _explain_default(error: ValidationError, name: str, source: SourceMap, duration: Any) -> str:
    return f"{name}: {error.message}"


_Explainer = Callable[["ValidationError", str, SourceMap, Any], str]
_EXPLAINERS: Mapping[str, _Explainer] = {
    "type": _explain_type,
    "enum": _explain_enum,
    "const": _explain_enum,
    "required": _explain_required,
    "pattern": _explain_pattern,
    "minimum": _explain_bound,
    "maximum": _explain_bound,
    "exclusiveMinimum": _explain_bound,
    "exclusiveMaximum": _explain_bound,
    "minItems": _explain_size,
    "maxItems": _explain_size,
    "minProperties": _explain_size,
    "minLength": _explain_size,
    "maxLength": _explain_size,
    "uniqueItems": _explain_unique,
}
