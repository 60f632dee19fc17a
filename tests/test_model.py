"""Building, freezing and unfreezing: trainable flags, BatchNorm, weights loading."""

import os

import keras
import numpy as np
import pytest

from tlkeras.backbones import BACKBONES, layer_blocks
from tlkeras.model import (
    WeightsUnavailableError,
    build_model,
    compile_model,
    freeze_backbone,
    get_base,
    load_backbone,
    unfreeze_top_blocks,
)

NAMES = sorted(BACKBONES)


def small_model(name, num_classes=3, **kwargs):
    size = max(BACKBONES[name].min_size, 32)
    return build_model(name, num_classes=num_classes, image_size=size, weights=None, **kwargs)


def trainable_layers(base):
    return {layer.name for layer in base.layers if layer.trainable_weights}


def test_head_structure_and_frozen_base():
    model = small_model("vgg16", dense_units=64)
    assert model.input_shape == (None, 32, 32, 3)
    assert model.output_shape == (None, 3)
    assert [layer.name for layer in model.layers[-5:]] == [
        "pool",
        "dropout",
        "dense",
        "dropout_2",
        "predictions",
    ]
    assert model.get_layer("predictions").dtype_policy.compute_dtype == "float32"
    base = get_base(model)
    assert base.trainable_weights == []
    head = {w.path for w in model.trainable_weights}
    assert head == {"dense/kernel", "dense/bias", "predictions/kernel", "predictions/bias"}


def test_no_hidden_dense_when_dense_units_is_zero():
    model = small_model("vgg16", dense_units=0)
    assert "dense" not in [layer.name for layer in model.layers]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("num_blocks", [1, 2])
def test_unfreeze_top_blocks_trains_exactly_those_blocks_without_batchnorm(name, num_blocks):
    model = small_model(name, dense_units=8)
    base = get_base(model)
    blocks = layer_blocks(name, base)
    top = BACKBONES[name].block_names[-num_blocks:]
    assert unfreeze_top_blocks(model, num_blocks) == list(top)
    expected = {
        layer.name
        for layer, block in zip(base.layers, blocks, strict=True)
        if block in top
        and layer.weights
        and not isinstance(layer, keras.layers.BatchNormalization)
    }
    assert expected, "the top blocks have weights to train"
    assert trainable_layers(base) == expected
    batchnorms = [
        layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert not any(layer.trainable for layer in batchnorms)
    freeze_backbone(model)
    assert base.trainable_weights == []


def test_unfreezing_zero_blocks_and_all_blocks():
    model = small_model("resnet50", dense_units=8)
    assert unfreeze_top_blocks(model, 0) == []
    assert get_base(model).trainable_weights == []
    assert unfreeze_top_blocks(model, 5) == ["stem", "conv2", "conv3", "conv4", "conv5"]
    assert "conv1_conv" in trainable_layers(get_base(model))


@pytest.mark.parametrize("bad", [-1, 6, 1.5])
def test_unfreeze_out_of_range_lists_the_blocks(bad):
    model = small_model("vgg16", dense_units=8)
    with pytest.raises(ValueError, match=r"5 blocks, block1, block2.*Received: num_blocks="):
        unfreeze_top_blocks(model, bad)


def test_fine_tuning_never_changes_batchnorm_statistics_but_trains_the_top():
    model = small_model("resnet50", num_classes=2, dense_units=8)
    base = get_base(model)
    unfreeze_top_blocks(model, 1)
    compile_model(model, learning_rate=1e-2)
    bn = base.get_layer("conv5_block3_3_bn")
    conv = base.get_layer("conv5_block3_3_conv")
    stats_before = [w.numpy().copy() for w in bn.weights]
    conv_before = conv.kernel.numpy().copy()
    frozen_before = base.get_layer("conv4_block6_3_conv").kernel.numpy().copy()
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, size=(16, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 2, size=16)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    for before, after in zip(stats_before, bn.weights, strict=True):
        np.testing.assert_array_equal(before, after.numpy())
    assert not np.allclose(conv_before, conv.kernel.numpy()), "the unfrozen block trained"
    np.testing.assert_array_equal(
        frozen_before, base.get_layer("conv4_block6_3_conv").kernel.numpy()
    )


def test_backbone_runs_in_inference_mode_even_when_training():
    """Dropout in the head changes outputs in training mode; the backbone's BatchNorm must not."""
    model = small_model("resnet50", dense_units=8, dropout=0.0)
    unfreeze_top_blocks(model, 5)
    x = np.random.default_rng(1).uniform(0, 255, size=(4, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(model(x, training=True), model(x, training=False), rtol=1e-5)


def test_weights_file_round_trip(tmp_path):
    base = load_backbone("vgg16", image_size=32, weights=None)
    path = str(tmp_path / "vgg16.weights.h5")
    base.save_weights(path)
    loaded = load_backbone("vgg16", image_size=32, weights=path)
    for a, b in zip(base.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_weights_file_for_another_backbone_is_refused(tmp_path):
    path = str(tmp_path / "vgg16.weights.h5")
    load_backbone("vgg16", image_size=32, weights=None).save_weights(path)
    with pytest.raises(ValueError, match=r"Could not load .* into the resnet50 backbone"):
        load_backbone("resnet50", image_size=32, weights=path)


def test_missing_weights_file():
    with pytest.raises(ValueError, match=r"does not exist.*Received: weights='nope.h5'"):
        load_backbone("vgg16", image_size=32, weights="nope.h5")


def test_offline_imagenet_download_fails_in_one_sentence():
    backbone = BACKBONES["mobilenet_v2"]
    weights_path = backbone.weights_path(96)
    if os.path.exists(weights_path):
        pytest.skip("the ImageNet weights are cached on this machine")
    with pytest.raises(WeightsUnavailableError) as info:
        load_backbone("mobilenet_v2", image_size=96, weights="imagenet")
    message = str(info.value)
    assert os.path.basename(weights_path) in message
    assert "1.0_96_no_top.h5" in message
    assert "--weights none" in message and "--weights PATH" in message
    assert "\n" not in message


@pytest.mark.parametrize("num_classes", [1, 0, "3"])
def test_num_classes_must_be_at_least_two(num_classes):
    with pytest.raises(ValueError, match="at least 2 classes"):
        build_model("vgg16", num_classes=num_classes, image_size=32, weights=None)


def test_unfrozen_batchnorm_drifts_which_is_why_it_is_frozen_by_default():
    """The teaching switch really reproduces the mistake: statistics move during training."""
    model = small_model("resnet50", num_classes=2, dense_units=8)
    unfreeze_top_blocks(model, 1, freeze_batchnorm=False)
    compile_model(model, learning_rate=1e-3)
    bn = get_base(model).get_layer("conv5_block3_3_bn")
    assert bn.trainable
    before = bn.moving_mean.numpy().copy()
    x = np.random.default_rng(0).uniform(0, 255, size=(8, 32, 32, 3)).astype("float32")
    model.fit(x, np.array([0, 1] * 4), epochs=1, batch_size=4, verbose=0)
    assert not np.allclose(before, bn.moving_mean.numpy())
