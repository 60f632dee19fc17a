"""The training input pipeline: same pixels as predict, cached, seeded, never stopped by a file."""

import os

import numpy as np
import pytest
from conftest import write_class_folders
from messy import make_messy_folder
from test_images import (
    _save_marked_jpeg,
    make_bmp,
    make_cmyk_jpeg,
    make_gif_animation,
    make_i16_png,
    make_l,
    make_la,
    make_p,
    make_rgb_jpeg,
    make_rgba,
    make_webp,
)

import tlkeras as tl
from tlkeras import data as data_module
from tlkeras.images import load_images
from tlkeras.predict import predict_probabilities
from tlkeras.runs import Run

# Every image mode of the issue; images.py's tests check each one's exact RGB pixels.
MODE_MAKERS = [
    make_l,
    make_p,
    make_rgba,
    make_la,
    make_cmyk_jpeg,
    make_i16_png,
    make_rgb_jpeg,
    make_bmp,
    make_gif_animation,
    make_webp,
]


def batches(dataset):
    images, labels = zip(*((x.numpy(), y.numpy()) for x, y in dataset), strict=True)
    return np.concatenate(images), np.concatenate(labels)


@pytest.fixture
def every_mode_folder(tmp_path):
    """train/ of plain images; val/ holds one file of every mode, in two classes."""
    root = tmp_path / "modes"
    write_class_folders(root / "train", {"a": 4, "b": 4})
    for index, maker in enumerate(MODE_MAKERS):
        folder = root / "val" / ("a" if index % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        maker(folder)
    _save_marked_jpeg(root / "val" / "a" / "phone.jpg", width=40, height=24, orientation=6)
    return str(root)


def test_training_evaluation_and_predict_read_the_same_pixels(every_mode_folder):
    data = tl.load_data(every_mode_folder, image_size=32, batch_size=4, verbose=False)
    assert data.report.bad_files == []
    val = data.folder.splits["val"]
    assert len(val) == len(MODE_MAKERS) + 1
    images, labels = batches(data.dataset("val"))
    np.testing.assert_array_equal(images, load_images(val.paths, 32).astype("float32"))
    np.testing.assert_array_equal(labels, val.labels)

    model = tl.build_model("vgg16", num_classes=2, image_size=32, weights=None, dense_units=8)
    run = Run(model, data.class_names, {}, {}, "unsaved")
    from_pipeline = model.predict(data.dataset("val"), verbose=0)
    np.testing.assert_allclose(predict_probabilities(run, val.paths), from_pipeline, atol=1e-6)
    report = tl.evaluate(run, every_mode_folder, split="val")
    np.testing.assert_allclose(report["probabilities"], from_pipeline, atol=1e-6)
    assert report["skipped_files"] == []


def test_pipeline_is_cached_batched_and_seeded(image_folder, monkeypatch):
    calls = []
    read = data_module.load_image
    monkeypatch.setattr(data_module, "load_image", lambda *a: calls.append(a) or read(*a))
    data = tl.load_data(image_folder, image_size=32, batch_size=5, seed=3, verbose=False)
    assert data.cache and len(data.folder.splits["train"]) == 20
    train = data.dataset("train")
    assert int(train.cardinality()) == 4  # 20 images in batches of 5; known to Keras
    first, first_labels = batches(train)
    second, _ = batches(train)
    assert len(calls) == 20  # decoded once; the second epoch came from the cache
    assert first.dtype == np.float32 and first.shape == (20, 32, 32, 3)
    assert not np.array_equal(first, second)  # reshuffled every epoch...
    assert sorted(first.sum(axis=(1, 2, 3))) == pytest.approx(sorted(second.sum(axis=(1, 2, 3))))
    again = tl.load_data(image_folder, image_size=32, batch_size=5, seed=3, verbose=False)
    np.testing.assert_array_equal(batches(again.dataset("train"))[0], first)  # ...by seed
    assert sorted(first_labels) == sorted(data.folder.splits["train"].labels)


def test_the_validation_split_is_decoded_once_not_every_epoch(image_folder, monkeypatch):
    calls = []
    read = data_module.load_image
    monkeypatch.setattr(data_module, "load_image", lambda *a: calls.append(a) or read(*a))
    data = tl.load_data(image_folder, image_size=32, batch_size=3, verbose=False)
    val = data.dataset("val")
    assert int(val.cardinality()) == 2  # 4 images in batches of 3; known to Keras
    first = batches(val)
    second = batches(val)
    assert len(calls) == len(data.folder.splits["val"]) == 4, "the second pass read memory"
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], data.folder.splits["val"].labels)


def test_without_cache_the_same_images_are_read(image_folder, monkeypatch):
    cached = tl.load_data(image_folder, image_size=32, batch_size=5, verbose=False)
    monkeypatch.setattr(data_module, "memory_budget", lambda: 1000)  # < 24 * 32 * 32 * 3
    data = tl.load_data(image_folder, image_size=32, batch_size=5, verbose=False)
    assert cached.cache and not data.cache
    np.testing.assert_array_equal(
        batches(data.dataset("val"))[0], batches(cached.dataset("val"))[0]
    )
    images, labels = batches(data.dataset("train"))
    assert len(images) == len(data.folder.splits["train"])


def test_training_epochs_stream_the_same_batches_when_the_images_do_not_fit(
    image_folder, monkeypatch
):
    cached = tl.load_data(image_folder, image_size=32, batch_size=3, seed=5, verbose=False)
    want, steps = cached.epoch_dataset(initial_epoch=1, epochs=3)
    want = list(want.as_numpy_iterator())

    def no_whole_split(*args, **kwargs):
        raise AssertionError("decoded a whole split into memory")

    monkeypatch.setattr(data_module, "memory_budget", lambda: 1000)  # < 24 * 32 * 32 * 3
    monkeypatch.setattr(data_module, "load_images", no_whole_split)
    streamed = tl.load_data(image_folder, image_size=32, batch_size=3, seed=5, verbose=False)
    assert cached.cache and not streamed.cache
    got, streamed_steps = streamed.epoch_dataset(initial_epoch=1, epochs=3)
    got = list(got.as_numpy_iterator())
    assert steps == streamed_steps == 7  # 20 training images in batches of 3, per epoch
    assert [len(labels) for _, labels in got] == [3, 3, 3, 3, 3, 3, 2] * 2
    assert len(got) == len(want)
    for (images, labels), (want_images, want_labels) in zip(got, want, strict=True):
        np.testing.assert_array_equal(labels, want_labels)
        np.testing.assert_array_equal(images, want_images)


def test_a_file_broken_after_the_scan_is_skipped_not_fatal(image_folder):
    data = tl.load_data(image_folder, image_size=32, batch_size=4, verbose=False)
    victim = data.folder.splits["train"].paths[0]
    with open(victim, "wb") as f:
        f.write(b"overwritten while training")
    with pytest.warns(RuntimeWarning, match="Skipped .*img_000.png.* during training"):
        images, labels = batches(data.dataset("train"))
    assert len(images) == len(data.folder.splits["train"])  # the epoch is topped up
    assert images.min() >= 0 and images.max() <= 255
    with pytest.warns(RuntimeWarning, match="img_001.png' takes its place"):
        images, labels = batches(data.dataset("train", shuffle=False))
    np.testing.assert_array_equal(images[0], images[1])  # the next file, in place of the first
    assert labels[0] == labels[1]


def test_messy_folder_feeds_only_good_images(tmp_path, capsys):
    data_dir, bad, _ = make_messy_folder(tmp_path / "messy")
    data = tl.load_data(data_dir, image_size=32, batch_size=8, validation_split=0.25)
    printed = capsys.readouterr().out
    assert "Skipped 4 unreadable or unsupported file(s)" in printed
    assert all(path in printed for path in bad)
    images, _ = batches(data.dataset("train"))
    assert len(images) == 19
    with pytest.raises(ValueError, match="Found 4 unreadable"):
        tl.load_data(data_dir, image_size=32, strict=True, verbose=False)


def test_augmentation_is_for_training_only(image_folder):
    data = tl.load_data(image_folder, image_size=32, batch_size=8, verbose=False)
    plain, labels = batches(data.dataset("train", shuffle=False))
    same, _ = batches(data.dataset("train", shuffle=False, augment="none"))
    np.testing.assert_array_equal(plain, same)
    augmented, augmented_labels = batches(data.dataset("train", shuffle=False, augment="strong"))
    np.testing.assert_array_equal(augmented_labels, labels)
    assert np.abs(augmented - plain).mean() > 5
    assert augmented.min() >= 0 and augmented.max() <= 255
    with pytest.raises(ValueError, match="Augmentation is for training only.*split='val'"):
        data.dataset("val", augment="light")


def test_balanced_class_weight(tmp_path):
    data_dir = write_class_folders(tmp_path / "d", {"big": 30, "small": 5})
    data = tl.load_data(data_dir, image_size=32, verbose=False)
    assert data.report.warnings and "Class imbalance" in data.report.warnings[0]
    counts = np.bincount(data.folder.splits["train"].labels)  # [24, 4]
    weights = data.class_weight("balanced")
    assert weights == pytest.approx({0: 28 / (2 * counts[0]), 1: 28 / (2 * counts[1])})
    assert data.class_weight("none") is None
    with pytest.raises(ValueError, match="class_weight must be one of"):
        data.class_weight("inverse")


def test_unknown_split_and_bad_arguments(image_folder):
    data = tl.load_data(image_folder, image_size=32, verbose=False)
    with pytest.raises(ValueError, match=r"no 'test' split; it has \['train', 'val'\]"):
        data.dataset("test")
    with pytest.raises(ValueError, match="Received: batch_size=0"):
        tl.load_data(image_folder, image_size=32, batch_size=0)
    with pytest.raises(ValueError, match="Received: num_labels=1"):
        data_module.make_file_dataset([os.devnull] * 2, [0], image_size=8)
