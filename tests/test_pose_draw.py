"""draw_pose reproduces the reference drawing (spec §5): reversed triplets, 0.6 dimming of limbs,
undimmed joints, hands, no face, any size; plus the overlay style."""
from __future__ import annotations

import numpy as np
import pytest

from unianimate.errors import InputError
from unianimate.pose import MISSING, Pose, draw_overlay, draw_pose
from unianimate.pose.draw import COLORS, HAND_EDGE_COLORS, _hsv_full_to_rgb
from unianimate.pose.synthetic import synthetic_pose


def _only_body(points: dict[int, tuple[float, float]]) -> Pose:
    body = np.full((20, 2), MISSING)
    for i, xy in points.items():
        body[i] = xy
    e = Pose.empty()
    return e.replace(body=body)


def test_limb_colour_is_reversed_and_dimmed_joint_is_not() -> None:
    # neck (1) at (0.5, 0.2) -> right shoulder (2) at (0.3, 0.2): limb 0, colour (255, 0, 0)
    img = draw_pose(_only_body({1: (0.5, 0.2), 2: (0.3, 0.2)}), 768, 512)
    assert img.shape == (768, 512, 3) and img.dtype == np.uint8
    mid = img[int(0.2 * 768), int(0.4 * 512)]
    assert mid.tolist() == [0, 0, int(255 * 0.6)]          # reversed (blue), dimmed to 153
    joint2 = img[int(0.2 * 768), int(0.3 * 512)]
    assert joint2.tolist() == list(COLORS[2][::-1])          # (0, 170, 255), not dimmed
    joint1 = img[int(0.2 * 768), int(0.5 * 512)]
    assert joint1.tolist() == list(COLORS[1][::-1])
    # knee->ankle right (limb 8, colour (0,255,170)) -> reversed (170,255,0) * 0.6
    img = draw_pose(_only_body({9: (0.5, 0.5), 10: (0.5, 0.8)}), 768, 512)
    assert img[int(0.65 * 768), 256].tolist() == [102, 153, 0]
    # the limb's half-width is 4 px: 6 px away from the axis is black
    assert img[int(0.65 * 768), 256 + 6].tolist() == [0, 0, 0]


def test_missing_point_skips_limb_but_draws_joint() -> None:
    img = draw_pose(_only_body({1: (0.5, 0.2), 2: (0.3, 0.2), 3: (MISSING, MISSING)}), 768, 512)
    assert img[int(0.2 * 768), int(0.4 * 512)].tolist() == [0, 0, 153]
    only_joint = draw_pose(_only_body({3: (0.3, 0.4)}), 768, 512)
    ys, xs = np.nonzero(only_joint.any(axis=2))
    assert len(ys) > 0 and abs(xs.mean() - int(0.3 * 512)) < 1 and abs(ys.mean() - int(0.4 * 768)) < 1
    assert ys.max() - ys.min() == 8  # radius 4 circle


def test_hands_drawn_face_not() -> None:
    base = synthetic_pose()
    face_only = Pose.empty().replace(face=base.face)
    assert not draw_pose(face_only, 768, 512).any()
    hands_only = Pose.empty().replace(hands=base.hands)
    img = draw_pose(hands_only, 768, 512)
    x, y = base.hands[1, 5]
    assert img[int(y * 768), int(x * 512)].tolist() == [255, 0, 0]  # hand point (0,0,255) reversed
    colours = np.unique(img.reshape(-1, 3), axis=0)
    assert len(colours) > 10  # the HSV edge colours


def test_hand_edge_colours_match_hsv() -> None:
    assert HAND_EDGE_COLORS[0] == (255.0, 0.0, 0.0)
    for i, c in enumerate(HAND_EDGE_COLORS):
        import colorsys
        ref = colorsys.hsv_to_rgb(i / 20, 1.0, 1.0)
        assert np.allclose(np.array(c) / 255, ref, atol=1e-12)
    assert _hsv_full_to_rgb(0.5) == (0.0, 1.0, 1.0)


@pytest.mark.parametrize("h, w", [(768, 512), (1216, 768), (64, 40), (512, 768)])
def test_any_size(h: int, w: int) -> None:
    img = draw_pose(synthetic_pose(), h, w)
    assert img.shape == (h, w, 3) and img.any()


def test_jpeg_roundtrip_is_close_to_clean() -> None:
    p = synthetic_pose()
    clean = draw_pose(p, 768, 512)
    jpg = draw_pose(p, 768, 512, jpeg_roundtrip=True)
    assert jpg.shape == clean.shape and jpg.dtype == np.uint8
    diff = np.abs(jpg.astype(int) - clean.astype(int))
    assert diff.mean() < 3 and not np.array_equal(jpg, clean)
    # colours survive in the right (reversed) order
    x, y = p.hands[1, 5]
    r, g, b = jpg[int(y * 768), int(x * 512)]
    assert r > 200 and b < 60


def test_bad_sizes_and_overlay() -> None:
    with pytest.raises(InputError):
        draw_pose(synthetic_pose(), 0, 10)
    with pytest.raises(InputError):
        draw_pose(synthetic_pose(), 10.5, 10)
    image = np.full((200, 100, 3), 100, dtype=np.uint8)
    out = draw_overlay(synthetic_pose(), image, alpha=1.0)
    assert out.shape == image.shape and out.dtype == np.uint8 and not np.array_equal(out, image)
    assert image[0, 0].tolist() == [100, 100, 100]
    with pytest.raises(InputError):
        draw_overlay(synthetic_pose(), image.astype(np.float32))


def test_far_points_do_not_crash() -> None:
    body = synthetic_pose().body.copy()
    body[4] = (1e9, -1e9)
    hands = synthetic_pose().hands.copy()
    hands[1] = 5e8
    img = draw_pose(synthetic_pose().replace(body=body, hands=hands), 768, 512)
    assert img.any()
