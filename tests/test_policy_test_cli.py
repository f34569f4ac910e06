"""`reaper test` through the CLI: the shipped example tests, failures named with expected vs
actual, invalid test files located `file:line:col` (exit 78), JUnit XML, JSON and coverage."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from tests.e2e_support import REPO_ROOT, run_cli

EXAMPLE_CONFIG = REPO_ROOT / "examples" / "reaper.yaml"
SHIPPED_TESTS = REPO_ROOT / "policies" / "tests"


def shipped_case_names() -> list[str]:
    names = []
    for path in sorted(SHIPPED_TESTS.glob("*.test.yaml")):
        names.extend(case["name"] for case in yaml.safe_load(path.read_text())["cases"])
    return names


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A copy of the example config, policies and their tests."""
    shutil.copytree(REPO_ROOT / "policies", tmp_path / "policies")
    (tmp_path / "examples").mkdir()
    shutil.copy(EXAMPLE_CONFIG, tmp_path / "examples" / "reaper.yaml")
    return tmp_path


def edit_case(path: Path, name: str, **expect: object) -> None:
    """Change the expectation of the case `name` in the test file at `path`."""
    data = yaml.safe_load(path.read_text())
    (case,) = [c for c in data["cases"] if c["name"] == name]
    case["expect"] = expect
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_the_shipped_example_tests_pass() -> None:
    result = run_cli("test", "--config", str(EXAMPLE_CONFIG))
    names = shipped_case_names()
    assert result.code == 0, result.out + result.err
    assert [line for line in result.out.splitlines() if line.startswith("PASS ")] == [
        f"PASS {name}" for name in names
    ]
    assert result.out.splitlines()[-1] == f"{len(names)} passed, 0 failed"
    assert "uncovered" not in result.out  # every example policy is exercised


def test_the_example_tests_cover_every_backend_type_and_the_guards() -> None:
    data = yaml.safe_load((SHIPPED_TESTS / "guards.test.yaml").read_text())
    used = {data["backends"][case["backend"]] for case in data["cases"]}
    causes = {case["expect"].get("cause") for case in data["cases"]}
    assert used == {"aws_batch", "tapis", "sutro"}
    assert {"fraction_guard", "limit"} <= causes
    result = run_cli(
        "test", "--config", str(EXAMPLE_CONFIG), str(SHIPPED_TESTS / "guards.test.yaml")
    )
    assert result.code == 0, result.out
    assert result.out.splitlines()[-1] == f"{len(data['cases'])} passed, 0 failed"


def test_a_changed_expectation_fails_naming_the_case(repo: Path) -> None:
    test_file = repo / "policies" / "tests" / "gpu-runtime-cap.test.yaml"
    edit_case(test_file, "GPU training past 12 hours is cancelled", action="none")
    result = run_cli("test", "--config", str(repo / "examples" / "reaper.yaml"))
    assert result.code == 1
    lines = result.out.splitlines()
    at = lines.index("FAIL GPU training past 12 hours is cancelled")
    details = "\n".join(lines[at + 1 : at + 8])
    assert "expected: none" in details
    assert "actual:   cancel by gpu-runtime-cap" in details
    assert "facts:    runtime 13h00m > max_runtime 12h" in details
    assert f"{test_file.relative_to(repo)}".split("/")[-1] in details  # located
    assert lines[-1] == f"{len(shipped_case_names()) - 1} passed, 1 failed"


def test_a_wrong_cause_and_a_missing_text_are_each_reported(repo: Path) -> None:
    test_file = repo / "policies" / "tests" / "gpu-runtime-cap.test.yaml"
    edit_case(test_file, "a protected job is kept", action="skip", cause="limit",
              reason_contains="no such words")  # fmt: skip
    result = run_cli("test", "--config", str(repo / "examples" / "reaper.yaml"))
    assert result.code == 1
    assert "- cause: expected limit, got protected" in result.out
    assert "- reason does not contain 'no such words'" in result.out


def test_junit_xml_counts_testcases_and_failures(repo: Path, tmp_path: Path) -> None:
    edit_case(repo / "policies" / "tests" / "sutro-budget.test.yaml",
              "a cheap batch is left alone", action="cancel", policy="sutro-budget")  # fmt: skip
    junit = tmp_path / "report.xml"
    result = run_cli("test", "--config", str(repo / "examples" / "reaper.yaml"), "--junit",
                     str(junit))  # fmt: skip
    assert result.code == 1
    root = ET.parse(junit).getroot()
    cases = list(root.iter("testcase"))
    failed = [c for c in cases if c.find("failure") is not None]
    assert root.tag == "testsuites"
    assert len(cases) == int(root.get("tests", "")) == len(shipped_case_names())
    assert [c.get("name") for c in failed] == ["a cheap batch is left alone"]
    assert int(root.get("failures", "")) == 1
    assert "expected cancel by sutro-budget, got none" in (
        failed[0].find("failure").get("message") or ""
    )  # type: ignore[union-attr]
    assert sum(int(s.get("tests", "")) for s in root.iter("testsuite")) == len(cases)


def add_untested_policy(repo: Path) -> None:
    (repo / "policies" / "untested.yaml").write_text(
        "policies:\n  - name: nobody-tests-me\n    max_age: 30d\n    dry_run: true\n"
    )


def test_coverage_lists_untested_policies_and_can_be_required(repo: Path, tmp_path: Path) -> None:
    add_untested_policy(repo)
    config = str(repo / "examples" / "reaper.yaml")
    listed = run_cli("test", "--config", config)
    assert listed.code == 0
    assert "uncovered: policy nobody-tests-me: no case exercises it" in listed.out
    junit = tmp_path / "coverage.xml"
    required = run_cli("test", "--config", config, "--require-coverage", "--junit", str(junit))
    assert required.code == 1
    assert "FAIL coverage: policy nobody-tests-me: no case exercises it" in required.out
    coverage = [
        s for s in ET.parse(junit).getroot().iter("testsuite") if s.get("name") == "coverage"
    ]
    assert [c.get("name") for c in coverage[0].iter("testcase")] == ["policy nobody-tests-me"]
    assert coverage[0].get("failures") == "1"


def test_an_expectation_not_to_match_counts_as_coverage(repo: Path) -> None:
    add_untested_policy(repo)
    (repo / "policies" / "tests" / "untested.test.yaml").write_text(
        'now: "2026-12-01T12:00:00Z"\nbackends: {sutro: sutro}\ncases:\n'
        "  - name: a young job is left alone\n    backend: sutro\n"
        '    record: {job_id: j, status: RUNNING, datetime_created: "2026-12-01T00:00:00Z"}\n'
        "    expect: {action: none, policy: nobody-tests-me}\n"
    )
    result = run_cli(
        "test", "--config", str(repo / "examples" / "reaper.yaml"), "--require-coverage"
    )
    assert result.code == 0, result.out
    assert "PASS a young job is left alone" in result.out


def test_json_output(repo: Path) -> None:
    add_untested_policy(repo)
    result = run_cli("test", "--config", str(repo / "examples" / "reaper.yaml"), "--json")
    body = json.loads(result.out)
    assert body["schema_version"] == 1
    assert (body["passed"], body["failed"], body["ok"]) == (len(shipped_case_names()), 0, True)
    assert body["uncovered"] == ["nobody-tests-me"]
    protected = next(c for c in body["cases"] if c["name"] == "a protected job is kept")
    assert protected["actual"]["cause"] == "protected"
    assert protected["actual"]["policy"] == "gpu-runtime-cap"


def test_policies_without_a_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REAPER_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./reaper.yaml: the test files name the backends' types
    result = run_cli("test", "--policies", str(REPO_ROOT / "policies"))  # tests found beside
    assert result.code == 0, result.err
    assert result.out.splitlines()[-1] == f"{len(shipped_case_names())} passed, 0 failed"


def test_test_files_in_the_policy_folder_are_not_policies(repo: Path) -> None:
    shutil.move(repo / "policies" / "tests" / "sutro-budget.test.yaml", repo / "policies")
    assert run_cli("validate", "--config", str(repo / "examples" / "reaper.yaml")).code == 0
    result = run_cli("test", "--config", str(repo / "examples" / "reaper.yaml"))
    assert result.code == 0, result.out + result.err
    assert "PASS a cheap batch is left alone" in result.out


# -- invalid test files: exit 78, located -------------------------------------------------------
GOOD_CASE = """\
  - name: ok
    backend: batch-prod
    queue: gpu-a
    record: {jobId: j1, jobName: train-x, status: RUNNING, createdAt: 1796000000000,
             startedAt: 1796000000000, tags: {team: ml}}
    expect: {action: cancel, policy: gpu-runtime-cap}
"""
HEADER = 'now: "2026-12-01T12:00:00Z"\nbackends: {batch-prod: aws_batch}\ncases:\n'


@pytest.mark.parametrize(
    ("text", "line", "column", "message"),
    [
        (HEADER + GOOD_CASE.replace("action: cancel", "action: cancell"), 9, 22,
         "action must be one of cancel, skip, warn, none; got 'cancell'; did you mean 'cancel'?"),
        (HEADER + GOOD_CASE.replace("    queue:", "    queeu:"), 6, 5, "unknown key 'queeu'"),
        (HEADER.replace("2026-12-01T12:00:00Z", "yesterday") + GOOD_CASE, 1, 6,
         "now must be an ISO 8601 time with a zone"),
        (HEADER + GOOD_CASE.replace("backend: batch-prod", "backend: batch-prdo"), 5, 14,
         "unknown backend 'batch-prdo'; did you mean 'batch-prod'?"),
        (HEADER + GOOD_CASE.replace("gpu-runtime-cap", "gpu-runtime-cop"), 4, 5,
         "expects unknown policy 'gpu-runtime-cop'"),
        (HEADER + GOOD_CASE.replace("policy: gpu-runtime-cap", "cause: protected"), 9, 30,
         "cause goes with action skip, not cancel"),
        (HEADER + GOOD_CASE + GOOD_CASE, 10, 11, "case name 'ok' is already used at line 4"),
        (HEADER + (GOOD_CASE + GOOD_CASE.replace("name: ok", "name: twin")).replace(
            "queue: gpu-a", "queue: gpu-a\n    listing: l"), 11, 5,
         "case 'twin': job j1 of batch-prod is already case 'ok' of this listing"),
        (HEADER + "  - name: [unclosed\n", 5, 1, "YAML syntax error"),
        ("cases:\n" + GOOD_CASE, 1, 1, "is missing the required key 'now'"),
    ],
)  # fmt: skip
def test_an_invalid_test_file_exits_78_located(
    tmp_path: Path, text: str, line: int, column: int, message: str
) -> None:
    path = tmp_path / "bad.test.yaml"
    path.write_text(text)
    result = run_cli("test", "--config", str(EXAMPLE_CONFIG), str(path))
    assert result.code == 78, result.out + result.err
    located = [entry for entry in result.err.splitlines() if entry.startswith(f"{path}:")]
    assert any(entry.startswith(f"{path}:{line}:{column}: ") and message in entry
               for entry in located), located  # fmt: skip
    assert result.err.splitlines()[-1] == f"{len(located)} problem{'s' * (len(located) != 1)} found"


def test_an_invalid_policy_exits_78_as_validate_does(repo: Path) -> None:
    (repo / "policies" / "broken.yaml").write_text("policies:\n  - name: x\n    max_age: 3\n")
    result = run_cli("test", "--config", str(repo / "examples" / "reaper.yaml"))
    assert result.code == 78
    assert f"{repo / 'examples' / '../policies/broken.yaml'}:3:14: " in result.err


def test_no_test_files_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("test", "--config", str(EXAMPLE_CONFIG), str(tmp_path))
    assert result.code == 2
    assert "no test files" in result.err


def test_a_record_the_parser_refuses_is_never_decided(tmp_path: Path) -> None:
    path = tmp_path / "refused.test.yaml"
    case = GOOD_CASE.replace("createdAt: 1796000000000,", "")
    path.write_text(HEADER + case.replace(", policy: gpu-runtime-cap}", "}"))
    result = run_cli("test", "--config", str(EXAMPLE_CONFIG), str(path))
    assert result.code == 1
    assert "actual:   none (the parser rejected the record: job j1 has no createdAt)" in result.out


def test_schema_prints_the_test_file_schema() -> None:
    result = run_cli("schema", "--test")
    assert result.code == 0
    assert json.loads(result.out)["title"] == "reaper policy test file"
