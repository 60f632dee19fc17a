"""tlkeras.workarounds: each one still needed, and still reaching what it relies on.

When one of these fails after a TensorFlow or Keras upgrade, the upstream API moved or the
bug was fixed: read the reason in `tlkeras/workarounds.py` and remove or update that part.
The TFLite metadata route is checked by `tests/test_export.py` (every `.tflite` export).
"""

import os
import subprocess
import sys
import textwrap

import tensorflow as tf

from tlkeras.workarounds import CUSTOM_GRADIENT_PREFIX, tensorflow_gradient_registry


def test_the_gradient_registry_is_where_it_was_and_custom_gradients_still_fill_it():
    registry = tensorflow_gradient_registry()
    assert registry is not None, "TensorFlow moved its gradient registry"
    before = set(registry)

    @tf.custom_gradient
    def identity(x):
        return tf.identity(x), lambda upstream: upstream

    @tf.function
    def step(x):
        return identity(x)

    step(tf.constant(1.0))
    added = {name for name in set(registry) - before if name.startswith(CUSTOM_GRADIENT_PREFIX)}
    assert added, "tf.custom_gradient no longer registers CustomGradient-<n>: see workarounds"
    for name in added:
        del registry[name]


# Run in a fresh process: a multi-worker strategy must be made before any other TF work.
REDUCE_CHECK = textwrap.dedent(
    """
    import tensorflow as tf
    from tlkeras.workarounds import multi_worker_mirrored_strategy

    def calls(strategy):
        scalar = strategy.run(lambda: tf.constant(1.5))
        batch = strategy.run(lambda: (tf.ones((2, 3)), tf.ones((2,))))
        yield "scalar", lambda: strategy.reduce("MEAN", scalar, axis=0)
        yield "batch", lambda: strategy.reduce("SUM", batch, axis=0)

    def failures(strategy):
        failed = []
        for name, call in calls(strategy):
            try:
                call()
            except Exception:
                failed.append(name)
        return failed

    print("plain", failures(tf.distribute.MultiWorkerMirroredStrategy()))
    print("fixed", failures(multi_worker_mirrored_strategy()))
    """
)


def test_multi_worker_reduce_still_needs_the_workaround_and_the_workaround_works():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TF_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-c", REDUCE_CHECK],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(("plain", "fixed"))]
    # TensorFlow's own reduce fails on both calls Keras 3's fit makes (keras-team/keras#20585).
    # If this fails because "plain" is [], the bug is fixed upstream: remove the workaround.
    assert lines == ["plain ['scalar', 'batch']", "fixed []"], done.stdout + done.stderr
