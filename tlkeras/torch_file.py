"""Reading PyTorch's legacy (pre-1.6) `.pth` files into numpy, safely and without torch.

A legacy file is a sequence of pickles followed by raw tensor bytes:

    pickle: magic number 0x1950a86a20f9469cfc6c
    pickle: protocol version 1001
    pickle: system info (byte order, type sizes)
    pickle: the saved object (here an OrderedDict of tensors); each tensor refers to its
            storage through a persistent id ("storage", type, key, device, numel)
    pickle: the list of storage keys, in the order their bytes follow
    then, for each key in that order: an 8-byte little-endian element count and the bytes

Reading it runs no code from the file: the unpickler resolves only `collections.OrderedDict`,
torch's tensor-rebuild functions and its storage types, each to a harmless stand-in, and
refuses every other name.

Example:
    >>> tensors = read_legacy_pth("efficientnet-lite0-57934424.pth")
    >>> tensors["_conv_stem.weight"].shape
    (32, 3, 3, 3)
"""

from __future__ import annotations

import collections
import dataclasses
import io
import os
import pickle

import numpy as np

from tlkeras.errors import DataError

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

#: The storage types a legacy file may name, and the numpy dtype of their elements.
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class TorchFileError(DataError):
    """A `.pth` file is not a legacy PyTorch file tlkeras can read safely."""


@dataclasses.dataclass(frozen=True)
class _Storage:
    key: str
    dtype: type


@dataclasses.dataclass(frozen=True)
class _Tensor:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, *_):
    """Stands in for torch._utils._rebuild_tensor(_v2): records where the values lie."""
    return _Tensor(storage, int(storage_offset), tuple(size), tuple(stride))


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return STORAGE_DTYPES[name]
        raise pickle.UnpicklingError(f"refused to load {module}.{name}")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.80}")
        dtype = pid[1]
        if dtype not in STORAGE_DTYPES.values():
            raise pickle.UnpicklingError(f"unexpected storage type {dtype!r:.80}")
        return _Storage(key=str(pid[2]), dtype=dtype)


def read_legacy_pth(path) -> dict[str, np.ndarray]:
    """Reads the tensors of a legacy PyTorch `.pth` file (a state dict) into numpy arrays.

    Args:
        path: The `.pth` file, saved by PyTorch before 1.6 (or with
            `_use_new_zipfile_serialization=False`).

    Returns:
        The tensors by name, in the file's order, as little-endian numpy arrays
        (zero-dimensional for scalars such as BatchNorm's `num_batches_tracked`).

    Raises:
        TorchFileError: If the file is not a legacy PyTorch file, is truncated, or names
            anything but an ordered dict of tensors (no code from the file is ever run).

    Example:
        >>> read_legacy_pth("model.pth")["_fc.bias"].shape
        (1000,)
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        return _parse(io.BytesIO(data))
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError) as error:
        raise TorchFileError(
            f"{path!r} is not a legacy PyTorch state dict tlkeras can read ({error}). Expected "
            "a .pth file saved by PyTorch before 1.6 holding only tensors; a truncated or "
            f"altered file is refused. Received: path={path!r}"
        ) from None


def _parse(f: io.BytesIO) -> dict[str, np.ndarray]:
    header = [_Unpickler(f).load() for _ in range(3)]
    if header[0] != MAGIC_NUMBER or header[1] != PROTOCOL_VERSION:
        raise ValueError("no legacy PyTorch magic number and protocol 1001 at its start")
    if not isinstance(header[2], dict) or not header[2].get("little_endian", False):
        raise ValueError("its system info says it is not little-endian")
    state = _Unpickler(f).load()
    keys = _Unpickler(f).load()
    if not isinstance(state, dict) or not isinstance(keys, list):
        raise ValueError("it holds no state dict of tensors")
    dtypes = {t.storage.key: t.storage.dtype for t in state.values() if isinstance(t, _Tensor)}
    storages = {}
    for key in keys:
        count = int.from_bytes(_take(f, 8), "little")
        dtype = np.dtype(dtypes.get(key, np.uint8)).newbyteorder("<")
        storages[key] = np.frombuffer(_take(f, count * dtype.itemsize), dtype=dtype)
    if f.read(1):
        raise ValueError("it has bytes after its last storage")
    tensors = {}
    for name, tensor in state.items():
        if not isinstance(tensor, _Tensor):
            raise ValueError(f"{name!r} is not a tensor")
        flat = storages[tensor.storage.key]
        itemsize = flat.dtype.itemsize
        tensors[name] = np.lib.stride_tricks.as_strided(
            flat[tensor.offset :],
            shape=tensor.shape,
            strides=tuple(s * itemsize for s in tensor.strides),
            writeable=False,
        ).copy()
    return tensors


def _take(f: io.BytesIO, size: int) -> bytes:
    chunk = f.read(size)
    if len(chunk) != size:
        raise EOFError(f"the file ends {size - len(chunk)} bytes early")
    return chunk
