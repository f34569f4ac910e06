"""The git commit a policy file comes from, for the audit's `policy_commit` (docs/audit.md)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

GIT_TIMEOUT_S = 5.0
_REPO_OVERRIDES = frozenset({"GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"})
_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # SHA-1 or SHA-256 object names


def commit_of(path: Path, timeout: float = GIT_TIMEOUT_S) -> str | None:
    """The commit that last changed `path`, or None when the file is not tracked in a git work
    tree, git is missing, or git does not answer within `timeout` seconds. Never raises.

    A file with uncommitted changes still reports its last commit; the audit's `policy_sha256`
    tells the two apart. git refuses repositories owned by another user ("dubious ownership");
    that is deliberately not overridden, and gives None."""
    folder = path.parent if str(path.parent) else Path(".")
    command = ["git", "log", "-1", "--format=%H", "--", path.name]
    # Discover the repository from the file's folder even when run from a git hook (which sets
    # GIT_DIR); optional locks off, so a read-only lookup never contends with an operator's git.
    env = {k: v for k, v in os.environ.items() if k not in _REPO_OVERRIDES}
    env.update(GIT_OPTIONAL_LOCKS="0", GIT_TERMINAL_PROMPT="0")
    try:
        done = subprocess.run(
            command,
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and _COMMIT.fullmatch(commit) else None
