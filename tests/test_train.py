"""Both training stages, the run folder, reloading, predicting and evaluating."""

import json
import os
import warnings
import zipfile

import keras
import numpy as np
import pytest

import tlkeras as tl
from tlkeras.model import get_base
from tlkeras.train import merge_histories


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from conftest import write_class_folders

    root = tmp_path_factory.mktemp("train")
    data_dir = write_class_folders(root / "data", {"cat": 12, "dog": 12})
    config = tl.TrainConfig(
        data_dir,
        out=str(root / "run"),
        backbone="vgg16",
        weights="none",
        image_size=32,
        batch_size=8,
        epochs=2,
        fine_tune_epochs=1,
        unfreeze=1,
        dense_units=16,
        patience=0,
    )
    return tl.train(config), data_dir


def test_run_folder_holds_everything_predict_needs(trained_run):
    run, _ = trained_run
    files = set(os.listdir(run.path))
    assert {
        "model.keras",
        "class_names.json",
        "config.json",
        "history.json",
        "history.csv",
    } <= files
    with open(os.path.join(run.path, "class_names.json")) as f:
        assert json.load(f) == ["cat", "dog"]
    with open(os.path.join(run.path, "config.json")) as f:
        config = json.load(f)
    assert config["backbone"] == "vgg16" and config["image_size"] == [32, 32]
    assert config["class_names"] == ["cat", "dog"]
    with zipfile.ZipFile(os.path.join(run.path, "model.keras")) as archive:
        assert json.loads(archive.read("tlkeras.json"))["class_names"] == ["cat", "dog"]


def test_history_covers_both_stages_with_continuing_epochs(trained_run):
    run, _ = trained_run
    assert run.history["epoch"] == [1, 2, 3]
    assert run.history["stage"] == [1, 1, 2]
    assert len(run.history["val_accuracy"]) == 3


def test_after_fine_tuning_only_the_top_block_and_head_are_trainable(trained_run):
    run, _ = trained_run
    base = get_base(run.model)
    trainable = {w.path.split("/")[0] for w in base.trainable_weights}
    assert trainable == {"block5_conv1", "block5_conv2", "block5_conv3"}


def test_reloaded_run_predicts_identically_and_loads_in_safe_mode(trained_run):
    run, data_dir = trained_run
    loaded = tl.load_run(run.path)
    assert loaded.class_names == ["cat", "dog"]
    paths = sorted(
        os.path.join(data_dir, c, f)
        for c in ("cat", "dog")
        for f in os.listdir(os.path.join(data_dir, c))
    )[:6]
    before = tl.predict(run, paths, top_k=2)
    after = tl.predict(loaded, paths, top_k=2)
    for a, b in zip(before, after, strict=True):
        assert [name for name, _ in a["top"]] == [name for name, _ in b["top"]]
        np.testing.assert_allclose([p for _, p in a["top"]], [p for _, p in b["top"]], rtol=1e-5)


PLAIN_KERAS_LOAD = """
import sys
import keras, numpy as np
model = keras.saving.load_model(sys.argv[1], safe_mode=True)
np.save(sys.argv[3], model.predict(np.load(sys.argv[2]), verbose=0))
loaded = sorted(name for name in sys.modules if name.split(".")[0] == "tlkeras")
assert not loaded, loaded
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_a_saved_model_opens_with_keras_alone_in_a_fresh_process(trained_run, tmp_path, backend):
    """No tlkeras import, safe_mode=True, and the predictions `tlkeras predict` makes."""
    import subprocess
    import sys

    from tlkeras.images import load_images

    pytest.importorskip(backend)
    run, data_dir = trained_run
    paths = [
        os.path.join(data_dir, "cat", "img_000.png"),
        os.path.join(data_dir, "dog", "img_001.png"),
    ]
    np.save(tmp_path / "images.npy", load_images(paths, run.image_size).astype("float32"))
    environment = {**os.environ, "KERAS_BACKEND": backend}
    done = subprocess.run(
        [sys.executable, "-c", PLAIN_KERAS_LOAD, os.path.join(run.path, "model.keras")]
        + [str(tmp_path / "images.npy"), str(tmp_path / "out.npy")],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    probabilities = np.load(tmp_path / "out.npy")
    for row, predicted in zip(probabilities, tl.predict(run, paths, top_k=2), strict=True):
        label, probability = predicted["top"][0]
        assert run.class_names[int(row.argmax())] == label
        np.testing.assert_allclose(row.max(), probability, rtol=1e-4)


def test_a_run_saved_with_the_old_preprocess_layer_still_loads(tmp_path):
    from tlkeras.layers import Preprocess
    from tlkeras.saving import load_model, save_model

    inputs = keras.Input((8, 8, 3))
    x = Preprocess("caffe", name="preprocess", dtype="float32")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    save_model(tmp_path / "old.keras", model, class_names=["a", "b"])
    loaded, metadata = load_model(tmp_path / "old.keras")
    assert metadata["class_names"] == ["a", "b"]
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(pixels, verbose=0), model.predict(pixels, verbose=0))


def test_bare_keras_file_carries_its_class_names(trained_run):
    run = tl.load_run(os.path.join(trained_run[0].path, "model.keras"))
    assert run.class_names == ["cat", "dog"]


def test_evaluate_on_the_training_folder(trained_run):
    run, data_dir = trained_run
    report = tl.evaluate(run, data_dir, split="all")
    assert report["split"] == "all" and report["num_images"] == 24
    assert report["y_true"] == [0] * 12 + [1] * 12
    assert np.sum(report["confusion_matrix"]) == 24
    assert set(report["per_class"]) == {"cat", "dog"}


def test_merge_histories():
    merged = merge_histories({"loss": [3, 2]}, {"loss": [1]})
    assert merged == {"epoch": [1, 2, 3], "stage": [1, 1, 2], "loss": [3.0, 2.0, 1.0]}


def test_stage_one_learns_separable_classes(image_folder):
    data = tl.load_data(image_folder, image_size=32, batch_size=8, validation_split=0.25)
    model = tl.build_model("vgg16", num_classes=2, image_size=32, weights=None, dense_units=16)
    history = tl.train_head(model, data.dataset("train"), data.dataset("val"), epochs=6)
    assert history["val_accuracy"][-1] == 1.0
    assert history["loss"][-1] < history["loss"][0]
    assert get_base(model).trainable_weights == []


def test_a_random_frozen_backbone_with_stage_one_only_is_warned_about():
    from tlkeras.train import warn_if_meaningless

    with pytest.warns(UserWarning, match=r"near-chance accuracy.*--unfreeze 5"):
        warn_if_meaningless(tl.TrainConfig("data", weights="none", fine_tune_epochs=0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_meaningless(tl.TrainConfig("data", weights="none", fine_tune_epochs=2))
        warn_if_meaningless(tl.TrainConfig("data", weights="imagenet"))


def test_tensorboard_reads_both_stages_back(trained_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _ = trained_run
    curves = {}
    for stage in ("stage1", "stage2"):
        for side in ("train", "validation"):
            events = EventAccumulator(os.path.join(run.path, "logs", stage, side)).Reload()
            tags = events.Tags()["tensors"] + events.Tags()["scalars"]
            assert "epoch_loss" in tags, (stage, side, tags)
            curves[stage, side] = [event.step for event in events.Tensors("epoch_loss")]
    assert curves["stage1", "train"] == [0, 1] and curves["stage2", "train"] == [2]
    assert curves["stage2", "validation"] == [2]


def test_user_callbacks_run_in_both_stages_on_the_whole_model(tmp_path):
    from conftest import write_class_folders

    class Record(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs, self.input_shapes = [], set()

        def on_epoch_end(self, epoch, logs=None):
            self.epochs.append(epoch)
            self.input_shapes.add(self.model.input_shape)

    data_dir = write_class_folders(tmp_path / "data", {"cat": 6, "dog": 6})
    first, second = Record(), Record()
    config = tl.TrainConfig(
        data_dir,
        out=str(tmp_path / "run"),
        weights="none",
        image_size=32,
        batch_size=4,
        epochs=2,
        fine_tune_epochs=1,
        dense_units=8,
        patience=0,
        callbacks=[first],
    )
    tl.train(config, callbacks=[second])
    for record in (first, second):
        assert record.epochs == [0, 1, 2]
        assert record.input_shapes == {(None, 32, 32, 3)}, "the end-to-end model, not its top"
    with open(os.path.join(tmp_path, "run", "config.json")) as f:
        assert "callbacks" not in json.load(f)
