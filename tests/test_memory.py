"""Memory: one probe that honours container limits, and many runs in one process."""

import keras
import numpy as np

import tlkeras as tl
from tlkeras.memory import (
    CUSTOM_GRADIENT_PREFIX,
    available_memory,
    forget_traced_gradients,
)
from tlkeras.workarounds import tensorflow_gradient_registry


def custom_gradients(names):
    return {name for name in names if name.startswith(CUSTOM_GRADIENT_PREFIX)}


def test_a_run_forgets_its_gradient_registrations_and_its_model_still_trains():
    registry = tensorflow_gradient_registry()
    assert registry is not None, "TensorFlow moved its gradient registry: see tlkeras.workarounds"
    before = set(registry)
    x, y = np.random.default_rng(0).normal(size=(8, 4)), np.arange(8) % 2
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    with forget_traced_gradients():
        model.fit(x, y, epochs=1, verbose=0)
        assert custom_gradients(set(registry) - before)  # What used to keep the model alive.
    assert not custom_gradients(set(registry) - before)
    loss = model.fit(x, y, epochs=2, verbose=0).history["loss"]
    assert np.isfinite(loss).all()


GIB = 2**30


def fake_system(root, *, meminfo_gib=16, cgroup="", files=None):
    """A file system root with /proc/meminfo, /proc/self/cgroup and cgroup files."""
    (root / "proc" / "self").mkdir(parents=True)
    (root / "proc" / "meminfo").write_text(
        f"MemTotal: {64 * GIB // 1024} kB\nMemAvailable: {meminfo_gib * GIB // 1024} kB\n"
    )
    (root / "proc" / "self" / "cgroup").write_text(cgroup)
    for path, text in (files or {}).items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return str(root)


def test_available_memory_honours_a_cgroup_v2_limit(tmp_path):
    root = fake_system(
        tmp_path,
        cgroup="0::/box/job\n",
        files={
            "sys/fs/cgroup/memory.max": "max\n",
            "sys/fs/cgroup/box/memory.max": f"{2 * GIB}\n",
            "sys/fs/cgroup/box/memory.current": f"{GIB + GIB // 2}\n",
            "sys/fs/cgroup/box/memory.stat": f"anon 5\ninactive_file {GIB // 2}\n",
            "sys/fs/cgroup/box/job/memory.max": "max\n",
            "sys/fs/cgroup/box/job/memory.current": "0\n",
        },
    )
    # 2 GiB limit, 1.5 GiB used of which 0.5 GiB is page cache it can drop: 1 GiB left.
    assert available_memory(root=root) == GIB


def test_available_memory_honours_a_cgroup_v1_limit_and_meminfo(tmp_path):
    root = fake_system(
        tmp_path,
        meminfo_gib=2,
        cgroup="5:cpu:/a\n4:memory:/a/b\n",
        files={
            "sys/fs/cgroup/memory/a/memory.limit_in_bytes": f"{4 * GIB}\n",
            "sys/fs/cgroup/memory/a/memory.usage_in_bytes": f"{GIB}\n",
            "sys/fs/cgroup/memory/a/b/memory.limit_in_bytes": "9223372036854771712\n",
            "sys/fs/cgroup/memory/a/b/memory.usage_in_bytes": f"{GIB}\n",
        },
    )
    assert available_memory(root=root) == 2 * GIB, "MemAvailable is lower than the room"
    (tmp_path / "proc" / "meminfo").write_text(f"MemAvailable: {16 * GIB // 1024} kB\n")
    assert available_memory(root=root) == 3 * GIB, "the 4 GiB limit of the parent group"


def test_available_memory_is_none_when_nothing_can_be_read(tmp_path):
    assert available_memory(root=str(tmp_path)) is None


def test_decoded_images_are_kept_only_when_they_fit_the_container(image_folder, monkeypatch):
    from tlkeras import data as data_module

    images = 24 * 32 * 32 * 3
    monkeypatch.setattr(data_module, "available_memory", lambda: 4 * images)
    assert tl.load_data(image_folder, image_size=32, verbose=False).cache
    monkeypatch.setattr(data_module, "available_memory", lambda: 4 * images - 4)
    assert not tl.load_data(image_folder, image_size=32, verbose=False).cache
