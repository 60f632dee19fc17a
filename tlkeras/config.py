"""The settings of a run, `TrainConfig` and `PretrainConfig`, in a module without TensorFlow.

The command line builds its training flags from these fields and their docs (`field_docs`),
so a new field appears in `train`, `compare`, `lr-find` (and `pretrain`) at once, and
`--help` needs no TensorFlow or Keras. The names the flags accept (`BACKBONE_NAMES`, ...)
live here too; tests check that they match the library's registries.

Example:
    >>> config = TrainConfig("data_samples/digits", out="runs/digits", weights="none")
    >>> config.epochs
    10
"""

from __future__ import annotations

import dataclasses
import re

from tlkeras.memory import DEFAULT_CACHE_MEMORY  # Standard library only, like this module.

#: Where the frozen part's output is kept: "off" runs the whole model every epoch.
CACHE_MODES = ("auto", "memory", "disk", "off")
#: The names `tlkeras.backbones.BACKBONES` registers, in its order.
BACKBONE_NAMES = (
    "vgg16",
    "resnet50",
    "inceptionv3",
    "mobilenet_v2",
    "efficientnet_b0",
    "xception",
    "densenet121",
    "convnext_tiny",
    "efficientnet_lite0",
)
#: `tlkeras.precision.PRECISIONS`.
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
#: `tlkeras.distribute.STRATEGIES` and `LEARNING_RATE_SCALINGS`.
STRATEGIES = ("auto", "none", "mirrored", "multiworker")
LEARNING_RATE_SCALINGS = ("sqrt", "linear", "none")
#: The presets of `tlkeras.augment.PRESETS` and its `FLIP_MODES`.
AUGMENT_PRESETS = ("none", "light", "strong")
FLIP_MODES = ("none", "horizontal", "vertical", "horizontal_and_vertical")
CLASS_WEIGHTS = ("none", "balanced")
#: `tlkeras.lr_find.RULES` and the keys of `tlkeras.export.FORMATS`.
LR_FIND_RULES = ("valley", "steepest", "minimum")
EXPORT_FORMATS = ("savedmodel", "tflite", "tflite-dynamic", "tflite-int8", "onnx", "keras")


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run; saved as `config.json` in the run folder.

    Attributes:
        data_dir: Folder of class folders, or of `train/`, `val/`, `test/` folders.
        out: The run folder to write.
        backbone: Registry name, e.g. `"vgg16"`; `None` takes the backbone a pretrained
            `weights` folder was made for (else `"vgg16"`).
        weights: `"imagenet"`, `"none"`, a folder from `tlkeras pretrain`, or a weights file.
        image_size: Square side in pixels; `None` means the size a pretrained `weights`
            folder was made at, else the backbone's default.
        batch_size: Images per batch.
        epochs: Stage 1 epochs (head only).
        fine_tune_epochs: Stage 2 epochs; 0 skips fine-tuning.
        unfreeze: Blocks unfrozen in stage 2, counted from the top.
        learning_rate: Stage 1 learning rate.
        fine_tune_learning_rate: Stage 2 learning rate.
        validation_split: Held-out fraction when there is no `val/` folder.
        dense_units: Units of the hidden Dense layer of the head; 0 leaves it out.
        dropout: Dropout rate in the head.
        patience: Early-stopping patience in epochs; 0 turns early stopping off.
        seed: Seed for the split, shuffling and initialisation.
        strict: Fail when a file cannot be read, instead of skipping it (see `scan_report.json`
            in the run folder for what the pre-scan found).
        augment: Augmentation preset of the training images: `"none"`, `"light"` or
            `"strong"` (see `tlkeras.augment`).
        flip, rotation, zoom, translation, contrast: Override one setting of the preset;
            `None` keeps the preset's value.
        class_weight: `"balanced"` weighs the loss so every class counts equally; `"none"`.
        resume: Continue the run in `out` from its last checkpoint; the settings must be the
            ones it started with, except those in `checkpoints.CHANGEABLE_ON_RESUME`.
        overwrite: Delete the run in `out` (only the files tlkeras writes) and start again.
        deterministic: Turn on TensorFlow's op determinism (slower), so the same seed on the
            same machine gives identical weights and history. It stays on in this process.
        strategy: `"auto"`, `"none"`, `"mirrored"` or `"multiworker"`; see
            `tlkeras.distribute`. `batch_size` is then per replica.
        learning_rate_scaling: How both learning rates grow with the number of replicas:
            `"sqrt"`, `"linear"` or `"none"`; see `tlkeras.distribute`.
        weights_dir: A provisioned folder of ImageNet weights (see `tlkeras.weights`);
            `None` means `$TLKERAS_WEIGHTS_DIR`, else Keras' cache.
        precision: `"float32"`, `"mixed_bfloat16"` or `"mixed_float16"`; see
            `tlkeras.precision`.
        jit_compile: XLA compilation: True, False or `"auto"` (on with a GPU, off on a CPU).
        cache: `"auto"` (the default), `"memory"` or `"disk"` run the frozen part of the
            model once and train the rest on its cached output (`tlkeras.features`), many
            times faster and with the same result; `"auto"` keeps the cache in memory when
            it fits in `cache_memory`, else on disk. `"off"` runs the whole model every
            epoch. Both checkpoint every epoch.
        cache_memory: With `cache="auto"`, the most memory the run's feature cache may take
            before it goes to disk instead: a size (`512MiB`, `2GB`) or a share of the
            available memory (`10%`); 0 always uses the disk. A disk cache's epochs take
            about as long, so the default (3%) keeps large runs' memory flat.
        augment_passes: With augmentation and a cache: 0 (the default) trains end to end;
            K caches K augmented versions of every training image.
        callbacks: Keras callbacks for both stages (Python only; not saved with the run).
    """

    data_dir: str
    out: str = "runs/latest"
    backbone: str = "vgg16"
    weights: str | None = "imagenet"
    image_size: int | None = None
    batch_size: int = 32
    epochs: int = 10
    fine_tune_epochs: int = 0
    unfreeze: int = 1
    learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 1e-5
    validation_split: float = 0.2
    dense_units: int = 1024
    dropout: float = 0.2
    patience: int = 5
    seed: int = 0
    # Data checks, augmentation and class balance (tlkeras.scan, tlkeras.augment).
    strict: bool = False
    augment: str = "none"
    flip: str | None = None
    rotation: float | None = None
    zoom: float | None = None
    translation: float | None = None
    contrast: float | None = None
    class_weight: str = "none"
    # Checkpoints, resuming and determinism (tlkeras.checkpoints).
    resume: bool = False
    overwrite: bool = False
    deterministic: bool = False
    # Distribution (tlkeras.distribute): batch_size is per replica; learning rates scale.
    strategy: str = "auto"
    learning_rate_scaling: str = "sqrt"
    # Weights provisioning and pretrained backbones (tlkeras.weights, tlkeras.pretrain).
    weights_dir: str | None = None
    # Speed: precision, XLA and cached features (tlkeras.precision, tlkeras.features).
    precision: str = "float32"
    jit_compile: bool | str = "auto"
    cache: str = "auto"
    cache_memory: str = DEFAULT_CACHE_MEMORY
    augment_passes: int = 0
    # Python only: Keras callbacks for both stages, run after tlkeras' own.
    callbacks: list | None = dataclasses.field(default=None, repr=False, compare=False)


@dataclasses.dataclass
class Stage:
    """One training stage: which blocks train, for how long, and what feeds them.

    `tlkeras.train_head` and `tlkeras.fine_tune` make one from their arguments;
    `tlkeras.train` makes one per stage from a `TrainConfig`.

    Attributes:
        epochs: Epochs to train.
        learning_rate: Adam's learning rate.
        unfreeze: Whole blocks of the backbone that train, counted from the top; 0 trains
            the head alone (stage 1). BatchNorm layers never train.
        initial_epoch: Where the epoch count continues from (stage 2, or a resumed run).
        patience: Stop after this many epochs without a better `val_loss` and restore the
            best weights; 0 never stops early.
        class_weight: `{label: weight}` for Keras' `fit`, e.g. `data.class_weight()`.
        steps_per_epoch: Batches per epoch, for a dataset that holds several epochs
            (`tlkeras.data.epoch_dataset`); `None` is one pass over it.
        jit_compile: XLA-compile the training step: True, False, or "auto" (Keras' default:
            on with a GPU, off on a CPU).
        freeze_batchnorm: Keep BatchNorm frozen and the backbone in inference mode. False
            reproduces the classic mistake, for teaching (see `tlkeras.unfreeze_top_blocks`).
        cache: When training on a `tlkeras.data.Data`: `"auto"`, `"memory"` or `"disk"` run
            the frozen part once and train the rest on its cached output
            (`tlkeras.features`); `"off"` runs the whole model every epoch.
        cache_memory: With `cache="auto"`, the most memory the cache may take before it
            goes to disk: a size (`"512MiB"`) or a share of the available memory (`"3%"`);
            see `tlkeras.memory.cache_budget`.
        augment: When training on a `Data`: the augmentation of the training images (a
            `tlkeras.augment.Augmentation`, a preset name or a Keras layer), or `None`.
        augment_passes: With augmentation and a cache: 0 trains end to end; K caches K
            augmented versions of every training image.

    Example:
        >>> Stage(epochs=5, learning_rate=1e-5, unfreeze=1, initial_epoch=10)
    """

    epochs: int
    learning_rate: float
    unfreeze: int = 0
    initial_epoch: int = 0
    patience: int = 0
    class_weight: dict | None = None
    steps_per_epoch: int | None = None
    jit_compile: bool | str = "auto"
    freeze_batchnorm: bool = True
    cache: str = "auto"
    cache_memory: str = DEFAULT_CACHE_MEMORY
    augment: object = None
    augment_passes: int = 0


@dataclasses.dataclass
class PretrainConfig:
    """Everything that defines a pretraining run; saved as `config.json` in its folder.

    Attributes:
        data_dir: The source data: a folder of class folders, or of `train/`, `val/` folders.
        out: The folder to write (see the module docstring).
        backbone: Registry name, e.g. `"resnet50"`.
        weights: Where the backbone starts: `"none"` (random), `"imagenet"`, a folder from
            an earlier `pretrain`, or a weights file.
        image_size: Square side in pixels; `None` means the backbone's default (or that of a
            pretrained `weights` folder).
        batch_size: Images per batch.
        epochs: Epochs over the source data.
        learning_rate: Adam's learning rate; use about 1e-4 when starting from weights.
        validation_split: Held-out fraction when there is no `val/` folder.
        dropout: Dropout rate before the classification layer.
        patience: Stop after this many epochs without a better `val_loss` and keep the best
            weights; 0 trains every epoch (and still keeps the best).
        seed: Seed for the split, shuffling and initialisation.
        weights_dir: A provisioned folder of ImageNet weights (see `tlkeras.weights`).
        overwrite: Delete the pretrain folder in `out` (only the files tlkeras writes) and
            start again.
    """

    data_dir: str
    out: str = "runs/pretrained"
    backbone: str = "vgg16"
    weights: str | None = "none"
    image_size: int | None = None
    batch_size: int = 32
    epochs: int = 30
    learning_rate: float = 1e-3
    validation_split: float = 0.2
    dropout: float = 0.2
    patience: int = 5
    seed: int = 0
    weights_dir: str | None = None
    overwrite: bool = False


def field_docs(config_class) -> dict[str, str]:
    """The `Attributes:` section of a config dataclass's docstring, one line per field.

    A line naming several fields (`flip, rotation: Override ...`) documents each of them.

    Args:
        config_class: A dataclass with a Google-style `Attributes:` section, e.g. `TrainConfig`.

    Returns:
        `{field name: its doc on one line}`, for the fields the docstring documents.

    Example:
        >>> field_docs(TrainConfig)["batch_size"]
        'Images per batch.'
    """
    lines = (config_class.__doc__ or "").expandtabs().splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "Attributes:"), None)
    if start is None:
        return {}
    docs: dict[str, list[str]] = {}
    names: list[str] = []
    indent = None
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        width = len(line) - len(line.lstrip())
        indent = width if indent is None else indent
        if width < indent:
            break  # The section is over.
        entry = re.match(r"([\w, ]+):\s*(.*)", line.strip()) if width == indent else None
        if entry:
            names = [name.strip() for name in entry.group(1).split(",")]
            for name in names:
                docs[name] = [entry.group(2)]
        else:
            for name in names:
                docs[name].append(line.strip())
    return {name: " ".join(parts) for name, parts in docs.items()}
