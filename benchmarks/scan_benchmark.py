"""Times the pre-scan and the input pipeline on a generated folder of small images.

Run from the repository root:

    python benchmarks/scan_benchmark.py                      # 10,000 images, 10 classes
    python benchmarks/scan_benchmark.py --num-images 2000 --workers 1 2 4 0

It writes `--num-images` noisy images (half 32x32 PNG, half 64x64 JPEG, 10 classes) into a
temporary folder (or `--folder`), then prints, for each thread count, how long these take:

- `scan_class_folders`: listing the files by extension, no file opened;
- `read_image_header` on every file: what a header-only check costs;
- `scan_dataset` with full decoding (`tlkeras scan DATA_DIR`);
- `scan_dataset` decoding as training does at `--image-size` (the pre-scan of `train`);

and then one epoch of `Data.dataset("train")` twice: the first decodes every file in
tf.data's parallel map, the second reads the in-memory cache. Figures depend on the machine
and on the disk cache (the files were just written, so they are in the OS page cache).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from tlkeras.data import load_data  # noqa: E402
from tlkeras.images import read_image_header  # noqa: E402
from tlkeras.scan import scan_class_folders, scan_dataset  # noqa: E402


def write_images(root: str, num_images: int, num_classes: int = 10, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for index in range(num_images):
        folder = os.path.join(root, f"class_{index % num_classes}")
        os.makedirs(folder, exist_ok=True)
        if index % 2:
            pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(os.path.join(folder, f"{index:05d}.jpg"), quality=90)
        else:
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(os.path.join(folder, f"{index:05d}.png"))


def timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=10_000)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1, 0],
        help="thread counts to time; 0 is tlkeras' default (CPUs + 4)",
    )
    parser.add_argument("--folder", help="use or fill this folder instead of a temporary one")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        root = args.folder or os.path.join(tmp, "images")
        if not os.path.isdir(root):
            seconds, _ = timed(lambda: write_images(root, args.num_images))
            print(f"wrote {args.num_images} images in {seconds:.1f} s to {root}")
        print(f"CPUs: {os.cpu_count()}")
        seconds, (listed, _) = timed(lambda: scan_class_folders(root))
        paths = listed.paths
        name = "scan_class_folders (list by extension)"
        print(f"{name:44} {seconds:6.2f} s for {len(paths)} files")
        seconds, _ = timed(lambda: [read_image_header(p) for p in paths])
        print(f"{'read_image_header on every file, 1 thread':44} {seconds:6.2f} s")
        for workers in [w or None for w in args.workers]:
            label = "default" if workers is None else str(workers)
            seconds, _ = timed(lambda w=workers: scan_dataset(root, num_workers=w))
            rate = len(paths) / seconds
            name = f"scan_dataset, full decode, {label} threads"
            print(f"{name:44} {seconds:6.2f} s ({rate:,.0f} images/s)")
            seconds, _ = timed(
                lambda w=workers: scan_dataset(root, image_size=args.image_size, num_workers=w)
            )
            name = f"scan_dataset, at {args.image_size}px, {label} threads"
            print(f"{name:44} {seconds:6.2f} s ({len(paths) / seconds:,.0f} images/s)")
        data = load_data(root, image_size=args.image_size, batch_size=64, verbose=False)
        train = data.dataset("train")
        for epoch in (1, 2):
            seconds, count = timed(lambda: sum(int(y.shape[0]) for _, y in train))
            name = f"input pipeline, epoch {epoch} ({'decoding' if epoch == 1 else 'cache'})"
            print(f"{name:44} {seconds:6.2f} s ({count / seconds:,.0f} images/s, {count} images)")


if __name__ == "__main__":
    main()
