"""Loopback emulators of the AWS Batch, Tapis Jobs v3 and Sutro job APIs, for `reaper demo`, the
tests and the benchmarks: each speaks its service's wire protocol over one shared job table
(`base`), and is checked against an independent reference (docs/architecture.md, "Emulators").

May import: the ground (`reaper.jobs`) only. Never the backends: an emulator that shared the
client's code would share its mistakes."""
