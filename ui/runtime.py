"""What the app runs on: the composition root's model choice and studio
(:mod:`unianimate.compose`) and error text. ZeroGPU lives in :mod:`unianimate.space`.
No Gradio components here.
"""
from __future__ import annotations

from unianimate.compose import DEFAULT_MODEL_SOURCE, ModelManager, build_studio
from unianimate.errors import WeightsMissingError



def describe_error(err: BaseException) -> str:
    """The message shown to the user for a service error."""
    if isinstance(err, WeightsMissingError):
        return f"Weights missing: {err}"
    return str(err) or type(err).__name__


__all__ = ["DEFAULT_MODEL_SOURCE", "ModelManager", "build_studio", "describe_error"]
