"""The real command line in a subprocess: instant answers, quiet stderr, closed pipes."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("tensorflow", "keras", "jax")


def run_tlkeras(*argv, env=None, cwd=None, **options):
    environment = {**os.environ, "PYTHONPATH": REPO, **(env or {})}
    for name in ("TLKERAS_DEBUG", "TF_CPP_MIN_LOG_LEVEL"):
        environment.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "tlkeras", *map(str, argv)],
        capture_output=True, text=True, env=environment, cwd=cwd, **options,
    )  # fmt: skip


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["train", "--help"],
        ["predict", "--help"],
        ["train", "data", "--epochs", "many"],
        ["train", "data", "--backbone", "vgg99"],
        ["train", "no/such/folder", "--weights", "none"],
        ["train", "no/such/folder", "--zoom", "1.5"],
        ["compare", "no/such/folder", "--backbones", "vgg16"],
    ],
)
def test_help_and_usage_mistakes_import_no_tensorflow(argv):
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['tlkeras', *{argv!r}]\n"
        "try:\n"
        "    runpy.run_module('tlkeras', run_name='__main__')\n"
        "except SystemExit as stop:\n"
        f"    print('EXIT', stop.code, sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": REPO},
    )  # fmt: skip
    last = result.stdout.strip().splitlines()[-1]
    assert last.endswith("[]"), (last, result.stderr)
    assert last.split()[1] == ("0" if "--help" in argv else "2"), result.stderr


def test_import_tlkeras_is_lazy_but_complete():
    code = (
        "import sys, tlkeras as tl\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
        "print(tl.TrainConfig('d').epochs, callable(tl.train), tl.memory.__name__)\n"
        "import tlkeras.predict, tlkeras.evaluate\n"
        "print(callable(tl.predict), callable(tl.evaluate), callable(tl.lr_find))\n"
        "ns = {}\n"
        "exec('from tlkeras import *', ns)\n"
        "print(sorted(set(tl.__all__) - set(ns)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": REPO},
    )  # fmt: skip
    lines = ["[]", "10 True tlkeras.memory", "True True True", "[]"]
    assert result.stdout.splitlines()[:4] == lines, result.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run trained by the real command line, with its stdout and stderr."""
    from conftest import write_class_folders

    root = tmp_path_factory.mktemp("quiet")
    data = write_class_folders(root / "data", {"cat": 12, "dog": 12})
    result = run_tlkeras(
        "train", data, "--weights", "none", "--image-size", 32, "--epochs", 1,
        "--dense-units", 8, "--batch-size", 8, "--out", root / "run",
    )  # fmt: skip
    return root, data, result


def test_train_and_predict_print_no_tensorflow_lines(trained):
    root, data, result = trained
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    # A random frozen backbone with stage 1 only is warned about; nothing else is printed.
    assert [line for line in lines if not line.startswith("tlkeras: warning:")] == [], lines
    assert len(lines) == 1 and "near-chance accuracy" in lines[0]
    assert "Saved the run to" in result.stdout
    images = [os.path.join(data, "cat", "img_000.png"), os.path.join(data, "dog", "img_000.png")]
    predicted = run_tlkeras("predict", root / "run", *images, "--json")
    assert predicted.returncode == 0, predicted.stderr
    assert predicted.stderr == ""
    objects = json.loads(predicted.stdout)
    assert [o["path"] for o in objects] == images
    assert {p["label"] for p in objects[0]["predictions"]} == {"cat", "dog"}


def test_verbose_brings_tensorflow_lines_back(trained):
    root, data, _ = trained
    image = os.path.join(data, "cat", "img_000.png")
    result = run_tlkeras("predict", root / "run", image, "--verbose")
    assert result.returncode == 0, result.stderr
    quiet = run_tlkeras("predict", root / "run", image)
    assert quiet.stderr == "" and quiet.stdout == result.stdout
    if not result.stderr:
        pytest.skip("this TensorFlow build prints nothing at start-up anyway")


def test_predict_into_a_closed_pipe_exits_quietly(trained):
    root, data, _ = trained
    images = [
        os.path.join(data, name, f"img_{i:03d}.png") for name in ("cat", "dog") for i in range(12)
    ]
    environment = {**os.environ, "PYTHONPATH": REPO}
    environment.pop("TLKERAS_DEBUG", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "tlkeras", "predict", str(root / "run"), *images],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment,
    )  # fmt: skip
    process.stdout.close()  # The reader is gone before tlkeras writes (`... | head -0`).
    stderr = process.stderr.read().decode()
    assert process.wait() == 141
    assert stderr == "", "no BrokenPipeError traceback"


def test_no_imagenet_weights_offline_is_the_only_text_on_stderr(tmp_path):
    from conftest import write_class_folders

    data = write_class_folders(tmp_path / "data", {"cat": 6, "dog": 6})
    empty = tmp_path / "weights"
    empty.mkdir()
    result = run_tlkeras(
        "train", data, "--image-size", 32, "--out", tmp_path / "run",
        env={"TLKERAS_WEIGHTS_DIR": str(empty)},
    )  # fmt: skip
    assert result.returncode == 4
    lines = result.stderr.splitlines()
    assert 1 <= len(lines) <= 2 and lines[0].startswith("tlkeras: weights error:"), result.stderr
    assert "Traceback" not in result.stderr
    assert "weights download --backbone vgg16" in result.stderr
