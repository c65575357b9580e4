"""Issue 11 in the UI handlers: drawn-pose videos without a detector (both tabs), trim and
interval for pose JSON, the pose options, pose messages (names, escaping, no piling up),
sibling segments' seeds, honest progress text, ASCII marks, one-line user-error logs, the
reopened project, the status line's place, the measures' help, the candidate to choose after a
re-roll, the tiny model's examples."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gr = pytest.importorskip("gradio")

from ui.handlers import VIEW_FIELDS, StudioHandlers  # noqa: E402
from ui.runtime import ModelManager, build_studio  # noqa: E402
from unianimate.pose import draw_pose, load_pose_sequence  # noqa: E402
from unianimate.pose.synthetic import person_frames, synthetic_pose, write_video  # noqa: E402
from unianimate.seeds import branch_path, candidate_seed  # noqa: E402
from unianimate.studio.project import PoseInfo  # noqa: E402

ASSETS = Path(__file__).resolve().parent.parent / "assets"
REF = str(ASSETS / "example_reference.png")
DANCE = str(ASSETS / "example_dance.json")
ALICE = "a" * 32


@pytest.fixture()
def ui(tmp_path: Path) -> StudioHandlers:
    models = ModelManager("tiny")            # no DWPose files anywhere: no detector
    return StudioHandlers(build_studio(tmp_path / "projects", models), models)


def _project(ui: StudioHandlers) -> str:
    pid, _, _ = ui.create_project(ALICE, REF, "custom", 64, 64, "crop", "t")
    return pid


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(gr.Error) as info:
        fn(*args, **kwargs)
    return str(info.value.message)


def _drawn_video(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    frames = [draw_pose(synthetic_pose(rng, jitter=0.01), 192, 128) for _ in range(8)]
    return write_video(tmp_path / "drawn.mp4", frames, fps=8)


def test_drawn_pose_video_in_the_pose_tab_and_the_video_tab_needs_no_detector(
        ui: StudioHandlers, tmp_path: Path) -> None:
    video = _drawn_video(tmp_path)
    pid = _project(ui)
    msg, data = ui.load_pose_file(ALICE, pid, [str(video)], 0, 0, 1, True)
    assert data["poses"] == 8 and "`drawn.mp4`" in msg
    msg, data = ui.extract_poses(ALICE, pid, str(video), 0, 0, 2, True, "auto")
    assert data["poses"] == 4 and "frame interval 2" in msg
    real = write_video(tmp_path / "real.mp4", person_frames(4, 64, 96), fps=8)
    assert "Driving video tab" in _error(ui.load_pose_file, ALICE, pid, [str(real)], 0, 0, 1, True)


def test_json_trim_and_interval_in_the_pose_tab(ui: StudioHandlers) -> None:
    pid = _project(ui)
    msg, data = ui.load_pose_file(ALICE, pid, [DANCE], 0, 0, 2, True)
    fps = load_pose_sequence(DANCE).fps
    assert data["poses"] == 20 and "frame interval 2" in msg and f"{fps / 2:g} fps" in msg
    msg, data = ui.load_pose_file(ALICE, pid, [DANCE], 1, 0, 1, True)
    assert data["poses"] == 40 - round(fps)


def test_pose_options_are_checked_and_passed(ui: StudioHandlers, tmp_path: Path) -> None:
    pid = _project(ui)
    assert "driving kind" in _error(ui.load_pose_file, ALICE, pid, [DANCE], 0, 0, 1, True, "x")
    assert "smoothing strength" in _error(ui.load_pose_file, ALICE, pid, [DANCE], 0, 0, 1, True,
                                          "auto", 2)
    assert "alignment mode" in _error(ui.load_pose_file, ALICE, pid, [DANCE], 0, 0, 1, True,
                                      "auto", 0, "sideways")
    assert "frame rate of pose images" in _error(ui.load_pose_file, ALICE, pid, [DANCE], 0, 0, 1,
                                                 True, "auto", 0, "per-limb", ["body"], 0)
    ui.load_pose_file(ALICE, pid, [DANCE], 0, 0, 1, True, "auto", 0.5, "scale", ["body"], 12)
    poses = ui.studio.page(pid, owner=ui.owner_of(ALICE)).project.poses
    assert poses.align_mode == "scale" and poses.align_parts == ["body"]
    assert any("smooth" in m.lower() for m in poses.messages)


def test_pose_messages_name_the_upload_escape_markup_and_do_not_pile_up(
        ui: StudioHandlers, tmp_path: Path) -> None:
    from PIL import Image
    seq = load_pose_sequence(DANCE)
    files = []
    for i in range(3):
        files.append(tmp_path / f"pose_{i}.png")
        Image.fromarray(draw_pose(seq[i], 96, 64)).save(files[-1])
    pid = _project(ui)
    msg, _ = ui.load_pose_file(ALICE, pid, [str(f) for f in files], 0, 0, 1, False)
    assert "3 images (pose_0.png ... pose_2.png)" in msg and "unianimate-poses" not in msg
    ui.load_pose_file(ALICE, pid, [DANCE], 0, 0, 1, True)
    owner = ui.owner_of(ALICE)
    before = list(ui.studio.page(pid, owner=owner).project.poses.messages)
    for size in (128, 64):                   # the poses are redrawn for each new size
        ui.set_reference(ALICE, pid, None, "custom", size, size, "crop")
    assert ui.studio.page(pid, owner=owner).project.poses.messages == before
    info = PoseInfo(count=1, fps=8.0, images="poses/images",
                    messages=["put the files in <weights folder>"])
    assert "&lt;weights folder&gt;" in StudioHandlers._pose_message(info)
    # inside a code span Markdown shows the text literally: no escape there (it would show "&lt;")
    info.messages = ["get it: `hf download x --local-dir <weights folder>` and put it in <weights folder>"]
    assert StudioHandlers._pose_message(info).endswith(
        "- get it: `hf download x --local-dir <weights folder>` and put it in &lt;weights folder&gt;")


def _project_with_poses(ui: StudioHandlers) -> str:
    pid = _project(ui)
    ui.load_pose_file(ALICE, pid, [DANCE], 0, 0, 1, True)
    return pid


class _RecordingProgress(gr.Progress):
    """Gradio's progress object, recording the descriptions the handler reports."""

    def __init__(self) -> None:
        super().__init__()
        self.descs: list[str] = []

    def __call__(self, progress, desc=None, total=None, unit="steps", _tqdm=None):  # noqa: ANN001
        self.descs.append(str(desc))
        return super().__call__(progress, desc=desc, total=total, unit=unit, _tqdm=_tqdm)


def test_sibling_segments_get_their_own_seeds_and_the_progress_text_is_honest(
        ui: StudioHandlers) -> None:
    pid = _project_with_poses(ui)
    progress = _RecordingProgress()
    seg, _, cands = ui.generate_candidates(ALICE, pid, None, 3, 2, 2.5, 949, 5, 2,
                                           progress=progress)
    assert [c["seed"] for c in cands] == [5, 6]
    # nothing else was queued: no "queued"/"waiting" text; the model build and saving are said
    assert not any("queued" in d.lower() or "waiting" in d.lower() for d in progress.descs)
    assert any("model" in d.lower() for d in progress.descs), progress.descs
    assert any("saving" in d.lower() for d in progress.descs), progress.descs
    ui.choose(ALICE, pid, seg, "c0")
    s1, _, _ = ui.continue_segment(ALICE, pid)
    _, _, first = ui.reroll(ALICE, pid, s1, 1)
    assert [c["seed"] for c in first] == [1005]               # the main line keeps its seeds
    ui.choose(ALICE, pid, seg, "c1")
    s2, _, _ = ui.continue_segment(ALICE, pid)
    _, _, sibling = ui.reroll(ALICE, pid, s2, 1)
    want = candidate_seed(5, 1, 0, branch_path([("s0", None), ("s2", "c1")]), main_line=False)
    assert s2 == "s2" and [c["seed"] for c in sibling] == [want] and want != 1005
    view = dict(zip(VIEW_FIELDS, ui.view(ALICE, pid, "s0")))
    texts = [view["timeline_md"], *(v["value"] for k, v in view.items()
                                    if k.endswith("_info") and isinstance(v, dict))]
    assert any("[chosen]" in t for t in texts) and all(t.isascii() or "·" in t for t in texts)
    assert not any(ch in "".join(texts) for ch in "✅⑂→")
    assert any(row[-1] == "yes" for row in view["measures"])


def test_expected_user_errors_are_one_log_line_without_traceback(
        ui: StudioHandlers, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with pytest.raises(gr.Error):
        ui.choose(ALICE, "0123456789ab", "s0", "c0")
    refused = [r for r in caplog.records if "refused" in r.getMessage()
               and r.levelno >= logging.INFO]
    assert len(refused) == 1 and refused[0].levelno == logging.INFO
    assert refused[0].exc_info is None and "\n" not in refused[0].getMessage()
    assert "0123456789ab" not in refused[0].getMessage()          # no project id at INFO


def test_a_reload_reopens_the_last_project_of_its_owner_only(ui: StudioHandlers) -> None:
    pid = _project_with_poses(ui)
    assert ui.remember_project(pid) == pid and ui.remember_project("") is None
    assert ui.reopen_last(ALICE, pid)["value"] == pid
    assert "value" not in ui.reopen_last("b" * 32, pid)          # another owner: nothing
    assert "value" not in ui.reopen_last(ALICE, None)


def test_the_status_line_sits_beside_the_action_buttons_above_the_results(tmp_path: Path) -> None:
    from ui.blocks import build_ui
    models = ModelManager("tiny")
    demo = build_ui(build_studio(tmp_path / "projects", models), models)
    order = [c["props"].get("elem_id") for c in demo.config["components"]]
    assert order.index("generate") < order.index("status") < order.index("slot0-video")


def test_every_measures_column_is_explained_in_the_ui(tmp_path: Path) -> None:
    from ui.blocks import build_ui
    from ui.handlers import MEASURE_HEADERS, measures_help
    models = ModelManager("tiny")
    demo = build_ui(build_studio(tmp_path / "projects", models), models)
    shown = " ".join(str(c["props"].get("value")) for c in demo.config["components"]
                     if c.get("type") == "markdown")
    assert measures_help() in shown
    assert all(f"**{name}**" in measures_help() for name in MEASURE_HEADERS)


def test_candidate_to_choose_follows_a_re_roll(ui: StudioHandlers) -> None:
    pid = _project_with_poses(ui)
    seg, _, _ = ui.generate_candidates(ALICE, pid, None, 3, 2, 2.5, 949, 0, 2)
    ui.choose(ALICE, pid, seg, "c1")
    assert dict(zip(VIEW_FIELDS, ui.view(ALICE, pid, seg)))["candidate"]["value"] == "c1"
    ui.reroll(ALICE, pid, seg, 2)
    view = dict(zip(VIEW_FIELDS, ui.view(ALICE, pid, seg)))
    assert view["candidate"]["value"] == "c2"                 # the re-roll's first take
    assert [c for _, c in view["candidate"]["choices"]] == ["c0", "c1", "c2", "c3"]
    ui.choose(ALICE, pid, seg, "c3")
    assert dict(zip(VIEW_FIELDS, ui.view(ALICE, pid, seg)))["candidate"]["value"] == "c3"


def test_tiny_model_examples_are_small_and_say_how_long_they_take() -> None:
    from ui.blocks import TINY_EXAMPLE_NOTE, _examples
    rows = _examples(ModelManager("tiny"))
    assert rows and all(w * h <= 256 * 384 for *_, w, h, _fit in rows)
    assert "40 s" in TINY_EXAMPLE_NOTE and "noise" in TINY_EXAMPLE_NOTE
    assert "1 s at 128x192" in TINY_EXAMPLE_NOTE      # measured on idle cores (ui.blocks)


def test_smoothing_preview_shows_before_and_after(ui: StudioHandlers) -> None:
    from unianimate.video.writer import probe_media
    pid = _project_with_poses(ui)
    video, msg = ui.preview_smoothing(ALICE, pid, 0.5)
    info = probe_media(video)
    assert info.frames >= 8 and (info.width, info.height) == (128, 64)   # two 64x64 side by side
    assert "jitter" in msg.lower()
    assert "smoothing strength" in _error(ui.preview_smoothing, ALICE, pid, 3)
    other = _project(ui)
    assert "keypoints" in _error(ui.preview_smoothing, ALICE, other, 0.5)


def test_first_screen_model_status_is_one_short_line_with_details_in_an_expander(
        tmp_path: Path) -> None:
    from ui.blocks import build_ui
    models = ModelManager("tiny")
    demo = build_ui(build_studio(tmp_path / "projects", models), models)
    comps = {c["props"].get("elem_id"): c for c in demo.config["components"]}
    line = StudioHandlers(build_studio(tmp_path / "p1", models), models).model_line()
    assert "tiny" in line and "\n" not in line and len(line) < 120
    details = comps["model-details"]
    assert details["type"] == "accordion" and not details["props"]["open"]
    order = [c["props"].get("elem_id") for c in demo.config["components"]]
    assert order.index("model-line") < order.index("model-details") < order.index("model-status")
    real = ModelManager(str(tmp_path / "no_weights"))          # a folder without the weights
    ui = StudioHandlers(build_studio(tmp_path / "p2", real), real)
    assert ui.weights_missing() and "not on this machine" in ui.model_line()
    assert len(ui.model_line()) < 160


def test_sampler_goes_through_the_settings_handler_and_a_bad_one_is_named(
        ui: StudioHandlers) -> None:
    """Issue 12's sampler in the UI: stored by the same handler as the steps (as an optional
    trailing API parameter), shown by the view; a bad value names the field and the choices."""
    pid = _project_with_poses(ui)
    seg, _, cands = ui.generate_candidates(ALICE, pid, None, 3, 2, 2.5, 949, 0, 1, "unipc")
    assert cands and cands[0]["status"] == "done"
    assert dict(zip(VIEW_FIELDS, ui.view(ALICE, pid, seg)))["sampler"] == "unipc"
    # an older API call without the sampler keeps the project's sampler
    ui.generate_candidates(ALICE, pid, seg, 3, 2, 2.5, 949, 0, 1)
    assert dict(zip(VIEW_FIELDS, ui.view(ALICE, pid, seg)))["sampler"] == "unipc"
    message = _error(ui.generate_candidates, ALICE, pid, seg, 3, 2, 2.5, 949, 0, 1, "euler")
    assert "sampler" in message and "'euler'" in message
    assert all(name in message for name in ("ddim", "dpmpp_2m", "unipc"))
    assert dict(zip(VIEW_FIELDS, ui.view(ALICE, pid, seg)))["sampler"] == "unipc"


def test_candidate_grid_pages_through_all_candidates_and_marks_the_chosen_one(
        ui: StudioHandlers) -> None:
    """Issue 11 item 8: every candidate of a segment can be seen, SLOTS per page."""
    pid = _project_with_poses(ui)
    seg, _, _ = ui.generate_candidates(ALICE, pid, None, 3, 2, 2.5, 949, 0, 4)
    ui.reroll(ALICE, pid, seg, 2)                            # 6 candidates: c0..c5
    view = dict(zip(VIEW_FIELDS, ui.view(ALICE, pid, seg)))
    assert view["cand_page"] == 1                            # the newest candidates first
    assert view["cand_pager"].startswith("Candidates c4-c5 of 6 · page 2/2")
    assert [view[f"slot{i}_video"]["visible"] for i in range(4)] == [True, True, False, False]
    assert view["slot0_video"]["label"].startswith("c4 ")
    back = dict(zip(VIEW_FIELDS, ui.prev_page(ALICE, pid, seg, view["cand_page"])))
    assert back["cand_page"] == 0 and back["cand_pager"].startswith("Candidates c0-c3 of 6")
    assert [back[f"slot{i}_video"]["label"].split(" ")[0] for i in range(4)] == [
        "c0", "c1", "c2", "c3"]
    assert dict(zip(VIEW_FIELDS, ui.prev_page(ALICE, pid, seg, 0)))["cand_page"] == 0
    ui.choose(ALICE, pid, seg, "c1")
    first = dict(zip(VIEW_FIELDS, ui.view(ALICE, pid, seg, 0)))
    assert first["slot1_video"]["label"].endswith("[chosen]")
    assert "[chosen]" in first["slot1_info"]["value"]
    assert not any("[chosen]" in first[f"slot{i}_video"]["label"] for i in (0, 2, 3))
    assert first["cand_pager"].endswith("chosen: **c1**")
    last = dict(zip(VIEW_FIELDS, ui.next_page(ALICE, pid, seg, 1)))
    assert last["cand_page"] == 1                            # stays on the last page
    assert len(last["measures"]) == 6                        # the table lists all of them


def test_vram_speed_section_and_long_mode_reach_the_project_and_the_run(
        ui: StudioHandlers, tmp_path: Path) -> None:
    """The VRAM / speed section (precision, sequential guidance: project settings; offload and
    decode chunk: the run's) and the long mode, as optional trailing API parameters; the view
    shows the project's values; the auto preset on this CPU machine; bad values name the field."""
    from ui.blocks import build_ui
    pid = _project_with_poses(ui)
    seg, _, cands = ui.generate_candidates(ALICE, pid, None, 6, 1, 2.5, 949, 0, 1, "ddim",
                                           True, "bf16", True, 4, 2, "off", 3)
    assert cands and cands[0]["status"] == "done"
    view = dict(zip(VIEW_FIELDS, ui.view(ALICE, pid, seg)))
    assert [view[k] for k in ("sequential_guidance", "precision", "long_mode", "window",
                              "overlap")] == [True, "bf16", True, 4, 2]
    [cand] = ui.studio.get_project(pid, owner=ui.owner_of(ALICE)).segment(seg).candidates
    assert cand.settings.precision == "bf16" and cand.decode_chunk == 3
    # an older API call without them keeps the project's values; a re-roll takes the run's
    ui.generate_candidates(ALICE, pid, seg, 6, 1, 2.5, 949, 0, 1)
    ui.reroll(ALICE, pid, seg, 1, "auto", 5)
    proj = ui.studio.get_project(pid, owner=ui.owner_of(ALICE))
    assert [c.decode_chunk for c in proj.segment(seg).candidates] == [3, 2, 5]
    assert all(c.settings.long_mode for c in proj.segment(seg).candidates)
    assert "window" in _error(ui.generate_candidates, ALICE, pid, seg, 6, 1, 2.5, 949, 0, 1,
                              "ddim", False, "auto", True, 200, 2)
    assert "overlap=4 (must be below window=4)" in _error(
        ui.generate_candidates, ALICE, pid, seg, 6, 1, 2.5, 949, 0, 1, "ddim", False, "auto",
        True, 4, 4)
    assert "precision must be one of auto, fp32, fp16, bf16" in _error(
        ui.generate_candidates, ALICE, pid, seg, 6, 1, 2.5, 949, 0, 1, "ddim", False, "fp8")
    assert "offload must be one of auto, on, off" in _error(ui.reroll, ALICE, pid, seg, 1, "yes")
    assert "VAE decode chunk (frames): 17 is above the maximum value 16" in _error(
        ui.reroll, ALICE, pid, seg, 1, "auto", 17)
    # the auto preset: no GPU here, so fp32, batched guidance, no offload
    assert ui.speed_preset() == ("fp32", False, "off", 8, "Auto preset: no GPU: the CPU runs "
                                 "in fp32 and offloading has nothing to save.")
    # the section: its controls, the device's precisions only (no fp16 on the CPU)
    demo = build_ui(ui.studio, ui.models)
    comps = {c["props"].get("elem_id"): c for c in demo.config["components"]}
    for elem in ("speed-section", "precision", "sequential-guidance", "offload", "decode-chunk",
                 "speed-auto", "long-section", "long-mode", "window", "overlap"):
        assert elem in comps, elem
    assert [c[1] if isinstance(c, (list, tuple)) else c
            for c in comps["precision"]["props"]["choices"]] == ["auto", "fp32", "bf16"]
    assert (comps["window"]["props"]["minimum"], comps["window"]["props"]["maximum"]) == (4, 64)


def test_first_frame_dancer_picker_with_the_real_detector_classes(tmp_path: Path) -> None:
    """Multi-person driving video: the first frame's people with numbered boxes (the real
    DWPoseDetector on tiny ONNX models that find two people), a choice per person, a click on
    a dancer picks them, and the extraction then follows that one."""
    from PIL import Image

    from ui.blocks import build_ui
    from unianimate.pose.synthetic import export_tiny_dwpose
    big, small = (200, 120, 440, 600), (20, 20, 80, 100)
    export_tiny_dwpose(tmp_path / "dwpose", boxes=[big, small], det_scores=[0.8, 0.95])
    models = ModelManager("tiny", dwpose=str(tmp_path / "dwpose"))
    ui = StudioHandlers(build_studio(tmp_path / "projects", models), models)
    frames = person_frames(6, 640, 640, empty=(0,))
    for f in frames[1:]:
        f[30:90, 30:70] = 255                      # the small person is bright too
    video = write_video(tmp_path / "two.mp4", frames, fps=16)
    pid = _project(ui)
    image, pick, person, picker, message = ui.find_people(ALICE, pid, str(video), 0, 0, 1)
    assert pick["choices"] == [("person 0", 0), ("person 1 (default)", 1)]
    assert pick["value"] == 1 and person == 1 and picker["default"] == 1
    assert "2 people in kept frame 1" in message and "person 1" in message
    shown = np.asarray(Image.open(image).convert("RGB"))
    assert shown.shape == (640, 640, 3)
    assert not np.array_equal(shown, frames[1])              # the boxes and numbers are drawn
    # each number sits on a filled tag in its box's colour, large enough to read when the UI
    # shrinks the frame to 240 px (measured inside the small box: 33 % tag colour over 57 rows;
    # a thin outlined number was 2.5 % over 13 rows)
    inside = shown[small[1] + 3:small[3] - 3, small[0] + 3:small[2] - 3]
    tag = np.abs(inside.astype(int) - (0, 200, 255)).sum(axis=2) < 60
    assert tag.mean() > 0.15 and tag.any(axis=1).sum() > 30
    # a click inside the small dancer's box picks them; one beside every box changes nothing
    click = gr.SelectData(None, {"index": [50, 60], "value": None, "selected": True})
    assert StudioHandlers.pick_person(picker, click) == (0, 0)
    inside_big = gr.SelectData(None, {"index": [300, 400], "value": None, "selected": True})
    assert StudioHandlers.pick_person(picker, inside_big) == (1, 1)
    beside = gr.SelectData(None, {"index": [600, 10], "value": None, "selected": True})
    assert StudioHandlers.pick_person(picker, beside) == (gr.update(), gr.update())
    # the pick is followed by the extraction
    msg, data = ui.extract_poses(ALICE, pid, str(video), 0, 0, 1, False, "video", 0.0,
                                 "per-limb", ["body", "hands"], 30, 0)
    assert data["poses"] == 6
    info = ui.studio.get_project(pid, owner=ui.owner_of(ALICE)).poses
    assert any("followed person 0 of frame 1" in m for m in info.messages)
    # a pose file has no people to pick; the picker sits in the Pose options
    assert "only a real video" in _error(ui.find_people, ALICE, pid, DANCE, 0, 0, 1)
    demo = build_ui(ui.studio, models)
    ids = [c["props"].get("elem_id") for c in demo.config["components"]]
    assert ids.index("pose-options") < ids.index("find-people") < ids.index("people-image") \
        < ids.index("people-pick")


def test_person_at_picks_the_smallest_box_under_the_click() -> None:
    from unianimate.studio.views import PeopleInFirstFrame
    found = PeopleInFirstFrame("", ((0, (0.0, 0.0, 1.0, 1.0)), (1, (0.4, 0.4, 0.6, 0.6))), 0, 3,
                               200, 100)
    assert found.person_at(100, 50) == 1          # in front of the large one
    assert found.person_at(10, 10) == 0
    assert PeopleInFirstFrame("", ((0, (0.5, 0.5, 0.6, 0.6)),), 0, 0, 10, 10).person_at(1, 1) \
        is None
    assert "1 person in kept frame 0" in PeopleInFirstFrame("", ((0, (0, 0, 1, 1)),), 0, 0, 1,
                                                            1).message
