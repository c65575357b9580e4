"""Generation settings: one frozen dataclass, its ranges checked in one place. A snapshot is
stored with every candidate so it can be re-rendered from the manifest."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from unianimate.errors import InputError, ProjectError
from unianimate.utils import check_known_keys


@dataclass(frozen=True)
class GenerationSettings:
    """Settings of a generation; a snapshot is stored with every candidate for re-rendering."""

    frames_per_segment: int = 16
    steps: int = 30
    guidance: float = 2.5
    noise_prior_t: int = 949
    base_seed: int = 0
    candidates: int = 2
    color_correction: bool = True
    color_threshold: float = 12.0

    def validated(self) -> "GenerationSettings":
        """Return self after range checks; raises ProjectError naming the bad value."""
        problems = []
        if not (2 <= self.frames_per_segment <= 128):
            problems.append(f"frames_per_segment={self.frames_per_segment} (use 2..128)")
        if not (1 <= self.steps <= 1000):
            problems.append(f"steps={self.steps} (use 1..1000)")
        if not (0.0 <= self.guidance <= 50.0):
            problems.append(f"guidance={self.guidance} (use 0..50)")
        if not (0 <= self.noise_prior_t <= 999):
            problems.append(f"noise_prior_t={self.noise_prior_t} (use 0..999)")
        if not (0 <= self.base_seed < 2**31 - 10**7):
            problems.append(f"base_seed={self.base_seed} (use 0..2_000_000_000)")
        if not (1 <= self.candidates <= 16):
            problems.append(f"candidates={self.candidates} (use 1..16)")
        if not (0.0 <= self.color_threshold <= 255.0):
            problems.append(f"color_threshold={self.color_threshold} (use 0..255)")
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


__all__ = ["GenerationSettings"]
