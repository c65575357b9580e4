"""Issue 11 item 13: the chosen path's captions are shown whole in a real browser (Debian's
chromium through Playwright), also for a branch's long seed. Same skip logic, launch arguments
and timeouts as tests/test_browser.py, whose fixtures it uses."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

# importing skips this module exactly when tests/test_browser.py is skipped (no chromium/playwright)
from tests.test_browser import (open_project, page, pytestmark, serving,  # noqa: F401
                                sync_api, _shots)
from ui.runtime import ModelManager, build_studio

ASSETS = Path(__file__).resolve().parents[1] / "assets"


@pytest.fixture()
def branched_app(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The app (one shared owner) on a project whose chosen path runs through a sibling branch:
    s0/c1 -> s2 (a branch seed of 9-10 digits) -> s3 -> s4."""
    models = ModelManager("tiny")
    studio = build_studio(tmp_path / "projects", models)
    p = studio.create_project(str(ASSETS / "example_reference.png"), 64, 64, "crop",
                              name="captions")
    studio.set_poses_from_file(p.id, str(ASSETS / "example_dance.json"), frame_interval=1)
    studio.set_settings(p.id, frames_per_segment=3, steps=1, candidates=1)
    studio.generate_candidates(p.id)
    studio.choose(p.id, "s0", "c0")
    studio.generate_candidates(p.id, studio.continue_from(p.id).id)      # s1 (main line)
    studio.reroll(p.id, "s0", n=1)
    studio.choose(p.id, "s0", "c1")
    for _ in range(3):                                                  # s2, s3, s4
        seg = studio.continue_from(p.id)
        [cand] = studio.generate_candidates(p.id, seg.id)
        studio.choose(p.id, seg.id, cand.id)
    with serving(studio, models, tmp_path / "projects", isolate_sessions=False) as url:
        yield url, p.id


def test_chosen_path_captions_are_not_cut(branched_app: tuple[str, str], page: object,
                                          tmp_path: Path) -> None:
    expect = sync_api.expect
    url, pid = branched_app
    pg = page
    open_project(pg, url, "captions")
    gallery = pg.locator("#path-gallery")
    labels = gallery.locator(".caption-label")
    expect(labels).to_have_count(4)
    pg.locator("#path-gallery").scroll_into_view_if_needed()
    gallery.screenshot(path=str(_shots(tmp_path) / "path_captions.png"))
    texts = labels.all_inner_texts()
    assert any(len(t.split("seed ")[-1]) >= 8 for t in texts), texts   # a branch's long seed
    for i in range(labels.count()):
        box = labels.nth(i).evaluate(
            "e => ({scroll: e.scrollWidth, client: e.clientWidth, text: e.textContent, "
            "right: e.getBoundingClientRect().right, "
            "parent: e.parentElement.getBoundingClientRect().right})")
        # the whole caption is laid out inside its label, and the label inside its thumbnail
        assert box["scroll"] <= box["client"] + 1, box
        assert box["right"] <= box["parent"] + 1, box
