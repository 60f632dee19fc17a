"""Benchmark: tlkeras' cached training against the plain recipe, on the same images.

The plain recipe is what most tutorials write: a frozen VGG16, GlobalAveragePooling2D,
Dense(1024, relu) and Dense(softmax), trained with `model.fit` over the images every epoch;
for stage 2, block5 is unfrozen and `fit` runs end to end again. tlkeras trains the same
architecture (dropout 0, so the two are identical) with `tl.train_head(model, data)` and
`tl.fine_tune(model, data)`, which cache the frozen part's output. Both start from the same
weights and see the same images, image size, epochs, batch size, shuffle order and seed.

Each measurement runs in a fresh worker process, so its peak memory (the process's peak
resident set) belongs to it alone; this script runs them one after another, alternating
plain and tlkeras (ABBA over repeats) so that both see the same background load, and prints
medians and ratios:

- stage 1 alone (head on a frozen backbone), in every precision asked for;
- stage 2 alone (block5 unfrozen), from the same stage-1 weights;
- the frozen part's forward throughput in each precision (the caching pass, measured in
  the tlkeras stage-1 worker once its training is timed);
- with `--shared-cache`, both stages one after the other, as `train` runs them (one cache
  at block5's input for both stages, stage 1's features derived from it), against
  `train_head` then `fine_tune` (a cache per stage: the frozen blocks run twice).

ImageNet weights are not needed for timing (`--weights none`, the default here); with them
(`--weights imagenet`) the accuracies mean more. Run from the repository root:

    python benchmarks/compare_plain.py                      # about 10 minutes on 2 CPU cores
    python benchmarks/compare_plain.py --repeats 3 --json results.json
    python benchmarks/compare_plain.py --backend jax        # the same table on Keras' JAX

`--backend` sets `KERAS_BACKEND` for every worker; both recipes read the images through
tf.data on either backend.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "data_samples" / "digits"
RESULT_PREFIX = "RESULT "


# ----------------------------------------------------------------------------- the worker


def _rss_mib() -> float:
    """The resident set size of this process now, in MiB (Linux), or NaN."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def _cpu_seconds() -> float:
    """CPU time of this process so far, all threads: less disturbed by other processes."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes vs KiB


def plain_recipe_model(num_classes: int, image_size: int, weights):
    """The plain recipe, as tutorials write it."""
    import keras

    base = keras.applications.VGG16(
        include_top=False, weights=weights, input_shape=(image_size, image_size, 3)
    )
    base.trainable = False
    inputs = keras.Input((image_size, image_size, 3))
    x = base(inputs, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(1024, activation="relu")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs)


def _epoch_timer():
    """A Keras callback that records how long every epoch took (validation included)."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._start)

    return EpochTimer()


def _plain_datasets(data, epochs: int):
    """The same batches in the same order as tlkeras, preprocessed by preprocess_input.

    Returns the training and validation datasets and the training steps per epoch.
    """
    import tensorflow as tf

    from tlkeras.data import epoch_dataset

    def preprocess(images, labels):
        # keras.applications.vgg16.preprocess_input ("caffe": RGB to BGR, minus the ImageNet
        # means) in TensorFlow ops, since tf.data runs TensorFlow whatever the Keras backend.
        return images[..., ::-1] - tf.constant([103.939, 116.779, 123.68]), labels

    images, labels = data.arrays["train"]
    train_ds, steps = epoch_dataset(
        images, labels, batch_size=data.batch_size, seed=data.seed, epochs=epochs
    )
    return train_ds.map(preprocess), data.dataset("val").map(preprocess), steps


def run_job(job: dict) -> dict:
    """Runs one measurement and returns its figures."""
    import keras
    import numpy as np

    import tlkeras as tl
    from tlkeras.features import split_model

    data = tl.load_data(
        job["data_dir"],
        image_size=job["image_size"],
        batch_size=job["batch_size"],
        seed=job["seed"],
    )
    num_classes = len(data.class_names)
    keras.utils.set_random_seed(job["seed"])
    with tl.precision_scope(job["precision"]):
        model = tl.build_model(
            "vgg16",
            num_classes=num_classes,
            image_size=job["image_size"],
            weights=job["weights"],
            dense_units=1024,
            dropout=0.0,  # The plain recipe has no dropout.
        )
        plain = None
        if job["recipe"] == "plain":
            plain = plain_recipe_model(num_classes, job["image_size"], None)
    if job.get("weights_in"):
        with np.load(job["weights_in"]) as saved:
            model.set_weights([saved[f"arr_{i}"] for i in range(len(saved.files))])
    if plain is not None:
        plain.set_weights(model.get_weights())  # The same start, layer for layer.

    num_train, num_val = len(data.folder.splits["train"]), len(data.folder.splits["val"])
    result = {**job, "num_train": num_train, "num_val": num_val, "rss_before_mib": _rss_mib()}
    epochs, stage = job["epochs"], job["stage"]
    timer = _epoch_timer()
    start, start_cpu = time.perf_counter(), _cpu_seconds()
    if job["recipe"] == "plain":
        train_ds, val_ds, steps = _plain_datasets(data, epochs)
        if stage == 2:
            base = plain.layers[1]
            base.trainable = True
            for layer in base.layers:
                layer.trainable = layer.name.startswith("block5")
        learning_rate = 1e-3 if stage == 1 else 1e-5
        plain.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        history = plain.fit(
            train_ds,
            validation_data=val_ds,
            epochs=epochs,
            steps_per_epoch=steps,
            callbacks=[timer],
            verbose=0,
        ).history
    elif stage == "both":
        history = _both_stages(model, data, epochs, shared=job["recipe"] == "one cache")
        timer.seconds = [float("nan")]
    elif stage == 1:
        history = tl.train_head(model, data, epochs=epochs, learning_rate=1e-3, callbacks=[timer])
    else:
        history = tl.fine_tune(
            model, data, epochs=epochs, unfreeze=1, learning_rate=1e-5, callbacks=[timer]
        )
    seconds, cpu_seconds = time.perf_counter() - start, _cpu_seconds() - start_cpu
    peak_rss_mib = _peak_rss_mib()  # Before the forward-pass measurement below.
    if job.get("weights_out"):
        np.savez(job["weights_out"], *model.get_weights())
    num_blocks = 0 if stage == 1 else 1
    bottom, _ = split_model(model, num_blocks)
    if stage == "both":
        result["val_loss"] = history["val_loss"][-1]
    feature_bytes = np.prod(bottom.output.shape[1:]) * np.dtype(bottom.output.dtype).itemsize
    result.update(
        seconds=seconds,
        cpu_seconds=cpu_seconds,
        images_per_second=epochs * num_train / seconds,
        # An epoch once the graphs are traced (the median of epochs 2 onwards): what every
        # further epoch costs, so plain/tlkeras of it is the speed-up many epochs approach.
        epoch_seconds=statistics.median(timer.seconds[1:] or timer.seconds),
        val_accuracy=history["val_accuracy"][-1],
        peak_rss_mib=peak_rss_mib,
        features_mib=float(feature_bytes) * (num_train + num_val) / 2**20,
    )
    if job["recipe"] == "tlkeras" and stage == 1:
        result["forward_images_per_second"] = _forward_throughput(model, data)
    return result


def _both_stages(model, data, epochs: int, *, shared: bool) -> dict:
    """Stage 1 then stage 2 (block5), with one cache for both or a cache per stage."""
    from tlkeras.features import RunCache
    from tlkeras.train import Stage, fit_stage

    stages = (
        Stage(epochs=epochs, learning_rate=1e-3),
        Stage(epochs=epochs, learning_rate=1e-5, unfreeze=1, initial_epoch=epochs),
    )
    cache = RunCache(model, data, num_blocks=1) if shared else contextlib.nullcontext()
    with cache as features:
        for stage in stages:
            history = fit_stage(model, data, stage=stage, features=features)
    return history


def _forward_throughput(model, data) -> float:
    """Images per second through the frozen part (the caching pass), once traced."""
    from tlkeras.features import split_model

    bottom, _ = split_model(model)
    images = data.dataset("train", shuffle=False)
    bottom.predict_on_batch(next(iter(images))[0].numpy())  # Trace and compile first.
    start = time.perf_counter()
    bottom.predict(images, verbose=0)
    return len(data.folder.splits["train"]) / (time.perf_counter() - start)


# ----------------------------------------------------------------------------- the driver


def make_subset(folder: Path, per_class: int) -> None:
    """Links the first `per_class` images of every digit into `folder`."""
    for class_dir in sorted(p for p in DIGITS.iterdir() if p.is_dir()):
        (folder / class_dir.name).mkdir(parents=True)
        for image in sorted(class_dir.glob("*.png"))[:per_class]:
            (folder / class_dir.name / image.name).symlink_to(image)


def run_worker(job: dict, verbose: bool) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    env["KERAS_BACKEND"] = job["backend"]
    process = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(job)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    if verbose or process.returncode:
        print(process.stdout[-4000:], process.stderr[-4000:], sep="\n")
    if process.returncode:
        raise SystemExit(f"worker failed: {job}")
    line = [out for out in process.stdout.splitlines() if out.startswith(RESULT_PREFIX)][-1]
    return json.loads(line.removeprefix(RESULT_PREFIX))


def plan(args, data_dir: str, scratch: str) -> list[dict]:
    """The jobs in running order: per repeat and precision, stage 1 then stage 2, ABBA.

    Stage 2 starts from the weights tlkeras' stage 1 reached (the same for both recipes),
    or from the initial weights when stage 1 is not run.
    """
    common = dict(
        data_dir=data_dir,
        image_size=args.image_size,
        batch_size=args.batch_size,
        epochs=args.epochs,
        seed=args.seed,
        weights=args.weights,
        backend=args.backend,
    )
    jobs = []
    for repeat in range(args.repeats):
        for precision in args.precisions:
            start_weights = os.path.join(scratch, f"stage1_{precision}.npz")
            order = ("plain", "tlkeras") if repeat % 2 == 0 else ("tlkeras", "plain")
            for stage in args.stages:
                for recipe in order:
                    job = {**common, "recipe": recipe, "stage": stage, "precision": precision}
                    if stage == 1 and recipe == "tlkeras" and repeat == 0:
                        job["weights_out"] = start_weights  # Stage 2 starts from these.
                    if stage == 2 and 1 in args.stages:
                        job["weights_in"] = start_weights
                    jobs.append(job)
        if args.shared_cache:
            order = ("one cache", "a cache per stage")
            for recipe in order if repeat % 2 == 0 else order[::-1]:
                precision = args.precisions[0]
                jobs.append({**common, "recipe": recipe, "stage": "both", "precision": precision})
    return jobs


def _median(results, **match) -> dict:
    """Medians of every figure over the measurements that match."""
    chosen = [r for r in results if all(r[k] == v for k, v in match.items())]
    figures = [k for k, v in chosen[0].items() if isinstance(v, float)]
    return {k: statistics.median(r[k] for r in chosen) for k in figures}


def _row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def report(results: list[dict], args) -> str:
    """The table of medians, the ratios and whether each target was met."""
    first = results[0]
    lines = [
        f"VGG16 at {args.image_size} px, {first['num_train']} training and {first['num_val']} "
        f"validation images ({args.per_class} per digit), batch {args.batch_size}, "
        f"{args.epochs} epochs, seed {args.seed}, weights={args.weights}, "
        f"Keras backend {args.backend}; "
        f"medians of {args.repeats} run(s).",
        "",
        _row(
            "stage",
            "precision",
            "recipe",
            "wall s",
            "CPU s",
            "s per later epoch",
            "train img/s",
            "peak MiB",
            "val acc",
        ),
        _row("---", "---", "---", "---:", "---:", "---:", "---:", "---:", "---:"),
    ]
    checks = []  # (description, met)
    for stage in args.stages:
        target = 6.0 if stage == 1 else 2.5
        for precision in args.precisions:
            plain = _median(results, recipe="plain", stage=stage, precision=precision)
            fast = _median(results, recipe="tlkeras", stage=stage, precision=precision)
            for name, m in (("plain", plain), ("tlkeras", fast)):
                lines.append(
                    _row(
                        stage,
                        precision,
                        name,
                        f"{m['seconds']:.1f}",
                        f"{m['cpu_seconds']:.1f}",
                        f"{m['epoch_seconds']:.2f}",
                        f"{m['images_per_second']:.1f}",
                        f"{m['peak_rss_mib']:.0f}",
                        f"{m['val_accuracy']:.3f}",
                    )
                )
            speedup = plain["seconds"] / fast["seconds"]
            cpu_speedup = plain["cpu_seconds"] / fast["cpu_seconds"]
            epoch_speedup = plain["epoch_seconds"] / fast["epoch_seconds"]
            gap = abs(plain["val_accuracy"] - fast["val_accuracy"]) * 100
            memory = fast["peak_rss_mib"] - plain["peak_rss_mib"]
            lines.append(
                _row(
                    stage,
                    precision,
                    "tlkeras vs plain",
                    f"{speedup:.1f}x faster",
                    f"{cpu_speedup:.1f}x less",
                    f"{epoch_speedup:.1f}x faster",
                    "",
                    f"{memory:+.0f} (features {fast['features_mib']:.1f})",
                    f"{gap:.1f} points apart",
                )
            )
            checks.append(
                (
                    f"stage {stage}, {precision}: {speedup:.1f}x faster (CPU time: "
                    f"{cpu_speedup:.1f}x; a later epoch: {epoch_speedup:.1f}x), "
                    f"target {target:g}x",
                    speedup >= target,
                )
            )
            checks.append(
                (
                    f"stage {stage}, {precision}: {gap:.1f} accuracy points apart, target 1",
                    gap <= 1,
                )
            )
            if stage == 1:
                checks.append(
                    (
                        f"stage 1, {precision}: peak memory {memory:+.0f} MiB against plain, "
                        f"features {fast['features_mib']:.1f} MiB (target: no more than them)",
                        memory <= fast["features_mib"],
                    )
                )
    if args.shared_cache:
        lines += _shared_cache_rows(results, args, checks)
    if 1 not in args.stages:
        return _finish(lines, checks, args)
    forward = {
        p: _median(results, recipe="tlkeras", stage=1, precision=p)["forward_images_per_second"]
        for p in args.precisions
    }
    lines += ["", _row("precision", "frozen part forward, images/s"), _row("---", "---:")]
    lines += [_row(p, f"{value:.1f}") for p, value in forward.items()]
    if {"float32", "mixed_bfloat16"} <= set(forward):
        ratio = forward["mixed_bfloat16"] / forward["float32"]
        accuracy = {
            p: _median(results, recipe="tlkeras", stage=1, precision=p)["val_accuracy"]
            for p in ("float32", "mixed_bfloat16")
        }
        gap = abs(accuracy["mixed_bfloat16"] - accuracy["float32"]) * 100
        checks.append(
            (
                f"mixed_bfloat16 forward pass {ratio:.2f}x float32's, target 1.6x with "
                "AVX512_BF16",
                ratio >= 1.6,
            )
        )
        checks.append(
            (
                f"mixed_bfloat16 stage-1 accuracy {gap:.1f} points from float32's, target 1",
                gap <= 1,
            )
        )
    return _finish(lines, checks, args)


def _shared_cache_rows(results: list[dict], args, checks: list) -> list[str]:
    """Both stages with one cache against a cache per stage."""
    precision = args.precisions[0]
    one = _median(results, recipe="one cache", stage="both", precision=precision)
    each = _median(results, recipe="a cache per stage", stage="both", precision=precision)
    lines = [
        "",
        f"Both stages ({args.epochs} + {args.epochs} epochs, block5 fine-tuned, {precision}):",
        "",
        _row("features", "wall s", "CPU s", "peak MiB", "final val loss", "val acc"),
        _row("---", "---:", "---:", "---:", "---:", "---:"),
    ]
    for name, m in (("one cache for both stages", one), ("a cache per stage", each)):
        lines.append(
            _row(
                name,
                f"{m['seconds']:.1f}",
                f"{m['cpu_seconds']:.1f}",
                f"{m['peak_rss_mib']:.0f}",
                f"{m['val_loss']:.5f}",
                f"{m['val_accuracy']:.3f}",
            )
        )
    saved = each["seconds"] - one["seconds"]
    lines.append(
        _row(
            "saving",
            f"{saved:.1f} s ({saved / each['seconds']:.0%})",
            f"{each['cpu_seconds'] - one['cpu_seconds']:.1f} s",
            f"{one['peak_rss_mib'] - each['peak_rss_mib']:+.0f}",
            f"{abs(one['val_loss'] - each['val_loss']):.1e} apart",
            "",
        )
    )
    checks.append(
        (
            f"one cache for both stages: {saved:.1f} s faster than a cache per stage, with "
            f"the same final validation loss within 1e-4",
            saved > 0 and abs(one["val_loss"] - each["val_loss"]) <= 1e-4,
        )
    )
    return lines


def _finish(lines: list[str], checks: list[tuple[str, bool]], args) -> str:
    lines.append("")
    lines += [f"{'met   ' if met else 'MISSED'}  {text}" for text, met in checks]
    if args.weights == "none":
        lines.append(
            "With --weights none the backbone is random and the accuracies stay near chance: "
            "they show whether both recipes reach the same numbers, not how good either is."
        )
    return "\n".join(lines)


def machine() -> str:
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        model = next(
            line.split(":", 1)[1].strip()
            for line in info.splitlines()
            if line.startswith("model name")
        )
        flags = " ".join(f for f in ("avx512_bf16", "amx_bf16") if f in info)
    except (OSError, StopIteration):
        model = platform.processor()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = " ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return f"{model}, {cores} cores, bf16 flags: {flags or 'none'}, load average {load}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=128, help="(default: %(default)s)")
    parser.add_argument(
        "--per-class", type=int, default=25, help="images per digit (default: %(default)s)"
    )
    parser.add_argument("--epochs", type=int, default=10, help="(default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=1, help="(default: %(default)s)")
    parser.add_argument(
        "--stages", type=int, nargs="+", default=[1, 2], choices=(1, 2), help="(default: 1 2)"
    )
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=["float32", "mixed_bfloat16"],
        help="(default: %(default)s)",
    )
    parser.add_argument("--weights", default="none", help="none or imagenet (default: none)")
    parser.add_argument(
        "--backend",
        choices=("tensorflow", "jax"),
        default=os.environ.get("KERAS_BACKEND", "tensorflow"),
        help="Keras backend of every worker (default: $KERAS_BACKEND or tensorflow)",
    )
    parser.add_argument(
        "--shared-cache",
        action="store_true",
        help="also time both stages with one cache against a cache per stage",
    )
    parser.add_argument("--json", help="also write every measurement to this file")
    parser.add_argument("--verbose", action="store_true", help="show the workers' output")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        result = run_job(json.loads(args.worker))
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return 0

    print(f"Machine: {machine()}; Keras backend: {args.backend}")
    scratch = tempfile.mkdtemp(prefix="tlkeras-benchmark-")
    began = time.perf_counter()
    try:
        data_dir = os.path.join(scratch, "digits")
        make_subset(Path(data_dir), args.per_class)
        jobs = plan(args, data_dir, scratch)
        results = []
        for number, job in enumerate(jobs, start=1):
            result = run_worker(job, args.verbose)
            results.append(result)
            print(
                f"[{number}/{len(jobs)}] stage {job['stage']} {job['recipe']:8} "
                f"{job['precision']:15} {result['seconds']:7.1f} s  "
                f"peak {result['peak_rss_mib']:.0f} MiB",
                flush=True,
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print()
    print(report(results, args))
    print(f"\nWhole benchmark: {time.perf_counter() - began:.0f} s. Machine now: {machine()}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
