"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class PoolbenchError(Exception):
    """A problem the user can fix; its message is one line that names the problem."""

    exit_code = 2
    # A fault of the run as a whole (e.g. its results folder cannot be written): the runner
    # ends the run on it. Any other error inside a variant fails that variant alone.
    ends_run = False


def first_line(exc: BaseException) -> str:
    """An error's first line (or its type): driver messages run to several lines of detail."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
