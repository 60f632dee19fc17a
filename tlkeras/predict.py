"""Predicting classes for image files with a trained run.

Images are read exactly as in training (`tlkeras.images.load_image`), so a picture gets the
same prediction whichever path reads it.

Example:
    >>> run = load_run("runs/digits")
    >>> predict(run, ["data_samples/predict_examples/digit_3.png"], top_k=2)[0]["top"]
    [('3', 0.97), ('8', 0.02)]
"""

from __future__ import annotations

import os

import numpy as np

from tlkeras.data import make_dataset
from tlkeras.images import load_images
from tlkeras.runs import Run


def check_image_paths(paths) -> list[str]:
    """Returns the paths as strings, or raises ValueError for a folder or a missing file."""
    paths = [os.fspath(p) for p in paths]
    for path in paths:
        if os.path.isdir(path):
            raise ValueError(
                f"{path!r} is a folder, not an image file. Pass the image files inside it, e.g. "
                f"'{os.path.join(path, '*.jpg')}' in a shell. Received: path={path!r}"
            )
        if not os.path.exists(path):
            raise ValueError(
                f"There is no file {path!r}. Check the path (relative paths start from "
                f"{os.getcwd()!r}). Received: path={path!r}"
            )
    return paths


def predict_probabilities(run: Run, paths, *, batch_size: int = 32) -> np.ndarray:
    """Returns the class probabilities `(num_images, num_classes)` for image files, in order.

    Raises:
        ValueError: If a path is a folder, is missing, or is not a readable image.
    """
    images = load_images(check_image_paths(paths), run.image_size)
    return run.model.predict(make_dataset(images, batch_size=batch_size), verbose=0)


def predict(run: Run, paths, *, top_k: int = 3, batch_size: int = 32) -> list[dict]:
    """Predicts the top classes of image files.

    Args:
        run: A `Run` from `tlkeras.load_run` or `tlkeras.train`.
        paths: Image file paths.
        top_k: How many classes to return per image, most probable first. Defaults to 3.
        batch_size: Images per forward pass. Defaults to 32.

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
        raise ValueError(f"top_k must be a positive int. Received: top_k={top_k!r}")
    paths = [os.fspath(p) for p in paths]
    probabilities = predict_probabilities(run, paths, batch_size=batch_size)
    results = []
    for path, probs in zip(paths, probabilities, strict=True):
        best = np.argsort(-probs, kind="stable")[: min(top_k, len(probs))]
        top = [(run.class_names[i], float(probs[i])) for i in best]
        results.append({"path": path, "top": top})
    return results
