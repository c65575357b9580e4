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
    """Generates the frames of one segment (uint8 (F, H, W, 3)).

    ``precision`` is the UNet's ("fp32", "fp16", "bf16"). Per call: ``batch_guidance`` (False:
    the two guidance passes as two UNet calls), ``decode_chunk`` (frames per VAE decode) and
    ``offload`` (CLIP and VAE on the CPU between uses; None: the animator's default).
    :meth:`generate_long` is the reference's sliding-window long mode (``window`` frames per
    UNet call, ``overlap`` frames shared by neighbouring windows).
    """

    model_name: str
    is_tiny: bool
    precision: str

    def generate_segment(self, reference: np.ndarray, poses: np.ndarray, ref_pose: np.ndarray, *,
                         first_frame: np.ndarray | None, num_frames: int, seed: int,
                         num_inference_steps: int, guidance_scale: float, noise_prior_t: int,
                         callback: Callable[..., None] | None,
                         should_cancel: Callable[[], bool] | None, sampler: str | None,
                         batch_guidance: bool | None = None, decode_chunk: int | None = None,
                         offload: bool | None = None) -> Any: ...

    def generate_long(self, reference: np.ndarray, poses: np.ndarray, ref_pose: np.ndarray, *,
                      first_frame: np.ndarray | None, seed: int, num_inference_steps: int,
                      guidance_scale: float, noise_prior_t: int, window: int, overlap: int,
                      callback: Callable[..., None] | None,
                      should_cancel: Callable[[], bool] | None, sampler: str | None,
                      batch_guidance: bool | None = None, decode_chunk: int | None = None,
                      offload: bool | None = None) -> Any: ...


class AnimatorFactory(Protocol):
    """Builds the animator on first use; gets ``report(message)`` for weight-loading progress.
    Called as ``factory(report)`` for the default precision and ``factory(report, precision)``
    for another one ("fp32", "fp16", "bf16"); a factory that cannot build it raises InputError."""

    def __call__(self, report: Callable[[str], None], precision: str = "auto") -> Animator: ...


PoseDetectorFactory = Callable[[], PoseDetector]

__all__ = ["Animator", "AnimatorFactory", "PoseDetector", "PoseDetectorFactory"]
