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

Or all at once, writing a run folder that `load_run`, `predict` and `evaluate` use:

    run = tl.train(tl.TrainConfig("data_samples/digits", out="runs/digits", image_size=32))
    tl.predict(tl.load_run("runs/digits"), ["data_samples/predict_examples/digit_3.png"])

Pretrain a backbone on your own source images and transfer from it, or provision ImageNet
weights for offline machines:

    tl.pretrain(tl.PretrainConfig("source/", out="pretrained/src", backbone="mobilenet_v2",
                                  image_size=32))
    model = tl.build_model("mobilenet_v2", num_classes=5, image_size=32,
                           weights="pretrained/src")
    tl.download_weights(["vgg16"], weights_dir="/srv/tlkeras-weights")
"""

__version__ = "0.1.0"

from tlkeras.backbones import BACKBONES, get_backbone
from tlkeras.data import load_data, scan_folder
from tlkeras.evaluate import evaluate
from tlkeras.layers import Preprocess
from tlkeras.model import (
    WeightsUnavailableError,
    build_model,
    compile_model,
    freeze_backbone,
    load_backbone,
    unfreeze_top_blocks,
)
from tlkeras.predict import predict
from tlkeras.pretrain import PretrainConfig, pretrain
from tlkeras.runs import Run, load_run, save_model
from tlkeras.train import TrainConfig, fine_tune, train, train_head
from tlkeras.weights import download_weights, list_weights

__all__ = [
    "BACKBONES",
    "Preprocess",
    "PretrainConfig",
    "Run",
    "TrainConfig",
    "WeightsUnavailableError",
    "build_model",
    "compile_model",
    "download_weights",
    "evaluate",
    "fine_tune",
    "freeze_backbone",
    "get_backbone",
    "list_weights",
    "load_backbone",
    "load_data",
    "load_run",
    "predict",
    "pretrain",
    "save_model",
    "scan_folder",
    "train",
    "train_head",
    "unfreeze_top_blocks",
]
