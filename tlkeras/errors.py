"""What went wrong, as the command line's exit status: `UsageError` and `exit_status`.

This module imports no TensorFlow or Keras, so the command line can use it before any
heavy import. The exit statuses of `python -m tlkeras` (also in the README):

    0    success
    1    an internal error (a bug): `tlkeras: internal error: ...`, TLKERAS_DEBUG=1 shows
         the traceback; or no ImageNet weights (not cached, not provisioned, no internet):
         `tlkeras: error: ...` with the command that provisions them
    2    a usage error: a bad flag or value, a missing folder, an unknown backbone, a file
         that is not an image, a data folder that fails its checks
    3    a file or data problem: a truncated or corrupt file (model, checkpoint, image),
         permission denied, the disk full, an I/O error, out of memory
    130  interrupted (Ctrl-C); 143 when stopped by SIGTERM

Example:
    >>> exit_status(UsageError("Bad flag. Received: epochs=0"))
    2
    >>> exit_status(PermissionError(13, "Permission denied"))
    3
"""

from __future__ import annotations

import errno
import json
import os
import zipfile

USAGE = 2
FILE_PROBLEM = 3
#: Kept at 1, as before (tests/test_weights.py pins it); the message tells it from a bug.
NO_WEIGHTS = 1
INTERNAL = 1

#: Raised for a file that is damaged or cannot be read or written (the cause of a ValueError).
_FILE_ERRORS = (OSError, EOFError, zipfile.BadZipFile, json.JSONDecodeError, MemoryError)
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


class UsageError(ValueError):
    """A mistake in what the user typed: a flag value, a path, a name; exit status 2.

    A subclass of ValueError, so `except ValueError` in library callers keeps working.

    Example:
        >>> raise UsageError("--epochs must be at least 1. Received: epochs=0")
        Traceback (most recent call last):
        ...
        tlkeras.errors.UsageError: --epochs must be at least 1. Received: epochs=0
    """


def exit_status(error: BaseException) -> int:
    """Returns the exit status for an exception that ended a command (see the module doc).

    Args:
        error: The exception a command raised.

    Returns:
        2, 3 or 1 (130/143 for interruptions are the caller's).

    Example:
        >>> exit_status(RuntimeError("boom"))
        1
    """
    if isinstance(error, UsageError):
        return USAGE
    if _is_named(error, "WeightsUnavailableError"):
        return NO_WEIGHTS
    if _is_file_problem(error):
        return FILE_PROBLEM
    if isinstance(error, (ValueError, TypeError)) and is_deliberate(error):
        return USAGE  # The library's checks of its arguments (house style: "Received: ...").
    return INTERNAL


def is_deliberate(error: BaseException) -> bool:
    """Whether tlkeras raised `error` on purpose: raised in its own code, saying what it got.

    Every message tlkeras raises for a user's mistake ends with `Received: name=value`;
    a ValueError from deep inside numpy or Keras, or a bug in tlkeras, does not.

    Example:
        >>> is_deliberate(ValueError("invalid literal for int()"))
        False
    """
    return "Received:" in str(error) and _raised_in_tlkeras(error)


def describe(error: BaseException) -> str:
    """The one-line message for an exception that ended a command, without the exit status.

    Example:
        >>> describe(UsageError("Bad value.\\n  Received: x=1"))
        'tlkeras: error: Bad value. Received: x=1'
    """
    text = one_line(error)
    status = exit_status(error)
    if status == FILE_PROBLEM:
        advice = text if is_deliberate(error) else _file_advice(error, text)
        return f"tlkeras: file error: {advice}"
    if status == INTERNAL and not is_deliberate(error):
        return (
            f"tlkeras: internal error: {type(error).__name__}: {text} (a bug in tlkeras or a "
            "library it uses; set TLKERAS_DEBUG=1 for the traceback)"
        )
    return f"tlkeras: error: {text}"


def one_line(error: BaseException) -> str:
    """The exception's message with its line breaks and repeated spaces collapsed."""
    return " ".join(str(error).split()) or type(error).__name__


def _file_advice(error: BaseException, text: str) -> str:
    errno_value = getattr(_file_cause(error), "errno", None)
    if errno_value in (errno.ENOSPC, getattr(errno, "EDQUOT", None)):
        return f"{text}. The disk is full: free some space or write elsewhere (--out)."
    if errno_value in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{text}. Check the file's permissions, or write elsewhere (--out)."
    if isinstance(_file_cause(error), MemoryError) or _is_named(error, "ResourceExhaustedError"):
        return f"{text}. Out of memory: try a smaller --batch-size or --image-size."
    return f"{text}. Check that the file is complete and readable (copy it again if not)."


def _is_file_problem(error: BaseException) -> bool:
    if _is_named(error, "ResourceExhaustedError"):
        return True
    if isinstance(error, (FileNotFoundError, NotADirectoryError)) and is_deliberate(error):
        return False  # tlkeras' own check of a path the user typed.
    return _file_cause(error) is not None


def _file_cause(error: BaseException | None) -> BaseException | None:
    """The error itself, or the first error it was raised from or while handling (even
    `from None`), that is a damaged, unreadable or unwritable file.

    A missing file met on the way (FileNotFoundError) or a file that is not an image at all
    (Pillow's UnidentifiedImageError) is not one: those are what the user typed.
    """
    if isinstance(error, _FILE_ERRORS) and not _is_named(error, "UnidentifiedImageError"):
        return error
    seen = {id(error)}
    error = error and (error.__cause__ or error.__context__)
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        missing = isinstance(error, (FileNotFoundError, NotADirectoryError))
        if missing or _is_named(error, "UnidentifiedImageError"):
            return None
        if isinstance(error, _FILE_ERRORS):
            return error
        error = error.__cause__ or error.__context__
    return None


def _is_named(error: BaseException | None, name: str) -> bool:
    """isinstance by class name, so the check needs no import of Keras or Pillow."""
    return error is not None and any(cls.__name__ == name for cls in type(error).__mro__)


def _raised_in_tlkeras(error: BaseException) -> bool:
    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = os.path.abspath(tb.tb_frame.f_code.co_filename)
    return filename.startswith(_PACKAGE_DIR + os.sep)


def debug_enabled() -> bool:
    """Whether TLKERAS_DEBUG asks for tracebacks and TensorFlow's own log lines."""
    return os.environ.get("TLKERAS_DEBUG", "") not in ("", "0")


__all__ = ["UsageError", "describe", "exit_status", "is_deliberate", "one_line"]
