"""`where:` conditions on a backend's raw job record (docs/policies.md).

    where:
      job_cost: {gt: 50}
      container.vcpus: {ge: 8, le: 64}
      model: {glob: "llama-*"}

A dotted path walks mappings by key and lists by decimal index (`attempts.0.exitCode`). A path
that is absent, or whose value is null, is *missing*: a missing path satisfies only
`exists: false`, and fails every other operator (`ne` and `not_in` included).

Operators: `eq ne` (strict equality: 1 = 1.0, but true ≠ 1 and "1" ≠ 1), `lt le gt ge` (numbers
only; bools are not numbers; any other value is no match), `in not_in` (a list of values, equality
as for `eq`), `glob` (whole string, see reaper.policy.globs), `regex` (RE2, matches anywhere in the
string: anchor with ^...$), `exists` (true / false). Glob and regex match strings only.
No operator raises on any value a backend can return.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from reaper.policy.globs import Pattern, PatternError, compile_glob, compile_regex

PathPart = str | int
Problems = list[tuple[tuple[PathPart, ...], str]]

_MISSING = object()
_SHOWN_CHARS = 80  # a value longer than this is shortened in facts


class Op(StrEnum):
    EQ = "eq"
    NE = "ne"
    LT = "lt"
    LE = "le"
    GT = "gt"
    GE = "ge"
    IN = "in"
    NOT_IN = "not_in"
    GLOB = "glob"
    REGEX = "regex"
    EXISTS = "exists"


_ORDER: Mapping[Op, Callable[[Any, Any], bool]] = {
    Op.LT: operator.lt, Op.LE: operator.le, Op.GT: operator.gt, Op.GE: operator.ge,
}  # fmt: skip
_SYMBOL = {Op.EQ: "=", Op.NE: "!=", Op.LT: "<", Op.LE: "<=", Op.GT: ">", Op.GE: ">=",
           Op.IN: "in", Op.NOT_IN: "not in", Op.GLOB: "~", Op.REGEX: "=~"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class WhereClause:
    """One operator on one path."""

    path: str
    steps: tuple[str, ...]
    op: Op
    operand: Any = field(compare=False)
    pattern: Pattern | None = None

    def explain(self, raw: Mapping[str, Any]) -> str | None:
        """The fact text if the clause holds on `raw`, else None."""
        value = lookup(raw, self.steps)
        if not self._holds_on(value):
            return None
        if self.op is Op.EXISTS:
            return f"where {self.path} {'missing' if value is _MISSING else 'exists'}"
        shown = self.pattern.text if self.pattern else show(self.operand)
        return f"where {self.path} {show(value)} {_SYMBOL[self.op]} {shown}"

    def holds(self, raw: Mapping[str, Any]) -> bool:
        """True exactly when `explain(raw)` is not None, without building the text."""
        return self._holds_on(lookup(raw, self.steps))

    def observe(self, raw: Mapping[str, Any]) -> tuple[str, str, bool]:
        """(the value found, what the operator needs, whether it holds) on `raw`: why the
        clause holds or fails, for `reaper explain`. `holds` is exactly `self.holds(raw)`."""
        value = lookup(raw, self.steps)
        observed = "missing" if value is _MISSING else show(value)
        if self.op is Op.EXISTS:
            needed = "exists" if self.operand else "missing"
        else:
            needed = (
                f"{_SYMBOL[self.op]} {self.pattern.text if self.pattern else show(self.operand)}"
            )
        return observed, needed, self._holds_on(value)

    def _holds_on(self, value: Any) -> bool:
        if self.op is Op.EXISTS:
            return (value is not _MISSING) is self.operand
        return value is not _MISSING and self._holds(value)

    def _holds(self, value: Any) -> bool:
        if self.op in _ORDER:
            return is_number(value) and _ORDER[self.op](value, self.operand)
        if self.op in (Op.GLOB, Op.REGEX):
            return (
                isinstance(value, str) and self.pattern is not None and self.pattern.matches(value)
            )
        if self.op in (Op.IN, Op.NOT_IN):
            found = any(are_equal(value, item) for item in self.operand)
            return found if self.op is Op.IN else not found
        return are_equal(value, self.operand) is (self.op is Op.EQ)


def lookup(raw: Any, steps: tuple[str, ...]) -> Any:
    """The value at a dotted path, or _MISSING (absent, null, or through a non-container)."""
    value = raw
    for step in steps:
        if isinstance(value, Mapping):
            value = value.get(step, _MISSING)
        elif isinstance(value, list | tuple) and step.isdecimal() and int(step) < len(value):
            value = value[int(step)]
        else:
            return _MISSING
        if value is None:
            return _MISSING
    return value


def is_number(value: Any) -> bool:
    """int or float, not bool (JSON true is not 1)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def are_equal(left: Any, right: Any) -> bool:
    """JSON equality: numbers by value, everything else only with its own type, recursively."""
    if is_number(left) and is_number(right):
        return bool(left == right)
    if isinstance(left, list | tuple) and isinstance(right, list | tuple):
        return len(left) == len(right) and all(map(are_equal, left, right))
    if isinstance(left, Mapping) and isinstance(right, Mapping):
        return left.keys() == right.keys() and all(are_equal(left[k], right[k]) for k in left)
    return type(left) is type(right) and bool(left == right)


def show(value: Any) -> str:
    """A value as facts print it: strings bare, everything else as JSON, shortened."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, list | tuple):
        text = "[" + ", ".join(show(item) for item in value) + "]"
    else:
        text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"


def compile_where(
    value: Any, path: tuple[PathPart, ...], problems: Problems
) -> tuple[WhereClause, ...]:
    """Compile a `where:` mapping; append problems instead of raising. Returns () if any problem."""
    if not isinstance(value, Mapping) or not value:
        problems.append((path, "expected a non-empty mapping of path to {operator: operand}"))
        return ()
    before = len(problems)
    clauses: list[WhereClause] = []
    for dotted, ops in value.items():
        clauses.extend(_compile_path(dotted, ops, (*path, str(dotted)), problems))
    return tuple(clauses) if len(problems) == before else ()


def _compile_path(
    dotted: Any, ops: Any, path: tuple[PathPart, ...], problems: Problems
) -> list[WhereClause]:
    if not isinstance(dotted, str) or not all(dotted.split(".")):
        problems.append((path, f"invalid path {dotted!r}: use dotted keys such as container.vcpus"))
        return []
    if not isinstance(ops, Mapping) or not ops:
        problems.append(
            (path, "expected a non-empty mapping of operator to operand, e.g. {gt: 50}")
        )
        return []
    clauses = []
    for name, operand in ops.items():
        clause = _compile_clause(dotted, name, operand, (*path, str(name)), problems)
        if clause is not None:
            clauses.append(clause)
    return clauses


def _compile_clause(
    dotted: str, name: Any, operand: Any, path: tuple[PathPart, ...], problems: Problems
) -> WhereClause | None:
    if name not in Op.__members__.values():
        problems.append((path, f"unknown operator {name!r}: use one of {', '.join(Op)}"))
        return None
    op = Op(name)
    problem = _check_operand(op, operand)
    if problem:
        problems.append((path, problem))
        return None
    steps = tuple(dotted.split("."))
    if op in (Op.GLOB, Op.REGEX):
        try:
            pattern = compile_glob(operand) if op is Op.GLOB else compile_regex(operand)
        except PatternError as exc:
            problems.append((path, str(exc)))
            return None
        return WhereClause(dotted, steps, op, operand, pattern)
    frozen = tuple(operand) if op in (Op.IN, Op.NOT_IN) else operand
    return WhereClause(dotted, steps, op, frozen)


def _check_operand(op: Op, operand: Any) -> str | None:
    """Why `operand` cannot work with `op`, or None."""
    if op in _ORDER:
        fits, need = is_number(operand) and not math.isnan(operand), "compares numbers"
    elif op in (Op.GLOB, Op.REGEX):
        fits, need = isinstance(operand, str), "takes a string"
    elif op is Op.EXISTS:
        fits, need = isinstance(operand, bool), "takes true or false"
    elif op in (Op.IN, Op.NOT_IN):
        fits, need = isinstance(operand, list) and bool(operand), "takes a non-empty list"
    else:
        fits, need = True, ""
    if not fits:
        return f"{op} {need}; got {operand!r}"
    items = operand if op in (Op.IN, Op.NOT_IN) else [operand]
    if op in (Op.EQ, Op.NE, Op.IN, Op.NOT_IN) and any(item is None for item in items):
        return f"{op}: null never matches (a null value is missing); use exists: false"
    return None
