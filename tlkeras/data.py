"""Finding images in a folder, splitting them, and feeding them to Keras with tf.data.

A data folder is laid out in one of two ways:

    data_dir/                      data_dir/
        cat/                           train/
            001.jpg                        cat/ 001.jpg ...
            002.png                        dog/ ...
        dog/                           val/          (optional; else split by seed)
            ...                            cat/ ...  dog/ ...
                                       test/         (optional)
                                           cat/ ...  dog/ ...

Class names are the class folder names sorted alphanumerically, the same order Keras'
`image_dataset_from_directory` uses; that order is saved with every trained model.

Images are decoded once with Pillow (`tlkeras.images.load_image`, the same function `predict`
and `evaluate` use), resized, and kept as uint8 arrays; tf.data then shuffles, batches and
prefetches them, so the training loop runs no Python per image.

Example:
    >>> data = load_data("data_samples/digits", image_size=32, batch_size=32, seed=0)
    >>> data.class_names[:3]
    ['0', '1', '2']
    >>> train_ds = data.dataset("train", shuffle=True)
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow as tf

from tlkeras.images import IMAGE_EXTENSIONS, load_images

SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "validation"), "test": ("test",)}


@dataclasses.dataclass
class Split:
    """The files of one split and their integer labels (indices into the class names)."""

    paths: list[str]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)


@dataclasses.dataclass
class ImageFolder:
    """A scanned data folder: class names and the files of each split.

    Attributes:
        root: The data folder.
        class_names: Sorted class names; label `i` means `class_names[i]`.
        splits: `"train"`, and `"val"` and `"test"` when present, mapped to a `Split`.
    """

    root: str
    class_names: list[str]
    splits: dict[str, Split]


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def _subfolders(folder: str) -> list[str]:
    return sorted(
        entry.name
        for entry in os.scandir(folder)
        if entry.is_dir() and not entry.name.startswith(".")
    )


def _expected_tree(data_dir) -> str:
    return (
        f"Expected {data_dir}/<class_name>/<image files>, one subfolder per class, or "
        f"{data_dir}/train/<class_name>/... with optional val/ and test/ beside it"
    )


def scan_class_folders(folder, class_names: list[str] | None = None) -> tuple[Split, list[str]]:
    """Lists the images in `folder/<class_name>/` for every class.

    Args:
        folder: A folder with one subfolder per class.
        class_names: The classes to expect; by default the sorted subfolder names.

    Returns:
        `(split, class_names)`.

    Raises:
        ValueError: If the folder is missing, has fewer than 2 class folders, a class has no
            images, or its classes differ from `class_names`.

    Example:
        >>> split, names = scan_class_folders("data_samples/digits")
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise ValueError(
            f"The data folder {folder!r} does not exist. {_expected_tree(folder)}. "
            f"Received: data_dir={folder!r}"
        )
    found = _subfolders(folder)
    if class_names is not None and found != list(class_names):
        raise ValueError(
            f"The class folders of {folder!r} differ from the training classes: expected "
            f"{list(class_names)} but found {found}. Give every split the same class folders. "
            f"Received: data_dir={folder!r}"
        )
    if len(found) < 2:
        raise ValueError(
            f"Found {len(found)} class folder(s) in {folder!r} ({found}), but a classifier needs "
            f"at least 2. {_expected_tree(folder)}. Received: data_dir={folder!r}"
        )
    paths, labels = [], []
    for label, name in enumerate(found):
        class_dir = os.path.join(folder, name)
        files = sorted(
            os.path.join(root, file)
            for root, _, files in os.walk(class_dir)
            for file in files
            if _is_image(file)
        )
        if not files:
            raise ValueError(
                f"Class folder {class_dir!r} holds no images. Allowed formats: "
                f"{', '.join(IMAGE_EXTENSIONS)}. Add images or remove the folder. "
                f"Received: class_name={name!r}"
            )
        paths += files
        labels += [label] * len(files)
    return Split(paths, np.asarray(labels, dtype="int32")), found


def split_by_seed(split: Split, *, validation_split: float, seed: int) -> tuple[Split, Split]:
    """Splits files into train and validation, stratified by class and reproducible by seed.

    Raises:
        ValueError: If `validation_split` is outside (0, 1) or leaves a class with no
            training or no validation image.
    """
    if not 0 < validation_split < 1:
        raise ValueError(
            "validation_split must be between 0 and 1 when the data folder has no val/ "
            f"subfolder. Received: validation_split={validation_split!r}"
        )
    rng = np.random.default_rng(seed)
    train_idx, val_idx = [], []
    for label in np.unique(split.labels):
        members = rng.permutation(np.flatnonzero(split.labels == label))
        num_val = round(len(members) * validation_split)
        if num_val < 1 or num_val >= len(members):
            raise ValueError(
                f"Class {int(label)} has {len(members)} image(s), too few to split "
                f"{validation_split:.0%} off for validation and keep the rest for training. "
                "Add images, change validation_split, or provide a val/ folder. "
                f"Received: validation_split={validation_split!r}"
            )
        val_idx += members[:num_val].tolist()
        train_idx += members[num_val:].tolist()

    def take(indices):
        indices = sorted(indices)
        return Split([split.paths[i] for i in indices], split.labels[indices])

    return take(train_idx), take(val_idx)


def find_split_folders(data_dir) -> dict[str, str]:
    """Maps `"train"`, `"val"`, `"test"` to their subfolders; empty for a plain class layout."""
    data_dir = os.fspath(data_dir)
    layout = {}
    for split, names in SPLIT_FOLDERS.items():
        for name in names:
            if os.path.isdir(os.path.join(data_dir, name)):
                layout.setdefault(split, os.path.join(data_dir, name))
    return layout if "train" in layout else {}


def scan_folder(data_dir, *, validation_split: float = 0.2, seed: int = 0) -> ImageFolder:
    """Finds the classes and splits of a data folder (see the module docstring for layouts).

    Args:
        data_dir: The data folder.
        validation_split: Fraction of each class held out for validation when there is no
            `val/` folder. Defaults to 0.2.
        seed: Seed of that split. Defaults to 0.

    Returns:
        An `ImageFolder`.

    Example:
        >>> folder = scan_folder("data_samples/digits", validation_split=0.2, seed=0)
        >>> len(folder.splits["train"]), len(folder.splits["val"])
        (1438, 359)
    """
    data_dir = os.fspath(data_dir)
    layout = find_split_folders(data_dir)
    if not layout:
        everything, class_names = scan_class_folders(data_dir)
        train, val = split_by_seed(everything, validation_split=validation_split, seed=seed)
        return ImageFolder(data_dir, class_names, {"train": train, "val": val})
    train, class_names = scan_class_folders(layout["train"])
    splits = {"train": train}
    for name in ("val", "test"):
        if name in layout:
            splits[name], _ = scan_class_folders(layout[name], class_names)
    if "val" not in splits:
        splits["train"], splits["val"] = split_by_seed(
            train, validation_split=validation_split, seed=seed
        )
    return ImageFolder(data_dir, class_names, splits)


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
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int. Received: batch_size={batch_size!r}")
    elements = images if labels is None else (images, labels)
    dataset = tf.data.Dataset.from_tensor_slices(elements)
    if shuffle:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    to_float = lambda x, *y: (tf.cast(x, tf.float32), *y)  # noqa: E731
    return dataset.map(to_float, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


@dataclasses.dataclass
class Data:
    """Decoded images of every split, ready for training and evaluation.

    Attributes:
        folder: The scanned `ImageFolder`.
        class_names: Sorted class names; label `i` means `class_names[i]`.
        image_size: `(height, width)` the images were resized to.
        batch_size: Images per batch in the datasets this object makes.
        seed: Seed used for splitting and shuffling.
        arrays: Split name mapped to `(images, labels)` numpy arrays.
    """

    folder: ImageFolder
    class_names: list[str]
    image_size: tuple[int, int]
    batch_size: int
    seed: int
    arrays: dict[str, tuple[np.ndarray, np.ndarray]]

    def dataset(self, split: str = "train", *, shuffle: bool | None = None) -> tf.data.Dataset:
        """A tf.data pipeline over one split; only `"train"` is shuffled by default."""
        if split not in self.arrays:
            raise ValueError(
                f"This data has no {split!r} split; it has {sorted(self.arrays)}. "
                f"Received: split={split!r}"
            )
        images, labels = self.arrays[split]
        shuffle = split == "train" if shuffle is None else shuffle
        return make_dataset(
            images, labels, batch_size=self.batch_size, shuffle=shuffle, seed=self.seed
        )


def load_data(
    data_dir,
    *,
    image_size,
    batch_size: int = 32,
    validation_split: float = 0.2,
    seed: int = 0,
) -> Data:
    """Scans a data folder, splits it and decodes every image once.

    Args:
        data_dir: A folder of class folders, or of `train/`, `val/`, `test/` folders.
        image_size: An int or `(height, width)` the images are resized to.
        batch_size: Images per batch. Defaults to 32.
        validation_split: Held-out fraction when there is no `val/` folder. Defaults to 0.2.
        seed: Seed for the split and the shuffling. Defaults to 0.

    Returns:
        A `Data` object; `data.dataset("train")` and `data.dataset("val")` feed `model.fit`.

    Example:
        >>> data = load_data("data_samples/digits", image_size=32)
        >>> images, labels = next(iter(data.dataset("val")))
        >>> images.shape
        TensorShape([32, 32, 32, 3])
    """
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    folder = scan_folder(data_dir, validation_split=validation_split, seed=seed)
    arrays = {
        name: (load_images(split.paths, size), split.labels)
        for name, split in folder.splits.items()
    }
    return Data(folder, folder.class_names, size, batch_size, seed, arrays)


def epoch_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int = 32,
    seed: int = 0,
    initial_epoch: int = 0,
    epochs: int = 1,
) -> tuple[tf.data.Dataset, int]:
    """Shuffled training batches whose order in epoch `e` depends only on `(seed, e)`.

    `make_dataset(shuffle=True)` reshuffles from a hidden random state, so a run restarted at
    epoch 5 would see epoch 1's order again. Here epoch `e` is always
    `stateless_shuffle(range(num_images), seed=(seed, e))`, so a resumed run sees exactly the
    batches an uninterrupted run would. The dataset holds the epochs from `initial_epoch` to
    `epochs` one after the other; give `model.fit` the returned `steps_per_epoch`.

    Args:
        images: uint8 array `(num_images, height, width, 3)`.
        labels: Integer labels.
        batch_size: Images per batch. Defaults to 32.
        seed: Shuffle seed. Defaults to 0.
        initial_epoch: The first epoch (0-based) the dataset holds. Defaults to 0.
        epochs: The epoch to stop before, as in `model.fit`. Defaults to 1.

    Returns:
        `(dataset, steps_per_epoch)`: float32 pixel batches in [0, 255] with int32 labels,
        and the number of batches in one epoch.

    Example:
        >>> train_ds, steps = epoch_dataset(images, labels, batch_size=32, seed=0,
        ...                                 initial_epoch=3, epochs=10)
        >>> model.fit(train_ds, steps_per_epoch=steps, initial_epoch=3, epochs=10)
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int. Received: batch_size={batch_size!r}")
    num_images = len(images)
    images, labels = tf.constant(images), tf.constant(labels, dtype=tf.int32)

    def one_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(num_images), seed=tf.stack([tf.constant(seed, tf.int64), epoch])
        )
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    def gather(indices):
        return tf.cast(tf.gather(images, indices), tf.float32), tf.gather(labels, indices)

    dataset = tf.data.Dataset.range(initial_epoch, epochs).flat_map(one_epoch)
    dataset = dataset.map(gather, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE), -(-num_images // batch_size)
