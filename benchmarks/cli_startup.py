"""How long the command line takes to answer without doing any work, against `import tensorflow`.

Prints the median wall time of `python -m tlkeras --help`, `train --help`, a usage error
(an unknown backbone), `--version`, and `python -c "import tensorflow"` as the baseline, over
N repeats. Run from the repository root:

    python benchmarks/cli_startup.py --repeats 7 | tee benchmarks/results/cli_startup.txt
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = {
    "tlkeras --help": ["-m", "tlkeras", "--help"],
    "tlkeras --version": ["-m", "tlkeras", "--version"],
    "tlkeras train --help": ["-m", "tlkeras", "train", "--help"],
    "tlkeras usage error": ["-m", "tlkeras", "train", "data", "--backbone", "vgg99"],
    "tlkeras missing folder": ["-m", "tlkeras", "train", "no/such/folder"],
    'python -c "import tensorflow"': ["-c", "import tensorflow"],
}


def wall_time(argv) -> float:
    """Seconds one run of `python argv` takes, output discarded."""
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3"}
    start = time.perf_counter()
    subprocess.run([sys.executable, *argv], capture_output=True, env=env, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {args.repeats} repeats")
    print(f"{'command':32} {'median s':>9} {'min s':>7}")
    for name, argv in COMMANDS.items():
        wall_time(argv)  # Warm the file cache.
        times = [wall_time(argv) for _ in range(args.repeats)]
        print(f"{name:32} {statistics.median(times):9.2f} {min(times):7.2f}")


if __name__ == "__main__":
    main()
