"""The whole flow in a real browser (Debian's chromium through Playwright), tiny model (issue 11).

Reference upload, poses through the Pose tab, preview, generate, choose, continue, re-roll, branch
(back to segment 0, another candidate), export; a screenshot of each step under the test's
temporary folder (or ``$UNIANIMATE_ARTIFACTS``) and the page state checked after each. Same skip
logic, launch arguments and timeouts as tests/test_browser.py, whose fixtures it uses.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

# importing skips this module exactly when tests/test_browser.py is skipped (no chromium/playwright)
from tests.test_browser import (app_url, page, pytestmark, sync_api,  # noqa: F401 (fixtures)
                                _shots)

ASSETS = Path(__file__).resolve().parents[1] / "assets"
#: CPU-bound events (generation, export) on a loaded 2-core machine
SLOW_MS = 240_000


def test_walkthrough_reference_poses_preview_generate_choose_continue_reroll_branch_export(
        app_url: str, page: object, tmp_path: Path) -> None:  # noqa: F811 (fixtures)
    expect = sync_api.expect
    pg = page
    shots = _shots(tmp_path)
    taken: list[Path] = []

    def shot(name: str) -> None:
        path = shots / f"walk_{len(taken):02d}_{name}.png"
        pg.screenshot(path=str(path), full_page=True)
        taken.append(path)

    pg.goto(app_url)
    expect(pg.locator("#model-line")).to_contain_text("tiny random-weight")

    # 1. reference: upload, small custom size, create the project
    pg.locator("#reference input[type=file]").set_input_files(str(ASSETS / "example_reference.png"))
    expect(pg.locator("#reference img")).to_be_visible()
    pg.locator("#resolution input").click()
    pg.locator("#resolution [data-testid=dropdown-option]",
               has_text="custom").click()
    for selector, value in (("#width", "128"), ("#height", "192")):
        box = pg.locator(f"{selector} input[type=number]")
        expect(box).to_be_editable()
        box.fill(value)
        box.press("Enter")
    pg.locator("#create-project").click()
    expect(pg.locator("#status")).to_contain_text("128x192")
    expect(pg.locator("#reference-preview img")).to_be_visible()
    shot("reference")

    # 2. poses through the Pose tab
    pg.get_by_role("tab", name="Pose sequence").click()
    pg.locator("#pose-files input[type=file]").set_input_files(str(ASSETS / "example_dance.json"))
    expect(pg.locator("#pose-files")).to_contain_text("example_dance")
    pg.locator("#load-poses").click()
    expect(pg.locator("#pose-info")).to_contain_text("40 poses", timeout=SLOW_MS)
    shot("poses")

    # 3. preview: the pose over the reference and the driving skeleton video
    expect(pg.locator("#pose-overlay img")).to_be_visible()
    expect(pg.locator("#pose-video video")).to_be_visible()
    shot("preview")

    # 4. generate: 3 frames, 1 step, 2 candidates
    for selector, value in (("#frames", "3"), ("#steps", "1"), ("#n-candidates", "2")):
        box = pg.locator(f"{selector} input[type=number]")
        box.fill(value)
        box.press("Enter")
    pg.locator("#generate").click()
    expect(pg.locator("#status")).to_contain_text("2 candidate(s) ready", timeout=SLOW_MS)
    expect(pg.locator("#slot1-info")).to_contain_text("seed 1")
    expect(pg.locator("#slot0-video video")).to_be_visible()
    expect(pg.locator("#measures")).to_contain_text("c1")
    shot("generated")

    # 5. choose c0 (offered first)
    expect(pg.locator("#candidate input")).to_have_value(re.compile(r"^c0 "))
    pg.locator("#choose").click()
    expect(pg.locator("#status")).to_contain_text("Chose c0 of segment s0")
    expect(pg.locator("#timeline")).to_contain_text("c0 (seed 0)")
    shot("chosen")

    # 6. continue from its last frame
    pg.locator("#continue").click()
    expect(pg.locator("#status")).to_contain_text("continues from")
    expect(pg.locator("#timeline")).to_contain_text("s1")
    expect(pg.locator("#segment input")).to_have_value(re.compile(r"\bs1: "))
    shot("continued")

    # 7. re-roll the new segment: fresh candidates, the first one offered
    pg.locator("#reroll").click()
    expect(pg.locator("#status")).to_contain_text("candidate(s) ready", timeout=SLOW_MS)
    expect(pg.locator("#slot0-video video")).to_be_visible()
    expect(pg.locator("#segment input")).to_have_value(re.compile(r"\bs1: .* 2 cand\."))
    shot("rerolled")

    # 8. branch: back to segment 0, choose the other candidate
    pg.locator("#segment input").click()
    pg.locator("#segment [data-testid=dropdown-option]", has_text="s0:").click()
    expect(pg.locator("#measures")).to_contain_text("c1")
    pg.locator("#candidate input").click()
    pg.locator("#candidate [data-testid=dropdown-option]", has_text="c1").click()
    expect(pg.locator("#candidate input")).to_have_value(re.compile(r"^c1 "))
    pg.locator("#choose").click()
    expect(pg.locator("#status")).to_contain_text("Chose c1 of segment s0")
    expect(pg.locator("#timeline")).to_contain_text("c1 (seed 1)")
    expect(pg.locator("#timeline")).to_contain_text("other branches")
    shot("branched")

    # 9. export the chosen path (segment 0 with c1: 3 frames)
    pg.locator("#export").click()
    expect(pg.locator("#status")).to_contain_text("Exported 3 frames", timeout=SLOW_MS)
    expect(pg.locator("#export-files")).to_contain_text(".mp4")
    expect(pg.locator("#export-video video")).to_be_visible()
    shot("exported")

    assert [p.name.split("_", 2)[2] for p in taken] == [
        "reference.png", "poses.png", "preview.png", "generated.png", "chosen.png",
        "continued.png", "rerolled.png", "branched.png", "exported.png"]
    assert all(p.stat().st_size > 10_000 for p in taken)
