"""UniAnimate models: the UNet (spec §3), its config and checkpoint reading.

Nothing here loads weights at import time; ``unianimate.models.mamba`` is imported lazily.
"""
from __future__ import annotations

from .checkpoint import load_state_dict_file
from .config import UNetConfig
from .unet import ConditionEmbeddings, UniAnimateUNet

__all__ = ["ConditionEmbeddings", "UNetConfig", "UniAnimateUNet", "load_state_dict_file"]
