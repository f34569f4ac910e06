"""`reaper validate` and `reaper schema` through `cli.main`, and once through a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from reaper import cli
from reaper.policy.yamlsrc import parse_yaml

ROOT = Path(__file__).resolve().parent.parent
BROKEN = "tests/fixtures/broken"


@pytest.fixture(autouse=True)
def _in_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("REAPER_CONFIG", raising=False)


def validate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["validate", *args])
    out, err = capsys.readouterr()
    return code, out, err


# (arguments, the first line expected on stderr: FILE:LINE:COL of the offending node + message)
BROKEN_CASES = {
    "misspelt key": (
        [f"{BROKEN}/misspelt-key.yaml"],
        f"{BROKEN}/misspelt-key.yaml:3:5: unknown key 'queus'; did you mean 'queues'?",
    ),
    "duplicate key": (
        [f"{BROKEN}/duplicate-key.yaml"],
        f"{BROKEN}/duplicate-key.yaml:5:5: duplicate key 'max_runtime': already given at line 3",
    ),
    "bare-number duration": (
        [f"{BROKEN}/bare-number-duration.yaml"],
        f"{BROKEN}/bare-number-duration.yaml:4:18: 'max_runtime' must be a duration with a unit",
    ),
    "unknown placeholder": (
        [f"{BROKEN}/unknown-placeholder.yaml"],
        f"{BROKEN}/unknown-placeholder.yaml:4:13: unknown placeholder {{owner_email}}",
    ),
    "attribute in template": (
        [f"{BROKEN}/dunder-template.yaml"],
        f"{BROKEN}/dunder-template.yaml:4:13: unknown placeholder {{job.__class__}}: "
        "dotted and indexed fields are not allowed",
    ),
    "RE2-incompatible regex": (
        [f"{BROKEN}/re2-lookahead.yaml"],
        f"{BROKEN}/re2-lookahead.yaml:6:16: RE2 cannot compile '^(?!test-).*'",
    ),
    "duplicate policy name across files": (
        [f"{BROKEN}/duplicate-name"],
        f"{BROKEN}/duplicate-name/b.yaml:4:11: policy name 'gpu-runtime-cap' is already used at "
        f"{BROKEN}/duplicate-name/a.yaml:2:11",
    ),
    "unknown backend reference": (
        ["--config", f"{BROKEN}/unknown-backend/reaper.yaml"],
        f"{BROKEN}/unknown-backend/policies/gpu.yaml:5:9: unknown backend 'batch-prd'; "
        "did you mean 'batch-prod'?",
    ),
    "no as a tag value": (
        [f"{BROKEN}/no-tag-value.yaml"],
        f"{BROKEN}/no-tag-value.yaml:5:12: tag value must be a string; "
        'YAML 1.1 reads unquoted no as false — quote it: "no"',
    ),
    "1:30 as a duration": (
        [f"{BROKEN}/sexagesimal.yaml"],
        f"{BROKEN}/sexagesimal.yaml:3:18: 'max_runtime' must be a duration with a unit, e.g. 90s, "
        "15m, 12h, 1h30m, 2d; YAML 1.1 reads unquoted 1:30 as 90 (base 60)",
    ),
    "YAML syntax error": (
        [f"{BROKEN}/syntax-error.yaml"],
        f"{BROKEN}/syntax-error.yaml:4:5: YAML syntax error: "
        "while parsing a flow sequence (line 3)",
    ),
    "empty file": (
        [f"{BROKEN}/empty.yaml"],
        f"{BROKEN}/empty.yaml:1:1: the file is empty: expected a mapping",
    ),
    "top level is a list": (
        [f"{BROKEN}/top-level-list.yaml"],
        f"{BROKEN}/top-level-list.yaml:1:1: the top level must be a mapping",
    ),
    "config errors": (
        ["--config", f"{BROKEN}/config-errors/reaper.yaml"],
        f"{BROKEN}/config-errors/reaper.yaml:5:3: give either 'every' or 'cron', not both",
    ),
}


@pytest.mark.parametrize(("args", "expected"), BROKEN_CASES.values(), ids=BROKEN_CASES.keys())
def test_broken_input_exits_78_naming_the_offending_node(
    capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    code, out, err = validate(capsys, *args)
    assert code == 78
    assert out == ""
    assert err.splitlines()[0].startswith(expected), err


def test_every_error_is_printed_not_just_the_first(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = validate(capsys, f"{BROKEN}/many-errors.yaml", f"{BROKEN}/misspelt-key.yaml")
    assert code == 78
    located = [line.split(": ", 1)[0] for line in err.splitlines()]
    assert located == [
        f"{BROKEN}/many-errors.yaml:3:18",
        f"{BROKEN}/many-errors.yaml:5:15",
        f"{BROKEN}/many-errors.yaml:8:5",
        f"{BROKEN}/misspelt-key.yaml:3:5",
        "4 problems found",
    ]


def test_config_errors_list_every_problem(capsys: pytest.CaptureFixture[str]) -> None:
    _, _, err = validate(capsys, "--config", f"{BROKEN}/config-errors/reaper.yaml")
    assert [line.split(": ", 1)[0].rsplit(":", 2)[-2] for line in err.splitlines()[:-1]] == [
        "5",
        "9",
        "13",
    ]


def test_example_policies_are_valid(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = validate(capsys, "policies/")
    assert (code, err) == (0, "")
    assert out == "5 files, 6 policies: ok\n"


def test_example_config_and_its_policies_are_valid(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("ML_SLACK_URL", "OWNER_MAIL_URL"):
        monkeypatch.delenv(name, raising=False)
    code, out, err = validate(capsys, "--config", "examples/reaper.yaml")
    assert (code, err) == (0, "")
    *notes, summary = out.splitlines()
    assert summary == "examples/reaper.yaml: ok; 5 files, 6 policies: ok"
    # Notifier URLs held in variables and files that are not there: named, not checked.
    assert [note.split(":")[0] for note in notes] == [
        "notifier ml-oncall", "notifier ops-hook", "notifier owners"]  # fmt: skip
    assert all(note.endswith("its URL is not checked") for note in notes)


def test_reaper_config_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REAPER_CONFIG", "examples/reaper.yaml")
    assert validate(capsys)[0] == 0


def test_paths_with_config_are_checked_against_its_backends(
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = f"{BROKEN}/unknown-backend/reaper.yaml"
    assert validate(capsys, "--config", config, "policies/sutro-budget.yaml")[0] == 78
    assert validate(capsys, "policies/sutro-budget.yaml")[0] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nowhere/"], "reaper validate: no such file or folder: nowhere"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, _, err = validate(capsys, *args)
    assert code == 2
    assert message in err


def test_a_real_process_reports_the_same(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("REAPER_CONFIG", None)
    command = [sys.executable, "-m", "reaper", "validate", f"{BROKEN}/no-tag-value.yaml"]
    done = subprocess.run(
        command, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 78
    assert f"{BROKEN}/no-tag-value.yaml:5:12: tag value must be a string" in done.stderr
    assert "Traceback" not in done.stderr


# ------------------------------------------------------------------------------ reaper schema


def schema_output(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert cli.main(["schema", *args]) == 0
    schema: dict[str, Any] = json.loads(capsys.readouterr().out)
    jsonschema.Draft7Validator.check_schema(schema)
    return schema


def walk_properties(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for name, value in node.get("properties", {}).items():
            yield name, value
        for value in node.values():
            yield from walk_properties(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk_properties(value)


@pytest.mark.parametrize(
    ("args", "title"), [([], "reaper policy file"), (["--config"], "reaper deployment config")]
)
def test_schema_prints_a_draft7_schema_with_descriptions(
    capsys: pytest.CaptureFixture[str], args: list[str], title: str
) -> None:
    schema = schema_output(capsys, *args)
    assert schema["title"] == title
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    undocumented = [name for name, value in walk_properties(schema) if "description" not in value]
    assert undocumented == []


def test_examples_satisfy_the_printed_schemas_as_editors_see_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    policy_schema = schema_output(capsys)
    for path in sorted(Path("policies").glob("*.yaml")):
        jsonschema.validate(parse_yaml(path.read_bytes(), str(path)).data, policy_schema)
    config_schema = schema_output(capsys, "--config")
    example = Path("examples/reaper.yaml")
    jsonschema.validate(parse_yaml(example.read_bytes(), str(example)).data, config_schema)


def test_example_policies_ship_inert() -> None:
    for path in sorted(Path("policies").glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        assert "dry_run: true" in text.splitlines()[0], path
        policies = parse_yaml(text, str(path)).data["policies"]
        assert all(p.get("dry_run") is True for p in policies), path
