"""Poses fitted to the output canvas the way the reference image is (crop / pad / stretch).

Pose coordinates are normalised to the frame they were detected in (``PoseSequence.width`` x
``height``). Drawn straight onto a ``W`` x ``H`` canvas they are stretched to it; when the
reference was letterboxed (``pad``) or cropped (``crop``) onto that canvas, the unaligned skeleton
then spans another area than the person in the reference. :func:`fit_poses` maps every point
through the same geometry as :func:`unianimate.imaging.fit_image` (``fit_geometry``), so a pose
lands on the fitted image's pixels. Alignment to the reference pose already works in canvas
coordinates and needs no fit.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from unianimate.errors import InputError
from unianimate.imaging import fit_geometry
from unianimate.pose.types import MISSING, POINT_FIELDS, Pose, PoseSequence, stack_poses, unstack_poses


def _size(size: Sequence[int], what: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in size)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be (width, height), got {size!r}") from None
    if w <= 0 or h <= 0:
        raise InputError(f"{what} must be positive, got {w}x{h}")
    return w, h


def fit_pose_list(poses: Sequence[Pose], src_size: Sequence[int], dst_size: Sequence[int],
                  mode: str) -> list[Pose]:
    """Poses normalised to ``src_size`` (width, height) -> normalised to ``dst_size`` after the
    ``mode`` fit (``crop`` | ``pad`` | ``stretch``); missing points stay missing. Points cut
    off by ``crop`` fall outside [0, 1] and are kept (drawing clips them)."""
    src_w, src_h = _size(src_size, "source size")
    dst_w, dst_h = _size(dst_size, "target size")
    sw, sh, left, top = fit_geometry(src_w, src_h, dst_w, dst_h, mode)
    poses = list(poses)
    if mode == "stretch" or not poses:
        return [p.copy() for p in poses]
    arrays = stack_poses(poses)
    scale = np.array([sw / dst_w, sh / dst_h])
    offset = np.array([left / dst_w, top / dst_h])
    for part in POINT_FIELDS:
        pts = arrays[part]
        ok = pts[..., 0] != MISSING
        moved = pts * scale + offset
        # a moved point must never read as the missing marker
        moved = np.where(moved == MISSING, np.nextafter(MISSING, 0.0), moved)
        arrays[part] = np.where(ok[..., None], moved, MISSING)
    return unstack_poses(arrays)


def fit_poses(seq: PoseSequence, dst_size: Sequence[int], mode: str) -> PoseSequence:
    """``seq`` (normalised to its own ``width`` x ``height``) fitted onto a ``dst_size``
    (width, height) canvas like the reference image (see :func:`fit_pose_list`); the result's
    size is ``dst_size``."""
    dst_w, dst_h = _size(dst_size, "target size")
    poses = fit_pose_list(seq.poses, (seq.width, seq.height), (dst_w, dst_h), mode)
    meta = dict(seq.meta, fitted={"from": [seq.width, seq.height], "mode": mode})
    return PoseSequence(poses, seq.fps, dst_w, dst_h, meta)
