"""The command line: `python -m tlkeras COMMAND ...`; `python -m tlkeras --help` lists them.

This module only parses arguments and calls the library. Parsing imports no TensorFlow or
Keras, so `--help`, `--version` and usage mistakes answer at once; each command imports
what it needs. The training flags of `train`, `compare`, `lr-find` and `pretrain` are made
from the fields of `tlkeras.config.TrainConfig` (and `PretrainConfig`) and their docs.

Errors are one line on stderr; the exit status says what went wrong (see `tlkeras.errors`):
2 a usage mistake, 3 a file, data, disk or export problem, 4 weights that cannot be had, 1 a
bug, 130 or 143 interrupted. Set TLKERAS_DEBUG=1 for tracebacks, and --verbose (or TLKERAS_DEBUG=1)
for TensorFlow's own log lines.

Example:
    >>> main(["backbones"])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import traceback

from tlkeras import config as cfg
from tlkeras.errors import (
    NO_WEIGHTS,
    UsageError,
    debug_enabled,
    describe,
    exit_status,
    one_line,
)
from tlkeras.quiet import quiet

EXAMPLES = """examples:
  python -m tlkeras train data_samples/digits --weights none --image-size 32 \\
      --epochs 3 --fine-tune-epochs 2 --out runs/digits
  python -m tlkeras predict runs/digits data_samples/predict_examples/digit_3.png
  python -m tlkeras predict runs/digits photos/*.jpg --format csv > predictions.csv
  python -m tlkeras evaluate runs/digits data_samples/digits --out reports/digits
  python -m tlkeras scan data_samples/digits
  python -m tlkeras explain runs/digits data_samples/predict_examples/digit_3.png
  python -m tlkeras lr-find data_samples/digits --weights none --image-size 32
  python -m tlkeras compare data_samples/digits --backbones vgg16,mobilenet_v2 \\
      --weights none --image-size 32 --epochs 3
  python -m tlkeras export runs/digits --format tflite-int8

exit status: 0 ok, 1 internal error (a bug), 2 usage error, 3 file, data, disk or export
  problem, 4 weights unavailable or corrupt, 130/143 interrupted, 141 closed pipe
"""

#: 128 + SIGPIPE, as a shell reports a command whose reader went away (`... | head`).
BROKEN_PIPE_STATUS = 141


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: what was wrong and where to get help."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# -- training flags, made from the fields of TrainConfig and PretrainConfig -------------------

#: Flags whose spelling is not the field name with dashes.
FLAG_NAMES = {
    "learning_rate": "--lr",
    "fine_tune_learning_rate": "--fine-tune-lr",
    "learning_rate_scaling": "--lr-scaling",
}
CHOICES = {
    "backbone": cfg.BACKBONE_NAMES,
    "precision": cfg.PRECISIONS,
    "strategy": cfg.STRATEGIES,
    "learning_rate_scaling": cfg.LEARNING_RATE_SCALINGS,
    "augment": cfg.AUGMENT_PRESETS,
    "flip": cfg.FLIP_MODES,
    "class_weight": cfg.CLASS_WEIGHTS,
    "cache": cfg.CACHE_MODES,
}
METAVARS = {
    "data_dir": "DATA_DIR",
    "out": "DIR",
    "weights": "imagenet|none|PRETRAIN_DIR|PATH",
    "weights_dir": "DIR",
    "augment_passes": "K",
    **{name: "F" for name in ("rotation", "zoom", "translation", "contrast")},
}
#: `--resume RUN_DIR` names the run folder to continue (TrainConfig has resume=True, out=it).
RESUME_HELP = (
    "continue the run in RUN_DIR from its last checkpoint, with the same settings (the "
    "learning rates and --patience may change)"
)
TRAIN_GROUPS = (
    (
        "model",
        None,
        ("backbone", "weights", "weights_dir", "image_size", "dense_units", "dropout"),
    ),
    ("data", None, ("batch_size", "validation_split", "seed")),
    ("stage 1: train the head, backbone frozen", None, ("epochs", "learning_rate")),
    (
        "stage 2: fine-tune the top blocks (BatchNorm stays frozen)",
        None,
        ("fine_tune_epochs", "unfreeze", "fine_tune_learning_rate", "patience"),
    ),
    (
        "data checks, augmentation and class balance",
        None,
        ("strict", "augment", "flip", "rotation", "zoom", "translation", "contrast")
        + ("class_weight",),
    ),
    (
        "checkpoints and resuming",
        "Every epoch is checkpointed in OUT/checkpoint/. Ctrl-C stops after the current batch "
        "and keeps the last checkpoint.",
        ("resume", "overwrite", "deterministic"),
    ),
    (
        "distribution (see docs/distribution.md)",
        "--batch-size is per replica (GPU); the global batch is batch size x replicas.",
        ("strategy", "learning_rate_scaling"),
    ),
    (
        "speed (see docs/performance.md)",
        None,
        ("precision", "jit_compile", "cache", "cache_memory", "augment_passes"),
    ),
)
PRETRAIN_GROUPS = (
    ("model", None, ("backbone", "weights", "weights_dir", "image_size", "dropout")),
    ("data", None, ("batch_size", "validation_split", "seed")),
    ("training", None, ("epochs", "learning_rate", "patience", "overwrite")),
)
#: The TrainConfig fields `lr-find` reads; the others would do nothing there.
LR_FIND_FIELDS = (
    "data_dir", "out", "backbone", "weights", "weights_dir", "image_size", "dense_units",
    "dropout", "batch_size", "validation_split", "seed", "epochs", "learning_rate", "unfreeze",
)  # fmt: skip


def flag_kind(annotation: str) -> str | None:
    """How a field of this type annotation becomes a flag; None when it cannot be one.

    Args:
        annotation: The field's annotation as written, e.g. `"int | None"`.

    Returns:
        `"bool"` (on/off), `"bool|str"` (--x/--no-x/unset), `"int"`, `"float"`, `"str"`,
        or None (lists, callables and other values a command line cannot give).

    Example:
        >>> flag_kind("float | None"), flag_kind("list[Callable]")
        ('float', None)
    """
    parts = {part.strip() for part in str(annotation).split("|")} - {"None"}
    if parts == {"bool"}:
        return "bool"
    if parts == {"bool", "str"}:
        return "bool|str"
    if len(parts) == 1 and parts <= {"int", "float", "str"}:
        return parts.pop()
    return None


def flag_name(field: str) -> str:
    """The flag of a config field: `--image-size` for image_size, `--lr` for learning_rate."""
    return FLAG_NAMES.get(field, "--" + field.replace("_", "-"))


def _help_text(doc: str) -> str:
    """A field's doc as argparse help: no backticks or quotes, % escaped."""
    return doc.replace("`", "").replace('"', "").replace("%", "%%")


def add_config_arguments(parser, config_class, *, groups, only=None, skip=(), defaults=None):
    """Adds one argument per field of a config dataclass, documented by its docstring.

    Args:
        parser: The subcommand's parser.
        config_class: `cfg.TrainConfig` or `cfg.PretrainConfig`.
        groups: `(title, description, field names)` triples; other fields go in "settings".
        only: Field names to add (default: all); `skip`: field names to leave out.
        defaults: Field defaults for this command, e.g. `{"out": "runs/compare"}`.

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_config_arguments(parser, cfg.TrainConfig, groups=TRAIN_GROUPS)
        >>> parser.parse_args(["data", "--lr", "0.01"]).learning_rate
        0.01
    """
    docs = cfg.field_docs(config_class)
    defaults = defaults or {}
    fields = [
        f
        for f in dataclasses.fields(config_class)
        if (only is None or f.name in only) and f.name not in skip and flag_kind(f.type)
    ]
    group_of = {name: title for title, _, names in groups for name in names}
    made = {}
    for field in fields:
        title = group_of.get(field.name, "settings")
        if field.default is dataclasses.MISSING:
            target = parser
        elif title not in made:
            description = next((d for t, d, _ in groups if t == title), None)
            target = made[title] = parser.add_argument_group(title, description)
        else:
            target = made[title]
        default = defaults.get(field.name, field.default)
        _add_field(target, field, default, _help_text(docs.get(field.name, "")))
    return [f.name for f in fields]


def _add_field(target, field, default, help_text: str) -> None:
    kind = flag_kind(field.type)
    metavar = METAVARS.get(field.name) or flag_name(field.name)[2:].upper().replace("-", "_")
    if field.default is dataclasses.MISSING:
        target.add_argument(field.name, metavar=METAVARS.get(field.name, metavar), help=help_text)
    elif field.name == "resume":
        target.add_argument("--resume", metavar="RUN_DIR", help=RESUME_HELP)
    elif kind == "bool":
        target.add_argument(flag_name(field.name), action="store_true", help=help_text)
    elif kind == "bool|str":
        target.add_argument(
            flag_name(field.name),
            action=argparse.BooleanOptionalAction,
            default=default,
            help=f"{help_text} (default: {default})",
        )
    else:
        target.add_argument(
            flag_name(field.name),
            dest=field.name,
            type={"int": int, "float": float, "str": str}[kind],
            default=default,
            choices=CHOICES.get(field.name),
            metavar=metavar,
            help=f"{help_text} (default: %(default)s)",
        )


def config_from_args(config_class, args, names, **overrides):
    """The config a command asked for: its parsed flags, then the `overrides`.

    `--resume RUN_DIR` becomes `resume=True` with `out=RUN_DIR`.

    Example:
        >>> args = argparse.Namespace(data_dir="d", resume=None, out="runs/x")
        >>> config_from_args(cfg.TrainConfig, args, ["data_dir", "out", "resume"]).out
        'runs/x'
    """
    values = {name: getattr(args, name) for name in names}
    if "resume" in values:
        values["out"] = _run_folder(args.out, args.resume, default_out=args.default_out)
        values["resume"] = args.resume is not None
    return config_class(**{**values, **overrides})


def _run_folder(out: str, resume: str | None, *, default_out: str) -> str:
    """--resume RUN_DIR names the run folder; an --out beside it must agree."""
    if resume is None:
        return out
    if out not in (default_out, resume):
        raise UsageError(
            f"--resume {resume} continues the run in {resume}, but --out names another "
            f"folder. Drop --out or make it the same. Received: out={out!r}"
        )
    return resume


def _check_settings(config) -> None:
    """The library's checks of the augmentation and data folder, before TensorFlow loads."""
    from tlkeras.augment import get_augmentation  # numpy only, like tlkeras.scan
    from tlkeras.scan import _check_data_dir

    if hasattr(config, "augment"):
        names = ("augment", "flip", "rotation", "zoom", "translation", "contrast")
        get_augmentation(**{name: getattr(config, name) for name in names})
    _check_data_dir(config.data_dir)


def _add_training_command(commands, name, *, help, description, config_class=cfg.TrainConfig,
                          groups=TRAIN_GROUPS, **options):  # fmt: skip
    p = commands.add_parser(name, help=help, description=description)
    _add_verbose(p)
    names = add_config_arguments(p, config_class, groups=groups, **options)
    p.set_defaults(default_out=p.get_default("out"), config_fields=names)
    return p


def _add_train(commands) -> None:
    p = _add_training_command(
        commands,
        "train",
        help="train a classifier on a folder of images",
        description="Train a new head on a frozen ImageNet backbone, then optionally fine-tune "
        "its top blocks. DATA_DIR holds one subfolder per class, or train/ and val/ "
        "(and test/) subfolders that each hold class folders.",
    )
    p.set_defaults(handler=_train)


def _train(args) -> int:
    config = config_from_args(cfg.TrainConfig, args, args.config_fields)
    _check_settings(config)
    from tlkeras.train import train

    run = train(config)
    best = max(run.history.get("val_accuracy") or [float("nan")])
    print(f"Saved the run to {run.path} (best val_accuracy {best:.3f}).")
    return 0


def _add_lr_find(commands) -> None:
    p = _add_training_command(
        commands,
        "lr-find",
        help="sweep the learning rate and suggest one",
        description="Grow the learning rate exponentially over a few batches, plot the loss "
        "against it (DIR/lr_find.png) and suggest a rate. Stage 1 sweeps the head; stage 2 "
        "the unfrozen top blocks of a model whose head is trained (from --run, or trained "
        "here for --epochs first). The model's weights are restored afterwards.",
        only=LR_FIND_FIELDS,
        defaults={"out": "runs/lr_find", "epochs": 3},
    )
    sweep = p.add_argument_group("sweep")
    sweep.add_argument("--stage", type=int, choices=(1, 2), default=1, help="(default: 1)")
    sweep.add_argument(
        "--run", metavar="RUN_DIR", help="start from this trained run (its backbone and size)"
    )
    sweep.add_argument("--min-lr", type=float, default=1e-7, help="(default: %(default)s)")
    sweep.add_argument("--max-lr", type=float, default=10.0, help="(default: %(default)s)")
    sweep.add_argument("--num-steps", type=int, default=100, help="batches (default: 100)")
    sweep.add_argument(
        "--rule", choices=cfg.LR_FIND_RULES, default="valley", help="(default: valley)"
    )
    p.set_defaults(handler=_lr_find)


def _lr_find(args) -> int:
    config = config_from_args(cfg.TrainConfig, args, args.config_fields)
    _check_settings(config)
    from tlkeras.lr_find import lr_find_from_config

    result = lr_find_from_config(
        config,
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
    p = _add_training_command(
        commands,
        "compare",
        help="train several backbones on the same split and compare them",
        description="Train each backbone with the same data, split, seed and settings, then "
        "write a table (comparison.csv, .json) of validation accuracy, training time, "
        "images/s, parameters and model size, and a bar chart (comparison.png). Every "
        "training flag of train applies to each run (in DIR/<backbone>).",
        skip=("backbone",),
        defaults={"out": "runs/compare"},
    )
    p.add_argument(
        "--backbones",
        required=True,
        metavar="NAMES",
        help="comma-separated, e.g. vgg16,resnet50,inceptionv3",
    )
    p.set_defaults(handler=_compare)


def _compare(args) -> int:
    config = config_from_args(cfg.TrainConfig, args, args.config_fields)
    _check_settings(config)
    from tlkeras.compare import compare_backbones, format_comparison

    rows = compare_backbones(config, args.backbones)
    print(format_comparison(rows))
    print(f"Saved the table and chart to {config.out}/comparison.csv, .json, .png")
    return 0


def _add_pretrain(commands) -> None:
    p = _add_training_command(
        commands,
        "pretrain",
        help="pretrain a whole backbone on your own source images",
        description="Train the whole backbone (from scratch, or from --weights) on a large "
        "labelled SOURCE_DIR of your own, and save its weights with a manifest. Transfer from "
        "it later with: train DATA_DIR --weights PRETRAIN_DIR.",
        config_class=cfg.PretrainConfig,
        groups=PRETRAIN_GROUPS,
    )
    p.set_defaults(handler=_pretrain)


def _pretrain(args) -> int:
    config = config_from_args(cfg.PretrainConfig, args, args.config_fields)
    _check_settings(config)
    from tlkeras.pretrain import pretrain

    run = pretrain(config)
    best = max(run.history.get("val_accuracy") or [float("nan")])
    print(
        f"Saved the pretrained {run.config['backbone']} to {run.path} (best val_accuracy "
        f"{best:.3f}). Transfer from it with: python -m tlkeras train DATA_DIR --weights "
        f"{run.path}"
    )
    return 0


# -- predict: text, JSON or CSV --------------------------------------------------------------


def _add_predict(commands) -> None:
    p = commands.add_parser(
        "predict",
        help="predict the classes of image files",
        description="Print the most probable classes of each image, using a trained run: "
        "as text, as a JSON array of {path, predictions: [{label, probability}]} objects, "
        "or as CSV rows path,rank,label,probability (see docs/evaluation.md).",
    )
    _add_verbose(p)
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder (or .keras file) from train")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files")
    p.add_argument("--top-k", type=int, default=3, help="classes per image (default: %(default)s)")
    p.add_argument(
        "--format",
        choices=("text", "json", "csv"),
        default="text",
        help="text, a JSON array, or CSV with a header row (default: %(default)s)",
    )
    p.add_argument(
        "--json", dest="format", action="store_const", const="json", help="same as --format json"
    )
    p.add_argument(
        "--grid", metavar="PNG", help="also save the images with their top class as a PNG grid"
    )
    p.set_defaults(handler=_predict)


def _predict(args) -> int:
    from tlkeras.predict import format_predictions, predict
    from tlkeras.runs import load_run

    run = load_run(args.run_dir)
    results = predict(run, args.images, top_k=args.top_k, progress=sys.stderr.isatty())
    if args.grid:
        from tlkeras.plots import plot_predictions

        plot_predictions(results, image_size=run.image_size, path=args.grid)
        print(f"Saved the predictions grid to {args.grid}", file=sys.stderr)
    sys.stdout.write(format_predictions(results, args.format))
    return 0


def _add_verbose(parser, default=argparse.SUPPRESS) -> None:
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="show TensorFlow's own start-up and log lines (hidden by default)",
    )


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
    p = commands.add_parser(
        "export",
        help="export a trained run for a server or a phone, with its labels",
        description="Export a trained run as a SavedModel (servers), TFLite float, "
        "dynamic-range or full-int8 (phones), or a .keras file. Every export takes RGB "
        "pixels in [0, 255] and returns class probabilities; a labels file is written "
        "beside it.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder (or .keras file) from train")
    p.add_argument(
        "--format",
        default="savedmodel",
        choices=cfg.EXPORT_FORMATS,
        help="savedmodel (servers), tflite, tflite-dynamic, tflite-int8 (phones), onnx (ONNX "
        'Runtime and others; needs pip install "tlkeras[onnx]") or keras (default: %(default)s)',
    )
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


def _add_weights(commands) -> None:
    p = commands.add_parser(
        "weights",
        help="download and check ImageNet weights for offline machines",
        description="Provision ImageNet weights once, then run offline: download them into "
        "Keras' cache or a shared folder (--dir), and list what is there with its hash check. "
        "Point every command at that folder with TLKERAS_WEIGHTS_DIR or --weights-dir.",
    )
    actions = p.add_subparsers(
        title="actions", metavar="ACTION", required=True, parser_class=_Parser
    )
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
        "Keras' published hash. Exit status 4 if a file is corrupt.",
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
    return NO_WEIGHTS if any(found.status == "bad hash" for found in files) else 0


def _megabytes(size) -> str:
    return "-" if size is None else f"{size / 1e6:.1f} MB"


def _add_augment_arguments(group, default: str = "none") -> None:
    group.add_argument(
        "--augment",
        default=default,
        choices=cfg.AUGMENT_PRESETS,
        help="random flips, rotations, zooms, shifts and contrast on training images only "
        "(default: %(default)s)",
    )
    group.add_argument("--flip", choices=cfg.FLIP_MODES, help="override the preset's flip")
    for name, what in (
        ("rotation", "fraction of a full turn, e.g. 0.05 = 18 degrees"),
        ("zoom", "fraction of the size, below 1"),
        ("translation", "fraction of the height and width"),
        ("contrast", "contrast factor"),
    ):
        group.add_argument(
            f"--{name}", type=float, metavar="F", help=f"override the preset's {name}: {what}"
        )


def _augment_options(args) -> dict:
    names = ("augment", "flip", "rotation", "zoom", "translation", "contrast")
    return {name: getattr(args, name) for name in names}


def _add_weights_dir(group, *names) -> None:
    group.add_argument(
        *names,
        "--weights-dir",
        metavar="DIR",
        dest="weights_dir",
        help="a provisioned folder of ImageNet weights files, e.g. a read-only copy shared by "
        "a lab (default: $TLKERAS_WEIGHTS_DIR, else Keras' cache ~/.keras/models)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The `tlkeras` argument parser with one subcommand per task (imports no TensorFlow).

    Example:
        >>> build_parser().parse_args(["backbones"]).handler.__name__
        '_backbones'
    """
    from tlkeras import __version__

    parser = _Parser(
        prog="tlkeras",
        description="Transfer learning on images with Keras: a frozen ImageNet backbone, a new "
        "head, optional fine-tuning.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_verbose(parser, default=False)
    commands = parser.add_subparsers(
        title="commands", metavar="COMMAND", required=True, parser_class=_Parser
    )
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
    for command in commands.choices.values():
        if command.get_default("verbose") is None:  # No --verbose of its own yet.
            _add_verbose(command)
    return parser


def main(argv=None) -> int:
    """Runs the command line and returns its exit status (see `tlkeras.errors`).

    Example:
        >>> main(["backbones"])  # doctest: +SKIP
        0
    """
    args = build_parser().parse_args(argv)
    debug = debug_enabled()
    try:
        with quiet(enabled=not (args.verbose or debug)):
            status = args.handler(args)
            sys.stdout.flush()  # A closed pipe shows here, not at exit.
        return status
    except BrokenPipeError:  # `tlkeras predict ... | head`: the reader has what it wanted.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return BROKEN_PIPE_STATUS
    except KeyboardInterrupt as error:  # tlkeras.guards.TrainingInterrupted says how to resume.
        print(f"tlkeras: interrupted. {one_line(error)}".rstrip(". ") + ".", file=sys.stderr)
        return getattr(error, "exit_status", 130)
    except Exception as error:
        if debug:
            traceback.print_exc()
        print(describe(error), file=sys.stderr)
        return exit_status(error)
