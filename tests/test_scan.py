"""The pre-scan: every bad or junk file is found and reported, every folder mistake is named."""

import json
import os
import subprocess

import pytest
from conftest import write_class_folders
from messy import CAT, DOG, make_messy_folder
from PIL import Image

from tlkeras import scan
from tlkeras.scan import check_images, find_split_folders, imbalance_warnings, scan_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def messy(tmp_path):
    return make_messy_folder(tmp_path / "messy")


@pytest.mark.parametrize("image_size", [None, 32])
def test_scan_reports_every_bad_and_ignored_file(messy, image_size):
    data_dir, bad, ignored = messy
    report = scan_dataset(data_dir, validation_split=0.25, seed=0, image_size=image_size)

    assert {p.path for p in report.bad_files} == set(bad)
    for problem in report.bad_files:
        assert bad[problem.path] in problem.reason
    assert {p.path for p in report.ignored_files} == set(ignored)
    for problem in report.ignored_files:
        assert ignored[problem.path] in problem.reason

    usable = [p for split in report.folder.splits.values() for p in split.paths]
    assert not set(usable) & (set(bad) | set(ignored))
    assert os.path.join(data_dir, CAT, "photo été 1.png") in usable
    assert report.class_names == [CAT, DOG]
    assert report.counts == {"train": {CAT: 10, DOG: 9}, "val": {CAT: 3, DOG: 3}}
    assert report.num_checked == 12 + 13 + 3  # good and bad files with image extensions
    assert report.image_size == (None if image_size is None else (32, 32))


def test_report_summary_json_and_strict(messy, tmp_path):
    data_dir, bad, ignored = messy
    report = scan_dataset(data_dir, validation_split=0.25)
    summary = report.summary()
    assert "25 usable images in 2 classes" in summary
    assert f"Skipped {len(bad)} unreadable or unsupported file(s)" in summary
    assert f"Ignored {len(ignored)} file(s) that are not images" in summary
    assert all(path in summary for path in bad)
    assert f"  {CAT:<11}      10       3" in summary

    report.save(tmp_path / "report.json")
    saved = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert saved["counts"] == report.counts
    assert {item["path"] for item in saved["bad_files"]} == set(bad)
    assert saved["num_images"] == {"train": 19, "val": 6}

    with pytest.raises(ValueError, match=r"Found 4 unreadable .* and 1 more.*strict=True"):
        report.raise_if_bad_files()


def test_summary_shortens_long_lists(tmp_path):
    data_dir = write_class_folders(tmp_path / "d", {"a": 4, "b": 4})
    for i in range(5):
        (tmp_path / "d" / "a" / f"junk{i}.txt").write_text("x")
    summary = scan_dataset(data_dir, validation_split=0.25).summary(max_rows=2)
    assert "  ... and 3 more (see the JSON report)" in summary


def test_split_layout_counts_and_stray_files(split_folder):
    os.makedirs(os.path.join(split_folder, "extra"))
    open(os.path.join(split_folder, "README.md"), "w").close()
    report = scan_dataset(split_folder)
    assert list(report.counts) == ["train", "val", "test"]
    assert report.counts["test"] == {"ant": 8, "bee": 8, "fly": 8}
    reasons = {os.path.basename(p.path): p.reason for p in report.ignored_files}
    assert reasons == {"README.md": "not an image file (.md)", "extra": reasons["extra"]}
    assert "not a split" in reasons["extra"]


def test_split_layout_without_val_is_split_by_seed(tmp_path):
    write_class_folders(tmp_path / "d" / "train", {"a": 10, "b": 10})
    write_class_folders(tmp_path / "d" / "test", {"a": 2, "b": 2})
    counts = scan_dataset(tmp_path / "d", validation_split=0.2).counts
    assert counts == {"train": {"a": 8, "b": 8}, "val": {"a": 2, "b": 2}, "test": {"a": 2, "b": 2}}


def test_a_class_named_train_is_a_class_not_a_split(tmp_path):
    data_dir = write_class_folders(tmp_path / "d", {"bus": 5, "car": 5, "train": 5})
    report = scan_dataset(data_dir, validation_split=0.2)
    assert report.class_names == ["bus", "car", "train"]
    assert report.counts["train"] == {"bus": 4, "car": 4, "train": 4}
    assert report.ignored_files == []
    assert find_split_folders(data_dir) == {}


def test_train_alone_or_with_val_is_a_split_layout(tmp_path):
    write_class_folders(tmp_path / "alone" / "train", {"a": 5, "b": 5})
    assert list(find_split_folders(tmp_path / "alone")) == ["train"]
    write_class_folders(tmp_path / "both" / "train", {"a": 5, "b": 5})
    write_class_folders(tmp_path / "both" / "validation", {"a": 2, "b": 2})
    assert list(find_split_folders(tmp_path / "both")) == ["train", "val"]


def test_decoder_crash_on_a_crafted_file_is_reported_not_raised(tmp_path, monkeypatch):
    path = tmp_path / "odd.png"
    Image.new("RGB", (4, 4)).save(path)

    def broken_decoder(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(scan, "load_image", broken_decoder)
    reasons = check_images([path, path], image_size=8, num_workers=2)
    assert reasons == {
        str(path): "unexpected decoding error (ZeroDivisionError: division by zero)"
    }


def test_too_large_image_is_reported(tmp_path, monkeypatch):
    data_dir = write_class_folders(tmp_path / "d", {"a": 5, "b": 5})
    huge = tmp_path / "d" / "a" / "huge.png"
    Image.new("RGB", (80, 80)).save(huge)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # 80*80 > 2 * 2000 > 32*32
    report = scan_dataset(data_dir, image_size=32)
    assert [(p.path, "too large" in p.reason) for p in report.bad_files] == [(str(huge), True)]


def test_imbalance_warning_above_five_times():
    assert imbalance_warnings({"a": 50, "b": 10}) == []
    [warning] = imbalance_warnings({"a": 51, "b": 10, "c": 30})
    assert "'a' has 51 training images, 5.1x as many as 'b' (10)" in warning
    assert "class_weight='balanced'" in warning


def test_scan_warns_about_imbalance(tmp_path):
    data_dir = write_class_folders(tmp_path / "d", {"big": 40, "small": 5})
    report = scan_dataset(data_dir, validation_split=0.2)
    assert report.counts["train"] == {"big": 32, "small": 4}
    assert "Class imbalance: 'big' has 32 training images" in report.warnings[0]
    assert "Warning: Class imbalance" in report.summary()


def _folder_with(tmp_path, kind):
    root = tmp_path / "data"
    if kind == "missing":
        return root
    root.mkdir()
    if kind == "loose images":
        for i in range(3):
            Image.new("RGB", (8, 8)).save(root / f"{i}.png")
    elif kind == "one class":
        write_class_folders(root, {"cat": 5})
    elif kind == "no usable images":
        write_class_folders(root, {"cat": 5})
        (root / "dog").mkdir()
        (root / "dog" / "broken.jpg").write_bytes(b"not a jpeg")
        (root / "dog" / "notes.txt").write_text("x")
    elif kind == "too few":
        write_class_folders(root, {"cat": 5, "dog": 2})
    elif kind == "different classes":
        write_class_folders(root / "train", {"cat": 5, "dog": 5})
        write_class_folders(root / "val", {"cat": 2, "cow": 2})
    return root


FOLDER_MISTAKES = [
    ("missing", r"data' does not exist\. Expected .*/<class_name>/<image files>"),
    ("empty", r"has no class folders\. Expected"),
    ("loose images", r"holds 3 image file\(s\) directly: move each class's images into"),
    ("one class", r"only one class folder \('cat'\).*at least 2 classes"),
    (
        "no usable images",
        r"Class 'dog' has no usable images in .*dog/' \(broken.jpg: not an image, .*; "
        r"notes.txt: not an image file \(.txt\)\)\. Every class needs images",
    ),
    ("too few", r"Class 'dog' has 2 usable image\(s\), too few to hold out 20%"),
    ("different classes", r"missing \['dog'\], unexpected \['cow'\]"),
]


@pytest.mark.parametrize(("kind", "message"), FOLDER_MISTAKES, ids=[m[0] for m in FOLDER_MISTAKES])
def test_folder_mistakes_are_named_before_any_work(tmp_path, kind, message):
    with pytest.raises(ValueError, match=message) as info:
        scan_dataset(_folder_with(tmp_path, kind))
    assert "Received: " in str(info.value)


def test_data_samples_scan_clean_and_stay_small():
    samples = os.path.join(REPO, "data_samples")
    tracked = subprocess.run(
        ["git", "-C", REPO, "ls-files", "data_samples"], capture_output=True, text=True
    ).stdout.split()
    assert sum(os.path.getsize(os.path.join(REPO, f)) for f in tracked) < 10 * 2**20
    for folder in ("digits", "day_night/day", "day_night/night"):
        report = scan_dataset(os.path.join(samples, folder), image_size=32)
        assert report.bad_files == [] and report.ignored_files == []
