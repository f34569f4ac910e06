"""Globs and regular expressions, both compiled to google-re2 (docs/policies.md).

RE2 matches in time linear in the input, so a pattern in a policy file can never hang a sweep.
Globs are translated here rather than with `fnmatch.translate`, whose output uses lookaheads and
backreferences that RE2 rejects (CPython `Lib/fnmatch.py`, `_join_translated_parts`).

Glob grammar (fnmatch's, case-sensitive, no escapes): `*` any run of characters (also none),
`?` one character, `[set]` one character in the set, `[!set]` one character not in it. In a set,
`a-z` is a range, a `]` right after `[` or `[!` is a member, a `-` first or last is a member.
A `[` without a closing `]` is a literal `[`. A range that runs backwards (`[z-a]`) is an error,
where fnmatch would silently match nothing.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import re2


class PatternError(ValueError):
    """A glob or regular expression that cannot be compiled; the message says why."""


@dataclass(frozen=True, slots=True)
class Pattern:
    """A compiled glob or regex. `text` is what the policy said; equality goes by it.

    `stars` holds the literal runs of a glob made only of literals and `*` (`train-*`,
    `*-spot`, `gpu-*-a100`): `matches` then uses string operations, which give the same answer
    as RE2 at a fraction of the cost (the google-re2 wrapper spends about 6 µs per call in
    Python, `re2/__init__.py` `_Regexp._match`). `matcher` is `matches` as the cheapest
    callable there is for this pattern, for hot loops. `prefix` is a literal start every
    matching text has ("" if none is known), for indexing many globs."""

    text: str
    regex: re2._Regexp = field(compare=False, repr=False)
    anchored: bool = True  # globs match the whole string, regexes anywhere in it
    stars: tuple[str, ...] | None = field(default=None, compare=False, repr=False)
    prefix: str = field(default="", compare=False, repr=False)
    matcher: Callable[[str], bool] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        matcher = _string_matcher(self.text, self.stars) if self.anchored else None
        object.__setattr__(self, "matcher", matcher or self._match)

    def matches(self, value: str) -> bool:
        """True if the pattern matches `value`; never raises for any str."""
        return self.matcher(value)

    def _match(self, value: str) -> bool:
        # Only ASCII text by string operations: other text may hold a lone surrogate, which RE2
        # sees spelt out as `\udXXX` (see _encodable), and `*-dc00` would then match it.
        if self.stars is not None and value.isascii():
            return match_stars(self.stars, value)
        text = _encodable(value)
        found = self.regex.fullmatch(text) if self.anchored else self.regex.search(text)
        return found is not None


def _string_matcher(text: str, stars: tuple[str, ...] | None) -> Callable[[str], bool] | None:
    """A C-level test equal to RE2's answer on every str, for `*`, `literal` and `prefix*` globs
    without a backslash. Equal even on text with a lone surrogate, which RE2 sees spelt out as
    a backslash and `udXXX`: the glob holds no surrogate (compile refuses it) and no backslash,
    so neither an equal string nor a prefix can reach past one (a suffix could match `dc00`)."""
    if stars is None or "\\" in text:
        return None
    if stars == ("", ""):
        return _any_text
    if len(stars) == 1:
        return partial(operator.eq, stars[0])
    if len(stars) == 2 and not stars[1]:
        return operator.methodcaller("startswith", stars[0])
    return None


def _any_text(value: str) -> bool:
    return True


def match_stars(parts: tuple[str, ...], value: str) -> bool:
    """Does `value` match the glob `"*".join(parts)` (literals and `*` only)? The first part
    must start it and the last end it; the ones between must follow each other in order, and
    taking the leftmost place for each never loses a match (each `*` absorbs the rest)."""
    first, last = parts[0], parts[-1]
    if len(parts) == 1:
        return value == first
    end = len(value) - len(last)
    if end < len(first) or not value.startswith(first) or not value.endswith(last):
        return False
    position = len(first)
    for part in parts[1:-1]:
        found = value.find(part, position, end)
        if found < 0:
            return False
        position = found + len(part)
    return True


def _encodable(value: str) -> str:
    """RE2 works on UTF-8; a lone surrogate (possible in JSON from a backend) cannot be encoded,
    so it is replaced by its `\\udXXX` spelling instead of raising mid-sweep."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # RE2 would otherwise print parse errors to stderr
    options.dot_nl = True  # `?` and `*` cross newlines, as in fnmatch
    return options


def compile_glob(pattern: str) -> Pattern:
    """Compile a glob that must match the whole string. Raises PatternError."""
    regex = _compile(translate_glob(pattern), pattern)
    stars = None if "?" in pattern or "[" in pattern else tuple(pattern.split("*"))
    return Pattern(pattern, regex, anchored=True, stars=stars, prefix=_literal_start(pattern))


def _literal_start(pattern: str) -> str:
    """The glob's characters before its first `*`, `?` or `[`: every text it matches starts
    with them. Cut before a backslash too: RE2 sees a lone surrogate in the text spelt out with
    one (see _encodable), so a backslash in the glob could stand for a different character."""
    ends = [i for i in map(pattern.find, "*?[\\") if i >= 0]
    return pattern[: min(ends, default=len(pattern))]


def compile_regex(pattern: str) -> Pattern:
    """Compile an RE2 regular expression that may match anywhere in the string (anchor it with
    `^...$` to match the whole value). Raises PatternError for what RE2 cannot compile:
    lookaround, backreferences, and the like."""
    return Pattern(pattern, _compile(pattern, pattern), anchored=False)


def _compile(regex: str, shown: str) -> re2._Regexp:
    try:
        return re2.compile(regex, options=_options())
    except re2.error as exc:
        detail = exc.args[0].decode("utf-8", "replace") if exc.args else "invalid"
        raise PatternError(f"RE2 cannot compile {shown!r}: {detail}") from None
    except UnicodeEncodeError:
        raise PatternError(f"pattern {shown!r} is not valid Unicode text") from None


def translate_glob(pattern: str) -> str:
    """The RE2 regular expression (for a whole-string match) equivalent to a glob."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            if not out or out[-1] != ".*":  # `**` means the same as `*`
                out.append(".*")
            i += 1
        elif char == "?":
            out.append(".")
            i += 1
        elif char == "[":
            regex, i = _translate_set(pattern, i)
            out.append(regex)
        else:
            out.append(_escape(char))
            i += 1
    return "".join(out)


def _translate_set(pattern: str, start: int) -> tuple[str, int]:
    """Translate the bracket expression at `pattern[start] == "["`; return the regex and the
    index after it. An unclosed bracket is a literal `[`."""
    body_start = start + 1
    negate = body_start < len(pattern) and pattern[body_start] == "!"
    if negate:
        body_start += 1
    end = pattern.find("]", body_start + 1)  # a `]` first in the set is a member
    if end < 0:
        return _escape("["), start + 1
    members = _set_members(pattern[body_start:end], pattern)  # never empty: end > body_start
    return "[" + ("^" if negate else "") + "".join(members) + "]", end + 1


def _set_members(body: str, pattern: str) -> list[str]:
    members: list[str] = []
    i = 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            low, high = body[i], body[i + 2]
            if low > high:
                raise PatternError(f"glob {pattern!r}: range {low}-{high} runs backwards")
            members.append(f"{_escape(low)}-{_escape(high)}")
            i += 3
        else:
            members.append(_escape(body[i]))
            i += 1
    return members


def _escape(char: str) -> str:
    """One literal character for RE2, inside or outside a set."""
    if char.isascii() and (char.isalnum() or char == "_"):
        return char
    return f"\\x{{{ord(char):x}}}"
