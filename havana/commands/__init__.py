"""One module per `havana` subcommand; each exposes `register(subparsers)` and sets `func(args) -> int`."""
