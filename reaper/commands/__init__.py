"""The commands: one module per subcommand, each with `add_parser(subparsers)` and
`run(args) -> int`. `reaper.cli` imports only the module of the command being run, so
`reaper validate` stays light. Reference: docs/commands.md.

May import: every part below (service, engine, policy, audit, backends, emulators, ground). A
command that runs another goes through `args.run_command` (set by the CLI), never imports the
CLI."""
