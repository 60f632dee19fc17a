"""Each backbone's preprocessing as Keras' own layers, inside the saved model.

`preprocessing_layer` rebuilds a backbone's `preprocess_input` from Keras' built-in layers
(`Rescaling`, `Normalization`, a frozen `Dense` on the channel axis, `Identity`), so the
saved model takes raw 0-255 RGB pixels, carries its own preprocessing, and loads with
`keras.saving.load_model(path, safe_mode=True)` in a Python that has never imported tlkeras
(no Lambda layer, no pickled code, no custom class).

`Preprocess` is the custom layer models saved by earlier tlkeras versions hold; it stays
registered so those run folders still load with tlkeras.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from tlkeras.backbones import PREPROCESSING_MODES
from tlkeras.errors import UsageError

IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
# Caffe-style models (VGG16, ResNet50) subtract the ImageNet mean pixel in BGR order, 0-255.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def preprocessing_layer(mode: str, *, name: str = "preprocess") -> keras.layers.Layer:
    """A built-in Keras layer mapping raw RGB pixels in [0, 255] to what a backbone expects.

    The modes match `keras.applications.imagenet_utils.preprocess_input`:

    - `"caffe"`: RGB to BGR, then subtract the ImageNet mean pixel (VGG16, ResNet50): a
      frozen `Dense(3)` on the channel axis whose kernel swaps R and B and whose bias is
      minus the mean (exact in float32: each output is one input times 1, plus the bias).
    - `"tf"`: scale to [-1, 1] (InceptionV3, Xception, MobileNetV2): `Rescaling`.
    - `"torch"`: scale to [0, 1], then subtract the ImageNet mean and divide by its std
      (DenseNet): one `Normalization` with the mean and variance in 0-255 units.
    - `"none"`: `Identity`; the backbone normalises inside itself (EfficientNet, ConvNeXt,
      EfficientNet-Lite).

    The layer computes in float32 whatever the precision policy (bfloat16 would round the
    ImageNet mean 103.939 to 104), and is not trainable.

    Args:
        mode: One of `"caffe"`, `"tf"`, `"torch"` or `"none"`.
        name: The layer's name. Defaults to `"preprocess"`.

    Returns:
        A built, frozen Keras layer.

    Raises:
        ValueError: If `mode` is not one of `PREPROCESSING_MODES`.

    Example:
        >>> layer = preprocessing_layer("tf")
        >>> keras.ops.convert_to_numpy(layer(np.array([[0.0, 127.5, 255.0]])))
        array([[-1.,  0.,  1.]], dtype=float32)
    """
    if mode not in PREPROCESSING_MODES:
        raise UsageError(
            f"Unknown preprocessing mode {mode!r}. Expected one of {PREPROCESSING_MODES}. "
            f"Received: mode={mode!r}"
        )
    options = {"name": name, "dtype": "float32", "trainable": False}
    if mode == "tf":
        return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, **options)
    if mode == "torch":
        mean = [255.0 * m for m in IMAGENET_MEAN_RGB]
        variance = [(255.0 * s) ** 2 for s in IMAGENET_STD_RGB]
        return keras.layers.Normalization(axis=-1, mean=mean, variance=variance, **options)
    if mode == "none":
        return keras.layers.Identity(**options)
    # The values are the initializers, not weights set afterwards: a variable created under
    # a multi-worker strategy takes its first value from the chief, and an assignment after
    # creation is not what the workers then train from.
    swap_red_and_blue = np.eye(3)[::-1].tolist()  # Row i feeds output 2 - i.
    return keras.layers.Dense(
        3,
        kernel_initializer=keras.initializers.Constant(swap_red_and_blue),
        bias_initializer=keras.initializers.Constant([-m for m in CAFFE_MEAN_BGR]),
        **options,
    )


@keras.saving.register_keras_serializable(package="tlkeras")
class Preprocess(keras.layers.Layer):
    """The preprocessing layer of models saved by earlier tlkeras versions (still loads).

    New models use `preprocessing_layer`, made of Keras' own layers, instead.

    The modes match `keras.applications.imagenet_utils.preprocess_input`:

    - `"caffe"`: RGB to BGR, then subtract the ImageNet mean pixel (VGG16, ResNet50).
    - `"tf"`: scale to [-1, 1] (InceptionV3, Xception, MobileNetV2).
    - `"torch"`: scale to [0, 1], then subtract the ImageNet mean and divide by its std
      (DenseNet).
    - `"none"`: pass through; the backbone normalises inside itself (EfficientNet, ConvNeXt).

    Args:
        mode: One of `"caffe"`, `"tf"`, `"torch"` or `"none"`.
        **kwargs: Passed to `keras.layers.Layer` (e.g. `name`).

    Example:
        >>> import numpy as np
        >>> Preprocess("tf")(np.array([[0.0, 127.5, 255.0]])).numpy()
        array([[-1.,  0.,  1.]], dtype=float32)
    """

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESSING_MODES:
            raise UsageError(
                f"Unknown preprocessing mode {mode!r}. Expected one of {PREPROCESSING_MODES}. "
                f"Received: mode={mode!r}"
            )
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.convert_to_tensor(CAFFE_MEAN_BGR, x.dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor(IMAGENET_MEAN_RGB, x.dtype)
            std = ops.convert_to_tensor(IMAGENET_STD_RGB, x.dtype)
            return (x / 255.0 - mean) / std
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
