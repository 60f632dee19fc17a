"""Grad-CAM: a heatmap of where the model looked to predict a class.

Grad-CAM (Selvaraju et al., 2017, https://arxiv.org/abs/1610.02391) weighs each channel of the
backbone's last convolutional feature map by how much the class score grows when that
channel grows (the mean gradient over the map), adds the weighted channels up and keeps the
positive part. Upsampled to the image, it shows the regions that pushed the prediction
towards the class.

The backbone is a model nested inside the classifier, with the preprocessing layer in front
of it. `split_at_feature_map` cuts the classifier, reusing its own trained layers, into two
models: `images -> preprocess -> backbone up to the feature map`, and `feature map -> rest
of the backbone -> head -> class scores`. The first runs without recording gradients; the
gradient tape watches the feature map and records only the second, so the backward pass
covers the head alone rather than the whole backbone. The class score is the logit, before
the softmax, as in the paper.

Example:
    >>> run = tl.load_run("runs/digits")
    >>> explanations = explain(run, ["data_samples/predict_examples/digit_3.png"])
    >>> explanations[0]["heatmap"].shape
    (32, 32)
"""

from __future__ import annotations

import os
import warnings

import keras
import numpy as np
from keras import ops

from tlkeras.errors import UsageError
from tlkeras.images import load_images
from tlkeras.model import get_base
from tlkeras.runs import Run

#: Layers that only shrink a feature map; Grad-CAM uses the map before them.
_POOLING = (
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalAveragePooling2D,
)


def find_gradcam_layer(base: keras.Model) -> str:
    """Names the backbone layer Grad-CAM uses: the last one whose output is a feature map.

    That is the last layer with a 4-D output `(batch, rows, columns, channels)`, skipping
    pooling layers at the end (VGG16's `block5_pool`), which only make the map coarser. It
    is `block5_conv3` for VGG16, `conv5_block3_out` for ResNet50, `mixed10` for InceptionV3.

    Args:
        base: The backbone model (`tlkeras.model.get_base(model)`).

    Returns:
        The layer name.

    Raises:
        ValueError: If the backbone has no layer with a 4-D output.
    """
    for layer in reversed(base.layers):
        if isinstance(layer, (*_POOLING, keras.layers.InputLayer)):
            continue
        if len(layer.output.shape) == 4:
            return layer.name
    raise UsageError(
        f"The backbone {base.name!r} has no layer with a 4-D feature map output, so Grad-CAM "
        f"cannot be computed. Expected a convolutional backbone. Received: base={base.name!r}"
    )


def split_at_feature_map(
    model: keras.Model, *, layer_name: str | None = None
) -> tuple[keras.Model, keras.Model]:
    """Cuts a classifier in two at a backbone layer's feature map.

    Args:
        model: A model built by `tlkeras.build_model` (or loaded from a run).
        layer_name: The backbone layer whose output is the cut; defaults to
            `find_gradcam_layer`. It must be a block boundary: a layer whose output alone
            feeds the rest of the backbone.

    Returns:
        `(features, scores)`, two `keras.Model`s sharing the classifier's layers and weights:
        `features` maps images in [0, 255] to the feature map, `scores` maps the feature map
        to the class logits (the scores before the softmax).

    Raises:
        ValueError: If `layer_name` is not a 4-D layer of the backbone, or the rest of the
            backbone needs more than its output (a layer inside a residual block).

    Example:
        >>> features, scores = split_at_feature_map(model)
        >>> scores(features(images))   # the logits of model(images)
    """
    base = get_base(model)
    default = find_gradcam_layer(base)
    layer_name = layer_name or default
    names = [layer.name for layer in base.layers]
    target = base.layers[names.index(layer_name)] if layer_name in names else None
    if target is None or len(target.output.shape) != 4:
        raise UsageError(
            f"{layer_name!r} is not a layer of the {base.name} backbone with a 4-D feature "
            f"map output. Leave the layer out to let tlkeras pick the last convolutional one "
            f"({default!r}). Received: layer_name={layer_name!r}"
        )
    position = model.layers.index(base)
    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    x = inputs
    for layer in model.layers[:position]:  # The preprocessing, below the backbone.
        if not isinstance(layer, keras.layers.InputLayer):
            x = layer(x)
    features = keras.Model(inputs, keras.Model(base.inputs, target.output)(x), name="features")

    feature_map = keras.Input(shape=target.output.shape[1:], name="feature_map")
    x = feature_map
    if target is not base.layers[-1]:
        try:
            rest_of_base = keras.Model(target.output, base.output)
        except ValueError:
            raise UsageError(
                f"Grad-CAM cannot cut the {base.name} backbone at {layer_name!r}: later layers "
                f"also use earlier outputs (it is inside a residual or branching block). Pick "
                f"the output layer of a block, or leave the layer out to use {default!r}. "
                f"Received: layer_name={layer_name!r}"
            ) from None
        x = rest_of_base(x)
    head = model.layers[position + 1 :]
    for layer in head[:-1]:
        x = layer(x)
    last = head[-1]
    if isinstance(last, keras.layers.Dense):
        # The class scores before the softmax, as Grad-CAM prescribes.
        logits = ops.matmul(x, ops.cast(last.kernel, x.dtype)) + ops.cast(last.bias, x.dtype)
    else:
        logits = last(x)
    return features, keras.Model(feature_map, logits, name="scores")


def gradcam(
    model: keras.Model,
    images,
    *,
    class_index: int | None = None,
    layer_name: str | None = None,
    batch_size: int = 16,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Computes Grad-CAM heatmaps for a batch of images.

    Args:
        model: A model built by `tlkeras.build_model`; it takes RGB pixels in [0, 255].
        images: Array `(N, height, width, 3)` of RGB pixels in [0, 255], at the model's
            input size.
        class_index: The class to explain for every image; `None` explains each image's
            predicted class. Defaults to None.
        layer_name: The backbone layer to use; defaults to `find_gradcam_layer`.
        batch_size: Images per gradient computation. Defaults to 16.

    Returns:
        `(heatmaps, class_indices, probabilities)`: heatmaps `(N, height, width)` in [0, 1]
        (1 is where the model looked most, all 0 if nothing pushed towards the class), the
        class explained for each image, and the model's class probabilities `(N, classes)`.

    Example:
        >>> heatmaps, classes, probs = gradcam(model, images)
        >>> heatmaps.shape == images.shape[:3]
        True
    """
    images = np.asarray(images, dtype="float32")
    expected = tuple(model.input_shape[1:])
    if images.ndim != 4 or images.shape[1:] != expected:
        raise UsageError(
            f"Expected images shaped (N, {', '.join(map(str, expected))}), the model's input "
            f"size, with RGB pixels in [0, 255]. Load them with tlkeras.images.load_images("
            f"paths, {expected[:2]}). Received: images.shape={images.shape}"
        )
    num_classes = model.output_shape[-1]
    if class_index is not None and not (
        isinstance(class_index, (int, np.integer)) and 0 <= class_index < num_classes
    ):
        raise UsageError(
            f"class_index must be an int from 0 to {num_classes - 1}, the model's classes. "
            f"Received: class_index={class_index!r}"
        )
    features, scores = split_at_feature_map(model, layer_name=layer_name)
    results = [
        _gradcam_batch(features, scores, images[start : start + batch_size], class_index)
        for start in range(0, len(images), batch_size)
    ]
    heatmaps, classes, probabilities = zip(*results, strict=True)
    return np.concatenate(heatmaps), np.concatenate(classes), np.concatenate(probabilities)


def _gradcam_batch(features, scores, images, class_index):
    feature_map = ops.convert_to_tensor(features(images, training=False))

    def class_scores(feature_map):
        logits = ops.cast(scores(feature_map, training=False), "float32")
        if class_index is None:
            classes = ops.cast(ops.argmax(logits, axis=-1), "int32")
        else:
            classes = ops.full((ops.shape(logits)[0],), class_index, dtype="int32")
        picked = ops.take_along_axis(logits, ops.expand_dims(classes, -1), axis=1)
        return ops.sum(picked), (logits, classes)

    # Each image's score depends only on its own feature map, so one gradient call suffices.
    gradients, (logits, classes) = _gradient(class_scores, feature_map)
    gradients = ops.cast(gradients, "float32")
    feature_map = ops.cast(feature_map, "float32")
    channel_weights = ops.mean(gradients, axis=(1, 2), keepdims=True)
    cam = ops.relu(ops.sum(channel_weights * feature_map, axis=-1))
    peak = ops.max(cam, axis=(1, 2), keepdims=True)
    cam = ops.divide_no_nan(cam, peak)
    heatmaps = ops.image.resize(cam[..., None], images.shape[1:3], interpolation="bilinear")
    heatmaps = ops.clip(heatmaps[..., 0], 0.0, 1.0)
    return tuple(ops.convert_to_numpy(x) for x in (heatmaps, classes, ops.softmax(logits)))


def _gradient(function, x):
    """The gradient of `function(x)[0]` with respect to `x`, and `function(x)[1]`.

    Keras 3 has no backend-neutral gradient, so this is the one place that asks the
    backend's own autodiff: TensorFlow's `GradientTape` or `jax.grad`.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.grad(function, has_aux=True)(x)
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(x)
            total, auxiliary = function(x)
        return tape.gradient(total, x), auxiliary
    raise UsageError(
        "Grad-CAM needs gradients, which tlkeras asks of TensorFlow or JAX. Run it with "
        f"KERAS_BACKEND=tensorflow or jax. Received: backend={backend!r}"
    )


def overlay_heatmap(image, heatmap, *, alpha: float = 0.4, colormap: str = "jet") -> np.ndarray:
    """Blends a heatmap, coloured with a matplotlib colormap, over an image.

    Args:
        image: RGB image `(height, width, 3)` with pixels in [0, 255].
        heatmap: `(height, width)` values in [0, 1].
        alpha: Opacity of the heatmap, from 0 (image only) to 1 (heatmap only).
            Defaults to 0.4.
        colormap: A matplotlib colormap name. Defaults to `"jet"` (blue = cold, red = hot).

    Returns:
        The blended uint8 RGB image.
    """
    import matplotlib

    if not 0 <= alpha <= 1:
        raise UsageError(f"alpha must be between 0 and 1. Received: alpha={alpha!r}")
    colours = matplotlib.colormaps[colormap](np.clip(heatmap, 0, 1))[..., :3] * 255.0
    blended = (1 - alpha) * np.asarray(image, dtype="float32") + alpha * colours
    return np.clip(np.rint(blended), 0, 255).astype("uint8")


def explain(
    run: Run,
    paths,
    *,
    class_name: str | None = None,
    layer_name: str | None = None,
    alpha: float = 0.4,
) -> list[dict]:
    """Explains the predictions of a trained run on image files with Grad-CAM.

    Args:
        run: A `Run` from `tlkeras.load_run` or `tlkeras.train`.
        paths: Image file paths.
        class_name: The class to explain for every image; `None` explains each image's
            predicted class. Defaults to None.
        layer_name: The backbone layer to use; defaults to the last convolutional one.
        alpha: Heatmap opacity in the overlay. Defaults to 0.4.

    Returns:
        One dict per image: `path`, `predicted` and `probability` (the top class),
        `class_name` and `class_probability` (the explained class), `layer`, `grid`
        (the feature map's rows and columns), `image` (uint8, as the model saw it),
        `heatmap` (float in [0, 1], the image's height and width) and `overlay` (uint8).

    Raises:
        ValueError: If `class_name` is not one of the run's classes.

    Example:
        >>> result = explain(run, ["cat.jpg"], class_name="dog")[0]
        >>> plots.plot_gradcam([result])
    """
    paths = [os.fspath(p) for p in paths]
    class_index = None
    if class_name is not None:
        if class_name not in run.class_names:
            raise UsageError(
                f"Unknown class {class_name!r}: the model knows {run.class_names}. Pick one of "
                f"those, or leave the class out to explain the predicted class. "
                f"Received: class_name={class_name!r}"
            )
        class_index = run.class_names.index(class_name)
    layer = layer_name or find_gradcam_layer(get_base(run.model))
    images = load_images(paths, run.image_size)
    heatmaps, classes, probabilities = gradcam(
        run.model, images, class_index=class_index, layer_name=layer
    )
    grid = tuple(int(side) for side in get_base(run.model).get_layer(layer).output.shape[1:3])
    if grid == (1, 1):
        warnings.warn(
            f"The feature map of {layer!r} is 1x1 at this image size "
            f"{run.image_size[0]}x{run.image_size[1]}, so the heatmap is flat and shows "
            "nothing. Train at a larger image size to see where the model looks.",
            stacklevel=2,
        )
    results = []
    for path, image, heatmap, explained, probs in zip(
        paths, images, heatmaps, classes, probabilities, strict=True
    ):
        top = int(np.argmax(probs))
        results.append(
            {
                "path": path,
                "predicted": run.class_names[top],
                "probability": float(probs[top]),
                "class_name": run.class_names[int(explained)],
                "class_probability": float(probs[int(explained)]),
                "layer": layer,
                "grid": list(grid),
                "image": image,
                "heatmap": heatmap,
                "overlay": overlay_heatmap(image, heatmap, alpha=alpha),
            }
        )
    return results


def save_explanations(explanations: list[dict], out_dir) -> list[str]:
    """Saves one PNG per explanation, the image beside its overlay, as `<name>_gradcam.png`.

    Returns:
        The paths written, in order. Images with the same file name get `_2`, `_3`, ...
    """
    from tlkeras import plots

    os.makedirs(out_dir, exist_ok=True)
    written, used = [], set()
    for item in explanations:
        stem = os.path.splitext(os.path.basename(item["path"]))[0]
        name, number = f"{stem}_gradcam.png", 1
        while name in used:
            number += 1
            name = f"{stem}_{number}_gradcam.png"
        used.add(name)
        written.append(plots.save_figure(plots.plot_gradcam([item]), os.path.join(out_dir, name)))
    return written
