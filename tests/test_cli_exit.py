"""Exit statuses that tell the truth, one set of training flags, and predict's outputs."""

import contextlib
import csv
import errno
import importlib
import io
import json
import os
import re

import pytest

from tlkeras import config as cfg
from tlkeras.cli import build_parser, main
from tlkeras.errors import UsageError, exit_status


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def train_raising(monkeypatch, capsys, image_folder, error):
    def fail(config):
        raise error

    monkeypatch.setattr(importlib.import_module("tlkeras.train"), "train", fail)
    return run_cli(capsys, "train", image_folder, "--weights", "none", "--image-size", 32)


def test_usage_error_is_a_value_error():
    assert issubclass(UsageError, ValueError)
    assert exit_status(UsageError("x. Received: x=1")) == 2


def test_resume_with_another_out_is_a_usage_error(capsys, image_folder, tmp_path):
    code, _, err = run_cli(capsys, "train", image_folder, "--resume", tmp_path, "--out", "x")
    assert code == 2 and err.count("\n") == 1 and "Received: out='x'" in err


def test_truncated_model_is_a_file_problem(capsys, image_folder, tmp_path):
    model = tmp_path / "cut.keras"
    model.write_bytes(b"PK\x03\x04 cut short")
    code, _, err = run_cli(capsys, "predict", model, os.path.join(image_folder, "cat/img_000.png"))
    assert code == 3
    assert err.startswith("tlkeras: file error:") and err.count("\n") == 1
    assert "not a complete .keras file" in err


@pytest.mark.parametrize(
    ("error", "advice"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "The disk is full"),
        (PermissionError(errno.EACCES, "Permission denied"), "permissions"),
    ],
)
def test_disk_full_and_permission_are_file_problems(
    monkeypatch, capsys, image_folder, error, advice
):
    code, _, err = train_raising(monkeypatch, capsys, image_folder, error)
    assert code == 3
    assert err.startswith("tlkeras: file error:") and advice in err and err.count("\n") == 1


def test_internal_error_is_one_line_with_the_debug_hint(monkeypatch, capsys, image_folder):
    monkeypatch.delenv("TLKERAS_DEBUG", raising=False)
    code, _, err = train_raising(monkeypatch, capsys, image_folder, ValueError("math domain"))
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("tlkeras: internal error: ValueError: math domain")
    assert "set TLKERAS_DEBUG=1 for the traceback" in err


def test_debug_shows_the_traceback(monkeypatch, capsys, image_folder):
    monkeypatch.setenv("TLKERAS_DEBUG", "1")
    code, _, err = train_raising(monkeypatch, capsys, image_folder, ZeroDivisionError("oops"))
    assert code == 1
    assert "Traceback (most recent call last)" in err and "ZeroDivisionError: oops" in err


def test_missing_imagenet_weights_exit_4_with_the_fix(monkeypatch, capsys, image_folder, tmp_path):
    monkeypatch.setenv("TLKERAS_WEIGHTS_DIR", str(tmp_path))
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", image_folder, "--image-size", 32, "--out", out)
    assert code == 4 and err.count("\n") == 1 and "has no vgg16_weights" in err
    assert err.startswith("tlkeras: weights error:") and "internal error" not in err


def test_the_status_comes_from_the_type_not_the_wording():
    """Each row of the table, and the same words under another type."""
    from tlkeras.errors import DataError, DiskError, ExportError, WeightsError

    message = "Something. Received: x=1"
    assert [exit_status(kind(message)) for kind in (UsageError, DataError, ExportError)] == [
        2,
        3,
        3,
    ]
    assert exit_status(DiskError(message)) == 3 and exit_status(WeightsError(message)) == 4
    assert exit_status(ValueError(message)) == 1  # "Received:" alone makes nothing a usage error.
    assert exit_status(RuntimeError("could not write")) == 1


def test_not_enough_disk_space_before_training_is_a_file_problem(
    monkeypatch, capsys, image_folder, tmp_path
):
    """Was exit 2: the check raised a ValueError that read like a usage mistake."""
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=1000))
    flags = ["--weights", "none", "--image-size", 32, "--out", tmp_path / "r"]
    code, _, err = run_cli(capsys, "train", image_folder, *flags)
    assert code == 3
    assert err.splitlines()[-1].startswith("tlkeras: file error: Not enough free disk space")


def test_a_failed_tflite_conversion_is_an_export_error(monkeypatch, capsys, saved_model, tmp_path):
    """Was exit 1, as if tlkeras had a bug."""
    import keras

    def fail(self, filepath, format="tf_saved_model", **kwargs):
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(keras.Model, "export", fail)
    code, _, err = run_cli(
        capsys, "export", saved_model, "--format", "tflite", "--out", tmp_path / "m.tflite"
    )
    assert code == 3 and err.startswith("tlkeras: export error: TFLite could not convert")


@pytest.mark.parametrize(("status", "expected"), [(None, 130), (143, 143)])
def test_interrupted_keeps_130_and_143(monkeypatch, capsys, image_folder, status, expected):
    error = KeyboardInterrupt("Stopped after epoch 1")
    if status:
        error.exit_status = status
    code, _, err = train_raising(monkeypatch, capsys, image_folder, error)
    assert code == expected and err.startswith("tlkeras: interrupted.")


def _flags(command):
    """The flags a command's --help lists (asked through argparse's public parse_args)."""
    help_text = io.StringIO()
    with contextlib.redirect_stdout(help_text), pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", help_text.getvalue()))


def test_compare_lr_find_and_pretrain_share_the_training_flags():
    train = _flags("train")
    assert {"--lr", "--fine-tune-lr", "--image-size", "--lr-scaling", "--resume"} <= train
    assert train - {"--backbone"} <= _flags("compare")
    lr_find = {"--weights", "--image-size", "--dense-units", "--dropout", "--batch-size"}
    lr_find |= {"--validation-split", "--seed", "--epochs", "--lr", "--unfreeze", "--weights-dir"}
    assert lr_find <= _flags("lr-find")
    assert {"--weights", "--image-size", "--lr", "--patience", "--overwrite"} <= _flags("pretrain")


def test_every_train_config_field_is_a_train_flag():
    args = build_parser().parse_args(["train", "data"])
    python_only = {"callbacks"}  # Keras callback objects: no flag can carry them.
    for field in cfg.TrainConfig.__dataclass_fields__:
        assert field in python_only or hasattr(args, field), field
    assert args.learning_rate == cfg.TrainConfig("d").learning_rate


def test_flag_choices_match_the_library():
    from tlkeras.augment import FLIP_MODES, PRESETS
    from tlkeras.backbones import BACKBONES
    from tlkeras.distribute import LEARNING_RATE_SCALINGS, STRATEGIES
    from tlkeras.export import FORMATS
    from tlkeras.lr_find import RULES
    from tlkeras.precision import PRECISIONS

    assert tuple(BACKBONES) == cfg.BACKBONE_NAMES
    assert tuple(PRESETS) == cfg.AUGMENT_PRESETS and cfg.FLIP_MODES == FLIP_MODES
    assert cfg.STRATEGIES == STRATEGIES and cfg.LEARNING_RATE_SCALINGS == LEARNING_RATE_SCALINGS
    assert tuple(FORMATS) == cfg.EXPORT_FORMATS and cfg.LR_FIND_RULES == RULES
    assert cfg.PRECISIONS == PRECISIONS


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    import tlkeras as tl

    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model = tl.build_model("vgg16", num_classes=2, image_size=32, weights=None, dense_units=8)
    tl.save_model(path, model, class_names=["cat", "dog"])
    return path


def test_predict_json_and_csv_read_back(capsys, saved_model, image_folder):
    images = [os.path.join(image_folder, c, "img_000.png") for c in ("cat", "dog")]
    code, out, err = run_cli(capsys, "predict", saved_model, *images, "--format", "json")
    assert code == 0, err
    objects = json.loads(out)
    assert [o["path"] for o in objects] == images
    for o in objects:
        assert [set(p) for p in o["predictions"]] == [{"label", "probability"}] * 2
        assert sum(p["probability"] for p in o["predictions"]) == pytest.approx(1, abs=1e-4)
    code, out, err = run_cli(capsys, "predict", saved_model, *images, "--format", "csv")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["path"], r["rank"]) for r in rows] == [(p, r) for p in images for r in "12"]
    pairs = [(o["path"], p) for o in objects for p in o["predictions"]]
    by_json = {(path, p["label"]): p["probability"] for path, p in pairs}
    for row in rows:
        assert float(row["probability"]) == pytest.approx(by_json[row["path"], row["label"]])


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("{out}/checkpoint/weights.h5", "Could not write the run in {out} (No space left"),
        ("/tmp/cache/shard_0.npy", "Could not read or write /tmp/cache/shard_0.npy (No space"),
        (None, "A file operation failed (No space left on device)"),
    ],
)
def test_an_os_error_in_a_stage_names_what_failed(tmp_path, filename, expected):
    """Was always 'Could not write the run', even for a full TMPDIR or a read error."""
    from tlkeras.checkpoints import TrainingState
    from tlkeras.config import TrainConfig
    from tlkeras.train import _how_to_continue

    out = str(tmp_path / "run")
    path = filename.format(out=out) if filename else None
    error = OSError(errno.ENOSPC, "No space left on device", path)
    config = TrainConfig("data", out=out)
    message = _how_to_continue(error, stage=1, state=TrainingState(settings={}), config=config)
    assert message.startswith(expected.format(out=out)), message
    assert "free some disk space" in message and f"--resume {out}" in message
