"""The one exception a user mistake raises.

The CLI prints a :class:`VitdeployError` as a single line and exits non-zero; anything else is a
bug and keeps its traceback. Messages say what happened, then what was expected.
"""


class VitdeployError(Exception):
    """A user-facing error: bad input, missing dependency, unreadable artifact."""


class VitdeployWarning(UserWarning):
    """Something a user should know that does not stop the work (the CLI prints `Warning: ...`)."""

