"""The two training stages, and a whole run from a data folder to a saved run folder.

Stage 1 (`train_head`) trains the new head on a frozen backbone. Stage 2 (`fine_tune`)
unfreezes the top blocks of the backbone, keeps every BatchNormalization layer frozen and in
inference mode, recompiles with a low learning rate and continues the epoch count. `train`
runs both on a data folder and writes everything `predict` and `evaluate` need.

Example:
    >>> data = load_data("data_samples/digits", image_size=32)
    >>> model = build_model("vgg16", num_classes=10, image_size=32, weights=None)
    >>> history = train_head(model, data.dataset("train"), data.dataset("val"), epochs=2)
    >>> history = fine_tune(model, data.dataset("train"), data.dataset("val"), epochs=2,
    ...                     unfreeze=1, initial_epoch=2)
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys

import keras

from tlkeras import runs
from tlkeras.backbones import get_backbone
from tlkeras.data import load_data
from tlkeras.features import STORAGES, fine_tune_cached, train_head_cached
from tlkeras.model import (
    build_model,
    compile_model,
    freeze_backbone,
    resolve_image_size,
    unfreeze_top_blocks,
)
from tlkeras.precision import check_precision, precision_scope, warn_if_xla_is_slow


def _fit(model, train_data, validation_data, *, epochs, initial_epoch, patience, callbacks):
    callbacks = list(callbacks or [])
    if patience and validation_data is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=patience, restore_best_weights=True
            )
        )
    history = model.fit(
        train_data,
        validation_data=validation_data,
        epochs=initial_epoch + epochs,
        initial_epoch=initial_epoch,
        callbacks=callbacks,
        shuffle=False,  # The training dataset reshuffles itself every epoch.
        verbose="auto" if sys.stdout.isatty() else 2,  # One line per epoch in logs.
    )
    return history.history


def train_head(
    model: keras.Model,
    train_data,
    validation_data=None,
    *,
    epochs: int = 10,
    learning_rate: float = 1e-3,
    patience: int = 0,
    callbacks=None,
    jit_compile="auto",
) -> dict[str, list[float]]:
    """Stage 1: trains the head with the whole backbone frozen.

    Args:
        model: A model from `tlkeras.build_model`.
        train_data: A `tf.data.Dataset` of `(images, labels)` batches.
        validation_data: The same for validation, or `None`.
        epochs: Epochs to train. Defaults to 10.
        learning_rate: Adam's learning rate. Defaults to 1e-3.
        patience: Stop after this many epochs without a better `val_loss` and restore the
            best weights; 0 never stops early. Defaults to 0.
        callbacks: Extra Keras callbacks.
        jit_compile: XLA-compile the training step: True, False, or "auto" (Keras' default:
            on with a GPU, off on a CPU). Defaults to "auto".

    Returns:
        The Keras history dict, e.g. `{"loss": [...], "val_accuracy": [...]}`.

    Example:
        >>> history = train_head(model, data.dataset("train"), data.dataset("val"), epochs=3)
    """
    freeze_backbone(model)
    compile_model(model, learning_rate=learning_rate, jit_compile=jit_compile)
    return _fit(
        model,
        train_data,
        validation_data,
        epochs=epochs,
        initial_epoch=0,
        patience=patience,
        callbacks=callbacks,
    )


def fine_tune(
    model: keras.Model,
    train_data,
    validation_data=None,
    *,
    epochs: int = 5,
    unfreeze: int = 1,
    learning_rate: float = 1e-5,
    initial_epoch: int = 0,
    patience: int = 0,
    callbacks=None,
    jit_compile="auto",
) -> dict[str, list[float]]:
    """Stage 2: unfreezes the top blocks (BatchNorm excepted), recompiles, trains on.

    Args:
        model: A model whose head was trained by `train_head`.
        train_data: A `tf.data.Dataset` of `(images, labels)` batches.
        validation_data: The same for validation, or `None`.
        epochs: Epochs to fine-tune. Defaults to 5.
        unfreeze: How many whole blocks of the backbone to unfreeze, from the top.
            Defaults to 1 (e.g. VGG16's block5).
        learning_rate: Adam's learning rate, kept low so the pretrained features are not
            destroyed. Defaults to 1e-5.
        initial_epoch: Where the epoch count continues from (stage 1's epoch count).
        patience: Early-stopping patience on `val_loss`; 0 never stops early.
        callbacks: Extra Keras callbacks.
        jit_compile: XLA-compile the training step: True, False, or "auto" (Keras' default:
            on with a GPU, off on a CPU). Defaults to "auto".

    Returns:
        The Keras history dict of this stage.

    Example:
        >>> history = fine_tune(model, train_ds, val_ds, epochs=3, unfreeze=2, initial_epoch=5)
    """
    unfreeze_top_blocks(model, unfreeze)
    compile_model(model, learning_rate=learning_rate, jit_compile=jit_compile)
    return _fit(
        model,
        train_data,
        validation_data,
        epochs=epochs,
        initial_epoch=initial_epoch,
        patience=patience,
        callbacks=callbacks,
    )


def merge_histories(*stages: dict[str, list[float]]) -> dict[str, list]:
    """Joins per-stage history dicts into one, adding `epoch` and `stage` (1, 2) columns.

    Example:
        >>> merge_histories({"loss": [1.0, 0.8]}, {"loss": [0.7]})
        {'epoch': [1, 2, 3], 'stage': [1, 1, 2], 'loss': [1.0, 0.8, 0.7]}
    """
    merged: dict[str, list] = {"epoch": [], "stage": []}
    for number, history in enumerate(stages, start=1):
        length = len(next(iter(history.values()), []))
        start = len(merged["epoch"])
        merged["epoch"] += list(range(start + 1, start + length + 1))
        merged["stage"] += [number] * length
        for key, values in history.items():
            merged.setdefault(key, [None] * start)
            merged[key] += [float(value) for value in values]
    return merged


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run; saved as `config.json` in the run folder.

    Attributes:
        data_dir: Folder of class folders, or of `train/`, `val/`, `test/` folders.
        out: The run folder to write.
        backbone: Registry name, e.g. `"vgg16"`.
        weights: `"imagenet"`, `"none"` or a weights file path.
        image_size: Square side in pixels; `None` means the backbone's default.
        batch_size: Images per batch.
        epochs: Stage 1 epochs (head only).
        fine_tune_epochs: Stage 2 epochs; 0 skips fine-tuning.
        unfreeze: Blocks unfrozen in stage 2, counted from the top.
        learning_rate: Stage 1 learning rate.
        fine_tune_learning_rate: Stage 2 learning rate.
        validation_split: Held-out fraction when there is no `val/` folder.
        dense_units: Units of the hidden Dense layer of the head; 0 leaves it out.
        dropout: Dropout rate in the head.
        patience: Early-stopping patience in epochs; 0 turns early stopping off.
        seed: Seed for the split, shuffling and initialisation.
        precision: `"float32"`, `"mixed_bfloat16"` or `"mixed_float16"`; see
            `tlkeras.precision`.
        jit_compile: XLA compilation: True, False or `"auto"` (on with a GPU, off on a CPU).
        cache: Where the frozen part's features are kept when training on them:
            `"auto"` (memory or disk, decided from their size), `"memory"`, `"disk"`, or
            `"off"` to run the whole backbone every epoch; see `tlkeras.features`.
        augment_passes: With random augmentation on, 0 trains end to end; K caches K
            augmented passes over the training images.
    """

    data_dir: str
    out: str = "runs/latest"
    backbone: str = "vgg16"
    weights: str | None = "imagenet"
    image_size: int | None = None
    batch_size: int = 32
    epochs: int = 10
    fine_tune_epochs: int = 0
    unfreeze: int = 1
    learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 1e-5
    validation_split: float = 0.2
    dense_units: int = 1024
    dropout: float = 0.2
    patience: int = 5
    seed: int = 0
    # Speed: precision, XLA and cached features (tlkeras/precision.py, tlkeras/features.py).
    precision: str = "float32"
    jit_compile: bool | str = "auto"
    cache: str = "auto"
    augment_passes: int = 0


def _check_config(config: TrainConfig) -> None:
    """Fails before any slow work when a setting cannot work."""
    counts = {
        "epochs": (config.epochs, 1),
        "fine_tune_epochs": (config.fine_tune_epochs, 0),
        "batch_size": (config.batch_size, 1),
        "patience": (config.patience, 0),
    }
    for name, (value, low) in counts.items():
        if not isinstance(value, int) or value < low:
            raise ValueError(
                f"{name} must be an int of at least {low}. Received: {name}={value!r}"
            )
    blocks = get_backbone(config.backbone).block_names
    if config.fine_tune_epochs and not 1 <= config.unfreeze <= len(blocks):
        raise ValueError(
            f"Cannot unfreeze {config.unfreeze} blocks of {config.backbone}: it has "
            f"{len(blocks)} blocks, {', '.join(blocks)} (bottom to top). Pass a number from 1 "
            f"to {len(blocks)}. Received: unfreeze={config.unfreeze!r}"
        )
    _check_speed_options(config)


CACHE_MODES = (*STORAGES, "off")


def _check_speed_options(config: TrainConfig) -> None:
    check_precision(config.precision)
    if config.jit_compile not in (True, False, "auto"):
        raise ValueError(
            "jit_compile must be True, False or 'auto' (XLA with a GPU, none on a CPU). "
            f"Received: jit_compile={config.jit_compile!r}"
        )
    if config.cache not in CACHE_MODES:
        raise ValueError(
            f"Unknown cache mode {config.cache!r}. Expected one of {CACHE_MODES}: 'off' runs "
            f"the whole backbone every epoch. Received: cache={config.cache!r}"
        )
    if not isinstance(config.augment_passes, int) or config.augment_passes < 0:
        raise ValueError(
            "augment_passes must be an int of at least 0 (0 trains end to end when augmenting)."
            f" Received: augment_passes={config.augment_passes!r}"
        )


def _cache_passes(config: TrainConfig) -> int:
    """How many passes over the training images to cache; 0 means train end to end."""
    if config.cache == "off":
        return 0
    # Random augmentation (TrainConfig.augment, where present) changes the images each epoch.
    augmenting = bool(getattr(config, "augment", None))
    return config.augment_passes if augmenting else 1


def train(config: TrainConfig) -> runs.Run:
    """Trains a classifier on a data folder and writes a run folder.

    The run folder holds `model.keras` (class names embedded), `class_names.json`,
    `config.json` (the resolved configuration), `history.json`, `history.csv` and
    `best.keras` (the checkpoint with the lowest validation loss).

    Unless `config.cache` is `"off"`, each stage runs the frozen part of the model once and
    trains the rest on its cached output (`tlkeras.features`); with random augmentation on,
    the stages train end to end, or on `augment_passes` cached augmented passes.

    Args:
        config: A `TrainConfig`.

    Returns:
        The saved `Run` (model, class names, config, history).

    Example:
        >>> run = train(TrainConfig("data_samples/digits", out="runs/digits",
        ...                         weights="none", image_size=32, epochs=3))
        >>> run.class_names[:2]
        ['0', '1']
    """
    _check_config(config)
    keras.utils.set_random_seed(config.seed)
    image_size = resolve_image_size(config.image_size, config.backbone)
    data = load_data(
        config.data_dir,
        image_size=image_size,
        batch_size=config.batch_size,
        validation_split=config.validation_split,
        seed=config.seed,
    )
    with precision_scope(config.precision):
        model = build_model(
            config.backbone,
            num_classes=len(data.class_names),
            image_size=image_size,
            weights=config.weights,
            dense_units=config.dense_units,
            dropout=config.dropout,
        )
    os.makedirs(config.out, exist_ok=True)
    checkpoint = keras.callbacks.ModelCheckpoint(
        os.path.join(config.out, runs.CHECKPOINT_FILE), monitor="val_loss", save_best_only=True
    )
    train_ds, val_ds = data.dataset("train"), data.dataset("val")
    passes = _cache_passes(config)
    if passes:  # Run the frozen part once; train the rest on its cached output.
        speed = dict(passes=passes, storage=config.cache, jit_compile=config.jit_compile)
        stage_1 = functools.partial(train_head_cached, data=data, **speed)
        stage_2 = functools.partial(fine_tune_cached, data=data, **speed)
    else:
        warn_if_xla_is_slow(model, config.jit_compile)
        plain = dict(train_data=train_ds, validation_data=val_ds, jit_compile=config.jit_compile)
        stage_1 = functools.partial(train_head, **plain)
        stage_2 = functools.partial(fine_tune, **plain)
    head = stage_1(
        model,
        epochs=config.epochs,
        learning_rate=config.learning_rate,
        patience=config.patience,
        callbacks=[checkpoint],
    )
    stages = [head]
    if config.fine_tune_epochs:
        stages.append(
            stage_2(
                model,
                epochs=config.fine_tune_epochs,
                unfreeze=config.unfreeze,
                learning_rate=config.fine_tune_learning_rate,
                initial_epoch=len(head["loss"]),
                patience=config.patience,
                callbacks=[checkpoint],
            )
        )
    resolved = {**dataclasses.asdict(config), "image_size": list(image_size)}
    return runs.save_run(
        config.out,
        model=model,
        class_names=data.class_names,
        config=resolved,
        history=merge_histories(*stages),
    )
