"""Checkpoints, exact resuming, and the Ctrl-C and NaN guards, on a tiny Dense model."""

import errno
import os
import signal

import keras
import numpy as np
import pytest
import tensorflow as tf

import tlkeras as tl
from tlkeras import checkpoints
from tlkeras.data import Split, epoch_dataset
from tlkeras.guards import (
    StopOnInterrupt,
    StopOnNaN,
    TrainingDivergedError,
    TrainingInterrupted,
)

NUM_IMAGES, BATCH_SIZE = 12, 4  # 3 batches per epoch


def tiny_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    x = keras.layers.Dropout(0.5)(inputs)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    return model


def arrays():
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, size=(NUM_IMAGES, 4)).astype("uint8"), np.arange(12) % 3


class Killed(Exception):
    pass


class KillAfterEpoch(keras.callbacks.Callback):
    """Stands for a SIGKILL right after an epoch's checkpoint: nothing after it runs."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise Killed


def fit(model, run_dir, state, *, epochs, initial_epoch=0, extra_callbacks=(), kill_after=None):
    images, labels = arrays()
    dataset, steps = epoch_dataset(
        images, labels, batch_size=BATCH_SIZE, seed=0, initial_epoch=initial_epoch, epochs=epochs
    )
    early_stopping = checkpoints.ResumableEarlyStopping(
        monitor="loss", patience=10, restore_best_weights=True
    )
    checkpoint = checkpoints.EpochCheckpoint(
        run_dir, state=state, stage=1, early_stopping=early_stopping
    )
    model.fit(
        dataset,
        steps_per_epoch=steps,
        initial_epoch=initial_epoch,
        epochs=epochs,
        callbacks=[early_stopping, checkpoint, *extra_callbacks, KillAfterEpoch(kill_after)],
        shuffle=False,
        verbose=0,
    )


def new_run(tmp_path, name, settings=None):
    state = checkpoints.start_run(tmp_path / name, settings=settings or {"seed": 0})
    checkpoints.begin_run(tmp_path / name, state, splits={}, data_dir=".")
    return state


def test_epoch_order_depends_only_on_seed_and_epoch():
    images, labels = arrays()
    whole, steps = epoch_dataset(images, labels, batch_size=5, seed=3, initial_epoch=0, epochs=3)
    late, _ = epoch_dataset(images, labels, batch_size=5, seed=3, initial_epoch=2, epochs=3)
    batches = [y.numpy().tolist() for _, y in whole]
    assert steps == 3 and len(batches) == 9
    assert [y.numpy().tolist() for _, y in late] == batches[6:]
    assert batches[:3] != batches[3:6]  # Each epoch is reshuffled.


def test_resumed_fit_matches_an_uninterrupted_one(tmp_path):
    reference = tiny_model()
    fit(reference, tmp_path / "a", new_run(tmp_path, "a"), initial_epoch=0, epochs=4)

    with pytest.raises(Killed):
        fit(
            tiny_model(),
            tmp_path / "b",
            new_run(tmp_path, "b"),
            initial_epoch=0,
            epochs=4,
            kill_after=2,
        )
    state = checkpoints.start_run(tmp_path / "b", settings={"seed": 0}, resume=True)
    assert state.epoch == 2 and state.stage == 1 and state.weights == "epoch_0002.weights.h5"
    resumed = tiny_model()
    checkpoints.restore_model(resumed, tmp_path / "b", state)
    fit(resumed, tmp_path / "b", state, initial_epoch=state.epoch, epochs=4)

    for before, after in zip(reference.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-7)
    saved_a = checkpoints.load_state(tmp_path / "a")
    saved_b = checkpoints.load_state(tmp_path / "b")
    np.testing.assert_allclose(saved_b.histories[0]["loss"], saved_a.histories[0]["loss"])
    assert saved_b.stage_done and saved_b.early_stopping == saved_a.early_stopping
    assert sorted(os.listdir(tmp_path / "b" / "checkpoint")) == sorted(
        os.listdir(tmp_path / "a" / "checkpoint")
    )


def test_dropout_seed_state_is_part_of_the_checkpoint(tmp_path):
    """Without the seed-generator states the resumed dropout masks, hence weights, differ."""
    reference = tiny_model()
    fit(reference, tmp_path / "a", new_run(tmp_path, "a"), initial_epoch=0, epochs=3)
    with pytest.raises(Killed):
        fit(
            tiny_model(),
            tmp_path / "b",
            new_run(tmp_path, "b"),
            initial_epoch=0,
            epochs=3,
            kill_after=2,
        )
    state = checkpoints.load_state(tmp_path / "b")
    assert state.seed_states and state.seed_states[0][1] > 0  # The dropout counter moved.
    state.seed_states = checkpoints.seed_generator_states(tiny_model())  # Forget them.
    resumed = tiny_model()
    checkpoints.restore_model(resumed, tmp_path / "b", state)
    fit(resumed, tmp_path / "b", state, initial_epoch=2, epochs=3)
    assert not np.allclose(resumed.get_weights()[0], reference.get_weights()[0])


def test_resume_refuses_changed_settings_but_allows_a_lower_learning_rate(tmp_path, capsys):
    settings = {"seed": 0, "epochs": 3, "learning_rate": 1e-3}
    new_run(tmp_path, "run", settings)
    with pytest.raises(ValueError, match=r"epochs=5 \(the run has 3\).*Received: epochs=5"):
        checkpoints.start_run(tmp_path / "run", settings={**settings, "epochs": 5}, resume=True)
    state = checkpoints.start_run(
        tmp_path / "run", settings={**settings, "learning_rate": 1e-4}, resume=True
    )
    assert state.settings["learning_rate"] == 1e-4
    assert "now with learning_rate=0.0001 (was 0.001)" in capsys.readouterr().out


def test_resume_takes_another_cache_memory_and_one_the_run_never_saved(tmp_path, capsys):
    settings = {"seed": 0, "cache_memory": "3%"}
    new_run(tmp_path, "run", {"seed": 0})  # Saved by a tlkeras without --cache-memory.
    state = checkpoints.start_run(tmp_path / "run", settings=settings, resume=True)
    assert state.settings == settings
    new_run(tmp_path, "other", settings)
    changed = {**settings, "cache_memory": "0"}
    assert checkpoints.start_run(tmp_path / "other", settings=changed, resume=True).settings == (
        changed
    )
    assert "now with cache_memory='0' (was '3%')" in capsys.readouterr().out


def test_resume_refuses_a_changed_split(tmp_path):
    state = checkpoints.start_run(tmp_path / "run", settings={})
    before = {"train": Split(["/d/cat/1.png", "/d/dog/2.png"], np.array([0, 1]))}
    checkpoints.begin_run(tmp_path / "run", state, splits=before, data_dir="/d")
    checkpoints.record_split(tmp_path / "run", before, data_dir="/d")  # Same split: fine.
    after = {"train": Split(["/d/cat/1.png", "/d/dog/3.png"], np.array([0, 1]))}
    with pytest.raises(ValueError, match=r"1 file\(s\) added, 1 missing, e.g. 'dog/3.png'"):
        checkpoints.record_split(tmp_path / "run", after, data_dir="/d")


def test_nan_loss_names_the_epoch_and_batch_and_keeps_the_last_checkpoint(tmp_path):
    images, labels = arrays()
    model = tiny_model()
    state = new_run(tmp_path, "run")
    dataset, steps = epoch_dataset(images, labels, batch_size=BATCH_SIZE, epochs=3)

    def poison_fifth_batch(index, batch):
        images, labels = batch
        return images + tf.where(index == 4, np.nan, 0.0), labels

    poisoned = dataset.enumerate().map(poison_fifth_batch)
    checkpoint = checkpoints.EpochCheckpoint(tmp_path / "run", state=state, stage=1)
    with pytest.raises(TrainingDivergedError, match="epoch 2, batch 2 of 3") as error:
        model.fit(
            poisoned,
            steps_per_epoch=steps,
            epochs=3,
            callbacks=[StopOnNaN(), checkpoint],
            shuffle=False,
            verbose=0,
        )
    assert "Lower the learning rate (it is 0.05" in str(error.value)
    assert (error.value.epoch, error.value.batch) == (1, 1)
    saved = checkpoints.load_state(tmp_path / "run")
    assert saved.epoch == 1 and saved.weights == "epoch_0001.weights.h5"


@pytest.mark.parametrize(
    ("signal_number", "exit_status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)]
)
def test_a_signal_stops_training_after_the_current_batch(tmp_path, signal_number, exit_status):
    batches_done = []

    class SignalDuringBatch5(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if len(batches_done) == 4:  # Epoch 2, batch 2 is about to run.
                os.kill(os.getpid(), signal_number)

        def on_train_batch_end(self, batch, logs=None):
            batches_done.append(batch)

    model = tiny_model()
    state = new_run(tmp_path, "run")
    previous = signal.getsignal(signal_number)
    stops = pytest.raises(TrainingInterrupted, match="epoch 2, batch 2 of 3")
    with stops as error, StopOnInterrupt() as interrupt:
        callbacks = [SignalDuringBatch5(), interrupt]
        fit(model, tmp_path / "run", state, epochs=3, extra_callbacks=callbacks)
    assert batches_done == [0, 1, 2, 0, 1]  # The batch in progress finished; no more ran.
    assert error.value.exit_status == exit_status and isinstance(error.value, KeyboardInterrupt)
    assert signal.getsignal(signal_number) is previous
    assert checkpoints.load_state(tmp_path / "run").epoch == 1


def test_a_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    model = tiny_model()
    save_weights, calls = model.save_weights, []

    def full_disk_at_epoch_2(path):
        calls.append(path)
        if len(calls) < 2:
            return save_weights(path)
        with open(path, "wb") as f:
            f.write(b"half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(model, "save_weights", full_disk_at_epoch_2)
    with pytest.raises(OSError, match="checkpoint of epoch 1 is intact. Free some disk space"):
        fit(model, tmp_path / "run", new_run(tmp_path, "run"), initial_epoch=0, epochs=3)
    folder = tmp_path / "run" / "checkpoint"
    assert sorted(os.listdir(folder)) == [
        "best_0001.npz",
        "epoch_0001.weights.h5",
        "split.json",
        "state.json",
    ]
    state = checkpoints.load_state(tmp_path / "run")
    assert state.epoch == 1
    checkpoints.restore_model(tiny_model(), tmp_path / "run", state)


def test_loading_an_unfinished_run_says_how_to_resume(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    saved_run = tl.runs.save_run(
        tmp_path / "run", model=model, class_names=["a", "b"], config={}, history={}
    )
    state = checkpoints.start_run(saved_run.path, settings={}, overwrite=True)
    checkpoints.begin_run(saved_run.path, state, splits={}, data_dir=".")
    with pytest.raises(ValueError, match="has not finished.*--resume"):
        tl.load_run(saved_run.path)
