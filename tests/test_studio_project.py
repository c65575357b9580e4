"""Project data model and manifest: round trip, validation of hand-edited manifests, paths,
ownership, seeds (no generation needed here)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from unianimate.errors import InputError, ProjectError
from unianimate.pose import PoseSequence
from unianimate.pose.synthetic import synthetic_pose
from unianimate.studio import GenerationSettings, Studio, seed_for
from unianimate.studio.project import (FORMAT, VERSION, Candidate, Project, Segment,
                                       check_relative)


def _ref(seed=0, h=80, w=72):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _poses(n, seed=1):
    rng = np.random.default_rng(seed)
    return PoseSequence([synthetic_pose(rng, jitter=0.01) for _ in range(n)], fps=8.0,
                        width=64, height=64)


@pytest.fixture()
def studio(tmp_path):
    return Studio(tmp_path / "projects")


def test_seed_scheme():
    assert seed_for(0, 0, 0) == 0
    assert seed_for(7, 2, 3) == 2007 + 3
    assert len({seed_for(5, d, c) for d in range(4) for c in range(50)}) == 200


def test_create_project_stores_reference_and_fitted(studio):
    p = studio.create_project(_ref(), 64, 128, "pad", name="demo")
    folder = studio.project_dir(p.id)
    assert (folder / "manifest.json").is_file()
    data = json.loads((folder / "manifest.json").read_text())
    assert data["format"] == FORMAT and data["version"] == VERSION
    from PIL import Image
    assert Image.open(folder / p.reference.original).size == (72, 80)
    assert Image.open(folder / p.reference.fitted).size == (64, 128)
    assert studio.get_project(p.id).reference == p.reference


def test_bad_reference_inputs(studio, tmp_path):
    with pytest.raises(InputError):
        studio.create_project(_ref(), 65, 64, "crop")
    with pytest.raises(InputError):
        studio.create_project(_ref(), 64, 64, "squash")
    bad = tmp_path / "not_an_image.png"
    bad.write_bytes(b"hello")
    with pytest.raises(InputError):
        studio.create_project(bad, 64, 64, "crop")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(InputError):
        studio.create_project(empty, 64, 64, "crop")
    assert studio.list_projects() == []


def test_manifest_round_trip_is_exact(studio):
    p = studio.create_project(_ref(), 64, 64, "crop")
    studio.set_pose_sequence(p.id, _poses(9))
    studio.set_settings(p.id, frames_per_segment=5, steps=3, base_seed=11)
    before = studio.get_project(p.id)
    again = Studio(studio.root).get_project(p.id)
    assert again.to_json() == before.to_json()
    assert again.settings == GenerationSettings(frames_per_segment=5, steps=3, base_seed=11)


def test_settings_validation(studio):
    p = studio.create_project(_ref(), 64, 64, "crop")
    with pytest.raises(InputError):
        studio.set_settings(p.id, frames_per_segment=1)
    with pytest.raises(InputError):
        studio.set_settings(p.id, nonsense=3)
    with pytest.raises(InputError):
        studio.set_settings(p.id, steps="many")
    assert studio.get_project(p.id).settings == GenerationSettings()


def test_pose_sequence_shorter_than_one_segment(studio):
    p = studio.create_project(_ref(), 64, 64, "crop")
    studio.set_pose_sequence(p.id, _poses(4))
    studio.set_settings(p.id, frames_per_segment=5)
    with pytest.raises(InputError, match="fewer than one segment"):
        studio.generate_candidates(p.id)
    assert studio.get_project(p.id).segments == []


def test_owner_isolation(tmp_path):
    root = tmp_path / "projects"
    alice, bob = Studio(root, owner="alice"), Studio(root, owner="bob")
    pa = alice.create_project(_ref(), 64, 64, "crop")
    pb = bob.create_project(_ref(1), 64, 64, "crop")
    assert [s.id for s in alice.list_projects()] == [pa.id]
    assert [s.id for s in bob.list_projects()] == [pb.id]
    for call in (lambda: bob.get_project(pa.id), lambda: bob.timeline(pa.id),
                 lambda: bob.delete_project(pa.id), lambda: bob.media(pa.id, "manifest.json"),
                 lambda: bob.set_settings(pa.id, steps=2), lambda: alice.get_project(pb.id)):
        with pytest.raises(ProjectError, match="no project"):
            call()
    # the owner can also be given per call (one Studio serving many browser sessions)
    shared = Studio(root)
    assert [s.id for s in shared.list_projects(owner="bob")] == [pb.id]
    assert shared.list_projects() == []
    shared.delete_project(pb.id, owner="bob")
    assert bob.list_projects() == [] and alice.get_project(pa.id).id == pa.id


def test_path_traversal_refused(studio, tmp_path):
    p = studio.create_project(_ref(), 64, 64, "crop")
    assert studio.media(p.id, "reference/fitted.png").is_file()
    for bad in ("../x", "reference/../../x", "/etc/passwd", "", "a\\..\\b"):
        with pytest.raises(ProjectError):
            studio.media(p.id, bad)
    for bad_id in ("../x", "..", "a/b", "ABC", ""):
        with pytest.raises(ProjectError):
            studio.get_project(bad_id)
    assert studio.resolve_served(studio.root / p.id / "manifest.json").is_file()
    outside = tmp_path / "secret.txt"
    outside.write_text("x")
    with pytest.raises(ProjectError):
        studio.resolve_served(outside)
    with pytest.raises(ProjectError):
        studio.resolve_served(studio.root / ".." / "secret.txt")
    link = studio.root / p.id / "link.txt"
    link.symlink_to(outside)
    with pytest.raises(ProjectError):
        studio.resolve_served(link)
    with pytest.raises(ProjectError):
        studio.media(p.id, "link.txt")
    with pytest.raises(ProjectError):
        check_relative("../../etc")


@pytest.mark.parametrize("edit", [
    lambda d: "not json {",
    lambda d: json.dumps([1, 2]),
    lambda d: json.dumps({**d, "format": "something-else"}),
    lambda d: json.dumps({**d, "version": 99}),
    lambda d: json.dumps({**d, "settings": {**d["settings"], "steps": "thirty"}}),
    lambda d: json.dumps({**d, "settings": {**d["settings"], "bogus": 1}}),
    lambda d: json.dumps({**d, "reference": {**d["reference"], "fitted": "../../etc/passwd"}}),
    lambda d: json.dumps({**d, "segments": [{"id": "s0"}]}),
    lambda d: json.dumps({**d, "active_leaf": "s9"}),
    lambda d: json.dumps({k: v for k, v in d.items() if k != "reference"}),
])
def test_nonsense_manifest_gives_clear_error_and_loses_nothing_else(studio, edit):
    good = studio.create_project(_ref(), 64, 64, "crop", name="good")
    broken = studio.create_project(_ref(1), 64, 64, "crop", name="broken")
    path = studio.root / broken.id / "manifest.json"
    text = edit(json.loads(path.read_text()))
    path.write_text(text)
    with pytest.raises(ProjectError, match="manifest"):
        studio.get_project(broken.id)
    assert path.read_text() == text                         # not overwritten
    listed = {s.id: s for s in studio.list_projects()}
    assert listed[good.id].error is None
    assert studio.get_project(good.id).name == "good"
    if broken.id in listed:
        assert listed[broken.id].error


def test_tree_helpers_and_active_path():
    from unianimate.studio.project import ReferenceInfo, PoseInfo
    s = GenerationSettings()
    def done(cid, i):
        return Candidate(id=cid, index=i, seed=i, settings=s, status="done", num_frames=5,
                         frames_dir=f"segments/x/{cid}")

    root = Segment("s0", None, None, 0, 0, 5, candidates=[done("c0", 0), done("c1", 1)], chosen="c1")
    a = Segment("s1", "s0", "c0", 1, 4, 9, "segments/s1/first_frame.png",
                candidates=[done("c0", 0)], chosen="c0")
    b = Segment("s2", "s0", "c1", 1, 4, 9, "segments/s2/first_frame.png")
    p = Project(id="p1", owner_hash=None, name="t",
                reference=ReferenceInfo("reference/original.png", "reference/fitted.png", 64, 64, "crop"),
                poses=PoseInfo(count=12, fps=8.0, images="poses/images"),
                segments=[root, a, b], active_leaf="s1")
    path = p.active_path()
    assert [(sg.id, c.id) for sg, c in path] == [("s0", "c0"), ("s1", "c0")]
    p.active_leaf = "s2"
    assert [(sg.id, c and c.id) for sg, c in p.active_path()] == [("s0", "c1"), ("s2", None)]
    assert Project.from_json(json.loads(json.dumps(p.to_json()))).to_json() == p.to_json()
    bad = json.loads(json.dumps(p.to_json()))
    bad["segments"][1]["start"] = 3                      # not parent.end - 1
    with pytest.raises(ProjectError, match="starts at"):
        Project.from_json(bad)
    bad = json.loads(json.dumps(p.to_json()))
    bad["segments"][0]["candidates"][0]["num_frames"] = 4
    with pytest.raises(ProjectError, match="needs frames_dir and 5 frames"):
        Project.from_json(bad)


def test_set_reference_redraws_poses_and_failures_change_nothing(studio):
    from PIL import Image
    p = studio.create_project(_ref(), 64, 64, "crop")
    info = studio.set_pose_sequence(p.id, _poses(6))
    folder = studio.project_dir(p.id)
    assert Image.open(folder / info.images / "000005.png").size == (64, 64)
    before = studio.get_project(p.id).to_json()
    with pytest.raises(InputError):
        studio.set_reference(p.id, None, width=100, height=64)
    with pytest.raises(InputError):
        studio.set_reference(p.id, None, fit="squash")
    assert studio.get_project(p.id).to_json() == before
    q = studio.set_reference(p.id, None, width=128, height=64, fit="pad")
    assert (q.width, q.height, q.reference.fit) == (128, 64, "pad")
    assert Image.open(folder / "reference/fitted.png").size == (128, 64)
    assert Image.open(folder / q.poses.images / "000005.png").size == (128, 64)
    assert Image.open(folder / q.reference.pose).size == (128, 64)
    assert not list(folder.glob(".poses-*")) and not list(folder.glob(".old-*"))
    preview = studio.pose_preview(p.id)
    from unianimate.video.writer import probe_media
    assert probe_media(preview.skeleton_video).frames == 6
    assert Image.open(preview.overlay_image).size == (128, 64)


def test_pose_preview_streams_the_pose_images(studio, monkeypatch):
    """The skeleton preview (made with the poses) reads one pose image at a time, so a long
    driving input is never held in memory at once."""
    import unianimate.studio.poses as poses
    from unianimate.video.writer import probe_media
    p = studio.create_project(_ref(), 64, 64, "crop")
    spans = []
    real = poses.read_pngs

    def spy(folder, start, end):
        spans.append(end - start)
        return real(folder, start, end)

    monkeypatch.setattr(poses, "read_pngs", spy)
    studio.set_pose_sequence(p.id, _poses(9))
    preview = studio.pose_preview(p.id)
    assert probe_media(preview.skeleton_video).frames == 9
    assert spans and max(spans) == 1


def test_a_session_handle_acts_as_its_owner_and_the_runtime_is_injected(tmp_path):
    from unianimate.studio import StudioRuntime
    runtime = StudioRuntime()
    studio = Studio(tmp_path / "projects", runtime=runtime)
    alice, bob = studio.session("alice"), studio.session("bob")
    p = alice.create_project(_ref(), 64, 64, "crop")
    alice.set_settings(p.id, steps=3)
    assert [s.id for s in alice.list_projects()] == [p.id] and alice.get_project(p.id).settings.steps == 3
    assert bob.list_projects() == [] and studio.list_projects() == []
    with pytest.raises(ProjectError, match="no project"):
        bob.timeline(p.id)
    assert studio.store.runtime is runtime
    assert studio.store.lock(p.id) is runtime.lock(str(studio.root / p.id))
