"""Exports a run in every format and checks each with the program that consumes it.

    python benchmarks/export_check.py RUN_DIR DATA_DIR [--out-dir DIR]

For each format it prints the size on disk, the export time, and, on every image of
DATA_DIR (its test or val split, or all of a plain class folder): the largest difference
from the Keras model's probabilities, the share of images whose top class agrees with
Keras (on all images, and on those that are not near-ties: Keras' top two classes at
least `export.NEAR_TIE` apart), and the accuracy. TFLite files run in the TFLite
interpreter, the SavedModel in `tf.saved_model.load`, the `.keras` file in Keras. These
are measurements to report, not pass/fail tests (those are in tests/test_export.py).
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import tlkeras as tl  # noqa: E402
from tlkeras import export  # noqa: E402
from tlkeras.evaluate import evaluation_split  # noqa: E402
from tlkeras.images import load_images  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("data_dir")
    parser.add_argument("--out-dir", help="where to write the exports (default: a temp dir)")
    args = parser.parse_args()

    run = tl.load_run(args.run_dir)
    split, files = evaluation_split(run, args.data_dir)
    images = load_images(files.paths, run.image_size)
    labels = np.asarray(files.labels)
    keras_probabilities = run.model.predict(images.astype("float32"), batch_size=64, verbose=0)
    keras_accuracy = np.mean(keras_probabilities.argmax(1) == labels)
    out_dir = args.out_dir or tempfile.mkdtemp(prefix="tlkeras-exports-")
    print(
        f"run {args.run_dir} ({run.model.name}, {run.image_size[0]}x{run.image_size[1]}, "
        f"{run.model.count_params():,} parameters); {len(images)} images of {args.data_dir} "
        f"({split}); Keras accuracy {keras_accuracy:.4f}; exports in {out_dir}"
    )
    print(
        f"{'format':15} {'size MB':>9} {'export s':>9} {'max |diff|':>11} {'top-1 agree':>12} "
        f"{'not near-tie':>13} {'accuracy':>9}"
    )
    for format, name in export.FORMATS.items():
        start = time.perf_counter()
        result = export.export_model(run, format=format, out=os.path.join(out_dir, name))
        seconds = time.perf_counter() - start
        probabilities = export.exported_probabilities(result, images)
        report = export.compare_probabilities(keras_probabilities, probabilities)
        clear = report["top1_agreement_clear"]
        accuracy = np.mean(probabilities.argmax(1) == labels)
        print(
            f"{format:15} {result.size_bytes / 1e6:9.2f} {seconds:9.1f} "
            f"{report['max_abs_difference']:11.2e} {report['top1_agreement']:12.4f} "
            f"{'-' if clear is None else f'{clear:.4f}':>13} {accuracy:9.4f}",
            flush=True,
        )
    print(f"{report['near_tie_share']:.1%} of the images are near-ties for the Keras model.")


if __name__ == "__main__":
    main()
