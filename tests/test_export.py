"""Exports checked by the programs that consume them: the LiteRT interpreter, ONNX Runtime,
TensorFlow's SavedModel loader, Keras, and Keras on the JAX backend."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import tlkeras as tl
from tlkeras import export
from tlkeras.cli import main
from tlkeras.images import load_images

HAS_ONNX = all(importlib.util.find_spec(m) for m in ("tf2onnx", "onnx", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason='needs pip install "tlkeras[onnx]"')
HAS_LITERT = importlib.util.find_spec("ai_edge_litert") is not None


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A confident two-class run, its images and its Keras probabilities.

    The high learning rate gives top-class margins of about 0.3, well above int8's error; a
    barely trained model (probabilities near 0.5) would flip on rounding alone.
    """
    from conftest import write_class_folders

    root = tmp_path_factory.mktemp("export")
    data_dir = write_class_folders(root / "data", {"cat": 12, "dog": 12})
    config = tl.TrainConfig(
        data_dir,
        out=str(root / "run"),
        weights="none",
        image_size=32,
        batch_size=8,
        epochs=12,
        learning_rate=1e-2,
        dense_units=16,
        patience=0,
        strategy="none",
    )
    run = tl.train(config)
    paths = sorted(str(path) for path in Path(data_dir).rglob("*.png"))
    images = load_images(paths, (32, 32))
    probabilities = run.model.predict(images.astype("float32"), verbose=0)
    return run, images, probabilities


def operator_names(path) -> set[str]:
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    return {
        flatbuffer_utils.opcode_to_name(model, op.opcodeIndex)
        for op in model.subgraphs[0].operators
    }


def test_float_tflite_from_the_cli_matches_keras(capsys, trained, tmp_path):
    run, images, keras_probabilities = trained
    out = tmp_path / "ship" / "cats.tflite"
    code = main(["export", run.path, "--format", "tflite", "--out", str(out), "--check"])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert f"Exported tflite to {out} (" in stdout and "MB)" in stdout
    assert "Checked on 4 validation images against Keras: top class agrees on 100.0%" in stdout

    probabilities = export.predict_tflite(out, images)
    np.testing.assert_allclose(probabilities, keras_probabilities, atol=1e-4)
    interpreter = export.tflite_interpreter(out)
    assert interpreter.get_input_details()[0]["dtype"] == np.float32
    if HAS_LITERT:  # The standalone LiteRT runtime, not TensorFlow's deprecated one.
        assert type(interpreter).__module__.startswith("ai_edge_litert")
    # Only built-in operators: the plain LiteRT runtime on a phone can run it.
    ops = operator_names(out)
    assert "CONV_2D" in ops and "CUSTOM" not in ops
    # The labels travel beside it and inside it.
    assert (tmp_path / "ship" / "cats.labels.txt").read_text() == "cat\ndog\n"
    metadata = export.read_tflite_metadata(out)
    assert metadata["class_names"] == ["cat", "dog"] and metadata["image_size"] == [32, 32]


def test_tflite_falls_back_to_tensorflows_interpreter_without_litert(trained, monkeypatch):
    run, images, keras_probabilities = trained
    result = export.export_model(run, format="tflite")
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # Not installed.
    assert type(export.tflite_interpreter(result.path)) is tf.lite.Interpreter
    np.testing.assert_allclose(
        export.predict_tflite(result.path, images), keras_probabilities, atol=1e-4
    )


@needs_onnx
def test_onnx_from_the_cli_matches_keras_in_onnx_runtime(capsys, trained, tmp_path):
    import onnx

    run, images, keras_probabilities = trained
    out = tmp_path / "ship" / "cats.onnx"
    code = main(["export", run.path, "--format", "onnx", "--out", str(out), "--check"])
    stdout, stderr = capsys.readouterr()
    assert code == 0 and stderr == "", stderr
    assert f"Exported onnx to {out} (" in stdout
    assert "Checked on 4 validation images against Keras: top class agrees on 100.0%" in stdout

    onnx.checker.check_model(str(out))
    for batch_size in (1, 5, 64):  # Any batch size: the batch axis is dynamic.
        probabilities = export.predict_onnx(out, images, batch_size=batch_size)
        np.testing.assert_allclose(probabilities, keras_probabilities, atol=1e-5)
    # The labels travel beside it and inside it.
    assert (tmp_path / "ship" / "cats.labels.txt").read_text() == "cat\ndog\n"
    metadata = export.read_onnx_metadata(out)
    assert metadata["class_names"] == ["cat", "dog"] and metadata["backbone"] == "vgg16"
    assert metadata["format"] == "onnx" and metadata["image_size"] == [32, 32]


@needs_onnx
def test_onnx_goes_to_the_run_folder_by_default(trained):
    result = export.export_model(trained[0], format="onnx")
    assert result.path == os.path.join(trained[0].path, "export", "model.onnx")
    assert result.labels_path == os.path.join(trained[0].path, "export", "model.labels.txt")


@pytest.mark.parametrize(
    ("missing", "backend", "message"),
    [
        ("tf2onnx", "tensorflow", r'needs tf2onnx, not installed here.*"tlkeras\[onnx\]"'),
        ("onnx", "tensorflow", r"needs onnx, not installed here.*\(or pip install onnx\)"),
        (None, "jax", r"Keras runs on jax here. Export with KERAS_BACKEND=tensorflow"),
    ],
)
def test_onnx_without_its_packages_says_what_to_install(
    trained, tmp_path, monkeypatch, capsys, missing, backend, message
):
    monkeypatch.setattr(export, "_installed", lambda module: module != missing)
    monkeypatch.setattr(export.keras.backend, "backend", lambda: backend)
    out = tmp_path / "cats.onnx"
    with pytest.raises(ValueError, match=message):
        export.export_model(trained[0], format="onnx", out=out)
    assert main(["export", trained[0].path, "--format", "onnx", "--out", str(out)]) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("tlkeras: error: ") and stderr.count("\n") == 1
    assert not out.exists()


LOCK_HOLDER = """
import sys, time
from tlkeras.run_lock import RunLock
with RunLock(sys.argv[1], purpose="train"):
    print("held", flush=True)
    time.sleep(600)
"""


def test_export_into_a_run_folder_another_process_writes_is_refused(trained, tmp_path, capsys):
    run = trained[0]
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, run.path], stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout.readline() == b"held\n"
        assert main(["export", run.path, "--format", "keras"]) == 3
        stderr = capsys.readouterr().err
        assert stderr.startswith("tlkeras: file error: The run folder") and "\n" not in stderr[:-1]
        assert f"is in use by another process: pid {holder.pid} on host " in stderr
        assert not os.path.exists(os.path.join(run.path, "export", "model.keras"))
        # Elsewhere, the export writes nothing in the run folder: it goes ahead.
        assert (
            main(["export", run.path, "--format", "keras", "--out", str(tmp_path / "a.keras")])
            == 0
        )
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def test_int8_tflite_agrees_on_the_top_class(trained):
    run, images, keras_probabilities = trained
    result = export.export_model(run, format="tflite-int8", num_calibration_images=16)
    assert result.path == os.path.join(run.path, "export", "model_int8.tflite")
    assert Path(result.labels_path).read_text() == "cat\ndog\n"

    source = export.tflite_interpreter(result.path).get_input_details()[0]
    assert source["dtype"] == np.uint8 and source["quantization"] == (1.0, 0)  # Raw pixels.
    probabilities = export.predict_tflite(result.path, images)
    agreement = np.mean(probabilities.argmax(1) == keras_probabilities.argmax(1))
    assert agreement >= 0.95
    float_size = sum(w.size for w in run.model.get_weights()) * 4
    assert result.size_bytes < float_size / 3  # int8 weights, a quarter of float32.
    assert export.read_tflite_metadata(result.path)["format"] == "tflite-int8"


def test_agreement_is_also_reported_without_the_near_ties():
    expected = [[0.70, 0.20, 0.10], [0.45, 0.40, 0.15], [0.10, 0.85, 0.05], [0.34, 0.33, 0.33]]
    actual = [[0.65, 0.25, 0.10], [0.40, 0.45, 0.15], [0.10, 0.84, 0.06], [0.32, 0.33, 0.35]]
    report = export.compare_probabilities(expected, actual)
    assert report["num_images"] == 4
    assert report["top1_agreement"] == 0.5  # Both flips are near-ties ...
    assert report["near_tie_share"] == 0.5
    assert report["top1_agreement_clear"] == 1.0  # ... and the clear images all agree.
    assert report["max_abs_difference"] == pytest.approx(0.05)
    flipped = export.compare_probabilities(expected, [[0.1, 0.8, 0.1], *actual[1:]])
    assert flipped["top1_agreement_clear"] == 0.5
    all_ties = export.compare_probabilities([[0.5, 0.5]], [[0.5, 0.5]])
    assert all_ties["near_tie_share"] == 1.0 and all_ties["top1_agreement_clear"] is None


def test_dynamic_range_tflite_agrees_on_the_top_class(trained, tmp_path):
    run, images, keras_probabilities = trained
    result = export.export_model(run, format="tflite-dynamic", out=tmp_path / "m.tflite")
    probabilities = export.predict_tflite(result.path, images)
    assert np.mean(probabilities.argmax(1) == keras_probabilities.argmax(1)) >= 0.95
    assert np.abs(probabilities - keras_probabilities).max() < 0.05
    assert result.size_bytes < sum(w.size for w in run.model.get_weights()) * 4 / 3


def test_saved_model_reloads_with_tensorflow_and_gives_the_same_outputs(trained, tmp_path):
    run, images, keras_probabilities = trained
    out = tmp_path / "served"
    result = export.export_model(run, format="savedmodel", out=out)
    reloaded = tf.saved_model.load(str(out))
    probabilities = reloaded.serve(tf.constant(images, tf.float32)).numpy()
    np.testing.assert_allclose(probabilities, keras_probabilities, atol=1e-5)
    assert "serving_default" in reloaded.signatures
    assert (out / "assets.extra" / "labels.txt").read_text() == "cat\ndog\n"
    assert json.loads((out / "assets.extra" / "tlkeras.json").read_text())["backbone"] == "vgg16"
    assert Path(result.labels_path) == tmp_path / "served.labels.txt"
    export.export_model(run, format="savedmodel", out=out)  # An earlier export is replaced.
    assert sorted(os.listdir(tmp_path)) == ["served", "served.labels.txt"]


def test_a_failed_saved_model_swap_keeps_the_earlier_export(trained, tmp_path, monkeypatch):
    run, images, keras_probabilities = trained
    out = tmp_path / "served"
    export.export_model(run, format="savedmodel", out=out)
    (out / "assets.extra" / "earlier.txt").write_text("the earlier export")
    replace, failed = os.replace, []

    def fail_at_the_swap(source, target):
        if os.fspath(target) == str(out) and not failed:  # Renaming the new export in.
            failed.append(source)
            raise OSError(28, "No space left on device")
        replace(source, target)

    monkeypatch.setattr(export.os, "replace", fail_at_the_swap)
    with pytest.raises(OSError, match="No space left"):
        export.export_model(run, format="savedmodel", out=out)
    monkeypatch.undo()
    assert (out / "assets.extra" / "earlier.txt").read_text() == "the earlier export"
    assert sorted(os.listdir(tmp_path)) == ["served", "served.labels.txt"]
    reloaded = tf.saved_model.load(str(out))
    probabilities = reloaded.serve(tf.constant(images, tf.float32)).numpy()
    np.testing.assert_allclose(probabilities, keras_probabilities, atol=1e-5)


def test_a_saved_model_export_killed_mid_swap_is_put_back_by_the_next(trained, tmp_path):
    """A kill between the two renames leaves the earlier export in a `.tmp-*` sibling."""
    run = trained[0]
    out = tmp_path / "served"
    export.export_model(run, format="savedmodel", out=out)
    (out / "earlier.txt").write_text("the earlier export")
    os.replace(out, tmp_path / f".tmp-served-old-{'a' * 32}")
    (tmp_path / f".tmp-served-new-{'b' * 32}").mkdir()  # Half of the new export.
    (tmp_path / f".tmp-served-b-old-{'c' * 32}").mkdir()  # Another export's: not ours.
    export._remove_leftovers(str(tmp_path), "served")
    assert (out / "earlier.txt").read_text() == "the earlier export"
    assert (out / "saved_model.pb").is_file()
    assert sorted(os.listdir(tmp_path)) == [
        f".tmp-served-b-old-{'c' * 32}",
        "served",
        "served.labels.txt",
    ]
    (tmp_path / f".tmp-served-new-{'d' * 32}").mkdir()
    export.export_model(run, format="savedmodel", out=out)
    assert not (out / "earlier.txt").exists()
    assert sorted(os.listdir(tmp_path)) == [
        f".tmp-served-b-old-{'c' * 32}",
        "served",
        "served.labels.txt",
    ]


def test_keras_export_carries_its_class_names(trained, tmp_path):
    run, images, keras_probabilities = trained
    result = export.export_model(run, format="keras", out=tmp_path / "cats.keras")
    loaded = tl.load_run(result.path)
    assert loaded.class_names == ["cat", "dog"]
    np.testing.assert_allclose(
        loaded.model.predict(images.astype("float32"), verbose=0), keras_probabilities, rtol=1e-6
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"format": "onnnx"}, r"Unknown export format 'onnnx'. Expected one of \('savedmodel'"),
        pytest.param(
            {"format": "onnx", "out": "a.tflite"}, "must end with '.onnx'", marks=needs_onnx
        ),
        ({"format": "tflite", "out": "model.tfl"}, "must end with '.tflite'"),
        ({"format": "keras", "out": "model.h5"}, "must end with '.keras'"),
        ({"format": "savedmodel", "out": "{busy}"}, "already holds other files"),
        ({"format": "tflite-int8", "data_dir": "no/such/dir"}, "needs the training data"),
        ({"format": "tflite-int8", "num_calibration_images": 0}, "must be a positive int"),
    ],
)
def test_export_mistakes_are_explained(trained, tmp_path, options, message):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep me")
    if options.get("out") == "{busy}":
        options = {**options, "out": busy}
    with pytest.raises(ValueError, match=message):
        export.export_model(trained[0], **options)
    assert (busy / "notes.txt").read_text() == "keep me"


def test_labels_path_sits_beside_the_export():
    assert export.labels_path("a/model.tflite") == "a/model.labels.txt"
    assert export.labels_path("a/cats.keras") == "a/cats.labels.txt"
    assert export.labels_path("a/cats.onnx") == "a/cats.labels.txt"
    assert export.labels_path("a/saved_model/") == "a/saved_model.labels.txt"


JAX_SCRIPT = """
import sys
import numpy as np
import keras
import tlkeras as tl
from tlkeras.predict import predict_probabilities
assert keras.backend.backend() == "jax", keras.backend.backend()
run = tl.load_run(sys.argv[1])
np.save(sys.argv[2], predict_probabilities(run, sys.argv[3:]))
"""


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")
def test_run_trained_on_tensorflow_loads_and_predicts_under_jax(trained, tmp_path):
    run, _, keras_probabilities = trained
    data_dir = run.config["data_dir"]
    paths = sorted(str(path) for path in Path(data_dir).rglob("*.png"))
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    out = tmp_path / "jax.npy"
    process = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT, run.path, str(out), *paths],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    np.testing.assert_allclose(np.load(out), keras_probabilities, atol=1e-5)
