"""Feeding the images of a data folder to Keras with tf.data.

`load_data` runs the pre-scan (`tlkeras.scan.scan_dataset`: every file is decoded once, bad
ones are skipped and listed) and returns a `Data` object whose `dataset(split)` method builds
the input pipeline:

    file paths -> parallel Pillow decoding -> cache in memory (when it fits) -> shuffle
    (train only) -> batch -> augmentation (train only, optional) -> prefetch

Images are decoded by `tlkeras.images.load_image`, the function `predict` and `evaluate` use,
inside tf.data's parallel map, so a picture becomes the same pixels on every path. After the
first epoch the decoded images come from the in-memory cache. A file that breaks after the
pre-scan (deleted, or rewritten while training runs) is skipped with a warning, so a run
never stops mid-epoch because of a file.

Training reads `Data.epoch_dataset`, whose order depends only on `(seed, epoch)` so that a
resumed run sees the batches an uninterrupted one would. When the images fit in a quarter of
the available memory (`CACHE_MEMORY_FRACTION`) they are decoded once; otherwise every epoch
decodes them as it reads them, and no step holds a whole split in memory.

See `tlkeras.scan` for the folder layouts.

Example:
    >>> data = load_data("data_samples/digits", image_size=32, batch_size=32, seed=0)
    >>> data.class_names[:3]
    ['0', '1', '2']
    >>> train_ds = data.dataset("train", augment="light")
"""

from __future__ import annotations

import dataclasses
import functools
import os
import warnings

import keras
import numpy as np
import tensorflow as tf

from tlkeras.augment import augmentation_layer, epoch_augmentation, get_augmentation
from tlkeras.errors import UsageError
from tlkeras.images import _check_image_size, load_image, load_images
from tlkeras.memory import available_memory

# Re-exported: the folder layout used to live in this module.
from tlkeras.scan import (  # noqa: F401
    SPLIT_FOLDERS,
    ImageFolder,
    ScanReport,
    Split,
    find_split_folders,
    scan_class_folders,
    scan_dataset,
    split_by_seed,
)

CACHE_MEMORY_FRACTION = 0.25
"""Decoded images are kept in memory when they take at most this fraction of the memory
available (`tlkeras.memory.available_memory`)."""


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int = 0,
) -> tf.data.Dataset:
    """Wraps decoded images (and labels) in a batched, prefetched `tf.data.Dataset`.

    Args:
        images: uint8 array `(num_images, height, width, 3)`.
        labels: Integer labels, or `None` for a dataset of images alone.
        batch_size: Images per batch. Defaults to 32.
        shuffle: Reshuffle every epoch (training only). Defaults to False, so the order is
            the order of `images`.
        seed: Shuffle seed. Defaults to 0.

    Returns:
        A dataset of float32 pixel batches in [0, 255] (with int32 labels when given).
    """
    _check_batch_size(batch_size)
    elements = images if labels is None else (images, labels)
    dataset = tf.data.Dataset.from_tensor_slices(elements)
    if shuffle:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    return dataset.map(_to_float, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _check_batch_size(batch_size) -> None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise UsageError(f"batch_size must be a positive int. Received: batch_size={batch_size!r}")


def _to_float(images, *rest):
    return (tf.cast(images, tf.float32), *rest)


def _read_or_skip(path: bytes, height: int, width: int):
    """Decodes one file for tf.data; a file that fails gives `ok=False` instead of an error."""
    path = os.fsdecode(path)
    try:
        return load_image(path, (height, width)), np.bool_(True)
    except Exception as error:  # Any failure here would otherwise end the whole run.
        warnings.warn(
            f"Skipped {path!r} during training: it could not be read although the pre-scan "
            f"read it (was it changed or deleted?). {error}",
            RuntimeWarning,
            stacklevel=1,
        )
        return np.zeros((height, width, 3), np.uint8), np.bool_(False)


def _decode(path, label, *, image_size):
    height, width = image_size
    image, ok = tf.numpy_function(
        functools.partial(_read_or_skip, height=height, width=width),
        [path],
        [tf.uint8, tf.bool],
        stateful=False,
    )
    image.set_shape((height, width, 3))
    ok.set_shape(())
    return image, label, ok


def _was_read(image, label, ok):
    return ok


def _without_flag(image, label, ok):
    return image, label


def make_file_dataset(
    paths,
    labels,
    *,
    image_size,
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int = 0,
    cache: bool = True,
    augment=None,
) -> tf.data.Dataset:
    """Builds the tf.data pipeline that reads image files for `model.fit` and `evaluate`.

    Files are decoded with `tlkeras.images.load_image` in tf.data's parallel map. A file
    that cannot be read is skipped with a warning and the next readable file of `paths`
    takes its place, so the dataset keeps its length (`len(paths)` images) and never raises
    because of a file. Run `tlkeras.scan.scan_dataset` first so that this never happens
    silently.

    Args:
        paths: Image file paths.
        labels: Integer labels, one per path.
        image_size: An int or `(height, width)` every image is resized to.
        batch_size: Images per batch. Defaults to 32.
        shuffle: Reshuffle every epoch (training only). Defaults to False: file order.
        seed: Shuffle seed. Defaults to 0.
        cache: Keep the decoded images in memory after the first pass, so every later pass
            (epoch) reads them from memory. Needs `len(paths) * height * width * 3` bytes.
            Defaults to True.
        augment: A Keras layer applied to each float32 batch with `training=True`
            (see `tlkeras.augment.build_augmentation`), or `None`. Defaults to None.

    Returns:
        A dataset of `(images, labels)` batches; images are float32 RGB in [0, 255].

    Example:
        >>> ds = make_file_dataset(["a.jpg", "b.png"], [0, 1], image_size=224, batch_size=2)
    """
    _check_batch_size(batch_size)
    height, width = _check_image_size(image_size)
    paths = [os.fsencode(os.fspath(p)) for p in paths]  # bytes: any file name survives
    labels = np.asarray(labels, dtype="int32")
    if len(paths) != len(labels):
        raise UsageError(
            f"Got {len(paths)} paths but {len(labels)} labels; give one label per file. "
            f"Received: num_labels={len(labels)}"
        )
    read = functools.partial(
        _read_or_substitute, paths=paths, labels=labels, height=height, width=width
    )

    def decode(index):
        image, label = tf.numpy_function(read, [index], [tf.uint8, tf.int32], stateful=False)
        return tf.ensure_shape(image, (height, width, 3)), tf.ensure_shape(label, ())

    dataset = tf.data.Dataset.range(len(paths))
    buffer = max(1, len(paths))  # The whole split: a full shuffle.
    if shuffle and not cache:  # Shuffle the files, not a buffer of decoded images.
        dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        # Nothing after the cache cuts a pass short, so the first pass fills it completely
        # and every later one reads memory (a pass stopped early leaves TensorFlow's cache
        # unfinished, and the next one would decode every file again).
        dataset = dataset.cache()
        if shuffle:
            dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size).map(_to_float, num_parallel_calls=tf.data.AUTOTUNE)
    if augment is not None:
        # Sequential, so the random transformations follow the seed exactly.
        dataset = dataset.map(lambda images, y: (augment(images, training=True), y))
    return dataset.prefetch(tf.data.AUTOTUNE)


def _read_or_substitute(index, *, paths, labels, height: int, width: int):
    """Decodes file `index` for tf.data; if it fails, the next readable file takes its place.

    Returns:
        `(image, label)` of the file read: uint8 `(height, width, 3)` and int32.
    """
    index = int(index)
    for step in range(len(paths)):
        position = (index + step) % len(paths)
        try:
            image = load_image(os.fsdecode(paths[position]), (height, width))
        except Exception as error:  # Any failure here would otherwise end the whole run.
            if step == 0:
                problem = error
            continue
        if step:
            instead = f"{os.fsdecode(paths[position])!r} takes its place"
            _warn_skipped(paths[index], problem, instead)
        return image, labels[position]
    _warn_skipped(paths[index], problem, "no file of its split can be read: a black image")
    return np.zeros((height, width, 3), np.uint8), labels[index]


def _warn_skipped(path: bytes, error: Exception, instead: str) -> None:
    warnings.warn(
        f"Skipped {os.fsdecode(path)!r} during training: it could not be read although the "
        f"pre-scan read it (was it changed or deleted?); {instead}. {error}",
        RuntimeWarning,
        stacklevel=1,
    )


CLASS_WEIGHT_MODES = ("none", "balanced")


def check_class_weight(mode: str | None) -> str:
    """Returns `mode` (`None` read as `"none"`), or raises ValueError for an unknown one."""
    mode = "none" if mode is None else mode
    if mode not in CLASS_WEIGHT_MODES:
        raise UsageError(
            f"class_weight must be one of {CLASS_WEIGHT_MODES}: 'balanced' weighs each class "
            f"by the inverse of its size. Received: class_weight={mode!r}"
        )
    return mode


def memory_budget() -> int:
    """Bytes of decoded images `load_data` keeps in memory: a quarter of the available memory.

    The available memory is `tlkeras.memory.available_memory`'s, so a container's limit
    counts, not the host's RAM (8 GiB when it cannot be told).
    """
    available = available_memory()
    return int((8 * 2**30 if available is None else available) * CACHE_MEMORY_FRACTION)


@dataclasses.dataclass
class Data:
    """The usable images of a data folder, ready for training and evaluation.

    Attributes:
        folder: The usable files per split (`report.folder`).
        class_names: Sorted class names; label `i` means `class_names[i]`.
        image_size: `(height, width)` the images are resized to.
        batch_size: Images per batch in the datasets this object makes.
        seed: Seed used for splitting, shuffling and augmentation.
        report: The pre-scan `ScanReport` (skipped and ignored files, counts, warnings).
        cache: Whether `dataset` caches decoded images in memory; by default True when all
            splits fit in `memory_budget()`.
    """

    folder: ImageFolder
    class_names: list[str]
    image_size: tuple[int, int]
    batch_size: int
    seed: int
    report: ScanReport | None = None
    cache: bool = True

    def dataset(
        self,
        split: str = "train",
        *,
        shuffle: bool | None = None,
        augment=None,
        cache: bool | None = None,
    ) -> tf.data.Dataset:
        """A tf.data pipeline over one split (see `make_file_dataset`).

        Args:
            split: `"train"`, `"val"` or `"test"` (when the folder has one).
            shuffle: Reshuffle every epoch. Defaults to True for `"train"` only.
            augment: Augmentation for the training split only: `"none"`, `"light"`,
                `"strong"`, a `tlkeras.augment.Augmentation`, or a Keras layer. Defaults to
                None (no augmentation).
            cache: Keep the decoded images in memory after the first pass. Defaults to
                `self.cache`; pass False for a single pass, which has nothing to reuse.

        Returns:
            A dataset of `(images, labels)` batches; images are float32 RGB in [0, 255].

        Raises:
            ValueError: If the split does not exist, or augmentation is asked for a split
                other than `"train"` (evaluation and prediction never augment).
        """
        if split not in self.folder.splits:
            raise UsageError(
                f"This data has no {split!r} split; it has {sorted(self.folder.splits)}. "
                f"Received: split={split!r}"
            )
        layer = augmentation_layer(augment, seed=self.seed)
        if layer is not None and split != "train":
            raise UsageError(
                "Augmentation is for training only: evaluation and prediction must see the "
                "images as they are. Pass augment only with split='train'. "
                f"Received: split={split!r}"
            )
        files = self.folder.splits[split]
        return make_file_dataset(
            files.paths,
            files.labels,
            image_size=self.image_size,
            batch_size=self.batch_size,
            shuffle=split == "train" if shuffle is None else shuffle,
            seed=self.seed,
            cache=self.cache if cache is None else cache,
            augment=layer,
        )

    def epoch_dataset(
        self, split: str = "train", *, initial_epoch: int = 0, epochs: int = 1, augment=None
    ) -> tuple[tf.data.Dataset, int]:
        """Training batches in the `(seed, epoch)` order of `epoch_batches`, for a resumable fit.

        When the images fit in memory (`self.cache`), they are decoded once and each batch
        is gathered from the array (`epoch_dataset`). Otherwise they are decoded as they are
        read, in tf.data's parallel map (`epoch_file_dataset`), and memory holds a few
        batches whatever the size of the folder. Both give the same batches.

        Args:
            split: The split to train on. Defaults to `"train"`.
            initial_epoch: The first epoch (0-based) the dataset holds. Defaults to 0.
            epochs: The epoch to stop before, as in `model.fit`. Defaults to 1.
            augment: `None`, a preset name or an `Augmentation` (augmented by `(seed,
                epoch)`, exactly on resume), or a Keras layer; see `epoch_dataset`.

        Returns:
            `(dataset, steps_per_epoch)`, for `fit(..., steps_per_epoch=steps_per_epoch)`.

        Example:
            >>> train_ds, steps = data.epoch_dataset(initial_epoch=2, epochs=5)
        """
        options = dict(
            batch_size=self.batch_size,
            seed=self.seed,
            initial_epoch=initial_epoch,
            epochs=epochs,
            augment=augment,
        )
        if self.cache:
            return epoch_dataset(*self.arrays[split], **options)
        files = self.folder.splits[split]
        return epoch_file_dataset(files.paths, files.labels, image_size=self.image_size, **options)

    def class_weight(self, mode: str | None = "balanced") -> dict[int, float] | None:
        """Class weights for `model.fit(class_weight=...)`, from the training split.

        Args:
            mode: `"balanced"` weighs each class by `num_images / (num_classes *
                num_images_of_class)` (scikit-learn's formula), so every class counts as
                much in the loss; `"none"` or `None` returns `None`. Defaults to "balanced".

        Example:
            >>> data.class_weight("balanced")  # doctest: +SKIP
            {0: 0.6, 1: 3.0}
        """
        if check_class_weight(mode) == "none":
            return None
        from sklearn.utils.class_weight import compute_class_weight

        classes = np.arange(len(self.class_names))
        weights = compute_class_weight(
            "balanced", classes=classes, y=self.folder.splits["train"].labels
        )
        return {int(c): float(w) for c, w in zip(classes, weights, strict=True)}

    @functools.cached_property
    def arrays(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Every split decoded into `(images, labels)` numpy arrays (on first access).

        Holds all images in memory at once; `dataset` and `epoch_dataset` stream them
        instead when they do not fit (`Data.cache` is False).
        """
        return {
            name: (load_images(files.paths, self.image_size), files.labels)
            for name, files in self.folder.splits.items()
        }


def load_data(
    data_dir,
    *,
    image_size,
    batch_size: int = 32,
    validation_split: float = 0.2,
    seed: int = 0,
    strict: bool = False,
    verbose: bool = True,
) -> Data:
    """Pre-scans a data folder, splits it, and prepares its input pipelines.

    Every image is decoded once, in parallel, exactly as training will read it (see
    `tlkeras.scan.scan_dataset`). Unreadable or unsupported files are skipped and listed;
    files that are not images are ignored and listed.

    Args:
        data_dir: A folder of class folders, or of `train/`, `val/`, `test/` folders.
        image_size: An int or `(height, width)` the images are resized to.
        batch_size: Images per batch. Defaults to 32.
        validation_split: Held-out fraction when there is no `val/` folder. Defaults to 0.2.
        seed: Seed for the split, the shuffling and the augmentation. Defaults to 0.
        strict: Raise instead of skipping when a file cannot be read. Defaults to False.
        verbose: Print the pre-scan summary (counts, skipped files, warnings). Defaults to
            True.

    Returns:
        A `Data` object; `data.dataset("train")` and `data.dataset("val")` feed `model.fit`,
        and `data.report` is the pre-scan report.

    Raises:
        ValueError: For a folder that cannot be trained on (see `scan_dataset`), or, with
            `strict=True`, any unreadable file.

    Example:
        >>> data = load_data("data_samples/digits", image_size=32)
        >>> images, labels = next(iter(data.dataset("val")))
        >>> images.shape
        TensorShape([32, 32, 32, 3])
    """
    _check_batch_size(batch_size)
    size = _check_image_size(image_size)
    report = scan_dataset(data_dir, validation_split=validation_split, seed=seed, image_size=size)
    if verbose:
        print(report.summary())
    if strict:
        report.raise_if_bad_files()
    folder = report.folder
    num_images = sum(len(files) for files in folder.splits.values())
    cache = num_images * size[0] * size[1] * 3 <= memory_budget()
    return Data(folder, folder.class_names, size, batch_size, seed, report, cache)


def sample_per_class(data_dir, out_dir, *, num_per_class: int, seed: int = 0) -> str:
    """Copies a few labelled images per class into `out_dir/train/`, the rest into `test/`.

    Handy for "what if I only had N labelled images?" experiments, such as recovering from a
    domain shift with a handful of target images.

        out_dir/
            train/<class_name>/   num_per_class images per class, picked by seed
            test/<class_name>/    every other image

    Args:
        data_dir: A folder of class folders.
        out_dir: Where to write the two splits; it must not exist yet.
        num_per_class: Training images per class.
        seed: Which images are picked. Defaults to 0.

    Returns:
        `out_dir`, ready for `load_data` (train is split again for validation).

    Example:
        >>> sample_per_class("data_samples/day_night/night", "runs/night_5", num_per_class=5)
    """
    import shutil

    if os.path.exists(out_dir):
        raise UsageError(
            f"{out_dir!r} already exists. Pass a new folder so no images get mixed in. "
            f"Received: out_dir={out_dir!r}"
        )
    split, class_names = scan_class_folders(data_dir)
    rng = np.random.default_rng(seed)
    for label, name in enumerate(class_names):
        members = np.flatnonzero(split.labels == label)
        if len(members) <= num_per_class:
            raise UsageError(
                f"Class {name!r} has {len(members)} images, so {num_per_class} for training "
                f"would leave none to test on. Received: num_per_class={num_per_class!r}"
            )
        chosen = set(rng.choice(members, size=num_per_class, replace=False).tolist())
        for index in members:
            target = os.path.join(out_dir, "train" if index in chosen else "test", name)
            os.makedirs(target, exist_ok=True)
            shutil.copy2(split.paths[index], target)
    return os.fspath(out_dir)


def epoch_batches(
    num_images: int,
    *,
    batch_size: int = 32,
    seed: int = 0,
    initial_epoch: int = 0,
    epochs: int = 1,
) -> tf.data.Dataset:
    """The shuffled batches of indices of each epoch, as `(epoch, indices)` pairs.

    Epoch `e` is `stateless_shuffle(range(num_images), seed=(seed, e))` cut into batches, so
    the order depends only on `(seed, e)`: a run resumed at epoch 5 sees the batches an
    uninterrupted run would. `epoch_dataset` gathers images with these indices, and
    `tlkeras.features.FeatureCache` gathers cached features with the same ones, so plain and
    cached training visit the images in the same order.

    Args:
        num_images: How many images the split has.
        batch_size: Indices per batch. Defaults to 32.
        seed: Shuffle seed. Defaults to 0.
        initial_epoch: The first epoch (0-based) the dataset holds. Defaults to 0.
        epochs: The epoch to stop before, as in `model.fit`. Defaults to 1.

    Returns:
        A `tf.data.Dataset` of `(epoch, indices)`: an int64 scalar and an int32 vector.

    Example:
        >>> [(int(e), i.tolist()) for e, i in epoch_batches(3, batch_size=2).as_numpy_iterator()]
        [(0, [2, 0]), (0, [1])]
    """
    _check_batch_size(batch_size)

    def one_epoch(epoch):
        order = epoch_order(num_images, seed=seed, epoch=epoch)
        batches = tf.data.Dataset.from_tensor_slices(order).batch(batch_size)
        return batches.map(lambda indices: (epoch, indices))

    return tf.data.Dataset.range(initial_epoch, epochs).flat_map(one_epoch)


def epoch_order(num_images: int, *, seed: int, epoch) -> tf.Tensor:
    """The order epoch `epoch` visits the images in: `stateless_shuffle` seeded `(seed, epoch)`."""
    return tf.random.experimental.stateless_shuffle(
        tf.range(num_images),
        seed=tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)]),
    )


def epoch_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int = 32,
    seed: int = 0,
    initial_epoch: int = 0,
    epochs: int = 1,
    augment=None,
) -> tuple[tf.data.Dataset, int]:
    """Shuffled training batches whose order in epoch `e` depends only on `(seed, e)`.

    `make_dataset(shuffle=True)` reshuffles from a hidden random state, so a run restarted at
    epoch 5 would see epoch 1's order again. Here the batches are those of `epoch_batches`, so a
    resumed run sees exactly the batches an uninterrupted run would. The dataset holds the
    epochs from `initial_epoch` to `epochs` one after the other; give `model.fit` the
    returned `steps_per_epoch`.

    Args:
        images: uint8 array `(num_images, height, width, 3)`.
        labels: Integer labels.
        batch_size: Images per batch. Defaults to 32.
        seed: Shuffle seed. Defaults to 0.
        initial_epoch: The first epoch (0-based) the dataset holds. Defaults to 0.
        epochs: The epoch to stop before, as in `model.fit`. Defaults to 1.
        augment: `None`, or the augmentation of each batch: a preset name or a
            `tlkeras.augment.Augmentation`, which gives every epoch its own layer seeded by
            `(seed, epoch)`, so a resumed run augments exactly as an uninterrupted one; or
            a Keras layer, applied with `training=True` to every epoch as it is (its random
            state is not part of a checkpoint). Defaults to None.

    Returns:
        `(dataset, steps_per_epoch)`: float32 pixel batches in [0, 255] with int32 labels,
        and the number of batches in one epoch.

    Example:
        >>> train_ds, steps = epoch_dataset(images, labels, batch_size=32, seed=0,
        ...                                 initial_epoch=3, epochs=10)
        >>> model.fit(train_ds, steps_per_epoch=steps, initial_epoch=3, epochs=10)
    """
    images, labels = tf.constant(images), tf.constant(labels, dtype=tf.int32)

    def gather(epoch, indices):
        return tf.cast(tf.gather(images, indices), tf.float32), tf.gather(labels, indices)

    def one_epoch(epoch):
        batches = epoch_batches(
            len(images), batch_size=batch_size, seed=seed, initial_epoch=epoch, epochs=epoch + 1
        )
        return batches.map(gather, num_parallel_calls=tf.data.AUTOTUNE)

    dataset = _epochs(one_epoch, augment, seed=seed, initial_epoch=initial_epoch, epochs=epochs)
    return dataset.prefetch(tf.data.AUTOTUNE), -(-len(images) // batch_size)


def _epochs(one_epoch, augment, *, seed: int, initial_epoch: int, epochs: int):
    """`one_epoch(epoch)` for every epoch from `initial_epoch` to `epochs`, one after another.

    Each epoch is augmented by its own layer (`tlkeras.augment.epoch_augmentation`), so its
    random transformations depend only on `(seed, epoch)`: a resumed run augments as an
    uninterrupted one. The augmentation runs in a sequential map, in batch order.
    """
    if augment is not None and not isinstance(augment, keras.layers.Layer):
        augment = augment if get_augmentation(augment).enabled else None
    if augment is None or isinstance(augment, keras.layers.Layer) or initial_epoch >= epochs:
        dataset = tf.data.Dataset.range(initial_epoch, epochs).flat_map(one_epoch)
        return dataset if augment is None else _augmented(dataset, augment)
    parts = []
    for epoch in range(initial_epoch, epochs):
        layer = epoch_augmentation(augment, seed=seed, epoch=epoch)
        parts.append(_augmented(one_epoch(tf.constant(epoch, tf.int64)), layer))
    return functools.reduce(tf.data.Dataset.concatenate, parts)


def _augmented(dataset: tf.data.Dataset, layer) -> tf.data.Dataset:
    return dataset.map(lambda images, labels: (layer(images, training=True), labels))


def epoch_file_dataset(
    paths,
    labels,
    *,
    image_size,
    batch_size: int = 32,
    seed: int = 0,
    initial_epoch: int = 0,
    epochs: int = 1,
    augment=None,
) -> tuple[tf.data.Dataset, int]:
    """`epoch_dataset` for files: the same batches, decoded as they are read.

    Each epoch visits the files in `epoch_order` and decodes them in tf.data's parallel map
    with `tlkeras.images.load_image`, so memory holds a few batches however many files
    there are. A file that breaks after the pre-scan is skipped with a warning and the
    epoch is topped up with the next file of its order, so every epoch keeps its length.

    Args:
        paths: Image file paths.
        labels: Integer labels, one per path.
        image_size: An int or `(height, width)` every image is resized to.
        batch_size, seed, initial_epoch, epochs, augment: As for `epoch_dataset`.

    Returns:
        `(dataset, steps_per_epoch)`: float32 pixel batches in [0, 255] with int32 labels,
        and the number of batches in one epoch.

    Example:
        >>> train_ds, steps = epoch_file_dataset(paths, labels, image_size=160, epochs=3)
    """
    _check_batch_size(batch_size)
    decode = functools.partial(_decode, image_size=_check_image_size(image_size))
    paths = tf.constant([os.fsencode(os.fspath(p)) for p in paths], tf.string)
    labels = tf.constant(np.asarray(labels, "int32"))
    num_images = len(labels)

    def one_epoch(epoch):
        order = epoch_order(num_images, seed=seed, epoch=epoch)
        files = tf.data.Dataset.from_tensor_slices(
            (tf.gather(paths, order), tf.gather(labels, order))
        )
        images = files.repeat().map(decode, num_parallel_calls=tf.data.AUTOTUNE)
        images = images.filter(_was_read).map(_without_flag).take(num_images).batch(batch_size)
        return images.map(_to_float, num_parallel_calls=tf.data.AUTOTUNE)

    dataset = _epochs(one_epoch, augment, seed=seed, initial_epoch=initial_epoch, epochs=epochs)
    return dataset.prefetch(tf.data.AUTOTUNE), -(-num_images // batch_size)
