"""Histories of both stages join into one, whatever metrics each stage logged."""

import json
import os

import keras

from tlkeras.plots import plot_history
from tlkeras.runs import load_run, save_run
from tlkeras.train import merge_histories


def test_a_metric_of_one_stage_only_is_none_in_the_other_and_the_run_saves(tmp_path):
    first = {"loss": [3, 2], "learning_rate": [0.1, 0.1]}  # e.g. a callback's log
    second = {"loss": [1], "val_extra": [0.5]}
    merged = merge_histories(first, second)
    assert merged == {
        "epoch": [1, 2, 3],
        "stage": [1, 1, 2],
        "loss": [3.0, 2.0, 1.0],
        "learning_rate": [0.1, 0.1, None],
        "val_extra": [None, None, 0.5],
    }
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation="softmax")])
    run_dir = str(tmp_path / "run")
    save_run(run_dir, model=model, class_names=["a", "b"], config={}, history=merged)
    with open(os.path.join(run_dir, "history.csv")) as f:
        assert f.read().splitlines()[1:] == ["1,1,3.0,0.1,", "2,1,2.0,0.1,", "3,2,1.0,,0.5"]
    with open(os.path.join(run_dir, "history.json")) as f:
        assert json.load(f)["learning_rate"] == [0.1, 0.1, None]
    assert load_run(run_dir).history == merged
    plot_history(merged, path=str(tmp_path / "history.png"))
    assert os.path.getsize(tmp_path / "history.png") > 0
