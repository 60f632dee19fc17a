"""The recipe: train a new head on a frozen backbone, then fine-tune its top blocks.

Stage 1 (`train_head`) trains the head with the whole backbone frozen. Stage 2 (`fine_tune`)
unfreezes the top blocks, keeps every BatchNormalization layer frozen (so it runs in
inference mode), recompiles with a low learning rate and continues the epoch count. Both are
`fit_stage` with another `tlkeras.config.Stage`, and both take either a `tf.data.Dataset` or
a `tlkeras.data.Data`. With a `Data`, the frozen part runs once and the rest trains on its
cached output (`tlkeras.features`): caching changes what `fit` is fed, not how it trains.

`train` runs the whole recipe on a data folder and writes a run folder, checkpointing every
epoch (`tlkeras.checkpoints`).

Example:
    >>> data = load_data("data_samples/digits", image_size=32)
    >>> model = build_model("vgg16", num_classes=10, image_size=32, weights=None)
    >>> history = train_head(model, data, epochs=2)
    >>> history = fine_tune(model, data, epochs=2, unfreeze=1, initial_epoch=2)
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import shutil
import sys
import warnings

import keras

from tlkeras import checkpoints, distribute, runs
from tlkeras.augment import augmentation_layer, get_augmentation
from tlkeras.backbones import check_num_blocks, get_backbone
from tlkeras.config import CACHE_MODES, Stage, TrainConfig
from tlkeras.data import Data, check_class_weight, load_data
from tlkeras.errors import UsageError, UsageTypeError
from tlkeras.features import RunCache, cached_datasets, end_to_end_model
from tlkeras.guards import (
    StopOnInterrupt,
    TrainingDivergedError,
    TrainingInterrupted,
    kill_point,
)
from tlkeras.memory import forget_traced_gradients, parse_cache_memory
from tlkeras.model import (
    build_model,
    compile_model,
    freeze_backbone,
    resolve_image_size,
    strategy_scope,
    unfreeze_top_blocks,
)
from tlkeras.plots import HISTORY_PLOT_FILE, plot_history
from tlkeras.precision import check_precision, precision_scope, warn_if_xla_is_slow
from tlkeras.run_lock import RunLock
from tlkeras.scan import SCAN_REPORT_FILE
from tlkeras.scratch import (
    make_scratch_folder,
    remove_scratch_folder,
    remove_stale_scratch_folders,
)
from tlkeras.weights import pretrained_settings

__all__ = ["Stage", "TrainConfig", "fine_tune", "fit", "fit_stage", "train", "train_head"]


def fit(model, train_data, validation_data=None, *, epochs, initial_epoch=0, **fit_kwargs):
    """The one fit loop of tlkeras: `model.fit` from `initial_epoch`, `epochs` more epochs.

    The training data shuffles itself (`tlkeras.data.epoch_dataset`), and the progress is
    a moving bar on a terminal and one line per epoch in a log, unless `verbose` says else.

    Returns:
        The Keras history dict, e.g. `{"loss": [...], "val_accuracy": [...]}`.

    Example:
        >>> fit(model, train_ds, val_ds, epochs=3, callbacks=[StopOnNaN()])
    """
    kill_point("fit_begin")
    fit_kwargs.setdefault("verbose", "auto" if sys.stdout.isatty() else 2)
    split = distribute.batch_split()  # On JAX, every batch is split evenly across devices.
    history = model.fit(
        distribute.even_batches(train_data, **split),
        validation_data=distribute.even_batches(validation_data, **split),
        epochs=initial_epoch + epochs,
        initial_epoch=initial_epoch,
        shuffle=False,
        **fit_kwargs,
    )
    return history.history


def train_head(
    model,
    train_data,
    validation_data=None,
    *,
    epochs=10,
    learning_rate=1e-3,
    callbacks=None,
    **options,
) -> dict[str, list[float]]:
    """Stage 1: trains the head with the whole backbone frozen.

    Args:
        model: A model from `tlkeras.build_model`.
        train_data: A `tf.data.Dataset` of `(images, labels)` batches, or a `Data` from
            `tlkeras.load_data` (then the backbone runs once, on cached features).
        validation_data: A dataset like `train_data`, or `None` (a `Data` brings its own).
        epochs: Epochs to train. Defaults to 10.
        learning_rate: Adam's learning rate. Defaults to 1e-3.
        callbacks: Keras callbacks; `self.model` in them is `model`.
        **options: More `tlkeras.config.Stage` fields: `patience`, `initial_epoch`,
            `class_weight`, `steps_per_epoch`, `jit_compile`, `cache`, `augment`.

    Returns:
        The Keras history dict, e.g. `{"loss": [...], "val_accuracy": [...]}`.

    Example:
        >>> history = train_head(model, data.dataset("train"), data.dataset("val"), epochs=3)
    """
    stage = Stage(epochs=epochs, learning_rate=learning_rate, unfreeze=0, **options)
    return fit_stage(model, train_data, validation_data, stage=stage, callbacks=callbacks)


def fine_tune(
    model, train_data, validation_data=None, *, epochs=5, unfreeze=1, learning_rate=1e-5,
    callbacks=None, **options,
) -> dict[str, list[float]]:  # fmt: skip
    """Stage 2: unfreezes the top blocks (BatchNorm excepted), recompiles, trains on.

    Args:
        model: A model whose head was trained by `train_head`.
        train_data: A `tf.data.Dataset` of `(images, labels)` batches, or a `Data`.
        validation_data: A dataset like `train_data`, or `None` (a `Data` brings its own).
        epochs: Epochs to fine-tune. Defaults to 5.
        unfreeze: How many whole blocks of the backbone to unfreeze, from the top.
            Defaults to 1 (e.g. VGG16's block5).
        learning_rate: Adam's learning rate, kept low so the pretrained features are not
            destroyed. Defaults to 1e-5.
        callbacks: Keras callbacks; `self.model` in them is `model`.
        **options: More `tlkeras.config.Stage` fields: `initial_epoch` (stage 1's epoch
            count), `patience`, `class_weight`, `freeze_batchnorm`, `cache`, ...

    Returns:
        The Keras history dict of this stage.

    Example:
        >>> history = fine_tune(model, train_ds, val_ds, epochs=3, unfreeze=2, initial_epoch=5)
    """
    stage = Stage(epochs=epochs, learning_rate=learning_rate, unfreeze=unfreeze, **options)
    return fit_stage(model, train_data, validation_data, stage=stage, callbacks=callbacks)


def fit_stage(
    model, train_data, validation_data=None, *, stage: Stage, callbacks=None, features=None
):
    """Freezes the backbone but the stage's top blocks, recompiles and fits.

    With a `Data`, `features` may be a `tlkeras.features.RunCache` that both stages share,
    so the frozen blocks run once for the whole run (`train` does this). A
    `tlkeras.guards.StopOnInterrupt` among the callbacks stops the caching pass too, after
    the batch in progress, deleting what was cached.

    Example:
        >>> fit_stage(model, data, stage=Stage(epochs=3, learning_rate=1e-3))
    """
    if stage.unfreeze:
        unfreeze_top_blocks(model, stage.unfreeze, freeze_batchnorm=stage.freeze_batchnorm)
    else:
        freeze_backbone(model)
    warn_if_xla_is_slow(model, stage.jit_compile)
    callbacks = list(callbacks or [])
    interrupt = next((c for c in callbacks if isinstance(c, StopOnInterrupt)), None)
    fed = _feed(model, train_data, validation_data, stage, features, interrupt=interrupt)
    with fed as (trained, train_ds, val_ds, steps):
        if stage.patience and val_ds is not None:
            callbacks.append(
                keras.callbacks.EarlyStopping(patience=stage.patience, restore_best_weights=True)
            )
        _compile(trained, model, stage)
        return fit(
            trained,
            train_ds,
            val_ds,
            epochs=stage.epochs,
            initial_epoch=stage.initial_epoch,
            callbacks=[_OnModel(callbacks, model)] if trained is not model else callbacks,
            class_weight=stage.class_weight,
            steps_per_epoch=steps,
        )


@contextlib.contextmanager
def _feed(model, train_data, validation_data, stage: Stage, features=None, *, interrupt=None):
    """Yields `(trained, train_data, validation_data, steps)`: what `fit` trains, on what.

    `trained` shares its layers with `model`: the top of the model when a `Data` is cached,
    else the model end to end with its frozen part in inference mode (the model itself
    when `freeze_batchnorm=False` reproduces the classic mistake). A `StopOnInterrupt`
    (`interrupt`) stops the caching too, after the batch in progress.
    """
    if not isinstance(train_data, Data):
        yield _end_to_end(model, stage), train_data, validation_data, stage.steps_per_epoch
        return
    data = train_data
    if validation_data is not None:
        raise UsageTypeError(
            "A Data brings its own validation split, so validation_data must be None with it. "
            f"Received: validation_data={validation_data!r}"
        )
    augment = augmentation_layer(stage.augment, seed=data.seed)
    passes = _cache_passes(stage, augment)
    if passes:
        stage = dataclasses.replace(stage, augment=augment, augment_passes=passes)
        with cached_datasets(model, data, stage, features, interrupt=interrupt) as fed:
            yield fed
        return
    train_ds, steps = data.epoch_dataset(
        initial_epoch=stage.initial_epoch,
        epochs=stage.initial_epoch + stage.epochs,
        augment=stage.augment,  # Each epoch's own, by (seed, epoch): exact on resume.
    )
    shard = distribute.shard_by_data
    val_ds = shard(data.dataset("val")) if "val" in data.folder.splits else None
    yield _end_to_end(model, stage), shard(train_ds), val_ds, steps


def _end_to_end(model, stage: Stage):
    """The model with its frozen part in inference mode; itself to reproduce the mistake."""
    return end_to_end_model(model, stage.unfreeze) if stage.freeze_batchnorm else model


def _cache_passes(stage: Stage, augment) -> int:
    """How many passes over the training images to cache; 0 means train end to end."""
    if stage.cache == "off" or not stage.epochs or not stage.freeze_batchnorm:
        return 0
    # Random augmentation changes the images every epoch: cache K augmented passes, or none.
    return 1 if augment is None else stage.augment_passes


def _compile(trained, model, stage: Stage) -> None:
    """Compiles `trained`, and `model` with the same optimizer, built for the model's variables.

    The two share their trainable variables, so one optimizer serves both: the model's
    checkpoints (`model.save_weights`) then hold the optimizer state that trains it, in the
    order of `model.trainable_variables` whatever is fed, so a checkpoint loads back into the
    same slots. Keras only picks up a change of `trainable` on compile.
    """
    options = {"learning_rate": stage.learning_rate, "jit_compile": stage.jit_compile}
    compile_model(trained, **options)
    if trained is not model:
        with strategy_scope(model):
            trained.optimizer.build(model.trainable_variables)
        compile_model(model, optimizer=trained.optimizer, **options)


class _OnModel(keras.callbacks.Callback):
    """Runs callbacks against the whole model while `fit` trains a model that shares its layers.

    Inside them `self.model` is the whole model, so a ModelCheckpoint saves a model that
    takes images, and a callback that stops training (EarlyStopping, TerminateOnNaN) stops
    the fit.
    """

    HOOKS = ("train_begin", "train_end", "epoch_begin", "epoch_end", "train_batch_begin")
    HOOKS += ("train_batch_end", "test_begin", "test_end", "test_batch_begin", "test_batch_end")

    def __init__(self, callbacks, model: keras.Model):
        super().__init__()
        self._model_callbacks = keras.callbacks.CallbackList(list(callbacks), model=model)
        self._whole = model
        for hook in self.HOOKS:
            setattr(self, f"on_{hook}", self._forward(f"on_{hook}"))

    def set_params(self, params):
        super().set_params(params)
        self._model_callbacks.set_params(params)

    def _forward(self, hook: str):
        def forward(*args, **kwargs):
            if hook == "on_train_begin":
                self._whole.stop_training = False
            getattr(self._model_callbacks, hook)(*args, **kwargs)
            if self._whole.stop_training:
                self.model.stop_training = True

        return forward


#: TrainConfig fields that say where and how to start a run, not what it trains.
RUN_CONTROL_FIELDS = ("out", "resume", "overwrite", "callbacks")
#: The errno values of a full disk or an exceeded quota.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@forget_traced_gradients()  # Frees what TensorFlow keeps of each run (see tlkeras.memory).
def train(config: TrainConfig, *, callbacks=None) -> runs.Run:
    """Trains a classifier on a data folder and writes a run folder, checkpointing every epoch.

    The run folder is described in docs/training.md and `tlkeras.runs`. A killed run
    loses at most the epoch in progress, and `resume=True` continues it exactly. Ctrl-C,
    SIGTERM, a NaN loss or a full disk stop it with a message that says how to resume.

    Args:
        config: A `TrainConfig`.
        callbacks: Keras callbacks for both stages, after `config.callbacks`; `self.model`
            in them is the whole model.

    Returns:
        The saved `Run` (model, class names, config, history).

    Example:
        >>> run = train(TrainConfig("data_samples/digits", weights="none", image_size=32))
    """
    config = resolve_config(config)
    strategy = distribute.get_strategy(config.strategy)  # First: multi-worker needs a new runtime.
    config, run_dir = _where_this_worker_writes(config, strategy)
    with RunLock(config.out, purpose="train"):  # One writer per run folder; workers: their own.
        run = _train_holding_the_lock(config, strategy, run_dir, callbacks)
    return _as_chief_run(run, config.out, run_dir)


def _train_holding_the_lock(config: TrainConfig, strategy, run_dir, callbacks) -> runs.Run:
    """`train` once this process holds `config.out`'s lock (see `tlkeras.run_lock`)."""
    state = checkpoints.start_run(config.out, settings_of(config), resume=config.resume,
                                  overwrite=config.overwrite)  # fmt: skip
    if state.finished:
        print(f"The run in {run_dir} has already finished; loading it.")
        return runs.load_run(run_dir)
    with distribute.run_scope(strategy):
        data, model = _load_and_build(config, strategy)
        _begin(config, state, data, model)
        callbacks = [*(config.callbacks or []), *(callbacks or [])]
        # One cache for both stages: at stage 2's boundary when stage 2 follows.
        num_blocks = config.unfreeze if config.fine_tune_epochs else 0
        with (
            StopOnInterrupt() as interrupt,
            RunCache(model, data, num_blocks=num_blocks) as shared,
        ):
            for number, stage in plan_stages(config, state, data, strategy):
                with _explain_stops(config, state, stage=number):
                    kill_point(f"stage{number}_begin")
                    run_callbacks = _stage_callbacks(config, state, data, stage=number)
                    callbacks_now = [*run_callbacks, *callbacks, interrupt]
                    fit_stage(model, data, stage=stage, callbacks=callbacks_now, features=shared)
                    kill_point(f"stage{number}_end")
        with _explain_stops(config, state, stage=len(state.histories)):
            return _save(config, state, data, model, strategy)


def resolve_config(config: TrainConfig) -> TrainConfig:
    """Fills in what a pretrained `weights` folder knows, then checks every setting.

    Fails before any slow work when a setting cannot work.
    """
    found = pretrained_settings(config.weights)
    config = dataclasses.replace(
        config,
        backbone=config.backbone or found.get("backbone") or "vgg16",
        image_size=config.image_size or found.get("image_size"),
    )
    check_counts(
        {
            "epochs": (config.epochs, 1),
            "fine_tune_epochs": (config.fine_tune_epochs, 0),
            "batch_size": (config.batch_size, 1),
            "patience": (config.patience, 0),
            "augment_passes": (config.augment_passes, 0),
        }
    )
    if config.fine_tune_epochs:
        check_num_blocks(config.backbone, config.unfreeze, minimum=1, name="unfreeze")
    check_precision(config.precision)
    if config.jit_compile not in (True, False, "auto"):
        raise UsageError(
            "jit_compile must be True, False or 'auto' (XLA with a GPU, none on a CPU). "
            f"Received: jit_compile={config.jit_compile!r}"
        )
    if config.cache not in CACHE_MODES:
        raise UsageError(
            f"Unknown cache mode {config.cache!r}. Expected one of {CACHE_MODES}: 'off' runs "
            f"the whole backbone every epoch. Received: cache={config.cache!r}"
        )
    parse_cache_memory(config.cache_memory)
    check_class_weight(config.class_weight)
    return config


def warn_if_meaningless(config: TrainConfig) -> None:
    """Warns before training a head on a random backbone that never trains: near chance.

    Example:
        >>> warn_if_meaningless(TrainConfig("data", weights="none"))   # UserWarning
    """
    if str(config.weights).lower() in ("none", "") and not config.fine_tune_epochs:
        blocks = len(get_backbone(config.backbone).block_names)
        warnings.warn(
            f"weights='none' with stage 1 only trains a head on a random, frozen "
            f"{config.backbone}: expect near-chance accuracy. For a meaningful run, pass "
            f"--fine-tune-epochs N --unfreeze {blocks} (train the whole backbone), or real "
            "weights (--weights imagenet, or a folder from tlkeras pretrain).",
            UserWarning,
            stacklevel=2,
        )


def check_counts(counts: dict) -> None:
    """Fails on a count that is not an int, or is below its minimum.

    Example:
        >>> check_counts({"epochs": (config.epochs, 1), "patience": (config.patience, 0)})
    """
    for name, (value, low) in counts.items():
        if not isinstance(value, int) or value < low:
            raise UsageError(
                f"{name} must be an int of at least {low}. Received: {name}={value!r}"
            )


def settings_of(config: TrainConfig) -> dict:
    """The settings that define a run, as `checkpoint/state.json` saves them."""
    settings = {
        field.name: getattr(config, field.name)
        for field in dataclasses.fields(config)
        if field.name not in RUN_CONTROL_FIELDS
    }
    return json.loads(json.dumps(settings, default=os.fspath))  # As saved: lists, str.


def _load_and_build(config: TrainConfig, strategy) -> tuple[Data, keras.Model]:
    """Seeds everything, loads the data folder and builds the model in the strategy's scope."""
    keras.utils.clear_session()  # Many runs in one process must not pile up Keras state.
    remove_stale_scratch_folders()  # Disk caches and worker folders of killed runs.
    if config.deterministic:
        _enable_op_determinism()
    keras.utils.set_random_seed(config.seed)
    kill_point("loading")
    data = load_config_data(config, num_replicas=strategy.num_replicas_in_sync)
    kill_point("loaded")
    return data, build_config_model(config, data, strategy)


def load_config_data(config: TrainConfig, *, image_size=None, num_replicas: int = 1) -> Data:
    """Loads a config's data folder at its image size (or `image_size`), batched globally.

    Example:
        >>> data = load_config_data(TrainConfig("data_samples/digits", image_size=32))
    """
    return load_data(
        config.data_dir,
        image_size=image_size or resolve_image_size(config.image_size, config.backbone),
        batch_size=config.batch_size * num_replicas,  # The global batch.
        validation_split=config.validation_split,
        seed=config.seed,
        strict=config.strict,
    )


def build_config_model(config: TrainConfig, data: Data, strategy=None) -> keras.Model:
    """Builds a config's model for `data`, in its precision and the strategy's scope.

    Example:
        >>> model = build_config_model(config, load_config_data(config))
    """
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope, precision_scope(config.precision):
        return build_model(
            config.backbone,
            num_classes=len(data.class_names),
            image_size=data.image_size,
            weights=config.weights,
            dense_units=config.dense_units,
            dropout=config.dropout,
            weights_dir=config.weights_dir,
        )


def _enable_op_determinism() -> None:
    """Deterministic kernels (slower): the same seed gives the same weights on this machine."""
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()


def _begin(config: TrainConfig, state, data: Data, model: keras.Model) -> None:
    """Checks the disk, creates or checks the checkpoint, and loads the last one's weights."""
    warn_if_meaningless(config)
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


def _learning_rates(config: TrainConfig, strategy) -> tuple[float, float]:
    """Both stages' learning rates, scaled to the number of replicas."""
    return tuple(
        distribute.scale_learning_rate(
            rate,
            num_replicas=strategy.num_replicas_in_sync,
            scaling=config.learning_rate_scaling,
        )
        for rate in (config.learning_rate, config.fine_tune_learning_rate)
    )


def _augmentation(config: TrainConfig):
    return get_augmentation(
        config.augment,
        flip=config.flip,
        rotation=config.rotation,
        zoom=config.zoom,
        translation=config.translation,
        contrast=config.contrast,
    )


def plan_stages(config: TrainConfig, state, data: Data, strategy):
    """Yields `(number, Stage)` for each stage that has not ended, as it is reached.

    A stage is planned only when the one before it has ended, since it starts where that
    one stopped (early stopping may end stage 1 before `config.epochs`).

    Example:
        >>> [number for number, _ in plan_stages(config, state, data, strategy)]
        [1, 2]
    """
    learning_rates = _learning_rates(config, strategy)
    planned = {1: config.epochs, 2: config.fine_tune_epochs}
    common = dict(
        class_weight=data.class_weight(config.class_weight),
        jit_compile=config.jit_compile,
        cache=config.cache,
        cache_memory=config.cache_memory,
        augment=_augmentation(config),
        augment_passes=config.augment_passes,
    )
    for number in (1, 2) if config.fine_tune_epochs else (1,):
        if state.is_done(number):
            continue
        yield (
            number,
            Stage(
                epochs=state.remaining_epochs(number, planned[number]),
                learning_rate=learning_rates[number - 1],
                unfreeze=0 if number == 1 else config.unfreeze,
                initial_epoch=state.stage_start(number) + state.epochs_in(number),
                **common,
            ),
        )


def _stage_callbacks(config: TrainConfig, state, data: Data, *, stage: int) -> list:
    """The callbacks that make a stage resumable, in the order they must run."""
    return checkpoints.stage_callbacks(
        config.out,
        state,
        stage=stage,
        class_names=data.class_names,
        metadata={"backbone": config.backbone, "image_size": list(data.image_size)},
        patience=config.patience,
    )


def _save(config: TrainConfig, state, data: Data, model, strategy) -> runs.Run:
    """Writes the run folder and marks the checkpoint finished."""
    kill_point("saving")
    resolved = {**settings_of(config), "image_size": list(data.image_size)}
    resolved.update(out=config.out, resume=config.resume, overwrite=config.overwrite)
    resolved["augmentation"] = dataclasses.asdict(_augmentation(config))  # preset + overrides
    learning_rates = _learning_rates(config, strategy)
    resolved["distribution"] = {
        **distribute.describe(strategy),
        "global_batch_size": data.batch_size,
        "learning_rate": learning_rates[0],
        "fine_tune_learning_rate": learning_rates[1],
    }
    run = runs.save_run(
        config.out,
        model=model,
        class_names=data.class_names,
        config=resolved,
        history=merge_histories(*state.histories),
    )
    plot_history(run.history, path=os.path.join(config.out, HISTORY_PLOT_FILE))
    checkpoints.finish_run(config.out, state)
    kill_point("finished")
    return run


def merge_histories(*stages: dict[str, list[float]]) -> dict[str, list]:
    """Joins per-stage history dicts into one, adding `epoch` and `stage` (1, 2) columns.

    A metric that a stage did not log (a callback's, say) is `None` in that stage's rows, so
    every column has one value per epoch.

    Example:
        >>> merge_histories({"loss": [1.0, 0.8], "lr": [0.1, 0.1]}, {"loss": [0.7]})
        {'epoch': [1, 2, 3], 'stage': [1, 1, 2], 'loss': [1.0, 0.8, 0.7], 'lr': [0.1, 0.1, None]}
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
        for values in merged.values():  # Keys this stage did not log.
            values += [None] * (start + length - len(values))
    return merged


@contextlib.contextmanager
def _explain_stops(config: TrainConfig, state, *, stage: int):
    """Turns a stop (Ctrl-C, NaN, a full disk) into a message that says how to go on."""
    try:
        yield
    except (TrainingInterrupted, TrainingDivergedError) as error:
        error.args = (_how_to_continue(error, stage=stage, state=state, config=config),)
        raise
    except checkpoints.CheckpointWriteError:
        raise
    except OSError as error:  # A full disk, most often: every file written so far is whole.
        message = _how_to_continue(error, stage=stage, state=state, config=config)
        raise OSError(error.errno, message) from error


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
        return f"{_what_failed(error, config.out)} {kept}; {_fix_for(error)}, then {step}."
    return f"{error} {kept}; to continue, {step}."


def _what_failed(error: OSError, run_dir) -> str:
    """Says which file failed and how, without assuming it was the run's own."""
    reason = error.strerror or str(error)
    if not error.filename:
        return f"A file operation failed ({reason})."
    path = os.path.abspath(os.fspath(error.filename))
    if path.startswith(os.path.abspath(os.fspath(run_dir)) + os.sep):
        return f"Could not write the run in {run_dir} ({reason}: {path})."
    return f"Could not read or write {path} ({reason}), outside the run folder {run_dir}."


def _fix_for(error: OSError) -> str:
    return "free some disk space" if error.errno in DISK_FULL else "fix that"


def _where_this_worker_writes(config: TrainConfig, strategy) -> tuple[TrainConfig, str]:
    """`(config, run_dir)`: the chief writes `config.out`; other workers a scratch copy."""
    if distribute.is_chief(strategy):
        return config, config.out
    out = _worker_folder(config.out, resume=config.resume)
    return dataclasses.replace(config, out=out), config.out


def _as_chief_run(run: runs.Run, out, run_dir) -> runs.Run:
    """A worker's run names the chief's folder; its own scratch folder goes."""
    if os.fspath(out) != os.fspath(run_dir):
        remove_scratch_folder(out)
        run.path = run_dir
    return run


def _worker_folder(run_dir, *, resume: bool) -> str:
    """A non-chief worker's scratch run folder; to resume, it starts from the chief's checkpoint.

    Every worker must resume from the same epoch with the same weights, so a worker copies
    the chief's `state.json`, `split.json` and the files the state names. The run folder must
    therefore be on storage every worker reads (a shared file system), as for Keras'
    `BackupAndRestore`.
    """
    folder = make_scratch_folder("tlkeras-worker-")  # A killed worker's: removed later.
    if not resume:
        return folder
    source = checkpoints.checkpoint_dir(run_dir)
    try:
        state = checkpoints.load_state(run_dir)
    except ValueError:
        remove_scratch_folder(folder)
        raise UsageError(
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
