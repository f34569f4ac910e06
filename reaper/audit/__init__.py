"""The audit log: an append-only, hash-chained JSON Lines file that explains every decision.

Owns writing records durably before the action they announce (`writer`), reading them back with
a torn last line tolerated (`reader`), checking the chain (`verify`), and reconciling intents a
crash left without a result (`reconcile`). Record format: docs/audit.md.

May import: the backends (reconciliation reads a job's state) and the ground. Never the policy
language, the engine, the service or the commands."""
