"""Evaluating a trained run on a data folder, in a fixed, unshuffled order.

Example:
    >>> run = load_run("runs/digits")
    >>> report = evaluate(run, "data_samples/digits")
    >>> round(report["accuracy"], 3)
    0.95
"""

from __future__ import annotations

import os

import numpy as np
from sklearn import metrics

from tlkeras.data import Split, find_split_folders, scan_class_folders, scan_folder
from tlkeras.predict import predict_probabilities
from tlkeras.runs import Run
from tlkeras.scan import drop_unreadable


def evaluation_split(run: Run, data_dir, *, split: str | None = None) -> tuple[str, Split]:
    """Picks the files to evaluate on and checks that their classes are the run's classes.

    - A folder with split subfolders is evaluated on `split`: by default `test/` if present,
      else `val/`.
    - A plain folder of class folders that the run was trained on is evaluated on the same
      held-out validation images as in training (`split="val"`, re-made from the run's
      `validation_split` and `seed`), so the numbers are honest.
    - Any other plain folder is evaluated whole (`split="all"`).

    Returns:
        `(split_name, split)`.

    Raises:
        ValueError: If the split does not exist or the classes differ from the run's.
    """
    layout = find_split_folders(data_dir)
    if layout:
        split = split or ("test" if "test" in layout else "val")
        if split not in layout:
            raise ValueError(
                f"{data_dir!r} has no {split!r} folder; it has {sorted(layout)}. Pass one of "
                f"those as the split. Received: split={split!r}"
            )
        files, names = scan_class_folders(layout[split])
    else:
        trained_on = run.config.get("data_dir")
        same_folder = bool(trained_on) and os.path.realpath(trained_on) == os.path.realpath(
            data_dir
        )
        split = split or ("val" if same_folder else "all")
        if split == "all":
            files, names = scan_class_folders(data_dir)
        elif split in ("train", "val") and same_folder:
            folder = scan_folder(
                data_dir,
                validation_split=run.config.get("validation_split", 0.2),
                seed=run.config.get("seed", 0),
            )
            files, names = folder.splits[split], folder.class_names
        else:
            raise ValueError(
                f"{data_dir!r} is one folder of class folders, so it can be evaluated whole "
                "(split 'all'), or, if the run was trained on it, on its 'train' or 'val' part. "
                f"Received: split={split!r}"
            )
    if names != list(run.class_names):
        raise ValueError(
            f"The classes in {data_dir!r} ({names}) differ from the classes the model was "
            f"trained on ({run.class_names}). Evaluate on a folder with the same class folders. "
            f"Received: data_dir={data_dir!r}"
        )
    return split, files


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
        and `skipped_files` (unreadable files left out, each `{"path", "reason"}`).

    Example:
        >>> report = evaluate(run, "data/flowers", split="test")
        >>> report["per_class"]["daisy"]["recall"]
        0.91
    """
    split, files = evaluation_split(run, data_dir, split=split)
    files, skipped = drop_unreadable(files, image_size=run.image_size)  # as training does
    if not len(files):
        raise ValueError(
            f"None of the images in {data_dir!r} can be read (e.g. {skipped[0].path}: "
            f"{skipped[0].reason}). Received: data_dir={data_dir!r}"
        )
    probabilities = np.asarray(predict_probabilities(run, files.paths, batch_size=batch_size))
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
        raise ValueError(
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
