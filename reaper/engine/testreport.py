"""Rendering a `reaper test` run (reaper.engine.policytest): text lines, JSON, JUnit XML
(docs/testing.md)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from reaper.engine.policytest import CaseResult, TestRun, describe, expected_text

JSON_SCHEMA_VERSION = 1
UNCOVERED = "no case exercises it"


def text_lines(run: TestRun, *, require_coverage: bool = False) -> list[str]:
    """`PASS name` / `FAIL name` with what was expected, what happened and the facts, the
    uncovered policies, then `N passed, M failed`."""
    lines: list[str] = []
    for result in run.results:
        lines.append(f"{'PASS' if result.passed else 'FAIL'} {result.case.name}")
        if not result.passed:
            lines.extend(f"    {line}" for line in failure_details(result))
    label = "FAIL coverage:" if require_coverage else "uncovered:"
    lines.extend(f"{label} policy {name}: {UNCOVERED}" for name in run.uncovered)
    lines.append(f"{len(run.passed)} passed, {len(run.failed)} failed")
    return lines


def failure_details(result: CaseResult) -> list[str]:
    """Where the case is, expected vs actual, each difference, and the evidence."""
    case, outcome = result.case, result.outcome
    details = [
        f"at:       {case.at.file}:{case.at.line}:{case.at.column}",
        f"expected: {expected_text(case)}",
        f"actual:   {describe(outcome)}",
        *(f"- {failure}" for failure in result.failures),
    ]
    if outcome.reason:
        details.append(f"reason:   {outcome.reason}")
    if outcome.facts:
        details.append(f"facts:    {'; '.join(outcome.facts)}")
    if outcome.also_matched:
        details.append(f"also matched: {', '.join(outcome.also_matched)}")
    return details


def failure_message(result: CaseResult) -> str:
    return f"expected {expected_text(result.case)}, got {describe(result.outcome)}"


def run_json(run: TestRun, *, require_coverage: bool = False) -> dict[str, Any]:
    return {
        "schema_version": JSON_SCHEMA_VERSION,
        "passed": len(run.passed),
        "failed": len(run.failed),
        "ok": is_ok(run, require_coverage=require_coverage),
        "cases": [case_json(result) for result in run.results],
        "policies": list(run.policies),
        "uncovered": list(run.uncovered),
        "coverage_required": require_coverage,
    }


def case_json(result: CaseResult) -> dict[str, Any]:
    case, outcome, expect = result.case, result.outcome, result.case.expect
    return {
        "name": case.name,
        "file": case.at.file,
        "line": case.at.line,
        "backend": case.backend,
        "listing": case.listing,
        "passed": result.passed,
        "failures": list(result.failures),
        "expected": {
            "action": expect.action.value,
            "policy": expect.policy,
            "cause": expect.cause,
            "reason_contains": list(expect.reason_contains),
            "facts_contain": list(expect.facts_contain),
            "dry_run": expect.dry_run,
        },
        "actual": {
            "action": outcome.action.value,
            "policy": outcome.policy,
            "cause": outcome.cause,
            "reason": outcome.reason,
            "facts": list(outcome.facts),
            "also_matched": list(outcome.also_matched),
            "dry_run": outcome.dry_run,
            "rejected": outcome.rejected,
        },
    }


def is_ok(run: TestRun, *, require_coverage: bool = False) -> bool:
    return not run.failed and not (require_coverage and run.uncovered)


def junit_xml(run: TestRun, *, require_coverage: bool = False) -> bytes:
    """JUnit XML: one testsuite per test file, one testcase per case (a failure carries the
    message and the details); uncovered policies are testcases of a `coverage` suite, failed
    under --require-coverage and skipped otherwise."""
    root = ET.Element("testsuites", name="reaper test")
    suites: dict[str, ET.Element] = {}
    for result in run.results:
        suite = suites.get(result.file)
        if suite is None:
            suite = suites[result.file] = ET.SubElement(root, "testsuite", name=result.file)
        case = ET.SubElement(suite, "testcase", name=result.case.name, classname=result.file)
        case.set("file", result.case.at.file)
        case.set("line", str(result.case.at.line))
        if not result.passed:
            failure = ET.SubElement(case, "failure", message=failure_message(result))
            failure.text = "\n".join(failure_details(result))
    if run.uncovered:
        suite = ET.SubElement(root, "testsuite", name="coverage")
        for name in run.uncovered:
            case = ET.SubElement(suite, "testcase", name=f"policy {name}", classname="coverage")
            tag = "failure" if require_coverage else "skipped"
            ET.SubElement(case, tag, message=f"policy {name}: {UNCOVERED}")
    for suite in root:
        _count(suite)
    _count(root)
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))


def _count(element: ET.Element) -> None:
    cases = list(element.iter("testcase"))
    element.set("tests", str(len(cases)))
    element.set("failures", str(sum(1 for c in cases if c.find("failure") is not None)))
    element.set("errors", "0")
    element.set("skipped", str(sum(1 for c in cases if c.find("skipped") is not None)))
