"""Benchmark: images per second through a frozen backbone, per precision, with and without XLA.

This is the caching pass of `tlkeras.features` (and all the plain recipe does with a frozen
backbone every epoch). With `--train-step N` it also times stage 2's training step, the
work of every stage-2 epoch: the top N blocks and the head trained on the cached features
(forward, backward and the Adam update, with BatchNorm frozen). Settings alternate round by
round, so background load hits them alike; the script prints the median of the rounds for
each. It runs on the Keras backend in `KERAS_BACKEND` (on JAX every step is compiled by
XLA, so `--xla` defaults to `on` there). Run from the repository root:

    python benchmarks/forward_throughput.py                       # about 2 minutes on 2 cores
    python benchmarks/forward_throughput.py --backbone resnet50 --image-size 224
    KERAS_BACKEND=jax python benchmarks/forward_throughput.py --backbone resnet50 \
        --image-size 224 --precisions mixed_bfloat16 --train-step 1 --batches 20  # a GPU
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tlkeras as tl  # noqa: E402


def frozen_part(backbone: str, image_size: int, precision: str, jit_compile: bool):
    with tl.precision_scope(precision):
        model = tl.build_model(backbone, num_classes=2, image_size=image_size, weights=None)
    bottom, _ = tl.split_model(model)
    bottom.jit_compile = jit_compile
    return bottom.predict_on_batch


def stage2_step(backbone, image_size, precision, jit_compile, num_blocks, images, labels):
    """Stage 2's training step on the cached features of `images`, as `step(images)`."""
    with tl.precision_scope(precision):
        model = tl.build_model(backbone, num_classes=2, image_size=image_size, weights=None)
    tl.unfreeze_top_blocks(model, num_blocks)
    bottom, top = tl.split_model(model, num_blocks)
    tl.compile_model(top, learning_rate=1e-5, jit_compile=jit_compile)
    features = bottom.predict_on_batch(images)
    return lambda _: top.train_on_batch(features, labels)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="vgg16", help="(default: %(default)s)")
    parser.add_argument("--image-size", type=int, default=128, help="(default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="(default: %(default)s)")
    parser.add_argument("--batches", type=int, default=3, help="per round (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="(default: %(default)s)")
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=["float32", "mixed_bfloat16"],
        help="(default: %(default)s)",
    )
    parser.add_argument(
        "--xla",
        nargs="+",
        choices=("off", "on"),
        help="(default: off on; on JAX, on)",
    )
    parser.add_argument(
        "--train-step",
        type=int,
        default=0,
        metavar="N",
        help="also time stage 2's training step with the top N blocks unfrozen (default: 0)",
    )
    args = parser.parse_args(argv)
    xla = args.xla or (["on"] if keras.backend.backend() == "jax" else ["off", "on"])

    rng = np.random.default_rng(0)
    shape = (args.batch_size, args.image_size, args.image_size, 3)
    images = rng.uniform(0, 255, size=shape).astype("float32")
    labels = rng.integers(0, 2, size=args.batch_size)
    steps = {}
    for precision in args.precisions:
        for jit in xla:
            setting = (precision, jit == "on")
            steps[("forward", *setting)] = frozen_part(args.backbone, args.image_size, *setting)
            if args.train_step:
                steps[("stage 2 step", *setting)] = stage2_step(
                    args.backbone, args.image_size, *setting, args.train_step, images, labels
                )
    for step in steps.values():
        step(images)  # Trace and compile before timing.
    rates = {s: [] for s in steps}
    for _ in range(args.rounds):
        for setting, step in steps.items():
            start = time.perf_counter()
            for _ in range(args.batches):
                step(images)
            seconds = time.perf_counter() - start
            rates[setting].append(args.batches * args.batch_size / seconds)

    blocks = f", stage 2 with the top {args.train_step} block(s)" if args.train_step else ""
    print(
        f"{args.backbone} at {args.image_size} px, batch {args.batch_size}{blocks}; Keras "
        f"{keras.__version__} on {keras.backend.backend()}, {os.cpu_count()} CPUs; median of "
        f"{args.rounds} rounds of {args.batches} batches"
    )
    print("| step | precision | XLA | images/s | vs the first row of its step |")
    print("| --- | --- | --- | ---: | ---: |")
    for (step, precision, jit), values in rates.items():
        rate = statistics.median(values)
        reference = statistics.median(next(v for k, v in rates.items() if k[0] == step))
        print(
            f"| {step} | {precision} | {'on' if jit else 'off'} | {rate:.1f} | "
            f"{rate / reference:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
