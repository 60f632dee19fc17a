"""Evaluating a trained run on a data folder, in a fixed, unshuffled order.

Example:
    >>> run = load_run("runs/digits")
    >>> report = evaluate(run, "data_samples/digits")
    >>> round(report["accuracy"], 3)
    0.95
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics

from tlkeras.data import Split, find_split_folders, scan_class_folders
from tlkeras.predict import predict_probabilities
from tlkeras.runs import Run
from tlkeras.scan import drop_unreadable


def evaluation_split(run: Run, data_dir, *, split: str | None = None) -> tuple[str, Split]:
    """Picks the files to evaluate on and checks that their classes are the run's classes.

    A plain folder of class folders is evaluated whole (`split="all"`). A folder with split
    subfolders is evaluated on `split`; by default `test/` if present, else `val/`.

    Returns:
        `(split_name, split)`.
    """
    layout = find_split_folders(data_dir)
    if not layout:
        split, folder = "all", data_dir
    else:
        split = split or ("test" if "test" in layout else "val")
        if split not in layout:
            raise ValueError(
                f"{data_dir!r} has no {split!r} folder; it has {sorted(layout)}. Pass one of "
                f"those as the split. Received: split={split!r}"
            )
        folder = layout[split]
    files, names = scan_class_folders(folder)
    if names != list(run.class_names):
        raise ValueError(
            f"The classes in {folder!r} ({names}) differ from the classes the model was "
            f"trained on ({run.class_names}). Evaluate on a folder with the same class folders. "
            f"Received: data_dir={data_dir!r}"
        )
    return split, files


def evaluate(run: Run, data_dir, *, split: str | None = None, batch_size: int = 32) -> dict:
    """Computes accuracy, per-class precision/recall/F1 and the confusion matrix.

    Images are predicted in the sorted file order, never shuffled, so `y_true[i]`,
    `y_pred[i]` and `paths[i]` always refer to the same image.

    Args:
        run: A `Run` from `tlkeras.load_run` or `tlkeras.train`.
        data_dir: A folder of class folders, or of `train/`, `val/`, `test/` folders.
        split: `"test"`, `"val"` or `"train"` for split folders; by default `test/` if present,
            else `val/`; a plain folder of class folders is evaluated whole.
        batch_size: Images per forward pass. Defaults to 32.

    Returns:
        A dict with `accuracy`, `num_images`, `split`, `class_names`, `per_class`
        (precision, recall, f1-score, support per class), `confusion_matrix` (rows: true class,
        columns: predicted class), and `paths`, `y_true`, `y_pred`, `probabilities`, and
        `skipped_files` (unreadable files left out, each `{"path", "reason"}`).

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
    probabilities = predict_probabilities(run, files.paths, batch_size=batch_size)
    y_true = files.labels
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
    return {
        "split": split,
        "num_images": len(files),
        "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
        "class_names": list(run.class_names),
        "per_class": {name: per_class[name] for name in run.class_names},
        "confusion_matrix": metrics.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "paths": list(files.paths),
        "y_true": y_true.tolist(),
        "y_pred": y_pred.tolist(),
        "probabilities": np.asarray(probabilities).tolist(),
        "skipped_files": [problem._asdict() for problem in skipped],
    }


def format_report(report: dict) -> str:
    """Formats an `evaluate` report as a readable text table.

    Example:
        >>> print(format_report(evaluate(run, "data_samples/digits")))
    """
    width = max(len(name) for name in ["class", *report["class_names"]]) + 2
    lines = [
        f"Evaluated {report['num_images']} images (split: {report['split']}): "
        f"accuracy {report['accuracy']:.3f}",
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
    return "\n".join(lines)
