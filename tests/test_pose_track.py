"""Following one dancer: PersonTracker on crossing / approaching dancers, choosing a person of the
first frame, losing and finding them again; end to end through extract_poses with tiny DWPose."""
from __future__ import annotations

import numpy as np
import pytest

from unianimate.errors import InputError
from unianimate.pose.dwpose import DWPoseConfig, DWPoseDetector, choose_person
from unianimate.pose.extract import extract_poses, first_frame_people
from unianimate.pose.synthetic import export_tiny_dwpose, person_frames, synthetic_pose, write_video
from unianimate.pose.track import PersonTracker, box_iou, keypoint_distance

W, H = 640, 480


def _dancer(cx: float, arms_up: bool, size: float = 1.0):
    """A box (pixels) centred at x = cx and the pose inside it (arms up or down)."""
    pose = synthetic_pose(scale=0.6 * size, shift=(cx / W - 0.5, 0.0))
    if arms_up:
        body = pose.body.copy()
        for k in (3, 4, 6, 7):                      # elbows and wrists above the shoulders
            body[k, 1] = body[1, 1] - (body[k, 1] - body[1, 1])
        pose = pose.replace(body=body)
    bw, bh = 140 * size, 300 * size
    return np.array([cx - bw / 2, 240 - bh / 2, cx + bw / 2, 240 + bh / 2]), pose


def _crossing(n: int = 11):
    """Dancer A (arms up) walks left -> right, B (arms down) right -> left and steps forward
    (grows): per frame, 'largest, most central' switches from A to B."""
    frames = []
    for t in range(n):
        a = _dancer(160 + 32 * t, True)
        b = _dancer(480 - 32 * t, False, 0.85 + 0.04 * t)
        frames.append([a, b] if t % 2 else [b, a])   # detector order changes too
    return frames


def _run(tracker: PersonTracker, frames) -> list[int | None]:
    """Which dancer (0 = A, 1 = B) the tracker chose in each frame."""
    out = []
    for people in frames:
        boxes = np.array([b for b, _ in people]).reshape(-1, 4)
        idx = tracker.choose(boxes, lambda i: people[i][1])
        out.append(None if idx is None else (0 if people[idx][1].body[4, 1] < people[idx][1].body[1, 1] else 1))
    return out


def test_tracker_follows_one_dancer_where_per_frame_choice_switches() -> None:
    frames = _crossing()
    per_frame = []
    for people in frames:
        boxes = np.stack([b for b, _ in people])
        k = choose_person(boxes, W, H, "largest_central")
        per_frame.append(0 if people[k][1].body[4, 1] < people[k][1].body[1, 1] else 1)
    assert len(set(per_frame)) == 2                    # the old rule switches dancers
    first = per_frame[0]
    assert first == 0                                  # A: as large as B and as central at first
    assert _run(PersonTracker(None, W, H), frames) == [first] * len(frames)


def test_choose_a_person_of_the_first_frame() -> None:
    frames = _crossing()
    # frame 0 lists B first, then A
    assert _run(PersonTracker(1, W, H), frames) == [0] * len(frames)
    assert _run(PersonTracker(0, W, H), frames) == [1] * len(frames)
    with pytest.raises(InputError, match="first frame with people shows 2"):
        PersonTracker(2, W, H).choose(np.stack([b for b, _ in frames[0]]), lambda i: frames[0][i][1])
    with pytest.raises(InputError, match="person"):
        PersonTracker(-1, W, H)


def test_lost_while_away_and_found_again() -> None:
    a, b = _dancer(150, True), _dancer(500, False)
    frames = [[a, b], [a, b], [b], [b], [], [b, a], [a, b]]
    tracker = PersonTracker(None, W, H, select="first")    # start with the first listed: A
    assert _run(tracker, frames) == [0, 0, None, None, None, 0, 0]
    assert tracker.lost == [2, 3, 4] and tracker.started_at == 0


def test_iou_and_keypoint_distance() -> None:
    np.testing.assert_allclose(box_iou(np.array([0, 0, 10, 10]), np.array([[0, 0, 10, 10], [5, 0, 15, 10],
                                                                            [20, 20, 30, 30]])), [1, 1 / 3, 0])
    p = synthetic_pose()
    assert keypoint_distance(p, p) == 0.0
    q = p.replace(body=p.body + [0.1, 0.0])
    assert keypoint_distance(p, q) == pytest.approx(0.1)


BOX_MAIN = (200, 120, 440, 600)
BOX_SMALL = (20, 20, 80, 100)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return export_tiny_dwpose(tmp_path_factory.mktemp("onnx"), boxes=[BOX_MAIN, BOX_SMALL], det_scores=[0.8, 0.95])


def test_first_frame_people_and_extract_the_chosen_person(tmp_path, models) -> None:
    det = DWPoseDetector.from_files(*models)
    frames = person_frames(6, 640, 640, empty=(0,))
    for f in frames[1:]:
        f[30:90, 30:70] = 255                      # the small person is bright too (keypoints found)
    video = write_video(tmp_path / "two.mp4", frames, fps=16)
    people = first_frame_people(video, det, frame_interval=1)
    assert people.frame_index == 1 and len(people.candidates) == 2   # frame 0 is empty
    small = [c.index for c in people.candidates if np.allclose(c.box, BOX_SMALL, atol=1e-3)]
    assert small == [0] and people.default == 1                      # default: largest, central
    assert people.candidates[1].box_normalised == pytest.approx(tuple(v / 640 for v in BOX_MAIN), abs=1e-5)
    img = people.annotated()
    assert img.shape == (640, 640, 3) and not np.array_equal(img, people.image)

    chosen = extract_poses(video, det, frame_interval=1, person=0)
    default = extract_poses(video, det, frame_interval=1)
    highest_score = DWPoseDetector.from_files(*models, config=DWPoseConfig(select="first"))
    reference = extract_poses(video, highest_score, frame_interval=1, track=False)
    for a, b in zip(chosen.sequence.poses[1:], reference.sequence.poses[1:]):   # the small, high-score one
        assert not a.is_empty() and a.allclose(b)
    assert not chosen.sequence[2].allclose(default.sequence[2])
    assert any("followed person 0 of frame 1" in m for m in chosen.messages)
    with pytest.raises(InputError, match="first frame with people shows 2"):
        extract_poses(video, det, frame_interval=1, person=5)
