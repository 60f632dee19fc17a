"""Saving and safely loading `.keras` files, with the class names embedded.

`save_model` writes a `.keras` file atomically with the class names (and backbone) embedded
in the archive as `tlkeras.json`. `load_model` reads the model's configuration first and
refuses anything that carries code (a Lambda layer, a Python function, a class from outside
Keras and tlkeras, a reference to a function, or a Keras name that downloads, loads or
switches safe mode off), then loads it with Keras' `safe_mode=True`, on a Keras release
without the known safe-mode bypasses (`MIN_SAFE_KERAS`).

Example:
    >>> save_model("digits.keras", model, class_names=[str(i) for i in range(10)])
    >>> model, metadata = load_model("digits.keras")
    >>> metadata["class_names"][:2]
    ['0', '1']
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile

import keras

from tlkeras.errors import DataError, UsageError
from tlkeras.files import write_atomically

#: The file inside a `.keras` archive that holds tlkeras' metadata (class names, backbone).
EMBEDDED_METADATA = "tlkeras.json"


def save_model(path, model: keras.Model, *, class_names: list[str], metadata=None) -> None:
    """Saves a `.keras` file with the class names embedded, atomically.

    Example:
        >>> save_model("digits.keras", model, class_names=[str(i) for i in range(10)])
    """
    check_class_count(model, class_names, path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    embedded = {**(metadata or {}), "class_names": list(class_names)}
    embedded = json.dumps(embedded, indent=2, ensure_ascii=False) + "\n"

    def write(temporary):
        model.save(temporary)
        with zipfile.ZipFile(temporary, "a") as archive:
            archive.writestr(EMBEDDED_METADATA, embedded)

    write_atomically(path, write, suffix=".keras")


def read_embedded_metadata(path) -> dict:
    """Reads the tlkeras metadata (class names, backbone) embedded in a `.keras` file."""
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read(EMBEDDED_METADATA))
    except (KeyError, zipfile.BadZipFile, json.JSONDecodeError):
        return {}


#: Objects that carry code, and why each is refused.
UNSAFE_CLASSES = {
    "Lambda": "a Lambda layer, which stores Python bytecode that runs when the model is called",
    "__lambda__": "a Python lambda function stored as bytecode",
    "TFSMLayer": "a TFSMLayer, which runs a TensorFlow SavedModel graph from another file",
}
#: Packages whose classes a saved tlkeras model may name; builtins names Keras' own functions.
SAFE_PACKAGES = ("keras", "tlkeras", "builtins")
#: Keras names that fetch files, load other files or turn safe mode off: refused wherever a
#: configuration names them, even on a Keras that would allow them (the gadgets of
#: CVE-2025-1550, CVE-2025-8747 and CVE-2025-9906).
DANGEROUS_KERAS_NAMES = (
    "get_file",
    "enable_unsafe_deserialization",
    "load_model",
    "load_weights",
    "deserialize_keras_object",
    "register_keras_serializable",
    "TFSMLayer",
)
#: Keras modules a model configuration has no business naming.
DANGEROUS_KERAS_MODULES = ("keras.utils", "keras.config", "keras.saving", "keras.models")
#: The first Keras release without a known safe-mode bypass: CVE-2025-1550 (fixed in 3.9),
#: CVE-2025-8747 and CVE-2025-9906 (3.11.0), CVE-2025-9905 (3.11.3), CVE-2025-12060
#: (3.12.0), CVE-2026-1462 (TFSMLayer, 3.14.0). Checked against the advisories in 2026-12.
MIN_SAFE_KERAS = (3, 14, 0)


def find_unsafe_objects(config) -> list[str]:
    """Describes every object in a Keras model configuration that would carry code.

    tlkeras models are made of Keras layers only (older ones also of
    `tlkeras.layers.Preprocess`); anything
    else (a Lambda layer, a serialised Python function, a class from another package) is
    listed here.

    Args:
        config: The parsed `config.json` of a `.keras` file.

    Returns:
        One description per object, empty when the model is safe.

    Example:
        >>> find_unsafe_objects(json.loads(zipfile.ZipFile("m.keras").read("config.json")))
        ["a Lambda layer, which stores Python bytecode ... (layer 'double')"]
    """
    found = []
    if isinstance(config, dict):
        class_name, module = config.get("class_name"), config.get("module")
        inner = config.get("config")
        name = inner.get("name") if isinstance(inner, dict) else None
        where = f" (layer {name!r})" if isinstance(name, str) else ""
        names = {class_name, config.get("registered_name")}
        if class_name == "function" and isinstance(inner, str):
            names.add(inner)
        dangerous = sorted(n for n in names if n in DANGEROUS_KERAS_NAMES)
        if class_name in UNSAFE_CLASSES:
            found.append(UNSAFE_CLASSES[class_name] + where)
        elif dangerous:
            found.append(f"a reference to {module}.{dangerous[0]}, which fetches or loads{where}")
        elif isinstance(module, str) and module.split(".")[0] not in SAFE_PACKAGES:
            found.append(f"the class {module}.{class_name}, from outside Keras and tlkeras{where}")
        elif isinstance(module, str) and module.startswith(DANGEROUS_KERAS_MODULES):
            found.append(f"a reference into {module}, which no model needs{where}")
        elif class_name == "function" and not str(module).startswith("keras.activations"):
            found.append(f"a reference to the function {module}.{inner}{where}")
        values = config.values()
    elif isinstance(config, list):
        values = config
    else:
        return found
    for value in values:
        found += find_unsafe_objects(value)
    return found


def _read_model_config(path) -> dict:
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, EOFError) as error:
        raise DataError(
            f"{path!r} is not a complete .keras file ({error}). It may have been cut short by an "
            "interrupted copy or download: copy it again, or use the run's best.keras. "
            f"Received: path={path!r}"
        ) from None


def check_class_count(model, class_names, source) -> None:
    """Fails unless the model predicts exactly one probability per class name.

    Example:
        >>> check_class_count(model, ["cat", "dog"], "runs/pets")   # a 2-class model: fine
    """
    num_outputs = model.output_shape[-1]
    if num_outputs != len(class_names):
        raise DataError(
            f"The model in {source!r} predicts {num_outputs} classes but {len(class_names)} "
            "class names were given, so its labels would be wrong. Use the class_names.json "
            f"saved with this model. Received: num_class_names={len(class_names)}"
        )


def check_class_names(class_names, source) -> None:
    """Fails unless `class_names` is a list of distinct strings (`source` names the file).

    Example:
        >>> check_class_names(["cat", "dog"], "runs/pets/class_names.json")
    """
    if not isinstance(class_names, list) or not all(isinstance(n, str) for n in class_names):
        raise DataError(
            f"{source!r} must hold a JSON list of class-name strings. "
            f"Received: class_names={class_names!r}"
        )
    if len(set(class_names)) != len(class_names):
        repeated = sorted({name for name in class_names if class_names.count(name) > 1})
        raise DataError(
            f"{source!r} names the classes {repeated} more than once, so labels would be "
            f"ambiguous. Restore the file from the run. Received: class_names={class_names!r}"
        )


def load_model(path) -> tuple[keras.Model, dict]:
    """Loads a `.keras` file safely and returns `(model, embedded_metadata)`.

    The model's configuration is read first and refused if it carries code (see
    `find_unsafe_objects`); then Keras loads it with `safe_mode=True`.

    Raises:
        ValueError: If the file is missing, truncated or not a Keras archive, holds code
            (such as a Lambda layer), or cannot be rebuilt.

    Example:
        >>> model, metadata = load_model("runs/digits/model.keras")
        >>> metadata["class_names"][:2]
        ['0', '1']
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UsageError(
            f"No model file at {path!r}. Expected a run folder holding model.keras or a "
            f".keras file. Received: path={path!r}"
        )
    _check_keras_is_safe(path)
    unsafe = find_unsafe_objects(_read_model_config(path))
    if unsafe:
        more = f" and {len(unsafe) - 1} more such object(s)" if len(unsafe) > 1 else ""
        raise DataError(
            f"Refusing to load {path!r}: it contains {unsafe[0]}{more}. Code stored in a model "
            "file runs on your machine, so tlkeras only loads models made of Keras and tlkeras "
            "layers, with Keras' safe_mode=True. Rebuild the model without it (e.g. a registered "
            "Layer subclass instead of a Lambda), or load it with keras.saving.load_model("
            f"safe_mode=False) only if you trust where it came from. Received: path={path!r}"
        )
    import tlkeras.layers  # noqa: F401  (registers the Preprocess layer of older run folders)

    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:
        raise DataError(
            f"Could not load the model {path!r} safely: {error}. tlkeras only loads models with "
            f"Keras' safe_mode, which refuses Lambda layers and other arbitrary code. "
            f"Received: path={path!r}"
        ) from None
    return model, read_embedded_metadata(path)


def _check_keras_is_safe(path) -> None:
    release = tuple(int(part) for part in keras.__version__.split(".")[:3] if part.isdigit())
    if release < MIN_SAFE_KERAS:
        wanted = ".".join(map(str, MIN_SAFE_KERAS))
        raise UsageError(
            f"Keras {keras.__version__} has known ways around safe_mode, so tlkeras will not "
            f"load a model with it. Expected Keras {wanted} or later: run `pip install "
            f"'keras>={wanted}'`. Received: path={os.fspath(path)!r}"
        )


def load_weights_strictly(model: keras.Model, path) -> None:
    """Loads a weights file into `model`, refusing one whose parts do not all fit.

    Keras only warns (a `UserWarning`) when parts of a file do not match the model; this
    turns those warnings into a `ValueError`. Other warnings, such as a library's
    `DeprecationWarning`, pass through untouched instead of failing the load.

    Raises:
        ValueError: If Keras warned that the file does not fit the model.

    Example:
        >>> load_weights_strictly(base, "pretrained/backbone.weights.h5")
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.load_weights(os.fspath(path))
    mismatches = []
    for warning in caught:
        if issubclass(warning.category, UserWarning) and "keras" in warning.filename:
            mismatches.append(str(warning.message).strip().splitlines()[0])
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    if mismatches:
        raise DataError(
            f"The weights file {os.fspath(path)!r} does not fit the model: {mismatches[0]} "
            f"Expected a file saved from the same model. Received: path={os.fspath(path)!r}"
        )
