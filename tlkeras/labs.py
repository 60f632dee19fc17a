"""Checkers for the teaching labs in `notebooks/labs/`.

Each `check_*` function looks at what a student built, prints one line saying whether it is
right and, if not, what is wrong and what to try, and returns True or False. They never
raise on a wrong answer, so a lab notebook always runs top to bottom.

Example:
    >>> from tlkeras import labs
    >>> labs.check_frozen_backbone(model)
    Correct: the backbone is frozen; only the head (4 weight tensors) will train.
    True
"""

from __future__ import annotations

import keras

from tlkeras.model import backbone_of, get_base


def _report(ok: bool, message: str) -> bool:
    print(("Correct: " if ok else "Not yet: ") + message)
    return ok


def _is_model(answer, what: str) -> bool:
    if isinstance(answer, keras.Model):
        return True
    return _report(False, f"{what} should be a Keras model, but it is {answer!r}.")


def check_data(data, *, num_classes: int, image_size: int) -> bool:
    """Checks a `tlkeras.load_data` result: number of classes and image size."""
    if data is None or not hasattr(data, "class_names"):
        return _report(False, "`data` should be the result of tl.load_data(...).")
    if len(data.class_names) != num_classes:
        return _report(
            False,
            f"found {len(data.class_names)} classes, expected {num_classes}: is the folder right?",
        )
    if tuple(data.image_size) != (image_size, image_size):
        return _report(False, f"images are {data.image_size}, expected {image_size}x{image_size}.")
    return _report(True, f"{num_classes} classes of {image_size}x{image_size} images.")


def check_frozen_backbone(model) -> bool:
    """Checks that the backbone is frozen and the head is trainable."""
    if not _is_model(model, "`model`"):
        return False
    base = get_base(model)
    if base.trainable_weights:
        return _report(
            False,
            f"{len(base.trainable_weights)} backbone weights would train. Stage 1 "
            "trains the head only: freeze the backbone (tl.freeze_backbone).",
        )
    if not model.trainable_weights:
        return _report(False, "nothing would train: the head must stay trainable.")
    return _report(
        True,
        f"the backbone is frozen; only the head ({len(model.trainable_weights)} weight "
        "tensors) will train.",
    )


def check_unfrozen_blocks(model, expected_blocks: list[str]) -> bool:
    """Checks that exactly `expected_blocks` of the backbone train, BatchNorm excepted."""
    if not _is_model(model, "`model`"):
        return False
    from tlkeras.backbones import layer_blocks

    base = get_base(model)
    blocks = layer_blocks(backbone_of(model), base)
    training = sorted(
        {
            block
            for layer, block in zip(base.layers, blocks, strict=True)
            if layer.trainable_weights
        }
    )
    if sorted(expected_blocks) != training:
        return _report(
            False,
            f"the blocks that train are {training or 'none'}, expected "
            f"{sorted(expected_blocks)}. Unfreeze whole blocks from the top "
            "(tl.unfreeze_top_blocks).",
        )
    return check_batchnorm_frozen(model, quiet_when_right=True) and _report(
        True, f"blocks {', '.join(expected_blocks)} will train; every BatchNorm stays frozen."
    )


def check_batchnorm_frozen(model, *, quiet_when_right: bool = False) -> bool:
    """Checks that no BatchNormalization layer of the backbone would train."""
    if not _is_model(model, "`model`"):
        return False
    batchnorms = [
        layer
        for layer in get_base(model).layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    trainable = [layer.name for layer in batchnorms if layer.trainable]
    if trainable:
        return _report(
            False,
            f"{len(trainable)} BatchNorm layers are trainable (e.g. {trainable[0]}). Keep "
            "them frozen and in inference mode, or fine-tuning wrecks their statistics.",
        )
    return True if quiet_when_right else _report(True, "every BatchNorm layer stays frozen.")


def check_fine_tune_learning_rate(learning_rate) -> bool:
    """Checks that the fine-tuning learning rate is low (at most 1e-4)."""
    if not isinstance(learning_rate, (int, float)) or learning_rate <= 0:
        return _report(
            False, f"the learning rate should be a positive number, not {learning_rate!r}."
        )
    if learning_rate > 1e-4:
        return _report(
            False,
            f"{learning_rate:g} is too high for fine-tuning: it would overwrite the "
            "pretrained features. Try 1e-5.",
        )
    return _report(True, f"{learning_rate:g} is low enough to adjust, not destroy, the features.")


def check_held_out_evaluation(report) -> bool:
    """Checks that an `evaluate` report measured images the model did not train on."""
    if not isinstance(report, dict) or "split" not in report:
        return _report(False, "`report` should be the result of tl.evaluate(run, ...).")
    if report["split"] in ("train", "all"):
        return _report(
            False,
            f"this report is on split {report['split']!r}, which includes training images, so "
            "its accuracy is optimistic. Evaluate on held-out images.",
        )
    return _report(
        True,
        f"{report['num_images']} held-out images ({report['split']}), accuracy "
        f"{report['accuracy']:.3f}.",
    )
