"""The command line: exit codes, one-line errors, and the train/predict/evaluate round trip."""

import json
import os
import subprocess
import sys

import pytest

from tlkeras.cli import main


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_train_predict_evaluate(capsys, image_folder, tmp_path):
    run_dir = tmp_path / "run"
    code, out, err = run_cli(
        capsys,
        "train",
        image_folder,
        "--weights",
        "none",
        "--image-size",
        32,
        "--epochs",
        1,
        "--fine-tune-epochs",
        1,
        "--batch-size",
        8,
        "--dense-units",
        8,
        "--out",
        run_dir,
    )
    assert code == 0, err
    assert f"Saved the run to {run_dir}" in out
    image = os.path.join(image_folder, "dog", "img_000.png")
    code, out, err = run_cli(capsys, "predict", run_dir, image, "--top-k", 2, "--json")
    assert code == 0, err
    [result] = json.loads(out)
    assert result["path"] == image
    assert sorted(name for name, _ in result["top"]) == ["cat", "dog"]
    assert sum(p for _, p in result["top"]) == pytest.approx(1.0, abs=1e-4)
    code, out, err = run_cli(capsys, "evaluate", run_dir, image_folder)
    assert code == 0, err
    assert "Evaluated 4 images (split: val)" in out and "accuracy" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "no/such/folder", "--weights", "none", "--image-size", "32"], "does not exist"),
        (["train", "{data}", "--weights", "none", "--image-size", "16"], "minimum input size"),
        (["train", "{data}", "--weights", "missing.h5", "--image-size", "32"], "does not exist"),
        (
            [
                "train",
                "{data}",
                "--weights",
                "none",
                "--image-size",
                "32",
                "--unfreeze",
                "9",
                "--fine-tune-epochs",
                "1",
            ],
            "Cannot unfreeze 9 blocks",
        ),
        (
            ["train", "{data}", "--weights", "none", "--image-size", "32", "--epochs", "0"],
            "epochs must be an int of at least 1",
        ),
        (["predict", "no/such/run", "x.png"], "No model file"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(capsys, image_folder, argv, message):
    argv = [a.replace("{data}", image_folder) for a in argv]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and err.startswith("tlkeras: error:")


def test_argument_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "data", "--backbone", "vgg99"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'vgg99'" in err and err.count("\n") == 1


def test_backbones_lists_blocks(capsys):
    code, out, _ = run_cli(capsys, "backbones")
    assert code == 0
    assert "block1 block2 block3 block4 block5" in out
    assert "mixed10" in out


def test_module_help_runs():
    result = subprocess.run(
        [sys.executable, "-m", "tlkeras", "train", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "--fine-tune-epochs" in result.stdout and "stage 2" in result.stdout
