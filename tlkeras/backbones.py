"""The backbone registry: everything tlkeras knows about each ImageNet model.

One `Backbone` entry per model holds its `keras.applications` constructor, its own
`preprocess_input`, how that preprocessing is rebuilt inside the saved model, its default and
minimum input size, the ImageNet weights file Keras caches (with the address and hash Keras
downloads and checks it by), and its named blocks listed bottom to top. Adding a backbone
means adding one entry to `BACKBONES`.

Blocks are what "unfreeze the top N blocks" counts. Each block is given by a *marker*:

- a string: the block starts at the first layer whose name starts with it;
- `"after:NAME"`: the block starts right after the layer called NAME;
- an integer: the block starts at that layer index (used where Keras leaves the layers
  unnamed, as in InceptionV3's stem, so their auto-generated names are not stable).

Every layer from one block's start up to the next block's start belongs to that block, so a
block is always a contiguous, whole unit of the network.

Example:
    >>> from tlkeras.backbones import get_backbone
    >>> get_backbone("vgg16").block_names
    ('block1', 'block2', 'block3', 'block4', 'block5')
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import keras

from tlkeras import efficientnet_lite
from tlkeras.errors import UsageError

A = keras.applications

#: Where Keras keeps most ImageNet weights files (EfficientNet's are one folder up).
KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"

#: How each preprocessing mode maps raw 0-255 RGB pixels; see `tlkeras.layers.preprocessing_layer`.
PREPROCESSING_MODES = ("caffe", "tf", "torch", "none")


@dataclasses.dataclass(frozen=True)
class Backbone:
    """Everything tlkeras needs to know about one ImageNet backbone.

    Attributes:
        name: The registry name, e.g. `"vgg16"`.
        constructor: The `keras.applications` function that builds the model.
        preprocess_input: Keras' own `preprocess_input` for this model (the reference).
        preprocessing: How the input is normalised, one of `PREPROCESSING_MODES`:
            `"caffe"` (RGB to BGR, minus the ImageNet mean), `"tf"` (scale to [-1, 1]),
            `"torch"` (scale to [0, 1], then ImageNet mean and std) or `"none"` (the model
            normalises inside itself, as EfficientNet and ConvNeXt do).
        default_size: The ImageNet training resolution, used when no size is given.
        min_size: The smallest height and width the model accepts.
        weights_file: The file name Keras caches in `~/.keras/models` for the ImageNet
            weights without the classification top.
        blocks: `(block_name, marker)` pairs, bottom to top; see the module docstring.
        weights_url: The folder address Keras downloads `weights_file` from (copied from the
            `keras.applications` source).
        weights_hash: The md5 or sha256 hash Keras checks that file against, or `None` where
            Keras publishes none (MobileNetV2). For weights converted from a package, the
            digest of the converted weights (`tlkeras.weights.weights_digest`).
        weights_package: The registry package (a pip requirement) the ImageNet weights are
            converted from on first use, offline, instead of downloaded by Keras; `None` for
            Keras' own files.
    """

    name: str
    constructor: Callable[..., keras.Model]
    preprocess_input: Callable
    preprocessing: str
    default_size: int
    min_size: int
    weights_file: str
    blocks: tuple[tuple[str, str | int], ...]
    weights_url: str = ""
    weights_hash: str | None = None
    weights_package: str | None = None

    @property
    def block_names(self) -> tuple[str, ...]:
        """The block names, bottom to top."""
        return tuple(name for name, _ in self.blocks)

    def weights_path(self, image_size: int | None = None) -> str:
        """Where Keras keeps (or will download) the ImageNet weights file for this size.

        Only MobileNetV2 has a file per input size (96, 128, 160, 192 or 224; any other size
        uses the 224 file); `weights_file` holds `{rows}` for it.
        """
        keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
        return os.path.join(keras_home, "models", self.weights_filename(image_size))

    def weights_filename(self, image_size: int | None = None) -> str:
        """The ImageNet weights file name for this input size; see `weights_path`."""
        return self.weights_file.format(rows=_mobilenet_rows(image_size))

    def weights_origin(self, image_size: int | None = None) -> str:
        """Where the ImageNet weights come from: Keras' address, or the installed package."""
        if self.weights_package:
            return f"the installed package {self.weights_package}"
        return self.weights_url + self.weights_filename(image_size)


def _mobilenet_rows(image_size) -> int:
    return image_size if image_size in (96, 128, 160, 192, 224) else 224


def _numbered(prefix: str, first: int, last: int, separator: str = "_"):
    """Blocks `prefix{first}` ... `prefix{last}`, each starting at `prefix{i}{separator}`."""
    return tuple((f"{prefix}{i}", f"{prefix}{i}{separator}") for i in range(first, last + 1))


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in [
        Backbone(
            name="vgg16",
            constructor=A.VGG16,
            preprocess_input=A.vgg16.preprocess_input,
            preprocessing="caffe",
            default_size=224,
            min_size=32,
            weights_file="vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
            weights_url=KERAS_WEIGHTS_URL + "vgg16/",
            weights_hash="6d6bbae143d832006294945121d1f1fc",
            blocks=_numbered("block", 1, 5),
        ),
        Backbone(
            name="resnet50",
            constructor=A.ResNet50,
            preprocess_input=A.resnet50.preprocess_input,
            preprocessing="caffe",
            default_size=224,
            min_size=32,
            weights_file="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
            weights_url=KERAS_WEIGHTS_URL + "resnet/",
            weights_hash="4d473c1dd8becc155b73f8504c6f6626",
            blocks=(("stem", "conv1_"), *_numbered("conv", 2, 5)),
        ),
        Backbone(
            name="inceptionv3",
            constructor=A.InceptionV3,
            preprocess_input=A.inception_v3.preprocess_input,
            preprocessing="tf",
            default_size=299,
            min_size=75,
            weights_file="inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
            weights_url=KERAS_WEIGHTS_URL + "inception_v3/",
            weights_hash="bcbd6486424b2319ff4ef7d526e38f63",
            # Keras leaves InceptionV3's convolutions unnamed: the stem is the first 14 layers
            # (input to the second max-pooling), and block mixedN starts right after the
            # concatenation named mixed(N-1). tests/test_backbones.py checks every boundary.
            blocks=(("stem", 0), ("mixed0", 14))
            + tuple((f"mixed{i}", f"after:mixed{i - 1}") for i in range(1, 11)),
        ),
        Backbone(
            name="mobilenet_v2",
            constructor=A.MobileNetV2,
            preprocess_input=A.mobilenet_v2.preprocess_input,
            preprocessing="tf",
            default_size=224,
            min_size=32,
            weights_file="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5",
            weights_url=KERAS_WEIGHTS_URL + "mobilenet_v2/",
            weights_hash=None,  # Keras publishes no hash for MobileNetV2.
            # One block per resolution stage; the last holds block_16 and the final 1x1 conv.
            blocks=(
                ("stem", "Conv1"),
                ("stage2", "block_1_"),
                ("stage3", "block_3_"),
                ("stage4", "block_6_"),
                ("stage5", "block_10_"),
                ("stage6", "block_13_"),
                ("stage7", "block_16_"),
            ),
        ),
        Backbone(
            name="efficientnet_b0",
            constructor=A.EfficientNetB0,
            preprocess_input=A.efficientnet.preprocess_input,
            preprocessing="none",
            default_size=224,
            min_size=32,
            weights_file="efficientnetb0_notop.h5",
            weights_url="https://storage.googleapis.com/keras-applications/",
            weights_hash="50bc09e76180e00e4465e1a485ddc09d",
            blocks=(("stem", 0),) + _numbered("block", 1, 7, separator="") + (("top", "top_"),),
        ),
        Backbone(
            name="xception",
            constructor=A.Xception,
            preprocess_input=A.xception.preprocess_input,
            preprocessing="tf",
            default_size=299,
            min_size=71,
            weights_file="xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
            weights_url=KERAS_WEIGHTS_URL + "xception/",
            weights_hash="b0042744bf5b25fce3cb969f33bebb97",
            blocks=_numbered("block", 1, 14),
        ),
        Backbone(
            name="densenet121",
            constructor=A.DenseNet121,
            preprocess_input=A.densenet.preprocess_input,
            preprocessing="torch",
            default_size=224,
            min_size=32,
            weights_file="densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
            weights_url=KERAS_WEIGHTS_URL + "densenet/",
            weights_hash="30ee3e1110167f948a6b9946edeeb738",
            # Each dense block carries the transition layers (poolN_*) that follow it.
            blocks=(("stem", 0),) + _numbered("conv", 2, 5),
        ),
        Backbone(
            name="convnext_tiny",
            constructor=A.ConvNeXtTiny,
            preprocess_input=A.convnext.preprocess_input,
            preprocessing="none",
            default_size=224,
            min_size=32,
            weights_file="convnext_tiny_notop.h5",
            weights_url=KERAS_WEIGHTS_URL + "convnext/",
            weights_hash="d547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1",
            # Stage N>0 starts with the downsampling layer that leads into it.
            blocks=(
                ("stem", 0),
                ("stage0", "convnext_tiny_stage_0_"),
                ("stage1", "convnext_tiny_downsampling_block_0"),
                ("stage2", "convnext_tiny_downsampling_block_1"),
                ("stage3", "convnext_tiny_downsampling_block_2"),
            ),
        ),
        Backbone(
            name="efficientnet_lite0",
            constructor=efficientnet_lite.EfficientNetLite0,
            # The model scales its input itself, (x - 127) / 128, with its first layer.
            preprocess_input=efficientnet_lite.preprocess_input,
            preprocessing="none",
            default_size=224,
            min_size=32,
            weights_file="efficientnet_lite0_notop.weights.h5",
            weights_hash=efficientnet_lite.NOTOP_DIGEST,
            weights_package=efficientnet_lite.WEIGHTS_PACKAGE,
            blocks=(("stem", 0),) + _numbered("block", 1, 7, separator="") + (("top", "top_"),),
        ),
    ]
}


def get_backbone(name: str) -> Backbone:
    """Looks up a backbone in the registry.

    Args:
        name: A registry name such as `"vgg16"`; see `BACKBONES` for all of them.

    Returns:
        The `Backbone` entry.

    Raises:
        ValueError: If the name is not in the registry. The message lists the valid names.

    Example:
        >>> get_backbone("resnet50").default_size
        224
    """
    if isinstance(name, Backbone):
        return name
    key = str(name).lower()
    if key not in BACKBONES:
        raise UsageError(
            f"Unknown backbone {name!r}. Expected one of {tuple(BACKBONES)}; pick one of those "
            f"names. Received: backbone={name!r}"
        )
    return BACKBONES[key]


def check_num_blocks(
    backbone: str | Backbone, num_blocks, *, minimum: int = 0, name: str = "num_blocks"
) -> None:
    """Fails unless `num_blocks` is a whole number of the backbone's blocks, from `minimum`.

    Example:
        >>> check_num_blocks("vgg16", 6)
        ValueError: Cannot use the top 6 blocks of vgg16: it has 5 blocks, ...
    """
    backbone = get_backbone(backbone)
    names = backbone.block_names
    if not isinstance(num_blocks, int) or not minimum <= num_blocks <= len(names):
        verb = "unfreeze" if name == "unfreeze" else "use"
        raise UsageError(
            f"Cannot {verb} {num_blocks!r} blocks of {backbone.name}: it has {len(names)} "
            f"blocks, {', '.join(names)} (bottom to top). Pass a number from {minimum} to "
            f"{len(names)}. Received: {name}={num_blocks!r}"
        )


def layer_blocks(backbone: str | Backbone, base: keras.Model) -> list[str]:
    """Names the block each layer of a built backbone belongs to.

    Args:
        backbone: The registry name or `Backbone` entry the model was built from.
        base: The backbone model, as built by its `keras.applications` constructor.

    Returns:
        A list parallel to `base.layers` giving each layer's block name.

    Raises:
        ValueError: If a block marker matches no layer, which means the registry entry
            does not fit this Keras version.

    Example:
        >>> base = keras.applications.VGG16(include_top=False, weights=None,
        ...                                 input_shape=(32, 32, 3))
        >>> layer_blocks("vgg16", base)[-1]
        'block5'
    """
    backbone = get_backbone(backbone)
    names = [layer.name for layer in base.layers]
    starts = [_marker_index(marker, names, backbone) for _, marker in backbone.blocks]
    starts[0] = 0  # The input layer belongs to the bottom block.
    if starts != sorted(starts):
        raise ValueError(
            f"The blocks of backbone {backbone.name!r} are out of order in this Keras version: "
            f"starts at layer indices {starts}. The registry entry must be updated. "
            f"Received: backbone={backbone.name!r}"
        )
    result = []
    for index in range(len(names)):
        block = sum(1 for start in starts if start <= index) - 1
        result.append(backbone.blocks[block][0])
    return result


def _marker_index(marker: str | int, names: list[str], backbone: Backbone) -> int:
    if isinstance(marker, int):
        return marker
    if marker.startswith("after:"):
        return names.index(marker.removeprefix("after:")) + 1
    for index, name in enumerate(names):
        if name.startswith(marker):
            return index
    raise ValueError(
        f"Block marker {marker!r} of backbone {backbone.name!r} matches no layer of the built "
        f"model, so the registry entry does not fit this Keras version ({keras.__version__}). "
        f"Update the entry in tlkeras/backbones.py. Received: marker={marker!r}"
    )
