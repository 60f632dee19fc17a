"""BatchNorm in fine-tuning, as Keras 3 really runs it.

`fit` calls the model with `training=True`, and Keras 3 passes that down into the nested
backbone, overriding any `training=False` given when the backbone was called. BatchNorm stays
in inference mode only because its layers are not trainable. These tests check that on every
backbone in the registry, and show what `training=True` does reach: EfficientNet's
stochastic-depth Dropout layers.
"""

import keras
import numpy as np
import pytest

from tlkeras.backbones import BACKBONES, layer_blocks
from tlkeras.model import build_model, compile_model, get_base, unfreeze_top_blocks

BatchNorm, LayerNorm = keras.layers.BatchNormalization, keras.layers.LayerNormalization
#: Which backbones have BatchNorm layers in their top block (VGG16 has none at all; ConvNeXt
#: normalises with LayerNormalization, which has no moving statistics).
TOP_BLOCK_HAS_BATCHNORM = {
    "vgg16": False,
    "resnet50": True,
    "inceptionv3": True,
    "mobilenet_v2": True,
    "efficientnet_b0": True,
    "xception": True,
    "densenet121": True,
    "convnext_tiny": False,
    "efficientnet_lite0": True,
}


def images_and_labels(size: int, count: int = 4):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(count, size, size, 3)).astype("float32")
    return images, np.arange(count) % 2


def snapshot(layers) -> dict[str, list[np.ndarray]]:
    return {layer.name: [w.numpy().copy() for w in layer.weights] for layer in layers}


def assert_unchanged(before: dict, layers) -> None:
    for layer in layers:
        for old, new in zip(before[layer.name], layer.weights, strict=True):
            np.testing.assert_array_equal(old, new.numpy(), err_msg=f"{layer.name}/{new.name}")


def test_the_table_covers_the_registry():
    assert set(TOP_BLOCK_HAS_BATCHNORM) == set(BACKBONES)


#: The two that take over 15 s each on 2 shared CPU cores; `-m "not slow"` leaves them out.
HEAVY = ("convnext_tiny", "densenet121")


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in sorted(BACKBONES)],
)
def test_batchnorm_statistics_do_not_move_when_fine_tuning(name):
    """One epoch of `fit` with the top block unfrozen, at the smallest size, from random weights.

    Random weights give BatchNorm moving means of 0 and variances of 1, so a layer that ran
    in training mode would move them towards the batch statistics at once.
    """
    keras.utils.clear_session()
    size = BACKBONES[name].min_size
    model = build_model(name, num_classes=2, image_size=size, weights=None, dense_units=0)
    base = get_base(model)
    (top,) = unfreeze_top_blocks(model, 1)
    blocks = layer_blocks(name, base)
    in_top = [layer for layer, block in zip(base.layers, blocks, strict=True) if block == top]
    batchnorms = [layer for layer in base.layers if isinstance(layer, BatchNorm)]
    top_batchnorms = [layer for layer in in_top if isinstance(layer, BatchNorm)]
    assert bool(top_batchnorms) == TOP_BLOCK_HAS_BATCHNORM[name]
    assert not any(layer.trainable for layer in batchnorms), "BatchNorm never unfreezes"
    trained = [layer for layer in in_top if layer.trainable_weights]
    assert trained, f"{top} has layers that train"
    # LayerNorm is not BatchNorm: it trains in the unfrozen block, and stays put below it.
    frozen_layernorms = [
        layer
        for layer, block in zip(base.layers, blocks, strict=True)
        if isinstance(layer, LayerNorm) and block != top
    ]
    if name == "convnext_tiny":
        assert not batchnorms and frozen_layernorms
    before, trained_before = snapshot(batchnorms + frozen_layernorms), snapshot(trained)

    compile_model(model, learning_rate=1e-2)
    # Keras' own train step (`self(x, training=True)`), untraced: seconds instead of a minute
    # per backbone. test_model.py fine-tunes ResNet50 through the traced step too.
    model.run_eagerly = True
    images, labels = images_and_labels(size)
    model.fit(images, labels, epochs=1, batch_size=2, shuffle=False, verbose=0)

    assert_unchanged(before, batchnorms + frozen_layernorms)
    moved = [
        layer.name
        for layer in trained
        if any(
            not np.array_equal(old, new.numpy())
            for old, new in zip(trained_before[layer.name], layer.weights, strict=True)
        )
    ]
    assert moved, f"the unfrozen {top} trained (so the statistics could have moved)"


def test_a_call_time_training_false_does_not_keep_batchnorm_in_inference_mode():
    """Called like `backbone(x, training=False)`, a trainable BatchNorm still trains in `fit`."""
    keras.utils.clear_session()
    image = keras.Input((8, 8, 3))
    normalised = BatchNorm(name="bn")(keras.layers.Conv2D(4, 3, name="conv")(image))
    backbone = keras.Model(image, normalised, name="backbone")
    inputs = keras.Input((8, 8, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(backbone(inputs, training=False))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(pooled))
    batchnorm = backbone.get_layer("bn")
    images, labels = images_and_labels(8)
    for trainable, moves in ((True, True), (False, False)):  # False: what tlkeras relies on.
        batchnorm.trainable = trainable
        compile_model(model, learning_rate=1e-3)
        before = batchnorm.moving_mean.numpy().copy()
        model.fit(images, labels, epochs=1, batch_size=2, verbose=0)
        moved = not np.allclose(before, batchnorm.moving_mean.numpy(), rtol=0, atol=1e-6)
        assert moved == moves, f"trainable={trainable}"


def test_efficientnet_trains_with_its_stochastic_depth_dropout_active():
    """`fit` runs the model as `model(x, training=True)`; with every BatchNorm frozen, the
    only difference from inference is EfficientNet's stochastic-depth Dropout layers."""
    keras.utils.clear_session()
    model = build_model(
        "efficientnet_b0", num_classes=2, image_size=32, weights=None, dense_units=0, dropout=0.0
    )
    unfreeze_top_blocks(model, len(BACKBONES["efficientnet_b0"].blocks))  # All, BN excepted.
    base = get_base(model)
    assert not any(layer.trainable for layer in base.layers if isinstance(layer, BatchNorm))
    drops = [layer for layer in base.layers if isinstance(layer, keras.layers.Dropout)]
    assert len(drops) == 9 and all(layer.name.endswith("_drop") for layer in drops)
    images, _ = images_and_labels(32, count=8)
    # Look at the backbone's output (the head's softmax would squash the difference).
    features = keras.Model(model.input, model.get_layer("pool").output)
    inference = features(images, training=False).numpy()
    assert not np.allclose(features(images, training=True).numpy(), inference, rtol=1e-3)

    clone = keras.models.clone_model(features)
    clone.set_weights(features.get_weights())
    for layer in get_base(clone).layers:
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0
    np.testing.assert_allclose(clone(images, training=True).numpy(), inference, rtol=1e-5)
    np.testing.assert_allclose(clone(images, training=False).numpy(), inference, rtol=1e-5)
