"""Shared fixtures: tiny generated image folders, seeded, so every test runs offline in seconds."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

# One distinct mean colour per class, so even a tiny model can tell the classes apart.
CLASS_COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)]


def write_class_folders(root, counts: dict[str, int], *, size: int = 32, seed: int = 0) -> str:
    """Writes `root/<class>/img_<i>.png` noisy images whose colour depends on the class."""
    rng = np.random.default_rng(seed)
    for index, (name, count) in enumerate(counts.items()):
        folder = os.path.join(root, name)
        os.makedirs(folder, exist_ok=True)
        colour = np.array(CLASS_COLOURS[index % len(CLASS_COLOURS)], dtype=float)
        for i in range(count):
            noise = rng.normal(0, 30, size=(size, size, 3))
            pixels = np.clip(colour + noise, 0, 255).astype("uint8")
            Image.fromarray(pixels).save(os.path.join(folder, f"img_{i:03d}.png"))
    return str(root)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


@pytest.fixture
def image_folder(tmp_path):
    """Two classes of 12 coloured 32x32 images each, in one folder of class folders."""
    return write_class_folders(tmp_path / "data", {"cat": 12, "dog": 12})


@pytest.fixture
def split_folder(tmp_path):
    """train/ val/ test/ folders with three classes."""
    classes = {"ant": 8, "bee": 8, "fly": 8}
    root = tmp_path / "splits"
    for split, seed in (("train", 0), ("val", 1), ("test", 2)):
        write_class_folders(root / split, classes, seed=seed)
    return str(root)
