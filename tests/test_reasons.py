"""Reason templates: every placeholder, what is refused, the generated default, the 1024 cut."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reaper.jobs import Job, Phase
from reaper.policy.model import Match, PolicyCompileError, PolicySource, compile_policy, evaluate
from reaper.policy.reasons import render_reason
from reaper.policy.templates import TemplateError, compile_template

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SOURCE = PolicySource("policies/r.yaml", "0" * 64, None, 0)

RUNNING = Job(
    backend="batch-prod", type="aws_batch", id="a1b2", name="train-resnet", queue="gpu-a",
    status="RUNNING", phase=Phase.RUNNING, created_at=NOW - timedelta(hours=14),
    started_at=NOW - timedelta(hours=13, minutes=2), tags={"team": "ml", "reaper:owner": "kim"},
)  # fmt: skip
QUEUED = Job(
    backend="tacc", type="tapis", id="5c1e-007", name="sim-43", queue="normal", status="QUEUED",
    phase=Phase.PENDING, created_at=NOW - timedelta(days=2, hours=4),
)  # fmt: skip


def matched(job: Job, reason: str | None = None, **selectors: Any) -> Match:
    raw = {"name": "gpu-runtime-cap", "description": "GPU jobs may not run longer than 12 hours"}
    raw |= selectors or {"max_age": "1h"}
    if reason is not None:
        raw["reason"] = reason
    match = evaluate(compile_policy(raw, SOURCE, ["aws_batch", "tapis"]), job, NOW)
    assert match is not None
    return match


@pytest.mark.parametrize(
    ("template", "running", "queued"),
    [
        ("{policy}", "gpu-runtime-cap", "gpu-runtime-cap"),
        ("{description}", "GPU jobs may not run longer than 12 hours", None),
        ("{backend}", "batch-prod", "tacc"),
        ("{job_id}", "a1b2", "5c1e-007"),
        ("{job_name}", "train-resnet", "sim-43"),
        ("{queue}", "gpu-a", "normal"),
        ("{status}", "RUNNING", "QUEUED"),
        ("{runtime}", "13h02m", "-"),
        ("{pending}", "-", "2d04h"),
        ("{age}", "14h00m", "2d04h"),
        ("{max_runtime}", "-", "-"),
        ("{max_pending}", "-", "-"),
        ("{max_age}", "1h", "1h"),
        ("{tag:team}", "ml", "<no tag team>"),
        ("{tag:reaper:owner}", "kim", "<no tag reaper:owner>"),
        ("{tag:absent}", "<no tag absent>", "<no tag absent>"),
    ],
)
def test_every_placeholder(template: str, running: str, queued: str | None) -> None:
    assert render_reason(matched(RUNNING, template), NOW) == running
    if queued is not None:
        assert render_reason(matched(QUEUED, template), NOW) == queued


def test_design_example_template() -> None:
    reason = "ran {runtime} on {queue}; GPU jobs are capped at {max_runtime} (policy {policy})"
    match = matched(RUNNING, reason, max_runtime="12h", queues=["gpu-*"])
    assert render_reason(match, NOW) == (
        "ran 13h02m on gpu-a; GPU jobs are capped at 12h (policy gpu-runtime-cap)"
    )


def test_literal_braces_and_text_around_placeholders() -> None:
    match = matched(RUNNING, "{{policy}} = {policy}; {{ {tag:team} }}")
    assert render_reason(match, NOW) == "{policy} = gpu-runtime-cap; { ml }"


def test_values_are_inserted_verbatim_never_formatted_again() -> None:
    job = Job(**{**{n: getattr(RUNNING, n) for n in Job.__slots__}, "name": "{policy!r}{0}"})
    assert render_reason(matched(job, "<{job_name}>"), NOW) == "<{policy!r}{0}>"


@pytest.mark.parametrize(
    ("template", "needle"),
    [
        ("{job}", "unknown placeholder {job}: use {policy}, "),
        ("{job.__class__}", "unknown placeholder {job.__class__}: dotted and indexed fields"),
        ("{policy.__init__.__globals__}", "dotted and indexed fields are not allowed"),
        ("{x[0]}", "unknown placeholder {x[0]}: dotted and indexed fields"),
        ("{policy[0]}", "unknown placeholder {policy[0]}"),
        ("{0}", "unknown placeholder {0}"),
        ("{}", "unknown placeholder {}"),
        ("{ policy }", "unknown placeholder { policy }"),
        ("{policy!r}", "placeholder {policy!r}: conversions"),
        ("{tag!s:team}", "placeholder {tag!s:team}: conversions"),
        ("{policy:>99999}", "placeholder {policy:>99999}: format specs are not allowed"),
        ("{runtime:{max_age}}", "format specs are not allowed"),
        ("{tag}", "placeholder {tag} needs a tag key"),
        ("{tag:}", "placeholder {tag} needs a tag key"),
        ("{tag:{policy}}", "a tag key cannot contain braces"),
        ("ran {runtime", "expected '}' before end of string"),
        ("ran } long", "Single '}' encountered"),
        ("   ", "template is empty"),
    ],
)
def test_rejected_templates(template: str, needle: str) -> None:
    with pytest.raises(TemplateError) as caught:
        compile_template(template)
    assert any(needle in problem for problem in caught.value.problems), caught.value.problems


def test_every_bad_placeholder_is_reported() -> None:
    with pytest.raises(TemplateError) as caught:
        compile_template("{job.__class__} {x[0]} {policy!r} {policy:>99999} {queue}")
    assert len(caught.value.problems) == 4


def test_rejected_template_is_a_compile_problem_of_reason() -> None:
    with pytest.raises(PolicyCompileError) as caught:
        compile_policy({"name": "p", "max_age": "1h", "reason": "{x[0]} {y}"}, SOURCE, ["sutro"])
    assert [path for path, _ in caught.value.problems] == [("reason",), ("reason",)]


def test_default_reason_lists_the_facts() -> None:
    match = matched(RUNNING, None, max_runtime="12h", queues=["gpu-*"], tags={"team": "m?"})
    assert render_reason(match, NOW) == (
        "reaper policy gpu-runtime-cap: runtime 13h02m > max_runtime 12h; queue gpu-a ~ gpu-*; "
        "tag team=ml ~ m?"
    )


def test_long_reason_is_cut_to_1024_with_an_ellipsis() -> None:
    reason = render_reason(matched(RUNNING, "x" * 2000 + "{policy}"), NOW)
    assert len(reason) == 1024
    assert reason == "x" * 1023 + "…"


def test_reason_of_exactly_1024_is_kept() -> None:
    reason = render_reason(matched(RUNNING, "y" * 1009 + "{policy}"), NOW)
    assert reason == "y" * 1009 + "gpu-runtime-cap"
    assert len(reason) == 1024


def test_long_default_reason_is_cut_too() -> None:
    match = matched(RUNNING, None, names=["train-resnet" + "*" * 1100])
    reason = render_reason(match, NOW)
    assert len(reason) == 1024 and reason.endswith("*…")
