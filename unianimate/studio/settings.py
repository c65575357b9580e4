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

__all__ = ["GenerationSettings", "Limit", "STRICT"]
