"""Generate the small image data sets shipped with tlkeras in ``data_samples/``.

Run it from the repository root::

    python data_samples/make_samples.py            # writes next to this script
    python data_samples/make_samples.py --out DIR  # writes under DIR instead

It (re)creates four folders and touches nothing else:

``digits/0/`` ... ``digits/9/``
    All 1797 real handwritten digits of the UCI "Optical Recognition of
    Handwritten Digits" data set, taken from the copy bundled with
    scikit-learn (``sklearn.datasets.load_digits``, no download). Each 8x8
    image with values 0..16 becomes an 8-bit grayscale PNG with values
    ``round(v * 255 / 16)``, upscaled to 32x32 with nearest neighbour. The
    file name holds the index in the data set, e.g. ``digit_0007.png``.

``day_night/day/<class>/`` and ``day_night/night/<class>/``
    Synthetic 64x64 RGB drawings of three vehicle classes (``bus``, ``car``,
    ``truck``) in two domains for a domain-shift lesson: bright daylight
    scenes, and dark night scenes where the vehicles are dim and show glowing
    windows and headlights, with a little sensor noise. Same classes, same
    shapes, different look: a model trained on ``day`` loses accuracy on
    ``night``.

``faces/face/`` and ``faces/not_face/``
    The 200 real 25x25 grayscale photos of scikit-image's bundled
    ``skimage.data.lfw_subset()`` (no download): 100 faces cropped from the
    *Labeled Faces in the Wild* data set and 100 patches of other natural
    photos. Each float image in [0, 1] becomes an 8-bit grayscale PNG with
    values ``round(v * 255)``, at its own 25x25 size. The file name holds the
    index in ``lfw_subset()``, e.g. ``faces/not_face/lfw_0150.png``.

``predict_examples/``
    A few loose images for trying ``predict``: some digits copied from
    ``digits/`` and one freshly drawn vehicle per class and domain (drawn from
    a separate random stream, so they are not copies of training images).

The output is deterministic: every random choice comes from a seeded
``numpy.random.Generator``, folders are walked in sorted order and the PNGs are
written without metadata, so rerunning the script with the same library
versions gives byte-identical files.
"""

from __future__ import annotations

import argparse
import colorsys
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from sklearn.datasets import load_digits

#: Folders this script owns: they are deleted and rewritten on every run.
OWNED_DIRS = ("digits", "day_night", "faces", "predict_examples")

#: Class folders of faces/, in the order of skimage.data.lfw_subset() (100 of each).
FACE_CLASSES = ("face", "not_face")

#: Vehicle classes of the day/night set, in sorted order.
VEHICLE_CLASSES = ("bus", "car", "truck")

#: Domains of the day/night set.
DOMAINS = ("day", "night")

#: Images per class per domain.
IMAGES_PER_CLASS = 60

#: Side of the day/night images, in pixels.
IMAGE_SIZE = 64

#: Drawing is done at this multiple of IMAGE_SIZE, then shrunk (anti-aliasing).
SUPERSAMPLE = 4

#: Side of the exported digit images (8x8 upscaled by an integer factor).
DIGIT_SIZE = 32

#: Digits copied into predict_examples/ (first image of each of these labels).
PREDICT_DIGITS = (0, 3, 7)

#: Standard deviation of the grey grain added to night images (0..255 scale).
NIGHT_NOISE_STD = 3.0

#: Base seed of every random stream in this script.
SEED = 20240601


def save_png(image: Image.Image, path: Path) -> None:
    """Save an image as a PNG with no metadata, so reruns give identical bytes.

    Args:
        image: The image to write (mode ``L`` or ``RGB``).
        path: Destination file; its parent folders are created if needed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh image without .info, so no text chunks, gamma or dpi get copied.
    clean = Image.frombytes(image.mode, image.size, image.tobytes())
    clean.save(path, format="PNG", optimize=True)


# --------------------------------------------------------------------------- digits


def digit_to_image(values: np.ndarray) -> Image.Image:
    """Turn one 8x8 scikit-learn digit (values 0..16) into a 32x32 grayscale image.

    Args:
        values: Array of shape ``(8, 8)`` with values in ``0..16``.

    Returns:
        A mode ``L`` image of ``DIGIT_SIZE`` x ``DIGIT_SIZE`` pixels, values
        ``round(v * 255 / 16)``, upscaled with nearest neighbour.
    """
    gray = np.floor(values.astype(np.float64) * 255.0 / 16.0 + 0.5).astype(np.uint8)
    factor = DIGIT_SIZE // gray.shape[0]
    big = np.repeat(np.repeat(gray, factor, axis=0), factor, axis=1)
    return Image.fromarray(big, mode="L")


def write_digits(root: Path) -> dict[int, list[Path]]:
    """Export every scikit-learn digit as ``digits/<label>/digit_<index>.png``.

    Args:
        root: Output root; files go under ``root / "digits"``.

    Returns:
        For each label 0..9, the written paths in data-set order.
    """
    data = load_digits()
    written: dict[int, list[Path]] = {label: [] for label in range(10)}
    for index, (values, label) in enumerate(zip(data.images, data.target, strict=True)):
        path = root / "digits" / str(int(label)) / f"digit_{index:04d}.png"
        save_png(digit_to_image(values), path)
        written[int(label)].append(path)
    return written


# ------------------------------------------------------------------------ day/night


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    """Convert HSV in ``[0, 1]`` to an 8-bit RGB tuple."""
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return round(r * 255), round(g * 255), round(b * 255)


def _scale(color: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    """Multiply an RGB colour by ``factor`` (clipped to 0..255)."""
    return tuple(int(min(255, max(0, round(c * factor)))) for c in color)  # type: ignore[return-value]


def _jitter(rng: np.random.Generator, color: tuple[int, int, int], amount: int) -> tuple:
    """Add a uniform random offset in ``[-amount, amount]`` to each channel."""
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in color)


def vehicle_parts(kind: str, rng: np.random.Generator) -> dict:
    """Lay out one vehicle of a class with random size and position.

    Coordinates are in output pixels (0..IMAGE_SIZE) for a vehicle facing
    right; the caller may mirror the finished image.

    Args:
        kind: One of ``VEHICLE_CLASSES``.
        rng: Random generator for the jitter.

    Returns:
        A dict with ``bodies`` (list of boxes, the painted body parts),
        ``windows`` (list of boxes), ``wheels`` (list of ``(cx, cy, r)``),
        ``front`` (box of the headlight) and ``back`` (box of the tail light).
    """
    s = rng.uniform(0.85, 1.1)  # overall size
    ground = rng.uniform(52.0, 60.0)  # y where the wheels touch the road
    if kind == "car":
        length, height, r = 38 * s, 10 * s, 4.2 * s
    elif kind == "bus":
        length, height, r = 52 * s, 24 * s, 4.2 * s
    elif kind == "truck":
        length, height, r = 48 * s, 23 * s, 4.6 * s
    else:
        raise ValueError(f"unknown vehicle class {kind!r}")
    length = min(length, IMAGE_SIZE - 6)
    x0 = rng.uniform(3.0, IMAGE_SIZE - 3.0 - length)
    x1 = x0 + length
    wheel_y = ground - r
    bottom = wheel_y + 0.4 * r
    top = bottom - height
    parts: dict = {"bodies": [], "windows": [], "wheels": []}

    if kind == "car":
        # Low body plus a cabin (trapezoid) with two side windows.
        parts["bodies"].append(("rect", (x0, top, x1, bottom)))
        c0, c1 = x0 + 0.22 * length, x0 + 0.74 * length
        ctop = top - 8.5 * s
        parts["bodies"].append(
            ("poly", [(c0, top), (c0 + 3 * s, ctop), (c1 - 5 * s, ctop), (c1, top)])
        )
        mid = (c0 + c1) / 2
        parts["windows"].append((c0 + 3.2 * s, ctop + 1.8 * s, mid - 0.8 * s, top - 0.6 * s))
        parts["windows"].append((mid + 0.8 * s, ctop + 1.8 * s, c1 - 4.6 * s, top - 0.6 * s))
        parts["wheels"] += [(x0 + 0.2 * length, wheel_y, r), (x0 + 0.8 * length, wheel_y, r)]
    elif kind == "bus":
        # Long tall box with a row of windows and a big windscreen at the front.
        parts["bodies"].append(("rect", (x0, top, x1, bottom)))
        n = int(rng.integers(4, 6))
        wtop, wbot = top + 3 * s, top + 10.5 * s
        span = (x1 - 7 * s) - (x0 + 2.5 * s)
        step = span / n
        for i in range(n):
            a = x0 + 2.5 * s + i * step
            parts["windows"].append((a, wtop, a + step - 1.8 * s, wbot))
        parts["windows"].append((x1 - 5 * s, wtop, x1 - 1.2 * s, top + 13 * s))
        parts["wheels"] += [(x0 + 0.18 * length, wheel_y, r), (x0 + 0.8 * length, wheel_y, r)]
    else:
        # Tall cargo box at the back, a lower cab with one window at the front.
        box_len = 0.68 * length
        parts["bodies"].append(("rect", (x0, top, x0 + box_len, bottom)))
        cab0 = x0 + box_len + 1.2 * s
        ctop = top + 0.35 * height
        parts["bodies"].append(("rect", (cab0, ctop, x1, bottom)))
        parts["windows"].append(
            (cab0 + 0.45 * (x1 - cab0), ctop + 2 * s, x1 - 1.2 * s, ctop + 7 * s)
        )
        parts["wheels"] += [
            (x0 + 0.2 * box_len, wheel_y, r),
            (x0 + 0.2 * box_len + 2.15 * r, wheel_y, r),
            ((cab0 + x1) / 2 + 0.5 * s, wheel_y, r),
        ]
    parts["front"] = (x1 - 2.6 * s, bottom - 5 * s, x1 + 0.4 * s, bottom - 2.2 * s)
    parts["back"] = (x0 - 0.4 * s, bottom - 5 * s, x0 + 1.8 * s, bottom - 2.2 * s)
    return parts


def _big(box: tuple[float, ...]) -> list[float]:
    """Scale output-pixel coordinates to the supersampled canvas."""
    return [v * SUPERSAMPLE for v in box]


def _background(rng: np.random.Generator, domain: str) -> np.ndarray:
    """Paint sky and road as a float RGB array of the supersampled canvas size.

    Args:
        rng: Random generator for the colour jitter.
        domain: ``"day"`` or ``"night"``.

    Returns:
        Float array of shape ``(H, W, 3)`` with values in 0..255.
    """
    size = IMAGE_SIZE * SUPERSAMPLE
    if domain == "day":
        if rng.random() < 0.7:  # clear blue sky
            sky_top = np.array(_jitter(rng, (110, 170, 230), 15), float)
            sky_low = np.array(_jitter(rng, (185, 215, 240), 12), float)
        else:  # bright overcast grey
            g = int(rng.integers(170, 215))
            sky_top = np.array(_jitter(rng, (g, g + 5, g + 12), 6), float)
            sky_low = sky_top + 25
        road = np.array(_jitter(rng, (135, 135, 140), 15), float)
    else:
        sky_top = np.array(_jitter(rng, (6, 8, 22), 5), float)
        sky_low = np.array(_jitter(rng, (18, 20, 38), 6), float)
        road = np.array(_jitter(rng, (24, 24, 28), 6), float)
    horizon = int(rng.uniform(0.62, 0.72) * size)
    t = np.linspace(0.0, 1.0, horizon)[:, None]
    canvas = np.empty((size, size, 3), float)
    canvas[:horizon] = (sky_top * (1 - t) + sky_low * t)[:, None, :]
    canvas[horizon:] = road
    return np.clip(canvas, 0, 255)


def draw_vehicle(kind: str, domain: str, rng: np.random.Generator) -> Image.Image:
    """Draw one vehicle of class ``kind`` in the look of ``domain``.

    Args:
        kind: One of ``VEHICLE_CLASSES``.
        domain: ``"day"`` (bright, saturated) or ``"night"`` (dark, glowing
            windows and lights, a little noise).
        rng: Random generator that decides every jitter.

    Returns:
        A ``IMAGE_SIZE`` x ``IMAGE_SIZE`` RGB image.
    """
    night = domain == "night"
    base = Image.fromarray(_background(rng, domain).astype(np.uint8), mode="RGB")
    parts = vehicle_parts(kind, rng)
    body = _hsv(rng.random(), rng.uniform(0.7, 1.0), rng.uniform(0.75, 0.95))
    size = IMAGE_SIZE * SUPERSAMPLE
    glow = Image.new("RGB", (size, size), (0, 0, 0))
    draw, gdraw = ImageDraw.Draw(base), ImageDraw.Draw(glow)

    body_color = _scale(body, rng.uniform(0.28, 0.4)) if night else body
    outline = _scale(body, 0.15 if night else 0.55)
    for shape, coords in parts["bodies"]:
        if shape == "rect":
            draw.rectangle(_big(coords), fill=body_color, outline=outline, width=SUPERSAMPLE)
        else:
            pts = [(x * SUPERSAMPLE, y * SUPERSAMPLE) for x, y in coords]
            draw.polygon(pts, fill=body_color, outline=outline, width=SUPERSAMPLE)

    for win in parts["windows"]:
        if not night:
            draw.rectangle(_big(win), fill=_jitter(rng, (200, 228, 245), 12))
        elif rng.random() < 0.85:  # lit window: warm yellow, plus a soft glow
            lit = _jitter(rng, (250, 205, 90), 8)
            draw.rectangle(_big(win), fill=_scale(lit, rng.uniform(0.75, 1.0)))
            gdraw.rectangle(_big(win), fill=_scale(lit, 0.6))
        else:  # dark window
            draw.rectangle(_big(win), fill=(12, 12, 18))

    tyre = (30, 30, 32) if not night else (10, 10, 12)
    hub = (170, 170, 175) if not night else (45, 45, 50)
    for cx, cy, r in parts["wheels"]:
        draw.ellipse(_big((cx - r, cy - r, cx + r, cy + r)), fill=tyre)
        h = 0.45 * r
        draw.ellipse(_big((cx - h, cy - h, cx + h, cy + h)), fill=hub)

    if night:
        draw.ellipse(_big(parts["front"]), fill=(255, 240, 150))
        fx0, fy0, fx1, fy1 = parts["front"]
        gdraw.ellipse(_big((fx0 - 3, fy0 - 3, fx1 + 5, fy1 + 3)), fill=(255, 225, 110))
        draw.rectangle(_big(parts["back"]), fill=(230, 30, 25))
        gdraw.rectangle(_big(parts["back"]), fill=(150, 15, 10))
    else:
        draw.ellipse(_big(parts["front"]), fill=(255, 250, 215))
        draw.rectangle(_big(parts["back"]), fill=(200, 40, 35))

    small = base.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)
    pixels = np.asarray(small, dtype=np.float64)
    if night:
        halo = glow.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)
        halo = halo.filter(ImageFilter.GaussianBlur(radius=2.5))
        pixels = pixels + 1.3 * np.asarray(halo, dtype=np.float64)
        # Grey sensor grain in 2x2 blocks: visible, but cheap to store as PNG.
        grain = rng.normal(0.0, NIGHT_NOISE_STD, size=(IMAGE_SIZE // 2, IMAGE_SIZE // 2, 1))
        pixels = pixels + np.repeat(np.repeat(grain, 2, axis=0), 2, axis=1)
    image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode="RGB")
    if rng.random() < 0.5:  # face left or right
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return image


def write_day_night(root: Path, per_class: int = IMAGES_PER_CLASS) -> dict[str, int]:
    """Draw the day/night vehicle set under ``root / "day_night"``.

    Every (domain, class) pair has its own seeded random stream, so the images
    do not depend on the order in which the pairs are drawn.

    Args:
        root: Output root.
        per_class: Images per class per domain.

    Returns:
        Number of images written per ``"<domain>/<class>"``.
    """
    counts: dict[str, int] = {}
    for d, domain in enumerate(DOMAINS):
        for c, kind in enumerate(VEHICLE_CLASSES):
            rng = np.random.default_rng([SEED, 1, d, c])
            folder = root / "day_night" / domain / kind
            for i in range(per_class):
                save_png(draw_vehicle(kind, domain, rng), folder / f"{domain}_{kind}_{i:03d}.png")
            counts[f"{domain}/{kind}"] = per_class
    return counts


# ------------------------------------------------------------------ faces


def write_faces(root: Path) -> dict[str, int]:
    """Write ``root / "faces" / {face,not_face}`` from scikit-image's ``lfw_subset``.

    Args:
        root: Output root.

    Returns:
        Images written per class.
    """
    from skimage.data import lfw_subset  # Bundled with scikit-image; no download.

    images = lfw_subset()
    counts = {}
    for index, values in enumerate(images):
        kind = FACE_CLASSES[0] if index < len(images) // 2 else FACE_CLASSES[1]
        folder = root / "faces" / kind
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.floor(np.asarray(values) * 255 + 0.5).astype(np.uint8)
        save_png(Image.fromarray(pixels, mode="L"), folder / f"lfw_{index:04d}.png")
        counts[kind] = counts.get(kind, 0) + 1
    return counts


# ------------------------------------------------------------------ predict examples


def write_predict_examples(root: Path, digits: dict[int, list[Path]]) -> list[Path]:
    """Fill ``root / "predict_examples"`` with a few loose images to classify.

    Args:
        root: Output root.
        digits: Output of :func:`write_digits` (paths per label).

    Returns:
        The written paths, sorted.
    """
    folder = root / "predict_examples"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for label in PREDICT_DIGITS:
        dest = folder / f"digit_{label}.png"
        shutil.copyfile(digits[label][0], dest)
        written.append(dest)
    for kind in FACE_CLASSES:  # The last image of each class.
        dest = folder / f"{kind}.png"
        shutil.copyfile(sorted((root / "faces" / kind).glob("*.png"))[-1], dest)
        written.append(dest)
    for d, domain in enumerate(DOMAINS):
        for c, kind in enumerate(VEHICLE_CLASSES):
            rng = np.random.default_rng([SEED, 2, d, c])  # not a training-set stream
            dest = folder / f"{domain}_{kind}.png"
            save_png(draw_vehicle(kind, domain, rng), dest)
            written.append(dest)
    return sorted(written)


def main(out_root: str | Path | None = None) -> dict[str, int]:
    """(Re)create ``digits/``, ``day_night/``, ``faces/`` and ``predict_examples/``.

    Only those four folders under ``out_root`` are deleted and rewritten;
    any other file there (such as ``README.md`` or this script) is left alone.

    Args:
        out_root: Folder to write into. Defaults to the folder of this script.

    Returns:
        Image counts: ``"digits"``, ``"day_night"``, ``"faces"`` and ``"predict_examples"``.
    """
    root = Path(out_root) if out_root is not None else Path(__file__).resolve().parent
    root.mkdir(parents=True, exist_ok=True)
    for name in OWNED_DIRS:
        target = root / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
    digits = write_digits(root)
    day_night = write_day_night(root)
    faces = write_faces(root)
    examples = write_predict_examples(root, digits)
    return {
        "digits": sum(len(paths) for paths in digits.values()),
        "day_night": sum(day_night.values()),
        "faces": sum(faces.values()),
        "predict_examples": len(examples),
    }


def _parse_args() -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output root (default: the folder holding this script)",
    )
    return parser.parse_args()


if __name__ == "__main__":
    counts = main(_parse_args().out)
    print(", ".join(f"{name}: {n} images" for name, n in counts.items()))
