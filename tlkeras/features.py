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
and keeps the *features* in memory, or in shard files on disk (`DiskArray`, read back a
batch at a time, so memory stays flat however large the cache) when the run's caches would
take more than the `cache_memory` budget (`tlkeras.memory.cache_budget`: by default 3% of
the available memory). `cached_datasets` hands `tlkeras.train.fit_stage` the top
and batches of those features; `end_to_end_model` is the same top fed by the bottom at every
step, for when nothing is cached. Both share every layer with the model, so training them
trains the model itself, preprocessing included.

One cache serves both stages (`RunCache`, which `tlkeras.train.train` uses): the bottom of
stage 2 runs once, and stage 1's pooled features are derived from its output by a pass of
the top blocks alone (`pooled_from_boundary`, `derive_features`), so the frozen blocks below
the boundary, most of the backbone, run once per image for the whole run.

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
import time

import keras
import numpy as np
import tensorflow as tf

from tlkeras.augment import augmentation_layer
from tlkeras.backbones import check_num_blocks, layer_blocks
from tlkeras.config import Stage
from tlkeras.data import Data, epoch_batches
from tlkeras.distribute import shard_by_data
from tlkeras.errors import DiskError, UsageError
from tlkeras.guards import kill_point
from tlkeras.memory import cache_budget
from tlkeras.model import backbone_of, get_base, strategy_scope
from tlkeras.precision import precision_scope
from tlkeras.quiet import progress_verbose
from tlkeras.scratch import make_scratch_folder, remove_scratch_folder

#: Where features can be kept: "auto" picks "memory" or "disk" from their size.
STORAGES = ("auto", "memory", "disk")


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
    pool = model.get_layer("pool")
    # Build the parts in the model's precision, so that Keras scales the loss under float16,
    # and in its strategy's scope, so that they train on the same devices.
    with precision_scope(model.dtype_policy.name), strategy_scope(model):
        if num_blocks == 0:
            bottom = keras.Model(model.input, pool.output, name="bottom")
            return bottom, keras.Model(pool.output, model.output, name="top")
        lower, upper = _cut_backbone(model, num_blocks)
        preprocess = keras.Model(model.input, model.get_layer("preprocess").output)
        head = keras.Model(pool.input, model.output, name="head")

        images = keras.Input(model.input.shape[1:], dtype=model.input.dtype, name="image")
        bottom = keras.Model(images, lower(preprocess(images), training=False), name="bottom")
        features = _boundary_input(upper)
        top = keras.Model(features, head(_InferenceMode(upper)(features)), name="top")
        return bottom, top


def _cut_backbone(model: keras.Model, num_blocks: int) -> tuple[keras.Model, keras.Model]:
    """The backbone's blocks below and from the N-th block from the top, as two models."""
    base = get_base(model)
    backbone = backbone_of(model)
    check_num_blocks(backbone, num_blocks)
    first = layer_blocks(backbone, base).index(backbone.block_names[-num_blocks])
    # Every block boundary cuts the graph (tests/test_backbones.py), so these build.
    boundary = base.input if first == 0 else base.layers[first].input
    lower = keras.Model(base.input, boundary, name="frozen_blocks")
    upper = keras.Model(boundary, base.output, name="trained_blocks")
    return lower, upper


def _boundary_input(upper: keras.Model):
    return keras.Input(upper.input.shape[1:], dtype=upper.input.dtype, name="features")


def pooled_from_boundary(model: keras.Model, num_blocks: int) -> keras.Model:
    """Maps the features at stage 2's boundary to stage 1's pooled features, in inference mode.

    With it, one cache serves both stages: the frozen part's output below the `num_blocks`
    top blocks is computed once, and stage 1's features are this cheap pass over it (the
    top blocks and the pooling), not a second pass of the whole backbone over the images.

    Example:
        >>> bottom, _ = split_model(model, num_blocks=1)
        >>> pooled = pooled_from_boundary(model, num_blocks=1)
        >>> # pooled(bottom(images)) equals split_model(model)[0](images)
    """
    pool = model.get_layer("pool")
    with precision_scope(model.dtype_policy.name), strategy_scope(model):
        _, upper = _cut_backbone(model, num_blocks)
        pooling = keras.Model(pool.input, pool.output, name="pooling")
        features = _boundary_input(upper)
        return keras.Model(features, pooling(_InferenceMode(upper)(features)), name="pooled")


def choose_storage(
    nbytes: int, storage: str = "auto", *, budget=None, available: int | None = None
) -> str:
    """Decides where features of `nbytes` bytes are kept: `"memory"` or `"disk"`.

    Args:
        nbytes: The size of the features (all the caches kept at once).
        storage: `"memory"` or `"disk"` are returned as they are; `"auto"` picks memory when
            the features fit in `budget`, else disk. Defaults to `"auto"`.
        budget: The `cache_memory` setting: a size (`"512MiB"`) or a share of the
            available memory (`"3%"`); see `tlkeras.memory.cache_budget`. Defaults to
            `tlkeras.memory.DEFAULT_CACHE_MEMORY`.
        available: Available memory in bytes, for a share; defaults to what
            `tlkeras.memory.available_memory` reports now.

    Returns:
        `"memory"` or `"disk"`.

    Example:
        >>> choose_storage(3 * 2**30, budget="50%", available=4 * 2**30)
        'disk'
    """
    if storage not in STORAGES:
        raise UsageError(
            f"Unknown feature storage {storage!r}. Expected one of {STORAGES}: auto decides "
            f"from the size of the features. Received: storage={storage!r}"
        )
    if storage != "auto":
        return storage
    return "memory" if nbytes <= cache_budget(budget, available=available) else "disk"


#: A disk cache is written in files of about this many bytes each.
SHARD_BYTES = 64 * 2**20


class DiskArray:
    """A `(passes, num_images, *feature_shape)` array kept in shard files, read a batch at a time.

    Rows are written with plain file writes and read back row by row at their offsets, so
    the process holds one batch whatever the size of the array: nothing is memory-mapped,
    and the operating system's page cache, not the process, keeps what it can of the files.
    Each access opens the shard files it needs and closes them again, so no file stays open
    however many shards there are (a 50 GiB cache is 800 of them). It supports the two
    accesses a `FeatureCache` makes: `array[p, start:stop] = rows` and `array[p, indices]`.

    Example:
        >>> array = DiskArray(tempfile.mkdtemp(), (1, 1000, 512), "float32")
        >>> array[0, 0:2] = np.ones((2, 512), "float32")
        >>> array[0, np.array([1, 0])].shape
        (2, 512)
    """

    def __init__(self, folder: str, shape, dtype, *, shard_bytes: int | None = None):
        self.folder, self.shape, self.dtype = folder, tuple(shape), np.dtype(dtype)
        self.row_shape = self.shape[2:]
        self.row_bytes = max(1, math.prod(self.row_shape) * self.dtype.itemsize)
        self.rows_per_shard = max(1, (shard_bytes or SHARD_BYTES) // self.row_bytes)
        self._written: set[tuple[int, int]] = set()

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def paths(self) -> list[str]:
        """The shard files written so far."""
        return [self._path(index, shard) for index, shard in sorted(self._written)]

    def _path(self, index: int, shard: int) -> str:
        return os.path.join(self.folder, f"pass{index}-{shard:05d}.bin")

    def __setitem__(self, key, rows) -> None:
        index, where = key
        rows = np.ascontiguousarray(rows, self.dtype)
        row = where.start
        while row < where.stop:
            shard, offset = divmod(row, self.rows_per_shard)
            count = min(where.stop - row, self.rows_per_shard - offset)
            mode = "r+b" if (index, shard) in self._written else "wb"
            with open(self._path(index, shard), mode) as f:
                f.seek(offset * self.row_bytes)
                f.write(rows[row - where.start : row - where.start + count].tobytes())
            self._written.add((index, shard))
            row += count

    def __getitem__(self, key) -> np.ndarray:
        index, indices = key
        shards, offsets = np.divmod(np.asarray(indices, "int64"), self.rows_per_shard)
        out = np.empty((len(shards), *self.row_shape), self.dtype)
        for shard in np.unique(shards).tolist():  # Each shard file once, then closed.
            with open(self._path(index, shard), "rb") as f:
                for position in np.flatnonzero(shards == shard).tolist():
                    f.seek(int(offsets[position]) * self.row_bytes)
                    out[position] = np.frombuffer(f.read(self.row_bytes), self.dtype).reshape(
                        self.row_shape
                    )
        return out

    def flush(self) -> None:
        """Nothing to do: every write has closed its file (kept for callers that flush)."""

    def close(self) -> None:
        """Nothing to do: no file stays open (kept for callers that close)."""


@dataclasses.dataclass
class FeatureCache:
    """The features of one split, computed once by the bottom of a split model.

    Use it as a context manager, or call `close()`, to delete a disk cache's files.

    Attributes:
        features: `(passes, num_images, *feature_shape)` array in the bottom's compute
            dtype (float32, bfloat16 or float16): a numpy array in memory, or a `DiskArray`
            in shard files on disk.
        labels: int32 labels `(num_images,)`, in the order of the features.
        storage: `"memory"` or `"disk"`.
        path: The folder of a disk cache's shard files, else None.
        seconds: How long computing the features took.
    """

    features: np.ndarray | DiskArray
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

    def dataset(self, *, batch_size: int, index: int = 0) -> tf.data.Dataset:
        """`(features, labels)` batches of pass `index` (the first by default), in image order."""
        indices = tf.data.Dataset.range(self.num_images).batch(batch_size)
        return self._gather(indices.map(lambda batch: (tf.constant(index, tf.int64), batch)))

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
            return self.features[epoch % self.passes, indices], self.labels[indices]

        def load(epoch, indices):
            features, labels = tf.numpy_function(gather, [epoch, indices], (dtype, tf.int32))
            return tf.ensure_shape(features, shape), tf.ensure_shape(labels, (None,))

        return batches.map(load).prefetch(tf.data.AUTOTUNE)

    def close(self) -> None:
        """Frees the features and deletes a disk cache's files."""
        if self.path is not None:
            self.features.close()
            remove_scratch_folder(self.path)
            self.path = None

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _forward_function(bottom: keras.Model):
    """`bottom` in inference mode, compiled once: numpy outputs of a batch of inputs."""
    if keras.backend.backend() != "tensorflow":  # Keras' own compiled predict step (jit).
        return lambda batch: np.asarray(bottom.predict_on_batch(np.asarray(batch)))
    # One graph for every batch size (the last batch is smaller): Keras' own predict
    # function would be traced twice, and a trace of a large backbone takes seconds.
    spec = tf.TensorSpec((None, *bottom.input.shape[1:]), tf.as_dtype(bottom.input.dtype))
    forward = tf.function(
        lambda batch: bottom(batch, training=False),
        input_signature=[spec],
        jit_compile=bottom.jit_compile,
    )
    return lambda batch: forward(batch).numpy()


def _describe_size(nbytes: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= size:
            return f"{nbytes / size:.1f} {unit}"
    return f"{nbytes} bytes"


def _allocate(shape, dtype, storage: str, directory) -> tuple[np.ndarray | DiskArray, str | None]:
    if storage == "memory":
        return np.empty(shape, dtype), None
    folder = make_scratch_folder("tlkeras-features-", directory)  # Killed runs': removed.
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    free = shutil.disk_usage(folder).free
    if nbytes > free:
        remove_scratch_folder(folder)
        raise DiskError(
            f"The features need {_describe_size(nbytes)} but {folder!r} has only "
            f"{_describe_size(free)} free. Point TMPDIR at a larger disk, use a smaller image "
            f"size, or train end to end with cache='off'. Received: nbytes={nbytes}"
        )
    return DiskArray(folder, shape, dtype), folder


def cache_features(
    bottom: keras.Model,
    data: Data,
    split: str = "train",
    *,
    passes: int = 1,
    augment=None,
    storage: str = "auto",
    directory=None,
    interrupt=None,
) -> FeatureCache:
    """Runs the frozen bottom of a split model once over a split's images, in batches.

    Progress is shown as it goes, and where the features are kept is printed first. If it
    stops (an error, Ctrl-C), nothing of the cache is kept: a disk cache's files go.

    Args:
        bottom: The first model `split_model` returns.
        data: The data from `tlkeras.load_data`; the images are decoded as they are read.
        split: `"train"`, `"val"` or `"test"`. Defaults to `"train"`.
        passes: How many passes over the images to cache. Only useful with `augment`: each
            pass then holds other random versions of the images. Defaults to 1.
        augment: Augmentation of the training images, as `Data.dataset` takes it (`"light"`,
            a `tlkeras.augment.Augmentation`, a Keras layer), or `None`. Defaults to `None`.
        storage: `"auto"`, `"memory"` or `"disk"`; see `choose_storage`. Defaults to `"auto"`.
        directory: Where a disk cache goes; defaults to the system's temporary folder
            (`TMPDIR`).
        interrupt: A `tlkeras.guards.StopOnInterrupt` in use, or None. After every batch
            it is asked whether Ctrl-C (or SIGTERM) came, and if so the pass stops with a
            `TrainingInterrupted` saying how far it got. Defaults to None.

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
    if split not in data.folder.splits:
        raise UsageError(
            f"This data has no {split!r} split; it has {sorted(data.folder.splits)}. "
            f"Received: split={split!r}"
        )
    if not isinstance(passes, int) or passes < 1:
        raise UsageError(f"passes must be a positive int. Received: passes={passes!r}")
    augment = augmentation_layer(augment, seed=data.seed)  # One layer: other draws each pass.

    def batches(index):  # One pass: nothing to reuse, so nothing is kept of the images.
        return data.dataset(split, shuffle=False, augment=augment, cache=False)

    num_images = len(data.folder.splits[split])
    return _run_over(bottom, batches, passes=passes, num_images=num_images, storage=storage,
                     directory=directory, what=f"{split} images", interrupt=interrupt)  # fmt: skip


def derive_features(
    part: keras.Model, features: FeatureCache, *, batch_size: int = 32, storage: str = "auto",
    interrupt=None,
) -> FeatureCache:  # fmt: skip
    """Runs `part` over every pass of cached features: features of features, computed once.

    Stage 1's pooled features come from stage 2's cached boundary features this way
    (`part` is `pooled_from_boundary`), which costs a pass of the top blocks, not of the
    whole backbone. `storage` and `interrupt` are as for `cache_features`.

    Example:
        >>> with cache_features(bottom, data, "train") as boundary:
        ...     pooled = derive_features(pooled_from_boundary(model, 1), boundary)
    """

    def batches(index):
        return features.dataset(batch_size=batch_size, index=index)

    what = "images, from their cached features"
    return _run_over(part, batches, passes=features.passes, num_images=features.num_images,
                     storage=storage, directory=None, what=what, interrupt=interrupt)  # fmt: skip


def _run_over(
    model, batches, *, passes, num_images, storage, directory, what, interrupt=None
) -> FeatureCache:
    """Runs `model` over `batches(index)` for each pass and keeps its outputs, with the labels.

    After every batch, `interrupt` (a `StopOnInterrupt`, or None) may stop it; whatever
    stops it, the features computed so far are deleted (a disk cache's files included).
    """
    feature_shape = tuple(model.output.shape[1:])
    dtype = tf.as_dtype(model.output.dtype).as_numpy_dtype
    shape = (passes, num_images, *feature_shape)
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    where = choose_storage(nbytes, storage)
    features, path = _allocate(shape, dtype, where, directory)
    labels = np.zeros(num_images, "int32")
    times = f"{passes} passes over " if passes > 1 else ""
    print(
        f"Caching features of {times}{num_images} {what} "
        f"({'x'.join(map(str, feature_shape))} {np.dtype(dtype).name} each, "
        f"{_describe_size(nbytes)}) {'in memory' if where == 'memory' else 'on disk in ' + path}"
    )
    verbose = progress_verbose(in_a_log=2)  # A moving bar, or one line in logs.
    progress = keras.utils.Progbar(passes * num_images, verbose=verbose, unit_name="image")
    forward = _forward_function(model)
    start = time.perf_counter()
    try:
        for index in range(passes):
            done = 0
            for batch, batch_labels in batches(index):
                out = forward(batch)
                features[index, done : done + len(out)] = out
                labels[done : done + len(out)] = batch_labels
                done += len(out)
                progress.add(len(out))
                if interrupt is not None:
                    interrupt.stop_if_requested(
                        f"while caching the features of {what}, after {index * num_images + done}"
                        f" of {passes * num_images} (the partial cache is deleted)"
                    )
    except BaseException:
        FeatureCache(features, labels, where, path).close()
        raise
    if where == "disk":
        features.flush()
    seconds = time.perf_counter() - start
    return FeatureCache(features, labels, where, path, seconds)


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


class RunCache:
    """One feature cache for both stages: the frozen part's output below stage 2's blocks.

    Stage 2 trains on these boundary features as they are. Stage 1 trains on pooled
    features derived from them (`pooled_from_boundary`: a pass of the top blocks over the
    cache), so the frozen blocks below the boundary run once per image for the whole run.
    The caches are computed when the first stage asks for them and deleted on `close()`.

    Args:
        model: A model from `tlkeras.build_model`.
        data: The data from `tlkeras.load_data`.
        num_blocks: The top blocks stage 2 unfreezes (0 when no stage 2 follows).

    Example:
        >>> with RunCache(model, data, num_blocks=1) as features:
        ...     fit_stage(model, data, stage=stage1, features=features)
        ...     fit_stage(model, data, stage=stage2, features=features)
    """

    def __init__(self, model: keras.Model, data: Data, *, num_blocks: int):
        self.model, self.data, self.num_blocks = model, data, num_blocks
        self.passes: int | None = None
        self.storage: str | None = None  # "memory" or "disk", for every cache of the run
        self.train: FeatureCache | None = None
        self.val: FeatureCache | None = None

    def serves(self, stage: Stage) -> bool:
        """Whether `stage` can train on this cache (its blocks lie above the boundary)."""
        passes = max(stage.augment_passes, 1)
        return stage.unfreeze in (0, self.num_blocks) and self.passes in (None, passes)

    def caches(self, stage: Stage, *, interrupt=None) -> tuple[FeatureCache, FeatureCache | None]:
        """The boundary features of the training and validation splits, computed once.

        `interrupt`, a `tlkeras.guards.StopOnInterrupt` or None, can stop the computation
        after any batch (see `cache_features`).
        """
        if self.train is None:
            bottom, _ = split_model(self.model, self.num_blocks)
            if stage.jit_compile != "auto":
                bottom.jit_compile = stage.jit_compile
            self.passes = max(stage.augment_passes, 1)
            self.storage = self._choose_storage(stage, bottom)
            options = dict(storage=self.storage, interrupt=interrupt)
            self.train = cache_features(bottom, self.data, "train", passes=self.passes,
                                        augment=stage.augment, **options)  # fmt: skip
            if "val" in self.data.folder.splits:
                self.val = cache_features(bottom, self.data, "val", **options)
        return self.train, self.val

    def _choose_storage(self, stage: Stage, bottom: keras.Model) -> str:
        """Memory or disk for all the run's caches at once, from their total size.

        That is the boundary features of every pass over the training images and of the
        validation images, plus stage 1's pooled features when stage 1 derives them.
        """
        splits = self.data.folder.splits
        images = self.passes * len(splits["train"]) + len(splits.get("val", ()))
        outputs = [bottom.output]
        if stage.unfreeze != self.num_blocks:  # Stage 1 derives its pooled features.
            outputs.append(self.model.get_layer("pool").output)
        nbytes = images * sum(
            math.prod(output.shape[1:]) * tf.as_dtype(output.dtype).size for output in outputs
        )
        storage = choose_storage(nbytes, stage.cache, budget=stage.cache_memory)
        if stage.cache == "auto" and storage == "disk":
            budget = cache_budget(stage.cache_memory)
            print(
                f"The features take {_describe_size(nbytes)}, more than the memory "
                f"--cache-memory {stage.cache_memory} allows ({_describe_size(budget)}), so "
                "they go to disk"
            )
        return storage

    def close(self) -> None:
        """Deletes the caches (a disk cache's files included)."""
        for cache in (self.train, self.val):
            if cache is not None:
                cache.close()
        self.train = self.val = self.passes = self.storage = None

    def __enter__(self) -> RunCache:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


@contextlib.contextmanager
def cached_datasets(
    model: keras.Model, data: Data, stage: Stage, features: RunCache | None = None, *,
    interrupt=None,
):  # fmt: skip
    """Caches the features below the stage's unfrozen blocks; yields what `fit` trains on.

    Args:
        model: A model from `tlkeras.build_model`, frozen and unfrozen for `stage`.
        data: The data from `tlkeras.load_data`; its batch size and seed are used.
        stage: The `tlkeras.config.Stage`: its `unfreeze` blocks and the head train, its
            epochs follow `tlkeras.data.epoch_dataset`'s `(seed, epoch)` order, and its
            `cache`, `augment`, `augment_passes` and `jit_compile` say how to cache.
        features: A `RunCache` that both stages share, or None for a cache of this stage
            alone. Stage 1 derives its features from it when it holds stage 2's boundary.
        interrupt: A `tlkeras.guards.StopOnInterrupt` that may stop the caching after any
            batch, or None (see `cache_features`).

    Yields:
        `(top, train_data, validation_data, steps_per_epoch)`; `validation_data` is `None`
        without a validation split. The caches of this stage alone are deleted afterwards.

    Example:
        >>> with cached_datasets(model, data, Stage(epochs=3, learning_rate=1e-3)) as fed:
        ...     top, train_ds, val_ds, steps = fed
    """
    with contextlib.ExitStack() as stack:
        if features is None or not features.serves(stage):
            features = stack.enter_context(RunCache(model, data, num_blocks=stage.unfreeze))
        train, val = features.caches(stage, interrupt=interrupt)
        if stage.unfreeze != features.num_blocks:  # Stage 1, from stage 2's boundary.
            part = pooled_from_boundary(model, features.num_blocks)
            if stage.jit_compile != "auto":
                part.jit_compile = stage.jit_compile
            options = dict(batch_size=data.batch_size, storage=features.storage)
            options.update(interrupt=interrupt)
            train = stack.enter_context(derive_features(part, train, **options))
            if val is not None:
                val = stack.enter_context(derive_features(part, val, **options))
        _, top = split_model(model, stage.unfreeze)
        kill_point("features_cached")
        validation = None
        if val is not None:
            validation = shard_by_data(val.dataset(batch_size=data.batch_size))
        train_data, steps = train.epoch_dataset(
            batch_size=data.batch_size,
            seed=data.seed,
            initial_epoch=stage.initial_epoch,
            epochs=stage.initial_epoch + stage.epochs,
        )
        yield top, shard_by_data(train_data), validation, steps
