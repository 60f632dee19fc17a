"""Seeing a trained run: training curves, the evaluation report with a known answer, the
Grad-CAM, predictions-grid and plot-history commands, and figures in notebooks."""

import base64
import csv
import json
import os
import re
import shutil

import keras
import numpy as np
import pytest
from conftest import write_class_folders
from sklearn.linear_model import LogisticRegression

import tlkeras as tl
from tlkeras.cli import main
from tlkeras.evaluate import most_confused, top_losses
from tlkeras.plots import fine_tune_start, plot_history
from tlkeras.report import report_metrics, write_report
from tlkeras.runs import save_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# write_class_folders colours the 1st, 2nd and 3rd class red, green and blue; sorted, the
# class names are blue (0), green (1), red (2).
CLASSES = {"red": 12, "green": 12, "blue": 12}


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory):
    """A run folder whose model tells red, green and blue images apart with certainty.

    `tl.train` runs both stages (one epoch each) and writes the run folder. A random backbone's
    features are tiny (about 0.07 for VGG16 at 32 px), so a few epochs barely move the head;
    the head is then fitted in closed form with scikit-learn, making the known answers below
    certain, and the run is saved again.
    """
    root = tmp_path_factory.mktemp("colours")
    config = tl.TrainConfig(
        write_class_folders(root / "data", CLASSES),
        out=str(root / "run"),
        backbone="vgg16",
        weights="none",
        image_size=32,
        batch_size=8,
        epochs=1,
        fine_tune_epochs=1,
        dense_units=0,
        patience=0,
    )
    run = tl.train(config)
    data = tl.load_data(config.data_dir, image_size=32)
    images = np.concatenate([data.arrays[split][0] for split in ("train", "val")])
    labels = np.concatenate([data.arrays[split][1] for split in ("train", "val")])
    pooled = keras.Model(run.model.input, run.model.get_layer("pool").output)
    head = LogisticRegression(C=1e4, max_iter=5000).fit(pooled.predict(images, verbose=0), labels)
    run.model.get_layer("predictions").set_weights([head.coef_.T, head.intercept_])
    return save_run(
        run.path,
        model=run.model,
        class_names=run.class_names,
        config=run.config,
        history=run.history,
    )


@pytest.fixture(scope="module")
def planted_folder(tmp_path_factory):
    """4 images per class, plus 2 green images filed under red/: the known answer is that
    exactly those 2 are wrong, predicted green."""
    root = tmp_path_factory.mktemp("planted")
    folder = write_class_folders(root / "data", CLASSES.fromkeys(CLASSES, 4), seed=5)
    greens = write_class_folders(root / "greens", {"red": 0, "green": 2}, seed=6)
    planted = []
    for source, name in (("img_000.png", "img_000_x.png"), ("img_001.png", "img_002_x.png")):
        planted.append(os.path.join(folder, "red", name))
        shutil.copy(os.path.join(greens, "green", source), planted[-1])
    return folder, planted


def test_train_writes_the_training_curves(colour_run):
    path = os.path.join(colour_run.path, "history.png")
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    history = tl.load_run(colour_run.path).history
    assert fine_tune_start(history) == 1.5  # between epoch 1 (stage 1) and 2 (stage 2)
    figure = plot_history(colour_run.path)  # redrawn from history.json
    loss_axes = figure.axes[0]
    assert [line.get_label() for line in loss_axes.lines] == [
        "training",
        "val",
        "fine-tuning starts",
    ]
    assert list(loss_axes.lines[-1].get_xdata()) == [1.5, 1.5]
    np.testing.assert_allclose(loss_axes.lines[0].get_ydata(), history["loss"])


def test_evaluation_lines_up_with_a_known_answer(colour_run, planted_folder):
    folder, planted = planted_folder
    report = tl.evaluate(colour_run, folder)
    names = report["class_names"]
    assert names == ["blue", "green", "red"]
    # Sorted file order: red/img_000.png, red/img_000_x.png, ..., red/img_002_x.png, ...
    assert [report["paths"][i] for i in (9, 12)] == planted
    assert report["y_true"] == [0] * 4 + [1] * 4 + [2] * 6
    expected_pred = list(report["y_true"])
    expected_pred[9] = expected_pred[12] = 1
    assert report["y_pred"] == expected_pred
    assert report["accuracy"] == pytest.approx(12 / 14)
    assert report["confusion_matrix"] == [[4, 0, 0], [0, 4, 0], [0, 2, 4]]
    np.testing.assert_allclose(
        report["confusion_matrix_normalized"], [[1, 0, 0], [0, 1, 0], [0, 1 / 3, 2 / 3]]
    )
    assert most_confused(report) == [("red", "green", 2)]
    worst = top_losses(report, num_images=2)
    assert sorted(row["path"] for row in worst) == planted
    assert all(row["true"] == "red" and row["predicted"] == "green" for row in worst)
    assert report["per_class"]["red"]["recall"] == pytest.approx(4 / 6)
    assert report["per_class"]["green"]["precision"] == pytest.approx(4 / 6)
    assert report["top_k"] is None and report["top_k_accuracy"] is None  # only 3 classes


def test_report_folder_is_complete_and_self_contained(colour_run, planted_folder, tmp_path):
    folder, planted = planted_folder
    report = tl.evaluate(colour_run, folder)
    page = write_report(colour_run, report, tmp_path / "report", num_top_losses=4)
    out = tmp_path / "report"
    for name in (
        "confusion_matrix.png",
        "confusion_matrix_normalized.png",
        "per_class.png",
        "top_losses.png",
        "history.png",
    ):
        assert (out / name).read_bytes()[:8] == PNG_SIGNATURE, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(12 / 14) and metrics["warning"] is None
    assert metrics["most_confused"] == [{"true": "red", "predicted": "green", "count": 2}]
    assert metrics["per_class"]["red"]["support"] == 6
    confusion = json.loads((out / "confusion_matrix.json").read_text())
    assert confusion["counts"] == [[4, 0, 0], [0, 4, 0], [0, 2, 4]]
    np.testing.assert_allclose(np.sum(confusion["normalized"], axis=1), 1.0)
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["path"] for row in rows] == report["paths"]
    wrong = [row["path"] for row in rows if row["correct"] == "False"]
    assert wrong == planted
    with open(page, encoding="utf-8") as f:
        html = f.read()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == 5
    assert all(base64.b64decode(data)[:8] == PNG_SIGNATURE for data in images)
    assert not re.search(r'(src|href)="(http|//|file:)', html)  # nothing to fetch: works offline
    assert "85.7%" in html and "Most confused" in html and "img_002_x.png" in html


def test_evaluating_on_the_training_folder_is_flagged(colour_run):
    report = tl.evaluate(colour_run, colour_run.config["data_dir"], split="all")
    summary = report_metrics(report, run=colour_run)
    assert "include the ones the model was trained on" in summary["warning"]


def test_a_copy_of_the_training_folder_is_flagged_though_not_the_runs_own(colour_run, tmp_path):
    """A copy with one training image gone is not the run's folder, but it holds the others."""
    copy = shutil.copytree(colour_run.config["data_dir"], tmp_path / "copy")
    split = tl.checkpoints.load_split(colour_run.path)
    os.remove(os.path.join(copy, *split["train"]["paths"][0].split("/")))
    report = tl.evaluate(colour_run, copy)
    assert report["split"] == "all" and report["num_images"] == 36 - 1
    trained_on = len(split["train"]["paths"]) - 1
    assert report["num_training_images"] == trained_on
    write_report(colour_run, report, tmp_path / "report", num_top_losses=0)
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert f"was trained on ({trained_on} of the 35 are in the run's" in metrics["warning"]
    page = (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
    assert '<p class="warning">Warning: These images include the ones the model' in page


def test_the_training_folder_is_evaluated_on_its_held_out_images_by_default(colour_run):
    report = tl.evaluate(colour_run, colour_run.config["data_dir"])
    assert report["split"] == "val"
    held_out = tl.load_data(
        colour_run.config["data_dir"],
        image_size=32,
        validation_split=colour_run.config["validation_split"],
        seed=colour_run.config["seed"],
    )
    assert report["paths"] == list(held_out.folder.splits["val"].paths)
    assert report_metrics(report, run=colour_run)["warning"] is None


def test_top_k_accuracy_is_reported_above_five_classes(tmp_path):
    names = [f"class_{i}" for i in range(6)]
    folder = write_class_folders(tmp_path / "six", dict.fromkeys(names, 2))
    model = tl.build_model("vgg16", num_classes=6, image_size=32, weights=None, dense_units=8)
    run = tl.Run(model, names, {}, {}, str(tmp_path))
    report = tl.evaluate(run, folder)
    assert report["top_k"] == 5
    probabilities = np.asarray(report["probabilities"])
    top5 = np.argsort(-probabilities, axis=1)[:, :5]
    expected = np.mean([label in row for label, row in zip(report["y_true"], top5, strict=True)])
    assert report["top_k_accuracy"] == pytest.approx(expected)
    assert report["top_k_accuracy"] >= report["accuracy"]


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_commands_write_what_they_say(colour_run, planted_folder, tmp_path, capsys):
    folder, planted = planted_folder
    code, out, err = run_cli(capsys, "evaluate", colour_run.path, folder, "--out", tmp_path / "r")
    assert code == 0, err
    assert "Most confused" in out and "red -> green: 2" in out
    assert (tmp_path / "r" / "report.html").exists()

    code, out, err = run_cli(capsys, "explain", colour_run.path, *planted, "--out", tmp_path / "x")
    assert code == 0, err
    assert sorted(os.listdir(tmp_path / "x")) == ["img_000_x_gradcam.png", "img_002_x_gradcam.png"]
    assert "Grad-CAM for green" in out

    code, _, err = run_cli(capsys, "explain", colour_run.path, planted[0], "--class", "purple")
    assert code == 2 and "Unknown class 'purple'" in err and err.count("\n") == 1

    grid = tmp_path / "grid.png"
    code, out, err = run_cli(capsys, "predict", colour_run.path, *planted, "--grid", grid)
    assert code == 0, err
    assert grid.read_bytes()[:8] == PNG_SIGNATURE and out.count("green") == 2

    curves = tmp_path / "curves.png"
    code, _, err = run_cli(capsys, "plot-history", colour_run.path, "--out", curves)
    assert code == 0, err
    assert curves.read_bytes()[:8] == PNG_SIGNATURE


def test_figures_show_inline_in_notebooks():
    from IPython.core.formatters import PNGFormatter

    figure = plot_history({"loss": [1.0, 0.5], "accuracy": [0.5, 0.8]})
    assert PNGFormatter()(figure)[:8] == PNG_SIGNATURE


def test_evaluate_draws_a_progress_bar_on_a_terminal_only(colour_run, planted_folder, capsys):
    import sys

    folder, _ = planted_folder
    for terminal in (False, True):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(sys.stderr, "isatty", lambda terminal=terminal: terminal)
            tl.evaluate(colour_run, folder)
        bar = "/image" in capsys.readouterr().err
        assert bar == terminal, f"terminal={terminal}"
