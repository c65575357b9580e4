"""The UniAnimate unified video diffusion UNet (spec §3), with the reference's state-dict names.

The reference image's latent (plus its pose) is an extra frame at index 0 that shares the whole
network with the F generated frames; it is dropped from the output. A condition given as None
contributes zeros, exactly as the reference drops it. ``drop_conditions`` lets one call carry the
conditional and the unconditional guidance passes side by side.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from unianimate.errors import CheckpointError, InputError
from unianimate.utils import make_generator

from .adapters import FrameTransformer, latent_stack, pixel_stack
from .checkpoint import unwrap_state_dict, validate_state_dict
from .config import UNetConfig
from .layers import (Downsample, ResBlock, SpatialTransformer, TemporalTransformer, Upsample,
                     sinusoidal_embedding)

logger = logging.getLogger(__name__)

# pose and first-frame adapters reduce pixels to latent size by this factor (pool /2, two stride-2 convs)
PIXEL_TO_LATENT = 8
# the columns of a per-condition ``drop_conditions`` (B, 4) mask; "reference" = latent + pose
CONDITIONS = ("image_embedding", "reference", "first_frame", "pose")


def build_temporal_module(cfg: UNetConfig, channels: int, n_heads: int, d_head: int) -> nn.Module:
    """The one place that picks the temporal layer: (B,C,F,h,w) -> (B,C,F,h,w)."""
    if cfg.temporal_module == "mamba":
        from .mamba import TemporalMamba  # lazy: written separately, optional at import time
        return TemporalMamba.from_unet_config(cfg, channels)
    return TemporalTransformer(channels, n_heads, d_head, groups=cfg.norm_groups)


@dataclass(frozen=True)
class ConditionEmbeddings:
    """The step-independent inputs of the UNet's blocks, from :meth:`UniAnimateUNet.encode_conditions`.

    Computed once per segment (per window in long mode) and passed as ``unet(x, t, conditions=...)``
    at every denoising step; rows follow the batch they were encoded for (e.g. cond and uncond).
    """

    concat: torch.Tensor  # (B,concat_dim,F,h,w): first-frame + pose channels concatenated to x
    ref_slot: torch.Tensor  # (B,concat_dim+in_dim,1,h,w): the reference frame put before the F frames
    context: torch.Tensor  # (B,L+num_tokens,context_dim): text context + CLIP image tokens
    # per spatial transformer (module order), per block: its cross-attention (keys, values) of
    # ``context``, each (B,L+num_tokens,inner); None: the layers project the context themselves
    context_kv: tuple[tuple[tuple[torch.Tensor, torch.Tensor], ...], ...] | None = None

    @property
    def latent_size(self) -> tuple[int, int, int, int]:
        """(B, F, h, w) of the latents these conditions fit."""
        b, _, f, h, w = self.concat.shape
        return b, f, h, w


class UniAnimateUNet(nn.Module):
    """UNetSD_UniAnimate as released (spec §3); v-prediction of the F frames of ``x``."""

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        cfg = UNetConfig() if config is None else config
        self.config = cfg
        dim, embed_dim, ctx = cfg.dim, cfg.embed_dim, cfg.context_dim
        cd, ref_dim = cfg.concat_dim, cfg.concat_dim + cfg.in_dim
        head_dim = cfg.head_dim

        # embeddings and condition adapters (attribute order = the reference's state-dict order)
        self.time_embed = nn.Sequential(nn.Linear(dim, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))
        self.pre_image_condition = nn.Sequential(nn.Linear(ctx, ctx), nn.SiLU(),
                                                 nn.Linear(ctx, ctx * cfg.num_tokens))
        ad, groups = cfg.adapter_dropout, cfg.norm_groups
        self.local_image_embedding = pixel_stack(cd, 4 * cd)
        self.local_image_embedding_after = FrameTransformer(cd, dropout=ad)
        self.dwpose_embedding = pixel_stack(cd, 4 * cd)
        self.dwpose_embedding_after = FrameTransformer(cd, dropout=ad)
        self.randomref_pose2_embedding = pixel_stack(ref_dim, 4 * cd)
        self.randomref_pose2_embedding_after = FrameTransformer(ref_dim, dropout=ad)
        self.randomref_embedding2 = latent_stack(cfg.in_dim, ref_dim, 4 * cd)
        self.randomref_embedding_after2 = FrameTransformer(ref_dim, dropout=ad)

        def temporal(channels: int, n_heads: int) -> nn.Module:
            return build_temporal_module(cfg, channels, n_heads, head_dim)

        # encoder; kinds record how each sub-module is called in forward
        enc_dims = [dim * m for m in (1, *cfg.dim_mult)]
        dec_dims = [dim * m for m in (cfg.dim_mult[-1], *cfg.dim_mult[::-1])]
        self.input_blocks = nn.ModuleList()
        kinds_in: list[tuple[str, ...]] = []
        first = nn.ModuleList([nn.Conv2d(cfg.in_dim + cd, dim, 3, padding=1)])
        kinds_first = ["conv"]
        if cfg.temporal_attention:
            first.append(temporal(dim, cfg.num_heads))
            kinds_first.append("temporal")
        self.input_blocks.append(first)
        kinds_in.append(tuple(kinds_first))
        shortcut_dims = [dim]
        scale = 1.0
        out_dim = dim
        for level, (in_dim, out_dim) in enumerate(zip(enc_dims[:-1], enc_dims[1:])):
            for j in range(cfg.num_res_blocks):
                block, kinds = self._res_attn_block(in_dim, out_dim, scale, temporal)
                self.input_blocks.append(block)
                kinds_in.append(kinds)
                shortcut_dims.append(out_dim)
                in_dim = out_dim
                if level != len(cfg.dim_mult) - 1 and j == cfg.num_res_blocks - 1:
                    self.input_blocks.append(Downsample(out_dim))
                    kinds_in.append(("down",))
                    shortcut_dims.append(out_dim)
                    scale /= 2.0

        # middle
        self.middle_block = nn.ModuleList([
            self._res_block(out_dim, out_dim),
            SpatialTransformer(out_dim, out_dim // head_dim, head_dim, ctx, groups=groups)])
        kinds_mid = ["res", "spatial"]
        if cfg.temporal_attention:
            self.middle_block.append(temporal(out_dim, out_dim // head_dim))
            kinds_mid.append("temporal")
        self.middle_block.append(self._res_block(out_dim, out_dim))
        kinds_mid.append("res")

        # decoder
        self.output_blocks = nn.ModuleList()
        kinds_out: list[tuple[str, ...]] = []
        for level, (in_dim, out_dim) in enumerate(zip(dec_dims[:-1], dec_dims[1:])):
            for j in range(cfg.num_res_blocks + 1):
                # spec quirk: the reference hard-codes context 1024 here; we use context_dim
                block, kinds = self._res_attn_block(in_dim + shortcut_dims.pop(), out_dim, scale, temporal)
                in_dim = out_dim
                if level != len(cfg.dim_mult) - 1 and j == cfg.num_res_blocks:
                    block.append(Upsample(out_dim))
                    kinds = (*kinds, "up")
                    scale *= 2.0
                self.output_blocks.append(block)
                kinds_out.append(kinds)

        # head: only the conv weight is zeroed (the reference keeps its default-initialised bias)
        self.out = nn.Sequential(nn.GroupNorm(groups, out_dim), nn.SiLU(), nn.Conv2d(out_dim, cfg.out_dim, 3, padding=1))
        with torch.no_grad():
            self.out[-1].weight.zero_()

        self._kinds_in = tuple(kinds_in)
        self._kinds_mid = tuple(kinds_mid)
        self._kinds_out = tuple(kinds_out)

    def _res_block(self, in_dim: int, out_dim: int) -> ResBlock:
        cfg = self.config
        return ResBlock(in_dim, cfg.embed_dim, cfg.dropout, out_dim, groups=cfg.norm_groups,
                        temporal_dropout=cfg.temporal_dropout)

    def _res_attn_block(self, in_dim: int, out_dim: int, scale: float,
                        temporal: Callable[[int, int], nn.Module]) -> tuple[nn.ModuleList, tuple[str, ...]]:
        cfg = self.config
        block = nn.ModuleList([self._res_block(in_dim, out_dim)])
        kinds = ["res"]
        if scale in cfg.attn_scales:
            block.append(SpatialTransformer(out_dim, out_dim // cfg.head_dim, cfg.head_dim, cfg.context_dim,
                                            groups=cfg.norm_groups))
            kinds.append("spatial")
            if cfg.temporal_attention:
                block.append(temporal(out_dim, out_dim // cfg.head_dim))
                kinds.append("temporal")
        return block, tuple(kinds)

    # ------------------------------------------------------------------ helpers
    @property
    def dtype(self) -> torch.dtype:
        return self.time_embed[0].weight.dtype

    @property
    def device(self) -> torch.device:
        return self.time_embed[0].weight.device

    def num_parameters(self) -> int:
        """Total parameter count (1,416,564,300 for the released config)."""
        return sum(p.numel() for p in self.parameters())

    @torch.no_grad()
    def to_channels_last_(self) -> "UniAnimateUNet":
        """Store every 2-D conv weight in channels_last (NHWC) memory format, in place.

        Only the 2-D convs: ``Module.to(memory_format=...)`` refuses the 5-D temporal conv weights.
        Values and state-dict keys are unchanged; it pays on CUDA tensor cores and some CPUs.
        """
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)
        return self

    @torch.no_grad()
    def init_random_weights_(self, seed: int, scale: float = 1.0) -> "UniAnimateUNet":
        """Seeded random weights for tests, benchmarks and tiny models: EVERY parameter, including the
        zero-initialised ones, so every path reaches the output. Weights ~ N(0, scale^2/fan_in),
        norm weights ~ 1 + 0.1 N, other vectors ~ 0.1 N. Works after ``to_empty`` (meta init)."""
        gen = make_generator(seed, self.device)
        for name, p in self.named_parameters():
            if p.ndim >= 2:
                p.normal_(0.0, scale / (p[0].numel() ** 0.5), generator=gen)
            elif name.endswith("weight"):  # GroupNorm / LayerNorm affine weights
                p.normal_(1.0, 0.1, generator=gen)
            else:
                p.normal_(0.0, 0.1, generator=gen)
        return self

    def load_official_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Strictly load the reference's state dict (also ``{'state_dict': ...}`` / ``module.`` forms).

        The whole key set and every shape are checked BEFORE anything is copied; on any mismatch a
        CheckpointError names the missing / unexpected / mis-shaped keys and the model is untouched.
        Values are copied into the existing parameters (converted to their dtype and device).
        """
        sd = unwrap_state_dict(state_dict)
        own = self.state_dict(keep_vars=True)
        validate_state_dict({k: tuple(v.shape) for k, v in own.items()}, sd,
                            what=f"UniAnimateUNet(temporal_module={self.config.temporal_module!r})")
        if any(v.is_meta for v in own.values()):
            raise CheckpointError("the UNet is on the meta device; materialise it first "
                                  "(unet.to_empty(device=...)) and then load the state dict")
        with torch.no_grad():
            for key, target in own.items():
                target.copy_(sd[key])
        logger.info("loaded %d tensors into UniAnimateUNet", len(own))

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, t: torch.Tensor | int, text_context: torch.Tensor | None = None,
                image_embedding: torch.Tensor | None = None, pose: torch.Tensor | None = None,
                ref_pose: torch.Tensor | None = None, ref_latent: torch.Tensor | None = None,
                first_frame: torch.Tensor | None = None,
                drop_conditions: torch.Tensor | None = None,
                conditions: ConditionEmbeddings | None = None) -> torch.Tensor:
        """v-prediction (B,out_dim,F,h,w) for the noisy latent x (B,in_dim,F,h,w) at timesteps t (B,).

        Either the raw conditions (a one-off call): text_context (B or 1, L, context_dim);
        image_embedding (B, context_dim); pose (B,3,F,H,W) and ref_pose (B,3,H,W) in [0,1];
        ref_latent (B,in_dim,h,w); first_frame (B,3,H,W) in [0,1] (H, W = 8h, 8w);
        ``drop_conditions`` (B,) bool: True rows behave as if every condition were None (only
        text_context kept); (B, 4) bool drops each condition of :data:`CONDITIONS` on its own
        (training's per-condition dropout). Or ``conditions`` from :meth:`encode_conditions` for the same shape, which
        gives the same numbers without recomputing the step-independent embeddings.
        """
        if conditions is None:
            if text_context is None:
                raise InputError("the UNet needs text_context (or conditions= from encode_conditions)")
            conditions = self.encode_conditions(tuple(x.shape), text_context, image_embedding, pose, ref_pose,
                                                ref_latent, first_frame, drop_conditions)
        elif any(c is not None for c in (text_context, image_embedding, pose, ref_pose, ref_latent,
                                         first_frame, drop_conditions)):
            raise InputError("pass either conditions= (from encode_conditions) or the raw conditions, not both")
        return self._denoise(x, t, conditions)

    def encode_conditions(self, latent_shape: Sequence[int], text_context: torch.Tensor,
                          image_embedding: torch.Tensor | None = None, pose: torch.Tensor | None = None,
                          ref_pose: torch.Tensor | None = None, ref_latent: torch.Tensor | None = None,
                          first_frame: torch.Tensor | None = None,
                          drop_conditions: torch.Tensor | None = None,
                          context_kv: bool = True) -> ConditionEmbeddings:
        """The step-independent part of a call for latents of ``latent_shape`` (B,in_dim,F,h,w): run
        once per segment (per window in long mode), pass as ``conditions=`` at every step.

        Arguments as in :meth:`forward`; a condition given as None contributes zeros, and rows whose
        ``drop_conditions`` is True get the zeros of a dropped condition (the unconditional pass).
        ``context_kv``: also project the context to every spatial transformer's cross-attention keys
        and values, once for the B rows (the layers would otherwise project the context repeated for
        every frame, at every step); the output is the same bit for bit.
        """
        cfg = self.config
        dtype, device = self.dtype, self.device
        b, f, h, w = self._check_inputs(latent_shape, text_context, image_embedding, pose, ref_pose,
                                        ref_latent, first_frame)
        keeps = self._keep_masks(drop_conditions, b, device)
        # a condition dropped in every row is the same as None
        if keeps["image_embedding"] is False:
            image_embedding = None
        if keeps["reference"] is False:
            ref_latent = ref_pose = None
        if keeps["first_frame"] is False:
            first_frame = None
        if keeps["pose"] is False:
            pose = None

        # concat channels (B,cd,F,h,w) and the reference slot (B,cd+in_dim,1,h,w); None -> zeros
        concat = torch.zeros(b, cfg.concat_dim, f, h, w, dtype=dtype, device=device)
        if first_frame is not None:
            concat = concat + self._kept(lambda img: self._first_frame_term(img, f), keeps["first_frame"],
                                         first_frame.to(dtype))
        if pose is not None:
            concat = concat + self._kept(self._pose_term, keeps["pose"], pose.to(dtype))
        ref_slot = torch.zeros(b, cfg.concat_dim + cfg.in_dim, 1, h, w, dtype=dtype, device=device)
        if ref_latent is not None:
            keep = keeps["reference"]
            if ref_pose is None:
                term = self._kept(self._ref_term, keep, ref_latent.to(dtype))
            else:
                term = self._kept(self._ref_term, keep, ref_latent.to(dtype), ref_pose.to(dtype))
            ref_slot = ref_slot + term

        # context: text, then the image tokens (zeros without an image embedding)
        text = text_context.to(dtype)
        text = text.expand(b, -1, -1) if text.shape[0] == 1 else text  # (B,L,C)
        if image_embedding is not None:
            tokens = self._kept(self._image_tokens, keeps["image_embedding"],
                                image_embedding.to(dtype))  # (B,num_tokens,C)
        else:
            tokens = text.new_zeros(b, cfg.num_tokens, cfg.context_dim)
        context = torch.cat([text, tokens], dim=1)  # (B,L+num_tokens,C)
        kv = tuple(m.context_kv(context) for m in self._spatial_transformers()) if context_kv else None
        return ConditionEmbeddings(concat=concat, ref_slot=ref_slot, context=context, context_kv=kv)

    def _spatial_transformers(self) -> list[SpatialTransformer]:
        """The spatial transformers in the order :meth:`_denoise` runs them."""
        return [m for m in self.modules() if isinstance(m, SpatialTransformer)]

    def _denoise(self, x: torch.Tensor, t: torch.Tensor | int, conditions: ConditionEmbeddings) -> torch.Tensor:
        """The per-step part of :meth:`forward`: x (B,in_dim,F,h,w) with encoded conditions."""
        cfg = self.config
        dtype, device = self.dtype, self.device
        if x.ndim != 5 or x.shape[1] != cfg.in_dim:
            raise InputError(f"x has shape {tuple(x.shape)}; expected (B,{cfg.in_dim},F,h,w)")
        b, _, f, h, w = x.shape
        if conditions.latent_size != (b, f, h, w):
            raise InputError(f"conditions were encoded for (B,F,h,w) = {conditions.latent_size}, but x has shape "
                             f"{tuple(x.shape)}; call encode_conditions with this latent shape")
        x = x.to(dtype)
        x = torch.cat([conditions.ref_slot, torch.cat([x, conditions.concat], dim=1)], dim=2)  # (B,in+cd,F+1,h,w)
        fp = f + 1

        # time embedding and context, repeated for every frame (reference slot included)
        t = torch.as_tensor(t, device=device)
        t = t.expand(b) if t.ndim == 0 else t
        if t.shape != (b,):
            raise InputError(f"t has shape {tuple(t.shape)}; expected ({b},) integer timesteps (or a scalar)")
        emb = self.time_embed(sinusoidal_embedding(t, cfg.dim).to(dtype))  # (B,E)
        emb = emb.repeat_interleave(fp, dim=0)  # (B*Fp,E)
        if conditions.context_kv is None:
            context: Any = conditions.context.repeat_interleave(fp, dim=0)  # (B*Fp,L+num_tokens,C)
        else:
            context = iter(conditions.context_kv)  # one (keys, values) set per spatial transformer, in order

        x = x.transpose(1, 2).reshape(b * fp, -1, h, w)  # (B,C,Fp,h,w) -> (B*Fp,C,h,w)
        skips = []
        for block, kinds in zip(self.input_blocks, self._kinds_in):
            x = self._run_block(block, kinds, x, emb, context, b)
            skips.append(x)
        x = self._run_block(self.middle_block, self._kinds_mid, x, emb, context, b)
        for block, kinds in zip(self.output_blocks, self._kinds_out):
            x = torch.cat([x, skips.pop()], dim=1)  # (B*Fp,C+Cskip,h',w')
            x = self._run_block(block, kinds, x, emb, context, b)

        # the head is per frame: run it on frames 1..F only (the reference slot is dropped anyway)
        c = x.shape[1]
        x = x.view(b, fp, c, h, w)[:, 1:].reshape(b * f, c, h, w)  # (B*F,C,h,w)
        x = self.out(x)
        return x.view(b, f, cfg.out_dim, h, w).transpose(1, 2)  # (B,F,out,h,w) -> (B,out,F,h,w)

    def _run_block(self, block: nn.Module, kinds: tuple[str, ...], x: torch.Tensor, emb: torch.Tensor,
                   context: "torch.Tensor | Iterator[Any]", batch: int) -> torch.Tensor:
        """``context``: the repeated context (B*Fp,M,C), or an iterator over the spatial transformers'
        precomputed cross-attention keys and values (:attr:`ConditionEmbeddings.context_kv`)."""
        modules = block if isinstance(block, nn.ModuleList) else [block]
        for module, kind in zip(modules, kinds):
            if kind == "res":
                x = module(x, emb, batch)
            elif kind == "spatial":
                x = module(x, context) if isinstance(context, torch.Tensor) else module(x, kv=next(context))
            elif kind == "temporal":
                n, c, h, w = x.shape
                x5 = x.view(batch, n // batch, c, h, w).transpose(1, 2)  # (B,F,C,h,w) -> (B,C,F,h,w)
                x5 = module(x5)
                x = x5.transpose(1, 2).reshape(n, c, h, w)  # (B,F,C,h,w) -> (B*F,C,h,w)
            else:  # conv, down, up
                x = module(x)
        return x

    # ------------------------------------------------------------------ condition terms
    def _first_frame_term(self, image: torch.Tensor, frames: int) -> torch.Tensor:
        """(b,3,H,W) -> (b,cd,F,h,w): the reference feeds the first frame repeated over F frames;
        the conv stack is per frame, so it runs once and its output is repeated."""
        feat = self.local_image_embedding(image)  # (b,cd,h,w)
        feat = feat.unsqueeze(2).expand(-1, -1, frames, -1, -1)  # (b,cd,F,h,w)
        return self.local_image_embedding_after.forward_video(feat)

    def _pose_term(self, pose: torch.Tensor) -> torch.Tensor:
        """(b,3,F,H,W) -> (b,cd,F,h,w)."""
        b, c, f, hh, ww = pose.shape
        feat = self.dwpose_embedding(pose.transpose(1, 2).reshape(b * f, c, hh, ww))  # (b*F,cd,h,w)
        feat = feat.view(b, f, *feat.shape[1:]).transpose(1, 2)  # (b,F,cd,h,w) -> (b,cd,F,h,w)
        return self.dwpose_embedding_after.forward_video(feat)

    def _ref_term(self, latent: torch.Tensor, ref_pose: torch.Tensor | None = None) -> torch.Tensor:
        """(b,in,h,w) [+ (b,3,H,W)] -> (b,cd+in,1,h,w)."""
        feat = self.randomref_embedding2(latent).unsqueeze(2)  # (b,cd+in,1,h,w)
        out = self.randomref_embedding_after2.forward_video(feat)
        if ref_pose is not None:
            pfeat = self.randomref_pose2_embedding(ref_pose).unsqueeze(2)  # (b,cd+in,1,h,w)
            out = out + self.randomref_pose2_embedding_after.forward_video(pfeat)
        return out

    def _image_tokens(self, embedding: torch.Tensor) -> torch.Tensor:
        """(b,C) -> (b,num_tokens,C)."""
        cfg = self.config
        tokens = self.pre_image_condition(embedding)  # (b,num_tokens*C)
        return tokens.view(-1, cfg.num_tokens, cfg.context_dim)  # (b,num_tokens,C)

    @staticmethod
    def _keep_masks(drop: torch.Tensor | None, batch: int,
                    device: torch.device) -> dict[str, torch.Tensor | bool | None]:
        """Per condition: None (every row kept), False (every row dropped) or the (B,) keep mask."""
        if drop is None:
            return dict.fromkeys(CONDITIONS)
        drop = torch.as_tensor(drop, device=device)
        if drop.dtype != torch.bool or drop.shape not in ((batch,), (batch, len(CONDITIONS))):
            raise InputError(f"drop_conditions must be a ({batch},) or ({batch}, {len(CONDITIONS)}) bool "
                             f"tensor (columns {CONDITIONS}); got {tuple(drop.shape)} {drop.dtype}")
        cols = drop.unsqueeze(1).expand(batch, len(CONDITIONS)) if drop.ndim == 1 else drop
        out: dict[str, torch.Tensor | bool | None] = {}
        for i, name in enumerate(CONDITIONS):
            keep = ~cols[:, i]
            out[name] = None if bool(keep.all()) else (False if not bool(keep.any()) else keep)
        return out

    @staticmethod
    def _kept(fn: Callable[..., torch.Tensor], keep: torch.Tensor | None,
              *inputs: torch.Tensor) -> torch.Tensor:
        """fn on the kept rows only; dropped rows get zeros (a zero contribution, not fn(0))."""
        if keep is None:
            return fn(*inputs)
        index = keep.nonzero().squeeze(1)  # (k,)
        kept = fn(*(i.index_select(0, index) for i in inputs))  # (k,...)
        out = kept.new_zeros((keep.shape[0], *kept.shape[1:]))  # (B,...)
        return out.index_copy(0, index, kept)

    def _check_inputs(self, latent_shape: Sequence[int], text_context: torch.Tensor,
                      image_embedding: torch.Tensor | None, pose: torch.Tensor | None,
                      ref_pose: torch.Tensor | None, ref_latent: torch.Tensor | None,
                      first_frame: torch.Tensor | None) -> tuple[int, int, int, int]:
        cfg = self.config
        shape = tuple(int(s) for s in latent_shape)
        if len(shape) != 5 or shape[1] != cfg.in_dim:
            raise InputError(f"x has shape {shape}; expected (B,{cfg.in_dim},F,h,w)")
        b, _, f, h, w = shape
        factor = 2 ** (len(cfg.dim_mult) - 1)
        if h % factor or w % factor:
            raise InputError(f"latent size {h}x{w} is not divisible by {factor}; use image sizes that are "
                             f"multiples of {PIXEL_TO_LATENT * factor} pixels")
        hh, ww = h * PIXEL_TO_LATENT, w * PIXEL_TO_LATENT
        expected = {
            "text_context": (text_context, (None, None, cfg.context_dim)),
            "image_embedding": (image_embedding, (b, cfg.context_dim)),
            "pose": (pose, (b, 3, f, hh, ww)),
            "ref_pose": (ref_pose, (b, 3, hh, ww)),
            "ref_latent": (ref_latent, (b, cfg.in_dim, h, w)),
            "first_frame": (first_frame, (b, 3, hh, ww)),
        }
        for name, (tensor, shape) in expected.items():
            if tensor is None:
                continue
            ok = tensor.ndim == len(shape) and all(s is None or s == d for s, d in zip(shape, tensor.shape))
            if not ok:
                want = tuple("*" if s is None else s for s in shape)
                raise InputError(f"{name} has shape {tuple(tensor.shape)}; expected {want} for x of shape "
                                 f"{shape}")
        if text_context.shape[0] not in (1, b):
            raise InputError(f"text_context batch {text_context.shape[0]} must be 1 or {b}")
        return b, f, h, w
