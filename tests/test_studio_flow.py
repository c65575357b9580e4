"""The studio service end to end with the real tiny pipeline (64x64, 5 frames, 2 steps):
candidates, choose, continue, re-roll, branches, export, restart, interrupted jobs, cancel,
deterministic re-render, two clients at once, and a SIGKILL during a generation."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from unianimate.errors import GenerationCancelled, InputError, ProjectError
from unianimate.pose import PoseSequence, save_pose_sequence
from unianimate.pose.synthetic import synthetic_pose
from unianimate.studio import Studio
from unianimate.video.writer import probe_media

N = 5          # frames per segment
W = H = 64
REPO = Path(__file__).resolve().parents[1]

_PIPE = {}


def tiny_pipeline(report=None, precision="auto"):
    """One tiny random-weight pipeline per precision for the whole module (building it is the
    slow part); a pipeline factory (``report`` gets weight-loading messages: none here)."""
    if precision not in _PIPE:
        from unianimate.pipeline import UniAnimatePipeline
        _PIPE[precision] = UniAnimatePipeline.tiny(seed=0, device="cpu", dtype=precision)
    return _PIPE[precision]


def reference_image(seed=0):
    rng = np.random.default_rng(seed)
    img = np.zeros((96, 80, 3), np.uint8)
    img[...] = rng.integers(40, 200, 3, dtype=np.uint8)
    img[20:80, 30:50] = 230
    return img


def write_pose_json(path: Path, n: int, fps: float = 8.0, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    seq = PoseSequence([synthetic_pose(rng, jitter=0.01, shift=(0.01 * np.sin(i), 0.0))
                        for i in range(n)], fps=fps, width=W, height=H)
    return save_pose_sequence(seq, path)


def new_project(studio: Studio, tmp: Path, poses: int = 13, owner=None, **settings):
    p = studio.create_project(reference_image(), W, H, "crop", owner=owner)
    studio.set_poses_from_file(p.id, write_pose_json(tmp / f"poses_{p.id}.json", poses),
                               frame_interval=1, owner=owner)
    studio.set_settings(p.id, owner=owner, **{"frames_per_segment": N, "steps": 2,
                                               "candidates": 2, **settings})
    return p


@pytest.fixture()
def studio(tmp_path):
    return Studio(tmp_path / "projects", pipeline_factory=tiny_pipeline)


def test_whole_flow_branches_export_and_restart(studio, tmp_path):
    p = new_project(studio, tmp_path)
    reports = []
    cands = studio.generate_candidates(p.id, progress=reports.append)
    assert [c.id for c in cands] == ["c0", "c1"] and [c.seed for c in cands] == [0, 1]
    assert all(c.status == "done" and c.num_frames == N for c in cands)
    gen = [r for r in reports if r.stage == "generating"]
    assert gen[-1].step == gen[-1].total and gen[-1].candidate == 2 and gen[-1].eta_s is not None
    assert [r.step for r in gen] == sorted(r.step for r in gen)
    assert reports[-1].stage == "done"
    s0 = studio.timeline(p.id).path[0]
    assert (s0.id, s0.start, s0.end, s0.chosen) == ("s0", 0, N, None)
    assert s0.candidates[0].measures["seam"] is None
    assert Path(s0.candidates[0].preview).is_file() and Path(s0.candidates[0].poster).is_file()

    # choose c1, continue: one shared frame, first frame = c1's last frame
    studio.choose(p.id, "s0", "c1")
    s1 = studio.continue_from(p.id, "s0")
    assert (s1.start, s1.end, s1.parent, s1.parent_candidate) == (N - 1, 2 * N - 1, "s0", "c1")
    c1_frames = studio.candidate_frames(p.id, "s0", "c1")
    first = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(
        studio.media(p.id, s1.first_frame)))
    np.testing.assert_array_equal(first, c1_frames[-1])
    s1c = studio.generate_candidates(p.id, s1.id, n=1)
    assert s1c[0].seed == 1000 and s1c[0].measures["seam"] is not None
    studio.choose(p.id, s1.id, "c0")

    # re-roll segment 1: new seeds continue the count
    more = studio.reroll(p.id, s1.id, n=1)
    assert [c.id for c in more] == ["c1"] and more[0].seed == 1001
    tl = studio.timeline(p.id)
    assert [v.chosen for v in tl.path] == ["c1", "c0"]
    assert tl.total_frames == 2 * (N - 1) + 1 and tl.can_continue and tl.next_range == (8, 13)

    # branch: choose c0 at the root -> new path ends at s0; continue makes a sibling branch
    tl = studio.choose(p.id, "s0", "c0")
    assert [(v.id, v.chosen) for v in tl.path] == [("s0", "c0")]
    s2 = studio.continue_from(p.id)
    assert s2.id == "s2" and s2.parent_candidate == "c0"
    studio.generate_candidates(p.id, s2.id, n=1)
    studio.choose(p.id, s2.id, "c0")
    tl = studio.timeline(p.id)
    assert [v.id for v in tl.path] == ["s0", "s2"]
    assert next(v for v in tl.tree if v.id == "s0").branch_point
    # the old branch is still there and selectable
    tl = studio.select_branch(p.id, "s1")
    assert [(v.id, v.chosen) for v in tl.path] == [("s0", "c1"), ("s1", "c0")]
    # choosing c0 at the root again resumes its existing continuation
    tl = studio.choose(p.id, "s0", "c0")
    assert [v.id for v in tl.path] == ["s0", "s2"]
    studio.select_branch(p.id, "s1")

    # third segment on the s1 branch (last poses: 8..12) then nothing left
    s3 = studio.continue_from(p.id)
    assert (s3.start, s3.end) == (8, 13)
    studio.generate_candidates(p.id, s3.id, n=1)
    studio.choose(p.id, s3.id, "c0")
    assert not studio.timeline(p.id).can_continue
    with pytest.raises(InputError, match="nothing left"):
        studio.continue_from(p.id)
    # continuing a segment that already has a continuation goes there (no duplicate segment)
    assert studio.continue_from(p.id, "s0").id == "s1"
    assert [v.id for v in studio.timeline(p.id).path] == ["s0", "s1", "s3"]

    # export: 3 segments of 5 -> 3*4+1 = 13 frames at 8 fps; stitched = chosen frames
    out = studio.export(p.id, tmp_path / "out.mp4", quality=20, side_by_side=True, png_zip=True)
    assert out.frames == 13 and out.fps == pytest.approx(8.0) and not out.has_audio
    info = probe_media(out.video)
    assert info.frames == 13 and info.fps == pytest.approx(8.0) and info.pix_fmt == "yuv420p"
    assert probe_media(out.side_by_side).width == 3 * W
    frames, idx = studio.chosen_frames(p.id)
    assert idx == list(range(13))
    np.testing.assert_array_equal(frames[:N], c1_frames)
    np.testing.assert_array_equal(frames[N:2 * N - 1], studio.candidate_frames(p.id, "s1", "c0")[1:])
    import zipfile
    assert len(zipfile.ZipFile(out.png_zip).namelist()) == 13

    # restart: a new Studio on the same root shows exactly the same state
    before = studio.get_project(p.id).to_json()
    tl_before = studio.timeline(p.id).to_dict()
    again = Studio(studio.root, pipeline_factory=tiny_pipeline)
    assert again.get_project(p.id).to_json() == before
    assert again.timeline(p.id).to_dict() == tl_before

    # bad inputs
    with pytest.raises(InputError, match="no candidate"):
        studio.choose(p.id, "s0", "c7")
    with pytest.raises(ProjectError):
        studio.choose(p.id, "s9", "c0")


def test_rerender_is_deterministic(studio, tmp_path):
    p = new_project(studio, tmp_path, poses=9, candidates=1)
    studio.generate_candidates(p.id)
    studio.choose(p.id, "s0", "c0")
    s1 = studio.continue_from(p.id)
    studio.set_settings(p.id, color_threshold=0.0)          # force the colour correction
    [cand] = studio.generate_candidates(p.id, s1.id)
    corr = cand.color_correction
    assert corr is not None and corr["jump_after"] <= corr["jump_before"]
    assert cand.measures["color_jump"] == pytest.approx(corr["jump_after"], abs=1e-3)
    studio.set_settings(p.id, color_correction=False)
    [plain] = studio.reroll(p.id, s1.id, n=1)
    assert plain.color_correction is None
    for seg, cid in (("s0", "c0"), (s1.id, "c0"), (s1.id, "c1")):
        saved = studio.candidate_frames(p.id, seg, cid)
        np.testing.assert_array_equal(Studio(studio.root, pipeline_factory=tiny_pipeline)
                                      .rerender(p.id, seg, cid), saved)


def test_export_errors_and_empty_project(studio, tmp_path):
    p = studio.create_project(reference_image(), W, H, "crop")
    with pytest.raises(InputError, match="nothing to export"):
        studio.export(p.id, tmp_path / "x.mp4")
    with pytest.raises(InputError, match="driving"):
        studio.generate_candidates(p.id)
    p = new_project(studio, tmp_path, candidates=1)
    studio.ensure_root(p.id)
    studio.set_settings(p.id, frames_per_segment=4)      # an empty segment follows the setting
    studio.generate_candidates(p.id)
    assert studio.timeline(p.id).tree[0].end == 4
    with pytest.raises(InputError, match="nothing to export"):     # generated, nothing chosen
        studio.export(p.id, tmp_path / "x.mp4")
    with pytest.raises(InputError, match="choose a candidate"):
        studio.continue_from(p.id)
    assert not (tmp_path / "x.mp4").exists()


def test_running_job_in_manifest_is_interrupted_after_reopen(studio, tmp_path):
    p = new_project(studio, tmp_path, candidates=1)
    studio.generate_candidates(p.id)
    path = studio.root / p.id / "manifest.json"
    data = json.loads(path.read_text())
    data["jobs"][0]["status"] = "running"
    cand = data["segments"][0]["candidates"][0]
    cand["status"] = "running"
    path.write_text(json.dumps(data))
    reopened = Studio(studio.root).get_project(p.id)
    assert reopened.jobs[0].status == "interrupted"
    assert reopened.segments[0].candidates[0].status == "interrupted"
    assert json.loads(path.read_text())["jobs"][0]["status"] == "interrupted"   # persisted
    with pytest.raises(InputError, match="interrupted"):
        studio.choose(p.id, "s0", "c0")


def test_cancel_marks_candidate_interrupted_and_keeps_choice(studio, tmp_path):
    p = new_project(studio, tmp_path, candidates=1)
    studio.generate_candidates(p.id)
    studio.choose(p.id, "s0", "c0")
    calls = []

    def cancel_after_first_step():
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(GenerationCancelled):
        studio.reroll(p.id, "s0", n=2, should_cancel=cancel_after_first_step)
    proj = studio.get_project(p.id)
    seg = proj.segments[0]
    assert seg.chosen == "c0"
    assert [(c.id, c.status) for c in seg.candidates] == [("c0", "done"), ("c1", "interrupted")]
    assert proj.jobs[-1].status == "cancelled"
    assert not (studio.root / p.id / "segments/s0/c1").exists()
    # the next re-roll never repeats a seed
    nxt = studio.reroll(p.id, "s0", n=1)
    assert nxt[0].id == "c2" and nxt[0].seed == 2


def test_weights_missing_reaches_the_caller(tmp_path):
    from unianimate.errors import WeightsMissingError
    from unianimate.pipeline import UniAnimatePipeline
    empty = tmp_path / "no_weights"
    empty.mkdir()

    def factory(report):           # a factory may take a report(message) for loading progress
        return UniAnimatePipeline.from_pretrained(str(empty), device="cpu",
                                                  progress=lambda msg, frac: report(msg))

    studio = Studio(tmp_path / "projects", pipeline_factory=factory)
    assert studio.pipeline_info()["loaded"] is False          # nothing built at start
    p = new_project(studio, tmp_path, candidates=1)
    reports = []
    with pytest.raises(WeightsMissingError) as err:
        studio.generate_candidates(p.id, progress=reports.append)
    assert str(err.value)
    loading = [r.message for r in reports if r.stage == "loading"]
    assert len(loading) >= 2 and "locating weights files" in loading
    proj = studio.get_project(p.id)
    assert proj.jobs[-1].status == "failed" and "WeightsMissingError" in proj.jobs[-1].error
    assert proj.segments[0].candidates == []


def test_two_clients_at_once_get_their_own_results(tmp_path):
    root = tmp_path / "projects"
    a = Studio(root, pipeline_factory=tiny_pipeline, owner="a")
    b = Studio(root, pipeline_factory=tiny_pipeline, owner="b")
    pa, pb = new_project(a, tmp_path, owner="a", candidates=1), new_project(b, tmp_path, owner="b", candidates=1)
    results, errors, positions = {}, [], []

    def run(st, pid, key):
        try:
            results[key] = st.generate_candidates(
                pid, progress=lambda r: positions.append(r.queue_position) if r.stage == "queued" else None)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(a, pa.id, "a")),
               threading.Thread(target=run, args=(b, pb.id, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert a.timeline(pa.id).tree[0].candidates[0].status == "done"
    assert b.timeline(pb.id).tree[0].candidates[0].status == "done"
    assert [s.id for s in a.list_projects()] == [pa.id] and [s.id for s in b.list_projects()] == [pb.id]


KILL_SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from unianimate.pipeline import UniAnimatePipeline
    from unianimate.studio import Studio
    root, pid, marker = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    st = Studio(root, pipeline_factory=lambda report: UniAnimatePipeline.tiny(seed=0, device="cpu"))
    st.set_settings(pid, steps=400)
    seg = st.continue_from(pid)
    def progress(p):
        if p.stage == "generating" and not marker.exists():
            marker.write_text("generating")
    st.generate_candidates(pid, seg.id, n=1, progress=progress)
    print("FINISHED")
""")


def test_sigkill_during_generation_loses_nothing_chosen(studio, tmp_path):
    p = new_project(studio, tmp_path, candidates=1)
    studio.generate_candidates(p.id)
    studio.choose(p.id, "s0", "c0")
    chosen_before = studio.candidate_frames(p.id, "s0", "c0")
    script = tmp_path / "gen.py"
    script.write_text(KILL_SCRIPT)
    marker = tmp_path / "marker"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, str(script), str(studio.root), p.id, str(marker)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), proc.stderr.read().decode() if proc.poll() is not None else "timeout"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert b"FINISHED" not in proc.stdout.read()
    reopened = Studio(studio.root, pipeline_factory=tiny_pipeline)
    proj = reopened.get_project(p.id)
    assert proj.segment("s0").chosen == "c0"
    np.testing.assert_array_equal(reopened.candidate_frames(p.id, "s0", "c0"), chosen_before)
    s1 = proj.segment("s1")
    assert [(c.id, c.status) for c in s1.candidates] == [("c0", "interrupted")]
    assert proj.jobs[-1].status == "interrupted"
    assert not list((studio.root / p.id).glob("segments/*/*.tmp"))
    # and the project keeps working: export what was chosen, re-roll the interrupted segment
    assert reopened.export(p.id, tmp_path / "after.mp4").frames == N
    reopened.set_settings(p.id, steps=2)
    assert reopened.reroll(p.id, "s1", n=1)[0].id == "c1"


def test_video_driver_with_audio_export_has_trimmed_audio(tmp_path):
    """Driving video (test pattern + sine) -> poses via the small DWPose test models -> export
    carries the driver's audio, cut to the video's length from the trim start."""
    from unianimate.pose import DWPoseDetector
    from unianimate.pose.synthetic import export_tiny_dwpose
    from tests.test_export import make_video_with_audio
    export_tiny_dwpose(tmp_path / "dwpose")
    studio = Studio(tmp_path / "projects", pipeline_factory=tiny_pipeline,
                    detector_factory=lambda: DWPoseDetector.from_pretrained(tmp_path / "dwpose"))
    drv = make_video_with_audio(tmp_path / "drv.mp4", seconds=2.0, fps=16)
    p = studio.create_project(reference_image(), W, H, "crop")
    steps = []
    info = studio.set_poses_from_file(p.id, drv, frame_interval=2, start=0.5,
                                      progress=lambda r: steps.append(r.step))
    assert info.count == 12 and info.fps == pytest.approx(8.0) and info.audio
    assert info.source_fps == pytest.approx(16.0) and steps
    assert studio.get_project(p.id).reference.pose_source == "detected"
    preview = studio.pose_preview(p.id)
    assert probe_media(preview.skeleton_video).frames == 12
    studio.set_settings(p.id, frames_per_segment=N, steps=2, candidates=1)
    studio.generate_candidates(p.id)
    studio.choose(p.id, "s0", "c0")
    out = studio.export(p.id)                       # default: inside the project folder
    assert Path(out.video).is_relative_to(studio.root / p.id / "exports")
    media = probe_media(out.video)
    assert out.has_audio and media.has_audio and media.frames == N
    assert media.audio_duration == pytest.approx(N / 8.0, abs=0.15)
    silent = studio.export(p.id, tmp_path / "silent.mp4", with_audio=False)
    assert not probe_media(silent.video).has_audio


def test_queue_position_and_cancel_while_queued(studio, tmp_path):
    """One GPU job at a time: a second job waits with its queue position and can be cancelled
    before it starts (nothing recorded but a cancelled job)."""
    from unianimate.studio import GPU_QUEUE
    p = new_project(studio, tmp_path, candidates=1)
    reports, errors = [], []

    def run():
        try:
            studio.generate_candidates(p.id, progress=reports.append)
        except GenerationCancelled as exc:
            errors.append(exc)

    with GPU_QUEUE.slot():                       # someone else holds the GPU
        t = threading.Thread(target=run)
        t.start()
        deadline = time.monotonic() + 30
        while not any(r.stage == "queued" for r in reports) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [r.queue_position for r in reports if r.stage == "queued"][0] == 1
        with pytest.raises(InputError, match="already queued or running"):
            studio.generate_candidates(p.id)
        assert studio.cancel(p.id)
        t.join(30)
    assert errors and not t.is_alive()
    proj = studio.get_project(p.id)
    assert proj.jobs[-1].status == "cancelled" and proj.segments[0].candidates == []
    assert not studio.cancel(p.id)
    assert studio.generate_candidates(p.id)[0].status == "done"     # the queue moved on


def test_sampler_setting_reaches_the_pipeline_and_is_rerendered(studio, tmp_path):
    """The sampler is a generation setting: stored with the candidate, used by the pipeline (a
    multistep solver gives other frames than DDIM), re-rendered from the manifest, range-checked."""
    p = new_project(studio, tmp_path, poses=5, candidates=1)
    [ddim] = studio.generate_candidates(p.id)
    studio.set_settings(p.id, sampler="unipc")
    [unipc] = studio.reroll(p.id, "s0", n=1)
    assert ddim.settings.sampler == "ddim" and unipc.settings.sampler == "unipc"
    a = studio.candidate_frames(p.id, "s0", ddim.id)
    b = studio.candidate_frames(p.id, "s0", unipc.id)
    assert a.shape == b.shape and not np.array_equal(a, b)
    again = Studio(studio.root, pipeline_factory=tiny_pipeline).rerender(p.id, "s0", unipc.id)
    np.testing.assert_array_equal(again, b)
    with pytest.raises(InputError, match="sampler='euler'.*ddim, dpmpp_2m, unipc"):
        studio.set_settings(p.id, sampler="euler")


def test_drift_is_one_measure_for_every_segment(studio, tmp_path):
    """Issue 11 item 12: drift is the distance of a candidate's mean colour from the reference
    image's, for the root and for continuations alike (it was measured against the root
    candidate for continuations: ~65 beside ~0.1 in one column)."""
    from PIL import Image

    from unianimate.studio import measures as M
    p = new_project(studio, tmp_path, poses=9, candidates=1)
    [root] = studio.generate_candidates(p.id)
    studio.choose(p.id, "s0", root.id)
    s1 = studio.continue_from(p.id)
    [cont] = studio.generate_candidates(p.id, s1.id)
    folder = studio.store.folder(p.id)
    project = studio.get_project(p.id)
    ref = np.asarray(Image.open(folder / project.reference.fitted).convert("RGB"))
    for seg, cand in (("s0", root), (s1.id, cont)):
        frames = studio.candidate_frames(p.id, seg, cand.id)
        assert cand.measures["drift"] == pytest.approx(M.drift(frames, M.mean_color(ref)),
                                                       abs=1e-3)
    # the tiny model's noise sits far from the reference in both segments: the same scale
    assert cont.measures["drift"] > 0.5 * root.measures["drift"] > 1.0
