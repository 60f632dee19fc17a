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
  python -m tlkeras export runs/digits --format tflite-int8
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
    _add_distribution_arguments(p)
    p.set_defaults(handler=_train)


def _add_distribution_arguments(p) -> None:
    from tlkeras.distribute import LEARNING_RATE_SCALINGS, STRATEGIES

    group = p.add_argument_group(
        "distribution (see README: several GPUs or machines)",
        "--batch-size is per replica (GPU); the global batch is batch size x replicas.",
    )
    group.add_argument(
        "--strategy",
        default="auto",
        choices=STRATEGIES,
        help="auto: every GPU when there are several, else one device; mirrored: every GPU "
        "of this machine; multiworker: several machines, set by TF_CONFIG (default: "
        "%(default)s)",
    )
    group.add_argument(
        "--lr-scaling",
        default="sqrt",
        choices=LEARNING_RATE_SCALINGS,
        help="both learning rates times sqrt(replicas), times replicas, or unchanged "
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
        strategy=args.strategy,
        learning_rate_scaling=args.lr_scaling,
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


def _add_export(commands) -> None:
    from tlkeras.export import FORMATS

    p = commands.add_parser(
        "export",
        help="export a trained run for a server or a phone, with its labels",
        description="Export a trained run as a SavedModel (servers), TFLite float, "
        "dynamic-range or full-int8 (phones), or a .keras file. Every export takes RGB "
        "pixels in [0, 255] and returns class probabilities; a labels file is written "
        "beside it.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder (or .keras file) from train")
    p.add_argument("--format", default="savedmodel", choices=tuple(FORMATS))
    p.add_argument(
        "--out",
        metavar="PATH",
        help="file (.tflite, .keras) or folder (savedmodel) to write "
        "(default: RUN_DIR/export/saved_model, model.tflite, model_int8.tflite ...)",
    )
    p.add_argument(
        "--calibration-images",
        type=int,
        default=100,
        help="tflite-int8: training images to calibrate on (default: %(default)s)",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="run the export in its own runtime (TFLite interpreter, tf.saved_model.load) on "
        "up to 200 validation images and compare it with the Keras model",
    )
    p.add_argument(
        "--data-dir",
        metavar="DATA_DIR",
        help="data folder for calibration and --check (default: the run's training data)",
    )
    p.set_defaults(handler=_export)


def _export(args) -> int:
    from tlkeras.export import check_export, export_model, sample_images
    from tlkeras.runs import load_run

    run = load_run(args.run_dir)
    result = export_model(
        run,
        format=args.format,
        out=args.out,
        data_dir=args.data_dir,
        num_calibration_images=args.calibration_images,
    )
    print(
        f"Exported {result.format} to {result.path} ({result.size_bytes / 1e6:.1f} MB); "
        f"labels in {result.labels_path}."
    )
    if args.check:
        images = sample_images(run, split="val", data_dir=args.data_dir, num_images=200)
        report = check_export(run, result, images)
        print(
            f"Checked on {report['num_images']} validation images against Keras: top class "
            f"agrees on {report['top1_agreement']:.1%}, largest probability difference "
            f"{report['max_abs_difference']:.2g}."
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
    for add in (_add_train, _add_predict, _add_evaluate, _add_backbones, _add_export):
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
