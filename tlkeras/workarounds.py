"""The only place tlkeras reaches past Keras' and TensorFlow's public APIs, and why.

Each workaround below has no public equivalent in the versions it was checked against
(TensorFlow 2.21.0, Keras 3.15.1), says which upstream bug or gap it covers, and has a test
that fails when an upgrade moves what it relies on, or fixes what it works around
(`tests/test_workarounds.py`; the TFLite metadata in `tests/test_export.py`). Everything else
in tlkeras uses public APIs only.

- `tensorflow_gradient_registry`: TensorFlow's process-wide gradient registry, which
  `tf.custom_gradient` fills and never empties (tensorflow/tensorflow#61791,
  keras-team/keras#17458); `tlkeras.memory.forget_traced_gradients` drops a run's entries.
  No public API removes a registered gradient.
- `multi_worker_mirrored_strategy`: `tf.distribute.MultiWorkerMirroredStrategy` with a
  `reduce` that takes the calls Keras 3's `fit` makes (keras-team/keras#20585). A subclass
  overriding a public method, not a patch.
- `add_tflite_metadata` / `read_tflite_metadata`: a named metadata entry in a `.tflite`
  flatbuffer, through TensorFlow's generated schema module and flatbuffer tool (not in its
  public API). TensorFlow has no public API to add metadata, and `tflite-support` (its
  metadata writer) is unmaintained since 2023. The labels file beside every export remains
  the source of truth (`tlkeras.export`).

Nothing here imports TensorFlow until it is used, so `tlkeras.memory` stays light.
"""

from __future__ import annotations

import functools
import inspect
import json

import numpy as np

#: The name `tf.custom_gradient` registers each gradient under, plus a number
#: (tensorflow/python/ops/custom_gradient.py, TensorFlow 2.21.0).
CUSTOM_GRADIENT_PREFIX = "CustomGradient-"


def tensorflow_gradient_registry() -> dict | None:
    """TensorFlow's gradient registry (a private dict), or None if it has moved.

    It lives in the module that defines the public `tf.RegisterGradient`
    (`_gradient_registry._registry`, TensorFlow 2.21.0), found from that class rather than
    imported by its private path.

    Example:
        >>> registry = tensorflow_gradient_registry()
        >>> any(name.startswith(CUSTOM_GRADIENT_PREFIX) for name in registry)  # doctest: +SKIP
        True
    """
    try:
        import tensorflow as tf
    except ImportError:
        return None
    ops = inspect.getmodule(getattr(tf, "RegisterGradient", None))
    registry = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)
    return registry if isinstance(registry, dict) else None


@functools.cache
def _strategy_class():
    import tensorflow as tf

    class _MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        """`MultiWorkerMirroredStrategy` with the two `reduce` calls Keras 3 makes working.

        Keras 3's `fit` on several workers (keras-team/keras#20585) asks `reduce` for (1) a
        whole `(images, labels)` batch at once, to learn its shapes, and (2) the mean "along
        axis 0" of each step's scalar loss and metrics. TensorFlow's multi-worker `reduce`
        (2.21.0) takes one value at a time and needs that axis to exist. Here each value is
        reduced in turn, and a scalar is averaged across replicas. Every worker makes the
        same calls, so the collective operations still match. The gradients are not
        affected: Keras all-reduces them itself.
        """

        def reduce(self, reduce_op, value, axis):
            reduce = super().reduce

            def reduce_one(one):
                is_scalar = self.experimental_local_results(one)[0].shape.rank == 0
                return reduce(reduce_op, one, None if is_scalar else axis)

            return tf.nest.map_structure(reduce_one, value)

    return _MultiWorkerMirroredStrategy


def multi_worker_mirrored_strategy():
    """A `tf.distribute.MultiWorkerMirroredStrategy` whose `reduce` works with Keras 3's `fit`.

    Its class is named `_MultiWorkerMirroredStrategy` (`tlkeras.distribute.describe` reports
    it as `MultiWorkerMirroredStrategy`).

    Example:
        >>> strategy = multi_worker_mirrored_strategy()  # doctest: +SKIP
    """
    return _strategy_class()()


def add_tflite_metadata(flatbuffer: bytes, name: str, metadata: dict) -> bytes:
    """Adds (or replaces) a metadata entry `name` holding UTF-8 JSON to a TFLite flatbuffer.

    Example:
        >>> data = add_tflite_metadata(data, "tlkeras", {"class_names": ["cat", "dog"]})
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    model.metadata = [m for m in model.metadata or [] if m.name != name.encode()]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata).encode("utf-8"), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)
    return flatbuffer_utils.convert_object_to_bytearray(model)


def read_tflite_metadata(data: bytes, name: str) -> dict | None:
    """The JSON metadata entry `name` of a TFLite flatbuffer, or None if it has none.

    Example:
        >>> read_tflite_metadata(data, "tlkeras")["class_names"]
        ['cat', 'dog']
    """
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(data, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() == name.encode():
            return json.loads(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes())
    return None
