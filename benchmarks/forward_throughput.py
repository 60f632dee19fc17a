"""Benchmark: images per second through a frozen backbone, per precision, with and without XLA.

This is the caching pass of `tlkeras.features` (and all the plain recipe does with a frozen
backbone every epoch). Settings alternate round by round, so background load hits them
alike; the script prints the median of the rounds for each. Run from the repository root:

    python benchmarks/forward_throughput.py                       # about 2 minutes on 2 cores
    python benchmarks/forward_throughput.py --backbone resnet50 --image-size 224
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
    return bottom


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="vgg16", help="(default: %(default)s)")
    parser.add_argument("--image-size", type=int, default=128, help="(default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="(default: %(default)s)")
    parser.add_argument("--batches", type=int, default=3, help="per round (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="(default: %(default)s)")
    args = parser.parse_args(argv)

    settings = [(p, jit) for p in ("float32", "mixed_bfloat16") for jit in (False, True)]
    models = {s: frozen_part(args.backbone, args.image_size, *s) for s in settings}
    rng = np.random.default_rng(0)
    shape = (args.batch_size, args.image_size, args.image_size, 3)
    images = rng.uniform(0, 255, size=shape).astype("float32")
    for bottom in models.values():
        bottom.predict_on_batch(images)  # Trace and compile before timing.
    rates = {s: [] for s in settings}
    for _ in range(args.rounds):
        for setting, bottom in models.items():
            start = time.perf_counter()
            for _ in range(args.batches):
                bottom.predict_on_batch(images)
            seconds = time.perf_counter() - start
            rates[setting].append(args.batches * args.batch_size / seconds)

    print(
        f"{args.backbone} at {args.image_size} px, batch {args.batch_size}, Keras "
        f"{keras.__version__}, {os.cpu_count()} CPUs; median of {args.rounds} rounds"
    )
    print("| precision | XLA | images/s | vs float32 without XLA |")
    print("| --- | --- | ---: | ---: |")
    reference = statistics.median(rates[("float32", False)])
    for (precision, jit), values in rates.items():
        rate = statistics.median(values)
        print(f"| {precision} | {'on' if jit else 'off'} | {rate:.1f} | {rate / reference:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
