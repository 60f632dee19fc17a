"""Run folders: everything needed to predict and evaluate later, saved and loaded safely.

A run folder holds:

    run_dir/
        model.keras        the whole model, preprocessing included; the class names and
                           backbone are embedded in it too (as tlkeras.json in the archive)
        class_names.json   label i means class_names[i]
        config.json        the resolved training configuration and library versions
        history.json       per-epoch metrics of both stages (and history.csv)
        best.keras         the checkpoint with the lowest validation loss

Every file is written to a temporary name and renamed into place, so an interrupted save
leaves the old file or the new one, never half a file. Models load with Keras'
`safe_mode=True`: a model that would run arbitrary code (a Lambda layer) is refused.

Example:
    >>> run = load_run("runs/digits")
    >>> run.class_names[:3]
    ['0', '1', '2']
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import json
import os
import tempfile
import zipfile

import keras

MODEL_FILE = "model.keras"
CHECKPOINT_FILE = "best.keras"
CLASS_NAMES_FILE = "class_names.json"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.json"
HISTORY_CSV_FILE = "history.csv"
EMBEDDED_METADATA = "tlkeras.json"


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


def atomic_write(path, data: bytes | str) -> None:
    """Writes a file through a temporary name in the same folder and renames it into place."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    handle, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _json(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def _history_csv(history: dict) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    keys = list(history)
    writer.writerow(keys)
    writer.writerows(zip(*(history[key] for key in keys), strict=True))
    return out.getvalue()


def save_model(path, model: keras.Model, *, class_names: list[str], metadata=None) -> None:
    """Saves a `.keras` file with the class names embedded, atomically.

    Example:
        >>> save_model("digits.keras", model, class_names=[str(i) for i in range(10)])
    """
    _check_class_count(model, class_names, path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".keras", dir=folder)
    os.close(handle)
    try:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as archive:
            archive.writestr(
                EMBEDDED_METADATA, _json({**(metadata or {}), "class_names": class_names})
            )
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_run(run_dir, *, model, class_names, config, history) -> Run:
    """Writes a run folder (see the module docstring) and returns it as a `Run`."""
    import tensorflow as tf

    from tlkeras import __version__

    os.makedirs(run_dir, exist_ok=True)
    config = {
        **config,
        "class_names": list(class_names),
        "versions": {
            "tlkeras": __version__,
            "keras": keras.__version__,
            "tensorflow": tf.__version__,
        },
        "saved_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    metadata = {"backbone": config.get("backbone"), "image_size": config.get("image_size")}
    save_model(
        os.path.join(run_dir, MODEL_FILE), model, class_names=class_names, metadata=metadata
    )
    atomic_write(os.path.join(run_dir, CLASS_NAMES_FILE), _json(list(class_names)))
    atomic_write(os.path.join(run_dir, CONFIG_FILE), _json(config))
    atomic_write(os.path.join(run_dir, HISTORY_FILE), _json(history))
    atomic_write(os.path.join(run_dir, HISTORY_CSV_FILE), _history_csv(history))
    return Run(model, list(class_names), config, history, os.fspath(run_dir))


def read_embedded_metadata(path) -> dict:
    """Reads the tlkeras metadata (class names, backbone) embedded in a `.keras` file."""
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read(EMBEDDED_METADATA))
    except (KeyError, zipfile.BadZipFile):
        return {}


def _check_class_count(model, class_names, source) -> None:
    num_outputs = model.output_shape[-1]
    if num_outputs != len(class_names):
        raise ValueError(
            f"The model in {source!r} predicts {num_outputs} classes but {len(class_names)} "
            "class names were given, so its labels would be wrong. Use the class_names.json "
            f"saved with this model. Received: num_class_names={len(class_names)}"
        )


def _read_json(path, what: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"The {what} file {path!r} is not valid JSON ({error}). Restore it from the run or "
            f"train again. Received: path={path!r}"
        ) from None


def load_model(path) -> tuple[keras.Model, dict]:
    """Loads a `.keras` file with `safe_mode=True` and returns `(model, embedded_metadata)`.

    Raises:
        ValueError: If the file is missing, is not a Keras archive, or holds code that
            safe mode refuses to run (such as a Lambda layer).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(
            f"No model file at {path!r}. Expected a run folder holding {MODEL_FILE} or a "
            f".keras file. Received: path={path!r}"
        )
    import tlkeras.layers  # noqa: F401  (registers the Preprocess layer before loading)

    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:
        raise ValueError(
            f"Could not load the model {path!r} safely: {error}. tlkeras only loads models with "
            f"Keras' safe_mode, which refuses Lambda layers and other arbitrary code. "
            f"Received: path={path!r}"
        ) from None
    return model, read_embedded_metadata(path)


def load_run(path) -> Run:
    """Loads a run folder, or a bare `.keras` file saved by tlkeras.

    Args:
        path: A run folder written by `tlkeras.train`, or a `.keras` file.

    Returns:
        A `Run`.

    Raises:
        ValueError: If the model is missing or unsafe, or the class names are missing,
            malformed or do not match the model (which would give wrong labels).

    Example:
        >>> run = load_run("runs/digits")
        >>> run.model.input_shape
        (None, 32, 32, 3)
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        model, metadata = load_model(path)
        if "class_names" not in metadata:
            raise ValueError(
                f"{path!r} carries no class names, so its predictions cannot be labelled. "
                f"Expected a .keras file saved by tlkeras or a run folder. Received: path={path!r}"
            )
        _check_class_count(model, metadata["class_names"], path)
        return Run(model, metadata["class_names"], {}, {}, path)
    model, metadata = load_model(os.path.join(path, MODEL_FILE))
    names_path = os.path.join(path, CLASS_NAMES_FILE)
    if not os.path.isfile(names_path):
        raise ValueError(
            f"The run folder {path!r} has no {CLASS_NAMES_FILE}, so predictions cannot be "
            f"labelled. Restore the file or train again. Received: path={path!r}"
        )
    class_names = _read_json(names_path, "class names")
    if not isinstance(class_names, list) or not all(isinstance(n, str) for n in class_names):
        raise ValueError(
            f"{names_path!r} must hold a JSON list of class-name strings. "
            f"Received: class_names={class_names!r}"
        )
    _check_class_count(model, class_names, path)
    if "class_names" in metadata and metadata["class_names"] != class_names:
        raise ValueError(
            f"{names_path!r} does not match the class names saved inside the model "
            f"({metadata['class_names']}), so labels would be wrong. Restore the file from the "
            f"run. Received: class_names={class_names!r}"
        )
    config_path = os.path.join(path, CONFIG_FILE)
    history_path = os.path.join(path, HISTORY_FILE)
    config = _read_json(config_path, "config") if os.path.isfile(config_path) else {}
    history = _read_json(history_path, "history") if os.path.isfile(history_path) else {}
    return Run(model, class_names, config, history, path)
