"""Training on several devices or machines with TensorFlow's own `tf.distribute` strategies.

`--strategy` (or `TrainConfig.strategy`) picks one:

- `"auto"`: `MirroredStrategy` over every GPU when more than one is visible, otherwise the
  default strategy (one device). A laptop trains exactly as before.
- `"none"`: the default strategy, one device.
- `"mirrored"`: `MirroredStrategy` over every GPU of this machine; with no GPU, over every
  logical CPU device (one CPU unless they were split with `tf.config`, as the tests do).
- `"multiworker"`: `MultiWorkerMirroredStrategy` over several machines (or processes),
  configured by the standard `TF_CONFIG` environment variable; each worker uses all its GPUs.

The rule for batches and learning rates, whatever the strategy:

- `batch_size` is the batch of **one replica** (one GPU). The global batch, split across the
  replicas at every step, is `batch_size * num_replicas` (`num_replicas` counts every GPU
  of every worker: `strategy.num_replicas_in_sync`).
- The learning rates are given for one replica and scaled with the global batch:
  `"sqrt"` (the default) multiplies them by `sqrt(num_replicas)`, the square-root rule for
  Adam (Malladi et al., 2022, "On the SDEs and Scaling Rules for Adaptive Gradient
  Algorithms"); `"linear"` by `num_replicas` (Goyal et al., 2017, the rule for SGD);
  `"none"` leaves them as they are. One replica always trains with the learning rate given.

The model, its optimizer and metrics are created inside the strategy's scope:
`tlkeras.train` builds the model in `strategy.scope()`, and `tlkeras.compile_model` always
compiles in the scope the model was built in, so the recompile before fine-tuning (and any
compile of your own through it) is covered too.

Example:
    >>> strategy = get_strategy("auto")
    >>> with strategy.scope():
    ...     model = build_model("vgg16", num_classes=3, image_size=32, weights=None)
    >>> scale_learning_rate(1e-3, num_replicas=4, scaling="sqrt")
    0.002
"""

from __future__ import annotations

import json
import math
import os
import warnings

import tensorflow as tf

STRATEGIES = ("auto", "none", "mirrored", "multiworker")
LEARNING_RATE_SCALINGS = ("sqrt", "linear", "none")
WORKER_TASK_TYPES = ("chief", "worker")


def get_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """Creates the `tf.distribute.Strategy` named by `--strategy`.

    Call it before any other TensorFlow work in the process: `MultiWorkerMirroredStrategy`
    configures the runtime's collective operations, which is only possible at start-up.

    Args:
        name: One of `"auto"`, `"none"`, `"mirrored"` or `"multiworker"` (see the module
            docstring). Defaults to `"auto"`.

    Returns:
        The strategy. `strategy.num_replicas_in_sync` is the number of replicas.

    Raises:
        ValueError: If the name is unknown, or `"multiworker"` is asked for without a valid
            `TF_CONFIG`.

    Example:
        >>> get_strategy("none").num_replicas_in_sync
        1
    """
    if name not in STRATEGIES:
        raise ValueError(
            f"Unknown strategy {name!r}. Expected one of {STRATEGIES}. Received: strategy={name!r}"
        )
    if name == "multiworker":
        read_tf_config()  # Fails with a clear message before TensorFlow tries to connect.
        try:
            return _MultiWorkerMirroredStrategy()
        except RuntimeError as error:
            raise RuntimeError(
                f"Could not start multi-worker training ({error}). The strategy must be "
                "created before any other TensorFlow work in the process: start a fresh process "
                "(or restart the notebook kernel) and create it first. "
                "Received: strategy='multiworker'"
            ) from None
    if os.environ.get("TF_CONFIG"):
        warnings.warn(
            f"TF_CONFIG is set but strategy={name!r} trains on this machine alone. Pass "
            "strategy='multiworker' (--strategy multiworker) to train with the other workers.",
            stacklevel=2,
        )
    if name == "none":
        return tf.distribute.get_strategy()
    gpus = [device.name for device in tf.config.list_logical_devices("GPU")]
    if name == "auto":
        return (
            tf.distribute.MirroredStrategy(gpus) if len(gpus) > 1 else tf.distribute.get_strategy()
        )
    return tf.distribute.MirroredStrategy(
        gpus or [device.name for device in tf.config.list_logical_devices("CPU")]
    )


class _MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """`MultiWorkerMirroredStrategy` with the two `reduce` calls Keras 3 makes working.

    Keras 3's `fit` on several workers (keras-team/keras#20585) asks `reduce` for (1) a whole
    `(images, labels)` batch at once, to learn its shapes, and (2) the mean "along axis 0"
    of each step's scalar loss and metrics. TensorFlow's multi-worker `reduce` takes one
    value at a time and needs that axis to exist. Here each value is reduced in turn, and a
    scalar is averaged across replicas. Every worker makes the same calls, so the collective
    operations still match. The gradients are not affected: Keras all-reduces them itself.
    """

    def reduce(self, reduce_op, value, axis):
        reduce = super().reduce

        def reduce_one(one):
            is_scalar = self.experimental_local_results(one)[0].shape.rank == 0
            return reduce(reduce_op, one, None if is_scalar else axis)

        return tf.nest.map_structure(reduce_one, value)


def read_tf_config() -> dict:
    """Reads and checks the `TF_CONFIG` environment variable of a multi-worker job.

    `TF_CONFIG` is JSON naming every worker and this process's place among them, e.g. on
    the second of two machines:

        {"cluster": {"worker": ["host1:12345", "host2:12345"]},
         "task": {"type": "worker", "index": 1}}

    Worker 0 (or the task of type `"chief"`, if there is one) writes the run folder.

    Returns:
        The parsed `TF_CONFIG`.

    Raises:
        ValueError: If it is unset, not JSON, or does not name this task in the cluster.
    """
    text = os.environ.get("TF_CONFIG", "")
    example = (
        '\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
        '"task": {"type": "worker", "index": 0}}\''
    )
    if not text:
        raise ValueError(
            "strategy='multiworker' needs the TF_CONFIG environment variable, which names "
            f"every worker and this one's index, e.g. TF_CONFIG={example}. Set it on every "
            "worker, or use --strategy mirrored for the GPUs of one machine. "
            "Received: TF_CONFIG=''"
        )
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"TF_CONFIG is not valid JSON ({error}). Expected e.g. TF_CONFIG={example}. "
            f"Received: TF_CONFIG={text!r}"
        ) from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    task_type = task.get("type") if isinstance(task, dict) else None
    index = task.get("index") if isinstance(task, dict) else None
    if (
        not isinstance(cluster, dict)
        or task_type not in WORKER_TASK_TYPES
        or not isinstance(index, int)
        or not 0 <= index < len(cluster.get(task_type) or [])
    ):
        raise ValueError(
            "TF_CONFIG must hold a 'cluster' of worker addresses and a 'task' whose 'type' is "
            f"one of {WORKER_TASK_TYPES} and whose 'index' is its position in that list, e.g. "
            f"TF_CONFIG={example}. Received: TF_CONFIG={text!r}"
        )
    return config


def scale_learning_rate(
    learning_rate: float, *, num_replicas: int, scaling: str = "sqrt"
) -> float:
    """Scales a one-replica learning rate to the global batch of `num_replicas` replicas.

    Args:
        learning_rate: The learning rate for one replica's batch.
        num_replicas: Replicas training in sync (`strategy.num_replicas_in_sync`).
        scaling: `"sqrt"` multiplies by `sqrt(num_replicas)` (for Adam), `"linear"` by
            `num_replicas` (for SGD), `"none"` keeps the rate. Defaults to `"sqrt"`.

    Returns:
        The learning rate to train with.

    Example:
        >>> scale_learning_rate(1e-5, num_replicas=8, scaling="linear")
        8e-05
    """
    if scaling not in LEARNING_RATE_SCALINGS:
        raise ValueError(
            f"Unknown learning-rate scaling {scaling!r}. Expected one of "
            f"{LEARNING_RATE_SCALINGS}. Received: learning_rate_scaling={scaling!r}"
        )
    factor = {"sqrt": math.sqrt(num_replicas), "linear": num_replicas, "none": 1}[scaling]
    return learning_rate * factor


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the outputs: always, except on non-chief workers."""
    return strategy.extended.should_checkpoint


def describe(strategy: tf.distribute.Strategy) -> dict:
    """What `config.json` records about a strategy: its class and replica count.

    Example:
        >>> describe(get_strategy("none"))
        {'strategy_class': 'Default', 'num_replicas': 1, 'num_workers': 1}
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
    num_workers = sum(len(cluster.get(kind, [])) for kind in WORKER_TASK_TYPES)
    name = type(strategy).__name__.removeprefix("_")  # _MultiWorkerMirroredStrategy
    return {
        "strategy_class": "Default" if name == "DefaultDistributionStrategy" else name,
        "num_replicas": strategy.num_replicas_in_sync,
        "num_workers": max(num_workers, 1),
    }


def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Tells a multi-worker job to split each batch between workers.

    The datasets tlkeras makes hold decoded images, not files, so every worker reads the
    same shuffled sequence (same seed) and keeps its own part of each global batch.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
