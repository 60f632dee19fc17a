"""Saving and loading safely: class names, safe mode, atomic writes."""

import errno
import json
import os
import shutil
import zipfile

import keras
import numpy as np
import pytest

import tlkeras as tl
from tlkeras.files import atomic_write, write_atomically
from tlkeras.runs import check_free_space, check_run_folder, clear_run_folder


@pytest.fixture
def saved_run(tmp_path):
    model = tl.build_model("vgg16", num_classes=3, image_size=32, weights=None, dense_units=8)
    history = {"epoch": [1], "stage": [1], "loss": [1.0]}
    return tl.runs.save_run(
        tmp_path / "run", model=model, class_names=["a", "b", "c"], config={}, history=history
    )


def test_round_trip_gives_same_outputs(saved_run):
    x = np.random.default_rng(0).uniform(0, 255, size=(2, 32, 32, 3)).astype("float32")
    loaded = tl.load_run(saved_run.path)
    np.testing.assert_allclose(loaded.model(x), saved_run.model(x), rtol=1e-6)
    assert loaded.class_names == ["a", "b", "c"]


def test_missing_class_names_file(saved_run):
    os.remove(os.path.join(saved_run.path, "class_names.json"))
    with pytest.raises(ValueError, match="has no class_names.json"):
        tl.load_run(saved_run.path)


def test_edited_class_names_file_is_refused(saved_run):
    with open(os.path.join(saved_run.path, "class_names.json"), "w") as f:
        json.dump(["c", "b", "a"], f)
    with pytest.raises(ValueError, match="does not match the class names saved inside the model"):
        tl.load_run(saved_run.path)


def test_class_count_mismatch_is_refused(saved_run):
    with open(os.path.join(saved_run.path, "class_names.json"), "w") as f:
        json.dump(["a", "b"], f)
    with pytest.raises(ValueError, match="predicts 3 classes but 2 class names"):
        tl.load_run(saved_run.path)


def test_lambda_layer_model_is_refused(tmp_path):
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)
    path = str(tmp_path / "lambda.keras")
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ValueError, match="safe_mode"):
        tl.saving.load_model(path)


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "f.json"
    atomic_write(path, "one")
    atomic_write(path, "two")
    assert path.read_text() == "two"
    assert os.listdir(tmp_path) == ["f.json"]


def test_an_interrupted_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "history.json"
    atomic_write(path, '{"loss": [1.0]}')

    def killed_halfway(temporary):
        with open(temporary, "w") as f:
            f.write('{"loss": [1.0, 0.')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, killed_halfway)
    assert json.loads(path.read_text()) == {"loss": [1.0]}
    assert os.listdir(tmp_path) == ["history.json"]


def test_a_failed_model_save_keeps_the_old_model(saved_run, monkeypatch):
    path = os.path.join(saved_run.path, "model.keras")
    model = saved_run.model

    def full_disk(filepath, *args, **kwargs):
        with open(filepath, "wb") as f:
            f.write(b"PK\x03\x04 half a zip")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(model, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        tl.save_model(path, model, class_names=["a", "b", "c"])
    assert tl.load_run(saved_run.path).class_names == ["a", "b", "c"]
    assert not [n for n in os.listdir(saved_run.path) if n.startswith(".tmp-")]


def test_truncated_model_file_is_refused_clearly(saved_run):
    path = os.path.join(saved_run.path, "model.keras")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    with pytest.raises(ValueError, match="is not a complete .keras file .* cut short"):
        tl.load_run(saved_run.path)


def rewrite_config(path, edit):
    """Rewrites config.json inside a .keras archive, as a crafted file would."""
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    files["config.json"] = json.dumps(edit(json.loads(files["config.json"]))).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)


def test_model_naming_code_from_another_module_is_refused(saved_run):
    path = os.path.join(saved_run.path, "model.keras")

    def inject(config):
        dense = config["config"]["layers"][-1]
        dense["config"]["activation"] = {
            "module": "os",
            "class_name": "system",
            "config": "echo owned",
            "registered_name": "system",
        }
        return config

    rewrite_config(path, inject)
    with pytest.raises(ValueError, match=r"Refusing to load .* the class os.system, from outside"):
        tl.load_run(saved_run.path)


@pytest.mark.parametrize(
    ("module", "name", "message"),
    [
        ("keras.utils", "get_file", "a reference to keras.utils.get_file, which fetches"),
        (
            "keras.config",
            "enable_unsafe_deserialization",
            "a reference to keras.config.enable_unsafe_deserialization",
        ),
        ("keras.src.saving.saving_api", "load_model", "keras.src.saving.saving_api.load_model"),
        ("keras.ops", "exp", "a reference to the function keras.ops.exp"),
    ],
)
def test_keras_own_dangerous_names_are_refused(saved_run, module, name, message):
    """Gadgets Keras itself would resolve: refused even where a Keras release allows them."""
    path = os.path.join(saved_run.path, "model.keras")

    def inject(config):
        dense = config["config"]["layers"][-1]
        dense["config"]["activation"] = {
            "module": module,
            "class_name": "function",
            "config": name,
            "registered_name": name,
        }
        return config

    rewrite_config(path, inject)
    with pytest.raises(ValueError, match=f"Refusing to load .* {message}"):
        tl.load_run(saved_run.path)


def test_a_keras_with_known_safe_mode_bypasses_is_refused(saved_run, monkeypatch):
    monkeypatch.setattr(keras, "__version__", "3.13.2")
    with pytest.raises(ValueError, match=r"Keras 3.13.2 has known ways around safe_mode.*3.14"):
        tl.load_run(saved_run.path)


def test_a_deprecation_warning_does_not_fail_loading_weights(tmp_path, monkeypatch):
    """Only Keras' own warning that a file does not fit refuses it."""
    from tlkeras.saving import load_weights_strictly

    model = tl.build_model("vgg16", num_classes=2, image_size=32, weights=None, dense_units=0)
    path = tmp_path / "m.weights.h5"
    model.save_weights(path)
    original = keras.Model.load_weights

    def load_and_warn(self, filepath, *args, **kwargs):
        import warnings

        warnings.warn("some library is deprecated", DeprecationWarning, stacklevel=1)
        return original(self, filepath, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "load_weights", load_and_warn)
    with pytest.warns(DeprecationWarning):
        load_weights_strictly(model, path)

    def load_and_skip(self, filepath, *args, **kwargs):
        import warnings

        original(self, filepath, *args, **kwargs)
        saving_lib = os.path.join(
            os.path.dirname(keras.__file__), "src", "saving", "saving_lib.py"
        )
        warnings.warn_explicit("Skipping nested container 'x'.", UserWarning, saving_lib, 1)

    monkeypatch.setattr(keras.Model, "load_weights", load_and_skip)
    with pytest.raises(ValueError, match="does not fit the model: Skipping nested container"):
        load_weights_strictly(model, path)
    monkeypatch.undo()
    other = tl.build_model("vgg16", num_classes=3, image_size=32, weights=None, dense_units=0)
    with pytest.raises(ValueError, match="could not be loaded"):  # Keras refuses this itself.
        load_weights_strictly(other, path)


def test_lambda_layer_is_refused_with_the_reason(tmp_path):
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda x: x * 2, name="double")(inputs)
    path = str(tmp_path / "lambda.keras")
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ValueError, match=r"a Lambda layer, which stores Python .*'double'"):
        tl.saving.load_model(path)


def test_duplicate_class_names_are_refused(saved_run):
    with open(os.path.join(saved_run.path, "class_names.json"), "w") as f:
        json.dump(["a", "b", "a"], f)
    with pytest.raises(ValueError, match=r"names the classes \['a'\] more than once"):
        tl.load_run(saved_run.path)


def test_existing_run_folder_needs_resume_or_overwrite(saved_run):
    with pytest.raises(ValueError, match="already exists. Pass --resume .* --overwrite"):
        check_run_folder(saved_run.path)
    with pytest.raises(ValueError, match="either resume or overwrite, not both"):
        check_run_folder(saved_run.path, resume=True, overwrite=True)
    with open(os.path.join(saved_run.path, "notes.txt"), "w") as f:
        f.write("mine")
    before = sorted(os.listdir(saved_run.path))
    check_run_folder(saved_run.path, overwrite=True)
    assert sorted(os.listdir(saved_run.path)) == before  # Checking deletes nothing.
    clear_run_folder(saved_run.path)
    assert os.listdir(saved_run.path) == ["notes.txt"]  # Only tlkeras' own files went.


def test_overwrite_refuses_a_folder_tlkeras_did_not_write(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="is not a tlkeras run folder"):
        check_run_folder(tmp_path, overwrite=True)
    assert os.listdir(tmp_path) == ["config.json"]
    with pytest.raises(ValueError, match="There is no run to resume"):
        check_run_folder(tmp_path / "new", resume=True)


def test_unwritable_run_folder_is_refused(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError, match=r"Cannot write to the run folder .*Received: out="):
        check_run_folder(tmp_path / "file" / "run")
    check_run_folder(tmp_path / "new" / "run")
    assert os.listdir(tmp_path) == ["file"]  # The check made and removed new/run.


def test_not_enough_disk_space_is_refused(tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=100 * 2**20))
    with pytest.raises(OSError, match=r"needs about 499 MB .* only 100 MB is free"):
        check_free_space(tmp_path, num_params=14_723_010)
    check_free_space(tmp_path, num_params=1_000_000)
