"""Pictures of a run: training curves, confusion matrices, image grids, LR sweeps, comparisons
and previews of augmentation.

Every function returns a matplotlib `Figure` and, given `path=`, also saves it as a PNG. The
figures are made without `pyplot`, so nothing piles up in pyplot's list of open figures and
no global backend is switched; saving uses matplotlib's Agg renderer. In a Jupyter notebook
a returned figure shows inline.

Example:
    >>> from tlkeras import plots
    >>> plots.plot_history("runs/digits", path="runs/digits/history.png")
    >>> report = tlkeras.evaluate(run, "data_samples/digits")
    >>> plots.plot_confusion_matrix(report, normalize=True)
"""

from __future__ import annotations

import io
import json
import math
import os

import numpy as np
from matplotlib.figure import Figure

from tlkeras.augment import augmentation_layer
from tlkeras.errors import UsageError
from tlkeras.files import atomic_write
from tlkeras.images import load_images
from tlkeras.runs import HISTORY_FILE

#: The training curves `tlkeras.train` writes into the run folder.
HISTORY_PLOT_FILE = "history.png"
#: Resolution of saved PNGs, in dots per inch.
DPI = 100
#: Above this many classes a confusion matrix no longer prints a number in every cell.
MAX_ANNOTATED_CLASSES = 30
#: The largest side of a figure that grows with the number of classes, in inches.
MAX_FIGURE_INCHES = 24
CORRECT_COLOUR = "#1a7f37"
WRONG_COLOUR = "#cf222e"


class InlineFigure(Figure):
    """A matplotlib `Figure` that Jupyter shows inline even when `pyplot` was never used."""

    def _repr_png_(self) -> bytes:
        return figure_to_png(self)


def figure_to_png(figure: Figure) -> bytes:
    """Renders a figure as PNG bytes with the Agg renderer."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def save_figure(figure: Figure, path) -> str:
    """Saves a figure as a PNG file, atomically, creating the folder if needed.

    Returns:
        The path written.
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, figure_to_png(figure))
    return path


def _finish(figure: Figure, path) -> Figure:
    if path is not None:
        save_figure(figure, path)
    return figure


# -- training curves ---------------------------------------------------------------------------


def read_history(source) -> dict:
    """Gets a per-epoch history dict from whatever a user has at hand.

    Args:
        source: A history dict, a `keras.callbacks.History`, a `tlkeras.Run`, a run folder
            or the path of a `history.json` file.

    Returns:
        The history dict, e.g. `{"epoch": [...], "stage": [...], "loss": [...], ...}`.

    Raises:
        ValueError: If a path holds no history, or the object carries none.
    """
    if isinstance(source, dict):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isdir(path):
            path = os.path.join(path, HISTORY_FILE)
        if not os.path.isfile(path):
            raise UsageError(
                f"No training history at {path!r}. Expected a run folder written by "
                f"`tlkeras train` (it holds {HISTORY_FILE}) or the path of that file. "
                f"Received: history={os.fspath(source)!r}"
            )
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    history = getattr(source, "history", None)
    if isinstance(history, dict):
        return history
    raise UsageError(
        "Cannot find a training history in this object. Expected a dict, a Keras History, a "
        f"tlkeras Run, or a run folder path. Received: history={type(source).__name__}"
    )


def fine_tune_start(history: dict) -> float | None:
    """The x position between the last stage-1 epoch and the first stage-2 epoch, if any."""
    stages, epochs = history.get("stage") or [], history.get("epoch") or []
    for epoch, stage in zip(epochs, stages, strict=False):
        if stage == 2:
            return epoch - 0.5
    return None


def plot_history(history, *, path=None) -> Figure:
    """Plots loss and accuracy per epoch, training and validation, for both stages.

    A vertical line marks where fine-tuning (stage 2) starts. `tlkeras.train` saves this
    figure as `history.png` in the run folder; this redraws it from `history.json`.

    Args:
        history: A history dict, a Keras `History`, a `Run`, a run folder or a
            `history.json` path (see `read_history`).
        path: Where to save the PNG; `None` only returns the figure.

    Returns:
        The figure, with a loss panel and an accuracy panel.

    Example:
        >>> plot_history("runs/digits", path="history.png")
    """
    history = read_history(history)
    num_epochs = len(history.get("loss") or [])
    if not num_epochs:
        raise UsageError(
            "The history has no 'loss' values to plot. Expected the history of a training run "
            f"with at least one epoch. Received: keys={sorted(history)}"
        )
    epochs = history.get("epoch") or list(range(1, num_epochs + 1))
    figure = InlineFigure(figsize=(10, 4), layout="constrained")
    axes = figure.subplots(1, 2)
    boundary = fine_tune_start(history)
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for key, style, label in ((metric, "-o", "training"), (f"val_{metric}", "--s", "val")):
            values = history.get(key)
            if values:
                ys = [np.nan if v is None else v for v in values]
                ax.plot(epochs, ys, style, markersize=4, label=label)
        if boundary is not None:
            ax.axvline(boundary, color="grey", linestyle=":", label="fine-tuning starts")
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[1].set_ylim(-0.02, 1.02)
    axes[0].xaxis.get_major_locator().set_params(integer=True)
    axes[1].xaxis.get_major_locator().set_params(integer=True)
    return _finish(figure, path)


# -- evaluation --------------------------------------------------------------------------------


def plot_confusion_matrix(report: dict, *, normalize: bool = False, path=None) -> Figure:
    """Draws the confusion matrix of an `evaluate` report; rows are true classes.

    Args:
        report: The dict returned by `tlkeras.evaluate`.
        normalize: Divide each row by its class's image count, so a cell reads "the fraction
            of class `row` predicted as `column`" and the diagonal is each class's recall.
            Defaults to False (image counts).
        path: Where to save the PNG; `None` only returns the figure.

    Returns:
        The figure.

    Example:
        >>> plot_confusion_matrix(report, normalize=True, path="confusion.png")
    """
    names = report["class_names"]
    key = "confusion_matrix_normalized" if normalize else "confusion_matrix"
    matrix = np.asarray(report[key], dtype=float)
    side = min(MAX_FIGURE_INCHES, max(4.5, 0.45 * len(names) + 2.5))
    figure = InlineFigure(figsize=(side + 1, side), layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    figure.colorbar(image, ax=ax, shrink=0.8)
    ticks = np.arange(len(names))
    fontsize = 10 if len(names) <= MAX_ANNOTATED_CLASSES else 6
    rotation = 45 if len(names) > 4 else 0
    ax.set_xticks(ticks, names, rotation=rotation, ha="right", fontsize=fontsize)
    ax.set_yticks(ticks, names, fontsize=fontsize)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("Confusion matrix" + (" (each row sums to 1)" if normalize else " (images)"))
    if len(names) <= MAX_ANNOTATED_CLASSES:
        threshold = np.nanmax(matrix) / 2 if matrix.size else 0
        for (row, column), value in np.ndenumerate(matrix):
            text = f"{value:.2f}" if normalize else f"{value:.0f}"
            colour = "white" if value > threshold else "black"
            ax.text(column, row, text, ha="center", va="center", color=colour, fontsize=8)
    return _finish(figure, path)


def plot_per_class(report: dict, *, path=None) -> Figure:
    """Bar chart of precision, recall and F1 for every class of an `evaluate` report.

    Example:
        >>> plot_per_class(report, path="per_class.png")
    """
    names = report["class_names"]
    rows = report["per_class"]
    positions = np.arange(len(names))  # One unit of the y axis per class.
    bar_height = 0.27  # In y-axis units: three bars fill 0.81 of a class's row.
    inches = min(3 * MAX_FIGURE_INCHES, max(2.5, 0.4 * len(names) + 1.2))
    figure = InlineFigure(figsize=(7, inches), layout="constrained")
    ax = figure.subplots()
    metrics = ("precision", "recall", "f1-score")
    for offset, metric in zip((-bar_height, 0, bar_height), metrics, strict=True):
        values = [rows[name][metric] for name in names]
        ax.barh(positions + offset, values, height=bar_height, label=metric)
    ax.set_yticks(positions, names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("score")
    ax.set_title("Per-class precision, recall and F1")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncols=3, fontsize=8)
    return _finish(figure, path)


def plot_image_grid(
    images, titles, *, correct=None, num_columns: int | None = None, path=None
) -> Figure:
    """Shows images in a grid, each with a title.

    Args:
        images: uint8 RGB images, an array `(N, height, width, 3)` or a list of arrays.
        titles: One title per image; use newlines for several lines.
        correct: Optional booleans; titles are drawn green where True and red where False.
        num_columns: Images per row; defaults to about the square root of N, at most 6.
        path: Where to save the PNG; `None` only returns the figure.

    Returns:
        The figure.
    """
    if len(images) != len(titles):
        raise UsageError(
            f"Expected one title per image, but got {len(images)} images and {len(titles)} "
            f"titles. Received: num_titles={len(titles)}"
        )
    count = max(len(images), 1)
    columns = num_columns or min(6, math.ceil(math.sqrt(count)))
    rows = math.ceil(count / columns)
    lines = max((title.count("\n") + 1 for title in titles), default=1)
    figure = InlineFigure(
        figsize=(2.3 * columns, (2.3 + 0.17 * lines) * rows), layout="constrained"
    )
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    for index, ax in enumerate(axes):
        ax.axis("off")
        if index >= len(images):
            continue
        ax.imshow(np.asarray(images[index]))
        colour = "black"
        if correct is not None:
            colour = CORRECT_COLOUR if correct[index] else WRONG_COLOUR
        ax.set_title(titles[index], fontsize=8, color=colour)
    return _finish(figure, path)


def plot_top_losses(report: dict, *, num_images: int = 16, path=None) -> Figure:
    """Shows the images the model got most wrong: the highest cross-entropy losses first.

    Each image is shown as the model saw it (resized to its input size) and labelled with its
    true class, the predicted class with its probability, and the loss.

    Args:
        report: The dict returned by `tlkeras.evaluate`.
        num_images: How many images to show. Defaults to 16.
        path: Where to save the PNG; `None` only returns the figure.

    Example:
        >>> plot_top_losses(report, num_images=9)
    """
    from tlkeras.evaluate import top_losses

    rows = top_losses(report, num_images=num_images)
    images = load_images([row["path"] for row in rows], tuple(report["image_size"]))
    titles = [
        f"true: {row['true']}\npred: {row['predicted']} ({row['probability']:.2f})\n"
        f"loss {row['loss']:.2f}"
        for row in rows
    ]
    correct = [row["true"] == row["predicted"] for row in rows]
    return plot_image_grid(list(images), titles, correct=correct, path=path)


def plot_predictions(results: list[dict], *, image_size=(128, 128), path=None) -> Figure:
    """Shows images with their most probable class and its probability.

    Args:
        results: What `tlkeras.predict` returns.
        image_size: An int or `(height, width)` the images are shown at. Pass the run's
            `image_size` to see them as the model did. Defaults to 128x128.
        path: Where to save the PNG; `None` only returns the figure.

    Example:
        >>> plot_predictions(tl.predict(run, paths), image_size=run.image_size)
    """
    images = load_images([result["path"] for result in results], image_size)
    titles = [
        f"{os.path.basename(result['path'])}\n{result['top'][0][0]} ({result['top'][0][1]:.2f})"
        for result in results
    ]
    return plot_image_grid(list(images), titles, path=path)


# -- learning-rate finder, comparison, Grad-CAM ------------------------------------------------


def plot_lr_find(result, *, path=None) -> Figure:
    """Plots loss against learning rate (log scale) for an `lr_find` result.

    The faint line is the loss of each batch, the solid line its running average; the red
    dot is the suggested learning rate.

    Example:
        >>> plot_lr_find(tl.lr_find(model, data.dataset("train")))
    """
    figure = InlineFigure(figsize=(7, 4.2), layout="constrained")
    ax = figure.subplots()
    ax.plot(result.learning_rates, result.losses, color="tab:blue", alpha=0.25, label="batch")
    ax.plot(result.learning_rates, result.smoothed_losses, color="tab:blue", label="smoothed")
    index = int(np.argmin(np.abs(np.log(result.learning_rates) - np.log(result.suggestion))))
    ax.plot(
        result.suggestion,
        result.smoothed_losses[index],
        "o",
        color="tab:red",
        markersize=8,
        label=f"suggested {result.suggestion:.1e} ({result.rule})",
    )
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    what = "the head (stage 1)" if result.stage == 1 else "the unfrozen top blocks (stage 2)"
    ax.set_title(f"Learning-rate sweep on {what}")
    finite = [loss for loss in result.smoothed_losses if np.isfinite(loss)]
    low, high = min(finite), max(finite)
    margin = 0.05 * (high - low) + 1e-3
    ax.set_ylim(low - margin, high + margin)  # Single batches may leave the frame.
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return _finish(figure, path)


def plot_comparison(rows: list[dict], *, path=None) -> Figure:
    """Bar charts of a backbone comparison: accuracy, training time and prediction speed.

    Args:
        rows: What `tlkeras.compare_backbones` returns.
        path: Where to save the PNG; `None` only returns the figure.
    """
    names = [row["backbone"] for row in rows]
    panels = (
        ("val_accuracy", "validation accuracy", "{:.3f}"),
        ("train_seconds", "training time (s)", "{:.0f}"),
        ("predict_images_per_second", "prediction speed (images/s)", "{:.0f}"),
    )
    figure = InlineFigure(figsize=(12, 0.45 * len(names) + 2), layout="constrained")
    axes = figure.subplots(1, len(panels), sharey=True)
    best = int(np.argmax([row["val_accuracy"] for row in rows]))
    colours = ["tab:orange" if i == best else "tab:blue" for i in range(len(rows))]
    for ax, (key, title, fmt) in zip(axes, panels, strict=True):
        values = [row[key] for row in rows]
        bars = ax.barh(names, values, color=colours)
        ax.bar_label(bars, labels=[fmt.format(v) for v in values], padding=3, fontsize=8)
        ax.set_title(title)
        ax.margins(x=0.25)
        ax.grid(axis="x", alpha=0.3)
    axes[0].invert_yaxis()
    axes[0].set_xlim(0, 1.15)
    figure.suptitle("Backbone comparison (orange: the best validation accuracy)")
    return _finish(figure, path)


def plot_gradcam(explanations: list[dict], *, path=None) -> Figure:
    """Shows each image beside its Grad-CAM overlay, with the class the heatmap explains.

    Args:
        explanations: What `tlkeras.explain` returns.
        path: Where to save the PNG; `None` only returns the figure.

    Example:
        >>> plot_gradcam(tl.explain(run, ["data_samples/predict_examples/digit_3.png"]))
    """
    rows = len(explanations)
    figure = InlineFigure(figsize=(6, 3.2 * rows), layout="constrained")
    axes = figure.subplots(rows, 2, squeeze=False)
    for (left, right), item in zip(axes, explanations, strict=True):
        left.imshow(item["image"])
        left.set_title(
            f"{os.path.basename(item['path'])}\npredicted {item['predicted']} "
            f"({item['probability']:.2f})",
            fontsize=9,
        )
        right.imshow(item["overlay"])
        right.set_title(
            f"Grad-CAM for {item['class_name']} ({item['class_probability']:.2f})\n"
            f"layer {item['layer']}, {item['grid'][0]}x{item['grid'][1]} cells",
            fontsize=9,
        )
        left.axis("off")
        right.axis("off")
    return _finish(figure, path)


def preview_augmentation(
    paths,
    augment="light",
    *,
    image_size=128,
    num_variants: int = 5,
    seed: int = 0,
):
    """Draws each image next to `num_variants` random augmentations of it, as a grid.

    The images are read and augmented exactly as in training (`tlkeras.images.load_image`,
    then the layers of `build_augmentation`).

    Args:
        paths: Image files, one row of the grid each.
        augment: A preset name, an `Augmentation` or a Keras layer. Defaults to "light".
        image_size: An int or `(height, width)` the images are read at. Defaults to 128.
        num_variants: Augmented copies per image. Defaults to 5.
        seed: Seed of the random transformations. Defaults to 0.

    Returns:
        A `matplotlib.figure.Figure` (no pyplot state); save it with `figure.savefig(path)`.

    Example:
        >>> preview_augmentation(["cat.jpg"], "strong").savefig("preview.png")
    """
    if not isinstance(num_variants, int) or num_variants < 1:
        raise UsageError(
            f"num_variants must be a positive int. Received: num_variants={num_variants!r}"
        )
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise UsageError("preview_augmentation needs at least one image path. Received: paths=[]")
    images = load_images(paths, image_size).astype("float32")
    layer = augmentation_layer(augment, seed=seed)
    columns = [images] + [
        images if layer is None else np.asarray(layer(images, training=True))
        for _ in range(num_variants)
    ]
    figure = Figure(figsize=(1.6 * (num_variants + 1), 1.6 * len(paths)), layout="constrained")
    axes = figure.subplots(len(paths), num_variants + 1, squeeze=False)
    for row, path in enumerate(paths):
        for column, batch in enumerate(columns):
            ax = axes[row][column]
            ax.imshow(np.clip(batch[row], 0, 255).astype("uint8"))
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title("original" if column == 0 else f"augmented {column}", fontsize=8)
        axes[row][0].set_ylabel(os.path.basename(path)[:20], fontsize=7)
    return figure


def sample_paths(data_dir, *, num_images: int = 4, seed: int = 0) -> list[str]:
    """Picks up to `num_images` readable training images, one class after another.

    Example:
        >>> sample_paths("data_samples/day_night/day", num_images=3)  # doctest: +SKIP
        ['.../bus/day_bus_014.png', '.../car/day_car_051.png', '.../truck/day_truck_003.png']
    """
    from tlkeras.images import verify_image
    from tlkeras.scan import find_split_folders, scan_class_folders

    folder = find_split_folders(data_dir).get("train", os.fspath(data_dir))
    files, class_names = scan_class_folders(folder)
    rng = np.random.default_rng(seed)
    queues = [
        [str(p) for p in rng.permutation(np.asarray(files.paths)[files.labels == label])]
        for label in range(len(class_names))
    ]
    picked = []
    while len(picked) < num_images and any(queues):
        for queue in queues:
            while queue and len(picked) < num_images:
                path = str(queue.pop())
                if verify_image(path) is None:
                    picked.append(path)
                    break
    return picked
