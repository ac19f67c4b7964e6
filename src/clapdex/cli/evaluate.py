"""CLI verbs: (to be filled)."""

COMMANDS: list = []
