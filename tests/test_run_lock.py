"""One writer per run folder: a second process is refused at once, a dead one's lock is taken
over, and the lock is invisible to the run-folder checks. The slow tests run the real CLI."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
import types

import pytest

from tlkeras import files, runs, weights
from tlkeras.errors import describe, exit_status
from tlkeras.run_lock import NOTE_FILE, NOTE_INTERVAL, RunFolderInUseError, RunLock, read_holder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
    "TF_CPP_MIN_LOG_LEVEL": "3",
}
# `hold FOLDER` takes the lock, says so and sleeps; `try FOLDER` exits 0 if it got the lock,
# 3 if refused. Neither imports TensorFlow, so each starts in a fraction of a second.
LOCKER = """
import sys, time
from tlkeras.run_lock import RunFolderInUseError, RunLock
action, folder = sys.argv[1:]
try:
    with RunLock(folder, purpose="train"):
        print("held", flush=True)
        if action == "hold":
            time.sleep(600)
except RunFolderInUseError as error:
    print(error, flush=True)
    sys.exit(3)
"""


def locker(action: str, folder) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", LOCKER, action, str(folder)],
        env=ENV,
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of `tmp_path / "run"`."""
    process = locker("hold", tmp_path / "run")
    assert process.stdout.readline() == "held\n"
    yield process
    process.kill()
    process.wait()


def try_lock(folder) -> int:
    process = locker("try", folder)
    process.communicate(timeout=60)
    return process.returncode


def test_a_second_writer_is_refused_in_one_line_naming_the_holder(tmp_path, holder):
    folder = tmp_path / "run"
    started = time.monotonic()
    with pytest.raises(RunFolderInUseError) as info, RunLock(folder, purpose="train"):
        pytest.fail("two writers held one run folder")
    assert time.monotonic() - started < 5, "refused at once, not after waiting"
    message = describe(info.value)
    assert message.startswith(f"tlkeras: file error: The run folder {str(folder)!r} is in use")
    assert f"pid {holder.pid} on host " in message and "(tlkeras train, since " in message
    assert message.endswith(f"Received: run_dir={str(folder)!r}") and "\n" not in message
    assert exit_status(info.value) == 3
    assert info.value.holder["pid"] == holder.pid


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path, holder):
    folder = tmp_path / "run"
    (folder / "history.json").write_text("{}")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert read_holder(folder)["pid"] == holder.pid, "a SIGKILL leaves its note behind"
    with RunLock(folder, purpose="train"):
        assert read_holder(folder)["pid"] == os.getpid()
        assert try_lock(folder) == 3
    assert sorted(os.listdir(folder)) == ["history.json"], "the note goes with the lock"
    assert try_lock(folder) == 0


def test_the_lock_is_invisible_to_the_run_folder_checks(tmp_path):
    folder = tmp_path / "runs" / "new"
    with RunLock(folder, purpose="train"):
        runs.check_run_folder(folder)  # Still a new, empty run folder: no "already exists".
        assert files.remove_temporary_files(folder) == [NOTE_FILE]  # As a starting run does.
        assert try_lock(folder) == 3, "deleting the note does not release the lock"
        deadline = time.monotonic() + 10 * NOTE_INTERVAL
        while not read_holder(folder) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert read_holder(folder)["pid"] == os.getpid(), "the holder writes its note again"
    assert not (tmp_path / "runs").exists(), "a folder made only for the lock is removed"


def test_the_lock_nests_within_one_process(tmp_path):
    folder = tmp_path / "run"
    with RunLock(folder, purpose="train"):
        with RunLock(folder, purpose="export"):
            assert try_lock(folder) == 3
        assert try_lock(folder) == 3, "the outer block still holds it"
        assert read_holder(folder)["purpose"] == "train"
    assert try_lock(folder) == 0


def test_a_file_system_that_cannot_lock_folders_is_warned_about(tmp_path, monkeypatch):
    from tlkeras import run_lock

    def refuse(fd, operation):
        raise OSError(errno.EBADF, "Bad file descriptor")  # As NFS may for a folder.

    monkeypatch.setattr(
        run_lock, "fcntl", types.SimpleNamespace(flock=refuse, LOCK_EX=2, LOCK_NB=4)
    )
    warned = pytest.warns(UserWarning, match=r"Cannot lock the run folder .* \(EBADF\), so")
    with warned, RunLock(tmp_path / "run"):
        assert os.listdir(tmp_path / "run") == [], "no note: nobody holds it"
    assert not (tmp_path / "run").exists()


def test_two_downloads_into_one_folder_write_their_own_temporary_files(tmp_path, monkeypatch):
    """A second download starting while the first writes must not share its `.part` file."""
    wanted = weights.imagenet_file("vgg16", weights_dir=tmp_path)
    written = []

    def get_file(fname, origin, *, file_hash, cache_subdir, force_download):
        path = os.path.join(cache_subdir, fname)
        with open(path, "wb") as f:
            f.write(b"first half")
            if not written:  # Another process starts the same download now.
                written.append(path)
                weights._fetch(wanted)
            f.write(b", second half")
        written.append(path)
        return path

    monkeypatch.setattr(weights.keras.utils, "get_file", get_file)
    weights._fetch(wanted)
    assert len(set(written)) == 2 and all(path.endswith(".part") for path in written)
    assert os.listdir(tmp_path) == [wanted.file]
    with open(wanted.path, "rb") as f:
        assert f.read() == b"first half, second half"


def train_command(data_dir, *where) -> list[str]:
    flags = ["--weights", "none", "--image-size", "32", "--epochs", "1", "--fine-tune-epochs"]
    return [sys.executable, "-m", "tlkeras", "train", data_dir, *flags, "1", *where]


def run_files(folder) -> dict:
    """Every file of a run folder but the lock's note, with its size and modification time."""
    found = {}
    for where, _, names in os.walk(folder):
        for name in names:
            if name != NOTE_FILE:
                status = os.stat(os.path.join(where, name))
                found[os.path.join(where, name)] = (status.st_size, status.st_mtime_ns)
    return found


@pytest.mark.slow
def test_a_resume_started_while_the_run_still_trains_exits_at_once(tmp_path):
    from conftest import write_class_folders

    data_dir = write_class_folders(tmp_path / "data", {"cat": 12, "dog": 12})
    out = tmp_path / "run"
    log = tmp_path / "first.log"
    with open(log, "w") as output:  # A file, not a pipe: a full pipe would stall the run.
        first = subprocess.Popen(
            train_command(data_dir, "--out", str(out)), env=ENV, stdout=output, stderr=output
        )
    try:
        deadline = time.monotonic() + 300
        # Mid-run (its checkpoint begun), holding the lock (its note names it).
        while not (
            (out / "checkpoint" / "state.json").exists()
            and read_holder(out).get("pid") == first.pid
        ):
            assert first.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        first.send_signal(signal.SIGSTOP)  # Frozen, it stays mid-run for as long as we need.
        before = run_files(out)
        second = subprocess.run(
            train_command(data_dir, "--resume", str(out)),
            env=ENV,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert second.returncode == 3, second.stderr[-3000:]
        assert second.stderr.count("\n") == 1 and "Scanned" not in second.stdout
        assert f"is in use by another process: pid {first.pid} on host " in second.stderr
        assert run_files(out) == before, "the refused process touched nothing"
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=300) == 0, log.read_text()[-3000:]
    assert "Saved the run to" in log.read_text()
    assert runs.load_run(out).history["stage"] == [1, 2]
    assert not (out / NOTE_FILE).exists()


@pytest.mark.slow
def test_a_run_killed_holding_the_lock_is_resumed(tmp_path, capsys):
    from conftest import write_class_folders

    from tlkeras.cli import main

    data_dir = write_class_folders(tmp_path / "data", {"cat": 12, "dog": 12})
    out = tmp_path / "run"
    killed = subprocess.run(
        train_command(data_dir, "--out", str(out)),
        env={**ENV, "TLKERAS_KILL_AT": "checkpoint_saved"},  # SIGKILL after epoch 1.
        capture_output=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL
    assert json.loads((out / NOTE_FILE).read_text())["purpose"] == "train", "left by the kill"
    assert main(train_command(data_dir, "--resume", str(out))[3:]) == 0, capsys.readouterr().err
    assert "Resuming the run" in capsys.readouterr().out
    assert runs.load_run(out).history["stage"] == [1, 2]
    assert not (out / NOTE_FILE).exists()
