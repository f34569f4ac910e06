"""The engine: one sweep, from listing to audited cancels.

Owns listing and evaluating a backend (`scan`), the pure decision step — dedupe, protect tag,
limits, fraction guard, re-cancel window, pause (`decide`), acting on it — re-check, cancel,
audit (`sweep`), building a sweep from a loaded config (`runtime`, `pool`), and rendering plans
and sweep results (`report`). The sweep's steps: docs/architecture.md, "One sweep".

May import: the policy language (`reaper.policy`), the audit log (`reaper.audit`), the backends
and the ground. Never the service or the commands."""
