"""Run the app as `vitlens app` and drive it in Debian's chromium: shared by the browser test, the benchmark
and the README screenshots (this is tooling around the app, not part of it)."""
from __future__ import annotations

import io
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import skimage.data
from PIL import Image
from playwright.sync_api import Locator, Page
from playwright.sync_api import TimeoutError as PlaywrightTimeout

CHROMIUM = dict(executable_path="/usr/bin/chromium",
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
UPLOAD_INPUT = "[data-testid='stFileUploaderDropzoneInput']"  # the file input inside Streamlit's uploader
RUNNING = "[data-testid='stStatusWidget']"  # Streamlit's indicator while the script runs
STALE = "[data-stale='true']"  # an element left from the previous run, not yet redrawn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def app_process(*args: str, startup_s: float = 180, headless: bool = True,
                env: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen, str]]:
    """`vitlens app` on a free port, stdin closed; yields the server process and its URL once it answers, stops it
    afterwards. (`vitlens app` replaces itself by Streamlit's server, so the process is the server's.)

    Args:
        *args: more `vitlens app` options, e.g. ``"--model", "demo:vit-fashion"``.
        startup_s: how long to wait for the server.
        headless: pass ``--headless``; False runs it as `make app` does.
        env: the server's environment (default: this process's).
    """
    port = free_port()
    vitlens = str(Path(sys.executable).parent / "vitlens")
    log = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: an unread pipe would fill and stall the server
    proc = subprocess.Popen([vitlens, "app", *(["--headless"] if headless else []), "--port", str(port), *args],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"  # where `vitlens app` listens by default
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"vitlens app exited with {proc.returncode}: {log.read()}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read() == b"ok":
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"vitlens app did not answer within {startup_s} s") from None
                time.sleep(0.5)
        yield proc, url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@contextmanager
def running_app(*args: str, **kwargs) -> Iterator[str]:
    """:func:`app_process`, yielding only the URL."""
    with app_process(*args, **kwargs) as (_, url):
        yield url


def photo(name: str, fmt: str = "PNG", *, file_name: str | None = None, seed: int | None = None) -> dict:
    """A scikit-image sample as an upload for ``set_input_files``; ``seed`` changes one pixel (a new digest, so
    the app's per-image cache misses)."""
    arr = getattr(skimage.data, name)().copy()
    if seed is not None:
        arr[0, 0] = np.random.default_rng(seed).integers(0, 256, size=arr.shape[2:], dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return dict(name=file_name or f"{name}.{fmt.lower()}", mimeType=f"image/{fmt.lower()}", buffer=buf.getvalue())


def open_upload(page: Page, url: str, page_path: str = "attention") -> None:
    """Open a page and switch its image input to Upload."""
    page.goto(f"{url}/{page_path}", timeout=180_000)
    page.get_by_text("Upload", exact=True).first.click(timeout=180_000)  # the first run imports torch and co.
    page.locator(UPLOAD_INPUT).wait_for(state="attached")


def upload(page: Page, file: dict) -> None:
    page.locator(UPLOAD_INPUT).set_input_files(file)


def figure(page: Page, title: str, file_name: str) -> Locator:
    """The Plotly figure whose title starts with ``title`` and names ``file_name`` (the image it was drawn for)."""
    return page.locator(".js-plotly-plot", has_text=title).filter(has_text=file_name)


def idle(page: Page, timeout_ms: float = 120_000) -> None:
    """Wait until the app's script has finished its run: Streamlit's running indicator has come (if the run had
    not started yet) and gone, and no element is left faded from the previous run."""
    running = page.locator(RUNNING)
    try:
        running.wait_for(state="attached", timeout=5_000)
    except PlaywrightTimeout:
        pass  # the run had already ended
    running.wait_for(state="detached", timeout=timeout_ms)
    page.locator(STALE).first.wait_for(state="detached", timeout=timeout_ms)
