"""Run folders: everything needed to predict and evaluate later, saved and loaded safely.

A run folder holds:

    run_dir/
        model.keras        the whole model, preprocessing included; the class names and
                           backbone are embedded in it too (as tlkeras.json in the archive)
        class_names.json   label i means class_names[i]
        config.json        the resolved training configuration and library versions
        history.json       per-epoch metrics of both stages (and history.csv)
        best.keras         the model with the lowest validation loss so far (class names
                           embedded too)
        checkpoint/        the state to resume from (see `tlkeras.checkpoints`)

Every file above is written atomically (`tlkeras.files`), so a kill or a full disk at any
moment leaves the old file or the new one, never half a file. TensorBoard's event files in
`logs/` are the exception: TensorBoard appends to them in place.
Before training, `check_run_folder` and `check_free_space` refuse a folder that exists
already, cannot be written or lacks the disk space for the model and its checkpoints.

Models load safely (`tlkeras.saving.load_model` refuses anything that carries code). Class
names are checked against the model, so a missing or edited `class_names.json` is an error,
never silently wrong labels.

Example:
    >>> run = load_run("runs/digits")
    >>> run.class_names[:3]
    ['0', '1', '2']
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import importlib.metadata
import io
import json
import os
import shutil

import keras

from tlkeras.errors import DataError, DiskError, UsageError
from tlkeras.files import TEMPORARY_PREFIX, atomic_write, remove_temporary_files
from tlkeras.guards import kill_point
from tlkeras.saving import check_class_count, check_class_names, load_model, save_model

MODEL_FILE = "model.keras"
CHECKPOINT_FILE = "best.keras"
CLASS_NAMES_FILE = "class_names.json"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.json"
HISTORY_CSV_FILE = "history.csv"
CHECKPOINT_DIR = "checkpoint"
LOGS_DIR = "logs"  # TensorBoard's event files, one folder per stage
STATE_FILE = "state.json"  # in CHECKPOINT_DIR; see tlkeras.checkpoints
#: The files `save_run` writes; `clear_run_folder` deletes these and `CHECKPOINT_DIR` only.
RUN_FILES = (
    MODEL_FILE,
    CHECKPOINT_FILE,
    CLASS_NAMES_FILE,
    CONFIG_FILE,
    HISTORY_FILE,
    HISTORY_CSV_FILE,
    "history.png",  # tlkeras.plots.HISTORY_PLOT_FILE
    "scan_report.json",  # tlkeras.scan.SCAN_REPORT_FILE
)

#: Disk needed per model parameter at the peak of a run, 4 bytes (float32) per copy: best.keras
#: (1), early stopping's best weights (1), the checkpoint with Adam's two moments (3) and the
#: next checkpoint being written beside it (3). model.keras comes when the checkpoints go.
BYTES_PER_PARAMETER = 4 * (1 + 1 + 3 + 3)
#: Keras' saved configuration, the h5 layout and the file system add some room on top.
DISK_MARGIN_BYTES = 50 * 2**20


@dataclasses.dataclass
class Run:
    """A trained model with everything needed to use it.

    Attributes:
        model: The Keras model; it takes RGB pixels in [0, 255].
        class_names: Label `i` means `class_names[i]`.
        config: The resolved training configuration (empty for a bare `.keras` file).
        history: Per-epoch metrics (empty for a bare `.keras` file).
        path: Where it was loaded from or saved to.
    """

    model: keras.Model
    class_names: list[str]
    config: dict
    history: dict
    path: str

    @property
    def image_size(self) -> tuple[int, int]:
        """The `(height, width)` the model takes."""
        return tuple(self.model.input_shape[1:3])


def _is_run_folder(path) -> bool:
    """True for a folder tlkeras wrote: it has a checkpoint, or a class-names list."""
    if os.path.isdir(os.path.join(path, CHECKPOINT_DIR)):
        return True
    try:
        with open(os.path.join(path, CLASS_NAMES_FILE), encoding="utf-8") as f:
            names = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(names, list) and all(isinstance(name, str) for name in names)


def check_run_folder(path, *, resume: bool = False, overwrite: bool = False) -> None:
    """Checks, before any slow work, that a run can be written to `path`. Changes nothing.

    Args:
        path: The run folder.
        resume: Continue the run already in `path`: the folder must exist.
        overwrite: Replace the run already in `path`; only allowed if `path` is a tlkeras
            run folder (`clear_run_folder` deletes it once training is about to start).

    Raises:
        ValueError: If both options are given; if `path` exists, holds something and
            neither option is given; if `resume` finds no folder; if `overwrite` finds a
            folder tlkeras did not write; or if the folder cannot be created or written.

    Example:
        >>> check_run_folder("runs/digits", overwrite=True)
    """
    path = os.fspath(path)
    if resume and overwrite:
        raise UsageError(
            f"Pass either resume or overwrite, not both: resume continues the run in {path!r}, "
            "overwrite deletes it and starts again. Received: resume=True, overwrite=True"
        )
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(
            f"The run folder {path!r} is a file. Expected a folder to write the run to; choose "
            f"another --out. Received: out={path!r}"
        )
    exists = os.path.isdir(path) and any(
        not name.startswith(TEMPORARY_PREFIX) for name in os.listdir(path)
    )
    if resume and not exists:
        raise UsageError(
            f"There is no run to resume in {path!r}. Expected the run folder of a started run; "
            f"start a new run without --resume. Received: out={path!r}"
        )
    if exists and not resume and not overwrite:
        raise UsageError(
            f"The run folder {path!r} already exists. Pass --resume {path} to continue the run "
            f"in it, --overwrite to replace it, or choose another --out. Received: out={path!r}"
        )
    if exists and overwrite and not _is_run_folder(path):
        raise UsageError(
            f"{path!r} is not a tlkeras run folder (it has no {CHECKPOINT_DIR}/ and no "
            f"{CLASS_NAMES_FILE}), so --overwrite will not delete anything in it. Choose another "
            f"--out. Received: out={path!r}"
        )
    _check_writable(path)


def clear_run_folder(path) -> None:
    """Deletes the files tlkeras writes in a run folder, and its checkpoint; nothing else.

    `class_names.json` goes last, so a folder whose clearing was killed halfway is still
    recognised as a run folder by the next `--overwrite`.
    """
    remove_temporary_files(path)
    for name in RUN_FILES:
        if name != CLASS_NAMES_FILE:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(path, name))
    shutil.rmtree(os.path.join(path, CHECKPOINT_DIR), ignore_errors=True)
    shutil.rmtree(os.path.join(path, LOGS_DIR), ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(path, CLASS_NAMES_FILE))


def _check_writable(path) -> None:
    """Writes and deletes a file in `path`, removing the folders it had to create."""
    created, folder = [], os.path.abspath(path)
    while not os.path.exists(folder):
        created.append(folder)
        folder = os.path.dirname(folder)
    probe = os.path.join(path, f"{TEMPORARY_PREFIX}probe")
    try:
        os.makedirs(path, exist_ok=True)
        atomic_write(probe, b"")
        os.remove(probe)
    except OSError as error:
        raise DiskError(
            f"Cannot write to the run folder {path!r} ({error.strerror or error}). Choose an "
            f"--out folder you can write to. Received: out={path!r}"
        ) from None
    finally:
        for folder in created:  # Deepest first; a failed run leaves no empty folders behind.
            with contextlib.suppress(OSError):
                os.rmdir(folder)


def _existing_parent(path) -> str:
    folder = os.path.abspath(path)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    return folder


def estimate_run_size(num_params: int) -> int:
    """Bytes of disk a run of a model with `num_params` parameters needs at its peak.

    Example:
        >>> estimate_run_size(14_723_010) // 2**20   # VGG16 with a small head
        499
    """
    return num_params * BYTES_PER_PARAMETER + DISK_MARGIN_BYTES


def check_free_space(path, *, num_params: int) -> None:
    """Fails early when the disk under `path` cannot hold the model and its checkpoints.

    Args:
        path: The run folder (or where it will be created).
        num_params: The model's parameter count, e.g. `model.count_params()`.

    Raises:
        ValueError: If the free space is below `estimate_run_size(num_params)`.

    Example:
        >>> check_free_space("runs/digits", num_params=model.count_params())
    """
    needed = estimate_run_size(num_params)
    free = shutil.disk_usage(_existing_parent(path)).free
    if free < needed:
        raise DiskError(
            f"Not enough free disk space for the run in {os.fspath(path)!r}: a model of "
            f"{num_params:,} parameters needs about {_megabytes(needed)} for the model, "
            f"best.keras and the checkpoints, but only {_megabytes(free)} is free. Free some "
            f"space or choose an --out on another disk. Received: free_bytes={free}"
        )


def _megabytes(num_bytes: int) -> str:
    return f"{num_bytes / 2**20:,.0f} MB"


def _json(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def _history_csv(history: dict) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    keys = list(history)
    writer.writerow(keys)
    writer.writerows(zip(*(history[key] for key in keys), strict=True))
    return out.getvalue()


def _version_of(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def save_run(run_dir, *, model, class_names, config, history) -> Run:
    """Writes a run folder (see the module docstring) and returns it as a `Run`."""
    from tlkeras import __version__

    os.makedirs(run_dir, exist_ok=True)
    config = {
        **config,
        "class_names": list(class_names),
        "versions": {
            "tlkeras": __version__,
            "keras": keras.__version__,
            "backend": keras.backend.backend(),
            "tensorflow": _version_of("tensorflow"),
        },
        "saved_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    metadata = {"backbone": config.get("backbone"), "image_size": config.get("image_size")}
    save_model(
        os.path.join(run_dir, MODEL_FILE), model, class_names=class_names, metadata=metadata
    )
    kill_point("run_file_saved")  # The model is written, the rest is not: a test hook.
    atomic_write(os.path.join(run_dir, CLASS_NAMES_FILE), _json(list(class_names)))
    atomic_write(os.path.join(run_dir, CONFIG_FILE), _json(config))
    atomic_write(os.path.join(run_dir, HISTORY_FILE), _json(history))
    atomic_write(os.path.join(run_dir, HISTORY_CSV_FILE), _history_csv(history))
    return Run(model, list(class_names), config, history, os.fspath(run_dir))


def _read_json(path, what: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(
            f"The {what} file {path!r} is not valid JSON ({error}). Restore it from the run or "
            f"train again. Received: path={path!r}"
        ) from None


def _unfinished_run_error(path) -> ValueError:
    return ValueError(
        f"The run in {path!r} has not finished (its {CHECKPOINT_DIR}/{STATE_FILE} says so), so "
        f"it has no final model yet. Resume it with --resume {path}, or load "
        f"{os.path.join(path, CHECKPOINT_FILE)}, the best model so far. Received: path={path!r}"
    )


def load_run(path) -> Run:
    """Loads a run folder, or a bare `.keras` file saved by tlkeras.

    Args:
        path: A run folder written by `tlkeras.train`, or a `.keras` file.

    Returns:
        A `Run`.

    Raises:
        ValueError: If the model is missing, truncated or unsafe, or the class names are
            missing, malformed or do not match the model (which would give wrong labels).

    Example:
        >>> run = load_run("runs/digits")
        >>> run.model.input_shape
        (None, 32, 32, 3)
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        model, metadata = load_model(path)
        if "class_names" not in metadata:
            raise DataError(
                f"{path!r} carries no class names, so its predictions cannot be labelled. "
                f"Expected a .keras file saved by tlkeras or a run folder. Received: path={path!r}"
            )
        check_class_names(metadata["class_names"], path)
        check_class_count(model, metadata["class_names"], path)
        return Run(model, metadata["class_names"], {}, {}, path)
    state_path = os.path.join(path, CHECKPOINT_DIR, STATE_FILE)
    state = _read_json(state_path, "checkpoint state") if os.path.isfile(state_path) else None
    if state is not None and not state.get("finished"):
        raise _unfinished_run_error(path)
    model, metadata = load_model(os.path.join(path, MODEL_FILE))
    names_path = os.path.join(path, CLASS_NAMES_FILE)
    if not os.path.isfile(names_path):
        raise DataError(
            f"The run folder {path!r} has no {CLASS_NAMES_FILE}, so predictions cannot be "
            f"labelled. Restore the file or train again. Received: path={path!r}"
        )
    class_names = _read_json(names_path, "class names")
    check_class_names(class_names, names_path)
    check_class_count(model, class_names, path)
    config_path = os.path.join(path, CONFIG_FILE)
    history_path = os.path.join(path, HISTORY_FILE)
    config = _read_json(config_path, "config") if os.path.isfile(config_path) else {}
    history = _read_json(history_path, "history") if os.path.isfile(history_path) else {}
    saved = metadata.get("class_names", config.get("class_names"))
    if saved is not None and saved != class_names:
        where = "inside the model" if "class_names" in metadata else f"in {CONFIG_FILE}"
        raise DataError(
            f"{names_path!r} does not match the class names saved {where} ({saved}), so labels "
            f"would be wrong. Restore the file from the run. Received: class_names={class_names!r}"
        )
    return Run(model, class_names, config, history, path)
