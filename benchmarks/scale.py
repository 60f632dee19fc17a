"""Scale: `tlkeras train` on generated JPEG folders of 1,000, 10,000 and 50,000 images.

Run from the repository root (the default sizes take hours on a small machine):

    python benchmarks/scale.py | tee benchmarks/results/scale.txt
    python benchmarks/scale.py --sizes 1000 10000 --cache disk --json scale.json
    python benchmarks/scale.py --sizes 200 400 --image-size 64 --draft-files 4    # a quick look

For each size it writes (once; later runs reuse a complete folder) `ROOT/images-N/class_XX/
NNNNNN.jpg`: 20 classes (`--num-classes`), every side drawn in 200-500 px, a smooth gradient
whose colours depend on the class, a few ellipses and rectangles, mild noise, JPEG quality
90. Every image is seeded by its index, so the folders are the same on every machine; they
are written by a process per CPU, and the time this takes is printed but not part of the
table. ROOT is `--root`, by default `tlkeras-scale` in the system temp folder.

Then, for each size, it runs the real command line in a child process:

    python -m tlkeras train ROOT/images-N --backbone mobilenet_v2 --image-size 160 \
        --weights none --epochs 2 --fine-tune-epochs 2 --batch-size 32 --cache auto \
        --out ROOT/runs-N/run --overwrite

with `TLKERAS_PHASE_LOG` set, so the library writes a timestamp at each point it reaches
(see `tlkeras.guards.kill_point`), and `TMPDIR` set to a fresh folder whose size a thread
samples every 0.5 s (a disk feature cache goes there; 0 means the cache stayed in memory).
The child's output goes to `ROOT/runs-N/train.log`. Its CPU time and peak resident set come
from `os.wait4`. One row per size:

- images: training + validation images (the validation split is the CLI's 0.2);
- scan s: the pre-scan (`loading` to `loaded`);
- decode img/s: the input pipeline alone, measured before the run in a fresh process that
  calls `tlkeras.data.load_data` (its pre-scan is not timed) and then times one pass of
  `data.dataset("train", shuffle=False)` over the first `--decode-sample` images (in-memory
  caching off, so every image is decoded);
- cache img/s: stage 1's feature cache, train + val images over `stage1_begin` to
  `features_cached` (absent with `--cache off`);
- stage-1 and stage-2 s/epoch: the median time between the ends of consecutive epochs, the
  first from `fit_begin`;
- wall s, CPU s (user + system), peak RSS MiB, cache disk MiB and the scan's share of wall.

Below the table: time per image and peak RSS against the first (smallest) size, beside the
goals (at the largest size: time per image within 1.3x and peak RSS within 1.5x of the first
size's, peak RSS under 4 GiB, scan under 10% of the run). Last, a separate measurement of
Pillow's JPEG draft mode: `--draft-files` 4000x3000 JPEGs decoded at `--image-size` by
`tlkeras.images.load_image` (which asks libjpeg for a reduced-size decode) and by the same
steps without the draft call, each timed three times on one thread (median).

Caveats: the images were just written, so they are in the OS page cache; a cold disk is
slower. The data is synthetic and the backbone untrained (`--weights none`), so accuracy
means nothing here. Linux counts the memory a process holds when it starts a child in the
child's peak resident set, so this script keeps its own process small: TensorFlow is only
imported in child processes, and in this one after the last training run.
"""

from __future__ import annotations

import argparse
import colorsys
import contextlib
import importlib.metadata
import json
import multiprocessing
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
from PIL import Image, ImageDraw

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

SEED = 0
BATCH_SIZE = 32
SIDE_RANGE = (200, 500)  # each side of a generated image, in pixels
DRAFT_SIZE = (4000, 3000)  # (width, height) of the draft-mode files
JPEG_QUALITY = 90
RESULT_PREFIX = "RESULT "  # the decode worker's last line
GOAL_TIME_RATIO = 1.3
GOAL_RSS_RATIO = 1.5
GOAL_RSS_MIB = 4 * 1024
GOAL_SCAN_SHARE = 10.0  # percent


# ----------------------------------------------------------------------------- the images


def draw_image(key: tuple[int, ...], label: int, num_classes: int, size=None) -> Image.Image:
    """One synthetic picture: a class-coloured gradient, a few shapes and mild noise.

    `key` seeds everything drawn; `size` is `(width, height)`, else drawn in `SIDE_RANGE`.
    """
    rng = np.random.default_rng(key)
    low, high = SIDE_RANGE
    width, height = size or (int(side) for side in rng.integers(low, high + 1, 2))
    hue = label / num_classes
    colours = [
        np.array(colorsys.hsv_to_rgb(h % 1, rng.uniform(0.4, 0.9), rng.uniform(0.5, 1.0)))
        for h in (hue, hue + 0.5 / num_classes)
    ]
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (
        np.cos(angle) * np.linspace(0, 1, width, dtype=np.float32)[None, :]
        + np.sin(angle) * np.linspace(0, 1, height, dtype=np.float32)[:, None]
    )
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)
    start, end = (255 * c.astype(np.float32) for c in colours)
    image = Image.fromarray((start + (end - start) * ramp[..., None]).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 9))):
        w, h = (int(rng.uniform(0.1, 0.5) * side) for side in (width, height))
        x, y = (
            int(rng.integers(-w // 2, width - w // 2)),
            int(rng.integers(-h // 2, height - h // 2)),
        )
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x, y, x + w, y + h), fill=fill, outline=(0, 0, 0), width=int(rng.integers(0, 4)))
    noise = rng.standard_normal((height, width, 3), dtype=np.float32) * 4
    pixels = np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def write_image(job: tuple) -> None:
    """Writes one picture (`path, key, label, num_classes, size`) atomically as a JPEG."""
    path, key, label, num_classes, size = job
    partial = path + ".partial"
    draw_image(key, label, num_classes, size).save(partial, "JPEG", quality=JPEG_QUALITY)
    os.replace(partial, path)


def write_all(folder: str, jobs: list[tuple], marker: str, spec: str) -> float:
    """Fills `folder` with `jobs` unless `marker` already holds `spec`; returns the seconds.

    The marker is written last, so an interrupted folder is written again from scratch.
    Returns 0.0 when the folder was complete already.
    """
    if os.path.isdir(folder) and _read(marker) == spec:
        return 0.0
    with contextlib.suppress(FileNotFoundError):
        os.remove(marker)
    shutil.rmtree(folder, ignore_errors=True)
    for directory in sorted({os.path.dirname(job[0]) for job in jobs}):
        os.makedirs(directory, exist_ok=True)
    start = time.perf_counter()
    with multiprocessing.Pool(os.cpu_count()) as pool:
        for _ in pool.imap_unordered(write_image, jobs, chunksize=16):
            pass
    seconds = time.perf_counter() - start
    with open(marker, "w") as f:
        f.write(spec)
    return seconds


def make_images(root: str, count: int, num_classes: int) -> tuple[str, float]:
    """`ROOT/images-N`: image i in `class_{i % num_classes}`; returns it and the seconds."""
    folder = os.path.join(root, f"images-{count}")
    jobs = [
        (
            os.path.join(folder, f"class_{i % num_classes:02d}", f"{i:06d}.jpg"),
            (SEED, 0, i),
            i % num_classes,
            num_classes,
            None,
        )
        for i in range(count)
    ]
    spec = f"{count} images, {num_classes} classes, seed {SEED}\n"
    return folder, write_all(folder, jobs, folder + ".complete", spec)


def make_draft_files(root: str, count: int) -> tuple[list[str], float]:
    """`count` JPEGs of `DRAFT_SIZE` in `ROOT/draft-WxH`; returns their paths and the seconds."""
    folder = os.path.join(root, "draft-{}x{}".format(*DRAFT_SIZE))
    jobs = [
        (os.path.join(folder, f"{i:03d}.jpg"), (SEED, 1, i), i % 20, 20, DRAFT_SIZE)
        for i in range(count)
    ]
    spec = f"{count} images of {DRAFT_SIZE}, seed {SEED}\n"
    return [job[0] for job in jobs], write_all(folder, jobs, folder + ".complete", spec)


def folder_mib(folder: str) -> float:
    """Disk used by the files under `folder` (allocated blocks), in MiB."""
    total = 0
    for directory, _, names in os.walk(folder):
        for name in names:
            with contextlib.suppress(OSError):  # Deleted while we walked.
                total += os.lstat(os.path.join(directory, name)).st_blocks * 512
    return total / 2**20


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


# ----------------------------------------------------------------------------- measurements


def measure_decode(data_dir: str, image_size: int, sample: int) -> dict:
    """The input pipeline's decoding rate (runs in a fresh process; see the docstring)."""
    import dataclasses

    from tlkeras.data import load_data

    data = load_data(data_dir, image_size=image_size, batch_size=BATCH_SIZE, verbose=False)
    data = dataclasses.replace(data, cache=False)  # Decode every image, fill no cache.
    dataset = data.dataset("train", shuffle=False).take(-(-sample // BATCH_SIZE))
    start = time.perf_counter()
    count = sum(int(labels.shape[0]) for _, labels in dataset)
    return {"images": count, "seconds": time.perf_counter() - start}


def decode_in_fresh_process(data_dir: str, image_size: int, sample: int) -> dict:
    """`measure_decode` in a child process, so TensorFlow never loads into this one.

    Exits with the child's output when it fails.
    """
    job = json.dumps({"data_dir": data_dir, "image_size": image_size, "sample": sample})
    command = [sys.executable, os.path.abspath(__file__), "--decode-worker", job]
    process = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    lines = process.stdout.strip().splitlines()
    if process.returncode != 0 or not lines or not lines[-1].startswith(RESULT_PREFIX):
        tail = "\n".join((process.stdout + process.stderr).splitlines()[-40:])
        print(f"\nThe decode measurement exited with {process.returncode}:\n{tail}")
        raise SystemExit(1)
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


def train_command(data_dir: str, run_dir: str, args) -> list[str]:
    """The CLI command of one run (see the module docstring)."""
    return [
        sys.executable,
        "-m",
        "tlkeras",
        "train",
        data_dir,
        "--backbone",
        args.backbone,
        "--image-size",
        str(args.image_size),
        "--weights",
        "none",
        "--epochs",
        str(args.epochs),
        "--fine-tune-epochs",
        str(args.fine_tune_epochs),
        "--batch-size",
        str(BATCH_SIZE),
        "--cache",
        args.cache,
        *shlex.split(args.extra),
        "--out",
        run_dir,
        "--overwrite",
    ]


def sample_size(folder: str, stop: threading.Event, peak: list[float]) -> None:
    """Keeps the largest `folder_mib(folder)` in `peak[0]`, sampling every 0.5 s until `stop`."""
    while True:
        peak[0] = max(peak[0], folder_mib(folder))
        if stop.wait(0.5):
            return


def run_cli(data_dir: str, work: str, args) -> dict:
    """Runs `tlkeras train` once; returns its phase log and resource use.

    Exits with the tail of the child's log when it fails.
    """
    os.makedirs(work, exist_ok=True)
    log, phases, tmp = (os.path.join(work, name) for name in ("train.log", "phases.log", "tmp"))
    run_dir = os.path.join(work, "run")
    for path in (phases, tmp):
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
    os.makedirs(tmp)
    command = train_command(data_dir, run_dir, args)
    env = {**os.environ, "TLKERAS_PHASE_LOG": phases, "TMPDIR": tmp}
    stop, disk = threading.Event(), [0.0]
    sampler = threading.Thread(target=sample_size, args=(tmp, stop, disk), daemon=True)
    with open(log, "w") as out:
        out.write(shlex.join(command) + "\n\n")
        out.flush()
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=out)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    stop.set()
    sampler.join()
    disk[0] = max(disk[0], folder_mib(tmp))
    shutil.rmtree(tmp, ignore_errors=True)
    if process.returncode != 0:
        with open(log, errors="replace") as f:
            tail = "".join(f.readlines()[-40:])
        print(f"\n`tlkeras train` exited with {process.returncode}; its log: {log}\n{tail}")
        raise SystemExit(1)
    report = json.loads(_read(os.path.join(run_dir, "scan_report.json")) or "{}")
    return {
        "command": shlex.join(command),
        "log": log,
        "num_images": report.get("num_images", {}),
        "phases": read_phases(phases),
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mib": usage.ru_maxrss / 1024,  # KiB on Linux
        "cache_disk_mib": disk[0],
    }


def read_phases(path: str) -> list[tuple[str, float]]:
    """The `NAME UNIX_TIME` lines of a phase log, in order; malformed lines are skipped."""
    points = []
    for line in (_read(path) or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            with contextlib.suppress(ValueError):
                points.append((parts[0], float(parts[1])))
    return points


def first(points, name: str) -> float | None:
    """The time of the first point `name` in `points`, or None."""
    return next((t for n, t in points if n == name), None)


def stage_figures(points, stage: int, epochs: int) -> dict:
    """Stage `stage`'s begin, `features_cached`, `fit_begin` and median seconds per epoch.

    Each stage writes a checkpoint at the end of each of its `epochs` epochs, then one more
    as it ends (not an epoch): only the first `epochs` after `fit_begin` count.
    """
    names = [n for n, _ in points]
    if f"stage{stage}_begin" not in names:
        return {"begin": None, "features_cached": None, "fit_begin": None, "epoch_s": None}
    begin = names.index(f"stage{stage}_begin")
    ends = (f"stage{stage}_end", f"stage{stage + 1}_begin", "saving")  # The first that comes.
    end = next((i for i in range(begin + 1, len(names)) if names[i] in ends), len(names))
    segment = points[begin:end]
    fit = next((i for i, (n, _) in enumerate(segment) if n == "fit_begin"), None)
    marks = [] if fit is None else [segment[fit][1]]
    if fit is not None:
        marks += [t for n, t in segment[fit + 1 :] if n == "checkpoint_saved"][:epochs]
    intervals = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    return {
        "begin": segment[0][1],
        "features_cached": first(segment, "features_cached"),
        "fit_begin": marks[0] if marks else None,
        "epoch_s": statistics.median(intervals) if intervals else None,
    }


def figures(size: int, decode: dict, run: dict, epochs: tuple[int, int]) -> dict:
    """One row of the table from the decode measurement and the run (`epochs` per stage)."""
    points = run["phases"]
    images = sum(run["num_images"].values()) or size
    loading, loaded = first(points, "loading"), first(points, "loaded")
    scan = loaded - loading if loading is not None and loaded is not None else None
    one, two = (stage_figures(points, n, e) for n, e in zip((1, 2), epochs, strict=True))
    cache = None
    if one["begin"] is not None and one["features_cached"] is not None:
        cache = images / max(one["features_cached"] - one["begin"], 1e-9)
    return {
        "size": size,
        "images": images,
        "scan_s": scan,
        "decode_img_s": decode["images"] / decode["seconds"] if decode["seconds"] else None,
        "cache_img_s": cache,
        "stage1_epoch_s": one["epoch_s"],
        "stage2_epoch_s": two["epoch_s"],
        "wall_s": run["wall_s"],
        "cpu_s": run["cpu_s"],
        "peak_rss_mib": run["peak_rss_mib"],
        "cache_disk_mib": run["cache_disk_mib"],
        "scan_share": 100 * scan / run["wall_s"] if scan is not None else None,
        "decode": decode,
        "run": run,
    }


def measure_draft(paths: list[str], image_size: int, repeats: int = 3) -> dict:
    """Decoding rates of large JPEGs with `load_image` (draft mode) and without the draft."""
    from tlkeras import images

    def full_decode(path: str) -> np.ndarray:
        # `images.load_image` minus `_draft_jpeg`: the same decode, orientation, RGB and resize.
        with Image.open(path) as image:
            image.load()
            rgb = images._to_rgb(images._exif_oriented(image))
            if rgb.size != (image_size, image_size):
                rgb = rgb.resize((image_size, image_size), Image.Resampling.BILINEAR)
            return np.array(rgb, dtype=np.uint8)

    methods = {"draft": lambda path: images.load_image(path, image_size), "full": full_decode}
    seconds = {name: [] for name in methods}
    for _ in range(repeats):
        for name, load in methods.items():
            start = time.perf_counter()
            for path in paths:
                load(path)
            seconds[name].append(time.perf_counter() - start)
    difference = np.mean(
        [
            np.abs(methods["draft"](p).astype(np.int16) - methods["full"](p).astype(np.int16))
            for p in paths
        ]
    )
    rates = {name: len(paths) / statistics.median(times) for name, times in seconds.items()}
    return {
        "files": len(paths),
        "size": list(DRAFT_SIZE),
        "image_size": image_size,
        "seconds": seconds,
        "draft_img_s": rates["draft"],
        "full_img_s": rates["full"],
        "speedup": rates["draft"] / rates["full"],
        "mean_abs_difference": float(difference),
    }


# ----------------------------------------------------------------------------- the report


def machine() -> str:
    """CPU model, CPU count and memory of this machine."""
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                model,
            )
    except OSError:
        pass
    try:
        memory = f", {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"
    except (AttributeError, ValueError, OSError):
        memory = ""
    return f"{model or 'unknown CPU'}, {os.cpu_count()} CPUs{memory}"


def versions() -> str:
    """Python, TensorFlow and Keras versions, read without importing them."""
    found = []
    for package in ("tensorflow", "keras"):
        try:
            found.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{package} not installed")
    return f"Python {platform.python_version()}, " + ", ".join(found)


def header() -> list[str]:
    commit = subprocess.run(
        ["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return [
        f"Date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}",
        f"Machine: {machine()}",
        f"Versions: {versions()}" + (f"; tlkeras at commit {commit}" if commit else ""),
        f"Command: {shlex.join([os.path.basename(sys.executable), *sys.argv])}",
    ]


def cell(value, spec: str, width: int) -> str:
    """`value` formatted with `spec` and right-aligned in `width`, or "-" when missing."""
    return f"{'-' if value is None else format(value, spec):>{width}}"


COLUMNS = [  # key, two header lines, format, width
    ("images", "", "images", ",d", 8),
    ("scan_s", "scan", "s", ".1f", 7),
    ("decode_img_s", "decode", "img/s", ",.0f", 8),
    ("cache_img_s", "cache", "img/s", ",.0f", 8),
    ("stage1_epoch_s", "stage 1", "s/epoch", ".1f", 8),
    ("stage2_epoch_s", "stage 2", "s/epoch", ".1f", 8),
    ("wall_s", "wall", "s", ",.0f", 8),
    ("cpu_s", "CPU", "s", ",.0f", 8),
    ("peak_rss_mib", "peak RSS", "MiB", ",.0f", 9),
    ("cache_disk_mib", "cache disk", "MiB", ",.1f", 11),
    ("scan_share", "scan", "share %", ".1f", 8),
]


def table(rows: list[dict]) -> list[str]:
    lines = [
        " ".join(f"{top:>{width}}" for _, top, _, _, width in COLUMNS),
        " ".join(f"{bottom:>{width}}" for _, _, bottom, _, width in COLUMNS),
    ]
    for row in rows:
        lines.append(" ".join(cell(row[key], spec, width) for key, _, _, spec, width in COLUMNS))
    return lines


def ratio(value, base):
    return value / base if value is not None and base else None


def verdict(value, limit: float, unit: str, spec: str = ".2f") -> str:
    if value is None:
        return "unknown"
    return "met" if value <= limit else f"missed by {format(value - limit, spec)}{unit}"


def goals(rows: list[dict]) -> tuple[list[str], dict]:
    """The ratios against the first row and the goals, checked at the largest size."""
    base, last = rows[0], rows[-1]
    per_image = [row["wall_s"] / row["images"] for row in rows]
    lines = [f"Against the first row ({base['images']:,} images):", ""]
    lines.append(f"{'images':>8} {'time/image':>11} {'peak RSS':>9}")
    ratios = []
    for row, time_per_image in zip(rows, per_image, strict=True):
        time_ratio = ratio(time_per_image, per_image[0])
        rss_ratio = ratio(row["peak_rss_mib"], base["peak_rss_mib"])
        ratios.append({"images": row["images"], "time_per_image": time_ratio, "rss": rss_ratio})
        lines.append(
            f"{row['images']:>8,} {cell(time_ratio, '.2f', 10)}x {cell(rss_ratio, '.2f', 8)}x"
        )
    time_ratio, rss_ratio = ratios[-1]["time_per_image"], ratios[-1]["rss"]
    rss, share = last["peak_rss_mib"], last["scan_share"]
    checks = [
        (
            f"time per image within {GOAL_TIME_RATIO}x of the first row's",
            f"{cell(time_ratio, '.2f', 0)}x",
            verdict(time_ratio, GOAL_TIME_RATIO, "x"),
        ),
        (
            f"peak RSS within {GOAL_RSS_RATIO}x of the first row's",
            f"{cell(rss_ratio, '.2f', 0)}x",
            verdict(rss_ratio, GOAL_RSS_RATIO, "x"),
        ),
        (
            f"peak RSS under {GOAL_RSS_MIB // 1024} GiB",
            f"{cell(rss, ',.0f', 0)} MiB",
            verdict(rss, GOAL_RSS_MIB, " MiB", ",.0f"),
        ),
        (
            f"scan share under {GOAL_SCAN_SHARE:.0f}%",
            f"{cell(share, '.1f', 0)}%",
            verdict(share, GOAL_SCAN_SHARE, " points", ".1f"),
        ),
    ]
    lines += ["", f"Goals, at the largest size ({last['images']:,} images):", ""]
    width = max(len(goal) for goal, _, _ in checks)
    lines += [f"  {goal:<{width}}  {value:>10}  {result}" for goal, value, result in checks]
    results = [{"goal": g, "value": v, "result": r} for g, v, r in checks]
    return lines, {"ratios": ratios, "goals": results}


def draft_lines(draft: dict) -> list[str]:
    w, h = draft["size"]
    size = draft["image_size"]
    return [
        f"JPEG draft mode: {draft['files']} files of {w}x{h} decoded to {size}x{size} px, "
        "one thread, median of 3:",
        "",
        f"  {'tlkeras.images.load_image (draft)':<36} {draft['draft_img_s']:8.1f} img/s",
        f"  {'the same steps without the draft':<36} {draft['full_img_s']:8.1f} img/s",
        f"  {'speed-up':<36} {draft['speedup']:8.1f}x",
        f"  {'mean |pixel difference| (0-255)':<36} {draft['mean_abs_difference']:8.2f}",
    ]


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add(
        "--sizes", type=int, nargs="+", default=[1000, 10000, 50000], help="(default: %(default)s)"
    )
    add("--num-classes", type=int, default=20, help="(default: %(default)s)")
    add("--image-size", type=int, default=160, help="(default: %(default)s)")
    add("--backbone", default="mobilenet_v2", help="(default: %(default)s)")
    add("--epochs", type=int, default=2, help="stage 1 epochs (default: %(default)s)")
    add("--fine-tune-epochs", type=int, default=2, help="stage 2 epochs (default: %(default)s)")
    add("--cache", default="auto", help="the CLI's --cache (default: %(default)s)")
    add(
        "--root",
        default=os.path.join(tempfile.gettempdir(), "tlkeras-scale"),
        help="where the images and runs go (default: %(default)s)",
    )
    add(
        "--decode-sample",
        type=int,
        default=2000,
        help="images timed through the input pipeline (default: %(default)s)",
    )
    add("--draft-files", type=int, default=20, help="4000x3000 JPEGs (default: %(default)s)")
    add("--skip-draft", action="store_true", help="leave out the draft-mode measurement")
    add("--json", help="also write every figure to this file")
    add("--extra", default="", help='more CLI arguments, e.g. "--precision mixed_bfloat16"')
    add("--decode-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.decode_worker:
        print(RESULT_PREFIX + json.dumps(measure_decode(**json.loads(args.decode_worker))))
        return 0
    sizes = sorted(set(args.sizes))
    root = os.path.abspath(args.root)
    os.makedirs(root, exist_ok=True)

    head = header()
    print("\n".join(head), flush=True)
    print(f"Images and runs in {root}\n", flush=True)
    folders, generated = {}, {}
    for size in sizes:
        folder, seconds = make_images(root, size, args.num_classes)
        folders[size], generated[size] = folder, seconds
        what = f"generated in {seconds:.1f} s" if seconds else "complete already, reused"
        print(f"{size:>8,} images: {what} ({folder_mib(folder):,.0f} MiB)", flush=True)

    rows = []
    for size in sizes:
        decode = decode_in_fresh_process(folders[size], args.image_size, args.decode_sample)
        run = run_cli(folders[size], os.path.join(root, f"runs-{size}"), args)
        rows.append(figures(size, decode, run, (args.epochs, args.fine_tune_epochs)))
        print(
            f"{size:>8,} images: trained in {run['wall_s']:,.0f} s (log: {run['log']})",
            flush=True,
        )

    draft = None
    if not args.skip_draft and args.draft_files > 0:
        paths, seconds = make_draft_files(root, args.draft_files)
        what = f"generated in {seconds:.1f} s" if seconds else "complete already, reused"
        print(f"{len(paths):>8,} draft-mode files: {what}", flush=True)
        draft = measure_draft(paths, args.image_size)

    print()
    settings = shlex.join(train_command("DATA", "RUN", args)[5:-3])
    print(f"tlkeras train DATA {settings}, {args.num_classes} classes:\n")
    print("\n".join(table(rows)))
    goal_lines, checked = goals(rows)
    print()
    print("\n".join(goal_lines))
    if draft:
        print()
        print("\n".join(draft_lines(draft)))
    if args.json:
        with open(args.json, "w") as f:
            record = {
                "header": head,
                "args": vars(args),
                "generation_s": generated,
                "rows": rows,
                **checked,
                "draft": draft,
            }
            json.dump(record, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
