"""What the app runs on: the composition root's model choice and studio
(:mod:`unianimate.compose`), the ZeroGPU decorator, and error text. No Gradio components here.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from unianimate.compose import DEFAULT_MODEL_SOURCE, ModelManager, build_studio
from unianimate.errors import WeightsMissingError

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


def gpu(fn: F | None = None, *, duration: int = 120) -> Any:
    """``spaces.GPU(duration=...)`` when the ``spaces`` package imports (Hugging Face ZeroGPU),
    otherwise the function unchanged. Usable as ``@gpu`` or ``@gpu(duration=300)``."""
    def wrap(f: F) -> F:
        try:
            import spaces  # type: ignore[import-not-found]
        except ImportError:
            return f
        try:
            return spaces.GPU(duration=duration)(f)
        except Exception as err:  # noqa: BLE001 - third-party decorator: never break the app
            log.warning("spaces.GPU could not wrap %s (%s); running without it",
                        getattr(f, "__name__", f), err)
            return f
    return wrap if fn is None else wrap(fn)


def describe_error(err: BaseException) -> str:
    """The message shown to the user for a service error."""
    if isinstance(err, WeightsMissingError):
        return f"Weights missing: {err}"
    return str(err) or type(err).__name__


__all__ = ["DEFAULT_MODEL_SOURCE", "ModelManager", "build_studio", "gpu", "describe_error"]
