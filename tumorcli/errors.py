"""The one domain error type. The CLI turns it into one red line and an exit code.

Exit codes (documented in the README and `tumor --help`):
0 ok, 1 failure, 2 bad input, 3 partial batch (some subjects failed).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_PARTIAL_BATCH = 3


class TumorError(Exception):
    """A failure the user can act on: what went wrong (naming the file) and what to do."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class BadInput(TumorError):
    """The input is missing, unreadable or not what the command needs."""

    exit_code = EXIT_BAD_INPUT


class PartialBatch(TumorError):
    """A batch finished, but some subjects failed."""

    exit_code = EXIT_PARTIAL_BATCH


def first_line(error: BaseException, limit: int = 160) -> str:
    """The first line of a library's error message (or its type name), for our one-line errors."""
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:limit]
