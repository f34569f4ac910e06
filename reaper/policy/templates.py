"""Templates (reasons, and any other text a policy writes): compiled at load, rendered from a
flat table of strings (docs/policies.md, "Reasons").

A template is split once with `string.Formatter().parse` and rendered by concatenating literal
text and table values: user text never reaches `str.format`, so a template cannot read
attributes, indexes or globals (`{job.__class__}`, `{x[0]}`), convert (`!r`) or pad (`:>99999`).
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass

PLACEHOLDERS = (
    "policy", "description", "backend", "job_id", "job_name", "queue", "status", "owner",
    "runtime", "pending", "age", "max_runtime", "max_pending", "max_age",
)  # fmt: skip
LIMITS = ("max_runtime", "max_pending", "max_age")
TAG = "tag"  # `{tag:KEY}`: Formatter.parse reads it as field "tag" with format spec "KEY"
NOT_APPLICABLE = "-"  # `{runtime}` of a job that never started, an unset `{max_age}`, ...
# `{tag:KEY}` of a job without that tag: visible, so that a reason never silently loses a word
# ("team " reads like a bug in the job; "team <no tag team>" says what happened).
MISSING_TAG = "<no tag {key}>"
_ALLOWED = ", ".join(f"{{{name}}}" for name in PLACEHOLDERS) + ", {tag:KEY}"


class TemplateError(ValueError):
    """A reason template that cannot be compiled; `problems` lists every one found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True, slots=True)
class Piece:
    """Literal text followed by at most one placeholder (`name`, and `tag` for `{tag:KEY}`)."""

    literal: str
    name: str | None = None
    tag: str | None = None


@dataclass(frozen=True, slots=True)
class ReasonTemplate:
    text: str
    pieces: tuple[Piece, ...]


def compile_template(text: str, extra: tuple[str, ...] = ()) -> ReasonTemplate:
    """Parse a reason template; `extra` names placeholders allowed beside PLACEHOLDERS (a
    notice's `{due}`). Raises TemplateError listing every bad placeholder (parsing stops at an
    unbalanced brace, so problems after one are not seen)."""
    pieces: list[Piece] = []
    problems: list[str] = []
    try:
        for literal, name, spec, conversion in string.Formatter().parse(text):
            problem = _check_field(name, spec, conversion, extra)
            if problem:
                problems.append(problem)
            elif name is None:
                pieces.append(Piece(literal))
            else:
                pieces.append(Piece(literal, name, spec if name == TAG else None))
    except ValueError as exc:
        problems.append(f"{exc}: write {{{{ or }}}} for a literal brace")
    if not text.strip():
        problems.append("template is empty")
    if problems:
        raise TemplateError(problems)
    return ReasonTemplate(text, tuple(pieces))


def _check_field(
    name: str | None, spec: str | None, conversion: str | None, extra: tuple[str, ...] = ()
) -> str | None:
    """Why a parsed field is not allowed, or None."""
    if name is None:
        return None
    shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
    shown += "}"
    if name not in (*PLACEHOLDERS, *extra, TAG):
        reaches = any(char in name for char in ".[]")
        kind = "dotted and indexed fields are not allowed; " if reaches else ""
        allowed = "".join(f"{{{e}}}, " for e in extra) + _ALLOWED
        return f"unknown placeholder {shown}: {kind}use {allowed}"
    if conversion:
        return f"placeholder {shown}: conversions (!r, !s, !a) are not allowed"
    if name == TAG:
        return _check_tag_key(shown, spec)
    return f"placeholder {shown}: format specs are not allowed" if spec else None


def _check_tag_key(shown: str, key: str | None) -> str | None:
    if not key:
        return f"placeholder {shown} needs a tag key, e.g. {{tag:team}}"
    if "{" in key or "}" in key:
        return f"placeholder {shown}: a tag key cannot contain braces"
    return None


def render_template(
    template: ReasonTemplate, values: Mapping[str, str], tags: Mapping[str, str]
) -> str:
    """Concatenate literal text and values; a tag the job lacks renders as `<no tag KEY>`."""
    parts: list[str] = []
    for piece in template.pieces:
        parts.append(piece.literal)
        if piece.name == TAG and piece.tag is not None:
            parts.append(tags.get(piece.tag, MISSING_TAG.format(key=piece.tag)))
        elif piece.name is not None:
            parts.append(values[piece.name])
    return "".join(parts)
