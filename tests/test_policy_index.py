"""The sweep's fast path agrees with the plain one: `PolicyIndex.evaluate_all` / `may_match` give
exactly what `evaluate` / `prefilter` give, policy by policy, job by job; each selector's `holds`
and `compile_test` agree with its `explain`; the glob fast path agrees with RE2.

The jobs and policies are drawn with the generators of tests/test_policy_property.py, whose
reference predicate pins `evaluate` itself down."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from unittest import mock
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reaper.backends.memory import MemoryBackend
from reaper.engine.scan import scan_backend
from reaper.jobs import Job, phase_of
from reaper.policy import index as policy_index
from reaper.policy.globs import PatternError, compile_glob, match_stars
from reaper.policy.index import PolicyIndex
from reaper.policy.model import Policy, compile_policy, evaluate, prefilter
from tests.test_policy_property import NOW, PROPERTY, SOURCE, TYPES, as_yaml, jobs, policies

KEY_FIELDS = ("backend", "queue", "status", "phase", "detailed")


def compile_all(raws: list[dict[str, Any]]) -> list[Policy]:
    return [
        compile_policy(raw, dataclasses.replace(SOURCE, position=i), TYPES)
        for i, raw in enumerate(raws)
    ]


@st.composite
def job_groups(draw: st.DrawFn) -> list[Job]:
    """Jobs in a few groups that share their index key (backend, queue, status, phase, detail),
    so that a cached plan is reused for jobs it was not built from."""
    out: list[Job] = []
    for _ in range(draw(st.integers(1, 3))):
        exemplar = draw(jobs())
        if draw(st.booleans()):
            exemplar = dataclasses.replace(exemplar, detailed=False)
        key = {name: getattr(exemplar, name) for name in KEY_FIELDS}
        others = draw(st.lists(jobs(), max_size=3))
        out += [exemplar, *(dataclasses.replace(job, **key) for job in others)]
    return draw(st.permutations(out))


def plain_evaluate_all(policies: list[Policy], job: Job, now: datetime) -> list[Any]:
    return [m for p in policies if (m := evaluate(p, job, now)) is not None]


@contextmanager
def name_lookups(always: bool) -> Iterator[None]:
    """With a handful of policies the index would rarely look names up: `always` forces it."""
    if not always:
        yield
        return
    with mock.patch.object(policy_index, "_PLANS_PER_LOOKUP", 0):
        yield


@pytest.mark.parametrize("always_look_up_names", [False, True])
@PROPERTY
@given(st.lists(policies(), min_size=1, max_size=4), job_groups())
def test_the_index_answers_as_evaluate_and_prefilter_do(
    always_look_up_names: bool, raws: list[dict[str, Any]], group: list[Job]
) -> None:
    """evaluate_all = evaluate of each policy; may_match = prefilter of some policy (asked of
    the job and of its undetailed listing)."""
    compiled = compile_all([as_yaml(raw) for raw in raws])
    with name_lookups(always_look_up_names):
        index = PolicyIndex(compiled, NOW)
    for job in group:
        assert index.evaluate_all(job) == plain_evaluate_all(compiled, job, NOW)
        listed = dataclasses.replace(job, tags={}, raw={}, detailed=False)
        for candidate in (job, listed):
            expected = any(prefilter(p, candidate, NOW) for p in compiled)
            assert index.may_match(candidate) is expected


@PROPERTY
@given(policies(), jobs())
def test_holds_and_compile_test_agree_with_explain(raw: dict[str, Any], job: Job) -> None:
    policy = compile_policy(as_yaml(raw), SOURCE, TYPES)
    blocks = [policy.selectors] + ([policy.exclude] if policy.exclude else [])
    for block in blocks:
        assert block.holds(job, NOW) is (block.explain(job, NOW) is not None)
        for selector in block.selectors:
            expected = selector.explain(job, NOW) is not None
            assert selector.holds(job, NOW) is expected
            assert selector.compile_test(NOW)(job) is expected


def test_many_name_globs_on_one_key_are_looked_up_by_their_start() -> None:
    """60 policies on the same queue and status, told apart by name: names that start with
    none, one or several of the globs' starts, are shorter than them, or are not ASCII."""
    raws = [{"name": f"p{k}", "queues": ["gpu"], "names": [f"train-{k}*"]} for k in range(50)]
    raws += [{"name": f"q{k}", "queues": ["gpu"], "names": [f"ev{k}?-*", "x"]} for k in range(10)]
    raws.append({"name": "any", "queues": ["gpu"], "names": ["*-1"], "max_age": "1h"})
    raws.append({"name": "spelt", "queues": ["gpu"], "names": ["train-1\\udc00*"]})
    compiled = compile_all(raws)
    index = PolicyIndex(compiled, NOW)
    names = ["train-1", "train-12", "train-123", "train-", "trai", "", "ev11-a", "ev1-", "x",
             "y-1", "train-1\udc00", "train-1\\udc00", "tráin-1", "ev3é-1"]  # fmt: skip
    for name in names:
        job = dataclasses.replace(running_job(NOW - timedelta(hours=2)), name=name)
        assert index.evaluate_all(job) == plain_evaluate_all(compiled, job, NOW), name
    fresh = dataclasses.replace(running_job(NOW), name="train-12")  # too young for "any"
    assert [m.policy.name for m in index.evaluate_all(fresh)] == ["p1", "p12"]
    bucket = next(iter(index._full.values()))
    assert bucket.by_start  # the lookups were used, not only the plain path


# --- duration cutoffs at their edges ---------------------------------------------------------


def running_job(started: datetime, created: datetime | None = None) -> Job:
    return Job(
        "b1", "aws_batch", "j", "train-1", "gpu", "RUNNING", phase_of("aws_batch", "RUNNING"),
        created_at=created or started, started_at=started,
    )  # fmt: skip


def limit_policy(key: str, limit: str) -> Policy:
    return compile_policy({"name": "p", key: limit}, SOURCE, TYPES)


@pytest.mark.parametrize("key", ["max_runtime", "max_age"])
@pytest.mark.parametrize(
    "now",
    [
        NOW,
        NOW.astimezone(timezone(timedelta(hours=-5))),  # fixed offset: the cutoff path
        NOW.astimezone(ZoneInfo("Europe/Paris")),  # daylight saving time: the plain path
    ],
)
@pytest.mark.parametrize("offset_us", [-1, 0, 1])
def test_a_limit_holds_from_one_microsecond_past_it(
    key: str, now: datetime, offset_us: int
) -> None:
    policy = limit_policy(key, "1h")
    job = running_job(NOW - timedelta(hours=1, microseconds=offset_us))
    expected = offset_us > 0  # runtime 1h exactly is not over a 1h limit
    assert (evaluate(policy, job, now) is not None) is expected
    assert bool(PolicyIndex([policy], now).evaluate_all(job)) is expected


def test_a_limit_before_year_one_never_holds() -> None:
    policy = limit_policy("max_age", "99999999w")  # NOW minus this is before datetime.min
    job = running_job(datetime(1, 1, 1, tzinfo=UTC))
    assert evaluate(policy, job, NOW) is None
    assert PolicyIndex([policy], NOW).evaluate_all(job) == []


def test_a_daylight_saving_zone_on_both_sides_agrees_with_evaluate() -> None:
    """Same zone object on both sides: datetime subtracts wall clocks; the index must too."""
    paris = ZoneInfo("Europe/Paris")
    now = datetime(2025, 3, 30, 12, 0, tzinfo=paris)  # the clocks went forward at 02:00
    policy = limit_policy("max_runtime", "10h")
    for hour in range(0, 4):
        job = running_job(datetime(2025, 3, 30, hour, 30, tzinfo=paris))
        assert PolicyIndex([policy], now).evaluate_all(job) == plain_evaluate_all(
            [policy], job, now
        )


def test_a_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        PolicyIndex([], datetime(2025, 3, 1))


def test_a_job_with_an_unhashable_field_is_evaluated_the_plain_way() -> None:
    policy = compile_policy({"name": "p", "queues": ["*"], "max_age": "1h"}, SOURCE, TYPES)
    job = dataclasses.replace(running_job(NOW - timedelta(hours=2)), queue=["gpu"])  # type: ignore[arg-type]
    matches = PolicyIndex([policy], NOW).evaluate_all(job)
    assert matches == plain_evaluate_all([policy], job, NOW)
    assert len(matches) == 1


# --- the glob fast path ----------------------------------------------------------------------

star_globs = st.lists(st.sampled_from(["a", "b", "ab", "-", "*", "é"]), max_size=5).map("".join)


@PROPERTY
@given(star_globs, st.text(alphabet="ab-é\udc00", max_size=6))
def test_star_globs_agree_with_re2(glob: str, text: str) -> None:
    pattern = compile_glob(glob)
    assert pattern.stars is not None
    encoded = text.encode("utf-8", "backslashreplace").decode("utf-8")
    by_re2 = pattern.regex.fullmatch(encoded) is not None
    assert pattern.matches(text) is by_re2
    if text.isascii():
        assert match_stars(pattern.stars, text) is by_re2


@pytest.mark.parametrize(
    ("glob", "stars"),
    [("train-*", ("train-", "")), ("a*b*c", ("a", "b", "c")), ("x", ("x",)), ("*", ("", "")),
     ("job-?", None), ("[ab]*", None), ("a[*", None)],
)  # fmt: skip
def test_only_globs_of_literals_and_stars_take_the_fast_path(glob: str, stars: Any) -> None:
    assert compile_glob(glob).stars == stars


@PROPERTY
@given(
    st.text(alphabet="ab-!?*[]\\é", max_size=8), st.text(alphabet="ab-!?*[]\\é\udc00", max_size=6)
)
def test_every_text_a_glob_matches_starts_with_its_prefix(glob: str, text: str) -> None:
    try:
        pattern = compile_glob(glob)
    except PatternError:
        return
    if pattern.matches(text):
        assert text.startswith(pattern.prefix)


def test_a_lone_surrogate_is_matched_as_re2_sees_it() -> None:
    """RE2 sees `\\udc00` spelt out (reaper.policy.globs._encodable); the fast path agrees."""
    assert compile_glob("*c00").matches("a\udc00")
    assert compile_glob("a\\udc00").matches("a\udc00")
    assert not compile_glob("a*").matches("b\udc00")
    spelt = compile_glob("x\\udc00-*")  # a backslash in the glob: no literal start past it
    assert spelt.matches("x\udc00-1")
    assert spelt.prefix == "x"


# --- the scan uses it ------------------------------------------------------------------------


def aws_job(job_id: str, name: str, queue: str, status: str, *, hours: int, team: str) -> Job:
    since = NOW - timedelta(hours=hours)
    started = since if status == "RUNNING" else None
    phase = phase_of("aws_batch", status)
    return Job("x", "aws_batch", job_id, name, queue, status, phase, since, started, {"team": team})


def test_scan_backend_finds_what_evaluate_finds() -> None:
    """An AWS-like listing (undetailed, tags only after enrich) through the index."""
    raws: list[dict[str, Any]] = [
        {"name": "gpu-cap", "queues": ["gpu-*"], "statuses": ["running"], "max_runtime": "12h"},
        {"name": "ml-cap", "tags": {"team": "ml"}, "max_age": "1d",
         "exclude": {"names": ["*-keep"]}},
        {"name": "queued", "statuses": ["pending"], "max_pending": "2h", "queues": ["cpu"]},
    ]  # fmt: skip
    compiled = compile_all(raws)
    stored = [
        aws_job("j0", "train-a", "gpu-1", "RUNNING", hours=13, team="web"),
        aws_job("j1", "train-b", "gpu-1", "RUNNING", hours=11, team="ml"),
        aws_job("j2", "etl-keep", "cpu", "RUNNING", hours=30, team="ml"),  # excluded
        aws_job("j3", "etl-c", "cpu", "RUNNABLE", hours=30, team="ml"),
        aws_job("j4", "etl-d", "cpu", "RUNNABLE", hours=1, team="web"),
        aws_job("j5", "old", "cpu", "SUCCEEDED", hours=90, team="ml"),
    ]
    backend = MemoryBackend("batch", "aws_batch", stored, page_size=2, listing_detailed=False)
    scan = scan_backend(backend, compiled, NOW)
    assert backend.calls["enrich"] == 1
    assert scan.active == 5
    found = {c.job.id: [m.policy.name for m in c.matches] for c in scan.candidates}
    expected = {}
    for job in backend.enrich([j for j in stored if j.phase != "terminal"]):
        if names := [m.policy.name for m in plain_evaluate_all(compiled, job, NOW)]:
            expected[job.id] = names
    assert found == expected == {"j0": ["gpu-cap"], "j3": ["ml-cap", "queued"]}
