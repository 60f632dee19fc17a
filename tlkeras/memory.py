"""Memory: how much is available, and keeping it flat when many runs train in one process.

`available_memory` tells `tlkeras.features` whether cached features fit in memory.

Two things make each run's model outlive it:

- Keras' global state (layer-name counters, the functional-API graph):
  `keras.utils.clear_session()` at the start of every run clears it.
- A TensorFlow leak that `clear_session` cannot reach. Keras' optimizer calls the
  distribution strategy's `all_reduce` in every traced training step, which uses
  `tf.custom_gradient`, which registers a gradient function in TensorFlow's process-wide
  gradient registry under a new name ("CustomGradient-<n>") and never removes it. That
  function holds the traced step's graph, and the graph holds every variable of the model and
  its optimizer, so each run leaked all of them (about 3 times the model's size with Adam;
  upstream: keras-team/keras#17458, tensorflow/tensorflow#61791). The registrations are only
  used while the step is being traced, so `forget_traced_gradients` drops the ones a run
  added once the run is over, and its memory is freed.

`tlkeras.train` does both; `benchmarks/memory_runs.py` prints the memory of 10 consecutive
runs.

Example:
    >>> for backbone in ("vgg16", "resnet50"):
    ...     keras.utils.clear_session()
    ...     with forget_traced_gradients():
    ...         model = build_model(backbone, num_classes=3, image_size=64, weights=None)
    ...         train_head(model, train_ds, val_ds, epochs=3)
"""

from __future__ import annotations

import contextlib
import os

CUSTOM_GRADIENT_PREFIX = "CustomGradient-"  # tensorflow/python/ops/custom_gradient.py


def available_memory() -> int | None:
    """Bytes of memory available now (Linux, with container limits), or None if unknown."""
    available = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError):
        pass
    try:  # cgroup v2: the container's limit minus what it already uses.
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            current = int(f.read())
        if limit != "max":
            available.append(int(limit) - current)
    except (OSError, ValueError):
        pass
    if not available:
        try:
            available.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, OSError, ValueError):
            return None
    return max(0, min(available))


def _gradient_registry() -> dict | None:
    """TensorFlow's gradient registry (a private dict), or None if it has moved."""
    try:
        from tensorflow.python.framework import ops
    except ImportError:
        return None
    registry = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)
    return registry if isinstance(registry, dict) else None


@contextlib.contextmanager
def forget_traced_gradients():
    """Drops the custom-gradient registrations made inside the block when it ends.

    Use it around (or as a decorator of) a whole training run. Models trained inside keep
    working afterwards (predict, evaluate, and fit, which retraces if it needs to); only
    TensorFlow's bookkeeping for tracing the old steps goes. If TensorFlow ever moves its
    registry, this does nothing.

    Example:
        >>> with forget_traced_gradients():
        ...     model.fit(train_ds, epochs=3)
    """
    registry = _gradient_registry()
    before = set(registry) if registry is not None else set()
    try:
        yield
    finally:
        if registry is not None:
            for name in set(registry) - before:
                if name.startswith(CUSTOM_GRADIENT_PREFIX):
                    del registry[name]
