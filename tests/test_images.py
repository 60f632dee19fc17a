"""Tests for tlkeras.images: every test image is generated with Pillow in tmp_path."""

import pathlib
import pickle

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from tlkeras.images import (
    IMAGE_EXTENSIONS,
    ImageHeader,
    ImageReadError,
    has_image_extension,
    load_image,
    load_images,
    read_image_header,
    verify_image,
)

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)


def gray(value):
    return (value, value, value)


def rgb_array(rows):
    """A (H, W, 3) uint8 array from rows of RGB tuples."""
    return np.array(rows, dtype=np.uint8)


def assert_pixels(actual, expected, atol=0):
    expected = np.asarray(expected)
    assert actual.dtype == np.uint8
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual.astype(int), expected.astype(int), atol=atol, rtol=0)


def stored_mode(path):
    """The pixel mode Pillow opens a file in (closing the file again)."""
    with Image.open(path) as image:
        return image.mode


def write_bytes(path, data):
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------------------------
# One maker per pixel mode / format. Each returns the path of a small image; the test loads it
# at its own size (no resizing) and compares every pixel.


def make_l(tmp_path):
    path = tmp_path / "gray.png"
    Image.new("L", (3, 2), 100).save(path)
    return path


def make_1bit(tmp_path):
    path = tmp_path / "bits.png"
    Image.fromarray(np.array([[False, True]])).save(path)
    assert stored_mode(path) == "1"
    return path


def make_i16_png(tmp_path):
    path = tmp_path / "sixteen.png"
    Image.fromarray(np.array([[0, 257, 32768, 65535]], dtype=np.uint16)).save(path)
    assert stored_mode(path) == "I;16"
    return path


def make_i16_tiff(tmp_path):
    path = tmp_path / "sixteen.tif"
    Image.fromarray(np.array([[0, 257, 32768, 65535]], dtype=np.uint16)).save(path)
    assert stored_mode(path).startswith("I;16")
    return path


def make_i_pgm(tmp_path):
    # Pillow opens 16-bit PGM files in mode "I" with values 0..65535.
    pixels = np.array([0, 257, 32768, 65535], dtype=">u2").tobytes()
    path = write_bytes(tmp_path / "sixteen.pgm", b"P5 4 1 65535\n" + pixels)
    assert stored_mode(path) == "I"
    return path


def make_i32_tiff(tmp_path):
    path = tmp_path / "int32.tif"
    Image.fromarray(np.array([[-5, 257, 32768, 70000]], dtype=np.int32)).save(path)
    assert stored_mode(path) == "I"
    return path


def make_f_unit_tiff(tmp_path):
    path = tmp_path / "float_unit.tif"
    Image.fromarray(np.array([[0.0, 0.5, 1.0, np.nan]], dtype=np.float32)).save(path)
    assert stored_mode(path) == "F"
    return path


def make_f_255_tiff(tmp_path):
    path = tmp_path / "float_255.tif"
    Image.fromarray(np.array([[0.0, 100.0, 300.0, -4.0]], dtype=np.float32)).save(path)
    return path


def _palette_image():
    image = Image.fromarray(np.array([[0, 1, 2]], dtype=np.uint8)).convert("L").convert("P")
    image.putpalette([*RED, *GREEN, *BLUE])
    image.putdata([0, 1, 2])
    return image


def make_p(tmp_path):
    path = tmp_path / "palette.png"
    _palette_image().save(path)
    assert stored_mode(path) == "P"
    return path


def make_p_transparency(tmp_path):
    path = tmp_path / "palette_transparent.png"
    _palette_image().save(path, transparency=1)  # index 1 (green) is transparent
    assert stored_mode(path) == "P"
    return path


def make_pa_tiff(tmp_path):
    path = tmp_path / "palette_alpha.tif"
    palette = _palette_image().convert("PA")
    palette.putalpha(Image.fromarray(np.array([[255, 0, 255]], dtype=np.uint8)))
    palette.save(path)
    assert stored_mode(path) == "PA"
    return path


def make_rgba(tmp_path):
    path = tmp_path / "rgba.png"
    rows = [[(10, 20, 30, 0), (255, 0, 0, 255), (255, 0, 0, 128)]]
    Image.fromarray(np.array(rows, dtype=np.uint8)).save(path)
    assert stored_mode(path) == "RGBA"
    return path


def make_la(tmp_path):
    path = tmp_path / "la.png"
    Image.fromarray(np.array([[(100, 255), (100, 0), (100, 128)]], dtype=np.uint8)).save(path)
    assert stored_mode(path) == "LA"
    return path


def make_l_transparency(tmp_path):
    path = tmp_path / "gray_transparent.png"
    Image.fromarray(np.array([[100, 50]], dtype=np.uint8)).save(path, transparency=100)
    return path


def make_cmyk_tiff(tmp_path):
    path = tmp_path / "cmyk.tif"
    image = Image.new("CMYK", (3, 1))
    image.putdata([(0, 255, 255, 0), (0, 0, 0, 255), (0, 0, 0, 0)])
    image.save(path)
    return path


def make_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, quality=95)
    assert stored_mode(path) == "CMYK"
    return path


def make_rgb_jpeg(tmp_path):
    path = tmp_path / "rgb.jpg"
    Image.new("RGB", (16, 16), (30, 140, 220)).save(path, quality=95)
    return path


def _rgb_pattern():
    return Image.fromarray(rgb_array([[RED, GREEN], [BLUE, gray(77)]]))


def make_bmp(tmp_path):
    path = tmp_path / "pattern.bmp"
    _rgb_pattern().save(path)
    return path


def make_tiff(tmp_path):
    path = tmp_path / "pattern.tiff"
    _rgb_pattern().save(path)
    return path


def make_webp(tmp_path):
    path = tmp_path / "pattern.webp"
    _rgb_pattern().save(path, lossless=True)
    return path


def make_webp_rgba(tmp_path):
    path = tmp_path / "alpha.webp"
    rows = [[(10, 20, 30, 0), (0, 0, 255, 255)]]
    Image.fromarray(np.array(rows, dtype=np.uint8)).save(path, lossless=True, exact=True)
    return path


def make_gif_animation(tmp_path):
    path = tmp_path / "animation.gif"
    first, second = Image.new("RGB", (4, 2), RED), Image.new("RGB", (4, 2), BLUE)
    first.save(path, save_all=True, append_images=[second], duration=100, loop=0)
    with Image.open(path) as image:
        assert image.n_frames == 2
    return path


def make_gif_transparency(tmp_path):
    path = tmp_path / "transparent.gif"
    _palette_image().save(path, transparency=2)
    return path


MODE_CASES = [
    # (maker, expected pixels, tolerance)
    (make_l, [[gray(100)] * 3] * 2, 0),
    (make_1bit, [[BLACK, WHITE]], 0),
    (make_i16_png, [[gray(0), gray(1), gray(128), gray(255)]], 0),
    (make_i16_tiff, [[gray(0), gray(1), gray(128), gray(255)]], 0),
    (make_i_pgm, [[gray(0), gray(1), gray(128), gray(255)]], 0),
    (make_i32_tiff, [[gray(0), gray(1), gray(128), gray(255)]], 0),
    (make_f_unit_tiff, [[gray(0), gray(128), gray(255), gray(0)]], 0),
    (make_f_255_tiff, [[gray(0), gray(100), gray(255), gray(0)]], 0),
    (make_p, [[RED, GREEN, BLUE]], 0),
    (make_p_transparency, [[RED, WHITE, BLUE]], 0),
    (make_pa_tiff, [[RED, WHITE, BLUE]], 0),
    (make_rgba, [[WHITE, RED, (255, 127, 127)]], 0),
    (make_la, [[gray(100), WHITE, gray(177)]], 0),
    (make_l_transparency, [[WHITE, gray(50)]], 0),
    (make_cmyk_tiff, [[RED, BLACK, WHITE]], 0),
    (make_cmyk_jpeg, [[RED] * 16] * 16, 8),
    (make_rgb_jpeg, [[(30, 140, 220)] * 16] * 16, 4),
    (make_bmp, [[RED, GREEN], [BLUE, gray(77)]], 0),
    (make_tiff, [[RED, GREEN], [BLUE, gray(77)]], 0),
    (make_webp, [[RED, GREEN], [BLUE, gray(77)]], 0),
    (make_webp_rgba, [[WHITE, BLUE]], 0),
    (make_gif_animation, [[RED] * 4] * 2, 0),
    (make_gif_transparency, [[RED, GREEN, WHITE]], 0),
]


@pytest.mark.parametrize(
    ("maker", "expected", "atol"), MODE_CASES, ids=[c[0].__name__[5:] for c in MODE_CASES]
)
def test_load_image_converts_every_mode_to_exact_rgb(tmp_path, maker, expected, atol):
    path = maker(tmp_path)
    expected = rgb_array(expected)
    actual = load_image(path, expected.shape[:2])
    assert_pixels(actual, expected, atol=atol)
    assert verify_image(path) is None


# ------------------------------------------------------------------------------------------
# Resizing and output array.


def _gradient_image(width=53, height=37):
    y, x = np.mgrid[0:height, 0:width]
    rows = np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], axis=-1)
    return Image.fromarray(rows.astype(np.uint8))


def test_load_image_resizes_with_pillow_bilinear(tmp_path):
    path = tmp_path / "gradient.png"
    _gradient_image().save(path)
    expected = np.array(_gradient_image().resize((30, 20), Image.Resampling.BILINEAR))
    actual = load_image(path, (20, 30))  # (height, width)
    assert_pixels(actual, expected)


def test_load_image_int_size_is_square_and_array_is_writable(tmp_path):
    path = tmp_path / "gradient.png"
    _gradient_image().save(path)
    array = load_image(str(path), 16)
    assert array.shape == (16, 16, 3)
    assert array.flags.writeable and array.flags.c_contiguous
    array[0, 0] = 0  # must not raise


# ------------------------------------------------------------------------------------------
# EXIF orientation and large JPEGs.


def _save_marked_jpeg(path, width, height, orientation):
    """A gray JPEG whose stored top-left block is red, with an EXIF orientation tag."""
    stored = np.full((height, width, 3), 90, dtype=np.uint8)
    block = max(8, min(width, height) // 5)
    stored[:block, :block] = RED
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(path, quality=95, subsampling=0, exif=exif)


@pytest.mark.parametrize(
    ("orientation", "red_corner"),
    [(1, "top-left"), (3, "bottom-right"), (6, "top-right"), (8, "bottom-left")],
)
def test_load_image_applies_exif_orientation(tmp_path, orientation, red_corner):
    path = tmp_path / f"phone_{orientation}.jpg"
    _save_marked_jpeg(path, width=40, height=24, orientation=orientation)
    assert read_image_header(path) == ImageHeader("JPEG", "RGB", 24, 40)  # stored size

    upright_hw = (40, 24) if orientation in (6, 8) else (24, 40)
    array = load_image(path, upright_hw)
    assert array.shape == (*upright_hw, 3)
    corners = {
        "top-left": array[2, 2],
        "top-right": array[2, -3],
        "bottom-left": array[-3, 2],
        "bottom-right": array[-3, -3],
    }
    for name, pixel in corners.items():
        expected = RED if name == red_corner else gray(90)
        assert_pixels(pixel, expected, atol=12)


@pytest.fixture
def draft_sizes(monkeypatch):
    """Records the size a JPEG is decoded at after `Image.draft`."""
    sizes = []
    original = JpegImagePlugin.JpegImageFile.draft

    def recording_draft(self, mode, size):
        result = original(self, mode, size)
        sizes.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", recording_draft)
    return sizes


def test_load_image_decodes_huge_jpeg_at_reduced_size(tmp_path, draft_sizes):
    path = tmp_path / "huge.jpg"
    image = Image.new("RGB", (5000, 4000), BLUE)
    image.paste(RED, (0, 0, 2500, 4000))  # left half red
    image.save(path, quality=85)

    array = load_image(path, 224)
    assert array.shape == (224, 224, 3)
    assert draft_sizes == [(625, 500)]  # libjpeg decoded at 1/8 scale, still >= 2 * 224
    assert_pixels(array[:, :100], np.broadcast_to(RED, (224, 100, 3)), atol=8)
    assert_pixels(array[:, 124:], np.broadcast_to(BLUE, (224, 100, 3)), atol=8)


@pytest.mark.parametrize("upright_hw", [(400, 100), (100, 400)])
def test_load_image_draft_respects_exif_rotation(tmp_path, draft_sizes, upright_hw):
    path = tmp_path / "huge_rotated.jpg"
    _save_marked_jpeg(path, width=4000, height=1000, orientation=6)  # upright: 1000 x 4000
    array = load_image(path, upright_hw)
    assert array.shape == (*upright_hw, 3)
    stored_width, stored_height = draft_sizes[0]
    # Orientation 6 swaps the axes: the stored width becomes the upright height.
    assert stored_width >= 2 * upright_hw[0] and stored_height >= 2 * upright_hw[1]
    assert_pixels(array[1, -2], RED, atol=12)  # stored top-left -> upright top-right


def test_load_image_small_jpeg_is_not_drafted(tmp_path, draft_sizes):
    path = tmp_path / "small.jpg"
    Image.new("RGB", (300, 300), RED).save(path)
    load_image(path, 224)
    assert draft_sizes == [(300, 300)]


def test_decompression_bomb_is_reported_without_disabling_guard(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("RGB", (20, 20), RED).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 400 pixels > 2 * 100

    with pytest.raises(ImageReadError, match="MAX_IMAGE_PIXELS") as info:
        load_image(path, 8)
    assert str(path) in str(info.value)
    assert "too large" in verify_image(path)
    with pytest.raises(ImageReadError, match="too large"):
        read_image_header(path)
    assert Image.MAX_IMAGE_PIXELS == 100  # the guard was left alone


# ------------------------------------------------------------------------------------------
# Paths.


@pytest.mark.parametrize("as_type", [str, pathlib.Path])
def test_load_image_accepts_spaces_and_non_ascii_paths(tmp_path, as_type):
    folder = tmp_path / "dossier été"
    folder.mkdir()
    path = folder / "café photo ü.png"
    Image.new("RGB", (5, 4), GREEN).save(path)
    assert_pixels(load_image(as_type(path), (4, 5)), np.broadcast_to(GREEN, (4, 5, 3)))
    assert verify_image(as_type(path)) is None
    assert read_image_header(as_type(path)) == ImageHeader("PNG", "RGB", 4, 5)


def test_has_image_extension_and_extensions():
    assert all(ext.startswith(".") and ext == ext.lower() for ext in IMAGE_EXTENSIONS)
    assert {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"} <= set(IMAGE_EXTENSIONS)
    assert has_image_extension("a/B.JPG")
    assert has_image_extension(pathlib.Path("scan.tiff"))
    assert not has_image_extension("notes.txt")


# ------------------------------------------------------------------------------------------
# Bad files.


def make_truncated_jpeg(tmp_path):
    path = tmp_path / "truncated.jpg"
    _gradient_image(200, 150).save(path, quality=90)
    return write_bytes(path, path.read_bytes()[: path.stat().st_size // 2])


def make_truncated_png(tmp_path):
    path = tmp_path / "truncated.png"
    _gradient_image(200, 150).save(path)
    return write_bytes(path, path.read_bytes()[: path.stat().st_size // 2])


def make_text_as_jpeg(tmp_path):
    return write_bytes(tmp_path / "notes.jpg", b"this is not an image\n")


def make_empty_png(tmp_path):
    return write_bytes(tmp_path / "empty.png", b"")


BAD_FILE_CASES = [
    (make_truncated_jpeg, "truncated"),
    (make_truncated_png, "truncated"),
    (make_text_as_jpeg, "cannot identify image file"),
    (make_empty_png, "cannot identify image file"),
]


@pytest.mark.parametrize(
    ("maker", "reason"), BAD_FILE_CASES, ids=[c[0].__name__[5:] for c in BAD_FILE_CASES]
)
def test_bad_files_raise_image_read_error_with_path(tmp_path, maker, reason):
    path = maker(tmp_path)
    with pytest.raises(ImageReadError) as info:
        load_image(path, 32)
    error = info.value
    assert isinstance(error, ValueError)
    assert error.path == str(path)
    assert reason in error.reason
    assert reason in str(error)
    assert str(error).endswith(f"Received: path='{path}'")

    assert reason in verify_image(path)
    assert verify_image(str(path)) == error.reason


def test_header_of_non_image_raises(tmp_path):
    path = make_text_as_jpeg(tmp_path)
    with pytest.raises(ImageReadError, match="cannot identify image file"):
        read_image_header(path)


def test_missing_file_raises_file_not_found(tmp_path):
    path = tmp_path / "missing.png"
    with pytest.raises(FileNotFoundError) as info:
        load_image(path, 32)
    assert str(info.value).endswith(f"Received: path='{path}'")
    assert verify_image(path) == "file not found"


def test_directory_raises_image_read_error(tmp_path):
    with pytest.raises(ImageReadError, match="directory"):
        load_image(tmp_path, 32)
    assert "directory" in verify_image(tmp_path)


def test_image_read_error_pickles():
    error = ImageReadError("a b/é.jpg", "the file is truncated (x)")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.reason, str(copy)) == (error.path, error.reason, str(error))


# ------------------------------------------------------------------------------------------
# load_images.


def _colour(index):
    return (index * 20 % 256, 255 - index * 7, (index * 53) % 256)


@pytest.fixture
def coloured_files(tmp_path):
    paths = []
    for index in range(12):
        suffix = (".png", ".bmp", ".tif")[index % 3]
        path = tmp_path / f"img_{index:02d}{suffix}"
        Image.new("RGB", (7 + index, 5 + index), _colour(index)).save(path)
        paths.append(path)
    return paths


@pytest.mark.parametrize("num_workers", [None, 1, 4])
def test_load_images_preserves_order(coloured_files, num_workers):
    paths = list(reversed(coloured_files))  # not alphabetical, to catch any re-sorting
    batch = load_images(paths, (6, 8), num_workers=num_workers)
    assert batch.shape == (12, 6, 8, 3) and batch.dtype == np.uint8
    for row, index in zip(batch, reversed(range(12)), strict=True):
        assert_pixels(row, np.broadcast_to(_colour(index), (6, 8, 3)))


def test_load_images_matches_load_image_and_accepts_generators(coloured_files):
    batch = load_images((str(p) for p in coloured_files), 9, num_workers=3)
    for row, path in zip(batch, coloured_files, strict=True):
        np.testing.assert_array_equal(row, load_image(path, 9))


def test_load_images_empty(tmp_path):
    assert load_images([], (4, 5)).shape == (0, 4, 5, 3)


def test_load_images_reports_first_bad_file_in_input_order(tmp_path, coloured_files):
    first_bad = make_text_as_jpeg(tmp_path)
    second_bad = make_truncated_jpeg(tmp_path)
    paths = [coloured_files[0], first_bad, *coloured_files[1:6], second_bad]
    with pytest.raises(ImageReadError) as info:
        load_images(paths, 8, num_workers=4)
    assert info.value.path == str(first_bad)
    assert str(info.value).endswith(f"Received: path='{first_bad}'")


# ------------------------------------------------------------------------------------------
# Argument validation.


@pytest.mark.parametrize(
    ("image_size", "error"),
    [
        (0, ValueError),
        (-3, ValueError),
        ((224,), ValueError),
        ((224, 224, 3), ValueError),
        ((224, 0), ValueError),
        ("224", TypeError),
        (2.5, TypeError),
        (True, TypeError),
        (None, TypeError),
        ((224.0, 224), TypeError),
    ],
)
def test_invalid_image_size(tmp_path, image_size, error):
    path = make_l(tmp_path)
    with pytest.raises(error) as info:
        load_image(path, image_size)
    assert str(info.value).endswith(f"Received: image_size={image_size!r}")
    with pytest.raises(error):
        load_images([path], image_size)


@pytest.mark.parametrize("path", [None, 123, b"image.png"])
def test_invalid_path_type(path):
    for function in (lambda p: load_image(p, 8), verify_image, read_image_header):
        with pytest.raises(TypeError) as info:
            function(path)
        assert str(info.value).endswith(f"Received: path={path!r}")


def test_invalid_load_images_arguments(tmp_path):
    path = make_l(tmp_path)
    with pytest.raises(TypeError, match="single path"):
        load_images(str(path), 8)
    with pytest.raises(TypeError, match=r"Received: paths\[1\]=None"):
        load_images([path, None], 8)
    with pytest.raises(TypeError, match="Received: paths=5"):
        load_images(5, 8)
    with pytest.raises(ValueError, match="Received: num_workers=0"):
        load_images([path], 8, num_workers=0)
    with pytest.raises(TypeError, match="Received: num_workers='2'"):
        load_images([path], 8, num_workers="2")


def test_avif_is_read_when_pillow_supports_it(tmp_path):
    from PIL import features

    if not features.check("avif"):
        pytest.skip("this Pillow is built without AVIF")
    path = tmp_path / "photo.avif"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(path)
    assert has_image_extension(path)
    pixels = load_image(path, 8)
    assert pixels.shape == (8, 8, 3)
    assert abs(int(pixels[0, 0, 0]) - 200) < 12 and pixels[0, 0, 1] < 40


def test_heic_without_the_plugin_names_the_extra(tmp_path):
    import importlib.util

    if importlib.util.find_spec("pillow_heif") is not None:
        pytest.skip("pillow-heif is installed, so HEIC files are read")
    path = tmp_path / "IMG_0001.HEIC"
    path.write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(100))
    assert not has_image_extension(path), "listed only when readable"
    with pytest.raises(ImageReadError, match=r'pip install "tlkeras\[heif\]"') as info:
        load_image(path, 8)
    assert "no reader for heic files" in info.value.reason
    assert verify_image(path) == info.value.reason
