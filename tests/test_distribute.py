"""tf.distribute: strategy choice, the batch and learning-rate rule, and real multi-device runs.

The runs on several devices happen in fresh processes (`tests/distributed_helper.py`):
logical CPU devices and multi-worker collectives must be set up before TensorFlow starts.
"""

import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import tlkeras as tl
from tlkeras import distribute
from tlkeras.cli import main
from tlkeras.predict import predict_probabilities

HELPER = os.path.join(os.path.dirname(__file__), "distributed_helper.py")
# Two well-separated classes; big enough that every run below reaches a stable accuracy.
CLASSES = {"cat": 16, "dog": 16}
TRAINING = {
    "weights": "none",
    "image_size": 32,
    "batch_size": 4,  # Per replica.
    "epochs": 4,
    "fine_tune_epochs": 1,
    "dense_units": 16,
    "patience": 0,
    "validation_split": 0.25,
}
# Two workers train on twice the global batch, half the steps and a sqrt(2) learning rate,
# so they do not follow the one-worker path exactly; their final validation accuracy must
# still be within this of one worker's (one of the 8 validation images, plus float slack).
ACCURACY_TOLERANCE = 0.13


def start_helper(config: dict, result, *, env=None, logical_cpus: int = 0):
    command = [sys.executable, HELPER, json.dumps(config), str(result)]
    if logical_cpus:
        command += ["--logical-cpus", str(logical_cpus)]
    with open(f"{result}.log", "w") as log:  # The child keeps its own handle.
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_for(processes, results, *, timeout: float) -> list[dict]:
    """Waits for every helper; on a timeout or failure, kills the rest and shows the logs."""
    try:
        codes = [process.wait(timeout=timeout) for process in processes]
    except subprocess.TimeoutExpired:
        codes = None
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    logs = "\n".join(Path(f"{result}.log").read_text()[-3000:] for result in results)
    assert codes == [0] * len(processes), f"helpers exited with {codes}:\n{logs}"
    outputs = []
    for result in results:
        with open(f"{result}.json") as f:
            outputs.append(json.load(f))
        outputs[-1]["arrays"] = dict(np.load(f"{result}.npz"))
    return outputs


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_even_batches_top_up_a_short_batch_with_its_own_first_images():
    images = tf.data.Dataset.range(11).batch(4).map(lambda x: (x, x * 10))
    batches = [
        (x.numpy().tolist(), y.numpy().tolist()) for x, y in distribute.even_batches(images, 2)
    ]
    assert batches == [
        ([0, 1, 2, 3], [0, 10, 20, 30]),
        ([4, 5, 6, 7], [40, 50, 60, 70]),
        ([8, 9, 10, 8], [80, 90, 100, 80]),  # 3 images become 4, a multiple of 2 devices.
    ]
    three = [len(x) for x, _ in distribute.even_batches(images, 3)]
    assert three == [6, 6, 3]  # Short batches of 4 and 3 images: 6 and 3 split over 3.
    # Two processes with one device each: each keeps its half of every (topped-up) batch.
    halves = [
        [
            x.numpy().tolist()
            for x, _ in distribute.even_batches(images, 2, num_processes=2, process_index=index)
        ]
        for index in (0, 1)
    ]
    assert halves == [[[0, 1], [4, 5], [8, 9]], [[2, 3], [6, 7], [10, 8]]]
    assert distribute.even_batches(images, 1) is images
    assert distribute.even_batches(None, 2) is None


def test_multiworker_on_jax_needs_the_keras_cluster_variables(monkeypatch):
    for variable in distribute.JAX_CLUSTER_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "2")
    with pytest.raises(
        ValueError,
        match=r"KERAS_DISTRIBUTION_PROCESS_ID=0.*Received: missing="
        r"\['KERAS_DISTRIBUTION_JOB_ADDRESSES', 'KERAS_DISTRIBUTION_PROCESS_ID'\]",
    ):
        distribute._jax_distribution("multiworker")


def test_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match=r"Unknown strategy 'tpu'.*Received: strategy='tpu'"):
        distribute.get_strategy("tpu")


def test_auto_on_one_device_is_the_default_strategy():
    if len(tf.config.list_logical_devices("GPU")) > 1:
        pytest.skip("auto picks MirroredStrategy on this machine's GPUs")
    strategy = distribute.get_strategy("auto")
    assert distribute.describe(strategy) == {
        "strategy_class": "Default",
        "num_replicas": 1,
        "num_workers": 1,
    }
    assert distribute.is_chief(strategy)


@pytest.mark.parametrize(
    ("tf_config", "message"),
    [
        (None, "needs the TF_CONFIG environment variable"),
        ("{not json", "TF_CONFIG is not valid JSON"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}', "'type'"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}', "'index'"),
    ],
)
def test_multiworker_needs_a_valid_tf_config(monkeypatch, tf_config, message):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError, match=message):
        distribute.get_strategy("multiworker")


def test_tf_config_with_another_strategy_warns(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {}}')
    with pytest.warns(UserWarning, match="--strategy multiworker"):
        distribute.get_strategy("none")


def test_learning_rate_rules():
    assert distribute.scale_learning_rate(1e-3, num_replicas=1, scaling="linear") == 1e-3
    assert distribute.scale_learning_rate(1e-3, num_replicas=4, scaling="sqrt") == 2e-3
    assert distribute.scale_learning_rate(1e-5, num_replicas=8, scaling="linear") == 8e-5
    assert distribute.scale_learning_rate(1e-3, num_replicas=8, scaling="none") == 1e-3
    with pytest.raises(ValueError, match="Expected one of \\('sqrt', 'linear', 'none'\\)"):
        distribute.scale_learning_rate(1e-3, num_replicas=2, scaling="cubic")


def test_cli_strategy_mistake_is_one_line(capsys, monkeypatch, image_folder):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    argv = ["train", image_folder, "--weights", "none", "--image-size", "32"]
    code = main([*argv, "--strategy", "multiworker"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "needs the TF_CONFIG environment variable" in err
    with pytest.raises(SystemExit):
        main([*argv, "--strategy", "horovod"])
    assert "invalid choice: 'horovod'" in capsys.readouterr().err


@pytest.mark.slow
def test_mirrored_over_two_cpus_trains_both_stages_and_saves_a_plain_model(tmp_path):
    from conftest import write_class_folders

    data_dir = write_class_folders(tmp_path / "data", CLASSES)
    config = {**TRAINING, "data_dir": data_dir, "out": str(tmp_path / "run")}
    result = tmp_path / "mirrored"
    helper = start_helper({**config, "strategy": "mirrored"}, result, logical_cpus=2)
    (output,) = wait_for([helper], [result], timeout=300)

    assert output["distribution"] == {
        "strategy_class": "MirroredStrategy",
        "num_replicas": 2,
        "num_workers": 1,
        "global_batch_size": 8,
        "learning_rate": pytest.approx(1e-3 * math.sqrt(2)),
        "fine_tune_learning_rate": pytest.approx(1e-5 * math.sqrt(2)),
    }
    assert output["history"]["stage"] == [1, 1, 1, 1, 2]
    # Built and (re)compiled in the strategy's scope: every variable lives on both devices,
    # including the optimizer and metrics of the fine-tuning recompile.
    assert output["mirrored"] == {"model": True, "optimizer": True, "metrics": True}

    run = tl.load_run(config["out"])  # This process has one device and no strategy.
    probabilities = predict_probabilities(run, output["paths"])
    np.testing.assert_allclose(probabilities, output["arrays"]["predictions"], atol=1e-5)
    saved = json.loads(Path(config["out"], "config.json").read_text())
    assert saved["strategy"] == "mirrored" and saved["distribution"]["num_replicas"] == 2


def start_workers(config: dict, result_prefix) -> tuple[list, list]:
    """Two workers on loopback, each in its own process, training with `config`."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    helpers, results = [], []
    for index in range(2):
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config)}
        results.append(Path(f"{result_prefix}_worker{index}"))
        helpers.append(start_helper({**config, "strategy": "multiworker"}, results[-1], env=env))
    return helpers, results


@pytest.mark.slow
def test_two_workers_on_loopback_match_one_worker(tmp_path):
    from conftest import write_class_folders

    data_dir = write_class_folders(tmp_path / "data", CLASSES)
    config = {**TRAINING, "data_dir": data_dir, "out": str(tmp_path / "run")}
    helpers, results = start_workers(config, tmp_path / "two")
    chief, worker = wait_for(helpers, results, timeout=300)

    assert chief["distribution"]["strategy_class"] == "MultiWorkerMirroredStrategy"
    assert chief["distribution"]["num_workers"] == 2
    assert chief["distribution"]["global_batch_size"] == 8
    # Synchronous training: both workers end with exactly the same weights.
    weights = [key for key in chief["arrays"] if key.startswith("weight_")]
    assert len(weights) > 10
    for key in weights:
        np.testing.assert_array_equal(chief["arrays"][key], worker["arrays"][key])
    # Only the chief wrote the run folder, and it loads without any strategy.
    assert worker["path"] == chief["path"] == config["out"]
    assert tl.load_run(config["out"]).config["distribution"]["num_workers"] == 2

    one = tl.train(tl.TrainConfig(**{**config, "out": str(tmp_path / "one"), "strategy": "none"}))
    two_workers = chief["history"]["val_accuracy"][-1]
    one_worker = one.history["val_accuracy"][-1]
    assert one_worker >= 0.875, "the task should be easy enough for one worker"
    assert abs(two_workers - one_worker) <= ACCURACY_TOLERANCE


@pytest.mark.slow
def test_two_workers_killed_mid_run_resume_to_the_uninterrupted_result(tmp_path):
    from conftest import write_class_folders

    from tlkeras import checkpoints

    data_dir = write_class_folders(tmp_path / "data", CLASSES)
    # End to end (no cache), so that an epoch lasts long enough to kill the job inside it.
    config = {**TRAINING, "data_dir": data_dir, "cache": "off"}
    reference, _ = wait_for(
        *start_workers({**config, "out": str(tmp_path / "reference")}, tmp_path / "reference"),
        timeout=300,
    )

    out = tmp_path / "run"
    helpers, results = start_workers({**config, "out": str(out)}, tmp_path / "killed")
    state_file = out / "checkpoint" / "state.json"
    try:
        deadline = time.monotonic() + 300
        while not (state_file.exists() and json.loads(state_file.read_text())["epoch"] >= 1):
            assert helpers[0].poll() is None and time.monotonic() < deadline, "no epoch 1"
            time.sleep(0.05)
    finally:
        for helper in helpers:  # Both machines fail at once, mid-epoch.
            helper.kill()
            helper.wait()
    state = checkpoints.load_state(out)
    assert 1 <= state.epoch < 5 and not state.finished

    chief, worker = wait_for(
        *start_workers({**config, "out": str(out), "resume": True}, tmp_path / "resumed"),
        timeout=300,
    )
    assert chief["history"]["epoch"] == reference["history"]["epoch"] == [1, 2, 3, 4, 5]
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(chief["history"][key], reference["history"][key], rtol=1e-5)
    for key in (k for k in reference["arrays"] if k.startswith("weight_")):
        np.testing.assert_allclose(chief["arrays"][key], reference["arrays"][key], atol=1e-6)
        np.testing.assert_array_equal(worker["arrays"][key], chief["arrays"][key])


def test_a_worker_that_cannot_read_the_chiefs_checkpoint_says_so(tmp_path):
    from tlkeras.train import _worker_folder

    with pytest.raises(ValueError, match=r"cannot read the chief's checkpoint.*shared file"):
        _worker_folder(tmp_path / "elsewhere", resume=True)


def test_a_resuming_worker_copies_what_the_chiefs_state_names(tmp_path):
    from tlkeras import checkpoints
    from tlkeras.train import _worker_folder

    run_dir = tmp_path / "run"
    folder = Path(checkpoints.checkpoint_dir(run_dir))
    folder.mkdir(parents=True)
    state = checkpoints.TrainingState(
        settings={}, stage=1, epoch=2, weights="epoch_0002.weights.h5"
    )
    checkpoints.save_state(run_dir, state)
    for name in ("split.json", "epoch_0002.weights.h5", "epoch_0001.weights.h5"):
        (folder / name).write_text(name)
    worker = Path(_worker_folder(run_dir, resume=True))
    copied = sorted(p.name for p in (worker / "checkpoint").iterdir())
    assert copied == ["epoch_0002.weights.h5", "split.json", "state.json"]
    assert checkpoints.load_state(worker).epoch == 2
