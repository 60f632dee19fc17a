"""The command line: `python -m tlkeras COMMAND ...`; `python -m tlkeras --help` lists them.

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
  python -m tlkeras evaluate runs/digits data_samples/digits --out reports/digits
  python -m tlkeras scan data_samples/digits
  python -m tlkeras explain runs/digits data_samples/predict_examples/digit_3.png
  python -m tlkeras lr-find data_samples/digits --weights none --image-size 32
  python -m tlkeras compare data_samples/digits --backbones vgg16,mobilenet_v2 \\
      --weights none --image-size 32 --epochs 3
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
        "--backbone",
        choices=sorted(BACKBONES),
        help="(default: vgg16, or the backbone a PRETRAIN_DIR was made for)",
    )
    model.add_argument(
        "--weights",
        default="imagenet",
        metavar="imagenet|none|PRETRAIN_DIR|PATH",
        help="pretrained ImageNet weights (downloaded once by Keras), none for random "
        "initialisation (offline), a folder from `tlkeras pretrain`, or a weights file "
        "(default: %(default)s)",
    )
    _add_weights_dir(model)
    model.add_argument(
        "--image-size",
        type=int,
        help="square input size in pixels (default: a PRETRAIN_DIR's, else the backbone's)",
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
    _add_data_check_arguments(p)
    _add_resume_arguments(p)
    _add_distribution_arguments(p)
    _add_speed_options(p)
    p.set_defaults(handler=_train)


def _add_resume_arguments(p) -> None:
    group = p.add_argument_group(
        "checkpoints and resuming",
        "Every epoch is checkpointed in OUT/checkpoint/. Ctrl-C stops after the current batch "
        "and keeps the last checkpoint.",
    )
    group.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its last checkpoint, with the same settings "
        "(the learning rates and --patience may change)",
    )
    group.add_argument(
        "--overwrite", action="store_true", help="delete the run in --out and start again"
    )
    group.add_argument(
        "--deterministic",
        action="store_true",
        help="TensorFlow op determinism: the same --seed gives identical weights (slower)",
    )
    p.set_defaults(default_out=p.get_default("out"))


def _run_folder(args) -> str:
    """--resume RUN_DIR names the run folder; an --out beside it must agree."""
    if args.resume is None:
        return args.out
    if args.out not in (args.default_out, args.resume):
        raise ValueError(
            f"--resume {args.resume} continues the run in {args.resume}, but --out names "
            f"another folder. Drop --out or make it the same. Received: out={args.out!r}"
        )
    return args.resume


def _add_speed_options(p) -> None:
    from tlkeras.config import CACHE_MODES
    from tlkeras.precision import PRECISIONS

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
        help="auto|memory|disk: run the frozen layers once and train on their cached output "
        "(same result, many times faster; auto keeps it in memory when it fits, else on disk); "
        "off: run the whole model every epoch (default: %(default)s)",
    )
    speed.add_argument(
        "--augment-passes",
        type=int,
        default=0,
        metavar="K",
        help="with augmentation on: 0 trains end to end, K caches K augmented versions of "
        "every training image (default: %(default)s)",
    )


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
        out=_run_folder(args),
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
        **_data_check_options(args),
        resume=args.resume is not None,
        overwrite=args.overwrite,
        deterministic=args.deterministic,
        strategy=args.strategy,
        learning_rate_scaling=args.lr_scaling,
        weights_dir=args.weights_dir,
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
    p.add_argument(
        "--grid", metavar="PNG", help="also save the images with their top class as a PNG grid"
    )
    p.set_defaults(handler=_predict)


def _predict(args) -> int:
    from tlkeras.predict import predict
    from tlkeras.runs import load_run

    run = load_run(args.run_dir)
    results = predict(run, args.images, top_k=args.top_k)
    if args.grid:
        from tlkeras.plots import plot_predictions

        plot_predictions(results, image_size=run.image_size, path=args.grid)
        print(f"Saved the predictions grid to {args.grid}", file=sys.stderr)
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
        choices=("train", "val", "test", "all"),
        help="which images: a split folder, or for the folder the run was trained on its "
        "train/val part, or all (default: test, else the validation images)",
    )
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    report = p.add_argument_group("report")
    report.add_argument(
        "--out",
        metavar="REPORT_DIR",
        help="write a report folder: report.html (open it in a browser, works offline), "
        "metrics.json, confusion matrices (PNG, JSON), per-class chart, top losses",
    )
    report.add_argument(
        "--top-losses",
        type=int,
        default=16,
        metavar="N",
        help="images in the top-losses grid (default: %(default)s)",
    )
    p.set_defaults(handler=_evaluate)


def _evaluate(args) -> int:
    from tlkeras.evaluate import evaluate, format_report
    from tlkeras.report import report_metrics, write_report
    from tlkeras.runs import load_run

    run = load_run(args.run_dir)
    report = evaluate(run, args.data_dir, split=args.split)
    summary = report_metrics(report, run=run)
    if summary["warning"]:
        print(f"tlkeras: warning: {summary['warning']}", file=sys.stderr)
    if args.out:
        page = write_report(run, report, args.out, num_top_losses=args.top_losses)
        print(f"Wrote the report to {page}", file=sys.stderr)
    if args.json:
        summary["confusion_matrix"] = report["confusion_matrix"]
        summary["skipped_files"] = report["skipped_files"]
        print(json.dumps(summary, indent=2, ensure_ascii=False))
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


def _add_augment_arguments(group, default: str = "none") -> None:
    from tlkeras.augment import FLIP_MODES, PRESETS

    group.add_argument(
        "--augment",
        default=default,
        choices=tuple(PRESETS),
        help="random flips, rotations, zooms, shifts and contrast on training images only "
        "(default: %(default)s)",
    )
    group.add_argument("--flip", choices=FLIP_MODES, help="override the preset's flip")
    for name, what in (
        ("rotation", "fraction of a full turn, e.g. 0.05 = 18 degrees"),
        ("zoom", "fraction of the size, below 1"),
        ("translation", "fraction of the height and width"),
        ("contrast", "contrast factor"),
    ):
        group.add_argument(
            f"--{name}", type=float, metavar="F", help=f"override the preset's {name}: {what}"
        )


def _add_data_check_arguments(p) -> None:
    group = p.add_argument_group("data checks, augmentation and class balance")
    group.add_argument(
        "--strict",
        action="store_true",
        help="fail when a file cannot be read (default: skip it and list it)",
    )
    _add_augment_arguments(group)
    group.add_argument(
        "--class-weight",
        default="none",
        choices=("none", "balanced"),
        help="balanced: weigh the loss by inverse class size (default: %(default)s)",
    )


def _augment_options(args) -> dict:
    names = ("augment", "flip", "rotation", "zoom", "translation", "contrast")
    return {name: getattr(args, name) for name in names}


def _data_check_options(args) -> dict:
    return {"strict": args.strict, "class_weight": args.class_weight, **_augment_options(args)}


def _add_scan(commands) -> None:
    p = commands.add_parser(
        "scan",
        help="check every image of a data folder before training",
        description="Decode every image of DATA_DIR in parallel and report unreadable or "
        "unsupported files (with the reason), files that are not images, and the number of "
        "images per class and split. Training runs the same scan first.",
    )
    p.add_argument(
        "data_dir", metavar="DATA_DIR", help="folder of class folders, or of split folders"
    )
    p.add_argument(
        "--image-size",
        type=int,
        help="decode as training would at this size (default: full size)",
    )
    p.add_argument("--validation-split", type=float, default=0.2, help="(default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="of the split (default: %(default)s)")
    p.add_argument("--workers", type=int, help="decoding threads (default: CPUs + 4)")
    p.add_argument("--out", metavar="FILE", help="also write the full report as JSON")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--strict", action="store_true", help="exit with status 2 when a file cannot be read"
    )
    p.set_defaults(handler=_scan)


def _scan(args) -> int:
    from tlkeras.scan import scan_dataset

    report = scan_dataset(
        args.data_dir,
        validation_split=args.validation_split,
        seed=args.seed,
        image_size=args.image_size,
        num_workers=args.workers,
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(report.summary())
    if args.out:
        report.save(args.out)
    if args.strict:
        report.raise_if_bad_files()
    return 0


def _add_preview(commands) -> None:
    p = commands.add_parser(
        "preview-augment",
        help="save a grid of augmented training images",
        description="Draw a few images next to random augmentations of them, exactly as "
        "training would augment them, and save the grid as an image.",
    )
    p.add_argument("sources", metavar="PATH", nargs="+", help="a data folder, or image files")
    p.add_argument(
        "--out", default="augmentation.png", help="image file to write (default: %(default)s)"
    )
    p.add_argument(
        "--num-images", type=int, default=4, help="rows, from a data folder (default: %(default)s)"
    )
    p.add_argument(
        "--num-variants",
        type=int,
        default=5,
        help="augmented copies per image (default: %(default)s)",
    )
    p.add_argument("--image-size", type=int, default=128, help="(default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    _add_augment_arguments(p.add_argument_group("augmentation"), default="light")
    p.set_defaults(handler=_preview)


def _preview(args) -> int:
    from tlkeras.augment import get_augmentation
    from tlkeras.plots import preview_augmentation, sample_paths

    augmentation = get_augmentation(**_augment_options(args))
    paths = args.sources
    if len(paths) == 1 and os.path.isdir(paths[0]):
        paths = sample_paths(paths[0], num_images=args.num_images, seed=args.seed)
    figure = preview_augmentation(
        paths,
        augmentation,
        image_size=args.image_size,
        num_variants=args.num_variants,
        seed=args.seed,
    )
    figure.savefig(args.out, dpi=100)
    print(f"Saved {len(paths)} images with {args.num_variants} augmentations each to {args.out}")
    return 0


# -- seeing what the model learned: explain, lr-find, compare, plot-history --------------------


def _add_explain(commands) -> None:
    p = commands.add_parser(
        "explain",
        help="show where the model looked (Grad-CAM heatmaps)",
        description="Overlay a Grad-CAM heatmap on each image: the regions that pushed the "
        "model towards the predicted class (or --class). Writes DIR/<image>_gradcam.png.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder (or .keras file) from train")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files")
    p.add_argument("--out", default="explain", metavar="DIR", help="(default: %(default)s)")
    p.add_argument(
        "--class",
        dest="class_name",
        metavar="NAME",
        help="explain this class instead of the predicted one",
    )
    p.add_argument(
        "--layer", help="backbone layer to use (default: its last convolutional feature map)"
    )
    p.add_argument("--alpha", type=float, default=0.4, help="heatmap opacity (default: 0.4)")
    p.set_defaults(handler=_explain)


def _explain(args) -> int:
    from tlkeras.explain import explain, save_explanations
    from tlkeras.runs import load_run

    run = load_run(args.run_dir)
    results = explain(
        run, args.images, class_name=args.class_name, layer_name=args.layer, alpha=args.alpha
    )
    for item, path in zip(results, save_explanations(results, args.out), strict=True):
        print(
            f"{item['path']}: predicted {item['predicted']} {item['probability']:.3f}; "
            f"Grad-CAM for {item['class_name']} saved to {path}"
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
    from tlkeras.export import NEAR_TIE, check_export, export_model, sample_images
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
        if report["top1_agreement"] < 1 and report["top1_agreement_clear"] is not None:
            print(
                f"{report['near_tie_share']:.0%} of them are near-ties (Keras' top two classes "
                f"less than {NEAR_TIE} apart); on the others it agrees on "
                f"{report['top1_agreement_clear']:.1%}."
            )
    return 0


def _add_model_and_data_arguments(p, *, epochs: int) -> None:
    """The model and data flags lr-find and compare share with train (same defaults)."""
    model = p.add_argument_group("model")
    model.add_argument(
        "--weights", default="imagenet", metavar="imagenet|none|PATH", help="(default: imagenet)"
    )
    model.add_argument(
        "--image-size", type=int, help="square input size in pixels (default: the backbone's)"
    )
    model.add_argument("--dense-units", type=int, default=1024, help="(default: %(default)s)")
    model.add_argument("--dropout", type=float, default=0.2, help="(default: %(default)s)")
    data = p.add_argument_group("data")
    data.add_argument("--batch-size", type=int, default=32, help="(default: %(default)s)")
    data.add_argument("--validation-split", type=float, default=0.2, help="(default: 0.2)")
    data.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    training = p.add_argument_group("training")
    training.add_argument(
        "--epochs", type=int, default=epochs, help="stage 1 epochs (default: %(default)s)"
    )
    training.add_argument(
        "--lr", type=float, default=1e-3, help="stage 1 learning rate (default: %(default)s)"
    )
    training.add_argument(
        "--unfreeze", type=int, default=1, help="blocks unfrozen in stage 2 (default: 1)"
    )


def _config(args, **overrides):
    from tlkeras.train import TrainConfig

    fields = dict(
        data_dir=args.data_dir,
        out=args.out,
        weights=args.weights,
        image_size=args.image_size,
        batch_size=args.batch_size,
        epochs=args.epochs,
        unfreeze=args.unfreeze,
        learning_rate=args.lr,
        validation_split=args.validation_split,
        dense_units=args.dense_units,
        dropout=args.dropout,
        seed=args.seed,
    )
    return TrainConfig(**{**fields, **overrides})


def _add_lr_find(commands) -> None:
    from tlkeras.backbones import BACKBONES
    from tlkeras.lr_find import RULES

    p = commands.add_parser(
        "lr-find",
        help="sweep the learning rate and suggest one",
        description="Grow the learning rate exponentially over a few batches, plot the loss "
        "against it (DIR/lr_find.png) and suggest a rate. Stage 1 sweeps the head; stage 2 "
        "the unfrozen top blocks of a model whose head is trained (from --run, or trained "
        "here for --epochs first). The model's weights are restored afterwards.",
    )
    p.add_argument("data_dir", metavar="DATA_DIR", help="folder of class folders")
    p.add_argument("--out", default="runs/lr_find", metavar="DIR", help="(default: %(default)s)")
    p.add_argument(
        "--backbone", default="vgg16", choices=sorted(BACKBONES), help="(default: %(default)s)"
    )
    sweep = p.add_argument_group("sweep")
    sweep.add_argument("--stage", type=int, choices=(1, 2), default=1, help="(default: 1)")
    sweep.add_argument(
        "--run", metavar="RUN_DIR", help="start from this trained run (its backbone and size)"
    )
    sweep.add_argument("--min-lr", type=float, default=1e-7, help="(default: %(default)s)")
    sweep.add_argument("--max-lr", type=float, default=10.0, help="(default: %(default)s)")
    sweep.add_argument("--num-steps", type=int, default=100, help="batches (default: 100)")
    sweep.add_argument("--rule", choices=RULES, default="valley", help="(default: valley)")
    _add_model_and_data_arguments(p, epochs=3)
    p.set_defaults(handler=_lr_find)


def _lr_find(args) -> int:
    from tlkeras.lr_find import lr_find_from_config

    result = lr_find_from_config(
        _config(args, backbone=args.backbone),
        stage=args.stage,
        run_dir=args.run,
        min_lr=args.min_lr,
        max_lr=args.max_lr,
        num_steps=args.num_steps,
        rule=args.rule,
    )
    print(result.summary())
    print(f"Saved the plot to {os.path.join(args.out, 'lr_find.png')}")
    return 0


def _add_compare(commands) -> None:
    p = commands.add_parser(
        "compare",
        help="train several backbones on the same split and compare them",
        description="Train each backbone with the same data, split, seed and settings, then "
        "write a table (comparison.csv, .json) of validation accuracy, training time, "
        "images/s, parameters and model size, and a bar chart (comparison.png).",
    )
    p.add_argument("data_dir", metavar="DATA_DIR", help="folder of class folders")
    p.add_argument(
        "--backbones",
        required=True,
        metavar="NAMES",
        help="comma-separated, e.g. vgg16,resnet50,inceptionv3",
    )
    p.add_argument("--out", default="runs/compare", metavar="DIR", help="(default: %(default)s)")
    _add_model_and_data_arguments(p, epochs=10)
    stage2 = p.add_argument_group("stage 2")
    stage2.add_argument("--fine-tune-epochs", type=int, default=0, help="(default: 0)")
    stage2.add_argument("--fine-tune-lr", type=float, default=1e-5, help="(default: 1e-05)")
    stage2.add_argument(
        "--patience", type=int, default=5, help="early-stopping patience, 0 for off (default: 5)"
    )
    p.set_defaults(handler=_compare)


def _compare(args) -> int:
    from tlkeras.compare import compare_backbones, format_comparison

    config = _config(
        args,
        fine_tune_epochs=args.fine_tune_epochs,
        fine_tune_learning_rate=args.fine_tune_lr,
        patience=args.patience,
    )
    rows = compare_backbones(config, args.backbones)
    print(format_comparison(rows))
    print(f"Saved the table and chart to {args.out}/comparison.csv, .json, .png")
    return 0


def _add_plot_history(commands) -> None:
    p = commands.add_parser(
        "plot-history",
        help="redraw the training curves of a run",
        description="Redraw loss and accuracy per epoch from RUN_DIR/history.json, with a "
        "line where fine-tuning starts (train already saves RUN_DIR/history.png).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder from train")
    p.add_argument("--out", metavar="PNG", help="(default: RUN_DIR/history.png)")
    p.set_defaults(handler=_plot_history)


def _plot_history(args) -> int:
    from tlkeras.plots import HISTORY_PLOT_FILE, plot_history

    path = args.out or os.path.join(args.run_dir, HISTORY_PLOT_FILE)
    plot_history(args.run_dir, path=path)
    print(f"Saved the training curves to {path}")
    return 0


def _add_weights_dir(group, *names) -> None:
    group.add_argument(
        *names,
        "--weights-dir",
        metavar="DIR",
        dest="weights_dir",
        help="a provisioned folder of ImageNet weights files, e.g. a read-only copy shared by "
        "a lab (default: $TLKERAS_WEIGHTS_DIR, else Keras' cache ~/.keras/models)",
    )


def _add_pretrain(commands) -> None:
    from tlkeras.backbones import BACKBONES

    p = commands.add_parser(
        "pretrain",
        help="pretrain a whole backbone on your own source images",
        description="Train the whole backbone (from scratch, or from --weights) on a large "
        "labelled SOURCE_DIR of your own, and save its weights with a manifest. Transfer from "
        "it later with: train DATA_DIR --weights PRETRAIN_DIR.",
    )
    p.add_argument("data_dir", metavar="SOURCE_DIR", help="folder of class folders")
    p.add_argument(
        "--out",
        default="runs/pretrained",
        metavar="PRETRAIN_DIR",
        help="folder to write (default: %(default)s)",
    )
    model = p.add_argument_group("model")
    model.add_argument(
        "--backbone", default="vgg16", choices=sorted(BACKBONES), help="(default: %(default)s)"
    )
    model.add_argument(
        "--weights",
        default="none",
        metavar="none|imagenet|PRETRAIN_DIR|PATH",
        help="where the backbone starts (default: %(default)s, random initialisation)",
    )
    _add_weights_dir(model)
    model.add_argument(
        "--image-size", type=int, help="square input size in pixels (default: the backbone's)"
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
    data.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    fit = p.add_argument_group("training")
    fit.add_argument("--epochs", type=int, default=30, help="(default: %(default)s)")
    fit.add_argument(
        "--lr",
        type=float,
        default=1e-3,
        help="learning rate; about 1e-4 when starting from weights (default: %(default)s)",
    )
    fit.add_argument(
        "--patience",
        type=int,
        default=5,
        help="early-stopping patience, 0 for off (default: %(default)s)",
    )
    p.set_defaults(handler=_pretrain)


def _pretrain(args) -> int:
    from tlkeras.pretrain import PretrainConfig, pretrain

    config = PretrainConfig(
        data_dir=args.data_dir,
        out=args.out,
        backbone=args.backbone,
        weights=args.weights,
        image_size=args.image_size,
        batch_size=args.batch_size,
        epochs=args.epochs,
        learning_rate=args.lr,
        validation_split=args.validation_split,
        dropout=args.dropout,
        patience=args.patience,
        seed=args.seed,
        weights_dir=args.weights_dir,
    )
    run = pretrain(config)
    best = max(run.history.get("val_accuracy") or [float("nan")])
    print(
        f"Saved the pretrained {run.config['backbone']} to {run.path} (best val_accuracy "
        f"{best:.3f}). Transfer from it with: python -m tlkeras train DATA_DIR --weights "
        f"{run.path}"
    )
    return 0


def _add_weights(commands) -> None:
    p = commands.add_parser(
        "weights",
        help="download and check ImageNet weights for offline machines",
        description="Provision ImageNet weights once, then run offline: download them into "
        "Keras' cache or a shared folder (--dir), and list what is there with its hash check. "
        "Point every command at that folder with TLKERAS_WEIGHTS_DIR or --weights-dir.",
    )
    actions = p.add_subparsers(title="actions", metavar="ACTION", required=True)
    actions._parser_class = _Parser
    download = actions.add_parser(
        "download",
        help="download the ImageNet weights of some backbones, checking Keras' hashes",
        description="Download each backbone's ImageNet weights (without the top) with Keras, "
        "showing progress and checking each file against Keras' published hash.",
    )
    download.add_argument(
        "--backbone",
        required=True,
        action="append",
        metavar="NAME[,NAME...]",
        help="backbones to fetch, comma-separated or repeated, or 'all'",
    )
    _add_weights_dir(download, "--dir")
    download.add_argument(
        "--image-size",
        type=int,
        help="input size MobileNetV2's file is chosen by: 96, 128, 160, 192 or 224 (default: 224)",
    )
    download.set_defaults(handler=_weights_download)
    listing = actions.add_parser(
        "list",
        help="list the ImageNet weights files present and check their hashes",
        description="List each backbone's ImageNet weights file: size and whether it matches "
        "Keras' published hash. Exit status 1 if a file is corrupt.",
    )
    _add_weights_dir(listing, "--dir")
    listing.set_defaults(handler=_weights_list)


def _weights_download(args) -> int:
    from tlkeras.backbones import BACKBONES
    from tlkeras.weights import download_weights

    names = [name.strip() for value in args.backbone for name in value.split(",") if name.strip()]
    names = list(BACKBONES) if names == ["all"] else names
    for found in download_weights(names, image_size=args.image_size, weights_dir=args.weights_dir):
        print(f"{found.backbone:16} {found.status:18} {_megabytes(found.size):>9}  {found.path}")
    return 0


def _weights_list(args) -> int:
    from tlkeras.weights import list_weights

    files = list_weights(weights_dir=args.weights_dir)
    print(f"{'backbone':16} {'status':18} {'size':>9}  path")
    for found in files:
        print(f"{found.backbone:16} {found.status:18} {_megabytes(found.size):>9}  {found.path}")
    return 1 if any(found.status == "bad hash" for found in files) else 0


def _megabytes(size) -> str:
    return "-" if size is None else f"{size / 1e6:.1f} MB"


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
    for add in (
        _add_train,
        _add_predict,
        _add_evaluate,
        _add_backbones,
        _add_scan,
        _add_preview,
        _add_explain,
        _add_lr_find,
        _add_compare,
        _add_plot_history,
        _add_export,
        _add_pretrain,
        _add_weights,
    ):
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
    except KeyboardInterrupt as error:  # tlkeras.guards.TrainingInterrupted says how to resume.
        print(f"tlkeras: interrupted. {_one_line(error)}".rstrip(". ") + ".", file=sys.stderr)
        return getattr(error, "exit_status", 130)
    except (WeightsUnavailableError, OSError, RuntimeError) as error:
        if os.environ.get("TLKERAS_DEBUG"):
            raise
        print(f"tlkeras: error: {_one_line(error)}", file=sys.stderr)
        return 1
