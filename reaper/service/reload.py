"""What a reload changes (docs/systemd.md): the daemon validates the whole new
config and policy set, then swaps it in as one immutable `Loaded`, or keeps the old one.

Pure: loading is `reaper.policy.config.load_all`; this module compares two loaded sets and builds
the audit fields of `reload` and `reload_failed` records."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from reaper.errors import Diagnostic
from reaper.policy.config import Config
from reaper.policy.model import PolicySet
from reaper.policy.shard import Shard

# Settings a running daemon does not change on reload: the bound metrics socket, the
# coordination group it joined (a warning; the rest of the reload applies). Changing them takes
# a restart.
RESTART_ONLY: dict[str, Callable[[Config], object]] = {
    "metrics.listen": lambda config: config.metrics_listen,
    "coordination": lambda config: config.coordination,
}
# Settings whose change refuses the whole reload (`reload_failed`): the daemon holds the audit
# log's lock, descriptor, chain and key, and the re-cancel window reads the same log, so writer,
# window and lock could only move together; a restart moves them (docs/config.md, "Reload").
REFUSED_ON_RELOAD: dict[str, Callable[[Config], object]] = {
    "audit_log": lambda config: config.audit_log,
    "audit_key_file": lambda config: config.audit_key_file,
}


@dataclass(frozen=True)
class Loaded:
    """One validated config with its policy set. Never mutated: a reload swaps it whole, and
    each sweep takes the one current when it starts (docs/architecture.md, sweep step 1)."""

    config: Config
    policies: PolicySet

    @property
    def backend_names(self) -> list[str]:
        """The backends this instance sweeps (its shard's, when sharded)."""
        return list(self.config.swept_backends)

    def with_shard(self, shard: Shard | None) -> Loaded:
        """This set with `--shard` overriding the config's `shard:` (None: keep the config's)."""
        if shard is None:
            return self
        return Loaded(replace(self.config, shard=shard), self.policies)


@dataclass(frozen=True)
class ReloadPlan:
    """The differences between the active set and a validated new one."""

    new: Loaded
    schedule_changed: bool
    backends_changed: bool  # added, removed or edited sections
    restart_only: tuple[str, ...]  # settings that changed but take effect only at restart
    refused: tuple[str, ...] = ()  # settings whose change refuses the reload


def plan_reload(old: Loaded, new: Loaded) -> ReloadPlan:
    """Compare two loaded sets; `new` has already passed every validation."""
    return ReloadPlan(
        new=new,
        schedule_changed=old.config.schedule != new.config.schedule,
        backends_changed=dict(old.config.swept_backends) != dict(new.config.swept_backends),
        restart_only=_changed(RESTART_ONLY, old.config, new.config),
        refused=_changed(REFUSED_ON_RELOAD, old.config, new.config),
    )


def _changed(
    settings: dict[str, Callable[[Config], object]], old: Config, new: Config
) -> tuple[str, ...]:
    return tuple(name for name, read in settings.items() if read(old) != read(new))


def refusal_diagnostics(path: Path, plan: ReloadPlan) -> list[Diagnostic]:
    """Why a validated reload is still refused: a setting only a restart can change."""
    return [
        Diagnostic(str(path), 1, 1, f"{name} changed: it takes a restart, not a reload; "
                   "nothing of this reload was applied")
        for name in plan.refused
    ]  # fmt: skip


def policy_files(policies: PolicySet) -> list[dict[str, Any]]:
    """Each policy file once, in order, with the sha256 and git commit it was loaded at."""
    seen: dict[str, dict[str, Any]] = {}
    for policy in policies:
        source = policy.source
        seen.setdefault(source.file, {"file": source.file, "sha256": source.sha256,
                                      "commit": source.commit})  # fmt: skip
    return list(seen.values())


def reload_fields(loaded: Loaded) -> dict[str, Any]:
    """Audit fields of a `reload` record: what is active from now on."""
    return {
        "config": str(loaded.config.path),
        "policies": len(loaded.policies),
        "policy_names": [policy.name for policy in loaded.policies],
        "policy_files": policy_files(loaded.policies),
        "backends": loaded.backend_names,
        "dry_run": loaded.config.dry_run,
    }


def reload_failed_fields(
    config_path: Path, diagnostics: Sequence[Diagnostic], kept: Loaded
) -> dict[str, Any]:
    """Audit fields of a `reload_failed` record: every problem as `FILE:LINE:COL: message`, and
    the size of the set that stays active."""
    return {
        "config": str(config_path),
        "diagnostics": [str(diagnostic) for diagnostic in diagnostics],
        "policies_kept": len(kept.policies),
    }
