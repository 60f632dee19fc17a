"""Which backbones convert to each TFLite form, and how big they are.

    python benchmarks/export_backbones.py [--image-size 96] [--backbones vgg16 resnet50 ...]

Builds every backbone with its head (`weights=None`, 2 classes; conversion does not depend
on the weight values), converts it to float, dynamic-range and full-int8 TFLite (int8
calibrated on 8 random images), runs each in the TFLite interpreter next to Keras on 8
other random images, and prints the size and largest probability difference, or the
converter's error. Random weights make the int8 differences larger than a trained model's.
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import tlkeras as tl  # noqa: E402
from tlkeras import export  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--backbones", nargs="*", default=sorted(tl.BACKBONES))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'backbone':16} {'form':8} {'size MB':>8} {'convert s':>9}  max |diff| / error")
    for name in args.backbones:
        size = max(args.image_size, tl.get_backbone(name).min_size)
        model = tl.build_model(name, num_classes=2, image_size=size, weights=None, dense_units=0)
        calibration = rng.uniform(0, 255, size=(8, size, size, 3)).astype("uint8")
        images = rng.uniform(0, 255, size=(8, size, size, 3)).astype("uint8")
        expected = model.predict(images.astype("float32"), verbose=0)
        for quantization in ("none", "dynamic", "int8"):
            start = time.perf_counter()
            try:
                flatbuffer = export.convert_to_tflite(
                    model, quantization=quantization, calibration_images=calibration
                )
            except RuntimeError as error:
                print(f"{name:16} {quantization:8} {'-':>8} {'-':>9}  {str(error)[:150]}")
                continue
            seconds = time.perf_counter() - start
            with tempfile.TemporaryDirectory() as folder:
                path = os.path.join(folder, "model.tflite")
                with open(path, "wb") as f:
                    f.write(flatbuffer)
                difference = np.abs(export.predict_tflite(path, images) - expected).max()
            print(
                f"{name:16} {quantization:8} {len(flatbuffer) / 1e6:8.2f} {seconds:9.1f}  "
                f"{difference:.2e}",
                flush=True,
            )


if __name__ == "__main__":
    main()
