"""UNet configuration: the reference's parameter names, the released model's values as defaults.

Spec quirk (spec §3): the reference's decoder spatial attention hard-codes a context width of 1024
whatever ``context_dim`` says. This project uses ``context_dim`` everywhere, which is identical for
the released config (``context_dim=1024``); a small config with another ``context_dim`` therefore has
no exact counterpart in the reference code (the reference would build decoder ``attn2.to_k/to_v``
with 1024 inputs and fail on its own context).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from unianimate.errors import InputError
from unianimate.utils import check_known_keys

TEMPORAL_MODULES = ("transformer", "mamba")


@dataclass(frozen=True)
class UNetConfig:
    """Hyper-parameters of :class:`~unianimate.models.unet.UniAnimateUNet` (released config by default).

    Field names follow the reference ``UNetSD_UniAnimate``; ``temporal_module`` and ``mamba_*`` are
    this project's additions (paper §3.2 temporal Mamba, no released weights). ``norm_groups`` (the
    GroupNorm group count), ``temporal_dropout`` (ResBlocks' temporal convs) and ``adapter_dropout``
    (the condition adapters' frame transformers) are values the reference hard-codes (32, 0.1, 0.05);
    they are fields so small models can be trained (dropout never changes inference output).
    """

    in_dim: int = 4
    dim: int = 320
    context_dim: int = 1024
    out_dim: int = 4
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_heads: int = 8
    head_dim: int = 64
    num_res_blocks: int = 2
    attn_scales: tuple[float, ...] = (1.0, 0.5, 0.25)
    concat_dim: int = 8
    num_tokens: int = 4
    dropout: float = 0.1
    temporal_attention: bool = True
    temporal_module: str = "transformer"
    mamba_d_state: int = 16
    mamba_d_conv: int = 4
    mamba_expand: int = 2
    norm_groups: int = 32
    temporal_dropout: float = 0.1
    adapter_dropout: float = 0.05

    def __post_init__(self) -> None:
        # lists (e.g. from JSON) become tuples so the config stays hashable and frozen
        object.__setattr__(self, "dim_mult", tuple(int(m) for m in self.dim_mult))
        object.__setattr__(self, "attn_scales", tuple(float(s) for s in self.attn_scales))
        problems = []
        if self.temporal_module not in TEMPORAL_MODULES:
            problems.append(f"temporal_module={self.temporal_module!r} is not one of {TEMPORAL_MODULES}")
        for name in ("in_dim", "dim", "context_dim", "out_dim", "num_heads", "head_dim",
                     "num_res_blocks", "concat_dim", "num_tokens", "mamba_d_state",
                     "mamba_d_conv", "mamba_expand", "norm_groups"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"{name}={value!r} must be a positive integer")
        if not self.dim_mult or any(m < 1 for m in self.dim_mult):
            problems.append(f"dim_mult={self.dim_mult!r} must be a non-empty tuple of positive integers")
        for name in ("dropout", "temporal_dropout", "adapter_dropout"):
            if not 0.0 <= float(getattr(self, name)) < 1.0:
                problems.append(f"{name}={getattr(self, name)!r} must be in [0, 1)")
        if not problems:
            # every GroupNorm(G, C) needs C % G == 0; every attention needs C % head_dim == 0
            g = self.norm_groups
            for mult in self.dim_mult:
                width = self.dim * mult
                if width % g:
                    problems.append(f"dim*dim_mult = {width} is not divisible by norm_groups={g} "
                                    f"(GroupNorm({g}, C))")
                if width % self.head_dim:
                    problems.append(f"dim*dim_mult = {width} is not divisible by head_dim={self.head_dim}")
            if self.dim % g:
                problems.append(f"dim = {self.dim} is not divisible by norm_groups={g} (GroupNorm({g}, C))")
        if problems:
            raise InputError("invalid UNetConfig: " + "; ".join(problems)
                             + ". Fix these values (UNetConfig() is the released config).")

    @property
    def embed_dim(self) -> int:
        """Width of the time embedding (4 * dim, 1280 for the released model)."""
        return 4 * self.dim

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "UNetConfig":
        """Build from a mapping; unknown keys raise so typos never pass silently."""
        check_known_keys(cls, d)
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (tuples become lists); ``from_dict(to_dict())`` round-trips."""
        out = dataclasses.asdict(self)
        out["dim_mult"] = list(self.dim_mult)
        out["attn_scales"] = list(self.attn_scales)
        return out

    def replace(self, **changes: Any) -> "UNetConfig":
        """A copy with some fields changed (validated like a new config)."""
        return self.from_dict({**self.to_dict(), **changes})

    @classmethod
    def tiny(cls, **overrides: Any) -> "UNetConfig":
        """A small config of the same architecture for tests, CI and the tiny pipeline."""
        base = dict(dim=32, context_dim=32, dim_mult=(1, 2), num_heads=2, head_dim=16,
                    num_res_blocks=1, attn_scales=(1.0, 0.5))
        base.update(overrides)
        return cls.from_dict(base)
