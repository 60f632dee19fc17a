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

# Importing tlkeras is cheap: each name below loads its module (and TensorFlow) when first
# used, so `python -m tlkeras --help` answers at once. `tl.train`, `from tlkeras import *`
# and submodules (`tl.memory`, `tl.labs.check_*`) work as if imported eagerly.
import importlib as _importlib
import sys as _sys
import types as _types

_EXPORTS = {
    "tlkeras.augment": ["Augmentation", "get_augmentation"],
    "tlkeras.backbones": ["BACKBONES", "get_backbone"],
    "tlkeras.compare": ["compare_backbones"],
    "tlkeras.config": ["PretrainConfig", "Stage", "TrainConfig"],
    "tlkeras.data": ["load_data", "sample_per_class"],
    "tlkeras.distribute": ["get_strategy"],
    "tlkeras.evaluate": ["evaluate", "most_confused", "top_losses"],
    "tlkeras.explain": ["explain", "gradcam"],
    "tlkeras.export": ["export_model"],
    "tlkeras.features": ["cache_features", "split_model"],
    "tlkeras.layers": ["Preprocess", "preprocessing_layer"],
    "tlkeras.lr_find": ["lr_find"],
    "tlkeras.model": [
        "WeightsUnavailableError",
        "block_summary",
        "build_model",
        "compile_model",
        "freeze_backbone",
        "imagenet_or_none",
        "load_backbone",
        "unfreeze_top_blocks",
    ],
    "tlkeras.plots": [
        "plot_comparison",
        "plot_confusion_matrix",
        "plot_gradcam",
        "plot_history",
        "plot_lr_find",
        "plot_per_class",
        "plot_predictions",
        "preview_augmentation",
        "plot_top_losses",
    ],
    "tlkeras.precision": ["precision_scope"],
    "tlkeras.predict": ["predict"],
    "tlkeras.pretrain": ["pretrain"],
    "tlkeras.report": ["write_report"],
    "tlkeras.runs": ["Run", "load_run"],
    "tlkeras.saving": ["save_model"],
    "tlkeras.scan": ["ScanReport", "scan_dataset"],
    "tlkeras.train": ["fine_tune", "fit_stage", "merge_histories", "train", "train_head"],
    "tlkeras.weights": ["download_weights", "list_weights"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    """Loads an exported name or a submodule (`tl.memory`) the first time it is used."""
    if name in _MODULE_OF:
        value = getattr(_importlib.import_module(_MODULE_OF[name]), name)
    elif name.isidentifier() and not name.startswith("_"):
        try:
            value = _importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(_types.ModuleType):
    """Keeps `tl.train` the function when Python binds the submodule `tlkeras.train`."""

    def __setattr__(self, name, value):
        submodule = isinstance(value, _types.ModuleType) and value.__name__ == f"tlkeras.{name}"
        if submodule and name in _MODULE_OF and hasattr(value, name):
            value = getattr(value, name)  # train, predict, evaluate, explain, lr_find...
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
