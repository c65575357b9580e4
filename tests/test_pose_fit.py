"""fit_poses: a skeleton lands where fit_image puts the same pixels (landscape + pad, crop, stretch)."""
from __future__ import annotations

import numpy as np
import pytest

from unianimate.errors import InputError
from unianimate.imaging import fit_image
from unianimate.pose import MISSING, PoseSequence
from unianimate.pose.fit import fit_pose_list, fit_poses
from unianimate.pose.synthetic import synthetic_pose


def _marker_image(w: int, h: int, x: float, y: float) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    cx, cy = int(x * w), int(y * h)
    img[cy - 6: cy + 6, cx - 6: cx + 6] = 255
    return img


def _centre(img: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(img[..., 0] > 127)
    return np.array([xs.mean() + 0.5, ys.mean() + 0.5])


@pytest.mark.parametrize("mode", ["pad", "crop", "stretch"])
@pytest.mark.parametrize("src", [(640, 360), (360, 640), (512, 512)])
def test_pose_follows_the_fitted_image(mode, src) -> None:
    w0, h0 = src
    W, H = 128, 192
    pose = synthetic_pose()
    for k in (0, 4, 10):                               # nose, right wrist, right ankle
        x, y = pose.body[k]
        fitted = fit_image(_marker_image(w0, h0, x, y), W, H, mode=mode)
        moved = fit_pose_list([pose], (w0, h0), (W, H), mode)[0].body[k]
        np.testing.assert_allclose(moved * [W, H], _centre(fitted), atol=1.5)


def test_landscape_pad_letterboxes_the_skeleton() -> None:
    """Issue 11 #10: a landscape source padded into a portrait canvas keeps its aspect ratio."""
    pose = synthetic_pose()
    seq = PoseSequence([pose], fps=8, width=640, height=360)
    out = fit_poses(seq, (512, 768), "pad")
    assert (out.width, out.height) == (512, 768) and out.meta["fitted"]["mode"] == "pad"
    b = out[0].body
    # 640x360 -> 512x288, centred vertically at y 240..528 of 768
    np.testing.assert_allclose(b[:, 0], pose.body[:, 0], atol=1e-12)
    np.testing.assert_allclose(b[:, 1], (pose.body[:, 1] * 288 + 240) / 768, atol=1e-12)
    assert b[:, 1].min() >= 240 / 768 and b[:, 1].max() <= 528 / 768


def test_missing_points_stay_missing_and_bad_sizes() -> None:
    pose = synthetic_pose()
    pose.body[3] = MISSING
    pose.hands[0] = MISSING
    out = fit_pose_list([pose], (640, 360), (128, 192), "crop")[0]
    assert (out.body[3] == MISSING).all() and (out.hands[0] == MISSING).all()
    assert (out.body[2] != MISSING).all()
    with pytest.raises(InputError, match="fit mode"):
        fit_pose_list([pose], (64, 64), (64, 64), "zoom")
    with pytest.raises(InputError, match="positive"):
        fit_pose_list([pose], (0, 64), (64, 64), "pad")
