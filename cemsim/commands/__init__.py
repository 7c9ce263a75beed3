"""One module per `cemsim` subcommand group; cli.py wires them together."""
