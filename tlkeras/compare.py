"""Comparing backbones: train each on the same data, split and seed, and tabulate the results.

For every backbone, `compare_backbones` runs `tlkeras.train` with the same settings (only the
backbone and, unless `image_size` is set, its default input size change), so every model
sees the same training and validation images in the same order. It then measures:

- `val_accuracy`: accuracy of the saved model on the validation images its run recorded
  (`checkpoint/split.json`: the same files for every backbone);
- `best_val_accuracy`: the best validation accuracy of any epoch;
- `train_seconds`: wall-clock time of the whole `train` call (reading the images, both
  stages, saving the run);
- `train_images_per_second`: training images seen per second of that time;
- `predict_images_per_second`: prediction speed on the validation images, batch by batch,
  after one warm-up batch (the number that matters when the model is deployed);
- `num_params` and `trainable_params`: parameter counts of the saved model, and
  `model_megabytes`: the size of its `model.keras` file.

Writes `comparison.csv`, `comparison.json` and the bar chart `comparison.png` into the output
folder, with each backbone's run folder inside it.

Example:
    >>> config = tl.TrainConfig("data_samples/digits", out="runs/compare", weights="none",
    ...                         image_size=32, epochs=3)
    >>> rows = compare_backbones(config, ["vgg16", "mobilenet_v2"])
    >>> print(format_comparison(rows))
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import time

import numpy as np

from tlkeras import plots
from tlkeras.backbones import get_backbone
from tlkeras.data import make_dataset
from tlkeras.errors import DataError, UsageError
from tlkeras.evaluate import recorded_split
from tlkeras.files import atomic_write
from tlkeras.images import load_images
from tlkeras.model import resolve_image_size
from tlkeras.quiet import progress_verbose
from tlkeras.runs import MODEL_FILE

COLUMNS = (
    "backbone",
    "image_size",
    "val_accuracy",
    "best_val_accuracy",
    "train_seconds",
    "train_images_per_second",
    "predict_images_per_second",
    "num_params",
    "trainable_params",
    "model_megabytes",
    "run_dir",
)


def compare_backbones(config, backbones) -> list[dict]:
    """Trains one run per backbone with otherwise identical settings and compares them.

    Args:
        config: A `tlkeras.TrainConfig` with the shared settings; its `backbone` is ignored and
            `out` is the comparison folder (each run goes into `out/<backbone>`).
            `image_size=None` gives each backbone its own default size.
        backbones: Registry names, e.g. `["vgg16", "resnet50", "inceptionv3"]`, or one
            comma-separated string.

    Returns:
        One dict per backbone with the keys in `COLUMNS`, in the order given.

    Raises:
        ValueError: Before any training, if a name is unknown, repeated, or the image size is
            too small for one of the backbones.

    Example:
        >>> rows = compare_backbones(config, "vgg16,resnet50")
        >>> max(rows, key=lambda row: row["val_accuracy"])["backbone"]
        'resnet50'
    """
    names = _check_backbones(backbones, config.image_size)
    rows = []
    for name in names:
        run_config = dataclasses.replace(config, backbone=name, out=os.path.join(config.out, name))
        rows.append(_train_and_measure(run_config))
    write_comparison(rows, config.out)
    return rows


def _check_backbones(backbones, image_size) -> list[str]:
    if isinstance(backbones, str):
        backbones = [name.strip() for name in backbones.split(",") if name.strip()]
    names = [get_backbone(name).name for name in backbones]
    if not names or len(set(names)) != len(names):
        raise UsageError(
            "Expected one or more different backbone names, e.g. 'vgg16,resnet50,inceptionv3'. "
            f"Received: backbones={list(backbones)!r}"
        )
    for name in names:  # Fail now, not after an hour of training the first backbones.
        resolve_image_size(image_size, name)
    return names


def _train_and_measure(config) -> dict:
    """Trains one backbone, then measures it on the validation images its run recorded."""
    from tlkeras.train import train

    start = time.perf_counter()
    run = train(config)
    train_seconds = time.perf_counter() - start
    splits = recorded_split(run, config.data_dir)
    if splits is None:
        raise DataError(
            f"The data folder {config.data_dir!r} no longer holds the files the run "
            f"{run.path!r} recorded in checkpoint/split.json; was it changed during the "
            "comparison? Leave it untouched while comparing and run it again. "
            f"Received: data_dir={config.data_dir!r}"
        )
    val, num_train_images = splits["val"], len(splits["train"])
    images = load_images(val.paths, run.image_size)
    predictions, predict_speed = _timed_predict(run.model, images, config.batch_size)
    history = run.history
    num_epochs = len(history.get("loss") or [])
    model = run.model
    return {
        "backbone": config.backbone,
        "image_size": list(run.image_size),
        "val_accuracy": float(np.mean(predictions.argmax(axis=1) == val.labels)),
        "best_val_accuracy": float(max(history.get("val_accuracy") or [float("nan")])),
        "train_seconds": train_seconds,
        "train_images_per_second": num_train_images * num_epochs / train_seconds,
        "predict_images_per_second": predict_speed,
        "num_params": int(model.count_params()),
        "trainable_params": int(sum(int(np.prod(w.shape)) for w in model.trainable_weights)),
        "model_megabytes": os.path.getsize(os.path.join(run.path, MODEL_FILE)) / 1e6,
        "run_dir": run.path,
    }


def _timed_predict(model, images, batch_size: int) -> tuple[np.ndarray, float]:
    """Predicts the images and measures images per second, after one warm-up batch."""
    model.predict(make_dataset(images[:batch_size], batch_size=batch_size), verbose=0)
    start = time.perf_counter()
    dataset = make_dataset(images, batch_size=batch_size)
    predictions = model.predict(dataset, verbose=progress_verbose())
    return predictions, len(images) / (time.perf_counter() - start)


def format_comparison(rows: list[dict]) -> str:
    """A readable text table of a comparison, best validation accuracy marked with `*`."""
    best = max(range(len(rows)), key=lambda i: rows[i]["val_accuracy"]) if rows else -1
    header = (
        f"{'backbone':<18}{'size':>9}{'val acc':>9}{'train s':>9}{'train im/s':>12}"
        f"{'pred im/s':>11}{'params':>12}{'MB':>8}"
    )
    lines = [header]
    for i, row in enumerate(rows):
        size = "x".join(map(str, row["image_size"]))
        mark = "*" if i == best else " "
        lines.append(
            f"{row['backbone'] + mark:<18}{size:>9}{row['val_accuracy']:>9.3f}"
            f"{row['train_seconds']:>9.1f}{row['train_images_per_second']:>12.1f}"
            f"{row['predict_images_per_second']:>11.1f}{row['num_params']:>12,}"
            f"{row['model_megabytes']:>8.1f}"
        )
    return "\n".join(lines)


def write_comparison(rows: list[dict], out_dir) -> dict[str, str]:
    """Writes `comparison.csv`, `comparison.json` and `comparison.png` into `out_dir`.

    Returns:
        The paths written, by kind (`"csv"`, `"json"`, `"png"`).
    """
    os.makedirs(out_dir, exist_ok=True)
    paths = {kind: os.path.join(out_dir, f"comparison.{kind}") for kind in ("csv", "json", "png")}
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "image_size": "x".join(map(str, row["image_size"]))})
    atomic_write(paths["csv"], table.getvalue())
    atomic_write(paths["json"], json.dumps(rows, indent=2) + "\n")
    plots.plot_comparison(rows, path=paths["png"])
    return paths
