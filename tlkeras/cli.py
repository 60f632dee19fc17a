"""The command line: `python -m tlkeras train|predict|evaluate|backbones ...`.

This module only parses arguments and calls the library. A mistake in what the user typed
is reported as one line on stderr with exit status 2; other failures (no ImageNet weights
offline, a broken file) as one line with status 1. Set TLKERAS_DEBUG=1 for tracebacks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Hide TensorFlow's start-up chatter.

EXAMPLES = """examples:
  python -m tlkeras train data_samples/digits --weights none --image-size 32 \\
      --epochs 3 --fine-tune-epochs 2 --out runs/digits
  python -m tlkeras predict runs/digits data_samples/predict_examples/digit_3.png
  python -m tlkeras evaluate runs/digits data_samples/digits
"""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: what was wrong and where to get help."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _add_train(commands) -> None:
    from tlkeras.backbones import BACKBONES

    p = commands.add_parser(
        "train",
        help="train a classifier on a folder of images",
        description="Train a new head on a frozen ImageNet backbone, then optionally fine-tune "
        "its top blocks. DATA_DIR holds one subfolder per class, or train/ and val/ "
        "(and test/) subfolders that each hold class folders.",
    )
    p.add_argument("data_dir", metavar="DATA_DIR", help="folder of class folders")
    p.add_argument(
        "--out", default="runs/latest", help="run folder to write (default: %(default)s)"
    )
    model = p.add_argument_group("model")
    model.add_argument(
        "--backbone", default="vgg16", choices=sorted(BACKBONES), help="(default: %(default)s)"
    )
    model.add_argument(
        "--weights",
        default="imagenet",
        metavar="imagenet|none|PATH",
        help="pretrained ImageNet weights (downloaded once by Keras), none for random "
        "initialisation (offline), or a weights file (default: %(default)s)",
    )
    model.add_argument(
        "--image-size", type=int, help="square input size in pixels (default: the backbone's)"
    )
    model.add_argument(
        "--dense-units",
        type=int,
        default=1024,
        help="hidden units in the head, 0 for none (default: %(default)s)",
    )
    model.add_argument("--dropout", type=float, default=0.2, help="(default: %(default)s)")
    data = p.add_argument_group("data")
    data.add_argument("--batch-size", type=int, default=32, help="(default: %(default)s)")
    data.add_argument(
        "--validation-split",
        type=float,
        default=0.2,
        help="fraction held out when there is no val/ folder (default: %(default)s)",
    )
    data.add_argument(
        "--seed",
        type=int,
        default=0,
        help="for the split, shuffling and weights (default: %(default)s)",
    )
    stage1 = p.add_argument_group("stage 1: train the head, backbone frozen")
    stage1.add_argument("--epochs", type=int, default=10, help="(default: %(default)s)")
    stage1.add_argument(
        "--lr", type=float, default=1e-3, help="learning rate (default: %(default)s)"
    )
    stage2 = p.add_argument_group("stage 2: fine-tune the top blocks (BatchNorm stays frozen)")
    stage2.add_argument(
        "--fine-tune-epochs",
        type=int,
        default=0,
        help="0 skips fine-tuning (default: %(default)s)",
    )
    stage2.add_argument(
        "--unfreeze",
        type=int,
        default=1,
        help="blocks to unfreeze, from the top (default: %(default)s)",
    )
    stage2.add_argument("--fine-tune-lr", type=float, default=1e-5, help="(default: %(default)s)")
    stage2.add_argument(
        "--patience",
        type=int,
        default=5,
        help="early-stopping patience, 0 for off (default: %(default)s)",
    )
    _add_speed_options(p)
    p.set_defaults(handler=_train)


def _add_speed_options(p) -> None:
    from tlkeras.precision import PRECISIONS
    from tlkeras.train import CACHE_MODES

    speed = p.add_argument_group("speed (see the README's Performance section)")
    speed.add_argument(
        "--precision",
        default="float32",
        choices=PRECISIONS,
        help="mixed_bfloat16 for CPUs with AVX512_BF16/AMX and TPUs, mixed_float16 for GPUs; "
        "the last layer stays float32 (default: %(default)s)",
    )
    speed.add_argument(
        "--jit-compile",
        action=argparse.BooleanOptionalAction,
        default="auto",
        help="XLA-compile the model (default: Keras' auto, on with a GPU, off on a CPU)",
    )
    speed.add_argument(
        "--cache",
        default="auto",
        choices=CACHE_MODES,
        help="run the frozen layers once and keep their output in memory or on disk (auto "
        "decides from its size); off runs the whole backbone every epoch (default: %(default)s)",
    )
    speed.add_argument(
        "--augment-passes",
        type=int,
        default=0,
        metavar="K",
        help="with augmentation on: 0 trains end to end, K caches K augmented passes "
        "(default: %(default)s)",
    )


def _train(args) -> int:
    from tlkeras.train import TrainConfig, train

    config = TrainConfig(
        data_dir=args.data_dir,
        out=args.out,
        backbone=args.backbone,
        weights=args.weights,
        image_size=args.image_size,
        batch_size=args.batch_size,
        epochs=args.epochs,
        fine_tune_epochs=args.fine_tune_epochs,
        unfreeze=args.unfreeze,
        learning_rate=args.lr,
        fine_tune_learning_rate=args.fine_tune_lr,
        validation_split=args.validation_split,
        dense_units=args.dense_units,
        dropout=args.dropout,
        patience=args.patience,
        seed=args.seed,
        precision=args.precision,
        jit_compile=args.jit_compile,
        cache=args.cache,
        augment_passes=args.augment_passes,
    )
    run = train(config)
    best = max(run.history.get("val_accuracy") or [float("nan")])
    print(f"Saved the run to {run.path} (best val_accuracy {best:.3f}).")
    return 0


def _add_predict(commands) -> None:
    p = commands.add_parser(
        "predict",
        help="predict the classes of image files",
        description="Print the most probable classes of each image, using a trained run.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder (or .keras file) from train")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files")
    p.add_argument("--top-k", type=int, default=3, help="classes per image (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(handler=_predict)


def _predict(args) -> int:
    from tlkeras.predict import predict
    from tlkeras.runs import load_run

    results = predict(load_run(args.run_dir), args.images, top_k=args.top_k)
    if args.json:
        print(json.dumps(results, indent=2, ensure_ascii=False))
        return 0
    for result in results:
        top = ", ".join(f"{name} {prob:.3f}" for name, prob in result["top"])
        print(f"{result['path']}: {top}")
    return 0


def _add_evaluate(commands) -> None:
    p = commands.add_parser(
        "evaluate",
        help="measure accuracy on a folder of labelled images",
        description="Evaluate a trained run on DATA_DIR in a fixed order: accuracy, "
        "per-class precision/recall/F1 and the confusion matrix.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder (or .keras file) from train")
    p.add_argument(
        "data_dir", metavar="DATA_DIR", help="folder of class folders, or of split folders"
    )
    p.add_argument(
        "--split",
        choices=("train", "val", "test"),
        help="which split folder (default: test, else val)",
    )
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(handler=_evaluate)


def _evaluate(args) -> int:
    from tlkeras.evaluate import evaluate, format_report
    from tlkeras.runs import load_run

    report = evaluate(load_run(args.run_dir), args.data_dir, split=args.split)
    if args.json:
        keep = ("split", "num_images", "accuracy", "class_names", "per_class", "confusion_matrix")
        print(json.dumps({key: report[key] for key in keep}, indent=2, ensure_ascii=False))
    else:
        print(format_report(report))
    return 0


def _add_backbones(commands) -> None:
    p = commands.add_parser(
        "backbones",
        help="list the backbones, their input sizes and blocks",
        description="List every backbone with its preprocessing, input sizes and the blocks "
        "that --unfreeze counts (bottom to top).",
    )
    p.set_defaults(handler=_backbones)


def _backbones(args) -> int:
    from tlkeras.backbones import BACKBONES

    for b in BACKBONES.values():
        print(
            f"{b.name:16} preprocessing={b.preprocessing:6} default={b.default_size} "
            f"min={b.min_size}\n{'':16} blocks: {' '.join(b.block_names)}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `tlkeras` argument parser with one subcommand per task."""
    parser = _Parser(
        prog="tlkeras",
        description="Transfer learning on images with Keras: a frozen ImageNet backbone, a new "
        "head, optional fine-tuning.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    commands._parser_class = _Parser
    for add in (_add_train, _add_predict, _add_evaluate, _add_backbones):
        add(commands)
    return parser


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def main(argv=None) -> int:
    """Runs the command line and returns its exit status (0 ok, 1 failure, 2 usage error)."""
    args = build_parser().parse_args(argv)
    from tlkeras.model import WeightsUnavailableError

    try:
        return args.handler(args)
    except (ValueError, TypeError) as error:
        if os.environ.get("TLKERAS_DEBUG"):
            raise
        print(f"tlkeras: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tlkeras: interrupted", file=sys.stderr)
        return 130
    except (WeightsUnavailableError, OSError, RuntimeError) as error:
        if os.environ.get("TLKERAS_DEBUG"):
            raise
        print(f"tlkeras: error: {_one_line(error)}", file=sys.stderr)
        return 1
