"""Read image files into RGB ``uint8`` arrays, the same way everywhere.

Training, evaluation and prediction all read pictures through this module, so a given file
always turns into exactly the same pixels whichever path reads it. Only numpy and Pillow are
used here (no TensorFlow), so the functions are cheap to import and safe to call from worker
threads.

What :func:`load_image` does to every file, in this order:

1. Open it with Pillow (any format Pillow identifies; animated GIF/WebP/TIFF give their first
   frame). Pillow's decompression-bomb guard (``PIL.Image.MAX_IMAGE_PIXELS``) stays active.
2. For JPEG files much larger than the target size, ask the decoder for a reduced-size decode
   (``Image.draft``), never smaller than twice the target size.
3. Fully decode the pixels, so truncated or corrupt files fail here with
   :class:`ImageReadError` rather than later.
4. Apply the EXIF orientation tag (``PIL.ImageOps.exif_transpose``), so rotated phone photos
   come out upright.
5. Convert to 8-bit RGB:

   * grayscale (``L``) and 1-bit (``1``) images are replicated to three channels;
   * 16-bit images (``I;16*``, and ``I`` as Pillow uses for 16-bit PGM/PNG/TIFF) are scaled
     from 0..65535 to 0..255 with rounding (``round(v / 257)``), not clipped; ``I`` values
     outside 0..65535 are clipped first;
   * float images (``F``) whose finite values are all <= 1.0 are taken to be on a 0..1 scale
     and multiplied by 255; otherwise they are taken to be on Pillow's 0..255 scale. Values
     are then rounded and clipped to 0..255 (NaN becomes 0);
   * anything with transparency (``RGBA``, ``LA``, ``PA``, palette or grayscale images with a
     transparency key) is composited over a **white** background, so fully transparent pixels
     become white (255, 255, 255);
   * ``CMYK`` (including Adobe-inverted CMYK JPEGs) uses Pillow's CMYK-to-RGB conversion;
     embedded ICC profiles are ignored, as in Keras' and TensorFlow's own image decoders;
   * every other mode (``P``, ``YCbCr``, ``LAB``, ``HSV``, ...) uses ``Image.convert("RGB")``.

6. Resize to the requested size with Pillow's bilinear filter (``Image.Resampling.BILINEAR``).
   The aspect ratio is not preserved, as in ``keras.utils.image_dataset_from_directory`` by
   default. Pillow's bilinear filter widens its support when shrinking (it antialiases), so
   the pixels differ slightly from ``tf.image.resize``; use this module on every path.

Example:

>>> from tlkeras.images import load_image
>>> array = load_image("cats/tabby.jpg", image_size=(224, 224))  # doctest: +SKIP
>>> array.shape, array.dtype  # doctest: +SKIP
((224, 224, 3), dtype('uint8'))
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import numbers
import os
import struct
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError, features

from tlkeras.errors import DataError, MissingPathError, UsageError, UsageTypeError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageHeader",
    "ImageReadError",
    "NotAnImageError",
    "codec_hint",
    "has_image_extension",
    "load_image",
    "load_images",
    "read_image_header",
    "verify_image",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".webp",
    ".tif",
    ".tiff",
)
"""Lower-case file extensions treated as images when scanning folders.

JPEG, PNG, BMP, GIF, WebP and TIFF are all decoded by Pillow (WebP needs a Pillow build with
libwebp, which the official wheels include). TIFF is included because Pillow reads the common
TIFF flavours (8/16-bit, RGB, grayscale, palette, CMYK, float); exotic ones (e.g. some
multi-sample scientific TIFFs) may still fail with :class:`ImageReadError`.

AVIF (`.avif`) is added when Pillow reads it (11.3 and later, built with libavif as the
official wheels are); HEIC/HEIF (`.heic`, `.heif`: iPhone photos) when the optional
`pillow-heif` plugin is installed (`pip install "tlkeras[heif]"`), which is then registered
with Pillow. Without the reader, a folder scan lists such files as unsupported, and reading
one fails with an :class:`ImageReadError` that names what to install (`codec_hint`).
"""

#: What to install to read these formats, when the installed Pillow cannot.
CODEC_HINTS = {
    ".avif": (
        "AVIF needs Pillow 11.3 or later built with libavif (the official wheels are): "
        'run `pip install -U "pillow>=11.3"`, or `pip install "tlkeras[heif]"`.'
    ),
    ".heic": 'HEIC/HEIF needs the pillow-heif plugin: run `pip install "tlkeras[heif]"`.',
    ".heif": 'HEIC/HEIF needs the pillow-heif plugin: run `pip install "tlkeras[heif]"`.',
}

with contextlib.suppress(ImportError):  # The optional HEIC/HEIF reader, when installed.
    from pillow_heif import register_heif_opener

    register_heif_opener()
    IMAGE_EXTENSIONS += (".heic", ".heif")
if features.check_module("avif"):
    IMAGE_EXTENSIONS += (".avif",)

_EXIF_ORIENTATION_TAG = 0x0112
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})  # orientations that swap width/height
_DRAFT_FACTOR = 2  # a JPEG draft decode is never smaller than this multiple of the target

# Exceptions Pillow raises for bad, truncated or unsupported files (and OSError for I/O).
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    KeyError,
)

_DEFAULT_HINT = (
    "Check that the file is a complete image (open it in an image viewer), then re-export "
    "or remove it; `tlkeras.images.verify_image` can scan a whole folder for bad files."
)
_BOMB_HINT = (
    "Pillow refuses images above `PIL.Image.MAX_IMAGE_PIXELS` pixels to guard against "
    "decompression-bomb attacks. If you trust this file, raise the limit before loading "
    "(e.g. `PIL.Image.MAX_IMAGE_PIXELS = 400_000_000`) or downscale the file on disk."
)


class ImageReadError(DataError):
    """A file could not be read as an image.

    Attributes:
        path: The offending path, as a string.
        reason: Short description of what went wrong, e.g. ``"the file is truncated (...)"``.
        hint: How to fix it.

    Example:

    >>> try:
    ...     load_image("notes.jpg", 224)  # doctest: +SKIP
    ... except ImageReadError as error:
    ...     print(error.reason)  # doctest: +SKIP
    not an image, or a format Pillow cannot identify (cannot identify image file)
    """

    def __init__(self, path: str | os.PathLike[str], reason: str, hint: str | None = None):
        self.path = os.fspath(path)
        self.reason = reason
        self.hint = _DEFAULT_HINT if hint is None else hint
        super().__init__(
            f"Could not read image file: {self.reason}. Expected a complete image file that "
            f"Pillow can decode (e.g. one of {', '.join(IMAGE_EXTENSIONS)}). {self.hint} "
            f"Received: path='{self.path}'"
        )

    def __reduce__(self):
        return (type(self), (self.path, self.reason, self.hint))


class NotAnImageError(UsageError, ImageReadError):
    """A file that is not an image Pillow can read at all: a text file, a format with no
    reader installed, or an image too large to decode safely. It is what the user gave, so
    the command line exits 2 (a damaged image, an `ImageReadError`, exits 3)."""


class ImageHeader(NamedTuple):
    """Cheap facts about an image file, read without decoding its pixels.

    Attributes:
        format: Pillow's format name, e.g. ``"JPEG"``, ``"PNG"``.
        mode: Pillow's pixel mode, e.g. ``"RGB"``, ``"L"``, ``"I;16"``.
        height: Stored height in pixels (before any EXIF orientation is applied).
        width: Stored width in pixels (before any EXIF orientation is applied).
    """

    format: str
    mode: str
    height: int
    width: int


def codec_hint(path: str | os.PathLike[str]) -> str | None:
    """What to install to read this file's format, or None when Pillow can read it.

    Args:
        path: File path as a `str` or `os.PathLike`.

    Returns:
        For an `.avif`, `.heic` or `.heif` file that the installed Pillow (and plugins)
        cannot open, a sentence naming the package to install; otherwise None.

    Example:

    >>> codec_hint("IMG_0001.HEIC")  # without pillow-heif  # doctest: +SKIP
    'HEIC/HEIF needs the pillow-heif plugin: run `pip install "tlkeras[heif]"`.'
    """
    extension = os.path.splitext(_check_path(path))[1].lower()
    if extension not in CODEC_HINTS:
        return None
    Image.init()
    return None if extension in Image.registered_extensions() else CODEC_HINTS[extension]


def has_image_extension(path: str | os.PathLike[str]) -> bool:
    """Returns whether `path` ends with one of `IMAGE_EXTENSIONS` (case-insensitive).

    Args:
        path: File path as a `str` or `os.PathLike`.

    Returns:
        `True` for e.g. ``"a/b.JPG"``, `False` for ``"a/b.txt"``.

    Example:

    >>> has_image_extension("holiday/IMG_001.JPG")
    True
    """
    return os.path.splitext(_check_path(path))[1].lower() in IMAGE_EXTENSIONS


def read_image_header(path: str | os.PathLike[str]) -> ImageHeader:
    """Reads an image's format, mode and size without decoding the pixels.

    This only parses the file header, so it is fast enough to scan large folders. It does not
    detect truncated or corrupt pixel data; use `verify_image` for that.

    Args:
        path: File path as a `str` or `os.PathLike`.

    Returns:
        An `ImageHeader` ``(format, mode, height, width)``. The size is the stored size,
        before any EXIF orientation is applied.

    Raises:
        FileNotFoundError: If `path` does not exist.
        ImageReadError: If Pillow cannot identify the file as an image, or the image is larger
            than ``PIL.Image.MAX_IMAGE_PIXELS`` allows.
        TypeError: If `path` is not a `str` or `os.PathLike`.

    Example:

    >>> read_image_header("cats/tabby.jpg")  # doctest: +SKIP
    ImageHeader(format='JPEG', mode='RGB', height=480, width=640)
    """
    path_str = _check_path(path)
    with _reading(path_str), Image.open(path_str) as image:
        width, height = image.size
        return ImageHeader(str(image.format), image.mode, int(height), int(width))


def verify_image(path: str | os.PathLike[str]) -> str | None:
    """Fully decodes an image and reports what is wrong with it, without raising.

    Meant for a pre-scan of a dataset folder: collect the non-`None` results to list every
    bad file at once instead of failing on the first one during training.

    Args:
        path: File path as a `str` or `os.PathLike`.

    Returns:
        `None` when the file decodes exactly as `load_image` would read it, otherwise a short
        reason string such as ``"the file is truncated (image file is truncated)"`` or
        ``"file not found"``.

    Raises:
        TypeError: If `path` is not a `str` or `os.PathLike` (a programming mistake, not a bad
            file).

    Example:

    >>> bad = {p: r for p in paths if (r := verify_image(p)) is not None}  # doctest: +SKIP
    """
    path_str = _check_path(path)
    try:
        with _reading(path_str), Image.open(path_str) as image:
            image.load()
            _to_rgb(_exif_oriented(image))
    except FileNotFoundError:
        return "file not found"
    except ImageReadError as error:
        return error.reason
    return None


def load_image(path: str | os.PathLike[str], image_size: int | tuple[int, int]) -> np.ndarray:
    """Reads one image file as an RGB ``uint8`` array of the requested size.

    See the module docstring for the exact conversion rules. In short: EXIF orientation is
    applied; transparent pixels are composited over white; 16-bit images are scaled (not
    clipped) to 8 bits; the result is resized with Pillow's bilinear filter to exactly
    `image_size` without preserving the aspect ratio.

    Args:
        path: File path as a `str` or `os.PathLike` (spaces and non-ASCII characters are fine).
        image_size: Output size, either an `int` for a square image or a ``(height, width)``
            tuple, as in ``keras.utils.image_dataset_from_directory``.

    Returns:
        A writable, C-contiguous `np.ndarray` of shape ``(height, width, 3)`` and dtype
        ``uint8`` holding RGB values in 0..255.

    Raises:
        FileNotFoundError: If `path` does not exist.
        ImageReadError: If the file is not an image, is truncated or corrupt, uses an
            unsupported pixel mode, or exceeds ``PIL.Image.MAX_IMAGE_PIXELS``.
        TypeError: If `path` or `image_size` has the wrong type.
        ValueError: If `image_size` is not positive.

    Example:

    >>> array = load_image("cats/tabby.jpg", image_size=(224, 224))  # doctest: +SKIP
    >>> array.shape, array.dtype  # doctest: +SKIP
    ((224, 224, 3), dtype('uint8'))
    """
    height, width = _check_image_size(image_size)
    path_str = _check_path(path)
    with _reading(path_str), Image.open(path_str) as image:
        _draft_jpeg(image, height, width)
        image.load()
        rgb = _to_rgb(_exif_oriented(image))
        if rgb.size != (width, height):
            rgb = rgb.resize((width, height), Image.Resampling.BILINEAR)
        return np.array(rgb, dtype=np.uint8)


def load_images(
    paths: Iterable[str | os.PathLike[str]],
    image_size: int | tuple[int, int],
    num_workers: int | None = None,
) -> np.ndarray:
    """Reads many image files in parallel into one ``(N, height, width, 3)`` array.

    Each file is read exactly like `load_image`. Decoding runs in a
    `concurrent.futures.ThreadPoolExecutor`; Pillow releases the GIL while decoding and
    resizing, so threads give a real speed-up. The output keeps the order of `paths`.

    Args:
        paths: Iterable of file paths (`str` or `os.PathLike`). A single path is rejected;
            wrap it in a list.
        image_size: An `int` for square images or a ``(height, width)`` tuple.
        num_workers: Number of decoding threads. `None` uses the number of CPUs (at most 32
            and at most the number of paths); ``1`` decodes sequentially in the calling thread.

    Returns:
        A `np.ndarray` of shape ``(len(paths), height, width, 3)`` and dtype ``uint8``.
        Memory is ``N * height * width * 3`` bytes, so batch very large datasets yourself.

    Raises:
        FileNotFoundError: For the first missing file, in input order.
        ImageReadError: For the first unreadable file, in input order; its message contains
            the path.
        TypeError: If `paths`, a path, `image_size` or `num_workers` has the wrong type.
        ValueError: If `image_size` or `num_workers` is not positive.

    Example:

    >>> batch = load_images(["a.jpg", "b.png"], image_size=224)  # doctest: +SKIP
    >>> batch.shape  # doctest: +SKIP
    (2, 224, 224, 3)
    """
    if isinstance(paths, (str, bytes, os.PathLike)):
        raise UsageTypeError(
            "`paths` must be an iterable of file paths, not a single path. Expected e.g. "
            "['a.jpg', 'b.png']; wrap a single path in a list or call `load_image`. "
            f"Received: paths={paths!r}"
        )
    try:
        path_list = [_check_path(path, name=f"paths[{index}]") for index, path in enumerate(paths)]
    except TypeError as error:
        if "paths[" in str(error):
            raise
        raise UsageTypeError(
            "`paths` must be an iterable of file paths. Expected e.g. ['a.jpg', 'b.png']. "
            f"Received: paths={paths!r}"
        ) from error
    height, width = _check_image_size(image_size)
    workers = _check_num_workers(num_workers, len(path_list))

    output = np.empty((len(path_list), height, width, 3), dtype=np.uint8)

    def fill(index: int) -> None:
        output[index] = load_image(path_list[index], (height, width))

    if workers <= 1:
        for index in range(len(path_list)):
            fill(index)
        return output

    with concurrent.futures.ThreadPoolExecutor(
        max_workers=workers, thread_name_prefix="tlkeras-images"
    ) as executor:
        futures = [executor.submit(fill, index) for index in range(len(path_list))]
        try:
            for future in futures:  # in input order, so the first bad file is reported
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return output


# --------------------------------------------------------------------------------------------
# Argument checks.


def _check_path(path: object, name: str = "path") -> str:
    """Returns `path` as a `str`, or raises TypeError/ValueError for unusable values."""
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise UsageTypeError(
            f"`{name}` must be a file path given as a `str` or `pathlib.Path`. "
            f"Expected e.g. 'images/cat.jpg'. Received: {name}={path!r}"
        )
    path_str = os.fspath(path)
    if not isinstance(path_str, str):
        raise UsageTypeError(
            f"`{name}` must be a text path; byte paths are not supported. Decode it with "
            f"`os.fsdecode` first. Received: {name}={path!r}"
        )
    if not path_str:
        raise UsageError(
            f"`{name}` must be a non-empty file path. Expected e.g. 'images/cat.jpg'. "
            f"Received: {name}={path!r}"
        )
    return path_str


def _check_image_size(image_size: object) -> tuple[int, int]:
    """Returns ``(height, width)`` from an int or a 2-sequence of positive ints."""
    if _is_int(image_size):
        values = (image_size, image_size)
    elif isinstance(image_size, (tuple, list)) and all(_is_int(v) for v in image_size):
        values = tuple(image_size)
    else:
        raise UsageTypeError(
            "`image_size` must be an int (square images) or a (height, width) tuple of ints. "
            f"Expected e.g. 224 or (224, 224). Received: image_size={image_size!r}"
        )
    if len(values) != 2 or any(int(v) < 1 for v in values):
        raise UsageError(
            "`image_size` must be a positive int or a (height, width) tuple of two positive "
            f"ints. Expected e.g. 224 or (224, 224). Received: image_size={image_size!r}"
        )
    return int(values[0]), int(values[1])


def _check_num_workers(num_workers: object, num_paths: int) -> int:
    """Returns the number of threads to use, validating a user-given `num_workers`."""
    if num_workers is None:
        return max(1, min(32, os.cpu_count() or 1, num_paths))
    if not _is_int(num_workers):
        raise UsageTypeError(
            "`num_workers` must be None or a positive int. Expected e.g. 8. "
            f"Received: num_workers={num_workers!r}"
        )
    if num_workers < 1:
        raise UsageError(
            "`num_workers` must be a positive int; use 1 to decode sequentially. "
            f"Received: num_workers={num_workers!r}"
        )
    return max(1, min(int(num_workers), num_paths))


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


# --------------------------------------------------------------------------------------------
# Decoding helpers.


@contextlib.contextmanager
def _reading(path: str) -> Iterator[None]:
    """Turns Pillow/OS errors raised while reading `path` into clear exceptions."""
    try:
        yield
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise MissingPathError(
            "Image file not found. Expected an existing file; check the path (relative "
            f"paths are resolved against {os.getcwd()!r}). Received: path='{path}'"
        ) from None
    except Image.DecompressionBombError as error:
        raise NotAnImageError(
            path,
            f"the image is too large to decode safely ({str(error).rstrip('.')})",
            hint=_BOMB_HINT,
        ) from error
    except UnidentifiedImageError as error:
        hint = codec_hint(path)
        if hint is None:
            raise NotAnImageError(path, _describe(error)) from error
        extension = os.path.splitext(path)[1].lower().lstrip(".")
        reason = f"no reader for {extension} files is installed"
        raise NotAnImageError(path, reason, hint) from error
    except _DECODE_ERRORS as error:
        raise ImageReadError(path, _describe(error)) from error


def _describe(error: BaseException) -> str:
    """Returns a short, human-readable reason for a decoding error."""
    text = str(error).rstrip(".") or type(error).__name__
    if isinstance(error, UnidentifiedImageError):
        return "not an image, or a format Pillow cannot identify (cannot identify image file)"
    if isinstance(error, IsADirectoryError):
        return "the path is a directory, not a file"
    if isinstance(error, PermissionError):
        return "permission denied"
    if isinstance(error, EOFError) or "truncated" in text.lower():
        return f"the file is truncated ({text})"
    return f"corrupt or unsupported image data ({type(error).__name__}: {text})"


def _exif_orientation(image: Image.Image) -> int:
    """Returns the EXIF orientation tag (1 when absent or unreadable)."""
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION_TAG, 1))
    except (*_DECODE_ERRORS, TypeError):
        return 1


def _draft_jpeg(image: Image.Image, height: int, width: int) -> None:
    """Lets libjpeg decode at 1/2, 1/4 or 1/8 scale when the file is far larger than needed.

    The draft is never smaller than `_DRAFT_FACTOR` times the target size (measured in the
    stored orientation), so the final bilinear resize still has real pixels to average.
    """
    if image.format not in ("JPEG", "MPO"):
        return
    request = (width * _DRAFT_FACTOR, height * _DRAFT_FACTOR)  # Pillow sizes are (w, h)
    if _exif_orientation(image) in _TRANSPOSING_ORIENTATIONS:
        request = request[::-1]
    image.draft(None, request)


def _exif_oriented(image: Image.Image) -> Image.Image:
    """Applies the EXIF orientation tag in place; malformed EXIF leaves the image as stored."""
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except (*_DECODE_ERRORS, TypeError):
        pass
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """Converts a decoded image of any mode to 8-bit RGB (see the module docstring)."""
    mode = image.mode
    if mode == "I" or mode.startswith("I;16"):
        return _sixteen_bit_to_rgb(image)
    if mode == "F":
        return _float_to_rgb(image)
    if image.has_transparency_data:
        return _composite_on_white(image)
    if mode == "RGB":
        return image
    return image.convert("RGB")


def _sixteen_bit_to_rgb(image: Image.Image) -> Image.Image:
    """Maps 0..65535 to 0..255 as ``round(v * 255 / 65535)``; values outside are clipped."""
    values = np.clip(np.asarray(image), 0, 65535).astype(np.uint32)
    gray = ((values * 255 + 32767) // 65535).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


def _float_to_rgb(image: Image.Image) -> Image.Image:
    """Maps a 0..1 (if max <= 1) or 0..255 float image to 8-bit gray, then RGB."""
    values = np.asarray(image, dtype=np.float32)
    finite = values[np.isfinite(values)]
    if finite.size and float(finite.max()) <= 1.0:
        values = values * np.float32(255.0)
    values = np.nan_to_num(values, nan=0.0, posinf=255.0, neginf=0.0)
    gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


def _composite_on_white(image: Image.Image) -> Image.Image:
    """Composites an image with transparency over an opaque white background."""
    rgba = image if image.mode == "RGBA" else image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")
