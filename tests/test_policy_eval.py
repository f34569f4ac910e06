"""Table-driven evaluation of every selector on realistic AWS Batch, Tapis and Sutro jobs."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reaper.jobs import Job, phase_of
from reaper.policy.globs import PatternError, compile_glob, compile_regex
from reaper.policy.model import (
    Match,
    Policy,
    PolicyCompileError,
    PolicySet,
    PolicySource,
    compile_policy,
    evaluate,
    prefilter,
)
from reaper.policy.reasons import render_reason

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TYPES = ("aws_batch", "tapis", "sutro")
SOURCE = PolicySource("policies/test.yaml", "0" * 64, None, 0)


def ago(**delta: float) -> datetime:
    return NOW - timedelta(**delta)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def aws_job(
    name: str, queue: str, status: str, created: datetime, started: datetime | None,
    *, tags: dict[str, str], **extra: Any,
) -> Job:  # fmt: skip
    """A DescribeJobs JobDetail, normalised as the AWS Batch backend does (docs/backends.md)."""
    job_id = f"{zlib.crc32(name.encode()):08x}-1c2d-4e5f-9a0b-{len(name):012d}"
    raw: dict[str, Any] = {
        "jobArn": f"arn:aws:batch:us-east-1:123456789012:job/{job_id}",
        "jobName": name,
        "jobId": job_id,
        "jobQueue": f"arn:aws:batch:us-east-1:123456789012:job-queue/{queue}",
        "status": status,
        "attempts": [],
        "createdAt": ms(created),
        "dependsOn": [],
        "jobDefinition": "arn:aws:batch:us-east-1:123456789012:job-definition/train:7",
        "parameters": {},
        "container": {
            "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/train:2025.02",
            "vcpus": 8,
            "memory": 61440,
            "command": ["python", "train.py", "--epochs", "90"],
            "resourceRequirements": [{"type": "GPU", "value": "1"}],
            "logStreamName": None,
        },
        "tags": tags,
        "platformCapabilities": ["EC2"],
        "propagateTags": True,
        **extra,
    }
    if started is not None:
        raw["startedAt"] = ms(started)
    return Job(
        backend="batch-prod", type="aws_batch", id=job_id, name=name, queue=queue, status=status,
        phase=phase_of("aws_batch", status), created_at=created, started_at=started,
        tags=tags, raw=raw,
    )  # fmt: skip


def tapis_job(
    name: str, queue: str, status: str, created: datetime, started: datetime | None,
    *, tag_list: list[str],
) -> Job:  # fmt: skip
    """A Tapis Jobs v3 record (`select=allAttributes`), normalised as the Tapis backend does."""
    uuid = f"5c1e7a2b-{len(name):04d}-4a8e-b3a1-2f0c9d7e6b5a-007"
    raw = {
        "uuid": uuid, "name": name, "owner": "alice", "tenant": "tacc",
        "description": "molecular dynamics sweep", "status": status,
        "appId": "gromacs", "appVersion": "2023.3", "execSystemId": "frontera",
        "execSystemLogicalQueue": queue, "created": iso(created), "remoteStarted": iso(started),
        "remoteEnded": None, "nodeCount": 4, "coresPerNode": 56, "memoryMB": 192000,
        "maxMinutes": 2880, "isMpi": False, "tags": tag_list, "notes": {"project": "md-2025"},
    }  # fmt: skip
    tags = dict(tag.partition("=")[::2] for tag in tag_list)
    return Job(
        backend="tacc", type="tapis", id=uuid, name=name, queue=queue, status=status,
        phase=phase_of("tapis", status), created_at=created, started_at=started, tags=tags,
        owner="alice", raw=raw,
    )  # fmt: skip


def sutro_job(status: str, created: datetime, started: datetime | None, **extra: Any) -> Job:
    """A Sutro `list-jobs` record, normalised as the Sutro backend does (no queue, no tags)."""
    raw = {
        "job_id": "batch_7f3a9c", "name": "eval-batch", "status": status,
        "model": "llama-3.1-70b", "datetime_created": iso(created),
        "datetime_started": iso(started), "datetime_completed": None, "num_rows": 120000,
        "job_cost": 75, "input_tokens": 48000000, "output_tokens": None, "failure_reason": None,
        **extra,
    }  # fmt: skip
    return Job(
        backend="sutro", type="sutro", id="batch_7f3a9c", name="eval-batch", queue="",
        status=status, phase=phase_of("sutro", status), created_at=created, started_at=started,
        raw=raw,
    )  # fmt: skip


ML = {"team": "ml", "env": "prod", "cost-center": ""}
AWS_RUNNING = aws_job(
    "train-resnet", "gpu-a", "RUNNING", ago(hours=14), ago(hours=13, minutes=2), tags=ML
)
AWS_STARTING = aws_job("train-vit", "gpu-b", "STARTING", ago(minutes=20), None, tags=ML)
AWS_RUNNABLE = aws_job("etl-nightly", "cpu", "RUNNABLE", ago(days=3), None, tags={"env": "dev"})
AWS_SUCCEEDED = aws_job("train-old", "gpu-a", "SUCCEEDED", ago(days=9), ago(days=8), tags=ML)
TAPIS_RUNNING = tapis_job(
    "sim-42", "normal", "RUNNING", ago(hours=30), ago(hours=26), tag_list=["team=hpc", "keep"]
)
TAPIS_QUEUED = tapis_job("sim-43", "normal", "QUEUED", ago(hours=50), None, tag_list=["team=hpc"])
TAPIS_BLOCKED = tapis_job("sim-44", "large", "BLOCKED", ago(hours=9), ago(hours=3), tag_list=[])
TAPIS_FINISHED = tapis_job("sim-40", "normal", "FINISHED", ago(days=5), ago(days=4), tag_list=[])
SUTRO_RUNNING = sutro_job("running", ago(hours=8), ago(hours=2))  # older lower-case spelling
SUTRO_QUEUED = sutro_job("QUEUED", ago(hours=7), None, job_cost=None)
SUTRO_CANCELLING = sutro_job("CANCELLING", ago(days=2), ago(days=1))
SUTRO_UNKNOWN = sutro_job("UNKNOWN", ago(days=2), None)

# (policy selectors, job, the facts expected, or None for "no match")
CASES: list[tuple[str, dict[str, Any], Job, list[str] | None]] = [
    # queues: globs, any may match
    ("aws-queue", {"queues": ["gpu-*"]}, AWS_RUNNING, ["queue gpu-a ~ gpu-*"]),
    ("aws-queue-second", {"queues": ["cpu", "gpu-?"]}, AWS_RUNNING, ["queue gpu-a ~ gpu-?"]),
    ("aws-queue-miss", {"queues": ["cpu", "gpu"]}, AWS_RUNNING, None),
    ("tapis-queue", {"queues": ["norm*"]}, TAPIS_RUNNING, ["queue normal ~ norm*"]),
    ("sutro-queue-star", {"queues": ["*"]}, SUTRO_RUNNING, ['queue "" ~ *']),
    ("sutro-queue-miss", {"queues": ["gpu-*"]}, SUTRO_RUNNING, None),
    # names
    ("aws-name", {"names": ["train-*"]}, AWS_RUNNING, ["name train-resnet ~ train-*"]),
    ("aws-name-suffix", {"names": ["*-nightly"]}, AWS_RUNNABLE, ["name etl-nightly ~ *-nightly"]),
    ("tapis-name-set", {"names": ["sim-[0-9]*"]}, TAPIS_RUNNING, ["name sim-42 ~ sim-[0-9]*"]),
    ("tapis-name-negated", {"names": ["sim-[!0-9]*"]}, TAPIS_RUNNING, None),
    ("sutro-name", {"names": ["eval-*"]}, SUTRO_RUNNING, ["name eval-batch ~ eval-*"]),
    ("sutro-name-miss", {"names": ["batch-?"]}, SUTRO_RUNNING, None),
    # statuses: lower-case groups, or native names case-insensitively
    ("aws-group-running", {"statuses": ["running"]}, AWS_RUNNING, ["status RUNNING in running"]),
    ("aws-group-starting", {"statuses": ["running"]}, AWS_STARTING, ["status STARTING in running"]),
    ("aws-native-is-exact", {"statuses": ["RUNNING"]}, AWS_STARTING, None),
    ("aws-group-pending", {"statuses": ["pending"]}, AWS_RUNNABLE, ["status RUNNABLE in pending"]),
    ("aws-native-lower", {"statuses": ["runnable"]}, AWS_RUNNABLE, ["status RUNNABLE = runnable"]),
    ("aws-native-miss", {"statuses": ["SUBMITTED"]}, AWS_RUNNABLE, None),
    ("tapis-blocked-pending", {"statuses": ["pending"]}, TAPIS_BLOCKED,
     ["status BLOCKED in pending"]),
    ("tapis-group-miss", {"statuses": ["running"]}, TAPIS_QUEUED, None),
    ("tapis-native", {"statuses": ["Queued"]}, TAPIS_QUEUED, ["status QUEUED = Queued"]),
    ("sutro-native-case", {"statuses": ["RUNNING"]}, SUTRO_RUNNING, ["status running = RUNNING"]),
    ("sutro-mixed", {"statuses": ["queued", "running"]}, SUTRO_RUNNING,
     ["status running in running"]),
    ("sutro-pending-miss", {"statuses": ["pending"]}, SUTRO_RUNNING, None),
    # tags: every key present, value glob ("*" = any value, even empty)
    ("aws-tag", {"tags": {"team": "ml"}}, AWS_RUNNING, ["tag team=ml ~ ml"]),
    ("aws-tags-all", {"tags": {"team": "m*", "env": "prod"}}, AWS_RUNNING,
     ["tag team=ml ~ m*", "tag env=prod ~ prod"]),
    ("aws-tags-one-fails", {"tags": {"team": "ml", "env": "dev"}}, AWS_RUNNING, None),
    ("aws-tag-star-empty", {"tags": {"cost-center": "*"}}, AWS_RUNNING, ['tag cost-center="" ~ *']),
    ("aws-tag-absent", {"tags": {"owner": "*"}}, AWS_RUNNING, None),
    ("tapis-bare-tag", {"tags": {"keep": "*"}}, TAPIS_RUNNING, ['tag keep="" ~ *']),
    ("tapis-tag-miss", {"tags": {"team": "ml"}}, TAPIS_RUNNING, None),
    ("sutro-no-tags", {"tags": {"team": "*"}}, SUTRO_RUNNING, None),
    # max_runtime: started, now - started_at > limit
    ("aws-runtime", {"max_runtime": "12h"}, AWS_RUNNING, ["runtime 13h02m > max_runtime 12h"]),
    ("aws-runtime-under", {"max_runtime": "14h"}, AWS_RUNNING, None),
    ("aws-runtime-never-started", {"max_runtime": "1m"}, AWS_RUNNABLE, None),
    ("aws-runtime-starting", {"max_runtime": "1s"}, AWS_STARTING, None),
    ("tapis-runtime", {"max_runtime": "1d"}, TAPIS_RUNNING, ["runtime 1d02h > max_runtime 1d"]),
    # BLOCKED is a pending phase: a start recorded there (a job put back in the queue) is no
    # runtime, and the job is not pending either (reaper.jobs.Job.started_if_plausible).
    ("tapis-runtime-blocked", {"max_runtime": "2h30m"}, TAPIS_BLOCKED, None),
    ("sutro-runtime-equal-is-not-over", {"max_runtime": "2h"}, SUTRO_RUNNING, None),
    ("sutro-runtime", {"max_runtime": "90m"}, SUTRO_RUNNING, ["runtime 2h00m > max_runtime 90m"]),
    ("sutro-runtime-queued", {"max_runtime": "1s"}, SUTRO_QUEUED, None),
    # max_pending: not started, now - created_at > limit
    ("aws-pending", {"max_pending": "2d"}, AWS_RUNNABLE, ["pending 3d00h > max_pending 2d"]),
    ("aws-pending-started", {"max_pending": "1h"}, AWS_RUNNING, None),
    # STARTING is in the running group: never "pending", even without a startedAt.
    ("aws-pending-starting", {"max_pending": "15m"}, AWS_STARTING, None),
    ("tapis-pending", {"max_pending": "1d"}, TAPIS_QUEUED, ["pending 2d02h > max_pending 1d"]),
    ("tapis-pending-blocked-started", {"max_pending": "1h"}, TAPIS_BLOCKED, None),
    ("sutro-pending", {"max_pending": "6h"}, SUTRO_QUEUED, ["pending 7h00m > max_pending 6h"]),
    ("sutro-pending-under", {"max_pending": "1w"}, SUTRO_QUEUED, None),
    # max_age: now - created_at > limit, whatever the state
    ("aws-age", {"max_age": "1d"}, AWS_RUNNABLE, ["age 3d00h > max_age 1d"]),
    ("aws-age-under", {"max_age": "1d"}, AWS_RUNNING, None),
    ("tapis-age", {"max_age": "1d"}, TAPIS_RUNNING, ["age 1d06h > max_age 1d"]),
    ("sutro-age-running", {"max_age": "6h"}, SUTRO_RUNNING, ["age 8h00m > max_age 6h"]),
    ("sutro-age-queued", {"max_age": "6h"}, SUTRO_QUEUED, ["age 7h00m > max_age 6h"]),
    # where: each operator, dotted paths, missing paths, strict types
    ("sutro-gt", {"where": {"job_cost": {"gt": 50}}}, SUTRO_RUNNING, ["where job_cost 75 > 50"]),
    ("sutro-gt-equal", {"where": {"job_cost": {"gt": 75}}}, SUTRO_RUNNING, None),
    ("sutro-ge", {"where": {"job_cost": {"ge": 75}}}, SUTRO_RUNNING, ["where job_cost 75 >= 75"]),
    ("sutro-lt", {"where": {"job_cost": {"lt": 75.5}}}, SUTRO_RUNNING,
     ["where job_cost 75 < 75.5"]),
    ("sutro-le", {"where": {"job_cost": {"le": 74}}}, SUTRO_RUNNING, None),
    ("sutro-range", {"where": {"job_cost": {"gt": 50, "le": 100}}}, SUTRO_RUNNING,
     ["where job_cost 75 > 50", "where job_cost 75 <= 100"]),
    ("sutro-gt-null-cost", {"where": {"job_cost": {"gt": 0}}}, SUTRO_QUEUED, None),
    ("sutro-eq", {"where": {"model": {"eq": "llama-3.1-70b"}}}, SUTRO_RUNNING,
     ["where model llama-3.1-70b = llama-3.1-70b"]),
    ("sutro-ne", {"where": {"model": {"ne": "llama-3.1-8b"}}}, SUTRO_RUNNING,
     ["where model llama-3.1-70b != llama-3.1-8b"]),
    ("sutro-ne-missing", {"where": {"priority": {"ne": 1}}}, SUTRO_RUNNING, None),
    ("sutro-glob", {"where": {"model": {"glob": "llama-*"}}}, SUTRO_RUNNING,
     ["where model llama-3.1-70b ~ llama-*"]),
    ("sutro-glob-number", {"where": {"job_cost": {"glob": "7*"}}}, SUTRO_RUNNING, None),
    ("sutro-regex", {"where": {"model": {"regex": r"3\.1-\d+b$"}}}, SUTRO_RUNNING,
     [r"where model llama-3.1-70b =~ 3\.1-\d+b$"]),
    ("sutro-regex-miss", {"where": {"model": {"regex": "^mistral"}}}, SUTRO_RUNNING, None),
    ("sutro-exists-false-null", {"where": {"datetime_started": {"exists": False}}}, SUTRO_QUEUED,
     ["where datetime_started missing"]),
    ("sutro-exists-true-null", {"where": {"datetime_started": {"exists": True}}}, SUTRO_QUEUED,
     None),
    ("aws-in", {"where": {"status": {"in": ["STARTING", "RUNNING"]}}}, AWS_RUNNING,
     ["where status RUNNING in [STARTING, RUNNING]"]),
    ("aws-not-in", {"where": {"status": {"not_in": ["STARTING", "RUNNING"]}}}, AWS_RUNNING, None),
    ("aws-not-in-holds", {"where": {"platformCapabilities.0": {"not_in": ["FARGATE"]}}},
     AWS_RUNNING, ["where platformCapabilities.0 EC2 not in [FARGATE]"]),
    ("aws-dotted", {"where": {"container.vcpus": {"ge": 8}}}, AWS_RUNNING,
     ["where container.vcpus 8 >= 8"]),
    ("aws-dotted-index", {"where": {"container.resourceRequirements.0.value": {"eq": "1"}}},
     AWS_RUNNING, ["where container.resourceRequirements.0.value 1 = 1"]),
    ("aws-exists", {"where": {"container.vcpus": {"exists": True}}}, AWS_RUNNING,
     ["where container.vcpus exists"]),
    ("aws-exists-false-present", {"where": {"container.vcpus": {"exists": False}}}, AWS_RUNNING,
     None),
    ("aws-missing-path", {"where": {"container.gpus": {"lt": 1}}}, AWS_RUNNING, None),
    ("aws-missing-exists-false", {"where": {"container.gpus": {"exists": False}}}, AWS_RUNNING,
     ["where container.gpus missing"]),
    ("aws-through-a-string", {"where": {"jobName.length": {"exists": True}}}, AWS_RUNNING, None),
    ("aws-index-out-of-range", {"where": {"attempts.0": {"exists": True}}}, AWS_RUNNING, None),
    ("aws-null-leaf", {"where": {"container.logStreamName": {"exists": False}}}, AWS_RUNNING,
     ["where container.logStreamName missing"]),
    ("tapis-number-eq-float", {"where": {"nodeCount": {"eq": 4.0}}}, TAPIS_RUNNING,
     ["where nodeCount 4 = 4.0"]),
    ("tapis-number-vs-string", {"where": {"nodeCount": {"eq": "4"}}}, TAPIS_RUNNING, None),
    ("tapis-bool-eq", {"where": {"isMpi": {"eq": False}}}, TAPIS_RUNNING,
     ["where isMpi false = false"]),
    ("tapis-bool-not-zero", {"where": {"isMpi": {"eq": 0}}}, TAPIS_RUNNING, None),
    ("tapis-bool-not-number", {"where": {"isMpi": {"lt": 1}}}, TAPIS_RUNNING, None),
    ("tapis-string-not-number", {"where": {"appVersion": {"gt": 2000}}}, TAPIS_RUNNING, None),
    ("tapis-in-bool", {"where": {"isMpi": {"in": [0, "false"]}}}, TAPIS_RUNNING, None),
    ("tapis-list-eq", {"where": {"tags": {"eq": ["team=hpc", "keep"]}}}, TAPIS_RUNNING,
     ["where tags [team=hpc, keep] = [team=hpc, keep]"]),
    ("tapis-dotted-mapping", {"where": {"notes.project": {"glob": "md-*"}}}, TAPIS_RUNNING,
     ["where notes.project md-2025 ~ md-*"]),
    # exclude: same selectors; a job matching the whole block is not matched
    ("aws-exclude-name", {"queues": ["gpu-*"], "exclude": {"names": ["train-*"]}}, AWS_RUNNING,
     None),
    ("aws-exclude-tag-misses", {"queues": ["gpu-*"], "exclude": {"tags": {"env": "dev"}}},
     AWS_RUNNING, ["queue gpu-a ~ gpu-*"]),
    ("aws-exclude-needs-all", {"queues": ["gpu-*"],
                               "exclude": {"names": ["train-*"], "queues": ["cpu"]}},
     AWS_RUNNING, ["queue gpu-a ~ gpu-*"]),
    ("aws-exclude-nightly", {"max_pending": "1d", "exclude": {"names": ["*-nightly"]}},
     AWS_RUNNABLE, None),
    ("tapis-exclude-keep", {"max_age": "1h", "exclude": {"tags": {"keep": "*"}}}, TAPIS_RUNNING,
     None),
    ("tapis-exclude-status", {"max_age": "1h", "exclude": {"statuses": ["pending"]}}, TAPIS_QUEUED,
     None),
    ("sutro-exclude-where", {"max_age": "1h", "exclude": {"where": {"model": {"glob": "llama-*"}}}},
     SUTRO_RUNNING, None),
    ("sutro-exclude-duration", {"max_age": "1h", "exclude": {"max_runtime": "3h"}}, SUTRO_RUNNING,
     ["age 8h00m > max_age 1h"]),
    # terminal and unknown-phase jobs never match
    ("aws-terminal", {"queues": ["*"]}, AWS_SUCCEEDED, None),
    ("tapis-terminal", {"max_age": "1s"}, TAPIS_FINISHED, None),
    ("sutro-cancelling", {"max_age": "1s"}, SUTRO_CANCELLING, None),
    ("sutro-unknown", {"max_age": "1s"}, SUTRO_UNKNOWN, None),
    # all selectors at once (docs/policies.md's first example)
    ("aws-all", {"queues": ["gpu-*"], "statuses": ["running"], "names": ["train-*"],
                 "tags": {"team": "ml"}, "max_runtime": "12h"}, AWS_RUNNING,
     ["runtime 13h02m > max_runtime 12h", "queue gpu-a ~ gpu-*", "name train-resnet ~ train-*",
      "status RUNNING in running", "tag team=ml ~ ml"]),
    ("aws-all-one-fails", {"queues": ["gpu-*"], "names": ["train-*"], "max_runtime": "14h"},
     AWS_RUNNING, None),
]  # fmt: skip


def make_policy(selectors: dict[str, Any], **fields: Any) -> Policy:
    return compile_policy({"name": "p", **selectors, **fields}, SOURCE, TYPES)


@pytest.mark.parametrize(
    ("selectors", "job", "facts"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_evaluate(selectors: dict[str, Any], job: Job, facts: list[str] | None) -> None:
    match = evaluate(make_policy(selectors), job, NOW)
    assert (None if match is None else [fact.text for fact in match.facts]) == facts


@pytest.mark.parametrize(
    ("selectors", "job"),
    [case[1:3] for case in CASES if case[3] is not None],
    ids=[case[0] for case in CASES if case[3] is not None],
)
def test_prefilter_passes_every_match_listed_without_detail(
    selectors: dict[str, Any], job: Job
) -> None:
    listed = Job(**{**_fields(job), "tags": {}, "raw": {}, "detailed": False})
    assert prefilter(make_policy(selectors), listed, NOW)


def _fields(job: Job) -> dict[str, Any]:
    return {name: getattr(job, name) for name in Job.__slots__}


def test_match_records_the_numbers() -> None:
    match = evaluate(make_policy({"max_runtime": "12h"}), AWS_RUNNING, NOW)
    assert match is not None
    assert (match.runtime_s, match.pending_s, match.age_s) == (46920.0, None, 50400.0)
    queued = evaluate(make_policy({"max_pending": "1h"}), SUTRO_QUEUED, NOW)
    assert queued is not None
    assert (queued.runtime_s, queued.pending_s, queued.age_s) == (None, 25200.0, 25200.0)


def test_generated_reason_matches_the_design_example() -> None:
    policy = compile_policy(
        {"name": "gpu-runtime-cap", "queues": ["gpu-*"], "max_runtime": "12h"}, SOURCE, TYPES
    )
    match = evaluate(policy, AWS_RUNNING, NOW)
    assert match is not None
    assert render_reason(match, NOW) == (
        "reaper policy gpu-runtime-cap: runtime 13h02m > max_runtime 12h; queue gpu-a ~ gpu-*"
    )


def test_generated_reason_lists_where_and_tag_facts() -> None:
    policy = make_policy({"tags": {"keep": "*"}, "where": {"nodeCount": {"ge": 4}}})
    match = evaluate(policy, TAPIS_RUNNING, NOW)
    assert isinstance(match, Match)
    assert render_reason(match, NOW) == 'reaper policy p: tag keep="" ~ *; where nodeCount 4 >= 4'


@pytest.mark.parametrize(
    ("selectors", "needs"),
    [
        ({"queues": ["*"], "max_age": "1h", "statuses": ["running"], "names": ["x"]}, False),
        ({"tags": {"team": "*"}}, True),
        ({"where": {"model": {"exists": True}}}, True),
        ({"max_age": "1h", "exclude": {"tags": {"keep": "*"}}}, True),
        ({"max_age": "1h", "exclude": {"where": {"a": {"eq": 1}}}}, True),
        ({"max_age": "1h", "exclude": {"names": ["*-nightly"]}}, False),
    ],
)
def test_needs_detail(selectors: dict[str, Any], needs: bool) -> None:
    assert make_policy(selectors).needs_detail is needs


def test_undetailed_job_never_matches_a_policy_that_needs_detail() -> None:
    # Without its tags, an exclude block cannot protect a job: evaluate must not guess.
    policy = make_policy({"queues": ["gpu-*"], "exclude": {"tags": {"env": "prod"}}})
    listed = Job(**{**_fields(AWS_RUNNING), "tags": {}, "raw": {}, "detailed": False})
    assert evaluate(policy, listed, NOW) is None
    assert prefilter(policy, listed, NOW)
    assert evaluate(policy, AWS_RUNNING, NOW) is None  # detailed: the exclude holds


@pytest.mark.parametrize(
    ("selectors", "job", "expected"),
    [
        ({"queues": ["cpu"], "tags": {"team": "*"}}, AWS_RUNNING, False),  # queue already fails
        ({"queues": ["gpu-*"], "tags": {"team": "nobody"}}, AWS_RUNNING, True),  # tags: maybe
        ({"max_runtime": "20h", "where": {"a": {"exists": True}}}, AWS_RUNNING, False),
        ({"max_age": "1h", "exclude": {"names": ["train-*"]}}, AWS_RUNNING, False),  # decided
        (
            {"max_age": "1h", "exclude": {"names": ["train-*"], "tags": {"x": "*"}}},
            AWS_RUNNING,
            True,
        ),
        ({"max_age": "1s"}, AWS_SUCCEEDED, False),
        ({"max_age": "1s"}, SUTRO_UNKNOWN, False),
    ],
)
def test_prefilter(selectors: dict[str, Any], job: Job, expected: bool) -> None:
    assert prefilter(make_policy(selectors), job, NOW) is expected


def test_backends_limit_which_jobs_a_policy_sees() -> None:
    policy = make_policy({"max_age": "1s"}, backends=["batch-prod"])
    assert policy.applies_to("batch-prod") and not policy.applies_to("tacc")
    assert evaluate(policy, AWS_RUNNING, NOW) is not None
    assert evaluate(policy, TAPIS_RUNNING, NOW) is None
    assert not prefilter(policy, TAPIS_RUNNING, NOW)
    assert make_policy({"max_age": "1s"}).applies_to("anything")


def test_evaluate_refuses_a_naive_clock() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluate(make_policy({"max_age": "1s"}), AWS_RUNNING, NOW.replace(tzinfo=None))


def test_policy_fields() -> None:
    source = PolicySource("policies/b.yaml", "f" * 64, "0123abc", 3)
    policy = compile_policy(
        {"name": "dev-queue-expiry", "description": "d", "max_pending": "2d", "dry_run": True,
         "max_cancels": 20, "backends": ["tacc", "sutro"]},
        source,
        ["tapis", "sutro"],
    )  # fmt: skip
    assert (policy.name, policy.description, policy.dry_run, policy.max_cancels) == (
        "dev-queue-expiry", "d", True, 20,
    )  # fmt: skip
    assert policy.backends == ("tacc", "sutro")
    assert policy.source is source and policy.order == ("policies/b.yaml", 3)
    defaults = make_policy({"max_age": "1h"})
    assert (defaults.description, defaults.backends, defaults.dry_run) == ("", None, False)
    assert defaults.max_cancels is None and defaults.reason is None


def test_fact_values_are_shortened() -> None:
    job = sutro_job("RUNNING", ago(hours=1), ago(hours=1), model="m" * 500)
    match = evaluate(make_policy({"where": {"model": {"glob": "m*"}}}), job, NOW)
    assert match is not None
    assert match.facts[0].text == "where model " + "m" * 79 + "… ~ m*"


# --- compile problems: every one reported, each with its path ---------------------------------


@pytest.mark.parametrize(
    ("raw", "path", "needle"),
    [
        ({"max_runtime": "90"}, ("max_runtime",), "invalid duration '90'"),
        ({"max_age": 90}, ("max_age",), "invalid duration 90"),
        ({"max_pending": "1h1h"}, ("max_pending",), "each unit once"),
        ({"where": {"model": {"regex": "(?<=a)b"}}}, ("where", "model", "regex"), "RE2 cannot"),
        ({"where": {"model": {"regex": r"(a)\1"}}}, ("where", "model", "regex"), "RE2 cannot"),
        ({"where": {"model": {"glob": "[z-a]"}}}, ("where", "model", "glob"), "runs backwards"),
        ({"where": {"x": {"between": [1, 2]}}}, ("where", "x", "between"), "unknown operator"),
        ({"where": {"x": {"gt": "5"}}}, ("where", "x", "gt"), "compares numbers"),
        ({"where": {"x": {"lt": True}}}, ("where", "x", "lt"), "compares numbers"),
        ({"where": {"x": {"ge": float("nan")}}}, ("where", "x", "ge"), "compares numbers"),
        ({"where": {"x": {"in": "abc"}}}, ("where", "x", "in"), "non-empty list"),
        ({"where": {"x": {"not_in": []}}}, ("where", "x", "not_in"), "non-empty list"),
        ({"where": {"x": {"exists": "yes"}}}, ("where", "x", "exists"), "true or false"),
        ({"where": {"x": {"eq": None}}}, ("where", "x", "eq"), "exists: false"),
        ({"where": {"x": {"glob": 5}}}, ("where", "x", "glob"), "takes a string"),
        ({"where": {"a..b": {"eq": 1}}}, ("where", "a..b"), "invalid path"),
        ({"where": {"x": {}}}, ("where", "x"), "non-empty mapping"),
        ({"where": {}}, ("where",), "non-empty mapping"),
        ({"queues": []}, ("queues",), "empty list matches nothing"),
        ({"names": ["ok", 3]}, ("names", 1), "non-empty string"),
        ({"queues": ["gpu-[b-a]"]}, ("queues", 0), "runs backwards"),
        ({"tags": {}}, ("tags",), "non-empty mapping"),
        ({"tags": {"env": False}}, ("tags", "env"), "quote it"),
        ({"statuses": ["RUNING"]}, ("statuses", 0), "unknown status 'RUNING'"),
        ({"statuses": ["SUCCEEDED"]}, ("statuses", 0), "is terminal"),
        ({"max_age": "1h", "exclude": {}}, ("exclude",), "at least one selector"),
        ({"max_age": "1h", "exclude": {"nmes": ["x"]}}, ("exclude", "nmes"), "unknown key"),
        ({"max_age": "1h", "exclude": {"max_age": "5"}}, ("exclude", "max_age"), "invalid"),
        ({"max_age": "1h", "max_runtme": "2h"}, ("max_runtme",), "unknown key"),
        ({"description": "no selector"}, (), "at least one selector"),
        ({"max_age": "1h", "backends": []}, ("backends",), "non-empty list"),
        ({"max_age": "1h", "dry_run": "yes"}, ("dry_run",), "true or false"),
        ({"max_age": "1h", "max_cancels": -1}, ("max_cancels",), ">= 0"),
        ({"max_age": "1h", "reason": 5}, ("reason",), "must be a string"),
        ({"max_age": "1h", "reason": "{job}"}, ("reason",), "unknown placeholder {job}"),
    ],
)
def test_compile_problem(raw: dict[str, Any], path: tuple[Any, ...], needle: str) -> None:
    with pytest.raises(PolicyCompileError) as caught:
        compile_policy({"name": "p", **raw}, SOURCE, TYPES)
    assert any(where == path and needle in message for where, message in caught.value.problems), (
        caught.value.problems
    )


def test_every_problem_is_reported_not_only_the_first() -> None:
    raw = {
        "name": "",
        "max_runtime": "12",
        "statuses": ["DONE"],
        "where": {"model": {"regex": "(?!x)"}, "cost": {"gt": "a"}},
        "exclude": {"names": []},
        "reason": "{job.__class__} and {policy!r}",
    }
    with pytest.raises(PolicyCompileError) as caught:
        compile_policy(raw, SOURCE, TYPES)
    paths = [path for path, _ in caught.value.problems]
    assert paths == [
        ("name",),
        ("max_runtime",),
        ("statuses", 0),
        ("where", "model", "regex"),
        ("where", "cost", "gt"),
        ("exclude", "names"),
        ("reason",),
        ("reason",),
    ]
    assert "max_runtime: invalid duration" in str(caught.value)


def test_status_validity_depends_on_the_target_types() -> None:
    assert compile_policy({"name": "p", "statuses": ["RUNNABLE"]}, SOURCE, ["aws_batch"])
    with pytest.raises(PolicyCompileError, match="unknown status 'RUNNABLE' for sutro, tapis"):
        compile_policy({"name": "p", "statuses": ["RUNNABLE"]}, SOURCE, ["tapis", "sutro"])
    # CANCELLING is terminal on Sutro only: with no active meaning anywhere it is refused.
    with pytest.raises(PolicyCompileError, match="terminal"):
        compile_policy({"name": "p", "statuses": ["cancelling"]}, SOURCE, ["sutro"])
    with pytest.raises(PolicyCompileError, match=r"lower case: pending, running"):
        compile_policy({"name": "p", "statuses": ["Running", "Pending"]}, SOURCE, ["sutro"])
    assert compile_policy({"name": "p", "statuses": ["pending"]}, SOURCE, [])


# --- PolicySet -----------------------------------------------------------------------------------


def at(name: str, file: str, position: int, **fields: Any) -> Policy:
    source = PolicySource(file, "0" * 64, None, position)
    return compile_policy({"name": name, "max_age": "1h", **fields}, source, TYPES)


def test_policy_set_orders_by_file_then_position() -> None:
    policies = [at("c", "b.yaml", 0), at("b", "a.yaml", 1), at("a", "a.yaml", 0)]
    policy_set = PolicySet.of(policies)
    assert [policy.name for policy in policy_set] == ["a", "b", "c"]
    assert [policy.name for policy in PolicySet(tuple(policies)).policies] == ["a", "b", "c"]
    assert len(policy_set) == 3


def test_policy_set_lookups() -> None:
    aws = at("aws-only", "a.yaml", 0, backends=["batch-prod"])
    every = at("everywhere", "a.yaml", 1)
    policy_set = PolicySet.of([every, aws])
    assert policy_set.for_backend("batch-prod") == (aws, every)
    assert policy_set.for_backend("tacc") == (every,)
    assert policy_set.by_name("aws-only") is aws
    assert policy_set.by_name("nope") is None


def test_policy_set_refuses_duplicate_names() -> None:
    with pytest.raises(ValueError, match="duplicate policy names: x"):
        PolicySet.of([at("x", "a.yaml", 0), at("x", "b.yaml", 0)])


# --- globs on RE2 --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("glob", "text", "expected"),
    [
        ("gpu-*", "gpu-a", True),
        ("gpu-*", "gpu-", True),
        ("gpu-*", "xgpu-a", False),
        ("*", "", True),
        ("?", "", False),
        ("a?c", "a\nc", True),
        ("[]]", "]", True),
        ("[!]]", "]", False),
        ("[!]]", "x", True),
        ("[a-]", "-", True),
        ("[-a]", "-", True),
        ("[a-c-e]", "-", True),
        ("[a-c-e]", "d", False),
        ("x[", "x[", True),
        ("[!", "[!", True),
        (r"a\*", "a\\xyz", True),  # no escapes: the backslash is a literal
        ("a.b+c(d)|e^$", "a.b+c(d)|e^$", True),
        ("a.b", "axb", False),
        ("{a,b}", "a", False),  # no brace expansion
        ("[[:alpha:]]", "[]", True),  # no POSIX classes: the set is `[:alph` then `]`
        ("[[:alpha:]]", ":]", True),
        ("[[:alpha:]]", "x]", False),
        ("job-Ü*", "job-Über", True),
        ("*x*", "\ud800x", True),  # a lone surrogate from a backend's JSON never raises
    ],
)
def test_glob(glob: str, text: str, expected: bool) -> None:
    assert compile_glob(glob).matches(text) is expected


def test_regex_matches_anywhere_unless_anchored() -> None:
    assert compile_regex("b+").matches("abbbc")
    assert not compile_regex("^b+$").matches("abbbc")
    assert compile_regex("(?i)^LLAMA").matches("llama-3")


def test_glob_rejects_a_backwards_range() -> None:
    with pytest.raises(PatternError, match="range z-a runs backwards"):
        compile_glob("[z-a]")
