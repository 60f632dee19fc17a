"""Backbone comparison: same split and seed for every backbone, a table and a chart."""

import csv
import json
import os

import numpy as np
import pytest

import tlkeras as tl
from tlkeras.cli import main


def test_compare_two_backbones_on_the_same_split(image_folder, tmp_path, capsys):
    out = tmp_path / "compare"
    argv = ["compare", image_folder, "--backbones", "vgg16,mobilenet_v2", "--weights", "none"]
    argv += ["--image-size", "32", "--epochs", "1", "--batch-size", "8", "--dense-units", "8"]
    argv += ["--patience", "0", "--seed", "3", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "vgg16" in printed and "mobilenet_v2" in printed

    rows = json.loads((out / "comparison.json").read_text())
    assert [row["backbone"] for row in rows] == ["vgg16", "mobilenet_v2"]
    val = tl.scan_dataset(image_folder, validation_split=0.2, seed=3).folder.splits["val"]
    for row in rows:
        run = tl.load_run(row["run_dir"])
        assert run.config["seed"] == 3 and run.config["backbone"] == row["backbone"]
        # val_accuracy is the saved model's accuracy on the shared validation split.
        probabilities = tl.predict(run, val.paths, top_k=2)
        predicted = [run.class_names.index(result["top"][0][0]) for result in probabilities]
        assert row["val_accuracy"] == pytest.approx(np.mean(np.equal(predicted, val.labels)))
        assert row["num_params"] == run.model.count_params()
        assert row["model_megabytes"] == pytest.approx(
            os.path.getsize(os.path.join(row["run_dir"], "model.keras")) / 1e6
        )
        assert row["train_seconds"] > 0 and row["predict_images_per_second"] > 0
        assert row["image_size"] == [32, 32]
    assert rows[0]["num_params"] != rows[1]["num_params"]
    with open(out / "comparison.csv", newline="") as f:
        assert [row["backbone"] for row in csv.DictReader(f)] == ["vgg16", "mobilenet_v2"]
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_checks_every_backbone_before_training(image_folder, tmp_path):
    config = tl.TrainConfig(image_folder, out=str(tmp_path / "c"), weights="none", image_size=32)
    with pytest.raises(ValueError, match="too small for inceptionv3"):
        tl.compare_backbones(config, ["vgg16", "inceptionv3"])
    assert not (tmp_path / "c").exists()  # nothing was trained
    with pytest.raises(ValueError, match="Expected one or more different backbone names"):
        tl.compare_backbones(config, "vgg16,vgg16")
    with pytest.raises(ValueError, match="Unknown backbone 'vgg99'"):
        tl.compare_backbones(config, "vgg16,vgg99")
