"""Routing and batching of notices (reaper/engine/notices.py), and what `validate` says about
notifiers: names, fallbacks, URLs apprise cannot parse — never the URL itself."""

from __future__ import annotations

from pathlib import Path

from reaper.engine.notices import (
    NoticeEvent,
    NoticeItem,
    NotifierSpec,
    Routing,
    route,
)
from reaper.policy.templates import compile_template
from tests.e2e_support import run_cli


def spec(name: str, url: str, **kw: object) -> NotifierSpec:
    return NotifierSpec(name, compile_template(url), **kw)  # type: ignore[arg-type]


def item(job: str, owner: str = "", event: NoticeEvent = NoticeEvent.WARNED,
         notifiers: tuple[str, ...] = ("owners",), **tags: str) -> NoticeItem:  # fmt: skip
    return NoticeItem(event, notifiers, "b", job, "p", f"line of {job}", {"owner": owner}, tags)


ROUTING = Routing(
    {
        "owners": spec("owners", "mailto://smtp.example/?to={owner}@example.com", fallback="ops"),
        "ops": spec("ops", "json://127.0.0.1:9/ops", max_jobs=2),
    }
)


def test_one_notice_per_rendered_url_and_event_and_the_ownerless_go_to_the_fallback() -> None:
    items = [item("j1", "ann"), item("j2", "bob"), item("j3", "ann"), item("j4"), item("j5"),
             item("j6"), item("j7", "ann", NoticeEvent.CANCELLED)]  # fmt: skip
    notices = route(items, ROUTING, "s1")
    by_key = {(n.notifier.name, n.url, n.event): n for n in notices}
    ann = by_key[("owners", "mailto://smtp.example/?to=ann@example.com", NoticeEvent.WARNED)]
    assert ann.jobs == (("b", "j1"), ("b", "j3"))
    assert ann.title == "reaper: 2 job(s) will be cancelled"
    assert "line of j1" in ann.body and "line of j3" in ann.body
    ops = by_key[("ops", "json://127.0.0.1:9/ops", NoticeEvent.WARNED)]
    assert ops.jobs == (("b", "j4"), ("b", "j5"), ("b", "j6"))
    assert ops.body.splitlines()[-1] == "and 1 more"  # max_jobs 2
    assert len(notices) == 4  # ann warned, bob warned, ops warned, ann cancelled


def test_a_rendered_value_cannot_add_a_recipient_or_a_parameter() -> None:
    [notice] = route([item("j1", "eve@evil.example&to=x")], ROUTING)
    assert notice.url == "mailto://smtp.example/?to=eve%40evil.example%26to%3Dx@example.com"


def test_a_tag_url_without_the_tag_falls_back_and_a_chain_without_a_fallback_drops() -> None:
    routing = Routing({"t": spec("t", "json://h/{tag:team}")})
    assert route([item("j1", notifiers=("t",))], routing) == []
    [notice] = route([item("j1", notifiers=("t",), team="ml")], routing)
    assert notice.url == "json://h/ml"


def test_an_unreadable_notifier_still_gets_its_notice_so_that_the_failure_is_audited() -> None:
    routing = Routing({"gone": NotifierSpec("gone", None, "notifier gone: X is unset")})
    [notice] = route([item("j1", notifiers=("gone",))], routing)
    assert notice.url is None


# -- validate -----------------------------------------------------------------------------------
CONFIG = "policies: p.yaml\naudit_log: a.jsonl\nnotifiers:\n{notifiers}"
POLICY = "policies:\n  - {{name: p, max_age: 1d, grace: 1h, notify: [{names}]}}\n"


def validate(tmp_path: Path, notifiers: str, names: str = "hook") -> tuple[int, str, str]:
    (tmp_path / "p.yaml").write_text(POLICY.format(names=names), encoding="utf-8")
    config = tmp_path / "reaper.yaml"
    config.write_text(CONFIG.format(notifiers=notifiers), encoding="utf-8")
    result = run_cli("validate", "--config", str(config))
    return result.code, result.out, result.err


def test_validate_accepts_good_notifiers_and_names_those_it_cannot_check(tmp_path: Path) -> None:
    notifiers = "  hook: {url: 'json://127.0.0.1:9/x'}\n  later: {url_env: REAPER_TEST_UNSET}\n"
    code, out, _ = validate(tmp_path, notifiers, "hook, later")
    assert code == 0
    assert "notifier later: environment variable REAPER_TEST_UNSET is empty or unset" in out


def test_validate_reports_a_bad_fallback_and_two_url_sources(tmp_path: Path) -> None:
    secret = "s3cr3t-in-the-url-42"
    notifiers = (f"  hook: {{url: 'json://{secret}@host/x', fallback: nobody}}\n"
                 "  two: {url: 'json://h/x', url_env: X}\n")  # fmt: skip
    code, out, err = validate(tmp_path, notifiers)
    assert code == 78
    assert "unknown fallback notifier 'nobody'" in err
    assert "give exactly one of url, url_env, url_file" in err
    assert secret not in out + err


def test_validate_reports_a_policy_naming_an_unknown_notifier(tmp_path: Path) -> None:
    code, _, err = validate(tmp_path, "  hook: {url: 'json://h/x'}\n", "hook, missing")
    assert code == 78
    assert "unknown notifier 'missing': reaper.yaml `notifiers:` defines hook" in err


def test_validate_says_which_notifier_apprise_cannot_parse_without_showing_it(
    tmp_path: Path,
) -> None:
    secret = "s3cr3t-in-the-url-42"
    code, out, err = validate(tmp_path, f"  hook: {{url: 'nosuchscheme://{secret}@host/x'}}\n")
    assert code == 78
    assert "notifier hook: apprise cannot parse its URL" in err
    assert secret not in out + err


def test_require_notice_needs_a_notifier(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        "policies:\n  - {name: p, max_age: 1d, require_notice: true}\n", encoding="utf-8"
    )
    config = tmp_path / "reaper.yaml"
    config.write_text("policies: p.yaml\naudit_log: a.jsonl\n", encoding="utf-8")
    result = run_cli("validate", "--config", str(config))
    assert result.code == 78
    assert "require_notice needs a notifier" in result.err
