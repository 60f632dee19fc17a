"""Memory of many training runs in one process, as in a notebook looping over settings.

Trains N small runs one after the other in this process (VGG16 with random weights, 32 px,
one epoch per stage, on data_samples/day_night/day) and prints the resident memory after
each run and the process's peak. `tlkeras.train` clears the Keras session at the start of
every run and drops TensorFlow's custom-gradient registrations at its end (see
`tlkeras.memory`); `--no-clear-session` and `--keep-traced-gradients` turn those off to show
what each saves. Linux (reads /proc). The table goes to stderr, Keras' epoch lines to stdout:

    python benchmarks/memory_runs.py > /dev/null                          # 10 runs
    python benchmarks/memory_runs.py --keep-traced-gradients > /dev/null
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402

import tlkeras as tl  # noqa: E402
import tlkeras.memory  # noqa: E402, F401

DATA = os.path.join(os.path.dirname(__file__), "..", "data_samples", "day_night", "day")


def resident_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def traced_gradients() -> int:
    """How many custom-gradient registrations TensorFlow holds now."""
    registry = tl.memory._gradient_registry() or {}
    return sum(name.startswith(tl.memory.CUSTOM_GRADIENT_PREFIX) for name in registry)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--no-clear-session", action="store_true")
    parser.add_argument("--keep-traced-gradients", action="store_true")
    args = parser.parse_args()
    if args.no_clear_session:
        keras.utils.clear_session = lambda *a, **k: None  # What train() calls.
    if args.keep_traced_gradients:
        tl.memory._gradient_registry = lambda: None  # forget_traced_gradients does nothing.
    print(f"{'run':>3} {'seconds':>8} {'RSS MB':>8} {'peak MB':>8}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as root:
        for number in range(1, args.runs + 1):
            start, registered = time.perf_counter(), traced_gradients()
            config = tl.TrainConfig(
                DATA,
                out=os.path.join(root, f"run{number}"),
                weights="none",
                image_size=32,
                epochs=1,
                fine_tune_epochs=1,
                dense_units=64,
                patience=0,
                seed=number,
            )
            run = tl.train(config)  # The previous Run is dropped, as in a loop.
            del run
            gc.collect()
            if not args.keep_traced_gradients and traced_gradients() > registered:
                sys.exit(
                    "memory_runs: tlkeras.train left TensorFlow's traced gradients registered, "
                    "so the memory fix (tlkeras.memory.forget_traced_gradients) is not active."
                )
            seconds = time.perf_counter() - start
            print(
                f"{number:>3} {seconds:>8.1f} {resident_mb():>8.0f} {peak_mb():>8.0f}",
                file=sys.stderr,
                flush=True,
            )
    clear = "off" if args.no_clear_session else "on"
    forget = "off" if args.keep_traced_gradients else "on"
    summary = (
        f"clear_session {clear}, forget_traced_gradients {forget}: "
        f"peak RSS of {args.runs} runs {peak_mb():.0f} MB"
    )
    print(summary, file=sys.stderr)


if __name__ == "__main__":
    main()
