"""The learning-rate finder: a short sweep that shows which learning rates train well.

Following Leslie Smith's range test (https://arxiv.org/abs/1506.01186) as fastai's `lr_find`
does, the learning rate grows exponentially from `min_lr` to `max_lr`, one step per batch,
while the training loss of every batch is recorded. The loss first stays flat (too small a
rate), then falls (good rates), then shoots up (too large). The sweep stops early once the
smoothed loss is 4 times its best, and the model's weights and trainable flags are put back
as they were, so a sweep never changes the model.

Stage 1 sweeps the head on a frozen backbone; stage 2 unfreezes the top blocks first, as
`fine_tune` does, so run it on a model whose head is already trained.

The sweep trains with `tlkeras.train.fit`, one batch per epoch, so each epoch's loss is that
batch's exact loss. It trains a new model that shares the model's layers, with its own Adam
optimizer, so the model's compiled optimizer, loss and metrics are left untouched.

Example:
    >>> data = tl.load_data("data_samples/digits", image_size=32)
    >>> model = tl.build_model("vgg16", num_classes=10, image_size=32, weights=None)
    >>> result = lr_find(model, data.dataset("train"))
    >>> result.suggestion, result.rule
    (0.0012, 'valley')
    >>> result.plot()
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import keras
import numpy as np

from tlkeras.errors import UsageError
from tlkeras.files import atomic_write
from tlkeras.model import compile_model, freeze_backbone, strategy_scope, unfreeze_top_blocks
from tlkeras.precision import precision_scope

#: The rules `lr_find` can suggest a learning rate with; see `suggest_learning_rate`.
RULES = ("valley", "steepest", "minimum")
#: Weight of the past in the exponential moving average of the loss (fastai's value).
SMOOTHING = 0.98
#: The sweep stops once the smoothed loss exceeds this multiple of its lowest value.
DIVERGENCE_FACTOR = 4.0
#: The smoothed loss must fall by this fraction of its first value for a curve to be readable.
MIN_FALL = 0.02
RULE_EXPLANATIONS = {
    "valley": "the middle of the longest stretch where the loss keeps falling (fastai's "
    "'valley' rule)",
    "steepest": "where the smoothed loss falls fastest against the log of the learning rate",
    "minimum": "one tenth of the learning rate with the lowest smoothed loss",
}


@dataclasses.dataclass
class LRFindResult:
    """What a learning-rate sweep measured, and the rate it suggests.

    Attributes:
        learning_rates: The learning rate of each step, increasing exponentially.
        losses: The training loss of each step's batch.
        smoothed_losses: Their exponential moving average (bias-corrected), which the rules use.
        suggestion: The suggested learning rate.
        rule: The rule that picked it, one of `RULES`.
        explanation: The rule in words.
        stage: 1 (the head) or 2 (the unfrozen top blocks).
        warning: Why the suggestion may not be trustworthy, or `None`.
    """

    learning_rates: list[float]
    losses: list[float]
    smoothed_losses: list[float]
    suggestion: float
    rule: str
    explanation: str
    stage: int
    warning: str | None = None

    def plot(self, *, path=None):
        """Plots loss against learning rate; see `tlkeras.plots.plot_lr_find`."""
        from tlkeras.plots import plot_lr_find

        return plot_lr_find(self, path=path)

    def summary(self) -> str:
        """One readable sentence: the suggestion and how it was chosen."""
        text = (
            f"Suggested learning rate for stage {self.stage}: {self.suggestion:.2g}, "
            f"{self.explanation}; swept {len(self.losses)} batches from "
            f"{self.learning_rates[0]:.0e} to {self.learning_rates[-1]:.1e}."
        )
        return text + (f" Warning: {self.warning}" if self.warning else "")

    def save(self, out_dir) -> dict[str, str]:
        """Writes `lr_find.json` (every step and the suggestion) and `lr_find.png`.

        Returns:
            The paths written, by kind (`"json"`, `"png"`).
        """
        os.makedirs(out_dir, exist_ok=True)
        paths = {
            "json": os.path.join(out_dir, "lr_find.json"),
            "png": os.path.join(out_dir, "lr_find.png"),
        }
        atomic_write(paths["json"], json.dumps(dataclasses.asdict(self), indent=2) + "\n")
        self.plot(path=paths["png"])
        return paths


def _check_rule(rule) -> None:
    if rule not in RULES:
        raise UsageError(
            f"Unknown rule {rule!r}. Expected one of {RULES}. Received: rule={rule!r}"
        )


def smooth(losses, *, beta: float = SMOOTHING) -> list[float]:
    """The bias-corrected exponential moving average of a loss sequence (as fastai's)."""
    average, smoothed = 0.0, []
    for step, loss in enumerate(losses, start=1):
        average = beta * average + (1 - beta) * loss
        smoothed.append(average / (1 - beta**step))
    return smoothed


def suggest_learning_rate(learning_rates, smoothed_losses, *, rule: str = "valley") -> float:
    """Picks a learning rate from a sweep, as fastai does.

    The first tenth of the sweep and its last 5 steps are ignored (the average is still
    warming up there, and the end is where it diverged). Then:

    - `"valley"`: the longest run of steps over which the loss keeps decreasing, and a rate
      a bit past its first third; robust to noisy curves, fastai's default.
    - `"steepest"`: the rate where the loss falls fastest per decade of learning rate.
    - `"minimum"`: the rate with the lowest loss divided by 10, safely below divergence.

    Args:
        learning_rates: The swept rates, increasing.
        smoothed_losses: The smoothed loss at each rate.
        rule: One of `RULES`. Defaults to `"valley"`.

    Returns:
        The suggested learning rate.

    Raises:
        ValueError: If the rule is unknown or the sweep has fewer than 3 finite losses.
    """
    _check_rule(rule)
    lrs, losses = np.asarray(learning_rates, float), np.asarray(smoothed_losses, float)
    finite = np.isfinite(losses)
    lrs, losses = lrs[finite], losses[finite]
    if len(losses) < 3:
        raise UsageError(
            f"The sweep has only {len(losses)} finite losses, too few to suggest a learning "
            "rate. Sweep more steps, or start from a smaller min_lr. "
            f"Received: num_losses={len(losses)}"
        )
    start, end = len(losses) // 10, len(losses) - 5
    if end - start >= 3:
        lrs, losses = lrs[start:end], losses[start:end]
    if rule == "minimum":
        return float(lrs[np.argmin(losses)] / 10)
    if rule == "steepest":
        slopes = np.diff(losses) / np.diff(np.log(lrs))
        return float(lrs[np.argmin(slopes)])
    return float(lrs[_valley_index(losses)])


def _valley_index(losses: np.ndarray) -> int:
    """fastai's valley: the longest decreasing subsequence, then 1/3 + 1/6 of the way along."""
    n = len(losses)
    run_length = [1] * n
    best_start, best_end = 0, 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and run_length[i] < run_length[j] + 1:
                run_length[i] = run_length[j] + 1
        if run_length[i] > run_length[best_end]:
            best_end = i
            best_start = best_end - run_length[best_end]
    section = (best_end - best_start) / 3
    return min(n - 1, max(0, best_start + int(section) + int(section / 2)))


def lr_find(
    model: keras.Model,
    train_data,
    *,
    stage: int = 1,
    unfreeze: int = 1,
    min_lr: float = 1e-7,
    max_lr: float = 10.0,
    num_steps: int = 100,
    rule: str = "valley",
) -> LRFindResult:
    """Sweeps the learning rate exponentially and suggests one; the model is left unchanged.

    Args:
        model: A model from `tlkeras.build_model`; for stage 2, one whose head is trained.
        train_data: A `tf.data.Dataset` of `(images, labels)` batches, images in [0, 255];
            it is repeated if it has fewer than `num_steps` batches.
        stage: 1 sweeps the head with the backbone frozen; 2 sweeps with the top `unfreeze`
            blocks unfrozen (BatchNorm excepted). Defaults to 1.
        unfreeze: Blocks unfrozen in stage 2, from the top. Defaults to 1.
        min_lr: The first learning rate. Defaults to 1e-7.
        max_lr: The last learning rate, if the loss has not diverged first. Defaults to 10.
        num_steps: Batches in the sweep. Defaults to 100.
        rule: How to pick the suggestion, one of `RULES`. Defaults to `"valley"`.

    Returns:
        An `LRFindResult`; `.plot()` draws the curve, `.suggestion` is the rate.

    Raises:
        ValueError: If an argument is out of range.

    Example:
        >>> result = lr_find(model, data.dataset("train"), stage=1)
        >>> print(result.summary())
    """
    if stage not in (1, 2):
        raise UsageError(
            "stage must be 1 (sweep the head) or 2 (sweep the unfrozen top blocks). "
            f"Received: stage={stage!r}"
        )
    if not 0 < min_lr < max_lr:
        raise UsageError(
            f"Expected 0 < min_lr < max_lr, so the rate can grow from min_lr to max_lr. "
            f"Received: min_lr={min_lr!r}, max_lr={max_lr!r}"
        )
    if not isinstance(num_steps, int) or num_steps < 10:
        raise UsageError(
            f"num_steps must be an int of at least 10 for a usable curve. "
            f"Received: num_steps={num_steps!r}"
        )
    _check_rule(rule)

    weights = model.get_weights()
    trainable = [(layer, layer.trainable) for layer in _layers_outer_first(model)]
    try:
        if stage == 1:
            freeze_backbone(model)
        else:
            unfreeze_top_blocks(model, unfreeze)
        learning_rates, losses = _sweep(model, train_data, min_lr, max_lr, num_steps)
    finally:
        # Outer layers first: setting a model's `trainable` also sets every layer inside it.
        for layer, flag in trainable:
            layer.trainable = flag
        model.set_weights(weights)
    smoothed = smooth(losses)
    return LRFindResult(
        learning_rates=learning_rates,
        losses=losses,
        smoothed_losses=smoothed,
        suggestion=suggest_learning_rate(learning_rates, smoothed, rule=rule),
        rule=rule,
        explanation=RULE_EXPLANATIONS[rule],
        stage=stage,
        warning=check_curve(smoothed),
    )


def check_curve(smoothed_losses) -> str | None:
    """Says why a sweep cannot be read, or returns None when it looks usable.

    A sweep is readable when the smoothed loss falls by at least `MIN_FALL` of its starting
    value somewhere, over at least 20 batches.
    """
    finite = [loss for loss in smoothed_losses if math.isfinite(loss)]
    if len(finite) < 20:
        return (
            f"the loss diverged after {len(finite)} batches; start from a smaller min_lr to "
            "see where it falls."
        )
    if finite[0] - min(finite) < MIN_FALL * abs(finite[0]):
        return (
            f"the loss never fell by {MIN_FALL:.0%} of its starting value, so there is no "
            "good range to read and the suggestion is guesswork. This happens with a random "
            "backbone (weights none), labels the model cannot learn, or too few steps."
        )
    return None


def _layers_outer_first(layer):
    """The layer, then every layer inside it, recursively, outer layers before inner ones."""
    yield layer
    for inner in getattr(layer, "layers", []):
        yield from _layers_outer_first(inner)


class _RangeTest(keras.callbacks.Callback):
    """Sets each step's learning rate, records its loss and stops once the loss diverges.

    The sweep trains one batch per epoch, so an epoch's `logs["loss"]` is that batch's loss.
    """

    def __init__(self, min_lr, max_lr, num_steps):
        super().__init__()
        self.min_lr, self.ratio, self.num_steps = min_lr, max_lr / min_lr, num_steps
        self.learning_rates, self.losses, self.best = [], [], math.inf

    def on_epoch_begin(self, epoch, logs=None):
        learning_rate = self.min_lr * self.ratio ** (epoch / (self.num_steps - 1))
        self.model.optimizer.learning_rate = learning_rate
        self.learning_rates.append(learning_rate)

    def on_epoch_end(self, epoch, logs=None):
        loss = float(logs["loss"])
        self.losses.append(loss)
        smoothed = smooth(self.losses)[-1]
        self.best = min(self.best, smoothed)
        if not math.isfinite(loss) or smoothed > DIVERGENCE_FACTOR * self.best:
            self.model.stop_training = True


def _sweep(model, train_data, min_lr, max_lr, num_steps):
    """Trains `model`'s trainable layers one batch per step at growing learning rates.

    It trains through a new model that shares `model`'s layers, so `model`'s own compiled
    optimizer, loss and metrics are left as they were.

    Returns:
        `(learning_rates, losses)`, one of each per step swept.
    """
    from tlkeras.train import fit

    with precision_scope(model.dtype_policy.name), strategy_scope(model):
        images = keras.Input(model.input.shape[1:], dtype=model.input.dtype, name="image")
        swept = keras.Model(images, model(images), name="lr_sweep")
    compile_model(swept, learning_rate=min_lr)
    range_test = _RangeTest(min_lr, max_lr, num_steps)
    fit(
        swept,
        train_data.repeat(),
        epochs=num_steps,
        steps_per_epoch=1,
        callbacks=[range_test],
        verbose=0,  # One "epoch" per batch: a line each would fill the screen.
    )
    return range_test.learning_rates, range_test.losses


def lr_find_from_config(
    config,
    *,
    stage: int = 1,
    run_dir=None,
    min_lr: float = 1e-7,
    max_lr: float = 10.0,
    num_steps: int = 100,
    rule: str = "valley",
) -> LRFindResult:
    """Runs a sweep on a data folder, as `tlkeras lr-find` does, and saves it to `config.out`.

    The data, model and split come from a `TrainConfig`, exactly as `tlkeras.train` would
    build them. For stage 2 the head must be trained first: with `run_dir` the sweep starts
    from that trained run's model; otherwise the head is trained here for `config.epochs`
    epochs at `config.learning_rate` (stage 1 of `train`), then the top `config.unfreeze`
    blocks are swept.

    Args:
        config: A `tlkeras.TrainConfig`; `out` is the folder for `lr_find.png` and
            `lr_find.json`.
        stage: 1 (the head) or 2 (the unfrozen top blocks). Defaults to 1.
        run_dir: A run folder from `tlkeras train` to start from; its backbone and image size
            are used. Defaults to None (a new model).
        min_lr, max_lr, num_steps, rule: As in `lr_find`.

    Returns:
        The `LRFindResult`.

    Example:
        >>> config = tl.TrainConfig("data_samples/digits", out="runs/lr", weights="none",
        ...                         image_size=32)
        >>> print(lr_find_from_config(config, stage=1).summary())
    """
    from tlkeras.runs import load_run
    from tlkeras.train import build_config_model, load_config_data, train_head

    keras.utils.set_random_seed(config.seed)
    model = load_run(run_dir).model if run_dir is not None else None
    image_size = tuple(model.input_shape[1:3]) if model is not None else None
    data = load_config_data(config, image_size=image_size)
    if model is None:
        model = build_config_model(config, data)
        if stage == 2:
            train_head(model, data, epochs=config.epochs, learning_rate=config.learning_rate)
    elif model.output_shape[-1] != len(data.class_names):
        raise UsageError(
            f"The run in {run_dir!r} predicts {model.output_shape[-1]} classes but "
            f"{config.data_dir!r} has {len(data.class_names)}. Use the data the run was trained "
            f"on. Received: run_dir={os.fspath(run_dir)!r}"
        )
    result = lr_find(
        model,
        data.dataset("train"),
        stage=stage,
        unfreeze=config.unfreeze,
        min_lr=min_lr,
        max_lr=max_lr,
        num_steps=num_steps,
        rule=rule,
    )
    result.save(config.out)
    return result
