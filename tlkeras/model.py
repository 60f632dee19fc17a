"""Building the classifier, and freezing and unfreezing its backbone.

The model takes raw RGB pixels in [0, 255] and is, from bottom to top:

    image -> preprocess (the backbone's own preprocess_input, as Keras' built-in layers)
          -> backbone (its BatchNormalization layers never trainable, so in inference mode)
          -> GlobalAveragePooling2D -> Dropout -> Dense(relu, optional) -> Dropout
          -> Dense(num_classes, softmax, float32)

BatchNorm stays in inference mode because its layers are never trainable, not because of a
call-time flag. Keras 3's `fit` calls the model with `training=True`, and a functional model
passes that down to every layer inside it, nested backbone included, overriding a
`training=False` given when the backbone was called (keras/src/models/functional.py,
`operation_fn`). What keeps BatchNorm in inference mode is that Keras 3 runs a
BatchNormalization layer that is not trainable in inference mode (its moving statistics,
never batch statistics, and no updates): `build_model` freezes the whole backbone and
`unfreeze_top_blocks` never unfreezes a BatchNorm layer. `tlkeras.train` goes further and
runs the whole backbone, unfrozen blocks included, in inference mode
(`tlkeras.features`' `_InferenceMode`), so EfficientNet's stochastic-depth Dropout layers
(`*_drop`) stay off in training too, on the cached and the end-to-end path alike; only a
model fitted by hand with plain `model.fit` has them active.

Example:
    >>> model = build_model("vgg16", num_classes=3, image_size=32, weights=None)
    >>> freeze_backbone(model)
    >>> unfreeze_top_blocks(model, num_blocks=1)   # block5 trains, BatchNorm never does
"""

from __future__ import annotations

import contextlib
import os

import keras

from tlkeras.backbones import Backbone, check_num_blocks, get_backbone, layer_blocks
from tlkeras.errors import UsageError, UsageTypeError
from tlkeras.layers import preprocessing_layer
from tlkeras.saving import load_weights_strictly
from tlkeras.weights import (
    WEIGHT_COUNTS,
    WeightsUnavailableError,
    build_imagenet_model,
    built_as,
    describe_weights_file,
    imagenet_weights_path,
    provisioned_imagenet_file,
    resolve_weights_file,
)

MODEL_NAME_PREFIX = "tlkeras_"


def resolve_image_size(image_size, backbone: str | Backbone) -> tuple[int, int]:
    """Checks an image size against a backbone's minimum and returns `(height, width)`.

    Args:
        image_size: An int for square images, a `(height, width)` pair, or `None` for the
            backbone's default size.
        backbone: The registry name or entry.

    Returns:
        `(height, width)`.

    Raises:
        ValueError: If a side is below the backbone's minimum input size.

    Example:
        >>> resolve_image_size(None, "inceptionv3")
        (299, 299)
    """
    backbone = get_backbone(backbone)
    if image_size is None:
        return (backbone.default_size, backbone.default_size)
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(side, int) for side in size):
        raise UsageTypeError(
            "image_size must be an int or a (height, width) pair of ints. "
            f"Received: image_size={image_size!r}"
        )
    if min(size) < backbone.min_size:
        raise UsageError(
            f"Image size {size[0]}x{size[1]} is too small for {backbone.name}: its minimum input "
            f"size is {backbone.min_size}x{backbone.min_size}. Pass an image_size of at least "
            f"{backbone.min_size}. Received: image_size={image_size!r}"
        )
    return size


def load_backbone(
    backbone: str | Backbone, *, image_size=None, weights="imagenet", weights_dir=None
):
    """Builds a backbone without its classification top and loads its weights.

    Args:
        backbone: The registry name or entry, e.g. `"resnet50"`.
        image_size: An int or `(height, width)`; defaults to the backbone's default size.
        weights: `"imagenet"` (Keras downloads the file once into `~/.keras/models` and
            reuses it), `None` or `"none"` for random initialisation, a folder written by
            `tlkeras pretrain`, or the path to a weights file saved from the same backbone
            (`.h5` or `.weights.h5`).
        weights_dir: A provisioned folder of ImageNet weights files (see `tlkeras.weights`)
            that `"imagenet"` loads from, never downloading. Defaults to
            `$TLKERAS_WEIGHTS_DIR`, else Keras' cache and download.

    Returns:
        The backbone as a `keras.Model`.

    Raises:
        WeightsUnavailableError: If the ImageNet weights are not cached (or provisioned) and
            cannot be downloaded, for example offline.
        ValueError: If a weights path does not exist, is corrupt, or was made for another
            backbone or with other shapes; the message names what it was made for.

    Example:
        >>> base = load_backbone("mobilenet_v2", image_size=96, weights=None)
    """
    backbone = get_backbone(backbone)
    height, width = resolve_image_size(image_size, backbone)

    def build(initial_weights):
        return backbone.constructor(
            include_top=False, weights=initial_weights, input_shape=(height, width, 3)
        )

    def build_from_imagenet_file(path):
        return build_imagenet_model(
            backbone, path, include_top=False, input_shape=(height, width, 3)
        )

    if weights is None or str(weights).lower() == "none":
        return build(None)
    if str(weights).lower() == "imagenet":
        if backbone.weights_package:  # Converted from an installed package, never downloaded.
            return build(imagenet_weights_path(backbone, weights_dir=weights_dir))
        provisioned = provisioned_imagenet_file(
            backbone, image_size=height, weights_dir=weights_dir
        )
        if provisioned:
            return build_from_imagenet_file(provisioned)
        weights_path = backbone.weights_path(height)
        cached = os.path.exists(weights_path)
        try:
            return build("imagenet")
        except Exception as error:  # Keras raises a bare Exception on a failed download.
            if cached:
                raise
            folder, file = os.path.split(weights_path)
            remedy = (
                f"copy {file} into {folder}, point --weights-dir (or TLKERAS_WEIGHTS_DIR) at a "
                "folder provisioned with `python -m tlkeras weights download`, pass --weights "
                "PATH to a local weights file, use --backbone efficientnet_lite0 (its ImageNet "
                "weights come installed with tlkeras), or --weights none for random weights"
            )
            raise WeightsUnavailableError(
                f"Could not download the ImageNet weights of {backbone.name} "
                f"({_first_line(error)}): {remedy}. Received: weights='imagenet'",
                remedy=remedy,
            ) from None
    return _load_weights_file(build, build_from_imagenet_file, backbone, weights)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _load_weights_file(
    build, build_from_imagenet_file, backbone: Backbone, weights
) -> keras.Model:
    path, manifest = resolve_weights_file(weights, backbone)
    try:
        keras_built = not backbone.weights_package
        if keras_built and built_as(path, manifest, backbone) == "imagenet":
            # Keras' ImageNet file, or pretrained from it: build the model Keras builds for it.
            return build_from_imagenet_file(path)
        base = build(None)
        load_weights_strictly(base, path)  # Refuses a file whose parts do not all fit.
        return base
    except Exception as error:
        arrays, values = WEIGHT_COUNTS.get(backbone.name, (0, 0))
        raise UsageError(
            f"Could not load {os.fspath(weights)!r} into the {backbone.name} backbone: the file "
            f"holds {describe_weights_file(path)}, but {backbone.name} without its top has "
            f"{arrays} weight arrays ({values:,} values) ({error}). Expected weights saved from "
            f"{backbone.name} without its top, or a folder from `tlkeras pretrain --backbone "
            f"{backbone.name}`. Received: weights={os.fspath(weights)!r}"
        ) from None


def build_model(
    backbone: str = "vgg16",
    *,
    num_classes: int,
    image_size=None,
    weights="imagenet",
    dense_units: int = 1024,
    dropout: float = 0.2,
    weights_dir=None,
) -> keras.Model:
    """Builds a frozen backbone with a new classification head.

    Args:
        backbone: The registry name, e.g. `"vgg16"`, `"resnet50"`, `"inceptionv3"`.
        num_classes: The number of classes, at least 2.
        image_size: An int or `(height, width)`; defaults to the backbone's default size.
        weights: `"imagenet"`, `None`/`"none"`, a folder from `tlkeras pretrain`, or a
            weights file path; see `load_backbone`.
        dense_units: Units of the hidden Dense(relu) layer; 0 leaves it out. Defaults to 1024.
        dropout: The dropout rate before and after the hidden layer. Defaults to 0.2.
        weights_dir: The provisioned folder `"imagenet"` loads from; see `load_backbone`.

    Returns:
        An uncompiled `keras.Model` taking float RGB pixels in [0, 255], shaped
        `(batch, height, width, 3)`, and returning class probabilities. The backbone is frozen.

    Example:
        >>> model = build_model("resnet50", num_classes=5, image_size=64, weights=None)
        >>> model.output_shape
        (None, 5)
    """
    backbone = get_backbone(backbone)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise UsageError(
            "A classifier needs at least 2 classes. Give the data folder one subfolder per "
            f"class. Received: num_classes={num_classes!r}"
        )
    if not 0 <= dropout < 1:
        raise UsageError(f"dropout must be in [0, 1). Received: dropout={dropout!r}")
    height, width = resolve_image_size(image_size, backbone)
    base = load_backbone(
        backbone, image_size=(height, width), weights=weights, weights_dir=weights_dir
    )
    base.trainable = False

    inputs = keras.Input(shape=(height, width, 3), name="image")
    x = preprocessing_layer(backbone.preprocessing)(inputs)  # float32, frozen, built-in.
    # No call-time training=False: fit's training=True would override it. BatchNorm stays in
    # inference mode because its layers are not trainable (see the module docstring).
    x = base(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    if dense_units:
        x = keras.layers.Dense(dense_units, activation="relu", name="dense")(x)
        x = keras.layers.Dropout(dropout, name="dropout_2")(x)
    outputs = keras.layers.Dense(
        num_classes, activation="softmax", dtype="float32", name="predictions"
    )(x)
    return keras.Model(inputs, outputs, name=MODEL_NAME_PREFIX + backbone.name)


def get_base(model: keras.Model) -> keras.Model:
    """Returns the backbone inside a model built by `build_model`."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            return layer
    raise UsageError(
        "This model has no nested backbone model. Expected a model built by "
        f"tlkeras.build_model. Received: model={model.name!r}"
    )


def backbone_of(model: keras.Model) -> Backbone:
    """Returns the registry entry of a model built by `build_model` (from its name)."""
    if not model.name.startswith(MODEL_NAME_PREFIX):
        raise UsageError(
            f"Cannot tell which backbone this model uses: its name should start with "
            f"{MODEL_NAME_PREFIX!r}, as models from tlkeras.build_model do. "
            f"Received: model.name={model.name!r}"
        )
    return get_backbone(model.name.removeprefix(MODEL_NAME_PREFIX))


def freeze_backbone(model: keras.Model) -> None:
    """Freezes the whole backbone so only the head trains. Recompile afterwards."""
    get_base(model).trainable = False


def unfreeze_top_blocks(
    model: keras.Model, num_blocks: int, *, freeze_batchnorm: bool = True
) -> list[str]:
    """Unfreezes the top `num_blocks` whole blocks of the backbone, BatchNorm excepted.

    Every BatchNormalization layer stays frozen (`trainable=False`): its scale and offset do
    not train and, since Keras 3 runs a non-trainable BatchNormalization layer in inference
    mode whatever `training` flag `fit` passes down, it normalises with its moving statistics
    and never updates them. The model must be compiled again before training;
    `tlkeras.fine_tune` does that.

    Args:
        model: A model built by `build_model`.
        num_blocks: How many blocks to unfreeze, counted from the top; 0 freezes them all.
        freeze_batchnorm: Keep BatchNorm layers frozen. Defaults to True; False is the
            classic mistake, kept for teaching: the unfrozen blocks' BatchNorm layers then
            train under `fit`, normalising with batch statistics and moving their averages.

    Returns:
        The names of the unfrozen blocks, bottom to top.

    Raises:
        ValueError: If `num_blocks` is negative or larger than the backbone's block count.

    Example:
        >>> unfreeze_top_blocks(model, num_blocks=2)   # on VGG16
        ['block4', 'block5']
    """
    backbone = backbone_of(model)
    check_num_blocks(backbone, num_blocks)
    names = backbone.block_names
    top = set(names[len(names) - num_blocks :])
    base = get_base(model)
    base.trainable = True
    for layer, block in zip(base.layers, layer_blocks(backbone, base), strict=True):
        is_batchnorm = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = block in top and not (freeze_batchnorm and is_batchnorm)
    return [name for name in names if name in top]


def strategy_scope(model: keras.Model):
    """The scope of the `tf.distribute` strategy `model` was built in (TensorFlow only).

    Example:
        >>> with strategy_scope(model):
        ...     model.optimizer.build(model.trainable_variables)
    """
    strategy = getattr(model, "distribute_strategy", None)  # Only on the TensorFlow backend.
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def compile_model(
    model: keras.Model, *, learning_rate: float, jit_compile="auto", optimizer=None
) -> None:
    """Compiles with Adam, sparse categorical cross-entropy and accuracy.

    Call it after every change to `trainable`; Keras only picks the change up on compile.
    It compiles in the scope of the `tf.distribute` strategy the model was built in, so the
    optimizer and metrics live on the same devices as the model. `jit_compile` (True, False,
    or "auto": XLA with a GPU, none on a CPU) goes to Keras. `optimizer`, if given, is used
    instead of a new `Adam(learning_rate)`, e.g. one shared with a model whose variables
    this one shares (`tlkeras.features`).
    """
    if not learning_rate > 0:
        raise UsageError(
            f"learning_rate must be a positive number. Received: learning_rate={learning_rate!r}"
        )
    with strategy_scope(model):
        model.compile(
            optimizer=optimizer or keras.optimizers.Adam(learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            jit_compile=jit_compile,
        )


def imagenet_or_none(backbone: str, *, image_size=None) -> str:
    """Returns `"imagenet"` when the ImageNet weights can be had, else `"none"`, with a note.

    Tries Keras' own download and cache once. Offline (a lab without internet, CI), it prints
    a visible note that the numbers that follow are not transfer learning, and how to get the
    weights. Notebooks use it so they run anywhere.

    Args:
        backbone: The registry name, e.g. `"vgg16"`.
        image_size: The input size the model will use; defaults to the backbone's.

    Returns:
        `"imagenet"` or `"none"`, ready for `build_model(weights=...)` or `TrainConfig`.

    Example:
        >>> weights = imagenet_or_none("vgg16", image_size=32)
    """
    try:
        load_backbone(backbone, image_size=image_size, weights="imagenet")
    except WeightsUnavailableError as error:
        print(
            "NOTE: the ImageNet weights could not be downloaded, so this runs with random "
            "weights (weights='none'). The numbers below are NOT transfer learning until real "
            f"weights are present. To get them: {error.remedy or error}."
        )
        return "none"
    return "imagenet"


def block_summary(model: keras.Model) -> str:
    """A table of the backbone's blocks, bottom to top: layers, weights, trainable weights.

    Example:
        >>> model = build_model("vgg16", num_classes=2, image_size=32, weights=None)
        >>> unfreeze_top_blocks(model, 1)
        ['block5']
        >>> print(block_summary(model))  # block5 shows its weights as trainable
    """
    base = get_base(model)
    rows: dict[str, list[int]] = {}
    for layer, block in zip(base.layers, layer_blocks(backbone_of(model), base), strict=True):
        row = rows.setdefault(block, [0, 0, 0])
        row[0] += 1
        row[1] += sum(int(w.numpy().size) for w in layer.weights)
        row[2] += sum(int(w.numpy().size) for w in layer.trainable_weights)
    lines = [f"{'block':10} {'layers':>6} {'weights':>11} {'trainable':>11}"]
    lines += [f"{name:10} {n:6d} {w:11,d} {t:11,d}" for name, (n, w, t) in rows.items()]
    return "\n".join(lines)
