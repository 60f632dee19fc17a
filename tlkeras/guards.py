"""Stopping training safely: on Ctrl-C (or SIGTERM) after the current batch, and on a NaN loss.

Both guards are Keras callbacks that raise an exception, so `model.fit` stops at once: the
epoch in progress is neither checkpointed nor saved as best.keras, and the last checkpoint
(`tlkeras.checkpoints`) stays the last good state to resume from.

Example:
    >>> with StopOnInterrupt() as interrupt:
    ...     model.fit(train_ds, epochs=5, callbacks=[StopOnNaN(), interrupt])
"""

from __future__ import annotations

import collections
import math
import os
import signal
import sys
import threading
import time

import keras
import numpy as np


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped after a batch because the process got SIGINT (Ctrl-C) or SIGTERM.

    A `KeyboardInterrupt`, so code that already handles Ctrl-C keeps working.

    Attributes:
        epoch: The epoch in progress, 0-based.
        batch: The batch after which training stopped, 0-based; `None` between batches.
        exit_status: What a command line should exit with: 130 after SIGINT, 143 after
            SIGTERM (128 plus the signal number, as shells do).
    """

    def __init__(self, message: str, *, epoch=None, batch=None, signal_number=signal.SIGINT):
        super().__init__(message)
        self.epoch, self.batch = epoch, batch
        self.exit_status = 128 + int(signal_number)


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite, so training stopped.

    Attributes:
        epoch: The epoch in progress, 0-based.
        batch: The batch whose loss was not finite, 0-based; `None` if it was found at the
            end of the epoch (e.g. in the validation loss).
    """

    def __init__(self, message: str, *, epoch=None, batch=None):
        super().__init__(message)
        self.epoch, self.batch = epoch, batch


def _where(epoch, batch, steps) -> str:
    if batch is None:
        return f"at the end of epoch {epoch + 1}"
    of_steps = f" of {steps}" if steps else ""
    return f"at epoch {epoch + 1}, batch {batch + 1}{of_steps}"


class StopOnNaN(keras.callbacks.Callback):
    """Stops training as soon as the loss is NaN or infinite, naming the epoch and batch.

    Keras' `TerminateOnNaN` lets the epoch finish, so the broken weights would be validated
    and checkpointed; this guard raises `TrainingDivergedError` from the batch itself.

    Example:
        >>> model.fit(train_ds, epochs=5, callbacks=[StopOnNaN()])
    """

    def __init__(self):
        super().__init__()
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs, "loss", batch)

    def on_epoch_end(self, epoch, logs=None):
        self._check(logs, "loss", None)
        self._check(logs, "val_loss", None)

    def _check(self, logs, key, batch) -> None:
        value = (logs or {}).get(key)
        if value is None or math.isfinite(float(value)):
            return
        steps = (self.params or {}).get("steps")
        hint = "Lower the learning rate"
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None:
            rate = float(np.asarray(keras.ops.convert_to_numpy(optimizer.learning_rate)))
            hint += f" (it is {rate:g}; try a tenth of it)"
        raise TrainingDivergedError(
            f"The {'training' if key == 'loss' else 'validation'} loss became {float(value)} "
            f"{_where(self._epoch, batch, steps)}: training diverged and was stopped. {hint}.",
            epoch=self._epoch,
            batch=batch,
        )


class StopOnInterrupt(keras.callbacks.Callback):
    """On Ctrl-C (SIGINT) or SIGTERM, lets the current batch finish, then stops training.

    Use it as a context manager around training, so the previous signal handlers come back
    afterwards. The first signal asks to stop; training then raises `TrainingInterrupted`
    after the batch in progress (or the validation batch, or at the end of the epoch, after
    every callback listed before this one has run, so put it last). A second Ctrl-C stops at
    once. Outside the main thread, where Python cannot handle signals, it does nothing.

    Example:
        >>> with StopOnInterrupt() as interrupt:
        ...     model.fit(train_ds, epochs=5, callbacks=[checkpoint, interrupt])
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        super().__init__()
        self.signal_number = None
        self._previous = {}
        self._epoch = 0

    def __enter__(self) -> StopOnInterrupt:
        if threading.current_thread() is threading.main_thread():
            for number in self.SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    @property
    def requested(self) -> bool:
        """True once a signal asked training to stop."""
        return self.signal_number is not None

    def _handle(self, signal_number, frame) -> None:
        if self.requested:
            self.__exit__()
            raise TrainingInterrupted(
                "Stopped at once by a second signal.", signal_number=signal_number
            )
        self.signal_number = signal_number
        print(
            f"\n{signal.Signals(signal_number).name}: stopping after the current batch "
            "(press Ctrl-C again to stop at once).",
            file=sys.stderr,
            flush=True,
        )

    def stop_if_requested(self, where: str = "between two stages", batch=None) -> None:
        """Raises `TrainingInterrupted` if a signal asked to stop; `where` goes in its message."""
        if self.requested:
            raise TrainingInterrupted(
                f"Training was interrupted {where}.",
                epoch=self._epoch,
                batch=batch,
                signal_number=self.signal_number,
            )

    def on_train_begin(self, logs=None):
        self.stop_if_requested()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        steps = (self.params or {}).get("steps")
        self.stop_if_requested(_where(self._epoch, batch, steps), batch)

    def on_test_batch_end(self, batch, logs=None):
        self.stop_if_requested(f"while validating epoch {self._epoch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        self.stop_if_requested(_where(epoch, None, None))


#: The environment variable of the test hook `kill_point`.
KILL_AT = "TLKERAS_KILL_AT"
#: With this set to a file, `kill_point` appends each point reached to it (a phase trace).
PHASE_LOG = "TLKERAS_PHASE_LOG"
_reached: collections.Counter = collections.Counter()


def kill_point(name: str) -> None:
    """A test hook: SIGKILLs this process at the point `name` when `TLKERAS_KILL_AT` names it.

    `TLKERAS_KILL_AT=NAME` kills the first time the point is reached, `NAME:N` the N-th
    time. Tests use it to kill a run at an exact moment (between two writes, say) instead
    of sleeping and hoping. `TLKERAS_PHASE_LOG=FILE` appends a line `NAME UNIX_TIME` to FILE
    at every point reached, so a benchmark can tell in which phase its kill landed and how
    long each phase took. Unset, it does nothing.

    The points of `tlkeras.train`: `loading`, `loaded` (the data folder scanned and decoded),
    `stage1_begin`, `features_cached`, `fit_begin`, `best_saved`, `checkpoint_saved`,
    `stage1_end`, the same for stage 2, `saving`, `run_file_saved` (the final `model.keras`
    written, the other run files not yet) and `finished`.

    Example:
        TLKERAS_KILL_AT=checkpoint_saved:2 python -m tlkeras train ...   # after epoch 2
    """
    log = os.environ.get(PHASE_LOG)
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"{name} {time.time():.3f}\n")
    wanted = os.environ.get(KILL_AT)
    if not wanted:
        return
    target, _, count = wanted.partition(":")
    if target == name:
        _reached[name] += 1
        if _reached[name] == int(count or 1):
            os.kill(os.getpid(), signal.SIGKILL)
