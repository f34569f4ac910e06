"""The Tapis emulator checked against an independent reference: every answer it gave in a
scenario driven through the real backend and tapipy validates against the response schema that
the Jobs OpenAPI spec shipped inside tapipy declares for that operation and status code; every
request body reaper sent validates against the spec's request schema.

The spec's schemas allow properties they do not declare, so each answer is checked twice: as the
spec says, and "strict" (a schema that declares properties accepts no others), which catches a
misspelt field. The drift tests break answers on purpose and watch validation fail."""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tapipy
import yaml
from jsonschema.exceptions import ValidationError
from openapi_schema_validator import OAS30Validator, oas30_format_checker

from reaper.backends.retry import RetryPolicy
from reaper.backends.tapis import client_with_login
from reaper.emulators.base import JobSpec, Knobs
from reaper.emulators.tapis import Dialect, Exchange, TapisEmulator
from reaper.errors import BackendError
from tests.harness_tapis import make_backend, no_sleep

RESOURCES = Path(tapipy.__file__).parent / "resources"


def load_spec(name: str) -> dict[str, Any]:
    with (RESOURCES / f"openapi_v3-{name}.yml").open(encoding="utf-8") as stream:
        spec: dict[str, Any] = yaml.safe_load(stream)
    return spec


def strict(node: Any) -> Any:
    """A copy of a schema tree in which every object that declares properties forbids others."""
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    copied = {key: strict(value) for key, value in node.items()}
    if "properties" in copied and "additionalProperties" not in copied:
        copied["additionalProperties"] = False
    return copied


JOBS = load_spec("jobs")
JOBS_STRICT = strict(copy.deepcopy(JOBS))
AUTHENTICATOR = load_spec("authenticator")


def find_operation(spec: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    """The spec's operation for a concrete request path; literal paths win over templates."""
    path = path if path.startswith("/v3/oauth2") else path.removeprefix("/v3")
    templates = sorted(spec["paths"], key=lambda t: t.count("{"))
    for template in templates:
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        operation = spec["paths"][template].get(method.lower())
        if re.match(pattern, path) and operation is not None:
            return dict(operation)
    raise AssertionError(f"the spec has no operation for {method} {path}")


def validate(spec: dict[str, Any], schema: dict[str, Any], instance: Any) -> None:
    """Raise ValidationError unless `instance` fits `schema` ($refs resolved within `spec`).

    The spec's `#/components/...` refs resolve against the root being validated, so the root is
    the schema with the spec's components beside it: no resolver API, which jsonschema changed
    (RefResolver is deprecated since 4.18) and openapi-schema-validator versions use differently."""
    root = {**schema, "components": spec.get("components", {})}
    OAS30Validator(root, format_checker=oas30_format_checker).validate(instance)


def response_schema(spec: dict[str, Any], exchange: Exchange) -> dict[str, Any]:
    operation = find_operation(spec, exchange.request.method, exchange.request.path)
    responses = operation["responses"]
    declared = responses.get(str(exchange.response.status)) or responses.get("default")
    assert declared, f"{exchange.operation}: HTTP {exchange.response.status} is not in the spec"
    schema: dict[str, Any] = declared["content"]["application/json"]["schema"]
    return schema


def check_response(exchange: Exchange, spec: dict[str, Any] = JOBS) -> None:
    validate(spec, response_schema(spec, exchange), exchange.response.body)


def check_request(exchange: Exchange, spec: dict[str, Any] = JOBS) -> None:
    operation = find_operation(spec, exchange.request.method, exchange.request.path)
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    validate(spec, body, exchange.request.json())


def seed(emulator: TapisEmulator, status: str, **kw: Any) -> str:
    now = time.time()
    started = now - 60 if status in ("RUNNING", "BLOCKED") else None
    spec = JobSpec(
        name=f"{status.lower()}-job", status=status, created_at=now - 3600, started_at=started,
        queue="normal", **kw,
    )  # fmt: skip
    return emulator.add_job(spec)


def run_scenario(emulator: TapisEmulator) -> None:
    """Drive every operation reaper uses, through tapipy, into each answer it can get."""
    backend = make_backend(emulator, "tacc", retry=RetryPolicy(attempts=1, sleep=no_sleep))
    running = [seed(emulator, "RUNNING", tags={"team": "ml", "reaper:keep": ""}) for _ in range(4)]
    seed(emulator, "QUEUED")
    seed(emulator, "BLOCKED")
    seed(emulator, "FINISHED")
    shared = seed(emulator, "RUNNING", extra={"owner": "alice"})
    emulator.share(shared)
    foreign = seed(emulator, "RUNNING", extra={"owner": "bob"})
    jobs = {job.id: job for page in backend.list_active() for job in page}  # several pages
    assert shared in jobs and foreign not in jobs  # list_type all_jobs
    first, finished, vanished = (jobs[i] for i in running[:3])
    assert backend.refresh(first) is not None
    assert backend.cancel(first, "ran too long").outcome == "cancelled"  # sendEvent + cancel 200
    emulator.set_status(finished.id, "FINISHED")
    assert backend.cancel(finished, "late").outcome == "already_terminal"  # 400, then 409
    emulator.remove_job(vanished.id)
    assert backend.cancel(vanished, "gone").outcome == "not_found"  # 400, then 404
    assert backend.refresh(vanished) is None  # getJob 404
    tapis = backend._client.jobs  # the summary listings reaper does not use, for coverage
    tapis.getJobSearchList(limit=2, _tapis_query_parameters={"status.eq": "RUNNING"})
    tapis.getJobList(limit=2, orderBy="name(desc)")
    tapis.getJobStatus(jobUuid=running[3])
    tapis.getJobList(limit=2, listType="SHARED_JOBS")
    with pytest.raises(tapipy.errors.BaseTapyException):
        tapis.getJobSearchList(listType="EVERYTHING")  # 400
    with pytest.raises(tapipy.errors.BaseTapyException):
        tapis.getJob(jobUuid=foreign)  # 403: neither owned nor shared
    with pytest.raises(BackendError):
        list(make_backend(emulator, "tacc", token=emulator.token[:-4] + "AAAA").list_active())


@pytest.fixture(scope="module")
def exchanges() -> Iterator[list[Exchange]]:
    emulator = TapisEmulator(Knobs(page_size=2), record_exchanges=True).start()
    try:
        assert isinstance(emulator, TapisEmulator)
        run_scenario(emulator)
        client_with_login("tacc", emulator.url, emulator.username, emulator.password)
        yield list(emulator.exchanges)
    finally:
        emulator.stop()


def test_scenario_covers_every_operation_and_answer(exchanges: list[Exchange]) -> None:
    seen = {(e.operation, e.response.status) for e in exchanges}
    assert {
        ("searchJobs", 200), ("searchJobs", 401), ("listJobs", 200), ("getJob", 200),
        ("getJob", 404), ("getJobStatus", 200), ("cancelJob", 200), ("cancelJob", 404),
        ("cancelJob", 409), ("sendEvent", 200), ("sendEvent", 400), ("createToken", 201),
        ("searchJobs", 400), ("getJob", 403),
    } <= seen  # fmt: skip
    searches = [e for e in exchanges if e.operation == "searchJobs" and e.response.status == 200]
    assert len(searches) >= 4  # the listing really paged


@pytest.mark.parametrize("spec", [JOBS, JOBS_STRICT], ids=["as-published", "strict"])
def test_every_jobs_answer_validates(exchanges: list[Exchange], spec: dict[str, Any]) -> None:
    checked = [e for e in exchanges if e.operation != "createToken"]
    for exchange in checked:
        check_response(exchange, spec)
    assert len(checked) >= 15


def test_the_search_parameters_reaper_sends_are_declared_by_the_spec(
    exchanges: list[Exchange],
) -> None:
    """tapipy sends any keyword it is given; the spec says which the service reads."""
    operation = find_operation(JOBS, "GET", "/v3/jobs/search")
    declared = {p["name"] for p in operation["parameters"] if p["in"] == "query"}
    assert "listType" in declared
    searches = [e for e in exchanges if e.operation == "searchJobs" and e.response.status == 200]
    sent = {k for e in searches for k in e.request.query if "." not in k}  # not conditions
    assert "listType" in sent
    assert sent <= declared, sent - declared
    assert {e.request.arg("listType") for e in searches} >= {"ALL_JOBS"}


def test_every_request_body_validates(exchanges: list[Exchange]) -> None:
    events = [e for e in exchanges if e.operation == "sendEvent"]
    for exchange in events:
        check_request(exchange, JOBS_STRICT)
    assert events


def test_token_answer_validates_against_the_authenticator_spec(
    exchanges: list[Exchange],
) -> None:
    (login,) = [e for e in exchanges if e.operation == "createToken"]
    check_response(login, AUTHENTICATOR)
    check_request(login, AUTHENTICATOR)


def _body(exchanges: list[Exchange], operation: str, status: int = 200) -> Exchange:
    return next(e for e in exchanges if e.operation == operation and e.response.status == status)


def _broken(exchange: Exchange, mutate: Any) -> Exchange:
    body = json.loads(json.dumps(exchange.response.body))
    mutate(body)
    return Exchange(exchange.operation, exchange.request, type(exchange.response)(200, body))


DRIFTS = {
    "status outside the enum": lambda b: b["result"].update(status="RUNNNING"),
    "tags as one string": lambda b: b["result"].update(tags="team=ml"),
    "created as epoch number": lambda b: b["result"].update(created=1700000000),
    "id as uuid string": lambda b: b["result"].update(id="1"),
    "result as a list": lambda b: b.update(result=[b["result"]]),
    "message as an object": lambda b: b.update(message={"text": "x"}),
}


@pytest.mark.parametrize("mutate", DRIFTS.values(), ids=DRIFTS.keys())
def test_validation_catches_a_drifted_job_answer(exchanges: list[Exchange], mutate: Any) -> None:
    good = _body(exchanges, "getJob")
    check_response(good)
    with pytest.raises(ValidationError):
        check_response(_broken(good, mutate))


def test_strict_validation_catches_a_misspelt_field(exchanges: list[Exchange]) -> None:
    good = _body(exchanges, "getJob")
    renamed = _broken(good, lambda b: b["result"].update(execSystemLogicalQue="normal"))
    check_response(renamed)  # the published spec lets any extra property through
    with pytest.raises(ValidationError, match="execSystemLogicalQue"):
        check_response(renamed, JOBS_STRICT)


def test_search_items_must_be_jobs(exchanges: list[Exchange]) -> None:
    good = _body(exchanges, "searchJobs")
    assert good.response.body["result"], "the recorded page holds jobs"
    with pytest.raises(ValidationError):
        check_response(_broken(good, lambda b: b["result"][0].update(nodeCount="one")))


def test_an_emulator_that_drifts_fails_validation() -> None:
    """Seed a record the way a buggy emulator would build it: the live answer fails."""
    with TapisEmulator(record_exchanges=True) as emulator:
        assert isinstance(emulator, TapisEmulator)
        job_id = seed(emulator, "RUNNING", extra={"remoteStarted": 1700000000, "mpi": "yes"})
        make_backend(emulator, "tacc")._client.jobs.getJob(jobUuid=job_id)
        (exchange,) = emulator.exchanges
    with pytest.raises(ValidationError):
        check_response(exchange)


def test_server_dialect_departs_from_the_spec_where_the_service_does() -> None:
    """The service wraps search results in {search, metadata} and answers sendEvent with a
    string; the spec says otherwise. The backend reads both (tests/test_tapis.py)."""
    with TapisEmulator(dialect=Dialect.SERVER, record_exchanges=True) as emulator:
        assert isinstance(emulator, TapisEmulator)
        seed(emulator, "RUNNING")
        backend = make_backend(emulator, "tacc")
        (job,) = [job for page in backend.list_active() for job in page]
        backend.cancel(job, "spec check")
        answers = {e.operation: e for e in emulator.exchanges if e.response.status == 200}
    for operation in ("searchJobs", "sendEvent"):
        with pytest.raises(ValidationError):
            check_response(answers[operation])
    check_response(answers["cancelJob"], JOBS_STRICT)
