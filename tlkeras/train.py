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
import errno
import json
import os
import shutil
import sys
import tempfile

import keras
import tensorflow as tf

from tlkeras import checkpoints, distribute, runs
from tlkeras.augment import augmentation_layer, get_augmentation
from tlkeras.backbones import get_backbone
from tlkeras.config import CACHE_MODES, TrainConfig
from tlkeras.data import check_class_weight, epoch_dataset, load_data
from tlkeras.features import fine_tune_cached, train_head_cached
from tlkeras.guards import StopOnInterrupt, StopOnNaN, TrainingDivergedError, TrainingInterrupted
from tlkeras.memory import forget_traced_gradients
from tlkeras.model import (
    build_model,
    compile_model,
    freeze_backbone,
    resolve_image_size,
    unfreeze_top_blocks,
)
from tlkeras.plots import HISTORY_PLOT_FILE, plot_history
from tlkeras.precision import check_precision, precision_scope, warn_if_xla_is_slow
from tlkeras.scan import SCAN_REPORT_FILE
from tlkeras.weights import pretrained_settings


def _fit(
    model, train_data, validation_data, *, epochs, initial_epoch, patience, callbacks, **options
):
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
        **options,
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
    class_weight: dict[int, float] | None = None,
    initial_epoch: int = 0,
    steps_per_epoch: int | None = None,
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
        class_weight: `{label: weight}` for Keras' `fit`, e.g. `data.class_weight()`.
        initial_epoch: The epoch to start at, when resuming. Defaults to 0.
        steps_per_epoch: Batches per epoch, for a `train_data` that holds several epochs
            (`tlkeras.data.epoch_dataset`). Defaults to `None`: one pass over `train_data`.
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
        initial_epoch=initial_epoch,
        patience=patience,
        callbacks=callbacks,
        class_weight=class_weight,
        steps_per_epoch=steps_per_epoch,
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
    class_weight: dict[int, float] | None = None,
    freeze_batchnorm: bool = True,
    steps_per_epoch: int | None = None,
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
        class_weight: `{label: weight}` for Keras' `fit`, e.g. `data.class_weight()`.
        freeze_batchnorm: Keep BatchNorm frozen. Defaults to True; False reproduces the
            classic mistake, for teaching (see `build_model`).
        steps_per_epoch: Batches per epoch, for a `train_data` that holds several epochs.
        jit_compile: XLA-compile the training step: True, False, or "auto" (Keras' default:
            on with a GPU, off on a CPU). Defaults to "auto".

    Returns:
        The Keras history dict of this stage.

    Example:
        >>> history = fine_tune(model, train_ds, val_ds, epochs=3, unfreeze=2, initial_epoch=5)
    """
    unfreeze_top_blocks(model, unfreeze, freeze_batchnorm=freeze_batchnorm)
    compile_model(model, learning_rate=learning_rate, jit_compile=jit_compile)
    return _fit(
        model,
        train_data,
        validation_data,
        epochs=epochs,
        initial_epoch=initial_epoch,
        patience=patience,
        callbacks=callbacks,
        class_weight=class_weight,
        steps_per_epoch=steps_per_epoch,
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


def check_counts(counts: dict) -> None:
    """Fails on a count that is not an int, or is below its minimum.

    Example:
        >>> check_counts({"epochs": (config.epochs, 1), "patience": (config.patience, 0)})
    """
    for name, (value, low) in counts.items():
        if not isinstance(value, int) or value < low:
            raise ValueError(
                f"{name} must be an int of at least {low}. Received: {name}={value!r}"
            )


def _check_config(config: TrainConfig) -> None:
    """Fails before any slow work when a setting cannot work."""
    check_counts(
        {
            "epochs": (config.epochs, 1),
            "fine_tune_epochs": (config.fine_tune_epochs, 0),
            "batch_size": (config.batch_size, 1),
            "patience": (config.patience, 0),
        }
    )
    blocks = get_backbone(config.backbone).block_names
    if config.fine_tune_epochs and not 1 <= config.unfreeze <= len(blocks):
        raise ValueError(
            f"Cannot unfreeze {config.unfreeze} blocks of {config.backbone}: it has "
            f"{len(blocks)} blocks, {', '.join(blocks)} (bottom to top). Pass a number from 1 "
            f"to {len(blocks)}. Received: unfreeze={config.unfreeze!r}"
        )
    _check_speed_options(config)


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


def _cache_passes(config: TrainConfig, augmentation) -> int:
    """How many passes over the training images to cache; 0 means train end to end."""
    if config.cache == "off":
        return 0
    # Random augmentation changes the images every epoch: cache K augmented passes, or none.
    return config.augment_passes if augmentation.enabled else 1


#: The errno values of a full disk or an exceeded quota.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
#: TrainConfig fields that say where and how to start a run, not what it trains.
RUN_CONTROL_FIELDS = ("out", "resume", "overwrite")


def _run_stage(
    stage: int,
    model,
    data,
    state,
    config: TrainConfig,
    interrupt,
    *,
    learning_rate: float,
    augment,
    class_weight,
) -> None:
    """Runs what is left of one stage, checkpointing every epoch, cached or end to end."""
    planned = config.epochs if stage == 1 else config.fine_tune_epochs
    initial_epoch = state.stage_start(stage) + state.epochs_in(stage)
    epochs = state.remaining_epochs(stage, planned)
    early_stopping = None
    if config.patience:
        early_stopping = checkpoints.ResumableEarlyStopping(
            monitor="val_loss", patience=config.patience, restore_best_weights=True
        )
    best = checkpoints.BestModelCheckpoint(
        os.path.join(config.out, runs.CHECKPOINT_FILE),
        class_names=data.class_names,
        best=checkpoints.best_validation_loss(state),
        metadata={"backbone": config.backbone, "image_size": list(data.image_size)},
    )
    callbacks = [
        StopOnNaN(),
        *([early_stopping] if early_stopping else []),
        checkpoints.EpochCheckpoint(
            config.out, state=state, stage=stage, early_stopping=early_stopping
        ),
        best,
        interrupt,
    ]
    options = dict(epochs=epochs, initial_epoch=initial_epoch, callbacks=callbacks)
    options.update(class_weight=class_weight, jit_compile=config.jit_compile)
    options.update(learning_rate=learning_rate, patience=0)  # Early stopping is in callbacks.
    passes = _cache_passes(config, augment)
    if passes and epochs:  # Run the frozen part once; train the rest on its cached output.
        options.update(data=data, passes=passes, storage=config.cache)
        options.update(augment=augment if augment.enabled else None)
        if stage == 1:
            train_head_cached(model, **options)
        else:
            fine_tune_cached(model, unfreeze=config.unfreeze, **options)
        return
    images, labels = data.arrays["train"]
    train_ds, steps = epoch_dataset(
        images,
        labels,
        batch_size=data.batch_size,  # The global batch: per replica x replicas.
        seed=config.seed,
        initial_epoch=initial_epoch,
        epochs=initial_epoch + epochs,
        augment=augmentation_layer(augment, seed=config.seed),
    )
    train_ds, val_ds = (
        distribute.shard_by_data(train_ds),
        distribute.shard_by_data(data.dataset("val")),
    )
    warn_if_xla_is_slow(model, config.jit_compile)
    options.update(steps_per_epoch=steps)
    if stage == 1:
        train_head(model, train_ds, val_ds, **options)
    else:
        fine_tune(model, train_ds, val_ds, unfreeze=config.unfreeze, **options)


def _how_to_continue(error, *, stage: int, state, config: TrainConfig) -> str:
    """The message of a stopped run: what happened, what is kept, how to go on."""
    if state.weights:
        folder = checkpoints.checkpoint_dir(config.out)
        kept = f"The checkpoint of epoch {state.epoch} is kept in {folder}"
    else:
        kept = "No epoch had finished, so the run restarts from the beginning"
    step = f"run the same command with --resume {config.out} (in Python: resume=True)"
    if isinstance(error, TrainingDivergedError):
        flag = "--lr" if stage == 1 else "--fine-tune-lr"
        step = f"lower {flag} and {step}; best.keras holds the best model so far"
    elif isinstance(error, OSError):
        what = f"Could not write the run in {config.out} ({error.strerror or error})."
        fix = "free some disk space" if error.errno in DISK_FULL else "fix that"
        return f"{what} {kept}; {fix}, then {step}."
    return f"{error} {kept}; to continue, {step}."


def _worker_folder(run_dir, *, resume: bool) -> str:
    """A non-chief worker's scratch run folder; to resume, it starts from the chief's checkpoint.

    Every worker must resume from the same epoch with the same weights, so a worker copies
    the chief's `state.json`, `split.json` and the files the state names. The run folder must
    therefore be on storage every worker reads (a shared file system), as for Keras'
    `BackupAndRestore`.
    """
    folder = tempfile.mkdtemp(prefix="tlkeras-worker-")
    if not resume:
        return folder
    source = checkpoints.checkpoint_dir(run_dir)
    try:
        state = checkpoints.load_state(run_dir)
    except ValueError:
        shutil.rmtree(folder, ignore_errors=True)
        raise ValueError(
            f"This worker cannot read the chief's checkpoint in {source!r}. A multi-worker run "
            "resumes from the chief's run folder, so --out must be a folder every worker "
            f"reads (a shared file system). Received: out={os.fspath(run_dir)!r}"
        ) from None
    target = checkpoints.checkpoint_dir(folder)
    os.makedirs(target)
    names = [runs.STATE_FILE, checkpoints.SPLIT_FILE, state.weights]
    names.append((state.early_stopping or {}).get("weights"))
    for name in filter(None, names):
        shutil.copy2(os.path.join(source, name), os.path.join(target, name))
    return folder


def with_pretrained_defaults(config: TrainConfig) -> TrainConfig:
    """Fills an unset backbone and image size from a pretrained `weights` folder's manifest."""
    found = pretrained_settings(config.weights)
    return dataclasses.replace(
        config,
        backbone=config.backbone or found.get("backbone") or "vgg16",
        image_size=config.image_size or found.get("image_size"),
    )


@forget_traced_gradients()  # Frees what TensorFlow keeps of each run (see tlkeras.memory).
def train(config: TrainConfig) -> runs.Run:
    """Trains a classifier on a data folder and writes a run folder, checkpointing every epoch.

    The run folder holds `model.keras` (class names embedded), `class_names.json`,
    `config.json` (the resolved configuration), `history.json`, `history.csv`,
    `history.png` (the training curves), `best.keras` (the model with the lowest validation
    loss), `scan_report.json` (what the pre-scan found: skipped and ignored files, images per
    class and split) and `checkpoint/`.

    Before any slow work it checks that `config.out` is new (or `resume`/`overwrite` is set)
    and writable, then that the disk has room for the model and its checkpoints. Every epoch
    is checkpointed, so a run that is killed loses at most the epoch in progress, and
    `resume=True` continues it exactly: its final weights and history match an uninterrupted
    run's. Ctrl-C (or SIGTERM) stops after the current batch with `guards.TrainingInterrupted`,
    and a NaN or infinite loss stops training with `guards.TrainingDivergedError`; both keep
    the last checkpoint and say how to resume.

    `config.strategy` spreads training over several GPUs or machines (`tlkeras.distribute`).
    In a multi-worker job only the chief writes the run folder; on the other workers the
    returned `Run` holds the same trained model and `path` names the chief's folder. To
    resume a multi-worker run, every worker must read the chief's run folder (shared storage).

    Args:
        config: A `TrainConfig`.

    Returns:
        The saved `Run` (model, class names, config, history).

    Raises:
        ValueError: If a setting or the run folder is wrong (see `TrainConfig`).
        guards.TrainingInterrupted: After Ctrl-C or SIGTERM (a `KeyboardInterrupt`).
        guards.TrainingDivergedError: If the loss became NaN or infinite.

    Example:
        >>> run = train(TrainConfig("data_samples/digits", out="runs/digits",
        ...                         weights="none", image_size=32, epochs=3))
        >>> run.class_names[:2]
        ['0', '1']
    """
    config = with_pretrained_defaults(config)
    _check_config(config)
    strategy = distribute.get_strategy(config.strategy)  # First: multi-worker needs a new runtime.
    replicas = strategy.num_replicas_in_sync
    learning_rates = tuple(
        distribute.scale_learning_rate(
            rate, num_replicas=replicas, scaling=config.learning_rate_scaling
        )
        for rate in (config.learning_rate, config.fine_tune_learning_rate)
    )
    # Only the chief writes the run folder; other workers write to a scratch folder.
    chief, run_dir = distribute.is_chief(strategy), config.out
    out = run_dir if chief else _worker_folder(run_dir, resume=config.resume)
    config = dataclasses.replace(config, out=out)
    augmentation = get_augmentation(
        config.augment,
        flip=config.flip,
        rotation=config.rotation,
        zoom=config.zoom,
        translation=config.translation,
        contrast=config.contrast,
    )
    check_class_weight(config.class_weight)
    keras.utils.clear_session()  # Many runs in one process must not pile up Keras state.
    settings = {
        key: value
        for key, value in dataclasses.asdict(config).items()
        if key not in RUN_CONTROL_FIELDS
    }
    settings = json.loads(json.dumps(settings, default=os.fspath))  # As saved: lists, str.
    state = checkpoints.start_run(
        config.out, settings=settings, resume=config.resume, overwrite=config.overwrite
    )
    if state.finished:
        print(f"The run in {run_dir} has already finished; loading it.")
        return runs.load_run(run_dir)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.seed)
    image_size = resolve_image_size(config.image_size, config.backbone)
    data = load_data(
        config.data_dir,
        image_size=image_size,
        batch_size=config.batch_size * replicas,  # The global batch.
        validation_split=config.validation_split,
        seed=config.seed,
        strict=config.strict,
    )
    class_weight = data.class_weight(config.class_weight)
    with strategy.scope(), precision_scope(config.precision):
        model = build_model(
            config.backbone,
            num_classes=len(data.class_names),
            image_size=image_size,
            weights=config.weights,
            dense_units=config.dense_units,
            dropout=config.dropout,
            weights_dir=config.weights_dir,
        )
    runs.check_free_space(config.out, num_params=model.count_params())
    checkpoints.begin_run(
        config.out,
        state,
        splits=data.folder.splits,
        data_dir=config.data_dir,
        overwrite=config.overwrite,
    )
    data.report.save(os.path.join(config.out, SCAN_REPORT_FILE))
    checkpoints.restore_model(model, config.out, state)
    fit_options = {"augment": augmentation, "class_weight": class_weight}
    stage = 1
    try:
        with StopOnInterrupt() as interrupt:
            for stage in (1, 2) if config.fine_tune_epochs else (1,):
                if not state.is_done(stage):
                    _run_stage(
                        stage,
                        model,
                        data,
                        state,
                        config,
                        interrupt,
                        learning_rate=learning_rates[stage - 1],
                        **fit_options,
                    )
        resolved = {**dataclasses.asdict(config), "image_size": list(image_size)}
        resolved["out"] = run_dir
        resolved["augmentation"] = dataclasses.asdict(augmentation)  # preset + overrides
        resolved["distribution"] = {
            **distribute.describe(strategy),
            "global_batch_size": config.batch_size * replicas,
            "learning_rate": learning_rates[0],
            "fine_tune_learning_rate": learning_rates[1],
        }
        resolved = json.loads(json.dumps(resolved, default=os.fspath))  # e.g. a Path data_dir
        run = runs.save_run(
            config.out,
            model=model,
            class_names=data.class_names,
            config=resolved,
            history=merge_histories(*state.histories),
        )
        plot_history(run.history, path=os.path.join(config.out, HISTORY_PLOT_FILE))
        checkpoints.finish_run(config.out, state)
    except (TrainingInterrupted, TrainingDivergedError) as error:
        error.args = (_how_to_continue(error, stage=stage, state=state, config=config),)
        raise
    except OSError as error:  # A full disk, most often: every file written so far is whole.
        if isinstance(error, checkpoints.CheckpointWriteError):
            raise
        message = _how_to_continue(error, stage=stage, state=state, config=config)
        raise OSError(error.errno, message) from error
    if not chief:  # Its model is the chief's; only the chief's run folder is kept.
        shutil.rmtree(out)
        run.path = run_dir
    return run
