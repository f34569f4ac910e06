"""Policies: compiled once from a schema-validated mapping, evaluated purely (docs/policies.md).

    policy = compile_policy(mapping, source, target_types={"aws_batch"})
    match = evaluate(policy, job, now)          # Match with the facts that made it true, or None
    reason = render_reason(match, now)          # reaper.policy.reasons

Semantics, in one place:
- Only pending and running jobs are considered; terminal and unknown-phase jobs never match, nor
  does a job of a backend the policy does not target (`backends:`).
- Every given selector must hold; a list inside a selector is an OR. A job that matches the
  `exclude:` block (same selectors, all of them must hold) is not matched.
- A policy that needs tags or `where` never matches a job whose listing was not detailed
  (`job.detailed` False): without its tags an `exclude:` could not protect it. Use `prefilter`
  to decide which jobs to enrich first.
- Selector semantics: see reaper.policy.selectors (statuses, globs, tags, durations) and
  reaper.policy.where.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from reaper.jobs import Job, Phase
from reaper.policy.durations import DurationError, parse_duration
from reaper.policy.overrides import runtime_override
from reaper.policy.selectors import SELECTOR_KEYS, Fact, SelectorBlock, compile_block
from reaper.policy.templates import ReasonTemplate, TemplateError, compile_template
from reaper.policy.where import PathPart, Problems
from reaper.policy.windows import Window, compile_window

__all__ = [
    "Fact",
    "Match",
    "Policy",
    "PolicyCompileError",
    "PolicySet",
    "PolicySource",
    "compile_policy",
    "evaluate",
    "is_considered",
    "prefilter",
]

POLICY_KEYS = (
    "name", "description", "backends", *SELECTOR_KEYS, "exclude", "reason", "dry_run",
    "max_cancels", "grace", "notify", "notify_on", "message", "require_notice", "max_extension",
    "window",
)  # fmt: skip
# The events a policy can ask notices for; `notify_on` defaults to the first two.
NOTICE_EVENTS = ("warned", "cancelled", "cleared", "refused", "failed")
DEFAULT_NOTICE_EVENTS = ("warned", "cancelled")
# Extra placeholders of a `message:` template, beside the reason's (docs/policies.md).
MESSAGE_PLACEHOLDERS = ("event", "reason", "due")
_ACTIVE = (Phase.PENDING, Phase.RUNNING)  # and FINISHING for a policy naming it: is_considered


@dataclass(frozen=True, slots=True)
class PolicySource:
    """Where a policy came from, as the audit records it."""

    file: str  # path as displayed in errors and audit records
    sha256: str  # of the file's bytes
    commit: str | None  # git commit of the file, None outside a work tree
    position: int  # 0-based index of the policy within the file


class PolicyCompileError(Exception):
    """A policy that cannot be compiled. `problems` lists every problem found, each as (path
    relative to the policy mapping, message), e.g. (("where", "model", "regex"), "RE2 ...")."""

    def __init__(self, problems: list[tuple[tuple[PathPart, ...], str]]) -> None:
        self.problems = problems
        super().__init__(
            "; ".join(f"{'.'.join(map(str, path)) or '(policy)'}: {msg}" for path, msg in problems)
        )


@dataclass(frozen=True, eq=False)
class Policy:
    """One compiled, immutable policy. Compared by identity: it is compiled once per load."""

    name: str
    description: str
    backends: tuple[str, ...] | None  # None = every backend
    dry_run: bool
    max_cancels: int | None
    source: PolicySource
    selectors: SelectorBlock
    exclude: SelectorBlock | None
    reason: ReasonTemplate | None  # None = generated from the facts
    # The ladder (docs/policies.md, "Grace, notices and windows"): warn, wait `grace`, cancel
    # inside `window`. None/empty = cancel on first sight, tell nobody but the audit log.
    grace: timedelta | None = None
    notify: tuple[str, ...] | None = None  # notifier names; None = reaper.yaml's default
    notify_on: tuple[str, ...] | None = None  # events; None = reaper.yaml's default
    message: ReasonTemplate | None = None  # one job's line in a notice; None = generated
    require_notice: bool = False  # no cancel before a `warned` notice was delivered
    max_extension: timedelta = timedelta(0)  # how far `reaper:max-runtime` may raise the limit
    window: Window | None = None  # cancels only inside it; None = any time
    needs_detail: bool = field(init=False)  # tags or where, here or in exclude
    order: tuple[str, int] = field(init=False)  # (source.file, source.position)

    def __post_init__(self) -> None:
        detail = self.selectors.needs_detail or bool(self.exclude and self.exclude.needs_detail)
        object.__setattr__(self, "needs_detail", detail)
        object.__setattr__(self, "order", (self.source.file, self.source.position))

    @property
    def warns_first(self) -> bool:
        """True if a match is warned before it is cancelled: a grace period, or a notice that
        must be delivered first (which is a grace of zero)."""
        return self.grace is not None or self.require_notice

    def applies_to(self, backend_name: str) -> bool:
        """True if the policy targets the backend of that config name."""
        return self.backends is None or backend_name in self.backends


@dataclass(frozen=True, slots=True)
class Match:
    """A job a policy matched, with the facts that made it true and the numbers the audit keeps."""

    policy: Policy
    job: Job
    facts: tuple[Fact, ...]
    runtime_s: float | None
    pending_s: float | None
    age_s: float | None


def compile_policy(
    raw: Mapping[str, Any], source: PolicySource, target_types: Collection[str]
) -> Policy:
    """Compile a policy mapping. `target_types` are the backend types it can reach; a status is
    valid if it is a group (`pending`, `running`) or an active native status of one of them.
    Raises PolicyCompileError with every problem found."""
    problems: Problems = []
    _check_keys(raw, POLICY_KEYS, (), problems)
    if not any(key in raw for key in SELECTOR_KEYS):
        problems.append(((), f"a policy needs at least one selector: {', '.join(SELECTOR_KEYS)}"))
    policy = Policy(
        name=_string(raw, "name", problems, required=True),
        description=_string(raw, "description", problems),
        backends=_backends(raw, problems),
        dry_run=_dry_run(raw, problems),
        max_cancels=_max_cancels(raw, problems),
        source=source,
        selectors=compile_block(raw, (), target_types, problems),
        exclude=_exclude(raw, target_types, problems),
        reason=_template(raw, "reason", problems),
        grace=_duration(raw, "grace", problems),
        notify=_names(raw, "notify", problems),
        notify_on=_events(raw, problems),
        message=_template(raw, "message", problems, MESSAGE_PLACEHOLDERS),
        require_notice=_flag(raw, "require_notice", problems),
        max_extension=_duration(raw, "max_extension", problems) or timedelta(0),
        window=None if raw.get("window") is None else compile_window(raw["window"], problems),
    )
    if policy.require_notice and policy.notify == ():
        problems.append((("require_notice",), "require_notice needs a notifier in notify"))
    if policy.max_extension and policy.selectors.limit_text("max_runtime") is None:
        problems.append((("max_extension",), "max_extension needs a max_runtime selector"))
    if problems:
        raise PolicyCompileError(problems)
    return policy


def _check_keys(
    raw: Mapping[str, Any], allowed: tuple[str, ...], path: tuple[PathPart, ...], problems: Problems
) -> None:
    for key in raw:
        if key not in allowed:
            problems.append(
                ((*path, str(key)), f"unknown key {key!r}: use one of {', '.join(allowed)}")
            )


def _string(raw: Mapping[str, Any], key: str, problems: Problems, required: bool = False) -> str:
    value = raw.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip():
        problems.append(((key,), f"{key} must be a non-empty string"))
        return ""
    return value


def _backends(raw: Mapping[str, Any], problems: Problems) -> tuple[str, ...] | None:
    value = raw.get("backends")
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        problems.append((("backends",), "backends must be a non-empty list of backend names"))
        return ()
    return tuple(value)


def _dry_run(raw: Mapping[str, Any], problems: Problems) -> bool:
    value = raw.get("dry_run", False)
    if not isinstance(value, bool):
        problems.append((("dry_run",), f"dry_run must be true or false, got {value!r}"))
        return True
    return value


def _max_cancels(raw: Mapping[str, Any], problems: Problems) -> int | None:
    value = raw.get("max_cancels")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        problems.append(
            (("max_cancels",), f"max_cancels must be a whole number >= 0, got {value!r}")
        )
        return 0
    return value


def _exclude(
    raw: Mapping[str, Any], target_types: Collection[str], problems: Problems
) -> SelectorBlock | None:
    value = raw.get("exclude")
    if value is None:
        return None
    if isinstance(value, Mapping):
        _check_keys(value, SELECTOR_KEYS, ("exclude",), problems)
    if not isinstance(value, Mapping) or not any(key in value for key in SELECTOR_KEYS):
        # An empty exclude block would hold for every job and silently disable the policy.
        selectors = ", ".join(SELECTOR_KEYS)
        problems.append((("exclude",), f"exclude needs at least one selector: {selectors}"))
        return None
    return compile_block(value, ("exclude",), target_types, problems)


def _template(
    raw: Mapping[str, Any], key: str, problems: Problems, extra: tuple[str, ...] = ()
) -> ReasonTemplate | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        problems.append(((key,), f"{key} must be a string, got {value!r}"))
        return None
    try:
        return compile_template(value, extra)
    except TemplateError as exc:
        problems.extend(((key,), problem) for problem in exc.problems)
        return None


def _duration(raw: Mapping[str, Any], key: str, problems: Problems) -> timedelta | None:
    value = raw.get(key)
    if value is None:
        return None
    try:
        return parse_duration(value)
    except DurationError as exc:
        problems.append(((key,), str(exc)))
        return None


def _names(raw: Mapping[str, Any], key: str, problems: Problems) -> tuple[str, ...] | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        problems.append(((key,), f"{key} must be a list of names"))
        return ()
    return tuple(value)


def _events(raw: Mapping[str, Any], problems: Problems) -> tuple[str, ...] | None:
    events = _names(raw, "notify_on", problems)
    unknown = [e for e in events or () if e not in NOTICE_EVENTS]
    if unknown:
        problems.append((("notify_on",), f"unknown event(s) {unknown}: use {NOTICE_EVENTS}"))
    return events


def _flag(raw: Mapping[str, Any], key: str, problems: Problems) -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        problems.append(((key,), f"{key} must be true or false, got {value!r}"))
        return False
    return value


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")


def is_considered(policy: Policy, job: Job) -> bool:
    """Pending and running jobs of a backend the policy targets; a finishing job (Tapis
    ARCHIVING) only when the policy's `statuses` names its native status (docs/policies.md)."""
    if not policy.applies_to(job.backend):
        return False
    if job.phase is Phase.FINISHING:
        return policy.selectors.names_status(job.status)
    return job.phase in _ACTIVE


def evaluate(policy: Policy, job: Job, now: datetime) -> Match | None:
    """The match of `policy` on `job` at `now` (aware), or None. Pure. Terminal and unknown-phase
    jobs, jobs of untargeted backends, and undetailed jobs under a policy that needs detail never
    match. Never raises for any job; raises ValueError for a naive `now`."""
    _require_aware(now)
    if not is_considered(policy, job) or (policy.needs_detail and not job.detailed):
        return None
    # Most jobs match nothing: decide without building facts, then explain only a match.
    if not policy.selectors.holds(job, now):
        return None
    if policy.exclude is not None and policy.exclude.holds(job, now):
        return None
    facts = policy.selectors.explain(job, now)
    if facts is None:  # cannot happen: `holds` is `explain(...) is not None`
        return None
    limit = policy.selectors.duration_selector("max_runtime")
    still, override = runtime_override(
        job, None if limit is None else limit.limit, policy.max_extension, now
    )
    if not still:
        return None
    if override is not None:
        facts = (*facts, override)
    runtime, pending, age = job.runtime(now), job.pending(now), job.age(now)
    return Match(
        policy=policy,
        job=job,
        facts=facts,
        runtime_s=None if runtime is None else runtime.total_seconds(),
        pending_s=None if pending is None else pending.total_seconds(),
        age_s=None if age is None else age.total_seconds(),
    )


def prefilter(policy: Policy, job: Job, now: datetime) -> bool:
    """Could `policy` match `job` once it is detailed? Tests only what a listing answers (not
    tags, not where: those count as "maybe"). Guarantee: never False for a job that `evaluate`
    would match once detailed, given the listing's queue, name, status and times are right."""
    _require_aware(now)
    if not is_considered(policy, job) or not policy.selectors.maybe(job, now):
        return False
    exclude = policy.exclude
    # Only an exclude block that needs no detail can be decided now.
    return exclude is None or exclude.needs_detail or not exclude.maybe(job, now)


@dataclass(frozen=True)
class PolicySet:
    """The loaded policies in (file path, position) order; the constructor sorts them and
    refuses duplicate names (ValueError: the loader reports those as config errors first)."""

    policies: tuple[Policy, ...]

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.policies, key=lambda policy: policy.order))
        counts = Counter(policy.name for policy in ordered)
        duplicates = sorted(name for name, count in counts.items() if count > 1)
        if duplicates:
            raise ValueError(f"duplicate policy names: {', '.join(duplicates)}")
        object.__setattr__(self, "policies", ordered)

    @classmethod
    def of(cls, policies: Iterable[Policy]) -> PolicySet:
        return cls(tuple(policies))

    def __iter__(self) -> Iterator[Policy]:
        return iter(self.policies)

    def __len__(self) -> int:
        return len(self.policies)

    def for_backend(self, name: str) -> tuple[Policy, ...]:
        """The policies that target the backend of that config name, in order."""
        return tuple(policy for policy in self.policies if policy.applies_to(name))

    def by_name(self, name: str) -> Policy | None:
        return next((policy for policy in self.policies if policy.name == name), None)
