"""The settings of a training run, `TrainConfig`, in a module that imports no TensorFlow.

The command line builds its training flags from these fields and their docs, so it can
answer `--help` without loading TensorFlow or Keras.

Example:
    >>> config = TrainConfig("data_samples/digits", out="runs/digits", weights="none")
    >>> config.epochs
    10
"""

from __future__ import annotations

import dataclasses

#: Where the frozen part's output is kept: "off" runs the whole model every epoch.
CACHE_MODES = ("auto", "memory", "disk", "off")


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
            it fits in half the free memory, else on disk. `"off"` runs the whole model
            every epoch. Both checkpoint every epoch.
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
            reproduces the classic mistake, for teaching (see `tlkeras.build_model`).
        cache: When training on a `tlkeras.data.Data`: `"auto"`, `"memory"` or `"disk"` run
            the frozen part once and train the rest on its cached output
            (`tlkeras.features`); `"off"` runs the whole model every epoch.
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
    augment: object = None
    augment_passes: int = 0
