"""Property tests: `evaluate` agrees with a plain reference predicate written here, independently
of reaper.policy.model / .selectors / .where / .globs (fnmatch for globs, `re` for the regexes,
which are chosen so that Python and RE2 agree, plain comparisons for the rest).

Default 300 examples per test; `HYPOTHESIS_PROFILE=slow` (tests/conftest.py) runs 10,000.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from reaper.jobs import PHASES, Job, phase_of
from reaper.policy.globs import PatternError, compile_glob
from reaper.policy.model import (
    PolicyCompileError,
    PolicySource,
    compile_policy,
    evaluate,
    prefilter,
)

PROPERTY = settings(max_examples=max(300, settings.default.max_examples), deadline=None)

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TYPES = ("aws_batch", "tapis", "sutro")
SOURCE = PolicySource("policies/p.yaml", "0" * 64, None, 0)
GROUPS = ("pending", "running")
MISSING = object()

# --- jobs ------------------------------------------------------------------------------------

short_text = st.text(alphabet="ab-", max_size=4)
scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([0.0, 1.5, -2.0, 2.0]),
    st.text(alphabet="ab1", max_size=3),
)
raw_records = st.fixed_dictionaries(
    {},
    optional={
        "cost": scalar,
        "model": scalar,
        "spec": st.one_of(scalar, st.fixed_dictionaries({}, optional={"vcpus": scalar})),
    },
)


@st.composite
def jobs(draw: st.DrawFn) -> Job:
    backend_type = draw(st.sampled_from(TYPES))
    table = PHASES[backend_type]
    active = [s for s, p in table.items() if p in GROUPS]
    status = draw(st.sampled_from(active) | st.sampled_from(sorted(table)))  # mostly active
    status = draw(st.sampled_from([status, status.lower(), status.title()]))
    created_ago = draw(st.integers(0, 300_000))
    started_ago = draw(st.none() | st.integers(0, created_ago))
    return Job(
        backend=draw(st.sampled_from(["b1", "b2"])),
        type=backend_type,
        id="j",
        name=draw(short_text),
        queue=draw(short_text),
        status=status,
        phase=phase_of(backend_type, status),
        created_at=NOW - timedelta(seconds=created_ago),
        started_at=None if started_ago is None else NOW - timedelta(seconds=started_ago),
        tags=draw(st.dictionaries(st.sampled_from(["team", "env", "keep"]), short_text)),
        raw=draw(raw_records),
    )


# --- policies --------------------------------------------------------------------------------

glob_token = st.sampled_from(["a", "b", "-", "*", "?", "[ab]", "[!a]", "[a-b]", "[-]"])
globs = st.lists(glob_token, min_size=1, max_size=4).map("".join) | st.just("*")
active_statuses = sorted({s for table in PHASES.values() for s, p in table.items() if p in GROUPS})
status_entry = st.one_of(
    st.sampled_from(GROUPS),
    st.builds(
        lambda s, f: f(s),
        st.sampled_from(active_statuses),
        st.sampled_from([str.upper, str.lower, str.title]),
    ),
)
operand_number = st.sampled_from([-2, 0, 1, 2, 1.5, -0.5])
clause = st.one_of(
    st.tuples(st.sampled_from(["eq", "ne"]), scalar.filter(lambda v: v is not None)),
    st.tuples(st.sampled_from(["lt", "le", "gt", "ge"]), operand_number),
    st.tuples(
        st.sampled_from(["in", "not_in"]),
        st.lists(scalar.filter(lambda v: v is not None), min_size=1, max_size=3),
    ),
    st.tuples(st.just("glob"), globs),
    st.tuples(st.just("regex"), st.sampled_from(["^a", "b$", "a+b", "^$", "1", "[ab]{2}"])),
    st.tuples(st.just("exists"), st.booleans()),
)
where = st.dictionaries(
    st.sampled_from(["cost", "model", "spec.vcpus", "spec", "absent.x"]),
    st.lists(clause, min_size=1, max_size=3, unique_by=lambda pair: pair[0]).map(dict),
    min_size=1,
    max_size=2,
)
SELECTORS = {
    "queues": st.lists(globs, min_size=1, max_size=3),
    "names": st.lists(globs, min_size=1, max_size=3),
    "statuses": st.lists(status_entry, min_size=1, max_size=3),
    "tags": st.dictionaries(
        st.sampled_from(["team", "env", "keep"]), globs, min_size=1, max_size=2
    ),
    "max_runtime": st.integers(1, 300_000),
    "max_pending": st.integers(1, 300_000),
    "max_age": st.integers(1, 300_000),
    "where": where,
}


@st.composite
def block(draw: st.DrawFn) -> dict[str, Any]:
    """One or two selectors: small blocks match often enough to exercise both outcomes."""
    keys = draw(st.lists(st.sampled_from(sorted(SELECTORS)), min_size=1, max_size=2, unique=True))
    return {key: draw(SELECTORS[key]) for key in keys}


@st.composite
def policies(draw: st.DrawFn) -> dict[str, Any]:
    raw: dict[str, Any] = {"name": "p", **draw(block())}
    if draw(st.integers(0, 3)) == 0:
        raw["exclude"] = draw(block())
    if draw(st.integers(0, 3)) == 0:
        raw["backends"] = draw(st.lists(st.sampled_from(["b1", "b2"]), min_size=1, unique=True))
    return raw


def as_yaml(raw: dict[str, Any]) -> dict[str, Any]:
    """Durations are drawn as seconds and written with a unit, as a policy file would."""
    out = {
        k: (f"{v}s" if k.startswith("max_") and k != "max_cancels" else v) for k, v in raw.items()
    }
    if "exclude" in out:
        out["exclude"] = as_yaml(out["exclude"])
    return out


# --- the reference predicate -----------------------------------------------------------------


def ref_lookup(raw: Any, dotted: str) -> Any:
    value = raw
    for step in dotted.split("."):
        if not isinstance(value, dict) or step not in value or value[step] is None:
            return MISSING
        value = value[step]
    return value


def ref_is_number(value: Any) -> bool:
    return type(value) in (int, float)


def ref_equal(left: Any, right: Any) -> bool:
    if ref_is_number(left) and ref_is_number(right):
        return left == right
    return type(left) is type(right) and left == right


def ref_clause(value: Any, op: str, operand: Any) -> bool:
    if op == "exists":
        return (value is not MISSING) == operand
    tests = {
        "lt": lambda: ref_is_number(value) and value < operand,
        "le": lambda: ref_is_number(value) and value <= operand,
        "gt": lambda: ref_is_number(value) and value > operand,
        "ge": lambda: ref_is_number(value) and value >= operand,
        "eq": lambda: ref_equal(value, operand),
        "ne": lambda: not ref_equal(value, operand),
        "in": lambda: any(ref_equal(value, item) for item in operand),
        "not_in": lambda: not any(ref_equal(value, item) for item in operand),
        "glob": lambda: isinstance(value, str) and fnmatchcase(value, operand),
        "regex": lambda: isinstance(value, str) and re.search(operand, value) is not None,
    }
    return value is not MISSING and bool(tests[op]())


def ref_status(job: Job, entry: str) -> bool:
    if entry in GROUPS:
        return job.phase == entry
    return job.status.upper() == entry.upper()


def ref_tag(job: Job, key: str, glob: str) -> bool:
    return key in job.tags and fnmatchcase(job.tags[key], glob)


def ref_block(raw: dict[str, Any], job: Job) -> bool:
    started, created = job.started_at, job.created_at
    checks = [
        ("queues", lambda v: any(fnmatchcase(job.queue, g) for g in v)),
        ("names", lambda v: any(fnmatchcase(job.name, g) for g in v)),
        ("statuses", lambda v: any(ref_status(job, s) for s in v)),
        ("tags", lambda v: all(ref_tag(job, key, glob) for key, glob in v.items())),
        # A runtime needs a started phase; a pending time a pending phase and no start.
        ("max_runtime", lambda v: started is not None and job.phase in ("running", "finishing")
         and (NOW - started).total_seconds() > v),
        ("max_pending", lambda v: started is None and job.phase == "pending"
         and (NOW - created).total_seconds() > v),
        ("max_age", lambda v: (NOW - created).total_seconds() > v),
        ("where", lambda v: all(
            ref_clause(ref_lookup(job.raw, path), op, operand)
            for path, ops in v.items() for op, operand in ops.items()
        )),
    ]  # fmt: skip
    return all(check(raw[key]) for key, check in checks if key in raw)


def ref_matches(raw: dict[str, Any], job: Job) -> bool:
    # A finishing job (Tapis ARCHIVING) only for a policy whose statuses name it.
    named = any(job.status.upper() == s.upper() for s in raw.get("statuses", []))
    if job.phase not in GROUPS and not (job.phase == "finishing" and named):
        return False
    if "backends" in raw and job.backend not in raw["backends"]:
        return False
    if not ref_block(raw, job):
        return False
    return "exclude" not in raw or not ref_block(raw["exclude"], job)


# --- properties ------------------------------------------------------------------------------


@PROPERTY
@given(policies(), jobs())
def test_evaluate_agrees_with_the_reference(raw: dict[str, Any], job: Job) -> None:
    policy = compile_policy(as_yaml(raw), SOURCE, TYPES)
    assert (evaluate(policy, job, NOW) is not None) == ref_matches(raw, job)


@PROPERTY
@given(policies(), jobs())
def test_prefilter_never_drops_a_job_that_would_match(raw: dict[str, Any], job: Job) -> None:
    policy = compile_policy(as_yaml(raw), SOURCE, TYPES)
    listed = dataclasses.replace(job, tags={}, raw={}, detailed=False)
    if evaluate(policy, job, NOW) is not None:
        assert prefilter(policy, listed, NOW)
        assert prefilter(policy, job, NOW)
    if policy.needs_detail:
        assert evaluate(policy, listed, NOW) is None
    else:
        assert prefilter(policy, listed, NOW) == (evaluate(policy, listed, NOW) is not None)


@PROPERTY
@given(st.text(alphabet="ab-!?*[]", max_size=8), st.text(alphabet="ab-!?*[]", max_size=5))
def test_globs_agree_with_fnmatch(glob: str, text: str) -> None:
    try:
        pattern = compile_glob(glob)
    except PatternError:
        return  # a backwards range: fnmatch silently matches nothing, reaper refuses the policy
    assert pattern.matches(text) == fnmatchcase(text, glob)


@PROPERTY
@given(
    raw_records,
    st.sampled_from(["cost", "model", "spec.vcpus", "spec", "absent.x"]),
    st.lists(clause, min_size=1, max_size=2, unique_by=lambda pair: pair[0]).map(dict),
)
def test_where_agrees_with_the_reference(
    record: dict[str, Any], path: str, ops: dict[str, Any]
) -> None:
    job = Job("b1", "sutro", "j", "n", "", "RUNNING", phase_of("sutro", "RUNNING"), NOW, raw=record)
    policy = compile_policy({"name": "p", "where": {path: ops}}, SOURCE, TYPES)
    expected = all(ref_clause(ref_lookup(record, path), op, operand) for op, operand in ops.items())
    assert (evaluate(policy, job, NOW) is not None) == expected


json_values = st.recursive(
    scalar | st.sampled_from(["1h", "*", "running", "RUNNING", "{policy}", "(?=x)", "[z-a]"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["eq", "gt", "in", "glob", "regex", "exists", "a.b"]), inner, max_size=3
        )
    ),
    max_leaves=8,
)


@PROPERTY
@given(
    st.dictionaries(
        st.sampled_from(
            [*SELECTORS, "name", "exclude", "reason", "backends", "dry_run", "max_cancels", "x"]
        ),
        json_values,
    )
)
def test_compile_policy_only_ever_raises_policy_compile_error(raw: dict[str, Any]) -> None:
    """Whatever reaches it (the schema should have caught most of it), compile_policy either
    returns a Policy or reports problems; it never crashes with a TypeError."""
    try:
        compile_policy(raw, SOURCE, TYPES)
    except PolicyCompileError as exc:
        assert exc.problems
