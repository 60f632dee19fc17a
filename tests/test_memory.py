"""Many runs in one process: what TensorFlow keeps of each run is released."""

import keras
import numpy as np

from tlkeras.memory import CUSTOM_GRADIENT_PREFIX, _gradient_registry, forget_traced_gradients


def custom_gradients(names):
    return {name for name in names if name.startswith(CUSTOM_GRADIENT_PREFIX)}


def test_a_run_forgets_its_gradient_registrations_and_its_model_still_trains():
    registry = _gradient_registry()
    assert registry is not None, "TensorFlow moved its gradient registry: see tlkeras.memory"
    before = set(registry)
    x, y = np.random.default_rng(0).normal(size=(8, 4)), np.arange(8) % 2
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    with forget_traced_gradients():
        model.fit(x, y, epochs=1, verbose=0)
        assert custom_gradients(set(registry) - before)  # What used to keep the model alive.
    assert not custom_gradients(set(registry) - before)
    loss = model.fit(x, y, epochs=2, verbose=0).history["loss"]
    assert np.isfinite(loss).all()
