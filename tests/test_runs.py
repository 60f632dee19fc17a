"""Saving and loading safely: class names, safe mode, atomic writes."""

import json
import os

import keras
import numpy as np
import pytest

import tlkeras as tl
from tlkeras.runs import atomic_write


@pytest.fixture
def saved_run(tmp_path):
    model = tl.build_model("vgg16", num_classes=3, image_size=32, weights=None, dense_units=8)
    history = {"epoch": [1], "stage": [1], "loss": [1.0]}
    return tl.runs.save_run(
        tmp_path / "run", model=model, class_names=["a", "b", "c"], config={}, history=history
    )


def test_round_trip_gives_same_outputs(saved_run):
    x = np.random.default_rng(0).uniform(0, 255, size=(2, 32, 32, 3)).astype("float32")
    loaded = tl.load_run(saved_run.path)
    np.testing.assert_allclose(loaded.model(x), saved_run.model(x), rtol=1e-6)
    assert loaded.class_names == ["a", "b", "c"]


def test_missing_class_names_file(saved_run):
    os.remove(os.path.join(saved_run.path, "class_names.json"))
    with pytest.raises(ValueError, match="has no class_names.json"):
        tl.load_run(saved_run.path)


def test_edited_class_names_file_is_refused(saved_run):
    with open(os.path.join(saved_run.path, "class_names.json"), "w") as f:
        json.dump(["c", "b", "a"], f)
    with pytest.raises(ValueError, match="does not match the class names saved inside the model"):
        tl.load_run(saved_run.path)


def test_class_count_mismatch_is_refused(saved_run):
    with open(os.path.join(saved_run.path, "class_names.json"), "w") as f:
        json.dump(["a", "b"], f)
    with pytest.raises(ValueError, match="predicts 3 classes but 2 class names"):
        tl.load_run(saved_run.path)


def test_lambda_layer_model_is_refused(tmp_path):
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)
    path = str(tmp_path / "lambda.keras")
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ValueError, match="safe_mode"):
        tl.runs.load_model(path)


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "f.json"
    atomic_write(path, "one")
    atomic_write(path, "two")
    assert path.read_text() == "two"
    assert os.listdir(tmp_path) == ["f.json"]
