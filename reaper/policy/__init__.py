"""The policy language: files → a checked, compiled policy set.

Owns reading YAML with positions (`yamlsrc`), the JSON Schemas (`schema/`), loading `reaper.yaml`
and the policy files with every problem located as `file:line:col` (`config`), compiled policies
and their pure evaluation (`model`, `selectors`, `where`, `globs`, `durations`, `index`), and the
text a policy renders (`templates`, `reasons`). Reference: docs/policies.md, docs/config.md.

May import: the ground (`reaper.jobs`, `reaper.errors`, `reaper.redact`) and `reaper.backends.base`
(the reason length cap). Never the audit log, the engine, the service or the commands."""
