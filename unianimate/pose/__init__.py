"""Poses: keypoint data, JSON I/O, drawing as the model saw it, alignment, smoothing, DWPose
extraction and importers. numpy in and out; no torch, no Gradio.

Heavy parts (onnxruntime, PyAV) are imported on first use of their names.
"""
from __future__ import annotations

import importlib
from typing import Any

from unianimate.pose.align import AlignmentReport, align_poses, align_poses_report
from unianimate.pose.draw import draw_overlay, draw_pose, draw_poses
from unianimate.pose.io import (load_pose_sequence, loads, dumps, save_pose_sequence,
                                sequence_from_dict, sequence_to_dict)
from unianimate.pose.types import BODY_NAMES, MISSING, Pose, PoseSequence

_LAZY = {
    "OneEuroConfig": "unianimate.pose.smooth", "smooth_poses": "unianimate.pose.smooth",
    "fill_gaps": "unianimate.pose.smooth", "smooth_sequence": "unianimate.pose.smooth",
    "DWPoseConfig": "unianimate.pose.dwpose", "DWPoseDetector": "unianimate.pose.dwpose",
    "DetectionResult": "unianimate.pose.dwpose",
    "ExtractionResult": "unianimate.pose.extract", "extract_poses": "unianimate.pose.extract",
    "DrivingInput": "unianimate.pose.importers", "load_driving": "unianimate.pose.importers",
    "load_pose_input": "unianimate.pose.importers", "classify_driving": "unianimate.pose.importers",
    "driving_needs_detector": "unianimate.pose.importers",
    "smooth_with_strength": "unianimate.pose.smooth", "smoothing_preview": "unianimate.pose.smooth",
    "first_frame_people": "unianimate.pose.extract", "PersonTracker": "unianimate.pose.track",
    "fit_poses": "unianimate.pose.fit", "fit_pose_list": "unianimate.pose.fit",
}

__all__ = [
    "MISSING", "BODY_NAMES", "Pose", "PoseSequence", "draw_pose", "draw_poses", "draw_overlay",
    "align_poses", "align_poses_report", "AlignmentReport", "save_pose_sequence",
    "load_pose_sequence", "dumps", "loads", "sequence_to_dict", "sequence_from_dict", *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'unianimate.pose' has no attribute {name!r}")
