"""Whole runs that are repeated, interrupted, killed or diverge: determinism and resuming.

A tiny VGG16 (random weights, 32 px, 12 training images, 3 batches an epoch, 2 + 2 epochs)
keeps these tests to about a minute on 2 CPU cores.
"""

import dataclasses
import errno
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

import tlkeras as tl
from tlkeras import checkpoints
from tlkeras.cli import main
from tlkeras.guards import TrainingDivergedError

SETTINGS = {
    "weights": "none",
    "image_size": 32,
    "batch_size": 4,
    "epochs": 2,
    "fine_tune_epochs": 2,
    "dense_units": 8,
    "patience": 0,
    "validation_split": 0.25,
    "deterministic": True,
}
CLI_FLAGS = [
    f"--{key.replace('_', '-')}" if value is True else f"--{key.replace('_', '-')}={value}"
    for key, value in SETTINGS.items()
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from conftest import write_class_folders

    return write_class_folders(tmp_path_factory.mktemp("resume") / "data", {"cat": 8, "dog": 8})


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
    """An uninterrupted run; the module turns op determinism off again when it is done."""
    out = tmp_path_factory.mktemp("reference") / "run"
    yield tl.train(tl.TrainConfig(data_dir, out=str(out), **SETTINGS))
    from tensorflow.python.framework import config as tf_config

    tf_config.disable_op_determinism()  # No public switch back; keep other tests as they were.


def assert_same_run(run, reference):
    assert run.history["epoch"] == reference.history["epoch"] == [1, 2, 3, 4]
    assert run.history["stage"] == [1, 1, 2, 2]
    for key in ("loss", "val_loss", "accuracy"):
        np.testing.assert_allclose(run.history[key], reference.history[key], rtol=1e-5)
    for after, before in zip(run.model.get_weights(), reference.model.get_weights(), strict=True):
        np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)


def assert_nothing_truncated(run_dir):
    """Every file a kill left in the run folder is whole; `.tmp-*` files are never read."""
    for folder, _, names in os.walk(run_dir):
        for name in names:
            path = os.path.join(folder, name)
            if name.startswith(".tmp-"):
                continue
            if name.endswith(".json"):
                with open(path) as f:
                    json.load(f)
            elif name.endswith(".keras"):
                with zipfile.ZipFile(path) as archive:
                    assert archive.testzip() is None, path
            elif name.endswith(".weights.h5"):
                with h5py.File(path) as f:
                    f.visititems(lambda _, item: item[()] if isinstance(item, h5py.Dataset) else 0)
            elif name.endswith(".npz"):
                with np.load(path) as arrays:
                    [arrays[key] for key in arrays.files]
    state = checkpoints.load_state(run_dir)
    if state.weights:
        assert os.path.isfile(os.path.join(run_dir, "checkpoint", state.weights))
    return state


def wait_for_epoch(run_dir, epoch, *, timeout=300, process=None):
    path = os.path.join(run_dir, "checkpoint", "state.json")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the run ended early: {process.communicate()}")
        try:
            with open(path) as f:
                if json.load(f)["epoch"] >= epoch:
                    return
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"epoch {epoch} did not finish within {timeout} s")


def test_same_seed_gives_identical_weights_and_history(reference, data_dir, tmp_path):
    from tensorflow.python.framework import config as tf_config

    again = tl.train(tl.TrainConfig(data_dir, out=str(tmp_path / "again"), **SETTINGS))
    assert tf_config.is_op_determinism_enabled()  # Turned on by deterministic=True.
    assert again.history == reference.history
    for a, b in zip(again.model.get_weights(), reference.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_interrupted_then_killed_run_resumes_to_the_uninterrupted_result(
    reference, data_dir, tmp_path, capsys
):
    out = str(tmp_path / "run")

    # 1. Ctrl-C once epoch 1 is checkpointed: the CLI exits 130 and says how to resume.
    def press_ctrl_c():
        wait_for_epoch(out, 1)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=press_ctrl_c, daemon=True).start()
    assert main(["train", data_dir, *CLI_FLAGS, "--out", out]) == 130
    err = capsys.readouterr().err
    # Stage 1 epochs on cached features take milliseconds, so the signal may land in epoch 2
    # or just after it commits; either way the message names the checkpoint that is on disk.
    kept = assert_nothing_truncated(out).epoch
    assert kept in (1, 2)
    assert f"The checkpoint of epoch {kept} is kept in {out}" in err
    assert f"run the same command with --resume {out}" in err
    assert err.splitlines()[-1].startswith("tlkeras: interrupted. Training was interrupted ")

    # 2. Resume in a new process and SIGKILL it at a random moment of stage 2.
    command = [sys.executable, "-m", "tlkeras", "train", data_dir, *CLI_FLAGS, "--resume", out]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_epoch(out, 3, process=process)
        time.sleep(random.Random(9).uniform(0, 1.5))
    finally:
        process.kill()
        process.communicate(timeout=60)
    state = assert_nothing_truncated(out)
    assert state.stage == 2 and state.epoch >= 3

    # 3. Resume to the end: the same weights and history as the run that never stopped.
    resumed = tl.train(tl.TrainConfig(data_dir, out=out, resume=True, **SETTINGS))
    assert_same_run(resumed, reference)
    assert_same_run(tl.load_run(out), reference)
    assert sorted(os.listdir(os.path.join(out, "checkpoint"))) == ["split.json", "state.json"]


class Killed(Exception):
    """Stands for a kill right after an epoch's checkpoint: nothing after it runs."""


class KillAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise Killed  # User callbacks run after the checkpoint has committed.


def test_resuming_with_augmentation_is_exact(data_dir, tmp_path):
    """With augmentation training runs end to end; epoch 2 must see the same augmentations."""
    from tensorflow.python.framework import config as tf_config

    settings = {**SETTINGS, "fine_tune_epochs": 0, "augment": "strong", "dropout": 0.0}
    try:
        reference = tl.train(tl.TrainConfig(data_dir, out=str(tmp_path / "ref"), **settings))
        config = tl.TrainConfig(data_dir, out=str(tmp_path / "run"), **settings)
        with pytest.raises(Killed):
            tl.train(config, callbacks=[KillAfterFirstEpoch()])
        assert checkpoints.load_state(config.out).epoch == 1
        resumed = tl.train(dataclasses.replace(config, resume=True))
        changed = tl.train(
            dataclasses.replace(config, out=str(tmp_path / "other"), augment="light")
        )
    finally:
        tf_config.disable_op_determinism()  # No public switch back; keep other tests as they were.
    assert resumed.history["epoch"] == reference.history["epoch"] == [1, 2]
    for key in ("loss", "val_loss", "accuracy"):
        np.testing.assert_allclose(resumed.history[key], reference.history[key], rtol=1e-5)
    for after, before in zip(
        resumed.model.get_weights(), reference.model.get_weights(), strict=True
    ):
        np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)
    assert not np.allclose(changed.history["loss"], reference.history["loss"], rtol=1e-5)


def test_ctrl_c_while_caching_stops_after_the_batch_and_keeps_no_cache(
    data_dir, tmp_path, monkeypatch, capsys
):
    """The signal comes during the 2nd of 3 training batches: the caching pass stops there."""
    from tlkeras import features

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    forward_function, batches = features._forward_function, []

    def forward_and_press_ctrl_c(model):
        forward = forward_function(model)

        def run(batch):
            batches.append(len(batch))
            if len(batches) == 2:
                os.kill(os.getpid(), signal.SIGINT)
            return forward(batch)

        return run

    monkeypatch.setattr(features, "_forward_function", forward_and_press_ctrl_c)
    out = str(tmp_path / "run")
    flags = [flag for flag in CLI_FLAGS if flag != "--deterministic"]
    assert main(["train", data_dir, *flags, "--cache=disk", "--out", out]) == 130
    err = capsys.readouterr().err
    assert batches == [4, 4], "not one batch after the signal"
    assert (
        "tlkeras: interrupted. Training was interrupted while caching the features of train "
        "images, after 8 of 12 (the partial cache is deleted). No epoch had finished"
    ) in err
    assert not [name for name in os.listdir(tmp_path) if name.startswith("tlkeras-")]
    assert checkpoints.load_state(out).epoch == 0


def test_nan_loss_keeps_the_last_checkpoint_and_resumes_with_a_lower_rate(
    data_dir, tmp_path, monkeypatch
):
    epoch_dataset = tl.data.Data.epoch_dataset

    def epoch_dataset_with_a_nan_in_epoch_2(self, *args, **kwargs):
        dataset, steps = epoch_dataset(self, *args, **kwargs)

        def poison_batch_5(index, batch):  # A NaN sample weight makes the loss NaN.
            images, labels = batch
            weights = tf.fill(tf.shape(labels), tf.where(index == 4, np.nan, 1.0))
            return images, labels, weights

        return dataset.enumerate().map(poison_batch_5), steps

    monkeypatch.setattr(tl.data.Data, "epoch_dataset", epoch_dataset_with_a_nan_in_epoch_2)
    settings = {**SETTINGS, "epochs": 2, "fine_tune_epochs": 0, "learning_rate": 0.01}
    settings["cache"] = "off"  # The images go through the poisoned epoch_dataset.
    config = tl.TrainConfig(data_dir, out=str(tmp_path / "run"), **settings)
    with pytest.raises(TrainingDivergedError) as error:
        tl.train(config)
    message = str(error.value)
    assert "loss became nan at epoch 2, batch 2 of 3" in message
    assert "Lower the learning rate (it is 0.01; try a tenth of it)" in message
    assert "The checkpoint of epoch 1 is kept" in message and "lower --lr and run" in message
    assert checkpoints.load_state(config.out).epoch == 1
    assert tl.load_run(os.path.join(config.out, "best.keras")).class_names == ["cat", "dog"]

    monkeypatch.undo()
    run = tl.train(dataclasses.replace(config, resume=True, learning_rate=0.001))
    assert run.history["epoch"] == [1, 2] and np.isfinite(run.history["loss"]).all()


def test_a_full_disk_says_which_checkpoint_is_kept(data_dir, tmp_path, monkeypatch):
    save_model, calls = tl.saving.save_model, []

    def full_disk(*args, **kwargs):  # Epoch 1's best.keras is written; epoch 2's is not.
        calls.append(args)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        save_model(*args, **kwargs)

    monkeypatch.setattr(tl.saving, "save_model", full_disk)  # best.keras of epoch 2
    settings = {**SETTINGS, "epochs": 2, "fine_tune_epochs": 0}
    with pytest.raises(OSError, match="No space left on device") as error:
        tl.train(tl.TrainConfig(data_dir, out=str(tmp_path / "run"), **settings))
    assert "The checkpoint of epoch 1 is kept" in str(error.value)
    assert f"free some disk space, then run the same command with --resume {tmp_path}" in str(
        error.value
    )


def test_existing_run_folder_is_one_line_exit_2(capsys, data_dir, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.keras").write_text("")
    code = main(["train", data_dir, *CLI_FLAGS, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "already exists. Pass --resume" in err and "--overwrite" in err
    code = main(["train", data_dir, "--resume", str(tmp_path / "a"), "--out", str(tmp_path / "b")])
    assert code == 2 and "--out names another folder" in capsys.readouterr().err


def test_killed_right_after_an_epoch_commits_still_has_that_epochs_best_model(data_dir, tmp_path):
    """The state never names an epoch whose best.keras is not on disk (best is written first)."""
    out = str(tmp_path / "run")
    flags = [*CLI_FLAGS, "--epochs=1", "--fine-tune-epochs=0", "--out", out]
    environment = {**os.environ, "TLKERAS_KILL_AT": "checkpoint_saved:1"}
    killed = subprocess.run(
        [sys.executable, "-m", "tlkeras", "train", data_dir, *flags],
        env=environment,
        capture_output=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert checkpoints.load_state(out).epoch == 1, "killed after epoch 1's state.json"

    settings = {**SETTINGS, "epochs": 1, "fine_tune_epochs": 0}
    run = tl.train(tl.TrainConfig(data_dir, out=out, resume=True, **settings))
    best, _ = tl.saving.load_model(os.path.join(out, "best.keras"))
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(
        best.predict(images, verbose=0), run.model.predict(images, verbose=0)
    )


# One kill point per phase of a run (see tlkeras.guards.kill_point), in the order they come.
KILL_POINTS = [
    "loaded",  # The folder is scanned and decoded; nothing is saved yet.
    "features_cached",  # Stage 1's features are cached; no epoch has run.
    "best_saved:1",  # best.keras of epoch 1 is written, its checkpoint is not.
    "stage2_begin",  # The switch: stage 1 is over, stage 2 has not run.
    "checkpoint_saved:4",  # The last epoch is committed; the final save has not started.
    "run_file_saved",  # The final save: model.keras is written, config.json is not.
    "finished",  # Everything is saved; the process has not exited.
]


@pytest.mark.slow
@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_kill_in_any_phase_resumes_to_the_uninterrupted_result(
    data_dir, reference, tmp_path, point
):
    out = str(tmp_path / "run")
    command = [sys.executable, "-m", "tlkeras", "train", data_dir, *CLI_FLAGS]
    env = {**os.environ, "TLKERAS_KILL_AT": point}
    killed = subprocess.run([*command, "--out", out], env=env, capture_output=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]

    resumed = subprocess.run([*command, "--resume", out], capture_output=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    if point == "finished":
        assert b"has already finished" in resumed.stdout
    run = tl.load_run(out)
    assert run.history["stage"] == reference.history["stage"] == [1, 1, 2, 2]
    for key, values in reference.history.items():
        np.testing.assert_allclose(run.history[key], values, rtol=0, atol=1e-5)
    for got, want in zip(run.model.get_weights(), reference.model.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
