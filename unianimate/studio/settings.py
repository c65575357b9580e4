"""Generation settings: one frozen dataclass, its ranges checked in one place. A snapshot is
stored with every candidate so it can be re-rendered from the manifest."""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from pydantic import ConfigDict, with_config

from unianimate.errors import InputError, ProjectError
from unianimate.utils import check_known_keys


@dataclass(frozen=True)
class Limit:
    """The allowed range of a setting (``lo``..``hi``), its label, and the narrower range the UI
    offers (``ui_lo``..``ui_hi``: the sliders, and what the app's API accepts)."""

    lo: float
    hi: float
    label: str
    ui_lo: float
    ui_hi: float
    whole: bool = True

    def span(self, ui: bool = False) -> str:
        lo, hi = (self.ui_lo, self.ui_hi) if ui else (self.lo, self.hi)
        return f"{lo:g}..{hi:g}"


def _limit(lo: float, hi: float, label: str, ui: tuple[float, float] | None = None,
           whole: bool = True) -> dict[str, Limit]:
    ui_lo, ui_hi = ui if ui is not None else (lo, hi)
    return {"limit": Limit(lo, hi, label, ui_lo, ui_hi, whole)}


#: how the manifest's dataclasses are parsed (:func:`unianimate.studio.manifest.build_strict`):
#: unknown keys and lossy types refused, no NaN or infinity
STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


@with_config(STRICT)
@dataclass(frozen=True)
class GenerationSettings:
    """Settings of a generation; a snapshot is stored with every candidate for re-rendering.

    Every number field carries its :class:`Limit` (``GenerationSettings.limit(name)``): the one
    source of the ranges that :meth:`validated`, the UI sliders and the app's API checks use.
    """

    frames_per_segment: int = field(default=16, metadata=_limit(2, 128, "frames per segment",
                                                                ui=(2, 64)))
    steps: int = field(default=30, metadata=_limit(1, 1000, "denoising steps", ui=(1, 100)))
    guidance: float = field(default=2.5, metadata=_limit(0.0, 50.0, "guidance", ui=(0.0, 10.0),
                                                         whole=False))
    noise_prior_t: int = field(default=949, metadata=_limit(0, 999, "noise prior t"))
    base_seed: int = field(default=0, metadata=_limit(0, 2**31 - 10**7 - 1, "base seed"))
    candidates: int = field(default=2, metadata=_limit(1, 16, "candidates", ui=(1, 4)))
    color_correction: bool = True
    color_threshold: float = field(default=12.0, metadata=_limit(0.0, 255.0, "colour threshold",
                                                                 whole=False))
    #: the denoising sampler (``unianimate.sampling.SAMPLERS``; quality per step count in
    #: docs/SAMPLERS.md); older manifests without it used the reference's DDIM
    sampler: str = "ddim"
    # ---- VRAM / speed choices that change the output's bits (so they are stored with every
    # candidate and a re-render uses them); older manifests have the defaults, which are
    # exactly how they were made: batched guidance and the device's default precision
    #: the conditional and unconditional guidance passes as two UNet calls instead of one call
    #: on a batch of two (less memory, a little slower; differs from batched in the last bits)
    sequential_guidance: bool = False
    #: the UNet's precision: "auto" (fp16 on a GPU, fp32 on the CPU), "fp32", "fp16" or "bf16"
    #: (what the device supports: ``PRECISIONS``); changing it rebuilds the model
    precision: str = "auto"
    # ---- the reference's sliding-window long mode (``UniAnimatePipeline.generate_long``)
    #: every denoising step runs the UNet on ``window``-frame windows that overlap by
    #: ``overlap`` frames and averages them, so one segment can be longer than the model's
    #: 16/32 frames without seams
    long_mode: bool = False
    window: int = field(default=32, metadata=_limit(2, 128, "long-mode window (frames)",
                                                    ui=(4, 64)))
    overlap: int = field(default=8, metadata=_limit(0, 127, "long-mode overlap (frames)",
                                                    ui=(0, 32)))

    @staticmethod
    def sampler_choices() -> tuple[str, ...]:
        """The allowed ``sampler`` values (``unianimate.sampling.SAMPLERS``), DDIM first."""
        from unianimate.sampling import SAMPLERS   # lazy: the studio imports no torch for this
        return tuple(SAMPLERS)

    @staticmethod
    def limit(name: str) -> Limit:
        """The range of setting ``name`` (KeyError for a field without one)."""
        return _LIMITS[name]

    def validated(self) -> "GenerationSettings":
        """Return self after range checks; raises ProjectError naming the bad value."""
        samplers = self.sampler_choices()
        problems = [f"{name}={getattr(self, name)} (use {lim.span()})"
                    for name, lim in _LIMITS.items()
                    if not lim.lo <= getattr(self, name) <= lim.hi]
        if self.sampler not in samplers:
            problems.append(f"sampler={self.sampler!r} (use one of {', '.join(samplers)})")
        if self.precision not in PRECISIONS:
            problems.append(f"precision={self.precision!r} (use one of {', '.join(PRECISIONS)})")
        if self.overlap >= self.window:
            problems.append(f"overlap={self.overlap} (must be below window={self.window})")
        if problems:
            raise ProjectError("invalid generation settings: " + "; ".join(problems))
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GenerationSettings":
        """Build from a manifest dict; unknown keys or wrong types raise ProjectError."""
        from unianimate.studio.manifest import build_strict
        return build_strict(cls, data, "settings")

    def with_changes(self, **changes: Any) -> "GenerationSettings":
        """A copy with UI/CLI values (strings, floats) converted to each field's type and the
        ranges checked; InputError naming the field otherwise."""
        check_known_keys(GenerationSettings, changes, where="the generation settings")
        kinds = {f.name: type(getattr(self, f.name)) for f in fields(self)}
        typed = {key: _typed_setting(key, value, kinds[key]) for key, value in changes.items()}
        try:
            return replace(self, **typed).validated()
        except ProjectError as err:
            raise InputError(str(err)) from None


def _typed_setting(key: str, value: Any, kind: type) -> Any:
    """Convert a UI/CLI value to the setting's type; InputError for anything lossy or odd."""
    bad = InputError(f"setting {key}={value!r} is not a valid {kind.__name__}")
    if kind is str:
        if not isinstance(value, str):
            raise bad
        return value.strip()
    if kind is bool:
        if isinstance(value, str):
            if value.strip().lower() in ("1", "true", "yes", "on"):
                return True
            if value.strip().lower() in ("0", "false", "no", "off"):
                return False
            raise bad
        return bool(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise bad from None
    if number != number or number in (float("inf"), float("-inf")):
        raise bad
    if kind is int:
        if not number.is_integer():
            raise bad
        return int(number)
    return number


_LIMITS: dict[str, Limit] = {f.name: f.metadata["limit"] for f in fields(GenerationSettings)
                             if "limit" in f.metadata}

#: the UNet precisions a project may ask for ("auto": fp16 on a GPU, fp32 on the CPU)
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "fp16", "bf16")
#: CPU offload of the pipeline's components: "auto" (on for a GPU), "on", "off"
OFFLOAD_CHOICES: tuple[str, ...] = ("auto", "on", "off")
GiB = 1024 ** 3


@dataclass(frozen=True)
class SpeedOptions:
    """VRAM / speed choices of one run, which the machine decides per generation; they are not
    project settings because they leave the denoising unchanged.

    ``offload``: CLIP and the VAE wait on the CPU and visit the GPU only to encode/decode
    (``OFFLOAD_CHOICES``; "auto" = on for a GPU); the frames are the same bit for bit.
    ``decode_chunk``: frames per VAE decode call (fewer = less memory at the end of a
    candidate); the latents are the same, but convolution kernels depend on the batch size, so
    a pixel may round to the next level (at most 1 of 255, measured); each candidate records
    its chunk (``Candidate.decode_chunk``) and a re-render reuses it.
    """

    offload: str = "auto"
    decode_chunk: int = field(default=2, metadata=_limit(1, 128, "VAE decode chunk (frames)",
                                                         ui=(1, 16)))

    @staticmethod
    def limit(name: str) -> Limit:
        """The range of option ``name`` (KeyError for one without)."""
        return _SPEED_LIMITS[name]

    def validated(self) -> "SpeedOptions":
        """Return self after the checks; InputError naming the option otherwise."""
        lim = self.limit("decode_chunk")
        if isinstance(self.decode_chunk, bool) or not isinstance(self.decode_chunk, int) \
                or not lim.lo <= self.decode_chunk <= lim.hi:
            raise InputError(f"{lim.label} must be a whole number in {lim.span()}, got "
                             f"{self.decode_chunk!r}")
        if self.offload not in OFFLOAD_CHOICES:
            raise InputError(f"offload must be one of {', '.join(OFFLOAD_CHOICES)}, got "
                             f"{self.offload!r}")
        return self

    def pipeline_kwargs(self) -> dict[str, Any]:
        """The pipeline's per-call switches (``offload`` None = its default)."""
        return {"offload": {"auto": None, "on": True, "off": False}[self.offload],
                "decode_chunk": int(self.decode_chunk)}


_SPEED_LIMITS: dict[str, Limit] = {f.name: f.metadata["limit"] for f in fields(SpeedOptions)
                                   if "limit" in f.metadata}


@dataclass(frozen=True)
class SpeedPreset:
    """What the "auto" VRAM / speed preset chooses: two project settings (``precision``,
    ``sequential_guidance``) and the run's :class:`SpeedOptions`, with the reason."""

    precision: str
    sequential_guidance: bool
    offload: str
    decode_chunk: int
    reason: str

    def settings_changes(self) -> dict[str, Any]:
        """The :class:`GenerationSettings` part (for ``with_changes``/``set_settings``)."""
        return {"precision": self.precision, "sequential_guidance": self.sequential_guidance}

    def options(self) -> SpeedOptions:
        """The :class:`SpeedOptions` part."""
        return SpeedOptions(offload=self.offload, decode_chunk=self.decode_chunk)


def speed_preset(vram_bytes: int | None) -> SpeedPreset:
    """The "auto" preset from the detected GPU memory (None: no GPU, the CPU runs it).

    Sized on the released model (UNet 1.41 B parameters: 2.8 GB in fp16) and the reference's
    measurements (fp16 UNet, CLIP and VAE offloaded: about 12 GB for 32 frames at 768x512, 21 GB
    at 1216x768; docs spec §6):

    ========================  =========  ==========  =======  ============
    GPU memory                precision  sequential  offload  decode chunk
    ========================  =========  ==========  =======  ============
    none (CPU)                fp32       no          off      8
    below 12 GiB              fp16       yes         on       1
    12 to below 24 GiB        fp16       no          on       2
    24 to below 48 GiB        fp16       no          off      4
    48 GiB or more            fp16       no          off      8
    ========================  =========  ==========  =======  ============
    """
    if vram_bytes is None:
        return SpeedPreset("fp32", False, "off", 8, "no GPU: the CPU runs in fp32 and "
                           "offloading has nothing to save")
    if isinstance(vram_bytes, bool) or not isinstance(vram_bytes, int) or vram_bytes <= 0:
        raise InputError(f"GPU memory must be a positive number of bytes, got {vram_bytes!r}")
    gib = vram_bytes / GiB
    if gib < 12:
        return SpeedPreset("fp16", True, "on", 1, f"{gib:.0f} GiB GPU: every memory saving on")
    if gib < 24:
        return SpeedPreset("fp16", False, "on", 2, f"{gib:.0f} GiB GPU: CLIP and VAE offloaded")
    if gib < 48:
        return SpeedPreset("fp16", False, "off", 4, f"{gib:.0f} GiB GPU: everything stays on it")
    return SpeedPreset("fp16", False, "off", 8, f"{gib:.0f} GiB GPU: everything stays on it, "
                       "8 frames per decode")


__all__ = ["GenerationSettings", "GiB", "Limit", "OFFLOAD_CHOICES", "PRECISIONS", "STRICT",
           "SpeedOptions", "SpeedPreset", "speed_preset"]
