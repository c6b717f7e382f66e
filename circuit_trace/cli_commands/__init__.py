"""Argument handling of the larger `circuit-trace` subcommands, kept out of `cli.py` (which keeps
the registration `COMMANDS`, the exit codes and the model loading): `intervene`'s edit options."""
