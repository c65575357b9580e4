"""Issue 11 in the UI handlers: sibling segments' seeds, honest progress text, ASCII marks,
expected user errors logged as one line."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gr = pytest.importorskip("gradio")

from ui.handlers import VIEW_FIELDS, StudioHandlers  # noqa: E402
from ui.runtime import ModelManager, build_studio  # noqa: E402
from unianimate.seeds import branch_path, candidate_seed  # noqa: E402

ASSETS = Path(__file__).resolve().parent.parent / "assets"
REF = str(ASSETS / "example_reference.png")
DANCE = str(ASSETS / "example_dance.json")
ALICE = "a" * 32


class _RecordingProgress(gr.Progress):
    """Gradio's progress object, recording the descriptions the handler reports."""

    def __init__(self) -> None:
        super().__init__()
        self.descs: list[str] = []

    def __call__(self, progress, desc=None, total=None, unit="steps", _tqdm=None):  # noqa: ANN001
        self.descs.append(str(desc))
        return super().__call__(progress, desc=desc, total=total, unit=unit, _tqdm=_tqdm)


@pytest.fixture()
def ui(tmp_path: Path) -> StudioHandlers:
    models = ModelManager("tiny")
    return StudioHandlers(build_studio(tmp_path / "projects", models), models)


def _project(ui: StudioHandlers) -> str:
    pid, _, _ = ui.create_project(ALICE, REF, "custom", 64, 64, "crop", "t")
    ui.load_pose_file(ALICE, pid, [DANCE], 0, 0, 1, True)
    return pid


def test_sibling_segments_get_their_own_seeds_and_the_progress_text_is_honest(
        ui: StudioHandlers) -> None:
    pid = _project(ui)
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
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1 and refused[0].levelno == logging.INFO
    assert refused[0].exc_info is None and "\n" not in refused[0].getMessage()


def test_a_reload_reopens_the_last_project_of_its_owner_only(ui: StudioHandlers) -> None:
    pid = _project(ui)
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
    pid = _project(ui)
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
