"""Kill a training run at random moments, check what is left, resume, and compare at the end.

Runs `python -m tlkeras train` on a tiny generated data set (VGG16 with random weights, 32 px,
12 training images, 2 + 2 epochs, --deterministic) and SIGKILLs it at a random moment, again
and again: after every kill it checks that each file in the run folder is whole (every JSON
parses, every .keras file loads with tlkeras' safe loader, every weights file reads, and the
checkpoint names files that exist), then resumes with --resume. After the last kill it lets the
run finish and compares its weights and history with an uninterrupted run's.

    python benchmarks/kill_resume.py --kills 20 --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import h5py  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import tlkeras as tl  # noqa: E402
from tlkeras import checkpoints  # noqa: E402

FLAGS = [
    "--weights=none",
    "--image-size=32",
    "--batch-size=4",
    "--epochs=2",
    "--fine-tune-epochs=2",
    "--dense-units=8",
    "--patience=0",
    "--validation-split=0.25",
    "--deterministic",
]


def write_data(root: str) -> str:
    rng = np.random.default_rng(0)
    for name, colour in (("cat", (200, 40, 40)), ("dog", (40, 200, 40))):
        os.makedirs(os.path.join(root, name))
        for i in range(8):
            pixels = np.clip(np.array(colour) + rng.normal(0, 30, (32, 32, 3)), 0, 255)
            Image.fromarray(pixels.astype("uint8")).save(os.path.join(root, name, f"{i}.png"))
    return root


def command(data_dir: str, run_dir: str) -> list[str]:
    """Starts the run, or resumes it once it has a checkpoint."""
    started = os.path.isfile(os.path.join(run_dir, "checkpoint", "state.json"))
    where = ["--resume", run_dir] if started else ["--out", run_dir]
    return [sys.executable, "-m", "tlkeras", "train", data_dir, *FLAGS, *where]


def check_files(run_dir: str) -> dict:
    """Fails on any incomplete file; returns what the kill left."""
    temporary = 0
    for folder, _, names in os.walk(run_dir):
        for name in names:
            path = os.path.join(folder, name)
            if name.startswith(".tmp-"):
                temporary += 1  # A write the kill cut short; never read, removed on resume.
            elif name.endswith(".json"):
                with open(path) as f:
                    json.load(f)
            elif name.endswith(".keras"):
                tl.saving.load_model(path)
            elif name.endswith(".weights.h5"):
                with h5py.File(path) as f:
                    f.visititems(lambda _, item: item[()] if isinstance(item, h5py.Dataset) else 0)
            elif name.endswith(".npz"):
                with np.load(path) as arrays:
                    [arrays[key] for key in arrays.files]
    state = {}
    if os.path.isfile(os.path.join(run_dir, "checkpoint", "state.json")):
        loaded = checkpoints.load_state(run_dir)
        if loaded.weights:
            assert os.path.isfile(os.path.join(run_dir, "checkpoint", loaded.weights))
        state = {"epoch": loaded.epoch, "stage": loaded.stage, "finished": loaded.finished}
    return {"temporary_files": temporary, **state}


def compare(run_dir: str, reference_dir: str) -> tuple[float, bool]:
    run, reference = tl.load_run(run_dir), tl.load_run(reference_dir)
    weights = zip(run.model.get_weights(), reference.model.get_weights(), strict=True)
    difference = max(float(np.max(np.abs(a - b))) for a, b in weights)
    return difference, run.history == reference.history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as root:
        data_dir = write_data(os.path.join(root, "data"))
        start = time.perf_counter()
        reference_dir = os.path.join(root, "reference")
        subprocess.run(command(data_dir, reference_dir), check=True, capture_output=True)
        duration = time.perf_counter() - start
        print(f"uninterrupted run: {duration:.1f} s; each kill lands in [0, {duration:.1f}] s")
        kills = mid_write = trials = 0
        results = []
        while kills < args.kills:
            trials += 1
            run_dir = os.path.join(root, f"run{trials}")
            while True:  # Start the run, then resume it, killing each process, until it ends.
                process = subprocess.Popen(
                    command(data_dir, run_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
                )
                delay = rng.uniform(0, duration)
                try:
                    process.wait(timeout=delay)
                    break
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.communicate()
                kills += 1
                left = check_files(run_dir) if os.path.isdir(run_dir) else {"folder": None}
                mid_write += bool(left.get("temporary_files"))
                print(f"run {trials} kill {kills:>2} at {delay:4.1f} s: files whole; {left}")
            assert process.returncode == 0, process.communicate()
            results.append(compare(run_dir, reference_dir))
            print(f"run {trials} finished: {results[-1]}", flush=True)
        difference = max(d for d, _ in results)
        same = all(same for _, same in results)
        print(
            f"{kills} kills over {trials} runs ({mid_write} left a .tmp file, i.e. landed during "
            f"a write): every file left was whole; every run finished with weights within "
            f"{difference:.3g} of the uninterrupted run's; identical histories: {same}"
        )


if __name__ == "__main__":
    main()
