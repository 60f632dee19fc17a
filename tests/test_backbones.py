"""The registry: block tables, block boundaries, preprocessing, sizes."""

import functools

import keras
import numpy as np
import pytest

from tlkeras.backbones import BACKBONES, get_backbone, layer_blocks
from tlkeras.layers import Preprocess, preprocessing_layer
from tlkeras.model import resolve_image_size

NAMES = sorted(BACKBONES)


@functools.cache
def built(name):
    """Each backbone built once per test session, at its minimum size, without weights."""
    b = BACKBONES[name]
    size = max(b.min_size, 32)
    return b.constructor(include_top=False, weights=None, input_shape=(size, size, 3))


def test_required_block_tables():
    assert get_backbone("vgg16").block_names == tuple(f"block{i}" for i in range(1, 6))
    assert get_backbone("resnet50").block_names == ("stem", "conv2", "conv3", "conv4", "conv5")
    assert get_backbone("inceptionv3").block_names == ("stem",) + tuple(
        f"mixed{i}" for i in range(11)
    )


@pytest.mark.parametrize("name", NAMES)
def test_every_layer_is_in_one_contiguous_nonempty_block(name):
    blocks = layer_blocks(name, built(name))
    names = BACKBONES[name].block_names
    # Contiguous and in registry order: the block sequence only ever steps to the next block.
    order = [names.index(block) for block in blocks]
    assert order == sorted(order)
    assert sorted(set(order)) == list(range(len(names))), "every block holds layers"


@pytest.mark.parametrize("name", NAMES)
def test_every_block_boundary_is_a_cut_of_the_graph(name):
    """Everything above a boundary depends on the layers below only through one tensor.

    Keras refuses to build a Model from a tensor that does not cut the graph, so this fails
    if a block marker splits a residual or Inception branch.
    """
    base = built(name)
    blocks = layer_blocks(name, base)
    for block in BACKBONES[name].block_names[1:]:
        first = base.layers[blocks.index(block)]
        top = keras.Model(first.input, base.output)
        assert top.output_shape == base.output_shape


def test_a_non_boundary_is_not_a_cut():
    base = built("resnet50")
    inside_residual_block = base.get_layer("conv5_block1_2_conv")
    with pytest.raises(ValueError):
        keras.Model(inside_residual_block.input, base.output)


@pytest.mark.parametrize("name", NAMES)
def test_in_model_preprocessing_equals_keras_preprocess_input(name):
    b = BACKBONES[name]
    pixels = np.random.default_rng(0).uniform(0, 255, size=(2, 8, 8, 3)).astype("float32")
    expected = b.preprocess_input(pixels.copy())
    actual = keras.ops.convert_to_numpy(preprocessing_layer(b.preprocessing)(pixels))
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-4)
    # The layer of older run folders computes the same.
    old = keras.ops.convert_to_numpy(Preprocess(b.preprocessing)(pixels))
    np.testing.assert_allclose(old, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_preprocessing_is_made_of_keras_own_frozen_layers(name):
    layer = preprocessing_layer(BACKBONES[name].preprocessing)
    assert type(layer).__module__.startswith("keras.")
    assert not layer.trainable and layer.dtype_policy.compute_dtype == "float32"


def test_preprocessing_modes_really_differ():
    pixels = np.full((1, 2, 2, 3), 100.0, dtype="float32")
    outputs = {
        m: keras.ops.convert_to_numpy(preprocessing_layer(m)(pixels)) for m in ("caffe", "tf")
    }
    assert not np.allclose(outputs["caffe"], outputs["tf"])


def test_unknown_backbone_lists_the_valid_names():
    with pytest.raises(ValueError, match=r"Expected one of .*'vgg16'.*Received: backbone='vgg19'"):
        get_backbone("vgg19")


@pytest.mark.parametrize(("name", "size"), [("vgg16", 31), ("inceptionv3", 74), ("xception", 70)])
def test_input_below_the_minimum_names_the_minimum(name, size):
    minimum = BACKBONES[name].min_size
    with pytest.raises(ValueError, match=rf"minimum input size is {minimum}x{minimum}"):
        resolve_image_size(size, name)


def test_default_and_explicit_sizes():
    assert resolve_image_size(None, "inceptionv3") == (299, 299)
    assert resolve_image_size((48, 64), "vgg16") == (48, 64)
    with pytest.raises(TypeError, match="Received: image_size='big'"):
        resolve_image_size("big", "vgg16")


@pytest.mark.parametrize("name", NAMES)
def test_minimum_size_builds(name):
    assert built(name).output_shape[-1] > 0
