"""Data augmentation with Keras preprocessing layers, for training only.

Augmentation randomly flips, rotates, zooms, shifts and changes the contrast of the training
images every epoch, so a small data set looks bigger. It runs in the training tf.data
pipeline (`Data.dataset("train", augment=...)`), never inside the saved model, so
evaluation and prediction always see the images as they are.

Presets (`augment="none" | "light" | "strong"`); any single setting can be overridden:

    setting       light         strong        meaning
    flip          horizontal    horizontal    keras.layers.RandomFlip mode
    rotation      0.05          0.15          fraction of a full turn: 0.05 is +-18 degrees
    zoom          0.1           0.25          +- fraction of the size
    translation   0.1           0.15          +- fraction of the height and width
    contrast      0.1           0.3           +- contrast factor

In training (`tlkeras.data.epoch_dataset`) every epoch gets its own layers, seeded by the
run's seed and the epoch (`epoch_augmentation`), so what epoch `e` draws depends only on
`(seed, e)`, and a resumed run augments exactly as one that never stopped.

Flips are horizontal only by default: many classes are not symmetric upside down, and some
not even left-right (digits, letters, road signs): use `flip="none"` for those.

Example:
    >>> aug = get_augmentation("light", flip="none")
    >>> train_ds = data.dataset("train", augment=aug)

`tlkeras.plots.preview_augmentation` draws a grid of augmented copies to check the settings.
"""

from __future__ import annotations

import dataclasses

from tlkeras.errors import UsageError, UsageTypeError

FLIP_MODES = ("none", "horizontal", "vertical", "horizontal_and_vertical")
_AMOUNTS = ("rotation", "zoom", "translation", "contrast")


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """The random transformations applied to training images; all zero means none.

    Attributes:
        flip: One of `FLIP_MODES`.
        rotation: Maximum rotation as a fraction of a full turn (0.1 is 36 degrees).
        zoom: Maximum zoom in or out, as a fraction of the image size (below 1).
        translation: Maximum shift, as a fraction of the height and of the width.
        contrast: Maximum contrast change factor.
    """

    flip: str = "none"
    rotation: float = 0.0
    zoom: float = 0.0
    translation: float = 0.0
    contrast: float = 0.0

    @property
    def enabled(self) -> bool:
        """True when at least one transformation is on."""
        return self.flip != "none" or any(getattr(self, name) for name in _AMOUNTS)


PRESETS = {
    "none": Augmentation(),
    "light": Augmentation("horizontal", rotation=0.05, zoom=0.1, translation=0.1, contrast=0.1),
    "strong": Augmentation("horizontal", rotation=0.15, zoom=0.25, translation=0.15, contrast=0.3),
}


def get_augmentation(
    augment="none",
    *,
    flip: str | None = None,
    rotation: float | None = None,
    zoom: float | None = None,
    translation: float | None = None,
    contrast: float | None = None,
) -> Augmentation:
    """Resolves a preset and overrides into a checked `Augmentation`.

    Args:
        augment: `"none"`, `"light"`, `"strong"` (see the module docstring) or an
            `Augmentation`. Defaults to "none".
        flip: Overrides the preset's flip: one of `FLIP_MODES`.
        rotation: Overrides the rotation, a fraction of a full turn in [0, 1].
        zoom: Overrides the zoom, in [0, 1).
        translation: Overrides the translation, in [0, 1].
        contrast: Overrides the contrast factor, in [0, 1].

    Returns:
        An `Augmentation`.

    Example:
        >>> get_augmentation("strong", rotation=0.0)
        Augmentation(flip='horizontal', rotation=0.0, zoom=0.25, translation=0.15, contrast=0.3)
    """
    if isinstance(augment, Augmentation):
        base = augment
    elif isinstance(augment, str) and augment in PRESETS:
        base = PRESETS[augment]
    else:
        raise UsageError(
            f"augment must be one of {tuple(PRESETS)} or an Augmentation. "
            f"Received: augment={augment!r}"
        )
    overrides = {
        "flip": flip,
        "rotation": rotation,
        "zoom": zoom,
        "translation": translation,
        "contrast": contrast,
    }
    result = dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})
    if result.flip not in FLIP_MODES:
        raise UsageError(f"flip must be one of {FLIP_MODES}. Received: flip={result.flip!r}")
    for name in _AMOUNTS:
        value = getattr(result, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageTypeError(f"{name} must be a number. Received: {name}={value!r}")
        upper, within = ("below 1", value < 1) if name == "zoom" else ("at most 1", value <= 1)
        if not (value >= 0 and within):
            raise UsageError(
                f"{name} must be a fraction from 0 (off) to {upper}, e.g. 0.1. "
                f"Received: {name}={value!r}"
            )
    return result


def build_augmentation(augmentation: Augmentation, *, seed: int | None = None):
    """Builds the Keras preprocessing layers of an `Augmentation`.

    The layers take float RGB batches in [0, 255] and keep that range. They transform only
    when called with `training=True`; `Data.dataset` does that for the training split.

    Args:
        augmentation: From `get_augmentation`.
        seed: Seed of the random transformations; `None` for unseeded.

    Returns:
        A `keras.Sequential` named `"augmentation"`, or `None` when nothing is enabled.

    Example:
        >>> layer = build_augmentation(get_augmentation("light"), seed=0)
        >>> augmented = layer(images, training=True)
    """
    if not augmentation.enabled:
        return None
    import keras  # Here, so that checking settings (get_augmentation) needs no TensorFlow.

    layers = keras.layers

    def seed_of(offset):
        return None if seed is None else seed + offset

    steps = []
    if augmentation.flip != "none":
        steps.append(layers.RandomFlip(augmentation.flip, seed=seed_of(1)))
    if augmentation.rotation:
        steps.append(layers.RandomRotation(augmentation.rotation, seed=seed_of(2)))
    if augmentation.zoom:
        steps.append(layers.RandomZoom(augmentation.zoom, seed=seed_of(3)))
    if augmentation.translation:
        shift = augmentation.translation
        steps.append(layers.RandomTranslation(shift, shift, seed=seed_of(4)))
    if augmentation.contrast:
        steps.append(
            layers.RandomContrast(augmentation.contrast, value_range=(0, 255), seed=seed_of(5))
        )
    return keras.Sequential(steps, name="augmentation")


def augmentation_layer(augment, *, seed: int | None = None):
    """Turns what a user passed as `augment` into a layer, or `None` for no augmentation.

    Accepts `None`, a preset name, an `Augmentation` or a ready Keras layer (returned as is).
    """
    if augment is None:
        return None
    import keras

    if isinstance(augment, keras.layers.Layer):
        return augment
    return build_augmentation(get_augmentation(augment), seed=seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch `epoch`'s augmentation: a function of `(seed, epoch)` alone.

    Example:
        >>> epoch_seed(0, 3) == epoch_seed(0, 3) != epoch_seed(0, 4)
        True
    """
    import numpy as np

    # Below 2**31 - 8: build_augmentation adds up to 5, and Keras wants a 32-bit seed.
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] >> 2)


def epoch_augmentation(augment, *, seed: int, epoch: int):
    """The augmentation layer of one training epoch, or `None` for no augmentation.

    A preset name or an `Augmentation` gives a new layer seeded by `epoch_seed(seed,
    epoch)`, so the random transformations of epoch `e` depend only on `(seed, e)`, like
    the order of its images (`tlkeras.data.epoch_batches`): a run resumed at epoch 5
    augments epoch 5 exactly as a run that never stopped, with nothing to checkpoint. A
    ready Keras layer is returned as it is, for every epoch; its random state is its own
    and not part of a checkpoint.

    Args:
        augment: `None`, a preset name, an `Augmentation` or a Keras layer.
        seed: The run's seed.
        epoch: The epoch, 0-based, counted across both stages.

    Example:
        >>> layer = epoch_augmentation("light", seed=0, epoch=3)
    """
    if augment is None:
        return None
    import keras

    if isinstance(augment, keras.layers.Layer):
        return augment
    return build_augmentation(get_augmentation(augment), seed=epoch_seed(seed, epoch))
