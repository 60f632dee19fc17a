"""Grad-CAM: the heatmap follows the region that decides the class, on every backbone."""

import keras
import numpy as np
import pytest

import tlkeras as tl
from tlkeras.backbones import BACKBONES
from tlkeras.explain import find_gradcam_layer, gradcam, overlay_heatmap
from tlkeras.layers import preprocessing_layer
from tlkeras.model import get_base

SIZE, SQUARE = 48, 16
RED, BLUE = (220, 40, 40), (40, 40, 220)


def square_image(rng, colour, row, column):
    """Grey noise with one coloured square: the square's colour alone decides the class."""
    image = rng.normal(128, 25, size=(SIZE, SIZE, 3))
    image[row : row + SQUARE, column : column + SQUARE] = colour
    return np.clip(image, 0, 255).astype("uint8")


def tiny_classifier():
    """A classifier shaped like build_model's (preprocess, nested backbone, GAP head), small
    enough to train in seconds; its 12x12 feature map can localise a 16-pixel square."""
    image = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(image)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    base = keras.Model(image, x, name="tiny_cnn")
    inputs = keras.Input((SIZE, SIZE, 3))
    x = preprocessing_layer("tf")(inputs)
    x = base(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="tlkeras_tiny")


def test_heatmap_peaks_on_the_region_that_decides_the_class():
    rng = np.random.default_rng(0)
    labels = np.arange(64) % 2
    images = np.stack(
        [
            square_image(rng, (RED, BLUE)[label], *rng.integers(0, SIZE - SQUARE, size=2))
            for label in labels
        ]
    )
    model = tiny_classifier()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(images.astype("float32"), labels, batch_size=16, epochs=5, verbose=0)

    corners = [(0, 0), (0, SIZE - SQUARE), (SIZE - SQUARE, 0), (SIZE - SQUARE, SIZE - SQUARE)]
    for label, colour in enumerate((RED, BLUE)):
        for row, column in corners:
            image = square_image(np.random.default_rng(1), colour, row, column)
            heatmaps, classes, probabilities = gradcam(model, image[None])
            assert classes.tolist() == [label] == probabilities.argmax(axis=1).tolist()
            heatmap = heatmaps[0]
            assert heatmap.shape == (SIZE, SIZE)
            inside = np.zeros((SIZE, SIZE), bool)
            inside[row : row + SQUARE, column : column + SQUARE] = True
            peak = np.unravel_index(np.argmax(heatmap), heatmap.shape)
            assert inside[peak], f"the peak {peak} is outside the square at {(row, column)}"
            assert heatmap[inside].mean() > 3 * heatmap[~inside].mean()


def min_size(name):
    return max(BACKBONES[name].min_size, 32)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_gradcam_works_on_every_backbone(name):
    size = min_size(name)
    model = tl.build_model(name, num_classes=3, image_size=size, weights=None, dense_units=8)
    base = get_base(model)
    layer = find_gradcam_layer(base)
    # The last layer of the backbone, or the feature map before a final pooling layer.
    if isinstance(base.layers[-1], keras.layers.MaxPooling2D):
        assert base.layers.index(base.get_layer(layer)) == len(base.layers) - 2
    else:
        assert layer == base.layers[-1].name
    images = np.random.default_rng(0).integers(0, 256, size=(2, size, size, 3)).astype("uint8")
    heatmaps, classes, probabilities = gradcam(model, images, class_index=2)
    assert heatmaps.shape == (2, size, size)
    assert np.isfinite(heatmaps).all() and heatmaps.min() >= 0 and heatmaps.max() <= 1
    assert classes.tolist() == [2, 2]
    # The rebuilt graph is the classifier itself, preprocessing included.
    expected = model(images.astype("float32"), training=False)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)


def test_gradcam_layer_choice_and_wrong_inputs():
    model = tl.build_model("resnet50", num_classes=2, image_size=32, weights=None, dense_units=8)
    images = np.zeros((1, 32, 32, 3), "uint8")
    heatmaps, _, _ = gradcam(model, images, layer_name="conv4_block6_out")  # a block output
    assert heatmaps.shape == (1, 32, 32)
    with pytest.raises(ValueError, match="cannot cut the resnet50 backbone at 'conv5_block3_1_"):
        gradcam(model, images, layer_name="conv5_block3_1_conv")  # inside a residual block
    with pytest.raises(ValueError, match="'block9' is not a layer of the resnet50 backbone"):
        gradcam(model, images, layer_name="block9")
    with pytest.raises(ValueError, match=r"Expected images shaped \(N, 32, 32, 3\)"):
        gradcam(model, np.zeros((1, 40, 40, 3)))
    with pytest.raises(ValueError, match="class_index must be an int from 0 to 1"):
        gradcam(model, images, class_index=2)


def test_overlay_keeps_the_image_where_alpha_is_zero():
    image = np.full((4, 4, 3), 100, "uint8")
    heatmap = np.linspace(0, 1, 16).reshape(4, 4)
    np.testing.assert_array_equal(overlay_heatmap(image, heatmap, alpha=0.0), image)
    hot = overlay_heatmap(image, heatmap, alpha=1.0)
    assert hot.dtype == np.uint8 and hot[3, 3, 0] > hot[3, 3, 2]  # "jet" is red where hottest
    with pytest.raises(ValueError, match="alpha must be between 0 and 1"):
        overlay_heatmap(image, heatmap, alpha=2)
