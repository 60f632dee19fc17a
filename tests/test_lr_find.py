"""The learning-rate finder: the sweep, the suggestion rules, and that the model is unchanged."""

import importlib
import json

import numpy as np
import pytest

import tlkeras as tl
from tlkeras.cli import main
from tlkeras.lr_find import check_curve, smooth, suggest_learning_rate
from tlkeras.model import get_base

# The module, not the function `tlkeras.lr_find` that shadows it as a package attribute.
lr_find_module = importlib.import_module("tlkeras.lr_find")


@pytest.fixture
def colour_data(image_folder):
    return tl.load_data(image_folder, image_size=32, batch_size=8, validation_split=0.25)


def test_sweep_leaves_the_model_as_it_was(colour_data, tmp_path):
    model = tl.build_model("vgg16", num_classes=2, image_size=32, weights=None, dense_units=0)
    tl.compile_model(model, learning_rate=1e-3)
    optimizer = model.optimizer
    before = model.get_weights()
    # Shuffled labels cannot be fitted, so at high learning rates the loss explodes.
    images, labels = colour_data.arrays["train"]
    labels = np.random.default_rng(0).permutation(labels)
    shuffled = tl.data.make_dataset(images, labels, batch_size=8, shuffle=True)
    result = tl.lr_find(model, shuffled, min_lr=1e-4, max_lr=1e4, num_steps=40)
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    assert model.optimizer is optimizer  # its compiled optimizer and state are untouched
    assert get_base(model).trainable_weights == []

    rates = np.asarray(result.learning_rates)
    assert rates[0] == pytest.approx(1e-4)
    np.testing.assert_allclose(rates[1:] / rates[:-1], 10 ** (8 / 39))  # exponential steps
    assert len(result.losses) < 40  # stopped early
    assert result.smoothed_losses[-1] > 4 * min(result.smoothed_losses)
    assert rates[0] <= result.suggestion <= rates[-1]
    assert result.rule == "valley" and "Suggested learning rate for stage 1" in result.summary()

    paths = result.save(tmp_path)
    with open(paths["json"]) as f:
        saved = json.load(f)
    assert saved["suggestion"] == result.suggestion and len(saved["losses"]) == len(rates)
    with open(paths["png"], "rb") as f:
        assert f.read(4) == b"\x89PNG"


def test_stage_two_unfreezes_the_top_block_only_during_the_sweep(colour_data, monkeypatch):
    model = tl.build_model("vgg16", num_classes=2, image_size=32, weights=None, dense_units=8)
    before = model.get_weights()
    swept = []
    sweep = lr_find_module._sweep

    def recording_sweep(model, *args):
        swept.extend(sorted({v.path.split("/")[0] for v in model.trainable_variables}))
        return sweep(model, *args)

    monkeypatch.setattr(lr_find_module, "_sweep", recording_sweep)
    result = tl.lr_find(model, colour_data.dataset("train"), stage=2, unfreeze=1, num_steps=12)
    assert result.stage == 2 and len(result.losses) >= 3
    block5 = ["block5_conv1", "block5_conv2", "block5_conv3"]
    assert swept == sorted([*block5, "dense", "predictions"])
    assert get_base(model).trainable_weights == []
    assert all(not layer.trainable for layer in get_base(model).layers)
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


def test_rules_on_a_curve_with_a_known_shape():
    rates = np.logspace(-6, 0, 101)
    x = np.log10(rates)
    # Slowly rising, then a drop centred on 1e-3, a minimum near 1e-2, then divergence.
    losses = 2 + 0.02 * x - 1 / (1 + np.exp(-(x + 3) * 6)) + np.exp((x + 1.2) * 3) * 0.2
    assert suggest_learning_rate(rates, losses, rule="steepest") == pytest.approx(1e-3, rel=0.2)
    lowest = np.argmin(losses)
    assert suggest_learning_rate(rates, losses, rule="minimum") == pytest.approx(
        rates[lowest] / 10
    )
    assert check_curve(losses) is None
    assert "the loss never fell by 2%" in check_curve(np.full(30, 2.0))
    assert "diverged after 5 batches" in check_curve(losses[:5])
    top_of_the_fall = np.argmax(losses[:lowest])
    valley = suggest_learning_rate(rates, losses, rule="valley")
    assert rates[top_of_the_fall] < valley < rates[lowest]  # on the fall, short of the minimum
    with pytest.raises(ValueError, match=r"Unknown rule 'best'. Expected one of \('valley'"):
        suggest_learning_rate(rates, losses, rule="best")
    with pytest.raises(ValueError, match="only 2 finite losses"):
        suggest_learning_rate(rates[:3], [1.0, 2.0, np.nan])


def test_smoothing_is_bias_corrected():
    assert smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])


def test_bad_arguments(colour_data):
    model = tl.build_model("vgg16", num_classes=2, image_size=32, weights=None, dense_units=8)
    data = colour_data.dataset("train")
    with pytest.raises(ValueError, match="stage must be 1 .* or 2 .* Received: stage=3"):
        tl.lr_find(model, data, stage=3)
    with pytest.raises(ValueError, match="Expected 0 < min_lr < max_lr"):
        tl.lr_find(model, data, min_lr=1.0, max_lr=0.1)
    with pytest.raises(ValueError, match="num_steps must be an int of at least 10"):
        tl.lr_find(model, data, num_steps=5)


def test_command_saves_the_plot_and_prints_the_suggestion(image_folder, tmp_path, capsys):
    argv = [image_folder, "--weights", "none", "--image-size", "32", "--batch-size", "8"]
    argv += ["--dense-units", "8", "--num-steps", "12", "--out", str(tmp_path)]
    assert main(["lr-find", *argv]) == 0
    out = capsys.readouterr().out
    assert "Suggested learning rate for stage 1" in out
    assert (tmp_path / "lr_find.png").exists() and (tmp_path / "lr_find.json").exists()
