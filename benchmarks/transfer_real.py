"""Does tlkeras carry real ImageNet knowledge to a new task? Few labels, real weights, offline.

EfficientNet-Lite0 with its real ImageNet weights (`weights="imagenet"`, converted offline
from the installed package) against the same network with random weights
(`weights="none"`), on real image sets that ship with the repository:

- `faces` (`data_samples/faces`): faces against other photo patches, a task close to what
  ImageNet models have seen;
- `digits` (`data_samples/digits`): handwritten digits, 8x8 scans enlarged, a domain far from
  ImageNet's photos.

For 5, 10 and 20 labelled images per class, drawn per seed from one half of each class, it
trains (`--methods`):

- `tlkeras_stage1`: `build_model` + `train_head` (the backbone frozen, the head trained);
- `tlkeras_stage2`: the same model, then `fine_tune` (the top block unfrozen, BatchNorm
  frozen, recompiled at 1e-5);
- `plain_stage1`, `plain_stage2`: the Keras transfer-learning guide's recipe with the same
  backbone and weights: `base.trainable = False`, `base(x, training=False)`, pooling,
  dropout and a softmax, Adam at 1e-3; then the whole base unfrozen at 1e-5;
- `scratch`: no transfer at all, the fair baseline for random weights: the whole network
  trained from random initialisation (`tlkeras.pretrain.build_pretrain_model`, BatchNorm
  training), Adam at 1e-3, for as many steps as both stages together.

tlkeras' stages run with ImageNet weights and with random weights (`--weights none`); a
frozen random backbone gives features that fade to almost nothing, so that column shows
what the recipe does without real weights, and `scratch` what training without transfer
can do. Every model is tested
on the other half of each class, which no run trains on, and every run uses the same steps,
batch size and learning rates. The script prints accuracy (mean ± std over seeds) and wall
time per run, and writes `transfer_real.md` and `transfer_real.csv`.

Usage (from the repository root):

    python benchmarks/transfer_real.py                  # both sets, 3 seeds
    python benchmarks/transfer_real.py --datasets faces --seeds 0 --labels 5   # a smoke run
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tlkeras as tl  # noqa: E402
from tlkeras.backbones import get_backbone  # noqa: E402
from tlkeras.data import make_dataset, scan_class_folders  # noqa: E402
from tlkeras.images import load_images  # noqa: E402
from tlkeras.pretrain import build_pretrain_model  # noqa: E402

DATASETS = {"faces": "data_samples/faces", "digits": "data_samples/digits"}
METHODS = ("tlkeras_stage1", "tlkeras_stage2", "plain_stage1", "plain_stage2", "scratch")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    p.add_argument("--labels", type=int, nargs="+", default=[5, 10, 20], help="per class")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--head-steps", type=int, default=100, help="stage 1 training steps")
    p.add_argument("--fine-tune-steps", type=int, default=30, help="stage 2 training steps")
    p.add_argument("--unfreeze", type=int, default=1, help="tlkeras' stage 2: top blocks")
    p.add_argument("--out", default="benchmarks/results")
    return p.parse_args(argv)


def split_pool_and_test(folder: str, image_size: int):
    """Half of each class is the pool labelled images are drawn from; half is the test set."""
    split, names = scan_class_folders(folder)
    images = load_images(split.paths, (image_size, image_size))
    labels = np.asarray(split.labels)
    rng = np.random.default_rng(1234)
    pool, test = [], []
    for label in range(len(names)):
        members = rng.permutation(np.flatnonzero(labels == label))
        pool.append(members[: len(members) // 2])
        test += members[len(members) // 2 :].tolist()
    return images, labels, names, pool, np.array(sorted(test))


def accuracy(model, images, labels) -> float:
    predicted = model.predict(images.astype("float32"), batch_size=128, verbose=0)
    return float(np.mean(predicted.argmax(axis=1) == labels))


def train_tlkeras(args, weights, num_classes, train, test):
    """tlkeras' two stages; returns {method: (accuracy, seconds)}."""
    start = time.perf_counter()
    model = tl.build_model(
        args.backbone, num_classes=num_classes, image_size=args.image_size, weights=weights
    )
    tl.train_head(model, train(), epochs=1, steps_per_epoch=args.head_steps)
    results = {"tlkeras_stage1": (accuracy(model, *test), time.perf_counter() - start)}
    tl.fine_tune(
        model,
        train(),
        epochs=1,
        unfreeze=args.unfreeze,
        initial_epoch=1,
        steps_per_epoch=args.fine_tune_steps,
    )
    results["tlkeras_stage2"] = (accuracy(model, *test), time.perf_counter() - start)
    return results


def train_plain(args, weights, num_classes, train, test):
    """The Keras guide's recipe with the same backbone and weights."""
    start = time.perf_counter()
    size = (args.image_size, args.image_size, 3)
    base = get_backbone(args.backbone).constructor(
        include_top=False, weights=weights, input_shape=size
    )
    base.trainable = False
    inputs = keras.Input(shape=size)
    x = base(inputs, training=False)  # The guide's way to keep BatchNorm in inference mode.
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    loss, metrics = "sparse_categorical_crossentropy", ["accuracy"]
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=metrics)
    model.fit(train(), epochs=1, steps_per_epoch=args.head_steps, verbose=0)
    results = {"plain_stage1": (accuracy(model, *test), time.perf_counter() - start)}
    base.trainable = True
    model.compile(optimizer=keras.optimizers.Adam(1e-5), loss=loss, metrics=metrics)
    model.fit(train(), epochs=1, steps_per_epoch=args.fine_tune_steps, verbose=0)
    results["plain_stage2"] = (accuracy(model, *test), time.perf_counter() - start)
    return results


def train_scratch(args, weights, num_classes, train, test):
    """The whole network from random weights, as many steps as both stages together."""
    start = time.perf_counter()
    model = build_pretrain_model(
        args.backbone, num_classes=num_classes, image_size=args.image_size, weights=weights
    )
    tl.compile_model(model, learning_rate=1e-3)
    model.fit(train(), epochs=1, steps_per_epoch=args.head_steps + args.fine_tune_steps, verbose=0)
    return {"scratch": (accuracy(model, *test), time.perf_counter() - start)}


def run_dataset(args, name: str, rows: list) -> None:
    images, labels, names, pool, test = split_pool_and_test(DATASETS[name], args.image_size)
    held_out = (images[test], labels[test])
    for seed in args.seeds:
        order = [np.random.default_rng(seed).permutation(members) for members in pool]
        for k in args.labels:
            chosen = np.concatenate([members[:k] for members in order])

            def train(chosen=chosen, seed=seed):
                data = make_dataset(
                    images[chosen], labels[chosen], batch_size=args.batch_size, shuffle=True
                )
                return data.repeat()

            runs = [("imagenet", train_tlkeras), ("none", train_tlkeras)]
            runs += [("imagenet", train_plain), ("none", train_scratch)]
            for weights, trainer in runs:
                keras.utils.set_random_seed(seed)
                for method, (acc, seconds) in trainer(
                    args, weights, len(names), train, held_out
                ).items():
                    row = {
                        "dataset": name,
                        "weights": weights,
                        "method": method,
                        "labels_per_class": k,
                        "seed": seed,
                        "test_accuracy": round(acc, 4),
                        "seconds": round(seconds, 1),
                    }
                    rows.append(row)
                    write_row(args, row)
                    print(
                        f"{name:6} seed {seed} k={k:2} {weights:8} {method:15} "
                        f"accuracy {acc:.3f} ({seconds:.0f} s)",
                        flush=True,
                    )
                keras.utils.clear_session()
    print(f"{name}: {len(names)} classes, test set {len(test)} images", flush=True)


def write_row(args, row: dict) -> None:
    """Appends one run to `transfer_real.csv` at once, so a stopped benchmark keeps its runs."""
    path = os.path.join(args.out, "transfer_real.csv")
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def cell(rows, key: str, **where) -> str:
    values = [r[key] for r in rows if all(r[k] == v for k, v in where.items())]
    if not values:
        return "-"
    if key == "seconds":
        return f"{statistics.median(values):.0f} s"
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def summary(rows, args) -> str:
    columns = [
        ("tlkeras stage 1, ImageNet", "imagenet", "tlkeras_stage1"),
        ("tlkeras stage 1, random", "none", "tlkeras_stage1"),
        ("tlkeras 1+2, ImageNet", "imagenet", "tlkeras_stage2"),
        ("tlkeras 1+2, random", "none", "tlkeras_stage2"),
        ("plain Keras 1, ImageNet", "imagenet", "plain_stage1"),
        ("plain Keras 1+2, ImageNet", "imagenet", "plain_stage2"),
        ("from scratch, random", "none", "scratch"),
    ]
    lines = [
        f"{args.backbone} at {args.image_size} px; held-out test accuracy, mean ± std over "
        f"seeds {args.seeds}; stage 1 {args.head_steps} steps at 1e-3, stage 2 "
        f"{args.fine_tune_steps} steps at 1e-5, batch {args.batch_size}",
        "",
        "| set | labels per class | " + " | ".join(c[0] for c in columns) + " |",
        "| --- | --- | " + " | ".join("---" for _ in columns) + " |",
    ]
    for name in args.datasets:
        for k in args.labels:
            cells = [
                cell(rows, "test_accuracy", dataset=name, labels_per_class=k, weights=w, method=m)
                for _, w, m in columns
            ]
            lines.append(f"| {name} | {k} | " + " | ".join(cells) + " |")
    lines += ["", "Median wall time per run (building, both stages, testing):", ""]
    for name in args.datasets:
        times = [
            f"{label} {cell(rows, 'seconds', dataset=name, weights=w, method=m)}"
            for label, w, m in columns
            if m.endswith("stage2") or m == "scratch"
        ]
        lines.append(f"- {name}: " + "; ".join(times))
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    started = time.perf_counter()
    rows: list[dict] = []
    csv_path = os.path.join(args.out, "transfer_real.csv")
    if os.path.exists(csv_path):
        os.remove(csv_path)
    for name in args.datasets:
        run_dataset(args, name, rows)
    table = summary(rows, args)
    print("\n" + table)
    with open(os.path.join(args.out, "transfer_real.md"), "w") as f:
        f.write(table + f"\n\nTotal {time.perf_counter() - started:.0f} s.\n")
    print(f"\nTotal {time.perf_counter() - started:.0f} s. Wrote {args.out}/transfer_real.*")
    return 0


if __name__ == "__main__":
    sys.exit(main())
