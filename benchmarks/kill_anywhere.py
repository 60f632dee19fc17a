r"""Soak: SIGKILL `tlkeras train` at a moment drawn uniformly over the whole run, then resume.

Each trial starts `python -m tlkeras train` on a tiny generated data set (VGG16 with random
weights, 32 px, 12 training images, 1 + 1 epochs, --deterministic) and kills it with
SIGKILL at a moment drawn uniformly from process start to the end of an uninterrupted run.
Then it runs the same command with `--resume`, kills that too at a moment drawn the same
way, and so on until a process finishes first. The run must then have exited 0 with the
uninterrupted run's history (identical) and weights (within 1e-5). So kills also land in
resumed processes: while they restore the checkpoint, and in the middle of a stage.
Trials cover `--cache auto`, `off` and `disk`, on an idle machine and beside a busy-loop
process per core ("loaded"), since load moves where the kills land.

The phase each kill landed in comes from `TLKERAS_PHASE_LOG` (see `tlkeras.guards.kill_point`):
start-up (imports, building the model and the run folder), scan (listing and decoding the
folder), cache (stage 1's features), stage 1, switch (between stage 1's last epoch and stage
2's first, stage 2's features included), stage 2 and the final save. Each kill line also
says the last point reached before it ("after").

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


def trial(data_dir, run_dir, cache, reference, duration, rng, *, max_kills=20) -> list[dict]:
    """Runs `train` until it completes, SIGKILLing each process at a uniform moment.

    The first process starts the run; each one after it resumes it (`--resume`, as a user
    would after a kill), and is killed in turn at a moment drawn from the same range, until
    one finishes before its moment comes (a process that exits with an error also ends the
    trial). Returns one record per kill: the phase it landed in, the last point reached,
    whether the run then completed with exit 0 (`resumed`), and with the uninterrupted
    run's result (`same`).
    """
    log = run_dir + ".phases"
    kills, resume = [], False
    while True:
        if os.path.exists(log):
            os.remove(log)
        process = subprocess.Popen(
            command(data_dir, run_dir, cache, resume=resume),
            env={**os.environ, "TLKERAS_PHASE_LOG": log},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            code = process.wait(
                timeout=rng.uniform(0, duration) if len(kills) < max_kills else None
            )
            break  # It finished (or failed) before its moment came.
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        points = []
        if os.path.exists(log):
            with open(log) as f:
                points = [line.split()[0] for line in f if line.strip()]
        kills.append({"phase": phase_of(points), "after": points[-1] if points else "-"})
        resume = True
    same = code == 0 and same_result(run_dir, reference)
    for kill in kills:
        kill.update(resumed=code == 0, same=same)
    return kills


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=102)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    per_config = -(-args.kills // (len(CACHES) * len(LOADS)))
    table = collections.defaultdict(collections.Counter)
    failures = []
    stopped = False
    try:
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
                            f"{load}, --cache {cache}: uninterrupted run {duration:.1f} s",
                            flush=True,
                        )
                        kills = attempts = 0
                        while kills < per_config:
                            attempts += 1
                            run_dir = os.path.join(root, f"run-{cache}-{load}-{attempts}")
                            for result in trial(
                                data_dir, run_dir, cache, reference, duration, rng
                            ):
                                kills += 1
                                row = table[result["phase"]]
                                row["kills"] += 1
                                row["resumed"] += result["resumed"]
                                row["same"] += result["same"]
                                row[f"kills {load}"] += 1
                                if not (result["resumed"] and result["same"]):
                                    failures.append((load, cache, result))
                                print(f"  kill {kills:>2} (run {attempts}): {result}", flush=True)
                finally:
                    for process in hog:
                        process.kill()
    except KeyboardInterrupt:  # Ctrl-C: the table of the kills so far.
        stopped = True
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
    if stopped:
        print("stopped early (Ctrl-C): the table holds the kills made until then")


if __name__ == "__main__":
    main()
