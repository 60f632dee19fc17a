"""Pretraining a backbone, its folder and manifest, and transferring from it (or refusing to)."""

import hashlib
import importlib
import json
import os
import shutil

import keras
import numpy as np
import pytest

import tlkeras as tl
from tlkeras.cli import main
from tlkeras.model import get_base, load_backbone
from tlkeras.weights import (
    WEIGHT_COUNTS,
    describe_weights_file,
    embedded_manifest,
    read_manifest,
    weights_count,
)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """vgg16 pretrained for one epoch on three coloured classes (the source domain)."""
    from conftest import write_class_folders

    root = tmp_path_factory.mktemp("pretrain")
    source = write_class_folders(root / "source", {"ant": 8, "bee": 8, "fly": 8})
    config = tl.PretrainConfig(
        source,
        out=str(root / "pretrained"),
        backbone="vgg16",
        image_size=32,
        epochs=1,
        batch_size=8,
    )
    return tl.pretrain(config)


def test_pretrained_folder_holds_weights_manifest_and_source_model(pretrained):
    folder = pretrained.path
    assert {"backbone.weights.h5", "manifest.json", "model.keras", "history.json"} <= set(
        os.listdir(folder)
    )
    manifest = read_manifest(folder)
    assert manifest["backbone"] == "vgg16" and manifest["image_size"] == [32, 32]
    assert manifest["class_names"] == ["ant", "bee", "fly"]
    assert manifest["source"]["num_images"] == {"train": 18, "val": 6}
    assert manifest["initial_weights"] == "none" and manifest["built_as"] == "none"
    assert manifest["versions"]["tlkeras"] == tl.__version__ and manifest["created_at"]
    with open(os.path.join(folder, "backbone.weights.h5"), "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == manifest["sha256"]
    inside = embedded_manifest(os.path.join(folder, "backbone.weights.h5"))
    assert inside["backbone"] == "vgg16" and inside["class_names"] == manifest["class_names"]
    umask = os.umask(0)
    os.umask(umask)
    for name in ("backbone.weights.h5", "manifest.json", "model.keras"):
        mode = os.stat(os.path.join(folder, name)).st_mode & 0o777
        assert mode == 0o666 & ~umask, "shareable like any file, not 0600 like a temporary one"


def test_the_whole_backbone_trained(pretrained):
    base = get_base(pretrained.model)
    fresh = load_backbone("vgg16", image_size=32, weights=None)
    assert len(base.trainable_weights) == len(base.weights) == 26
    assert not np.allclose(base.weights[0].numpy(), fresh.weights[0].numpy())


@pytest.mark.parametrize("which", ["folder", "file"])
def test_transfer_loads_exactly_the_pretrained_backbone(pretrained, which, tmp_path):
    weights = pretrained.path
    if which == "file":  # The weights file copied on its own still carries its manifest.
        weights = shutil.copy(os.path.join(pretrained.path, "backbone.weights.h5"), tmp_path)
    model = tl.build_model("vgg16", num_classes=2, image_size=32, weights=weights, dense_units=4)
    for a, b in zip(get_base(pretrained.model).weights, get_base(model).weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_train_with_only_the_weights_flag_takes_backbone_and_size(pretrained, tmp_path, capsys):
    from conftest import write_class_folders

    target = write_class_folders(tmp_path / "target", {"x": 6, "y": 6}, seed=3)
    argv = [
        "train",
        target,
        "--weights",
        pretrained.path,
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--dense-units",
        "4",
        "--validation-split",
        "0.5",
        "--out",
        str(tmp_path / "run"),
    ]
    assert main(argv) == 0, capsys.readouterr().err
    with open(tmp_path / "run" / "config.json") as f:
        config = json.load(f)
    assert config["backbone"] == "vgg16" and config["image_size"] == [32, 32]
    assert config["weights"] == pretrained.path


@pytest.mark.parametrize("which", ["folder", "file"])
def test_weights_for_another_backbone_name_both(pretrained, which):
    weights = pretrained.path
    if which == "file":
        weights = os.path.join(weights, "backbone.weights.h5")
    with pytest.raises(
        ValueError,
        match=r"holds weights pretrained for vgg16 \(on .*source at 32x32 px.*\), but the "
        r"resnet50 backbone was asked for.*Received: weights=",
    ):
        load_backbone("resnet50", image_size=32, weights=weights)


def test_a_foreign_file_is_named_by_its_size(tmp_path):
    path = str(tmp_path / "mine.weights.h5")
    load_backbone("vgg16", image_size=32, weights=None).save_weights(path)
    assert describe_weights_file(path).endswith("the size of vgg16 without its top")
    with pytest.raises(ValueError, match=r"the size of vgg16 .* but mobilenet_v2 without"):
        load_backbone("mobilenet_v2", image_size=32, weights=path)


def test_shapes_that_do_not_match_are_refused(tmp_path):
    """Same architecture, other widths: MobileNetV2 with alpha 0.35 into the 1.0 backbone."""
    narrow = keras.applications.MobileNetV2(
        alpha=0.35, include_top=False, weights=None, input_shape=(32, 32, 3)
    )
    path = str(tmp_path / "narrow.weights.h5")
    narrow.save_weights(path)
    arrays, values = weights_count(narrow)
    with pytest.raises(
        ValueError,
        match=rf"holds a file of {arrays} weight arrays \({values:,} values\), but mobilenet_v2 "
        r"without its top has 260 weight arrays \(2,257,984 values\)",
    ):
        load_backbone("mobilenet_v2", image_size=32, weights=path)


def test_corrupt_or_truncated_weights_are_refused(pretrained, tmp_path):
    folder = shutil.copytree(pretrained.path, tmp_path / "copy")
    weights_file = os.path.join(folder, "backbone.weights.h5")
    with open(weights_file, "r+b") as f:
        f.truncate(os.path.getsize(weights_file) // 2)
    with pytest.raises(
        ValueError, match=r"does not match the sha256 checksum .* corrupt or trunc"
    ):
        load_backbone("vgg16", image_size=32, weights=folder)
    with pytest.raises(ValueError, match=r"cannot be read .*truncated.* corrupt, truncated"):
        load_backbone("vgg16", image_size=32, weights=weights_file)
    garbage = tmp_path / "garbage.weights.h5"
    garbage.write_bytes(b"not hdf5" * 100)
    with pytest.raises(ValueError, match=r"cannot be read .*Received: weights="):
        load_backbone("vgg16", image_size=32, weights=str(garbage))


def test_folder_without_a_manifest(tmp_path):
    with pytest.raises(ValueError, match=r"has no manifest.json.*tlkeras pretrain"):
        load_backbone("vgg16", image_size=32, weights=str(tmp_path))
    (tmp_path / "manifest.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="is not a tlkeras pretrained-backbone manifest"):
        load_backbone("vgg16", image_size=32, weights=str(tmp_path))


@pytest.mark.parametrize("name", ["vgg16", "mobilenet_v2"])
def test_weight_counts_match_the_built_backbones(name):
    assert weights_count(load_backbone(name, image_size=32, weights=None)) == WEIGHT_COUNTS[name]


def test_pretrain_mistakes_exit_2(capsys, tmp_path):
    code = main(["pretrain", str(tmp_path), "--epochs", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "epochs must be an int of at least 1" in err and err.count("\n") == 1


def test_training_batches_are_whole_so_batchnorm_never_sees_a_tiny_one():
    from tlkeras.data import make_dataset
    from tlkeras.pretrain import whole_batches

    images = np.zeros((10, 4, 4, 3), dtype="uint8")
    labels = np.arange(10)
    shuffled = make_dataset(images, labels, batch_size=4, shuffle=True)
    data = whole_batches(shuffled, batch_size=4, num_images=10)
    assert data.cardinality() == 2  # Keras knows the length of an epoch.
    for _ in range(2):  # Each epoch drops a different remainder of 2.
        sizes = [len(y) for _, y in data]
        assert sizes == [4, 4]
    seen = {int(v) for _ in range(6) for _, y in data for v in y}
    assert len(seen) > 8, "the dropped images change from epoch to epoch"


def _pretrain_config(source, out, **options):
    options = {"backbone": "vgg16", "image_size": 32, "epochs": 1, "batch_size": 8, **options}
    return tl.PretrainConfig(str(source), out=str(out), **options)


def test_an_existing_pretrain_folder_is_refused_without_overwrite(pretrained, tmp_path):
    folder = shutil.copytree(pretrained.path, tmp_path / "copy")
    before = {name: os.path.getmtime(os.path.join(folder, name)) for name in os.listdir(folder)}
    with pytest.raises(
        ValueError, match=r"The pretrain folder .*copy' already exists. Pass --overwrite .*out="
    ):
        tl.pretrain(_pretrain_config(tmp_path / "no_data_needed", folder))
    after = {name: os.path.getmtime(os.path.join(folder, name)) for name in os.listdir(folder)}
    assert after == before


def test_overwrite_replaces_only_the_files_pretrain_wrote(pretrained, tmp_path):
    from conftest import write_class_folders

    folder = shutil.copytree(pretrained.path, tmp_path / "copy")
    (folder / "notes.txt").write_text("mine")
    (folder / ".tmp-0123").write_bytes(b"left by a killed write")
    source = write_class_folders(tmp_path / "source", {"x": 6, "y": 6})
    run = tl.pretrain(_pretrain_config(source, folder, overwrite=True, validation_split=0.5))
    assert read_manifest(folder)["class_names"] == ["x", "y"] == run.class_names
    assert sorted(os.listdir(folder)) == sorted(
        ["notes.txt", "backbone.weights.h5", "manifest.json", "model.keras"]
        + ["class_names.json", "config.json", "history.json", "history.csv"]
    )
    assert (folder / "notes.txt").read_text() == "mine"


def test_overwrite_clears_the_old_pretrain_files_before_training(
    pretrained, tmp_path, monkeypatch
):
    folder = shutil.copytree(pretrained.path, tmp_path / "copy")
    (folder / "notes.txt").write_text("mine")

    def stop(*args, **kwargs):
        raise RuntimeError("training stopped")

    monkeypatch.setattr(importlib.import_module("tlkeras.pretrain"), "fit_whole_model", stop)
    with pytest.raises(RuntimeError, match="training stopped"):
        tl.pretrain(_pretrain_config(pretrained.config["data_dir"], folder, overwrite=True))
    assert os.listdir(folder) == ["notes.txt"], "no stale manifest beside missing weights"


def test_overwrite_refuses_a_folder_tlkeras_did_not_write(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "model.keras").write_text("someone else's")
    with pytest.raises(ValueError, match=r"is not a tlkeras run folder .*will not delete"):
        tl.pretrain(_pretrain_config(tmp_path / "no_data", tmp_path / "mine", overwrite=True))
    assert (tmp_path / "mine" / "model.keras").read_text() == "someone else's"


def test_pretrain_checks_the_free_disk_space_before_training(pretrained, tmp_path, monkeypatch):
    from tlkeras import runs

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(runs.shutil, "disk_usage", lambda path: usage._replace(free=2**20))
    with pytest.raises(OSError, match=r"Not enough free disk space .*only 1 MB is free"):
        tl.pretrain(_pretrain_config(pretrained.config["data_dir"], tmp_path / "new"))
    assert not (tmp_path / "new").exists()
