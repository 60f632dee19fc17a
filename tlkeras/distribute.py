"""Training on several devices or machines: tf.distribute, or keras.distribution on JAX.

`--strategy` (or `TrainConfig.strategy`) picks one. On the TensorFlow backend:

- `"auto"`: `MirroredStrategy` over every GPU when more than one is visible, otherwise the
  default strategy (one device). A laptop trains exactly as before.
- `"none"`: the default strategy, one device.
- `"mirrored"`: `MirroredStrategy` over every GPU of this machine; with no GPU, over every
  logical CPU device (one CPU unless they were split with `tf.config`, as the tests do).
- `"multiworker"`: `MultiWorkerMirroredStrategy` over several machines (or processes),
  configured by the standard `TF_CONFIG` environment variable; each worker uses all its GPUs.

On the JAX backend the same names give Keras' own `keras.distribution.DataParallel`:

- `"auto"` and `"mirrored"`: data parallel over every local device (`jax.devices()`) when
  there are several, otherwise one device. The tests split a CPU into two devices with
  `XLA_FLAGS=--xla_force_host_platform_device_count=2`.
- `"none"`: one device.
- `"multiworker"`: `keras.distribution.initialize()` joins the processes named by the
  `KERAS_DISTRIBUTION_JOB_ADDRESSES`, `KERAS_DISTRIBUTION_NUM_PROCESSES` and
  `KERAS_DISTRIBUTION_PROCESS_ID` environment variables, then trains data parallel over
  every device of every process. Process 0 writes the run folder.

JAX splits every batch evenly across the devices, so `even_batches` tops up the one short
batch of an epoch with copies of its own first images (at most `num_devices - 1` of them),
and with several processes gives each its share of every batch.

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

import contextlib
import json
import math
import os
import warnings

import keras
import tensorflow as tf

from tlkeras.errors import UsageError
from tlkeras.workarounds import multi_worker_mirrored_strategy

STRATEGIES = ("auto", "none", "mirrored", "multiworker")
LEARNING_RATE_SCALINGS = ("sqrt", "linear", "none")
WORKER_TASK_TYPES = ("chief", "worker")


def get_strategy(name: str = "auto"):
    """Creates the `tf.distribute.Strategy` (JAX: `KerasDistribution`) named by `--strategy`.

    Call it before any other TensorFlow work in the process: `MultiWorkerMirroredStrategy`
    configures the runtime's collective operations, which is only possible at start-up.
    The same holds for `keras.distribution.initialize` on JAX.

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
        raise UsageError(
            f"Unknown strategy {name!r}. Expected one of {STRATEGIES}. Received: strategy={name!r}"
        )
    if keras.backend.backend() == "jax":
        return _jax_distribution(name)
    if name == "multiworker":
        read_tf_config()  # Fails with a clear message before TensorFlow tries to connect.
        try:
            return multi_worker_mirrored_strategy()  # Keras 3 needs its fixed reduce.
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


class KerasDistribution:
    """A `keras.distribution.Distribution` (or none) with the parts of a strategy tlkeras uses.

    `train` enters `scope()` for the whole run on JAX, so the model, its optimizer, its
    metrics and every model built to feed it are laid out on the same devices.

    Example:
        >>> strategy = KerasDistribution(keras.distribution.DataParallel())  # Two devices.
        >>> strategy.num_replicas_in_sync
        2
    """

    def __init__(self, distribution: keras.distribution.Distribution | None = None):
        self.distribution = distribution

    @property
    def num_replicas_in_sync(self) -> int:
        if self.distribution is None:
            return 1
        return int(self.distribution.device_mesh.devices.size)

    def scope(self):
        return self.distribution.scope() if self.distribution else contextlib.nullcontext()


JAX_CLUSTER_VARIABLES = (
    "KERAS_DISTRIBUTION_JOB_ADDRESSES",
    "KERAS_DISTRIBUTION_NUM_PROCESSES",
    "KERAS_DISTRIBUTION_PROCESS_ID",
)


def _jax_distribution(name: str) -> KerasDistribution:
    """`DataParallel` over every device (of every process, for `"multiworker"`), or none."""
    if name == "none":
        return KerasDistribution()
    if name == "multiworker":
        missing = [variable for variable in JAX_CLUSTER_VARIABLES if variable not in os.environ]
        if missing:
            raise UsageError(
                "strategy='multiworker' on the JAX backend needs the environment variables "
                f"{', '.join(JAX_CLUSTER_VARIABLES)} on every process (the first process's "
                "address, the number of processes and this one's index, from 0), e.g. "
                "KERAS_DISTRIBUTION_JOB_ADDRESSES=host1:12345 KERAS_DISTRIBUTION_NUM_PROCESSES=2 "
                "KERAS_DISTRIBUTION_PROCESS_ID=0. Set them, or use --strategy auto for the "
                f"devices of one machine. Received: missing={missing}"
            )
        keras.distribution.initialize()
    devices = keras.distribution.list_devices()
    if len(devices) == 1:
        return KerasDistribution()
    # Each process keeps its share of every batch itself (`even_batches`).
    return KerasDistribution(
        keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)
    )


def run_scope(strategy):
    """The scope a whole run trains in: the `keras.distribution` one on JAX.

    On TensorFlow, building and compiling enter the `tf.distribute` scope themselves
    (`tlkeras.model.strategy_scope`), so the run needs none.
    """
    if isinstance(strategy, KerasDistribution):
        return strategy.scope()
    return contextlib.nullcontext()


def batch_split() -> dict:
    """How the current `keras.distribution` (JAX) splits a batch: `even_batches`' arguments.

    Example:
        >>> batch_split()  # No distribution, or TensorFlow.
        {'num_devices': 1, 'num_processes': 1, 'process_index': 0}
    """
    distribution = keras.distribution.distribution()
    if distribution is None:
        return {"num_devices": 1, "num_processes": 1, "process_index": 0}
    return {
        "num_devices": int(distribution.device_mesh.devices.size),
        "num_processes": distribution.num_processes,
        "process_index": distribution.data_shard_id,
    }


def even_batches(
    dataset: tf.data.Dataset | None,
    num_devices: int,
    *,
    num_processes: int = 1,
    process_index: int = 0,
) -> tf.data.Dataset | None:
    """Tops up each short batch to a multiple of `num_devices`; keeps this process's share.

    JAX shards every batch evenly across the devices of a `DataParallel`, and fails on a
    batch that does not split. Only the last batch of an epoch can be short; it gets copies
    of its own first images (at most `num_devices - 1`, so they barely weigh). With several
    processes, each then keeps its own consecutive part of every batch (the datasets hold
    decoded images, and every process reads the same sequence, as with `shard_by_data`).
    TensorFlow's strategies split batches unevenly and need none of this.

    Example:
        >>> dataset = tf.data.Dataset.range(5).batch(4).map(lambda x: (x, x))
        >>> [x.numpy().tolist() for x, _ in even_batches(dataset, 2)]
        [[0, 1, 2, 3], [4, 4]]
    """
    if dataset is None or num_devices == 1:
        return dataset

    def top_up(*batch):
        size = tf.shape(tf.nest.flatten(batch)[0])[0]
        padded = -(-size // num_devices) * num_devices
        share = padded // num_processes
        rows = tf.range(share * process_index, share * (process_index + 1)) % size
        return tf.nest.map_structure(lambda tensor: tf.gather(tensor, rows), batch)

    return dataset.map(top_up, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


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
        raise UsageError(
            "strategy='multiworker' needs the TF_CONFIG environment variable, which names "
            f"every worker and this one's index, e.g. TF_CONFIG={example}. Set it on every "
            "worker, or use --strategy mirrored for the GPUs of one machine. "
            "Received: TF_CONFIG=''"
        )
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(
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
        raise UsageError(
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
        raise UsageError(
            f"Unknown learning-rate scaling {scaling!r}. Expected one of "
            f"{LEARNING_RATE_SCALINGS}. Received: learning_rate_scaling={scaling!r}"
        )
    factor = {"sqrt": math.sqrt(num_replicas), "linear": num_replicas, "none": 1}[scaling]
    return learning_rate * factor


def is_chief(strategy) -> bool:
    """Whether this process writes the outputs: always, except on non-chief workers."""
    if isinstance(strategy, KerasDistribution):
        import jax

        return jax.process_index() == 0
    return strategy.extended.should_checkpoint


def describe(strategy) -> dict:
    """What `config.json` records about a strategy: its class and replica count.

    Example:
        >>> describe(get_strategy("none"))
        {'strategy_class': 'Default', 'num_replicas': 1, 'num_workers': 1}
    """
    if isinstance(strategy, KerasDistribution):
        import jax

        distribution = strategy.distribution
        return {
            "strategy_class": type(distribution).__name__ if distribution else "Default",
            "num_replicas": strategy.num_replicas_in_sync,
            "num_workers": jax.process_count(),
        }
    resolver = getattr(strategy, "cluster_resolver", None)
    cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
    num_workers = sum(len(cluster.get(kind, [])) for kind in WORKER_TASK_TYPES)
    name = type(strategy).__name__.removeprefix("_")  # tlkeras.workarounds' subclass
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
