"""A real browser opens the app on the demo model (a tiny export, ``tests/test_demo_model.py``): its
name, the example person and dance filled in at the model's native size, a project created from
them with its segment length, and a generation. Skipped like ``tests/test_browser.py``."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_browser import _shots, launched_ui, page, pytestmark, sync_api  # noqa: F401
from tests.test_demo_model import demo_dir, run_dir  # noqa: F401  (the tiny run and its export)
from unianimate.compose import ModelManager
from unianimate.demo_model import DEMO_MODEL_NAME


@pytest.fixture(scope="module")
def demo_url(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:  # noqa: F811
    with launched_ui(ModelManager("demo", demo_dir=demo_dir), tmp_path_factory.mktemp("projects")) as url:
        yield url


def test_demo_model_opens_on_its_example_and_generates(demo_url: str, page: object,  # noqa: F811
                                                       tmp_path: Path) -> None:
    expect = sync_api.expect
    pg = page
    pg.goto(demo_url)
    expect(pg.locator("#demo-banner")).to_contain_text(DEMO_MODEL_NAME)
    expect(pg.locator("#model-line")).to_contain_text(DEMO_MODEL_NAME)
    assert pg.locator("#tiny-banner").count() == 0
    # the example row is already filled in, at the demo model's size (64x64 for this tiny export)
    expect(pg.locator("#reference img")).to_be_visible()
    expect(pg.locator("#pose-files")).to_contain_text("example_dance")
    expect(pg.locator("#width input")).to_have_value("64")
    expect(pg.locator("#height input")).to_have_value("64")
    pg.locator("#create-project").click()
    expect(pg.locator("#pose-info")).to_contain_text("40 poses")
    expect(pg.locator("#frames input[type=number]")).to_have_value("2")
    expect(pg.locator("#steps input[type=number]")).to_have_value("10")
    pg.locator("#generate").click()
    expect(pg.locator("#slot0-info")).to_contain_text("seed 0", timeout=240_000)
    expect(pg.locator("#slot0-video video")).to_be_visible()
    pg.screenshot(path=str(_shots(tmp_path) / "demo_model_generated.png"), full_page=True)
