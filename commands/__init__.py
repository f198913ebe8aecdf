"""The `creditstream` command's subcommands, each `(args, settings) -> exit code`; cli.py builds
the command tree and dispatches to them. `server` starts and migrates, `credentials` issues and
revokes what lets a caller in, `ledger` reads and changes the credits, `database` runs a command
on the configured database."""
