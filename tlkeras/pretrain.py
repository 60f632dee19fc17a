"""Pretraining a backbone on your own labelled source images, to transfer from later.

A hospital, a factory or a lab with a large labelled set of its own images (X-rays,
castings, satellite tiles) trains a backbone on it once, then transfers that backbone to many
small target tasks, the way ImageNet weights are transferred:

    python -m tlkeras pretrain xrays/ --backbone resnet50 --image-size 128 --out pretrained/xrays
    python -m tlkeras train small_task/ --weights pretrained/xrays

Pretraining trains the *whole* backbone, from random initialisation or from `weights`, under a
plain head (GlobalAveragePooling -> Dropout -> Dense softmax). Unlike transfer, its
BatchNormalization layers train and update their statistics; transfer then freezes them with
those statistics. The folder it writes:

    pretrained/xrays/
        backbone.weights.h5   the backbone's weights, manifest stored inside too
        manifest.json         backbone, image size, classes, source data, date, versions and
                              the sha256 of backbone.weights.h5
        model.keras, class_names.json, config.json, history.json, history.csv
                              the source classifier as a run folder, so `tlkeras evaluate`
                              and `predict` work on it (see tlkeras.runs)

Like `train`, it first checks that `out` is new (or empty), writable and has the disk space,
and refuses a folder that holds anything unless `overwrite=True`, which deletes only the
files pretrain writes (those above) once training is about to start. Every file is written
atomically (`tlkeras.files.write_atomically`).

Example:
    >>> run = pretrain(PretrainConfig("data_samples/digits", out="pretrained/digits",
    ...                               backbone="mobilenet_v2", image_size=32, epochs=20))
    >>> model = build_model("mobilenet_v2", num_classes=3, image_size=32,
    ...                     weights="pretrained/digits")
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os

import h5py
import keras
import tensorflow as tf

from tlkeras import files, runs
from tlkeras.backbones import get_backbone
from tlkeras.config import PretrainConfig  # noqa: F401  (it lives there: no TensorFlow)
from tlkeras.data import load_data
from tlkeras.errors import UsageError
from tlkeras.layers import preprocessing_layer
from tlkeras.model import (
    MODEL_NAME_PREFIX,
    compile_model,
    get_base,
    load_backbone,
    resolve_image_size,
)
from tlkeras.run_lock import RunLock
from tlkeras.train import check_counts, fit, merge_histories
from tlkeras.weights import (
    MANIFEST_ATTRIBUTE,
    MANIFEST_FILE,
    MANIFEST_FORMAT,
    PRETRAINED_WEIGHTS_FILE,
    built_as,
    file_hash,
    pretrained_settings,
    resolve_weights_file,
)

#: BatchNormalization momentum while pretraining. Keras' defaults (0.99; 0.999 in
#: MobileNetV2) average the statistics over so many steps that, on a source set of a few
#: thousand images, they still remember the random start when training ends, and the model
#: is far worse in inference mode than in training. 0.9 follows the last few dozen steps.
BATCHNORM_MOMENTUM = 0.9


#: The files `pretrain` writes besides the run files (`tlkeras.runs.RUN_FILES`).
PRETRAIN_FILES = (MANIFEST_FILE, PRETRAINED_WEIGHTS_FILE)


def check_pretrain_folder(path, *, overwrite: bool = False) -> None:
    """Checks, before any slow work, that a pretrain folder can be written. Changes nothing.

    Args:
        path: The pretrain folder.
        overwrite: Replace the pretrain folder in `path`; only allowed if tlkeras wrote it
            (it has a `class_names.json`); `clear_pretrain_folder` deletes it later.

    Raises:
        ValueError: If `path` exists and holds something while `overwrite` is not given, if
            `overwrite` finds a folder tlkeras did not write, or if `path` is a file or
            cannot be written (see `tlkeras.runs.check_run_folder`).

    Example:
        >>> check_pretrain_folder("pretrained/xrays", overwrite=True)
    """
    path = os.fspath(path)
    holds_files = os.path.isdir(path) and any(
        not name.startswith(files.TEMPORARY_PREFIX) for name in os.listdir(path)
    )
    if holds_files and not overwrite:
        raise UsageError(
            f"The pretrain folder {path!r} already exists. Pass --overwrite to replace it "
            "(tlkeras deletes only the files it wrote there), or choose another --out. "
            f"Received: out={path!r}"
        )
    runs.check_run_folder(path, overwrite=overwrite)


def clear_pretrain_folder(path) -> None:
    """Deletes the files `pretrain` writes in a folder (and `.tmp-*` leftovers); nothing else.

    The run files go last, `class_names.json` last of all, so a folder whose clearing was
    killed halfway is still recognised by the next `overwrite`.

    Example:
        >>> clear_pretrain_folder("pretrained/xrays")
    """
    files.remove_temporary_files(path)
    for name in PRETRAIN_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(path, name))
    runs.clear_run_folder(path)


def build_pretrain_model(
    backbone: str,
    *,
    num_classes: int,
    image_size=None,
    weights="none",
    dropout: float = 0.2,
    weights_dir=None,
) -> keras.Model:
    """Builds a backbone with a plain classification head, every layer trainable.

    Every backbone layer is trainable, BatchNormalization included, so under `fit` (which
    passes `training=True` down into the backbone) its BatchNorm layers use batch statistics
    and update their moving averages (with `BATCHNORM_MOMENTUM`): this is for training the
    backbone itself, not for transfer.

    Args:
        backbone: The registry name, e.g. `"mobilenet_v2"`.
        num_classes: The number of source classes, at least 2.
        image_size: An int or `(height, width)`; defaults to the backbone's default size.
        weights: Where the backbone starts; see `PretrainConfig.weights`. Defaults to random.
        dropout: The dropout rate before the classification layer. Defaults to 0.2.
        weights_dir: A provisioned folder of ImageNet weights.

    Returns:
        An uncompiled `keras.Model` taking RGB pixels in [0, 255] and returning class
        probabilities, named like `build_model`'s so `tlkeras.runs` can load it.

    Example:
        >>> model = build_pretrain_model("mobilenet_v2", num_classes=5, image_size=32)
    """
    backbone = get_backbone(backbone)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise UsageError(
            "Pretraining needs at least 2 source classes. Give the source folder one subfolder "
            f"per class. Received: num_classes={num_classes!r}"
        )
    height, width = resolve_image_size(image_size, backbone)
    base = load_backbone(
        backbone, image_size=(height, width), weights=weights, weights_dir=weights_dir
    )
    base.trainable = True
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = BATCHNORM_MOMENTUM
    inputs = keras.Input(shape=(height, width, 3), name="image")
    x = preprocessing_layer(backbone.preprocessing)(inputs)
    x = base(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(
        num_classes, activation="softmax", dtype="float32", name="predictions"
    )(x)
    return keras.Model(inputs, outputs, name=MODEL_NAME_PREFIX + backbone.name)


def whole_batches(dataset, *, batch_size: int, num_images: int):
    """Re-batches a training dataset so every batch is full, dropping a different remainder
    each epoch (the dataset reshuffles itself).

    BatchNormalization layers that train normalise by the statistics of each batch, and move
    their averages towards them; a last batch of 1 or 2 images would give noisy statistics,
    and, as the last step of the epoch, leave them in the model. `num_images` (the images in
    `dataset`) tells Keras how many batches an epoch has, which re-batching hides.
    """
    batches = dataset.unbatch().batch(batch_size, drop_remainder=True)
    steps = tf.data.experimental.assert_cardinality(num_images // batch_size)
    return batches.apply(steps).prefetch(2)


def fit_whole_model(model, train_data, validation_data=None, *, epochs, learning_rate, patience):
    """Compiles with Adam and trains every layer; keeps the weights of the best `val_loss`.

    Returns:
        The Keras history dict.
    """
    compile_model(model, learning_rate=learning_rate)
    callbacks = []
    if validation_data is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss",
                patience=patience or epochs,
                restore_best_weights=True,
            )
        )
    return fit(model, train_data, validation_data, epochs=epochs, callbacks=callbacks)


def _check_config(config: PretrainConfig) -> None:
    check_counts(
        {
            "epochs": (config.epochs, 1),
            "batch_size": (config.batch_size, 1),
            "patience": (config.patience, 0),
        }
    )
    if not config.learning_rate > 0:
        raise UsageError(
            "learning_rate must be a positive number. "
            f"Received: learning_rate={config.learning_rate!r}"
        )
    get_backbone(config.backbone)


def pretrain(config: PretrainConfig) -> runs.Run:
    """Pretrains a whole backbone on a source data folder and writes a pretrained folder.

    Args:
        config: A `PretrainConfig`.

    Returns:
        The source classifier as a saved `Run`; its folder is what `train --weights` takes.

    Example:
        >>> run = pretrain(PretrainConfig("source/", out="pretrained/src",
        ...                               backbone="mobilenet_v2", image_size=32))
        >>> tlkeras.weights.read_manifest("pretrained/src")["class_names"][:2]
        ['0', '1']
    """
    _check_config(config)
    with RunLock(config.out, purpose="pretrain"):  # One writer per folder (tlkeras.run_lock).
        return _pretrain_holding_the_lock(config)


def _pretrain_holding_the_lock(config: PretrainConfig) -> runs.Run:
    """`pretrain` once this process holds `config.out`'s lock."""
    check_pretrain_folder(config.out, overwrite=config.overwrite)
    keras.utils.set_random_seed(config.seed)
    image_size = resolve_image_size(
        config.image_size or pretrained_settings(config.weights).get("image_size"),
        config.backbone,
    )
    data = load_data(
        config.data_dir,
        image_size=image_size,
        batch_size=config.batch_size,
        validation_split=config.validation_split,
        seed=config.seed,
    )
    model = build_pretrain_model(
        config.backbone,
        num_classes=len(data.class_names),
        image_size=image_size,
        weights=config.weights,
        dropout=config.dropout,
        weights_dir=config.weights_dir,
    )
    runs.check_free_space(config.out, num_params=model.count_params())
    clear_pretrain_folder(config.out)  # Only after the checks: empty unless overwrite.
    train_data, num_images = data.dataset("train"), len(data.folder.splits["train"])
    if num_images >= config.batch_size:
        train_data = whole_batches(train_data, batch_size=config.batch_size, num_images=num_images)
    history = fit_whole_model(
        model,
        train_data,
        data.dataset("val"),
        epochs=config.epochs,
        learning_rate=config.learning_rate,
        patience=config.patience,
    )
    resolved = {**dataclasses.asdict(config), "image_size": list(image_size)}
    run = runs.save_run(
        config.out,
        model=model,
        class_names=data.class_names,
        config=resolved,
        history=merge_histories(history),
    )
    manifest = {
        "format": MANIFEST_FORMAT,
        "format_version": 1,
        "backbone": get_backbone(config.backbone).name,
        "image_size": list(image_size),
        "class_names": data.class_names,
        "source": {
            "data_dir": os.path.abspath(config.data_dir),
            "num_images": {name: len(split) for name, split in data.folder.splits.items()},
        },
        "initial_weights": _describe_start(config.weights),
        "built_as": _built_as(config.weights, config.backbone),
        "epochs_trained": len(history["loss"]),
        "best_val_accuracy": max(history.get("val_accuracy") or [float("nan")]),
        "created_at": run.config["saved_at"],
        "versions": run.config["versions"],
    }
    save_backbone_weights(get_base(run.model), config.out, manifest=manifest)
    _use_default_permissions(config.out)
    return run


def _use_default_permissions(folder) -> None:
    """Gives the files the permissions a plain `open` would (temporary files get 0600), so a
    pretrained folder can be shared with a lab."""
    umask = os.umask(0)
    os.umask(umask)
    for entry in os.scandir(folder):
        if entry.is_file() and not entry.name.startswith("."):
            os.chmod(entry.path, 0o666 & ~umask)


def _describe_start(weights) -> str:
    if weights is None or str(weights).lower() in ("none", "imagenet"):
        return str(weights).lower()
    return os.path.abspath(os.fspath(weights))


def _built_as(weights, backbone) -> str:
    if weights is None or str(weights).lower() == "none":
        return "none"
    if str(weights).lower() == "imagenet":
        return "imagenet"
    path, manifest = resolve_weights_file(weights, backbone)
    return built_as(path, manifest, backbone)


def save_backbone_weights(base: keras.Model, folder, *, manifest: dict) -> str:
    """Writes `backbone.weights.h5` (manifest stored inside) and `manifest.json`, atomically.

    Args:
        base: The backbone model.
        folder: The pretrained folder; created if needed.
        manifest: What the weights are: at least `format` and `backbone` (see `pretrain`).

    Returns:
        The path of the weights file.
    """
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, PRETRAINED_WEIGHTS_FILE)

    def write(temporary):
        base.save_weights(temporary)
        with h5py.File(temporary, "a") as f:
            f.attrs[MANIFEST_ATTRIBUTE] = json.dumps(manifest)

    files.write_atomically(path, write, suffix=".weights.h5")
    manifest = {**manifest, "weights_file": PRETRAINED_WEIGHTS_FILE}
    manifest["sha256"] = file_hash(path, "sha256")
    text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    files.atomic_write(os.path.join(folder, MANIFEST_FILE), text)
    return path
