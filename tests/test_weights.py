"""ImageNet weights provisioning: download and hash check, listing, the provisioned folder.

Nothing here reaches the internet: downloads come from `file://` addresses of weights files
the tests write, except one test that tries the real address and expects it to fail offline.
"""

import dataclasses
import hashlib
import inspect
import os
import sys

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format

from tlkeras.backbones import BACKBONES
from tlkeras.cli import main
from tlkeras.model import build_model, load_backbone
from tlkeras.weights import (
    IMAGENET_STDDEV_RGB,
    WEIGHTS_DIR_ENV,
    WeightsUnavailableError,
    build_imagenet_model,
    download_weights,
    imagenet_file,
    list_weights,
)

VGG16_FILE = BACKBONES["vgg16"].weights_file


def md5(path) -> str:
    with open(path, "rb") as f:
        return hashlib.md5(f.read()).hexdigest()


def write_keras_h5(model, path) -> str:
    """Writes weights the way Keras' published ImageNet files are stored (the legacy .h5)."""
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return str(path)


def publish(monkeypatch, name, folder, file_hash):
    """Points the registry entry at a local folder "server" and a hash, for this test only."""
    entry = dataclasses.replace(
        BACKBONES[name], weights_url=f"file://{folder}/", weights_hash=file_hash
    )
    monkeypatch.setitem(BACKBONES, name, entry)


@pytest.fixture(scope="module")
def vgg16_base():
    return keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))


@pytest.fixture
def served_vgg16(tmp_path, monkeypatch, vgg16_base):
    """A vgg16 ImageNet-style file on a local "server", with its hash in the registry."""
    server = tmp_path / "server"
    server.mkdir()
    path = write_keras_h5(vgg16_base, server / VGG16_FILE)
    publish(monkeypatch, "vgg16", server, md5(path))
    return path


def test_download_checks_the_hash_and_leaves_no_partial_file(tmp_path, served_vgg16):
    folder = tmp_path / "provisioned"
    [found] = download_weights(["vgg16"], weights_dir=folder)
    assert found.status == "ok" and found.path == str(folder / VGG16_FILE)
    assert md5(found.path) == md5(served_vgg16)
    assert os.listdir(folder) == [VGG16_FILE]
    os.remove(served_vgg16)  # A good file already there is kept, not fetched again.
    [again] = download_weights(["vgg16"], weights_dir=folder)
    assert again.status == "ok"


def test_a_download_with_the_wrong_hash_is_deleted(tmp_path, served_vgg16, monkeypatch):
    publish(monkeypatch, "vgg16", os.path.dirname(served_vgg16), "0" * 32)
    folder = tmp_path / "provisioned"
    with pytest.raises(RuntimeError, match=r"vgg16_weights.*is corrupt.*It was deleted"):
        download_weights(["vgg16"], weights_dir=folder)
    assert os.listdir(folder) == []


def test_unreachable_source_names_every_file_to_copy_and_where(tmp_path, monkeypatch):
    for name in ("vgg16", "mobilenet_v2"):
        publish(monkeypatch, name, tmp_path / "no_such_server", None)
    folder = tmp_path / "provisioned"
    with pytest.raises(WeightsUnavailableError) as info:
        download_weights(["vgg16", "mobilenet_v2"], weights_dir=folder)
    message = str(info.value)
    assert message.startswith("Cannot reach the weights source")
    assert f"into {folder}:" in message
    assert VGG16_FILE in message and "1.0_224_no_top.h5" in message
    assert "\n" not in message


def test_real_download_offline_fails_in_one_line(tmp_path):
    """The real address: offline it fails fast; online the file arrives and checks out."""
    try:
        [found] = download_weights(["efficientnet_b0"], weights_dir=tmp_path)
    except WeightsUnavailableError as error:
        message = str(error)
        assert message.startswith("Cannot reach the weights source storage.googleapis.com (")
        assert "efficientnetb0_notop.h5 (from https://storage.googleapis.com/" in message
        assert str(tmp_path) in message and "\n" not in message
    else:
        assert found.status == "ok"


def test_list_reports_size_and_hash_status(tmp_path, served_vgg16, capsys):
    folder = tmp_path / "provisioned"
    folder.mkdir()
    os.link(served_vgg16, folder / VGG16_FILE)
    (folder / BACKBONES["resnet50"].weights_file).write_bytes(b"truncated")
    (folder / BACKBONES["mobilenet_v2"].weights_filename(96)).write_bytes(b"no hash to check")
    statuses = {f.backbone: f.status for f in list_weights(weights_dir=folder)}
    assert statuses["vgg16"] == "ok"
    assert statuses["resnet50"] == "bad hash"
    assert statuses["mobilenet_v2"] == "no published hash"
    assert statuses["inceptionv3"] == "missing"
    code = main(["weights", "list", "--dir", str(folder)])
    out = capsys.readouterr().out
    assert code == 4, "a corrupt file fails the check"
    assert "bad hash" in out and f"{os.path.getsize(served_vgg16) / 1e6:.1f} MB" in out


def test_imagenet_loads_from_the_provisioned_folder(tmp_path, served_vgg16, monkeypatch):
    folder = tmp_path / "provisioned"
    folder.mkdir()
    os.link(served_vgg16, folder / VGG16_FILE)
    expected = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    expected.load_weights(served_vgg16)
    base = load_backbone("vgg16", image_size=32, weights="imagenet", weights_dir=folder)
    for a, b in zip(expected.weights, base.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(folder))
    model = build_model("vgg16", num_classes=2, image_size=32, weights="imagenet", dense_units=4)
    kernel = model.get_layer("vgg16").get_layer("block5_conv3").kernel.numpy()
    np.testing.assert_array_equal(kernel, expected.get_layer("block5_conv3").kernel.numpy())
    assert os.listdir(folder) == [VGG16_FILE], "nothing is written there: it may be read-only"


def test_provisioned_folder_without_the_file_never_downloads(tmp_path, capsys, image_folder):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsUnavailableError, match=r"has no vgg16_weights.*--dir"):
        load_backbone("vgg16", image_size=32, weights="imagenet", weights_dir=empty)
    argv = ["train", image_folder, "--image-size", "32", "--weights-dir", str(empty)]
    assert main(argv) == 4
    err = capsys.readouterr().err
    assert "weights download --backbone vgg16" in err and err.count("\n") == 1


def test_corrupt_provisioned_file_is_refused(tmp_path, served_vgg16):
    folder = tmp_path / "provisioned"
    folder.mkdir()
    with open(served_vgg16, "rb") as f:
        (folder / VGG16_FILE).write_bytes(f.read()[:1000])
    with pytest.raises(WeightsUnavailableError, match="corrupt or truncated"):
        load_backbone("vgg16", image_size=32, weights="imagenet", weights_dir=folder)


def test_efficientnet_is_built_the_way_keras_builds_it_for_imagenet(tmp_path, monkeypatch):
    """EfficientNet adds a Rescaling layer for ImageNet weights; a provisioned file keeps it."""
    plain = keras.applications.EfficientNetB0(
        include_top=False, weights=None, input_shape=(32, 32, 3)
    )
    folder = tmp_path / "provisioned"
    folder.mkdir()
    path = write_keras_h5(plain, folder / BACKBONES["efficientnet_b0"].weights_file)
    publish(monkeypatch, "efficientnet_b0", tmp_path, md5(path))
    base = load_backbone("efficientnet_b0", image_size=32, weights="imagenet", weights_dir=folder)

    def rescalings(model):
        return sum(isinstance(layer, keras.layers.Rescaling) for layer in model.layers)

    assert rescalings(base) == rescalings(plain) + 1
    np.testing.assert_array_equal(
        base.get_layer("stem_conv").kernel.numpy(), plain.get_layer("stem_conv").kernel.numpy()
    )


class _Requested(Exception):
    pass


@pytest.mark.parametrize(("name", "size"), [("vgg16", 32), ("mobilenet_v2", 96)])
def test_registry_asks_for_what_keras_asks_for(name, size, monkeypatch):
    """Records the file name, address and hash keras.applications passes to get_file."""
    from keras.src.utils import file_utils

    def record(fname, origin, **kwargs):
        raise _Requested(fname, origin, kwargs.get("file_hash"))

    monkeypatch.setattr(file_utils, "get_file", record)
    backbone = BACKBONES[name]
    with pytest.raises(_Requested) as info:
        backbone.constructor(include_top=False, weights="imagenet", input_shape=(size, size, 3))
    found = imagenet_file(name, image_size=size)
    assert info.value.args == (found.file, found.url, found.file_hash)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_published_hash_is_in_the_keras_source(name):
    backbone = BACKBONES[name]
    source = inspect.getsource(sys.modules[backbone.constructor.__module__])
    assert backbone.weights_hash is None or f'"{backbone.weights_hash}"' in source


def keras_imagenet_model(name, path, size):
    """The model Keras itself builds for weights="imagenet", its file taken from `path`."""
    from keras.src.utils import file_utils  # Only here: the reference to compare against.

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(file_utils, "get_file", lambda *args, **kwargs: str(path))
        return BACKBONES[name].constructor(
            include_top=False, weights="imagenet", input_shape=(size, size, 3)
        )


def layer_kinds(model):
    """Each layer's class and configuration, without the names Keras numbers per session."""
    return [
        (type(layer).__name__, {k: v for k, v in layer.get_config().items() if k != "name"})
        for layer in model.layers
    ]


@pytest.mark.parametrize("name", ["vgg16", "efficientnet_b0"])
def test_build_imagenet_model_builds_what_keras_builds_for_imagenet(tmp_path, name):
    keras.utils.set_random_seed(0)
    saved = BACKBONES[name].constructor(include_top=False, weights=None, input_shape=(32, 32, 3))
    for variable in saved.non_trainable_variables:  # Moving statistics other than 0 and 1.
        if "moving" in variable.path:
            variable.assign(np.random.default_rng(1).uniform(0.5, 2, variable.shape))
    path = write_keras_h5(saved, tmp_path / "any_name.h5")

    built = build_imagenet_model(name, path, include_top=False, input_shape=(32, 32, 3))
    expected = keras_imagenet_model(name, path, 32)

    assert layer_kinds(built) == layer_kinds(expected)
    for mine, theirs in zip(built.weights, expected.weights, strict=True):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    for mine, original in zip(built.weights, saved.weights, strict=True):
        np.testing.assert_array_equal(mine.numpy(), original.numpy())
    images = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(built(images), expected(images), rtol=1e-5, atol=1e-5)
    differs = name in IMAGENET_STDDEV_RGB  # EfficientNet's ImageNet model has one more layer.
    assert (len(built.layers) != len(saved.layers)) == differs


def test_weights_download_cli(tmp_path, served_vgg16, capsys):
    code = main(["weights", "download", "--backbone", "vgg16", "--dir", str(tmp_path / "w")])
    out = capsys.readouterr().out
    assert code == 0
    assert "vgg16" in out and "ok" in out and str(tmp_path / "w" / VGG16_FILE) in out
    code = main(["weights", "download", "--backbone", "vgg16,vgg99"])
    err = capsys.readouterr().err
    assert code == 2 and "Unknown backbone 'vgg99'" in err and err.count("\n") == 1
