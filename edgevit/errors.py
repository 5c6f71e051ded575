"""User-facing errors: the CLI prints their message as one line and exits non-zero, without a traceback."""


class EdgevitError(Exception):
    """A problem with what the user asked for; the message names the problem and the fix."""
