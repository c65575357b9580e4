"""Issue 11: the first-frame dancer picker in a real browser (Debian's chromium through
Playwright) with the real DWPose detector classes on tiny ONNX models that find two people.
Without a pick the extraction follows the main dancer, and the Person field says so (it used to
be a number, which the browser shows as 0 when empty: it read "person 0" while the main dancer
was followed); a click on a dancer in the first frame picks them. Same skip logic, launch arguments and timeouts as
tests/test_browser.py, whose fixtures it uses."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

# importing skips this module exactly when tests/test_browser.py is skipped (no chromium/playwright)
from tests.test_browser import (open_project, page, pytestmark, serving,  # noqa: F401
                                sync_api, _shots)
from ui.runtime import ModelManager, build_studio

ASSETS = Path(__file__).resolve().parents[1] / "assets"
SMALL = (20, 20, 80, 100)          # the small dancer's box (pixels of the 640x640 video)
SLOW_MS = 240_000


@pytest.fixture()
def two_dancers(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The app (one shared owner, DWPose = tiny ONNX models finding a large and a small
    person) with a project, and a video of two bright 'people'."""
    from unianimate.pose.synthetic import export_tiny_dwpose, person_frames, write_video
    export_tiny_dwpose(tmp_path / "dwpose", boxes=[(200, 120, 440, 600), SMALL],
                       det_scores=[0.8, 0.95])
    models = ModelManager("tiny", dwpose=str(tmp_path / "dwpose"))
    studio = build_studio(tmp_path / "projects", models)
    studio.create_project(str(ASSETS / "example_reference.png"), 64, 64, "crop", name="dancers")
    frames = person_frames(6, 640, 640, empty=(0,))
    for f in frames[1:]:
        f[30:90, 30:70] = 255                      # the small person is bright too
    video = write_video(tmp_path / "two.mp4", frames, fps=16)
    with serving(studio, models, tmp_path / "projects", isolate_sessions=False) as url:
        yield url, video


def test_pick_the_dancer_in_the_first_frame(two_dancers: tuple[str, Path], page: object,
                                            tmp_path: Path) -> None:
    expect = sync_api.expect
    url, video = two_dancers
    pg = page
    open_project(pg, url, "dancers")
    pg.get_by_role("tab", name="Driving video").click()
    pg.locator("#driving-video input[type=file]").set_input_files(str(video))
    expect(pg.locator("#driving-video video")).to_be_visible()

    # no pick: the field says the main dancer, and the main one (largest, most central) is
    # followed
    pg.locator("#pose-options").get_by_text("Pose options").first.click()
    expect(pg.locator("#person input")).to_have_value("the main one (largest, most central)")
    pg.locator("#extract-poses").click()
    expect(pg.locator("#pose-info")).to_contain_text("largest, most central person",
                                                     timeout=SLOW_MS)

    # the first frame with numbered boxes; a click on the small dancer picks person 0
    pg.locator("#find-people").click()
    image = pg.locator("#people-image img")
    expect(image).to_be_visible(timeout=SLOW_MS)
    # no label floats over the picture (it hid the small dancer in the top-left corner)
    expect(pg.locator("#people-image [data-testid=block-label]")).to_be_hidden()
    expect(pg.locator("#people-info")).to_contain_text("2 people in kept frame 1")
    expect(pg.locator("#person input")).to_have_value("1")           # the default, preselected
    box = image.bounding_box()
    natural = image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    scale = min(box["width"] / natural[0], box["height"] / natural[1])
    # object-fit: contain centres the picture in the element
    left = (box["width"] - natural[0] * scale) / 2
    top = (box["height"] - natural[1] * scale) / 2
    cx, cy = (SMALL[0] + SMALL[2]) / 2, (SMALL[1] + SMALL[3]) / 2
    image.click(position={"x": left + cx * scale, "y": top + cy * scale})
    expect(pg.locator("#person input")).to_have_value("0")
    pg.locator("#people-image").screenshot(path=str(_shots(tmp_path) / "people_picker.png"))
    pg.locator("#extract-poses").click()
    expect(pg.locator("#pose-info")).to_contain_text("followed person 0 of frame 1",
                                                     timeout=SLOW_MS)
