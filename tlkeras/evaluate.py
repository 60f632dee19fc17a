"""Evaluating a trained run on a data folder, in a fixed, unshuffled order.

Example:
    >>> run = load_run("runs/digits")
    >>> report = evaluate(run, "data_samples/digits")
    >>> round(report["accuracy"], 3)
    0.95
"""

from __future__ import annotations

import hashlib
import os
import sys

import numpy as np
from sklearn import metrics

from tlkeras.checkpoints import load_split
from tlkeras.errors import DataError, UsageError
from tlkeras.predict import predict_probabilities
from tlkeras.runs import Run
from tlkeras.scan import (
    Split,
    _check_data_dir,
    drop_unreadable,
    find_split_folders,
    scan_class_folders,
)


def recorded_split(run: Run, data_dir) -> dict[str, Split] | None:
    """The splits the run trained and validated on, as files of `data_dir`, or None.

    The truth is the run's record, `checkpoint/split.json`, written when training started
    after the unreadable files were dropped; the folder is never split again. `data_dir` is
    the run's own folder when it holds every recorded file, or when it is the very folder
    the run names as an absolute path (compared resolved, so symlinks and spellings do not
    matter). Where Python runs from and how the path is spelled make no difference, and a
    copy of the folder counts as the run's own (it holds the same training images).

    Args:
        run: A `Run`; a run with no record (a bare `.keras` file) gives None.
        data_dir: The data folder.

    Returns:
        Split name (`"train"`, `"val"`, `"test"` when recorded) mapped to a `Split` whose
        paths are in `data_dir`, or None when `data_dir` is not the run's own folder.

    Example:
        >>> recorded_split(tl.load_run("runs/digits"), "data_samples/digits")["val"].paths[0]
        'data_samples/digits/0/img_003.png'
    """
    splits = _recorded_files(run, data_dir)
    if splits is None:
        return None
    trained_on = run.config.get("data_dir")
    same_folder = (
        bool(trained_on)
        and os.path.isabs(trained_on)
        and os.path.realpath(trained_on) == os.path.realpath(data_dir)
    )
    return splits if same_folder or not _missing(splits) else None


def _recorded_files(run: Run, data_dir) -> dict[str, Split] | None:
    """The run's `checkpoint/split.json` with its paths joined to `data_dir`, unchecked."""
    record = load_split(run.path)
    if not record:
        return None
    return {
        name: Split(
            [os.path.join(os.fspath(data_dir), *path.split("/")) for path in files["paths"]],
            np.asarray(files["labels"], dtype="int32"),
        )
        for name, files in record.items()
    }


def _missing(splits: dict[str, Split]) -> int:
    return sum(not os.path.isfile(path) for files in splits.values() for path in files.paths)


def _foreign_note(run: Run, data_dir) -> str:
    """One line saying why a folder is evaluated whole rather than on held-out images."""
    splits = _recorded_files(run, data_dir)
    if splits is None:
        why = "the run recorded no split, so its training images cannot be told apart"
    else:
        total = sum(len(files) for files in splits.values())
        why = f"{_missing(splits)} of the {total} files in its checkpoint/split.json are missing"
    return (
        f"Note: {os.fspath(data_dir)!r} is not the data folder the run {run.path!r} was "
        f"trained on ({why}), so all of it is evaluated."
    )


def evaluation_split(run: Run, data_dir, *, split: str | None = None) -> tuple[str, Split]:
    """Picks the files to evaluate on and checks that their classes are the run's classes.

    - The folder the run was trained on (see `recorded_split`) is evaluated on the files the
      run recorded: by default its test split if it has one, else the held-out validation
      images, exactly those of training, so the numbers are honest. `split="all"` evaluates
      the whole folder.
    - Any other folder with split subfolders is evaluated on `split`: by default `test/` if
      present, else `val/`.
    - Any other plain folder is evaluated whole (`split="all"`); when that was not asked
      for, one line on stderr says why.

    Returns:
        `(split_name, split)`.

    Raises:
        ValueError: If the split does not exist or the classes differ from the run's.

    Example:
        >>> split, files = evaluation_split(run, "data_samples/digits")
        >>> split
        'val'
    """
    split, files, _ = _pick_files(run, data_dir, split)
    return split, files


def _pick_files(run: Run, data_dir, split):
    """`evaluation_split`, plus the run's recorded splits (None for a foreign folder)."""
    data_dir = _check_data_dir(data_dir)
    recorded = recorded_split(run, data_dir)
    if recorded is not None and split != "all":
        split = split or ("test" if "test" in recorded else "val")
        if split not in recorded:
            raise UsageError(
                f"The run recorded no {split!r} split of {data_dir!r}; it has "
                f"{sorted(recorded)} (and 'all', the whole folder). Pass one of those as the "
                f"split. Received: split={split!r}"
            )
        return split, recorded[split], recorded
    layout = find_split_folders(data_dir)
    if layout:
        split = split or ("test" if "test" in layout else "val")
        if split not in layout:
            raise UsageError(
                f"{data_dir!r} has no {split!r} folder; it has {sorted(layout)}. Pass one of "
                f"those as the split. Received: split={split!r}"
            )
        files, names = scan_class_folders(layout[split])
    else:
        if split is None and recorded is None:
            print(_foreign_note(run, data_dir), file=sys.stderr)
        split = split or "all"
        if split != "all":
            raise UsageError(
                f"{data_dir!r} is one folder of class folders and not the folder this run "
                "recorded its split of, so it can only be evaluated whole (split 'all'). "
                f"Received: split={split!r}"
            )
        files, names = scan_class_folders(data_dir)
    if names != list(run.class_names):
        raise UsageError(
            f"The classes in {data_dir!r} ({names}) differ from the classes the model was "
            f"trained on ({run.class_names}). Evaluate on a folder with the same class folders. "
            f"Received: data_dir={data_dir!r}"
        )
    return split, files, recorded


def _num_trained_on(run: Run, paths, recorded: dict[str, Split] | None) -> int | None:
    """How many of `paths` the run was trained on; None for a folder not the run's own.

    In the run's own folder these are the files of its recorded training split. Any other
    folder may still hold training images (a copy with files added or removed): those are
    the files with the same bytes as a file of the recorded training split, read from the
    folder the run was trained on. None when there are none, or it cannot tell (the run
    recorded no split, or that folder is gone).
    """
    if recorded is not None:
        train = {os.path.normpath(path) for path in recorded["train"].paths}
        return sum(os.path.normpath(path) in train for path in paths)
    record = load_split(run.path)
    trained_on = run.config.get("data_dir")
    if not record or "train" not in record or not trained_on:
        return None
    originals = [os.path.join(trained_on, *name.split("/")) for name in record["train"]["paths"]]
    originals = [path for path in originals if os.path.isfile(path)]
    return (originals and _num_same_contents(paths, originals)) or None


def _num_same_contents(paths, originals) -> int:
    """How many of `paths` hold the same bytes as one of `originals` (sizes compared first)."""
    by_size: dict[int, list[str]] = {}
    for path in originals:
        by_size.setdefault(os.path.getsize(path), []).append(path)
    digests: dict[str, str] = {}

    def digest(path):
        if path not in digests:
            with open(path, "rb") as f:
                digests[path] = hashlib.sha256(f.read()).hexdigest()  # one image at a time
        return digests[path]

    count = 0
    for path in paths:
        same_size = by_size.get(os.path.getsize(path), [])
        count += bool(same_size) and digest(path) in {digest(other) for other in same_size}
    return count


#: Top-k accuracy is reported when a model has more classes than this; k is this number.
TOP_K = 5
#: Probabilities are clipped to at least this before taking the log for the loss.
EPSILON = 1e-7


def evaluate(run: Run, data_dir, *, split: str | None = None, batch_size: int = 32) -> dict:
    """Computes accuracy, per-class precision/recall/F1 and the confusion matrix.

    Images are predicted in the sorted file order, never shuffled, so `y_true[i]`,
    `y_pred[i]`, `losses[i]` and `paths[i]` always refer to the same image.

    Args:
        run: A `Run` from `tlkeras.load_run` or `tlkeras.train`.
        data_dir: A folder of class folders, or of `train/`, `val/`, `test/` folders.
        split: `"test"`, `"val"`, `"train"` or `"all"`; by default `test/` if present, else
            the validation images (see `evaluation_split`).
        batch_size: Images per forward pass. Defaults to 32.

    Returns:
        A dict with `data_dir`, `accuracy`, `top_k` and `top_k_accuracy` (top-5 accuracy
        when there are more than 5 classes, else both `None`), `num_images`, `split`,
        `class_names`, `image_size`, `per_class` (precision, recall, f1-score, support),
        `macro_avg`, `weighted_avg`, `confusion_matrix` (rows: true class, columns: predicted
        class), `confusion_matrix_normalized` (each row divided by its class's image count),
        per image `paths`, `y_true`, `y_pred`, `probabilities` and `losses` (cross-entropy),
        `skipped_files` (unreadable files left out, each `{"path", "reason"}`), and
        `num_training_images`: how many of the evaluated images the run was trained on (0 for
        its held-out images; in another folder, the files with the bytes of a training image,
        or None when there are none or it cannot tell).

    Example:
        >>> report = evaluate(run, "data/flowers", split="test")
        >>> report["per_class"]["daisy"]["recall"]
        0.91
    """
    split, files, recorded = _pick_files(run, data_dir, split)
    files, skipped = drop_unreadable(files, image_size=run.image_size)  # as training does
    if not len(files):
        raise DataError(
            f"None of the images in {data_dir!r} can be read (e.g. {skipped[0].path}: "
            f"{skipped[0].reason}). Received: data_dir={data_dir!r}"
        )
    probabilities = predict_probabilities(
        run, files.paths, batch_size=batch_size, progress=sys.stderr.isatty()
    )  # A progress bar on a terminal only.
    probabilities = np.asarray(probabilities)
    y_true = np.asarray(files.labels)
    y_pred = probabilities.argmax(axis=1)
    labels = list(range(len(run.class_names)))
    per_class = metrics.classification_report(
        y_true,
        y_pred,
        labels=labels,
        target_names=run.class_names,
        output_dict=True,
        zero_division=0,
    )
    true_probability = probabilities[np.arange(len(y_true)), y_true]
    losses = -np.log(np.clip(true_probability, EPSILON, 1.0))
    top_k = TOP_K if len(labels) > TOP_K else None
    return {
        "data_dir": os.fspath(data_dir),
        "split": split,
        "num_images": len(files),
        "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
        "top_k": top_k,
        "top_k_accuracy": (
            float(metrics.top_k_accuracy_score(y_true, probabilities, k=top_k, labels=labels))
            if top_k
            else None
        ),
        "class_names": list(run.class_names),
        "image_size": list(run.image_size),
        "per_class": {name: per_class[name] for name in run.class_names},
        "macro_avg": per_class["macro avg"],
        "weighted_avg": per_class["weighted avg"],
        "confusion_matrix": metrics.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "confusion_matrix_normalized": metrics.confusion_matrix(
            y_true, y_pred, labels=labels, normalize="true"
        ).tolist(),
        "paths": list(files.paths),
        "y_true": y_true.tolist(),
        "y_pred": y_pred.tolist(),
        "probabilities": probabilities.tolist(),
        "losses": losses.tolist(),
        "skipped_files": [problem._asdict() for problem in skipped],
        "num_training_images": _num_trained_on(run, files.paths, recorded),
    }


def most_confused(report: dict, *, min_count: int = 1) -> list[tuple[str, str, int]]:
    """Lists the (true class, predicted class) pairs the model mixes up most, most first.

    Args:
        report: The dict returned by `evaluate`.
        min_count: Leave out pairs with fewer mistakes than this. Defaults to 1.

    Returns:
        `(true_class, predicted_class, count)` tuples; ties are ordered by class index.

    Example:
        >>> most_confused(report)[:2]
        [('3', '8', 4), ('9', '7', 2)]
    """
    names = report["class_names"]
    matrix = np.asarray(report["confusion_matrix"])
    pairs = [
        (names[true], names[pred], int(matrix[true, pred]))
        for true in range(len(names))
        for pred in range(len(names))
        if true != pred and matrix[true, pred] >= max(min_count, 1)
    ]
    return sorted(pairs, key=lambda pair: -pair[2])


def top_losses(report: dict, *, num_images: int = 16) -> list[dict]:
    """The images with the highest loss (the most confidently wrong first).

    Args:
        report: The dict returned by `evaluate`.
        num_images: How many to return. Defaults to 16.

    Returns:
        Dicts with `path`, `true`, `predicted`, `probability` (of the predicted class),
        `true_probability` and `loss`, highest loss first.

    Example:
        >>> top_losses(report, num_images=1)[0]["predicted"]
        '8'
    """
    if not isinstance(num_images, int) or num_images < 0:
        raise UsageError(
            f"num_images must be an int of at least 0. Received: num_images={num_images!r}"
        )
    names = report["class_names"]
    losses = np.asarray(report["losses"])
    order = np.argsort(-losses, kind="stable")[:num_images]
    rows = []
    for i in order:
        probabilities = report["probabilities"][i]
        true, pred = report["y_true"][i], report["y_pred"][i]
        rows.append(
            {
                "path": report["paths"][i],
                "true": names[true],
                "predicted": names[pred],
                "probability": float(probabilities[pred]),
                "true_probability": float(probabilities[true]),
                "loss": float(losses[i]),
            }
        )
    return rows


def format_report(report: dict) -> str:
    """Formats an `evaluate` report as a readable text table.

    Example:
        >>> print(format_report(evaluate(run, "data_samples/digits")))
    """
    width = max(len(name) for name in ["class", *report["class_names"]]) + 2
    lines = [
        f"Evaluated {report['num_images']} images (split: {report['split']}): "
        f"accuracy {report['accuracy']:.3f}",
    ]
    if report.get("top_k_accuracy") is not None:
        lines.append(f"Top-{report['top_k']} accuracy {report['top_k_accuracy']:.3f}")
    lines += [
        "",
        f"{'class':<{width}}precision  recall  f1-score  support",
    ]
    for name, row in report["per_class"].items():
        lines.append(
            f"{name:<{width}}{row['precision']:9.3f}  {row['recall']:6.3f}  "
            f"{row['f1-score']:8.3f}  {row['support']:7.0f}"
        )
    lines += ["", "Confusion matrix (rows: true class, columns: predicted):"]
    lines += [" ".join(f"{count:4d}" for count in row) for row in report["confusion_matrix"]]
    skipped = report.get("skipped_files", [])
    if skipped:
        lines += ["", f"Skipped {len(skipped)} unreadable file(s):"]
        lines += [f"  {item['path']}: {item['reason']}" for item in skipped]
    pairs = most_confused(report)[:5]
    if pairs:
        lines += ["", "Most confused (true -> predicted: images):"]
        lines += [f"  {true} -> {pred}: {count}" for true, pred, count in pairs]
    return "\n".join(lines)
