"""A messy data folder, as users bring them: bad files, junk files, non-ASCII names."""

import os

import numpy as np
from conftest import write_class_folders
from PIL import Image

# Class folder names with spaces and non-ASCII characters.
CAT, DOG = "chat noir", "chien ü"


def make_messy_folder(root, *, num_images: int = 12) -> tuple[str, dict, dict]:
    """Writes two classes of good images salted with bad and junk files.

    Returns:
        `(data_dir, bad, ignored)`: `bad` maps each unreadable or unsupported file to a word
        its reason must contain; `ignored` does the same for files that are not images.
    """
    data_dir = write_class_folders(root, {CAT: num_images, DOG: num_images})
    cat, dog = os.path.join(data_dir, CAT), os.path.join(data_dir, DOG)
    # A good image with a non-ASCII, spaced file name.
    Image.new("RGB", (40, 30), (200, 40, 40)).save(os.path.join(cat, "photo été 1.png"))

    truncated = os.path.join(cat, "truncated.jpg")
    pixels = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(truncated, quality=90)
    with open(truncated, "r+b") as f:
        f.truncate(os.path.getsize(truncated) // 2)
    bad = {
        truncated: "truncated",
        _write(cat, "notes.jpg", b"shopping list\n"): "cannot identify image file",
        _write(dog, "empty.png", b""): "cannot identify image file",
        _write(dog, "IMG_0001.HEIC", b"\x00\x00\x00\x18ftypheic"): "unsupported image format",
    }
    ignored = {
        _write(cat, "readme.txt", b"cats\n"): "not an image file",
        _write(dog, ".DS_Store", b"\x00\x01"): "hidden file",
        _write(cat, "._img_000.png", b"\x00\x05\x16\x07"): "hidden file",  # macOS AppleDouble
        _write(data_dir, "labels.csv", b"a,b\n"): "not an image file",
    }
    checkpoints = os.path.join(dog, ".ipynb_checkpoints")
    os.makedirs(checkpoints)
    Image.new("RGB", (8, 8)).save(os.path.join(checkpoints, "img_000-checkpoint.png"))
    ignored[checkpoints] = "hidden folder"
    return data_dir, bad, ignored


def _write(folder, name, data: bytes) -> str:
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(data)
    return path
