"""Does pretraining on your own source domain help? Digits 0-4 -> digits 5-9, offline.

The real handwritten digits in `data_samples/digits` stand in for a lab's data: the digits
0-4 are the large labelled *source* set, the digits 5-9 a new *target* task with only a few
labelled images per class.

1. `tlkeras.pretrain` trains a whole backbone from scratch on the digits 0-4 and writes the
   pretrained folder that `train --weights` takes.
2. For 5, 10 and 20 labelled images per class of the digits 5-9 (drawn per seed from one half
   of those digits), these models are trained (`--methods`):
   - frozen: tlkeras' recipe on the pretrained backbone (`build_model(weights=FOLDER)`:
     backbone frozen, new head trained), what `train TARGET --weights FOLDER` does;
   - fine_tuned: the pretrained backbone with a new head, every layer trained, what
     `pretrain TARGET --weights FOLDER` does;
   - scratch: the same network, every layer trained from random initialisation, exactly as
     fine_tuned except for the starting weights;
   - random_frozen (not run by default): tlkeras' recipe on a random frozen backbone
     (`weights=None`). With MobileNetV2 it is chance: a random backbone's BatchNorm layers
     hold their initial statistics, and its features fade to about 1e-12.
3. Each model is tested on the other half of the digits 5-9, never used for training. The
   script prints a table (mean and standard deviation over seeds), and writes a
   learning-curve plot and a CSV of every run.

Every run uses the same settings: Adam at 1e-3 (the default of `train_head` and `pretrain`),
batch size 16 and 200 training steps, however many labelled images it has, with no early
stopping: with 5 images per class there is nothing to hold out for validation. Where
BatchNorm trains (fine_tuned, scratch) every batch is full, as in `pretrain`. To keep the
script to about 10 minutes on 2 CPU cores, each method's model is compiled once (the way
`train_head` and `pretrain` compile it) and reset to a fresh initialisation before each run,
rather than compiled again: compiling MobileNetV2's training step takes 20-40 s there.

Usage (from the repository root):

    python benchmarks/transfer_digits.py                   # 871 s on 2 busy CPU cores
    python benchmarks/transfer_digits.py --quick           # a smoke run: 1 seed, fewer steps
    python benchmarks/transfer_digits.py --labels 1 2 5 --methods frozen fine_tuned scratch
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tlkeras as tl  # noqa: E402
from tlkeras.data import make_dataset, scan_class_folders  # noqa: E402
from tlkeras.images import load_images  # noqa: E402
from tlkeras.pretrain import build_pretrain_model, whole_batches  # noqa: E402

METHODS = {
    "frozen": "transfer, frozen backbone",
    "fine_tuned": "transfer, whole network fine-tuned",
    "scratch": "from scratch, whole network",
    "random_frozen": "random frozen backbone",
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default="data_samples/digits")
    p.add_argument("--source-classes", nargs="+", default=["0", "1", "2", "3", "4"])
    p.add_argument("--target-classes", nargs="+", default=["5", "6", "7", "8", "9"])
    p.add_argument("--labels", type=int, nargs="+", default=[5, 10, 20], help="per class")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument(
        "--methods", nargs="+", choices=list(METHODS), default=["frozen", "fine_tuned", "scratch"]
    )
    p.add_argument("--backbone", default="mobilenet_v2")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--pretrain-epochs", type=int, default=10)
    p.add_argument("--steps", type=int, default=200, help="training steps per target run")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--pretrained", help="reuse this pretrained folder instead of pretraining")
    p.add_argument("--out", default="benchmarks/results", help="where the plot and CSV go")
    p.add_argument("--quick", action="store_true", help="1 seed, fewer epochs and steps")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.pretrain_epochs, args.steps = args.seeds[:1], 5, 60
    return args


def pretrain_on_source(args, workdir: str) -> tuple[str, float, float]:
    """Pretrains on the source classes; returns (folder, best val_accuracy, seconds)."""
    if args.pretrained:
        manifest = tl.weights.read_manifest(args.pretrained)
        return args.pretrained, manifest["best_val_accuracy"], 0.0
    source = os.path.join(workdir, "source")
    os.makedirs(source)
    for name in args.source_classes:  # The source classes only, as a folder of class folders.
        os.symlink(os.path.abspath(os.path.join(args.data_dir, name)), os.path.join(source, name))
    start = time.perf_counter()
    run = tl.pretrain(
        tl.PretrainConfig(
            source,
            out=os.path.join(workdir, "pretrained"),
            backbone=args.backbone,
            image_size=args.image_size,
            epochs=args.pretrain_epochs,
            seed=0,
        )
    )
    return run.path, max(run.history["val_accuracy"]), time.perf_counter() - start


def target_split(args):
    """Half of each target class is the pool labelled images are drawn from; half is the test."""
    split, names = scan_class_folders(args.data_dir)
    keep = [names.index(name) for name in args.target_classes]
    paths = [p for p, label in zip(split.paths, split.labels, strict=True) if label in keep]
    labels = np.array([keep.index(label) for label in split.labels if label in keep])
    images = load_images(paths, (args.image_size, args.image_size))
    rng = np.random.default_rng(1234)
    pool, test = [], []
    for label in range(len(keep)):
        members = rng.permutation(np.flatnonzero(labels == label))
        pool.append(members[: len(members) // 2])
        test += members[len(members) // 2 :].tolist()
    return images, labels, pool, np.array(sorted(test))


class Method:
    """One way to train on the target labels: its model is compiled once, reset per run."""

    def __init__(self, build, *, frozen: bool, learning_rate: float = 1e-3):
        self.build, self.frozen = build, frozen
        self.model = build()
        if frozen:
            tl.freeze_backbone(self.model)
        tl.compile_model(self.model, learning_rate=learning_rate)  # As train_head, pretrain.
        self.model.optimizer.build(self.model.trainable_variables)
        self.fresh_optimizer = [v.numpy() for v in self.model.optimizer.variables]

    def run(self, images, labels, *, seed: int, steps: int, batch_size: int) -> None:
        keras.utils.set_random_seed(seed)
        self.model.set_weights(self.build().get_weights())  # A fresh head (and backbone).
        for variable, value in zip(
            self.model.optimizer.variables, self.fresh_optimizer, strict=True
        ):
            variable.assign(value)
        data = make_dataset(images, labels, batch_size=batch_size, shuffle=True, seed=seed)
        if not self.frozen:  # BatchNorm trains: full batches only, as `pretrain` does.
            data = whole_batches(data, batch_size=batch_size)
        self.model.fit(data.repeat(), steps_per_epoch=steps, epochs=1, shuffle=False, verbose=0)

    def accuracy(self, images, labels) -> float:
        predicted = self.model.predict(images.astype("float32"), batch_size=256, verbose=0)
        return float(np.mean(predicted.argmax(axis=1) == labels))


def main(argv=None) -> int:
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        folder, source_accuracy, pretrain_seconds = pretrain_on_source(args, workdir)
        print(
            f"Pretrained {args.backbone} on digits {','.join(args.source_classes)}: best "
            f"val_accuracy {source_accuracy:.3f} ({pretrain_seconds:.0f} s)",
            flush=True,
        )
        images, labels, pool, test = target_split(args)
        name, n, size = args.backbone, len(args.target_classes), args.image_size
        builders = {
            # tlkeras' recipe: build_model(weights=FOLDER) freezes the pretrained backbone.
            "frozen": (
                lambda: tl.build_model(name, num_classes=n, image_size=size, weights=folder)
            ),
            # Pretrained start, every layer trained: what `pretrain TARGET --weights FOLDER` does.
            "fine_tuned": (
                lambda: build_pretrain_model(name, num_classes=n, image_size=size, weights=folder)
            ),
            "scratch": (
                lambda: build_pretrain_model(name, num_classes=n, image_size=size, weights="none")
            ),
            "random_frozen": (
                lambda: tl.build_model(name, num_classes=n, image_size=size, weights=None)
            ),
        }
        methods = {
            method: Method(builders[method], frozen=method in ("frozen", "random_frozen"))
            for method in args.methods
        }
        rows = []
        for seed in args.seeds:
            order = [np.random.default_rng(seed).permutation(members) for members in pool]
            for k in args.labels:
                chosen = np.concatenate([members[:k] for members in order])
                for method_name, method in methods.items():
                    start = time.perf_counter()
                    method.run(
                        images[chosen],
                        labels[chosen],
                        seed=seed,
                        steps=args.steps,
                        batch_size=args.batch_size,
                    )
                    accuracy = method.accuracy(images[test], labels[test])
                    seconds = time.perf_counter() - start
                    rows.append(
                        {
                            "method": method_name,
                            "labels_per_class": k,
                            "seed": seed,
                            "test_accuracy": accuracy,
                            "seconds": round(seconds, 1),
                        }
                    )
                    print(
                        f"seed {seed} k={k:3} {method_name:14} test accuracy {accuracy:.3f} "
                        f"({seconds:.0f} s)",
                        flush=True,
                    )
    table = summary(rows, args)
    print("\n" + table)
    write_outputs(rows, table, args, source_accuracy, len(test))
    print(f"\nTotal {time.perf_counter() - started:.0f} s. Wrote {args.out}/transfer_digits.*")
    return 0


def accuracies(rows, method: str, labels_per_class: int) -> list[float]:
    return [
        r["test_accuracy"]
        for r in rows
        if r["method"] == method and r["labels_per_class"] == labels_per_class
    ]


def summary(rows, args) -> str:
    lines = [
        f"{args.backbone} at {args.image_size} px; source digits "
        f"{','.join(args.source_classes)}, target digits {','.join(args.target_classes)}; "
        f"test accuracy, mean ± std over seeds {args.seeds}",
        "",
        "| labelled images per class | " + " | ".join(METHODS[m] for m in args.methods) + " |",
        "| --- | " + " | ".join("---" for _ in args.methods) + " |",
    ]
    for k in args.labels:
        cells = []
        for name in args.methods:
            values = accuracies(rows, name, k)
            cells.append(f"{np.mean(values):.3f} ± {np.std(values):.3f}")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_outputs(rows, table, args, source_accuracy, num_test) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(os.path.join(args.out, "transfer_digits.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(args.out, "transfer_digits.md"), "w") as f:
        f.write(
            table + f"\n\nSource pretraining: best val_accuracy {source_accuracy:.3f}. "
            f"Test set: {num_test} images of the target digits.\n"
        )
    figure, axes = plt.subplots(figsize=(6, 4))
    for name in args.methods:
        label = METHODS[name]
        means = [np.mean(accuracies(rows, name, k)) for k in args.labels]
        stds = [np.std(accuracies(rows, name, k)) for k in args.labels]
        axes.errorbar(args.labels, means, yerr=stds, marker="o", capsize=3, label=label)
    axes.set_xlabel("labelled images per target class")
    axes.set_ylabel(f"test accuracy ({num_test} images)")
    axes.set_xticks(args.labels)
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    axes.set_title(
        f"digits {args.source_classes[0]}-{args.source_classes[-1]} → "
        f"{args.target_classes[0]}-{args.target_classes[-1]}, {args.backbone}"
    )
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(os.path.join(args.out, "transfer_digits.png"), dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    sys.exit(main())
