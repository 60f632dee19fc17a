"""Keras layers that tlkeras puts inside its models.

`Preprocess` rebuilds each backbone's `preprocess_input` as an ordinary serialisable layer, so
the saved model takes raw 0-255 RGB pixels, carries its own preprocessing and loads with
Keras' `safe_mode=True` (no Lambda layer, no pickled Python code).
"""

from __future__ import annotations

import keras
from keras import ops

from tlkeras.backbones import PREPROCESSING_MODES

IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
# Caffe-style models (VGG16, ResNet50) subtract the ImageNet mean pixel in BGR order, 0-255.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="tlkeras")
class Preprocess(keras.layers.Layer):
    """Maps raw RGB pixels in [0, 255] to what a backbone expects.

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
            raise ValueError(
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
