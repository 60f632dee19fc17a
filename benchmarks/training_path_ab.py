"""A/B: the two stages on this checkout's training path and on an earlier checkout's.

Trains VGG16 (random weights, 32 px, the 1438 training digits, batch 32) for 3 cached
stage-1 epochs and 1 cached stage-2 epoch (block5), in a fresh process per checkout, one
after the other, and prints wall and CPU seconds. The earlier checkout is any tlkeras tree
from before the one-training-path change (it has `train_head_cached`), e.g.:

    git worktree add /tmp/before 32fe192
    python benchmarks/training_path_ab.py --before /tmp/before
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = """
import resource, time
import keras
import tlkeras as tl
import tlkeras.features as features

def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime

data = tl.load_data("data_samples/digits", image_size=32, batch_size=32, seed=0)
keras.utils.set_random_seed(0)
model = tl.build_model("vgg16", num_classes=10, image_size=32, weights=None)
if hasattr(features, "train_head_cached"):  # before: the *_cached twins
    name = "before"
    one = lambda: features.train_head_cached(model, data, epochs=3)
    two = lambda: features.fine_tune_cached(model, data, epochs=1, unfreeze=1, initial_epoch=3)
else:
    name = "after"
    one = lambda: tl.train_head(model, data, epochs=3)
    two = lambda: tl.fine_tune(model, data, epochs=1, unfreeze=1, initial_epoch=3)
for stage, run in (("stage 1, 3 epochs", one), ("stage 2, 1 epoch", two)):
    wall, cpu_start = time.perf_counter(), cpu()
    history = run()
    print(f"RESULT {name:<6} {stage:<17} {time.perf_counter() - wall:7.1f} s wall "
          f"{cpu() - cpu_start:7.1f} CPU s  last loss {history['loss'][-1]:.4f}", flush=True)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="an earlier tlkeras checkout")
    args = parser.parse_args()
    for tree in (os.path.abspath(args.before), ROOT):
        env = {**os.environ, "PYTHONPATH": tree, "TF_CPP_MIN_LOG_LEVEL": "3"}
        process = subprocess.run(
            [sys.executable, "-c", STAGES], cwd=tree, env=env, capture_output=True, text=True
        )
        lines = [line[7:] for line in process.stdout.splitlines() if line.startswith("RESULT")]
        print("\n".join(lines) or process.stderr[-2000:], flush=True)


if __name__ == "__main__":
    main()
