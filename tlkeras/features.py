"""Feature extraction and caching: run the frozen part of the model once, keep its output.

In the plain recipe every epoch runs the whole frozen backbone over every image again,
though its output never changes. `split_model` cuts the model where its frozen part ends:

    stage 1 (the head trains):
        bottom: image -> Preprocess -> backbone -> GlobalAveragePooling    once per image
        top:    pooled features -> Dropout -> Dense -> Dropout -> Dense    every epoch

    stage 2 (VGG16 with block5 unfrozen, say):
        bottom: image -> Preprocess -> block1 ... block4                   once per image
        top:    block4's output -> block5 -> pooling and head              every epoch

`cache_features` runs the bottom once over the training and validation images, in batches,
and keeps the *features* in memory, or in a disk-backed array (a numpy memmap in a temporary
folder) when they would take more than half the memory available. `cached_datasets` hands
`tlkeras.train.fit_stage` the top and batches of those features; `end_to_end_model` is the
same top fed by the bottom at every step, for when nothing is cached. Both share every layer
with the model, so training them trains the model itself, preprocessing included.

This is exact, not an approximation: the frozen part runs in inference mode (BatchNorm uses
its moving statistics, dropout is off), so its output for an image never changes, and the
unfrozen blocks run in inference mode in both. The features are visited in the order
`tlkeras.data.epoch_dataset` visits the images (the same `(seed, epoch)` shuffle), so a
cached run follows the plain run's training path, and a resumed run an uninterrupted one.

With random augmentation the frozen part would see a different image every epoch, so one
cache is no longer exact: `Stage.augment_passes=K` caches K augmented versions of every
training image and epoch `e` trains on version `e mod K`; with 0, training runs end to end.

Example:
    >>> bottom, top = split_model(model, num_blocks=1)
    >>> with cache_features(bottom, data, "val") as features:
    ...     top.predict(features.dataset(batch_size=32))
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from tlkeras.augment import augmentation_layer
from tlkeras.backbones import check_num_blocks, layer_blocks
from tlkeras.config import Stage
from tlkeras.data import Data, epoch_batches
from tlkeras.distribute import shard_by_data
from tlkeras.guards import kill_point
from tlkeras.memory import available_memory
from tlkeras.model import backbone_of, get_base, strategy_scope
from tlkeras.precision import precision_scope
from tlkeras.quiet import progress_verbose

#: Where features can be kept: "auto" picks "memory" or "disk" from their size.
STORAGES = ("auto", "memory", "disk")
#: "auto" keeps features in memory when they take at most this fraction of the free memory.
MEMORY_FRACTION = 0.5


class _InferenceMode(keras.layers.Layer):
    """Calls a model with `training=False`, whatever `fit` passes.

    Keras 3 overrides a nested model's `training=False` with the outer call's `training`, so
    a Dropout layer inside a backbone (EfficientNet has them) would be active while training.
    The unfrozen blocks run in inference mode here, exactly like the frozen ones.
    """

    def __init__(self, model: keras.Model, **kwargs):
        super().__init__(dtype=model.dtype_policy, **kwargs)
        self.model = model
        self.built = True

    def call(self, inputs):
        return self.model(inputs, training=False)

    def compute_output_shape(self, input_shape):
        return self.model.compute_output_shape(input_shape)


def split_model(model: keras.Model, num_blocks: int = 0) -> tuple[keras.Model, keras.Model]:
    """Splits a model where its frozen part ends, sharing every layer with it.

    Args:
        model: A model from `tlkeras.build_model`.
        num_blocks: How many top blocks of the backbone will train. 0 cuts after the pooling
            layer (stage 1: the top is the head alone); N cuts at the input of the N-th block
            from the top (stage 2: the top is those blocks plus the head). Defaults to 0.

    Returns:
        `(bottom, top)`: `bottom` maps images (RGB in [0, 255]) to features, `top` maps
        features to class probabilities, and `top(bottom(images))` equals `model(images)`.

    Raises:
        ValueError: If `num_blocks` is negative or more than the backbone has.

    Example:
        >>> bottom, top = split_model(model, num_blocks=1)      # VGG16
        >>> bottom.output_shape                                 # block4's output at 128 px
        (None, 8, 8, 512)
    """
    base = get_base(model)
    pool = model.get_layer("pool")
    # Build the parts in the model's precision, so that Keras scales the loss under float16,
    # and in its strategy's scope, so that they train on the same devices.
    with precision_scope(model.dtype_policy.name), strategy_scope(model):
        if num_blocks == 0:
            bottom = keras.Model(model.input, pool.output, name="bottom")
            return bottom, keras.Model(pool.output, model.output, name="top")
        backbone = backbone_of(model)
        names = backbone.block_names
        check_num_blocks(backbone, num_blocks)
        first = layer_blocks(backbone, base).index(names[-num_blocks])
        # Every block boundary cuts the graph (tests/test_backbones.py), so these build.
        boundary = base.input if first == 0 else base.layers[first].input
        lower = keras.Model(base.input, boundary, name="frozen_blocks")
        upper = keras.Model(boundary, base.output, name="trained_blocks")
        preprocess = keras.Model(model.input, model.get_layer("preprocess").output)
        head = keras.Model(pool.input, model.output, name="head")

        images = keras.Input(model.input.shape[1:], dtype=model.input.dtype, name="image")
        bottom = keras.Model(images, lower(preprocess(images), training=False), name="bottom")
        features = keras.Input(boundary.shape[1:], dtype=boundary.dtype, name="features")
        top = keras.Model(features, head(_InferenceMode(upper)(features)), name="top")
        return bottom, top


def choose_storage(nbytes: int, storage: str = "auto", *, available: int | None = None) -> str:
    """Decides where features of `nbytes` bytes are kept: `"memory"` or `"disk"`.

    Args:
        nbytes: The size of the features.
        storage: `"memory"` or `"disk"` are returned as they are; `"auto"` picks memory when
            the features take at most half of the available memory, else disk. Defaults to
            `"auto"`.
        available: Available memory in bytes; defaults to what the system reports now (when
            it cannot tell, up to 1 GiB is kept in memory).

    Returns:
        `"memory"` or `"disk"`.

    Example:
        >>> choose_storage(3 * 2**30, available=4 * 2**30)
        'disk'
    """
    if storage not in STORAGES:
        raise ValueError(
            f"Unknown feature storage {storage!r}. Expected one of {STORAGES}: auto decides "
            f"from the size of the features. Received: storage={storage!r}"
        )
    if storage != "auto":
        return storage
    available = available_memory() if available is None else available
    if available is None:
        return "memory" if nbytes <= 2**30 else "disk"
    return "memory" if nbytes <= MEMORY_FRACTION * available else "disk"


@dataclasses.dataclass
class FeatureCache:
    """The features of one split, computed once by the bottom of a split model.

    Use it as a context manager, or call `close()`, to delete a disk cache's file.

    Attributes:
        features: `(passes, num_images, *feature_shape)` array, in memory or a numpy memmap,
            in the bottom's compute dtype (float32, bfloat16 or float16).
        labels: int32 labels `(num_images,)`, in the order of the images.
        storage: `"memory"` or `"disk"`.
        path: The file behind a disk cache, else None.
        seconds: How long computing the features took.
    """

    features: np.ndarray
    labels: np.ndarray
    storage: str
    path: str | None = None
    seconds: float = 0.0

    @property
    def num_images(self) -> int:
        return self.features.shape[1]

    @property
    def passes(self) -> int:
        return self.features.shape[0]

    @property
    def nbytes(self) -> int:
        return self.features.nbytes

    def dataset(self, *, batch_size: int) -> tf.data.Dataset:
        """`(features, labels)` batches of the first pass, in the order of the images."""
        indices = tf.data.Dataset.range(self.num_images).batch(batch_size)
        return self._gather(indices.map(lambda batch: (tf.constant(0, tf.int64), batch)))

    def epoch_dataset(
        self, *, batch_size: int, seed: int = 0, initial_epoch: int = 0, epochs: int = 1
    ) -> tuple[tf.data.Dataset, int]:
        """Shuffled training batches, epoch after epoch, like `tlkeras.data.epoch_dataset`.

        Epoch `e` visits the features in the order `epoch_dataset` visits the images (the
        same `(seed, e)` shuffle), and reads pass `e mod passes`. Only the indices go
        through tf.data; each batch is gathered from the array, so a disk cache is read a
        batch at a time and an in-memory one is never copied whole.

        Returns:
            `(dataset, steps_per_epoch)`, for `fit(..., steps_per_epoch=steps_per_epoch)`.
        """
        batches = epoch_batches(
            self.num_images,
            batch_size=batch_size,
            seed=seed,
            initial_epoch=initial_epoch,
            epochs=epochs,
        )
        return self._gather(batches), -(-self.num_images // batch_size)

    def _gather(self, batches: tf.data.Dataset) -> tf.data.Dataset:
        dtype = tf.as_dtype(self.features.dtype)
        shape = (None, *self.features.shape[2:])

        def gather(epoch, indices):
            return self.features[epoch % self.passes][indices], self.labels[indices]

        def load(epoch, indices):
            features, labels = tf.numpy_function(gather, [epoch, indices], (dtype, tf.int32))
            return tf.ensure_shape(features, shape), tf.ensure_shape(labels, (None,))

        return batches.map(load).prefetch(tf.data.AUTOTUNE)

    def close(self) -> None:
        """Frees the features and deletes a disk cache's file."""
        if self.path is not None:
            self.features = np.empty((0, 0), self.features.dtype)  # Drops the memmap.
            shutil.rmtree(os.path.dirname(self.path), ignore_errors=True)
            self.path = None

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _forward_function(bottom: keras.Model, image_shape):
    """`bottom` in inference mode, compiled once: numpy features of a batch of images."""
    if keras.backend.backend() != "tensorflow":  # Keras' own compiled predict step (jit).
        return lambda batch: np.asarray(bottom.predict_on_batch(np.asarray(batch)))
    # One graph for every batch size (the last batch is smaller): Keras' own predict
    # function would be traced twice, and a trace of a large backbone takes seconds.
    forward = tf.function(
        lambda batch: bottom(batch, training=False),
        input_signature=[tf.TensorSpec((None, *image_shape), tf.float32)],
        jit_compile=bottom.jit_compile,
    )
    return lambda batch: forward(batch).numpy()


def _describe_size(nbytes: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= size:
            return f"{nbytes / size:.1f} {unit}"
    return f"{nbytes} bytes"


def _allocate(shape, dtype, storage: str, directory) -> tuple[np.ndarray, str | None]:
    if storage == "memory":
        return np.empty(shape, dtype), None
    folder = tempfile.mkdtemp(prefix="tlkeras-features-", dir=directory)
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    free = shutil.disk_usage(folder).free
    if nbytes > free:
        shutil.rmtree(folder, ignore_errors=True)
        raise OSError(
            f"The features need {_describe_size(nbytes)} but {folder!r} has only "
            f"{_describe_size(free)} free. Point TMPDIR at a larger disk, use a smaller image "
            f"size, or train end to end with cache='off'. Received: nbytes={nbytes}"
        )
    path = os.path.join(folder, "features.npy")
    return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape), path


def cache_features(
    bottom: keras.Model,
    data: Data,
    split: str = "train",
    *,
    passes: int = 1,
    augment=None,
    storage: str = "auto",
    directory=None,
) -> FeatureCache:
    """Runs the frozen bottom of a split model once over a split's images, in batches.

    Progress is shown as it goes, and where the features are kept is printed first.

    Args:
        bottom: The first model `split_model` returns.
        data: Decoded images from `tlkeras.load_data`.
        split: `"train"`, `"val"` or `"test"`. Defaults to `"train"`.
        passes: How many passes over the images to cache. Only useful with `augment`: each
            pass then holds other random versions of the images. Defaults to 1.
        augment: Augmentation of the training images, as `Data.dataset` takes it (`"light"`,
            a `tlkeras.augment.Augmentation`, a Keras layer), or `None`. Defaults to `None`.
        storage: `"auto"`, `"memory"` or `"disk"`; see `choose_storage`. Defaults to `"auto"`.
        directory: Where a disk cache goes; defaults to the system's temporary folder
            (`TMPDIR`).

    Returns:
        A `FeatureCache`; close it (or use `with`) to delete a disk cache.

    Raises:
        ValueError: If the split does not exist, `passes` is not a positive int or `storage`
            is unknown.
        OSError: If a disk cache does not fit on the disk.

    Example:
        >>> bottom, top = split_model(model)
        >>> with cache_features(bottom, data, "val") as val_features:
        ...     top.predict(val_features.dataset(batch_size=32))
    """
    if split not in data.arrays:
        raise ValueError(
            f"This data has no {split!r} split; it has {sorted(data.arrays)}. "
            f"Received: split={split!r}"
        )
    if not isinstance(passes, int) or passes < 1:
        raise ValueError(f"passes must be a positive int. Received: passes={passes!r}")
    images, labels = data.arrays[split]
    feature_shape = tuple(bottom.output.shape[1:])
    dtype = tf.as_dtype(bottom.output.dtype).as_numpy_dtype
    shape = (passes, len(images), *feature_shape)
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    where = choose_storage(nbytes, storage)
    features, path = _allocate(shape, dtype, where, directory)
    times = f"{passes} passes over " if passes > 1 else ""
    print(
        f"Caching features of {times}{len(images)} {split} images "
        f"({'x'.join(map(str, feature_shape))} {np.dtype(dtype).name} each, "
        f"{_describe_size(nbytes)}) {'in memory' if where == 'memory' else 'on disk at ' + path}"
    )
    verbose = progress_verbose(in_a_log=2)  # A moving bar, or one line in logs.
    progress = keras.utils.Progbar(passes * len(images), verbose=verbose, unit_name="image")
    forward = _forward_function(bottom, images.shape[1:])
    augment = augmentation_layer(augment, seed=data.seed)  # One layer: other draws each pass.
    start = time.perf_counter()
    try:
        for index in range(passes):
            done = 0
            for batch, _ in data.dataset(split, shuffle=False, augment=augment):
                out = forward(batch)
                features[index, done : done + len(out)] = out
                done += len(out)
                progress.add(len(out))
    except BaseException:
        FeatureCache(features, labels, where, path).close()
        raise
    if isinstance(features, np.memmap):
        features.flush()
    seconds = time.perf_counter() - start
    return FeatureCache(features, np.asarray(labels, "int32"), where, path, seconds)


def end_to_end_model(model: keras.Model, num_blocks: int = 0) -> keras.Model:
    """The model `fit` trains when nothing is cached: `top(bottom(images))`.

    It shares every layer with `model`, and runs the frozen bottom (and the unfrozen blocks
    of the top) in inference mode, exactly as training on cached features does, so the two
    give the same result on every backbone, EfficientNet's dropout included.

    Example:
        >>> trained = end_to_end_model(model, num_blocks=1)
        >>> trained.fit(train_ds, epochs=1)   # trains model's block5 and head
    """
    bottom, top = split_model(model, num_blocks)
    with precision_scope(model.dtype_policy.name), strategy_scope(model):
        images = keras.Input(model.input.shape[1:], dtype=model.input.dtype, name="image")
        return keras.Model(images, top(_InferenceMode(bottom)(images)), name="end_to_end")


@contextlib.contextmanager
def cached_datasets(model: keras.Model, data: Data, stage: Stage):
    """Caches the features below the stage's unfrozen blocks; yields what `fit` trains on.

    Args:
        model: A model from `tlkeras.build_model`, frozen and unfrozen for `stage`.
        data: Decoded images from `tlkeras.load_data`; its batch size and seed are used.
        stage: The `tlkeras.config.Stage`: its `unfreeze` blocks and the head train, its
            epochs follow `tlkeras.data.epoch_dataset`'s `(seed, epoch)` order, and its
            `cache`, `augment`, `augment_passes` and `jit_compile` say how to cache.

    Yields:
        `(top, train_data, validation_data, steps_per_epoch)`; `validation_data` is `None`
        without a validation split. The caches are deleted afterwards.

    Example:
        >>> with cached_datasets(model, data, Stage(epochs=3, learning_rate=1e-3)) as fed:
        ...     top, train_ds, val_ds, steps = fed
    """
    bottom, top = split_model(model, stage.unfreeze)
    if stage.jit_compile != "auto":
        bottom.jit_compile = stage.jit_compile
    storage, augment = stage.cache, stage.augment
    with contextlib.ExitStack() as stack:
        train = stack.enter_context(
            cache_features(
                bottom,
                data,
                "train",
                passes=max(stage.augment_passes, 1),
                augment=augment,
                storage=storage,
            )
        )
        validation = None
        if "val" in data.arrays:
            val = stack.enter_context(cache_features(bottom, data, "val", storage=storage))
            validation = shard_by_data(val.dataset(batch_size=data.batch_size))
        kill_point("features_cached")
        train_data, steps = train.epoch_dataset(
            batch_size=data.batch_size,
            seed=data.seed,
            initial_epoch=stage.initial_epoch,
            epochs=stage.initial_epoch + stage.epochs,
        )
        yield top, shard_by_data(train_data), validation, steps
