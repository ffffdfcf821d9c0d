"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class PoolbenchError(Exception):
    """A problem the user can fix; its message is one line that names the problem."""

    exit_code = 2
