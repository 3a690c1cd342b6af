"""A lock per job folder, so that two sweeps into one folder never run the same job twice.

The lock is an exclusive `flock` on `<job folder>/.job.lock`, held while the job runs: the kernel releases it when
the process ends in any way (exception, Ctrl-C, SIGKILL), so a dead process never leaves a stale lock. The file
records the holder's pid and host for the message of a waiting job; a lock file left by a dead process (its pid is
gone) is simply taken over. A second sweep reaching a running job waits for it, then finds its results.json and
skips the job.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("ptq")
LOCK_FILE = ".job.lock"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def holder(path: Path) -> dict:
    """The pid/host written into a lock file ({} when unreadable)."""
    try:
        data = json.loads(Path(path).read_text() or "{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _open_locked(path: Path, wait: bool) -> int | None:
    """An fd holding the flock on `path` (the file at `path` now, not one unlinked meanwhile), None when it is
    held and `wait` is false, -1 when the file system cannot lock."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError as e:  # a file system without flock (some network mounts): run unlocked, say so
            os.close(fd)
            log.warning("job folder lock %s not available (%s): two sweeps into this folder may repeat a job", path,
                        e.strerror or e)
            return -1
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the holder removed the file while we waited: lock the new one


def _holder_text(path: Path) -> str:
    who = holder(path)
    pid = who.get("pid")
    if not isinstance(pid, int):
        return "another process"
    here = who.get("host") == socket.gethostname()
    return f"pid {pid} on {who.get('host')}" + ("" if not here or pid_alive(pid) else " (no longer running)")


@contextlib.contextmanager
def job_lock(folder: Path | None) -> Iterator[None]:
    """Hold the job folder's lock for the block; waits (with a log line naming the holder) while another live
    process runs this job. No folder (a job without output) needs no lock."""
    if folder is None:
        yield
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = _open_locked(path, wait=False)
    if fd is None:
        log.info("job folder %s is locked by %s: waiting for it to finish", folder, _holder_text(path))
        fd = _open_locked(path, wait=True)
    if fd == -1:
        yield
        return
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # before unlocking: a waiter that then locks the old file sees it is gone and retries
        os.close(fd)
