"""The error every command turns into one line and exit status 2 (no traceback)."""


class CommandError(Exception):
    """A user-facing error: what was expected, what was got, and how to fix it."""
