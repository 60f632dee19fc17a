"""Memory: how much is available, and keeping it flat when many runs train in one process.

`available_memory` is the one memory probe (container limits included): `tlkeras.data`
asks it whether the decoded images fit in memory, `tlkeras.features` whether cached
features do.

Two things make each run's model outlive it:

- Keras' global state (layer-name counters, the functional-API graph):
  `keras.utils.clear_session()` at the start of every run clears it.
- A TensorFlow leak that `clear_session` cannot reach. Keras' optimizer calls the
  distribution strategy's `all_reduce` in every traced training step, which uses
  `tf.custom_gradient`, which registers a gradient function in TensorFlow's process-wide
  gradient registry under a new name ("CustomGradient-<n>") and never removes it. That
  function holds the traced step's graph, and the graph holds every variable of the model and
  its optimizer, so each run leaked all of them (about 3 times the model's size with Adam;
  upstream: keras-team/keras#17458, tensorflow/tensorflow#61791). The registrations are only
  used while the step is being traced, so `forget_traced_gradients` drops the ones a run
  added once the run is over, and its memory is freed. No public API removes a registered
  gradient, so the registry is reached in `tlkeras.workarounds`, the one place for that.

`tlkeras.train` does both; `benchmarks/memory_runs.py` prints the memory of 10 consecutive
runs.

Example:
    >>> for backbone in ("vgg16", "resnet50"):
    ...     keras.utils.clear_session()
    ...     with forget_traced_gradients():
    ...         model = build_model(backbone, num_classes=3, image_size=64, weights=None)
    ...         train_head(model, train_ds, val_ds, epochs=3)
"""

from __future__ import annotations

import contextlib
import os
import re

from tlkeras import workarounds  # Imports TensorFlow only when used.
from tlkeras.errors import UsageError
from tlkeras.workarounds import CUSTOM_GRADIENT_PREFIX

#: A cgroup memory limit at or above this means "no limit" (cgroup v1 writes 2**63 - 4096).
_NO_LIMIT = 2**60


def available_memory(*, root: str = "/") -> int | None:
    """Bytes of memory this process can still use, container limits included; None if unknown.

    The one memory probe of tlkeras: every decision to keep something in memory (decoded
    images, cached features) asks it. It is the least of:

    - the kernel's estimate, `MemAvailable` in `/proc/meminfo` (free memory plus what can be
      reclaimed without swapping);
    - for this process's cgroup and each of its parents, cgroup v2's `memory.max` or v1's
      `memory.limit_in_bytes`, minus what the group uses (`memory.current` or
      `memory.usage_in_bytes`, less the page cache it could drop, `inactive_file`).

    A container's limit is what its out-of-memory killer enforces, and `/proc/meminfo` shows
    the whole machine's memory, so without the second part a container would be told it has
    the host's RAM. Where neither can be read (not Linux), it is the free memory the system
    reports, or None.

    Args:
        root: The file system root to read `/proc` and `/sys/fs/cgroup` from (for tests).
            Defaults to "/".

    Returns:
        Bytes, at least 0, or None.

    Example:
        >>> available_memory()  # doctest: +SKIP
        21474836480
    """
    proc = os.path.join(root, "proc")
    found = [_meminfo_available(proc), *_cgroup_room(proc, os.path.join(root, "sys/fs/cgroup"))]
    found = [value for value in found if value is not None]
    if not found and root == "/":
        with contextlib.suppress(AttributeError, OSError, ValueError):  # e.g. Windows
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return max(0, min(found)) if found else None


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def _meminfo_available(proc: str) -> int | None:
    for line in (_read(os.path.join(proc, "meminfo")) or "").splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def _cgroup_room(proc: str, mount: str) -> list[int]:
    """What every cgroup of this process, from its own up to the root, has left."""
    rooms = []
    for line in (_read(os.path.join(proc, "self", "cgroup")) or "").splitlines():
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "" and path:  # cgroup v2
            folder, names = mount, ("memory.max", "memory.current", "inactive_file")
        elif "memory" in controllers.split(","):  # cgroup v1
            folder = os.path.join(mount, "memory")
            names = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
        else:
            continue
        parts = [part for part in path.split("/") if part]
        for depth in range(len(parts), -1, -1):
            room = _room_in(os.path.join(folder, *parts[:depth]), *names)
            if room is not None:
                rooms.append(room)
    return rooms


def _room_in(folder: str, limit_file: str, usage_file: str, inactive_key: str) -> int | None:
    """A cgroup's limit minus its usage (less its reclaimable page cache), or None."""
    limit, usage = _read(os.path.join(folder, limit_file)), _read(os.path.join(folder, usage_file))
    try:
        limit, usage = int(limit), int(usage)
    except (TypeError, ValueError):  # Missing, or "max": no limit at this level.
        return None
    if limit >= _NO_LIMIT:
        return None
    inactive = 0
    for line in (_read(os.path.join(folder, "memory.stat")) or "").splitlines():
        key, _, value = line.partition(" ")
        if key == inactive_key and value.strip().isdigit():
            inactive = int(value)
    return limit - max(usage - inactive, 0)


#: `--cache-memory`'s default: `--cache auto` keeps a run's feature cache in memory while it
#: takes at most this share of the available memory, and writes it to disk beyond. A disk
#: cache's epochs take about as long (the page cache keeps what it can of it, and the kernel
#: can reclaim that; benchmarks/results/scale.txt), so memory is kept for small caches and
#: large runs keep theirs flat.
DEFAULT_CACHE_MEMORY = "3%"
#: The units a memory size may carry, in bytes.
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS.update({"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40})
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(%|[kmgt]i?b|b)?\s*", re.IGNORECASE)


def cache_budget(cache_memory=DEFAULT_CACHE_MEMORY, *, available: int | None = None) -> int:
    """Bytes of cached features `--cache auto` keeps in memory before it writes them to disk.

    Args:
        cache_memory: A size (`"512MiB"`, `"2GB"`, `"1.5GiB"`, or bytes as an int or a
            digit string) or a share of the available memory (`"3%"`). `None` means
            `DEFAULT_CACHE_MEMORY`. Defaults to `DEFAULT_CACHE_MEMORY`.
        available: The available memory in bytes for a share; defaults to
            `available_memory()` (8 GiB when it cannot be told).

    Returns:
        The budget in bytes.

    Raises:
        ValueError: If `cache_memory` is not a size or a share.

    Example:
        >>> cache_budget("512MiB"), cache_budget("50%", available=2**30)
        (536870912, 536870912)
    """
    amount, unit = parse_cache_memory(cache_memory)
    if unit != "%":
        return int(amount * _UNITS[unit])
    available = available_memory() if available is None else available
    return int((8 * 2**30 if available is None else available) * amount / 100)


def parse_cache_memory(cache_memory) -> tuple[float, str]:
    """Checks a `--cache-memory` value; returns `(amount, unit)`, the unit `"%"` or bytes'.

    Example:
        >>> parse_cache_memory("2GiB"), parse_cache_memory("3%")
        ((2.0, 'gib'), (3.0, '%'))
    """
    cache_memory = DEFAULT_CACHE_MEMORY if cache_memory is None else cache_memory
    if isinstance(cache_memory, int) and not isinstance(cache_memory, bool):
        cache_memory = str(cache_memory)
    match = _SIZE.fullmatch(cache_memory) if isinstance(cache_memory, str) else None
    amount = float(match.group(1)) if match else -1.0
    unit = (match.group(2) or "b").lower() if match else ""
    if not match or (unit == "%" and amount > 100):
        raise UsageError(
            "cache_memory must be a size such as 512MiB or 2GB, or a share of the available "
            "memory such as 3% (at most 100%); 0 always caches on disk. "
            f"Received: cache_memory={cache_memory!r}"
        )
    return amount, unit


def _gradient_registry() -> dict | None:
    """TensorFlow's gradient registry, or None if it has moved (`tlkeras.workarounds`).

    A module-level function so that `benchmarks/memory_runs.py` can switch forgetting off.
    """
    return workarounds.tensorflow_gradient_registry()


@contextlib.contextmanager
def forget_traced_gradients():
    """Drops the custom-gradient registrations made inside the block when it ends.

    Use it around (or as a decorator of) a whole training run. Models trained inside keep
    working afterwards (predict, evaluate, and fit, which retraces if it needs to); only
    TensorFlow's bookkeeping for tracing the old steps goes. If TensorFlow ever moves its
    registry, this does nothing.

    Example:
        >>> with forget_traced_gradients():
        ...     model.fit(train_ds, epochs=3)
    """
    registry = _gradient_registry()
    before = set(registry) if registry is not None else set()
    try:
        yield
    finally:
        if registry is not None:
            for name in set(registry) - before:
                if name.startswith(CUSTOM_GRADIENT_PREFIX):
                    del registry[name]
