"""One exception type for every user-facing error: its message is a single line naming the bad value."""


class PTQError(Exception):
    """A user error (bad config value, missing data, corrupt checkpoint). Printed as one line, exit code 2."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def choices(values) -> str:
    """Format valid choices for an error message."""
    return ", ".join(sorted(str(v) for v in values))
