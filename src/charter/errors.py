"""The one exception type users see: a single line that names the input and the fix."""

from __future__ import annotations


class CharterError(Exception):
    """A problem with the user's input or environment, reported as one line.

    The CLI prints the message and exits with ``exit_code`` (2 for bad input, the
    default), without a traceback.
    """

    exit_code = 2

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        # Error messages are one line by contract: fold anything a caller passed in.
        super().__init__(" ".join(message.split()))
        if exit_code is not None:
            self.exit_code = exit_code
