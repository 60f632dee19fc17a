"""One writer per run folder: `RunLock`, held for as long as a process writes a folder.

Two processes writing one run folder corrupt it: a job that a scheduler restarts while the
first attempt still runs, a second terminal, a kill that reached only the parent shell. One
`--resume` reads a checkpoint that the other then deletes, and either may die with a file
error. `train`, `pretrain` and `export` into a run folder therefore hold this lock, and a
second writer is refused at once, with one line naming the process that holds it:

    tlkeras: file error: The run folder 'runs/digits' is in use by another process: pid 4242
    on host node7 (tlkeras train, since 2026-05-01 12:00:03). ...

How it works:

- **The lock is `fcntl.flock` on the run folder itself** (a file descriptor of the folder,
  exclusive, non-blocking). The kernel releases it when the process ends, however it ends
  (SIGKILL, the OOM killer, a crash), so a lock left by a dead process is simply taken over;
  no pid is ever checked for staleness.
- **Why the folder and not a lock file inside it:** a run folder's checks count every entry
  that is not a `.tmp-*` leftover as a run (a new run refuses such a folder), and a starting
  run deletes `.tmp-*` entries (`tlkeras.files.remove_temporary_files`). A lock file would
  either make a new run's folder look taken or be deleted under its holder; the folder's
  own inode is neither.
- **Who holds it** is written, for the message only, to `.tmp-lock-holder.json` in the folder:
  pid, host, command and start time. A starting run may delete it with the other `.tmp-*`
  files, so the holder writes it again within `NOTE_INTERVAL` seconds while it holds the lock.
  A SIGKILL leaves it behind like any `.tmp-*` file; the next holder replaces it.
- **Re-entrant in one process:** a `RunLock` on a folder this process already holds (a
  callback exporting while `train` runs, a command that calls `train`) just nests.
- A folder the lock had to create is removed again on release if it is still empty, so a
  run that fails its checks leaves no empty folder behind.
- Where `flock` is missing (Windows), the folder is written without a lock. Where the file
  system refuses it on a folder (some network file systems may; not tried here), it is
  written without a lock after a one-line warning.
- Non-chief workers of `--strategy multiworker` write their own temporary folders and lock
  those, so workers never refuse each other; only the chief locks the run folder.

Example:
    >>> with RunLock("runs/digits", purpose="train"):
    ...     ...  # Nobody else writes runs/digits until the block ends.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import threading
import time
import warnings

from tlkeras import files
from tlkeras.errors import DiskError

try:
    import fcntl
except ImportError:  # Windows.
    fcntl = None

#: The note naming the holder; a `.tmp-*` name, so run-folder checks ignore it.
NOTE_FILE = f"{files.TEMPORARY_PREFIX}lock-holder.json"
#: Seconds between the holder's checks that its note is still there.
NOTE_INTERVAL = 0.5
#: Seconds a refused process waits for the holder's note to appear (it follows the lock).
NOTE_WAIT = 2.0

_held = {}  # (st_dev, st_ino) of a folder this process holds -> [its first RunLock, depth].
_held_guard = threading.Lock()


class RunFolderInUseError(DiskError):
    """Another process holds the run folder's lock; exit status 3 (a file problem).

    Attributes:
        holder: What the holder wrote about itself (`pid`, `host`, `purpose`, `since`),
            or `{}` if it has not said.
    """

    def __init__(self, message: str, holder: dict):
        super().__init__(message)
        self.holder = holder


class RunLock:
    """An exclusive lock on a run folder for as long as this process writes it.

    Args:
        folder: The run folder. Created if missing (and removed again on release if it is
            still empty).
        purpose: What this process does there, for the message another process gets
            (e.g. `"train"`). Defaults to `"write"`.

    Raises:
        RunFolderInUseError: On entering, if another live process holds the folder.

    Example:
        >>> with RunLock("runs/digits", purpose="export"):
        ...     export_model("runs/digits", format="onnx")
    """

    def __init__(self, folder, *, purpose: str = "write"):
        self.folder = os.fspath(folder)
        self.purpose = purpose
        self._key = None  # Set while this instance counts in `_held`.
        self._fd = None  # Set on the instance that took the lock.
        self._created = []
        self._stop = threading.Event()
        self._watcher = None

    def __enter__(self) -> RunLock:
        if fcntl is None:
            return self
        with _held_guard:
            outcome = self._take()
        if outcome == "busy":
            raise _in_use(self.folder)
        if isinstance(outcome, OSError):
            _warn_unlockable(self.folder, outcome)
        if self._fd is not None:
            self._write_note()
            self._watcher = threading.Thread(target=self._keep_note, daemon=True)
            self._watcher.start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self._key is None:  # Unlocked (see the module docstring).
            self._remove_created()
            return
        with _held_guard:
            _held[self._key][1] -= 1
            owner, depth = _held[self._key]
            if depth == 0:
                del _held[self._key]
            self._key = None
        if depth == 0:
            owner._release()

    def _take(self):
        """Locks the folder (or nests in this process' lock): None, "busy" or the OSError
        of a file system that cannot lock folders. Called under `_held_guard`."""
        for _ in range(10):  # Again if the folder was replaced between opening and locking.
            self._created += _make_folders(self.folder)
            try:
                fd = _open_folder(self.folder)
            except OSError:  # Not a folder, no permission: the caller's checks explain it.
                self._remove_created()
                return None
            key = _identity(fd)
            if key in _held:
                os.close(fd)
                _held[key][1] += 1
                self._key = key
                return None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                self._remove_created()
                return "busy"
            except OSError as error:  # Goes on unlocked; created folders go on release.
                os.close(fd)
                return error
            if _same_folder(fd, self.folder):
                self._fd, self._key, _held[key] = fd, key, [self, 1]
                return None
            os.close(fd)  # Its last holder removed it just before we locked it: again.
        return "busy"

    def _release(self) -> None:
        self._stop.set()
        self._watcher.join()
        with contextlib.suppress(OSError):
            os.remove(os.path.join(self.folder, NOTE_FILE))  # Before unlocking: it is ours.
        os.close(self._fd)  # Releases the lock (the folder's only descriptor here).
        self._fd = None
        self._remove_created()

    def _write_note(self) -> None:
        note = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "purpose": self.purpose,
            "command": " ".join(sys.argv),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        with contextlib.suppress(OSError):  # A full disk must not stop the run for a note.
            files.atomic_write(os.path.join(self.folder, NOTE_FILE), json.dumps(note) + "\n")

    def _keep_note(self) -> None:
        path = os.path.join(self.folder, NOTE_FILE)
        while not self._stop.wait(NOTE_INTERVAL):
            if not os.path.exists(path):
                self._write_note()

    def _remove_created(self) -> None:
        for folder in reversed(self._created):  # Deepest first; only while still empty.
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        self._created = []


def read_holder(folder) -> dict:
    """What the process holding `folder`'s lock wrote about itself, or `{}`.

    Example:
        >>> read_holder("runs/digits")["pid"]
        4242
    """
    try:
        with open(os.path.join(os.fspath(folder), NOTE_FILE), encoding="utf-8") as f:
            holder = json.load(f)
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def describe_holder(holder: dict) -> str:
    """`pid 4242 on host node7 (tlkeras train, since 2026-05-01 12:00:03)`, or what is known.

    Example:
        >>> describe_holder({"pid": 7, "host": "a", "purpose": "train", "since": "today"})
        'pid 7 on host a (tlkeras train, since today)'
    """
    if "pid" not in holder:
        return "one that has not said which (it may run on another machine)"
    return (
        f"pid {holder['pid']} on host {holder.get('host', '?')} "
        f"(tlkeras {holder.get('purpose', 'write')}, since {holder.get('since', '?')})"
    )


def _in_use(folder: str) -> RunFolderInUseError:
    deadline = time.monotonic() + NOTE_WAIT
    holder = read_holder(folder)
    while not holder and time.monotonic() < deadline:  # It writes its note just after locking.
        time.sleep(0.05)
        holder = read_holder(folder)
    known = "pid" in holder
    stop = f"kill {holder['pid']} on host {holder.get('host', '?')}" if known else "stop it"
    return RunFolderInUseError(
        f"The run folder {folder!r} is in use by another process: {describe_holder(holder)}. "
        f"Two processes writing one run folder corrupt it. Wait for that one to finish (or "
        f"{stop}), then run this again, or write to another folder. Received: run_dir={folder!r}",
        holder,
    )


def _make_folders(folder: str) -> list[str]:
    """Creates `folder` and its missing parents; returns those it created, top first."""
    missing, path = [], os.path.abspath(folder)
    while not os.path.exists(path):
        missing.insert(0, path)
        path = os.path.dirname(path)
    created = []
    for path in missing:
        try:
            os.mkdir(path)
        except FileExistsError:
            continue  # Another process made it: not ours to remove.
        except OSError:
            break  # No permission, a file in the way: the caller's checks explain it.
        created.append(path)
    return created


def _open_folder(folder: str) -> int:
    return os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def _identity(fd: int) -> tuple[int, int]:
    status = os.fstat(fd)
    return status.st_dev, status.st_ino


def _same_folder(fd: int, folder: str) -> bool:
    try:
        status = os.stat(folder)
    except OSError:
        return False
    return (status.st_dev, status.st_ino) == _identity(fd)


def _warn_unlockable(folder: str, error: OSError) -> None:
    reason = errno.errorcode.get(error.errno, error.strerror or str(error))
    warnings.warn(
        f"Cannot lock the run folder {folder!r} on this file system ({reason}), so nothing "
        "stops a second process from writing it at the same time. Make sure only one does.",
        stacklevel=2,
    )
