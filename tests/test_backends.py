"""The whole recipe on Keras' JAX backend: train, resume, evaluate, predict, explain, lr-find.

Each backend runs in its own process (Keras picks its backend once, at import), through the
real command line or the small script below.
"""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import write_class_folders

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed"),
]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ["--weights", "none", "--image-size", "32", "--batch-size", "4", "--dense-units", "8"]


def run_on(backend: str, *args: str, env=None, timeout=600) -> subprocess.CompletedProcess:
    environment = {**os.environ, **(env or {}), "KERAS_BACKEND": backend}
    environment["PYTHONPATH"] = os.pathsep.join([ROOT, environment.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, *args], env=environment, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_class_folders(tmp_path_factory.mktemp("backends") / "data", {"cat": 8, "dog": 8})


def test_a_jax_run_is_killed_resumed_evaluated_explained_and_swept(data_dir, tmp_path):
    out = str(tmp_path / "run")
    train = [
        "-m",
        "tlkeras",
        "train",
        data_dir,
        *FLAGS,
        "--epochs",
        "2",
        "--fine-tune-epochs",
        "1",
    ]
    killed = run_on("jax", *train, "--out", out, env={"TLKERAS_KILL_AT": "checkpoint_saved:1"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    resumed = run_on("jax", *train, "--resume", out)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    with open(os.path.join(out, "history.json")) as f:
        history = json.load(f)
    assert history["stage"] == [1, 1, 2] and np.isfinite(history["loss"]).all()
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["versions"]["backend"] == "jax"

    evaluated = run_on("jax", "-m", "tlkeras", "evaluate", out, data_dir)
    assert evaluated.returncode == 0 and "accuracy" in evaluated.stdout, evaluated.stderr
    image = os.path.join(data_dir, "cat", "img_000.png")
    predicted = run_on("jax", "-m", "tlkeras", "predict", out, image, "--format", "json")
    assert predicted.returncode == 0, predicted.stderr
    assert {p["label"] for p in json.loads(predicted.stdout)[0]["predictions"]} == {"cat", "dog"}
    heatmap = tmp_path / "cam"
    explained = run_on("jax", "-m", "tlkeras", "explain", out, image, "--out", str(heatmap))
    assert explained.returncode == 0 and os.listdir(heatmap), explained.stderr
    swept = run_on(
        "jax", "-m", "tlkeras", "lr-find", data_dir, *FLAGS, "--out", str(tmp_path / "lr")
    )
    assert swept.returncode == 0 and "Suggested learning rate" in swept.stdout, swept.stderr
    # A run written on JAX loads and predicts on TensorFlow, with the same probabilities.
    on_tensorflow = run_on(
        "tensorflow", "-m", "tlkeras", "predict", out, image, "--format", "json"
    )
    assert on_tensorflow.returncode == 0, on_tensorflow.stderr
    for jax_row, tf_row in zip(
        json.loads(predicted.stdout)[0]["predictions"],
        json.loads(on_tensorflow.stdout)[0]["predictions"],
        strict=True,
    ):
        assert jax_row["label"] == tf_row["label"]
        assert abs(jax_row["probability"] - tf_row["probability"]) < 1e-5


SAME_START = """
import json, sys
import keras, numpy as np
import tlkeras as tl
from tlkeras.model import get_base

data_dir, weights, out = sys.argv[1:4]
data = tl.load_data(data_dir, image_size=32, batch_size=4, seed=0)
model = tl.build_model("mobilenet_v2", num_classes=2, image_size=32, weights=None,
                       dense_units=8, dropout=0.0)  # no dropout: its random draws differ
try:
    with np.load(weights) as saved:
        model.set_weights([saved[f"arr_{i}"] for i in range(len(saved.files))])
except FileNotFoundError:
    np.savez(weights, *model.get_weights())
moving = [v for v in get_base(model).non_trainable_weights if "moving" in v.path]
before = [keras.ops.convert_to_numpy(v) for v in moving]
head = tl.train_head(model, data, epochs=2, learning_rate=1e-3)
tuned = tl.fine_tune(model, data, epochs=1, unfreeze=1, learning_rate=1e-3, initial_epoch=2)
unchanged = all(np.array_equal(b, keras.ops.convert_to_numpy(v)) for b, v in zip(before, moving))
with open(out, "w") as f:
    json.dump({"backend": keras.backend.backend(), "head": head, "tuned": tuned,
               "batchnorm_unchanged": unchanged, "num_moving": len(moving)}, f)
"""


def test_tensorflow_and_jax_train_the_same_model_to_the_same_numbers(data_dir, tmp_path):
    weights = str(tmp_path / "start.npz")
    results = {}
    for backend in ("tensorflow", "jax"):  # TensorFlow writes the start, JAX loads it.
        out = str(tmp_path / f"{backend}.json")
        process = run_on(backend, "-c", SAME_START, data_dir, weights, out)
        assert process.returncode == 0, process.stderr[-3000:]
        with open(out) as f:
            results[backend] = json.load(f)
    tf_run, jax_run = results["tensorflow"], results["jax"]
    assert (tf_run["backend"], jax_run["backend"]) == ("tensorflow", "jax")
    for stage in ("head", "tuned"):
        for key in ("loss", "val_loss", "val_accuracy"):
            np.testing.assert_allclose(jax_run[stage][key], tf_run[stage][key], atol=1e-3)
    for run in (tf_run, jax_run):
        assert run["num_moving"] > 0 and run["batchnorm_unchanged"]


DATA_PARALLEL = r"""
import json, sys
import keras, numpy as np
import tlkeras as tl
from tlkeras.predict import predict_probabilities
from tlkeras.scan import scan_class_folders

data_dir, out = sys.argv[1:]
settings = dict(data_dir=data_dir, weights="none", image_size=32, epochs=4, fine_tune_epochs=1,
                dense_units=16, dropout=0.0, patience=0, validation_split=0.25,
                learning_rate_scaling="none")
result = {"devices": len(keras.distribution.list_devices())}
# Two devices with 4 images each, and one device with the same global batch of 8.
for strategy, batch_size in (("auto", 4), ("none", 8)):
    config = tl.TrainConfig(**settings, strategy=strategy, batch_size=batch_size,
                            out=f"{out}-{strategy}")
    run = tl.train(config)
    optimizer = run.model.optimizer.variables
    def on_both(variables):
        return bool(variables) and all(len(v.value.sharding.device_set) == 2 for v in variables)
    paths = scan_class_folders(data_dir)[0].paths
    result[strategy] = {
        "distribution": run.config["distribution"],
        "history": run.history,
        "on_both_devices": {"model": on_both(run.model.weights), "optimizer": on_both(optimizer)},
        "predictions": predict_probabilities(run, paths).tolist(),
        "paths": paths,
    }
with open(out + ".json", "w") as f:
    json.dump(result, f)
"""


def test_strategy_auto_trains_data_parallel_over_every_jax_device(tmp_path):
    # 25 training images in global batches of 8: the last one (1 image) must be topped up.
    data_dir = write_class_folders(tmp_path / "data", {"cat": 17, "dog": 16})
    out = str(tmp_path / "run")
    two_cpus = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    process = run_on("jax", "-c", DATA_PARALLEL, data_dir, out, env=two_cpus)
    assert process.returncode == 0, process.stderr[-3000:]
    with open(out + ".json") as f:
        result = json.load(f)
    parallel, single = result["auto"], result["none"]
    assert result["devices"] == 2
    assert parallel["distribution"] == {
        "strategy_class": "DataParallel",
        "num_replicas": 2,
        "num_workers": 1,
        "global_batch_size": 8,
        "learning_rate": 1e-3,
        "fine_tune_learning_rate": 1e-5,
    }
    assert single["distribution"]["strategy_class"] == "Default"
    # Built, compiled and recompiled for fine-tuning in the distribution's scope.
    assert parallel["on_both_devices"] == {"model": True, "optimizer": True}
    assert single["on_both_devices"] == {"model": False, "optimizer": False}
    assert parallel["history"]["stage"] == [1, 1, 1, 1, 2]
    assert np.isfinite(parallel["history"]["val_loss"]).all()
    # The run folder holds a plain model: TensorFlow, on one device, predicts the same.
    import tlkeras as tl
    from tlkeras.predict import predict_probabilities

    loaded = predict_probabilities(tl.load_run(out + "-auto"), parallel["paths"])
    np.testing.assert_allclose(loaded, parallel["predictions"], atol=1e-5)
    # The same global batches and learning rates: data parallel must follow the one-device
    # run step for step (the last batch, one image, is topped up with a copy of itself,
    # which leaves its mean gradient unchanged).
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(parallel["history"][key], single["history"][key], atol=1e-4)
    assert parallel["history"]["val_loss"][-1] < parallel["history"]["val_loss"][0]


def test_two_jax_processes_train_as_one_with_the_same_global_batch(tmp_path):
    import socket

    data_dir = write_class_folders(tmp_path / "data", {"cat": 17, "dog": 16})
    common = [*FLAGS, "--dense-units", "16", "--dropout", "0", "--epochs", "2"]
    common += ["--fine-tune-epochs", "1", "--lr-scaling", "none"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    processes = []
    for index in (0, 1):
        env = {
            "KERAS_BACKEND": "jax",
            "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{port}",
            "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
            "KERAS_DISTRIBUTION_PROCESS_ID": str(index),
            "PYTHONPATH": ROOT,
        }
        argv = ["train", data_dir, *common, "--strategy", "multiworker"]
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "tlkeras", *argv, "--out", str(tmp_path / "two")],
                env={**os.environ, **env},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    errors = [process.communicate(timeout=600)[1] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], errors[0][-3000:]
    # One process with the same global batch of 8 follows the same path, step for step.
    one = run_on("jax", "-m", "tlkeras", "train", data_dir, *common, "--batch-size", "8",
                 "--out", str(tmp_path / "one"))  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]

    import tlkeras as tl

    two, single = tl.load_run(tmp_path / "two"), tl.load_run(tmp_path / "one")
    assert two.config["distribution"]["num_workers"] == 2
    assert two.config["distribution"]["global_batch_size"] == 8
    assert not (tmp_path / "two-worker1").exists() and len(os.listdir(tmp_path)) == 3
    for key in ("loss", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(two.history[key], single.history[key], atol=1e-4)
    for got, want in zip(two.model.get_weights(), single.model.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-4)
