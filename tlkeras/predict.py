"""Predicting classes for image files with a trained run.

Images are read exactly as in training (`tlkeras.images.load_image`), so a picture gets the
same prediction whichever path reads it.

Example:
    >>> run = load_run("runs/digits")
    >>> predict(run, ["data_samples/predict_examples/digit_3.png"], top_k=2)[0]["top"]
    [('3', 0.97), ('8', 0.02)]
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from typing import TYPE_CHECKING

import numpy as np

from tlkeras.errors import UsageError
from tlkeras.images import load_images

if TYPE_CHECKING:  # tlkeras.runs and tlkeras.data import TensorFlow: only when predicting.
    from tlkeras.runs import Run

#: Images read and predicted at a time, in batches: bounds memory for many files.
CHUNK_BATCHES = 8
#: The output formats of `format_predictions` (and `tlkeras predict --format`).
FORMATS = ("text", "json", "csv")
CSV_COLUMNS = ("path", "rank", "label", "probability")


def check_image_paths(paths) -> list[str]:
    """Returns the paths as strings, or raises ValueError for a folder or a missing file."""
    paths = [os.fspath(p) for p in paths]
    for path in paths:
        if os.path.isdir(path):
            raise UsageError(
                f"{path!r} is a folder, not an image file. Pass the image files inside it, e.g. "
                f"'{os.path.join(path, '*.jpg')}' in a shell. Received: path={path!r}"
            )
        if not os.path.exists(path):
            raise UsageError(
                f"There is no file {path!r}. Check the path (relative paths start from "
                f"{os.getcwd()!r}). Received: path={path!r}"
            )
    return paths


def predict_probabilities(
    run: Run, paths, *, batch_size: int = 32, progress: bool = False
) -> np.ndarray:
    """Returns the class probabilities `(num_images, num_classes)` for image files, in order.

    The files are read and predicted a few batches at a time, so memory stays bounded.

    Args:
        run: A `Run`.
        paths: Image file paths.
        batch_size: Images per forward pass. Defaults to 32.
        progress: Draw a progress bar on stderr. Defaults to False.

    Raises:
        ValueError: If a path is a folder, is missing, or is not a readable image.

    Example:
        >>> predict_probabilities(run, ["a.png", "b.png"]).shape  # doctest: +SKIP
        (2, 10)
    """
    from tlkeras.data import make_dataset

    paths = check_image_paths(paths)
    chunk = batch_size * CHUNK_BATCHES
    bar = ProgressBar(len(paths)) if progress else None
    parts = []
    for start in range(0, len(paths), chunk):
        images = load_images(paths[start : start + chunk], run.image_size)
        parts.append(run.model.predict(make_dataset(images, batch_size=batch_size), verbose=0))
        if bar:
            bar.update(start + len(images))
    if not parts:
        return np.zeros((0, len(run.class_names)), dtype="float32")
    return np.concatenate(parts)


class ProgressBar:
    """A Keras-style progress bar on stderr: `  64/200 [=====>......] - 2s 31ms/image`.

    Example:
        >>> bar = ProgressBar(200, stream=io.StringIO())
        >>> bar.update(200)
    """

    def __init__(self, total: int, *, width: int = 30, stream=None):
        self.total = total
        self.width = width
        self.stream = stream
        self.started = time.monotonic()

    def update(self, done: int) -> None:
        """Redraws the bar with `done` of `total` images finished (a new line at the end)."""
        stream = self.stream or sys.stderr
        seconds = time.monotonic() - self.started
        filled = self.width * done // max(self.total, 1)
        arrow = ">" if done < self.total else ""
        bar = ("=" * filled + arrow).ljust(self.width, ".")[: self.width]
        digits = len(str(self.total))
        per_image = 1000 * seconds / max(done, 1)
        line = f"\r{done:>{digits}}/{self.total} [{bar}] - {seconds:.0f}s {per_image:.0f}ms/image"
        stream.write(line + ("\n" if done >= self.total else ""))
        stream.flush()


def predict(
    run: Run, paths, *, top_k: int = 3, batch_size: int = 32, progress: bool = False
) -> list[dict]:
    """Predicts the top classes of image files.

    Args:
        run: A `Run` from `tlkeras.load_run` or `tlkeras.train`.
        paths: Image file paths.
        top_k: How many classes to return per image, most probable first. Defaults to 3.
        batch_size: Images per forward pass. Defaults to 32.
        progress: Draw a progress bar on stderr (the command line does on a terminal).
            Defaults to False.

    Returns:
        One dict per image: `{"path": str, "top": [(class_name, probability), ...]}`.

    Raises:
        ValueError: If `top_k` is not positive, or a path is a folder, is missing or is not
            a readable image.

    Example:
        >>> for result in predict(run, ["cat.jpg"], top_k=1):
        ...     print(result["path"], result["top"][0])
    """
    if not isinstance(top_k, int) or top_k < 1:
        raise UsageError(f"top_k must be a positive int. Received: top_k={top_k!r}")
    paths = [os.fspath(p) for p in paths]
    probabilities = predict_probabilities(run, paths, batch_size=batch_size, progress=progress)
    results = []
    for path, probs in zip(paths, probabilities, strict=True):
        best = np.argsort(-probs, kind="stable")[: min(top_k, len(probs))]
        top = [(run.class_names[i], float(probs[i])) for i in best]
        results.append({"path": path, "top": top})
    return results


def format_predictions(results: list[dict], format: str = "text") -> str:
    """Writes `predict`'s results as text, JSON or CSV, for people and other tools.

    Args:
        results: What `predict` returned.
        format: `"text"` (one line per image), `"json"` (an array of `{"path": ...,
            "predictions": [{"label": ..., "probability": ...}, ...], "top": [[label,
            probability], ...]}` objects; `top` repeats the predictions as pairs for older
            scripts) or `"csv"` (a header `path,rank,label,probability`, then one row per
            class and image, rank 1 the most probable).

    Returns:
        The text, ending with a newline.

    Raises:
        ValueError: If `format` is not one of `FORMATS`.

    Example:
        >>> print(format_predictions([{"path": "a.png", "top": [("cat", 0.75)]}], "csv"))
        path,rank,label,probability
        a.png,1,cat,0.75
        <BLANKLINE>
    """
    if format == "json":
        objects = [
            {
                "path": result["path"],
                "predictions": [{"label": n, "probability": p} for n, p in result["top"]],
                "top": [[n, p] for n, p in result["top"]],
            }
            for result in results
        ]
        return json.dumps(objects, indent=2, ensure_ascii=False) + "\n"
    if format == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for result in results:
            for rank, (name, probability) in enumerate(result["top"], start=1):
                writer.writerow([result["path"], rank, name, repr(float(probability))])
        return out.getvalue()
    if format == "text":
        return "".join(
            f"{r['path']}: {', '.join(f'{n} {p:.3f}' for n, p in r['top'])}\n" for r in results
        )
    raise UsageError(f"format must be one of {', '.join(FORMATS)}. Received: format={format!r}")
