"""The recorded split is the truth: evaluate, export --check, compare and the report read the
run's `checkpoint/split.json`, whatever the current directory or the spelling of the path."""

import csv
import json
import os
import shutil

import numpy as np
import pytest
from conftest import write_class_folders

import tlkeras as tl
from tlkeras.checkpoints import load_split
from tlkeras.cli import main
from tlkeras.export import sample_images
from tlkeras.images import load_images
from tlkeras.report import report_metrics

CLASSES = {"ant": 20, "bee": 20, "fly": 20}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The reported case: 20 images per class, one unreadable file in the first class.

    Trained from inside `root` on the relative path "data", as a user in that folder would.
    Returns `(root, run_dir)`.
    """
    root = tmp_path_factory.mktemp("truth")
    data = write_class_folders(root / "data", CLASSES)
    with open(os.path.join(data, "ant", "broken.png"), "wb") as f:
        f.write(b"not a picture")
    config = tl.TrainConfig(
        "data",
        out=str(root / "run"),
        weights="none",
        image_size=32,
        batch_size=8,
        epochs=1,
        dense_units=8,
        patience=0,
    )
    before = os.getcwd()
    os.chdir(root)
    try:
        tl.train(config)
    finally:
        os.chdir(before)
    return root, str(root / "run")


@pytest.fixture(scope="module")
def absolute_run(trained, tmp_path_factory):
    """The same run as if it had been trained on the absolute path of the data folder."""
    root, run_dir = trained
    copy = str(tmp_path_factory.mktemp("absolute") / "run")
    shutil.copytree(run_dir, copy)
    with open(os.path.join(copy, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    config["data_dir"] = str(root / "data")
    with open(os.path.join(copy, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f)
    return copy


def relative(paths, data_dir):
    return [os.path.relpath(path, data_dir).replace(os.sep, "/") for path in paths]


@pytest.mark.parametrize("which", ["relative", "absolute"])
def test_evaluate_from_another_folder_scores_exactly_the_recorded_val_split(
    trained, absolute_run, which, tmp_path, monkeypatch, capsys
):
    root, run_dir = trained
    run_dir = run_dir if which == "relative" else absolute_run
    recorded = load_split(run_dir)
    assert len(recorded["val"]["paths"]) == 12  # 4 per class, the broken file left out
    monkeypatch.chdir(tmp_path)
    data_dir = str(root / "data")
    assert main(["evaluate", run_dir, data_dir, "--out", "E"]) == 0
    assert "Evaluated 12 images (split: val)" in capsys.readouterr().out
    with open(tmp_path / "E" / "predictions.csv", newline="") as f:
        evaluated = relative([row["path"] for row in csv.DictReader(f)], data_dir)
    assert not set(evaluated) & set(recorded["train"]["paths"])
    assert evaluated == recorded["val"]["paths"]
    with open(tmp_path / "E" / "metrics.json", encoding="utf-8") as f:
        metrics = json.load(f)
    assert metrics["num_training_images"] == 0 and metrics["warning"] is None


@pytest.mark.parametrize(
    "spelling", ["relative", "dot-slash", "absolute", "trailing-slash", "symlink"]
)
def test_the_runs_own_folder_is_recognised_however_it_is_spelled(
    trained, spelling, monkeypatch, capsys
):
    root, run_dir = trained
    monkeypatch.chdir(root)
    if spelling == "symlink":
        link = root / "link"
        if not link.exists():
            os.symlink(root / "data", link)
    data_dir = {
        "relative": "data",
        "dot-slash": "./data/",
        "absolute": str(root / "data"),
        "trailing-slash": str(root / "data") + os.sep,
        "symlink": str(root / "link"),
    }[spelling]
    report = tl.evaluate(tl.load_run(run_dir), data_dir)
    assert report["split"] == "val" and report["num_training_images"] == 0
    assert relative(report["paths"], data_dir) == load_split(run_dir)["val"]["paths"]
    assert "Note:" not in capsys.readouterr().err


def test_a_foreign_folder_is_evaluated_whole_with_a_one_line_note(trained, tmp_path, capsys):
    _, run_dir = trained
    other = write_class_folders(tmp_path / "other", dict.fromkeys(CLASSES, 3), seed=9)
    report = tl.evaluate(tl.load_run(run_dir), other)
    err = capsys.readouterr().err
    assert report["split"] == "all" and report["num_images"] == 9
    assert report["num_training_images"] is None
    notes = [line for line in err.splitlines() if line.startswith("Note:")]
    assert len(notes) == 1 and err.count("\n") == 1
    assert "is not the data folder the run" in notes[0]
    assert "51 of the 60 files in its checkpoint/split.json are missing" in notes[0]


def test_a_copy_is_the_runs_own_folder_and_a_changed_one_is_not(trained, tmp_path, capsys):
    root, run_dir = trained
    run = tl.load_run(run_dir)
    copy = shutil.copytree(root / "data", tmp_path / "copy")
    report = tl.evaluate(run, copy)
    assert report["split"] == "val"
    assert relative(report["paths"], copy) == load_split(run_dir)["val"]["paths"]
    os.remove(os.path.join(copy, load_split(run_dir)["train"]["paths"][0]))
    capsys.readouterr()
    assert tl.evaluate(run, copy)["split"] == "all"
    assert "1 of the 60 files" in capsys.readouterr().err


def test_the_report_counts_the_training_images_it_was_given(trained):
    root, run_dir = trained
    run = tl.load_run(run_dir)
    report = tl.evaluate(run, str(root / "data"), split="all")
    assert report["num_images"] == 60  # 61 files, one unreadable
    assert report["num_training_images"] == len(load_split(run_dir)["train"]["paths"]) == 48
    assert (
        "(48 of the 60 are in the run's recorded training split)"
        in (report_metrics(report, run=run)["warning"])
    )
    train = tl.evaluate(run, str(root / "data"), split="train")
    assert train["num_training_images"] == train["num_images"] == 48


def test_export_check_samples_the_recorded_val_images(trained, monkeypatch):
    root, run_dir = trained
    monkeypatch.chdir(root)  # the run's data_dir, "data", is relative to where it trained
    run = tl.load_run(run_dir)
    recorded = load_split(run_dir)["val"]["paths"]
    expected = load_images([os.path.join("data", path) for path in recorded], 32)
    np.testing.assert_array_equal(sample_images(run, split="val", num_images=100), expected)
    with pytest.raises(ValueError, match=r"no 'test' split of 'data'.*Received: split='test'"):
        sample_images(run, split="test")
