"""Pose/PoseSequence validation and the JSON format: round trip and bad files."""
from __future__ import annotations

import json

import numpy as np
import pytest

from unianimate.errors import InputError
from unianimate.pose import MISSING, Pose, PoseSequence, dumps, load_pose_sequence, loads, save_pose_sequence
from unianimate.pose.io import sequence_to_dict
from unianimate.pose.synthetic import synthetic_pose


def _seq(n: int = 3) -> PoseSequence:
    rng = np.random.default_rng(1)
    poses = [synthetic_pose(rng, jitter=0.01) for _ in range(n)]
    body = poses[1].body.copy()
    body[3] = MISSING
    poses[1] = poses[1].replace(body=body)
    return PoseSequence(poses, fps=8.0, width=512, height=768, meta={"source": "test"})


def test_pose_shapes_and_missing_marker() -> None:
    p = Pose.empty()
    assert p.body.shape == (20, 2) and p.hands.shape == (2, 21, 2) and p.face.shape == (68, 2)
    assert p.is_empty()
    body = synthetic_pose().body.copy()
    body[4, 0] = MISSING  # one coordinate missing -> the point is missing
    q = synthetic_pose().replace(body=body)
    assert q.body[4].tolist() == [MISSING, MISSING]
    assert not q.body_valid[4] and q.body_valid.sum() == 19
    with pytest.raises(InputError, match="shape"):
        synthetic_pose().replace(body=np.zeros((18, 2)))
    with pytest.raises(InputError, match="NaN"):
        synthetic_pose().replace(face=np.full((68, 2), np.nan))
    with pytest.raises(InputError, match="fps"):
        PoseSequence([], fps=0, width=5, height=5)
    with pytest.raises(InputError, match="width"):
        PoseSequence([], fps=8, width=5.5, height=5)


def test_json_round_trip_exact(tmp_path) -> None:
    seq = _seq()
    path = save_pose_sequence(seq, tmp_path / "sub" / "poses.json")
    data = json.loads(path.read_text())
    assert data["format"] == "unianimate-pose" and data["version"] == 1 and len(data["frames"]) == 3
    back = load_pose_sequence(path)
    assert (back.fps, back.width, back.height, back.meta) == (8.0, 512, 768, {"source": "test"})
    for a, b in zip(seq, back):
        assert a.allclose(b, atol=0.0)
    assert back[1].body[3].tolist() == [MISSING, MISSING]
    assert not list(tmp_path.joinpath("sub").glob("*.tmp"))


def test_json_nulls_and_missing_scores_accepted() -> None:
    data = sequence_to_dict(_seq())
    frame = data["frames"][0]
    frame["body"][5] = None
    frame["hands"][0][3] = [None, 0.2]
    del frame["face_scores"]
    seq = loads(json.dumps(data))
    assert seq[0].body[5].tolist() == [MISSING, MISSING]
    assert seq[0].hands[0, 3].tolist() == [MISSING, MISSING]
    assert seq[0].face_scores.tolist() == [1.0] * 68


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d.update(format="openpose"), "not a UniAnimate pose file"),
    (lambda d: d.update(version=2), "version 2"),
    (lambda d: d.update(version="1"), "version"),
    (lambda d: d.update(fps=-3), "fps"),
    (lambda d: d.pop("width"), "width"),
    (lambda d: d["frames"][1].update(body=[[0.1, 0.2]] * 18), r"frame 1, field 'body' has shape \(18, 2\)"),
    (lambda d: d["frames"][2]["hands"][1].__setitem__(0, ["a", 0.3]), r"frame 2, field 'hands'"),
    (lambda d: d["frames"][0].pop("face"), r"frame 0 lacks the field 'face'"),
    (lambda d: d["frames"][0].update(extra=1), "unknown fields"),
    (lambda d: d["frames"].__setitem__(1, [1, 2]), "frame 1 is a list"),
    (lambda d: d["frames"][1]["body_scores"].__setitem__(0, True), r"frame 1, field 'body_scores'"),
])
def test_bad_json_names_the_problem(mutate, match) -> None:
    data = sequence_to_dict(_seq())
    mutate(data)
    with pytest.raises(InputError, match=match):
        loads(json.dumps(data))


def test_bad_json_nan_inf_and_garbage(tmp_path) -> None:
    text = dumps(_seq())
    with pytest.raises(InputError, match="NaN"):
        loads(text.replace("0.9", "NaN", 1))
    with pytest.raises(InputError, match="Infinity"):
        loads(text.replace("0.9", "Infinity", 1))
    with pytest.raises(InputError, match="infinite"):
        loads(text.replace("0.9", "1e999", 1))
    with pytest.raises(InputError, match="not valid JSON"):
        loads(text[:-10])
    with pytest.raises(InputError, match="not valid JSON|not UTF-8"):
        loads(b"\xff\xfe\x00garbage")
    with pytest.raises(InputError, match="does not exist"):
        load_pose_sequence(tmp_path / "nope.json")
