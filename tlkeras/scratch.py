"""Scratch folders in the temporary folder that the next run removes if their process died.

A disk feature cache (`tlkeras.features`) and a non-chief worker's run folder
(`tlkeras.train`) live in folders of the system's temporary folder (`TMPDIR`). A run deletes
them when it ends, but a killed run (SIGKILL, the OOM killer, a closed laptop) cannot, and a
disk cache can take gigabytes. So each scratch folder has a lock file beside it,

    $TMPDIR/tlkeras-features-k2j4x9/         the shards
    $TMPDIR/tlkeras-features-k2j4x9.lock     flock'ed by the process that made the folder

and every run starts by removing the scratch folders whose lock nobody holds
(`remove_stale_scratch_folders`): the kernel releases a `flock` when its process ends,
however it ends, so an unlocked folder belongs to a dead process. No pid is checked.

- The lock file lies beside the folder, not in it: a worker's folder is a run folder, which
  must start empty, and which the worker may lock itself (`tlkeras.run_lock`).
- A folder with no lock file (left by a tlkeras without locks, or killed in the instant
  between making the folder and its lock) is removed once it is a day old.
- A folder or lock changed in the last `GRACE_SECONDS` is never removed: its process may be
  between making the folder and locking it.
- Where `fcntl` is missing (Windows), nothing is locked and nothing is removed.

Example:
    >>> folder = make_scratch_folder("tlkeras-features-")
    >>> ...  # write shards into folder
    >>> remove_scratch_folder(folder)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time

from tlkeras.errors import UsageError

try:
    import fcntl
except ImportError:  # Windows.
    fcntl = None

#: The names of tlkeras' scratch folders start with one of these.
PREFIXES = ("tlkeras-features-", "tlkeras-worker-")
LOCK_SUFFIX = ".lock"
#: Seconds after its last change during which a scratch folder is never removed.
GRACE_SECONDS = 10
#: Age in seconds after which a scratch folder without a lock file is removed.
UNLOCKED_MAX_AGE = 24 * 3600

_held: dict[str, int] = {}  # folder -> the file descriptor holding its lock


def make_scratch_folder(prefix: str, directory=None) -> str:
    """Makes a scratch folder and locks it for this process, after removing stale ones.

    Args:
        prefix: One of `PREFIXES`.
        directory: Where; defaults to the system's temporary folder (`TMPDIR`).

    Returns:
        The new folder's path.
    """
    if prefix not in PREFIXES:
        raise UsageError(f"prefix must be one of {PREFIXES}. Received: prefix={prefix!r}")
    remove_stale_scratch_folders(directory)
    folder = tempfile.mkdtemp(prefix=prefix, dir=directory)
    if fcntl is not None:
        fd = os.open(folder + LOCK_SUFFIX, os.O_RDWR | os.O_CREAT, 0o600)
        with contextlib.suppress(OSError):  # Without flock here, no other run removes it.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _held[folder] = fd
    return folder


def remove_scratch_folder(folder) -> None:
    """Deletes a scratch folder and its lock file, and lets go of the lock."""
    folder = os.fspath(folder)
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        os.remove(folder + LOCK_SUFFIX)
    fd = _held.pop(folder, None)
    if fd is not None:
        os.close(fd)


def remove_stale_scratch_folders(directory=None) -> list[str]:
    """Removes the scratch folders in `directory` whose process has died.

    Args:
        directory: Where to look; defaults to the system's temporary folder (`TMPDIR`).

    Returns:
        The folders removed.

    Example:
        >>> remove_stale_scratch_folders()
        ['/tmp/tlkeras-features-k2j4x9']
    """
    if fcntl is None:
        return []
    directory = tempfile.gettempdir() if directory is None else os.fspath(directory)
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    removed = []
    for entry in entries:
        ours = entry.name.startswith(PREFIXES) and entry.is_dir(follow_symlinks=False)
        if ours and entry.path not in _held and _remove_if_stale(entry.path):
            removed.append(entry.path)
    return removed


def _remove_if_stale(folder: str) -> bool:
    lock = folder + LOCK_SUFFIX
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        if _age(folder) < UNLOCKED_MAX_AGE:
            return False
        shutil.rmtree(folder, ignore_errors=True)
        return True
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # Held: its process lives (or the file system cannot tell).
        os.close(fd)
        return False
    try:
        if min(_age(folder), _age(lock)) < GRACE_SECONDS:
            return False
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.remove(lock)
        return True
    finally:
        os.close(fd)


def _age(path: str) -> float:
    try:
        return time.time() - os.stat(path).st_mtime
    except OSError:
        return 0.0
