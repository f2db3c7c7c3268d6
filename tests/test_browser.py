"""The app in a real browser: `vitlens app` on a free port, Debian's chromium driven by playwright."""
from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "app"))
from harness import CHROMIUM, figure, open_upload, photo, running_app, upload  # noqa: E402

ARTIFACTS = ROOT / "test-artifacts"
TIMEOUT_MS = 120_000
ROLLOUT = "Attention rollout:"


def test_upload_rollout_broken_file_then_good_file_and_a_second_session():
    ARTIFACTS.mkdir(exist_ok=True)
    with running_app() as url, sync_playwright() as p:
        browser = p.chromium.launch(**CHROMIUM)
        first = browser.new_context(viewport={"width": 1400, "height": 1600}).new_page()
        second = browser.new_context(viewport={"width": 1400, "height": 1600}).new_page()
        open_upload(first, url)
        upload(first, photo("chelsea", "JPEG"))
        figure(first, ROLLOUT, "chelsea.jpeg").wait_for(timeout=TIMEOUT_MS)
        first.wait_for_timeout(1000)  # let plotly finish drawing before the screenshot
        first.screenshot(path=ARTIFACTS / "browser_attention.png", full_page=True)
        # a click on a patch of the heatmap (a Plotly selection event) redraws what that patch attends to
        figure(first, ROLLOUT, "chelsea.jpeg").locator(".scatterlayer .point").first.click(force=True)
        first.get_by_text("What patch (row 1, column 1) attends to").wait_for(timeout=TIMEOUT_MS)

        upload(first, dict(name="broken.png", mimeType="image/png", buffer=b"\x89PNG\r\n\x1a\n not really"))
        first.get_by_text("Cannot use this file").wait_for(timeout=TIMEOUT_MS)
        assert first.locator("[data-testid='stException']").count() == 0

        # two sessions at once: each uploads its own photo and sees only its own result
        open_upload(second, url)
        upload(second, photo("coffee"))
        upload(first, photo("astronaut"))
        figure(first, ROLLOUT, "astronaut.png").wait_for(timeout=TIMEOUT_MS)
        figure(second, ROLLOUT, "coffee.png").wait_for(timeout=TIMEOUT_MS)
        assert figure(first, ROLLOUT, "coffee.png").count() == 0
        assert figure(second, ROLLOUT, "astronaut.png").count() == 0
        assert first.get_by_text("Cannot use this file").count() == 0
        assert first.get_by_text("Deploy", exact=True).count() == 0  # a researcher's app, not a publishing tool
        second.screenshot(path=ARTIFACTS / "browser_second_session.png", full_page=True)
        browser.close()


def test_app_starts_like_make_app_on_a_fresh_machine(tmp_path):
    """No --headless, a display, no ~/.streamlit (a first run), stdin closed: the server must not stop at Streamlit's
    e-mail prompt. BROWSER=true stands in for the browser Streamlit opens."""
    env = dict(os.environ, HOME=str(tmp_path), DISPLAY=":99", BROWSER="true")
    with running_app(headless=False, env=env, startup_s=120) as url:
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.status == 200
    assert not (tmp_path / ".streamlit" / "credentials.toml").exists()
