"""The service: reaper as a long-running daemon.

Owns the daemon loop (`daemon`), per-backend scheduling (`scheduler`), signal flags and the
self-pipe wakeup (`signals`), systemd's notify protocol and watchdog (`systemd`), reload as
validate → swap → keep-the-old-on-failure (`reload`), Prometheus metrics (`metrics`) and log
formatting (`logs`). Running it: docs/systemd.md.

May import: the engine and everything below it. Never the commands."""
