"""Small shared helpers: devices, dtypes, seeded generators, atomic writes.

Importing this module does not import torch (the torch helpers import it when called), so the
torch-free parts of the project (``unianimate.pose``) can use the atomic writes too.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

_DTYPES = {"fp32": "float32", "float32": "float32", "fp16": "float16",
           "float16": "float16", "bf16": "bfloat16", "bfloat16": "bfloat16"}


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/"auto" -> CUDA when available, else CPU."""
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None``/"auto" -> fp16 on CUDA, fp32 on CPU; strings such as "bf16" are accepted."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    try:
        name = _DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}") from None
    return getattr(torch, name)


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` seeded with ``seed`` (all randomness in the project goes through one)."""
    import torch

    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (hex), read in 1 MiB chunks; OSError when it cannot be read."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as pretty JSON."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode("utf-8"))


def check_known_keys(cls: type, data: Any, where: str | None = None) -> None:
    """Raise ``InputError`` naming every key of ``data`` that is not a field of dataclass ``cls``.

    One check for every config's ``from_dict``, so a typo in a config file never passes silently.
    """
    from dataclasses import fields

    from .errors import InputError

    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        place = f" in {where}" if where else ""
        raise InputError(f"unknown {cls.__name__} key(s) {unknown}{place}; known keys are {sorted(known)}")


# glibc mallopt parameters (malloc.h) and their defaults
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_GLIBC_TRIM_DEFAULT, _GLIBC_MMAP_MAX_DEFAULT = 128 * 1024, 65536
_KEEP_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int


def reuse_freed_cpu_memory(enable: bool = True) -> bool:
    """Make glibc's malloc keep freed memory for the next allocation instead of unmapping it.

    By default glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh
    ``mmap`` and unmaps it on free, so each large activation of a UNet step (up to hundreds of MiB)
    is page-faulted in again, page by page, by the kernel: ~10% of a full-size CPU step is system
    time. With ``enable`` no allocation is mmapped and the heap is not trimmed below 2 GiB of free
    top, so a step reuses the previous step's pages. Numbers are unchanged (tensors stay 64-byte
    aligned; only where the memory comes from changes). Costs: the heap fragments (full-size UNet
    step at 256x384 px: +30-36% peak memory), and the process keeps its peak resident after
    sampling; hence opt-in. ``enable=False`` restores glibc's default
    limits (its dynamic mmap threshold stays off). Process-wide. Returns False where the C library
    is not glibc (nothing changed).
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # only glibc has it: other libcs' mallopt differ or are absent
    except (OSError, AttributeError, TypeError):
        logger.debug("reuse_freed_cpu_memory: no glibc mallopt; allocator left as it is")
        return False
    trim, mmap_max = ((_KEEP_TRIM_THRESHOLD, 0) if enable else (_GLIBC_TRIM_DEFAULT, _GLIBC_MMAP_MAX_DEFAULT))
    ok = bool(mallopt(_M_TRIM_THRESHOLD, trim)) and bool(mallopt(_M_MMAP_MAX, mmap_max))
    logger.debug("reuse_freed_cpu_memory(%s): %s", enable, "set" if ok else "refused")
    return ok
