r"""Soak: SIGKILL `tlkeras train` at a moment drawn uniformly over the whole run, then resume.

Each trial starts `python -m tlkeras train` on a tiny generated data set (VGG16 with random
weights, 32 px, 12 training images, 1 + 1 epochs, --deterministic), kills it once with SIGKILL
at a moment drawn uniformly from process start to the end of an uninterrupted run, then
runs the same command with `--resume` and checks that it exits 0 with the uninterrupted
run's history (identical) and weights (within 1e-5). Trials cover `--cache auto`, `off` and
`disk`, on an idle machine and beside a busy-loop process per core ("loaded"), since load
moves where the kills land.

The phase each kill landed in comes from `TLKERAS_PHASE_LOG` (see `tlkeras.guards.kill_point`):
start-up (imports, building the model and the run folder), scan (listing and decoding the
folder), cache (stage 1's features), stage 1, switch (between stage 1's last epoch and stage
2's first, stage 2's features included), stage 2 and the final save.

    python benchmarks/kill_anywhere.py --kills 102 --seed 0 \
        | tee benchmarks/results/kill_anywhere.txt
"""

from __future__ import annotations

import argparse
import collections
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
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from kill_resume import write_data  # noqa: E402

FLAGS = [
    "--weights=none",
    "--image-size=32",
    "--batch-size=4",
    "--epochs=1",
    "--fine-tune-epochs=1",
    "--dense-units=8",
    "--patience=0",
    "--validation-split=0.25",
    "--deterministic",
]
CACHES = ("auto", "off", "disk")
LOADS = ("idle", "loaded")
PHASES = ("start-up", "scan", "cache", "stage 1", "switch", "stage 2", "final save")


def command(data_dir: str, run_dir: str, cache: str, *, resume: bool) -> list[str]:
    where = ["--resume", run_dir] if resume else ["--out", run_dir]
    return [sys.executable, "-m", "tlkeras", "train", data_dir, *FLAGS, f"--cache={cache}", *where]


def phase_of(points: list[str]) -> str:
    """The phase a process was in after reaching `points` (see the module docstring)."""
    phase, stage = "start-up", 1
    for point in points:
        if point == "loading":
            phase = "scan"
        elif point == "loaded":
            phase = "start-up"
        elif point in ("stage1_begin", "stage2_begin"):
            stage = int(point[5])
            phase = "cache" if stage == 1 else "switch"
        elif point == "fit_begin":
            phase = f"stage {stage}"
        elif point == "stage1_end":
            phase = "switch"
        elif point in ("saving", "finished"):
            phase = "final save"
    return phase


def start_hog() -> list[subprocess.Popen]:
    """A busy loop per core, each ending by itself after 3 hours at the latest."""
    loop = "import time\nend = time.time() + 3 * 3600\nwhile time.time() < end: pass"
    return [subprocess.Popen([sys.executable, "-c", loop]) for _ in range(os.cpu_count() or 1)]


def run(args: list[str], env=None, timeout=None) -> tuple[int, float]:
    start = time.perf_counter()
    process = subprocess.run(args, env=env, capture_output=True, timeout=timeout)
    return process.returncode, time.perf_counter() - start


def same_result(run_dir: str, reference_dir: str) -> bool:
    import numpy as np

    import tlkeras as tl

    with (
        open(os.path.join(run_dir, "history.json")) as f,
        open(os.path.join(reference_dir, "history.json")) as g,
    ):
        if json.load(f) != json.load(g):
            return False
    got, want = tl.load_run(run_dir).model, tl.load_run(reference_dir).model
    pairs = zip(got.get_weights(), want.get_weights(), strict=True)
    return all(np.allclose(a, b, rtol=0, atol=1e-5) for a, b in pairs)


def trial(data_dir, run_dir, cache, reference, duration, rng) -> dict:
    """Starts a run, SIGKILLs it once at a uniform moment, resumes it; returns what happened."""
    log = run_dir + ".phases"
    env = {**os.environ, "TLKERAS_PHASE_LOG": log}
    process = subprocess.Popen(
        command(data_dir, run_dir, cache, resume=False),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    delay = rng.uniform(0, duration)
    try:
        process.wait(timeout=delay)
        killed = False  # It finished first: no kill in this trial.
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        killed = True
    points = []
    if os.path.exists(log):
        with open(log) as f:
            points = f.read().split()
    code, _ = run(command(data_dir, run_dir, cache, resume=True), timeout=1800)
    same = code == 0 and same_result(run_dir, reference)
    last = points[-1] if points else "-"
    return {"killed": killed, "phase": phase_of(points), "after": last, "resumed": code == 0,
            "same": same}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=102)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    per_config = -(-args.kills // (len(CACHES) * len(LOADS)))
    table = collections.defaultdict(collections.Counter)
    failures = []
    with tempfile.TemporaryDirectory() as root:
        data_dir = write_data(os.path.join(root, "data"))
        for load in LOADS:
            hog = start_hog() if load == "loaded" else []
            try:
                for cache in CACHES:
                    reference = os.path.join(root, f"reference-{cache}-{load}")
                    code, duration = run(command(data_dir, reference, cache, resume=False))
                    assert code == 0, f"the uninterrupted run failed: {code}"
                    print(
                        f"{load}, --cache {cache}: uninterrupted run {duration:.1f} s", flush=True
                    )
                    kills = attempts = 0
                    while kills < per_config:
                        attempts += 1
                        run_dir = os.path.join(root, f"run-{cache}-{load}-{attempts}")
                        result = trial(data_dir, run_dir, cache, reference, duration, rng)
                        if not result["killed"]:
                            continue
                        kills += 1
                        row = table[result["phase"]]
                        row["kills"] += 1
                        row["resumed"] += result["resumed"]
                        row["same"] += result["same"]
                        row[f"kills {load}"] += 1
                        if not (result["resumed"] and result["same"]):
                            failures.append((load, cache, result))
                        print(f"  kill {kills:>2}: {result}", flush=True)
            finally:
                for process in hog:
                    process.kill()
    print()
    header = f"{'phase':<11} {'kills':>5} {'idle':>5} {'loaded':>6} {'resume exit 0':>13}"
    print(header + f" {'same result':>11}")
    totals = collections.Counter()
    for phase in PHASES:
        row = table[phase]
        totals.update(row)
        print(
            f"{phase:<11} {row['kills']:>5} {row['kills idle']:>5} {row['kills loaded']:>6} "
            f"{row['resumed']:>13} {row['same']:>11}"
        )
    print(
        f"{'all':<11} {totals['kills']:>5} {totals['kills idle']:>5} "
        f"{totals['kills loaded']:>6} {totals['resumed']:>13} {totals['same']:>11}"
    )
    print(f"failures: {failures or 'none'}")


if __name__ == "__main__":
    main()
