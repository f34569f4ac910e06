"""Loading `reaper.yaml` and the policy files: YAML with positions → JSON Schema → semantic checks
(docs/config.md, docs/policies.md). Every problem is reported as `file:line:col` in one
`ConfigError`; one bad
policy file makes the whole set invalid.

Imports stay light: no SDK is imported here, so `reaper validate` never pays for boto3."""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

from reaper.errors import ConfigError, ConfigNotFoundError, Diagnostic
from reaper.jobs import BACKEND_TYPES, JOB_KINDS
from reaper.policy.durations import DurationError, parse_duration
from reaper.policy.gitinfo import commit_of
from reaper.policy.model import (
    DEFAULT_NOTICE_EVENTS,
    Policy,
    PolicyCompileError,
    PolicySet,
    PolicySource,
    compile_policy,
)
from reaper.policy.schema import check_schema, load_schema
from reaper.policy.shard import Shard
from reaper.policy.yamlsrc import NodePath, Problem, SourceMap, YamlDocument, load_yaml_file

CONFIG_ENV = "REAPER_CONFIG"
LOCAL_CONFIG = Path("reaper.yaml")
SYSTEM_CONFIG = Path("/etc/reaper/reaper.yaml")
POLICY_SUFFIXES = (".yaml", ".yml")
TEST_SUFFIXES = (".test.yaml", ".test.yml")  # policy test files (docs/testing.md)
DEFAULT_EVERY = timedelta(minutes=5)
# backend options naming a file
FILE_OPTIONS = frozenset({"token_file", "api_key_file", "client_key_file"})
# Backend options that are durations, handed to the backend as seconds (float): the backends
# sit below the policy language and do not parse durations.
TIMEOUT_OPTIONS = frozenset({"timeout", "connect_timeout", "read_timeout"})
URL_SOURCES = ("url", "url_env", "url_file")  # where a notifier's URL comes from: exactly one
DEFAULT_NOTIFY_TIMEOUT = timedelta(seconds=10)
DEFAULT_NOTIFY_RETRIES = 2
DEFAULT_NOTIFY_MAX_JOBS = 20


@dataclass(frozen=True, slots=True)
class BackendConfig:
    """One `backends:` entry; `options` are its other keys (lists as tuples, file paths resolved
    against the config's folder)."""

    name: str
    type: str
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def section(self) -> dict[str, Any]:
        """The entry as `reaper.backends.create_backend` takes it: the options plus `type`."""
        return {"type": self.type, **self.options}


@dataclass(frozen=True, slots=True)
class Schedule:
    """When the daemon sweeps: `every` or `cron` (crontab, UTC), each delayed by up to `jitter`."""

    every: timedelta | None = DEFAULT_EVERY
    cron: str | None = None
    jitter: timedelta = timedelta(0)


# A cancelled job still active this long after reaper's cancel is `stuck` (docs/audit.md).
DEFAULT_CONFIRM_WITHIN = timedelta(minutes=30)


@dataclass(frozen=True, slots=True)
class NotifierConfig:
    """One `notifiers:` entry (docs/config.md, "Notifiers"). The URL is not read here: it may
    hold a secret, so it stays in its environment variable or file until a notice is sent, and
    is never shown. `source` says where it is: `url`, `url_env` or `url_file` (path resolved)."""

    name: str
    source: str
    ref: str  # the URL itself (`url`), the variable's name, or the file's path
    fallback: str | None = None  # for jobs whose {owner}/{tag:KEY} cannot be rendered
    timeout: timedelta = DEFAULT_NOTIFY_TIMEOUT  # per attempt
    retries: int = DEFAULT_NOTIFY_RETRIES  # attempts after the first
    max_jobs: int = DEFAULT_NOTIFY_MAX_JOBS  # jobs listed per message, then "and K more"


@dataclass(frozen=True, slots=True)
class NoticeDefaults:
    """`notify_defaults:`: what a policy without `notify` / `notify_on` gets."""

    notify: tuple[str, ...] = ()
    notify_on: tuple[str, ...] = DEFAULT_NOTICE_EVENTS


@dataclass(frozen=True, slots=True)
class Coordination:
    """`coordination:` (docs/scale.md): a tooz back-end URL given as exactly one of `url`,
    `url_env` (a variable holding it) or `url_file` (a file holding it), this instance's
    `member` name (None: the host name) and the tooz `group` the instances join."""

    url: str | None = None
    url_env: str | None = None
    url_file: Path | None = None
    member: str | None = None
    group: str = "reaper"


@dataclass(frozen=True, slots=True)
class Config:
    """A validated `reaper.yaml`; relative paths are resolved against its folder."""

    path: Path
    policies_path: Path
    audit_log: Path
    audit_key_file: Path | None = None
    schedule: Schedule = field(default_factory=Schedule)
    max_cancels_per_sweep: int = 100
    max_match_fraction: float = 0.5
    confirm_within: timedelta = DEFAULT_CONFIRM_WITHIN
    max_clock_skew: timedelta = timedelta(minutes=2)
    protect_tag: str = "reaper:keep"
    pause_file: Path | None = None
    dry_run: bool = True  # absent = true: nothing is cancelled until the config says so
    metrics_listen: str = "127.0.0.1:9464"
    metrics_textfile: Path | None = None
    backends: Mapping[str, BackendConfig] = field(default_factory=lambda: MappingProxyType({}))
    notifiers: Mapping[str, NotifierConfig] = field(default_factory=lambda: MappingProxyType({}))
    notice_defaults: NoticeDefaults = field(default_factory=NoticeDefaults)
    shard: Shard | None = None
    coordination: Coordination | None = None

    @property
    def swept_backends(self) -> Mapping[str, BackendConfig]:
        """The backends this instance sweeps: all of them, or those its shard owns. Policies
        are still checked against every configured backend (docs/scale.md)."""
        if self.shard is None:
            return self.backends
        owned = self.shard.select(self.backends)
        return MappingProxyType({name: self.backends[name] for name in owned})


def find_config_path(arg: str | None, env: Mapping[str, str], cwd: Path | None = None) -> Path:
    """The config to use: `--config`, else `$REAPER_CONFIG`, else `./reaper.yaml` when it exists,
    else `/etc/reaper/reaper.yaml` (which may not exist; loading it then reports that)."""
    if arg:
        return Path(arg)
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    local = (cwd / LOCAL_CONFIG) if cwd else LOCAL_CONFIG
    return local if local.is_file() else SYSTEM_CONFIG


def locate_config(arg: str | None, env: Mapping[str, str], cwd: Path | None = None) -> Path:
    """`find_config_path`, when that file exists. Raises ConfigNotFoundError naming every place
    looked at: only the named file when `--config` or `$REAPER_CONFIG` chose it (a typo there
    must not fall back to another config), else `./reaper.yaml` and `/etc/reaper/reaper.yaml`."""
    path = find_config_path(arg, env, cwd)
    if path.exists():
        return path
    if arg:
        raise ConfigNotFoundError([f"{path} (--config)"])
    if env.get(CONFIG_ENV):
        raise ConfigNotFoundError([f"{path} (${CONFIG_ENV})"])
    local = (cwd / LOCAL_CONFIG) if cwd else LOCAL_CONFIG.absolute()
    raise ConfigNotFoundError([f"${CONFIG_ENV} (unset)", str(local), str(SYSTEM_CONFIG)])


def load_config(path: Path) -> Config:
    """Read and check `reaper.yaml` (not its policies). Raises ConfigError with every problem."""
    return _read_config(path)[0]


def _read_config(path: Path) -> tuple[Config, SourceMap]:
    doc, _ = load_yaml_file(path)
    problems = check_schema(doc.data, doc.source, load_schema("config"))
    problems += check_config_semantics(doc.data, broken={p.path[:2] for p in problems})
    if problems:
        raise ConfigError([doc.source.locate(p) for p in problems])
    return build_config(path, doc.data), doc.source


def load_policies(
    paths: Sequence[Path],
    backends: Mapping[str, BackendConfig] | None = None,
    notices: tuple[Collection[str], NoticeDefaults] | None = None,
) -> PolicySet:
    """Load policy files and folders (their *.yaml / *.yml, sorted, not recursive) into one set.

    With `backends` (from a config), referenced backend names must exist and each policy is
    checked against the types it targets; without, against every backend type. With `notices`
    (the config's notifier names and defaults), notifier names must exist too. Raises
    ConfigError with the problems of every file when any file or policy is invalid."""
    files, diagnostics = expand_policy_paths(paths)
    loaded = [_load_policy_file(path, backends, notices) for path in files]
    for item in loaded:
        diagnostics.extend(item.diagnostics)
    diagnostics.extend(_duplicate_names(loaded))
    if diagnostics:
        raise ConfigError(diagnostics)
    return PolicySet(policies=tuple(p for item in loaded for p in item.policies))


def load_all(config_path: Path) -> tuple[Config, PolicySet]:
    """The config and the policies it points to. When the config itself is invalid, its policy
    files are still checked (without backend references) so that every error is reported."""
    try:
        config, source = _read_config(config_path)
    except ConfigError as exc:
        raise ConfigError(exc.diagnostics + _policy_diagnostics_of(config_path)) from None
    if not config.policies_path.exists():  # named at the config's line, not as a bare path
        message = f"no such policy file or folder: {config.policies_path}"
        raise ConfigError([source.locate(Problem(("policies",), message))])
    notices = (frozenset(config.notifiers), config.notice_defaults)
    return config, load_policies([config.policies_path], config.backends, notices)


def expand_policy_paths(paths: Iterable[Path]) -> tuple[list[Path], list[Diagnostic]]:
    """The policy files named by `paths`, each once (a folder gives its *.yaml / *.yml, sorted,
    hidden files skipped), and a diagnostic for each path that is missing, unreadable or an
    empty folder, and for each entry of a folder that is a symlink leading out of it."""
    files: dict[Path, Path] = {}  # real path → path as named: a file named twice loads once
    diagnostics: list[Diagnostic] = []
    for path in paths:
        try:
            found, refused = _policy_files_in(path)
        except OSError as exc:
            message = f"cannot read: {exc.strerror or exc}"
            diagnostics.append(Diagnostic(str(path), 1, 1, message))
            continue
        diagnostics.extend(refused)
        if not found and not refused:
            message = (
                "no policy files (*.yaml, *.yml) in this folder"
                if path.is_dir()
                else "no such policy file or folder"
            )
            diagnostics.append(Diagnostic(str(path), 1, 1, message))
        for file in found:
            files.setdefault(file.resolve(), file)
    return list(files.values()), diagnostics


def _policy_files_in(path: Path) -> tuple[list[Path], list[Diagnostic]]:
    """A folder's policy files, and a diagnostic for each entry that leaves the folder. Entries
    that are not regular files are kept: reading them refuses them, located (yamlsrc)."""
    if not path.is_dir():
        return ([path] if path.exists() or path.is_symlink() else []), []
    root = path.resolve(strict=True)
    files, refused = [], []
    for entry in sorted(path.iterdir()):
        if entry.suffix not in POLICY_SUFFIXES or entry.name.startswith("."):
            continue
        if entry.name.endswith(TEST_SUFFIXES):  # `reaper test` files may sit beside policies
            continue
        problem = _outside_root(entry, root)
        if problem:
            refused.append(Diagnostic(str(entry), 1, 1, problem))
        else:
            files.append(entry)
    return files, refused


def _outside_root(entry: Path, root: Path) -> str | None:
    """Why a folder entry is refused: a symlink whose target is outside the policy folder (git
    stores symlinks, so a pull request could point one at /etc/shadow or /dev/zero)."""
    if not entry.is_symlink():
        return None
    try:
        target = entry.resolve(strict=True)
    except (OSError, RuntimeError):  # dangling, or a loop
        return "a symlink that leads nowhere (broken or looping): refused"
    if not target.is_relative_to(root):
        return f"a symlink that leads outside the policy folder {root}: refused"
    return None


# ---------------------------------------------------------------------------------- the config


def check_config_semantics(
    data: Mapping[str, Any], broken: Collection[NodePath] = ()
) -> list[Problem]:
    """What the schema cannot say: schedule consistency and cron syntax, listen port range,
    backend credential options that only make sense together. A section that holds or lies
    inside a path in `broken` (schema problems, paths cut to two levels) is skipped."""

    def intact(*path: str) -> bool:
        return not any(b[: len(path)] == path or path[: len(b)] == b for b in broken if b)

    problems = []
    if intact("schedule"):
        problems.extend(_check_schedule(data.get("schedule") or {}))
    confirm = (data.get("limits") or {}).get("confirm_within") if intact("limits") else None
    if confirm is not None:
        problems.extend(_check_duration(("limits", "confirm_within"), confirm))
    listen = (data.get("metrics") or {}).get("listen") if intact("metrics") else None
    if listen and not 0 < int(listen.rsplit(":", 1)[1]) <= 65535:
        problems.append(Problem(("metrics", "listen"), f"port out of range in {listen!r}"))
    shard = data.get("shard") if intact("shard") else None
    if shard and shard["index"] >= shard["count"]:
        message = f"index must be below count ({shard['count']})"
        problems.append(Problem(("shard", "index"), message))
    coordination = data.get("coordination") if intact("coordination") else None
    if coordination is not None:
        given = [k for k in ("url", "url_env", "url_file") if k in coordination]
        if len(given) != 1:
            message = "give exactly one of url, url_env and url_file"
            problems.append(Problem(("coordination",), message))
    backends = data.get("backends") if ("backends",) not in broken else None
    for name, section in (backends or {}).items():
        if intact("backends", name):
            problems.extend(_check_credentials(("backends", name), section))
            problems.extend(_check_timeouts(("backends", name), section))
    if intact("notifiers") and intact("notify_defaults"):
        problems.extend(
            _check_notifiers(data.get("notifiers") or {}, data.get("notify_defaults") or {})
        )
    return problems


def _check_notifiers(notifiers: Mapping[str, Any], defaults: Mapping[str, Any]) -> list[Problem]:
    """One URL source per notifier; fallbacks and defaults name notifiers; no fallback loop
    (a job nobody can be told about must end somewhere)."""
    problems = []
    for name, section in notifiers.items():
        given = [key for key in URL_SOURCES if key in section]
        if len(given) != 1:
            message = "give exactly one of url, url_env, url_file"
            problems.append(Problem(("notifiers", name), message))
        fallback = section.get("fallback")
        if fallback is not None and fallback not in notifiers:
            message = f"unknown fallback notifier {fallback!r}"
            problems.append(Problem(("notifiers", name, "fallback"), message))
        elif _falls_back_to_itself(name, notifiers):
            message = f"fallback of {name!r} leads back to it"
            problems.append(Problem(("notifiers", name, "fallback"), message))
    for index, name in enumerate(defaults.get("notify", ())):
        if name not in notifiers:
            message = f"unknown notifier {name!r}"
            problems.append(Problem(("notify_defaults", "notify", index), message))
    return problems


def _falls_back_to_itself(name: str, notifiers: Mapping[str, Any]) -> bool:
    seen, current = {name}, notifiers[name].get("fallback")
    while current is not None and current in notifiers:
        if current in seen:
            return True
        seen.add(current)
        current = notifiers[current].get("fallback")
    return False


def _check_timeouts(path: NodePath, section: Mapping[str, Any]) -> list[Problem]:
    """Durations with units and above zero (parse_duration refuses 0s): a zero timeout would
    fail every call at once."""
    return [p for key in sorted(TIMEOUT_OPTIONS & set(section))
            for p in _check_duration((*path, key), section[key])]  # fmt: skip


def _check_schedule(schedule: Mapping[str, Any]) -> list[Problem]:
    if "every" in schedule and "cron" in schedule:
        message = "give either 'every' or 'cron', not both"
        return [Problem(("schedule", "cron"), message, at_key=True)]
    problems = []
    if "every" in schedule:
        problems.extend(_check_duration(("schedule", "every"), schedule["every"]))
    if "cron" in schedule:
        problems.extend(_check_cron(("schedule", "cron"), schedule["cron"]))
    jitter = str(schedule.get("jitter", "0"))
    if not set(jitter) <= set("0wdhms"):  # "0", "0s": no jitter
        problems.extend(_check_duration(("schedule", "jitter"), jitter))
    return problems


def _check_duration(path: NodePath, text: str) -> list[Problem]:
    try:
        parse_duration(text)
    except DurationError as exc:
        return [Problem(path, str(exc))]
    return []


def _check_cron(path: NodePath, expression: str) -> list[Problem]:
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(expression, timezone="UTC")
    except ValueError as exc:
        return [Problem(path, f"invalid cron expression {expression!r}: {exc}")]
    return []


def _check_credentials(path: NodePath, section: Mapping[str, Any]) -> list[Problem]:
    if section.get("type") == "tapis":
        given = [k for k in ("token_env", "token_file") if k in section]
        password = [k for k in ("username_env", "password_env") if k in section]
        if len(password) == 1:
            other = ({"username_env", "password_env"} - set(password)).pop()
            message = f"{password[0]} needs {other} as well"
            return [Problem((*path, password[0]), message, at_key=True)]
        if len(given) + bool(password) > 1:
            message = "give one credential source: token_env, token_file or username/password_env"
            return [Problem(path, message)]
        return _check_oauth_client(path, section, bool(password))
    if section.get("type") == "sutro" and {"api_key_env", "api_key_file"} <= set(section):
        message = "give api_key_env or api_key_file, not both"
        return [Problem((*path, "api_key_file"), message, at_key=True)]
    if section.get("type") == "sutro" and "api_url" in section:
        return _check_sutro_url((*path, "api_url"), str(section["api_url"]))
    return []


def _check_oauth_client(path: NodePath, section: Mapping[str, Any], login: bool) -> list[Problem]:
    """`client_id` goes with exactly one of `client_key_env`/`client_key_file`, and with a
    password login: tapipy refreshes only a token it got by logging in (a refresh token)."""
    keys = [k for k in ("client_key_env", "client_key_file") if k in section]
    if len(keys) > 1:
        message = "give client_key_env or client_key_file, not both"
        return [Problem((*path, "client_key_file"), message, at_key=True)]
    if keys and "client_id" not in section:
        return [Problem((*path, keys[0]), f"{keys[0]} needs client_id as well", at_key=True)]
    if "client_id" not in section:
        return []
    if not keys:
        message = "client_id needs client_key_env or client_key_file"
        return [Problem((*path, "client_id"), message, at_key=True)]
    if not login:
        message = ("client_id needs username_env and password_env: a refresh token comes only "
                   "from a login")  # fmt: skip
        return [Problem((*path, "client_id"), message, at_key=True)]
    return []


def _check_sutro_url(path: NodePath, url: str) -> list[Problem]:
    from reaper.backends.sutro_url import SutroUrlError, normalize_api_url

    try:
        normalize_api_url(url)
    except SutroUrlError as exc:
        return [Problem(path, str(exc))]
    return []


def build_config(path: Path, data: Mapping[str, Any]) -> Config:
    """A Config from data that passed the schema and the semantic checks."""
    base = path.parent
    limits = data.get("limits") or {}
    metrics = data.get("metrics") or {}
    shard = data.get("shard")
    return Config(
        path=path,
        policies_path=_resolve(base, data["policies"]),
        audit_log=_resolve(base, data["audit_log"]),
        audit_key_file=_resolve_optional(base, data.get("audit_key_file")),
        schedule=_build_schedule(data.get("schedule") or {}),
        max_cancels_per_sweep=int(limits.get("max_cancels_per_sweep", 100)),
        max_match_fraction=float(limits.get("max_match_fraction", 0.5)),
        confirm_within=_confirm_within(limits),
        max_clock_skew=parse_duration(limits.get("max_clock_skew", "2m")),
        protect_tag=str(data.get("protect_tag", "reaper:keep")),
        pause_file=_resolve_optional(base, data.get("pause_file")),
        dry_run=bool(data.get("dry_run", True)),
        metrics_listen=str(metrics.get("listen", "127.0.0.1:9464")),
        metrics_textfile=_resolve_optional(base, metrics.get("textfile")),
        backends=MappingProxyType(
            {
                name: _build_backend(name, s, base)
                for name, s in (data.get("backends") or {}).items()
            }
        ),
        notifiers=MappingProxyType(
            {
                name: _build_notifier(name, s, base)
                for name, s in (data.get("notifiers") or {}).items()
            }
        ),
        notice_defaults=_build_notice_defaults(data.get("notify_defaults") or {}),
        shard=Shard(int(shard["index"]), int(shard["count"])) if shard else None,
        coordination=_build_coordination(base, data.get("coordination")),
    )


def _build_notifier(name: str, section: Mapping[str, Any], base: Path) -> NotifierConfig:
    source = next(key for key in URL_SOURCES if key in section)
    ref = str(_resolve(base, section[source])) if source == "url_file" else str(section[source])
    timeout = section.get("timeout")
    return NotifierConfig(
        name=name, source=source, ref=ref, fallback=section.get("fallback"),
        timeout=DEFAULT_NOTIFY_TIMEOUT if timeout is None else parse_duration(timeout),
        retries=int(section.get("retries", DEFAULT_NOTIFY_RETRIES)),
        max_jobs=int(section.get("max_jobs", DEFAULT_NOTIFY_MAX_JOBS)),
    )  # fmt: skip


def _build_notice_defaults(section: Mapping[str, Any]) -> NoticeDefaults:
    return NoticeDefaults(
        notify=tuple(section.get("notify", ())),
        notify_on=tuple(section.get("notify_on", DEFAULT_NOTICE_EVENTS)),
    )


def _build_coordination(base: Path, section: Mapping[str, Any] | None) -> Coordination | None:
    if section is None:
        return None
    return Coordination(
        url=section.get("url"),
        url_env=section.get("url_env"),
        url_file=_resolve_optional(base, section.get("url_file")),
        member=section.get("member"),
        group=str(section.get("group", "reaper")),
    )


def _confirm_within(limits: Mapping[str, Any]) -> timedelta:
    text = limits.get("confirm_within")
    return DEFAULT_CONFIRM_WITHIN if text is None else parse_duration(text)


def _build_schedule(schedule: Mapping[str, Any]) -> Schedule:
    cron = schedule.get("cron")
    every = parse_duration(schedule["every"]) if "every" in schedule else None
    jitter_text = str(schedule.get("jitter", "0"))
    jitter = timedelta(0) if set(jitter_text) <= set("0wdhms") else parse_duration(jitter_text)
    return Schedule(every=every if every or cron else DEFAULT_EVERY, cron=cron, jitter=jitter)


def _build_backend(name: str, section: Mapping[str, Any], base: Path) -> BackendConfig:
    options = {k: _freeze_option(k, v, base) for k, v in section.items() if k != "type"}
    return BackendConfig(name=name, type=section["type"], options=MappingProxyType(options))


def _freeze_option(key: str, value: Any, base: Path) -> Any:
    if key in FILE_OPTIONS:
        return str(_resolve(base, value))
    if key in TIMEOUT_OPTIONS:
        return parse_duration(value).total_seconds()
    return tuple(value) if isinstance(value, list) else value


def _resolve(base: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else base / path


def _resolve_optional(base: Path, value: str | None) -> Path | None:
    return None if value is None else _resolve(base, value)


def _policy_diagnostics_of(config_path: Path) -> list[Diagnostic]:
    """Diagnostics of the policies an invalid config points to, if it names them readably."""
    try:
        doc, _ = load_yaml_file(config_path)
    except ConfigError:
        return []
    value = doc.data.get("policies")
    if not isinstance(value, str) or not _resolve(config_path.parent, value).exists():
        return []
    try:
        load_policies([_resolve(config_path.parent, value)], None)
    except ConfigError as exc:
        return exc.diagnostics
    return []


# -------------------------------------------------------------------------------- the policies


@dataclass
class _PolicyFile:
    """One policy file as loaded: its document (None when unreadable), compiled policies, and
    the problems found in it."""

    path: Path
    doc: YamlDocument | None = None
    policies: list[Policy] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)


def _load_policy_file(
    path: Path,
    backends: Mapping[str, BackendConfig] | None,
    notices: tuple[Collection[str], NoticeDefaults] | None = None,
) -> _PolicyFile:
    result = _PolicyFile(path)
    try:
        result.doc, raw = load_yaml_file(path)
    except ConfigError as exc:
        result.diagnostics = exc.diagnostics
        return result
    problems = check_schema(result.doc.data, result.doc.source, load_schema("policy"))
    raw_policies = result.doc.data.get("policies")
    if isinstance(raw_policies, list):
        problems.extend(_check_backend_names(raw_policies, backends))
        problems.extend(_check_kinds(raw_policies, backends))
        problems.extend(_check_notifier_names(raw_policies, notices))
        source = _PolicySourceFactory(path, raw)
        for position, policy in enumerate(raw_policies):
            if isinstance(policy, Mapping):
                known = [p.path for p in problems if p.path[:2] == ("policies", position)]
                found = _compile(result, policy, source(position), backends, bool(known))
                problems.extend(p for p in found if not _overlaps(p.path, known))
    result.diagnostics.extend(result.doc.source.locate(p) for p in problems)
    return result


def _overlaps(path: NodePath, others: Iterable[NodePath]) -> bool:
    """True if `path` is, holds or lies inside one of `others`: the compiler's view of a node the
    schema already reported would only repeat it in other words."""
    return any(path[: len(o)] == o or o[: len(path)] == path for o in others)


class _PolicySourceFactory:
    """Builds PolicySource for each policy of one file, hashing it and asking git only once."""

    def __init__(self, path: Path, raw: bytes) -> None:
        self.path = path
        self.sha256 = hashlib.sha256(raw).hexdigest()
        self.commit: str | None = None
        self.asked = False

    def __call__(self, position: int) -> PolicySource:
        if not self.asked:
            self.commit, self.asked = commit_of(self.path), True
        return PolicySource(str(self.path), self.sha256, self.commit, position)


def _compile(
    result: _PolicyFile,
    raw: Mapping[str, Any],
    source: PolicySource,
    backends: Mapping[str, BackendConfig] | None,
    schema_invalid: bool,
) -> list[Problem]:
    """Compile one policy into `result`; its problems, located from the file's root. A policy
    the schema rejected is still compiled, so that every error is reported at once."""
    try:
        result.policies.append(compile_policy(raw, source, _target_types(raw, backends)))
    except PolicyCompileError as exc:
        prefix: NodePath = ("policies", source.position)
        return [Problem((*prefix, *path), message) for path, message in exc.problems]
    except (TypeError, ValueError, AttributeError, KeyError, IndexError):
        # compile_policy's contract is a schema-valid mapping; outside it, a crash only means
        # the compiler has nothing to add to what the schema already reported.
        if not schema_invalid:
            raise
    return []


def _target_types(
    raw: Mapping[str, Any], backends: Mapping[str, BackendConfig] | None
) -> Collection[str]:
    """The backend types a policy can meet: those of the backends it names (or of every
    configured backend); every type when no config or no backends are known."""
    if not backends:
        return BACKEND_TYPES
    names = raw.get("backends")
    names = names if isinstance(names, list) and names else list(backends)
    types = {backends[n].type for n in names if isinstance(n, str) and n in backends}
    return sorted(types) or BACKEND_TYPES


def _check_backend_names(
    raw_policies: Sequence[Any], backends: Mapping[str, BackendConfig] | None
) -> list[Problem]:
    if backends is None:
        return []
    problems = []
    for position, policy in enumerate(raw_policies):
        names = policy.get("backends") if isinstance(policy, Mapping) else None
        for index, name in enumerate(names if isinstance(names, list) else []):
            if isinstance(name, str) and name not in backends:
                path = ("policies", position, "backends", index)
                problems.append(Problem(path, _unknown_backend_message(name, backends)))
    return problems


def _check_kinds(
    raw_policies: Sequence[Any], backends: Mapping[str, BackendConfig] | None
) -> list[Problem]:
    """A policy's `kinds` must name a kind that one of the AWS Batch backends it targets sweeps
    (their `job_kinds`, default both): otherwise it could never match."""
    problems = []
    for position, policy in enumerate(raw_policies):
        kinds = policy.get("kinds") if isinstance(policy, Mapping) else None
        if not isinstance(kinds, list) or not backends or not set(kinds) <= set(JOB_KINDS):
            continue  # the schema reports a kinds value that is not a list of kinds
        names = policy.get("backends")
        targeted = [
            backends[name]
            for name in (names if isinstance(names, list) and names else backends)
            if isinstance(name, str) and name in backends and backends[name].type == "aws_batch"
        ]
        if not targeted or any(kind in _swept_kinds(b) for b in targeted for kind in kinds):
            continue
        swept = "; ".join(f"{b.name}: {', '.join(_swept_kinds(b))}" for b in targeted)
        message = (
            f"no backend it targets sweeps {' or '.join(map(str, kinds))} jobs (job_kinds {swept})"
        )
        problems.append(Problem(("policies", position, "kinds"), message))
    return problems


def _swept_kinds(backend: BackendConfig) -> tuple[str, ...]:
    return tuple(backend.options.get("job_kinds") or JOB_KINDS)


def _check_notifier_names(
    raw_policies: Sequence[Any], notices: tuple[Collection[str], NoticeDefaults] | None
) -> list[Problem]:
    """Every `notify:` name is a configured notifier; `require_notice` has a notifier to wait
    for (its own `notify:`, or the config's default)."""
    if notices is None:
        return []
    known, defaults = notices
    problems = []
    for position, policy in enumerate(raw_policies):
        if not isinstance(policy, Mapping):
            continue
        names = policy.get("notify")
        for index, name in enumerate(names if isinstance(names, list) else []):
            if isinstance(name, str) and name not in known:
                shown = ", ".join(sorted(known)) or "none"
                message = f"unknown notifier {name!r}: reaper.yaml `notifiers:` defines {shown}"
                problems.append(Problem(("policies", position, "notify", index), message))
        effective = names if isinstance(names, list) else defaults.notify
        if policy.get("require_notice") is True and not effective:
            message = "require_notice needs a notifier: give notify, or notify_defaults.notify"
            problems.append(Problem(("policies", position, "require_notice"), message))
    return problems


def _unknown_backend_message(name: str, backends: Mapping[str, BackendConfig]) -> str:
    message = f"unknown backend {name!r}"
    close = difflib.get_close_matches(name, list(backends), n=1, cutoff=0.6)
    if close:
        return f"{message}; did you mean {close[0]!r}?"
    known = ", ".join(sorted(backends)) or "none"
    return f"{message}: the config defines {known}"


def _duplicate_names(loaded: Sequence[_PolicyFile]) -> list[Diagnostic]:
    """A diagnostic at every later use of a policy name, naming where it was first used."""
    first: dict[str, Diagnostic] = {}
    diagnostics = []
    for item in loaded:
        raw_policies = item.doc.data.get("policies") if item.doc else None
        for position, policy in enumerate(raw_policies if isinstance(raw_policies, list) else []):
            name = policy.get("name") if isinstance(policy, Mapping) else None
            if not isinstance(name, str) or item.doc is None:
                continue
            here = item.doc.source.locate(Problem(("policies", position, "name"), ""))
            if name in first:
                where = f"{first[name].file}:{first[name].line}:{first[name].column}"
                message = f"policy name {name!r} is already used at {where}"
                diagnostics.append(Diagnostic(here.file, here.line, here.column, message))
            else:
                first[name] = here
    return diagnostics
