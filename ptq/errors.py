"""One exception type for every user-facing error: its message is a single line naming the bad value; and one for
a file that cannot be written (disk full, quota, read-only file system), naming the file."""
from __future__ import annotations

import errno as errno_names
from collections.abc import Iterator
from contextlib import contextmanager


class PTQError(Exception):
    """A user error (bad config value, missing data, corrupt checkpoint). Printed as one line, exit code 2."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def choices(values) -> str:
    """Format valid choices for an error message."""
    return ", ".join(sorted(str(v) for v in values))


class WriteError(OSError):
    """A file of a run could not be written: the message is one line naming the path. Not a bad input (exit 1,
    without a traceback: the input was fine, the file system failed)."""

    def __str__(self) -> str:
        return str(self.strerror)


@contextmanager
def writing(path) -> Iterator[None]:
    """Turn an OSError raised while writing `path` into a WriteError that names it (a write() on a full disk says
    only "No space left on device")."""
    try:
        yield
    except WriteError:
        raise
    except OSError as e:
        code = errno_names.errorcode.get(e.errno, e.errno) if e.errno else type(e).__name__
        raise WriteError(e.errno, f"cannot write {path}: {e.strerror or e} ({code})", str(path)) from e
