"""Quiet start-up: no TensorFlow, absl, oneDNN, CUDA or XLA log lines from the command line.

TensorFlow's C++ code writes some lines to file descriptor 2 before its logging is set up
("All log messages before absl::InitializeLog() ...", "Could not find cuda drivers",
`cpu_feature_guard`), and later ones from its own threads, whatever `TF_CPP_MIN_LOG_LEVEL`
says. So `quiet()` both sets the log-level environment variables (inherited by worker
processes) and points descriptor 2 at /dev/null for the length of a command, while Python's
`sys.stderr` keeps writing to the real stderr: tlkeras' own messages, tracebacks and
warnings still show. Warnings that tlkeras raises print as one `tlkeras: warning:` line;
those of other libraries are dropped. This module imports no TensorFlow.

`--verbose` or `TLKERAS_DEBUG=1` skip all of it.

Example:
    >>> with quiet():
    ...     import tensorflow as tf  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from collections.abc import Iterator

#: Set (unless already set) while quiet: C++ log levels of TensorFlow, XLA, gRPC and glog.
QUIET_ENVIRONMENT = {
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "TF_CPP_MAX_VLOG_LEVEL": "-1",
    "GRPC_VERBOSITY": "ERROR",
    "GLOG_minloglevel": "3",
    "AUTOGRAPH_VERBOSITY": "0",
}
#: Python loggers turned down to ERROR while quiet (tf.function retracing, absl, JAX).
QUIET_LOGGERS = ("tensorflow", "absl", "jax", "jax._src.xla_bridge", "h5py")

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def progress_verbose(in_a_log: int = 0) -> int:
    """Keras' `verbose` for a progress bar: a moving bar on a terminal, `in_a_log` otherwise.

    Example:
        >>> model.predict(images, verbose=progress_verbose())  # doctest: +SKIP
    """
    return 1 if sys.stdout.isatty() else in_a_log


@contextlib.contextmanager
def quiet(enabled: bool = True) -> Iterator[None]:
    """Silences the start-up and log lines of TensorFlow and friends inside the block.

    Args:
        enabled: False does nothing (for `--verbose` and `TLKERAS_DEBUG=1`).

    Example:
        >>> with quiet(enabled=True):
        ...     pass
    """
    if not enabled:
        yield
        return
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with _native_stderr_silenced(), _only_tlkeras_warnings():
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Points descriptor 2 at /dev/null; Python's sys.stderr keeps the real one."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # No descriptor 2 (e.g. a GUI): nothing to silence.
        yield
        return
    python_stderr = sys.stderr
    if _writes_to_fd(python_stderr, 2):
        sys.stderr = io.TextIOWrapper(
            os.fdopen(os.dup(saved), "wb", buffering=0),
            encoding=getattr(python_stderr, "encoding", None) or "utf-8",
            errors="backslashreplace",
            line_buffering=True,
            write_through=True,
        )
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    finally:
        if sys.stderr is not python_stderr:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
                sys.stderr.close()
            sys.stderr = python_stderr
        os.dup2(saved, 2)
        os.close(saved)


def _writes_to_fd(stream, fd: int) -> bool:
    try:
        return stream.fileno() == fd
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False  # Replaced in-process (pytest's capsys, a notebook): leave it be.


@contextlib.contextmanager
def _only_tlkeras_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        original = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if os.path.abspath(filename).startswith(_PACKAGE_DIR + os.sep):
                text = " ".join(str(message).split())
                print(f"tlkeras: warning: {text}", file=file or sys.stderr)

        warnings.showwarning = show
        try:
            yield
        finally:
            warnings.showwarning = original
