"""The command line on messy data: train finishes, scan reports, mistakes are one line."""

import json
import os

import pytest
from messy import make_messy_folder
from PIL import Image
from test_scan import FOLDER_MISTAKES, _folder_with

import tlkeras as tl
from tlkeras.cli import main


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, message):
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and err.startswith("tlkeras: error:")


@pytest.fixture
def messy(tmp_path):
    return make_messy_folder(tmp_path / "messy data")


TRAIN = ["--weights", "none", "--image-size", 32, "--batch-size", 8, "--dense-units", 8]


def test_training_on_a_salted_folder_finishes_and_reports(capsys, messy, tmp_path):
    data_dir, bad, ignored = messy
    run_dir = tmp_path / "run"
    code, out, err = run_cli(
        capsys,
        "train",
        data_dir,
        *TRAIN,
        "--epochs",
        1,
        "--fine-tune-epochs",
        1,
        "--validation-split",
        0.25,
        "--augment",
        "light",
        "--rotation",
        0.1,
        "--class-weight",
        "balanced",
        "--out",
        run_dir,
    )
    assert code == 0, err
    assert "Skipped 4 unreadable or unsupported file(s)" in out
    assert f"Ignored {len(ignored)} file(s) that are not images" in out
    with open(run_dir / "scan_report.json", encoding="utf-8") as f:
        report = json.load(f)
    assert {item["path"] for item in report["bad_files"]} == set(bad)
    assert report["num_images"] == {"train": 19, "val": 6}
    with open(run_dir / "config.json", encoding="utf-8") as f:
        config = json.load(f)
    assert config["augment"] == "light" and config["class_weight"] == "balanced"
    assert config["augmentation"] == {
        "flip": "horizontal",
        "rotation": 0.1,
        "zoom": 0.1,
        "translation": 0.1,
        "contrast": 0.1,
    }
    run = tl.load_run(run_dir)
    assert run.history["epoch"] == [1, 2]
    assert [layer.name for layer in run.model.layers if "augment" in layer.name] == []

    # evaluate skips the same files and says so.
    code, out, err = run_cli(capsys, "evaluate", run_dir, data_dir, "--split", "all")
    assert code == 0, err
    assert "Evaluated 25 images" in out and "Skipped 3 unreadable file(s):" in out


def test_strict_training_fails_before_training(capsys, messy, tmp_path):
    data_dir, _, _ = messy
    code, out, err = run_cli(
        capsys, "train", data_dir, *TRAIN, "--strict", "--out", tmp_path / "run"
    )
    assert_one_line_error(code, err, "Found 4 unreadable or unsupported file(s)")
    assert "Received: strict=True" in err
    assert not os.path.exists(tmp_path / "run" / "model.keras")


def test_bad_augmentation_setting_fails_before_the_scan(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", tmp_path / "nowhere", *TRAIN, "--zoom", 1.5)
    assert_one_line_error(code, err, "Received: zoom=1.5")


def test_scan_command(capsys, messy, tmp_path):
    data_dir, bad, _ = messy
    code, out, err = run_cli(capsys, "scan", data_dir, "--out", tmp_path / "r.json")
    assert code == 0, err
    assert "Skipped 4 unreadable" in out and "usable images in 2 classes" in out
    saved = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert {item["path"] for item in saved["bad_files"]} == set(bad)

    code, out, _ = run_cli(capsys, "scan", data_dir, "--json", "--image-size", 32)
    assert json.loads(out)["image_size"] == [32, 32]

    code, out, err = run_cli(capsys, "scan", data_dir, "--strict")
    assert "Skipped 4 unreadable" in out  # the full list first, then the one-line error
    assert_one_line_error(code, err, "Found 4 unreadable")


@pytest.mark.parametrize(("kind", "message"), FOLDER_MISTAKES, ids=[m[0] for m in FOLDER_MISTAKES])
def test_folder_mistakes_exit_2_with_one_line(capsys, tmp_path, kind, message):
    code, _, err = run_cli(capsys, "scan", _folder_with(tmp_path, kind))
    assert code == 2
    assert err.count("\n") == 1 and "Received: " in err


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model = tl.build_model("vgg16", num_classes=2, image_size=32, weights=None, dense_units=8)
    tl.save_model(path, model, class_names=["cat", "dog"])
    return path


def test_predict_mistakes_exit_2_with_one_line(capsys, saved_model, tmp_path):
    notes = tmp_path / "notes.png"
    notes.write_text("not an image")
    cases = [
        (notes, "not an image, or a format Pillow cannot identify"),
        (tmp_path, "is a folder, not an image file"),
        (tmp_path / "missing.jpg", "There is no file"),
    ]
    for path, message in cases:
        code, _, err = run_cli(capsys, "predict", saved_model, path)
        assert_one_line_error(code, err, message)
    image = tmp_path / "dossier été" / "photo 1.webp"
    image.parent.mkdir()
    Image.new("RGB", (50, 40), (10, 200, 10)).save(image)
    code, out, err = run_cli(capsys, "predict", saved_model, image, "--json")
    assert code == 0, err
    assert json.loads(out)[0]["path"] == str(image)


def test_preview_augment_command(capsys, messy, tmp_path):
    data_dir, _, _ = messy
    out_file = tmp_path / "grid.png"
    code, out, err = run_cli(
        capsys, "preview-augment", data_dir, "--augment", "strong", "--num-images", 2,
        "--num-variants", 3, "--image-size", 32, "--out", out_file,
    )  # fmt: skip
    assert code == 0, err
    assert f"Saved 2 images with 3 augmentations each to {out_file}" in out
    with Image.open(out_file) as image:
        assert image.format == "PNG"
