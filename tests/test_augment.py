"""Augmentation settings, layers and the preview grid."""

import os

import numpy as np
import pytest
from conftest import write_class_folders
from PIL import Image

import tlkeras as tl
from tlkeras.augment import Augmentation, build_augmentation, get_augmentation
from tlkeras.plots import preview_augmentation, sample_paths


def test_presets_and_overrides():
    assert not get_augmentation("none").enabled
    light = get_augmentation("light")
    assert light == Augmentation("horizontal", 0.05, 0.1, 0.1, 0.1) and light.enabled
    custom = get_augmentation("strong", flip="none", rotation=0.0)
    assert custom == Augmentation("none", 0.0, 0.25, 0.15, 0.3)
    assert get_augmentation("none", contrast=0.2) == Augmentation(contrast=0.2)
    assert get_augmentation(custom) == custom


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"augment": "heavy"},
            ValueError,
            r"one of \('none', 'light', 'strong'\).*augment='heavy'",
        ),
        ({"flip": "diagonal"}, ValueError, "flip must be one of .*Received: flip='diagonal'"),
        ({"rotation": -0.1}, ValueError, "from 0 .off. to at most 1.*rotation=-0.1"),
        ({"zoom": 1.0}, ValueError, "below 1.*Received: zoom=1.0"),
        ({"contrast": "0.1"}, TypeError, "contrast must be a number"),
    ],
)
def test_bad_settings_are_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        get_augmentation(**kwargs)


def test_layers_transform_only_in_training():
    assert build_augmentation(get_augmentation("none")) is None
    layer = build_augmentation(get_augmentation("strong"), seed=0)
    assert [type(step).__name__ for step in layer.layers] == [
        "RandomFlip",
        "RandomRotation",
        "RandomZoom",
        "RandomTranslation",
        "RandomContrast",
    ]
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (4, 24, 24, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(layer(images, training=False)), images)
    augmented = np.asarray(layer(images, training=True))
    assert augmented.shape == images.shape
    assert not np.allclose(augmented, images)
    assert augmented.min() >= 0 and augmented.max() <= 255


def test_preview_grid_is_saved(tmp_path):
    paths = []
    for index, colour in enumerate([(200, 30, 30), (30, 30, 200)]):
        pixels = np.zeros((40, 40, 3), np.uint8)
        pixels[:, :20] = colour  # left half coloured: flips and shifts are visible
        paths.append(tmp_path / f"img {index}.png")
        Image.fromarray(pixels).save(paths[-1])
    figure = preview_augmentation(paths, "strong", image_size=32, num_variants=3, seed=0)
    assert len(figure.axes) == 2 * 4
    assert figure.axes[0].get_title() == "original"
    out = tmp_path / "preview.png"
    figure.savefig(out)
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > image.height
    with pytest.raises(ValueError, match="num_variants must be a positive int"):
        preview_augmentation(paths, "light", num_variants=0)


def test_sample_paths_takes_one_readable_image_per_class(tmp_path):
    data_dir = write_class_folders(tmp_path / "d", {"a": 5, "b": 5, "c": 5})
    for name in os.listdir(os.path.join(data_dir, "b")):
        with open(os.path.join(data_dir, "b", name), "wb") as f:
            f.write(b"broken")
    os.remove(os.path.join(data_dir, "b", "img_000.png"))
    Image.new("RGB", (8, 8)).save(os.path.join(data_dir, "b", "img_000.png"))
    picked = sample_paths(data_dir, num_images=3, seed=0)
    assert [os.path.basename(os.path.dirname(p)) for p in picked] == ["a", "b", "c"]
    assert picked[1].endswith(os.path.join("b", "img_000.png"))


def test_each_epochs_augmentation_depends_only_on_seed_and_epoch(tmp_path):
    """A run resumed at epoch 2 augments epoch 2 as a run that never stopped, on both paths."""
    from tlkeras.data import epoch_dataset, epoch_file_dataset

    folder = write_class_folders(tmp_path / "d", {"a": 5, "b": 5})
    data = tl.load_data(folder, image_size=32, batch_size=4, validation_split=0.2, seed=3)
    images, labels = data.arrays["train"]
    files = data.folder.splits["train"]

    def epochs(initial_epoch, *, stream=False):
        options = dict(batch_size=4, seed=3, initial_epoch=initial_epoch, epochs=3)
        if stream:
            dataset, steps = epoch_file_dataset(
                files.paths, files.labels, image_size=32, augment="strong", **options
            )
        else:
            dataset, steps = epoch_dataset(images, labels, augment="strong", **options)
        batches = [x for x, _ in dataset.as_numpy_iterator()]
        return [np.concatenate(batches[i : i + steps]) for i in range(0, len(batches), steps)]

    whole = epochs(0)
    assert len(whole) == 3 and not np.allclose(
        np.sort(whole[1].ravel()), np.sort(whole[2].ravel())
    )
    np.testing.assert_array_equal(epochs(2)[0], whole[2])
    np.testing.assert_allclose(epochs(1, stream=True)[1], whole[2], atol=1e-4)
