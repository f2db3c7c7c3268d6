"""The app in a real browser: `vitlens app` on a free port, Debian's chromium driven by playwright."""
from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
import skimage.data
from PIL import Image
from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = dict(executable_path="/usr/bin/chromium",
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
FIGURE_TIMEOUT_MS = 120_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(*extra: str) -> tuple[subprocess.Popen, str]:
    """`vitlens app --headless` on a free port; returns the process and its URL once it answers."""
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "vitlens"), "app", "--headless", "--port", str(port),
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://localhost:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vitlens app exited with {proc.returncode}: {proc.stdout.read()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read() == b"ok":
                    return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("vitlens app did not answer within 120 s")


@pytest.fixture(scope="module")
def app_url() -> Iterator[str]:
    proc, url = start_app()
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def photo(name: str, fmt: str = "PNG") -> dict:
    buf = io.BytesIO()
    Image.fromarray(getattr(skimage.data, name)()).save(buf, format=fmt)
    return dict(name=f"{name}.{fmt.lower()}", mimeType=f"image/{fmt.lower()}", buffer=buf.getvalue())


def open_attention(page: Page, url: str) -> None:
    page.goto(f"{url}/attention")
    page.get_by_text("Upload", exact=True).click()


def upload(page: Page, file: dict) -> None:
    page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(file)


def rollout_figure(page: Page, file_name: str):
    """The rollout figure drawn for this upload (its title names the file)."""
    return page.locator(".js-plotly-plot", has_text=f"Attention rollout:").filter(has_text=file_name)


def test_upload_rollout_broken_file_then_good_file_and_a_second_session(app_url):
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(**CHROMIUM)
        first = browser.new_context(viewport={"width": 1400, "height": 1600}).new_page()
        second = browser.new_context(viewport={"width": 1400, "height": 1600}).new_page()
        open_attention(first, app_url)
        upload(first, photo("chelsea", "JPEG"))
        rollout_figure(first, "chelsea.jpeg").wait_for(timeout=FIGURE_TIMEOUT_MS)
        first.wait_for_timeout(1000)  # let plotly finish drawing before the screenshot
        first.screenshot(path=ARTIFACTS / "browser_attention.png", full_page=True)

        upload(first, dict(name="broken.png", mimeType="image/png", buffer=b"\x89PNG\r\n\x1a\n not really"))
        first.get_by_text("Cannot use this file").wait_for(timeout=FIGURE_TIMEOUT_MS)
        assert first.locator("[data-testid='stException']").count() == 0

        # two sessions at once: each uploads its own photo and sees only its own result
        open_attention(second, app_url)
        upload(second, photo("coffee"))
        upload(first, photo("astronaut"))
        rollout_figure(first, "astronaut.png").wait_for(timeout=FIGURE_TIMEOUT_MS)
        rollout_figure(second, "coffee.png").wait_for(timeout=FIGURE_TIMEOUT_MS)
        assert rollout_figure(first, "coffee.png").count() == 0
        assert rollout_figure(second, "astronaut.png").count() == 0
        assert first.get_by_text("Cannot use this file").count() == 0
        second.screenshot(path=ARTIFACTS / "browser_second_session.png", full_page=True)
        browser.close()
