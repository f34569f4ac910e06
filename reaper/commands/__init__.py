"""One module per command. Each has `add_parser(subparsers)` and `run(args) -> int`; `cli.py`
imports only the module of the command being run, so `reaper validate` stays light."""
