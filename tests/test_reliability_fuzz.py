"""Reliability: the policy and config loaders on hostile input (docs/policies.md).

Whatever the bytes — the example files mutated byte by byte and line by line, random nested
structures dumped as YAML (deep nesting, huge numbers, odd scalars), alias bombs, text that is
not UTF-8 — loading gives a policy set / config or a `ConfigError` whose every diagnostic names
the file with a line and a column >= 1; never another exception.

tests/test_config.py fuzzes the loaders with small JSON-like data and tests/test_yamlsrc.py the
YAML layer with short random text; this file works on whole files, at the loader level.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from reaper.errors import ConfigError
from reaper.policy.config import BackendConfig, load_all, load_config, load_policies
from reaper.policy.yamlsrc import MAX_DEPTH

ROOT = Path(__file__).parents[1]
EXAMPLE_POLICIES = [
    *sorted((ROOT / "policies").glob("*.yaml")),
    ROOT / "reaper" / "emulators" / "demo-policies.yaml",
]
EXAMPLE_CONFIG = ROOT / "examples" / "reaper.yaml"
BACKENDS = {
    "batch-prod": BackendConfig("batch-prod", "aws_batch"),
    "tacc": BackendConfig("tacc", "tapis"),
    "sutro": BackendConfig("sutro", "sutro"),
}
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- the oracle ---------------------------------------------------------------------------------


def check_loads(raw: bytes, load: Callable[[Path], object], name: str = "p.yaml") -> str:
    """Load `raw` from a file: a result, or a ConfigError whose diagnostics are all located in
    files of this load with line and column >= 1 and a message. Any other exception fails.
    Returns how far the input got ("loaded", "refused by the YAML layer", "refused later"),
    which the fuzz tests report as hypothesis events."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(raw)
        try:
            load(path)
        except ConfigError as exc:
            assert exc.diagnostics, "a ConfigError without diagnostics"
            for d in exc.diagnostics:
                assert d.file.startswith(folder), d
                assert d.line >= 1 and d.column >= 1, d
                assert isinstance(d.message, str) and d.message.strip(), d
            return "refused " + stage_of(exc.diagnostics[0].message)
    return "loaded"


YAML_LAYER = (
    "YAML syntax error", "not valid UTF-8", "unacceptable character", "nested more", "more than",
    "duplicate key", "YAML error", "the file is empty", "the top level",
)  # fmt: skip


def stage_of(message: str) -> str:
    return "by the YAML layer" if message.startswith(YAML_LAYER) else "by schema or semantics"


def load_policy_file(path: Path) -> object:
    return load_policies([path], BACKENDS)


def load_config_and_policies(path: Path) -> object:
    """The config, and the policies it points to (a `policies/` folder beside it)."""
    policies = path.parent / "policies"
    policies.mkdir(exist_ok=True)
    (policies / "p.yaml").write_bytes(EXAMPLE_POLICIES[0].read_bytes())
    return load_all(path)


# --- byte- and line-level mutation of the examples ------------------------------------------

HOSTILE = [
    b"no", b"off", b"1:30", b"~", b"&a", b"*a", b"*nowhere", b"&a [*a]", b"<<: *a",
    b"!!python/object:os.system",
    b"!!binary aGVsbG8=", b"!!set {x}", b"1e400", b"-.inf", b".nan", b"99999999999999999999d",
    b"999999999w", b"9" * 400, b"0x" + b"f" * 300, b"2024-13-45", b"[", b"]", b"{", b"}", b"'",
    b'"', b"\t", b"\x00", b"\xff\xfe", b"\xed\xa0\x80", b"\xe2\x80\xa8", b"\xf0\x9f\x99\x82",
    b"---", b"...", b"? ", b"- ", b": ", b"|", b">", b"#", b"%YAML 1.1", b"{policy:>99999}",
    b"{job_id.__class__}", b"(?=a)", b"[z-a]", b"\\", b"\r\n", b"\n  ", b"\n-", b"0", b"-1",
]  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn, sources: list[bytes]) -> bytes:
    """An example file with 1 to 4 mutations: bytes flipped, inserted or deleted, lines
    duplicated, swapped, re-indented or dropped, values replaced by hostile tokens (the most
    frequent, as it keeps the YAML readable more often and so reaches the later checks)."""
    raw = draw(st.sampled_from(sources))
    for _ in range(draw(st.integers(1, 4))):
        raw = draw(st.sampled_from(MUTATIONS))(draw, raw)
    return raw


def _at(draw: st.DrawFn, raw: bytes) -> int:
    return draw(st.integers(0, len(raw)))


def _flip(draw: st.DrawFn, raw: bytes) -> bytes:
    i = min(_at(draw, raw), len(raw) - 1)
    return raw[:i] + bytes([draw(st.integers(0, 255))]) + raw[i + 1 :]


def _insert(draw: st.DrawFn, raw: bytes) -> bytes:
    i = _at(draw, raw)
    return raw[:i] + draw(st.sampled_from(HOSTILE) | st.binary(max_size=6)) + raw[i:]


def _delete(draw: st.DrawFn, raw: bytes) -> bytes:
    i = _at(draw, raw)
    return raw[:i] + raw[i + draw(st.integers(1, 40)) :]


def _lines(draw: st.DrawFn, raw: bytes) -> bytes:
    lines = raw.split(b"\n")
    i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
    action = draw(st.sampled_from(["duplicate", "swap", "indent", "dedent", "drop"]))
    if action == "duplicate":
        lines.insert(j, lines[i])
    elif action == "swap":
        lines[i], lines[j] = lines[j], lines[i]
    elif action == "indent":
        lines[i] = b" " * draw(st.integers(1, 5)) + lines[i]
    elif action == "dedent":
        lines[i] = lines[i].lstrip(b" ")
    else:
        del lines[i]
    return b"\n".join(lines)


def _replace_value(draw: st.DrawFn, raw: bytes) -> bytes:
    """Swap the value after some `key:` for a hostile token."""
    starts = [i + 2 for i in range(len(raw) - 1) if raw[i : i + 2] == b": "]
    if not starts:
        return raw
    i = draw(st.sampled_from(starts))
    end = raw.find(b"\n", i)
    end = len(raw) if end < 0 else end
    return raw[:i] + draw(st.sampled_from(HOSTILE)) + raw[end:]


MUTATIONS = [_flip, _insert, _delete, _lines, *[_replace_value] * 4]
POLICY_SOURCES = [path.read_bytes() for path in EXAMPLE_POLICIES]
# The example config names ../policies/; the fuzzed copy gets a policies/ folder beside it.
CONFIG_SOURCE = EXAMPLE_CONFIG.read_bytes().replace(b"../policies/", b"policies/")


@FUZZ
@given(mutated(POLICY_SOURCES))
def test_mutated_example_policies_load_or_give_located_errors(raw: bytes) -> None:
    event(check_loads(raw, load_policy_file))


@FUZZ
@given(mutated([CONFIG_SOURCE]))
def test_mutated_example_config_loads_or_gives_located_errors(raw: bytes) -> None:
    event(check_loads(raw, load_config_and_policies, name="reaper.yaml"))


# --- random structures dumped as YAML ---------------------------------------------------------

POLICY_KEYS = ["name", "description", "backends", "queues", "names", "statuses", "tags",
               "max_runtime", "max_pending", "max_age", "where", "exclude", "reason", "dry_run",
               "max_cancels", "eq", "gt", "in", "regex", "glob", "exists"]  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(),  # inf and nan included
    st.text(max_size=12),
    st.sampled_from(["12h", "0s", "1h30m", "99999999999999999999d", "running", "gpu-*", "[z-a]",
                     "(?=x)", "{policy}", "{tag:team}", "{job_id!r}", "reaper:keep", "no"]),
    st.dates(),
    st.datetimes(timezones=st.just(dt.UTC)),
)  # fmt: skip
KEYS = st.sampled_from(POLICY_KEYS) | st.text(max_size=6)
NESTED = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)


def dump(document: Any, flow: bool) -> bytes:
    return str(yaml.safe_dump(document, default_flow_style=flow, allow_unicode=True)).encode()


@FUZZ
@given(st.lists(st.dictionaries(KEYS, NESTED, max_size=6), max_size=3), st.booleans())
def test_random_policy_structures_load_or_give_located_errors(
    policies: list[dict[str, Any]], flow: bool
) -> None:
    event(check_loads(dump({"policies": policies}, flow), load_policy_file))


def nest(depth: int, leaf: Any, as_list: list[bool]) -> Any:
    for index in range(depth):
        leaf = [leaf] if as_list[index % len(as_list)] else {"k": leaf}
    return leaf


@FUZZ
@given(
    st.integers(1, MAX_DEPTH + 40),
    SCALARS,
    st.lists(st.booleans(), min_size=1, max_size=4),
    st.sampled_from(["where", "tags", "exclude", "queues", "x"]),
    st.booleans(),
)
def test_deep_nesting_loads_or_gives_located_errors(
    depth: int, leaf: Any, as_list: list[bool], key: str, flow: bool
) -> None:
    policy = {"name": "deep", "max_age": "1d", key: nest(depth, leaf, as_list)}
    event(check_loads(dump({"policies": [policy]}, flow), load_policy_file))


# --- alias bombs ------------------------------------------------------------------------------


def laughs(levels: int, fanout: int, merge: bool = False) -> bytes:
    """ "Billion laughs": each level refers `fanout` times to the one below, so the document
    expands to fanout**levels values. With `merge`, each level also merges the one below."""
    lines = ['a0: &a0 ["lol"]' if not merge else "a0: &a0 {k0: lol}"]
    for level in range(1, levels + 1):
        refs = ", ".join([f"*a{level - 1}"] * fanout)
        if merge:
            keys = ", ".join(f"k{level}_{i}: *a{level - 1}" for i in range(fanout))
            lines.append(f"a{level}: &a{level} {{<<: *a{level - 1}, {keys}}}")
        else:
            lines.append(f"a{level}: &a{level} [{refs}]")
    body = "\n".join(f"    {line}" for line in lines)
    return f"policies:\n  - name: bomb\n    max_age: 1d\n    where:\n{body}\n".encode()


# Small bombs (at most 5**5 values with lists, 6**5 with merge keys, which multiply per level by
# fanout + 1). One that reaches the node budget takes about a second to refuse (0.6 s for lists,
# 1 s for merge keys): those are tested once each just below.
@FUZZ
@given(st.integers(1, 5), st.integers(1, 5), st.booleans())
def test_alias_bombs_load_or_give_located_errors(levels: int, fanout: int, merge: bool) -> None:
    event(check_loads(laughs(levels, fanout, merge), load_policy_file))


@pytest.mark.parametrize("merge", [False, True], ids=["lists", "merge-keys"])
def test_billion_laughs_is_refused_within_bounded_memory(merge: bool) -> None:
    """10**9 values if expanded; the loader stops at its node budget (200,000 values) instead.
    Measured: 0.6 s and a 49 MiB peak for lists, 1 s and 97 MiB for merge keys."""
    raw = laughs(9, 10, merge)
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError, match="after expanding aliases"):
            check_loads_strict(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def check_loads_strict(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "p.yaml"
        path.write_bytes(raw)
        load_policy_file(path)


# --- text that is not UTF-8 -------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "latin-1", "cp1252", "utf-8-sig"])
def test_other_encodings_load_or_give_located_errors(encoding: str) -> None:
    text = EXAMPLE_POLICIES[0].read_text(encoding="utf-8").replace("dev", "dév — “quoted”")
    check_loads(text.encode(encoding, errors="replace"), load_policy_file)


@FUZZ
@given(st.sampled_from(EXAMPLE_POLICIES), st.binary(min_size=1, max_size=8), st.floats(0, 1))
def test_invalid_utf8_anywhere_gives_a_located_error(path: Path, junk: bytes, where: float) -> None:
    raw = path.read_bytes()
    i = int(where * len(raw))
    event(check_loads(raw[:i] + b"\xc3\x28" + junk + raw[i:], load_policy_file))


# --- regressions found by the fuzzers ---------------------------------------------------------


TOO_LONG = ["99999999999999999999d", "999999999w", "1w" + "9" * 30 + "s"]


def load_config_bytes(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "reaper.yaml"
        path.write_bytes(raw)
        load_config(path)


@pytest.mark.parametrize("duration", TOO_LONG)
def test_an_absurdly_long_duration_is_a_located_error(duration: str) -> None:
    """timedelta tops out at 999,999,999 days: a longer duration used to escape as OverflowError
    (from load_policies, and from load_config's `schedule.every`) instead of a diagnostic."""
    policy = f"policies:\n  - name: a\n    max_runtime: {duration}\n".encode()
    with pytest.raises(ConfigError, match="too long"):
        check_loads_strict(policy)
    config = EXAMPLE_CONFIG.read_bytes().replace(b"every: 5m", b"every: " + duration.encode())
    with pytest.raises(ConfigError, match="too long"):
        load_config_bytes(config)


@pytest.mark.parametrize("duration", TOO_LONG[:1])
def test_an_absurdly_long_jitter_is_a_located_error(duration: str) -> None:
    config = EXAMPLE_CONFIG.read_bytes().replace(b"jitter: 20s", b"jitter: " + duration.encode())
    with pytest.raises(ConfigError, match="too long"):
        load_config_bytes(config)
