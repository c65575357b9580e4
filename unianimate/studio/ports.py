"""What the studio needs of the model side, as typed ports.

:class:`~unianimate.pipeline.UniAnimatePipeline` is an :class:`Animator`;
:class:`~unianimate.pose.DWPoseDetector` is a :class:`PoseDetector` (the protocol
``unianimate.pose.extract`` already defines for pose extraction). The composition root
(:mod:`unianimate.compose`) hands the studio factories of both; the
studio never imports them.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from unianimate.pose.extract import Detector as PoseDetector


class Animator(Protocol):
    """Generates the frames of one segment (uint8 (F, H, W, 3))."""

    model_name: str
    is_tiny: bool

    def generate_segment(self, reference: np.ndarray, poses: np.ndarray, ref_pose: np.ndarray, *,
                         first_frame: np.ndarray | None, num_frames: int, seed: int,
                         num_inference_steps: int, guidance_scale: float, noise_prior_t: int,
                         callback: Callable[..., None] | None,
                         should_cancel: Callable[[], bool] | None, sampler: str | None) -> Any: ...


#: builds the animator on first use; gets ``report(message)`` for weight-loading progress
AnimatorFactory = Callable[[Callable[[str], None]], Animator]
PoseDetectorFactory = Callable[[], PoseDetector]

__all__ = ["Animator", "AnimatorFactory", "PoseDetector", "PoseDetectorFactory"]
