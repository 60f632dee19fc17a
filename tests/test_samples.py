"""Tests for ``data_samples/make_samples.py``: layout, image formats, determinism."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "data_samples" / "make_samples.py"


def _load_script():
    """Import ``make_samples.py`` as a module (``data_samples`` is not a package)."""
    spec = importlib.util.spec_from_file_location("make_samples", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _file_bytes(root: Path) -> dict[str, bytes]:
    """Map each file under ``root`` (relative POSIX path) to its bytes."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_layout_formats_and_determinism(tmp_path):
    """Two runs give the documented folders, counts, sizes and identical bytes."""
    from sklearn.datasets import load_digits

    ms = _load_script()
    first, second = tmp_path / "a", tmp_path / "b"
    # Files the script does not own must survive; stale files in owned folders must not.
    first.mkdir()
    (first / "README.md").write_text("keep me\n")
    (first / "digits" / "3").mkdir(parents=True)
    (first / "digits" / "3" / "stale.png").write_bytes(b"old")

    counts = ms.main(first)
    assert counts == {"digits": 1797, "day_night": 360, "faces": 200, "predict_examples": 11}
    assert (first / "README.md").read_text() == "keep me\n"
    assert not (first / "digits" / "3" / "stale.png").exists()
    assert sorted(p.name for p in first.iterdir()) == [
        "README.md",
        "day_night",
        "digits",
        "faces",
        "predict_examples",
    ]

    # digits/<label>/: same counts as scikit-learn, 32x32 grayscale.
    expected = np.bincount(load_digits().target, minlength=10)
    for label in range(10):
        files = sorted((first / "digits" / str(label)).glob("digit_*.png"))
        assert len(files) == expected[label]
    with Image.open(first / "digits" / "0" / "digit_0000.png") as im:
        assert (im.size, im.mode) == ((32, 32), "L")
        pixels = np.asarray(im)
    ref = np.floor(load_digits().images[0] * 255 / 16 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(pixels[::4, ::4], ref)

    # day_night/<domain>/<class>/: 60 RGB 64x64 images each; night is darker.
    means = {}
    for domain in ("day", "night"):
        folder = first / "day_night" / domain
        assert sorted(p.name for p in folder.iterdir()) == ["bus", "car", "truck"]
        for kind in ("bus", "car", "truck"):
            files = sorted((folder / kind).glob("*.png"))
            assert len(files) == 60
            with Image.open(files[0]) as im:
                assert (im.size, im.mode) == ((64, 64), "RGB")
        sample = sorted(folder.rglob("*.png"))[::10]
        means[domain] = np.mean([np.asarray(Image.open(p)).mean() for p in sample])
    assert means["night"] < 0.4 * means["day"]

    # faces/{face,not_face}/: scikit-image's lfw_subset, 100 each, 25x25 grayscale.
    for kind in ("face", "not_face"):
        files = sorted((first / "faces" / kind).glob("lfw_*.png"))
        assert len(files) == 100
    with Image.open(first / "faces" / "not_face" / "lfw_0150.png") as im:
        assert (im.size, im.mode) == ((25, 25), "L")
        pixels = np.asarray(im)
    from skimage.data import lfw_subset

    np.testing.assert_array_equal(pixels, np.floor(lfw_subset()[150] * 255 + 0.5))

    # predict_examples/: named loose images; digit copies are byte-identical.
    examples = sorted(p.name for p in (first / "predict_examples").iterdir())
    assert 6 <= len(examples) <= 12
    assert {"day_car.png", "night_bus.png", "digit_3.png"} <= set(examples)
    digit3 = (first / "predict_examples" / "digit_3.png").read_bytes()
    assert digit3 in {p.read_bytes() for p in (first / "digits" / "3").glob("*.png")}

    # Determinism: a fresh run elsewhere, and a rerun in place, give identical bytes.
    ms.main(second)
    produced = _file_bytes(first)
    del produced["README.md"]
    assert produced == _file_bytes(second)
    ms.main(first)
    rerun = _file_bytes(first)
    del rerun["README.md"]
    assert rerun == produced
