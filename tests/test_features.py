"""Training on cached features gives the model that plain training gives, faster."""

import os

import keras
import numpy as np
import pytest
from conftest import write_class_folders

import tlkeras as tl
from tlkeras import data as data_module
from tlkeras import features as features_module
from tlkeras.augment import augmentation_layer
from tlkeras.backbones import layer_blocks
from tlkeras.data import epoch_dataset
from tlkeras.features import (
    DiskArray,
    FeatureCache,
    RunCache,
    cache_features,
    choose_storage,
    pooled_from_boundary,
    split_model,
)
from tlkeras.model import get_base
from tlkeras.precision import precision_scope
from tlkeras.train import Stage, TrainConfig, _cache_passes


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("features")
    folder = write_class_folders(root / "data", {"ant": 8, "bee": 8, "fly": 8})
    return tl.load_data(folder, image_size=32, batch_size=8, validation_split=0.25, seed=3)


def twin_models(backbone, data):
    """Two models with identical weights (dropout 0.2 included, so its randomness counts)."""
    keras.utils.set_random_seed(0)
    first = tl.build_model(backbone, num_classes=3, image_size=32, weights=None, dense_units=16)
    keras.utils.set_random_seed(0)
    second = tl.build_model(backbone, num_classes=3, image_size=32, weights=None, dense_units=16)
    second.set_weights(first.get_weights())
    return first, second


def val_images(data):
    return data.arrays["val"][0].astype("float32")


def plain_options(data, *, initial_epoch=0, epochs):
    """The training batches `train` gives the plain path, and how `fit` must read them."""
    images, labels = data.arrays["train"]
    train_ds, steps = epoch_dataset(
        images,
        labels,
        batch_size=data.batch_size,
        seed=data.seed,
        initial_epoch=initial_epoch,
        epochs=initial_epoch + epochs,
    )
    return dict(
        train_data=train_ds,
        validation_data=data.dataset("val"),
        steps_per_epoch=steps,
        initial_epoch=initial_epoch,
        epochs=epochs,
    )


def test_cached_stage_one_equals_plain_training_and_the_model_predicts_like_the_head(data):
    plain, cached = twin_models("vgg16", data)
    images = val_images(data)
    untrained = cached.predict(images, verbose=0)
    keras.utils.set_random_seed(1)
    expected = tl.train_head(plain, **plain_options(data, epochs=3))
    keras.utils.set_random_seed(1)
    history = tl.train_head(cached, data, epochs=3)

    np.testing.assert_allclose(history["loss"], expected["loss"], rtol=1e-5)
    np.testing.assert_allclose(history["val_loss"], expected["val_loss"], rtol=1e-5)
    predictions = cached.predict(images, verbose=0)
    np.testing.assert_allclose(predictions, plain.predict(images, verbose=0), atol=1e-6)
    assert not np.allclose(predictions, untrained, atol=1e-4), "training changed the model"
    # The saved end-to-end model predicts what the head predicted on the cached features.
    bottom, head = split_model(cached)
    with cache_features(bottom, data, "val") as features:
        on_features = head.predict(features.dataset(batch_size=8), verbose=0)
    np.testing.assert_allclose(predictions, on_features, atol=1e-6)
    assert get_base(cached).trainable_weights == []


@pytest.mark.parametrize(
    ("backbone", "top_block"),
    [
        ("vgg16", "block5"),
        ("mobilenet_v2", "stage7"),
        # Dropout inside the backbone: off on both paths, which therefore agree.
        pytest.param("efficientnet_b0", "top", marks=pytest.mark.slow),
        pytest.param("efficientnet_lite0", "top", marks=pytest.mark.slow),
    ],
)
def test_fine_tuning_from_the_boundary_equals_end_to_end_fine_tuning(data, backbone, top_block):
    plain, cached = twin_models(backbone, data)
    start = [w.copy() for w in plain.get_weights()]
    moving_statistics = [v for v in cached.non_trainable_weights if "moving" in v.path]
    statistics_before = [v.numpy().copy() for v in moving_statistics]
    keras.utils.set_random_seed(2)
    expected = tl.fine_tune(
        plain, **plain_options(data, initial_epoch=3, epochs=1), learning_rate=1e-3
    )
    keras.utils.set_random_seed(2)
    history = tl.fine_tune(cached, data, initial_epoch=3, epochs=1, learning_rate=1e-3)

    np.testing.assert_allclose(history["loss"], expected["loss"], rtol=1e-4)
    moved = 0.0
    for before, want, got in zip(start, plain.get_weights(), cached.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
        moved = max(moved, float(np.abs(want - before).max()))
    assert moved > 1e-4, "fine-tuning changed the weights"
    base = get_base(cached)
    expected_layers = {
        layer.name
        for layer, block in zip(base.layers, layer_blocks(backbone, base), strict=True)
        if block == top_block
        and layer.weights
        and not isinstance(layer, keras.layers.BatchNormalization)
    }
    assert {w.path.split("/")[0] for w in base.trainable_weights} == expected_layers
    # BatchNorm stays frozen and in inference mode: its moving statistics never change.
    assert (backbone == "vgg16") == (moving_statistics == [])
    for variable, before in zip(moving_statistics, statistics_before, strict=True):
        np.testing.assert_array_equal(variable.numpy(), before)
    images = val_images(data)
    np.testing.assert_allclose(
        cached.predict(images, verbose=0), plain.predict(images, verbose=0), atol=1e-5
    )


@pytest.mark.slow
def _train(folder, out, *, cache, cache_memory="3%"):
    config = TrainConfig(
        folder,
        out=str(out),
        weights="none",
        image_size=32,
        batch_size=4,
        epochs=2,
        fine_tune_epochs=2,
        fine_tune_learning_rate=1e-3,
        dense_units=8,
        patience=0,
        class_weight="balanced",
        cache=cache,
        cache_memory=cache_memory,
    )
    return tl.train(config)


@pytest.mark.slow  # Two whole training runs.
def test_train_with_and_without_the_cache_gives_the_same_run(tmp_path, monkeypatch):
    """Both stages, VGG16 block5, class weights on: the same losses, epoch by epoch.

    "auto" keeps one cache for both stages, "disk" writes it in shard files, and "larger
    than memory" gives a memory budget smaller than every cache and every split: the
    features go to disk and the images are decoded as they are read, never all at once.
    """
    folder = write_class_folders(tmp_path / "data", {"cat": 12, "dog": 6})
    calls = []
    cache = features_module.cache_features
    monkeypatch.setattr(
        features_module, "cache_features", lambda *a, **k: calls.append(a[2]) or cache(*a, **k)
    )
    runs = {mode: _train(folder, tmp_path / mode, cache=mode) for mode in ("off", "auto", "disk")}
    assert calls == ["train", "val", "train", "val"], "the frozen blocks ran once per run"

    def no_whole_split(*args, **kwargs):
        raise AssertionError("decoded a whole split into memory")

    monkeypatch.setattr(data_module, "memory_budget", lambda: 1000)
    monkeypatch.setattr(data_module, "load_images", no_whole_split)
    monkeypatch.setattr(features_module, "SHARD_BYTES", 3 * 2 * 2 * 512 * 4)  # 3 rows a shard
    reads = []
    read = DiskArray.__getitem__
    monkeypatch.setattr(
        DiskArray, "__getitem__", lambda a, k: reads.append(len(k[1])) or read(a, k)
    )
    for mode in ("off", "auto"):
        out = tmp_path / f"{mode}-lm"
        runs[f"{mode}, larger than memory"] = _train(folder, out, cache=mode, cache_memory="0")
    assert reads and max(reads) <= 4, "the disk cache is read a batch at a time"

    expected = runs.pop("off")
    for mode, run in runs.items():
        history = run.history
        assert history["stage"] == expected.history["stage"] == [1, 1, 2, 2], mode
        for key in ("loss", "val_loss"):
            np.testing.assert_allclose(
                history[key], expected.history[key], rtol=1e-4, err_msg=mode
            )
        for got, want in zip(run.model.get_weights(), expected.model.get_weights(), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5, err_msg=mode)


def test_disk_cache_holds_the_same_features_and_is_deleted_on_close(data, monkeypatch):
    monkeypatch.setattr(features_module, "SHARD_BYTES", 5 * 2 * 2 * 512 * 4)  # 5 rows a shard
    model = tl.build_model("vgg16", num_classes=3, image_size=32, weights=None, dense_units=8)
    bottom, _ = split_model(model, num_blocks=1)
    with cache_features(bottom, data, "train", storage="memory") as in_memory:
        disk = cache_features(bottom, data, "train", storage="disk")
        assert disk.storage == "disk" and isinstance(disk.features, DiskArray)
        assert disk.features.shape == (1, 18, 2, 2, 512)
        assert len(disk.features.paths) == 4, "18 images in shards of 5"
        order = np.random.default_rng(0).permutation(18)
        np.testing.assert_array_equal(disk.features[0, order], in_memory.features[0, order])
        np.testing.assert_array_equal(disk.labels, data.folder.splits["train"].labels)
        path = disk.path
        disk.close()
        assert not os.path.exists(path)


def test_disk_array_writes_and_reads_across_shards(tmp_path):
    rows = np.arange(2 * 11 * 3, dtype="float32").reshape(2, 11, 3)
    array = DiskArray(str(tmp_path), rows.shape, "float32", shard_bytes=4 * 3 * 4)
    for index in range(2):
        for start, stop in ((0, 3), (3, 10), (10, 11)):  # Writes that cross shard ends.
            array[index, slice(start, stop)] = rows[index, start:stop]
    array.flush()
    indices = np.array([10, 0, 4, 3, 7, 7])
    for index in range(2):
        np.testing.assert_array_equal(array[index, indices], rows[index, indices])
    assert len(os.listdir(tmp_path)) == 2 * 3, "11 rows in shards of 4, for each pass"
    array.close()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts Linux's open files")
def test_a_disk_array_keeps_no_file_open_per_shard(tmp_path):
    def open_files():
        return len(os.listdir("/proc/self/fd"))

    rows = np.arange(40 * 3, dtype="float32").reshape(1, 40, 3)
    before = open_files()
    array = DiskArray(str(tmp_path), rows.shape, "float32", shard_bytes=2 * 3 * 4)
    for start in range(0, 40, 5):
        array[0, slice(start, start + 5)] = rows[0, start : start + 5]
    indices = np.random.default_rng(0).permutation(40)
    np.testing.assert_array_equal(array[0, indices], rows[0, indices])
    assert len(array.paths) == 20, "40 rows in shards of 2"
    assert open_files() == before


def test_choose_storage_decides_from_the_size():
    assert choose_storage(2**20, available=2**30) == "memory"
    assert choose_storage(2**29 + 1, available=2**30) == "disk"
    assert choose_storage(2**29, budget="50%", available=2**30) == "memory"
    assert choose_storage(2**20 + 1, budget="1MiB", available=2**40) == "disk"
    assert choose_storage(1, budget=0) == "disk"
    assert choose_storage(2**40, "memory", available=2**30) == "memory"
    assert choose_storage(1, "disk") == "disk"
    with pytest.raises(ValueError, match=r"Expected one of .*'disk'.*Received: storage='ram'"):
        choose_storage(1, "ram")


def test_the_budget_counts_every_cache_of_the_run_at_once(data, capsys):
    """18 training and 6 validation images: 8 KiB of boundary features and 2 KiB of pooled
    features each for VGG16's block5 at 32 px, 240 KiB in all; the training boundary alone
    is 144 KiB, under a 200 KB budget, but the run's caches are not."""
    model = tl.build_model("vgg16", num_classes=3, image_size=32, weights=None, dense_units=8)
    stage = Stage(epochs=1, learning_rate=1e-3, cache_memory="200KB")
    with RunCache(model, data, num_blocks=1) as shared:
        train, val = shared.caches(stage)
        assert shared.storage == train.storage == val.storage == "disk"
    assert "The features take 240.0 KiB, more than the memory --cache-memory 200KB" in (
        capsys.readouterr().out
    )
    stage.cache_memory = "240KiB"
    with RunCache(model, data, num_blocks=1) as shared:
        assert shared.caches(stage)[0].storage == "memory"


def test_features_come_in_the_order_of_the_images_of_every_epoch():
    labels = np.arange(21, dtype="int32")
    images = labels[:, None, None, None].repeat(3, axis=-1).astype("uint8")
    cache = FeatureCache(labels[None, :, None].astype("float32"), labels, "memory")
    features, steps = cache.epoch_dataset(batch_size=4, seed=7, initial_epoch=2, epochs=4)
    plain, plain_steps = epoch_dataset(
        images, labels, batch_size=4, seed=7, initial_epoch=2, epochs=4
    )
    assert steps == plain_steps == 6
    got = [(x[:, 0], y) for x, y in features.as_numpy_iterator()]
    want = [(x[:, 0, 0, 0], y) for x, y in plain.as_numpy_iterator()]
    assert len(got) == len(want) == 2 * steps
    for (got_x, got_y), (want_x, want_y) in zip(got, want, strict=True):
        np.testing.assert_array_equal(got_y, want_y)
        np.testing.assert_array_equal(got_x, want_x)  # Each feature belongs to its label.
    first, second = (np.concatenate([y for _, y in got[i : i + steps]]) for i in (0, steps))
    assert sorted(first) == list(labels) and not np.array_equal(first, second)


def test_each_epoch_reads_the_next_augmented_pass():
    labels = np.array([0, 1, 0], "int32")
    passes = np.stack([np.full((3, 1), p, "float32") for p in range(3)])
    cache = FeatureCache(passes, labels, "memory")
    features, steps = cache.epoch_dataset(batch_size=3, initial_epoch=1, epochs=6)
    assert steps == 1
    assert [int(x[0, 0]) for x, _ in features.as_numpy_iterator()] == [1, 2, 0, 1, 2]


def test_augmented_passes_hold_other_versions_of_the_images(data):
    model = tl.build_model("vgg16", num_classes=3, image_size=32, weights=None, dense_units=8)
    bottom, _ = split_model(model, num_blocks=1)
    with cache_features(bottom, data, "train", passes=2, augment="strong") as augmented:
        first, second = augmented.features
        assert not np.allclose(first, second, atol=1e-3)
    with cache_features(bottom, data, "train", passes=2) as plain:
        np.testing.assert_array_equal(plain.features[0], plain.features[1])


def test_callbacks_see_the_end_to_end_model_and_can_stop_training(data, tmp_path):
    class StopAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.input_shape = self.model.input_shape
            self.model.stop_training = True

    stopper = StopAfterFirstEpoch()
    checkpoint = keras.callbacks.ModelCheckpoint(str(tmp_path / "best.keras"))
    model = tl.build_model("vgg16", num_classes=3, image_size=32, weights=None, dense_units=8)
    history = tl.train_head(model, data, epochs=4, callbacks=[stopper, checkpoint])
    assert len(history["loss"]) == 1
    assert stopper.input_shape == (None, 32, 32, 3)
    saved = keras.saving.load_model(tmp_path / "best.keras", compile=False)
    assert saved.input_shape == (None, 32, 32, 3) and saved.output_shape == (None, 3)


def test_mixed_bfloat16_computes_in_bfloat16_with_a_float32_output(data, tmp_path):
    with precision_scope("mixed_bfloat16"):
        model = tl.build_model("vgg16", num_classes=3, image_size=32, weights=None)
    assert keras.config.dtype_policy().name == "float32", "the scope restores the policy"
    assert model.get_layer("dense").compute_dtype == "bfloat16"
    assert model.get_layer("predictions").compute_dtype == "float32"
    assert model.get_layer("dense").kernel.dtype == "float32", "weights stay float32"
    bottom, top = split_model(model)
    assert bottom.output.dtype == "bfloat16"
    tl.train_head(model, data, epochs=1)
    images = val_images(data)
    probabilities = model.predict(images, verbose=0)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    tl.save_model(tmp_path / "m.keras", model, class_names=["ant", "bee", "fly"])
    loaded, _ = tl.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict(images, verbose=0), probabilities, atol=1e-6)


def test_mixed_float16_top_scales_the_loss():
    with precision_scope("mixed_float16"):
        model = tl.build_model("vgg16", num_classes=3, image_size=32, weights=None)
    _, top = split_model(model, num_blocks=1)
    tl.compile_model(top, learning_rate=1e-3)
    assert isinstance(top.optimizer, keras.optimizers.LossScaleOptimizer)


def test_when_train_caches():
    none, light = augmentation_layer("none"), augmentation_layer("light", seed=0)
    assert TrainConfig("data").cache == "auto"
    stage = Stage(epochs=2, learning_rate=1e-3)
    assert stage.cache == "auto" and _cache_passes(stage, none) == 1, "cached by default"
    assert _cache_passes(stage, light) == 0, "augmenting trains end to end by default"
    stage.augment_passes = 3
    assert _cache_passes(stage, light) == 3
    stage.cache = "off"
    assert _cache_passes(stage, light) == 0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("precision", "bf16", r"Unknown precision 'bf16'.*Received: precision='bf16'"),
        ("cache", "ram", r"Expected one of \('auto', 'memory', 'disk', 'off'\)"),
        ("jit_compile", "yes", r"Received: jit_compile='yes'"),
        ("augment_passes", -1, r"at least 0"),
        ("cache_memory", "lots", r"a size such as 512MiB.*Received: cache_memory='lots'"),
    ],
)
def test_speed_settings_are_checked_before_any_work(field, value, message):
    config = TrainConfig("no/such/folder", **{field: value})
    with pytest.raises(ValueError, match=message):
        tl.train(config)


def test_cli_speed_options_reach_the_config():
    from tlkeras.cli import build_parser

    args = build_parser().parse_args(
        ["train", "data", "--precision", "mixed_bfloat16", "--no-jit-compile", "--cache", "disk"]
    )
    assert (args.precision, args.jit_compile, args.cache) == ("mixed_bfloat16", False, "disk")
    plain = build_parser().parse_args(["train", "data"])
    assert (plain.precision, plain.jit_compile, plain.cache) == ("float32", "auto", "auto")
    assert plain.augment_passes == 0 and plain.cache_memory == "3%"
    assert build_parser().parse_args(["train", "d", "--cache-memory", "2GiB"]).cache_memory == (
        "2GiB"
    )


def test_xla_with_bfloat16_on_a_cpu_warns():
    from tlkeras.precision import warn_if_xla_is_slow

    with precision_scope("mixed_bfloat16"):
        model = tl.build_model("vgg16", num_classes=2, image_size=32, weights=None)
    with pytest.warns(UserWarning, match="XLA does not use the CPU's bfloat16 instructions"):
        warn_if_xla_is_slow(model, True)


@pytest.mark.parametrize(("backbone", "num_blocks"), [("vgg16", 5), ("resnet50", 1)])
def test_top_of_bottom_is_the_model_at_any_boundary(backbone, num_blocks):
    """All of VGG16's blocks (nothing frozen but preprocessing), a residual network's top."""
    model = tl.build_model(backbone, num_classes=2, image_size=32, weights=None, dense_units=4)
    images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    bottom, top = split_model(model, num_blocks)
    features = bottom.predict(images, verbose=0)
    np.testing.assert_allclose(
        top.predict(features, verbose=0), model.predict(images, verbose=0), atol=1e-6
    )
    # Stage 1's pooled features, derived from stage 2's boundary (one cache for both stages).
    pooled = pooled_from_boundary(model, num_blocks).predict(features, verbose=0)
    direct = split_model(model)[0].predict(images, verbose=0)
    np.testing.assert_allclose(pooled, direct, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"Pass a number from 0 to 5\. Received: num_blocks=6"):
        split_model(model, 6)
