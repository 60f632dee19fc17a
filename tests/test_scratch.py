"""Scratch folders (disk caches, worker folders) of killed runs are removed by the next run."""

import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest
from conftest import write_class_folders

import tlkeras as tl
from tlkeras import scratch
from tlkeras.scratch import (
    LOCK_SUFFIX,
    make_scratch_folder,
    remove_scratch_folder,
    remove_stale_scratch_folders,
)

pytestmark = pytest.mark.skipif(scratch.fcntl is None, reason="flock is POSIX only")


def age(path, seconds):
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_only_the_folders_of_dead_processes_are_removed(tmp_path):
    live = make_scratch_folder("tlkeras-features-", tmp_path)
    (tmp_path / live / "pass0-00000.bin").write_bytes(b"x" * 10)
    dead = make_scratch_folder("tlkeras-worker-", tmp_path)
    just_died = make_scratch_folder("tlkeras-features-", tmp_path)
    for folder in (dead, just_died):  # Closing the lock's descriptor is what death does.
        os.close(scratch._held.pop(folder))
    for path in (live, live + LOCK_SUFFIX, dead, dead + LOCK_SUFFIX):
        age(path, 60)
    legacy_old, legacy_new, other = (
        tmp_path / name for name in ("tlkeras-features-a", "tlkeras-features-b", "other")
    )
    for folder in (legacy_old, legacy_new, other):
        folder.mkdir()
    age(legacy_old, 2 * 24 * 3600)
    age(other, 2 * 24 * 3600)

    assert sorted(remove_stale_scratch_folders(tmp_path)) == sorted([dead, str(legacy_old)])
    assert not os.path.exists(dead) and not os.path.exists(dead + LOCK_SUFFIX)
    assert os.path.isfile(os.path.join(live, "pass0-00000.bin")), "a live run's cache stays"
    assert os.path.isdir(just_died), "within the grace period: its process may be starting"
    assert legacy_new.is_dir() and other.is_dir()
    remove_scratch_folder(live)
    assert not os.path.exists(live) and not os.path.exists(live + LOCK_SUFFIX)


@pytest.mark.slow
def test_a_disk_cache_left_by_a_killed_run_is_removed_by_the_next_run(tmp_path, monkeypatch):
    data_dir = write_class_folders(tmp_path / "data", {"cat": 6, "dog": 6})
    scratch_dir = tmp_path / "tmp"
    scratch_dir.mkdir()
    settings = dict(weights="none", image_size=32, batch_size=4, epochs=1, dense_units=8)
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in settings.items()]
    killed = subprocess.run(
        [sys.executable, "-m", "tlkeras", "train", data_dir, *flags, "--cache=disk"]
        + ["--out", str(tmp_path / "killed")],
        env={**os.environ, "TLKERAS_KILL_AT": "features_cached", "TMPDIR": str(scratch_dir)},
        capture_output=True,
        timeout=600,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    left = [name for name in os.listdir(scratch_dir) if name.startswith("tlkeras-")]
    assert len(left) == 4, "train and val caches, each with its lock file"
    assert all(os.listdir(scratch_dir / name) for name in left if not name.endswith(".lock"))

    monkeypatch.setattr(tempfile, "tempdir", str(scratch_dir))
    monkeypatch.setattr(scratch, "GRACE_SECONDS", 0)  # The kill was a moment ago.
    tl.train(tl.TrainConfig(data_dir, out=str(tmp_path / "next"), cache="off", **settings))
    assert [name for name in os.listdir(scratch_dir) if name.startswith("tlkeras-")] == []
