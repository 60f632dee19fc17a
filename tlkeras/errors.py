"""What went wrong, as an exception type and the command line's exit status.

This module imports no TensorFlow or Keras, so the command line can use it before any
heavy import. tlkeras raises a type for each kind of problem, and `EXIT_STATUSES` maps each
type to the exit status of `python -m tlkeras` and the start of its one-line message (the
README shows the same table):

    0    success
    1    an internal error (a bug in tlkeras or a library): `tlkeras: internal error: ...`;
         TLKERAS_DEBUG=1 shows the traceback
    2    UsageError: what you typed (a bad flag or value, a missing folder, an unknown
         backbone, a file that is not an image, a data folder that fails its checks)
    3    DataError, DiskError, ExportError, or an error of the operating system: a damaged
         or unreadable file (model, checkpoint, image, manifest), a run folder another
         process is writing, no room on the disk, permission denied, a model that could
         not be converted, out of memory
    4    WeightsError: pretrained weights that cannot be had (not cached, not provisioned,
         offline) or that fail their hash check
    130  interrupted (Ctrl-C); 143 when stopped by SIGTERM; 141 when stdout's reader left

The status comes from the type alone, never from the message's wording. Every tlkeras type
is also the built-in type callers expect (`UsageError` is a `ValueError`, `DiskError` an
`OSError`, ...), so `except ValueError` keeps working.

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


class TlkerasError(Exception):
    """Something tlkeras found wrong with its input or its surroundings, not a bug."""


class UsageError(TlkerasError, ValueError):
    """A mistake in what the user typed: a flag value, a path, a name; exit status 2.

    Example:
        >>> raise UsageError("--epochs must be at least 1. Received: epochs=0")
        Traceback (most recent call last):
        ...
        tlkeras.errors.UsageError: --epochs must be at least 1. Received: epochs=0
    """


class UsageTypeError(UsageError, TypeError):
    """A value of the wrong type (a `TypeError` too); exit status 2."""


class MissingPathError(UsageError, FileNotFoundError):
    """A path the user gave that does not exist (a `FileNotFoundError` too); exit status 2."""


class DataError(TlkerasError, ValueError):
    """A file or folder that is damaged, unreadable or inconsistent; exit status 3."""


class DiskError(TlkerasError, OSError):
    """No room on the disk, or a folder that cannot be written; exit status 3."""


class ExportError(TlkerasError, RuntimeError):
    """A converter (TFLite, ONNX) could not convert the model; exit status 3."""


class WeightsError(TlkerasError, RuntimeError):
    """Pretrained weights that cannot be had or fail their check; exit status 4."""


#: Exception type -> (exit status, how the one-line message starts). The first match wins.
EXIT_STATUSES: dict[type, tuple[int, str]] = {
    UsageError: (2, "tlkeras: error:"),
    DataError: (3, "tlkeras: file error:"),
    DiskError: (3, "tlkeras: file error:"),
    ExportError: (3, "tlkeras: export error:"),
    WeightsError: (4, "tlkeras: weights error:"),
}
USAGE, FILE_PROBLEM, NO_WEIGHTS, INTERNAL = 2, 3, 4, 1
#: Errors of the operating system and file formats, raised by libraries: exit status 3.
_FILE_ERRORS = (OSError, EOFError, zipfile.BadZipFile, json.JSONDecodeError, MemoryError)


def exit_status(error: BaseException) -> int:
    """Returns the exit status for an exception that ended a command (see `EXIT_STATUSES`).

    A tlkeras type maps by the table; an operating-system or file-format error, or an error
    raised while handling one, is a file problem (3); anything else is a bug (1).

    Example:
        >>> exit_status(RuntimeError("boom"))
        1
    """
    return _classify(error)[0]


def _classify(error: BaseException) -> tuple[int, str]:
    for kind, entry in EXIT_STATUSES.items():
        if isinstance(error, kind):
            return entry
    if _is_named(error, "ResourceExhaustedError") or _file_cause(error) is not None:
        return FILE_PROBLEM, "tlkeras: file error:"
    return INTERNAL, "tlkeras: internal error:"


def describe(error: BaseException) -> str:
    """The one-line message for an exception that ended a command.

    Example:
        >>> describe(UsageError("Bad value.\\n  Received: x=1"))
        'tlkeras: error: Bad value. Received: x=1'
    """
    text = one_line(error)
    status, start = _classify(error)
    if isinstance(error, TlkerasError):
        return f"{start} {text}"
    if status == FILE_PROBLEM:
        return f"{start} {_file_advice(error, text)}"
    return (
        f"{start} {type(error).__name__}: {text} (a bug in tlkeras or a library it uses; set "
        "TLKERAS_DEBUG=1 for the traceback)"
    )


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


def debug_enabled() -> bool:
    """Whether TLKERAS_DEBUG asks for tracebacks and TensorFlow's own log lines."""
    return os.environ.get("TLKERAS_DEBUG", "") not in ("", "0")


__all__ = [
    "EXIT_STATUSES",
    "DataError",
    "MissingPathError",
    "DiskError",
    "ExportError",
    "TlkerasError",
    "UsageError",
    "UsageTypeError",
    "WeightsError",
    "describe",
    "exit_status",
    "one_line",
]
