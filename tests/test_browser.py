"""A real browser (Debian's chromium through Playwright) clicks through the studio, tiny model.

Skipped cleanly when /usr/bin/chromium or the playwright package is missing. Screenshots go to
``$UNIANIMATE_ARTIFACTS`` when set, else to the test's temporary folder.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("UNIANIMATE_CHROMIUM", "/usr/bin/chromium"))
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed")]
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sync_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("gradio")

from ui.blocks import build_ui, launch_kwargs  # noqa: E402
from ui.runtime import ModelManager, build_studio  # noqa: E402
from tests._net import free_port  # noqa: E402

#: a loaded 2-core machine can take far longer than Playwright's 5 s defaults for a page load or
#: a Gradio event; every wait below is on a real condition, bounded by this (or a longer) timeout
TIMEOUT_MS = 60_000

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        "--disable-dev-shm-usage"]


@contextlib.contextmanager
def serving(studio: object, models: ModelManager, root: Path,
            isolate_sessions: bool = True) -> Iterator[str]:
    """The studio's UI on ``studio`` launched on a free local port; yields its URL, closes it."""
    demo = build_ui(studio, models, isolate_sessions=isolate_sessions)
    kwargs = launch_kwargs(root, port=free_port())
    demo.launch(prevent_thread_lock=True, quiet=True, **kwargs)
    try:
        yield f"http://127.0.0.1:{kwargs['server_port']}/"
    finally:
        demo.close()


@contextlib.contextmanager
def launched_ui(models: ModelManager, root: Path) -> Iterator[str]:
    """The studio UI on ``models`` launched in this process on a free port; yields its URL."""
    with serving(build_studio(root, models), models, root) as url:
        yield url


def open_project(pg: object, url: str, name: str) -> None:
    """Load the app at ``url``, then pick the project called ``name`` in the project dropdown."""
    pg.goto(url)
    sync_api.expect(pg.locator("#model-line")).to_contain_text("tiny random-weight")
    pg.locator("#project input").click()
    pg.locator("#project [data-testid=dropdown-option]", has_text=name).click()


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("projects")
    models = ModelManager("tiny")
    with serving(build_studio(root, models), models, root) as url:
        yield url


def _new_page(browser: object, **context_args: object) -> object:
    """A page in a fresh browser context (its own session) whose actions, navigations and
    ``expect`` checks all wait up to TIMEOUT_MS (Playwright's default is 5 s)."""
    context = browser.new_context(**context_args)
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(TIMEOUT_MS)
    return context.new_page()


@pytest.fixture()
def page(tmp_path: Path) -> Iterator[object]:
    sync_api.expect.set_options(timeout=TIMEOUT_MS)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            yield _new_page(browser, viewport={"width": 1400, "height": 1000})
        finally:
            browser.close()


def _shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("UNIANIMATE_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_click_through_examples_generate_choose_continue_export(app_url: str, page: object,
                                                                tmp_path: Path) -> None:
    expect = sync_api.expect
    pg = page
    pg.goto(app_url)
    expect(pg.locator("#tiny-banner")).to_contain_text("TINY TEST MODEL")
    expect(pg.locator("#model-line")).to_contain_text("tiny random-weight")

    pg.get_by_text("figure + dance (small, fast)").click()      # the example row
    expect(pg.locator("#pose-files")).to_contain_text("example_dance")
    pg.locator("#create-project").click()
    expect(pg.locator("#pose-info")).to_contain_text("40 poses", timeout=60_000)
    expect(pg.locator("#reference-preview img")).to_be_visible()

    for selector, value in (("#frames", "3"), ("#steps", "2")):
        box = pg.locator(f"{selector} input[type=number]")
        box.fill(value)
        box.press("Enter")
    pg.locator("#generate").click()
    expect(pg.locator("#slot1-info")).to_contain_text("seed 1", timeout=240_000)
    expect(pg.locator("#slot0-info")).to_contain_text("stability")
    expect(pg.locator("#slot0-video video")).to_be_visible()
    expect(pg.locator("#measures")).to_contain_text("c1")
    shots = _shots(tmp_path)
    pg.screenshot(path=str(shots / "studio_candidates.png"), full_page=True)

    pg.locator("#choose").click()
    expect(pg.locator("#status")).to_contain_text("Chose c0", timeout=60_000)
    expect(pg.locator("#timeline")).to_contain_text("c0 (seed 0)")
    pg.locator("#continue").click()
    expect(pg.locator("#status")).to_contain_text("continues from", timeout=60_000)
    expect(pg.locator("#timeline")).to_contain_text("s1")

    pg.locator("#export").click()
    expect(pg.locator("#status")).to_contain_text("Exported 3 frames", timeout=120_000)
    expect(pg.locator("#export-files")).to_contain_text(".mp4")
    expect(pg.locator("#export-video video")).to_be_visible()
    pg.screenshot(path=str(shots / "studio_exported.png"), full_page=True)
    assert (shots / "studio_exported.png").stat().st_size > 10_000

    # a reload keeps this browser's projects; another browser (session) does not see them
    options = "#project [data-testid=dropdown-option]"
    pg.reload()
    expect(pg.locator("#model-line")).to_contain_text("tiny random-weight")
    # ... and reopens the project it had open, reference and timeline shown (issue 11)
    expect(pg.locator("#timeline")).to_contain_text("s1", timeout=60_000)
    expect(pg.locator("#reference-preview img")).to_be_visible()
    pg.locator("#project input").click()
    expect(pg.locator(options)).to_contain_text(["example_reference · 128x192 · 2 seg"])
    other = _new_page(pg.context.browser)
    other.goto(app_url)
    # the model line is filled right after the load event that sets the project choices: once
    # it shows, the other session's (empty) project list is in place
    expect(other.locator("#model-line")).to_contain_text("tiny random-weight")
    other.locator("#project input").click()
    expect(other.locator("#project input")).to_be_focused()
    expect(other.locator(options)).to_have_count(0)
