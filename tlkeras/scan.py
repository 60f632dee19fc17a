"""Finding the images of a data folder and checking every one of them before training.

A data folder is laid out in one of two ways:

    data_dir/                      data_dir/
        cat/                           train/
            001.jpg                        cat/ 001.jpg ...
            002.png                        dog/ ...
        dog/                           val/          (optional; else split by seed)
            ...                            cat/ ...  dog/ ...
                                       test/         (optional)
                                           cat/ ...  dog/ ...

The right-hand layout needs `train/` with `val/` and/or `test/` beside it (or `train/`
alone); a `train/` among other class folders is a class (bus, car, train), not a split.
Class names are the class folder names sorted alphanumerically, the same order Keras'
`image_dataset_from_directory` uses; that order is saved with every trained model. Images
may sit in subfolders of a class folder. Hidden files and folders (names starting with a
dot, such as `.DS_Store` or `.ipynb_checkpoints/`) are never read as images.

`scan_dataset` is the one way to split a folder: the pre-scan `train` runs before any
training. It lists the files by extension, decodes every image in parallel threads exactly
as training will read it, drops the unreadable ones, and only then holds out the validation
images by seed. It returns a `ScanReport` listing the unreadable or unsupported files
(skipped, each with its reason), the files that are not images (ignored), and the number of
usable images per class and split. A trained run records that split
(`checkpoint/split.json`); evaluation and export read the record instead of splitting again.
`scan_class_folders` lists one folder of class folders by extension, opening no file.

Example:
    >>> report = scan_dataset("data_samples/digits", validation_split=0.2, seed=0)
    >>> report.counts["val"]["3"]
    37
    >>> print(report.summary())  # doctest: +SKIP
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import time
from typing import NamedTuple

import numpy as np

from tlkeras.errors import UsageError, UsageTypeError
from tlkeras.images import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    _check_image_size,
    load_image,
    verify_image,
)

SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "validation"), "test": ("test",)}

# fmt: off
UNSUPPORTED_EXTENSIONS: tuple[str, ...] = (
    ".heic", ".heif", ".avif", ".jxl", ".jp2", ".jfif", ".jpe", ".ico", ".tga", ".pbm", ".pgm",
    ".ppm", ".pnm", ".psd", ".svg", ".raw", ".dng", ".cr2", ".nef", ".arw",
)

# fmt: on
"""Extensions of picture files that tlkeras does not read: reported as bad, not ignored."""

IMBALANCE_RATIO = 5.0
"""A warning is given when a class has more than this many times the images of another."""

SCAN_REPORT_FILE = "scan_report.json"
"""File name of the pre-scan report in a run folder."""

_CHUNK = 64  # images checked per thread task: few futures, even on a million files


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


class FileProblem(NamedTuple):
    """A file that was skipped or ignored, and why."""

    path: str
    reason: str


# --------------------------------------------------------------------------------------------
# Listing folders and files.


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _subfolders(folder: str) -> list[str]:
    return sorted(
        entry.name for entry in os.scandir(folder) if entry.is_dir() and not _hidden(entry.name)
    )


def _expected_tree(data_dir) -> str:
    return (
        f"Expected {data_dir}/<class_name>/<image files>, one subfolder per class, or "
        f"{data_dir}/train/<class_name>/... with optional val/ and test/ beside it"
    )


def _check_data_dir(data_dir) -> str:
    if isinstance(data_dir, bytes) or not isinstance(data_dir, (str, os.PathLike)):
        raise UsageTypeError(
            "data_dir must be a folder path given as a str or pathlib.Path. "
            f"Received: data_dir={data_dir!r}"
        )
    data_dir = os.fspath(data_dir)
    if not os.path.isdir(data_dir):
        what = "is a file, not a folder" if os.path.isfile(data_dir) else "does not exist"
        raise UsageError(
            f"The data folder {data_dir!r} {what}. {_expected_tree(data_dir)}. "
            f"Received: data_dir={data_dir!r}"
        )
    return data_dir


def list_class_folders(folder, class_names: list[str] | None = None) -> list[str]:
    """Returns the sorted class folder names of `folder`, checking there are at least 2.

    Args:
        folder: A folder with one subfolder per class.
        class_names: The classes to expect (e.g. those of `train/` when listing `val/`).

    Raises:
        ValueError: If the folder is missing, has no class folders or only one, or its
            classes differ from `class_names`.

    Example:
        >>> list_class_folders("data_samples/day_night/day")
        ['bus', 'car', 'truck']
    """
    folder = _check_data_dir(folder)
    found = _subfolders(folder)
    if class_names is not None and found != list(class_names):
        missing = sorted(set(class_names) - set(found))
        extra = sorted(set(found) - set(class_names))
        raise UsageError(
            f"The class folders of {folder!r} differ from the training classes "
            f"{list(class_names)}: missing {missing}, unexpected {extra}. Give train/, val/ "
            f"and test/ the same class folders. Received: data_dir={folder!r}"
        )
    if not found:
        loose = sum(1 for entry in os.scandir(folder) if _has_image_extension(entry.name))
        hint = (
            f" It holds {loose} image file(s) directly: move each class's images into a "
            "subfolder named after the class."
            if loose
            else ""
        )
        raise UsageError(
            f"The data folder {folder!r} has no class folders.{hint} {_expected_tree(folder)}. "
            f"Received: data_dir={folder!r}"
        )
    if len(found) == 1:
        raise UsageError(
            f"The data folder {folder!r} has only one class folder ({found[0]!r}), but a "
            f"classifier needs at least 2 classes. Add a folder of images for every other "
            f"class. {_expected_tree(folder)}. Received: data_dir={folder!r}"
        )
    return found


def _has_image_extension(name: str) -> bool:
    return not _hidden(name) and name.lower().endswith(IMAGE_EXTENSIONS)


def _list_class_files(class_dir: str) -> tuple[list[str], list[FileProblem], list[FileProblem]]:
    """Returns `(image files, unsupported files, ignored files)` under a class folder."""
    images, unsupported, ignored = [], [], []
    for root, dirs, files in os.walk(class_dir):
        for name in [d for d in dirs if _hidden(d)]:
            dirs.remove(name)
            ignored.append(FileProblem(os.path.join(root, name), "hidden folder, not read"))
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            extension = os.path.splitext(name)[1].lower()
            if _has_image_extension(name):
                images.append(path)
            elif extension in UNSUPPORTED_EXTENSIONS and not _hidden(name):
                unsupported.append(
                    FileProblem(
                        path,
                        f"unsupported image format {extension}; convert it to one of "
                        f"{', '.join(IMAGE_EXTENSIONS)}",
                    )
                )
            else:
                ignored.append(FileProblem(path, _ignored_reason(name)))
    return images, unsupported, ignored


def _ignored_reason(name: str) -> str:
    if _hidden(name):
        return "hidden file, not read"
    extension = os.path.splitext(name)[1]
    return f"not an image file ({extension or 'no extension'})"


def _loose_files(folder: str, keep: tuple[str, ...] = ()) -> list[FileProblem]:
    """Files (and non-class folders) lying beside the class or split folders: ignored."""
    problems = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name in keep:
            continue
        if entry.is_dir():
            if _hidden(entry.name):
                problems.append(FileProblem(entry.path, "hidden folder, not read"))
            elif keep:  # beside train/ val/ test/, another folder is not a split
                problems.append(
                    FileProblem(entry.path, "folder beside train/, not a split, not read")
                )
        else:
            reason = (
                "image outside any class folder, not used"
                if _has_image_extension(entry.name)
                else _ignored_reason(entry.name)
            )
            problems.append(FileProblem(entry.path, reason))
    return problems


def _list_folder(folder: str, class_names):
    """Lists one folder of class folders.

    Returns:
        `(class_names, image files per class, unsupported files, ignored files)`.
    """
    class_names = list_class_folders(folder, class_names)
    per_class, unsupported, ignored = {}, [], _loose_files(folder)
    for name in class_names:
        images, more_unsupported, more_ignored = _list_class_files(os.path.join(folder, name))
        per_class[name] = images
        unsupported += more_unsupported
        ignored += more_ignored
    return class_names, per_class, unsupported, ignored


def scan_class_folders(folder, class_names: list[str] | None = None) -> tuple[Split, list[str]]:
    """Lists the images in `folder/<class_name>/` for every class, by file extension.

    The files are not opened; use `scan_dataset` to check that each one decodes.

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
    found, per_class, _, _ = _list_folder(os.fspath(folder), class_names)
    for name, files in per_class.items():
        if not files:
            raise UsageError(
                f"Class folder {os.path.join(os.fspath(folder), name)!r} holds no images. "
                f"Allowed formats: {', '.join(IMAGE_EXTENSIONS)}. Add images or remove the "
                f"folder. Received: class_name={name!r}"
            )
    return _as_split(per_class), found


def _as_split(per_class: dict[str, list[str]]) -> Split:
    """The files of every class in one `Split`, labelled by class order."""
    paths = [path for files in per_class.values() for path in files]
    labels = [label for label, files in enumerate(per_class.values()) for _ in files]
    return Split(paths, np.asarray(labels, dtype="int32"))


def split_by_seed(
    split: Split, *, validation_split: float, seed: int, class_names: list[str] | None = None
) -> tuple[Split, Split]:
    """Splits files into train and validation, stratified by class and reproducible by seed.

    Each class keeps `round(num_images * validation_split)` images for validation.

    Args:
        split: The files to split.
        validation_split: Fraction of each class held out, strictly between 0 and 1.
        seed: Seed of the random choice.
        class_names: Used in error messages only.

    Raises:
        ValueError: If `validation_split` is outside (0, 1) or leaves a class with no
            training or no validation image.
    """
    if not 0 < validation_split < 1:
        raise UsageError(
            "validation_split must be between 0 and 1 when the data folder has no val/ "
            f"subfolder. Received: validation_split={validation_split!r}"
        )
    rng = np.random.default_rng(seed)
    train_idx, val_idx = [], []
    for label in np.unique(split.labels):
        members = rng.permutation(np.flatnonzero(split.labels == label))
        num_val = round(len(members) * validation_split)
        if num_val < 1 or num_val >= len(members):
            name = repr(class_names[label]) if class_names else int(label)
            raise UsageError(
                f"Class {name} has {len(members)} usable image(s), too few to hold out "
                f"{validation_split:.0%} for validation and keep the rest for training. Add "
                "images, change validation_split, or provide a val/ folder. "
                f"Received: validation_split={validation_split!r}"
            )
        val_idx += members[:num_val].tolist()
        train_idx += members[num_val:].tolist()

    def take(indices):
        indices = sorted(indices)
        return Split([split.paths[i] for i in indices], split.labels[indices])

    return take(train_idx), take(val_idx)


def find_split_folders(data_dir) -> dict[str, str]:
    """Maps `"train"`, `"val"`, `"test"` to their subfolders; empty for a class folder layout.

    A split layout is `train/` holding class folders, with `val/` (or `validation/`) and/or
    `test/` beside it, or alone. A `train/` among other folders is a class named "train"
    (classes bus, car, train), so that folder is a class folder layout.

    Example:
        >>> find_split_folders("data/vehicles")  # bus/ car/ train/
        {}
    """
    data_dir = os.fspath(data_dir)
    layout = {}
    for split, names in SPLIT_FOLDERS.items():
        for name in names:
            if os.path.isdir(os.path.join(data_dir, name)):
                layout.setdefault(split, os.path.join(data_dir, name))
    if "train" not in layout or not _subfolders(layout["train"]):
        return {}
    alone = _subfolders(data_dir) == [os.path.basename(layout["train"])]
    return layout if len(layout) > 1 or alone else {}


# --------------------------------------------------------------------------------------------
# Checking that every image decodes.


def _check_one(path: str, image_size) -> str | None:
    """Returns why `path` cannot be read (as training would read it), or None."""
    try:
        if image_size is None:
            return verify_image(path)
        load_image(path, image_size)
    except FileNotFoundError:
        return "file not found"
    except ImageReadError as error:
        return error.reason
    except Exception as error:  # A decoder bug on a crafted file must not stop the scan.
        return f"unexpected decoding error ({type(error).__name__}: {error})"
    return None


def _check_num_workers(num_workers) -> int:
    if num_workers is None:
        return min(32, (os.cpu_count() or 1) + 4)  # threads also hide slow disks
    if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 1:
        raise UsageError(
            f"num_workers must be a positive int or None. Received: num_workers={num_workers!r}"
        )
    return num_workers


def check_images(paths, *, image_size=None, num_workers: int | None = None) -> dict[str, str]:
    """Decodes every file in parallel threads and returns the ones that fail, with reasons.

    Args:
        paths: Image file paths.
        image_size: When given (an int or `(height, width)`), each file is read exactly as
            training reads it, `tlkeras.images.load_image(path, image_size)`, which lets large
            JPEGs decode at a reduced scale. When `None`, each file is fully decoded at its
            own size (`tlkeras.images.verify_image`). Defaults to None.
        num_workers: Decoding threads; `None` uses the number of CPUs plus 4, at most 32.
            Pillow releases the GIL while it decodes, so threads run in parallel.

    Returns:
        `{path: reason}` for each file that cannot be read; empty when all are fine.

    Example:
        >>> check_images(["cat.jpg", "notes.jpg"])  # doctest: +SKIP
        {'notes.jpg': 'not an image, or a format Pillow cannot identify (...)'}
    """
    paths = [os.fspath(p) for p in paths]
    workers = _check_num_workers(num_workers)

    def check_chunk(chunk):
        return [_check_one(path, image_size) for path in chunk]

    chunks = [paths[i : i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    if workers == 1 or len(chunks) <= 1:
        reasons = [reason for chunk in chunks for reason in check_chunk(chunk)]
    else:
        with concurrent.futures.ThreadPoolExecutor(
            workers, thread_name_prefix="tlkeras-scan"
        ) as pool:
            reasons = [reason for result in pool.map(check_chunk, chunks) for reason in result]
    return {path: reason for path, reason in zip(paths, reasons, strict=True) if reason}


def drop_unreadable(
    split: Split, *, image_size=None, num_workers: int | None = None
) -> tuple[Split, list[FileProblem]]:
    """Checks the files of a split and returns `(usable files, skipped files)`.

    Example:
        >>> usable, skipped = drop_unreadable(split, image_size=224)  # doctest: +SKIP
    """
    bad = check_images(split.paths, image_size=image_size, num_workers=num_workers)
    keep = [i for i, path in enumerate(split.paths) if path not in bad]
    usable = Split([split.paths[i] for i in keep], split.labels[keep])
    return usable, [FileProblem(path, reason) for path, reason in bad.items()]


def imbalance_warnings(counts: dict[str, int], *, ratio: float = IMBALANCE_RATIO) -> list[str]:
    """Warns when the largest class has more than `ratio` times the images of the smallest.

    Example:
        >>> imbalance_warnings({"cat": 60, "dog": 10})
        ["Class imbalance: 'cat' has 60 training images, 6.0x as many as 'dog' (10). ..."]
    """
    if len(counts) < 2:
        return []
    largest = max(counts, key=counts.get)
    smallest = min(counts, key=counts.get)
    if counts[largest] <= ratio * counts[smallest]:
        return []
    factor = counts[largest] / max(counts[smallest], 1)
    return [
        f"Class imbalance: {largest!r} has {counts[largest]} training images, {factor:.1f}x as "
        f"many as {smallest!r} ({counts[smallest]}). The model may learn to favour the large "
        "classes: train with class_weight='balanced' (--class-weight balanced) or add images "
        "of the small ones."
    ]


# --------------------------------------------------------------------------------------------
# The pre-scan and its report.


@dataclasses.dataclass
class ScanReport:
    """What the pre-scan found in a data folder.

    Attributes:
        folder: The usable files, per split and class (unreadable files removed).
        bad_files: Unreadable or unsupported files, skipped, each with its reason.
        ignored_files: Files that are not images (and hidden or stray folders), ignored.
        warnings: Other problems worth knowing, such as class imbalance.
        num_checked: How many image files were decoded.
        image_size: The `(height, width)` files were decoded at, or `None` for full size.
        seconds: How long the scan took.
    """

    folder: ImageFolder
    bad_files: list[FileProblem]
    ignored_files: list[FileProblem]
    warnings: list[str]
    num_checked: int
    image_size: tuple[int, int] | None
    seconds: float

    @property
    def class_names(self) -> list[str]:
        return self.folder.class_names

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        """Usable images per split and class, e.g. `{"train": {"cat": 40, "dog": 38}}`."""
        return {
            split: {
                name: int(np.sum(files.labels == label))
                for label, name in enumerate(self.class_names)
            }
            for split, files in self.folder.splits.items()
        }

    def to_dict(self) -> dict:
        """The report as JSON-ready data (what `save` writes)."""
        return {
            "data_dir": self.folder.root,
            "class_names": list(self.class_names),
            "counts": self.counts,
            "num_images": {split: len(files) for split, files in self.folder.splits.items()},
            "bad_files": [problem._asdict() for problem in self.bad_files],
            "ignored_files": [problem._asdict() for problem in self.ignored_files],
            "warnings": list(self.warnings),
            "num_checked": self.num_checked,
            "image_size": list(self.image_size) if self.image_size else None,
            "seconds": round(self.seconds, 3),
        }

    def save(self, path) -> None:
        """Writes the report as JSON (atomically), e.g. `run_dir/scan_report.json`."""
        from tlkeras.files import atomic_write

        atomic_write(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")

    def raise_if_bad_files(self) -> None:
        """Strict mode: raises ValueError naming the first bad files, if there are any."""
        if not self.bad_files:
            return
        shown = "; ".join(f"{p.path}: {p.reason}" for p in self.bad_files[:3])
        more = f" and {len(self.bad_files) - 3} more" if len(self.bad_files) > 3 else ""
        raise UsageError(
            f"Found {len(self.bad_files)} unreadable or unsupported file(s) in "
            f"{self.folder.root!r}: {shown}{more}. Fix or remove them (`python -m tlkeras scan "
            f"{self.folder.root}` lists them all), or turn strict mode off to skip them. "
            "Received: strict=True"
        )

    def summary(self, *, max_rows: int = 30) -> str:
        """A readable summary: the count table, then skipped and ignored files, then warnings.

        Args:
            max_rows: At most this many classes and this many files per list are shown; the
                JSON report (`to_dict`, `save`) always holds everything.
        """
        counts = self.counts
        splits = list(counts)
        total = sum(len(files) for files in self.folder.splits.values())
        how = (
            f"decoded at {self.image_size[0]}x{self.image_size[1]}"
            if self.image_size
            else "fully decoded"
        )
        lines = [
            f"Scanned {self.folder.root!r} in {self.seconds:.1f} s: {self.num_checked} image "
            f"files {how}; {total} usable images in {len(self.class_names)} classes."
        ]
        width = max(len(name) for name in [*self.class_names[:max_rows], "class", "total"]) + 2
        lines.append(f"  {'class':<{width}}" + "".join(f"{s:>8}" for s in splits))
        for name in self.class_names[:max_rows]:
            lines.append(f"  {name:<{width}}" + "".join(f"{counts[s][name]:>8}" for s in splits))
        if len(self.class_names) > max_rows:
            lines.append(f"  ... {len(self.class_names) - max_rows} more classes")
        lines.append(
            f"  {'total':<{width}}" + "".join(f"{sum(counts[s].values()):>8}" for s in splits)
        )
        lines += _listing(
            self.bad_files,
            f"Skipped {len(self.bad_files)} unreadable or unsupported file(s); fix or remove "
            "them (strict mode fails instead):",
            max_rows,
        )
        lines += _listing(
            self.ignored_files,
            f"Ignored {len(self.ignored_files)} file(s) that are not images:",
            max_rows,
        )
        lines += [f"Warning: {warning}" for warning in self.warnings]
        return "\n".join(lines)


def _listing(problems: list[FileProblem], title: str, max_rows: int) -> list[str]:
    if not problems:
        return []
    lines = [title] + [f"  {p.path}: {p.reason}" for p in problems[:max_rows]]
    if len(problems) > max_rows:
        lines.append(f"  ... and {len(problems) - max_rows} more (see the JSON report)")
    return lines


def _usable_split(folder: str, per_class: dict, bad: dict, ignored) -> Split:
    """Drops the bad files; raises when a class is left with no usable image."""
    usable = {}
    for name, files in per_class.items():
        usable[name] = [path for path in files if path not in bad]
        if not usable[name]:
            inside = os.path.join(folder, name) + os.sep
            problems = [FileProblem(p, r) for p, r in bad.items() if p.startswith(inside)]
            problems += [p for p in ignored if p.path.startswith(inside)]
            found = "; ".join(f"{os.path.basename(p.path)}: {p.reason}" for p in problems[:3])
            raise UsageError(
                f"Class {name!r} has no usable images in {inside!r}"
                + (f" ({found}{'; ...' if len(problems) > 3 else ''})" if problems else "")
                + f". Every class needs images in one of {', '.join(IMAGE_EXTENSIONS)}: add "
                f"some or remove the folder. Received: class_name={name!r}"
            )
    return _as_split(usable)


def scan_dataset(
    data_dir,
    *,
    validation_split: float = 0.2,
    seed: int = 0,
    image_size=None,
    num_workers: int | None = None,
) -> ScanReport:
    """The pre-scan: lists a data folder, decodes every image, and reports what it found.

    Unreadable and unsupported files are skipped and listed with their reason, so training
    never meets them; files that are not images are ignored and listed too. Call
    `report.raise_if_bad_files()` to fail instead (strict mode).

    Args:
        data_dir: A folder of class folders, or of `train/`, `val/` (and `test/`) folders
            (see the module docstring).
        validation_split: Fraction of each class held out for validation when there is no
            `val/` folder; taken after the bad files are dropped. Defaults to 0.2.
        seed: Seed of that split. Defaults to 0.
        image_size: An int or `(height, width)`: decode each file exactly as training will
            (faster for large JPEGs). `None` decodes every file at full size. Defaults to None.
        num_workers: Decoding threads; `None` uses the number of CPUs plus 4, at most 32.

    Returns:
        A `ScanReport`; `report.folder` holds the usable files of every split.

    Raises:
        ValueError: If the folder is missing, has no class folders or only one, a class has
            no usable image, a split's classes differ from `train/`'s, or a class has too few
            images for `validation_split`.

    Example:
        >>> report = scan_dataset("data_samples/day_night/day", image_size=64)
        >>> report.bad_files
        []
    """
    start = time.perf_counter()
    size = None if image_size is None else _check_image_size(image_size)
    data_dir = _check_data_dir(data_dir)
    layout = find_split_folders(data_dir)
    bad: dict[str, str] = {}
    ignored: list[FileProblem] = []
    listed = {}  # split name (or "all") -> (folder, image files per class)
    class_names = None
    if layout:
        ignored += _loose_files(data_dir, keep=tuple(os.path.basename(f) for f in layout.values()))
    for split, folder in (layout or {"all": data_dir}).items():
        class_names, per_class, unsupported, more = _list_folder(folder, class_names)
        listed[split] = (folder, per_class)
        bad.update(dict(unsupported))
        ignored += more

    image_files = [p for _, files in listed.values() for paths in files.values() for p in paths]
    bad.update(check_images(image_files, image_size=size, num_workers=num_workers))
    splits = {
        split: _usable_split(folder, per_class, bad, ignored)
        for split, (folder, per_class) in listed.items()
    }
    if "val" not in splits:
        everything = splits.pop("all") if "all" in splits else splits["train"]
        splits["train"], splits["val"] = split_by_seed(
            everything, validation_split=validation_split, seed=seed, class_names=class_names
        )
    splits = {name: splits[name] for name in SPLIT_FOLDERS if name in splits}
    folder = ImageFolder(data_dir, class_names, splits)
    train_counts = np.bincount(splits["train"].labels, minlength=len(class_names))
    warnings = imbalance_warnings(dict(zip(class_names, train_counts.tolist(), strict=True)))
    return ScanReport(
        folder=folder,
        bad_files=[FileProblem(path, reason) for path, reason in sorted(bad.items())],
        ignored_files=ignored,
        warnings=warnings,
        num_checked=len(image_files),
        image_size=size,
        seconds=time.perf_counter() - start,
    )
