"""Atomic file writes: a kill or a full disk leaves the old file or the new one, never half.

Every file is written to a temporary name (`.tmp-*`) in the same folder, flushed to disk and
renamed into place with `os.replace`. A SIGKILL may leave a `.tmp-*` file behind;
`remove_temporary_files` deletes those.

Example:
    >>> atomic_write("runs/digits/config.json", '{"epochs": 5}')
    >>> write_atomically("runs/digits/model.keras", model.save, suffix=".keras")
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid

#: Temporary files and folders start with this; tlkeras deletes them after a killed write.
TEMPORARY_PREFIX = ".tmp-"


def sync(path) -> None:
    """Flushes a file (or, on POSIX, a folder's entries) from the OS cache to the disk.

    Example:
        >>> sync("runs/digits")   # the renames inside the folder survive a power cut
    """
    if os.path.isdir(path) and os.name != "posix":
        return  # Windows cannot open a folder to flush it; its renames are journaled.
    handle = os.open(path, os.O_RDONLY if os.path.isdir(path) else os.O_RDWR)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def write_atomically(path, write, *, suffix: str = "") -> None:
    """Writes a file through a temporary name in the same folder, then renames it into place.

    `write(temporary_path)` creates the file; it is then flushed to disk and renamed over
    `path` with `os.replace`, which is atomic. A kill, an exception or a full disk at any
    moment leaves the old `path` or the new one, never a truncated file; an exception also
    removes the temporary file (a SIGKILL leaves it, named `.tmp-*`, for
    `remove_temporary_files`).

    Args:
        path: The file to write.
        write: A function that writes the whole file to the path it is given.
        suffix: The temporary file's ending, for writers that check it (e.g. `".keras"`).

    Example:
        >>> write_atomically("model.keras", model.save, suffix=".keras")
    """
    folder = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(folder, f"{TEMPORARY_PREFIX}{uuid.uuid4().hex}{suffix}")
    try:
        write(temporary)
        sync(temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise
    sync(folder)


def atomic_write(path, data: bytes | str) -> None:
    """Writes bytes or UTF-8 text to a file atomically (see `write_atomically`)."""
    if isinstance(data, str):
        data = data.encode("utf-8")

    def write(temporary):
        with open(temporary, "xb") as f:
            f.write(data)

    write_atomically(path, write)


def remove_temporary_files(folder) -> list[str]:
    """Deletes the `.tmp-*` files (and folders) a killed write left in `folder`."""
    if not os.path.isdir(folder):
        return []
    names = [name for name in os.listdir(folder) if name.startswith(TEMPORARY_PREFIX)]
    for name in names:
        path = os.path.join(folder, name)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
    return names
