"""Per-epoch checkpoints: everything needed to resume a run exactly where it stopped.

A run folder's `checkpoint/` holds:

    checkpoint/
        state.json              what is done: the run's settings, the stage (1 trains the head,
                                2 fine-tunes), the epochs completed, the history so far, the
                                states of the model's Keras seed generators (dropout),
                                early stopping's state and the name of the weights file. It is
                                written last, so it only ever names complete files.
        split.json              the image files of every split, written when the run starts
        epoch_0005.weights.h5   model and optimizer variables after epoch 5
        best_0003.npz           early stopping's best weights so far in this stage

Every file is written atomically (`tlkeras.files.write_atomically`) and `state.json` is the
commit point: a kill at any moment leaves the previous checkpoint or the new one. The order
of the training images in epoch `e` depends only on `(seed, e)` (`tlkeras.data.epoch_dataset`),
and so does the random augmentation of epoch `e` (`tlkeras.augment.epoch_augmentation`: a
layer seeded by `(seed, e)`, so nothing of it needs saving), so a resumed run sees the same
batches, augmentations, dropout masks and optimizer state as one that never stopped, and
ends with the same weights and history (within float tolerance).

Example:
    >>> state = start_run("runs/digits", settings={"seed": 0, "epochs": 3})
    >>> checkpoint = EpochCheckpoint("runs/digits", state=state, stage=1)
    >>> model.fit(train_ds, epochs=3, callbacks=[checkpoint])
    >>> load_state("runs/digits").epoch
    3
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import errno
import json
import math
import os
import shutil
import uuid
import warnings

import keras
import numpy as np

from tlkeras import files, runs, saving
from tlkeras.errors import DataError, UsageError
from tlkeras.guards import StopOnNaN, kill_point
from tlkeras.saving import load_weights_strictly

STATE_FILE = runs.STATE_FILE
SPLIT_FILE = "split.json"
STATE_FORMAT = 1
#: Settings that may differ when a run is resumed: they change how training continues, not
#: what was trained so far (e.g. a lower learning rate after the loss diverged).
CHANGEABLE_ON_RESUME = (
    "data_dir",
    "learning_rate",
    "fine_tune_learning_rate",
    "patience",
    "deterministic",
    "cache_memory",
)

STAGE_NAMES = {1: "stage 1, training the head", 2: "stage 2, fine-tuning"}


@dataclasses.dataclass
class TrainingState:
    """What a run has done so far; saved as `checkpoint/state.json`.

    Attributes:
        settings: The settings that define the run (the `TrainConfig` fields).
        stage: The stage of the last checkpoint: 0 before any, 1 training the head,
            2 fine-tuning.
        epoch: Epochs completed, counted across both stages.
        stage_done: Whether that stage has ended (all its epochs ran, or it stopped early).
        stop_requested: Whether early stopping asked to end the stage after this epoch.
        histories: One Keras history dict per stage, e.g. `[{"loss": [0.9, 0.7]}]`.
        weights: The weights file in `checkpoint/` to resume from, or `None`.
        seed_states: The state of every Keras seed generator in the model, in order.
        early_stopping: Early stopping's counters and best-weights file, or `None`.
        finished: Whether the run folder has been written completely.
    """

    settings: dict
    stage: int = 0
    epoch: int = 0
    stage_done: bool = False
    stop_requested: bool = False
    histories: list = dataclasses.field(default_factory=list)
    weights: str | None = None
    seed_states: list = dataclasses.field(default_factory=list)
    early_stopping: dict | None = None
    finished: bool = False

    def epochs_in(self, stage: int) -> int:
        """Epochs completed in `stage` (1 or 2)."""
        if len(self.histories) < stage:
            return 0
        return len(self.histories[stage - 1].get("loss", []))

    def stage_start(self, stage: int) -> int:
        """The overall epoch at which `stage` starts: 0, or the epochs stage 1 ran."""
        return 0 if stage == 1 else self.epochs_in(1)

    def is_done(self, stage: int) -> bool:
        """Whether `stage` has ended."""
        return self.stage > stage or (self.stage == stage and self.stage_done)

    def remaining_epochs(self, stage: int, planned: int) -> int:
        """Epochs still to run in `stage` out of `planned` (0 if early stopping ended it)."""
        if self.stage == stage and self.stop_requested:
            return 0
        return max(planned - self.epochs_in(stage), 0)


def checkpoint_dir(run_dir) -> str:
    """The checkpoint folder of a run folder."""
    return os.path.join(os.fspath(run_dir), runs.CHECKPOINT_DIR)


def _json(value) -> str:
    return json.dumps(value, indent=1, ensure_ascii=False) + "\n"


def save_state(run_dir, state: TrainingState) -> None:
    """Writes `checkpoint/state.json` atomically: the commit point of a checkpoint."""
    document = {"format": STATE_FORMAT, **dataclasses.asdict(state)}
    files.atomic_write(os.path.join(checkpoint_dir(run_dir), STATE_FILE), _json(document))


def load_state(run_dir) -> TrainingState:
    """Reads a run's `checkpoint/state.json`.

    Raises:
        ValueError: If the run folder has no checkpoint, or it was written by a newer tlkeras.

    Example:
        >>> load_state("runs/digits").epoch
        5
    """
    path = os.path.join(checkpoint_dir(run_dir), STATE_FILE)
    if not os.path.isfile(path):
        raise UsageError(
            f"The run folder {os.fspath(run_dir)!r} has no checkpoint to resume from (no "
            f"{runs.CHECKPOINT_DIR}/{STATE_FILE}). Start a new run with --overwrite or another "
            f"--out. Received: out={os.fspath(run_dir)!r}"
        )
    with open(path, encoding="utf-8") as f:
        document = json.load(f)
    if document.pop("format", None) != STATE_FORMAT:
        raise DataError(
            f"{path!r} was written by another version of tlkeras. Resume it with that version, "
            f"or start a new run with --overwrite. Received: path={path!r}"
        )
    return TrainingState(**document)


def _check_same_settings(run_dir, saved: dict, settings: dict) -> list[str]:
    """Fails if settings that define the run changed; returns the notes on those that may."""
    changed = [key for key in settings if key in saved and settings[key] != saved[key]]
    fixed = [key for key in changed if key not in CHANGEABLE_ON_RESUME]
    # A setting newer than the run (saved by an older tlkeras) may come in if it may change.
    added = [key for key in settings if key not in saved and key not in CHANGEABLE_ON_RESUME]
    if fixed or added:
        wrong = ", ".join(
            [f"{key}={settings[key]!r} (the run has {saved[key]!r})" for key in fixed]
            + [f"{key}={settings[key]!r} (unknown to the run)" for key in added]
        )
        state = os.path.join(checkpoint_dir(run_dir), STATE_FILE)
        raise UsageError(
            f"Cannot resume the run in {os.fspath(run_dir)!r} with different settings: {wrong}. "
            f"Resume with the settings it started with (listed in {state}), or start a new run "
            "with --overwrite or another --out. Received: "
            + ", ".join(f"{key}={settings[key]!r}" for key in fixed + added)
        )
    return [f"{key}={settings[key]!r} (was {saved[key]!r})" for key in changed]


def start_run(run_dir, settings: dict, *, resume: bool = False, overwrite: bool = False):
    """Checks the run folder and returns the state to train from: new, or resumed.

    It writes nothing (a new run's folder is created by `begin_run`, once the data and the
    model are ready), so a mistake found later leaves no half-made run folder behind.

    Args:
        run_dir: The run folder.
        settings: The settings that define the run (JSON-serialisable), saved in the state.
        resume: Continue the run in `run_dir` from its last checkpoint. Only the settings in
            `CHANGEABLE_ON_RESUME` may differ from the saved ones.
        overwrite: Replace the run in `run_dir` (deleted by `begin_run`).

    Returns:
        A `TrainingState`.

    Raises:
        ValueError: If the folder cannot be used (see `tlkeras.runs.check_run_folder`),
            there is no checkpoint to resume, or the settings differ.

    Example:
        >>> state = start_run("runs/digits", settings=settings, resume=True)
        >>> state.epoch   # the epochs already done
        4
    """
    if resume and not _has_checkpoint(run_dir):
        # Killed before its first checkpoint (while loading, say): nothing to lose.
        print(f"Nothing of the run in {os.fspath(run_dir)} was saved yet; starting it afresh.")
        resume = False
    runs.check_run_folder(run_dir, resume=resume, overwrite=overwrite)
    if not resume:
        return TrainingState(settings=settings)
    state = load_state(run_dir)
    changes = _check_same_settings(run_dir, state.settings, settings)
    files.remove_temporary_files(run_dir)
    files.remove_temporary_files(checkpoint_dir(run_dir))
    _remove_unused_files(checkpoint_dir(run_dir), state)  # e.g. weights written before a kill
    if not state.finished:
        stage = STAGE_NAMES.get(state.stage, "before the first epoch")
        note = f"; now with {', '.join(changes)}" if changes else ""
        where = f"after epoch {state.epoch} ({stage})"
        print(f"Resuming the run in {os.fspath(run_dir)} {where}{note}.")
    return dataclasses.replace(state, settings=settings)


def _has_checkpoint(run_dir) -> bool:
    """False for a run folder that a kill left before it held anything: absent, or only
    temporary files. Anything else goes to `check_run_folder` and `load_state` as it is."""
    path = os.fspath(run_dir)
    if not os.path.isdir(path):
        return False
    return any(not name.startswith(runs.TEMPORARY_PREFIX) for name in os.listdir(path))


def begin_run(run_dir, state: TrainingState, *, splits: dict, data_dir, overwrite=False) -> None:
    """Creates a new run's folder and checkpoint, or checks a resumed run's split.

    Args:
        run_dir: The run folder.
        state: From `start_run`.
        splits: Split name mapped to an object with `.paths` and `.labels`
            (`tlkeras.data.ImageFolder.splits`); see `record_split`.
        data_dir: The data folder.
        overwrite: Delete the run already in `run_dir` first (`tlkeras.runs.clear_run_folder`).
    """
    if overwrite:
        runs.clear_run_folder(run_dir)
    folder = checkpoint_dir(run_dir)
    if not os.path.isfile(os.path.join(folder, STATE_FILE)):
        # The checkpoint folder appears at once, with its state.json: a kill here leaves
        # no half-made run folder behind (only a .tmp-* folder, removed on the next start).
        files.remove_temporary_files(run_dir)
        staging = os.path.join(os.fspath(run_dir), f"{files.TEMPORARY_PREFIX}{uuid.uuid4().hex}")
        os.makedirs(staging)
        document = {"format": STATE_FORMAT, **dataclasses.asdict(state)}
        files.atomic_write(os.path.join(staging, STATE_FILE), _json(document))
        shutil.rmtree(folder, ignore_errors=True)  # An empty or stateless leftover.
        os.replace(staging, folder)
    record_split(run_dir, splits, data_dir=data_dir)


def record_split(run_dir, splits: dict, *, data_dir) -> None:
    """Saves the image files of every split, or checks them against the saved ones.

    A resumed run must train and validate on the same files; a data folder that changed
    since the run started is an error rather than a silently different split.

    Args:
        run_dir: The run folder.
        splits: Split name mapped to an object with `.paths` and `.labels`
            (`tlkeras.data.ImageFolder.splits`).
        data_dir: The data folder; paths are saved relative to it.

    Raises:
        ValueError: If a split differs from the saved one.
    """

    def relative(path):
        return os.path.relpath(path, data_dir).replace(os.sep, "/")

    record = {
        name: {
            "paths": [relative(path) for path in split.paths],
            "labels": [int(label) for label in split.labels],
        }
        for name, split in splits.items()
    }
    path = os.path.join(checkpoint_dir(run_dir), SPLIT_FILE)
    if not os.path.isfile(path):
        files.atomic_write(path, _json(record))
        return
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    for name in sorted(set(saved) | set(record)):
        before, now = saved.get(name, {"paths": []}), record.get(name, {"paths": []})
        if before == now:
            continue
        added = sorted(set(now["paths"]) - set(before["paths"]))
        missing = sorted(set(before["paths"]) - set(now["paths"]))
        example = (added or missing or ["(same files, other labels)"])[0]
        raise DataError(
            f"The {name!r} split of {os.fspath(data_dir)!r} changed since the run started "
            f"({len(added)} file(s) added, {len(missing)} missing, e.g. {example!r}), so the run "
            "cannot be resumed on the same split. Restore the data folder, or start a new run "
            f"with --overwrite. Received: data_dir={os.fspath(data_dir)!r}"
        )


def load_split(run_dir) -> dict | None:
    """The split `record_split` saved, or None when the run recorded none.

    Args:
        run_dir: The run folder (a `.keras` file or any other path gives None).

    Returns:
        Split name mapped to `{"paths": [...], "labels": [...]}`; the paths are relative to
        the data folder, with `/` separators.

    Example:
        >>> load_split("runs/digits")["val"]["paths"][:1]
        ['0/img_003.png']
    """
    path = os.path.join(checkpoint_dir(run_dir), SPLIT_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def seed_generator_states(model: keras.Model) -> list:
    """The state of every Keras seed generator in `model` (its dropout layers).

    `model.save_weights` leaves these out, but they decide the dropout masks of the next
    batches, so a resumed run needs them to match an uninterrupted one.
    """
    return [np.asarray(v).tolist() for v in _seed_generator_variables(model)]


def _seed_generator_variables(model):
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def set_seed_generator_states(model: keras.Model, states: list) -> None:
    """Restores the states returned by `seed_generator_states`."""
    variables = _seed_generator_variables(model)
    if len(variables) != len(states):
        raise DataError(
            f"The checkpoint holds {len(states)} seed-generator states but the model has "
            f"{len(variables)}, so it is not the model this run trained. Resume with the run's "
            f"settings. Received: num_states={len(states)}"
        )
    for variable, value in zip(variables, states, strict=True):
        variable.assign(np.asarray(value, dtype=variable.dtype))


def restore_model(model: keras.Model, run_dir, state: TrainingState) -> None:
    """Loads the last checkpoint's weights and seed-generator states into a new model.

    Call it on the freshly built model. The optimizer's state in the file is skipped here:
    it is restored when the stage starts training (`EpochCheckpoint.on_train_begin`), once
    the stage has compiled the model with its own optimizer.
    """
    if state.weights is None:
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model.load_weights(os.path.join(checkpoint_dir(run_dir), state.weights))
    set_seed_generator_states(model, state.seed_states)


def _save_weight_list(path, weights) -> None:
    files.write_atomically(path, lambda tmp: np.savez(tmp, *weights), suffix=".npz")


def _load_weight_list(path) -> list:
    with np.load(path, allow_pickle=False) as arrays:
        return [arrays[f"arr_{i}"] for i in range(len(arrays.files))]


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Keras' `EarlyStopping` whose counters and best weights survive a resume.

    Example:
        >>> early_stopping = ResumableEarlyStopping(patience=3, restore_best_weights=True)
        >>> EpochCheckpoint("runs/x", state=state, stage=1, early_stopping=early_stopping)
    """

    def get_state(self) -> dict:
        """The counters, JSON-serialisable (the best weights are saved separately)."""
        best = None if self.best is None else float(self.best)
        return {
            "wait": self.wait,
            "best": best,
            "best_epoch": self.best_epoch,
            "stopped_epoch": self.stopped_epoch,
        }

    def set_state(self, state: dict, best_weights=None) -> None:
        """Restores what `get_state` returned, after `on_train_begin` has reset it."""
        self.wait, self.best = state["wait"], state["best"]
        self.best_epoch, self.stopped_epoch = state["best_epoch"], state["stopped_epoch"]
        self.best_weights = best_weights


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, most often); the previous one is intact."""


def _write_failed(error: OSError, path, run_dir, state: TrainingState) -> OSError:
    last = f"the checkpoint of epoch {state.epoch}" if state.weights else "the run's settings"
    fix = "Free some disk space" if error.errno in (errno.ENOSPC, errno.EDQUOT) else "Fix that"
    return CheckpointWriteError(
        error.errno,
        f"Could not write {path!r} ({error.strerror or error}); {last} is intact. {fix}, then "
        f"resume the run with --resume {run_dir}",
    )


class EpochCheckpoint(keras.callbacks.Callback):
    """What Keras' `BackupAndRestore` does, made exact and kill-safe: checkpoints every epoch.

    At the end of each epoch it saves the model's and optimizer's variables
    (`model.save_weights`), the seed-generator states, the stage's history and early
    stopping's state, then commits `state.json`. At the start of training, if the state is
    in the middle of this stage, it loads all of that back (the optimizer is built first,
    and the learning rate given to `compile` is kept, so a resumed run may use a lower one).
    When the stage ends it records that, with the weights early stopping restored.

    What Keras' `BackupAndRestore` lacks, and this adds: it writes into its files in place
    (a kill while writing leaves a truncated backup), keeps neither the seed generators'
    state (dropout masks) nor the history nor early stopping's counters, and knows nothing of
    two stages, so a resumed run would not match an uninterrupted one. It is a plain
    `keras.callbacks.Callback` using only public hooks and public model methods
    (`save_weights`, `load_weights`), so no Keras upgrade can change it from underneath.

    It works with whatever model `fit` is called on: list it after `ResumableEarlyStopping`
    and `BestModelCheckpoint`, and before `guards.StopOnInterrupt` (`stage_callbacks` does).

    Args:
        run_dir: The run folder.
        state: The run's `TrainingState`; the callback keeps it up to date.
        stage: 1 (training the head) or 2 (fine-tuning).
        early_stopping: The stage's `ResumableEarlyStopping`, if any.

    Example:
        >>> checkpoint = EpochCheckpoint("runs/digits", state=state, stage=1)
        >>> model.fit(train_ds, initial_epoch=state.epoch, epochs=5, callbacks=[checkpoint])
    """

    def __init__(self, run_dir, *, state: TrainingState, stage: int, early_stopping=None):
        super().__init__()
        self.run_dir = os.fspath(run_dir)
        self.folder = checkpoint_dir(run_dir)
        self.state = state
        self.stage = stage
        self.early_stopping = early_stopping

    def on_train_begin(self, logs=None):
        while len(self.state.histories) < self.stage:
            self.state.histories.append({})
        if self.state.stage != self.stage or self.state.stage_done or not self.state.weights:
            return
        optimizer = self.model.optimizer
        learning_rate = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        if not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        # Keras only warns when the optimizer does not fit: refuse that, and nothing else.
        load_weights_strictly(self.model, os.path.join(self.folder, self.state.weights))
        optimizer.learning_rate.assign(learning_rate)
        set_seed_generator_states(self.model, self.state.seed_states)
        saved = self.state.early_stopping
        if self.early_stopping is not None and saved is not None:
            best = saved.get("weights")
            best_weights = _load_weight_list(os.path.join(self.folder, best)) if best else None
            self.early_stopping.set_state(saved, best_weights)

    def on_epoch_end(self, epoch, logs=None):
        histories = copy.deepcopy(self.state.histories)
        for key, value in (logs or {}).items():
            histories[self.stage - 1].setdefault(key, []).append(float(value))
        self._save(
            f"epoch_{epoch + 1:04d}.weights.h5",
            epoch=epoch + 1,
            histories=histories,
            stop_requested=bool(self.model.stop_training),
        )

    def on_train_end(self, logs=None):
        restored = self.early_stopping is not None and self.early_stopping.best_weights is not None
        weights = f"stage{self.stage}_end.weights.h5" if restored else None
        self._save(weights, epoch=self.state.epoch, stage_done=True)

    def _save(
        self, weights, *, epoch, histories=None, stage_done=False, stop_requested=False
    ) -> None:
        """Writes the weights file (unless `None`: keep the last one), then `state.json`.

        The state in memory changes only once `state.json` is committed.
        """
        path = os.path.join(self.folder, weights or STATE_FILE)
        try:
            if weights is not None:
                files.write_atomically(path, self.model.save_weights, suffix=".weights.h5")
            early_stopping = self._save_early_stopping()
            new = dataclasses.replace(
                self.state,
                stage=self.stage,
                epoch=epoch,
                stage_done=stage_done,
                stop_requested=stop_requested,
                histories=histories or self.state.histories,
                weights=weights or self.state.weights,
                seed_states=seed_generator_states(self.model),
                early_stopping=early_stopping,
            )
            save_state(self.run_dir, new)
        except OSError as error:
            raise _write_failed(error, path, self.run_dir, self.state) from error
        vars(self.state).update(vars(new))
        kill_point("checkpoint_saved")
        _remove_unused_files(self.folder, self.state)

    def _save_early_stopping(self) -> dict | None:
        if self.early_stopping is None:
            return None
        state = self.early_stopping.get_state()
        if self.early_stopping.best_weights is not None:
            state["weights"] = f"best_{self.early_stopping.best_epoch + 1:04d}.npz"
            path = os.path.join(self.folder, state["weights"])
            if not os.path.exists(path):
                _save_weight_list(path, self.early_stopping.best_weights)
        return state


def _remove_unused_files(folder, state: TrainingState) -> None:
    """Deletes the weights files `state.json` no longer names (after it was committed)."""
    keep = {state.weights, (state.early_stopping or {}).get("weights")}
    for name in os.listdir(folder):
        if name.endswith((".weights.h5", ".npz")) and name not in keep:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(folder, name))


def finish_run(run_dir, state: TrainingState) -> None:
    """Marks the run as finished and deletes its checkpoint weights (the run folder has all).

    `state.json` and `split.json` stay as the record of what was trained on.
    """
    state.finished = True
    state.weights, state.early_stopping = None, None
    save_state(run_dir, state)
    _remove_unused_files(checkpoint_dir(run_dir), state)


class BestModelCheckpoint(keras.callbacks.Callback):
    """What Keras' `ModelCheckpoint(save_best_only=True)` on `val_loss` does, atomic, with labels.

    What Keras' `ModelCheckpoint` lacks, and this adds: it writes straight into the file, so
    a kill while saving leaves it truncated; this writes through `tlkeras.saving.save_model`
    (a temporary file, then a rename) and embeds the class names, so `best.keras` loads with
    `tlkeras.load_run` like the final model. Without validation data it saves nothing.

    It decides as `ModelCheckpoint` does (Keras 3.15): at the end of each epoch, the model is
    saved when `val_loss` is lower than the best so far, or when there is no best yet. It is
    a plain `keras.callbacks.Callback` (only the public `on_epoch_end` hook), so no Keras
    upgrade can change it from underneath.

    Args:
        path: The `.keras` file to write.
        class_names: Label `i` means `class_names[i]`.
        best: The lowest validation loss seen before (when resuming). Defaults to infinity.
        metadata: Extra JSON metadata to embed (backbone, image size).

    Attributes:
        best: The lowest `val_loss` saved so far, or `None` before the first.

    Example:
        >>> best = BestModelCheckpoint("runs/x/best.keras", class_names=["cat", "dog"])
    """

    monitor = "val_loss"

    def __init__(self, path, *, class_names, best=math.inf, metadata=None):
        super().__init__()
        self.filepath = os.fspath(path)
        self.best = float(best) if math.isfinite(best) else None
        self.class_names = list(class_names)
        self.metadata = metadata

    def on_epoch_end(self, epoch, logs=None):
        current = (logs or {}).get(self.monitor)
        if current is None:
            return
        current = float(current)
        if self.best is not None and not current < self.best:
            return  # Not an improvement (a NaN never is, once there is a best).
        self.best = current
        saving.save_model(
            self.filepath, self.model, class_names=self.class_names, metadata=self.metadata
        )
        kill_point("best_saved")


def stage_callbacks(
    run_dir, state: TrainingState, *, stage: int, class_names, metadata=None, patience=0
) -> list:
    """The callbacks that make one stage of a run resumable, in the order they must run.

    `StopOnNaN`; early stopping (`patience` > 0); `best.keras` (written before the epoch's
    checkpoint commits, so the state never names an epoch whose best model is not on disk);
    the epoch checkpoint; TensorBoard's event files in `logs/stage1` and `logs/stage2`,
    last. Put `guards.StopOnInterrupt` after them.

    Unlike every other file of a run folder, TensorBoard's event files are not written
    atomically: TensorBoard appends to them as training goes. They are a log that resuming
    never reads, so a kill costs at most the last epochs' points in them, never the run.

    Example:
        >>> callbacks = stage_callbacks("runs/x", state, stage=1, class_names=["a", "b"])
    """
    early_stopping = None
    if patience:
        early_stopping = ResumableEarlyStopping(
            monitor="val_loss", patience=patience, restore_best_weights=True
        )
    best = BestModelCheckpoint(
        os.path.join(os.fspath(run_dir), runs.CHECKPOINT_FILE),
        class_names=class_names,
        best=best_validation_loss(state),
        metadata=metadata,
    )
    checkpoint = EpochCheckpoint(run_dir, state=state, stage=stage, early_stopping=early_stopping)
    logs = os.path.join(os.fspath(run_dir), runs.LOGS_DIR, f"stage{stage}")
    tensorboard = keras.callbacks.TensorBoard(logs, write_graph=False, profile_batch=0)
    return [
        StopOnNaN(),
        *([early_stopping] if early_stopping else []),
        best,
        checkpoint,
        tensorboard,
    ]


def best_validation_loss(state: TrainingState) -> float:
    """The lowest finite `val_loss` in the state's histories, or infinity."""
    values = [v for h in state.histories for v in h.get("val_loss", []) if math.isfinite(v)]
    return min(values, default=math.inf)
