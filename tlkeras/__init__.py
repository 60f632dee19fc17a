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

The same two stages, faster: given the `Data` itself, the frozen layers run once and the
rest trains on their cached output:

    history = tl.train_head(model, data, epochs=5)
    history = tl.fine_tune(model, data, epochs=3, unfreeze=1, initial_epoch=5)

Or all at once, writing a run folder that `load_run`, `predict` and `evaluate` use:

    run = tl.train(tl.TrainConfig("data_samples/digits", out="runs/digits", image_size=32))
    tl.predict(tl.load_run("runs/digits"), ["data_samples/predict_examples/digit_3.png"])

On several GPUs pass `strategy="auto"` (the default) or `"mirrored"` to `TrainConfig`; on
several machines `"multiworker"` with `TF_CONFIG` set. To ship, `tl.export_model(run,
format="tflite-int8")` writes a phone-ready model and its labels file.
Pretrain a backbone on your own source images and transfer from it, or provision ImageNet
weights for offline machines:

    tl.pretrain(tl.PretrainConfig("source/", out="pretrained/src", backbone="mobilenet_v2",
                                  image_size=32))
    model = tl.build_model("mobilenet_v2", num_classes=5, image_size=32,
                           weights="pretrained/src")
    tl.download_weights(["vgg16"], weights_dir="/srv/tlkeras-weights")
"""

__version__ = "0.1.0"

from tlkeras import labs  # noqa: F401  (tl.labs.check_*: the teaching-lab checkers)
from tlkeras.augment import Augmentation, get_augmentation
from tlkeras.backbones import BACKBONES, get_backbone
from tlkeras.data import load_data, sample_per_class
from tlkeras.distribute import get_strategy
from tlkeras.evaluate import evaluate
from tlkeras.export import export_model
from tlkeras.features import cache_features, split_model
from tlkeras.layers import Preprocess
from tlkeras.model import (
    WeightsUnavailableError,
    block_summary,
    build_model,
    compile_model,
    freeze_backbone,
    imagenet_or_none,
    load_backbone,
    unfreeze_top_blocks,
)
from tlkeras.precision import precision_scope
from tlkeras.predict import predict
from tlkeras.pretrain import PretrainConfig, pretrain
from tlkeras.runs import Run, load_run
from tlkeras.saving import save_model
from tlkeras.scan import ScanReport, scan_dataset
from tlkeras.train import Stage, TrainConfig, fine_tune, merge_histories, train, train_head
from tlkeras.weights import download_weights, list_weights

__all__ = [
    "block_summary",
    "imagenet_or_none",
    "merge_histories",
    "sample_per_class",
    "Augmentation",
    "BACKBONES",
    "Preprocess",
    "PretrainConfig",
    "Run",
    "ScanReport",
    "TrainConfig",
    "WeightsUnavailableError",
    "build_model",
    "cache_features",
    "compile_model",
    "download_weights",
    "evaluate",
    "export_model",
    "fine_tune",
    "freeze_backbone",
    "get_augmentation",
    "get_backbone",
    "get_strategy",
    "list_weights",
    "load_backbone",
    "load_data",
    "load_run",
    "precision_scope",
    "predict",
    "preview_augmentation",
    "pretrain",
    "save_model",
    "scan_dataset",
    "split_model",
    "train",
    "train_head",
    "Stage",
    "unfreeze_top_blocks",
]

# Seeing what the model learned: training curves, evaluation reports, Grad-CAM, the
# learning-rate finder and backbone comparison. Every plot_* returns a matplotlib Figure
# (shown inline in notebooks) and saves a PNG when given path=.
from tlkeras.compare import compare_backbones  # noqa: E402
from tlkeras.evaluate import most_confused, top_losses  # noqa: E402
from tlkeras.explain import explain, gradcam  # noqa: E402
from tlkeras.lr_find import lr_find  # noqa: E402
from tlkeras.plots import (  # noqa: E402
    plot_comparison,
    plot_confusion_matrix,
    plot_gradcam,
    plot_history,
    plot_lr_find,
    plot_per_class,
    plot_predictions,
    plot_top_losses,
    preview_augmentation,
)
from tlkeras.report import write_report  # noqa: E402

__all__ += [
    "compare_backbones",
    "explain",
    "gradcam",
    "lr_find",
    "most_confused",
    "plot_comparison",
    "plot_confusion_matrix",
    "plot_gradcam",
    "plot_history",
    "plot_lr_find",
    "plot_per_class",
    "plot_predictions",
    "plot_top_losses",
    "top_losses",
    "write_report",
]
