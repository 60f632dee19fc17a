"""Numeric precision: building a model that computes in bfloat16 or float16.

Keras decides a layer's precision from the global dtype policy when the layer is created.
`precision_scope` sets that policy for the layers built inside it and restores the previous
one afterwards, so nothing else in the process changes:

- `"float32"`: everything in float32 (the default).
- `"mixed_bfloat16"`: layers compute in bfloat16 and keep their weights in float32. On a CPU
  with AVX512_BF16 or AMX (and on TPUs and recent GPUs) convolutions run about twice as fast
  or more; bfloat16 has float32's range, so no loss scaling is needed.
- `"mixed_float16"`: layers compute in float16 with float32 weights, for GPUs with tensor
  cores. Keras scales the loss to keep small gradients from underflowing.

The last layer of every tlkeras model (the Dense layer and its softmax) is built with
`dtype="float32"`, so probabilities and the loss are always float32.

Example:
    >>> with precision_scope("mixed_bfloat16"):
    ...     model = build_model("vgg16", num_classes=3, image_size=64, weights=None)
    >>> model.get_layer("dense").compute_dtype, model.output.dtype
    ('bfloat16', 'float32')
"""

from __future__ import annotations

import contextlib
import warnings

import keras

from tlkeras.errors import UsageError

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def check_precision(precision: str) -> str:
    """Returns `precision` if it is one of `PRECISIONS`, else raises a ValueError."""
    if precision not in PRECISIONS:
        raise UsageError(
            f"Unknown precision {precision!r}. Expected one of {PRECISIONS}: float32, or "
            "mixed_bfloat16 for CPUs with AVX512_BF16/AMX and TPUs, or mixed_float16 for GPUs. "
            f"Received: precision={precision!r}"
        )
    return precision


@contextlib.contextmanager
def precision_scope(precision: str = "float32"):
    """Builds the layers created inside it in `precision`, then restores the global policy.

    Args:
        precision: One of `"float32"`, `"mixed_bfloat16"` or `"mixed_float16"`.
            Defaults to `"float32"`.

    Raises:
        ValueError: If `precision` is not one of those.

    Example:
        >>> with precision_scope("mixed_bfloat16"):
        ...     model = build_model("vgg16", num_classes=3, image_size=64, weights=None)
    """
    check_precision(precision)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def warn_if_xla_is_slow(model: keras.Model, jit_compile) -> None:
    """Warns when XLA would run a bfloat16 model on a CPU: it is several times slower there.

    XLA's CPU backend does not use oneDNN's bfloat16 (AVX512_BF16/AMX) kernels; measured on
    VGG16 at 128 px, bfloat16 with XLA ran 9 times slower than without it.
    """
    import tensorflow as tf

    if (
        jit_compile is True
        and model.dtype_policy.compute_dtype == "bfloat16"
        and not tf.config.list_physical_devices("GPU")
    ):
        warnings.warn(
            "jit_compile=True with mixed_bfloat16 on a CPU is slow: XLA does not use the CPU's "
            "bfloat16 instructions. Leave jit_compile at 'auto' (off on a CPU) to use them. "
            "Received: jit_compile=True",
            stacklevel=3,
        )
