"""tlkeras: transfer learning on images with Keras 3.

A frozen ImageNet backbone with a new head, trained on a folder of labelled images, then
optionally fine-tuned with its top blocks unfrozen. The recipe, in a few calls:

    import tlkeras as tl

    data = tl.load_data("data_samples/digits", image_size=32)
    model = tl.build_model("vgg16", num_classes=len(data.class_names), image_size=32,
                           weights="imagenet")          # or weights=None offline
    history = tl.train_head(model, data.dataset("train"), data.dataset("val"), epochs=5)
    history = tl.fine_tune(model, data.dataset("train"), data.dataset("val"), epochs=3,
                           unfreeze=1, initial_epoch=5)

The same two stages, faster: the frozen layers run once and their output is cached:

    history = tl.train_head_cached(model, data, epochs=5)
    history = tl.fine_tune_cached(model, data, epochs=3, unfreeze=1, initial_epoch=5)

Or all at once, writing a run folder that `load_run`, `predict` and `evaluate` use:

    run = tl.train(tl.TrainConfig("data_samples/digits", out="runs/digits", image_size=32))
    tl.predict(tl.load_run("runs/digits"), ["data_samples/predict_examples/digit_3.png"])
"""

__version__ = "0.1.0"

from tlkeras.backbones import BACKBONES, get_backbone
from tlkeras.data import load_data, scan_folder
from tlkeras.evaluate import evaluate
from tlkeras.features import cache_features, fine_tune_cached, split_model, train_head_cached
from tlkeras.layers import Preprocess
from tlkeras.model import (
    WeightsUnavailableError,
    build_model,
    compile_model,
    freeze_backbone,
    load_backbone,
    unfreeze_top_blocks,
)
from tlkeras.precision import precision_scope
from tlkeras.predict import predict
from tlkeras.runs import Run, load_run, save_model
from tlkeras.train import TrainConfig, fine_tune, train, train_head

__all__ = [
    "BACKBONES",
    "Preprocess",
    "Run",
    "TrainConfig",
    "WeightsUnavailableError",
    "build_model",
    "cache_features",
    "compile_model",
    "evaluate",
    "fine_tune",
    "fine_tune_cached",
    "freeze_backbone",
    "get_backbone",
    "load_backbone",
    "load_data",
    "load_run",
    "precision_scope",
    "predict",
    "save_model",
    "scan_folder",
    "split_model",
    "train",
    "train_head",
    "train_head_cached",
    "unfreeze_top_blocks",
]
