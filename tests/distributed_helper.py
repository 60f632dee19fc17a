"""Runs `tlkeras.train` in a fresh process, for the tf.distribute tests.

A strategy has to be set up before TensorFlow initialises its devices (logical CPUs) or its
runtime (multi-worker collectives), which the pytest process has long done. So the tests
start this script instead:

    python tests/distributed_helper.py CONFIG_JSON RESULT_PREFIX [--logical-cpus N]

It trains with `TrainConfig(**CONFIG_JSON)` and writes `RESULT_PREFIX.json` (history, the
distribution record, whether the model, optimizer and metric variables are mirrored) and
`RESULT_PREFIX.npz` (the trained weights, and the predictions on the training images).
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("result")
    parser.add_argument("--logical-cpus", type=int, default=0)
    args = parser.parse_args()
    # One thread per process: two workers share this machine's cores.
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    if args.logical_cpus:
        cpu = tf.config.list_physical_devices("CPU")[0]
        logical = [tf.config.LogicalDeviceConfiguration()] * args.logical_cpus
        tf.config.set_logical_device_configuration(cpu, logical)

    import tlkeras as tl
    from tlkeras.predict import predict_probabilities
    from tlkeras.scan import scan_class_folders

    config = tl.TrainConfig(**json.loads(args.config))
    run = tl.train(config)

    def mirrored(variables) -> bool:
        return bool(variables) and all(
            isinstance(v.value, tf.distribute.DistributedValues) for v in variables
        )

    paths = scan_class_folders(config.data_dir)[0].paths
    result = {
        "history": run.history,
        "distribution": run.config["distribution"],
        "path": run.path,
        "mirrored": {
            "model": mirrored(run.model.weights),
            "optimizer": mirrored(run.model.optimizer.variables),
            "metrics": mirrored([v for m in run.model.metrics for v in m.variables]),
        },
        "paths": paths,
    }
    np.savez(
        args.result + ".npz",
        predictions=predict_probabilities(run, paths),
        **{f"weight_{i}": w for i, w in enumerate(run.model.get_weights())},
    )
    with open(args.result + ".json", "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
