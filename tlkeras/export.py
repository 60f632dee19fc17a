"""Shipping a trained run: SavedModel for servers, TFLite for phones, ONNX for any runtime.

`python -m tlkeras export RUN_DIR --format FORMAT [--out PATH]` writes one of:

    format          what it is                                    made by
    savedmodel      SavedModel folder (TF Serving, TF.js)         Keras' model.export
    tflite          TFLite flatbuffer, float32                    Keras' model.export (LiteRT)
    tflite-dynamic  TFLite, int8 weights, float activations       + dynamic-range quantisation
    tflite-int8     TFLite, int8 weights and activations,         + full-integer quantisation,
                    uint8 input, float32 output                     calibrated on training images
    onnx            ONNX model, float32 (ONNX Runtime and other   Keras' model.export (tf2onnx;
                    ONNX runtimes)                                  `pip install "tlkeras[onnx]"`)
    keras           the Keras model file                          keras.Model.save

Every export takes RGB pixels in [0, 255] shaped `(batch, height, width, 3)` (the model's
own preprocessing is inside it) and returns class probabilities `(batch, num_classes)` as
float32, where column `i` is `class_names[i]`. TFLite exports use only the built-in TFLite
operators, so the plain LiteRT runtime on a phone runs them without TensorFlow ops.
`tflite-int8` takes uint8 pixels; its input scale and zero point are 1 and 0 when the
calibration images span 0 to 255 (photos do), else read them from the input details.

The class names travel with every export:

- a labels file beside it, `<out without extension>.labels.txt`, line `i` naming label `i`
  (the form Android, MediaPipe and most mobile tutorials read);
- inside the export where the format allows: a `tlkeras` metadata entry (JSON) in the
  TFLite flatbuffer and in the ONNX model's `metadata_props`, `assets.extra/labels.txt` and
  `assets.extra/tlkeras.json` in the SavedModel (the folder TF Serving keeps for such
  files), `tlkeras.json` in the `.keras` file.

Exporting into the run folder (the default `RUN_DIR/export/`) holds the run folder's lock
(`tlkeras.run_lock`), so it never runs while another process trains or exports there.

Example:
    >>> result = export_model("runs/digits", format="tflite-int8")
    >>> result.path, result.labels_path
    ('runs/digits/export/model_int8.tflite', 'runs/digits/export/model_int8.labels.txt')
    >>> probabilities = predict_tflite(result.path, images)   # uint8 or float, 0-255
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import re
import shutil
import tempfile
import uuid
import warnings

import keras
import numpy as np
import tensorflow as tf

from tlkeras import files, runs, saving, workarounds
from tlkeras.errors import DataError, ExportError, UsageError
from tlkeras.evaluate import evaluation_split, recorded_split
from tlkeras.images import load_images
from tlkeras.quiet import progress_verbose
from tlkeras.run_lock import RunLock
from tlkeras.scan import find_split_folders

# Format name -> default file or folder name inside RUN_DIR/export/.
FORMATS = {
    "savedmodel": "saved_model",
    "tflite": "model.tflite",
    "tflite-dynamic": "model_dynamic.tflite",
    "tflite-int8": "model_int8.tflite",
    "onnx": "model.onnx",
    "keras": "model.keras",
}
#: The ending of each single-file format's path (a SavedModel is a folder).
EXTENSIONS = {
    "tflite": ".tflite",
    "tflite-dynamic": ".tflite",
    "tflite-int8": ".tflite",
    "onnx": ".onnx",
    "keras": ".keras",
}
TFLITE_QUANTIZATION = {"tflite": "none", "tflite-dynamic": "dynamic", "tflite-int8": "int8"}
EXPORT_FOLDER = "export"
LABELS_SUFFIX = ".labels.txt"
METADATA_NAME = "tlkeras"  # The TFLite and ONNX metadata entry, the SavedModel's tlkeras.json.
SAVED_MODEL_EXTRA = "assets.extra"
#: What `format="onnx"` imports -> the pip package that brings it (the `onnx` extra).
ONNX_EXPORT_PACKAGES = {"tf2onnx": "tf2onnx", "onnx": "onnx"}
ONNX_INSTALL = 'pip install "tlkeras[onnx]"'


@dataclasses.dataclass
class Export:
    """One exported model.

    Attributes:
        path: The exported file, or folder for a SavedModel.
        labels_path: The labels file beside it.
        format: One of `FORMATS`.
        size_bytes: Its size on disk (all files, for a SavedModel folder).
    """

    path: str
    labels_path: str
    format: str
    size_bytes: int


def export_model(
    run,
    *,
    format: str = "savedmodel",
    out=None,
    data_dir=None,
    num_calibration_images: int = 100,
) -> Export:
    """Exports a trained run for serving, with its class names.

    Args:
        run: A `Run`, or the path of a run folder (or `.keras` file) to load.
        format: One of `"savedmodel"`, `"tflite"`, `"tflite-dynamic"`, `"tflite-int8"`,
            `"onnx"` or `"keras"` (see the module docstring). Defaults to `"savedmodel"`.
        out: Where to write it: a folder for `"savedmodel"`, a `.tflite`, `.onnx` or
            `.keras` file otherwise. Defaults to `RUN_DIR/export/` plus the format's
            default name.
        data_dir: For `"tflite-int8"`, the data folder to take calibration images from (its
            training split). Defaults to the run's own `data_dir`.
        num_calibration_images: How many training images calibrate `"tflite-int8"`.
            Defaults to 100.

    Returns:
        An `Export` with the paths and the size.

    Raises:
        ValueError: If the format, the output path or the calibration data is wrong, or
            ONNX's packages are missing.
        tlkeras.run_lock.RunFolderInUseError: If the export goes into the run folder while
            another process writes it.

    Example:
        >>> export_model("runs/digits", format="tflite", out="digits.tflite").labels_path
        'digits.labels.txt'
    """
    if format not in FORMATS:
        raise UsageError(
            f"Unknown export format {format!r}. Expected one of {tuple(FORMATS)}. "
            f"Received: format={format!r}"
        )
    if format == "onnx":
        check_onnx_export_available()
    run = run if isinstance(run, runs.Run) else runs.load_run(run)
    out = os.fspath(out) if out is not None else default_out(run, format)
    _check_out(out, format)
    _check_class_names(run.class_names)
    with _lock_if_inside_the_run(run, out):
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        _write(run, format, out, data_dir=data_dir, num_images=num_calibration_images)
        labels = labels_path(out)
        files.atomic_write(labels, "".join(name + "\n" for name in run.class_names))
    return Export(out, labels, format, _size(out))


def _write(run: runs.Run, format: str, out: str, *, data_dir, num_images: int) -> None:
    """Writes the export itself, with the class names inside where the format allows."""
    metadata = _metadata(run, format)
    if format == "savedmodel":
        _write_saved_model(run.model, out, metadata)
    elif format == "keras":
        saving.save_model(out, run.model, class_names=run.class_names, metadata=metadata)
    elif format == "onnx":
        files.atomic_write(out, add_onnx_metadata(convert_to_onnx(run.model), metadata))
    else:
        images = None
        if format == "tflite-int8":
            images = sample_images(run, split="train", data_dir=data_dir, num_images=num_images)
        flatbuffer = convert_to_tflite(
            run.model, quantization=TFLITE_QUANTIZATION[format], calibration_images=images
        )
        files.atomic_write(out, add_tflite_metadata(flatbuffer, metadata))
        if images is not None:
            _warn_about_input_scale(out)


def _lock_if_inside_the_run(run: runs.Run, out: str):
    """The run folder's lock when the export goes inside it (the default), else nothing."""
    if not os.path.isdir(run.path):  # A bare .keras file: no run folder to protect.
        return contextlib.nullcontext()
    folder, target = os.path.abspath(run.path), os.path.abspath(out)
    if os.path.commonpath([folder, target]) != folder:
        return contextlib.nullcontext()
    return RunLock(run.path, purpose="export")


def default_out(run: runs.Run, format: str) -> str:
    """`RUN_DIR/export/<name>`, the default place for an export of `format`."""
    folder = run.path if os.path.isdir(run.path) else os.path.dirname(run.path)
    return os.path.join(folder, EXPORT_FOLDER, FORMATS[format])


def labels_path(out) -> str:
    """The labels file beside an export: `model.tflite` -> `model.labels.txt`."""
    out = os.fspath(out).rstrip("/\\")
    stem, extension = os.path.splitext(out)
    return (stem if extension in EXTENSIONS.values() else out) + LABELS_SUFFIX


def _check_out(out: str, format: str) -> None:
    extension = EXTENSIONS.get(format, "")
    if extension and not out.endswith(extension):
        raise UsageError(
            f"A {format} export is a {extension} file, so the output path must end with "
            f"{extension!r}. Pass e.g. --out model{extension}. Received: out={out!r}"
        )
    if format == "savedmodel" and os.path.isfile(out):
        raise UsageError(
            f"A SavedModel is a folder, but {out!r} is a file. Pass a folder path. "
            f"Received: out={out!r}"
        )
    is_saved_model = os.path.isfile(os.path.join(out, "saved_model.pb"))
    if os.path.isdir(out) and os.listdir(out) and not is_saved_model:
        raise UsageError(
            f"{out!r} is a folder that already holds other files, so tlkeras will not replace "
            f"it. Pass a new path, or an earlier SavedModel export to overwrite. "
            f"Received: out={out!r}"
        )


def _check_class_names(class_names) -> None:
    for name in class_names:
        if not name or "\n" in name or "\r" in name:
            raise UsageError(
                "Class names must be non-empty and on one line to be written to a labels file. "
                f"Rename that class folder. Received: class_name={name!r}"
            )


def _metadata(run: runs.Run, format: str) -> dict:
    from tlkeras import __version__

    height, width = run.image_size
    return {
        "class_names": list(run.class_names),
        "backbone": run.config.get("backbone") or run.model.name.removeprefix("tlkeras_"),
        "image_size": [height, width],
        "input": f"RGB pixels in [0, 255], shape (batch, {height}, {width}, 3)",
        "output": "class probabilities, shape (batch, num_classes); column i is class_names[i]",
        "format": format,
        "tlkeras_version": __version__,
    }


def _write_saved_model(model, out: str, metadata: dict) -> None:
    """Exports with Keras' `model.export` beside `out`, then swaps it into place.

    The new folder is written and flushed as a `.tmp-*` sibling of `out`; then the old
    export (if any) is renamed to another `.tmp-*` sibling, the new one renamed to `out`,
    and the old one deleted. A kill at any point leaves the old or the new complete folder
    at `out`, plus `.tmp-*` siblings that the next export removes; the one exception, a kill
    between the two renames, leaves the old export in its `.tmp-*` sibling, and the next
    export (or an exception here) renames it back to `out` first.
    """
    parent, name = os.path.split(os.path.abspath(out))
    out = os.path.join(parent, name)  # No trailing separator to trip the renames.
    _remove_leftovers(parent, name)
    new, old = _sibling(parent, name, "new"), _sibling(parent, name, "old")
    try:
        model.export(new, format="tf_saved_model", verbose=False)
        extra = os.path.join(new, SAVED_MODEL_EXTRA)
        os.makedirs(extra, exist_ok=True)
        labels = "".join(label + "\n" for label in metadata["class_names"])
        files.atomic_write(os.path.join(extra, "labels.txt"), labels)
        files.atomic_write(
            os.path.join(extra, METADATA_NAME + ".json"), json.dumps(metadata, indent=2) + "\n"
        )
        _sync_tree(new)
        if os.path.isdir(out):  # An earlier SavedModel export (checked by _check_out).
            os.replace(out, old)
        os.replace(new, out)
        files.sync(parent)
    except BaseException:
        _remove_leftovers(parent, name)  # Puts the earlier export back if it was moved aside.
        raise
    shutil.rmtree(old, ignore_errors=True)


def _sibling(parent: str, name: str, role: str) -> str:
    """A temporary folder beside `out`: `.tmp-<name>-<role>-<32 hex digits>`."""
    return os.path.join(parent, f"{files.TEMPORARY_PREFIX}{name}-{role}-{uuid.uuid4().hex}")


def _remove_leftovers(parent: str, name: str) -> None:
    """Deletes the temporary folders a killed export of `name` left beside it.

    If the kill came between the two renames, `out` is missing and the earlier export is
    in an `-old-` folder: it is renamed back to `out`, so nothing complete is deleted.
    """
    out = os.path.join(parent, name)
    pattern = re.compile(re.escape(f"{files.TEMPORARY_PREFIX}{name}-") + "(new|old)-[0-9a-f]{32}")
    for entry in sorted(os.listdir(parent)):
        path, match = os.path.join(parent, entry), pattern.fullmatch(entry)
        if not match or not os.path.isdir(path):
            continue
        if match.group(1) == "old" and not os.path.exists(out):
            os.replace(path, out)
        else:
            shutil.rmtree(path, ignore_errors=True)


def _sync_tree(folder: str) -> None:
    """Flushes every file and folder under `folder` to disk, so a rename publishes it whole."""
    for where, _, names in os.walk(folder, topdown=False):
        for entry in names:
            files.sync(os.path.join(where, entry))
        files.sync(where)


def sample_images(
    run: runs.Run, *, split: str = "train", data_dir=None, num_images: int = 100
) -> np.ndarray:
    """Picks images, seeded, from one split the run recorded when training started.

    Full-integer quantisation calibrates on training images; `check_export` compares on
    the held-out validation images. The files are those of the run's
    `checkpoint/split.json` (see `tlkeras.evaluate.recorded_split`), never a new split of
    the folder. Another data folder gives its `split` folder if it has one, else all of
    its images, and one line on stderr says so.

    Args:
        run: The trained run; its config names the data folder, split and seed.
        split: `"train"` or `"val"` (or `"test"` when the folder has one). Defaults to
            `"train"`.
        data_dir: Another data folder with the same classes. Defaults to the run's
            `data_dir`.
        num_images: How many images (fewer if the split is smaller). Defaults to 100.

    Returns:
        uint8 RGB images `(num_images, height, width, 3)`, resized to the model's input.

    Raises:
        ValueError: If the data folder cannot be found or `num_images` is not positive.
    """
    if not isinstance(num_images, int) or num_images < 1:
        raise UsageError(
            f"The number of images must be a positive int. Received: num_images={num_images!r}"
        )
    data_dir = data_dir if data_dir is not None else run.config.get("data_dir")
    if data_dir is None or not os.path.isdir(data_dir):
        raise UsageError(
            f"Calibrating (tflite-int8) or checking an export needs the training data, but the "
            f"data folder {data_dir!r} is not there (a relative path is relative to where you "
            f"trained). Pass --data-dir with a folder of class folders like the training data. "
            f"Received: data_dir={data_dir!r}"
        )
    foreign = recorded_split(run, data_dir) is None and not find_split_folders(data_dir)
    _, split_files = evaluation_split(run, data_dir, split=None if foreign else split)
    paths = split_files.paths
    picked = np.random.default_rng(run.config.get("seed", 0)).permutation(len(paths))
    picked = picked[:num_images]
    return load_images([paths[i] for i in sorted(picked)], run.image_size)


def check_export(run: runs.Run, result: Export, images) -> dict:
    """Runs an export in the program that consumes it and compares it with the Keras model.

    TFLite files run in the LiteRT interpreter (`ai_edge_litert` where it is installed, else
    `tf.lite.Interpreter`), an ONNX model in ONNX Runtime, a SavedModel in
    `tf.saved_model.load`, a `.keras` file in Keras after reloading.

    Args:
        run: The run that was exported.
        result: What `export_model` returned.
        images: RGB images in [0, 255], `(num_images, height, width, 3)`.

    Returns:
        What `compare_probabilities` returns for the Keras model's probabilities and the
        export's.

    Example:
        >>> check_export(run, result, sample_images(run, split="val"))["top1_agreement"]
        0.99
    """
    images = np.asarray(images)
    expected = run.model.predict(
        images.astype("float32"), batch_size=64, verbose=progress_verbose()
    )
    return compare_probabilities(expected, exported_probabilities(result, images))


#: Top-two probabilities closer than this are a near-tie, which int8 rounding may flip.
NEAR_TIE = 0.1


def compare_probabilities(expected, actual, *, near_tie: float = NEAR_TIE) -> dict:
    """Compares an export's class probabilities with the Keras model's, image by image.

    Quantisation moves every probability a little, so the top classes it changes are mostly
    those of images whose two most probable classes are close. The agreement on the other
    images says how faithful the export is, whatever the model's confidence.

    Args:
        expected: The Keras model's probabilities, `(num_images, num_classes)`.
        actual: The export's probabilities, the same shape.
        near_tie: Top-two gap (in probability) below which an image is a near-tie.
            Defaults to `NEAR_TIE` (0.1).

    Returns:
        `{"num_images", "max_abs_difference", "top1_agreement", "near_tie_share",
        "top1_agreement_clear"}`: the largest difference between the probabilities, the
        share of images whose top class is the same, the share of near-ties, and the
        agreement on the images that are not near-ties (`None` if every image is one).

    Example:
        >>> report = compare_probabilities([[0.9, 0.1], [0.5, 0.4]], [[0.8, 0.2], [0.4, 0.5]])
        >>> report["top1_agreement"], report["near_tie_share"], report["top1_agreement_clear"]
        (0.5, 0.5, 1.0)
    """
    expected, actual = np.asarray(expected, "float64"), np.asarray(actual, "float64")
    agree = actual.argmax(1) == expected.argmax(1)
    top_two = np.sort(expected, axis=1)[:, -2:]
    clear = top_two[:, 1] - top_two[:, 0] >= near_tie
    return {
        "num_images": len(expected),
        "max_abs_difference": float(np.abs(actual - expected).max()),
        "top1_agreement": float(agree.mean()),
        "near_tie_share": float(1 - clear.mean()),
        "top1_agreement_clear": float(agree[clear].mean()) if clear.any() else None,
    }


def exported_probabilities(result: Export, images) -> np.ndarray:
    """Class probabilities of an export, computed by its own runtime (see `check_export`)."""
    images = np.asarray(images)
    if result.format in TFLITE_QUANTIZATION:
        return predict_tflite(result.path, images)
    if result.format == "onnx":
        return predict_onnx(result.path, images)
    if result.format == "savedmodel":
        loaded = tf.saved_model.load(result.path)  # Keep it: `serve` needs its variables.
        batches = [images[i : i + 64] for i in range(0, len(images), 64)]
        return np.concatenate([loaded.serve(tf.constant(b, tf.float32)).numpy() for b in batches])
    model = runs.load_run(result.path).model
    return model.predict(images.astype("float32"), batch_size=64, verbose=progress_verbose())


def convert_to_tflite(model, *, quantization: str = "none", calibration_images=None) -> bytes:
    """Converts a Keras model to a TFLite flatbuffer with Keras' `model.export`.

    Args:
        model: A Keras model (TensorFlow backend).
        quantization: `"none"` (float32), `"dynamic"` (int8 weights) or `"int8"` (int8
            weights and activations, uint8 input, float32 output). Defaults to `"none"`.
        calibration_images: For `"int8"`, images in [0, 255] whose activations set the
            quantisation ranges.

    Returns:
        The `.tflite` file's bytes.
    """
    if quantization not in TFLITE_QUANTIZATION.values():
        raise UsageError(
            f"Unknown quantization {quantization!r}. Expected one of "
            f"{tuple(TFLITE_QUANTIZATION.values())}. Received: quantization={quantization!r}"
        )
    if quantization == "int8" and calibration_images is None:
        raise UsageError(
            "Full-integer quantisation needs calibration_images: a few hundred training "
            "images in [0, 255]. Received: calibration_images=None"
        )
    builtins = [tf.lite.OpsSet.TFLITE_BUILTINS]  # No TensorFlow ops: the phone runtime suffices.
    options = {"target_spec": {"supported_ops": builtins}}
    if quantization in ("dynamic", "int8"):
        options["optimizations"] = [tf.lite.Optimize.DEFAULT]
    if quantization == "int8":
        images = np.asarray(calibration_images, dtype="float32")

        def representative_dataset():
            for image in images:
                yield [image[None]]

        options.update(
            representative_dataset=representative_dataset,
            target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
            inference_input_type=tf.uint8,
            inference_output_type=tf.float32,
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.tflite")
        try:
            model.export(path, format="litert", verbose=False, **options)
        except Exception as error:  # The converter raises its own ConverterError.
            raise ExportError(
                f"TFLite could not convert {model.name} with quantization={quantization!r}: "
                f"{' '.join(str(error).split())[:500]}. Try --format tflite-dynamic or tflite. "
                f"Received: quantization={quantization!r}"
            ) from None
        with open(path, "rb") as f:
            return f.read()


def add_tflite_metadata(flatbuffer: bytes, metadata: dict) -> bytes:
    """Adds a `tlkeras` metadata entry (UTF-8 JSON) to a TFLite flatbuffer.

    TensorFlow has no public API for it, so it goes through `tlkeras.workarounds`; the labels
    file beside the export holds the class names whatever happens to that route.
    """
    return workarounds.add_tflite_metadata(flatbuffer, METADATA_NAME, metadata)


def read_tflite_metadata(path) -> dict:
    """Reads the `tlkeras` metadata (class names, image size...) of an exported `.tflite`.

    Example:
        >>> read_tflite_metadata("runs/digits/export/model.tflite")["class_names"][:2]
        ['0', '1']
    """
    with open(path, "rb") as f:
        metadata = workarounds.read_tflite_metadata(f.read(), METADATA_NAME)
    if metadata is None:
        raise DataError(
            f"{path!r} has no {METADATA_NAME!r} metadata; it was not exported by tlkeras. Read "
            f"its labels file instead. Received: path={path!r}"
        )
    return metadata


def tflite_interpreter(path, *, num_threads: int | None = None):
    """Opens a `.tflite` file with the LiteRT interpreter.

    Uses `ai_edge_litert` (the standalone runtime) when it is installed, else
    `tf.lite.Interpreter`, which TensorFlow 2.21 still ships but marks deprecated.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        return Interpreter(model_path=os.fspath(path), num_threads=num_threads)


def predict_tflite(path, images, *, batch_size: int = 32) -> np.ndarray:
    """Runs an exported `.tflite` classifier on images, as a phone would.

    Args:
        path: A `.tflite` file from `export_model`.
        images: RGB images in [0, 255], shaped `(num_images, height, width, 3)`, uint8 or
            float.
        batch_size: Images per call to the interpreter. Defaults to 32.

    Returns:
        float32 probabilities `(num_images, num_classes)`.

    Example:
        >>> probabilities = predict_tflite("model_int8.tflite", load_images(paths, (32, 32)))
    """
    interpreter = tflite_interpreter(path)
    (source,) = interpreter.get_input_details()
    (target,) = interpreter.get_output_details()
    results = []
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start : start + batch_size], dtype="float32")
        interpreter.resize_tensor_input(source["index"], batch.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(source["index"], _quantize(batch, source))
        interpreter.invoke()
        output = interpreter.get_tensor(target["index"])
        scale, zero_point = target["quantization"]
        if scale:  # A quantised output; tlkeras exports float32, others may not.
            output = (output.astype("float32") - zero_point) * scale
        results.append(output.astype("float32"))
    return np.concatenate(results)


def _quantize(batch: np.ndarray, details: dict) -> np.ndarray:
    dtype = details["dtype"]
    if not np.issubdtype(dtype, np.integer):
        return batch.astype(dtype)
    scale, zero_point = details["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(batch / scale) + zero_point, info.min, info.max).astype(dtype)


def check_onnx_export_available() -> None:
    """Checks that this process can export ONNX: TensorFlow backend, tf2onnx and onnx there.

    Raises:
        ValueError: If a package is missing (the message says how to install it), or Keras
            runs on another backend.

    Example:
        >>> check_onnx_export_available()  # None when `pip install "tlkeras[onnx]"` ran
    """
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise UsageError(
            f"ONNX export goes through TensorFlow (tf2onnx), but Keras runs on {backend} here. "
            "Export with KERAS_BACKEND=tensorflow: a run folder loads on either backend. "
            f"Received: format='onnx', backend={backend!r}"
        )
    missing = [pip for module, pip in ONNX_EXPORT_PACKAGES.items() if not _installed(module)]
    if missing:
        raise UsageError(
            f"ONNX export needs {' and '.join(missing)}, not installed here. Install it with "
            f"{ONNX_INSTALL} (or pip install {' '.join(missing)}), or choose another --format. "
            "Received: format='onnx'"
        )


def convert_to_onnx(model) -> bytes:
    """Converts a Keras model to an ONNX model with Keras' `model.export` (tf2onnx).

    The ONNX model takes float32 RGB pixels in [0, 255] `(batch, height, width, 3)` (any
    batch size) and returns float32 class probabilities.

    Args:
        model: A Keras model on the TensorFlow backend.

    Returns:
        The `.onnx` file's bytes.

    Example:
        >>> onnx_bytes = convert_to_onnx(run.model)
    """
    check_onnx_export_available()
    # Given, not inferred: Keras infers it only for a model called since it was loaded.
    name = getattr(model.inputs[0], "name", None) or "image"
    signature = [tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name=name)]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # Keras' tf2onnx patch: np.object.
            try:
                model.export(path, format="onnx", verbose=False, input_signature=signature)
            except Exception as error:
                raise ExportError(
                    f"tf2onnx could not convert {model.name}: "
                    f"{' '.join(str(error).split())[:500].rstrip('.')}. Try --format savedmodel "
                    "or tflite. Received: format='onnx'"
                ) from None
        with open(path, "rb") as f:
            return f.read()


def add_onnx_metadata(onnx_bytes: bytes, metadata: dict) -> bytes:
    """Adds a `tlkeras` entry (JSON) to an ONNX model's `metadata_props`.

    ONNX Runtime shows it as `session.get_modelmeta().custom_metadata_map["tlkeras"]`.
    """
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    kept = [(p.key, p.value) for p in model.metadata_props if p.key != METADATA_NAME]
    del model.metadata_props[:]
    for key, value in [*kept, (METADATA_NAME, json.dumps(metadata))]:
        model.metadata_props.add(key=key, value=value)
    return model.SerializeToString()


def read_onnx_metadata(path) -> dict:
    """Reads the `tlkeras` metadata (class names, image size...) of an exported `.onnx`.

    Example:
        >>> read_onnx_metadata("runs/digits/export/model.onnx")["class_names"][:2]
        ['0', '1']
    """
    session = onnx_session(path)
    entry = session.get_modelmeta().custom_metadata_map.get(METADATA_NAME)
    if entry is None:
        raise DataError(
            f"{path!r} has no {METADATA_NAME!r} metadata; it was not exported by tlkeras. Read "
            f"its labels file instead. Received: path={path!r}"
        )
    return json.loads(entry)


def onnx_session(path):
    """Opens an `.onnx` file in ONNX Runtime, on the CPU.

    Raises:
        ValueError: If `onnxruntime` is not installed (the message says how to install it).
    """
    if not _installed("onnxruntime"):
        raise UsageError(
            f"Running an ONNX model here needs onnxruntime, not installed. Install it with "
            f"{ONNX_INSTALL} (or pip install onnxruntime). Received: path={os.fspath(path)!r}"
        )
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # Errors only.
    return onnxruntime.InferenceSession(
        os.fspath(path), sess_options=options, providers=["CPUExecutionProvider"]
    )


def predict_onnx(path, images, *, batch_size: int = 64) -> np.ndarray:
    """Runs an exported `.onnx` classifier on images in ONNX Runtime.

    Args:
        path: A `.onnx` file from `export_model`.
        images: RGB images in [0, 255], shaped `(num_images, height, width, 3)`.
        batch_size: Images per call. Defaults to 64.

    Returns:
        float32 probabilities `(num_images, num_classes)`.

    Example:
        >>> probabilities = predict_onnx("model.onnx", load_images(paths, (32, 32)))
    """
    session = onnx_session(path)
    (source,) = session.get_inputs()
    images = np.asarray(images, dtype="float32")
    batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
    return np.concatenate([session.run(None, {source.name: b})[0] for b in batches])


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _warn_about_input_scale(path) -> None:
    (source,) = tflite_interpreter(path).get_input_details()
    scale, zero_point = source["quantization"]
    if (scale, zero_point) != (1.0, 0):
        warnings.warn(
            f"The calibration images do not span 0-255, so {path} expects uint8 input "
            f"quantised as round(pixel / {scale:.4f}) + {zero_point} rather than raw pixels; "
            "tlkeras.export.predict_tflite does this. Calibrate on more images to avoid it.",
            stacklevel=3,
        )


def _size(path) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(
        os.path.getsize(os.path.join(folder, name))
        for folder, _, names in os.walk(path)
        for name in names
    )
