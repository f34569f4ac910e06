"""Each backend's record parser on anything a backend can return (issue 10): wrong types, NaN,
infinities, huge numbers, strings where objects belong, missing fields. The answer is always a
Job or a bad-record report, never an exception; a Job's time facts and a policy's evaluation
never raise either. 300 examples per parser in CI; `HYPOTHESIS_PROFILE=slow` runs 10,000
(tests/conftest.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from reaper.backends.records import read_record
from reaper.jobs import BAD_VALUE_CHARS, BadRecord, Job, JobKind
from reaper.policy.model import PolicySource, compile_policy, evaluate

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
# At least 300 examples, and whatever more the profile asks for (slow: 10,000).
EXAMPLES = settings(max_examples=max(300, settings.default.max_examples))
SOURCE = PolicySource("policies/p.yaml", "0" * 64, None, 0)
TYPES = ("aws_batch", "tapis", "sutro")
POLICIES = [
    compile_policy(raw, SOURCE, TYPES)
    for raw in (
        {"name": "runtime", "max_runtime": "1h"},
        {"name": "pending", "max_pending": "1h", "statuses": ["pending"]},
        {"name": "age", "max_age": "1d", "names": ["*"], "tags": {"team": "*"}},
        {"name": "where", "where": {"job_cost": {"gt": 1}}, "statuses": ["ARCHIVING"]},
        {"name": "service", "kinds": ["service"], "statuses": ["SCHEDULED"], "max_age": "1h"},
    )
]

scalars = (
    st.none() | st.booleans() | st.integers() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30)
)  # fmt: skip
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
iso_times = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
    timezones=st.none() | st.timezones(),
).map(lambda moment: moment.isoformat())  # fmt: skip
near_times = st.integers(-(10**6), 10**6).map(
    lambda seconds: (NOW + timedelta(seconds=seconds)).isoformat()
)
epoch_numbers = (
    st.integers(-(10**15), 10**15) | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0, 1e20, -1, 2**63, 1.7e12])
)  # fmt: skip
times = iso_times | near_times | epoch_numbers | json_values | st.just("yesterday")
statuses = (
    st.sampled_from(
        [
            "RUNNING",
            "running",
            "RUNNABLE",
            "SCHEDULED",
            "ARCHIVING",
            "QUEUED",
            "SUCCEEDED",
            "UNKNOWN",
            "",
            "x",
        ]
    )
    | json_values
)
ids = st.text(min_size=1, max_size=12) | json_values


def record(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """A dict with some of `fields` (each maybe missing) and some noise, or any JSON value."""
    optional = st.fixed_dictionaries({}, optional=fields)
    noise = st.dictionaries(st.text(max_size=8), json_values, max_size=3)
    combined = st.tuples(optional, noise).map(lambda pair: {**pair[1], **pair[0]})
    return combined | json_values


AWS = record({
    "jobId": ids, "status": statuses, "jobName": json_values, "createdAt": times,
    "startedAt": times, "tags": st.dictionaries(st.text(max_size=6), json_values) | json_values,
    "arrayProperties": json_values,
})  # fmt: skip
# A ListServiceJobs ServiceJobSummary or a DescribeServiceJob answer (botocore's batch model).
AWS_SERVICE = record({
    "jobId": ids, "status": statuses, "jobName": json_values, "createdAt": times,
    "startedAt": times | st.just(0), "scheduledAt": times,
    "tags": st.dictionaries(st.text(max_size=6), json_values) | json_values,
    "serviceJobType": st.just("SAGEMAKER_TRAINING") | json_values,
    "latestAttempt": json_values, "jobQueue": json_values,
})  # fmt: skip
TAPIS = record({
    "uuid": ids, "status": statuses, "name": json_values, "created": times,
    "remoteStarted": times, "execSystemLogicalQueue": json_values, "owner": json_values,
    "tags": st.lists(st.text(max_size=8)) | json_values,
})  # fmt: skip
SUTRO = record({
    "job_id": ids, "status": statuses, "name": json_values, "datetime_created": times,
    "created_at": times, "datetime_started": times, "job_cost": json_values,
})  # fmt: skip


def check(result: Job | BadRecord) -> None:
    assert isinstance(result, Job | BadRecord)
    if isinstance(result, BadRecord):
        assert len(result.value) <= BAD_VALUE_CHARS and result.field and result.problem
        return
    assert result.created_at.tzinfo is not None
    assert result.started_at is None or result.started_at.tzinfo is not None
    for measure in (result.runtime, result.pending, result.age):
        value = measure(NOW)
        assert value is None or value >= timedelta(0)
    result.time_problem(NOW)
    for policy in POLICIES:
        evaluate(policy, result, NOW)


@EXAMPLES
@given(AWS, st.booleans())
def test_aws_batch_records_give_a_job_or_a_bad_record(raw: Any, detailed: bool) -> None:
    check(read_record("aws_batch", "b", raw, queue="q", detailed=detailed))


@EXAMPLES
@given(AWS_SERVICE, st.booleans(), st.sampled_from([JobKind.SERVICE, None]))
def test_aws_batch_service_job_records_give_a_job_or_a_bad_record(
    raw: Any, detailed: bool, kind: JobKind | None
) -> None:
    result = read_record("aws_batch", "b", raw, queue="q", detailed=detailed, kind=kind)
    check(result)
    if isinstance(result, Job) and kind is JobKind.SERVICE:
        assert result.kind is JobKind.SERVICE


@EXAMPLES
@given(TAPIS)
def test_tapis_records_give_a_job_or_a_bad_record(raw: Any) -> None:
    check(read_record("tapis", "b", raw))


@EXAMPLES
@given(SUTRO)
def test_sutro_records_give_a_job_or_a_bad_record(raw: Any) -> None:
    check(read_record("sutro", "b", raw))


def test_the_examples_of_the_issue_are_bad_records_naming_the_field() -> None:
    cases = [
        ("sutro", {"job_id": "s", "status": "RUNNING", "datetime_created": NOW.isoformat(),
                   "datetime_started": float("inf")}, "datetime_started"),
        ("sutro", {"job_id": "s", "status": "RUNNING", "datetime_created": NOW.isoformat(),
                   "datetime_started": 1e20}, "datetime_started"),
        ("aws_batch", {"jobId": "a", "status": "RUNNING"}, "createdAt"),
        ("aws_batch", {"jobId": "a", "status": "SCHEDULED", "createdAt": 1.7e12,
                       "serviceJobType": "SAGEMAKER_TRAINING", "tags": ["team"]}, "tags"),
        ("aws_batch", {"jobId": "a", "status": "RUNNING", "createdAt": 1.7e12,
                       "serviceJobType": "SAGEMAKER_TRAINING", "startedAt": "soon"}, "startedAt"),
        ("tapis", {"uuid": "t", "status": "RUNNING", "created": NOW.isoformat(),
                   "tags": [1, 2]}, "tags"),
    ]  # fmt: skip
    for backend_type, raw, field in cases:
        bad = read_record(backend_type, "b", raw, queue="q")
        assert isinstance(bad, BadRecord) and bad.field == field, (backend_type, bad)
        assert bad.job_id == next(iter(raw.values()))


def test_a_service_job_record_is_a_service_job_and_a_zero_start_is_no_start() -> None:
    created = int((NOW - timedelta(hours=3)).timestamp() * 1000)
    raw = {"jobId": "s", "status": "SCHEDULED", "createdAt": created, "startedAt": 0,
           "serviceJobType": "SAGEMAKER_TRAINING"}  # fmt: skip
    job = read_record("aws_batch", "b", raw, queue="train")
    assert isinstance(job, Job) and job.kind is JobKind.SERVICE
    assert job.started_at is None and job.pending(NOW) == timedelta(hours=3)
    container = read_record("aws_batch", "b", {**raw, "serviceJobType": None} | {"startedAt": 0})
    assert isinstance(container, Job)
    assert container.kind is JobKind.SERVICE  # the field is there, whatever its value
    plain = {k: v for k, v in raw.items() if k != "serviceJobType"}
    job = read_record("aws_batch", "b", plain, queue="gpu")
    assert isinstance(job, Job) and job.kind is JobKind.CONTAINER
    assert job.started_at is not None  # a container job's 0 is a (1970, implausible) start
